//! Shared risk: the edges of one site fail together, and so do the links
//! between two sites.
//!
//! Why: a backup path exists to carry traffic when its best path's first
//! hop fails, and the failures that take an edge or a link down rarely
//! strike one alone. Edges in one metro share power, conduits and the
//! long-haul fibre out of the city, so a cut between Tokyo and Seattle takes
//! every Tokyo edge's link to every Seattle edge at once (a shared-risk link
//! group, in traffic engineering's terms). A Tokyo edge whose backup to
//! Seattle leaves through the other Tokyo edge's Seattle link loses both
//! paths to one cut, and its traffic waits for the controller.
//!
//! So edges within [`SITE_RADIUS_KM`] of a site's first edge form one
//! **site** ([`sites`]), and a backup avoids the **risk** of its best
//! path's first link: no link between the same two sites, and no edge of
//! the first hop's site as a relay. Where no such path exists, the plain
//! backup (which avoids only the first hop itself, [`crate::paths`]) stays:
//! a backup that may share the failure beats none.
//!
//! Cost: nothing on a mesh whose sites all hold one edge (the rule is then
//! the plain one). Otherwise one search per first-hop site whose backups
//! share its risk, over the edges whose best paths touch that risk, on the
//! whole graph (the routing view's pruning assumes the plain rule):
//! docs/benchmarks.md, "Backups clear of shared risk".

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::geo::GeoPoint;
use crate::graph::{us_to_ms, EdgeId, MeshGraph, NodeInfo};
use crate::paths::{ms_to_exact_us, Path, RouteSet};

/// Edges within this distance of a site's first edge share its site. 50
/// km: a metro's data centres (the lab's and a deployment's edges of one
/// city sit within a few km) are one site, while the nearest distinct
/// cities that host edges are farther apart (San Jose and San Francisco 68
/// km, Amsterdam and Rotterdam 57 km).
pub const SITE_RADIUS_KM: f64 = 50.0;

/// A degree of latitude is at least this long (km), so two points more
/// than `SITE_RADIUS_KM / KM_PER_DEGREE_MIN` degrees of latitude apart are
/// farther than the radius.
const KM_PER_DEGREE_MIN: f64 = 110.5;

/// The site of each node of `nodes` (in order, which is id order): the
/// index of the site's first node. Nodes are taken in order, and each joins
/// the nearest earlier site within [`SITE_RADIUS_KM`] of that site's first
/// node or starts a site of its own: sites never chain across a dense
/// region, and the result depends only on the ids and places.
pub(crate) fn sites(nodes: &[NodeInfo]) -> Vec<u32> {
    let band = SITE_RADIUS_KM / KM_PER_DEGREE_MIN;
    // Sites' first nodes by latitude (total order on the f64 bits of
    // non-negative shifted latitudes), so each node compares only a band.
    let mut firsts: BTreeMap<(u64, u32), GeoPoint> = BTreeMap::new();
    let key = |lat: f64| (lat + 90.0).to_bits();
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let p = n.location;
            let range =
                (key((p.lat() - band).max(-90.0)), 0)..=(key((p.lat() + band).min(90.0)), u32::MAX);
            let site = firsts
                .range(range)
                .map(|(&(_, first), q)| (p.distance_km(q), first))
                .filter(|(d, _)| *d < SITE_RADIUS_KM)
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
                .map(|(_, first)| first);
            site.unwrap_or_else(|| {
                firsts.insert((key(p.lat()), i as u32), p);
                i as u32
            })
        })
        .collect()
}

/// Each node's incoming links, for [`clear_backups_of_shared_risk`]'s
/// seeding (the graph holds outgoing ones; it builds these on first use).
#[derive(Debug, Clone, Default)]
pub(crate) struct InLinks {
    start: Vec<u32>,
    /// The link's index in the graph's outgoing arrays, and its tail.
    links: Vec<(u32, u32)>,
}

impl InLinks {
    pub(crate) fn new(out_start: &[u32], out_to: &[u32]) -> InLinks {
        let n = out_start.len() - 1;
        let mut start = vec![0u32; n + 1];
        for &t in out_to {
            start[t as usize + 1] += 1;
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut links = vec![(0, 0); out_to.len()];
        for u in 0..n {
            for link in out_start[u]..out_start[u + 1] {
                let t = out_to[link as usize] as usize;
                links[fill[t] as usize] = (link, u as u32);
                fill[t] += 1;
            }
        }
        InLinks { start, links }
    }

    fn of(&self, v: u32) -> &[(u32, u32)] {
        &self.links[self.start[v as usize] as usize..self.start[v as usize + 1] as usize]
    }
}

/// The risk of a best path's first link: the two sites it joins, and the
/// first hop's site (its relays would fail with the first hop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Risk {
    span: (u32, u32),
    hop_site: u32,
}

impl Risk {
    /// The risk of a first link from site `from` into site `hop_site`.
    fn between(from: u32, hop_site: u32) -> Risk {
        Risk {
            span: span(from, hop_site),
            hop_site,
        }
    }

    fn link_shares(&self, g: &MeshGraph, a: u32, b: u32) -> bool {
        span(g.site[a as usize], g.site[b as usize]) == self.span
    }

    fn relay_shares(&self, g: &MeshGraph, x: u32) -> bool {
        g.site[x as usize] == self.hop_site
    }
}

fn span(a: u32, b: u32) -> (u32, u32) {
    (a.min(b), a.max(b))
}

/// Whether `candidate` shares the risk of `best`'s first link: it uses a
/// link between the same two sites, or relays through an edge of the first
/// hop's site. False for paths naming edges the graph lacks.
pub fn shares_risk(g: &MeshGraph, best: &[EdgeId], candidate: &[EdgeId]) -> bool {
    let (Some(s), Some(f)) = (best.first(), best.get(1)) else {
        return false;
    };
    let (Some(s), Some(f)) = (g.idx(*s), g.idx(*f)) else {
        return false;
    };
    let Some(nodes) = candidate
        .iter()
        .map(|e| g.idx(*e))
        .collect::<Option<Vec<u32>>>()
    else {
        return false;
    };
    let risk = Risk::between(g.site[s as usize], g.site[f as usize]);
    let relays = nodes.get(1..nodes.len().saturating_sub(1)).unwrap_or(&[]);
    nodes.windows(2).any(|w| risk.link_shares(g, w[0], w[1]))
        || relays.iter().any(|x| risk.relay_shares(g, *x))
}

/// Replaces each backup in `set` that shares its best path's first-link
/// risk by the cheapest path that does not, where one exists.
///
/// One search per first-hop site whose backups share its risk, over only
/// the nodes whose best paths touch that risk (the group of the site and
/// the few beyond it): every other node's best path avoids the risk, so it
/// is the cheapest way there under the rule too, and the search starts
/// from their offers into the group (the plain backups' method, by site).
pub(crate) fn clear_backups_of_shared_risk(g: &MeshGraph, set: &mut RouteSet) {
    if !g.has_shared_sites() {
        return;
    }
    let Some(s) = g.idx(set.source()) else {
        return;
    };
    let site = |v: u32| g.site[v as usize];
    let mut by_site: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, r) in set.routes().iter().enumerate() {
        let (Some(backup), Some(f)) = (&r.backup, r.best.first_hop().and_then(|f| g.idx(f))) else {
            continue;
        };
        if shares_risk(g, &r.best.edges, &backup.edges) {
            by_site.entry(site(f)).or_default().push(i);
        }
    }
    if by_site.is_empty() {
        return;
    }
    let n = g.node_count();
    let mut best = Best {
        cost_us: vec![u64::MAX; n],
        hops: vec![0; n],
        route: vec![NONE; n],
    };
    best.cost_us[s as usize] = 0;
    // (site, node): the node's best path touches the risk of first links
    // into that site.
    let mut touched: Vec<(u32, u32)> = vec![];
    for (i, r) in set.routes().iter().enumerate() {
        let Some(nodes) = indices(g, &r.best.edges) else {
            continue;
        };
        let v = nodes[nodes.len() - 1];
        best.cost_us[v as usize] = ms_to_exact_us(r.best.cost_ms);
        best.hops[v as usize] = nodes.len() as u32 - 1;
        best.route[v as usize] = i as u32;
        for w in nodes.windows(2) {
            for (near, far) in [(w[0], w[1]), (w[1], w[0])] {
                if site(near) == site(s) {
                    touched.push((site(far), v));
                }
            }
        }
        let relays = &nodes[1..nodes.len() - 1];
        touched.extend(relays.iter().map(|x| (site(*x), v)));
    }
    touched.sort_unstable();
    touched.dedup();
    let in_links = g.in_links();
    let mut search = Search::new(n);
    for (f_site, routes) in by_site {
        let from = touched.partition_point(|(t, _)| *t < f_site);
        let to = touched.partition_point(|(t, _)| *t <= f_site);
        let group = touched[from..to].iter().map(|(_, v)| *v);
        let risk = Risk::between(site(s), f_site);
        search.run(g, in_links, s, risk, group, &best);
        for i in routes {
            let d = g.idx(set.routes()[i].destination);
            if let Some(path) = d.and_then(|d| search.path(g, set, &best, s, d)) {
                set.routes_mut()[i].backup = Some(path);
            }
        }
    }
}

/// The best paths' costs by node, and which route of the set holds each.
struct Best {
    cost_us: Vec<u64>,
    hops: Vec<u32>,
    route: Vec<u32>,
}

fn indices(g: &MeshGraph, path: &[EdgeId]) -> Option<Vec<u32>> {
    let nodes: Vec<u32> = path.iter().map(|e| g.idx(*e)).collect::<Option<_>>()?;
    (nodes.len() >= 2).then_some(nodes)
}

/// No node.
const NONE: u32 = u32::MAX;

/// Dijkstra inside a group of nodes under the routing costs (links plus
/// relays' transit penalties; ties by fewer hops), never crossing a link of
/// the risk's span nor relaying through the risk's site, started from the
/// best paths of the nodes outside the group.
struct Search {
    /// The run that marked each node as in its group.
    mark: Vec<u32>,
    run: u32,
    dist: Vec<u64>,
    hops: Vec<u32>,
    /// Predecessor and the link from it; a predecessor outside the group
    /// is reached by its best path.
    pred: Vec<(u32, u32)>,
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
}

impl Search {
    fn new(n: usize) -> Search {
        Search {
            mark: vec![0; n],
            run: 0,
            dist: vec![u64::MAX; n],
            hops: vec![u32::MAX; n],
            pred: vec![(NONE, NONE); n],
            heap: BinaryHeap::new(),
        }
    }

    fn in_group(&self, v: u32) -> bool {
        self.mark[v as usize] == self.run
    }

    fn offer(&mut self, v: u32, d: u64, h: u32, pred: (u32, u32)) {
        let vi = v as usize;
        if (d, h) < (self.dist[vi], self.hops[vi]) {
            self.dist[vi] = d;
            self.hops[vi] = h;
            self.pred[vi] = pred;
            self.heap.push(Reverse((d, h, v)));
        }
    }

    fn run(
        &mut self,
        g: &MeshGraph,
        in_links: &InLinks,
        s: u32,
        risk: Risk,
        group: impl Iterator<Item = u32>,
        best: &Best,
    ) {
        self.run += 1;
        let group: Vec<u32> = group.collect();
        for &v in &group {
            let vi = v as usize;
            self.mark[vi] = self.run;
            self.dist[vi] = u64::MAX;
            self.hops[vi] = u32::MAX;
        }
        self.heap.clear();
        // Offers from outside: a best path (clear of the risk), then a link.
        for &v in &group {
            for &(link, u) in in_links.of(v) {
                let ui = u as usize;
                let relay_ok = u == s || !risk.relay_shares(g, u);
                if self.in_group(u) || best.cost_us[ui] == u64::MAX || !relay_ok {
                    continue;
                }
                if risk.link_shares(g, u, v) {
                    continue;
                }
                let (base, h) = if u == s {
                    (0, 0)
                } else {
                    (best.cost_us[ui] + g.penalty_us[ui] as u64, best.hops[ui])
                };
                let d = base.saturating_add(g.out_cost[link as usize] as u64);
                self.offer(v, d, h + 1, (u, link));
            }
        }
        while let Some(Reverse((d, h, x))) = self.heap.pop() {
            let xi = x as usize;
            if (d, h) > (self.dist[xi], self.hops[xi]) || risk.relay_shares(g, x) {
                continue;
            }
            let base = d.saturating_add(g.penalty_us[xi] as u64);
            for link in g.out_range(x) {
                let w = g.out_to[link];
                if !self.in_group(w) || risk.link_shares(g, x, w) {
                    continue;
                }
                let nd = base.saturating_add(g.out_cost[link] as u64);
                self.offer(w, nd, h + 1, (x, link as u32));
            }
        }
    }

    /// The path the last run found to `d`: the best path to where it
    /// entered the group, then its steps inside.
    fn path(&self, g: &MeshGraph, set: &RouteSet, best: &Best, s: u32, d: u32) -> Option<Path> {
        if !self.in_group(d) || self.dist[d as usize] == u64::MAX {
            return None;
        }
        let mut steps = vec![];
        let mut rtt = 0u64;
        let mut x = d;
        while self.in_group(x) {
            steps.push(g.id(x));
            let (p, link) = self.pred[x as usize];
            rtt = rtt.saturating_add(g.out_rtt[link as usize] as u64);
            x = p;
        }
        let mut edges = if x == s {
            vec![g.id(s)]
        } else {
            let entry = &set.routes()[best.route[x as usize] as usize].best;
            rtt = rtt.saturating_add(ms_to_exact_us(entry.rtt_ms));
            entry.edges.clone()
        };
        edges.extend(steps.into_iter().rev());
        Some(Path {
            edges,
            cost_ms: us_to_ms(self.dist[d as usize]),
            rtt_ms: us_to_ms(rtt),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::CostModel;
    use crate::paths::tests::graph_with;
    use crate::paths::{apply_hysteresis, compute_routes, HysteresisPolicy};

    const TOKYO: (f64, f64) = (35.68, 139.69);
    const SEATTLE: (f64, f64) = (47.61, -122.33);
    const LOS_ANGELES: (f64, f64) = (34.05, -118.24);

    fn node(id: EdgeId, (lat, lon): (f64, f64)) -> NodeInfo {
        NodeInfo {
            id,
            region: "pacific".into(),
            location: GeoPoint::new(lat, lon).expect("valid"),
            load: 0.2,
            draining: false,
        }
    }

    fn graph(nodes: &[NodeInfo], links: &[(EdgeId, EdgeId, f64)]) -> MeshGraph {
        graph_with(CostModel::default(), nodes, links)
    }

    fn backup(g: &MeshGraph, from: EdgeId, to: EdgeId) -> Option<Vec<EdgeId>> {
        backup_in(&compute_routes(g, from).expect("known"), to)
    }

    fn backup_in(set: &RouteSet, to: EdgeId) -> Option<Vec<EdgeId>> {
        set.get(to)?.backup.as_ref().map(|p| p.edges.clone())
    }

    #[test]
    fn sites_group_a_metro_without_chaining_across_a_region() {
        // 2 is 30 km east of 1, 3 is 30 km east of 2 (60 km from 1), 4 sits
        // on 1, 5 is far away.
        let km_east = |km: f64| {
            (
                TOKYO.0,
                TOKYO.1 + km / (111.32 * TOKYO.0.to_radians().cos()),
            )
        };
        let nodes = [
            node(1, TOKYO),
            node(2, km_east(30.0)),
            node(3, km_east(60.0)),
            node(4, TOKYO),
            node(5, SEATTLE),
        ];
        let g = graph(&nodes, &[(1, 5, 100.0)]);
        let sites: Vec<_> = (1..=5).map(|e| g.site_of(e).expect("known")).collect();
        assert_eq!(
            sites,
            [1, 1, 3, 1, 5],
            "3 is 30 km from 2 but 60 from the site's first edge"
        );
        assert!(g.has_shared_sites());
        let apart = graph(&[node(1, TOKYO), node(5, SEATTLE)], &[(1, 5, 100.0)]);
        assert!(!apart.has_shared_sites());
    }

    /// Two Tokyo edges (1, 2), Seattle (3), Los Angeles (4). Each Tokyo
    /// edge's cheapest way to Seattle after its direct link is through the
    /// other Tokyo edge's Seattle link: one cable cut takes both.
    fn pacific(la_links: bool) -> MeshGraph {
        let nodes = [
            node(1, TOKYO),
            node(2, TOKYO),
            node(3, SEATTLE),
            node(4, LOS_ANGELES),
        ];
        let mut links = vec![(1, 2, 1.0), (1, 3, 90.0), (2, 3, 90.0)];
        if la_links {
            links.extend([(1, 4, 110.0), (2, 4, 110.0), (4, 3, 25.0)]);
        }
        graph(&nodes, &links)
    }

    #[test]
    fn a_backup_leaves_the_city_pair_of_its_first_link() {
        let g = pacific(true);
        assert_eq!(backup(&g, 1, 3), Some(vec![1, 4, 3]));
        assert_eq!(backup(&g, 2, 3), Some(vec![2, 4, 3]));
        assert!(shares_risk(&g, &[1, 3], &[1, 2, 3]));
        assert!(!shares_risk(&g, &[1, 3], &[1, 4, 3]));
        // Figures are the path's own.
        let routes = compute_routes(&g, 1).expect("known");
        let b = routes
            .get(3)
            .and_then(|r| r.backup.clone())
            .expect("backup");
        let m = g.path_metrics(&b.edges).expect("valid");
        assert_eq!((b.cost_ms, b.rtt_ms), (m.cost_ms, m.rtt_ms));
    }

    #[test]
    fn without_a_clear_path_the_plain_backup_stays() {
        let g = pacific(false);
        assert_eq!(backup(&g, 1, 3), Some(vec![1, 2, 3]));
    }

    #[test]
    fn a_backup_avoids_every_relay_of_the_first_hops_site() {
        // 1 reaches 5 through relay 2 in Seattle; 3 is the other Seattle
        // edge, 4 a relay in Los Angeles.
        let nodes = [
            node(1, TOKYO),
            node(2, SEATTLE),
            node(3, SEATTLE),
            node(4, LOS_ANGELES),
            node(5, (40.71, -74.0)),
        ];
        let links = [
            (1, 2, 90.0),
            (1, 3, 90.5),
            (2, 5, 70.0),
            (3, 5, 70.0),
            (1, 4, 110.0),
            (4, 5, 65.0),
            (1, 5, 200.0),
        ];
        let g = graph(&nodes, &links);
        assert_eq!(
            compute_routes(&g, 1)
                .expect("known")
                .get(5)
                .map(|r| r.best.edges.clone()),
            Some(vec![1, 2, 5])
        );
        assert_eq!(backup(&g, 1, 5), Some(vec![1, 4, 5]));
    }

    #[test]
    fn hysteresis_does_not_keep_a_backup_that_shares_the_risk() {
        let g = pacific(true);
        let fresh = compute_routes(&g, 1).expect("known");
        // A previous round published the plain backup (before the rule).
        let previous = crate::paths::compute_plain_routes(&g, 1).expect("known");
        assert_eq!(backup_in(&previous, 3), Some(vec![1, 2, 3]));
        let merged = apply_hysteresis(&previous, fresh, &g, &HysteresisPolicy::default());
        assert_eq!(backup_in(&merged, 3), Some(vec![1, 4, 3]));
    }
}
