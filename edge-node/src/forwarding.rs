//! Forwarding on [`EdgeCore`]: the adapter between the I/O-free decisions in
//! [`crate::forward`] (who gets a packet, which trees, which checks) and the
//! edge's client handles, relay links and metrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use protocol::datagram::{encode_relay, encode_relay_copy, MediaHeader, RelayDatagram};
use protocol::pb::{self, relay_frame::Kind as RK, server_frame::Kind as SK};
use protocol::route_tree::RouteTree;
use protocol::EdgeId;

use crate::channel::{Channel, ChannelState, TreeCache};
use crate::edge::EdgeCore;
use crate::forward::trees::{self, initial_hop_limit, Around, Forwarded, Router};
use crate::probe::Prober;
use crate::routes::RouteTable;

impl EdgeCore {
    /// This edge's router: its current route table (fetched when a tree is
    /// built), its probes' view of who is dead or suspect, and the peers
    /// that said they are draining.
    fn router(&self) -> Router<impl Fn() -> Arc<RouteTable> + '_, &Prober> {
        Router {
            me: self.id,
            table: || self.route_table(),
            hops: &self.prober,
        }
    }

    /// Trees from this edge to `dests`, from the current route table.
    pub fn trees_to(&self, dests: &[EdgeId]) -> Vec<RouteTree> {
        if dests.is_empty() {
            return vec![];
        }
        let out = self.router().trees_to(dests);
        self.metrics.unroutable.increment(out.unroutable as u64);
        out.trees
    }

    /// The subtrees to send `tree` (rooted at this edge, the packet from
    /// edge `from`) on: see [`Router::live_children`].
    pub fn live_children(
        &self,
        tree: &RouteTree,
        kind: Forwarded,
        from: Option<EdgeId>,
    ) -> Vec<RouteTree> {
        let out = self.router().live_children(tree, kind, from);
        for _ in 0..out.repaired {
            self.metrics.local_repair(kind.label());
        }
        self.metrics.unroutable.increment(out.unroutable as u64);
        out.subtrees
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
    pub fn media_from_client(
        &self,
        ch: &Channel,
        session: u64,
        user: &str,
        header: &MediaHeader,
        pkt: Bytes,
    ) {
        let trees = {
            let st = ch.read();
            for client in st.media_recipients(user, Some(session)) {
                client.send_media(header, pkt.clone());
            }
            if !st.has_remote() {
                return;
            }
            self.media_trees(ch, &st)
        };
        for t in trees.iter() {
            let hop_limit = initial_hop_limit(t);
            self.relay_media_children(self.id, None, hop_limit, t, header, &pkt, false);
        }
    }

    /// A relayed media datagram from edge `from`.
    pub fn media_from_relay(&self, dg: RelayDatagram, from: Option<EdgeId>) {
        let accepted = match trees::check(self.id, &dg.tree, dg.hop_limit.into(), Forwarded::Media)
        {
            Ok(a) => a,
            Err(refused) => return self.metrics.media_dropped(refused.label()),
        };
        if accepted.deliver {
            self.deliver_relayed_media(&dg);
        }
        match accepted.forward {
            Ok(Some(hop_limit)) => self.relay_media_children(
                dg.origin, from, hop_limit, &dg.tree, &dg.header, &dg.media, dg.copy,
            ),
            Ok(None) => {}
            Err(refused) => self.metrics.media_dropped(refused.label()),
        }
    }

    fn deliver_relayed_media(&self, dg: &RelayDatagram) {
        if (dg.copy || self.copies_watched.load(Ordering::Relaxed)) && !self.first_copy_of(dg) {
            self.metrics.media_copies_dropped.increment(1);
            return;
        }
        let Some(ch) = self.existing_channel(dg.header.channel) else {
            return;
        };
        if deliver_to_subscribers(&ch.read(), &dg.header, &dg.media) {
            return;
        }
        // Its track's entry has not come yet (repair::early): hold it.
        let mut st = ch.write();
        if !deliver_to_subscribers(&st, &dg.header, &dg.media) {
            let dropped = st.hold_early(dg.header, dg.media.clone(), Instant::now());
            self.count_unknown_track(dropped);
        }
    }

    /// Hand on the held packets of `ch` whose tracks an entry just named.
    pub(crate) fn release_early_media(&self, ch: &Channel) {
        let mut st = ch.write();
        let (released, dropped) = st.release_early(Instant::now());
        self.count_unknown_track(dropped);
        for (header, media) in released {
            deliver_to_subscribers(&st, &header, &media);
        }
    }

    fn count_unknown_track(&self, packets: usize) {
        for _ in 0..packets {
            self.metrics.media_dropped("unknown_track");
        }
    }

    /// Whether `dg` is the first of its copies here ([`FirstCopy`]).
    ///
    /// [`FirstCopy`]: crate::forward::copies::FirstCopy
    fn first_copy_of(&self, dg: &RelayDatagram) -> bool {
        let mut f = self.first_copy.lock().unwrap_or_else(|e| e.into_inner());
        let h = &dg.header;
        let first = f.deliver((h.channel, h.track), h.sequence, dg.copy, Instant::now());
        self.copies_watched
            .store(f.watched() > 0, Ordering::Relaxed);
        first
    }

    /// Send `media` on `tree`'s live children. An original also goes as
    /// copies around suspect next hops and lossy links (`Router::copies`);
    /// a copy (`copy`) is forwarded as a copy and never copied again, so a
    /// hop costs at most one copy of each packet per edge in front of it.
    #[allow(clippy::too_many_arguments)]
    fn relay_media_children(
        &self,
        origin: EdgeId,
        from: Option<EdgeId>,
        hop_limit: u8,
        tree: &RouteTree,
        header: &MediaHeader,
        media: &Bytes,
        copy: bool,
    ) {
        for child in &self.live_children(tree, Forwarded::Media, from) {
            let next = child.root().edge;
            let pkt = if copy {
                encode_relay_copy(origin, hop_limit, child, media)
            } else {
                encode_relay(origin, hop_limit, child, media)
            };
            self.relay.send_media(self, next, header, pkt, copy);
        }
        // Copies are redundancy, as repair is: best-effort forwarding
        // (repair off) sends none.
        if copy
            || !self.cfg.repair.enabled
            || !(self.prober.has_suspects() || self.relay.has_lossy())
        {
            return;
        }
        let kind = header.track.kind();
        for c in self.router().copies(tree, |e| self.relay.is_lossy(e)) {
            let cost = media.len() * c.subtrees.len();
            if c.why == Around::Lossy && !self.relay.copy_around_lossy(c.hop, cost, kind) {
                self.metrics.media_copies_over_budget.increment(1);
                continue;
            }
            for around in &c.subtrees {
                let pkt = encode_relay_copy(origin, hop_limit, around, media);
                self.metrics.media_copies_made.increment(1);
                self.relay
                    .send_media(self, around.root().edge, header, pkt, true);
            }
        }
    }

    /// A chat message a local client sent (already checked and acked-to-be,
    /// `from_user` set from its token).
    pub fn message_from_client(&self, ch: &Channel, msg: pb::ChatMessage) {
        let dests = {
            let st = ch.read();
            self.deliver_message(&st, &msg);
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
            let hop = initial_hop_limit(t) as u32;
            self.send_along(t, None, |nodes| {
                RK::Message(pb::RelayMessage {
                    origin_edge: origin,
                    hop_limit: hop,
                    tree: nodes,
                    message: Some(msg.clone()),
                })
            });
        }
    }

    pub fn message_from_relay(&self, rm: pb::RelayMessage, from: Option<EdgeId>) {
        let Some((tree, deliver, hop_limit)) = self.accept_tree(&rm.tree, rm.hop_limit) else {
            return;
        };
        let Some(msg) = rm.message else {
            self.metrics.protocol_error("relay_message_empty");
            return;
        };
        self.metrics.messages_in_relay.increment(1);
        if deliver {
            if let Some(ch) = self.existing_channel(protocol::ChannelId(msg.channel_id)) {
                self.deliver_message(&ch.read(), &msg);
            }
        }
        self.send_along(&tree, from, |nodes| {
            RK::Message(pb::RelayMessage {
                origin_edge: rm.origin_edge,
                hop_limit,
                tree: nodes,
                message: Some(msg.clone()),
            })
        });
    }

    /// Check a tree received in a relay frame (valid, rooted here, hops
    /// left): the tree, whether to deliver here, and the hop limit its
    /// children get.
    pub fn accept_tree(
        &self,
        nodes: &[pb::RouteNode],
        hop_limit: u32,
    ) -> Option<(RouteTree, bool, u32)> {
        let Ok(tree) = RouteTree::from_pb(nodes) else {
            self.metrics.protocol_error("bad_route_tree");
            return None;
        };
        match trees::check(self.id, &tree, hop_limit, Forwarded::Frame) {
            Ok(a) => {
                let forward = a.forward.ok().flatten().unwrap_or(0);
                Some((tree, a.deliver, forward.into()))
            }
            Err(refused) => {
                self.metrics.protocol_error(refused.label());
                None
            }
        }
    }

    /// Send a relay frame to each child of `tree` (rooted at this edge),
    /// each carrying its own subtree; and, where a child's next hop is
    /// suspect, once more around it (`Router::copies`), as media is. A frame
    /// queued to a hop that turns out dead is resent around it only at the
    /// dead verdict, three round trips later (messages: `relay::resend_around`)
    /// or not at all (directory updates, which wait for the next refresh),
    /// and a rejoined member's greeting (protocol §9.6, "Hints") lost that
    /// way kept its media from the channel for the whole wait. Receivers
    /// take a frame twice without harm: messages by sequence (the SDKs),
    /// directory entries by generation.
    pub fn send_along(
        &self,
        tree: &RouteTree,
        from: Option<EdgeId>,
        make: impl Fn(Vec<pb::RouteNode>) -> RK,
    ) {
        let send = |child: &RouteTree| {
            self.relay.send_frame(
                self,
                child.root().edge,
                pb::RelayFrame {
                    kind: Some(make(child.to_pb())),
                },
            );
        };
        for child in self.live_children(tree, Forwarded::Frame, from) {
            send(&child);
        }
        if !self.prober.has_suspects() {
            return;
        }
        for c in self.router().copies(tree, |_| false) {
            for around in &c.subtrees {
                self.metrics.frame_copies.increment(1);
                send(around);
            }
        }
    }

    fn deliver_message(&self, st: &ChannelState, msg: &pb::ChatMessage) {
        for client in st.message_recipients(msg) {
            self.metrics.messages_out_client.increment(1);
            client.send_frame(SK::Message(msg.clone()));
        }
    }
}

/// Hand a relayed packet to the local members subscribed to its track's
/// owner; false when the track is not known here.
fn deliver_to_subscribers(st: &ChannelState, header: &MediaHeader, media: &Bytes) -> bool {
    let Some(clients) = st.relayed_media_recipients(header.track) else {
        return false;
    };
    for client in clients {
        client.send_media(header, media.clone());
    }
    true
}
