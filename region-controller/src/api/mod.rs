//! The controller's HTTP API (hyper, JSON): the server, the routing of
//! requests to their endpoint, and the answers every endpoint shares.
//!
//! - `GET /v1/edges/nearest?ip=<addr>&limit=<k>` (`nearest.rs`): public,
//!   rate-limited per client address. Edges ranked for the client by GeoIP
//!   distance, health and load. Without `ip`, the caller's address is used,
//!   or the configured client-address header when the caller is a trusted
//!   proxy.
//! - `GET /v1/mesh` (`mesh_view.rs`): operator endpoint (bearer token):
//!   edges with their status, probed links, the routes currently published,
//!   and edges that recently left the registry (`gone`, shown as down).
//! - `GET /v1/links/history?from=<id>&to=<id>` (`history.rs`): operator
//!   endpoint (bearer token): the last minutes of one probed link's RTT,
//!   jitter and loss.
//! - `GET /`: the path-quality dashboard (static page compiled into the
//!   binary; it reads the two operator endpoints with the token the
//!   operator enters, see [`crate::dashboard`]).
//! - `/metrics`, `/healthz`, `/readyz` (ready once the store view is synced).
//!
//! Two faces ([`Face`]): the public listener (`[api] listen`) serves only
//! what clients and load balancers need (the lookup, `/healthz`,
//! `/readyz`); the admin listener (`[admin] listen`, an internal address)
//! serves the operator endpoints, the dashboard and `/metrics` (and health
//! too). A path of the other face is `404` on each, so the internet never
//! reaches the operator surface even with a leaked token, and the public
//! port can be opened to the world alone.
//!
//! Who may ask what (`auth.rs`): the operator's bearer token, the client's
//! address behind trusted proxies, and the per-client lookup rate limit;
//! which web pages may call the lookup (`cors.rs`, `api.cors_origins`).
//!
//! Served over HTTPS when the API has a certificate ([`Api::tls`]: files
//! reloaded when they change, `api.tls_cert` / `api.tls_key`), else plain
//! HTTP (a controller behind a TLS-terminating proxy, the lab).
//!
//! Errors are `{"error": {"code": "...", "message": "..."}}` with a 4xx/5xx
//! ([`protocol::api::ErrorAnswer`]).

mod auth;
pub mod cors;
mod history;
mod mesh_view;
mod nearest;
#[cfg(test)]
mod test_support;

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use protocol::api::ErrorAnswer;
use serde::Serialize;
use topology::GeoIpDb;
use tracing::{info, warn};

use crate::controller::LeaderState;
use crate::dashboard::{self, Observer, ObserverLimits};
use crate::mesh::SharedMesh;

pub use auth::parse_proxies;
pub use mesh_view::PROBE_STALE_MS;
pub use nearest::{
    open_geoip_db, watch_geoip, GeoIpSlot, DEFAULT_LIMIT, GEOIP_CHECK_EVERY, MAX_LIMIT,
};

use auth::Limiter;
use control::certs::ClientCerts;
pub use cors::CorsPolicy;
use cors::Verdict;
use nearest::nearest_outcome;

/// How long a connection may take to send a request's headers, and how long
/// an idle keep-alive connection is kept: without a bound, a public endpoint
/// keeps every silent or trickling connection (and its task and socket)
/// forever. 10 s is ample for one request line and a few headers.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Which endpoints a listener serves (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Face {
    /// Clients and load balancers: the lookup and health.
    Public,
    /// Operators: `/v1/mesh`, link history, the dashboard, `/metrics`, and
    /// health.
    Admin,
    /// Everything on one listener: in-process labs and tests only (the
    /// controller binary refuses an admin listener on the public address).
    All,
}

impl Face {
    /// Whether this face serves `path` (a served path or not).
    fn serves(self, path: &str) -> bool {
        let public = matches!(path, "/v1/edges/nearest" | "/healthz" | "/readyz");
        let admin = matches!(
            path,
            "/v1/mesh" | "/v1/links/history" | "/metrics" | "/healthz" | "/readyz"
        ) || dashboard::asset(path).is_some();
        match self {
            Face::Public => public,
            Face::Admin => admin,
            Face::All => public || admin,
        }
    }

    /// The label of its requests in `rtn_controller_api_requests_total`.
    fn label(self) -> &'static str {
        match self {
            Face::Public => "public",
            Face::Admin => "admin",
            Face::All => "all",
        }
    }
}

/// One controller's HTTP API: the mesh view it answers from, and its
/// settings (set the public fields before [`Api::serve`]).
pub struct Api {
    pub mesh: SharedMesh,
    pub leader: LeaderState,
    pub region: String,
    /// The GeoIP database (none: lookups rank without a location).
    pub geoip: Arc<GeoIpSlot>,
    /// The file `geoip` came from: while [`Api::serve`] runs, checked every
    /// `geoip_check_every` and reloaded when replaced ([`watch_geoip`]).
    pub geoip_file: Option<std::path::PathBuf>,
    /// See [`GEOIP_CHECK_EVERY`] (the default).
    pub geoip_check_every: std::time::Duration,
    pub client_ip_header: Option<hyper::header::HeaderName>,
    pub trusted_proxies: Vec<IpNet>,
    pub admin_token: Option<String>,
    /// See [`HEADER_READ_TIMEOUT`] (the default).
    pub header_read_timeout: std::time::Duration,
    /// Gone edges and link history, sampled from `mesh` while [`Api::serve`]
    /// runs.
    pub observer: Arc<Observer>,
    /// Web pages allowed to call the nearest-edge lookup.
    pub cors: CorsPolicy,
    /// The HTTPS certificate (kept fresh while [`Api::serve`] runs); `None`:
    /// plain HTTP.
    pub tls: Option<Arc<ClientCerts>>,
    limiter: Limiter,
}

impl Api {
    pub fn new(
        mesh: SharedMesh,
        leader: LeaderState,
        region: String,
        geoip: Option<GeoIpDb>,
        lookups_per_s: u32,
    ) -> Self {
        Api {
            mesh,
            leader,
            region,
            geoip: Arc::new(GeoIpSlot::new(geoip)),
            geoip_file: None,
            geoip_check_every: GEOIP_CHECK_EVERY,
            client_ip_header: None,
            trusted_proxies: Vec::new(),
            admin_token: None,
            header_read_timeout: HEADER_READ_TIMEOUT,
            observer: Arc::new(Observer::new(ObserverLimits::default())),
            cors: CorsPolicy::default(),
            tls: None,
            limiter: auth::lookup_limiter(lookups_per_s),
        }
    }

    /// Serve every endpoint on one listener ([`Face::All`]: labs, tests).
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        self.serve_faces(vec![(listener, Face::All)]).await
    }

    /// Serve each listener with its face, until dropped. The HTTPS
    /// certificate ([`Api::tls`]) is the public lookup's (browsers call
    /// it): the admin face stays plain HTTP on its internal address, as the
    /// edge's admin port does.
    pub async fn serve_faces(self: Arc<Self>, listeners: Vec<(tokio::net::TcpListener, Face)>) {
        // The dashboard's memory is sampled while the API is served, and
        // stops with it; so do the certificate and GeoIP reloads.
        struct AbortOnDrop(tokio::task::JoinHandle<()>);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let _sampler = AbortOnDrop(tokio::spawn(self.observer.clone().run(self.mesh.clone())));
        let _reloader = self
            .tls
            .clone()
            .map(|t| AbortOnDrop(tokio::spawn(t.maintain("controller-api".into()))));
        let _geoip_watch = self.geoip_file.clone().map(|path| {
            let watch = watch_geoip(self.geoip.clone(), path, self.geoip_check_every);
            AbortOnDrop(tokio::spawn(watch))
        });
        let api = self.clone();
        let _sweep = AbortOnDrop(tokio::spawn(async move {
            let mut sweep = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                sweep.tick().await;
                // Forget clients that have not asked for a while, so the
                // limiter's memory stays bounded by recent clients.
                api.limiter.retain_recent();
            }
        }));
        let acceptor = self.tls.clone().map(https_acceptor);
        let mut loops = tokio::task::JoinSet::new();
        for (listener, face) in listeners {
            let tls = acceptor.clone().filter(|_| face != Face::Admin);
            loops.spawn(self.clone().accept(listener, face, tls));
        }
        while loops.join_next().await.is_some() {}
    }

    async fn accept(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        face: Face,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
    ) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let api = self.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let timeout = api.header_read_timeout;
                match acceptor {
                    None => api.serve_connection(face, peer, stream).await,
                    // The handshake is bounded like the headers that follow.
                    Some(a) => match tokio::time::timeout(timeout, a.accept(stream)).await {
                        Ok(Ok(tls)) => api.serve_connection(face, peer, tls).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    },
                }
            });
        }
    }

    /// Serve HTTP/1.1 requests on one connection (plain or TLS).
    async fn serve_connection<I>(self: Arc<Self>, face: Face, peer: SocketAddr, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let timeout = self.header_read_timeout;
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let api = self.clone();
            async move {
                if !walks_the_mesh(req.uri().path()) {
                    return Ok::<_, std::convert::Infallible>(api.handle_on(face, peer, &req));
                }
                // On a blocking thread: these documents walk every link of
                // the mesh (540 KB for a 60-edge full mesh), which on a
                // runtime worker would hold up the nearest-edge lookups, the
                // watches and the election's keepalives.
                let head = Request::from_parts(req.into_parts().0, ());
                let answer =
                    tokio::task::spawn_blocking(move || api.handle_on(face, peer, &head)).await;
                Ok(answer.unwrap_or_else(|_| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "the document could not be built",
                    )
                    .response()
                }))
            }
        });
        // hyper enforces the header read timeout only with a timer.
        let _ = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(timeout)
            .serve_connection(TokioIo::new(io), svc)
            .await;
    }

    /// Route one request as [`Face::All`] would.
    pub fn handle<B>(&self, peer: SocketAddr, req: &Request<B>) -> Response<Full<Bytes>> {
        self.handle_on(Face::All, peer, req)
    }

    /// Route one request arriving on a listener of `face` (bodies are never
    /// read: every endpoint is a GET).
    pub fn handle_on<B>(
        &self,
        face: Face,
        peer: SocketAddr,
        req: &Request<B>,
    ) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        // Cross-origin pages may call the public lookup only.
        let cors = match path {
            "/v1/edges/nearest" if face.serves(path) => self.cors.verdict(req),
            _ => Verdict::NotCors,
        };
        let resp = match (req.method(), path) {
            (_, p) if Face::All.serves(p) && !face.serves(p) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint on this listener",
            )),
            (&Method::OPTIONS, "/v1/edges/nearest") => self.cors.preflight(req),
            (&Method::GET, "/v1/edges/nearest") => match &cors {
                Verdict::Refused(origin) => Err(cors::refused(origin)),
                _ => self.nearest(peer, req),
            },
            (&Method::GET, "/v1/mesh") => self.authorized(req).and_then(|()| self.mesh_json()),
            (&Method::GET, "/v1/links/history") => self
                .authorized(req)
                .and_then(|()| self.link_history(req.uri().query())),
            (&Method::GET, p) if dashboard::asset(p).is_some() => Ok(static_asset(p)),
            (&Method::GET, "/metrics") => Ok(text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                crate::metrics::render(),
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
            (_, p) if Face::All.serves(p) => Err(ApiError::new(
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
        let mut resp = resp.unwrap_or_else(|e| e.response());
        if let Verdict::Allowed(origin) = &cors {
            cors::allow(&mut resp, origin);
        }
        let endpoint = match path {
            "/v1/edges/nearest" | "/v1/mesh" | "/v1/links/history" => path.to_string(),
            p if dashboard::asset(p).is_some() => "dashboard".into(),
            _ => "other".into(),
        };
        metrics::counter!("rtn_controller_api_requests_total", "endpoint" => endpoint, "status" => resp.status().as_u16().to_string(), "face" => face.label()).increment(1);
        resp
    }
}

/// The TLS side of the API's HTTPS: its certificate (reloaded), HTTP/1.1.
fn https_acceptor(cert: Arc<ClientCerts>) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(cert);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(tls))
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

/// An error answer: its status, its code (docs/api.md lists them) and a
/// sentence for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// Operator documents built from the whole mesh: answered off the runtime's
/// workers ([`Api::serve`]).
fn walks_the_mesh(path: &str) -> bool {
    matches!(path, "/v1/mesh" | "/v1/links/history")
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
        json_response(self.status, &ErrorAnswer::new(self.code, self.message))
    }
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_string(body) {
        Ok(json) => text(status, "application/json", json),
        // Only maps with keys that are not strings fail, and no answer has
        // one; should one ever, the client still gets a JSON error.
        Err(e) => {
            warn!(error = %e, "an answer did not serialise");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json",
                r#"{"error":{"code":"internal_error","message":"the answer could not be encoded"}}"#
                    .into(),
            )
        }
    }
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
    use http_body_util::BodyExt;

    use super::*;
    use crate::api::test_support::*;
    use control::keys::KeyLayout;
    use control::store::MemoryStore;

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
    async fn each_face_serves_its_own_endpoints_only() {
        let m = mesh().await;
        let mut api = api(&m);
        api.admin_token = Some(ADMIN_TOKEN.into());
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let on = |face, path: &str| {
            let req = Request::builder()
                .uri(path)
                .header("authorization", &auth)
                .body(())
                .unwrap();
            send_on(&api, face, PEER, req)
        };
        let nearest = "/v1/edges/nearest?ip=81.2.69.160";
        let history = "/v1/links/history?from=1&to=2";
        let public = [nearest, "/healthz", "/readyz"];
        let admin = ["/v1/mesh", history, "/metrics", "/", "/dashboard/app.js"];
        for path in public {
            let r = on(Face::Public, path).await;
            assert_ne!(r.status, StatusCode::NOT_FOUND, "public {path}");
        }
        for path in admin {
            // Even with the operator's token: the public port never reaches
            // the operator surface.
            on(Face::Public, path)
                .await
                .assert_error(StatusCode::NOT_FOUND, "not_found");
            let r = on(Face::Admin, path).await;
            assert_ne!(r.status, StatusCode::NOT_FOUND, "admin {path}");
        }
        on(Face::Admin, nearest)
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
        for path in ["/healthz", "/readyz"] {
            assert_ne!(on(Face::Admin, path).await.status, StatusCode::NOT_FOUND);
        }
        // A method the path does not take is still named as such where the
        // path is served, and not found where it is not.
        let post = |face| {
            let req = Request::builder()
                .method(Method::POST)
                .uri("/v1/mesh")
                .body(())
                .unwrap();
            send_on(&api, face, PEER, req)
        };
        post(Face::Admin)
            .await
            .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        post(Face::Public)
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }

    #[tokio::test]
    async fn other_methods_and_paths_get_json_errors() {
        let m = mesh().await;
        let api = api(&m);
        let nearest = "/v1/edges/nearest";
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
}
