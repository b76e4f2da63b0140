//! Latency per relay hop: one-way media latency through chains of 1, 2, ...
//! in-process edges (client -> edge 1 -> ... -> edge k -> client, static
//! source routes along the chain) against a direct quinn client -> client
//! datagram flow measured in the same run.
//!
//! Every flow is paced at the same rate; the payload carries the send
//! instant and a sequence number, the receiver records one-way delay. The
//! flows take turns in short rounds (direct, 1 hop, 2 hops, ...) so the
//! shared machine's noise falls on all of them alike. A hop is one edge the
//! media passes through (receive, decrypt, forward, re-encrypt): k hops add
//! k edges and k QUIC legs to the direct flow's one leg.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_node::tls::DevPki;
use protocol::datagram::{MediaHeader, MEDIA_HEADER_LEN};
use protocol::{ChannelId, EdgeId, TrackKey};

use crate::bench_util::{hold_session, start_mesh};
use crate::stats::percentile;
use testkit::mesh::Mesh;
use testkit::quic::{bench_client_config, client_endpoint, refused, server_endpoint, RawClient};
use testkit::tokens::token;

const BENCH_ALPN: &[u8] = b"rtn-bench";
/// Sequence numbers of measured packets start here; below are warm-up ones.
const MEASURED_BASE: u32 = 1 << 20;

#[derive(Clone, Debug)]
pub struct Params {
    /// Chains of 1..=max_hops edges.
    pub max_hops: usize,
    pub pps: u32,
    pub payload: usize,
    /// Length of each flow's turn in a round.
    pub turn: Duration,
    pub rounds: usize,
    /// Chain k uses edge ids `first_edge_id + 10 k ..`.
    pub first_edge_id: EdgeId,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            max_hops: 4,
            pps: 1_000,
            payload: 200,
            turn: Duration::from_secs(1),
            rounds: 4,
            first_edge_id: 100,
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct HopRow {
    pub hops: usize,
    pub samples: usize,
    pub loss: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// This chain minus the direct flow.
    pub added_p50_ms: f64,
    pub added_p99_ms: f64,
    /// Added latency divided by the number of hops.
    pub per_hop_p50_ms: f64,
    pub per_hop_p99_ms: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub pps: u32,
    pub payload_bytes: usize,
    pub rounds: usize,
    pub turn_seconds: f64,
    pub direct_samples: usize,
    pub direct_loss: f64,
    pub direct_p50_ms: f64,
    pub direct_p99_ms: f64,
    pub hops: Vec<HopRow>,
    /// Least-squares slope of latency over the number of hops: what one
    /// more relay hop adds once the client legs are paid for.
    pub slope_p50_ms: f64,
    pub slope_p99_ms: f64,
}

/// A one-way paced flow with a reader that records the delay of every
/// measured packet.
struct Flow {
    tx: quinn::Connection,
    header: Option<MediaHeader>,
    samples: Arc<Mutex<Vec<f64>>>,
    /// A warm-up packet arrived.
    warm: Arc<AtomicBool>,
    sent: u64,
    reader: tokio::task::JoinHandle<()>,
    _keep: Vec<quinn::Endpoint>,
}

impl Flow {
    fn new(
        tx: quinn::Connection,
        rx: quinn::Connection,
        header: Option<MediaHeader>,
        base: Instant,
        keep: Vec<quinn::Endpoint>,
    ) -> Flow {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let off = if header.is_some() {
            MEDIA_HEADER_LEN
        } else {
            0
        };
        let s2 = samples.clone();
        let warm = Arc::new(AtomicBool::new(false));
        let w2 = warm.clone();
        let reader = tokio::spawn(async move {
            while let Ok(d) = rx.read_datagram().await {
                let now = base.elapsed().as_nanos() as u64;
                let Some(body) = d.get(off..off + 12) else {
                    continue;
                };
                let sent = u64::from_be_bytes(body[..8].try_into().unwrap_or([0; 8]));
                let seq = u32::from_be_bytes(body[8..12].try_into().unwrap_or([0; 4]));
                if seq >= MEASURED_BASE {
                    let ms = now.saturating_sub(sent) as f64 / 1e6;
                    s2.lock().map(|mut v| v.push(ms)).ok();
                } else {
                    w2.store(true, Ordering::Relaxed);
                }
            }
        });
        Flow {
            tx,
            header,
            samples,
            warm,
            sent: 0,
            reader,
            _keep: keep,
        }
    }

    fn packet(&self, seq: u32, sent_ns: u64, payload: usize) -> Bytes {
        let mut body = vec![0u8; payload.max(12)];
        body[..8].copy_from_slice(&sent_ns.to_be_bytes());
        body[8..12].copy_from_slice(&seq.to_be_bytes());
        match &self.header {
            Some(h) => MediaHeader {
                sequence: seq,
                ..*h
            }
            .encode(&body)
            .unwrap_or_default(),
            None => Bytes::from(body),
        }
    }

    /// Send warm-up packets until one arrives (the route and the directory
    /// are in place), for at most 10 s.
    async fn warm_up(&self, base: Instant) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seq = 0u32;
        while !self.warm.load(Ordering::Relaxed) {
            anyhow::ensure!(Instant::now() < deadline, "warm-up: no packet got through");
            let pkt = self.packet(seq, base.elapsed().as_nanos() as u64, 12);
            self.tx.send_datagram_wait(pkt).await?;
            seq += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// One turn: `pps` packets a second for `turn`, in 1 ms ticks.
    async fn paced(&mut self, pps: u32, turn: Duration, payload: usize, base: Instant) {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < turn {
            tick.tick().await;
            let due = (start.elapsed().as_secs_f64() * pps as f64) as u64;
            while sent < due {
                let seq = MEASURED_BASE + self.sent as u32;
                let pkt = self.packet(seq, base.elapsed().as_nanos() as u64, payload);
                if self.tx.send_datagram_wait(pkt).await.is_err() {
                    return;
                }
                sent += 1;
                self.sent += 1;
            }
        }
    }

    /// Latency samples (ms) and loss fraction so far.
    fn result(&self) -> (Vec<f64>, f64) {
        let v = self.samples.lock().map(|v| v.clone()).unwrap_or_default();
        let loss = 1.0 - v.len() as f64 / self.sent.max(1) as f64;
        (v, loss.max(0.0))
    }
}

async fn direct_flow(pki: &DevPki, base: Instant) -> anyhow::Result<Flow> {
    let server = server_endpoint(&pki.material(&["localhost".into()])?, BENCH_ALPN)?;
    let client = client_endpoint()?;
    let addr = server.local_addr()?;
    let accept = {
        let server = server.clone();
        tokio::spawn(async move { server.accept().await?.await.ok() })
    };
    let tx = client
        .connect_with(
            bench_client_config(&pki.ca_der(), BENCH_ALPN),
            addr,
            "localhost",
        )?
        .await?;
    let rx = accept
        .await?
        .ok_or_else(|| anyhow::anyhow!("direct accept failed"))?;
    Ok(Flow::new(tx, rx, None, base, vec![server, client]))
}

/// A chain of `hops` edges, the publisher on the first, the subscriber on
/// the last, the first edge's path to the last running through all of them.
async fn chain_flow(ids: &[EdgeId], base: Instant) -> anyhow::Result<(Flow, Mesh)> {
    let mesh = start_mesh(ids, |c| c.limits.subscriber_queue = 1_024).await?;
    if ids.len() >= 2 {
        mesh.set_paths(ids[0], &[ids]);
    }
    let ca = mesh.pki.ca_der();
    let first = mesh.edges[0].addr();
    let last = mesh.edges[ids.len() - 1].addr();
    let channel_name = format!("multihop-{}", ids.len());
    let (ep_a, ep_b) = (client_endpoint()?, client_endpoint()?);
    let mut sub = RawClient::open(&ep_b, last, &ca).await?;
    sub.try_join(
        token(&channel_name, "sub", false, true),
        &channel_name,
        true,
    )
    .await?
    .map_err(refused)?;
    let mut publ = RawClient::open(&ep_a, first, &ca).await?;
    let channel = publ
        .try_join(
            token(&channel_name, "pub", true, false),
            &channel_name,
            false,
        )
        .await?
        .map_err(refused)?
        .channel_id;
    let track = publ.try_publish(channel, "mic").await?.map_err(refused)?;
    // The QUIC connections under the raw sessions: the flow measures quinn.
    let (tx, rx) = ((*publ.conn).clone(), (*sub.conn).clone());
    hold_session(publ, Duration::from_secs(2));
    hold_session(sub, Duration::from_secs(2));
    let header = MediaHeader {
        channel: ChannelId(channel),
        track: TrackKey(track),
        sequence: 0,
        timestamp_us: 0,
    };
    Ok((
        Flow::new(tx, rx, Some(header), base, vec![ep_a, ep_b]),
        mesh,
    ))
}

fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return f64::NAN;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    sxy / sxx
}

pub async fn run(p: Params) -> anyhow::Result<Report> {
    anyhow::ensure!(p.max_hops >= 1 && p.pps >= 1 && p.rounds >= 1);
    let base = Instant::now();
    let pki = DevPki::new()?;
    let mut direct = direct_flow(&pki, base).await?;
    let mut chains = vec![];
    let mut meshes = vec![];
    for k in 1..=p.max_hops {
        let ids: Vec<EdgeId> = (0..k as u32)
            .map(|i| p.first_edge_id + 10 * k as u32 + i)
            .collect();
        let (flow, mesh) = chain_flow(&ids, base).await?;
        chains.push(flow);
        meshes.push(mesh);
    }
    let result = async {
        for f in std::iter::once(&direct).chain(chains.iter()) {
            f.warm_up(base).await?;
        }
        for _ in 0..p.rounds {
            direct.paced(p.pps, p.turn, p.payload, base).await;
            for f in chains.iter_mut() {
                f.paced(p.pps, p.turn, p.payload, base).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        anyhow::Ok(())
    }
    .await;
    for m in meshes {
        m.stop_quietly().await;
    }
    result?;

    let pct = |v: &mut Vec<f64>, q| percentile(v, q).unwrap_or(f64::NAN);
    let (mut d, direct_loss) = direct.result();
    direct.reader.abort();
    let (d50, d99) = (pct(&mut d, 50.0), pct(&mut d, 99.0));
    let mut rows = vec![];
    for (i, f) in chains.iter().enumerate() {
        let hops = i + 1;
        let (mut v, loss) = f.result();
        f.reader.abort();
        let (p50, p99) = (pct(&mut v, 50.0), pct(&mut v, 99.0));
        rows.push(HopRow {
            hops,
            samples: v.len(),
            loss,
            p50_ms: p50,
            p99_ms: p99,
            added_p50_ms: p50 - d50,
            added_p99_ms: p99 - d99,
            per_hop_p50_ms: (p50 - d50) / hops as f64,
            per_hop_p99_ms: (p99 - d99) / hops as f64,
        });
    }
    let s50: Vec<_> = rows.iter().map(|r| (r.hops as f64, r.p50_ms)).collect();
    let s99: Vec<_> = rows.iter().map(|r| (r.hops as f64, r.p99_ms)).collect();
    Ok(Report {
        pps: p.pps,
        payload_bytes: p.payload,
        rounds: p.rounds,
        turn_seconds: p.turn.as_secs_f64(),
        direct_samples: d.len(),
        direct_loss,
        direct_p50_ms: d50,
        direct_p99_ms: d99,
        hops: rows,
        slope_p50_ms: slope(&s50),
        slope_p99_ms: slope(&s99),
    })
}

/// Print a report as the `bench multihop` subcommand does.
pub fn print(r: &Report) {
    println!(
        "multi-hop latency ({} pkt/s, {} B payload, {} rounds of {:.1} s turns; loopback, one process)",
        r.pps, r.payload_bytes, r.rounds, r.turn_seconds
    );
    println!(
        "  direct quinn client->client: p50 {:.3} ms  p99 {:.3} ms  ({} samples, loss {:.4})",
        r.direct_p50_ms, r.direct_p99_ms, r.direct_samples, r.direct_loss
    );
    println!("  hops   p50 ms   p99 ms | added p50  added p99 | per hop p50  per hop p99 |  loss");
    for h in &r.hops {
        println!(
            "  {:>4} {:>8.3} {:>8.3} | {:>9.3} {:>10.3} | {:>11.3} {:>11.3} | {:.4}",
            h.hops,
            h.p50_ms,
            h.p99_ms,
            h.added_p50_ms,
            h.added_p99_ms,
            h.per_hop_p50_ms,
            h.per_hop_p99_ms,
            h.loss
        );
    }
    println!(
        "  each further hop (slope over 1..{} hops): p50 {:.3} ms  p99 {:.3} ms   (target: added p99 per hop < 1 ms)",
        r.hops.len(),
        r.slope_p50_ms,
        r.slope_p99_ms
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_slope() {
        let pts = [(1.0, 1.5), (2.0, 2.0), (3.0, 2.5), (4.0, 3.0)];
        assert!((slope(&pts) - 0.5).abs() < 1e-12);
        assert!(slope(&pts[..1]).is_nan());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tiny_chains_measure_every_hop() {
        let r = run(Params {
            max_hops: 3,
            pps: 200,
            payload: 100,
            turn: Duration::from_millis(300),
            rounds: 2,
            first_edge_id: 9_200,
        })
        .await
        .unwrap();
        print(&r);
        assert_eq!(r.hops.len(), 3);
        assert!(r.direct_samples > 0);
        for (i, h) in r.hops.iter().enumerate() {
            assert_eq!(h.hops, i + 1);
            assert!(h.samples > 0, "{h:?}");
            assert!((0.0..=1.0).contains(&h.loss));
            assert!(h.p50_ms.is_finite() && h.p99_ms >= h.p50_ms);
            assert!((h.added_p50_ms - (h.p50_ms - r.direct_p50_ms)).abs() < 1e-9);
            assert!((h.per_hop_p99_ms * h.hops as f64 - h.added_p99_ms).abs() < 1e-9);
        }
        assert!(r.slope_p50_ms.is_finite() && r.slope_p99_ms.is_finite());
    }
}
