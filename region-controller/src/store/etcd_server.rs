//! A local single-member etcd server as a child process (Debian's
//! `etcd-server`), on free loopback ports with a temporary data dir: for
//! tests and the one-machine lab, wherever more than one process needs the
//! store. Stopped (killed) on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{ControlStore, EtcdStore, StoreError};

pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_url: String,
    peer_url: String,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdServer {
    /// Start `etcd` from `$PATH`; fails with a hint when it is missing.
    pub fn start() -> std::io::Result<EtcdServer> {
        let dir = tempfile::tempdir()?;
        let client_url = format!("http://127.0.0.1:{}", free_port()?);
        let peer_url = format!("http://127.0.0.1:{}", free_port()?);
        let mut s = EtcdServer {
            child: None,
            dir,
            client_url,
            peer_url,
        };
        s.spawn()?;
        Ok(s)
    }

    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("etcd")
            .args(["--name", "rtn", "--data-dir"])
            .arg(self.dir.path())
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
        for _ in 0..100 {
            match EtcdStore::connect(vec![self.client_url.clone()]).await {
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
