//! Redundant paths: media for the destinations behind a relay link that
//! loses more than per-hop repair wins back is also sent a second way,
//! around that link.
//!
//! A NACK, parity and audio copies all travel the lossy link again, so
//! they fail with it: at 15% loss one retransmission in seven is lost as
//! well, parity groups of three lose two members too often, and the
//! audio's deadline leaves one try on a long hop. A second path that
//! avoids the link loses a packet only when both paths do. The edge in
//! front of the link decides (it measures the link's loss in the direction
//! it sends, from its QUIC connection's counters, `crate::red::PathLoss`)
//! and sends copies (`RELAY_MEDIA_COPY`, docs/protocol.md §9.4) along its
//! own routes with the link avoided; the destination keeps the first copy
//! of each packet and drops the other by sequence.
//!
//! Bounded: copies cost at most a share of the media sent on the lossy link
//! ([`RedundantPath::new`], `repair.redundant_path_share` in the edge's
//! config), paid from a [`RepairBudget`]; audio first (a few small packets,
//! the shortest deadline, what stalls a call), video only while the budget
//! holds more than half its burst.

use std::time::{Duration, Instant};

use protocol::MediaKind;

use crate::budget::{RepairBudget, BURST_BYTES};

/// A link gets a redundant path at this loss (in the direction sent): where
/// parity is sent whatever the round trip, because one retransmission in
/// seven would be lost too (`crate::fec::FEC_ALWAYS_LOSS`).
pub const REDUNDANT_ON_LOSS: f64 = crate::fec::FEC_ALWAYS_LOSS;
/// And loses it below this (hysteresis: a link measured near the threshold,
/// one window above and one below, does not flap). Above the 10% that
/// per-hop repair handles on its own: a one-second window of a link at 10%
/// reads 15% now and then (a few hundred packets; QUIC also counts some
/// late ones as lost), and with the way off at 10% such a link then kept
/// its redundant path about half the time (measured in the lab at 10% loss
/// on every link: copies 9-10% of the media, overhead over 50%).
pub const REDUNDANT_OFF_LOSS: f64 = 0.12;
/// The link's one-second loss readings are averaged (exponentially, with
/// this time constant) before they are compared with the thresholds. A
/// reading covers a few dozen to a few hundred packets: on a link at 10%
/// loss, which per-hop repair handles, one in eight or so read 15% or more,
/// and redundant paths switched on by chance cost 9-10% of the media in
/// the lab at 10% loss on every link for nothing (residual loss the same
/// with them off). Averaged over 3 s the spread is a third, while a link
/// that goes from clean to 30% loss still gets its redundant path within
/// about 2 s.
pub const LOSS_SMOOTHING: Duration = Duration::from_secs(3);
/// Copies per media byte on a lossy link by default: half, as for
/// retransmissions (`crate::budget::MAX_REPAIR_SHARE`), so a lossy link's
/// media costs at most twice its size in repair and copies together.
pub const DEFAULT_SHARE: f64 = 0.5;
/// Video is copied only while the budget holds more than this: audio keeps
/// the rest.
const VIDEO_KEEPS: f64 = BURST_BYTES / 2.0;

/// Whether one relay link gets a redundant path, and what its copies may
/// still cost.
#[derive(Debug)]
pub struct RedundantPath {
    on: bool,
    share: f64,
    budget: RepairBudget,
    /// The averaged loss ([`LOSS_SMOOTHING`]) and when it was last updated.
    smoothed: f64,
    updated: Option<Instant>,
}

impl RedundantPath {
    /// Copies cost at most `share` of the media sent on the link (0: never
    /// on).
    pub fn new(share: f64) -> Self {
        RedundantPath {
            on: false,
            share,
            budget: RepairBudget::with_share(share),
            smoothed: 0.0,
            updated: None,
        }
    }

    /// The link's measured loss is `loss` at `now` (read a few times a
    /// second): whether it gets a redundant path now, by the averaged loss
    /// ([`LOSS_SMOOTHING`]).
    pub fn set_loss(&mut self, loss: f64, now: Instant) -> bool {
        let dt = self
            .updated
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        self.updated = Some(now);
        let weight = 1.0 - (-dt.as_secs_f64() / LOSS_SMOOTHING.as_secs_f64()).exp();
        self.smoothed += weight * (loss - self.smoothed);
        let threshold = if self.on {
            REDUNDANT_OFF_LOSS
        } else {
            REDUNDANT_ON_LOSS
        };
        self.on = self.share > 0.0 && self.smoothed >= threshold;
        self.on
    }

    /// The averaged loss the thresholds are compared with.
    pub fn smoothed_loss(&self) -> f64 {
        self.smoothed
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    /// `bytes` of media were sent on the link (what its copies' budget is
    /// earned by).
    pub fn sent(&mut self, bytes: usize) {
        self.budget.earn(bytes);
    }

    /// Whether copies of `bytes` of `kind` may be sent around the link now
    /// (if so, they are paid for).
    pub fn copy(&mut self, bytes: usize, kind: MediaKind) -> bool {
        let keep = match kind {
            MediaKind::Audio => 0.0,
            MediaKind::Video | MediaKind::Other => VIDEO_KEEPS,
        };
        self.on && self.budget.spend_keeping(bytes, keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readings every 250 ms for `secs` seconds from `*t`: the state after
    /// the last, and whether it was ever on.
    fn feed(
        r: &mut RedundantPath,
        t: &mut Instant,
        secs: u64,
        loss: impl Fn(u64) -> f64,
    ) -> (bool, bool) {
        let (mut on, mut ever) = (false, false);
        for i in 0..secs * 4 {
            *t += Duration::from_millis(250);
            on = r.set_loss(loss(i), *t);
            ever |= on;
        }
        (on, ever)
    }

    #[test]
    fn a_link_gets_a_redundant_path_over_the_threshold_and_keeps_it_near_it() {
        let mut r = RedundantPath::new(DEFAULT_SHARE);
        let mut t = Instant::now();
        assert!(!r.set_loss(0.5, t), "one reading decides nothing");
        assert!(!feed(&mut r, &mut t, 20, |_| 0.14).1, "under the threshold");
        assert!(!r.copy(100, MediaKind::Audio), "off: nothing is copied");
        // A link going bad gets its path within a few seconds.
        let mut after = 0;
        while !r.set_loss(0.3, t + Duration::from_millis(250 * (after + 1))) {
            after += 1;
        }
        assert!(after * 250 <= 2_000, "{after} readings");
        t += Duration::from_millis(250 * (after + 1));
        assert!(
            feed(&mut r, &mut t, 20, |_| 0.13).0,
            "hysteresis: on just under it"
        );
        assert!(!feed(&mut r, &mut t, 20, |_| 0.11).0, "off under 12%");
        // A link at 10% whose one-second readings swing between 4% and 16%
        // (a new reading each second) never gets one.
        let swing = |i: u64| {
            if (i / 4).is_multiple_of(2) {
                0.16
            } else {
                0.04
            }
        };
        assert!(!feed(&mut r, &mut t, 60, swing).1);
        // A share of 0 turns redundant paths off whatever the loss.
        let mut none = RedundantPath::new(0.0);
        assert!(!feed(&mut none, &mut t, 20, |_| 0.5).1);
    }

    #[test]
    fn copies_cost_at_most_their_share_of_the_links_media_audio_first() {
        let mut r = RedundantPath::new(DEFAULT_SHARE);
        feed(&mut r, &mut Instant::now(), 10, |_| 0.3);
        // A link carrying 200-byte audio and 1,200-byte video packets,
        // three of each per round, all asking for copies.
        let (mut media, mut copied) = (0usize, [0usize; 2]);
        for _ in 0..10_000 {
            for (i, (bytes, kind)) in [(200, MediaKind::Audio), (1_200, MediaKind::Video)]
                .into_iter()
                .enumerate()
            {
                for _ in 0..3 {
                    r.sent(bytes);
                    media += bytes;
                    if r.copy(bytes, kind) {
                        copied[i] += bytes;
                    }
                }
            }
        }
        // The share, and the burst saved before.
        let total = (copied[0] + copied[1]) as f64;
        assert!(total <= media as f64 * DEFAULT_SHARE + BURST_BYTES);
        assert!(
            total >= media as f64 * DEFAULT_SHARE * 0.99,
            "the share is used"
        );
        // Every audio packet was copied; video got what was left.
        assert_eq!(copied[0], 10_000 * 3 * 200);
        assert!(copied[1] > 0);
    }
}
