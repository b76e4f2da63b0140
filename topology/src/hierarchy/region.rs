//! A region's routes kept up to date: every source's local routes, the
//! region's exits, and what one link's change recomputes.

use std::collections::{BTreeMap, HashMap};

use super::{ms_to_us, Hierarchy, SourceRoutes, INF, NONE};
use crate::graph::{EdgeId, GraphError, MeshGraph};
use crate::paths::{Path, Route, RouteSet};
use crate::probe::LinkSummary;

/// A region's links to edges of other regions that are not hubs, by target:
/// where a path can leave the region straight to its destination.
#[derive(Debug, Clone, Default)]
pub struct Exits {
    pub(super) by_target: HashMap<EdgeId, Vec<(EdgeId, u64)>>,
}

/// One exit as published: a link from an edge of the region to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitLink {
    /// The edge of the region the link leaves from.
    pub from: EdgeId,
    /// The edge of another region (not a hub) it goes to.
    pub to: EdgeId,
    /// The link's cost, µs.
    pub cost_us: u64,
}

impl Exits {
    /// The exits of these links.
    pub fn from_links(links: impl IntoIterator<Item = ExitLink>) -> Exits {
        let mut exits = Exits::default();
        for l in links {
            exits
                .by_target
                .entry(l.to)
                .or_default()
                .push((l.from, l.cost_us));
        }
        exits
    }

    /// Every exit link, sorted (the published form).
    pub fn links(&self) -> Vec<ExitLink> {
        let mut links: Vec<ExitLink> = self
            .by_target
            .iter()
            .flat_map(|(&to, froms)| {
                froms
                    .iter()
                    .map(move |&(from, cost_us)| ExitLink { from, to, cost_us })
            })
            .collect();
        links.sort_unstable_by_key(|l| (l.from, l.to));
        links
    }

    /// Number of links.
    pub fn len(&self) -> usize {
        self.by_target.values().map(Vec::len).sum()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.by_target.is_empty()
    }

    /// Replaces the exits of `from` (`old`, as listed before) by `new`.
    pub(super) fn replace(&mut self, from: EdgeId, old: &[(EdgeId, u64)], new: &[(EdgeId, u64)]) {
        for &(to, _) in old {
            if let Some(list) = self.by_target.get_mut(&to) {
                list.retain(|&(x, _)| x != from);
                if list.is_empty() {
                    self.by_target.remove(&to);
                }
            }
        }
        for &(to, cost) in new {
            self.by_target.entry(to).or_default().push((from, cost));
        }
    }
}

/// The routes of every edge of one region, kept up to date as links change.
#[derive(Debug, Clone)]
pub struct RegionRoutes {
    region: String,
    local: MeshGraph,
    /// Every exit link of each edge, and those worth keeping (by target).
    raw_exits: BTreeMap<EdgeId, Vec<(EdgeId, u64)>>,
    useful: BTreeMap<EdgeId, Vec<(EdgeId, u64)>>,
    exits: Exits,
    sources: BTreeMap<EdgeId, SourceRoutes>,
}

impl RegionRoutes {
    /// Computes the routes of every edge of `region` from scratch, over
    /// `threads` threads.
    pub fn compute(
        hier: &Hierarchy,
        graph: &MeshGraph,
        region: &str,
        threads: usize,
    ) -> RegionRoutes {
        let local = hier.local_graph(graph, region);
        let members: Vec<EdgeId> = hier
            .table(region)
            .map_or_else(Vec::new, |t| t.members.clone());
        let sources = hier
            .sources_routes(&local, &members, threads)
            .into_iter()
            .collect();
        let mut routes = RegionRoutes {
            region: region.to_string(),
            local,
            raw_exits: hier.raw_exits(graph, region),
            useful: BTreeMap::new(),
            exits: Exits::default(),
            sources,
        };
        routes.prune_exits(hier, None);
        routes
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The graph the region's sources search.
    pub fn local_graph(&self) -> &MeshGraph {
        &self.local
    }

    /// The region's local node list (its edges and every hub, by id): what
    /// published routes number nodes by ([`super::wire`]).
    pub fn node_list(&self) -> Vec<EdgeId> {
        self.local.nodes().map(|n| n.id).collect()
    }

    /// The region's exits.
    pub fn exits(&self) -> &Exits {
        &self.exits
    }

    /// The route from `source` (of this region) to `dest`, costs and RTTs
    /// from `graph` (see [`Hierarchy::route`]).
    pub fn route(
        &self,
        hier: &Hierarchy,
        graph: &MeshGraph,
        source: EdgeId,
        dest: EdgeId,
    ) -> Option<Route> {
        hier.route(graph, &self.exits, self.sources.get(&source)?, dest)
    }

    /// Exit links of the region's edges: all, and those worth keeping.
    pub fn exit_counts(&self) -> (usize, usize) {
        (
            self.raw_exits.values().map(Vec::len).sum(),
            self.exits.len(),
        )
    }

    /// The routes of `source`.
    pub fn source(&self, source: EdgeId) -> Option<&SourceRoutes> {
        self.sources.get(&source)
    }

    /// Every source's routes, by id.
    pub fn sources(&self) -> impl Iterator<Item = (&EdgeId, &SourceRoutes)> {
        self.sources.iter()
    }

    /// Sets the link `from -> to` of this region (or from this region to
    /// a hub) to `summary`, or removes it when `None` (it died), and
    /// recomputes the sources whose routes it can affect, over `threads`
    /// threads; returns how many. A source is affected if one of its paths
    /// uses the link, or if the link got cheaper and could improve one of
    /// its paths (the best path to its head, or a backup group's label
    /// there). Other links reach the region through its tables and hub
    /// graph: see [`RegionRoutes::relabel`].
    pub fn set_link(
        &mut self,
        hier: &Hierarchy,
        from: EdgeId,
        to: EdgeId,
        summary: Option<LinkSummary>,
        threads: usize,
    ) -> Result<usize, GraphError> {
        let member = |id| {
            hier.table(&self.region)
                .is_some_and(|t| t.member_index.contains_key(&id))
        };
        if !member(from) {
            return Ok(0);
        }
        if !self.local.contains(to) {
            // An exit: composition reads it, no source's search does. (The
            // summary's cost, as the graph would compute it.)
            let model = *self.local.cost_model();
            let cost = summary
                .filter(|s| model.is_usable(s))
                .map(|s| ms_to_us(model.link_cost_ms(&s)));
            let links = self.raw_exits.entry(from).or_default();
            links.retain(|&(x, _)| x != to);
            links.extend(cost.map(|c| (to, c)));
            self.prune_exits(hier, Some(from));
            return Ok(0);
        }
        let old = self.local.link_cost_ms(from, to).map(ms_to_us);
        self.local = self.local.with_link(from, to, summary)?;
        let new = self.local.link_cost_ms(from, to).map(ms_to_us);
        let cheaper = match (old, new) {
            (_, None) => None,
            (None, Some(n)) => Some(n),
            (Some(o), Some(n)) => (n < o).then_some(n),
        };
        let toll = self.local.transit_penalty_ms(from).map_or(0, ms_to_us);
        let affected: Vec<EdgeId> = self
            .sources
            .iter()
            .filter(|(&s, r)| {
                let uses = |p: &Path| p.edges.windows(2).any(|w| w == [from, to]);
                if r.routes
                    .iter()
                    .any(|x| uses(&x.best) || x.backup.as_ref().is_some_and(uses))
                {
                    return true;
                }
                let toll = if s == from { 0 } else { toll };
                cheaper.is_some_and(|cost| could_improve(&r.routes, s, from, to, toll + cost))
            })
            .map(|(&s, _)| s)
            .collect();
        let count = affected.len();
        for (s, r) in hier.sources_routes(&self.local, &affected, threads) {
            self.sources.insert(s, r);
        }
        // A link to a hub decides which of `from`'s exits are worth keeping.
        if hier.hub_graph.index.contains_key(&to) {
            self.prune_exits(hier, Some(from));
        }
        Ok(count)
    }

    /// Chooses again the exits worth keeping, of `from` or of every edge.
    fn prune_exits(&mut self, hier: &Hierarchy, from: Option<EdgeId>) {
        let edges: Vec<EdgeId> = match from {
            Some(x) => vec![x],
            None => self.raw_exits.keys().copied().collect(),
        };
        for x in edges {
            let raw = self.raw_exits.get(&x).map_or(&[][..], |v| &v[..]);
            let new = hier.useful_exits(&self.local, x, raw);
            let old = self.useful.remove(&x).unwrap_or_default();
            self.exits.replace(x, &old, &new);
            self.useful.insert(x, new);
        }
    }

    /// After tables or the hub graph changed (a new `hier`): recomputes
    /// every source's ways to the hubs, keeping its local routes.
    pub fn relabel(&mut self, hier: &Hierarchy) {
        for r in self.sources.values_mut() {
            r.labels = hier.labels(&r.routes);
        }
        self.prune_exits(hier, None);
    }
}

/// Whether the link `from -> to`, costing `cost_us` with `from`'s toll,
/// could improve a best or backup path of `routes` (from `source`).
///
/// Best paths: only if it beats the best path to `to`. Backups: the backups
/// of the destinations whose best path starts with hop `f` are best paths in
/// the graph without `f`, where an edge outside that group keeps its best
/// cost and an edge inside it costs its backup's; the link helps the group
/// only if it beats `to`'s cost there. Groups other than those of `from`
/// and `to` see both ends at their best costs, which the first check covers.
fn could_improve(
    routes: &RouteSet,
    source: EdgeId,
    from: EdgeId,
    to: EdgeId,
    cost_us: u64,
) -> bool {
    let figures = |id: EdgeId| -> Option<(u64, u64, EdgeId)> {
        if id == source {
            return Some((0, 0, NONE));
        }
        let r = routes.get(id)?;
        let backup = r.backup.as_ref().map_or(INF, |b| ms_to_us(b.cost_ms));
        Some((
            ms_to_us(r.best.cost_ms),
            backup,
            r.best.first_hop().unwrap_or(NONE),
        ))
    };
    let Some((from_best, from_backup, from_group)) = figures(from) else {
        return false;
    };
    let Some((to_best, to_backup, to_group)) = figures(to) else {
        return true;
    };
    if to == source {
        return false;
    }
    let in_group = |group: EdgeId, best: u64, backup: u64, own: EdgeId| {
        if own == group {
            backup
        } else {
            best
        }
    };
    let via = |reach: u64| reach.saturating_add(cost_us);
    // `<=`: an equal cost can still win on the tie-breaks (fewer hops, then
    // lower ids).
    via(from_best) <= to_best
        || (from_group != NONE
            && via(from_backup) <= in_group(from_group, to_best, to_backup, to_group))
        || via(in_group(to_group, from_best, from_backup, from_group)) <= to_backup
}
