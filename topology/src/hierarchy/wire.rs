//! The published form of a source's local routes: what a region's
//! controller stores for each of its edges.
//!
//! Why this layout: at 10,000 edges the routes of every edge must fit a
//! single etcd cluster (tens of MB, docs/benchmarks.md), and a list of
//! paths (an id per hop, per best and backup path, per destination) takes
//! five times more than needed. Best paths from one source form a tree
//! (`crate::paths` breaks ties by a total order that is consistent with
//! prefixes), and so do backups group by group (the backups of the
//! destinations that share a best first hop `f` are best paths of the graph
//! without `f`, continuing on best paths outside the group), so a parent per
//! node and path holds them all. Node numbers index the region's local node
//! list (its edges and the hubs, by id; [`super::RegionRoutes::local_graph`]),
//! so two bytes each.
//!
//! ```text
//! offset    size  field
//! 0         2     n: nodes in the local list (u16, little-endian, as all)
//! 2         2     source: the source's number
//! 4         2n    best parent of each node (the source: itself; 0xFFFF: unreachable)
//! 4+2n      2n    best cost, in units of 100 µs (saturating at 0xFFFE)
//! 4+4n      2n    backup parent (0xFFFF: no backup)
//! 4+6n      2n    backup cost, as the best cost
//! 4+8n      2     e: exceptions
//!           ...   e times: node (2), kind (1: 0 best, 1 backup), hops + 1 (1),
//!                 the path's node numbers, source first (2 each)
//! ```
//!
//! Decoding walks parents toward the source: a best path follows best
//! parents; the backup path of `v`, whose best path starts with hop `f`,
//! follows backup parents from `v` and from nodes of the same group (other
//! than `f` itself), best parents elsewhere. A path the parents cannot
//! express (routes merged by hysteresis may mix computations) is listed
//! whole as an exception; the encoder checks every path it writes.

use thiserror::Error;

use crate::graph::EdgeId;
use crate::paths::{Path, Route, RouteSet};

/// Cost unit on the wire, in µs.
pub const COST_UNIT_US: u64 = 100;
const NO_NODE: u16 = u16::MAX;
const MAX_COST: u16 = u16::MAX - 1;

/// Why routes could not be encoded or decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    /// More nodes than two bytes number.
    #[error("{0} local nodes: at most 65,535 fit the wire form")]
    TooManyNodes(usize),
    /// A route names an edge missing from the node list.
    #[error("edge {0} is not in the region's node list")]
    UnknownEdge(EdgeId),
    /// The bytes end early or hold a number out of range.
    #[error("malformed routes: {0}")]
    Malformed(&'static str),
}

/// Encodes `routes` over the local node list `nodes` (sorted ids).
pub fn encode(routes: &RouteSet, nodes: &[EdgeId]) -> Result<Vec<u8>, WireError> {
    let n = nodes.len();
    if n >= NO_NODE as usize {
        return Err(WireError::TooManyNodes(n));
    }
    let number = |id: EdgeId| -> Result<u16, WireError> {
        nodes
            .binary_search(&id)
            .map(|i| i as u16)
            .map_err(|_| WireError::UnknownEdge(id))
    };
    let source = number(routes.source())?;
    let mut best_parent = vec![NO_NODE; n];
    let mut best_cost = vec![0u16; n];
    let mut backup_parent = vec![NO_NODE; n];
    let mut backup_cost = vec![0u16; n];
    best_parent[source as usize] = source;
    let parent = |p: &Path| -> Result<u16, WireError> {
        match p.edges.len() {
            0 | 1 => Err(WireError::Malformed("a path of one edge")),
            len => number(p.edges[len - 2]),
        }
    };
    for r in routes.iter() {
        let v = number(r.destination)? as usize;
        best_parent[v] = parent(&r.best)?;
        best_cost[v] = cost_units(r.best.cost_ms);
        if let Some(b) = &r.backup {
            backup_parent[v] = parent(b)?;
            backup_cost[v] = cost_units(b.cost_ms);
        }
    }
    let mut out = Vec::with_capacity(6 + 8 * n);
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&source.to_le_bytes());
    for column in [&best_parent, &best_cost, &backup_parent, &backup_cost] {
        for v in column.iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    // Check every path against what the parents say; list the others.
    let decoded = Trees::read(&out, n).map_err(|_| WireError::Malformed("own output"))?;
    let mut exceptions: Vec<u8> = Vec::new();
    let mut count = 0u16;
    for r in routes.iter() {
        let v = number(r.destination)?;
        let paths = [(0u8, Some(&r.best)), (1u8, r.backup.as_ref())];
        for (kind, path) in paths {
            let Some(path) = path else { continue };
            let walked = if kind == 0 {
                decoded.best(v)
            } else {
                decoded.backup(v)
            };
            let ids: Option<Vec<EdgeId>> =
                walked.map(|p| p.iter().map(|&i| nodes[i as usize]).collect());
            if ids.as_ref() == Some(&path.edges) {
                continue;
            }
            if path.edges.len() > u8::MAX as usize || count == u16::MAX {
                return Err(WireError::Malformed("an exception too long"));
            }
            count += 1;
            exceptions.extend_from_slice(&v.to_le_bytes());
            exceptions.push(kind);
            exceptions.push(path.edges.len() as u8);
            for &id in &path.edges {
                exceptions.extend_from_slice(&number(id)?.to_le_bytes());
            }
        }
    }
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&exceptions);
    Ok(out)
}

/// Decodes routes encoded over `nodes` (costs to the nearest 100 µs, RTTs
/// unknown: zero).
pub fn decode(bytes: &[u8], nodes: &[EdgeId]) -> Result<RouteSet, WireError> {
    let n = nodes.len();
    let trees = Trees::read(bytes, n)?;
    let mut best: Vec<Option<Vec<u16>>> = (0..n as u16).map(|v| trees.best(v)).collect();
    let mut backup: Vec<Option<Vec<u16>>> = (0..n as u16).map(|v| trees.backup(v)).collect();
    let mut at = 4 + 8 * n;
    let count = trees.u16_at(at)?;
    at += 2;
    for _ in 0..count {
        let v = trees.u16_at(at)? as usize;
        let kind = *bytes
            .get(at + 2)
            .ok_or(WireError::Malformed("truncated exception"))?;
        let len = *bytes
            .get(at + 3)
            .ok_or(WireError::Malformed("truncated exception"))? as usize;
        at += 4;
        let path = (0..len)
            .map(|i| trees.u16_at(at + 2 * i).and_then(|x| node_number(x, n)))
            .collect::<Result<Vec<u16>, _>>()?;
        at += 2 * len;
        let slot = match kind {
            0 => best.get_mut(v),
            1 => backup.get_mut(v),
            _ => return Err(WireError::Malformed("exception kind")),
        };
        *slot.ok_or(WireError::Malformed("exception node"))? = Some(path);
    }
    if at != bytes.len() {
        return Err(WireError::Malformed("trailing bytes"));
    }
    let path = |p: &[u16], cost: u16| Path {
        edges: p.iter().map(|&i| nodes[i as usize]).collect(),
        cost_ms: cost as f64 * COST_UNIT_US as f64 / 1000.0,
        rtt_ms: 0.0,
    };
    let routes = (0..n)
        .filter(|&v| v != trees.source as usize)
        .filter_map(|v| {
            let b = best[v].as_ref()?;
            Some(Route {
                destination: nodes[v],
                best: path(b, trees.column(1, v)),
                backup: backup[v].as_ref().map(|k| path(k, trees.column(3, v))),
            })
        })
        .collect();
    Ok(RouteSet::new(nodes[trees.source as usize], routes))
}

fn cost_units(ms: f64) -> u16 {
    let units = (ms * 1000.0 / COST_UNIT_US as f64).round();
    if units >= MAX_COST as f64 {
        MAX_COST
    } else {
        units.max(0.0) as u16
    }
}

fn node_number(x: u16, n: usize) -> Result<u16, WireError> {
    if (x as usize) < n {
        Ok(x)
    } else {
        Err(WireError::Malformed("node number out of range"))
    }
}

/// The four columns, read and checked.
struct Trees<'a> {
    bytes: &'a [u8],
    n: usize,
    source: u16,
    /// First hop of each node's best path (`NO_NODE`: unreachable or the
    /// source).
    first_hop: Vec<u16>,
}

impl<'a> Trees<'a> {
    fn read(bytes: &'a [u8], n: usize) -> Result<Self, WireError> {
        if bytes.len() < 4 + 8 * n {
            return Err(WireError::Malformed("shorter than its columns"));
        }
        let mut t = Trees {
            bytes,
            n,
            source: 0,
            first_hop: Vec::new(),
        };
        if t.u16_at(0)? as usize != n {
            return Err(WireError::Malformed("node count differs from the region's"));
        }
        t.source = node_number(t.u16_at(2)?, n)?;
        for v in 0..n {
            for c in [0, 2] {
                let p = t.column(c, v);
                if p != NO_NODE {
                    node_number(p, n)?;
                }
            }
        }
        t.first_hop = (0..n as u16).map(|v| t.walk_first_hop(v)).collect();
        Ok(t)
    }

    fn u16_at(&self, at: usize) -> Result<u16, WireError> {
        self.bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(WireError::Malformed("truncated"))
    }

    /// Column `c` (0 best parent, 1 best cost, 2 backup parent, 3 backup
    /// cost) of node `v`; in range by `read`'s length check.
    fn column(&self, c: usize, v: usize) -> u16 {
        let at = 4 + 2 * (c * self.n + v);
        u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]])
    }

    fn walk_first_hop(&self, v: u16) -> u16 {
        let mut x = v;
        for _ in 0..self.n {
            let p = self.column(0, x as usize);
            if p == NO_NODE || x == self.source {
                return NO_NODE;
            }
            if p == self.source {
                return x;
            }
            x = p;
        }
        NO_NODE
    }

    /// Walks parents from `v` to the source; `None` if that is no path (a
    /// cycle or a dead end, in bytes not from `encode`).
    fn walk(&self, v: u16, parent: impl Fn(u16) -> u16) -> Option<Vec<u16>> {
        let mut path = vec![v];
        let mut x = v;
        while x != self.source {
            x = parent(x);
            if x == NO_NODE || path.len() > self.n {
                return None;
            }
            path.push(x);
        }
        path.reverse();
        (path.len() > 1).then_some(path)
    }

    fn best(&self, v: u16) -> Option<Vec<u16>> {
        if self.column(0, v as usize) == NO_NODE {
            return None;
        }
        self.walk(v, |x| self.column(0, x as usize))
    }

    fn backup(&self, v: u16) -> Option<Vec<u16>> {
        let f = self.first_hop[v as usize];
        if f == NO_NODE || self.column(2, v as usize) == NO_NODE {
            return None;
        }
        self.walk(v, |x| {
            let in_group = x == v || (self.first_hop[x as usize] == f && x != f);
            self.column(if in_group { 2 } else { 0 }, x as usize)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::CostModel;
    use crate::paths::compute_plain_routes;
    use crate::synth::{generate, SynthParams};

    fn same_paths(a: &RouteSet, b: &RouteSet) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b.iter()) {
            assert_eq!(x.destination, y.destination);
            assert_eq!(x.best.edges, y.best.edges);
            assert!((x.best.cost_ms - y.best.cost_ms).abs() <= 0.05 + 1e-9);
            assert_eq!(
                x.backup.as_ref().map(|p| &p.edges),
                y.backup.as_ref().map(|p| &p.edges)
            );
        }
    }

    #[test]
    fn computed_routes_are_parents_only() {
        let mesh = generate(&SynthParams::probe_mesh(300, 4));
        let graph = mesh.graph(CostModel::default()).expect("valid");
        let nodes: Vec<EdgeId> = graph.nodes().map(|n| n.id).collect();
        for s in [0, 41, 299] {
            let routes = compute_plain_routes(&graph, s).expect("known");
            let bytes = encode(&routes, &nodes).expect("fits");
            assert_eq!(bytes.len(), 6 + 8 * nodes.len(), "no exception needed");
            same_paths(&decode(&bytes, &nodes).expect("valid"), &routes);
        }
    }

    #[test]
    fn paths_parents_cannot_express_are_exceptions() {
        let p = |edges: Vec<EdgeId>| Path {
            edges,
            cost_ms: 10.0,
            rtt_ms: 0.0,
        };
        // 1 -> 3 through 2, but 1 -> 4 through 3 by another way (not 2).
        let routes = RouteSet::new(
            1,
            vec![
                Route {
                    destination: 2,
                    best: p(vec![1, 2]),
                    backup: None,
                },
                Route {
                    destination: 3,
                    best: p(vec![1, 2, 3]),
                    backup: Some(p(vec![1, 5, 3])),
                },
                Route {
                    destination: 4,
                    best: p(vec![1, 5, 3, 4]),
                    backup: None,
                },
                Route {
                    destination: 5,
                    best: p(vec![1, 5]),
                    backup: None,
                },
            ],
        );
        let nodes = [1, 2, 3, 4, 5];
        let bytes = encode(&routes, &nodes).expect("fits");
        assert!(bytes.len() > 6 + 8 * nodes.len());
        same_paths(&decode(&bytes, &nodes).expect("valid"), &routes);
    }

    #[test]
    fn bad_bytes_are_refused_not_trusted() {
        let nodes = [1, 2, 3];
        let routes = RouteSet::new(1, vec![]);
        let bytes = encode(&routes, &nodes).expect("fits");
        assert!(decode(&bytes[..bytes.len() - 1], &nodes).is_err());
        assert!(decode(&bytes, &[1, 2]).is_err());
        let mut cyclic = bytes.clone();
        // Node 1 and 2 each other's parent: no path, not a hang.
        cyclic[6..8].copy_from_slice(&2u16.to_le_bytes());
        cyclic[8..10].copy_from_slice(&1u16.to_le_bytes());
        let decoded = decode(&cyclic, &nodes).expect("well-formed");
        assert!(decoded.is_empty());
        assert_eq!(encode(&routes, &[2, 3]), Err(WireError::UnknownEdge(1)));
    }
}
