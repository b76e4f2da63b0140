//! Three edges with static routes: a publisher on edge 1 reaches subscribers
//! on edges 2 and 3, and each overlay link carries each packet once.
mod common;

use std::time::Duration;

use common::*;
use protocol::pb::server_frame::Kind as SK;

#[tokio::test]
async fn media_and_messages_cross_each_link_once() {
    let mesh = Mesh::start(3).await;
    // Edge 1 reaches 3 through 2 (as if 1-3 were a poor direct path).
    mesh.set_paths(1, &[&[1, 2, 3]]);
    let ca = mesh.ca_der();
    let mut a = RawClient::connect(mesh.edge(1).addr(), &ca).await;
    let mut subs = vec![];
    for (edge, user) in [(2, "b1"), (2, "b2"), (3, "c1"), (3, "c2")] {
        let mut c = RawClient::connect(mesh.edge(edge).addr(), &ca).await;
        c.join("global", user).await;
        subs.push(c);
    }
    let ja = a.join("global", "alice").await;
    let cid = ja.channel_id;
    let track = a.publish(cid, "mic").await.unwrap();
    // Every subscriber learns of the track through the directory.
    for s in subs.iter_mut() {
        let t = s
            .expect(|f| match f {
                SK::TrackAvailable(t) => Some(t),
                _ => None,
            })
            .await;
        assert_eq!(t.track.unwrap().track_key, track);
    }

    let out = |edge: &str| {
        metric(
            "rtn_edge_media_packets_total",
            &[("edge", edge), ("dir", "out"), ("link", "relay")],
        )
    };
    let (out1, out2, out3) = (out("1"), out("2"), out("3"));
    const N: u32 = 200;
    for seq in 0..N {
        a.media(cid, track, seq, &[7u8; 200]);
        if seq % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for s in &subs {
        let mut got = 0;
        while got < N {
            if s.recv_media().await.is_none() {
                break;
            }
            got += 1;
        }
        assert!(got >= N * 9 / 10, "subscriber received {got} of {N}");
    }
    // Edge 1 sent each packet once (to 2 only, though 2 and 3 both have two
    // subscribers); edge 2 sent each once to 3; edge 3 relayed nothing.
    assert_eq!(out("1") - out1, N as f64);
    assert_eq!(out("2") - out2, N as f64);
    assert_eq!(out("3") - out3, 0.0);

    // Messages take the same trees and arrive in order everywhere.
    for seq in 1..=10 {
        a.message(cid, seq, b"hi").await;
    }
    for s in subs.iter_mut() {
        expect_messages(s, 10, "alice").await;
    }
    mesh.stop().await;
}

/// A relay frame for a peer this edge has no link to (its link just went,
/// or another edge's tree names a peer this edge's routes do not) waits for
/// the link dialled then: no message is dropped for want of a link.
#[tokio::test]
async fn messages_for_a_peer_without_a_link_wait_for_its_dial() {
    let mesh = Mesh::start(2).await;
    let ca = mesh.ca_der();
    let mut a = RawClient::connect(mesh.edge(1).addr(), &ca).await;
    let mut b = RawClient::connect(mesh.edge(2).addr(), &ca).await;
    b.join("room", "bob").await;
    let cid = a.join("room", "alice").await.channel_id;
    b.expect(|f| match f {
        SK::MemberJoined(m) if m.user_id == "alice" => Some(()),
        _ => None,
    })
    .await;
    let no_link = || {
        metric(
            "rtn_edge_protocol_errors_total",
            &[("edge", "1"), ("reason", "no_relay_link")],
        )
    };
    let dropped_before = no_link();
    mesh.edge(1).core.relay.clear();
    for seq in 1..=3 {
        a.message(cid, seq, b"hi").await;
    }
    expect_messages(&mut b, 3, "alice").await;
    assert_eq!(no_link(), dropped_before);
    mesh.stop().await;
}

/// Waits for messages `1..=n` from `from`, in order.
async fn expect_messages(s: &mut RawClient, n: u64, from: &str) {
    for seq in 1..=n {
        let m = s
            .expect(|f| match f {
                SK::Message(m) => Some(m),
                _ => None,
            })
            .await;
        assert_eq!((m.seq, m.from_user.as_str()), (seq, from));
    }
}

/// UDP sockets bound to `port` on loopback (`/proc/net/udp`).
fn sockets_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let wanted = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(&wanted))
        })
        .count()
}

/// `edge.endpoints = 2`: two sockets share each edge's port (SO_REUSEPORT),
/// clients spread over them by address are all served, and relay links
/// (dialed from a socket of their own, since a dial's replies could land
/// on either listener) carry media and messages between the edges.
#[tokio::test]
async fn two_endpoints_on_one_port_serve_clients_and_relay_links() {
    // Ids of its own: metrics are per process and the test above counts
    // edges 1-3's packets exactly.
    let mesh = Mesh::try_start(&[11, 12], None, |c| c.edge.endpoints = 2)
        .await
        .unwrap();
    for id in [11, 12] {
        assert_eq!(sockets_on(mesh.edge(id).addr().port()), 2, "edge {id}");
    }
    let ca = mesh.ca_der();
    let mut subs = vec![];
    for i in 0..8 {
        let edge = if i < 6 { 12 } else { 11 };
        let mut c = RawClient::connect(mesh.edge(edge).addr(), &ca).await;
        c.join("wide", &format!("sub-{i}")).await;
        subs.push(c);
    }
    let mut a = RawClient::connect(mesh.edge(11).addr(), &ca).await;
    let cid = a.join("wide", "alice").await.channel_id;
    let track = a.publish(cid, "mic").await.unwrap();
    for s in subs.iter_mut() {
        s.expect(|f| match f {
            SK::TrackAvailable(t) => Some(t),
            _ => None,
        })
        .await;
    }
    const N: u32 = 100;
    for seq in 0..N {
        a.media(cid, track, seq, &[7u8; 200]);
        if seq % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for seq in 1..=5 {
        a.message(cid, seq, b"hi").await;
    }
    for (i, s) in subs.iter_mut().enumerate() {
        let mut got = 0;
        while got < N && s.recv_media().await.is_some() {
            got += 1;
        }
        assert!(got >= N * 9 / 10, "subscriber {i} received {got} of {N}");
        expect_messages(s, 5, "alice").await;
    }
    mesh.stop().await;
}
