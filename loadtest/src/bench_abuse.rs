//! Attacks on one edge, and what a legitimate call on the same edge feels
//! during each, against a no-attack baseline measured in the same run.
//!
//! The edge runs with the production admission defaults
//! ([`AdmissionSection::default`]). A legitimate pair (127.0.0.2 publishes,
//! 127.0.0.3 subscribes) exchanges a media packet every 5 ms throughout;
//! each phase records its one-way latency and loss. The attacks:
//! - `handshake_flood`: QUIC handshakes from many spoofed addresses
//!   (127.66.0.0/16; the edge's WAN emulation drops everything sent there,
//!   as the Internet would deliver answers to a spoofed source to someone
//!   who ignores them), so none ever finishes;
//! - `connection_flood`: full handshakes as fast as possible from one
//!   address (127.0.0.9);
//! - `forged_tokens` / `token_replay`: joins with bad signatures, and one
//!   valid token joined over and over, one join at a time on a connection,
//!   connecting again when the edge closes it after 32 refused joins;
//! - `message_flood`: a member of the call's channel sending messages as
//!   fast as its stream allows (the subscriber reads them all);
//! - `datagram_flood`: malformed datagrams, datagrams for tracks the
//!   sender does not own, and valid media over its publishing rate;
//!
//! and one burst of legitimate load, to show the limits do not refuse it:
//! - `join_burst`: [`JOIN_BURST`] clients from as many addresses connect and
//!   join at once (ten times the lab's 24 clients), each its own token.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_node::config::AdmissionSection;
use edge_node::tls::DevPki;
use edge_node::{Edge, EdgeConfig, EdgeOptions};
use protocol::datagram::MediaHeader;
use protocol::pb::{self, client_frame::Kind as CK};
use protocol::{ChannelId, TrackKey};
use rustls::pki_types::CertificateDer;
use serde::Serialize;
use testkit::netem::{LinkProfile, LinkRule, Wan};

use crate::stats::percentile;
use testkit::quic::{bench_client_config, client_endpoint_at, refused, RawClient};
use testkit::scrape::{edge_metrics, metric_by};
use testkit::tokens::{token, APP, SECRET};

/// Where spoofed sources live; the edge's answers there are dropped.
const SPOOFED_NET: &str = "127.66.0.0/16";
/// One legitimate media packet per this: 200 packets per second.
const PROBE_EVERY: Duration = Duration::from_millis(5);
const CHANNEL: &str = "call";
/// Clients in the join burst.
pub const JOIN_BURST: usize = 240;

#[derive(Debug, Clone)]
pub struct Params {
    /// How long each phase (the baseline and every attack) lasts.
    pub phase: Duration,
    /// Spoofed source addresses in the handshake flood.
    pub spoofed_sources: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            phase: Duration::from_secs(5),
            spoofed_sources: 500,
        }
    }
}

/// One phase: what the attacker did, what the edge counted, what the
/// legitimate call saw.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    /// Attack actions tried (handshakes, joins, messages, datagrams).
    pub attempts: u64,
    /// Of those, how many the edge let through: handshakes finished, joins
    /// accepted, sessions opened by the datagram flooder (0 for the message
    /// flood, which the edge paces rather than refuses: see its counters).
    pub admitted: u64,
    /// Time of the admitted actions where timed (the join burst's connect
    /// and join), p50 and p99 in ms; NaN otherwise.
    pub action_p50_ms: f64,
    pub action_p99_ms: f64,
    /// Edge counters that moved during the phase, `name{label} delta`.
    pub counted: Vec<(String, f64)>,
    pub legit_p50_ms: f64,
    pub legit_p99_ms: f64,
    pub legit_loss: f64,
    /// p99 during the attack over the baseline's p99.
    pub p99_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub baseline: Phase,
    pub attacks: Vec<Phase>,
}

/// Edge counters that tell how an attack was handled.
const COUNTERS: &[(&str, &str)] = &[
    ("rtn_edge_connections_refused_total", "reason"),
    ("rtn_edge_quic_retries_total", "edge"),
    ("rtn_edge_rate_limited_total", "limit"),
    ("rtn_edge_media_dropped_total", "reason"),
    ("rtn_edge_joins_total", "result"),
    ("rtn_edge_protocol_errors_total", "reason"),
];

fn counters() -> Vec<(String, f64)> {
    let text = edge_metrics();
    let mut out = vec![];
    for (name, label) in COUNTERS {
        for (value, v) in metric_by(&text, name, &[], label) {
            out.push((format!("{name}{{{label}={value}}}"), v));
        }
    }
    out
}

fn delta(before: &[(String, f64)], after: &[(String, f64)]) -> Vec<(String, f64)> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let was = before.iter().find(|(b, _)| b == k).map_or(0.0, |(_, b)| *b);
            (*v > was).then(|| (k.clone(), v - was))
        })
        .collect()
}

fn endpoint_at(ip: Ipv4Addr) -> anyhow::Result<quinn::Endpoint> {
    client_endpoint_at(SocketAddr::new(IpAddr::V4(ip), 0), 1 << 20)
}

/// The legitimate call: latency samples (ms) and packets sent, per phase.
struct Call {
    publisher: RawClient,
    channel: u64,
    track: u64,
    samples: Arc<std::sync::Mutex<Vec<f64>>>,
    _reader: tokio::task::JoinHandle<()>,
    _drain: tokio::task::JoinHandle<()>,
    _eps: Vec<quinn::Endpoint>,
}

impl Call {
    async fn start(addr: SocketAddr, ca: &CertificateDer<'static>) -> anyhow::Result<Call> {
        let ep_a = endpoint_at(Ipv4Addr::new(127, 0, 0, 2))?;
        let ep_b = endpoint_at(Ipv4Addr::new(127, 0, 0, 3))?;
        let mut publisher = RawClient::open(&ep_a, addr, ca).await?;
        let channel = publisher
            .try_join(token(CHANNEL, "alice", true, true), CHANNEL, false)
            .await?
            .map_err(refused)?
            .channel_id;
        let track = publisher
            .try_publish(channel, "mic")
            .await?
            .map_err(refused)?;
        let mut subscriber = RawClient::open(&ep_b, addr, ca).await?;
        subscriber
            .try_join(token(CHANNEL, "bob", false, true), CHANNEL, true)
            .await?
            .map_err(refused)?;
        let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let conn = subscriber.conn.clone();
        let s = samples.clone();
        let reader = tokio::spawn(async move {
            while let Ok(d) = conn.read_datagram().await {
                if let Ok(h) = MediaHeader::decode(&d) {
                    let took =
                        control::clock::now_us().saturating_sub(h.timestamp_us) as f64 / 1000.0;
                    s.lock().unwrap_or_else(|e| e.into_inner()).push(took);
                }
            }
        });
        // The subscriber reads its control stream (member events, the
        // message flood) as an app would.
        let drain = tokio::spawn(async move {
            let _ = subscriber.recv_until(|_| None::<()>).await;
        });
        Ok(Call {
            publisher,
            channel,
            track,
            samples,
            _reader: reader,
            _drain: drain,
            _eps: vec![ep_a, ep_b],
        })
    }

    /// Send probes for `len`; returns (p50, p99, loss).
    async fn measure(&self, len: Duration, seq: &mut u32) -> (f64, f64, f64) {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let mut tick = tokio::time::interval(PROBE_EVERY);
        let end = Instant::now() + len;
        let mut sent = 0u64;
        while Instant::now() < end {
            tick.tick().await;
            *seq += 1;
            let h = MediaHeader {
                channel: ChannelId(self.channel),
                track: TrackKey(self.track),
                sequence: *seq,
                timestamp_us: control::clock::now_us(),
            };
            if let Ok(d) = h.encode(&[0u8; 160]) {
                let _ = self.publisher.conn.send_datagram(d);
                sent += 1;
            }
        }
        // Stragglers.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut s = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let got = s.len() as f64;
        (
            percentile(&mut s, 50.0).unwrap_or(f64::NAN),
            percentile(&mut s, 99.0).unwrap_or(f64::NAN),
            if sent == 0 {
                0.0
            } else {
                (1.0 - got / sent as f64).max(0.0)
            },
        )
    }
}

/// Attack tallies, shared with the attack's tasks.
#[derive(Default)]
struct Tally {
    attempts: AtomicU64,
    admitted: AtomicU64,
    /// How long admitted actions took (ms), where the attack times them.
    took_ms: std::sync::Mutex<Vec<f64>>,
}

type Attack = fn(Arc<Ctx>, Arc<Tally>) -> tokio::task::JoinHandle<()>;

/// What every attack gets: the edge, its CA, a stop flag.
struct Ctx {
    addr: SocketAddr,
    ca: CertificateDer<'static>,
    stop: AtomicBool,
    spoofed_sources: usize,
}

impl Ctx {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Handshakes from spoofed sources: each source keeps one handshake
/// going; the edge's answers never arrive.
fn handshake_flood(ctx: Arc<Ctx>, tally: Arc<Tally>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..ctx.spoofed_sources {
            let ip = Ipv4Addr::new(127, 66, (i / 250) as u8, (i % 250 + 1) as u8);
            let Ok(ep) = endpoint_at(ip) else { continue };
            let (ctx, tally) = (ctx.clone(), tally.clone());
            tasks.spawn(async move {
                let cfg = bench_client_config(&ctx.ca, protocol::alpn::CLIENT_V1);
                while !ctx.stopped() {
                    tally.attempts.fetch_add(1, Ordering::Relaxed);
                    if let Ok(connecting) = ep.connect_with(cfg.clone(), ctx.addr, "localhost") {
                        // Give up after a while and start over, as a flood
                        // tool would, to keep fresh Initials coming.
                        if let Ok(Ok(_)) =
                            tokio::time::timeout(Duration::from_millis(500), connecting).await
                        {
                            tally.admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                ep.close(0u32.into(), b"");
            });
        }
        while tasks.join_next().await.is_some() {}
    })
}

/// Full handshakes from one address, 32 at a time, as fast as they go.
fn connection_flood(ctx: Arc<Ctx>, tally: Arc<Tally>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(ep) = endpoint_at(Ipv4Addr::new(127, 0, 0, 9)) else {
            return;
        };
        let cfg = bench_client_config(&ctx.ca, protocol::alpn::CLIENT_V1);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let (ctx, tally, ep, cfg) = (ctx.clone(), tally.clone(), ep.clone(), cfg.clone());
            tasks.spawn(async move {
                while !ctx.stopped() {
                    tally.attempts.fetch_add(1, Ordering::Relaxed);
                    let Ok(connecting) = ep.connect_with(cfg.clone(), ctx.addr, "localhost") else {
                        continue;
                    };
                    match tokio::time::timeout(Duration::from_secs(1), connecting).await {
                        Ok(Ok(c)) => {
                            tally.admitted.fetch_add(1, Ordering::Relaxed);
                            c.close(0u32.into(), b"");
                        }
                        // Refused: try again at once.
                        _ => tokio::task::yield_now().await,
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        ep.close(0u32.into(), b"");
    })
}

/// Joins on one connection, over and over: `token(i)` gives the i-th. When
/// the edge closes the connection (its budget of refused joins), connect
/// again, as an attacker would.
async fn join_loop(ctx: Arc<Ctx>, tally: Arc<Tally>, ip: Ipv4Addr, token: impl Fn(u64) -> String) {
    let Ok(ep) = endpoint_at(ip) else { return };
    let mut i = 0;
    while !ctx.stopped() {
        let Ok(mut c) = RawClient::open(&ep, ctx.addr, &ctx.ca).await else {
            // Refused (over the connection rate): try again soon.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        while !ctx.stopped() {
            i += 1;
            tally.attempts.fetch_add(1, Ordering::Relaxed);
            match c.try_join(token(i), CHANNEL, false).await {
                Ok(Ok(joined)) => {
                    let channel_id = joined.channel_id;
                    tally.admitted.fetch_add(1, Ordering::Relaxed);
                    let _ = c
                        .try_send(CK::Leave(pb::Leave {
                            request_id: 9,
                            channel_id,
                        }))
                        .await;
                }
                _ if c.conn.close_reason().is_some() => break,
                _ => {}
            }
        }
    }
    ep.close(0u32.into(), b"");
}

fn forged_tokens(ctx: Arc<Ctx>, tally: Arc<Tally>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(join_loop(ctx, tally, Ipv4Addr::new(127, 0, 0, 10), |i| {
        let t = token(CHANNEL, &format!("mallory{i}"), true, true);
        // Change the first character of the signature (the last one has
        // unused bits: changing them makes the token malformed instead).
        let at = t.rfind('.').map_or(0, |d| d + 1);
        let c = if t[at..].starts_with('A') { "B" } else { "A" };
        format!("{}{c}{}", &t[..at], &t[at + 1..])
    }))
}

fn token_replay(ctx: Arc<Ctx>, tally: Arc<Tally>) -> tokio::task::JoinHandle<()> {
    let stolen = token(CHANNEL, "mallory", true, true);
    tokio::spawn(join_loop(
        ctx,
        tally,
        Ipv4Addr::new(127, 0, 0, 11),
        move |_| stolen.clone(),
    ))
}

/// A member of the call's channel sending messages as fast as it can.
fn message_flood(ctx: Arc<Ctx>, tally: Arc<Tally>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(ep) = endpoint_at(Ipv4Addr::new(127, 0, 0, 12)) else {
            return;
        };
        let Ok(mut c) = RawClient::open(&ep, ctx.addr, &ctx.ca).await else {
            return;
        };
        let Ok(Ok(joined)) = c
            .try_join(token(CHANNEL, "chatty", true, false), CHANNEL, false)
            .await
        else {
            return;
        };
        let channel_id = joined.channel_id;
        let mut seq = 0;
        while !ctx.stopped() {
            seq += 1;
            tally.attempts.fetch_add(1, Ordering::Relaxed);
            let m = pb::ChatMessage {
                channel_id,
                seq,
                payload: vec![b'x'; 200],
                ..Default::default()
            };
            // Bounded: a paced stream blocks here, as flow control intends.
            match tokio::time::timeout(Duration::from_millis(100), c.try_send(CK::Message(m))).await
            {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {}
            }
        }
        ep.close(0u32.into(), b"");
    })
}

/// Junk, foreign-track and over-rate media from a joined publisher; when
/// the edge closes it, it reconnects and starts again.
fn datagram_flood(ctx: Arc<Ctx>, tally: Arc<Tally>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(ep) = endpoint_at(Ipv4Addr::new(127, 0, 0, 13)) else {
            return;
        };
        while !ctx.stopped() {
            if flood_one_session(&ctx, &tally, &ep).await.is_err() {
                // Refused (e.g. over the connection rate): try again soon.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        ep.close(0u32.into(), b"");
    })
}

async fn flood_one_session(ctx: &Ctx, tally: &Tally, ep: &quinn::Endpoint) -> anyhow::Result<()> {
    let mut c = RawClient::open(ep, ctx.addr, &ctx.ca).await?;
    tally.admitted.fetch_add(1, Ordering::Relaxed);
    // Its own channel, so its valid media reaches nobody in the call.
    let channel = c
        .try_join(token("noise", "noisy", true, true), "noise", false)
        .await?
        .map_err(refused)?
        .channel_id;
    let track = c.try_publish(channel, "flood").await?.map_err(refused)?;
    let junk = Bytes::from(vec![0x42u8; 1000]);
    let mut seq = 0u32;
    while !ctx.stopped() {
        seq += 1;
        // Junk, media for a track this client does not own, and its own
        // media beyond its publishing rate.
        let d = match seq % 3 {
            0 => Ok(junk.clone()),
            1 => MediaHeader {
                channel: ChannelId(channel),
                track: TrackKey(track ^ 0xdead),
                sequence: seq,
                timestamp_us: 0,
            }
            .encode(&junk),
            _ => MediaHeader {
                channel: ChannelId(channel),
                track: TrackKey(track),
                sequence: seq,
                timestamp_us: 0,
            }
            .encode(&junk),
        }
        .unwrap_or_else(|_| junk.clone());
        tally.attempts.fetch_add(1, Ordering::Relaxed);
        c.conn.send_datagram_wait(d).await?;
    }
    Ok(())
}

/// Ten times the lab's clients join at once, each from its own address
/// (127.77.0.0/16) with its own token, in a channel of their own; they
/// stay until the phase ends.
fn join_burst(ctx: Arc<Ctx>, tally: Arc<Tally>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..JOIN_BURST {
            let (ctx, tally) = (ctx.clone(), tally.clone());
            tasks.spawn(async move {
                let ip = Ipv4Addr::new(127, 77, (i / 250) as u8, (i % 250 + 1) as u8);
                let Ok(ep) = endpoint_at(ip) else { return };
                tally.attempts.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let joined = async {
                    let mut c = RawClient::open(&ep, ctx.addr, &ctx.ca).await?;
                    let user = format!("burst{i}");
                    c.try_join(token("burst", &user, false, true), "burst", true)
                        .await?
                        .map_err(refused)?;
                    anyhow::Ok(c)
                };
                if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(10), joined).await {
                    tally.admitted.fetch_add(1, Ordering::Relaxed);
                    tally
                        .took_ms
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(started.elapsed().as_secs_f64() * 1000.0);
                    while !ctx.stopped() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    c.conn.close(0, b"");
                }
                ep.close(0u32.into(), b"");
            });
        }
        while tasks.join_next().await.is_some() {}
    })
}

const ATTACKS: &[(&str, Attack)] = &[
    ("handshake_flood", handshake_flood),
    ("connection_flood", connection_flood),
    ("forged_tokens", forged_tokens),
    ("token_replay", token_replay),
    ("message_flood", message_flood),
    ("datagram_flood", datagram_flood),
    ("join_burst", join_burst),
];

/// The attacks' names, in the order they run.
pub fn attack_names() -> Vec<&'static str> {
    ATTACKS.iter().map(|(n, _)| *n).collect()
}

/// Run the baseline, then each attack in `only` (all when empty).
pub async fn run(p: Params, only: &[String]) -> anyhow::Result<Report> {
    let pki = DevPki::new()?;
    let mut cfg = EdgeConfig::dev(1, APP, SECRET);
    cfg.admission = AdmissionSection::default();
    let wan = Wan::new(vec![LinkRule {
        from: "0.0.0.0/0".parse()?,
        to: SPOOFED_NET.parse()?,
        profile: LinkProfile {
            down: true,
            ..LinkProfile::default()
        },
    }])
    .map_err(anyhow::Error::msg)?;
    let edge = Edge::start(
        cfg,
        EdgeOptions {
            tls: Some(pki.material(&["localhost".into()])?),
            client_cert: Some(pki.client_cert(&["localhost".into()])?),
            socket: Some(wan.hook()),
            ..Default::default()
        },
    )
    .await?;
    let ca = pki.ca_der();
    let call = Call::start(edge.addr(), &ca).await?;
    let mut seq = 0;
    // Warm up, then the baseline.
    call.measure(Duration::from_millis(300), &mut seq).await;
    let (b50, b99, bloss) = call.measure(p.phase, &mut seq).await;
    let baseline = Phase {
        name: "baseline".into(),
        attempts: 0,
        admitted: 0,
        action_p50_ms: f64::NAN,
        action_p99_ms: f64::NAN,
        counted: vec![],
        legit_p50_ms: b50,
        legit_p99_ms: b99,
        legit_loss: bloss,
        p99_ratio: 1.0,
    };
    let mut attacks = vec![];
    for (name, attack) in ATTACKS {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let ctx = Arc::new(Ctx {
            addr: edge.addr(),
            ca: ca.clone(),
            stop: AtomicBool::new(false),
            spoofed_sources: p.spoofed_sources,
        });
        let tally = Arc::new(Tally::default());
        let before = counters();
        let task = attack(ctx.clone(), tally.clone());
        // Let the attack ramp up before measuring.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (p50, p99, loss) = call.measure(p.phase, &mut seq).await;
        ctx.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        let mut took = tally
            .took_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        attacks.push(Phase {
            name: (*name).into(),
            attempts: tally.attempts.load(Ordering::Relaxed),
            admitted: tally.admitted.load(Ordering::Relaxed),
            action_p50_ms: percentile(&mut took, 50.0).unwrap_or(f64::NAN),
            action_p99_ms: percentile(&mut took, 99.0).unwrap_or(f64::NAN),
            counted: delta(&before, &counters()),
            legit_p50_ms: p50,
            legit_p99_ms: p99,
            legit_loss: loss,
            p99_ratio: p99 / b99,
        });
        // Let the edge settle (handshakes time out) before the next one.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    edge.kill().await;
    Ok(Report { baseline, attacks })
}

pub fn print(r: &Report) {
    println!("abuse benchmark: one edge, production admission defaults; a legitimate call measured during each attack");
    println!(
        "{:<17} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9}",
        "phase", "attempts", "admitted", "p50 ms", "p99 ms", "loss", "p99/base"
    );
    for ph in std::iter::once(&r.baseline).chain(&r.attacks) {
        println!(
            "{:<17} {:>9} {:>9} {:>9.2} {:>9.2} {:>6.2}% {:>9.2}",
            ph.name,
            ph.attempts,
            ph.admitted,
            ph.legit_p50_ms,
            ph.legit_p99_ms,
            ph.legit_loss * 100.0,
            ph.p99_ratio
        );
        if !ph.action_p50_ms.is_nan() {
            println!(
                "    each admitted action took p50 {:.1} ms, p99 {:.1} ms",
                ph.action_p50_ms, ph.action_p99_ms
            );
        }
        for (k, v) in &ph.counted {
            println!("    {k} +{v}");
        }
    }
}
