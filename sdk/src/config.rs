//! Client configuration.

use std::net::SocketAddr;
use std::time::Duration;

/// An edge the client may connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeCandidate {
    pub addr: SocketAddr,
    /// TLS server name the edge's certificate is valid for.
    pub server_name: String,
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Candidate edges, best first (e.g. from the controller's nearest-edge
    /// lookup). The client connects to the first that answers and fails over
    /// to the others.
    pub edges: Vec<EdgeCandidate>,
    /// PEM CA certificate(s) the edges' certificates chain to.
    pub ca_pem: Vec<u8>,
    /// Keepalive period; also how often liveness is checked.
    pub keepalive_interval: Duration,
    /// Nothing at all received from the edge for this long = the edge is
    /// gone; reconnect. Short so that media resumes within about a second of
    /// an edge dying (Tailscale: "media received recently proves the edge").
    pub liveness_timeout: Duration,
    pub connect_timeout: Duration,
    /// How long a request (join, publish...) may wait for its answer.
    pub request_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Messages kept for replay after they were acknowledged.
    pub replay_window: usize,
    /// Unacknowledged messages allowed before `send_message` refuses.
    pub max_unacked: usize,
    /// How long a gap in a sender's messages is waited for.
    pub reorder_timeout: Duration,
}

impl ClientConfig {
    pub fn new(edges: Vec<EdgeCandidate>, ca_pem: Vec<u8>) -> Self {
        ClientConfig {
            edges,
            ca_pem,
            keepalive_interval: Duration::from_millis(200),
            liveness_timeout: Duration::from_millis(600),
            connect_timeout: Duration::from_millis(1_000),
            request_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            replay_window: 256,
            max_unacked: 1_024,
            reorder_timeout: Duration::from_secs(2),
        }
    }
}
