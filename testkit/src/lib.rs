//! Everything lab and test: used only as a dev-dependency and by the lab
//! (`loadtest`), never by a production crate.
//!
//! - [`store_conformance`]: the checks every control store must pass (the
//!   embedded one and etcd, `control/tests/`).
//! - [`outage_store`]: a control store that can be taken down, for
//!   outage tests and the lab's chaos plans.
//! - [`etcd`]: the one etcd process harness: a server, or a cluster whose
//!   members are killed, paused and restarted.
//! - [`netem`]: WAN emulation under quinn sockets (its own crate, which an
//!   edge built with its `netem` feature takes too).
//! - [`mesh`]: the one in-process mesh starter (edges on loopback sharing a
//!   dev CA, optionally over an emulated WAN), SDK configs for it.
//! - [`region`]: the one in-process region: a controller and its
//!   nearest-edge API on an embedded store, edges registering in it.
//! - [`quic`]: the one TLS client setup for a test CA, endpoints, and the
//!   one raw RTN client.
//! - [`tokens`]: join tokens of the test app.
//! - [`scrape`]: Prometheus samples and plain HTTP requests to admin ports.
//! - [`blackhole`]: a UDP relay in front of an edge that can be cut.
//! - [`wait`]: waiting for a condition, bounded.
//! - [`ports`]: ports for child processes that nothing else takes first.
//! - [`process`]: running a binary under test, bounded; `check-config`'s
//!   output.

pub mod blackhole;
pub mod etcd;
pub mod mesh;
pub mod outage_store;
pub mod ports;
pub mod process;
pub mod quic;
pub mod region;
pub mod scrape;
pub mod store_conformance;
pub mod tokens;
pub mod wait;

pub use etcd::{EtcdCluster, EtcdServer, EtcdTestPki};
pub use netem;
pub use outage_store::OutageStore;
