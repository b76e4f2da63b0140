//! Edge capacity: how much media one `edge-node` process forwards per core
//! of its own, and what several quinn endpoints on its port (SO_REUSEPORT,
//! `edge.endpoints`) change.
//!
//! The edge is the real binary in its own process ([`ChildEdge`]), so the
//! CPU it uses is read from `/proc/<pid>/stat` apart from the clients'
//! (which share the machine's cores: this process). One edge per endpoint
//! count compared, started together and measured in alternating rounds, so
//! that the shared machine's noise hits both alike. Each carries `flows`
//! publisher -> subscriber pairs, each in a channel of its own, each
//! session on a client endpoint of its own: distinct source addresses, which
//! the kernel spreads over the endpoints of a SO_REUSEPORT group by hash.
//!
//! Per round and edge:
//! 1. **Flat out**: every publisher sends media datagrams as fast as quinn's
//!    congestion control lets it (`send_datagram_wait`) for `seconds`; what
//!    the subscribers receive is the edge's goodput under overload, with
//!    the edge's CPU over the same window.
//! 2. **Paced**: the same offered load for every edge of the round (a
//!    fraction of the one-endpoint edge's flat-out goodput, spread over the
//!    flows and paced from threads in 100 µs steps); loss and the edge's
//!    CPU. Gbit/s per core = media bits delivered / edge CPU seconds: what
//!    forwarding costs, independent of how many cores the clients left.
//!
//! Figures are medians over the rounds. Media bits count the datagrams the
//! edge forwards (header and payload), not QUIC's or UDP's overhead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::datagram::MEDIA_HEADER_LEN;
use serde::Serialize;

use crate::bench_forwarding::{edge_flow, Flow, Params as FlowParams};
use crate::bench_util::{pid_cpu_seconds, process_cpu_seconds};
use crate::child_edge::{edge_binary, ChildEdge};
use crate::stats::percentile;

#[derive(Clone, Debug)]
pub struct Params {
    /// Media payload per datagram (the protocol's largest by default).
    pub payload: usize,
    /// Publisher -> subscriber pairs per edge.
    pub flows: usize,
    /// Endpoint counts to compare (one edge each).
    pub endpoints: Vec<usize>,
    /// Length of each flat-out and paced trial.
    pub trial: Duration,
    pub rounds: usize,
    /// Paced load, as a fraction of the first edge's flat-out goodput.
    pub pace: f64,
    /// The edge-node binary; `None`: next to this one.
    pub edge_bin: Option<std::path::PathBuf>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            payload: protocol::limits::MAX_MEDIA_PAYLOAD,
            flows: 4,
            endpoints: vec![1, 2],
            trial: Duration::from_secs(3),
            rounds: 3,
            pace: 0.6,
            edge_bin: None,
        }
    }
}

/// One trial's figures.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Trial {
    /// Media datagrams delivered per second (all flows).
    pub pps: f64,
    pub gbit_s: f64,
    /// Fraction of the sent datagrams that did not arrive.
    pub loss: f64,
    /// Cores the edge process used (CPU seconds / wall seconds).
    pub edge_cores: f64,
    /// Cores this process (the clients) used.
    pub client_cores: f64,
    /// Media Gbit/s delivered per core of the edge's.
    pub gbit_s_per_core: f64,
}

#[derive(Debug, Serialize)]
pub struct EdgeFigures {
    pub endpoints: usize,
    /// Medians over the rounds.
    pub flat_out: Trial,
    pub paced: Trial,
    pub rounds_flat_out: Vec<Trial>,
    pub rounds_paced: Vec<Trial>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub payload_bytes: usize,
    pub datagram_bytes: usize,
    pub flows: usize,
    pub paced_pps: f64,
    pub edges: Vec<EdgeFigures>,
}

/// An edge under test and its flows.
struct Subject {
    endpoints: usize,
    edge: ChildEdge,
    flows: Vec<Arc<Flow>>,
}

pub async fn run(p: Params) -> anyhow::Result<Report> {
    anyhow::ensure!(
        (8..=protocol::limits::MAX_MEDIA_PAYLOAD).contains(&p.payload),
        "--payload must be 8..={} bytes",
        protocol::limits::MAX_MEDIA_PAYLOAD
    );
    anyhow::ensure!(p.flows >= 1, "at least one flow");
    anyhow::ensure!(!p.endpoints.is_empty(), "at least one endpoint count");
    anyhow::ensure!(p.pace > 0.0 && p.pace <= 1.0, "--pace must be in (0, 1]");
    let bin = edge_binary(p.edge_bin.as_deref())?;
    // Dropped on return, which stops the edges.
    let subjects = start_subjects(&bin, &p).await?;
    measure(&p, &subjects).await
}

async fn start_subjects(bin: &std::path::Path, p: &Params) -> anyhow::Result<Vec<Subject>> {
    let mut subjects = Vec::with_capacity(p.endpoints.len());
    for (i, &endpoints) in p.endpoints.iter().enumerate() {
        let edge = ChildEdge::start(
            bin,
            9_400 + i as u32,
            2 * p.flows + 16,
            &format!("endpoints = {endpoints}"),
        )
        .await?;
        let mut flows = Vec::with_capacity(p.flows);
        for f in 0..p.flows {
            let flow = edge_flow(edge.addr, &edge.ca(), &format!("capacity-{f}")).await;
            match flow {
                Ok(flow) => flows.push(Arc::new(flow)),
                Err(e) => {
                    let log = edge.log();
                    return Err(e.context(format!("opening flow {f}; the edge's log:\n{log}")));
                }
            }
        }
        subjects.push(Subject {
            endpoints,
            edge,
            flows,
        });
    }
    Ok(subjects)
}

async fn measure(p: &Params, subjects: &[Subject]) -> anyhow::Result<Report> {
    let datagram = MEDIA_HEADER_LEN + p.payload;
    let flow_params = FlowParams {
        payload: p.payload,
        saturate_for: p.trial,
        ..FlowParams::default()
    };
    let mut flat: Vec<Vec<Trial>> = vec![vec![]; subjects.len()];
    let mut paced: Vec<Vec<Trial>> = vec![vec![]; subjects.len()];
    let mut paced_rates = vec![];
    for round in 0..p.rounds.max(1) {
        for (i, s) in subjects.iter().enumerate() {
            let t = trial(s, datagram, |f| {
                Box::pin(async move {
                    let (pps, delivered) = f.saturate(flow_params).await;
                    (pps, 1.0 - delivered)
                })
            })
            .await;
            tracing::info!(round, endpoints = s.endpoints, ?t, "flat out");
            flat[i].push(t);
        }
        let rate = p.pace * flat[0][round].pps;
        paced_rates.push(rate);
        let per_flow = rate / p.flows as f64;
        for (i, s) in subjects.iter().enumerate() {
            let (trial_len, payload) = (p.trial, p.payload);
            let t = trial(s, datagram, move |f| {
                Box::pin(async move {
                    let (_, loss) = f.paced(per_flow, trial_len, payload, false).await;
                    (per_flow * (1.0 - loss), loss)
                })
            })
            .await;
            tracing::info!(round, endpoints = s.endpoints, ?t, "paced");
            paced[i].push(t);
        }
        for s in subjects {
            for (f, flow) in s.flows.iter().enumerate() {
                flow.check_open(&format!("{} endpoint(s), flow {f}", s.endpoints))?;
            }
        }
    }
    let edges = subjects
        .iter()
        .enumerate()
        .map(|(i, s)| EdgeFigures {
            endpoints: s.endpoints,
            flat_out: median_trial(&flat[i]),
            paced: median_trial(&paced[i]),
            rounds_flat_out: flat[i].clone(),
            rounds_paced: paced[i].clone(),
        })
        .collect();
    Ok(Report {
        payload_bytes: p.payload,
        datagram_bytes: datagram,
        flows: p.flows,
        paced_pps: percentile(&mut paced_rates, 50.0).unwrap_or(0.0),
        edges,
    })
}

type FlowRun = std::pin::Pin<Box<dyn std::future::Future<Output = (f64, f64)> + Send>>;

/// Runs `each` on every flow of `s` at once; the delivered rate summed over
/// the flows, the mean loss, and the CPU the edge and the clients used.
async fn trial(s: &Subject, datagram: usize, each: impl Fn(Arc<Flow>) -> FlowRun) -> Trial {
    let pid = s.edge.pid();
    let (edge0, client0, wall0) = (
        pid_cpu_seconds(pid).unwrap_or(0.0),
        process_cpu_seconds().unwrap_or(0.0),
        Instant::now(),
    );
    let tasks: Vec<_> = s
        .flows
        .iter()
        .map(|f| tokio::spawn(each(f.clone())))
        .collect();
    let (mut pps, mut loss) = (0.0, 0.0);
    for t in tasks {
        let (rate, lost) = t.await.unwrap_or((0.0, 1.0));
        pps += rate;
        loss += lost / s.flows.len() as f64;
    }
    let wall = wall0.elapsed().as_secs_f64().max(1e-9);
    let edge_cpu = pid_cpu_seconds(pid).unwrap_or(0.0) - edge0;
    let client_cpu = process_cpu_seconds().unwrap_or(0.0) - client0;
    let gbit_s = pps * datagram as f64 * 8.0 / 1e9;
    let edge_cores = edge_cpu / wall;
    Trial {
        pps,
        gbit_s,
        loss: loss.max(0.0),
        edge_cores,
        client_cores: client_cpu / wall,
        gbit_s_per_core: if edge_cores > 0.0 {
            gbit_s / edge_cores
        } else {
            0.0
        },
    }
}

/// Field by field medians.
fn median_trial(trials: &[Trial]) -> Trial {
    let m = |f: fn(&Trial) -> f64| {
        let mut v: Vec<f64> = trials.iter().map(f).collect();
        percentile(&mut v, 50.0).unwrap_or(0.0)
    };
    Trial {
        pps: m(|t| t.pps),
        gbit_s: m(|t| t.gbit_s),
        loss: m(|t| t.loss),
        edge_cores: m(|t| t.edge_cores),
        client_cores: m(|t| t.client_cores),
        gbit_s_per_core: m(|t| t.gbit_s_per_core),
    }
}

pub fn print(r: &Report) {
    println!(
        "edge capacity ({} flows, {} B media datagrams, edge-node in its own process, loopback)",
        r.flows, r.datagram_bytes
    );
    println!(
        "  paced load: {:.0} datagrams/s ({:.2} Gbit/s of media), the same for every edge",
        r.paced_pps,
        r.paced_pps * r.datagram_bytes as f64 * 8.0 / 1e9
    );
    println!("  endpoints | flat out: Gbit/s, loss, edge cores, Gbit/s per core | paced: Gbit/s, loss, edge cores, Gbit/s per core | clients' cores (flat / paced)");
    for e in &r.edges {
        let (f, p) = (&e.flat_out, &e.paced);
        println!(
            "  {:>9} | {:.2}, {:.1}%, {:.2}, {:.2} | {:.2}, {:.2}%, {:.2}, {:.2} | {:.2} / {:.2}",
            e.endpoints,
            f.gbit_s,
            100.0 * f.loss,
            f.edge_cores,
            f.gbit_s_per_core,
            p.gbit_s,
            100.0 * p.loss,
            p.edge_cores,
            p.gbit_s_per_core,
            f.client_cores,
            p.client_cores,
        );
    }
    if let [one, two, ..] = &r.edges[..] {
        let ratio = |a: f64, b: f64| if a > 0.0 { b / a } else { 0.0 };
        println!(
            "  {} against {} endpoint(s): flat-out goodput x{:.2}, Gbit/s per core flat out x{:.2}, paced x{:.2}",
            two.endpoints,
            one.endpoints,
            ratio(one.flat_out.gbit_s, two.flat_out.gbit_s),
            ratio(one.flat_out.gbit_s_per_core, two.flat_out.gbit_s_per_core),
            ratio(one.paced.gbit_s_per_core, two.paced.gbit_s_per_core),
        );
    }
    println!("  reference: moq-relay reports about 2 Gbit/s per core");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two real edge processes (1 and 2 endpoints) forward every flow: the
    /// figures are measured, not assumed. Needs the binary beside the test's
    /// (`cargo test --workspace` builds it); skipped otherwise.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_endpoint_counts_forward_every_flow() {
        let Some(bin) = crate::child_edge::find_edge_binary() else {
            eprintln!("no edge-node binary next to the test binary: skipped");
            return;
        };
        let r = run(Params {
            payload: 200,
            flows: 3,
            trial: Duration::from_millis(400),
            rounds: 1,
            pace: 0.1,
            edge_bin: Some(bin),
            ..Params::default()
        })
        .await
        .unwrap();
        assert_eq!(r.edges.len(), 2);
        for e in &r.edges {
            assert!(e.flat_out.pps > 0.0, "{e:?}");
            assert!(e.paced.loss < 0.5, "{e:?}");
            assert!(e.flat_out.edge_cores > 0.0, "{e:?}");
        }
    }
}
