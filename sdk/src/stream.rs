//! One remote stream (a member's track, by name) across the track keys and
//! the links it arrives by.
//!
//! While the client moves between edges make-before-break, the same packet
//! may arrive twice: over the old link and the new one, or (when the
//! publisher moved) under its old track key and its new one. A copy is the
//! same packet exactly: same sequence number and same send timestamp (both
//! set once, when the publisher sent it), so a small ring of what arrived,
//! indexed by sequence number, tells copies from new packets without
//! tracking the sequence: a publisher that starts the track again from
//! sequence 0 sends new timestamps, and is not taken for a copy.
//!
//! The stream also remembers the newest link it arrived over, so the
//! supervisor can tell when every stream that was flowing has moved to the
//! new link, and let the old one go.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Packets remembered per stream. Copies arrive within a round trip of
/// each other; 128 packets is over a second of video at 100 packets/s and
/// 2.5 s of audio, in 2 KiB.
const RING: usize = 128;

#[derive(Debug, Default)]
pub(crate) struct Stream {
    inner: Mutex<Arrivals>,
}

#[derive(Debug)]
struct Arrivals {
    /// (sequence, send timestamp) of the last packet at each `seq % RING`.
    ring: Box<[(u32, u64); RING]>,
    last: Option<Instant>,
    /// The newest link (by [`crate::connection::Liveness::link`]) it
    /// arrived over.
    link: u64,
}

impl Default for Arrivals {
    fn default() -> Self {
        Arrivals {
            // Timestamp u64::MAX: no packet has it (microseconds since 1970).
            ring: Box::new([(0, u64::MAX); RING]),
            last: None,
            link: 0,
        }
    }
}

impl Stream {
    fn lock(&self) -> std::sync::MutexGuard<'_, Arrivals> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Packet `seq`, sent at `sent_us`, arrived over `link` at `now`: false
    /// if it is a copy of one that arrived already (by any key or link).
    pub fn arrived(&self, seq: u32, sent_us: u64, link: u64, now: Instant) -> bool {
        let mut a = self.lock();
        a.last = Some(now);
        a.link = a.link.max(link);
        let slot = &mut a.ring[seq as usize % RING];
        if *slot == (seq, sent_us) {
            return false;
        }
        *slot = (seq, sent_us);
        true
    }

    /// Whether the stream was flowing at `now` (a packet within `active`)
    /// but has not arrived over `link` (or a newer one) yet.
    pub fn waits_for(&self, link: u64, now: Instant, active: Duration) -> bool {
        let a = self.lock();
        a.link < link
            && a.last
                .is_some_and(|t| now.saturating_duration_since(t) < active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_the_same_sequence_and_timestamp_by_any_key_or_link() {
        let s = Stream::default();
        let t = Instant::now();
        assert!(s.arrived(7, 1_000, 1, t));
        assert!(!s.arrived(7, 1_000, 2, t), "the copy over the new link");
        assert!(s.arrived(8, 1_020, 2, t));
        assert!(!s.arrived(8, 1_020, 1, t), "the copy over the old link");
        // The publisher started the track again: sequence 7 anew.
        assert!(s.arrived(7, 9_000, 2, t));
        // A packet a ring later takes the slot.
        assert!(s.arrived(7 + RING as u32, 9_500, 2, t));
        assert!(s.arrived(7, 9_000, 2, t), "forgotten a ring later");
    }

    #[test]
    fn a_flowing_stream_waits_for_the_new_link_until_it_arrives_over_it() {
        let s = Stream::default();
        let t = Instant::now();
        let active = Duration::from_millis(300);
        assert!(!s.waits_for(2, t, active), "never arrived: not flowing");
        s.arrived(1, 10, 1, t);
        assert!(s.waits_for(2, t, active));
        assert!(!s.waits_for(2, t + active, active), "stopped flowing");
        s.arrived(1, 10, 2, t);
        assert!(!s.waits_for(2, t, active), "arrived over link 2");
        s.arrived(2, 30, 1, t);
        assert!(!s.waits_for(2, t, active), "an old link's copy since");
    }
}
