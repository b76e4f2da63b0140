//! What the API's tests share: a mesh filled the way a running controller
//! fills it (records written to a store and mirrored, so a change in the
//! record format or the mirror shows in the tests), an API over it, and
//! requests that go straight to `Api::handle` (no sockets).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use protocol::EdgeId;
use serde_json::Value;
use topology::GeoIpDb;

use super::{Api, Face};
use crate::controller::LeaderState;
use crate::mesh::SharedMesh;
use control::keys::KeyLayout;
use control::records::{
    EdgeRecord, EdgeState, LoadRecord, ProbeLink, ProbeRecord, Record, RouteRecord, RoutesRecord,
};
use control::store::{ControlStore, MemoryStore};

pub(super) const GEOIP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/geoip/");
pub(super) const CITY_DB: &str = "GeoLite2-City-Test.mmdb";

// Networks of GeoLite2-City-Test.json.
/// 81.2.69.142/31: London, GB, 51.5142,-0.0931.
pub(super) const LONDON_IP: &str = "81.2.69.142";
/// 216.160.83.56/29: Milton (WA), US, 47.2513,-122.3149.
pub(super) const US_IP: &str = "216.160.83.57";
/// 175.16.199.0/24: Changchun, CN, 43.88,125.3228.
pub(super) const ASIA_IP: &str = "175.16.199.10";
/// 2001:218::/32: JP, 35.68536,139.75309 (no city).
pub(super) const JAPAN_IP6: &str = "2001:218::1";

pub(super) const LONDON: EdgeId = 1;
pub(super) const FRANKFURT: EdgeId = 2;
pub(super) const NEW_YORK: EdgeId = 3;
pub(super) const SINGAPORE: EdgeId = 4;
/// Registered but never reported load: not healthy. In Paris, so that
/// listing it would push Frankfurt out of a London client's top two.
pub(super) const PARIS_UNHEALTHY: EdgeId = 5;
/// Draining, in London and idle: listing it would put it first.
pub(super) const LONDON_DRAINING: EdgeId = 6;
pub(super) const ELIGIBLE: [EdgeId; 4] = [LONDON, FRANKFURT, NEW_YORK, SINGAPORE];

pub(super) const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub(super) fn edge(id: EdgeId, region: &str, city: &str, lat: f64, lon: f64) -> EdgeRecord {
    EdgeRecord {
        id,
        region: region.into(),
        city: city.into(),
        lat,
        lon,
        addr: SocketAddr::from(([198, 51, 100, id as u8], 4433)),
        server_name: format!("edge{id}.rtn.test"),
        cert_sha256: vec![],
        admin_addr: None,
        capacity: 1000,
        state: EdgeState::Serving,
        version: "test".into(),
        started_at_ms: 1,
    }
}

pub(super) fn edges() -> Vec<EdgeRecord> {
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
pub(super) fn loads() -> Vec<(EdgeId, f64)> {
    vec![
        (LONDON, 0.2),
        (FRANKFURT, 0.3),
        (NEW_YORK, 0.1),
        (SINGAPORE, 0.4),
        (LONDON_DRAINING, 0.0),
    ]
}

pub(super) fn probe() -> ProbeRecord {
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

pub(super) fn routes() -> RoutesRecord {
    RoutesRecord {
        edge: LONDON,
        region: "eu".into(),
        controller: "ctl-a".into(),
        computed_at_ms: 20,
        routes: vec![RouteRecord {
            dest: NEW_YORK,
            best: vec![LONDON, FRANKFURT, NEW_YORK],
            backup: Some(vec![LONDON, NEW_YORK]),
            cost_us: None,
            backup_cost_us: None,
        }],
    }
}

/// A store holding the records above and a mirror of it.
pub(super) struct Mesh {
    pub(super) mesh: SharedMesh,
    pub(super) store: Arc<MemoryStore>,
    mirror: tokio::task::JoinHandle<()>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.mirror.abort();
    }
}

pub(super) async fn mesh() -> Mesh {
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

pub(super) async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(super) fn db(name: &str) -> GeoIpDb {
    GeoIpDb::open(format!("{GEOIP_DIR}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// An API over `m` with the City test database and a rate limit high
/// enough that only the rate-limit test meets it.
pub(super) fn api(m: &Mesh) -> Api {
    api_with_rate(m, 10_000)
}

pub(super) fn api_with_rate(m: &Mesh, lookups_per_s: u32) -> Api {
    Api::new(
        m.mesh.clone(),
        LeaderState::default(),
        "eu".into(),
        Some(db(CITY_DB)),
        lookups_per_s,
    )
}

pub(super) fn peer(s: &str) -> SocketAddr {
    s.parse().expect("test socket address")
}

pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) content_type: String,
    pub(super) body: Bytes,
}

impl Reply {
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A 200 with a JSON body.
    pub(super) fn ok_json(&self) -> Value {
        let v = self.json();
        assert_eq!(self.status, StatusCode::OK, "{v}");
        assert_eq!(self.content_type, "application/json");
        v
    }

    /// The documented error shape, exactly: `{"error":{"code","message"}}`.
    pub(super) fn assert_error(&self, status: StatusCode, code: &str) {
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

pub(super) async fn send(api: &Api, from: &str, req: Request<()>) -> Reply {
    send_on(api, Face::All, from, req).await
}

/// `req` arriving on a listener of `face`.
pub(super) async fn send_on(api: &Api, face: Face, from: &str, req: Request<()>) -> Reply {
    let resp = api.handle_on(face, peer(from), &req);
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

pub(super) async fn get(api: &Api, from: &str, uri: &str) -> Reply {
    send(api, from, Request::builder().uri(uri).body(()).unwrap()).await
}

/// A peer whose address is in no database (documentation range).
pub(super) const PEER: &str = "192.0.2.10:40000";

pub(super) fn ids(v: &Value) -> Vec<EdgeId> {
    v["edges"]
        .as_array()
        .expect("edges array")
        .iter()
        .map(|e| e["id"].as_u64().expect("id") as EdgeId)
        .collect()
}

pub(super) fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

pub(super) fn with_header(uri: &str, name: &str, value: &str) -> Request<()> {
    Request::builder()
        .uri(uri)
        .header(name, value)
        .body(())
        .unwrap()
}

pub(super) fn bearer(value: &str) -> Request<()> {
    with_header("/v1/mesh", "authorization", value)
}

pub(super) fn history_req(query: &str, auth: Option<&str>) -> Request<()> {
    let b = Request::builder().uri(format!("/v1/links/history{query}"));
    match auth {
        Some(a) => b.header("authorization", a),
        None => b,
    }
    .body(())
    .unwrap()
}
