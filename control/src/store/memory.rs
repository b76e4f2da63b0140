//! The embedded control store: etcd's semantics in one process, for the lab
//! and tests (docs/control-plane.md, "The control store"). Held to the same conformance suite as the
//! etcd store.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    ControlStore, Expect, KeyValue, LeaseId, Result, Revision, StoreError, WatchEvent, WatchStream,
};

/// Events kept for watches that resume from an older revision; older ones
/// are compacted, as etcd does.
const HISTORY: usize = 100_000;
/// How often expired leases are reaped.
const REAP_EVERY: Duration = Duration::from_millis(50);
/// Watch channel depth; a watcher that falls this far behind is cut off and
/// must resume from its last revision.
const WATCH_BUFFER: usize = 1_024;

#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

struct Lease {
    ttl: Duration,
    expires: Instant,
    keys: HashSet<String>,
}

struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Result<Vec<WatchEvent>>>,
}

#[derive(Default)]
struct State {
    kv: BTreeMap<String, KeyValue>,
    revision: Revision,
    next_lease: LeaseId,
    leases: HashMap<LeaseId, Lease>,
    history: VecDeque<WatchEvent>,
    watchers: Vec<Watcher>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A new empty store. Must be called inside a tokio runtime (it spawns
    /// the lease reaper, which stops when the store is dropped).
    pub fn new() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        tokio::spawn(reap(Arc::downgrade(&state)));
        MemoryStore { state }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn reap(state: Weak<Mutex<State>>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let expired: Vec<LeaseId> = st
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            st.end_lease(id);
        }
    }
}

impl State {
    fn publish(&mut self, events: Vec<WatchEvent>) {
        for e in &events {
            self.history.push_back(e.clone());
        }
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        self.watchers.retain(|w| {
            let mine: Vec<WatchEvent> = events
                .iter()
                .filter(|e| e.key().starts_with(&w.prefix))
                .cloned()
                .collect();
            if mine.is_empty() {
                return !w.tx.is_closed();
            }
            // A full channel means a stalled watcher: cut it off (it resumes
            // from its last revision) rather than buffer without bound.
            w.tx.try_send(Ok(mine)).is_ok()
        });
    }

    fn write(&mut self, key: &str, value: Bytes, lease: Option<LeaseId>) -> Result<Revision> {
        if let Some(id) = lease {
            if !self.leases.contains_key(&id) {
                return Err(StoreError::LeaseNotFound(id));
            }
        }
        self.revision += 1;
        let rev = self.revision;
        let create_revision = self.kv.get(key).map(|kv| kv.create_revision).unwrap_or(rev);
        if let Some(old) = self.kv.get(key).and_then(|kv| kv.lease) {
            if Some(old) != lease {
                if let Some(l) = self.leases.get_mut(&old) {
                    l.keys.remove(key);
                }
            }
        }
        if let Some(id) = lease {
            if let Some(l) = self.leases.get_mut(&id) {
                l.keys.insert(key.to_string());
            }
        }
        let kv = KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: rev,
            lease,
        };
        self.kv.insert(key.to_string(), kv.clone());
        self.publish(vec![WatchEvent::Put(kv)]);
        Ok(rev)
    }

    fn remove(&mut self, keys: &[String]) -> bool {
        let present: Vec<&String> = keys.iter().filter(|k| self.kv.contains_key(*k)).collect();
        if present.is_empty() {
            return false;
        }
        // One revision for the whole deletion, as etcd does for a lease.
        self.revision += 1;
        let rev = self.revision;
        let mut events = vec![];
        for k in present {
            if let Some(kv) = self.kv.remove(k) {
                if let Some(l) = kv.lease.and_then(|id| self.leases.get_mut(&id)) {
                    l.keys.remove(k);
                }
                events.push(WatchEvent::Delete {
                    key: k.clone(),
                    mod_revision: rev,
                });
            }
        }
        self.publish(events);
        true
    }

    fn end_lease(&mut self, id: LeaseId) -> bool {
        match self.leases.remove(&id) {
            Some(l) => {
                let keys: Vec<String> = l.keys.into_iter().collect();
                self.remove(&keys);
                true
            }
            None => false,
        }
    }
}

#[async_trait]
impl ControlStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.lock().kv.get(key).cloned())
    }

    async fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let st = self.lock();
        let kvs = st
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Ok((kvs, st.revision))
    }

    async fn put(&self, key: &str, value: Bytes, lease: Option<LeaseId>) -> Result<Revision> {
        self.lock().write(key, value, lease)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.lock().remove(&[key.to_string()]))
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> Result<std::result::Result<Revision, Option<KeyValue>>> {
        let mut st = self.lock();
        let current = st.kv.get(key).cloned();
        let holds = match (&expect, &current) {
            (Expect::Absent, None) => true,
            (Expect::ModRevision(r), Some(kv)) => kv.mod_revision == *r,
            _ => false,
        };
        if !holds {
            return Ok(Err(current));
        }
        st.write(key, value, lease).map(Ok)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(StoreError::Invalid("lease TTL must be positive".into()));
        }
        let mut st = self.lock();
        st.next_lease += 1;
        let id = st.next_lease;
        st.leases.insert(
            id,
            Lease {
                ttl,
                expires: Instant::now() + ttl,
                keys: HashSet::new(),
            },
        );
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut st = self.lock();
        let now = Instant::now();
        let l = st
            .leases
            .get_mut(&lease)
            .ok_or(StoreError::LeaseNotFound(lease))?;
        if l.expires > now {
            l.expires = now + l.ttl;
            return Ok(());
        }
        // Expired but not reaped yet: it is gone.
        st.end_lease(lease);
        Err(StoreError::LeaseNotFound(lease))
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        if self.lock().end_lease(lease) {
            Ok(())
        } else {
            Err(StoreError::LeaseNotFound(lease))
        }
    }

    async fn watch_prefix(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let mut st = self.lock();
        if from > 0 && from <= st.revision {
            let oldest = st
                .history
                .front()
                .map(|e| e.revision())
                .unwrap_or(st.revision + 1);
            if from < oldest {
                return Err(StoreError::Compacted {
                    requested: from,
                    oldest,
                });
            }
            let past: Vec<WatchEvent> = st
                .history
                .iter()
                .filter(|e| e.revision() >= from && e.key().starts_with(prefix))
                .cloned()
                .collect();
            if !past.is_empty() && tx.try_send(Ok(past)).is_err() {
                return Err(StoreError::Unavailable("watch backlog too large".into()));
            }
        }
        st.watchers.push(Watcher {
            prefix: prefix.to_string(),
            tx,
        });
        Ok(rx)
    }
}
