//! The control plane across real processes: a real etcd, `region-controller`
//! and `edge-node` binaries, clients on real QUIC. Registration, computed
//! routes carrying traffic, controller leader failover, an etcd outage that
//! traffic does not notice and resynchronisation after it, an edge killed
//! with SIGKILL leaving the registry and the routes; and, over the emulated
//! WAN, a degraded link routed around and a relay on a computed path killed.
#![cfg(all(feature = "etcd", feature = "netem"))]
mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::etcd_cluster::{eventually, json_to_toml_rules, ports, records, Proc};
use common::*;
use control::keys::KeyLayout;
use control::records::{EdgeRecord, RoutesRecord};
use control::store::ControlStore;
use protocol::pb::server_frame::Kind as SK;
use testkit::EtcdServer;

/// The controller binary: built next to this package's binaries by a
/// workspace build; built on demand otherwise.
fn controller_bin() -> PathBuf {
    let edge = PathBuf::from(env!("CARGO_BIN_EXE_edge-node"));
    let bin = edge.with_file_name("region-controller");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args([
                "build",
                "-p",
                "region-controller",
                "--features",
                "etcd",
                "--bin",
                "region-controller",
            ])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok && bin.exists(), "cannot build region-controller");
    }
    bin
}

struct Lab {
    dir: tempfile::TempDir,
    etcd: EtcdServer,
    edges: Vec<(u32, SocketAddr, Proc)>,
    admin: Vec<(u32, SocketAddr)>,
    controllers: Vec<(String, Proc)>,
    ca_der: Vec<u8>,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let pki = edge_node::tls::DevPki::new().unwrap();
        std::fs::write(dir.path().join("ca.pem"), pki.ca_pem()).unwrap();
        let (cert, key) = pki.issue_pem(&["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("edge.pem"), cert).unwrap();
        std::fs::write(dir.path().join("edge.key"), key).unwrap();
        Lab {
            etcd: EtcdServer::start().expect("etcd"),
            dir,
            edges: Vec::new(),
            admin: Vec::new(),
            controllers: Vec::new(),
            ca_der: pki.ca_der().to_vec(),
        }
    }

    fn start_edge(&mut self, id: u32, city: &str) {
        self.start_edge_at(id, city, ports::udp_local(), "");
    }

    /// An edge listening on `quic`, with `extra` TOML appended to its config.
    fn start_edge_at(&mut self, id: u32, city: &str, quic: SocketAddr, extra: &str) {
        let admin = ports::tcp_local();
        let d = self.dir.path();
        let toml = format!(
            r#"
[edge]
id = {id}
region = "eu"
city = "{city}"
listen = "{quic}"
admin_listen = "{admin}"
admin_token_env = "{ADMIN_TOKEN_ENV}"
server_name = "localhost"
[tls]
cert = "{d}/edge.pem"
key = "{d}/edge.key"
mesh_ca = "{d}/ca.pem"
# The dev CA doubles as the operator CA of the client certificate.
[client_tls]
mode = "files"
cert = "{d}/edge.pem"
key = "{d}/edge.key"
[[apps]]
id = "{APP}"
secrets = ["{SECRET}"]
[control]
etcd_endpoints = ["{etcd}"]
lease_ttl_ms = 3000
{extra}
"#,
            d = d.display(),
            etcd = self.etcd.client_url(),
        );
        let path = d.join(format!("edge{id}.toml"));
        std::fs::write(&path, toml).unwrap();
        let p = Proc::spawn(
            &format!("edge {id}"),
            Path::new(env!("CARGO_BIN_EXE_edge-node")),
            &["run", "--config", path.to_str().unwrap()],
            &[(ADMIN_TOKEN_ENV, ADMIN_TOKEN)],
        );
        self.edges.push((id, quic, p));
        self.admin.push((id, admin));
    }

    /// Replace every edge's WAN emulation rules (`PUT /netem`).
    async fn set_netem(&self, rules_json: &str) {
        for (id, admin) in &self.admin {
            if !self.edges.iter().any(|(e, _, _)| e == id) {
                continue;
            }
            let auth = format!("Bearer {ADMIN_TOKEN}");
            let (status, answer) = http(
                *admin,
                "PUT",
                "/netem",
                &[("authorization", &auth)],
                rules_json,
            )
            .await
            .unwrap();
            assert_eq!(status, 200, "edge {id}: {answer}");
        }
    }

    fn start_controller(&mut self, name: &str) {
        let toml = format!(
            r#"
[controller]
region = "eu"
name = "{name}"
debounce_ms = 50
recompute_ms = 1000
[store]
etcd_endpoints = ["{etcd}"]
election_ttl_ms = 2000
[api]
listen = "{api}"
[admin]
listen = "{admin}"
"#,
            etcd = self.etcd.client_url(),
            api = ports::tcp_local(),
            admin = ports::tcp_local(),
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, toml).unwrap();
        let p = Proc::spawn(
            name,
            &controller_bin(),
            &["run", "--config", path.to_str().unwrap()],
            &[],
        );
        self.controllers.push((name.into(), p));
    }

    fn edge_addr(&self, id: u32) -> SocketAddr {
        self.edges.iter().find(|e| e.0 == id).unwrap().1
    }

    fn edge_proc(&mut self, id: u32) -> &mut Proc {
        &mut self.edges.iter_mut().find(|e| e.0 == id).unwrap().2
    }
}

/// Send `n` media packets from `from` and count those `to` receives.
async fn media_through(
    from: &RawClient,
    to: &RawClient,
    cid: u64,
    track: u64,
    seq0: u32,
    n: u32,
) -> u32 {
    for i in 0..n {
        from.media(cid, track, seq0 + i, &[1u8; 100]);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while got < n && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(300), to.recv_media()).await {
            Ok(Some(_)) => got += 1,
            _ => break,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_over_real_etcd_survive_leader_loss_etcd_outage_and_sigkill() {
    init_logs();
    let mut lab = Lab::new();
    let store = lab.etcd.store().await.unwrap();
    let keys = KeyLayout::default();
    lab.start_controller("ctl-a");
    lab.start_controller("ctl-b");
    for (id, city) in [(1, "fra"), (2, "ams"), (3, "lhr")] {
        lab.start_edge(id, city);
    }

    // Registration and computed routes for every edge.
    let t = eventually(30, "three edges registered", || async {
        records::<EdgeRecord>(&store, &keys.edges()).await.len() == 3
    })
    .await;
    eprintln!("registered after {t:?}");
    let t = eventually(30, "routes for every edge", || async {
        let r: Vec<RoutesRecord> = records(&store, &keys.routes()).await;
        r.len() == 3 && r.iter().all(|r| r.routes.len() == 2)
    })
    .await;
    eprintln!("routes published after {t:?} more");

    // Clients on edges 1 and 3; media and messages flow.
    let mut a = RawClient::connect(lab.edge_addr(1), &lab.ca_der).await;
    let mut c = RawClient::connect(lab.edge_addr(3), &lab.ca_der).await;
    c.join("room", "carol").await;
    let ja = a.join("room", "alice").await;
    let cid = ja.channel_id;
    let track = a.publish(cid, "cam").await.unwrap();
    c.expect(|f| match f {
        SK::TrackAvailable(_) => Some(()),
        _ => None,
    })
    .await;
    let got = media_through(&a, &c, cid, track, 0, 100).await;
    assert!(got >= 90, "media 1 -> 3: {got} of 100");

    // The leader dies: the standby leads within the lease TTL (2 s).
    let leader_key = keys.leader("eu");
    let leader = String::from_utf8(
        store
            .get(&leader_key)
            .await
            .unwrap()
            .unwrap()
            .value
            .to_vec(),
    )
    .unwrap();
    let killed = Instant::now();
    lab.controllers
        .iter_mut()
        .find(|(n, _)| *n == leader)
        .unwrap()
        .1
        .sigkill();
    eventually(10, "standby takes over", || async {
        store
            .get(&leader_key)
            .await
            .ok()
            .flatten()
            .is_some_and(|kv| kv.value != leader.as_bytes())
    })
    .await;
    let failover = killed.elapsed();
    eprintln!("controller leader SIGKILL -> standby leads after {failover:?}");
    assert!(failover < Duration::from_millis(3_000), "{failover:?}");

    // etcd goes down: traffic keeps flowing, edges keep accepting clients.
    lab.etcd.stop();
    tokio::time::sleep(Duration::from_secs(4)).await; // past every lease TTL
    let got = media_through(&a, &c, cid, track, 1000, 100).await;
    assert!(got >= 90, "media during the etcd outage: {got} of 100");
    let mut b = RawClient::connect(lab.edge_addr(2), &lab.ca_der).await;
    b.join("room", "bob").await;
    // Membership travels between edges (channel directories), not through
    // etcd: once alice's edge knows bob, her messages reach him.
    a.expect(|f| match f {
        SK::MemberJoined(m) if m.user_id == "bob" => Some(()),
        _ => None,
    })
    .await;
    a.message(cid, 1, b"while etcd is down").await;
    for x in [&mut b, &mut c] {
        let m = x
            .expect(|f| match f {
                SK::Message(m) => Some(m),
                _ => None,
            })
            .await;
        assert_eq!(m.payload, b"while etcd is down");
    }

    // etcd returns: leases had expired, edges register again on their own.
    let back = Instant::now();
    lab.etcd.restart().unwrap();
    let store = lab.etcd.store().await.unwrap();
    eventually(30, "edges re-registered after the outage", || async {
        records::<EdgeRecord>(&store, &keys.edges()).await.len() == 3
    })
    .await;
    eprintln!("resynchronised {:?} after etcd came back", back.elapsed());
    let got = media_through(&a, &c, cid, track, 2000, 100).await;
    assert!(got >= 90, "media after the outage: {got} of 100");

    // Edge 2 is SIGKILLed: it leaves the registry (lease) and the routes.
    let killed = Instant::now();
    lab.edge_proc(2).sigkill();
    eventually(10, "edge 2 leaves the registry", || async {
        records::<EdgeRecord>(&store, &keys.edges()).await.len() == 2
    })
    .await;
    let gone = killed.elapsed();
    let without_2 = |r: &[RoutesRecord]| {
        r.len() == 2
            && r.iter()
                .all(|r| r.routes.iter().all(|x| x.dest != 2 && !x.best.contains(&2)))
    };
    while !without_2(&records::<RoutesRecord>(&store, &keys.routes()).await) {
        if killed.elapsed() > Duration::from_secs(15) {
            let leader = store.get(&leader_key).await.unwrap();
            let routes: Vec<RoutesRecord> = records(&store, &keys.routes()).await;
            let edges: Vec<EdgeRecord> = records(&store, &keys.edges()).await;
            panic!("routes still mention edge 2: leader {leader:?}\nroutes {routes:#?}\nedges {edges:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "edge SIGKILL -> out of the registry after {gone:?}, out of every route after {:?}",
        killed.elapsed()
    );
    let got = media_through(&a, &c, cid, track, 3000, 100).await;
    assert!(got >= 90, "media after edge 2 died: {got} of 100");
    assert!(lab.controllers.iter_mut().any(|(_, p)| p.alive()));
}

/// Rules for a triangle of edges: 1-2 and 2-3 10 ms one way, 1-3 as given;
/// clients sit next to their edges (no delay).
fn triangle(ip: impl Fn(u32) -> IpAddr, direct_1_3_ms: f64) -> String {
    let mut rules = vec![];
    for (a, b, ms) in [(1, 2, 10.0), (2, 3, 10.0), (1, 3, direct_1_3_ms)] {
        for (x, y) in [(a, b), (b, a)] {
            rules.push(format!(
                r#"{{"from": "{}/32", "to": "{}/32", "delay_ms": {ms}}}"#,
                ip(x),
                ip(y)
            ));
        }
    }
    format!("[{}]", rules.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_route_around_a_degraded_link_and_a_killed_relay() {
    init_logs();
    let ip = |id: u32| IpAddr::from([127, 0, 0, 20 + id as u8]);
    let mut lab = Lab::new();
    let store = lab.etcd.store().await.unwrap();
    let keys = KeyLayout::default();
    lab.start_controller("ctl-a");
    let rules = triangle(ip, 10.0);
    for (id, city) in [(1, "fra"), (2, "ams"), (3, "lhr")] {
        let extra = format!("[netem]\nlinks = {}", json_to_toml_rules(&rules));
        lab.start_edge_at(id, city, ports::udp(ip(id)), &extra);
    }
    let best_1_to_3 = |r: &[RoutesRecord]| {
        r.iter()
            .find(|r| r.edge == 1)
            .and_then(|r| r.routes.iter().find(|x| x.dest == 3))
            .map(|x| x.best.clone())
    };
    eventually(30, "direct route 1 -> 3", || async {
        best_1_to_3(&records(&store, &keys.routes()).await) == Some(vec![1, 3])
    })
    .await;

    let client_at = |id: u32| quinn::Endpoint::client((ip(id + 100), 0).into()).unwrap();
    let mut a = RawClient::connect_from(client_at(1), lab.edge_addr(1), &lab.ca_der).await;
    let mut c = RawClient::connect_from(client_at(3), lab.edge_addr(3), &lab.ca_der).await;
    c.join("room", "carol").await;
    let ja = a.join("room", "alice").await;
    let cid = ja.channel_id;
    let track = a.publish(cid, "cam").await.unwrap();
    c.expect(|f| match f {
        SK::TrackAvailable(_) => Some(()),
        _ => None,
    })
    .await;
    let direct = media_latency(&a, &c, cid, track, 0).await;

    // The direct link degrades to 60 ms: routed through edge 2 (20 ms).
    lab.set_netem(&triangle(ip, 60.0)).await;
    let rerouted = eventually(20, "route 1 -> 3 through edge 2", || async {
        best_1_to_3(&records(&store, &keys.routes()).await) == Some(vec![1, 2, 3])
    })
    .await;
    // The edges apply the published routes within moments.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let relayed = media_latency(&a, &c, cid, track, 100).await;
    eprintln!(
        "processes: direct link degraded 10 -> 60 ms, route through edge 2 published after {rerouted:?}; \
         media {direct:?} direct before, {relayed:?} relayed after"
    );
    assert!(direct < Duration::from_millis(25), "direct {direct:?}");
    assert!(
        relayed >= Duration::from_millis(19) && relayed < Duration::from_millis(45),
        "relayed {relayed:?}"
    );

    // The relay dies (SIGKILL): edge 1 sees it dead on its own probes and
    // media goes the backup way (the degraded direct link) within about a
    // second, before the controller has even noticed.
    let flow = {
        let a = a;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            for seq in 1_000..2_000u32 {
                tick.tick().await;
                a.media(cid, track, seq, &[4u8; 100]);
            }
            a
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    while tokio::time::timeout(Duration::from_millis(1), c.recv_media())
        .await
        .is_ok()
    {}
    let killed = Instant::now();
    lab.edge_proc(2).sigkill();
    // Packets already past edge 2 still arrive for ~10 ms; after that only
    // the backup path delivers.
    tokio::time::sleep(Duration::from_millis(50)).await;
    while tokio::time::timeout(Duration::from_millis(1), c.recv_media())
        .await
        .is_ok()
    {}
    let resumed = tokio::time::timeout(Duration::from_secs(3), c.recv_media())
        .await
        .ok()
        .flatten()
        .map(|_| killed.elapsed());
    let resumed = resumed.expect("media resumed after the relay died");
    eprintln!(
        "processes: relay on the computed path SIGKILLed, media flowing again after {resumed:?}"
    );
    assert!(resumed < Duration::from_millis(1_500), "{resumed:?}");
    let _ = flow.await;
}
