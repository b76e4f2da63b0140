//! The Prometheus exposition of a small in-process lab (three edges, a
//! region controller and its API over the embedded store, clients joining,
//! publishing, relaying, failing to join):
//!
//! - `promtool check metrics` (Prometheus' own linter) accepts it;
//! - names follow the conventions (rtn_ prefix, base units, `_total` on
//!   counters, HELP and TYPE for every metric), labels are bounded (no user,
//!   channel or session ids), and every metric the observability issue asks
//!   for is there;
//! - the Grafana dashboard (`docs/grafana/rtn.json`) is a well-formed
//!   dashboard whose queries use only metrics that this exposition has;
//! - a real Prometheus server scraping the lab's admin ports stores the link
//!   metrics and answers queries on them, and every dashboard query parses
//!   and runs; it loads the alert rules (`ops/prometheus/rtn-rules.yml`)
//!   too, and every rule evaluates without an error on the lab's series.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package
//! (scripts/test.sh installs it); without them the checks that need them say
//! so loudly and are skipped.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use control::keys::KeyLayout;
use control::store::{ControlStore, MemoryStore};
use edge_node::{Edge, EdgeConfig, EdgeOptions};
use protocol::pb::server_frame::Kind as SK;
use region_controller::api::Api;
use region_controller::controller::{Controller, RoutingOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Labels whose values would be unbounded (or personal): never allowed.
const FORBIDDEN_LABELS: &[&str] = &[
    "user",
    "user_id",
    "channel",
    "channel_id",
    "session",
    "token",
    "track",
    "remote",
    "ip",
    "addr",
];

/// Every metric the observability issue asks for, as it must appear.
const REQUIRED: &[&str] = &[
    // edges: link quality and probes
    "rtn_edge_link_rtt_seconds_bucket",
    "rtn_edge_link_rtt_seconds_count",
    "rtn_edge_link_rtt_smoothed_seconds",
    "rtn_edge_link_jitter_seconds",
    "rtn_edge_link_loss_ratio",
    "rtn_edge_link_up",
    "rtn_edge_probes_sent_total",
    "rtn_edge_dead_peers",
    // forwarding per peer and overall
    "rtn_edge_peer_media_packets_total",
    "rtn_edge_peer_media_bytes_total",
    "rtn_edge_media_packets_total",
    "rtn_edge_media_bytes_total",
    "rtn_edge_messages_total",
    "rtn_edge_media_dropped_total",
    // sessions, channels, joins
    "rtn_edge_sessions",
    "rtn_edge_channels",
    "rtn_edge_joins_total",
    // queues
    "rtn_edge_client_queue_packets",
    "rtn_edge_relay_queue_packets",
    // routes
    "rtn_edge_route_table_version",
    "rtn_edge_route_table_updates_total",
    "rtn_edge_route_changes_total",
    "rtn_edge_relay_links",
    "rtn_edge_store_connected",
    "rtn_edge_info",
    // what the alert rules need (ops/prometheus/rtn-rules.yml)
    "rtn_edge_build_info",
    "rtn_edge_max_sessions",
    "rtn_edge_ready",
    "rtn_edge_draining",
    "rtn_edge_certificate_expiry_timestamp_seconds",
    "rtn_edge_udp_buffer_bytes",
    "rtn_edge_process_cpu_seconds_total",
    "rtn_edge_process_resident_memory_bytes",
    "rtn_edge_process_open_fds",
    "rtn_edge_process_start_time_seconds",
    // controllers
    "rtn_controller_leader",
    "rtn_controller_leadership_changes_total",
    "rtn_controller_compute_seconds_bucket",
    "rtn_controller_compute_seconds_count",
    "rtn_controller_route_publications_total",
    "rtn_controller_store_operations_total",
    "rtn_controller_store_connected",
    "rtn_controller_watch_lag_seconds_bucket",
    "rtn_controller_nearest_requests_total",
    "rtn_controller_api_requests_total",
];

const WAN_BUCKETS: &[&str] = &[
    "0.001", "0.002", "0.005", "0.01", "0.02", "0.05", "0.1", "0.15", "0.2", "0.3", "0.5", "1",
    "+Inf",
];

struct Lab {
    _store: Arc<dyn ControlStore>,
    _ctl: Controller,
    api: SocketAddr,
    api_task: tokio::task::JoinHandle<()>,
    edges: Vec<Edge>,
    _clients: Vec<RawClient>,
}

impl Lab {
    /// Three edges (ids `base+1..=base+3`) in `region`, a controller and its
    /// API, and traffic: a call across edges, a refused join, a malformed
    /// datagram, a nearest-edge lookup. Returns once every edge has
    /// measured both of its peers.
    async fn start(base: u32, region: &str) -> Lab {
        init_logs();
        let store: Arc<dyn ControlStore> = Arc::new(MemoryStore::new());
        let ctl = Controller::start(
            store.clone(),
            KeyLayout::default(),
            RoutingOptions::quick(region, &format!("ctl-{region}")),
        );
        let api = Arc::new(Api::new(
            ctl.mesh.clone(),
            ctl.leader.clone(),
            region.into(),
            None,
            100,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_addr = listener.local_addr().unwrap();
        let api_task = tokio::spawn(api.serve(listener));

        let pki = edge_node::tls::DevPki::new().unwrap();
        let mut edges = vec![];
        for (i, city) in ["fra", "ams", "lhr"].iter().enumerate() {
            let mut cfg = EdgeConfig::dev(base + 1 + i as u32, APP, SECRET);
            cfg.edge.region = region.into();
            cfg.edge.city = city.to_string();
            let opts = EdgeOptions {
                tls: Some(pki.material(&["localhost".into()]).unwrap()),
                client_cert: Some(pki.client_cert(&["localhost".into()]).unwrap()),
                store: Some(store.clone()),
                ..Default::default()
            };
            edges.push(Edge::start(cfg, opts).await.unwrap());
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !edges.iter().all(|e| {
            let links = e.core.prober.links();
            links.len() == 2
                && links.iter().all(|l| l.alive)
                && metric("rtn_edge_link_up", &[("edge", &e.id().to_string())]) == 2.0
        }) {
            assert!(
                Instant::now() < deadline,
                "edges did not get routes and measure their peers"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A call: alice on the first edge, carol on the third.
        let ca = pki.ca_der().to_vec();
        let mut a = RawClient::connect(edges[0].addr(), &ca).await;
        let mut c = RawClient::connect(edges[2].addr(), &ca).await;
        c.join("room", "carol").await;
        let ja = a.join("room", "alice").await;
        let track = a.publish(ja.channel_id, "mic").await.unwrap();
        c.expect(|f| match f {
            SK::TrackAvailable(t) => Some(t),
            _ => None,
        })
        .await;
        // Edge 1 may still be learning that carol's edge wants the channel
        // (CI once lost the first burst whole): send in bursts until carol
        // has had 40 packets.
        let (mut got, mut seq) = (0, 0u32);
        let deadline = Instant::now() + Duration::from_secs(10);
        while got < 40 && Instant::now() < deadline {
            for _ in 0..10 {
                a.media(ja.channel_id, track, seq, &[7u8; 120]);
                seq += 1;
            }
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(200), c.conn.read_datagram()).await
            {
                got += 1;
            }
        }
        assert!(got >= 40, "carol received {got} of {seq} packets");
        a.message(ja.channel_id, 1, b"hello").await;
        // A refused join and a malformed datagram: a join failure reason and
        // a drop reason.
        let mut bad = RawClient::connect(edges[1].addr(), &ca).await;
        let refused = bad.join_with("not.a.jwt".into(), "room", true).await;
        assert!(refused.is_err(), "a bogus token must be refused");
        bad.conn
            .send_datagram(bytes::Bytes::from_static(&[0xff, 1, 2]))
            .unwrap();
        // And a control stream that is not frames: a protocol error.
        let mut junk = RawClient::connect(edges[1].addr(), &ca).await;
        junk.send_raw(&[0xff; 64]).await;
        // A nearest-edge lookup.
        let (status, _) = http_get(api_addr, "/v1/edges/nearest?limit=2").await;
        assert_eq!(status, 200);
        // Let the drop and the error be counted.
        let deadline = Instant::now() + Duration::from_secs(5);
        let second = (base + 2).to_string();
        let second = [("edge", second.as_str())];
        while metric("rtn_edge_media_dropped_total", &second) < 1.0
            || metric("rtn_edge_protocol_errors_total", &second) < 1.0
        {
            assert!(
                Instant::now() < deadline,
                "the malformed datagram and stream were not counted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Lab {
            _store: store,
            _ctl: ctl,
            api: api_addr,
            api_task,
            edges,
            _clients: vec![a, c, bad, junk],
        }
    }

    async fn stop(self) {
        self.api_task.abort();
        for e in self.edges {
            e.kill().await;
        }
    }
}

/// A GET over HTTP/1.0 (so the body is never chunked): status and body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8(buf).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("GET {addr}{path} timed out"))
}

/// Percent-encode a query parameter value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One parsed exposition: metric families (name -> type), help texts, and
/// samples (name, labels, value).
#[derive(Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    helps: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut e = Exposition::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').unwrap();
                e.types.insert(name.into(), ty.into());
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                e.helps.insert(name.into(), help.into());
            } else if line.starts_with('#') {
                continue;
            } else {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let value: f64 = match value {
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
                };
                let (name, labels) = match series.split_once('{') {
                    Some((n, l)) => (n, parse_labels(l.trim_end_matches('}'))),
                    None => (series, BTreeMap::new()),
                };
                e.samples.push((name.into(), labels, value));
            }
        }
        e
    }

    /// The family a sample name belongs to (histogram and summary series
    /// carry suffixes).
    fn family<'a>(&self, sample: &'a str) -> Option<&'a str> {
        if self.types.contains_key(sample) {
            return Some(sample);
        }
        ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| sample.strip_suffix(s))
            .find(|f| self.types.contains_key(*f))
    }

    fn sample_names(&self) -> BTreeSet<&str> {
        self.samples.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    fn series(&self, name: &str) -> Vec<&BTreeMap<String, String>> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, _)| l)
            .collect()
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    // Values are quoted and may contain escaped quotes and commas.
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(k.trim_start_matches(',').to_string(), value);
        rest = after[end..].trim_start_matches(',');
    }
    out
}

/// `promtool check metrics` on `text`: None when promtool is missing.
fn promtool_check(text: &str) -> Option<(bool, String)> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "\n!!! SKIPPED: promtool not found ({e}); install Debian's `prometheus` package (scripts/test.sh does)\n"
            );
            return None;
        }
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), report))
}

fn dashboard() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana/rtn.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel of the dashboard, rows' collapsed panels included.
fn panels(d: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = vec![];
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// Every PromQL expression of the dashboard: panel targets and template
/// variable queries.
fn dashboard_exprs(d: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = vec![];
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((
                    p["title"].as_str().unwrap_or("?").to_string(),
                    e.to_string(),
                ));
            }
        }
    }
    for v in d["templating"]["list"].as_array().expect("templating.list") {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .expect("a query variable's query");
            out.push((format!("variable {}", v["name"]), q.to_string()));
        }
    }
    out
}

/// The metric names an expression mentions.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = vec![];
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("rtn_") {
        let start = i + at;
        let boundary =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

/// A dashboard expression with Grafana's variables replaced so that
/// Prometheus can run it.
fn concrete(expr: &str) -> String {
    // Grafana's `label_values(selector, label)` variable query.
    if let Some(inner) = expr
        .strip_prefix("label_values(")
        .and_then(|e| e.strip_suffix(')'))
    {
        let (selector, label) = inner
            .rsplit_once(',')
            .expect("label_values(selector, label)");
        return concrete(&format!("count by ({}) ({selector})", label.trim()));
    }
    expr.replace("$__rate_interval", "5s")
        .replace("$__interval", "5s")
        .replace("$__range", "1m")
        .replace("${edge:regex}", ".*")
        .replace("${region:regex}", ".*")
        .replace("$edge", ".*")
        .replace("$region", ".*")
        .replace("$peer", ".*")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposition_passes_promtool_and_naming_rules_and_feeds_the_dashboard() {
    let lab = Lab::start(110, "expo").await;
    let (status, text) = http_get(lab.edges[0].admin_addr(), "/metrics").await;
    assert_eq!(status, 200);
    // The controller's API port serves the same process-wide exposition.
    let (status, ctl_text) = http_get(lab.api, "/metrics").await;
    assert_eq!(status, 200);
    assert!(ctl_text.contains("rtn_controller_leader{"), "{ctl_text}");
    let _ = std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../target"));
    let _ = std::fs::write(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/metrics-exposition.txt"
        ),
        &text,
    );

    // Prometheus' own linter.
    if let Some((ok, report)) = promtool_check(&text) {
        assert!(
            ok && report.trim().is_empty(),
            "promtool check metrics:\n{report}"
        );
    }

    let e = Exposition::parse(&text);
    let mut problems = vec![];
    for (name, ty) in &e.types {
        if !name.starts_with("rtn_") {
            problems.push(format!("{name}: no rtn_ prefix"));
        }
        if !name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        {
            problems.push(format!("{name}: not lower snake case"));
        }
        match ty.as_str() {
            "counter" if !name.ends_with("_total") => {
                problems.push(format!("counter {name} does not end in _total"))
            }
            "counter" => {}
            _ if name.ends_with("_total") => problems.push(format!("{ty} {name} ends in _total")),
            "gauge" | "histogram" => {}
            other => problems.push(format!("{name}: unexpected type {other}")),
        }
        for unit in [
            "_ms",
            "_milliseconds",
            "_us",
            "_microseconds",
            "_percent",
            "_kb",
            "_mb",
        ] {
            if name.contains(&format!("{unit}_")) || name.ends_with(unit) {
                problems.push(format!("{name}: {unit} is not a base unit"));
            }
        }
        if e.helps.get(name).is_none_or(|h| h.trim().is_empty()) {
            problems.push(format!("{name}: no HELP"));
        }
    }
    for (name, labels, _) in &e.samples {
        if e.family(name).is_none() {
            problems.push(format!("{name}: sample without a TYPE"));
        }
        for l in labels.keys() {
            if FORBIDDEN_LABELS.contains(&l.as_str()) {
                problems.push(format!("{name}: unbounded label {l}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let names = e.sample_names();
    let missing: Vec<_> = REQUIRED.iter().filter(|r| !names.contains(**r)).collect();
    assert!(missing.is_empty(), "missing metrics: {missing:?}");

    // Link metrics for every probed pair of the lab, with WAN buckets.
    let ids: Vec<String> = lab.edges.iter().map(|e| e.id().to_string()).collect();
    for from in &ids {
        for to in ids.iter().filter(|t| *t != from) {
            for name in [
                "rtn_edge_link_rtt_seconds_count",
                "rtn_edge_link_rtt_smoothed_seconds",
                "rtn_edge_link_jitter_seconds",
                "rtn_edge_link_loss_ratio",
                "rtn_edge_probes_sent_total",
            ] {
                assert!(
                    e.series(name)
                        .iter()
                        .any(|l| l["edge"] == *from && l["peer"] == *to),
                    "{name} has no series for {from} -> {to}"
                );
            }
            let buckets: Vec<&str> = e
                .series("rtn_edge_link_rtt_seconds_bucket")
                .iter()
                .filter(|l| l["edge"] == *from && l["peer"] == *to)
                .map(|l| l["le"].as_str())
                .collect();
            assert_eq!(buckets, WAN_BUCKETS, "RTT buckets {from} -> {to}");
        }
    }
    let srtt = e
        .samples
        .iter()
        .find(|(n, l, _)| n == "rtn_edge_link_rtt_smoothed_seconds" && l["edge"] == ids[0])
        .unwrap()
        .2;
    assert!(srtt > 0.0 && srtt < 0.05, "loopback RTT in seconds: {srtt}");
    // Relayed media per peer: the first edge sent to the third, which got it.
    let peer_packets = |edge: &str, peer: &str, dir: &str| -> f64 {
        e.samples
            .iter()
            .filter(|(n, l, _)| {
                n == "rtn_edge_peer_media_packets_total"
                    && l["edge"] == edge
                    && l["peer"] == peer
                    && l["dir"] == dir
            })
            .map(|s| s.2)
            .sum()
    };
    assert!(peer_packets(&ids[0], &ids[2], "out") >= 40.0);
    assert!(peer_packets(&ids[2], &ids[0], "in") >= 40.0);
    // A join failure by reason, and the lookup by outcome.
    assert!(e
        .series("rtn_edge_joins_total")
        .iter()
        .any(|l| l["edge"] == ids[1] && l["result"] == "token_malformed"));
    assert!(e
        .series("rtn_controller_nearest_requests_total")
        .iter()
        .any(|l| l["outcome"] == "ok" || l["outcome"] == "unlocated"));
    assert!(e
        .series("rtn_controller_leader")
        .iter()
        .any(|l| l["region"] == "expo" && l["controller"] == "ctl-expo"));

    // Readiness, capacity, build and certificates, per edge.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        e.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.2)
    };
    for id in &ids {
        let edge = [("edge", id.as_str())];
        assert_eq!(value("rtn_edge_ready", &edge), Some(1.0), "edge {id} ready");
        assert_eq!(
            value("rtn_edge_draining", &edge),
            Some(0.0),
            "edge {id} draining"
        );
        assert_eq!(
            value("rtn_edge_max_sessions", &edge),
            Some(lab.edges[0].core.cfg.limits.max_sessions as f64)
        );
        assert_eq!(
            value(
                "rtn_edge_build_info",
                &[("edge", id), ("version", env!("CARGO_PKG_VERSION"))]
            ),
            Some(1.0)
        );
        // The lab's certificates come from memory (a dev PKI): valid now,
        // expiring after now.
        for cert in ["client", "mesh"] {
            let at = value(
                "rtn_edge_certificate_expiry_timestamp_seconds",
                &[("edge", id), ("cert", cert), ("source", "memory")],
            )
            .unwrap_or_else(|| panic!("edge {id}: no {cert} certificate expiry"));
            assert!(at > now, "edge {id}: {cert} certificate expired at {at}");
        }
    }
    // The process metrics of this test's process.
    let rss = value("rtn_edge_process_resident_memory_bytes", &[]).unwrap();
    assert!(rss > 1e6, "RSS {rss}");
    let started = value("rtn_edge_process_start_time_seconds", &[]).unwrap();
    assert!(
        started <= now && started > now - 3600.0,
        "start time {started}"
    );
    assert!(value("rtn_edge_process_open_fds", &[]).unwrap() > 3.0);

    // The Grafana dashboard: its queries use metrics this exposition has.
    let d = dashboard();
    let exprs = dashboard_exprs(&d);
    assert!(exprs.len() >= 20, "{} expressions", exprs.len());
    let mut unknown = vec![];
    for (panel, expr) in &exprs {
        let used = metric_names(expr);
        if used.is_empty() {
            unknown.push(format!("{panel}: no rtn_ metric in {expr}"));
        }
        for m in used {
            if !names.contains(m.as_str()) {
                unknown.push(format!("{panel}: {m} is not exposed"));
            }
        }
    }
    assert!(unknown.is_empty(), "{}", unknown.join("\n"));
    lab.stop().await;
    // Stopped edges are not ready: the gauges change when the drain starts.
    let text = edge_node::metrics::render();
    let e = Exposition::parse(&text);
    for id in &ids {
        for (name, want) in [("rtn_edge_ready", 0.0), ("rtn_edge_draining", 1.0)] {
            let got = e
                .samples
                .iter()
                .find(|(n, l, _)| n == name && l["edge"] == *id)
                .map(|s| s.2);
            assert_eq!(got, Some(want), "edge {id} stopped: {name}");
        }
    }
}

#[test]
fn dashboard_is_a_well_formed_grafana_dashboard() {
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_u64().unwrap() >= 36,
        "Grafana 9/10 schema"
    );
    assert!(d["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty() && u.len() <= 40));
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["id"].is_null(), "an importable dashboard has no id");
    // Input for the import dialog and a datasource variable every query uses.
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus");
    let ds_ref = format!("${{{}}}", ds["name"].as_str().unwrap());
    let mut ids = BTreeSet::new();
    let mut titles = vec![];
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {title}"
        );
        for k in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        assert!(
            p["gridPos"]["x"].as_u64().unwrap() + p["gridPos"]["w"].as_u64().unwrap() <= 24,
            "{title}: wider than the grid"
        );
        if p["type"] == "row" {
            continue;
        }
        titles.push(title.to_string());
        assert_eq!(
            p["datasource"]["uid"],
            ds_ref.as_str(),
            "{title}: datasource"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no queries");
        for t in targets {
            assert_eq!(
                t["datasource"]["uid"],
                ds_ref.as_str(),
                "{title}: target datasource"
            );
            assert!(t["refId"].is_string(), "{title}: refId");
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}: expr"
            );
        }
    }
    // The panels the issue asks for.
    for want in [
        "RTT",
        "jitter",
        "loss",
        "packets",
        "bytes",
        "Drops",
        "Sessions",
        "Channels",
        "Joins",
        "leader",
        "Route computation",
        "Store",
        "Nearest",
    ] {
        assert!(
            titles
                .iter()
                .any(|t| t.to_lowercase().contains(&want.to_lowercase())),
            "no panel about {want}: {titles:?}"
        );
    }
}

/// Kills and reaps the Prometheus server when the test ends, however it
/// ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn query(prom: SocketAddr, q: &str) -> serde_json::Value {
    let (status, body) = http_get(prom, &format!("/api/v1/query?query={}", urlencode(q))).await;
    let v: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("query {q}: status {status}, {e}: {body}"));
    assert_eq!(v["status"], "success", "query {q}: {v}");
    v
}

fn results(v: &serde_json::Value) -> &Vec<serde_json::Value> {
    v["data"]["result"].as_array().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_lab_and_answers_link_queries() {
    let started = Instant::now();
    let bin = Path::new("/usr/bin/prometheus");
    if !bin.exists() {
        eprintln!(
            "\n!!! SKIPPED: /usr/bin/prometheus not found; install Debian's `prometheus` package (scripts/test.sh does)\n"
        );
        return;
    }
    let lab = Lab::start(120, "prom").await;
    let dir = tempfile::tempdir().unwrap();
    let targets: Vec<String> = lab
        .edges
        .iter()
        .map(|e| format!("'{}'", e.admin_addr()))
        .collect();
    // The alert rules too: they must evaluate against a real exposition
    // (checked below).
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/prometheus/rtn-rules.yml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - '{}'\n\
         scrape_configs:\n\
         \x20 - job_name: rtn-edge\n    static_configs:\n      - targets: [{}]\n\
         \x20 - job_name: rtn-controller\n    static_configs:\n      - targets: ['{}']\n",
        rules.display(),
        targets.join(", "),
        lab.api
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let prom_addr = testkit::ports::tcp_local();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _server = Server(
        Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus"),
    );
    let prom_log =
        || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();

    // Ready, then every target scraped and up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = tokio::time::timeout(Duration::from_secs(1), async {
            let s = tokio::net::TcpStream::connect(prom_addr).await;
            s.is_ok()
        })
        .await
        .unwrap_or(false)
            && http_get(prom_addr, "/-/ready").await.0 == 200;
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus not ready:\n{}",
            prom_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids: BTreeSet<String> = lab.edges.iter().map(|e| e.id().to_string()).collect();
    let pairs: BTreeSet<(String, String)> = ids
        .iter()
        .flat_map(|a| {
            ids.iter()
                .filter(move |b| *b != a)
                .map(move |b| (a.clone(), b.clone()))
        })
        .collect();
    let series_pairs = |v: &serde_json::Value| -> BTreeSet<(String, String)> {
        results(v)
            .iter()
            .filter_map(|r| {
                let m = &r["metric"];
                Some((
                    m["edge"].as_str()?.to_string(),
                    m["peer"].as_str()?.to_string(),
                ))
            })
            .filter(|p| pairs.contains(p))
            .collect()
    };
    // The RTT histogram, per pair, over two scrapes at least: rate() works.
    // Only this lab's edges: other tests of this binary share the process
    // (and so the exposition).
    let mine = format!(
        "edge=~\"{}\"",
        ids.iter().cloned().collect::<Vec<_>>().join("|")
    );
    // 10 s: peers carrying no traffic are probed every 2 s.
    let p50 = format!("histogram_quantile(0.5, sum by (edge, peer, le) (rate(rtn_edge_link_rtt_seconds_bucket{{{mine}, job=\"rtn-edge\"}}[10s])))");
    loop {
        let up = query(prom_addr, "up").await;
        let all_up = results(&up).len() == 4 && results(&up).iter().all(|r| r["value"][1] == "1");
        let v = query(prom_addr, &p50).await;
        // NaN: no probe of that pair landed in the window yet (a pair
        // carrying no traffic is probed every 2 s); wait for one.
        let sampled = results(&v).iter().all(|r| r["value"][1] != "NaN");
        if all_up && series_pairs(&v) == pairs && sampled {
            for r in results(&v) {
                let rtt: f64 = r["value"][1].as_str().unwrap().parse().unwrap();
                assert!(rtt > 0.0 && rtt <= 0.05, "loopback median RTT {rtt} s: {r}");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus has no RTT quantiles for every pair: up {up}, p50 {v}\n{}",
            prom_log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (q, lo, hi) in [
        (
            format!("rtn_edge_link_rtt_smoothed_seconds{{{mine}}}"),
            0.0,
            0.05,
        ),
        (format!("rtn_edge_link_jitter_seconds{{{mine}}}"), 0.0, 0.05),
        (format!("rtn_edge_link_loss_ratio{{{mine}}}"), 0.0, 1.0),
        (format!("rtn_edge_link_up{{{mine}}}"), 1.0, 1.0),
        // Every 2 s to idle peers (0.5/s; a 10 s window over scrapes a
        // second apart reads as little as one or two of them on a busy
        // machine), every 200 ms to those carrying traffic or being
        // measured.
        (
            format!("rate(rtn_edge_probes_sent_total{{{mine}}}[10s])"),
            0.1,
            6.0,
        ),
    ] {
        let v = query(prom_addr, &format!("max by (edge, peer) ({q})")).await;
        assert_eq!(series_pairs(&v), pairs, "{q}: {v}");
        for r in results(&v) {
            let x: f64 = r["value"][1].as_str().unwrap().parse().unwrap();
            assert!((lo..=hi).contains(&x), "{q} = {x}: {r}");
        }
    }
    let v = query(
        prom_addr,
        "max by (region) (rtn_controller_leader{region=\"prom\"})",
    )
    .await;
    assert_eq!(results(&v).len(), 1, "{v}");
    assert_eq!(results(&v)[0]["value"][1], "1", "{v}");

    // Every dashboard query parses and runs; the link panels have data.
    let d = dashboard();
    let mut empty = vec![];
    for (panel, expr) in dashboard_exprs(&d) {
        let q = concrete(&expr);
        let path = format!("/api/v1/query?query={}", urlencode(&q));
        let (status, body) = http_get(prom_addr, &path).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        assert!(
            status == 200 && v["status"] == "success",
            "dashboard panel {panel:?}: {q}\n{status} {body}"
        );
        if results(&v).is_empty() {
            empty.push(format!("{panel}: {q}"));
        }
    }
    let link_panels_empty: Vec<_> = empty
        .iter()
        .filter(|p| p.contains("rtn_edge_link_"))
        .collect();
    assert!(
        link_panels_empty.is_empty(),
        "link panels without data: {link_panels_empty:#?}"
    );
    if !empty.is_empty() {
        eprintln!(
            "dashboard queries without data in this lab (nothing to show yet):\n{}",
            empty.join("\n")
        );
    }

    // The alert rules loaded, and every rule evaluated without an error on
    // the lab's series (which every target serves once per target: joins
    // must not match many to many). The 5-minute baseline group may not
    // have had its first evaluation yet.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http_get(prom_addr, "/api/v1/rules").await;
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("rules: status {status}, {e}: {body}"));
        let groups = v["data"]["groups"].as_array().expect("rule groups");
        let names: BTreeSet<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
        assert_eq!(
            names,
            BTreeSet::from(["rtn-recording", "rtn-baseline", "rtn-alerts"]),
            "{}",
            prom_log()
        );
        let (mut failed, mut waiting) = (vec![], vec![]);
        for g in groups {
            let every_second = g["interval"].as_f64() == Some(1.0);
            for r in g["rules"].as_array().into_iter().flatten() {
                let name = r["name"].as_str().unwrap_or("?");
                match r["health"].as_str() {
                    Some("ok") => {}
                    Some("err") => failed.push(format!("{name}: {}", r["lastError"])),
                    _ if every_second => waiting.push(name),
                    _ => {}
                }
            }
        }
        assert!(failed.is_empty(), "rules failing:\n{}", failed.join("\n"));
        if waiting.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rules never evaluated: {waiting:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A join through rtn_edge_info, recorded: the lab region's load.
    let v = query(
        prom_addr,
        "region:rtn_edge_sessions:capacity_ratio{region=\"prom\"}",
    )
    .await;
    assert_eq!(results(&v).len(), 1, "{v}");
    let load: f64 = results(&v)[0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.0..1.0).contains(&load), "the lab's load: {load}");

    lab.stop().await;
    eprintln!(
        "prometheus test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
