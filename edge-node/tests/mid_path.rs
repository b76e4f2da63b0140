//! Any relay of a path may die, not only the ingress's next hop: a message
//! the sender's edge accepted still reaches the receiver once, in order, and
//! media comes back within a second.
//!
//! Five edges on loopback, each its own emulated host; the sender on edge 1,
//! the receiver on edge 4, and edge 1's path to 4 is 1 -> 2 -> 3 -> 4 (a
//! three-hop path) with 1 -> 5 -> 4 as its backup. Each relay in turn is
//! killed as a SIGKILL would (cut off the network first, so not even a
//! close frame gets out) while messages and media flow:
//!
//! - edge 2: the ingress is the edge before it (its backup path);
//! - edge 3: a mid-path relay, repaired by edge 2, whose own route to 4 is
//!   direct;
//! - edge 3 again, this time holding messages in flight: its link to 4
//!   turns slow and lossy once media flows, so QUIC keeps unacknowledged
//!   messages in edge 3's send buffers when it dies;
//! - edge 2 again, far from edge 1 (120 ms round trip): edge 1 suspects it
//!   long before it can call it dead (four round trips), and sends the
//!   media around it meanwhile as copies, and the messages it wrote to it
//!   since it went silent;
//! - edge 3 stays up, but its link to edge 4 is cut (a cable cut): from
//!   edge 3 that looks like edge 4 dying, yet edge 4's own members are
//!   there to be reached around the link (3 -> 5 -> 4, edge 3's backup);
//! - edges 2 and 3 stand for one city and edge 4 for another, and the cut
//!   between the cities takes 2 - 4 and 3 - 4 at once, while each of 2 and
//!   3 has its backup to 4 through the other (a shared risk the backups do
//!   not see): no edge has a way to 4 until the controller's new paths
//!   (through 5) come, played here 1 s later. Messages wait on the dead
//!   links meanwhile (not passed to and fro between 2 and 3 until their
//!   hop limit runs out) and are sent again when the paths move;
//! - edge 3's link to 4 is cut, and edge 3's only way to 4 goes back
//!   through edge 2, where the messages come from: it can only hold them
//!   on the dead link. Edge 1's paths then move around (the controller's,
//!   1 s later), and edge 1 sends what it wrote lately towards 4 again
//!   along them;
//! - nothing dies, but edge 3's link to 4 goes from no delay to a 400 ms
//!   round trip at once: silent for 200 ms, 4 looks dead to 3 (which has
//!   no other way to it) until the connection answers again;
//! - edge 3 drains (stops cleanly) with 40 ms links on both sides: with no
//!   controller to move the paths off it, it waits its 2 s for them, then
//!   tells edge 2, which sends the media around it from then on while edge
//!   3 forwards what was already on its way through it.
//!
//! The sender's SDK keeps no replay window, so only the edges can deliver
//! what was lost inside the dead relay.
mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use edge_node::tls::DevPki;
use protocol::EdgeId;
use sdk::{Event, TrackKind};
use testkit::netem::LinkProfile;

/// Messages sent, one every [`EVERY`]; the relay dies after a third of them.
const MESSAGES: u64 = 300;
const EVERY: Duration = Duration::from_millis(10);

fn ip(edge: EdgeId) -> IpAddr {
    IpAddr::from([127, 0, 0, 40 + edge as u8])
}

async fn start() -> Mesh {
    init_logs();
    let pki = DevPki::new().unwrap();
    let wan = Wan::new(vec![]).unwrap();
    let mut edges = vec![];
    for id in 1..=5 {
        let listen = SocketAddr::new(ip(id), 0);
        edges.push(start_edge(&pki, id, Some(listen), &|_| {}, Some(&wan)).await);
    }
    let mesh = Mesh {
        pki,
        edges,
        wan: Some(wan),
    };
    mesh.full_mesh_routes();
    // 1 -> 4 through 2 and 3, 1 -> 5 -> 4 as the backup; the way back
    // mirrors it. Everyone else reaches everyone directly, and everyone
    // probes everyone.
    for e in &mesh.edges {
        let mut t = (*e.routes.current()).clone();
        t.probe = t.peers.keys().copied().collect();
        e.routes.publish(t);
    }
    for (at, path, backup) in [(1, [1, 2, 3, 4], [1, 5, 4]), (4, [4, 3, 2, 1], [4, 5, 1])] {
        mesh.set_paths(at, &[&path[..]]);
        mesh.set_backups(at, &[&backup[..]]);
    }
    mesh
}

/// What happens to the relay: it goes, or links around it are cut.
#[derive(Clone, Copy, PartialEq)]
enum Death {
    /// Off the network, then gone (SIGKILL, power cut).
    Kill,
    /// The same, its link to edge 4 slow and lossy: messages in flight.
    KillInFlight,
    /// The same, its link from edge 1 long (60 ms each way).
    KillFar,
    /// Stopped cleanly (drained): its close frames get out.
    Stop,
    /// The same, its links on the path long (40 ms each way): media is in
    /// flight through it when it stops.
    StopFar,
    /// Not dead at all: its link to edge 4 is cut.
    CutFromReceiver,
    /// Not dead either: its and edge 2's links to edge 4 are cut, each the
    /// other's backup to 4.
    CutCityPair,
    /// Not dead either: its link to edge 4 is cut, and its own way to 4
    /// goes back through edge 2.
    CutWayBackOnly,
    /// Not dead at all: its link to edge 4 goes from nothing to a 400 ms
    /// round trip at once (a route change): its first answers then come
    /// 200 ms late, past the silence rule's 150 ms.
    RoundTripGrows,
}

/// `victim` goes (`how`) while 300 messages and a media stream go from
/// edge 1 to edge 4.
async fn kill_a_relay_of_the_path(victim: EdgeId, how: Death) {
    let mut mesh = start().await;
    if how == Death::KillFar {
        let far = LinkProfile {
            delay_ms: 60.0,
            ..LinkProfile::default()
        };
        mesh.wan().set_link(ip(1), ip(victim), far).unwrap();
    }
    if how == Death::StopFar {
        let far = LinkProfile {
            delay_ms: 40.0,
            ..LinkProfile::default()
        };
        for (a, b) in [(2, victim), (victim, 4)] {
            mesh.wan().set_link(ip(a), ip(b), far).unwrap();
        }
    }
    if how == Death::CutFromReceiver {
        mesh.set_backups(victim, &[&[victim, 5, 4]]);
    }
    if how == Death::CutCityPair {
        mesh.set_backups(3, &[&[3, 2, 4]]);
        mesh.set_backups(2, &[&[2, 3, 4]]);
    }
    if how == Death::CutWayBackOnly {
        mesh.set_paths(3, &[&[3, 2, 5, 4]]);
        mesh.set_backups(3, &[&[3, 2, 5, 4]]);
    }
    let mut sender_config = mesh.sdk_config(&[1]);
    sender_config.replay_window = 0;
    let Call {
        sender,
        receiver,
        room,
        rx_room: _rx_room,
    } = Call::start(sender_config, mesh.sdk_config(&[4])).await;
    let mic = room.publish_track("mic", TrackKind::Audio).await.unwrap();

    // Media flows (through the path) before anything is measured.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let _ = mic.send(b"frame").await;
            tokio::select! {
                e = receiver.next_event() => if let Some(Event::Media(_)) = e { return },
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    })
    .await
    .expect("media crosses the path");
    let path = mesh.edge(1).core.route_table().paths[&4].clone();
    assert_eq!(path, vec![1, 2, 3, 4]);
    // Slowed once its relay link is up: a QUIC handshake through a fifth
    // of its packets lost may take longer than the accepting edge's
    // handshake timeout (5 s: a third lost flight backs off past it),
    // which is not what this test is about (it did, once in CI).
    if how == Death::KillInFlight {
        let slow = LinkProfile {
            delay_ms: 100.0,
            loss: 0.2,
            ..LinkProfile::default()
        };
        mesh.wan().set_link(ip(victim), ip(4), slow).unwrap();
    }

    // The receiver listens until every message came and the media stopped
    // (had it stopped at the last message, the media after it would read
    // as a gap: it did, 0.6 s, hiding the failover's own).
    let media_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let media_sent = media_done.clone();
    let received = tokio::spawn(async move {
        let (mut seqs, mut media_at, mut message_at) = (vec![], vec![], vec![]);
        let mut media_seqs = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let media_over = || media_done.load(std::sync::atomic::Ordering::Relaxed);
        while ((seqs.len() as u64) < MESSAGES || !media_over()) && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(1), receiver.next_event()).await {
                Ok(Some(Event::Message(m))) if m.from == "sam" => {
                    seqs.push(m.seq);
                    message_at.push(Instant::now());
                }
                Ok(Some(Event::Media(m))) => {
                    media_at.push(Instant::now());
                    media_seqs.insert(m.sequence);
                }
                _ => {}
            }
        }
        (seqs, media_at, message_at, media_seqs, receiver)
    });
    let media = tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        for _ in 0..(MESSAGES + 100) {
            tick.tick().await;
            let _ = mic.send(b"frame").await;
        }
        media_sent.store(true, std::sync::atomic::Ordering::Relaxed);
        Instant::now()
    });
    let cut = LinkProfile {
        down: true,
        ..LinkProfile::default()
    };
    for i in 0..MESSAGES {
        // The controller's paths around the cut between the cities.
        if how == Death::CutCityPair && i == MESSAGES / 3 + 100 {
            for at in [1, 2, 3] {
                mesh.set_paths(at, &[&[at, 5, 4]]);
            }
        }
        // The controller's paths around the cut: the sender's edge's only.
        if how == Death::CutWayBackOnly && i == MESSAGES / 3 + 100 {
            mesh.set_paths(1, &[&[1, 5, 4]]);
        }
        if i == MESSAGES / 3 {
            if how == Death::CutFromReceiver {
                mesh.wan().set_link(ip(victim), ip(4), cut).unwrap();
            } else if how == Death::CutCityPair {
                mesh.wan().set_link(ip(2), ip(4), cut).unwrap();
                mesh.wan().set_link(ip(3), ip(4), cut).unwrap();
            } else if how == Death::CutWayBackOnly {
                mesh.wan().set_link(ip(3), ip(4), cut).unwrap();
            } else if how == Death::RoundTripGrows {
                let long = LinkProfile {
                    delay_ms: 200.0,
                    ..LinkProfile::default()
                };
                mesh.wan().set_link(ip(victim), ip(4), long).unwrap();
            } else {
                let at = mesh.edges.iter().position(|e| e.id() == victim).unwrap();
                let edge = mesh.edges.remove(at);
                if matches!(how, Death::Stop | Death::StopFar) {
                    tokio::spawn(edge.shutdown());
                } else {
                    // SIGKILL: off the network first, then gone.
                    mesh.wan().set_host_down(ip(victim), true);
                    tokio::spawn(edge.kill());
                }
            }
        }
        room.send_message(Bytes::from_static(b"hello"))
            .await
            .expect("the sender's edge accepts every message");
        tokio::time::sleep(EVERY).await;
    }
    let media_end = media.await.unwrap();
    let (seqs, mut media_at, message_at, media_seqs, receiver) = received.await.unwrap();
    // Media packets that never came, between the first and the last heard
    // (the links lose nothing: only a relay's going can).
    let media_lost = match (media_seqs.first(), media_seqs.last()) {
        (Some(a), Some(b)) => (b - a + 1) as usize - media_seqs.len(),
        _ => 0,
    };
    // The longest silence while media was sent (media that never came back
    // is silent until the sender stopped).
    media_at.retain(|t| *t <= media_end);
    media_at.push(media_end);
    let longest_gap = |at: &[Instant]| at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let gap = longest_gap(&media_at);
    let message_gap = longest_gap(&message_at);
    let stats = receiver.stats().snapshot();
    let missing: Vec<u64> = (1..=MESSAGES).filter(|s| !seqs.contains(s)).collect();
    eprintln!(
        "edge {victim} killed{}: {} of {MESSAGES} messages, {} skipped, missing {missing:?}; longest media gap {gap:?}, {media_lost} media packets lost, longest wait between messages {message_gap:?}",
        match how {
            Death::Kill => "",
            Death::KillInFlight => " holding messages in flight",
            Death::KillFar => " (far from the edge before it)",
            Death::Stop => " (stopped cleanly)",
            Death::StopFar => " (stopped cleanly, media in flight through it)",
            Death::CutFromReceiver => ", no: its link to the receiver's edge cut",
            Death::CutCityPair => ", no: its and edge 2's links to the receiver's edge cut",
            Death::CutWayBackOnly => ", no: its link to the receiver's edge cut, its way back only",
            Death::RoundTripGrows => ", no: its round trip to the receiver's edge grown",
        },
        seqs.len(),
        stats.messages_skipped,
    );
    assert_eq!(
        seqs,
        (1..=MESSAGES).collect::<Vec<_>>(),
        "every message once, in order"
    );
    assert_eq!(stats.messages_skipped, 0);
    // Target: 0.5 s (the edge before it sees its relay connection silent
    // for 150 ms after a send, looked at every 20 ms: 0.2-0.3 s, then
    // repairs at once; its probes alone took 0.6-0.8 s); slack for a loaded
    // machine. Around the cut between two cities media comes back with the
    // controller's paths.
    let media_bound = match how {
        Death::CutCityPair | Death::CutWayBackOnly => Duration::from_millis(3_000),
        _ => Duration::from_millis(800),
    };
    assert!(
        gap < media_bound,
        "media back within {media_bound:?}: {gap:?}"
    );
    // A clean stop is routed around at once (20 ms quiet).
    if how == Death::Stop {
        assert!(gap < Duration::from_millis(200), "{gap:?}");
    }
    // A relay that drains tells the edges that send through it first, and
    // forwards what they sent it until what they send around it arrives:
    // not one packet of a stream through it is lost.
    if how == Death::StopFar {
        assert_eq!(media_lost, 0, "media through a draining relay");
    }
    // A round trip grown past the silence rule: edge 3 calls edge 4 dead
    // (it has no other way to it) until its connection answers, 50 ms
    // later (gaps of 0.21-0.30 s, the 200 ms of added delay included,
    // quiet); until a probe answered, as it was, 0.49-0.50 s.
    if how == Death::RoundTripGrows {
        assert!(
            gap < Duration::from_millis(400),
            "a grown round trip is no death: {gap:?}"
        );
    }
    // A far next hop: suspect after 1.25 RTT + 25 ms of silence and sent
    // around as copies (0.40 s in all, quiet); waiting for the dead
    // verdict, four RTTs, took 0.69 s. Messages too: those written to it
    // since it went silent are resent around it when it becomes suspect
    // (0.27 s between two messages, quiet), not at the dead verdict
    // (0.59 s).
    if how == Death::KillFar {
        assert!(
            gap < Duration::from_millis(500),
            "media around a suspect hop: {gap:?}"
        );
        assert!(
            message_gap < Duration::from_millis(500),
            "messages around a suspect hop: {message_gap:?}"
        );
    }
    sender.close().await;
    receiver.close().await;
    mesh.stop().await;
}

/// [`kill_a_relay_of_the_path`], bounded.
async fn a_relay_of_the_path_goes(victim: EdgeId, how: Death) {
    tokio::time::timeout(
        Duration::from_secs(90),
        kill_a_relay_of_the_path(victim, how),
    )
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_next_hop_dies() {
    a_relay_of_the_path_goes(2, Death::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mid_path_relay_dies() {
    a_relay_of_the_path_goes(3, Death::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mid_path_relay_dies_holding_messages_in_flight() {
    a_relay_of_the_path_goes(3, Death::KillInFlight).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_next_hop_that_dies_is_sent_around_while_suspect() {
    a_relay_of_the_path_goes(2, Death::KillFar).await;
}

/// A cut link is seen from the edge before it just as a dead next hop is,
/// and repaired the same way; the hop itself is reached around the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_to_the_last_hop_is_routed_around() {
    a_relay_of_the_path_goes(3, Death::CutFromReceiver).await;
}

/// A cut between two cities, with each edge of one city the other's backup
/// to the other: nothing is lost while no edge has a way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_between_two_cities_loses_no_message() {
    a_relay_of_the_path_goes(3, Death::CutCityPair).await;
}

/// A cut link whose relay can only hold what it gets for the far side (its
/// way there goes back where the messages come from): the sender's edge,
/// on its new paths, sends what it wrote lately again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_no_way_on_loses_no_message_once_the_paths_move() {
    a_relay_of_the_path_goes(3, Death::CutWayBackOnly).await;
}

/// A relay that stops cleanly closes its relay connections with
/// `GOING_AWAY`: the edge before it routes around it at once, not when its
/// probes or the connection's silence say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mid_path_relay_that_stops_is_routed_around_at_once() {
    a_relay_of_the_path_goes(3, Death::Stop).await;
}

/// A relay that drains, with media in flight through it, loses none of it:
/// the edge before it hears that it is going first, and sends around it
/// while it still forwards (docs/protocol.md §9.1, `draining`). Without
/// the notice 8 packets of 10 ms were lost in each run, the close's trip
/// and what was in flight; with it, none (gap 21-24 ms quiet and loaded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_relay_loses_no_media_in_flight() {
    a_relay_of_the_path_goes(3, Death::StopFar).await;
}

/// A link's round trip grows at once from nothing to 400 ms: its silence
/// meanwhile is not a death.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_that_grows_at_once_is_no_death() {
    a_relay_of_the_path_goes(3, Death::RoundTripGrows).await;
}
