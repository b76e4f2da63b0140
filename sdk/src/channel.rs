//! Handles the app holds: a joined [`Channel`] and a [`TrackPublisher`].
//! Both are thin: they send commands to the client's state machine, except
//! media, which a publisher sends straight on the current connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use protocol::datagram::MediaHeader;
use protocol::limits::{MAX_MEDIA_PAYLOAD, MAX_MESSAGE_PAYLOAD, MAX_NAME_LEN};
use protocol::{ChannelId, TrackKey};
use tokio::sync::{mpsc, Semaphore};

use crate::client::{call, Cmd};
use crate::connection::Shared;
use crate::e2ee::{ChannelKey, KeyRing, MAX_MEDIA_PLAINTEXT, MAX_MESSAGE_PLAINTEXT};
use crate::error::SdkError;
use crate::events::TrackKind;
use crate::roster::Census;
use crate::stats::bump;

/// A joined channel. Cheap to clone; every clone names the same membership.
/// It stays joined across reconnects until [`Channel::leave`], the client is
/// closed, or an [`crate::Event::ChannelLost`] names it.
#[derive(Clone)]
pub struct Channel {
    /// The channel's name, as given to `join`.
    pub name: String,
    /// The 64-bit channel id the edge derived (used in media headers).
    pub id: u64,
    /// This client's user id in the channel, from the token.
    pub user: String,
    pub(crate) census: Arc<Census>,
    pub(crate) cmds: mpsc::WeakUnboundedSender<Cmd>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) max_unacked: usize,
    pub(crate) request_timeout: std::time::Duration,
    pub(crate) e2ee: Option<Arc<KeyRing>>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("id", &format_args!("{:016x}", self.id))
            .field("user", &self.user)
            .field("e2ee", &self.e2ee)
            .finish()
    }
}

impl Channel {
    fn cmds(&self) -> Result<mpsc::UnboundedSender<Cmd>, SdkError> {
        self.cmds.upgrade().ok_or(SdkError::Closed)
    }

    /// Publish a media track. The returned publisher keeps working across
    /// reconnects (the edge assigns a new track key each time; the publisher
    /// follows it). Dropping the publisher unpublishes the track.
    pub async fn publish_track(
        &self,
        name: &str,
        kind: TrackKind,
    ) -> Result<TrackPublisher, SdkError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(SdkError::Invalid(format!(
                "track name must be 1..={MAX_NAME_LEN} bytes"
            )));
        }
        let slot = Arc::new(TrackSlot {
            channel_id: self.id,
            name: name.to_string(),
            kind,
            seq: AtomicU64::new(0),
            binding: RwLock::new(Binding::Unbound),
            e2ee: self.e2ee.clone(),
            salt_base: crate::e2ee::random_base(),
            copy_salt_base: crate::e2ee::random_base(),
        });
        let cmds = self.cmds()?;
        call(&cmds, self.request_timeout, |reply| Cmd::Publish {
            channel_id: self.id,
            slot: slot.clone(),
            reply,
        })
        .await?;
        Ok(TrackPublisher {
            slot,
            shared: self.shared.clone(),
            cmds: self.cmds.clone(),
        })
    }

    /// Receive the media of `user`, or of every member with `None`. Kept
    /// across reconnects.
    pub async fn subscribe(&self, user: Option<&str>) -> Result<(), SdkError> {
        let cmds = self.cmds()?;
        call(&cmds, self.request_timeout, |reply| Cmd::Subscribe {
            channel_id: self.id,
            user: user.unwrap_or_default().to_string(),
            reply,
        })
        .await
    }

    /// Stop receiving the media of `user`, or of everyone with `None`.
    /// (Unsubscribing one user after subscribing to everyone keeps
    /// everyone: the edge cannot express "all but one".)
    pub async fn unsubscribe(&self, user: Option<&str>) -> Result<(), SdkError> {
        let cmds = self.cmds()?;
        call(&cmds, self.request_timeout, |reply| Cmd::Unsubscribe {
            channel_id: self.id,
            user: user.unwrap_or_default().to_string(),
            reply,
        })
        .await
    }

    /// Send a reliable message to the channel and return its sequence
    /// number. Messages from one sender reach every member in order, once,
    /// across reconnects and edge failures (replay window on this side,
    /// reorder buffer on theirs). Waits while `max_unacked` messages of this
    /// channel are unacknowledged; while the client is reconnecting, the
    /// message is kept and sent once the channel is restored.
    pub async fn send_message(&self, payload: Bytes) -> Result<u64, SdkError> {
        self.check_message(&payload)?;
        let permit = self.permits.acquire().await.map_err(|_| SdkError::Closed)?;
        permit.forget();
        self.queue_message(payload).await
    }

    /// Like [`Channel::send_message`], but fails with
    /// [`SdkError::Backpressure`] instead of waiting.
    pub async fn try_send_message(&self, payload: Bytes) -> Result<u64, SdkError> {
        self.check_message(&payload)?;
        match self.permits.try_acquire() {
            Ok(p) => p.forget(),
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(SdkError::Backpressure),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(SdkError::Closed),
        }
        self.queue_message(payload).await
    }

    async fn queue_message(&self, payload: Bytes) -> Result<u64, SdkError> {
        let cmds = match self.cmds() {
            Ok(c) => c,
            Err(e) => {
                self.permits.add_permits(1);
                return Err(e);
            }
        };
        call(&cmds, self.request_timeout, |reply| Cmd::Message {
            channel_id: self.id,
            payload,
            reply,
        })
        .await
    }

    /// Messages of this channel sent but not yet acknowledged by the edge.
    pub fn unacked(&self) -> usize {
        self.max_unacked
            .saturating_sub(self.permits.available_permits())
    }

    /// The channel's member sessions, this client's included, as last
    /// heard ([`crate::Event::MemberCount`]; 0 from an edge that does not
    /// count).
    pub fn member_count(&self) -> u64 {
        self.census.members.load(Ordering::Relaxed)
    }

    /// Whether the channel is large: only members that publish are listed
    /// (`MemberJoined`, `MemberLeft`), the others are only counted.
    pub fn is_large(&self) -> bool {
        self.census.large.load(Ordering::Relaxed)
    }

    /// Replace the token used to rejoin after a reconnect (tokens expire;
    /// hand the SDK a fresh one before the old one does).
    pub fn set_token(&self, token: &str) -> Result<(), SdkError> {
        self.cmds()?
            .send(Cmd::SetToken {
                channel_id: self.id,
                token: token.to_string(),
            })
            .map_err(|_| SdkError::Closed)
    }

    /// Whether this channel was joined with end-to-end encryption
    /// ([`crate::JoinOptions::e2ee`]).
    pub fn is_e2ee(&self) -> bool {
        self.e2ee.is_some()
    }

    fn ring(&self) -> Result<&KeyRing, SdkError> {
        self.e2ee.as_deref().ok_or_else(|| {
            SdkError::Invalid("the channel was joined without end-to-end encryption".into())
        })
    }

    /// End-to-end encryption: install `key` and seal everything sent from
    /// now on with it. The key sent with until now stays installed for
    /// opening what others still seal with it (the previous key of a
    /// rotation; see `docs/e2ee.md`).
    pub fn set_key(&self, key: &ChannelKey) -> Result<(), SdkError> {
        self.ring()?.set_key(key);
        Ok(())
    }

    /// End-to-end encryption: install `key` for opening only, e.g. the next
    /// key ahead of a rotation so that members who switch to it first are
    /// understood. At most [`crate::e2ee::MAX_KEYS`] keys are held; the
    /// oldest not sent with makes room.
    pub fn add_key(&self, key: &ChannelKey) -> Result<(), SdkError> {
        self.ring()?.add_key(key);
        Ok(())
    }

    /// End-to-end encryption: forget key `id` (true if it was installed).
    /// Forgetting the key sent with stops sending until the next
    /// [`Channel::set_key`].
    pub fn remove_key(&self, id: u8) -> Result<bool, SdkError> {
        Ok(self.ring()?.remove_key(id))
    }

    /// End-to-end encryption: the installed key ids (oldest first) and the
    /// one sent with; `None` without end-to-end encryption.
    pub fn keys(&self) -> Option<(Vec<u8>, Option<u8>)> {
        let r = self.e2ee.as_deref()?;
        Some((r.key_ids(), r.send_key_id()))
    }

    /// The largest media payload a track of this channel takes
    /// (`MAX_MEDIA_PAYLOAD`, less the sealing overhead with end-to-end
    /// encryption).
    pub fn max_media_payload(&self) -> usize {
        if self.e2ee.is_some() {
            MAX_MEDIA_PLAINTEXT
        } else {
            MAX_MEDIA_PAYLOAD
        }
    }

    /// The largest message this channel takes.
    pub fn max_message_payload(&self) -> usize {
        if self.e2ee.is_some() {
            MAX_MESSAGE_PLAINTEXT
        } else {
            MAX_MESSAGE_PAYLOAD
        }
    }

    fn check_message(&self, payload: &Bytes) -> Result<(), SdkError> {
        let max = self.max_message_payload();
        if payload.len() > max {
            return Err(SdkError::Invalid(format!(
                "message payload of {} bytes exceeds {max}",
                payload.len()
            )));
        }
        if let Some(r) = &self.e2ee {
            if r.send_key_id().is_none() {
                return Err(crate::e2ee::E2eeError::NoSendKey.into());
            }
        }
        Ok(())
    }

    /// Leave the channel. Its publishers stop, its pending messages are
    /// dropped.
    pub async fn leave(self) -> Result<(), SdkError> {
        let cmds = self.cmds()?;
        call(&cmds, self.request_timeout, |reply| Cmd::Leave {
            channel_id: self.id,
            reply,
        })
        .await
    }
}

/// Where a track's media goes right now.
pub(crate) enum Binding {
    /// Between connections (or not yet published): media is refused with
    /// `NotConnected`.
    Unbound,
    Bound {
        conn: quinn::Connection,
        key: u64,
        /// The edge the client is moving off (make-before-break): every
        /// packet goes there too, under the key it had there, until the
        /// old link closes ([`TrackSlot::forget_previous`]). Receivers keep
        /// the first copy of each.
        previous: Option<Route>,
    },
    /// The track could not be republished after a reconnect.
    Failed(SdkError),
    /// Unpublished, channel left or client closed.
    Closed,
}

/// A connection and the track's key on that edge.
type Route = (quinn::Connection, u64);

/// A published track, shared by its publisher and the state machine.
pub(crate) struct TrackSlot {
    pub channel_id: u64,
    pub name: String,
    pub kind: TrackKind,
    /// Packets sent: the header sequence is its low 32 bits.
    seq: AtomicU64,
    binding: RwLock<Binding>,
    /// End-to-end encryption keys of the channel, if any.
    e2ee: Option<Arc<KeyRing>>,
    /// Random base of this track's nonces (see `e2ee`).
    salt_base: u64,
    /// Another for the copies sent to the previous edge while moving: the
    /// copy has another track key in its header (authenticated), so the
    /// same nonce must not seal it.
    copy_salt_base: u64,
}

impl TrackSlot {
    pub fn set(&self, b: Binding) {
        *self.binding.write().unwrap_or_else(|e| e.into_inner()) = b;
    }

    /// Published as `key` on `conn`; the route it had on another, still
    /// open, connection (the edge being left) is kept as the previous one.
    pub fn rebind(&self, conn: quinn::Connection, key: u64) {
        let mut b = self.binding.write().unwrap_or_else(|e| e.into_inner());
        let previous = match &*b {
            Binding::Bound { conn: old, key, .. }
                if old.stable_id() != conn.stable_id() && old.close_reason().is_none() =>
            {
                Some((old.clone(), *key))
            }
            _ => None,
        };
        *b = Binding::Bound {
            conn,
            key,
            previous,
        };
    }

    /// The previous edge is gone: stop sending it copies.
    pub fn forget_previous(&self) {
        if let Binding::Bound { previous, .. } =
            &mut *self.binding.write().unwrap_or_else(|e| e.into_inner())
        {
            *previous = None;
        }
    }

    /// Unbind unless closed or failed.
    pub fn unbind(&self) {
        let mut b = self.binding.write().unwrap_or_else(|e| e.into_inner());
        if matches!(*b, Binding::Bound { .. }) {
            *b = Binding::Unbound;
        }
    }

    pub fn key(&self) -> Option<u64> {
        match &*self.binding.read().unwrap_or_else(|e| e.into_inner()) {
            Binding::Bound { key, .. } => Some(*key),
            _ => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(
            &*self.binding.read().unwrap_or_else(|e| e.into_inner()),
            Binding::Closed | Binding::Failed(_)
        )
    }

    /// Where to send: the connection and key, and the previous edge's.
    fn route(&self) -> Result<(Route, Option<Route>), SdkError> {
        match &*self.binding.read().unwrap_or_else(|e| e.into_inner()) {
            Binding::Bound {
                conn,
                key,
                previous,
            } => Ok(((conn.clone(), *key), previous.clone())),
            Binding::Unbound => Err(SdkError::NotConnected),
            Binding::Failed(e) => Err(e.clone()),
            Binding::Closed => Err(SdkError::Closed),
        }
    }
}

/// Sends media on one track. Survives reconnects: the track is republished
/// on the new edge and the publisher switches to the new track key by itself.
/// Dropping it unpublishes the track.
pub struct TrackPublisher {
    slot: Arc<TrackSlot>,
    shared: Arc<Shared>,
    cmds: mpsc::WeakUnboundedSender<Cmd>,
}

impl std::fmt::Debug for TrackPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackPublisher")
            .field("name", &self.slot.name)
            .field("kind", &self.slot.kind)
            .field("key", &self.slot.key())
            .finish()
    }
}

impl TrackPublisher {
    pub fn name(&self) -> &str {
        &self.slot.name
    }

    /// The track key the current edge assigned (None while reconnecting).
    pub fn track_key(&self) -> Option<u64> {
        self.slot.key()
    }

    /// Send one media packet (at most `MAX_MEDIA_PAYLOAD` bytes) as a QUIC
    /// datagram; the sequence number and timestamp are set here. Waits while
    /// QUIC's congestion control has no room rather than letting the packet
    /// be dropped silently. Fails with [`SdkError::NotConnected`] while the
    /// client is reconnecting (media is real-time: drop it and go on).
    pub async fn send(&self, payload: &[u8]) -> Result<(), SdkError> {
        let max = match self.slot.e2ee {
            Some(_) => MAX_MEDIA_PLAINTEXT,
            None => MAX_MEDIA_PAYLOAD,
        };
        if payload.len() > max {
            return Err(SdkError::Invalid(format!(
                "media payload of {} bytes exceeds {max}",
                payload.len()
            )));
        }
        // The sequence number is spent even when the packet cannot be sent
        // (reconnecting): receivers then see the outage as lost packets, a
        // stall, not as the publisher pausing.
        let counter = self.slot.seq.fetch_add(1, Ordering::Relaxed);
        let ((conn, key), previous) = self.slot.route()?;
        let header = MediaHeader {
            channel: ChannelId(self.slot.channel_id),
            track: TrackKey(key),
            sequence: counter as u32,
            timestamp_us: now_us(),
        };
        let datagram = self.seal(&header, self.slot.salt_base, counter, payload)?;
        if let Some((old, old_key)) = previous {
            // Best effort, never waited for: the old edge is going.
            let copy = MediaHeader {
                track: TrackKey(old_key),
                ..header
            };
            if let Ok(d) = self.seal(&copy, self.slot.copy_salt_base, counter, payload) {
                let _ = old.send_datagram(d);
            }
        }
        let copy = self.shared.sent_media(&conn, &header, &datagram);
        match conn.send_datagram_wait(datagram).await {
            Ok(()) => {
                bump(&self.shared.stats.media_sent, 1);
                // The copy of an earlier packet is best effort: never waited
                // for.
                if let Some(copy) = copy {
                    let _ = conn.send_datagram(copy);
                }
                Ok(())
            }
            Err(quinn::SendDatagramError::ConnectionLost(_)) => Err(SdkError::NotConnected),
            Err(quinn::SendDatagramError::TooLarge) => Err(SdkError::Invalid(format!(
                "a {}-byte media datagram does not fit this path (max {:?})",
                payload.len() + protocol::datagram::MEDIA_HEADER_LEN,
                conn.max_datagram_size()
            ))),
            Err(e) => Err(SdkError::Protocol(format!("edge refuses datagrams: {e}"))),
        }
    }

    /// The datagram of one packet: the header and the payload, sealed with
    /// the channel's end-to-end key if it has one.
    fn seal(
        &self,
        header: &MediaHeader,
        salt_base: u64,
        counter: u64,
        payload: &[u8],
    ) -> Result<Bytes, SdkError> {
        Ok(match &self.slot.e2ee {
            None => header
                .encode(payload)
                .map_err(|e| SdkError::Invalid(e.to_string()))?,
            Some(ring) => ring.seal_media(
                header,
                &self.slot.name,
                crate::e2ee::stream_salt(salt_base, counter),
                payload,
            )?,
        })
    }

    /// Stop publishing (same as dropping the publisher).
    pub fn unpublish(self) {}
}

impl Drop for TrackPublisher {
    fn drop(&mut self) {
        if let Some(cmds) = self.cmds.upgrade() {
            let _ = cmds.send(Cmd::Unpublish {
                slot: self.slot.clone(),
            });
        }
    }
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
