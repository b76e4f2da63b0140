//! RTN's load generator and benchmarks: what users of the network would
//! feel, measured on one machine.
//!
//! - [`bench_forwarding`]: media through one edge versus a direct quinn flow
//!   in the same run (packet-rate ratio, added latency).
//! - [`quic`]: minimal raw-protocol client plumbing used by the benchmarks.

pub mod bench_forwarding;
pub mod quic;
pub mod stats;
