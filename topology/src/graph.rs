//! The overlay mesh as a directed graph with per-link costs.
//!
//! Why: path computation runs for every source edge every round, on meshes
//! of thousands of edges, so the graph is built once per round into a compact
//! immutable form (forward and reverse adjacency arrays, costs as integer
//! microseconds) that the path code scans without allocating or hashing.
//! Integer costs also make sums exact, so equal paths compare equal and tie
//! breaks are deterministic.
//!
//! Cost of a path = sum of its link costs + a transit penalty for every relay
//! strictly between source and destination. A link's cost is its RTT plus
//! penalties for loss and jitter; a relay's transit penalty covers load above
//! a soft limit and draining (see [`CostModel`]). The endpoints pay no node
//! penalty: the destination is fixed by where the receiver is connected, and a
//! draining relay must still receive traffic for its own clients.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::geo::GeoPoint;
use crate::load::LoadPenalty;
use crate::probe::LinkSummary;

/// Identifier of an edge (a relay node of the mesh).
pub type EdgeId = u32;

/// A relay as route computation sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The edge's id.
    pub id: EdgeId,
    /// Region name ("eu-central").
    pub region: String,
    /// Where the edge is.
    pub location: GeoPoint,
    /// Reported load, 0..1 (see [`LoadPenalty`] for out-of-range values).
    pub load: f64,
    /// The edge is shutting down: it keeps serving its clients but should
    /// not carry new transit traffic.
    pub draining: bool,
}

/// How link summaries and node state turn into costs, in ms-equivalent.
///
/// What the controller minimises: the **round-trip time media and messages
/// see on a path, repairs included**. A link costs
///
/// ```text
/// rtt + jitter_weight × jitter + 2 × loss / (1 - loss) × (rtt + loss_repair_overhead_ms)
/// ```
///
/// with the probes' RTT (25th percentile), jitter (twice the distance from
/// it to the median: the interquartile range for symmetric jitter) and loss
/// (both ways; see [`crate::probe`]). RTT plus jitter is then the link's
/// 75th-percentile RTT: what a receiver's jitter buffer waits for, robust
/// to outliers. Loss costs what repairing it costs: a
/// lost packet is resent by the hop that lost it (QUIC does so for messages
/// on every relay link; media repair per hop follows the same rule), which
/// costs one more RTT of that link plus the time to notice the gap
/// (`loss_repair_overhead_ms`), `loss / (1 - loss)` times per packet on
/// average, and the factor 2 turns that one-way delay into RTT units. So
/// 5% loss on a 100 ms link costs 13.7 ms and 20% costs 65 ms, where a
/// flat 10 ms per percent (used before) made a lossy link cost 50 and 200 ms
/// and chose paths 1.8 times longer to avoid a few percent of loss whose
/// estimate was itself noisy. Links that lose so much that repair is
/// hopeless are left out ([`CostModel::max_usable_loss`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostModel {
    /// Time to notice a lost packet and ask for it again, in ms: the gap is
    /// seen when the next packet of the stream arrives (audio every 20-40
    /// ms, video frames every 33 ms) and the request is paced. 30 ms.
    pub loss_repair_overhead_ms: f64,
    /// Multiplier of the jitter estimate added to the cost. 1: RTT +
    /// jitter is the link's 75th-percentile RTT.
    pub jitter_weight: f64,
    /// Links whose loss is at or above this are treated as down and left out
    /// of the graph. 0.5: beyond it even protected audio breaks up and the
    /// link is mostly not there; treating it as down (rather than merely
    /// expensive) also lets hysteresis drop paths that use it.
    pub max_usable_loss: f64,
    /// Transit penalty for every relay, whatever its state. 0.5 ms: each
    /// relay adds forwarding delay (measured well under 1 ms per hop), is one
    /// more thing that can fail and one more copy of the stream to pay for,
    /// so a relay must save at least that much. It also keeps paths short
    /// where many near-equal chains of nearby relays exist. Not more: a
    /// larger toll would keep paths more than 5% above the optimal RTT
    /// where a relay saves 5-8%.
    pub relay_hop_penalty_ms: f64,
    /// Transit penalty for relays loaded above a soft limit.
    pub load: LoadPenalty,
    /// Transit penalty for draining relays. 10,000 ms: larger than any real
    /// path, so a draining relay carries transit only when nothing else
    /// connects the two sides (better late than unreachable).
    pub draining_transit_penalty_ms: f64,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel {
            loss_repair_overhead_ms: 30.0,
            jitter_weight: 1.0,
            max_usable_loss: 0.5,
            relay_hop_penalty_ms: 0.5,
            load: LoadPenalty::default(),
            draining_transit_penalty_ms: 10_000.0,
        }
    }
}

impl CostModel {
    /// Cost of a link in ms-equivalent: RTT + jitter and repair penalties.
    pub fn link_cost_ms(&self, link: &LinkSummary) -> f64 {
        let loss = link.loss.clamp(0.0, 0.999);
        let repairs = loss / (1.0 - loss);
        link.rtt_ms
            + nonneg(self.jitter_weight) * link.jitter_ms
            + 2.0 * repairs * (link.rtt_ms + nonneg(self.loss_repair_overhead_ms))
    }

    /// Penalty in ms for using `node` as a transit relay.
    pub fn transit_penalty_ms(&self, node: &NodeInfo) -> f64 {
        let drain = if node.draining {
            nonneg(self.draining_transit_penalty_ms)
        } else {
            0.0
        };
        nonneg(self.relay_hop_penalty_ms) + self.load.penalty_ms(node.load) + drain
    }

    /// Whether a link's loss leaves it usable at all.
    pub fn is_usable(&self, link: &LinkSummary) -> bool {
        link.loss < self.max_usable_loss
    }
}

fn nonneg(v: f64) -> f64 {
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

/// Milliseconds to integer microseconds, clamped to `0..=u32::MAX` (about 71
/// minutes, far beyond any real cost).
pub(crate) fn ms_to_us(ms: f64) -> u32 {
    if ms > 0.0 {
        (ms * 1000.0).round().min(u32::MAX as f64) as u32
    } else {
        0
    }
}

pub(crate) fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// A multiply-rotate hasher for integer keys (the FxHash scheme): edge ids
/// and id pairs hash several times faster than with SipHash, which matters
/// when a round inserts millions of links. Ids come from the operator's own
/// edge registry, not from clients, so hash flooding is not a concern.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl IdHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(b as u64);
        }
    }

    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A graph input that was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GraphError {
    /// A node with this id was already added.
    #[error("edge {0} added twice")]
    DuplicateNode(EdgeId),
    /// The id names no node of the graph.
    #[error("unknown edge {0}")]
    UnknownNode(EdgeId),
    /// A link from an edge to itself.
    #[error("link from edge {0} to itself")]
    SelfLink(EdgeId),
    /// A link summary with an impossible value.
    #[error("link {from}->{to}: {reason}")]
    InvalidLink {
        /// Link origin.
        from: EdgeId,
        /// Link target.
        to: EdgeId,
        /// What is wrong.
        reason: &'static str,
    },
    /// More nodes or links than the compact representation holds (about four
    /// billion).
    #[error("graph too large")]
    TooLarge,
}

/// Collects nodes and links, then builds a [`MeshGraph`].
#[derive(Debug, Clone, Default)]
pub struct MeshGraphBuilder {
    cost: CostModel,
    nodes: Vec<NodeInfo>,
    index: IdMap<EdgeId, usize>,
    links: IdMap<(EdgeId, EdgeId), LinkSummary>,
}

impl MeshGraphBuilder {
    /// An empty builder using `cost`.
    pub fn new(cost: CostModel) -> Self {
        MeshGraphBuilder {
            cost,
            ..Default::default()
        }
    }

    /// Adds a node; ids must be unique.
    pub fn add_node(&mut self, node: NodeInfo) -> Result<&mut Self, GraphError> {
        if self.index.contains_key(&node.id) {
            return Err(GraphError::DuplicateNode(node.id));
        }
        self.index.insert(node.id, self.nodes.len());
        self.nodes.push(node);
        Ok(self)
    }

    /// Adds the directed link `from -> to` (both nodes must be added first),
    /// replacing an earlier summary of the same link.
    pub fn add_link(
        &mut self,
        from: EdgeId,
        to: EdgeId,
        summary: LinkSummary,
    ) -> Result<&mut Self, GraphError> {
        for id in [from, to] {
            if !self.index.contains_key(&id) {
                return Err(GraphError::UnknownNode(id));
            }
        }
        if from == to {
            return Err(GraphError::SelfLink(from));
        }
        let invalid = |reason| GraphError::InvalidLink { from, to, reason };
        if !(summary.rtt_ms.is_finite() && summary.rtt_ms >= 0.0) {
            return Err(invalid("rtt_ms must be finite and not negative"));
        }
        if !(summary.jitter_ms.is_finite() && summary.jitter_ms >= 0.0) {
            return Err(invalid("jitter_ms must be finite and not negative"));
        }
        if !(0.0..=1.0).contains(&summary.loss) {
            return Err(invalid("loss must be within 0..=1"));
        }
        self.links.insert((from, to), summary);
        Ok(self)
    }

    /// Removes the link `from -> to`; returns whether it existed.
    pub fn remove_link(&mut self, from: EdgeId, to: EdgeId) -> bool {
        self.links.remove(&(from, to)).is_some()
    }

    /// Builds the immutable graph. Nodes are ordered by id and each node's
    /// links by target id, so the result does not depend on insertion order.
    pub fn build(self) -> Result<MeshGraph, GraphError> {
        let MeshGraphBuilder {
            cost,
            mut nodes,
            links,
            ..
        } = self;
        if nodes.len() >= u32::MAX as usize || links.len() >= u32::MAX as usize {
            return Err(GraphError::TooLarge);
        }
        nodes.sort_by_key(|n| n.id);
        let index: IdMap<EdgeId, u32> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id, i as u32))
            .collect();
        let penalty_us: Vec<u32> = nodes
            .iter()
            .map(|n| ms_to_us(cost.transit_penalty_ms(n)))
            .collect();

        let mut usable: Vec<(u32, u32, LinkSummary)> = Vec::with_capacity(links.len());
        let mut unusable = 0usize;
        for ((from, to), summary) in links {
            if !cost.is_usable(&summary) {
                unusable += 1;
                continue;
            }
            if let (Some(&f), Some(&t)) = (index.get(&from), index.get(&to)) {
                usable.push((f, t, summary));
            }
        }
        usable.sort_unstable_by_key(|&(f, t, _)| (f, t));

        let n = nodes.len();
        let mut out_start = vec![0u32; n + 1];
        for &(f, _, _) in &usable {
            out_start[f as usize + 1] += 1;
        }
        for i in 0..n {
            out_start[i + 1] += out_start[i];
        }
        let m = usable.len();
        let mut out_to = Vec::with_capacity(m);
        let mut out_cost = Vec::with_capacity(m);
        let mut out_rtt = Vec::with_capacity(m);
        let mut summaries = Vec::with_capacity(m);
        // `usable` is sorted by (source, target): link ids follow that order.
        for (f, t, summary) in usable {
            debug_assert!(f as usize <= n);
            out_to.push(t);
            out_cost.push(ms_to_us(cost.link_cost_ms(&summary)));
            out_rtt.push(ms_to_us(summary.rtt_ms));
            summaries.push(summary);
        }
        let route = RouteLinks::new(&out_start, &out_to, &out_cost, &penalty_us);
        let site = crate::risk::sites(&nodes);
        let shared_sites = site.iter().enumerate().any(|(i, s)| *s != i as u32);
        Ok(MeshGraph {
            cost,
            nodes,
            index,
            penalty_us,
            site,
            shared_sites,
            in_links: std::sync::OnceLock::new(),
            out_start,
            out_to,
            out_cost,
            out_rtt,
            summaries,
            route,
            unusable,
        })
    }
}

/// The links route computation searches: the usable links minus those that
/// can be on no best or backup path.
///
/// Why: probe meshes are dense (every edge probes its region and the nearest
/// edges of every other region, hundreds of links each) while the links that
/// matter are few: a long link is usually beaten by a detour through a relay
/// near the straight line. Searching only useful links makes every source's
/// search several times cheaper, and the pruning is paid once per graph.
///
/// A link u→v is left out when two different relays w each give a strictly
/// cheaper detour: cost(u→w) + transit(w) + cost(w→v) < cost(u→v). Such a link
/// is never on a best path (swapping in a detour, and cutting out any loop it
/// makes, gives a strictly cheaper path), and never on a backup path either:
/// a backup avoids one relay or one link from the source, which can disable at
/// most one of the two detours.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteLinks {
    pub(crate) out_start: Vec<u32>,
    pub(crate) out_to: Vec<u32>,
    pub(crate) out_cost: Vec<u32>,
    /// Index of each kept link in the graph's full link arrays.
    pub(crate) out_link: Vec<u32>,
}

impl RouteLinks {
    fn new(out_start: &[u32], out_to: &[u32], out_cost: &[u32], penalty_us: &[u32]) -> Self {
        let n = out_start.len().saturating_sub(1);
        let range = |u: usize| out_start[u] as usize..out_start[u + 1] as usize;
        let keep = useful_links(n, &range, out_to, out_cost, penalty_us);
        let kept = keep.iter().filter(|&&k| k).count();
        let mut r = RouteLinks {
            out_start: Vec::with_capacity(n + 1),
            out_to: Vec::with_capacity(kept),
            out_cost: Vec::with_capacity(kept),
            out_link: Vec::with_capacity(kept),
        };
        r.out_start.push(0);
        for u in 0..n {
            for e in range(u).filter(|&e| keep[e]) {
                r.out_to.push(out_to[e]);
                r.out_cost.push(out_cost[e]);
                r.out_link.push(e as u32);
            }
            r.out_start.push(r.out_to.len() as u32);
        }
        r
    }

    pub(crate) fn out_range(&self, u: u32) -> std::ops::Range<usize> {
        self.out_start[u as usize] as usize..self.out_start[u as usize + 1] as usize
    }
}

/// Upper bound on the link checks pruning may spend (about half a second).
const PRUNE_BUDGET: usize = 300_000_000;

/// Marks the links that are not strictly beaten by detours through two
/// different relays (see [`RouteLinks`]).
///
/// For each node u, every relay w it links to is tried as a detour for every
/// link of u: the work is the sum over links u→w of w's degree. When that
/// would exceed [`PRUNE_BUDGET`], each node tries only its cheapest relays
/// (as many as the budget allows): fewer links are pruned, but every pruned
/// link is still provably useless.
fn useful_links(
    n: usize,
    range: &impl Fn(usize) -> std::ops::Range<usize>,
    out_to: &[u32],
    out_cost: &[u32],
    penalty_us: &[u32],
) -> Vec<bool> {
    let mut keep = vec![true; out_to.len()];
    let work: usize = out_to.iter().map(|&w| range(w as usize).len()).sum();
    let relays_per_node = if work <= PRUNE_BUDGET {
        usize::MAX
    } else {
        (PRUNE_BUDGET / out_to.len().max(1)).max(8)
    };
    // Cost of u's link to each node (0 where there is none: nothing beats 0).
    let mut direct = vec![0u32; n];
    let mut beaten = vec![0u8; n];
    let mut relays: Vec<(u64, u32)> = Vec::new();
    for u in 0..n {
        let links = range(u);
        let mut longest = 0u64;
        for e in links.clone() {
            direct[out_to[e] as usize] = out_cost[e];
            longest = longest.max(out_cost[e] as u64);
        }
        relays.clear();
        relays.extend(links.clone().filter_map(|e| {
            let w = out_to[e];
            let via = out_cost[e] as u64 + penalty_us[w as usize] as u64;
            // A relay this far away beats none of u's links.
            (via < longest).then_some((via, w))
        }));
        if relays.len() > relays_per_node {
            relays.select_nth_unstable(relays_per_node);
            relays.truncate(relays_per_node);
        }
        for &(via, w) in &relays {
            for e2 in range(w as usize) {
                let v = out_to[e2] as usize;
                if via + (out_cost[e2] as u64) < direct[v] as u64 && beaten[v] < 2 {
                    beaten[v] += 1;
                }
            }
        }
        for e in links {
            let v = out_to[e] as usize;
            keep[e] = beaten[v] < 2;
            direct[v] = 0;
            beaten[v] = 0;
        }
    }
    keep
}

/// Cost and RTT of a path through the current graph.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PathMetrics {
    /// Sum of link costs plus transit penalties, in ms-equivalent.
    pub cost_ms: f64,
    /// Sum of link RTTs in ms.
    pub rtt_ms: f64,
}

/// The mesh: nodes and usable directed links with precomputed costs.
///
/// Costs and RTTs are held as integer microseconds, so reported figures are
/// exact to the microsecond.
#[derive(Debug, Clone)]
pub struct MeshGraph {
    cost: CostModel,
    pub(crate) nodes: Vec<NodeInfo>,
    index: IdMap<EdgeId, u32>,
    pub(crate) penalty_us: Vec<u32>,
    /// Each node's site ([`crate::risk`]): the index of its first node.
    pub(crate) site: Vec<u32>,
    /// Whether any site holds more than one node.
    shared_sites: bool,
    /// Incoming links, built on first use: only the shared-risk pass needs
    /// them (a graph whose routes follow the plain rule, as hierarchical
    /// routes' do, never pays for them).
    in_links: std::sync::OnceLock<crate::risk::InLinks>,
    pub(crate) out_start: Vec<u32>,
    pub(crate) out_to: Vec<u32>,
    pub(crate) out_cost: Vec<u32>,
    pub(crate) out_rtt: Vec<u32>,
    summaries: Vec<LinkSummary>,
    pub(crate) route: RouteLinks,
    unusable: usize,
}

impl MeshGraph {
    /// A builder using `cost`.
    pub fn builder(cost: CostModel) -> MeshGraphBuilder {
        MeshGraphBuilder::new(cost)
    }

    /// The cost model the graph was built with.
    pub fn cost_model(&self) -> &CostModel {
        &self.cost
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of usable links.
    pub fn link_count(&self) -> usize {
        self.out_to.len()
    }

    /// Number of links left out because their loss made them unusable.
    pub fn unusable_link_count(&self) -> usize {
        self.unusable
    }

    /// Whether the graph has this node.
    pub fn contains(&self, id: EdgeId) -> bool {
        self.index.contains_key(&id)
    }

    /// The node with this id.
    pub fn node(&self, id: EdgeId) -> Option<&NodeInfo> {
        self.idx(id).map(|i| &self.nodes[i as usize])
    }

    /// All nodes, by increasing id.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> + '_ {
        self.nodes.iter()
    }

    /// All usable links as (from, to, summary), ordered by (from, to).
    pub fn links(&self) -> impl Iterator<Item = (EdgeId, EdgeId, &LinkSummary)> + '_ {
        (0..self.nodes.len()).flat_map(move |u| {
            self.out_range(u as u32).map(move |e| {
                (
                    self.nodes[u].id,
                    self.nodes[self.out_to[e] as usize].id,
                    &self.summaries[e],
                )
            })
        })
    }

    /// The usable links leaving `id`, as (target, summary) by target id.
    pub fn neighbors(&self, id: EdgeId) -> impl Iterator<Item = (EdgeId, &LinkSummary)> + '_ {
        let range = self.idx(id).map_or(0..0, |u| self.out_range(u));
        range.map(move |e| (self.nodes[self.out_to[e] as usize].id, &self.summaries[e]))
    }

    /// The summary of the usable link `from -> to`.
    pub fn link(&self, from: EdgeId, to: EdgeId) -> Option<&LinkSummary> {
        let e = self.find_link(self.idx(from)?, self.idx(to)?)?;
        Some(&self.summaries[e])
    }

    /// The cost of the usable link `from -> to`, in ms-equivalent.
    pub fn link_cost_ms(&self, from: EdgeId, to: EdgeId) -> Option<f64> {
        let e = self.find_link(self.idx(from)?, self.idx(to)?)?;
        Some(us_to_ms(self.out_cost[e] as u64))
    }

    /// The penalty for using `id` as a transit relay, in ms-equivalent.
    pub fn transit_penalty_ms(&self, id: EdgeId) -> Option<f64> {
        self.idx(id)
            .map(|i| us_to_ms(self.penalty_us[i as usize] as u64))
    }

    /// Cost and RTT of `path` (source first, destination last), or `None` if
    /// it is empty, names an unknown node, visits a node twice or uses a link
    /// that is missing or unusable. A one-node path costs nothing.
    pub fn path_metrics(&self, path: &[EdgeId]) -> Option<PathMetrics> {
        let (cost, rtt) = self.path_us(path)?;
        Some(PathMetrics {
            cost_ms: us_to_ms(cost),
            rtt_ms: us_to_ms(rtt),
        })
    }

    /// Whether `path` is a valid, loop-free path of usable links.
    pub fn is_valid_path(&self, path: &[EdgeId]) -> bool {
        self.path_us(path).is_some()
    }

    /// (cost, rtt) in microseconds; see [`MeshGraph::path_metrics`].
    pub(crate) fn path_us(&self, path: &[EdgeId]) -> Option<(u64, u64)> {
        let first = *path.first()?;
        if path.len() > self.nodes.len() {
            return None;
        }
        let mut prev = self.idx(first)?;
        // Paths are short: a linear scan beats hashing until they are not.
        let mut seen = (path.len() > 32).then(|| {
            let mut set = std::collections::HashSet::with_capacity(path.len());
            set.insert(first);
            set
        });
        let (mut cost, mut rtt) = (0u64, 0u64);
        for (i, &id) in path.iter().enumerate().skip(1) {
            let next = self.idx(id)?;
            let repeated = match seen.as_mut() {
                Some(set) => !set.insert(id),
                None => path[..i].contains(&id),
            };
            if repeated {
                return None;
            }
            let e = self.find_link(prev, next)?;
            if i > 1 {
                cost = cost.saturating_add(self.penalty_us[prev as usize] as u64);
            }
            cost = cost.saturating_add(self.out_cost[e] as u64);
            rtt = rtt.saturating_add(self.out_rtt[e] as u64);
            prev = next;
        }
        Some((cost, rtt))
    }

    /// The site of edge `id` ([`crate::risk`]), named by its first edge
    /// (the lowest id): every edge of a site is within
    /// [`crate::risk::SITE_RADIUS_KM`] of that one.
    pub fn site_of(&self, id: EdgeId) -> Option<EdgeId> {
        let i = self.idx(id)?;
        Some(self.id(self.site[i as usize]))
    }

    /// Whether any site holds more than one edge.
    pub fn has_shared_sites(&self) -> bool {
        self.shared_sites
    }

    /// Each node's incoming links (built on the first call).
    pub(crate) fn in_links(&self) -> &crate::risk::InLinks {
        self.in_links
            .get_or_init(|| crate::risk::InLinks::new(&self.out_start, &self.out_to))
    }

    pub(crate) fn idx(&self, id: EdgeId) -> Option<u32> {
        self.index.get(&id).copied()
    }

    pub(crate) fn id(&self, idx: u32) -> EdgeId {
        self.nodes[idx as usize].id
    }

    pub(crate) fn out_range(&self, u: u32) -> std::ops::Range<usize> {
        self.out_start[u as usize] as usize..self.out_start[u as usize + 1] as usize
    }

    /// This graph with the link `from -> to` set to `summary`, or removed
    /// when `summary` is `None` (both nodes must exist).
    pub fn with_link(
        &self,
        from: EdgeId,
        to: EdgeId,
        summary: Option<LinkSummary>,
    ) -> Result<MeshGraph, GraphError> {
        let mut b = MeshGraph::builder(self.cost);
        for n in &self.nodes {
            b.add_node(n.clone())?;
        }
        for (x, y, s) in self.links() {
            b.add_link(x, y, *s)?;
        }
        match summary {
            Some(s) => {
                b.add_link(from, to, s)?;
            }
            None => {
                b.remove_link(from, to);
            }
        }
        b.build()
    }

    /// Number of links route computation searches (see [`MeshGraph::link_count`]
    /// for all usable links); the others can be on no best or backup path.
    pub fn routing_link_count(&self) -> usize {
        self.route.out_to.len()
    }

    fn find_link(&self, from: u32, to: u32) -> Option<usize> {
        let range = self.out_range(from);
        let start = range.start;
        self.out_to[range]
            .binary_search(&to)
            .ok()
            .map(|pos| start + pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The figures in these tests assume a 1 ms relay toll.
    fn test_model() -> CostModel {
        CostModel {
            relay_hop_penalty_ms: 1.0,
            ..CostModel::default()
        }
    }

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

    #[test]
    fn link_cost_adds_loss_and_jitter_penalties() {
        let m = test_model();
        let s = LinkSummary {
            rtt_ms: 20.0,
            jitter_ms: 3.0,
            loss: 0.02,
            samples: 5,
        };
        // 20 + 3 + 2 x 0.02/0.98 x (20 + 30).
        let want = 20.0 + 3.0 + 2.0 * 0.02 / 0.98 * 50.0;
        assert!((m.link_cost_ms(&s) - want).abs() < 1e-9);
        // The figures of the model's doc comment.
        let at = |loss| {
            m.link_cost_ms(&LinkSummary {
                rtt_ms: 100.0,
                jitter_ms: 0.0,
                loss,
                samples: 5,
            }) - 100.0
        };
        assert!((at(0.05) - 13.68).abs() < 0.01, "{}", at(0.05));
        assert!((at(0.2) - 65.0).abs() < 0.01, "{}", at(0.2));
        assert!(m.is_usable(&s));
        assert!(!m.is_usable(&LinkSummary { loss: 0.5, ..s }));
    }

    #[test]
    fn transit_penalty_for_load_and_draining() {
        let m = test_model();
        let mut n = node(1);
        // Every relay costs the 1 ms hop penalty.
        assert_eq!(m.transit_penalty_ms(&n), 1.0);
        n.load = 0.95;
        assert!((m.transit_penalty_ms(&n) - 51.0).abs() < 1e-9);
        n.draining = true;
        assert!((m.transit_penalty_ms(&n) - 10_051.0).abs() < 1e-9);
    }

    #[test]
    fn builder_refuses_bad_input() {
        let mut b = MeshGraph::builder(test_model());
        b.add_node(node(1)).expect("new");
        b.add_node(node(2)).expect("new");
        assert_eq!(
            b.add_node(node(1)).err(),
            Some(GraphError::DuplicateNode(1))
        );
        assert_eq!(
            b.add_link(1, 3, link(1.0)).err(),
            Some(GraphError::UnknownNode(3))
        );
        assert_eq!(
            b.add_link(1, 1, link(1.0)).err(),
            Some(GraphError::SelfLink(1))
        );
        for bad in [
            link(-1.0),
            link(f64::NAN),
            LinkSummary {
                jitter_ms: f64::INFINITY,
                ..link(1.0)
            },
            LinkSummary {
                loss: 1.5,
                ..link(1.0)
            },
            LinkSummary {
                loss: f64::NAN,
                ..link(1.0)
            },
        ] {
            assert!(matches!(
                b.add_link(1, 2, bad),
                Err(GraphError::InvalidLink { from: 1, to: 2, .. })
            ));
        }
    }

    #[test]
    fn build_orders_and_indexes_links() {
        let mut b = MeshGraph::builder(test_model());
        for id in [30, 10, 20] {
            b.add_node(node(id)).expect("new");
        }
        b.add_link(10, 30, link(5.0)).expect("ok");
        b.add_link(10, 20, link(7.0)).expect("ok");
        b.add_link(10, 20, link(4.0)).expect("replaces");
        b.add_link(
            30,
            20,
            LinkSummary {
                loss: 0.9,
                ..link(1.0)
            },
        )
        .expect("ok");
        b.add_link(20, 30, link(2.0)).expect("ok");
        b.add_link(30, 10, link(9.0)).expect("ok");
        assert!(b.remove_link(30, 10));
        assert!(!b.remove_link(30, 10));
        let g = b.build().expect("build");
        assert_eq!(g.node_count(), 3);
        assert_eq!(g.link_count(), 3);
        assert_eq!(g.unusable_link_count(), 1);
        assert_eq!(
            g.nodes().map(|n| n.id).collect::<Vec<_>>(),
            vec![10, 20, 30]
        );
        let links: Vec<(EdgeId, EdgeId)> = g.links().map(|(a, b, _)| (a, b)).collect();
        assert_eq!(links, vec![(10, 20), (10, 30), (20, 30)]);
        assert_eq!(g.link(10, 20).map(|s| s.rtt_ms), Some(4.0));
        assert!(g.link(30, 20).is_none());
        assert_eq!(g.link_cost_ms(20, 30), Some(2.0));
        assert_eq!(
            g.neighbors(10).map(|(t, _)| t).collect::<Vec<_>>(),
            vec![20, 30]
        );
        assert_eq!(g.neighbors(99).count(), 0);
        // The routing view points back at the full link arrays.
        for u in 0..3u32 {
            for e in g.route.out_range(u) {
                let link = g.route.out_link[e] as usize;
                assert_eq!(g.out_to[link], g.route.out_to[e]);
                assert_eq!(g.out_cost[link], g.route.out_cost[e]);
            }
        }
        assert_eq!(g.routing_link_count(), 3);
    }

    #[test]
    fn path_metrics_sum_links_and_transit_penalties() {
        let mut b = MeshGraph::builder(test_model());
        b.add_node(node(1)).expect("new");
        b.add_node(NodeInfo {
            load: 1.0,
            ..node(2)
        })
        .expect("new");
        b.add_node(node(3)).expect("new");
        b.add_link(1, 2, link(10.0)).expect("ok");
        b.add_link(2, 3, link(15.5)).expect("ok");
        let g = b.build().expect("build");
        let m = g.path_metrics(&[1, 2, 3]).expect("valid");
        assert_eq!(m.rtt_ms, 25.5);
        // Links, plus relay 2's full-load penalty and hop penalty.
        assert_eq!(m.cost_ms, 126.5);
        // The loaded node as an endpoint pays nothing.
        assert_eq!(g.path_metrics(&[1, 2]).map(|m| m.cost_ms), Some(10.0));
        assert_eq!(g.path_metrics(&[1]).map(|m| m.cost_ms), Some(0.0));
        assert!(g.path_metrics(&[]).is_none());
        assert!(g.path_metrics(&[3, 2]).is_none());
        assert!(g.path_metrics(&[1, 2, 1]).is_none());
        assert!(g.path_metrics(&[1, 7]).is_none());
        assert!(!g.is_valid_path(&[2, 1]));
    }

    #[test]
    fn routing_view_drops_links_beaten_by_two_detours_only() {
        let mut b = MeshGraph::builder(test_model());
        for id in 1..=4 {
            b.add_node(node(id)).expect("new");
        }
        // 1->4 costs 100; via 2 or via 3 it costs 10 + 1 (relay) + 10.
        b.add_link(1, 4, link(100.0)).expect("ok");
        for relay in [2, 3] {
            b.add_link(1, relay, link(10.0)).expect("ok");
            b.add_link(relay, 4, link(10.0)).expect("ok");
        }
        let g = b.build().expect("build");
        assert_eq!(g.link_count(), 5);
        assert_eq!(g.routing_link_count(), 4);
        // Still a link of the graph: queries and path validation see it.
        assert_eq!(g.link_cost_ms(1, 4), Some(100.0));
        assert_eq!(g.path_metrics(&[1, 4]).map(|m| m.cost_ms), Some(100.0));

        // With one detour only, a backup avoiding that relay needs the link.
        let mut b = MeshGraph::builder(test_model());
        for id in 1..=3 {
            b.add_node(node(id)).expect("new");
        }
        b.add_link(1, 3, link(100.0)).expect("ok");
        b.add_link(1, 2, link(10.0)).expect("ok");
        b.add_link(2, 3, link(10.0)).expect("ok");
        let g = b.build().expect("build");
        assert_eq!(g.routing_link_count(), 3);
    }

    #[test]
    fn id_hasher_spreads_pairs() {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let h = BuildHasherDefault::<IdHasher>::default();
        let a = h.hash_one((1u32, 2u32));
        assert_ne!(a, h.hash_one((2u32, 1u32)));
        assert_ne!(a, h.hash_one((1u32, 3u32)));
        assert_eq!(a, h.hash_one((1u32, 2u32)));
        let mut bytes = IdHasher::default();
        bytes.write(b"abc");
        assert_ne!(bytes.finish(), 0);
    }

    #[test]
    fn microsecond_conversion_clamps() {
        assert_eq!(ms_to_us(1.5), 1500);
        assert_eq!(ms_to_us(-3.0), 0);
        assert_eq!(ms_to_us(f64::NAN), 0);
        assert_eq!(ms_to_us(f64::INFINITY), u32::MAX);
        assert_eq!(us_to_ms(2500), 2.5);
    }
}
