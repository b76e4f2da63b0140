//! The receiver's per-sender reorder buffer: delivers one sender's messages
//! in sequence order, each once, across reconnects and replays.
//!
//! - The sequence opens at the first message that may open it ([`Opening`]):
//!   seq 1, a replay addressed to this receiver (the sender's window, sent
//!   when it heard of this member), or any message from a sender that will
//!   not replay to it. Live messages above seq 1 that come first wait for
//!   that replay: a sender's edge may start forwarding to this receiver's
//!   edge a moment before the sender hears of the new member and replays
//!   what it sent before, and opening at the first live message would drop
//!   that replay as duplicates. If no replay comes within `timeout`, the
//!   sequence opens at the lowest message held.
//! - A message below the next expected seq, or already held, is a duplicate
//!   (dropped, counted).
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

/// Whether a message may open its sender's sequence at this receiver (see
/// the module doc). Seq 1 always may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// Live traffic to the channel: a replay of earlier messages may follow.
    Live,
    /// The sender's replay to this receiver, or a sender that will not
    /// replay to it (a hidden member of a large channel).
    Opens,
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

    pub fn offer(&mut self, m: Incoming, opening: Opening, now: Instant) -> Outcome {
        let mut out = Outcome::default();
        if self.next.is_none() && (opening == Opening::Opens || m.seq == 1) {
            let lowest_held = self.held.keys().next().copied();
            self.next = Some(lowest_held.map_or(m.seq, |held| held.min(m.seq)));
        }
        if self.next.is_some_and(|next| m.seq < next) || self.held.contains_key(&m.seq) {
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

    /// Jump over the first gap and deliver what follows it. Before the
    /// sequence opened, open it at the lowest message held (how many came
    /// before it is unknown: nothing is counted as skipped).
    fn skip_gap(&mut self, out: &mut Outcome) {
        let Some(&first) = self.held.keys().next() else {
            return;
        };
        out.skipped += self.next.map_or(0, |next| first.saturating_sub(next));
        self.next = Some(first);
        self.drain(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Opening::{Live, Opens};

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
    fn an_opening_message_sets_the_start_and_duplicates_drop() {
        let mut r = ReorderBuffer::new(16, ms(2_000));
        let t = Instant::now();
        assert_eq!(r.next_expected(), None);
        assert_eq!(seqs(&r.offer(m(5), Opens, t)), vec![5]);
        assert_eq!(seqs(&r.offer(m(6), Opens, t)), vec![6]);
        assert!(r.offer(m(5), Opens, t).duplicate);
        assert!(r.offer(m(3), Opens, t).duplicate);
        assert_eq!(r.next_expected(), Some(7));
    }

    #[test]
    fn gaps_wait_then_fill_in_order() {
        let mut r = ReorderBuffer::new(16, ms(2_000));
        let t = Instant::now();
        r.offer(m(1), Opens, t);
        assert!(r.offer(m(3), Opens, t).deliver.is_empty());
        assert!(r.offer(m(4), Opens, t).deliver.is_empty());
        assert!(r.offer(m(3), Opens, t).duplicate, "already held");
        assert_eq!(seqs(&r.offer(m(2), Opens, t)), vec![2, 3, 4]);
        assert!(r.offer(m(3), Opens, t).duplicate);
        assert_eq!(r.held(), 0);
        assert_eq!(r.deadline(), None);
    }

    #[test]
    fn unfilled_gaps_are_skipped_after_the_timeout() {
        let mut r = ReorderBuffer::new(16, ms(100));
        let t = Instant::now();
        r.offer(m(1), Opens, t);
        r.offer(m(4), Opens, t);
        assert_eq!(r.deadline(), Some(t + ms(100)));
        assert!(r.poll(t + ms(50)).deliver.is_empty());
        let o = r.poll(t + ms(150));
        assert_eq!((seqs(&o), o.skipped), (vec![4], 2));
        // A late 2 or 3 is now a duplicate.
        assert!(r.offer(m(2), Opens, t + ms(160)).duplicate);
    }

    #[test]
    fn each_gap_times_out_from_the_first_message_after_it() {
        let mut r = ReorderBuffer::new(16, ms(100));
        let t = Instant::now();
        r.offer(m(1), Opens, t);
        r.offer(m(3), Opens, t); // gap {2} since t
        r.offer(m(6), Opens, t + ms(80)); // gap {4,5} since t+80
        let o = r.poll(t + ms(100));
        assert_eq!((seqs(&o), o.skipped), (vec![3], 1));
        // 4 may still come: its gap waits until t+180.
        assert!(r.poll(t + ms(150)).deliver.is_empty());
        assert_eq!(seqs(&r.offer(m(4), Opens, t + ms(160))), vec![4]);
        let o = r.poll(t + ms(180));
        assert_eq!((seqs(&o), o.skipped), (vec![6], 1));
    }

    #[test]
    fn a_late_message_proves_older_gaps() {
        // 9 arrives first, then 3: gap {2} has been known since 9 arrived.
        let mut r = ReorderBuffer::new(16, ms(100));
        let t = Instant::now();
        r.offer(m(1), Opens, t);
        r.offer(m(9), Opens, t);
        r.offer(m(3), Opens, t + ms(90));
        let o = r.poll(t + ms(100));
        assert_eq!(seqs(&o), vec![3, 9]);
        assert_eq!(o.skipped, 1 + 5);
    }

    #[test]
    fn too_many_held_skips_the_oldest_gap_at_once() {
        let mut r = ReorderBuffer::new(3, ms(10_000));
        let t = Instant::now();
        r.offer(m(1), Opens, t);
        for s in [3, 4, 5] {
            assert!(r.offer(m(s), Opens, t).deliver.is_empty());
        }
        let o = r.offer(m(7), Opens, t);
        assert_eq!((seqs(&o), o.skipped), (vec![3, 4, 5], 1));
        assert_eq!(r.held(), 1);
        assert_eq!(r.next_expected(), Some(6));
    }

    #[test]
    fn offers_past_the_deadline_expire_the_gap_too() {
        let mut r = ReorderBuffer::new(16, ms(100));
        let t = Instant::now();
        r.offer(m(1), Opens, t);
        r.offer(m(3), Opens, t);
        let o = r.offer(m(4), Opens, t + ms(200));
        assert_eq!((seqs(&o), o.skipped), (vec![3, 4], 1));
    }
    #[test]
    fn live_messages_above_one_wait_for_the_replay_that_opens_the_sequence() {
        // The sender's edge started forwarding at 3; the sender's replay of
        // its window (1..=4) to this new member comes after.
        let mut r = ReorderBuffer::new(16, ms(1_000));
        let t = Instant::now();
        assert!(r.offer(m(3), Live, t).deliver.is_empty());
        assert!(r.offer(m(4), Live, t).deliver.is_empty());
        assert_eq!(r.next_expected(), None);
        assert!(r.offer(m(3), Live, t).duplicate, "already held");
        assert_eq!(seqs(&r.offer(m(1), Opens, t + ms(20))), vec![1]);
        assert_eq!(seqs(&r.offer(m(2), Opens, t + ms(20))), vec![2, 3, 4]);
        assert!(r.offer(m(3), Opens, t + ms(20)).duplicate);
        assert!(r.offer(m(4), Opens, t + ms(20)).duplicate);
        assert_eq!(seqs(&r.offer(m(5), Live, t + ms(30))), vec![5]);
    }

    #[test]
    fn seq_one_opens_live_traffic() {
        let mut r = ReorderBuffer::new(16, ms(1_000));
        let t = Instant::now();
        assert!(r.offer(m(2), Live, t).deliver.is_empty());
        assert_eq!(seqs(&r.offer(m(1), Live, t)), vec![1, 2]);
    }

    #[test]
    fn without_a_replay_the_sequence_opens_at_the_lowest_held_after_the_timeout() {
        let mut r = ReorderBuffer::new(16, ms(100));
        let t = Instant::now();
        r.offer(m(6), Live, t + ms(10));
        r.offer(m(5), Live, t + ms(20));
        assert_eq!(r.deadline(), Some(t + ms(110)));
        assert!(r.poll(t + ms(100)).deliver.is_empty());
        let o = r.poll(t + ms(110));
        // Where the sender started is unknown: nothing counted as skipped.
        assert_eq!((seqs(&o), o.skipped), (vec![5, 6], 0));
        assert!(r.offer(m(4), Opens, t + ms(120)).duplicate);
    }

    #[test]
    fn a_replay_starting_above_held_live_messages_opens_at_the_lowest() {
        let mut r = ReorderBuffer::new(16, ms(1_000));
        let t = Instant::now();
        r.offer(m(3), Live, t);
        let o = r.offer(m(5), Opens, t);
        assert_eq!(seqs(&o), vec![3]);
        assert_eq!(r.next_expected(), Some(4));
        assert_eq!(seqs(&r.offer(m(4), Live, t)), vec![4, 5]);
    }

    #[test]
    fn too_many_held_before_opening_opens_at_the_lowest() {
        let mut r = ReorderBuffer::new(2, ms(10_000));
        let t = Instant::now();
        r.offer(m(7), Live, t);
        r.offer(m(8), Live, t);
        let o = r.offer(m(10), Live, t);
        assert_eq!((seqs(&o), o.skipped), (vec![7, 8], 0));
        assert_eq!(r.next_expected(), Some(9));
    }
}
