//! The admin HTTP server, on its own port so it can stay internal:
//! `/metrics` (Prometheus text), `/healthz` (the process runs), `/readyz`
//! (the edge accepts clients; 503 while draining), and on an edge built
//! with the `netem` feature and running a `[netem]` WAN emulation,
//! `GET`/`PUT /netem` (its link rules as JSON), for the admin token only.

use std::sync::Arc;

use http_body_util::Full;
#[cfg(feature = "netem")]
use http_body_util::{BodyExt, Limited};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::edge::EdgeCore;

pub async fn serve(core: Arc<EdgeCore>, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let core = core.clone();
        let tasks = core.tasks.clone();
        // Ends with the connection, or when the edge stops (a keep-alive
        // connection may stay open for as long as its client likes).
        tasks.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let core = core.clone();
                async move {
                    #[cfg(feature = "netem")]
                    let resp = if req.uri().path() == "/netem" {
                        netem(&core, req).await
                    } else {
                        route(&core, req)
                    };
                    #[cfg(not(feature = "netem"))]
                    let resp = route(&core, req);
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn route(core: &EdgeCore, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            crate::metrics::render(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if core.is_draining() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".to_string(),
        ),
        "/readyz" => (StatusCode::OK, "text/plain", "ready\n".to_string()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    reply(status, ctype, body)
}

/// Largest `PUT /netem` body: thousands of rules.
#[cfg(feature = "netem")]
const MAX_NETEM_BODY: usize = 1 << 20;

/// Why an operator request is refused, if it is: 403 when the edge has no
/// admin token (operator endpoints are off), 401 when the request lacks it.
#[cfg(feature = "netem")]
fn refusal<B>(core: &EdgeCore, req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    let token = core
        .cfg
        .edge
        .admin_token_env
        .as_ref()
        .and_then(|name| std::env::var(name).ok())
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Some(reply(
            StatusCode::FORBIDDEN,
            "text/plain",
            "no admin token is configured on this edge (edge.admin_token_env)\n".into(),
        ));
    };
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    (!control::admin::bearer_matches(given, &token)).then(|| {
        reply(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "a valid bearer token is required\n".into(),
        )
    })
}

#[cfg(feature = "netem")]
async fn netem(core: &EdgeCore, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if let Some(refused) = refusal(core, &req) {
        return refused;
    }
    let Some(wan) = &core.wan else {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "this edge runs without WAN emulation\n".into(),
        );
    };
    match *req.method() {
        hyper::Method::GET => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string(&wan.rules()).unwrap_or_default(),
        ),
        hyper::Method::PUT => {
            let body = match Limited::new(req.into_body(), MAX_NETEM_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        format!("reading the body: {e}\n"),
                    )
                }
            };
            let rules: Vec<netem::LinkRule> = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        format!("not a JSON list of link rules: {e}\n"),
                    )
                }
            };
            match wan.replace(rules) {
                Ok(()) => {
                    tracing::info!(
                        edge = core.id,
                        rules = wan.rules().len(),
                        "WAN emulation rules replaced"
                    );
                    reply(StatusCode::OK, "text/plain", "ok\n".into())
                }
                Err(e) => reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
            }
        }
        _ => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET or PUT\n".into(),
        ),
    }
}

fn reply(status: StatusCode, ctype: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}
