//! WebTransport: browsers reach the edge over HTTP/3 (ALPN `h3`) on the
//! same UDP port and quinn endpoint as native clients and relay links.
//!
//! A WebTransport session is a client link like a native one
//! (docs/protocol.md §13): after the HTTP/3 SETTINGS exchange and an
//! extended CONNECT to [`WEBTRANSPORT_PATH`], the browser opens one
//! bidirectional stream for its control frames and sends media as
//! datagrams, byte for byte as a native client does. The token rides in
//! the `Join` frame, never in the URL (URLs end up in logs and histories).

use std::time::Duration;

use protocol::alpn::WEBTRANSPORT_PATH;
use protocol::pb::ErrorCode;

use crate::edge::EdgeCore;
use crate::session::{close_quic, ClientLink};

/// How long a refused request's connection stays open for the 404 to
/// reach the browser before the edge closes it.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// Complete the HTTP/3 handshake of `conn` and accept its WebTransport
/// session if it asks for the client protocol; `None` (the connection
/// closed) otherwise. Bounded by the join timeout, like a native client's
/// wait for its control stream.
pub async fn accept(core: &EdgeCore, conn: quinn::Connection) -> Option<ClientLink> {
    let timeout = Duration::from_millis(core.cfg.limits.join_timeout_ms);
    let request =
        match tokio::time::timeout(timeout, web_transport_quinn::Request::accept(conn.clone()))
            .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                core.metrics.protocol_error("webtransport_handshake");
                tracing::debug!(edge = core.id, error = %e, "WebTransport handshake failed");
                close_quic(&conn, ErrorCode::MalformedFrame, "bad HTTP/3 handshake");
                return None;
            }
            Err(_) => {
                core.metrics.protocol_error("join_timeout");
                close_quic(
                    &conn,
                    ErrorCode::JoinTimeout,
                    "no WebTransport request in time",
                );
                return None;
            }
        };
    if request.url.path() != WEBTRANSPORT_PATH {
        core.metrics.protocol_error("webtransport_path");
        crate::warn_throttled!(core.log, "webtransport_path", edge = core.id, remote = %conn.remote_address(), path = request.url.path(), "WebTransport request for an unknown path");
        let _ = request
            .reject(web_transport_quinn::http::StatusCode::NOT_FOUND)
            .await;
        let _ = tokio::time::timeout(REFUSAL_LINGER, conn.closed()).await;
        close_quic(&conn, ErrorCode::Unspecified, "unknown WebTransport path");
        return None;
    }
    match request.ok().await {
        Ok(session) => Some(session),
        Err(e) => {
            tracing::debug!(edge = core.id, error = %e, "WebTransport session not established");
            None
        }
    }
}
