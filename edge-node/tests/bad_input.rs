//! Bad input gets a clear error or a closed connection with a reason code,
//! is counted, and affects no other client.
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use protocol::pb::{self, client_frame::Kind as CK, server_frame::Kind as SK, ErrorCode};
use protocol::token::{mint, Grant};

#[tokio::test]
async fn bad_tokens_get_distinct_codes() {
    let mesh = Mesh::start(1).await;
    let mut c = RawClient::connect(mesh.edges[0].addr(), &mesh.ca_der()).await;
    let grant = |secret: &str, app: &'static str, exp: u64| {
        mint(
            &Grant {
                app_id: app,
                channel: "room",
                user_id: "u",
                publish: true,
                subscribe: true,
                issued_at: now(),
                expires_at: exp,
            },
            secret.as_bytes(),
        )
    };
    let cases = [
        (
            grant(SECRET, APP, now() - 60),
            "room",
            ErrorCode::TokenExpired,
        ),
        (
            grant("wrong-secret-0123456789", APP, now() + 60),
            "room",
            ErrorCode::TokenBadSignature,
        ),
        (
            grant(SECRET, "other-app", now() + 60),
            "room",
            ErrorCode::TokenUnknownApp,
        ),
        (
            grant(SECRET, APP, now() + 60),
            "another-room",
            ErrorCode::TokenWrongChannel,
        ),
        ("not a token".to_string(), "room", ErrorCode::TokenMalformed),
    ];
    for (tok, channel, code) in cases {
        let e = c.join_with(tok, channel, true).await.unwrap_err();
        assert_eq!(e.code, code as i32, "{}", e.message);
    }
    // Subscribe-all without the subscribe right.
    let e = c
        .join_with(token("room", "u", true, false), "room", true)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NoSubscribeRight as i32);
    // The connection is still usable after refusals.
    c.join("room", "u").await;
    assert!(metric("rtn_edge_joins_total", &[("result", "token_expired")]) >= 1.0);
    mesh.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_frames_close_with_a_code() {
    let mesh = Mesh::start(1).await;
    let addr = mesh.edges[0].addr();
    let ca = mesh.ca_der();
    let mut bystander = RawClient::connect(addr, &ca).await;
    let jb = bystander.join("room", "bystander").await;

    let mut garbage = RawClient::connect(addr, &ca).await;
    garbage.send_raw(&[5, 0xff, 0xff, 0xff, 0xff, 0xff]).await;
    assert_eq!(
        garbage.closed_code().await,
        Some(ErrorCode::MalformedFrame as u64)
    );

    let mut huge = RawClient::connect(addr, &ca).await;
    huge.send_raw(&[0xff, 0xff, 0xff, 0x0f]).await;
    assert_eq!(
        huge.closed_code().await,
        Some(ErrorCode::FrameTooLarge as u64)
    );

    // An unknown frame kind (a field this version does not know) is answered
    // with an error, and the connection stays.
    let mut unknown = RawClient::connect(addr, &ca).await;
    unknown.send_raw(&[3, 0xf8, 0x01, 0x01]).await; // field 31, varint 1
    let e = unknown
        .expect(|f| match f {
            SK::Error(e) => Some(e),
            _ => None,
        })
        .await;
    assert_eq!(e.code, ErrorCode::UnknownMessage as i32);

    // Malformed datagrams are dropped and counted; the bystander still works.
    let before = metric(
        "rtn_edge_media_dropped_total",
        &[("reason", "malformed_datagram")],
    );
    let ju = unknown.join("room", "noisy").await;
    for _ in 0..50 {
        let _ = unknown
            .conn
            .send_datagram(bytes::Bytes::from_static(&[0x01, 2, 3]));
        let _ = unknown
            .conn
            .send_datagram(bytes::Bytes::from_static(&[0x42; 40]));
    }
    // A datagram for a track this client does not own.
    unknown.media(ju.channel_id, 12345, 1, b"spoof");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        metric(
            "rtn_edge_media_dropped_total",
            &[("reason", "malformed_datagram")]
        ) >= before + 100.0
    );
    assert!(
        metric(
            "rtn_edge_media_dropped_total",
            &[("reason", "unknown_track")]
        ) >= 1.0
    );
    let track = bystander.publish(jb.channel_id, "mic").await.unwrap();
    bystander.media(jb.channel_id, track, 1, b"ok");
    assert!(
        unknown.recv_media().await.is_some(),
        "other clients unaffected"
    );
    mesh.stop().await;
}

#[tokio::test]
async fn a_client_that_never_joins_is_closed() {
    let mesh = Mesh::start_with(1, |c| c.limits.join_timeout_ms = 300).await;
    let c = RawClient::connect(mesh.edges[0].addr(), &mesh.ca_der()).await;
    assert_eq!(c.closed_code().await, Some(ErrorCode::JoinTimeout as u64));
    // Nor does a connection that opens no stream at all linger.
    let ep = client_endpoint().unwrap();
    let conn = ep
        .connect_with(
            client_config(&mesh.ca_der(), protocol::alpn::CLIENT_V1),
            mesh.edges[0].addr(),
            "localhost",
        )
        .unwrap()
        .await
        .unwrap();
    let reason = tokio::time::timeout(STEP, conn.closed()).await.unwrap();
    assert!(
        matches!(reason, quinn::ConnectionError::ApplicationClosed(c) if c.error_code.into_inner() == ErrorCode::JoinTimeout as u64)
    );
    mesh.stop().await;
}

#[tokio::test]
async fn extra_streams_are_refused() {
    let mesh = Mesh::start(1).await;
    let mut c = RawClient::connect(mesh.edges[0].addr(), &mesh.ca_der()).await;
    c.join("room", "u").await;
    let (mut s, mut r) = c.conn.open_bi().await.unwrap();
    let _ = s.write_all(b"x").await;
    let read = tokio::time::timeout(STEP, r.read_to_end(10)).await.unwrap();
    assert!(read.is_err(), "the extra stream is reset");
    // Flow control caps how many a client can hold open at once (the
    // edge's limit of 3 concurrent bidirectional streams, the control
    // stream and the reset one included).
    let mut held = vec![];
    for _ in 0..1000 {
        match tokio::time::timeout(Duration::from_millis(50), c.conn.open_bi()).await {
            Ok(Ok(pair)) => held.push(pair),
            _ => break,
        }
    }
    assert!(
        held.len() <= 1,
        "stream limit enforced: {} more opened",
        held.len()
    );
    // The control stream still works.
    c.send(CK::Keepalive(pb::Keepalive { nonce: 5 })).await;
    let n = c
        .expect(|f| match f {
            SK::KeepaliveAck(k) => Some(k.nonce),
            _ => None,
        })
        .await;
    assert_eq!(n, 5);
    mesh.stop().await;
}

#[tokio::test]
async fn wrong_alpn_and_relay_without_certificate_are_refused() {
    let mesh = Mesh::start(1).await;
    let addr = mesh.edges[0].addr();
    let ep = client_endpoint().unwrap();
    // Unknown protocol version: the handshake itself fails.
    let r = ep
        .connect_with(
            client_config(&mesh.ca_der(), b"rtn-client/9"),
            addr,
            "localhost",
        )
        .unwrap()
        .await;
    assert!(r.is_err(), "unknown ALPN version refused");
    // The relay ALPN without a mesh certificate: closed with a reason code.
    let conn = ep
        .connect_with(
            client_config(&mesh.ca_der(), protocol::alpn::RELAY_V1),
            addr,
            "localhost",
        )
        .unwrap()
        .await
        .unwrap();
    let reason = tokio::time::timeout(STEP, conn.closed()).await.unwrap();
    assert!(
        matches!(&reason, quinn::ConnectionError::ApplicationClosed(c) if c.error_code.into_inner() == ErrorCode::UnauthenticatedPeer as u64),
        "{reason:?}"
    );
    assert!(
        metric(
            "rtn_edge_protocol_errors_total",
            &[("reason", "relay_without_certificate")]
        ) >= 1.0
    );
    mesh.stop().await;
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let mesh = Mesh::start(1).await;
    let mut c = RawClient::connect(mesh.edges[0].addr(), &mesh.ca_der()).await;
    let j = c.join("room", "u").await;
    c.send(CK::Message(pb::ChatMessage {
        channel_id: j.channel_id,
        seq: 1,
        payload: vec![0; protocol::limits::MAX_MESSAGE_PAYLOAD + 1],
        ..Default::default()
    }))
    .await;
    let e = c
        .expect(|f| match f {
            SK::Error(e) => Some(e),
            _ => None,
        })
        .await;
    assert_eq!(e.code, ErrorCode::MalformedFrame as i32);
    mesh.stop().await;
}

/// A keepalive answered: the connection is still open.
async fn still_open(c: &mut RawClient, nonce: u64) {
    c.send(CK::Keepalive(pb::Keepalive { nonce })).await;
    let n = c
        .expect(|f| match f {
            SK::KeepaliveAck(k) => Some(k.nonce),
            _ => None,
        })
        .await;
    assert_eq!(n, nonce);
}

async fn leave(c: &mut RawClient, channel_id: u64) {
    c.send(CK::Leave(pb::Leave {
        request_id: 5,
        channel_id,
    }))
    .await;
    c.expect(|f| matches!(f, SK::Left(_)).then_some(())).await;
}

#[tokio::test]
async fn a_connection_left_without_a_channel_must_join_another_in_time() {
    let timeout = Duration::from_millis(400);
    let mesh = Mesh::start_with(1, |c| c.limits.join_timeout_ms = 400).await;
    let mut c = RawClient::connect(mesh.edges[0].addr(), &mesh.ca_der()).await;
    let j = c.join("room", "u").await;
    // Holding a channel, a connection stays past the timeout.
    tokio::time::sleep(timeout + timeout / 2).await;
    still_open(&mut c, 1).await;
    // Left its last channel: the timeout runs again, and a join within it
    // keeps the connection.
    leave(&mut c, j.channel_id).await;
    tokio::time::sleep(timeout / 2).await;
    let k = c.join("other", "u").await;
    tokio::time::sleep(timeout + timeout / 2).await;
    still_open(&mut c, 2).await;
    leave(&mut c, k.channel_id).await;
    let left = Instant::now();
    assert_eq!(c.closed_code().await, Some(ErrorCode::JoinTimeout as u64));
    let after = left.elapsed();
    assert!(
        // Not at once (the first deadline passed long ago), nor much later.
        after >= timeout / 2 && after < timeout * 5,
        "closed {after:?} after leaving its last channel"
    );
    mesh.stop().await;
}

/// Log lines written to memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines_with(&self, text: &str) -> usize {
        let logs = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        logs.lines().filter(|l| l.contains(text)).count()
    }
}

#[tokio::test]
async fn a_connection_sending_bad_joins_is_closed_after_its_budget_and_logged_once() {
    // The edge runs on this test's thread (a current-thread runtime), so a
    // thread-local subscriber sees everything it logs.
    let logs = Captured::default();
    let writer = logs.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let mesh = Mesh::start(1).await;
    let addr = mesh.edges[0].addr();
    let ca = mesh.ca_der();
    let mut bystander = RawClient::connect(addr, &ca).await;
    let room = bystander.join("room", "bystander").await.channel_id;

    let forged = forged_token("room", "mallory");
    let before = metric("rtn_edge_joins_total", &[("result", "token_bad_signature")]);
    let mut attacker = RawClient::connect(addr, &ca).await;
    let mut pipelined = bytes::BytesMut::new();
    for i in 0..2_000 {
        protocol::framing::encode(
            &pb::ClientFrame {
                kind: Some(CK::Join(pb::Join {
                    request_id: i + 1,
                    token: forged.clone(),
                    subscribe_all: false,
                    channel: "room".into(),
                    member_edges: vec![],
                    unreachable_edge: 0,
                })),
            },
            &mut pipelined,
        )
        .unwrap();
    }
    attacker.send_raw(&pipelined).await;
    assert_eq!(
        attacker.closed_code().await,
        Some(ErrorCode::RateLimited as u64)
    );
    let refused = metric("rtn_edge_joins_total", &[("result", "token_bad_signature")]) - before;
    let budget = f64::from(edge_node::session::MAX_REFUSED_JOINS);
    // Other tests of this binary may refuse a forged join meanwhile.
    assert!(
        refused >= budget + 1.0 && refused < budget + 10.0,
        "{refused} refused before the close"
    );
    assert!(
        metric(
            "rtn_edge_protocol_errors_total",
            &[("reason", "too_many_refused_joins")]
        ) >= 1.0
    );
    assert_eq!(
        logs.lines_with("join refused"),
        1,
        "the first refusal, then one line per 10 s"
    );
    assert_eq!(logs.lines_with("too many refused joins"), 1);

    // A well-behaved client on another connection is unaffected: it still
    // exchanges messages, and a new connection joins.
    let mut newcomer = RawClient::connect(addr, &ca).await;
    newcomer.join("room", "newcomer").await;
    still_open(&mut bystander, 3).await;
    bystander.message(room, 1, b"still here").await;
    let got = newcomer
        .expect(|f| match f {
            SK::Message(m) => Some(m.payload),
            _ => None,
        })
        .await;
    assert_eq!(got, b"still here");
    mesh.stop().await;
}

#[tokio::test]
async fn a_refused_message_leaves_no_gap_for_receivers() {
    let mesh = Mesh::start(1).await;
    let addr = mesh.edges[0].addr();
    // An SDK receiver that would hold a gap for 10 s.
    let mut cfg = sdk::ClientConfig::new(vec![sdk::EdgeCandidate::new(addr, "localhost")])
        .trusting(sdk::EdgeTrust::Ca(mesh.pki.ca_pem().into_bytes()));
    cfg.reorder_timeout = Duration::from_secs(10);
    let receiver = sdk::Client::connect(cfg).await.unwrap();
    receiver
        .join(&token("room", "rita", false, true), "room", true)
        .await
        .unwrap();
    let mut sender = RawClient::connect(addr, &mesh.ca_der()).await;
    let room = sender.join("room", "sam").await.channel_id;

    let too_large = vec![0; protocol::limits::MAX_MESSAGE_PAYLOAD + 1];
    let started = Instant::now();
    sender.message(room, 1, b"one").await;
    sender.message(room, 2, &too_large).await;
    // Pipelined before the refusal came back: accepted, it would leave 2
    // missing for every receiver.
    sender.message(room, 3, b"three, sent too early").await;
    let mut replies = vec![];
    for _ in 0..3 {
        replies.push(
            sender
                .expect(|f| match f {
                    SK::MessageAck(a) => Some(Ok(a.seq)),
                    SK::Error(e) => Some(Err(e.code)),
                    _ => None,
                })
                .await,
        );
    }
    assert_eq!(
        replies,
        [
            Ok(1),
            Err(ErrorCode::MalformedFrame as i32),
            Err(ErrorCode::BadSequence as i32)
        ]
    );
    // The sender gives the refused seq to its next message.
    sender.message(room, 2, b"two").await;
    sender.message(room, 3, b"three").await;
    let mut got = vec![];
    while got.len() < 3 {
        let e = tokio::time::timeout(STEP, receiver.next_event())
            .await
            .expect("messages arrive")
            .unwrap();
        if let sdk::Event::Message(m) = e {
            got.push((m.seq, String::from_utf8(m.payload.to_vec()).unwrap()));
        }
    }
    assert_eq!(
        got,
        [(1, "one".into()), (2, "two".into()), (3, "three".into())]
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no reorder wait: {:?}",
        started.elapsed()
    );
    let stats = receiver.stats().snapshot();
    assert_eq!((stats.messages_skipped, stats.messages_duplicate), (0, 0));
    receiver.close().await;
    mesh.stop().await;
}

#[tokio::test]
async fn a_track_cannot_be_unpublished_through_another_channel() {
    let mesh = Mesh::start(1).await;
    let mut c = RawClient::connect(mesh.edges[0].addr(), &mesh.ca_der()).await;
    let mut watcher = RawClient::connect(mesh.edges[0].addr(), &mesh.ca_der()).await;
    let a = c.join("a", "u").await;
    let b = c.join("b", "u").await;
    watcher.join("a", "w").await;
    let track = c.publish(a.channel_id, "mic").await.unwrap();
    watcher
        .expect(|f| matches!(f, SK::TrackAvailable(_)).then_some(()))
        .await;
    c.send(CK::UnpublishTrack(pb::UnpublishTrack {
        request_id: 8,
        channel_id: b.channel_id,
        track_key: track,
    }))
    .await;
    let e = c
        .expect(|f| match f {
            SK::Error(e) if e.request_id == 8 => Some(e),
            _ => None,
        })
        .await;
    assert_eq!(e.code, ErrorCode::UnknownTrack as i32);
    // The track still flows in channel a.
    c.media(a.channel_id, track, 1, b"still here");
    assert!(watcher.recv_media().await.is_some());
    mesh.stop().await;
}
