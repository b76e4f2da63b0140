//! The one in-process region: a controller on an embedded store with its
//! public API (nearest edge) on loopback, and edges registering in the
//! store, each behind the region's emulated WAN.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::keys::KeyLayout;
use control::store::{ControlStore, MemoryStore};
use edge_node::tls::DevPki;
use edge_node::{Edge, EdgeConfig, EdgeOptions};
use netem::Wan;
use region_controller::api::Api;
use region_controller::controller::{Controller, RoutingOptions};

use crate::tokens::{APP, SECRET};

/// The region's name, of its controller and of every edge.
pub const REGION: &str = "eu";

/// Nearest-edge lookups per second per client address: more than any
/// test makes.
const LOOKUPS_PER_S: u32 = 1_000;

pub struct Region {
    pub store: Arc<dyn ControlStore>,
    pub controller: Controller,
    pub api_addr: SocketAddr,
    pub api_task: tokio::task::JoinHandle<()>,
    /// The mesh CA (relay links; client certificates in
    /// [`ClientCert::FromCa`] mode).
    pub pki: DevPki,
    /// Every edge's socket is behind it (no rules: a clean loopback).
    pub wan: Arc<Wan>,
}

/// How an edge shows itself to clients.
#[derive(Clone, Copy, Debug)]
pub enum ClientCert {
    /// A certificate of [`Region::pki`]'s CA (clients trust the CA).
    FromCa,
    /// Its own self-signed one, new at every start, its digest published
    /// through the store (clients pin what the controller answers).
    SelfSigned,
}

impl Region {
    pub async fn start() -> Region {
        let store: Arc<dyn ControlStore> = Arc::new(MemoryStore::new());
        let controller = Controller::start(
            store.clone(),
            KeyLayout::default(),
            RoutingOptions::quick(REGION, "ctl"),
        );
        let api = Api::new(
            controller.mesh.clone(),
            controller.leader.clone(),
            REGION.into(),
            None,
            LOOKUPS_PER_S,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_addr = listener.local_addr().unwrap();
        let api_task = tokio::spawn(Arc::new(api).serve(listener));
        Region {
            store,
            controller,
            api_addr,
            api_task,
            pki: DevPki::new().unwrap(),
            wan: Wan::new(vec![]).unwrap(),
        }
    }

    /// The controller's URL, as apps give it to the SDK.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// Edge `id` of `city` listening on `at` (port 0: any).
    pub async fn edge(&self, id: u32, city: &str, at: SocketAddr, cert: ClientCert) -> Edge {
        let mut cfg = EdgeConfig::dev(id, APP, SECRET);
        cfg.edge.region = REGION.into();
        cfg.edge.city = city.to_string();
        cfg.edge.listen = at;
        let client_cert = match cert {
            ClientCert::FromCa => Some(self.pki.client_cert(&["localhost".into()]).unwrap()),
            ClientCert::SelfSigned => None,
        };
        // `at` may be a killed edge's address: wait for its port.
        crate::mesh::start_when_port_free(&cfg, || {
            Ok(EdgeOptions {
                tls: Some(self.pki.material(&["localhost".into()])?),
                client_cert: client_cert.clone(),
                store: Some(self.store.clone()),
                socket: Some(self.wan.hook()),
                ..Default::default()
            })
        })
        .await
        .unwrap_or_else(|e| panic!("edge {id} did not start: {e:#}"))
    }

    /// Wait until every edge has a route to every other (members on
    /// different edges meet).
    pub async fn routes_between(edges: &[Edge]) {
        let others = edges.len().saturating_sub(1);
        crate::wait::eventually(15, "routes between the edges", || {
            let all = edges
                .iter()
                .all(|e| e.core.route_table().paths.len() == others);
            async move { all }
        })
        .await;
    }

    /// The shortlist the controller gives (certificate digests pinned),
    /// once it lists `n` edges (it lists an edge once its first load
    /// record is in).
    pub async fn shortlist(&self, n: usize) -> Vec<sdk::EdgeCandidate> {
        let controllers = [self.api_url()];
        let (trust, limit, timeout) = (sdk::EdgeTrust::PinnedHashes, 4, Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer =
                sdk::nearest::fetch_shortlist_from(&controllers, limit, timeout, None, &trust)
                    .await;
            match answer {
                Ok(edges) if edges.len() >= n => return edges,
                other => assert!(Instant::now() < deadline, "no shortlist of {n}: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(self) {
        self.api_task.abort();
        let _ = self.api_task.await;
        self.controller.shutdown().await;
    }
}
