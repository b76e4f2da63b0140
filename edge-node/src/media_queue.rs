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
