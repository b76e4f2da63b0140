//! Repair traffic capped as a share of the media sent on a hop.
//!
//! A token bucket filled by media rather than by time: every media byte sent
//! earns [`MAX_REPAIR_SHARE`] of a byte of repair, up to [`BURST_BYTES`]
//! saved. So repairs never exceed that share of a hop's media for long, a
//! NACK flood gets at most the burst and then the share, and a quiet hop
//! still repairs a burst of loss. (`governor` meters by time, not by the
//! traffic a repair is a share of, hence this small hand-written bucket.)

/// Repair bytes per media byte, at most. Repairing random loss `p` takes
/// `p / (1 - p)` of the media (30% loss: 43%); past half, loss is answered
/// by another path, not by repeating.
pub const MAX_REPAIR_SHARE: f64 = 0.5;
/// Repair bytes a hop may save up: a burst of loss on a quiet hop (about
/// fifty full packets).
pub const BURST_BYTES: f64 = 64.0 * 1024.0;

#[derive(Debug)]
pub struct RepairBudget {
    tokens: f64,
    share: f64,
}

impl Default for RepairBudget {
    fn default() -> Self {
        RepairBudget::with_share(MAX_REPAIR_SHARE)
    }
}

impl RepairBudget {
    /// A budget of `share` bytes per media byte (and the same burst), for
    /// redundancy other than retransmissions (`crate::redundant`).
    pub fn with_share(share: f64) -> Self {
        RepairBudget {
            tokens: BURST_BYTES,
            share,
        }
    }

    /// `bytes` of media were sent.
    pub fn earn(&mut self, bytes: usize) {
        self.tokens = (self.tokens + bytes as f64 * self.share).min(BURST_BYTES);
    }

    /// Whether `bytes` of repair may be sent now (and if so, they are
    /// spent).
    pub fn spend(&mut self, bytes: usize) -> bool {
        self.spend_keeping(bytes, 0.0)
    }

    /// As [`Self::spend`], leaving at least `keep` bytes in the budget (for
    /// what matters more).
    pub fn spend_keeping(&mut self, bytes: usize, keep: f64) -> bool {
        if self.tokens >= bytes as f64 + keep {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_are_a_bounded_share_of_media_after_the_burst() {
        let mut b = RepairBudget::default();
        let mut repaired = 0usize;
        while b.spend(1_000) {
            repaired += 1_000;
        }
        assert!(repaired as f64 <= BURST_BYTES);
        // A flood of NACKs now gets half of what media earns.
        let mut sent = 0;
        repaired = 0;
        for _ in 0..1_000 {
            b.earn(1_000);
            sent += 1_000;
            while b.spend(1_000) {
                repaired += 1_000;
            }
        }
        let share = repaired as f64 / sent as f64;
        assert!((share - MAX_REPAIR_SHARE).abs() < 0.01, "{share}");
    }
}
