//! Media that outran its track's announcement, held until the track is
//! known.
//!
//! A publisher's edge sends a new track's media to the receiving edges at
//! once, while the track itself reaches them in the publisher's directory
//! entry, through the channel's homes (docs/protocol.md §9.6): a detour of
//! up to a few hundred milliseconds across the world. Until the entry
//! arrives, a receiving edge cannot tell whose media a track key carries,
//! hence which local members want it. The same race, shorter, is on the
//! last mile: the edge announces the track to a subscriber on its control
//! stream and sends the media as datagrams, which may be read first.
//! Measured before this hold, two edges 10 ms apart: the first packet of
//! every new track dropped at the receiving edge as `unknown_track`, and
//! one run in eight the first packet dropped by the subscriber's SDK.
//!
//! So the receiving end (an edge per channel, the SDK per connection)
//! holds such packets a little while and hands them on, in the order they
//! came, once their track is known. Bounded in count
//! ([`MAX_EARLY_PACKETS`]) and in age (the kind's [`crate::deadline`]:
//! past it the subscriber's jitter buffer would not play them); what is
//! dropped is counted as unknown tracks were before.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use protocol::datagram::MediaHeader;
use protocol::TrackKey;

/// Packets held per channel at most, the oldest dropped first: 200 ms of
/// a few video tracks, as much as a track announcement lags its media.
pub const MAX_EARLY_PACKETS: usize = 128;

/// One held packet: its header, the media datagram as relayed to
/// subscribers, and when it arrived.
#[derive(Debug)]
struct Early {
    header: MediaHeader,
    media: Bytes,
    at: Instant,
}

/// A channel's held packets of tracks it does not know yet.
#[derive(Debug, Default)]
pub struct EarlyMedia {
    held: VecDeque<Early>,
}

impl EarlyMedia {
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Hold a packet whose track is unknown. Returns how many packets were
    /// dropped to make room or for their age.
    pub fn hold(&mut self, header: MediaHeader, media: Bytes, now: Instant) -> usize {
        let mut dropped = self.expire(now);
        if self.held.len() >= MAX_EARLY_PACKETS {
            self.held.pop_front();
            dropped += 1;
        }
        self.held.push_back(Early {
            header,
            media,
            at: now,
        });
        dropped
    }

    /// The held packets whose track is now `known`, in arrival order; the
    /// others stay. Also returns how many were dropped for their age.
    pub fn release(
        &mut self,
        known: impl Fn(TrackKey) -> bool,
        now: Instant,
    ) -> (Vec<(MediaHeader, Bytes)>, usize) {
        let dropped = self.expire(now);
        let mut out = vec![];
        self.held.retain_mut(|e| {
            if known(e.header.track) {
                out.push((e.header, std::mem::take(&mut e.media)));
                false
            } else {
                true
            }
        });
        (out, dropped)
    }

    /// Drop what is older than its kind's deadline; how many.
    fn expire(&mut self, now: Instant) -> usize {
        let before = self.held.len();
        self.held.retain(|e| {
            now.saturating_duration_since(e.at) <= crate::deadline(e.header.track.kind())
        });
        before - self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{ChannelId, MediaKind};
    use std::time::Duration;

    fn header(track: TrackKey, sequence: u32) -> MediaHeader {
        MediaHeader {
            channel: ChannelId(7),
            track,
            sequence,
            timestamp_us: 0,
        }
    }

    fn audio(n: u32) -> TrackKey {
        TrackKey::with_kind(1, MediaKind::Audio, n)
    }

    fn video(n: u32) -> TrackKey {
        TrackKey::with_kind(1, MediaKind::Video, n)
    }

    #[test]
    fn packets_of_a_track_made_known_are_released_in_order_and_others_stay() {
        let t0 = Instant::now();
        let mut early = EarlyMedia::default();
        for seq in 0..3 {
            assert_eq!(early.hold(header(audio(1), seq), Bytes::new(), t0), 0);
            assert_eq!(early.hold(header(video(2), seq), Bytes::new(), t0), 0);
        }
        let (out, dropped) = early.release(|t| t == audio(1), t0);
        let seqs: Vec<(TrackKey, u32)> = out.iter().map(|(h, _)| (h.track, h.sequence)).collect();
        assert_eq!(seqs, vec![(audio(1), 0), (audio(1), 1), (audio(1), 2)]);
        assert_eq!(dropped, 0);
        assert!(!early.is_empty(), "the video track is still unknown");
        let (out, _) = early.release(|_| true, t0);
        assert_eq!(out.len(), 3);
        assert!(early.is_empty());
    }

    #[test]
    fn held_packets_expire_at_their_kinds_deadline() {
        let t0 = Instant::now();
        let mut early = EarlyMedia::default();
        early.hold(header(audio(1), 0), Bytes::new(), t0);
        early.hold(header(video(2), 0), Bytes::new(), t0);
        let after_audio = t0 + crate::AUDIO_DEADLINE + Duration::from_millis(1);
        assert!(after_audio < t0 + crate::VIDEO_DEADLINE);
        let (out, dropped) = early.release(|_| false, after_audio);
        assert_eq!((out.len(), dropped), (0, 1), "audio is too old to play");
        let (out, dropped) = early.release(|_| true, after_audio);
        assert_eq!((out.len(), dropped), (1, 0), "video still in time");
    }

    #[test]
    fn at_most_max_early_packets_are_held_the_oldest_dropped_first() {
        let t0 = Instant::now();
        let mut early = EarlyMedia::default();
        let n = MAX_EARLY_PACKETS as u32 + 5;
        let dropped: usize = (0..n)
            .map(|seq| early.hold(header(audio(1), seq), Bytes::new(), t0))
            .sum();
        assert_eq!(dropped, 5);
        let (out, _) = early.release(|_| true, t0);
        assert_eq!(out.len(), MAX_EARLY_PACKETS);
        assert_eq!(out[0].0.sequence, 5);
    }
}
