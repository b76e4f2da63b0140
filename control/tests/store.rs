//! The stores held to the conformance suite: the embedded one, and a real
//! etcd started for the test (Debian's `etcd-server`) on free loopback ports
//! with a temporary data dir; reconnection and watch resumption across an
//! etcd restart; an election through a store outage.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use control::store::{ControlStore, Election, MemoryStore, WatchEvent};
use testkit::{store_conformance, EtcdServer, OutageStore};

#[tokio::test]
async fn memory_store_conforms() {
    store_conformance::run_all(Arc::new(MemoryStore::new()), "/rtn/test/").await;
}

#[tokio::test]
async fn etcd_store_conforms() {
    let etcd = EtcdServer::start().unwrap();
    let store = Arc::new(etcd.store().await.unwrap());
    store_conformance::run_all(store, "/rtn/test/").await;
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

const TTL: Duration = Duration::from_millis(600);

#[tokio::test]
async fn a_campaign_cut_short_by_an_outage_fails_and_a_later_one_leads() {
    let store = OutageStore::new(Arc::new(MemoryStore::new()));
    let a = Election::new(store.clone(), "/leader", "a", TTL);
    let b = Arc::new(Election::new(store.clone(), "/leader", "b", TTL));
    let lead_a = a.campaign().await.unwrap();
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.campaign().await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "b waits while a leads");
    store.set_down(true);
    let failed = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("the outage ends the campaign")
        .unwrap();
    assert!(failed.is_err());
    store.set_down(false);
    // A campaign cancelled while it waits leaves nothing behind either.
    let cancelled = tokio::time::timeout(Duration::from_millis(100), b.campaign()).await;
    assert!(cancelled.is_err(), "a still leads");
    assert!(
        !lead_a.is_lost(),
        "a short outage does not cost a its lease"
    );
    a.resign(lead_a).await.unwrap();
    let lead_b = tokio::time::timeout(Duration::from_secs(2), b.campaign())
        .await
        .expect("b takes over once a resigns")
        .unwrap();
    assert_eq!(b.leader().await.unwrap().as_deref(), Some("b"));
    assert!(!lead_b.is_lost());
}
