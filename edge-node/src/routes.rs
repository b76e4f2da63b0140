//! The routes an edge forwards by, and the interface that feeds them.
//!
//! Whoever computes routes (static config, or the region controller through
//! the control store, see `control.rs`) publishes a whole [`RouteTable`]
//! through a [`RouteFeed`]. The edge does not forward on that table as is:
//! [`effective_table`] overlays its own probes' view, switching a path whose
//! first hop this edge sees dead to the controller's backup (or the direct
//! link) before the controller has noticed. The result is swapped in
//! atomically; forwarding reads it without locks held across awaits.
//! Because every relayed packet carries the source-routed tree built from
//! the *ingress* edge's table, edges applying tables at different moments
//! cannot form a loop.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use protocol::{EdgeAddress, EdgeId};
use tokio::sync::watch;

use crate::config::EdgeConfig;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// Increases with every table the feed publishes.
    pub version: u64,
    /// Every edge this edge may need to reach (next hops and destinations),
    /// and how to reach it.
    pub peers: HashMap<EdgeId, EdgeAddress>,
    /// Full overlay path to each destination: `[self, hop, ..., dest]`.
    pub paths: HashMap<EdgeId, Vec<EdgeId>>,
    /// Paths avoiding the first hop of `paths[dest]`, for when that hop dies.
    pub backups: HashMap<EdgeId, Vec<EdgeId>>,
    /// Peers this edge measures with probes (links are kept up to them).
    pub probe: HashSet<EdgeId>,
}

impl RouteTable {
    /// The path to `dest`, falling back to the direct link to a known peer.
    pub fn path(&self, me: EdgeId, dest: EdgeId) -> Option<std::borrow::Cow<'_, [EdgeId]>> {
        if let Some(p) = self.paths.get(&dest) {
            return Some(std::borrow::Cow::Borrowed(p));
        }
        self.peers
            .contains_key(&dest)
            .then(|| std::borrow::Cow::Owned(vec![me, dest]))
    }

    /// Where this edge's clients should go when it leaves: up to `n` live
    /// peers, those this edge measured nearest first (by round trip; its
    /// clients are near it, so they are near its nearest peers, while
    /// every peer of a full mesh is one hop away), then unmeasured ones by
    /// fewest hops. Peers this edge's probes see dead are left out.
    pub fn redirect_order(
        &self,
        me: EdgeId,
        rtt: impl Fn(EdgeId) -> Option<std::time::Duration>,
        dead: impl Fn(EdgeId) -> bool,
        n: usize,
    ) -> Vec<EdgeId> {
        let mut peers: Vec<_> = self
            .peers
            .keys()
            .copied()
            .filter(|&id| id != me && !dead(id))
            .map(|id| {
                let hops = self.path(me, id).map_or(usize::MAX, |p| p.len());
                (rtt(id).unwrap_or(std::time::Duration::MAX), hops, id)
            })
            .collect();
        peers.sort();
        peers.into_iter().take(n).map(|(_, _, id)| id).collect()
    }

    /// Edges this edge knows to be part of the mesh (itself excluded).
    pub fn live_edges(&self) -> impl Iterator<Item = EdgeId> + '_ {
        self.peers.keys().copied()
    }

    /// The static table from `[[peers]]` and `[[routes]]` in the config.
    pub fn from_config(cfg: &EdgeConfig) -> Self {
        let me = cfg.edge.id;
        let peers = cfg.peers.iter().map(|p| (p.id, p.address())).collect();
        let paths = cfg
            .routes
            .iter()
            .map(|r| {
                let mut p = vec![me];
                p.extend(&r.via);
                p.push(r.dest);
                (r.dest, p)
            })
            .collect();
        let probe = cfg.peers.iter().map(|p| p.id).collect();
        RouteTable {
            version: 1,
            peers,
            paths,
            backups: HashMap::new(),
            probe,
        }
    }
}

/// The path to `dest` this edge forwards on, given the peers its probes see
/// dead: `path` unless its first hop is dead; then its `backup` if the
/// backup's first hop is alive, else the direct link if the destination is
/// alive. A destination itself dead keeps its path (nothing better exists).
pub fn around_dead<'a>(
    me: EdgeId,
    dest: EdgeId,
    path: &'a [EdgeId],
    backup: Option<&'a [EdgeId]>,
    is_dead: impl Fn(EdgeId) -> bool,
) -> std::borrow::Cow<'a, [EdgeId]> {
    use std::borrow::Cow;
    let first = path.get(1).copied().unwrap_or(dest);
    if !is_dead(first) {
        return Cow::Borrowed(path);
    }
    match backup.filter(|b| b.get(1).is_some_and(|h| !is_dead(*h))) {
        Some(b) => Cow::Borrowed(b),
        None if !is_dead(dest) && first != dest => Cow::Owned(vec![me, dest]),
        None => Cow::Borrowed(path),
    }
}

/// `base` as this edge forwards on it, given the peers its probes see dead:
/// every path goes [`around_dead`].
pub fn effective_table(
    me: EdgeId,
    base: &RouteTable,
    dead: &BTreeSet<EdgeId>,
    version: u64,
) -> RouteTable {
    let mut t = base.clone();
    t.version = version;
    if dead.is_empty() {
        return t;
    }
    for (dest, path) in t.paths.iter_mut() {
        let backup = base.backups.get(dest).map(Vec::as_slice);
        let effective = around_dead(me, *dest, path, backup, |e| dead.contains(&e)).into_owned();
        *path = effective;
    }
    t
}

/// The sending side of an edge's route table: cheap to clone, and
/// `publish` replaces the table atomically for every reader.
#[derive(Clone)]
pub struct RouteFeed {
    tx: Arc<watch::Sender<Arc<RouteTable>>>,
}

impl RouteFeed {
    pub fn new(initial: RouteTable) -> Self {
        RouteFeed {
            tx: Arc::new(watch::channel(Arc::new(initial)).0),
        }
    }

    pub fn publish(&self, mut table: RouteTable) {
        table.version = table.version.max(self.tx.borrow().version + 1);
        self.tx.send_replace(Arc::new(table));
    }

    pub fn current(&self) -> Arc<RouteTable> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<RouteTable>> {
        self.tx.subscribe()
    }
}

/// Keep `out` equal to the effective table of the latest base table and
/// dead set; count the tables where local probes rerouted something.
pub async fn compose(
    me: EdgeId,
    mut base: watch::Receiver<Arc<RouteTable>>,
    mut dead: watch::Receiver<BTreeSet<EdgeId>>,
    out: watch::Sender<Arc<RouteTable>>,
    reroutes: metrics::Counter,
) {
    let mut version = out.borrow().version;
    loop {
        let b = base.borrow_and_update().clone();
        let d = dead.borrow_and_update().clone();
        version += 1;
        let t = effective_table(me, &b, &d, version);
        if t.paths != b.paths {
            reroutes.increment(1);
            tracing::info!(edge = me, dead = ?d, version, "local reroute: paths through dead next hops moved to backups");
        }
        out.send_replace(Arc::new(t));
        tokio::select! {
            r = base.changed() => if r.is_err() { return },
            r = dead.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_go_to_the_nearest_measured_live_peers_first() {
        use std::time::Duration;
        let mut t = RouteTable::default();
        for id in [2, 3, 4, 5, 6] {
            t.peers.insert(
                id,
                EdgeAddress::new(([127, 0, 0, 1], 4000 + id as u16).into(), "e"),
            );
        }
        t.paths.insert(6, vec![1, 2, 6]);
        let rtt = |id| match id {
            2 => Some(Duration::from_millis(80)),
            3 => Some(Duration::from_millis(9)),
            4 => Some(Duration::from_millis(30)),
            5 => Some(Duration::from_millis(2)),
            _ => None,
        };
        // 5 is the nearest but dead; 6 and the unmeasured rest come last.
        assert_eq!(t.redirect_order(1, rtt, |id| id == 5, 3), vec![3, 4, 2]);
        assert_eq!(t.redirect_order(1, rtt, |id| id == 5, 9), vec![3, 4, 2, 6]);
        // Nothing measured: fewest hops, then the lower id.
        assert_eq!(
            t.redirect_order(1, |_| None, |_| false, 5),
            vec![2, 3, 4, 5, 6]
        );
    }

    #[test]
    fn dead_first_hops_switch_to_backup_or_direct() {
        let mut base = RouteTable::default();
        base.paths.insert(3, vec![1, 2, 3]);
        base.backups.insert(3, vec![1, 4, 3]);
        base.paths.insert(5, vec![1, 2, 5]);
        base.paths.insert(2, vec![1, 2]);
        let none = effective_table(1, &base, &BTreeSet::new(), 7);
        assert_eq!(none.paths, base.paths);
        assert_eq!(none.version, 7);
        let t = effective_table(1, &base, &BTreeSet::from([2]), 8);
        assert_eq!(t.paths[&3], vec![1, 4, 3], "backup");
        assert_eq!(t.paths[&5], vec![1, 5], "no backup: direct");
        assert_eq!(t.paths[&2], vec![1, 2], "dead destination keeps its path");
        // The backup's hop dead too: direct.
        let t = effective_table(1, &base, &BTreeSet::from([2, 4]), 9);
        assert_eq!(t.paths[&3], vec![1, 3]);
    }
}
