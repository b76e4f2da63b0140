//! The synthetic edges (registration, load and probe records, routes
//! watches) and the route-update measurement.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use control::clock::now_ms;
use control::keys::KeyLayout;
use control::records::{
    EdgeRecord, EdgeState, LoadRecord, ProbeLink, ProbeRecord, Record, RoutesRecord,
};
use control::store::watcher::PrefixWatcher;
use control::store::{ControlStore, LeaseId, StoreError};
use edge_node::control::{
    materially_changed, LOAD_INTERVAL, PROBE_PUBLISH_INTERVAL, PROBE_REFRESH,
};
use protocol::EdgeId;
use tokio::sync::{mpsc, oneshot, Semaphore};
use topology::hierarchy::{hub_probe_pairs, select_hubs, HubPolicy};
use topology::synth::{generate, SynthParams, XorShift64};
use topology::CostModel;
use topology::LinkSummary;
use tracing::info;

use super::Args;

/// Registrations in flight at once: a fleet coming up, not a thundering herd
/// of 10,000 lease grants in one millisecond.
const REGISTER_CONCURRENCY: usize = 256;
/// Noise on every published RTT (relative): under the 2% material band.
const RTT_NOISE: f64 = 0.005;
/// How far a step moves a link's level from its base (relative).
const RTT_STEP: f64 = 0.06;

// ---------------------------------------------------------------------------
// The synthetic mesh.

/// What the edges publish: records, and each one's probed links.
pub(super) struct Plan {
    pub(super) regions: Vec<String>,
    pub(super) edges: Vec<SimEdge>,
    /// Each probed pair (see [`pair_key`]) and the index of the edge that
    /// publishes it.
    pub(super) publisher: HashMap<u64, usize>,
}

pub(super) struct SimEdge {
    pub(super) record: EdgeRecord,
    pub(super) load: f64,
    pub(super) links: Vec<(EdgeId, LinkSummary)>,
}

/// An unordered pair of edges as one number (for sets of links).
fn pair_key(a: EdgeId, b: EdgeId) -> u64 {
    ((a.min(b) as u64) << 32) | a.max(b) as u64
}

impl Plan {
    /// `hub_probes`: add the probes hierarchical routing has edges make
    /// (`hierarchy::hub_probe_pairs`, hubs chosen as the controllers do,
    /// from the synthetic mesh).
    pub(super) fn generate(edges: usize, regions: usize, seed: u64, hub_probes: bool) -> Plan {
        let mut mesh = generate(&SynthParams {
            regions,
            ..SynthParams::probe_mesh(edges, seed)
        });
        if hub_probes {
            let policy = HubPolicy::default();
            if let Ok(graph) = mesh.graph(CostModel::default()) {
                let hubs = select_hubs(&graph, &policy);
                mesh.add_probes(hub_probe_pairs(&mesh.nodes, &hubs, &policy));
            }
        }
        // Synthetic ids start at 0; edge ids here start at 1 (0 reads as
        // "unset" too easily).
        let id = |n: u32| n + 1;
        let mut sims: Vec<SimEdge> = mesh
            .nodes
            .iter()
            .map(|n| SimEdge {
                record: EdgeRecord {
                    id: id(n.id),
                    region: n.region.clone(),
                    city: "SYN".into(),
                    lat: n.location.lat(),
                    lon: n.location.lon(),
                    // Never dialled: controllers only list it.
                    addr: SocketAddr::from(([127, 0, 0, 1], 10_000 + (n.id % 50_000) as u16)),
                    server_name: format!("edge{}.scale.test", id(n.id)),
                    cert_sha256: vec![],
                    admin_addr: None,
                    capacity: 1_000,
                    state: if n.draining {
                        EdgeState::Draining
                    } else {
                        EdgeState::Serving
                    },
                    version: env!("CARGO_PKG_VERSION").into(),
                    started_at_ms: now_ms(),
                },
                load: n.load,
                links: Vec::new(),
            })
            .collect();
        let mut publisher = HashMap::new();
        for &(a, b, summary) in mesh.links.iter().filter(|(a, b, _)| a < b) {
            let key = pair_key(id(a), id(b));
            let (from, to) = if XorShift64::new(key).next_u64() & 1 == 0 {
                (a, b)
            } else {
                (b, a)
            };
            sims[from as usize].links.push((id(to), summary));
            publisher.insert(key, from as usize);
        }
        let mut regions: Vec<String> = sims.iter().map(|e| e.record.region.clone()).collect();
        regions.sort();
        regions.dedup();
        Plan {
            regions,
            edges: sims,
            publisher,
        }
    }
}

// ---------------------------------------------------------------------------
// Synthetic edges.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    Edge,
    Load,
    Probes,
    /// Summaries written by the route-update measurement (not steady state).
    Forced,
}

pub(super) const KINDS: [Kind; 4] = [Kind::Edge, Kind::Load, Kind::Probes, Kind::Forced];

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Edge => "edge",
            Kind::Load => "load",
            Kind::Probes => "probes",
            Kind::Forced => "probes_forced",
        }
    }
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) writes: [AtomicU64; 4],
    pub(super) bytes: [AtomicU64; 4],
    pub(super) keepalives: AtomicU64,
    pub(super) keepalive_failures: AtomicU64,
    pub(super) leases_lost: AtomicU64,
    pub(super) routes_updates: AtomicU64,
    pub(super) routes_bytes: AtomicU64,
    pub(super) routes_bytes_max: AtomicU64,
    /// Region and exits records received (hierarchical routing), and bytes.
    pub(super) region_updates: AtomicU64,
    pub(super) region_bytes: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct CounterSnapshot {
    pub(super) writes: [u64; 4],
    pub(super) bytes: [u64; 4],
    pub(super) keepalives: u64,
    pub(super) keepalive_failures: u64,
    pub(super) leases_lost: u64,
}

impl Counters {
    fn wrote(&self, kind: Kind, bytes: usize) {
        self.writes[kind as usize].fetch_add(1, Ordering::Relaxed);
        self.bytes[kind as usize].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> CounterSnapshot {
        let load = |a: &[AtomicU64; 4]| std::array::from_fn(|i| a[i].load(Ordering::Relaxed));
        CounterSnapshot {
            writes: load(&self.writes),
            bytes: load(&self.bytes),
            keepalives: self.keepalives.load(Ordering::Relaxed),
            keepalive_failures: self.keepalive_failures.load(Ordering::Relaxed),
            leases_lost: self.leases_lost.load(Ordering::Relaxed),
        }
    }
}

/// What an edge's routes say, as the measurement needs it.
#[derive(Default)]
pub(super) struct RouteState {
    /// Routes records received.
    pub(super) updates: u64,
    /// Every link (pair key) on a best or backup path, sorted.
    pub(super) links: Vec<u64>,
    /// A link marked dead and when: waiting for routes without it.
    pending: Option<(u64, Instant)>,
}

enum Cmd {
    /// Publish the link to this peer as dead (true) or alive again.
    SetDead {
        to: EdgeId,
        dead: bool,
        done: oneshot::Sender<Result<(), String>>,
    },
}

/// What every synthetic edge shares.
pub(super) struct Ctx {
    pub(super) keys: KeyLayout,
    pub(super) stores: Vec<Arc<dyn ControlStore>>,
    ttl: Duration,
    pub(super) step_prob: f64,
    pub(super) load_change_prob: f64,
    pub(super) seed: u64,
    pub(super) counters: Counters,
    pub(super) registered: AtomicU64,
    register_gate: Semaphore,
    /// Seconds between two edges' starts (0: all at once).
    start_gap: f64,
    pub(super) routes: Mutex<Vec<RouteState>>,
    pub(super) latencies_ms: Mutex<Vec<f64>>,
    /// The route-update measurement's tally.
    pub(super) events: Mutex<Events>,
    cmds: Mutex<Vec<mpsc::Sender<Cmd>>>,
    pub(super) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Store errors by what failed: count and the first message.
    errors: Mutex<BTreeMap<String, (u64, String)>>,
    pub(super) started: Instant,
}

impl Ctx {
    pub(super) fn new(keys: KeyLayout, stores: Vec<Arc<dyn ControlStore>>, args: &Args) -> Ctx {
        Ctx {
            started: Instant::now(),
            keys,
            stores,
            // What a real edge runs with (`[control] lease_ttl_ms`).
            ttl: Duration::from_millis(edge_node::config::ControlSection::default().lease_ttl_ms),
            step_prob: args.step_prob,
            load_change_prob: args.load_change_prob,
            seed: args.seed,
            counters: Counters::default(),
            registered: AtomicU64::new(0),
            register_gate: Semaphore::new(REGISTER_CONCURRENCY),
            start_gap: if args.register_rate > 0.0 {
                1.0 / args.register_rate
            } else {
                0.0
            },
            routes: Mutex::new(Vec::new()),
            latencies_ms: Mutex::new(Vec::new()),
            events: Mutex::new(Events::default()),
            cmds: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    pub(super) fn error(&self, what: &str, e: &dyn std::fmt::Display) {
        let mut errors = self.errors.lock().expect("errors lock");
        let entry = errors
            .entry(what.to_string())
            .or_insert_with(|| (0, e.to_string()));
        entry.0 += 1;
    }

    pub(super) fn error_notes(&self) -> Vec<String> {
        self.errors
            .lock()
            .expect("errors lock")
            .iter()
            .map(|(what, (n, first))| format!("{what}: {n} failures, first: {first}"))
            .collect()
    }

    pub(super) fn start_edges(self: &Arc<Self>, plan: &Plan) {
        *self.routes.lock().expect("routes lock") = (0..plan.edges.len())
            .map(|_| RouteState::default())
            .collect();
        let mut cmds = self.cmds.lock().expect("cmds lock");
        let mut tasks = self.tasks.lock().expect("tasks lock");
        for (i, e) in plan.edges.iter().enumerate() {
            let (tx, rx) = mpsc::channel(4);
            cmds.push(tx);
            let edge = EdgeSim::new(self.clone(), i, e);
            tasks.push(tokio::spawn(edge.run(rx)));
            tasks.push(tokio::spawn(follow_routes(self.clone(), i, e.record.id)));
            tasks.push(tokio::spawn(follow_regions(
                self.clone(),
                i,
                e.record.region.clone(),
            )));
        }
    }

    pub(super) fn stop_edges(&self) {
        for t in self.tasks.lock().expect("tasks lock").drain(..) {
            t.abort();
        }
    }

    pub(super) fn store(&self, i: usize) -> &Arc<dyn ControlStore> {
        &self.stores[i % self.stores.len()]
    }

    pub(super) fn edges_with_routes(&self) -> usize {
        let routes = self.routes.lock().expect("routes lock");
        routes.iter().filter(|r| r.updates > 0).count()
    }
}

/// One synthetic edge: registration, keepalives, load and probe records.
struct EdgeSim {
    pub(super) ctx: Arc<Ctx>,
    index: usize,
    pub(super) record: EdgeRecord,
    sessions: u32,
    /// (peer, base figures, current level relative to base, dead)
    pub(super) links: Vec<(EdgeId, LinkSummary, f64, bool)>,
    rng: XorShift64,
}

impl EdgeSim {
    pub(super) fn new(ctx: Arc<Ctx>, index: usize, e: &SimEdge) -> EdgeSim {
        let rng = XorShift64::new(ctx.seed ^ ((index as u64) << 20));
        EdgeSim {
            sessions: (e.load * e.record.capacity as f64) as u32,
            record: e.record.clone(),
            links: e.links.iter().map(|&(to, s)| (to, s, 1.0, false)).collect(),
            ctx,
            index,
            rng,
        }
    }

    pub(super) fn store(&self) -> Arc<dyn ControlStore> {
        self.ctx.store(self.index).clone()
    }

    fn load_record(&self) -> LoadRecord {
        LoadRecord {
            sessions: self.sessions,
            channels: self.sessions / 4,
            load: self.sessions as f64 / self.record.capacity as f64,
            at_ms: now_ms(),
        }
    }

    /// The summary as the prober would give it now: each link at its level,
    /// with fresh noise under the material band, occasionally stepping.
    fn probe_record(&mut self) -> ProbeRecord {
        let (step_prob, rng) = (self.ctx.step_prob, &mut self.rng);
        let links = self
            .links
            .iter_mut()
            .map(|(to, base, level, dead)| {
                if rng.next_f64() < step_prob {
                    *level = 1.0 + rng.range(-RTT_STEP, RTT_STEP);
                }
                ProbeLink {
                    to: *to,
                    rtt_ms: base.rtt_ms * *level * (1.0 + rng.range(-RTT_NOISE, RTT_NOISE)),
                    jitter_ms: base.jitter_ms,
                    loss: base.loss,
                    samples: base.samples,
                    alive: !*dead,
                }
            })
            .collect();
        ProbeRecord {
            from: self.record.id,
            at_ms: now_ms(),
            links,
        }
    }

    async fn put(
        &self,
        kind: Kind,
        key: &str,
        value: bytes::Bytes,
        lease: LeaseId,
    ) -> Result<(), StoreError> {
        let len = key.len() + value.len();
        match self.store().put(key, value, Some(lease)).await {
            Ok(_) => {
                self.ctx.counters.wrote(kind, len);
                Ok(())
            }
            Err(e) => {
                self.ctx.error(&format!("put {}", kind.name()), &e);
                Err(e)
            }
        }
    }

    /// Lease, registration, load and first summary (what a real edge
    /// writes when it starts and after losing its lease).
    pub(super) async fn register(&mut self) -> Result<(LeaseId, ProbeRecord), StoreError> {
        let lease = self.store().grant_lease(self.ctx.ttl).await?;
        let keys = self.ctx.keys.clone();
        let id = self.record.id;
        self.put(Kind::Edge, &keys.edge(id), self.record.to_bytes(), lease)
            .await?;
        let load = self.load_record().to_bytes();
        self.put(Kind::Load, &keys.load(id), load, lease).await?;
        let probes = self.probe_record();
        self.put(Kind::Probes, &keys.probe(id), probes.to_bytes(), lease)
            .await?;
        Ok((lease, probes))
    }

    pub(super) async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>) {
        let ctx = self.ctx.clone();
        tokio::time::sleep(Duration::from_secs_f64(ctx.start_gap * self.index as f64)).await;
        // Held until the first registration is written.
        let mut gate = Some(ctx.register_gate.acquire().await);
        loop {
            let (lease, probes) = match self.register().await {
                Ok(r) => r,
                Err(e) => {
                    self.ctx.error("register", &e);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            if gate.take().is_some() {
                self.ctx.registered.fetch_add(1, Ordering::Relaxed);
            }
            let lost = self.keep_registered(lease, probes, &mut cmds).await;
            self.ctx
                .counters
                .leases_lost
                .fetch_add(1, Ordering::Relaxed);
            self.ctx.error("lease lost", &lost);
        }
    }

    /// The real edge's `keep_registered` loop, on synthetic figures; returns
    /// when the lease is gone.
    async fn keep_registered(
        &mut self,
        lease: LeaseId,
        first: ProbeRecord,
        cmds: &mut mpsc::Receiver<Cmd>,
    ) -> StoreError {
        let keys = self.ctx.keys.clone();
        let id = self.record.id;
        let mut keepalive = tokio::time::interval(self.ctx.ttl / 3);
        let mut load_tick = tokio::time::interval(LOAD_INTERVAL);
        let mut probe_tick = tokio::time::interval(PROBE_PUBLISH_INTERVAL);
        let mut last = (first, Instant::now());
        loop {
            tokio::select! {
                _ = keepalive.tick() => match self.store().keep_alive(lease).await {
                    Ok(()) => {
                        self.ctx.counters.keepalives.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e @ StoreError::LeaseNotFound(_)) => return e,
                    Err(e) => {
                        self.ctx.counters.keepalive_failures.fetch_add(1, Ordering::Relaxed);
                        self.ctx.error("keepalive", &e);
                    }
                },
                _ = load_tick.tick() => {
                    // Clients come and go: a few sessions either way.
                    let before = self.sessions;
                    if self.rng.next_f64() < self.ctx.load_change_prob {
                        let delta = 1 + self.rng.below(5) as u32;
                        self.sessions = if self.rng.next_f64() < 0.5 {
                            before.saturating_sub(delta)
                        } else {
                            (before + delta).min(self.record.capacity)
                        };
                    }
                    if self.sessions != before {
                        let rec = self.load_record().to_bytes();
                        if let Err(e @ StoreError::LeaseNotFound(_)) =
                            self.put(Kind::Load, &keys.load(id), rec, lease).await
                        {
                            return e;
                        }
                    }
                }
                _ = probe_tick.tick() => {
                    let rec = self.probe_record();
                    if materially_changed(&last.0, &rec) || last.1.elapsed() >= PROBE_REFRESH {
                        match self.put(Kind::Probes, &keys.probe(id), rec.to_bytes(), lease).await {
                            Ok(()) => last = (rec, Instant::now()),
                            Err(e @ StoreError::LeaseNotFound(_)) => return e,
                            Err(_) => {}
                        }
                    }
                }
                Some(Cmd::SetDead { to, dead, done }) = cmds.recv() => {
                    for l in self.links.iter_mut().filter(|l| l.0 == to) {
                        l.3 = dead;
                    }
                    let rec = self.probe_record();
                    let r = self.put(Kind::Forced, &keys.probe(id), rec.to_bytes(), lease).await;
                    if r.is_ok() {
                        last = (rec, Instant::now());
                    }
                    let _ = done.send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                    if let Err(e @ StoreError::LeaseNotFound(_)) = r {
                        return e;
                    }
                }
            }
        }
    }
}

/// Every link on a best or backup path of `routes`, sorted.
fn route_links(routes: &RoutesRecord) -> Vec<u64> {
    let mut links: Vec<u64> = routes
        .routes
        .iter()
        .flat_map(|r| std::iter::once(&r.best).chain(r.backup.as_ref()))
        .flat_map(|p| p.windows(2).map(|w| pair_key(w[0], w[1])))
        .collect();
    links.sort_unstable();
    links.dedup();
    links
}

/// Follow `routes/<id>` as a real edge does; note each record's links and
/// resolve a pending route-update measurement.
async fn follow_routes(ctx: Arc<Ctx>, index: usize, id: EdgeId) {
    let key = ctx.keys.route(id);
    let mut watcher = PrefixWatcher::new(ctx.store(index).clone(), key.clone());
    loop {
        let kvs = watcher.next().await.puts();
        for kv in kvs.into_iter().filter(|kv| kv.key == key) {
            let at = Instant::now();
            let c = &ctx.counters;
            c.routes_updates.fetch_add(1, Ordering::Relaxed);
            c.routes_bytes
                .fetch_add(kv.value.len() as u64, Ordering::Relaxed);
            c.routes_bytes_max
                .fetch_max(kv.value.len() as u64, Ordering::Relaxed);
            let links = match RoutesRecord::from_bytes(&kv.value) {
                Ok(r) => route_links(&r),
                Err(e) => {
                    ctx.error("routes record", &e);
                    continue;
                }
            };
            let mut routes = ctx.routes.lock().expect("routes lock");
            let state = &mut routes[index];
            state.updates += 1;
            if let Some((link, since)) = state.pending {
                if links.binary_search(&link).is_err() {
                    state.pending = None;
                    ctx.latencies_ms
                        .lock()
                        .expect("latencies lock")
                        .push(at.duration_since(since).as_secs_f64() * 1e3);
                }
            }
            state.links = links;
        }
    }
}

/// Follow every region's record and this region's exits, as a real edge
/// does (hierarchical routing): what they cost is counted, their content
/// is not used (a synthetic edge forwards nothing).
async fn follow_regions(ctx: Arc<Ctx>, index: usize, region: String) {
    let store = ctx.store(index).clone();
    let exits = ctx.keys.exits(&region);
    let mut regions_w = PrefixWatcher::new(store.clone(), ctx.keys.regions());
    let mut exits_w = PrefixWatcher::new(store, exits.clone());
    loop {
        let kvs = tokio::select! {
            u = regions_w.next() => u.puts(),
            u = exits_w.next() => u.puts().into_iter().filter(|kv| kv.key == exits).collect(),
        };
        let c = &ctx.counters;
        for kv in kvs {
            c.region_updates.fetch_add(1, Ordering::Relaxed);
            c.region_bytes
                .fetch_add(kv.value.len() as u64, Ordering::Relaxed);
        }
    }
}

/// Route-update measurements until `deadline` (tallied in `ctx.events`):
/// mark a link that carries routes dead, wait for the affected edges' new
/// routes (or a timeout), bring it back, pause.
pub(super) async fn route_updates(ctx: &Arc<Ctx>, plan: &Plan, deadline: Instant, args: &Args) {
    let timeout = Duration::from_secs(args.route_timeout);
    let mut rng = XorShift64::new(args.seed ^ 0x00c0_ffee);
    let tally = |f: &mut dyn FnMut(&mut Events)| f(&mut ctx.events.lock().expect("events lock"));
    while Instant::now() + timeout + Duration::from_secs(1) < deadline {
        let Some((link, affected)) = pick_link(ctx, plan, &mut rng) else {
            tally(&mut |e| e.skipped += 1);
            tokio::time::sleep(Duration::from_secs(args.change_every)).await;
            continue;
        };
        let owner = plan.publisher[&link];
        let me = plan.edges[owner].record.id;
        let Some(to) = plan.edges[owner]
            .links
            .iter()
            .map(|l| l.0)
            .find(|&to| pair_key(me, to) == link)
        else {
            // Cannot happen: every published pair is in its publisher's list.
            tally(&mut |e| e.failed.push(format!("link {link:#x} has no publisher")));
            return;
        };
        let since = Instant::now();
        {
            let mut routes = ctx.routes.lock().expect("routes lock");
            for &i in &affected {
                routes[i].pending = Some((link, since));
            }
        }
        tally(&mut |e| {
            e.events += 1;
            e.affected += affected.len();
        });
        if let Err(err) = set_dead(ctx, owner, to, true).await {
            tally(&mut |e| {
                e.failed
                    .push(format!("marking link {me}-{to} dead: {err:#}"))
            });
        }
        let waited = Instant::now() + timeout;
        loop {
            let left = {
                let routes = ctx.routes.lock().expect("routes lock");
                affected
                    .iter()
                    .filter(|&&i| routes[i].pending.is_some())
                    .count()
            };
            if left == 0 || Instant::now() >= waited {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let missed = {
            let mut routes = ctx.routes.lock().expect("routes lock");
            affected
                .iter()
                .filter(|&&i| routes[i].pending.take().is_some())
                .count()
        };
        tally(&mut |e| e.misses += missed);
        if let Err(err) = set_dead(ctx, owner, to, false).await {
            tally(&mut |e| e.failed.push(format!("restoring link {me}-{to}: {err:#}")));
        }
        info!(
            link = %format!("{me}-{to}"),
            affected = affected.len(),
            missed,
            took_s = since.elapsed().as_secs_f64(),
            "route update measured"
        );
        tokio::time::sleep(Duration::from_secs(args.change_every)).await;
    }
}

async fn set_dead(ctx: &Ctx, owner: usize, to: EdgeId, dead: bool) -> anyhow::Result<()> {
    let (done, rx) = oneshot::channel();
    let tx = ctx.cmds.lock().expect("cmds lock")[owner].clone();
    tx.send(Cmd::SetDead { to, dead, done })
        .await
        .map_err(|_| anyhow::anyhow!("edge task gone"))?;
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .context("edge did not write in 5 s")?
        .context("edge task gone")?
        .map_err(anyhow::Error::msg)
}

/// Of a few links on the routes of random edges, the one most edges' routes
/// use, and those edges.
fn pick_link(ctx: &Ctx, plan: &Plan, rng: &mut XorShift64) -> Option<(u64, Vec<usize>)> {
    let routes = ctx.routes.lock().expect("routes lock");
    let mut best: Option<(u64, Vec<usize>)> = None;
    for _ in 0..16 {
        let s = &routes[rng.below(routes.len())];
        if s.links.is_empty() {
            continue;
        }
        let link = s.links[rng.below(s.links.len())];
        if !plan.publisher.contains_key(&link) {
            continue;
        }
        let affected: Vec<usize> = routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.links.binary_search(&link).is_ok())
            .map(|(i, _)| i)
            .collect();
        if best.as_ref().is_none_or(|b| affected.len() > b.1.len()) {
            best = Some((link, affected));
        }
    }
    best
}

#[derive(Default)]
pub(super) struct Events {
    pub(super) events: usize,
    pub(super) affected: usize,
    pub(super) misses: usize,
    pub(super) skipped: usize,
    pub(super) failed: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::records::RouteRecord;

    #[test]
    fn links_of_routes_are_unordered_pairs_once() {
        let r = RoutesRecord {
            edge: 1,
            region: "eu".into(),
            controller: "c".into(),
            computed_at_ms: 0,
            routes: vec![
                RouteRecord {
                    dest: 3,
                    best: vec![1, 2, 3],
                    backup: Some(vec![1, 3]),
                    cost_us: None,
                    backup_cost_us: None,
                },
                RouteRecord {
                    dest: 2,
                    best: vec![1, 2],
                    backup: None,
                    cost_us: None,
                    backup_cost_us: None,
                },
            ],
        };
        let links = route_links(&r);
        assert_eq!(links, {
            let mut v = vec![pair_key(1, 2), pair_key(2, 3), pair_key(1, 3)];
            v.sort_unstable();
            v
        });
        assert_eq!(pair_key(3, 2), pair_key(2, 3));
    }

    #[test]
    fn each_probed_pair_has_one_publisher_listing_it() {
        let plan = Plan::generate(120, 4, 3, false);
        assert_eq!(plan.regions.len(), 4);
        let listed: usize = plan.edges.iter().map(|e| e.links.len()).sum();
        assert_eq!(listed, plan.publisher.len());
        for (key, &owner) in &plan.publisher {
            let me = plan.edges[owner].record.id;
            assert!(plan.edges[owner]
                .links
                .iter()
                .any(|l| pair_key(me, l.0) == *key));
        }
        for e in &plan.edges {
            e.record.validate().unwrap();
        }
    }
}
