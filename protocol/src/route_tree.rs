//! Source-routed delivery trees.
//!
//! The ingress edge (where a publisher's packet enters the overlay) decides the
//! whole way a packet takes: it merges its paths to every destination edge into
//! one tree and ships, to each next hop, the subtree rooted at that hop. A
//! relay only follows the tree it was given, so forwarding is loop-free even
//! while controllers disagree or route tables change under it, and each
//! overlay link carries a packet at most once per tree.
//!
//! Wire form (in relay datagrams, and as `repeated RouteNode` in protobuf): the
//! nodes in preorder, each
//!
//! ```text
//! offset size field
//! 0      4    edge_id      u32 big-endian
//! 4      1    flags        bit 0: deliver to this edge's local subscribers;
//!                          bits 1-7 must be zero
//! 5      1    child_count  number of children that follow (in preorder)
//! ```
//!
//! Rules a receiver checks ([`RouteTree::from_nodes`]): 1 to
//! [`MAX_TREE_NODES`] nodes, the child counts describe exactly the nodes
//! present, and no edge id appears twice. A relay also checks that the root is
//! itself before acting on a tree.

use std::collections::HashMap;

use crate::ids::EdgeId;
use crate::limits::MAX_TREE_NODES;

/// Bytes per node in the binary form.
pub const NODE_LEN: usize = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteNode {
    pub edge: EdgeId,
    pub deliver: bool,
    pub children: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TreeError {
    #[error("route tree is empty")]
    Empty,
    #[error("route tree has {0} nodes, more than the limit of {MAX_TREE_NODES}")]
    TooLarge(usize),
    #[error("route tree child counts do not match its nodes")]
    Inconsistent,
    #[error("route tree visits edge {0} twice")]
    Repeated(EdgeId),
    #[error("route tree node has reserved flag bits set")]
    ReservedFlags,
    #[error("route tree is truncated")]
    Truncated,
}

/// A validated tree in preorder. Cheap to slice into subtrees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTree {
    nodes: Vec<RouteNode>,
}

impl RouteTree {
    /// Validate nodes received from the wire (or built locally).
    pub fn from_nodes(nodes: Vec<RouteNode>) -> Result<Self, TreeError> {
        if nodes.is_empty() {
            return Err(TreeError::Empty);
        }
        if nodes.len() > MAX_TREE_NODES {
            return Err(TreeError::TooLarge(nodes.len()));
        }
        if subtree_len(&nodes, 0) != Some(nodes.len()) {
            return Err(TreeError::Inconsistent);
        }
        for (i, n) in nodes.iter().enumerate() {
            if nodes[..i].iter().any(|m| m.edge == n.edge) {
                return Err(TreeError::Repeated(n.edge));
            }
        }
        Ok(RouteTree { nodes })
    }

    /// Parse the binary form: `count` nodes from `buf`.
    pub fn decode(buf: &[u8], count: usize) -> Result<Self, TreeError> {
        if count > MAX_TREE_NODES {
            return Err(TreeError::TooLarge(count));
        }
        if buf.len() < count * NODE_LEN {
            return Err(TreeError::Truncated);
        }
        let mut nodes = Vec::with_capacity(count);
        for chunk in buf[..count * NODE_LEN].chunks_exact(NODE_LEN) {
            let flags = chunk[4];
            if flags & !1 != 0 {
                return Err(TreeError::ReservedFlags);
            }
            nodes.push(RouteNode {
                edge: u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                deliver: flags & 1 == 1,
                children: chunk[5],
            });
        }
        Self::from_nodes(nodes)
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        encode_nodes(&self.nodes, out)
    }

    pub fn nodes(&self) -> &[RouteNode] {
        &self.nodes
    }

    pub fn root(&self) -> RouteNode {
        self.nodes[0]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The subtrees below the root, one per next hop, in order.
    pub fn children(&self) -> Vec<RouteTree> {
        let mut out = Vec::with_capacity(self.nodes[0].children as usize);
        let mut at = 1;
        for _ in 0..self.nodes[0].children {
            // Validated at construction, so the lengths are consistent.
            let len = subtree_len(&self.nodes, at).unwrap_or(0);
            out.push(RouteTree {
                nodes: self.nodes[at..at + len].to_vec(),
            });
            at += len;
        }
        out
    }

    /// Every edge the tree delivers to.
    pub fn destinations(&self) -> impl Iterator<Item = EdgeId> + '_ {
        self.nodes.iter().filter(|n| n.deliver).map(|n| n.edge)
    }

    /// The deepest root-to-leaf path, in hops.
    pub fn depth(&self) -> usize {
        fn walk(nodes: &[RouteNode], at: usize) -> (usize, usize) {
            let mut next = at + 1;
            let mut deepest = 0;
            for _ in 0..nodes[at].children {
                let (d, after) = walk(nodes, next);
                deepest = deepest.max(d + 1);
                next = after;
            }
            (deepest, next)
        }
        walk(&self.nodes, 0).0
    }

    /// Merge the paths from `source` to each destination into trees rooted at
    /// `source`, each within [`MAX_TREE_NODES`].
    ///
    /// `paths` are full paths `[source, hop, ..., destination]`; a path of
    /// just `[source]` delivers locally. Shorter paths are merged first so that
    /// shared prefixes come from the shortest routes. An edge already in the
    /// tree is reused where a later path meets it, which keeps edges unique
    /// (so the tree is loop-free) at the cost of following the earlier path's
    /// prefix to it. Paths that do not start at `source` or repeat an edge are
    /// skipped. If the merged tree is too large it is split into several
    /// trees, grouping whole subtrees of the root; only then can a link carry
    /// a packet more than once.
    pub fn build(source: EdgeId, paths: &[&[EdgeId]]) -> Vec<RouteTree> {
        let mut order: Vec<&[EdgeId]> = paths
            .iter()
            .copied()
            .filter(|p| p.first() == Some(&source) && !has_repeat(p))
            .collect();
        order.sort_by_key(|p| p.len());
        let mut builder = Builder::new(source);
        for p in &order {
            builder.add_path(p);
        }
        builder.into_trees()
    }
}

fn has_repeat(p: &[EdgeId]) -> bool {
    p.iter().enumerate().any(|(i, e)| p[..i].contains(e))
}

/// Length of the subtree starting at `at`, or None if the counts overrun.
fn subtree_len(nodes: &[RouteNode], at: usize) -> Option<usize> {
    // Iterative so a hostile, deep tree cannot exhaust the stack.
    let mut pending: usize = 1;
    let mut i = at;
    while pending > 0 {
        let n = nodes.get(i)?;
        pending = pending - 1 + n.children as usize;
        i += 1;
    }
    Some(i - at)
}

pub fn encode_nodes(nodes: &[RouteNode], out: &mut Vec<u8>) {
    for n in nodes {
        out.extend_from_slice(&n.edge.to_be_bytes());
        out.push(n.deliver as u8);
        out.push(n.children);
    }
}

struct Builder {
    edges: Vec<EdgeId>,
    deliver: Vec<bool>,
    children: Vec<Vec<usize>>,
    index: HashMap<EdgeId, usize>,
}

impl Builder {
    fn new(source: EdgeId) -> Self {
        let mut b = Builder {
            edges: vec![],
            deliver: vec![],
            children: vec![],
            index: HashMap::new(),
        };
        b.push(source);
        b
    }

    fn push(&mut self, edge: EdgeId) -> usize {
        self.edges.push(edge);
        self.deliver.push(false);
        self.children.push(vec![]);
        self.index.insert(edge, self.edges.len() - 1);
        self.edges.len() - 1
    }

    fn add_path(&mut self, path: &[EdgeId]) {
        // Continue from the last edge of the path already in the tree, so no
        // edge is added that the packet would reach for nothing.
        let (start, mut at) = path
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, e)| self.index.get(e).map(|&n| (i, n)))
            .unwrap_or((0, 0));
        for &hop in &path[start + 1..] {
            // u8 child counts: a node with 255 children takes no more.
            if self.children[at].len() >= u8::MAX as usize {
                return;
            }
            let i = self.push(hop);
            self.children[at].push(i);
            at = i;
        }
        self.deliver[at] = true;
    }

    fn preorder(&self, at: usize, out: &mut Vec<RouteNode>) {
        out.push(RouteNode {
            edge: self.edges[at],
            deliver: self.deliver[at],
            children: self.children[at].len() as u8,
        });
        for &c in &self.children[at] {
            self.preorder(c, out);
        }
    }

    fn into_trees(self) -> Vec<RouteTree> {
        let mut all = vec![];
        self.preorder(0, &mut all);
        if all.len() <= MAX_TREE_NODES {
            return vec![RouteTree { nodes: all }];
        }
        // Split: pack whole child subtrees of the root into trees.
        let root = RouteNode {
            edge: self.edges[0],
            deliver: self.deliver[0],
            children: 0,
        };
        let mut trees = vec![];
        let mut current = vec![root];
        for &c in &self.children[0] {
            let mut sub = vec![];
            self.preorder(c, &mut sub);
            if sub.len() + 1 > MAX_TREE_NODES {
                // A single branch too big for one frame: one tree per leaf path.
                for path in leaf_paths(&sub) {
                    let mut nodes = vec![RouteNode {
                        children: 1,
                        deliver: false,
                        ..root
                    }];
                    let last = path.len() - 1;
                    for (i, n) in path.into_iter().enumerate() {
                        nodes.push(RouteNode {
                            children: (i < last) as u8,
                            ..n
                        });
                    }
                    trees.push(RouteTree { nodes });
                }
                continue;
            }
            if current.len() + sub.len() > MAX_TREE_NODES {
                trees.push(RouteTree { nodes: current });
                current = vec![RouteNode {
                    deliver: false,
                    ..root
                }];
            }
            current[0].children += 1;
            current.extend(sub);
        }
        if current.len() > 1 || root.deliver && trees.is_empty() {
            trees.push(RouteTree { nodes: current });
        }
        trees
    }
}

/// Root-to-node paths ending at each delivering node of a preorder subtree.
fn leaf_paths(nodes: &[RouteNode]) -> Vec<Vec<RouteNode>> {
    let mut out = vec![];
    let mut stack: Vec<(RouteNode, u8)> = vec![];
    for n in nodes {
        while let Some((_, left)) = stack.last() {
            if *left == 0 {
                stack.pop();
            } else {
                break;
            }
        }
        if let Some((_, left)) = stack.last_mut() {
            *left -= 1;
        }
        stack.push((*n, n.children));
        if n.deliver {
            out.push(stack.iter().map(|(n, _)| *n).collect());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tree(paths: &[&[EdgeId]]) -> RouteTree {
        let mut t = RouteTree::build(1, paths);
        assert_eq!(t.len(), 1);
        t.pop().unwrap()
    }

    #[test]
    fn shared_prefixes_cross_each_link_once() {
        // 1 -> 2 -> 3 and 1 -> 2 -> 4: link 1-2 appears once.
        let t = tree(&[&[1, 2, 3], &[1, 2, 4], &[1]]);
        let ids: Vec<_> = t.nodes().iter().map(|n| n.edge).collect();
        assert_eq!(ids, vec![1, 2, 3, 4]);
        assert!(t.root().deliver);
        let kids = t.children();
        assert_eq!(kids.len(), 1);
        assert_eq!(kids[0].root().edge, 2);
        assert!(!kids[0].root().deliver);
        assert_eq!(kids[0].children().len(), 2);
        let mut d: Vec<_> = t.destinations().collect();
        d.sort();
        assert_eq!(d, vec![1, 3, 4]);
    }

    #[test]
    fn reconverging_paths_keep_edges_unique() {
        let t = tree(&[&[1, 2, 5], &[1, 3, 5, 6]]);
        let ids: Vec<_> = t.nodes().iter().map(|n| n.edge).collect();
        // 3 is not needed: 5 is already reached through 2.
        assert_eq!(ids, vec![1, 2, 5, 6]);
        assert!(RouteTree::from_nodes(t.nodes().to_vec()).is_ok());
    }

    #[test]
    fn malformed_trees_are_refused() {
        let n = |edge, children| RouteNode {
            edge,
            deliver: true,
            children,
        };
        assert_eq!(RouteTree::from_nodes(vec![]), Err(TreeError::Empty));
        assert_eq!(
            RouteTree::from_nodes(vec![n(1, 1)]),
            Err(TreeError::Inconsistent)
        );
        assert_eq!(
            RouteTree::from_nodes(vec![n(1, 0), n(2, 0)]),
            Err(TreeError::Inconsistent)
        );
        assert_eq!(
            RouteTree::from_nodes(vec![n(1, 1), n(1, 0)]),
            Err(TreeError::Repeated(1))
        );
        assert_eq!(
            RouteTree::decode(&[0, 0, 0, 1, 2, 0], 1),
            Err(TreeError::ReservedFlags)
        );
        assert_eq!(
            RouteTree::decode(&[0, 0, 0, 1], 1),
            Err(TreeError::Truncated)
        );
    }

    #[test]
    fn large_fanout_splits_within_the_limit() {
        let paths: Vec<Vec<EdgeId>> = (2..200).map(|d| vec![1, d]).collect();
        let refs: Vec<&[EdgeId]> = paths.iter().map(|p| p.as_slice()).collect();
        let trees = RouteTree::build(1, &refs);
        assert!(trees.len() > 1);
        let mut dests: Vec<_> = trees.iter().flat_map(|t| t.destinations()).collect();
        dests.sort();
        assert_eq!(dests, (2..200).collect::<Vec<_>>());
        for t in &trees {
            assert!(t.len() <= MAX_TREE_NODES);
            assert!(RouteTree::from_nodes(t.nodes().to_vec()).is_ok());
        }
    }

    #[test]
    fn deep_branch_splits_into_paths() {
        // One next hop with 100 destinations behind it.
        let paths: Vec<Vec<EdgeId>> = (3..103).map(|d| vec![1, 2, d]).collect();
        let refs: Vec<&[EdgeId]> = paths.iter().map(|p| p.as_slice()).collect();
        let trees = RouteTree::build(1, &refs);
        let mut dests: Vec<_> = trees.iter().flat_map(|t| t.destinations()).collect();
        dests.sort();
        assert_eq!(dests, (3..103).collect::<Vec<_>>());
        assert!(trees.iter().all(|t| t.len() <= MAX_TREE_NODES));
    }

    proptest! {
        #[test]
        fn built_trees_are_valid_and_deliver_everywhere(
            raw in proptest::collection::vec(proptest::collection::vec(2u32..40, 0..5), 1..30)
        ) {
            let paths: Vec<Vec<EdgeId>> = raw.into_iter().map(|mut p| {
                p.dedup();
                let mut seen = vec![1];
                for e in p { if !seen.contains(&e) { seen.push(e); } }
                seen
            }).collect();
            let refs: Vec<&[EdgeId]> = paths.iter().map(|p| p.as_slice()).collect();
            let trees = RouteTree::build(1, &refs);
            let mut want: Vec<EdgeId> = paths.iter().map(|p| *p.last().unwrap()).collect();
            want.sort(); want.dedup();
            let mut got: Vec<EdgeId> = trees.iter().flat_map(|t| t.destinations()).collect();
            got.sort(); got.dedup();
            prop_assert_eq!(want, got);
            for t in &trees {
                let mut buf = vec![];
                t.encode_into(&mut buf);
                let back = RouteTree::decode(&buf, t.len()).unwrap();
                prop_assert_eq!(&back, t);
                prop_assert!(t.depth() < t.len());
            }
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400), count in 0usize..80) {
            let _ = RouteTree::decode(&data, count);
        }
    }
}
