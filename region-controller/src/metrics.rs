//! The controller's metrics (described here, listed in
//! `docs/observability.md`), recorded through the process-wide recorder of
//! [`control::metrics`], and a store wrapper that counts the controller's
//! store operations.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use control::store::{self, ControlStore, Expect, KeyValue, LeaseId, Revision, WatchStream};
use metrics::Unit;

/// The process-wide recorder, with the controller's metrics described.
pub fn prometheus() -> control::metrics::Handle {
    static DESCRIBED: OnceLock<()> = OnceLock::new();
    let handle = control::metrics::prometheus();
    DESCRIBED.get_or_init(describe);
    handle
}

/// The controller's process metrics (`rtn_controller_process_*`, see
/// [`control::metrics::ProcessMetrics`]), described on first use.
fn process_metrics() -> &'static control::metrics::ProcessMetrics {
    static PROCESS: OnceLock<control::metrics::ProcessMetrics> = OnceLock::new();
    PROCESS.get_or_init(|| control::metrics::ProcessMetrics::new("rtn_controller_"))
}

/// The exposition `/metrics` serves: the process metrics read now, then
/// everything recorded.
pub fn render() -> String {
    process_metrics().render(&prometheus())
}

/// `rtn_controller_build_info{region, controller, version}` = 1: which
/// software each controller runs (set once at start).
pub fn build_info(region: &str, controller: &str) {
    metrics::gauge!("rtn_controller_build_info", "region" => region.to_string(), "controller" => controller.to_string(), "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    process_metrics();
    describe_gauge!(
        "rtn_controller_build_info",
        "Always 1; label version gives the controller software's version."
    );
    describe_gauge!(
        "rtn_controller_leader",
        "1 while this controller (label controller) leads its region, else 0."
    );
    describe_counter!(
        "rtn_controller_leadership_changes_total",
        "Leadership transitions of this controller: acquired, lost (lease gone) or resigned (stopping)."
    );
    describe_histogram!(
        "rtn_controller_compute_seconds",
        Unit::Seconds,
        "Time to compute the routes of the region's edges (one observation per computation; _count is the number of computations)."
    );
    describe_gauge!(
        "rtn_controller_graph_edges",
        "Edges in the mesh graph of the last computation."
    );
    describe_gauge!(
        "rtn_controller_graph_links",
        "Usable probed links in the mesh graph of the last computation."
    );
    describe_counter!(
        "rtn_controller_route_publications_total",
        "Route records written to the store (only changed ones are written)."
    );
    describe_gauge!(
        "rtn_controller_hierarchical",
        "1 while the region is routed hierarchically (controller.hierarchical_from_edges), 0 while flat."
    );
    describe_counter!(
        "rtn_controller_region_publications_total",
        "Writes of the region's record or exits (hierarchical routing): shape changes at once, cost drift at most every 5 minutes."
    );
    describe_counter!(
        "rtn_controller_api_requests_total",
        "API requests by endpoint and HTTP status."
    );
    describe_counter!(
        "rtn_controller_nearest_requests_total",
        "Nearest-edge lookups by outcome: ok, unlocated (no GeoIP location: a spread over regions), no_edges, or the error code (rate_limited, invalid_ip, ...)."
    );
    describe_counter!(
        "rtn_controller_geoip_reloads_total",
        "Reloads of the GeoIP database after its file was replaced, by result: ok (in use), or refused (unreadable, corrupt or without location data: the previous database stays in use)."
    );
    describe_gauge!(
        "rtn_controller_store_connected",
        "1 while every watch of the controller's mirror on the store is established."
    );
    describe_counter!(
        "rtn_controller_store_operations_total",
        "Control store operations by the controller, by operation and result (ok or error)."
    );
    describe_gauge!(
        "rtn_controller_history_links",
        "Links whose history the dashboard's observer keeps."
    );
    describe_gauge!(
        "rtn_controller_gone_edges",
        "Edges that left the registry in the last 10 minutes, kept for the dashboard."
    );
    describe_histogram!(
        "rtn_controller_watch_lag_seconds",
        Unit::Seconds,
        "Age of a load or probe record when the controller's mirror applies it (writer's clock to the controller's)."
    );
}

/// Record the route computation's duration.
pub fn compute_duration(region: &str, took: Duration) {
    metrics::histogram!("rtn_controller_compute_seconds", "region" => region.to_string())
        .record(took);
}

/// Record the age of records the mirror just applied (`at_ms`: the writer's
/// wall clock). Clock skew between machines shows up here; negative ages
/// count as 0.
pub fn watch_lag(dir: &'static str, at_ms: impl Iterator<Item = u64>) {
    let now = control::clock::now_ms();
    let h = metrics::histogram!("rtn_controller_watch_lag_seconds", "dir" => dir);
    for at in at_ms {
        h.record(now.saturating_sub(at) as f64 / 1000.0);
    }
}

/// A control store that counts the controller's operations on the store it
/// wraps, by operation and result (`rtn_controller_store_operations_total`).
/// Watches count when they are established: each re-establishment after a
/// break counts again.
pub struct MeteredStore {
    inner: Arc<dyn ControlStore>,
    region: String,
    controller: String,
}

impl MeteredStore {
    pub fn wrap(
        inner: Arc<dyn ControlStore>,
        region: &str,
        controller: &str,
    ) -> Arc<dyn ControlStore> {
        prometheus();
        Arc::new(MeteredStore {
            inner,
            region: region.to_string(),
            controller: controller.to_string(),
        })
    }

    fn count<T>(&self, op: &'static str, r: &store::Result<T>) {
        let result = if r.is_ok() { "ok" } else { "error" };
        metrics::counter!(
            "rtn_controller_store_operations_total",
            "region" => self.region.clone(),
            "controller" => self.controller.clone(),
            "op" => op,
            "result" => result
        )
        .increment(1);
    }
}

#[async_trait]
impl ControlStore for MeteredStore {
    async fn get(&self, key: &str) -> store::Result<Option<KeyValue>> {
        let r = self.inner.get(key).await;
        self.count("get", &r);
        r
    }

    async fn get_prefix(&self, prefix: &str) -> store::Result<(Vec<KeyValue>, Revision)> {
        let r = self.inner.get_prefix(prefix).await;
        self.count("get_prefix", &r);
        r
    }

    async fn put(
        &self,
        key: &str,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> store::Result<Revision> {
        let r = self.inner.put(key, value, lease).await;
        self.count("put", &r);
        r
    }

    async fn delete(&self, key: &str) -> store::Result<bool> {
        let r = self.inner.delete(key).await;
        self.count("delete", &r);
        r
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> store::Result<std::result::Result<Revision, Option<KeyValue>>> {
        let r = self.inner.compare_and_swap(key, expect, value, lease).await;
        self.count("compare_and_swap", &r);
        r
    }

    async fn grant_lease(&self, ttl: Duration) -> store::Result<LeaseId> {
        let r = self.inner.grant_lease(ttl).await;
        self.count("grant_lease", &r);
        r
    }

    async fn keep_alive(&self, lease: LeaseId) -> store::Result<()> {
        let r = self.inner.keep_alive(lease).await;
        self.count("keep_alive", &r);
        r
    }

    async fn revoke_lease(&self, lease: LeaseId) -> store::Result<()> {
        let r = self.inner.revoke_lease(lease).await;
        self.count("revoke_lease", &r);
        r
    }

    async fn watch_prefix(&self, prefix: &str, from: Revision) -> store::Result<WatchStream> {
        let r = self.inner.watch_prefix(prefix, from).await;
        self.count("watch", &r);
        r
    }
}
