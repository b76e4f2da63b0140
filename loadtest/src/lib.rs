//! RTN's load generator and benchmarks: what users of the network would
//! feel, measured on one machine.
//!
//! - [`bench_forwarding`]: media through one edge versus a direct quinn flow
//!   in the same run (packet-rate ratio, added latency).
//! - [`demo`]: a small local mesh with SDK clients (the README's first command).
//! - [`quic`]: minimal raw-protocol client plumbing used by the benchmarks.

pub mod bench_forwarding;
pub mod demo;
pub mod quic;
pub mod stats;
