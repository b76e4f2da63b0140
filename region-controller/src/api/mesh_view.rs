//! `GET /v1/mesh`: the operator's view of the whole mesh (bearer token):
//! every registered edge with its load, status and reachability, edges that
//! recently left the registry, every probed link, when each prober last
//! reported, and the routes currently published. The dashboard draws it.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::json;

use super::{json_response, Api, ApiError};
use crate::mesh::MeshView;
use control::clock::now_ms;
use control::records::EdgeState;

/// A link whose prober's summary is older than this is stale: edges refresh
/// an unchanged summary every 30 s (`PROBE_REFRESH` in edge-node), so 45 s
/// means at least one refresh was missed.
pub const PROBE_STALE_MS: u64 = 45_000;

impl Api {
    pub(super) fn mesh_json(&self) -> Result<Response<Full<Bytes>>, ApiError> {
        #[derive(Serialize)]
        struct Link {
            from: u32,
            to: u32,
            rtt_ms: f64,
            jitter_ms: f64,
            loss: f64,
            alive: bool,
        }
        // A copy: the read lock held while the whole document is built
        // would hold up the store's watch, which writes the view.
        let view = self.mesh.snapshot();
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

#[cfg(test)]
mod tests {
    use protocol::EdgeId;
    use serde_json::Value;

    use super::*;
    use crate::api::test_support::*;
    use control::keys::KeyLayout;
    use control::records::Record;
    use control::store::ControlStore;

    #[tokio::test]
    async fn mesh_view_lists_edges_links_and_routes() {
        let m = mesh().await;
        let mut api = api(&m);
        api.admin_token = Some(ADMIN_TOKEN.into());
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
}
