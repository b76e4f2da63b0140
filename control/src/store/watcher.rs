//! A prefix watch that survives store outages: the consumer sees a snapshot,
//! then changes, and another snapshot only when history it missed was
//! compacted away.
//!
//! The store's watches end when the connection breaks (the etcd store
//! already resumes what it can); this adds the rest: resume from the last
//! revision seen + 1, re-list on compaction, retry with capped backoff while
//! the store is down. Meanwhile the consumer keeps whatever state it built,
//! which is what static stability needs: an outage freezes the view, it
//! never empties it.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{ControlStore, KeyValue, Revision, StoreError, WatchEvent, WatchStream};

/// Delay before the first retry after the store failed: short, as most
/// failures are one dropped connection.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Cap of the retry delay while the store stays down: bounds how long a
/// recovered store waits to be noticed.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What the consumer applies to its view.
#[derive(Debug)]
pub enum Update {
    /// The whole prefix: replace the view.
    Snapshot(Vec<KeyValue>),
    /// Changes since the previous update, in revision order.
    Events(Vec<WatchEvent>),
}

impl Update {
    /// The values this update puts (a snapshot's, or the events' puts, in
    /// order); deletes are left out.
    pub fn puts(self) -> Vec<KeyValue> {
        match self {
            Update::Snapshot(kvs) => kvs,
            Update::Events(evs) => evs
                .into_iter()
                .filter_map(|e| match e {
                    WatchEvent::Put(kv) => Some(kv),
                    WatchEvent::Delete { .. } => None,
                })
                .collect(),
        }
    }
}

pub struct PrefixWatcher {
    store: Arc<dyn ControlStore>,
    prefix: String,
    /// Last revision the consumer has seen (0 before the first snapshot).
    revision: Revision,
    stream: Option<WatchStream>,
    retry: Duration,
    connected: bool,
}

impl PrefixWatcher {
    pub fn new(store: Arc<dyn ControlStore>, prefix: impl Into<String>) -> Self {
        PrefixWatcher {
            store,
            prefix: prefix.into(),
            revision: 0,
            stream: None,
            retry: RETRY_MIN,
            connected: false,
        }
    }

    /// Whether the last attempt to reach the store succeeded.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The next update. Never fails: store errors are retried. Cancel-safe:
    /// dropping the future loses nothing.
    pub async fn next(&mut self) -> Update {
        loop {
            if let Some(stream) = self.stream.as_mut() {
                match stream.recv().await {
                    Some(Ok(events)) if !events.is_empty() => {
                        self.revision = events.last().map(|e| e.revision()).unwrap_or(0);
                        return Update::Events(events);
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => self.broken(&e),
                    None => self.broken(&StoreError::Unavailable("watch ended".into())),
                }
            }
            match self.reconnect().await {
                Ok(Some(snapshot)) => return snapshot,
                Ok(None) => {}
                Err(e) => {
                    if self.connected {
                        warn!(prefix = %self.prefix, error = %e, "store unreachable; keeping the last view");
                    }
                    self.connected = false;
                    tokio::time::sleep(self.retry).await;
                    self.retry = (self.retry * 2).min(RETRY_MAX);
                }
            }
        }
    }

    fn broken(&mut self, e: &StoreError) {
        warn!(prefix = %self.prefix, error = %e, "watch broke; resuming");
        self.stream = None;
    }

    /// Re-establish the watch; a snapshot when one is needed.
    async fn reconnect(&mut self) -> Result<Option<Update>, StoreError> {
        if self.revision > 0 {
            match self
                .store
                .watch_prefix(&self.prefix, self.revision + 1)
                .await
            {
                Ok(stream) => {
                    self.ok();
                    self.stream = Some(stream);
                    return Ok(None);
                }
                Err(StoreError::Compacted { .. }) => {
                    info!(prefix = %self.prefix, "missed history was compacted; re-listing");
                }
                Err(e) => return Err(e),
            }
        }
        let (kvs, revision) = self.store.get_prefix(&self.prefix).await?;
        let stream = self.store.watch_prefix(&self.prefix, revision + 1).await?;
        self.ok();
        self.revision = revision;
        self.stream = Some(stream);
        Ok(Some(Update::Snapshot(kvs)))
    }

    fn ok(&mut self) {
        if !self.connected {
            info!(prefix = %self.prefix, "watching");
        }
        self.connected = true;
        self.retry = RETRY_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use bytes::Bytes;

    #[tokio::test]
    async fn snapshot_then_events_in_order() {
        let store = Arc::new(MemoryStore::new());
        store.put("/p/a", Bytes::from("1"), None).await.unwrap();
        store.put("/q/x", Bytes::from("other"), None).await.unwrap();
        let mut w = PrefixWatcher::new(store.clone(), "/p/");
        let Update::Snapshot(kvs) = w.next().await else {
            panic!("first update must be a snapshot")
        };
        assert_eq!(kvs.len(), 1);
        store.put("/p/b", Bytes::from("2"), None).await.unwrap();
        store.delete("/p/a").await.unwrap();
        let mut keys = Vec::new();
        while keys.len() < 2 {
            let up = tokio::time::timeout(Duration::from_secs(2), w.next())
                .await
                .unwrap();
            let Update::Events(evs) = up else {
                panic!("expected events")
            };
            keys.extend(evs.iter().map(|e| (e.key().to_string(), e.revision())));
        }
        assert_eq!(keys[0].0, "/p/b");
        assert_eq!(keys[1].0, "/p/a");
        assert!(keys[0].1 < keys[1].1);
        assert!(w.is_connected());
    }
}
