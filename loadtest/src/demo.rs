//! `loadtest demo`: a small local mesh on loopback with SDK clients talking
//! through it. Three edges with static routes (edge 1 reaches edge 3 through
//! edge 2, as if their direct path were poor), a caller on each edge, audio
//! at 50 packets/s and a chat line every second, a status line every second.
//! The full lab (WAN emulation, control plane, many cities) supersedes it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use edge_node::tls::DevPki;
use edge_node::{Edge, EdgeConfig, EdgeOptions, PeerInfo, RouteTable};
use protocol::token::{mint, Grant};
use sdk::{Client, ClientConfig, EdgeCandidate, Event, TrackKind};

const APP: &str = "demo";
const SECRET: &str = "demo-secret-please-change";

fn token(channel: &str, user: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    mint(
        &Grant {
            app_id: APP,
            channel,
            user_id: user,
            publish: true,
            subscribe: true,
            issued_at: now,
            expires_at: now + 24 * 3600,
        },
        SECRET.as_bytes(),
    )
}

pub async fn run(duration: Option<Duration>) -> anyhow::Result<()> {
    let pki = DevPki::new()?;
    let mut edges = vec![];
    for id in 1..=3 {
        let cfg = EdgeConfig::dev(id, APP, SECRET);
        let opts = EdgeOptions {
            tls: Some(pki.material(&["localhost".into()])?),
            routes: None,
            ..Default::default()
        };
        edges.push(Edge::start(cfg, opts).await?);
    }
    let peer = |e: &Edge| PeerInfo {
        id: e.id(),
        addr: e.addr(),
        server_name: "localhost".into(),
        region: "local".into(),
    };
    for e in &edges {
        let mut table = RouteTable {
            version: 0,
            peers: edges
                .iter()
                .filter(|p| p.id() != e.id())
                .map(|p| (p.id(), peer(p)))
                .collect(),
            paths: Default::default(),
            ..Default::default()
        };
        match e.id() {
            1 => table.paths.insert(3, vec![1, 2, 3]),
            3 => table.paths.insert(1, vec![3, 2, 1]),
            _ => None,
        };
        e.routes.publish(table);
    }
    println!("RTN local mesh: 3 edges on loopback (edge 1 <-> edge 3 relayed through edge 2)");
    for e in &edges {
        println!(
            "  edge {}  quic {}  metrics http://{}/metrics",
            e.id(),
            e.addr(),
            e.admin_addr()
        );
    }
    let ca = pki.ca_pem().into_bytes();
    let mut clients = vec![];
    for (i, user) in ["amsterdam", "berlin", "chicago"].iter().enumerate() {
        let mut order: Vec<EdgeCandidate> = edges
            .iter()
            .map(|e| EdgeCandidate {
                addr: e.addr(),
                server_name: "localhost".into(),
            })
            .collect();
        order.rotate_left(i);
        let client = Arc::new(Client::connect(ClientConfig::new(order, ca.clone())).await?);
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
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("stopping");
    drop(clients);
    for e in edges {
        e.kill().await;
    }
    Ok(())
}
