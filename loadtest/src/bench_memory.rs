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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edge_node::tls::DevPki;
use protocol::EdgeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bench_util::{hold_session, join_many, proc_status_bytes, start_mesh};
use testkit::mesh::Mesh;
use testkit::scrape::{edge_metrics, metric_in};
use testkit::tokens::{APP, SECRET};

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
}

impl Default for Params {
    fn default() -> Self {
        Params {
            sessions: 1_000,
            channel_size: 0,
            settle: Duration::from_secs(2),
            mode: Mode::Process(None),
            edge_id: 1,
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
}

/// `edge-node` next to the running executable, or one directory up (test
/// binaries live in `target/<profile>/deps`).
pub fn find_edge_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let found = [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join("edge-node"))
        .find(|p| p.is_file());
    found
}

/// The edge under test: where clients connect, how to read its RSS and
/// metrics, how to stop it.
enum Subject {
    Child {
        child: Child,
        dir: PathBuf,
        addr: std::net::SocketAddr,
        admin: std::net::SocketAddr,
        ca: rustls::pki_types::CertificateDer<'static>,
    },
    InProcess(Box<Mesh>),
}

impl Subject {
    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Subject::Child { addr, .. } => *addr,
            Subject::InProcess(m) => m.edges[0].addr(),
        }
    }

    fn ca(&self) -> rustls::pki_types::CertificateDer<'static> {
        match self {
            Subject::Child { ca, .. } => ca.clone(),
            Subject::InProcess(m) => m.pki.ca_der(),
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Subject::Child { child, .. } => Some(child.id()),
            Subject::InProcess(_) => None,
        }
    }

    fn status(&self, field: &str) -> u64 {
        proc_status_bytes(self.pid(), field).unwrap_or(0)
    }

    async fn metrics(&self, edge: EdgeId) -> (f64, f64) {
        let text = match self {
            Subject::Child { admin, .. } => http_get(*admin, "/metrics").await.unwrap_or_default(),
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
            Subject::Child { mut child, dir, .. } => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(dir);
            }
            Subject::InProcess(m) => m.stop_quietly().await,
        }
    }
}

/// A plain HTTP/1.0 GET on loopback; the body if the status is 200.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.")
        .then_some(())
        .filter(|_| head.split_whitespace().nth(1) == Some("200"))?;
    Some(body.to_string())
}

fn free_ports() -> anyhow::Result<(u16, u16)> {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok((udp.local_addr()?.port(), tcp.local_addr()?.port()))
}

/// Start `bin` with a fresh config and dev certificates; wait until ready.
async fn start_child(bin: &Path, id: EdgeId, max_sessions: usize) -> anyhow::Result<Subject> {
    let dir = std::env::temp_dir().join(format!(
        "rtn-bench-memory-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir)?;
    let pki = DevPki::new()?;
    let (cert, key) = pki.issue_pem(&["localhost".into()])?;
    std::fs::write(dir.join("edge.pem"), cert)?;
    std::fs::write(dir.join("edge.key"), key)?;
    std::fs::write(dir.join("mesh-ca.pem"), pki.ca_pem())?;
    let (port, admin_port) = free_ports()?;
    // Every session comes from 127.0.0.1: the per-address admission limits
    // (256 connections, 20 a second) would refuse all but the first few
    // hundred, so they are lifted; the session cap stays.
    let config = format!(
        "[edge]\nid = {id}\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\n\
         [tls]\ncert = {cert:?}\nkey = {key:?}\nmesh_ca = {ca:?}\n\
         [client_tls]\nmode = \"files\"\ncert = {cert:?}\nkey = {key:?}\n\
         [[apps]]\nid = \"{APP}\"\nsecrets = [\"{SECRET}\"]\n\
         [admission]\nretry = \"never\"\nconnections_per_ip_per_s = 0\n\
         max_connections_per_ip = {max_sessions}\njoins_per_token_per_s = 0\n",
        cert = dir.join("edge.pem"),
        key = dir.join("edge.key"),
        ca = dir.join("mesh-ca.pem"),
    );
    std::fs::write(dir.join("edge.toml"), config)?;
    let log = std::fs::File::create(dir.join("edge.log"))?;
    let child = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(dir.join("edge.toml"))
        .env("RTN_LIMITS_MAX_SESSIONS", max_sessions.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting {}: {e}", bin.display()))?;
    let subject = Subject::Child {
        child,
        dir: dir.clone(),
        addr: ([127, 0, 0, 1], port).into(),
        admin: ([127, 0, 0, 1], admin_port).into(),
        ca: pki.ca_der(),
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if http_get(([127, 0, 0, 1], admin_port).into(), "/readyz")
            .await
            .is_some()
        {
            return Ok(subject);
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("edge.log")).unwrap_or_default();
            subject.stop().await;
            anyhow::bail!(
                "{} did not get ready in 15 s; its log:\n{log}",
                bin.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(p: Params) -> anyhow::Result<Report> {
    anyhow::ensure!(p.sessions >= 1, "at least one session");
    let (subject, measured) = match &p.mode {
        Mode::Process(bin) => {
            let bin = match bin.clone().or_else(find_edge_binary) {
                Some(b) => b,
                None => anyhow::bail!(
                    "no edge-node binary next to this one: build it (cargo build --release -p edge-node), pass --edge-bin, or use --in-process"
                ),
            };
            let s = start_child(&bin, p.edge_id, p.sessions + 100).await?;
            let m = format!(
                "edge-node process (pid {}, {})",
                s.pid().unwrap_or(0),
                bin.display()
            );
            (s, m)
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
        .map(|c| hold_session(c, Duration::from_secs(2)))
        .collect();
    tokio::time::sleep(p.settle).await;
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
        let Some(bin) = find_edge_binary() else {
            eprintln!("no edge-node binary next to the test binary: skipped");
            return;
        };
        let r = run(tiny(Mode::Process(Some(bin)), 9_302)).await.unwrap();
        assert!(r.measured.starts_with("edge-node process"));
        check(&r);
    }
}
