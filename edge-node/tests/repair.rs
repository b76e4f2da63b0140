//! Media loss repaired on every hop: a call across two edges where every
//! link (publisher -> edge, edge -> edge, edge -> subscriber) loses 10% of
//! its packets, run with repair off (best effort) and on, side by side.
//! Off, about 27% of the packets never arrive (three lossy hops); on, the
//! NACKs of each hop's receiving end get nearly all of them back, each hop
//! answering from its own history.
mod common;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use sdk::{Event, TrackKind};
use testkit::netem::{LinkProfile, LinkRule};

/// Loss of every link, each way.
const LOSS: f64 = 0.10;
/// Audio packets sent, one every [`EVERY`].
const PACKETS: u32 = 300;
const EVERY: Duration = Duration::from_millis(10);

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// What one call measured.
struct Run {
    /// Share of the sent packets the receiver never got.
    residual_loss: f64,
    /// Packets the edges sent again.
    edge_resent: f64,
    sdk: sdk::StatsSnapshot,
}

async fn call(repair: bool, hosts: [u8; 4]) -> Run {
    let [e1, e2, rx_at, tx_at] = hosts.map(ip);
    let lossy = LinkProfile {
        delay_ms: 5.0,
        loss: LOSS,
        ..LinkProfile::default()
    };
    let mut rules = vec![];
    for a in [e1, e2, rx_at, tx_at] {
        for b in [e1, e2, rx_at, tx_at] {
            if a != b {
                rules.push(LinkRule::between(a, b, lossy));
            }
        }
    }
    let wan = Wan::new(rules).unwrap();
    let pki = edge_node::tls::DevPki::new().unwrap();
    let tweak = |cfg: &mut edge_node::EdgeConfig| cfg.repair.enabled = repair;
    let mut edges = vec![];
    for (id, at) in [(1, e1), (2, e2)] {
        edges.push(start_edge(&pki, id, Some(SocketAddr::new(at, 0)), &tweak, Some(&wan)).await);
    }
    let mesh = Mesh {
        pki,
        edges,
        wan: Some(wan.clone()),
    };
    mesh.full_mesh_routes();
    let client = |edge: u32, at: IpAddr| {
        let mut c = mesh.sdk_config(&[edge]);
        c.socket = Some(socket_at(&wan, at));
        c.repair = repair;
        c
    };
    let resent_before = metric("rtn_edge_repair_resent_packets_total", &[]);
    let Call {
        sender,
        receiver,
        room,
        rx_room: _rx_room,
    } = Call::start(client(2, tx_at), client(1, rx_at)).await;
    let mic = room.publish_track("mic", TrackKind::Audio).await.unwrap();
    // Rita hears the track before sam talks.
    tokio::time::timeout(Duration::from_secs(5), async {
        while !matches!(
            receiver.next_event().await,
            Some(Event::TrackAvailable { .. })
        ) {}
    })
    .await
    .expect("rita sees sam's track");
    let talk = tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        for _ in 0..PACKETS {
            tick.tick().await;
            mic.send(&[7u8; 160]).await.unwrap();
        }
        mic
    });
    let mut got = HashSet::new();
    let listen_until = tokio::time::Instant::now() + EVERY * PACKETS + Duration::from_millis(800);
    while let Ok(Some(e)) = tokio::time::timeout_at(listen_until, receiver.next_event()).await {
        if let Event::Media(m) = e {
            assert!(
                got.insert(m.sequence),
                "packet {} delivered twice",
                m.sequence
            );
        }
    }
    let _mic = talk.await.unwrap();
    let sdk = receiver.stats().snapshot();
    let tx_stats = sender.stats().snapshot();
    let run = Run {
        residual_loss: 1.0 - got.len() as f64 / PACKETS as f64,
        edge_resent: metric("rtn_edge_repair_resent_packets_total", &[]) - resent_before,
        sdk: sdk::StatsSnapshot {
            media_resent: tx_stats.media_resent,
            ..sdk
        },
    };
    receiver.close().await;
    sender.close().await;
    mesh.stop().await;
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_on_every_hop_is_repaired_where_it_happens() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let off = call(false, [81, 82, 83, 84]).await;
        let on = call(true, [85, 86, 87, 88]).await;
        println!(
            "10% loss on each of 3 hops: residual loss off {:.1}%, on {:.1}%; \
             resent by the edges {}, by the publisher {}; the subscriber NACKed {}, recovered {}, dropped {} duplicates",
            off.residual_loss * 100.0,
            on.residual_loss * 100.0,
            on.edge_resent,
            on.sdk.media_resent,
            on.sdk.media_nacked,
            on.sdk.media_recovered,
            on.sdk.media_duplicate,
        );
        // Off: 1 - 0.9^3 = 27% expected; anything above 12% shows the
        // links lose as configured.
        assert!(off.residual_loss > 0.12, "off: {}", off.residual_loss);
        assert_eq!(off.edge_resent, 0.0);
        assert_eq!(off.sdk.media_nacked, 0);
        // On: each hop asks up to four times within the audio deadline.
        assert!(on.residual_loss < 0.02, "on: {}", on.residual_loss);
        assert!(on.edge_resent > 0.0, "the edges repaired nothing");
        assert!(on.sdk.media_resent > 0, "the publisher repaired nothing");
        assert!(on.sdk.media_recovered > 0, "the subscriber recovered nothing");
    })
    .await
    .expect("bounded");
}
