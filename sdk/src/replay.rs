//! The sender's replay window: what a sender resends after a reconnect, or to
//! a member that reconnected, so that no message its edge accepted is lost.
//!
//! It keeps the last `window` messages whether acknowledged or not, and every
//! unacknowledged one on top (those are never evicted; the sender is refused
//! new ones past `max_unacked` instead).

use std::collections::VecDeque;

use bytes::Bytes;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub seq: u64,
    pub payload: Bytes,
    pub sent_at_us: u64,
    pub acked: bool,
}

#[derive(Debug)]
pub struct ReplayWindow {
    entries: VecDeque<Sent>,
    window: usize,
    max_unacked: usize,
    next_seq: u64,
}

impl ReplayWindow {
    pub fn new(window: usize, max_unacked: usize) -> Self {
        ReplayWindow {
            entries: VecDeque::new(),
            window,
            max_unacked,
            next_seq: 1,
        }
    }

    pub fn unacked(&self) -> usize {
        self.entries.iter().filter(|e| !e.acked).count()
    }

    /// Record a new message; None when too many are unacknowledged.
    pub fn push(&mut self, payload: Bytes, sent_at_us: u64) -> Option<Sent> {
        if self.unacked() >= self.max_unacked {
            return None;
        }
        let s = Sent {
            seq: self.next_seq,
            payload,
            sent_at_us,
            acked: false,
        };
        self.next_seq += 1;
        self.entries.push_back(s.clone());
        self.trim();
        Some(s)
    }

    /// The edge accepted `seq` (acks may arrive for any seq, in any order).
    pub fn ack(&mut self, seq: u64) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.seq == seq) {
            e.acked = true;
        }
        self.trim();
    }

    /// Everything to resend, in sequence order.
    pub fn replay(&self) -> impl Iterator<Item = &Sent> {
        self.entries.iter()
    }

    fn trim(&mut self) {
        while self.entries.len() > self.window {
            match self.entries.front() {
                Some(e) if e.acked => {
                    self.entries.pop_front();
                }
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_last_n_and_all_unacked() {
        let mut w = ReplayWindow::new(3, 100);
        for i in 0..10 {
            w.push(Bytes::from(vec![i]), 0).unwrap();
        }
        // Nothing acked: all ten kept.
        assert_eq!(w.replay().count(), 10);
        for s in 1..=10 {
            w.ack(s);
        }
        let seqs: Vec<u64> = w.replay().map(|s| s.seq).collect();
        assert_eq!(seqs, vec![8, 9, 10]);
    }

    #[test]
    fn refuses_past_max_unacked() {
        let mut w = ReplayWindow::new(2, 2);
        assert!(w.push(Bytes::new(), 0).is_some());
        assert!(w.push(Bytes::new(), 0).is_some());
        assert!(w.push(Bytes::new(), 0).is_none());
        w.ack(1);
        assert_eq!(w.push(Bytes::new(), 0).map(|s| s.seq), Some(3));
    }
}
