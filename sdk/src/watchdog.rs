//! Dead-edge detection: how soon the client gives up on a silent edge.
//!
//! An idle timeout alone waits for the worst case (500 ms of silence). A
//! live edge is rarely silent that long: while media flows it sends a
//! packet every 30-40 ms, and its QUIC stack acknowledges what we send
//! within a round trip. So the client asks instead of waiting: when media
//! stops for [`CHECK_AFTER`] it sends a keepalive at once (one per silence,
//! the budget), and an edge from which **not a single UDP datagram**
//! arrives for [`ack_wait`] after a keepalive (a few RTTs, at least
//! [`MIN_ACK_WAIT`]) is dead. Anything at all counts, an ACK or a
//! retransmission too: on a lossy path a keepalive's answer may need a
//! retransmission, but the edge's transport is heard long before that, so
//! loss does not read as death. The quick rule applies while media flows
//! either way (then the edge sends or acknowledges every few milliseconds);
//! otherwise, and for an edge whose transport answers while its app says
//! nothing, the configured `liveness_timeout` (the ceiling from the last
//! app byte) judges.
//!
//! Pure logic: the supervisor feeds it times and counts and acts on its
//! [`Verdict`].

use std::time::Duration;

use tokio::time::Instant;

/// Media silence that prompts a check. Media arrives every 30-40 ms per
/// track; 60 ms is two missing packets of the slowest, which loss alone
/// causes rarely, and a check costs one tiny frame if it was nothing.
pub(crate) const CHECK_AFTER: Duration = Duration::from_millis(60);
/// Media counts as flowing if a packet arrived or left this recently: a
/// paused track or a channel without media gets no quick verdicts.
pub(crate) const MEDIA_RECENT: Duration = Duration::from_secs(1);
/// The least time an edge's transport gets to answer a keepalive, whatever
/// its RTT: a busy edge or client process (scheduling, a loaded machine)
/// delays it by tens of milliseconds without being dead, and a lost
/// keepalive is retransmitted within a probe timeout (about an RTT plus
/// 25 ms of ACK delay).
pub(crate) const MIN_ACK_WAIT: Duration = Duration::from_millis(100);
/// Round trips an answer may take before the edge is judged dead: room for
/// a jittery path.
const ACK_WAIT_RTTS: u32 = 4;

/// How long a keepalive may go unanswered on a path of `rtt`, within the
/// `ceiling` (`liveness_timeout`).
pub(crate) fn ack_wait(rtt: Duration, ceiling: Duration) -> Duration {
    (rtt * ACK_WAIT_RTTS).clamp(MIN_ACK_WAIT, ceiling.max(MIN_ACK_WAIT))
}

/// What the client has heard and sent on one link, at one moment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Heard {
    /// The last byte of the edge's app (a frame chunk or a datagram).
    pub last_byte: Instant,
    /// The last media datagram from the edge.
    pub last_media: Option<Instant>,
    /// UDP datagrams received on the connection so far (QUIC's count:
    /// ACKs and retransmissions included).
    pub udp_rx: u64,
    /// Datagrams (media) sent on the connection so far.
    pub datagrams_tx: u64,
    pub rtt: Duration,
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

/// A keepalive awaiting an answer: when it was sent, the UDP datagrams
/// received by then, and whether its wait is over without a verdict of
/// death (the transport answered, or media was not flowing): the liveness
/// timeout then judges the rest of the silence, and the question is not
/// looked at again (looking at a question past its wait again and again
/// would be a busy loop).
#[derive(Clone, Copy, Debug)]
struct Question {
    at: Instant,
    udp_rx: u64,
    settled: bool,
}

/// The question pending on one link, and what media did lately.
pub(crate) struct Watchdog {
    liveness_timeout: Duration,
    /// The first keepalive sent after the last app byte heard: an answer
    /// (or anything) is due.
    asked: Option<Question>,
    /// Our media datagrams sent when last looked at, and when that count
    /// last grew.
    datagrams_tx: u64,
    sent_media_at: Option<Instant>,
}

impl Watchdog {
    pub fn new(liveness_timeout: Duration) -> Self {
        Watchdog {
            liveness_timeout,
            asked: None,
            datagrams_tx: 0,
            sent_media_at: None,
        }
    }

    /// A keepalive went out at `now`.
    pub fn asked(&mut self, now: Instant, heard: &Heard) {
        self.saw(now, heard);
        if self.pending(heard.last_byte).is_none() {
            self.asked = Some(Question {
                at: now,
                udp_rx: heard.udp_rx,
                settled: false,
            });
        }
    }

    /// Note what we sent since the last look.
    fn saw(&mut self, now: Instant, heard: &Heard) {
        if heard.datagrams_tx > self.datagrams_tx {
            self.datagrams_tx = heard.datagrams_tx;
            self.sent_media_at = Some(now);
        }
    }

    /// The pending question, if no app byte came since it was asked.
    fn pending(&self, last_byte: Instant) -> Option<Question> {
        self.asked.filter(|q| q.at >= last_byte)
    }

    /// Whether a silence that began at `last_byte` ends media: only then is
    /// the edge asked at once.
    fn media_stopped(last_byte: Instant, last_media: Option<Instant>) -> bool {
        last_media.is_some_and(|m| m + MEDIA_RECENT >= last_byte)
    }

    fn media_flowing(&self, now: Instant, heard: &Heard) -> bool {
        let recent = |t: Option<Instant>| t.is_some_and(|t| t + MEDIA_RECENT >= now);
        recent(heard.last_media) || recent(self.sent_media_at)
    }

    /// The verdict at `now`.
    pub fn judge(&mut self, now: Instant, heard: &Heard) -> Verdict {
        self.saw(now, heard);
        let wait = ack_wait(heard.rtt, self.liveness_timeout);
        if let Some(q) = self.pending(heard.last_byte) {
            if !q.settled && now >= q.at + wait {
                if heard.udp_rx == q.udp_rx && self.media_flowing(now, heard) {
                    return Verdict::Dead(format!(
                        "not a packet from the edge for {} ms after a keepalive",
                        wait.as_millis()
                    ));
                }
                if let Some(asked) = self.asked.as_mut() {
                    asked.settled = true;
                }
            }
        }
        if now >= heard.last_byte + self.liveness_timeout {
            return Verdict::Dead(format!(
                "nothing heard from the edge for {} ms",
                self.liveness_timeout.as_millis()
            ));
        }
        if self.pending(heard.last_byte).is_none()
            && Self::media_stopped(heard.last_byte, heard.last_media)
            && now >= heard.last_byte + CHECK_AFTER
        {
            return Verdict::Check;
        }
        Verdict::Alive
    }

    /// When the verdict may next change if nothing is heard (from the app
    /// bytes alone: the control loop asks this on every step, so it does
    /// not read QUIC's counters).
    pub fn next_look(
        &self,
        last_byte: Instant,
        last_media: Option<Instant>,
        rtt: Duration,
    ) -> Instant {
        let mut at = last_byte + self.liveness_timeout;
        match self.pending(last_byte) {
            Some(q) if !q.settled => at = at.min(q.at + ack_wait(rtt, self.liveness_timeout)),
            Some(_) => {}
            None if Self::media_stopped(last_byte, last_media) => {
                at = at.min(last_byte + CHECK_AFTER)
            }
            None => {}
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const TIMEOUT: Duration = Duration::from_millis(500);

    /// Media received until `t`, nothing sent, `udp_rx` datagrams so far.
    fn heard(t: Instant, udp_rx: u64) -> Heard {
        Heard {
            last_byte: t,
            last_media: Some(t),
            udp_rx,
            datagrams_tx: 0,
            rtt: ms(10),
        }
    }

    #[test]
    fn a_stopped_stream_is_checked_once_and_its_silent_edge_dead_one_wait_later() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(TIMEOUT);
        let h = heard(t0, 50);
        assert_eq!(w.judge(t0 + ms(59), &h), Verdict::Alive);
        assert_eq!(
            w.next_look(h.last_byte, h.last_media, h.rtt),
            t0 + CHECK_AFTER
        );
        assert_eq!(w.judge(t0 + ms(60), &h), Verdict::Check);
        w.asked(t0 + ms(60), &h);
        // Asked: no second check, dead 100 ms (the floor; 4 RTTs is 40) on
        // if not one datagram arrives.
        assert_eq!(w.judge(t0 + ms(159), &h), Verdict::Alive);
        assert_eq!(w.next_look(h.last_byte, h.last_media, h.rtt), t0 + ms(160));
        assert!(matches!(w.judge(t0 + ms(160), &h), Verdict::Dead(_)));
    }

    #[test]
    fn a_transport_that_answers_keeps_the_edge_alive_until_the_ceiling() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(TIMEOUT);
        w.asked(t0 + ms(60), &heard(t0, 50));
        // An ACK (or a retransmission) came: the keepalive's own answer
        // may be stuck behind a lost packet, or the edge's app is hung.
        let acked = heard(t0, 51);
        assert_eq!(w.judge(t0 + ms(300), &acked), Verdict::Alive);
        assert!(matches!(w.judge(t0 + TIMEOUT, &acked), Verdict::Dead(_)));
    }

    #[test]
    fn an_answer_clears_the_question() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(TIMEOUT);
        w.asked(t0 + ms(60), &heard(t0, 50));
        // The app's answer at 70 ms: alive, and the next silence is
        // checked again.
        let answered = Heard {
            last_byte: t0 + ms(70),
            ..heard(t0, 51)
        };
        assert_eq!(w.judge(t0 + ms(200), &answered), Verdict::Check);
        w.asked(t0 + ms(200), &answered);
        assert_eq!(w.judge(t0 + ms(250), &answered), Verdict::Alive);
        // A later keepalive does not push the pending question back.
        w.asked(t0 + ms(280), &answered);
        assert!(matches!(w.judge(t0 + ms(300), &answered), Verdict::Dead(_)));
    }

    #[test]
    fn without_media_either_way_only_the_ceiling_judges() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(TIMEOUT);
        let idle = Heard {
            last_media: None,
            ..heard(t0, 50)
        };
        assert_eq!(w.judge(t0 + ms(300), &idle), Verdict::Alive, "no check");
        w.asked(t0 + ms(150), &idle);
        assert_eq!(w.judge(t0 + ms(400), &idle), Verdict::Alive);
        assert!(matches!(w.judge(t0 + TIMEOUT, &idle), Verdict::Dead(_)));
        // A publisher (media out, none in) gets the quick verdict.
        let mut w = Watchdog::new(TIMEOUT);
        let publishing = Heard {
            datagrams_tx: 40,
            ..idle
        };
        w.asked(t0 + ms(150), &publishing);
        assert!(matches!(
            w.judge(t0 + ms(250), &publishing),
            Verdict::Dead(_)
        ));
    }

    proptest::proptest! {
        /// Whatever the link hears and whenever the keepalive ticks, a look
        /// that finds the edge alive sets the next one in the future: the
        /// control loop never spins (it did, when media had stopped over a
        /// second before the last answer, or a question's wait was over).
        #[test]
        fn an_alive_verdict_never_asks_to_look_again_at_once(
            steps in proptest::collection::vec((0u64..200, 0u8..32), 1..80),
            rtt_ms in 1u64..150,
        ) {
            let t0 = Instant::now();
            let mut w = Watchdog::new(TIMEOUT);
            let mut h = Heard {
                last_media: None,
                rtt: ms(rtt_ms),
                ..heard(t0, 0)
            };
            let mut now = t0;
            for (advance, what) in steps {
                now += ms(advance);
                if what & 1 != 0 {
                    h.last_byte = now;
                }
                if what & 2 != 0 {
                    h.last_byte = now;
                    h.last_media = Some(now);
                }
                h.udp_rx += u64::from(what & 4 != 0);
                h.datagrams_tx += u64::from(what & 8 != 0);
                if what & 16 != 0 {
                    w.asked(now, &h); // the keepalive tick
                }
                match w.judge(now, &h) {
                    Verdict::Alive => {
                        let look = w.next_look(h.last_byte, h.last_media, h.rtt);
                        proptest::prop_assert!(look > now, "looks again {:?} before now", now - look);
                    }
                    Verdict::Check => w.asked(now, &h),
                    Verdict::Dead(_) => break,
                }
            }
        }
    }

    #[test]
    fn far_edges_get_four_round_trips_within_the_ceiling() {
        assert_eq!(ack_wait(ms(60), TIMEOUT), ms(240));
        assert_eq!(ack_wait(ms(200), TIMEOUT), TIMEOUT);
        assert_eq!(ack_wait(ms(1), TIMEOUT), MIN_ACK_WAIT);
        let t0 = Instant::now();
        let w = Watchdog::new(TIMEOUT);
        let h = heard(t0, 0);
        assert_eq!(
            w.next_look(h.last_byte, h.last_media, h.rtt),
            t0 + CHECK_AFTER
        );
    }
}
