//! The one etcd process harness (Debian's `etcd-server`): members as child
//! processes on free loopback ports with temporary data dirs, killed on
//! drop.
//!
//! - [`EtcdServer`]: a single member, for tests and the one-machine lab,
//!   wherever more than one process needs the store;
//!   [`EtcdServer::start_tls`] serves clients over TLS with client
//!   certificates required, as the deployed cluster does, from a throwaway
//!   [`EtcdTestPki`].
//! - [`EtcdCluster`]: a static n-member cluster whose members are killed,
//!   paused and restarted one by one or all together (fault tests).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use control::store::{ControlStore, EtcdStore, EtcdTls, StoreError};

use crate::wait::eventually;

pub struct EtcdServer {
    member: Member,
    dir: tempfile::TempDir,
    pki: Option<EtcdTestPki>,
}

/// One etcd member process: its name, ports and data dir.
struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    data: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn new(name: String, data: PathBuf) -> std::io::Result<Member> {
        Ok(Member {
            name,
            client: crate::ports::tcp_local(),
            peer: crate::ports::tcp_local(),
            data,
            child: None,
        })
    }

    fn client_url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.client)
    }

    fn peer_url(&self) -> String {
        format!("http://{}", self.peer)
    }

    /// Start the process: a member of `initial_cluster`, serving clients
    /// over TLS with client certificates required when `tls` names a folder
    /// with `ca.pem`, `server.pem` and `server.key`. Default raft timers
    /// (heartbeat 100 ms, election 1 s): as deployed. The `--initial-*`
    /// flags only matter on the first start; a restart finds its data dir
    /// and rejoins with it.
    fn spawn(&mut self, initial_cluster: &str, tls: Option<&Path>) -> std::io::Result<()> {
        let mut cmd = Command::new("etcd");
        if let Some(tls) = tls {
            cmd.arg("--cert-file")
                .arg(tls.join("server.pem"))
                .arg("--key-file")
                .arg(tls.join("server.key"))
                .arg("--trusted-ca-file")
                .arg(tls.join("ca.pem"))
                .arg("--client-cert-auth");
        }
        let client_url = self.client_url(if tls.is_some() { "https" } else { "http" });
        let child = cmd
            .args(["--name", &self.name, "--data-dir"])
            .arg(&self.data)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &self.peer_url()])
            .args(["--initial-advertise-peer-urls", &self.peer_url()])
            .arg(format!("--initial-cluster={initial_cluster}"))
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "rtn-test"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot start etcd ({e}); install it: apt-get install etcd-server"),
                )
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL the process (its data dir is kept).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} {}", c.id());
        }
    }
}

/// A throwaway PKI for a test etcd: a CA, a server certificate for
/// 127.0.0.1 and localhost, and a client certificate, all PEM.
#[derive(Clone)]
pub struct EtcdTestPki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl EtcdTestPki {
    pub fn generate() -> Result<Self, rcgen::Error> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "RTN test etcd CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::from_params(&ca, &ca_key);
        let issue = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let mut p = CertificateParams::new(names)?;
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![usage];
            let key = KeyPair::generate()?;
            let cert = p.signed_by(&key, &issuer)?;
            Ok::<_, rcgen::Error>((cert.pem(), key.serialize_pem()))
        };
        let (server_cert_pem, server_key_pem) = issue(
            vec!["127.0.0.1".into(), "localhost".into()],
            "rtn test etcd",
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (client_cert_pem, client_key_pem) = issue(
            Vec::new(),
            "rtn test client",
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        Ok(EtcdTestPki {
            ca_pem: ca_cert.pem(),
            server_cert_pem,
            server_key_pem,
            client_cert_pem,
            client_key_pem,
        })
    }

    /// TLS settings of a client that trusts this CA and presents the client
    /// certificate.
    pub fn client_tls(&self) -> EtcdTls {
        EtcdTls::new(self.ca_pem.as_bytes())
            .and_then(|t| {
                t.with_client_cert(
                    self.client_cert_pem.as_bytes(),
                    self.client_key_pem.as_bytes(),
                )
            })
            .expect("generated PEM is valid")
    }

    /// Write `etcd-ca.pem`, `etcd-client.pem` and `etcd-client.key` (0600)
    /// into `dir`, for configs that take paths. Returns the three paths.
    pub fn write_client_files(&self, dir: &Path) -> std::io::Result<[PathBuf; 3]> {
        let paths = [
            dir.join("etcd-ca.pem"),
            dir.join("etcd-client.pem"),
            dir.join("etcd-client.key"),
        ];
        std::fs::write(&paths[0], &self.ca_pem)?;
        std::fs::write(&paths[1], &self.client_cert_pem)?;
        write_private(&paths[2], &self.client_key_pem)?;
        Ok(paths)
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(contents.as_bytes())
}

impl EtcdServer {
    /// Start `etcd` from `$PATH`; fails with a hint when it is missing.
    pub fn start() -> std::io::Result<EtcdServer> {
        Self::start_with(None)
    }

    /// Start `etcd` serving clients over TLS only (`https://127.0.0.1:…`),
    /// client certificates required, from a freshly generated
    /// [`EtcdTestPki`] ([`EtcdServer::pki`]).
    pub fn start_tls() -> std::io::Result<EtcdServer> {
        let pki = EtcdTestPki::generate().map_err(std::io::Error::other)?;
        Self::start_with(Some(pki))
    }

    fn start_with(pki: Option<EtcdTestPki>) -> std::io::Result<EtcdServer> {
        let dir = tempfile::tempdir()?;
        if let Some(pki) = &pki {
            std::fs::create_dir(dir.path().join("tls"))?;
            std::fs::write(dir.path().join("tls/ca.pem"), &pki.ca_pem)?;
            std::fs::write(dir.path().join("tls/server.pem"), &pki.server_cert_pem)?;
            write_private(&dir.path().join("tls/server.key"), &pki.server_key_pem)?;
        }
        let member = Member::new("rtn".into(), dir.path().join("data"))?;
        let mut s = EtcdServer { member, dir, pki };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let cluster = format!("rtn={}", self.member.peer_url());
        let tls = self.pki.is_some().then(|| self.dir.path().join("tls"));
        self.member.spawn(&cluster, tls.as_deref())
    }

    pub fn client_url(&self) -> String {
        self.member
            .client_url(if self.pki.is_some() { "https" } else { "http" })
    }

    /// The PKI of a server started with [`EtcdServer::start_tls`].
    pub fn pki(&self) -> Option<&EtcdTestPki> {
        self.pki.as_ref()
    }

    /// TLS settings of a valid client (None for a plain http server).
    pub fn client_tls(&self) -> Option<EtcdTls> {
        self.pki.as_ref().map(EtcdTestPki::client_tls)
    }

    /// Kill the server (as an outage would); the data dir is kept.
    pub fn stop(&mut self) {
        self.member.kill();
    }

    /// Start it again on the same ports and data.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        self.spawn()
    }

    /// A connected store, once the server answers (bounded wait).
    pub async fn store(&self) -> Result<EtcdStore, StoreError> {
        let mut last = StoreError::Unavailable("etcd did not come up".into());
        let tls = self.client_tls();
        for _ in 0..100 {
            match EtcdStore::connect_with(vec![self.client_url()], tls.as_ref()).await {
                Ok(s) => match s.get("/rtn-health-check").await {
                    Ok(_) => return Ok(s),
                    Err(e) => last = e,
                },
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A static three-member (or n-member) etcd cluster on loopback, plain
/// http.
pub struct EtcdCluster {
    _dir: tempfile::TempDir,
    members: Vec<Member>,
}

/// What `/v3/maintenance/status` says about a member.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    pub member_id: String,
    pub leader: String,
    pub revision: i64,
    pub raft_term: u64,
    pub applied: u64,
}

impl EtcdCluster {
    pub fn start(n: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().unwrap();
        let members = (0..n)
            .map(|i| Member::new(format!("m{i}"), dir.path().join(format!("data-{i}"))).unwrap())
            .collect();
        let mut c = EtcdCluster { _dir: dir, members };
        for i in 0..n {
            c.spawn(i);
        }
        c
    }

    fn spawn(&mut self, i: usize) {
        let cluster = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        self.members[i].spawn(&cluster, None).unwrap();
    }

    /// How many members it has.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url("http")).collect()
    }

    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url("http")
    }

    /// SIGKILL member `i` (its data dir is kept).
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Start member `i` again on its ports and data.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// SIGSTOP every member: the cluster hangs (connections open, no
    /// answers), as a cluster behind a partition or frozen VMs would.
    pub fn pause_all(&self) {
        for m in &self.members {
            m.signal("-STOP");
        }
    }

    pub fn resume_all(&self) {
        for m in &self.members {
            m.signal("-CONT");
        }
    }

    /// SIGSTOP member `i` alone: it hangs with its connections open, as a
    /// member on a stalled disk or a frozen VM does (the others go on).
    pub fn pause(&self, i: usize) {
        self.members[i].signal("-STOP");
    }

    pub fn resume(&self, i: usize) {
        self.members[i].signal("-CONT");
    }

    /// Established TCP connections to member `i`'s client port: how many
    /// clients (and the member's own HTTP gateway) talk to it now.
    pub fn connections_to(&self, i: usize) -> usize {
        let port = self.members[i].client.port();
        let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        tcp.lines()
            .skip(1)
            .filter(|row| {
                let cols: Vec<&str> = row.split_whitespace().collect();
                // local_address is IP:PORT in hex; state 01 is ESTABLISHED.
                cols.len() > 3
                    && cols[3] == "01"
                    && cols[1]
                        .rsplit(':')
                        .next()
                        .and_then(|p| u16::from_str_radix(p, 16).ok())
                        == Some(port)
            })
            .count()
    }

    /// The member's status from its HTTP gateway; None if it does not answer.
    pub async fn status(&self, i: usize) -> Option<MemberStatus> {
        let (code, body) = crate::scrape::http(
            self.members[i].client,
            "POST",
            "/v3/maintenance/status",
            &[("content-type", "application/json")],
            "{}",
        )
        .await
        .ok()?;
        if code != 200 {
            return None;
        }
        let v = json_of(&body)?;
        let num = |v: &serde_json::Value| -> Option<i64> {
            v.as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| v.as_i64())
        };
        Some(MemberStatus {
            member_id: v["header"]["member_id"].as_str()?.to_string(),
            leader: v["leader"].as_str().unwrap_or("").to_string(),
            revision: num(&v["header"]["revision"]).unwrap_or(0),
            raft_term: num(&v["raftTerm"]).unwrap_or(0) as u64,
            applied: num(&v["raftAppliedIndex"]).unwrap_or(0) as u64,
        })
    }

    /// The index of the member that leads, as the answering members agree.
    pub async fn leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        for i in 0..self.size() {
            ids.push(self.status(i).await);
        }
        let leader = ids.iter().flatten().map(|s| s.leader.clone()).next()?;
        ids.iter()
            .position(|s| s.as_ref().is_some_and(|s| s.member_id == leader))
    }

    /// Wait until every running member answers and one leads.
    pub async fn wait_healthy(&self, secs: u64) -> Duration {
        eventually(secs, "etcd cluster healthy", || async {
            for i in 0..self.size() {
                if self.members[i].child.is_some() && self.status(i).await.is_none() {
                    return false;
                }
            }
            self.leader().await.is_some()
        })
        .await
    }

    /// A store over every member's endpoint, once one answers.
    pub async fn store(&self) -> EtcdStore {
        store_on(self.endpoints()).await
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A connected store on `endpoints` (bounded wait).
pub async fn store_on(endpoints: Vec<String>) -> EtcdStore {
    for _ in 0..100 {
        if let Ok(s) = EtcdStore::connect(endpoints.clone()).await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no etcd store on {endpoints:?}");
}

/// The first JSON object in a body (tolerates chunked framing around it).
fn json_of(body: &str) -> Option<serde_json::Value> {
    let (a, b) = (body.find('{')?, body.rfind('}')?);
    serde_json::from_str(&body[a..=b]).ok()
}
