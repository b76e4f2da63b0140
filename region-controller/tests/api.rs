//! The controller's HTTP API over a real socket (hyper's client against
//! `Api::serve` on loopback), and the binary's `check-config` on good, bad
//! and missing GeoIP databases.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use control::keys::KeyLayout;
use control::records::{EdgeRecord, EdgeState, LoadRecord, Record};
use control::store::{ControlStore, MemoryStore};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use region_controller::api::{parse_proxies, Api};
use region_controller::controller::LeaderState;
use region_controller::mesh::{mirror, SharedMesh};
use serde_json::Value;
use testkit::process::output_within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use topology::GeoIpDb;

const GEOIP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/geoip/");

fn geoip(name: &str) -> PathBuf {
    PathBuf::from(GEOIP_DIR).join(name)
}

/// GeoLite2-City-Test.json: 81.2.69.142/31 is London.
const LONDON_IP: &str = "81.2.69.142";
/// GeoLite2-City-Test.json: 216.160.83.56/29 is Milton (WA), US.
const US_IP: &str = "216.160.83.57";

fn edge(id: u32, region: &str, city: &str, lat: f64, lon: f64) -> EdgeRecord {
    EdgeRecord {
        id,
        region: region.into(),
        city: city.into(),
        lat,
        lon,
        addr: format!("127.0.0.1:{}", 4430 + id).parse().unwrap(),
        server_name: format!("edge{id}.rtn.test"),
        cert_sha256: vec![],
        admin_addr: None,
        capacity: 100,
        state: EdgeState::Serving,
        version: "test".into(),
        started_at_ms: 1,
    }
}

/// A controller's API as the binary runs it, minus etcd: records in a
/// memory store, mirrored, served on a loopback port.
async fn serve(configure: impl FnOnce(&mut Api)) -> (std::net::SocketAddr, SharedMesh) {
    let store = Arc::new(MemoryStore::new());
    let keys = KeyLayout::default();
    for e in [
        edge(1, "eu", "LON", 51.5074, -0.1278),
        edge(2, "eu", "FRA", 50.1109, 8.6821),
        edge(3, "us", "NYC", 40.7128, -74.0060),
    ] {
        let load = LoadRecord {
            sessions: 1,
            channels: 1,
            load: 0.01 * e.id as f64,
            at_ms: 1,
        };
        store
            .put(&keys.load(e.id), load.to_bytes(), None)
            .await
            .unwrap();
        store
            .put(&keys.edge(e.id), e.to_bytes(), None)
            .await
            .unwrap();
    }
    let mesh = SharedMesh::default();
    tokio::spawn(mirror(store, keys, mesh.clone()));
    let db = GeoIpDb::open(geoip("GeoLite2-City-Test.mmdb")).expect("test City database");
    let mut api = Api::new(
        mesh.clone(),
        LeaderState::default(),
        "eu".into(),
        Some(db),
        50,
    );
    configure(&mut api);
    // As main does: requests are counted from the start.
    region_controller::metrics::prometheus();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(Arc::new(api).serve(listener));
    (addr, mesh)
}

async fn connect(addr: std::net::SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    sender
}

async fn get(
    sender: &mut SendRequest<Empty<Bytes>>,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, Bytes) {
    let mut req = Request::builder()
        .uri(path)
        .header("host", "controller.test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    sender.ready().await.expect("connection usable");
    let resp = sender
        .send_request(req.body(Empty::new()).unwrap())
        .await
        .expect("response");
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, ctype, body)
}

async fn get_json(
    sender: &mut SendRequest<Empty<Bytes>>,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let (status, ctype, body) = get(sender, path, headers).await;
    assert_eq!(ctype, "application/json", "{path}");
    let v = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "{path}: not JSON ({e}): {:?}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, v)
}

fn ids(v: &Value) -> Vec<u64> {
    v["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["id"].as_u64().expect("id"))
        .collect()
}

#[tokio::test]
async fn nearest_edges_over_http() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (addr, mesh) = serve(|api| {
            api.client_ip_header = Some(hyper::header::HeaderName::from_static("x-forwarded-for"));
            api.trusted_proxies = parse_proxies(&["127.0.0.1".into()]).unwrap();
        })
        .await;
        // One keep-alive connection carries every request below.
        let mut http = connect(addr).await;

        // Ready once the store view is mirrored (it may already be).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, _, _) = get(&mut http, "/readyz", &[]).await;
            if status == StatusCode::OK && mesh.read().loads.len() == 3 {
                break;
            }
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let path = format!("/v1/edges/nearest?ip={LONDON_IP}&limit=2");
        let (status, v) = get_json(&mut http, &path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["client"]["source"], "query");
        assert_eq!(v["client"]["location"]["city"], "London", "{v}");
        assert_eq!(ids(&v), [1, 2], "{v}");
        assert_eq!(v["edges"][0]["addr"], "127.0.0.1:4431");
        assert_eq!(v["edges"][0]["server_name"], "edge1.rtn.test");
        assert!(
            v["edges"][1]["distance_km"].as_f64().unwrap() > 600.0,
            "{v}"
        );

        // The caller is 127.0.0.1: in no database, so a region spread.
        let (status, v) = get_json(&mut http, "/v1/edges/nearest", &[]).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["client"]["source"], "peer", "{v}");
        assert_eq!(v["client"]["ip"], "127.0.0.1", "{v}");
        assert!(v["client"]["location"].is_null(), "{v}");
        let regions: Vec<&str> = v["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["region"].as_str().unwrap())
            .collect();
        assert_eq!(regions.len(), 3, "{v}");
        assert_ne!(regions[0], regions[1], "one edge per region first: {v}");

        // The peer address serve() passes is the socket's: loopback is the
        // trusted proxy here, so its header names the client.
        let (status, v) = get_json(
            &mut http,
            "/v1/edges/nearest?limit=1",
            &[("x-forwarded-for", &format!("{US_IP}, 127.0.0.1"))],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["client"]["source"], "header", "{v}");
        assert_eq!(ids(&v), [3], "{v}");

        let (status, v) = get_json(&mut http, "/v1/edges/nearest?limit=0", &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"]["code"], "invalid_limit", "{v}");
        let (status, v) = get_json(&mut http, "/nowhere", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(v["error"]["code"], "not_found", "{v}");

        let (status, _, body) = get(&mut http, "/healthz", &[]).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok\n"[..]));
        let (status, ctype, body) = get(&mut http, "/metrics", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(ctype.starts_with("text/plain"), "{ctype}");
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.lines()
                .any(|l| l.starts_with("rtn_controller_api_requests_total{")
                    && l.contains(r#"endpoint="/v1/edges/nearest""#)
                    && l.contains(r#"status="200""#)),
            "{text}"
        );
    })
    .await
    .expect("test timed out");
}

/// A connection that never finishes its request headers is closed, so idle
/// or trickling clients cannot pile up on the public port.
#[tokio::test]
async fn silent_connections_are_closed() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (addr, _mesh) = serve(|api| api.header_read_timeout = Duration::from_millis(300)).await;
        for partial in [&b""[..], b"GET /healthz HTTP/1.1\r\nhost: x\r\n"] {
            // Before connecting: the server's clock starts after its accept.
            let started = Instant::now();
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(partial).await.unwrap();
            let mut buf = Vec::new();
            // EOF (or a reset) ends the read: the server hung up.
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
                .await
                .expect("the server kept a silent connection open");
            assert!(started.elapsed() >= Duration::from_millis(300));
            // A request cut short gets no response at all.
            assert!(!String::from_utf8_lossy(&buf).contains("200 OK"), "{buf:?}");
        }
        // A prompt request on a fresh connection is still answered.
        let mut http = connect(addr).await;
        let (status, _, _) = get(&mut http, "/healthz", &[]).await;
        assert_eq!(status, StatusCode::OK);
    })
    .await
    .expect("test timed out");
}

/// Runs the controller binary with `args`, killing it if it hangs.
fn run_binary(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_region-controller"));
    cmd.args(args);
    // Flags fall back to RTN_CTL_* variables: the caller's must not leak in.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("RTN_CTL_") {
            cmd.env_remove(k);
        }
    }
    // anyhow appends a backtrace when RUST_BACKTRACE is set; the error text
    // alone is what an operator reads and what the tests check.
    cmd.env("RUST_LIB_BACKTRACE", "0");
    output_within(&mut cmd, Duration::from_secs(30))
}

fn check_config(dir: &Path, geoip_db: &Path) -> (bool, String, String) {
    let db = toml::Value::String(geoip_db.to_string_lossy().into_owned());
    let config = format!(
        "[controller]\nregion = \"eu\"\n\n[store]\netcd_endpoints = [\"http://127.0.0.1:1\"]\n\n[api]\ngeoip_db = {db}\n"
    );
    let path = dir.join("controller.toml");
    std::fs::write(&path, config).unwrap();
    let out = run_binary(&["check-config", "--config", path.to_str().unwrap()]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_location_databases_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    for good in ["GeoLite2-City-Test.mmdb", "GeoIP2-City-Test.mmdb"] {
        let (ok, stdout, stderr) = check_config(dir.path(), &geoip(good));
        assert!(ok, "{good}: refused: {stderr}");
        assert!(stdout.contains("config ok: region eu"), "{good}: {stdout}");
        // The log says what the database holds.
        assert!(
            stdout.contains("GeoIP database opened")
                && stdout.contains("coordinates (GeoIP2 location), city, country"),
            "{good}: {stdout}"
        );
    }
    // Each bad file must be refused at start, naming the config field and
    // saying what is wrong with it (a controller that started with it would
    // fail every lookup and rank every client without a location).
    let corrupt_or_no_location: &[&str] = &["corrupt", "has no location data"];
    for (bad, reasons) in [
        (
            "GeoIP2-City-Test-Broken-Double-Format.mmdb",
            &["corrupt"][..],
        ),
        // Their records have no coordinates, or their corruption shows
        // while sampling them.
        (
            "MaxMind-DB-test-broken-pointers-24.mmdb",
            corrupt_or_no_location,
        ),
        (
            "MaxMind-DB-test-broken-search-tree-24.mmdb",
            corrupt_or_no_location,
        ),
        (
            "GeoLite2-Country-Test.mmdb",
            &["has no location data", "fields found: continent, country"],
        ),
        (
            "GeoLite2-ASN-Test.mmdb",
            &["has no location data", "autonomous_system_number"],
        ),
        ("no-such-database.mmdb", &["not found"]),
        // The directory itself: not a database either.
        ("", &["cannot read"]),
    ] {
        let (ok, stdout, stderr) = check_config(dir.path(), &geoip(bad));
        assert!(!ok, "{bad}: accepted: {stdout}");
        assert!(stderr.contains("api.geoip_db"), "{bad}: {stderr}");
        assert!(
            reasons.iter().any(|r| stderr.contains(r)),
            "{bad}: expected one of {reasons:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{bad}: {stderr}");
    }
}

/// A connection from a given loopback address, so tests can be several
/// clients as the per-address rate limit sees them.
async fn connect_from(
    local: std::net::IpAddr,
    addr: std::net::SocketAddr,
) -> SendRequest<Empty<Bytes>> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(local, 0)).unwrap();
    let stream = socket.connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    sender
}

/// Median and worst time of `n` lookups by a well-behaved client.
async fn lookup_latency(addr: std::net::SocketAddr, n: usize) -> (Duration, Duration) {
    let mut http = connect_from("127.0.0.2".parse().unwrap(), addr).await;
    let mut took = vec![];
    for _ in 0..n {
        let t = Instant::now();
        let (status, _, _) =
            get(&mut http, &format!("/v1/edges/nearest?ip={LONDON_IP}"), &[]).await;
        assert_eq!(status, StatusCode::OK);
        took.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    took.sort();
    (took[n / 2], took[n - 1])
}

/// HTTP abuse of the public API: huge query strings and headers, invalid
/// addresses, and a request flood from one address are refused cheaply,
/// counted, and leave another client's lookups answered (its latency
/// during the flood is printed against a baseline of the same run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_abuse_is_refused_and_other_clients_keep_their_lookups() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (addr, _mesh) = serve(|_| {}).await;
        let (base_p50, base_max) = lookup_latency(addr, 15).await;

        // A 1 MiB query string: hyper refuses it before routing (431), or
        // hangs up; the server itself stays up.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let huge = format!(
            "GET /v1/edges/nearest?ip={} HTTP/1.1\r\nhost: x\r\n\r\n",
            "1".repeat(1 << 20)
        );
        let _ = s.write_all(huge.as_bytes()).await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        let head = String::from_utf8_lossy(&buf);
        assert!(
            head.is_empty() || head.starts_with("HTTP/1.1 431"),
            "huge request: {head:?}"
        );
        // Many or huge headers likewise.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut req = String::from("GET /healthz HTTP/1.1\r\nhost: x\r\n");
        for i in 0..2_000 {
            req.push_str(&format!("x-junk-{i}: {}\r\n", "v".repeat(100)));
        }
        req.push_str("\r\n");
        let _ = s.write_all(req.as_bytes()).await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));

        // Invalid addresses and parameters: 400 with a JSON reason each.
        let mut http = connect_from("127.0.0.3".parse().unwrap(), addr).await;
        for q in [
            "ip=999.1.1.1",
            "ip=::g",
            "ip=",
            "ip=1.2.3.4%00",
            "limit=-1",
            "limit=99999999999999999999",
            "ip=1.2.3.4&ip=5.6.7.8&bogus=1",
        ] {
            let (status, v) = get_json(&mut http, &format!("/v1/edges/nearest?{q}"), &[]).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {v}");
            assert!(v["error"]["code"].is_string(), "{q}: {v}");
        }

        // A flood from 127.0.0.1 on 8 connections while the well-behaved
        // client at 127.0.0.2 measures its lookups.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let limited = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut flood = vec![];
        for _ in 0..8 {
            let (stop, limited) = (stop.clone(), limited.clone());
            flood.push(tokio::spawn(async move {
                let mut http = connect(addr).await;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (status, _, _) = get(&mut http, "/v1/edges/nearest", &[]).await;
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (flood_p50, flood_max) = lookup_latency(addr, 15).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for f in flood {
            let _ = f.await;
        }
        let limited = limited.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "lookup latency of another client: baseline p50 {base_p50:?} max {base_max:?}; \
             during a flood ({limited} requests refused with 429) p50 {flood_p50:?} max {flood_max:?}"
        );
        assert!(limited > 100, "the flood was rate limited: {limited}");
        let text = region_controller::metrics::prometheus().render();
        assert!(
            text.lines().any(|l| l.starts_with("rtn_controller_api_requests_total")
                && l.contains("status=\"429\"")),
            "refusals are counted"
        );
    })
    .await
    .expect("test timed out");
}

/// The certificate the API at `addr` presents over TLS, trusting `ca_pem`.
async fn served_certificate(addr: std::net::SocketAddr, ca_pem: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let stream = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect("localhost".try_into().unwrap(), stream)
        .await
        .expect("TLS handshake with the API");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn https_with_a_reloaded_certificate_for_the_sdk_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let pki = edge_node::tls::DevPki::new().unwrap();
    let (cert, key) = (dir.path().join("api.pem"), dir.path().join("api.key"));
    let write = || {
        let (c, k) = pki.issue_pem(&["localhost".into()]).unwrap();
        std::fs::write(&cert, c).unwrap();
        std::fs::write(&key, k).unwrap();
    };
    write();
    let certs = control::certs::ClientCerts::new(control::certs::ClientCertSource::Files {
        cert: cert.clone(),
        key: key.clone(),
        check_every: Duration::from_millis(50),
    })
    .unwrap();
    let (addr, _mesh) = serve(|api| api.tls = Some(certs)).await;
    let url = format!("https://localhost:{}", addr.port());

    // The SDK asks over HTTPS, verifying the controller with its CA.
    let ca = sdk::EdgeTrust::Ca(pki.ca_pem().into_bytes());
    let edges = sdk::nearest::fetch_shortlist(&url, 3, Duration::from_secs(5), None, &ca)
        .await
        .expect("the lookup over HTTPS");
    assert_eq!(edges.len(), 3);
    // Not trusted by the system's roots; plain HTTP to it fails too.
    let webpki = sdk::EdgeTrust::WebPki;
    let err = sdk::nearest::fetch_shortlist(&url, 3, Duration::from_secs(5), None, &webpki)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
    let plain = format!("http://127.0.0.1:{}", addr.port());
    assert!(
        sdk::nearest::fetch_shortlist(&plain, 3, Duration::from_secs(5), None, &ca)
            .await
            .is_err()
    );

    // A renewed certificate is served without a restart.
    let before = served_certificate(addr, &pki.ca_pem()).await;
    write();
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_certificate(addr, &pki.ca_pem()).await == before {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sdk::nearest::fetch_shortlist(&url, 3, Duration::from_secs(5), None, &ca)
        .await
        .expect("the lookup after the renewal");
}

#[tokio::test]
async fn only_listed_origins_may_call_the_lookup_from_a_page() {
    let (addr, _mesh) = serve(|api| {
        api.cors =
            region_controller::api::CorsPolicy::new(&["https://app.example.com".into()]).unwrap()
    })
    .await;
    let mut c = connect(addr).await;
    let path = format!("/v1/edges/nearest?ip={LONDON_IP}");
    // No Origin (a native SDK): answered as always.
    let (status, _) = get_json(&mut c, &path, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get_json(&mut c, &path, &[("origin", "https://app.example.com")]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = get_json(&mut c, &path, &[("origin", "https://evil.example")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(v["error"]["code"], "origin_not_allowed");
    // Operator endpoints are never offered cross-origin.
    let (status, _) = get_json(&mut c, "/v1/mesh", &[("origin", "https://app.example.com")]).await;
    assert_ne!(status, StatusCode::OK);
}

/// Replaces `path` the way updaters do: the new bytes under a temporary
/// name, then an atomic rename over the old file.
fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).expect("write the new database");
    std::fs::rename(&tmp, path).expect("rename over the old database");
}

/// The value of `rtn_controller_geoip_reloads_total{result=...}` (0 before
/// the first).
fn geoip_reloads(result: &str) -> u64 {
    let text = region_controller::metrics::prometheus().render();
    let series = format!("rtn_controller_geoip_reloads_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0, |v| v.trim().parse().expect("counter value"))
}

/// The city the API locates `ip` in.
async fn city_of(sender: &mut SendRequest<Empty<Bytes>>, ip: &str) -> Value {
    let (status, v) = get_json(sender, &format!("/v1/edges/nearest?ip={ip}"), &[]).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["client"]["location"]["city"].clone()
}

/// Polls `done` every 50 ms for at most 10 s.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn geoip_file_replaced_on_disk_is_reloaded_and_a_bad_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("geoip.mmdb");
    std::fs::copy(geoip("GeoLite2-City-Test.mmdb"), &path).unwrap();
    let (addr, _mesh) = serve(|api| {
        let db = region_controller::api::open_geoip_db(&path).expect("copy opens");
        api.geoip = Arc::new(region_controller::api::GeoIpSlot::new(Some(db)));
        api.geoip_file = Some(path.clone());
        api.geoip_check_every = Duration::from_millis(20);
    })
    .await;
    let mut sender = connect(addr).await;
    assert_eq!(city_of(&mut sender, LONDON_IP).await, "London");

    // Another database (the lab's, placing the London address in Tokyo):
    // lookups follow without a restart.
    let tokyo = topology::GeoLocation {
        point: topology::GeoPoint::new(35.6895, 139.6917).unwrap(),
        city: Some("Tokyo".into()),
        country: Some("JP".into()),
    };
    let lab = topology::write_lab_db(&[(LONDON_IP.parse().unwrap(), 24, tokyo)]).unwrap();
    let ok = geoip_reloads("ok");
    replace_file(&path, &lab);
    eventually("the new database", async || {
        city_of(&mut sender, LONDON_IP).await == "Tokyo"
    })
    .await;
    assert!(geoip_reloads("ok") > ok);

    // A corrupt file, then a database without coordinates: refused, counted,
    // and the lab database keeps answering.
    for bad in [
        b"not a database".to_vec(),
        std::fs::read(geoip("GeoLite2-Country-Test.mmdb")).unwrap(),
    ] {
        let refused = geoip_reloads("refused");
        replace_file(&path, &bad);
        eventually("the refusal", async || geoip_reloads("refused") > refused).await;
        assert_eq!(city_of(&mut sender, LONDON_IP).await, "Tokyo");
    }
}
