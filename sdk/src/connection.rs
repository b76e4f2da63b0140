//! One QUIC connection to an edge (a "link") and how links are made.
//!
//! A link runs three small tasks: a reader that turns control-stream chunks
//! into `ServerFrame`s, a writer that owns the send half of the control
//! stream (so a slow edge never blocks the client's state machine), and a
//! media reader that turns datagrams into [`Media`] events. Every byte
//! received on either path refreshes the link's [`Liveness`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use protocol::datagram::{MediaHeader, Nack, MEDIA_HEADER_LEN, TYPE_NACK};
use protocol::framing::{FrameError, FrameReader, FrameWriter, StreamError};
use protocol::pb::{self, server_frame::Kind as SK, ErrorCode};
use protocol::EdgeAddress;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::debug;

use crate::e2ee::KeyRing;
use crate::error::{close_code, describe_close};
use crate::events::{Event, EventQueue, Media, TrackKind};
use crate::stats::{bump, Stats};
use crate::tls::EdgeTls;

/// A remote member's track, as media datagrams name it by key.
#[derive(Debug)]
pub(crate) struct RemoteTrack {
    pub channel_id: u64,
    pub channel: String,
    pub user: String,
    pub name: String,
    /// This track's lateness baseline (see [`crate::lateness`]).
    pub lateness: crate::lateness::LatenessGate,
    /// The stream it carries, shared with the member's other keys for the
    /// same track name (a republish after a move).
    pub stream: Arc<crate::stream::Stream>,
}

/// State shared by the client's state machine, its links and the handles.
pub(crate) struct Shared {
    pub stats: Stats,
    pub events: EventQueue,
    /// Every remote track of every joined channel, by track key.
    pub tracks: RwLock<HashMap<u64, Arc<RemoteTrack>>>,
    /// The edge of the current link.
    pub edge: Mutex<Option<SocketAddr>>,
    /// End-to-end encryption keys of the channels joined with them.
    pub e2ee: RwLock<HashMap<u64, Arc<KeyRing>>>,
    /// Media later than this behind its track's fastest is dropped
    /// (microseconds; `i64::MAX`: never).
    pub max_media_lateness_us: i64,
    /// Media this client sent lately, for the edge's NACKs; `None`: loss
    /// repair is off (and received media is not NACKed either).
    pub repair_out: Option<Mutex<repair::HopSender>>,
    /// The received tracks' jitter buffers; `None`: media goes to the app
    /// as it arrives.
    pub players: Option<Arc<crate::players::Players>>,
}

impl Shared {
    pub fn new(media_queue: usize) -> Self {
        Shared {
            stats: Stats::default(),
            events: EventQueue::new(media_queue),
            tracks: RwLock::default(),
            edge: Mutex::default(),
            e2ee: RwLock::default(),
            max_media_lateness_us: i64::MAX,
            repair_out: None,
            players: None,
        }
    }

    /// Keep a media datagram being sent on `conn`, for the edge's NACKs:
    /// the audio copy to send after it while the link is lossy (see
    /// `repair::red`).
    pub fn sent_media(
        &self,
        conn: &quinn::Connection,
        h: &MediaHeader,
        datagram: &Bytes,
    ) -> Option<Bytes> {
        bump(&self.stats.media_sent_bytes, datagram.len() as u64);
        let copy = self
            .repair_out
            .as_ref()?
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sent(
                h.track,
                h.sequence,
                datagram.clone(),
                std::time::Instant::now(),
                || {
                    let path = conn.stats().path;
                    (path.sent_packets, path.lost_packets)
                },
            );
        if let Some(c) = &copy {
            bump(&self.stats.media_redundant, 1);
            bump(&self.stats.media_redundant_bytes, c.len() as u64);
        }
        copy
    }

    /// The edge asks for media this client sent: what to send again.
    fn answer_nack(&self, nack: &Nack) -> Vec<Bytes> {
        let Some(r) = &self.repair_out else {
            return vec![];
        };
        let answer = r
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answer(nack, std::time::Instant::now());
        bump(&self.stats.media_resent, answer.resend.len() as u64);
        bump(&self.stats.media_resent_bytes, answer.resent_bytes() as u64);
        answer.resend
    }

    pub fn set_e2ee(&self, channel_id: u64, ring: Option<Arc<KeyRing>>) {
        let mut map = self.e2ee.write().unwrap_or_else(|e| e.into_inner());
        match ring {
            Some(r) => map.insert(channel_id, r),
            None => map.remove(&channel_id),
        };
    }

    fn e2ee(&self, channel_id: u64) -> Option<Arc<KeyRing>> {
        let map = self.e2ee.read().unwrap_or_else(|e| e.into_inner());
        if map.is_empty() {
            return None;
        }
        map.get(&channel_id).cloned()
    }

    pub fn tracks_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Arc<RemoteTrack>>> {
        self.tracks.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_edge(&self, addr: Option<SocketAddr>) {
        *self.edge.lock().unwrap_or_else(|e| e.into_inner()) = addr;
    }

    pub fn edge(&self) -> Option<SocketAddr> {
        *self.edge.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// When the edge was last heard from (any frame chunk or datagram), and
/// when it last sent media (microseconds since the link opened: finer than
/// a loopback round trip, so an answer is never taken for older than the
/// question it answers).
pub(crate) struct Liveness {
    /// This link's number: links opened later have higher ones.
    pub link: u64,
    epoch: Instant,
    last_us: AtomicU64,
    /// 0: no media yet.
    media_us: AtomicU64,
}

impl Liveness {
    pub fn new() -> Self {
        static LINKS: AtomicU64 = AtomicU64::new(1);
        Liveness {
            link: LINKS.fetch_add(1, Ordering::Relaxed),
            epoch: Instant::now(),
            last_us: AtomicU64::new(0),
            media_us: AtomicU64::new(0),
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    pub fn touch(&self) {
        self.last_us.fetch_max(self.now_us(), Ordering::Relaxed);
    }

    /// A media datagram arrived (also a byte heard).
    pub fn touch_media(&self) {
        let us = self.now_us().max(1);
        self.last_us.fetch_max(us, Ordering::Relaxed);
        self.media_us.fetch_max(us, Ordering::Relaxed);
    }

    pub fn last(&self) -> Instant {
        self.epoch + Duration::from_micros(self.last_us.load(Ordering::Relaxed))
    }

    pub fn last_media(&self) -> Option<Instant> {
        match self.media_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(self.epoch + Duration::from_micros(us)),
        }
    }
}

/// Where to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub edge: EdgeAddress,
    /// Index in the configured candidates; None for a goaway redirect.
    pub index: Option<usize>,
}

/// What a link's tasks report to the state machine.
pub(crate) enum Inbound {
    Frame(SK),
    /// The link is unusable (stream ended or failed, bad frame).
    Lost {
        reason: String,
        code: Option<ErrorCode>,
    },
}

pub(crate) struct Link {
    pub conn: quinn::Connection,
    pub target: Target,
    pub liveness: Arc<Liveness>,
    out: Option<mpsc::UnboundedSender<Bytes>>,
    writer: Option<JoinHandle<()>>,
    reader: JoinHandle<()>,
    media: JoinHandle<()>,
}

impl Link {
    /// Open the control stream on a fresh connection and start the tasks.
    pub async fn open(
        conn: quinn::Connection,
        target: Target,
        shared: Arc<Shared>,
    ) -> Result<(Link, mpsc::UnboundedReceiver<Inbound>), String> {
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| format!("opening the control stream: {}", describe_close(&e)))?;
        let liveness = Arc::new(Liveness::new());
        liveness.touch();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_frames(send, out_rx, in_tx.clone()));
        let reader = tokio::spawn(read_frames(
            recv,
            conn.clone(),
            in_tx,
            liveness.clone(),
            shared.clone(),
        ));
        let media = tokio::spawn(read_media(conn.clone(), liveness.clone(), shared));
        Ok((
            Link {
                conn,
                target,
                liveness,
                out: Some(out_tx),
                writer: Some(writer),
                reader,
                media,
            },
            in_rx,
        ))
    }

    /// Queue bytes (whole frames) for the control stream.
    pub fn send(&self, bytes: Bytes) {
        if let Some(out) = &self.out {
            let _ = out.send(bytes);
        }
    }

    /// Flush what is queued, finish the control stream, and close the
    /// connection with `code` (waits at most `wait` for the flush).
    pub async fn shutdown(&mut self, code: u32, reason: &str, wait: Duration) {
        self.out = None;
        if let Some(w) = self.writer.take() {
            let _ = tokio::time::timeout(wait, w).await;
        }
        self.close(code, reason);
    }

    pub fn close(&self, code: u32, reason: &str) {
        self.conn
            .close(quinn::VarInt::from_u32(code), reason.as_bytes());
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
        self.media.abort();
        if let Some(w) = &self.writer {
            w.abort();
        }
    }
}

/// Write the frames the state machine queues (already encoded, see
/// `Link::send`), whatever is ready at once in one write.
async fn write_frames(
    send: quinn::SendStream,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    lost: mpsc::UnboundedSender<Inbound>,
) {
    let mut out = FrameWriter::new(send);
    while let Some(first) = rx.recv().await {
        out.queue_encoded(&first);
        while !out.batch_full() {
            match rx.try_recv() {
                Ok(more) => out.queue_encoded(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = out.flush().await {
            let _ = lost.send(Inbound::Lost {
                reason: format!("writing the control stream: {e}"),
                code: None,
            });
            return;
        }
    }
    let _ = out.finish().await;
}

/// The control stream as the frame reader reads it: every read that brings
/// bytes proves the edge alive, even in the middle of a large frame.
struct LivenessReader {
    recv: quinn::RecvStream,
    liveness: Arc<Liveness>,
}

impl AsyncRead for LivenessReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.recv).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.liveness.touch();
        }
        polled
    }
}

async fn read_frames(
    recv: quinn::RecvStream,
    conn: quinn::Connection,
    tx: mpsc::UnboundedSender<Inbound>,
    liveness: Arc<Liveness>,
    shared: Arc<Shared>,
) {
    let mut frames = FrameReader::new(LivenessReader { recv, liveness });
    let lost = loop {
        match frames.next_frame::<pb::ServerFrame>().await {
            Ok(Some(pb::ServerFrame { kind: Some(k) })) => {
                if tx.send(Inbound::Frame(k)).is_err() {
                    return;
                }
            }
            // A frame kind from a newer protocol revision: ignore it.
            Ok(Some(pb::ServerFrame { kind: None })) => {
                bump(&shared.stats.frames_unknown, 1);
            }
            // The end of the stream; one in the middle of a frame is taken
            // the same way (the link is lost either way), as the SDK always
            // has.
            Ok(None) | Err(StreamError::Frame(FrameError::Truncated)) => {
                break Inbound::Lost {
                    reason: "the edge ended the control stream".into(),
                    code: None,
                }
            }
            Err(StreamError::Io(e)) => {
                // quinn's read errors travel inside the io::Error.
                let quic = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<quinn::ReadError>());
                break match quic {
                    Some(quinn::ReadError::ConnectionLost(e)) => Inbound::Lost {
                        reason: describe_close(e),
                        code: close_code(e),
                    },
                    _ => Inbound::Lost {
                        reason: format!("reading the control stream: {e}"),
                        code: None,
                    },
                };
            }
            Err(StreamError::Frame(e)) => {
                let code = match e {
                    FrameError::TooLarge(_) => ErrorCode::FrameTooLarge,
                    _ => ErrorCode::MalformedFrame,
                };
                debug!(error = %e, "bad frame from the edge; closing the connection");
                conn.close(
                    quinn::VarInt::from_u32(code as u32),
                    e.to_string().as_bytes(),
                );
                break Inbound::Lost {
                    reason: format!("bad frame from the edge: {e}"),
                    code: None,
                };
            }
        }
    };
    let _ = tx.send(lost);
}

use crate::channel::now_us;

/// While packets of tracks not announced yet are held, how often to look
/// whether they are now: the announcement comes on the control stream a
/// moment before or after its first packets, so a few milliseconds.
const EARLY_LOOK: std::time::Duration = std::time::Duration::from_millis(5);

/// Read the edge's datagrams: media for the app (gaps in each track NACKed
/// back to the edge when due, duplicates dropped), and the edge's NACKs for
/// media this client sent.
async fn read_media(conn: quinn::Connection, liveness: Arc<Liveness>, shared: Arc<Shared>) {
    let stats = &shared.stats;
    let mut gaps = shared
        .repair_out
        .is_some()
        .then(|| repair::HopReceiver::new(false, std::time::Instant::now()));
    let mut early = repair::early::EarlyMedia::default();
    loop {
        let due = gaps.as_ref().and_then(|g| g.next_due());
        let look_early = (!early.is_empty()).then(|| std::time::Instant::now() + EARLY_LOOK);
        let d = tokio::select! {
            d = conn.read_datagram() => match d {
                Ok(d) => d,
                Err(_) => return,
            },
            _ = sleep_until(due), if due.is_some() => {
                if let Some(g) = gaps.as_mut() {
                    send_nacks(&conn, stats, g);
                }
                continue;
            }
            _ = sleep_until(look_early), if look_early.is_some() => {
                release_early(&shared, &liveness, &mut early, std::time::Instant::now());
                continue;
            }
        };
        liveness.touch_media();
        if d.first() == Some(&TYPE_NACK) {
            match Nack::decode(&d) {
                Ok(n) if !n.relay => {
                    for pkt in shared.answer_nack(&n) {
                        let _ = conn.send_datagram(pkt);
                    }
                }
                _ => bump(&stats.media_malformed, 1),
            }
            continue;
        }
        let Ok(h) = MediaHeader::decode(&d) else {
            bump(&stats.media_malformed, 1);
            continue;
        };
        if let Some(g) = gaps.as_mut() {
            match g.on_media(&h, std::time::Instant::now()) {
                repair::Arrival::Duplicate | repair::Arrival::TooOld => {
                    bump(&stats.media_duplicate, 1);
                    continue;
                }
                repair::Arrival::Recovered => bump(&stats.media_recovered, 1),
                _ => {}
            }
        }
        let now = std::time::Instant::now();
        match known_track(&shared, &h) {
            Some(track) => {
                release_early(&shared, &liveness, &mut early, now);
                deliver_media(&shared, &liveness, track, h, d);
            }
            // Announced on the control stream, which may be read after its
            // first packets: held until it is (repair::early).
            None => {
                let dropped = early.hold(h, d, now);
                bump(&stats.media_unknown_track, dropped as u64);
            }
        }
    }
}

/// The track a media header names, if this client knows it (announced in
/// its channel).
fn known_track(shared: &Shared, h: &MediaHeader) -> Option<Arc<RemoteTrack>> {
    shared
        .tracks
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&h.track.0)
        .cloned()
        .filter(|t| t.channel_id == h.channel.0)
}

/// Deliver the held packets whose tracks are known now, in the order they
/// came; count those that waited too long.
fn release_early(
    shared: &Shared,
    liveness: &Liveness,
    early: &mut repair::early::EarlyMedia,
    now: std::time::Instant,
) {
    if early.is_empty() {
        return;
    }
    let (released, dropped) = early.release(|key| known_key(shared, key), now);
    bump(&shared.stats.media_unknown_track, dropped as u64);
    for (h, d) in released {
        if let Some(track) = known_track(shared, &h) {
            deliver_media(shared, liveness, track, h, d);
        }
    }
}

fn known_key(shared: &Shared, key: protocol::TrackKey) -> bool {
    shared
        .tracks
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(&key.0)
}

/// A media packet of a known track: to the jitter buffer (or the app),
/// unless it is a duplicate, too late or does not open.
fn deliver_media(
    shared: &Shared,
    liveness: &Liveness,
    track: Arc<RemoteTrack>,
    h: MediaHeader,
    d: Bytes,
) {
    let stats = &shared.stats;
    let fresh = track.stream.arrived(
        h.sequence,
        h.timestamp_us,
        liveness.link,
        std::time::Instant::now(),
    );
    if !fresh {
        // Its copy came by the other link (or key) of a move.
        bump(&stats.media_duplicate, 1);
        return;
    }
    if !track
        .lateness
        .on_time(h.timestamp_us, now_us(), shared.max_media_lateness_us)
    {
        bump(&stats.media_late, 1);
        return;
    }
    let payload = match shared.e2ee(h.channel.0) {
        None => d.slice(MEDIA_HEADER_LEN..),
        Some(ring) => match ring.open_media(&d, &track.user, &track.name) {
            Ok(p) => {
                ring.note_success(&track.user);
                p
            }
            Err(error) => {
                bump(&stats.media_undecryptable, 1);
                if ring.note_failure(&track.user, error) {
                    debug!(channel = %track.channel, user = %track.user, %error, "media did not open");
                    shared.events.push(Event::Undecryptable {
                        channel: track.channel.clone(),
                        user: track.user.clone(),
                        error,
                    });
                }
                return;
            }
        },
    };
    bump(&stats.media_received, 1);
    if let Some(players) = &shared.players {
        let kind = match h.track.kind() {
            protocol::MediaKind::Audio => TrackKind::Audio,
            protocol::MediaKind::Video => TrackKind::Video,
            protocol::MediaKind::Other => TrackKind::Data,
        };
        players.push(&track, kind, h.sequence, h.timestamp_us, payload);
        return;
    }
    let now = SystemTime::now();
    let queued = shared.events.push_media(Media {
        channel: track.channel.clone(),
        user: track.user.clone(),
        track: track.name.clone(),
        sequence: h.sequence,
        timestamp_us: h.timestamp_us,
        payload,
        received_at: now,
        played_at: now,
    });
    if !queued {
        bump(&stats.media_dropped, 1);
    }
}

/// Sleep until `t`; forever when `None` (a `select!` branch then disabled).
async fn sleep_until(t: Option<std::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Send the NACKs `gaps` has due to the edge.
fn send_nacks(conn: &quinn::Connection, stats: &Stats, gaps: &mut repair::HopReceiver) {
    let rtt = conn.rtt();
    let jitter = repair::gaps::last_mile_jitter(rtt);
    let (nacks, asked) = gaps.nacks(std::time::Instant::now(), rtt, jitter);
    bump(&stats.media_nacked, asked as u64);
    for n in nacks {
        let _ = conn.send_datagram(n);
    }
}

/// Client endpoints, one per address family, made when first needed.
#[derive(Default)]
pub(crate) struct Endpoints {
    v4: Option<quinn::Endpoint>,
    v6: Option<quinn::Endpoint>,
}

impl Endpoints {
    pub fn for_addr(
        &mut self,
        addr: &SocketAddr,
        factory: Option<&crate::config::SocketFactory>,
        local_ip: Option<std::net::IpAddr>,
    ) -> Result<quinn::Endpoint, String> {
        let (slot, mut bind) = if addr.is_ipv4() {
            (&mut self.v4, SocketAddr::from(([0, 0, 0, 0], 0)))
        } else {
            (&mut self.v6, SocketAddr::from(([0u16; 8], 0)))
        };
        if let Some(ip) = local_ip.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
            bind.set_ip(ip);
        }
        if let Some(e) = slot {
            return Ok(e.clone());
        }
        let e = match factory {
            None => quinn::Endpoint::client(bind),
            Some(f) => (f.0)(bind).and_then(|socket| {
                quinn::Endpoint::new_with_abstract_socket(
                    quinn::EndpointConfig::default(),
                    None,
                    socket,
                    Arc::new(quinn::TokioRuntime),
                )
            }),
        }
        .map_err(|e| format!("binding {bind}: {e}"))?;
        *slot = Some(e.clone());
        Ok(e)
    }

    /// Let close frames go out before the endpoints are dropped.
    pub async fn wait_idle(&self, limit: Duration) {
        let wait = async {
            for e in [&self.v4, &self.v6].into_iter().flatten() {
                e.wait_idle().await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }
}

/// Timing of one connection round.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RoundTiming {
    pub connect_timeout: Duration,
    pub stagger: Duration,
}

/// Try `targets` in order, starting the next one when the previous failed or
/// after `stagger` (whichever comes first), each for at most
/// `connect_timeout`. The first completed handshake wins; the others are
/// abandoned.
pub(crate) async fn connect_round(
    attempts: Vec<(quinn::Endpoint, Target)>,
    quic: EdgeTls,
    timing: RoundTiming,
) -> Result<(quinn::Connection, Target), String> {
    if attempts.is_empty() {
        return Err("no candidate edges".into());
    }
    let total = attempts.len();
    let mut queue = attempts.into_iter();
    let mut running = JoinSet::new();
    let mut errors = Vec::new();
    let start = |running: &mut JoinSet<_>, (endpoint, target): (quinn::Endpoint, Target)| {
        let quic = quic.clone();
        running.spawn(async move {
            let attempt = async {
                endpoint
                    .connect_with(
                        quic.config_for(&target.edge)?,
                        target.edge.addr,
                        &target.edge.server_name,
                    )
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| describe_close(&e))
            };
            let r = match tokio::time::timeout(timing.connect_timeout, attempt).await {
                Ok(r) => r,
                Err(_) => Err("timed out".into()),
            };
            (target, r)
        });
    };
    if let Some(a) = queue.next() {
        start(&mut running, a);
    }
    let mut started = 1;
    loop {
        let stagger = tokio::time::sleep(timing.stagger);
        tokio::select! {
            done = running.join_next() => match done {
                Some(Ok((target, Ok(conn)))) => {
                    running.abort_all();
                    return Ok((conn, target));
                }
                Some(failed) => {
                    match failed {
                        Ok((target, Err(e))) => {
                            debug!(edge = %target.edge.addr, error = %e, "connection attempt failed");
                            errors.push(format!("{} ({}): {e}", target.edge.addr, target.edge.server_name));
                        }
                        Err(e) => errors.push(format!("connection attempt task failed: {e}")),
                        Ok((_, Ok(_))) => {}
                    }
                    if let Some(a) = queue.next() {
                        start(&mut running, a);
                        started += 1;
                    } else if running.is_empty() {
                        return Err(errors.join("; "));
                    }
                }
                None => return Err(errors.join("; ")),
            },
            _ = stagger, if started < total => {
                if let Some(a) = queue.next() {
                    start(&mut running, a);
                    started += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn liveness_tracks_the_last_byte() {
        let l = Liveness::new();
        let t0 = Instant::now();
        l.touch();
        assert_eq!(l.last(), t0);
        tokio::time::advance(Duration::from_millis(450)).await;
        assert_eq!(l.last(), t0, "silence does not move it");
        l.touch();
        assert_eq!(l.last(), t0 + Duration::from_millis(450));
        // A late touch from another task never moves it back.
        l.last_us.store(100, Ordering::Relaxed);
        l.touch();
        assert_eq!(l.last(), t0 + Duration::from_millis(450));
        // Media is a byte heard too, and remembered apart.
        assert_eq!(l.last_media(), None);
        tokio::time::advance(Duration::from_millis(10)).await;
        l.touch_media();
        assert_eq!(l.last_media(), Some(t0 + Duration::from_millis(460)));
        assert_eq!(l.last(), t0 + Duration::from_millis(460));
    }

    #[tokio::test]
    async fn a_round_without_candidates_fails_at_once() {
        let quic = EdgeTls::new(&crate::tls::EdgeTrust::WebPki, Duration::from_secs(10)).unwrap();
        let timing = RoundTiming {
            connect_timeout: Duration::from_secs(1),
            stagger: Duration::from_millis(10),
        };
        let r = tokio::time::timeout(
            Duration::from_millis(100),
            connect_round(vec![], quic, timing),
        )
        .await
        .unwrap();
        assert_eq!(r.err().as_deref(), Some("no candidate edges"));
    }
}
