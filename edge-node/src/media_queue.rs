//! A bounded media queue in front of one QUIC connection.
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
    pub fn send(&self, conn: &quinn::Connection, pkt: Bytes, metrics: &EdgeMetrics) {
        let mut q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if q.is_empty()
            && !self.writer_busy.load(Ordering::Acquire)
            && conn.datagram_send_buffer_space() >= pkt.len()
        {
            drop(q);
            if conn.send_datagram(pkt).is_err() {
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
    pub async fn run_writer(self: Arc<Self>, conn: quinn::Connection, metrics: EdgeMetrics) {
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
                    let sent = if conn.datagram_send_buffer_space() >= pkt.len() {
                        conn.send_datagram(pkt).map_err(|_| ())
                    } else {
                        conn.send_datagram_wait(pkt).await.map_err(|_| ())
                    };
                    self.writer_busy.store(false, Ordering::Release);
                    if sent.is_err() {
                        return;
                    }
                }
                None => {
                    tokio::select! {
                        _ = self.notify.notified() => {}
                        _ = conn.closed() => return,
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
