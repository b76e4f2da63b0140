//! The conformance suite against a real etcd started for the test (Debian's
//! `etcd-server`), on free loopback ports with a temporary data dir; plus
//! reconnection and watch resumption across an etcd restart.
#![cfg(feature = "etcd")]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use region_controller::store::{conformance, ControlStore, EtcdStore, WatchEvent};

struct Etcd {
    child: Child,
    dir: tempfile::TempDir,
    client_url: String,
    peer_url: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let child = Self::spawn(dir.path(), &client_url, &peer_url);
        Etcd {
            child,
            dir,
            client_url,
            peer_url,
        }
    }

    fn spawn(dir: &std::path::Path, client: &str, peer: &str) -> Child {
        Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(dir)
            .args([
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
            ])
            .args([
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
            ])
            .arg(format!("--initial-cluster=test={peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd must be installed (apt-get install etcd-server)")
    }

    fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.dir.path(), &self.client_url, &self.peer_url);
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn store(&self) -> EtcdStore {
        for _ in 0..100 {
            if let Ok(s) = EtcdStore::connect(vec![self.client_url.clone()]).await {
                if s.get("/probe").await.is_ok() {
                    return s;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("etcd did not come up");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn etcd_store_conforms() {
    let etcd = Etcd::start();
    let store = Arc::new(etcd.store().await);
    conformance::run_all(store, "/rtn/test/").await;
}

#[tokio::test]
async fn etcd_restart_is_survived_by_calls_and_watches() {
    let mut etcd = Etcd::start();
    let store = etcd.store().await;
    let rev = store
        .put("/rtn/w/a", Bytes::from_static(b"1"), None)
        .await
        .unwrap();
    let mut watch = store.watch_prefix("/rtn/w/", rev + 1).await.unwrap();
    etcd.restart();
    // Calls fail while it is down and work again once it is back.
    let mut ok = false;
    for _ in 0..100 {
        if store
            .put("/rtn/w/b", Bytes::from_static(b"2"), None)
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "store usable again after etcd restarted");
    // The watch resumed from where it was and delivers the write exactly once.
    let events = tokio::time::timeout(Duration::from_secs(20), watch.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(&events[0], WatchEvent::Put(kv) if kv.key == "/rtn/w/b"));
    store
        .put("/rtn/w/c", Bytes::from_static(b"3"), None)
        .await
        .unwrap();
    let events = tokio::time::timeout(Duration::from_secs(10), watch.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].key(), "/rtn/w/c");
}
