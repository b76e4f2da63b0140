//! A lab for the path-quality dashboard: six edges in three regions on
//! loopback, with an emulated WAN between them, and a region controller per
//! region, all in this process on the embedded control store. The `eu`
//! controller serves the API and the dashboard.
//!
//! ```sh
//! cargo run -p region-controller --example dashboard_lab
//! ```
//!
//! It prints the dashboard's URL (with the admin token in the fragment),
//! the API's base URL and the token, then `ready` once every edge probes
//! every other and routes are published. It then reads commands, one a
//! line, on standard input, and answers each with one line:
//!
//! - `kill <id>`: stop edge `<id>` as a crash would (its lease expires, so
//!   it leaves the registry within the lease TTL, 3 s);
//! - `degrade <a> <b> <one-way ms> [loss]`: set the emulated link between
//!   edges `a` and `b` (both directions);
//! - `quit`.
//!
//! It exits on `quit`, at the end of standard input (so it never outlives
//! the script driving it) or after `--duration-s`.
//!
//! The WAN: edge `n` sends from 127.0.0.n; one-way delays are the cities'
//! great-circle fiber time inflated 1.6 times (the median of published
//! cloud inter-region RTTs), with three links made worse so that some best
//! paths are relayed: Frankfurt-Singapore +70 ms (a long detour), London-New
//! York 3% loss, New York-San Jose 4 ms jitter.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use control::keys::KeyLayout;
use control::store::{ControlStore, MemoryStore};
use edge_node::{Edge, EdgeConfig, EdgeOptions};
use protocol::EdgeId;
use region_controller::api::Api;
use region_controller::controller::{Controller, RoutingOptions};
use region_controller::mesh::SharedMesh;
use testkit::netem::{LinkProfile, Wan};
use tokio::io::AsyncBufReadExt;

const APP: &str = "lab";
const SECRET: &str = "dashboard-lab-secret-0123456789";

/// Edge id, city code, region.
const EDGES: [(EdgeId, &str, &str); 6] = [
    (1, "fra", "eu"),
    (2, "lhr", "eu"),
    (3, "jfk", "us"),
    (4, "sjc", "us"),
    (5, "sin", "ap"),
    (6, "nrt", "ap"),
];

fn ip(id: EdgeId) -> IpAddr {
    IpAddr::from([127, 0, 0, id as u8])
}

fn city(code: &str) -> topology::GeoPoint {
    topology::geo::find_city(code)
        .expect("a city of topology's table")
        .point()
}

/// One-way profile between two lab edges.
fn profile(a: EdgeId, b: EdgeId) -> LinkProfile {
    let code = |id: EdgeId| EDGES.iter().find(|e| e.0 == id).expect("lab edge").1;
    let rtt = topology::geo::estimated_rtt_ms(
        city(code(a)),
        city(code(b)),
        topology::geo::DEFAULT_INFLATION,
    );
    let mut p = LinkProfile::delay(rtt / 2.0);
    match (a.min(b), a.max(b)) {
        (1, 5) => p.delay_ms += 70.0,
        (2, 3) => p.loss = 0.03,
        (3, 4) => p.jitter_ms = 4.0,
        _ => {}
    }
    p
}

struct Args {
    port: u16,
    duration: Duration,
    token: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        port: 0,
        duration: Duration::from_secs(600),
        token: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => a.port = value()?.parse()?,
            "--duration-s" => a.duration = Duration::from_secs(value()?.parse()?),
            "--token" => a.token = Some(value()?),
            "-h" | "--help" => {
                println!("dashboard_lab [--port N] [--duration-s S] [--token T]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(a)
}

fn controller(store: Arc<dyn ControlStore>, region: &str) -> Controller {
    Controller::start(
        store,
        KeyLayout::default(),
        RoutingOptions {
            debounce: Duration::from_millis(100),
            recompute: Duration::from_secs(2),
            election_ttl: Duration::from_secs(3),
            ..RoutingOptions::new(region, &format!("lab-{region}"))
        },
    )
}

/// Every edge registered, probing every other with live links, and routes
/// published for every edge.
fn complete(mesh: &SharedMesh, live: &BTreeMap<EdgeId, Edge>) -> bool {
    let v = mesh.read();
    live.keys().all(|id| {
        v.edges.contains_key(id)
            && v.routes
                .get(id)
                .is_some_and(|r| r.routes.len() >= live.len() - 1)
            && v.probes.get(id).is_some_and(|p| {
                live.keys().filter(|o| *o != id).all(|o| {
                    p.links
                        .iter()
                        .any(|l| l.to == *o && l.alive && l.samples >= 5)
                })
            })
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = args()?;
    let started = Instant::now();
    region_controller::metrics::prometheus();

    let wan = Wan::new(vec![]).map_err(anyhow::Error::msg)?;
    for (a, ..) in EDGES {
        for (b, ..) in EDGES {
            if a < b {
                wan.set_link(ip(a), ip(b), profile(a, b))
                    .map_err(anyhow::Error::msg)?;
            }
        }
    }
    let store: Arc<dyn ControlStore> = Arc::new(MemoryStore::new());
    let controllers: Vec<Controller> = ["eu", "us", "ap"]
        .iter()
        .map(|r| controller(store.clone(), r))
        .collect();
    let eu = &controllers[0];
    let mut api = Api::new(eu.mesh.clone(), eu.leader.clone(), "eu".into(), None, 50);
    let token = args
        .token
        .clone()
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    anyhow::ensure!(
        token.len() >= 16,
        "the token must be at least 16 characters"
    );
    api.admin_token = Some(token.clone());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
        .await
        .context("binding the API")?;
    let api_addr = listener.local_addr()?;
    tokio::spawn(Arc::new(api).serve(listener));

    let pki = edge_node::tls::DevPki::new()?;
    let mut edges = BTreeMap::new();
    for (id, code, region) in EDGES {
        let mut cfg = EdgeConfig::dev(id, APP, SECRET);
        cfg.edge.region = region.into();
        cfg.edge.city = code.into();
        cfg.edge.listen = SocketAddr::new(ip(id), 0);
        let opts = EdgeOptions {
            tls: Some(pki.material(&["localhost".into()])?),
            client_cert: Some(pki.client_cert(&["localhost".into()])?),
            store: Some(store.clone()),
            socket: Some(wan.hook()),
            ..Default::default()
        };
        let edge = Edge::start(cfg, opts).await?;
        println!("edge {id} {code} region {region} quic {}", edge.addr());
        edges.insert(id, edge);
    }
    println!("api: http://{api_addr}");
    println!("token: {token}");
    println!("dashboard: http://{api_addr}/#token={token}");
    println!("mesh view: curl -H 'Authorization: Bearer {token}' http://{api_addr}/v1/mesh");

    let deadline = Instant::now() + Duration::from_secs(60);
    while !complete(&eu.mesh, &edges) {
        if Instant::now() > deadline {
            bail!("the lab did not converge within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("ready after {:.1} s", started.elapsed().as_secs_f64());

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let until = tokio::time::sleep(args.duration.saturating_sub(started.elapsed()));
    tokio::pin!(until);
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l?,
            _ = &mut until => {
                println!("duration reached");
                break;
            }
        };
        let Some(line) = line else {
            break;
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["quit"] => break,
            ["kill", id] => match id.parse::<EdgeId>().ok().and_then(|i| edges.remove(&i)) {
                Some(edge) => {
                    let id = edge.id();
                    edge.kill().await;
                    println!("killed {id}");
                }
                None => println!("error: no live edge {id}"),
            },
            ["degrade", a, b, ms, rest @ ..] => {
                let parsed = (|| -> anyhow::Result<(EdgeId, EdgeId, LinkProfile)> {
                    let mut p = LinkProfile::delay(ms.parse()?);
                    if let Some(loss) = rest.first() {
                        p.loss = loss.parse()?;
                    }
                    Ok((a.parse()?, b.parse()?, p))
                })();
                match parsed.and_then(|(a, b, p)| {
                    wan.set_link(ip(a), ip(b), p).map_err(anyhow::Error::msg)?;
                    Ok((a, b))
                }) {
                    Ok((a, b)) => println!("degraded {a}-{b}"),
                    Err(e) => println!("error: {e}"),
                }
            }
            _ => println!(
                "error: unknown command {line:?} (kill <id> | degrade <a> <b> <ms> [loss] | quit)"
            ),
        }
    }
    println!("stopping");
    for (_, e) in edges {
        e.kill().await;
    }
    for c in controllers {
        c.shutdown().await;
    }
    Ok(())
}
