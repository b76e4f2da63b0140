//! `loadtest lab`: a complete RTN on loopback — edges in real cities across
//! regions, a region controller and a standby per region, the embedded
//! control store (or etcd), WAN emulation on every edge and client socket,
//! SDK clients in cities running a traffic mix, failure injection on a
//! schedule — and a report of what users felt. How it works: docs/lab.md.
//!
//! - [`world`]: the topology file, true link figures, optimal paths, the lab
//!   GeoIP database;
//! - [`calibration`]: the latency model against published inter-region
//!   RTTs (`loadtest calibration`);
//! - [`traffic`]: clients and the traffic mix (also used by `loadtest run`);
//! - [`record`]: join times, latency, loss, messages, failovers;
//! - [`stretch`]: chosen paths against the optimal ones, by RTT and by cost;
//! - [`churn`]: route changes, and whether the network explains them;
//! - [`machine`]: whether the machine kept up;
//! - [`chaos`]: the failure plan and the store that can go away;
//! - [`web`]: the browser demo page, tokens for it, and (`--lab-control`)
//!   endpoints that drive the lab from browser tests.

pub mod calibration;
pub mod chaos;
pub mod churn;
pub mod control_runtime;
pub mod joiners;
pub mod machine;
pub mod quality;
pub mod record;
pub mod stretch;
pub mod traffic;
pub mod web;
pub mod world;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use control::keys::KeyLayout;
use control::store::{ControlStore, MemoryStore};
use edge_node::tls::DevPki;
use edge_node::{Edge, EdgeConfig, EdgeOptions, RouteTable};
use region_controller::api::Api;
use region_controller::controller::{Controller, RoutingOptions};
use serde::Serialize;
use testkit::netem::Wan;
use tokio::sync::Mutex;
use tracing::info;

use chaos::Action;
use churn::{ChurnWatch, RouteChanges, Settling};
use joiners::LateJoiners;
use machine::Machine;
use record::{Felt, Recorder};
use stretch::{CostStretch, PathStretch, StretchFigures, StretchSampler};
use testkit::OutageStore;
use traffic::{App, ClientSpec, Traffic};
use world::{TopologyFile, World};

const APP_ID: &str = "lab";

/// How often the chosen paths are compared with the optimal ones, and the
/// edges' paths with their previous snapshot.
const STRETCH_SAMPLE_EVERY: Duration = Duration::from_secs(2);

pub struct LabOptions {
    pub topology: TopologyFile,
    /// etcd client URL; `None`: the embedded store.
    pub etcd: Option<String>,
    /// Traffic time; `None`: until Ctrl-C.
    pub duration: Option<Duration>,
    pub chaos: chaos::Plan,
    pub report: Option<PathBuf>,
    /// Print the status line and the summary table.
    pub verbose: bool,
    /// Media loss repair (NACK, parity) on the edges and the clients;
    /// `false`: best-effort forwarding, to compare.
    pub repair: bool,
}

/// The report (`--report` writes it as JSON).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub edges: usize,
    pub regions: usize,
    pub clients: usize,
    /// Clients that connected and joined all their channels.
    pub clients_joined: usize,
    pub duration_s: f64,
    #[serde(flatten)]
    pub felt: Felt,
    /// Late joiners' time from token to first media, step by step.
    pub first_media: joiners::FirstMedia,
    /// Stalls at the playout point and the cost of loss repair
    /// (`stall_rate` and `repair_overhead` at the top level of the JSON).
    #[serde(flatten)]
    pub quality: quality::Quality,
    /// True RTT of the chosen paths over the lowest through live edges.
    pub path_stretch: PathStretch,
    /// True cost (the controller's cost model) of the chosen paths over the
    /// lowest.
    pub cost_stretch: CostStretch,
    /// Edges' paths that changed, with or without a change in the network.
    pub route_changes: RouteChanges,
    /// Edge pairs with traffic that the network sends over a relayed path
    /// because it beats the direct link (or the direct link is down).
    pub relayed_better_than_direct: usize,
    /// Whether the machine kept up (if not, the figures measure the CPU).
    pub machine: Machine,
    /// What the chaos plan did, and when (seconds after the traffic began).
    pub chaos: Vec<String>,
    /// The lab process (edges, controllers, clients) when the traffic began
    /// and when it ended: flat figures over a long run mean nothing leaks.
    pub resources: Resources,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Resources {
    pub rss_mb_start: f64,
    pub rss_mb_end: f64,
    pub fds_start: usize,
    pub fds_end: usize,
}

/// (resident memory in MiB, open file descriptors) of this process.
fn process_resources() -> (f64, usize) {
    let rss_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    (rss_kb / 1024.0, fds)
}

struct ControllerSlot {
    region: String,
    name: String,
    controller: Option<Controller>,
    api: tokio::task::JoinHandle<()>,
    api_addr: SocketAddr,
    admin_token: String,
}

/// A second handle on each edge's UDP sockets, so that a killed edge's
/// ports stay bound until it restarts. A host that drops off the network
/// answers nothing; a closed port on a live host draws an ICMP port
/// unreachable, which browsers act on at once (Chromium closes the
/// session) while quinn ignores it. Without the hold a kill would be a
/// crash on a live host for browsers and a power cut for Rust clients.
/// Datagrams to a held port queue unread in its buffer, then drop.
#[derive(Default)]
struct PortHolds(Arc<std::sync::Mutex<HashMap<IpAddr, Vec<std::net::UdpSocket>>>>);

impl PortHolds {
    /// The edge's socket hook: `wan`'s, keeping a clone of each socket.
    fn hook(&self, wan: &Arc<Wan>, host: IpAddr) -> edge_node::socket::SocketHook {
        let (wan, holds) = (wan.clone(), self.0.clone());
        Arc::new(move |socket: std::net::UdpSocket| {
            let held = socket.try_clone()?;
            holds.lock().unwrap().entry(host).or_default().push(held);
            wan.wrap(socket)
        })
    }

    /// Close the host's sockets (once its edge is gone).
    fn release(&self, host: IpAddr) {
        self.0.lock().unwrap().remove(&host);
    }
}

/// Everything running.
struct Lab {
    world: World,
    wan: Arc<Wan>,
    store: Arc<OutageStore>,
    pki: DevPki,
    edges: BTreeMap<u32, Option<Edge>>,
    edge_configs: HashMap<u32, EdgeConfig>,
    controllers: Vec<ControllerSlot>,
    /// Where the controllers run ([`control_runtime`]).
    control_rt: control_runtime::ControlRuntime,
    down_hosts: HashSet<IpAddr>,
    /// A second handle on every edge socket, by host, kept after a kill
    /// (see [`PortHolds`]).
    port_holds: PortHolds,
    app: App,
    /// The lab GeoIP database (MaxMind format).
    geoip: Vec<u8>,
    /// Page origins the controllers' APIs allow (CORS): the demo page's.
    cors_origins: Vec<String>,
    /// Loss repair on edges and clients ([`LabOptions::repair`]).
    repair: bool,
}

pub async fn run(opts: LabOptions) -> anyhow::Result<Report> {
    run_with(opts, None).await
}

/// [`run`], serving the demo page (and with `lab_control` the lab's control
/// endpoints) on `web`.
pub async fn run_with(opts: LabOptions, web: Option<web::WebOptions>) -> anyhow::Result<Report> {
    // Bound first: the controllers' CORS allowlist names the page's origin.
    let web = match web {
        Some(w) => Some(web::Bound::bind(w).await?),
        None => None,
    };
    let world = World::new(opts.topology.clone())?;
    let wan = Wan::new(world.rules()).map_err(anyhow::Error::msg)?;
    let inner: Arc<dyn ControlStore> = match &opts.etcd {
        None => Arc::new(MemoryStore::new()),
        Some(url) => etcd_store(url)?,
    };
    let store = OutageStore::new(inner);
    let app = App {
        id: APP_ID.into(),
        secret: format!("{:032x}", rand::random::<u128>()),
    };
    let mut lab = Lab {
        world,
        wan,
        store,
        pki: DevPki::new()?,
        edges: BTreeMap::new(),
        edge_configs: HashMap::new(),
        controllers: Vec::new(),
        control_rt: control_runtime::ControlRuntime::new()?,
        down_hosts: HashSet::new(),
        port_holds: PortHolds::default(),
        app,
        geoip: Vec::new(),
        cors_origins: web.iter().map(|w| w.origin()).collect(),
        repair: opts.repair,
    };
    lab.start_controllers().await?;
    let edge_ids: Vec<u32> = lab.world.edges.iter().map(|e| e.id).collect();
    for id in &edge_ids {
        lab.start_edge(*id).await?;
    }
    let started = Instant::now();
    lab.wait_for_routes(Duration::from_secs(60)).await?;
    let routes_ready = Instant::now();
    if opts.verbose {
        println!(
            "RTN lab: {} edges in {} regions, {} controllers, routes computed after {:.1} s",
            edge_ids.len(),
            lab.regions().len(),
            lab.controllers.len(),
            started.elapsed().as_secs_f64()
        );
        lab.print_urls();
        if let Some(w) = &web {
            println!("  demo: http://{}/", w.addr);
        }
    }

    let rec = Arc::new(Recorder::default());
    let specs = lab.client_specs();
    let n_clients = specs.len();
    let join_places = joiners::one_per_place(&specs);
    let traffic = Traffic::start(specs, &lab.app, rec.clone(), Duration::from_secs(30)).await?;
    let expected_joins: usize = traffic
        .clients
        .iter()
        .map(|(spec, _)| traffic.channels_of(&spec.name))
        .sum();
    let clients_joined = traffic
        .clients
        .iter()
        .filter(|(spec, _)| traffic.joined_all(&spec.name))
        .count();
    let traffic_started = Instant::now();
    let joiners = LateJoiners::start(join_places, lab.app.clone(), joiners::LATE_JOIN_EVERY);
    let repair_start = traffic.repair_counters();
    let (rss_mb_start, fds_start) = process_resources();
    if opts.verbose {
        println!(
            "{} of {} clients connected to their nearest edge and joined ({expected_joins} channel joins):",
            clients_joined, n_clients
        );
        let mut line = String::new();
        for (spec, c) in &traffic.clients {
            let edge = c.edge().and_then(|a| lab.edge_by_addr(a));
            line += &format!(
                "  {} -> edge {}",
                spec.name,
                edge.map_or("?".into(), |e| e.to_string())
            );
        }
        println!("{line}");
    }

    let wan = lab.wan.clone();
    let watch = machine::Watch::start(&wan);
    let controller_url = format!(
        "http://{}",
        lab.api_for(lab.world.edges[0].host.city.region).api_addr
    );
    let app = lab.app.clone();
    let lab = Arc::new(Mutex::new(lab));
    let web = web.map(|w| w.serve(Arc::downgrade(&lab), controller_url, app));
    let mut chaos_log = Vec::new();
    let mut events: std::collections::VecDeque<chaos::Event> = opts.chaos.events.clone().into();
    let mut settling = Settling::new(routes_ready);
    let mut stretch = StretchSampler::default();
    let mut churn = ChurnWatch::default();
    let mut status = tokio::time::interval(Duration::from_secs(1));
    let mut sample = tokio::time::interval(STRETCH_SAMPLE_EVERY);
    let end = opts.duration.map(|d| traffic_started + d);
    let ctrl_c = crate::stop_signal();
    tokio::pin!(ctrl_c);
    let terminal = std::io::stdout().is_terminal();
    loop {
        let next_event = events
            .front()
            .map(|e| traffic_started + Duration::from_secs_f64(e.at_s));
        let until_end = end.map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = tokio::time::sleep_until(until_end.unwrap_or_else(far_future)), if until_end.is_some() => break,
            _ = tokio::time::sleep_until(next_event.map(tokio::time::Instant::from_std).unwrap_or_else(far_future)), if next_event.is_some() => {
                let e = events.pop_front().expect("peeked");
                let at = Instant::now();
                if let Action::RollingRestart { every_s } = e.action {
                    // Each running edge in turn: drained, then started again
                    // half a period later.
                    let alive = lab.lock().await.alive();
                    for (k, edge) in alive.into_iter().enumerate() {
                        let t = e.at_s + k as f64 * every_s;
                        events.push_back(chaos::Event { at_s: t, action: Action::DrainEdge { edge } });
                        events.push_back(chaos::Event { at_s: t + every_s / 2.0, action: Action::RestartEdge { edge } });
                    }
                    events.make_contiguous().sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
                }
                match &e.action {
                    Action::PartitionRegion { region } => rec.isolated(region, at),
                    Action::HealRegion { region } => rec.healed(region, at),
                    _ if e.action.disrupts_media() => rec.failure(at),
                    _ => {}
                }
                let outcome = lab.lock().await.apply(&e.action).await;
                let line = format!(
                    "t={:.1}s {:?}: {}",
                    traffic_started.elapsed().as_secs_f64(),
                    e.action,
                    match &outcome { Ok(s) => s.clone(), Err(err) => format!("failed: {err:#}") }
                );
                if opts.verbose {
                    println!("{}chaos {line}", if terminal { "\n" } else { "" });
                }
                chaos_log.push(line);
                settling.network_changed(at, e.action.route_settle());
            }
            _ = sample.tick() => {
                let now = Instant::now();
                let at_s = traffic_started.elapsed().as_secs_f64();
                let (tables, world, alive, pairs) = {
                    let lab = lab.lock().await;
                    let pairs = lab.pairs_with_traffic(&traffic);
                    (lab.route_tables(), lab.world.clone(), lab.alive(), pairs)
                };
                let settled = settling.settled(now);
                let windows = settling.clone();
                // On a blocking thread, not a runtime worker: a sample of the
                // 60-edge world takes 20-40 ms, which stalled the edges'
                // tasks every 2 s, and their probes sent at that moment of
                // each cycle read it as jitter on the same links every time.
                (churn, stretch) = tokio::task::spawn_blocking(move || {
                    churn.observe(now, at_s, &tables, &windows);
                    if settled {
                        stretch.sample(at_s, &world.true_mesh(&alive), &tables, &pairs);
                    }
                    (churn, stretch)
                })
                .await
                .context("the route sampler failed")?;
            }
            _ = status.tick() => {
                if opts.verbose {
                    let lab = lab.lock().await;
                    let line = status_line(&lab, &rec, traffic_started.elapsed(), n_clients);
                    drop(lab);
                    if terminal {
                        print!("\r{line}   ");
                        let _ = std::io::stdout().flush();
                    } else if traffic_started.elapsed().as_secs().is_multiple_of(5) {
                        println!("{line}");
                    }
                }
            }
        }
    }
    if opts.verbose && terminal {
        println!();
    }
    let duration_s = traffic_started.elapsed().as_secs_f64();
    let machine = watch.finish(&wan);
    let (rss_mb_end, fds_end) = process_resources();
    let first_media = joiners.finish().await;
    traffic.quiesce(Duration::from_secs(3)).await;
    messages_land(&rec).await;
    let felt = rec.felt();
    let quality = quality::Quality::of(
        &traffic.playout_stats(),
        traffic.repair_counters().since(&repair_start),
        &felt.media_streams,
    );
    traffic.stop(Duration::ZERO).await;
    let (path_stretch, cost_stretch, relayed_better_than_direct) = stretch.report();
    if let Some(w) = web {
        w.stop().await;
    }
    let mut lab = Arc::try_unwrap(lab)
        .map_err(|_| anyhow::anyhow!("lab still shared"))?
        .into_inner();
    let report = Report {
        edges: lab.edges.len(),
        regions: lab.regions().len(),
        clients: n_clients,
        clients_joined,
        duration_s,
        felt,
        first_media,
        quality,
        path_stretch,
        cost_stretch,
        route_changes: churn.report(),
        relayed_better_than_direct,
        machine,
        chaos: chaos_log,
        resources: Resources {
            rss_mb_start,
            rss_mb_end,
            fds_start,
            fds_end,
        },
    };
    lab.stop().await;
    if opts.verbose {
        print_summary(&report);
    }
    if let Some(path) = &opts.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing the report {}", path.display()))?;
        if opts.verbose {
            println!("report written to {}", path.display());
        }
    }
    Ok(report)
}

/// How long, past the media's grace, messages still on their way may take
/// to land before the report counts them lost. On a loaded machine with
/// lossy links a message can trail its sender's stop by a few seconds (QUIC
/// retransmits it); one that never comes costs this wait once.
const MESSAGES_LAND_WITHIN: Duration = Duration::from_secs(7);

/// Wait (at most [`MESSAGES_LAND_WITHIN`]) until every message sent reached
/// every other member of its channel.
async fn messages_land(rec: &Recorder) {
    let until = tokio::time::Instant::now() + MESSAGES_LAND_WITHIN;
    while rec.messages_outstanding() > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

#[cfg(feature = "etcd")]
fn etcd_store(url: &str) -> anyhow::Result<Arc<dyn ControlStore>> {
    let endpoints = url.split(',').map(str::to_string).collect();
    Ok(Arc::new(control::store::EtcdStore::lazy(endpoints)?))
}

#[cfg(not(feature = "etcd"))]
fn etcd_store(_url: &str) -> anyhow::Result<Arc<dyn ControlStore>> {
    anyhow::bail!("this loadtest was built without etcd support: rebuild with `--features etcd`")
}

impl Lab {
    fn regions(&self) -> Vec<&'static str> {
        let mut r: Vec<&'static str> = self
            .world
            .edges
            .iter()
            .map(|e| e.host.city.region)
            .collect();
        r.sort();
        r.dedup();
        r
    }

    /// A controller and a standby per region, each with its public API
    /// (GeoIP from the lab database, so clients are placed in their cities).
    async fn start_controllers(&mut self) -> anyhow::Result<()> {
        self.geoip = topology::write_lab_db(&self.world.geoip_entries())?;
        for region in self.regions() {
            for suffix in ["a", "b"] {
                let slot = self
                    .start_controller(region, &format!("{region}-{suffix}"), None)
                    .await?;
                self.controllers.push(slot);
            }
        }
        Ok(())
    }

    /// A controller with its API, on `api_addr` again after a restart, on
    /// the controllers' runtime.
    async fn start_controller(
        &self,
        region: &str,
        name: &str,
        restart: Option<(SocketAddr, String)>,
    ) -> anyhow::Result<ControllerSlot> {
        let store: Arc<dyn ControlStore> = self.store.clone();
        let geoip = self.geoip.clone();
        let cors_origins = self.cors_origins.clone();
        let (region, name) = (region.to_string(), name.to_string());
        self.control_rt
            .run(async move {
                let controller = Controller::start(
                    store,
                    KeyLayout::default(),
                    RoutingOptions::new(&region, &name),
                );
                let mut api = Api::new(
                    controller.mesh.clone(),
                    controller.leader.clone(),
                    region.clone(),
                    Some(topology::GeoIpDb::from_bytes(geoip)?),
                    10_000,
                );
                let (bind, admin_token) = match restart {
                    Some((addr, token)) => (addr, token),
                    None => (
                        SocketAddr::from(([127, 0, 0, 1], 0)),
                        format!("{:032x}", rand::random::<u128>()),
                    ),
                };
                api.admin_token = Some(admin_token.clone());
                // The demo page's origin (web.rs) may call the lookup.
                api.cors = region_controller::api::CorsPolicy::new(&cors_origins)
                    .map_err(anyhow::Error::msg)?;
                let listener = tokio::net::TcpListener::bind(bind)
                    .await
                    .with_context(|| format!("binding the API of {name} on {bind}"))?;
                let api_addr = listener.local_addr()?;
                let api = tokio::spawn(Arc::new(api).serve(listener));
                Ok(ControllerSlot {
                    region,
                    name,
                    controller: Some(controller),
                    api,
                    api_addr,
                    admin_token,
                })
            })
            .await?
    }

    async fn start_edge(&mut self, id: u32) -> anyhow::Result<()> {
        let spec = self.world.edge(id).context("no such edge")?.clone();
        let cfg = match self.edge_configs.get(&id) {
            Some(c) => c.clone(),
            None => {
                let mut cfg = EdgeConfig::dev(id, APP_ID, &self.app.secret);
                cfg.edge.region = spec.host.city.region.into();
                cfg.edge.city = spec.host.city.code.into();
                cfg.edge.listen = SocketAddr::new(spec.host.ip, 0);
                cfg.repair.enabled = self.repair;
                cfg
            }
        };
        // A restart waits for the killed edge's socket to close.
        let edge = testkit::mesh::start_when_port_free(&cfg, || {
            Ok(EdgeOptions {
                tls: Some(self.pki.material(&["localhost".into()])?),
                store: Some(self.store.clone()),
                socket: Some(self.port_holds.hook(&self.wan, spec.host.ip)),
                ..Default::default()
            })
        })
        .await
        .with_context(|| format!("starting edge {id}"))?;
        // A restart must come back on the same address.
        let mut cfg = cfg;
        cfg.edge.listen = edge.addr();
        self.edge_configs.insert(id, cfg);
        self.edges.insert(id, Some(edge));
        Ok(())
    }

    /// Every live edge's effective table (what it forwards by).
    fn route_tables(&self) -> BTreeMap<u32, Arc<RouteTable>> {
        self.edges
            .iter()
            .filter_map(|(id, e)| Some((*id, e.as_ref()?.core.route_table())))
            .collect()
    }

    fn alive(&self) -> Vec<u32> {
        self.edges
            .iter()
            .filter(|(_, e)| e.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    async fn wait_for_routes(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let n = self.edges.len();
        loop {
            let done = self
                .edges
                .values()
                .flatten()
                .all(|e| e.core.route_table().paths.len() == n - 1);
            if done {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the controllers computed no complete routes within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn api_for(&self, region: &str) -> &ControllerSlot {
        self.controllers
            .iter()
            .find(|c| c.region == region)
            .unwrap_or(&self.controllers[0])
    }

    /// The controller APIs a client in `region` is given, in the order it
    /// asks them: its region's (leader and standby), then the others', as
    /// many as the SDK takes. One URL alone failed joiners while the
    /// region's first controller was down.
    fn api_urls_for(&self, region: &str) -> Vec<String> {
        let (own, others): (Vec<_>, Vec<_>) =
            self.controllers.iter().partition(|c| c.region == region);
        own.into_iter()
            .chain(others)
            .map(|c| format!("http://{}", c.api_addr))
            .take(sdk::MAX_CONTROLLERS)
            .collect()
    }

    fn print_urls(&self) {
        for c in self.controllers.iter().filter(|c| c.name.ends_with("-a")) {
            println!(
                "  region {:<13} dashboard http://{}/  mesh: curl -H 'Authorization: Bearer {}' http://{}/v1/mesh",
                c.region, c.api_addr, c.admin_token, c.api_addr
            );
        }
        for (id, e) in &self.edges {
            if let Some(e) = e {
                let spec = self.world.edge(*id).expect("known edge");
                println!(
                    "  edge {id:>2} {:<13} {:<4} quic {}  metrics http://{}/metrics",
                    spec.host.city.region,
                    spec.host.city.code,
                    e.addr(),
                    e.admin_addr()
                );
            }
        }
    }

    fn client_specs(&self) -> Vec<ClientSpec> {
        // The lab's edges show clients short-lived self-signed certificates
        // (as a browser demo needs); clients pin the digests the controller
        // publishes, as browsers do.
        let trust = sdk::EdgeTrust::PinnedHashes;
        let mut per_city: HashMap<&str, u32> = HashMap::new();
        self.world
            .clients
            .iter()
            .map(|host| {
                let n = per_city.entry(host.city.code).or_default();
                *n += 1;
                let (wan, ip) = (self.wan.clone(), host.ip);
                let socket =
                    sdk::SocketFactory(Arc::new(move |_| wan.bind(SocketAddr::new(ip, 0))));
                let mut config = traffic::client_config(
                    &trust,
                    self.api_urls_for(host.city.region),
                    Some(ip),
                    Some(socket),
                );
                config.repair = self.repair;
                ClientSpec {
                    name: format!("{}-{}", host.city.code, n),
                    place: host.city.region.into(),
                    config,
                }
            })
            .collect()
    }

    /// A client that connects to edge `id` only (the web server's peer).
    /// Pinned to the certificate digests the edge shows now, as the lab's
    /// clients are (`client_specs`).
    fn pinned_client_config(&self, id: u32) -> sdk::ClientConfig {
        let hashes = self
            .edges
            .get(&id)
            .and_then(Option::as_ref)
            .map(|e| e.core.client_certs.hashes().borrow().clone())
            .unwrap_or_default();
        let mut cfg = traffic::client_config(&sdk::EdgeTrust::PinnedHashes, vec![], None, None);
        cfg.edges = vec![
            sdk::EdgeCandidate::new(self.edge_configs[&id].edge.listen, "localhost")
                .with_cert_hashes(hashes),
        ];
        cfg
    }

    fn edge_by_addr(&self, addr: SocketAddr) -> Option<u32> {
        self.edge_configs
            .iter()
            .find(|(_, c)| c.edge.listen == addr)
            .map(|(id, _)| *id)
    }

    /// (publisher's edge, receiver's edge) for every stream, edges apart.
    fn pairs_with_traffic(&self, traffic: &Traffic) -> HashSet<(u32, u32)> {
        let edge_of: HashMap<&str, Option<u32>> = traffic
            .clients
            .iter()
            .map(|(spec, c)| {
                (
                    spec.name.as_str(),
                    c.edge().and_then(|a| self.edge_by_addr(a)),
                )
            })
            .collect();
        let mut pairs = HashSet::new();
        for (publisher, receiver) in traffic.streams() {
            if let (Some(Some(a)), Some(Some(b))) = (
                edge_of.get(publisher.as_str()),
                edge_of.get(receiver.as_str()),
            ) {
                if a != b {
                    pairs.insert((*a, *b));
                }
            }
        }
        pairs
    }

    /// The codes of a region's cities and of every other city.
    fn region_cities(
        &self,
        region: &str,
    ) -> anyhow::Result<(Vec<&'static str>, Vec<&'static str>)> {
        let mut inside = vec![];
        let mut outside = vec![];
        for h in self
            .world
            .edges
            .iter()
            .map(|e| &e.host)
            .chain(&self.world.clients)
        {
            let list = if h.city.region == region {
                &mut inside
            } else {
                &mut outside
            };
            if !list.contains(&h.city.code) {
                list.push(h.city.code);
            }
        }
        anyhow::ensure!(
            !inside.is_empty(),
            "no city of the lab is in region {region}"
        );
        Ok((inside, outside))
    }

    /// Re-apply the world's link rules, keeping dead hosts cut off.
    fn reapply_links(&self) -> anyhow::Result<()> {
        self.wan
            .replace(self.world.rules())
            .map_err(anyhow::Error::msg)?;
        for ip in &self.down_hosts {
            self.wan.set_host_down(*ip, true);
        }
        Ok(())
    }

    async fn apply(&mut self, action: &Action) -> anyhow::Result<String> {
        match action {
            Action::KillEdge { edge } => {
                let e = self
                    .edges
                    .get_mut(edge)
                    .and_then(Option::take)
                    .with_context(|| format!("edge {edge} is not running"))?;
                let ip = self.world.edge(*edge).expect("known").host.ip;
                // Off the network first: not even a close frame gets out.
                self.wan.set_host_down(ip, true);
                self.down_hosts.insert(ip);
                e.kill().await;
                Ok(format!("edge {edge} killed"))
            }
            Action::RestartEdge { edge } => {
                anyhow::ensure!(
                    matches!(self.edges.get(edge), Some(None)),
                    "edge {edge} is not a killed edge"
                );
                let ip = self.world.edge(*edge).expect("known").host.ip;
                self.down_hosts.remove(&ip);
                self.wan.set_host_down(ip, false);
                self.port_holds.release(ip);
                self.start_edge(*edge).await?;
                Ok(format!("edge {edge} restarted"))
            }
            Action::DegradeLink {
                a,
                b,
                extra_delay_ms,
                jitter_ms,
                loss,
            } => {
                self.world.set_override(world::LinkOverride {
                    a: a.clone(),
                    b: b.clone(),
                    extra_delay_ms: *extra_delay_ms,
                    jitter_ms: *jitter_ms,
                    loss: *loss,
                    down: false,
                })?;
                self.reapply_links()?;
                Ok(format!("{a}-{b} degraded"))
            }
            Action::Partition { a, b } => {
                self.world.set_override(world::LinkOverride {
                    a: a.clone(),
                    b: b.clone(),
                    extra_delay_ms: 0.0,
                    jitter_ms: None,
                    loss: None,
                    down: true,
                })?;
                self.reapply_links()?;
                Ok(format!("{a}-{b} cut"))
            }
            Action::HealLink { a, b } => {
                self.world.clear_override(a, b)?;
                self.reapply_links()?;
                Ok(format!("{a}-{b} healed"))
            }
            Action::KillController { region } => {
                let slot = self
                    .controllers
                    .iter_mut()
                    .find(|c| {
                        c.region == *region
                            && c.controller.as_ref().is_some_and(|c| c.leader.is_leader())
                    })
                    .with_context(|| format!("no leading controller in {region}"))?;
                // A crash: tasks gone, no resignation; the standby waits out
                // the election lease.
                drop(slot.controller.take());
                slot.api.abort();
                Ok(format!("controller {} crashed", slot.name))
            }
            Action::DrainEdge { edge } => {
                let e = self
                    .edges
                    .get_mut(edge)
                    .and_then(Option::take)
                    .with_context(|| format!("edge {edge} is not running"))?;
                let started = Instant::now();
                e.shutdown().await;
                // A process that stopped: its port closes.
                self.port_holds
                    .release(self.world.edge(*edge).expect("known").host.ip);
                Ok(format!(
                    "edge {edge} drained in {:.2} s (goaway, clients moved)",
                    started.elapsed().as_secs_f64()
                ))
            }
            Action::RollingRestart { .. } => {
                // Expanded into drain/restart events by the run loop.
                Ok("rolling restart scheduled".into())
            }
            Action::PartitionRegion { region } => {
                let (inside, outside) = self.region_cities(region)?;
                for a in &inside {
                    for b in &outside {
                        self.world.set_override(world::LinkOverride {
                            a: a.to_string(),
                            b: b.to_string(),
                            extra_delay_ms: 0.0,
                            jitter_ms: None,
                            loss: None,
                            down: true,
                        })?;
                    }
                }
                self.reapply_links()?;
                Ok(format!("{region} cut from the rest"))
            }
            Action::HealRegion { region } => {
                let (inside, outside) = self.region_cities(region)?;
                for a in &inside {
                    for b in &outside {
                        self.world.clear_override(a, b)?;
                    }
                }
                self.reapply_links()?;
                Ok(format!("{region} reconnected"))
            }
            Action::SetLastMile { city, profile } => {
                self.world.set_last_mile(city, profile)?;
                self.reapply_links()?;
                Ok(format!("{city} clients' last mile: {profile}"))
            }
            Action::StopControllers => {
                let mut n = 0;
                for slot in &mut self.controllers {
                    if slot.controller.take().is_some() {
                        slot.api.abort();
                        n += 1;
                    }
                }
                Ok(format!("{n} controllers crashed"))
            }
            Action::StartControllers => {
                let mut n = 0;
                for i in 0..self.controllers.len() {
                    if self.controllers[i].controller.is_none() {
                        let old = &self.controllers[i];
                        let (region, name) = (old.region.clone(), old.name.clone());
                        let again = Some((old.api_addr, old.admin_token.clone()));
                        self.controllers[i] = self.start_controller(&region, &name, again).await?;
                        n += 1;
                    }
                }
                Ok(format!("{n} controllers started"))
            }
            Action::StopStore => {
                self.store.set_down(true);
                Ok("control store unreachable".into())
            }
            Action::StartStore => {
                self.store.set_down(false);
                Ok("control store back".into())
            }
        }
    }

    async fn stop(&mut self) {
        for (_, e) in std::mem::take(&mut self.edges) {
            if let Some(e) = e {
                e.kill().await;
            }
        }
        for c in self.controllers.drain(..) {
            c.api.abort();
            if let Some(ctl) = c.controller {
                ctl.shutdown().await;
            }
        }
        info!("lab stopped");
    }
}

fn status_line(lab: &Lab, rec: &Recorder, t: Duration, clients: usize) -> String {
    let (sent, delivered) = rec.message_counts();
    let leaders = lab
        .controllers
        .iter()
        .filter(|c| c.controller.as_ref().is_some_and(|c| c.leader.is_leader()))
        .count();
    format!(
        "[{:>4}s] edges {}/{}  leaders {}/{}  clients {}  media rx {}  messages sent {} delivered {}",
        t.as_secs(),
        lab.alive().len(),
        lab.edges.len(),
        leaders,
        lab.regions().len(),
        clients,
        rec.media_received(),
        sent,
        delivered
    )
}

fn failover(f: &Option<record::Failover>, what: &str) -> String {
    match f {
        Some(x) => format!(
            "p50 {:.0}  max {:.0}  ({} {what} interrupted, {} unrecovered)",
            x.p50, x.max, x.interrupted, x.unrecovered
        ),
        None => "no failure injected".into(),
    }
}

fn stretch_row(s: &StretchFigures) -> String {
    format!(
        "p50 {:.3}  p99 {:.3}  within 5% {:.1}% ({} pairs, {} broken of {} samples)",
        s.p50,
        s.p99,
        s.within_5pct * 100.0,
        s.pairs,
        s.broken,
        s.samples
    )
}

/// The loud line that says the figures measure the CPU.
fn print_overload(m: &Machine) {
    if m.overloaded {
        println!("  !!! OVERLOADED: the machine could not keep up; figures below measure the CPU, not the network:");
        for why in &m.why {
            println!("  !!!   {why}");
        }
    }
}

fn print_summary(r: &Report) {
    let pct = |p: &Option<record::Pct>| match p {
        Some(p) => format!("p50 {:.1}  p95 {:.1}  p99 {:.1}", p.p50, p.p95, p.p99),
        None => "-".into(),
    };
    let delays =
        |d: &machine::Delays| format!("p50 {:.2}  p99 {:.2}  max {:.1}", d.p50, d.p99, d.max);
    let p95 = |p: &Option<record::Pct>| p.map_or(f64::NAN, |p| p.p95);
    let f = &r.felt;
    let fm = &r.first_media;
    let m = &r.machine;
    let media = &f.media_streams;
    println!("\n{:-<72}", "");
    println!(
        "RTN lab summary: {} edges, {} regions, {} clients, {:.0} s",
        r.edges, r.regions, r.clients, r.duration_s
    );
    println!("{:-<72}", "");
    print_overload(m);
    let mut rows: Vec<(&str, String)> = vec![
        (
            "clients joined",
            format!("{} of {}", r.clients_joined, r.clients),
        ),
        (
            "late joiners: token to first media, ms",
            pct(&fm.first_media_ms),
        ),
        (
            "  their count",
            format!(
                "{} joined, {} failed; {} within 3 edge RTTs + 100 ms",
                fm.joiners - fm.failures.len() as u64,
                fm.failures.len(),
                fm.within_goal
            ),
        ),
        (
            "  p95 by step, ms",
            format!(
                "lookup {:.0}  handshake {:.0}  join {:.0}  first packet {:.0}  (edge RTT {:.0})",
                p95(&fm.lookup_ms),
                p95(&fm.handshake_ms),
                p95(&fm.join_ms),
                p95(&fm.first_packet_ms),
                p95(&fm.edge_rtt_ms),
            ),
        ),
        (
            "everyone starts at once: to first media, ms",
            pct(&f.start_together_ms),
        ),
        (
            "joins to the roster listing everyone, ms",
            pct(&f.roster_wait_ms),
        ),
        ("media latency at playout, ms", pct(&f.media_latency_ms)),
        (
            "media loss (every expected stream)",
            format!(
                "{:.4}%  ({} streams, {} silent; {} duplicates, {} unsent)",
                f.media_loss * 100.0,
                media.expected,
                media.silent,
                media.duplicates,
                media.unsent
            ),
        ),
        (
            "residual loss (after repair)",
            format!(
                "audio {:.3}%  video {:.3}%  (not played: {:.3}% / {:.3}%)",
                r.quality.residual_loss.audio * 100.0,
                r.quality.residual_loss.video * 100.0,
                f.playout_loss.audio * 100.0,
                f.playout_loss.video * 100.0
            ),
        ),
        (
            "stall rate at playout",
            format!(
                "audio {:.3}%  video {:.3}%  ({} + {} stalls, buffers {:.0} / {:.0} ms)",
                r.quality.stall_rate.audio * 100.0,
                r.quality.stall_rate.video * 100.0,
                r.quality.audio.stalls,
                r.quality.video.stalls,
                r.quality.audio.mean_buffer_ms,
                r.quality.video.mean_buffer_ms,
            ),
        ),
        (
            "repair overhead",
            format!(
                "{:.1}%  ({:.0} resent, {:.0} rebuilt from parity, {:.0} copies around suspect relays and lossy links, {:.1}% of the media)",
                r.quality.repair_overhead * 100.0,
                r.quality.repair.resent,
                r.quality.repair.rebuilt,
                r.quality.repair.copies,
                r.quality.repair.copy_overhead() * 100.0
            ),
        ),
        (
            "messages",
            format!(
                "sent {}  delivered {}  lost {}  duplicates {}  reordered {}",
                f.messages.sent,
                f.messages.delivered,
                f.messages.lost,
                f.messages.duplicates,
                f.messages.reordered
            ),
        ),
        (
            "RTT stretch, all pairs",
            stretch_row(&r.path_stretch.all_pairs.figures),
        ),
        (
            "RTT stretch, traffic pairs",
            stretch_row(&r.path_stretch.traffic_pairs.figures),
        ),
        (
            "cost stretch, all pairs",
            stretch_row(&r.cost_stretch.all_pairs),
        ),
        (
            "route changes",
            format!(
                "{} ({} unexplained: no change in the network)",
                r.route_changes.total, r.route_changes.unexplained
            ),
        ),
    ];
    // The unexplained changes under their row.
    rows.extend(r.route_changes.examples.iter().map(|e| ("", e.clone())));
    rows.extend([
        (
            "relayed paths beating direct",
            r.relayed_better_than_direct.to_string(),
        ),
        (
            "failover per receiver, ms",
            failover(&f.failover_ms, "receivers"),
        ),
        (
            "failover per stream, ms",
            failover(&f.stream_failover_ms, "streams"),
        ),
    ]);
    for (label, what, after) in [
        (
            "after region heal, per receiver, ms",
            "receivers",
            &f.receivers_after_heal_ms,
        ),
        (
            "after region heal, per stream, ms",
            "streams",
            &f.streams_after_heal_ms,
        ),
    ] {
        if let Some(x) = after {
            rows.push((
                label,
                format!(
                    "p50 {:.0}  max {:.0}  ({} {what} cut off)",
                    x.p50, x.max, x.interrupted
                ),
            ));
        }
    }
    rows.extend(
        media
            .worst
            .iter()
            .map(|s| ("streams that lost most", s.clone())),
    );
    let short = f.messages.short.iter();
    rows.extend(short.map(|s| ("messages short", s.clone())));
    rows.extend(fm.slowest.iter().map(|s| ("slowest late joins", s.clone())));
    rows.extend(fm.failures.iter().map(|s| ("failed late joins", s.clone())));
    for (k, v) in rows {
        println!("  {k:<36} {v}");
    }
    let res = &r.resources;
    println!(
        "  {:<36} RSS {:.0} -> {:.0} MiB, file descriptors {} -> {}",
        "lab process", res.rss_mb_start, res.rss_mb_end, res.fds_start, res.fds_end
    );
    println!(
        "  {:<36} {:.2} of {} cores busy",
        "lab CPU", m.cpu_cores_busy, m.cores
    );
    println!(
        "  {:<36} {}",
        "WAN emulation late, ms",
        delays(&m.netem_late_ms)
    );
    println!("  {:<36} {}", "runtime lag, ms", delays(&m.runtime_lag_ms));
    for line in &r.chaos {
        println!("  chaos {line}");
    }
    print_overload(m);
}
