//! The sending end of a hop: what it sent lately, to answer NACKs.
//!
//! Bounded two ways: by count ([`SendHistory::new`]'s `max_packets`, the
//! oldest forgotten first) and by age (nothing is kept past the longest
//! deadline, [`MAX_AGE`]). A packet is answered only while it can still be
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

#[derive(Debug)]
struct TrackSent {
    highest: u32,
    last_sent: Instant,
}

/// Recently sent packets of one hop (a relay link, a client's link).
#[derive(Debug)]
pub struct SendHistory {
    max_packets: usize,
    packets: HashMap<(TrackKey, u32), (Bytes, Instant)>,
    order: VecDeque<(TrackKey, u32, Instant)>,
    tracks: HashMap<TrackKey, TrackSent>,
    last_prune: Option<Instant>,
}

impl SendHistory {
    pub fn new(max_packets: usize) -> Self {
        SendHistory {
            max_packets,
            packets: HashMap::new(),
            order: VecDeque::new(),
            tracks: HashMap::new(),
            last_prune: None,
        }
    }

    /// Packets held now.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// `pkt` (sequence `seq` of `track`) was sent at `now`.
    pub fn record(&mut self, track: TrackKey, seq: u32, pkt: Bytes, now: Instant) {
        self.forget_older_than(now.checked_sub(MAX_AGE));
        while self.order.len() >= self.max_packets {
            if let Some((t, s, _)) = self.order.pop_front() {
                self.packets.remove(&(t, s));
            }
        }
        // A packet sent twice (a retransmission forwarded on) keeps its
        // first time: its deadline runs from then.
        if self.packets.contains_key(&(track, seq)) {
            return;
        }
        self.packets.insert((track, seq), (pkt, now));
        self.order.push_back((track, seq, now));
        let t = self.tracks.entry(track).or_insert(TrackSent {
            highest: seq,
            last_sent: now,
        });
        if (seq.wrapping_sub(t.highest) as i32) > 0 {
            t.highest = seq;
        }
        t.last_sent = now;
        self.prune_tracks(now);
    }

    /// What a NACK for `seq` of `track` gets at `now`.
    pub fn lookup(&self, track: TrackKey, seq: u32, now: Instant) -> Lookup {
        let Some(t) = self.tracks.get(&track) else {
            return Lookup::NeverSent;
        };
        if (seq.wrapping_sub(t.highest) as i32) > 0 {
            return Lookup::NeverSent;
        }
        match self.packets.get(&(track, seq)) {
            Some((pkt, sent))
                if now.saturating_duration_since(*sent) < crate::deadline(track.kind()) =>
            {
                Lookup::Resend(pkt.clone())
            }
            Some(_) => Lookup::TooLate,
            None => Lookup::NotHeld,
        }
    }

    fn forget_older_than(&mut self, limit: Option<Instant>) {
        let Some(limit) = limit else { return };
        while let Some(&(t, s, sent)) = self.order.front() {
            if sent >= limit {
                break;
            }
            self.order.pop_front();
            self.packets.remove(&(t, s));
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
        self.tracks
            .retain(|_, t| now.saturating_duration_since(t.last_sent) < TRACK_IDLE);
    }
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
        assert_eq!(h.lookup(audio(), 7, t0 + ms(250)), Lookup::TooLate);
        assert_eq!(
            h.lookup(video(), 7, t0 + ms(260)),
            Lookup::Resend(Bytes::from_static(b"v7"))
        );
        assert_eq!(h.lookup(video(), 7, t0 + ms(300)), Lookup::TooLate);
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
        assert_eq!(h.lookup(audio(), 1, t0 + ms(260)), Lookup::TooLate);
        assert_eq!(h.len(), 1);
    }
}
