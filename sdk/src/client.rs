//! The client: one supervisor task owns the connection to the current edge,
//! (re)establishes it, and re-creates the client's channel state on every new
//! connection. API calls are commands to that task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use protocol::datagram::{MediaHeader, MEDIA_HEADER_LEN};
use protocol::framing::{self, FrameBuffer};
use protocol::pb::{self, client_frame::Kind as CK, server_frame::Kind as SK};
use protocol::{ChannelId, TrackKey};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use crate::config::{ClientConfig, EdgeCandidate};
use crate::error::SdkError;
use crate::reorder::{Incoming, ReorderBuffer};
use crate::replay::ReplayWindow;

pub use protocol::pb::TrackKind;

/// Something that happened in a channel or to the connection.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    MemberJoined {
        channel: String,
        user: String,
    },
    MemberLeft {
        channel: String,
        user: String,
    },
    TrackAvailable {
        channel: String,
        user: String,
        track: String,
    },
    TrackUnavailable {
        channel: String,
        user: String,
        track: String,
    },
    Media(Media),
    Message(Message),
    /// The connection was lost; the client is reconnecting.
    Reconnecting {
        reason: String,
    },
    /// Connected again, channels being restored.
    Reconnected {
        edge: SocketAddr,
    },
    /// An error not tied to a call (e.g. a rejoin refused).
    Error(SdkError),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Media {
    pub channel: String,
    pub user: String,
    pub track: String,
    pub sequence: u32,
    pub timestamp_us: u64,
    pub payload: Bytes,
    pub received_at: SystemTime,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub channel: String,
    pub from: String,
    pub seq: u64,
    pub payload: Bytes,
    pub sent_at_us: u64,
}

/// Counters, readable at any time.
#[derive(Debug, Default)]
pub struct Stats {
    pub messages_sent: AtomicU64,
    pub messages_acked: AtomicU64,
    pub messages_delivered: AtomicU64,
    pub messages_duplicate: AtomicU64,
    pub messages_skipped: AtomicU64,
    pub media_sent: AtomicU64,
    pub media_received: AtomicU64,
    pub media_unknown_track: AtomicU64,
    pub reconnects: AtomicU64,
}

struct TrackMeta {
    channel: String,
    user: String,
    name: String,
}

struct Shared {
    conn: Mutex<Option<quinn::Connection>>,
    tracks: Mutex<HashMap<u64, TrackMeta>>,
    stats: Stats,
    /// Milliseconds since `epoch` of the last byte from the edge.
    last_rx_ms: AtomicU64,
    epoch: Instant,
}

impl Shared {
    fn touch(&self) {
        self.last_rx_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_rx_ms.load(Ordering::Relaxed)))
    }
}

type Reply<T> = oneshot::Sender<Result<T, SdkError>>;

enum Cmd {
    Join {
        token: String,
        channel: String,
        subscribe_all: bool,
        reply: Reply<JoinInfo>,
    },
    Leave {
        channel_id: u64,
        reply: Reply<()>,
    },
    Publish {
        channel_id: u64,
        name: String,
        kind: TrackKind,
        key: Arc<AtomicU64>,
        reply: Reply<()>,
    },
    Subscribe {
        channel_id: u64,
        user: String,
        on: bool,
        reply: Reply<()>,
    },
    Message {
        channel_id: u64,
        payload: Bytes,
        reply: Reply<u64>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

struct JoinInfo {
    channel_id: u64,
    user: String,
}

/// A connected client. Cheap to share by reference; drop or `close` it.
pub struct Client {
    cmds: mpsc::UnboundedSender<Cmd>,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>,
    shared: Arc<Shared>,
    request_timeout: Duration,
}

/// A joined channel.
#[derive(Clone)]
pub struct Channel {
    pub name: String,
    pub id: u64,
    pub user: String,
    cmds: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
    request_timeout: Duration,
}

/// Sends media on one track. Survives reconnects (the key follows the edge).
pub struct TrackPublisher {
    channel_id: u64,
    key: Arc<AtomicU64>,
    seq: AtomicU32,
    shared: Arc<Shared>,
}

async fn call<T>(
    cmds: &mpsc::UnboundedSender<Cmd>,
    timeout: Duration,
    make: impl FnOnce(Reply<T>) -> Cmd,
) -> Result<T, SdkError> {
    let (tx, rx) = oneshot::channel();
    cmds.send(make(tx)).map_err(|_| SdkError::Closed)?;
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(SdkError::Closed),
        Err(_) => Err(SdkError::Timeout),
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Client {
    /// Connect to the first candidate edge that answers.
    pub async fn connect(cfg: ClientConfig) -> Result<Client, SdkError> {
        if cfg.edges.is_empty() {
            return Err(SdkError::Invalid("no candidate edges".into()));
        }
        let quic = crate::tls::quic_config(&cfg.ca_pem, Duration::from_secs(10))?;
        let bind: SocketAddr = if cfg.edges[0].addr.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .map_err(|_| SdkError::Invalid("bind address".into()))?;
        let endpoint =
            quinn::Endpoint::client(bind).map_err(|e| SdkError::Connect(e.to_string()))?;
        let shared = Arc::new(Shared {
            conn: Mutex::new(None),
            tracks: Mutex::default(),
            stats: Stats::default(),
            last_rx_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let mut sup = Supervisor {
            cfg: cfg.clone(),
            quic,
            endpoint,
            shared: shared.clone(),
            events: ev_tx,
            channels: HashMap::new(),
            receivers: HashMap::new(),
            pending: HashMap::new(),
            next_rid: 0,
            redirect: vec![],
            current: 0,
        };
        let first = sup.connect_round().await?;
        tokio::spawn(sup.run(first, cmd_rx));
        Ok(Client {
            cmds: cmd_tx,
            events: tokio::sync::Mutex::new(ev_rx),
            shared,
            request_timeout: cfg.request_timeout,
        })
    }

    /// Join `channel` with a token from the app's server.
    pub async fn join(
        &self,
        token: &str,
        channel: &str,
        subscribe_all: bool,
    ) -> Result<Channel, SdkError> {
        let info = call(&self.cmds, self.request_timeout, |reply| Cmd::Join {
            token: token.into(),
            channel: channel.into(),
            subscribe_all,
            reply,
        })
        .await?;
        Ok(Channel {
            name: channel.into(),
            id: info.channel_id,
            user: info.user,
            cmds: self.cmds.clone(),
            shared: self.shared.clone(),
            request_timeout: self.request_timeout,
        })
    }

    /// The next event; None once the client is closed.
    pub async fn next_event(&self) -> Option<Event> {
        self.events.lock().await.recv().await
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The edge currently connected to.
    pub fn edge(&self) -> Option<SocketAddr> {
        self.shared
            .conn
            .lock()
            .ok()?
            .as_ref()
            .map(|c| c.remote_address())
    }

    /// Leave every channel and close the connection cleanly.
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Close { reply: tx }).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }
}

impl Channel {
    pub async fn publish_track(
        &self,
        name: &str,
        kind: TrackKind,
    ) -> Result<TrackPublisher, SdkError> {
        let key = Arc::new(AtomicU64::new(0));
        call(&self.cmds, self.request_timeout, |reply| Cmd::Publish {
            channel_id: self.id,
            name: name.into(),
            kind,
            key: key.clone(),
            reply,
        })
        .await?;
        Ok(TrackPublisher {
            channel_id: self.id,
            key,
            seq: AtomicU32::new(0),
            shared: self.shared.clone(),
        })
    }

    /// Receive media from `user`, or from everyone with None.
    pub async fn subscribe(&self, user: Option<&str>) -> Result<(), SdkError> {
        self.subscription(user, true).await
    }

    pub async fn unsubscribe(&self, user: Option<&str>) -> Result<(), SdkError> {
        self.subscription(user, false).await
    }

    async fn subscription(&self, user: Option<&str>, on: bool) -> Result<(), SdkError> {
        call(&self.cmds, self.request_timeout, |reply| Cmd::Subscribe {
            channel_id: self.id,
            user: user.unwrap_or_default().into(),
            on,
            reply,
        })
        .await
    }

    /// Send a reliable message; returns its sequence number. Delivery is
    /// ordered per sender and survives reconnects (replay window).
    pub async fn send_message(&self, payload: Bytes) -> Result<u64, SdkError> {
        if payload.len() > protocol::limits::MAX_MESSAGE_PAYLOAD {
            return Err(SdkError::Invalid("message payload too large".into()));
        }
        call(&self.cmds, self.request_timeout, |reply| Cmd::Message {
            channel_id: self.id,
            payload,
            reply,
        })
        .await
    }

    pub async fn leave(self) -> Result<(), SdkError> {
        call(&self.cmds, self.request_timeout, |reply| Cmd::Leave {
            channel_id: self.id,
            reply,
        })
        .await
    }
}

impl TrackPublisher {
    /// Send one media packet (sequence and timestamp are set here). Waits on
    /// QUIC's congestion control rather than letting quinn drop silently.
    pub async fn send(&self, payload: &[u8]) -> Result<(), SdkError> {
        let conn = self
            .shared
            .conn
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .ok_or(SdkError::NotConnected)?;
        let key = self.key.load(Ordering::Acquire);
        if key == 0 {
            return Err(SdkError::NotConnected);
        }
        let h = MediaHeader {
            channel: ChannelId(self.channel_id),
            track: TrackKey(key),
            sequence: self.seq.fetch_add(1, Ordering::Relaxed),
            timestamp_us: now_us(),
        };
        let d = h
            .encode(payload)
            .map_err(|e| SdkError::Invalid(e.to_string()))?;
        conn.send_datagram_wait(d)
            .await
            .map_err(|_| SdkError::NotConnected)?;
        self.shared.stats.media_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

struct ChannelState {
    name: String,
    token: String,
    subscribe_all: bool,
    tracks: Vec<(String, TrackKind, Arc<AtomicU64>)>,
    subscriptions: Vec<String>,
    window: ReplayWindow,
}

enum Pending {
    Join {
        reply: Reply<JoinInfo>,
        token: String,
        channel: String,
        subscribe_all: bool,
    },
    Rejoin,
    Publish {
        reply: Option<Reply<()>>,
        key: Arc<AtomicU64>,
        entry: Option<(String, TrackKind)>,
    },
    Done(Reply<()>),
}

/// Why a connection ended.
enum End {
    Closed,
    Lost(String),
}

struct Supervisor {
    cfg: ClientConfig,
    quic: quinn::ClientConfig,
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Event>,
    channels: HashMap<u64, ChannelState>,
    receivers: HashMap<(u64, String), ReorderBuffer>,
    pending: HashMap<u32, Pending>,
    next_rid: u32,
    redirect: Vec<EdgeCandidate>,
    /// Index of the candidate last connected to.
    current: usize,
}

impl Supervisor {
    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// One pass over the goaway redirects, then the candidates starting after
    /// the one that failed.
    async fn connect_round(&mut self) -> Result<quinn::Connection, SdkError> {
        let n = self.cfg.edges.len();
        let mut order: Vec<(Option<usize>, EdgeCandidate)> = std::mem::take(&mut self.redirect)
            .into_iter()
            .map(|c| (None, c))
            .collect();
        order.extend((0..n).map(|i| {
            let idx = (self.current + i) % n;
            (Some(idx), self.cfg.edges[idx].clone())
        }));
        let mut last = String::from("no candidates");
        for (idx, cand) in order {
            let attempt = async {
                self.endpoint
                    .connect_with(self.quic.clone(), cand.addr, &cand.server_name)
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            };
            match tokio::time::timeout(self.cfg.connect_timeout, attempt).await {
                Ok(Ok(conn)) => {
                    if let Some(i) = idx {
                        self.current = i;
                    }
                    return Ok(conn);
                }
                Ok(Err(e)) => last = format!("{}: {e}", cand.addr),
                Err(_) => last = format!("{}: timed out", cand.addr),
            }
        }
        Err(SdkError::Connect(last))
    }

    async fn run(mut self, first: quinn::Connection, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let mut conn = Some(first);
        let mut backoff = self.cfg.backoff_initial;
        loop {
            let c = match conn.take() {
                Some(c) => c,
                None => match self.connect_round().await {
                    Ok(c) => {
                        backoff = self.cfg.backoff_initial;
                        self.shared.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        self.emit(Event::Reconnected {
                            edge: c.remote_address(),
                        });
                        c
                    }
                    Err(e) => {
                        debug!(error = %e, "reconnect round failed");
                        let jitter = backoff.mul_f64(rand::random::<f64>());
                        tokio::time::sleep(backoff + jitter).await;
                        backoff = (backoff * 2).min(self.cfg.backoff_max);
                        continue;
                    }
                },
            };
            match self.serve(c, &mut cmds).await {
                End::Closed => return,
                End::Lost(reason) => {
                    info!(%reason, "connection to edge lost; reconnecting");
                    self.emit(Event::Reconnecting { reason });
                    self.fail_pending();
                    // Move on from the edge that failed unless it redirected us.
                    self.current = (self.current + 1) % self.cfg.edges.len();
                }
            }
        }
    }

    fn fail_pending(&mut self) {
        for (_, p) in self.pending.drain() {
            match p {
                Pending::Join { reply, .. } => {
                    let _ = reply.send(Err(SdkError::NotConnected));
                }
                Pending::Publish { reply: Some(r), .. } | Pending::Done(r) => {
                    let _ = r.send(Err(SdkError::NotConnected));
                }
                _ => {}
            }
        }
    }

    async fn serve(
        &mut self,
        conn: quinn::Connection,
        cmds: &mut mpsc::UnboundedReceiver<Cmd>,
    ) -> End {
        let (mut send, recv) = match conn.open_bi().await {
            Ok(s) => s,
            Err(e) => return End::Lost(e.to_string()),
        };
        *self.shared.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        self.shared.touch();
        let (ftx, mut frames) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_frames(recv, ftx, self.shared.clone()));
        let media = tokio::spawn(read_media(
            conn.clone(),
            self.shared.clone(),
            self.events.clone(),
        ));
        let mut out = BytesMut::new();
        // Restore every channel on the new connection.
        let ids: Vec<u64> = self.channels.keys().copied().collect();
        for id in ids {
            let rid = self.rid();
            let ch = &self.channels[&id];
            queue(
                &mut out,
                CK::Join(pb::Join {
                    request_id: rid,
                    token: ch.token.clone(),
                    subscribe_all: ch.subscribe_all,
                    channel: ch.name.clone(),
                }),
            );
            self.pending.insert(rid, Pending::Rejoin);
        }
        let mut tick = tokio::time::interval(self.cfg.keepalive_interval);
        let end = loop {
            if !out.is_empty() {
                if let Err(e) = send.write_all(&out).await {
                    break End::Lost(e.to_string());
                }
                out.clear();
            }
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Close { reply }) => {
                        for id in self.channels.keys() {
                            queue(&mut out, CK::Leave(pb::Leave { request_id: 0, channel_id: *id }));
                        }
                        let _ = send.write_all(&out).await;
                        let _ = send.finish();
                        conn.close(0u32.into(), b"client closed");
                        let _ = reply.send(());
                        break End::Closed;
                    }
                    Some(cmd) => self.command(cmd, &mut out),
                    None => {
                        conn.close(0u32.into(), b"client dropped");
                        break End::Closed;
                    }
                },
                f = frames.recv() => match f {
                    Some(SK::Goaway(g)) => {
                        self.redirect = g
                            .redirect
                            .iter()
                            .filter_map(|r| Some(EdgeCandidate { addr: r.addr.parse().ok()?, server_name: r.server_name.clone() }))
                            .collect();
                        let wait = g.reconnect_after_ms as u64;
                        let spread = (rand::random::<f64>() * wait as f64) as u64;
                        tokio::time::sleep(Duration::from_millis(wait + spread)).await;
                        conn.close(0u32.into(), b"goaway");
                        break End::Lost("edge sent goaway".into());
                    }
                    Some(f) => self.frame(f, &mut out),
                    None => break End::Lost(conn.close_reason().map(|r| r.to_string()).unwrap_or_else(|| "control stream ended".into())),
                },
                _ = tick.tick() => {
                    if self.shared.silent_for() > self.cfg.liveness_timeout {
                        conn.close(0u32.into(), b"edge unresponsive");
                        break End::Lost("edge unresponsive".into());
                    }
                    queue(&mut out, CK::Keepalive(pb::Keepalive { nonce: rand::random() }));
                    self.poll_reorder();
                }
            }
        };
        *self.shared.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
        reader.abort();
        media.abort();
        end
    }

    fn rid(&mut self) -> u32 {
        self.next_rid = self.next_rid.wrapping_add(1).max(1);
        self.next_rid
    }

    fn command(&mut self, cmd: Cmd, out: &mut BytesMut) {
        match cmd {
            Cmd::Join {
                token,
                channel,
                subscribe_all,
                reply,
            } => {
                let rid = self.rid();
                queue(
                    out,
                    CK::Join(pb::Join {
                        request_id: rid,
                        token: token.clone(),
                        subscribe_all,
                        channel: channel.clone(),
                    }),
                );
                self.pending.insert(
                    rid,
                    Pending::Join {
                        reply,
                        token,
                        channel,
                        subscribe_all,
                    },
                );
            }
            Cmd::Leave { channel_id, reply } => {
                self.channels.remove(&channel_id);
                self.receivers.retain(|(c, _), _| *c != channel_id);
                let rid = self.rid();
                queue(
                    out,
                    CK::Leave(pb::Leave {
                        request_id: rid,
                        channel_id,
                    }),
                );
                self.pending.insert(rid, Pending::Done(reply));
            }
            Cmd::Publish {
                channel_id,
                name,
                kind,
                key,
                reply,
            } => {
                if !self.channels.contains_key(&channel_id) {
                    let _ = reply.send(Err(SdkError::Invalid("channel not joined".into())));
                    return;
                }
                let rid = self.rid();
                queue(
                    out,
                    CK::PublishTrack(pb::PublishTrack {
                        request_id: rid,
                        channel_id,
                        name: name.clone(),
                        kind: kind as i32,
                    }),
                );
                self.pending.insert(
                    rid,
                    Pending::Publish {
                        reply: Some(reply),
                        key,
                        entry: Some((name, kind)),
                    },
                );
            }
            Cmd::Subscribe {
                channel_id,
                user,
                on,
                reply,
            } => {
                let Some(ch) = self.channels.get_mut(&channel_id) else {
                    let _ = reply.send(Err(SdkError::Invalid("channel not joined".into())));
                    return;
                };
                if on {
                    ch.subscriptions.push(user.clone());
                } else {
                    ch.subscriptions.retain(|u| *u != user);
                }
                let rid = self.rid();
                if on {
                    queue(
                        out,
                        CK::Subscribe(pb::Subscribe {
                            request_id: rid,
                            channel_id,
                            user_id: user,
                        }),
                    );
                    self.pending.insert(rid, Pending::Done(reply));
                } else {
                    queue(
                        out,
                        CK::Unsubscribe(pb::Unsubscribe {
                            request_id: rid,
                            channel_id,
                            user_id: user,
                        }),
                    );
                    let _ = reply.send(Ok(()));
                }
            }
            Cmd::Message {
                channel_id,
                payload,
                reply,
            } => {
                let Some(ch) = self.channels.get_mut(&channel_id) else {
                    let _ = reply.send(Err(SdkError::Invalid("channel not joined".into())));
                    return;
                };
                match ch.window.push(payload, now_us()) {
                    Some(s) => {
                        queue(out, CK::Message(chat(channel_id, &s, "")));
                        self.shared
                            .stats
                            .messages_sent
                            .fetch_add(1, Ordering::Relaxed);
                        let _ = reply.send(Ok(s.seq));
                    }
                    None => {
                        let _ = reply.send(Err(SdkError::Backpressure));
                    }
                }
            }
            Cmd::Close { .. } => {}
        }
    }

    fn frame(&mut self, f: SK, out: &mut BytesMut) {
        match f {
            SK::Joined(j) => self.joined(j, out),
            SK::Error(e) => {
                let err = SdkError::from_wire(e.code, e.message);
                match self.pending.remove(&e.request_id) {
                    Some(Pending::Join { reply, .. }) => {
                        let _ = reply.send(Err(err));
                    }
                    Some(Pending::Publish { reply: Some(r), .. }) | Some(Pending::Done(r)) => {
                        let _ = r.send(Err(err));
                    }
                    _ => self.emit(Event::Error(err)),
                }
            }
            SK::TrackPublished(t) => {
                if let Some(Pending::Publish { reply, key, entry }) =
                    self.pending.remove(&t.request_id)
                {
                    key.store(t.track_key, Ordering::Release);
                    if let (Some((name, kind)), Some(ch)) =
                        (entry, self.channels.get_mut(&t.channel_id))
                    {
                        ch.tracks.push((name, kind, key));
                    }
                    if let Some(r) = reply {
                        let _ = r.send(Ok(()));
                    }
                }
            }
            SK::Subscribed(pb::Subscribed { request_id, .. })
            | SK::Left(pb::Left { request_id, .. }) => {
                if let Some(Pending::Done(r)) = self.pending.remove(&request_id) {
                    let _ = r.send(Ok(()));
                }
            }
            SK::MemberJoined(m) => {
                let Some(ch) = self.channels.get(&m.channel_id) else {
                    return;
                };
                // A member (re)appeared: it may have missed messages while it
                // moved; replay the window to it alone.
                for s in ch.window.replay() {
                    queue(out, CK::Message(chat(m.channel_id, s, &m.user_id)));
                }
                self.emit(Event::MemberJoined {
                    channel: ch.name.clone(),
                    user: m.user_id,
                });
            }
            SK::MemberLeft(m) => {
                if let Some(ch) = self.channels.get(&m.channel_id) {
                    self.emit(Event::MemberLeft {
                        channel: ch.name.clone(),
                        user: m.user_id,
                    });
                }
            }
            SK::TrackAvailable(t) => {
                let (Some(ch), Some(track)) = (self.channels.get(&t.channel_id), t.track) else {
                    return;
                };
                self.shared
                    .tracks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        track.track_key,
                        TrackMeta {
                            channel: ch.name.clone(),
                            user: t.user_id.clone(),
                            name: track.name.clone(),
                        },
                    );
                self.emit(Event::TrackAvailable {
                    channel: ch.name.clone(),
                    user: t.user_id,
                    track: track.name,
                });
            }
            SK::TrackUnavailable(t) => {
                let meta = self
                    .shared
                    .tracks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&t.track_key);
                if let Some(m) = meta {
                    self.emit(Event::TrackUnavailable {
                        channel: m.channel,
                        user: m.user,
                        track: m.name,
                    });
                }
            }
            SK::Message(m) => self.incoming_message(m),
            SK::MessageAck(a) => {
                if let Some(ch) = self.channels.get_mut(&a.channel_id) {
                    ch.window.ack(a.seq);
                    self.shared
                        .stats
                        .messages_acked
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            SK::Goaway(_) | SK::KeepaliveAck(_) => {}
        }
    }

    fn joined(&mut self, j: pb::Joined, out: &mut BytesMut) {
        {
            let mut tracks = self.shared.tracks.lock().unwrap_or_else(|e| e.into_inner());
            for m in &j.members {
                for t in &m.tracks {
                    tracks.insert(
                        t.track_key,
                        TrackMeta {
                            channel: j.channel.clone(),
                            user: m.user_id.clone(),
                            name: t.name.clone(),
                        },
                    );
                }
            }
        }
        match self.pending.remove(&j.request_id) {
            Some(Pending::Join {
                reply,
                token,
                channel,
                subscribe_all,
            }) => {
                self.channels.insert(
                    j.channel_id,
                    ChannelState {
                        name: channel,
                        token,
                        subscribe_all,
                        tracks: vec![],
                        subscriptions: vec![],
                        window: ReplayWindow::new(self.cfg.replay_window, self.cfg.max_unacked),
                    },
                );
                for m in &j.members {
                    self.emit(Event::MemberJoined {
                        channel: j.channel.clone(),
                        user: m.user_id.clone(),
                    });
                }
                let _ = reply.send(Ok(JoinInfo {
                    channel_id: j.channel_id,
                    user: j.user_id,
                }));
            }
            Some(Pending::Rejoin) => {
                // Restore tracks (new keys), subscriptions, then replay.
                let Some(ch) = self.channels.get(&j.channel_id) else {
                    return;
                };
                let tracks: Vec<_> = ch
                    .tracks
                    .iter()
                    .map(|(n, k, key)| (n.clone(), *k, key.clone()))
                    .collect();
                let subs = ch.subscriptions.clone();
                let replay: Vec<pb::ChatMessage> = ch
                    .window
                    .replay()
                    .map(|s| chat(j.channel_id, s, ""))
                    .collect();
                for (name, kind, key) in tracks {
                    key.store(0, Ordering::Release);
                    let rid = self.rid();
                    queue(
                        out,
                        CK::PublishTrack(pb::PublishTrack {
                            request_id: rid,
                            channel_id: j.channel_id,
                            name,
                            kind: kind as i32,
                        }),
                    );
                    self.pending.insert(
                        rid,
                        Pending::Publish {
                            reply: None,
                            key,
                            entry: None,
                        },
                    );
                }
                for user in subs {
                    let rid = self.rid();
                    queue(
                        out,
                        CK::Subscribe(pb::Subscribe {
                            request_id: rid,
                            channel_id: j.channel_id,
                            user_id: user,
                        }),
                    );
                }
                for m in replay {
                    queue(out, CK::Message(m));
                }
            }
            _ => {}
        }
    }

    fn incoming_message(&mut self, m: pb::ChatMessage) {
        let Some(ch) = self.channels.get(&m.channel_id) else {
            return;
        };
        let channel = ch.name.clone();
        let timeout = self.cfg.reorder_timeout;
        let buf = self
            .receivers
            .entry((m.channel_id, m.from_user.clone()))
            .or_insert_with(|| ReorderBuffer::new(1_024, timeout));
        let outcome = buf.offer(
            Incoming {
                seq: m.seq,
                payload: Bytes::from(m.payload),
                sent_at_us: m.sent_at_us,
            },
            Instant::now(),
        );
        self.deliver(&channel, &m.from_user, outcome);
    }

    fn poll_reorder(&mut self) {
        let now = Instant::now();
        let mut ready = vec![];
        for ((cid, from), buf) in self.receivers.iter_mut() {
            let o = buf.poll(now);
            if !o.deliver.is_empty() || o.skipped > 0 {
                ready.push((*cid, from.clone(), o));
            }
        }
        for (cid, from, o) in ready {
            if let Some(name) = self.channels.get(&cid).map(|c| c.name.clone()) {
                self.deliver(&name, &from, o);
            }
        }
    }

    fn deliver(&self, channel: &str, from: &str, o: crate::reorder::Outcome) {
        let st = &self.shared.stats;
        if o.duplicate {
            st.messages_duplicate.fetch_add(1, Ordering::Relaxed);
        }
        st.messages_skipped.fetch_add(o.skipped, Ordering::Relaxed);
        for m in o.deliver {
            st.messages_delivered.fetch_add(1, Ordering::Relaxed);
            self.emit(Event::Message(Message {
                channel: channel.into(),
                from: from.into(),
                seq: m.seq,
                payload: m.payload,
                sent_at_us: m.sent_at_us,
            }));
        }
    }
}

fn chat(channel_id: u64, s: &crate::replay::Sent, to_user: &str) -> pb::ChatMessage {
    pb::ChatMessage {
        channel_id,
        from_user: String::new(),
        seq: s.seq,
        payload: s.payload.to_vec(),
        sent_at_us: s.sent_at_us,
        to_user: to_user.into(),
    }
}

fn queue(out: &mut BytesMut, kind: CK) {
    // Our own frames are within the limits by construction (payloads are
    // checked at the API), so encoding cannot fail.
    let _ = framing::encode(&pb::ClientFrame { kind: Some(kind) }, out);
}

async fn read_frames(
    mut recv: quinn::RecvStream,
    tx: mpsc::UnboundedSender<SK>,
    shared: Arc<Shared>,
) {
    let mut frames = FrameBuffer::new();
    while let Ok(Some(chunk)) = recv.read_chunk(64 * 1024, true).await {
        shared.touch();
        frames.extend(&chunk.bytes);
        loop {
            match frames.next_frame::<pb::ServerFrame>() {
                Ok(Some(pb::ServerFrame { kind: Some(k) })) => {
                    if tx.send(k).is_err() {
                        return;
                    }
                }
                // Unknown frame kinds from a newer edge are ignored.
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

async fn read_media(
    conn: quinn::Connection,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Event>,
) {
    while let Ok(d) = conn.read_datagram().await {
        shared.touch();
        let Ok(h) = MediaHeader::decode(&d) else {
            continue;
        };
        let meta = {
            let tracks = shared.tracks.lock().unwrap_or_else(|e| e.into_inner());
            tracks
                .get(&h.track.0)
                .map(|m| (m.channel.clone(), m.user.clone(), m.name.clone()))
        };
        let Some((channel, user, track)) = meta else {
            shared
                .stats
                .media_unknown_track
                .fetch_add(1, Ordering::Relaxed);
            continue;
        };
        shared.stats.media_received.fetch_add(1, Ordering::Relaxed);
        let _ = events.send(Event::Media(Media {
            channel,
            user,
            track,
            sequence: h.sequence,
            timestamp_us: h.timestamp_us,
            payload: d.slice(MEDIA_HEADER_LEN..),
            received_at: SystemTime::now(),
        }));
    }
}
