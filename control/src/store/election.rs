//! Leader election on the control store: one active controller per region.
//!
//! A candidate grants a lease and tries to create the election key under it
//! (compare-and-swap on absence). The holder keeps its lease alive at TTL/3;
//! the others watch the key (holding no lease) and try again when it is
//! deleted, which happens at once when the leader resigns and within one
//! lease TTL when it dies.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{ControlStore, Expect, LeaseId, Result, Revision, WatchEvent};

pub struct Election<S: ControlStore + ?Sized> {
    store: Arc<S>,
    key: String,
    candidate: String,
    ttl: Duration,
}

/// Held while this candidate leads. `lost()` turns true if the lease could
/// not be kept alive (the store was unreachable for a TTL).
pub struct Leadership {
    pub lease: LeaseId,
    pub revision: Revision,
    lost: watch::Receiver<bool>,
    keepalive: tokio::task::JoinHandle<()>,
}

impl Leadership {
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves when leadership is lost.
    pub async fn lost(&mut self) {
        while !*self.lost.borrow() {
            if self.lost.changed().await.is_err() {
                return;
            }
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

impl<S: ControlStore + ?Sized> Election<S> {
    pub fn new(
        store: Arc<S>,
        key: impl Into<String>,
        candidate: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Election {
            store,
            key: key.into(),
            candidate: candidate.into(),
            ttl,
        }
    }

    /// The current leader's name, if any.
    pub async fn leader(&self) -> Result<Option<String>> {
        Ok(self
            .store
            .get(&self.key)
            .await?
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    /// Wait until this candidate leads.
    ///
    /// A standby holds no lease while it waits: it watches the key, and only
    /// once the key is gone grants a lease and tries to take it. So nothing
    /// is left running when a campaign fails or is cancelled; at worst a
    /// lease granted just before lapses by itself within one TTL.
    pub async fn campaign(&self) -> Result<Leadership> {
        // Watch from here for the holder's departure (None: it is vacant).
        let mut occupied = self
            .store
            .get(&self.key)
            .await?
            .map(|kv| kv.mod_revision + 1);
        loop {
            if let Some(from) = occupied {
                self.wait_for_vacancy(from).await?;
            }
            let lease = self.store.grant_lease(self.ttl).await?;
            let value = Bytes::from(self.candidate.clone());
            let swapped = self
                .store
                .compare_and_swap(&self.key, Expect::Absent, value, Some(lease))
                .await;
            match swapped {
                Ok(Ok(revision)) => {
                    info!(key = %self.key, candidate = %self.candidate, "became leader");
                    let (lost_tx, lost) = watch::channel(false);
                    let keepalive =
                        tokio::spawn(keep_alive(self.store.clone(), lease, self.ttl, lost_tx));
                    return Ok(Leadership {
                        lease,
                        revision,
                        lost,
                        keepalive,
                    });
                }
                Ok(Err(current)) => {
                    // Another candidate was quicker: wait for it to go.
                    let _ = self.store.revoke_lease(lease).await;
                    occupied = Some(current.map(|kv| kv.mod_revision + 1).unwrap_or(0));
                }
                Err(e) => {
                    let _ = self.store.revoke_lease(lease).await;
                    return Err(e);
                }
            }
        }
    }

    /// Give up leadership now, so a standby takes over at once.
    pub async fn resign(&self, leadership: Leadership) -> Result<()> {
        leadership.keepalive.abort();
        self.store.revoke_lease(leadership.lease).await
    }

    async fn wait_for_vacancy(&self, from: Revision) -> Result<()> {
        let mut watch = self.store.watch_prefix(&self.key, from).await?;
        // The key may have gone between the failed swap and the watch.
        if self.store.get(&self.key).await?.is_none() {
            return Ok(());
        }
        while let Some(batch) = watch.recv().await {
            if batch?
                .iter()
                .any(|e| matches!(e, WatchEvent::Delete { key, .. } if *key == self.key))
            {
                return Ok(());
            }
        }
        // Watch ended: let the caller re-check.
        Ok(())
    }
}

async fn keep_alive<S: ControlStore + ?Sized>(
    store: Arc<S>,
    lease: LeaseId,
    ttl: Duration,
    lost: watch::Sender<bool>,
) {
    // etcd practice: refresh at a third of the TTL so two refreshes can fail
    // before the lease lapses.
    let mut tick = tokio::time::interval(ttl / 3);
    let started = tokio::time::Instant::now();
    let mut last_ok = started;
    loop {
        tick.tick().await;
        match store.keep_alive(lease).await {
            Ok(()) => last_ok = tokio::time::Instant::now(),
            Err(super::StoreError::LeaseNotFound(_)) => {
                warn!(lease, "leadership lease expired");
                let _ = lost.send(true);
                return;
            }
            Err(e) => {
                warn!(lease, error = %e, "lease keepalive failed");
                if last_ok.elapsed() >= ttl {
                    let _ = lost.send(true);
                    return;
                }
            }
        }
    }
}
