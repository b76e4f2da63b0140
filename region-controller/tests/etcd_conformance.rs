//! The conformance suite against a real etcd started for the test (Debian's
//! `etcd-server`), on free loopback ports with a temporary data dir; plus
//! reconnection and watch resumption across an etcd restart.
#![cfg(feature = "etcd")]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use region_controller::store::{conformance, ControlStore, EtcdServer, WatchEvent};

#[tokio::test]
async fn etcd_store_conforms() {
    let etcd = EtcdServer::start().unwrap();
    let store = Arc::new(etcd.store().await.unwrap());
    conformance::run_all(store, "/rtn/test/").await;
}

#[tokio::test]
async fn etcd_restart_is_survived_by_calls_and_watches() {
    let mut etcd = EtcdServer::start().unwrap();
    let store = etcd.store().await.unwrap();
    let rev = store
        .put("/rtn/w/a", Bytes::from_static(b"1"), None)
        .await
        .unwrap();
    let mut watch = store.watch_prefix("/rtn/w/", rev + 1).await.unwrap();
    etcd.restart().unwrap();
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
    // A put that timed out while etcd came back may have been applied too
    // (puts are repeated: same value, another revision), so /rtn/w/b may have
    // been written more than once. The watch resumed from where it was:
    // every write once, in revision order, none missed, none repeated.
    let b = store.get("/rtn/w/b").await.unwrap().expect("b written");
    let mut seen = vec![];
    while seen.last() != Some(&b.mod_revision) {
        let events = tokio::time::timeout(Duration::from_secs(20), watch.recv())
            .await
            .expect("the watch delivers the writes made after the restart")
            .unwrap()
            .unwrap();
        for e in events {
            assert!(
                matches!(&e, WatchEvent::Put(kv) if kv.key == "/rtn/w/b"),
                "{e:?}"
            );
            seen.push(e.revision());
        }
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {seen:?}"
    );
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
    assert!(events[0].revision() > b.mod_revision);
}
