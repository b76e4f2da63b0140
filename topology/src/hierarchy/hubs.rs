//! Hubs: which edges of each region other regions enter it by, and the
//! probes hierarchical routing needs between them.

use std::collections::{BTreeMap, HashMap};

use crate::geo::{estimated_rtt_ms, GeoPoint};
use crate::graph::{EdgeId, MeshGraph, NodeInfo};

/// How hubs are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HubPolicy {
    /// Hubs per region at most. 16: a region of the built-in table has up to
    /// four cities; four hubs per city give every site an entry point and a
    /// spare, and 20 regions then have 320 hubs, a hub graph Floyd-Warshall
    /// solves in tens of milliseconds.
    pub hubs_per_region: usize,
    /// A region of `n` edges gets `ceil(hubs_per_sqrt_edge × √n)` hubs, at
    /// least 2 (and at most `hubs_per_region`). 1: 50 edges get 8 hubs, 500
    /// get the cap. Why: with a fixed count, a mesh of many small regions
    /// has most edges as hubs and every hub probes every hub (a 500-edge
    /// mesh in 20 regions: 320 hubs of 500, 20 KB probe summaries); √n
    /// keeps the hub graph and its probes small where regions are.
    /// `f64::INFINITY`: always the cap.
    pub hubs_per_sqrt_edge: f64,
    /// The edges within this distance of the spot k-center picks compete
    /// for the hub there, on connectivity. 300 km: a metro area and its
    /// suburbs, where RTTs differ by a millisecond or two.
    pub site_radius_km: f64,
    /// Besides its own region's hubs, each edge probes this many nearest
    /// hubs of every other region (and hubs probe every hub): where its
    /// traffic leaves the region without a relay. 2: the nearest site's hub
    /// and a spare.
    pub remote_hubs_probed: usize,
}

impl Default for HubPolicy {
    fn default() -> Self {
        HubPolicy {
            hubs_per_region: 16,
            hubs_per_sqrt_edge: 1.0,
            site_radius_km: 300.0,
            remote_hubs_probed: 2,
        }
    }
}

/// Hubs per region, by region name, each list sorted by id.
pub type Hubs = BTreeMap<String, Vec<EdgeId>>;

/// Chooses the hubs of every region of `graph` (see the module doc).
/// Draining edges are never hubs. Deterministic: ties go to the lower id.
pub fn select_hubs(graph: &MeshGraph, policy: &HubPolicy) -> Hubs {
    let mut by_region: BTreeMap<&str, Vec<&NodeInfo>> = BTreeMap::new();
    for n in graph.nodes().filter(|n| !n.draining) {
        by_region.entry(n.region.as_str()).or_default().push(n);
    }
    let mut hubs = Hubs::new();
    for (region, members) in by_region {
        let score: Vec<f64> = members.iter().map(|n| inflation(graph, n)).collect();
        let better = |a: usize, b: usize| {
            score[a]
                .total_cmp(&score[b])
                .then(members[a].id.cmp(&members[b].id))
        };
        let mut chosen: Vec<usize> = Vec::new();
        // Distance from each member to its nearest chosen hub.
        let mut reach = vec![f64::INFINITY; members.len()];
        let scaled = (policy.hubs_per_sqrt_edge * (members.len() as f64).sqrt()).ceil();
        let count = if scaled.is_finite() {
            (scaled as usize).max(2)
        } else {
            usize::MAX
        };
        let count = count.min(policy.hubs_per_region).min(members.len());
        while chosen.len() < count {
            // The spot farthest from every hub so far (anywhere, at first).
            let spot = (0..members.len())
                .filter(|i| !chosen.contains(i))
                .max_by(|&a, &b| {
                    reach[a]
                        .total_cmp(&reach[b])
                        .then(members[b].id.cmp(&members[a].id))
                });
            let Some(spot) = spot else { break };
            let at = members[spot].location;
            let site = (0..members.len())
                .filter(|i| !chosen.contains(i))
                .filter(|&i| {
                    chosen.is_empty()
                        || members[i].location.distance_km(&at) <= policy.site_radius_km
                })
                .min_by(|&a, &b| better(a, b))
                .unwrap_or(spot);
            chosen.push(site);
            let hub = members[site].location;
            for (i, m) in members.iter().enumerate() {
                reach[i] = reach[i].min(m.location.distance_km(&hub));
            }
        }
        let mut ids: Vec<EdgeId> = chosen.iter().map(|&i| members[i].id).collect();
        ids.sort_unstable();
        hubs.insert(region.to_string(), ids);
    }
    hubs
}

/// The probes hierarchical routing needs besides an edge's own choice
/// ([`crate::targets`]), as pairs (each once): every hub with every other
/// hub, every edge with its region's hubs and with the
/// [`HubPolicy::remote_hubs_probed`] nearest hubs of every other region.
pub fn hub_probe_pairs(
    nodes: &[NodeInfo],
    hubs: &Hubs,
    policy: &HubPolicy,
) -> Vec<(EdgeId, EdgeId)> {
    let location: HashMap<EdgeId, GeoPoint> = nodes.iter().map(|n| (n.id, n.location)).collect();
    let mut pairs = Vec::new();
    for n in nodes {
        let spot = (n.id, n.region.as_str(), n.location);
        pairs.extend(
            hub_targets(spot, hubs, |h| location.get(&h).copied(), policy)
                .into_iter()
                .map(|h| (n.id.min(h), n.id.max(h))),
        );
    }
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// The hubs one edge (`id`, of `region`, at `at`) probes for hierarchical
/// routing: every hub if it is one, else its region's hubs and the
/// [`HubPolicy::remote_hubs_probed`] nearest hubs (by `location`) of every
/// other region; sorted, without itself.
pub fn hub_targets(
    (id, region, at): (EdgeId, &str, GeoPoint),
    hubs: &Hubs,
    location: impl Fn(EdgeId) -> Option<GeoPoint>,
    policy: &HubPolicy,
) -> Vec<EdgeId> {
    let is_hub = hubs.get(region).is_some_and(|h| h.contains(&id));
    let mut out = Vec::new();
    let mut near: Vec<(f64, EdgeId)> = Vec::new();
    for (r, list) in hubs {
        if is_hub || r == region {
            out.extend(list.iter().copied().filter(|&h| h != id));
            continue;
        }
        near.clear();
        near.extend(
            list.iter()
                .filter_map(|&h| Some((at.distance_km(&location(h)?), h))),
        );
        near.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        out.extend(near.iter().take(policy.remote_hubs_probed).map(|&(_, h)| h));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// How much an edge's probed links exceed the fiber bound, on average (1 is
/// the bound itself; unknown: infinite). Links shorter than 500 km are left
/// out: there, processing and last-mile delays dominate.
fn inflation(graph: &MeshGraph, n: &NodeInfo) -> f64 {
    let (mut sum, mut count) = (0.0, 0u32);
    for (to, link) in graph.neighbors(n.id) {
        let Some(peer) = graph.node(to) else { continue };
        if n.location.distance_km(&peer.location) < 500.0 {
            continue;
        }
        sum += link.rtt_ms / estimated_rtt_ms(n.location, peer.location, 1.0);
        count += 1;
    }
    if count == 0 {
        f64::INFINITY
    } else {
        sum / count as f64
    }
}
