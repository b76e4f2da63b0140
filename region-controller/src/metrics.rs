//! The process-wide Prometheus recorder. One per process: the lab runs edges
//! and controllers in one process, and they all render through this handle
//! (edges' series carry an `edge` label, the controller's a `region`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding app):
            // then this handle renders nothing.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "rtn_controller_leader",
        "1 while this controller leads its region."
    );
    describe_histogram!(
        "rtn_controller_compute_seconds",
        "Time to compute the routes of the region's edges."
    );
    describe_gauge!("rtn_controller_graph_edges", "Edges in the mesh graph.");
    describe_gauge!(
        "rtn_controller_graph_links",
        "Usable probed links in the mesh graph."
    );
    describe_counter!(
        "rtn_controller_route_publications",
        "Route records written to the store (only changed ones are written)."
    );
    describe_counter!(
        "rtn_controller_api_requests",
        "Public API requests by endpoint and status."
    );
    describe_gauge!(
        "rtn_controller_store_connected",
        "1 while every watch on the store is established."
    );
}
