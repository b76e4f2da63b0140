//! The conformance suite every [`ControlStore`] must pass: run against the
//! embedded store and against a real etcd (`control/tests/`).
//! Each check uses its own key prefix so the suite can share a store.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use control::store::{ControlStore, Election, Expect, StoreError, WatchEvent, WatchStream};

/// Lease TTL used by the suite: etcd's minimum is about 2 s by default.
pub const TTL: Duration = Duration::from_secs(2);

async fn next_events(w: &mut WatchStream) -> Vec<WatchEvent> {
    match tokio::time::timeout(Duration::from_secs(10), w.recv()).await {
        Ok(Some(Ok(events))) => events,
        other => panic!("watch produced no events: {other:?}"),
    }
}

pub async fn kv_basics<S: ControlStore>(s: &S, p: &str) {
    let k = format!("{p}kv/a");
    assert_eq!(s.get(&k).await.unwrap(), None);
    let r1 = s.put(&k, Bytes::from_static(b"1"), None).await.unwrap();
    let r2 = s.put(&k, Bytes::from_static(b"2"), None).await.unwrap();
    assert!(r2 > r1, "revisions increase");
    let kv = s.get(&k).await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_ref(), kv.create_revision, kv.mod_revision),
        (&b"2"[..], r1, r2)
    );
    s.put(&format!("{p}kv/b"), Bytes::from_static(b"b"), None)
        .await
        .unwrap();
    s.put(&format!("{p}kvz"), Bytes::from_static(b"z"), None)
        .await
        .unwrap();
    let (all, rev) = s.get_prefix(&format!("{p}kv/")).await.unwrap();
    assert_eq!(
        all.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
        vec![k.as_str(), &format!("{p}kv/b")]
    );
    assert!(rev >= r2);
    assert!(s.delete(&k).await.unwrap());
    assert!(!s.delete(&k).await.unwrap());
    assert_eq!(s.get(&k).await.unwrap(), None);
}

pub async fn compare_and_swap<S: ControlStore>(s: &S, p: &str) {
    let k = format!("{p}cas/x");
    let r = s
        .compare_and_swap(&k, Expect::Absent, Bytes::from_static(b"a"), None)
        .await
        .unwrap()
        .unwrap();
    let lost = s
        .compare_and_swap(&k, Expect::Absent, Bytes::from_static(b"b"), None)
        .await
        .unwrap();
    assert_eq!(lost.unwrap_err().unwrap().value.as_ref(), b"a");
    let stale = s
        .compare_and_swap(
            &k,
            Expect::ModRevision(r - 1),
            Bytes::from_static(b"c"),
            None,
        )
        .await
        .unwrap();
    assert!(stale.is_err());
    let r2 = s
        .compare_and_swap(&k, Expect::ModRevision(r), Bytes::from_static(b"d"), None)
        .await
        .unwrap()
        .unwrap();
    assert!(r2 > r);
    assert_eq!(s.get(&k).await.unwrap().unwrap().value.as_ref(), b"d");
}

pub async fn leases<S: ControlStore>(s: &S, p: &str) {
    let lease = s.grant_lease(TTL).await.unwrap();
    let k = format!("{p}lease/edge-1");
    s.put(&k, Bytes::from_static(b"up"), Some(lease))
        .await
        .unwrap();
    let (_, rev) = s.get_prefix(&format!("{p}lease/")).await.unwrap();
    let mut w = s
        .watch_prefix(&format!("{p}lease/"), rev + 1)
        .await
        .unwrap();
    // Kept alive past its TTL, the key stays.
    for _ in 0..4 {
        tokio::time::sleep(TTL / 3).await;
        s.keep_alive(lease).await.unwrap();
    }
    assert!(
        s.get(&k).await.unwrap().is_some(),
        "kept-alive lease keeps its key"
    );
    // Left alone, it expires and the key is deleted, with a watch event.
    let deleted = tokio::time::timeout(TTL * 4, async {
        loop {
            if next_events(&mut w)
                .await
                .iter()
                .any(|e| matches!(e, WatchEvent::Delete { key, .. } if *key == k))
            {
                return;
            }
        }
    })
    .await;
    assert!(deleted.is_ok(), "lease expiry deletes its keys");
    assert_eq!(s.get(&k).await.unwrap(), None);
    assert!(matches!(
        s.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    // Revoking deletes at once.
    let lease = s.grant_lease(TTL).await.unwrap();
    s.put(&k, Bytes::from_static(b"up"), Some(lease))
        .await
        .unwrap();
    s.revoke_lease(lease).await.unwrap();
    assert_eq!(s.get(&k).await.unwrap(), None);
    // Writing under an unknown lease fails.
    assert!(s.put(&k, Bytes::new(), Some(lease)).await.is_err());
}

pub async fn watches<S: ControlStore>(s: &S, p: &str) {
    let prefix = format!("{p}watch/");
    let first = s
        .put(&format!("{prefix}a"), Bytes::from_static(b"1"), None)
        .await
        .unwrap();
    s.put(&format!("{p}elsewhere"), Bytes::from_static(b"x"), None)
        .await
        .unwrap();
    s.put(&format!("{prefix}b"), Bytes::from_static(b"2"), None)
        .await
        .unwrap();
    // From a past revision: the history since, only under the prefix.
    let mut w = s.watch_prefix(&prefix, first).await.unwrap();
    let mut seen = vec![];
    while seen.len() < 2 {
        seen.extend(next_events(&mut w).await);
    }
    let keys: Vec<&str> = seen.iter().map(|e| e.key()).collect();
    assert_eq!(keys, vec![format!("{prefix}a"), format!("{prefix}b")]);
    assert!(seen.windows(2).all(|p| p[0].revision() < p[1].revision()));
    // Then live changes, deletes included.
    s.delete(&format!("{prefix}a")).await.unwrap();
    let ev = next_events(&mut w).await;
    assert!(matches!(&ev[0], WatchEvent::Delete { key, .. } if *key == format!("{prefix}a")));
    // Resuming from the last seen revision + 1 misses nothing and repeats nothing.
    let last = ev[0].revision();
    drop(w);
    s.put(&format!("{prefix}c"), Bytes::from_static(b"3"), None)
        .await
        .unwrap();
    let mut w = s.watch_prefix(&prefix, last + 1).await.unwrap();
    let ev = next_events(&mut w).await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].key(), format!("{prefix}c"));
}

pub async fn election<S: ControlStore>(s: Arc<S>, p: &str) {
    let key = format!("{p}election/region-eu");
    let a = Election::new(s.clone(), &key, "controller-a", TTL);
    let b = Election::new(s.clone(), &key, "controller-b", TTL);
    let lead = a.campaign().await.unwrap();
    assert_eq!(a.leader().await.unwrap().as_deref(), Some("controller-a"));
    let standby = tokio::spawn(async move {
        let l = b.campaign().await.unwrap();
        (b, l)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!standby.is_finished(), "only one leader at a time");
    // Resigning hands over at once.
    a.resign(lead).await.unwrap();
    let (b, lead_b) = tokio::time::timeout(Duration::from_secs(5), standby)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.leader().await.unwrap().as_deref(), Some("controller-b"));
    // A leader that dies (keepalive stops) is replaced within one TTL or so.
    let c = Election::new(s.clone(), &key, "controller-c", TTL);
    let standby = tokio::spawn(async move { c.campaign().await.unwrap() });
    drop(lead_b); // stops the keepalive, as a crash would
    let started = tokio::time::Instant::now();
    let _lead_c = tokio::time::timeout(TTL * 3, standby)
        .await
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() <= TTL * 2,
        "failover took {:?}",
        started.elapsed()
    );
}

/// Every check, in sequence, under `prefix`.
pub async fn run_all<S: ControlStore>(s: Arc<S>, prefix: &str) {
    kv_basics(&*s, prefix).await;
    compare_and_swap(&*s, prefix).await;
    watches(&*s, prefix).await;
    leases(&*s, prefix).await;
    election(s, prefix).await;
}
