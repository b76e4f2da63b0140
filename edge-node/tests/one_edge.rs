//! One edge, several clients: join, publish, subscribe, messages, leave.
mod common;

use common::*;
use protocol::pb::{self, server_frame::Kind as SK};

#[tokio::test]
async fn clients_join_publish_subscribe_and_leave() {
    let mesh = Mesh::start(1).await;
    let addr = mesh.edges[0].addr();
    let ca = mesh.ca_der();
    let mut alice = RawClient::connect(addr, &ca).await;
    let mut bob = RawClient::connect(addr, &ca).await;
    let mut carol = RawClient::connect(addr, &ca).await;

    let ja = alice.join("room", "alice").await;
    let jb = bob.join("room", "bob").await;
    assert_eq!(ja.channel_id, jb.channel_id);
    assert_eq!(jb.members.len(), 1, "bob sees alice");
    assert_eq!(jb.members[0].user_id, "alice");
    let joined = alice
        .expect(|f| match f {
            SK::MemberJoined(m) => Some(m.user_id),
            _ => None,
        })
        .await;
    assert_eq!(joined, "bob");

    // Carol joins late with subscribe-only rights and without subscribe_all.
    let jc = carol
        .join_with(token("room", "carol", false, true), "room", false)
        .await
        .unwrap();
    let cid = ja.channel_id;

    let track = alice.publish(cid, "mic").await.unwrap();
    let avail = bob
        .expect(|f| match f {
            SK::TrackAvailable(t) => Some(t),
            _ => None,
        })
        .await;
    assert_eq!(
        (avail.user_id.as_str(), avail.track.unwrap().track_key),
        ("alice", track)
    );

    // Carol subscribes to alice explicitly.
    carol
        .send(pb::client_frame::Kind::Subscribe(pb::Subscribe {
            request_id: 9,
            channel_id: jc.channel_id,
            user_id: "alice".into(),
        }))
        .await;
    carol
        .expect(|f| matches!(f, SK::Subscribed(_)).then_some(()))
        .await;

    for seq in 0..20u32 {
        alice.media(cid, track, seq, b"opus frame");
    }
    for who in [&bob, &carol] {
        let d = who.recv_media().await.expect("media reaches subscriber");
        let h = protocol::datagram::MediaHeader::decode(&d).unwrap();
        assert_eq!(h.track.0, track);
        assert_eq!(&d[protocol::datagram::MEDIA_HEADER_LEN..], b"opus frame");
    }

    // Messages: acked to the sender, delivered in order to the others.
    for seq in 1..=5 {
        alice
            .message(cid, seq, format!("hello {seq}").as_bytes())
            .await;
    }
    let mut acked = 0;
    while acked < 5 {
        acked = alice
            .expect(|f| match f {
                SK::MessageAck(a) => Some(a.seq),
                _ => None,
            })
            .await;
    }
    for who in [&mut bob, &mut carol] {
        for seq in 1..=5u64 {
            let m = who
                .expect(|f| match f {
                    SK::Message(m) => Some(m),
                    _ => None,
                })
                .await;
            assert_eq!((m.seq, m.from_user.as_str()), (seq, "alice"));
        }
    }

    // Carol may not publish: typed refusal.
    let err = carol.publish(cid, "cam").await.unwrap_err();
    assert_eq!(err.code, pb::ErrorCode::NoPublishRight as i32);

    // Alice leaves: the others are told, and her track goes away.
    alice
        .send(pb::client_frame::Kind::Leave(pb::Leave {
            request_id: 77,
            channel_id: cid,
        }))
        .await;
    alice
        .expect(|f| matches!(f, SK::Left(_)).then_some(()))
        .await;
    let left = bob
        .expect(|f| match f {
            SK::MemberLeft(m) => Some(m.user_id),
            _ => None,
        })
        .await;
    assert_eq!(left, "alice");
    mesh.stop().await;
}
