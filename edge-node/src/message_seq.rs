//! One session's message sequence numbers as its edge sees them, so that a
//! refused message never leaves a gap in what receivers get.
//!
//! Receivers deliver a sender's messages in `seq` order and hold everything
//! after a missing seq for their reorder timeout (2 s in the SDK), waiting
//! for a replay. A refused message is never delivered nor replayed, so if
//! the edge forwarded the sender's next messages, every receiver would wait
//! out the timeout. Instead a refused new seq stays free (docs/protocol.md
//! §8): the edge refuses every later message above it with `BAD_SEQUENCE`
//! until one with that seq is accepted, and the sender gives the refused
//! seq to its next new message.

/// Per session and channel.
#[derive(Debug, Default)]
pub struct SenderSeq {
    /// Highest seq accepted so far (0: none yet).
    highest: u64,
    /// The lowest refused seq above `highest`: the one the sender must
    /// send (and have accepted) next.
    free: Option<u64>,
}

impl SenderSeq {
    /// Whether a message with `seq` may go out now; `Err` with the free
    /// seq the sender must fill first.
    pub fn check(&self, seq: u64) -> Result<(), u64> {
        match self.free {
            Some(free) if seq > free => Err(free),
            _ => Ok(()),
        }
    }

    /// The message `seq` was accepted and forwarded.
    pub fn accepted(&mut self, seq: u64) {
        self.highest = self.highest.max(seq);
        if self.free.is_some_and(|free| seq >= free) {
            self.free = None;
        }
    }

    /// The message `seq` was refused for its content. A seq above every
    /// accepted one is new (not a replay receivers may already hold): it
    /// stays free. Seq 0 is never a valid one.
    pub fn refused(&mut self, seq: u64) {
        if seq > self.highest {
            self.free = Some(self.free.map_or(seq, |free| free.min(seq)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_new_seq_must_be_filled_before_later_ones() {
        let mut s = SenderSeq::default();
        assert_eq!(s.check(1), Ok(()));
        s.accepted(1);
        s.refused(2);
        assert_eq!(s.check(3), Err(2), "3 would leave 2 missing");
        assert_eq!(s.check(4), Err(2));
        // Replays of what receivers may hold still go out.
        assert_eq!(s.check(1), Ok(()));
        // The sender reuses 2 for its next message.
        assert_eq!(s.check(2), Ok(()));
        s.accepted(2);
        assert_eq!(s.check(3), Ok(()));
    }

    #[test]
    fn refused_replays_and_seq_zero_leave_no_gap() {
        let mut s = SenderSeq::default();
        for seq in 1..=5 {
            s.accepted(seq);
        }
        // A replay (to one member) refused for its content: receivers that
        // got the original still have it; nothing to hold back.
        s.refused(3);
        s.refused(0);
        assert_eq!(s.check(6), Ok(()));
    }

    #[test]
    fn the_lowest_refused_seq_is_the_one_to_fill() {
        let mut s = SenderSeq::default();
        s.accepted(7);
        s.refused(9);
        s.refused(8);
        assert_eq!(s.check(9), Err(8));
        s.accepted(8);
        assert_eq!(s.check(9), Ok(()));
        // A session whose first message is refused: the sender resumes
        // there (receivers have not seen it either).
        let mut fresh = SenderSeq::default();
        fresh.refused(40);
        assert_eq!(fresh.check(41), Err(40));
        assert_eq!(fresh.check(40), Ok(()));
    }
}
