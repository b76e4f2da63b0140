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
    apply_keyed(map, update, |key| keys.id_in(dir, key), R::edge_id);
}

/// Apply a watch update of the per-region directory `dir` (`regions/`) to
/// `map`, as [`apply`] does: a record whose region is not its key's is
/// dropped.
pub fn apply_regions<R: Record>(
    dir: &str,
    map: &mut BTreeMap<String, R>,
    update: Update,
    region_of: impl Fn(&R) -> &str,
) {
    let name = |key: &str| {
        let rest = key.strip_prefix(dir)?;
        (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_string())
    };
    apply_keyed(map, update, name, |r| Some(region_of(r).to_string()));
}

/// [`apply`] for keys named by `name` (`None`: not of this directory), the
/// record's own name being `owner`'s.
fn apply_keyed<K: Ord + Clone, R: Record>(
    map: &mut BTreeMap<K, R>,
    update: Update,
    name: impl Fn(&str) -> Option<K>,
    owner: impl Fn(&R) -> Option<K>,
) {
    let decode = |key: &str, value: &[u8]| -> Option<(K, R)> {
        let id = name(key)?;
        match R::from_bytes(value) {
            Ok(r) if owner(&r).is_none_or(|own| own == id) => Some((id, r)),
            Ok(_) => {
                warn!(key, "skipping a record filed under another's key");
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
                let Some(id) = name(ev.key()) else {
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
