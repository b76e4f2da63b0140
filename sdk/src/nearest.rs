//! Finding the nearest edge: ask a region controller for a shortlist, probe
//! each candidate, connect to the fastest and keep the runner-up for
//! failover; later probes move the client only for a clear improvement.
//!
//! The controller ranks edges by GeoIP distance and load
//! (`GET /v1/edges/nearest`, see docs/control-plane.md); GeoIP is often off
//! by a country or more, so the client measures before it trusts the ranking.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use protocol::framing::{FrameReader, FrameWriter};
use protocol::pb::{self, client_frame::Kind as CK, server_frame::Kind as SK};
use serde::Deserialize;
use tokio::time::Instant;

use crate::config::EdgeCandidate;
use crate::error::SdkError;

/// Probe round trips per candidate. The minimum of three filters out a
/// round trip that met a queue; more would mostly cost time.
pub const PROBES_PER_CANDIDATE: usize = 3;

/// A better edge must be faster by at least this much...
pub const SWITCH_MIN_GAIN: Duration = Duration::from_millis(10);
/// ...and take at most this share of the current edge's RTT, as a fraction
/// (two thirds: a third faster): small relative gains are noise, and a
/// switch costs a reconnect.
pub const SWITCH_MAX_RATIO: (u32, u32) = (2, 3);

/// Largest nearest-edge answer accepted (a shortlist is a few hundred bytes).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Whether to leave the current edge (RTT `current`, `None` if it did not
/// answer the probes) for one measured at `best`. Both conditions must
/// hold, so the client never flaps between two edges whose RTTs are close.
pub fn should_switch(current: Option<Duration>, best: Duration) -> bool {
    match current {
        None => true,
        Some(cur) => {
            let (num, den) = SWITCH_MAX_RATIO;
            best + SWITCH_MIN_GAIN <= cur && best * den <= cur * num
        }
    }
}

/// Candidates ordered by measured RTT, fastest first; those that did not
/// answer go last in their original order.
pub fn rank(
    measured: Vec<(EdgeCandidate, Option<Duration>)>,
) -> Vec<(EdgeCandidate, Option<Duration>)> {
    let mut m = measured;
    // Stable: equal RTTs and unanswered candidates keep the controller's order.
    m.sort_by_key(|(_, rtt)| rtt.unwrap_or(Duration::MAX));
    m
}

#[derive(Deserialize)]
struct NearestAnswer {
    edges: Vec<NearestEdge>,
}

#[derive(Deserialize)]
struct NearestEdge {
    addr: String,
    server_name: String,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

/// Ask a region controller (`http://host:port`) for up to `limit` edges near
/// this client, best first by the controller's estimate.
///
/// Plain HTTP: the answer holds only public edge addresses, and the edges'
/// own certificates are verified when the client connects to them.
pub async fn fetch_shortlist(
    controller: &str,
    limit: usize,
    timeout: Duration,
    local_ip: Option<std::net::IpAddr>,
) -> Result<Vec<EdgeCandidate>, SdkError> {
    let fail = |m: String| SdkError::Controller(m);
    let uri: hyper::Uri = controller
        .parse()
        .map_err(|e| SdkError::Invalid(format!("controller URL {controller:?}: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(SdkError::Invalid(format!(
            "controller URL {controller:?}: only http:// is supported"
        )));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| SdkError::Invalid(format!("controller URL {controller:?} has no host")))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let base = uri.path().trim_end_matches('/');
    let path = format!("{base}/v1/edges/nearest?limit={limit}");
    let fetch = async {
        let addr = tokio::net::lookup_host((authority.host(), port))
            .await
            .map_err(|e| fail(format!("resolving {authority}: {e}")))?
            .next()
            .ok_or_else(|| fail(format!("{authority} has no address")))?;
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| fail(format!("socket: {e}")))?;
        if let Some(ip) = local_ip {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| fail(format!("binding {ip}: {e}")))?;
        }
        let stream = socket
            .connect(addr)
            .await
            .map_err(|e| fail(format!("connecting to {addr}: {e}")))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| fail(format!("HTTP to {addr}: {e}")))?;
        let driver = tokio::spawn(conn);
        let req = hyper::Request::get(&path)
            .header(hyper::header::HOST, authority.as_str())
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| fail(format!("GET {path}: {e}")))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| fail(format!("reading the answer: {e}")))?
            .to_bytes();
        driver.abort();
        Ok::<_, SdkError>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| fail(format!("no answer from {controller} within {timeout:?}")))??;
    if !status.is_success() {
        let detail = serde_json::from_slice::<ErrorAnswer>(&body)
            .map(|e| format!("{}: {}", e.error.code, e.error.message))
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        return Err(fail(format!("{status}: {detail}")));
    }
    let answer: NearestAnswer = serde_json::from_slice(&body)
        .map_err(|e| fail(format!("malformed nearest-edge answer: {e}")))?;
    let mut edges = Vec::new();
    for e in answer.edges {
        let addr: SocketAddr = match e.addr.parse() {
            Ok(a) => a,
            Err(_) => match tokio::net::lookup_host(e.addr.as_str()).await {
                Ok(mut a) => match a.next() {
                    Some(a) => a,
                    None => continue,
                },
                Err(_) => continue,
            },
        };
        if e.server_name.is_empty() {
            continue;
        }
        edges.push(EdgeCandidate {
            addr,
            server_name: e.server_name,
        });
    }
    if edges.is_empty() {
        return Err(fail(
            "the controller knows no edge that serves clients".into(),
        ));
    }
    Ok(edges)
}

/// Measure the RTT to one edge: a QUIC handshake on the client ALPN, then
/// `probes` keepalive round trips on the control stream, one at a time; the
/// smallest wins. `None` if the edge does not answer within `limit`.
pub(crate) async fn probe(
    endpoint: &quinn::Endpoint,
    quic: &quinn::ClientConfig,
    edge: &EdgeCandidate,
    probes: usize,
    limit: Duration,
) -> Option<Duration> {
    let deadline = Instant::now() + limit;
    let conn = tokio::time::timeout_at(
        deadline,
        endpoint
            .connect_with(quic.clone(), edge.addr, &edge.server_name)
            .ok()?,
    )
    .await
    .ok()?
    .ok()?;
    let measured = tokio::time::timeout_at(deadline, keepalive_rtts(&conn, probes)).await;
    conn.close(0u32.into(), b"probe done");
    match measured {
        Ok(Some(rtt)) => Some(rtt),
        // Too slow for every keepalive: the handshake's RTT still tells.
        _ => None,
    }
}

async fn keepalive_rtts(conn: &quinn::Connection, probes: usize) -> Option<Duration> {
    let (send, recv) = conn.open_bi().await.ok()?;
    let (mut out, mut frames) = (FrameWriter::new(send), FrameReader::new(recv));
    let mut best: Option<Duration> = None;
    for _ in 0..probes.max(1) {
        let nonce: u64 = rand::random();
        let keepalive = pb::ClientFrame {
            kind: Some(CK::Keepalive(pb::Keepalive { nonce })),
        };
        let sent = Instant::now();
        out.send(&keepalive).await.ok()?;
        loop {
            let f = frames.next_frame::<pb::ServerFrame>().await.ok()??;
            if let Some(SK::KeepaliveAck(a)) = f.kind {
                if a.nonce == nonce {
                    break;
                }
            }
        }
        let rtt = sent.elapsed();
        best = Some(best.map_or(rtt, |b| b.min(rtt)));
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn switches_only_for_a_clear_improvement() {
        assert!(
            should_switch(None, ms(80)),
            "a dead current edge is always left"
        );
        assert!(should_switch(Some(ms(90)), ms(40)));
        assert!(
            !should_switch(Some(ms(90)), ms(70)),
            "20 ms but not a third faster"
        );
        assert!(
            !should_switch(Some(ms(12)), ms(4)),
            "a third faster but under 10 ms"
        );
        assert!(should_switch(Some(ms(30)), ms(20)));
        assert!(!should_switch(Some(ms(30)), ms(21)));
    }

    #[test]
    fn ranking_puts_the_fastest_first_and_the_silent_last() {
        let c = |p: u16| EdgeCandidate {
            addr: SocketAddr::from(([127, 0, 0, 1], p)),
            server_name: "e".into(),
        };
        let r = rank(vec![
            (c(1), None),
            (c(2), Some(ms(30))),
            (c(3), Some(ms(10))),
            (c(4), None),
        ]);
        let ports: Vec<u16> = r.iter().map(|(e, _)| e.addr.port()).collect();
        assert_eq!(ports, [3, 2, 1, 4]);
    }

    proptest! {
        /// Never flapping: after a switch from A to B, B is never
        /// switched back to A on the same measurements.
        #[test]
        fn a_switch_is_never_undone_by_the_same_figures(a in 1u64..2_000, b in 1u64..2_000) {
            if should_switch(Some(ms(a)), ms(b)) {
                prop_assert!(!should_switch(Some(ms(b)), ms(a)));
            }
        }
    }
}
