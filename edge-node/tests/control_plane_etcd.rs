//! The control plane across real processes: a real etcd, `region-controller`
//! and `edge-node` binaries, clients on real QUIC. Registration, computed
//! routes carrying traffic, controller leader failover, an etcd outage that
//! traffic does not notice and resynchronisation after it, and an edge
//! killed with SIGKILL leaving the registry and the routes.
#![cfg(feature = "etcd")]
mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use protocol::pb::server_frame::Kind as SK;
use region_controller::keys::KeyLayout;
use region_controller::records::{EdgeRecord, Record, RoutesRecord};
use region_controller::store::{ControlStore, EtcdServer, EtcdStore};

fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A child process killed (SIGKILL) on drop.
struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    fn spawn(name: &str, bin: &Path, args: &[&str]) -> Proc {
        let child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            child,
            name: name.into(),
        }
    }

    fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.alive() {
            eprintln!("stopping {}", self.name);
        }
        self.sigkill();
    }
}

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
            controllers: Vec::new(),
            ca_der: pki.ca_der().to_vec(),
        }
    }

    fn start_edge(&mut self, id: u32, city: &str) {
        let quic = free_udp();
        let d = self.dir.path();
        let toml = format!(
            r#"
[edge]
id = {id}
region = "eu"
city = "{city}"
listen = "{quic}"
admin_listen = "{admin}"
server_name = "localhost"
[tls]
cert = "{d}/edge.pem"
key = "{d}/edge.key"
mesh_ca = "{d}/ca.pem"
[[apps]]
id = "{APP}"
secrets = ["{SECRET}"]
[control]
etcd_endpoints = ["{etcd}"]
lease_ttl_ms = 3000
"#,
            admin = free_tcp(),
            d = d.display(),
            etcd = self.etcd.client_url(),
        );
        let path = d.join(format!("edge{id}.toml"));
        std::fs::write(&path, toml).unwrap();
        let p = Proc::spawn(
            &format!("edge {id}"),
            Path::new(env!("CARGO_BIN_EXE_edge-node")),
            &["run", "--config", path.to_str().unwrap()],
        );
        self.edges.push((id, quic, p));
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
"#,
            etcd = self.etcd.client_url(),
            api = free_tcp(),
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, toml).unwrap();
        let p = Proc::spawn(
            name,
            &controller_bin(),
            &["run", "--config", path.to_str().unwrap()],
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

async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

async fn records<R: Record>(store: &EtcdStore, prefix: &str) -> Vec<R> {
    match store.get_prefix(prefix).await {
        Ok((kvs, _)) => kvs
            .iter()
            .filter_map(|kv| R::from_bytes(&kv.value).ok())
            .collect(),
        Err(_) => Vec::new(),
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
