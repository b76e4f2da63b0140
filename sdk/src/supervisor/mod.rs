//! The supervisor: one task that owns the connection to the current edge and
//! every piece of channel state, and re-creates that state on each new
//! connection.
//!
//! Life of a connection ("link"): connect (staggered attempts over the
//! candidates), open the control stream, rejoin every channel, then serve:
//! commands from the handles, frames from the edge, a keepalive every
//! `keepalive_interval`, and a liveness deadline `liveness_timeout` after the
//! last byte heard. Whatever ends the link (QUIC close, stream error, bad
//! frame, silence, goaway) leads back to connecting, with the channels kept.
//!
//! Restoring a channel on a new link: `Join` with the stored token; on
//! `Joined`, reconcile members and tracks (events for what changed), publish
//! every track again (new track keys; each publisher follows its own), restore
//! subscriptions, then resend the replay window in sequence order.
//!
//! Messages: the edge answers every `ChatMessage` with either a `MessageAck`
//! or an `Error` with request id 0, in order, so a FIFO of the messages sent
//! on the current link tells which message an error refuses. A refused seq
//! goes to the next message once nothing numbered after it is left (see
//! `replay`), so receivers never wait on a seq nobody sends.
//!
//! This file holds the state and the connection loops; `commands.rs` handles
//! the app's commands and `frames.rs` the edge's frames. Which edge to use
//! (the controller's shortlist, probing, ranking, when to move) is decided in
//! [`crate::nearest`]; the supervisor connects where it says.

mod commands;
mod frames;
mod overlap;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use protocol::framing;
use protocol::pb::{self, client_frame::Kind as CK, server_frame::Kind as SK, ErrorCode};
use protocol::EdgeAddress;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::backoff::BackoffState;
use crate::channel::{now_us, Binding, TrackSlot};
use crate::client::{Cmd, JoinInfo, Reply};
use crate::config::ClientConfig;
use crate::connection::{
    connect_round, Endpoints, Inbound, Link, Liveness, RoundTiming, Shared, Target,
};
use crate::e2ee::{E2eeKeys, KeyRing};
use crate::error::{close_code, describe_close, SdkError};
use crate::events::{Event, Message};
use crate::nearest::{self, Measured, Reprobing};
use crate::reorder::{Incoming, Opening, Outcome, ReorderBuffer};
use crate::replay::{ReplayWindow, Sent};
use crate::roster::Roster;
use crate::stats::bump;
use crate::stats::ConnectTiming;
use crate::tls::EdgeTls;
use crate::watchdog::{Heard, Verdict, Watchdog};

/// A goaway may not park the client for longer than this.
const MAX_GOAWAY_WAIT: Duration = Duration::from_secs(10);
/// How long a clean close waits for queued frames and the close to go out.
const CLOSE_FLUSH: Duration = Duration::from_millis(200);
const CLOSE_DRAIN: Duration = Duration::from_millis(300);

type Opened = (Link, mpsc::UnboundedReceiver<Inbound>);

/// A joined channel, as the supervisor keeps it across links.
struct ChannelState {
    name: String,
    token: String,
    sub_all: bool,
    sub_users: BTreeSet<String>,
    /// Own published tracks, republished on every new link.
    tracks: Vec<Arc<TrackSlot>>,
    window: ReplayWindow,
    permits: Arc<Semaphore>,
    /// Joined on the current link (false while rejoining or disconnected).
    live: bool,
    /// The edge refused a message for lack of the publish right.
    publish_refused: bool,
    /// Other members and their tracks.
    roster: Roster,
    /// End-to-end encryption keys, if the channel was joined with them.
    e2ee: Option<Arc<KeyRing>>,
    /// Random base of this join's message stream (nonces, see `e2ee`).
    msg_base: u64,
}

/// A request awaiting the edge's answer on the current link.
enum Pending {
    Join {
        token: String,
        channel: String,
        subscribe_all: bool,
        e2ee: Option<E2eeKeys>,
        reply: Reply<JoinInfo>,
    },
    Rejoin {
        channel_id: u64,
    },
    Publish {
        channel_id: u64,
        slot: Arc<TrackSlot>,
        reply: Reply<()>,
    },
    Republish {
        channel_id: u64,
        slot: Arc<TrackSlot>,
    },
    Subscribe {
        channel_id: u64,
        user: String,
        reply: Reply<()>,
    },
    Resubscribe {
        channel_id: u64,
        user: String,
    },
    Leave {
        reply: Reply<()>,
    },
    /// Fire-and-forget requests (unpublish, unsubscribe, stray leaves):
    /// their errors are not interesting.
    Ignore,
}

/// Why a link ended.
enum End {
    /// The app closed the client.
    Closed,
    /// Lost: reconnect.
    Lost(String),
    /// Nothing left to do on it (no channel): disconnect until needed.
    Idle,
    /// Move (the edge said goaway and the wait is over, a clearly faster
    /// edge was found, or the edge went silent), keeping the old link until
    /// the channels are restored elsewhere. The text says why.
    Move(Link, String),
}

enum Step {
    Continue,
    End(End),
    Move(String),
}

/// What the reconnect loop produced.
enum Reconnect {
    Linked(Opened),
    Idle,
    Closed,
}

pub(crate) struct Supervisor {
    cfg: ClientConfig,
    quic: EdgeTls,
    endpoints: Endpoints,
    shared: Arc<Shared>,
    channels: HashMap<u64, ChannelState>,
    receivers: HashMap<(u64, String), ReorderBuffer>,
    pending: HashMap<u32, Pending>,
    /// Request ids of recent requests that have no success reply
    /// (unpublish, unsubscribe): an error naming one is not news.
    fired: VecDeque<u32>,
    /// Commands waiting for a link.
    deferred: VecDeque<Cmd>,
    /// Messages sent on the current link and not yet answered, in order.
    outstanding: VecDeque<(u64, u64)>,
    /// Frames queued for the current link.
    out: BytesMut,
    next_rid: u32,
    redirects: Vec<pb::EdgeAddress>,
    /// Index of the configured candidate connected to last.
    current: Option<usize>,
    backoff: BackoffState,
    /// Set from a lost link until every channel is restored on a new one.
    outage: Option<String>,
    /// The edge the last link was lost to by its silence (the watchdog's
    /// verdict, or QUIC's idle timeout), until the rejoins on a new link
    /// name it (`Join.unreachable_edge`): the new edge then sends around
    /// it at once instead of finding it dead itself.
    unreachable_edge: u32,
    /// Rejoins sent on this link and not yet answered.
    restoring: usize,
    restore_deadline: Option<Instant>,
    goaway_at: Option<Instant>,
    /// The old link after a move, kept until the channels are restored and
    /// then while the overlap lasts ([`overlap`]).
    draining: Option<Link>,
    /// When the channels were restored on the new link, while the old one
    /// is still kept.
    overlap_since: Option<Instant>,
    /// The app left its last channel: disconnect once that is done.
    left_last: bool,
    /// The first connection was a handshake race not yet settled by a
    /// measurement ([`nearest::should_settle`]).
    race_unsettled: bool,
    /// The candidates are a controller's shortlist (the config named
    /// none), so a reconnect that fails on all of them asks again.
    shortlisted: bool,
    /// When the controllers were last asked again.
    last_refresh: Option<Instant>,
    /// A fresh shortlist replaced the candidates since the measurements
    /// started: they start again on the new ones.
    candidates_changed: bool,
}

/// A request for a fresh shortlist in flight ([`nearest::fresh_shortlist`]).
type Refresh =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<Vec<EdgeAddress>>> + Send>>;

/// How often a client that cannot reconnect asks the controllers again
/// at most: the first sign of a stale list (an edge's certificate refused
/// for its digest, or a round failed on every candidate) asks at once,
/// later ones no more than this, so a region of clients whose edges are
/// all down does not turn its backoff into a flood of lookups.
const SHORTLIST_REFRESH_EVERY: Duration = Duration::from_secs(5);

impl Supervisor {
    pub fn new(cfg: ClientConfig, shared: Arc<Shared>) -> Result<Self, SdkError> {
        let quic = EdgeTls::new(&cfg.trust, cfg.idle_timeout)?;
        Ok(Supervisor {
            backoff: BackoffState::new(cfg.backoff),
            cfg,
            quic,
            endpoints: Endpoints::default(),
            shared,
            channels: HashMap::new(),
            receivers: HashMap::new(),
            pending: HashMap::new(),
            fired: VecDeque::new(),
            deferred: VecDeque::new(),
            outstanding: VecDeque::new(),
            out: BytesMut::new(),
            next_rid: 0,
            redirects: vec![],
            current: None,
            outage: None,
            unreachable_edge: 0,
            restoring: 0,
            restore_deadline: None,
            goaway_at: None,
            draining: None,
            overlap_since: None,
            left_last: false,
            race_unsettled: false,
            shortlisted: false,
            last_refresh: None,
            candidates_changed: false,
        })
    }

    fn emit(&self, e: Event) {
        self.shared.events.push(e);
    }

    fn rid(&mut self) -> u32 {
        self.next_rid = self.next_rid.wrapping_add(1).max(1);
        self.next_rid
    }

    fn queue(&mut self, kind: CK) {
        // Sizes are checked at the API, so our frames are within the limits.
        if let Err(e) = framing::encode(&pb::ClientFrame { kind: Some(kind) }, &mut self.out) {
            warn!(error = %e, "could not encode a frame; dropped");
        }
    }

    fn request(&mut self, kind: impl FnOnce(u32) -> CK, pending: Pending) {
        let rid = self.rid();
        self.queue(kind(rid));
        self.pending.insert(rid, pending);
    }

    /// Ask the edge to publish `slot` (first time or after a reconnect).
    fn request_publish(&mut self, channel_id: u64, slot: &TrackSlot, pending: Pending) {
        let (name, kind) = (slot.name.clone(), slot.kind as i32);
        self.request(
            |rid| {
                CK::PublishTrack(pb::PublishTrack {
                    request_id: rid,
                    channel_id,
                    name,
                    kind,
                })
            },
            pending,
        );
    }

    /// A request without a success reply.
    fn fire(&mut self, kind: impl FnOnce(u32) -> CK) {
        let rid = self.rid();
        self.queue(kind(rid));
        if self.fired.len() >= 256 {
            self.fired.pop_front();
        }
        self.fired.push_back(rid);
    }

    fn flush(&mut self, link: &Link) {
        if !self.out.is_empty() {
            link.send(self.out.split().freeze());
        }
    }

    fn timing(&self) -> RoundTiming {
        RoundTiming {
            connect_timeout: self.cfg.connect_timeout,
            stagger: self.cfg.connect_stagger,
        }
    }

    // ----- connecting -------------------------------------------------

    /// This round's targets: goaway redirects first, then the candidates
    /// after the current one, then the rest.
    async fn attempts(&mut self) -> Vec<(quinn::Endpoint, Target)> {
        let mut targets: Vec<Target> = vec![];
        for r in std::mem::take(&mut self.redirects) {
            if r.server_name.is_empty() {
                debug!(addr = %r.addr, "goaway redirect without a server name; skipped");
                continue;
            }
            match resolve(&r.addr, self.cfg.connect_timeout).await {
                Some(addr) => {
                    let hashes = protocol::edge_address::hashes_from_pb(&r);
                    let edge = EdgeAddress::new(addr, r.server_name).with_cert_hashes(hashes);
                    targets.push(Target {
                        index: self.cfg.edges.iter().position(|e| *e == edge),
                        edge,
                    })
                }
                None => debug!(addr = %r.addr, "goaway redirect does not resolve; skipped"),
            }
        }
        let n = self.cfg.edges.len();
        let order: Vec<usize> = match self.current {
            Some(i) if i < n => (i + 1..n).chain(0..=i).collect(),
            _ => (0..n).collect(),
        };
        for i in order {
            let e = &self.cfg.edges[i];
            if targets.iter().any(|t| t.edge.addr == e.addr) {
                continue;
            }
            targets.push(Target {
                edge: e.clone(),
                index: Some(i),
            });
        }
        let mut out = vec![];
        for t in targets {
            match self
                .endpoints
                .for_addr(&t.edge.addr, self.cfg.socket.as_ref(), self.cfg.local_ip)
            {
                Ok(ep) => out.push((ep, t)),
                Err(e) => warn!(edge = %t.edge.addr, error = %e, "no endpoint for this address"),
            }
        }
        out
    }

    // ----- choosing the edge -----------------------------------------

    /// Re-rank the candidates on fresh measurements; the edge to move to, if
    /// one is clearly faster than the current one (the first measurement
    /// after a handshake race settles it, on a smaller gain).
    fn reranked(&mut self, measured: Measured, link: &Link) -> Option<pb::EdgeAddress> {
        let current = link.target.edge.addr;
        let settling = std::mem::take(&mut self.race_unsettled);
        let faster = nearest::rerank(
            &mut self.cfg.edges,
            current,
            measured,
            link.conn.rtt(),
            settling,
        );
        self.current = self.cfg.edges.iter().position(|e| e.addr == current);
        faster.map(|e| e.to_pb(None))
    }

    /// The first connection, for `Client::connect`.
    pub async fn connect_first(&mut self) -> Result<(Opened, ConnectTiming), SdkError> {
        let mut timing = ConnectTiming::default();
        self.shortlisted = self.cfg.edges.is_empty();
        nearest::choose_edges(&mut self.cfg, &mut timing).await?;
        let handshakes = Instant::now();
        let mut last = String::new();
        for round in 0..self.cfg.connect_rounds {
            if round > 0 {
                tokio::time::sleep(self.backoff.next_delay()).await;
            }
            let attempts = self.attempts().await;
            let mut round_timing = self.timing();
            if nearest::measures_candidates(&self.cfg) {
                // A race: every candidate's handshake at once, the first
                // to answer wins. Its handshake time is the measurement
                // (one round trip plus the edge's TLS work, alike for all
                // candidates), so nobody waits for probes of the far ones;
                // the re-probe right after corrects a close call.
                round_timing.stagger = Duration::ZERO;
                self.race_unsettled = true;
            }
            match open(
                attempts,
                self.quic.clone(),
                round_timing,
                self.shared.clone(),
            )
            .await
            {
                Ok(opened) => {
                    self.backoff.reset();
                    self.current = opened.0.target.index;
                    self.shared.set_edge(Some(opened.0.target.edge.addr));
                    timing.handshake = handshakes.elapsed();
                    timing.edge_rtt = opened.0.conn.rtt();
                    return Ok((opened, timing));
                }
                Err(e) => last = e,
            }
        }
        Err(SdkError::Connect(last))
    }

    /// Connect again, serving commands meanwhile; jittered backoff between
    /// failed rounds, the first round at once.
    async fn reconnect(&mut self, cmds: &mut mpsc::UnboundedReceiver<Cmd>) -> Reconnect {
        let mut refresh: Option<Refresh> = None;
        let stale_pins = self.quic.stale_pins();
        loop {
            let attempts = self.attempts().await;
            let round = open(
                attempts,
                self.quic.clone(),
                self.timing(),
                self.shared.clone(),
            );
            tokio::pin!(round);
            let result = loop {
                tokio::select! {
                    r = &mut round => break Some(r),
                    // An edge showed a certificate the list does not pin:
                    // ask again now, not once the round has timed out on
                    // every other candidate.
                    _ = stale_pins.notified() => self.refresh_shortlist(&mut refresh),
                    // A fresh list: a new round on it at once.
                    fresh = refreshed(&mut refresh) => if self.adopt_shortlist(fresh) {
                        break None;
                    },
                    cmd = cmds.recv() => if !self.offline(cmd) {
                        return Reconnect::Closed;
                    },
                }
            };
            let Some(result) = result else {
                continue;
            };
            match result {
                Ok(opened) => {
                    self.backoff.reset();
                    self.current = opened.0.target.index;
                    return Reconnect::Linked(opened);
                }
                Err(e) => debug!(error = %e, "reconnect round failed"),
            }
            self.refresh_shortlist(&mut refresh);
            let pause = tokio::time::sleep(self.backoff.next_delay());
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    fresh = refreshed(&mut refresh) => if self.adopt_shortlist(fresh) {
                        break;
                    },
                    cmd = cmds.recv() => if !self.offline(cmd) {
                        return Reconnect::Closed;
                    },
                }
            }
            if !self.has_work() {
                self.outage = None;
                return Reconnect::Idle;
            }
        }
    }

    /// Ask the controllers for a fresh shortlist, unless a request is in
    /// flight, the candidates are the app's own, or the last request was
    /// under [`SHORTLIST_REFRESH_EVERY`] ago.
    fn refresh_shortlist(&mut self, refresh: &mut Option<Refresh>) {
        let due = self
            .last_refresh
            .is_none_or(|at| at.elapsed() >= SHORTLIST_REFRESH_EVERY);
        if refresh.is_none() && self.shortlisted && due {
            self.last_refresh = Some(Instant::now());
            *refresh = Some(Box::pin(nearest::fresh_shortlist(&self.cfg)));
        }
    }

    /// Take a fresh shortlist (if a controller answered) as the
    /// candidates; whether they changed.
    fn adopt_shortlist(&mut self, fresh: Option<Vec<EdgeAddress>>) -> bool {
        let Some(edges) = fresh.filter(|e| *e != self.cfg.edges) else {
            return false;
        };
        info!(
            edges = edges.len(),
            "the controllers gave a fresh shortlist"
        );
        self.cfg.edges = edges;
        self.current = None;
        self.candidates_changed = true;
        true
    }

    /// The edge this client is on, as its channels' `Joined` named it (0
    /// while none has answered).
    fn edge_id(&self) -> u32 {
        self.channels
            .values()
            .map(|ch| ch.roster.my_edge())
            .find(|&e| e != 0)
            .unwrap_or(0)
    }

    fn has_work(&self) -> bool {
        !self.channels.is_empty() || !self.deferred.is_empty()
    }

    // ----- the main loop ----------------------------------------------

    pub async fn run(mut self, first: Opened, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let mut probes = Reprobing::start(&self.cfg, &self.quic);
        let mut next = Some(first);
        loop {
            let (link, inbound) = match next.take() {
                Some(l) => l,
                None => {
                    if !self.has_work() {
                        // Idle: no connection until the app needs one.
                        let cmd = cmds.recv().await;
                        if !self.offline(cmd) {
                            break;
                        }
                        if !self.has_work() {
                            continue;
                        }
                    }
                    match self.reconnect(&mut cmds).await {
                        Reconnect::Linked(l) => {
                            if std::mem::take(&mut self.candidates_changed) {
                                probes = Reprobing::start(&self.cfg, &self.quic);
                            }
                            l
                        }
                        Reconnect::Idle => continue,
                        Reconnect::Closed => break,
                    }
                }
            };
            match self.serve(link, inbound, &mut cmds, &mut probes).await {
                End::Closed => break,
                End::Idle => {
                    self.let_old_link_go("client idle");
                    self.link_down(false);
                }
                End::Lost(reason) => {
                    info!(%reason, "connection to the edge lost");
                    self.let_old_link_go("moved again");
                    self.link_down(false);
                    self.begin_outage(reason);
                }
                End::Move(old, why) => {
                    info!(edge = %old.target.edge.addr, %why, "moving to another edge");
                    self.let_old_link_go("moved again");
                    self.link_down(true);
                    self.draining = Some(old);
                    self.begin_outage(why);
                }
            }
        }
        self.shutdown().await;
    }

    fn begin_outage(&mut self, reason: String) {
        if !self.has_work() {
            // Nothing to restore: stay disconnected until needed.
            self.let_old_link_go("nothing to restore");
            return;
        }
        if self.outage.is_none() {
            self.emit(Event::Reconnecting {
                reason: reason.clone(),
            });
            self.outage = Some(reason);
        }
    }

    async fn serve(
        &mut self,
        mut link: Link,
        mut inbound: mpsc::UnboundedReceiver<Inbound>,
        cmds: &mut mpsc::UnboundedReceiver<Cmd>,
        probes: &mut Reprobing,
    ) -> End {
        self.shared.set_edge(Some(link.target.edge.addr));
        if self.outage.is_some() {
            bump(&self.shared.stats.reconnects, 1);
        }
        debug!(edge = %link.target.edge.addr, "connected");
        self.out.clear();
        self.left_last = false;
        // Restore every channel first, then run what waited for a link.
        let ids: Vec<u64> = self.channels.keys().copied().collect();
        for id in ids {
            let Some(ch) = self.channels.get_mut(&id) else {
                continue;
            };
            ch.live = false;
            let join = pb::Join {
                request_id: 0,
                token: ch.token.clone(),
                subscribe_all: ch.sub_all,
                channel: ch.name.clone(),
                // The new edge tells these edges of us at once (protocol
                // §9.6, "Hints"): the other members' media and ours flow
                // without waiting for the channel's directory homes.
                member_edges: ch.roster.member_edges(),
                unreachable_edge: self.unreachable_edge,
            };
            self.request(
                |rid| {
                    CK::Join(pb::Join {
                        request_id: rid,
                        ..join
                    })
                },
                Pending::Rejoin { channel_id: id },
            );
            self.restoring += 1;
        }
        self.unreachable_edge = 0;
        if self.restoring > 0 {
            self.restore_deadline = Some(Instant::now() + self.cfg.request_timeout);
        } else {
            self.restored();
        }
        while let Some(cmd) = self.deferred.pop_front() {
            self.command(cmd, Some(&link));
        }
        self.flush(&link);

        let conn = link.conn.clone();
        let liveness = link.liveness.clone();
        let mut keepalive = tokio::time::interval(self.cfg.keepalive_interval);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut watchdog = Watchdog::new(self.cfg.liveness_timeout);
        loop {
            let look = watchdog.next_look(liveness.last(), liveness.last_media(), conn.rtt());
            let goaway_at = self.goaway_at;
            let overlap_since = self.overlap_since;
            // On a grid from the restore, so that other branches firing
            // do not push the check back.
            let overlap_check = overlap_since.map_or_else(Instant::now, |since| {
                let n = since.elapsed().as_micros() / overlap::CHECK_EVERY.as_micros() + 1;
                since + overlap::CHECK_EVERY * n as u32
            });
            let step = tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None => {
                        self.close_link(&mut link).await;
                        Step::End(End::Closed)
                    }
                    Some(Cmd::Close { reply }) => {
                        self.close_link(&mut link).await;
                        let _ = reply.send(());
                        Step::End(End::Closed)
                    }
                    Some(cmd) => {
                        self.command(cmd, Some(&link));
                        Step::Continue
                    }
                },
                got = inbound.recv() => match got {
                    Some(Inbound::Frame(f)) => match self.frame(f, &link) {
                        Some(end) => Step::End(end),
                        None => Step::Continue,
                    },
                    Some(Inbound::Lost { reason, code }) => Step::End(self.lost(reason, code)),
                    None => Step::End(End::Lost("connection tasks ended".into())),
                },
                e = conn.closed() => {
                    // Frames that arrived before the close still count.
                    while let Ok(Inbound::Frame(f)) = inbound.try_recv() {
                        let _ = self.frame(f, &link);
                    }
                    if matches!(e, quinn::ConnectionError::TimedOut) {
                        self.unreachable_edge = self.edge_id();
                    }
                    Step::End(self.lost(describe_close(&e), close_code(&e)))
                }
                _ = keepalive.tick() => {
                    self.queue(CK::Keepalive(pb::Keepalive { nonce: rand::random() }));
                    watchdog.asked(Instant::now(), &heard(&liveness, &conn));
                    self.poll_reorder();
                    for ch in self.channels.values_mut() {
                        ch.roster.expire_unconfirmed(&self.shared, std::time::Instant::now());
                    }
                    match self.restore_deadline {
                        Some(d) if self.restoring > 0 && Instant::now() >= d => {
                            link.close(0, "rejoin not answered");
                            Step::End(End::Lost("the edge did not answer the rejoin in time".into()))
                        }
                        _ => Step::Continue,
                    }
                }
                _ = tokio::time::sleep_until(look) => {
                    let (now, heard) = (Instant::now(), heard(&liveness, &conn));
                    match watchdog.judge(now, &heard) {
                        Verdict::Alive => Step::Continue,
                        Verdict::Check => {
                            self.queue(CK::Keepalive(pb::Keepalive { nonce: rand::random() }));
                            watchdog.asked(now, &heard);
                            Step::Continue
                        }
                        Verdict::Dead(why) => {
                            self.unreachable_edge = self.edge_id();
                            // Make-before-break all the same: a last mile
                            // whose round trip grew at once (a handover, a
                            // route change) is as silent as a dead edge for
                            // a moment, and what the old link brings late
                            // is kept (docs/protocol.md §4.1).
                            Step::Move(why)
                        }
                    }
                }
                _ = tokio::time::sleep_until(goaway_at.unwrap_or_else(Instant::now)), if goaway_at.is_some() => {
                    Step::Move("the edge is going away".into())
                }
                _ = tokio::time::sleep_until(overlap_check), if overlap_since.is_some() => {
                    if overlap_since.is_some_and(|since| self.overlap_over(&link, since)) {
                        self.let_old_link_go("moved to another edge");
                    }
                    Step::Continue
                }
                measured = probes.latest() => match self.reranked(measured, &link) {
                    Some(faster) => {
                        bump(&self.shared.stats.edge_switches, 1);
                        self.redirects = vec![faster];
                        Step::Move("a clearly faster edge was measured".into())
                    }
                    None => Step::Continue,
                },
            };
            self.flush(&link);
            match step {
                Step::Continue => {}
                Step::End(end) => {
                    // No-op if already closed; otherwise say we are leaving.
                    link.close(0, "reconnecting");
                    return end;
                }
                Step::Move(why) => return End::Move(link, why),
            }
            if self.left_last
                && self.channels.is_empty()
                && self.pending.is_empty()
                && self.deferred.is_empty()
            {
                debug!("no channel left; disconnecting");
                link.shutdown(0, "no channel left", CLOSE_FLUSH).await;
                return End::Idle;
            }
        }
    }

    fn lost(&mut self, reason: String, code: Option<ErrorCode>) -> End {
        if code == Some(ErrorCode::JoinTimeout) && self.channels.is_empty() {
            // The edge drops connections without a channel: fine, we have
            // none; reconnect when the app joins one.
            return End::Idle;
        }
        End::Lost(reason)
    }

    /// Leave every channel and close the connection (code 0).
    async fn close_link(&mut self, link: &mut Link) {
        let ids: Vec<u64> = self.channels.keys().copied().collect();
        for channel_id in ids {
            self.request(
                |rid| {
                    CK::Leave(pb::Leave {
                        request_id: rid,
                        channel_id,
                    })
                },
                Pending::Ignore,
            );
        }
        self.flush(link);
        link.shutdown(0, "client closed", CLOSE_FLUSH).await;
        self.let_old_link_go("client closed");
        self.endpoints.wait_idle(CLOSE_DRAIN).await;
    }

    /// The link is gone: keep the channels, send again what was in flight.
    fn link_down(&mut self, keep_bindings: bool) {
        self.shared.set_edge(None);
        for ch in self.channels.values_mut() {
            ch.live = false;
            ch.window.link_lost();
            if !keep_bindings {
                for slot in &ch.tracks {
                    slot.unbind();
                }
            }
        }
        self.out.clear();
        self.outstanding.clear();
        self.fired.clear();
        self.goaway_at = None;
        self.restoring = 0;
        self.restore_deadline = None;
        // Requests in flight are made again on the next link, in order.
        let mut pending: Vec<(u32, Pending)> = self.pending.drain().collect();
        // Oldest first, also across a wrap of the request ids.
        let base = self.next_rid.wrapping_add(1);
        pending.sort_by_key(|(rid, _)| rid.wrapping_sub(base));
        let mut again = VecDeque::new();
        for (_, p) in pending {
            match p {
                Pending::Join {
                    token,
                    channel,
                    subscribe_all,
                    e2ee,
                    reply,
                } => again.push_back(Cmd::Join {
                    token,
                    channel,
                    subscribe_all,
                    e2ee,
                    reply,
                }),
                Pending::Publish {
                    channel_id,
                    slot,
                    reply,
                } => again.push_back(Cmd::Publish {
                    channel_id,
                    slot,
                    reply,
                }),
                Pending::Subscribe {
                    channel_id,
                    user,
                    reply,
                } => again.push_back(Cmd::Subscribe {
                    channel_id,
                    user,
                    reply,
                }),
                // The connection is gone, and the membership with it.
                Pending::Leave { reply } => {
                    let _ = reply.send(Ok(()));
                }
                Pending::Rejoin { .. }
                | Pending::Republish { .. }
                | Pending::Resubscribe { .. }
                | Pending::Ignore => {}
            }
        }
        again.extend(self.deferred.drain(..));
        self.deferred = again;
    }

    /// Every channel is restored on the current link.
    fn restored(&mut self) {
        self.restore_deadline = None;
        if self.draining.is_some() {
            // Make-before-break: the old link goes when the overlap ends.
            self.overlap_since = Some(Instant::now());
        }
        if self.outage.take().is_some() {
            if let Some(edge) = self.shared.edge() {
                info!(%edge, "reconnected; channels restored");
                self.emit(Event::Reconnected { edge });
            }
        }
    }

    /// Close the link being moved off, if any, and stop sending it media.
    fn let_old_link_go(&mut self, why: &str) {
        self.overlap_since = None;
        if let Some(old) = self.draining.take() {
            debug!(edge = %old.target.edge.addr, why, "old link closed");
            old.close(0, why);
            for ch in self.channels.values() {
                for slot in &ch.tracks {
                    slot.forget_previous();
                }
            }
        }
    }

    /// The overlap after a move is over when every stream that was flowing
    /// arrives over the new link, and the client's own media had time to
    /// reach the receivers' edges by the new one ([`overlap::over`]).
    fn overlap_over(&self, link: &Link, since: Instant) -> bool {
        let now = std::time::Instant::now();
        let publishing = self.channels.values().any(|c| !c.tracks.is_empty());
        let waiting = self
            .shared
            .tracks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|t| {
                t.stream
                    .waits_for(link.liveness.link, now, overlap::STREAM_ACTIVE)
            });
        overlap::over(since.elapsed(), publishing, waiting)
    }

    fn restored_one(&mut self) {
        self.restoring = self.restoring.saturating_sub(1);
        if self.restoring == 0 {
            self.restored();
        }
    }

    async fn shutdown(&mut self) {
        self.shared.set_edge(None);
        self.let_old_link_go("client closed");
        let ids: Vec<u64> = self.channels.keys().copied().collect();
        for id in ids {
            self.remove_channel(id, || Binding::Closed);
        }
        self.pending.clear();
        self.deferred.clear();
        self.shared.events.close();
    }
}

fn chat(channel_id: u64, s: &Sent, to_user: &str) -> pb::ChatMessage {
    pb::ChatMessage {
        channel_id,
        from_user: String::new(),
        seq: s.seq,
        payload: s.payload.to_vec(),
        sent_at_us: s.sent_at_us,
        to_user: to_user.to_string(),
    }
}

/// Connect (one round) and open the control stream.
async fn open(
    attempts: Vec<(quinn::Endpoint, Target)>,
    quic: EdgeTls,
    timing: RoundTiming,
    shared: Arc<Shared>,
) -> Result<Opened, String> {
    let (conn, target) = connect_round(attempts, quic, timing).await?;
    let addr = target.edge.addr;
    Link::open(conn, target, shared)
        .await
        .map_err(|e| format!("{addr}: {e}"))
}

/// What the link heard and sent so far, for the [`Watchdog`].
fn heard(liveness: &Liveness, conn: &quinn::Connection) -> Heard {
    let stats = conn.stats();
    Heard {
        last_byte: liveness.last(),
        last_media: liveness.last_media(),
        udp_rx: stats.udp_rx.datagrams,
        datagrams_tx: stats.frame_tx.datagram,
        rtt: stats.path.rtt,
    }
}

/// Resolve "host:port" (a goaway redirect) to one address.
async fn resolve(addr: &str, limit: Duration) -> Option<SocketAddr> {
    if let Ok(a) = addr.parse() {
        return Some(a);
    }
    let found = tokio::time::timeout(limit, tokio::net::lookup_host(addr))
        .await
        .ok()?
        .ok()?;
    let all: Vec<SocketAddr> = found.collect();
    all.iter().find(|a| a.is_ipv4()).or(all.first()).copied()
}

/// The fresh shortlist once its request ends (and the request is gone);
/// never, while none is in flight.
async fn refreshed(refresh: &mut Option<Refresh>) -> Option<Vec<EdgeAddress>> {
    match refresh {
        Some(f) => {
            let fresh = f.await;
            *refresh = None;
            fresh
        }
        None => std::future::pending().await,
    }
}
