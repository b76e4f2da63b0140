//! The sending end of a hop: what it sent lately, to answer NACKs.
//!
//! Bounded two ways: by count per track ([`SendHistory::new`]'s
//! `max_packets`, the oldest forgotten first) and by age (nothing is kept
//! past the longest deadline, [`MAX_AGE`]). A packet is answered only while it can still be
//! of use: younger than its kind's [`crate::deadline`] since this hop sent
//! it. The packets are `Bytes` shared with what was sent, so keeping them
//! costs an entry, not a copy.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::TrackKey;

/// Nothing is worth resending later than the longest deadline.
pub const MAX_AGE: Duration = crate::VIDEO_DEADLINE;
/// Tracks not sent for this long are forgotten entirely (a NACK for them is
/// then one for a track never sent).
const TRACK_IDLE: Duration = Duration::from_secs(10);

/// What a NACK for one packet gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Send this again (the very bytes sent before).
    Resend(Bytes),
    /// Sent, but too long ago to arrive in time: not sent again.
    TooLate,
    /// Behind what was sent on this track but not held: forgotten, or
    /// never received by this hop (lost before it, and being repaired
    /// there). Not abuse.
    NotHeld,
    /// A track never sent on this hop, or a sequence ahead of anything
    /// sent: a NACK for it is refused and counted as abuse.
    NeverSent,
}

/// One track's packets on the hop, by sequence: slot `i` holds sequence
/// `first + i` if it was sent and is still kept. Packets of a track are
/// sent almost in order, so a ring indexed by sequence finds one without
/// hashing it (the history is written for every packet every hop sends).
#[derive(Debug)]
struct Ring {
    first: u32,
    slots: VecDeque<Option<(Bytes, Instant)>>,
    highest: u32,
    last_sent: Instant,
}

/// Recently sent packets of one hop (a relay link, a client's link).
#[derive(Debug)]
pub struct SendHistory {
    /// Packets kept per track at most.
    max_packets: usize,
    tracks: HashMap<TrackKey, Ring>,
    held: usize,
    last_prune: Option<Instant>,
}

impl SendHistory {
    /// Keeping at most `max_packets` per track (and nothing older than
    /// [`MAX_AGE`]).
    pub fn new(max_packets: usize) -> Self {
        SendHistory {
            max_packets: max_packets.max(1),
            tracks: HashMap::new(),
            held: 0,
            last_prune: None,
        }
    }

    /// Packets held now.
    pub fn len(&self) -> usize {
        self.held
    }

    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// `pkt` (sequence `seq` of `track`) was sent at `now`.
    pub fn record(&mut self, track: TrackKey, seq: u32, pkt: Bytes, now: Instant) {
        self.prune_tracks(now);
        let max = self.max_packets;
        let ring = self.tracks.entry(track).or_insert_with(|| Ring {
            first: seq,
            slots: VecDeque::new(),
            highest: seq,
            last_sent: now,
        });
        let mut dropped = forget_older_than(ring, now.checked_sub(MAX_AGE));
        if ring.slots.is_empty() {
            ring.first = seq;
        }
        let off = seq.wrapping_sub(ring.first) as i32;
        if off < 0 {
            // Behind what is kept: older than anything worth resending.
            self.held -= dropped;
            return;
        }
        let mut off = off as usize;
        if off >= ring.slots.len() + max {
            // A jump far ahead (the sequence restarted): start over.
            dropped += ring.slots.iter().flatten().count();
            ring.slots.clear();
            ring.first = seq;
            off = 0;
        }
        if off >= ring.slots.len() {
            ring.slots.resize(off + 1, None);
        }
        // A packet sent twice (a retransmission forwarded on) keeps its
        // first time: its deadline runs from then.
        let added = ring.slots[off].is_none();
        if added {
            ring.slots[off] = Some((pkt, now));
        }
        while ring.slots.len() > max {
            if ring.slots.pop_front().flatten().is_some() {
                dropped += 1;
            }
            ring.first = ring.first.wrapping_add(1);
        }
        if (seq.wrapping_sub(ring.highest) as i32) > 0 {
            ring.highest = seq;
        }
        ring.last_sent = now;
        self.held = self.held + added as usize - dropped;
    }

    /// What a NACK for `seq` of `track` gets at `now`.
    pub fn lookup(&self, track: TrackKey, seq: u32, now: Instant) -> Lookup {
        let Some(ring) = self.tracks.get(&track) else {
            return Lookup::NeverSent;
        };
        if (seq.wrapping_sub(ring.highest) as i32) > 0 {
            return Lookup::NeverSent;
        }
        let off = seq.wrapping_sub(ring.first) as i32;
        let slot = usize::try_from(off).ok().and_then(|i| ring.slots.get(i));
        match slot {
            Some(Some((pkt, sent)))
                if now.saturating_duration_since(*sent) < crate::deadline(track.kind()) =>
            {
                Lookup::Resend(pkt.clone())
            }
            Some(Some(_)) => Lookup::TooLate,
            _ => Lookup::NotHeld,
        }
    }

    fn prune_tracks(&mut self, now: Instant) {
        if self
            .last_prune
            .is_some_and(|p| now.saturating_duration_since(p) < TRACK_IDLE)
        {
            return;
        }
        self.last_prune = Some(now);
        let held = &mut self.held;
        self.tracks.retain(|_, r| {
            let keep = now.saturating_duration_since(r.last_sent) < TRACK_IDLE;
            if !keep {
                *held -= r.slots.iter().flatten().count();
            }
            keep
        });
    }
}

/// Drop the ring's packets sent before `limit` (and the empty slots among
/// them) from its front; how many packets went.
fn forget_older_than(ring: &mut Ring, limit: Option<Instant>) -> usize {
    let Some(limit) = limit else { return 0 };
    let mut dropped = 0;
    while let Some(front) = ring.slots.front() {
        match front {
            Some((_, sent)) if *sent >= limit => break,
            Some(_) => dropped += 1,
            None => {}
        }
        ring.slots.pop_front();
        ring.first = ring.first.wrapping_add(1);
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::MediaKind;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn audio() -> TrackKey {
        TrackKey::with_kind(1, MediaKind::Audio, 1)
    }

    fn video() -> TrackKey {
        TrackKey::with_kind(1, MediaKind::Video, 2)
    }

    #[test]
    fn held_packets_are_resent_until_their_kinds_deadline() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(100);
        h.record(audio(), 7, Bytes::from_static(b"a7"), t0);
        h.record(video(), 7, Bytes::from_static(b"v7"), t0);
        assert_eq!(
            h.lookup(audio(), 7, t0 + ms(100)),
            Lookup::Resend(Bytes::from_static(b"a7"))
        );
        let (audio_late, video_late) = (t0 + crate::AUDIO_DEADLINE, t0 + crate::VIDEO_DEADLINE);
        assert_eq!(h.lookup(audio(), 7, audio_late), Lookup::TooLate);
        assert_eq!(
            h.lookup(video(), 7, audio_late + ms(10)),
            Lookup::Resend(Bytes::from_static(b"v7"))
        );
        assert_eq!(h.lookup(video(), 7, video_late), Lookup::TooLate);
    }

    #[test]
    fn never_sent_is_told_from_not_held() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(100);
        h.record(video(), 10, Bytes::new(), t0);
        h.record(video(), 12, Bytes::new(), t0);
        assert_eq!(h.lookup(video(), 11, t0), Lookup::NotHeld);
        assert_eq!(h.lookup(video(), 13, t0), Lookup::NeverSent);
        assert_eq!(h.lookup(audio(), 10, t0), Lookup::NeverSent);
        // Across the wrap.
        let v2 = TrackKey::with_kind(1, MediaKind::Video, 3);
        h.record(v2, u32::MAX, Bytes::new(), t0);
        h.record(v2, 1, Bytes::new(), t0);
        assert_eq!(h.lookup(v2, 0, t0), Lookup::NotHeld);
        assert_eq!(h.lookup(v2, 2, t0), Lookup::NeverSent);
    }

    #[test]
    fn bounded_by_count_and_age() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(10);
        for s in 0..50 {
            h.record(video(), s, Bytes::new(), t0);
        }
        assert_eq!(h.len(), 10);
        assert_eq!(h.lookup(video(), 39, t0), Lookup::NotHeld);
        assert!(matches!(h.lookup(video(), 40, t0), Lookup::Resend(_)));
        h.record(video(), 50, Bytes::new(), t0 + MAX_AGE + ms(1));
        assert_eq!(h.len(), 1);
        // Idle tracks are forgotten.
        h.record(audio(), 0, Bytes::new(), t0 + TRACK_IDLE * 3);
        assert_eq!(
            h.lookup(video(), 50, t0 + TRACK_IDLE * 3),
            Lookup::NeverSent
        );
    }

    #[test]
    fn a_packet_sent_again_keeps_its_first_time() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(10);
        h.record(audio(), 1, Bytes::new(), t0);
        h.record(audio(), 1, Bytes::new(), t0 + ms(200));
        assert_eq!(
            h.lookup(audio(), 1, t0 + crate::AUDIO_DEADLINE + ms(10)),
            Lookup::TooLate
        );
        assert_eq!(h.len(), 1);
    }

    proptest::proptest! {
        /// Any order of sends over time: the count held is what the rings
        /// hold, within the bound, and lookups answer without panicking.
        #[test]
        fn held_matches_the_rings_and_stays_bounded(
            sends in proptest::collection::vec((0u64..3, 0u32..3_000, 0u64..40), 1..400),
        ) {
            let t0 = Instant::now();
            let mut h = SendHistory::new(64);
            let mut t = t0;
            for (track, seq, dt) in sends {
                t += ms(dt);
                let key = TrackKey::with_kind(1, MediaKind::Video, track as u32);
                h.record(key, seq, Bytes::new(), t);
                let in_rings: usize = h.tracks.values().map(|r| r.slots.iter().flatten().count()).sum();
                proptest::prop_assert_eq!(h.len(), in_rings);
                proptest::prop_assert!(h.tracks.values().all(|r| r.slots.len() <= 64));
                let _ = h.lookup(key, seq.wrapping_sub(5), t);
            }
        }
    }
}
