//! Footprint: an idle edge's resident memory, and what each session adds.
//!
//! By default the edge is the real `edge-node` binary, started as a child
//! process (found next to the running `loadtest` binary, or given), with a
//! config and dev certificates written to a scratch directory; its RSS is
//! read from `/proc/<pid>/status`, so the figures are the edge's own. Then
//! `sessions` raw QUIC sessions connect and join (all one channel, or
//! channels of `channel_size`), and sit idle: they read what the edge sends
//! and send a keepalive every 2 s. Bytes per session = (RSS with the
//! sessions - idle RSS) / sessions. Finally the sessions close and the RSS
//! is read once more.
//!
//! In-process mode (`--in-process`, and the unit test) runs the edge inside
//! this process instead: the delta then also holds the clients' side of
//! every connection.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use protocol::EdgeId;

use crate::bench_util::{hold_session, join_many, pid_cpu_seconds, proc_status_bytes, start_mesh};
use crate::child_edge::{edge_binary, ChildEdge};
use testkit::mesh::Mesh;
use testkit::scrape::{edge_metrics, metric_in};

#[derive(Clone, Debug)]
pub enum Mode {
    /// The `edge-node` binary as a child process (`None`: look next to the
    /// running executable).
    Process(Option<PathBuf>),
    /// An in-process edge; RSS of this whole process.
    InProcess,
}

#[derive(Clone, Debug)]
pub struct Params {
    pub sessions: usize,
    /// Sessions per channel; 0: all in one channel.
    pub channel_size: usize,
    /// Wait before each RSS reading.
    pub settle: Duration,
    pub mode: Mode,
    /// Edge id (in-process mode keeps concurrent runs' metrics apart).
    pub edge_id: EdgeId,
    /// How often each session sends a keepalive (the SDK's default is
    /// 150 ms: it is how fast a client notices its edge gone).
    pub keepalive: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            sessions: 1_000,
            channel_size: 0,
            settle: Duration::from_secs(2),
            mode: Mode::Process(None),
            edge_id: 1,
            keepalive: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// What was measured: the edge-node process (with its path), or this
    /// process.
    pub measured: String,
    pub sessions: usize,
    pub channels: usize,
    pub connect_seconds: f64,
    pub idle_rss_bytes: u64,
    pub loaded_rss_bytes: u64,
    /// VmHWM with the sessions connected.
    pub peak_rss_bytes: u64,
    pub closed_rss_bytes: u64,
    pub bytes_per_session: f64,
    /// `rtn_edge_sessions` as the edge reports it with the sessions on.
    pub edge_reported_sessions: f64,
    pub edge_reported_channels: f64,
    pub keepalive_ms: u64,
    /// Cores the edge process used while the sessions sat idle (their
    /// keepalives, QUIC's acks and timers); process mode only.
    pub idle_sessions_edge_cores: Option<f64>,
}

/// The edge under test: where clients connect, how to read its RSS and
/// metrics, how to stop it.
enum Subject {
    Child(ChildEdge),
    InProcess(Box<Mesh>),
}

impl Subject {
    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Subject::Child(c) => c.addr,
            Subject::InProcess(m) => m.edges[0].addr(),
        }
    }

    fn ca(&self) -> rustls::pki_types::CertificateDer<'static> {
        match self {
            Subject::Child(c) => c.ca(),
            Subject::InProcess(m) => m.pki.ca_der(),
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Subject::Child(c) => Some(c.pid()),
            Subject::InProcess(_) => None,
        }
    }

    fn status(&self, field: &str) -> u64 {
        proc_status_bytes(self.pid(), field).unwrap_or(0)
    }

    async fn metrics(&self, edge: EdgeId) -> (f64, f64) {
        let text = match self {
            Subject::Child(c) => c.metrics().await,
            Subject::InProcess(_) => edge_metrics(),
        };
        let e = edge.to_string();
        (
            metric_in(&text, "rtn_edge_sessions", &[("edge", &e)]),
            metric_in(&text, "rtn_edge_channels", &[("edge", &e)]),
        )
    }

    async fn stop(self) {
        match self {
            Subject::Child(c) => drop(c),
            Subject::InProcess(m) => m.stop_quietly().await,
        }
    }
}

pub async fn run(p: Params) -> anyhow::Result<Report> {
    anyhow::ensure!(p.sessions >= 1, "at least one session");
    let (subject, measured) = match &p.mode {
        Mode::Process(bin) => {
            let bin = edge_binary(bin.as_deref())?;
            let c = ChildEdge::start(&bin, p.edge_id, p.sessions + 100, "").await?;
            let m = format!("edge-node process (pid {}, {})", c.pid(), bin.display());
            (Subject::Child(c), m)
        }
        Mode::InProcess => {
            let mesh = start_mesh(&[p.edge_id], |c| {
                c.limits.max_sessions = p.sessions + 100;
            })
            .await?;
            (
                Subject::InProcess(Box::new(mesh)),
                "this process (in-process edge and its clients)".to_string(),
            )
        }
    };
    let result = measure(&p, &subject, measured).await;
    subject.stop().await;
    result
}

async fn measure(p: &Params, subject: &Subject, measured: String) -> anyhow::Result<Report> {
    tokio::time::sleep(p.settle).await;
    let idle = subject.status("VmRSS");
    let addr = subject.addr();
    let size = p.channel_size;
    let start = Instant::now();
    let endpoints = p.sessions.div_ceil(125).max(1);
    let (clients, eps) = join_many(p.sessions, endpoints, 32, &subject.ca(), |i| {
        let channel = match i.checked_div(size) {
            Some(c) => format!("memory-{c}"),
            None => "memory".to_string(),
        };
        (addr, channel, format!("idle-{i}"))
    })
    .await?;
    let connect_seconds = start.elapsed().as_secs_f64();
    let n = clients.len();
    let holders: Vec<_> = clients
        .into_iter()
        .map(|c| hold_session(c, p.keepalive))
        .collect();
    let cpu = || subject.pid().and_then(pid_cpu_seconds);
    let (cpu0, wall0) = (cpu(), Instant::now());
    tokio::time::sleep(p.settle).await;
    let idle_sessions_edge_cores = cpu()
        .zip(cpu0)
        .map(|(b, a)| (b - a) / wall0.elapsed().as_secs_f64());
    let loaded = subject.status("VmRSS");
    let peak = subject.status("VmHWM");
    let (sessions_gauge, channels_gauge) = subject.metrics(p.edge_id).await;
    for h in holders {
        h.abort();
    }
    for ep in &eps {
        ep.close(0u32.into(), b"done");
    }
    tokio::time::sleep(p.settle).await;
    let closed = subject.status("VmRSS");
    Ok(Report {
        measured,
        sessions: n,
        channels: if size == 0 { 1 } else { n.div_ceil(size) },
        connect_seconds,
        idle_rss_bytes: idle,
        loaded_rss_bytes: loaded,
        peak_rss_bytes: peak,
        closed_rss_bytes: closed,
        bytes_per_session: (loaded as f64 - idle as f64) / n.max(1) as f64,
        edge_reported_sessions: sessions_gauge,
        edge_reported_channels: channels_gauge,
        keepalive_ms: p.keepalive.as_millis() as u64,
        idle_sessions_edge_cores,
    })
}

/// Print a report as the `bench memory` subcommand does.
pub fn print(r: &Report) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!("memory benchmark: {}", r.measured);
    println!(
        "  idle RSS                     : {:>8.1} MiB   (target for an idle edge < 50 MB)",
        mib(r.idle_rss_bytes)
    );
    println!(
        "  with {} idle sessions in {} channel(s) : {:>8.1} MiB  (peak {:.1} MiB; edge reports {} sessions, {} channels; connected in {:.1} s)",
        r.sessions,
        r.channels,
        mib(r.loaded_rss_bytes),
        mib(r.peak_rss_bytes),
        r.edge_reported_sessions,
        r.edge_reported_channels,
        r.connect_seconds
    );
    println!(
        "  per session                  : {:>8.1} KiB   ({:.0} bytes)",
        r.bytes_per_session / 1024.0,
        r.bytes_per_session
    );
    if let Some(cores) = r.idle_sessions_edge_cores {
        println!(
            "  edge CPU, sessions idle      : {:>8.2} cores (a keepalive every {} ms per session)",
            cores, r.keepalive_ms
        );
    }
    println!(
        "  after the sessions closed    : {:>8.1} MiB",
        mib(r.closed_rss_bytes)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(mode: Mode, edge_id: EdgeId) -> Params {
        Params {
            sessions: 5,
            channel_size: 2,
            settle: Duration::from_millis(300),
            mode,
            edge_id,
            keepalive: Duration::from_millis(150),
        }
    }

    fn check(r: &Report) {
        print(r);
        assert_eq!(r.sessions, 5);
        assert_eq!(r.channels, 3);
        assert_eq!(r.edge_reported_sessions, 5.0);
        assert_eq!(r.edge_reported_channels, 3.0);
        assert!(r.idle_rss_bytes > 0 && r.loaded_rss_bytes > 0 && r.closed_rss_bytes > 0);
        assert!(r.peak_rss_bytes >= r.loaded_rss_bytes);
        let delta = r.loaded_rss_bytes as f64 - r.idle_rss_bytes as f64;
        assert!((r.bytes_per_session * 5.0 - delta).abs() < 1e-6);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tiny_in_process() {
        check(&run(tiny(Mode::InProcess, 9_301)).await.unwrap());
    }

    /// The real binary, when a build left one next to the test binary
    /// (`cargo test --workspace` does); skipped otherwise.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tiny_edge_node_process() {
        let Some(bin) = crate::child_edge::find_edge_binary() else {
            eprintln!("no edge-node binary next to the test binary: skipped");
            return;
        };
        let r = run(tiny(Mode::Process(Some(bin)), 9_302)).await.unwrap();
        assert!(r.measured.starts_with("edge-node process"));
        check(&r);
    }
}
