//! `EtcdStore` with several endpoints of which some are down, as when one
//! member of a three-member cluster died: every call and watch must keep
//! working through the live ones. (The processes-and-cluster fault tests are
//! `edge-node/tests/etcd_cluster.rs`.)
#![cfg(feature = "etcd")]

use std::net::TcpListener;
use std::time::{Duration, Instant};

use bytes::Bytes;
use control::store::{ControlStore, EtcdStore, WatchEvent};
use testkit::EtcdServer;

/// A loopback URL where nothing listens (connections are refused).
fn dead_endpoint() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn calls_keep_working_with_dead_endpoints_in_the_list() {
    let etcd = EtcdServer::start().unwrap();
    etcd.store().await.unwrap(); // up
    let endpoints = vec![dead_endpoint(), etcd.client_url(), dead_endpoint()];
    // Both constructors: `connect_with` proves a member answers first.
    let store = EtcdStore::connect(endpoints.clone())
        .await
        .expect("connects through the live member");
    let lazy = EtcdStore::lazy(endpoints).unwrap();
    for s in [&store, &lazy] {
        let lease = s.grant_lease(Duration::from_secs(3)).await.unwrap();
        let mut watch = s.watch_prefix("/rtn/dead/", 0).await.unwrap();
        let started = Instant::now();
        let mut failed = 0;
        for i in 0..60 {
            let key = format!("/rtn/dead/{i}");
            if s.put(&key, Bytes::from("v"), Some(lease)).await.is_err() {
                failed += 1;
            }
            if s.keep_alive(lease).await.is_err() {
                failed += 1;
            }
            if s.get(&key).await.is_err() {
                failed += 1;
            }
        }
        // Every call answered: before the fix, about half went to a dead
        // endpoint and failed (and leases kept alive at TTL/3 expired).
        assert_eq!(failed, 0, "calls failed with a dead endpoint in the list");
        let mut seen = 0;
        while seen < 60 {
            let batch = tokio::time::timeout(Duration::from_secs(10), watch.recv())
                .await
                .expect("watch delivers")
                .expect("watch open")
                .expect("no error");
            seen += batch
                .iter()
                .filter(|e| matches!(e, WatchEvent::Put(_)))
                .count();
        }
        s.revoke_lease(lease).await.unwrap();
        eprintln!(
            "180 calls and a watch of 60 puts through 1 live endpoint of 3 in {:?}",
            started.elapsed()
        );
    }
}
