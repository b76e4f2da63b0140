//! The real `edge-node` binary as a child process, for the benchmarks that
//! measure an edge on its own (its RSS, its CPU): a config and dev
//! certificates in a scratch directory, readiness from its admin port, its
//! log kept beside the config.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edge_node::tls::DevPki;
use protocol::EdgeId;

use testkit::tokens::{APP, SECRET};

/// The `edge-node` binary next to the running executable (or one level up:
/// `target/release/deps` for tests).
pub fn find_edge_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let found = [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join("edge-node"))
        .find(|p| p.is_file());
    found
}

/// `given`, else the binary next to this one; a clear error if neither.
pub fn edge_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    match given.map(Path::to_path_buf).or_else(find_edge_binary) {
        Some(b) => Ok(b),
        None => anyhow::bail!(
            "no edge-node binary next to this one: build it (cargo build --release -p edge-node) or pass --edge-bin"
        ),
    }
}

pub struct ChildEdge {
    child: Child,
    dir: PathBuf,
    /// Where clients connect.
    pub addr: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    ca: rustls::pki_types::CertificateDer<'static>,
}

impl ChildEdge {
    /// Start `bin` as edge `id` with room for `max_sessions` (all from
    /// 127.0.0.1: the per-address and per-session admission limits are
    /// lifted) and `extra`
    /// appended to its `[edge]` section (e.g. `endpoints = 2`); returns once
    /// its admin port answers `/readyz`.
    pub async fn start(
        bin: &Path,
        id: EdgeId,
        max_sessions: usize,
        extra: &str,
    ) -> anyhow::Result<ChildEdge> {
        let dir = std::env::temp_dir().join(format!(
            "rtn-child-edge-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        let pki = DevPki::new()?;
        let (cert, key) = pki.issue_pem(&["localhost".into()])?;
        std::fs::write(dir.join("edge.pem"), cert)?;
        std::fs::write(dir.join("edge.key"), key)?;
        std::fs::write(dir.join("mesh-ca.pem"), pki.ca_pem())?;
        let (port, admin_port) = (
            testkit::ports::udp_local().port(),
            testkit::ports::tcp_local().port(),
        );
        // Every session comes from 127.0.0.1: the per-address admission
        // limits (256 connections, 20 a second) would refuse all but the
        // first few hundred, so they are lifted; and a benchmark's
        // publishers send flat out on purpose, so the per-session media
        // and drop limits are too. The session cap stays.
        let config = format!(
            "[edge]\nid = {id}\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\n{extra}\n\
             [tls]\ncert = {cert:?}\nkey = {key:?}\nmesh_ca = {ca:?}\n\
             [client_tls]\nmode = \"files\"\ncert = {cert:?}\nkey = {key:?}\n\
             [[apps]]\nid = \"{APP}\"\nsecrets = [\"{SECRET}\"]\n\
             [admission]\nretry = \"never\"\nconnections_per_ip_per_s = 0\n\
             max_connections_per_ip = {max_sessions}\njoins_per_token_per_s = 0\n\
             media_bytes_per_session_per_s = 0\ndropped_datagrams_per_session_per_s = 0\n",
            cert = dir.join("edge.pem"),
            key = dir.join("edge.key"),
            ca = dir.join("mesh-ca.pem"),
        );
        std::fs::write(dir.join("edge.toml"), config)?;
        let log = std::fs::File::create(dir.join("edge.log"))?;
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(dir.join("edge.toml"))
            .env("RTN_LIMITS_MAX_SESSIONS", max_sessions.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", bin.display()))?;
        let edge = ChildEdge {
            child,
            dir,
            addr: ([127, 0, 0, 1], port).into(),
            admin: ([127, 0, 0, 1], admin_port).into(),
            ca: pki.ca_der(),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if http_get(edge.admin, "/readyz").await.is_some() {
                return Ok(edge);
            }
            if Instant::now() > deadline {
                let log = edge.log();
                drop(edge);
                anyhow::bail!(
                    "{} did not get ready in 15 s; its log:\n{log}",
                    bin.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CA its certificate chains to.
    pub fn ca(&self) -> rustls::pki_types::CertificateDer<'static> {
        self.ca.clone()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("edge.log")).unwrap_or_default()
    }

    /// Its `/metrics` text (empty if it does not answer).
    pub async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").await.unwrap_or_default()
    }
}

/// Dropping it kills the process and removes its directory, so a benchmark
/// that fails or panics midway leaves no edge behind.
impl Drop for ChildEdge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The body of a GET on the edge's admin port, if it answered 200.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    match testkit::scrape::http(addr, "GET", path, &[], "").await {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}
