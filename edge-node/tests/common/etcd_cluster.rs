//! Fault tests with real processes around a real three-member etcd cluster:
//! the cluster itself (members on free loopback ports, a data dir each,
//! killed, paused and restarted one by one or all together), the
//! `region-controller` and `edge-node` binaries given every member's
//! endpoint, and SDK clients in one call that measure what users feel
//! (media gaps and latency, messages lost, duplicated or reordered).
//!
//! Everything is killed on drop and lives in temporary directories.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use control::keys::KeyLayout;
use control::records::{EdgeRecord, Record, RoutesRecord};
use control::store::{ControlStore, EtcdStore, KeyValue};
use sdk::{Client, ClientConfig, EdgeCandidate, Event, TrackKind};

pub use testkit::etcd::{store_on, EtcdCluster};
pub use testkit::ports;
pub use testkit::wait::eventually;

use super::{http, token, ADMIN_TOKEN, ADMIN_TOKEN_ENV, APP, SECRET};

pub const REGION: &str = "eu";

/// A child process, SIGKILLed on drop.
pub struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    pub fn spawn(name: &str, bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("RTN_CHILD_LOG").unwrap_or("warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            child,
            name: name.into(),
        }
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.alive() {
            eprintln!("{} had exited: {:?}", self.name, self.child.try_wait());
        }
        self.sigkill();
    }
}

/// The first JSON object in a body (tolerates chunked framing around it).
fn json_of(body: &str) -> Option<serde_json::Value> {
    let (a, b) = (body.find('{')?, body.rfind('}')?);
    serde_json::from_str(&body[a..=b]).ok()
}

// ---------------------------------------------------------------- etcd ----

pub async fn kvs(store: &EtcdStore, prefix: &str) -> Option<Vec<KeyValue>> {
    store.get_prefix(prefix).await.ok().map(|(kvs, _)| kvs)
}

pub async fn records<R: Record>(store: &EtcdStore, prefix: &str) -> Vec<R> {
    kvs(store, prefix)
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|kv| R::from_bytes(&kv.value).ok())
        .collect()
}

/// The registered edges: id -> (create revision, lease).
pub async fn registrations(store: &EtcdStore) -> Option<BTreeMap<u32, (i64, Option<i64>)>> {
    let kvs = kvs(store, &KeyLayout::default().edges()).await?;
    Some(
        kvs.iter()
            .filter_map(|kv| {
                let e = EdgeRecord::from_bytes(&kv.value).ok()?;
                Some((e.id, (kv.create_revision, kv.lease)))
            })
            .collect(),
    )
}

pub async fn routes(store: &EtcdStore) -> BTreeMap<u32, RoutesRecord> {
    records::<RoutesRecord>(store, &KeyLayout::default().routes())
        .await
        .into_iter()
        .map(|r| (r.edge, r))
        .collect()
}

/// Every edge in `ids` has a routes record with a route to every other.
pub fn routes_complete(r: &BTreeMap<u32, RoutesRecord>, ids: &[u32]) -> bool {
    ids.iter().all(|id| {
        r.get(id).is_some_and(|rec| {
            ids.iter()
                .filter(|d| *d != id)
                .all(|d| rec.routes.iter().any(|x| x.dest == *d))
        })
    })
}

pub fn best(r: &BTreeMap<u32, RoutesRecord>, from: u32, to: u32) -> Option<Vec<u32>> {
    r.get(&from)?
        .routes
        .iter()
        .find(|x| x.dest == to)
        .map(|x| x.best.clone())
}

pub async fn leader_key(store: &EtcdStore) -> Result<Option<String>, ()> {
    store
        .get(&KeyLayout::default().leader(REGION))
        .await
        .map(|kv| kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
        .map_err(|_| ())
}

// ------------------------------------------------------------- the RTN ----

/// The edge and controller binaries with etcd support (and the edge's
/// `netem`: its configs have a `[netem]` section), built (a no-op when
/// fresh) and hard-linked into `dir` at once: the shared target dir's copies
/// are replaced by any build of the workspace, with other features too,
/// while a test runs.
fn binaries(dir: &Path) -> (PathBuf, PathBuf) {
    let edge = PathBuf::from(env!("CARGO_BIN_EXE_edge-node"));
    let controller = edge.with_file_name("region-controller");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = Command::new(cargo)
        .args([
            "build",
            "-q",
            "-p",
            "edge-node",
            "-p",
            "region-controller",
            "--features",
            "edge-node/etcd,edge-node/netem,region-controller/etcd",
            "--bins",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "cannot build edge-node (etcd, netem) and region-controller (etcd)"
    );
    let keep = |bin: &Path| {
        let to = dir.join(bin.file_name().unwrap());
        if std::fs::hard_link(bin, &to).is_err() {
            std::fs::copy(bin, &to).unwrap();
        }
        to
    };
    (keep(&edge), keep(&controller))
}

pub struct EdgeProc {
    pub id: u32,
    pub quic: SocketAddr,
    pub admin: SocketAddr,
    pub proc: Proc,
}

pub struct ControllerProc {
    pub name: String,
    /// The public face (lookup, health).
    pub api: SocketAddr,
    /// The admin face (`/v1/mesh`, metrics).
    pub admin: SocketAddr,
    pub proc: Proc,
}

/// Edges (on their own loopback addresses, WAN-emulated between them) and
/// controllers of one region, all pointed at every etcd member.
pub struct Rtn {
    dir: tempfile::TempDir,
    endpoints: Vec<String>,
    /// The loopback address of edge `id`.
    pub ip: fn(u32) -> IpAddr,
    /// One-way delay between two edges (ms), for the netem rules.
    pub delay: fn(u32, u32) -> f64,
    /// Edge ids the rules cover.
    pub max_edges: u32,
    pub edges: Vec<EdgeProc>,
    pub controllers: Vec<ControllerProc>,
    pub ca_pem: String,
    edge_bin: PathBuf,
    controller_bin: PathBuf,
}

/// WAN rules between every pair of edges `1..=n`: one way `delay(a, b)` ms.
pub fn wan_rules(ip: fn(u32) -> IpAddr, n: u32, delay: impl Fn(u32, u32) -> f64) -> String {
    let mut rules = vec![];
    for a in 1..=n {
        for b in 1..=n {
            if a != b {
                rules.push(format!(
                    r#"{{"from": "{}/32", "to": "{}/32", "delay_ms": {}}}"#,
                    ip(a),
                    ip(b),
                    delay(a, b)
                ));
            }
        }
    }
    format!("[{}]", rules.join(", "))
}

/// The JSON rule list (as `GET /netem` gives it) as a TOML inline array.
pub fn json_to_toml_rules(json: &str) -> String {
    let rules: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
    let items: Vec<String> = rules
        .iter()
        .map(|r| {
            format!(
                r#"{{from = "{}", to = "{}", delay_ms = {}}}"#,
                r["from"].as_str().unwrap(),
                r["to"].as_str().unwrap(),
                r["delay_ms"]
            )
        })
        .collect();
    format!("[{}]", items.join(", "))
}

impl Rtn {
    pub fn new(
        endpoints: Vec<String>,
        ip: fn(u32) -> IpAddr,
        delay: fn(u32, u32) -> f64,
        max_edges: u32,
    ) -> Rtn {
        let dir = tempfile::tempdir().unwrap();
        let pki = edge_node::tls::DevPki::new().unwrap();
        std::fs::write(dir.path().join("ca.pem"), pki.ca_pem()).unwrap();
        let (cert, key) = pki.issue_pem(&["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("edge.pem"), cert).unwrap();
        std::fs::write(dir.path().join("edge.key"), key).unwrap();
        let (edge_bin, controller_bin) = binaries(dir.path());
        Rtn {
            dir,
            endpoints,
            ip,
            delay,
            max_edges,
            edges: Vec::new(),
            controllers: Vec::new(),
            ca_pem: pki.ca_pem(),
            edge_bin,
            controller_bin,
        }
    }

    fn etcd_toml(&self) -> String {
        let list: Vec<String> = self.endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        format!("[{}]", list.join(", "))
    }

    pub fn start_edge(&mut self, id: u32, city: &str) {
        let quic = ports::udp((self.ip)(id));
        let admin = ports::tcp_local();
        let d = self.dir.path();
        let rules = wan_rules(self.ip, self.max_edges, self.delay);
        let toml = format!(
            r#"
[edge]
id = {id}
region = "{REGION}"
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
etcd_endpoints = {etcd}
lease_ttl_ms = 3000
[netem]
links = {links}
"#,
            d = d.display(),
            etcd = self.etcd_toml(),
            links = json_to_toml_rules(&rules),
        );
        let path = d.join(format!("edge{id}.toml"));
        std::fs::write(&path, toml).unwrap();
        let proc = Proc::spawn(
            &format!("edge {id}"),
            &self.edge_bin,
            &["run", "--config", path.to_str().unwrap()],
            &[(ADMIN_TOKEN_ENV, ADMIN_TOKEN)],
        );
        self.edges.push(EdgeProc {
            id,
            quic,
            admin,
            proc,
        });
    }

    pub fn start_controller(&mut self, name: &str) {
        let (api, admin) = (ports::tcp_local(), ports::tcp_local());
        let toml = format!(
            r#"
[controller]
region = "{REGION}"
name = "{name}"
debounce_ms = 50
recompute_ms = 1000
[store]
etcd_endpoints = {etcd}
election_ttl_ms = 2000
[api]
listen = "{api}"
[admin]
listen = "{admin}"
token_env = "{ADMIN_TOKEN_ENV}"
"#,
            etcd = self.etcd_toml(),
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, toml).unwrap();
        let proc = Proc::spawn(
            name,
            &self.controller_bin,
            &["run", "--config", path.to_str().unwrap()],
            &[(ADMIN_TOKEN_ENV, ADMIN_TOKEN)],
        );
        self.controllers.push(ControllerProc {
            name: name.into(),
            api,
            admin,
            proc,
        });
    }

    pub fn edge(&self, id: u32) -> &EdgeProc {
        self.edges.iter().find(|e| e.id == id).unwrap()
    }

    /// Replace every edge's WAN rules with a new delay function.
    pub async fn set_wan(&self, delay: impl Fn(u32, u32) -> f64) {
        let rules = wan_rules(self.ip, self.max_edges, delay);
        for e in &self.edges {
            let auth = format!("Bearer {ADMIN_TOKEN}");
            let (code, body) = http(
                e.admin,
                "PUT",
                "/netem",
                &[("authorization", &auth)],
                &rules,
            )
            .await
            .unwrap();
            assert_eq!(code, 200, "edge {}: {body}", e.id);
        }
    }

    /// A controller's `/v1/mesh`: (leads, store connected, edge ids).
    pub async fn mesh(&self, c: &ControllerProc) -> Option<(bool, bool, BTreeSet<u32>)> {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let (code, body) = http(c.admin, "GET", "/v1/mesh", &[("authorization", &auth)], "")
            .await
            .ok()?;
        if code != 200 {
            return None;
        }
        let v = json_of(&body)?;
        let ids = v["edges"]
            .as_array()?
            .iter()
            .filter_map(|e| e["edge"]["id"].as_u64().map(|x| x as u32))
            .collect();
        Some((v["leader"].as_bool()?, v["store_connected"].as_bool()?, ids))
    }

    /// Every process is still running.
    pub fn all_alive(&mut self) -> bool {
        let mut ok = true;
        for e in &mut self.edges {
            if !e.proc.alive() {
                eprintln!("edge {} died", e.id);
                ok = false;
            }
        }
        for c in &mut self.controllers {
            if !c.proc.alive() {
                eprintln!("controller {} died", c.name);
                ok = false;
            }
        }
        ok
    }
}

// ------------------------------------------------------------ the call ----

/// Media every 20 ms (50 packets/s) and a message every 100 ms per member.
pub const MEDIA_EVERY: Duration = Duration::from_millis(20);
pub const MESSAGE_EVERY: Duration = Duration::from_millis(100);

/// What one member received from another.
#[derive(Default, Debug, Clone)]
pub struct Pair {
    pub media: u64,
    pub first_seq: Option<u32>,
    pub last_seq: u32,
    last_at: Option<Instant>,
    /// Longest time between two media packets while both were in the call.
    pub max_gap: Duration,
    /// When the longest gap ended.
    pub max_gap_end: Option<Instant>,
    /// (arrival, one-way latency in ms) of every packet.
    pub latency: Vec<(Instant, f64)>,
    /// Message sequence numbers in arrival order.
    pub messages: Vec<u64>,
}

/// What the members of one call felt.
#[derive(Default)]
pub struct Felt {
    /// (receiver, sender) -> what arrived.
    pub pairs: BTreeMap<(String, String), Pair>,
    /// Messages each member sent (its last sequence number).
    pub sent: BTreeMap<String, u64>,
    /// Events other than media and messages, per member (reconnects...).
    pub notes: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MessageFigures {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

/// SDK clients in one channel, each publishing media and sending messages,
/// each recording what it receives from the others.
pub struct Call {
    pub channel: String,
    ca_pem: String,
    stop: Arc<AtomicBool>,
    pub felt: Arc<Mutex<Felt>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub stopped_at: Arc<Mutex<Option<Instant>>>,
}

impl Call {
    pub fn new(channel: &str, ca_pem: &str) -> Call {
        Call {
            channel: channel.into(),
            ca_pem: ca_pem.into(),
            stop: Arc::new(AtomicBool::new(false)),
            felt: Arc::default(),
            tasks: Vec::new(),
            stopped_at: Arc::default(),
        }
    }

    /// `user` joins through the edge at `edge`; returns the time from
    /// connecting to joined and publishing.
    pub async fn join(&mut self, user: &str, edge: SocketAddr) -> Duration {
        let started = Instant::now();
        let mut cfg = ClientConfig::new(vec![EdgeCandidate::new(edge, "localhost")])
            .trusting(sdk::EdgeTrust::Ca(self.ca_pem.clone().into_bytes()));
        cfg.reprobe_interval = None;
        let client = Client::connect(cfg).await.expect("client connects");
        let room = client
            .join(&token(&self.channel, user, true, true), &self.channel, true)
            .await
            .expect("joins");
        let mic = room
            .publish_track("mic", TrackKind::Audio)
            .await
            .expect("publishes");
        let joined = started.elapsed();
        let stop = self.stop.clone();
        let felt = self.felt.clone();
        let me = user.to_string();
        // Media and messages out.
        self.tasks.push(tokio::spawn({
            let stop = stop.clone();
            let felt = felt.clone();
            let me = me.clone();
            async move {
                let mut tick = tokio::time::interval(MEDIA_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let per_message = (MESSAGE_EVERY.as_millis() / MEDIA_EVERY.as_millis()) as u64;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let _ = mic.send(&[0u8; 160]).await;
                    n += 1;
                    if n.is_multiple_of(per_message) {
                        // Waits (bounded by the SDK's window) rather than drop.
                        if let Ok(seq) = room.send_message(Bytes::from(format!("{me} {n}"))).await {
                            felt.lock().unwrap().sent.insert(me.clone(), seq);
                        }
                    }
                }
                drop(mic);
                // Keep the membership (and the SDK's replay) until the end.
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(room);
            }
        }));
        // Everything in.
        let stopped_at = self.stopped_at.clone();
        self.tasks.push(tokio::spawn(async move {
            loop {
                let Ok(ev) =
                    tokio::time::timeout(Duration::from_millis(200), client.next_event()).await
                else {
                    if stop.load(Ordering::Relaxed)
                        && stopped_at
                            .lock()
                            .unwrap()
                            .is_some_and(|t| t.elapsed() > Duration::from_secs(10))
                    {
                        break;
                    }
                    continue;
                };
                let Some(ev) = ev else { break };
                let now = Instant::now();
                let media_on = !stop.load(Ordering::Relaxed);
                let mut f = felt.lock().unwrap();
                match ev {
                    Event::Media(m) if m.user != me => {
                        let p = f.pairs.entry((me.clone(), m.user.clone())).or_default();
                        p.media += 1;
                        p.first_seq.get_or_insert(m.sequence);
                        p.last_seq = p.last_seq.max(m.sequence);
                        // The network's latency (to the SDK's receipt):
                        // these tests judge the path, not the jitter buffer
                        // the SDK plays media out through.
                        let received_us = m
                            .received_at
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_micros() as u64;
                        let lat = received_us.saturating_sub(m.timestamp_us) as f64 / 1e3;
                        p.latency.push((now, lat));
                        if media_on {
                            if let Some(last) = p.last_at {
                                let gap = now - last;
                                if gap > p.max_gap {
                                    p.max_gap = gap;
                                    p.max_gap_end = Some(now);
                                }
                            }
                            p.last_at = Some(now);
                        }
                    }
                    Event::Message(m) if m.from != me => {
                        f.pairs
                            .entry((me.clone(), m.from.clone()))
                            .or_default()
                            .messages
                            .push(m.seq);
                    }
                    Event::Reconnecting { reason } => {
                        f.notes.push(format!("{me}: reconnecting ({reason})"))
                    }
                    Event::ChannelLost { channel, error } => {
                        f.notes.push(format!("{me}: lost {channel}: {error}"))
                    }
                    Event::Error(e) => f.notes.push(format!("{me}: error {e}")),
                    _ => {}
                }
            }
            client.close().await;
        }));
        joined
    }

    /// Wait until every member receives media from every other.
    pub async fn wait_flowing(&self, members: &[&str], secs: u64) -> Duration {
        eventually(secs, "media between every pair", || async {
            let f = self.felt.lock().unwrap();
            members.iter().all(|r| {
                members.iter().filter(|s| *s != r).all(|s| {
                    f.pairs
                        .get(&(r.to_string(), s.to_string()))
                        .is_some_and(|p| p.media > 0)
                })
            })
        })
        .await
    }

    /// Median one-way latency of media `to` received from `from` since `since`.
    pub fn latency_since(&self, to: &str, from: &str, since: Instant) -> Option<f64> {
        let f = self.felt.lock().unwrap();
        let p = f.pairs.get(&(to.to_string(), from.to_string()))?;
        let mut l: Vec<f64> = p
            .latency
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|x| x.1)
            .collect();
        if l.len() < 5 {
            return None;
        }
        l.sort_by(f64::total_cmp);
        Some(l[l.len() / 2])
    }

    /// Stop sending; wait until every message sent was delivered to every
    /// member (or `secs` passed).
    pub async fn stop(&mut self, secs: u64) {
        self.stop.store(true, Ordering::Relaxed);
        *self.stopped_at.lock().unwrap() = Some(Instant::now());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            let done = {
                let f = self.felt.lock().unwrap();
                f.pairs.iter().all(|((_, from), p)| {
                    p.messages.is_empty() || p.messages.last() == f.sent.get(from)
                })
            };
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Messages over every (receiver, sender) pair. A member that joined
    /// late counts from the first message it received of each sender.
    pub fn messages(&self, from_start: &[&str]) -> MessageFigures {
        let f = self.felt.lock().unwrap();
        let mut m = MessageFigures::default();
        for ((to, from), p) in &f.pairs {
            let sent = f.sent.get(from).copied().unwrap_or(0);
            let first = if from_start.contains(&to.as_str()) && from_start.contains(&from.as_str())
            {
                1
            } else {
                p.messages.first().copied().unwrap_or(sent + 1)
            };
            let expected = (sent + 1).saturating_sub(first);
            m.sent += expected;
            let mut seen = BTreeSet::new();
            let mut max = 0;
            for s in &p.messages {
                if !seen.insert(*s) {
                    m.duplicated += 1;
                } else if *s < max {
                    m.reordered += 1;
                }
                max = max.max(*s);
            }
            let delivered = seen.iter().filter(|s| **s >= first && **s <= sent).count() as u64;
            m.delivered += delivered;
            m.lost += expected - delivered;
        }
        m
    }

    /// The longest media gap over every pair, with its pair.
    pub fn max_gap(&self) -> (Duration, String) {
        let f = self.felt.lock().unwrap();
        f.pairs
            .iter()
            .map(|((to, from), p)| (p.max_gap, format!("{from} -> {to}")))
            .max()
            .unwrap_or_default()
    }

    /// Media packets received over every pair, and the share lost
    /// (by sequence numbers between the first and last received).
    pub fn media(&self) -> (u64, f64) {
        let f = self.felt.lock().unwrap();
        let (mut got, mut span) = (0u64, 0u64);
        for p in f.pairs.values() {
            if let Some(first) = p.first_seq {
                got += p.media;
                span += (p.last_seq - first) as u64 + 1;
            }
        }
        (got, 1.0 - got as f64 / span.max(1) as f64)
    }

    pub fn notes(&self) -> Vec<String> {
        self.felt.lock().unwrap().notes.clone()
    }

    pub async fn end(self) {
        for t in &self.tasks {
            t.abort();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
