//! Probe statistics for one link: smoothed RTT, jitter, loss and liveness.
//!
//! Why: route computation needs a stable, cheap summary of each link, not a
//! stream of raw samples. The estimators are the classic ones so their
//! behaviour is well understood:
//!
//! - smoothed RTT: exponentially weighted moving average with gain 1/8, as
//!   RFC 6298 uses for TCP's SRTT (reacts within about 8 samples, ignores one
//!   outlier);
//! - jitter: mean deviation of the difference between consecutive RTT samples
//!   with gain 1/16, RFC 3550's interarrival jitter applied to probe RTTs;
//! - loss: the fraction of lost probes among the last N resolved ones (a
//!   sliding window, so a link that recovers is forgiven after N probes);
//! - liveness: the time the last reply arrived, compared with a deadline.
//!
//! No clock is read here: the caller passes every instant and duration, so
//! the code is deterministic and tested without sleeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Default number of probes in the loss window: at one probe per 200 ms this
/// is the last 10 seconds, enough to see 2% loss and still forget an episode
/// quickly.
pub const DEFAULT_LOSS_WINDOW: usize = 50;

/// Gain of the smoothed RTT (RFC 6298's alpha).
pub const RTT_GAIN: f64 = 1.0 / 8.0;

/// Gain of the jitter estimate (RFC 3550's 1/16).
pub const JITTER_GAIN: f64 = 1.0 / 16.0;

/// The serialisable summary of a link that probes publish and route
/// computation consumes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkSummary {
    /// Smoothed round-trip time in ms.
    pub rtt_ms: f64,
    /// Jitter (mean deviation of consecutive RTT differences) in ms.
    pub jitter_ms: f64,
    /// Fraction of probes lost in the window, 0..=1.
    pub loss: f64,
    /// Number of RTT samples (replies) that shaped `rtt_ms` since the link's
    /// statistics were created.
    pub samples: u64,
}

/// What [`LinkStats::on_reply`] made of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// An answer to a pending probe: RTT, jitter, loss and liveness updated.
    Accepted,
    /// An answer to a probe already declared lost. The RTT sample and
    /// liveness are used (it is a real measurement, and high RTTs must be
    /// learnt), but the probe stays counted as lost: it missed its deadline,
    /// as media would have.
    Late,
    /// A second answer to the same probe: ignored.
    Duplicate,
    /// A sequence number not in the window (too old, or never sent): ignored.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    Replied,
    Lost,
    LostThenReplied,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    seq: u64,
    sent_at: Instant,
    outcome: Outcome,
}

/// Running statistics of one probed link.
#[derive(Debug, Clone)]
pub struct LinkStats {
    window: VecDeque<Probe>,
    capacity: usize,
    srtt_ms: Option<f64>,
    last_rtt_ms: Option<f64>,
    jitter_ms: f64,
    min_rtt_ms: Option<f64>,
    last_heard: Option<Instant>,
    samples: u64,
}

impl Default for LinkStats {
    fn default() -> Self {
        LinkStats::new(DEFAULT_LOSS_WINDOW)
    }
}

impl LinkStats {
    /// Statistics whose loss is measured over the last `window` probes (at
    /// least 1).
    pub fn new(window: usize) -> Self {
        let capacity = window.max(1);
        LinkStats {
            window: VecDeque::with_capacity(capacity),
            capacity,
            srtt_ms: None,
            last_rtt_ms: None,
            jitter_ms: 0.0,
            min_rtt_ms: None,
            last_heard: None,
            samples: 0,
        }
    }

    /// Records that probe `seq` left at `at`. The oldest probe leaves the
    /// window once it is full. Re-using a sequence number still in the window
    /// restarts that probe.
    pub fn on_probe_sent(&mut self, seq: u64, at: Instant) {
        self.window.retain(|p| p.seq != seq);
        if self.window.len() == self.capacity {
            self.window.pop_front();
        }
        self.window.push_back(Probe {
            seq,
            sent_at: at,
            outcome: Outcome::Pending,
        });
    }

    /// Records the reply to probe `seq`, measured at `rtt`. The reply's
    /// arrival (send time plus `rtt`) becomes the last-heard time.
    pub fn on_reply(&mut self, seq: u64, rtt: Duration) -> ReplyOutcome {
        let Some(probe) = self.window.iter_mut().find(|p| p.seq == seq) else {
            return ReplyOutcome::Unknown;
        };
        let outcome = match probe.outcome {
            Outcome::Pending => {
                probe.outcome = Outcome::Replied;
                ReplyOutcome::Accepted
            }
            Outcome::Lost => {
                probe.outcome = Outcome::LostThenReplied;
                ReplyOutcome::Late
            }
            Outcome::Replied | Outcome::LostThenReplied => return ReplyOutcome::Duplicate,
        };
        let arrived = probe.sent_at.checked_add(rtt).unwrap_or(probe.sent_at);
        self.last_heard = Some(match self.last_heard {
            Some(t) if t > arrived => t,
            _ => arrived,
        });
        self.add_rtt_sample(rtt.as_secs_f64() * 1000.0);
        outcome
    }

    /// Declares probe `seq` lost (its timer fired). Returns whether a pending
    /// probe was found.
    pub fn on_timeout(&mut self, seq: u64) -> bool {
        match self.window.iter_mut().find(|p| p.seq == seq) {
            Some(p) if p.outcome == Outcome::Pending => {
                p.outcome = Outcome::Lost;
                true
            }
            _ => false,
        }
    }

    /// Declares lost every pending probe sent more than `timeout` before
    /// `now`; returns how many. Callers with one timer per link use this
    /// instead of [`LinkStats::on_timeout`].
    pub fn expire_pending(&mut self, now: Instant, timeout: Duration) -> usize {
        let mut expired = 0;
        for p in self.window.iter_mut() {
            if p.outcome == Outcome::Pending && now.saturating_duration_since(p.sent_at) > timeout {
                p.outcome = Outcome::Lost;
                expired += 1;
            }
        }
        expired
    }

    fn add_rtt_sample(&mut self, rtt_ms: f64) {
        self.samples = self.samples.saturating_add(1);
        self.min_rtt_ms = Some(self.min_rtt_ms.map_or(rtt_ms, |m| m.min(rtt_ms)));
        self.srtt_ms = Some(match self.srtt_ms {
            None => rtt_ms,
            Some(s) => s + RTT_GAIN * (rtt_ms - s),
        });
        if let Some(last) = self.last_rtt_ms {
            let d = (rtt_ms - last).abs();
            self.jitter_ms += JITTER_GAIN * (d - self.jitter_ms);
        }
        self.last_rtt_ms = Some(rtt_ms);
    }

    /// Smoothed RTT, once a reply has been seen.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt_ms.map(ms_to_duration)
    }

    /// Lowest RTT sample seen: the link's propagation delay without queues.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt_ms.map(ms_to_duration)
    }

    /// Jitter estimate (zero until two replies have been seen).
    pub fn jitter(&self) -> Duration {
        ms_to_duration(self.jitter_ms)
    }

    /// Fraction of lost probes among the resolved probes in the window
    /// (pending ones are not counted either way); 0 when none is resolved.
    pub fn loss(&self) -> f64 {
        let (mut resolved, mut lost) = (0usize, 0usize);
        for p in &self.window {
            match p.outcome {
                Outcome::Pending => {}
                Outcome::Replied => resolved += 1,
                Outcome::Lost | Outcome::LostThenReplied => {
                    resolved += 1;
                    lost += 1;
                }
            }
        }
        if resolved == 0 {
            0.0
        } else {
            lost as f64 / resolved as f64
        }
    }

    /// When the last reply arrived.
    pub fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }

    /// Whether a reply arrived within `dead_after` before `now`. A link that
    /// never answered is not alive.
    pub fn is_alive(&self, now: Instant, dead_after: Duration) -> bool {
        self.last_heard
            .is_some_and(|t| now.saturating_duration_since(t) <= dead_after)
    }

    /// Number of RTT samples taken so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The summary to publish, or `None` before the first reply (a link with
    /// no RTT is not usable for routing anyway).
    pub fn summary(&self) -> Option<LinkSummary> {
        Some(LinkSummary {
            rtt_ms: self.srtt_ms?,
            jitter_ms: self.jitter_ms,
            loss: self.loss(),
            samples: self.samples,
        })
    }
}

fn ms_to_duration(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn first_sample_sets_srtt_then_ewma_with_gain_one_eighth() {
        let t0 = Instant::now();
        let mut s = LinkStats::default();
        assert!(s.summary().is_none());
        s.on_probe_sent(1, t0);
        assert_eq!(s.on_reply(1, ms(80)), ReplyOutcome::Accepted);
        assert_eq!(s.srtt(), Some(ms(80)));
        assert_eq!(s.jitter(), Duration::ZERO);
        s.on_probe_sent(2, t0 + ms(100));
        s.on_reply(2, ms(160));
        // 80 + (160 - 80) / 8 = 90; jitter 0 + (80 - 0) / 16 = 5.
        let sum = s.summary().expect("has samples");
        assert!((sum.rtt_ms - 90.0).abs() < 1e-9);
        assert!((sum.jitter_ms - 5.0).abs() < 1e-9);
        assert_eq!(sum.samples, 2);
        assert_eq!(sum.loss, 0.0);
        assert_eq!(s.min_rtt(), Some(ms(80)));
    }

    #[test]
    fn constant_rtt_converges_and_has_no_jitter() {
        let t0 = Instant::now();
        let mut s = LinkStats::default();
        for seq in 0..200 {
            s.on_probe_sent(seq, t0 + ms(seq * 100));
            s.on_reply(seq, ms(if seq == 0 { 500 } else { 40 }));
        }
        let sum = s.summary().expect("samples");
        assert!((sum.rtt_ms - 40.0).abs() < 0.01, "{}", sum.rtt_ms);
        assert!(sum.jitter_ms < 0.01, "{}", sum.jitter_ms);
    }

    #[test]
    fn loss_over_a_sliding_window() {
        let t0 = Instant::now();
        let mut s = LinkStats::new(10);
        for seq in 0..10 {
            s.on_probe_sent(seq, t0 + ms(seq));
            if seq % 5 == 0 {
                assert!(s.on_timeout(seq));
            } else {
                s.on_reply(seq, ms(10));
            }
        }
        assert!((s.loss() - 0.2).abs() < 1e-9);
        // Ten clean probes push the losses out of the window.
        for seq in 10..20 {
            s.on_probe_sent(seq, t0 + ms(seq));
            s.on_reply(seq, ms(10));
        }
        assert_eq!(s.loss(), 0.0);
        // Pending probes count neither way.
        s.on_probe_sent(20, t0 + ms(20));
        assert_eq!(s.loss(), 0.0);
        assert!(!s.on_timeout(99));
    }

    #[test]
    fn expire_pending_and_late_replies() {
        let t0 = Instant::now();
        let mut s = LinkStats::new(4);
        s.on_probe_sent(1, t0);
        s.on_probe_sent(2, t0 + ms(900));
        assert_eq!(s.expire_pending(t0 + ms(1001), ms(1000)), 1);
        assert_eq!(s.loss(), 1.0);
        // The late answer is a real measurement but the probe stays lost.
        assert_eq!(s.on_reply(1, ms(1500)), ReplyOutcome::Late);
        assert_eq!(s.srtt(), Some(ms(1500)));
        assert_eq!(s.loss(), 1.0);
        assert_eq!(s.on_reply(1, ms(1500)), ReplyOutcome::Duplicate);
        assert_eq!(s.on_reply(2, ms(20)), ReplyOutcome::Accepted);
        assert_eq!(s.on_reply(2, ms(20)), ReplyOutcome::Duplicate);
        assert_eq!(s.on_reply(77, ms(20)), ReplyOutcome::Unknown);
        assert!((s.loss() - 0.5).abs() < 1e-9);
        // Old probes leave the window: their replies are unknown.
        for seq in 3..=6 {
            s.on_probe_sent(seq, t0 + ms(1000 + seq));
        }
        assert_eq!(s.on_reply(1, ms(10)), ReplyOutcome::Unknown);
    }

    #[test]
    fn liveness_follows_last_reply() {
        let t0 = Instant::now();
        let mut s = LinkStats::default();
        assert!(!s.is_alive(t0, ms(1000)));
        s.on_probe_sent(1, t0);
        s.on_reply(1, ms(50));
        assert_eq!(s.last_heard(), Some(t0 + ms(50)));
        assert!(s.is_alive(t0 + ms(1050), ms(1000)));
        assert!(!s.is_alive(t0 + ms(1051), ms(1000)));
        // A clock reading before the reply (caller's race) is still alive.
        assert!(s.is_alive(t0, ms(1)));
        // A late reply to an older probe does not move last-heard backwards.
        s.on_probe_sent(2, t0 + ms(100));
        s.on_probe_sent(3, t0 + ms(200));
        s.on_reply(3, ms(10));
        s.on_reply(2, ms(20));
        assert_eq!(s.last_heard(), Some(t0 + ms(210)));
    }

    #[test]
    fn summary_roundtrips_through_serde() {
        let sum = LinkSummary {
            rtt_ms: 12.5,
            jitter_ms: 0.75,
            loss: 0.02,
            samples: 7,
        };
        let json = serde_json::to_string(&sum).expect("serialise");
        assert_eq!(
            json,
            r#"{"rtt_ms":12.5,"jitter_ms":0.75,"loss":0.02,"samples":7}"#
        );
        assert_eq!(
            serde_json::from_str::<LinkSummary>(&json).expect("parse"),
            sum
        );
    }

    #[derive(Debug, Clone)]
    enum Event {
        Send,
        Reply(u64, u64),
        Timeout(u64),
        Expire(u64),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Send),
            (0..40u64, 0..5_000u64).prop_map(|(s, r)| Event::Reply(s, r)),
            (0..40u64).prop_map(Event::Timeout),
            (0..3_000u64).prop_map(Event::Expire),
        ]
    }

    proptest! {
        #[test]
        fn estimates_stay_in_range(events in proptest::collection::vec(event(), 0..200), window in 1..20usize) {
            let t0 = Instant::now();
            let mut s = LinkStats::new(window);
            let mut seq = 0u64;
            let mut max_rtt = 0f64;
            let mut clock = 0u64;
            for e in events {
                clock += 10;
                match e {
                    Event::Send => { s.on_probe_sent(seq, t0 + ms(clock)); seq += 1; }
                    Event::Reply(sq, rtt) => {
                        if s.on_reply(sq, ms(rtt)) != ReplyOutcome::Unknown {
                            max_rtt = max_rtt.max(rtt as f64);
                        }
                    }
                    Event::Timeout(sq) => { s.on_timeout(sq); }
                    Event::Expire(t) => { s.expire_pending(t0 + ms(clock), ms(t)); }
                }
                let loss = s.loss();
                prop_assert!((0.0..=1.0).contains(&loss));
                if let Some(sum) = s.summary() {
                    prop_assert!(sum.rtt_ms >= 0.0 && sum.rtt_ms <= max_rtt + 1e-9);
                    prop_assert!(sum.jitter_ms >= 0.0 && sum.jitter_ms <= max_rtt + 1e-9);
                    prop_assert!(sum.samples > 0);
                }
            }
        }
    }
}
