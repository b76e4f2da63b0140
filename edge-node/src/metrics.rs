//! Edge metrics. Handles are registered once per edge (per peer for link and
//! relay series) and kept, so the forwarding path does no label lookups.
//! Every series carries `edge` (an edge's id: bounded); per-link and
//! per-peer series carry `peer` (another edge's id); drops, errors and joins
//! a `reason`/`result` from a fixed list; never user, session or channel ids.
//! The metrics are listed in `docs/observability.md`; the alert rules that
//! use them are `ops/prometheus/rtn-rules.yml`.
//!
//! Per-peer series (label `peer`) end: once a peer has been out of this
//! edge's route table for [`FORGET_PEER_AFTER`] (it left the mesh for good),
//! its series are removed ([`EdgeMetrics::forget_departed`],
//! [`control::metrics::forget`]), so the exposition does not grow with the
//! mesh's churn. Other labels (`link`, `dir`, `reason`, ...) take values
//! from fixed lists and need no such care.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use protocol::EdgeId;

/// How long a peer must have been out of this edge's route table (out of
/// the registry and the config's peers) before its series are removed. Long
/// enough that a peer restarting or being upgraded (§4 of
/// docs/operations.md: minutes at most), or a lease lost in an etcd outage
/// and taken again, keeps its series (and counters) continuous; the
/// controllers keep departed edges on their dashboard as long.
pub const FORGET_PEER_AFTER: Duration = Duration::from_secs(10 * 60);

/// The process-wide Prometheus recorder ([`control::metrics`]: one per
/// process, shared with in-process controllers; several in-process edges
/// share it, told apart by their `edge` label), with the edge's metrics
/// described.
pub fn prometheus() -> control::metrics::Handle {
    static DESCRIBED: OnceLock<()> = OnceLock::new();
    let handle = control::metrics::prometheus();
    DESCRIBED.get_or_init(describe);
    handle
}

/// The edge's process metrics (`rtn_edge_process_*`, see
/// [`control::metrics::ProcessMetrics`]), described on first use.
fn process_metrics() -> &'static control::metrics::ProcessMetrics {
    static PROCESS: OnceLock<control::metrics::ProcessMetrics> = OnceLock::new();
    PROCESS.get_or_init(|| control::metrics::ProcessMetrics::new("rtn_edge_"))
}

/// The exposition the admin port serves: the process metrics read now,
/// then everything recorded.
pub fn render() -> String {
    process_metrics().render(&prometheus())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    process_metrics();
    describe_gauge!(
        "rtn_edge_build_info",
        "Always 1; label version gives the edge software's version."
    );
    describe_gauge!(
        "rtn_edge_max_sessions",
        "Client connections this edge accepts at most (limits.max_sessions): rtn_edge_sessions over it is the edge's load."
    );
    describe_gauge!(
        "rtn_edge_ready",
        "1 while the edge accepts clients (/readyz answers 200), 0 from the start of a drain."
    );
    describe_gauge!(
        "rtn_edge_draining",
        "1 from the start of a drain (SIGTERM, Ctrl-C: goaway, then exit), else 0."
    );
    describe_gauge!(
        "rtn_edge_certificate_expiry_timestamp_seconds",
        Unit::Seconds,
        "When (Unix time) a certificate the edge uses expires, by cert (client: the one clients see, mesh: the relay links', etcd_client: the control store's) and source (files, self_signed, dev, memory)."
    );
    describe_counter!(
        "rtn_cert_reloads_total",
        "Reloads of the client-facing certificate's files after they changed, by owner and result (ok, or error: the previous certificate stays)."
    );
    describe_counter!(
        "rtn_edge_local_repairs_total",
        "Relayed packets or frames sent around a next hop this edge sees dead, on its own routes, by kind."
    );
    describe_counter!(
        "rtn_edge_directory_hints_total",
        "Directory updates of this edge's own entry sent straight to edges a rejoining client named or a peer back from a long outage, by event (greeted, told)."
    );
    describe_counter!(
        "rtn_edge_directory_resyncs_total",
        "Whole directory entries asked for because a copy could not be updated, by event: home_lacked_entry (this edge, a channel's home, lacked what a report built on and asked its edge for the whole entry), own_entry_resent (this edge resent its own entry whole at a home's request), entries_wanted (this edge asked a home for entries its digest named). Steady nonzero rates mean lost or reordered directory frames."
    );
    describe_gauge!(
        "rtn_edge_info",
        "Always 1; labels give the edge's region, city and software version."
    );
    describe_gauge!("rtn_edge_sessions", "Client connections currently open.");
    describe_gauge!(
        "rtn_edge_channels",
        "Channels with at least one local member."
    );
    describe_counter!(
        "rtn_edge_joins_total",
        "Join attempts by result: ok, or the refusal reason (token_expired, token_bad_signature, draining, ...)."
    );
    describe_counter!(
        "rtn_edge_media_packets_total",
        "Media datagrams by direction (in/out) and link kind (client/relay)."
    );
    describe_counter!(
        "rtn_edge_media_bytes_total",
        Unit::Bytes,
        "Media datagram bytes by direction (in/out) and link kind (client/relay)."
    );
    describe_counter!(
        "rtn_edge_peer_media_packets_total",
        "Media datagrams relayed to (out) or from (in) each peer edge."
    );
    describe_counter!(
        "rtn_edge_peer_media_bytes_total",
        Unit::Bytes,
        "Media datagram bytes relayed to (out) or from (in) each peer edge."
    );
    describe_counter!(
        "rtn_edge_media_dropped_total",
        "Media datagrams dropped, by reason."
    );
    describe_counter!(
        "rtn_edge_repair_nacked_total",
        "Media packets asked for again (NACK): dir=out by this edge, dir=in of it."
    );
    describe_counter!(
        "rtn_edge_repair_resent_packets_total",
        "Media packets sent again in answer to NACKs."
    );
    describe_counter!(
        "rtn_edge_repair_resent_bytes_total",
        "Bytes of media sent again in answer to NACKs."
    );
    describe_counter!(
        "rtn_edge_repair_refused_total",
        "NACKed media packets not sent again, by reason."
    );
    describe_counter!(
        "rtn_edge_repair_recovered_total",
        "Gaps in received media filled by a retransmission or a late packet."
    );
    describe_counter!(
        "rtn_edge_repair_abandoned_total",
        "Gaps in received media given up (deadline passed, too many at once)."
    );
    describe_counter!(
        "rtn_edge_media_duplicates_total",
        "Media received twice (or too far behind to place), not passed on."
    );
    describe_counter!(
        "rtn_edge_repair_parity_packets_total",
        "Parity packets (slow lossy relay links) and audio copies (any lossy hop) sent."
    );
    describe_counter!(
        "rtn_edge_repair_parity_bytes_total",
        "Bytes of parity packets and audio copies sent."
    );
    describe_counter!(
        "rtn_edge_repair_parity_rebuilt_total",
        "Media packets rebuilt from parity."
    );
    describe_gauge!(
        "rtn_edge_client_queue_packets",
        "Media datagrams waiting in the edge's client send queues (all sessions together)."
    );
    describe_gauge!(
        "rtn_edge_relay_queue_packets",
        "Media datagrams waiting in the send queue of the relay link to each peer."
    );
    describe_counter!(
        "rtn_edge_messages_total",
        "Chat messages by direction and link kind."
    );
    describe_counter!(
        "rtn_edge_protocol_errors_total",
        "Connections or frames refused, by reason."
    );
    describe_gauge!(
        "rtn_edge_relay_links",
        "Relay links to other edges currently up."
    );
    describe_counter!(
        "rtn_edge_media_copies_total",
        "Media packets copied around a next hop whose relay connection is suspect (silent a little over a round trip) or whose link loses 15% or more (a redundant path), by event (made: copies this edge made; over_budget: not made, the lossy link's copy budget was spent; dropped: the second of two copies to reach this edge's members)."
    );
    describe_counter!(
        "rtn_edge_relay_frame_copies_total",
        "Relay frames (messages, directory updates) sent once more around a next hop whose relay connection is suspect, besides the original to it."
    );
    describe_counter!(
        "rtn_edge_media_copy_bytes_total",
        "Bytes of copies around suspect hops and lossy links sent on relay links (made here or forwarded), apart from rtn_edge_media_bytes_total, which counts first sends of originals."
    );
    describe_counter!(
        "rtn_edge_unroutable_destinations_total",
        "Destination edges a packet or frame could not be sent to: no route in the table."
    );
    describe_gauge!(
        "rtn_edge_route_table_version",
        "Version of the route table in use."
    );
    describe_counter!(
        "rtn_edge_route_table_updates_total",
        "Route tables applied (from the controller, static config, or a local reroute)."
    );
    describe_counter!(
        "rtn_edge_route_changes_total",
        "Destinations whose path changed in an applied route table."
    );
    describe_gauge!(
        "rtn_edge_dead_peers",
        "Probe targets this edge currently sees dead."
    );
    describe_counter!(
        "rtn_edge_local_reroutes_total",
        "Route tables rewritten because the edge's own probes saw a next hop die."
    );
    describe_counter!(
        "rtn_edge_probes_sent_total",
        "Probes sent to each peer (replies are rtn_edge_link_rtt_seconds_count)."
    );
    describe_histogram!(
        "rtn_edge_link_rtt_seconds",
        Unit::Seconds,
        "Round-trip time of each answered probe to a peer edge."
    );
    describe_gauge!(
        "rtn_edge_link_rtt_smoothed_seconds",
        Unit::Seconds,
        "Probe RTT to a peer edge that routing uses: the 25th percentile of the last 20 answers (40 s at most)."
    );
    describe_gauge!(
        "rtn_edge_link_jitter_seconds",
        Unit::Seconds,
        "Probe RTT jitter to a peer edge: twice the distance from the 25th percentile of the same answers to their median."
    );
    describe_gauge!(
        "rtn_edge_link_loss_ratio",
        "Probe loss to a peer edge over an adaptive window of the last 50-300 probes, 0..1."
    );
    describe_gauge!(
        "rtn_edge_link_up",
        "1 while the peer answers probes, 0 once the edge sees it dead."
    );
    describe_counter!(
        "rtn_edge_store_writes_total",
        "Writes to the control store, by kind (edge, load, probes)."
    );
    describe_gauge!(
        "rtn_edge_store_connected",
        "1 while the edge's lease and watches on the control store are healthy."
    );
    describe_gauge!(
        "rtn_edge_udp_buffer_bytes",
        Unit::Bytes,
        "UDP socket buffer granted by the kernel, by direction."
    );
    describe_counter!(
        "rtn_edge_connections_refused_total",
        "New connections refused (CONNECTION_REFUSED) or ignored, by reason: ip_rate, ip_connections, handshake_backlog, retry_impossible."
    );
    describe_counter!(
        "rtn_edge_quic_retries_total",
        "QUIC Retry packets sent to validate a source address before keeping state."
    );
    describe_counter!(
        "rtn_edge_relay_frame_bytes_total",
        Unit::Bytes,
        "Bytes of relay control-stream frames written to peer edges (length prefix included), by kind (directory_report, directory_update, message, other)."
    );
    describe_counter!(
        "rtn_edge_relay_messages_resent_total",
        "Message frames written again on a relay link's new connection (the old one died with them possibly in flight)."
    );
    describe_gauge!(
        "rtn_edge_handshakes_in_progress",
        "QUIC handshakes started and not finished."
    );
    describe_counter!(
        "rtn_edge_rate_limited_total",
        "Requests refused by a per-token or per-session rate limit, by limit (joins_per_token, messages_per_session)."
    );
}

/// Per-peer link metrics, registered once per probed peer.
struct LinkHandles {
    rtt: Histogram,
    sent: Counter,
    gauges: OnceLock<LinkGauges>,
}

struct LinkGauges {
    srtt: Gauge,
    jitter: Gauge,
    loss: Gauge,
    up: Gauge,
}

/// Per-peer relay traffic counters, registered once per relay link.
#[derive(Clone)]
pub struct PeerCounters {
    pub packets: Counter,
    pub bytes: Counter,
}

impl PeerCounters {
    pub fn add(&self, len: usize) {
        self.packets.increment(1);
        self.bytes.increment(len as u64);
    }
}

/// Loss repair on one kind of link (`link` = `relay` or `client`): the
/// receiving end's NACKs and what they recovered, the sending end's answers.
#[derive(Clone)]
pub struct RepairMetrics {
    /// Packets this edge asked for (`rtn_edge_repair_nacked_total{dir="out"}`).
    pub nacked_out: Counter,
    /// Packets asked of this edge (`dir="in"`).
    pub nacked_in: Counter,
    /// Packets sent again, and their bytes.
    pub resent: Counter,
    pub resent_bytes: Counter,
    /// Gaps filled (by a retransmission or a reordered packet).
    pub recovered: Counter,
    /// Gaps given up (deadline passed, or too many at once).
    pub abandoned: Counter,
    /// Packets received twice (or too far behind to tell) and not passed
    /// on.
    pub duplicates: Counter,
    /// Parity packets and audio copies sent (forward error correction),
    /// their bytes, and the packets parity rebuilt.
    pub parity_sent: Counter,
    pub parity_bytes: Counter,
    pub parity_rebuilt: Counter,
    /// NACKed packets not sent again, by reason ([`REPAIR_REFUSALS`]).
    refused: Arc<[Counter; 4]>,
}

/// Why a NACKed packet is not sent again: too old to arrive in time, not
/// held (forgotten, or lost before this edge too), never sent on this link
/// (abuse), or over the link's repair budget.
pub const REPAIR_REFUSALS: [&str; 4] = ["too_late", "not_held", "never_sent", "over_budget"];

impl RepairMetrics {
    fn new(edge: &str, link: &'static str) -> Self {
        let c = |name: &'static str| counter!(name, "edge" => edge.to_string(), "link" => link);
        let nacked = |dir: &'static str| counter!("rtn_edge_repair_nacked_total", "edge" => edge.to_string(), "link" => link, "dir" => dir);
        let refused = |r: &'static str| counter!("rtn_edge_repair_refused_total", "edge" => edge.to_string(), "link" => link, "reason" => r);
        RepairMetrics {
            nacked_out: nacked("out"),
            nacked_in: nacked("in"),
            resent: c("rtn_edge_repair_resent_packets_total"),
            resent_bytes: c("rtn_edge_repair_resent_bytes_total"),
            recovered: c("rtn_edge_repair_recovered_total"),
            abandoned: c("rtn_edge_repair_abandoned_total"),
            duplicates: c("rtn_edge_media_duplicates_total"),
            parity_sent: c("rtn_edge_repair_parity_packets_total"),
            parity_bytes: c("rtn_edge_repair_parity_bytes_total"),
            parity_rebuilt: c("rtn_edge_repair_parity_rebuilt_total"),
            refused: Arc::new(REPAIR_REFUSALS.map(refused)),
        }
    }

    /// Count what a NACK got.
    pub fn answered(&self, a: &repair::Answer) {
        let asked = a.resend.len() + a.too_late + a.not_held + a.never_sent + a.over_budget;
        self.nacked_in.increment(asked as u64);
        self.resent.increment(a.resend.len() as u64);
        self.resent_bytes.increment(a.resent_bytes() as u64);
        for (c, n) in self
            .refused
            .iter()
            .zip([a.too_late, a.not_held, a.never_sent, a.over_budget])
        {
            c.increment(n as u64);
        }
    }

    /// The NACK datagrams `gaps` has due for a hop of round trip `rtt` and
    /// jitter `jitter`, counted (with the gaps given up meanwhile).
    pub fn nacks_due(
        &self,
        gaps: &mut repair::HopReceiver,
        rtt: std::time::Duration,
        jitter: std::time::Duration,
    ) -> Vec<bytes::Bytes> {
        let (nacks, asked) = gaps.nacks(std::time::Instant::now(), rtt, jitter);
        self.nacked_out.increment(asked as u64);
        self.abandoned.increment(gaps.take_abandoned());
        nacks
    }

    /// Count an arriving packet; whether to pass it on.
    pub fn arrived(&self, arrival: repair::Arrival) -> bool {
        use repair::Arrival;
        match arrival {
            Arrival::Recovered => self.recovered.increment(1),
            Arrival::Duplicate | Arrival::TooOld => {
                self.duplicates.increment(1);
                return false;
            }
            Arrival::New | Arrival::Late | Arrival::Restart => {}
        }
        true
    }
}

#[derive(Clone)]
pub struct EdgeMetrics {
    pub edge: String,
    pub sessions: Gauge,
    pub channels: Gauge,
    pub relay_links: Gauge,
    pub route_version: Gauge,
    pub dead_peers: Gauge,
    pub local_reroutes: Counter,
    /// `rtn_edge_store_connected`: only on an edge with a control store
    /// (a static mesh has none to be connected to: no series, no alert).
    pub store_connected: Gauge,
    pub unroutable: Counter,
    pub media_copies_made: Counter,
    pub media_copies_dropped: Counter,
    pub media_copies_over_budget: Counter,
    pub media_copy_bytes: Counter,
    pub frame_copies: Counter,
    pub media_in_client: Counter,
    pub media_in_client_bytes: Counter,
    pub media_in_relay: Counter,
    pub media_in_relay_bytes: Counter,
    pub media_out_client: Counter,
    pub media_out_client_bytes: Counter,
    pub media_out_relay: Counter,
    pub media_out_relay_bytes: Counter,
    pub messages_in_client: Counter,
    pub messages_in_relay: Counter,
    pub messages_out_client: Counter,
    pub messages_out_relay: Counter,
    /// Depth of all client media queues together.
    pub client_queue: Gauge,
    pub handshakes_in_progress: Gauge,
    /// Loss repair on relay links and on client links.
    pub repair_relay: RepairMetrics,
    pub repair_client: RepairMetrics,
    /// `rtn_edge_relay_frame_bytes_total` by kind, for [`RELAY_FRAME_KINDS`].
    relay_frame_bytes: Arc<[Counter]>,
    /// `rtn_edge_media_dropped_total` by reason, for [`MEDIA_DROP_REASONS`].
    media_drops: Arc<[(&'static str, Counter)]>,
    links: Arc<Mutex<HashMap<EdgeId, Arc<LinkHandles>>>>,
    /// Every peer this edge has series about, and since when it is out of
    /// the route table (None: in it).
    peers: Arc<Mutex<HashMap<EdgeId, Option<Instant>>>>,
    ready: Gauge,
    draining: Gauge,
}

/// The kinds of relay frames `rtn_edge_relay_frame_bytes_total` counts
/// ([`relay_frame_kind`]). Their counters exist, at 0, from the start.
pub const RELAY_FRAME_KINDS: [&str; 4] =
    ["directory_report", "directory_update", "message", "other"];

/// The index in [`RELAY_FRAME_KINDS`] of a relay frame's kind.
pub fn relay_frame_kind(frame: &protocol::pb::RelayFrame) -> usize {
    use protocol::pb::relay_frame::Kind as RK;
    match frame.kind {
        Some(RK::DirectoryReport(_)) => 0,
        Some(RK::DirectoryUpdate(_)) => 1,
        Some(RK::Message(_)) => 2,
        _ => 3,
    }
}

/// Every reason the edge drops media for (docs/observability.md describes
/// each). Their counters exist, at 0, from the start.
pub const MEDIA_DROP_REASONS: [&str; 11] = [
    "subscriber_queue_full",
    "relay_queue_full",
    "relay_link_down",
    "connection_closed",
    "unknown_track",
    "misrouted",
    "hop_limit",
    "malformed_datagram",
    "malformed_relay_datagram",
    "publisher_rate_limit",
    "stale",
];

impl EdgeMetrics {
    pub fn new(edge_id: u32) -> Self {
        prometheus();
        let edge = edge_id.to_string();
        let packets = |dir: &'static str, link: &'static str| counter!("rtn_edge_media_packets_total", "edge" => edge.clone(), "dir" => dir, "link" => link);
        let bytes = |dir: &'static str, link: &'static str| counter!("rtn_edge_media_bytes_total", "edge" => edge.clone(), "dir" => dir, "link" => link);
        let messages = |dir: &'static str, link: &'static str| counter!("rtn_edge_messages_total", "edge" => edge.clone(), "dir" => dir, "link" => link);
        // Present (at 0) from the start, so rates work from the first scrape.
        let _ = counter!("rtn_edge_route_table_updates_total", "edge" => edge.clone());
        let _ = counter!("rtn_edge_route_changes_total", "edge" => edge.clone());
        let _ = counter!("rtn_edge_joins_total", "edge" => edge.clone(), "result" => "ok");
        EdgeMetrics {
            sessions: gauge!("rtn_edge_sessions", "edge" => edge.clone()),
            channels: gauge!("rtn_edge_channels", "edge" => edge.clone()),
            relay_links: gauge!("rtn_edge_relay_links", "edge" => edge.clone()),
            route_version: gauge!("rtn_edge_route_table_version", "edge" => edge.clone()),
            dead_peers: gauge!("rtn_edge_dead_peers", "edge" => edge.clone()),
            local_reroutes: counter!("rtn_edge_local_reroutes_total", "edge" => edge.clone()),
            store_connected: Gauge::noop(),
            unroutable: counter!("rtn_edge_unroutable_destinations_total", "edge" => edge.clone()),
            media_copies_made: counter!("rtn_edge_media_copies_total", "edge" => edge.clone(), "event" => "made"),
            media_copies_dropped: counter!("rtn_edge_media_copies_total", "edge" => edge.clone(), "event" => "dropped"),
            media_copies_over_budget: counter!("rtn_edge_media_copies_total", "edge" => edge.clone(), "event" => "over_budget"),
            media_copy_bytes: counter!("rtn_edge_media_copy_bytes_total", "edge" => edge.clone()),
            frame_copies: counter!("rtn_edge_relay_frame_copies_total", "edge" => edge.clone()),
            media_in_client: packets("in", "client"),
            media_in_client_bytes: bytes("in", "client"),
            media_in_relay: packets("in", "relay"),
            media_in_relay_bytes: bytes("in", "relay"),
            media_out_client: packets("out", "client"),
            media_out_client_bytes: bytes("out", "client"),
            media_out_relay: packets("out", "relay"),
            media_out_relay_bytes: bytes("out", "relay"),
            messages_in_client: messages("in", "client"),
            messages_in_relay: messages("in", "relay"),
            messages_out_client: messages("out", "client"),
            messages_out_relay: messages("out", "relay"),
            client_queue: gauge!("rtn_edge_client_queue_packets", "edge" => edge.clone()),
            handshakes_in_progress: gauge!("rtn_edge_handshakes_in_progress", "edge" => edge.clone()),
            repair_relay: RepairMetrics::new(&edge, "relay"),
            repair_client: RepairMetrics::new(&edge, "client"),
            relay_frame_bytes: RELAY_FRAME_KINDS
                .iter()
                .map(|&k| counter!("rtn_edge_relay_frame_bytes_total", "edge" => edge.clone(), "kind" => k))
                .collect(),
            media_drops: MEDIA_DROP_REASONS
                .iter()
                .map(|&r| (r, counter!("rtn_edge_media_dropped_total", "edge" => edge.clone(), "reason" => r)))
                .collect(),
            links: Arc::default(),
            peers: Arc::default(),
            ready: gauge!("rtn_edge_ready", "edge" => edge.clone()),
            draining: gauge!("rtn_edge_draining", "edge" => edge.clone()),
            edge,
        }
    }

    /// The edge has a control store: its health is a series.
    pub fn with_store(mut self) -> Self {
        self.store_connected = gauge!("rtn_edge_store_connected", "edge" => self.edge.clone());
        self
    }

    /// The edge accepts clients, or (`false`) a drain started.
    pub fn ready(&self, ready: bool) {
        self.ready.set(if ready { 1.0 } else { 0.0 });
        self.draining.set(if ready { 0.0 } else { 1.0 });
    }

    /// How many sessions the edge accepts: the denominator of its load.
    pub fn capacity(&self, max_sessions: usize) {
        gauge!("rtn_edge_max_sessions", "edge" => self.edge.clone()).set(max_sessions as f64);
    }

    /// When a certificate the edge uses expires (`cert`: `client`, `mesh`
    /// or `etcd_client`; `source`: where it comes from, see
    /// [`crate::tls::cert_source`]).
    pub fn certificate_expiry(&self, cert: &'static str, source: &'static str, at: SystemTime) {
        let unix = match at.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        };
        gauge!("rtn_edge_certificate_expiry_timestamp_seconds", "edge" => self.edge.clone(),
            "cert" => cert, "source" => source)
        .set(unix);
    }

    /// Note that this edge has series about `peer`.
    fn peer_seen(&self, peer: EdgeId) {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(peer)
            .or_insert(None);
    }

    /// Remove the series of peers out of the route table (`present` says
    /// who is in it) for [`FORGET_PEER_AFTER`] by `now`; returns them. A
    /// series whose handle is still held (a relay link not yet closed) goes
    /// when the handle does.
    pub fn forget_departed(&self, present: impl Fn(EdgeId) -> bool, now: Instant) -> Vec<EdgeId> {
        let mut gone = vec![];
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|peer, since| {
                if present(*peer) {
                    *since = None;
                    return true;
                }
                let since = *since.get_or_insert(now);
                if now.saturating_duration_since(since) < FORGET_PEER_AFTER {
                    return true;
                }
                gone.push(*peer);
                false
            });
        if gone.is_empty() {
            return gone;
        }
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        for peer in &gone {
            links.remove(peer);
        }
        drop(links);
        for peer in &gone {
            control::metrics::forget(&[("edge", &self.edge), ("peer", &peer.to_string())]);
        }
        gone
    }

    /// The edge's static facts, as `rtn_edge_info`'s labels, and the
    /// build as `rtn_edge_build_info`'s (the usual name for the version,
    /// which dashboards and alerts join on).
    pub fn info(&self, region: &str, city: &str) {
        gauge!("rtn_edge_info", "edge" => self.edge.clone(), "region" => region.to_string(),
            "city" => city.to_string(), "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
        gauge!("rtn_edge_build_info", "edge" => self.edge.clone(), "version" => env!("CARGO_PKG_VERSION"))
            .set(1.0);
    }

    /// The link metrics of `peer`, registered on first use.
    fn link_handles(&self, peer: EdgeId) -> Arc<LinkHandles> {
        self.peer_seen(peer);
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links
            .entry(peer)
            .or_insert_with(|| {
                let (e, p) = (self.edge.clone(), peer.to_string());
                Arc::new(LinkHandles {
                    rtt: histogram!("rtn_edge_link_rtt_seconds", "edge" => e.clone(), "peer" => p.clone()),
                    sent: counter!("rtn_edge_probes_sent_total", "edge" => e, "peer" => p),
                    gauges: OnceLock::new(),
                })
            })
            .clone()
    }

    /// The prober's current view of the link to `peer`.
    pub fn link(&self, peer: EdgeId, srtt: Duration, jitter: Duration, loss: f64, alive: bool) {
        let handles = self.link_handles(peer);
        let h = self.link_gauges(peer, &handles);
        h.srtt.set(srtt.as_secs_f64());
        h.jitter.set(jitter.as_secs_f64());
        h.loss.set(loss);
        h.up.set(if alive { 1.0 } else { 0.0 });
    }

    /// A peer seen dead before it ever answered, or no longer probed: its
    /// link is reported down (the last figures stay until the peer has been
    /// out of the route table for [`FORGET_PEER_AFTER`]).
    pub fn link_down(&self, peer: EdgeId) {
        let handles = self.link_handles(peer);
        self.link_gauges(peer, &handles).up.set(0.0);
    }

    /// The gauges of a link, registered once the prober has something to
    /// say about it (not at the first probe: a link is not "down" before
    /// its first answer is due).
    fn link_gauges<'a>(&self, peer: EdgeId, h: &'a LinkHandles) -> &'a LinkGauges {
        h.gauges.get_or_init(|| {
            let (e, p) = (self.edge.clone(), peer.to_string());
            LinkGauges {
                srtt: gauge!("rtn_edge_link_rtt_smoothed_seconds", "edge" => e.clone(), "peer" => p.clone()),
                jitter: gauge!("rtn_edge_link_jitter_seconds", "edge" => e.clone(), "peer" => p.clone()),
                loss: gauge!("rtn_edge_link_loss_ratio", "edge" => e.clone(), "peer" => p.clone()),
                up: gauge!("rtn_edge_link_up", "edge" => e, "peer" => p),
            }
        })
    }

    /// One answered probe.
    pub fn probe_rtt(&self, peer: EdgeId, rtt: Duration) {
        self.link_handles(peer).rtt.record(rtt.as_secs_f64());
    }

    pub fn probe_sent(&self, peer: EdgeId) {
        self.link_handles(peer).sent.increment(1);
    }

    /// Relay traffic counters for one peer and direction ("in" or "out").
    pub fn peer_media(&self, peer: EdgeId, dir: &'static str) -> PeerCounters {
        self.peer_seen(peer);
        let peer = peer.to_string();
        PeerCounters {
            packets: counter!("rtn_edge_peer_media_packets_total", "edge" => self.edge.clone(), "peer" => peer.clone(), "dir" => dir),
            bytes: counter!("rtn_edge_peer_media_bytes_total", "edge" => self.edge.clone(), "peer" => peer, "dir" => dir),
        }
    }

    /// The depth gauge of the relay link queue to `peer`.
    pub fn relay_queue(&self, peer: EdgeId) -> Gauge {
        self.peer_seen(peer);
        gauge!("rtn_edge_relay_queue_packets", "edge" => self.edge.clone(), "peer" => peer.to_string())
    }

    /// A route table applied: `changed` destinations got a new path.
    pub fn route_table_applied(&self, changed: usize) {
        counter!("rtn_edge_route_table_updates_total", "edge" => self.edge.clone()).increment(1);
        counter!("rtn_edge_route_changes_total", "edge" => self.edge.clone())
            .increment(changed as u64);
    }

    pub fn store_write(&self, kind: &'static str) {
        counter!("rtn_edge_store_writes_total", "edge" => self.edge.clone(), "kind" => kind)
            .increment(1);
    }

    /// Count a dropped media datagram. Drops come in storms (a slow
    /// subscriber, an overloaded link), so the known reasons' counters are
    /// looked up in a short list rather than in the registry, which hashes
    /// and copies the labels on every call.
    pub fn media_dropped(&self, reason: &'static str) {
        match self.media_drops.iter().find(|(r, _)| *r == reason) {
            Some((_, c)) => c.increment(1),
            None => counter!("rtn_edge_media_dropped_total", "edge" => self.edge.clone(), "reason" => reason)
                .increment(1),
        }
    }

    pub fn connection_refused(&self, reason: &'static str) {
        counter!("rtn_edge_connections_refused_total", "edge" => self.edge.clone(), "reason" => reason)
            .increment(1);
    }

    /// A relayed packet or frame whose next hop this edge sees dead was
    /// sent around it on this edge's own routes (`forward::trees::Router::live_children`).
    pub fn local_repair(&self, kind: &'static str) {
        counter!("rtn_edge_local_repairs_total", "edge" => self.edge.clone(), "kind" => kind)
            .increment(1);
    }

    /// A relay frame of `bytes` on the wire (length prefix included) was
    /// written to a peer's control stream.
    pub fn relay_frame_written(&self, frame: &protocol::pb::RelayFrame, bytes: usize) {
        if let Some(c) = self.relay_frame_bytes.get(relay_frame_kind(frame)) {
            c.increment(bytes as u64);
        }
    }

    pub fn relay_messages_resent(&self, n: usize) {
        counter!("rtn_edge_relay_messages_resent_total", "edge" => self.edge.clone())
            .increment(n as u64);
    }

    pub fn quic_retry(&self) {
        counter!("rtn_edge_quic_retries_total", "edge" => self.edge.clone()).increment(1);
    }

    pub fn rate_limited(&self, limit: &'static str) {
        counter!("rtn_edge_rate_limited_total", "edge" => self.edge.clone(), "limit" => limit)
            .increment(1);
    }

    pub fn protocol_error(&self, reason: &'static str) {
        counter!("rtn_edge_protocol_errors_total", "edge" => self.edge.clone(), "reason" => reason)
            .increment(1);
    }

    /// Directory updates of this edge's own entry sent straight to edges a
    /// rejoining client named (`event`: `greeted` asks for their entry back,
    /// `told` does not; answers to greetings count as `told`).
    pub fn directory_hints(&self, event: &'static str, n: usize) {
        counter!("rtn_edge_directory_hints_total", "edge" => self.edge.clone(), "event" => event)
            .increment(n as u64);
    }

    /// Whole directory entries asked for or resent (see the description
    /// of `rtn_edge_directory_resyncs_total` for the events).
    pub fn directory_resyncs(&self, event: &'static str, n: usize) {
        counter!("rtn_edge_directory_resyncs_total", "edge" => self.edge.clone(), "event" => event)
            .increment(n as u64);
    }

    pub fn join(&self, result: &'static str) {
        counter!("rtn_edge_joins_total", "edge" => self.edge.clone(), "result" => result)
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of the process's exposition about edge `edge`.
    fn lines_of(edge: &str) -> Vec<String> {
        let label = format!("edge=\"{edge}\"");
        prometheus()
            .render()
            .lines()
            .filter(|l| l.contains(&label))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_departed_peers_series_go_after_the_grace_and_once_released() {
        // Ids of their own: the recorder is the process's, shared by tests.
        let m = EdgeMetrics::new(90_001);
        m.link(7, Duration::from_millis(20), Duration::ZERO, 0.0, true);
        m.probe_sent(7);
        m.probe_rtt(7, Duration::from_millis(20));
        m.link(8, Duration::from_millis(30), Duration::ZERO, 0.0, true);
        let queue = m.relay_queue(7);
        let out = m.peer_media(7, "out");
        out.add(100);
        let of = |peer: &str| {
            let p = format!("peer=\"{peer}\"");
            lines_of("90001")
                .into_iter()
                .filter(|l| l.contains(&p))
                .count()
        };
        // 4 gauges, 15 histogram lines, the probe counter, the queue gauge,
        // two traffic counters.
        assert_eq!(of("7"), 23, "{:#?}", lines_of("90001"));

        let t0 = Instant::now();
        let only_8 = |p: EdgeId| p == 8;
        assert!(m.forget_departed(only_8, t0).is_empty());
        assert!(m
            .forget_departed(only_8, t0 + FORGET_PEER_AFTER / 2)
            .is_empty());
        // Back in the table meanwhile: the clock starts again.
        assert!(m
            .forget_departed(|_| true, t0 + FORGET_PEER_AFTER / 2)
            .is_empty());
        let t1 = t0 + FORGET_PEER_AFTER;
        assert!(m.forget_departed(only_8, t1).is_empty());
        assert_eq!(m.forget_departed(only_8, t1 + FORGET_PEER_AFTER), vec![7]);
        // The relay link to 7 has not closed yet: its queue gauge and
        // traffic counters stay until it does; the probe series are gone.
        let left: Vec<String> = lines_of("90001")
            .into_iter()
            .filter(|l| l.contains("peer=\"7\""))
            .collect();
        assert_eq!(left.len(), 3, "{left:#?}");
        drop((queue, out));
        assert_eq!(of("7"), 0, "{:#?}", lines_of("90001"));
        // 4 gauges, 15 histogram lines, the probe counter.
        assert_eq!(of("8"), 20, "peer 8 is still in the table");
        // Peer 7 comes back: its series start again.
        m.link(7, Duration::from_millis(20), Duration::ZERO, 0.0, true);
        assert_eq!(of("7"), 20);
    }

    #[test]
    fn readiness_capacity_build_and_store_series() {
        let m = EdgeMetrics::new(90_002);
        m.info("eu", "fra");
        m.capacity(500);
        m.ready(true);
        let lines = lines_of("90002");
        let has = |want: &str| lines.iter().any(|l| l == want);
        assert!(has("rtn_edge_ready{edge=\"90002\"} 1"), "{lines:#?}");
        assert!(has("rtn_edge_draining{edge=\"90002\"} 0"), "{lines:#?}");
        assert!(
            has("rtn_edge_max_sessions{edge=\"90002\"} 500"),
            "{lines:#?}"
        );
        assert!(
            has(&format!(
                "rtn_edge_build_info{{edge=\"90002\",version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{lines:#?}"
        );
        // No control store: no store health series to alert on.
        assert!(!lines
            .iter()
            .any(|l| l.starts_with("rtn_edge_store_connected")));
        m.ready(false);
        let lines = lines_of("90002");
        assert!(lines
            .iter()
            .any(|l| l == "rtn_edge_ready{edge=\"90002\"} 0"));
        assert!(lines
            .iter()
            .any(|l| l == "rtn_edge_draining{edge=\"90002\"} 1"));
        let with_store = EdgeMetrics::new(90_003).with_store();
        with_store.store_connected.set(1.0);
        assert!(lines_of("90003")
            .iter()
            .any(|l| l == "rtn_edge_store_connected{edge=\"90003\"} 1"));
    }

    #[test]
    fn relay_frame_bytes_by_kind() {
        use protocol::pb::{self, relay_frame::Kind as RK};
        let m = EdgeMetrics::new(90_004);
        let lines = lines_of("90004");
        for kind in RELAY_FRAME_KINDS {
            let want =
                format!("rtn_edge_relay_frame_bytes_total{{edge=\"90004\",kind=\"{kind}\"}} 0");
            assert!(lines.contains(&want), "{want} in {lines:#?}");
        }
        let report = pb::RelayFrame {
            kind: Some(RK::DirectoryReport(pb::DirectoryReport::default())),
        };
        m.relay_frame_written(&report, 40);
        m.relay_frame_written(&report, 2);
        m.relay_frame_written(&pb::RelayFrame { kind: None }, 5);
        let lines = lines_of("90004");
        let has = |want: &str| lines.iter().any(|l| l == want);
        assert!(
            has("rtn_edge_relay_frame_bytes_total{edge=\"90004\",kind=\"directory_report\"} 42"),
            "{lines:#?}"
        );
        assert!(
            has("rtn_edge_relay_frame_bytes_total{edge=\"90004\",kind=\"other\"} 5"),
            "{lines:#?}"
        );
        assert!(
            has("rtn_edge_relay_frame_bytes_total{edge=\"90004\",kind=\"message\"} 0"),
            "{lines:#?}"
        );
    }

    #[test]
    fn process_metrics_are_read_on_each_render() {
        let text = render();
        for name in [
            "rtn_edge_process_cpu_seconds_total",
            "rtn_edge_process_resident_memory_bytes",
            "rtn_edge_process_open_fds",
            "rtn_edge_process_start_time_seconds",
        ] {
            let value: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{text}"));
            if name != "rtn_edge_process_cpu_seconds_total" {
                assert!(value > 0.0, "{name} = {value}");
            }
            assert!(text.contains(&format!("# HELP {name} ")), "{name}: no HELP");
        }
    }
}
