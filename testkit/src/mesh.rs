//! The one in-process mesh starter: edges on loopback sharing a dev mesh CA,
//! every edge knowing every other (reached directly unless
//! [`Mesh::set_paths`] says otherwise), optionally over an emulated WAN.
//! No probe targets: routes stay as given, whatever the machine's load.
//! Plus SDK client configs for it and a two-client call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edge_node::config::ClientTlsSection;
use edge_node::tls::DevPki;
use edge_node::{Edge, EdgeConfig, EdgeOptions, RouteFeed, RouteTable};
use netem::Wan;
use protocol::{EdgeAddress, EdgeId};

use crate::tokens::{token, APP, SECRET};

/// A set of in-process edges sharing one dev mesh CA.
pub struct Mesh {
    pub pki: DevPki,
    pub edges: Vec<Edge>,
    /// The emulated WAN the edges send through, if they do.
    pub wan: Option<Arc<Wan>>,
}

impl Mesh {
    /// Edges `1..=n` (tests: panics if one does not start).
    pub async fn start(n: u32) -> Mesh {
        Self::start_with(n, |_| {}).await
    }

    pub async fn start_with(n: u32, tweak: impl Fn(&mut EdgeConfig)) -> Mesh {
        Self::start_over(None, n, tweak).await
    }

    /// `n` edges whose sockets send through `wan`, if given.
    pub async fn start_over(
        wan: Option<Arc<Wan>>,
        n: u32,
        tweak: impl Fn(&mut EdgeConfig),
    ) -> Mesh {
        init_logs();
        let ids: Vec<EdgeId> = (1..=n).collect();
        Self::try_start(&ids, wan, tweak).await.unwrap()
    }

    /// Edges with these ids, each config as `tweak` leaves it.
    pub async fn try_start(
        ids: &[EdgeId],
        wan: Option<Arc<Wan>>,
        tweak: impl Fn(&mut EdgeConfig),
    ) -> anyhow::Result<Mesh> {
        let pki = DevPki::new()?;
        let mut edges = vec![];
        for &id in ids {
            edges.push(try_start_edge(&pki, id, None, &tweak, wan.as_ref()).await?);
        }
        let mesh = Mesh { pki, edges, wan };
        mesh.full_mesh_routes();
        Ok(mesh)
    }

    /// The emulated WAN under the edges (a mesh started over one).
    pub fn wan(&self) -> &Wan {
        self.wan
            .as_deref()
            .expect("this mesh runs over an emulated WAN")
    }

    /// How to reach edge `e`, with the digests it publishes (self-signed
    /// client certificates only).
    pub fn peer(&self, e: &Edge) -> EdgeAddress {
        EdgeAddress::new(e.addr(), "localhost")
            .with_cert_hashes(e.core.client_certs.hashes().borrow().clone())
    }

    /// Every edge knows every other, reached directly.
    pub fn full_mesh_routes(&self) {
        for e in &self.edges {
            let peers = self
                .edges
                .iter()
                .filter(|p| p.id() != e.id())
                .map(|p| (p.id(), self.peer(p)))
                .collect();
            e.routes.publish(RouteTable {
                version: 0,
                peers,
                ..Default::default()
            });
        }
    }

    /// Give edge `at` explicit paths (`[at, ..., dest]`).
    pub fn set_paths(&self, at: EdgeId, paths: &[&[EdgeId]]) {
        self.insert_paths(at, paths, |t| &mut t.paths);
    }

    /// Give edge `at` explicit backup paths (`[at, ..., dest]`).
    pub fn set_backups(&self, at: EdgeId, backups: &[&[EdgeId]]) {
        self.insert_paths(at, backups, |t| &mut t.backups);
    }

    /// Put `paths` into the part of edge `at`'s route table `which` picks,
    /// each under its destination, and publish the table.
    fn insert_paths(
        &self,
        at: EdgeId,
        paths: &[&[EdgeId]],
        which: impl Fn(&mut RouteTable) -> &mut HashMap<EdgeId, Vec<EdgeId>>,
    ) {
        let e = self.edge(at);
        let mut table = (*e.routes.current()).clone();
        for p in paths {
            if let Some(dest) = p.last() {
                which(&mut table).insert(*dest, p.to_vec());
            }
        }
        e.routes.publish(table);
    }

    pub fn edge(&self, id: EdgeId) -> &Edge {
        self.edges
            .iter()
            .find(|e| e.id() == id)
            .unwrap_or_else(|| panic!("no edge {id} in this mesh"))
    }

    pub fn ca_der(&self) -> Vec<u8> {
        self.pki.ca_der().to_vec()
    }

    /// An SDK client config that tries the edges `order`, in that order.
    pub fn sdk_config(&self, order: &[EdgeId]) -> sdk::ClientConfig {
        let addrs: Vec<SocketAddr> = order.iter().map(|id| self.edge(*id).addr()).collect();
        sdk_config(&self.pki, &addrs)
    }

    /// Kill every edge.
    pub async fn stop(self) {
        for e in self.edges {
            e.kill().await;
        }
    }

    /// Stop every edge, withdrawing routes first so the relay links close
    /// as no longer needed rather than being logged as failures (a
    /// benchmark's output stays clean).
    pub async fn stop_quietly(self) {
        for e in &self.edges {
            e.routes.publish(RouteTable::default());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while self.edges.iter().any(|e| !e.core.relay.up().is_empty())
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop().await;
    }
}

/// Start edge `id` of the test app (on `listen`, if given), its config as
/// `tweak` leaves it. Tests: panics if it does not start.
pub async fn start_edge(
    pki: &DevPki,
    id: EdgeId,
    listen: Option<SocketAddr>,
    tweak: &impl Fn(&mut EdgeConfig),
    wan: Option<&Arc<Wan>>,
) -> Edge {
    try_start_edge(pki, id, listen, tweak, wan)
        .await
        .unwrap_or_else(|e| panic!("edge {id} did not start: {e:#}"))
}

async fn try_start_edge(
    pki: &DevPki,
    id: EdgeId,
    listen: Option<SocketAddr>,
    tweak: &impl Fn(&mut EdgeConfig),
    wan: Option<&Arc<Wan>>,
) -> anyhow::Result<Edge> {
    let mut cfg = EdgeConfig::dev(id, APP, SECRET);
    if let Some(l) = listen {
        cfg.edge.listen = l;
    }
    tweak(&mut cfg);
    // Test edges show clients a certificate of the dev CA (acting as the
    // operator's CA: test clients trust it as a custom CA), unless the test
    // configured `[client_tls]` itself (e.g. self-signed for WebTransport).
    let configured = cfg.client_tls != ClientTlsSection::default();
    start_when_port_free(&cfg, || {
        Ok(EdgeOptions {
            tls: Some(pki.material(&["localhost".into()])?),
            client_cert: if configured {
                None
            } else {
                Some(pki.client_cert(&["localhost".into()])?)
            },
            routes: Some(RouteFeed::new(RouteTable::default())),
            socket: wan.map(|w| w.hook()),
            ..Default::default()
        })
    })
    .await
}

/// How long an edge restarted on its address waits for the port. A killed
/// edge's socket goes once its last connection has closed, three PTOs
/// after the close: about 3 s for one whose round trip was never measured
/// (quinn starts from 333 ms), e.g. a relay dial caught mid-handshake.
/// Edges do not share ports (no SO_REUSEADDR), so the restart waits.
const PORT_WAIT: Duration = Duration::from_secs(10);
const PORT_RETRY_EVERY: Duration = Duration::from_millis(50);

/// Start an edge with `cfg`, retrying for [`PORT_WAIT`] while its address
/// is still in use (a killed edge's socket closing). `opts` makes the
/// options for each try.
pub async fn start_when_port_free(
    cfg: &EdgeConfig,
    opts: impl Fn() -> anyhow::Result<EdgeOptions>,
) -> anyhow::Result<Edge> {
    let until = tokio::time::Instant::now() + PORT_WAIT;
    loop {
        match Edge::start(cfg.clone(), opts()?).await {
            Err(e) if address_in_use(&e) && tokio::time::Instant::now() < until => {
                tracing::debug!("edge start retry: {e:#}");
                tokio::time::sleep(PORT_RETRY_EVERY).await;
            }
            started => return started,
        }
    }
}

fn address_in_use(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// An SDK client config trusting `pki`'s CA that tries `edges` in order,
/// with test-friendly timers (a reconnect backoff starting at 20 ms).
pub fn sdk_config(pki: &DevPki, edges: &[SocketAddr]) -> sdk::ClientConfig {
    let candidates = edges
        .iter()
        .map(|a| sdk::EdgeCandidate::new(*a, "localhost"))
        .collect();
    let mut cfg =
        sdk::ClientConfig::new(candidates).trusting(sdk::EdgeTrust::Ca(pki.ca_pem().into_bytes()));
    cfg.backoff.initial = Duration::from_millis(20);
    cfg
}

/// An SDK socket factory whose sockets are hosts at `at` on `wan` (the
/// client's traffic then crosses the emulated WAN both ways).
pub fn socket_at(wan: &Arc<Wan>, at: std::net::IpAddr) -> sdk::SocketFactory {
    let wan = wan.clone();
    sdk::SocketFactory(Arc::new(move |_wildcard| wan.bind(SocketAddr::new(at, 0))))
}

/// A call of two SDK clients in channel `chat`: rita (subscribing) joins
/// through `receiver`, then sam (publishing) connects through `sender` and
/// joins. The call is returned once sam's client has seen rita join, so his
/// edge knows her edge before he talks.
pub struct Call {
    pub sender: sdk::Client,
    pub receiver: sdk::Client,
    /// Sam's side of the channel.
    pub room: sdk::Channel,
    /// Rita's.
    pub rx_room: sdk::Channel,
}

impl Call {
    pub async fn start(sender: sdk::ClientConfig, receiver: sdk::ClientConfig) -> Call {
        let receiver = sdk::Client::connect(receiver).await.unwrap();
        let rx_room = receiver
            .join(&token("chat", "rita", false, true), "chat", true)
            .await
            .unwrap();
        let sender = sdk::Client::connect(sender).await.unwrap();
        let room = sender
            .join(&token("chat", "sam", true, true), "chat", true)
            .await
            .unwrap();
        // The call is up once sam's edge knows rita is a member: rita's join
        // reaches sam's edge through the channel's directory, and a message
        // sent before that reaches nobody (a member joining later does not
        // get the channel's history).
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match sender.next_event().await {
                    Some(sdk::Event::MemberJoined { user, .. }) if user == "rita" => return,
                    Some(_) => {}
                    None => panic!("sam's client closed"),
                }
            }
        })
        .await
        .expect("sam's edge learns of rita");
        Call {
            sender,
            receiver,
            room,
            rx_room,
        }
    }

    pub async fn close(self) {
        self.sender.close().await;
        self.receiver.close().await;
    }
}

/// Test logs at `RUST_LOG` (default: warnings), captured per test.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}
