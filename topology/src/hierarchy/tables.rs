//! Region tables (hub to every edge of a region) and the hub graph (hub to
//! hub across the mesh): what every region's controller shares.

use std::collections::HashMap;

use super::{INF, NONE};
use crate::graph::{EdgeId, MeshGraph};

/// Each edge's row in `ids` (a table's members, the hub graph's hubs).
fn row_of(ids: &[EdgeId]) -> HashMap<EdgeId, u32> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| (id, i as u32))
        .collect()
}

/// Best paths inside one region from each of its hubs to each of its edges.
#[derive(Debug, Clone)]
pub struct RegionTable {
    pub(super) region: String,
    pub(super) hubs: Vec<EdgeId>,
    pub(super) members: Vec<EdgeId>,
    pub(super) member_index: HashMap<EdgeId, u32>,
    /// `hubs × members`: cost in µs of the path (links plus the penalties of
    /// the edges inside it, not of its ends), `INF` when unreachable.
    pub(super) cost_us: Vec<u64>,
    /// `hubs × members`: the member before this one on the path, `NONE` at
    /// the hub.
    pub(super) pred: Vec<u32>,
    /// Each member's transit penalty in µs: what a path pays to go through
    /// it (the graph's `penalty_us`), so that readers of a published table
    /// price relays without the graph.
    pub(super) toll_us: Vec<u64>,
}

impl RegionTable {
    /// The table of `region` with these hubs (ids not in the region are
    /// ignored), searching only links between the region's edges.
    pub fn compute(graph: &MeshGraph, region: &str, hubs: &[EdgeId]) -> RegionTable {
        let members: Vec<EdgeId> = graph
            .nodes()
            .filter(|n| n.region == region)
            .map(|n| n.id)
            .collect();
        let member_index = row_of(&members);
        let hubs: Vec<EdgeId> = hubs
            .iter()
            .copied()
            .filter(|h| member_index.contains_key(h))
            .collect();
        let n = members.len();
        let mut cost_us = vec![INF; hubs.len() * n];
        let mut pred = vec![NONE; hubs.len() * n];
        // Graph indices of the members, and the reverse map.
        let gidx: Vec<u32> = members
            .iter()
            .map(|&id| graph.idx(id).expect("member of graph"))
            .collect();
        let mut local_of: HashMap<u32, u32> = HashMap::with_capacity(n);
        for (i, &g) in gidx.iter().enumerate() {
            local_of.insert(g, i as u32);
        }
        let mut heap = std::collections::BinaryHeap::new();
        for (h, hub) in hubs.iter().enumerate() {
            let dist = &mut cost_us[h * n..(h + 1) * n];
            let pred = &mut pred[h * n..(h + 1) * n];
            let root = member_index[hub];
            dist[root as usize] = 0;
            heap.push(std::cmp::Reverse((0u64, root)));
            while let Some(std::cmp::Reverse((d, u))) = heap.pop() {
                if d > dist[u as usize] {
                    continue;
                }
                let gu = gidx[u as usize];
                let toll = if u == root {
                    0
                } else {
                    graph.penalty_us[gu as usize] as u64
                };
                for e in graph.out_range(gu) {
                    let Some(&v) = local_of.get(&graph.out_to[e]) else {
                        continue;
                    };
                    let nd = d + toll + graph.out_cost[e] as u64;
                    if nd < dist[v as usize] {
                        dist[v as usize] = nd;
                        pred[v as usize] = u;
                        heap.push(std::cmp::Reverse((nd, v)));
                    }
                }
            }
        }
        let toll_us = gidx
            .iter()
            .map(|&g| graph.penalty_us[g as usize] as u64)
            .collect();
        RegionTable {
            region: region.to_string(),
            hubs,
            members,
            member_index,
            cost_us,
            pred,
            toll_us,
        }
    }

    /// A table as published (`members`, `hubs` among them, `hubs × members`
    /// costs and predecessors, a toll per member), checked: a table read
    /// from the store is never trusted to index within bounds.
    pub fn from_parts(
        region: String,
        members: Vec<EdgeId>,
        hubs: Vec<EdgeId>,
        cost_us: Vec<u64>,
        pred: Vec<u32>,
        toll_us: Vec<u64>,
    ) -> Result<RegionTable, String> {
        let n = members.len();
        let member_index = row_of(&members);
        if member_index.len() != n {
            return Err(format!("region {region}: a member is listed twice"));
        }
        if let Some(h) = hubs.iter().find(|h| !member_index.contains_key(h)) {
            return Err(format!("region {region}: hub {h} is not a member"));
        }
        let cells = hubs.len() * n;
        if cost_us.len() != cells || pred.len() != cells || toll_us.len() != n {
            return Err(format!(
                "region {region}: {} hubs x {n} members needs {cells} costs and predecessors and {n} tolls, got {}, {} and {}",
                hubs.len(),
                cost_us.len(),
                pred.len(),
                toll_us.len()
            ));
        }
        if let Some(p) = pred.iter().find(|&&p| p != NONE && p as usize >= n) {
            return Err(format!("region {region}: predecessor {p} out of range"));
        }
        let table = RegionTable {
            region,
            hubs,
            members,
            member_index,
            cost_us,
            pred,
            toll_us,
        };
        // Every reachable entry's path must end at its hub within `n` steps:
        // a cycle of predecessors would hang `path`.
        for h in 0..table.hubs.len() {
            for m in 0..n {
                if table.cost_us[h * n + m] != INF && table.walk(h, m as u32).is_none() {
                    return Err(format!(
                        "region {}: the path from hub {} to {} does not lead back to the hub",
                        table.region, table.hubs[h], table.members[m]
                    ));
                }
            }
        }
        Ok(table)
    }

    /// `hubs × members` costs (µs, `u64::MAX` unreachable), row by hub.
    pub fn costs_us(&self) -> &[u64] {
        &self.cost_us
    }

    /// `hubs × members` predecessors (member numbers, `u32::MAX` at the hub
    /// and where unreachable).
    pub fn preds(&self) -> &[u32] {
        &self.pred
    }

    /// Each member's transit penalty, µs.
    pub fn tolls_us(&self) -> &[u64] {
        &self.toll_us
    }

    /// The transit penalty of `member`, µs.
    pub(super) fn toll(&self, member: EdgeId) -> Option<u64> {
        self.member_index
            .get(&member)
            .map(|&m| self.toll_us[m as usize])
    }

    /// The region's name.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The region's hubs, by id.
    pub fn hubs(&self) -> &[EdgeId] {
        &self.hubs
    }

    /// The region's edges, by id.
    pub fn members(&self) -> &[EdgeId] {
        &self.members
    }

    /// Entries of the table (`hubs × members`).
    pub fn len(&self) -> usize {
        self.cost_us.len()
    }

    /// Whether the table has no entry.
    pub fn is_empty(&self) -> bool {
        self.cost_us.is_empty()
    }

    pub(super) fn cost(&self, hub: usize, member: EdgeId) -> u64 {
        match self.member_index.get(&member) {
            Some(&m) => self.cost_us[hub * self.members.len() + m as usize],
            None => INF,
        }
    }

    /// The path from hub number `hub` (in [`RegionTable::hubs`]) to `member`,
    /// both included; `None` if unreachable.
    pub fn path(&self, hub: usize, member: EdgeId) -> Option<Vec<EdgeId>> {
        let m = *self.member_index.get(&member)?;
        if self.cost_us[hub * self.members.len() + m as usize] == INF {
            return None;
        }
        self.walk(hub, m)
    }

    /// Follows the predecessors from member number `m` back to hub number
    /// `hub`; `None` if they do not get there within the region's size.
    fn walk(&self, hub: usize, mut m: u32) -> Option<Vec<EdgeId>> {
        let n = self.members.len();
        let mut path = vec![self.members[m as usize]];
        while self.pred[hub * n + m as usize] != NONE {
            m = self.pred[hub * n + m as usize];
            path.push(self.members[m as usize]);
            if path.len() > n {
                return None;
            }
        }
        (path.last() == Some(&self.hubs[hub])).then(|| {
            path.reverse();
            path
        })
    }
}

/// A probed link from a hub to a hub of another region, as published with
/// the region of `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubLink {
    /// A hub.
    pub from: EdgeId,
    /// A hub of another region.
    pub to: EdgeId,
    /// The link's cost, µs.
    pub cost_us: u64,
}

/// The links of `graph` from the hubs of `tables` to hubs of other regions.
pub fn hub_links(graph: &MeshGraph, tables: &[RegionTable]) -> Vec<HubLink> {
    let region_of: HashMap<EdgeId, usize> = tables
        .iter()
        .enumerate()
        .flat_map(|(t, table)| table.hubs.iter().map(move |&h| (h, t)))
        .collect();
    let mut links = Vec::new();
    for (&from, &t) in &region_of {
        let Some(g) = graph.idx(from) else { continue };
        for e in graph.out_range(g) {
            let to = graph.id(graph.out_to[e]);
            if region_of.get(&to).is_some_and(|&u| u != t) {
                links.push(HubLink {
                    from,
                    to,
                    cost_us: graph.out_cost[e] as u64,
                });
            }
        }
    }
    links.sort_unstable_by_key(|l| (l.from, l.to));
    links
}

/// Lowest costs between every pair of hubs of the mesh.
#[derive(Debug, Clone)]
pub struct HubGraph {
    pub(super) hubs: Vec<EdgeId>,
    pub(super) index: HashMap<EdgeId, u32>,
    /// Region table and row of each hub.
    pub(super) home: Vec<(u32, u32)>,
    /// Transit penalty of each hub, µs.
    pub(super) toll: Vec<u64>,
    /// `hubs × hubs` costs in µs, the penalties of the hubs in between
    /// included, of the two ends not.
    pub(super) dist: Vec<u64>,
    /// `hubs × hubs`: the hub the best path goes through, `NONE` for a
    /// single step (a direct link or a path inside one region).
    pub(super) via: Vec<u32>,
    /// `hubs × hubs`: whether a single step is the direct link (else the
    /// region table's path).
    pub(super) direct: Vec<bool>,
}

impl HubGraph {
    /// Solves the hub graph of `tables` over the links of `graph`.
    pub fn compute(graph: &MeshGraph, tables: &[RegionTable]) -> HubGraph {
        Self::from_links(tables, &hub_links(graph, tables))
    }

    /// Solves the hub graph of `tables` over `links` between their hubs (as
    /// published: links naming an unknown hub are ignored).
    pub fn from_links(tables: &[RegionTable], links: &[HubLink]) -> HubGraph {
        let mut hubs = Vec::new();
        let mut home = Vec::new();
        for (t, table) in tables.iter().enumerate() {
            for (row, &h) in table.hubs.iter().enumerate() {
                hubs.push(h);
                home.push((t as u32, row as u32));
            }
        }
        let n = hubs.len();
        let index = row_of(&hubs);
        let toll: Vec<u64> = hubs
            .iter()
            .zip(&home)
            .map(|(&h, &(t, _))| tables[t as usize].toll(h).unwrap_or(INF))
            .collect();
        let mut dist = vec![INF; n * n];
        let mut via = vec![NONE; n * n];
        let mut direct = vec![false; n * n];
        for i in 0..n {
            dist[i * n + i] = 0;
            let (t, row) = home[i];
            for &other in &tables[t as usize].hubs {
                let j = index[&other] as usize;
                if j != i {
                    dist[i * n + j] = tables[t as usize].cost(row as usize, other);
                }
            }
        }
        for l in links {
            let (Some(&i), Some(&j)) = (index.get(&l.from), index.get(&l.to)) else {
                continue;
            };
            let cell = i as usize * n + j as usize;
            if i != j && l.cost_us <= dist[cell] {
                dist[cell] = l.cost_us;
                direct[cell] = true;
            }
        }
        for k in 0..n {
            for i in 0..n {
                let ik = dist[i * n + k];
                if ik == INF || i == k {
                    continue;
                }
                let through = ik + toll[k];
                for j in 0..n {
                    let kj = dist[k * n + j];
                    if kj == INF || j == k || j == i {
                        continue;
                    }
                    if through + kj < dist[i * n + j] {
                        dist[i * n + j] = through + kj;
                        via[i * n + j] = k as u32;
                    }
                }
            }
        }
        HubGraph {
            hubs,
            index,
            home,
            toll,
            dist,
            via,
            direct,
        }
    }

    /// Those of `links` the solved graph uses: a link some path of hubs
    /// is cheaper than (or as cheap as, through another hub) changes no
    /// cost, so a region publishes only the others. Solving again over
    /// just these gives the same costs.
    pub fn useful_links(&self, links: &[HubLink]) -> Vec<HubLink> {
        let n = self.hubs.len();
        links
            .iter()
            .filter(|l| {
                let (Some(&i), Some(&j)) = (self.index.get(&l.from), self.index.get(&l.to)) else {
                    return false;
                };
                let cell = i as usize * n + j as usize;
                self.direct[cell] && self.via[cell] == NONE && l.cost_us == self.dist[cell]
            })
            .copied()
            .collect()
    }

    /// Number of hubs.
    pub fn len(&self) -> usize {
        self.hubs.len()
    }

    /// Whether there is no hub.
    pub fn is_empty(&self) -> bool {
        self.hubs.is_empty()
    }

    /// The hubs, in table order.
    pub fn hubs(&self) -> &[EdgeId] {
        &self.hubs
    }

    pub(super) fn cost(&self, i: usize, j: usize) -> u64 {
        self.dist[i * self.hubs.len() + j]
    }

    /// Appends the path from hub `i` to hub `j` (without `i`) to `out`.
    pub(super) fn append_path(
        &self,
        tables: &[RegionTable],
        i: usize,
        j: usize,
        out: &mut Vec<EdgeId>,
    ) {
        let n = self.hubs.len();
        match self.via[i * n + j] {
            NONE if self.direct[i * n + j] => out.push(self.hubs[j]),
            NONE => {
                let (t, row) = self.home[i];
                if let Some(p) = tables[t as usize].path(row as usize, self.hubs[j]) {
                    out.extend_from_slice(&p[1..]);
                }
            }
            k => {
                self.append_path(tables, i, k as usize, out);
                self.append_path(tables, k as usize, j, out);
            }
        }
    }
}
