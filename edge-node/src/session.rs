//! One client connection: its control stream, its media datagrams, and the
//! channels it joined.
//!
//! Native connections (ALPN `rtn-client/1`) and WebTransport sessions
//! (HTTP/3, browsers) are the same [`ClientLink`]: web-transport-quinn's
//! session type, which wraps a native connection in its raw mode and hides
//! HTTP/3's stream headers, datagram session ids and code mapping
//! otherwise. Everything below sees one control stream and datagrams either
//! way (docs/protocol.md §13).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use protocol::datagram::{MediaHeader, Nack, TYPE_NACK};
use protocol::framing::{FrameError, FrameReader, FrameWriter, StreamError};
use protocol::limits::{
    MAX_CHANNELS_PER_SESSION, MAX_MESSAGE_PAYLOAD, MAX_NAME_LEN, MAX_TRACKS_PER_CHANNEL,
};
use protocol::pb::{self, client_frame::Kind as CK, server_frame::Kind as SK, ErrorCode};
use protocol::token::Claims;
use protocol::{ChannelId, TrackKey};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::channel::{Channel, LocalMember, MediaSubscription};
use crate::edge::EdgeCore;
use crate::forward::channel::HINT_TTL;
use crate::media_queue::MediaQueue;
use crate::message_seq::SenderSeq;
use crate::metrics::EdgeMetrics;

/// Refused joins one connection may have; the next refusal closes it with
/// `RATE_LIMITED`. Every join costs the edge a token check (an HMAC) and a
/// refusal a counter and maybe a log line, and nothing else bounds how many
/// joins a client pipelines on its stream (the per-token join rate only
/// charges valid tokens). A well-behaved client is rarely refused: token
/// and rights refusals are final for that token (the app must get another),
/// `RATE_LIMITED` tells it to wait, `ALREADY_JOINED` and
/// `TOO_MANY_CHANNELS` are its own bugs. 32 lets each of the 16 channels a
/// connection may hold be refused twice. A client over it must reconnect,
/// and connection admission (per-address rates) then bounds its pace.
pub const MAX_REFUSED_JOINS: u32 = 32;

/// A client's link: a native QUIC connection or a WebTransport session.
pub type ClientLink = web_transport_quinn::Session;

/// The handle other parts of the edge use to reach a client.
pub struct ClientHandle {
    pub conn: ClientLink,
    frames: mpsc::Sender<pb::ServerFrame>,
    media: Arc<MediaQueue>,
    metrics: EdgeMetrics,
    /// Media sent to this client lately, for its NACKs (`None`: repair off).
    repair: Option<Mutex<repair::HopSender>>,
}

impl ClientHandle {
    /// Queue a control frame. A client that does not read its control stream
    /// is disconnected rather than allowed to grow the edge's memory; its SDK
    /// reconnects and is replayed what it missed.
    pub fn send_frame(&self, kind: SK) {
        if let Err(mpsc::error::TrySendError::Full(_)) =
            self.frames.try_send(pb::ServerFrame { kind: Some(kind) })
        {
            self.metrics.protocol_error("client_too_slow");
            close(
                &self.conn,
                ErrorCode::Overloaded,
                "control stream not read fast enough",
            );
        }
    }

    /// Send the media datagram `pkt`, whose header (checked by whoever
    /// received it) is `h`.
    pub fn send_media(&self, h: &MediaHeader, pkt: Bytes) {
        self.metrics.media_out_client.increment(1);
        self.metrics
            .media_out_client_bytes
            .increment(pkt.len() as u64);
        let copy = self.repair.as_ref().and_then(|r| {
            r.lock().unwrap_or_else(|e| e.into_inner()).sent(
                h.track,
                h.sequence,
                pkt.clone(),
                std::time::Instant::now(),
                || crate::relay::quic_loss_counters(&self.conn),
            )
        });
        self.media.send(&self.conn, pkt, &self.metrics);
        if let Some(copy) = copy {
            self.metrics.repair_client.parity_sent.increment(1);
            self.metrics
                .repair_client
                .parity_bytes
                .increment(copy.len() as u64);
            self.media.send(&self.conn, copy, &self.metrics);
        }
    }

    /// The client asks for media this edge sent it: send again what can
    /// still arrive in time. `false` if it asked for packets never sent to
    /// it (abuse, counted against its drop budget by the caller).
    fn answer_nack(&self, nack: &Nack) -> bool {
        let Some(r) = &self.repair else { return true };
        let answer = r
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answer(nack, std::time::Instant::now());
        self.metrics.repair_client.answered(&answer);
        let honest = answer.never_sent == 0;
        for pkt in answer.resend {
            self.media.send(&self.conn, pkt, &self.metrics);
        }
        honest
    }
}

/// Close a client link with an application code: a QUIC
/// CONNECTION_CLOSE natively, a CLOSE_WEBTRANSPORT_SESSION capsule (then the
/// connection) over WebTransport, where a browser reads it as
/// `WebTransportCloseInfo.closeCode`.
pub fn close(conn: &ClientLink, code: ErrorCode, reason: &str) {
    conn.close(code as u32, reason.as_bytes());
}

/// Close a connection before it became a client link (wrong ALPN, a
/// refused WebTransport request).
pub fn close_quic(conn: &quinn::Connection, code: ErrorCode, reason: &str) {
    conn.close(quinn::VarInt::from_u32(code as u32), reason.as_bytes());
}

struct Joined {
    channel: Arc<Channel>,
    session: u64,
    claims: Claims,
    /// The session's message seqs, so a refused one leaves no gap.
    seq: SenderSeq,
}

struct Published {
    channel: Arc<Channel>,
    session: u64,
    user: Arc<str>,
}

type PublishedTracks = Arc<RwLock<HashMap<TrackKey, Published>>>;

/// Serve one client connection until it closes.
pub async fn run(core: Arc<EdgeCore>, conn: ClientLink) {
    let limits = core.cfg.limits.clone();
    let join_timeout = Duration::from_millis(limits.join_timeout_ms);
    let (send, recv) = match tokio::time::timeout(join_timeout, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return,
        Err(_) => {
            core.metrics.protocol_error("join_timeout");
            close(
                &conn,
                ErrorCode::JoinTimeout,
                "no control stream opened in time",
            );
            return;
        }
    };
    let (tx, rx) = mpsc::channel(limits.client_frame_queue);
    let media = MediaQueue::new(
        limits.subscriber_queue,
        "subscriber_queue_full",
        core.metrics.client_queue.clone(),
    );
    let handle = Arc::new(ClientHandle {
        conn: conn.clone(),
        frames: tx,
        media: media.clone(),
        metrics: core.metrics.clone(),
        repair: core.cfg.repair.enabled.then(|| {
            Mutex::new(repair::HopSender::new(
                core.cfg.repair.client_history_packets,
            ))
        }),
    });
    core.register_client(&handle);
    core.tasks
        .spawn_for(&conn, write_frames(rx, send, conn.clone()));
    core.tasks
        .spawn_for(&conn, media.run_writer(conn.clone(), core.metrics.clone()));
    let published: PublishedTracks = Arc::default();
    core.tasks.spawn_for(
        &conn,
        read_media(core.clone(), handle.clone(), published.clone()),
    );

    let mut session = Session {
        core: core.clone(),
        handle: handle.clone(),
        joined: HashMap::new(),
        left_last_at: None,
        refused_joins: 0,
        published,
        message_rate: core.admission.message_limiter(),
    };
    session.control_loop(recv, join_timeout).await;
    session.leave_all();
    core.unregister_client(&handle);
}

struct Session {
    core: Arc<EdgeCore>,
    handle: Arc<ClientHandle>,
    joined: HashMap<ChannelId, Joined>,
    /// When the connection just left its last channel: it must join another
    /// within the join timeout, counted again from then (a connection holds
    /// at least one channel or goes; docs/protocol.md §4.1).
    left_last_at: Option<Instant>,
    /// Joins refused on this connection (see [`MAX_REFUSED_JOINS`]).
    refused_joins: u32,
    published: PublishedTracks,
    message_rate: Option<governor::DefaultDirectRateLimiter>,
}

/// Why a request was refused: sent to the client as an `Error` frame.
struct Refusal(ErrorCode, String);

impl Session {
    async fn control_loop(
        &mut self,
        recv: web_transport_quinn::RecvStream,
        join_timeout: Duration,
    ) {
        let conn = self.handle.conn.clone();
        let mut frames = FrameReader::new(recv);
        // Runs while the connection holds no channel: from the control
        // stream's arrival, and again from the leave of its last channel.
        let join_deadline = tokio::time::sleep(join_timeout);
        tokio::pin!(join_deadline);
        loop {
            tokio::select! {
                // Cancel-safe: a frame half read when another branch wins
                // stays buffered in the reader.
                frame = frames.next_frame::<pb::ClientFrame>() => {
                    match frame {
                        Ok(Some(f)) => {
                            if matches!(f.kind, Some(CK::Message(_))) {
                                self.pace_message().await;
                            }
                            if self.handle_frame(f).is_break() {
                                return;
                            }
                        }
                        Ok(None) | Err(StreamError::Io(_)) => return,
                        Err(StreamError::Frame(e)) => {
                            self.protocol_error(&e);
                            return;
                        }
                    }
                    if let Some(at) = self.left_last_at.take() {
                        join_deadline.as_mut().reset(at + join_timeout);
                    }
                }
                _ = &mut join_deadline, if self.joined.is_empty() => {
                    self.core.metrics.protocol_error("join_timeout");
                    close(&conn, ErrorCode::JoinTimeout, "no channel joined in time");
                    return;
                }
                extra = conn.accept_bi() => match extra {
                    Ok((mut s, mut r)) => {
                        // Only one control stream per connection.
                        self.core.metrics.protocol_error("extra_stream");
                        let code = ErrorCode::TooManyStreams as u32;
                        let _ = s.reset(code);
                        let _ = r.stop(code);
                    }
                    Err(_) => return,
                },
            }
        }
    }

    /// Hold a message back until the session's message rate allows it.
    /// Stalling the control stream (rather than refusing) keeps the
    /// sender's messages ordered and lossless: QUIC flow control pushes
    /// back on a client that sends faster than the limit.
    async fn pace_message(&self) {
        let Some(limiter) = &self.message_rate else {
            return;
        };
        if limiter.check().is_err() {
            self.core.metrics.rate_limited("messages_per_session");
            crate::warn_throttled!(self.core.log, "messages_per_session", edge = self.core.id, remote = %self.handle.conn.remote_address(), "client over its message rate: stream paced");
            limiter.until_ready().await;
        }
    }

    fn protocol_error(&self, e: &FrameError) {
        let (code, reason) = match e {
            FrameError::TooLarge(_) => (ErrorCode::FrameTooLarge, "frame_too_large"),
            _ => (ErrorCode::MalformedFrame, "malformed_frame"),
        };
        self.core.metrics.protocol_error(reason);
        debug!(edge = self.core.id, remote = %self.handle.conn.remote_address(), error = %e, "closing client: bad frame");
        close(&self.handle.conn, code, &e.to_string());
    }

    /// Answer one frame; `Break` when the connection was closed for it.
    fn handle_frame(&mut self, f: pb::ClientFrame) -> ControlFlow<()> {
        let result = match f.kind {
            Some(CK::Join(j)) => self.join(j),
            Some(CK::Leave(l)) => self.leave(l),
            Some(CK::PublishTrack(p)) => self.publish(p),
            Some(CK::UnpublishTrack(u)) => self.unpublish(u),
            Some(CK::Subscribe(s)) => self.subscribe(s),
            Some(CK::Unsubscribe(u)) => self.unsubscribe(u),
            Some(CK::Message(m)) => self.message(m),
            Some(CK::Keepalive(k)) => {
                self.handle
                    .send_frame(SK::KeepaliveAck(pb::KeepaliveAck { nonce: k.nonce }));
                Ok(())
            }
            None => {
                self.core.metrics.protocol_error("unknown_message");
                Err((
                    0,
                    Refusal(ErrorCode::UnknownMessage, "unknown frame kind".into()),
                ))
            }
        };
        if let Err((request_id, Refusal(code, message))) = result {
            self.handle.send_frame(SK::Error(pb::Error {
                request_id,
                code: code as i32,
                message,
            }));
        }
        if self.refused_joins > MAX_REFUSED_JOINS {
            self.core.metrics.protocol_error("too_many_refused_joins");
            crate::warn_throttled!(self.core.log, "too_many_refused_joins", edge = self.core.id, remote = %self.handle.conn.remote_address(), "closing client: too many refused joins");
            close(
                &self.handle.conn,
                ErrorCode::RateLimited,
                "too many refused joins",
            );
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// Count a refused join against the connection's budget and in
    /// `rtn_edge_joins_total{result}`.
    fn charge_refused_join(&mut self, result: &'static str) {
        self.refused_joins += 1;
        self.core.metrics.join(result);
    }

    /// Count and log a refused join. The log is throttled per reason: a
    /// client can send joins as fast as its stream carries them.
    fn join_refused(
        &mut self,
        reason: &'static str,
        error: &str,
        user: Option<&str>,
        channel: Option<ChannelId>,
    ) {
        self.charge_refused_join(reason);
        // Logged without the token: it is a credential.
        crate::log_throttled!(tracing::Level::INFO, self.core.log, reason, edge = self.core.id, remote = %self.handle.conn.remote_address(), reason, error, user, channel = channel.map(tracing::field::display), "join refused");
    }

    fn joined(&self, request_id: u32, channel_id: u64) -> Result<&Joined, (u32, Refusal)> {
        self.joined
            .get(&ChannelId(channel_id))
            .ok_or_else(|| not_joined(request_id))
    }

    fn join(&mut self, j: pb::Join) -> Result<(), (u32, Refusal)> {
        let rid = j.request_id;
        let refuse = |code, msg: String| Err((rid, Refusal(code, msg)));
        if self.core.is_draining() {
            let message = "edge is draining";
            self.join_refused("draining", message, None, None);
            return refuse(ErrorCode::GoingAway, message.into());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = match self.core.verifier.verify(&j.token, &j.channel, now) {
            // Charged only for valid tokens: forged ones cost a signature
            // check and are refused anyway.
            Ok(_) if !self.core.admission.allow_join(&j.token) => {
                self.charge_refused_join("rate_limited");
                self.core.metrics.rate_limited("joins_per_token");
                crate::warn_throttled!(self.core.log, "joins_per_token", edge = self.core.id, remote = %self.handle.conn.remote_address(), "join refused: token used too often (replayed?)");
                return refuse(
                    ErrorCode::RateLimited,
                    "too many joins with this token; retry later".into(),
                );
            }
            Ok(c) => c,
            Err(e) => {
                let message = e.to_string();
                self.join_refused(reason_label(e.code()), &message, None, None);
                return refuse(e.code(), message);
            }
        };
        let user = Some(claims.user_id.as_str());
        if j.subscribe_all && !claims.can_subscribe {
            let message = "token does not grant subscribe";
            self.join_refused("no_subscribe_right", message, user, None);
            return refuse(ErrorCode::NoSubscribeRight, message.into());
        }
        let id = ChannelId::derive(&claims.app_id, &claims.channel);
        if self.joined.contains_key(&id) {
            let message = "already joined";
            self.join_refused("already_joined", message, user, Some(id));
            return refuse(ErrorCode::AlreadyJoined, message.into());
        }
        if self.joined.len() >= MAX_CHANNELS_PER_SESSION {
            let message = format!("at most {MAX_CHANNELS_PER_SESSION} channels");
            self.join_refused("too_many_channels", &message, user, Some(id));
            return refuse(ErrorCode::TooManyChannels, message);
        }
        let session: u64 = rand::random();
        // Before the greetings below: they go around the edge the client
        // found dead, as everything else this edge sends through it.
        let unreachable = j.unreachable_edge;
        if unreachable != self.core.id && self.core.route_table().peers.contains_key(&unreachable) {
            self.core
                .prober
                .hint_unreachable(unreachable, std::time::Instant::now());
            debug!(
                edge = self.core.id,
                peer = unreachable,
                "a rejoining client left this peer for its silence: suspect until heard from"
            );
        }
        let channel = self.core.channel(id, &claims.app_id, &claims.channel);
        channel.update(|st| {
            st.insert_local(LocalMember {
                user: claims.user_id.clone(),
                session,
                client: self.handle.clone(),
                can_publish: claims.can_publish,
                can_subscribe: claims.can_subscribe,
                media: if j.subscribe_all {
                    MediaSubscription::All
                } else {
                    MediaSubscription::None
                },
                tracks: vec![],
            });
            st.hint(
                self.core.id,
                &j.member_edges,
                std::time::Instant::now() + HINT_TTL,
            );
        });
        let (members, member_count, large) = channel.joined_view(session);
        self.handle.send_frame(SK::Joined(pb::Joined {
            request_id: rid,
            channel: claims.channel.clone(),
            channel_id: id.0,
            user_id: claims.user_id.clone(),
            members,
            edge_id: self.core.id,
            member_count,
            large,
        }));
        self.core.metrics.join("ok");
        info!(edge = self.core.id, channel = %id, user = %claims.user_id, "joined");
        self.core.local_membership_changed(&channel);
        self.joined.insert(
            id,
            Joined {
                channel,
                session,
                claims,
                seq: SenderSeq::default(),
            },
        );
        Ok(())
    }

    fn leave(&mut self, l: pb::Leave) -> Result<(), (u32, Refusal)> {
        self.joined(l.request_id, l.channel_id)?;
        if let Some(j) = self.joined.remove(&ChannelId(l.channel_id)) {
            self.remove_member(&j);
        }
        if self.joined.is_empty() {
            self.left_last_at = Some(Instant::now());
        }
        self.handle.send_frame(SK::Left(pb::Left {
            request_id: l.request_id,
            channel_id: l.channel_id,
        }));
        Ok(())
    }

    fn leave_all(&mut self) {
        for (_, j) in std::mem::take(&mut self.joined) {
            self.remove_member(&j);
        }
    }

    fn remove_member(&self, j: &Joined) {
        self.published
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, p| p.session != j.session);
        j.channel.update(|st| st.remove_local(j.session));
        self.core.local_membership_changed(&j.channel);
    }

    fn publish(&mut self, p: pb::PublishTrack) -> Result<(), (u32, Refusal)> {
        let rid = p.request_id;
        let j = self.joined(rid, p.channel_id)?;
        if !j.claims.can_publish {
            return Err((
                rid,
                Refusal(
                    ErrorCode::NoPublishRight,
                    "token does not grant publish".into(),
                ),
            ));
        }
        if p.name.is_empty() || p.name.len() > MAX_NAME_LEN {
            return Err((
                rid,
                Refusal(
                    ErrorCode::MalformedFrame,
                    "track name empty or too long".into(),
                ),
            ));
        }
        let key = self
            .core
            .next_track_key(protocol::MediaKind::from_pb(p.kind));
        let session = j.session;
        let channel = j.channel.clone();
        let user = j.claims.user_id.clone();
        let added = channel.update(|st| {
            st.edit_local(session, |m| {
                if m.tracks.len() >= MAX_TRACKS_PER_CHANNEL {
                    return None;
                }
                m.tracks.push(pb::TrackInfo {
                    name: p.name.clone(),
                    track_key: key.0,
                    kind: p.kind,
                });
                Some(())
            })
            .flatten()
        });
        if added.is_none() {
            return Err((
                rid,
                Refusal(
                    ErrorCode::TooManyTracks,
                    format!("at most {MAX_TRACKS_PER_CHANNEL} tracks"),
                ),
            ));
        }
        self.published
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key,
                Published {
                    channel: channel.clone(),
                    session,
                    user: Arc::from(user.as_str()),
                },
            );
        self.handle
            .send_frame(SK::TrackPublished(pb::TrackPublished {
                request_id: rid,
                channel_id: p.channel_id,
                name: p.name,
                track_key: key.0,
            }));
        self.core.local_membership_changed(&channel);
        Ok(())
    }

    fn unpublish(&mut self, u: pb::UnpublishTrack) -> Result<(), (u32, Refusal)> {
        let j = self.joined(u.request_id, u.channel_id)?;
        let (session, channel) = (j.session, j.channel.clone());
        let owned = {
            let mut published = self.published.write().unwrap_or_else(|e| e.into_inner());
            let key = TrackKey(u.track_key);
            // Only a track of this session in this channel.
            let mine = published.get(&key).is_some_and(|p| p.session == session);
            mine && published.remove(&key).is_some()
        };
        if !owned {
            return Err((
                u.request_id,
                Refusal(ErrorCode::UnknownTrack, "no such track".into()),
            ));
        }
        channel.update(|st| {
            st.edit_local(session, |m| m.tracks.retain(|t| t.track_key != u.track_key))
        });
        self.core.local_membership_changed(&channel);
        Ok(())
    }

    fn subscribe(&mut self, s: pb::Subscribe) -> Result<(), (u32, Refusal)> {
        let j = self.joined(s.request_id, s.channel_id)?;
        if !j.claims.can_subscribe {
            return Err((
                s.request_id,
                Refusal(
                    ErrorCode::NoSubscribeRight,
                    "token does not grant subscribe".into(),
                ),
            ));
        }
        let session = j.session;
        if let Some(m) = j.channel.write().media_mut(session) {
            *m = std::mem::take(m).subscribe(&s.user_id);
        }
        self.handle.send_frame(SK::Subscribed(pb::Subscribed {
            request_id: s.request_id,
            channel_id: s.channel_id,
            user_id: s.user_id,
        }));
        Ok(())
    }

    fn unsubscribe(&mut self, u: pb::Unsubscribe) -> Result<(), (u32, Refusal)> {
        let j = self.joined(u.request_id, u.channel_id)?;
        let session = j.session;
        if let Some(m) = j.channel.write().media_mut(session) {
            *m = std::mem::take(m).unsubscribe(&u.user_id);
        }
        Ok(())
    }

    fn message(&mut self, mut m: pb::ChatMessage) -> Result<(), (u32, Refusal)> {
        let Some(j) = self.joined.get_mut(&ChannelId(m.channel_id)) else {
            return Err(not_joined(0));
        };
        if !j.claims.can_publish {
            return Err((
                0,
                Refusal(
                    ErrorCode::NoPublishRight,
                    "token does not grant publish".into(),
                ),
            ));
        }
        if m.payload.len() > MAX_MESSAGE_PAYLOAD || m.to_user.len() > MAX_NAME_LEN || m.seq == 0 {
            j.seq.refused(m.seq);
            return Err((
                0,
                Refusal(
                    ErrorCode::MalformedFrame,
                    "message too large or without sequence".into(),
                ),
            ));
        }
        if let Err(free) = j.seq.check(m.seq) {
            return Err((
                0,
                Refusal(
                    ErrorCode::BadSequence,
                    format!("seq {free} was refused and is still free: the next message takes it"),
                ),
            ));
        }
        j.seq.accepted(m.seq);
        m.from_user = j.claims.user_id.clone();
        let (channel, seq) = (j.channel.clone(), m.seq);
        self.core.metrics.messages_in_client.increment(1);
        self.core.message_from_client(&channel, m);
        self.handle.send_frame(SK::MessageAck(pb::MessageAck {
            channel_id: channel.id.0,
            seq,
        }));
        Ok(())
    }
}

fn not_joined(request_id: u32) -> (u32, Refusal) {
    (
        request_id,
        Refusal(ErrorCode::NotJoined, "not joined to that channel".into()),
    )
}

fn reason_label(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::TokenMalformed => "token_malformed",
        ErrorCode::TokenBadSignature => "token_bad_signature",
        ErrorCode::TokenExpired => "token_expired",
        ErrorCode::TokenUnknownApp => "token_unknown_app",
        ErrorCode::TokenWrongChannel => "token_wrong_channel",
        _ => "other",
    }
}

/// Write queued control frames, batching whatever is ready into one write.
async fn write_frames(
    mut rx: mpsc::Receiver<pb::ServerFrame>,
    send: web_transport_quinn::SendStream,
    conn: ClientLink,
) {
    let mut out = FrameWriter::new(send);
    while let Some(f) = rx.recv().await {
        let mut next = Some(f);
        while let Some(f) = next {
            if out.queue(&f).is_err() {
                warn!("dropping an oversized server frame");
            }
            if out.batch_full() {
                break;
            }
            next = rx.try_recv().ok();
        }
        if out.flush().await.is_err() {
            return;
        }
    }
    let _ = out.finish().await;
    drop(conn);
}

/// Read the client's datagrams: its media, fanned out (gaps in each track
/// NACKed back to it when due, duplicates not passed on), and its NACKs
/// for media this edge sent it.
async fn read_media(core: Arc<EdgeCore>, client: Arc<ClientHandle>, published: PublishedTracks) {
    let conn = client.conn.clone();
    let rate = core.admission.media_limiter();
    let mut drops = core.admission.drop_budget();
    let mut gaps = core
        .cfg
        .repair
        .enabled
        .then(|| repair::HopReceiver::new(false, std::time::Instant::now()));
    loop {
        let due = gaps.as_ref().and_then(|g| g.next_due());
        let read = tokio::select! {
            d = conn.read_datagram() => d,
            _ = crate::relay::sleep_until(due), if due.is_some() => {
                if let Some(g) = gaps.as_mut() {
                    send_nacks(&core, &conn, g);
                }
                continue;
            }
        };
        let d = match read {
            Ok(d) => d,
            // A WebTransport datagram for another session id: malformed.
            Err(web_transport_quinn::SessionError::WebTransportError(
                web_transport_quinn::WebTransportError::UnknownSession,
            )) => {
                if !spend_drop(&core, &conn, &mut drops, "malformed_datagram") {
                    return;
                }
                continue;
            }
            Err(_) => return,
        };
        if d.first() == Some(&TYPE_NACK) {
            let honest = match Nack::decode(&d) {
                Ok(n) if !n.relay => client.answer_nack(&n),
                _ => {
                    core.metrics.protocol_error("malformed_nack");
                    false
                }
            };
            if !honest && !charge_abuse(&core, &conn, &mut drops) {
                return;
            }
            continue;
        }
        core.metrics.media_in_client.increment(1);
        core.metrics.media_in_client_bytes.increment(d.len() as u64);
        let dropped = if !crate::admission::media_allowed(&rate, d.len()) {
            "publisher_rate_limit"
        } else {
            match MediaHeader::decode(&d) {
                Err(e) => {
                    crate::warn_throttled!(core.log, "malformed_datagram", edge = core.id, remote = %conn.remote_address(), error = %e, "malformed media datagram");
                    "malformed_datagram"
                }
                Ok(header) => {
                    // Fan out under the read lock: publishing a track (the
                    // only writer) is rare, and this saves two
                    // reference-count round trips per packet.
                    let map = published.read().unwrap_or_else(|e| e.into_inner());
                    match map
                        .get(&header.track)
                        .filter(|p| p.channel.id == header.channel)
                    {
                        Some(p) => {
                            let fresh = gaps.as_mut().is_none_or(|g| {
                                let arrival = g.on_media(&header, std::time::Instant::now());
                                core.metrics.repair_client.arrived(arrival)
                            });
                            if fresh {
                                core.media_from_client(&p.channel, p.session, &p.user, &header, d);
                            }
                            continue;
                        }
                        None => "unknown_track",
                    }
                }
            }
        };
        if !spend_drop(&core, &conn, &mut drops, dropped) {
            return;
        }
    }
}

/// Send the NACKs `gaps` has due to the publishing client on `conn`.
fn send_nacks(core: &EdgeCore, conn: &ClientLink, gaps: &mut repair::HopReceiver) {
    let rtt = std::ops::Deref::deref(conn).rtt();
    let jitter = repair::gaps::last_mile_jitter(rtt);
    for n in core.metrics.repair_client.nacks_due(gaps, rtt, jitter) {
        let _ = conn.send_datagram(n);
    }
}

/// Count a dropped datagram against the client's drop budget; `false` when
/// the budget is spent and the client was closed for it.
fn spend_drop(
    core: &EdgeCore,
    conn: &ClientLink,
    drops: &mut crate::admission::DropBudget,
    dropped: &'static str,
) -> bool {
    core.metrics.media_dropped(dropped);
    if dropped == "publisher_rate_limit" {
        crate::warn_throttled!(core.log, "publisher_rate_limit", edge = core.id, remote = %conn.remote_address(), "client over its media rate: excess dropped");
    }
    charge_abuse(core, conn, drops)
}

/// Charge one wasted datagram (dropped media, a NACK for what was never
/// sent) to the client's drop budget; `false` when the budget is spent and
/// the client was closed for it.
fn charge_abuse(
    core: &EdgeCore,
    conn: &ClientLink,
    drops: &mut crate::admission::DropBudget,
) -> bool {
    if drops.spend() {
        return true;
    }
    // Dropping a datagram costs little, but its decryption and the drop
    // still cost a flood's worth of CPU: a client that keeps sending what
    // the edge throws away is disconnected.
    core.metrics.protocol_error("datagram_flood");
    crate::warn_throttled!(core.log, "datagram_flood", edge = core.id, remote = %conn.remote_address(), "closing client: too many datagrams dropped");
    close(
        conn,
        ErrorCode::RateLimited,
        "too many invalid or over-rate datagrams",
    );
    false
}
