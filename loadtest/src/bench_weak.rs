//! `loadtest bench weak-network`: the lab's world under weak networks,
//! every overlay link and every last mile affected, each profile run with
//! loss repair off (best-effort forwarding) and on, in the same invocation.
//!
//! It prints, side by side, what users feel: residual loss and stall rate
//! per kind, latency at the playout point, and what repair cost (bytes sent
//! again or as parity over the media's). The machine's state is part of
//! every row: a run the lab flags overloaded measures the CPU too.

use std::time::Duration;

use serde::Serialize;

use crate::lab::record::PerKind;
use crate::lab::world::{TopologyFile, WeakNetwork};
use crate::lab::{LabOptions, Report};

/// One weak network, applied to every link of the world on top of its
/// geography.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub name: &'static str,
    #[serde(skip)]
    pub weak: WeakNetwork,
}

/// The profiles of the weak-network goals (docs/benchmarks.md): the
/// commercial figure is quoted at 10% loss with 50 ms jitter.
pub fn profiles() -> Vec<Profile> {
    let loss = |l: f64| WeakNetwork {
        loss: l,
        ..WeakNetwork::default()
    };
    vec![
        // What repair costs a healthy network.
        Profile {
            name: "no loss",
            weak: WeakNetwork::default(),
        },
        Profile {
            name: "5% loss",
            weak: loss(0.05),
        },
        Profile {
            name: "10% loss + 50 ms jitter",
            weak: WeakNetwork {
                jitter_ms: 50.0,
                ..loss(0.10)
            },
        },
        Profile {
            name: "20% loss",
            weak: loss(0.20),
        },
        Profile {
            name: "bursty 10% loss (bursts of 3)",
            weak: WeakNetwork {
                burst_len: 3.0,
                ..loss(0.10)
            },
        },
        Profile {
            name: "30% loss",
            weak: loss(0.30),
        },
    ]
}

pub struct Params {
    pub topology: TopologyFile,
    /// Traffic time of each run.
    pub seconds: u64,
    /// Only the profiles whose names contain one of these (default: all).
    pub only: Vec<String>,
}

/// One run: a profile, repair off or on.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub profile: &'static str,
    pub repair: bool,
    /// Lost for good (never reached the receiver's SDK).
    pub residual_loss: PerKind,
    /// Not played (lost, or too late for the jitter buffer).
    pub playout_loss: PerKind,
    pub stall_rate: PerKind,
    /// Latency at the playout point, ms.
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub repair_overhead: f64,
    /// The part of it that is copies (around suspect relays and lossy
    /// links).
    pub copy_overhead: f64,
    /// Media streams (receiver, track) expected, and silent ones.
    pub streams: u64,
    pub silent: u64,
    pub clients_joined: usize,
    pub clients: usize,
    /// The lab's verdict on the machine (the figures carry its CPU if so).
    pub overloaded: bool,
}

impl Row {
    /// The row of a lab run's report.
    pub fn of(profile: &'static str, repair: bool, r: &Report) -> Row {
        let lat = r.felt.media_latency_ms.unwrap_or_default();
        Row {
            profile,
            repair,
            residual_loss: r.quality.residual_loss,
            playout_loss: r.felt.playout_loss,
            stall_rate: r.quality.stall_rate,
            latency_p50_ms: lat.p50,
            latency_p95_ms: lat.p95,
            repair_overhead: r.quality.repair_overhead,
            copy_overhead: r.quality.repair.copy_overhead(),
            streams: r.felt.media_streams.expected,
            silent: r.felt.media_streams.silent,
            clients_joined: r.clients_joined,
            clients: r.clients,
            overloaded: r.machine.overloaded,
        }
    }
}

/// Run every chosen profile off then on.
pub async fn run(p: Params) -> anyhow::Result<Vec<Row>> {
    let mut rows = vec![];
    let chosen = profiles()
        .into_iter()
        .filter(|pr| p.only.is_empty() || p.only.iter().any(|o| pr.name.contains(o.as_str())));
    for profile in chosen {
        for repair in [false, true] {
            let mut topology = p.topology.clone();
            topology.weak_network = Some(profile.weak).filter(|w| *w != WeakNetwork::default());
            eprintln!(
                "weak-network: {} with repair {} ({} s)...",
                profile.name,
                if repair { "on" } else { "off" },
                p.seconds
            );
            let report = crate::lab::run(LabOptions {
                topology,
                etcd: None,
                duration: Some(Duration::from_secs(p.seconds)),
                chaos: Default::default(),
                report: None,
                verbose: false,
                repair,
            })
            .await?;
            let row = Row::of(profile.name, repair, &report);
            print_row(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

fn print_row(r: &Row) {
    println!(
        "{:<30} {:<4} residual loss a/v {:>6.2}% {:>6.2}%  not played {:>6.2}% {:>6.2}%  stalls a/v {:>6.2}% {:>6.2}%  latency p50/p95 {:>4.0}/{:>4.0} ms  overhead {:>5.1}% (copies {:>5.1}%)  {}/{} joined{}",
        r.profile,
        if r.repair { "on" } else { "off" },
        r.residual_loss.audio * 100.0,
        r.residual_loss.video * 100.0,
        r.playout_loss.audio * 100.0,
        r.playout_loss.video * 100.0,
        r.stall_rate.audio * 100.0,
        r.stall_rate.video * 100.0,
        r.latency_p50_ms,
        r.latency_p95_ms,
        r.repair_overhead * 100.0,
        r.copy_overhead * 100.0,
        r.clients_joined,
        r.clients,
        if r.overloaded { "  OVERLOADED" } else { "" },
    );
}

/// The table, each profile's off and on rows together, and what repair
/// added to p95 latency.
pub fn print(rows: &[Row]) {
    println!("\n{:-<140}", "");
    println!("weak networks: every link and last mile of the lab's world; repair off vs on");
    println!("{:-<140}", "");
    for r in rows {
        print_row(r);
    }
    for pair in rows.chunks(2) {
        if let [off, on] = pair {
            println!(
                "{:<32} repair added {:+.0} ms at p95; residual loss {:.2}% -> {:.2}% (audio), {:.2}% -> {:.2}% (video)",
                on.profile,
                on.latency_p95_ms - off.latency_p95_ms,
                off.residual_loss.audio * 100.0,
                on.residual_loss.audio * 100.0,
                off.residual_loss.video * 100.0,
                on.residual_loss.video * 100.0,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profiles_are_valid_weak_networks() {
        let names: Vec<_> = profiles().iter().map(|p| p.name).collect();
        assert!(names.contains(&"10% loss + 50 ms jitter"));
        for p in profiles() {
            let mut world = crate::lab::world::World::new(TopologyFile::builtin()).unwrap();
            world.set_weak_network(p.weak).unwrap();
            assert!(world.rules().iter().all(|r| r.profile.loss >= p.weak.loss));
            assert!(!p.name.is_empty());
        }
    }
}
