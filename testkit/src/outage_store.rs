//! A control store that can be made unreachable on demand (fault
//! injection): the lab's `stop_store` chaos action, and tests of how the
//! control plane rides out a store outage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use control::store::{
    ControlStore, Expect, KeyValue, LeaseId, Result, Revision, StoreError, WatchStream,
};

/// A control store that can be made unreachable: every call fails with
/// `Unavailable` and every open watch breaks, as when etcd is stopped or
/// partitioned away. Leases in the store behind run out meanwhile, as they
/// would in etcd.
pub struct OutageStore {
    inner: Arc<dyn ControlStore>,
    down: AtomicBool,
    outages: watch::Sender<u64>,
}

impl OutageStore {
    pub fn new(inner: Arc<dyn ControlStore>) -> Arc<OutageStore> {
        Arc::new(OutageStore {
            inner,
            down: AtomicBool::new(false),
            outages: watch::channel(0).0,
        })
    }

    pub fn set_down(&self, down: bool) {
        let was = self.down.swap(down, Ordering::AcqRel);
        if down && !was {
            self.outages.send_modify(|n| *n += 1);
        }
    }

    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::Acquire) {
            Err(StoreError::Unavailable(
                "the store was stopped (fault injection)".into(),
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl ControlStore for OutageStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        self.check()?;
        self.inner.get_prefix(prefix).await
    }
    async fn put(&self, key: &str, value: Bytes, lease: Option<LeaseId>) -> Result<Revision> {
        self.check()?;
        self.inner.put(key, value, lease).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.check()?;
        self.inner.delete(key).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> Result<std::result::Result<Revision, Option<KeyValue>>> {
        self.check()?;
        self.inner.compare_and_swap(key, expect, value, lease).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.check()?;
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.check()?;
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.check()?;
        self.inner.revoke_lease(lease).await
    }
    async fn watch_prefix(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        self.check()?;
        let mut inner = self.inner.watch_prefix(prefix, from).await?;
        let mut outages = self.outages.subscribe();
        outages.mark_unchanged();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    batch = inner.recv() => match batch {
                        Some(b) => if tx.send(b).await.is_err() { return },
                        None => return,
                    },
                    _ = outages.changed() => {
                        let _ = tx
                            .send(Err(StoreError::Unavailable("the store was stopped (fault injection)".into())))
                            .await;
                        return;
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::store::MemoryStore;

    #[tokio::test]
    async fn an_outage_fails_calls_and_breaks_watches() {
        let store = OutageStore::new(Arc::new(MemoryStore::new()));
        store
            .put("/k", Bytes::from_static(b"v"), None)
            .await
            .unwrap();
        let mut w = store.watch_prefix("/", 0).await.unwrap();
        store.set_down(true);
        assert!(matches!(
            store.get("/k").await,
            Err(StoreError::Unavailable(_))
        ));
        let broken = tokio::time::timeout(Duration::from_secs(1), w.recv())
            .await
            .unwrap();
        assert!(matches!(broken, Some(Err(StoreError::Unavailable(_)))));
        store.set_down(false);
        assert!(store.get("/k").await.unwrap().is_some());
    }
}
