//! An edge owns every task it starts: once it is killed or drained none is
//! left running, nothing holds its state any more, and its connections
//! are closed.
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use control::store::{ControlStore, MemoryStore};
use edge_node::{Edge, EdgeConfig, EdgeOptions};
use protocol::pb::{server_frame::Kind as SK, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Tasks of one joined client session: its handshake and control stream,
/// frame writer, media writer and media reader.
const SESSION_TASKS: usize = 4;
/// A relay link this edge dialed (the link, its media writer and datagram
/// reader) and one dialed to it (its connection, its datagram reader).
const RELAY_TASKS: usize = 3 + 2;

/// The frames a client still receives until its connection ends.
async fn frames_until_closed(c: &mut RawClient) -> Vec<SK> {
    let mut frames = vec![];
    while let Some(f) = c.recv().await {
        frames.push(f);
    }
    frames
}

/// An HTTP/1.1 keep-alive connection to the admin port, one request
/// answered and left open.
async fn admin_keepalive(edge: &Edge) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(edge.admin_addr())
        .await
        .unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: edge\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"ok\n") {
        let n = tokio::time::timeout(STEP, s.read(&mut buf))
            .await
            .expect("admin port answers")
            .unwrap();
        assert!(n > 0, "admin connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    s
}

#[tokio::test]
async fn a_killed_edge_leaves_no_task_behind() {
    let mut mesh = Mesh::start(2).await;
    let ca = mesh.ca_der();
    // Two clients on edge 1 and one on edge 2 in one channel: directory
    // frames and media cross the relay links both ways.
    let mut alice = RawClient::connect(mesh.edges[0].addr(), &ca).await;
    let mut amy = RawClient::connect(mesh.edges[0].addr(), &ca).await;
    let mut bob = RawClient::connect(mesh.edges[1].addr(), &ca).await;
    let room = alice.join("room", "alice").await.channel_id;
    amy.join("room", "amy").await;
    bob.join("room", "bob").await;
    alice
        .expect(|f| match f {
            SK::MemberJoined(m) if m.user_id == "bob" => Some(()),
            _ => None,
        })
        .await;
    let track = alice.publish(room, "mic").await.unwrap();
    bob.expect(|f| matches!(f, SK::TrackAvailable(_)).then_some(()))
        .await;
    alice.media(room, track, 1, b"over the relay link");
    assert!(bob.recv_media().await.is_some(), "media crossed the link");
    let mut admin = admin_keepalive(&mesh.edges[0]).await;

    let edge = mesh.edges.remove(0);
    let tasks = edge.connection_tasks();
    let state = Arc::downgrade(&edge.core);
    let running = tasks.len();
    assert!(
        running > 2 * SESSION_TASKS + RELAY_TASKS,
        "sessions, relay links and the admin connection are tracked: {running} tasks"
    );
    edge.kill().await;
    // At once, no waiting: kill returns when everything has ended.
    assert!(tasks.is_stopped());
    assert_eq!(tasks.len(), 0, "tasks outlived the killed edge");
    assert!(
        state.upgrade().is_none(),
        "something still holds the killed edge's state (and UDP port)"
    );

    // Its connections are closed, as a crash's would be: no goaway first.
    for c in [&mut alice, &mut amy] {
        let frames = frames_until_closed(c).await;
        assert!(
            !frames.iter().any(|f| matches!(f, SK::Goaway(_))),
            "a killed edge says no goodbye: {frames:?}"
        );
        assert_eq!(c.closed_code().await, Some(ErrorCode::GoingAway as u64));
    }
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(STEP, admin.read(&mut buf))
        .await
        .expect("the admin connection ends with the edge");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "admin connection still served"
    );

    // The other edge runs on, and stops as cleanly.
    let other = mesh.edges.remove(0);
    let other_tasks = other.connection_tasks();
    assert!(!other_tasks.is_stopped() && !other_tasks.is_empty());
    other.kill().await;
    assert!(other_tasks.is_empty());
}

#[tokio::test]
async fn a_drained_edge_with_a_control_agent_leaves_no_task_behind() {
    init_logs();
    let pki = edge_node::tls::DevPki::new().unwrap();
    let store: Arc<dyn ControlStore> = Arc::new(MemoryStore::new());
    let mut cfg = EdgeConfig::dev(1, APP, SECRET);
    // Far longer than the client takes to leave: a drain that did not see
    // it go would show.
    cfg.limits.drain_timeout_ms = 20_000;
    let opts = EdgeOptions {
        tls: Some(pki.material(&["localhost".into()]).unwrap()),
        client_cert: Some(pki.client_cert(&["localhost".into()]).unwrap()),
        store: Some(store),
        ..Default::default()
    };
    let edge = Edge::start(cfg, opts).await.unwrap();
    let mut carol = RawClient::connect(edge.addr(), &pki.ca_der()).await;
    carol.join("room", "carol").await;
    let tasks = edge.connection_tasks();
    let state = Arc::downgrade(&edge.core);
    assert!(tasks.len() >= SESSION_TASKS);

    let started = Instant::now();
    let drain = tokio::spawn(edge.shutdown());
    carol
        .expect(|f| matches!(f, SK::Goaway(_)).then_some(()))
        .await;
    // The client moves on, as an SDK does.
    carol.conn.close(0, b"moving");
    drain.await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the drain ended when its client left: {took:?}"
    );
    assert!(tasks.is_stopped());
    assert_eq!(tasks.len(), 0, "tasks outlived the drained edge");
    assert!(
        state.upgrade().is_none(),
        "something (the control agent?) still holds the drained edge's state"
    );
}
