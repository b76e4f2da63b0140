//! The control store: what the control plane needs of etcd, as a trait.
//!
//! Keys are strings under a configurable prefix (e.g. `/rtn/v1/`); values are
//! bytes. Every change gets a store-wide, strictly increasing revision, which
//! watches resume from. Leases expire keys that are not kept alive: an edge
//! registers under one lease, so a killed edge vanishes after its TTL.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

pub mod election;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod memory;
pub mod watcher;

pub use election::{Election, Leadership};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdStore, EtcdTls};
pub use memory::MemoryStore;

/// Store-wide revision of a change (etcd's `mod_revision`).
pub type Revision = i64;
/// A lease id; 0 is never a valid lease.
pub type LeaseId = i64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision at which the key was created (kept across updates).
    pub create_revision: Revision,
    /// Revision of the last change to the key.
    pub mod_revision: Revision,
    pub lease: Option<LeaseId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete { key: String, mod_revision: Revision },
}

impl WatchEvent {
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
}

/// The condition of a compare-and-swap on one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The key must not exist.
    Absent,
    /// The key must exist with this `mod_revision`.
    ModRevision(Revision),
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("lease {0} not found or expired")]
    LeaseNotFound(LeaseId),
    #[error("revision {requested} has been compacted (oldest kept: {oldest})")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    #[error("invalid request: {0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A live watch: batches of events in revision order. The stream ends (None)
/// or yields an error when the watch breaks; resume from the last seen
/// revision + 1.
pub type WatchStream = mpsc::Receiver<Result<Vec<WatchEvent>>>;

#[async_trait]
pub trait ControlStore: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Every key under `prefix`, sorted, and the store revision they were read at.
    async fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)>;
    /// Write `key`; returns the change's revision.
    async fn put(&self, key: &str, value: Bytes, lease: Option<LeaseId>) -> Result<Revision>;
    /// Delete `key`; true if it existed.
    async fn delete(&self, key: &str) -> Result<bool>;
    /// Write `key` only if `expect` holds. `Ok(Ok(revision))` when written,
    /// `Ok(Err(current))` with the key's current value when not.
    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> Result<std::result::Result<Revision, Option<KeyValue>>>;
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;
    /// Refresh a lease once (callers do this every TTL/3).
    async fn keep_alive(&self, lease: LeaseId) -> Result<()>;
    /// End a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;
    /// Watch every key under `prefix`, starting with changes at `from`
    /// (inclusive; 0 = only new changes).
    async fn watch_prefix(&self, prefix: &str, from: Revision) -> Result<WatchStream>;
}
