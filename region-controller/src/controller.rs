//! One region controller: mirrors the mesh, campaigns for its region's
//! leadership, and while it leads recomputes and publishes the routes of the
//! region's edges. One supervised loop per concern, as in moq-relay's
//! cluster: the mirror, the leader loop, the API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::EdgeId;
use tokio::sync::watch;
use topology::{CostModel, HysteresisPolicy, RouteSet};
use tracing::{info, warn};

use crate::compute::{build_graph, from_record, region_routes, to_record};
use crate::mesh::{self, SharedMesh};
use control::clock::now_ms;
use control::keys::KeyLayout;
use control::records::{Record, RoutesRecord};
use control::store::{ControlStore, Election, Leadership};

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

fn leadership_change(opts: &RoutingOptions, event: &'static str) {
    metrics::counter!("rtn_controller_leadership_changes_total", "region" => opts.region.clone(), "controller" => opts.name.clone(), "event" => event)
        .increment(1);
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
        .map(|r| (r.edge, from_record(r)))
        .collect();
    let mut tick = tokio::time::interval(opts.recompute);
    loop {
        if leadership.is_lost() {
            return false;
        }
        let started = Instant::now();
        let view = mesh.snapshot();
        let graph = build_graph(&view, opts.cost);
        let routes = region_routes(&graph, &view, &opts.region, &previous, &opts.hysteresis);
        let took = started.elapsed();
        crate::metrics::compute_duration(&opts.region, took);
        metrics::gauge!("rtn_controller_graph_edges", "region" => opts.region.clone())
            .set(graph.node_count() as f64);
        metrics::gauge!("rtn_controller_graph_links", "region" => opts.region.clone())
            .set(graph.link_count() as f64);
        let mut changed = 0usize;
        for (id, set) in &routes {
            let rec = to_record(set, &opts.region, &opts.name, now_ms());
            let unchanged = published
                .get(id)
                .is_some_and(|old| old.routes == rec.routes);
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
            info!(region = %opts.region, name = %opts.name, changed, edges = routes.len(), compute_ms = took.as_secs_f64() * 1e3, "routes published");
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
        // Wait for a change (then let the burst settle) or the periodic tick.
        let changed = tokio::select! {
            _ = leadership.lost() => return false,
            _ = stop.wait_for(|s| *s) => return true,
            _ = tick.tick() => false,
            r = changes.changed() => {
                if r.is_err() {
                    return false;
                }
                true
            }
        };
        if changed {
            tokio::select! {
                _ = tokio::time::sleep(opts.debounce) => {}
                _ = stop.wait_for(|s| *s) => return true,
            }
            changes.borrow_and_update();
        }
    }
}
