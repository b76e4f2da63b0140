//! Route changes, and whether the network gave a reason for them: the goal
//! is no route change without a change in the network.
//!
//! Routes are allowed to move while they settle: for [`ROUTE_SETTLE`] after
//! a chaos event ([`LOSS_SETTLE`] after one that may change a link's loss)
//! and until [`FIRST_ROUTES_SETTLE`] after the first routes ([`Settling`]); path stretch is not judged then either. Every sample, each
//! live edge's effective paths are compared with the previous snapshot of
//! that edge; each destination whose path differs is a change, *explained*
//! if the span between the two snapshots overlaps a settle window.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_node::RouteTable;
use serde::Serialize;

/// Routes are not judged for this long after a failure or a link change:
/// probes, summaries (every 2 s), recomputation and hysteresis take a few
/// seconds to settle by design.
pub const ROUTE_SETTLE: Duration = Duration::from_secs(8);
/// Routes may move for this long after a change in a link's loss: the loss
/// estimate sees a change only over its shortest window
/// ([`topology::probe::LOSS_WINDOW_MIN`] probes, 10 s at the edges' probe
/// rate, which is what tells a real change from chance), then the usual
/// [`ROUTE_SETTLE`]. A link healed from 3% loss was measured moving routes
/// 10 s after the heal.
pub const LOSS_SETTLE: Duration = Duration::from_millis(
    edge_node::probe::PROBE_INTERVAL.as_millis() as u64 * topology::probe::LOSS_WINDOW_MIN as u64
        + ROUTE_SETTLE.as_millis() as u64,
);
/// The first routes come from the first probe summaries, some links not yet
/// measured; they are not judged for this long.
pub const FIRST_ROUTES_SETTLE: Duration = Duration::from_secs(12);
/// Unexplained changes listed in the report at most.
const MAX_EXAMPLES: usize = 10;

/// When routes may move: after the first routes, and after chaos events.
#[derive(Clone)]
pub struct Settling {
    first_settled: Instant,
    /// Each chaos event's time and how long routes may move after it.
    events: Vec<(Instant, Duration)>,
}

impl Settling {
    /// Routes were first complete at `routes_ready`.
    pub fn new(routes_ready: Instant) -> Settling {
        Settling {
            first_settled: routes_ready + FIRST_ROUTES_SETTLE,
            events: Vec::new(),
        }
    }

    /// A chaos event happened at `at`; routes may move for `settle`
    /// ([`ROUTE_SETTLE`] or [`LOSS_SETTLE`]).
    pub fn network_changed(&mut self, at: Instant, settle: Duration) {
        self.events.push((at, settle));
    }

    /// Whether routes are settled at `at` (stretch is judged then).
    pub fn settled(&self, at: Instant) -> bool {
        !self.unsettled_during(at, at)
    }

    /// Whether some settle window overlaps `[from, to]`.
    pub fn unsettled_during(&self, from: Instant, to: Instant) -> bool {
        from < self.first_settled
            || self
                .events
                .iter()
                .any(|(at, settle)| *at <= to && from < *at + *settle)
    }
}

/// `route_changes` of the report.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RouteChanges {
    /// (edge, destination) paths that changed between two samples.
    pub total: u64,
    /// Of those, changes outside every settle window.
    pub unexplained: u64,
    /// The first unexplained changes: "t=23.4s edge 3 -> 7: 3>7 became
    /// 3>5>7" (seconds after the traffic started; "none": no path).
    pub examples: Vec<String>,
}

/// Compares each live edge's paths with its previous snapshot.
#[derive(Default)]
pub struct ChurnWatch {
    /// Per live edge: when its paths were last seen, and what they were.
    last: HashMap<u32, (Instant, HashMap<u32, Vec<u32>>)>,
    changes: RouteChanges,
}

impl ChurnWatch {
    /// The live edges' tables at `now` (`at_s` seconds after the traffic
    /// started). An edge seen for the first time (or again after it died)
    /// only starts a snapshot.
    pub fn observe(
        &mut self,
        now: Instant,
        at_s: f64,
        tables: &BTreeMap<u32, Arc<RouteTable>>,
        settling: &Settling,
    ) {
        self.last.retain(|id, _| tables.contains_key(id));
        for (&edge, table) in tables {
            let paths = table.paths.clone();
            let Some((then, before)) = self.last.insert(edge, (now, paths)) else {
                continue;
            };
            let explained = settling.unsettled_during(then, now);
            let after = &self.last[&edge].1;
            let mut dests: Vec<u32> = before.keys().chain(after.keys()).copied().collect();
            dests.sort_unstable();
            dests.dedup();
            for dest in dests {
                let (was, is) = (before.get(&dest), after.get(&dest));
                if was == is {
                    continue;
                }
                self.changes.total += 1;
                if explained {
                    continue;
                }
                self.changes.unexplained += 1;
                if self.changes.examples.len() < MAX_EXAMPLES {
                    self.changes.examples.push(format!(
                        "t={at_s:.1}s edge {edge} -> {dest}: {} became {}",
                        show(was),
                        show(is)
                    ));
                }
            }
        }
    }

    pub fn report(self) -> RouteChanges {
        self.changes
    }
}

/// "3>5>7", or "none".
fn show(path: Option<&Vec<u32>>) -> String {
    match path {
        Some(p) => p.iter().map(u32::to_string).collect::<Vec<_>>().join(">"),
        None => "none".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(paths: &[(u32, &[u32])]) -> BTreeMap<u32, Arc<RouteTable>> {
        let mut out: BTreeMap<u32, RouteTable> = BTreeMap::new();
        for (edge, path) in paths {
            out.entry(*edge)
                .or_default()
                .paths
                .insert(*path.last().unwrap(), path.to_vec());
        }
        out.into_iter().map(|(e, t)| (e, Arc::new(t))).collect()
    }

    #[test]
    fn changes_inside_a_settle_window_are_explained_and_the_others_listed() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut settling = Settling::new(start);
        let mut w = ChurnWatch::default();
        w.observe(
            at(0),
            0.0,
            &tables(&[(3, &[3, 7]), (7, &[7, 3])]),
            &settling,
        );
        // Within the first routes' settling: explained.
        w.observe(
            at(2),
            2.0,
            &tables(&[(3, &[3, 5, 7]), (7, &[7, 3])]),
            &settling,
        );
        assert!(settling.settled(at(12)) && !settling.settled(at(11)));
        w.observe(
            at(14),
            14.0,
            &tables(&[(3, &[3, 5, 7]), (7, &[7, 3])]),
            &settling,
        );
        // Settled since: unexplained.
        w.observe(
            at(20),
            20.0,
            &tables(&[(3, &[3, 7]), (7, &[7, 3])]),
            &settling,
        );
        // A chaos event at 21 s: the sample at 30 s still overlaps its
        // window (the change may have come at 28.9 s), the one at 40 s not.
        settling.network_changed(at(21), ROUTE_SETTLE);
        assert!(!settling.settled(at(28)) && settling.settled(at(30)));
        assert!(LOSS_SETTLE > ROUTE_SETTLE);
        w.observe(
            at(30),
            30.0,
            &tables(&[(3, &[3, 5, 7]), (7, &[7, 3])]),
            &settling,
        );
        w.observe(at(40), 40.0, &tables(&[(3, &[3, 7])]), &settling);
        // Edge 7 died; back with a fresh table: a new snapshot, no change.
        w.observe(
            at(42),
            42.0,
            &tables(&[(3, &[3, 7]), (7, &[7, 5, 3])]),
            &settling,
        );
        let r = w.report();
        assert_eq!(r.total, 4, "{r:?}");
        assert_eq!(r.unexplained, 2, "{r:?}");
        assert_eq!(
            r.examples,
            vec![
                "t=20.0s edge 3 -> 7: 3>5>7 became 3>7",
                "t=40.0s edge 3 -> 7: 3>5>7 became 3>7",
            ]
        );
    }
}
