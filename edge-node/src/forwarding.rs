//! Forwarding: local fan-out and relaying along source-routed trees.
//!
//! The ingress edge builds, from its own route table, one tree covering every
//! remote edge that needs a packet; each relay follows the subtree it was
//! handed (root must be itself, hop limit must be left). So each overlay link
//! carries a packet once per tree, and no loop can form while tables change.

use std::sync::Arc;

use bytes::Bytes;
use protocol::datagram::{encode_relay, RelayDatagram};
use protocol::limits::INITIAL_HOP_LIMIT;
use protocol::pb::{self, relay_frame::Kind as RK, server_frame::Kind as SK};
use protocol::route_tree::RouteTree;
use protocol::EdgeId;

use crate::channel::{Channel, ChannelState, TreeCache};
use crate::edge::EdgeCore;

impl EdgeCore {
    /// Trees from this edge to `dests`, from the current route table.
    pub fn trees_to(&self, dests: &[EdgeId]) -> Vec<RouteTree> {
        if dests.is_empty() {
            return vec![];
        }
        let table = self.route_table();
        // The table already goes around the dead peers it was made with;
        // this catches the ones seen dead since (it is remade a moment
        // later).
        let is_dead = |e| self.prober.is_dead(e);
        let paths: Vec<Vec<EdgeId>> = dests
            .iter()
            .filter_map(|d| {
                let Some(p) = table.path(self.id, *d) else {
                    self.metrics.unroutable.increment(1);
                    return None;
                };
                let backup = table.backups.get(d).map(Vec::as_slice);
                Some(crate::routes::around_dead(self.id, *d, &p, backup, is_dead).into_owned())
            })
            .collect();
        let refs: Vec<&[EdgeId]> = paths.iter().map(Vec::as_slice).collect();
        RouteTree::build(self.id, &refs)
    }

    fn media_trees(&self, ch: &Channel, st: &ChannelState) -> Arc<Vec<RouteTree>> {
        let route_version = self.routes.borrow().version;
        let mut cache = ch.tree_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.as_ref() {
            if c.route_version == route_version && c.remote_version == st.remote_version {
                return c.trees.clone();
            }
        }
        let trees = Arc::new(self.trees_to(&st.receiving_edges(None)));
        *cache = Some(TreeCache {
            route_version,
            remote_version: st.remote_version,
            trees: trees.clone(),
        });
        trees
    }

    /// A local publisher's media datagram.
    pub fn media_from_client(&self, ch: &Channel, session: u64, user: &str, pkt: Bytes) {
        let trees = {
            let st = ch.read();
            for m in st.local.values() {
                if m.session != session && m.can_subscribe && m.media.wants(user) {
                    m.client.send_media(pkt.clone());
                }
            }
            if st.remote.is_empty() {
                return;
            }
            self.media_trees(ch, &st)
        };
        for t in trees.iter() {
            self.relay_media_children(self.id, INITIAL_HOP_LIMIT.max(t.depth() as u8), t, &pkt);
        }
    }

    /// A relayed media datagram from another edge.
    pub fn media_from_relay(&self, dg: RelayDatagram) {
        let root = dg.tree.root();
        if root.edge != self.id {
            self.metrics.media_dropped("misrouted");
            return;
        }
        if root.deliver {
            if let Some(ch) = self.existing_channel(dg.header.channel) {
                let st = ch.read();
                if let Some(owner) = st.tracks.get(&dg.header.track) {
                    for m in st.local.values() {
                        if m.can_subscribe && m.media.wants(&owner.user) {
                            m.client.send_media(dg.media.clone());
                        }
                    }
                } else {
                    self.metrics.media_dropped("unknown_track");
                }
            }
        }
        if root.children > 0 {
            if dg.hop_limit <= 1 {
                self.metrics.media_dropped("hop_limit");
                return;
            }
            self.relay_media_children(dg.origin, dg.hop_limit - 1, &dg.tree, &dg.media);
        }
    }

    fn relay_media_children(&self, origin: EdgeId, hop_limit: u8, tree: &RouteTree, media: &Bytes) {
        for child in self.live_children(tree, Forwarded::Media) {
            let next = child.root().edge;
            self.relay
                .send_media(self, next, encode_relay(origin, hop_limit, &child, media));
        }
    }

    /// The subtrees to send for `tree` (rooted at this edge): its children,
    /// except that a child this edge's probes see dead is replaced by trees
    /// from this edge's own routes to the destinations beyond it.
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
    /// Media for a destination seen dead is dropped (latency first). A
    /// frame for one is still queued on its link: if it was only cut off,
    /// it gets the frame when the link comes back, in order.
    pub fn live_children(&self, tree: &RouteTree, kind: Forwarded) -> Vec<RouteTree> {
        let mut out = Vec::new();
        for child in tree.children() {
            let next = child.root();
            if !self.prober.is_dead(next.edge) {
                out.push(child);
                continue;
            }
            self.metrics.local_repair(kind.label());
            if kind == Forwarded::Frame && next.deliver {
                out.push(RouteTree::leaf(next.edge));
            }
            let dests: Vec<EdgeId> = child.nodes()[1..]
                .iter()
                .filter(|n| n.deliver)
                .filter(|n| kind == Forwarded::Frame || !self.prober.is_dead(n.edge))
                .map(|n| n.edge)
                .collect();
            for repaired in self.trees_to(&dests) {
                out.extend(repaired.children());
            }
        }
        out
    }

    /// A chat message a local client sent (already checked and acked-to-be).
    pub fn message_from_client(&self, ch: &Channel, session: u64, msg: pb::ChatMessage) {
        let dests = {
            let st = ch.read();
            deliver_message(self, &st, Some(session), &msg);
            let only = (!msg.to_user.is_empty()).then_some(msg.to_user.as_str());
            st.receiving_edges(only)
        };
        self.relay_message(self.id, &dests, &msg);
    }

    /// Send `msg` (from `origin`'s client) to the edges `dests`, along trees
    /// from this edge's current routes.
    pub fn relay_message(&self, origin: EdgeId, dests: &[EdgeId], msg: &pb::ChatMessage) {
        self.relay_message_along(origin, &self.trees_to(dests), msg);
    }

    /// Send `msg` (from `origin`'s client) along `trees`, rooted at this
    /// edge.
    pub fn relay_message_along(&self, origin: EdgeId, trees: &[RouteTree], msg: &pb::ChatMessage) {
        for t in trees {
            let hop = INITIAL_HOP_LIMIT.max(t.depth() as u8) as u32;
            self.send_along(t, |nodes| {
                RK::Message(pb::RelayMessage {
                    origin_edge: origin,
                    hop_limit: hop,
                    tree: nodes,
                    message: Some(msg.clone()),
                })
            });
        }
    }

    pub fn message_from_relay(&self, rm: pb::RelayMessage) {
        let Some(tree) = self.accept_tree(&rm.tree, rm.hop_limit) else {
            return;
        };
        let Some(msg) = rm.message else {
            self.metrics.protocol_error("relay_message_empty");
            return;
        };
        self.metrics.messages_in_relay.increment(1);
        if tree.root().deliver {
            if let Some(ch) = self.existing_channel(protocol::ChannelId(msg.channel_id)) {
                deliver_message(self, &ch.read(), None, &msg);
            }
        }
        self.send_along(&tree, |nodes| {
            RK::Message(pb::RelayMessage {
                origin_edge: rm.origin_edge,
                hop_limit: rm.hop_limit - 1,
                tree: nodes,
                message: Some(msg.clone()),
            })
        });
    }

    /// Check a tree received in a relay frame: valid, rooted here, hops left.
    pub fn accept_tree(&self, nodes: &[pb::RouteNode], hop_limit: u32) -> Option<RouteTree> {
        let Ok(tree) = RouteTree::from_pb(nodes) else {
            self.metrics.protocol_error("bad_route_tree");
            return None;
        };
        if tree.root().edge != self.id {
            self.metrics.protocol_error("misrouted_frame");
            return None;
        }
        if hop_limit == 0 || (tree.root().children > 0 && hop_limit <= 1) {
            self.metrics.protocol_error("hop_limit");
            return None;
        }
        Some(tree)
    }

    /// Send a relay frame to each child of `tree` (rooted at this edge),
    /// each carrying its own subtree.
    pub fn send_along(&self, tree: &RouteTree, make: impl Fn(Vec<pb::RouteNode>) -> RK) {
        for child in self.live_children(tree, Forwarded::Frame) {
            self.relay.send_frame(
                self,
                child.root().edge,
                pb::RelayFrame {
                    kind: Some(make(child.to_pb())),
                },
            );
        }
    }
}

/// What is forwarded: media datagrams or relay frames (messages, directory
/// traffic), which [`EdgeCore::live_children`] treat differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forwarded {
    Media,
    Frame,
}

impl Forwarded {
    fn label(self) -> &'static str {
        match self {
            Forwarded::Media => "media",
            Forwarded::Frame => "frame",
        }
    }
}

fn deliver_message(
    core: &EdgeCore,
    st: &ChannelState,
    exclude: Option<u64>,
    msg: &pb::ChatMessage,
) {
    for m in st.local.values() {
        if Some(m.session) == exclude || !m.can_subscribe {
            continue;
        }
        if !msg.to_user.is_empty() && m.user != msg.to_user {
            continue;
        }
        core.metrics.messages_out_client.increment(1);
        m.client.send_frame(SK::Message(msg.clone()));
    }
}
