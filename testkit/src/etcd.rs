//! A local single-member etcd server as a child process (Debian's
//! `etcd-server`), on free loopback ports with a temporary data dir: for
//! tests and the one-machine lab, wherever more than one process needs the
//! store. Stopped (killed) on drop.
//!
//! [`EtcdServer::start_tls`] serves clients over TLS with client
//! certificates required, as the deployed cluster does, from a throwaway
//! [`EtcdTestPki`].

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use control::store::{ControlStore, EtcdStore, EtcdTls, StoreError};

pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_url: String,
    peer_url: String,
    pki: Option<EtcdTestPki>,
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

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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
        let scheme = if pki.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{}", free_port()?);
        let peer_url = format!("http://127.0.0.1:{}", free_port()?);
        if let Some(pki) = &pki {
            std::fs::create_dir(dir.path().join("tls"))?;
            std::fs::write(dir.path().join("tls/ca.pem"), &pki.ca_pem)?;
            std::fs::write(dir.path().join("tls/server.pem"), &pki.server_cert_pem)?;
            write_private(&dir.path().join("tls/server.key"), &pki.server_key_pem)?;
        }
        let mut s = EtcdServer {
            child: None,
            dir,
            client_url,
            peer_url,
            pki,
        };
        s.spawn()?;
        Ok(s)
    }

    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The PKI of a server started with [`EtcdServer::start_tls`].
    pub fn pki(&self) -> Option<&EtcdTestPki> {
        self.pki.as_ref()
    }

    /// TLS settings of a valid client (None for a plain http server).
    pub fn client_tls(&self) -> Option<EtcdTls> {
        self.pki.as_ref().map(EtcdTestPki::client_tls)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let mut cmd = Command::new("etcd");
        if self.pki.is_some() {
            let tls = self.dir.path().join("tls");
            cmd.arg("--cert-file")
                .arg(tls.join("server.pem"))
                .arg("--key-file")
                .arg(tls.join("server.key"))
                .arg("--trusted-ca-file")
                .arg(tls.join("ca.pem"))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", "rtn", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .arg(format!("--initial-cluster=rtn={}", self.peer_url))
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

    /// Kill the server (as an outage would); the data dir is kept.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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
            match EtcdStore::connect_with(vec![self.client_url.clone()], tls.as_ref()).await {
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
