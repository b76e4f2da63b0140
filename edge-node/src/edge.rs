//! The edge: its QUIC endpoint, the accept loop that tells client links from
//! relay links, the shared state every connection works on, and shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use control::store::ControlStore;
use protocol::alpn::{self, LinkKind};
use protocol::pb::{self, server_frame::Kind as SK, ErrorCode};
use protocol::token::TokenVerifier;
use protocol::{ChannelId, EdgeId, TrackKey};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::admin;
use crate::admission::{Admission, Decision};
use crate::channel::Channel;
use crate::config::EdgeConfig;
use crate::control::ControlAgent;
use crate::directory::Directory;
use crate::log_throttle::LogThrottle;
use crate::metrics::EdgeMetrics;
use crate::probe::Prober;
use crate::relay::RelayLinks;
use crate::routes::{RouteFeed, RouteTable};
use crate::session::{self, ClientHandle};
use crate::socket::SocketHook;
use crate::tasks::ConnectionTasks;
use crate::tls::{client_cert_source, DevPki, TlsMaterial};
use crate::warn_throttled;
use control::certs::{ClientCertSource, ClientCerts};

/// State shared by every connection of one edge.
pub struct EdgeCore {
    pub id: EdgeId,
    pub cfg: EdgeConfig,
    pub verifier: TokenVerifier,
    pub metrics: EdgeMetrics,
    /// The table forwarding uses: the route feed's, with local reroutes.
    pub routes: watch::Receiver<Arc<RouteTable>>,
    pub relay: RelayLinks,
    pub prober: Prober,
    pub(crate) admin_addr: std::sync::OnceLock<SocketAddr>,
    pub(crate) started_at_ms: u64,
    pub directory: Directory,
    /// The endpoints serving `edge.listen` (one unless `edge.endpoints`).
    pub listeners: Vec<quinn::Endpoint>,
    /// The endpoint relay links are dialed from: the listener when there
    /// is one, else one on a port of its own (see `edge.endpoints`).
    pub endpoint: quinn::Endpoint,
    pub(crate) relay_client: quinn::ClientConfig,
    channels: Mutex<HashMap<ChannelId, Arc<Channel>>>,
    clients: Mutex<HashMap<usize, Arc<ClientHandle>>>,
    /// How many clients are connected, for a drain to wait on.
    sessions: watch::Sender<usize>,
    track_counter: AtomicU32,
    draining: AtomicBool,
    /// What was delivered of tracks that get copies around a suspect hop
    /// (`forwarding`), and whether any does now (read per relayed packet).
    pub(crate) first_copy: Mutex<crate::forward::copies::FirstCopy>,
    pub(crate) copies_watched: AtomicBool,
    /// Every task of a connection (clients, relay links, handshakes, the
    /// admin port's): stopped with the edge.
    pub(crate) tasks: ConnectionTasks,
    /// The emulated WAN of the config's `[netem]` under this edge's
    /// socket, if any (the admin port's `/netem` reads and replaces it).
    #[cfg(feature = "netem")]
    pub wan: Option<Arc<netem::Wan>>,
    /// Connection admission and rate limits.
    pub admission: Arc<Admission>,
    /// Abuse events are logged through this (first one, then one line per
    /// interval), never once per packet.
    pub log: LogThrottle,
    /// The certificate clients see, and the digests published for them.
    pub client_certs: Arc<ClientCerts>,
}

impl EdgeCore {
    /// Every endpoint of this edge: the listeners, and the dialer if apart.
    fn all_endpoints(&self) -> impl Iterator<Item = &quinn::Endpoint> {
        let apart = self.listeners.len() > 1;
        self.listeners.iter().chain(apart.then_some(&self.endpoint))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Refuse new clients from now on (`/readyz` answers 503).
    fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.metrics.ready(false);
    }

    /// The channel, created on first use.
    pub fn channel(&self, id: ChannelId, app: &str, name: &str) -> Arc<Channel> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let ch = map
            .entry(id)
            .or_insert_with(|| {
                let ch = Channel::new(id, app, name);
                ch.write().local_generation = self.directory.channel_generation_start();
                ch
            })
            .clone();
        self.metrics.channels.set(map.len() as f64);
        ch
    }

    pub fn existing_channel(&self, id: ChannelId) -> Option<Arc<Channel>> {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn channels(&self) -> Vec<Arc<Channel>> {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Forget channels with no local member left (remote members only matter
    /// to an edge that has local ones).
    pub fn prune_channels(&self) {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, c| c.read().has_local());
        self.metrics.channels.set(map.len() as f64);
    }

    pub fn next_track_key(&self, kind: protocol::MediaKind) -> TrackKey {
        let n = self.track_counter.fetch_add(1, Ordering::Relaxed);
        TrackKey::with_kind(self.id, kind, n)
    }

    pub fn route_table(&self) -> Arc<RouteTable> {
        self.routes.borrow().clone()
    }

    pub(crate) fn register_client(&self, c: &Arc<ClientHandle>) {
        let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(Arc::as_ptr(c) as usize, c.clone());
        self.metrics.sessions.set(map.len() as f64);
        self.sessions.send_replace(map.len());
    }

    pub(crate) fn unregister_client(&self, c: &Arc<ClientHandle>) {
        let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&(Arc::as_ptr(c) as usize));
        self.metrics.sessions.set(map.len() as f64);
        self.sessions.send_replace(map.len());
    }

    pub fn client_count(&self) -> usize {
        self.clients.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Where clients should go when this edge leaves: three live peers not
    /// draining themselves, nearest first ([`RouteTable::redirect_order`]).
    fn redirects(&self) -> Vec<pb::EdgeAddress> {
        let table = self.route_table();
        let rtt = |id| self.prober.rtt_jitter(id).map(|(rtt, _)| rtt);
        let gone = |id| self.prober.is_dead(id) || self.prober.is_draining(id);
        table
            .redirect_order(self.id, rtt, gone, 3)
            .into_iter()
            .filter_map(|id| Some(table.peers.get(&id)?.to_pb(Some(id))))
            .collect()
    }
}

/// Things an edge may be started with besides its config.
#[derive(Default)]
pub struct EdgeOptions {
    /// Mesh TLS material (relay links); overrides the config's files
    /// (tests, the lab).
    pub tls: Option<TlsMaterial>,
    /// The client-facing certificate; overrides `[client_tls]` (tests and
    /// embedders with a certificate in memory).
    pub client_cert: Option<ClientCertSource>,
    /// Route feed shared with whoever computes routes; default: static
    /// routes from the config.
    pub routes: Option<RouteFeed>,
    /// The control store (the lab's embedded one); default: etcd when the
    /// config names endpoints, else none.
    pub store: Option<Arc<dyn ControlStore>>,
    /// Wraps the edge's UDP socket (the in-process lab's WAN emulation);
    /// default: the socket as it is, or the WAN of the config's `[netem]`
    /// (with the `netem` feature).
    pub socket: Option<SocketHook>,
}

/// How long the edge's loops get to end once aborted. An aborted task ends
/// at its next poll, at once; this only bounds one that blocks its thread.
const LOOPS_STOP_BOUND: Duration = Duration::from_secs(1);
/// How long a stopping edge lets its endpoint send its connections' close
/// frames and drain them before its tasks are cancelled: the connection
/// tasks end by themselves meanwhile (sessions leave their channels).
const CLOSE_FLUSH_BOUND: Duration = Duration::from_millis(500);
/// How long cancelled connection tasks get to end: at their next poll,
/// unless one blocks its thread. Two seconds, what a killed edge used to
/// wait for them before its port was free for a restart.
const CONNECTION_TASKS_STOP_BOUND: Duration = Duration::from_secs(2);

/// A running edge. It owns every task it starts: [`Edge::kill`] and
/// [`Edge::shutdown`] end them and wait for them (each wait bounded), and
/// dropping it ends them too.
pub struct Edge {
    pub core: Arc<EdgeCore>,
    /// The routes the control plane (or a test) gives this edge.
    pub routes: RouteFeed,
    admin_addr: SocketAddr,
    /// The edge's long-lived loops: accept, probes, route composition,
    /// directory refresh, relay link upkeep, admission pruning, the admin
    /// port. (Per-connection tasks are `core.tasks`.)
    loops: JoinSet<()>,
    control: Option<ControlAgent>,
}

impl Edge {
    pub async fn start(cfg: EdgeConfig, opts: EdgeOptions) -> anyhow::Result<Edge> {
        cfg.validate()?;
        let mesh_cert_kind = match &opts.tls {
            Some(_) => "memory",
            None if cfg.tls.dev_self_signed => "dev",
            None => "files",
        };
        let tls = match opts.tls {
            Some(t) => t,
            None if cfg.tls.dev_self_signed => {
                DevPki::new()?.material(std::slice::from_ref(&cfg.edge.server_name))?
            }
            None => {
                let (c, k, ca) = (&cfg.tls.cert, &cfg.tls.key, &cfg.tls.mesh_ca);
                match (c, k, ca) {
                    (Some(c), Some(k), Some(ca)) => TlsMaterial::from_files(c, k, ca)?,
                    _ => anyhow::bail!("tls.cert, tls.key and tls.mesh_ca are required"),
                }
            }
        };
        let mut verifier = TokenVerifier::new();
        for app in &cfg.apps {
            for s in app.resolved_secrets()? {
                verifier.add_secret(&app.id, s.as_bytes());
            }
        }
        let client_source = opts.client_cert.unwrap_or_else(|| client_cert_source(&cfg));
        let client_cert_kind = crate::tls::cert_source(&client_source);
        let client_certs = ClientCerts::new(client_source).context("client_tls")?;
        let mut server = tls.server_config(client_certs.clone())?;
        server.transport_config(Arc::new(transport(&cfg)));
        #[cfg(feature = "netem")]
        let wan = match &cfg.netem {
            Some(n) if opts.socket.is_none() => {
                Some(netem::Wan::new(n.links.clone()).map_err(anyhow::Error::msg)?)
            }
            _ => None,
        };
        #[cfg(feature = "netem")]
        let hook = opts.socket.or_else(|| {
            let w = wan.clone()?;
            Some(Arc::new(move |s| w.wrap(s)) as SocketHook)
        });
        #[cfg(not(feature = "netem"))]
        let hook = opts.socket;
        let (listeners, endpoint) = bind_endpoints(&cfg, server, hook.as_ref())?;
        let mut relay_client = tls.relay_client_config()?;
        relay_client.transport_config(Arc::new(transport(&cfg)));
        let routes = opts
            .routes
            .unwrap_or_else(|| RouteFeed::new(RouteTable::from_config(&cfg)));
        // The etcd client certificate, when this edge reads one (a store
        // given by the caller has its own TLS, or none).
        let (store, etcd_cert) = match opts.store {
            Some(s) => (Some(s), None),
            None => {
                let store = cfg.control.store.open()?;
                let cert = cfg
                    .control
                    .store
                    .etcd_cert
                    .clone()
                    .filter(|_| store.is_some());
                (store, cert)
            }
        };
        let mut metrics = EdgeMetrics::new(cfg.edge.id);
        if store.is_some() {
            metrics = metrics.with_store();
        }
        metrics.info(&cfg.edge.region, &cfg.edge.city);
        metrics.capacity(cfg.limits.max_sessions);
        certificate_expiry(&metrics, "mesh", mesh_cert_kind, tls.chain.first());
        if let Some(path) = &etcd_cert {
            match control::certs::read_certs(path) {
                Ok(chain) => certificate_expiry(&metrics, "etcd_client", "files", chain.first()),
                Err(e) => {
                    warn!(edge = cfg.edge.id, error = %format!("{e:#}"), "cannot read the etcd client certificate for its expiry")
                }
            }
        }
        let (effective, effective_rx) = watch::channel(routes.current());
        let keys = cfg.control.store.keys().map_err(anyhow::Error::msg)?;
        let core = Arc::new(EdgeCore {
            id: cfg.edge.id,
            verifier,
            metrics,
            routes: effective_rx,
            relay: RelayLinks::default(),
            prober: Prober::default(),
            admin_addr: std::sync::OnceLock::new(),
            started_at_ms: control::clock::now_ms(),
            directory: Directory::new(),
            listeners,
            endpoint,
            relay_client,
            channels: Mutex::default(),
            clients: Mutex::default(),
            sessions: watch::Sender::new(0),
            // Random start: a restarted edge must not reuse the keys of its
            // previous run that other edges may still hold.
            track_counter: AtomicU32::new(rand::random()),
            draining: AtomicBool::new(false),
            first_copy: Mutex::default(),
            copies_watched: AtomicBool::new(false),
            tasks: ConnectionTasks::default(),
            #[cfg(feature = "netem")]
            wan,
            admission: Admission::new(cfg.admission.clone()),
            log: LogThrottle::default(),
            client_certs,
            cfg,
        });
        let admin_listener = tokio::net::TcpListener::bind(core.cfg.edge.admin_listen)
            .await
            .with_context(|| format!("binding the admin port {}", core.cfg.edge.admin_listen))?;
        let admin_addr = admin_listener.local_addr()?;
        let _ = core.admin_addr.set(admin_addr);
        let mut loops = JoinSet::new();
        loops.spawn(crate::routes::compose(
            core.id,
            routes.subscribe(),
            core.prober.dead(),
            effective,
            core.metrics.local_reroutes.clone(),
        ));
        loops.spawn(crate::probe::run(core.clone()));
        for listener in &core.listeners {
            loops.spawn(accept_loop(core.clone(), listener.clone()));
        }
        loops.spawn(admin::serve(core.clone(), admin_listener));
        loops.spawn(crate::directory::run_refresh(core.clone()));
        loops.spawn(crate::relay::watch_routes(core.clone()));
        if core.cfg.repair.enabled {
            loops.spawn(crate::relay::tune_repair(core.clone()));
        }
        loops.spawn(prune_admission(core.clone()));
        loops.spawn(
            core.client_certs
                .clone()
                .maintain(format!("edge-{}", core.id)),
        );
        loops.spawn(client_cert_expiry(core.clone(), client_cert_kind));
        core.metrics.ready(true);
        info!(
            edge = core.id,
            quic = %core.listeners[0].local_addr()?,
            endpoints = core.listeners.len(),
            admin = %admin_addr,
            region = %core.cfg.edge.region,
            "edge started"
        );
        let control = store.map(|s| ControlAgent::start(core.clone(), s, keys, routes.clone()));
        Ok(Edge {
            core,
            routes,
            admin_addr,
            loops,
            control,
        })
    }

    pub fn id(&self) -> EdgeId {
        self.core.id
    }

    /// The QUIC address clients and peers connect to.
    pub fn addr(&self) -> SocketAddr {
        self.core.listeners[0]
            .local_addr()
            .unwrap_or(self.core.cfg.edge.listen)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The edge's per-connection tasks (tests: none is left once the edge
    /// is stopped).
    pub fn connection_tasks(&self) -> ConnectionTasks {
        self.core.tasks.clone()
    }

    /// Graceful shutdown: refuse new clients, send every client a goaway
    /// with where to go and wait for them to leave (bounded), wait for the
    /// streams relayed through this edge to move to the controller's new
    /// paths (bounded), tell the relay peers that still send through it to
    /// send around it, and close once what they sent before has come
    /// through (make-before-break for relayed streams too).
    pub async fn shutdown(mut self) {
        let core = &self.core;
        core.start_draining();
        if let Some(c) = &self.control {
            c.drain();
        }
        let drain_timeout = Duration::from_millis(core.cfg.limits.drain_timeout_ms);
        let goaway = pb::Goaway {
            reason: pb::GoawayReason::Shutdown as i32,
            redirect: core.redirects(),
            reconnect_after_ms: core.cfg.limits.goaway_reconnect_ms,
        };
        let clients: Vec<_> = core
            .clients
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        info!(
            edge = core.id,
            clients = clients.len(),
            "draining: goaway sent"
        );
        for c in &clients {
            c.send_frame(SK::Goaway(goaway.clone()));
        }
        let mut sessions = core.sessions.subscribe();
        let _ = tokio::time::timeout(drain_timeout, sessions.wait_for(|n| *n == 0)).await;
        wait_for_transit_to_move(core).await;
        let forward = core.relay.tell_draining(core);
        tokio::time::sleep(forward).await;
        if let Some(c) = self.control.take() {
            c.stop().await;
        }
        self.kill().await;
    }

    /// Stop at once, as a crash would (tests): no goaway, no lease revoked.
    /// Every task of the edge has ended when this returns (unless one
    /// overran its bound: logged), so nothing holds the edge's state. Its
    /// UDP port goes when quinn has drained the last connection, up to
    /// three PTOs after the close (about 3 s for one whose round trip was
    /// never measured).
    pub async fn kill(mut self) {
        // A crash leaves the registry only when the lease expires.
        if let Some(c) = self.control.take() {
            c.abort().await;
        }
        let core = &self.core;
        core.start_draining();
        for e in core.all_endpoints() {
            e.close(
                quinn::VarInt::from_u32(ErrorCode::GoingAway as u32),
                b"edge stopping",
            );
        }
        if tokio::time::timeout(LOOPS_STOP_BOUND, self.loops.shutdown())
            .await
            .is_err()
        {
            warn!(
                edge = core.id,
                "edge loops still running after being aborted"
            );
        }
        let flushed_by = tokio::time::Instant::now() + CLOSE_FLUSH_BOUND;
        for e in core.all_endpoints() {
            let _ = tokio::time::timeout_at(flushed_by, e.wait_idle()).await;
        }
        core.relay.clear();
        if !core.tasks.stop(CONNECTION_TASKS_STOP_BOUND).await {
            warn!(
                edge = core.id,
                tasks = core.tasks.len(),
                "connection tasks still running after being cancelled"
            );
        }
        info!(edge = core.id, "edge stopped");
    }
}

/// No relayed media for this long means no stream is routed through a
/// draining edge any more: the slowest stream RTN carries (audio, 25
/// packets a second) sends five packets in it.
const TRANSIT_QUIET: Duration = Duration::from_millis(200);
/// How long a draining edge, its clients gone, waits for that: the control
/// plane routes transit off an edge marked DRAINING within about a second
/// (registry watch, recomputation, the edges' route watch), and those paths
/// are the controller's best. Past it (a store or controller outage), the
/// peers still sending through it are told to go around it on their own
/// routes (`RelayDraining`).
const TRANSIT_MOVE_MAX: Duration = Duration::from_secs(2);
/// How often the relayed media counter is read meanwhile.
const TRANSIT_LOOK_EVERY: Duration = Duration::from_millis(20);

/// Wait until no media has been relayed to this (draining) edge for
/// [`TRANSIT_QUIET`], at most [`TRANSIT_MOVE_MAX`].
async fn wait_for_transit_to_move(core: &EdgeCore) {
    let start = tokio::time::Instant::now();
    let mut seen = core.relay.media_received();
    let mut quiet_since = start;
    while start.elapsed() < TRANSIT_MOVE_MAX {
        tokio::time::sleep(TRANSIT_LOOK_EVERY).await;
        let now = core.relay.media_received();
        if now != seen {
            seen = now;
            quiet_since = tokio::time::Instant::now();
        } else if quiet_since.elapsed() >= TRANSIT_QUIET {
            return;
        }
    }
    info!(
        edge = core.id,
        "draining: streams still relayed through this edge; telling the peers to go around it"
    );
}

impl Drop for Edge {
    /// An edge dropped without being stopped takes its tasks with it (its
    /// loops are aborted with `loops`).
    fn drop(&mut self) {
        self.core.tasks.cancel();
    }
}

/// quinn's datagram send buffer per connection: 64 packets of the largest
/// media datagram, a few ms of a busy relay link.
const DATAGRAM_SEND_BUFFER: usize = 64 * 1024;

fn transport(cfg: &EdgeConfig) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // One control stream per link; one more is accepted only to be reset
    // with TOO_MANY_STREAMS, and flow control stops a client from opening
    // thousands. A WebTransport session's CONNECT request takes a third,
    // so a browser's extra stream is refused the same way rather than left
    // waiting for credit. Three unidirectional streams are HTTP/3's control
    // and QPACK streams; other links' limit drops to zero once their ALPN
    // is known.
    t.max_concurrent_bidi_streams(3u32.into());
    t.max_concurrent_uni_streams(3u32.into());
    t.max_idle_timeout(Some(
        Duration::from_millis(cfg.limits.client_idle_timeout_ms)
            .try_into()
            .unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::from_u32(10_000))),
    ));
    // Relay links cross long fat paths: larger windows than quinn's default.
    t.stream_receive_window((4u32 * 1024 * 1024).into());
    t.receive_window((16u32 * 1024 * 1024).into());
    t.send_window(16 * 1024 * 1024);
    t.datagram_receive_buffer_size(Some(4 * 1024 * 1024));
    // Small on purpose: quinn's buffer is bounded in bytes, not age, and
    // drains at whatever the congestion controller allows. On a slow link
    // 1 MiB is seconds of media sent late (or after an outage, all at
    // once). Kept small, the excess waits in the edge's own media queue,
    // which drops the oldest and anything older than half a second, and
    // counts it.
    t.datagram_send_buffer_size(DATAGRAM_SEND_BUFFER);
    // Loss-based congestion control (quinn's default, Cubic) halves its
    // window at every loss, and random loss on a lossy last mile or
    // long-haul link (not congestion) then holds media to a couple of
    // packets per round trip: at 10% loss and 90 ms, a 100-packet/s audio
    // track lost 7.6% after repair with Cubic and 2.0% with BBR, which
    // paces by the bandwidth and round trip it measures.
    t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    t
}

/// Record when `cert` (the first of a chain) expires.
fn certificate_expiry(
    metrics: &EdgeMetrics,
    name: &'static str,
    source: &'static str,
    cert: Option<&rustls::pki_types::CertificateDer<'_>>,
) {
    match cert.and_then(crate::tls::not_after) {
        Some(at) => metrics.certificate_expiry(name, source, at),
        None => warn!(
            edge = %metrics.edge,
            cert = name,
            "certificate without a readable expiry: not in rtn_edge_certificate_expiry_timestamp_seconds"
        ),
    }
}

/// Keep the client certificate's expiry current: it changes when its files
/// are reloaded or (self-signed) it is rotated (`ClientCerts::maintain`).
async fn client_cert_expiry(core: Arc<EdgeCore>, source: &'static str) {
    let mut changes = core.client_certs.changes();
    let mut recorded = None;
    loop {
        record_client_cert(&core.client_certs, &core.metrics, source, &mut recorded);
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Record the client certificate's expiry if the certificate in use is not
/// the one `recorded` last.
fn record_client_cert(
    certs: &ClientCerts,
    metrics: &EdgeMetrics,
    source: &'static str,
    recorded: &mut Option<Arc<rustls::sign::CertifiedKey>>,
) {
    let current = certs.current_key();
    if recorded.as_ref().is_some_and(|r| Arc::ptr_eq(r, &current)) {
        return;
    }
    certificate_expiry(metrics, "client", source, current.cert.first());
    *recorded = Some(current);
}

/// How often rate-limit state of addresses and tokens not seen lately is
/// dropped: a flood from many addresses leaves no lasting memory.
const ADMISSION_PRUNE_INTERVAL: Duration = Duration::from_secs(10);

async fn prune_admission(core: Arc<EdgeCore>) {
    let mut tick = tokio::time::interval(ADMISSION_PRUNE_INTERVAL);
    loop {
        tick.tick().await;
        core.admission.prune();
    }
}

/// The endpoints serving `edge.listen` (`edge.endpoints` of them, sharing
/// the port with SO_REUSEPORT when more than one) and the one relay links
/// are dialed from. All share one `EndpointConfig`, so one stateless-reset
/// key: a packet of a connection that lands on another endpoint of the
/// group (its client's address changed) is answered with a reset the
/// client accepts, and it reconnects at once instead of timing out.
fn bind_endpoints(
    cfg: &EdgeConfig,
    server: quinn::ServerConfig,
    hook: Option<&SocketHook>,
) -> anyhow::Result<(Vec<quinn::Endpoint>, quinn::Endpoint)> {
    let n = cfg.edge.endpoints.max(1);
    let endpoint_config = quinn::EndpointConfig::default();
    let make = |addr: SocketAddr, shared: bool, server: Option<quinn::ServerConfig>| {
        let socket = crate::socket::bind_udp(addr, cfg.edge.udp_buffer_bytes, cfg.edge.id, shared)?;
        let socket = match hook {
            Some(wrap) => wrap(socket)?,
            None => quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, socket)?,
        };
        quinn::Endpoint::new_with_abstract_socket(
            endpoint_config.clone(),
            server,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .context("creating the QUIC endpoint")
    };
    let first = make(cfg.edge.listen, n > 1, Some(server.clone()))?;
    if n == 1 {
        return Ok((vec![first.clone()], first));
    }
    // With port 0 (tests), the others join the port the first was given.
    let port = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..n {
        listeners.push(make(port, true, Some(server.clone()))?);
    }
    let dialer = make(SocketAddr::new(cfg.edge.listen.ip(), 0), false, None)?;
    Ok((listeners, dialer))
}

async fn accept_loop(core: Arc<EdgeCore>, listener: quinn::Endpoint) {
    while let Some(incoming) = listener.accept().await {
        if core.is_draining() {
            incoming.refuse();
            continue;
        }
        let remote = incoming.remote_address();
        let mut admitted = match core
            .admission
            .decide(remote, incoming.remote_address_validated())
        {
            Decision::Accept(a) => a,
            Decision::Retry if incoming.may_retry() => {
                core.metrics.quic_retry();
                // Fails only if the client already answered a Retry.
                let _ = incoming.retry();
                continue;
            }
            Decision::Retry => {
                core.metrics.connection_refused("retry_impossible");
                incoming.refuse();
                continue;
            }
            Decision::Refuse(reason) => {
                core.metrics.connection_refused(reason);
                warn_throttled!(core.log, reason, edge = core.id, remote = %remote, "connection refused");
                incoming.refuse();
                continue;
            }
            Decision::Ignore(reason) => {
                core.metrics.connection_refused(reason);
                warn_throttled!(core.log, reason, edge = core.id, remote = %remote, "connection attempt ignored");
                incoming.ignore();
                continue;
            }
        };
        core.metrics
            .handshakes_in_progress
            .set(core.admission.handshakes_in_progress() as f64);
        let core = core.clone();
        let tasks = core.tasks.clone();
        tasks.spawn(async move {
            let handshake = tokio::time::timeout(core.admission.handshake_timeout(), async {
                incoming.accept()?.await
            });
            let result = handshake.await;
            admitted.handshake_done();
            core.metrics
                .handshakes_in_progress
                .set(core.admission.handshakes_in_progress() as f64);
            let conn = match result {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    core.metrics.protocol_error("handshake_failed");
                    tracing::debug!(edge = core.id, error = %e, "handshake failed");
                    return;
                }
                Err(_) => {
                    // Dropping the handshake closes the connection.
                    core.metrics.protocol_error("handshake_timeout");
                    warn_throttled!(core.log, "handshake_timeout", edge = core.id, remote = %remote, "handshake not finished in time");
                    return;
                }
            };
            let alpn = conn
                .handshake_data()
                .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|h| h.protocol);
            let kind = alpn::parse(alpn.as_deref());
            if !matches!(kind, Ok((LinkKind::WebTransport, _))) {
                // Only HTTP/3 uses unidirectional streams (its control and
                // QPACK streams); the transport parameters allow three so a
                // browser need not wait a round trip for them.
                conn.set_max_concurrent_uni_streams(0u32.into());
            }
            match kind {
                Ok((LinkKind::Client, _)) => {
                    session::run(core, session::ClientLink::raw(conn)).await
                }
                Ok((LinkKind::WebTransport, _)) => {
                    if let Some(link) = crate::webtransport::accept(&core, conn).await {
                        session::run(core, link).await;
                    }
                }
                Ok((LinkKind::Relay, _)) => crate::relay::run_inbound(core, conn).await,
                Err(e) => {
                    core.metrics.protocol_error("bad_alpn");
                    warn_throttled!(core.log, "bad_alpn", edge = core.id, remote = %remote, error = %e, "refusing connection");
                    session::close_quic(&conn, ErrorCode::WrongAlpn, &e.to_string());
                }
            }
            // The connection's per-address slot is held until here.
            drop(admitted);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &std::path::Path, name: &str, year: i32) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    }

    fn client_expiry(edge: &str) -> Option<f64> {
        let prefix = format!(
            "rtn_edge_certificate_expiry_timestamp_seconds{{edge=\"{edge}\",cert=\"client\",source=\"files\"}} "
        );
        crate::metrics::prometheus()
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
    }

    #[test]
    fn the_client_certificates_expiry_follows_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "edge.test", 2031);
        let certs = ClientCerts::new(ClientCertSource::Files {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            check_every: Duration::from_secs(1),
        })
        .unwrap();
        let metrics = EdgeMetrics::new(90_004);
        let mut recorded = None;
        record_client_cert(&certs, &metrics, "files", &mut recorded);
        // 2031-01-01T00:00:00Z
        assert_eq!(client_expiry("90004"), Some(1_924_992_000.0));
        // Renewed (a longer name: the files' size changes, whatever the
        // file system's clock resolution).
        write_pair(dir.path(), "renewed.edge.test", 2032);
        assert!(certs.reload_if_changed().unwrap().is_some());
        record_client_cert(&certs, &metrics, "files", &mut recorded);
        // 2032-01-01T00:00:00Z
        assert_eq!(client_expiry("90004"), Some(1_956_528_000.0));
    }
}
