//! Dead-edge detection: how soon the client gives up on a silent edge.
//!
//! An idle timeout alone waits for the worst case (500 ms of silence). A
//! live edge is rarely silent that long: it answers every keepalive within
//! about one round trip, and while media flows it sends a packet every
//! 30-40 ms. So the client asks instead of waiting: when media stops for
//! [`CHECK_AFTER`] it sends a keepalive at once (one per silence, the
//! budget), and an edge that lets a keepalive go unanswered for
//! [`ack_wait`] (a few RTTs, at least [`MIN_ACK_WAIT`]) is dead. Without
//! media the regular keepalives are the checks. The configured
//! `liveness_timeout` stays the ceiling from the last byte.
//!
//! On a lossy path an answer often needs a retransmission (a probe timeout
//! of QUIC's, and behind it the stream waits in order), so one unanswered
//! keepalive says little: while QUIC loses over [`LOSSY_RATE`] of the
//! packets, only the ceiling judges. Fast detection is for clean paths,
//! where silence means death.
//!
//! Pure logic: the supervisor feeds it times and acts on its [`Verdict`].

use std::time::Duration;

use tokio::time::Instant;

/// Media silence that prompts a check. Media arrives every 30-40 ms per
/// track; 60 ms is two missing packets of the slowest, which loss alone
/// causes rarely, and a check costs one tiny frame if it was nothing.
pub(crate) const CHECK_AFTER: Duration = Duration::from_millis(60);
/// Media counts as flowing if a packet arrived this recently before the
/// last byte: a paused track or a channel without media gets no checks
/// beyond the regular keepalives.
pub(crate) const MEDIA_RECENT: Duration = Duration::from_secs(1);
/// The least time an edge gets to answer a keepalive, whatever its RTT:
/// a busy edge or client process (scheduling, a loaded machine) delays an
/// answer by tens of milliseconds without being dead.
pub(crate) const MIN_ACK_WAIT: Duration = Duration::from_millis(100);
/// Round trips an answer may take before the edge is judged dead: room for
/// a jittery path.
const ACK_WAIT_RTTS: u32 = 4;
/// A path losing more than this share of packets is lossy: an unanswered
/// keepalive there is too often lost rather than the edge dead. Below it
/// (a clean path's fraction of a percent) a lost keepalive is retransmitted
/// within a probe timeout, well inside [`ack_wait`].
pub(crate) const LOSSY_RATE: f64 = 0.02;
/// Loss is judged over windows this long (the last whole one, and the
/// current one as soon as it lost two packets).
pub(crate) const LOSS_WINDOW: Duration = Duration::from_secs(1);

/// How long a keepalive may go unanswered on a path of `rtt`, within the
/// `ceiling` (`liveness_timeout`).
pub(crate) fn ack_wait(rtt: Duration, ceiling: Duration) -> Duration {
    (rtt * ACK_WAIT_RTTS).clamp(MIN_ACK_WAIT, ceiling.max(MIN_ACK_WAIT))
}

/// What the edge's silence means now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Alive,
    /// Send a keepalive now (media stopped).
    Check,
    /// Give up on the edge, and why.
    Dead(String),
}

/// What the client heard and asked on one link.
pub(crate) struct Watchdog {
    liveness_timeout: Duration,
    /// The first keepalive sent after the last byte heard: an answer to it
    /// (or anything else) is due.
    asked_at: Option<Instant>,
    /// QUIC's (sent, lost) packet counts when the current loss window
    /// began, and when that was.
    window: (Instant, u64, u64),
    /// The last whole window lost over [`LOSSY_RATE`].
    was_lossy: bool,
    /// QUIC's latest (sent, lost) counts.
    counts: (u64, u64),
}

impl Watchdog {
    pub fn new(liveness_timeout: Duration) -> Self {
        Watchdog {
            liveness_timeout,
            asked_at: None,
            window: (Instant::now(), 0, 0),
            was_lossy: false,
            counts: (0, 0),
        }
    }

    /// QUIC's running counts of packets sent and lost on the path, at
    /// `now`.
    pub fn path_counts(&mut self, now: Instant, sent: u64, lost: u64) {
        self.counts = (sent, lost);
        let (began, sent0, lost0) = self.window;
        if now >= began + LOSS_WINDOW {
            self.was_lossy = over_rate(sent.saturating_sub(sent0), lost.saturating_sub(lost0));
            self.window = (now, sent, lost);
        }
    }

    fn lossy(&self) -> bool {
        let (_, sent0, lost0) = self.window;
        let (sent, lost) = self.counts;
        let (sent, lost) = (sent.saturating_sub(sent0), lost.saturating_sub(lost0));
        self.was_lossy || (lost >= 2 && over_rate(sent, lost))
    }

    /// A keepalive went out at `now`.
    pub fn asked(&mut self, now: Instant, last_byte: Instant) {
        if self.asked_at.is_none_or(|a| a < last_byte) {
            self.asked_at = Some(now);
        }
    }

    /// The pending question, if nothing was heard since it was asked.
    fn unanswered(&self, last_byte: Instant) -> Option<Instant> {
        self.asked_at.filter(|a| *a >= last_byte)
    }

    /// The verdict at `now`, given the last byte and the last media packet
    /// heard, and the path's RTT.
    pub fn judge(
        &self,
        now: Instant,
        last_byte: Instant,
        last_media: Option<Instant>,
        rtt: Duration,
    ) -> Verdict {
        let wait = ack_wait(rtt, self.liveness_timeout);
        if let Some(asked) = self.unanswered(last_byte).filter(|_| !self.lossy()) {
            if now >= asked + wait {
                return Verdict::Dead(format!(
                    "a keepalive went unanswered for {} ms",
                    wait.as_millis()
                ));
            }
        }
        if now >= last_byte + self.liveness_timeout {
            return Verdict::Dead(format!(
                "nothing heard from the edge for {} ms",
                self.liveness_timeout.as_millis()
            ));
        }
        if self.unanswered(last_byte).is_none()
            && media_flowing(last_byte, last_media)
            && now >= last_byte + CHECK_AFTER
        {
            return Verdict::Check;
        }
        Verdict::Alive
    }

    /// When the verdict may next change if nothing is heard.
    pub fn next_look(
        &self,
        last_byte: Instant,
        last_media: Option<Instant>,
        rtt: Duration,
    ) -> Instant {
        let mut at = last_byte + self.liveness_timeout;
        match self.unanswered(last_byte) {
            Some(asked) => at = at.min(asked + ack_wait(rtt, self.liveness_timeout)),
            None if media_flowing(last_byte, last_media) => at = at.min(last_byte + CHECK_AFTER),
            None => {}
        }
        at
    }
}

fn over_rate(sent: u64, lost: u64) -> bool {
    sent > 0 && lost as f64 / sent as f64 > LOSSY_RATE
}

fn media_flowing(last_byte: Instant, last_media: Option<Instant>) -> bool {
    last_media.is_some_and(|m| m + MEDIA_RECENT >= last_byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const RTT: Duration = Duration::from_millis(10);
    const TIMEOUT: Duration = Duration::from_millis(500);

    #[test]
    fn a_stopped_stream_is_checked_once_and_its_edge_dead_one_wait_later() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(TIMEOUT);
        // Media until t0, then silence.
        let (last, media) = (t0, Some(t0));
        assert_eq!(w.judge(t0 + ms(59), last, media, RTT), Verdict::Alive);
        assert_eq!(w.next_look(last, media, RTT), t0 + CHECK_AFTER);
        assert_eq!(w.judge(t0 + ms(60), last, media, RTT), Verdict::Check);
        w.asked(t0 + ms(60), last);
        // Asked: no second check, dead 100 ms (the floor; 4 RTTs is 40) on.
        assert_eq!(w.judge(t0 + ms(159), last, media, RTT), Verdict::Alive);
        assert_eq!(w.next_look(last, media, RTT), t0 + ms(160));
        assert!(matches!(
            w.judge(t0 + ms(160), last, media, RTT),
            Verdict::Dead(_)
        ));
    }

    #[test]
    fn an_answer_clears_the_question() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(TIMEOUT);
        w.asked(t0 + ms(60), t0);
        // The ack (any byte) at 70 ms: alive, and the next silence is
        // checked again.
        let last = t0 + ms(70);
        assert_eq!(w.judge(t0 + ms(200), last, Some(t0), RTT), Verdict::Check);
        w.asked(t0 + ms(200), last);
        assert_eq!(w.judge(t0 + ms(250), last, Some(t0), RTT), Verdict::Alive);
        // A later keepalive does not push the pending question back.
        w.asked(t0 + ms(280), last);
        assert!(matches!(
            w.judge(t0 + ms(300), last, Some(t0), RTT),
            Verdict::Dead(_)
        ));
    }

    #[test]
    fn without_media_only_the_regular_keepalives_ask() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(TIMEOUT);
        // No media ever, or none for over a second: no checks.
        for media in [None, Some(t0 - ms(1_001))] {
            assert_eq!(w.judge(t0 + ms(300), t0, media, RTT), Verdict::Alive);
        }
        w.asked(t0 + ms(150), t0);
        assert!(matches!(
            w.judge(t0 + ms(250), t0, None, RTT),
            Verdict::Dead(_)
        ));
    }

    #[test]
    fn on_a_lossy_path_only_the_ceiling_judges() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(TIMEOUT);
        // 3 of 50 packets lost in the current window: lossy at once.
        w.path_counts(t0, 50, 3);
        w.asked(t0 + ms(60), t0);
        assert_eq!(w.judge(t0 + ms(300), t0, Some(t0), RTT), Verdict::Alive);
        assert!(matches!(
            w.judge(t0 + TIMEOUT, t0, Some(t0), RTT),
            Verdict::Dead(_)
        ));
        // The window closes lossy; the next one loses 1 of 100 (1%):
        // lossy until it closes too, then quick again.
        let t1 = t0 + LOSS_WINDOW * 2;
        w.path_counts(t1, 100, 5);
        w.path_counts(t1 + ms(500), 150, 6);
        w.asked(t1 + ms(560), t1 + ms(500));
        assert_eq!(
            w.judge(t1 + ms(660), t1 + ms(500), Some(t1), RTT),
            Verdict::Alive
        );
        let t2 = t1 + LOSS_WINDOW;
        w.path_counts(t2, 200, 6);
        w.asked(t2 + ms(60), t2);
        assert!(matches!(
            w.judge(t2 + ms(160), t2, Some(t2), RTT),
            Verdict::Dead(_)
        ));
    }

    #[test]
    fn far_edges_get_four_round_trips_within_the_ceiling() {
        assert_eq!(ack_wait(ms(60), TIMEOUT), ms(240));
        assert_eq!(ack_wait(ms(200), TIMEOUT), TIMEOUT);
        assert_eq!(ack_wait(ms(1), TIMEOUT), MIN_ACK_WAIT);
        // The ceiling from the last byte holds with no question asked.
        let t0 = Instant::now();
        let w = Watchdog::new(TIMEOUT);
        assert!(matches!(
            w.judge(t0 + TIMEOUT, t0, None, RTT),
            Verdict::Dead(_)
        ));
        assert_eq!(w.next_look(t0, None, RTT), t0 + TIMEOUT);
    }
}
