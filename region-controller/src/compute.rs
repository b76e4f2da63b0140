//! From the mirrored mesh to the routes of one region's edges: build the
//! graph from registrations and probe summaries, compute best and backup
//! paths with `topology`, and keep previous paths unless the new ones are
//! clearly better (hysteresis).

use std::collections::{BTreeMap, BTreeSet};

use protocol::EdgeId;
use topology::hierarchy::{
    hub_links, select_hubs, Hierarchy, HubPolicy, RegionRoutes, RegionTable,
};
use topology::{
    apply_hysteresis, compute_routes, CostModel, GeoPoint, HysteresisPolicy, LinkSummary,
    MeshGraph, NodeInfo, RouteSet,
};
use tracing::warn;

use crate::controller::RoutingOptions;
use crate::mesh::MeshView;
use control::records::{EdgeState, ExitsRecord, RegionRecord, RouteRecord, RoutesRecord};

/// The graph of every registered edge and every live probed link. A link
/// that only one of its ends probes is used both ways: RTT is the same both
/// ways and loss is measured both ways by construction (a probe or its
/// reply lost), so the reverse figures stand in until the other end
/// measures it itself (each edge probes a budget of peers, see
/// `topology::targets`, and the two budgets need not agree).
pub fn build_graph(view: &MeshView, cost: CostModel) -> MeshGraph {
    build_graph_of(view, cost, |_, _| true)
}

/// [`build_graph`] with only the links `keep` (called both ways round)
/// accepts: what a region's hierarchical routes read is its own edges'
/// links, a small part of a large mesh's.
pub fn build_graph_of(
    view: &MeshView,
    cost: CostModel,
    keep: impl Fn(EdgeId, EdgeId) -> bool,
) -> MeshGraph {
    let mut b = MeshGraph::builder(cost);
    let down = presumed_down(view);
    for e in view.edges.values() {
        let Ok(location) = GeoPoint::new(e.lat, e.lon) else {
            continue;
        };
        let node = NodeInfo {
            id: e.id,
            region: e.region.clone(),
            location,
            load: view.load_of(e.id),
            draining: e.state == EdgeState::Draining || down.contains(&e.id),
        };
        if let Err(err) = b.add_node(node) {
            warn!(edge = e.id, error = %err, "edge left out of the graph");
        }
    }
    // Every link some end reported, by (from, to): its own measurement if
    // `from` probes `to`, else the reverse one.
    let mut links: BTreeMap<(EdgeId, EdgeId), (bool, LinkSummary)> = BTreeMap::new();
    for p in view.probes.values() {
        if !view.edges.contains_key(&p.from) {
            continue;
        }
        for l in p.links.iter().filter(|l| l.samples > 0) {
            if !view.edges.contains_key(&l.to) || l.to == p.from || !keep(p.from, l.to) {
                continue;
            }
            let summary = LinkSummary {
                rtt_ms: l.rtt_ms,
                jitter_ms: l.jitter_ms,
                loss: l.loss,
                samples: l.samples,
            };
            // A dead link measured by its own end is no link; one measured
            // only from the other end is dead that way too.
            let own = l.alive.then_some(summary);
            links.insert((p.from, l.to), (true, own.unwrap_or(DEAD)));
            let reverse = links.entry((l.to, p.from)).or_insert((false, DEAD));
            if !reverse.0 {
                reverse.1 = own.unwrap_or(DEAD);
            }
        }
    }
    for ((from, to), (_, summary)) in links {
        if summary == DEAD {
            continue;
        }
        if let Err(err) = b.add_link(from, to, summary) {
            warn!(from, to, error = %err, "link left out of the graph");
        }
    }
    b.build().unwrap_or_else(|err| {
        warn!(error = %err, "mesh graph could not be built; using an empty one");
        MeshGraph::builder(cost)
            .build()
            .expect("empty graph builds")
    })
}

/// Probers that must report an edge dead before it is presumed down: one
/// prober's verdict is about its own link (a cut), not about the edge.
const MIN_DEAD_REPORTS: usize = 2;

/// Registered edges presumed down: at least [`MIN_DEAD_REPORTS`] of the
/// edges probing one report it dead, more than report it alive, not
/// counting the probers whose links the edge's own report shows dead from
/// its side (a link dead seen from both ends is a cut, and the edge is
/// alive to say so). Such an edge stays in the graph as an endpoint but
/// carries transit only when nothing else connects (as a draining one).
///
/// Why: a dead edge's registration outlives it by up to a lease TTL, its
/// own last report lists its links alive, and a prober that has not sent
/// through it since it died still reports its stale figures alive. From
/// the first probers' reports, the controller saw only their links to it
/// dead, and routed around those links through its live neighbours into
/// it (measured in a lab world: Sydney killed, Chicago's second edge
/// routed to Auckland by Chicago's first edge and Sydney for 0.8 s, a
/// 1.7 s gap in the streams that took that path).
fn presumed_down(view: &MeshView) -> BTreeSet<EdgeId> {
    let mut dead_from: BTreeMap<EdgeId, Vec<EdgeId>> = BTreeMap::new();
    let mut alive: BTreeMap<EdgeId, usize> = BTreeMap::new();
    for p in view.probes.values() {
        if !view.edges.contains_key(&p.from) {
            continue;
        }
        for l in p.links.iter().filter(|l| l.samples > 0 && l.to != p.from) {
            if l.alive {
                *alive.entry(l.to).or_default() += 1;
            } else {
                dead_from.entry(l.to).or_default().push(p.from);
            }
        }
    }
    let sees_dead = |edge: EdgeId, peer: EdgeId| {
        view.probes
            .get(&edge)
            .is_some_and(|own| own.links.iter().any(|l| l.to == peer && !l.alive))
    };
    dead_from
        .into_iter()
        .filter(|(edge, reporters)| {
            let dead = reporters.iter().filter(|&&r| !sees_dead(*edge, r)).count();
            view.edges.contains_key(edge)
                && dead >= MIN_DEAD_REPORTS
                && dead > alive.get(edge).copied().unwrap_or(0)
        })
        .map(|(edge, _)| edge)
        .collect()
}

/// Marks a link that is known and dead in [`build_graph`].
const DEAD: LinkSummary = LinkSummary {
    rtt_ms: f64::INFINITY,
    jitter_ms: 0.0,
    loss: 1.0,
    samples: 0,
};

/// Routes for every edge of `region`, merged with `previous` by hysteresis.
pub fn region_routes(
    graph: &MeshGraph,
    view: &MeshView,
    region: &str,
    previous: &BTreeMap<EdgeId, RouteSet>,
    policy: &HysteresisPolicy,
) -> BTreeMap<EdgeId, RouteSet> {
    view.edges
        .values()
        .filter(|e| e.region == region && graph.contains(e.id))
        .filter_map(|e| {
            let fresh = compute_routes(graph, e.id).ok()?;
            let merged = match previous.get(&e.id) {
                Some(prev) => apply_hysteresis(prev, fresh, graph, policy),
                None => fresh,
            };
            Some((e.id, merged))
        })
        .collect()
}

/// What a region's leader publishes when routing hierarchically
/// (docs/control-plane.md "Routes at scale"): each edge's routes to its
/// region's edges and to the hubs it reaches, the region's record (hubs,
/// table, tolls, hub links) and its exits.
pub struct HierarchicalRoutes {
    pub local: BTreeMap<EdgeId, RouteSet>,
    pub region: RegionRecord,
    pub exits: ExitsRecord,
}

/// The hierarchical routes of `opts.region`: its hubs (at most
/// `opts.hubs_per_region`) and table from `graph` (which needs only the
/// links of the region's edges, [`region_links`]),
/// the other regions' tables from their leaders' records (those of regions
/// with no registered edge are left out), each source's local routes
/// merged with `previous` by hysteresis.
pub fn hierarchical_routes(
    graph: &MeshGraph,
    view: &MeshView,
    previous: &BTreeMap<EdgeId, RouteSet>,
    opts: &RoutingOptions,
    at_ms: u64,
) -> HierarchicalRoutes {
    let region = opts.region.as_str();
    let hub_policy = HubPolicy {
        hubs_per_region: opts.hubs_per_region,
        ..HubPolicy::default()
    };
    let hubs = select_hubs(graph, &hub_policy);
    let own = RegionTable::compute(graph, region, hubs.get(region).map_or(&[][..], |h| &h[..]));
    let live_regions: std::collections::HashSet<&str> =
        view.edges.values().map(|e| e.region.as_str()).collect();
    let mut tables = vec![own.clone()];
    for r in view.regions.values() {
        if r.region == region || !live_regions.contains(r.region.as_str()) {
            continue;
        }
        match r.table() {
            Ok(t) => tables.push(t),
            Err(e) => warn!(region = %r.region, error = %e, "region record left out"),
        }
    }
    // Hub links: this graph's (its region's hubs') and those other regions
    // publish (their hubs' links are not in a region's graph).
    let mut links = hub_links(graph, &tables);
    links.extend(
        view.regions
            .values()
            .filter(|r| r.region != region)
            .flat_map(RegionRecord::hub_links),
    );
    let hier = Hierarchy::from_published(tables, &links);
    // What others need of this region's hub links: those the hub graph uses.
    let links = hier.hub_graph().useful_links(&links);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let routes = RegionRoutes::compute(&hier, graph, region, threads);
    let local = routes
        .sources()
        .map(|(&id, s)| {
            let fresh = s.local().clone();
            let merged = match previous.get(&id) {
                Some(prev) => apply_hysteresis(prev, fresh, graph, &opts.hysteresis),
                None => fresh,
            };
            (id, merged)
        })
        .collect();
    HierarchicalRoutes {
        local,
        region: RegionRecord::new(&own, &links, &opts.name, at_ms),
        exits: ExitsRecord::new(region, routes.exits(), &opts.name, at_ms),
    }
}

/// The links a region's hierarchical routes read: those with an end in
/// the region.
pub fn region_links<'a>(
    view: &'a MeshView,
    region: &'a str,
) -> impl Fn(EdgeId, EdgeId) -> bool + 'a {
    let ours = move |id: EdgeId| view.edges.get(&id).is_some_and(|e| e.region == region);
    move |a, b| ours(a) || ours(b)
}

/// The stored form of a route set; with costs for hierarchical routes
/// (edges compose from them), without for flat ones (no reader needs them).
pub fn to_record(
    set: &RouteSet,
    region: &str,
    controller: &str,
    at_ms: u64,
    with_costs: bool,
) -> RoutesRecord {
    let us = |ms: f64| with_costs.then(|| (ms * 1000.0).round() as u64);
    RoutesRecord {
        edge: set.source(),
        region: region.into(),
        controller: controller.into(),
        computed_at_ms: at_ms,
        routes: set
            .iter()
            .map(|r| RouteRecord {
                dest: r.destination,
                best: r.best.edges.clone(),
                backup: r.backup.as_ref().map(|b| b.edges.clone()),
                cost_us: us(r.best.cost_ms),
                backup_cost_us: r.backup.as_ref().and_then(|b| us(b.cost_ms)),
            })
            .collect(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use control::records::{EdgeRecord, ProbeLink, ProbeRecord};

    /// A registration in `region` (tests of this crate share it).
    pub(crate) fn edge(id: EdgeId, region: &str) -> EdgeRecord {
        EdgeRecord {
            id,
            region: region.into(),
            city: String::new(),
            lat: 10.0,
            lon: id as f64,
            addr: format!("127.0.0.1:{}", 4000 + id).parse().unwrap(),
            server_name: "e".into(),
            cert_sha256: vec![],
            admin_addr: None,
            capacity: 10,
            state: EdgeState::Serving,
            version: "t".into(),
            started_at_ms: 0,
        }
    }

    /// A live probed link to `to`.
    pub(crate) fn link(to: EdgeId, rtt_ms: f64) -> ProbeLink {
        ProbeLink {
            to,
            rtt_ms,
            jitter_ms: 0.0,
            loss: 0.0,
            samples: 10,
            alive: true,
        }
    }

    /// Each edge's probe record: its live links.
    fn set_probes<const N: usize>(v: &mut MeshView, probes: [(EdgeId, Vec<ProbeLink>); N]) {
        for (from, links) in probes {
            let record = ProbeRecord {
                from,
                at_ms: 0,
                links,
            };
            v.probes.insert(from, record);
        }
    }

    /// 1-3 direct is 100 ms; via 2 it is 20 ms.
    fn triangle() -> MeshView {
        let mut v = MeshView::default();
        for id in 1..=3 {
            v.edges
                .insert(id, edge(id, if id == 3 { "b" } else { "a" }));
        }
        let probes = [
            (1, vec![link(2, 10.0), link(3, 100.0)]),
            (2, vec![link(1, 10.0), link(3, 10.0)]),
            (3, vec![link(1, 100.0), link(2, 10.0)]),
        ];
        set_probes(&mut v, probes);
        v
    }

    #[test]
    fn relayed_path_wins_and_backup_avoids_its_first_hop() {
        let v = triangle();
        let g = build_graph(&v, CostModel::default());
        let routes = region_routes(&g, &v, "a", &BTreeMap::new(), &HysteresisPolicy::default());
        assert_eq!(routes.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        let r = routes[&1].get(3).unwrap();
        assert_eq!(r.best.edges, vec![1, 2, 3]);
        assert_eq!(r.backup.as_ref().unwrap().edges, vec![1, 3]);
        let rec = to_record(&routes[&1], "a", "c", 1, false);
        assert_eq!(rec.route_set().get(3).unwrap().best.edges, vec![1, 2, 3]);
    }

    #[test]
    fn backups_leave_the_city_pair_of_their_first_link() {
        // 1 and 2 in one city, 3 another (90 ms from both), 4 a third that
        // reaches 3 in 25 ms: 1's plain backup to 3 would be 1-2-3, and one
        // cut between the two cities would take it with the best path.
        let mut v = MeshView::default();
        for id in 1..=4 {
            let mut e = edge(id, "a");
            e.lon = if id == 2 { 1.0 } else { id as f64 };
            v.edges.insert(id, e);
        }
        let probes = [
            (1, vec![link(2, 1.0), link(3, 90.0), link(4, 110.0)]),
            (2, vec![link(1, 1.0), link(3, 90.0), link(4, 110.0)]),
            (3, vec![link(1, 90.0), link(2, 90.0), link(4, 25.0)]),
            (4, vec![link(1, 110.0), link(2, 110.0), link(3, 25.0)]),
        ];
        set_probes(&mut v, probes);
        let g = build_graph(&v, CostModel::default());
        let routes = region_routes(&g, &v, "a", &BTreeMap::new(), &HysteresisPolicy::default());
        for src in [1, 2] {
            let r = routes[&src].get(3).unwrap();
            assert_eq!(r.best.edges, vec![src, 3]);
            assert_eq!(r.backup.as_ref().unwrap().edges, vec![src, 4, 3]);
        }
    }

    /// Relay 2 carries 1 -> 3 (20 ms against 100 direct); 4 reaches 2 too,
    /// and 5 reaches only 2. `dead_to_2` report their link to 2 dead;
    /// `cut_from` are those 2's own report shows dead from its side.
    fn relay_world(dead_to_2: &[EdgeId], cut_from: &[EdgeId]) -> MeshView {
        let mut v = MeshView::default();
        for id in 1..=5 {
            v.edges.insert(id, edge(id, "a"));
        }
        let probes = [
            (1, vec![link(2, 10.0), link(3, 100.0), link(4, 10.0)]),
            (
                2,
                vec![link(1, 10.0), link(3, 10.0), link(4, 10.0), link(5, 10.0)],
            ),
            (3, vec![link(1, 100.0), link(2, 10.0), link(4, 100.0)]),
            (4, vec![link(1, 10.0), link(2, 10.0), link(3, 100.0)]),
            (5, vec![link(2, 10.0)]),
        ];
        set_probes(&mut v, probes);
        for (from, peer) in dead_to_2
            .iter()
            .map(|&f| (f, 2))
            .chain(cut_from.iter().map(|&p| (2, p)))
        {
            let p = v.probes.get_mut(&from).unwrap();
            p.links.iter_mut().find(|l| l.to == peer).unwrap().alive = false;
        }
        v
    }

    fn best_path(v: &MeshView, from: EdgeId, to: EdgeId) -> Vec<EdgeId> {
        let g = build_graph(v, CostModel::default());
        let routes = region_routes(&g, v, "a", &BTreeMap::new(), &HysteresisPolicy::default());
        routes[&from].get(to).unwrap().best.edges.clone()
    }

    #[test]
    fn an_edge_most_of_its_probers_report_dead_carries_no_transit() {
        // 2 died: 1, 3 and 5 found it; 4 has not sent through it since and
        // still reports it alive, and 2's last report lists its links
        // alive. Around 1's dead link to 2 through 4 would lead into it.
        let v = relay_world(&[1, 3, 5], &[]);
        assert_eq!(presumed_down(&v), BTreeSet::from([2]));
        assert_eq!(best_path(&v, 1, 3), vec![1, 3]);
        // Still an endpoint: 4 reaches it directly.
        assert_eq!(best_path(&v, 4, 2), vec![4, 2]);
    }

    #[test]
    fn a_cut_or_a_minority_of_reports_is_not_a_death() {
        // One prober's verdict is about its link: around it through 4.
        let v = relay_world(&[1], &[]);
        assert!(presumed_down(&v).is_empty());
        assert_eq!(best_path(&v, 1, 3), vec![1, 4, 2, 3]);
        // 2 is alive and sees its links to 1 and 5 dead as well: cuts.
        let v = relay_world(&[1, 5], &[1, 5]);
        assert!(presumed_down(&v).is_empty());
        assert_eq!(best_path(&v, 1, 3), vec![1, 4, 2, 3]);
        // Two probers see it dead, two (3 and 4) alive.
        let v = relay_world(&[1, 5], &[]);
        assert!(presumed_down(&v).is_empty());
        assert_eq!(best_path(&v, 1, 3), vec![1, 4, 2, 3]);
    }

    #[test]
    fn dead_links_and_unregistered_edges_are_left_out() {
        let mut v = triangle();
        v.probes.get_mut(&1).unwrap().links[0].alive = false;
        v.edges.remove(&2);
        let g = build_graph(&v, CostModel::default());
        assert!(!g.contains(2));
        assert_eq!(g.link_count(), 2);
        let routes = region_routes(&g, &v, "a", &BTreeMap::new(), &HysteresisPolicy::default());
        assert_eq!(routes[&1].get(3).unwrap().best.edges, vec![1, 3]);
    }

    #[test]
    fn a_link_probed_from_one_end_is_used_both_ways() {
        let mut v = triangle();
        // 3 does not probe 2, and 2's measurement of 1 is dead.
        v.probes.get_mut(&3).unwrap().links.retain(|l| l.to != 2);
        v.probes.get_mut(&2).unwrap().links[0].alive = false;
        let g = build_graph(&v, CostModel::default());
        assert_eq!(
            g.link(3, 2).map(|l| l.rtt_ms),
            Some(10.0),
            "2's measurement, reversed"
        );
        assert!(g.link(2, 1).is_none(), "measured dead by its own end");
        assert_eq!(
            g.link(1, 2).map(|l| l.rtt_ms),
            Some(10.0),
            "1 measures it alive"
        );
        let routes = region_routes(&g, &v, "b", &BTreeMap::new(), &HysteresisPolicy::default());
        // 3 -> 2 -> 1 would need 2 -> 1: direct it is.
        assert_eq!(routes[&3].get(1).unwrap().best.edges, vec![3, 1]);
        assert_eq!(routes[&3].get(2).unwrap().best.edges, vec![3, 2]);
    }

    #[test]
    fn previous_routes_survive_small_improvements() {
        let mut v = triangle();
        let g = build_graph(&v, CostModel::default());
        let policy = HysteresisPolicy::default();
        let first = region_routes(&g, &v, "a", &BTreeMap::new(), &policy);
        // The direct link gets slightly better than the detour (20.5 vs
        // 21 ms with the relay penalty): not worth a switch.
        v.probes.get_mut(&1).unwrap().links[1].rtt_ms = 20.5;
        v.probes.get_mut(&3).unwrap().links[0].rtt_ms = 20.5;
        let g = build_graph(&v, CostModel::default());
        let prev = first.clone();
        let next = region_routes(&g, &v, "a", &prev, &policy);
        assert_eq!(next[&1].get(3).unwrap().best.edges, vec![1, 2, 3]);
        // Much better: switch.
        v.probes.get_mut(&1).unwrap().links[1].rtt_ms = 5.0;
        let g = build_graph(&v, CostModel::default());
        let next = region_routes(&g, &v, "a", &prev, &policy);
        assert_eq!(next[&1].get(3).unwrap().best.edges, vec![1, 3]);
    }
}
