//! Identifiers that appear in datagram headers.

use ring::digest;

/// An edge's numeric id, unique in a mesh (assigned by the operator).
pub type EdgeId = u32;

/// 64-bit channel id: the first 8 bytes (big-endian) of
/// `SHA-256("rtn/v1/channel" 0x00 app_id 0x00 channel)`.
///
/// Derived rather than assigned so that every edge and client computes the
/// same id for a channel with no coordination; 64 bits make a collision
/// between two live channels of one app negligible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u64);

impl ChannelId {
    pub fn derive(app_id: &str, channel: &str) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"rtn/v1/channel\0");
        ctx.update(app_id.as_bytes());
        ctx.update(b"\0");
        ctx.update(channel.as_bytes());
        let d = ctx.finish();
        let mut first = [0u8; 8];
        first.copy_from_slice(&d.as_ref()[..8]);
        ChannelId(u64::from_be_bytes(first))
    }
}

impl std::fmt::Display for ChannelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// 64-bit track key: `origin_edge << 32 | kind << 30 | per-edge counter`.
/// Assigned by the publisher's edge, so it is unique across the mesh without
/// coordination.
///
/// The two kind bits ([`MediaKind`]) let every edge on a path, including a
/// relay that knows nothing of the channel, give a packet the repair
/// deadline of its kind (audio is useless sooner than video) without a byte
/// more in each datagram. Clients treat the key as opaque.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackKey(pub u64);

/// Bits of a track key's low half that count tracks (the rest is the kind).
const COUNTER_BITS: u32 = 30;
const COUNTER_MASK: u64 = (1 << COUNTER_BITS) - 1;

/// What a track carries, as far as forwarding cares: how long a lost packet
/// is still worth repairing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Unknown or application data (also keys minted before the kind bits).
    Other = 0,
    Audio = 1,
    Video = 2,
}

impl MediaKind {
    /// From the protobuf `TrackKind` value (`TRACK_KIND_*`).
    pub fn from_pb(kind: i32) -> MediaKind {
        match crate::pb::TrackKind::try_from(kind) {
            Ok(crate::pb::TrackKind::Audio) => MediaKind::Audio,
            Ok(crate::pb::TrackKind::Video) => MediaKind::Video,
            _ => MediaKind::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            MediaKind::Other => "other",
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

impl TrackKey {
    /// A key of kind [`MediaKind::Other`].
    pub fn new(origin: EdgeId, counter: u32) -> Self {
        Self::with_kind(origin, MediaKind::Other, counter)
    }

    /// The key of the `counter`th track published through `origin` (the
    /// counter wraps at 2^30).
    pub fn with_kind(origin: EdgeId, kind: MediaKind, counter: u32) -> Self {
        TrackKey(
            ((origin as u64) << 32)
                | ((kind as u64) << COUNTER_BITS)
                | (counter as u64 & COUNTER_MASK),
        )
    }

    /// The edge that assigned this key (where the publisher was connected).
    pub fn origin(self) -> EdgeId {
        (self.0 >> 32) as EdgeId
    }

    pub fn kind(self) -> MediaKind {
        match (self.0 >> COUNTER_BITS) & 0b11 {
            1 => MediaKind::Audio,
            2 => MediaKind::Video,
            _ => MediaKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_id_is_stable_and_separates_apps() {
        let a = ChannelId::derive("app", "room");
        assert_eq!(a, ChannelId::derive("app", "room"));
        assert_ne!(a, ChannelId::derive("app2", "room"));
        // The separator keeps ("ap", "proom") apart from ("app", "room").
        assert_ne!(ChannelId::derive("ap", "proom"), a);
    }

    #[test]
    fn track_key_carries_origin() {
        let k = TrackKey::new(7, 42);
        assert_eq!(k.origin(), 7);
        assert_eq!(k.0 & 0xffff_ffff, 42);
        assert_eq!(k.kind(), MediaKind::Other);
    }

    #[test]
    fn track_keys_carry_their_kind_and_wrap_their_counter() {
        let v = TrackKey::with_kind(7, MediaKind::Video, 42);
        assert_eq!((v.origin(), v.kind()), (7, MediaKind::Video));
        let a = TrackKey::with_kind(u32::MAX, MediaKind::Audio, u32::MAX);
        assert_eq!((a.origin(), a.kind()), (u32::MAX, MediaKind::Audio));
        assert_eq!(a.0 & COUNTER_MASK, COUNTER_MASK);
        assert_ne!(
            TrackKey::with_kind(1, MediaKind::Audio, 1),
            TrackKey::with_kind(1, MediaKind::Video, 1)
        );
        assert_eq!(
            MediaKind::from_pb(crate::pb::TrackKind::Audio as i32),
            MediaKind::Audio
        );
        assert_eq!(MediaKind::from_pb(99), MediaKind::Other);
    }
}

/// The `replicas` edges that home a channel's directory, best first, chosen
/// by rendezvous (highest-random-weight) hashing over the live edges: every
/// edge that knows the same live set picks the same homes, and losing one edge
/// only moves the channels it homed.
pub fn directory_homes(
    channel: ChannelId,
    live: impl IntoIterator<Item = EdgeId>,
    replicas: usize,
) -> Vec<EdgeId> {
    let mut scored: Vec<(u64, EdgeId)> = live
        .into_iter()
        .map(|e| {
            (
                mix64(channel.0 ^ mix64(e as u64 ^ 0x9e37_79b9_7f4a_7c15)),
                e,
            )
        })
        .collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.dedup_by_key(|s| s.1);
    scored.into_iter().take(replicas).map(|(_, e)| e).collect()
}

/// splitmix64's finaliser: a fixed, portable 64-bit mix (part of the protocol,
/// so every implementation computes the same homes).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod home_tests {
    use super::*;

    #[test]
    fn homes_are_stable_and_move_little() {
        let ch = ChannelId(42);
        let all: Vec<EdgeId> = (1..=10).collect();
        let homes = directory_homes(ch, all.clone(), 2);
        assert_eq!(homes.len(), 2);
        assert_eq!(homes, directory_homes(ch, all.iter().rev().copied(), 2));
        // Removing an edge that is not a home changes nothing.
        let other = all.iter().copied().find(|e| !homes.contains(e)).unwrap();
        let fewer: Vec<EdgeId> = all.iter().copied().filter(|e| *e != other).collect();
        assert_eq!(directory_homes(ch, fewer, 2), homes);
        // Removing the first home promotes the second.
        let without_first: Vec<EdgeId> = all.iter().copied().filter(|e| *e != homes[0]).collect();
        assert_eq!(directory_homes(ch, without_first, 2)[0], homes[1]);
    }
}
