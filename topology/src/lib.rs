//! RTN topology: everything the control plane knows about where things are
//! and how to get from one edge to another, as pure functions and plain data.
//!
//! The region controller feeds it probe results and edge registrations and
//! gets back routes and nearest-edge shortlists; edges use its probe
//! statistics; the lab uses its geography and GeoIP writer. Nothing here reads
//! a clock, opens a socket or spawns a task (the one exception is reading a
//! GeoIP database file), so every behaviour is tested deterministically.
//!
//! - [`geo`]: points, great-circle distance, fiber delay and RTT estimates, a
//!   table of real cities.
//! - [`probe`]: per-link RTT and jitter (windowed percentiles), loss
//!   (adaptive window), liveness, and the
//!   [`LinkSummary`] that probes publish.
//! - [`graph`]: the mesh as a compact graph with a documented [`CostModel`].
//! - [`paths`]: best and backup paths per source, hysteresis, path stretch.
//! - [`risk`]: sites (edges of one metro) and the shared risk backups avoid.
//! - [`hierarchy`]: routes that scale: full paths inside a region, hubs
//!   and region tables between regions.
//! - [`nearest`]: ranking edges for a client location (the GeoIP shortlist).
//! - [`geoip`]: GeoIP location lookups (any MaxMind-format database with
//!   coordinates), and a writer for the lab's database.
//! - [`load`]: the load penalty shared by paths and ranking.
//! - [`synth`]: deterministic synthetic meshes for benchmarks and tests.
//! - [`targets`]: which peers an edge probes (the probe budget).

#![deny(missing_docs)]

pub mod geo;
pub mod geoip;
pub mod graph;
pub mod hierarchy;
pub mod load;
pub mod nearest;
pub mod paths;
pub mod probe;
pub mod risk;
pub mod synth;
pub mod targets;

pub use geo::{City, GeoError, GeoPoint};
pub use geoip::{write_lab_db, GeoIpDb, GeoIpError, GeoIpFields, GeoIpSchema, GeoLocation};
pub use graph::{
    CostModel, EdgeId, GraphError, MeshGraph, MeshGraphBuilder, NodeInfo, PathMetrics,
};
pub use load::LoadPenalty;
pub use nearest::{rank_nearest, EdgeCandidate, NearestPolicy, RankedEdge};
pub use paths::{
    apply_hysteresis, compute_all, compute_all_parallel, compute_plain_routes, compute_routes,
    optimal_rtt, path_stretch, HysteresisPolicy, Path, Route, RouteSet,
};
pub use probe::{LinkStats, LinkSummary};
pub use targets::{PeerSpot, ProbePolicy, TargetSelector};
