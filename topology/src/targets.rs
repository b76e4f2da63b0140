//! Which peers an edge measures with probes: the probe budget.
//!
//! Why: a link the controller never sees measured can be on no path, and the
//! graph it computes on is only as good as the links it holds. Measuring
//! every pair is the best graph and, for a mesh of a few dozen edges, cheap
//! (a probe is ~70 bytes on the wire; see the edge's probe rates). Beyond
//! that, an edge measures:
//!
//! - every other edge of its own region while the region is small
//!   ([`ProbePolicy::region_full_mesh_max`]), else the best of them;
//! - the [`ProbePolicy::best_per_region`] best edges of every other region,
//!   ranked by **measured** link cost where this edge has measured them, and
//!   by an estimate from geography where it has not: geography only decides
//!   where to start, since geographically near is not always low-latency
//!   (a detoured cable, a congested peering);
//! - [`ProbePolicy::explore_per_region`] more edges of each such region,
//!   chosen at random among the others and measured for
//!   [`ProbePolicy::explore_ticks`] selections: an edge that measures
//!   better than the current best joins them, so the best links are found
//!   even when geography points elsewhere.
//!
//! The controller also reads a pair's reverse measurement when one direction
//! is not probed, so a link needs to be chosen by only one of its ends.
//!
//! Budget per edge: with `E` edges in all, `R` regions and `n` edges in its
//! own region, `E - 1` targets up to [`ProbePolicy::full_mesh_max_edges`],
//! else `min(n - 1, region_full_mesh_max) + (R - 1) × (best + explore)`
//! (defaults: at most 32 + 4 per other region): it grows with the number of
//! regions, not with the mesh.
//!
//! Deterministic: the caller passes the random source, and the measured
//! costs it has.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::geo::{estimated_rtt_ms, GeoPoint, DEFAULT_INFLATION};
use crate::graph::EdgeId;
use crate::synth::XorShift64;

/// How many peers an edge probes; see the module docs for the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbePolicy {
    /// Meshes of at most this many edges are probed in full. 64: 63 targets
    /// at the edges' slow probe rate (one every 2 s; links carrying traffic
    /// are probed faster) is about 2.2 KB/s each way per edge.
    pub full_mesh_max_edges: usize,
    /// An edge probes every other edge of its region while the region has
    /// at most this many edges. 32: regions are where most traffic turns
    /// (clients join their nearest edge), and a few dozen links is cheap.
    pub region_full_mesh_max: usize,
    /// Best-measured edges kept per other region (and per own region past
    /// the full-mesh size). 3: a path leaving a region has a few good
    /// border links to choose from, and a backup avoiding the first.
    pub best_per_region: usize,
    /// Edges explored at once per region, beyond the best ones.
    pub explore_per_region: usize,
    /// For how many selections an explored edge stays a target. At one
    /// selection a second, 20 s: ten samples at the slow probe rate (one
    /// every 2 s), enough for its RTT.
    pub explore_ticks: u64,
}

impl Default for ProbePolicy {
    fn default() -> Self {
        ProbePolicy {
            full_mesh_max_edges: 64,
            region_full_mesh_max: 32,
            best_per_region: 3,
            explore_per_region: 1,
            explore_ticks: 20,
        }
    }
}

impl ProbePolicy {
    /// Most targets one edge probes in a mesh of `edges` edges in `regions`
    /// regions whose largest region has `region_edges` edges.
    pub fn budget(&self, edges: usize, regions: usize, region_edges: usize) -> usize {
        if edges <= self.full_mesh_max_edges {
            return edges.saturating_sub(1);
        }
        let own = region_edges
            .saturating_sub(1)
            .min(self.region_full_mesh_max.max(self.per_region()));
        own + regions.saturating_sub(1) * self.per_region()
    }

    fn per_region(&self) -> usize {
        self.best_per_region + self.explore_per_region
    }
}

/// A peer as target selection sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSpot<'a> {
    /// The peer's id.
    pub id: EdgeId,
    /// Its region.
    pub region: &'a str,
    /// Where it is, when known.
    pub location: Option<GeoPoint>,
}

/// Chooses an edge's probe targets, remembering what it measured and what
/// it is exploring.
#[derive(Debug, Clone)]
pub struct TargetSelector {
    policy: ProbePolicy,
    /// Last measured link cost (ms) to peers, kept after they stop being
    /// probed so that their ranking survives.
    measured: HashMap<EdgeId, f64>,
    /// Peers being explored, and the selection tick their exploration ends.
    exploring: BTreeMap<EdgeId, u64>,
    tick: u64,
    rng: XorShift64,
}

impl TargetSelector {
    /// A selector with `policy`, exploring with randomness from `seed`.
    pub fn new(policy: ProbePolicy, seed: u64) -> Self {
        TargetSelector {
            policy,
            measured: HashMap::new(),
            exploring: BTreeMap::new(),
            tick: 0,
            rng: XorShift64::new(seed),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &ProbePolicy {
        &self.policy
    }

    /// Record a measured link cost (ms) to `peer`.
    pub fn learn(&mut self, peer: EdgeId, cost_ms: f64) {
        if cost_ms.is_finite() && cost_ms >= 0.0 {
            self.measured.insert(peer, cost_ms);
        }
    }

    /// The targets of `me` among `peers` (`me` excluded if listed), for the
    /// next selection period. Call about once a second: exploration counts
    /// in calls.
    pub fn choose(&mut self, me: &PeerSpot<'_>, peers: &[PeerSpot<'_>]) -> BTreeSet<EdgeId> {
        self.tick += 1;
        let peers: Vec<&PeerSpot<'_>> = peers.iter().filter(|p| p.id != me.id).collect();
        let live: BTreeSet<EdgeId> = peers.iter().map(|p| p.id).collect();
        self.measured.retain(|id, _| live.contains(id));
        let tick = self.tick;
        self.exploring
            .retain(|id, until| live.contains(id) && *until > tick);
        if peers.len() < self.policy.full_mesh_max_edges {
            return live;
        }
        let mut by_region: BTreeMap<&str, Vec<&PeerSpot<'_>>> = BTreeMap::new();
        for p in &peers {
            by_region.entry(p.region).or_default().push(p);
        }
        let mut out = BTreeSet::new();
        for (region, mut list) in by_region {
            let own = region == me.region;
            if own && list.len() <= self.policy.region_full_mesh_max {
                out.extend(list.iter().map(|p| p.id));
                continue;
            }
            let keep = if own {
                self.policy.region_full_mesh_max
            } else {
                self.policy.best_per_region
            };
            // Measured cost where there is one, else the geographic
            // estimate; ties by id so the choice is stable.
            let rank = |p: &PeerSpot<'_>| -> f64 {
                self.measured.get(&p.id).copied().unwrap_or_else(|| {
                    match (me.location, p.location) {
                        (Some(a), Some(b)) => estimated_rtt_ms(a, b, DEFAULT_INFLATION),
                        _ => f64::MAX,
                    }
                })
            };
            list.sort_by(|a, b| rank(a).total_cmp(&rank(b)).then(a.id.cmp(&b.id)));
            let (best, rest) = list.split_at(keep.min(list.len()));
            out.extend(best.iter().map(|p| p.id));
            let explored: Vec<EdgeId> = rest
                .iter()
                .map(|p| p.id)
                .filter(|id| self.exploring.contains_key(id))
                .collect();
            out.extend(&explored);
            let mut fresh: Vec<EdgeId> = rest
                .iter()
                .map(|p| p.id)
                .filter(|id| !self.exploring.contains_key(id))
                .collect();
            for _ in explored.len()..self.policy.explore_per_region {
                if fresh.is_empty() {
                    break;
                }
                let pick = fresh.swap_remove(self.rng.below(fresh.len()));
                self.exploring
                    .insert(pick, tick + self.policy.explore_ticks.max(1));
                out.insert(pick);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spot(id: EdgeId, region: &'static str, lat: f64, lon: f64) -> PeerSpot<'static> {
        PeerSpot {
            id,
            region,
            location: Some(GeoPoint::new(lat, lon).expect("valid")),
        }
    }

    /// `n` regions of `per` edges each, on a line of longitudes.
    fn mesh(n: usize, per: usize) -> Vec<PeerSpot<'static>> {
        const REGIONS: [&str; 8] = ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"];
        (0..n * per)
            .map(|i| {
                let r = i / per;
                spot(i as EdgeId + 1, REGIONS[r], 10.0, (r * 20 + i % per) as f64)
            })
            .collect()
    }

    fn small_policy() -> ProbePolicy {
        ProbePolicy {
            full_mesh_max_edges: 8,
            region_full_mesh_max: 4,
            ..ProbePolicy::default()
        }
    }

    #[test]
    fn small_meshes_are_probed_in_full() {
        let peers = mesh(3, 2);
        let mut s = TargetSelector::new(ProbePolicy::default(), 1);
        let got = s.choose(&peers[0], &peers);
        assert_eq!(got, (2..=6).collect());
    }

    #[test]
    fn large_meshes_probe_their_region_and_the_best_of_each_other() {
        let peers = mesh(4, 6);
        let policy = ProbePolicy {
            region_full_mesh_max: 8,
            ..small_policy()
        };
        let mut s = TargetSelector::new(policy, 1);
        let me = &peers[0];
        let got = s.choose(me, &peers);
        // Own region (2..=6) in full; per other region 3 best + 1 explored.
        assert!((2..=6).all(|id| got.contains(&id)), "{got:?}");
        for r in 1..4u32 {
            let in_r = got.iter().filter(|id| (*id - 1) / 6 == r).count();
            assert_eq!(in_r, 4, "region {r}: {got:?}");
        }
        assert_eq!(got.len(), policy.budget(24, 4, 6));
        // Geography first: the nearest three of region 1 (ids 7, 8, 9).
        assert!([7, 8, 9].iter().all(|id| got.contains(id)), "{got:?}");
    }

    #[test]
    fn a_measured_link_beats_geography_and_explored_ones_join_the_best() {
        let peers = mesh(3, 6);
        let mut s = TargetSelector::new(small_policy(), 7);
        let me = &peers[0];
        // The nearest edges of region 1 measure badly; 12 (the farthest)
        // measures well.
        for id in 7..=11 {
            s.learn(id, 500.0);
        }
        s.learn(12, 50.0);
        let got = s.choose(me, &peers);
        assert!(got.contains(&12), "{got:?}");
        // Exploration finds a good edge of region 2 that geography ranks
        // last: measure whatever is explored as excellent.
        let mut found = false;
        for _ in 0..40 {
            let got = s.choose(me, &peers);
            for id in got.iter().filter(|id| (13..=18).contains(*id)) {
                s.learn(*id, if *id == 18 { 10.0 } else { 300.0 });
            }
            found |= got.contains(&18);
        }
        assert!(found, "exploration never tried edge 18");
        let got = s.choose(me, &peers);
        assert!(got.contains(&18), "the best measured stays: {got:?}");
    }

    #[test]
    fn exploration_ends_and_rotates() {
        let peers = mesh(2, 8);
        let policy = small_policy();
        let mut s = TargetSelector::new(policy, 3);
        let me = &peers[0];
        let mut explored = BTreeSet::new();
        for _ in 0..(policy.explore_ticks * 20) {
            let got = s.choose(me, &peers);
            let region1: Vec<EdgeId> = got.iter().copied().filter(|id| *id > 8).collect();
            assert_eq!(region1.len(), 4, "{got:?}");
            explored.extend(region1);
        }
        // Every edge of region 1 was measured at some point.
        assert_eq!(explored, (9..=16).collect(), "{explored:?}");
    }

    #[test]
    fn departed_peers_are_forgotten() {
        let peers = mesh(3, 6);
        let mut s = TargetSelector::new(small_policy(), 1);
        s.learn(12, 1.0);
        s.choose(&peers[0], &peers);
        let fewer: Vec<PeerSpot<'_>> = peers.iter().filter(|p| p.id != 12).cloned().collect();
        let got = s.choose(&peers[0], &fewer);
        assert!(!got.contains(&12));
        assert!(!s.measured.contains_key(&12));
    }

    #[test]
    fn budget_grows_with_regions_not_edges() {
        let p = ProbePolicy::default();
        assert_eq!(p.budget(40, 5, 8), 39);
        assert_eq!(p.budget(1_000, 20, 50), 32 + 19 * 4);
        assert_eq!(p.budget(10_000, 20, 500), 32 + 19 * 4);
    }
}
