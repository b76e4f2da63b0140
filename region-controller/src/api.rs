//! The controller's HTTP API (hyper, JSON).
//!
//! - `GET /v1/edges/nearest?ip=<addr>&limit=<k>`: public, rate-limited per
//!   client address. Edges ranked for the client by GeoIP distance, health
//!   and load. Without `ip`, the caller's address is used, or the
//!   configured client-address header when the caller is a trusted proxy.
//! - `GET /v1/mesh`: operator endpoint (bearer token): edges with their
//!   status, probed links, the routes currently published, and edges that
//!   recently left the registry (`gone`, shown as down).
//! - `GET /v1/links/history?from=<id>&to=<id>`: operator endpoint (bearer
//!   token): the last minutes of one probed link's RTT, jitter and loss.
//! - `GET /`: the path-quality dashboard (static page compiled into the
//!   binary; it reads the two operator endpoints with the token the
//!   operator enters, see [`crate::dashboard`]).
//! - `/metrics`, `/healthz`, `/readyz` (ready once the store view is synced).
//!
//! Errors are `{"error": {"code": "...", "message": "..."}}` with a 4xx/5xx.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use serde::Serialize;
use serde_json::json;
use topology::{rank_nearest, EdgeCandidate, GeoIpDb, GeoPoint};
use tracing::{info, warn};

use crate::controller::LeaderState;
use crate::dashboard::{self, Observer, ObserverLimits};
use crate::mesh::{MeshView, SharedMesh};
use control::clock::now_ms;
use control::records::EdgeState;

/// Shortlist length when the request names none: the SDK probes these, and
/// four covers the nearest city plus fallbacks in neighbouring regions.
pub const DEFAULT_LIMIT: usize = 4;
/// Longest shortlist served: probing more costs clients more than it gains.
pub const MAX_LIMIT: usize = 16;
/// How long a connection may take to send a request's headers, and how long
/// an idle keep-alive connection is kept: without a bound, a public endpoint
/// keeps every silent or trickling connection (and its task and socket)
/// forever. 10 s is ample for one request line and a few headers.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A link whose prober's summary is older than this is stale: edges refresh
/// an unchanged summary every 30 s (`PROBE_REFRESH` in edge-node), so 45 s
/// means at least one refresh was missed.
pub const PROBE_STALE_MS: u64 = 45_000;

type Limiter = governor::DefaultKeyedRateLimiter<IpAddr>;

pub struct Api {
    pub mesh: SharedMesh,
    pub leader: LeaderState,
    pub region: String,
    pub geoip: Option<GeoIpDb>,
    pub client_ip_header: Option<hyper::header::HeaderName>,
    pub trusted_proxies: Vec<IpNet>,
    pub admin_token: Option<String>,
    /// See [`HEADER_READ_TIMEOUT`] (the default).
    pub header_read_timeout: std::time::Duration,
    /// Gone edges and link history, sampled from `mesh` while [`Api::serve`]
    /// runs.
    pub observer: Arc<Observer>,
    limiter: Limiter,
}

pub fn parse_proxies(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is neither an address nor a CIDR"))
        })
        .collect()
}

impl Api {
    pub fn new(
        mesh: SharedMesh,
        leader: LeaderState,
        region: String,
        geoip: Option<GeoIpDb>,
        lookups_per_s: u32,
    ) -> Self {
        let rate = NonZeroU32::new(lookups_per_s.max(1)).expect("at least 1");
        let quota = governor::Quota::per_second(rate)
            .allow_burst(rate.saturating_mul(NonZeroU32::new(2).expect("2")));
        Api {
            mesh,
            leader,
            region,
            geoip,
            client_ip_header: None,
            trusted_proxies: Vec::new(),
            admin_token: None,
            header_read_timeout: HEADER_READ_TIMEOUT,
            observer: Arc::new(Observer::new(ObserverLimits::default())),
            limiter: Limiter::keyed(quota),
        }
    }

    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        // The dashboard's memory is sampled while the API is served, and
        // stops with it.
        struct AbortOnDrop(tokio::task::JoinHandle<()>);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let _sampler = AbortOnDrop(tokio::spawn(self.observer.clone().run(self.mesh.clone())));
        let mut sweep = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            let (stream, peer) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = sweep.tick() => {
                    // Forget clients that have not asked for a while, so the
                    // limiter's memory stays bounded by recent clients.
                    self.limiter.retain_recent();
                    continue;
                }
            };
            let api = self.clone();
            let header_read_timeout = self.header_read_timeout;
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let api = api.clone();
                    async move { Ok::<_, std::convert::Infallible>(api.handle(peer, &req)) }
                });
                // hyper enforces the header read timeout only with a timer.
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read_timeout)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }

    /// Route one request (bodies are never read: every endpoint is a GET).
    pub fn handle<B>(&self, peer: SocketAddr, req: &Request<B>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let resp = match (req.method(), path) {
            (&Method::GET, "/v1/edges/nearest") => self.nearest(peer, req),
            (&Method::GET, "/v1/mesh") => self.authorized(req).and_then(|()| self.mesh_json()),
            (&Method::GET, "/v1/links/history") => self
                .authorized(req)
                .and_then(|()| self.link_history(req.uri().query())),
            (&Method::GET, p) if dashboard::asset(p).is_some() => Ok(static_asset(p)),
            (&Method::GET, "/metrics") => Ok(text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                crate::metrics::prometheus().render(),
            )),
            (&Method::GET, "/healthz") => Ok(text(StatusCode::OK, "text/plain", "ok\n".into())),
            (&Method::GET, "/readyz") if self.mesh.store_connected() => {
                Ok(text(StatusCode::OK, "text/plain", "ready\n".into()))
            }
            // Static stability: through a store outage the controller goes
            // on answering from its last view, so it stays in rotation.
            (&Method::GET, "/readyz") if self.mesh.synced() => Ok(text(
                StatusCode::OK,
                "text/plain",
                "ready: the store does not answer; serving the last view\n".into(),
            )),
            (&Method::GET, "/readyz") => Ok(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "store not synced\n".into(),
            )),
            (_, p) if is_endpoint(p) => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use GET",
            )),
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint",
            )),
        };
        if let (Err(e), "/v1/edges/nearest") = (&resp, path) {
            nearest_outcome(e.code);
        }
        let resp = resp.unwrap_or_else(|e| e.response());
        let endpoint = match path {
            "/v1/edges/nearest" | "/v1/mesh" | "/v1/links/history" => path.to_string(),
            p if dashboard::asset(p).is_some() => "dashboard".into(),
            _ => "other".into(),
        };
        metrics::counter!("rtn_controller_api_requests_total", "endpoint" => endpoint, "status" => resp.status().as_u16().to_string()).increment(1);
        resp
    }

    fn authorized<B>(&self, req: &Request<B>) -> Result<(), ApiError> {
        let Some(token) = self.admin_token.as_deref() else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "no admin token is configured on this controller",
            ));
        };
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                // The scheme is case-insensitive (RFC 9110 section 11.1):
                // "bearer <token>" is as valid as "Bearer <token>".
                let (scheme, token) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim_start_matches(' '))
            });
        match given {
            Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required",
            )),
        }
    }

    /// The client's address and where it came from.
    fn client_ip<B>(
        &self,
        peer: SocketAddr,
        req: &Request<B>,
    ) -> Result<(IpAddr, &'static str), ApiError> {
        let peer_ip = peer.ip().to_canonical();
        let Some(header) = &self.client_ip_header else {
            return Ok((peer_ip, "peer"));
        };
        if !self.trusted_proxies.iter().any(|n| n.contains(&peer_ip)) {
            return Ok((peer_ip, "peer"));
        }
        let Some(value) = req.headers().get(header) else {
            return Ok((peer_ip, "peer"));
        };
        // X-Forwarded-For lists the client first, then each proxy.
        let first = value
            .to_str()
            .ok()
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .unwrap_or("");
        first
            .parse::<IpAddr>()
            .map(|ip| (ip.to_canonical(), "header"))
            .map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_client_header",
                    format!("{header} does not start with an IP address"),
                )
            })
    }

    fn nearest<B>(
        &self,
        peer: SocketAddr,
        req: &Request<B>,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let (caller, caller_source) = self.client_ip(peer, req)?;
        if self.limiter.check_key(&caller).is_err() {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many lookups from this address; retry in a second",
            ));
        }
        let mut ip = None;
        let mut limit = DEFAULT_LIMIT;
        for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
            match &*k {
                "ip" => {
                    ip = Some(v.parse::<IpAddr>().map_err(|_| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "invalid_ip",
                            format!("ip={v:?} is not an IPv4 or IPv6 address"),
                        )
                    })?)
                }
                "limit" => {
                    limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|l| (1..=MAX_LIMIT).contains(l))
                        .ok_or_else(|| {
                            ApiError::new(
                                StatusCode::BAD_REQUEST,
                                "invalid_limit",
                                format!("limit={v:?} must be a number from 1 to {MAX_LIMIT}"),
                            )
                        })?
                }
                other => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "unknown_parameter",
                        format!("unknown parameter {other:?} (known: ip, limit)"),
                    ))
                }
            }
        }
        let (client_ip, source) = match ip {
            Some(ip) => (ip.to_canonical(), "query"),
            None => (caller, caller_source),
        };
        let location = self.locate(client_ip);
        let view = self.mesh.read();
        let candidates: Vec<EdgeCandidate> = view
            .edges
            .values()
            .filter_map(|e| {
                Some(EdgeCandidate {
                    id: e.id,
                    location: GeoPoint::new(e.lat, e.lon).ok()?,
                    region: e.region.clone(),
                    // Registered and reporting load: its lease is alive and
                    // it has finished starting.
                    healthy: view.loads.contains_key(&e.id),
                    draining: e.state == EdgeState::Draining,
                    load: view.load_of(e.id),
                })
            })
            .collect();
        let ranked = rank_nearest(location.as_ref().map(|l| l.0), &candidates, limit);
        let edges: Vec<_> = ranked
            .iter()
            .filter_map(|r| {
                let e = view.edges.get(&r.id)?;
                Some(json!({
                    "id": e.id,
                    "region": e.region,
                    "city": e.city,
                    "addr": e.addr.to_string(),
                    "server_name": e.server_name,
                    "distance_km": r.distance_km,
                    "est_rtt_ms": r.est_rtt_ms,
                    "load": view.load_of(e.id),
                    "score": r.score,
                }))
            })
            .collect();
        nearest_outcome(match (edges.is_empty(), &location) {
            (true, _) => "no_edges",
            (false, None) => "unlocated",
            (false, Some(_)) => "ok",
        });
        let location_json = location.map(|(p, city, country)| {
            json!({"lat": p.lat(), "lon": p.lon(), "city": city, "country": country})
        });
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "client": {"ip": client_ip.to_string(), "source": source, "location": location_json},
                "edges": edges,
            }),
        ))
    }

    /// Where `ip` is; unknown or unlocatable addresses rank without a
    /// location (a spread over regions) rather than failing the request.
    fn locate(&self, ip: IpAddr) -> Option<(GeoPoint, Option<String>, Option<String>)> {
        let db = self.geoip.as_ref()?;
        match db.lookup(ip) {
            Ok(Some(loc)) => Some((loc.point, loc.city, loc.country)),
            Ok(None) => None,
            Err(e) => {
                warn!(%ip, error = %e, "GeoIP lookup failed; ranking without a location");
                None
            }
        }
    }

    fn mesh_json(&self) -> Result<Response<Full<Bytes>>, ApiError> {
        #[derive(Serialize)]
        struct Link {
            from: u32,
            to: u32,
            rtt_ms: f64,
            jitter_ms: f64,
            loss: f64,
            alive: bool,
        }
        let view = self.mesh.read();
        let now = now_ms();
        // An edge is down on the first request after it left the registry,
        // not only at the next sample.
        self.observer.observe_edges(&view, now);
        let reachable = reachability(&view);
        let edges: Vec<_> = view
            .edges
            .values()
            .map(|e| {
                json!({
                    "edge": e,
                    "load": view.loads.get(&e.id),
                    "status": match e.state {
                        EdgeState::Serving => "serving",
                        EdgeState::Draining => "draining",
                    },
                    "reachable": reachable.get(&e.id),
                    "city_name": topology::geo::find_city(&e.city).map(|c| c.name),
                })
            })
            .collect();
        let gone: Vec<_> = self
            .observer
            .gone()
            .into_iter()
            .filter(|g| !view.edges.contains_key(&g.edge.id))
            .map(|g| {
                json!({
                    "edge": g.edge,
                    "status": "down",
                    "last_seen_ms": g.last_seen_ms,
                    "gone_at_ms": g.gone_at_ms,
                    "city_name": topology::geo::find_city(&g.edge.city).map(|c| c.name),
                })
            })
            .collect();
        let probe_reports: Vec<_> = view
            .probes
            .values()
            .map(|p| {
                let age_ms = now.saturating_sub(p.at_ms);
                json!({
                    "from": p.from,
                    "at_ms": p.at_ms,
                    "age_ms": age_ms,
                    "stale": age_ms > PROBE_STALE_MS,
                })
            })
            .collect();
        let links: Vec<Link> = view
            .probes
            .values()
            .flat_map(|p| {
                p.links.iter().map(|l| Link {
                    from: p.from,
                    to: l.to,
                    rtt_ms: l.rtt_ms,
                    jitter_ms: l.jitter_ms,
                    loss: l.loss,
                    alive: l.alive,
                })
            })
            .collect();
        let routes: Vec<_> = view.routes.values().collect();
        let limits = self.observer.limits();
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "region": self.region,
                "leader": self.leader.is_leader(),
                "store_connected": self.mesh.store_connected(),
                "now_ms": now,
                "edges": edges,
                "gone": gone,
                "links": links,
                "probe_reports": probe_reports,
                "probe_stale_ms": PROBE_STALE_MS,
                "routes": routes,
                "history": {
                    "interval_ms": limits.interval.as_millis() as u64,
                    "window_ms": limits.window.as_millis() as u64,
                },
            }),
        ))
    }

    fn link_history(&self, query: Option<&str>) -> Result<Response<Full<Bytes>>, ApiError> {
        let (mut from, mut to) = (None, None);
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match &*k {
                "from" => &mut from,
                "to" => &mut to,
                other => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "unknown_parameter",
                        format!("unknown parameter {other:?} (known: from, to)"),
                    ))
                }
            };
            *slot = Some(v.parse::<protocol::EdgeId>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_edge",
                    format!("{k}={v:?} is not an edge id"),
                )
            })?);
        }
        let (Some(from), Some(to)) = (from, to) else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_parameter",
                "from and to (edge ids) are required",
            ));
        };
        Ok(json_response(
            StatusCode::OK,
            &serde_json::to_value(self.observer.history(from, to)).unwrap_or_default(),
        ))
    }
}

/// Count a nearest-edge lookup by outcome (a bounded set: ok, unlocated,
/// no_edges, or an error code).
fn nearest_outcome(outcome: &'static str) {
    metrics::counter!("rtn_controller_nearest_requests_total", "outcome" => outcome).increment(1);
}

/// Per registered edge that some other edge probes: whether any prober hears
/// it (false: every prober reports it dead, the lease has not expired yet).
fn reachability(view: &MeshView) -> std::collections::BTreeMap<protocol::EdgeId, bool> {
    let mut heard = std::collections::BTreeMap::new();
    for p in view.probes.values() {
        if !view.edges.contains_key(&p.from) {
            continue;
        }
        for l in &p.links {
            if view.edges.contains_key(&l.to) {
                *heard.entry(l.to).or_insert(false) |= l.alive;
            }
        }
    }
    heard
}

/// Whether `path` is served (by GET).
fn is_endpoint(path: &str) -> bool {
    matches!(
        path,
        "/v1/edges/nearest"
            | "/v1/mesh"
            | "/v1/links/history"
            | "/metrics"
            | "/healthz"
            | "/readyz"
    ) || dashboard::asset(path).is_some()
}

/// A file of the dashboard, with headers that keep the page to its own
/// origin (see [`dashboard::CONTENT_SECURITY_POLICY`]). `no-cache`: a browser
/// may keep it but asks again, so an upgraded controller serves its own page.
fn static_asset(path: &str) -> Response<Full<Bytes>> {
    let Some(a) = dashboard::asset(path) else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").response();
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", a.content_type)
        .header("cache-control", "no-cache")
        .header(
            "content-security-policy",
            dashboard::CONTENT_SECURITY_POLICY,
        )
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .header("x-frame-options", "DENY")
        .body(Full::new(Bytes::from_static(a.body)))
        .unwrap_or_default()
}

/// Comparing a secret byte by byte would leak its prefix through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn response(self) -> Response<Full<Bytes>> {
        if self.status.is_server_error() {
            info!(code = self.code, message = %self.message, "API error");
        }
        json_response(
            self.status,
            &json!({"error": {"code": self.code, "message": self.message}}),
        )
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    text(status, "application/json", body.to_string())
}

fn text(status: StatusCode, ctype: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    //! Requests go straight to `handle` (no sockets). The mesh view is filled
    //! the way a running controller fills it: records written to a store and
    //! mirrored, so a change in the record format or the mirror shows here.

    use super::*;
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    use http_body_util::BodyExt;
    use protocol::EdgeId;
    use serde_json::Value;

    use control::keys::KeyLayout;
    use control::records::{
        EdgeRecord, LoadRecord, ProbeLink, ProbeRecord, Record, RouteRecord, RoutesRecord,
    };
    use control::store::{ControlStore, MemoryStore};

    const GEOIP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/geoip/");
    const CITY_DB: &str = "GeoLite2-City-Test.mmdb";

    // Networks of GeoLite2-City-Test.json.
    /// 81.2.69.142/31: London, GB, 51.5142,-0.0931.
    const LONDON_IP: &str = "81.2.69.142";
    /// 216.160.83.56/29: Milton (WA), US, 47.2513,-122.3149.
    const US_IP: &str = "216.160.83.57";
    /// 175.16.199.0/24: Changchun, CN, 43.88,125.3228.
    const ASIA_IP: &str = "175.16.199.10";
    /// 2001:218::/32: JP, 35.68536,139.75309 (no city).
    const JAPAN_IP6: &str = "2001:218::1";

    const LONDON: EdgeId = 1;
    const FRANKFURT: EdgeId = 2;
    const NEW_YORK: EdgeId = 3;
    const SINGAPORE: EdgeId = 4;
    /// Registered but never reported load: not healthy. In Paris, so that
    /// listing it would push Frankfurt out of a London client's top two.
    const PARIS_UNHEALTHY: EdgeId = 5;
    /// Draining, in London and idle: listing it would put it first.
    const LONDON_DRAINING: EdgeId = 6;
    const ELIGIBLE: [EdgeId; 4] = [LONDON, FRANKFURT, NEW_YORK, SINGAPORE];

    const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

    fn edge(id: EdgeId, region: &str, city: &str, lat: f64, lon: f64) -> EdgeRecord {
        EdgeRecord {
            id,
            region: region.into(),
            city: city.into(),
            lat,
            lon,
            addr: SocketAddr::from(([198, 51, 100, id as u8], 4433)),
            server_name: format!("edge{id}.rtn.test"),
            admin_addr: None,
            capacity: 1000,
            state: EdgeState::Serving,
            version: "test".into(),
            started_at_ms: 1,
        }
    }

    fn edges() -> Vec<EdgeRecord> {
        let mut draining = edge(LONDON_DRAINING, "eu", "LON", 51.5074, -0.1278);
        draining.state = EdgeState::Draining;
        vec![
            edge(LONDON, "eu", "LON", 51.5074, -0.1278),
            edge(FRANKFURT, "eu", "FRA", 50.1109, 8.6821),
            edge(NEW_YORK, "us", "NYC", 40.7128, -74.0060),
            edge(SINGAPORE, "ap", "SIN", 1.3521, 103.8198),
            edge(PARIS_UNHEALTHY, "eu", "PAR", 48.8566, 2.3522),
            draining,
        ]
    }

    /// Loads of the edges that report one (all but the unhealthy one).
    fn loads() -> Vec<(EdgeId, f64)> {
        vec![
            (LONDON, 0.2),
            (FRANKFURT, 0.3),
            (NEW_YORK, 0.1),
            (SINGAPORE, 0.4),
            (LONDON_DRAINING, 0.0),
        ]
    }

    fn probe() -> ProbeRecord {
        ProbeRecord {
            from: LONDON,
            at_ms: 10,
            links: vec![
                ProbeLink {
                    to: FRANKFURT,
                    rtt_ms: 9.5,
                    jitter_ms: 0.4,
                    loss: 0.01,
                    samples: 40,
                    alive: true,
                },
                ProbeLink {
                    to: NEW_YORK,
                    rtt_ms: 72.0,
                    jitter_ms: 1.5,
                    loss: 0.0,
                    samples: 40,
                    alive: false,
                },
            ],
        }
    }

    fn routes() -> RoutesRecord {
        RoutesRecord {
            edge: LONDON,
            region: "eu".into(),
            controller: "ctl-a".into(),
            computed_at_ms: 20,
            routes: vec![RouteRecord {
                dest: NEW_YORK,
                best: vec![LONDON, FRANKFURT, NEW_YORK],
                backup: Some(vec![LONDON, NEW_YORK]),
            }],
        }
    }

    /// A store holding the records above and a mirror of it.
    struct Mesh {
        mesh: SharedMesh,
        store: Arc<MemoryStore>,
        mirror: tokio::task::JoinHandle<()>,
    }

    impl Drop for Mesh {
        fn drop(&mut self) {
            self.mirror.abort();
        }
    }

    async fn mesh() -> Mesh {
        let store = Arc::new(MemoryStore::new());
        let keys = KeyLayout::default();
        for e in edges() {
            store
                .put(&keys.edge(e.id), e.to_bytes(), None)
                .await
                .unwrap();
        }
        for (id, load) in loads() {
            let r = LoadRecord {
                sessions: (load * 1000.0) as u32,
                channels: 3,
                load,
                at_ms: 5,
            };
            store.put(&keys.load(id), r.to_bytes(), None).await.unwrap();
        }
        store
            .put(&keys.probe(LONDON), probe().to_bytes(), None)
            .await
            .unwrap();
        store
            .put(&keys.route(LONDON), routes().to_bytes(), None)
            .await
            .unwrap();
        let mesh = SharedMesh::default();
        let mirror = tokio::spawn(crate::mesh::mirror(store.clone(), keys, mesh.clone()));
        wait_until("the mirror has every record", || {
            let v = mesh.read();
            mesh.store_connected()
                && v.edges.len() == 6
                && v.loads.len() == 5
                && v.probes.len() == 1
                && v.routes.len() == 1
        })
        .await;
        Mesh {
            mesh,
            store,
            mirror,
        }
    }

    async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn db(name: &str) -> GeoIpDb {
        GeoIpDb::open(format!("{GEOIP_DIR}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// An API over `m` with the City test database and a rate limit high
    /// enough that only the rate-limit test meets it.
    fn api(m: &Mesh) -> Api {
        api_with_rate(m, 10_000)
    }

    fn api_with_rate(m: &Mesh, lookups_per_s: u32) -> Api {
        Api::new(
            m.mesh.clone(),
            LeaderState::default(),
            "eu".into(),
            Some(db(CITY_DB)),
            lookups_per_s,
        )
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().expect("test socket address")
    }

    struct Reply {
        status: StatusCode,
        content_type: String,
        body: Bytes,
    }

    impl Reply {
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).unwrap_or_else(|e| {
                panic!(
                    "{} body is not JSON ({e}): {:?}",
                    self.status,
                    String::from_utf8_lossy(&self.body)
                )
            })
        }

        /// A 200 with a JSON body.
        fn ok_json(&self) -> Value {
            let v = self.json();
            assert_eq!(self.status, StatusCode::OK, "{v}");
            assert_eq!(self.content_type, "application/json");
            v
        }

        /// The documented error shape, exactly: `{"error":{"code","message"}}`.
        fn assert_error(&self, status: StatusCode, code: &str) {
            let v = self.json();
            assert_eq!(self.status, status, "{v}");
            assert_eq!(self.content_type, "application/json", "{v}");
            let top = v.as_object().expect("object");
            assert_eq!(top.len(), 1, "{v}");
            let err = v["error"].as_object().expect("error object");
            assert_eq!(err.len(), 2, "{v}");
            assert_eq!(err["code"], code, "{v}");
            assert!(
                err["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{v}"
            );
        }
    }

    async fn send(api: &Api, from: &str, req: Request<()>) -> Reply {
        let resp = api.handle(peer(from), &req);
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("a full body never fails")
            .to_bytes();
        Reply {
            status,
            content_type,
            body,
        }
    }

    async fn get(api: &Api, from: &str, uri: &str) -> Reply {
        send(api, from, Request::builder().uri(uri).body(()).unwrap()).await
    }

    /// A peer whose address is in no database (documentation range).
    const PEER: &str = "192.0.2.10:40000";

    fn ids(v: &Value) -> Vec<EdgeId> {
        v["edges"]
            .as_array()
            .expect("edges array")
            .iter()
            .map(|e| e["id"].as_u64().expect("id") as EdgeId)
            .collect()
    }

    fn f(v: &Value) -> f64 {
        v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
    }

    #[tokio::test]
    async fn nearest_ranks_by_distance_without_unhealthy_or_draining_edges() {
        let m = mesh().await;
        let api = api(&m);

        let v = get(
            &api,
            PEER,
            &format!("/v1/edges/nearest?ip={LONDON_IP}&limit=2"),
        )
        .await
        .ok_json();
        assert_eq!(v["client"]["ip"], LONDON_IP, "{v}");
        assert_eq!(v["client"]["source"], "query", "{v}");
        let loc = &v["client"]["location"];
        assert_eq!((f(&loc["lat"]), f(&loc["lon"])), (51.5142, -0.0931), "{v}");
        assert_eq!(loc["city"], "London");
        assert_eq!(loc["country"], "GB");
        // Paris (unhealthy) and the idle London edge (draining) would both
        // be in the top two if they were listed.
        assert_eq!(ids(&v), [LONDON, FRANKFURT], "{v}");
        let (london, frankfurt) = (&v["edges"][0], &v["edges"][1]);
        assert_eq!(london["addr"], "198.51.100.1:4433");
        assert_eq!(london["server_name"], "edge1.rtn.test");
        assert_eq!(london["region"], "eu");
        assert_eq!(london["city"], "LON");
        assert_eq!(frankfurt["addr"], "198.51.100.2:4433");
        assert_eq!(frankfurt["server_name"], "edge2.rtn.test");
        assert!(f(&london["distance_km"]) < 20.0, "{london}");
        assert!(
            (600.0..700.0).contains(&f(&frankfurt["distance_km"])),
            "{frankfurt}"
        );
        assert!(f(&london["est_rtt_ms"]) >= 0.0);
        assert!(f(&frankfurt["est_rtt_ms"]) > f(&london["est_rtt_ms"]));
        assert_eq!(f(&london["load"]), 0.2);
        assert_eq!(f(&frankfurt["load"]), 0.3);
        assert!(f(&london["score"]) < f(&frankfurt["score"]));

        // The longest list still holds only the four eligible edges, nearest
        // first; the default length is DEFAULT_LIMIT.
        let all = get(
            &api,
            PEER,
            &format!("/v1/edges/nearest?ip={LONDON_IP}&limit=16"),
        )
        .await
        .ok_json();
        assert_eq!(ids(&all), [LONDON, FRANKFURT, NEW_YORK, SINGAPORE], "{all}");
        let default = get(&api, PEER, &format!("/v1/edges/nearest?ip={LONDON_IP}"))
            .await
            .ok_json();
        assert_eq!(ids(&default).len(), DEFAULT_LIMIT.min(ELIGIBLE.len()));

        for (ip, nearest) in [
            (US_IP, NEW_YORK),
            (ASIA_IP, SINGAPORE),
            (JAPAN_IP6, SINGAPORE),
        ] {
            let v = get(&api, PEER, &format!("/v1/edges/nearest?ip={ip}&limit=1"))
                .await
                .ok_json();
            assert!(!v["client"]["location"].is_null(), "{ip}: {v}");
            assert_eq!(ids(&v), [nearest], "{ip}: {v}");
        }

        // An IPv4-mapped IPv6 address is the IPv4 client it maps.
        let v = get(
            &api,
            PEER,
            "/v1/edges/nearest?ip=::ffff:81.2.69.142&limit=1",
        )
        .await
        .ok_json();
        assert_eq!(v["client"]["ip"], LONDON_IP, "{v}");
        assert_eq!(ids(&v), [LONDON], "{v}");
    }

    /// Without a location, the list is one edge per region before a second
    /// from any region, least loaded first within a region.
    fn assert_region_spread(v: &Value) {
        assert!(v["client"]["location"].is_null(), "{v}");
        let list = v["edges"].as_array().expect("edges");
        assert_eq!(
            ids(v).into_iter().collect::<BTreeSet<_>>(),
            BTreeSet::from(ELIGIBLE),
            "{v}"
        );
        let first_three: BTreeSet<&str> = list[..3]
            .iter()
            .map(|e| e["region"].as_str().expect("region"))
            .collect();
        assert_eq!(first_three, BTreeSet::from(["ap", "eu", "us"]), "{v}");
        assert_eq!(
            list[3]["id"], FRANKFURT,
            "the busier eu edge comes last: {v}"
        );
        for e in list {
            assert!(e["distance_km"].is_null(), "{e}");
            assert!(e["est_rtt_ms"].is_null(), "{e}");
            assert!(e["addr"].is_string() && e["server_name"].is_string(), "{e}");
        }
    }

    #[tokio::test]
    async fn unlocated_clients_get_a_region_spread() {
        let m = mesh().await;
        let api = api(&m);
        for ip in ["10.1.2.3", "127.0.0.1", "::1"] {
            let v = get(&api, PEER, &format!("/v1/edges/nearest?ip={ip}"))
                .await
                .ok_json();
            assert_eq!(v["client"]["ip"], ip, "{v}");
            assert_region_spread(&v);
        }
        // No database at all: even a London address has no location.
        let no_db = Api::new(
            m.mesh.clone(),
            LeaderState::default(),
            "eu".into(),
            None,
            100,
        );
        let v = get(&no_db, PEER, &format!("/v1/edges/nearest?ip={LONDON_IP}"))
            .await
            .ok_json();
        assert_region_spread(&v);
    }

    #[tokio::test]
    async fn corrupt_geoip_records_fall_back_to_a_region_spread() {
        let m = mesh().await;
        // Its type is City, so it opens (only `verify`, which the binary runs,
        // refuses it); every double in its records (latitude, longitude) is
        // malformed, so every located address fails to decode.
        let broken = db("GeoIP2-City-Test-Broken-Double-Format.mmdb");
        let api = Api::new(
            m.mesh.clone(),
            LeaderState::default(),
            "eu".into(),
            Some(broken),
            100,
        );
        for ip in ["2001:220::1", "214.0.0.7", LONDON_IP, US_IP] {
            let lookup = api.geoip.as_ref().expect("db").lookup(ip.parse().unwrap());
            assert!(lookup.is_err(), "{ip}: the record should be corrupt");
            let v = get(&api, PEER, &format!("/v1/edges/nearest?ip={ip}"))
                .await
                .ok_json();
            assert_eq!(v["client"]["ip"], ip, "{v}");
            assert_region_spread(&v);
        }
    }

    fn with_header(uri: &str, name: &str, value: &str) -> Request<()> {
        Request::builder()
            .uri(uri)
            .header(name, value)
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn the_client_is_the_peer_or_a_trusted_proxys_header() {
        let m = mesh().await;
        let mut api = api(&m);

        // No `ip`: the caller's own address, also when it arrives as an
        // IPv4-mapped IPv6 peer (a dual-stack listener).
        for from in ["81.2.69.142:5000", "[::ffff:81.2.69.142]:5000"] {
            let v = get(&api, from, "/v1/edges/nearest?limit=1").await.ok_json();
            assert_eq!(v["client"]["source"], "peer", "{v}");
            assert_eq!(v["client"]["ip"], LONDON_IP, "{v}");
            assert_eq!(ids(&v), [LONDON], "{v}");
        }
        // A header is ignored while none is configured.
        let r = send(
            &api,
            "81.2.69.142:5000",
            with_header("/v1/edges/nearest", "x-forwarded-for", US_IP),
        )
        .await;
        assert_eq!(r.ok_json()["client"]["source"], "peer");

        api.client_ip_header = Some(hyper::header::HeaderName::from_static("x-forwarded-for"));
        api.trusted_proxies = parse_proxies(&["10.0.0.0/8".into(), "192.0.2.99".into()]).unwrap();
        let uri = "/v1/edges/nearest?limit=1";

        // From a trusted proxy: the first address of the list is the client.
        for (proxy, value) in [
            ("10.9.8.7:3000", format!("{US_IP}, 10.0.0.1")),
            ("192.0.2.99:3000", format!(" {US_IP}")),
            ("[::ffff:10.1.1.1]:3000", US_IP.to_string()),
        ] {
            let v = send(&api, proxy, with_header(uri, "x-forwarded-for", &value))
                .await
                .ok_json();
            assert_eq!(v["client"]["source"], "header", "{proxy} {value:?}: {v}");
            assert_eq!(v["client"]["ip"], US_IP, "{v}");
            assert_eq!(ids(&v), [NEW_YORK], "{v}");
        }
        // A trusted proxy that sends no header is the client itself.
        let v = get(&api, "10.9.8.7:3000", uri).await.ok_json();
        assert_eq!(v["client"]["source"], "peer", "{v}");
        assert_eq!(v["client"]["ip"], "10.9.8.7", "{v}");
        // `ip` still wins over both.
        let v = send(
            &api,
            "10.9.8.7:3000",
            with_header(
                &format!("/v1/edges/nearest?ip={LONDON_IP}&limit=1"),
                "x-forwarded-for",
                US_IP,
            ),
        )
        .await
        .ok_json();
        assert_eq!(v["client"]["source"], "query", "{v}");
        assert_eq!(ids(&v), [LONDON], "{v}");

        // Anyone else can put anything in the header: it is ignored.
        for untrusted in ["81.2.69.142:5000", "192.0.2.98:5000", "11.0.0.1:5000"] {
            let v = send(&api, untrusted, with_header(uri, "x-forwarded-for", US_IP))
                .await
                .ok_json();
            assert_eq!(v["client"]["source"], "peer", "{untrusted}: {v}");
            let peer_ip = peer(untrusted).ip().to_string();
            assert_eq!(v["client"]["ip"], peer_ip, "{v}");
        }
        // Garbage from a trusted proxy is its bug, reported rather than
        // silently ranking for the proxy's location.
        for garbage in [
            "not-an-ip",
            "",
            "unknown, 1.2.3.4",
            "81.2.69.142:443",
            "999.1.1.1",
        ] {
            send(
                &api,
                "10.9.8.7:3000",
                with_header(uri, "x-forwarded-for", garbage),
            )
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_client_header");
        }
        // The same garbage from an untrusted peer is never looked at.
        let r = send(
            &api,
            "192.0.2.98:5000",
            with_header(uri, "x-forwarded-for", "not-an-ip"),
        )
        .await;
        assert_eq!(r.ok_json()["client"]["source"], "peer");
    }

    #[tokio::test]
    async fn bad_requests_get_json_errors() {
        let m = mesh().await;
        let api = api(&m);
        let nearest = "/v1/edges/nearest";
        for ip in ["999.1.1.1", "", "london", "81.2.69", "1.2.3.4/32", "[::1]"] {
            get(&api, PEER, &format!("{nearest}?ip={ip}"))
                .await
                .assert_error(StatusCode::BAD_REQUEST, "invalid_ip");
        }
        for limit in ["0", "17", "abc", "-1", "", "1.5", "99999999999999999999999"] {
            get(&api, PEER, &format!("{nearest}?limit={limit}"))
                .await
                .assert_error(StatusCode::BAD_REQUEST, "invalid_limit");
        }
        // The bounds themselves are fine.
        for limit in [1, MAX_LIMIT] {
            get(&api, PEER, &format!("{nearest}?limit={limit}"))
                .await
                .ok_json();
        }
        // A bare `limit` is `limit=` (an empty value), not an unknown name.
        get(&api, PEER, &format!("{nearest}?limit"))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_limit");
        for query in [
            "city=London",
            &format!("ip={LONDON_IP}&foo=1"),
            "IP=1.2.3.4",
            "x",
        ] {
            get(&api, PEER, &format!("{nearest}?{query}"))
                .await
                .assert_error(StatusCode::BAD_REQUEST, "unknown_parameter");
        }
        for path in [
            nearest,
            "/v1/mesh",
            "/v1/links/history",
            "/healthz",
            "/readyz",
            "/metrics",
            "/",
            "/dashboard/app.js",
        ] {
            for method in [Method::POST, Method::PUT, Method::DELETE] {
                let req = Request::builder()
                    .method(method.clone())
                    .uri(path)
                    .body(())
                    .unwrap();
                send(&api, PEER, req)
                    .await
                    .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
            }
        }
        for path in [
            "/v1/edges",
            "/v1/edges/nearest/",
            "/v2/edges/nearest",
            "/V1/MESH",
        ] {
            get(&api, PEER, path)
                .await
                .assert_error(StatusCode::NOT_FOUND, "not_found");
        }
    }

    #[tokio::test]
    async fn lookups_are_rate_limited_per_client() {
        let m = mesh().await;
        let uri = format!("/v1/edges/nearest?ip={LONDON_IP}");
        // 2 lookups/s with a burst of 4: the fifth in a row is refused, unless
        // the machine stalled long enough (half a second) to earn another;
        // then the round is repeated on a fresh limiter.
        let mut refused = false;
        for _ in 0..5 {
            let mut api = api_with_rate(&m, 2);
            let start = Instant::now();
            let mut statuses = Vec::new();
            for _ in 0..5 {
                statuses.push(get(&api, PEER, &uri).await);
            }
            if start.elapsed() >= Duration::from_millis(450) {
                continue;
            }
            for r in &statuses[..4] {
                r.ok_json();
            }
            statuses[4].assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
            // Every other client has its own budget.
            get(&api, "192.0.2.11:40000", &uri).await.ok_json();
            get(&api, "[2001:db8::1]:40000", &uri).await.ok_json();
            // Behind a trusted proxy, the budget is the forwarded client's,
            // not the proxy's (one proxy serves many clients).
            api.client_ip_header = Some(hyper::header::HeaderName::from_static("x-forwarded-for"));
            api.trusted_proxies = parse_proxies(&["10.0.0.1".into()]).unwrap();
            let via_proxy = |client: &str| with_header(&uri, "x-forwarded-for", client);
            let mut proxied = Vec::new();
            for _ in 0..5 {
                proxied.push(send(&api, "10.0.0.1:3000", via_proxy("203.0.113.5")).await);
            }
            // The limited client's address sent directly is the same client.
            let direct = get(&api, "203.0.113.5:1", &uri).await;
            if start.elapsed() >= Duration::from_millis(450) {
                continue;
            }
            for r in &proxied[..4] {
                r.ok_json();
            }
            proxied[4].assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
            direct.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
            send(&api, "10.0.0.1:3000", via_proxy("203.0.113.6"))
                .await
                .ok_json();
            // The proxy's own lookups have a budget of their own.
            get(&api, "10.0.0.1:3000", &uri).await.ok_json();
            refused = true;
            break;
        }
        assert!(refused, "five rounds of five lookups each took over 450 ms");
    }

    fn bearer(value: &str) -> Request<()> {
        with_header("/v1/mesh", "authorization", value)
    }

    #[tokio::test]
    async fn mesh_view_needs_the_admin_token() {
        let m = mesh().await;
        let mut api = api(&m);
        // No token configured: refused whatever the caller sends.
        get(&api, PEER, "/v1/mesh")
            .await
            .assert_error(StatusCode::FORBIDDEN, "admin_disabled");
        send(&api, PEER, bearer(&format!("Bearer {ADMIN_TOKEN}")))
            .await
            .assert_error(StatusCode::FORBIDDEN, "admin_disabled");

        api.admin_token = Some(ADMIN_TOKEN.into());
        get(&api, PEER, "/v1/mesh")
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        let prefix = &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1];
        for wrong in [
            "Bearer wrong-token".to_string(),
            format!("Bearer {prefix}"),
            format!("Bearer {ADMIN_TOKEN}x"),
            format!("Basic {ADMIN_TOKEN}"),
            format!("Bearer{ADMIN_TOKEN}"),
            ADMIN_TOKEN.to_string(),
            "Bearer ".to_string(),
        ] {
            send(&api, PEER, bearer(&wrong))
                .await
                .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        }

        // The scheme is case-insensitive.
        for scheme in ["Bearer", "bearer", "BEARER"] {
            send(&api, PEER, bearer(&format!("{scheme} {ADMIN_TOKEN}")))
                .await
                .ok_json();
        }
        let v = send(&api, PEER, bearer(&format!("Bearer {ADMIN_TOKEN}")))
            .await
            .ok_json();
        assert_eq!(v["region"], "eu");
        assert_eq!(v["leader"], false);
        assert_eq!(v["store_connected"], true);

        let listed: Vec<&Value> = v["edges"].as_array().expect("edges").iter().collect();
        let listed_ids: Vec<u64> = listed
            .iter()
            .map(|e| e["edge"]["id"].as_u64().expect("id"))
            .collect();
        // The operator sees every registered edge, eligible or not.
        assert_eq!(listed_ids, [1, 2, 3, 4, 5, 6], "{v}");
        let by_id = |id: EdgeId| listed[id as usize - 1];
        assert!(by_id(PARIS_UNHEALTHY)["load"].is_null(), "{v}");
        assert_eq!(by_id(LONDON_DRAINING)["edge"]["state"], "DRAINING", "{v}");
        assert_eq!(f(&by_id(FRANKFURT)["load"]["load"]), 0.3, "{v}");
        assert_eq!(by_id(SINGAPORE)["edge"]["server_name"], "edge4.rtn.test");

        let links = v["links"].as_array().expect("links");
        assert_eq!(links.len(), 2, "{v}");
        assert_eq!(
            links[0],
            json!({"from": 1, "to": 2, "rtt_ms": 9.5, "jitter_ms": 0.4, "loss": 0.01, "alive": true})
        );
        assert_eq!(links[1]["to"], NEW_YORK);
        assert_eq!(links[1]["alive"], false);

        let published = v["routes"].as_array().expect("routes");
        assert_eq!(published.len(), 1, "{v}");
        assert_eq!(published[0]["edge"], LONDON);
        assert_eq!(published[0]["controller"], "ctl-a");
        assert_eq!(published[0]["routes"][0]["best"], json!([1, 2, 3]));
        assert_eq!(published[0]["routes"][0]["backup"], json!([1, 3]));
    }

    #[tokio::test]
    async fn readiness_follows_the_store_mirror() {
        let store = testkit::OutageStore::new(Arc::new(MemoryStore::new()));
        let shared = SharedMesh::default();
        let api = Api::new(
            shared.clone(),
            LeaderState::default(),
            "eu".into(),
            None,
            10,
        );
        let health = get(&api, PEER, "/healthz").await;
        assert_eq!(health.status, StatusCode::OK);
        assert_eq!(&health.body[..], b"ok\n");
        // Nothing mirrored yet: alive, but not ready to answer from the store.
        let r = get(&api, PEER, "/readyz").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        let task = tokio::spawn(crate::mesh::mirror(
            store.clone(),
            KeyLayout::default(),
            shared.clone(),
        ));
        wait_until("the mirror is connected", || shared.store_connected()).await;
        let r = get(&api, PEER, "/readyz").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], b"ready\n");
        // Store outage: still ready (answers from the last view), but says
        // so, and the status and metric say the store is away.
        store.set_down(true);
        wait_until("the mirror sees the outage", || !shared.store_connected()).await;
        let r = get(&api, PEER, "/readyz").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            &r.body[..],
            &b"ready: the store does not answer; serving the last view\n"[..]
        );
        store.set_down(false);
        wait_until("the mirror is connected again", || shared.store_connected()).await;
        assert_eq!(&get(&api, PEER, "/readyz").await.body[..], b"ready\n");
        task.abort();
        assert_eq!(get(&api, PEER, "/healthz").await.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_dashboard_is_served_at_the_root_without_a_token() {
        let m = mesh().await;
        let mut api = api(&m);
        api.admin_token = Some(ADMIN_TOKEN.into());
        for (path, ctype) in [
            ("/", "text/html; charset=utf-8"),
            ("/index.html", "text/html; charset=utf-8"),
            ("/dashboard/app.js", "text/javascript; charset=utf-8"),
            ("/dashboard/world.js", "text/javascript; charset=utf-8"),
            ("/dashboard/app.css", "text/css; charset=utf-8"),
        ] {
            let req = Request::builder().uri(path).body(()).unwrap();
            let resp = api.handle(peer(PEER), &req);
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            let h = resp.headers();
            assert_eq!(h["content-type"], ctype, "{path}");
            assert_eq!(
                h["content-security-policy"],
                crate::dashboard::CONTENT_SECURITY_POLICY
            );
            assert_eq!(h["x-content-type-options"], "nosniff");
            assert_eq!(h["x-frame-options"], "DENY");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], crate::dashboard::asset(path).unwrap().body);
        }
        // The page carries no data: nothing of the mesh is in it.
        let page = get(&api, PEER, "/").await;
        let text = String::from_utf8_lossy(&page.body);
        assert!(text.contains("<title>RTN path quality</title>"));
        assert!(!text.contains("edge1.rtn.test") && !text.contains(ADMIN_TOKEN));
        for path in ["/dashboard/", "/dashboard/missing.js", "/index.htm"] {
            get(&api, PEER, path)
                .await
                .assert_error(StatusCode::NOT_FOUND, "not_found");
        }
    }

    #[tokio::test]
    async fn mesh_view_lists_status_reachability_probe_ages_and_gone_edges() {
        let m = mesh().await;
        let mut api = api(&m);
        api.admin_token = Some(ADMIN_TOKEN.into());
        let mesh_json = || async {
            send(&api, PEER, bearer(&format!("Bearer {ADMIN_TOKEN}")))
                .await
                .ok_json()
        };
        let v = mesh_json().await;
        let entry = |v: &Value, id: EdgeId| -> Value {
            v["edges"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["edge"]["id"] == id)
                .cloned()
                .unwrap_or(Value::Null)
        };
        assert_eq!(entry(&v, LONDON)["status"], "serving");
        assert_eq!(entry(&v, LONDON_DRAINING)["status"], "draining");
        assert_eq!(entry(&v, FRANKFURT)["city_name"], "Frankfurt");
        // London hears Frankfurt, not New York; nobody probes Singapore.
        assert_eq!(entry(&v, FRANKFURT)["reachable"], true);
        assert_eq!(entry(&v, NEW_YORK)["reachable"], false);
        assert!(entry(&v, SINGAPORE)["reachable"].is_null());
        assert_eq!(v["gone"], json!([]));
        assert_eq!(v["probe_stale_ms"], PROBE_STALE_MS);
        assert_eq!(v["history"]["interval_ms"], 2_000);
        assert_eq!(v["history"]["window_ms"], 600_000);
        let now = v["now_ms"].as_u64().expect("now_ms");
        let reports = v["probe_reports"].as_array().unwrap();
        assert_eq!(reports.len(), 1);
        // The test record is from 1970: stale.
        assert_eq!(reports[0]["from"], LONDON);
        assert_eq!(reports[0]["at_ms"], 10);
        assert_eq!(reports[0]["age_ms"], now - 10);
        assert_eq!(reports[0]["stale"], true);

        // Singapore leaves the registry (its lease expired): down, with its
        // last registration, until it comes back.
        let keys = KeyLayout::default();
        m.store.delete(&keys.edge(SINGAPORE)).await.unwrap();
        wait_until("the mirror dropped Singapore", || {
            !m.mesh.read().edges.contains_key(&SINGAPORE)
        })
        .await;
        let v = mesh_json().await;
        assert!(entry(&v, SINGAPORE).is_null(), "{v}");
        let gone = v["gone"].as_array().unwrap();
        assert_eq!(gone.len(), 1, "{v}");
        assert_eq!(gone[0]["status"], "down");
        assert_eq!(gone[0]["edge"]["id"], SINGAPORE);
        assert_eq!(gone[0]["edge"]["city"], "SIN");
        assert_eq!(gone[0]["edge"]["server_name"], "edge4.rtn.test");
        let gone_at = gone[0]["gone_at_ms"].as_u64().unwrap();
        assert!(gone[0]["last_seen_ms"].as_u64().unwrap() <= gone_at);
        // Still down on later requests (the controller remembers).
        assert_eq!(mesh_json().await["gone"][0]["gone_at_ms"], gone_at);

        let sin = edges().into_iter().find(|e| e.id == SINGAPORE).unwrap();
        m.store
            .put(&keys.edge(SINGAPORE), sin.to_bytes(), None)
            .await
            .unwrap();
        wait_until("the mirror has Singapore again", || {
            m.mesh.read().edges.contains_key(&SINGAPORE)
        })
        .await;
        let v = mesh_json().await;
        assert_eq!(v["gone"], json!([]), "{v}");
        assert_eq!(entry(&v, SINGAPORE)["status"], "serving");
    }

    fn history_req(query: &str, auth: Option<&str>) -> Request<()> {
        let b = Request::builder().uri(format!("/v1/links/history{query}"));
        match auth {
            Some(a) => b.header("authorization", a),
            None => b,
        }
        .body(())
        .unwrap()
    }

    #[tokio::test]
    async fn link_history_needs_the_admin_token_and_valid_edges() {
        let m = mesh().await;
        let mut api = api(&m);
        let q = "?from=1&to=2";
        send(&api, PEER, history_req(q, None))
            .await
            .assert_error(StatusCode::FORBIDDEN, "admin_disabled");
        api.admin_token = Some(ADMIN_TOKEN.into());
        let ok = format!("Bearer {ADMIN_TOKEN}");
        for auth in [None, Some("Bearer nope"), Some(ADMIN_TOKEN)] {
            send(&api, PEER, history_req(q, auth))
                .await
                .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        }
        for (query, code) in [
            ("", "missing_parameter"),
            ("?from=1", "missing_parameter"),
            ("?to=2", "missing_parameter"),
            ("?from=1&to=x", "invalid_edge"),
            ("?from=-1&to=2", "invalid_edge"),
            ("?from=1&to=99999999999", "invalid_edge"),
            ("?from=1&to=2&limit=5", "unknown_parameter"),
        ] {
            send(&api, PEER, history_req(query, Some(&ok)))
                .await
                .assert_error(StatusCode::BAD_REQUEST, code);
        }

        // Nothing sampled yet: an untracked, empty history.
        let v = send(&api, PEER, history_req(q, Some(&ok))).await.ok_json();
        assert_eq!(v["tracked"], false);
        assert_eq!(v["samples"], json!([]));

        // Three samples of the mirrored view, 2 s apart.
        let t = now_ms();
        for i in 0..3 {
            api.observer.observe(&m.mesh.read(), t + i * 2_000);
        }
        let v = send(&api, PEER, history_req(q, Some(&ok))).await.ok_json();
        assert_eq!(v["from"], LONDON);
        assert_eq!(v["to"], FRANKFURT);
        assert_eq!(v["tracked"], true);
        assert_eq!(v["interval_ms"], 2_000);
        let samples = v["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 3, "{v}");
        assert_eq!(
            samples[0],
            json!({"t_ms": samples[0]["t_ms"], "rtt_ms": 9.5, "jitter_ms": 0.4, "loss": 0.01, "alive": true})
        );
        let times: Vec<u64> = samples
            .iter()
            .map(|s| s["t_ms"].as_u64().unwrap())
            .collect();
        assert_eq!(times[1] - times[0], 2_000);
        assert_eq!(times[2] - times[1], 2_000);
        // The dead link's samples say so; the other direction was never
        // probed.
        let v = send(&api, PEER, history_req("?from=1&to=3", Some(&ok)))
            .await
            .ok_json();
        assert_eq!(v["samples"][0]["alive"], false);
        let v = send(&api, PEER, history_req("?from=2&to=1", Some(&ok)))
            .await
            .ok_json();
        assert_eq!(v["tracked"], false);
    }

    #[tokio::test]
    async fn serving_samples_the_mesh_for_the_history() {
        let m = mesh().await;
        let mut api = Api::new(
            m.mesh.clone(),
            LeaderState::default(),
            "eu".into(),
            None,
            100,
        );
        api.observer = Arc::new(crate::dashboard::Observer::new(
            crate::dashboard::ObserverLimits {
                interval: Duration::from_millis(50),
                ..Default::default()
            },
        ));
        let api = Arc::new(api);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = tokio::spawn(api.clone().serve(listener));
        wait_until("a few samples", || {
            api.observer.history(1, 2).samples.len() >= 3
        })
        .await;
        // Stopping the server stops the sampler.
        server.abort();
        let _ = server.await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = api.observer.history(1, 2).samples.len();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(api.observer.history(1, 2).samples.len(), n);
    }
}
