//! Forwarding cost: media datagrams client -> edge -> client against a direct
//! quinn client -> client flow, measured in the same run on loopback.
//!
//! 1. Saturation: each flow sends as fast as quinn's congestion control lets
//!    it (`send_datagram_wait`) for a fixed time; the receiver counts. The
//!    two flows alternate over several short rounds and the ratio reported is
//!    the median of the per-round ratios, so that the shared machine's noise
//!    hits both sides alike.
//! 2. Latency: each flow is paced at half the edge's saturating rate; the
//!    payload carries the send instant, the receiver records one-way delay.
//!    The edge's added latency is its percentile minus the direct one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_node::config::AdmissionSection;
use edge_node::tls::DevPki;
use edge_node::{Edge, EdgeConfig, EdgeOptions};
use protocol::datagram::{MediaHeader, MEDIA_HEADER_LEN};
use protocol::token::{mint, Grant};
use protocol::{ChannelId, TrackKey};

use crate::quic::{client_config, client_endpoint, server_endpoint, RawClient};
use crate::stats::percentile;

const APP: &str = "bench";
const SECRET: &str = "bench-secret-0123456789";
const BENCH_ALPN: &[u8] = b"rtn-bench";

#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub payload: usize,
    /// Length of each saturation round.
    pub saturate_for: Duration,
    /// Alternating rounds (direct then edge) measured.
    pub rounds: usize,
    pub latency_for: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            payload: 200,
            saturate_for: Duration::from_secs(1),
            rounds: 7,
            latency_for: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub payload_bytes: usize,
    /// Medians over the rounds.
    pub direct_pps: f64,
    pub edge_pps: f64,
    /// Median of the per-round ratios.
    pub ratio: f64,
    pub round_ratios: Vec<f64>,
    pub paced_pps: f64,
    pub direct_latency_ms: [f64; 2],
    pub edge_latency_ms: [f64; 2],
    pub added_p50_ms: f64,
    pub added_p99_ms: f64,
    pub edge_paced_loss: f64,
}

/// A one-way flow: a sender connection and a receiver connection.
struct Flow {
    tx: quinn::Connection,
    rx: quinn::Connection,
    /// Prefix every datagram carries (a media header for the edge flow).
    header: Option<MediaHeader>,
    _keep: Vec<quinn::Endpoint>,
}

/// A datagram carrying its send time (ns since `base`) in its first 8
/// payload bytes, behind `header` if the flow has one.
fn make_packet(header: Option<MediaHeader>, seq: u32, sent_ns: u64, payload: usize) -> Bytes {
    let mut body = vec![0u8; payload.max(8)];
    body[..8].copy_from_slice(&sent_ns.to_be_bytes());
    match header {
        Some(h) => MediaHeader { sequence: seq, ..h }
            .encode(&body)
            .unwrap_or_default(),
        None => Bytes::from(body),
    }
}

fn now_ns(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

impl Flow {
    fn packet(&self, seq: u32, sent_ns: u64, payload: usize) -> Bytes {
        make_packet(self.header, seq, sent_ns, payload)
    }

    fn offset(&self) -> usize {
        if self.header.is_some() {
            MEDIA_HEADER_LEN
        } else {
            0
        }
    }

    /// Packets per second received while the sender saturates.
    async fn saturate(&self, p: Params) -> f64 {
        let received = Arc::new(AtomicU64::new(0));
        let rx = self.rx.clone();
        let counter = received.clone();
        let reader = tokio::spawn(async move {
            while rx.read_datagram().await.is_ok() {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        let base = Instant::now();
        let start_count = received.load(Ordering::Relaxed);
        let mut seq = 0u32;
        while base.elapsed() < p.saturate_for {
            let pkt = self.packet(seq, 0, p.payload);
            if self.tx.send_datagram_wait(pkt).await.is_err() {
                break;
            }
            seq = seq.wrapping_add(1);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = received.load(Ordering::Relaxed) - start_count;
        reader.abort();
        got as f64 / p.saturate_for.as_secs_f64()
    }

    /// One-way latencies (ms) at a paced rate, and the loss fraction.
    async fn paced(&self, pps: f64, p: Params) -> (Vec<f64>, f64) {
        let base = Instant::now();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let rx = self.rx.clone();
        let s2 = samples.clone();
        let off = self.offset();
        let reader = tokio::spawn(async move {
            while let Ok(d) = rx.read_datagram().await {
                if d.len() >= off + 8 {
                    let sent = u64::from_be_bytes(d[off..off + 8].try_into().unwrap_or([0; 8]));
                    let ms = (now_ns(base).saturating_sub(sent)) as f64 / 1e6;
                    s2.lock().map(|mut v| v.push(ms)).ok();
                }
            }
        });
        // Paced from a thread of its own in 100 µs steps, the packets due in
        // each: evenly spread like the sum of many independent media flows.
        // (Tokio's 1 ms ticks sent ~300-packet bursts whose own queueing
        // dominated the p99 of both flows.)
        let (tx, header, payload, latency_for) =
            (self.tx.clone(), self.header, p.payload, p.latency_for);
        let pacer = std::thread::spawn(move || {
            let mut sent = 0u64;
            let mut seq = 0u32;
            let start = Instant::now();
            while start.elapsed() < latency_for {
                let due = (start.elapsed().as_secs_f64() * pps) as u64;
                while sent < due {
                    let pkt = make_packet(header, seq, now_ns(base), payload);
                    if tx.send_datagram(pkt).is_err() {
                        return sent;
                    }
                    sent += 1;
                    seq = seq.wrapping_add(1);
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            sent
        });
        let sent = tokio::task::spawn_blocking(move || pacer.join().unwrap_or(0))
            .await
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        reader.abort();
        let v = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
        let loss = 1.0 - (v.len() as f64 / sent.max(1) as f64);
        (v, loss.max(0.0))
    }
}

async fn direct_flow(pki: &DevPki) -> anyhow::Result<Flow> {
    let server = server_endpoint(&pki.material(&["localhost".into()])?, BENCH_ALPN)?;
    let client = client_endpoint()?;
    let addr = server.local_addr()?;
    let accept = {
        let server = server.clone();
        tokio::spawn(async move { server.accept().await?.await.ok() })
    };
    let tx = client
        .connect_with(client_config(&pki.ca_der(), BENCH_ALPN)?, addr, "localhost")?
        .await?;
    let rx = accept
        .await?
        .ok_or_else(|| anyhow::anyhow!("direct accept failed"))?;
    Ok(Flow {
        tx,
        rx,
        header: None,
        _keep: vec![server, client],
    })
}

async fn edge_flow(pki: &DevPki, edge: &Edge) -> anyhow::Result<Flow> {
    let ca = pki.ca_der();
    let token = |user: &str| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        mint(
            &Grant {
                app_id: APP,
                channel: "bench",
                user_id: user,
                publish: true,
                subscribe: true,
                issued_at: now,
                expires_at: now + 3600,
            },
            SECRET.as_bytes(),
        )
    };
    let (ep_a, ep_b) = (client_endpoint()?, client_endpoint()?);
    let mut sub = RawClient::connect(&ep_b, edge.addr(), &ca).await?;
    sub.join(token("sub"), "bench", true).await?;
    let mut publ = RawClient::connect(&ep_a, edge.addr(), &ca).await?;
    let channel = publ.join(token("pub"), "bench", false).await?;
    let track = publ.publish(channel, "mic").await?;
    // Keep the control streams alive for the whole run.
    let (tx, rx) = (publ.conn.clone(), sub.conn.clone());
    tokio::spawn(async move {
        let _hold = (publ, sub);
        std::future::pending::<()>().await;
    });
    Ok(Flow {
        tx,
        rx,
        header: Some(MediaHeader {
            channel: ChannelId(channel),
            track: TrackKey(track),
            sequence: 0,
            timestamp_us: 0,
        }),
        _keep: vec![ep_a, ep_b],
    })
}

pub async fn run(p: Params) -> anyhow::Result<Report> {
    let pki = DevPki::new()?;
    let mut cfg = EdgeConfig::dev(1, APP, SECRET);
    cfg.limits.subscriber_queue = 1024;
    // The sender saturates one session on purpose.
    cfg.admission = AdmissionSection::unlimited();
    let edge = Edge::start(
        cfg,
        EdgeOptions {
            tls: Some(pki.material(&["localhost".into()])?),
            routes: None,
            ..Default::default()
        },
    )
    .await?;
    let direct = direct_flow(&pki).await?;
    let via_edge = edge_flow(&pki, &edge).await?;

    let (mut directs, mut edges, mut ratios) = (vec![], vec![], vec![]);
    for _ in 0..p.rounds.max(1) {
        let d = direct.saturate(p).await;
        let e = via_edge.saturate(p).await;
        directs.push(d);
        edges.push(e);
        ratios.push(e / d);
    }
    let round_ratios = ratios.clone();
    let direct_pps = percentile(&mut directs, 50.0).unwrap_or(0.0);
    let edge_pps = percentile(&mut edges, 50.0).unwrap_or(0.0);
    let ratio = percentile(&mut ratios, 50.0).unwrap_or(0.0);
    let paced = edge_pps / 2.0;
    let (mut d_lat, _) = direct.paced(paced, p).await;
    let (mut e_lat, e_loss) = via_edge.paced(paced, p).await;
    let pct = |v: &mut Vec<f64>, q| percentile(v, q).unwrap_or(f64::NAN);
    let (d50, d99, e50, e99) = (
        pct(&mut d_lat, 50.0),
        pct(&mut d_lat, 99.0),
        pct(&mut e_lat, 50.0),
        pct(&mut e_lat, 99.0),
    );
    edge.kill().await;
    Ok(Report {
        payload_bytes: p.payload,
        direct_pps,
        edge_pps,
        ratio,
        round_ratios,
        paced_pps: paced,
        direct_latency_ms: [d50, d99],
        edge_latency_ms: [e50, e99],
        added_p50_ms: e50 - d50,
        added_p99_ms: e99 - d99,
        edge_paced_loss: e_loss,
    })
}
