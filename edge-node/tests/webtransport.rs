//! WebTransport at the edge (docs/protocol.md §13): a browser-like client
//! (HTTP/3, a self-signed certificate pinned by its digest) shares a channel
//! with a native SDK client on another edge, byte for byte the same frames
//! and datagrams; a wrong path, a digest that does not match and a second
//! control stream are refused as documented. The real browser is tested by
//! `sdk-js/tests/browser/run.sh`.

use std::time::Duration;

use protocol::alpn::WEBTRANSPORT_PATH;
use protocol::pb::{self, server_frame::Kind as SK, ErrorCode};
use protocol::CertHash;
use sdk::{Client, EdgeTrust, Event, JoinOptions, TrackKind};
use testkit::mesh::Mesh;
use testkit::quic::{client_endpoint, RawClient, STEP};
use testkit::tokens::token;

/// Edges with self-signed client certificates rotated hourly (as in the
/// lab), so clients pin the digests each edge publishes.
async fn self_signed_mesh(n: u32) -> Mesh {
    Mesh::start_with(n, |c| c.client_tls.self_signed_rotate_s = 3600).await
}

fn hashes(mesh: &Mesh, id: u32) -> Vec<CertHash> {
    mesh.peer(mesh.edge(id)).cert_sha256
}

async fn webtransport(mesh: &Mesh, id: u32) -> RawClient {
    let endpoint = client_endpoint().unwrap();
    RawClient::open_webtransport(
        &endpoint,
        mesh.edge(id).addr(),
        WEBTRANSPORT_PATH,
        &hashes(mesh, id),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webtransport_session_and_a_native_client_share_a_channel_across_edges() {
    let mesh = self_signed_mesh(2).await;
    let published = hashes(&mesh, 1);
    assert_eq!(published.len(), 2, "current and next digests are published");

    // The browser-like client on edge 1.
    let mut web = webtransport(&mesh, 1).await;
    let joined = web.join("room", "web").await;
    let channel = joined.channel_id;
    let web_track = web.publish(channel, "mic").await.unwrap();

    // A native SDK client on edge 2, pinning edge 2's published digests.
    let mut cfg =
        sdk::ClientConfig::new(vec![mesh.peer(mesh.edge(2))]).trusting(EdgeTrust::PinnedHashes);
    cfg.backoff.initial = Duration::from_millis(20);
    let native = Client::connect(cfg).await.unwrap();
    let room = native
        .join(
            &token("room", "native", true, true),
            "room",
            JoinOptions {
                subscribe_all: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mic = room.publish_track("mic", TrackKind::Audio).await.unwrap();
    // The web client learns of the native member and its track.
    let native_track = web
        .expect(|f| match f {
            SK::TrackAvailable(t) if t.user_id == "native" => t.track.map(|t| t.track_key),
            _ => None,
        })
        .await;
    web.send(pb::client_frame::Kind::Subscribe(pb::Subscribe {
        request_id: 99,
        channel_id: channel,
        user_id: String::new(),
    }))
    .await;
    web.expect(|f| matches!(f, SK::Subscribed(_)).then_some(()))
        .await;

    // Messages both ways, in order.
    for i in 1..=5u64 {
        web.message(channel, i, format!("web-{i}").as_bytes()).await;
        room.send_message(bytes::Bytes::from(format!("native-{i}")))
            .await
            .unwrap();
    }
    let mut from_web = vec![];
    let mut web_media = 0;
    let deadline = tokio::time::Instant::now() + STEP;
    let mut seq = 0u32;
    while from_web.len() < 5 || web_media == 0 {
        seq += 1;
        web.media(channel, web_track, seq, b"web audio");
        match tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_millis(20)),
            native.next_event(),
        )
        .await
        {
            Ok(Some(Event::Message(m))) => {
                from_web.push(String::from_utf8_lossy(&m.payload).into_owned())
            }
            Ok(Some(Event::Media(m))) if m.user == "web" => {
                assert_eq!(&m.payload[..], b"web audio");
                web_media += 1;
            }
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "native client got {from_web:?}, {web_media} media"
        );
    }
    assert_eq!(
        from_web,
        (1..=5).map(|i| format!("web-{i}")).collect::<Vec<_>>()
    );

    let mut from_native = vec![];
    while from_native.len() < 5 {
        let m = web
            .expect(|f| match f {
                SK::Message(m) if m.from_user == "native" => Some(m),
                _ => None,
            })
            .await;
        from_native.push(String::from_utf8_lossy(&m.payload).into_owned());
    }
    assert_eq!(
        from_native,
        (1..=5).map(|i| format!("native-{i}")).collect::<Vec<_>>()
    );

    // Native media reaches the web client as the same 29-byte datagram.
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        mic.send(b"native audio").await.unwrap();
        if let Ok(Ok(d)) =
            tokio::time::timeout(Duration::from_millis(20), web.conn.read_datagram()).await
        {
            let h = protocol::datagram::MediaHeader::decode(&d).unwrap();
            assert_eq!(h.track.0, native_track);
            assert_eq!(&d[protocol::datagram::MEDIA_HEADER_LEN..], b"native audio");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no media reached the web client"
        );
    }
    native.close().await;
    mesh.stop().await;
}

#[tokio::test]
async fn wrong_path_digest_and_extra_stream_are_refused() {
    let mesh = self_signed_mesh(1).await;
    let addr = mesh.edge(1).addr();
    let endpoint = client_endpoint().unwrap();

    // Another path: the CONNECT gets 404.
    let refused = RawClient::open_webtransport(&endpoint, addr, "/other", &hashes(&mesh, 1)).await;
    let err = refused
        .err()
        .expect("a request for another path is refused");
    assert!(format!("{err:#}").contains("404"), "{err:#}");

    // A digest that is not the edge's: the handshake fails.
    let bogus = [CertHash([7; 32])];
    assert!(
        RawClient::open_webtransport(&endpoint, addr, WEBTRANSPORT_PATH, &bogus)
            .await
            .is_err()
    );

    let mut web = webtransport(&mesh, 1).await;
    web.join("room", "web").await;
    // A second bidirectional stream is reset with TOO_MANY_STREAMS.
    let (mut s, mut r) = web.conn.open_bi().await.unwrap();
    s.write_all(b"\x04\x42\x02\x08\x01").await.unwrap();
    let mut buf = [0u8; 8];
    let reset = tokio::time::timeout(STEP, r.read(&mut buf)).await.unwrap();
    assert!(
        matches!(reset, Err(web_transport_quinn::ReadError::Reset(code)) if code == ErrorCode::TooManyStreams as u32),
        "{reset:?}"
    );
    // The session itself is unaffected.
    web.send(pb::client_frame::Kind::Keepalive(pb::Keepalive {
        nonce: 7,
    }))
    .await;
    web.expect(|f| matches!(f, SK::KeepaliveAck(a) if a.nonce == 7).then_some(()))
        .await;

    // The edge closes a session with its error codes, as a browser reads
    // them (`WebTransportCloseInfo.closeCode`): a frame length over the
    // limit, decided from the prefix alone.
    let mut bad =
        RawClient::open_webtransport(&endpoint, addr, WEBTRANSPORT_PATH, &hashes(&mesh, 1))
            .await
            .unwrap();
    bad.send_raw(&[0xff, 0xff, 0xff, 0x01]).await;
    assert_eq!(
        bad.closed_code().await,
        Some(ErrorCode::FrameTooLarge as u64)
    );
    mesh.stop().await;
}

#[tokio::test]
async fn a_rotated_certificate_is_served_and_published() {
    let mesh = self_signed_mesh(1).await;
    let edge = mesh.edge(1);
    let before = hashes(&mesh, 1);
    let now_used = edge.core.client_certs.rotate().unwrap();
    assert_eq!(now_used, before[1], "the published next comes in use");
    let after = hashes(&mesh, 1);
    let endpoint = client_endpoint().unwrap();
    // A client holding only the old current digest no longer connects.
    assert!(
        RawClient::open_webtransport(&endpoint, edge.addr(), WEBTRANSPORT_PATH, &before[..1])
            .await
            .is_err()
    );
    // One holding the list from before the rotation still does (its second
    // digest is the one now in use), and so does one with the new list.
    for list in [&before, &after] {
        let mut web = RawClient::open_webtransport(&endpoint, edge.addr(), WEBTRANSPORT_PATH, list)
            .await
            .unwrap();
        web.join("room", "web").await;
    }
    mesh.stop().await;
}
