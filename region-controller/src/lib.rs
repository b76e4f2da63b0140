//! The RTN region controller: the control plane of the mesh.
//!
//! - [`store`]: the control store every process of the control plane talks
//!   to: a trait with an etcd implementation for anything with more than one
//!   process, and an embedded in-process implementation for the lab and
//!   tests, both held to one conformance suite; leader election and
//!   outage-proof prefix watches on top.
//! - [`keys`] and [`records`]: what is stored where (the layout is written up
//!   in `docs/control-plane.md`).
//! - [`mesh`]: every controller's mirror of the store.
//! - [`compute`]: graph, best and backup paths, hysteresis (via `topology`).
//! - [`controller`]: election per region and route publication by the leader.
//! - [`api`]: the public nearest-edge API and the operator's mesh view.
//! - [`dashboard`]: the path-quality dashboard the API serves at `/`, and
//!   the gone edges and link history the controller remembers for it.

pub mod api;
pub mod compute;
pub mod config;
pub mod controller;
pub mod dashboard;
pub mod keys;
pub mod mesh;
pub mod metrics;
pub mod records;
pub mod store;
