//! The process-wide Prometheus recorder. One per process: the lab runs edges
//! and controllers in one process, and they all render through this handle
//! (edges' series carry an `edge` label, the controller's a `region` and,
//! where two controllers of a region could share a process, a `controller`).
//! Each binary's crate describes its own metrics on top
//! (`edge_node::metrics::prometheus`, `region_controller::metrics::prometheus`).
//!
//! Naming follows Prometheus' conventions: `rtn_` prefix, base units in the
//! name (`_seconds`, `_bytes`, `_ratio`), `_total` on counters, and labels
//! with bounded values only (edge and peer ids, regions, controller names,
//! reasons); never user, session or channel ids. Every metric is listed in
//! `docs/observability.md`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets for link round-trip times: loopback to the far side of the
/// planet through a congested path (1 ms .. 1 s; ITU-T G.114 puts
/// unacceptable one-way delay at 400 ms).
pub const WAN_RTT_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.010, 0.020, 0.050, 0.100, 0.150, 0.200, 0.300, 0.500, 1.0,
];
/// Buckets for route computations: sub-millisecond for a small region up to
/// the design's 1 s budget for 1,000 edges and beyond.
pub const COMPUTE_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Buckets for the controller's watch lag (a record's write to its arrival
/// in the controller's view): milliseconds normally, seconds in trouble.
pub const WATCH_LAG_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Histograms whose buckets differ from the exporter's default (summaries
/// otherwise), for every process kind: the recorder is installed once,
/// by whichever starts first.
const HISTOGRAMS: &[(&str, &[f64])] = &[
    ("rtn_edge_link_rtt_seconds", WAN_RTT_BUCKETS),
    ("rtn_controller_compute_seconds", COMPUTE_BUCKETS),
    ("rtn_controller_watch_lag_seconds", WATCH_LAG_BUCKETS),
];

/// The process's recorder, installed on first use. Another recorder may
/// already be installed (an embedding app): then this handle renders
/// nothing.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for (name, buckets) in HISTOGRAMS {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full((*name).into()), buckets)
                    .expect("bucket lists are not empty");
            }
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
