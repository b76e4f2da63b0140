//! End-to-end encryption through real in-process edges: the publisher on
//! edge 1, everyone else on edge 2 (so payloads cross a relay link too).
//!
//! - alice and bob hold the channel key: media and messages arrive readable,
//!   in order, both ways;
//! - carol joined with a valid token but a wrong key (same id), dave with
//!   end-to-end encryption on but no key yet: neither gets a single media
//!   packet or message, each sees one typed `Undecryptable` event per sender
//!   and failure, and the drops are counted;
//! - eve joined without end-to-end encryption: what she receives is exactly
//!   what the edges forward, and it holds none of the plaintext markers;
//! - a key rotation (add the next key everywhere, then switch) loses nothing
//!   between the key holders, and a client left on the old key sees the new
//!   key id reported as unknown.
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use edge_node::tls::DevPki;
use sdk::e2ee::OVERHEAD;
use sdk::{
    Channel, ChannelKey, Client, E2eeError, E2eeKeys, Event, JoinOptions, SdkError, TrackKind,
};

const ROOM: &str = "secret-room";
const MEDIA_MARKER: &str = "PLAINTEXT-MARKER-";
const MSG_MARKER: &str = "MSG-MARKER-";

#[derive(Default)]
struct Seen {
    media: Vec<sdk::Media>,
    messages: Vec<sdk::Message>,
    undecryptable: Vec<(String, E2eeError)>,
}

impl Seen {
    fn drain(&mut self, c: &Client) {
        while let Some(e) = c.try_next_event() {
            match e {
                Event::Media(m) => self.media.push(m),
                Event::Message(m) => self.messages.push(m),
                Event::Undecryptable {
                    channel,
                    user,
                    error,
                } => {
                    assert_eq!(channel, ROOM);
                    self.undecryptable.push((user, error));
                }
                _ => {}
            }
        }
    }

    fn media_from(&self, user: &str) -> usize {
        self.media.iter().filter(|m| m.user == user).count()
    }

    fn messages_from(&self, user: &str) -> Vec<&sdk::Message> {
        self.messages.iter().filter(|m| m.from == user).collect()
    }

    fn reports(&self, user: &str, error: E2eeError) -> usize {
        self.undecryptable
            .iter()
            .filter(|(u, e)| u == user && *e == error)
            .count()
    }
}

async fn join(
    pki: &DevPki,
    edge: std::net::SocketAddr,
    user: &str,
    e2ee: Option<E2eeKeys>,
) -> (Client, Channel) {
    let c = Client::connect(sdk_config(pki, &[edge])).await.unwrap();
    let room = c
        .join(
            &token(ROOM, user, true, true),
            ROOM,
            JoinOptions {
                subscribe_all: true,
                e2ee,
            },
        )
        .await
        .unwrap();
    (c, room)
}

/// Publish media (100 packets/s) and, with `messages`, a message every
/// 50 ms, every payload carrying a plaintext marker, until aborted.
fn talk(room: Channel, messages: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mic = room.publish_track("mic", TrackKind::Audio).await.unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for i in 0u64.. {
            tick.tick().await;
            let _ = mic.send(format!("{MEDIA_MARKER}{i:06}").as_bytes()).await;
            if messages && i % 5 == 0 {
                // The text names the message's seq.
                let seq = i / 5 + 1;
                let sent = room
                    .send_message(Bytes::from(format!("{MSG_MARKER}{seq}")))
                    .await;
                assert_eq!(sent, Ok(seq));
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_holders_talk_end_to_end_and_nobody_else_reads_a_byte() {
    init_logs();
    let Mesh { pki, edges, .. } = Mesh::start(2).await;
    let (e1, e2) = (edges[0].addr(), edges[1].addr());
    let k1 = ChannelKey::generate(1).unwrap();
    let wrong = ChannelKey::generate(1).unwrap();

    let (bob, bob_room) = join(&pki, e2, "bob", Some(k1.clone().into())).await;
    let (carol, _carol_room) = join(&pki, e2, "carol", Some(wrong.into())).await;
    let (dave, dave_room) = join(&pki, e2, "dave", Some(E2eeKeys::pending())).await;
    let (eve, eve_room) = join(&pki, e2, "eve", None).await;
    let (alice, alice_room) = join(&pki, e1, "alice", Some(k1.clone().into())).await;
    assert!(alice_room.is_e2ee() && !eve_room.is_e2ee());
    assert_eq!(alice_room.max_media_payload(), 1_000 - OVERHEAD);

    // Without a key nothing can be sent.
    assert_eq!(
        dave_room.send_message(Bytes::from_static(b"x")).await,
        Err(SdkError::E2ee(E2eeError::NoSendKey))
    );

    let talker = talk(alice_room.clone(), true);
    let mut seen: HashMap<&str, Seen> = HashMap::new();
    let clients = [
        ("alice", &alice),
        ("bob", &bob),
        ("carol", &carol),
        ("dave", &dave),
        ("eve", &eve),
    ];
    let mut bob_said = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (name, c) in clients {
            seen.entry(name).or_default().drain(c);
        }
        // Once bob hears alice, he answers (the members know each other).
        if !bob_said && seen["bob"].media_from("alice") > 0 {
            let said = bob_room
                .send_message(Bytes::from(format!("{MSG_MARKER}from bob")))
                .await;
            assert_eq!(said, Ok(1));
            bob_said = true;
        }
        let stats = |c: &Client| c.stats().snapshot();
        let enough = seen["bob"].media_from("alice") >= 50
            && seen["bob"].messages_from("alice").len() >= 10
            && !seen["alice"].messages_from("bob").is_empty()
            && seen["eve"].media_from("alice") >= 50
            && seen["eve"].messages_from("alice").len() >= 10
            && [&carol, &dave].iter().all(|c| {
                stats(c).media_undecryptable >= 50 && stats(c).messages_undecryptable >= 11
            });
        if enough {
            break;
        }
        assert!(Instant::now() < deadline, "traffic did not flow in time");
    }

    // The key holders read everything, in order.
    let bob_seen = &seen["bob"];
    for m in &bob_seen.media {
        assert_eq!(m.user, "alice");
        assert_eq!(m.track, "mic");
        assert_eq!(
            m.payload,
            Bytes::from(format!("{MEDIA_MARKER}{:06}", m.sequence))
        );
    }
    let msgs = bob_seen.messages_from("alice");
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.seq, i as u64 + 1, "in order, once");
        assert_eq!(m.payload, Bytes::from(format!("{MSG_MARKER}{}", m.seq)));
    }
    assert_eq!(
        seen["alice"].messages_from("bob")[0].payload,
        Bytes::from(format!("{MSG_MARKER}from bob"))
    );
    assert!(bob_seen.undecryptable.is_empty() && seen["alice"].undecryptable.is_empty());
    assert_eq!(bob.stats().snapshot().media_undecryptable, 0);

    // The wrong key and the missing key: nothing delivered, one typed report
    // per sender and failure, every drop counted.
    for (name, err) in [
        ("carol", E2eeError::Rejected { key_id: 1 }),
        ("dave", E2eeError::UnknownKeyId(1)),
    ] {
        let s = &seen[name];
        assert!(s.media.is_empty(), "{name} got media");
        assert!(s.messages.is_empty(), "{name} got messages");
        assert_eq!(s.reports("alice", err), 1, "{name}: {:?}", s.undecryptable);
        assert_eq!(s.reports("bob", err), 1, "{name}: {:?}", s.undecryptable);
        assert_eq!(s.undecryptable.len(), 2, "{name}: {:?}", s.undecryptable);
    }

    // What the edges forward (eve has no key and no e2ee: she gets the bytes
    // as they travelled): ciphertext with the key id in clear, 25 bytes
    // longer, and no plaintext.
    let eve_seen = &seen["eve"];
    for m in &eve_seen.media {
        let p = &m.payload[..];
        assert_eq!(p.len(), MEDIA_MARKER.len() + 6 + OVERHEAD);
        assert_eq!(p[0], 1, "key id in clear");
        assert!(!p
            .windows(MEDIA_MARKER.len())
            .any(|w| w == MEDIA_MARKER.as_bytes()));
    }
    for m in &eve_seen.messages {
        assert_eq!(m.payload[0], 1);
        assert!(!m
            .payload
            .windows(MSG_MARKER.len())
            .any(|w| w == MSG_MARKER.as_bytes()));
    }
    assert!(eve_seen.undecryptable.is_empty());

    // Rotation: everyone with the key installs the next one first, then the
    // sender switches; the old key stays for what is still in flight.
    let k2 = ChannelKey::generate(2).unwrap();
    bob_room.add_key(&k2).unwrap();
    alice_room.set_key(&k2).unwrap();
    assert_eq!(alice_room.keys(), Some((vec![1, 2], Some(2))));
    let (before_media, before_msgs) = (
        seen["bob"].media_from("alice"),
        seen["bob"].messages_from("alice").len(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (name, c) in clients {
            seen.entry(name).or_default().drain(c);
        }
        if seen["bob"].media_from("alice") >= before_media + 30
            && seen["bob"].messages_from("alice").len() >= before_msgs + 5
            && seen["carol"].reports("alice", E2eeError::UnknownKeyId(2)) == 1
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "traffic under the new key did not flow"
        );
    }
    talker.abort();
    let msgs = seen["bob"].messages_from("alice");
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.seq, i as u64 + 1, "nothing lost across the rotation");
        assert_eq!(m.payload, Bytes::from(format!("{MSG_MARKER}{}", m.seq)));
    }
    assert!(seen["bob"].undecryptable.is_empty());
    assert_eq!(bob.stats().snapshot().messages_undecryptable, 0);
    // Dave gets the key late: from then on he reads alice.
    dave_room.set_key(&k2).unwrap();
    let talker = talk(alice_room.clone(), false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen["dave"].media_from("alice") == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen.entry("dave").or_default().drain(&dave);
        assert!(Instant::now() < deadline, "dave never read alice");
    }
    talker.abort();
    let m = &seen["dave"].media[0];
    assert_eq!(
        m.payload,
        Bytes::from(format!("{MEDIA_MARKER}{:06}", m.sequence))
    );

    for c in [alice, bob, carol, dave, eve] {
        c.close().await;
    }
    for e in edges {
        e.kill().await;
    }
}
