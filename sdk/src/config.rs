//! Client configuration: candidate edges, trust roots, timers and limits.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::SdkError;

/// Controllers a config may name (tried in turn, each within
/// `request_timeout`).
pub const MAX_CONTROLLERS: usize = 8;
use crate::tls::EdgeTrust;

/// An edge the client may connect to: its address and the TLS server name
/// its certificate is valid for (RTN's one edge address type).
pub type EdgeCandidate = protocol::EdgeAddress;

/// Makes the UDP socket a client endpoint sends through, given the wildcard
/// address of the edge's family. The default binds that address. The lab
/// uses its own to place clients at emulated addresses behind its WAN
/// emulation; an app could use one to pin a local interface.
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct SocketFactory(
    pub Arc<dyn Fn(SocketAddr) -> std::io::Result<Arc<dyn quinn::AsyncUdpSocket>> + Send + Sync>,
);

impl fmt::Debug for SocketFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SocketFactory")
    }
}

/// Exponential backoff between failed reconnect rounds: `initial`, doubling
/// up to `max`, each delay plus a uniformly random extra of up to
/// `jitter` times itself (so clients that lost the same edge spread out).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// 0.0 = no jitter, 1.0 = up to +100%.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
            jitter: 1.0,
        }
    }
}

/// Everything the client needs. Build with [`ClientConfig::new`] and adjust
/// fields; [`crate::Client::connect`] validates it.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Candidate edges, best first. The client connects to the first that
    /// answers and fails over to the others. Empty: ask `controller`.
    pub edges: Vec<EdgeCandidate>,
    /// Region controllers (`https://host:port`, or `http://` on a trusted
    /// network) to ask for a shortlist of nearby edges when `edges` is
    /// empty, in order: when one does not answer (or answers an error) the
    /// next is asked (e.g. the API's DNS name first, then another region's).
    /// Their HTTPS certificates are verified as `trust` says (pinned digests
    /// are the edges' own: a controller is then verified against the
    /// system's roots).
    pub controllers: Vec<String>,
    /// Edges asked of the controller.
    pub shortlist_len: usize,
    /// With more than one candidate, measure each (a few keepalive round
    /// trips, within `probe_timeout`) before connecting, and connect to the
    /// fastest, keeping the runner-up next in line for failover. Always done
    /// for a controller's shortlist; for an explicit `edges` list only when
    /// set (default: the app's order is kept).
    pub probe_candidates: bool,
    pub probe_timeout: Duration,
    /// Measure the candidates again this often while connected, and move to
    /// one that is clearly faster (see [`crate::nearest::should_switch`]).
    /// `None`: never.
    pub reprobe_interval: Option<Duration>,
    /// How edges' certificates are verified: the system's WebPKI roots
    /// (default), a custom CA, or the digests edges publish for their
    /// self-signed development certificates ([`crate::tls`]).
    pub trust: EdgeTrust,
    /// A keepalive is sent this often; the edge answers each one.
    pub keepalive_interval: Duration,
    /// Nothing at all received from the edge (no frame, no datagram) for this
    /// long = the edge is gone: reconnect. Short, so that media resumes within
    /// about a second of an edge dying.
    pub liveness_timeout: Duration,
    /// Limit of one connection attempt (QUIC + TLS handshake).
    pub connect_timeout: Duration,
    /// Attempts within a round are staggered by this much ("happy
    /// eyeballs"): a candidate that has not answered yet does not hold up the
    /// next one for the whole `connect_timeout`; the first handshake to
    /// complete wins.
    pub connect_stagger: Duration,
    /// Rounds over every candidate that [`crate::Client::connect`] makes before
    /// it gives up. (Once connected, the client retries forever.)
    pub connect_rounds: u32,
    /// How long a request (join, publish, subscribe, leave) may wait for its
    /// answer, including time spent reconnecting.
    pub request_timeout: Duration,
    /// Delays between failed reconnect rounds. The first attempt after a
    /// connection is lost is immediate.
    pub backoff: Backoff,
    /// Messages kept per channel for replay after they were acknowledged.
    pub replay_window: usize,
    /// Unacknowledged messages per channel before `send_message` waits.
    pub max_unacked: usize,
    /// How long a gap in a sender's messages is waited for before it is
    /// skipped.
    pub reorder_timeout: Duration,
    /// Out-of-order messages held per sender at most; past that the oldest
    /// gap is skipped at once.
    pub max_held_per_sender: usize,
    /// Media packets that may wait in the event queue; newer ones are dropped
    /// (and counted) while the app is not reading events fast enough.
    /// Other events are never dropped.
    pub media_queue: usize,
    /// Media arriving more than this behind the fastest packet of its track
    /// is dropped (counted in `media_late`): after an outage, what was
    /// queued on the way arrives seconds late. `None` delivers everything.
    pub max_media_lateness: Option<Duration>,
    /// Repair media loss on the last mile both ways (docs/protocol.md §5.1):
    /// NACK the edge for gaps in received tracks, keep the media sent
    /// lately (up to `repair_history` packets per track, at most 500 ms) to answer
    /// the edge's NACKs, and while the link to the edge loses 2% or more
    /// (QUIC's own count), send each audio packet again after the next one
    /// of its track (§5.2). `false`: best-effort media, NACKs ignored.
    pub repair: bool,
    pub repair_history: usize,
    /// Play received media out through a jitter buffer per track
    /// (`sdk::playout`): the app gets each track's packets in sequence
    /// order at their playout time (a delay adapted to the measured jitter,
    /// within the kind's bounds), and late, concealed and stalled media is
    /// counted (`Client::playout_stats`). `None`: media is handed out as it
    /// arrives, for apps with their own jitter buffer.
    pub playout: Option<crate::players::PlayoutSettings>,
    /// QUIC idle timeout (a backstop; liveness detection is much faster).
    pub idle_timeout: Duration,
    /// Where client sockets come from; `None`: bind the wildcard address
    /// (or `local_ip`).
    pub socket: Option<SocketFactory>,
    /// Send from this local address (QUIC, and the controller lookup, whose
    /// answer depends on the address the controller sees): for hosts with
    /// several addresses. `None`: the system chooses.
    pub local_ip: Option<std::net::IpAddr>,
}

impl ClientConfig {
    /// Defaults: keepalive 150 ms, liveness 500 ms, connect 1 s (staggered
    /// by 200 ms, 3 rounds), requests 5 s, backoff 50 ms to 2 s with full
    /// jitter, replay window 256, 1,024 unacked, reorder timeout 5 s;
    /// a controller's shortlist of 4, probed within 1 s, again every 30 s.
    /// Edges are verified against the system's WebPKI roots; set `trust`
    /// (or use [`ClientConfig::trusting`]) for a custom CA or pinned digests.
    pub fn new(edges: Vec<EdgeCandidate>) -> Self {
        ClientConfig {
            edges,
            controllers: Vec::new(),
            shortlist_len: 4,
            probe_candidates: false,
            probe_timeout: Duration::from_secs(1),
            reprobe_interval: Some(Duration::from_secs(30)),
            trust: EdgeTrust::WebPki,
            keepalive_interval: Duration::from_millis(150),
            liveness_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(1),
            connect_stagger: Duration::from_millis(200),
            connect_rounds: 3,
            request_timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
            replay_window: 256,
            max_unacked: 1_024,
            reorder_timeout: Duration::from_secs(5),
            max_held_per_sender: 1_024,
            media_queue: 4_096,
            max_media_lateness: Some(Duration::from_secs(1)),
            repair: true,
            repair_history: 1_024,
            playout: Some(crate::players::PlayoutSettings::default()),
            idle_timeout: Duration::from_secs(10),
            socket: None,
            local_ip: None,
        }
    }

    /// The same config with another way of verifying edges.
    pub fn trusting(mut self, trust: EdgeTrust) -> Self {
        self.trust = trust;
        self
    }

    /// Check the values; the error says which field is wrong.
    pub fn validate(&self) -> Result<(), SdkError> {
        let bad = |m: &str| Err(SdkError::Invalid(m.to_string()));
        if self.edges.is_empty() && self.controllers.is_empty() {
            return bad("edges: at least one candidate edge (or a controller to ask) is needed");
        }
        if !self.controllers.is_empty() && !(1..=32).contains(&self.shortlist_len) {
            return bad("shortlist_len must be within 1..=32");
        }
        if self.controllers.len() > MAX_CONTROLLERS {
            return bad(&format!("controllers: at most {MAX_CONTROLLERS}"));
        }
        for c in &self.controllers {
            crate::nearest::ControllerUrl::parse(c)?;
        }
        if self.probe_timeout.is_zero() {
            return bad("probe_timeout must be above zero");
        }
        if self
            .reprobe_interval
            .is_some_and(|i| i < Duration::from_secs(1))
        {
            return bad("reprobe_interval must be at least 1 s");
        }
        if let Some(e) = self.edges.iter().find(|e| e.server_name.is_empty()) {
            return bad(&format!("edges: {} has an empty server_name", e.addr));
        }
        if matches!(&self.trust, EdgeTrust::Ca(pem) if pem.is_empty()) {
            return bad("trust: the custom CA is empty");
        }
        if self.keepalive_interval.is_zero() {
            return bad("keepalive_interval must be above zero");
        }
        if self.repair && !(1..=65_536).contains(&self.repair_history) {
            return bad("repair_history must be within 1..=65536 (or repair off)");
        }
        if self.liveness_timeout <= self.keepalive_interval {
            return bad("liveness_timeout must exceed keepalive_interval");
        }
        if self.idle_timeout <= self.liveness_timeout {
            return bad("idle_timeout must exceed liveness_timeout");
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return bad("connect_timeout and request_timeout must be above zero");
        }
        if self.connect_rounds == 0 {
            return bad("connect_rounds must be at least 1");
        }
        if self.backoff.initial.is_zero() || self.backoff.max < self.backoff.initial {
            return bad("backoff: need 0 < initial <= max");
        }
        if !(self.backoff.jitter.is_finite() && (0.0..=10.0).contains(&self.backoff.jitter)) {
            return bad("backoff.jitter must be within 0.0..=10.0");
        }
        if !(1..=1 << 20).contains(&self.max_unacked) {
            return bad("max_unacked must be within 1..=1048576");
        }
        if self.max_held_per_sender == 0 || self.media_queue == 0 {
            return bad("max_held_per_sender and media_queue must be at least 1");
        }
        if self.reorder_timeout.is_zero() {
            return bad("reorder_timeout must be above zero");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ClientConfig {
        ClientConfig::new(vec![EdgeCandidate::new(
            "127.0.0.1:4433".parse().unwrap(),
            "localhost",
        )])
        .trusting(EdgeTrust::Ca(b"pem".to_vec()))
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(cfg().validate(), Ok(()));
    }

    #[test]
    fn bad_values_are_named() {
        let mut c = cfg();
        c.liveness_timeout = c.keepalive_interval;
        assert!(
            matches!(c.validate(), Err(SdkError::Invalid(m)) if m.contains("liveness_timeout"))
        );
        let mut c = cfg();
        c.edges.clear();
        assert!(matches!(c.validate(), Err(SdkError::Invalid(m)) if m.contains("edges")));
        // Controllers instead: each URL is checked up front.
        c.controllers = vec![
            "https://ctl.example.com".into(),
            "http://10.0.0.1:8080/rtn".into(),
        ];
        assert_eq!(c.validate(), Ok(()));
        c.controllers.push("ftp://ctl.example.com".into());
        assert!(matches!(c.validate(), Err(SdkError::Invalid(m)) if m.contains("ftp://")));
        c.controllers = vec!["https://ctl.example.com".into(); MAX_CONTROLLERS + 1];
        assert!(matches!(c.validate(), Err(SdkError::Invalid(m)) if m.contains("controllers")));
        let mut c = cfg();
        c.backoff.jitter = f64::NAN;
        assert!(matches!(c.validate(), Err(SdkError::Invalid(m)) if m.contains("jitter")));
        let mut c = cfg();
        c.max_unacked = 0;
        assert!(c.validate().is_err());
    }
}
