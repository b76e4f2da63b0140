//! The [`Client`]: the app's handle on one connection (at a time) to the RTN
//! edge network. A single task (the supervisor, `supervisor.rs`) owns the
//! connection and all channel state; API calls are commands to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protocol::limits::{MAX_NAME_LEN, MAX_TOKEN_LEN};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::channel::{Channel, TrackSlot};
use crate::config::ClientConfig;
use crate::connection::Shared;
use crate::e2ee::{E2eeKeys, KeyRing};
use crate::error::SdkError;
use crate::events::Event;
use crate::roster::Census;
use crate::stats::{ConnectTiming, Stats};
use crate::supervisor::Supervisor;

/// Options of [`Client::join`]. A plain `bool` converts into it (it is
/// `subscribe_all`).
#[derive(Clone, Debug, Default)]
pub struct JoinOptions {
    /// Receive every member's media right away (needs the subscribe right).
    pub subscribe_all: bool,
    /// End-to-end encrypt this channel's media payloads and message bodies
    /// with these keys (from the app's own server, never from RTN): the
    /// edges see only the headers they forward by. Every member must use it
    /// with the same keys; see [`crate::e2ee`] and `docs/e2ee.md`. `None`:
    /// payloads travel as the app gives them.
    pub e2ee: Option<E2eeKeys>,
}

impl From<bool> for JoinOptions {
    fn from(subscribe_all: bool) -> Self {
        JoinOptions {
            subscribe_all,
            e2ee: None,
        }
    }
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, SdkError>>;

pub(crate) struct JoinInfo {
    pub channel_id: u64,
    pub user: String,
    pub census: Arc<Census>,
    pub permits: Arc<Semaphore>,
    pub e2ee: Option<Arc<KeyRing>>,
}

/// Commands from the handles to the supervisor.
pub(crate) enum Cmd {
    Join {
        token: String,
        channel: String,
        subscribe_all: bool,
        e2ee: Option<E2eeKeys>,
        reply: Reply<JoinInfo>,
    },
    Leave {
        channel_id: u64,
        reply: Reply<()>,
    },
    Publish {
        channel_id: u64,
        slot: Arc<TrackSlot>,
        reply: Reply<()>,
    },
    Unpublish {
        slot: Arc<TrackSlot>,
    },
    Subscribe {
        channel_id: u64,
        user: String,
        reply: Reply<()>,
    },
    Unsubscribe {
        channel_id: u64,
        user: String,
        reply: Reply<()>,
    },
    Message {
        channel_id: u64,
        payload: Bytes,
        reply: Reply<u64>,
    },
    SetToken {
        channel_id: u64,
        token: String,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// Send a command and wait for its answer for at most `timeout`.
pub(crate) async fn call<T>(
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

/// A client of the RTN edge network. Connects, keeps a connection to an edge
/// (reconnecting and failing over by itself), and reports everything through
/// [`Client::next_event`]. Dropping it (or [`Client::close`]) disconnects;
/// its [`Channel`]s and [`crate::TrackPublisher`]s then fail with
/// [`SdkError::Closed`].
pub struct Client {
    cmds: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
    request_timeout: Duration,
    max_unacked: usize,
    connect_timing: ConnectTiming,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("edge", &self.edge())
            .finish()
    }
}

impl Client {
    /// Validate `config`, then connect to the first candidate edge that
    /// answers (attempts staggered by `connect_stagger`, up to
    /// `connect_rounds` rounds with jittered backoff between them).
    pub async fn connect(config: ClientConfig) -> Result<Client, SdkError> {
        config.validate()?;
        let mut shared = Shared::new(config.media_queue);
        shared.max_media_lateness_us = config.max_media_lateness.map_or(i64::MAX, |d| {
            i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
        });
        shared.repair_out = config
            .repair
            .then(|| std::sync::Mutex::new(repair::HopSender::new(config.repair_history)));
        shared.players = config
            .playout
            .clone()
            .map(|p| Arc::new(crate::players::Players::new(p)));
        let shared = Arc::new(shared);
        if let Some(players) = &shared.players {
            tokio::spawn(crate::players::run(
                players.clone(),
                Arc::downgrade(&shared),
            ));
        }
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let request_timeout = config.request_timeout;
        let max_unacked = config.max_unacked;
        let mut sup = Supervisor::new(config, shared.clone())?;
        let (first, connect_timing) = sup.connect_first().await?;
        tokio::spawn(sup.run(first, cmd_rx));
        Ok(Client {
            cmds: cmd_tx,
            shared,
            request_timeout,
            max_unacked,
            connect_timing,
        })
    }

    /// Join `channel` with a token from the app's server. `options` is a
    /// [`JoinOptions`] or a bool (`subscribe_all`).
    pub async fn join(
        &self,
        token: &str,
        channel: &str,
        options: impl Into<JoinOptions>,
    ) -> Result<Channel, SdkError> {
        let options = options.into();
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(SdkError::Invalid(format!(
                "token must be 1..={MAX_TOKEN_LEN} bytes"
            )));
        }
        if channel.is_empty() || channel.len() > MAX_NAME_LEN {
            return Err(SdkError::Invalid(format!(
                "channel name must be 1..={MAX_NAME_LEN} bytes"
            )));
        }
        let info = call(&self.cmds, self.request_timeout, |reply| Cmd::Join {
            token: token.into(),
            channel: channel.into(),
            subscribe_all: options.subscribe_all,
            e2ee: options.e2ee,
            reply,
        })
        .await?;
        Ok(Channel {
            name: channel.into(),
            id: info.channel_id,
            user: info.user,
            census: info.census,
            cmds: self.cmds.downgrade(),
            shared: self.shared.clone(),
            permits: info.permits,
            max_unacked: self.max_unacked,
            request_timeout: self.request_timeout,
            e2ee: info.e2ee,
        })
    }

    /// The next event, in the order they happened; None once the client is
    /// closed and every event was read.
    pub async fn next_event(&self) -> Option<Event> {
        self.shared.events.next().await
    }

    /// The next event if one is waiting.
    pub fn try_next_event(&self) -> Option<Event> {
        self.shared.events.try_next()
    }

    /// Live counters; `stats().snapshot()` copies them.
    /// Each received track's playout so far (jitter buffer delay, late
    /// and concealed packets, stalls); empty when the client hands media
    /// out as it arrives (`ClientConfig::playout` = `None`).
    pub fn playout_stats(&self) -> Vec<crate::players::TrackPlayout> {
        self.shared
            .players
            .as_ref()
            .map_or_else(Vec::new, |p| p.stats())
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Where the time of [`Client::connect`] went (lookup, handshake) and
    /// the first edge's RTT.
    pub fn connect_timing(&self) -> ConnectTiming {
        self.connect_timing
    }

    /// The edge currently connected to (None while reconnecting).
    pub fn edge(&self) -> Option<SocketAddr> {
        self.shared.edge()
    }

    /// Leave every channel and close the connection cleanly (QUIC code 0).
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Close { reply: tx }).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }
}
