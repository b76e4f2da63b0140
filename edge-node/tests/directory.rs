//! Channel directories across edges: a member joining through an edge that
//! has just lost the channel's last member is seen at once elsewhere, and a
//! rejoining member's new edge greets the edges its client named.
mod common;

use std::time::{Duration, Instant};

use common::*;
use protocol::pb::{self, client_frame::Kind as CK, server_frame::Kind as SK};
use sdk::{Event, TrackKind};

async fn joined(c: &mut RawClient, user: &str) {
    c.expect(|f| match f {
        SK::MemberJoined(m) if m.user_id == user => Some(()),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_taken_up_again_on_an_edge_is_reported_at_once() {
    let mesh = Mesh::start(2).await;
    let ca = mesh.ca_der();
    let mut alice = RawClient::connect(mesh.edge(1).addr(), &ca).await;
    alice.join("room", "alice").await;
    let mut bob = RawClient::connect(mesh.edge(2).addr(), &ca).await;
    let jb = bob.join("room", "bob").await;
    joined(&mut alice, "bob").await;
    // Bob leaves: edge 2 withdraws from the channel's homes and drops it.
    bob.send(CK::Leave(pb::Leave {
        request_id: 7,
        channel_id: jb.channel_id,
    }))
    .await;
    alice
        .expect(|f| match f {
            SK::MemberLeft(m) if m.user_id == "bob" => Some(()),
            _ => None,
        })
        .await;
    // Carol takes the channel up again on edge 2 at once: its report must
    // not read as older than the withdrawal (which homes keep for 3.5 s).
    let at = Instant::now();
    let mut carol = RawClient::connect(mesh.edge(2).addr(), &ca).await;
    carol.join("room", "carol").await;
    joined(&mut alice, "carol").await;
    let took = at.elapsed();
    eprintln!("carol seen on edge 1 {took:?} after joining edge 2");
    assert!(took < Duration::from_millis(1_500), "{took:?}");
    mesh.stop().await;
}

/// A publisher whose edge dies rejoins through another edge and names the
/// edges of the members it knew (`Join.member_edges`): its new edge greets
/// the receiver's edge directly, which answers, and media flows again
/// whatever the channel's directory homes are doing (protocol §9.6,
/// "Hints").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoining_publisher_s_new_edge_greets_the_receivers_edge() {
    init_logs();
    let mut mesh = Mesh::start(3).await;
    let Call {
        sender,
        receiver,
        room,
        rx_room: _rx_room,
    } = Call::start(mesh.sdk_config(&[1, 3]), mesh.sdk_config(&[2])).await;
    let mic = room.publish_track("mic", TrackKind::Audio).await.unwrap();
    let sending = tokio::spawn(async move {
        loop {
            let _ = mic.send(b"frame").await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let hints = |edge: &str, event: &str| {
        metric(
            "rtn_edge_directory_hints_total",
            &[("edge", edge), ("event", event)],
        )
    };
    let (greeted, told) = (hints("3", "greeted"), hints("2", "told"));
    wait_for_media(&receiver, 0).await;

    // Sam's edge dies: sam rejoins through edge 3, naming edge 2 (rita's).
    let i = mesh.edges.iter().position(|e| e.id() == 1).unwrap();
    mesh.edges.remove(i).kill().await;
    let edge3 = mesh.edge(3).addr();
    tokio::time::timeout(Duration::from_secs(5), async {
        while sender.edge() != Some(edge3) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("sam fails over to edge 3");
    // Media sam sent through edge 3.
    wait_for_media(&receiver, unix_us()).await;
    assert!(hints("3", "greeted") > greeted, "edge 3 greeted edge 2");
    assert!(hints("2", "told") > told, "edge 2 answered");
    sending.abort();
    sender.close().await;
    receiver.close().await;
    mesh.stop().await;
}

/// Wait (at most 5 s) for a media packet sam sent after `after_us` (unix
/// microseconds) to reach `receiver`.
async fn wait_for_media(receiver: &sdk::Client, after_us: u64) {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match receiver.next_event().await {
                Some(Event::Media(m)) if m.user == "sam" && m.timestamp_us > after_us => return,
                Some(_) => {}
                None => panic!("rita's client closed"),
            }
        }
    })
    .await
    .expect("sam's media reaches rita");
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// A broadcast grows past the large-channel threshold across two edges
/// (docs/protocol.md §4.3, "Large channels"): a viewer is told of the
/// switch and then of the count, not of each viewer; a late joiner's
/// `Joined` lists the host alone with the full count; a viewer that starts
/// publishing is announced, and hidden again when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_channel_lists_its_publishers_and_counts_the_rest() {
    use protocol::limits::LARGE_CHANNEL_MEMBERS;
    let mesh = Mesh::start(2).await;
    let ca = mesh.ca_der();
    let addr = |i: usize| mesh.edge(1 + (i % 2) as u32).addr();
    let mut host = RawClient::connect(addr(0), &ca).await;
    let channel_id = host.join("show", "host").await.channel_id;
    host.publish(channel_id, "cam").await.unwrap();
    let mut watcher = RawClient::connect(addr(1), &ca).await;
    watcher.join("show", "watcher").await;
    let viewers_n = LARGE_CHANNEL_MEMBERS + 10;
    let mut viewers = vec![];
    for i in 0..viewers_n {
        let mut v = RawClient::connect(addr(i), &ca).await;
        v.join("show", &format!("viewer-{i}")).await;
        viewers.push(v);
    }
    let total = (viewers_n + 2) as u64;
    // The watcher hears joins until the switch, then counts until the
    // count is complete.
    let (mut joins, mut switched) = (0, false);
    watcher
        .expect(|f| match f {
            SK::MemberJoined(_) => {
                joins += 1;
                None
            }
            SK::MemberCount(c) => {
                assert!(c.large, "{c:?}");
                switched = true;
                (c.members == total).then_some(())
            }
            _ => None,
        })
        .await;
    assert!(switched);
    assert!(
        joins <= LARGE_CHANNEL_MEMBERS,
        "{joins} joins announced to one viewer"
    );
    // A late joiner sees the host listed and everyone counted.
    let mut late = RawClient::connect(addr(0), &ca).await;
    let j = late.join("show", "late").await;
    assert!(j.large);
    assert_eq!(j.member_count, total + 1);
    let listed: Vec<&str> = j.members.iter().map(|m| m.user_id.as_str()).collect();
    assert_eq!(listed, ["host"]);
    // A viewer on the other edge goes on air, then off.
    let on_air = &mut viewers[1];
    let key = on_air.publish(channel_id, "cam").await.unwrap();
    late.expect(|f| match f {
        SK::MemberJoined(m) if m.user_id == "viewer-1" => Some(()),
        _ => None,
    })
    .await;
    on_air
        .send(CK::UnpublishTrack(pb::UnpublishTrack {
            request_id: 9,
            channel_id,
            track_key: key,
        }))
        .await;
    late.expect(|f| match f {
        SK::MemberLeft(m) if m.user_id == "viewer-1" => {
            assert_eq!(m.reason, pb::MemberLeftReason::Hidden as i32);
            Some(())
        }
        _ => None,
    })
    .await;
    mesh.stop().await;
}

/// A burst of joins over three edges reaches the channel's homes as the
/// chain of deltas each edge took: no home lacks what a report builds on,
/// so none asks an edge for its whole entry and no edge resends one
/// (`rtn_edge_directory_resyncs_total`), and every edge counts every
/// member. On a loaded machine, 3,000 joins over 30 edges used to cross a
/// dozen deltas (two threads reporting at once on one edge; copies sent
/// around a suspect hop), and each crossing cost the whole entry, resent
/// on every push until it arrived and answered with the whole directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_joins_reaches_the_homes_in_order() {
    const EDGES: [u32; 3] = [21, 22, 23];
    const VIEWERS: usize = 600;
    // 600 connections from one address within a second.
    let mesh = Mesh::try_start(&EDGES, None, |c| {
        c.admission = edge_node::config::AdmissionSection::unlimited()
    })
    .await
    .unwrap();
    let ca = mesh.ca_der();
    let mut clients = vec![];
    for i in 0..VIEWERS {
        let edge = mesh.edge(EDGES[i % EDGES.len()]);
        clients.push(RawClient::connect(edge.addr(), &ca).await);
    }
    let joins: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                let j = c.join("burst", &format!("viewer-{i}")).await;
                (c, j.channel_id)
            })
        })
        .collect();
    let mut joined = vec![];
    for j in joins {
        joined.push(j.await.unwrap());
    }
    let channel = protocol::ChannelId(joined[0].1);
    let counts = || {
        EDGES.map(|id| {
            mesh.edge(id)
                .core
                .existing_channel(channel)
                .map_or(0, |ch| ch.read().member_count())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while counts() != [VIEWERS; 3] {
        assert!(Instant::now() < deadline, "counts {:?}", counts());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for event in ["home_lacked_entry", "own_entry_resent"] {
        for id in EDGES {
            let n = metric(
                "rtn_edge_directory_resyncs_total",
                &[("edge", &id.to_string()), ("event", event)],
            );
            assert_eq!(n, 0.0, "edge {id}: {event}");
        }
    }
    drop(joined);
    mesh.stop().await;
}
