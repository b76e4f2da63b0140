//! The RTN client SDK: what an app embeds to carry live media and chat
//! through the RTN edge network.
//!
//! A [`Client`] keeps one QUIC connection (ALPN `rtn-client/1`, TLS 1.3,
//! the edge verified as [`EdgeTrust`] says: WebPKI by default) to the nearest healthy edge
//! of its candidate list. Over it the app joins [`Channel`]s with signed
//! tokens from its own server, publishes media tracks (QUIC datagrams,
//! loss-tolerant), sends reliable ordered messages (the control stream), and
//! receives everything as [`Event`]s.
//!
//! ```no_run
//! # async fn demo(edges: Vec<sdk::EdgeCandidate>, token: String) -> Result<(), sdk::SdkError> {
//! use sdk::{Client, ClientConfig, Event, JoinOptions, TrackKind};
//!
//! // Edges verified against the system's WebPKI roots (sdk::EdgeTrust).
//! let client = Client::connect(ClientConfig::new(edges)).await?;
//! let room = client
//!     .join(&token, "room", JoinOptions { subscribe_all: true, ..Default::default() }) // token from the app's server
//!     .await?;
//! let mic = room.publish_track("mic", TrackKind::Audio).await?;
//! mic.send(b"opus frame").await?;                                 // media: one QUIC datagram
//! room.send_message(bytes::Bytes::from_static(b"hi")).await?;    // message: reliable, ordered
//! while let Some(event) = client.next_event().await {
//!     match event {
//!         Event::Media(m) => println!("{}/{}: {} bytes", m.user, m.track, m.payload.len()),
//!         Event::Message(m) => println!("{}: {:?}", m.from, m.payload),
//!         Event::Reconnecting { reason } => println!("reconnecting: {reason}"),
//!         other => println!("{other:?}"),                          // members, tracks, ...
//!     }
//! }
//! client.close().await;                                            // leaves, closes with code 0
//! # Ok(()) }
//! ```
//!
//! **Failover.** The client sends a keepalive every `keepalive_interval`
//! (150 ms), and one more as soon as media stops for 60 ms; while media
//! flows (either way), an edge from which not one UDP datagram arrives for
//! four RTTs (at least 100 ms) after a keepalive is dead, as is one whose
//! app is silent for `liveness_timeout` (500 ms) (`watchdog.rs`). A QUIC
//! close, a broken stream, a bad frame or a goaway end the connection too. It then reconnects by itself (goaway
//! redirects first, then the candidates after the failed one, then the rest;
//! the first round at once, then jittered exponential backoff), rejoins every
//! channel with its stored token, republishes its tracks (publishers switch
//! to the new track keys by themselves), restores subscriptions, and resends
//! its recent messages. [`Event::Reconnecting`] and [`Event::Reconnected`]
//! bracket the outage.
//!
//! **Messages** are delivered in order, once, per sender and channel, across
//! edge failures: senders keep a replay window ([`replay`]) resent after a
//! reconnect and to members that (re)join; receivers drop duplicates and
//! restore order ([`reorder`]), skipping a gap only after `reorder_timeout`.
//!
//! **End-to-end encryption** ([`e2ee`]): join with
//! `JoinOptions { e2ee: Some(ChannelKey::parse(..)?.into()), .. }` (a key from the
//! app's own server) and every media payload and message body is sealed
//! (AES-256-GCM, per-sender keys) before it leaves and opened on receipt;
//! the edges see only the headers they forward by. `docs/e2ee.md`.
//!
//! Modules: [`config`] (settings), [`client`] (the handle), [`channel`]
//! (channels and track publishers), [`events`], [`error`], [`stats`], [`e2ee`],
//! [`replay`] and [`reorder`] (message guarantees), [`backoff`]; the
//! connection and the state machine are internal.

pub mod backoff;
pub mod channel;
pub mod client;
pub mod config;
mod connection;
pub mod e2ee;
pub mod error;
pub mod events;
mod lateness;
pub mod nearest;
mod players;
pub mod playout;
pub mod reorder;
pub mod replay;
mod roster;
pub mod stats;
mod stream;
mod supervisor;
pub mod tls;
mod watchdog;

pub use channel::{Channel, TrackPublisher};
pub use client::{Client, JoinOptions};
pub use config::{Backoff, ClientConfig, EdgeCandidate, SocketFactory, MAX_CONTROLLERS};
pub use e2ee::{ChannelKey, E2eeError, E2eeKeys};
pub use error::{SdkError, TokenRefusal};
pub use events::{Event, Media, Message, TrackKind};
pub use players::{PlayoutSettings, TrackPlayout};
pub use stats::{ConnectTiming, Stats, StatsSnapshot};
pub use tls::EdgeTrust;
