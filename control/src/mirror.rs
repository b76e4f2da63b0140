//! A per-edge directory of records (`edges/`, `probes/`, ...) mirrored in
//! memory from a [`PrefixWatcher`](crate::store::watcher::PrefixWatcher):
//! controllers mirror every directory, edges the registry.

use std::collections::BTreeMap;

use protocol::EdgeId;
use tracing::warn;

use crate::keys::KeyLayout;
use crate::records::Record;
use crate::store::watcher::Update;
use crate::store::WatchEvent;

/// Apply a watch update of the per-edge directory `dir` to `map`. Values
/// that do not decode, or whose id disagrees with their key, are dropped
/// (and replace an earlier good value: it is no longer what the writer
/// means).
pub fn apply<R: Record>(
    keys: &KeyLayout,
    dir: &str,
    map: &mut BTreeMap<EdgeId, R>,
    update: Update,
) {
    let decode = |key: &str, value: &[u8]| -> Option<(EdgeId, R)> {
        let id = keys.id_in(dir, key)?;
        match R::from_bytes(value) {
            Ok(r) if r.edge_id().is_none_or(|own| own == id) => Some((id, r)),
            Ok(_) => {
                warn!(key, "skipping a record filed under another edge's key");
                None
            }
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
                let Some(id) = keys.id_in(dir, ev.key()) else {
                    continue;
                };
                match ev {
                    WatchEvent::Put(kv) => match decode(&kv.key, &kv.value) {
                        Some((_, r)) => {
                            map.insert(id, r);
                        }
                        None => {
                            map.remove(&id);
                        }
                    },
                    WatchEvent::Delete { .. } => {
                        map.remove(&id);
                    }
                }
            }
        }
    }
}
