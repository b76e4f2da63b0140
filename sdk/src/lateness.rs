//! Media that arrives too late to be played is dropped before the app sees
//! it. After an outage, packets queued on the way (QUIC send buffers hold
//! them by size, not age) arrive seconds late; a player would discard them
//! anyway, and an app that does not run a jitter buffer should not have to.
//!
//! Sender and receiver clocks are not synchronised, so lateness is relative:
//! per track, the smallest `arrival - sender timestamp` seen so far is the
//! track's baseline (clock offset plus the fastest path), and a packet more
//! than the configured bound above it is late. A route that gets faster
//! lowers the baseline at once; one that gets slower by less than the bound
//! changes nothing. Clock drift (parts per million) moves the baseline by
//! milliseconds per hour.

use std::sync::atomic::{AtomicI64, Ordering};

/// One track's baseline.
#[derive(Debug)]
pub(crate) struct LatenessGate {
    min_offset_us: AtomicI64,
}

impl Default for LatenessGate {
    fn default() -> Self {
        LatenessGate {
            min_offset_us: AtomicI64::new(i64::MAX),
        }
    }
}

impl LatenessGate {
    /// Whether a packet sent at `sent_us` (sender's clock) and received at
    /// `now_us` (ours) is within `bound_us` of the fastest seen.
    pub fn on_time(&self, sent_us: u64, now_us: u64, bound_us: i64) -> bool {
        let offset = (now_us as i64).wrapping_sub(sent_us as i64);
        let min = self
            .min_offset_us
            .fetch_min(offset, Ordering::Relaxed)
            .min(offset);
        offset.saturating_sub(min) <= bound_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000;

    #[test]
    fn late_packets_are_told_apart_whatever_the_clock_offset() {
        for clock_offset in [0i64, 3_600_000_000, -3_600_000_000] {
            let g = LatenessGate::default();
            let at = |sent: u64, delay: u64| {
                let now = (sent as i64 + delay as i64 + clock_offset) as u64;
                g.on_time(sent, now, 1_000_000)
            };
            let t0 = 4_000_000_000 * MS;
            assert!(at(t0, 80 * MS), "the first packet sets the baseline");
            assert!(at(t0 + 20 * MS, 60 * MS), "a faster path lowers it");
            assert!(at(t0 + 40 * MS, 900 * MS), "within a second of it");
            // Queued through a 3 s outage.
            assert!(!at(t0 + 60 * MS, 3_000 * MS));
            assert!(at(t0 + 3_100 * MS, 70 * MS), "fresh media passes again");
        }
    }
}
