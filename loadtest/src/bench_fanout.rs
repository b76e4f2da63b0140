//! Fan-out: one publisher to many subscribers spread over several edges.
//!
//! In-process edges on static routes (every edge knows every other; the
//! publisher's edge reaches the last `relayed` edges through the first other
//! edge, so one relay also forwards what it receives). The subscribers are
//! raw QUIC sessions, dealt to the edges in turn; the publisher sits on the
//! first edge and sends `pps` media packets a second.
//!
//! Figures: delivery (packets received / packets published x subscribers,
//! duplicates counted apart), CPU per delivered Mbit/s (the whole process,
//! and the edges' own runtime threads alone), and what each overlay link
//! carried, which must be each published packet exactly once: the ingress
//! edge sends one source-routed tree, so no link may carry a packet twice.
//! Link counts come from the edges' per-peer relay counters
//! (`rtn_edge_peer_media_packets_total`) when the edges export them, and
//! otherwise from each receiving edge's relay-ingress total
//! (`rtn_edge_media_packets_total{dir="in",link="relay"}`): in a tree every
//! edge has one parent, so what an edge received from the overlay is what
//! the link from its parent carried.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::datagram::MediaHeader;
use protocol::{ChannelId, EdgeId, TrackKey};

use crate::bench_util::{
    cpu_now, hold_session, join_many, publisher, start_mesh_apart, stop_mesh_apart,
    udp_rcvbuf_errors,
};
use testkit::mesh::Mesh;
use testkit::scrape::{edge_metrics, has_metric, metric_by, metric_in};

/// Sequence numbers of measured packets start here; below are warm-up ones.
const MEASURED_BASE: u32 = 1 << 20;
const CHANNEL: &str = "fanout";
const PEER_COUNTER: &str = "rtn_edge_peer_media_packets_total";

#[derive(Clone, Debug)]
pub struct Params {
    pub subscribers: usize,
    pub edges: usize,
    /// Edges (counted from the last) the publisher's edge reaches through
    /// the second edge instead of directly.
    pub relayed: usize,
    pub pps: u32,
    pub payload: usize,
    pub duration: Duration,
    /// Quiet time before publishing, to measure the idle sessions' CPU.
    pub idle_for: Duration,
    /// Edge ids are `first_edge_id..`; distinct ids keep the process-wide
    /// counters of concurrent runs (tests) apart.
    pub first_edge_id: EdgeId,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            subscribers: 1_000,
            edges: 4,
            relayed: 1,
            pps: 50,
            payload: 1_000,
            duration: Duration::from_secs(10),
            idle_for: Duration::from_secs(2),
            first_edge_id: 1,
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct LinkCount {
    pub from: EdgeId,
    pub to: EdgeId,
    /// Whether the tree needs this link (an edge with subscribers beyond it).
    pub needed: bool,
    /// Packets counted on the link; `sent` by `from` and `received` by `to`
    /// where the edges export per-peer counters, else both are `to`'s relay
    /// ingress.
    pub sent: u64,
    pub received: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub edges: usize,
    pub subscribers: usize,
    pub pps: u32,
    pub payload_bytes: usize,
    pub seconds: f64,
    pub setup_seconds: f64,
    pub published: u64,
    pub expected: u64,
    pub delivered: u64,
    pub delivery_ratio: f64,
    /// Packets a subscriber received more than once.
    pub duplicates: u64,
    pub subscribers_complete: usize,
    pub worst_subscriber_ratio: f64,
    pub delivered_mbps: f64,
    /// CPU cores used (CPU seconds per second) while publishing.
    pub process_cores: f64,
    pub edge_cores: f64,
    /// The same while the sessions sat idle before publishing.
    pub idle_process_cores: f64,
    pub idle_edge_cores: f64,
    /// Percent of one core per delivered Mbit/s.
    pub process_core_pct_per_mbps: f64,
    pub edge_core_pct_per_mbps: f64,
    /// Edge CPU per delivered packet.
    pub edge_cpu_us_per_delivery: f64,
    /// Media the edges handed to subscriber connections while measuring
    /// (quinn may still drop some before they leave).
    pub edge_sent_to_subscribers: u64,
    /// Media the edges dropped while measuring, by reason.
    pub edge_drops: BTreeMap<String, u64>,
    /// UDP datagrams the kernel dropped for full receive buffers while
    /// measuring, on the whole host.
    pub host_udp_rcvbuf_drops: Option<u64>,
    /// Where link counts come from: "per-peer counters" or "relay ingress".
    pub link_counter: String,
    pub links: Vec<LinkCount>,
    /// Largest count on any link, over packets published (1.0: once).
    pub max_link_ratio: f64,
    /// Every needed link carried each packet exactly once, others none.
    pub once_per_link: bool,
}

#[derive(Default)]
struct SubStats {
    warm: AtomicBool,
    got: AtomicU64,
    dups: AtomicU64,
}

/// Per-link packet counts (sent, received) from the edges' counters.
fn link_counts(text: &str, links: &[(EdgeId, EdgeId)], per_peer: bool) -> Vec<(u64, u64)> {
    links
        .iter()
        .map(|(from, to)| {
            let (f, t) = (from.to_string(), to.to_string());
            if per_peer {
                let sent = metric_in(
                    text,
                    PEER_COUNTER,
                    &[("edge", &f), ("peer", &t), ("dir", "out")],
                );
                let recv = metric_in(
                    text,
                    PEER_COUNTER,
                    &[("edge", &t), ("peer", &f), ("dir", "in")],
                );
                (sent as u64, recv as u64)
            } else {
                let recv = metric_in(
                    text,
                    "rtn_edge_media_packets_total",
                    &[("edge", &t), ("dir", "in"), ("link", "relay")],
                ) as u64;
                (recv, recv)
            }
        })
        .collect()
}

/// Media the edges sent to their clients, and what they dropped by reason.
fn edge_side(text: &str, ids: &[EdgeId]) -> (u64, BTreeMap<String, u64>) {
    let mut out = 0.0;
    let mut drops: BTreeMap<String, u64> = BTreeMap::new();
    for id in ids {
        let e = id.to_string();
        out += metric_in(
            text,
            "rtn_edge_media_packets_total",
            &[("edge", &e), ("dir", "out"), ("link", "client")],
        );
        for (reason, n) in metric_by(
            text,
            "rtn_edge_media_dropped_total",
            &[("edge", &e)],
            "reason",
        ) {
            *drops.entry(reason).or_insert(0) += n as u64;
        }
    }
    (out as u64, drops)
}

pub async fn run(p: Params) -> anyhow::Result<Report> {
    anyhow::ensure!(p.edges >= 1 && p.subscribers >= 1 && p.pps >= 1);
    let ids: Vec<EdgeId> = (0..p.edges as u32).map(|i| p.first_edge_id + i).collect();
    let (edge_rt, mesh) = start_mesh_apart(&ids, |c| {
        c.limits.max_sessions = 100_000;
        // A subscriber's first warm-up packets may wait while the
        // directory settles; keep them.
        c.limits.subscriber_queue = 1_024;
    })
    .await?;
    let result = measure(&p, &mesh, &ids).await;
    stop_mesh_apart(edge_rt, mesh).await;
    result
}

async fn measure(p: &Params, mesh: &Mesh, ids: &[EdgeId]) -> anyhow::Result<Report> {
    let home = ids[0];
    // Paths from the publisher's edge: directly, except the last `relayed`
    // edges, reached through the second edge.
    let relay = ids.get(1).copied();
    let relayed = if ids.len() >= 3 {
        p.relayed.min(ids.len() - 2)
    } else {
        0
    };
    let mut parent: BTreeMap<EdgeId, EdgeId> = BTreeMap::new();
    let mut paths = vec![];
    for (i, &e) in ids.iter().enumerate().skip(1) {
        match relay {
            Some(r) if i >= ids.len() - relayed => {
                paths.push(vec![home, r, e]);
                parent.insert(e, r);
            }
            _ => {
                paths.push(vec![home, e]);
                parent.insert(e, home);
            }
        }
    }
    let paths: Vec<&[EdgeId]> = paths.iter().map(Vec::as_slice).collect();
    mesh.set_paths(home, &paths);

    let ca = mesh.pki.ca_der();
    let addrs: Vec<_> = mesh.edges.iter().map(|e| e.addr()).collect();
    let setup = Instant::now();
    let endpoints = p.subscribers.div_ceil(125).max(1);
    let (subs, _eps) = join_many(p.subscribers, endpoints, 32, &ca, |i| {
        (addrs[i % addrs.len()], CHANNEL.into(), format!("sub-{i}"))
    })
    .await?;
    let (publ, _publisher_ep, channel, track) = publisher(&ca, addrs[0], CHANNEL).await?;
    let tx = publ.conn.clone();
    let mut holders = vec![hold_session(publ, Duration::from_secs(2))];

    // Edges that host subscribers, and so the links the tree needs.
    let receiving: HashSet<EdgeId> = (0..p.subscribers.min(ids.len()))
        .map(|i| ids[i])
        .filter(|e| *e != home)
        .collect();
    let needed = |e: EdgeId| {
        receiving.contains(&e)
            || parent
                .iter()
                .any(|(c, par)| *par == e && receiving.contains(c))
    };

    let stats: Vec<Arc<SubStats>> = (0..subs.len()).map(|_| Arc::default()).collect();
    let mut readers = vec![];
    for (c, st) in subs.into_iter().zip(stats.iter().cloned()) {
        let conn = c.conn.clone();
        holders.push(hold_session(c, Duration::from_secs(2)));
        readers.push(tokio::spawn(async move {
            let mut seen = HashSet::new();
            while let Ok(d) = conn.read_datagram().await {
                let Ok(h) = MediaHeader::decode(&d) else {
                    continue;
                };
                if h.sequence < MEASURED_BASE {
                    st.warm.store(true, Ordering::Relaxed);
                } else if seen.insert(h.sequence) {
                    st.got.fetch_add(1, Ordering::Relaxed);
                } else {
                    st.dups.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let header = MediaHeader {
        channel: ChannelId(channel),
        track: TrackKey(track),
        sequence: 0,
        timestamp_us: 0,
    };
    let body = vec![0u8; p.payload];
    let datagram_len = header.encode(&body)?.len();

    // Warm-up: publish until every subscriber has had a packet (the
    // directory has reached every edge), for at most 20 s.
    let period = Duration::from_secs_f64(1.0 / p.pps as f64);
    let mut tick = tokio::time::interval(period);
    let warm_deadline = Instant::now() + Duration::from_secs(20);
    let mut seq = 0u32;
    while stats.iter().any(|s| !s.warm.load(Ordering::Relaxed)) {
        anyhow::ensure!(
            Instant::now() < warm_deadline,
            "warm-up: {} of {} subscribers never got a packet",
            stats
                .iter()
                .filter(|s| !s.warm.load(Ordering::Relaxed))
                .count(),
            stats.len()
        );
        tick.tick().await;
        tx.send_datagram_wait(header_with(header, seq).encode(&body)?)
            .await?;
        seq = (seq + 1) % MEASURED_BASE;
    }
    let setup_seconds = setup.elapsed().as_secs_f64();

    // Idle baseline (also lets the last warm-up packets drain).
    let (c0, e0) = cpu_now();
    let idle_start = Instant::now();
    tokio::time::sleep(p.idle_for.max(Duration::from_millis(300))).await;
    let (c1, e1) = cpu_now();
    let idle_wall = idle_start.elapsed().as_secs_f64();

    let links: Vec<(EdgeId, EdgeId)> = parent.iter().map(|(c, par)| (*par, *c)).collect();
    let before_text = edge_metrics();
    let per_peer = has_metric(&before_text, PEER_COUNTER);
    let before = link_counts(&before_text, &links, per_peer);
    let (out0, drops0) = edge_side(&before_text, ids);
    let udp0 = udp_rcvbuf_errors();

    // Measured publishing.
    let start = Instant::now();
    let (c2, e2) = cpu_now();
    let mut published = 0u64;
    let mut tick = tokio::time::interval(period);
    while start.elapsed() < p.duration {
        tick.tick().await;
        let pkt = header_with(header, MEASURED_BASE + published as u32).encode(&body)?;
        tx.send_datagram_wait(pkt).await?;
        published += 1;
    }
    let wall = start.elapsed().as_secs_f64();
    let (c3, e3) = cpu_now();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let after_text = edge_metrics();
    let after = link_counts(&after_text, &links, per_peer);
    let (out1, drops1) = edge_side(&after_text, ids);
    let udp_drops = udp_rcvbuf_errors()
        .zip(udp0)
        .map(|(a, b)| a.saturating_sub(b));
    let edge_drops: BTreeMap<String, u64> = drops1
        .into_iter()
        .map(|(r, n)| {
            let d = n - drops0.get(&r).copied().unwrap_or(0);
            (r, d)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    for r in readers {
        r.abort();
    }
    for h in holders {
        h.abort();
    }

    let per_sub: Vec<u64> = stats
        .iter()
        .map(|s| s.got.load(Ordering::Relaxed))
        .collect();
    let delivered: u64 = per_sub.iter().sum();
    let duplicates: u64 = stats.iter().map(|s| s.dups.load(Ordering::Relaxed)).sum();
    let expected = published * per_sub.len() as u64;
    let worst = per_sub.iter().copied().min().unwrap_or(0);
    let delivered_mbps = delivered as f64 * datagram_len as f64 * 8.0 / 1e6 / wall;
    let (pc, ec) = ((c3 - c2) / wall, (e3 - e2) / wall);
    let link_rows: Vec<LinkCount> = links
        .iter()
        .zip(before.iter().zip(after.iter()))
        .map(|((from, to), (b, a))| LinkCount {
            from: *from,
            to: *to,
            needed: needed(*to),
            sent: a.0 - b.0,
            received: a.1 - b.1,
        })
        .collect();
    let max_link = link_rows
        .iter()
        .map(|l| l.sent.max(l.received))
        .max()
        .unwrap_or(0);
    let once_per_link = link_rows.iter().all(|l| {
        let want = if l.needed { published } else { 0 };
        l.sent == want && l.received == want
    });
    Ok(Report {
        edges: ids.len(),
        subscribers: per_sub.len(),
        pps: p.pps,
        payload_bytes: p.payload,
        seconds: wall,
        setup_seconds,
        published,
        expected,
        delivered,
        delivery_ratio: delivered as f64 / expected.max(1) as f64,
        duplicates,
        subscribers_complete: per_sub.iter().filter(|&&g| g == published).count(),
        worst_subscriber_ratio: worst as f64 / published.max(1) as f64,
        delivered_mbps,
        process_cores: pc,
        edge_cores: ec,
        idle_process_cores: (c1 - c0) / idle_wall,
        idle_edge_cores: (e1 - e0) / idle_wall,
        process_core_pct_per_mbps: 100.0 * pc / delivered_mbps.max(1e-9),
        edge_core_pct_per_mbps: 100.0 * ec / delivered_mbps.max(1e-9),
        edge_cpu_us_per_delivery: (e3 - e2) * 1e6 / delivered.max(1) as f64,
        edge_sent_to_subscribers: out1 - out0,
        edge_drops,
        host_udp_rcvbuf_drops: udp_drops,
        link_counter: if per_peer {
            "per-peer counters".into()
        } else {
            "relay ingress".into()
        },
        links: link_rows,
        max_link_ratio: max_link as f64 / published.max(1) as f64,
        once_per_link,
    })
}

fn header_with(h: MediaHeader, sequence: u32) -> MediaHeader {
    MediaHeader { sequence, ..h }
}

/// Print a report as the `bench fanout` subcommand does.
pub fn print(r: &Report) {
    println!(
        "fan-out benchmark: 1 publisher -> {} subscribers over {} edges ({} pkt/s, {} B payload, {:.1} s; loopback, one process)",
        r.subscribers, r.edges, r.pps, r.payload_bytes, r.seconds
    );
    println!(
        "  setup (connect, join, directory)  : {:.1} s",
        r.setup_seconds
    );
    println!(
        "  delivered / expected              : {} / {} = {:.4}  (duplicates {}, complete subscribers {}/{}, worst {:.3})",
        r.delivered,
        r.expected,
        r.delivery_ratio,
        r.duplicates,
        r.subscribers_complete,
        r.subscribers,
        r.worst_subscriber_ratio
    );
    println!(
        "  delivered                         : {:.1} Mbit/s",
        r.delivered_mbps
    );
    println!(
        "  edges handed to subscribers       : {}  (edge drops {:?}; host UDP receive-buffer drops {})",
        r.edge_sent_to_subscribers,
        r.edge_drops,
        r.host_udp_rcvbuf_drops
            .map(|n| n.to_string())
            .unwrap_or_else(|| "n/a".into())
    );
    println!(
        "  CPU, whole process (edges+clients): {:.3} cores ({:.3} idle) = {:.3} % of a core per delivered Mbit/s",
        r.process_cores, r.idle_process_cores, r.process_core_pct_per_mbps
    );
    println!(
        "  CPU, edge threads only            : {:.3} cores ({:.3} idle) = {:.3} % of a core per delivered Mbit/s, {:.2} us per delivered packet",
        r.edge_cores, r.idle_edge_cores, r.edge_core_pct_per_mbps, r.edge_cpu_us_per_delivery
    );
    println!(
        "  overlay links ({}; {} packets published):",
        r.link_counter, r.published
    );
    for l in &r.links {
        println!(
            "    edge {:>3} -> edge {:>3} : sent {:>7}  received {:>7}  per packet {:.3}{}",
            l.from,
            l.to,
            l.sent,
            l.received,
            l.sent.max(l.received) as f64 / r.published.max(1) as f64,
            if l.needed {
                ""
            } else {
                "  (no subscribers beyond)"
            }
        );
    }
    println!(
        "  each link carried each packet once: {}  (max per link / published = {:.3})",
        if r.once_per_link { "yes" } else { "NO" },
        r.max_link_ratio
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_counts_from_either_counter() {
        let text = "rtn_edge_peer_media_packets_total{edge=\"1\",peer=\"2\",dir=\"out\"} 7\n\
                    rtn_edge_peer_media_packets_total{edge=\"2\",peer=\"1\",dir=\"in\"} 6\n\
                    rtn_edge_media_packets_total{edge=\"2\",dir=\"in\",link=\"relay\"} 9\n";
        assert!(has_metric(text, PEER_COUNTER));
        assert_eq!(link_counts(text, &[(1, 2)], true), vec![(7, 6)]);
        assert_eq!(link_counts(text, &[(1, 2)], false), vec![(9, 9)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tiny_fanout_reaches_everyone_once_per_link() {
        let r = run(Params {
            subscribers: 5,
            edges: 3,
            relayed: 1,
            pps: 50,
            payload: 200,
            duration: Duration::from_secs(1),
            idle_for: Duration::from_millis(300),
            first_edge_id: 9_101,
        })
        .await
        .unwrap();
        print(&r);
        assert_eq!(r.subscribers, 5);
        assert!(r.published > 0);
        assert_eq!(r.expected, r.published * 5);
        assert_eq!(
            r.delivered, r.expected,
            "loopback at tiny scale loses nothing"
        );
        assert_eq!(r.delivery_ratio, 1.0);
        assert_eq!(r.duplicates, 0);
        assert_eq!(r.subscribers_complete, 5);
        assert_eq!(r.edge_sent_to_subscribers, r.expected);
        assert!(r.edge_drops.is_empty(), "{:?}", r.edge_drops);
        // Edge 9101 (publisher's) -> 9102 directly, -> 9103 through 9102.
        let pairs: Vec<_> = r.links.iter().map(|l| (l.from, l.to)).collect();
        assert_eq!(pairs, vec![(9_101, 9_102), (9_102, 9_103)]);
        assert!(r.once_per_link, "{:?}", r.links);
        assert_eq!(r.max_link_ratio, 1.0);
        assert!(r.delivered_mbps > 0.0 && r.process_cores >= 0.0 && r.edge_cores >= 0.0);
    }
}
