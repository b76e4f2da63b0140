//! The lab's web server: the browser demo page (`sdk-js/demo/`) and the SDK
//! bundle, the small "app server" a page needs (`/config`, `/token`), and,
//! with `--lab-control`, endpoints that drive the lab from a browser test:
//! kill, drain and restart edges, and Rust SDK peers to call (one by
//! default; more by name, e.g. a Rust-to-Rust baseline next to a browser).
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /` | `sdk-js/demo/index.html` |
//! | `GET /demo.js`, `/demo.css` | from `sdk-js/demo/` |
//! | `GET /sdk/rtn.js` | `<dist>/rtn.js` (`npm run build` in sdk-js) |
//! | `GET /config` | `{controller, app, channel}` |
//! | `GET /token?channel=&user=[&ttl=]` | a token (publish and subscribe), valid `ttl` s (default 3600; negative: already expired) |
//! | `GET /routes?edge=<id>` | that edge's overlay paths now (what it forwards by): `{edge, paths: {"<dest>": [edge, ..., dest]}, cities: {"<id>": "fra"}}` |
//! | `GET /lab/state` | the edges: `{edges: [{id, city, addr, alive, cert_sha256}]}` |
//! | `POST /lab/edges/<id>/kill`, `/drain`, `/restart` | the chaos actions of the same names |
//! | `POST /lab/peer` | start a Rust peer: `{name?, channel, user, edge, messages, interval_ms, media_pps, e2ee_key?}` (`name` defaults to `peer`; at most 8 peers) |
//! | `GET /lab/peer[?name=]` | what that peer (default `peer`) sent and received |
//! | `DELETE /lab/peer[?name=]` | close it, answering its last report |
//!
//! Errors are `{"error": {"code", "message"}}` with a 4xx status.

// The helpers return an error answer (a `Response`) as their `Err`: one is
// built per request, so boxing it (clippy's `result_large_err`) buys nothing.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use super::chaos::Action;
use super::Lab;

/// Where the demo's files are, in the repository.
pub fn default_sdk_js_dist() -> PathBuf {
    repo_sdk_js().join("dist")
}

fn repo_sdk_js() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("loadtest is inside the repository")
        .join("sdk-js")
}

/// `loadtest lab --web-listen --lab-control --sdk-js-dist`.
#[derive(Clone, Debug)]
pub struct WebOptions {
    pub listen: SocketAddr,
    /// Serve `/lab/*` (kill edges, run a peer): for tests on a machine of
    /// one's own, never on a shared one.
    pub lab_control: bool,
    /// The SDK bundle's directory (`rtn.js`).
    pub sdk_js_dist: PathBuf,
}

/// The channel the demo page joins.
pub const DEMO_CHANNEL: &str = "demo";
/// The peer `/lab/peer` means without a `name`.
const DEFAULT_PEER: &str = "peer";
/// Rust peers at once (each is an SDK client with its own tasks).
const MAX_PEERS: usize = 8;
/// Longest token lifetime `/token` mints (and most negative, for tests).
const MAX_TTL_S: i64 = 24 * 3600;
const MAX_BODY: usize = 16 * 1024;

/// A bound, not yet serving, web server: its origin is known before the
/// controllers start (their CORS allowlist needs it).
pub struct Bound {
    listener: tokio::net::TcpListener,
    pub addr: SocketAddr,
    opts: WebOptions,
}

impl Bound {
    pub async fn bind(opts: WebOptions) -> anyhow::Result<Bound> {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|e| anyhow::anyhow!("binding the web server on {}: {e}", opts.listen))?;
        let addr = listener.local_addr()?;
        Ok(Bound {
            listener,
            addr,
            opts,
        })
    }

    /// The page's origin, as a browser sends it.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serve until [`Running::stop`]. `controller` is the API base URL the
    /// page asks for nearby edges.
    pub(super) fn serve(
        self,
        lab: Weak<Mutex<Lab>>,
        controller: String,
        app: super::App,
    ) -> Running {
        let state = Arc::new(State {
            lab,
            controller,
            app,
            opts: self.opts,
            peers: Mutex::new(BTreeMap::new()),
        });
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let listener = self.listener;
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    a = listener.accept() => {
                        let Ok((stream, _)) = a else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        let st = st.clone();
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                let st = st.clone();
                                async move { Ok::<_, Infallible>(st.handle(req).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
            conns.shutdown().await;
            let peers = std::mem::take(&mut *st.peers.lock().await);
            for p in peers.into_values() {
                p.close().await;
            }
        });
        Running {
            stop: stop_tx,
            task,
        }
    }
}

pub struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stop accepting, end every connection, close the peers.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

struct State {
    lab: Weak<Mutex<Lab>>,
    controller: String,
    app: super::App,
    opts: WebOptions,
    /// The Rust peers by name (`POST /lab/peer`'s `name`, default `peer`).
    peers: Mutex<BTreeMap<String, Peer>>,
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(Full::new(body.into()))
        .expect("valid response")
}

fn json_ok(v: &impl Serialize) -> Resp {
    respond(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(v).expect("serializable"),
    )
}

/// A 4xx (or 5xx) answer: `{"error": {"code", "message"}}`.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Resp {
    let body = json!({"error": {"code": code, "message": message.into()}});
    respond(status, "application/json", body.to_string())
}

/// A request's answer either way: `Err` is the error answer, returned with
/// `?` from the helpers.
type Handled = Result<Resp, Resp>;

impl State {
    async fn handle(&self, req: Request<Incoming>) -> Resp {
        match self.route(req).await {
            Ok(r) | Err(r) => r,
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Handled {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let method = req.method().clone();
        let demo = repo_sdk_js().join("demo");
        match (&method, path.as_str()) {
            (&Method::GET, "/" | "/index.html") => {
                file(&demo.join("index.html"), "text/html; charset=utf-8")
            }
            (&Method::GET, "/demo.js") => file(&demo.join("demo.js"), "text/javascript"),
            (&Method::GET, "/demo.css") => file(&demo.join("demo.css"), "text/css"),
            (&Method::GET, "/sdk/rtn.js" | "/sdk/rtn.js.map") => {
                let name = path.trim_start_matches("/sdk/");
                let p = self.opts.sdk_js_dist.join(name);
                if !p.exists() {
                    return Err(error(
                        StatusCode::NOT_FOUND,
                        "sdk_not_built",
                        format!(
                            "{} is missing: run `npm ci && npm run build` in sdk-js",
                            p.display()
                        ),
                    ));
                }
                let ct = if name.ends_with(".map") {
                    "application/json"
                } else {
                    "text/javascript"
                };
                file(&p, ct)
            }
            (&Method::GET, "/favicon.ico") => {
                Ok(respond(StatusCode::NO_CONTENT, "image/x-icon", ""))
            }
            (&Method::GET, "/config") => Ok(json_ok(&json!({
                "controller": self.controller,
                "app": self.app.id,
                "channel": DEMO_CHANNEL,
            }))),
            (&Method::GET, "/token") => self.token(&query),
            (&Method::GET, "/routes") => self.routes(&query).await,
            (_, p) if p.starts_with("/lab/") || p == "/lab" => {
                if !self.opts.lab_control {
                    return Err(error(
                        StatusCode::NOT_FOUND,
                        "lab_control_off",
                        "the lab's control endpoints are off: start the lab with --lab-control",
                    ));
                }
                self.lab_route(method, &path, &query, req).await
            }
            (&Method::GET, _) => Err(error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("nothing at {path}"),
            )),
            _ => Err(error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} {path}: not served"),
            )),
        }
    }

    /// `GET /token?channel=&user=[&ttl=]`: what an app's server does.
    fn token(&self, query: &str) -> Handled {
        let mut channel = None;
        let mut user = None;
        let mut ttl: i64 = 3600;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "channel" => channel = Some(v.into_owned()),
                "user" => user = Some(v.into_owned()),
                "ttl" => {
                    ttl = v
                        .parse::<i64>()
                        .ok()
                        .filter(|t| *t != 0 && t.abs() <= MAX_TTL_S)
                        .ok_or_else(|| {
                            error(
                                StatusCode::BAD_REQUEST,
                                "invalid_ttl",
                                format!("ttl={v:?}: seconds, non-zero, within ±{MAX_TTL_S}"),
                            )
                        })?
                }
                other => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        "unknown_parameter",
                        format!("unknown parameter {other:?} (known: channel, user, ttl)"),
                    ))
                }
            }
        }
        let channel = name_param("channel", channel)?;
        let user = name_param("user", user)?;
        let token = self.app.token_expiring_in(&channel, &user, ttl);
        Ok(respond(StatusCode::OK, "text/plain; charset=utf-8", token))
    }

    /// `GET /routes?edge=<id>`: the overlay path from that edge to every
    /// other edge, from its effective route table (what it forwards by).
    async fn routes(&self, query: &str) -> Handled {
        let mut edge = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "edge" => {
                    edge = Some(v.parse::<u32>().map_err(|_| {
                        error(
                            StatusCode::BAD_REQUEST,
                            "invalid_edge",
                            format!("edge id {v:?} is not a number"),
                        )
                    })?)
                }
                other => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        "unknown_parameter",
                        format!("unknown parameter {other:?} (known: edge)"),
                    ))
                }
            }
        }
        let Some(id) = edge else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "missing_edge",
                "edge is required",
            ));
        };
        let lab = self.lab()?;
        let lab = lab.lock().await;
        if lab.world.edge(id).is_none() {
            return Err(error(
                StatusCode::NOT_FOUND,
                "unknown_edge",
                format!("no edge {id} in this lab"),
            ));
        }
        let Some(table) = lab.route_tables().remove(&id) else {
            return Err(error(
                StatusCode::CONFLICT,
                "edge_down",
                format!("edge {id} is not running"),
            ));
        };
        let paths: BTreeMap<String, Vec<u32>> = lab
            .world
            .edges
            .iter()
            .filter(|e| e.id != id)
            .filter_map(|e| Some((e.id.to_string(), table.path(id, e.id)?.into_owned())))
            .collect();
        let cities: BTreeMap<String, &str> = lab
            .world
            .edges
            .iter()
            .map(|e| (e.id.to_string(), e.host.city.code))
            .collect();
        Ok(json_ok(&json!({
            "edge": id,
            "paths": paths,
            "cities": cities,
        })))
    }

    fn lab(&self) -> Result<Arc<Mutex<Lab>>, Resp> {
        self.lab.upgrade().ok_or_else(|| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "lab_stopping",
                "the lab is stopping",
            )
        })
    }

    async fn lab_route(
        &self,
        method: Method,
        path: &str,
        query: &str,
        req: Request<Incoming>,
    ) -> Handled {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (&method, parts.as_slice()) {
            (&Method::GET, ["lab", "state"]) => {
                let lab = self.lab()?;
                let lab = lab.lock().await;
                Ok(json_ok(&json!({ "edges": edges_state(&lab) })))
            }
            (&Method::POST, ["lab", "edges", id, what]) => {
                let id: u32 = id.parse().map_err(|_| {
                    error(
                        StatusCode::BAD_REQUEST,
                        "invalid_edge",
                        format!("edge id {id:?} is not a number"),
                    )
                })?;
                let action = match *what {
                    "kill" => Action::KillEdge { edge: id },
                    "drain" => Action::DrainEdge { edge: id },
                    "restart" => Action::RestartEdge { edge: id },
                    other => {
                        return Err(error(
                            StatusCode::NOT_FOUND,
                            "unknown_action",
                            format!("{other:?}: kill, drain or restart"),
                        ))
                    }
                };
                let lab = self.lab()?;
                let mut lab = lab.lock().await;
                if lab.world.edge(id).is_none() {
                    return Err(error(
                        StatusCode::NOT_FOUND,
                        "unknown_edge",
                        format!("no edge {id} in this lab"),
                    ));
                }
                let started = std::time::Instant::now();
                match lab.apply(&action).await {
                    Ok(done) => {
                        println!("web: {done}");
                        Ok(json_ok(&json!({
                            "done": done,
                            "took_ms": started.elapsed().as_secs_f64() * 1e3,
                        })))
                    }
                    Err(e) => Err(error(
                        StatusCode::CONFLICT,
                        "not_possible",
                        format!("{e:#}"),
                    )),
                }
            }
            (&Method::POST, ["lab", "peer"]) => {
                if !query.is_empty() {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        "unknown_parameter",
                        "POST /lab/peer takes its name in the body",
                    ));
                }
                let body = read_json::<PeerRequest>(req).await?;
                self.start_peer(body).await
            }
            (&Method::GET, ["lab", "peer"]) => {
                let name = peer_name_query(query)?;
                match self.peers.lock().await.get(&name) {
                    Some(p) => Ok(json_ok(&p.report())),
                    None => Err(no_peer(&name)),
                }
            }
            (&Method::DELETE, ["lab", "peer"]) => {
                let name = peer_name_query(query)?;
                let peer = self.peers.lock().await.remove(&name);
                match peer {
                    Some(p) => {
                        let report = p.report();
                        p.close().await;
                        Ok(json_ok(&report))
                    }
                    None => Err(no_peer(&name)),
                }
            }
            _ => Err(error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{method} {path}: not a lab endpoint"),
            )),
        }
    }

    async fn start_peer(&self, r: PeerRequest) -> Handled {
        let bad = |code: &str, m: String| error(StatusCode::BAD_REQUEST, code, m);
        let name = peer_name(r.name.clone())?;
        let channel = name_param("channel", Some(r.channel.clone()))?;
        let user = name_param("user", Some(r.user.clone()))?;
        if r.messages > 100_000 {
            return Err(bad("invalid_messages", "messages: at most 100000".into()));
        }
        if r.interval_ms == 0 || r.interval_ms > 60_000 {
            return Err(bad("invalid_interval", "interval_ms: 1..=60000".into()));
        }
        if r.media_pps > 1_000 {
            return Err(bad("invalid_media_pps", "media_pps: 0..=1000".into()));
        }
        let key = match &r.e2ee_key {
            Some(k) => Some(
                sdk::ChannelKey::parse(k)
                    .map_err(|e| bad("invalid_e2ee_key", format!("e2ee_key: {e}")))?,
            ),
            None => None,
        };
        // Held until the peer is in: two starts of one name cannot race.
        let mut peers = self.peers.lock().await;
        if peers.contains_key(&name) {
            let which = if name == DEFAULT_PEER {
                String::new()
            } else {
                format!("?name={name}")
            };
            return Err(error(
                StatusCode::CONFLICT,
                "peer_running",
                format!("a peer named {name:?} is running: DELETE /lab/peer{which} first"),
            ));
        }
        if peers.len() >= MAX_PEERS {
            return Err(error(
                StatusCode::CONFLICT,
                "too_many_peers",
                format!(
                    "{MAX_PEERS} peers are running ({}): DELETE one first",
                    peers.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let (config, edge_addr) = {
            let lab = self.lab()?;
            let lab = lab.lock().await;
            let Some(cfg) = lab.edge_configs.get(&r.edge) else {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    "unknown_edge",
                    format!("no edge {} in this lab", r.edge),
                ));
            };
            if !matches!(lab.edges.get(&r.edge), Some(Some(_))) {
                return Err(error(
                    StatusCode::CONFLICT,
                    "edge_down",
                    format!("edge {} is not running", r.edge),
                ));
            }
            (lab.pinned_client_config(r.edge), cfg.edge.listen)
        };
        let token = self.app.token(&channel, &user, true, true);
        let peer = Peer::start(
            config,
            name.clone(),
            r.edge,
            edge_addr,
            token,
            channel,
            user,
            key,
            &r,
        )
        .await
        .map_err(|e| error(StatusCode::BAD_GATEWAY, "peer_failed", format!("{e:#}")))?;
        let report = peer.report();
        peers.insert(name, peer);
        Ok(json_ok(&report))
    }
}

/// A peer's name: 1..=64 of `A-Za-z0-9_-` (it goes into URLs and messages).
fn peer_name(v: Option<String>) -> Result<String, Resp> {
    let name = v.unwrap_or_else(|| DEFAULT_PEER.to_string());
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            format!("name {name:?}: 1 to 64 of A-Z a-z 0-9 _ -"),
        ));
    }
    Ok(name)
}

/// `?name=` of `GET`/`DELETE /lab/peer` (absent: the default peer).
fn peer_name_query(query: &str) -> Result<String, Resp> {
    let mut name = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "name" => name = Some(v.into_owned()),
            other => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "unknown_parameter",
                    format!("unknown parameter {other:?} (known: name)"),
                ))
            }
        }
    }
    peer_name(name)
}

fn no_peer(name: &str) -> Resp {
    error(
        StatusCode::NOT_FOUND,
        "no_peer",
        format!("no peer named {name:?} running"),
    )
}

/// A name parameter (channel, user): 1..=128 bytes.
fn name_param(what: &str, v: Option<String>) -> Result<String, Resp> {
    match v {
        Some(v) if (1..=128).contains(&v.len()) => Ok(v),
        Some(v) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("invalid_{what}"),
            format!("{what}: 1 to 128 bytes, got {}", v.len()),
        )),
        None => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("missing_{what}"),
            format!("{what} is required"),
        )),
    }
}

fn file(path: &Path, content_type: &str) -> Handled {
    match std::fs::read(path) {
        Ok(b) => Ok(respond(StatusCode::OK, content_type, b)),
        Err(e) => Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{}: {e}", path.display()),
        )),
    }
}

async fn read_json<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, Resp> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "bad_body",
                format!("request body: {e} (at most {MAX_BODY} bytes)"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid_json", format!("{e}")))
}

fn edges_state(lab: &Lab) -> Vec<serde_json::Value> {
    lab.world
        .edges
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "city": e.host.city.code,
                "addr": lab.edge_configs.get(&e.id).map(|c| c.edge.listen.to_string()),
                "alive": matches!(lab.edges.get(&e.id), Some(Some(_))),
                // What the controller publishes for browsers to pin (tests
                // that pass edges explicitly use it).
                "cert_sha256": lab
                    .edges
                    .get(&e.id)
                    .and_then(Option::as_ref)
                    .map(|edge| edge.core.client_certs.hashes().borrow().clone())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

// ---- the Rust peer ---------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerRequest {
    /// Which peer (`GET`/`DELETE /lab/peer?name=`); default `peer`.
    #[serde(default)]
    name: Option<String>,
    channel: String,
    user: String,
    /// The edge it connects to, and only that one.
    edge: u32,
    #[serde(default)]
    messages: u64,
    #[serde(default = "default_interval")]
    interval_ms: u64,
    #[serde(default)]
    media_pps: u32,
    /// `sdk::ChannelKey` text form (`id:hex`): end-to-end encrypt.
    #[serde(default)]
    e2ee_key: Option<String>,
}

fn default_interval() -> u64 {
    100
}

/// Media payloads: the send time (µs since the epoch, big-endian) and
/// padding, like a small audio packet.
const PEER_MEDIA_BYTES: usize = 120;

#[derive(Default, Serialize)]
struct FromUser {
    /// Payloads, as text, in delivery order.
    received: Vec<String>,
    /// Messages delivered again (a seq at or below one seen).
    duplicates: u64,
    /// Seqs jumped over (never delivered).
    gaps_skipped: u64,
    #[serde(skip)]
    last_seq: Option<u64>,
}

#[derive(Default)]
struct MediaFrom {
    packets: u64,
    latencies_ms: Vec<f64>,
}

#[derive(Default)]
struct PeerRecord {
    messages_from: BTreeMap<String, FromUser>,
    media: BTreeMap<String, MediaFrom>,
    undecryptable: BTreeMap<String, u64>,
    sent: u64,
    media_sent: u64,
    media_unsent: u64,
    /// Non-media events, as text, with their time after the start (ms).
    events: Vec<String>,
    errors: Vec<String>,
}

/// One Rust SDK client in a channel, pinned to one edge: it publishes an
/// audio track, sends numbered messages and records what it receives.
struct Peer {
    name: String,
    client: Arc<sdk::Client>,
    tasks: JoinSet<()>,
    rec: Arc<std::sync::Mutex<PeerRecord>>,
    edge: u32,
    edge_addr: SocketAddr,
    channel: String,
    user: String,
}

impl Peer {
    #[allow(clippy::too_many_arguments)]
    async fn start(
        config: sdk::ClientConfig,
        name: String,
        edge: u32,
        edge_addr: SocketAddr,
        token: String,
        channel: String,
        user: String,
        key: Option<sdk::ChannelKey>,
        r: &PeerRequest,
    ) -> anyhow::Result<Peer> {
        let client = tokio::time::timeout(Duration::from_secs(10), sdk::Client::connect(config))
            .await
            .map_err(|_| anyhow::anyhow!("connecting to edge {edge}: no answer within 10 s"))?
            .map_err(|e| anyhow::anyhow!("connecting to edge {edge}: {e}"))?;
        let opts = sdk::JoinOptions {
            subscribe_all: true,
            e2ee: key.map(sdk::E2eeKeys::new),
        };
        let room = client
            .join(&token, &channel, opts)
            .await
            .map_err(|e| anyhow::anyhow!("joining {channel}: {e}"))?;
        let track = if r.media_pps > 0 {
            Some(
                room.publish_track("mic", sdk::TrackKind::Audio)
                    .await
                    .map_err(|e| anyhow::anyhow!("publishing mic: {e}"))?,
            )
        } else {
            None
        };
        let client = Arc::new(client);
        let rec = Arc::new(std::sync::Mutex::new(PeerRecord::default()));
        let mut tasks = JoinSet::new();
        tasks.spawn(listen(client.clone(), rec.clone()));
        if let Some(track) = track {
            let every = Duration::from_secs_f64(1.0 / r.media_pps as f64);
            tasks.spawn(send_media(track, every, rec.clone()));
        }
        if r.messages > 0 {
            let every = Duration::from_millis(r.interval_ms);
            tasks.spawn(send_messages(room, r.messages, every, rec.clone()));
        } else {
            // Keep the channel handle alive (dropping it does not leave, but
            // the peer owns it for its lifetime).
            tasks.spawn(async move {
                let _room = room;
                std::future::pending::<()>().await
            });
        }
        Ok(Peer {
            name,
            client,
            tasks,
            rec,
            edge,
            edge_addr,
            channel,
            user,
        })
    }

    fn report(&self) -> serde_json::Value {
        let r = self.rec.lock().expect("peer record");
        let stats = self.client.stats().snapshot();
        let media: BTreeMap<&String, serde_json::Value> = r
            .media
            .iter()
            .map(|(u, m)| {
                let mut l = m.latencies_ms.clone();
                (
                    u,
                    json!({
                        "packets": m.packets,
                        "latency_ms_p50": crate::stats::percentile(&mut l, 50.0),
                        "latency_ms_p95": crate::stats::percentile(&mut l, 95.0),
                    }),
                )
            })
            .collect();
        let on = self.client.edge();
        json!({
            "name": self.name,
            "channel": self.channel,
            "user": self.user,
            "edge": if on.is_none() || on == Some(self.edge_addr) { json!(self.edge) } else { json!(on.map(|a| a.to_string())) },
            "connected": on.is_some(),
            "messages_from": r.messages_from,
            "sent": r.sent,
            "acked": stats.messages_acked,
            "media_sent": r.media_sent,
            "media_unsent": r.media_unsent,
            "media": media,
            "undecryptable": r.undecryptable,
            "reconnects": stats.reconnects,
            "events": r.events,
            "errors": r.errors,
        })
    }

    async fn close(mut self) {
        self.tasks.shutdown().await;
        if let Ok(c) = Arc::try_unwrap(self.client) {
            let _ = tokio::time::timeout(Duration::from_secs(2), c.close()).await;
        }
    }
}

async fn listen(client: Arc<sdk::Client>, rec: Arc<std::sync::Mutex<PeerRecord>>) {
    let started = std::time::Instant::now();
    while let Some(e) = client.next_event().await {
        let mut r = rec.lock().expect("peer record");
        match e {
            sdk::Event::Message(m) => {
                let f = r.messages_from.entry(m.from.clone()).or_default();
                match f.last_seq {
                    Some(last) if m.seq <= last => f.duplicates += 1,
                    last => {
                        f.gaps_skipped += m.seq - last.map_or(m.seq, |l| l + 1);
                        f.last_seq = Some(m.seq);
                        f.received
                            .push(String::from_utf8_lossy(&m.payload).into_owned());
                    }
                }
            }
            sdk::Event::Media(m) => {
                let now = control::clock::now_us();
                let f = r.media.entry(m.user.clone()).or_default();
                f.packets += 1;
                if m.payload.len() >= 8 && f.latencies_ms.len() < 1_000_000 {
                    let sent = u64::from_be_bytes(m.payload[..8].try_into().expect("8 bytes"));
                    f.latencies_ms.push((now as f64 - sent as f64) / 1e3);
                }
            }
            sdk::Event::Undecryptable { user, error, .. } => {
                *r.undecryptable.entry(user.clone()).or_default() += 1;
                r.events.push(format!(
                    "{:.0} ms undecryptable from {user}: {error}",
                    started.elapsed().as_secs_f64() * 1e3
                ));
            }
            other => {
                let line = format!("{:.0} ms {other:?}", started.elapsed().as_secs_f64() * 1e3);
                if r.events.len() < 1_000 {
                    r.events.push(line);
                }
            }
        }
    }
}

async fn send_media(
    track: sdk::TrackPublisher,
    every: Duration,
    rec: Arc<std::sync::Mutex<PeerRecord>>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut payload = vec![0x5au8; PEER_MEDIA_BYTES];
    loop {
        tick.tick().await;
        payload[..8].copy_from_slice(&control::clock::now_us().to_be_bytes());
        // While reconnecting the SDK refuses media: dropped, as a call would.
        let ok = track.send(&payload).await.is_ok();
        let mut r = rec.lock().expect("peer record");
        if ok {
            r.media_sent += 1;
        } else {
            r.media_unsent += 1;
        }
    }
}

async fn send_messages(
    room: sdk::Channel,
    n: u64,
    every: Duration,
    rec: Arc<std::sync::Mutex<PeerRecord>>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 1..=n {
        tick.tick().await;
        // Queued even while reconnecting: the SDK delivers it afterwards.
        match room.send_message(Bytes::from(format!("rust-{i}"))).await {
            Ok(_) => rec.lock().expect("peer record").sent += 1,
            Err(e) => rec
                .lock()
                .expect("peer record")
                .errors
                .push(format!("message rust-{i}: {e}")),
        }
    }
    // The channel handle lives as long as the peer.
    std::future::pending::<()>().await
}
