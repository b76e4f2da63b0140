//! The control store on a real etcd cluster (etcd-client crate).
//!
//! What the crate leaves to us, handled here:
//! - reconnecting: every failed call drops the connection and the next call
//!   dials the endpoints again (after an etcd restart, calls fail until it is
//!   back, then work without a restart of ours);
//! - watches: a broken or silent watch is re-created from the last seen
//!   revision + 1, so no event is missed or repeated; silence is detected by
//!   asking for progress notifications and timing out when none come;
//! - leases: callers refresh at TTL/3 (see `election.rs`); a refresh that
//!   finds the lease gone reports `LeaseNotFound`.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use tokio::sync::{mpsc, Mutex};
use tracing::{debug, warn};

use super::{
    ControlStore, Expect, KeyValue, LeaseId, Result, Revision, StoreError, WatchEvent, WatchStream,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A watch that has said nothing for this long is asked for progress; one
/// that stays silent for twice as long is re-created.
const WATCH_SILENCE: Duration = Duration::from_secs(5);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

pub struct EtcdStore {
    endpoints: Vec<String>,
    client: Mutex<Option<Client>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn to_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    }
}

async fn connect(endpoints: &[String]) -> Result<Client> {
    match tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(endpoints, None)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => Err(StoreError::Unavailable("connect timed out".into())),
    }
}

impl EtcdStore {
    /// Connect to `endpoints` (e.g. `http://127.0.0.1:2379`).
    pub async fn connect(endpoints: Vec<String>) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(StoreError::Invalid("no etcd endpoints".into()));
        }
        let client = connect(&endpoints).await?;
        Ok(EtcdStore {
            endpoints,
            client: Mutex::new(Some(client)),
        })
    }

    /// A store that dials on first use, so a process can start (and serve on
    /// its last known state) while etcd is down.
    pub fn lazy(endpoints: Vec<String>) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(StoreError::Invalid("no etcd endpoints".into()));
        }
        Ok(EtcdStore {
            endpoints,
            client: Mutex::new(None),
        })
    }

    async fn client(&self) -> Result<Client> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let c = connect(&self.endpoints).await?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Run one call; on failure forget the connection so the next call redials.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let client = self.client().await?;
        match tokio::time::timeout(CALL_TIMEOUT, f(client)).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => {
                if is_connection_error(&e) {
                    *self.client.lock().await = None;
                }
                Err(unavailable(e))
            }
            Err(_) => {
                *self.client.lock().await = None;
                Err(StoreError::Unavailable("etcd call timed out".into()))
            }
        }
    }
}

/// Errors after which the connection is re-dialed (not answers like "lease
/// not found", which the same connection serves fine).
fn is_connection_error(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        // Matched by name: etcd-client does not re-export tonic's Code, and
        // depending on tonic directly would pin its version twice.
        E::GRpcStatus(s) => !matches!(
            format!("{:?}", s.code()).as_str(),
            "NotFound" | "InvalidArgument" | "FailedPrecondition" | "OutOfRange"
        ),
        _ => true,
    }
}

fn lease_gone(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(m) if m.contains("lease not found"))
}

#[async_trait]
impl ControlStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        let resp = self
            .call(|mut c| async move { c.get(key, None).await })
            .await?;
        Ok(resp.kvs().first().map(to_kv))
    }

    async fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let prefix = prefix.to_string();
        let resp = self
            .call(|mut c| async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await })
            .await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok((resp.kvs().iter().map(to_kv).collect(), rev))
    }

    async fn put(&self, key: &str, value: Bytes, lease: Option<LeaseId>) -> Result<Revision> {
        let key = key.to_string();
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        let resp = self
            .call(|mut c| async move { c.put(key, value.to_vec(), opts).await })
            .await
            .map_err(|e| match lease {
                Some(l) if lease_gone(&e) => StoreError::LeaseNotFound(l),
                _ => e,
            })?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let key = key.to_string();
        let resp = self
            .call(|mut c| async move { c.delete(key, None).await })
            .await?;
        Ok(resp.deleted() > 0)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> Result<std::result::Result<Revision, Option<KeyValue>>> {
        let cmp = match expect {
            // A key that does not exist has create_revision 0.
            Expect::Absent => Compare::create_revision(key, CompareOp::Equal, 0),
            Expect::ModRevision(r) => Compare::mod_revision(key, CompareOp::Equal, r),
        };
        let txn = Txn::new()
            .when([cmp])
            .and_then([TxnOp::put(
                key,
                value.to_vec(),
                lease.map(|l| PutOptions::new().with_lease(l)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.call(|mut c| async move { c.txn(txn).await }).await?;
        if resp.succeeded() {
            return Ok(Ok(resp.header().map(|h| h.revision()).unwrap_or(0)));
        }
        let current = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => Some(g.kvs().first().map(to_kv)),
            _ => None,
        });
        Ok(Err(current.flatten()))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let secs = ttl.as_secs_f64().ceil() as i64;
        if secs <= 0 {
            return Err(StoreError::Invalid("lease TTL must be positive".into()));
        }
        let resp = self
            .call(|mut c| async move { c.lease_grant(secs, None).await })
            .await?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let ttl = match self
            .call(|mut c| async move {
                let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                Ok(stream.message().await?.map(|r| r.ttl()).unwrap_or(0))
            })
            .await
        {
            Err(e) if lease_gone(&e) => return Err(StoreError::LeaseNotFound(lease)),
            other => other?,
        };
        if ttl <= 0 {
            return Err(StoreError::LeaseNotFound(lease));
        }
        Ok(())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.call(|mut c| async move { c.lease_revoke(lease).await })
            .await
            .map_err(|e| {
                if lease_gone(&e) {
                    StoreError::LeaseNotFound(lease)
                } else {
                    e
                }
            })?;
        Ok(())
    }

    async fn watch_prefix(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        let (tx, rx) = mpsc::channel(1_024);
        let start = if from > 0 {
            from
        } else {
            // "Only new changes": start right after the current revision.
            self.get_prefix(prefix).await?.1 + 1
        };
        // Fail fast if etcd is unreachable now; later breaks are healed.
        self.client().await?;
        tokio::spawn(run_watch(
            self.endpoints.clone(),
            prefix.to_string(),
            start,
            tx,
        ));
        Ok(rx)
    }
}

/// Keep one prefix watch alive across etcd restarts, resuming from the next
/// revision each time, until the receiver is dropped.
async fn run_watch(
    endpoints: Vec<String>,
    prefix: String,
    mut next: Revision,
    tx: mpsc::Sender<Result<Vec<WatchEvent>>>,
) {
    let mut backoff = RETRY_MIN;
    loop {
        if tx.is_closed() {
            return;
        }
        let opened = async {
            let mut client = connect(&endpoints).await?;
            let opts = WatchOptions::new()
                .with_prefix()
                .with_start_revision(next)
                .with_progress_notify();
            client
                .watch(prefix.clone(), Some(opts))
                .await
                .map_err(unavailable)
        };
        let mut stream = match opened.await {
            Ok(s) => s,
            Err(e) => {
                debug!(%prefix, error = %e, "watch: etcd unreachable, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
                continue;
            }
        };
        backoff = RETRY_MIN;
        let mut asked_progress = false;
        loop {
            let msg = tokio::select! {
                m = tokio::time::timeout(WATCH_SILENCE, stream.message()) => m,
                _ = tx.closed() => return,
            };
            match msg {
                Err(_) if !asked_progress => {
                    // Silent: a healthy watch answers a progress request.
                    asked_progress = stream.request_progress().await.is_ok();
                    if !asked_progress {
                        break;
                    }
                }
                Err(_) => {
                    warn!(%prefix, "watch silent after a progress request; re-creating");
                    break;
                }
                Ok(Ok(Some(resp))) => {
                    asked_progress = false;
                    if resp.compact_revision() > 0 && resp.compact_revision() >= next {
                        let _ = tx
                            .send(Err(StoreError::Compacted {
                                requested: next,
                                oldest: resp.compact_revision(),
                            }))
                            .await;
                        return;
                    }
                    if resp.canceled() {
                        break;
                    }
                    let events: Vec<WatchEvent> = resp
                        .events()
                        .iter()
                        .filter_map(|e| {
                            let kv = e.kv()?;
                            Some(match e.event_type() {
                                EventType::Put => WatchEvent::Put(to_kv(kv)),
                                EventType::Delete => WatchEvent::Delete {
                                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                                    mod_revision: kv.mod_revision(),
                                },
                            })
                        })
                        .filter(|e| e.revision() >= next)
                        .collect();
                    if let Some(last) = events.last() {
                        next = last.revision() + 1;
                        if tx.send(Ok(events)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => break,
            }
        }
        tokio::time::sleep(RETRY_MIN).await;
    }
}
