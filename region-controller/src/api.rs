//! The controller's HTTP API (hyper, JSON).
//!
//! - `GET /v1/edges/nearest?ip=<addr>&limit=<k>`: public, rate-limited per
//!   client address. Edges ranked for the client by GeoIP distance, health
//!   and load. Without `ip`, the caller's address is used, or the
//!   configured client-address header when the caller is a trusted proxy.
//! - `GET /v1/mesh`: operator endpoint (bearer token): edges, probed links
//!   and the routes currently published.
//! - `/metrics`, `/healthz`, `/readyz` (ready once the store view is synced).
//!
//! Errors are `{"error": {"code": "...", "message": "..."}}` with a 4xx/5xx.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use serde::Serialize;
use serde_json::json;
use topology::{rank_nearest, EdgeCandidate, GeoIpDb, GeoPoint};
use tracing::{info, warn};

use crate::controller::LeaderState;
use crate::mesh::SharedMesh;
use crate::records::EdgeState;

/// Shortlist length when the request names none: the SDK probes these, and
/// four covers the nearest city plus fallbacks in neighbouring regions.
pub const DEFAULT_LIMIT: usize = 4;
/// Longest shortlist served: probing more costs clients more than it gains.
pub const MAX_LIMIT: usize = 16;

type Limiter = governor::DefaultKeyedRateLimiter<IpAddr>;

pub struct Api {
    pub mesh: SharedMesh,
    pub leader: LeaderState,
    pub region: String,
    pub geoip: Option<GeoIpDb>,
    pub client_ip_header: Option<hyper::header::HeaderName>,
    pub trusted_proxies: Vec<IpNet>,
    pub admin_token: Option<String>,
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
            limiter: Limiter::keyed(quota),
        }
    }

    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
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
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let api = api.clone();
                    async move { Ok::<_, std::convert::Infallible>(api.handle(peer, &req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
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
            (&Method::GET, "/metrics") => Ok(text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                crate::metrics::prometheus().render(),
            )),
            (&Method::GET, "/healthz") => Ok(text(StatusCode::OK, "text/plain", "ok\n".into())),
            (&Method::GET, "/readyz") if self.mesh.store_connected() => {
                Ok(text(StatusCode::OK, "text/plain", "ready\n".into()))
            }
            (&Method::GET, "/readyz") => Ok(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "store not synced\n".into(),
            )),
            (_, "/v1/edges/nearest" | "/v1/mesh" | "/metrics" | "/healthz" | "/readyz") => {
                Err(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use GET",
                ))
            }
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint",
            )),
        };
        let resp = resp.unwrap_or_else(|e| e.response());
        let endpoint = match path {
            "/v1/edges/nearest" | "/v1/mesh" => path.to_string(),
            _ => "other".into(),
        };
        metrics::counter!("rtn_controller_api_requests", "endpoint" => endpoint, "status" => resp.status().as_u16().to_string()).increment(1);
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
            .and_then(|v| v.strip_prefix("Bearer "));
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
        let edges: Vec<_> = view
            .edges
            .values()
            .map(|e| json!({"edge": e, "load": view.loads.get(&e.id)}))
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
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "region": self.region,
                "leader": self.leader.is_leader(),
                "store_connected": self.mesh.store_connected(),
                "edges": edges,
                "links": links,
                "routes": routes,
            }),
        ))
    }
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
