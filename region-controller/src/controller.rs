//! One region controller: mirrors the mesh, campaigns for its region's
//! leadership, and while it leads recomputes and publishes the routes of the
//! region's edges. One supervised loop per concern, as in moq-relay's
//! cluster: the mirror, the leader loop, the API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::EdgeId;
use tokio::sync::watch;
use topology::{CostModel, HysteresisPolicy, MeshGraph, RouteSet};
use tracing::{info, warn};

use crate::compute::{
    build_graph, build_graph_of, hierarchical_routes, region_links, region_routes, to_record,
};
use crate::mesh::{self, MeshView, SharedMesh};
use control::clock::now_ms;
use control::keys::KeyLayout;
use control::records::{EdgeRecord, ExitsRecord, Record, RegionRecord, RoutesRecord};
use control::store::{ControlStore, Election, Leadership};

/// A region record or exits whose news is not urgent (costs that drifted
/// past the publication band, a path or useful link traded for a near-equal
/// one) waits this long after the last publication. Why: every edge of the
/// mesh watches every region record, so each publication costs edges ×
/// record bytes of etcd egress (control-scale: 31 KB/s per edge at 1,000
/// edges while every drift was published, and etcd fell behind; with cost
/// noise, near-equal paths and links trade places every few seconds).
/// Urgent, and at once: members, hubs or reachability changed, or a link
/// the published record uses is gone. An edge's routes inside its region
/// come from its own routes record, which is never held back.
const COST_DRIFT_EVERY: Duration = Duration::from_secs(300);

/// Edges that leave the registry together (at least two, and a third of
/// the region's edges with routes) have most likely not died together: the
/// store dropped their leases (a raft leader of etcd before
/// etcd-io/etcd#16822 that resumes after a hang revokes every lease it saw
/// expire, etcd-io/etcd#15247; an outage longer than the lease TTL). The
/// published routes are held this long for them to register again, which
/// they do within a keepalive round (a third of the TTL). Computing routes
/// without them would publish routes that skip them, then publish the old
/// ones again: churn at every edge, and relay links closed and redialled.
/// Edges that did die are routed around meanwhile by the edges themselves
/// (probes, backup paths); their routes go when the hold ends.
const MASS_DEPARTURE_HOLD: Duration = Duration::from_secs(5);

/// An edge that leaves the registry keeps its place in the routes this
/// long. A live edge whose lease went (keepalives late on a loaded etcd:
/// control-scale at 1,000 edges lost hundreds) registers again within a
/// keepalive round; computing without it meanwhile would publish routes
/// and region members without it, then with it again, to every edge, and
/// that churn loaded etcd further. A dead edge is routed around all the
/// same: the others' probe records call their links to it dead, and no
/// route goes through an edge without live links.
const DEPARTURE_GRACE: Duration = Duration::from_secs(5);

/// Edges that left the registry lately, kept in the view routes are
/// computed from for [`DEPARTURE_GRACE`] (their registration only: their
/// own probe record went with their lease, and links to them count as the
/// others measure them).
#[derive(Default)]
struct Departures {
    /// The registry at the last pass.
    seen: BTreeMap<EdgeId, EdgeRecord>,
    left: BTreeMap<EdgeId, (EdgeRecord, Instant)>,
}

impl Departures {
    /// Put the edges that left `edges` within the grace back into it;
    /// returns when the first of them is to go.
    fn keep(&mut self, edges: &mut BTreeMap<EdgeId, EdgeRecord>, now: Instant) -> Option<Instant> {
        for (id, rec) in std::mem::take(&mut self.seen) {
            if !edges.contains_key(&id) {
                self.left.entry(id).or_insert((rec, now));
            }
        }
        self.left.retain(|id, (_, at)| {
            !edges.contains_key(id) && now.saturating_duration_since(*at) < DEPARTURE_GRACE
        });
        self.seen = edges.clone();
        for (id, (rec, _)) in &self.left {
            edges.insert(*id, rec.clone());
        }
        self.left
            .values()
            .map(|(_, at)| *at + DEPARTURE_GRACE)
            .min()
    }
}

/// Watches the region's complete edges (registered, with a probe record)
/// for a mass departure ([`MASS_DEPARTURE_HOLD`]): at least two, and a
/// third of those complete before, gone together. An edge counts as back
/// once its probe record is: it registers before it publishes its probes
/// again, and routes computed in between would miss its links.
#[derive(Default)]
struct MassDeparture {
    /// The complete edges before the departure (or at the last pass).
    before: BTreeSet<EdgeId>,
    since: Option<Instant>,
}

impl MassDeparture {
    /// How much longer routes are held, given the complete edges `now`.
    fn hold(&mut self, complete: BTreeSet<EdgeId>, now: Instant) -> Option<Duration> {
        let gone = self.before.difference(&complete).count();
        let mass = gone >= 2 && gone * 3 >= self.before.len();
        let left = match (mass, self.since) {
            (false, _) => None,
            (true, None) => {
                self.since = Some(now);
                Some(MASS_DEPARTURE_HOLD)
            }
            (true, Some(t)) => Some(MASS_DEPARTURE_HOLD.saturating_sub(now - t)),
        }
        .filter(|left| !left.is_zero());
        if left.is_none() {
            self.before = complete;
            self.since = None;
        }
        left
    }
}

/// Delay between failed campaigns (store down): the store's own retry
/// covers short blips; this only bounds log noise and load.
const CAMPAIGN_RETRY: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
pub struct RoutingOptions {
    pub region: String,
    pub name: String,
    pub debounce: Duration,
    pub recompute: Duration,
    pub election_ttl: Duration,
    pub cost: CostModel,
    pub hysteresis: HysteresisPolicy,
    /// Route hierarchically (docs/control-plane.md "Routes at scale") once
    /// the registry holds this many edges; flat below 90% of it.
    pub hierarchical_from_edges: usize,
    /// Hubs of this region at most (hierarchical routing).
    pub hubs_per_region: usize,
}

impl RoutingOptions {
    /// The controller binary's defaults (`config.rs`): debounce 200 ms,
    /// recompute every 5 s, election TTL 3 s, default cost and hysteresis.
    pub fn new(region: &str, name: &str) -> Self {
        RoutingOptions {
            region: region.into(),
            name: name.into(),
            debounce: Duration::from_millis(crate::config::default_debounce_ms()),
            recompute: Duration::from_millis(crate::config::default_recompute_ms()),
            election_ttl: Duration::from_millis(crate::config::default_election_ttl_ms()),
            cost: CostModel::default(),
            hysteresis: HysteresisPolicy::default(),
            hierarchical_from_edges: crate::config::default_hierarchical_from_edges(),
            hubs_per_region: topology::hierarchy::HubPolicy::default().hubs_per_region,
        }
    }

    /// Quicker timers for tests and small demos: debounce 50 ms, recompute
    /// every second, election TTL 2 s (etcd's floor).
    pub fn quick(region: &str, name: &str) -> Self {
        RoutingOptions {
            debounce: Duration::from_millis(50),
            recompute: Duration::from_secs(1),
            election_ttl: Duration::from_secs(2),
            ..Self::new(region, name)
        }
    }
}

/// Whether this controller leads its region (for metrics, API, tests).
#[derive(Clone)]
pub struct LeaderState(watch::Sender<bool>);

impl Default for LeaderState {
    fn default() -> Self {
        LeaderState(watch::channel(false).0)
    }
}

impl LeaderState {
    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }
    fn set(&self, v: bool, opts: &RoutingOptions) {
        self.0.send_replace(v);
        metrics::gauge!("rtn_controller_leader", "region" => opts.region.clone(), "controller" => opts.name.clone())
            .set(if v { 1.0 } else { 0.0 });
    }
}

/// The running parts of a controller (without its HTTP API).
pub struct Controller {
    pub mesh: SharedMesh,
    pub leader: LeaderState,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Controller {
    pub fn start(store: Arc<dyn ControlStore>, keys: KeyLayout, opts: RoutingOptions) -> Self {
        crate::metrics::build_info(&opts.region, &opts.name);
        let store = crate::metrics::MeteredStore::wrap(store, &opts.region, &opts.name);
        let mesh = SharedMesh::default();
        let leader = LeaderState::default();
        leader.set(false, &opts);
        let (stop, stop_rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(mesh::mirror(store.clone(), keys.clone(), mesh.clone())),
            tokio::spawn(lead(
                store.clone(),
                keys.clone(),
                opts.clone(),
                mesh.clone(),
                leader.clone(),
                stop_rx,
            )),
        ];
        Controller {
            mesh,
            leader,
            tasks,
            stop,
        }
    }

    /// Stop; a leader resigns so that a standby takes over at once.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        // The leader loop resigns and returns on its own.
        if let Some(lead) = self.tasks.pop() {
            let _ = tokio::time::timeout(Duration::from_secs(3), lead).await;
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn lead(
    store: Arc<dyn ControlStore>,
    keys: KeyLayout,
    opts: RoutingOptions,
    mesh: SharedMesh,
    leader: LeaderState,
    mut stop: watch::Receiver<bool>,
) {
    let election = Election::new(
        store.clone(),
        keys.leader(&opts.region),
        opts.name.clone(),
        opts.election_ttl,
    );
    loop {
        let leadership = tokio::select! {
            l = election.campaign() => l,
            _ = stop.wait_for(|s| *s) => return,
        };
        let mut leadership = match leadership {
            Ok(l) => l,
            Err(e) => {
                warn!(region = %opts.region, error = %e, "campaign failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(CAMPAIGN_RETRY) => continue,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        };
        leader.set(true, &opts);
        leadership_change(&opts, "acquired");
        info!(region = %opts.region, name = %opts.name, "leading the region");
        let stopped =
            publish_while_leading(&store, &keys, &opts, &mesh, &mut leadership, &mut stop).await;
        leader.set(false, &opts);
        if stopped {
            leadership_change(&opts, "resigned");
            match election.resign(leadership).await {
                Ok(()) => {
                    info!(region = %opts.region, name = %opts.name, "resigned the region's leadership")
                }
                Err(e) => {
                    warn!(region = %opts.region, name = %opts.name, error = %e, "resigning failed; the lease will expire")
                }
            }
            return;
        }
        leadership_change(&opts, "lost");
        warn!(region = %opts.region, name = %opts.name, "leadership lost");
    }
}

/// Whether to route hierarchically with `edges` registered, having done so
/// (`now`) or not: from `hierarchical_from_edges` on, and back to flat only
/// below 90% of it, so that a registry hovering at the threshold does not
/// rewrite every routes record at each crossing.
fn routes_hierarchically(now: bool, edges: usize, opts: &RoutingOptions) -> bool {
    let from = opts.hierarchical_from_edges;
    if now {
        edges * 10 >= from * 9
    } else {
        edges >= from
    }
}

/// Publish the region's record and exits when they say something new
/// (hierarchical routing), or delete them once routing is flat again.
async fn publish_region(
    store: &Arc<dyn ControlStore>,
    keys: &KeyLayout,
    opts: &RoutingOptions,
    records: Option<(RegionRecord, ExitsRecord)>,
    published: &mut Option<(RegionRecord, ExitsRecord, Instant)>,
    view: &crate::mesh::MeshView,
    graph: &topology::MeshGraph,
) {
    let (region_key, exits_key) = (keys.region(&opts.region), keys.exits(&opts.region));
    let Some((region, exits)) = records else {
        if published.is_some() || view.regions.contains_key(&opts.region) {
            let gone =
                store.delete(&region_key).await.is_ok() && store.delete(&exits_key).await.is_ok();
            if gone {
                *published = None;
            }
        }
        return;
    };
    let (old_region, old_exits, drift_due) = match published.as_ref() {
        Some((r, e, at)) => (Some(r), Some(e), at.elapsed() >= COST_DRIFT_EVERY),
        None => (None, None, true),
    };
    let gone = |(a, b): (EdgeId, EdgeId)| graph.link(a, b).is_none();
    let region_news = !old_region.is_some_and(|o| {
        let urgent = !o.same_reach(&region) || o.links().any(gone);
        !urgent && (o.same_as(&region) || !drift_due)
    });
    let exits_news = !old_exits.is_some_and(|o| {
        let urgent = o.links.iter().any(|l| gone((l.0, l.1)));
        !urgent && (o.same_as(&exits) || !drift_due)
    });
    if !region_news && !exits_news {
        return;
    }
    // Exits first: an edge that reads the new table with the old exits
    // composes over both for a moment; either alone is a valid route.
    let mut ok = true;
    if exits_news {
        ok &= log_put(
            store.put(&exits_key, exits.to_bytes(), None).await,
            opts,
            "exits",
        );
    }
    if region_news {
        ok &= log_put(
            store.put(&region_key, region.to_bytes(), None).await,
            opts,
            "region",
        );
    }
    if ok {
        metrics::counter!("rtn_controller_region_publications_total", "region" => opts.region.clone())
            .increment(1);
        info!(region = %opts.region, region_record = region_news, exits = exits_news, "region records published");
        // A record left unchanged keeps its old content as the reference.
        let region = if region_news {
            region
        } else {
            old_region.cloned().unwrap_or(region)
        };
        let exits = if exits_news {
            exits
        } else {
            old_exits.cloned().unwrap_or(exits)
        };
        *published = Some((region, exits, Instant::now()));
    }
}

fn log_put<T, E: std::fmt::Display>(r: Result<T, E>, opts: &RoutingOptions, what: &str) -> bool {
    match r {
        Ok(_) => true,
        Err(e) => {
            warn!(region = %opts.region, record = what, error = %e, "publishing failed; will retry");
            false
        }
    }
}

fn leadership_change(opts: &RoutingOptions, event: &'static str) {
    metrics::counter!("rtn_controller_leadership_changes_total", "region" => opts.region.clone(), "controller" => opts.name.clone(), "event" => event)
        .increment(1);
}

/// What one pass computed: the graph, every source's routes (merged with
/// the previous ones by hysteresis), and when routing hierarchically the
/// region's record and exits.
struct Computed {
    graph: MeshGraph,
    routes: BTreeMap<EdgeId, RouteSet>,
    region_records: Option<(RegionRecord, ExitsRecord)>,
}

fn compute(
    view: &MeshView,
    previous: &BTreeMap<EdgeId, RouteSet>,
    opts: &RoutingOptions,
    hierarchical: bool,
) -> Computed {
    let graph = if hierarchical {
        build_graph_of(view, opts.cost, region_links(view, &opts.region))
    } else {
        build_graph(view, opts.cost)
    };
    let (routes, region_records) = if hierarchical {
        let h = hierarchical_routes(&graph, view, previous, opts, now_ms());
        (h.local, Some((h.region, h.exits)))
    } else {
        let routes = region_routes(&graph, view, &opts.region, previous, &opts.hysteresis);
        (routes, None)
    };
    Computed {
        graph,
        routes,
        region_records,
    }
}

/// Recompute and publish routes until leadership is lost (false) or the
/// controller stops (true).
async fn publish_while_leading(
    store: &Arc<dyn ControlStore>,
    keys: &KeyLayout,
    opts: &RoutingOptions,
    mesh: &SharedMesh,
    leadership: &mut Leadership,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let mut changes = mesh.subscribe();
    // Start from what the previous leader published, so a takeover does not
    // flap routes that hysteresis was holding.
    let mut published: BTreeMap<EdgeId, RoutesRecord> = {
        let view = mesh.read();
        view.routes
            .iter()
            .filter(|(id, _)| view.edges.get(id).is_some_and(|e| e.region == opts.region))
            .map(|(id, r)| (*id, r.clone()))
            .collect()
    };
    let mut previous: BTreeMap<EdgeId, RouteSet> = published
        .values()
        .map(|r| (r.edge, r.route_set()))
        .collect();
    let mut region_published: Option<(RegionRecord, ExitsRecord, Instant)> = None;
    let mut hierarchical = false;
    let mut forced = true;
    let mut tick = tokio::time::interval(opts.recompute);
    let mut mass = MassDeparture::default();
    let mut departures = Departures::default();
    loop {
        if leadership.is_lost() {
            return false;
        }
        let started = Instant::now();
        let mut view = mesh.take_snapshot();
        let was = hierarchical;
        hierarchical = routes_hierarchically(hierarchical, view.edges.len(), opts);
        // Hierarchical routes of this region depend on its own edges and the
        // region records only: changes elsewhere wait for the periodic
        // recomputation (flat routes depend on every link).
        let concerned =
            !(hierarchical && was) || forced || view.touched.concern(&view, &opts.region);
        let complete = view
            .edges
            .values()
            .filter(|e| e.region == opts.region && view.probes.contains_key(&e.id))
            .map(|e| e.id)
            .collect();
        let hold_left = mass.hold(complete, started);
        if hold_left == Some(MASS_DEPARTURE_HOLD) {
            warn!(region = %opts.region, name = %opts.name, hold_s = MASS_DEPARTURE_HOLD.as_secs(), "many edges left the registry at once: holding their routes for them to register again");
        }
        // A change held back is computed on the next pass.
        let held_back = concerned && hold_left.is_some();
        let departures_end = departures.keep(&mut view.edges, started);
        // The hold ends, or a departed edge's grace: compute again then.
        let wake_at = hold_left
            .map(|left| started + left)
            .into_iter()
            .chain(departures_end)
            .min();
        if concerned && hold_left.is_none() {
            // On a blocking thread: a big region's pass takes up to a
            // second, which on a runtime worker would hold up the election's
            // keepalives, the store's watches and the API's answers.
            let (pass_view, pass_previous, pass_opts) =
                (view, std::mem::take(&mut previous), opts.clone());
            let pass = tokio::task::spawn_blocking(move || {
                let computed = compute(&pass_view, &pass_previous, &pass_opts, hierarchical);
                (pass_view, computed)
            });
            let (
                pass_view,
                Computed {
                    graph,
                    routes,
                    region_records,
                },
            ) = match pass.await {
                Ok(done) => done,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // The runtime is shutting down.
                Err(_) => return true,
            };
            view = pass_view;
            let took = started.elapsed();
            crate::metrics::compute_duration(&opts.region, took);
            metrics::gauge!("rtn_controller_graph_edges", "region" => opts.region.clone())
                .set(graph.node_count() as f64);
            metrics::gauge!("rtn_controller_graph_links", "region" => opts.region.clone())
                .set(graph.link_count() as f64);
            metrics::gauge!("rtn_controller_hierarchical", "region" => opts.region.clone())
                .set(if hierarchical { 1.0 } else { 0.0 });
            let mut changed = 0usize;
            for (id, set) in &routes {
                let rec = to_record(set, &opts.region, &opts.name, now_ms(), hierarchical);
                let unchanged = published.get(id).is_some_and(|old| old.same_routes(&rec));
                if unchanged || leadership.is_lost() {
                    continue;
                }
                match store.put(&keys.route(*id), rec.to_bytes(), None).await {
                    Ok(_) => {
                        metrics::counter!("rtn_controller_route_publications_total", "region" => opts.region.clone())
                            .increment(1);
                        changed += 1;
                        published.insert(*id, rec);
                    }
                    Err(e) => {
                        warn!(region = %opts.region, edge = id, error = %e, "publishing routes failed; will retry")
                    }
                }
            }
            if changed > 0 {
                info!(region = %opts.region, name = %opts.name, changed, edges = routes.len(), hierarchical, compute_ms = took.as_secs_f64() * 1e3, "routes published");
            }
            if !leadership.is_lost() {
                publish_region(
                    store,
                    keys,
                    opts,
                    region_records,
                    &mut region_published,
                    &view,
                    &graph,
                )
                .await;
            }
            // Routes of the region's edges that left the registry go too, once
            // the view is fully synced (a half-loaded view would delete live
            // edges' routes; harmless, as edges keep their last routes, but
            // churn). Records from before regions were recorded count as ours
            // when this controller published them.
            if mesh.store_connected() {
                let gone: Vec<EdgeId> = view
                    .routes
                    .values()
                    .filter(|r| !view.edges.contains_key(&r.edge))
                    .filter(|r| r.region == opts.region || published.contains_key(&r.edge))
                    .map(|r| r.edge)
                    .collect();
                for id in gone {
                    if store.delete(&keys.route(id)).await.is_ok() {
                        published.remove(&id);
                    }
                }
            }
            previous = routes;
        }
        // Wait for a change (then let the burst settle) or the periodic tick.
        let changed = tokio::select! {
            _ = leadership.lost() => return false,
            _ = stop.wait_for(|s| *s) => return true,
            _ = tick.tick() => false,
            _ = tokio::time::sleep_until(wake_at.unwrap_or(started).into()), if wake_at.is_some() => false,
            r = changes.changed() => {
                if r.is_err() {
                    return false;
                }
                true
            }
        };
        forced = !changed || held_back;
        if changed {
            tokio::select! {
                _ = tokio::time::sleep(opts.debounce) => {}
                _ = stop.wait_for(|s| *s) => return true,
            }
            changes.borrow_and_update();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_turns_hierarchical_at_the_threshold_and_back_below_ninety_percent() {
        let opts = RoutingOptions {
            hierarchical_from_edges: 500,
            ..RoutingOptions::new("eu", "c")
        };
        assert!(!routes_hierarchically(false, 499, &opts));
        assert!(routes_hierarchically(false, 500, &opts));
        assert!(routes_hierarchically(true, 450, &opts), "inside the band");
        assert!(!routes_hierarchically(true, 449, &opts));
        let always = RoutingOptions {
            hierarchical_from_edges: 0,
            ..opts
        };
        assert!(routes_hierarchically(false, 0, &always));
    }

    #[test]
    fn a_third_of_the_complete_edges_leaving_together_holds_the_routes() {
        let t0 = Instant::now();
        let set = |ids: &[EdgeId]| ids.iter().copied().collect::<BTreeSet<_>>();
        let mut m = MassDeparture::default();
        assert_eq!(m.hold(set(&[1, 2, 3, 4, 5, 6, 7, 8, 9]), t0), None);
        assert_eq!(
            m.hold(set(&[1, 2, 3, 5, 6, 7, 8, 9]), t0),
            None,
            "one edge died"
        );
        assert_eq!(m.hold(set(&[1, 2, 3, 7, 8, 9]), t0), None, "two of eight");
        // Three of six at once: held, until the hold ends or they are back.
        assert_eq!(m.hold(set(&[1, 2, 3]), t0), Some(MASS_DEPARTURE_HOLD));
        assert_eq!(
            m.hold(set(&[1, 2, 3, 7]), t0 + S),
            Some(MASS_DEPARTURE_HOLD - S)
        );
        assert_eq!(m.hold(set(&[1, 2, 3, 7, 8, 9]), t0 + 2 * S), None, "back");
        // Again, and they stay away: held for the hold, then let go.
        assert!(m.hold(set(&[1, 2]), t0 + 3 * S).is_some());
        assert_eq!(m.hold(set(&[1, 2]), t0 + 3 * S + MASS_DEPARTURE_HOLD), None);
        assert_eq!(m.hold(set(&[1, 2]), t0 + 20 * S), None, "not held again");
        // New edges without probes yet are not a departure.
        assert_eq!(m.hold(set(&[1, 2, 10, 11]), t0 + 21 * S), None);
    }

    #[test]
    fn an_edge_that_left_stays_in_the_routes_view_for_the_grace() {
        let rec = |id| crate::compute::tests::edge(id, "eu");
        let registry = |ids: &[EdgeId]| -> BTreeMap<EdgeId, EdgeRecord> {
            ids.iter().map(|id| (*id, rec(*id))).collect()
        };
        let t0 = Instant::now();
        let mut d = Departures::default();
        let mut edges = registry(&[1, 2, 3]);
        assert_eq!(d.keep(&mut edges, t0), None);
        // 2 leaves: kept until the grace ends.
        let mut edges = registry(&[1, 3]);
        assert_eq!(d.keep(&mut edges, t0 + S), Some(t0 + S + DEPARTURE_GRACE));
        assert!(edges.contains_key(&2));
        let mut edges = registry(&[1, 3]);
        d.keep(&mut edges, t0 + 2 * S);
        assert!(edges.contains_key(&2), "still within the grace");
        // Back (a new lease): nothing held any more.
        let mut edges = registry(&[1, 2, 3]);
        assert_eq!(d.keep(&mut edges, t0 + 3 * S), None);
        // 3 leaves and stays away: gone after the grace.
        let mut edges = registry(&[1, 2]);
        d.keep(&mut edges, t0 + 4 * S);
        assert!(edges.contains_key(&3));
        let mut edges = registry(&[1, 2]);
        assert_eq!(d.keep(&mut edges, t0 + 4 * S + DEPARTURE_GRACE), None);
        assert!(!edges.contains_key(&3));
        let mut edges = registry(&[1, 2]);
        d.keep(&mut edges, t0 + 20 * S);
        assert!(!edges.contains_key(&3), "not held again");
    }

    const S: Duration = Duration::from_secs(1);
}
