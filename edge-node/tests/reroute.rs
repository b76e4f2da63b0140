//! An edge's own probes reroute around a dead next hop before any controller
//! reacts: edge 1 reaches edge 3 through edge 2 with the direct link as the
//! backup; edge 2 dies; media from 1 reaches 3 again on the backup path.
mod common;

use std::time::{Duration, Instant};

use common::*;
use protocol::pb::server_frame::Kind as SK;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_next_hop_is_routed_around_on_local_probes() {
    let mut mesh = Mesh::start(3).await;
    // 1 <-> 3 through 2, the direct link as backup; everyone probes everyone.
    for (at, via_2, direct) in [(1u32, [1, 2, 3], [1, 3]), (3, [3, 2, 1], [3, 1])] {
        let e = mesh.edge(at);
        let mut t = (*e.routes.current()).clone();
        let dest = via_2[2];
        t.paths.insert(dest, via_2.to_vec());
        t.backups.insert(dest, direct.to_vec());
        t.probe = t.peers.keys().copied().collect();
        e.routes.publish(t);
    }
    // Probes establish that every peer is alive before the failure.
    let deadline = Instant::now() + Duration::from_secs(5);
    while mesh
        .edge(1)
        .core
        .prober
        .links()
        .iter()
        .filter(|l| l.alive)
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "probes never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ca = mesh.ca_der();
    let mut a = RawClient::connect(mesh.edge(1).addr(), &ca).await;
    let mut c = RawClient::connect(mesh.edge(3).addr(), &ca).await;
    c.join("room", "carol").await;
    let ja = a.join("room", "alice").await;
    let track = a.publish(ja.channel_id, "mic").await.unwrap();
    c.expect(|f| match f {
        SK::TrackAvailable(_) => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(mesh.edge(1).core.route_table().paths[&3], vec![1, 2, 3]);

    // A steady 200 packets/s flow; the subscriber timestamps arrivals.
    let sender = tokio::spawn({
        let conn = a;
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            for seq in 0..1_000u32 {
                tick.tick().await;
                conn.media(ja.channel_id, track, seq, &[9u8; 100]);
            }
            conn
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = c.recv_media().await.is_some();
    assert!(before, "media flows through edge 2 before it dies");
    let victim = mesh.edges.remove(1);
    let killed = Instant::now();
    victim.kill().await;
    // Drain what was in flight, then wait for the first packet after the
    // reroute.
    let resumed = loop {
        let got = tokio::time::timeout(Duration::from_secs(4), c.recv_media())
            .await
            .ok()
            .flatten();
        assert!(got.is_some(), "media never resumed after edge 2 died");
        if mesh.edge(1).core.route_table().paths[&3] == vec![1, 3] {
            break killed.elapsed();
        }
    };
    // The first packet that can only have come the new way.
    let first_new = tokio::time::timeout(Duration::from_secs(2), c.recv_media())
        .await
        .ok()
        .flatten();
    assert!(first_new.is_some());
    let back = killed.elapsed().max(resumed);
    eprintln!("edge 2 killed: media from edge 1 reached edge 3 on the backup path after {back:?}");
    assert!(back < Duration::from_secs(2), "{back:?}");
    assert!(common::metric("rtn_edge_local_reroutes_total", &[("edge", "1")]) >= 1.0);
    let _ = sender.await;
    mesh.stop().await;
}
