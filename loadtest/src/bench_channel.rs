//! A big broadcast channel: one publisher and N viewers spread over many
//! edges (the "big channels" issue: 10,000 members over 50 edges set up in
//! under 5 s, directory refresh costs bounded, membership events to clients
//! batched or summarised).
//!
//! In-process edges on full-mesh routes, on a runtime of their own (their
//! CPU is counted apart); the viewers are raw QUIC sessions dealt to the
//! edges in turn; the publisher sits on the first edge. Phases:
//!
//! - **connect**: open the N viewer sessions (QUIC + TLS handshakes and the
//!   control stream, no join). Reported apart: handshakes are not channel
//!   setup. The edges' join timeout is raised so sessions opened early
//!   survive a long connect phase.
//! - the publisher joins, publishes a track and sends media at `pps` for the
//!   rest of the run.
//! - **join**: every viewer sends `Join` (subscribe to all), at most
//!   `join_parallel` waiting for their `Joined` at a time. Per viewer, the
//!   Join -> Joined latency. `setup_seconds` runs from the first `Join` sent
//!   until every viewer has (a) its `Joined`, (b) learnt that the channel
//!   has N + 1 members, and (c) received a media datagram of the publisher;
//!   after `setup_timeout` the run fails, saying how many viewers lacked
//!   which.
//! - **steady**: `steady` seconds after setup, media still flowing: the
//!   directory traffic each edge writes to its peers per second
//!   (`rtn_edge_relay_frame_bytes_total`, kinds `directory_report` and
//!   `directory_update`), edge and process CPU.
//!
//! What a viewer knows of the member count (docs/protocol.md §4.3, "Large
//! channels"): in a large channel, the last `Joined.member_count` or
//! `MemberCount.members`; in a small one, the members listed (those of
//! `Joined.members`, plus `MemberJoined`, minus `MemberLeft`, by session)
//! and itself. The channel here only grows; a channel going from large back
//! to small (`MemberCount{large: false}`) is followed by `MemberJoined` for
//! the members not listed, which this count does not tell from new ones.
//!
//! Per viewer, the control frames received during join and during steady
//! are counted (frames and bytes on the stream, length prefix included) by
//! kind: `MemberJoined`, `MemberLeft`, `MemberCount`, `Joined` and the rest
//! (`KeepaliveAck`, answers to the viewer's own keepalives, is not counted).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::datagram::MediaHeader;
use protocol::pb::{self, client_frame::Kind as CK, server_frame::Kind as SK};
use protocol::{ChannelId, EdgeId, TrackKey};

use crate::bench_util::{
    cpu_now, hold, hold_session, open_many, publisher, start_mesh_apart, stop_mesh_apart,
};
use crate::stats::percentile;
use testkit::mesh::Mesh;
use testkit::quic::{refused, RawClient};
use testkit::scrape::{edge_metrics, has_metric, metric_in};
use testkit::tokens::token;

const CHANNEL: &str = "big-channel";
/// The edges' counter of relay frame bytes, by kind.
const FRAME_BYTES: &str = "rtn_edge_relay_frame_bytes_total";
/// Relay frame kinds that are directory traffic.
const DIRECTORY_KINDS: [&str; 2] = ["directory_report", "directory_update"];
/// Kinds of control frames counted per viewer, in [`Tally`]'s order.
pub const FRAME_KINDS: [&str; 5] = [
    "member_joined",
    "member_left",
    "member_count",
    "joined",
    "other",
];
/// Request id of a viewer's one `Join`.
const JOIN_REQUEST: u32 = 1;
/// Keepalive period of every session.
const KEEPALIVE: Duration = Duration::from_secs(2);
/// "Not yet" in a viewer's timestamps.
const NEVER: u64 = u64::MAX;

#[derive(Clone, Debug)]
pub struct Params {
    /// Viewers (the channel has one member more: the publisher).
    pub members: usize,
    pub edges: usize,
    /// Media packets per second from the publisher.
    pub pps: u32,
    pub payload: usize,
    /// Seconds measured after setup.
    pub steady: Duration,
    /// Joins waiting for their `Joined` at once.
    pub join_parallel: usize,
    /// Handshakes at once in the connect phase.
    pub connect_parallel: usize,
    /// Setup fails after this long.
    pub setup_timeout: Duration,
    /// Edge ids are `first_edge_id..`; distinct ids keep the process-wide
    /// counters of concurrent runs (tests) apart.
    pub first_edge_id: EdgeId,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            members: 10_000,
            edges: 50,
            pps: 50,
            payload: 100,
            steady: Duration::from_secs(10),
            join_parallel: 1_000,
            connect_parallel: 64,
            setup_timeout: Duration::from_secs(60),
            first_edge_id: 1,
        }
    }
}

/// Mean and largest value over viewers (or edges).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct MeanMax {
    pub mean: f64,
    pub max: f64,
}

impl MeanMax {
    pub fn of(values: impl IntoIterator<Item = f64>) -> MeanMax {
        let (mut n, mut sum, mut max) = (0usize, 0.0, 0.0f64);
        for v in values {
            n += 1;
            sum += v;
            max = max.max(v);
        }
        MeanMax {
            mean: if n == 0 { 0.0 } else { sum / n as f64 },
            max,
        }
    }
}

/// Control frames one viewer received in a phase, of one kind or all.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct FrameFigures {
    /// Frames per viewer.
    pub frames: MeanMax,
    /// Bytes per viewer.
    pub bytes: MeanMax,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PhaseFrames {
    pub total: FrameFigures,
    /// By kind ([`FRAME_KINDS`]).
    pub by_kind: BTreeMap<String, FrameFigures>,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub viewers: usize,
    pub edges: usize,
    pub pps: u32,
    pub payload_bytes: usize,
    /// Opening the viewer sessions (handshakes), before any join.
    pub connect_seconds: f64,
    /// First `Join` sent until every viewer had its `Joined`, the member
    /// count and media.
    pub setup_seconds: f64,
    /// The same until each criterion alone was met by every viewer.
    pub all_joined_seconds: f64,
    pub all_counted_seconds: f64,
    pub all_media_seconds: f64,
    /// Join -> Joined per viewer.
    pub join_latency: Latency,
    /// Viewers whose count came from a large channel's `MemberCount` or
    /// `Joined.member_count` (the others counted the members listed).
    pub viewers_counted_large: usize,
    /// Each edge's directory frames to its peers, per second.
    pub setup_directory_bytes_per_s_per_edge: MeanMax,
    pub steady_directory_bytes_per_s_per_edge: MeanMax,
    /// Each edge's relay frame bytes per second while steady, by kind.
    pub steady_relay_bytes_per_s_per_edge: BTreeMap<String, MeanMax>,
    /// Whether the edges export [`FRAME_BYTES`] (else directory figures are 0).
    pub frame_bytes_counter: bool,
    pub setup_edge_cores: f64,
    pub setup_process_cores: f64,
    pub steady_seconds: f64,
    pub steady_edge_cores: f64,
    pub steady_process_cores: f64,
    /// Media packets per viewer while steady, over those published then.
    pub steady_media_delivery: MeanMax,
    pub steady_media_worst_viewer: f64,
    pub join_frames: PhaseFrames,
    pub steady_frames: PhaseFrames,
    /// Whole directory entries asked for or resent over every edge
    /// (`rtn_edge_directory_resyncs_total`), by event, during setup and
    /// while steady: lost or crossed directory frames cost these.
    pub setup_resyncs: BTreeMap<String, f64>,
    pub steady_resyncs: BTreeMap<String, f64>,
}

/// The events of `rtn_edge_directory_resyncs_total`.
const RESYNC_EVENTS: [&str; 3] = ["home_lacked_entry", "own_entry_resent", "entries_wanted"];

/// Each resync event's count over every edge between two scrapes.
fn resyncs(before: &str, after: &str) -> BTreeMap<String, f64> {
    let count = |text: &str, event: &str| {
        metric_in(
            text,
            "rtn_edge_directory_resyncs_total",
            &[("event", event)],
        )
    };
    RESYNC_EVENTS
        .iter()
        .map(|&e| (e.to_string(), count(after, e) - count(before, e)))
        .collect()
}

/// What one viewer has seen; written by its tasks, read by the run.
struct Viewer {
    /// Microseconds since the run's base: Join sent, Joined, count learnt,
    /// first media ([`NEVER`]: not yet).
    join_sent: AtomicU64,
    joined: AtomicU64,
    counted: AtomicU64,
    media: AtomicU64,
    counted_large: AtomicBool,
    /// The last count it knew (for the error when it never got there).
    known: AtomicU64,
    /// [phase][kind]: frames and bytes; phase 0 join, 1 steady.
    frames: [[AtomicU64; 5]; 2],
    bytes: [[AtomicU64; 5]; 2],
    media_packets: [AtomicU64; 2],
}

impl Default for Viewer {
    fn default() -> Self {
        Viewer {
            join_sent: AtomicU64::new(NEVER),
            joined: AtomicU64::new(NEVER),
            counted: AtomicU64::new(NEVER),
            media: AtomicU64::new(NEVER),
            counted_large: AtomicBool::new(false),
            known: AtomicU64::new(0),
            frames: Default::default(),
            bytes: Default::default(),
            media_packets: Default::default(),
        }
    }
}

/// What all viewers share: the time base, the phase and the target.
struct Run {
    base: Instant,
    /// 0 join, 1 steady, 2 over (nothing counted).
    phase: AtomicUsize,
    /// Members the channel must reach: viewers + publisher.
    target: u64,
    track: u64,
}

impl Run {
    fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }
}

/// Set a timestamp once.
fn mark(at: &AtomicU64, now: u64) {
    let _ = at.compare_exchange(NEVER, now, Ordering::Relaxed, Ordering::Relaxed);
}

/// Bytes of a server frame on the control stream: its varint length prefix
/// and the frame (a `ServerFrame` is its oneof alone).
fn frame_bytes(k: &SK) -> u64 {
    let len = k.encoded_len() as u64;
    let prefix = (64 - len.max(1).leading_zeros() as u64).div_ceil(7);
    prefix + len
}

fn kind_index(k: &SK) -> Option<usize> {
    Some(match k {
        SK::MemberJoined(_) => 0,
        SK::MemberLeft(_) => 1,
        SK::MemberCount(_) => 2,
        SK::Joined(_) => 3,
        SK::KeepaliveAck(_) => return None,
        _ => 4,
    })
}

/// A viewer's view of the channel's membership (see the module docs).
struct Tally {
    viewer: Arc<Viewer>,
    run: Arc<Run>,
    large: bool,
    /// Large: the last count the edge gave.
    reported: u64,
    /// Small: the member sessions listed (not this one).
    listed: HashSet<u64>,
}

impl Tally {
    fn new(viewer: Arc<Viewer>, run: Arc<Run>) -> Tally {
        Tally {
            viewer,
            run,
            large: false,
            reported: 0,
            listed: HashSet::new(),
        }
    }

    fn frame(&mut self, k: &SK) {
        let phase = self.run.phase.load(Ordering::Relaxed);
        if let (Some(i), true) = (kind_index(k), phase < 2) {
            self.viewer.frames[phase][i].fetch_add(1, Ordering::Relaxed);
            self.viewer.bytes[phase][i].fetch_add(frame_bytes(k), Ordering::Relaxed);
        }
        match k {
            SK::Joined(j) => {
                self.large = j.large;
                self.reported = j.member_count;
                if !j.large {
                    self.listed.extend(j.members.iter().map(|m| m.session));
                }
            }
            SK::MemberCount(m) => {
                if m.large && !self.large {
                    self.listed.clear();
                }
                self.large = m.large;
                self.reported = m.members;
            }
            SK::MemberJoined(m) if !self.large => {
                self.listed.insert(m.session);
            }
            SK::MemberLeft(m) if !self.large => {
                self.listed.remove(&m.session);
            }
            _ => return,
        }
        let known = if self.large {
            self.reported
        } else {
            self.listed.len() as u64 + 1
        };
        self.viewer.known.store(known, Ordering::Relaxed);
        if known == self.run.target && self.viewer.counted.load(Ordering::Relaxed) == NEVER {
            self.viewer
                .counted_large
                .store(self.large, Ordering::Relaxed);
            mark(&self.viewer.counted, self.run.now_us());
        }
    }
}

/// A viewer's control stream: join (one of `slots` at a time), then hold
/// the session, tallying every frame. Ends with the connection.
async fn control(
    mut c: RawClient,
    token: String,
    viewer: Arc<Viewer>,
    run: Arc<Run>,
    slots: Arc<tokio::sync::Semaphore>,
) -> anyhow::Result<()> {
    let mut tally = Tally::new(viewer.clone(), run.clone());
    {
        let _slot = slots.acquire().await?;
        mark(&viewer.join_sent, run.now_us());
        c.try_send(CK::Join(pb::Join {
            request_id: JOIN_REQUEST,
            token,
            subscribe_all: true,
            channel: CHANNEL.into(),
            member_edges: vec![],
            unreachable_edge: 0,
        }))
        .await?;
        c.recv_until(|k| {
            tally.frame(&k);
            match k {
                SK::Joined(j) if j.request_id == JOIN_REQUEST => Some(Ok(())),
                SK::Error(e) if e.request_id == JOIN_REQUEST => Some(Err(e)),
                _ => None,
            }
        })
        .await?
        .map_err(refused)?;
        mark(&viewer.joined, run.now_us());
    }
    hold(c, KEEPALIVE, |k| tally.frame(&k)).await;
    Ok(())
}

/// A datagram a viewer received: the publisher's media counts, per phase.
fn on_datagram(d: &[u8], viewer: &Viewer, run: &Run) {
    match MediaHeader::decode(d) {
        Ok(h) if h.track.0 == run.track => {}
        _ => return,
    }
    mark(&viewer.media, run.now_us());
    let phase = run.phase.load(Ordering::Relaxed);
    if phase < 2 {
        viewer.media_packets[phase].fetch_add(1, Ordering::Relaxed);
    }
}

/// Relay frame bytes each edge has written so far, by kind.
fn frame_bytes_by_edge(text: &str, ids: &[EdgeId]) -> Vec<BTreeMap<&'static str, f64>> {
    ids.iter()
        .map(|id| {
            let e = id.to_string();
            edge_node::metrics::RELAY_FRAME_KINDS
                .iter()
                .map(|&k| {
                    (
                        k,
                        metric_in(text, FRAME_BYTES, &[("edge", &e), ("kind", k)]),
                    )
                })
                .collect()
        })
        .collect()
}

/// Per edge, bytes per second of `kinds` between two readings.
fn rates(
    before: &[BTreeMap<&'static str, f64>],
    after: &[BTreeMap<&'static str, f64>],
    kinds: &[&str],
    seconds: f64,
) -> MeanMax {
    MeanMax::of(before.iter().zip(after).map(|(b, a)| {
        let bytes: f64 = kinds
            .iter()
            .map(|k| a.get(k).copied().unwrap_or(0.0) - b.get(k).copied().unwrap_or(0.0))
            .sum();
        bytes / seconds.max(1e-9)
    }))
}

fn phase_frames(viewers: &[Arc<Viewer>], phase: usize) -> PhaseFrames {
    let figures = |kinds: &[usize]| {
        let sum = |v: &[AtomicU64; 5]| -> f64 {
            kinds
                .iter()
                .map(|&i| v[i].load(Ordering::Relaxed) as f64)
                .sum()
        };
        FrameFigures {
            frames: MeanMax::of(viewers.iter().map(|v| sum(&v.frames[phase]))),
            bytes: MeanMax::of(viewers.iter().map(|v| sum(&v.bytes[phase]))),
        }
    };
    PhaseFrames {
        total: figures(&[0, 1, 2, 3, 4]),
        by_kind: FRAME_KINDS
            .iter()
            .enumerate()
            .map(|(i, k)| (k.to_string(), figures(&[i])))
            .collect(),
    }
}

/// Join latencies (ms) as p50 / p99 / max.
fn latency(mut ms: Vec<f64>) -> Latency {
    Latency {
        p50_ms: percentile(&mut ms, 50.0).unwrap_or(0.0),
        p99_ms: percentile(&mut ms, 99.0).unwrap_or(0.0),
        max_ms: percentile(&mut ms, 100.0).unwrap_or(0.0),
    }
}

/// Why setup is not over: how many viewers lack each criterion.
fn missing(viewers: &[Arc<Viewer>]) -> (usize, usize, usize) {
    let lacking = |f: fn(&Viewer) -> &AtomicU64| {
        viewers
            .iter()
            .filter(|v| f(v).load(Ordering::Relaxed) == NEVER)
            .count()
    };
    (
        lacking(|v| &v.joined),
        lacking(|v| &v.counted),
        lacking(|v| &v.media),
    )
}

pub async fn run(p: Params) -> anyhow::Result<Report> {
    anyhow::ensure!(p.edges >= 1 && p.members >= 1 && p.pps >= 1);
    let ids: Vec<EdgeId> = (0..p.edges as u32).map(|i| p.first_edge_id + i).collect();
    let (edge_rt, mesh) = start_mesh_apart(&ids, |c| {
        c.limits.max_sessions = 100_000;
        // Sessions opened at the start of a long connect phase wait for
        // their Join longer than the default 10 s.
        c.limits.join_timeout_ms = 600_000;
    })
    .await?;
    let result = measure(&p, &mesh, &ids).await;
    stop_mesh_apart(edge_rt, mesh).await;
    result
}

async fn measure(p: &Params, mesh: &Mesh, ids: &[EdgeId]) -> anyhow::Result<Report> {
    let ca = mesh.pki.ca_der();
    let addrs: Vec<_> = mesh.edges.iter().map(|e| e.addr()).collect();

    // Connect: handshakes only.
    let started = Instant::now();
    let (clients, _eps) = open_many(
        p.members,
        p.members.div_ceil(125),
        p.connect_parallel,
        &ca,
        |i| addrs[i % addrs.len()],
    )
    .await?;
    let connect_seconds = started.elapsed().as_secs_f64();
    let tokens: Vec<String> = (0..p.members)
        .map(|i| token(CHANNEL, &format!("viewer-{i}"), false, true))
        .collect();

    // The publisher, sending from now on.
    let (publ, _publisher_ep, channel, track) = publisher(&ca, addrs[0], CHANNEL).await?;
    let tx = publ.conn.clone();
    let publisher = hold_session(publ, KEEPALIVE);
    let published = Arc::new(AtomicU64::new(0));
    let sender = {
        let published = published.clone();
        let period = Duration::from_secs_f64(1.0 / p.pps as f64);
        let body = vec![0u8; p.payload];
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            for sequence in 0u32.. {
                tick.tick().await;
                let header = MediaHeader {
                    channel: ChannelId(channel),
                    track: TrackKey(track),
                    sequence,
                    timestamp_us: 0,
                };
                let Ok(pkt) = header.encode(&body) else {
                    return;
                };
                if tx.send_datagram_wait(pkt).await.is_err() {
                    return;
                }
                published.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // Join: every viewer at once, `join_parallel` in flight.
    let run = Arc::new(Run {
        base: Instant::now(),
        phase: AtomicUsize::new(0),
        target: p.members as u64 + 1,
        track,
    });
    let viewers: Vec<Arc<Viewer>> = (0..p.members).map(|_| Arc::default()).collect();
    let slots = Arc::new(tokio::sync::Semaphore::new(p.join_parallel.max(1)));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut tasks = vec![];
    let (cpu0, edge0) = cpu_now();
    let text0 = edge_metrics();
    for ((c, token), v) in clients.into_iter().zip(tokens).zip(&viewers) {
        let (conn, viewer, at) = (c.conn.clone(), v.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            while let Ok(d) = conn.read_datagram().await {
                on_datagram(&d, &viewer, &at);
            }
        }));
        let (v, run, slots, failures) = (v.clone(), run.clone(), slots.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = control(c, token, v, run, slots).await {
                if failures.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(error = %e, "a viewer failed");
                }
            }
        }));
    }
    let stop = |tasks: Vec<tokio::task::JoinHandle<()>>| {
        for t in tasks {
            t.abort();
        }
    };
    let over = loop {
        let (j, c, m) = missing(&viewers);
        if j + c + m == 0 {
            break run.now_us();
        }
        if run.base.elapsed() > p.setup_timeout {
            let mut known: Vec<f64> = viewers
                .iter()
                .filter(|v| v.counted.load(Ordering::Relaxed) == NEVER)
                .map(|v| v.known.load(Ordering::Relaxed) as f64)
                .collect();
            let (lo, hi) = (
                percentile(&mut known, 0.0).unwrap_or(0.0),
                percentile(&mut known, 100.0).unwrap_or(0.0),
            );
            stop(tasks);
            sender.abort();
            publisher.abort();
            anyhow::bail!(
                "channel setup not done after {:.0} s: of {} viewers, {j} had no Joined ({} failed), \
                 {c} never learnt that the channel has {} members (their last counts {lo}..={hi}), \
                 {m} got no media (connecting them took {connect_seconds:.1} s)",
                p.setup_timeout.as_secs_f64(),
                viewers.len(),
                failures.load(Ordering::Relaxed),
                run.target,
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Steady from here on.
    run.phase.store(1, Ordering::Relaxed);
    let (cpu1, edge1) = cpu_now();
    let text1 = edge_metrics();
    let published1 = published.load(Ordering::Relaxed);
    let first_join = viewers
        .iter()
        .map(|v| v.join_sent.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0);
    let setup_wall = (over - first_join) as f64 / 1e6;
    let all = |f: fn(&Viewer) -> &AtomicU64| {
        viewers
            .iter()
            .map(|v| f(v).load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
            .saturating_sub(first_join) as f64
            / 1e6
    };
    let joins: Vec<f64> = viewers
        .iter()
        .map(|v| {
            (v.joined.load(Ordering::Relaxed) - v.join_sent.load(Ordering::Relaxed)) as f64 / 1e3
        })
        .collect();
    let steady_start = Instant::now();
    tokio::time::sleep(p.steady).await;
    run.phase.store(2, Ordering::Relaxed);
    let steady_seconds = steady_start.elapsed().as_secs_f64();
    let (cpu2, edge2) = cpu_now();
    let text2 = edge_metrics();
    let published2 = published.load(Ordering::Relaxed);

    sender.abort();
    publisher.abort();
    stop(tasks);

    let setup_since = (run.base.elapsed().as_secs_f64() - steady_seconds).max(1e-9);
    let (b0, b1, b2) = (
        frame_bytes_by_edge(&text0, ids),
        frame_bytes_by_edge(&text1, ids),
        frame_bytes_by_edge(&text2, ids),
    );
    let steady_published = (published2 - published1).max(1) as f64;
    let delivery = viewers
        .iter()
        .map(|v| v.media_packets[1].load(Ordering::Relaxed) as f64 / steady_published);
    Ok(Report {
        viewers: viewers.len(),
        edges: ids.len(),
        pps: p.pps,
        payload_bytes: p.payload,
        connect_seconds,
        setup_seconds: setup_wall,
        all_joined_seconds: all(|v| &v.joined),
        all_counted_seconds: all(|v| &v.counted),
        all_media_seconds: all(|v| &v.media),
        join_latency: latency(joins),
        viewers_counted_large: viewers
            .iter()
            .filter(|v| v.counted_large.load(Ordering::Relaxed))
            .count(),
        setup_directory_bytes_per_s_per_edge: rates(&b0, &b1, &DIRECTORY_KINDS, setup_since),
        steady_directory_bytes_per_s_per_edge: rates(&b1, &b2, &DIRECTORY_KINDS, steady_seconds),
        steady_relay_bytes_per_s_per_edge: edge_node::metrics::RELAY_FRAME_KINDS
            .iter()
            .map(|&k| (k.to_string(), rates(&b1, &b2, &[k], steady_seconds)))
            .collect(),
        frame_bytes_counter: has_metric(&text2, FRAME_BYTES),
        setup_edge_cores: (edge1 - edge0) / setup_since,
        setup_process_cores: (cpu1 - cpu0) / setup_since,
        steady_seconds,
        steady_edge_cores: (edge2 - edge1) / steady_seconds,
        steady_process_cores: (cpu2 - cpu1) / steady_seconds,
        steady_media_delivery: MeanMax::of(delivery.clone()),
        steady_media_worst_viewer: delivery.fold(f64::INFINITY, f64::min),
        join_frames: phase_frames(&viewers, 0),
        steady_frames: phase_frames(&viewers, 1),
        setup_resyncs: resyncs(&text0, &text1),
        steady_resyncs: resyncs(&text1, &text2),
    })
}

/// Print a report as the `bench channel` subcommand does.
pub fn print(r: &Report) {
    println!(
        "big-channel benchmark: 1 publisher + {} viewers over {} edges ({} pkt/s, {} B payload; loopback, one process)",
        r.viewers, r.edges, r.pps, r.payload_bytes
    );
    let goal = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!("  {:<52} {:>22}   goal", "figure", "value");
    println!(
        "  {:<52} {:>20.2} s   (handshakes, not setup)",
        "connect (QUIC + TLS, no join)", r.connect_seconds
    );
    println!(
        "  {:<52} {:>20.2} s   < 5 s: {}",
        "setup (first Join -> all joined, counted, media)",
        r.setup_seconds,
        goal(r.setup_seconds < 5.0)
    );
    println!(
        "  {:<52} {:>22}",
        "  all Joined / all counted / all media (s)",
        format!(
            "{:.2} / {:.2} / {:.2}",
            r.all_joined_seconds, r.all_counted_seconds, r.all_media_seconds
        )
    );
    println!(
        "  {:<52} {:>22}",
        "Join -> Joined p50 / p99 / max (ms)",
        format!(
            "{:.1} / {:.1} / {:.1}",
            r.join_latency.p50_ms, r.join_latency.p99_ms, r.join_latency.max_ms
        )
    );
    println!(
        "  {:<52} {:>22}",
        "viewers counted as a large channel",
        format!("{} / {}", r.viewers_counted_large, r.viewers)
    );
    let mm = |m: MeanMax| format!("{:.0} / {:.0}", m.mean, m.max);
    let counts = |m: &BTreeMap<String, f64>| {
        RESYNC_EVENTS
            .iter()
            .map(|e| format!("{:.0}", m.get(*e).copied().unwrap_or(0.0)))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    println!(
        "  {:<52} {:>22}",
        "directory resyncs, setup (home lacked / resent / wanted)",
        counts(&r.setup_resyncs)
    );
    println!(
        "  {:<52} {:>22}",
        "directory resyncs, steady (home lacked / resent / wanted)",
        counts(&r.steady_resyncs)
    );
    println!(
        "  {:<52} {:>22}   bounded{}",
        "directory B/s per edge, steady, mean / max",
        mm(r.steady_directory_bytes_per_s_per_edge),
        if r.frame_bytes_counter {
            ""
        } else {
            " (edges export no rtn_edge_relay_frame_bytes_total)"
        }
    );
    println!(
        "  {:<52} {:>22}",
        "directory B/s per edge, setup, mean / max",
        mm(r.setup_directory_bytes_per_s_per_edge)
    );
    for (kind, m) in &r.steady_relay_bytes_per_s_per_edge {
        println!(
            "  {:<52} {:>22}",
            format!("  relay {kind} B/s per edge, steady"),
            mm(*m)
        );
    }
    println!(
        "  {:<52} {:>22}",
        "edge / process CPU cores, setup",
        format!("{:.2} / {:.2}", r.setup_edge_cores, r.setup_process_cores)
    );
    println!(
        "  {:<52} {:>22}",
        format!(
            "edge / process CPU cores, steady ({:.1} s)",
            r.steady_seconds
        ),
        format!("{:.2} / {:.2}", r.steady_edge_cores, r.steady_process_cores)
    );
    println!(
        "  {:<52} {:>22}",
        "media delivered per viewer, steady: mean / worst",
        format!(
            "{:.3} / {:.3}",
            r.steady_media_delivery.mean, r.steady_media_worst_viewer
        )
    );
    for (phase, f) in [("join", &r.join_frames), ("steady", &r.steady_frames)] {
        println!(
            "  {:<52} {:>22}   small in a large channel",
            format!("control frames per viewer, {phase}: mean / max"),
            format!("{:.1} / {:.0}", f.total.frames.mean, f.total.frames.max)
        );
        println!(
            "  {:<52} {:>22}",
            format!("control bytes per viewer, {phase}: mean / max"),
            format!("{:.0} / {:.0}", f.total.bytes.mean, f.total.bytes.max)
        );
        for (kind, k) in &f.by_kind {
            println!(
                "  {:<52} {:>22}",
                format!("  {kind}: frames mean / max, bytes mean"),
                format!(
                    "{:.1} / {:.0}, {:.0}",
                    k.frames.mean, k.frames.max, k.bytes.mean
                )
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_include_the_length_prefix() {
        let small = SK::MemberCount(pb::MemberCount {
            channel_id: 1,
            members: 10_001,
            large: true,
        });
        let framed = protocol::framing::encode_to_bytes(&pb::ServerFrame {
            kind: Some(small.clone()),
        })
        .unwrap();
        assert_eq!(frame_bytes(&small), framed.len() as u64);
        let big = SK::Joined(pb::Joined {
            members: (0..200)
                .map(|i| pb::Member {
                    user_id: format!("viewer-{i}"),
                    session: i,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        let framed = protocol::framing::encode_to_bytes(&pb::ServerFrame {
            kind: Some(big.clone()),
        })
        .unwrap();
        assert!(framed.len() > 128);
        assert_eq!(frame_bytes(&big), framed.len() as u64);
    }

    #[test]
    fn mean_max_and_rates() {
        let m = MeanMax::of([1.0, 3.0, 8.0]);
        assert_eq!((m.mean, m.max), (4.0, 8.0));
        let e = MeanMax::of([]);
        assert_eq!((e.mean, e.max), (0.0, 0.0));
        let text = "rtn_edge_relay_frame_bytes_total{edge=\"1\",kind=\"directory_report\"} 100\n\
                    rtn_edge_relay_frame_bytes_total{edge=\"1\",kind=\"directory_update\"} 50\n\
                    rtn_edge_relay_frame_bytes_total{edge=\"2\",kind=\"message\"} 70\n";
        let after = frame_bytes_by_edge(text, &[1, 2]);
        let before = frame_bytes_by_edge("", &[1, 2]);
        let dir = rates(&before, &after, &DIRECTORY_KINDS, 10.0);
        assert_eq!((dir.mean, dir.max), (7.5, 15.0));
        let msg = rates(&before, &after, &["message"], 10.0);
        assert_eq!((msg.mean, msg.max), (3.5, 7.0));
    }

    #[test]
    fn a_viewer_counts_listed_members_then_the_large_count() {
        let run = Arc::new(Run {
            base: Instant::now(),
            phase: AtomicUsize::new(0),
            target: 4,
            track: 9,
        });
        let viewer = Arc::new(Viewer::default());
        let mut t = Tally::new(viewer.clone(), run.clone());
        let joined = |session| {
            SK::MemberJoined(pb::MemberJoined {
                session,
                ..Default::default()
            })
        };
        t.frame(&SK::Joined(pb::Joined {
            members: vec![pb::Member {
                session: 1,
                ..Default::default()
            }],
            member_count: 2,
            ..Default::default()
        }));
        t.frame(&joined(2));
        t.frame(&joined(2)); // announced twice: one member
        assert_eq!(viewer.known.load(Ordering::Relaxed), 3);
        assert_eq!(viewer.counted.load(Ordering::Relaxed), NEVER);
        t.frame(&joined(3));
        assert_ne!(viewer.counted.load(Ordering::Relaxed), NEVER);
        assert!(!viewer.counted_large.load(Ordering::Relaxed));
        assert_eq!(viewer.frames[0][0].load(Ordering::Relaxed), 3);
        assert_eq!(viewer.frames[0][3].load(Ordering::Relaxed), 1);

        // A large channel: the edge's count, whatever is listed.
        let viewer = Arc::new(Viewer::default());
        let mut t = Tally::new(viewer.clone(), run.clone());
        t.frame(&SK::Joined(pb::Joined {
            member_count: 2,
            large: true,
            ..Default::default()
        }));
        t.frame(&joined(7));
        assert_eq!(viewer.known.load(Ordering::Relaxed), 2);
        run.phase.store(1, Ordering::Relaxed);
        t.frame(&SK::MemberCount(pb::MemberCount {
            channel_id: 0,
            members: 4,
            large: true,
        }));
        t.frame(&SK::KeepaliveAck(pb::KeepaliveAck { nonce: 1 }));
        assert!(viewer.counted_large.load(Ordering::Relaxed));
        assert_eq!(viewer.frames[1][2].load(Ordering::Relaxed), 1);
        assert_eq!(
            viewer.frames[1]
                .iter()
                .map(|f| f.load(Ordering::Relaxed))
                .sum::<u64>(),
            1,
            "keepalive acks are not counted"
        );
    }

    #[test]
    fn latency_figures() {
        let l = latency((1..=100).map(f64::from).collect());
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (50.0, 99.0, 100.0));
    }
}
