//! RTN's load generator and benchmarks: what users of the network would
//! feel, measured on one machine.
//!
//! - [`bench_forwarding`]: media through one edge versus a direct quinn flow
//!   in the same run (packet-rate ratio, added latency).
//! - [`bench_fanout`]: one publisher to many subscribers over several edges
//!   (delivery, CPU per delivered Mbit/s, packets per overlay link).
//! - [`bench_channel`]: a big broadcast channel (one publisher, thousands
//!   of viewers over many edges): setup time, directory traffic per edge,
//!   membership events per viewer.
//! - [`bench_multihop`]: media latency through chains of 1..4 edges versus
//!   a direct quinn flow in the same run (added latency per hop).
//! - [`bench_memory`]: an idle `edge-node` process's RSS and the bytes each
//!   idle session adds.
//! - [`lab`]: a global mesh on one machine with emulated WAN, a traffic mix
//!   and failure injection, and the report of what users felt (the README's
//!   first command).
//! - [`run`]: the same traffic against any running RTN, through its public
//!   API and the SDK.
//! - [`demo`]: a small local mesh with SDK clients.
//! - [`control_scale`]: thousands of synthetic edges against a real etcd and
//!   real region controllers: write rates, controller cost, route-update
//!   latency.
//!
//! Edges, raw clients, tokens and metric scraping come from `testkit`.

pub mod bench_abuse;
pub mod bench_capacity;
pub mod bench_channel;
pub mod bench_fanout;
pub mod bench_forwarding;
pub mod bench_memory;
pub mod bench_multihop;
pub mod bench_util;
pub mod bench_weak;
pub mod child_edge;
#[cfg(feature = "etcd")]
pub mod control_scale;
pub mod demo;
pub mod lab;
pub mod run;
pub mod stats;

/// Resolves on Ctrl-C (SIGINT) or SIGTERM: long runs stop cleanly either
/// way, printing and writing their report.
pub async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
