//! Finding the nearest edge end to end: three real edges and a region
//! controller (embedded store) on loopback, the client behind the WAN
//! emulation at its own address. The client asks the controller's
//! `/v1/edges/nearest` for a shortlist, probes it and connects to the
//! fastest edge; when that edge's path degrades it moves to the one that is
//! now clearly faster (no message lost), and it does not move for a gain
//! below the switching threshold. A controller that does not answer is
//! passed over for the next one the app named; with every controller down,
//! a new client connects by the last shortlist they gave. A client whose
//! shortlist went stale (an edge restarted with a new self-signed
//! certificate) asks the controller again when it cannot reconnect.
mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use sdk::{Client, ClientConfig, Event};
use testkit::netem::LinkProfile;
use testkit::region::{ClientCert, Region};

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

async fn wait_for(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connects_to_the_fastest_shortlisted_edge_and_moves_only_for_a_clear_gain() {
    init_logs();
    let region = Region::start().await;
    let (wan, pki, api_addr) = (region.wan.clone(), &region.pki, region.api_addr);
    let (client_ip, edge_ips) = (ip(50), [ip(11), ip(12), ip(13)]);
    // One-way delays from the client: edge 12 is nearest, then 13, then 11.
    let set = |edge: usize, ms: f64| {
        wan.set_link(client_ip, edge_ips[edge], LinkProfile::delay(ms))
            .unwrap()
    };
    set(0, 40.0);
    set(1, 5.0);
    set(2, 20.0);

    let mut edges = vec![];
    for (i, city) in ["ams", "fra", "lhr"].iter().enumerate() {
        let at = SocketAddr::new(edge_ips[i], 0);
        edges.push(
            region
                .edge(i as u32 + 1, city, at, ClientCert::FromCa)
                .await,
        );
    }
    Region::routes_between(&edges).await;

    // The listener: on edge 11 by an explicit list.
    let mut listen_cfg = sdk_config(pki, &[edges[0].addr()]);
    listen_cfg.socket = Some(socket_at(&wan, ip(60)));
    let listener = Client::connect(listen_cfg).await.unwrap();
    let _listen_room = listener
        .join(&token("room", "lena", true, true), "room", true)
        .await
        .unwrap();

    // The talker: from the shortlist of the first controller that answers
    // (the first named is down: nothing listens on its port).
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let trust = sdk::EdgeTrust::Ca(pki.ca_pem().into_bytes());
    let all_down = [down.clone(), format!("{down}/prefix")];
    let err =
        sdk::nearest::fetch_shortlist_from(&all_down, 4, Duration::from_secs(2), None, &trust)
            .await
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("no controller answered") && all_down.iter().all(|c| err.contains(c.as_str())),
        "{err}"
    );
    let mut cfg = ClientConfig::new(vec![]).trusting(trust.clone());
    cfg.controllers = vec![down, format!("http://{api_addr}")];
    cfg.reprobe_interval = Some(Duration::from_secs(1));
    cfg.socket = Some(socket_at(&wan, client_ip));
    let started = Instant::now();
    let talker = loop {
        // The controller lists edges once their first load records are in.
        match Client::connect(cfg.clone()).await {
            Ok(c) => break c,
            Err(e) if started.elapsed() < Duration::from_secs(10) => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(
        talker.edge(),
        Some(edges[1].addr()),
        "the 5 ms edge, whatever the controller's order"
    );
    // The handshakes race: nobody waits for the far candidates. Probing
    // them first (a handshake and three round trips each, the slowest
    // 80 ms away) took over 320 ms.
    let timing = talker.connect_timing();
    assert!(timing.edge_rtt >= Duration::from_millis(10), "{timing:?}");
    assert!(timing.handshake >= Duration::from_millis(10), "{timing:?}");
    assert!(timing.handshake < Duration::from_millis(200), "{timing:?}");
    let room = talker
        .join(&token("room", "tom", true, true), "room", true)
        .await
        .unwrap();

    // Messages flow while the nearest edge's path degrades to 60 ms: the
    // talker moves to edge 13 (20 ms), a clear gain.
    const N: u64 = 150;
    let sender = tokio::spawn(async move {
        for i in 1..=N {
            room.send_message(Bytes::from(format!("m{i}")))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        room
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let degraded = Instant::now();
    set(1, 60.0);
    wait_for(6, "the talker moves to edge 13", || {
        talker.edge() == Some(edges[2].addr())
    })
    .await;
    eprintln!(
        "nearest edge degraded: moved to the next fastest after {:?}",
        degraded.elapsed()
    );

    let mut seqs = vec![];
    let deadline = Instant::now() + Duration::from_secs(15);
    while (seqs.len() as u64) < N && Instant::now() < deadline {
        if let Ok(Some(Event::Message(m))) =
            tokio::time::timeout(Duration::from_secs(1), listener.next_event()).await
        {
            seqs.push(m.seq);
        }
    }
    assert_eq!(
        seqs,
        (1..=N).collect::<Vec<_>>(),
        "every message once, in order, across the move"
    );
    let _room = sender.await.unwrap();

    // Edge 11 becomes 30 ms away against 40 ms now: 10 ms better but not a
    // third faster, so the talker stays.
    set(0, 15.0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        talker.edge(),
        Some(edges[2].addr()),
        "no move for a small gain"
    );
    assert_eq!(talker.stats().snapshot().edge_switches, 1);

    // Every controller down: a new client of this process connects by the
    // last shortlist they gave, measured as ever (from where it sits, edge
    // 11 is nearest), and reaches the room.
    region.api_task.abort();
    let err = sdk::nearest::fetch_shortlist_from(
        &cfg.controllers,
        4,
        Duration::from_secs(2),
        None,
        &trust,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no controller answered"), "{err}");
    let mut late_cfg = cfg.clone();
    late_cfg.socket = Some(socket_at(&wan, ip(51)));
    for (edge, ms) in edge_ips.iter().zip([5.0, 30.0, 30.0]) {
        wan.set_link(ip(51), *edge, LinkProfile::delay(ms)).unwrap();
    }
    let late = Client::connect(late_cfg)
        .await
        .expect("connects by the last shortlist");
    assert_eq!(late.edge(), Some(edges[0].addr()));
    let late_room = late
        .join(&token("room", "lara", true, true), "room", true)
        .await
        .unwrap();
    late_room.send_message(Bytes::from("late")).await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Event::Message(m)) = listener.next_event().await {
                if m.payload == "late" {
                    break;
                }
            }
        }
    })
    .await;
    assert!(heard.is_ok(), "the late client's message reached the room");
    late.close().await;

    talker.close().await;
    listener.close().await;
    for e in edges {
        e.kill().await;
    }
    region.stop().await;
}

/// An edge restarts with a new self-signed certificate while the client is
/// on another; then that other edge dies. The client's shortlist still
/// pins the restarted edge's old certificate, so no retry of it can
/// connect: the client asks the controller again and gets back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_shortlist_went_stale_asks_the_controller_again() {
    init_logs();
    let region = Region::start().await;
    let client_ip = ip(70);
    let (near_at, far_at) = (
        SocketAddr::new(ip(21), free_udp_port(ip(21))),
        SocketAddr::new(ip(22), 0),
    );
    let wan = &region.wan;
    wan.set_link(client_ip, near_at.ip(), LinkProfile::delay(5.0))
        .unwrap();
    wan.set_link(client_ip, far_at.ip(), LinkProfile::delay(20.0))
        .unwrap();
    let near = region.edge(1, "ams", near_at, ClientCert::SelfSigned).await;
    let far = region.edge(2, "fra", far_at, ClientCert::SelfSigned).await;
    let first = region.shortlist(2).await;

    let mut cfg = ClientConfig::new(vec![]).trusting(sdk::EdgeTrust::PinnedHashes);
    cfg.controllers = vec![region.api_url()];
    cfg.reprobe_interval = None;
    cfg.socket = Some(socket_at(wan, client_ip));
    let client = Client::connect(cfg).await.unwrap();
    assert_eq!(client.edge(), Some(near_at));
    let _room = client
        .join(&token("room", "sam", true, true), "room", true)
        .await
        .unwrap();

    // The near edge dies: the client moves to the far one.
    near.kill().await;
    let far_addr = far.addr();
    wait_for(10, "the client moves to the far edge", || {
        client.edge() == Some(far_addr)
    })
    .await;
    // The near edge is back on its address with a new certificate, which
    // the controller publishes.
    let near = region.edge(1, "ams", near_at, ClientCert::SelfSigned).await;
    let pinned = |list: &[sdk::EdgeCandidate]| {
        let e = list
            .iter()
            .find(|e| e.addr == near_at)
            .expect("near edge listed");
        e.cert_sha256.clone()
    };
    let old_pins = pinned(&first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pinned(&region.shortlist(2).await) == old_pins {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Now the far edge dies. The client's list pins the near edge's old
    // certificate: without asking again it would fail on it forever.
    let lost = Instant::now();
    far.kill().await;
    wait_for(10, "the client gets back to the near edge", || {
        client.edge() == Some(near_at)
    })
    .await;
    eprintln!("back on the restarted edge after {:?}", lost.elapsed());

    client.close().await;
    near.kill().await;
    region.stop().await;
}

/// A UDP port free on `ip` now, to start an edge on it and again later.
fn free_udp_port(ip: IpAddr) -> u16 {
    std::net::UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
