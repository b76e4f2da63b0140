//! How often an edge reports a large channel's membership to its homes.
//!
//! A change is reported at once when the channel has been quiet for
//! [`REPORT_GAP`]; a change inside the gap waits for its end and goes with
//! every other change meanwhile, in one delta. A lone join is not delayed;
//! a burst (a broadcast's audience arriving, thousands of viewers a
//! second) costs each home a report per gap instead of one per join: at
//! 10,000 viewers joining over 50 edges, per-join reports reached the two
//! homes 2.95 s late (p50), queued behind each other; paced, 1.45 s, and
//! 1,465 reports instead of 9,992. Small channels are not paced (the
//! directory decides it): their clients failing over together must not
//! wait for each other.

use std::time::{Duration, Instant};

/// The least time between two reports of a channel's changes. Small next
/// to a join's budget; 20 reports a second per edge and channel at most.
pub const REPORT_GAP: Duration = Duration::from_millis(50);

/// A channel's report pacing on this edge.
#[derive(Debug, Default)]
pub struct ReportPace {
    last: Option<Instant>,
    scheduled: bool,
}

/// What to do with a change.
#[derive(Debug, PartialEq, Eq)]
pub enum Pace {
    /// Report now.
    Now,
    /// Report at this instant (one report is scheduled then).
    At(Instant),
    /// A report is already scheduled: it will carry this change.
    Scheduled,
}

impl ReportPace {
    /// The channel changed at `now`.
    pub fn changed(&mut self, now: Instant) -> Pace {
        if self.scheduled {
            return Pace::Scheduled;
        }
        match self.last {
            Some(last) if now.saturating_duration_since(last) < REPORT_GAP => {
                self.scheduled = true;
                Pace::At(last + REPORT_GAP)
            }
            _ => Pace::Now,
        }
    }

    /// A report (of changes, or a refresh's) left at `now`.
    pub fn reported(&mut self, now: Instant) {
        self.last = Some(now);
        self.scheduled = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_change_goes_at_once_and_a_burst_once_per_gap() {
        let t0 = Instant::now();
        let mut p = ReportPace::default();
        assert_eq!(p.changed(t0), Pace::Now);
        p.reported(t0);
        // Within the gap: one report scheduled for its end, then nothing
        // more until it has gone.
        let t1 = t0 + REPORT_GAP / 5;
        assert_eq!(p.changed(t1), Pace::At(t0 + REPORT_GAP));
        assert_eq!(p.changed(t1 + REPORT_GAP / 5), Pace::Scheduled);
        p.reported(t0 + REPORT_GAP);
        // Quiet for a gap: at once again.
        let t2 = t0 + 3 * REPORT_GAP;
        assert_eq!(p.changed(t2), Pace::Now);
    }

    #[test]
    fn a_refresh_report_also_opens_a_gap_and_clears_the_schedule() {
        let t0 = Instant::now();
        let mut p = ReportPace::default();
        assert_eq!(p.changed(t0), Pace::Now);
        p.reported(t0);
        assert_eq!(p.changed(t0), Pace::At(t0 + REPORT_GAP));
        // The refresh reported everything first: the next change waits for
        // the gap after it.
        let t1 = t0 + REPORT_GAP / 2;
        p.reported(t1);
        assert_eq!(p.changed(t1), Pace::At(t1 + REPORT_GAP));
    }
}
