//! Route trees: the ones an ingress edge builds from its route table, the
//! checks a relay applies to a tree it receives, the repair of a tree
//! around a hop the relay sees dead, and the copies sent around a hop it
//! suspects (docs/protocol.md §9.2-9.5).
//!
//! The ingress builds one tree covering every remote edge that needs a
//! packet; each relay follows the subtree it was handed (root must be
//! itself, hop limit must be left). So each overlay link carries a packet
//! once per tree, and no loop can form while tables change.

use std::collections::HashSet;
use std::ops::Deref;

use protocol::limits::INITIAL_HOP_LIMIT;
use protocol::route_tree::RouteTree;
use protocol::EdgeId;

use crate::routes::{around_dead, RouteTable};

/// What is forwarded: media datagrams or relay frames (messages, directory
/// traffic), which the checks and the repair treat differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forwarded {
    Media,
    Frame,
}

impl Forwarded {
    pub fn label(self) -> &'static str {
        match self {
            Forwarded::Media => "media",
            Forwarded::Frame => "frame",
        }
    }
}

/// Why a relayed packet, or its forwarding, is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its tree's root is not this edge.
    Misrouted,
    /// It has children to go to and no hop left.
    HopLimit,
}

impl Refused {
    /// The `reason` label it is counted under, for media and frames alike.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Misrouted => "misrouted",
            Refused::HopLimit => "hop_limit",
        }
    }
}

/// What a relay does with a relayed packet that passed the root check.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Hand it to local members (the root has the deliver flag).
    pub deliver: bool,
    /// Send it on to the root's children with this hop limit; `Ok(None)`:
    /// no children; `Err`: children, but no hop left (counted).
    pub forward: Result<Option<u8>, Refused>,
}

/// The hop limit a tree starts with at its ingress: enough for the tree,
/// and some room for repairs on the way.
pub fn initial_hop_limit(tree: &RouteTree) -> u8 {
    INITIAL_HOP_LIMIT.max(tree.depth().min(u8::MAX as usize) as u8)
}

/// The checks of docs/protocol.md §9.4 for a packet that reached `me` with
/// `tree` and `hop_limit`. A frame with no hop left where it needs one is
/// refused whole; a datagram is still delivered, only not forwarded.
pub fn check(
    me: EdgeId,
    tree: &RouteTree,
    hop_limit: u32,
    kind: Forwarded,
) -> Result<Accepted, Refused> {
    let root = tree.root();
    if root.edge != me {
        return Err(Refused::Misrouted);
    }
    let forward = match root.children {
        0 => Ok(None),
        _ if hop_limit <= 1 => Err(Refused::HopLimit),
        _ => Ok(Some((hop_limit - 1).min(u8::MAX as u32) as u8)),
    };
    if kind == Forwarded::Frame && (hop_limit == 0 || forward.is_err()) {
        return Err(Refused::HopLimit);
    }
    Ok(Accepted {
        deliver: root.deliver,
        forward,
    })
}

/// What an edge knows of its peers as next hops (the edge's `Prober`).
pub trait HopView {
    /// Its probes see the peer dead.
    fn is_dead(&self, peer: EdgeId) -> bool;
    /// It suspects the peer (`probe::Silence::Suspect`).
    fn is_suspect(&self, peer: EdgeId) -> bool;
    /// The peer said it is draining (`RelayDraining`).
    fn is_draining(&self, peer: EdgeId) -> bool;
}

impl<V: HopView + ?Sized> HopView for &V {
    fn is_dead(&self, peer: EdgeId) -> bool {
        (**self).is_dead(peer)
    }
    fn is_suspect(&self, peer: EdgeId) -> bool {
        (**self).is_suspect(peer)
    }
    fn is_draining(&self, peer: EdgeId) -> bool {
        (**self).is_draining(peer)
    }
}

/// An edge's view for building and repairing trees: who it is, the route
/// table it forwards by, and what it knows of its next hops.
pub struct Router<T, V> {
    pub me: EdgeId,
    /// The route table, fetched only when a tree is built: a relay that
    /// follows the trees it receives with every child alive (the common
    /// case, per packet) builds none.
    pub table: T,
    pub hops: V,
}

/// Trees to some destinations, and how many had no route.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Trees {
    pub trees: Vec<RouteTree>,
    pub unroutable: usize,
}

/// The subtrees a relay sends a packet on, how many of its children it
/// repaired around, and how many destinations of those had no route.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Children {
    pub subtrees: Vec<RouteTree>,
    pub repaired: usize,
    pub unroutable: usize,
}

impl<T, R, V> Router<T, V>
where
    T: Fn() -> R,
    R: Deref<Target = RouteTable>,
    V: HopView,
{
    /// Trees from this edge to `dests`. The table already goes around the
    /// dead peers it was made with; this also goes around the ones seen dead
    /// since (it is remade a moment later).
    pub fn trees_to(&self, dests: &[EdgeId]) -> Trees {
        self.trees_on(dests, |e| self.hops.is_dead(e), |_| true)
    }

    /// Trees from this edge to `dests` whose first hops are not `avoid`ed
    /// where a backup or the direct link allows, made of the paths `keep`
    /// accepts.
    fn trees_on(
        &self,
        dests: &[EdgeId],
        avoid: impl Fn(EdgeId) -> bool,
        keep: impl Fn(&[EdgeId]) -> bool,
    ) -> Trees {
        let mut out = Trees::default();
        if dests.is_empty() {
            return out;
        }
        let table = (self.table)();
        let paths: Vec<Vec<EdgeId>> = dests
            .iter()
            .filter_map(|d| {
                let Some(p) = table.path(self.me, *d) else {
                    out.unroutable += 1;
                    return None;
                };
                let backup = table.backups.get(d).map(Vec::as_slice);
                Some(around_dead(self.me, *d, &p, backup, &avoid).into_owned())
            })
            .filter(|p| keep(p))
            .collect();
        let refs: Vec<&[EdgeId]> = paths.iter().map(Vec::as_slice).collect();
        out.trees = RouteTree::build(self.me, &refs);
        out
    }

    /// The subtrees to send for `tree` (rooted at this edge): its children,
    /// except that a child this edge sees dead is replaced by trees from
    /// this edge's own routes to the destinations beyond it, and to the
    /// child itself.
    ///
    /// This is how a path survives any dead hop, not only the first: the
    /// edge before the dead one repairs the part of the tree it holds, at
    /// once (its probes see its next hops die within a second, see
    /// `probe::RECENT_TRAFFIC`), where the ingress would wait for the
    /// controller. Its own routes avoid dead first hops (the effective
    /// table); a dead hop further on is repaired by the edge before it in
    /// turn. Loop-free as before: each repair sends strictly new subtrees
    /// down from a live edge, with the packet's hop limit still counting
    /// down, and only destinations of the dead child's subtree, which no
    /// other subtree covers.
    ///
    /// The child itself is reached around too: an edge sees a hop dead when
    /// *its link* to it goes silent, and from here a cut link looks the same
    /// as a dead edge, while the hop's members are still there to be
    /// reached another way. Where this edge has no other way to it (no
    /// backup), media for it is dropped (latency first) and a frame is
    /// queued on its link, resent when the link comes back or when the
    /// controller's paths move. If the hop is really dead, each edge that
    /// sees it dead sends its share on once more, at most until the hop
    /// limit runs out, and only until the directory drops the dead edge
    /// (`directory::ENTRY_TTL`).
    ///
    /// A repair never goes back to `from`, the edge the packet came from:
    /// it sent the packet here on its way around something, so sending it
    /// back would make the two edges pass it to and fro until its hop limit
    /// runs out (as two edges of one city would around a cut to a third
    /// city, each the other's backup).
    ///
    /// A live child is sent as it is, suspect or not (see [`Self::copies`]),
    /// unless it is draining ([`Self::around_draining`]).
    pub fn live_children(
        &self,
        tree: &RouteTree,
        kind: Forwarded,
        from: Option<EdgeId>,
    ) -> Children {
        let mut out = Children::default();
        for child in tree.children() {
            let next = child.root();
            if !self.hops.is_dead(next.edge) {
                if child.len() > 1 && self.hops.is_draining(next.edge) {
                    out.subtrees
                        .extend(self.around_draining(&child, kind, from));
                } else {
                    out.subtrees.push(child);
                }
                continue;
            }
            out.repaired += 1;
            let mut dests = self.destinations_below(&child, kind);
            if next.deliver {
                dests.push(next.edge);
            }
            // Only over live links, and not back to `from` (see above).
            let repairs = self.detour(&dests, |e| self.hops.is_dead(e) || Some(e) == from);
            out.unroutable += repairs.unroutable;
            out.subtrees.extend(repairs.subtrees);
            let reached = repairs.reached;
            // A live destination always has a way (the direct link at
            // worst); the hop itself or a dead one may have none from here.
            // A frame for it waits on its own link, and is resent when the
            // link comes back or the controller's paths move
            // (`relay::resend_when_paths_move`).
            if kind == Forwarded::Frame {
                for d in dests.iter().filter(|d| !reached.contains(d)) {
                    out.subtrees.push(RouteTree::leaf(*d));
                }
            }
        }
        out
    }

    /// `child` rooted at a next hop that said it is draining: it will close
    /// soon, and forwards until then. What it would relay goes around it
    /// from now on, along this edge's own routes that do not take the link
    /// to it or to another draining hop (nor go back to `from`), as around
    /// a dead hop; it keeps its own delivery and the destinations this edge
    /// has no such way to. (A route that meets it further on is the next
    /// edge's to send around.) Make-before-break: what was sent through it
    /// before keeps coming through it while the rest takes the new way, so
    /// its close finds nothing of the streams in flight through it. (Copies
    /// around it, as around a suspect, were measured worse: they double the
    /// traffic, and their duplicates reach the destinations' first-copy
    /// filters; docs/benchmarks.md, "Relay drains, make-before-break".)
    fn around_draining(
        &self,
        child: &RouteTree,
        kind: Forwarded,
        from: Option<EdgeId>,
    ) -> Vec<RouteTree> {
        let hop = child.root().edge;
        let dests = self.destinations_below(child, kind);
        let around = self.detour(&dests, |e| {
            e == hop || self.hops.is_dead(e) || self.hops.is_draining(e) || Some(e) == from
        });
        let mut out = around.subtrees;
        out.extend(child.pruned(|e| e == hop || !around.reached.contains(&e)));
        out
    }

    /// Subtrees (to send from this edge) to `dests` along this edge's own
    /// routes, with paths whose first hop is `avoid`ed replaced by their
    /// backup or the direct link and dropped where that is `avoid`ed too.
    /// Only paths that leave over a link not avoided: the avoided hop's own
    /// path, merged first (it is the shortest), would also pull the other
    /// destinations' paths through the hop.
    fn detour(&self, dests: &[EdgeId], avoid: impl Fn(EdgeId) -> bool) -> Detour {
        let usable = |p: &[EdgeId]| p.get(1).is_some_and(|first| !avoid(*first));
        let trees = self.trees_on(dests, &avoid, usable);
        Detour {
            reached: trees.trees.iter().flat_map(|t| t.destinations()).collect(),
            subtrees: trees.trees.iter().flat_map(RouteTree::children).collect(),
            unroutable: trees.unroutable,
        }
    }

    /// The deliver nodes of `child` below its root: for media, those not
    /// seen dead (latency first); for frames, all of them.
    fn destinations_below(&self, child: &RouteTree, kind: Forwarded) -> Vec<EdgeId> {
        child.nodes()[1..]
            .iter()
            .filter(|n| n.deliver)
            .filter(|n| kind == Forwarded::Frame || !self.hops.is_dead(n.edge))
            .map(|n| n.edge)
            .collect()
    }

    /// The copies of a packet or frame on `tree` (rooted at this edge) to
    /// send besides [`Self::live_children`] (media as `RELAY_MEDIA_COPY`):
    /// for each live child whose next hop is suspect, or whose link from
    /// this edge `is_lossy` (a redundant path for media,
    /// `repair::redundant`), subtrees to the same destinations around it
    /// (none where no such route exists). Of media only an original is
    /// copied.
    pub fn copies(&self, tree: &RouteTree, is_lossy: impl Fn(EdgeId) -> bool) -> Vec<Copies> {
        tree.children()
            .iter()
            .filter(|c| !self.hops.is_dead(c.root().edge))
            .filter_map(|c| {
                let hop = c.root().edge;
                let why = if self.hops.is_suspect(hop) {
                    Around::Suspect
                } else if is_lossy(hop) {
                    Around::Lossy
                } else {
                    return None;
                };
                let subtrees = self.copies_around(c, why);
                (!subtrees.is_empty()).then_some(Copies { hop, why, subtrees })
            })
            .collect()
    }

    /// Subtrees reaching `child`'s live destinations, the hop at its root
    /// included, without what `why` avoids: this edge's own routes with
    /// the hop treated as dead, keeping only the paths that do not take the
    /// link to it, and for a suspect hop do not pass through it either (a
    /// suspect may be dead, or only cut off from this edge: its own members
    /// are reached another way all the same).
    fn copies_around(&self, child: &RouteTree, why: Around) -> Vec<RouteTree> {
        let hop = child.root();
        let mut dests = self.destinations_below(child, Forwarded::Media);
        if hop.deliver {
            dests.push(hop.edge);
        }
        if dests.is_empty() {
            return vec![];
        }
        let keep = |p: &[EdgeId]| {
            let [_, first, ..] = p else {
                return false;
            };
            let relays = &p[1..p.len() - 1];
            *first != hop.edge && (why == Around::Lossy || !relays.contains(&hop.edge))
        };
        let around = self.trees_on(&dests, |e| e == hop.edge || self.hops.is_dead(e), keep);
        around.trees.iter().flat_map(RouteTree::children).collect()
    }
}

/// The subtrees around an avoided next hop ([`Router::detour`]), the
/// destinations they reach, and how many had no route.
struct Detour {
    subtrees: Vec<RouteTree>,
    reached: HashSet<EdgeId>,
    unroutable: usize,
}

/// Why media for the destinations behind a next hop also goes around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Around {
    /// The hop's relay connection went silent (`probe::Silence::Suspect`):
    /// the copies do not pass through it, and reach it too, another way.
    Suspect,
    /// The link to the hop loses more than per-hop repair wins back
    /// (`repair::redundant`): the copies avoid the link, and reach the hop
    /// itself too, another way.
    Lossy,
}

/// The copies around one next hop ([`Router::copies`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Copies {
    pub hop: EdgeId,
    pub why: Around,
    pub subtrees: Vec<RouteTree>,
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap, HashSet};

    use proptest::prelude::*;
    use protocol::route_tree::RouteNode;
    use protocol::EdgeAddress;

    use super::*;

    const ME: EdgeId = 1;

    /// A table with these full paths (`[ME, .., dest]`), every edge on them
    /// a peer.
    fn table(paths: &[&[EdgeId]]) -> RouteTable {
        let mut t = RouteTable {
            version: 1,
            ..Default::default()
        };
        for p in paths {
            for e in &p[1..] {
                let addr = EdgeAddress::new(([127, 0, 0, 1], 4000 + *e as u16).into(), "edge");
                t.peers.insert(*e, addr);
            }
            t.paths.insert(*p.last().unwrap(), p.to_vec());
        }
        t
    }

    /// Peers dead, suspect and draining, by list.
    struct Hops<'a> {
        dead: &'a [EdgeId],
        suspect: &'a [EdgeId],
        draining: &'a [EdgeId],
    }

    impl HopView for Hops<'_> {
        fn is_dead(&self, peer: EdgeId) -> bool {
            self.dead.contains(&peer)
        }
        fn is_suspect(&self, peer: EdgeId) -> bool {
            self.suspect.contains(&peer)
        }
        fn is_draining(&self, peer: EdgeId) -> bool {
            self.draining.contains(&peer)
        }
    }

    /// A router with `t`, seeing `dead` dead.
    fn router<'a>(
        t: &'a RouteTable,
        dead: &'a [EdgeId],
    ) -> Router<impl Fn() -> &'a RouteTable, Hops<'a>> {
        viewing(t, dead, &[], &[])
    }

    /// ... suspecting `suspect` too.
    fn suspecting<'a>(
        t: &'a RouteTable,
        dead: &'a [EdgeId],
        suspect: &'a [EdgeId],
    ) -> Router<impl Fn() -> &'a RouteTable, Hops<'a>> {
        viewing(t, dead, suspect, &[])
    }

    /// ... and told by `draining` that they are draining.
    fn viewing<'a>(
        t: &'a RouteTable,
        dead: &'a [EdgeId],
        suspect: &'a [EdgeId],
        draining: &'a [EdgeId],
    ) -> Router<impl Fn() -> &'a RouteTable, Hops<'a>> {
        Router {
            me: ME,
            table: move || t,
            hops: Hops {
                dead,
                suspect,
                draining,
            },
        }
    }

    /// The copies `r` makes of a packet on `tree` with no lossy link.
    fn copies_of<T, R, V>(r: &Router<T, V>, tree: &RouteTree) -> Vec<RouteTree>
    where
        T: Fn() -> R,
        R: Deref<Target = RouteTable>,
        V: HopView,
    {
        r.copies(tree, |_| false)
            .into_iter()
            .inspect(|c| assert_eq!(c.why, Around::Suspect))
            .flat_map(|c| c.subtrees)
            .collect()
    }

    fn node(edge: EdgeId, deliver: bool, children: u8) -> RouteNode {
        RouteNode {
            edge,
            deliver,
            children,
        }
    }

    fn tree(nodes: &[RouteNode]) -> RouteTree {
        RouteTree::from_nodes(nodes.to_vec()).unwrap()
    }

    /// The deliver nodes of some trees, each once.
    fn covered(trees: &[RouteTree]) -> Vec<EdgeId> {
        let mut d: Vec<EdgeId> = trees.iter().flat_map(|t| t.destinations()).collect();
        d.sort_unstable();
        d
    }

    #[test]
    fn a_relayed_packet_must_be_rooted_here_and_have_hops_left_to_forward() {
        let leaf = tree(&[node(ME, true, 0)]);
        let relay = tree(&[node(ME, true, 1), node(2, true, 0)]);
        let other = tree(&[node(2, true, 0)]);
        for kind in [Forwarded::Media, Forwarded::Frame] {
            assert_eq!(check(ME, &other, 8, kind), Err(Refused::Misrouted));
            let forward = check(ME, &relay, 8, kind).unwrap();
            assert_eq!(
                forward,
                Accepted {
                    deliver: true,
                    forward: Ok(Some(7))
                }
            );
            assert_eq!(check(ME, &leaf, 1, kind).unwrap().forward, Ok(None));
        }
        // Out of hops: a datagram is still delivered here, a frame refused.
        assert_eq!(
            check(ME, &relay, 1, Forwarded::Media),
            Ok(Accepted {
                deliver: true,
                forward: Err(Refused::HopLimit)
            })
        );
        assert_eq!(
            check(ME, &relay, 1, Forwarded::Frame),
            Err(Refused::HopLimit)
        );
        assert_eq!(
            check(ME, &leaf, 0, Forwarded::Frame),
            Err(Refused::HopLimit)
        );
        assert!(check(ME, &leaf, 0, Forwarded::Media).unwrap().deliver);
    }

    #[test]
    fn trees_follow_the_table_and_change_with_it() {
        let before = table(&[&[ME, 2, 3], &[ME, 2, 4], &[ME, 5]]);
        let t = router(&before, &[]).trees_to(&[3, 4, 5, 6]);
        assert_eq!(t.unroutable, 1, "edge 6 has no route and is no peer");
        assert_eq!(t.trees.len(), 1);
        let nodes = t.trees[0].nodes();
        assert_eq!(nodes[0], node(ME, false, 2));
        assert_eq!(covered(&t.trees), [3, 4, 5]);
        assert_eq!(t.trees[0].depth(), 2);
        // Edge 3 is now best reached through 5: the tree moves with the table.
        let after = table(&[&[ME, 5, 3], &[ME, 2, 4], &[ME, 5]]);
        let t = router(&after, &[]).trees_to(&[3, 4, 5]);
        let via_5 = t.trees[0]
            .children()
            .into_iter()
            .find(|c| c.root().edge == 5)
            .unwrap();
        assert_eq!(via_5.nodes(), [node(5, true, 1), node(3, true, 0)]);
        assert_eq!(initial_hop_limit(&t.trees[0]), INITIAL_HOP_LIMIT);
    }

    #[test]
    fn a_first_hop_seen_dead_takes_the_backup_or_the_direct_link() {
        let mut t = table(&[&[ME, 2, 3], &[ME, 2, 4], &[ME, 5]]);
        t.backups.insert(3, vec![ME, 5, 3]);
        t.peers.extend([3, 4].map(|e| (e, t.peers[&2].clone())));
        let trees = router(&t, &[2]).trees_to(&[3, 4]).trees;
        let firsts: BTreeSet<EdgeId> = trees[0].children().iter().map(|c| c.root().edge).collect();
        assert_eq!(firsts, [4, 5].into(), "3 through its backup, 4 direct");
        assert_eq!(covered(&trees), [3, 4]);
    }

    /// The subtree an ingress sent ME: ME -> 2 -> {3, 4 -> 5}, 2, 3 and 5
    /// delivering, 4 too if `four_delivers`.
    fn sent_through_2(four_delivers: bool) -> RouteTree {
        tree(&[
            node(ME, false, 1),
            node(2, true, 2),
            node(3, true, 0),
            node(4, four_delivers, 1),
            node(5, true, 0),
        ])
    }

    #[test]
    fn a_dead_child_is_repaired_from_this_edges_routes() {
        // 2 is dead.
        let sent = sent_through_2(false);
        let own = table(&[&[ME, 3], &[ME, 6, 5], &[ME, 2]]);
        let media = router(&own, &[2]).live_children(&sent, Forwarded::Media, None);
        assert_eq!(media.repaired, 1);
        assert_eq!(
            covered(&media.subtrees),
            [3, 5],
            "the dead edge itself gets no media"
        );
        let frames = router(&own, &[2]).live_children(&sent, Forwarded::Frame, None);
        assert_eq!(
            covered(&frames.subtrees),
            [2, 3, 5],
            "a frame is still queued for it"
        );
        assert!(frames.subtrees.contains(&RouteTree::leaf(2)));
        // With another way to 2 (only the link to it may be cut), its own
        // members get media and frames that way.
        let mut around = own.clone();
        around.backups.insert(2, vec![ME, 6, 2]);
        for kind in [Forwarded::Media, Forwarded::Frame] {
            let out = router(&around, &[2]).live_children(&sent, kind, None);
            assert_eq!(covered(&out.subtrees), [2, 3, 5], "{kind:?}");
            assert!(
                out.subtrees.iter().all(|c| c.root().edge != 2),
                "{kind:?}: nothing left on the dead link"
            );
        }
        // Alive, the child is sent as it is.
        let alive = router(&own, &[]).live_children(&sent, Forwarded::Media, None);
        assert_eq!(alive.subtrees, sent.children());
        assert_eq!(alive.repaired, 0);
    }

    #[test]
    fn what_a_draining_hop_would_relay_goes_around_it_and_the_rest_stays() {
        // 2 (a destination too) is draining. ME's own routes: 3 directly,
        // 5 through 6, 4 through 2 (so directly around it, as a dead hop's).
        let sent = sent_through_2(true);
        let own = table(&[&[ME, 3], &[ME, 6, 5], &[ME, 2, 4], &[ME, 2]]);
        let r = viewing(&own, &[], &[], &[2]);
        for kind in [Forwarded::Media, Forwarded::Frame] {
            let out = r.live_children(&sent, kind, None);
            assert_eq!(covered(&out.subtrees), [2, 3, 4, 5], "{kind:?}: each once");
            let through_2: Vec<_> = out.subtrees.iter().filter(|c| c.root().edge == 2).collect();
            assert_eq!(
                through_2,
                [&RouteTree::leaf(2)],
                "{kind:?}: 2 keeps its own members only"
            );
            assert_eq!(out.repaired, 0);
        }
        // What has no way around but back where the packet came from stays
        // with the draining hop, which forwards until it closes.
        let out = r.live_children(&sent, Forwarded::Media, Some(3));
        assert_eq!(covered(&out.subtrees), [2, 3, 4, 5]);
        let through_2 = out.subtrees.iter().find(|c| c.root().edge == 2).unwrap();
        assert_eq!(through_2.destinations().collect::<Vec<_>>(), [2, 3]);
        // A draining hop with nothing to relay is sent as it is.
        let leaf = tree(&[node(ME, false, 1), node(2, true, 0)]);
        assert_eq!(
            r.live_children(&leaf, Forwarded::Media, None).subtrees,
            leaf.children()
        );
    }

    #[test]
    fn a_repair_does_not_go_back_where_the_packet_came_from() {
        // Edges 1 (ME) and 2 in one city, 3 in another: the cut between the
        // cities kills 1 -> 3 and 2 -> 3, and each edge's backup to 3 is
        // through the other. Edge 2 sent ME the packet around its own dead
        // link to 3 (tree ME -> 3).
        let sent = tree(&[node(ME, false, 1), node(3, true, 0)]);
        let mut own = table(&[&[ME, 3], &[ME, 2]]);
        own.backups.insert(3, vec![ME, 2, 3]);
        let r = router(&own, &[3]);
        let media = r.live_children(&sent, Forwarded::Media, Some(2));
        assert!(media.subtrees.is_empty(), "not back to 2: {media:?}");
        let frames = r.live_children(&sent, Forwarded::Frame, Some(2));
        assert_eq!(
            frames.subtrees,
            [RouteTree::leaf(3)],
            "a frame waits on the dead link (resent when a way opens)"
        );
        // From anywhere else, the backup through 2 is taken.
        let media = r.live_children(&sent, Forwarded::Media, Some(4));
        assert_eq!(media.subtrees[0].root().edge, 2);
    }

    #[test]
    fn media_behind_a_suspect_hop_is_also_sent_around_it() {
        // The ingress sent ME the subtree ME -> 2 -> {3, 4 -> 5}; 2 is
        // suspect, and 4 is dead.
        let sent = tree(&[
            node(ME, false, 1),
            node(2, true, 2),
            node(3, true, 0),
            node(4, true, 1),
            node(5, true, 0),
        ]);
        // ME's own routes: 3 through 2 (backup through 6), 5 direct.
        let mut own = table(&[&[ME, 2, 3], &[ME, 5], &[ME, 2]]);
        own.backups.insert(3, vec![ME, 6, 3]);
        own.peers.insert(6, own.peers[&2].clone());
        let r = suspecting(&own, &[4], &[2]);
        let media = r.live_children(&sent, Forwarded::Media, None);
        let copies = copies_of(&r, &sent);
        assert_eq!(media.subtrees, sent.children(), "the original still goes");
        assert_eq!(media.repaired, 0);
        assert_eq!(
            covered(&copies),
            [3, 5],
            "copies to every live destination (no other way to the suspect)"
        );
        for c in &copies {
            assert!(
                c.nodes().iter().all(|n| n.edge != 2),
                "a copy avoids the suspect hop: {c:?}"
            );
        }
        // With another way to the suspect itself (it may be alive, only cut
        // off from here), its members get copies too, not through it.
        let mut to_itself = own.clone();
        to_itself.backups.insert(2, vec![ME, 6, 2]);
        let copies = copies_of(&suspecting(&to_itself, &[4], &[2]), &sent);
        assert_eq!(covered(&copies), [2, 3, 5]);
        for c in &copies {
            assert_ne!(c.root().edge, 2, "a copy on the suspect's link: {c:?}");
            assert!(
                c.nodes().iter().all(|n| n.edge != 2 || n.children == 0),
                "a copy relayed by the suspect: {c:?}"
            );
        }
        // Frames are never copied (copies are asked for media only), and
        // nothing is without a suspect.
        assert!(copies_of(&router(&own, &[]), &sent).is_empty());
        // Nothing to copy when the suspect is the only destination.
        let to_2 = tree(&[node(ME, false, 1), node(2, true, 0)]);
        assert!(copies_of(&suspecting(&own, &[], &[2]), &to_2).is_empty());
        // A dead hop is repaired, not copied.
        let both = suspecting(&own, &[2], &[2]);
        let dead = both.live_children(&sent, Forwarded::Media, None);
        assert_eq!((dead.repaired, copies_of(&both, &sent).len()), (1, 0));
    }

    #[test]
    fn media_over_a_lossy_link_also_goes_around_the_link_to_the_hop_itself() {
        // ME -> 2 -> {3}, 2 a destination too; the link ME -> 2 is lossy.
        let sent = tree(&[node(ME, false, 1), node(2, true, 1), node(3, true, 0)]);
        // Backups: 2 through 6, 3 through 6 -> 2 (the lossy link avoided,
        // not the hop).
        let mut own = table(&[&[ME, 2, 3], &[ME, 2]]);
        own.backups.insert(2, vec![ME, 6, 2]);
        own.backups.insert(3, vec![ME, 6, 2, 3]);
        own.peers.insert(6, own.peers[&2].clone());
        let r = router(&own, &[]);
        let out = r.copies(&sent, |e| e == 2);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].hop, out[0].why), (2, Around::Lossy));
        assert_eq!(
            covered(&out[0].subtrees),
            [2, 3],
            "the hop itself is reached another way"
        );
        for c in &out[0].subtrees {
            assert_ne!(c.root().edge, 2, "a copy avoids the lossy link: {c:?}");
        }
        // No link is lossy: nothing is copied. A suspect hop is not passed
        // through, which leaves a way to 2 itself here but none to 3.
        assert!(r.copies(&sent, |_| false).is_empty());
        let out = suspecting(&own, &[], &[2]).copies(&sent, |_| true);
        assert_eq!(covered(&out[0].subtrees), [2]);
        // No backups: 3 directly (the fallback around a dead hop too), and
        // 2 itself no other way.
        let direct_only = table(&[&[ME, 2, 3], &[ME, 2]]);
        let out = router(&direct_only, &[]).copies(&sent, |e| e == 2);
        assert_eq!(covered(&out[0].subtrees), [3]);
    }

    /// A random mesh's table: for each destination a loop-free path through
    /// some of the others.
    fn mesh() -> impl Strategy<Value = (RouteTable, Vec<EdgeId>, Vec<EdgeId>)> {
        (3u32..12)
            .prop_flat_map(|n| {
                let edges: Vec<EdgeId> = (2..=n + 1).collect();
                let paths = proptest::collection::vec(
                    proptest::sample::subsequence(edges.clone(), 0..3).prop_shuffle(),
                    edges.len(),
                );
                let dead = proptest::sample::subsequence(edges.clone(), 0..3);
                (Just(edges), paths, dead)
            })
            .prop_map(|(edges, vias, dead)| {
                let mut paths: HashMap<EdgeId, Vec<EdgeId>> = HashMap::new();
                for (dest, via) in edges.iter().zip(vias) {
                    let mut p = vec![ME];
                    p.extend(via.into_iter().filter(|e| e != dest));
                    p.push(*dest);
                    paths.insert(*dest, p);
                }
                let refs: Vec<&[EdgeId]> = paths.values().map(Vec::as_slice).collect();
                (table(&refs), edges, dead)
            })
    }

    proptest! {
        /// Every routable destination is covered exactly once, every tree is
        /// rooted here with each edge once (loop-free), and a repair around
        /// dead edges still covers every live destination of the tree once.
        #[test]
        fn trees_cover_each_destination_once_and_repairs_lose_none(
            (table, edges, dead) in mesh(),
        ) {
            let built = router(&table, &[]).trees_to(&edges);
            prop_assert_eq!(built.unroutable, 0);
            prop_assert_eq!(covered(&built.trees), edges.clone());
            for t in &built.trees {
                prop_assert_eq!(t.root(), node(ME, false, t.root().children));
                let unique: HashSet<EdgeId> = t.nodes().iter().map(|n| n.edge).collect();
                prop_assert_eq!(unique.len(), t.len());
            }
            let r = router(&table, &dead);
            let mut media = Vec::new();
            for t in &built.trees {
                media.extend(r.live_children(t, Forwarded::Media, None).subtrees);
            }
            let live: Vec<EdgeId> = edges.iter().copied().filter(|e| !dead.contains(e)).collect();
            let reached = covered(&media);
            for e in &live {
                prop_assert_eq!(reached.iter().filter(|d| *d == e).count(), 1, "edge {} once", e);
            }
            for t in &media {
                prop_assert!(!dead.contains(&t.root().edge), "no media sent into a dead edge");
            }
            // The same edges suspect instead of dead: the originals go as
            // they are, and each suspect's copies do not pass through it and
            // reach only destinations behind it (itself included), each
            // once.
            for s in &dead {
                let r = suspecting(&table, &[], std::slice::from_ref(s));
                for t in &built.trees {
                    let out = r.live_children(t, Forwarded::Media, None);
                    prop_assert_eq!(&out.subtrees, &t.children());
                    let copies = copies_of(&r, t);
                    let behind: Vec<EdgeId> = t
                        .children()
                        .iter()
                        .filter(|c| c.root().edge == *s)
                        .flat_map(|c| c.destinations())
                        .collect();
                    let copied = covered(&copies);
                    for c in &copies {
                        prop_assert!(c.root().edge != *s, "a copy on the link to suspect {}", s);
                        prop_assert!(
                            c.nodes().iter().all(|n| n.edge != *s || n.children == 0),
                            "a copy relayed by suspect {}", s
                        );
                    }
                    for d in &copied {
                        prop_assert!(behind.contains(d), "copy to {} not behind suspect {}", d, s);
                        prop_assert_eq!(copied.iter().filter(|x| *x == d).count(), 1);
                    }
                }
            }
            // The same edges draining instead: every destination still
            // once, and a draining next hop keeps only its own delivery and
            // draining destinations (every other one has a way around: the
            // direct link at worst).
            let r = viewing(&table, &[], &[], &dead);
            for t in &built.trees {
                let out = r.live_children(t, Forwarded::Frame, None);
                prop_assert_eq!(covered(&out.subtrees), covered(&t.children()));
                for c in out.subtrees.iter().filter(|c| dead.contains(&c.root().edge)) {
                    prop_assert!(c.destinations().all(|d| dead.contains(&d)), "{:?}", c);
                }
            }
            // The same edges' links from here lossy: copies never take the
            // lossy link, and reach only destinations of the child it
            // leads to (the hop itself included), each once.
            for s in &dead {
                for t in &built.trees {
                    let behind: Vec<EdgeId> = t
                        .children()
                        .iter()
                        .filter(|c| c.root().edge == *s)
                        .flat_map(|c| c.destinations())
                        .collect();
                    let out = router(&table, &[]).copies(t, |e| e == *s);
                    let copies: Vec<RouteTree> = out.into_iter().flat_map(|c| c.subtrees).collect();
                    let copied = covered(&copies);
                    for c in &copies {
                        prop_assert!(c.root().edge != *s, "a copy over lossy link to {}", s);
                    }
                    for d in &copied {
                        prop_assert!(behind.contains(d), "copy to {} not behind lossy link to {}", d, s);
                        prop_assert_eq!(copied.iter().filter(|x| *x == d).count(), 1);
                    }
                }
            }
        }
    }
}
