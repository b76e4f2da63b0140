//! Faults of the etcd cluster itself, with real processes: a three-member
//! etcd on loopback, two `region-controller`s (leader and standby), WAN-
//! emulated `edge-node`s, all given every member's endpoint, and SDK clients
//! in one call across the edges exchanging media and messages.
//!
//! 1. One member of three SIGKILLed (a follower, then the raft leader),
//!    then one hung (SIGSTOP for 12 s: its connections stay open and nothing
//!    answers; the busiest follower, then the raft leader): traffic does not
//!    notice, the control plane works on the remaining quorum (a new edge
//!    registers and gets routes, registrations do not expire, controller
//!    leadership holds), the member rejoins when restarted or resumed.
//! 2. The whole cluster frozen (SIGSTOP) for 60 s while the call runs:
//!    static stability (traffic on the last routes, a new client joins an
//!    existing edge), then resynchronisation (registry, leadership, routes
//!    reflecting a link degraded during the outage), timed.
//!
//! Figures are printed (`--nocapture`) and recorded in docs/reliability.md.
#![cfg(all(feature = "etcd", feature = "netem"))]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::etcd_cluster::*;
use common::{http, init_logs, RawClient, APP, SECRET};
use control::keys::KeyLayout;
use control::store::{ControlStore, MemoryStore};
use edge_node::{Edge, EdgeConfig, EdgeOptions};
use protocol::pb::server_frame::Kind as SK;

/// Samples of the control store taken every 100 ms through every endpoint:
/// the region's leader key and the registrations.
struct Monitor {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    /// None: the read failed.
    leader: Option<Option<String>>,
    edges: Option<BTreeMap<u32, (i64, Option<i64>)>>,
}

impl Monitor {
    async fn start(endpoints: Vec<String>) -> Monitor {
        let store = store_on(endpoints).await;
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let task = tokio::spawn({
            let samples = samples.clone();
            async move {
                loop {
                    let at = Instant::now();
                    let leader = leader_key(&store).await.ok();
                    let edges = registrations(&store).await;
                    samples.lock().unwrap().push(Sample { at, leader, edges });
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Monitor { samples, task }
    }

    fn since(&self, t: Instant) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.at >= t)
            .cloned()
            .collect()
    }

    /// Since `t`: the longest stretch with no leader key (from the first
    /// read seeing none to the next seeing one), the longest stretch of
    /// failed reads, and the leaders seen in order.
    fn leadership(&self, t: Instant) -> (Duration, Duration, Vec<String>) {
        let (mut vacant, mut failing) = (Duration::ZERO, Duration::ZERO);
        let (mut vacant_from, mut failing_from) = (None::<Instant>, None::<Instant>);
        let mut leaders: Vec<String> = Vec::new();
        for s in self.since(t) {
            match &s.leader {
                None => {
                    failing_from.get_or_insert(s.at);
                }
                Some(l) => {
                    if let Some(f) = failing_from.take() {
                        failing = failing.max(s.at - f);
                    }
                    match l {
                        None => {
                            vacant_from.get_or_insert(s.at);
                        }
                        Some(name) => {
                            if let Some(f) = vacant_from.take() {
                                vacant = vacant.max(s.at - f);
                            }
                            if leaders.last() != Some(name) {
                                leaders.push(name.clone());
                            }
                        }
                    }
                }
            }
        }
        (vacant, failing, leaders)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Edges of the first test sit on 127.0.0.61..65: 10 ms one way between any
/// two, except 1-3 at 30 ms, so 1 <-> 3 goes through edge 2 (a relay on the
/// path of the call).
fn ip_kill(id: u32) -> IpAddr {
    IpAddr::from([127, 0, 0, 60 + id as u8])
}

fn wan_kill(a: u32, b: u32) -> f64 {
    if (a.min(b), a.max(b)) == (1, 3) {
        30.0
    } else {
        10.0
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    /// SIGKILL, restarted afterwards: connections to it are refused.
    Kill,
    /// SIGSTOP, SIGCONT afterwards: connections to it stay open and
    /// nothing answers, the harder case for clients.
    Hang,
}

/// The two real-process tests run one at a time: each starts three etcd
/// members, controllers and edges, and measures media gaps that a
/// neighbour's load on two cores would distort.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_etcd_member_of_three_killed_then_hung_follower_then_leader() {
    let _one_at_a_time = HEAVY.lock().await;
    init_logs();
    let mut etcd = EtcdCluster::start(3);
    let t = etcd.wait_healthy(30).await;
    eprintln!("etcd: 3 members healthy after {t:?}");
    let store = etcd.store().await;
    let mut rtn = Rtn::new(etcd.endpoints(), ip_kill, wan_kill, 7);
    rtn.start_controller("ctl-a");
    rtn.start_controller("ctl-b");
    for (id, city) in [(1, "fra"), (2, "ams"), (3, "lhr")] {
        rtn.start_edge(id, city);
    }
    let mut ids = vec![1, 2, 3];
    let t = eventually(60, "edges registered with routes", || async {
        routes_complete(&routes(&store).await, &[1, 2, 3])
            && best(&routes(&store).await, 1, 3) == Some(vec![1, 2, 3])
    })
    .await;
    eprintln!("3 edges registered, routes published (1 -> 3 via 2) after {t:?}");

    let mut call = Call::new("call", &rtn.ca_pem);
    for (user, edge) in [("alice", 1), ("bob", 3), ("carol", 2)] {
        call.join(user, rtn.edge(edge).quic).await;
    }
    let members = ["alice", "bob", "carol"];
    call.wait_flowing(&members, 20).await;
    let monitor = Monitor::start(etcd.endpoints()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut figures = Vec::new();
    let rounds = [
        (1, Fault::Kill, false, 4, "cdg"),
        (2, Fault::Kill, true, 5, "zrh"),
        (3, Fault::Hang, false, 6, "dub"),
        (4, Fault::Hang, true, 7, "mxp"),
    ];
    for (round, fault, on_leader, new_edge, city) in rounds {
        let regs_before = registrations(&store).await.expect("registrations");
        let controller_before = leader_key(&store).await.unwrap().expect("a leader");
        let raft_leader = etcd.leader().await.expect("an etcd leader");
        let victim = if on_leader {
            raft_leader
        } else {
            // The busiest follower: the faults matter to the processes
            // whose connection is on the victim.
            (0..etcd.size())
                .filter(|i| *i != raft_leader)
                .max_by_key(|i| etcd.connections_to(*i))
                .unwrap()
        };
        let what = match (fault, on_leader) {
            (Fault::Kill, false) => "killed: a follower",
            (Fault::Kill, true) => "killed: the raft leader",
            (Fault::Hang, false) => "hung: a follower",
            (Fault::Hang, true) => "hung: the raft leader",
        };
        let users = etcd.connections_to(victim);
        let killed = Instant::now();
        match fault {
            Fault::Kill => etcd.kill(victim),
            Fault::Hang => etcd.pause(victim),
        }
        eprintln!(
            "round {round}: etcd member {victim} {what} (SIG{}), {users} connections on it",
            if fault == Fault::Kill { "KILL" } else { "STOP" }
        );
        let survivors: Vec<usize> = (0..etcd.size()).filter(|i| *i != victim).collect();
        // Until their election timeout the survivors still name the dead
        // leader: wait for one of them to lead, as both say.
        let t_raft = eventually(15, "the survivors agree on a leader among them", || async {
            let (mut leaders, mut ids) = (BTreeSet::new(), BTreeSet::new());
            for i in &survivors {
                match etcd.status(*i).await {
                    Some(s) => {
                        leaders.insert(s.leader);
                        ids.insert(s.member_id);
                    }
                    None => return false,
                }
            }
            leaders.len() == 1 && ids.is_superset(&leaders)
        })
        .await;

        // A new edge registers and gets routes on the remaining quorum.
        rtn.start_edge(new_edge, city);
        ids.push(new_edge);
        let t_new = eventually(30, "the new edge registered with routes", || async {
            let r = routes(&store).await;
            routes_complete(&r, &ids)
                && registrations(&store)
                    .await
                    .is_some_and(|m| m.contains_key(&new_edge))
        })
        .await;

        // Past every lease TTL (edges 3 s, election 2 s) since the kill;
        // a hung member for twice the store's longest call timeout.
        let fault_lasts = match fault {
            Fault::Kill => Duration::from_secs(5),
            Fault::Hang => Duration::from_secs(12),
        };
        tokio::time::sleep((killed + fault_lasts).saturating_duration_since(Instant::now())).await;
        let samples = monitor.since(killed);
        for s in &samples {
            if let Some(regs) = &s.edges {
                for (id, reg) in &regs_before {
                    assert_eq!(
                        regs.get(id),
                        Some(reg),
                        "round {round}: edge {id}'s registration changed or expired {:?} after the kill",
                        s.at - killed
                    );
                }
            }
        }
        let (vacant, failing, leaders) = monitor.leadership(killed);
        eprintln!(
            "round {round}: controller leader {controller_before} -> {leaders:?}; leader key vacant at most {vacant:?}; store reads failing at most {failing:?}"
        );
        assert!(
            vacant < Duration::from_secs(2),
            "round {round}: no controller led for {vacant:?}"
        );
        assert!(
            leaders.iter().all(|l| *l == controller_before) || leaders.len() <= 2,
            "{leaders:?}"
        );

        // The member comes back and catches up.
        let rev = etcd
            .status(survivors[0])
            .await
            .expect("survivor answers")
            .revision;
        match fault {
            Fault::Kill => etcd.restart(victim),
            Fault::Hang => etcd.resume(victim),
        }
        let t_rejoin = eventually(30, "the restarted member rejoined", || async {
            etcd.status(victim)
                .await
                .is_some_and(|s| s.revision >= rev && !s.leader.is_empty() && s.leader != "0")
        })
        .await;
        // The member serves every registration. A resumed raft leader of
        // etcd before etcd-io/etcd#16822 (Debian's 3.4.23 here) still thinks
        // it leads for a moment and revokes every lease it saw expire while
        // it was stopped (etcd-io/etcd#15247): then the edges register anew.
        let solo = store_on(vec![etcd.endpoint(victim)]).await;
        let all: BTreeSet<u32> = ids.iter().copied().collect();
        let t_registered = eventually(30, "every edge registered, read on the member", || async {
            registrations(&solo)
                .await
                .is_some_and(|m| m.keys().copied().collect::<BTreeSet<_>>() == all)
        })
        .await;
        let regs_after = registrations(&store).await.expect("registrations");
        let revoked: Vec<u32> = regs_before
            .iter()
            .filter(|(id, reg)| regs_after.get(id) != Some(reg))
            .map(|(id, _)| *id)
            .collect();
        eprintln!(
            "round {round}: survivors led (raft) {t_raft:?} after the fault; new edge {new_edge} registered with routes {t_new:?} after its start; \
             no registration expired during the fault; member back in the cluster {t_rejoin:?} after it returned; \
             every edge registered on it {t_registered:?} after; registered anew after it returned: {revoked:?}"
        );
        if fault == Fault::Kill || !on_leader {
            assert!(
                revoked.is_empty(),
                "round {round}: leases lost: {revoked:?}"
            );
        }
        figures.push((what, t_raft, t_new, vacant, failing, t_rejoin));
        assert!(rtn.all_alive(), "round {round}: a process died");
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    call.stop(15).await;
    let (gap, pair) = call.max_gap();
    let (media, loss) = call.media();
    let m = call.messages(&members);
    eprintln!(
        "one member of three killed, then hung: longest media gap {:.0} ms ({pair}); media {media} packets, {:.2}% lost; \
         messages {m:?}; client notes {:?}",
        gap.as_secs_f64() * 1e3,
        loss * 100.0,
        call.notes()
    );
    for (what, t_raft, t_new, vacant, failing, t_rejoin) in &figures {
        eprintln!(
            "FIGURE etcd member {what}: raft leader {:.2} s, new edge routed {:.2} s, controller leader key vacant {:.2} s, reads failing {:.2} s, rejoin {:.2} s",
            t_raft.as_secs_f64(),
            t_new.as_secs_f64(),
            vacant.as_secs_f64(),
            failing.as_secs_f64(),
            t_rejoin.as_secs_f64()
        );
    }
    assert!(m.sent > 0, "{m:?}");
    assert_eq!((m.lost, m.duplicated, m.reordered), (0, 0, 0), "{m:?}");
    assert!(
        gap < Duration::from_millis(500),
        "media gap {gap:?} ({pair})"
    );
    assert!(call.notes().is_empty(), "{:?}", call.notes());
    call.end().await;
}

/// Edges of the second test sit on 127.0.0.81..83, 10 ms apart one way.
fn ip_outage(id: u32) -> IpAddr {
    IpAddr::from([127, 0, 0, 80 + id as u8])
}

fn wan_even(_: u32, _: u32) -> f64 {
    10.0
}

/// The 1-3 link degraded to 60 ms: relaying through edge 2 (20 ms) wins.
fn wan_1_3_degraded(a: u32, b: u32) -> f64 {
    if (a.min(b), a.max(b)) == (1, 3) {
        60.0
    } else {
        10.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_etcd_cluster_down_for_a_minute_then_back() {
    let _one_at_a_time = HEAVY.lock().await;
    const OUTAGE: Duration = Duration::from_secs(60);
    init_logs();
    let etcd = EtcdCluster::start(3);
    etcd.wait_healthy(30).await;
    let store = etcd.store().await;
    let mut rtn = Rtn::new(etcd.endpoints(), ip_outage, wan_even, 3);
    rtn.start_controller("ctl-a");
    rtn.start_controller("ctl-b");
    for (id, city) in [(1, "fra"), (2, "ams"), (3, "lhr")] {
        rtn.start_edge(id, city);
    }
    let t = eventually(60, "edges registered with direct routes", || async {
        let r = routes(&store).await;
        routes_complete(&r, &[1, 2, 3]) && best(&r, 1, 3) == Some(vec![1, 3])
    })
    .await;
    eprintln!("3 edges registered, routes published (1 -> 3 direct) after {t:?}");
    let mut call = Call::new("call", &rtn.ca_pem);
    for (user, edge) in [("alice", 1), ("bob", 3), ("carol", 2)] {
        call.join(user, rtn.edge(edge).quic).await;
    }
    let members = ["alice", "bob", "carol"];
    call.wait_flowing(&members, 20).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = Instant::now() - Duration::from_secs(1);
    let lat_before = call.latency_since("bob", "alice", before).unwrap();
    let regs_before = registrations(&store).await.unwrap();
    let leader_before = leader_key(&store).await.unwrap();
    drop(store);

    // The whole cluster freezes.
    let paused = Instant::now();
    etcd.pause_all();
    eprintln!("etcd: all 3 members SIGSTOPped (controller leader {leader_before:?})");

    // A new client joins an existing edge while etcd is down.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let join = call.join("dave", rtn.edge(2).quic).await;
    let all = ["alice", "bob", "carol", "dave"];
    let flowing = call.wait_flowing(&all, 15).await;
    eprintln!(
        "during the outage: dave joined edge 2 in {join:?}, media between all 4 after {flowing:?} more"
    );

    // The 1-3 link degrades while nobody can write it down.
    tokio::time::sleep(
        (paused + Duration::from_secs(15)).saturating_duration_since(Instant::now()),
    )
    .await;
    rtn.set_wan(wan_1_3_degraded).await;
    let degraded = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lat_degraded = call.latency_since("bob", "alice", degraded + Duration::from_secs(1));
    eprintln!(
        "during the outage: link 1-3 degraded 10 -> 60 ms; alice -> bob media {lat_before:.1} ms before, {lat_degraded:?} ms on the last routes"
    );

    // Static stability at the end of the outage: everyone alive, the
    // controllers serve their last view.
    tokio::time::sleep((paused + OUTAGE).saturating_duration_since(Instant::now())).await;
    assert!(rtn.all_alive(), "a process died during the outage");
    for c in &rtn.controllers {
        let (_, connected, edges) = rtn.mesh(c).await.expect("controller API answers");
        eprintln!(
            "during the outage: {} serves its last view of edges {edges:?}, store_connected = {connected}",
            c.name
        );
        // The mirror reads the store every second: the etcd watches wait
        // out an outage in silence, and this one hangs rather than refuses.
        assert!(!connected, "{}: store_connected through the outage", c.name);
        let ready = http(c.api, "GET", "/readyz", &[], "").await;
        assert!(
            ready
                .as_ref()
                .is_ok_and(|(code, body)| *code == 200
                    && body.contains("ready: the store does not answer")),
            "{}: /readyz during the outage: {ready:?}",
            c.name
        );
        assert_eq!(
            edges,
            BTreeSet::from([1, 2, 3]),
            "{}: last view kept",
            c.name
        );
    }

    // etcd returns.
    etcd.resume_all();
    let back = Instant::now();
    let back_ms = control::clock::now_ms();
    eprintln!("etcd: resumed after {:?}", back - paused);
    let store = store_on(etcd.endpoints()).await;
    let (mut t_leader, mut t_registry, mut t_routes, mut t_mesh, mut t_media) =
        (None, None, None, None, None);
    let mut regs_after = None;
    while [t_leader, t_registry, t_routes, t_mesh, t_media]
        .iter()
        .any(Option::is_none)
    {
        assert!(
            back.elapsed() < Duration::from_secs(45),
            "no resync 45 s after etcd returned: leader {t_leader:?}, registry {t_registry:?}, routes {t_routes:?}, mesh {t_mesh:?}, media {t_media:?}; routes {:#?}",
            routes(&store).await
        );
        let now = back.elapsed();
        if t_leader.is_none() && matches!(leader_key(&store).await, Ok(Some(_))) {
            t_leader = Some(now);
        }
        if t_registry.is_none() {
            if let Some(r) = registrations(&store).await {
                if r.keys().copied().collect::<Vec<_>>() == [1, 2, 3] {
                    t_registry = Some(now);
                    regs_after = Some(r);
                }
            }
        }
        if t_routes.is_none() {
            let r = routes(&store).await;
            if routes_complete(&r, &[1, 2, 3])
                && best(&r, 1, 3) == Some(vec![1, 2, 3])
                && best(&r, 3, 1) == Some(vec![3, 2, 1])
                && r.values().any(|x| x.computed_at_ms >= back_ms)
            {
                t_routes = Some(now);
            }
        }
        if t_mesh.is_none() {
            let mut leaders = 0;
            let mut ok = true;
            for c in &rtn.controllers {
                match rtn.mesh(c).await {
                    Some((leads, true, edges)) if edges == BTreeSet::from([1, 2, 3]) => {
                        leaders += leads as usize
                    }
                    _ => ok = false,
                }
            }
            if ok && leaders == 1 {
                t_mesh = Some(now);
            }
        }
        if t_media.is_none() && t_routes.is_some() {
            let since = Instant::now() - Duration::from_millis(400);
            if call
                .latency_since("bob", "alice", since)
                .is_some_and(|l| l < 40.0)
            {
                t_media = Some(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let regs_after = regs_after.unwrap();
    let new_leases = regs_before
        .iter()
        .filter(|(id, r)| regs_after.get(id) != Some(r))
        .count();
    let leader_after = leader_key(&store).await.unwrap();
    let f = |d: Option<Duration>| d.unwrap().as_secs_f64();
    eprintln!(
        "FIGURE etcd back: controller leader key {:.2} s ({leader_after:?}), registry complete {:.2} s ({new_leases} of 3 edges registered anew), \
         routes republished with the degraded link routed around {:.2} s, both controllers' mesh synced {:.2} s, alice -> bob media on the new path {:.2} s",
        f(t_leader),
        f(t_registry),
        f(t_routes),
        f(t_mesh),
        f(t_media)
    );
    // The resynchronised state holds for 5 s: no flapping back to the
    // routes of before the outage, media stays on the new path.
    let mut last = None;
    for _ in 0..20 {
        let r = routes(&store).await;
        let now = (
            best(&r, 1, 3),
            r.get(&1).map(|x| x.controller.clone()),
            leader_key(&store).await.ok().flatten(),
        );
        if last.as_ref() != Some(&now) {
            eprintln!(
                "after the resync +{:?}: route 1 -> 3, by, leader: {now:?}",
                back.elapsed()
            );
        }
        assert_eq!(now.0, Some(vec![1, 2, 3]), "route 1 -> 3 flapped back");
        let lat = call.latency_since("bob", "alice", Instant::now() - Duration::from_millis(300));
        assert!(lat.is_some_and(|l| l < 40.0), "alice -> bob {lat:?} ms");
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let lat_after = call
        .latency_since("bob", "alice", Instant::now() - Duration::from_secs(1))
        .unwrap();

    tokio::time::sleep(Duration::from_secs(1)).await;
    call.stop(15).await;
    let (gap, pair) = call.max_gap();
    let (media, loss) = call.media();
    let m = call.messages(&members);
    eprintln!(
        "FIGURE etcd down {:?}: longest media gap {:.0} ms ({pair}); media {media} packets, {:.2}% lost; messages {m:?}; \
         alice -> bob {lat_before:.1} ms before, {lat_degraded:?} ms degraded on the last routes, {lat_after:.1} ms after; client notes {:?}",
        OUTAGE,
        gap.as_secs_f64() * 1e3,
        loss * 100.0,
        call.notes()
    );
    assert!(rtn.all_alive(), "a process died");
    assert!(m.sent > 0, "{m:?}");
    assert_eq!((m.lost, m.duplicated, m.reordered), (0, 0, 0), "{m:?}");
    assert!(
        gap < Duration::from_millis(500),
        "media gap {gap:?} ({pair})"
    );
    assert!(call.notes().is_empty(), "{:?}", call.notes());
    assert!(
        lat_after < 40.0,
        "alice -> bob after the resync: {lat_after} ms"
    );
    call.end().await;
}

/// What the edges do with a registry delete of a live edge, as when etcd
/// returns from an outage longer than the lease TTL and every lease has
/// expired: the edge stays a peer (relay links, directory homes, routes) for
/// as long as the others' probes hear it, and goes once they call it dead.
/// Before, the delete dropped it at once, and traffic to its clients
/// stopped until it registered again (the outage test lost messages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_edge_missing_from_the_registry_stays_a_peer_until_its_probes_stop() {
    init_logs();
    let store: Arc<dyn ControlStore> = Arc::new(MemoryStore::new());
    // Edge 2 reaches the store through a link that can be cut.
    let store_of_2 = testkit::OutageStore::new(store.clone());
    let pki = edge_node::tls::DevPki::new().unwrap();
    let mut edges = vec![];
    for (id, city) in [(1, "fra"), (2, "ams")] {
        let mut cfg = EdgeConfig::dev(id, APP, SECRET);
        cfg.edge.region = REGION.into();
        cfg.edge.city = city.into();
        let opts = EdgeOptions {
            tls: Some(pki.material(&["localhost".into()]).unwrap()),
            client_cert: Some(pki.client_cert(&["localhost".into()]).unwrap()),
            store: Some(match id {
                2 => store_of_2.clone(),
                _ => store.clone(),
            }),
            ..Default::default()
        };
        edges.push(Edge::start(cfg, opts).await.unwrap());
    }
    let has_peer_2 = |e: &Edge| e.core.route_table().peers.contains_key(&2);
    eventually(15, "edge 1 probes edge 2 as a peer", || async {
        has_peer_2(&edges[0])
            && edges[0]
                .core
                .prober
                .links()
                .iter()
                .any(|l| l.peer == 2 && l.alive)
    })
    .await;
    // Edge 2's record goes while edge 2 lives, cut off from the store (as
    // its lease expiring in a store outage): it cannot write it again.
    // Edge 1 keeps it, with no traffic between them yet: it stays a probe
    // target (were it dropped from the probes, it would read as dead).
    store_of_2.set_down(true);
    store.delete(&KeyLayout::default().edge(2)).await.unwrap();
    let idle_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < idle_until {
        assert!(has_peer_2(&edges[0]), "edge 1 dropped live, idle edge 2");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its clients' media keeps flowing.
    let ca = pki.ca_der().to_vec();
    let mut a = RawClient::connect(edges[0].addr(), &ca).await;
    let mut b = RawClient::connect(edges[1].addr(), &ca).await;
    b.join("room", "bob").await;
    let cid = a.join("room", "alice").await.channel_id;
    let track = a.publish(cid, "mic").await.unwrap();
    b.expect(|f| match f {
        SK::TrackAvailable(_) => Some(()),
        _ => None,
    })
    .await;

    let (mut sent, mut got) = (0u32, 0u32);
    let until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < until {
        a.media(cid, track, sent, &[1u8; 100]);
        sent += 1;
        assert!(has_peer_2(&edges[0]), "edge 1 dropped live edge 2");
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(1), b.conn.read_datagram()).await
        {
            got += 1;
        }
    }
    eprintln!("edge 2 missing from the registry, alive: {got} of {sent} media packets arrived");
    assert!(got + 3 >= sent, "{got} of {sent}");

    // Edge 2 dies: edge 1 lets it go once its probes call it dead.
    let e2 = edges.pop().unwrap();
    let killed = Instant::now();
    e2.kill().await;
    eventually(5, "edge 1 drops dead edge 2", || async {
        !has_peer_2(&edges[0])
    })
    .await;
    eprintln!(
        "edge 2 killed: dropped from edge 1's peers after {:?}",
        killed.elapsed()
    );
    for e in edges {
        e.kill().await;
    }
}
