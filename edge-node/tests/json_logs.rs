//! `edge-node --log-format json`: two edge processes peered with each other;
//! a client joins one with a good token and once with a forged one, then the
//! other edge is killed. Every line either process wrote is a JSON object
//! with a level, a timestamp and a message; the meaningful events are there
//! with the ids an operator needs (a refused join with its reason, a join
//! with its channel id, relay links up and down, a peer seen dead by the
//! probes); no token and no secret appears anywhere.
mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_edge-node");

/// An edge process; killed and reaped when dropped.
struct EdgeProcess {
    child: Child,
    admin: SocketAddr,
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EdgeProcess {
    /// Everything it logged (once it has exited).
    fn logs(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut s).unwrap();
        }
        s
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
    }
}

fn start(
    dir: &Path,
    id: u32,
    listen: SocketAddr,
    admin: SocketAddr,
    peer: (u32, SocketAddr),
) -> EdgeProcess {
    let config = format!(
        r#"
[edge]
id = {id}
region = "eu"
city = "fra"
listen = "{listen}"
admin_listen = "{admin}"
[tls]
cert = "{d}/localhost.pem"
key = "{d}/localhost.key"
mesh_ca = "{d}/mesh-ca.pem"
# The dev CA doubles as the operator CA of the client certificate.
[client_tls]
mode = "files"
cert = "{d}/localhost.pem"
key = "{d}/localhost.key"
[[apps]]
id = "{APP}"
secrets_env = "RTN_TEST_APP_SECRET"
[[peers]]
id = {pid}
addr = "{paddr}"
server_name = "localhost"
region = "eu"
"#,
        d = dir.display(),
        pid = peer.0,
        paddr = peer.1,
    );
    let path = dir.join(format!("edge-{id}.toml"));
    std::fs::write(&path, config).unwrap();
    let child = Command::new(BIN)
        .args(["--log-format", "json", "run", "--config"])
        .arg(&path)
        .env("RTN_TEST_APP_SECRET", SECRET)
        .env("RUST_LOG", "info")
        // A killed peer's relay link is noticed by QUIC's idle timeout.
        .env("RTN_LIMITS_CLIENT_IDLE_TIMEOUT_MS", "1500")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    EdgeProcess { child, admin }
}

/// GET `path` on the admin port: the whole response, or empty.
async fn admin_get(e: &EdgeProcess, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(e.admin).await else {
        return String::new();
    };
    let _ = s
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// Wait until the edge's admin `path` answers 200 with a body containing
/// every one of `want`.
async fn wait_for(e: &mut EdgeProcess, path: &str, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = e.child.try_wait().unwrap() {
            panic!("edge exited ({status}):\n{}", e.logs());
        }
        let r = admin_get(e, path).await;
        if r.split(' ').nth(1) == Some("200") && want.iter().all(|w| r.contains(w)) {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never had {want:?}:\n{r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn json_lines(who: &str, logs: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{who}: not a JSON line ({e}): {l}"));
            assert!(v.is_object(), "{who}: {l}");
            for k in ["timestamp", "level"] {
                assert!(v[k].is_string(), "{who}: no {k}: {l}");
            }
            assert!(v["fields"]["message"].is_string(), "{who}: no message: {l}");
            v
        })
        .collect()
}

fn find<'a>(
    lines: &'a [serde_json::Value],
    message: &str,
    fields: &[(&str, serde_json::Value)],
) -> Option<&'a serde_json::Value> {
    lines.iter().find(|v| {
        v["fields"]["message"] == message && fields.iter().all(|(k, want)| v["fields"][*k] == *want)
    })
}

#[tokio::test]
async fn json_logs_carry_events_with_ids_and_no_credentials() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["dev-certs", "--name", "localhost", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let [a_addr, b_addr] = [testkit::ports::udp_local(), testkit::ports::udp_local()];
    let [a_admin, b_admin] = [testkit::ports::tcp_local(), testkit::ports::tcp_local()];
    let mut a = start(dir.path(), 1, a_addr, a_admin, (2, b_addr));
    let mut b = start(dir.path(), 2, b_addr, b_admin, (1, a_addr));
    wait_for(&mut a, "/readyz", &[]).await;
    wait_for(&mut b, "/readyz", &[]).await;

    let ca_pem = std::fs::read(dir.path().join("mesh-ca.pem")).unwrap();
    let ca = rustls_pemfile::certs(&mut &ca_pem[..])
        .next()
        .unwrap()
        .unwrap()
        .to_vec();
    let good = token("room", "alice", true, true);
    let forged = forged_token("room", "mallory");
    let mut c = RawClient::connect(a_addr, &ca).await;
    let refused = c.join_with(forged.clone(), "room", true).await;
    assert!(refused.is_err(), "a forged token must be refused");
    let joined = c.join_with(good.clone(), "room", true).await.unwrap();

    // Once the edges link up and probe each other (as their metrics say),
    // kill 2 without warning: 1 sees its relay link drop and its probes go
    // unanswered.
    let linked = |e: u32, p: u32| {
        [
            format!("rtn_edge_relay_links{{edge=\"{e}\"}} 1"),
            format!("rtn_edge_link_up{{edge=\"{e}\",peer=\"{p}\"}} 1"),
        ]
    };
    let (l1, l2) = (linked(1, 2), linked(2, 1));
    wait_for(&mut a, "/metrics", &[&l1[0], &l1[1]]).await;
    wait_for(&mut b, "/metrics", &[&l2[0], &l2[1]]).await;
    b.child.kill().unwrap();
    let _ = b.child.wait();
    wait_for(
        &mut a,
        "/metrics",
        &[
            "rtn_edge_link_up{edge=\"1\",peer=\"2\"} 0",
            "rtn_edge_relay_links{edge=\"1\"} 0",
        ],
    )
    .await;
    c.conn.close(0, b"done");
    c.endpoint.wait_idle().await;
    a.terminate();

    let a_logs = a.logs();
    let b_logs = b.logs();
    for (who, logs) in [("edge 1", &a_logs), ("edge 2", &b_logs)] {
        for secret in [good.as_str(), forged.as_str(), SECRET] {
            assert!(!logs.contains(secret), "{who} logged a credential:\n{logs}");
        }
    }
    let lines = json_lines("edge 1", &a_logs);
    json_lines("edge 2", &b_logs);
    let refusal = find(
        &lines,
        "join refused",
        &[("edge", 1.into()), ("reason", "token_bad_signature".into())],
    )
    .unwrap_or_else(|| panic!("no refused join with its reason:\n{a_logs}"));
    assert!(refusal["fields"]["remote"].is_string(), "{refusal}");
    assert_eq!(refusal["level"], "INFO");
    let join = find(&lines, "joined", &[("edge", 1.into())])
        .unwrap_or_else(|| panic!("no join:\n{a_logs}"));
    let channel = join["fields"]["channel"].as_str().unwrap();
    assert_eq!(channel, protocol::ChannelId(joined.channel_id).to_string());
    for (message, level) in [("relay link up", "INFO"), ("relay link down", "WARN")] {
        let l = find(&lines, message, &[("edge", 1.into()), ("peer", 2.into())])
            .unwrap_or_else(|| panic!("no {message:?} for peer 2:\n{a_logs}"));
        assert_eq!(l["level"], level, "{l}");
    }
    // Edge 2's death, seen by whichever comes first: its relay connection
    // going silent under the traffic, or the probes.
    let down = [
        "link down: relay connection silent",
        "link down: probes unanswered",
    ]
    .iter()
    .find_map(|m| find(&lines, m, &[("edge", 1.into()), ("peer", 2.into())]))
    .unwrap_or_else(|| panic!("no \"link down\" for peer 2:\n{a_logs}"));
    assert_eq!(down["level"], "WARN", "{down}");
    assert!(
        find(&lines, "signal received: draining", &[]).is_some(),
        "{a_logs}"
    );
    eprintln!(
        "json logs test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
