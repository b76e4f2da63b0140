//! The RTN region controller: the control plane of the mesh.
//!
//! The control store, its keys and records live in the `control` crate,
//! which edges share.
//!
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
pub mod mesh;
pub mod metrics;
