//! The routes an edge forwards by, and the interface that feeds them.
//!
//! Whoever computes routes (static config today, the region controller via
//! the control store later) publishes a whole [`RouteTable`] through a
//! [`RouteFeed`]; the edge swaps it in atomically. Forwarding reads the
//! current table without locks held across awaits. Because every relayed
//! packet carries the source-routed tree built from the *ingress* edge's
//! table, edges applying tables at different moments cannot form a loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use protocol::EdgeId;
use tokio::sync::watch;

use crate::config::EdgeConfig;

/// How to reach another edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub id: EdgeId,
    /// QUIC address (relay links and clients share it).
    pub addr: SocketAddr,
    pub server_name: String,
    pub region: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// Increases with every table the feed publishes.
    pub version: u64,
    /// Every edge this edge may need to reach (next hops and destinations).
    pub peers: HashMap<EdgeId, PeerInfo>,
    /// Full overlay path to each destination: `[self, hop, ..., dest]`.
    pub paths: HashMap<EdgeId, Vec<EdgeId>>,
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

    /// Edges this edge knows to be part of the mesh (itself excluded).
    pub fn live_edges(&self) -> impl Iterator<Item = EdgeId> + '_ {
        self.peers.keys().copied()
    }

    /// The static table from `[[peers]]` and `[[routes]]` in the config.
    pub fn from_config(cfg: &EdgeConfig) -> Self {
        let me = cfg.edge.id;
        let peers = cfg
            .peers
            .iter()
            .map(|p| {
                (
                    p.id,
                    PeerInfo {
                        id: p.id,
                        addr: p.addr,
                        server_name: p.server_name.clone(),
                        region: p.region.clone(),
                    },
                )
            })
            .collect();
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
        RouteTable {
            version: 1,
            peers,
            paths,
        }
    }
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
