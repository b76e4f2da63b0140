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
//!
//! Under load most packets take the queue (quinn's buffer is kept small on
//! purpose, see `edge.rs`), so the writer takes them out in batches, one
//! lock for many, and hands each to quinn with a single call.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::metrics::EdgeMetrics;

/// Media waiting longer than this is too late to play: interactive calls
/// want under 150 ms one way (ITU-T G.114), and a receiver's jitter buffer
/// gives up well before half a second.
pub const MAX_QUEUED_AGE: Duration = Duration::from_millis(500);

/// Packets the writer takes out of the queue at once: one lock and one
/// clock read for many packets, while a stalled link holds back at most
/// this many from the queue's drop-oldest (their age is checked again
/// after any wait).
const WRITER_BATCH: usize = 64;

/// Hand `pkt` to quinn if its send buffer has room, in one call (one lock
/// of the connection): `Ok(Err(pkt))` gives the packet back when it has
/// not, `Err(())` when the connection is closed.
fn try_send(conn: &quinn::Connection, pkt: Bytes) -> Result<Result<(), Bytes>, ()> {
    // The first poll of `send_datagram_wait` either takes the packet or
    // finds the buffer full; it is never polled again, so the waker is
    // never used.
    let mut send = std::pin::pin!(conn.send_datagram_wait(pkt.clone()));
    match send.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => Ok(Ok(())),
        Poll::Ready(Err(_)) => Err(()),
        Poll::Pending => Ok(Err(pkt)),
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
    pub fn send(&self, conn: &quinn::Connection, pkt: Bytes, metrics: &EdgeMetrics) {
        let mut q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let pkt = if q.is_empty() && !self.writer_busy.load(Ordering::Acquire) {
            drop(q);
            match try_send(conn, pkt) {
                Ok(Ok(())) => return,
                Err(()) => {
                    metrics.media_dropped("connection_closed");
                    return;
                }
                Ok(Err(pkt)) => {
                    q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                    pkt
                }
            }
        } else {
            pkt
        };
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
        let mut batch = Vec::with_capacity(WRITER_BATCH);
        loop {
            {
                let mut q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                let n = q.len().min(WRITER_BATCH);
                if n > 0 {
                    self.writer_busy.store(true, Ordering::Release);
                    batch.extend(q.drain(..n));
                }
            }
            if batch.is_empty() {
                tokio::select! {
                    _ = self.notify.notified() => {}
                    _ = conn.closed() => return,
                }
                continue;
            }
            self.depth.decrement(batch.len() as f64);
            let mut now = Instant::now();
            for (at, pkt) in batch.drain(..) {
                if now.saturating_duration_since(at) > MAX_QUEUED_AGE {
                    metrics.media_dropped("stale");
                    continue;
                }
                // Everything quinn has room for goes without awaiting; wait
                // (backpressure) only when it is full, then re-read the
                // clock for the age of the rest.
                let sent = match try_send(&conn, pkt) {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(pkt)) => {
                        let sent = conn.send_datagram_wait(pkt).await.map_err(|_| ());
                        now = Instant::now();
                        sent
                    }
                    Err(()) => Err(()),
                };
                if sent.is_err() {
                    return;
                }
            }
            self.writer_busy.store(false, Ordering::Release);
        }
    }
}

impl Drop for MediaQueue {
    fn drop(&mut self) {
        let left = self.inner.get_mut().map(|q| q.len()).unwrap_or(0);
        self.depth.decrement(left as f64);
    }
}
