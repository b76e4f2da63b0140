//! The SDK through real in-process edges (`edge_node::Edge`): failover from
//! an edge that vanishes without a word (as under SIGKILL), measuring how
//! long media stops, and from edges that drain with a goaway, where no
//! media may go missing; messages arrive in order, once, across the move.
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use sdk::{Channel, Client, Event, TrackKind, TrackPublisher};

/// Publish audio at 50 packets/s and a message every 10 ms until `n` sent.
fn talk(mic: TrackPublisher, room: Channel, n: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut sent = 0;
        let mut i = 0u64;
        loop {
            tick.tick().await;
            i += 1;
            if i.is_multiple_of(2) {
                let _ = mic.send(&[0u8; 160]).await;
            }
            if sent < n {
                sent += 1;
                assert_eq!(
                    room.send_message(Bytes::from(format!("m{sent}"))).await,
                    Ok(sent)
                );
            }
        }
    })
}

/// Read the receiver's events: the media gap around the failure (from
/// `failed_at` to the first media packet received after the client noticed),
/// and every message seq from `from`.
async fn observe(
    rx: &Client,
    from: &str,
    n: u64,
    failed_at: impl std::future::Future<Output = Instant>,
) -> (Duration, Vec<u64>) {
    let mut seqs = vec![];
    let mut noticed = false;
    let mut gap = None;
    tokio::pin!(failed_at);
    let mut t_fail: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && (gap.is_none() || (seqs.len() as u64) < n) {
        tokio::select! {
            t = &mut failed_at, if t_fail.is_none() => t_fail = Some(t),
            e = tokio::time::timeout(Duration::from_secs(1), rx.next_event()) => match e {
                Ok(Some(Event::Message(m))) => {
                    assert_eq!(m.from, from);
                    seqs.push(m.seq);
                }
                Ok(Some(Event::Reconnecting { .. })) => noticed = true,
                Ok(Some(Event::Media(_))) => {
                    // Events keep their order: media after `Reconnecting`
                    // came over the new connection.
                    if let (true, Some(t), None) = (noticed, t_fail, gap) {
                        gap = Some(t.elapsed());
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("receiver closed"),
                Err(_) => {}
            }
        }
    }
    (gap.expect("media resumed after the failure"), seqs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_resumes_within_a_second_of_an_edge_vanishing() {
    init_logs();
    let Mesh { pki, edges, .. } = Mesh::start(2).await;
    let hole = Blackhole::start(edges[0].addr()).await;
    // The receiver sits behind the blackhole on edge 1, edge 2 as fallback.
    let Call {
        sender: tx,
        receiver: rx,
        room,
        rx_room: _rx_room,
    } = Call::start(
        sdk_config(&pki, &[edges[1].addr()]),
        sdk_config(&pki, &[hole.addr, edges[1].addr()]),
    )
    .await;
    let mic = room.publish_track("mic", TrackKind::Audio).await.unwrap();
    const N: u64 = 150;
    let talker = talk(mic, room, N);
    let failed_at = async {
        // Let media and messages flow through edge 1 first.
        tokio::time::sleep(Duration::from_millis(600)).await;
        hole.cut();
        Instant::now()
    };
    let (gap, seqs) = observe(&rx, "sam", N, failed_at).await;
    talker.abort();
    println!("media gap after the edge vanished: {} ms", gap.as_millis());
    // Target: 1 s (500 ms liveness + reconnect + rejoin); slack for loaded CI.
    assert!(
        gap < Duration::from_millis(1_200),
        "media back after {gap:?}"
    );
    assert_eq!(
        seqs,
        (1..=N).collect::<Vec<_>>(),
        "every message once, in order"
    );
    assert_eq!(rx.edge(), Some(edges[1].addr()));
    assert!(rx.stats().snapshot().reconnects >= 1);
    rx.close().await;
    tx.close().await;
    for e in edges {
        e.kill().await;
    }
}

/// What the receiver got: every media sequence number with when it
/// arrived, and every message seq, until `n` messages and `until`.
async fn collect(
    rx: &Client,
    from: &str,
    n: u64,
    until: Instant,
) -> (Vec<(Instant, u32)>, Vec<u64>) {
    let (mut media, mut seqs) = (vec![], vec![]);
    let deadline = until + Duration::from_secs(10);
    while Instant::now() < deadline && (Instant::now() < until || (seqs.len() as u64) < n) {
        match tokio::time::timeout(Duration::from_millis(200), rx.next_event()).await {
            Ok(Some(Event::Message(m))) => {
                assert_eq!(m.from, from);
                seqs.push(m.seq);
            }
            Ok(Some(Event::Media(m))) => media.push((Instant::now(), m.sequence)),
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => panic!("receiver closed"),
        }
    }
    (media, seqs)
}

/// What a receiver missed of a stream ([`collect`]'s media).
struct Holes {
    /// Distinct packets received.
    received: usize,
    /// Sequence numbers missing between the first and the last received.
    missing: Vec<u32>,
    /// The longest wait between two arrivals.
    widest: Duration,
}

fn holes(media: &[(Instant, u32)]) -> Holes {
    let got: std::collections::BTreeSet<u32> = media.iter().map(|m| m.1).collect();
    let missing = match (got.first(), got.last()) {
        (Some(&first), Some(&last)) => (first..=last).filter(|s| !got.contains(s)).collect(),
        _ => vec![],
    };
    let widest = media
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    Holes {
        received: got.len(),
        missing,
        widest,
    }
}

/// Make-before-break: the publisher's edge drains, then the receiver's.
/// Each client moves to the edge nearest its old one, which learns where
/// the other is only a WAN round trip later; meanwhile the old link still
/// carries the call, so not one media packet goes missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_edges_hand_their_clients_over_without_losing_media() {
    init_logs();
    use testkit::netem::{LinkProfile, LinkRule, Wan};
    // Edges at 127.0.1.<id>: 1 and 3 are neighbours, so are 2 and 4; the
    // rest are 60 ms apart each way. Clients sit next to their edges.
    let link = |from: &str, to: &str, delay_ms: f64| LinkRule {
        from: from.parse().unwrap(),
        to: to.parse().unwrap(),
        profile: LinkProfile {
            delay_ms,
            ..Default::default()
        },
    };
    let wan = Wan::new(vec![
        link("127.0.1.0/24", "127.0.1.0/24", 60.0),
        link("127.0.1.1/32", "127.0.1.3/32", 2.0),
        link("127.0.1.3/32", "127.0.1.1/32", 2.0),
        link("127.0.1.2/32", "127.0.1.4/32", 2.0),
        link("127.0.1.4/32", "127.0.1.2/32", 2.0),
    ])
    .unwrap();
    let Mesh { pki, edges, .. } = Mesh::start_over(Some(wan), 4, |cfg| {
        cfg.edge.listen = format!("127.0.1.{}:0", cfg.edge.id).parse().unwrap();
    })
    .await;
    let addr = |i: usize| edges[i].addr();
    let Call {
        sender: tx,
        receiver: rx,
        room,
        rx_room: _rx_room,
    } = Call::start(
        sdk_config(&pki, &[addr(0), addr(2)]),
        sdk_config(&pki, &[addr(1), addr(3)]),
    )
    .await;
    let mic = room.publish_track("mic", TrackKind::Audio).await.unwrap();
    const N: u64 = 200;
    let talker = talk(mic, room, N);
    // Talk until both drains are over, then listen a while for the last
    // packets in flight.
    let quiet = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2_400)).await;
        talker.abort();
    });
    let (sam_next, rita_next) = (addr(2), addr(3));
    let mut edges = edges.into_iter();
    let drained: Vec<_> = edges.by_ref().take(2).collect();
    let drains = tokio::spawn(async move {
        let mut stopped = vec![];
        for e in drained {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let t = Instant::now();
            tokio::time::timeout(Duration::from_secs(4), e.shutdown())
                .await
                .expect("a drain completes once its clients moved");
            stopped.push(t);
        }
        stopped
    });
    let (media, seqs) = collect(&rx, "sam", N, Instant::now() + Duration::from_millis(2_900)).await;
    quiet.await.unwrap();
    let _drained_at = drains.await.unwrap();
    let Holes {
        received,
        missing,
        widest,
    } = holes(&media);
    println!(
        "two drains: {received} media packets, {} missing, widest gap {} ms",
        missing.len(),
        widest.as_millis()
    );
    assert!(
        missing.is_empty(),
        "media lost across the drains: {missing:?}"
    );
    assert_eq!(received, media.len(), "each packet once");
    assert_eq!(
        seqs,
        (1..=N).collect::<Vec<_>>(),
        "every message once, in order"
    );
    assert_eq!(tx.edge(), Some(sam_next), "the draining edge's nearest");
    assert_eq!(rx.edge(), Some(rita_next));
    assert_eq!(rx.stats().snapshot().goaways, 1);
    assert_eq!(tx.stats().snapshot().goaways, 1);
    rx.close().await;
    tx.close().await;
    for e in edges {
        e.kill().await;
    }
}

/// A new track's short burst of audio, then silence: every packet
/// arrives, the first (sent at once after `publish_track`, before the
/// receiving edge and SDK have heard of the track: they hold it until they
/// have, `repair::early`) and the last (with nothing behind it). Through
/// one edge, or two over a WAN (`two_edges`).
async fn a_burst_arrives_whole(two_edges: bool) {
    use testkit::netem::{LinkProfile, LinkRule};
    let wan = Wan::new(vec![LinkRule {
        from: "127.0.1.0/24".parse().unwrap(),
        to: "127.0.1.0/24".parse().unwrap(),
        profile: LinkProfile::delay(10.0),
    }])
    .unwrap();
    let mesh = Mesh::start_over(Some(wan), 2, |cfg| {
        cfg.edge.listen = format!("127.0.1.{}:0", cfg.edge.id).parse().unwrap();
    })
    .await;
    let rx_edge = if two_edges { 2 } else { 1 };
    let call = Call::start(mesh.sdk_config(&[1]), mesh.sdk_config(&[rx_edge])).await;
    let mic = call
        .room
        .publish_track("mic", TrackKind::Audio)
        .await
        .unwrap();
    const N: u32 = 10;
    for _ in 0..N {
        mic.send(&[0u8; 120]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (media, _) = collect(
        &call.receiver,
        "sam",
        0,
        Instant::now() + Duration::from_secs(1),
    )
    .await;
    let mut seqs: Vec<u32> = media.iter().map(|(_, s)| *s).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs, (0..N).collect::<Vec<_>>(), "two edges: {two_edges}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tracks_first_burst_arrives_whole_through_one_edge() {
    a_burst_arrives_whole(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tracks_first_burst_arrives_whole_through_two_edges() {
    a_burst_arrives_whole(true).await;
}

/// A last mile whose round trip grows at once (a handover, a route
/// change): the receiver hears nothing from its edge for 200 ms, so its
/// watchdog calls the edge dead and the client joins the other one, but
/// it keeps the old link meanwhile (make-before-break), and the call
/// arrives over it late, not never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_mile_whose_round_trip_grows_at_once_keeps_the_call() {
    use testkit::netem::{LinkProfile, LinkRule};
    init_logs();
    let wan = Wan::new(vec![]).unwrap();
    let mesh = Mesh::start_over(Some(wan.clone()), 2, |cfg| {
        cfg.edge.listen = format!("127.0.1.{}:0", cfg.edge.id).parse().unwrap();
    })
    .await;
    let rita = std::net::IpAddr::from([127, 0, 2, 1]);
    let mut rx_config = mesh.sdk_config(&[1, 2]);
    rx_config.socket = Some(socket_at(&wan, rita));
    let Call {
        sender: tx,
        receiver: rx,
        room,
        rx_room: _rx_room,
    } = Call::start(mesh.sdk_config(&[1]), rx_config).await;
    let mic = room.publish_track("mic", TrackKind::Audio).await.unwrap();
    const N: u64 = 150;
    let talker = talk(mic, room, N);
    let grows = tokio::spawn({
        let wan = wan.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            for (from, to) in [
                ("127.0.2.1/32", "127.0.1.0/24"),
                ("127.0.1.0/24", "127.0.2.1/32"),
            ] {
                let rule = LinkRule {
                    from: from.parse().unwrap(),
                    to: to.parse().unwrap(),
                    profile: LinkProfile::delay(200.0),
                };
                wan.set(rule).unwrap();
            }
        }
    });
    let (media, seqs) = collect(&rx, "sam", N, Instant::now() + Duration::from_millis(3_000)).await;
    talker.abort();
    grows.await.unwrap();
    let Holes {
        received,
        missing,
        widest,
    } = holes(&media);
    let stats = rx.stats().snapshot();
    println!(
        "last mile grown to a 400 ms round trip: {received} media packets, {} missing, widest gap {} ms, {} reconnects",
        missing.len(),
        widest.as_millis(),
        stats.reconnects
    );
    assert_eq!(
        seqs,
        (1..=N).collect::<Vec<_>>(),
        "every message once, in order"
    );
    // Measured: the first two packets sent after the step missing (not
    // dropped by the emulation nor counted by the edge), the widest gap
    // 340 ms; leaving the old link at once as it was, 40 missing (the
    // 0.8 s a rejoin takes over the grown round trip) and 1.1 s.
    assert!(missing.len() <= 5, "media lost: {missing:?}");
    assert!(
        widest < Duration::from_millis(600),
        "media waited {widest:?}"
    );
    rx.close().await;
    tx.close().await;
    mesh.stop().await;
}
