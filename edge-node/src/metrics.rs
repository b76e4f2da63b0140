//! Edge metrics. Handles are registered once per edge and kept, so the
//! forwarding path does no label lookups. Every series carries `edge` (an
//! edge's id: bounded), never user or channel ids.

use metrics::{counter, gauge, Counter, Gauge};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::OnceLock;

/// The process-wide Prometheus recorder (one per process; several in-process
/// edges share it, told apart by their `edge` label).
/// Shared with the controller (the lab runs both in one process).
pub fn prometheus() -> PrometheusHandle {
    static DESCRIBED: OnceLock<()> = OnceLock::new();
    let handle = region_controller::metrics::prometheus();
    DESCRIBED.get_or_init(describe);
    handle
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!("rtn_edge_sessions", "Client connections currently open.");
    describe_gauge!(
        "rtn_edge_channels",
        "Channels with at least one local member."
    );
    describe_counter!(
        "rtn_edge_joins_total",
        "Join attempts by result (ok or refusal reason)."
    );
    describe_counter!(
        "rtn_edge_media_packets_total",
        "Media datagrams by direction (in/out) and link kind (client/relay)."
    );
    describe_counter!(
        "rtn_edge_media_bytes_total",
        "Media datagram bytes by direction and link kind."
    );
    describe_counter!(
        "rtn_edge_media_dropped_total",
        "Media datagrams dropped, by reason."
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
        "rtn_edge_unroutable_destinations_total",
        "Destination edges a packet or frame could not be sent to: no route in the table."
    );
    describe_gauge!(
        "rtn_edge_route_table_version",
        "Version of the route table in use."
    );
    describe_gauge!(
        "rtn_edge_dead_peers",
        "Probe targets this edge currently sees dead."
    );
    describe_counter!(
        "rtn_edge_local_reroutes_total",
        "Route tables rewritten because the edge's own probes saw a next hop die."
    );
    describe_gauge!(
        "rtn_edge_link_rtt_ms",
        "Smoothed probe RTT to a peer edge, ms."
    );
    describe_gauge!(
        "rtn_edge_link_jitter_ms",
        "Probe jitter to a peer edge, ms."
    );
    describe_gauge!(
        "rtn_edge_link_loss_ratio",
        "Probe loss to a peer edge over the window, 0..1."
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
        "UDP socket buffer granted by the kernel, by direction."
    );
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
    pub store_connected: Gauge,
    pub unroutable: Counter,
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
}

impl EdgeMetrics {
    pub fn new(edge_id: u32) -> Self {
        prometheus();
        let edge = edge_id.to_string();
        let packets = |dir: &'static str, link: &'static str| counter!("rtn_edge_media_packets_total", "edge" => edge.clone(), "dir" => dir, "link" => link);
        let bytes = |dir: &'static str, link: &'static str| counter!("rtn_edge_media_bytes_total", "edge" => edge.clone(), "dir" => dir, "link" => link);
        let messages = |dir: &'static str, link: &'static str| counter!("rtn_edge_messages_total", "edge" => edge.clone(), "dir" => dir, "link" => link);
        EdgeMetrics {
            sessions: gauge!("rtn_edge_sessions", "edge" => edge.clone()),
            channels: gauge!("rtn_edge_channels", "edge" => edge.clone()),
            relay_links: gauge!("rtn_edge_relay_links", "edge" => edge.clone()),
            route_version: gauge!("rtn_edge_route_table_version", "edge" => edge.clone()),
            dead_peers: gauge!("rtn_edge_dead_peers", "edge" => edge.clone()),
            local_reroutes: counter!("rtn_edge_local_reroutes_total", "edge" => edge.clone()),
            store_connected: gauge!("rtn_edge_store_connected", "edge" => edge.clone()),
            unroutable: counter!("rtn_edge_unroutable_destinations_total", "edge" => edge.clone()),
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
            edge,
        }
    }

    pub fn link(&self, peer: u32, rtt_ms: f64, jitter_ms: f64, loss: f64) {
        let peer = peer.to_string();
        gauge!("rtn_edge_link_rtt_ms", "edge" => self.edge.clone(), "peer" => peer.clone())
            .set(rtt_ms);
        gauge!("rtn_edge_link_jitter_ms", "edge" => self.edge.clone(), "peer" => peer.clone())
            .set(jitter_ms);
        gauge!("rtn_edge_link_loss_ratio", "edge" => self.edge.clone(), "peer" => peer).set(loss);
    }

    pub fn store_write(&self, kind: &'static str) {
        counter!("rtn_edge_store_writes_total", "edge" => self.edge.clone(), "kind" => kind)
            .increment(1);
    }

    pub fn media_dropped(&self, reason: &'static str) {
        counter!("rtn_edge_media_dropped_total", "edge" => self.edge.clone(), "reason" => reason)
            .increment(1);
    }

    pub fn protocol_error(&self, reason: &'static str) {
        counter!("rtn_edge_protocol_errors_total", "edge" => self.edge.clone(), "reason" => reason)
            .increment(1);
    }

    pub fn join(&self, result: &'static str) {
        counter!("rtn_edge_joins_total", "edge" => self.edge.clone(), "result" => result)
            .increment(1);
    }
}
