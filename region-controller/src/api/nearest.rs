//! `GET /v1/edges/nearest`: the public nearest-edge lookup. Registered,
//! serving edges that report load, ranked for the client by GeoIP distance
//! and load (`topology::rank_nearest`); the answer is a
//! [`protocol::api::NearestAnswer`], which the SDK parses.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use protocol::api::{ClientIpSource, ClientLocation, NearestAnswer, NearestClient, NearestEdge};
use topology::{rank_nearest, EdgeCandidate, GeoIpDb, GeoIpError, GeoPoint};
use tracing::{info, warn};

use super::{json_response, Api, ApiError};
use control::records::EdgeState;

/// Shortlist length when the request names none: the SDK probes these, and
/// four covers the nearest city plus fallbacks in neighbouring regions.
pub const DEFAULT_LIMIT: usize = 4;
/// Longest shortlist served: probing more costs clients more than it gains.
pub const MAX_LIMIT: usize = 16;

/// How often the GeoIP file is checked for replacement. Why polling its
/// (mtime, length, inode): updaters (geoipupdate, a config-map mount)
/// replace the file by an atomic rename, which this catches without a
/// file-notification crate; a `stat` every 5 s costs nothing and a new
/// database (weekly at most) is in use within seconds.
pub const GEOIP_CHECK_EVERY: Duration = Duration::from_secs(5);

/// The GeoIP database the lookups use, swapped whole when its file is
/// replaced (lookups in flight finish on the database they started with).
#[derive(Debug, Default)]
pub struct GeoIpSlot(RwLock<Option<Arc<GeoIpDb>>>);

impl GeoIpSlot {
    pub fn new(db: Option<GeoIpDb>) -> Self {
        GeoIpSlot(RwLock::new(db.map(Arc::new)))
    }

    /// The database in use, if any.
    pub fn current(&self) -> Option<Arc<GeoIpDb>> {
        // A poisoned lock still holds a whole database (replacing it is
        // one assignment), so it is used as is.
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, db: GeoIpDb) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
    }
}

/// Opens the GeoIP database at `path` and verifies all of it, then logs
/// what it holds (type, IP version, the fields found), so that operators
/// see at start and on every reload which data the lookups use.
pub fn open_geoip_db(path: &Path) -> Result<GeoIpDb, GeoIpError> {
    let db = GeoIpDb::open(path)?;
    db.verify()?;
    info!(
        path = %path.display(),
        database_type = db.database_type(),
        ip_version = db.ip_version(),
        fields = %db.fields(),
        "GeoIP database opened"
    );
    Ok(db)
}

/// What identifies one version of a file: replacing it (rename or rewrite)
/// changes at least one of these. `None` while the file is missing.
fn file_stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// Reloads `slot` from `path` whenever the file changes, checked every
/// `every`. A new file that cannot be opened, fails verification or has no
/// location data is refused with a warning and the database in use stays;
/// a missing file (mid-replacement, say) is waited for. Runs until aborted
/// (the API's `serve` aborts it when it stops).
pub async fn watch_geoip(slot: Arc<GeoIpSlot>, path: PathBuf, every: Duration) {
    let mut seen = file_stamp(&path);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let stamp = file_stamp(&path);
        if stamp.is_none() || stamp == seen {
            continue;
        }
        seen = stamp;
        reload_geoip(&slot, &path).await;
    }
}

/// One reload: opening and verifying a full database takes seconds of CPU,
/// so it runs off the async workers.
async fn reload_geoip(slot: &GeoIpSlot, path: &Path) {
    let owned = path.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || open_geoip_db(&owned)).await;
    match opened {
        Ok(Ok(db)) => {
            slot.replace(db);
            geoip_reload("ok");
            info!(path = %path.display(), "GeoIP database reloaded");
        }
        Ok(Err(e)) => {
            geoip_reload("refused");
            warn!(path = %path.display(), error = %e, "new GeoIP database refused; keeping the one in use");
        }
        Err(e) => {
            geoip_reload("refused");
            warn!(path = %path.display(), error = %e, "GeoIP reload failed; keeping the database in use");
        }
    }
}

/// Count a GeoIP reload by result (ok or refused).
fn geoip_reload(result: &'static str) {
    metrics::counter!("rtn_controller_geoip_reloads_total", "result" => result).increment(1);
}

impl Api {
    pub(super) fn nearest<B>(
        &self,
        peer: SocketAddr,
        req: &Request<B>,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let (caller, caller_source) = self.client_ip(peer, req)?;
        self.within_rate(caller)?;
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
            Some(ip) => (ip.to_canonical(), ClientIpSource::Query),
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
        let edges: Vec<NearestEdge> = ranked
            .iter()
            .filter_map(|r| {
                let e = view.edges.get(&r.id)?;
                Some(NearestEdge {
                    addr: e.addr.to_string(),
                    cert_sha256: e.cert_sha256.clone(),
                    city: e.city.clone(),
                    distance_km: r.distance_km,
                    est_rtt_ms: r.est_rtt_ms,
                    id: e.id,
                    load: view.load_of(e.id),
                    region: e.region.clone(),
                    score: r.score,
                    server_name: e.server_name.clone(),
                })
            })
            .collect();
        nearest_outcome(match (edges.is_empty(), &location) {
            (true, _) => "no_edges",
            (false, None) => "unlocated",
            (false, Some(_)) => "ok",
        });
        let answer = NearestAnswer {
            client: NearestClient {
                ip: client_ip,
                location: location.map(|(p, city, country)| ClientLocation {
                    city,
                    country,
                    lat: p.lat(),
                    lon: p.lon(),
                }),
                source,
            },
            edges,
        };
        Ok(json_response(StatusCode::OK, &answer))
    }

    /// Where `ip` is; unknown or unlocatable addresses rank without a
    /// location (a spread over regions) rather than failing the request.
    fn locate(&self, ip: IpAddr) -> Option<(GeoPoint, Option<String>, Option<String>)> {
        let db = self.geoip.current()?;
        match db.lookup(ip) {
            Ok(Some(loc)) => Some((loc.point, loc.city, loc.country)),
            Ok(None) => None,
            Err(e) => {
                warn!(%ip, error = %e, "GeoIP lookup failed; ranking without a location");
                None
            }
        }
    }
}

/// Count a nearest-edge lookup by outcome (a bounded set: ok, unlocated,
/// no_edges, or an error code).
pub(super) fn nearest_outcome(outcome: &'static str) {
    metrics::counter!("rtn_controller_nearest_requests_total", "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::api::test_support::*;
    use crate::controller::LeaderState;

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
        // Sampling finds coordinates in it, so it opens (only `verify`, which
        // the binary runs, refuses it); the doubles of the located records
        // looked up here are malformed, so they fail to decode.
        let broken = db("GeoIP2-City-Test-Broken-Double-Format.mmdb");
        let api = Api::new(
            m.mesh.clone(),
            LeaderState::default(),
            "eu".into(),
            Some(broken),
            100,
        );
        for ip in ["2001:220::1", "214.0.0.7", LONDON_IP, US_IP] {
            let lookup = api.geoip.current().expect("db").lookup(ip.parse().unwrap());
            assert!(lookup.is_err(), "{ip}: the record should be corrupt");
            let v = get(&api, PEER, &format!("/v1/edges/nearest?ip={ip}"))
                .await
                .ok_json();
            assert_eq!(v["client"]["ip"], ip, "{v}");
            assert_region_spread(&v);
        }
    }

    #[tokio::test]
    async fn bad_lookups_get_json_errors() {
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
    }

    /// Located or not, the answer is the shared wire type, every field
    /// present (`null` when absent, never left out).
    #[tokio::test]
    async fn answers_are_the_shared_wire_type_with_explicit_nulls() {
        let m = mesh().await;
        let api = api(&m);
        for ip in [LONDON_IP, "10.1.2.3"] {
            let r = get(&api, PEER, &format!("/v1/edges/nearest?ip={ip}")).await;
            let v = r.ok_json();
            let answer: NearestAnswer = serde_json::from_slice(&r.body).expect("a NearestAnswer");
            assert_eq!(serde_json::to_value(&answer).unwrap(), v);
            assert_eq!(answer.client.ip.to_string(), ip);
            assert_eq!(answer.client.source, ClientIpSource::Query);
            assert_eq!(answer.client.location.is_some(), ip == LONDON_IP, "{v}");
            assert_eq!(answer.edges.len(), DEFAULT_LIMIT, "{v}");
            let client = v["client"].as_object().unwrap();
            assert!(client.contains_key("location"), "{v}");
            for e in v["edges"].as_array().unwrap() {
                let e = e.as_object().unwrap();
                assert_eq!(e.len(), 10, "{v}");
                assert!(e.contains_key("distance_km") && e.contains_key("est_rtt_ms"));
                assert!(e["cert_sha256"].is_array(), "{v}");
            }
        }
    }
}
