//! The edge's side of the control plane: registration under one lease, a
//! small load record, probe summaries, and the routes its region's
//! controller publishes, turned into the edge's route table.
//!
//! Static stability: every store call may fail. While the store is down the
//! edge keeps its last registry view and routes (the watches freeze, they do
//! not empty), keeps probing and rerouting on its own probes, and keeps
//! accepting clients. When the store returns, a lease that expired in the
//! meantime is replaced and the edge registers again; watches resume.
//!
//! Write budget (design: about one write per second per edge or less):
//! registration once per lease (and on state changes), load at most every
//! [`LOAD_INTERVAL`], probe summaries at most every
//! [`PROBE_PUBLISH_INTERVAL`] and only on a material change. Lease
//! keepalives are not raft writes in etcd (the leader answers them).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::clock::now_ms;
use control::keys::KeyLayout;
use control::mirror;
use control::records::{
    EdgeRecord, EdgeState, ExitsRecord, LoadRecord, ProbeLink, ProbeRecord, Record, RegionRecord,
    RoutesRecord,
};
use control::store::watcher::{PrefixWatcher, Update};
use control::store::{ControlStore, LeaseId, StoreError};
use protocol::{EdgeAddress, EdgeId};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use topology::{PeerSpot, ProbePolicy, TargetSelector};
use tracing::{info, warn};

use crate::composed_routes::{hub_probe_targets, ComposedRoutes};
use crate::edge::EdgeCore;
use crate::probe::PeerLink;
use crate::routes::{RouteFeed, RouteTable};

/// Load is refreshed at most this often. 5 s: load only ranks edges for new
/// clients and penalises busy transit relays, neither of which needs more
/// (LiveKit reports every 2 s for its far more load-driven placement).
pub const LOAD_INTERVAL: Duration = Duration::from_secs(5);
/// Probe summaries are published at most this often, and only when they
/// changed materially. 2 s: the controller then sees a degraded link within
/// about one probe-loss window plus 2 s, while the edges' own probes handle
/// dead hops within a second regardless.
pub const PROBE_PUBLISH_INTERVAL: Duration = Duration::from_secs(2);
/// A summary is republished even without change this often, so that a
/// controller that lost a write (or a restored etcd backup) converges.
pub const PROBE_REFRESH: Duration = Duration::from_secs(30);
/// Delay between attempts while the store is unreachable.
const STORE_RETRY: Duration = Duration::from_millis(500);
/// How often edges that left the registry but still answer probes are
/// checked again (see [`follow`]).
const DEPARTED_RECHECK: Duration = Duration::from_millis(250);
/// How often the probe targets are chosen again from what was measured:
/// exploration (`topology::ProbePolicy::explore_ticks`) counts in these.
const PROBE_TARGETS_EVERY: Duration = Duration::from_secs(1);
/// How long a stopping agent waits for its lease to be revoked: the revoke
/// itself is given a second, and a store that does not answer must not
/// hold up the edge's exit (the lease then expires on its own).
const LEASE_REVOKE_WAIT: Duration = Duration::from_secs(2);
/// How long the agent's aborted tasks get to end: at their next poll,
/// unless one blocks its thread.
const ABORT_BOUND: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    Draining,
    Stopped,
}

/// The running agent. `drain()` marks the edge DRAINING in the registry;
/// `stop()` revokes its lease so it leaves the registry at once; `abort()`
/// (a crash) leaves the lease to expire. Its two tasks end with it.
pub struct ControlAgent {
    phase: watch::Sender<Phase>,
    /// Registration and records: ends by itself once stopped.
    register: JoinHandle<()>,
    /// The registry and routes followed into the route table: runs until
    /// aborted.
    follow: JoinHandle<()>,
}

impl ControlAgent {
    pub fn start(
        core: Arc<EdgeCore>,
        store: Arc<dyn ControlStore>,
        keys: KeyLayout,
        base: RouteFeed,
    ) -> Self {
        let (phase, phase_rx) = watch::channel(Phase::Serving);
        let record_gone = Arc::new(Notify::new());
        let register = tokio::spawn(register(
            core.clone(),
            store.clone(),
            keys.clone(),
            phase_rx,
            record_gone.clone(),
        ));
        let follow = tokio::spawn(follow(core, store, keys, base, record_gone));
        ControlAgent {
            phase,
            register,
            follow,
        }
    }

    pub fn drain(&self) {
        self.phase.send_replace(Phase::Draining);
    }

    /// Revoke the lease (bounded wait) and stop.
    pub async fn stop(mut self) {
        self.phase.send_replace(Phase::Stopped);
        let _ = tokio::time::timeout(LEASE_REVOKE_WAIT, &mut self.register).await;
        self.abort().await;
    }

    /// Stop at once, lease left to expire; wait (bounded) for the tasks to
    /// end.
    pub async fn abort(mut self) {
        self.register.abort();
        self.follow.abort();
        let ended = async {
            for task in [&mut self.register, &mut self.follow] {
                // A finished task was already dropped (and may have been
                // joined by `stop`: a handle is joined once).
                if !task.is_finished() {
                    let _ = task.await;
                }
            }
        };
        if tokio::time::timeout(ABORT_BOUND, ended).await.is_err() {
            warn!("control agent tasks still running after being aborted");
        }
    }
}

impl Drop for ControlAgent {
    fn drop(&mut self) {
        self.register.abort();
        self.follow.abort();
    }
}

fn edge_record(core: &EdgeCore, state: EdgeState) -> EdgeRecord {
    let cfg = &core.cfg;
    let (lat, lon) = cfg.location().unwrap_or((0.0, 0.0));
    EdgeRecord {
        id: core.id,
        region: cfg.edge.region.clone(),
        city: cfg.edge.city.clone(),
        lat,
        lon,
        addr: cfg
            .edge
            .public_addr
            .or_else(|| core.listeners[0].local_addr().ok())
            .unwrap_or(cfg.edge.listen),
        server_name: cfg.edge.server_name.clone(),
        cert_sha256: core.client_certs.hashes().borrow().clone(),
        admin_addr: core.admin_addr.get().copied(),
        capacity: cfg.limits.max_sessions.min(u32::MAX as usize) as u32,
        state,
        version: env!("CARGO_PKG_VERSION").into(),
        started_at_ms: core.started_at_ms,
    }
}

fn load_record(core: &EdgeCore) -> LoadRecord {
    let sessions = core.client_count();
    LoadRecord {
        sessions: sessions as u32,
        channels: core.channels().len() as u32,
        load: sessions as f64 / core.cfg.limits.max_sessions.max(1) as f64,
        at_ms: now_ms(),
    }
}

fn probe_record(me: EdgeId, links: &[PeerLink]) -> ProbeRecord {
    ProbeRecord {
        from: me,
        at_ms: now_ms(),
        links: links
            .iter()
            .map(|l| ProbeLink {
                to: l.peer,
                rtt_ms: l.summary.rtt_ms,
                jitter_ms: l.summary.jitter_ms,
                loss: l.summary.loss,
                samples: l.summary.samples,
                alive: l.alive,
            })
            .collect(),
    }
}

/// Whether `new` differs from `old` enough to be worth a write: a link came
/// or went or changed liveness, RTT moved by 1 ms and 2%, jitter by 1 ms and
/// 20%, loss by a point. The RTT band is what the published value may lag
/// the link by: with the controller's hysteresis (a path is kept unless
/// another gains 1 ms and 3%) it must stay inside the 5% path-quality
/// promise, so 2% (at 5%, a link measured high while the lab or an edge
/// started stayed published 5% high for 30 s, and paths through it were
/// passed over). Writes stay bounded by the 2 s publish tick whatever the
/// band.
pub fn materially_changed(old: &ProbeRecord, new: &ProbeRecord) -> bool {
    if old.links.len() != new.links.len() {
        return true;
    }
    let moved = |a: f64, b: f64, abs: f64, rel: f64| (a - b).abs() > abs.max(rel * a.max(b));
    old.links.iter().zip(&new.links).any(|(a, b)| {
        a.to != b.to
            || a.alive != b.alive
            || moved(a.rtt_ms, b.rtt_ms, 1.0, 0.02)
            || moved(a.jitter_ms, b.jitter_ms, 1.0, 0.2)
            || (a.loss - b.loss).abs() >= 0.01
    })
}

/// Keep the edge registered and its load and probe records current.
/// The registration loop. `record_gone` is notified by [`follow`] when the
/// registry watch deletes this edge's own record.
async fn register(
    core: Arc<EdgeCore>,
    store: Arc<dyn ControlStore>,
    keys: KeyLayout,
    mut phase: watch::Receiver<Phase>,
    record_gone: Arc<Notify>,
) {
    let ttl = Duration::from_millis(core.cfg.control.lease_ttl_ms);
    let mut failing = false;
    loop {
        if *phase.borrow() == Phase::Stopped {
            return;
        }
        let current = *phase.borrow();
        let lease = match registered_lease(&core, &*store, &keys, ttl, current).await {
            Ok(l) => {
                if failing {
                    info!(edge = core.id, "store reachable again; registered");
                }
                failing = false;
                core.metrics.store_connected.set(1.0);
                l
            }
            Err(e) => {
                if !failing {
                    warn!(edge = core.id, error = %e, "cannot register in the store; serving on the last known state and retrying");
                }
                failing = true;
                core.metrics.store_connected.set(0.0);
                tokio::select! {
                    _ = tokio::time::sleep(STORE_RETRY) => continue,
                    _ = phase.changed() => continue,
                }
            }
        };
        match keep_registered(&core, &*store, &keys, lease, ttl, &mut phase, &record_gone).await {
            Ok(()) => {
                // Stopped: leave the registry now rather than after a TTL.
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), store.revoke_lease(lease)).await;
                info!(edge = core.id, "left the registry");
                return;
            }
            Err(e) => {
                warn!(edge = core.id, error = %e, "lease lost; registering again");
                core.metrics.store_connected.set(0.0);
            }
        }
    }
}

async fn registered_lease(
    core: &EdgeCore,
    store: &dyn ControlStore,
    keys: &KeyLayout,
    ttl: Duration,
    phase: Phase,
) -> Result<LeaseId, StoreError> {
    let lease = store.grant_lease(ttl).await?;
    store
        .put(
            &keys.edge(core.id),
            edge_record(core, registry_state(phase)).to_bytes(),
            Some(lease),
        )
        .await?;
    core.metrics.store_write("edge");
    store
        .put(
            &keys.load(core.id),
            load_record(core).to_bytes(),
            Some(lease),
        )
        .await?;
    core.metrics.store_write("load");
    info!(edge = core.id, lease, "registered");
    Ok(lease)
}

/// The state an edge in `phase` registers with.
fn registry_state(phase: Phase) -> EdgeState {
    match phase {
        Phase::Serving => EdgeState::Serving,
        _ => EdgeState::Draining,
    }
}

/// Refresh the lease and records until stopped (Ok) or the lease is gone.
async fn keep_registered(
    core: &EdgeCore,
    store: &dyn ControlStore,
    keys: &KeyLayout,
    lease: LeaseId,
    ttl: Duration,
    phase: &mut watch::Receiver<Phase>,
    record_gone: &Notify,
) -> Result<(), StoreError> {
    let mut keepalive = tokio::time::interval(ttl / 3);
    let mut load_tick = tokio::time::interval(LOAD_INTERVAL);
    let mut probe_tick = tokio::time::interval(PROBE_PUBLISH_INTERVAL);
    let mut last_load = load_record(core);
    let mut last_probes: Option<(ProbeRecord, Instant)> = None;
    let mut last_phase = *phase.borrow();
    // A rotated client certificate changes the registration (its digests);
    // once per rotation, days apart outside tests.
    let mut cert_hashes = core.client_certs.hashes();
    cert_hashes.mark_unchanged();
    loop {
        tokio::select! {
            Ok(()) = cert_hashes.changed() => {
                let rec = edge_record(core, registry_state(last_phase));
                if put(store, &keys.edge(core.id), rec.to_bytes(), lease).await? {
                    core.metrics.store_write("edge");
                } else {
                    // Store unreachable: try again at the next change or
                    // keepalive round.
                    cert_hashes.mark_changed();
                }
            }
            // The registry lost this edge's record: its lease was revoked
            // or expired (etcd deletes the keys at once; the keepalive
            // would notice up to a third of a TTL later, by when the
            // controller's hold on departed edges may be over), or someone
            // deleted it. Write it again now: a lease that is gone fails
            // the write, and the caller registers under a new one.
            _ = record_gone.notified() => {
                warn!(edge = core.id, "own record left the registry; writing it again");
                let rec = edge_record(core, registry_state(last_phase));
                if put(store, &keys.edge(core.id), rec.to_bytes(), lease).await? {
                    core.metrics.store_write("edge");
                }
            }
            _ = keepalive.tick() => match store.keep_alive(lease).await {
                Ok(()) => core.metrics.store_connected.set(1.0),
                Err(e @ StoreError::LeaseNotFound(_)) => return Err(e),
                // Still within the TTL perhaps: keep trying; if the lease
                // expires meanwhile, the next keepalive says so.
                Err(_) => core.metrics.store_connected.set(0.0),
            },
            _ = load_tick.tick() => {
                let load = load_record(core);
                if (load.sessions, load.channels) != (last_load.sessions, last_load.channels)
                    && put(store, &keys.load(core.id), load.to_bytes(), lease).await?
                {
                    core.metrics.store_write("load");
                    last_load = load;
                }
            }
            _ = probe_tick.tick() => {
                let rec = probe_record(core.id, &core.prober.links());
                let due = match &last_probes {
                    None => !rec.links.is_empty(),
                    Some((old, at)) => materially_changed(old, &rec) || at.elapsed() >= PROBE_REFRESH,
                };
                if due && put(store, &keys.probe(core.id), rec.to_bytes(), lease).await? {
                    core.metrics.store_write("probes");
                    last_probes = Some((rec, Instant::now()));
                }
            }
            r = phase.changed() => {
                let now = if r.is_err() { Phase::Stopped } else { *phase.borrow() };
                if now == Phase::Stopped {
                    return Ok(());
                }
                if now != last_phase {
                    let rec = edge_record(core, EdgeState::Draining);
                    if put(store, &keys.edge(core.id), rec.to_bytes(), lease).await? {
                        core.metrics.store_write("edge");
                        last_phase = now;
                    }
                }
            }
        }
    }
}

/// A write under the lease: Ok(true) written, Ok(false) store unreachable
/// (try again later), Err when the lease is gone.
async fn put(
    store: &dyn ControlStore,
    key: &str,
    value: bytes::Bytes,
    lease: LeaseId,
) -> Result<bool, StoreError> {
    match store.put(key, value, Some(lease)).await {
        Ok(_) => Ok(true),
        Err(e @ StoreError::LeaseNotFound(_)) => Err(e),
        Err(_) => Ok(false),
    }
}

/// Follow the registry and this edge's routes; publish the resulting table.
///
/// An edge that leaves the registry stays a peer for as long as this edge's
/// own probes still hear it. Leases expire for live edges too: when etcd
/// comes back from an outage longer than the lease TTL, every edge's record
/// is deleted and each edge registers again a moment later, as its next
/// keepalive finds its lease gone. Believing those deletes dropped live
/// peers from every table for that moment: relay links were closed, channel
/// directories moved, and media and messages between their clients were
/// lost (edge-node/tests/etcd_cluster.rs, etcd down for a minute: a 0.7 s
/// media gap and 24 messages lost). A dead edge is unaffected: its probes
/// stopped answering within a second, well before its lease expires.
async fn follow(
    core: Arc<EdgeCore>,
    store: Arc<dyn ControlStore>,
    keys: KeyLayout,
    base: RouteFeed,
    record_gone: Arc<Notify>,
) {
    let mut edges_w = PrefixWatcher::new(store.clone(), keys.edges());
    let my_routes = keys.route(core.id);
    let mut routes_w = PrefixWatcher::new(store.clone(), my_routes.clone());
    // Hierarchical routing: every region's record, and this region's exits.
    let regions_dir = keys.regions();
    let mut regions_w = PrefixWatcher::new(store.clone(), regions_dir.clone());
    let my_exits = keys.exits(&core.cfg.edge.region);
    let mut exits_w = PrefixWatcher::new(store, my_exits.clone());
    let mut registry: BTreeMap<EdgeId, EdgeRecord> = BTreeMap::new();
    // Left the registry, still answering probes: kept until they register
    // again or the probes call them dead.
    let mut departed: BTreeMap<EdgeId, EdgeRecord> = BTreeMap::new();
    let mut recheck = tokio::time::interval(DEPARTED_RECHECK);
    let mut routes: Option<RoutesRecord> = None;
    let mut regions: BTreeMap<String, RegionRecord> = BTreeMap::new();
    let mut exits: Option<ExitsRecord> = None;
    let mut composed = ComposedRoutes::default();
    let edges_dir = keys.edges();
    let mut selector = TargetSelector::new(probe_policy(&core.cfg.control), core.id as u64);
    let mut reselect = tokio::time::interval(PROBE_TARGETS_EVERY);
    let mut targets = BTreeSet::new();
    loop {
        let mut recompose = false;
        let mut retarget = false;
        tokio::select! {
            u = edges_w.next() => {
                let before = registry.clone();
                mirror::apply(&keys, &edges_dir, &mut registry, u);
                if before.contains_key(&core.id) && !registry.contains_key(&core.id) {
                    record_gone.notify_one();
                }
                departed.extend(before.into_iter().filter(|(id, _)| !registry.contains_key(id)));
                retarget = true;
            }
            u = routes_w.next() => {
                apply_one(&my_routes, &mut routes, u);
                recompose = true;
            }
            u = regions_w.next() => {
                mirror::apply_regions(&regions_dir, &mut regions, u, |r| &r.region);
                recompose = true;
            }
            u = exits_w.next() => {
                apply_one(&my_exits, &mut exits, u);
                recompose = true;
            }
            _ = recheck.tick(), if !departed.is_empty() => {}
            _ = reselect.tick() => retarget = true,
        }
        if recompose {
            composed = match routes.as_ref() {
                Some(r) => ComposedRoutes::compose(r, &regions, exits.as_ref()),
                None => ComposedRoutes::default(),
            };
        }
        if !departed.is_empty() {
            let alive: HashSet<EdgeId> = core
                .prober
                .links()
                .iter()
                .filter(|l| l.alive)
                .map(|l| l.peer)
                .collect();
            let before = departed.len();
            departed.retain(|id, _| !registry.contains_key(id) && alive.contains(id));
            retarget |= departed.len() != before;
        }
        let view = if departed.is_empty() {
            std::borrow::Cow::Borrowed(&registry)
        } else {
            let mut view = registry.clone();
            view.extend(departed.iter().map(|(id, e)| (*id, e.clone())));
            std::borrow::Cow::Owned(view)
        };
        // Departed edges stay probe targets: the prober forgets a peer it
        // no longer probes, and this loop would then call it dead.
        if retarget {
            targets = probe_targets(&core, &view, &regions, &mut selector);
        }
        let mut table = build_table(&core, &view, routes.as_ref(), &composed, &targets);
        let current = base.current();
        // Same content: no new version (forwarding caches key on it).
        table.version = current.version;
        if table != *current {
            base.publish(table);
        }
    }
}

/// Keep the last record of `key` (routes, exits) through deletes and bad
/// values: an edge forwards on its last good routes until the controller
/// publishes new ones.
fn apply_one<R: Record>(key: &str, record: &mut Option<R>, update: Update) {
    let kvs = update.puts();
    for kv in kvs.iter().filter(|kv| kv.key == key) {
        match R::from_bytes(&kv.value) {
            Ok(r) => *record = Some(r),
            Err(e) => warn!(key, error = %e, "ignoring a bad record; keeping the last good one"),
        }
    }
}

/// The route table for the registry, the controller's routes (with those
/// composed for other regions when routing is hierarchical) and this edge's
/// measurement targets.
fn build_table(
    core: &EdgeCore,
    registry: &BTreeMap<EdgeId, EdgeRecord>,
    routes: Option<&RoutesRecord>,
    composed: &ComposedRoutes,
    targets: &BTreeSet<EdgeId>,
) -> RouteTable {
    let me = core.id;
    let mut peers: HashMap<EdgeId, EdgeAddress> = RouteTable::from_config(&core.cfg).peers;
    peers.extend(
        registry
            .values()
            .filter(|e| e.id != me)
            .map(|e| (e.id, e.address())),
    );
    let known =
        |p: &Vec<EdgeId>| p.first() == Some(&me) && p[1..].iter().all(|e| peers.contains_key(e));
    let mut paths = HashMap::new();
    let mut backups = HashMap::new();
    for r in routes.map(|r| r.routes.as_slice()).unwrap_or_default() {
        if known(&r.best) {
            paths.insert(r.dest, r.best.clone());
        }
        if let Some(b) = r.backup.as_ref().filter(|b| known(b)) {
            backups.insert(r.dest, b.clone());
        }
    }
    // Composed routes replace the record's own to other regions' hubs:
    // those only go as far as the local search sees.
    for (dest, p) in composed.paths.iter().filter(|(_, p)| known(p)) {
        paths.insert(*dest, p.clone());
        backups.remove(dest);
    }
    for (dest, b) in composed.backups.iter().filter(|(_, b)| known(b)) {
        backups.insert(*dest, b.clone());
    }
    let mut probe: HashSet<EdgeId> = targets
        .iter()
        .copied()
        .filter(|id| peers.contains_key(id))
        .collect();
    probe.extend(
        paths
            .values()
            .chain(backups.values())
            .filter_map(|p| p.get(1).copied()),
    );
    probe.extend(core.cfg.peers.iter().map(|p| p.id));
    RouteTable {
        version: 0,
        peers,
        paths,
        backups,
        probe,
    }
}

/// The probe budget of the `[control]` section (`topology::targets`).
fn probe_policy(c: &crate::config::ControlSection) -> ProbePolicy {
    ProbePolicy {
        full_mesh_max_edges: c.probe_full_mesh_max_edges,
        best_per_region: c.probes_per_other_region,
        ..ProbePolicy::default()
    }
}

/// The peers this edge measures, chosen from the registry by
/// `topology::TargetSelector`: everyone in a small mesh; else its region
/// and, in every other region, the best measured edges plus one explored
/// at random. What the probes measured so far ranks the candidates.
fn probe_targets(
    core: &EdgeCore,
    registry: &BTreeMap<EdgeId, EdgeRecord>,
    regions: &BTreeMap<String, RegionRecord>,
    selector: &mut TargetSelector,
) -> BTreeSet<EdgeId> {
    let cost = topology::CostModel::default();
    for l in core.prober.links().iter().filter(|l| l.alive) {
        selector.learn(l.peer, cost.link_cost_ms(&l.summary));
    }
    let location = |lat, lon| topology::GeoPoint::new(lat, lon).ok();
    let me = PeerSpot {
        id: core.id,
        region: &core.cfg.edge.region,
        location: core
            .cfg
            .location()
            .ok()
            .and_then(|(lat, lon)| location(lat, lon)),
    };
    let peers: Vec<PeerSpot<'_>> = registry
        .values()
        .map(|e| PeerSpot {
            id: e.id,
            region: &e.region,
            location: location(e.lat, e.lon),
        })
        .collect();
    let mut targets = selector.choose(&me, &peers);
    if let Some(at) = me.location {
        let located = |id| registry.get(&id).and_then(|e| location(e.lat, e.lon));
        let hubs = hub_probe_targets((core.id, me.region, at), regions, located);
        targets.extend(hubs.into_iter().filter(|id| registry.contains_key(id)));
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(to: EdgeId, rtt_ms: f64) -> ProbeLink {
        ProbeLink {
            to,
            rtt_ms,
            jitter_ms: 0.5,
            loss: 0.0,
            samples: 5,
            alive: true,
        }
    }

    #[test]
    fn only_material_probe_changes_are_written() {
        let rec = |links| ProbeRecord {
            from: 1,
            at_ms: 0,
            links,
        };
        let a = rec(vec![link(2, 40.0), link(3, 10.0)]);
        // Under 1 ms, or under 2%: noise.
        assert!(!materially_changed(
            &a,
            &rec(vec![link(2, 40.9), link(3, 10.4)])
        ));
        assert!(!materially_changed(
            &rec(vec![link(2, 200.0)]),
            &rec(vec![link(2, 203.5)])
        ));
        // 1.5 ms and 3.6%: a path-quality matter.
        assert!(materially_changed(
            &a,
            &rec(vec![link(2, 41.5), link(3, 10.0)])
        ));
        assert!(materially_changed(&a, &rec(vec![link(2, 40.0)])));
        let mut dead = a.clone();
        dead.links[1].alive = false;
        assert!(materially_changed(&a, &dead));
        let mut lossy = a.clone();
        lossy.links[0].loss = 0.02;
        assert!(materially_changed(&a, &lossy));
    }
}
