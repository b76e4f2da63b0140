//! A slow subscriber (a narrow, lossy, long link: 1 Mbit/s) and a
//! subscriber that stops reading its control stream, in a
//! channel with a healthy subscriber: the edge bounds what it holds for the
//! slow ones (oldest media dropped and counted; a client that does not read
//! is disconnected), the slow one still gets every message and no stale
//! media, and the healthy one gets everything on time.
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use edge_node::config::AdmissionSection;
use protocol::datagram::{MediaHeader, MEDIA_HEADER_LEN};
use protocol::pb::{server_frame::Kind as SK, ErrorCode};
use testkit::netem::{LinkProfile, LinkRule};

const MESSAGES: u64 = 2_000;
/// 2,000 of them (about 700 kB with framing) fit the slow subscriber's
/// receive window (quinn's default, 1.25 MB), so it keeps its session, and
/// keep its link busy for seconds, so the edge's media queue for it
/// overflows (with chat-sized 100 B messages BBR sent the media on into
/// the narrow link, which dropped it instead).
const MESSAGE_BYTES: usize = 300;
/// The stopped reader's stream receive window. A reader that stops is
/// noticed once the window is full and the edge's frame queue behind it
/// overflows; quinn's default window (1.25 MB) would take more messages
/// than the test sends.
const STOPPED_WINDOW: u32 = 16 * 1024;
const MEDIA: u32 = 2_000;
const SUBSCRIBER_QUEUE: usize = 64;
/// No media may arrive later than this. The slow path's own bound is about
/// 1.3 s: half a second in the edge's queue (`MAX_QUEUED_AGE`), 64 KiB in
/// quinn's datagram buffer (half a second at 1 Mbit/s), the link's 200 ms
/// buffer and 40 ms delay. Without the edge's bounds it would be the whole
/// backlog: over 1 MB at 1 Mbit/s, about ten seconds.
const ON_TIME: Duration = Duration::from_secs(3);
const FRAME_QUEUE: usize = 256;

fn endpoint_at(ip: &str) -> quinn::Endpoint {
    quinn::Endpoint::client(format!("{ip}:0").parse::<SocketAddr>().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_stopped_subscribers_cost_the_others_nothing() {
    tokio::time::timeout(Duration::from_secs(60), async {
        // What the edge sends to 127.0.0.5 crosses a bad mobile link.
        let wan = Wan::new(vec![LinkRule {
            from: "127.0.0.0/8".parse().unwrap(),
            to: "127.0.0.5/32".parse().unwrap(),
            // Narrow, not only lossy: BBR does not read random loss as
            // congestion, so only the link's rate holds the edge back.
            profile: LinkProfile {
                delay_ms: 40.0,
                loss: 0.3,
                rate_kbps: 1_000.0,
                ..LinkProfile::default()
            },
        }])
        .unwrap();
        let mesh = Mesh::start_over(Some(wan), 1, |cfg| {
            cfg.limits.subscriber_queue = SUBSCRIBER_QUEUE;
            cfg.limits.client_frame_queue = FRAME_QUEUE;
            // This test is about queues, not rate limits. The slow
            // subscriber's handshake crosses the 30%-loss link and can need
            // several retransmissions (PTO backoff of 1, 2, 4 s): more than
            // the default 5 s handshake limit (CI saw it refused once).
            cfg.admission = AdmissionSection {
                handshake_timeout_ms: 30_000,
                ..AdmissionSection::unlimited()
            };
        })
        .await;
        let addr = mesh.edges[0].addr();
        let ca = mesh.ca_der();
        let mut publisher = RawClient::connect_from(endpoint_at("127.0.0.2"), addr, &ca).await;
        let joined = publisher.join("room", "pub").await;
        let channel = joined.channel_id;
        let track = publisher.publish(channel, "cam").await.unwrap();
        let mut healthy = RawClient::connect_from(endpoint_at("127.0.0.3"), addr, &ca).await;
        healthy.join("room", "healthy").await;
        let mut small_window = client_config(&ca, protocol::alpn::CLIENT_V1);
        let mut transport = quinn::TransportConfig::default();
        transport.stream_receive_window(STOPPED_WINDOW.into());
        small_window.transport_config(Arc::new(transport));
        let mut stopped = RawClient::open_with(&endpoint_at("127.0.0.4"), addr, small_window)
            .await
            .unwrap();
        stopped.join("room", "stopped").await;
        let mut slow = RawClient::connect_from(endpoint_at("127.0.0.5"), addr, &ca).await;
        slow.join("room", "slow").await;
        // Let the member events settle; from here `stopped` reads nothing.
        tokio::time::sleep(Duration::from_millis(200)).await;

        let start = Instant::now();
        let healthy_media = tokio::spawn(read_media(
            healthy.conn.clone(),
            start,
            Duration::from_secs(2),
        ));
        let slow_media = tokio::spawn(read_media(slow.conn.clone(), start, Duration::from_secs(3)));
        let healthy_messages = tokio::spawn(async move {
            let seqs = read_messages(&mut healthy, STEP).await;
            (seqs, healthy)
        });
        // Messages queue behind the media on the slow link until it stops.
        let slow_messages = tokio::spawn(async move {
            let seqs = read_messages(&mut slow, Duration::from_secs(20)).await;
            (seqs, slow)
        });

        // 2,000 media packets of 600 B over about 2 s, and 2,000 messages
        // interleaved.
        let mut payload = vec![0u8; 600];
        let mut seq = 0;
        for i in 0..MEDIA {
            payload[..8].copy_from_slice(&micros_since(start).to_be_bytes());
            publisher.media(channel, track, i, &payload);
            if seq < MESSAGES {
                seq += 1;
                publisher
                    .message(channel, seq, &[b'm'; MESSAGE_BYTES])
                    .await;
            }
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        // The healthy subscriber: every message in order, nearly all media.
        let every_message = (1..=MESSAGES).collect::<Vec<_>>();
        let (seqs, _healthy) = healthy_messages.await.unwrap();
        assert_eq!(seqs, every_message, "healthy: messages");
        let (got, healthy_late) = healthy_media.await.unwrap();
        assert!(
            got >= MEDIA * 95 / 100,
            "healthy: {got} of {MEDIA} media packets"
        );
        assert!(
            healthy_late < ON_TIME,
            "healthy: media up to {healthy_late:?} late"
        );

        // The one that stopped reading is disconnected as too slow, once its
        // queue is full, not allowed to grow the edge's memory.
        assert_eq!(
            stopped.closed_code().await,
            Some(ErrorCode::Overloaded as u64),
            "the stopped reader is closed with OVERLOADED"
        );
        assert!(
            metric(
                "rtn_edge_protocol_errors_total",
                &[("reason", "client_too_slow")]
            ) >= 1.0
        );

        // The slow one keeps its session and gets what its link carries of
        // the media (the rest dropped, oldest first) and every message.
        let (slow_got, slow_late) = slow_media.await.unwrap();
        let (slow_seqs, slow) = slow_messages.await.unwrap();
        let dropped = metric(
            "rtn_edge_media_dropped_total",
            &[("reason", "subscriber_queue_full")],
        );
        let stale = metric("rtn_edge_media_dropped_total", &[("reason", "stale")]);
        println!(
            "healthy {got}/{MEDIA} media (at most {healthy_late:?} late), {} messages; \
             slow {slow_got}/{MEDIA} media (at most {slow_late:?} late), \
             {dropped} dropped at the edge as queue full, {stale} as stale, {} messages",
            seqs.len(),
            slow_seqs.len()
        );
        assert_eq!(slow_seqs, every_message, "slow: messages");
        // Whether the excess is dropped at the edge (its queue full) or on
        // the narrow link (when BBR's estimate runs ahead of the link's
        // rate, as it did once on a loaded CI machine) depends on timing;
        // media_queue's unit tests pin the edge's drop-oldest policy. What
        // holds either way: what arrives is fresh, never a backlog.
        assert!(
            slow_late < ON_TIME,
            "slow: media up to {slow_late:?} late (a backlog, not dropped)"
        );
        assert!(slow_got > 0 && slow_got < MEDIA, "slow: {slow_got}");
        let slow_closed = slow.conn.close_reason();
        assert!(
            slow_closed.is_none(),
            "the slow one stays connected: {slow_closed:?}"
        );
        // What the edge holds for subscribers stays bounded by their queues.
        assert!(metric("rtn_edge_client_queue_packets", &[]) <= (4 * SUBSCRIBER_QUEUE) as f64);
        assert!(publisher.conn.close_reason().is_none());
        mesh.stop().await;
    })
    .await
    .expect("bounded");
}

/// Microseconds from `start`: the send time a media payload carries.
fn micros_since(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

/// Count the media datagrams `conn` reads until none comes for `patience`,
/// and how late the latest-arriving of them was (now less the send time in
/// its first 8 payload bytes).
async fn read_media(
    conn: web_transport_quinn::Session,
    start: Instant,
    patience: Duration,
) -> (u32, Duration) {
    let (mut n, mut late) = (0u32, Duration::ZERO);
    while let Ok(Ok(d)) = tokio::time::timeout(patience, conn.read_datagram()).await {
        if MediaHeader::decode(&d).is_err() {
            continue; // a NACK
        }
        let at = &d[MEDIA_HEADER_LEN..MEDIA_HEADER_LEN + 8];
        let sent = u64::from_be_bytes(at.try_into().unwrap());
        n += 1;
        late = late.max(Duration::from_micros(
            micros_since(start).saturating_sub(sent),
        ));
    }
    (n, late)
}

/// The sequence numbers of the messages `client` reads, up to [`MESSAGES`]
/// or until none comes for `patience`.
async fn read_messages(client: &mut RawClient, patience: Duration) -> Vec<u64> {
    let mut seqs = vec![];
    while (seqs.len() as u64) < MESSAGES {
        let next = client.recv_until(|k| match k {
            SK::Message(m) => Some(m.seq),
            _ => None,
        });
        match tokio::time::timeout(patience, next).await {
            Ok(Ok(seq)) => seqs.push(seq),
            _ => break,
        }
    }
    seqs
}
