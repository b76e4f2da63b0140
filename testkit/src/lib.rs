//! Everything lab and test: used only as a dev-dependency and by the lab
//! (`loadtest`), never by a production crate.
//!
//! - [`store_conformance`]: the checks every control store must pass (the
//!   embedded one and etcd, `control/tests/`).
//! - [`outage_store`]: a control store that can be taken down, for
//!   outage tests and the lab's chaos plans.
//! - [`etcd`]: real etcd servers as child processes on loopback.
//! - [`netem`]: WAN emulation under quinn sockets (its own crate, which an
//!   edge built with its `netem` feature takes too).

pub mod etcd;
pub mod outage_store;
pub mod store_conformance;

pub use etcd::{EtcdServer, EtcdTestPki};
pub use netem;
pub use outage_store::OutageStore;
