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

use protocol::MediaKind;

use crate::budget::{RepairBudget, BURST_BYTES};

/// A link gets a redundant path at this loss (in the direction sent): where
/// parity is sent whatever the round trip, because one retransmission in
/// seven would be lost too (`crate::fec::FEC_ALWAYS_LOSS`).
pub const REDUNDANT_ON_LOSS: f64 = crate::fec::FEC_ALWAYS_LOSS;
/// And loses it below this (hysteresis: a link measured near the threshold,
/// one window above and one below, does not flap).
pub const REDUNDANT_OFF_LOSS: f64 = 0.10;
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
}

impl RedundantPath {
    /// Copies cost at most `share` of the media sent on the link (0: never
    /// on).
    pub fn new(share: f64) -> Self {
        RedundantPath {
            on: false,
            share,
            budget: RepairBudget::with_share(share),
        }
    }

    /// The link's measured loss changed: whether it gets a redundant path
    /// now.
    pub fn set_loss(&mut self, loss: f64) -> bool {
        let threshold = if self.on {
            REDUNDANT_OFF_LOSS
        } else {
            REDUNDANT_ON_LOSS
        };
        self.on = self.share > 0.0 && loss >= threshold;
        self.on
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

    #[test]
    fn a_link_gets_a_redundant_path_over_the_threshold_and_keeps_it_near_it() {
        let mut r = RedundantPath::new(DEFAULT_SHARE);
        assert!(!r.set_loss(0.12), "under the threshold");
        assert!(!r.copy(100, MediaKind::Audio), "off: nothing is copied");
        assert!(r.set_loss(0.16));
        assert!(r.set_loss(0.11), "hysteresis: still on just under it");
        assert!(!r.set_loss(0.05));
        // A share of 0 turns redundant paths off whatever the loss.
        assert!(!RedundantPath::new(0.0).set_loss(0.5));
    }

    #[test]
    fn copies_cost_at_most_their_share_of_the_links_media_audio_first() {
        let mut r = RedundantPath::new(DEFAULT_SHARE);
        r.set_loss(0.3);
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
