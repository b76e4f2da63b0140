//! The SDK against scripted fake edges: every behaviour of the client
//! contract (join errors, failover with rejoin/republish/replay, liveness,
//! goaway, message ordering and replay to rejoiners, refusals, backpressure,
//! bad frames, clean close) checked frame by frame.
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use edge_node::tls::DevPki;
use protocol::datagram::{MediaHeader, MEDIA_HEADER_LEN};
use protocol::pb::{self, client_frame::Kind as CK, server_frame::Kind as SK, ErrorCode};
use protocol::{ChannelId, TrackKey};
use sdk::{Channel, Client, ClientConfig, Event, SdkError, TokenRefusal, TrackKind};

const CH: u64 = 42;

async fn wait_for(client: &Client, mut pred: impl FnMut(&Event) -> bool) -> Event {
    tokio::time::timeout(STEP, async {
        loop {
            let e = client.next_event().await.expect("client open");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .expect("the expected event arrives")
}

/// Connect to `edge` and join channel "room" as "me" with these members.
async fn join(
    cfg: ClientConfig,
    edge: &mut FakeEdge,
    members: Vec<pb::Member>,
) -> (Client, Channel, FakeConn) {
    let reply = pb::Joined {
        members,
        ..Default::default()
    };
    join_with(cfg, edge, reply).await
}

/// Connect to `edge` and join channel "room" as "me", answered with
/// `reply` (its channel id and user filled in).
async fn join_with(
    cfg: ClientConfig,
    edge: &mut FakeEdge,
    reply: pb::Joined,
) -> (Client, Channel, FakeConn) {
    let client = Client::connect(cfg).await.unwrap();
    let mut conn = edge.accept().await;
    let (room, _) = tokio::join!(client.join("tok-1", "room", true), async {
        let j = conn.expect_join().await;
        assert_eq!(
            (j.token.as_str(), j.channel.as_str(), j.subscribe_all),
            ("tok-1", "room", true)
        );
        assert_ne!(j.request_id, 0);
        let reply = pb::Joined {
            channel_id: CH,
            user_id: "me".into(),
            ..reply
        };
        conn.answer_join(&j, reply).await;
    });
    (client, room.unwrap(), conn)
}

fn media(key: u64, seq: u32) -> Bytes {
    MediaHeader {
        channel: ChannelId(CH),
        track: TrackKey(key),
        sequence: seq,
        timestamp_us: 7,
    }
    .encode(b"payload")
    .unwrap()
}

fn member_joined(user: &str, session: u64) -> SK {
    SK::MemberJoined(pb::MemberJoined {
        channel_id: CH,
        user_id: user.into(),
        session,
        edge_id: 0,
    })
}

fn chat_from(user: &str, seq: u64) -> SK {
    SK::Message(pb::ChatMessage {
        channel_id: CH,
        from_user: user.into(),
        seq,
        payload: format!("{user}-{seq}").into_bytes(),
        sent_at_us: 1,
        to_user: String::new(),
    })
}

/// [`chat_from`] as `user`'s replay to this client ("me"), which opens
/// `user`'s sequence here.
fn replay_from(user: &str, seq: u64) -> SK {
    let SK::Message(mut m) = chat_from(user, seq) else {
        unreachable!()
    };
    m.to_user = "me".into();
    SK::Message(m)
}

#[tokio::test]
async fn refusals_map_to_typed_errors() {
    init_logs();
    let pki = DevPki::new().unwrap();
    let mut a = FakeEdge::start(&pki);
    let client = Client::connect(config(&pki, &[a.addr])).await.unwrap();
    let mut conn = a.accept().await;
    let (res, _) = tokio::join!(client.join("bad", "room", false), async {
        let j = conn.expect_join().await;
        conn.send(SK::Error(pb::Error {
            request_id: j.request_id,
            code: ErrorCode::TokenExpired as i32,
            message: "token expired at 1".into(),
        }))
        .await;
    });
    assert_eq!(
        res.unwrap_err(),
        SdkError::Token(TokenRefusal::Expired, "token expired at 1".into())
    );
    let (room, _) = tokio::join!(client.join("tok", "room", false), async {
        let j = conn.expect_join().await;
        conn.joined(&j, CH, "me", vec![]).await;
    });
    let room = room.unwrap();
    let (res, _) = tokio::join!(room.publish_track("mic", TrackKind::Audio), async {
        let p = conn.expect_publish().await;
        conn.send(SK::Error(pb::Error {
            request_id: p.request_id,
            code: ErrorCode::NoPublishRight as i32,
            message: String::new(),
        }))
        .await;
    });
    assert_eq!(res.unwrap_err(), SdkError::NoPublishRight);
    let (res, _) = tokio::join!(room.subscribe(Some("bob")), async {
        let CK::Subscribe(s) = conn.next().await else {
            panic!("expected Subscribe")
        };
        assert_eq!(s.user_id, "bob");
        conn.send(SK::Error(pb::Error {
            request_id: s.request_id,
            code: ErrorCode::NoSubscribeRight as i32,
            message: String::new(),
        }))
        .await;
    });
    assert_eq!(res.unwrap_err(), SdkError::NoSubscribeRight);
    // Bad arguments never reach the edge.
    assert!(matches!(
        room.publish_track("", TrackKind::Audio).await,
        Err(SdkError::Invalid(_))
    ));
    assert!(matches!(
        room.send_message(Bytes::from(vec![0; 70_000])).await,
        Err(SdkError::Invalid(_))
    ));
    client.close().await;
}

#[tokio::test]
async fn failover_rejoins_republishes_and_replays() {
    init_logs();
    let pki = DevPki::new().unwrap();
    let mut a = FakeEdge::start(&pki);
    let mut b = FakeEdge::start(&pki);
    let (client, room, mut conn) = join(
        config(&pki, &[a.addr, b.addr]),
        &mut a,
        vec![member("bob", 7, &[("cam", 100)])],
    )
    .await;
    assert_eq!(room.user, "me");
    assert_eq!(room.id, CH);
    wait_for(
        &client,
        |e| matches!(e, Event::MemberJoined { user, .. } if user == "bob"),
    )
    .await;
    wait_for(&client, |e| matches!(e, Event::TrackAvailable { user, track, .. } if user == "bob" && track == "cam")).await;

    // Publish: the publisher uses the key the edge assigned.
    let (mic, _) = tokio::join!(room.publish_track("mic", TrackKind::Audio), async {
        let p = conn.expect_publish().await;
        assert_eq!(
            (p.channel_id, p.name.as_str(), p.kind),
            (CH, "mic", TrackKind::Audio as i32)
        );
        conn.published(&p, 500).await;
    });
    let mic = mic.unwrap();
    assert_eq!(mic.track_key(), Some(500));
    mic.send(b"one").await.unwrap();
    mic.send(b"two").await.unwrap();
    let d = conn.datagram().await;
    let h = MediaHeader::decode(&d).unwrap();
    assert_eq!(
        (h.channel, h.track, h.sequence),
        (ChannelId(CH), TrackKey(500), 0)
    );
    assert_eq!(&d[MEDIA_HEADER_LEN..], b"one");
    assert_eq!(
        MediaHeader::decode(&conn.datagram().await)
            .unwrap()
            .sequence,
        1
    );

    // Media in: known keys become events; unknown ones are held for their
    // kind's deadline (the announcement may only be late), then counted.
    conn.conn.send_datagram(media(999, 1)).unwrap();
    conn.conn.send_datagram(media(100, 1)).unwrap();
    let Event::Media(m) = wait_for(&client, |e| matches!(e, Event::Media(_))).await else {
        unreachable!()
    };
    assert_eq!(
        (m.user.as_str(), m.track.as_str(), m.sequence),
        ("bob", "cam", 1)
    );
    assert_eq!(&m.payload[..], b"payload");
    assert_eq!(client.stats().snapshot().media_unknown_track, 0, "held");
    let counted = tokio::time::timeout(Duration::from_secs(2), async {
        while client.stats().snapshot().media_unknown_track == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert!(counted.await.is_ok(), "the unknown track given up");
    assert_eq!(client.stats().snapshot().media_unknown_track, 1);

    // Three messages, only the first acknowledged.
    for i in 1..=3u64 {
        assert_eq!(
            room.send_message(Bytes::from(format!("m{i}")))
                .await
                .unwrap(),
            i
        );
        let m = conn.expect_message().await;
        assert_eq!((m.seq, m.to_user.as_str()), (i, ""));
    }
    conn.send(SK::MessageAck(pb::MessageAck {
        channel_id: CH,
        seq: 1,
    }))
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(room.unacked(), 2);

    // Edge A fails; the client moves to B by itself.
    conn.conn
        .close(quinn::VarInt::from_u32(ErrorCode::Internal as u32), b"boom");
    let Event::Reconnecting { reason } =
        wait_for(&client, |e| matches!(e, Event::Reconnecting { .. })).await
    else {
        unreachable!()
    };
    assert!(
        reason.contains("Internal") && reason.contains("boom"),
        "{reason}"
    );
    let mut conn = b.accept().await;
    let j = conn.expect_join().await;
    assert_eq!(
        (j.token.as_str(), j.channel.as_str(), j.subscribe_all),
        ("tok-1", "room", true)
    );
    // Bob reconnected meanwhile: new session, new key for the same track.
    conn.joined(&j, CH, "me", vec![member("bob", 8, &[("cam", 101)])])
        .await;
    let p = conn.expect_publish().await;
    assert_eq!(p.name, "mic");
    conn.published(&p, 600).await;
    let replay: Vec<(u64, String, String)> = {
        let mut v = vec![];
        for _ in 0..3 {
            let m = conn.expect_message().await;
            v.push((m.seq, String::from_utf8(m.payload).unwrap(), m.to_user));
        }
        v
    };
    assert_eq!(
        replay,
        vec![
            (1, "m1".into(), String::new()),
            (2, "m2".into(), String::new()),
            (3, "m3".into(), String::new())
        ]
    );
    let Event::Reconnected { edge } =
        wait_for(&client, |e| matches!(e, Event::Reconnected { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(edge, b.addr);
    assert_eq!(client.edge(), Some(b.addr));

    // The publisher follows the new key by itself.
    let deadline = Instant::now() + STEP;
    while mic.track_key() != Some(600) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    mic.send(b"three").await.unwrap();
    let h = MediaHeader::decode(&conn.datagram().await).unwrap();
    assert_eq!(h.track, TrackKey(600));
    // Bob's track moved key: media on the new key is still "bob/cam", and no
    // member or track churn was reported.
    conn.conn.send_datagram(media(101, 2)).unwrap();
    let e = wait_for(&client, |e| !matches!(e, Event::Message(_))).await;
    assert!(
        matches!(&e, Event::Media(m) if m.user == "bob" && m.track == "cam"),
        "{e:?}"
    );
    let s = client.stats().snapshot();
    assert_eq!(
        (s.reconnects, s.messages_sent, s.messages_replayed),
        (1, 3, 3)
    );
    // Acks on the new edge release the window.
    conn.send(SK::MessageAck(pb::MessageAck {
        channel_id: CH,
        seq: 3,
    }))
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(room.unacked(), 0);
    assert_eq!(client.stats().snapshot().messages_acked, 3);
    client.close().await;
}

#[tokio::test]
async fn a_silent_edge_is_left_within_the_liveness_timeout() {
    init_logs();
    let pki = DevPki::new().unwrap();
    let mut a = FakeEdge::start(&pki);
    let mut b = FakeEdge::start(&pki);
    let on_edge_1 = pb::Joined {
        edge_id: 1,
        ..Default::default()
    };
    let (client, _room, conn) = join_with(config(&pki, &[a.addr, b.addr]), &mut a, on_edge_1).await;
    // Alive while keepalives are answered.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(b.try_accept().is_none());
    // The edge hangs: its QUIC stack still acks, but the app says nothing.
    let t0 = Instant::now();
    conn.mute();
    let mut conn_b = b.accept().await;
    let elapsed = t0.elapsed();
    // Its transport still answers, so only the app's silence judges:
    // liveness 500 ms from the last thing heard, which may be up to one
    // keepalive period (150 ms) before the mute.
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(1_100),
        "moved after {elapsed:?}"
    );
    let j = conn_b.expect_join().await;
    assert_eq!(j.unreachable_edge, 1, "the rejoin names the silent edge");
    conn_b.joined(&j, CH, "me", vec![]).await;
    wait_for(&client, |e| matches!(e, Event::Reconnected { .. })).await;
    // The client closed the silent link itself, with code 0.
    let closed = tokio::time::timeout(STEP, conn.conn.closed())
        .await
        .unwrap();
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(ref c) if c.error_code.into_inner() == 0),
        "{closed:?}"
    );
    client.close().await;
}

#[tokio::test]
async fn goaway_moves_to_the_redirect_after_the_spread() {
    init_logs();
    let pki = DevPki::new().unwrap();
    let mut a = FakeEdge::start(&pki);
    let mut b = FakeEdge::start(&pki);
    let mut c = FakeEdge::start(&pki);
    let on_edge_1 = pb::Joined {
        edge_id: 1,
        ..Default::default()
    };
    let (client, _room, conn) = join_with(config(&pki, &[a.addr, b.addr]), &mut a, on_edge_1).await;
    let t0 = Instant::now();
    conn.send(SK::Goaway(pb::Goaway {
        reason: pb::GoawayReason::Drain as i32,
        redirect: vec![pb::EdgeAddress {
            edge_id: 3,
            addr: c.addr.to_string(),
            server_name: "localhost".into(),
            cert_sha256: vec![],
        }],
        reconnect_after_ms: 100,
    }))
    .await;
    let mut conn_c = c.accept().await;
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_millis(600),
        "waited {waited:?}"
    );
    // The old link stays up until the channel is restored on the new edge.
    assert!(conn.conn.close_reason().is_none());
    let j = conn_c.expect_join().await;
    assert_eq!(
        j.unreachable_edge, 0,
        "an edge that asked us to go is not unreachable"
    );
    conn_c.joined(&j, CH, "me", vec![]).await;
    wait_for(
        &client,
        |e| matches!(e, Event::Reconnected { edge } if *edge == c.addr),
    )
    .await;
    let closed = tokio::time::timeout(STEP, conn.conn.closed())
        .await
        .unwrap();
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
        "{closed:?}"
    );
    assert!(b.try_accept().is_none(), "the redirect comes first");
    assert_eq!(client.stats().snapshot().goaways, 1);
    client.close().await;
}

#[tokio::test]
async fn received_messages_are_ordered_deduplicated_and_gaps_skipped() {
    init_logs();
    let pki = DevPki::new().unwrap();
    let mut a = FakeEdge::start(&pki);
    let mut cfg = config(&pki, &[a.addr]);
    cfg.reorder_timeout = Duration::from_millis(300);
    let (client, _room, conn) = join(cfg, &mut a, vec![member("bob", 7, &[])]).await;
    // Bob's replay to us opens his sequence at 5.
    conn.send(replay_from("bob", 5)).await;
    for seq in [7, 6, 6, 8, 5] {
        conn.send(chat_from("bob", seq)).await;
    }
    // Carol's live 3 comes before her replay (2..): it waits for it.
    conn.send(chat_from("carol", 3)).await;
    conn.send(replay_from("carol", 2)).await;
    let mut got = vec![];
    while got.len() < 6 {
        if let Event::Message(m) = wait_for(&client, |e| matches!(e, Event::Message(_))).await {
            got.push((m.from, m.seq, m.payload));
        }
    }
    let seqs: Vec<(&str, u64)> = got.iter().map(|(f, s, _)| (f.as_str(), *s)).collect();
    assert_eq!(
        seqs,
        vec![
            ("bob", 5),
            ("bob", 6),
            ("bob", 7),
            ("bob", 8),
            ("carol", 2),
            ("carol", 3)
        ]
    );
    assert_eq!(&got[0].2[..], b"bob-5");
    assert_eq!(client.stats().snapshot().messages_duplicate, 2);
    // A gap that never fills is skipped after the reorder timeout.
    let t0 = Instant::now();
    conn.send(chat_from("bob", 10)).await;
    conn.send(chat_from("bob", 11)).await;
    let e = wait_for(&client, |e| matches!(e, Event::Message(_))).await;
    assert!(matches!(&e, Event::Message(m) if m.seq == 10), "{e:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    let e = wait_for(&client, |e| matches!(e, Event::Message(_))).await;
    assert!(matches!(&e, Event::Message(m) if m.seq == 11), "{e:?}");
    let s = client.stats().snapshot();
    assert_eq!((s.messages_skipped, s.messages_delivered), (1, 8));
    client.close().await;
}

#[tokio::test]
async fn a_new_session_of_another_member_gets_the_window_replayed() {
    init_logs();
    let pki = DevPki::new().unwrap();
    let mut a = FakeEdge::start(&pki);
    let (client, room, mut conn) =
        join(config(&pki, &[a.addr]), &mut a, vec![member("bob", 7, &[])]).await;
    for i in 1..=3u64 {
        room.send_message(Bytes::from(format!("m{i}")))
            .await
            .unwrap();
        assert_eq!(conn.expect_message().await.seq, i);
    }
    conn.send(SK::MessageAck(pb::MessageAck {
        channel_id: CH,
        seq: 3,
    }))
    .await;
    // A known session and our own user: nothing to replay.
    for (user, session) in [("bob", 7), ("me", 99)] {
        conn.send(member_joined(user, session)).await;
    }
    assert!(conn.maybe_next(Duration::from_millis(200)).await.is_none());
    // Bob reconnected through another edge: replay to him alone.
    conn.send(member_joined("bob", 8)).await;
    for i in 1..=3u64 {
        let m = conn.expect_message().await;
        assert_eq!((m.seq, m.to_user.as_str()), (i, "bob"));
    }
    // Bob's old session leaving is not bob leaving.
    conn.send(SK::MemberLeft(pb::MemberLeft {
        channel_id: CH,
        user_id: "bob".into(),
        session: 7,
        ..Default::default()
    }))
    .await;
    conn.send(SK::MemberLeft(pb::MemberLeft {
        channel_id: CH,
        user_id: "bob".into(),
        session: 8,
        ..Default::default()
    }))
    .await;
    assert_eq!(
        member_events(&client).await,
        vec![
            Event::MemberJoined {
                channel: "room".into(),
                user: "bob".into()
            },
            Event::MemberLeft {
                channel: "room".into(),
                user: "bob".into(),
                hidden: false,
            },
        ]
    );
    client.close().await;
}

/// The membership events (members and counts) until none comes for 200 ms.
async fn member_events(client: &Client) -> Vec<Event> {
    let mut events = vec![];
    while let Some(e) = tokio::time::timeout(Duration::from_millis(200), client.next_event())
        .await
        .ok()
        .flatten()
    {
        if matches!(
            e,
            Event::MemberJoined { .. } | Event::MemberLeft { .. } | Event::MemberCount { .. }
        ) {
            events.push(e);
        }
    }
    events
}

#[tokio::test]
async fn a_large_channel_counts_everyone_and_lists_the_publishers() {
    init_logs();
    let pki = DevPki::new().unwrap();
    let mut a = FakeEdge::start(&pki);
    let reply = pb::Joined {
        members: vec![member("bob", 7, &[("cam", 70)])],
        member_count: 150,
        large: true,
        ..Default::default()
    };
    let (client, room, mut conn) = join_with(config(&pki, &[a.addr]), &mut a, reply).await;
    assert_eq!((room.member_count(), room.is_large()), (150, true));
    assert_eq!(room.send_message(Bytes::from_static(b"hi")).await, Ok(1));
    conn.expect_message().await;
    // Bob stops publishing: hidden, not gone. Then the channel is small
    // again and every member is announced: bob's session never left (no
    // replay), carol's is new to us.
    conn.send(SK::TrackUnavailable(pb::TrackUnavailable {
        channel_id: CH,
        user_id: "bob".into(),
        track_key: 70,
    }))
    .await;
    conn.send(SK::MemberLeft(pb::MemberLeft {
        channel_id: CH,
        user_id: "bob".into(),
        session: 7,
        reason: pb::MemberLeftReason::Hidden as i32,
    }))
    .await;
    conn.send(SK::MemberCount(pb::MemberCount {
        channel_id: CH,
        members: 40,
        large: false,
    }))
    .await;
    for (user, session) in [("bob", 7), ("carol", 8)] {
        conn.send(member_joined(user, session)).await;
    }
    let m = conn.expect_message().await;
    assert_eq!((m.seq, m.to_user.as_str()), (1, "carol"));
    assert!(conn.maybe_next(Duration::from_millis(200)).await.is_none());
    let joined = |user: &str| Event::MemberJoined {
        channel: "room".into(),
        user: user.into(),
    };
    let count = |members, large| Event::MemberCount {
        channel: "room".into(),
        members,
        large,
    };
    assert_eq!(
        member_events(&client).await,
        vec![
            joined("bob"),
            count(150, true),
            Event::MemberLeft {
                channel: "room".into(),
                user: "bob".into(),
                hidden: true,
            },
            count(40, false),
            joined("bob"),
            joined("carol"),
        ]
    );
    assert_eq!((room.member_count(), room.is_large()), (40, false));
    client.close().await;
}

#[tokio::test]
async fn refused_messages_are_reported_and_stop_further_sends() {
    init_logs();
    let pki = DevPki::new().unwrap();
    let mut a = FakeEdge::start(&pki);
    let (client, room, mut conn) = join(config(&pki, &[a.addr]), &mut a, vec![]).await;
    assert_eq!(room.send_message(Bytes::from_static(b"x")).await, Ok(1));
    conn.expect_message().await;
    conn.send(SK::Error(pb::Error {
        request_id: 0,
        code: ErrorCode::NoPublishRight as i32,
        message: "token does not grant publish".into(),
    }))
    .await;
    let e = wait_for(&client, |e| matches!(e, Event::MessageRefused { .. })).await;
    assert_eq!(
        e,
        Event::MessageRefused {
            channel: "room".into(),
            seq: 1,
            error: SdkError::NoPublishRight
        }
    );
    assert_eq!(
        room.send_message(Bytes::from_static(b"y")).await,
        Err(SdkError::NoPublishRight)
    );
    assert_eq!(room.unacked(), 0);
    client.close().await;
}

#[tokio::test]
async fn a_refused_seq_goes_to_the_next_message_sealed_afresh() {
    // The edge refuses seq 2 (and 3, sent after it): receivers got
    // neither, so the next message takes 2 rather than leave a gap they
    // would wait on. With end-to-end encryption it is sealed under a new
    // stream salt: the edge saw seq 2 sealed once already.
    init_logs();
    let pki = DevPki::new().unwrap();
    let mut a = FakeEdge::start(&pki);
    let client = Client::connect(config(&pki, &[a.addr])).await.unwrap();
    let mut conn = a.accept().await;
    let key = sdk::ChannelKey::generate(1).unwrap();
    let opts = sdk::JoinOptions {
        subscribe_all: true,
        e2ee: Some(key.into()),
    };
    let (room, _) = tokio::join!(client.join("tok-1", "room", opts), async {
        let j = conn.expect_join().await;
        conn.joined(&j, CH, "me", vec![]).await;
    });
    let room = room.unwrap();
    let salt = |m: &pb::ChatMessage| m.payload[1..sdk::e2ee::SEALED_HEADER_LEN].to_vec();
    let mut sent = vec![];
    for body in ["one", "two", "three"] {
        room.send_message(Bytes::from(body)).await.unwrap();
        sent.push(conn.expect_message().await);
    }
    assert_eq!(sent.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 3]);
    conn.send(SK::MessageAck(pb::MessageAck {
        channel_id: CH,
        seq: 1,
    }))
    .await;
    for (code, seq) in [(ErrorCode::MalformedFrame, 2), (ErrorCode::BadSequence, 3)] {
        conn.send(SK::Error(pb::Error {
            request_id: 0,
            code: code as i32,
            message: "refused".into(),
        }))
        .await;
        let e = wait_for(&client, |e| matches!(e, Event::MessageRefused { .. })).await;
        assert!(
            matches!(e, Event::MessageRefused { seq: s, error: SdkError::Refused { code: c, .. }, .. } if s == seq && c == code),
            "{e:?}"
        );
    }
    assert_eq!(room.unacked(), 0);
    assert_eq!(room.send_message(Bytes::from("two again")).await, Ok(2));
    let again = conn.expect_message().await;
    assert_eq!(again.seq, 2);
    assert_ne!(salt(&again), salt(&sent[1]), "a new stream, a new nonce");
    assert_eq!(room.send_message(Bytes::from("three again")).await, Ok(3));
    assert_eq!(conn.expect_message().await.seq, 3);
    client.close().await;
}

#[tokio::test]
async fn send_message_waits_while_max_unacked_are_outstanding() {
    init_logs();
    let pki = DevPki::new().unwrap();
    let mut a = FakeEdge::start(&pki);
    let mut cfg = config(&pki, &[a.addr]);
    cfg.max_unacked = 2;
    let (client, room, mut conn) = join(cfg, &mut a, vec![]).await;
    room.send_message(Bytes::from_static(b"1")).await.unwrap();
    room.send_message(Bytes::from_static(b"2")).await.unwrap();
    assert_eq!(
        room.try_send_message(Bytes::from_static(b"3")).await,
        Err(SdkError::Backpressure)
    );
    let third = tokio::spawn({
        let room = room.clone();
        async move { room.send_message(Bytes::from_static(b"3")).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!third.is_finished(), "waits for an ack");
    conn.send(SK::MessageAck(pb::MessageAck {
        channel_id: CH,
        seq: 1,
    }))
    .await;
    assert_eq!(
        tokio::time::timeout(STEP, third).await.unwrap().unwrap(),
        Ok(3)
    );
    let seqs: Vec<u64> = [
        conn.expect_message().await,
        conn.expect_message().await,
        conn.expect_message().await,
    ]
    .iter()
    .map(|m| m.seq)
    .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    client.close().await;
}

#[tokio::test]
async fn unknown_frames_are_ignored_and_bad_frames_force_a_reconnect() {
    init_logs();
    let pki = DevPki::new().unwrap();
    let mut a = FakeEdge::start(&pki);
    let mut b = FakeEdge::start(&pki);
    let (client, _room, conn) = join(config(&pki, &[a.addr, b.addr]), &mut a, vec![]).await;
    // A ServerFrame with only a field this SDK does not know (tag 99).
    conn.send_raw(&[3, 0x9a, 0x06, 0x00]).await;
    conn.send(chat_from("bob", 1)).await;
    wait_for(&client, |e| matches!(e, Event::Message(_))).await;
    assert_eq!(client.stats().snapshot().frames_unknown, 1);
    // Garbage: the client closes with MALFORMED_FRAME and reconnects.
    conn.send_raw(&[3, 0xff, 0xff, 0xff]).await;
    let closed = tokio::time::timeout(STEP, conn.conn.closed())
        .await
        .unwrap();
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(ref c)
            if c.error_code.into_inner() == ErrorCode::MalformedFrame as u64),
        "{closed:?}"
    );
    let mut conn_b = b.accept().await;
    let j = conn_b.expect_join().await;
    conn_b.joined(&j, CH, "me", vec![]).await;
    wait_for(&client, |e| matches!(e, Event::Reconnected { .. })).await;
    client.close().await;
}

#[tokio::test]
async fn a_rejoin_refused_for_good_loses_the_channel() {
    init_logs();
    let pki = DevPki::new().unwrap();
    let mut a = FakeEdge::start(&pki);
    let mut b = FakeEdge::start(&pki);
    let (client, room, mut conn) = join(config(&pki, &[a.addr, b.addr]), &mut a, vec![]).await;
    let (mic, _) = tokio::join!(room.publish_track("mic", TrackKind::Audio), async {
        let p = conn.expect_publish().await;
        conn.published(&p, 5).await;
    });
    let mic = mic.unwrap();
    conn.conn.close(0u32.into(), b"restart");
    let mut conn_b = b.accept().await;
    let j = conn_b.expect_join().await;
    conn_b
        .send(SK::Error(pb::Error {
            request_id: j.request_id,
            code: ErrorCode::TokenExpired as i32,
            message: "expired".into(),
        }))
        .await;
    let e = wait_for(&client, |e| matches!(e, Event::ChannelLost { .. })).await;
    assert_eq!(
        e,
        Event::ChannelLost {
            channel: "room".into(),
            error: SdkError::Token(TokenRefusal::Expired, "expired".into())
        }
    );
    assert!(matches!(
        mic.send(b"x").await,
        Err(SdkError::Token(TokenRefusal::Expired, _))
    ));
    assert_eq!(room.send_message(Bytes::new()).await, Err(SdkError::Closed));
    client.close().await;
}

#[tokio::test]
async fn leaving_the_last_channel_disconnects_until_the_next_join() {
    init_logs();
    let pki = DevPki::new().unwrap();
    let mut a = FakeEdge::start(&pki);
    let (client, room, mut conn) = join(config(&pki, &[a.addr]), &mut a, vec![]).await;
    let (left, _) = tokio::join!(room.leave(), async {
        let CK::Leave(l) = conn.next().await else {
            panic!("expected Leave")
        };
        assert_eq!(l.channel_id, CH);
        conn.send(SK::Left(pb::Left {
            request_id: l.request_id,
            channel_id: CH,
        }))
        .await;
    });
    left.unwrap();
    let closed = tokio::time::timeout(STEP, conn.conn.closed())
        .await
        .unwrap();
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(ref c) if c.error_code.into_inner() == 0)
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), client.next_event())
            .await
            .is_err(),
        "no reconnecting: there is nothing to restore"
    );
    // The next join connects again.
    let (room, _) = tokio::join!(client.join("tok-2", "other", false), async {
        let mut conn = a.accept().await;
        let j = conn.expect_join().await;
        assert_eq!(j.channel, "other");
        conn.joined(&j, 43, "me", vec![]).await;
        conn
    });
    assert_eq!(room.unwrap().id, 43);
    client.close().await;
}

#[tokio::test]
async fn close_leaves_and_closes_with_code_zero() {
    init_logs();
    let pki = DevPki::new().unwrap();
    let mut a = FakeEdge::start(&pki);
    let (client, room, mut conn) = join(config(&pki, &[a.addr]), &mut a, vec![]).await;
    client.close().await;
    let CK::Leave(l) = conn.next().await else {
        panic!("expected Leave")
    };
    assert_eq!(l.channel_id, CH);
    let closed = tokio::time::timeout(STEP, conn.conn.closed())
        .await
        .unwrap();
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(ref c) if c.error_code.into_inner() == 0),
        "{closed:?}"
    );
    assert_eq!(room.send_message(Bytes::new()).await, Err(SdkError::Closed));
}

#[tokio::test]
async fn connect_fails_over_to_a_live_candidate_and_reports_dead_ones() {
    init_logs();
    let pki = DevPki::new().unwrap();
    let mut b = FakeEdge::start(&pki);
    // A UDP port nobody answers on.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut cfg = config(&pki, &[dead.local_addr().unwrap(), b.addr]);
    cfg.connect_stagger = Duration::from_millis(100);
    let t0 = Instant::now();
    let client = Client::connect(cfg).await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(600),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(client.edge(), Some(b.addr));
    b.accept().await;
    client.close().await;

    let mut cfg = config(&pki, &[dead.local_addr().unwrap()]);
    cfg.connect_timeout = Duration::from_millis(100);
    cfg.connect_rounds = 2;
    assert!(matches!(
        Client::connect(cfg).await,
        Err(SdkError::Connect(_))
    ));
    // A certificate for another name is refused.
    let mut cfg = config(&pki, &[b.addr]);
    cfg.edges[0].server_name = "elsewhere".into();
    cfg.connect_rounds = 1;
    let err = Client::connect(cfg).await.unwrap_err();
    assert!(
        matches!(&err, SdkError::Connect(m) if m.contains("elsewhere")),
        "{err:?}"
    );
}
