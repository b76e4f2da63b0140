//! A bounded media queue in front of one QUIC connection (a relay link, a
//! native client, or a WebTransport session: [`DatagramLink`]).
//!
//! Media is latency-first: when a receiver falls behind, the *oldest* packets
//! are dropped (and counted), never the newest. quinn itself would also drop
//! the oldest datagrams when its send buffer is full, but silently; so a
//! packet goes straight to quinn only while quinn has room and nothing is
//! queued, and otherwise waits here for `send_datagram_wait`.
//!
//! Queued media also has an age limit: a packet that waited longer than
//! [`MAX_QUEUED_AGE`] (a link that stalled through an outage) is dropped
//! rather than sent late after it.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::metrics::EdgeMetrics;

/// Media waiting longer than this is too late to play: interactive calls
/// want under 150 ms one way (ITU-T G.114), and a receiver's jitter buffer
/// gives up well before half a second.
pub const MAX_QUEUED_AGE: Duration = Duration::from_millis(500);

/// Where a media queue sends: quinn's datagram API, as a relay link's
/// connection and a client's link (native or WebTransport, which prefixes
/// its session id) each expose it.
pub trait DatagramLink: Send + Sync + 'static {
    /// Bytes quinn takes now without dropping older datagrams.
    fn send_buffer_space(&self) -> usize;
    /// Hand a datagram to quinn; `false` once the link is closed.
    fn send_now(&self, pkt: Bytes) -> bool;
    /// Hand a datagram to quinn, waiting for room; `false` once the link
    /// is closed.
    fn send_waiting(&self, pkt: Bytes) -> impl Future<Output = bool> + Send;
    fn link_closed(&self) -> impl Future<Output = ()> + Send;
}

impl DatagramLink for quinn::Connection {
    fn send_buffer_space(&self) -> usize {
        self.datagram_send_buffer_space()
    }
    fn send_now(&self, pkt: Bytes) -> bool {
        self.send_datagram(pkt).is_ok()
    }
    async fn send_waiting(&self, pkt: Bytes) -> bool {
        self.send_datagram_wait(pkt).await.is_ok()
    }
    async fn link_closed(&self) {
        self.closed().await;
    }
}

impl DatagramLink for web_transport_quinn::Session {
    fn send_buffer_space(&self) -> usize {
        self.datagram_send_buffer_space()
    }
    fn send_now(&self, pkt: Bytes) -> bool {
        self.send_datagram(pkt).is_ok()
    }
    async fn send_waiting(&self, pkt: Bytes) -> bool {
        self.send_datagram_wait(pkt).await.is_ok()
    }
    async fn link_closed(&self) {
        // The QUIC connection's end, not the session's (which waits for a
        // close capsule to be delivered).
        std::ops::Deref::deref(self).closed().await;
    }
}

pub struct MediaQueue {
    inner: Mutex<VecDeque<(Instant, Bytes)>>,
    notify: Notify,
    capacity: usize,
    /// Set while the writer task holds a packet quinn has not taken yet.
    writer_busy: AtomicBool,
    drop_reason: &'static str,
    /// Packets queued (shared by every client queue of an edge).
    depth: metrics::Gauge,
}

impl MediaQueue {
    pub fn new(capacity: usize, drop_reason: &'static str, depth: metrics::Gauge) -> Arc<Self> {
        Arc::new(MediaQueue {
            inner: Mutex::new(VecDeque::with_capacity(capacity.min(64))),
            notify: Notify::new(),
            capacity,
            writer_busy: AtomicBool::new(false),
            drop_reason,
            depth,
        })
    }

    /// Hand `pkt` to `conn`, directly if quinn has room, else via the queue.
    pub fn send(&self, conn: &impl DatagramLink, pkt: Bytes, metrics: &EdgeMetrics) {
        let mut q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if q.is_empty()
            && !self.writer_busy.load(Ordering::Acquire)
            && conn.send_buffer_space() >= pkt.len()
        {
            drop(q);
            if !conn.send_now(pkt) {
                metrics.media_dropped("connection_closed");
            }
            return;
        }
        if q.len() >= self.capacity {
            q.pop_front();
            metrics.media_dropped(self.drop_reason);
        } else {
            self.depth.increment(1.0);
        }
        q.push_back((Instant::now(), pkt));
        drop(q);
        self.notify.notify_one();
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|q| q.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drain the queue into `conn` with quinn's backpressure until the
    /// connection closes.
    pub async fn run_writer(self: Arc<Self>, conn: impl DatagramLink, metrics: EdgeMetrics) {
        loop {
            let next = {
                let mut q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                let mut next = None;
                while let Some((at, p)) = q.pop_front() {
                    self.depth.decrement(1.0);
                    if at.elapsed() <= MAX_QUEUED_AGE {
                        self.writer_busy.store(true, Ordering::Release);
                        next = Some(p);
                        break;
                    }
                    metrics.media_dropped("stale");
                }
                next
            };
            match next {
                Some(pkt) => {
                    // Hand quinn everything it has room for without awaiting;
                    // wait (backpressure) only when it is full.
                    let sent = if conn.send_buffer_space() >= pkt.len() {
                        conn.send_now(pkt)
                    } else {
                        conn.send_waiting(pkt).await
                    };
                    self.writer_busy.store(false, Ordering::Release);
                    if !sent {
                        return;
                    }
                }
                None => {
                    tokio::select! {
                        _ = self.notify.notified() => {}
                        _ = conn.link_closed() => return,
                    }
                }
            }
        }
    }
}

impl Drop for MediaQueue {
    fn drop(&mut self) {
        let left = self.inner.get_mut().map(|q| q.len()).unwrap_or(0);
        self.depth.decrement(left as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link whose room the test sets: what quinn's datagram buffer would
    /// take without dropping.
    #[derive(Clone, Default)]
    struct Link(Arc<LinkState>);

    #[derive(Default)]
    struct LinkState {
        room: Mutex<usize>,
        sent: Mutex<Vec<u8>>,
        freed: Notify,
    }

    impl Link {
        fn with_room(bytes: usize) -> Link {
            let link = Link::default();
            link.free(bytes);
            link
        }
        fn free(&self, bytes: usize) {
            *self.0.room.lock().unwrap() = bytes;
            self.0.freed.notify_one();
        }
        /// The first payload byte of each packet taken, in order.
        fn sent(&self) -> Vec<u8> {
            self.0.sent.lock().unwrap().clone()
        }
    }

    impl DatagramLink for Link {
        fn send_buffer_space(&self) -> usize {
            *self.0.room.lock().unwrap()
        }
        fn send_now(&self, pkt: Bytes) -> bool {
            let mut room = self.0.room.lock().unwrap();
            *room = room.saturating_sub(pkt.len());
            self.0.sent.lock().unwrap().push(pkt[0]);
            true
        }
        async fn send_waiting(&self, pkt: Bytes) -> bool {
            while self.send_buffer_space() < pkt.len() {
                self.0.freed.notified().await;
            }
            self.send_now(pkt)
        }
        async fn link_closed(&self) {
            std::future::pending().await
        }
    }

    fn packet(id: u8) -> Bytes {
        Bytes::from(vec![id; 100])
    }

    /// The drops counted for `metrics`' edge. Each test has an edge id of
    /// its own: the recorder is the process's, shared by tests.
    fn drops(metrics: &EdgeMetrics, reason: &str) -> f64 {
        testkit::scrape::metric_in(
            &crate::metrics::prometheus().render(),
            "rtn_edge_media_dropped_total",
            &[("edge", &metrics.edge), ("reason", reason)],
        )
    }

    async fn until_sent(link: &Link, n: usize) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while link.sent().len() < n {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the writer drains the queue");
    }

    fn queue(metrics: &EdgeMetrics, capacity: usize) -> Arc<MediaQueue> {
        let depth =
            metrics::gauge!("rtn_edge_client_queue_packets", "edge" => metrics.edge.clone());
        MediaQueue::new(capacity, "subscriber_queue_full", depth)
    }

    #[tokio::test]
    async fn a_full_link_keeps_only_the_newest_media_and_counts_the_rest() {
        let metrics = EdgeMetrics::new(90_010);
        let q = queue(&metrics, 4);
        // Room for three: they go straight to the link.
        let link = Link::with_room(300);
        for id in 0..3 {
            q.send(&link, packet(id), &metrics);
        }
        assert_eq!(link.sent(), [0, 1, 2]);
        assert!(q.is_empty());
        // No room: ten wait, and only the newest four are kept.
        for id in 3..13 {
            q.send(&link, packet(id), &metrics);
        }
        assert_eq!(q.len(), 4);
        assert_eq!(drops(&metrics, "subscriber_queue_full"), 6.0);
        // Room again: the writer sends what was kept, oldest first.
        tokio::spawn(q.clone().run_writer(link.clone(), metrics.clone()));
        link.free(10_000);
        until_sent(&link, 7).await;
        assert_eq!(link.sent(), [0, 1, 2, 9, 10, 11, 12]);
        // While the writer waits on a full link, later media queues behind
        // it rather than overtaking it.
        link.free(0);
        q.send(&link, packet(13), &metrics);
        q.send(&link, packet(14), &metrics);
        link.free(10_000);
        until_sent(&link, 9).await;
        assert_eq!(&link.sent()[7..], [13, 14]);
        assert_eq!(drops(&metrics, "subscriber_queue_full"), 6.0);
    }

    #[tokio::test]
    async fn media_that_waited_past_its_age_is_dropped_not_sent_late() {
        let metrics = EdgeMetrics::new(90_011);
        let q = queue(&metrics, 64);
        let link = Link::with_room(0);
        for id in 0..5 {
            q.send(&link, packet(id), &metrics);
        }
        // A link stalled past the age limit (std time: the queue stamps
        // packets with `Instant`, which tokio's paused clock does not move).
        std::thread::sleep(MAX_QUEUED_AGE + Duration::from_millis(50));
        q.send(&link, packet(5), &metrics);
        tokio::spawn(q.clone().run_writer(link.clone(), metrics.clone()));
        link.free(10_000);
        until_sent(&link, 1).await;
        assert_eq!(link.sent(), [5], "only the fresh packet is sent");
        assert_eq!(drops(&metrics, "stale"), 5.0);
        assert!(q.is_empty());
    }
}
