//! The controller's view of the mesh: every edge's registration, load,
//! probe summary and published routes, and every region's record, mirrored
//! from the store.
//!
//! Every controller (leader or standby) keeps this view, so any of them can
//! answer the public API, and a standby that takes over starts from the
//! routes already published (hysteresis carries over: no flap on failover).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use protocol::EdgeId;
use tokio::sync::watch;
use tracing::{info, warn};

use control::keys::KeyLayout;
use control::mirror::{apply, apply_regions};
use control::records::{EdgeRecord, LoadRecord, ProbeRecord, RegionRecord, RoutesRecord};
use control::store::watcher::{PrefixWatcher, Update};
use control::store::{ControlStore, WatchEvent};

#[derive(Clone, Debug, Default)]
pub struct MeshView {
    pub edges: BTreeMap<EdgeId, EdgeRecord>,
    pub loads: BTreeMap<EdgeId, LoadRecord>,
    pub probes: BTreeMap<EdgeId, ProbeRecord>,
    pub routes: BTreeMap<EdgeId, RoutesRecord>,
    /// Region records, by region (hierarchical routing only).
    pub regions: BTreeMap<String, RegionRecord>,
    /// What changed since the leader last took a snapshot
    /// ([`SharedMesh::take_snapshot`]).
    pub touched: Touched,
}

/// What the mirror changed since it was last cleared: the edges whose
/// registration, load or probe record came, changed or went, whether a
/// region's members or hubs did, and whether a whole directory was listed
/// again.
#[derive(Clone, Debug, Default)]
pub struct Touched {
    pub edges: std::collections::BTreeSet<EdgeId>,
    pub regions: bool,
    pub everything: bool,
}

impl Touched {
    /// Whether these changes can change `region`'s hierarchical routes:
    /// a record of one of its edges, an edge that came or went, a probe
    /// record with a link to one of its edges (links are used both ways),
    /// another region's members or hubs. A busy mesh's churn elsewhere is
    /// none of these.
    pub fn concern(&self, view: &MeshView, region: &str) -> bool {
        if self.everything || self.regions {
            return true;
        }
        let ours = |id: &EdgeId| view.edges.get(id).is_some_and(|e| e.region == region);
        self.edges.iter().any(|id| {
            !view.edges.contains_key(id)
                || ours(id)
                || view
                    .probes
                    .get(id)
                    .is_some_and(|p| p.links.iter().any(|l| ours(&l.to)))
        })
    }
}

impl MeshView {
    pub fn load_of(&self, id: EdgeId) -> f64 {
        self.loads.get(&id).map(|l| l.load).unwrap_or(0.0)
    }
}

/// How often the mirror checks that the store still answers. Silence on
/// the watches says nothing: etcd watches reconnect inside the store without
/// a word, and a hung etcd answers nothing at all. A read does tell.
const STORE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// A check slower than this counts as failed: etcd answers a read in
/// milliseconds, and a leader election takes about a second.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The shared view plus a change counter that wakes whoever recomputes.
#[derive(Clone)]
pub struct SharedMesh {
    view: Arc<RwLock<MeshView>>,
    changed: watch::Sender<u64>,
    connected: watch::Sender<bool>,
    /// Set once every directory has been loaded; stays set through store
    /// outages, when the last view is served (static stability).
    synced: watch::Sender<bool>,
}

impl Default for SharedMesh {
    fn default() -> Self {
        SharedMesh {
            view: Arc::default(),
            changed: watch::channel(0).0,
            connected: watch::channel(false).0,
            synced: watch::channel(false).0,
        }
    }
}

impl SharedMesh {
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, MeshView> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> MeshView {
        self.read().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Whether the store answers now and every watch is established (the
    /// `store_connected` status and metric).
    pub fn store_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Whether the view was loaded whole at least once (`/readyz`): from
    /// then on the controller can answer, from its last view if the store
    /// is away.
    pub fn synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// A copy of the view with what changed since the last call, which is
    /// cleared (the leader's loop: one taker).
    pub fn take_snapshot(&self) -> MeshView {
        let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
        let snapshot = view.clone();
        view.touched = Touched::default();
        snapshot
    }

    fn write(&self, f: impl FnOnce(&mut MeshView)) {
        f(&mut self.view.write().unwrap_or_else(|e| e.into_inner()));
        self.changed.send_modify(|v| *v += 1);
    }
}

/// Mirror the four per-edge directories into `mesh` until cancelled, and
/// keep `mesh.store_connected()` true to whether the store answers.
pub async fn mirror(store: Arc<dyn ControlStore>, keys: KeyLayout, mesh: SharedMesh) {
    let (answers_tx, answers) = watch::channel(true);
    tokio::join!(
        check_store(store.clone(), keys.health(), answers_tx),
        mirror_watches(store, keys, mesh, answers),
    );
}

/// Read `key` every [`STORE_CHECK_EVERY`]; tell whether the store answered.
async fn check_store(store: Arc<dyn ControlStore>, key: String, answers: watch::Sender<bool>) {
    let mut tick = tokio::time::interval(STORE_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = match tokio::time::timeout(STORE_CHECK_TIMEOUT, store.get(&key)).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                if *answers.borrow() {
                    warn!(error = %e, "the store does not answer; serving the last view");
                }
                false
            }
            Err(_) => {
                if *answers.borrow() {
                    warn!(timeout = ?STORE_CHECK_TIMEOUT, "the store does not answer in time; serving the last view");
                }
                false
            }
        };
        if ok && !*answers.borrow() {
            info!("the store answers again");
        }
        answers.send_if_modified(|a| std::mem::replace(a, ok) != ok);
    }
}

async fn mirror_watches(
    store: Arc<dyn ControlStore>,
    keys: KeyLayout,
    mesh: SharedMesh,
    mut answers: watch::Receiver<bool>,
) {
    let (edges, loads, probes, routes) = (keys.edges(), keys.loads(), keys.probes(), keys.routes());
    let regions = keys.regions();
    let watch = |dir: &String| PrefixWatcher::new(store.clone(), dir.clone());
    let mut w = [
        watch(&edges),
        watch(&loads),
        watch(&probes),
        watch(&routes),
        watch(&regions),
    ];
    loop {
        let [we, wl, wp, wr, wg] = &mut w;
        // `PrefixWatcher::next` is cancel-safe: the branches not taken lose
        // nothing.
        tokio::select! {
            u = we.next() => {
                let ids = touched_ids(&keys, &edges, &u);
                mesh.write(|v| {
                    touch(&mut v.touched, ids);
                    apply(&keys, &edges, &mut v.edges, u)
                })
            }
            u = wl.next() => {
                let put = put_ids(&keys, &loads, &u);
                let ids = touched_ids(&keys, &loads, &u);
                mesh.write(|v| {
                    touch(&mut v.touched, ids);
                    apply(&keys, &loads, &mut v.loads, u);
                    crate::metrics::watch_lag("loads", put.iter().filter_map(|id| Some(v.loads.get(id)?.at_ms)));
                })
            }
            u = wp.next() => {
                let put = put_ids(&keys, &probes, &u);
                let ids = touched_ids(&keys, &probes, &u);
                mesh.write(|v| {
                    touch(&mut v.touched, ids);
                    apply(&keys, &probes, &mut v.probes, u);
                    crate::metrics::watch_lag("probes", put.iter().filter_map(|id| Some(v.probes.get(id)?.at_ms)));
                })
            }
            u = wr.next() => mesh.write(|v| apply(&keys, &routes, &mut v.routes, u)),
            u = wg.next() => mesh.write(|v| {
                let before = region_shapes(&v.regions);
                apply_regions(&regions, &mut v.regions, u, |r| &r.region);
                v.touched.regions |= region_shapes(&v.regions) != before;
            }),
            r = answers.changed() => if r.is_err() { return },
        }
        // Synced only once the update that completed the sync is in the view.
        let watching = w.iter().all(|w| w.is_connected());
        if watching {
            mesh.synced
                .send_if_modified(|s| !std::mem::replace(s, true));
        }
        let connected = watching && *answers.borrow();
        mesh.connected
            .send_if_modified(|c| std::mem::replace(c, connected) != connected);
        metrics::gauge!("rtn_controller_store_connected").set(if connected { 1.0 } else { 0.0 });
    }
}

/// Each region record's members and hubs: what another region's
/// controller depends on (a table's costs only reach edges, which compose).
fn region_shapes(
    regions: &BTreeMap<String, RegionRecord>,
) -> Vec<(String, Vec<EdgeId>, Vec<EdgeId>)> {
    regions
        .values()
        .map(|r| (r.region.clone(), r.members.clone(), r.hubs.clone()))
        .collect()
}

/// The edges a watch update puts or deletes a record of (`None`: a
/// snapshot, which may change anything).
fn touched_ids(keys: &KeyLayout, dir: &str, update: &Update) -> Option<Vec<EdgeId>> {
    match update {
        Update::Snapshot(_) => None,
        Update::Events(evs) => Some(
            evs.iter()
                .filter_map(|e| keys.id_in(dir, e.key()))
                .collect(),
        ),
    }
}

fn touch(t: &mut Touched, ids: Option<Vec<EdgeId>>) {
    match ids {
        Some(ids) => t.edges.extend(ids),
        None => t.everything = true,
    }
}

/// The edges whose records a watch update writes (for the watch lag; a
/// snapshot is not a change and is left out).
fn put_ids(keys: &KeyLayout, dir: &str, update: &Update) -> Vec<EdgeId> {
    match update {
        Update::Snapshot(_) => vec![],
        Update::Events(evs) => evs
            .iter()
            .filter(|e| matches!(e, WatchEvent::Put(_)))
            .filter_map(|e| keys.id_in(dir, e.key()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::tests::{edge, link};

    #[test]
    fn only_changes_near_a_region_concern_it() {
        let mut v = MeshView::default();
        for (id, region) in [(1, "eu"), (2, "eu"), (3, "us"), (4, "us")] {
            v.edges.insert(id, edge(id, region));
        }
        let probes = |from, to| ProbeRecord {
            from,
            at_ms: 0,
            links: vec![link(to, 10.0)],
        };
        v.probes.insert(3, probes(3, 4));
        v.probes.insert(4, probes(4, 1));
        let touched = |ids: &[EdgeId]| Touched {
            edges: ids.iter().copied().collect(),
            ..Touched::default()
        };
        assert!(!touched(&[]).concern(&v, "eu"));
        assert!(!touched(&[3]).concern(&v, "eu"), "us-only probes");
        assert!(touched(&[3]).concern(&v, "us"));
        assert!(touched(&[4]).concern(&v, "eu"), "a link to an eu edge");
        assert!(touched(&[2]).concern(&v, "eu"));
        assert!(touched(&[9]).concern(&v, "eu"), "an edge that went");
        let regions = Touched {
            regions: true,
            ..Touched::default()
        };
        assert!(regions.concern(&v, "eu"));
    }
}
