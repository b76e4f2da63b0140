//! `GET /v1/links/history?from=<id>&to=<id>`: the operator's history of
//! one probed link (bearer token): the samples of its RTT, jitter, loss and
//! liveness that the controller's [`crate::dashboard::Observer`] took over
//! the last minutes, oldest first.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};

use super::{json_response, Api, ApiError};

impl Api {
    pub(super) fn link_history(
        &self,
        query: Option<&str>,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::api::test_support::*;
    use crate::controller::LeaderState;
    use control::clock::now_ms;

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
