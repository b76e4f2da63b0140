//! The controller's view of the mesh: every edge's registration, load,
//! probe summary and published routes, mirrored from the store.
//!
//! Every controller (leader or standby) keeps this view, so any of them can
//! answer the public API, and a standby that takes over starts from the
//! routes already published (hysteresis carries over: no flap on failover).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use protocol::EdgeId;
use tokio::sync::watch;
use tracing::warn;

use crate::keys::KeyLayout;
use crate::records::{EdgeRecord, EdgeState, LoadRecord, ProbeRecord, Record, RoutesRecord};
use crate::store::watcher::{PrefixWatcher, Update};
use crate::store::{ControlStore, WatchEvent};

#[derive(Clone, Debug, Default)]
pub struct MeshView {
    pub edges: BTreeMap<EdgeId, EdgeRecord>,
    pub loads: BTreeMap<EdgeId, LoadRecord>,
    pub probes: BTreeMap<EdgeId, ProbeRecord>,
    pub routes: BTreeMap<EdgeId, RoutesRecord>,
}

impl MeshView {
    pub fn load_of(&self, id: EdgeId) -> f64 {
        self.loads.get(&id).map(|l| l.load).unwrap_or(0.0)
    }

    pub fn is_serving(&self, id: EdgeId) -> bool {
        self.edges
            .get(&id)
            .is_some_and(|e| e.state == EdgeState::Serving)
    }
}

/// The shared view plus a change counter that wakes whoever recomputes.
#[derive(Clone)]
pub struct SharedMesh {
    view: Arc<RwLock<MeshView>>,
    changed: watch::Sender<u64>,
    connected: watch::Sender<bool>,
}

impl Default for SharedMesh {
    fn default() -> Self {
        SharedMesh {
            view: Arc::default(),
            changed: watch::channel(0).0,
            connected: watch::channel(false).0,
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

    /// Whether all watches are established (for `/readyz` and metrics).
    pub fn store_connected(&self) -> bool {
        *self.connected.borrow()
    }

    fn write(&self, f: impl FnOnce(&mut MeshView)) {
        f(&mut self.view.write().unwrap_or_else(|e| e.into_inner()));
        self.changed.send_modify(|v| *v += 1);
    }
}

/// Mirror the four per-edge directories into `mesh` until cancelled.
pub async fn mirror(store: Arc<dyn ControlStore>, keys: KeyLayout, mesh: SharedMesh) {
    let dirs = [keys.edges(), keys.loads(), keys.probes(), keys.routes()];
    let mut watchers: Vec<PrefixWatcher> = dirs
        .iter()
        .map(|d| PrefixWatcher::new(store.clone(), d.clone()))
        .collect();
    loop {
        let (i, update) = {
            let futs = watchers.iter_mut().enumerate().map(|(i, w)| {
                Box::pin(async move {
                    let u = w.next().await;
                    (i, u)
                })
            });
            futures_select_all(futs).await
        };
        let all = watchers.iter().all(|w| w.is_connected());
        mesh.connected
            .send_if_modified(|c| std::mem::replace(c, all) != all);
        let dir = &dirs[i];
        mesh.write(|v| match i {
            0 => apply(&keys, dir, &mut v.edges, update),
            1 => apply(&keys, dir, &mut v.loads, update),
            2 => apply(&keys, dir, &mut v.probes, update),
            _ => apply(&keys, dir, &mut v.routes, update),
        });
    }
}

/// The first of several futures to finish (a tiny `select_all`, to avoid a
/// dependency on `futures` for one function).
async fn futures_select_all<F, T>(futs: impl Iterator<Item = F>) -> T
where
    F: std::future::Future<Output = T> + Unpin,
{
    let mut futs: Vec<F> = futs.collect();
    std::future::poll_fn(move |cx| {
        for f in futs.iter_mut() {
            if let std::task::Poll::Ready(v) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

fn apply<R: Record>(keys: &KeyLayout, dir: &str, map: &mut BTreeMap<EdgeId, R>, update: Update) {
    let decode = |key: &str, value: &[u8]| -> Option<(EdgeId, R)> {
        let id = keys.id_in(dir, key)?;
        match R::from_bytes(value) {
            Ok(r) => Some((id, r)),
            Err(e) => {
                warn!(key, error = %e, "skipping a bad record");
                None
            }
        }
    };
    match update {
        Update::Snapshot(kvs) => {
            map.clear();
            map.extend(kvs.iter().filter_map(|kv| decode(&kv.key, &kv.value)));
        }
        Update::Events(events) => {
            for ev in events {
                match ev {
                    WatchEvent::Put(kv) => match decode(&kv.key, &kv.value) {
                        Some((id, r)) => {
                            map.insert(id, r);
                        }
                        None => {
                            // A bad value replaces a good one: the old one is
                            // no longer what the writer means.
                            if let Some(id) = keys.id_in(dir, &kv.key) {
                                map.remove(&id);
                            }
                        }
                    },
                    WatchEvent::Delete { key, .. } => {
                        if let Some(id) = keys.id_in(dir, &key) {
                            map.remove(&id);
                        }
                    }
                }
            }
        }
    }
}
