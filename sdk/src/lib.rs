//! The RTN client SDK: what an app embeds to carry live media and chat
//! through the RTN edge network.
//!
//! ```no_run
//! # async fn demo(edges: Vec<sdk::EdgeCandidate>, ca_pem: Vec<u8>, token: String) -> Result<(), sdk::SdkError> {
//! let client = sdk::Client::connect(sdk::ClientConfig::new(edges, ca_pem)).await?;
//! let room = client.join(&token, "room", true).await?;          // token from the app's server
//! let mic = room.publish_track("mic", sdk::TrackKind::Audio).await?;
//! mic.send(b"opus frame").await?;                                // media: QUIC datagram
//! room.send_message(bytes::Bytes::from_static(b"hi")).await?;   // message: reliable, ordered
//! while let Some(event) = client.next_event().await {
//!     println!("{event:?}");                                     // members, tracks, media, messages
//! }
//! # Ok(()) }
//! ```
//!
//! The client fails over by itself: when its edge dies (nothing heard for
//! `liveness_timeout`) or says goaway, it connects to the next candidate,
//! rejoins its channels, republishes its tracks and replays its recent
//! messages; receivers drop duplicates and restore order by sequence.

pub mod client;
pub mod config;
pub mod error;
pub mod reorder;
pub mod replay;
mod tls;

pub use client::{Channel, Client, Event, Media, Message, Stats, TrackKind, TrackPublisher};
pub use config::{ClientConfig, EdgeCandidate};
pub use error::{SdkError, TokenRefusal};
