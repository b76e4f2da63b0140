//! Best and backup paths from a source edge, hysteresis, and path stretch.
//!
//! Why: the controller gives each edge a source route to every other edge
//! (docs/protocol.md 9.5: routes chosen at the ingress are loop-free by construction)
//! plus a backup to switch to at once when the first hop fails, and must not
//! flap between near-equal routes as probe figures wobble.
//!
//! - **Best path**: Dijkstra over [`MeshGraph`] costs with a binary heap and a
//!   total order on paths: lower cost, then fewer hops, then the
//!   lexicographically smaller sequence of edge ids. Costs are integer
//!   microseconds, so ties are exact and the result depends only on the graph,
//!   never on insertion or heap order (moq-relay ranks routes the same way so
//!   equal routes do not flap).
//! - **Backup path**: the best path that avoids the best path's first hop.
//!   When the best path is direct that means not using the direct link; when
//!   it goes through a relay, it means not using that relay at all, because a
//!   backup that still crosses the relay would die with it (an edge being
//!   killed is the failure we plan for). All backups of one source cost less
//!   than one more Dijkstra: destinations are grouped by first hop; nodes
//!   outside a group keep their best labels without the group's relay (their
//!   best paths avoid it); the best-path search also keeps, per node, the best
//!   offer through another first hop, which is where the group's search
//!   starts; and only the group is searched again. Backups also avoid the
//!   best path's *shared risk* where they can: no link between the same two
//!   sites as its first link, no relay in its first hop's site
//!   ([`crate::risk`]: two edges of one city fail together).
//! - **Scale**: searches run on the graph's routing view, without the links
//!   that can be on no best or backup path (see [`MeshGraph::routing_link_count`]),
//!   over integer costs and reused buffers.
//! - **Hysteresis**: [`apply_hysteresis`] keeps a still-valid previous path
//!   unless the new one is better by a margin.
//! - **Stretch**: [`optimal_rtt`] and [`path_stretch`] measure how far a
//!   chosen path's RTT is from the lowest possible RTT (the routing goal, docs/benchmarks.md: within 5%
//!   for 99% of pairs).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

use crate::graph::{us_to_ms, EdgeId, GraphError, MeshGraph};
use crate::risk::shares_risk;

/// A path through the mesh with its figures at the time it was computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Path {
    /// Edges from source to destination, both included.
    pub edges: Vec<EdgeId>,
    /// Cost in ms-equivalent (link costs plus transit penalties).
    pub cost_ms: f64,
    /// Sum of link RTTs in ms.
    pub rtt_ms: f64,
}

impl Path {
    /// The edge after the source (the destination itself for a direct path).
    pub fn first_hop(&self) -> Option<EdgeId> {
        self.edges.get(1).copied()
    }

    /// Number of links.
    pub fn hop_count(&self) -> usize {
        self.edges.len().saturating_sub(1)
    }
}

/// The paths from a source to one destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// Destination edge.
    pub destination: EdgeId,
    /// The path to use.
    pub best: Path,
    /// The path to switch to when the best path's first hop fails: it avoids
    /// that hop (the direct link, or the first relay entirely), and where it
    /// can the hop's shared risk ([`crate::risk`]). `None` when no such
    /// path exists.
    pub backup: Option<Path>,
}

/// Routes from one source to every reachable destination, ordered by
/// destination id. Unreachable destinations have no entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawRouteSet")]
pub struct RouteSet {
    source: EdgeId,
    routes: Vec<Route>,
}

#[derive(Deserialize)]
struct RawRouteSet {
    source: EdgeId,
    routes: Vec<Route>,
}

impl From<RawRouteSet> for RouteSet {
    fn from(raw: RawRouteSet) -> Self {
        RouteSet::new(raw.source, raw.routes)
    }
}

impl RouteSet {
    /// A route set from `routes` in any order; of several routes to the same
    /// destination the first is kept.
    pub fn new(source: EdgeId, mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| r.destination);
        routes.dedup_by_key(|r| r.destination);
        RouteSet { source, routes }
    }

    /// The source edge.
    pub fn source(&self) -> EdgeId {
        self.source
    }

    /// The route to `destination`.
    pub fn get(&self, destination: EdgeId) -> Option<&Route> {
        self.routes
            .binary_search_by_key(&destination, |r| r.destination)
            .ok()
            .map(|i| &self.routes[i])
    }

    pub(crate) fn routes_mut(&mut self) -> &mut [Route] {
        &mut self.routes
    }

    /// All routes by destination id.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// All routes by destination id.
    pub fn iter(&self) -> std::slice::Iter<'_, Route> {
        self.routes.iter()
    }

    /// Number of reachable destinations.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether no destination is reachable.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// Computes best and backup paths from `source` to every reachable edge.
pub fn compute_routes(graph: &MeshGraph, source: EdgeId) -> Result<RouteSet, GraphError> {
    let s = graph.idx(source).ok_or(GraphError::UnknownNode(source))?;
    Ok(Scratch::default().routes(graph, s))
}

/// [`compute_routes`] with backups that avoid only the first hop, not its
/// shared risk: what hierarchical routes compose (their hub routes and
/// published parents follow the plain rule), and the baseline that
/// measures what the shared-risk rule costs.
pub fn compute_plain_routes(graph: &MeshGraph, source: EdgeId) -> Result<RouteSet, GraphError> {
    let s = graph.idx(source).ok_or(GraphError::UnknownNode(source))?;
    Ok(Scratch::default().plain_routes(graph, s))
}

/// Computes the routes of every source in turn, reusing one set of buffers.
/// Fails on the first unknown source, before computing anything.
pub fn compute_all<I>(graph: &MeshGraph, sources: I) -> Result<Vec<RouteSet>, GraphError>
where
    I: IntoIterator<Item = EdgeId>,
{
    let sources = resolve(graph, sources)?;
    let mut scratch = Scratch::default();
    Ok(sources
        .into_iter()
        .map(|s| scratch.routes(graph, s))
        .collect())
}

/// Like [`compute_all`], spread over `threads` scoped threads (at least one).
/// The result is identical to [`compute_all`]'s, in the same order.
pub fn compute_all_parallel(
    graph: &MeshGraph,
    sources: &[EdgeId],
    threads: usize,
) -> Result<Vec<RouteSet>, GraphError> {
    let sources = resolve(graph, sources.iter().copied())?;
    let threads = threads.clamp(1, sources.len().max(1));
    if threads == 1 {
        let mut scratch = Scratch::default();
        return Ok(sources
            .into_iter()
            .map(|s| scratch.routes(graph, s))
            .collect());
    }
    let chunk = sources.len().div_ceil(threads);
    let parts: Vec<Vec<RouteSet>> = std::thread::scope(|scope| {
        let handles: Vec<_> = sources
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut scratch = Scratch::default();
                    part.iter()
                        .map(|&s| scratch.routes(graph, s))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    Ok(parts.into_iter().flatten().collect())
}

fn resolve<I>(graph: &MeshGraph, sources: I) -> Result<Vec<u32>, GraphError>
where
    I: IntoIterator<Item = EdgeId>,
{
    sources
        .into_iter()
        .map(|id| graph.idx(id).ok_or(GraphError::UnknownNode(id)))
        .collect()
}

/// When to give up a working path for a better one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HysteresisPolicy {
    /// Switch only if the new path is cheaper by at least this much... 1 ms:
    /// smoothed RTTs move by tenths of a millisecond on a quiet link, so a
    /// gain of a millisecond is real; a larger floor would keep short paths
    /// well off their optimum (2 ms is 10% of a 20 ms path).
    pub min_improvement_ms: f64,
    /// ...and by at least this fraction of the old path's cost. 0.03: the
    /// network promises paths within 5% of the optimal RTT, so the band in
    /// which a worse path is kept must be narrower than that; 3% on a
    /// 150 ms path is 4.5 ms, well above probe noise, so routes still do not
    /// flap. (Tailscale's DERP home selection uses a wider bar, 1/3, but it
    /// moves a client's home, not a path it may relay around.)
    pub min_improvement_ratio: f64,
}

impl Default for HysteresisPolicy {
    fn default() -> Self {
        HysteresisPolicy {
            min_improvement_ms: 1.0,
            min_improvement_ratio: 0.03,
        }
    }
}

impl HysteresisPolicy {
    /// The improvement in µs a new path needs over an old one of `old_cost_us`.
    fn threshold_us(&self, old_cost_us: u64) -> f64 {
        let abs = nonneg(self.min_improvement_ms) * 1000.0;
        let rel = nonneg(self.min_improvement_ratio) * old_cost_us as f64;
        abs.max(rel)
    }
}

fn nonneg(v: f64) -> f64 {
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

/// Merges freshly computed routes with the previous ones to avoid flapping.
///
/// For each destination of `fresh`, the previous best path is kept when it is
/// still valid in `graph` (every node present, every link present and usable,
/// loop-free, same endpoints) and the fresh path is not cheaper, at current
/// costs, by at least `max(min_improvement_ms, min_improvement_ratio × old
/// cost)`. A kept path carries its current cost and RTT. Its backup is the
/// cheapest valid candidate among the fresh best, the fresh backup and the
/// previous backup that avoids the kept path's first hop (as
/// [`Route::backup`] defines it); backups get the same hysteresis: the
/// previous one stays, also beside an unchanged best path, unless another
/// beats it by the threshold.
///
/// Destinations missing from `fresh` are unreachable now and stay missing. If
/// the two sets belong to different sources, `fresh` is returned as is.
pub fn apply_hysteresis(
    previous: &RouteSet,
    fresh: RouteSet,
    graph: &MeshGraph,
    policy: &HysteresisPolicy,
) -> RouteSet {
    if previous.source != fresh.source {
        return fresh;
    }
    let source = fresh.source;
    let routes = fresh
        .routes
        .into_iter()
        .map(|new| {
            let Some(old) = previous.get(new.destination) else {
                return new;
            };
            if old.best.edges == new.best.edges {
                // The same best path: only its backup may move, and only for
                // a real gain (near-equal detours would otherwise trade
                // places at every recomputation, and each swap is a write).
                let backup = sticky_backup(
                    source,
                    &new.best.edges,
                    [new.backup.as_ref()],
                    old.backup.as_ref(),
                    graph,
                    policy,
                );
                return Route { backup, ..new };
            }
            let valid_endpoints = old.best.edges.first() == Some(&source)
                && old.best.edges.last() == Some(&new.destination);
            let Some((old_cost, old_rtt)) =
                graph.path_us(&old.best.edges).filter(|_| valid_endpoints)
            else {
                return new;
            };
            let new_cost = ms_to_exact_us(new.best.cost_ms);
            let gain = old_cost.saturating_sub(new_cost) as f64;
            if gain >= policy.threshold_us(old_cost) {
                return new;
            }
            let kept = Path {
                edges: old.best.edges.clone(),
                cost_ms: us_to_ms(old_cost),
                rtt_ms: us_to_ms(old_rtt),
            };
            let backup = sticky_backup(
                source,
                &kept.edges,
                [Some(&new.best), new.backup.as_ref()],
                old.backup.as_ref(),
                graph,
                policy,
            );
            Route {
                destination: new.destination,
                best: kept,
                backup,
            }
        })
        .collect();
    RouteSet { source, routes }
}

/// The backup to publish beside `best`: the cheapest valid one (it ends
/// where `best` does, avoids `best`'s first hop, and every link is usable
/// now) among `fresh` and `previous`, except that a valid `previous` is kept
/// unless that cheapest one beats it by the hysteresis threshold. Where some
/// candidate avoids `best`'s shared risk ([`crate::risk`]), those that do
/// not are not candidates.
fn sticky_backup<'a, const N: usize>(
    source: EdgeId,
    best: &[EdgeId],
    fresh: [Option<&'a Path>; N],
    previous: Option<&'a Path>,
    graph: &MeshGraph,
    policy: &HysteresisPolicy,
) -> Option<Path> {
    let destination = *best.last()?;
    let priced = |p: &'a Path| {
        (p.edges.first() == Some(&source)
            && p.edges.last() == Some(&destination)
            && avoids_first_hop(best, &p.edges))
        .then(|| graph.path_us(&p.edges))
        .flatten()
        .map(|(cost, rtt)| (cost, rtt, p))
    };
    let path = |(cost, rtt, p): (u64, u64, &Path)| Path {
        edges: p.edges.clone(),
        cost_ms: us_to_ms(cost),
        rtt_ms: us_to_ms(rtt),
    };
    let fresh: Vec<_> = fresh.into_iter().flatten().filter_map(priced).collect();
    let previous = previous.and_then(priced);
    let clear = |(_, _, p): &(u64, u64, &Path)| !shares_risk(graph, best, &p.edges);
    let any_clear = fresh.iter().chain(&previous).any(clear);
    let previous = previous.filter(|c| !any_clear || clear(c));
    let cheapest = fresh
        .into_iter()
        .filter(|c| !any_clear || clear(c))
        .chain(previous)
        .min_by(|(ca, _, a), (cb, _, b)| {
            ca.cmp(cb)
                .then(a.edges.len().cmp(&b.edges.len()))
                .then_with(|| a.edges.cmp(&b.edges))
        });
    match (previous, cheapest) {
        (Some(prev @ (old_cost, _, _)), Some((cost, _, _)))
            if (old_cost.saturating_sub(cost) as f64) < policy.threshold_us(old_cost) =>
        {
            Some(path(prev))
        }
        (_, cheapest) => cheapest.map(path),
    }
}

/// Whether `candidate` avoids `best`'s first hop: for a direct `best`, the
/// candidate does not use the direct link; otherwise it never visits `best`'s
/// first relay.
fn avoids_first_hop(best: &[EdgeId], candidate: &[EdgeId]) -> bool {
    match best {
        [_, dest] => candidate.get(1) != Some(dest),
        [_, relay, ..] => !candidate.contains(relay),
        _ => false,
    }
}

/// Costs are whole microseconds, so a path's `cost_ms` converts back exactly.
pub(crate) fn ms_to_exact_us(ms: f64) -> u64 {
    if ms > 0.0 {
        (ms * 1000.0).round() as u64
    } else {
        0
    }
}

/// The lowest possible RTT in ms from `a` to `b` over usable links, ignoring
/// every penalty: the yardstick for path stretch. `None` if either is unknown
/// or `b` is unreachable.
pub fn optimal_rtt(graph: &MeshGraph, a: EdgeId, b: EdgeId) -> Option<f64> {
    let (s, t) = (graph.idx(a)?, graph.idx(b)?);
    let dist = rtt_dijkstra(graph, s, Some(t));
    let d = dist[t as usize];
    (d != INF).then(|| us_to_ms(d))
}

/// The lowest possible RTT in ms from `source` to every reachable edge (the
/// source excluded), by destination id.
pub fn optimal_rtts(graph: &MeshGraph, source: EdgeId) -> Result<Vec<(EdgeId, f64)>, GraphError> {
    let s = graph.idx(source).ok_or(GraphError::UnknownNode(source))?;
    let dist = rtt_dijkstra(graph, s, None);
    Ok(dist
        .iter()
        .enumerate()
        .filter(|&(v, &d)| v != s as usize && d != INF)
        .map(|(v, &d)| (graph.id(v as u32), us_to_ms(d)))
        .collect())
}

/// The stretch of `path`: its RTT over the optimal RTT between its endpoints
/// (1.0 is optimal). `None` for an invalid path, or when the optimal RTT is
/// zero but the path's is not.
pub fn path_stretch(graph: &MeshGraph, path: &[EdgeId]) -> Option<f64> {
    let (_, rtt) = graph.path_us(path)?;
    let (&a, &b) = (path.first()?, path.last()?);
    let opt = ms_to_exact_us(optimal_rtt(graph, a, b)?);
    stretch(rtt, opt)
}

/// The stretch of every best path in `routes` (see [`path_stretch`]), by
/// destination id, with one optimal-RTT search for the whole set. Routes
/// that are no longer valid in `graph` are skipped.
pub fn route_stretches(graph: &MeshGraph, routes: &RouteSet) -> Vec<(EdgeId, f64)> {
    let Some(s) = graph.idx(routes.source) else {
        return Vec::new();
    };
    let dist = rtt_dijkstra(graph, s, None);
    routes
        .iter()
        .filter_map(|r| {
            let (_, rtt) = graph.path_us(&r.best.edges)?;
            let t = graph.idx(r.destination)?;
            let opt = dist[t as usize];
            if opt == INF {
                return None;
            }
            Some((r.destination, stretch(rtt, opt)?))
        })
        .collect()
}

fn stretch(rtt_us: u64, opt_us: u64) -> Option<f64> {
    if opt_us == 0 {
        (rtt_us == 0).then_some(1.0)
    } else {
        Some(rtt_us as f64 / opt_us as f64)
    }
}

fn rtt_dijkstra(graph: &MeshGraph, s: u32, target: Option<u32>) -> Vec<u64> {
    let mut dist = vec![INF; graph.node_count()];
    let mut heap = BinaryHeap::new();
    dist[s as usize] = 0;
    heap.push(Reverse((0u64, s)));
    while let Some(Reverse((d, u))) = heap.pop() {
        if d > dist[u as usize] {
            continue;
        }
        if Some(u) == target {
            break;
        }
        for e in graph.out_range(u) {
            let v = graph.out_to[e] as usize;
            let nd = d.saturating_add(graph.out_rtt[e] as u64);
            if nd < dist[v] {
                dist[v] = nd;
                heap.push(Reverse((nd, v as u32)));
            }
        }
    }
    dist
}

const NONE: u32 = u32::MAX;
const INF: u64 = u64::MAX;

/// A path label: cost, hops, predecessor, the link from it, and the path's
/// first hop. One cache line or less per node visit.
#[derive(Debug, Clone, Copy)]
struct Label {
    dist: u64,
    hops: u32,
    pred: u32,
    link: u32,
    hop: u32,
}

const EMPTY: Label = Label {
    dist: INF,
    hops: u32::MAX,
    pred: NONE,
    link: NONE,
    hop: NONE,
};

impl Label {
    /// Whether the path (`nd`, `nh`, ending with predecessor `u`) beats this
    /// label under the order cost, hops, ids; `chain` walks the predecessors
    /// of the paths being compared.
    #[inline]
    fn beaten_by(&self, nd: u64, nh: u32, u: u32, chain: impl Fn(u32) -> u32) -> bool {
        nd < self.dist
            || (nd == self.dist
                && (nh < self.hops || (nh == self.hops && lex_less(u, self.pred, chain))))
    }
}

/// A heap key ordered by cost, then hops (then node, for a total order):
/// one integer comparison per heap step.
#[inline]
fn key(cost: u64, hops: u32, node: u32) -> u128 {
    ((cost as u128) << 64) | ((hops as u128) << 32) | node as u128
}

#[inline]
fn unkey(k: u128) -> (u64, u32, u32) {
    ((k >> 64) as u64, (k >> 32) as u32, k as u32)
}

fn reset<T: Copy>(v: &mut Vec<T>, n: usize, value: T) {
    v.clear();
    v.resize(n, value);
}

/// Buffers reused across sources so a round allocates only its results.
///
/// `best` holds each node's best path, its `hop` the path's first hop.
/// `second` first holds, for each node, the best offer made to it whose first
/// hop differs from its best path's (a runner-up kept during the best-path
/// search at almost no cost); that is exactly where the backup search of the
/// node's group starts, and that search improves it into the backup label.
#[derive(Debug, Default)]
struct Scratch {
    best: Vec<Label>,
    second: Vec<Label>,
    /// `second[v].dist` during the best-path search, in a compact array so
    /// the test that rejects most offers stays in the fastest cache.
    second_dist: Vec<u64>,
    /// Whether a node's best label is final.
    settled: Vec<bool>,
    /// During the backup search: a node's first hop while its backup label
    /// is open, `NONE` once it is final (one load filters both).
    open: Vec<u32>,
    /// Nodes in the order the best-path search settled them (source first).
    order: Vec<u32>,
    /// Group of each first hop, and the groups' members in settle order.
    group_of: Vec<u32>,
    group_hop: Vec<u32>,
    group_start: Vec<u32>,
    group_fill: Vec<u32>,
    group_nodes: Vec<u32>,
    heap: BinaryHeap<Reverse<u128>>,
}

/// Whether the path ending at `a` is lexicographically smaller (by edge id,
/// from the source) than the path ending at `b`. Both paths have the same
/// number of hops and `pred` walks each towards the source. Node indices are
/// in id order, so comparing indices compares ids.
fn lex_less(mut a: u32, mut b: u32, pred: impl Fn(u32) -> u32) -> bool {
    let mut less = false;
    while a != b {
        if a == NONE || b == NONE {
            return false;
        }
        // The difference closest to the source decides; walking back from the
        // ends, the last one seen is that one.
        less = a < b;
        a = pred(a);
        b = pred(b);
    }
    less
}

impl Scratch {
    fn routes(&mut self, graph: &MeshGraph, s: u32) -> RouteSet {
        let mut set = self.plain_routes(graph, s);
        crate::risk::clear_backups_of_shared_risk(graph, &mut set);
        set
    }

    /// Routes whose backups avoid only the first hop, not its shared risk.
    fn plain_routes(&mut self, graph: &MeshGraph, s: u32) -> RouteSet {
        self.best_paths(graph, s);
        self.backup_paths(graph);
        self.collect(graph, s)
    }

    /// Dijkstra from `s` under the total order, keeping runner-up offers.
    fn best_paths(&mut self, g: &MeshGraph, s: u32) {
        let n = g.node_count();
        let rl = &g.route;
        let Scratch {
            best,
            second,
            second_dist,
            settled,
            order,
            heap,
            ..
        } = self;
        reset(best, n, EMPTY);
        reset(second, n, EMPTY);
        reset(second_dist, n, INF);
        reset(settled, n, false);
        order.clear();
        heap.clear();
        best[s as usize].dist = 0;
        best[s as usize].hops = 0;
        heap.push(Reverse(key(0, 0, s)));
        while let Some(Reverse(k)) = heap.pop() {
            let (d, h, u) = unkey(k);
            let ui = u as usize;
            if settled[ui] {
                continue;
            }
            settled[ui] = true;
            order.push(u);
            let (base, hop_of_u) = if u == s {
                (d, NONE)
            } else {
                (d.saturating_add(g.penalty_us[ui] as u64), best[ui].hop)
            };
            let nh = h + 1;
            let range = rl.out_range(u);
            let start = range.start;
            for (i, (&v, &c)) in rl.out_to[range.clone()]
                .iter()
                .zip(&rl.out_cost[range])
                .enumerate()
            {
                let vi = v as usize;
                let nd = base.saturating_add(c as u64);
                // Cheap reject: no better than the runner-up, so no better
                // than the best either.
                if nd > second_dist[vi] || nd == INF {
                    continue;
                }
                // The offer's first hop: `v` itself from the source.
                let hop = if u == s { v } else { hop_of_u };
                let offer = Label {
                    dist: nd,
                    hops: nh,
                    pred: u,
                    link: rl.out_link[start + i],
                    hop,
                };
                let current = best[vi];
                let chain = |x: u32| best[x as usize].pred;
                if !current.beaten_by(nd, nh, u, chain) {
                    // Not the best; the runner-up if its first hop differs.
                    if hop != current.hop && second[vi].beaten_by(nd, nh, u, chain) {
                        second[vi] = offer;
                        second_dist[vi] = nd;
                    }
                    continue;
                }
                // A new best (never for a settled node: its key is at most
                // (d, h)). If it comes through another first hop, the old
                // best becomes the runner-up; through the same one, the
                // runner-up (of another first hop) stays.
                if hop != current.hop && current.dist != INF {
                    second[vi] = current;
                    second_dist[vi] = current.dist;
                }
                best[vi] = offer;
                if nd != current.dist || nh != current.hops {
                    heap.push(Reverse(key(nd, nh, v)));
                }
            }
        }
    }

    /// Backup paths, group by group of destinations sharing a first hop.
    fn backup_paths(&mut self, g: &MeshGraph) {
        let n = g.node_count();
        let rl = &g.route;
        let Scratch {
            best,
            second,
            open,
            order,
            group_of,
            group_hop,
            group_start,
            group_fill,
            group_nodes,
            heap,
            ..
        } = self;

        // Group reached nodes by first hop, keeping settle order within a
        // group (so a group's first hop comes first).
        reset(group_of, n, NONE);
        group_hop.clear();
        group_start.clear();
        for &v in order.iter().skip(1) {
            let f = best[v as usize].hop as usize;
            if group_of[f] == NONE {
                group_of[f] = group_hop.len() as u32;
                group_hop.push(f as u32);
                group_start.push(0);
            }
            group_start[group_of[f] as usize] += 1;
        }
        let mut total = 0u32;
        for c in group_start.iter_mut() {
            let k = *c;
            *c = total;
            total += k;
        }
        group_start.push(total);
        group_fill.clear();
        group_fill.extend_from_slice(&group_start[..group_start.len() - 1]);
        reset(group_nodes, total as usize, 0);
        for &v in order.iter().skip(1) {
            let gi = group_of[best[v as usize].hop as usize] as usize;
            group_nodes[group_fill[gi] as usize] = v;
            group_fill[gi] += 1;
        }
        // A node's first hop while its backup label is open.
        open.clear();
        open.extend(best.iter().map(|l| l.hop));

        let best = &*best;
        for (gi, &f) in group_hop.iter().enumerate() {
            let members = &group_nodes[group_start[gi] as usize..group_start[gi + 1] as usize];
            let inside = members.get(1..).unwrap_or(&[]);
            if inside.is_empty() {
                // A lone first hop: its runner-up is its backup already.
                continue;
            }
            // Nodes outside the group keep their best labels without `f`
            // (their best paths avoid it), so each inside node starts from
            // its runner-up: the best offer from outside the group. Then
            // Dijkstra inside the group, never through `f`, also offering
            // `f` itself paths that avoid the direct link. Predecessor chains
            // run through backup labels inside the group and best labels
            // outside it.
            heap.clear();
            for &v in inside {
                let l = second[v as usize];
                if l.dist != INF {
                    heap.push(Reverse(key(l.dist, l.hops, v)));
                }
            }
            while let Some(Reverse(k)) = heap.pop() {
                let (d, h, x) = unkey(k);
                let xi = x as usize;
                if open[xi] != f {
                    continue;
                }
                open[xi] = NONE;
                let base = d.saturating_add(g.penalty_us[xi] as u64);
                let nh = h + 1;
                let range = rl.out_range(x);
                let start = range.start;
                for (i, (&w, &c)) in rl.out_to[range.clone()]
                    .iter()
                    .zip(&rl.out_cost[range])
                    .enumerate()
                {
                    let wi = w as usize;
                    // Open inside nodes, and `f` itself.
                    if open[wi] != f {
                        continue;
                    }
                    let nd = base.saturating_add(c as u64);
                    let current = second[wi];
                    if nd > current.dist || nd == INF {
                        continue;
                    }
                    let chain = |y: u32| {
                        let yi = y as usize;
                        if best[yi].hop == f && y != f {
                            second[yi].pred
                        } else {
                            best[yi].pred
                        }
                    };
                    if !current.beaten_by(nd, nh, x, chain) {
                        continue;
                    }
                    second[wi] = Label {
                        dist: nd,
                        hops: nh,
                        pred: x,
                        link: rl.out_link[start + i],
                        hop: current.hop,
                    };
                    if (nd != current.dist || nh != current.hops) && w != f {
                        heap.push(Reverse(key(nd, nh, w)));
                    }
                }
            }
        }
    }

    fn collect(&self, g: &MeshGraph, s: u32) -> RouteSet {
        let n = g.node_count();
        let mut routes = Vec::with_capacity(self.order.len().saturating_sub(1));
        for v in 0..n as u32 {
            let vi = v as usize;
            let best = &self.best[vi];
            if v == s || best.dist == INF {
                continue;
            }
            let path = self.walk(g, s, v, |x| {
                let l = &self.best[x as usize];
                (l.pred, l.link)
            });
            let best_path = Path {
                cost_ms: us_to_ms(best.dist),
                ..path
            };
            let second = &self.second[vi];
            let backup = (second.dist != INF).then(|| {
                let f = best.hop;
                let path = self.walk(g, s, v, |x| {
                    let xi = x as usize;
                    let l = if x == v || (self.best[xi].hop == f && x != f) {
                        &self.second[xi]
                    } else {
                        &self.best[xi]
                    };
                    (l.pred, l.link)
                });
                Path {
                    cost_ms: us_to_ms(second.dist),
                    ..path
                }
            });
            routes.push(Route {
                destination: g.id(v),
                best: best_path,
                backup,
            });
        }
        RouteSet {
            source: g.id(s),
            routes,
        }
    }

    /// Walks predecessors from `v` back to `s`; returns the path (cost left
    /// at zero for the caller) with its RTT.
    fn walk(&self, g: &MeshGraph, s: u32, v: u32, step: impl Fn(u32) -> (u32, u32)) -> Path {
        let mut edges = Vec::with_capacity(self.best[v as usize].hops as usize + 2);
        let mut rtt = 0u64;
        let mut x = v;
        // A well-formed chain is at most n long; the bound only guards bugs.
        for _ in 0..g.node_count() {
            edges.push(g.id(x));
            if x == s {
                break;
            }
            let (p, link) = step(x);
            if p == NONE {
                break;
            }
            rtt = rtt.saturating_add(g.out_rtt[link as usize] as u64);
            x = p;
        }
        edges.reverse();
        Path {
            edges,
            cost_ms: 0.0,
            rtt_ms: us_to_ms(rtt),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The figures in these tests assume a 1 ms relay toll.
    fn test_model() -> CostModel {
        CostModel {
            relay_hop_penalty_ms: 1.0,
            ..CostModel::default()
        }
    }
    use crate::geo::GeoPoint;
    use crate::graph::{CostModel, MeshGraphBuilder, NodeInfo};
    use crate::probe::LinkSummary;
    use proptest::prelude::*;

    fn node(id: EdgeId) -> NodeInfo {
        NodeInfo {
            id,
            region: "eu-central".into(),
            location: GeoPoint::new(50.0, 8.0).expect("valid"),
            load: 0.2,
            draining: false,
        }
    }

    fn link(rtt_ms: f64) -> LinkSummary {
        LinkSummary {
            rtt_ms,
            jitter_ms: 0.0,
            loss: 0.0,
            samples: 10,
        }
    }

    /// A graph from nodes and symmetric links (a, b, rtt).
    fn graph(nodes: &[NodeInfo], links: &[(EdgeId, EdgeId, f64)]) -> MeshGraph {
        graph_with(test_model(), nodes, links)
    }

    /// A graph from nodes and symmetric links (a, b, rtt ms); also the
    /// shared-risk tests' (`crate::risk`).
    pub(crate) fn graph_with(
        cost: CostModel,
        nodes: &[NodeInfo],
        links: &[(EdgeId, EdgeId, f64)],
    ) -> MeshGraph {
        let mut b = MeshGraph::builder(cost);
        for n in nodes {
            b.add_node(n.clone()).expect("node");
        }
        for &(x, y, rtt) in links {
            b.add_link(x, y, link(rtt)).expect("link");
            b.add_link(y, x, link(rtt)).expect("link");
        }
        b.build().expect("build")
    }

    fn nodes(ids: &[EdgeId]) -> Vec<NodeInfo> {
        ids.iter().map(|&i| node(i)).collect()
    }

    #[test]
    fn relay_beats_a_slow_direct_link_and_direct_is_the_backup() {
        // Triangle inequality violated: 1->3->2 (60 ms, plus 1 ms for the
        // relay) beats 1->2 (100 ms).
        let g = graph(
            &nodes(&[1, 2, 3]),
            &[(1, 2, 100.0), (1, 3, 30.0), (3, 2, 30.0)],
        );
        let rs = compute_routes(&g, 1).expect("known");
        assert_eq!(rs.source(), 1);
        assert_eq!(rs.len(), 2);
        let r = rs.get(2).expect("reachable");
        assert_eq!(r.best.edges, vec![1, 3, 2]);
        assert_eq!((r.best.cost_ms, r.best.rtt_ms), (61.0, 60.0));
        assert_eq!(r.best.first_hop(), Some(3));
        assert_eq!(r.best.hop_count(), 2);
        let b = r.backup.as_ref().expect("direct link");
        assert_eq!(b.edges, vec![1, 2]);
        assert_eq!(b.cost_ms, 100.0);
        // To 3 the best is direct; the backup avoids that link: 1->2->3.
        let r3 = rs.get(3).expect("reachable");
        assert_eq!(r3.best.edges, vec![1, 3]);
        assert_eq!(
            r3.backup.as_ref().map(|p| p.edges.clone()),
            Some(vec![1, 2, 3])
        );
        assert!(rs.get(1).is_none());
    }

    #[test]
    fn backup_avoids_the_first_relay_entirely() {
        // Best 1->2->4; a path 1->3->2->4 would avoid the first link but not
        // relay 2, so the backup must be 1->3->5->4.
        let g = graph(
            &nodes(&[1, 2, 3, 4, 5]),
            &[
                (1, 2, 10.0),
                (2, 4, 10.0),
                (1, 3, 10.0),
                (3, 2, 1.0),
                (3, 5, 50.0),
                (5, 4, 50.0),
            ],
        );
        let rs = compute_routes(&g, 1).expect("known");
        let r = rs.get(4).expect("reachable");
        assert_eq!(r.best.edges, vec![1, 2, 4]);
        assert_eq!(
            r.backup.as_ref().map(|p| p.edges.clone()),
            Some(vec![1, 3, 5, 4])
        );
        assert_eq!(r.backup.as_ref().map(|p| p.cost_ms), Some(112.0));
    }

    #[test]
    fn no_backup_through_a_cut_vertex() {
        let g = graph(&nodes(&[1, 2, 3]), &[(1, 2, 5.0), (2, 3, 5.0)]);
        let rs = compute_routes(&g, 1).expect("known");
        assert_eq!(rs.get(3).map(|r| r.best.edges.clone()), Some(vec![1, 2, 3]));
        assert!(rs.get(3).expect("reachable").backup.is_none());
        assert!(rs.get(2).expect("reachable").backup.is_none());
    }

    #[test]
    fn unreachable_and_unknown() {
        let g = graph(&nodes(&[1, 2, 3]), &[(1, 2, 5.0)]);
        let rs = compute_routes(&g, 1).expect("known");
        assert!(rs.get(3).is_none());
        assert_eq!(
            compute_routes(&g, 9).err(),
            Some(GraphError::UnknownNode(9))
        );
        assert_eq!(
            compute_all(&g, [1, 9]).err(),
            Some(GraphError::UnknownNode(9))
        );
        let alone = graph(&nodes(&[1]), &[]);
        assert!(compute_routes(&alone, 1).expect("known").is_empty());
    }

    #[test]
    fn draining_relay_is_avoided_as_transit_but_reachable() {
        let mut ns = nodes(&[1, 2, 3, 4]);
        ns[1].draining = true; // node 2
        let g = graph(&ns, &[(1, 2, 5.0), (2, 3, 5.0), (1, 4, 40.0), (4, 3, 40.0)]);
        let rs = compute_routes(&g, 1).expect("known");
        assert_eq!(rs.get(3).map(|r| r.best.edges.clone()), Some(vec![1, 4, 3]));
        assert_eq!(rs.get(2).map(|r| r.best.edges.clone()), Some(vec![1, 2]));
        // With no alternative the draining relay still carries transit.
        let g = graph(&ns, &[(1, 2, 5.0), (2, 3, 5.0)]);
        let r = compute_routes(&g, 1).expect("known");
        assert_eq!(r.get(3).map(|r| r.best.cost_ms), Some(10_011.0));
    }

    #[test]
    fn loss_and_jitter_push_traffic_to_a_clean_detour() {
        let mut b = MeshGraph::builder(test_model());
        for n in nodes(&[1, 2, 3]) {
            b.add_node(n).expect("node");
        }
        // Direct: 20 ms with 30% loss (cost 20 + 2 x 0.3/0.7 x (20 + 30) =
        // 62.857); detour: 25 + 25 clean + 1 for the relay (51).
        b.add_link(
            1,
            2,
            LinkSummary {
                loss: 0.3,
                ..link(20.0)
            },
        )
        .expect("ok");
        b.add_link(1, 3, link(25.0)).expect("ok");
        b.add_link(3, 2, link(25.0)).expect("ok");
        let g = b.build().expect("build");
        let r = compute_routes(&g, 1).expect("known");
        let r2 = r.get(2).expect("reachable");
        assert_eq!(r2.best.edges, vec![1, 3, 2]);
        assert_eq!(r2.backup.as_ref().map(|p| p.cost_ms), Some(62.857));
        assert_eq!(r2.backup.as_ref().map(|p| p.rtt_ms), Some(20.0));
        // The chosen path is not the lowest-RTT one: stretch 50 / 20.
        assert_eq!(optimal_rtt(&g, 1, 2), Some(20.0));
        assert_eq!(path_stretch(&g, &r2.best.edges), Some(2.5));
        assert_eq!(route_stretches(&g, &r), vec![(2, 2.5), (3, 1.0)]);
    }

    #[test]
    fn ties_break_on_hops_then_ids() {
        // Two equal relays 3 and 2: the lower id wins whatever the input order.
        let g = graph(
            &nodes(&[4, 3, 2, 1]),
            &[(1, 3, 10.0), (3, 4, 10.0), (1, 2, 10.0), (2, 4, 10.0)],
        );
        let r = compute_routes(&g, 1).expect("known");
        assert_eq!(r.get(4).map(|r| r.best.edges.clone()), Some(vec![1, 2, 4]));
        assert_eq!(
            r.get(4)
                .and_then(|r| r.backup.as_ref())
                .map(|p| p.edges.clone()),
            Some(vec![1, 3, 4])
        );
        // Equal cost, fewer hops wins: a zero-cost detour does not beat direct.
        let free = CostModel {
            relay_hop_penalty_ms: 0.0,
            ..CostModel::default()
        };
        let g = graph_with(
            free,
            &nodes(&[1, 2, 3]),
            &[(1, 2, 10.0), (1, 3, 0.0), (3, 2, 10.0)],
        );
        let r = compute_routes(&g, 1).expect("known");
        assert_eq!(r.get(2).map(|r| r.best.edges.clone()), Some(vec![1, 2]));
    }

    #[test]
    fn stretch_helpers() {
        let g = graph(&nodes(&[1, 2, 3]), &[(1, 2, 0.0), (2, 3, 4.0), (1, 3, 6.0)]);
        assert_eq!(optimal_rtt(&g, 1, 3), Some(4.0));
        assert_eq!(optimal_rtt(&g, 1, 1), Some(0.0));
        assert_eq!(optimal_rtt(&g, 1, 7), None);
        assert_eq!(path_stretch(&g, &[1, 3]), Some(1.5));
        assert_eq!(path_stretch(&g, &[1, 2]), Some(1.0));
        // 3->1->2 takes 6 ms where 3->2 takes 4.
        assert_eq!(path_stretch(&g, &[3, 1, 2]), Some(1.5));
        assert_eq!(path_stretch(&g, &[1, 7]), None);
        assert_eq!(
            optimal_rtts(&g, 1).expect("known"),
            vec![(2, 0.0), (3, 4.0)]
        );
        let g = graph(&nodes(&[1, 2, 3]), &[(1, 2, 0.0), (2, 3, 0.0), (1, 3, 6.0)]);
        assert_eq!(path_stretch(&g, &[1, 3]), None);
        assert_eq!(path_stretch(&g, &[1, 2, 3]), Some(1.0));
    }

    #[test]
    fn hysteresis_keeps_a_near_equal_path_and_switches_for_a_real_gain() {
        let policy = HysteresisPolicy::default();
        let before = graph(
            &nodes(&[1, 2, 3]),
            &[(1, 2, 50.0), (1, 3, 20.0), (3, 2, 20.0)],
        );
        let prev = compute_routes(&before, 1).expect("known");
        assert_eq!(
            prev.get(2).map(|r| r.best.edges.clone()),
            Some(vec![1, 3, 2])
        );

        // Direct now 40 ms vs 41 via 3 (40 + 1 for the relay): a 1 ms gain
        // is below 3% of 41 (1.23 ms): keep.
        let now = graph(
            &nodes(&[1, 2, 3]),
            &[(1, 2, 40.0), (1, 3, 20.0), (3, 2, 20.0)],
        );
        let fresh = compute_routes(&now, 1).expect("known");
        assert_eq!(fresh.get(2).map(|r| r.best.edges.clone()), Some(vec![1, 2]));
        let merged = apply_hysteresis(&prev, fresh, &now, &policy);
        let r = merged.get(2).expect("route");
        assert_eq!(r.best.edges, vec![1, 3, 2]);
        assert_eq!(r.best.cost_ms, 41.0);
        // The kept path's backup avoids relay 3: the fresh best, direct.
        assert_eq!(r.backup.as_ref().map(|p| p.edges.clone()), Some(vec![1, 2]));

        // Direct now 30 ms: an 11 ms gain (27%) is enough: switch.
        let now = graph(
            &nodes(&[1, 2, 3]),
            &[(1, 2, 30.0), (1, 3, 20.0), (3, 2, 20.0)],
        );
        let fresh = compute_routes(&now, 1).expect("known");
        let merged = apply_hysteresis(&prev, fresh.clone(), &now, &policy);
        assert_eq!(merged, fresh);

        // The relay link died: the old path is invalid whatever the gain.
        let now = graph(&nodes(&[1, 2, 3]), &[(1, 2, 41.0), (1, 3, 20.0)]);
        let fresh = compute_routes(&now, 1).expect("known");
        let merged = apply_hysteresis(&prev, fresh.clone(), &now, &policy);
        assert_eq!(merged, fresh);

        // A zero policy never holds on to a worse path; other sources are
        // left alone.
        let zero = HysteresisPolicy {
            min_improvement_ms: 0.0,
            min_improvement_ratio: 0.0,
        };
        let now = graph(
            &nodes(&[1, 2, 3]),
            &[(1, 2, 39.999), (1, 3, 20.0), (3, 2, 20.0)],
        );
        let fresh = compute_routes(&now, 1).expect("known");
        assert_eq!(apply_hysteresis(&prev, fresh.clone(), &now, &zero), fresh);
        let other = compute_routes(&now, 2).expect("known");
        assert_eq!(apply_hysteresis(&prev, other.clone(), &now, &policy), other);
    }

    #[test]
    fn hysteresis_keeps_a_backup_beside_an_unchanged_best_path() {
        let policy = HysteresisPolicy::default();
        let nodes = nodes(&[1, 2, 3, 4]);
        let links = |via3: f64| {
            [
                (1, 2, 10.0),
                (1, 3, via3),
                (3, 2, 20.0),
                (1, 4, 20.5),
                (4, 2, 20.0),
            ]
        };
        let backup = |set: &RouteSet| {
            set.get(2)
                .and_then(|r| r.backup.as_ref())
                .map(|p| p.edges.clone())
        };
        let before = graph(&nodes, &links(20.0));
        let prev = compute_routes(&before, 1).expect("known");
        assert_eq!(backup(&prev), Some(vec![1, 3, 2]));

        // Via 3 now 41.6 ms against 41.5 via 4: the fresh backup moves, the
        // published one does not (and carries its current cost).
        let now = graph(&nodes, &links(20.6));
        let fresh = compute_routes(&now, 1).expect("known");
        assert_eq!(backup(&fresh), Some(vec![1, 4, 2]));
        let merged = apply_hysteresis(&prev, fresh, &now, &policy);
        assert_eq!(backup(&merged), Some(vec![1, 3, 2]));
        let kept = merged.get(2).and_then(|r| r.backup.clone()).unwrap();
        assert!((kept.cost_ms - 41.6).abs() < 1e-9, "{kept:?}");
        assert_eq!(merged.get(2).unwrap().best.edges, vec![1, 2]);

        // Via 3 now 51 ms: a real gain, the backup moves.
        let now = graph(&nodes, &links(30.0));
        let merged = apply_hysteresis(&prev, compute_routes(&now, 1).unwrap(), &now, &policy);
        assert_eq!(backup(&merged), Some(vec![1, 4, 2]));

        // The old backup's link is gone: it is not kept.
        let mut gone = links(20.6).to_vec();
        gone.retain(|l| (l.0, l.1) != (3, 2));
        let now = graph(&nodes, &gone);
        let merged = apply_hysteresis(&prev, compute_routes(&now, 1).unwrap(), &now, &policy);
        assert_eq!(backup(&merged), Some(vec![1, 4, 2]));
    }

    #[test]
    fn hysteresis_relative_margin_on_long_paths() {
        let policy = HysteresisPolicy::default();
        let before = graph(
            &nodes(&[1, 2, 3]),
            &[(1, 2, 300.0), (1, 3, 100.0), (3, 2, 100.0)],
        );
        let prev = compute_routes(&before, 1).expect("known");
        // 201 -> 197: 4 ms gain, above 1 ms but below 3% of 201: keep.
        let now = graph(
            &nodes(&[1, 2, 3]),
            &[(1, 2, 197.0), (1, 3, 100.0), (3, 2, 100.0)],
        );
        let merged = apply_hysteresis(
            &prev,
            compute_routes(&now, 1).expect("known"),
            &now,
            &policy,
        );
        assert_eq!(
            merged.get(2).map(|r| r.best.edges.clone()),
            Some(vec![1, 3, 2])
        );
        // 201 -> 194: 7 ms is over 3%: switch.
        let now = graph(
            &nodes(&[1, 2, 3]),
            &[(1, 2, 194.0), (1, 3, 100.0), (3, 2, 100.0)],
        );
        let merged = apply_hysteresis(
            &prev,
            compute_routes(&now, 1).expect("known"),
            &now,
            &policy,
        );
        assert_eq!(
            merged.get(2).map(|r| r.best.edges.clone()),
            Some(vec![1, 2])
        );
    }

    #[test]
    fn route_set_serde_roundtrip_sorts() {
        let g = graph(
            &nodes(&[1, 2, 3]),
            &[(1, 2, 100.0), (1, 3, 30.0), (3, 2, 30.0)],
        );
        let rs = compute_routes(&g, 1).expect("known");
        let json = serde_json::to_string(&rs).expect("serialise");
        assert_eq!(serde_json::from_str::<RouteSet>(&json).expect("parse"), rs);
        let mut routes = rs.routes().to_vec();
        routes.reverse();
        routes.push(routes[0].clone());
        assert_eq!(RouteSet::new(1, routes), rs);
    }

    // ---- property tests against a brute-force oracle ----

    #[derive(Debug, Clone)]
    struct Spec {
        nodes: Vec<NodeInfo>,
        links: Vec<(EdgeId, EdgeId, LinkSummary)>,
    }

    /// Where nodes sit: the first two 23 km apart (one site, see
    /// `crate::risk`), the others hundreds of km from them and each other.
    const PLACES: [(f64, f64); 4] = [(50.0, 8.0), (50.2, 8.1), (48.9, 2.3), (52.5, 13.4)];

    /// Node i has id 1000 - 37 i, so id order is the reverse of insertion
    /// order. RTTs come from a small set so ties are frequent. Nodes sit in
    /// three sites, so backups meet shared risk.
    fn spec() -> impl Strategy<Value = Spec> {
        (2..=7usize)
            .prop_flat_map(|n| {
                let node = (0..4u8, prop::bool::weighted(0.15), 0..PLACES.len());
                let link = (0..n, 0..n, 0..5usize, 0..4usize, 0..3usize);
                (
                    prop::collection::vec(node, n),
                    prop::collection::vec(link, 0..n * n),
                )
            })
            .prop_map(|(ns, ls)| {
                let id = |i: usize| 1000 - 37 * i as EdgeId;
                let nodes = ns
                    .iter()
                    .enumerate()
                    .map(|(i, &(load, draining, place))| NodeInfo {
                        load: [0.1, 0.5, 0.95, 1.0][load as usize],
                        draining,
                        location: GeoPoint::new(PLACES[place].0, PLACES[place].1).expect("valid"),
                        ..node(id(i))
                    })
                    .collect();
                let links = ls
                    .into_iter()
                    .filter(|&(a, b, ..)| a != b)
                    .map(|(a, b, rtt, loss, jitter)| {
                        let s = LinkSummary {
                            rtt_ms: [0.0, 1.0, 2.0, 3.0, 10.0][rtt],
                            loss: [0.0, 0.0, 0.01, 0.7][loss],
                            jitter_ms: [0.0, 0.5, 2.0][jitter],
                            samples: 1,
                        };
                        (id(a), id(b), s)
                    })
                    .collect();
                Spec { nodes, links }
            })
    }

    fn build(spec: &Spec, reverse: bool) -> MeshGraph {
        let mut b = MeshGraphBuilder::new(test_model());
        let mut nodes = spec.nodes.clone();
        let mut links = spec.links.clone();
        if reverse {
            nodes.reverse();
            // Keep "last summary wins" for duplicates when reversing.
            let mut seen = std::collections::HashSet::new();
            links.reverse();
            links.retain(|&(a, b, _)| seen.insert((a, b)));
        }
        for n in nodes {
            b.add_node(n).expect("node");
        }
        for (a, c, s) in links {
            b.add_link(a, c, s).expect("link");
        }
        b.build().expect("build")
    }

    /// All simple paths from `s` to `d`.
    fn simple_paths(g: &MeshGraph, s: EdgeId, d: EdgeId) -> Vec<Vec<EdgeId>> {
        fn go(g: &MeshGraph, d: EdgeId, path: &mut Vec<EdgeId>, out: &mut Vec<Vec<EdgeId>>) {
            let Some(&last) = path.last() else { return };
            if last == d {
                out.push(path.clone());
                return;
            }
            let next: Vec<EdgeId> = g.neighbors(last).map(|(t, _)| t).collect();
            for t in next {
                if !path.contains(&t) {
                    path.push(t);
                    go(g, d, path, out);
                    path.pop();
                }
            }
        }
        let mut out = Vec::new();
        go(g, d, &mut vec![s], &mut out);
        out
    }

    /// The smallest path under (cost, hops, ids).
    fn oracle_min(
        g: &MeshGraph,
        paths: impl Iterator<Item = Vec<EdgeId>>,
    ) -> Option<(Vec<EdgeId>, u64)> {
        paths
            .map(|p| {
                let (cost, _) = g.path_us(&p).expect("simple paths are valid");
                (cost, p)
            })
            .min_by(|(ca, a), (cb, b)| {
                ca.cmp(cb)
                    .then(a.len().cmp(&b.len()))
                    .then_with(|| a.cmp(b))
            })
            .map(|(c, p)| (p, c))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn paths_match_brute_force(spec in spec()) {
            let g = build(&spec, false);
            for src in g.nodes().map(|n| n.id) {
                let rs = compute_routes(&g, src).expect("known");
                for dst in g.nodes().map(|n| n.id).filter(|&d| d != src) {
                    let all = simple_paths(&g, src, dst);
                    let want = oracle_min(&g, all.iter().cloned());
                    let got = rs.get(dst);
                    prop_assert_eq!(got.is_some(), want.is_some());
                    let (Some(route), Some((want_path, want_cost))) = (got, want) else { continue };
                    prop_assert_eq!(&route.best.edges, &want_path);
                    prop_assert_eq!(ms_to_exact_us(route.best.cost_ms), want_cost);
                    // Cost and RTT are the sums over the path's links and relays.
                    let m = g.path_metrics(&route.best.edges).expect("valid");
                    prop_assert_eq!(m.cost_ms, route.best.cost_ms);
                    prop_assert_eq!(m.rtt_ms, route.best.rtt_ms);

                    // The backup: the cheapest path clear of the first
                    // link's shared risk if there is one (ties are broken
                    // by hops, not ids, there), else the plain backup.
                    let best = route.best.edges.clone();
                    let plain = || all.iter().filter(|p| avoids_first_hop(&best, p)).cloned();
                    let clear = oracle_min(&g, plain().filter(|p| !shares_risk(&g, &best, p)));
                    match clear {
                        Some((_, want_cost)) => {
                            let b = route.backup.as_ref().expect("a backup");
                            prop_assert!(avoids_first_hop(&best, &b.edges) && !shares_risk(&g, &best, &b.edges));
                            prop_assert_eq!(ms_to_exact_us(b.cost_ms), want_cost);
                        }
                        None => {
                            let want = oracle_min(&g, plain()).map(|(p, _)| p);
                            prop_assert_eq!(route.backup.as_ref().map(|p| p.edges.clone()), want);
                        }
                    }
                    if let Some(b) = &route.backup {
                        let m = g.path_metrics(&b.edges).expect("valid");
                        prop_assert_eq!(m.cost_ms, b.cost_ms);
                        prop_assert_eq!(m.rtt_ms, b.rtt_ms);
                        prop_assert!(route.best.cost_ms <= b.cost_ms);
                        prop_assert_ne!(b.first_hop(), route.best.first_hop());
                    }
                }
            }
        }

        #[test]
        fn results_do_not_depend_on_input_order_or_threads(spec in spec()) {
            let g = build(&spec, false);
            let r = build(&spec, true);
            let ids: Vec<EdgeId> = g.nodes().map(|n| n.id).collect();
            let a = compute_all(&g, ids.iter().copied()).expect("known");
            prop_assert_eq!(&a, &compute_all(&r, ids.iter().copied()).expect("known"));
            prop_assert_eq!(&a, &compute_all_parallel(&g, &ids, 3).expect("known"));
        }

        #[test]
        fn hysteresis_never_keeps_a_dead_path(spec in spec(), drop in prop::collection::vec(any::<bool>(), 49), slower in prop::collection::vec(0..3usize, 49)) {
            let g1 = build(&spec, false);
            // The next round: some links gone, some slower or faster.
            let mut next = spec.clone();
            let mut i = 0;
            next.links.retain(|_| { i += 1; !drop[(i - 1) % drop.len()] });
            for (k, l) in next.links.iter_mut().enumerate() {
                l.2.rtt_ms = (l.2.rtt_ms + [0.0, 3.0, -2.0][slower[k % slower.len()]]).max(0.0);
            }
            let g2 = build(&next, false);
            let policy = HysteresisPolicy::default();
            for src in g1.nodes().map(|n| n.id) {
                let prev = compute_routes(&g1, src).expect("known");
                let fresh = compute_routes(&g2, src).expect("known");
                let merged = apply_hysteresis(&prev, fresh.clone(), &g2, &policy);
                prop_assert_eq!(merged.len(), fresh.len());
                for (m, f) in merged.iter().zip(fresh.iter()) {
                    prop_assert_eq!(m.destination, f.destination);
                    let metrics = g2.path_metrics(&m.best.edges);
                    prop_assert!(metrics.is_some(), "kept a dead path {:?}", m.best.edges);
                    prop_assert_eq!(metrics.map(|x| x.cost_ms), Some(m.best.cost_ms));
                    if m.best.edges != f.best.edges {
                        let gain = ms_to_exact_us(m.best.cost_ms) - ms_to_exact_us(f.best.cost_ms);
                        prop_assert!((gain as f64) < policy.threshold_us(ms_to_exact_us(m.best.cost_ms)));
                        prop_assert_eq!(prev.get(m.destination).map(|p| &p.best.edges), Some(&m.best.edges));
                    }
                    if let Some(b) = &m.backup {
                        prop_assert!(g2.is_valid_path(&b.edges));
                        prop_assert!(avoids_first_hop(&m.best.edges, &b.edges));
                    }
                }
            }
        }
    }
}
