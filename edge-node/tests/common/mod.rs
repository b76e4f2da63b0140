//! The system tests' harness: the kit's in-process mesh, raw protocol
//! client, tokens and scraping (crate `testkit`), the etcd cluster harness
//! of the real-process tests, and the admin token of edges started as
//! processes.
//!
//! The tests in this folder are RTN's system tests: real edges, alone or
//! with the SDK (`sdk_*.rs`), the region controller, etcd and processes.
#![allow(dead_code, unused_imports)]

#[cfg(all(feature = "etcd", feature = "netem"))]
pub mod etcd_cluster;

/// The admin bearer token of edges and controllers started as processes
/// (operator endpoints: `/netem`, `/v1/mesh`), and the variable their
/// configs name for it.
pub const ADMIN_TOKEN_ENV: &str = "RTN_TEST_ADMIN_TOKEN";
pub const ADMIN_TOKEN: &str = "rtn-test-admin-token";

pub use control::clock::now_secs as now;
pub use testkit::blackhole::Blackhole;
pub use testkit::mesh::{init_logs, sdk_config, socket_at, start_edge, Call, Mesh};
pub use testkit::netem::Wan;
pub use testkit::quic::{client_config, client_endpoint, media_latency, RawClient, STEP};
pub use testkit::scrape::{http, metric};
pub use testkit::tokens::{forged_token, token, APP, SECRET};
