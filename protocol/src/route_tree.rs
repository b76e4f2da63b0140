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
//! Relay frames carry the same nodes as `repeated RouteNode` (protobuf);
//! [`RouteTree::from_pb`] and [`RouteTree::to_pb`] convert, and are the only
//! conversion: edges use them, and the fuzz targets test them.
//!
//! Rules a receiver checks ([`RouteTree::from_nodes`]): 1 to
//! [`MAX_TREE_NODES`] nodes, the child counts describe exactly the nodes
//! present, and no edge id appears twice. A relay also checks that the root is
//! itself before acting on a tree.

use std::collections::HashMap;

use crate::ids::EdgeId;
use crate::limits::MAX_TREE_NODES;
use crate::pb;

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
    #[error("route tree node has a child count of {0}, above the 255 a node can have")]
    TooManyChildren(u32),
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

    /// Validate a tree received in protobuf form (the `tree` of a relay
    /// frame). The node count is checked before anything is allocated; a
    /// child count above 255 cannot describe a valid tree.
    pub fn from_pb(nodes: &[pb::RouteNode]) -> Result<Self, TreeError> {
        if nodes.len() > MAX_TREE_NODES {
            return Err(TreeError::TooLarge(nodes.len()));
        }
        let nodes = nodes
            .iter()
            .map(|n| {
                Ok(RouteNode {
                    edge: n.edge_id,
                    deliver: n.deliver,
                    children: u8::try_from(n.child_count)
                        .map_err(|_| TreeError::TooManyChildren(n.child_count))?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_nodes(nodes)
    }

    /// The protobuf form, for the `tree` of a relay frame.
    pub fn to_pb(&self) -> Vec<pb::RouteNode> {
        self.nodes
            .iter()
            .map(|n| pb::RouteNode {
                edge_id: n.edge,
                deliver: n.deliver,
                child_count: n.children.into(),
            })
            .collect()
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

    /// The one-node tree that delivers at `edge`.
    pub fn leaf(edge: EdgeId) -> RouteTree {
        RouteTree {
            nodes: vec![RouteNode {
                edge,
                deliver: true,
                children: 0,
            }],
        }
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

    /// This tree delivering only where `keep` says: the other deliver flags
    /// cleared and the branches left with nothing to deliver cut off.
    /// `None` when nothing is left to deliver. (A relay that sends part of
    /// a subtree another way hands the rest to its next hop this way.)
    pub fn pruned(&self, keep: impl Fn(EdgeId) -> bool) -> Option<RouteTree> {
        // Recursion as deep as the tree: at most MAX_TREE_NODES, as validated.
        fn walk(
            nodes: &[RouteNode],
            at: usize,
            keep: &impl Fn(EdgeId) -> bool,
            out: &mut Vec<RouteNode>,
        ) -> usize {
            let n = nodes[at];
            let mine = out.len();
            out.push(RouteNode {
                deliver: n.deliver && keep(n.edge),
                children: 0,
                ..n
            });
            let mut next = at + 1;
            for _ in 0..n.children {
                let before = out.len();
                next = walk(nodes, next, keep, out);
                if out.len() > before {
                    out[mine].children += 1;
                }
            }
            if out[mine].children == 0 && !out[mine].deliver {
                out.truncate(mine);
            }
            next
        }
        let mut nodes = Vec::with_capacity(self.nodes.len());
        walk(&self.nodes, 0, &keep, &mut nodes);
        (!nodes.is_empty()).then_some(RouteTree { nodes })
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
            let i = self.push(hop);
            self.children[at].push(i);
            at = i;
        }
        self.deliver[at] = true;
    }

    /// The merged tree as one or more trees rooted at the source, each within
    /// [`MAX_TREE_NODES`] and 255 children per node, delivering to every
    /// destination exactly once.
    fn into_trees(self) -> Vec<RouteTree> {
        self.pieces(0, MAX_TREE_NODES)
            .into_iter()
            .map(|nodes| RouteTree { nodes })
            .collect()
    }

    /// Preorder pieces of the subtree at `at`, each at most `budget` nodes.
    /// Children's pieces are packed under copies of this node; only the first
    /// copy delivers here, so splitting never delivers twice. Only where a
    /// subtree is split does a link carry a packet more than once.
    fn pieces(&self, at: usize, budget: usize) -> Vec<Vec<RouteNode>> {
        if budget == 0 {
            // Deeper than a frame can describe (> MAX_TREE_NODES hops): no
            // route is that long; drop rather than overflow.
            return vec![];
        }
        let node = |deliver| RouteNode {
            edge: self.edges[at],
            deliver,
            children: 0,
        };
        let mut out = vec![];
        let mut current = vec![node(self.deliver[at])];
        for &c in &self.children[at] {
            for piece in self.pieces(c, budget - 1) {
                if current.len() + piece.len() > budget || current[0].children == u8::MAX {
                    out.push(std::mem::replace(&mut current, vec![node(false)]));
                }
                current[0].children += 1;
                current.extend(piece);
            }
        }
        if current.len() > 1 || current[0].deliver {
            out.push(current);
        }
        out
    }
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
    fn pruning_cuts_branches_left_with_nothing_to_deliver() {
        // 1 -> 2 -> {3 -> 4, 5}; 2 and 4 and 5 deliver.
        let t = tree(&[&[1, 2], &[1, 2, 3, 4], &[1, 2, 5]]);
        let two = &t.children()[0];
        let p = two.pruned(|e| e == 5).unwrap();
        assert_eq!(p.destinations().collect::<Vec<_>>(), [5]);
        assert_eq!(p.len(), 2, "the branch to 4 is gone: {p:?}");
        assert!(!p.root().deliver);
        assert_eq!(two.pruned(|e| e == 4).unwrap().len(), 3);
        assert_eq!(two.pruned(|_| true).as_ref(), Some(two));
        assert_eq!(two.pruned(|_| false), None);
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

    fn pb_node(edge_id: EdgeId, deliver: bool, child_count: u32) -> pb::RouteNode {
        pb::RouteNode {
            edge_id,
            deliver,
            child_count,
        }
    }

    #[test]
    fn protobuf_form_carries_the_same_nodes_in_preorder() {
        let t = tree(&[&[1, 5], &[1, 2, 3], &[1, 2, 4]]);
        let pb = t.to_pb();
        assert_eq!(
            pb,
            vec![
                pb_node(1, false, 2),
                pb_node(5, true, 0),
                pb_node(2, false, 2),
                pb_node(3, true, 0),
                pb_node(4, true, 0),
            ]
        );
        assert_eq!(RouteTree::from_pb(&pb), Ok(t));
    }

    #[test]
    fn malformed_protobuf_trees_are_refused() {
        assert_eq!(RouteTree::from_pb(&[]), Err(TreeError::Empty));
        assert_eq!(
            RouteTree::from_pb(&[pb_node(1, true, 256)]),
            Err(TreeError::TooManyChildren(256))
        );
        assert_eq!(
            RouteTree::from_pb(&[pb_node(1, true, u32::MAX)]),
            Err(TreeError::TooManyChildren(u32::MAX))
        );
        // 256 wraps to 0 in a u8: it must not pass as a leaf.
        assert_eq!(
            RouteTree::from_pb(&[pb_node(1, false, 1), pb_node(2, true, 256)]),
            Err(TreeError::TooManyChildren(256))
        );
        assert_eq!(
            RouteTree::from_pb(&[pb_node(1, true, 1)]),
            Err(TreeError::Inconsistent)
        );
        assert_eq!(
            RouteTree::from_pb(&[pb_node(1, false, 1), pb_node(1, true, 0)]),
            Err(TreeError::Repeated(1))
        );
        let long: Vec<_> = (1..=MAX_TREE_NODES as u32 + 1)
            .map(|e| pb_node(e, true, 1))
            .collect();
        assert_eq!(
            RouteTree::from_pb(&long),
            Err(TreeError::TooLarge(MAX_TREE_NODES + 1))
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

    /// Every destination delivered exactly once across the trees, each tree valid.
    fn deliveries(trees: &[RouteTree]) -> Vec<EdgeId> {
        for t in trees {
            assert!(t.len() <= MAX_TREE_NODES);
            assert!(RouteTree::from_nodes(t.nodes().to_vec()).is_ok());
        }
        let mut d: Vec<EdgeId> = trees.iter().flat_map(|t| t.destinations()).collect();
        d.sort();
        d
    }

    #[test]
    fn deep_branch_splits_and_delivers_once() {
        // One next hop (2), itself a destination, with 100 destinations behind it.
        let mut paths: Vec<Vec<EdgeId>> = (3..103).map(|d| vec![1, 2, d]).collect();
        paths.push(vec![1, 2]);
        paths.push(vec![1]);
        let refs: Vec<&[EdgeId]> = paths.iter().map(|p| p.as_slice()).collect();
        let trees = RouteTree::build(1, &refs);
        let mut want: Vec<EdgeId> = (1..103).collect();
        want.sort();
        assert_eq!(deliveries(&trees), want);
        // Split along the branch: a handful of trees, not one per leaf.
        assert!(trees.len() <= 3, "{} trees", trees.len());
    }

    #[test]
    fn more_than_255_children_are_all_reached() {
        let paths: Vec<Vec<EdgeId>> = (2..302).map(|d| vec![1, d]).collect();
        let refs: Vec<&[EdgeId]> = paths.iter().map(|p| p.as_slice()).collect();
        assert_eq!(
            deliveries(&RouteTree::build(1, &refs)),
            (2..302).collect::<Vec<_>>()
        );
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
                prop_assert_eq!(&RouteTree::from_pb(&t.to_pb()).unwrap(), t);
                prop_assert!(t.depth() < t.len());
            }
        }

        #[test]
        fn large_trees_deliver_each_destination_once(
            raw in proptest::collection::vec((2u32..60, 60u32..400), 1..300)
        ) {
            let paths: Vec<Vec<EdgeId>> = raw.iter().map(|(hop, d)| if hop % 3 == 0 { vec![1, *d] } else { vec![1, *hop, *d] }).collect();
            let refs: Vec<&[EdgeId]> = paths.iter().map(|p| p.as_slice()).collect();
            let mut want: Vec<EdgeId> = paths.iter().map(|p| *p.last().unwrap()).collect();
            want.sort(); want.dedup();
            prop_assert_eq!(deliveries(&RouteTree::build(1, &refs)), want);
        }

        /// Whatever protobuf nodes arrive, a tree is accepted exactly when its
        /// binary form is (the two forms agree on validity), and an accepted
        /// tree converts back to the very nodes it came from.
        #[test]
        fn protobuf_and_binary_forms_agree(
            raw in proptest::collection::vec(
                (1u32..12, any::<bool>(), prop_oneof![8 => 0u32..3, 1 => 250u32..300, 1 => Just(u32::MAX)]),
                0..8,
            ),
            long in any::<bool>(),
        ) {
            // Now and then a list over the node limit, to check it is refused
            // before anything else.
            let mut raw = raw;
            if long {
                raw.extend((0..MAX_TREE_NODES as u32).map(|i| (100 + i, true, 0)));
            }
            let nodes: Vec<pb::RouteNode> =
                raw.iter().map(|&(e, d, c)| pb_node(e, d, c)).collect();
            match RouteTree::from_pb(&nodes) {
                Ok(t) => {
                    prop_assert_eq!(t.to_pb(), nodes);
                    let mut buf = vec![];
                    t.encode_into(&mut buf);
                    prop_assert_eq!(RouteTree::decode(&buf, t.len()), Ok(t));
                }
                Err(TreeError::TooManyChildren(c)) => prop_assert!(c > 255),
                Err(e) => {
                    // Representable in binary: the binary decoder refuses it too,
                    // for the same reason.
                    let mut buf = vec![];
                    for &(edge, deliver, children) in &raw {
                        buf.extend_from_slice(&edge.to_be_bytes());
                        buf.push(deliver as u8);
                        buf.push(children as u8);
                    }
                    if !matches!(e, TreeError::TooLarge(_)) {
                        prop_assert!(raw.iter().all(|n| n.2 <= 255));
                    }
                    prop_assert_eq!(RouteTree::decode(&buf, raw.len()), Err(e));
                }
            }
        }

        /// A pruned tree is valid, keeps its root, and delivers exactly
        /// where the tree did and `keep` says.
        #[test]
        fn pruned_trees_deliver_where_kept(
            raw in proptest::collection::vec(proptest::collection::vec(2u32..20, 0..4), 1..12),
            kept in proptest::collection::btree_set(1u32..20, 0..10),
        ) {
            let paths: Vec<Vec<EdgeId>> = raw.into_iter().map(|p| {
                let mut seen = vec![1];
                for e in p { if !seen.contains(&e) { seen.push(e); } }
                seen
            }).collect();
            let refs: Vec<&[EdgeId]> = paths.iter().map(|p| p.as_slice()).collect();
            for t in RouteTree::build(1, &refs) {
                let mut want: Vec<EdgeId> = t.destinations().filter(|d| kept.contains(d)).collect();
                want.sort();
                match t.pruned(|e| kept.contains(&e)) {
                    None => prop_assert!(want.is_empty()),
                    Some(p) => {
                        prop_assert_eq!(p.root().edge, t.root().edge);
                        let valid = RouteTree::from_nodes(p.nodes().to_vec());
                        prop_assert_eq!(valid.as_ref(), Ok(&p));
                        let mut got: Vec<EdgeId> = p.destinations().collect();
                        got.sort();
                        prop_assert_eq!(got, want);
                        prop_assert!(p.nodes().iter().all(|n| t.nodes().iter().any(|m| m.edge == n.edge)));
                    }
                }
            }
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400), count in 0usize..80) {
            let _ = RouteTree::decode(&data, count);
        }
    }
}
