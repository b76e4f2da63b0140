//! Who may ask what: the operator's bearer token on the operator endpoints,
//! the client's address (the peer, or the client-address header of a
//! trusted proxy), and the per-client rate limit of the public lookups.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use hyper::{Request, StatusCode};
use ipnet::IpNet;
use protocol::api::ClientIpSource;

use super::{Api, ApiError};

/// Lookups allowed per client address, keyed by that address.
pub(super) type Limiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// `lookups_per_s` per client address (at least 1), with bursts of twice
/// that.
pub(super) fn lookup_limiter(lookups_per_s: u32) -> Limiter {
    let rate = NonZeroU32::new(lookups_per_s.max(1)).expect("at least 1");
    let quota = governor::Quota::per_second(rate)
        .allow_burst(rate.saturating_mul(NonZeroU32::new(2).expect("2")));
    Limiter::keyed(quota)
}

/// Trusted proxies from the configuration: addresses or CIDR blocks.
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
    /// Whether the request carries the operator's bearer token.
    pub(super) fn authorized<B>(&self, req: &Request<B>) -> Result<(), ApiError> {
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
            .and_then(|v| v.to_str().ok());
        if control::admin::bearer_matches(given, token) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required",
            ))
        }
    }

    /// The client's address and where it came from.
    pub(super) fn client_ip<B>(
        &self,
        peer: SocketAddr,
        req: &Request<B>,
    ) -> Result<(IpAddr, ClientIpSource), ApiError> {
        let peer_ip = peer.ip().to_canonical();
        let Some(header) = &self.client_ip_header else {
            return Ok((peer_ip, ClientIpSource::Peer));
        };
        if !self.trusted_proxies.iter().any(|n| n.contains(&peer_ip)) {
            return Ok((peer_ip, ClientIpSource::Peer));
        }
        let Some(value) = req.headers().get(header) else {
            return Ok((peer_ip, ClientIpSource::Peer));
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
            .map(|ip| (ip.to_canonical(), ClientIpSource::Header))
            .map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_client_header",
                    format!("{header} does not start with an IP address"),
                )
            })
    }

    /// Refuse a client past its lookup budget.
    pub(super) fn within_rate(&self, client: IpAddr) -> Result<(), ApiError> {
        if self.limiter.check_key(&client).is_err() {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many lookups from this address; retry in a second",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use hyper::StatusCode;

    use super::*;
    use crate::api::test_support::*;

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

    #[tokio::test]
    async fn operator_endpoints_need_the_admin_token() {
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
    }
}
