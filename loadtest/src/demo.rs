//! `loadtest demo`: a small local mesh on loopback with SDK clients talking
//! through it. Three edges (Amsterdam, Frankfurt, London) and their region's
//! controller on the embedded control store: the edges register, probe each
//! other and forward on the routes the controller computes; the controller
//! serves the nearest-edge API and the mesh view. A caller on each edge,
//! audio at 50 packets/s and a chat line every second, a status line every
//! second. The full lab (WAN emulation, many cities) supersedes it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use control::keys::KeyLayout;
use control::store::{ControlStore, MemoryStore};
use edge_node::tls::DevPki;
use edge_node::{Edge, EdgeConfig, EdgeOptions};
use region_controller::api::Api;
use region_controller::controller::{Controller, RoutingOptions};
use sdk::{Client, ClientConfig, EdgeCandidate, Event, TrackKind};
use testkit::tokens::App;

const APP: &str = "demo";
const SECRET: &str = "demo-secret-please-change";

fn token(channel: &str, user: &str) -> String {
    App::new(APP, SECRET).token(channel, user, true, true)
}

const REGION: &str = "eu";

/// The region's controller with its HTTP API on a free loopback port.
async fn start_controller(
    store: Arc<dyn ControlStore>,
) -> anyhow::Result<(Controller, std::net::SocketAddr, String)> {
    let controller = Controller::start(
        store,
        KeyLayout::default(),
        RoutingOptions {
            debounce: Duration::from_millis(100),
            recompute: Duration::from_secs(2),
            election_ttl: Duration::from_secs(3),
            ..RoutingOptions::new(REGION, "demo-controller")
        },
    );
    let mut api = Api::new(
        controller.mesh.clone(),
        controller.leader.clone(),
        REGION.into(),
        None,
        50,
    );
    let admin_token = format!("{:032x}", rand::random::<u128>());
    api.admin_token = Some(admin_token.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(Arc::new(api).serve(listener));
    Ok((controller, addr, admin_token))
}

pub async fn run(duration: Option<Duration>) -> anyhow::Result<()> {
    let pki = DevPki::new()?;
    let store: Arc<dyn ControlStore> = Arc::new(MemoryStore::new());
    let (controller, api_addr, admin_token) = start_controller(store.clone()).await?;
    let mut edges = vec![];
    for (id, city) in [(1, "ams"), (2, "fra"), (3, "lhr")] {
        let mut cfg = EdgeConfig::dev(id, APP, SECRET);
        cfg.edge.region = REGION.into();
        cfg.edge.city = city.into();
        let opts = EdgeOptions {
            tls: Some(pki.material(&["localhost".into()])?),
            client_cert: Some(pki.client_cert(&["localhost".into()])?),
            store: Some(store.clone()),
            ..Default::default()
        };
        edges.push(Edge::start(cfg, opts).await?);
    }
    // Registration, first probe summaries, computed routes: a few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    while edges
        .iter()
        .any(|e| e.core.route_table().paths.len() < edges.len() - 1)
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the controller computed no routes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("RTN local mesh: 3 edges on loopback, routes computed by the region controller");
    for e in &edges {
        let t = e.core.route_table();
        let mut paths: Vec<String> = t.paths.values().map(|p| format!("{p:?}")).collect();
        paths.sort();
        println!(
            "  edge {}  quic {}  metrics http://{}/metrics  paths {}",
            e.id(),
            e.addr(),
            e.admin_addr(),
            paths.join(" ")
        );
    }
    println!("  nearest edges: http://{api_addr}/v1/edges/nearest?ip=127.0.0.1");
    println!(
        "  mesh view:     curl -H 'Authorization: Bearer {admin_token}' http://{api_addr}/v1/mesh"
    );
    let ca = pki.ca_pem().into_bytes();
    let mut clients = vec![];
    for (i, user) in ["amsterdam", "berlin", "chicago"].iter().enumerate() {
        let mut order: Vec<EdgeCandidate> = edges
            .iter()
            .map(|e| EdgeCandidate::new(e.addr(), "localhost"))
            .collect();
        order.rotate_left(i);
        let client = Arc::new(
            Client::connect(ClientConfig::new(order).trusting(sdk::EdgeTrust::Ca(ca.clone())))
                .await?,
        );
        let room = client
            .join(&token("demo-room", user), "demo-room", true)
            .await?;
        let mic = room.publish_track("mic", TrackKind::Audio).await?;
        let name = user.to_string();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                let _ = mic.send(&[0u8; 160]).await;
                n += 1;
                if n.is_multiple_of(50) {
                    let _ = room
                        .send_message(Bytes::from(format!("hello from {name} #{}", n / 50)))
                        .await;
                }
            }
        });
        clients.push((user.to_string(), client));
    }
    let mut latency_ms: Vec<f64> = vec![];
    let started = Instant::now();
    let mut status = tokio::time::interval(Duration::from_secs(1));
    let (lat_tx, mut lat_rx) = tokio::sync::mpsc::unbounded_channel();
    for (user, c) in &clients {
        let c = c.clone();
        let user = user.clone();
        let tx = lat_tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = c.next_event().await {
                match ev {
                    Event::Media(m) => {
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map(|d| d.as_micros() as u64)
                            .unwrap_or(0);
                        let _ = tx.send(now.saturating_sub(m.timestamp_us) as f64 / 1000.0);
                    }
                    Event::Message(m) => println!(
                        "  [{user}] message from {}: {}",
                        m.from,
                        String::from_utf8_lossy(&m.payload)
                    ),
                    other => println!("  [{user}] {other:?}"),
                }
            }
        });
    }
    loop {
        tokio::select! {
            _ = status.tick() => {
                while let Ok(l) = lat_rx.try_recv() { latency_ms.push(l); }
                let media: u64 = clients.iter().map(|(_, c)| c.stats().media_received.load(Ordering::Relaxed)).sum();
                let msgs: u64 = clients.iter().map(|(_, c)| c.stats().messages_delivered.load(Ordering::Relaxed)).sum();
                let p50 = crate::stats::percentile(&mut latency_ms, 50.0).unwrap_or(0.0);
                let p99 = crate::stats::percentile(&mut latency_ms, 99.0).unwrap_or(0.0);
                println!("t={:>4}s  media received {media:>7}  messages delivered {msgs:>5}  one-way latency p50 {p50:.2} ms p99 {p99:.2} ms", started.elapsed().as_secs());
                if duration.is_some_and(|d| started.elapsed() >= d) { break; }
            }
            _ = crate::stop_signal() => break,
        }
    }
    println!("stopping");
    drop(clients);
    for e in edges {
        e.kill().await;
    }
    controller.shutdown().await;
    Ok(())
}
