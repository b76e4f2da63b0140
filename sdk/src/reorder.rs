//! The receiver's per-sender reorder buffer: delivers one sender's messages
//! in sequence order, each once, across reconnects and replays.
//!
//! - The first message ever seen from a sender sets the next expected seq.
//! - A message below it, or already held, is a duplicate (dropped, counted).
//! - A message above it waits (at most `max_held` per sender) for the gap to
//!   fill. A gap is given up (its messages counted as skipped) once a message
//!   after it has waited `timeout`: every held message proves that all the
//!   missing ones below it were missing since it arrived. Giving up on one gap
//!   delivers what follows it, up to the next gap.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub seq: u64,
    pub payload: Bytes,
    pub sent_at_us: u64,
}

/// What an offer or a poll produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Ready for the app, in order.
    pub deliver: Vec<Incoming>,
    pub duplicate: bool,
    /// Messages given up on (gap not filled in time, or too many held).
    pub skipped: u64,
}

#[derive(Debug)]
pub struct ReorderBuffer {
    next: Option<u64>,
    held: BTreeMap<u64, (Incoming, Instant)>,
    max_held: usize,
    timeout: Duration,
}

impl ReorderBuffer {
    pub fn new(max_held: usize, timeout: Duration) -> Self {
        ReorderBuffer {
            next: None,
            held: BTreeMap::new(),
            max_held: max_held.max(1),
            timeout,
        }
    }

    /// The seq expected next (None before the first message).
    pub fn next_expected(&self) -> Option<u64> {
        self.next
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    pub fn offer(&mut self, m: Incoming, now: Instant) -> Outcome {
        let mut out = Outcome::default();
        let next = *self.next.get_or_insert(m.seq);
        if m.seq < next || self.held.contains_key(&m.seq) {
            out.duplicate = true;
            return out;
        }
        self.held.insert(m.seq, (m, now));
        self.drain(&mut out);
        while self.held.len() > self.max_held {
            self.skip_gap(&mut out);
        }
        self.expire(now, &mut out);
        out
    }

    /// Give up on gaps that waited too long (call periodically).
    pub fn poll(&mut self, now: Instant) -> Outcome {
        let mut out = Outcome::default();
        self.expire(now, &mut out);
        out
    }

    /// When the oldest waiting gap times out, if any gap is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.held
            .values()
            .map(|(_, at)| *at)
            .min()
            .map(|at| at + self.timeout)
    }

    fn expire(&mut self, now: Instant, out: &mut Outcome) {
        while let Some(deadline) = self.deadline() {
            if now < deadline {
                break;
            }
            self.skip_gap(out);
        }
    }

    fn drain(&mut self, out: &mut Outcome) {
        let Some(mut next) = self.next else { return };
        while let Some((m, _)) = self.held.remove(&next) {
            out.deliver.push(m);
            next += 1;
        }
        self.next = Some(next);
    }

    /// Jump over the first gap and deliver what follows it.
    fn skip_gap(&mut self, out: &mut Outcome) {
        let (Some(next), Some(&first)) = (self.next, self.held.keys().next()) else {
            return;
        };
        out.skipped += first.saturating_sub(next);
        self.next = Some(first);
        self.drain(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(seq: u64) -> Incoming {
        Incoming {
            seq,
            payload: Bytes::from(seq.to_string()),
            sent_at_us: 0,
        }
    }

    fn seqs(o: &Outcome) -> Vec<u64> {
        o.deliver.iter().map(|m| m.seq).collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn first_message_sets_the_start_and_duplicates_drop() {
        let mut r = ReorderBuffer::new(16, ms(2_000));
        let t = Instant::now();
        assert_eq!(r.next_expected(), None);
        assert_eq!(seqs(&r.offer(m(5), t)), vec![5]);
        assert_eq!(seqs(&r.offer(m(6), t)), vec![6]);
        assert!(r.offer(m(5), t).duplicate);
        assert!(r.offer(m(3), t).duplicate);
        assert_eq!(r.next_expected(), Some(7));
    }

    #[test]
    fn gaps_wait_then_fill_in_order() {
        let mut r = ReorderBuffer::new(16, ms(2_000));
        let t = Instant::now();
        r.offer(m(1), t);
        assert!(r.offer(m(3), t).deliver.is_empty());
        assert!(r.offer(m(4), t).deliver.is_empty());
        assert!(r.offer(m(3), t).duplicate, "already held");
        assert_eq!(seqs(&r.offer(m(2), t)), vec![2, 3, 4]);
        assert!(r.offer(m(3), t).duplicate);
        assert_eq!(r.held(), 0);
        assert_eq!(r.deadline(), None);
    }

    #[test]
    fn unfilled_gaps_are_skipped_after_the_timeout() {
        let mut r = ReorderBuffer::new(16, ms(100));
        let t = Instant::now();
        r.offer(m(1), t);
        r.offer(m(4), t);
        assert_eq!(r.deadline(), Some(t + ms(100)));
        assert!(r.poll(t + ms(50)).deliver.is_empty());
        let o = r.poll(t + ms(150));
        assert_eq!((seqs(&o), o.skipped), (vec![4], 2));
        // A late 2 or 3 is now a duplicate.
        assert!(r.offer(m(2), t + ms(160)).duplicate);
    }

    #[test]
    fn each_gap_times_out_from_the_first_message_after_it() {
        let mut r = ReorderBuffer::new(16, ms(100));
        let t = Instant::now();
        r.offer(m(1), t);
        r.offer(m(3), t); // gap {2} since t
        r.offer(m(6), t + ms(80)); // gap {4,5} since t+80
        let o = r.poll(t + ms(100));
        assert_eq!((seqs(&o), o.skipped), (vec![3], 1));
        // 4 may still come: its gap waits until t+180.
        assert!(r.poll(t + ms(150)).deliver.is_empty());
        assert_eq!(seqs(&r.offer(m(4), t + ms(160))), vec![4]);
        let o = r.poll(t + ms(180));
        assert_eq!((seqs(&o), o.skipped), (vec![6], 1));
    }

    #[test]
    fn a_late_message_proves_older_gaps() {
        // 9 arrives first, then 3: gap {2} has been known since 9 arrived.
        let mut r = ReorderBuffer::new(16, ms(100));
        let t = Instant::now();
        r.offer(m(1), t);
        r.offer(m(9), t);
        r.offer(m(3), t + ms(90));
        let o = r.poll(t + ms(100));
        assert_eq!(seqs(&o), vec![3, 9]);
        assert_eq!(o.skipped, 1 + 5);
    }

    #[test]
    fn too_many_held_skips_the_oldest_gap_at_once() {
        let mut r = ReorderBuffer::new(3, ms(10_000));
        let t = Instant::now();
        r.offer(m(1), t);
        for s in [3, 4, 5] {
            assert!(r.offer(m(s), t).deliver.is_empty());
        }
        let o = r.offer(m(7), t);
        assert_eq!((seqs(&o), o.skipped), (vec![3, 4, 5], 1));
        assert_eq!(r.held(), 1);
        assert_eq!(r.next_expected(), Some(6));
    }

    #[test]
    fn offers_past_the_deadline_expire_the_gap_too() {
        let mut r = ReorderBuffer::new(16, ms(100));
        let t = Instant::now();
        r.offer(m(1), t);
        r.offer(m(3), t);
        let o = r.offer(m(4), t + ms(200));
        assert_eq!((seqs(&o), o.skipped), (vec![3, 4], 1));
    }
}
