//! Writes the seed corpora under `corpus/<target>/`: a few valid inputs per
//! target, each named after what it holds. Run from `protocol/fuzz`:
//!
//! ```sh
//! cargo run --example gen_corpus
//! ```
//!
//! The stream targets take one leading byte that seeds how the stream is
//! chunked; `route_tree` takes the node count first; `token` takes a mode
//! byte (even: token text; 1 mod 4: claims JSON, 3 mod 4: header JSON, which
//! the target signs itself).

use std::fs;
use std::path::Path;

use bytes::BytesMut;
use prost::Message;
use protocol::datagram::{encode_relay, encode_relay_copy, MediaHeader};
use protocol::framing;
use protocol::pb::{
    self, client_frame::Kind as CK, relay_frame::Kind as RK, server_frame::Kind as SK,
};
use protocol::route_tree::RouteTree;
use protocol::token::{mint, Grant};
use protocol::{ChannelId, TrackKey};

const NOW: u64 = 1_800_000_000;
const SECRET: &[u8] = b"fuzz-secret-0123456789";

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir).expect("create corpus dir");
    fs::write(dir.join(name), bytes).expect("write corpus file");
}

/// A stream input: chunking seed, then the frames.
fn stream<M: Message>(seed: u8, frames: &[M]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        framing::encode(f, &mut out).expect("seed frame within limits");
    }
    let mut v = vec![seed];
    v.extend_from_slice(&out);
    v
}

fn cf(kind: CK) -> pb::ClientFrame {
    pb::ClientFrame { kind: Some(kind) }
}

fn sf(kind: SK) -> pb::ServerFrame {
    pb::ServerFrame { kind: Some(kind) }
}

fn rf(kind: RK) -> pb::RelayFrame {
    pb::RelayFrame { kind: Some(kind) }
}

fn main() {
    let ch = ChannelId::derive("demo", "room").0;
    let grant = Grant {
        app_id: "demo",
        channel: "room",
        user_id: "alice",
        publish: true,
        subscribe: true,
        issued_at: NOW,
        expires_at: NOW + 3_600,
    };
    let token = mint(&grant, SECRET);
    let track = pb::TrackInfo {
        name: "mic".into(),
        track_key: TrackKey::new(7, 1).0,
        kind: pb::TrackKind::Audio as i32,
    };
    let chat = pb::ChatMessage {
        channel_id: ch,
        from_user: "alice".into(),
        seq: 1,
        payload: b"hello".to_vec(),
        sent_at_us: NOW * 1_000_000,
        to_user: String::new(),
    };

    // client_frame
    let join = cf(CK::Join(pb::Join {
        request_id: 1,
        token: token.clone(),
        subscribe_all: true,
        channel: "room".into(),
        member_edges: vec![3, 4],
        unreachable_edge: 2,
    }));
    write("client_frame", "join", &stream(0, &[join.clone()]));
    write(
        "client_frame",
        "session",
        &stream(
            7,
            &[
                join,
                cf(CK::PublishTrack(pb::PublishTrack {
                    request_id: 2,
                    channel_id: ch,
                    name: "cam".into(),
                    kind: pb::TrackKind::Video as i32,
                })),
                cf(CK::Subscribe(pb::Subscribe {
                    request_id: 3,
                    channel_id: ch,
                    user_id: "bob".into(),
                })),
                cf(CK::Message(pb::ChatMessage {
                    from_user: String::new(),
                    ..chat.clone()
                })),
                cf(CK::Keepalive(pb::Keepalive { nonce: 42 })),
            ],
        ),
    );
    write(
        "client_frame",
        "teardown",
        &stream(
            200,
            &[
                cf(CK::UnpublishTrack(pb::UnpublishTrack {
                    request_id: 4,
                    channel_id: ch,
                    track_key: TrackKey::new(7, 1).0,
                })),
                cf(CK::Unsubscribe(pb::Unsubscribe {
                    request_id: 5,
                    channel_id: ch,
                    user_id: String::new(),
                })),
                cf(CK::Leave(pb::Leave {
                    request_id: 6,
                    channel_id: ch,
                })),
            ],
        ),
    );
    let mut cut = stream(3, &[cf(CK::Keepalive(pb::Keepalive { nonce: 1 }))]);
    cut.pop();
    write("client_frame", "truncated", &cut);

    // server_frame
    write(
        "server_frame",
        "joined",
        &stream(
            1,
            &[sf(SK::Joined(pb::Joined {
                request_id: 1,
                channel: "room".into(),
                channel_id: ch,
                user_id: "alice".into(),
                members: vec![pb::Member {
                    user_id: "bob".into(),
                    tracks: vec![track.clone()],
                    session: 0x1234_5678_9abc_def0,
                    edge_id: 3,
                }],
                edge_id: 7,
                ..Default::default()
            }))],
        ),
    );
    write(
        "server_frame",
        "events",
        &stream(
            9,
            &[
                sf(SK::TrackPublished(pb::TrackPublished {
                    request_id: 2,
                    channel_id: ch,
                    name: "cam".into(),
                    track_key: TrackKey::new(7, 2).0,
                })),
                sf(SK::MemberJoined(pb::MemberJoined {
                    channel_id: ch,
                    user_id: "carol".into(),
                    session: 99,
                    edge_id: 4,
                })),
                sf(SK::TrackAvailable(pb::TrackAvailable {
                    channel_id: ch,
                    user_id: "carol".into(),
                    track: Some(track.clone()),
                })),
                sf(SK::Message(chat.clone())),
                sf(SK::MessageAck(pb::MessageAck {
                    channel_id: ch,
                    seq: 1,
                })),
                sf(SK::Subscribed(pb::Subscribed {
                    request_id: 3,
                    channel_id: ch,
                    user_id: "bob".into(),
                })),
                sf(SK::KeepaliveAck(pb::KeepaliveAck { nonce: 42 })),
            ],
        ),
    );
    write(
        "server_frame",
        "leaving",
        &stream(
            77,
            &[
                sf(SK::TrackUnavailable(pb::TrackUnavailable {
                    channel_id: ch,
                    user_id: "carol".into(),
                    track_key: TrackKey::new(7, 1).0,
                })),
                sf(SK::MemberLeft(pb::MemberLeft {
                    channel_id: ch,
                    user_id: "carol".into(),
                    session: 99,
                    ..Default::default()
                })),
                sf(SK::Left(pb::Left {
                    request_id: 6,
                    channel_id: ch,
                })),
            ],
        ),
    );
    write(
        "server_frame",
        "error_goaway",
        &stream(
            13,
            &[
                sf(SK::Error(pb::Error {
                    request_id: 1,
                    code: pb::ErrorCode::TokenExpired as i32,
                    message: "token expired".into(),
                })),
                sf(SK::Goaway(pb::Goaway {
                    reason: pb::GoawayReason::Shutdown as i32,
                    redirect: vec![pb::EdgeAddress {
                        edge_id: 8,
                        addr: "127.0.0.1:4433".into(),
                        server_name: "edge-8.rtn".into(),
                        cert_sha256: vec![vec![0xab; 32]],
                    }],
                    reconnect_after_ms: 50,
                })),
            ],
        ),
    );

    // relay_frame and the trees it carries
    let tree = RouteTree::build(1, &[&[1, 2, 3], &[1, 2, 4], &[1, 5]]).remove(0);
    let to_two = tree.children().remove(1);
    let member = pb::DirectoryMember {
        user_id: "alice".into(),
        tracks: vec![track.clone()],
        subscribes: true,
        session: 0x1234_5678_9abc_def0,
    };
    write(
        "relay_frame",
        "hello_message",
        &stream(
            5,
            &[
                rf(RK::Hello(pb::RelayHello {
                    edge_id: 1,
                    region: "eu-west".into(),
                    software_version: "0.1.0".into(),
                    started_at_ms: 1_796_600_000_000,
                })),
                rf(RK::Message(pb::RelayMessage {
                    origin_edge: 1,
                    hop_limit: 8,
                    tree: to_two.to_pb(),
                    message: Some(chat.clone()),
                })),
            ],
        ),
    );
    write(
        "relay_frame",
        "directory",
        &stream(
            11,
            &[
                rf(RK::DirectoryReport(pb::DirectoryReport {
                    reporter_edge: 3,
                    channel_id: ch,
                    members: vec![member.clone()],
                    generation: 1_700_000_000_000_000_001,
                    hop_limit: 8,
                    tree: RouteTree::build(2, &[&[2, 4]]).remove(0).children()[0].to_pb(),
                    ..Default::default()
                })),
                rf(RK::DirectoryUpdate(pb::DirectoryUpdate {
                    home_edge: 4,
                    channel_id: ch,
                    edges: vec![pb::EdgeMembers {
                        edge_id: 3,
                        members: vec![member],
                        ..Default::default()
                    }],
                    version: 2,
                    hop_limit: 8,
                    tree: to_two.to_pb(),
                    greeting: true,
                    ..Default::default()
                })),
            ],
        ),
    );

    // media_datagram
    let header = MediaHeader {
        channel: ChannelId(ch),
        track: TrackKey::new(7, 1),
        sequence: 42,
        timestamp_us: NOW * 1_000_000,
    };
    let media = header.encode(b"hi").expect("small payload");
    write("media_datagram", "small", &media);
    write(
        "media_datagram",
        "empty",
        &header.encode(b"").expect("empty"),
    );
    write(
        "media_datagram",
        "largest",
        &header.encode(&[0xa5; 1_000]).expect("largest payload"),
    );

    // relay_datagram
    for t in tree.children() {
        let name = format!("to_edge_{}", t.root().edge);
        write("relay_datagram", &name, &encode_relay(1, 8, &t, &media));
    }
    write(
        "relay_datagram",
        "whole_tree",
        &encode_relay(1, 8, &tree, &media),
    );
    let chain = RouteTree::build(1, &[&[1, 2, 3, 4, 5, 6]]).remove(0);
    write(
        "relay_datagram",
        "chain",
        &encode_relay(1, 2, &chain, &media),
    );
    write(
        "relay_datagram",
        "copy",
        &encode_relay_copy(1, 8, &tree, &media),
    );

    // route_tree
    for (name, t) in [("fanout", &tree), ("to_two", &to_two), ("chain", &chain)] {
        let mut v = vec![t.len() as u8];
        t.encode_into(&mut v);
        write("route_tree", name, &v);
    }
    let wide: Vec<Vec<u32>> = (2..48).map(|d| vec![1, d]).collect();
    let refs: Vec<&[u32]> = wide.iter().map(|p| p.as_slice()).collect();
    let wide = RouteTree::build(1, &refs).remove(0);
    let mut v = vec![wide.len() as u8];
    wide.encode_into(&mut v);
    write("route_tree", "widest", &v);

    // token
    let mut v = vec![0u8];
    v.extend_from_slice(token.as_bytes());
    write("token", "valid_text", &v);
    let expired = mint(
        &Grant {
            expires_at: NOW - 60,
            ..grant.clone()
        },
        SECRET,
    );
    let mut v = vec![2u8];
    v.extend_from_slice(expired.as_bytes());
    write("token", "expired_text", &v);
    let claims = |user: &str, channel: &str, rights: &str, expires_at: u64| {
        format!(
            r#"{{"iss":"demo","sub":"{user}","channel":"{channel}",{rights}"iat":{NOW},"exp":{expires_at}}}"#
        )
    };
    for (name, c) in [
        (
            "claims_valid",
            claims(
                "alice",
                "room",
                r#""publish":true,"subscribe":true,"#,
                NOW + 60,
            ),
        ),
        (
            "claims_publish_only",
            claims("bob", "room", r#""publish":true,"#, NOW),
        ),
        (
            "claims_other_channel",
            claims("alice", "hall", r#""subscribe":true,"#, NOW + 60),
        ),
        ("claims_expired", claims("alice", "room", "", NOW - 6)),
        (
            "claims_not_yet_valid",
            format!(
                r#"{{"iss":"demo","sub":"carol","channel":"room","nbf":{},"exp":{}}}"#,
                NOW + 6,
                NOW + 60
            ),
        ),
    ] {
        let mut v = vec![1u8];
        v.extend_from_slice(c.as_bytes());
        write("token", name, &v);
    }
    for (name, h) in [
        ("header_standard", r#"{"alg":"HS256","typ":"JWT"}"#),
        ("header_kid", r#"{"typ":"JWT","alg":"HS256","kid":"k1"}"#),
        ("header_none", r#"{"alg":"none","typ":"JWT"}"#),
        ("header_rs256", r#"{"alg":"RS256","typ":"JWT"}"#),
    ] {
        let mut v = vec![3u8];
        v.extend_from_slice(h.as_bytes());
        write("token", name, &v);
    }
    println!("seed corpora written under corpus/");
}
