//! `region-controller --log-format json` against a real etcd (Debian's
//! `etcd-server`): every line the process writes is a JSON object; the
//! leader change events carry the region and the controller's name; the
//! operator token never appears, not even after a request that used it and
//! one that used a wrong one; `/metrics` reports the leadership. The two
//! faces of the API: the public listener serves the lookup and health
//! only, the admin listener the operator endpoints and metrics.
#![cfg(feature = "etcd")]

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::EtcdServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "operator-token-0123456789-abcdef";

async fn get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> String {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let _ = s
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").as_bytes())
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

fn status(resp: &str) -> Option<&str> {
    resp.split(' ').nth(1)
}

#[tokio::test]
async fn json_logs_carry_leader_changes_and_no_token() {
    let started = Instant::now();
    let etcd = EtcdServer::start().expect("etcd (Debian's etcd-server) is needed");
    etcd.store().await.expect("etcd answers");
    let dir = tempfile::tempdir().unwrap();
    let (api, admin) = (testkit::ports::tcp_local(), testkit::ports::tcp_local());
    let config = format!(
        r#"
[controller]
region = "eu"
name = "ctl-json"
[store]
etcd_endpoints = ["{}"]
election_ttl_ms = 2000
[api]
listen = "{api}"
[admin]
listen = "{admin}"
token_env = "RTN_TEST_ADMIN_TOKEN"
"#,
        etcd.client_url()
    );
    let path = dir.path().join("ctl.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_region-controller"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&path)
        .env("RTN_TEST_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Reap<'a>(&'a mut std::process::Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let reap = Reap(&mut child);

    // Leading, as /metrics says.
    let leading = r#"rtn_controller_leader{region="eu",controller="ctl-json"} 1"#;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = reap.0.try_wait().unwrap() {
            panic!("controller exited: {s}");
        }
        let m = get(admin, "/metrics", None).await;
        if status(&m) == Some("200") && m.contains(leading) {
            break;
        }
        assert!(Instant::now() < deadline, "never led the region:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Which software runs, and the process's own figures, read at scrape.
    let m = get(admin, "/metrics", None).await;
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        m.contains(&format!(
            r#"rtn_controller_build_info{{region="eu",controller="ctl-json",version="{version}"}} 1"#
        )),
        "{m}"
    );
    for name in [
        "rtn_controller_process_resident_memory_bytes ",
        "rtn_controller_process_open_fds ",
        "rtn_controller_process_start_time_seconds ",
    ] {
        assert!(m.contains(name), "{name} missing:\n{m}");
    }
    assert_eq!(
        status(&get(admin, "/v1/mesh", Some(TOKEN)).await),
        Some("200")
    );
    let wrong = "wrong-token-but-long-enough-0000";
    assert_eq!(
        status(&get(admin, "/v1/mesh", Some(wrong)).await),
        Some("401")
    );
    // The public face: the lookup and health, nothing of the operator's
    // (not even with the token).
    for path in ["/healthz", "/readyz", "/v1/edges/nearest?ip=1.2.3.4"] {
        assert_eq!(status(&get(api, path, None).await), Some("200"), "{path}");
    }
    for path in ["/metrics", "/v1/mesh", "/v1/links/history?from=1&to=2", "/"] {
        let r = get(api, path, Some(TOKEN)).await;
        assert_eq!(status(&r), Some("404"), "{path}: {r}");
    }
    assert_eq!(status(&get(admin, "/", None).await), Some("200"));
    assert_eq!(status(&get(admin, "/healthz", None).await), Some("200"));

    // SIGTERM: it resigns and stops.
    Command::new("kill")
        .args(["-TERM", &reap.0.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while reap.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "SIGTERM did not stop it");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut logs = String::new();
    reap.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    reap.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    drop(reap);

    assert!(!logs.contains(TOKEN), "the token was logged:\n{logs}");
    assert!(
        !logs.contains(wrong),
        "a presented token was logged:\n{logs}"
    );
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
            assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
            assert!(v["fields"]["message"].is_string(), "{l}");
            v
        })
        .collect();
    let has = |message: &str, with_name: bool| {
        lines.iter().any(|v| {
            let f = &v["fields"];
            f["message"] == message
                && f["region"] == "eu"
                && (!with_name || f["name"] == "ctl-json")
        })
    };
    assert!(has("controller started", true), "{logs}");
    assert!(has("leading the region", true), "{logs}");
    assert!(has("resigned the region's leadership", true), "{logs}");
    eprintln!(
        "controller json logs test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
