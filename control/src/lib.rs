//! The control-plane contract edges and region controllers share: the
//! control store, what is stored where, and how a process reaches it.
//!
//! - [`store`]: the store every process of the control plane talks to: a
//!   trait with an etcd implementation for anything with more than one
//!   process and an embedded in-process one for the lab (both held to one
//!   conformance suite, `testkit::store_conformance`), leader election and
//!   outage-proof prefix watches on top.
//! - [`keys`] and [`records`]: what is stored where, and in what shape
//!   (written up in `docs/control-plane.md`); [`mirror`] keeps a per-edge
//!   directory of records in memory from a watch.
//! - [`settings`]: the store's settings (the edge's `[control]` and the
//!   controller's `[store]` section share them), their validation, and
//!   opening the store they name.
//! - [`flags`]: every key of a binary's TOML config is also a flag and an
//!   `RTN_*` environment variable, written over the file's value; secrets
//!   are never flags and never printed.
//! - [`metrics`]: the process-wide Prometheus recorder both binaries (and
//!   the lab, which runs both in one process) render through.
//! - [`clock`]: wall-clock times as records carry them; [`admin`]: the
//!   bearer token check of operator endpoints; [`certs`]: the certificate
//!   an edge or a controller serves clients, reloaded or rotated.

pub mod admin;
pub mod certs;
pub mod clock;
pub mod flags;
pub mod keys;
pub mod metrics;
pub mod mirror;
pub mod records;
pub mod settings;
pub mod store;
