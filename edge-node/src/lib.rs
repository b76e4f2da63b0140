//! The RTN edge relay.
//!
//! An edge is a QUIC endpoint (quinn + rustls) that serves two kinds of link
//! on one UDP port, told apart by ALPN: client links (SDK sessions joining
//! channels, publishing and subscribing to media and messages) and relay links
//! (mutual TLS with other edges of the mesh). It fans media and messages out
//! to its local subscribers and forwards them to other edges along
//! source-routed trees built from its route table. All its state is soft:
//! sessions, channel membership and routes are rebuilt from clients, peers and
//! the route feed after a restart.
//!
//! Start one in-process with [`Edge::start`]; the `edge-node` binary wraps it
//! with a TOML config, flags, SIGTERM draining and dev tooling.

pub mod admin;
pub mod admission;
pub mod channel;
pub mod composed_routes;
pub mod config;
pub mod control;
pub mod directory;
pub mod edge;
pub mod forward;
pub mod forwarding;
pub mod log_throttle;
pub mod media_queue;
pub mod message_seq;
pub mod metrics;
pub mod probe;
pub mod relay;
pub mod routes;
pub mod session;
pub mod socket;
pub mod tasks;
pub mod tls;
pub mod webtransport;

pub use config::EdgeConfig;
pub use edge::{Edge, EdgeOptions};
pub use routes::{RouteFeed, RouteTable};
