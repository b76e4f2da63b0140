//! Shared plumbing of the benchmarks: the edge config they run with, many
//! raw subscriber sessions joined and kept alive, and what the process costs
//! (CPU time from `/proc/self/stat` and its threads, RSS from
//! `/proc/<pid>/status`). Edges, clients, tokens and metric scraping come
//! from `testkit`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edge_node::config::AdmissionSection;
use edge_node::EdgeConfig;
use protocol::pb::{self, client_frame::Kind as CK, server_frame::Kind as SK};
use protocol::EdgeId;
use testkit::mesh::Mesh;
use testkit::quic::{client_endpoint, refused, RawClient};
use testkit::tokens::token;

/// Thread name of the runtime [`start_mesh_apart`] runs the edges on (their
/// CPU is counted apart from the clients', [`cpu_now`]).
pub const EDGE_THREADS: &str = "rtn-bench-edge";

/// Start in-process edges with these ids for a benchmark, configs as
/// [`bench_config`] and then `tweak` leave them.
pub async fn start_mesh(ids: &[EdgeId], tweak: impl Fn(&mut EdgeConfig)) -> anyhow::Result<Mesh> {
    Mesh::try_start(ids, None, |cfg| {
        bench_config(cfg);
        tweak(cfg)
    })
    .await
}

/// [`start_mesh`] on a runtime of the edges' own (two worker threads named
/// [`EDGE_THREADS`]); stop both with [`stop_mesh_apart`].
pub async fn start_mesh_apart(
    ids: &[EdgeId],
    tweak: impl Fn(&mut EdgeConfig) + Send + Sync + 'static,
) -> anyhow::Result<(tokio::runtime::Runtime, Mesh)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(EDGE_THREADS)
        .enable_all()
        .build()?;
    let ids = ids.to_vec();
    let mesh = rt
        .spawn(async move { start_mesh(&ids, tweak).await })
        .await??;
    Ok((rt, mesh))
}

/// Stop a mesh [`start_mesh_apart`] started, quietly, and its runtime.
pub async fn stop_mesh_apart(rt: tokio::runtime::Runtime, mesh: Mesh) {
    let _ = rt.spawn(mesh.stop_quietly()).await;
    rt.shutdown_background();
}

/// CPU seconds used so far: (the whole process, the [`EDGE_THREADS`]).
pub fn cpu_now() -> (f64, f64) {
    (
        process_cpu_seconds().unwrap_or(0.0),
        threads_cpu_seconds(EDGE_THREADS).unwrap_or(0.0),
    )
}

/// An edge config for benchmarks.
pub fn bench_config(cfg: &mut EdgeConfig) {
    // No probes run on static routes, and an idle relay link (one that
    // carries no media, e.g. back up a chain) would time out after the
    // default 10 s and be redialled mid-run.
    cfg.limits.client_idle_timeout_ms = 120_000;
    // Benches open hundreds of connections from 127.0.0.1 and push single
    // sessions to saturation: the per-address and per-session limits would
    // measure themselves, not the relay.
    cfg.admission = AdmissionSection::unlimited();
}

/// `endpoints` client endpoints on loopback, for many sessions.
pub fn client_endpoints(endpoints: usize) -> anyhow::Result<Vec<quinn::Endpoint>> {
    (0..endpoints.max(1)).map(|_| client_endpoint()).collect()
}

/// Run `task(i)` for every i in `0..n`, at most `parallel` at a time:
/// their results in order of `i`, or the first error.
pub async fn bounded<T, F, Fut>(n: usize, parallel: usize, task: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let sem = sem.clone();
        let fut = task(i);
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            anyhow::Ok((i, fut.await?))
        });
    }
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        let (i, t) = r??;
        out[i] = Some(t);
    }
    Ok(out.into_iter().flatten().collect())
}

/// Open `n` raw sessions (QUIC + TLS and the control stream, no join yet),
/// `parallel` at a time, spread over `endpoints` client endpoints; session
/// i goes to `addr(i)`. Returns them in order of `i`.
pub async fn open_many(
    n: usize,
    endpoints: usize,
    parallel: usize,
    ca: &rustls::pki_types::CertificateDer<'static>,
    addr: impl Fn(usize) -> SocketAddr,
) -> anyhow::Result<(Vec<RawClient>, Vec<quinn::Endpoint>)> {
    let eps = client_endpoints(endpoints)?;
    let clients = bounded(n, parallel, |i| {
        let (ep, addr, ca) = (eps[i % eps.len()].clone(), addr(i), ca.clone());
        async move {
            // Ten thousand handshakes into one process on two cores: one
            // may time out, and a client would dial again, not give up,
            // from a socket of its own. (One run in four at 10,000
            // sessions once lost every handshake to one edge: its port
            // was shared with another socket, which SO_REUSEADDR allowed;
            // see edge_node::socket.)
            let mut ep = ep;
            let mut tries = 1;
            loop {
                let tried = tokio::time::timeout(HANDSHAKE_WAIT, RawClient::open(&ep, addr, &ca))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("no handshake in {HANDSHAKE_WAIT:?}")));
                match tried {
                    Err(e) if tries < CONNECT_TRIES => {
                        tracing::warn!(error = %e, tries, edge = %addr, "a bench session's handshake failed; dialling again");
                        tries += 1;
                        ep = client_endpoint()?;
                    }
                    result => return result,
                }
            }
        }
    })
    .await?;
    Ok((clients, eps))
}

/// Handshakes a bench session tries before the run fails.
const CONNECT_TRIES: u32 = 3;
/// How long a bench session waits for one handshake.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);

/// Connect and join `n` raw sessions, `parallel` at a time, spread over
/// `endpoints` client endpoints; `plan(i)` gives session i's edge address,
/// channel and user. Returns the joined clients in order of `i`.
pub async fn join_many(
    n: usize,
    endpoints: usize,
    parallel: usize,
    ca: &rustls::pki_types::CertificateDer<'static>,
    plan: impl Fn(usize) -> (SocketAddr, String, String),
) -> anyhow::Result<(Vec<RawClient>, Vec<quinn::Endpoint>)> {
    let eps = client_endpoints(endpoints)?;
    let clients = bounded(n, parallel, |i| {
        let (addr, channel, user) = plan(i);
        let (ep, ca) = (eps[i % eps.len()].clone(), ca.clone());
        async move {
            let mut c = RawClient::open(&ep, addr, &ca).await?;
            c.try_join(token(&channel, &user, false, true), &channel, true)
                .await?
                .map_err(refused)?;
            anyhow::Ok(c)
        }
    })
    .await?;
    Ok((clients, eps))
}

/// A publisher: a session on its own endpoint, joined to `channel` at
/// `addr` (publish right only, no subscription) with one audio track
/// published. Returns it, its endpoint, the channel id and the track key.
pub async fn publisher(
    ca: &rustls::pki_types::CertificateDer<'static>,
    addr: SocketAddr,
    channel: &str,
) -> anyhow::Result<(RawClient, quinn::Endpoint, u64, u64)> {
    let ep = client_endpoint()?;
    let mut c = RawClient::open(&ep, addr, ca).await?;
    let channel_id = c
        .try_join(token(channel, "publisher", true, false), channel, false)
        .await?
        .map_err(refused)?
        .channel_id;
    let track = c.try_publish(channel_id, "cam").await?.map_err(refused)?;
    Ok((c, ep, channel_id, track))
}

/// Keep a session as an idle app would: read (and drop) what the edge sends
/// on the control stream, and send a keepalive every `every`. Ends when the
/// connection does.
pub fn hold_session(c: RawClient, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(hold(c, every, |_| {}))
}

/// [`hold_session`]'s loop, in the caller's task, handing every frame the
/// edge sends to `on_frame`. Returns when the connection ends.
pub async fn hold(mut c: RawClient, every: Duration, mut on_frame: impl FnMut(SK)) {
    let mut nonce = 0u64;
    loop {
        let next = c.recv_until(|k| {
            on_frame(k);
            None::<()>
        });
        match tokio::time::timeout(every, next).await {
            Ok(_) => return, // the stream ended or failed
            Err(_) => {
                nonce += 1;
                if c.try_send(CK::Keepalive(pb::Keepalive { nonce }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Linux reports CPU times in USER_HZ ticks, 100 per second on every
/// architecture's user ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime (seconds) from a `/proc/.../stat` line. The command name
/// sits in parentheses and may contain spaces, so fields are counted after
/// the last ')'.
fn stat_cpu_seconds(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS_PER_SECOND))
}

/// CPU time (user + system, seconds) this process has used so far.
pub fn process_cpu_seconds() -> Option<f64> {
    cpu_seconds_in("/proc/self/stat")
}

/// CPU time (user + system, seconds) process `pid` has used so far.
pub fn pid_cpu_seconds(pid: u32) -> Option<f64> {
    cpu_seconds_in(&format!("/proc/{pid}/stat"))
}

fn cpu_seconds_in(stat_path: &str) -> Option<f64> {
    let s = std::fs::read_to_string(stat_path).ok()?;
    stat_cpu_seconds(&s).map(|(_, t)| t)
}

/// CPU time (seconds) used so far by this process's live threads whose name
/// starts with `prefix` (e.g. the worker threads of one tokio runtime).
pub fn threads_cpu_seconds(prefix: &str) -> Option<f64> {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(entry) = entry else { continue };
        let Ok(s) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((comm, t)) = stat_cpu_seconds(&s) {
            if comm.starts_with(prefix) {
                total += t;
            }
        }
    }
    Some(total)
}

/// A `kB` field (e.g. `VmRSS`, `VmHWM`) of `/proc/<pid>/status`, in bytes;
/// `None` for the pid means this process.
pub fn proc_status_bytes(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    parse_status_kb(&text, field)
}

fn parse_status_kb(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split(':').next() == Some(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The kernel's count of UDP datagrams dropped for a full socket receive
/// buffer (`RcvbufErrors` in `/proc/net/snmp`): the whole host (network
/// namespace), not just this process.
pub fn udp_rcvbuf_errors() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_spaces_in_the_name() {
        let line = "1234 (rtn bench) x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 100 0 0";
        let (comm, cpu) = stat_cpu_seconds(line).unwrap();
        assert_eq!(comm, "rtn bench) x");
        assert!((cpu - 3.0).abs() < 1e-9);
        assert!(process_cpu_seconds().is_some());
        assert!(threads_cpu_seconds("").unwrap() >= 0.0);
    }

    #[test]
    fn status_parsing() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(1024 * 1024));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
        assert!(proc_status_bytes(None, "VmRSS").unwrap() > 0);
        assert!(udp_rcvbuf_errors().is_some());
    }
}
