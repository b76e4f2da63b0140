//! Relay links between edges.
//!
//! Each edge dials the next hops its route table names, over the relay ALPN
//! with mutual TLS, and keeps those links up (redialling with backoff). A link
//! carries relay frames on one control stream (opened by the dialer) and
//! media as datagrams; an edge sends only on the links it dialed and reads
//! from every link. Frames queued while a link is down, or not dialled yet,
//! wait (bounded) for it.
//!
//! Messages written to a link whose connection then dies (a partition that
//! outlasts QUIC's idle timeout, a peer killed and restarted) are lost with
//! that connection. So each link keeps the message frames it sent in the
//! last [`RETAIN_IDLE_TIMEOUTS`] idle timeouts of its connection and writes
//! them again, first, on the next connection, however long the link was
//! down (what is sent meanwhile waits in the link's queue). Receivers' SDKs
//! drop what they already had by sequence, and the order per sender is kept
//! (retained frames are older than anything still queued).
//!
//! Media lost on a link is repaired on that link (`repair`, docs/protocol.md
//! §5.1): the reading end tracks each track's sequence per connection and
//! NACKs gaps back on the same connection; the sending end keeps what it
//! sent ([`RelayLink`]'s history) and sends it again while it can still
//! arrive in time, within the link's repair budget.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::datagram::{
    MediaHeader, Nack, Probe, RelayDatagram, TYPE_PROBE, TYPE_PROBE_REPLY, TYPE_RELAY_NACK,
};
use protocol::framing::{FrameError, FrameReader, FrameWriter, StreamError};
use protocol::parity::TYPE_RELAY_PARITY;
use protocol::pb::{self, relay_frame::Kind as RK, ErrorCode};
use protocol::EdgeId;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::edge::EdgeCore;
use crate::media_queue::MediaQueue;
use crate::metrics::PeerCounters;
use crate::routes::RouteTable;
use crate::session::close_quic as close;

/// Media datagrams queued per relay link before the oldest are dropped.
const LINK_MEDIA_QUEUE: usize = 4_096;
/// Relay frames queued per link (messages, directory) while it is slow or down.
const LINK_FRAME_QUEUE: usize = 65_536;
/// Message frames sent on a link are kept for this many relay idle
/// timeouts (`limits.client_idle_timeout_ms`, 10 s by default: 30 s) for a
/// resend on the next connection: longer than a dying connection's last
/// idle timeout plus a redial, so a partition that kills the connection
/// loses nothing sent just before or during it. The time counts while the
/// link is up: what the dying connection took is resent after a partition
/// of any length.
const RETAIN_IDLE_TIMEOUTS: u32 = 3;
/// At most this many retained frames, and bytes, per link.
const RETAIN_MAX: usize = 8_192;
const RETAIN_MAX_BYTES: usize = 8 << 20;
const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Redial at least this often: a partition's heal is noticed within it.
const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A link this edge relayed on lately is kept this long after its last use
/// even when its peer is no next hop of this edge's own routes: it serves
/// other edges' trees through this one.
const LINK_IDLE_KEEP: Duration = Duration::from_secs(30);
/// How often idle on-demand links are looked for.
const LINK_PRUNE_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct RelayLinks {
    links: Mutex<HashMap<EdgeId, Arc<RelayLink>>>,
    /// Peers a relayed tree named as the next hop while this edge had no
    /// link to them (the ingress's routes are not this edge's): dialled by
    /// `watch_routes`, and kept while used.
    wanted: Mutex<HashSet<EdgeId>>,
    wanted_changed: tokio::sync::Notify,
    /// Frames for a wanted peer, held until `watch_routes` gives it a link
    /// (at most [`LINK_FRAME_QUEUE`] per peer). Touched only under `links`'
    /// lock, so a frame is either here or in the new link's queue, in order.
    pending: Mutex<HashMap<EdgeId, VecDeque<pb::RelayFrame>>>,
    /// Whether any link has a redundant path now (set by [`tune_repair`]):
    /// one relaxed load per packet on a mesh without lossy links.
    any_lossy: std::sync::atomic::AtomicBool,
    /// Each peer's start time, from the hellos of its links to this edge.
    starts: Mutex<PeerStarts>,
    /// The peers with a relay connection to this edge now (said hello),
    /// and how many: the edges that may send through this one, told when
    /// it drains ([`RelayLinks::tell_draining`]).
    inbound: Mutex<HashMap<EdgeId, usize>>,
    /// Media datagrams received on relay connections (not probes or
    /// NACKs) since this edge started draining: how it sees its transit
    /// move away. Counted only while draining, so that the per-packet path
    /// of a serving edge does not write one cache line from every thread.
    media_in: std::sync::atomic::AtomicU64,
}

/// How long a draining edge keeps forwarding after telling its peers, at
/// most: see [`RelayLinks::tell_draining`]. A round trip over 475 ms is a
/// broken path, not one to wait for.
const DRAINING_FORWARD_MAX: Duration = Duration::from_secs(1);
/// ... beyond two round trips to the farthest peer told: the notice's
/// handling at both ends, and a loaded machine's scheduling.
const DRAINING_FORWARD_MARGIN: Duration = Duration::from_millis(50);

/// One inbound relay connection's peer, counted in
/// [`RelayLinks::inbound`] while the connection is read.
struct InboundPeer<'a> {
    links: &'a RelayLinks,
    peer: EdgeId,
}

impl Drop for InboundPeer<'_> {
    fn drop(&mut self) {
        let mut inbound = self.links.inbound.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = inbound.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                inbound.remove(&self.peer);
            }
        }
    }
}

/// The start time each peer's hello gave (`RelayHello.started_at_ms`), to
/// tell a restart from a redial.
#[derive(Debug, Default)]
struct PeerStarts(HashMap<EdgeId, u64>);

impl PeerStarts {
    /// Record `peer`'s start time; true when it replaces a different one
    /// (the peer restarted). 0 (a peer before revision 1.4) is never news.
    fn restarted(&mut self, peer: EdgeId, started_at_ms: u64) -> bool {
        if started_at_ms == 0 {
            return false;
        }
        self.0
            .insert(peer, started_at_ms)
            .is_some_and(|before| before != started_at_ms)
    }
}

/// A connection's (packets sent, packets declared lost) so far: the loss
/// of the direction this end sends in, for its audio redundancy.
pub fn quic_loss_counters(conn: &quinn::Connection) -> (u64, u64) {
    let path = conn.stats().path;
    (path.sent_packets, path.lost_packets)
}

/// Milliseconds since the first call, from 1 (0 is "never"): a cheap
/// clock for link use times.
fn clock_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// One relay connection's counters: UDP datagrams received, ack-eliciting
/// frames sent (datagrams: media and probes; stream frames: messages).
pub struct TransportCounts {
    pub peer: EdgeId,
    /// The connection (`stable_id`).
    pub conn: usize,
    pub udp_rx: u64,
    pub sent: u64,
    pub rtt: Duration,
}

pub struct RelayLink {
    peer: EdgeId,
    /// When this edge last sent media or a frame on the link ([`clock_ms`]).
    last_used_ms: std::sync::atomic::AtomicU64,
    frames: FrameQueue,
    conn: RwLock<Option<quinn::Connection>>,
    media: Arc<MediaQueue>,
    /// Ends the link's task (the edge stopping cancels it too).
    stop: CancellationToken,
    /// Media sent to `peer` (rtn_edge_peer_media_*_total{dir="out"}).
    out: PeerCounters,
    /// Message frames sent lately, for a resend after a reconnect (encoded
    /// again then: reconnects are rare, messages are not).
    retained: Mutex<Retained>,
    /// Directory frames written lately, for [`resend_around`].
    directory: Mutex<RecentDirectory>,
    /// Media sent lately, for NACKs from `peer`.
    repair: Mutex<repair::HopSender>,
    /// Parity groups in progress, and their size while the link's loss
    /// calls for parity (0: off; set by [`tune_repair`]).
    fec: Mutex<(repair::fec::FecPolicy, repair::fec::FecEncoder)>,
    fec_group: std::sync::atomic::AtomicUsize,
    /// Whether media sent on the link also goes around it, and what those
    /// copies may still cost (switched by [`tune_repair`]); `lossy` mirrors
    /// whether it is on, read per packet without the lock.
    redundant: Mutex<repair::RedundantPath>,
    lossy: std::sync::atomic::AtomicBool,
}

/// The directory frames (reports and updates, this edge's or relayed)
/// written to a link in the last [`RESEND_WINDOW`], at most
/// [`DIRECTORY_KEPT`]: when the peer goes suspect or dies they are sent
/// around it, as its messages are. A frame handed to a relay that had just
/// died was lost otherwise, and what waited on it with it: measured in the
/// southern lab world, a rejoined member's new edge never got the answer
/// to its greeting that the Chicago edge sent through its neighbour and
/// the killed Sydney, and the member heard that edge's publisher 1.6 s
/// after the kill instead of about 0.8 s. Directory state is soft (merges
/// are idempotent), so it is kept apart from the messages, whose
/// retention is the no-loss promise, and only briefly.
#[derive(Debug, Default)]
struct RecentDirectory(VecDeque<(Instant, pb::RelayFrame)>);

/// Directory frames kept per link: a second of a busy home's pushes.
const DIRECTORY_KEPT: usize = 512;

impl RecentDirectory {
    fn push(&mut self, now: Instant, frame: pb::RelayFrame) {
        self.0.push_back((now, frame));
        while self.0.len() > DIRECTORY_KEPT
            || self
                .0
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > RESEND_WINDOW)
        {
            self.0.pop_front();
        }
    }

    /// The frames written within `window` before `now`, oldest first.
    fn within(&self, now: Instant, window: Duration) -> Vec<pb::RelayFrame> {
        self.0
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= window)
            .map(|(_, f)| f.clone())
            .collect()
    }
}

struct Retained {
    /// How long a frame is kept while the link is up.
    keep: Duration,
    frames: VecDeque<RetainedFrame>,
    bytes: usize,
    /// When the last connection ended: frames do not age while the link is
    /// down (nothing is written to it then), so a partition of any length
    /// resends what the dead connection may have lost.
    ended: Option<Instant>,
}

struct RetainedFrame {
    /// When it was last written to a connection.
    at: Instant,
    /// Its size on the wire, for the byte bound.
    len: usize,
    message: pb::RelayMessage,
}

impl Retained {
    fn new(keep: Duration) -> Self {
        Retained {
            keep,
            frames: VecDeque::new(),
            bytes: 0,
            ended: None,
        }
    }

    /// Forget the oldest frame; false if there was none.
    fn forget_oldest(&mut self) -> bool {
        match self.frames.pop_front() {
            Some(f) => {
                self.bytes -= f.len;
                true
            }
            None => false,
        }
    }

    /// Whether the oldest frame was last written more than `keep` before `t`.
    fn oldest_written_before(&self, t: Instant) -> bool {
        self.frames
            .front()
            .is_some_and(|f| t.saturating_duration_since(f.at) > self.keep)
    }

    /// Keep a frame written at `now`; forget what is too old or too many.
    fn push(&mut self, now: Instant, len: usize, message: pb::RelayMessage) {
        while (self.oldest_written_before(now)
            || self.frames.len() >= RETAIN_MAX
            || self.bytes + len > RETAIN_MAX_BYTES)
            && self.forget_oldest()
        {}
        self.bytes += len;
        self.frames.push_back(RetainedFrame {
            at: now,
            len,
            message,
        });
    }

    /// The frames to write again on a connection made at `now`, oldest
    /// first: those written within `keep` before the last connection
    /// ended. They count as written `now` from then on, so a link that
    /// fails again soon resends them again.
    fn resend(&mut self, now: Instant) -> Vec<pb::RelayMessage> {
        let ended = self.ended.take().unwrap_or(now);
        while self.oldest_written_before(ended) && self.forget_oldest() {}
        self.frames
            .iter_mut()
            .map(|f| {
                f.at = now;
                f.message.clone()
            })
            .collect()
    }
}

/// A link's relay frames waiting to be written (while it is slow or down),
/// at most [`LINK_FRAME_QUEUE`]. A queue both the link's writer and a
/// repair around its dead peer can read (`resend_around` sends copies of
/// the messages still queued when the peer died).
#[derive(Default)]
struct FrameQueue {
    frames: Mutex<VecDeque<pb::RelayFrame>>,
    ready: tokio::sync::Notify,
}

impl FrameQueue {
    /// Queue a frame; false when the queue is full.
    fn push(&self, frame: pb::RelayFrame) -> bool {
        let mut q = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= LINK_FRAME_QUEUE {
            return false;
        }
        q.push_back(frame);
        drop(q);
        self.ready.notify_one();
        true
    }

    fn try_pop(&self) -> Option<pb::RelayFrame> {
        self.frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    /// The next frame, waiting for one.
    async fn pop(&self) -> pb::RelayFrame {
        loop {
            let ready = self.ready.notified();
            if let Some(f) = self.try_pop() {
                return f;
            }
            ready.await;
        }
    }

    /// Copies of the messages queued.
    fn messages(&self) -> Vec<pb::RelayMessage> {
        let q = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        q.iter()
            .filter_map(|f| match &f.kind {
                Some(RK::Message(m)) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }
}

impl RelayLink {
    /// Keep a message frame of `len` bytes on the wire, just written.
    fn retain(&self, len: usize, message: pb::RelayMessage) {
        let mut r = self.retained.lock().unwrap_or_else(|e| e.into_inner());
        r.push(Instant::now(), len, message);
    }

    /// The link's connection ended (the retained frames stop ageing).
    fn connection_ended(&self) {
        let mut r = self.retained.lock().unwrap_or_else(|e| e.into_inner());
        r.ended = Some(Instant::now());
    }

    /// Copies of the messages written to this link in the last `window`
    /// (its peer died: they are sent around it). They stay retained: if the
    /// peer was only cut off, the next connection to it still resends
    /// them (for its own members).
    fn recent(&self, window: Duration) -> Vec<pb::RelayMessage> {
        let now = Instant::now();
        let r = self.retained.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = r
            .frames
            .iter()
            .rev()
            .take_while(|f| now.duration_since(f.at) <= window)
            .count();
        r.frames
            .iter()
            .skip(r.frames.len() - fresh)
            .map(|f| f.message.clone())
            .collect()
    }

    /// The retained frames to write first on a new connection.
    fn retained_frames(&self) -> Vec<pb::RelayFrame> {
        let messages = {
            let mut r = self.retained.lock().unwrap_or_else(|e| e.into_inner());
            r.resend(Instant::now())
        };
        messages
            .into_iter()
            .map(|message| pb::RelayFrame {
                kind: Some(RK::Message(message)),
            })
            .collect()
    }
}

impl RelayLinks {
    fn get(&self, peer: EdgeId) -> Option<Arc<RelayLink>> {
        self.links.lock().ok()?.get(&peer).cloned()
    }

    /// A hello from `peer` said when it started. If that is news (it
    /// restarted at the same address), this edge's own connection to it
    /// reached the process that died: close it so the link redials now.
    /// Left alone, it would carry frames and media into nothing until QUIC's
    /// idle timeout (measured: about 2 s after a restart, during which the
    /// restarted edge's clients got no media and its directory answers were
    /// lost). And whatever the old process said (that it was draining) is
    /// spent. Returns whether a connection was closed.
    fn peer_started(&self, core: &EdgeCore, peer: EdgeId, started_at_ms: u64) -> bool {
        let restarted = self
            .starts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .restarted(peer, started_at_ms);
        if restarted {
            core.prober.forget_draining(peer);
        }
        let stale = restarted
            .then(|| self.get(peer))
            .flatten()
            .and_then(|l| l.conn.read().unwrap_or_else(|e| e.into_inner()).clone());
        match stale {
            Some(conn) => {
                conn.close(quinn::VarInt::from_u32(0), b"peer restarted");
                true
            }
            None => false,
        }
    }

    /// Media datagrams received from peers since this edge started
    /// draining.
    pub fn media_received(&self) -> u64 {
        self.media_in.load(Ordering::Relaxed)
    }

    /// Count `peer`'s inbound connection until the guard is dropped.
    fn inbound_from(&self, peer: EdgeId) -> InboundPeer<'_> {
        *self
            .inbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(peer)
            .or_default() += 1;
        InboundPeer { links: self, peer }
    }

    /// This edge is draining: tell every peer that has a relay connection
    /// to it (the edges that may send through it), on this edge's own link
    /// to each (dialled if need be, as relay links only carry their
    /// dialer's frames). Each then sends what it would relay through this
    /// edge around it (`forward::trees`, `Router::around_draining`), while
    /// this edge still forwards what was sent before. Returns how long
    /// this edge must keep forwarding before it closes: until what a peer
    /// sent before the notice reached it has come through, two round trips
    /// to the farthest peer told (a dial's handshake included) plus a
    /// margin, at most [`DRAINING_FORWARD_MAX`] (also for a peer never
    /// measured). The notice says the close comes within that and
    /// [`DRAINING_FORWARD_MAX`] more (the close's own trip), so that no
    /// peer stops going around before the close reaches it.
    pub fn tell_draining(&self, core: &EdgeCore) -> Duration {
        let told: Vec<EdgeId> = self
            .inbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        let forward = told
            .iter()
            .map(|peer| match core.prober.rtt_jitter(*peer) {
                Some((rtt, _)) => (2 * rtt + DRAINING_FORWARD_MARGIN).min(DRAINING_FORWARD_MAX),
                None => DRAINING_FORWARD_MAX,
            })
            .max()
            .unwrap_or_default();
        let closes_within = forward + DRAINING_FORWARD_MAX;
        let frame = pb::RelayFrame {
            kind: Some(RK::Draining(pb::RelayDraining {
                closes_within_ms: closes_within.as_millis().try_into().unwrap_or(u32::MAX),
            })),
        };
        for &peer in &told {
            self.send_frame(core, peer, frame.clone());
        }
        info!(
            edge = core.id,
            peers = ?told,
            forward_ms = forward.as_millis() as u64,
            "draining: relay peers told"
        );
        forward
    }

    /// The link to `peer` for sending, marked used; when there is none,
    /// `peer` is asked for (a tree from another edge names it) and `None`
    /// is returned.
    fn for_sending(&self, peer: EdgeId) -> Option<Arc<RelayLink>> {
        match self.get(peer) {
            Some(l) => {
                l.last_used_ms.store(clock_ms(), Ordering::Relaxed);
                Some(l)
            }
            None => {
                self.want(peer);
                None
            }
        }
    }

    /// Ask `watch_routes` for a link to `peer`.
    fn want(&self, peer: EdgeId) {
        let new = self
            .wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer);
        if new {
            self.wanted_changed.notify_one();
        }
    }

    /// Whether any link has a redundant path now.
    pub fn has_lossy(&self) -> bool {
        self.any_lossy.load(Ordering::Relaxed)
    }

    /// Whether the link to `peer` has a redundant path now
    /// (`repair::redundant`).
    pub fn is_lossy(&self, peer: EdgeId) -> bool {
        self.has_lossy()
            && self
                .get(peer)
                .is_some_and(|l| l.lossy.load(Ordering::Relaxed))
    }

    /// Whether copies of `bytes` of `kind` may go around the lossy link to
    /// `peer` now (if so, they are paid from its budget).
    pub fn copy_around_lossy(&self, peer: EdgeId, bytes: usize, kind: protocol::MediaKind) -> bool {
        self.get(peer).is_some_and(|l| {
            l.redundant
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .copy(bytes, kind)
        })
    }

    /// Peers this edge sent media or frames to within `window`.
    pub fn relayed_to_within(&self, window: Duration) -> Vec<EdgeId> {
        self.used_within(window).iter().map(|l| l.peer).collect()
    }

    /// The links this edge sent media or frames on within `window`.
    fn used_within(&self, window: Duration) -> Vec<Arc<RelayLink>> {
        let since = clock_ms().saturating_sub(window.as_millis() as u64);
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links
            .values()
            .filter(|l| {
                let used = l.last_used_ms.load(Ordering::Relaxed);
                used != 0 && used >= since
            })
            .cloned()
            .collect()
    }

    /// Every up link's peer, connection (`stable_id`) and the ACK frames
    /// received on it so far, for [`crate::probe::Prober::note_acks`].
    pub fn ack_counts(&self) -> Vec<(EdgeId, usize, u64)> {
        self.all()
            .iter()
            .filter_map(|l| {
                let conn = l.conn.read().ok()?.clone()?;
                Some((l.peer, conn.stable_id(), conn.stats().frame_rx.acks))
            })
            .collect()
    }

    /// Every link, taken out of the links' lock (which forwarding takes).
    fn all(&self) -> Vec<Arc<RelayLink>> {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.values().cloned().collect()
    }

    /// The counters of every up link this edge sent on within `window`,
    /// for the transport check ([`crate::probe::TransportSilence`]). Read
    /// outside the links' lock, which forwarding takes.
    pub fn transport_counts(&self, window: Duration) -> Vec<TransportCounts> {
        self.used_within(window)
            .iter()
            .filter_map(|l| {
                let conn = l.conn.read().ok()?.clone()?;
                let stats = conn.stats();
                Some(TransportCounts {
                    peer: l.peer,
                    conn: conn.stable_id(),
                    udp_rx: stats.udp_rx.datagrams,
                    sent: stats.frame_tx.datagram + stats.frame_tx.stream,
                    rtt: stats.path.rtt,
                })
            })
            .collect()
    }

    /// Send relay datagram `pkt`, carrying the media packet `header`
    /// describes, to `peer`. A copy around a suspect hop (`copy`) is sent
    /// as it is: it is no part of the link's sequence of originals, so it
    /// is neither kept for NACKs nor put in a parity group.
    pub fn send_media(
        &self,
        core: &EdgeCore,
        peer: EdgeId,
        header: &MediaHeader,
        pkt: Bytes,
        copy: bool,
    ) {
        let conn = self.for_sending(peer).and_then(|l| {
            let c = l.conn.read().ok()?.clone()?;
            Some((l, c))
        });
        match conn {
            Some((link, conn)) => {
                if copy {
                    core.metrics.media_copy_bytes.increment(pkt.len() as u64);
                } else {
                    core.metrics.media_out_relay.increment(1);
                    core.metrics
                        .media_out_relay_bytes
                        .increment(pkt.len() as u64);
                }
                link.out.add(pkt.len());
                let mut extra = vec![];
                if link.lossy.load(Ordering::Relaxed) && !copy {
                    link.redundant
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .sent(pkt.len());
                }
                if core.cfg.repair.enabled && !copy {
                    extra.extend(link.repair.lock().unwrap_or_else(|e| e.into_inner()).sent(
                        header.track,
                        header.sequence,
                        pkt.clone(),
                        Instant::now(),
                        || quic_loss_counters(&conn),
                    ));
                    let k = link.fec_group.load(Ordering::Relaxed);
                    // Audio is repaired by copies (above), not parity groups.
                    if k > 0 && header.track.kind() != protocol::MediaKind::Audio {
                        let mut fec = link.fec.lock().unwrap_or_else(|e| e.into_inner());
                        extra.extend(fec.1.sent(header.track, header.sequence, &pkt, k));
                    }
                }
                link.media.send(&conn, pkt, &core.metrics);
                for p in extra {
                    core.metrics.repair_relay.parity_sent.increment(1);
                    core.metrics
                        .repair_relay
                        .parity_bytes
                        .increment(p.len() as u64);
                    link.media.send(&conn, p, &core.metrics);
                }
            }
            None => core.metrics.media_dropped("relay_link_down"),
        }
    }

    /// `peer` asks for media this edge sent it on the link this edge
    /// dialed: send again what can still arrive in time.
    fn answer_nack(&self, core: &EdgeCore, peer: EdgeId, nack: &Nack) {
        let Some(link) = self.get(peer) else { return };
        let Some(conn) = link.conn.read().ok().and_then(|c| c.clone()) else {
            return;
        };
        let answer = link
            .repair
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answer(nack, Instant::now());
        core.metrics.repair_relay.answered(&answer);
        for pkt in answer.resend {
            link.media.send(&conn, pkt, &core.metrics);
        }
    }

    /// Send a probe on the link to `peer`; false if the link has no
    /// connection (being dialled, or down: the prober then counts the
    /// silence, not a lost probe).
    pub fn send_probe(&self, peer: EdgeId, probe: Bytes) -> bool {
        let conn = self.get(peer).and_then(|l| l.conn.read().ok()?.clone());
        conn.is_some_and(|c| c.send_datagram(probe).is_ok())
    }

    /// Queue `frame` for `peer`. With no link to it yet (a tree from another
    /// edge names it), the frame waits for the link dialled now: a message
    /// dropped here would be lost, as nothing end to end resends it.
    pub fn send_frame(&self, core: &EdgeCore, peer: EdgeId, frame: pb::RelayFrame) {
        if matches!(frame.kind, Some(RK::Message(_))) {
            core.metrics.messages_out_relay.increment(1);
        }
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let queued = match links.get(&peer).cloned() {
            Some(link) => {
                drop(links);
                link.last_used_ms.store(clock_ms(), Ordering::Relaxed);
                link.frames.push(frame)
            }
            None => {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                let q = pending.entry(peer).or_default();
                let room = q.len() < LINK_FRAME_QUEUE;
                if room {
                    q.push_back(frame);
                }
                drop((pending, links));
                self.want(peer);
                room
            }
        };
        if !queued {
            core.metrics.protocol_error("relay_frame_queue_full");
        }
    }

    /// Hand the frames held for peers to their new links (the caller holds
    /// `links`' lock); a peer the route table no longer knows will get no
    /// link, and its frames go.
    fn hand_over_pending(
        &self,
        core: &EdgeCore,
        links: &HashMap<EdgeId, Arc<RelayLink>>,
        table: &RouteTable,
    ) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|peer, frames| {
            if let Some(link) = links.get(peer) {
                for f in frames.drain(..) {
                    if !link.frames.push(f) {
                        core.metrics.protocol_error("relay_frame_queue_full");
                    }
                }
                false
            } else if table.peers.contains_key(peer) {
                // Asked for after this pass read the wanted set: next pass.
                true
            } else {
                for _ in frames.drain(..) {
                    core.metrics.protocol_error("no_relay_link");
                }
                false
            }
        });
    }

    /// Peers with a link that is up.
    pub fn up(&self) -> Vec<EdgeId> {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<EdgeId> = links
            .values()
            .filter(|l| l.conn.read().map(|c| c.is_some()).unwrap_or(false))
            .map(|l| l.peer)
            .collect();
        out.sort_unstable();
        out
    }

    pub fn clear(&self) {
        let links = std::mem::take(&mut *self.links.lock().unwrap_or_else(|e| e.into_inner()));
        for l in links.values() {
            l.shut();
        }
    }
}

impl RelayLink {
    fn shut(&self) {
        self.stop.cancel();
        if let Some(c) = self.conn.write().unwrap_or_else(|e| e.into_inner()).take() {
            c.close(quinn::VarInt::from_u32(0), b"link no longer needed");
        }
    }
}

/// The next hops and probe targets a table needs links to.
fn next_hops(me: EdgeId, table: &RouteTable) -> HashSet<EdgeId> {
    let mut hops: HashSet<EdgeId> = table
        .paths
        .values()
        .chain(table.backups.values())
        .filter_map(|p| p.get(1).copied())
        .collect();
    hops.extend(table.peers.keys().filter(|p| !table.paths.contains_key(p)));
    hops.extend(table.probe.iter().filter(|p| table.peers.contains_key(p)));
    hops.remove(&me);
    hops
}

/// Messages written to a link this long before its peer was seen dead may
/// have died with it (in its queues, or in its connection's stream). 3 s:
/// death is seen within about a second of the last answer, and a live relay
/// passes a message on within its link's round trips (a relay holding
/// messages longer is already failing its users); every message in the
/// window is sent again, so longer costs duplicates at every death.
pub const RESEND_WINDOW: Duration = Duration::from_secs(3);

/// `peer` stopped answering (dead), or went silent for a little over a
/// round trip (suspect): send the messages this edge wrote to it in the last
/// `window` (and those still queued for it) around it, each to the
/// destinations of the subtree it carried, the peer itself included (along
/// trees from this edge's routes, which avoid a dead peer; around a suspect
/// one, [`EdgeCore::send_along`] sends them as copies). The edge before a
/// dead one is the only one that knows what it handed over, so whichever
/// edge of a path dies (first hop, mid-path relay), nothing that reached the
/// edge before it is lost; and a peer that is only cut off from this edge
/// (a link cut looks like a death from here) gets them another way.
/// Destinations that already had a message drop the copy (receivers' SDKs
/// deliver each seq once). How many were resent.
pub fn resend_around(core: &EdgeCore, peer: EdgeId, window: Duration) -> usize {
    let Some(link) = core.relay.get(peer) else {
        return 0;
    };
    let handed = link.recent(window);
    // Still queued (its connection stopped taking data when the peer did).
    let queued = link.frames.messages();
    let resent = resend_messages(core, handed.into_iter().chain(queued), |_| true);
    let directory = link
        .directory
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .within(Instant::now(), window);
    for frame in directory {
        resend_directory_frame(core, frame);
    }
    resent
}

/// Send `messages` again from this edge, each to the destinations of its
/// tree that `wanted` keeps, along this edge's trees now. How many were
/// sent.
fn resend_messages(
    core: &EdgeCore,
    messages: impl IntoIterator<Item = pb::RelayMessage>,
    wanted: impl Fn(EdgeId) -> bool,
) -> usize {
    let mut resent = 0;
    // Trees are built once per destination set, not per message.
    let mut trees: HashMap<Vec<EdgeId>, Vec<protocol::route_tree::RouteTree>> = HashMap::new();
    for rm in messages {
        let mut dests = deliver_nodes(&rm.tree);
        dests.retain(|d| wanted(*d));
        let (false, Some(msg)) = (dests.is_empty(), rm.message) else {
            continue;
        };
        let trees = trees
            .entry(dests)
            .or_insert_with_key(|dests| core.trees_to(dests));
        core.relay_message_along(rm.origin_edge, trees, &msg);
        resent += 1;
    }
    if resent > 0 {
        core.metrics.relay_messages_resent(resent);
    }
    resent
}

/// The edges a relayed frame's route tree delivers to.
fn deliver_nodes(tree: &[pb::RouteNode]) -> Vec<EdgeId> {
    tree.iter()
        .filter(|n| n.deliver)
        .map(|n| n.edge_id)
        .collect()
}

/// Send a directory frame written to a peer that went suspect or died again
/// from this edge, to the same destinations along this edge's trees now
/// (around the peer; to the peer too if it was one, another way).
fn resend_directory_frame(core: &EdgeCore, frame: pb::RelayFrame) {
    let dests = match &frame.kind {
        Some(RK::DirectoryUpdate(u)) => deliver_nodes(&u.tree),
        Some(RK::DirectoryReport(r)) => deliver_nodes(&r.tree),
        _ => return,
    };
    for t in core.trees_to(&dests) {
        core.send_along(&t, None, |nodes| {
            let mut kind = frame.kind.clone().expect("a directory frame");
            match &mut kind {
                RK::DirectoryUpdate(u) => u.tree = nodes,
                RK::DirectoryReport(r) => r.tree = nodes,
                _ => {}
            }
            kind
        });
    }
}

/// When a new table from the controller moves paths, messages this edge
/// wrote lately may be stuck on the old ones, and are sent again along the
/// new paths; receivers drop the copies they already have.
///
/// - Those written to each peer it sees dead, all of them. Until then some
///   could only be queued on the dead link: those for which this edge had
///   no live way (as around a cut between two cities, where each edge of
///   one city has its backup through the other, and a repair does not go
///   back where a packet came from, `Router::live_children`).
/// - Those written to a live peer, to the destinations the new paths
///   moved off that peer (their next hop was the peer, and is another
///   now). The old path may be cut further on, at a relay whose only way
///   around goes back through this edge: the relay then holds the message
///   on its dead link until that link comes back, while this edge, now on
///   a path around the cut, would never send it again. Only destinations
///   that left the link: resent messages count as written to their new
///   link, and resending every destination whose path changed anywhere
///   sent the same messages again at each route change (131,241 resends
///   in an 85 s chain-world run with 1,283 messages sent). Found by the chain world
///   (`loadtest/topologies/chain.toml`): Chicago's link to Toronto cut
///   while Dublin, Toronto's other neighbour, was dead; a message Seattle
///   sent through Chicago just after the cut waited there for the heal,
///   10 s, and its receiver in Toronto gave it up after 5 s.
///
/// Tables made by this edge's own reroutes (the dead set changed) do not
/// count: the death's own resend covers those.
fn resend_when_paths_move(
    core: &EdgeCore,
    (before, dead_before): (&RouteTable, &BTreeSet<EdgeId>),
    (after, dead): (&RouteTable, &BTreeSet<EdgeId>),
) {
    if dead != dead_before || before.paths == after.paths {
        return;
    }
    for peer in dead {
        let resent = resend_around(core, *peer, RESEND_WINDOW);
        if resent > 0 {
            info!(
                edge = core.id,
                peer,
                messages = resent,
                "paths moved: resent the messages written to a dead peer lately"
            );
        }
    }
    let next_hop = |t: &RouteTable, d: EdgeId| t.paths.get(&d).and_then(|p| p.get(1).copied());
    let mut resent = 0;
    for link in core.relay.all() {
        let peer = link.peer;
        if dead.contains(&peer) {
            continue;
        }
        let moved_off =
            |d: EdgeId| next_hop(before, d) == Some(peer) && next_hop(after, d) != Some(peer);
        resent += resend_messages(core, link.recent(RESEND_WINDOW), moved_off);
    }
    if resent > 0 {
        info!(
            edge = core.id,
            messages = resent,
            "paths moved: resent the messages written lately towards destinations that left their links"
        );
    }
}

/// Keep links to the next hops and probe targets of the current route
/// table, to the peers other edges' trees ask this edge to relay to, and
/// to peers it relayed to within [`LINK_IDLE_KEEP`].
pub async fn watch_routes(core: Arc<EdgeCore>) {
    let mut rx = core.routes.clone();
    let mut previous: Option<Arc<RouteTable>> = None;
    let mut dead_before = BTreeSet::new();
    let mut prune = tokio::time::interval(LINK_PRUNE_EVERY);
    loop {
        let table = rx.borrow_and_update().clone();
        if previous.as_ref().is_none_or(|p| !Arc::ptr_eq(p, &table)) {
            core.metrics.route_version.set(table.version as f64);
            log_route_changes(core.id, previous.as_deref(), &table, &core.metrics);
            let dead = core.prober.dead().borrow().clone();
            if let Some(before) = &previous {
                resend_when_paths_move(&core, (before, &dead_before), (&table, &dead));
            }
            previous = Some(table.clone());
            dead_before = dead;
        }
        let mut wanted = next_hops(core.id, &table);
        {
            let mut asked = core.relay.wanted.lock().unwrap_or_else(|e| e.into_inner());
            asked.retain(|p| table.peers.contains_key(p) && *p != core.id);
            wanted.extend(asked.drain());
        }
        wanted.extend(core.relay.relayed_to_within(LINK_IDLE_KEEP));
        {
            let mut links = core.relay.links.lock().unwrap_or_else(|e| e.into_inner());
            links.retain(|peer, l| {
                let keep = wanted.contains(peer);
                if !keep {
                    l.shut();
                }
                keep
            });
            for peer in wanted {
                links
                    .entry(peer)
                    .or_insert_with(|| spawn_link(core.clone(), peer));
            }
            core.relay.hand_over_pending(&core, &links, &table);
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = core.relay.wanted_changed.notified() => {}
            _ = prune.tick() => {}
        }
    }
}

/// How often each link's parity and redundant path are switched on or off.
const REPAIR_TUNE_EVERY: Duration = Duration::from_secs(1);

/// Switch each relay link's repair by what it loses: parity (forward error
/// correction) by the loss and round trip this edge's probes measure on it
/// (`repair::fec::FecPolicy`: where a NACK is too slow or loss too high),
/// and a redundant path by the loss of the media sent on it
/// (`repair::redundant`: where per-hop repair is not enough).
pub async fn tune_repair(core: Arc<EdgeCore>) {
    let mut tick = tokio::time::interval(REPAIR_TUNE_EVERY);
    loop {
        tick.tick().await;
        let measured: HashMap<EdgeId, (f64, Duration)> = core
            .prober
            .links()
            .into_iter()
            .map(|l| {
                let rtt = Duration::from_secs_f64(l.summary.rtt_ms / 1e3);
                // A probe is lost if either way loses it; parity protects
                // one way: the one-way loss of a symmetric link with that
                // round-trip loss.
                let one_way = 1.0 - (1.0 - l.summary.loss).max(0.0).sqrt();
                (l.peer, (one_way, rtt))
            })
            .collect();
        let mut any_lossy = false;
        for link in core.relay.all() {
            any_lossy |= tune_redundant_path(&core, &link);
            let Some(&(loss, rtt)) = measured.get(&link.peer) else {
                continue;
            };
            let mut fec = link.fec.lock().unwrap_or_else(|e| e.into_inner());
            let k = fec.0.update(loss, rtt).unwrap_or(0);
            if k != link.fec_group.swap(k, Ordering::Relaxed) {
                fec.1.reset();
                info!(
                    edge = core.id,
                    peer = link.peer,
                    group = k,
                    loss,
                    rtt_ms = rtt.as_secs_f64() * 1e3,
                    "relay link parity changed (0: off)"
                );
            }
        }
        core.relay.any_lossy.store(any_lossy, Ordering::Relaxed);
    }
}

/// Switch `link`'s redundant path by the loss of the media sent on it (its
/// QUIC connection's own count, many more samples than the probes);
/// whether it is on. Copies are redundancy, as repair is: none with repair
/// off.
fn tune_redundant_path(core: &EdgeCore, link: &RelayLink) -> bool {
    let reading = link.repair.lock().unwrap_or_else(|e| e.into_inner()).loss();
    let (on, loss) = {
        let mut r = link.redundant.lock().unwrap_or_else(|e| e.into_inner());
        let on = r.set_loss(reading, Instant::now());
        (core.cfg.repair.enabled && on, r.smoothed_loss())
    };
    if on != link.lossy.swap(on, Ordering::Relaxed) {
        info!(
            edge = core.id,
            peer = link.peer,
            loss,
            on,
            "relay link redundant path changed: media to the destinations behind it also sent around it"
        );
    }
    on
}

/// Count and log the destinations whose path changed from `old` to `new`.
fn log_route_changes(
    me: EdgeId,
    old: Option<&RouteTable>,
    new: &RouteTable,
    metrics: &crate::metrics::EdgeMetrics,
) {
    let Some(old) = old else {
        metrics.route_table_applied(0);
        return;
    };
    let mut changed: Vec<(EdgeId, Option<&Vec<EdgeId>>)> = new
        .paths
        .iter()
        .filter(|(d, p)| old.paths.get(d) != Some(p))
        .map(|(d, p)| (*d, Some(p)))
        .chain(
            old.paths
                .keys()
                .filter(|d| !new.paths.contains_key(d))
                .map(|d| (*d, None)),
        )
        .collect();
    metrics.route_table_applied(changed.len());
    if changed.is_empty() {
        return;
    }
    changed.sort_by_key(|(d, _)| *d);
    // The first few changes, "dest:hop>hop>dest" ("dest:-" when removed):
    // enough to see what moved without a line per destination.
    let sample: Vec<String> = changed
        .iter()
        .take(8)
        .map(|(d, p)| match p {
            Some(p) => format!(
                "{d}:{}",
                p.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(">")
            ),
            None => format!("{d}:-"),
        })
        .collect();
    info!(
        edge = me,
        version = new.version,
        changed = changed.len(),
        destinations = new.paths.len(),
        paths = %sample.join(" "),
        "route change"
    );
}

fn spawn_link(core: Arc<EdgeCore>, peer: EdgeId) -> Arc<RelayLink> {
    let link = Arc::new(RelayLink {
        peer,
        last_used_ms: std::sync::atomic::AtomicU64::new(0),
        frames: FrameQueue::default(),
        conn: RwLock::new(None),
        media: MediaQueue::new(
            LINK_MEDIA_QUEUE,
            "relay_queue_full",
            core.metrics.relay_queue(peer),
        ),
        stop: core.tasks.child_token(),
        out: core.metrics.peer_media(peer, "out"),
        retained: Mutex::new(Retained::new(
            RETAIN_IDLE_TIMEOUTS * Duration::from_millis(core.cfg.limits.client_idle_timeout_ms),
        )),
        directory: Mutex::default(),
        repair: Mutex::new(repair::HopSender::new(
            core.cfg.repair.relay_history_packets,
        )),
        fec: Mutex::default(),
        fec_group: std::sync::atomic::AtomicUsize::new(0),
        redundant: Mutex::new(repair::RedundantPath::new(
            core.cfg.repair.redundant_path_share,
        )),
        lossy: std::sync::atomic::AtomicBool::new(false),
    });
    let tasks = core.tasks.clone();
    tasks.spawn_until(link.stop.clone(), run_link(core, link.clone()));
    link
}

async fn run_link(core: Arc<EdgeCore>, link: Arc<RelayLink>) {
    let mut backoff = DIAL_BACKOFF_MIN;
    let mut failing = false;
    loop {
        match dial(&core, link.peer).await {
            Ok((conn, mut out)) => {
                backoff = DIAL_BACKOFF_MIN;
                failing = false;
                let resend = link.retained_frames();
                if !resend.is_empty() {
                    core.metrics.relay_messages_resent(resend.len());
                    info!(
                        edge = core.id,
                        peer = link.peer,
                        frames = resend.len(),
                        "relay link up again: resending recent messages"
                    );
                    // A failed write means the new connection is gone too;
                    // the pump below then returns at once and we redial.
                    for f in resend {
                        if let Ok(len) = out.queue(&f) {
                            core.metrics.relay_frame_written(&f, len);
                        }
                        if out.batch_full() && out.flush().await.is_err() {
                            break;
                        }
                    }
                    let _ = out.flush().await;
                }
                info!(edge = core.id, peer = link.peer, "relay link up");
                *link.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
                if core.prober.is_dead(link.peer) {
                    // Back after an outage: ask at once whether it answers.
                    if let Some(p) = core.prober.probe_now(link.peer) {
                        crate::probe::send_probe(&core, link.peer, p);
                    }
                }
                core.metrics.relay_links.increment(1.0);
                core.tasks.spawn_for(
                    &conn,
                    link.media
                        .clone()
                        .run_writer(conn.clone(), core.metrics.clone()),
                );
                core.tasks.spawn_for(
                    &conn,
                    read_datagrams(core.clone(), conn.clone(), Some(link.peer), None),
                );
                pump_frames(&link, out, &conn, &core.metrics).await;
                link.connection_ended();
                *link.conn.write().unwrap_or_else(|e| e.into_inner()) = None;
                core.metrics.relay_links.decrement(1.0);
                warn!(edge = core.id, peer = link.peer, "relay link down");
                // The peer said it is stopping (drain, shutdown, kill with
                // its close getting out): dead now, not when its probes
                // time out.
                if closed_going_away(&conn)
                    && core
                        .prober
                        .link_lost(link.peer, crate::probe::LinkLoss::GoingAway)
                {
                    warn!(
                        edge = core.id,
                        peer = link.peer,
                        "link down: peer going away"
                    );
                }
            }
            Err(e)
                if matches!(
                    e.downcast_ref(),
                    Some(quinn::ConnectError::EndpointStopping)
                ) =>
            {
                return;
            }
            Err(e) => {
                if !failing {
                    // Logged once per outage, not once per retry.
                    warn!(edge = core.id, peer = link.peer, error = %e, "relay link dial failed; retrying");
                    failing = true;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(DIAL_BACKOFF_MAX);
    }
}

/// Whether the peer closed `conn` with `GOING_AWAY` (its edge stopping).
fn closed_going_away(conn: &quinn::Connection) -> bool {
    matches!(
        conn.close_reason(),
        Some(quinn::ConnectionError::ApplicationClosed(c))
            if c.error_code == quinn::VarInt::from_u32(ErrorCode::GoingAway as u32)
    )
}

async fn dial(
    core: &EdgeCore,
    peer: EdgeId,
) -> anyhow::Result<(quinn::Connection, FrameWriter<quinn::SendStream>)> {
    let address = core
        .route_table()
        .peers
        .get(&peer)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no address for edge {peer}"))?;
    let connecting = core.endpoint.connect_with(
        core.relay_client.clone(),
        address.addr,
        &address.server_name,
    )?;
    let conn = tokio::time::timeout(Duration::from_secs(3), connecting).await??;
    let (send, _recv) = conn.open_bi().await?;
    let mut out = FrameWriter::new(send);
    let hello = pb::RelayFrame {
        kind: Some(RK::Hello(pb::RelayHello {
            edge_id: core.id,
            region: core.cfg.edge.region.clone(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            started_at_ms: core.started_at_ms,
        })),
    };
    let len = out.queue(&hello)?;
    out.flush().await?;
    core.metrics.relay_frame_written(&hello, len);
    Ok((conn, out))
}

/// Write the link's queued frames in batches, counting each frame's bytes
/// by kind (`rtn_edge_relay_frame_bytes_total`).
async fn pump_frames(
    link: &RelayLink,
    mut out: FrameWriter<quinn::SendStream>,
    conn: &quinn::Connection,
    metrics: &crate::metrics::EdgeMetrics,
) {
    loop {
        let first = tokio::select! {
            f = link.frames.pop() => f,
            _ = conn.closed() => return,
        };
        let mut next = Some(first);
        while let Some(f) = next {
            if let Ok(len) = out.queue(&f) {
                metrics.relay_frame_written(&f, len);
                match &f.kind {
                    Some(RK::Message(m)) => link.retain(len, m.clone()),
                    Some(RK::DirectoryReport(_) | RK::DirectoryUpdate(_)) => link
                        .directory
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Instant::now(), f.clone()),
                    _ => {}
                }
            }
            if out.batch_full() {
                break;
            }
            next = link.frames.try_pop();
        }
        if out.flush().await.is_err() {
            return;
        }
    }
}

/// Read a relay connection's datagrams: media, and probes (answered on the
/// same connection) or probe replies (on links this edge dialed to `peer`),
/// and NACKs (on those links too: `peer` asks for media this edge sent).
/// `hello` learns the peer of an inbound link from its hello (for the
/// per-peer traffic counters and the link's round trip).
///
/// Media arriving here is repaired here: gaps in each track are NACKed back
/// on this connection when due, and duplicates are not passed on.
async fn read_datagrams(
    core: Arc<EdgeCore>,
    conn: quinn::Connection,
    peer: Option<EdgeId>,
    hello: Option<Arc<OnceLock<EdgeId>>>,
) {
    let mut warned = false;
    let mut from: Option<PeerCounters> = peer.map(|p| core.metrics.peer_media(p, "in"));
    let mut gaps = core
        .cfg
        .repair
        .enabled
        .then(|| repair::HopReceiver::new(true, Instant::now()));
    // Made when the first parity packet arrives: until then the link's
    // packets are not kept.
    let mut fec: Option<repair::fec::FecDecoder> = None;
    // The edge at the other end: known for links this edge dialed, from the
    // hello for the others.
    let upstream = || peer.or_else(|| hello.as_ref().and_then(|h| h.get().copied()));
    loop {
        let due = gaps.as_ref().and_then(|g| g.next_due());
        let d = tokio::select! {
            d = conn.read_datagram() => match d {
                Ok(d) => d,
                Err(_) => return,
            },
            _ = sleep_until(due), if due.is_some() => {
                if let Some(g) = gaps.as_mut() {
                    send_nacks(&core, &conn, upstream(), g);
                }
                continue;
            }
        };
        match d.first() {
            Some(&TYPE_PROBE | &TYPE_PROBE_REPLY) => {
                match Probe::decode(&d) {
                    Ok(p) if !p.reply => {
                        let _ = conn.send_datagram(p.to_reply().encode());
                    }
                    Ok(p) => {
                        if let Some(peer) = peer {
                            if let Some(rtt) = core.prober.on_reply(peer, p) {
                                core.metrics.probe_rtt(peer, rtt);
                            }
                        }
                    }
                    Err(_) => core.metrics.protocol_error("malformed_probe"),
                }
                continue;
            }
            Some(&TYPE_RELAY_NACK) => {
                match (peer, Nack::decode(&d)) {
                    (Some(peer), Ok(n)) if n.relay => {
                        if core.cfg.repair.enabled {
                            core.relay.answer_nack(&core, peer, &n);
                        }
                    }
                    // Media goes out only on links this edge dialed: a NACK
                    // on an inbound one asks for nothing sent on it.
                    (None, Ok(_)) => core.metrics.protocol_error("nack_on_inbound_link"),
                    _ => core.metrics.protocol_error("malformed_nack"),
                }
                continue;
            }
            Some(&TYPE_RELAY_PARITY) => {
                if core.cfg.repair.enabled {
                    let dec = fec.get_or_insert_with(|| repair::fec::FecDecoder::new(FEC_KEPT));
                    if let Some(rebuilt) = rebuild(&core, dec, d) {
                        if let Some(g) = gaps.as_mut() {
                            let arrival = g.on_media(&rebuilt.header, Instant::now());
                            if !core.metrics.repair_relay.arrived(arrival) {
                                continue;
                            }
                        }
                        core.metrics.repair_relay.parity_rebuilt.increment(1);
                        core.media_from_relay(rebuilt, upstream());
                    }
                }
                continue;
            }
            _ => {}
        }
        core.metrics.media_in_relay.increment(1);
        if core.is_draining() {
            core.relay.media_in.fetch_add(1, Ordering::Relaxed);
        }
        core.metrics.media_in_relay_bytes.increment(d.len() as u64);
        if from.is_none() {
            from =
                (hello.as_ref().and_then(|h| h.get())).map(|p| core.metrics.peer_media(*p, "in"));
        }
        if let Some(c) = &from {
            c.add(d.len());
        }
        let kept = fec.is_some().then(|| d.clone());
        match RelayDatagram::decode(d) {
            // A copy around a suspect hop is no part of this link's
            // sequence of originals: not tracked for gaps or parity. The
            // destination delivers the first of the two.
            Ok(dg) if dg.copy => core.media_from_relay(dg, upstream()),
            Ok(dg) => {
                if let (Some(dec), Some(d)) = (fec.as_mut(), kept) {
                    dec.received(dg.header.track, dg.header.sequence, d);
                }
                if let Some(g) = gaps.as_mut() {
                    let arrival = g.on_media(&dg.header, Instant::now());
                    if !core.metrics.repair_relay.arrived(arrival) {
                        continue;
                    }
                }
                core.media_from_relay(dg, upstream())
            }
            Err(e) => {
                core.metrics.media_dropped("malformed_relay_datagram");
                if !warned {
                    warn!(edge = core.id, remote = %conn.remote_address(), error = %e, "malformed relay datagram");
                    warned = true;
                }
            }
        }
    }
}

/// Relay datagrams a link's reading end keeps for parity: a parity packet
/// follows its group (at most 16) at once, so a few groups are enough.
const FEC_KEPT: usize = 128;

/// The relay datagram a parity packet rebuilds, checked as if received:
/// it must decode and be the member the parity named.
fn rebuild(core: &EdgeCore, dec: &mut repair::fec::FecDecoder, d: Bytes) -> Option<RelayDatagram> {
    let parity = match protocol::parity::Parity::decode(d) {
        Ok(p) => p,
        Err(_) => {
            core.metrics.protocol_error("malformed_parity");
            return None;
        }
    };
    let repair::fec::Recovery::Rebuilt(member, pkt) = dec.recover(&parity) else {
        return None;
    };
    match RelayDatagram::decode(pkt) {
        Ok(dg) if dg.header.track == member.track && dg.header.sequence == member.seq => Some(dg),
        _ => {
            core.metrics.protocol_error("bad_parity");
            None
        }
    }
}

/// Sleep until `t`; forever when `None` (a `select!` branch then disabled).
pub(crate) async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Round trip assumed for a link not measured yet: a long intercontinental
/// one, so no NACK is sent that could not be answered in time.
const UNMEASURED_RTT: Duration = Duration::from_millis(150);

/// Send the NACKs `gaps` has due, back to `upstream` on `conn`.
fn send_nacks(
    core: &EdgeCore,
    conn: &quinn::Connection,
    upstream: Option<EdgeId>,
    gaps: &mut repair::HopReceiver,
) {
    let (rtt, jitter) = upstream
        .and_then(|p| core.prober.rtt_jitter(p))
        .unwrap_or((UNMEASURED_RTT, Duration::ZERO));
    for n in core.metrics.repair_relay.nacks_due(gaps, rtt, jitter) {
        let _ = conn.send_datagram(n);
    }
}

/// Serve a relay link another edge dialed to this one.
pub async fn run_inbound(core: Arc<EdgeCore>, conn: quinn::Connection) {
    // rustls checked any certificate against the mesh CA; a relay link must
    // have presented one.
    if conn.peer_identity().is_none() {
        core.metrics.protocol_error("relay_without_certificate");
        warn!(edge = core.id, remote = %conn.remote_address(), "relay connection without a mesh certificate refused");
        close(
            &conn,
            ErrorCode::UnauthenticatedPeer,
            "relay links need a mesh certificate",
        );
        return;
    }
    let hello = Arc::new(OnceLock::new());
    core.tasks.spawn_for(
        &conn,
        read_datagrams(core.clone(), conn.clone(), None, Some(hello.clone())),
    );
    let Ok((_send, recv)) = conn.accept_bi().await else {
        return;
    };
    let mut frames = FrameReader::new(recv);
    let mut peer: Option<EdgeId> = None;
    let mut counted = None;
    loop {
        match frames.next_frame::<pb::RelayFrame>().await {
            Ok(Some(f)) => match f.kind {
                Some(RK::Hello(h)) => {
                    debug!(edge = core.id, peer = h.edge_id, "relay hello");
                    peer = Some(h.edge_id);
                    let _ = hello.set(h.edge_id);
                    if counted.is_none() {
                        counted = Some(core.relay.inbound_from(h.edge_id));
                    }
                    if core.relay.peer_started(&core, h.edge_id, h.started_at_ms) {
                        info!(
                            edge = core.id,
                            peer = h.edge_id,
                            "peer restarted: redialling it"
                        );
                    }
                }
                _ if peer.is_none() => {
                    core.metrics.protocol_error("relay_no_hello");
                    close(
                        &conn,
                        ErrorCode::MalformedFrame,
                        "relay link must start with hello",
                    );
                    return;
                }
                Some(RK::Message(m)) => core.message_from_relay(m, peer),
                Some(RK::DirectoryReport(r)) => core.relay_report(r, peer),
                Some(RK::DirectoryUpdate(u)) => core.relay_update(u, peer),
                Some(RK::Draining(d)) => {
                    let peer = peer.unwrap_or_default();
                    let within = match d.closes_within_ms {
                        0 => crate::probe::DRAINING_PEER_TTL,
                        ms => Duration::from_millis(ms.into()),
                    };
                    core.prober.peer_draining(peer, within, Instant::now());
                    info!(
                        edge = core.id,
                        peer,
                        closes_within_ms = within.as_millis() as u64,
                        "peer draining: relaying around it until it goes"
                    );
                }
                None => core.metrics.protocol_error("unknown_relay_frame"),
            },
            // The stream ended or failed: the reader stops, and the
            // connection (with the media on it) is left to QUIC. A stream
            // that ends mid-frame is treated the same, as relay links always
            // have; docs/protocol.md §3 rule 4 would close it as malformed.
            Ok(None) | Err(StreamError::Io(_)) | Err(StreamError::Frame(FrameError::Truncated)) => {
                return
            }
            Err(StreamError::Frame(e)) => {
                core.metrics.protocol_error("malformed_relay_frame");
                close(&conn, ErrorCode::MalformedFrame, &e.to_string());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message told apart by its (otherwise unused here) origin field.
    fn message(tag: u32) -> pb::RelayMessage {
        pb::RelayMessage {
            origin_edge: tag,
            ..Default::default()
        }
    }

    fn seqs(messages: &[pb::RelayMessage]) -> Vec<u32> {
        messages.iter().map(|m| m.origin_edge).collect()
    }

    const S: Duration = Duration::from_secs(1);
    /// The default: three 10 s idle timeouts.
    const KEEP: Duration = Duration::from_secs(30);

    #[test]
    fn directory_frames_are_kept_briefly_and_few() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let frame = |home_edge| pb::RelayFrame {
            kind: Some(RK::DirectoryUpdate(pb::DirectoryUpdate {
                home_edge,
                ..Default::default()
            })),
        };
        let homes = |fs: Vec<pb::RelayFrame>| -> Vec<u32> {
            fs.into_iter()
                .map(|f| match f.kind {
                    Some(RK::DirectoryUpdate(u)) => u.home_edge,
                    _ => 0,
                })
                .collect()
        };
        let mut recent = RecentDirectory::default();
        recent.push(t0, frame(1));
        recent.push(t0 + ms(100), frame(2));
        recent.push(t0 + ms(300), frame(3));
        // The window counts back from the moment asked.
        assert_eq!(homes(recent.within(t0 + ms(350), ms(100))), vec![3]);
        assert_eq!(homes(recent.within(t0 + ms(350), ms(300))), vec![2, 3]);
        // Older than the resend window: gone at the next push.
        recent.push(t0 + RESEND_WINDOW + ms(50), frame(4));
        assert_eq!(
            homes(recent.within(t0 + RESEND_WINDOW + ms(50), RESEND_WINDOW)),
            vec![2, 3, 4]
        );
        for i in 0..DIRECTORY_KEPT as u32 + 5 {
            recent.push(t0 + RESEND_WINDOW + ms(60), frame(10 + i));
        }
        assert_eq!(recent.0.len(), DIRECTORY_KEPT);
        assert_eq!(
            homes(recent.within(t0 + RESEND_WINDOW + ms(60), ms(1)))[0],
            15
        );
    }

    #[test]
    fn a_new_start_time_is_a_restart_and_a_redial_is_not() {
        let mut starts = PeerStarts::default();
        assert!(
            !starts.restarted(2, 1_000),
            "first hello: nothing to compare"
        );
        assert!(!starts.restarted(2, 1_000), "a redial of the same process");
        assert!(!starts.restarted(3, 5_000), "another peer");
        assert!(starts.restarted(2, 2_000), "a new process");
        assert!(!starts.restarted(2, 2_000));
        assert!(!starts.restarted(2, 0), "a peer that does not say");
        assert!(
            !starts.restarted(2, 2_000),
            "0 did not replace what is known"
        );
    }

    #[test]
    fn a_partition_of_any_length_resends_what_the_dead_connection_took_last() {
        let t0 = Instant::now();
        let mut r = Retained::new(KEEP);
        // Written over a connection's last 40 s; it dies 10 s after the last
        // write (QUIC's idle timeout), and the link is down for 10 minutes.
        for (i, at) in [0, 5, 25, 30, 40].into_iter().enumerate() {
            r.push(t0 + at * S, 100, message(i as u32));
        }
        r.ended = Some(t0 + 50 * S);
        let again = r.resend(t0 + 650 * S);
        // Those written within 30 s of the connection's end, in order.
        assert_eq!(seqs(&again), [2, 3, 4]);
        assert_eq!(r.bytes, 300);
    }

    #[test]
    fn resent_frames_count_as_written_again() {
        let t0 = Instant::now();
        let mut r = Retained::new(KEEP);
        r.push(t0, 10, message(1));
        r.ended = Some(t0 + 20 * S);
        assert_eq!(seqs(&r.resend(t0 + 100 * S)), [1]);
        // The new connection fails 25 s after it was made: still resent.
        r.ended = Some(t0 + 125 * S);
        assert_eq!(seqs(&r.resend(t0 + 130 * S)), [1]);
        // A frame is forgotten once the link was up for `keep` after
        // its last write.
        r.push(t0 + 161 * S, 10, message(2));
        assert_eq!(seqs(&r.resend(t0 + 161 * S)), [2]);
    }

    #[test]
    fn retained_frames_are_bounded_by_count_and_bytes() {
        let t0 = Instant::now();
        let mut r = Retained::new(KEEP);
        for i in 0..(RETAIN_MAX as u32 + 10) {
            r.push(t0, 1, message(i));
        }
        assert_eq!(r.frames.len(), RETAIN_MAX);
        assert_eq!(r.frames.front().map(|f| f.message.origin_edge), Some(10));
        let big = RETAIN_MAX_BYTES / 4 + 1;
        for i in 0..4 {
            r.push(t0, big, message(100_000 + i));
        }
        assert!(r.bytes <= RETAIN_MAX_BYTES, "{}", r.bytes);
        assert_eq!(seqs(&r.resend(t0)), [100_001, 100_002, 100_003]);
    }
}
