//! The sender's replay window: what a sender resends after a reconnect, or to
//! a member that (re)appeared, so that no message its edge accepted is lost.
//!
//! Per channel, sequence numbers start at 1 and grow by 1 per message the
//! edge accepts. The window keeps the last `window` messages whether
//! acknowledged or not, plus every unacknowledged one: those are never
//! evicted (the caller limits how many may be outstanding; see
//! `Channel::send_message`).
//!
//! The edge acks each message it accepts and refuses the others (an `Error`
//! in the ack's place), answering a connection's frames in order: so an ack
//! of `seq` also says that every earlier message sent on that connection was
//! answered, and the window takes it as covering everything below (refused
//! messages were removed when their refusal came).
//!
//! A refused seq is not used up (docs/protocol.md §8): no receiver got it,
//! and the edge refuses every later message until that seq is filled, so
//! the next new message takes it. Except for a message first sent on an
//! earlier connection: that edge may have accepted and forwarded it before
//! it went, so its seq stays used.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub seq: u64,
    pub payload: Bytes,
    pub sent_at_us: u64,
}

#[derive(Debug)]
pub struct ReplayWindow {
    entries: BTreeMap<u64, Sent>,
    window: usize,
    /// Every seq up to this one is acknowledged (or was refused).
    acked_upto: u64,
    unacked: usize,
    last_seq: u64,
    /// Refused seqs no edge accepted, above `acked_upto`: reused by the next
    /// messages once nothing numbered after them is left.
    free: BTreeSet<u64>,
    /// Seqs up to this one were sent on a connection that is gone, which
    /// may have accepted them.
    sent_on_lost_link: u64,
}

impl ReplayWindow {
    pub fn new(window: usize) -> Self {
        ReplayWindow {
            entries: BTreeMap::new(),
            window,
            acked_upto: 0,
            unacked: 0,
            last_seq: 0,
            free: BTreeSet::new(),
            sent_on_lost_link: 0,
        }
    }

    /// Messages not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.unacked
    }

    /// The sequence number of the last message pushed and not given back by
    /// a refusal (0 before the first): the next message gets the one after.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Record a new message and give it the next sequence number.
    pub fn push(&mut self, payload: Bytes, sent_at_us: u64) -> Sent {
        self.last_seq += 1;
        let s = Sent {
            seq: self.last_seq,
            payload,
            sent_at_us,
        };
        self.entries.insert(s.seq, s.clone());
        self.unacked += 1;
        self.evict();
        s
    }

    /// The edge accepted `seq`, and so answered every message before it.
    /// Returns how many were newly acknowledged. Acks for messages never
    /// sent are ignored.
    pub fn ack(&mut self, seq: u64) -> usize {
        let seq = seq.min(self.last_seq);
        if seq <= self.acked_upto {
            return 0;
        }
        let newly = self.entries.range(self.acked_upto + 1..=seq).count();
        self.unacked -= newly;
        self.acked_upto = seq;
        // A refused seq below an accepted one is a gap for good.
        self.free = self.free.split_off(&(seq + 1));
        self.evict();
        newly
    }

    /// The edge refused `seq` for good: forget it (it is never replayed).
    /// Returns whether it was an unacknowledged message of the window.
    /// (A refusal of an already acknowledged message, e.g. of a replay to
    /// one member, changes nothing.) If no edge can have accepted it and no
    /// message after it is left, its seq goes to the next message (see
    /// [`ReplayWindow::last_seq`]).
    pub fn refuse(&mut self, seq: u64) -> bool {
        if seq <= self.acked_upto || self.entries.remove(&seq).is_none() {
            return false;
        }
        self.unacked -= 1;
        if seq > self.sent_on_lost_link {
            self.free.insert(seq);
            while self.free.remove(&self.last_seq) {
                self.last_seq -= 1;
            }
        }
        true
    }

    /// The connection the unacknowledged messages were sent on is gone: its
    /// edge may have accepted any of them, so a later refusal (by the next
    /// edge) no longer frees their seqs.
    pub fn link_lost(&mut self) {
        self.sent_on_lost_link = self.last_seq;
        self.free.clear();
    }

    /// Everything to resend, in sequence order.
    pub fn replay(&self) -> impl Iterator<Item = &Sent> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drop acknowledged messages older than the last `window`.
    fn evict(&mut self) {
        let keep_from = self.last_seq.saturating_sub(self.window as u64) + 1;
        let limit = keep_from.min(self.acked_upto + 1);
        while let Some(entry) = self.entries.first_entry() {
            if *entry.key() >= limit {
                break;
            }
            entry.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(w: &ReplayWindow) -> Vec<u64> {
        w.replay().map(|s| s.seq).collect()
    }

    fn push(w: &mut ReplayWindow, n: usize) {
        for i in 0..n {
            w.push(Bytes::from(vec![i as u8]), i as u64);
        }
    }

    #[test]
    fn sequence_starts_at_one_and_grows_by_one() {
        let mut w = ReplayWindow::new(4);
        let got: Vec<u64> = (0..5).map(|_| w.push(Bytes::new(), 0).seq).collect();
        assert_eq!(got, vec![1, 2, 3, 4, 5]);
        assert_eq!(w.last_seq(), 5);
    }

    #[test]
    fn keeps_last_n_and_every_unacked() {
        let mut w = ReplayWindow::new(3);
        push(&mut w, 10);
        // Nothing acked: all ten kept.
        assert_eq!(seqs(&w), (1..=10).collect::<Vec<_>>());
        assert_eq!(w.unacked(), 10);
        assert_eq!(w.ack(6), 6);
        // 1..=6 acked, but 7..=10 are unacked: the window holds 7..=10.
        assert_eq!(seqs(&w), vec![7, 8, 9, 10]);
        assert_eq!(w.ack(10), 4);
        assert_eq!(seqs(&w), vec![8, 9, 10]);
        assert_eq!(w.unacked(), 0);
        push(&mut w, 2);
        assert_eq!(seqs(&w), vec![10, 11, 12]);
    }

    #[test]
    fn acked_messages_stay_for_the_window() {
        let mut w = ReplayWindow::new(5);
        push(&mut w, 3);
        w.ack(3);
        assert_eq!(seqs(&w), vec![1, 2, 3]);
        assert_eq!(w.unacked(), 0);
    }

    #[test]
    fn an_ack_covers_every_earlier_message_idempotent_and_bounded() {
        let mut w = ReplayWindow::new(100);
        push(&mut w, 5);
        assert_eq!(w.ack(2), 2);
        assert_eq!(w.ack(2), 0);
        assert_eq!(w.ack(1), 0);
        // An ack past the last message (a confused edge) acks only what exists.
        assert_eq!(w.ack(1_000), 3);
        assert_eq!(w.unacked(), 0);
        let s = w.push(Bytes::new(), 0);
        assert_eq!(s.seq, 6);
        assert_eq!(w.unacked(), 1);
    }

    #[test]
    fn refused_messages_are_forgotten() {
        let mut w = ReplayWindow::new(100);
        push(&mut w, 4);
        assert!(w.refuse(3));
        assert!(!w.refuse(3));
        assert_eq!(w.unacked(), 3);
        assert_eq!(seqs(&w), vec![1, 2, 4]);
        // A later ack settles everything before it, the hole uncounted.
        assert_eq!(w.ack(4), 3);
        assert_eq!(w.unacked(), 0);
        assert!(!w.refuse(1), "already acknowledged");
        assert_eq!(seqs(&w), vec![1, 2, 4]);
    }

    #[test]
    fn a_refused_last_seq_goes_to_the_next_message() {
        let mut w = ReplayWindow::new(100);
        push(&mut w, 4);
        w.ack(2);
        // 3 refused while 4 is still in flight: 4 may yet be accepted.
        assert!(w.refuse(3));
        assert_eq!(w.last_seq(), 4);
        // 4 refused too (the edge refuses what follows a refused seq): both
        // seqs are free again.
        assert!(w.refuse(4));
        assert_eq!(w.last_seq(), 2);
        assert_eq!(w.unacked(), 0);
        assert_eq!(w.push(Bytes::from_static(b"again"), 9).seq, 3);
        assert_eq!(w.push(Bytes::new(), 9).seq, 4);
        assert_eq!(seqs(&w), vec![1, 2, 3, 4]);
        assert_eq!(w.ack(4), 2);
        assert_eq!(w.unacked(), 0);
    }

    #[test]
    fn a_refused_seq_before_an_accepted_one_stays_used() {
        let mut w = ReplayWindow::new(100);
        push(&mut w, 3);
        assert!(w.refuse(2));
        assert_eq!(w.ack(3), 2);
        assert!(!w.refuse(3), "already acknowledged");
        assert_eq!(w.push(Bytes::new(), 0).seq, 4);
    }

    #[test]
    fn a_message_sent_on_a_lost_link_keeps_its_seq_when_refused() {
        let mut w = ReplayWindow::new(100);
        push(&mut w, 3);
        w.ack(1);
        w.link_lost();
        // Replayed on the next link and refused there: the first edge may
        // have forwarded 2 and 3, so receivers may hold them.
        assert!(w.refuse(3));
        assert!(w.refuse(2));
        assert_eq!(w.last_seq(), 3);
        // Messages first sent on the new link free their seqs as usual.
        let s = w.push(Bytes::new(), 0);
        assert_eq!(s.seq, 4);
        assert!(w.refuse(4));
        assert_eq!(w.push(Bytes::new(), 0).seq, 4);
    }

    #[test]
    fn replay_is_in_sequence_order() {
        let mut w = ReplayWindow::new(2);
        push(&mut w, 300);
        w.ack(150);
        let s = seqs(&w);
        assert_eq!(s.first(), Some(&151));
        assert!(s.windows(2).all(|p| p[1] == p[0] + 1));
        assert_eq!(s.len(), 150);
    }
}
