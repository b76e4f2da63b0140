//! Both ends of one hop, over all the tracks it carries: what the edge's
//! relay links and client links and the SDK's connection hold.
//!
//! - [`HopReceiver`]: a [`GapTracker`] per track (bounded in number, idle
//!   ones forgotten), and the NACK datagrams due.
//! - [`HopSender`]: a [`SendHistory`] and a [`RepairBudget`], and the answer
//!   to a NACK: the packets to send again, and what was refused and why;
//!   and the hop's audio redundancy ([`AudioRedundancy`]), switched by the
//!   hop's measured loss.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::datagram::{MediaHeader, Nack};
use protocol::{ChannelId, TrackKey};

use crate::gaps::{Arrival, GapTracker};
use crate::history::{Lookup, SendHistory};
use crate::red::{AudioRedundancy, PathLoss};
use crate::RepairBudget;

/// Tracks one hop repairs at once. A relay link carries at most a few
/// thousand live tracks; a flood of made-up track keys must not grow it.
pub const MAX_TRACKS: usize = 4_096;
/// A track with no packet for this long is forgotten.
const TRACK_IDLE: Duration = Duration::from_secs(10);

struct Track {
    channel: ChannelId,
    gaps: GapTracker,
    last_packet: Instant,
}

/// The receiving end of a hop.
pub struct HopReceiver {
    /// NACKs go on a relay link (0x84) or a client link (0x04).
    relay: bool,
    tracks: HashMap<TrackKey, Track>,
    /// Tracks with gaps being tracked.
    pending: HashSet<TrackKey>,
    abandoned: u64,
    last_prune: Instant,
}

impl HopReceiver {
    pub fn new(relay: bool, now: Instant) -> Self {
        HopReceiver {
            relay,
            tracks: HashMap::new(),
            pending: HashSet::new(),
            abandoned: 0,
            last_prune: now,
        }
    }

    /// A media packet with header `h` arrived at `now`. A track past
    /// [`MAX_TRACKS`] is passed on unrepaired ([`Arrival::New`]).
    pub fn on_media(&mut self, h: &MediaHeader, now: Instant) -> Arrival {
        self.prune(now);
        if !self.tracks.contains_key(&h.track) && self.tracks.len() >= MAX_TRACKS {
            return Arrival::New;
        }
        let t = self.tracks.entry(h.track).or_insert_with(|| Track {
            channel: h.channel,
            gaps: GapTracker::new(h.track.kind()),
            last_packet: now,
        });
        t.last_packet = now;
        let before = t.gaps.counters().abandoned;
        let arrival = t.gaps.on_packet(h.sequence, now);
        self.abandoned += t.gaps.counters().abandoned - before;
        if t.gaps.missing() > 0 {
            self.pending.insert(h.track);
        } else {
            self.pending.remove(&h.track);
        }
        arrival
    }

    /// The NACK datagrams due at `now`, for a hop with round trip `rtt`
    /// and jitter `jitter`, and how many packets they ask for.
    pub fn nacks(&mut self, now: Instant, rtt: Duration, jitter: Duration) -> (Vec<Bytes>, usize) {
        let mut out = vec![];
        let mut asked = 0;
        let relay = self.relay;
        let mut abandoned = 0;
        self.pending.retain(|key| {
            let Some(t) = self.tracks.get_mut(key) else {
                return false;
            };
            let before = t.gaps.counters().abandoned;
            let seqs = t.gaps.due(now, rtt, jitter);
            abandoned += t.gaps.counters().abandoned - before;
            if !seqs.is_empty() {
                asked += seqs.len();
                out.extend(
                    Nack {
                        relay,
                        channel: t.channel,
                        track: *key,
                        seqs,
                    }
                    .encode(),
                );
            }
            t.gaps.missing() > 0
        });
        self.abandoned += abandoned;
        (out, asked)
    }

    /// When [`Self::nacks`] next has something to do.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending
            .iter()
            .filter_map(|k| self.tracks.get(k)?.gaps.next_due())
            .min()
    }

    /// Gaps given up since the last call (deadline passed, or too many).
    pub fn take_abandoned(&mut self) -> u64 {
        std::mem::take(&mut self.abandoned)
    }

    fn prune(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_prune) < TRACK_IDLE {
            return;
        }
        self.last_prune = now;
        let pending = &mut self.pending;
        self.tracks.retain(|k, t| {
            let keep = now.saturating_duration_since(t.last_packet) < TRACK_IDLE;
            if !keep {
                pending.remove(k);
            }
            keep
        });
    }
}

/// What a NACK got from a [`HopSender`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// Send these again, in order.
    pub resend: Vec<Bytes>,
    pub too_late: usize,
    pub not_held: usize,
    /// Asked for what was never sent: abuse, or a broken peer.
    pub never_sent: usize,
    /// Refused because the hop's repair budget is spent.
    pub over_budget: usize,
}

impl Answer {
    pub fn resent_bytes(&self) -> usize {
        self.resend.iter().map(Bytes::len).sum()
    }
}

/// The sending end of a hop.
pub struct HopSender {
    history: SendHistory,
    budget: RepairBudget,
    red: AudioRedundancy,
    loss: PathLoss,
    /// The receiving end has NACKed on this hop: it speaks loss repair and
    /// drops repeats, so audio copies may be sent to it.
    peer_repairs: bool,
}

impl HopSender {
    /// Keeping at most `max_packets` sent packets.
    pub fn new(max_packets: usize) -> Self {
        HopSender {
            history: SendHistory::new(max_packets),
            budget: RepairBudget::default(),
            red: AudioRedundancy::default(),
            loss: PathLoss::default(),
            peer_repairs: false,
        }
    }

    /// `pkt` (sequence `seq` of `track`) is being sent at `now`: the audio
    /// copy to send after it, if any (see [`crate::red`]). `path` reads the
    /// hop's QUIC counters (packets sent, packets declared lost), a few
    /// times a second at most.
    pub fn sent(
        &mut self,
        track: TrackKey,
        seq: u32,
        pkt: Bytes,
        now: Instant,
        path: impl FnOnce() -> (u64, u64),
    ) -> Option<Bytes> {
        self.budget.earn(pkt.len());
        if self.loss.due(now) {
            let (sent, lost) = path();
            self.red.set_loss(self.loss.update(sent, lost, now));
        }
        let copy = self
            .peer_repairs
            .then(|| self.red.sent(track, &pkt, now))
            .flatten();
        self.history.record(track, seq, pkt, now);
        copy
    }

    /// The hop's loss in the sending direction, as last measured.
    pub fn loss(&self) -> f64 {
        self.loss.loss()
    }

    /// Answer `nack` at `now`.
    pub fn answer(&mut self, nack: &Nack, now: Instant) -> Answer {
        self.peer_repairs = true;
        let mut a = Answer::default();
        for &seq in &nack.seqs {
            match self.history.lookup(nack.track, seq, now) {
                Lookup::Resend(pkt) => {
                    if self.budget.spend(pkt.len()) {
                        a.resend.push(pkt);
                    } else {
                        a.over_budget += 1;
                    }
                }
                Lookup::TooLate => a.too_late += 1,
                Lookup::NotHeld => a.not_held += 1,
                Lookup::NeverSent => a.never_sent += 1,
            }
        }
        a
    }

    pub fn held(&self) -> usize {
        self.history.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::MediaKind;

    fn header(seq: u32) -> MediaHeader {
        MediaHeader {
            channel: ChannelId(5),
            track: TrackKey::with_kind(1, MediaKind::Video, 1),
            sequence: seq,
            timestamp_us: 0,
        }
    }

    #[test]
    fn a_loss_on_the_hop_is_asked_for_and_answered_from_the_senders_history() {
        let t0 = Instant::now();
        let mut tx = HopSender::new(100);
        let mut rx = HopReceiver::new(true, t0);
        let rtt = Duration::from_millis(20);
        for seq in 0..5 {
            let pkt = header(seq).encode(b"x").unwrap();
            tx.sent(header(seq).track, seq, pkt, t0, || (0, 0));
            if seq != 2 {
                assert_eq!(rx.on_media(&header(seq), t0), Arrival::New);
            }
        }
        let due = rx.next_due().unwrap();
        let (nacks, asked) = rx.nacks(due, rtt, Duration::ZERO);
        assert_eq!((nacks.len(), asked), (1, 1));
        let nack = Nack::decode(&nacks[0]).unwrap();
        assert!(nack.relay);
        assert_eq!((nack.channel, nack.seqs.clone()), (ChannelId(5), vec![2]));
        let answer = tx.answer(&nack, due);
        assert_eq!(answer.resend.len(), 1);
        let back = MediaHeader::decode(&answer.resend[0]).unwrap();
        assert_eq!(rx.on_media(&back, due), Arrival::Recovered);
        assert_eq!(rx.next_due(), None);
    }

    #[test]
    fn nacks_for_what_was_never_sent_are_told_apart() {
        let t0 = Instant::now();
        let mut tx = HopSender::new(100);
        tx.sent(header(1).track, 1, Bytes::from_static(b"p"), t0, || (0, 0));
        let nack = Nack {
            relay: false,
            channel: ChannelId(5),
            track: header(1).track,
            seqs: vec![0, 1, 9],
        };
        let a = tx.answer(&nack, t0);
        assert_eq!((a.resend.len(), a.not_held, a.never_sent), (1, 1, 1));
        let other = Nack {
            track: TrackKey(77),
            ..nack
        };
        assert_eq!(tx.answer(&other, t0).never_sent, 3);
    }

    #[test]
    fn audio_copies_only_to_a_peer_that_repairs_and_while_the_hop_loses() {
        let t0 = Instant::now();
        let audio = TrackKey::with_kind(1, MediaKind::Audio, 3);
        let mut tx = HopSender::new(100);
        // Counters as QUIC reads them: 100 packets a second, 5 lost.
        let send = |tx: &mut HopSender, seq: u32| {
            let at = t0 + Duration::from_millis(20 * seq as u64);
            let counters = (100 * seq as u64 / 50, 5 * seq as u64 / 50);
            tx.sent(audio, seq, Bytes::from(vec![seq as u8]), at, || counters)
        };
        for seq in 0..150 {
            assert_eq!(send(&mut tx, seq), None, "no NACK from the peer yet");
        }
        assert!((tx.loss() - 0.05).abs() < 0.01, "{}", tx.loss());
        let nack = Nack {
            relay: false,
            channel: ChannelId(5),
            track: audio,
            seqs: vec![149],
        };
        tx.answer(&nack, t0 + Duration::from_secs(3));
        assert_eq!(
            send(&mut tx, 150),
            None,
            "the first has no predecessor kept"
        );
        assert_eq!(send(&mut tx, 151), Some(Bytes::from(vec![150u8])));
    }

    #[test]
    fn tracks_are_bounded_and_idle_ones_forgotten() {
        let t0 = Instant::now();
        let mut rx = HopReceiver::new(false, t0);
        for k in 0..MAX_TRACKS as u64 + 10 {
            let h = MediaHeader {
                track: TrackKey(k),
                ..header(0)
            };
            rx.on_media(&h, t0);
        }
        assert_eq!(rx.tracks.len(), MAX_TRACKS);
        rx.on_media(&header(1), t0 + TRACK_IDLE);
        assert_eq!(rx.tracks.len(), 1);
    }
}
