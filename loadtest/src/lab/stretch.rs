//! Path stretch: the paths the edges forward on, against the best the world
//! allows through live edges, sampled over every ordered pair of live edges
//! (and, as a subset, the pairs with traffic).
//!
//! Two yardsticks: the true RTT (what users feel), and the true cost that
//! the controller minimises (`topology::CostModel`: RTT plus loss and jitter
//! penalties plus a toll per relay), which on lossy or jittery worlds can
//! rightly prefer a path with a longer RTT. Each sample computes the optima
//! from one source once and judges every destination with them.
//!
//! A chosen path that is missing while the destination is reachable, or
//! crosses a down link or a dead edge, is *broken*: counted in `samples` and
//! as not within 5%, left out of the percentiles (it has no stretch).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use edge_node::RouteTable;
use serde::Serialize;

use super::world::TrueMesh;
use crate::stats::{percentile, Reservoir};

/// A path within this factor of the optimum is "within 5%" (the routing goal, docs/benchmarks.md: 99%
/// of pairs should be).
pub const WITHIN: f64 = 1.05;
/// Stretch values kept for the percentiles, per figure (a uniform reservoir
/// past that): every pair of a 256-edge world every 2 s would otherwise grow
/// without bound over a long run.
const MAX_STRETCH_SAMPLES: usize = 200_000;
/// The most stretched paths listed per figure.
const WORST: usize = 5;

/// Stretch over a set of (pair, sample) observations.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct StretchFigures {
    /// Percentiles of the stretch of paths that work (broken ones have none).
    pub p50: f64,
    pub p99: f64,
    /// Observations within 5% of the optimum, over all (broken included).
    pub within_5pct: f64,
    /// (pair, sample) observations, broken included.
    pub samples: u64,
    /// Distinct ordered pairs observed.
    pub pairs: usize,
    /// Observations whose chosen path was missing, or crossed a down link
    /// or a dead edge, while a path through live edges existed.
    pub broken: u64,
}

/// RTT stretch, with the worst paths of the last sample.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Stretch {
    #[serde(flatten)]
    pub figures: StretchFigures,
    /// The most stretched paths of the last sample (broken first), for a
    /// look at why.
    pub worst: Vec<StretchedPath>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StretchedPath {
    /// Seconds after the traffic started.
    pub at_s: f64,
    /// `None`: broken.
    pub stretch: Option<f64>,
    /// Empty if the edge had no path.
    pub chosen: Vec<u32>,
    /// `None`: crosses a down link or a dead edge, or no path.
    pub chosen_rtt_ms: Option<f64>,
    pub optimal: Vec<u32>,
    pub optimal_rtt_ms: f64,
}

/// `path_stretch` of the report.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct PathStretch {
    /// Every ordered pair of live edges.
    pub all_pairs: Stretch,
    /// (publisher's edge, receiver's edge) pairs of the traffic mix.
    pub traffic_pairs: Stretch,
}

/// `cost_stretch` of the report: the chosen paths' true cost over the
/// lowest true cost.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct CostStretch {
    pub all_pairs: StretchFigures,
    /// The costliest choices of the last sample (broken first).
    pub worst: Vec<CostlyPath>,
}

/// A chosen path against the cheapest, by true cost.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CostlyPath {
    /// Seconds after the traffic started.
    pub at_s: f64,
    /// `None`: broken.
    pub stretch: Option<f64>,
    pub chosen: Vec<u32>,
    pub chosen_cost_ms: Option<f64>,
    pub cheapest: Vec<u32>,
    pub cheapest_cost_ms: f64,
}

/// Observations of one figure.
#[derive(Default)]
struct Observed {
    stretch: Reservoir<MAX_STRETCH_SAMPLES>,
    within: u64,
    samples: u64,
    broken: u64,
    pairs: HashSet<(u32, u32)>,
}

impl Observed {
    /// One pair's stretch at one sample; `None` if broken.
    fn add(&mut self, pair: (u32, u32), stretch: Option<f64>) {
        self.samples += 1;
        self.pairs.insert(pair);
        match stretch {
            Some(s) => {
                self.stretch.push(s);
                self.within += (s <= WITHIN) as u64;
            }
            None => self.broken += 1,
        }
    }

    fn figures(&mut self) -> StretchFigures {
        let values = self.stretch.values_mut();
        StretchFigures {
            p50: percentile(values, 50.0).unwrap_or(0.0),
            p99: percentile(values, 99.0).unwrap_or(0.0),
            within_5pct: if self.samples == 0 {
                0.0
            } else {
                self.within as f64 / self.samples as f64
            },
            samples: self.samples,
            pairs: self.pairs.len(),
            broken: self.broken,
        }
    }
}

/// Samples the stretch of every pair, tick after tick.
#[derive(Default)]
pub struct StretchSampler {
    rtt_all: Observed,
    rtt_traffic: Observed,
    cost_all: Observed,
    worst_all: Vec<StretchedPath>,
    worst_traffic: Vec<StretchedPath>,
    worst_cost: Vec<CostlyPath>,
    /// Traffic pairs sent over a relay that beats the direct link (or with
    /// the direct link down).
    relayed_better: HashSet<(u32, u32)>,
}

/// `stretch` over `optimal`, guarded against a zero optimum (two edges of
/// a city with `metro_ms = 0`).
fn ratio(chosen: f64, optimal: f64) -> f64 {
    chosen / optimal.max(f64::MIN_POSITIVE)
}

impl StretchSampler {
    /// One sample at `at_s`: every ordered pair of the live edges of `mesh`,
    /// each judged on its source's effective table (`tables`, by edge).
    /// `traffic`: the pairs with traffic.
    pub fn sample(
        &mut self,
        at_s: f64,
        mesh: &TrueMesh,
        tables: &BTreeMap<u32, Arc<RouteTable>>,
        traffic: &HashSet<(u32, u32)>,
    ) {
        let mut tick_all = Vec::new();
        let mut tick_traffic = Vec::new();
        let mut tick_cost = Vec::new();
        for &a in mesh.edges() {
            let Some(table) = tables.get(&a) else {
                continue;
            };
            // Once per source: the optimal RTTs and the optimal costs.
            let optimal = mesh.optimal_paths(a);
            let cheapest = topology::compute_routes(mesh.graph(), a).ok();
            for &b in mesh.edges().iter().filter(|b| **b != a) {
                let chosen = table
                    .path(a, b)
                    .filter(|p| p.first() == Some(&a) && p.last() == Some(&b));
                if let Some(route) = cheapest.as_ref().and_then(|c| c.get(b)) {
                    let chosen_cost_ms = chosen
                        .as_deref()
                        .and_then(|p| mesh.graph().path_metrics(p))
                        .map(|m| m.cost_ms);
                    let stretch = chosen_cost_ms.map(|c| ratio(c, route.best.cost_ms));
                    self.cost_all.add((a, b), stretch);
                    tick_cost.push(CostlyPath {
                        at_s,
                        stretch,
                        chosen: chosen.as_deref().map(<[u32]>::to_vec).unwrap_or_default(),
                        chosen_cost_ms,
                        cheapest: route.best.edges.clone(),
                        cheapest_cost_ms: route.best.cost_ms,
                    });
                }
                // Out of reach through live edges: nothing to be had.
                let Some((optimal_rtt_ms, optimal)) = optimal.get(&b) else {
                    continue;
                };
                let chosen_rtt_ms = chosen.as_deref().and_then(|p| mesh.path_rtt(p));
                let stretch = chosen_rtt_ms.map(|c| ratio(c, *optimal_rtt_ms));
                let observed = StretchedPath {
                    at_s,
                    stretch,
                    chosen: chosen.as_deref().map(<[u32]>::to_vec).unwrap_or_default(),
                    chosen_rtt_ms,
                    optimal: optimal.clone(),
                    optimal_rtt_ms: *optimal_rtt_ms,
                };
                self.rtt_all.add((a, b), stretch);
                if traffic.contains(&(a, b)) {
                    self.rtt_traffic.add((a, b), stretch);
                    if let Some(rtt) = chosen_rtt_ms {
                        if observed.chosen.len() > 2 && mesh.rtt(a, b).is_none_or(|d| rtt < d) {
                            self.relayed_better.insert((a, b));
                        }
                    }
                    tick_traffic.push(observed.clone());
                }
                tick_all.push(observed);
            }
        }
        tracing::debug!(
            at_s,
            within_5pct = tick_all
                .iter()
                .filter(|p| p.stretch.is_some_and(|s| s <= WITHIN))
                .count(),
            broken = tick_all.iter().filter(|p| p.stretch.is_none()).count(),
            of = tick_all.len(),
            "path stretch sample, all pairs"
        );
        self.worst_all = worst(tick_all, |p| p.stretch);
        self.worst_traffic = worst(tick_traffic, |p| p.stretch);
        self.worst_cost = worst(tick_cost, |p| p.stretch);
    }

    /// (path stretch, cost stretch, traffic pairs relayed better than direct).
    pub fn report(mut self) -> (PathStretch, CostStretch, usize) {
        let path = PathStretch {
            all_pairs: Stretch {
                figures: self.rtt_all.figures(),
                worst: self.worst_all,
            },
            traffic_pairs: Stretch {
                figures: self.rtt_traffic.figures(),
                worst: self.worst_traffic,
            },
        };
        let cost = CostStretch {
            all_pairs: self.cost_all.figures(),
            worst: self.worst_cost,
        };
        (path, cost, self.relayed_better.len())
    }
}

/// The [`WORST`] most stretched of one sample, broken ones (no stretch)
/// first.
fn worst<T>(mut tick: Vec<T>, stretch: impl Fn(&T) -> Option<f64>) -> Vec<T> {
    let key = |p: &T| stretch(p).unwrap_or(f64::INFINITY);
    tick.sort_by(|x, y| key(y).total_cmp(&key(x)));
    tick.truncate(WORST);
    tick
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::world::{TopologyFile, World};

    /// lhr (1), ams (2), fra (3); lhr-fra detoured by 20 ms each way, so
    /// lhr-ams-fra is best by RTT and by cost.
    fn world() -> World {
        World::new(
            TopologyFile::from_toml(
                "[[city]]\ncity = \"lhr\"\nedges = 1\n[[city]]\ncity = \"ams\"\nedges = 1\n[[city]]\ncity = \"fra\"\nedges = 1\n[[link]]\na = \"lhr\"\nb = \"fra\"\nextra_delay_ms = 20",
            )
            .unwrap(),
        )
        .unwrap()
    }

    fn table(me: u32, paths: &[&[u32]]) -> Arc<RouteTable> {
        Arc::new(RouteTable {
            paths: paths
                .iter()
                .map(|p| (*p.last().unwrap(), p.to_vec()))
                .filter(|(d, _)| *d != me)
                .collect(),
            ..RouteTable::default()
        })
    }

    #[test]
    fn every_pair_is_judged_and_broken_paths_count_as_not_within() {
        let w = world();
        let mesh = w.true_mesh(&[1, 2, 3]);
        let tables = BTreeMap::from([
            // 1 -> 3 direct: the detour, stretched; 1 -> 2 through 3.
            (1, table(1, &[&[1, 3], &[1, 3, 2]])),
            (2, table(2, &[&[2, 1], &[2, 3]])),
            // 3 knows no path to 1 (and the fallback has no peer).
            (3, table(3, &[&[3, 2]])),
        ]);
        let mut s = StretchSampler::default();
        s.sample(1.0, &mesh, &tables, &HashSet::from([(1, 3), (2, 3)]));
        let (path, cost, relayed) = s.report();
        let all = &path.all_pairs.figures;
        assert_eq!((all.samples, all.pairs, all.broken), (6, 6, 1));
        // 2->1, 2->3, 3->2 optimal; 1->3 and 1->3->2 stretched; 3->1 broken.
        assert!((all.within_5pct - 3.0 / 6.0).abs() < 1e-9, "{all:?}");
        assert!(all.p99 > 1.5, "{all:?}");
        let worst = &path.all_pairs.worst;
        assert_eq!(worst[0].stretch, None);
        assert_eq!(
            (worst[0].chosen.clone(), worst[0].optimal.clone()),
            (vec![], vec![3, 2, 1])
        );
        let traffic = &path.traffic_pairs.figures;
        assert_eq!((traffic.samples, traffic.pairs, traffic.broken), (2, 2, 0));
        assert!((traffic.within_5pct - 0.5).abs() < 1e-9, "{traffic:?}");
        assert_eq!(relayed, 0, "the relayed pair 1 -> 2 has no traffic");
        // Cost: same verdicts here (no loss, little jitter).
        assert_eq!((cost.all_pairs.samples, cost.all_pairs.broken), (6, 1));
        assert!((cost.all_pairs.within_5pct - 0.5).abs() < 1e-9, "{cost:?}");
    }

    #[test]
    fn a_path_through_a_dead_edge_is_broken_and_unreachable_pairs_are_left_out() {
        let w = world();
        // ams (2) dead: 1 -> 3 through it is broken; nothing reaches 2.
        let mesh = w.true_mesh(&[1, 3]);
        let tables = BTreeMap::from([(1, table(1, &[&[1, 2, 3]])), (3, table(3, &[&[3, 1]]))]);
        let mut s = StretchSampler::default();
        s.sample(0.0, &mesh, &tables, &HashSet::new());
        let (path, cost, _) = s.report();
        let all = &path.all_pairs.figures;
        assert_eq!((all.samples, all.broken), (2, 1), "{all:?}");
        assert_eq!(all.within_5pct, 0.5);
        assert_eq!(all.p50, 1.0);
        assert_eq!((cost.all_pairs.samples, cost.all_pairs.broken), (2, 1));
        assert_eq!(path.traffic_pairs.figures, StretchFigures::default());
    }
}
