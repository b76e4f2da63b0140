//! A partition between two edges that outlasts the relay connection, and
//! the time frames are kept for a resend: the messages the sender's edge
//! accepted during it (and just before it, in flight on the connection
//! that died) reach the receiver after the heal, all of them, in order,
//! once each.
mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use edge_node::tls::DevPki;
use sdk::Event;
use testkit::netem::LinkProfile;

const BEFORE: u64 = 20;
const DURING: u64 = 60;

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

fn cut(mesh: &Mesh, down: bool) {
    let profile = LinkProfile {
        down,
        ..LinkProfile::default()
    };
    mesh.wan().set_link(ip(31), ip(32), profile).unwrap();
}

/// Edges 1 and 2 at 127.0.0.31 and .32, the link between them emulated,
/// full-mesh routes.
async fn two_edges(tweak: &impl Fn(&mut edge_node::EdgeConfig)) -> Mesh {
    two_edges_numbered([1, 2], tweak).await
}

/// [`two_edges`] with other edge ids (the metrics of the tests running
/// alongside in this process are told apart by them).
async fn two_edges_numbered(ids: [u32; 2], tweak: &impl Fn(&mut edge_node::EdgeConfig)) -> Mesh {
    let pki = DevPki::new().unwrap();
    let wan = Wan::new(vec![]).unwrap();
    let mut edges = vec![];
    for (id, last) in [(ids[0], 31), (ids[1], 32)] {
        let listen = SocketAddr::new(ip(last), 0);
        edges.push(start_edge(&pki, id, Some(listen), tweak, Some(&wan)).await);
    }
    let mesh = Mesh {
        pki,
        edges,
        wan: Some(wan),
    };
    mesh.full_mesh_routes();
    mesh
}

/// A call between sam on edge `edges[0]` and rita on `edges[1]`, sam
/// sending audio every 20 ms until the returned task is aborted; returns
/// once rita hears it.
async fn audio_call(mesh: &Mesh, edges: [u32; 2]) -> (Call, tokio::task::JoinHandle<()>) {
    let call = Call::start(mesh.sdk_config(&edges[..1]), mesh.sdk_config(&edges[1..])).await;
    let mic = call
        .room
        .publish_track("mic", sdk::TrackKind::Audio)
        .await
        .unwrap();
    let sending = tokio::spawn(async move {
        loop {
            let _ = mic.send(b"frame").await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    while !matches!(call.receiver.next_event().await, Some(Event::Media(_))) {}
    (call, sending)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_accepted_during_a_partition_arrive_after_it_in_order() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let mesh = two_edges(&|cfg: &mut edge_node::EdgeConfig| {
            // The relay connection dies 1 s into the cut (clients keep
            // theirs alive with keepalives every 150 ms).
            cfg.limits.client_idle_timeout_ms = 1_000;
        })
        .await;

        // The sender's SDK keeps no acknowledged messages for a replay to
        // members that reappear: the edges alone must deliver them.
        let mut sender_config = mesh.sdk_config(&[1]);
        sender_config.replay_window = 0;
        let Call {
            sender,
            receiver,
            room,
            rx_room: _rx_room,
        } = Call::start(sender_config, mesh.sdk_config(&[2])).await;
        let received = tokio::spawn(async move {
            let mut seqs = vec![];
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while (seqs.len() as u64) < BEFORE + DURING {
                match tokio::time::timeout_at(deadline, receiver.next_event()).await {
                    Ok(Some(Event::Message(m))) if m.from == "sam" => seqs.push(m.seq),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            (seqs, receiver.stats().snapshot())
        });

        let send = |n: u64| {
            let room = room.clone();
            async move {
                for _ in 0..n {
                    room.send_message(Bytes::from_static(b"hello"))
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        send(BEFORE).await;
        cut(&mesh, true);
        // Accepted by edge 1 (the sender's link is not cut) while edge 2 is
        // unreachable; the relay connection times out meanwhile.
        send(DURING).await;
        // The cut lasts twice as long as the link keeps frames while up
        // (three idle timeouts: 3 s here), which must not age them.
        tokio::time::sleep(Duration::from_millis(6_000)).await;
        let resent_before = metric("rtn_edge_relay_messages_resent_total", &[]);
        cut(&mesh, false);

        let (seqs, stats) = received.await.unwrap();
        assert_eq!(
            seqs,
            (1..=BEFORE + DURING).collect::<Vec<_>>(),
            "all, in order, once"
        );
        assert_eq!(stats.messages_skipped, 0);
        assert!(
            metric("rtn_edge_relay_messages_resent_total", &[]) > resent_before,
            "the new relay connection carried the retained messages"
        );
        sender.close().await;
        mesh.stop().await;
    })
    .await
    .expect("bounded");
}

/// An edge killed as a crash kills it (no close frame gets out) and
/// restarted at the same address is reached by its peers at once, not when
/// their connections to the process that died time out (10 s idle by
/// default): its hello tells them it restarted, and they redial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_edge_gets_media_from_its_peers_at_once() {
    tokio::time::timeout(Duration::from_secs(40), async {
        let mut mesh = two_edges(&|_| {}).await;
        // Edge 1 has its connection to edge 2: media reaches rita there.
        let (
            Call {
                sender, receiver, ..
            },
            sending,
        ) = audio_call(&mesh, [1, 2]).await;

        // Edge 2 crashes: its close frames do not get out.
        cut(&mesh, true);
        let old = mesh.edges.remove(1);
        let addr = old.addr();
        old.kill().await;
        receiver.close().await;
        let e = start_edge(&mesh.pki, 2, Some(addr), &|_| {}, mesh.wan.as_ref()).await;
        mesh.edges.push(e);
        mesh.full_mesh_routes();
        cut(&mesh, false);
        let restarted = tokio::time::Instant::now();

        let late = sdk::Client::connect(mesh.sdk_config(&[2])).await.unwrap();
        let _late_room = late
            .join(&token("chat", "lea", false, true), "chat", true)
            .await
            .unwrap();
        while !matches!(late.next_event().await, Some(Event::Media(_))) {}
        let first_media = restarted.elapsed();
        println!("restarted edge: first media after {first_media:?}");
        // Well under the 10 s a stale connection lives.
        assert!(first_media < Duration::from_secs(3), "{first_media:?}");

        sending.abort();
        late.close().await;
        sender.close().await;
        mesh.stop().await;
    })
    .await
    .expect("bounded");
}

/// A partition long enough for each edge's directory entry of the other to
/// expire: once it heals, each edge greets the other with its own entry
/// (the homes' pushes would take a round of a second or more each), and
/// media flows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_long_partition_the_edges_greet_each_other_and_media_flows_again() {
    tokio::time::timeout(Duration::from_secs(40), async {
        let mesh = two_edges_numbered([3, 4], &|_| {}).await;
        let (
            Call {
                sender, receiver, ..
            },
            sending,
        ) = audio_call(&mesh, [3, 4]).await;

        let greeted = |edge: &str| {
            metric(
                "rtn_edge_directory_hints_total",
                &[("edge", edge), ("event", "greeted")],
            )
        };
        let before = (greeted("3"), greeted("4"));
        cut(&mesh, true);
        // Longer than an entry lives unrefreshed (ENTRY_TTL, 3.5 s) after
        // the probes saw the peer dead.
        tokio::time::sleep(Duration::from_millis(5_000)).await;
        // What arrived before the cut is not what this test waits for.
        while tokio::time::timeout(Duration::from_millis(50), receiver.next_event())
            .await
            .is_ok()
        {}
        cut(&mesh, false);
        let healed = tokio::time::Instant::now();
        while !matches!(receiver.next_event().await, Some(Event::Media(_))) {}
        println!("media again {:?} after the heal", healed.elapsed());
        assert!(
            greeted("3") > before.0 && greeted("4") > before.1,
            "each edge greeted the other: before {before:?}, after ({}, {})",
            greeted("3"),
            greeted("4")
        );

        sending.abort();
        sender.close().await;
        receiver.close().await;
        mesh.stop().await;
    })
    .await
    .expect("bounded");
}
