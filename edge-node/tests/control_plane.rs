//! Edges and a region controller over the embedded control store, in one
//! process: registration, probes, routes computed and used, a killed edge
//! leaving the registry, a draining edge marked as such. (The same flows
//! across processes with real etcd are in `control_plane_etcd.rs`.)
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use control::keys::KeyLayout;
use control::records::{EdgeRecord, EdgeState, Record, RegionRecord, RoutesRecord};
use control::store::{ControlStore, MemoryStore, WatchEvent};
use edge_node::{Edge, EdgeConfig, EdgeOptions};
use protocol::pb::server_frame::Kind as SK;
use region_controller::controller::{Controller, RoutingOptions};

const CITIES: [&str; 3] = ["fra", "ams", "lhr"];

async fn edge(pki: &edge_node::tls::DevPki, id: u32, store: Arc<dyn ControlStore>) -> Edge {
    edge_in(pki, id, store, "eu", CITIES[(id as usize - 1) % 3]).await
}

async fn edge_in(
    pki: &edge_node::tls::DevPki,
    id: u32,
    store: Arc<dyn ControlStore>,
    region: &str,
    city: &str,
) -> Edge {
    edge_with(pki, config(id, region, city), store).await
}

/// The dev config of edge `id` in `region`'s `city`.
fn config(id: u32, region: &str, city: &str) -> EdgeConfig {
    let mut cfg = EdgeConfig::dev(id, APP, SECRET);
    cfg.edge.region = region.into();
    cfg.edge.city = city.into();
    cfg
}

async fn edge_with(
    pki: &edge_node::tls::DevPki,
    cfg: EdgeConfig,
    store: Arc<dyn ControlStore>,
) -> Edge {
    let opts = EdgeOptions {
        tls: Some(pki.material(&["localhost".into()]).unwrap()),
        client_cert: Some(pki.client_cert(&["localhost".into()]).unwrap()),
        store: Some(store),
        ..Default::default()
    };
    Edge::start(cfg, opts).await.unwrap()
}

fn controller(store: Arc<dyn ControlStore>, name: &str) -> Controller {
    Controller::start(
        store,
        KeyLayout::default(),
        RoutingOptions::quick("eu", name),
    )
}

/// Poll `check` every 50 ms until it holds, or fail after `secs`.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client of `from` sends a message in a room a client of `to` is in,
/// and it arrives.
async fn message_arrives(pki: &edge_node::tls::DevPki, from: &Edge, to: &Edge, payload: &[u8]) {
    let ca = pki.ca_der().to_vec();
    let mut a = RawClient::connect(from.addr(), &ca).await;
    let mut c = RawClient::connect(to.addr(), &ca).await;
    c.join("room", "carol").await;
    let ja = a.join("room", "alice").await;
    c.expect(|f| match f {
        SK::MemberJoined(m) if m.user_id == "alice" => Some(()),
        _ => None,
    })
    .await;
    a.message(ja.channel_id, 1, payload).await;
    let m = c
        .expect(|f| match f {
            SK::Message(m) => Some(m),
            _ => None,
        })
        .await;
    assert_eq!(m.payload, payload);
}

/// A region leader ("ctl-a") and edges 1..=3 on `store`.
async fn leader_and_three_edges(
    store: Arc<dyn ControlStore>,
) -> (edge_node::tls::DevPki, Controller, Vec<Edge>) {
    let pki = edge_node::tls::DevPki::new().unwrap();
    let ctl = controller(store.clone(), "ctl-a");
    let mut edges = Vec::new();
    for id in 1..=3 {
        edges.push(edge(&pki, id, store.clone()).await);
    }
    (pki, ctl, edges)
}

/// Wait until the leader has published, for each of `n` edges, a route to
/// every other one.
async fn routes_to_every_other_edge(store: &dyn ControlStore, n: usize) {
    let keys = KeyLayout::default();
    eventually(15, "routes to every other edge", || async {
        let routes: Vec<RoutesRecord> = records(store, &keys.routes()).await;
        routes.len() == n && routes.iter().all(|r| r.routes.len() == n - 1)
    })
    .await;
}

async fn records<R: Record>(store: &dyn ControlStore, prefix: &str) -> Vec<R> {
    let (kvs, _) = store.get_prefix(prefix).await.unwrap();
    kvs.iter()
        .filter_map(|kv| R::from_bytes(&kv.value).ok())
        .collect()
}

#[tokio::test]
async fn edges_register_probe_and_forward_on_computed_routes() {
    init_logs();
    let store: Arc<dyn ControlStore> = Arc::new(MemoryStore::new());
    let keys = KeyLayout::default();
    let (pki, ctl, mut edges) = leader_and_three_edges(store.clone()).await;
    // Registered with their city's coordinates.
    eventually(5, "three edges registered", || async {
        records::<EdgeRecord>(&*store, &keys.edges()).await.len() == 3
    })
    .await;
    let e1: Vec<EdgeRecord> = records(&*store, &keys.edges()).await;
    assert_eq!(e1[0].city, "fra");
    assert!((e1[0].lat - 50.0).abs() < 1.0, "{:?}", e1[0]);
    assert_eq!(e1[0].state, EdgeState::Serving);
    // Probes measured and published; the leader publishes a full route set
    // for every edge; every edge forwards on it.
    routes_to_every_other_edge(&*store, 3).await;
    assert!(ctl.leader.is_leader());
    eventually(5, "edges apply their routes", || async {
        edges.iter().all(|e| {
            let t = e.core.route_table();
            t.paths.len() == 2 && t.probe.len() == 2
        })
    })
    .await;
    let links = edges[0].core.prober.links();
    assert_eq!(links.len(), 2, "edge 1 measures both peers");
    assert!(links.iter().all(|l| l.alive && l.summary.rtt_ms < 50.0));

    // A client on edge 1 reaches a client on edge 3.
    message_arrives(&pki, &edges[0], &edges[2], b"over the computed routes").await;

    // Killed (no goodbye): edge 2 leaves the registry when its lease expires
    // (3 s). Edge 2 carries none of edge 1's traffic, so edge 1 probes it
    // every 2 s and would see it dead after three silent probes; the
    // registry usually drops it first, and then it is no longer a target.
    // Either way edge 1 stops counting on it within a few seconds. (A peer
    // an edge relays to is probed every 200 ms and seen dead within a
    // second: tests/mid_path.rs.)
    let killed_at = std::time::Instant::now();
    let e2 = edges.remove(1);
    e2.kill().await;
    eventually(9, "edge 1 sees edge 2 dead or drops it", || async {
        edges[0].core.prober.is_dead(2) || !edges[0].core.route_table().probe.contains(&2)
    })
    .await;
    let dead_after = killed_at.elapsed();
    eventually(8, "edge 2 leaves the registry", || async {
        records::<EdgeRecord>(&*store, &keys.edges()).await.len() == 2
    })
    .await;
    let gone_after = killed_at.elapsed();
    eprintln!("edge 2 killed: given up by its peer after {dead_after:?}, out of the registry after {gone_after:?}");
    eventually(5, "routes drop edge 2", || async {
        edges[0].core.route_table().paths.len() == 1
    })
    .await;

    // Draining: marked DRAINING while clients move, then gone at once.
    let e3 = edges.pop().unwrap();
    let drain = tokio::spawn(e3.shutdown());
    eventually(3, "edge 3 marked draining or gone", || async {
        let recs: Vec<EdgeRecord> = records(&*store, &keys.edges()).await;
        recs.iter()
            .all(|r| r.id != 3 || r.state == EdgeState::Draining)
    })
    .await;
    drain.await.unwrap();
    let recs: Vec<EdgeRecord> = records(&*store, &keys.edges()).await;
    assert!(
        recs.iter().all(|r| r.id != 3),
        "a drained edge revokes its lease"
    );
    for e in edges {
        e.kill().await;
    }
    ctl.shutdown().await;
}

/// Every edge of the region loses its lease at once, as when a resumed
/// etcd raft leader revokes every lease it saw expire (their probe records
/// go too): they register again within a keepalive round, and the
/// controller holds the routes meanwhile. It publishes no routes without
/// them and deletes none of theirs (before, it did both, and then published
/// the old routes again).
#[tokio::test]
async fn routes_hold_while_edges_that_lost_their_leases_together_register_again() {
    init_logs();
    let store: Arc<dyn ControlStore> = Arc::new(MemoryStore::new());
    let keys = KeyLayout::default();
    let (_pki, ctl, edges) = leader_and_three_edges(store.clone()).await;
    routes_to_every_other_edge(&*store, 3).await;
    let (_, rev) = store.get_prefix(&keys.routes()).await.unwrap();
    let mut watch = store.watch_prefix(&keys.routes(), rev + 1).await.unwrap();
    let mut leases = vec![];
    for id in [1, 2, 3] {
        let kv = store.get(&keys.edge(id)).await.unwrap().unwrap();
        let lease = kv.lease.expect("registered under a lease");
        store.revoke_lease(lease).await.unwrap();
        leases.push((id, lease));
    }
    let revoked = std::time::Instant::now();
    eventually(10, "every edge registered again", || async {
        let mut again = true;
        for (id, old) in &leases {
            let kv = store.get(&keys.edge(*id)).await.unwrap();
            again &= kv.is_some_and(|kv| kv.lease != Some(*old));
        }
        again
    })
    .await;
    eprintln!(
        "every edge registered again {:?} after the leases went",
        revoked.elapsed()
    );
    // Past their probe records' return, the controller's debounce and a
    // recomputation.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while let Ok(events) = watch.try_recv() {
        for e in events.unwrap() {
            match e {
                WatchEvent::Delete { key, .. } => panic!("routes deleted: {key}"),
                WatchEvent::Put(kv) => {
                    let r = RoutesRecord::from_bytes(&kv.value).unwrap();
                    assert_eq!(
                        r.routes.len(),
                        2,
                        "routes published without the departed: {r:?}"
                    );
                }
            }
        }
    }
    for e in edges {
        e.kill().await;
    }
    ctl.shutdown().await;
}

/// An edge whose lease goes (revoked, or expired in a store outage) writes
/// its record again as soon as its registry watch sees it deleted, not at
/// its next keepalive, a third of a TTL later: with a long TTL that was
/// after the controller's hold on departed edges (5 s), which then
/// published routes without the edge.
#[tokio::test]
async fn an_edge_whose_lease_goes_registers_again_at_once_whatever_its_ttl() {
    init_logs();
    let store: Arc<dyn ControlStore> = Arc::new(MemoryStore::new());
    let keys = KeyLayout::default();
    let pki = edge_node::tls::DevPki::new().unwrap();
    let mut cfg = config(1, "eu", "fra");
    cfg.control.lease_ttl_ms = 60_000; // keepalives every 20 s
    let e = edge_with(&pki, cfg, store.clone()).await;
    let registered = || async { store.get(&keys.edge(1)).await.unwrap().is_some() };
    eventually(5, "the edge registered", registered).await;
    let lease = store.get(&keys.edge(1)).await.unwrap().unwrap().lease;
    store
        .revoke_lease(lease.expect("registered under a lease"))
        .await
        .unwrap();
    let revoked = std::time::Instant::now();
    eventually(3, "the edge registered again under a new lease", || async {
        let kv = store.get(&keys.edge(1)).await.unwrap();
        kv.is_some_and(|kv| kv.lease.is_some() && kv.lease != lease)
    })
    .await;
    eprintln!(
        "registered again {:?} after the lease went",
        revoked.elapsed()
    );
    // A record deleted under a live lease is written again too.
    store.delete(&keys.edge(1)).await.unwrap();
    eventually(3, "the record written again", registered).await;
    e.kill().await;
}

/// Hierarchical routing (forced on at any size, one hub per region): each
/// region's leader publishes its region record, exits and routes with
/// costs; a routes record names only the edge's region and the hubs, and
/// edges compose their routes to the other region's other edge from the
/// records, and forward on them.
#[tokio::test]
async fn hierarchical_routes_are_composed_by_edges_and_carry_traffic() {
    init_logs();
    let store: Arc<dyn ControlStore> = Arc::new(MemoryStore::new());
    let keys = KeyLayout::default();
    let pki = edge_node::tls::DevPki::new().unwrap();
    let hier = |region: &str| RoutingOptions {
        hierarchical_from_edges: 0,
        hubs_per_region: 1,
        ..RoutingOptions::quick(region, &format!("ctl-{region}"))
    };
    let ctls = [
        Controller::start(store.clone(), keys.clone(), hier("eu")),
        Controller::start(store.clone(), keys.clone(), hier("us-east")),
    ];
    let places = [
        ("eu", "fra"),
        ("eu", "lhr"),
        ("us-east", "iad"),
        ("us-east", "jfk"),
    ];
    let mut edges = Vec::new();
    for (i, (region, city)) in places.iter().enumerate() {
        edges.push(edge_in(&pki, i as u32 + 1, store.clone(), region, city).await);
    }
    eventually(15, "both regions' records", || async {
        let regions: Vec<RegionRecord> = records(&*store, &keys.regions()).await;
        regions.len() == 2
            && regions
                .iter()
                .all(|r| r.members.len() == 2 && r.hubs.len() == 1)
    })
    .await;
    // Routes records carry costs; every edge composes a path to every
    // other edge, which starts with itself and ends at the destination.
    eventually(15, "every edge routes to every other", || async {
        edges.iter().all(|e| {
            let t = e.core.route_table();
            (1..=4u32).filter(|&d| d != e.core.id).all(|d| {
                t.paths
                    .get(&d)
                    .is_some_and(|p| p[0] == e.core.id && p.last() == Some(&d))
            })
        })
    })
    .await;
    let routes: Vec<RoutesRecord> = records(&*store, &keys.routes()).await;
    assert!(routes
        .iter()
        .all(|r| r.routes.iter().all(|x| x.cost_us.is_some())));
    // Each record: the other edge of its region and the other region's hub.
    assert!(routes.iter().all(|r| r.routes.len() == 2), "{routes:?}");
    let exits = store.get(&keys.exits("eu")).await.unwrap();
    assert!(exits.is_some(), "the region's exits are published");

    // A message from London to New York goes over the composed route.
    message_arrives(&pki, &edges[1], &edges[3], b"across regions").await;
    for e in edges {
        e.kill().await;
    }
    for c in ctls {
        c.shutdown().await;
    }
}

#[tokio::test]
async fn standby_controller_takes_over_within_a_lease_ttl() {
    init_logs();
    let store: Arc<dyn ControlStore> = Arc::new(MemoryStore::new());
    let a = controller(store.clone(), "ctl-a");
    eventually(3, "a leads", || async { a.leader.is_leader() }).await;
    let b = controller(store.clone(), "ctl-b");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.leader.is_leader(), "one leader per region");
    // A crash: tasks dropped, no resignation; the lease (2 s) must expire.
    let crashed = std::time::Instant::now();
    drop(a);
    eventually(5, "b takes over", || async { b.leader.is_leader() }).await;
    let took = crashed.elapsed();
    eprintln!("controller failover after a crash: {took:?} (lease TTL 2 s)");
    assert!(took < Duration::from_millis(2_600), "took {took:?}");
    // A clean stop resigns: the next standby takes over at once.
    let c = controller(store.clone(), "ctl-c");
    let stopped = std::time::Instant::now();
    b.shutdown().await;
    eventually(2, "c takes over", || async { c.leader.is_leader() }).await;
    eprintln!(
        "controller failover after a resignation: {:?}",
        stopped.elapsed()
    );
    c.shutdown().await;
}

/// The design's write budget: about one store write per edge per second or
/// less, so that a few thousand edges fit one etcd cluster. Every write
/// (edges' registrations, loads, probe summaries, the leader's routes) bumps
/// the store revision; count them over a window once the mesh has settled.
#[tokio::test]
async fn steady_state_store_writes_per_edge_stay_under_one_per_second() {
    init_logs();
    const EDGES: u32 = 4;
    const WINDOW: Duration = Duration::from_secs(10);
    let store = Arc::new(MemoryStore::new());
    let dyn_store: Arc<dyn ControlStore> = store.clone();
    let keys = KeyLayout::default();
    let pki = edge_node::tls::DevPki::new().unwrap();
    let ctl = controller(dyn_store.clone(), "ctl-a");
    let mut edges = Vec::new();
    for id in 1..=EDGES {
        edges.push(edge(&pki, id, dyn_store.clone()).await);
    }
    eventually(15, "routes to every other edge", || async {
        let routes: Vec<RoutesRecord> = records(&*store, &keys.routes()).await;
        routes.len() == EDGES as usize
            && routes.iter().all(|r| r.routes.len() == EDGES as usize - 1)
    })
    .await;
    // Let first summaries and the routes they cause settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let revision = |s: &MemoryStore| {
        let s = s.clone();
        async move { s.get_prefix("/").await.unwrap().1 }
    };
    let before = revision(&store).await;
    tokio::time::sleep(WINDOW).await;
    let writes = revision(&store).await - before;
    let per_edge_per_s = writes as f64 / EDGES as f64 / WINDOW.as_secs_f64();
    // Which records they were, from the store's history.
    let mut kinds = std::collections::BTreeMap::<String, u32>::new();
    let mut history = store.watch_prefix("/", before + 1).await.unwrap();
    while let Ok(Some(Ok(events))) =
        tokio::time::timeout(Duration::from_millis(100), history.recv()).await
    {
        for e in events.iter().filter(|e| e.revision() <= before + writes) {
            let kind = e.key().trim_start_matches(keys.prefix()).split('/').next();
            *kinds.entry(kind.unwrap_or("?").to_string()).or_default() += 1;
        }
    }
    eprintln!(
        "steady state: {writes} store writes in {WINDOW:?} from {EDGES} edges and a leader = {per_edge_per_s:.3} writes/edge/s: {kinds:?}"
    );
    assert!(per_edge_per_s < 1.0, "{per_edge_per_s} writes/edge/s");
    for e in edges {
        e.kill().await;
    }
    ctl.shutdown().await;
}

/// Three edges 10 ms apart (emulated WAN, one way). The direct link from
/// edge 1 to edge 3 degrades to 60 ms: probes see it, the controller routes
/// 1 -> 3 through edge 2 (20 ms), and media takes that path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_link_is_routed_around() {
    use testkit::netem::{LinkProfile, Wan};
    init_logs();
    let ip = |id: u8| std::net::IpAddr::from([127, 0, 0, id]);
    let wan = Wan::new(vec![]).unwrap();
    for (a, b) in [(1, 2), (2, 3), (1, 3)] {
        wan.set_link(ip(a), ip(b), LinkProfile::delay(10.0))
            .unwrap();
    }
    let store: Arc<dyn ControlStore> = Arc::new(MemoryStore::new());
    let pki = edge_node::tls::DevPki::new().unwrap();
    let ctl = controller(store.clone(), "ctl-a");
    let mut edges = Vec::new();
    for id in 1..=3u8 {
        let mut cfg = config(id.into(), "eu", CITIES[id as usize - 1]);
        cfg.edge.listen = std::net::SocketAddr::new(ip(id), 0);
        let opts = EdgeOptions {
            tls: Some(pki.material(&["localhost".into()]).unwrap()),
            client_cert: Some(pki.client_cert(&["localhost".into()]).unwrap()),
            store: Some(store.clone()),
            socket: Some(wan.hook()),
            ..Default::default()
        };
        edges.push(Edge::start(cfg, opts).await.unwrap());
    }
    let path_1_to_3 = |edges: &[Edge]| edges[0].core.route_table().paths.get(&3).cloned();
    eventually(15, "direct route 1 -> 3", || async {
        path_1_to_3(&edges) == Some(vec![1, 3])
    })
    .await;

    let ca = pki.ca_der().to_vec();
    // Clients on addresses of their own, next to their edges (no delay).
    let client_at = |id: u8| quinn::Endpoint::client((ip(id + 100), 0).into()).unwrap();
    let mut a = RawClient::connect_from(client_at(1), edges[0].addr(), &ca).await;
    let mut c = RawClient::connect_from(client_at(3), edges[2].addr(), &ca).await;
    c.join("room", "carol").await;
    let ja = a.join("room", "alice").await;
    let track = a.publish(ja.channel_id, "mic").await.unwrap();
    c.expect(|f| match f {
        SK::TrackAvailable(_) => Some(()),
        _ => None,
    })
    .await;
    let direct = media_latency(&a, &c, ja.channel_id, track, 0).await;

    let degraded_at = std::time::Instant::now();
    wan.set_link(ip(1), ip(3), LinkProfile::delay(60.0))
        .unwrap();
    eventually(15, "route 1 -> 3 through edge 2", || async {
        path_1_to_3(&edges) == Some(vec![1, 2, 3])
    })
    .await;
    let rerouted_after = degraded_at.elapsed();
    let relayed = media_latency(&a, &c, ja.channel_id, track, 100).await;
    eprintln!(
        "direct link 1-3 degraded from 10 to 60 ms: routed through edge 2 after {rerouted_after:?}; \
         media latency {direct:?} direct before, {relayed:?} relayed after"
    );
    assert!(
        direct >= Duration::from_millis(9) && direct < Duration::from_millis(25),
        "direct {direct:?}"
    );
    assert!(
        relayed >= Duration::from_millis(19) && relayed < Duration::from_millis(45),
        "relayed {relayed:?}"
    );
    let links = edges[0].core.prober.links();
    let l13 = links
        .iter()
        .find(|l| l.peer == 3)
        .expect("edge 1 probes edge 3");
    // On its way from 20 to 120 ms: the link's cost (its 25th percentile
    // plus jitter, twice the distance to the median) follows the median,
    // past the 40 ms of the relay, before the 25th percentile does.
    let cost = topology::CostModel::default().link_cost_ms(&l13.summary);
    assert!(
        cost > 50.0,
        "probed cost of the degraded link: {cost} ({:?})",
        l13.summary
    );
    for e in edges {
        e.kill().await;
    }
    ctl.shutdown().await;
}

/// An edge with a self-signed client certificate registers the digests
/// browsers pin (current, next), and registers again when it rotates, so
/// the controllers' nearest-edge answers (built from the registration) list
/// the certificate in use.
#[tokio::test]
async fn registrations_carry_the_client_certificate_digests_through_a_rotation() {
    init_logs();
    let store: Arc<dyn ControlStore> = Arc::new(MemoryStore::new());
    let keys = KeyLayout::default();
    let pki = edge_node::tls::DevPki::new().unwrap();
    let e = Edge::start(
        config(1, "eu", "fra"),
        EdgeOptions {
            tls: Some(pki.material(&["localhost".into()]).unwrap()),
            store: Some(store.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let published = || e.core.client_certs.hashes().borrow().clone();
    let registered = || async {
        records::<EdgeRecord>(&*store, &keys.edges())
            .await
            .first()
            .map(|r| r.cert_sha256.clone())
    };
    let before = published();
    assert_eq!(before.len(), 2);
    eventually(5, "the digests registered", || async {
        registered().await.as_ref() == Some(&before)
    })
    .await;
    let now_used = e.core.client_certs.rotate().unwrap();
    assert_eq!(now_used, before[1]);
    let after = published();
    assert_eq!(after[0], now_used);
    eventually(5, "the rotated digests registered", || async {
        registered().await.as_ref() == Some(&after)
    })
    .await;
    // The registration is how to reach the edge: its address carries them.
    let rec: Vec<EdgeRecord> = records(&*store, &keys.edges()).await;
    assert_eq!(rec[0].address().cert_sha256, after);
    e.kill().await;
}
