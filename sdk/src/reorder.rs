//! The receiver's per-sender reorder buffer: delivers a sender's messages in
//! sequence order exactly once, across reconnects and replays.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub seq: u64,
    pub payload: Bytes,
    pub sent_at_us: u64,
}

/// What happened to one offered message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub deliver: Vec<Incoming>,
    pub duplicate: bool,
    /// Messages given up on (gap not filled in time).
    pub skipped: u64,
}

#[derive(Debug)]
pub struct ReorderBuffer {
    next: Option<u64>,
    held: BTreeMap<u64, Incoming>,
    gap_since: Option<Instant>,
    max_held: usize,
    timeout: Duration,
}

impl ReorderBuffer {
    pub fn new(max_held: usize, timeout: Duration) -> Self {
        ReorderBuffer {
            next: None,
            held: BTreeMap::new(),
            gap_since: None,
            max_held,
            timeout,
        }
    }

    pub fn offer(&mut self, m: Incoming, now: Instant) -> Outcome {
        let mut out = Outcome::default();
        let next = *self.next.get_or_insert(m.seq);
        if m.seq < next || self.held.contains_key(&m.seq) {
            out.duplicate = true;
            return out;
        }
        self.held.insert(m.seq, m);
        self.drain(&mut out);
        if !self.held.is_empty() {
            let since = *self.gap_since.get_or_insert(now);
            if now.duration_since(since) >= self.timeout || self.held.len() > self.max_held {
                self.skip_gap(&mut out);
            }
        }
        out
    }

    /// Give up on a gap that has waited too long (call periodically).
    pub fn poll(&mut self, now: Instant) -> Outcome {
        let mut out = Outcome::default();
        if let Some(since) = self.gap_since {
            if now.duration_since(since) >= self.timeout {
                self.skip_gap(&mut out);
            }
        }
        out
    }

    fn drain(&mut self, out: &mut Outcome) {
        let Some(mut next) = self.next else { return };
        while let Some(m) = self.held.remove(&next) {
            out.deliver.push(m);
            next += 1;
        }
        self.next = Some(next);
        if self.held.is_empty() {
            self.gap_since = None;
        }
    }

    fn skip_gap(&mut self, out: &mut Outcome) {
        if let (Some(next), Some((&first, _))) = (self.next, self.held.iter().next()) {
            out.skipped += first - next;
            self.next = Some(first);
            self.gap_since = None;
            self.drain(out);
            if !self.held.is_empty() {
                self.gap_since = Some(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(seq: u64) -> Incoming {
        Incoming {
            seq,
            payload: Bytes::new(),
            sent_at_us: 0,
        }
    }

    fn seqs(o: &Outcome) -> Vec<u64> {
        o.deliver.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn in_order_and_duplicates() {
        let mut r = ReorderBuffer::new(16, Duration::from_secs(2));
        let t = Instant::now();
        assert_eq!(seqs(&r.offer(m(5), t)), vec![5]);
        assert_eq!(seqs(&r.offer(m(6), t)), vec![6]);
        assert!(r.offer(m(5), t).duplicate);
        assert!(r.offer(m(3), t).duplicate);
    }

    #[test]
    fn gaps_wait_then_fill() {
        let mut r = ReorderBuffer::new(16, Duration::from_secs(2));
        let t = Instant::now();
        r.offer(m(1), t);
        assert!(r.offer(m(3), t).deliver.is_empty());
        assert!(r.offer(m(4), t).deliver.is_empty());
        assert_eq!(seqs(&r.offer(m(2), t)), vec![2, 3, 4]);
        assert!(r.offer(m(3), t).duplicate);
    }

    #[test]
    fn unfilled_gaps_are_skipped_after_the_timeout() {
        let mut r = ReorderBuffer::new(16, Duration::from_millis(100));
        let t = Instant::now();
        r.offer(m(1), t);
        r.offer(m(4), t);
        assert!(r.poll(t + Duration::from_millis(50)).deliver.is_empty());
        let o = r.poll(t + Duration::from_millis(150));
        assert_eq!((seqs(&o), o.skipped), (vec![4], 2));
    }
}
