//! Channel directories across edges: a member joining through an edge that
//! has just lost the channel's last member is seen at once elsewhere.
mod common;

use std::time::{Duration, Instant};

use common::*;
use protocol::pb::{self, client_frame::Kind as CK, server_frame::Kind as SK};

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
