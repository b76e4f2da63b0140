//! The RTN region controller.
//!
//! - [`store`]: the control store every process of the control plane talks
//!   to: a trait with an etcd implementation for anything with more than one
//!   process, and an embedded in-process implementation for the lab and
//!   tests, both held to one conformance suite; leader election on top.

pub mod store;
