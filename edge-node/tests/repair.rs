//! Media loss repaired on every hop.
//!
//! - A call across two edges where every link (publisher -> edge, edge ->
//!   edge, edge -> subscriber) loses 10% of its packets, run with repair off
//!   (best effort) and on, side by side. Off, about 27% of the packets never
//!   arrive (three lossy hops); on, the NACKs of each hop's receiving end
//!   get nearly all of them back, each hop answering from its own history.
//! - A relay link that loses 40% each way, too much for per-hop repair:
//!   the edge in front of it also sends the media around it, over a third
//!   edge, and the receiving edge keeps the first copy.
//! - A long lossy relay hop (90 ms round trip, 10% loss each way) carrying
//!   video, slow for NACKs: the edges' probes see the loss and the sending
//!   edge adds parity, from which the receiving edge rebuilds lost packets
//!   without a round trip.
mod common;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use protocol::pb::ErrorCode;
use sdk::{Event, TrackKind};
use testkit::netem::{LinkProfile, LinkRule};
use testkit::wait::eventually;

/// Loss of every link, each way.
const LOSS: f64 = 0.10;
/// Audio packets sent, one every [`EVERY`].
const PACKETS: u32 = 300;
const EVERY: Duration = Duration::from_millis(10);

/// The measured calls run one at a time: each emulates lossy links in user
/// space on this machine's two cores, and with the others alongside, setup
/// over a lossy last mile timed out and a residual-loss ratio read the
/// load (both seen in the full suite).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// What one call measured.
struct Run {
    /// Share of the sent packets the receiver never got.
    residual_loss: f64,
    /// Packets the edges sent again.
    edge_resent: f64,
    /// Packets the edges rebuilt from parity.
    rebuilt: f64,
    /// Audio copies the edges sent to the subscriber (`repair::red`).
    edge_copies_to_client: f64,
    /// Copies around a lossy relay link (a redundant path): made, dropped
    /// as second copies, not made for the budget.
    around: [f64; 3],
    sdk: sdk::StatsSnapshot,
}

/// One call: a sender on edge 2 and a receiver on edge 1.
#[derive(Clone, Copy)]
struct Setup {
    repair: bool,
    /// `repair.redundant_path_share` of the edges.
    redundant_share: f64,
    /// Edge 1, edge 2, receiver, sender (the edges' ids are their hosts'
    /// last bytes, so that each call's metrics are its own: the tests
    /// share the process's metrics).
    hosts: [u8; 4],
    /// The link between edges 1 and 2.
    relay: LinkProfile,
    /// Every client's link.
    last_mile: LinkProfile,
    /// A third edge at this host, linked to both by `last_mile`, as edge
    /// 2's backup path to edge 1.
    via: Option<u8>,
    packets: u32,
    /// The packets before this one are not counted: the time the edges
    /// take to measure a link's loss.
    counted_from: u32,
    kind: TrackKind,
}

impl Setup {
    fn new(repair: bool, hosts: [u8; 4], relay: LinkProfile, last_mile: LinkProfile) -> Self {
        Setup {
            repair,
            redundant_share: repair::redundant::DEFAULT_SHARE,
            hosts,
            relay,
            last_mile,
            via: None,
            packets: PACKETS,
            counted_from: 0,
            kind: TrackKind::Audio,
        }
    }
}

async fn call(setup: Setup) -> Run {
    let Setup {
        repair,
        redundant_share,
        hosts,
        relay,
        last_mile,
        via,
        packets,
        counted_from,
        kind,
    } = setup;
    init_logs();
    let [e1, e2, rx_at, tx_at] = hosts.map(ip);
    // The relay link's loss comes once the call is up: a handshake and
    // the channel's first directory round over a link losing 40% can take
    // longer than the setup's bounds on a loaded machine (CI: "sam's edge
    // learns of rita" timed out), and setup is not what is measured.
    let clean = LinkProfile { loss: 0.0, ..relay };
    let mut rules = vec![];
    for (a, b) in [(e1, e2), (e2, e1)] {
        rules.push(LinkRule::between(a, b, clean));
    }
    let mut edge_hosts = vec![e1, e2];
    edge_hosts.extend(via.map(ip));
    for c in [rx_at, tx_at].into_iter().chain(via.map(ip)) {
        for e in [e1, e2] {
            rules.push(LinkRule::between(c, e, last_mile));
            rules.push(LinkRule::between(e, c, last_mile));
        }
    }
    let wan = Wan::new(rules).unwrap();
    let pki = edge_node::tls::DevPki::new().unwrap();
    let tweak = |cfg: &mut edge_node::EdgeConfig| {
        cfg.repair.enabled = repair;
        cfg.repair.redundant_path_share = redundant_share;
    };
    let mut edges = vec![];
    let ids: Vec<u32> = [hosts[0], hosts[1]]
        .into_iter()
        .chain(via)
        .map(u32::from)
        .collect();
    for (id, at) in ids.iter().zip(&edge_hosts) {
        edges.push(start_edge(&pki, *id, Some(SocketAddr::new(*at, 0)), &tweak, Some(&wan)).await);
    }
    let mesh = Mesh {
        pki,
        edges,
        wan: Some(wan.clone()),
    };
    mesh.full_mesh_routes();
    // The edges probe each other (what parity is switched by); edge 2's
    // backup path to edge 1 is through the third edge, if any.
    for e in &mesh.edges {
        let mut t = (*e.routes.current()).clone();
        t.probe = t.peers.keys().copied().collect();
        if let (true, Some(v)) = (e.id() == ids[1], via) {
            t.backups.insert(ids[0], vec![ids[1], v.into(), ids[0]]);
        }
        e.routes.publish(t);
    }
    // The call starts on a mesh that is up (a handshake over a lossy link
    // can take its retries).
    for id in &ids {
        let want = (ids.len() - 1) as f64;
        let edge = id.to_string();
        eventually(15, "every relay link up", || async {
            metric("rtn_edge_relay_links", &[("edge", &edge)]) >= want
        })
        .await;
    }
    let client = |edge: u32, at: IpAddr| {
        let mut c = mesh.sdk_config(&[edge]);
        c.socket = Some(socket_at(&wan, at));
        c.repair = repair;
        // Over a lossy last mile the handshake may need a retransmission,
        // which QUIC sends a probe timeout later (about a second before
        // its first RTT sample): the 1 s default timed out once under CI
        // load (the SDK's connect, not repair, is not under test here).
        c.connect_timeout = Duration::from_secs(5);
        c
    };
    let edge_metric = |name: &str, labels: &[(&str, &str)]| -> f64 {
        ids.iter()
            .map(|id| {
                let edge = id.to_string();
                let mut l = vec![("edge", edge.as_str())];
                l.extend_from_slice(labels);
                metric(name, &l)
            })
            .sum()
    };
    let Call {
        sender,
        receiver,
        room,
        rx_room: _rx_room,
    } = Call::start(client(ids[1], tx_at), client(ids[0], rx_at)).await;
    let publisher = room.publish_track("track", kind).await.unwrap();
    // Rita hears the track before sam talks.
    tokio::time::timeout(Duration::from_secs(5), async {
        while !matches!(
            receiver.next_event().await,
            Some(Event::TrackAvailable { .. })
        ) {}
    })
    .await
    .expect("rita sees sam's track");
    mesh.wan().set_link(e1, e2, relay).unwrap();
    let talk = tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        for _ in 0..packets {
            tick.tick().await;
            publisher.send(&[7u8; 160]).await.unwrap();
        }
        publisher
    });
    let mut got = HashSet::new();
    let listen_until = tokio::time::Instant::now() + EVERY * packets + Duration::from_millis(800);
    while let Ok(Some(e)) = tokio::time::timeout_at(listen_until, receiver.next_event()).await {
        if let Event::Media(m) = e {
            assert!(
                got.insert(m.sequence),
                "packet {} delivered twice",
                m.sequence
            );
        }
    }
    let _publisher = talk.await.unwrap();
    let sdk = receiver.stats().snapshot();
    let tx_stats = sender.stats().snapshot();
    let run = Run {
        residual_loss: 1.0
            - got.iter().filter(|s| **s >= counted_from).count() as f64
                / (packets - counted_from) as f64,
        edge_resent: edge_metric("rtn_edge_repair_resent_packets_total", &[]),
        rebuilt: edge_metric("rtn_edge_repair_parity_rebuilt_total", &[]),
        edge_copies_to_client: edge_metric(
            "rtn_edge_repair_parity_packets_total",
            &[("link", "client")],
        ),
        around: ["made", "dropped", "over_budget"]
            .map(|event| edge_metric("rtn_edge_media_copies_total", &[("event", event)])),
        sdk: sdk::StatsSnapshot {
            media_resent: tx_stats.media_resent,
            media_redundant: tx_stats.media_redundant,
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
    let _alone = ONE_AT_A_TIME.lock().await;
    tokio::time::timeout(Duration::from_secs(90), async {
        let lossy = LinkProfile {
            delay_ms: 5.0,
            loss: LOSS,
            ..LinkProfile::default()
        };
        let off = call(Setup::new(false, [81, 82, 83, 84], lossy, lossy)).await;
        let on = call(Setup::new(true, [85, 86, 87, 88], lossy, lossy)).await;
        println!(
            "10% loss on each of 3 hops: residual loss off {:.1}%, on {:.1}%; \
             resent by the edges {}, by the publisher {}; audio copies by the publisher {}, by the edges to the subscriber {}; \
             the subscriber NACKed {}, recovered {}, dropped {} duplicates",
            off.residual_loss * 100.0,
            on.residual_loss * 100.0,
            on.edge_resent,
            on.sdk.media_resent,
            on.sdk.media_redundant,
            on.edge_copies_to_client,
            on.sdk.media_nacked,
            on.sdk.media_recovered,
            on.sdk.media_duplicate,
        );
        // Off: 1 - 0.9^3 = 27% expected; anything above 12% shows the
        // links lose as configured.
        assert!(off.residual_loss > 0.12, "off: {}", off.residual_loss);
        assert_eq!(off.edge_resent, 0.0);
        assert_eq!(off.sdk.media_nacked, 0);
        // On: each hop asks up to four times within the audio deadline
        // (measured: 0-2.3% left, once 6.7% with the machine busy, against
        // 23-41% off).
        assert!(
            on.residual_loss < off.residual_loss / 3.0,
            "on: {}, off: {}",
            on.residual_loss,
            off.residual_loss
        );
        assert!(on.edge_resent > 0.0, "the edges repaired nothing");
        assert!(on.sdk.media_resent > 0, "the publisher repaired nothing");
        assert!(on.sdk.media_recovered > 0, "the subscriber recovered nothing");
        // The last miles lose 10%: once each receiving end has NACKed, both
        // senders send each audio packet again with the next.
        assert!(on.sdk.media_redundant > 0, "the publisher sent no audio copies");
        assert!(on.edge_copies_to_client > 0.0, "the edge sent the subscriber no audio copies");
        assert_eq!(off.sdk.media_redundant, 0);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_lossy_relay_hop_is_repaired_by_parity() {
    let _alone = ONE_AT_A_TIME.lock().await;
    tokio::time::timeout(Duration::from_secs(60), async {
        let long = LinkProfile {
            delay_ms: 45.0,
            loss: LOSS,
            ..LinkProfile::default()
        };
        let clean = LinkProfile::delay(1.0);
        // Video (audio on such a hop is sent twice rather than grouped),
        // for 15 s: the edges probe a link five times a second only once it
        // carries traffic (every 2 s before), and parity comes on once the
        // probes measured the loss, a few seconds into the call.
        let run = call(Setup {
            packets: 5 * PACKETS,
            kind: TrackKind::Video,
            ..Setup::new(true, [91, 92, 93, 94], long, clean)
        })
        .await;
        println!(
            "90 ms relay hop at 10% loss: residual loss {:.1}%, rebuilt from parity {}, resent {}",
            run.residual_loss * 100.0,
            run.rebuilt,
            run.edge_resent
        );
        assert!(run.rebuilt > 0.0, "no packet rebuilt from parity");
        // Well under the hop's 10% (measured 0.6-4.6%, parity coming on a
        // few seconds into the call).
        assert!(
            run.residual_loss < 0.07,
            "residual loss {}",
            run.residual_loss
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_link_losing_too_much_for_repair_gets_a_redundant_path() {
    let _alone = ONE_AT_A_TIME.lock().await;
    tokio::time::timeout(Duration::from_secs(60), async {
        // The direct link: 120 ms round trip, 40% loss each way (a NACK
        // gets one try within audio's deadline, and an audio copy is lost
        // as often as its original); the backup through a third edge:
        // 50 ms each way, clean.
        let lossy = LinkProfile {
            delay_ms: 60.0,
            loss: 0.4,
            ..LinkProfile::default()
        };
        let clean = LinkProfile::delay(25.0);
        // Audio for 7 s, counted from 4 s in: the edge reads the link's
        // loss once a second and switches on an average of the readings
        // (3 s time constant, `repair::redundant::LOSS_SMOOTHING`), which
        // at 40% loss passes the 15% threshold after 1.4 s: on at 2-3 s
        // quiet, a reading later on a loaded machine (the full suite once
        // counted from 2.5 s and caught it off for the first second).
        // A full second path (share 1); that the default share bounds the
        // copies is `repair::redundant`'s test.
        let setup = |share: f64, hosts: [u8; 4], via: u8| Setup {
            redundant_share: share,
            via: Some(via),
            packets: 700,
            counted_from: 400,
            ..Setup::new(true, hosts, lossy, clean)
        };
        let without = call(setup(0.0, [101, 102, 103, 104], 105)).await;
        let with = call(setup(1.0, [106, 107, 108, 109], 110)).await;
        println!(
            "40% loss on a 120 ms relay link: residual loss {:.1}% with per-hop repair alone, \
             {:.1}% with a redundant path (copies made {}, second copies dropped {}, over budget {})",
            without.residual_loss * 100.0,
            with.residual_loss * 100.0,
            with.around[0],
            with.around[1],
            with.around[2],
        );
        assert_eq!(without.around, [0.0; 3], "a share of 0: no redundant path");
        assert!(with.around[0] > 0.0, "no copy went around the lossy link");
        assert!(with.around[1] > 0.0, "no second copy was dropped");
        // Measured: 5.8-14.3% left by per-hop repair alone, 0.0-0.9% with
        // the redundant path.
        assert!(
            with.residual_loss < without.residual_loss / 3.0,
            "with a redundant path {}, without {}",
            with.residual_loss,
            without.residual_loss
        );
    })
    .await
    .expect("bounded");
}

/// Read `c`'s datagrams for a moment: the media sequences among them, and
/// the NACKs.
async fn drain(c: &RawClient, for_: Duration) -> (Vec<u32>, Vec<protocol::datagram::Nack>) {
    let (mut media, mut nacks) = (vec![], vec![]);
    let until = tokio::time::Instant::now() + for_;
    while let Ok(Ok(d)) = tokio::time::timeout_at(until, c.conn.read_datagram()).await {
        match d.first() {
            Some(&protocol::datagram::TYPE_NACK) => {
                nacks.push(protocol::datagram::Nack::decode(&d).unwrap())
            }
            _ => media.push(
                protocol::datagram::MediaHeader::decode(&d)
                    .unwrap()
                    .sequence,
            ),
        }
    }
    (media, nacks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_are_answered_within_a_budget_and_made_up_ones_close_the_client() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let mesh = Mesh::start(1).await;
        let (addr, ca) = (mesh.edges[0].addr(), mesh.ca_der());
        let mut tx = RawClient::connect(addr, &ca).await;
        let mut rx = RawClient::connect(addr, &ca).await;
        let room = rx.join("room", "rita").await.channel_id;
        tx.join("room", "sam").await;
        let track = tx.publish(room, "mic").await.unwrap();
        let nack = |seqs: Vec<u32>, track: u64| {
            protocol::datagram::Nack {
                relay: false,
                channel: protocol::ChannelId(room),
                track: protocol::TrackKey(track),
                seqs,
            }
            .encode()
        };

        // The publisher skips sequence 2: the edge asks for it.
        for seq in [0, 1, 3] {
            tx.media(room, track, seq, &[1; 500]);
        }
        let (_, asked) = drain(&tx, Duration::from_millis(300)).await;
        assert!(
            asked
                .iter()
                .any(|n| n.track.0 == track && n.seqs.contains(&2)),
            "the edge NACKs the publisher's gap: {asked:?}"
        );
        tx.media(room, track, 2, &[1; 500]);
        let (got, _) = drain(&rx, Duration::from_millis(300)).await;
        assert_eq!(got.len(), 4, "the gap filled, nothing twice: {got:?}");

        // An honest NACK from the subscriber is answered with the packet
        // (while it can still arrive in time: 300 ms for this kind).
        for seq in 4..64 {
            tx.media(room, track, seq, &[1; 500]);
        }
        drain(&rx, Duration::from_millis(60)).await;
        for d in nack(vec![5], track) {
            rx.conn.send_datagram(d).unwrap();
        }
        let (again, _) = drain(&rx, Duration::from_millis(60)).await;
        assert_eq!(again, vec![5]);

        // A flood of NACKs for what was sent gets the link's budget (half
        // its media, 64 KiB saved up), not a copy of each.
        let over_before = metric(
            "rtn_edge_repair_refused_total",
            &[("reason", "over_budget")],
        );
        for _ in 0..20 {
            for d in nack((0..64).collect(), track) {
                rx.conn.send_datagram(d).unwrap();
            }
        }
        let (flood, _) = drain(&rx, Duration::from_millis(100)).await;
        let budget = (64.0 * 529.0 * 0.5 + 64.0 * 1024.0) / 529.0;
        assert!(
            (flood.len() as f64) <= budget + 1.0,
            "{} packets resent for a budget of {budget:.0}",
            flood.len()
        );
        assert!(
            metric(
                "rtn_edge_repair_refused_total",
                &[("reason", "over_budget")]
            ) > over_before
        );

        // NACKs for a track never sent to this client are abuse: counted,
        // then the client is closed once its budget of wasted datagrams is
        // spent; the publisher is unaffected.
        for _ in 0..2_000 {
            for d in nack(vec![1, 2, 3], 0xdead_beef) {
                let _ = rx.conn.send_datagram(d);
            }
        }
        assert_eq!(rx.closed_code().await, Some(ErrorCode::RateLimited as u64));
        assert!(metric("rtn_edge_repair_refused_total", &[("reason", "never_sent")]) >= 500.0);
        tx.media(room, track, 64, &[1; 10]);
        let mut probe = RawClient::connect(addr, &ca).await;
        probe.join("room", "pat").await;
        tx.media(room, track, 65, &[1; 10]);
        assert!(
            probe.recv_media().await.is_some(),
            "the others are unaffected"
        );
        mesh.stop().await;
    })
    .await
    .expect("bounded");
}
