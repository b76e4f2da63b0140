//! Audio redundancy on a lossy hop, as RED does it (RFC 2198): each audio
//! packet is sent again after the next packet(s) of its track.
//!
//! Audio is a few small packets a second with the shortest deadline, so
//! the cheapest repair that needs no round trip is to send it twice. The
//! copy must not travel with its original: QUIC packs datagrams queued
//! together into one UDP packet (quinn fills a packet with every DATAGRAM
//! frame that fits), so a copy sent right after its original is lost with
//! it, and losses come in bursts anyway. The copy of packet `n` therefore
//! goes out with packet `n + 1`: one packet interval (20-40 ms) later, which is what RED buys at the price of
//! that delay for the packets it recovers. The receiving end keeps the
//! first copy it gets and drops the other by sequence
//! ([`crate::gaps::Arrival::Duplicate`]).
//!
//! When: [`AudioRedundancy::set_loss`] with the hop's measured loss in the
//! sending direction; on at [`RED_ON_LOSS`], off below [`RED_OFF_LOSS`]
//! (hysteresis). One copy, whatever the loss: a second copy of every audio
//! packet (measured in the lab at 20% loss on every link) cut audio's
//! residual loss from 9.6% to 7.6% but raised video's from 8.1% to 14.8%
//! on the links both share. Unlike parity it does
//! not wait for a slow round trip: a NACK needs a gap to be noticed (the
//! next packet, 20-40 ms), a round trip and the jitter, and audio's deadline
//! leaves one such try on a jittery hop where a copy costs none.
//!
//! The last mile measures its loss with [`PathLoss`] from the QUIC
//! connection's own counters (packets declared lost over packets sent), so
//! each sender measures the direction it sends in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::{MediaKind, TrackKey};

/// Copies go on at this loss...
pub const RED_ON_LOSS: f64 = crate::fec::FEC_ON_LOSS;
/// ...and off again below this (hysteresis: a hop near the threshold does
/// not flap).
pub const RED_OFF_LOSS: f64 = crate::fec::FEC_OFF_LOSS;
/// A packet older than this is not sent again with a later one: the track
/// paused (a talk spurt ended), and a copy that late would miss its
/// playout anyway. Two packet intervals of 40 ms and some scheduling slack.
pub const MAX_COPY_AGE: Duration = Duration::from_millis(100);
/// Tracks whose last packet is older than this are forgotten.
const TRACK_IDLE: Duration = Duration::from_secs(2);

/// The sending end's audio redundancy over all tracks of one hop.
#[derive(Debug, Default)]
pub struct AudioRedundancy {
    on: bool,
    /// Per audio track, its latest packet.
    recent: HashMap<TrackKey, (Instant, Bytes)>,
    last_prune: Option<Instant>,
}

impl AudioRedundancy {
    /// The hop's measured loss in the sending direction changed.
    pub fn set_loss(&mut self, loss: f64) {
        self.on = if self.on {
            loss >= RED_OFF_LOSS
        } else {
            loss >= RED_ON_LOSS
        };
        if !self.on {
            self.recent.clear();
        }
    }

    /// Whether audio packets are sent twice now.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// `pkt` of `track` is being sent at `now`: the earlier packet of the
    /// track to send again after it (none for video and data tracks or
    /// while off).
    pub fn sent(&mut self, track: TrackKey, pkt: &Bytes, now: Instant) -> Option<Bytes> {
        if !self.on || track.kind() != MediaKind::Audio {
            return None;
        }
        self.prune(now);
        let (at, previous) = self.recent.insert(track, (now, pkt.clone()))?;
        (now.saturating_duration_since(at) <= MAX_COPY_AGE).then_some(previous)
    }

    fn prune(&mut self, now: Instant) {
        let due = self
            .last_prune
            .is_none_or(|t| now.saturating_duration_since(t) >= TRACK_IDLE);
        if due {
            self.last_prune = Some(now);
            self.recent
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < TRACK_IDLE);
        }
    }
}

/// Measure a hop's loss from its QUIC connection's cumulative counters
/// (packets sent, packets declared lost), over windows of at least
/// [`PathLoss::WINDOW`] and [`PathLoss::MIN_PACKETS`].
#[derive(Debug, Default)]
pub struct PathLoss {
    /// When the current window started, and the counters then.
    start: Option<(Instant, u64, u64)>,
    last_read: Option<Instant>,
    loss: f64,
}

impl PathLoss {
    /// A window this long follows the hop's loss within a couple of
    /// seconds, as the relay links' probes do.
    pub const WINDOW: Duration = Duration::from_secs(1);
    /// A window with fewer packets is extended: 1 loss in 10 is noise, not
    /// 10% loss.
    pub const MIN_PACKETS: u64 = 50;

    /// Whether a new reading is due at `now`: callers read the connection's
    /// counters (a lock on its state) a few times a window, not per packet.
    pub fn due(&self, now: Instant) -> bool {
        self.last_read
            .is_none_or(|at| now.saturating_duration_since(at) >= Self::WINDOW / 4)
    }

    /// The counters read at `now`; the loss measured over the last window
    /// (the previous reading while the window is short of packets).
    pub fn update(&mut self, sent: u64, lost: u64, now: Instant) -> f64 {
        self.last_read = Some(now);
        match self.start {
            None => self.start = Some((now, sent, lost)),
            Some((at, sent0, lost0)) => {
                let n = sent.saturating_sub(sent0);
                if n >= Self::MIN_PACKETS && now.saturating_duration_since(at) >= Self::WINDOW {
                    self.loss = (lost.saturating_sub(lost0) as f64 / n as f64).min(1.0);
                    self.start = Some((now, sent, lost));
                }
            }
        }
        self.loss
    }

    pub fn loss(&self) -> f64 {
        self.loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio() -> TrackKey {
        TrackKey::with_kind(1, MediaKind::Audio, 1)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn each_copy_goes_out_with_the_next_packet_not_its_own() {
        let t = Instant::now();
        let mut r = AudioRedundancy::default();
        r.set_loss(0.05);
        assert!(r.is_on());
        let p: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![i])).collect();
        assert_eq!(r.sent(audio(), &p[0], t), None);
        assert_eq!(r.sent(audio(), &p[1], t + ms(20)), Some(p[0].clone()));
        assert_eq!(r.sent(audio(), &p[2], t + ms(40)), Some(p[1].clone()));
        // Video and data are left to parity and NACKs.
        let video = TrackKey::with_kind(1, MediaKind::Video, 2);
        assert_eq!(r.sent(video, &p[0], t + ms(40)), None);
        assert_eq!(r.sent(video, &p[1], t + ms(60)), None);
    }

    #[test]
    fn a_paused_track_does_not_resend_its_old_last_packet() {
        let t = Instant::now();
        let mut r = AudioRedundancy::default();
        r.set_loss(0.05);
        r.sent(audio(), &Bytes::from_static(b"a"), t);
        let later = t + MAX_COPY_AGE + ms(1);
        assert_eq!(r.sent(audio(), &Bytes::from_static(b"b"), later), None);
    }

    #[test]
    fn switched_by_loss_with_hysteresis() {
        let mut r = AudioRedundancy::default();
        r.set_loss(0.015);
        assert!(!r.is_on(), "under the on threshold");
        r.set_loss(0.02);
        assert!(r.is_on());
        r.set_loss(0.012);
        assert!(r.is_on(), "stays on above the off threshold");
        r.set_loss(0.009);
        assert!(!r.is_on());
    }

    #[test]
    fn idle_tracks_are_forgotten() {
        let t = Instant::now();
        let mut r = AudioRedundancy::default();
        r.set_loss(0.05);
        for i in 0..100 {
            let track = TrackKey::with_kind(1, MediaKind::Audio, i);
            r.sent(track, &Bytes::new(), t);
        }
        r.sent(audio(), &Bytes::new(), t + TRACK_IDLE);
        assert_eq!(r.recent.len(), 1);
    }

    #[test]
    fn path_loss_waits_for_enough_packets() {
        let t = Instant::now();
        let mut l = PathLoss::default();
        assert!(l.due(t));
        assert_eq!(l.update(1_000, 10, t), 0.0);
        assert!(!l.due(t + ms(100)));
        assert!(l.due(t + ms(250)));
        // A second later but only 20 packets: the window goes on.
        assert_eq!(l.update(1_020, 12, t + ms(1_000)), 0.0);
        assert_eq!(l.update(1_100, 20, t + ms(2_000)), 0.1);
        assert_eq!(l.update(1_300, 20, t + ms(3_000)), 0.0);
        assert_eq!(l.loss(), 0.0);
    }
}
