//! The SDK through real edges: media and messages across two edges, and
//! edges killed and restarted in the middle of a message stream with nothing
//! lost, duplicated or reordered at the receiver.
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use sdk::{Client, Event, TrackKind};

async fn restart(mesh: &mut Mesh, id: u32) {
    let i = mesh.edges.iter().position(|e| e.id() == id).unwrap();
    let old = mesh.edges.remove(i);
    let addr = old.addr();
    old.kill().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = start_edge(&mesh.pki, id, Some(addr), &|_| {}, None).await;
    mesh.edges.push(e);
    mesh.full_mesh_routes();
}

#[tokio::test]
async fn messages_survive_edge_restarts_in_order_without_duplicates() {
    let mut mesh = Mesh::start(2).await;
    let Call {
        sender,
        receiver,
        room,
        rx_room: _rx_room,
    } = Call::start(mesh.sdk_config(&[1, 2]), mesh.sdk_config(&[2, 1])).await;
    let mic = room.publish_track("mic", TrackKind::Audio).await.unwrap();

    // Media reaches the other edge's subscriber.
    let media = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let _ = mic.send(b"frame").await;
            tokio::select! {
                e = receiver.next_event() => if let Some(Event::Media(m)) = e { return m },
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    })
    .await
    .expect("media crosses the mesh");
    assert_eq!((media.user.as_str(), media.track.as_str()), ("sam", "mic"));

    const N: u64 = 300;
    let send = tokio::spawn({
        let room = room.clone();
        async move {
            for i in 1..=N {
                loop {
                    match room.send_message(Bytes::from(format!("m{i}"))).await {
                        Ok(seq) => {
                            assert_eq!(seq, i);
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let collect = tokio::spawn(async move {
        let mut seqs = vec![];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while seqs.len() < N as usize && tokio::time::Instant::now() < deadline {
            if let Ok(Some(Event::Message(m))) =
                tokio::time::timeout(Duration::from_secs(1), receiver.next_event()).await
            {
                assert_eq!(m.from, "sam");
                seqs.push(m.seq);
            }
        }
        (seqs, receiver)
    });
    // Kill the receiver's edge, then the sender's, mid-stream.
    tokio::time::sleep(Duration::from_millis(400)).await;
    restart(&mut mesh, 2).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    restart(&mut mesh, 1).await;
    send.await.unwrap();
    let (seqs, receiver) = collect.await.unwrap();
    assert_eq!(
        seqs,
        (1..=N).collect::<Vec<_>>(),
        "every message once, in order"
    );
    assert!(
        sender
            .stats()
            .reconnects
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    assert!(
        receiver
            .stats()
            .reconnects
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    sender.close().await;
    receiver.close().await;
    mesh.stop().await;
}

#[tokio::test]
async fn sdk_surfaces_typed_token_errors() {
    let mesh = Mesh::start(1).await;
    let c = Client::connect(mesh.sdk_config(&[1])).await.unwrap();
    let err = c
        .join(&token("a", "u", true, true), "b", true)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            sdk::SdkError::Token(sdk::TokenRefusal::WrongChannel, _)
        ),
        "{err:?}"
    );
    let room = c
        .join(&token("a", "u", false, true), "a", true)
        .await
        .unwrap();
    let err = room
        .publish_track("mic", TrackKind::Audio)
        .await
        .err()
        .unwrap();
    assert_eq!(err, sdk::SdkError::NoPublishRight);
    c.close().await;
    mesh.stop().await;
}
