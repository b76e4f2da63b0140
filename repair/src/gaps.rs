//! The receiving end of a hop: one track's sequence as it arrives, the
//! packets missing from it, and when each is due a NACK.
//!
//! Sequences are 32-bit and wrap; they are extended to 64 bits against the
//! highest seen (as RTP receivers do), so a wrap is just the next packet.
//!
//! Policy, as named constants with their reasons (see [`GapTracker::due`]):
//! a gap is asked for after [`REORDER_GRACE`], again after
//! [`retry_after`] a round trip, at most [`MAX_NACKS`] times, never when the
//! answer could not arrive before the kind's [`crate::deadline`], and
//! forgotten at that deadline.
//!
//! A gap's deadline runs from when its packet was sent, which the receiver
//! does not know: the packets of a gap are taken as sent evenly between
//! the arrivals on either side of it. So a track that falls silent on a hop
//! and comes back (its route tree moved away and back, a viewer behind the
//! hop left and joined again) is asked only for what a sender can still
//! answer, not for everything numbered in the silence (measured in the lab
//! on the 60-edge world: viewers coming and going every ten seconds made
//! each return ask for about 300 video packets four times, every one
//! refused by a sender that never had them).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use protocol::MediaKind;

/// A packet a few milliseconds behind its successor was reordered, not
/// lost: the first NACK waits this long. Short, because every millisecond
/// here is added to every repair; the paths RTN runs on rarely reorder, and
/// a spurious NACK costs one duplicate packet, which the receiver drops.
pub const REORDER_GRACE: Duration = Duration::from_millis(5);
/// Ask for one packet at most this many times: a hop that loses the packet,
/// the NACK and the retransmission four times in a row is down, and the
/// path will be changed instead.
pub const MAX_NACKS: u8 = 4;
/// Sequences remembered behind the highest (seen or missing). A packet
/// older than that is dropped as too old: at 1,000 packets/s it is two
/// seconds late.
pub const WINDOW: u64 = 2_048;
/// Gaps tracked at once. A hop that loses more than this many packets of
/// one track within a deadline is not repaired by NACKs; the oldest gaps
/// are given up first.
pub const MAX_MISSING: usize = 512;
/// A jump forward by more than this is a new sequence (the publisher
/// started again), not a gap to ask for.
pub const MAX_JUMP: u64 = 1_000;

/// How long to wait for a retransmission before asking again: a round trip
/// plus the jitter (the retransmission's delay varies as the original's
/// did) plus a margin for the sender's own scheduling. Asking again a
/// little early costs a duplicate, which the receiver drops; asking late
/// costs the packet (measured in the lab at 10% loss and 50 ms jitter:
/// twice the jitter left room for one retry within the deadline on most
/// hops, and half the gaps there were given up).
pub fn retry_after(rtt: Duration, jitter: Duration) -> Duration {
    rtt + jitter + Duration::from_millis(5)
}

/// The jitter assumed for a client's last mile, which QUIC measures the
/// round trip of but not the jitter: a quarter of the round trip (4G: 50 ms
/// and 10-15 ms). It only spaces repeated NACKs.
pub fn last_mile_jitter(rtt: Duration) -> Duration {
    rtt / 4
}

/// What an arriving packet is to this hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Not seen before, at or ahead of the highest (gaps before it, if any,
    /// are now tracked).
    New,
    /// Filled a tracked gap (a retransmission, or a reordered packet).
    Recovered,
    /// Not seen before, behind the highest, but not a gap being tracked
    /// (given up, or forgotten): still worth passing on, late.
    Late,
    /// Seen before: a retransmission racing a late original, or the copy
    /// from a second path. Not to be forwarded again.
    Duplicate,
    /// Behind the point where the sequence last restarted: a straggler
    /// from before, not to be forwarded.
    TooOld,
    /// A jump forward past [`MAX_JUMP`], or back past [`WINDOW`]: the
    /// sequence restarted; tracking starts over from this packet.
    Restart,
}

/// What a tracker counted since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GapCounters {
    pub received: u64,
    pub duplicates: u64,
    pub recovered: u64,
    /// Gaps given up: their deadline passed, or too many gaps at once.
    pub abandoned: u64,
    pub nacked: u64,
}

#[derive(Clone, Copy, Debug)]
struct Missing {
    /// When its packet was sent, as estimated (see the module doc): the
    /// deadline runs from then.
    since: Instant,
    nacks: u8,
    next_nack: Instant,
}

/// `seq` extended to 64 bits against `highest`, the highest extended
/// sequence seen (the nearest value with these low 32 bits). The first
/// starts at 2^32 so that a wrap backwards stays positive.
pub fn extend(highest: Option<u64>, seq: u32) -> u64 {
    match highest {
        None => (1 << 32) | seq as u64,
        Some(h) => {
            let delta = seq.wrapping_sub(h as u32) as i32 as i64;
            (h as i64 + delta) as u64
        }
    }
}

/// Which sequences (extended, see [`extend`]) within [`WINDOW`] of the
/// highest arrived: bit `s % WINDOW` for `s`. Its owner clears the bits
/// its window moves onto.
#[derive(Debug)]
pub struct SeenWindow {
    bits: Box<[u64; (WINDOW / 64) as usize]>,
}

impl Default for SeenWindow {
    fn default() -> Self {
        SeenWindow {
            bits: Box::new([0; (WINDOW / 64) as usize]),
        }
    }
}

impl SeenWindow {
    fn bit(ext: u64) -> (usize, u64) {
        let i = ext % WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    pub fn contains(&self, ext: u64) -> bool {
        let (w, b) = Self::bit(ext);
        self.bits[w] & b != 0
    }

    pub fn set(&mut self, ext: u64, on: bool) {
        let (w, b) = Self::bit(ext);
        if on {
            self.bits[w] |= b;
        } else {
            self.bits[w] &= !b;
        }
    }

    pub fn clear(&mut self) {
        self.bits.fill(0);
    }
}

/// One track's sequence on one hop, as its receiving end sees it.
#[derive(Debug)]
pub struct GapTracker {
    deadline: Duration,
    /// Extended (64-bit) sequence of the highest packet seen, and when it
    /// arrived.
    highest: Option<(u64, Instant)>,
    /// Where the sequence last (re)started: anything before is stale.
    floor: u64,
    seen: SeenWindow,
    missing: BTreeMap<u64, Missing>,
    counters: GapCounters,
}

impl GapTracker {
    pub fn new(kind: MediaKind) -> Self {
        GapTracker {
            deadline: crate::deadline(kind),
            highest: None,
            floor: 0,
            seen: SeenWindow::default(),
            missing: BTreeMap::new(),
            counters: GapCounters::default(),
        }
    }

    pub fn counters(&self) -> GapCounters {
        self.counters
    }

    /// Gaps being tracked now.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }

    fn restart(&mut self, ext: u64, now: Instant) {
        self.seen.clear();
        self.counters.abandoned += self.missing.len() as u64;
        self.missing.clear();
        self.highest = Some((ext, now));
        self.floor = ext;
        self.seen.set(ext, true);
    }

    /// A packet with sequence `seq` arrived at `now`.
    pub fn on_packet(&mut self, seq: u32, now: Instant) -> Arrival {
        let ext = extend(self.highest.map(|(h, _)| h), seq);
        let Some((highest, highest_at)) = self.highest else {
            self.counters.received += 1;
            self.highest = Some((ext, now));
            self.seen.set(ext, true);
            return Arrival::New;
        };
        if ext > highest {
            self.counters.received += 1;
            let span = ext - highest;
            if span > MAX_JUMP {
                self.restart(ext, now);
                return Arrival::Restart;
            }
            let silence = now.saturating_duration_since(highest_at);
            for (i, s) in (highest + 1..ext).enumerate() {
                self.seen.set(s, false);
                // Sent, if at all, during the silence: spread evenly over
                // it (`span` is at most `MAX_JUMP`, so this fits a u32).
                let sent = highest_at + silence * (i as u32 + 1) / span as u32;
                if sent + self.deadline <= now {
                    // Too old for any sender to resend: given up unasked.
                    self.counters.abandoned += 1;
                    continue;
                }
                self.missing.insert(
                    s,
                    Missing {
                        since: sent,
                        nacks: 0,
                        next_nack: now + REORDER_GRACE,
                    },
                );
            }
            // Entries that fell out of the window, and the oldest beyond
            // the bound, are given up.
            let floor = ext.saturating_sub(WINDOW);
            while let Some((&s, _)) = self.missing.first_key_value() {
                if s > floor && self.missing.len() <= MAX_MISSING {
                    break;
                }
                self.missing.pop_first();
                self.counters.abandoned += 1;
            }
            self.seen.set(ext, true);
            self.highest = Some((ext, now));
            return Arrival::New;
        }
        if highest - ext >= WINDOW {
            // No packet is thousands late: the sequence started over (a
            // sender that restarted its counter on the same track).
            self.counters.received += 1;
            self.restart(ext, now);
            return Arrival::Restart;
        }
        if ext < self.floor {
            return Arrival::TooOld;
        }
        if self.seen.contains(ext) {
            self.counters.duplicates += 1;
            return Arrival::Duplicate;
        }
        self.counters.received += 1;
        self.seen.set(ext, true);
        if self.missing.remove(&ext).is_some() {
            self.counters.recovered += 1;
            Arrival::Recovered
        } else {
            Arrival::Late
        }
    }

    /// The sequences to ask for now, each marked asked. A gap whose answer
    /// could not arrive before its deadline (a round trip `rtt` away) is
    /// not asked for again, and one past its deadline is given up.
    pub fn due(&mut self, now: Instant, rtt: Duration, jitter: Duration) -> Vec<u32> {
        let deadline = self.deadline;
        let mut out = vec![];
        let mut abandoned = 0;
        self.missing.retain(|&s, m| {
            let expires = m.since + deadline;
            if now >= expires {
                abandoned += 1;
                return false;
            }
            if m.nacks < MAX_NACKS && m.next_nack <= now {
                if now + rtt < expires {
                    m.nacks += 1;
                    m.next_nack = now + retry_after(rtt, jitter);
                    out.push(s as u32);
                } else {
                    // An answer could not come in time: never ask again
                    // (and do not wake the caller for it until it expires).
                    m.nacks = MAX_NACKS;
                }
            }
            true
        });
        self.counters.abandoned += abandoned;
        self.counters.nacked += out.len() as u64;
        out
    }

    /// When [`Self::due`] next has something to do (a NACK or a gap to give
    /// up), if anything is missing.
    pub fn next_due(&self) -> Option<Instant> {
        self.missing
            .values()
            .map(|m| {
                let expires = m.since + self.deadline;
                if m.nacks < MAX_NACKS {
                    m.next_nack.min(expires)
                } else {
                    expires
                }
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RTT: Duration = Duration::from_millis(40);
    const JITTER: Duration = Duration::from_millis(2);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_gap_is_asked_for_after_the_grace_and_filled_by_the_retransmission() {
        let t0 = Instant::now();
        let mut g = GapTracker::new(MediaKind::Video);
        assert_eq!(g.on_packet(10, t0), Arrival::New);
        assert_eq!(g.on_packet(13, t0), Arrival::New);
        assert_eq!(g.missing(), 2);
        // Within the grace: a reordered packet fills a gap with no NACK.
        assert!(g.due(t0 + ms(1), RTT, JITTER).is_empty());
        assert_eq!(g.on_packet(11, t0 + ms(2)), Arrival::Recovered);
        assert_eq!(g.due(t0 + REORDER_GRACE, RTT, JITTER), vec![12]);
        // Asked once per retry interval, not on every poll.
        assert!(g.due(t0 + ms(10), RTT, JITTER).is_empty());
        assert_eq!(g.on_packet(12, t0 + ms(45)), Arrival::Recovered);
        assert_eq!(g.on_packet(12, t0 + ms(46)), Arrival::Duplicate);
        assert_eq!(g.missing(), 0);
        assert_eq!(g.next_due(), None);
        let c = g.counters();
        assert_eq!(
            (c.recovered, c.duplicates, c.nacked, c.abandoned),
            (2, 1, 1, 0)
        );
    }

    #[test]
    fn a_lost_retransmission_is_asked_again_a_retry_later_at_most_max_nacks_times() {
        let t0 = Instant::now();
        let mut g = GapTracker::new(MediaKind::Video);
        g.on_packet(1, t0);
        g.on_packet(3, t0);
        let mut asked = 0;
        let mut t = t0;
        while t <= t0 + crate::VIDEO_DEADLINE {
            asked += g.due(t, ms(10), Duration::ZERO).len();
            t += ms(1);
        }
        assert_eq!(asked, MAX_NACKS as usize);
        // Given up at the video deadline.
        assert_eq!(g.missing(), 0);
        assert_eq!(g.counters().abandoned, 1);
    }

    #[test]
    fn nothing_is_asked_that_could_not_arrive_before_the_deadline() {
        let t0 = Instant::now();
        let mut g = GapTracker::new(MediaKind::Audio);
        g.on_packet(1, t0);
        g.on_packet(3, t0);
        // A round trip as long as the deadline cannot repair audio: not
        // asked, and nothing due before the gap expires (a caller sleeping
        // until `next_due` does not spin meanwhile).
        let rtt = crate::AUDIO_DEADLINE;
        assert!(g.due(t0 + ms(5), rtt, JITTER).is_empty());
        assert_eq!(g.next_due(), Some(t0 + crate::AUDIO_DEADLINE));
        assert!(g.due(t0 + crate::AUDIO_DEADLINE, rtt, JITTER).is_empty());
        assert_eq!(g.counters().abandoned, 1);
    }

    #[test]
    fn sequences_wrap_without_a_gap() {
        let t0 = Instant::now();
        let mut g = GapTracker::new(MediaKind::Audio);
        assert_eq!(g.on_packet(u32::MAX - 1, t0), Arrival::New);
        assert_eq!(g.on_packet(u32::MAX, t0), Arrival::New);
        assert_eq!(g.on_packet(1, t0), Arrival::New);
        assert_eq!(g.due(t0 + ms(5), RTT, JITTER), vec![0]);
        assert_eq!(g.on_packet(0, t0 + ms(6)), Arrival::Recovered);
    }

    #[test]
    fn a_restarted_sequence_is_not_a_thousand_gaps() {
        let t0 = Instant::now();
        let mut g = GapTracker::new(MediaKind::Video);
        g.on_packet(5, t0);
        assert_eq!(g.on_packet(5 + MAX_JUMP as u32 + 1, t0), Arrival::Restart);
        assert_eq!(g.missing(), 0);
        assert_eq!(g.on_packet(5, t0), Arrival::TooOld);
    }

    #[test]
    fn old_and_untracked_packets_are_told_apart() {
        let t0 = Instant::now();
        let mut g = GapTracker::new(MediaKind::Video);
        g.on_packet(100, t0);
        assert_eq!(g.on_packet(99, t0), Arrival::Late);
        assert_eq!(g.on_packet(99, t0), Arrival::Duplicate);
        for s in 101..=100 + WINDOW as u32 {
            g.on_packet(s, t0);
        }
        // Thousands behind: not a late packet but a sequence started over.
        assert_eq!(g.on_packet(100, t0), Arrival::Restart);
        assert_eq!(g.on_packet(101, t0), Arrival::New);
    }

    #[test]
    fn a_sequence_started_over_at_zero_is_followed_not_dropped() {
        let t0 = Instant::now();
        let mut g = GapTracker::new(MediaKind::Video);
        for s in 0..50_000 {
            assert_ne!(g.on_packet(s, t0), Arrival::TooOld);
        }
        assert_eq!(g.on_packet(0, t0), Arrival::Restart);
        for s in 1..100 {
            assert_eq!(g.on_packet(s, t0), Arrival::New);
        }
        assert_eq!(g.missing(), 0);
    }

    #[test]
    fn after_a_silence_only_what_a_sender_still_holds_is_asked_for() {
        let t0 = Instant::now();
        let mut g = GapTracker::new(MediaKind::Video);
        // 30 packets a second, then ten seconds of nothing on this hop:
        // 300 numbers went by, of which only those of the last deadline
        // (500 ms: about fifteen) could still be resent.
        for s in 0..30 {
            g.on_packet(s, t0 + ms(33 * s as u64));
        }
        let back = t0 + ms(33 * 29) + ms(10_000);
        assert_eq!(g.on_packet(330, back), Arrival::New);
        let within = (crate::VIDEO_DEADLINE.as_millis() / 33) as usize;
        assert!(
            (within - 1..=within + 1).contains(&g.missing()),
            "{} tracked",
            g.missing()
        );
        assert_eq!(g.counters().abandoned, 300 - g.missing() as u64);
        // Less the ones whose answer could not come in time.
        let asked = g.due(back + REORDER_GRACE, RTT, JITTER);
        assert!(
            !asked.is_empty() && asked.iter().all(|&s| s >= 330 - within as u32 - 1),
            "{asked:?}"
        );
        // And those expire with their estimated send times, not a deadline
        // after the silence ended.
        g.due(back + crate::VIDEO_DEADLINE, RTT, JITTER);
        assert_eq!(g.missing(), 0);
    }

    #[test]
    fn a_loss_within_the_deadline_is_asked_for_whole() {
        let t0 = Instant::now();
        let mut g = GapTracker::new(MediaKind::Audio);
        // An audio burst of 150 ms lost (eight 20 ms packets): all of it
        // can still be resent.
        g.on_packet(0, t0);
        assert_eq!(g.on_packet(8, t0 + ms(160)), Arrival::New);
        assert_eq!(g.due(t0 + ms(165), RTT, JITTER), (1..8).collect::<Vec<_>>());
    }

    #[test]
    fn gaps_tracked_at_once_are_bounded() {
        let t0 = Instant::now();
        let mut g = GapTracker::new(MediaKind::Video);
        // Every other packet lost, far more than the bound.
        for s in 0..3 * MAX_MISSING as u32 {
            g.on_packet(2 * s, t0);
        }
        assert!(g.missing() <= MAX_MISSING);
        assert!(g.counters().abandoned > 0);
    }

    proptest! {
        /// Any arrival order with losses and duplicates: each sequence is
        /// New/Recovered/Late at most once, everything else a duplicate or
        /// too old; what was never received may be asked for, what was
        /// received never is.
        #[test]
        fn each_packet_passes_once_and_received_ones_are_never_asked(
            start: u32,
            events in proptest::collection::vec((0u32..300, any::<bool>()), 1..600),
        ) {
            let t0 = Instant::now();
            let mut g = GapTracker::new(MediaKind::Video);
            let mut passed = std::collections::HashSet::new();
            let mut t = t0;
            for (off, poll) in events {
                let seq = start.wrapping_add(off);
                t += Duration::from_micros(700);
                match g.on_packet(seq, t) {
                    Arrival::New | Arrival::Recovered | Arrival::Late | Arrival::Restart => {
                        prop_assert!(passed.insert(seq), "{seq} passed twice");
                    }
                    Arrival::Duplicate => prop_assert!(passed.contains(&seq)),
                    Arrival::TooOld => {}
                }
                if poll {
                    for asked in g.due(t, Duration::from_millis(3), Duration::ZERO) {
                        prop_assert!(!passed.contains(&asked), "asked for received {asked}");
                    }
                }
                prop_assert!(g.missing() <= MAX_MISSING);
            }
        }
    }
}
