//! Hierarchical routes: full paths inside a region, hubs between regions.
//!
//! Why: flat routing gives every edge a path to every other edge from one
//! search over the whole mesh; at 10,000 edges one source costs about 44 ms
//! and the routes of a mesh are O(edges²). Here a region's controller
//! searches only its own region plus the **hubs** of the others, so its work
//! is bounded by the region's size and the number of hubs, not the mesh, and
//! what it publishes is O(edges × hubs).
//!
//! The pieces, each computed from probe results alone:
//!
//! - **Hubs** ([`select_hubs`]): up to [`HubPolicy::hubs_per_region`] edges
//!   of each region, spread over the region's sites (greedy k-center on
//!   distance) and, at each site, the edge whose probed links are least
//!   inflated over the fiber bound (well-connected sites make good relays).
//!   Traffic enters a region at a hub, so every site needs one nearby.
//! - **Region tables** ([`RegionTable`]): from each hub of a region to each
//!   of its edges, the best path inside the region. A region's controller
//!   computes its own table and everybody else reads it: `hubs × members`
//!   entries.
//! - **The hub graph** ([`HubGraph`]): lowest costs between every pair of
//!   hubs, over probed hub-to-hub links and, inside a region, the table's
//!   paths between its hubs (Floyd-Warshall: a few hundred hubs).
//! - **Source routes** ([`SourceRoutes`]): for a source edge, best and backup
//!   paths over its own region and the hubs it has links to (the flat search
//!   of [`crate::paths`] on that small graph), then for every hub of the
//!   mesh the two cheapest ways to reach it with different first hops.
//!
//! - **Exits** ([`Exits`]): each edge's links straight to edges of other
//!   regions that are not hubs, but for those a hub entry from the same edge
//!   does as well; and **hub exits** ([`HubExits`]), its links to other
//!   regions' hubs, from which an edge rebuilds its routes to them.
//!
//! A route to an edge `d` of another region is then the cheapest of leaving
//! on an exit straight to `d` (after the source's own route to that exit's
//! edge) and, over the hubs `y` of `d`'s region, `cost(source → y) +
//! penalty(y) + table(y → d)`; its backup is the cheapest of the next three
//! candidates (other first hops) that avoids the best path's first hop as a
//! flat backup does. Composition is a minimum over a region's hubs and
//! exits, cheap enough for an edge to do on demand. Paths are
//! concatenations of pieces, with any loop cut out (cutting a loop only
//! lowers the cost). [`RegionRoutes`] keeps a region's routes up to date as
//! links change; [`wire`] is their published form.
//!
//! What is given up against the flat optimum: a path enters the destination
//! region at a hub (or on an exit straight to its destination), and leaves
//! the source region either from an edge with a link to a hub or at a hub.
//! With hubs at every site this costs little (`route_scale` measures it
//! against the flat optimum over all pairs of a 10,000-edge world: 99.67%
//! within 5%).

mod hubs;
mod region;
mod tables;
pub mod wire;

pub use hubs::{hub_probe_pairs, hub_targets, select_hubs, HubPolicy, Hubs};
pub use region::{ExitLink, Exits, RegionRoutes};
pub use tables::{hub_links, HubGraph, HubLink, RegionTable};

use std::collections::{BTreeMap, HashMap};

use crate::graph::{EdgeId, GraphError, MeshGraph};
use crate::paths::{compute_plain_routes, Path, Route, RouteSet};

/// An unreachable cost.
const INF: u64 = u64::MAX;
/// No node, hub or row.
const NONE: u32 = u32::MAX;

/// What every region's controller shares: the hubs, every region's table
/// and the hub graph.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    tables: Vec<RegionTable>,
    table_of: HashMap<String, u32>,
    /// The table of each edge's region.
    region_of: HashMap<EdgeId, u32>,
    hub_graph: HubGraph,
}

impl Hierarchy {
    /// Computes every region's table and the hub graph.
    pub fn build(graph: &MeshGraph, hubs: &Hubs) -> Hierarchy {
        let mut regions: Vec<&str> = graph.nodes().map(|n| n.region.as_str()).collect();
        regions.sort_unstable();
        regions.dedup();
        let tables: Vec<RegionTable> = regions
            .iter()
            .map(|r| RegionTable::compute(graph, r, hubs.get(*r).map_or(&[][..], |h| &h[..])))
            .collect();
        Self::from_tables(graph, tables)
    }

    /// The hierarchy of these region tables (as read from other controllers).
    pub fn from_tables(graph: &MeshGraph, tables: Vec<RegionTable>) -> Hierarchy {
        let links = hub_links(graph, &tables);
        Self::from_published(tables, &links)
    }

    /// The hierarchy of published pieces alone: every region's table and
    /// the links between hubs of different regions. What an edge builds to
    /// compose its routes ([`Hierarchy::compose`]), without the mesh graph.
    pub fn from_published(tables: Vec<RegionTable>, links: &[HubLink]) -> Hierarchy {
        let hub_graph = HubGraph::from_links(&tables, links);
        let table_of = tables
            .iter()
            .enumerate()
            .map(|(i, t)| (t.region.clone(), i as u32))
            .collect();
        let region_of = tables
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.members.iter().map(move |&m| (m, i as u32)))
            .collect();
        Hierarchy {
            tables,
            table_of,
            region_of,
            hub_graph,
        }
    }

    /// The table of `region`.
    pub fn table(&self, region: &str) -> Option<&RegionTable> {
        self.table_of.get(region).map(|&i| &self.tables[i as usize])
    }

    /// Every region's table.
    pub fn tables(&self) -> &[RegionTable] {
        &self.tables
    }

    /// The hub graph.
    pub fn hub_graph(&self) -> &HubGraph {
        &self.hub_graph
    }

    /// The graph a source of `region` searches: the region's edges and every
    /// hub of the mesh, with the region's links and its links to hubs.
    pub fn local_graph(&self, graph: &MeshGraph, region: &str) -> MeshGraph {
        let mut b = MeshGraph::builder(*graph.cost_model());
        let Some(table) = self.table(region) else {
            return b.build().expect("empty graph builds");
        };
        let members = &table.members;
        let inside = |id: EdgeId| table.member_index.contains_key(&id);
        for &id in members
            .iter()
            .chain(self.hub_graph.hubs.iter().filter(|&&h| !inside(h)))
        {
            if let Some(n) = graph.node(id) {
                b.add_node(n.clone()).expect("each node once");
            }
        }
        for &from in members {
            for (to, link) in graph.neighbors(from) {
                if inside(to) || self.hub_graph.index.contains_key(&to) {
                    b.add_link(from, to, *link)
                        .expect("valid link of a valid graph");
                }
            }
        }
        b.build().expect("a subgraph of a valid graph")
    }

    /// Routes of `source` (of the region `local` was built for).
    pub fn source_routes(
        &self,
        local: &MeshGraph,
        source: EdgeId,
    ) -> Result<SourceRoutes, GraphError> {
        let routes = compute_plain_routes(local, source)?;
        let labels = self.labels(&routes);
        Ok(SourceRoutes { routes, labels })
    }

    /// The routes of a source rebuilt from what is published for it: its
    /// routes to its region's edges (`published`, as [`wire`] carries them)
    /// and its region's [`HubExits`]. What an edge does with its published
    /// routes; the routes to the hubs of other regions are those the local
    /// search finds (equal costs; ties may resolve differently).
    pub fn source_routes_published(&self, published: &RouteSet, exits: &HubExits) -> SourceRoutes {
        let mut all: Vec<Route> = published.iter().cloned().collect();
        all.extend(exits.routes_from(published));
        let routes = RouteSet::new(published.source(), all);
        let labels = self.labels(&routes);
        SourceRoutes { routes, labels }
    }

    /// The routes of a source as published for it (its routes to the edges
    /// of its region and to the hubs it reaches, with their costs): what an
    /// edge composes its other routes from.
    pub fn source_routes_of(&self, routes: RouteSet) -> SourceRoutes {
        let labels = self.labels(&routes);
        SourceRoutes { routes, labels }
    }

    /// The links from the edges of the region `local` was built for to the
    /// hubs of other regions.
    pub fn hub_exits(&self, local: &MeshGraph, region: &str) -> HubExits {
        let mut exits = HubExits::default();
        let Some(table) = self.table(region) else {
            return exits;
        };
        for &from in &table.members {
            if let Some(toll) = local.transit_penalty_ms(from) {
                exits.toll.insert(from, ms_to_us(toll));
            }
            for (to, _) in local.neighbors(from) {
                if table.member_index.contains_key(&to) {
                    continue;
                }
                if let Some(cost) = local.link_cost_ms(from, to) {
                    exits
                        .by_hub
                        .entry(to)
                        .or_default()
                        .push((from, ms_to_us(cost)));
                }
            }
        }
        exits
    }

    /// A source's two cheapest ways to every hub, from its local routes.
    fn labels(&self, routes: &RouteSet) -> Vec<Cheapest<2>> {
        let source = routes.source();
        let hg = &self.hub_graph;
        let n = hg.len();
        // Ways to each hub: directly from the local search, or from a hub
        // the local search reaches on through the hub graph.
        let mut start: Vec<(usize, Label)> = Vec::new();
        for r in routes.iter() {
            if let Some(&i) = hg.index.get(&r.destination) {
                start.push((i as usize, Label::of(&r.best, i, false)));
                if let Some(b) = &r.backup {
                    start.push((i as usize, Label::of(b, i, true)));
                }
            }
        }
        // A source that is a hub itself starts there, at no cost; its first
        // hop toward each hub is that of the hub graph's path.
        let own = hg.index.get(&source).map(|&i| i as usize);
        if let Some(i) = own {
            start.push((
                i,
                Label {
                    cost_us: 0,
                    first_hop: NONE,
                    entry: i as u32,
                    backup: false,
                    via_hub: i as u32,
                    row: NONE,
                    exit: NONE,
                },
            ));
        }
        // Cheapest first: once a start costs more than both labels of a hub,
        // nothing after it does better (hub graph costs are not negative).
        start.sort_by_key(|(_, l)| l.key());
        let mut labels = vec![Cheapest::<2>::default(); n];
        for (j, label) in labels.iter_mut().enumerate() {
            for &(i, from) in &start {
                if label.bar().is_some_and(|s| from.cost_us >= s.cost_us) {
                    break;
                }
                let mut first_hop = from.first_hop;
                let cost_us = if i == j {
                    if own == Some(i) {
                        continue;
                    }
                    from.cost_us
                } else {
                    let hop = hg.cost(i, j);
                    if hop == INF {
                        continue;
                    }
                    if own == Some(i) {
                        let mut p = Vec::new();
                        hg.append_path(&self.tables, i, j, &mut p);
                        first_hop = p[0];
                        hop
                    } else {
                        from.cost_us + hg.toll[i] + hop
                    }
                };
                label.offer(Label {
                    cost_us,
                    first_hop,
                    via_hub: j as u32,
                    ..from
                });
            }
        }
        labels
    }

    /// [`Hierarchy::source_routes`] of each of `sources`, over `threads`
    /// threads; sources the local graph does not know are left out.
    pub fn sources_routes(
        &self,
        local: &MeshGraph,
        sources: &[EdgeId],
        threads: usize,
    ) -> Vec<(EdgeId, SourceRoutes)> {
        let one = |part: &[EdgeId]| -> Vec<(EdgeId, SourceRoutes)> {
            part.iter()
                .filter_map(|&s| self.source_routes(local, s).ok().map(|r| (s, r)))
                .collect()
        };
        let threads = threads.clamp(1, sources.len().max(1));
        if threads == 1 {
            return one(sources);
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = sources
                .chunks(sources.len().div_ceil(threads))
                .map(|part| scope.spawn(move || one(part)))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    }

    /// Links from each edge of `region` to edges of other regions that are
    /// not hubs (links to hubs are in the local graph), with their costs.
    pub fn raw_exits(
        &self,
        graph: &MeshGraph,
        region: &str,
    ) -> BTreeMap<EdgeId, Vec<(EdgeId, u64)>> {
        let mut raw = BTreeMap::new();
        let Some(table) = self.table(region) else {
            return raw;
        };
        for &from in &table.members {
            let Some(u) = graph.idx(from) else { continue };
            let links: Vec<(EdgeId, u64)> = graph
                .out_range(u)
                .map(|e| (graph.id(graph.out_to[e]), graph.out_cost[e] as u64))
                .filter(|(to, _)| {
                    !table.member_index.contains_key(to) && !self.hub_graph.index.contains_key(to)
                })
                .collect();
            raw.insert(from, links);
        }
        raw
    }

    /// The exits of `from` worth keeping: all but those that entering the
    /// destination's region at a hub does as well from the same edge
    /// (`from -> y` in `local`, plus `y`'s table path, costs no more than
    /// `from -> d`). Those change no route, and most exits are such.
    fn useful_exits(
        &self,
        local: &MeshGraph,
        from: EdgeId,
        raw: &[(EdgeId, u64)],
    ) -> Vec<(EdgeId, u64)> {
        let hg = &self.hub_graph;
        let to_hub: HashMap<EdgeId, u64> = local
            .neighbors(from)
            .filter(|(to, _)| hg.index.contains_key(to))
            .filter_map(|(to, _)| Some((to, ms_to_us(local.link_cost_ms(from, to)?))))
            .collect();
        raw.iter()
            .copied()
            .filter(|&(to, cost)| {
                let Some(region) = self.region_of.get(&to) else {
                    return true;
                };
                let far = &self.tables[*region as usize];
                !far.hubs.iter().enumerate().any(|(row, hub)| {
                    let (Some(&c), tail) = (to_hub.get(hub), far.cost(row, to)) else {
                        return false;
                    };
                    tail != INF && c + hg.toll[hg.index[hub] as usize] + tail <= cost
                })
            })
            .collect()
    }

    /// The useful exits of every edge of the region `local` was built for.
    pub fn exits(&self, local: &MeshGraph, raw: &BTreeMap<EdgeId, Vec<(EdgeId, u64)>>) -> Exits {
        let mut exits = Exits::default();
        for (&from, links) in raw {
            exits.replace(from, &[], &self.useful_exits(local, from, links));
        }
        exits
    }

    /// The route from `source` to `dest`, composed from `routes` (the
    /// source's), `exits` (its region's) and the tables; `None` if
    /// unreachable. Costs and RTTs are those of `graph`.
    pub fn route(
        &self,
        graph: &MeshGraph,
        exits: &Exits,
        routes: &SourceRoutes,
        dest: EdgeId,
    ) -> Option<Route> {
        let composed = self.compose(exits, routes, dest)?;
        let best = metrics(graph, composed.best)?;
        let backup = composed
            .backups
            .into_iter()
            .filter_map(|p| metrics(graph, p))
            .find(|p| avoids(p, &best));
        Some(Route {
            destination: dest,
            best,
            backup,
        })
    }

    /// The paths from the source of `routes` to `dest` composed from the
    /// published pieces alone (no graph): for a destination of the source's
    /// region its routes as they are, else the cheapest way through an exit
    /// or a hub of the destination's region, and the next candidates for a
    /// backup, cheapest first. `None` if unreachable or unknown.
    pub fn compose(&self, exits: &Exits, routes: &SourceRoutes, dest: EdgeId) -> Option<Composed> {
        let source = routes.routes.source();
        let region = *self.region_of.get(&dest)?;
        if Some(&region) == self.region_of.get(&source) {
            let r = routes.routes.get(dest)?;
            return Some(Composed {
                best: r.best.edges.clone(),
                cost_us: ms_to_us(r.best.cost_ms),
                backups: r.backup.iter().map(|b| b.edges.clone()).collect(),
            });
        }
        let table = &self.tables[region as usize];
        // Four candidates: the best and three for a backup that avoids it.
        let mut best = Cheapest::<4>::default();
        for &(exit, cost_us) in exits.by_target.get(&dest).map_or(&[][..], |v| &v[..]) {
            let leave = Label {
                cost_us,
                first_hop: dest,
                entry: NONE,
                backup: false,
                via_hub: NONE,
                row: NONE,
                exit,
            };
            if exit == source {
                best.offer(leave);
                continue;
            }
            let (Some(r), Some(toll)) = (routes.routes.get(exit), self.toll(exit)) else {
                continue;
            };
            for (path, backup) in
                std::iter::once((&r.best, false)).chain(r.backup.as_ref().map(|b| (b, true)))
            {
                best.offer(Label {
                    cost_us: ms_to_us(path.cost_ms) + toll + cost_us,
                    first_hop: path.first_hop().unwrap_or(NONE),
                    backup,
                    ..leave
                });
            }
        }
        for (row, hub) in table.hubs.iter().enumerate() {
            let i = self.hub_graph.index[hub] as usize;
            let tail = table.cost(row, dest);
            if tail == INF {
                continue;
            }
            let toll = if *hub == dest || *hub == source {
                0
            } else {
                self.hub_graph.toll[i]
            };
            for l in routes.labels[i].iter() {
                best.offer(Label {
                    cost_us: l.cost_us + toll + tail,
                    row: row as u32,
                    ..l
                });
            }
        }
        let first = best.first()?;
        Some(Composed {
            best: self.expand(routes, first, dest)?,
            cost_us: first.cost_us,
            backups: best
                .iter()
                .skip(1)
                .filter_map(|l| self.expand(routes, l, dest))
                .collect(),
        })
    }

    /// The transit penalty of `edge`, µs, from its region's table.
    fn toll(&self, edge: EdgeId) -> Option<u64> {
        self.tables[*self.region_of.get(&edge)? as usize].toll(edge)
    }

    /// The region of `edge`, if a table lists it.
    pub fn region_of(&self, edge: EdgeId) -> Option<&str> {
        self.region_of
            .get(&edge)
            .map(|&t| self.tables[t as usize].region.as_str())
    }

    /// The path of a composed label, loops cut out.
    fn expand(&self, routes: &SourceRoutes, l: Label, dest: EdgeId) -> Option<Vec<EdgeId>> {
        let source = routes.routes.source();
        let local_path = |to: EdgeId| -> Option<Vec<EdgeId>> {
            if to == source {
                return Some(vec![source]);
            }
            let r = routes.routes.get(to)?;
            Some(if l.backup {
                r.backup.as_ref()?.edges.clone()
            } else {
                r.best.edges.clone()
            })
        };
        if l.exit != NONE {
            let mut path = local_path(l.exit)?;
            path.push(dest);
            return Some(cut_loops(path));
        }
        let hg = &self.hub_graph;
        let (entry, via_hub) = (l.entry as usize, l.via_hub as usize);
        let mut path = local_path(hg.hubs[entry])?;
        if via_hub != entry {
            hg.append_path(&self.tables, entry, via_hub, &mut path);
        }
        let (t, _) = hg.home[via_hub];
        let tail = self.tables[t as usize].path(l.row as usize, dest)?;
        path.extend_from_slice(&tail[1..]);
        Some(cut_loops(path))
    }
}

/// A route composed from published pieces: the best path and its cost, and
/// the next candidates, cheapest first, each with another first hop (pick
/// the first that [`avoids_first_relay`] the best one for a backup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    /// `[source, ..., dest]`.
    pub best: Vec<EdgeId>,
    /// What routing minimises along `best`, µs.
    pub cost_us: u64,
    /// Other candidates, cheapest first.
    pub backups: Vec<Vec<EdgeId>>,
}

impl Composed {
    /// The backup: the cheapest other candidate that avoids the best path's
    /// first hop ([`avoids_first_relay`]).
    pub fn backup(&self) -> Option<&[EdgeId]> {
        self.backups
            .iter()
            .find(|b| avoids_first_relay(b, &self.best))
            .map(Vec::as_slice)
    }
}

/// Whether `backup` avoids `best`'s first hop as [`Route::backup`] defines
/// it, on bare paths: the direct link when `best` is direct, else the first
/// relay entirely.
pub fn avoids_first_relay(backup: &[EdgeId], best: &[EdgeId]) -> bool {
    match (backup.get(1), best.get(1)) {
        (Some(b), Some(f)) if best.len() == 2 => b != f,
        (Some(_), Some(f)) => !backup[1..].contains(f),
        _ => false,
    }
}

/// Whether `backup` avoids `best`'s first hop as [`Route::backup`] defines
/// it: the direct link when `best` is direct, else the first relay entirely.
fn avoids(backup: &Path, best: &Path) -> bool {
    avoids_first_relay(&backup.edges, &best.edges)
}

fn metrics(graph: &MeshGraph, edges: Vec<EdgeId>) -> Option<Path> {
    let m = graph.path_metrics(&edges)?;
    Some(Path {
        edges,
        cost_ms: m.cost_ms,
        rtt_ms: m.rtt_ms,
    })
}

/// `path` with every cycle removed: from each repeated edge the walk jumps
/// to its last occurrence.
fn cut_loops(path: Vec<EdgeId>) -> Vec<EdgeId> {
    let mut last: HashMap<EdgeId, usize> = HashMap::with_capacity(path.len());
    for (i, &e) in path.iter().enumerate() {
        last.insert(e, i);
    }
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        out.push(path[i]);
        i = last[&path[i]] + 1;
    }
    out
}

/// One way to a hub or a destination: what it costs, the source's first
/// hop, the hub the local search reached (`entry`, `NONE` for the source's
/// direct link to the destination) and whether along that hub's backup
/// path, and the hub it goes on to through the hub graph (`via_hub`, with
/// its row in its region's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Label {
    cost_us: u64,
    first_hop: EdgeId,
    entry: u32,
    backup: bool,
    via_hub: u32,
    row: u32,
    /// For a route that leaves the region on a link straight to its
    /// destination: the edge the link leaves from (else `NONE`).
    exit: EdgeId,
}

impl Label {
    fn of(path: &Path, entry: u32, backup: bool) -> Label {
        Label {
            cost_us: ms_to_us(path.cost_ms),
            first_hop: path.first_hop().unwrap_or(NONE),
            entry,
            backup,
            via_hub: entry,
            row: NONE,
            exit: NONE,
        }
    }

    /// Ordering: cost, then first hop and the rest, so that equal costs
    /// resolve the same way every time.
    fn key(&self) -> (u64, EdgeId, u32, bool, u32) {
        (
            self.cost_us,
            self.first_hop,
            self.entry,
            self.backup,
            self.via_hub,
        )
    }
}

/// [`crate::graph`]'s conversion, widened: the sums built here may pass
/// what one link's cost holds.
fn ms_to_us(ms: f64) -> u64 {
    u64::from(crate::graph::ms_to_us(ms))
}

/// The `K` cheapest labels with different first hops (each the cheapest
/// of its first hop), cheapest first.
#[derive(Debug, Clone, Copy)]
struct Cheapest<const K: usize> {
    labels: [Option<Label>; K],
}

impl<const K: usize> Default for Cheapest<K> {
    fn default() -> Self {
        Cheapest { labels: [None; K] }
    }
}

impl<const K: usize> Cheapest<K> {
    fn offer(&mut self, l: Label) {
        let slot = match self
            .labels
            .iter()
            .position(|x| x.is_some_and(|x| x.first_hop == l.first_hop))
        {
            Some(i) if self.labels[i].is_some_and(|x| l.key() < x.key()) => i,
            Some(_) => return,
            None => match self.labels.iter().position(Option::is_none) {
                Some(i) => i,
                None if self.labels[K - 1].is_some_and(|x| l.key() < x.key()) => K - 1,
                None => return,
            },
        };
        self.labels[slot] = Some(l);
        // Move it up to its place (the rest stay sorted).
        let mut i = slot;
        while i > 0 && self.labels[i - 1].is_none_or(|x| l.key() < x.key()) {
            self.labels.swap(i - 1, i);
            i -= 1;
        }
    }

    fn first(&self) -> Option<Label> {
        self.labels[0]
    }

    /// The dearest kept label, once all `K` are taken.
    fn bar(&self) -> Option<Label> {
        self.labels[K - 1]
    }

    fn iter(&self) -> impl Iterator<Item = Label> + '_ {
        self.labels.iter().flatten().copied()
    }
}

/// A region's links from its edges to the hubs of other regions, by hub,
/// with each edge's transit penalty: published once per region, so that an
/// edge's own published routes need only cover its region ([`wire`]).
#[derive(Debug, Clone, Default)]
pub struct HubExits {
    by_hub: HashMap<EdgeId, Vec<(EdgeId, u64)>>,
    toll: HashMap<EdgeId, u64>,
}

impl HubExits {
    /// Number of links.
    pub fn len(&self) -> usize {
        self.by_hub.values().map(Vec::len).sum()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.by_hub.is_empty()
    }

    /// Best and backup paths to every hub these exits reach, from the
    /// source's routes inside its region, as the local search defines them:
    /// the best is the cheapest way through an exit; the backup avoids the
    /// direct link when the best is direct, else its first relay entirely
    /// (edges whose own best path starts with that relay come in by their
    /// backups, which avoid it).
    pub fn routes_from(&self, inside: &RouteSet) -> Vec<Route> {
        let source = inside.source();
        let mut out = Vec::with_capacity(self.by_hub.len());
        let path_to = |x: EdgeId, backup: bool, hub: EdgeId| -> Option<(Vec<EdgeId>, u64)> {
            if x == source {
                return (!backup).then(|| (vec![source, hub], 0));
            }
            let r = inside.get(x)?;
            let p = if backup { r.backup.as_ref()? } else { &r.best };
            let mut edges = p.edges.clone();
            edges.push(hub);
            Some((
                edges,
                ms_to_us(p.cost_ms) + self.toll.get(&x).copied().unwrap_or(0),
            ))
        };
        // Cost, hops, then ids: the local search's order.
        let pick = |a: Option<(Vec<EdgeId>, u64)>, b: (Vec<EdgeId>, u64)| match a {
            Some(a) if (a.1, a.0.len(), &a.0) <= (b.1, b.0.len(), &b.0) => Some(a),
            _ => Some(b),
        };
        let mut hubs: Vec<&EdgeId> = self.by_hub.keys().collect();
        hubs.sort_unstable();
        for &hub in hubs {
            let links = &self.by_hub[&hub];
            let mut best: Option<(Vec<EdgeId>, u64)> = None;
            for &(x, c) in links {
                if let Some((p, reach)) = path_to(x, false, hub) {
                    best = pick(best, (p, reach + c));
                }
            }
            let Some((best_path, best_cost)) = best else {
                continue;
            };
            let first = best_path[1];
            let direct = best_path.len() == 2;
            let mut backup: Option<(Vec<EdgeId>, u64)> = None;
            for &(x, c) in links {
                let candidate = if direct {
                    if x == source {
                        continue;
                    }
                    path_to(x, false, hub)
                } else {
                    if x == first {
                        continue;
                    }
                    let in_group = inside
                        .get(x)
                        .is_some_and(|r| r.best.first_hop() == Some(first));
                    path_to(x, in_group, hub)
                };
                if let Some((p, reach)) = candidate {
                    backup = pick(backup, (p, reach + c));
                }
            }
            let path = |(edges, cost): (Vec<EdgeId>, u64)| Path {
                edges,
                cost_ms: cost as f64 / 1000.0,
                rtt_ms: 0.0,
            };
            out.push(Route {
                destination: hub,
                best: path((best_path, best_cost)),
                backup: backup.map(path),
            });
        }
        out
    }
}

/// A source's routes: best and backup paths to its region's edges and to
/// the hubs it has links to, and its two cheapest ways (different first
/// hops) to every hub of the mesh.
#[derive(Debug, Clone)]
pub struct SourceRoutes {
    routes: RouteSet,
    labels: Vec<Cheapest<2>>,
}

impl SourceRoutes {
    /// The routes of the local search.
    pub fn local(&self) -> &RouteSet {
        &self.routes
    }

    /// What is published for this source: its routes to the edges of its
    /// region (the rest follows from [`HubExits`]).
    pub fn published(&self, hier: &Hierarchy, region: &str) -> RouteSet {
        let inside = |id: &EdgeId| {
            hier.table(region)
                .is_some_and(|t| t.member_index.contains_key(id))
        };
        RouteSet::new(
            self.routes.source(),
            self.routes
                .iter()
                .filter(|r| inside(&r.destination))
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{CostModel, NodeInfo};
    use crate::probe::LinkSummary;
    use crate::synth::{generate, SynthMesh, SynthParams, XorShift64};

    /// Four hubs per region of 20 edges: most edges are not hubs.
    fn few_hubs() -> HubPolicy {
        HubPolicy {
            hubs_per_region: 4,
            ..HubPolicy::default()
        }
    }

    /// A 400-edge probe mesh over 20 regions with hub probes, its graph and
    /// hubs.
    fn world(policy: &HubPolicy) -> (SynthMesh, MeshGraph, Hubs) {
        let mut mesh = generate(&SynthParams::probe_mesh(400, 5));
        let base = mesh.graph(CostModel::default()).expect("valid");
        let hubs = select_hubs(&base, policy);
        mesh.add_probes(hub_probe_pairs(&mesh.nodes, &hubs, policy));
        let graph = mesh.graph(CostModel::default()).expect("valid");
        (mesh, graph, hubs)
    }

    #[test]
    fn loops_are_cut() {
        assert_eq!(cut_loops(vec![1, 2, 3, 2, 4]), vec![1, 2, 4]);
        assert_eq!(cut_loops(vec![1, 2, 3, 1, 5]), vec![1, 5]);
        assert_eq!(cut_loops(vec![1, 2, 3]), vec![1, 2, 3]);
    }

    #[test]
    fn cheapest_keeps_one_label_per_first_hop() {
        let l = |cost_us, first_hop| Label {
            cost_us,
            first_hop,
            entry: 0,
            backup: false,
            via_hub: 0,
            row: NONE,
            exit: NONE,
        };
        let mut t = Cheapest::<2>::default();
        for x in [l(50, 1), l(40, 1), l(60, 2), l(45, 3), l(30, 3)] {
            t.offer(x);
        }
        assert_eq!(t.iter().collect::<Vec<_>>(), vec![l(30, 3), l(40, 1)]);
        let mut t = Cheapest::<3>::default();
        for x in [
            l(50, 1),
            l(60, 2),
            l(40, 1),
            l(70, 4),
            l(55, 2),
            l(20, 4),
            l(10, 5),
        ] {
            t.offer(x);
        }
        assert_eq!(
            t.iter().collect::<Vec<_>>(),
            vec![l(10, 5), l(20, 4), l(40, 1)]
        );
    }

    #[test]
    fn hubs_are_few_spread_and_never_draining() {
        let policy = few_hubs();
        let (_, graph, hubs) = world(&policy);
        assert_eq!(hubs.len(), 20);
        assert_eq!(
            select_hubs(&graph, &policy).len(),
            20,
            "deterministic shape"
        );
        for (region, list) in &hubs {
            let members: Vec<&NodeInfo> = graph.nodes().filter(|n| &n.region == region).collect();
            assert_eq!(
                list.len(),
                policy
                    .hubs_per_region
                    .min(members.iter().filter(|n| !n.draining).count())
            );
            for h in list {
                let n = graph.node(*h).expect("hub in graph");
                assert_eq!(&n.region, region);
                assert!(!n.draining);
            }
        }
    }

    /// Every route is a valid path in the graph, never cheaper than the
    /// flat optimum, and its backup avoids the best path's first hop.
    #[test]
    fn composed_routes_are_valid_and_close_to_the_flat_optimum() {
        let (_, graph, hubs) = world(&few_hubs());
        let hier = Hierarchy::build(&graph, &hubs);
        let (mut pairs, mut within) = (0, 0);
        for table in hier.tables().iter().step_by(4) {
            let local = hier.local_graph(&graph, table.region());
            let exits = hier.exits(&local, &hier.raw_exits(&graph, table.region()));
            for &s in table.members().iter().step_by(5) {
                let routes = hier.source_routes(&local, s).expect("member");
                let flat = crate::paths::compute_routes(&graph, s).expect("member");
                for f in flat.iter() {
                    let r = hier
                        .route(&graph, &exits, &routes, f.destination)
                        .expect("connected mesh");
                    assert!(graph.is_valid_path(&r.best.edges), "{:?}", r.best.edges);
                    assert_eq!(
                        (r.best.edges[0], *r.best.edges.last().unwrap()),
                        (s, f.destination)
                    );
                    assert!(
                        r.best.cost_ms >= f.best.cost_ms - 0.01,
                        "{s}->{}: {} < {}",
                        f.destination,
                        r.best.cost_ms,
                        f.best.cost_ms
                    );
                    if let Some(b) = &r.backup {
                        assert!(graph.is_valid_path(&b.edges));
                        assert!(
                            avoids(b, &r.best),
                            "backup {:?} of {:?}",
                            b.edges,
                            r.best.edges
                        );
                    }
                    pairs += 1;
                    within += usize::from(r.best.cost_ms <= f.best.cost_ms * 1.05);
                }
            }
        }
        assert!(within * 100 >= pairs * 97, "{within} of {pairs} within 5%");
    }

    /// With every edge a hub, the hierarchy loses nothing: the flat optimum.
    #[test]
    fn every_edge_a_hub_is_the_flat_optimum() {
        let mesh = generate(&SynthParams::sparse_mesh(120, 9));
        let graph = mesh.graph(CostModel::default()).expect("valid");
        let policy = HubPolicy {
            hubs_per_region: usize::MAX,
            hubs_per_sqrt_edge: f64::INFINITY,
            ..HubPolicy::default()
        };
        let hubs = select_hubs(&graph, &policy);
        let hier = Hierarchy::build(&graph, &hubs);
        for table in hier.tables().iter().step_by(3) {
            let local = hier.local_graph(&graph, table.region());
            let exits = hier.exits(&local, &hier.raw_exits(&graph, table.region()));
            for &s in table.members() {
                if graph.node(s).is_some_and(|n| n.draining) {
                    continue;
                }
                let routes = hier.source_routes(&local, s).expect("member");
                for f in crate::paths::compute_routes(&graph, s)
                    .expect("member")
                    .iter()
                {
                    let r = hier
                        .route(&graph, &exits, &routes, f.destination)
                        .expect("reachable");
                    assert!(
                        (r.best.cost_ms - f.best.cost_ms).abs() < 0.01,
                        "{s}->{}: {:?} vs {:?}",
                        f.destination,
                        r.best,
                        f.best
                    );
                }
            }
        }
    }

    /// After any one link changes, the routes kept up to date are those a
    /// recomputation from scratch finds.
    #[test]
    fn a_link_change_recomputes_exactly_what_it_affects() {
        let (_, graph, hubs) = world(&few_hubs());
        let hier = Hierarchy::build(&graph, &hubs);
        let region = hier.tables()[0].region().to_string();
        let members = hier.tables()[0].members().to_vec();
        let mut routes = RegionRoutes::compute(&hier, &graph, &region, 2);
        let mut rng = XorShift64::new(3);
        let mut partial = 0;
        for round in 0..30 {
            let from = members[rng.below(members.len())];
            let targets: Vec<EdgeId> = routes
                .local_graph()
                .neighbors(from)
                .map(|(t, _)| t)
                .collect();
            let to = targets[rng.below(targets.len())];
            let factor = [0.5, 0.8, 1.25, 3.0, f64::INFINITY][round % 5];
            let original = *graph.link(from, to).expect("a link");
            let summary = factor.is_finite().then_some(LinkSummary {
                rtt_ms: original.rtt_ms * factor,
                ..original
            });
            let changed = graph.with_link(from, to, summary).expect("valid");
            let count = routes.set_link(&hier, from, to, summary, 2).expect("valid");
            partial += usize::from(count < members.len());
            let fresh = RegionRoutes::compute(&hier, &changed, &region, 2);
            for (s, r) in fresh.sources() {
                assert_eq!(
                    routes.source(*s).expect("same sources").local(),
                    r.local(),
                    "{from}->{to} x{factor}: source {s}"
                );
            }
            routes
                .set_link(&hier, from, to, Some(original), 2)
                .expect("valid");
        }
        assert!(
            partial > 10,
            "only {partial} of 30 changes spared some source"
        );
    }

    /// An exit's summary reaches composed routes at once: made cheap, the
    /// route takes it; removed, it does not.
    #[test]
    fn exit_changes_reach_routes() {
        let (_, graph, hubs) = world(&few_hubs());
        let hier = Hierarchy::build(&graph, &hubs);
        let region = hier.tables()[2].region().to_string();
        let mut routes = RegionRoutes::compute(&hier, &graph, &region, 1);
        let hub_ids: Vec<EdgeId> = hubs.values().flatten().copied().collect();
        let (from, to, link) = hier.tables()[2]
            .members()
            .iter()
            .flat_map(|&m| graph.neighbors(m).map(move |(t, l)| (m, t, *l)))
            .find(|(_, t, _)| {
                graph.node(*t).is_some_and(|n| n.region != region) && !hub_ids.contains(t)
            })
            .expect("an exit");
        let cheap = LinkSummary {
            rtt_ms: 0.1,
            jitter_ms: 0.0,
            loss: 0.0,
            ..link
        };
        routes
            .set_link(&hier, from, to, Some(cheap), 1)
            .expect("valid");
        let changed = graph.with_link(from, to, Some(cheap)).expect("valid");
        let r = routes.route(&hier, &changed, from, to).expect("reachable");
        assert_eq!(r.best.edges, vec![from, to]);
        routes.set_link(&hier, from, to, None, 1).expect("valid");
        let gone = graph.with_link(from, to, None).expect("valid");
        let r = routes.route(&hier, &gone, from, to).expect("reachable");
        assert_ne!(r.best.edges, vec![from, to]);
        assert!(gone.is_valid_path(&r.best.edges));
    }

    /// Routes rebuilt from what is published (routes inside the region and
    /// the region's hub exits) reach every hub at the local search's costs,
    /// and compose the same routes.
    /// What an edge does: rebuild the tables, hub graph, exits and its own
    /// routes from their published parts alone, and compose. The paths are
    /// those the controller's hierarchy (built with the graph) composes.
    #[test]
    fn composition_from_published_parts_needs_no_graph() {
        let (_, graph, hubs) = world(&few_hubs());
        let hier = Hierarchy::build(&graph, &hubs);
        let tables: Vec<RegionTable> = hier
            .tables()
            .iter()
            .map(|t| {
                RegionTable::from_parts(
                    t.region().to_string(),
                    t.members().to_vec(),
                    t.hubs().to_vec(),
                    t.costs_us().to_vec(),
                    t.preds().to_vec(),
                    t.tolls_us().to_vec(),
                )
                .expect("a computed table is valid")
            })
            .collect();
        let all = hub_links(&graph, hier.tables());
        // Only the links the hub graph uses are published: the same routes.
        let links = hier.hub_graph().useful_links(&all);
        assert!(!links.is_empty() && links.len() < all.len());
        let published = Hierarchy::from_published(tables, &links);
        let mut composed = 0;
        for table in hier.tables().iter().step_by(4) {
            let region = table.region();
            let routes = RegionRoutes::compute(&hier, &graph, region, 1);
            let exits = Exits::from_links(routes.exits().links());
            for (&s, full) in routes.sources().step_by(4) {
                let mine = published.source_routes_of(full.local().clone());
                for d in graph.nodes().step_by(3).map(|n| n.id).filter(|&d| d != s) {
                    let want = hier.route(&graph, routes.exits(), full, d);
                    let got = published.compose(&exits, &mine, d);
                    let (Some(want), Some(got)) = (want, got) else {
                        panic!("{s}->{d}: reachable one way only");
                    };
                    assert_eq!(got.best, want.best.edges, "{s}->{d}");
                    assert!(
                        got.cost_us.abs_diff(ms_to_us(want.best.cost_ms)) <= 2,
                        "{s}->{d}: {} vs {:?}",
                        got.cost_us,
                        want.best
                    );
                    assert_eq!(
                        got.backup(),
                        want.backup.as_ref().map(|b| &b.edges[..]),
                        "{s}->{d}"
                    );
                    composed += 1;
                }
            }
        }
        assert!(composed > 1000, "{composed} routes composed");
    }

    #[test]
    fn bad_published_tables_are_refused() {
        let ok = || {
            (
                vec![1, 2, 3],
                vec![1],
                vec![0, 5, 9],
                vec![NONE, 0, 1],
                vec![7, 7, 7],
            )
        };
        let (m, h, c, p, t) = ok();
        assert!(RegionTable::from_parts("r".into(), m, h, c, p, t).is_ok());
        let (m, _, c, p, t) = ok();
        let e = RegionTable::from_parts("r".into(), m, vec![4], c, p, t).unwrap_err();
        assert!(e.contains("hub 4 is not a member"), "{e}");
        let (m, h, _, p, t) = ok();
        let e = RegionTable::from_parts("r".into(), m, h, vec![0, 5], p, t).unwrap_err();
        assert!(e.contains("needs 3 costs"), "{e}");
        let (m, h, c, _, t) = ok();
        let e = RegionTable::from_parts("r".into(), m, h, c, vec![NONE, 2, 1], t).unwrap_err();
        assert!(e.contains("does not lead back"), "{e}");
        let (m, h, c, _, t) = ok();
        let e = RegionTable::from_parts("r".into(), m, h, c, vec![NONE, 0, 9], t).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let (_, h, c, p, t) = ok();
        let e = RegionTable::from_parts("r".into(), vec![1, 1, 3], h, c, p, t).unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn published_routes_rebuild_the_rest() {
        let (_, graph, hubs) = world(&few_hubs());
        let hier = Hierarchy::build(&graph, &hubs);
        for table in hier.tables().iter().step_by(5) {
            let region = table.region();
            let routes = RegionRoutes::compute(&hier, &graph, region, 1);
            let exits = hier.hub_exits(routes.local_graph(), region);
            assert!(!exits.is_empty());
            for (&s, full) in routes.sources().step_by(3) {
                let rebuilt = hier.source_routes_published(&full.published(&hier, region), &exits);
                assert_eq!(rebuilt.local().len(), full.local().len(), "source {s}");
                for (a, b) in rebuilt.local().iter().zip(full.local().iter()) {
                    assert_eq!(a.destination, b.destination);
                    assert!(
                        (a.best.cost_ms - b.best.cost_ms).abs() < 0.002,
                        "{s}->{}: {:?} vs {:?}",
                        a.destination,
                        a.best,
                        b.best
                    );
                    let cost = |r: &Route| r.backup.as_ref().map(|p| (p.cost_ms * 1000.0).round());
                    assert_eq!(
                        cost(a),
                        cost(b),
                        "{s}->{} backup: {:?} vs {:?}",
                        a.destination,
                        a.backup,
                        b.backup
                    );
                }
                for d in graph.nodes().step_by(7).map(|n| n.id) {
                    let x = hier
                        .route(&graph, routes.exits(), &rebuilt, d)
                        .map(|r| r.best.cost_ms);
                    let y = hier
                        .route(&graph, routes.exits(), full, d)
                        .map(|r| r.best.cost_ms);
                    assert_eq!(
                        x.map(|c| (c * 1000.0).round()),
                        y.map(|c| (c * 1000.0).round()),
                        "{s}->{d}"
                    );
                }
            }
        }
    }
}
