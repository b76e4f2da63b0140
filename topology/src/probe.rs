//! Probe statistics for one link: RTT, jitter, loss and liveness.
//!
//! Why: route computation needs a stable, cheap summary of each link, not a
//! stream of raw samples, and one that a busy machine does not distort. The
//! estimators are chosen to be robust, because what the controller does with
//! them (compare paths within a few percent) amplifies noise:
//!
//! - **RTT: the 25th percentile of the last [`RTT_WINDOW`] samples.** A probe
//!   can only be delayed, never sped up, by the things that are not the link:
//!   a descheduled task at either end, a queue behind a media burst. A low
//!   percentile ignores such outliers as long as most samples escape them,
//!   where a moving average (RFC 6298's SRTT, used before) carries each one
//!   for a dozen samples: links configured at 0.3 ms of jitter read 1.5-2.6 ms,
//!   and more under CPU load. Not the minimum: one lucky sample would set it,
//!   and on a link with real jitter the minimum under-reads the delay media
//!   sees. It follows a step in about [`RTT_WINDOW`] × 3/4 samples up and
//!   [`RTT_WINDOW`] / 4 down.
//! - **Jitter: twice the distance from the 25th percentile to the median**
//!   of the same window: for a path's own jitter, which delays as many
//!   packets as it speeds up, that is the interquartile range; delays from
//!   the probing machine (scheduling, a queue behind media) only ever add,
//!   and move it only once they hit half the samples, where the upper half
//!   of the distribution (the interquartile range itself) grew with every
//!   busy moment: on a loaded 60-edge lab a tenth of the links read over
//!   25 ms of jitter for 0.3 ms configured. RFC 3550's mean deviation, used
//!   before, is moved by every outlier.
//! - **Loss: the fraction of lost probes over an adaptive window** of the last
//!   [`LOSS_WINDOW_MIN`] to [`LOSS_WINDOW_MAX`] resolved probes: the longest
//!   window taken back in stretches of [`LOSS_STRETCH`] probes each of
//!   which agrees, on its own and with those before it, with the newest
//!   [`LOSS_WINDOW_MIN`] probes (a two-proportion test at
//!   [`LOSS_CHANGE_Z`] standard errors). A stable
//!   link gets the long window's precision (at 5% loss, ±2.1% at 90%
//!   confidence over 300 probes, against ±5.1% over 50: a 50-probe window read
//!   0.10 for 0.06), and a link that changes is followed at the short
//!   window's speed. [`LinkStats::loss_interval`] gives its confidence
//!   bounds, and [`LinkStats::wants_samples`] asks for probes at the fast
//!   rate while a link that lost probes has a short window: one lost probe
//!   in 28 reads 3.6% (a stall at either end, seen on a loaded lab on
//!   every link of an edge at once) and is diluted within seconds, and a
//!   lossy link reaches the long window's precision within a minute.
//! - **Liveness**: the time the last reply arrived, compared with a deadline.
//!
//! No clock is read here: the caller passes every instant and duration, so
//! the code is deterministic and tested without sleeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// RTT samples the RTT and jitter estimates are taken over. 20: at the
/// edges' fast probe rate (5/s) the last 4 s, so a link that got slower reads
/// so within about 3 s; enough samples that a quarter of them can be
/// outliers without moving the 25th percentile.
pub const RTT_WINDOW: usize = 20;

/// The percentile of the RTT window reported as the link's RTT.
pub const RTT_PERCENTILE: f64 = 25.0;

/// RTT samples older than this (by arrival) leave the window once
/// [`RTT_MIN_SAMPLES`] newer ones are in it: a link probed more slowly
/// than usual would otherwise hold minutes of history, and with it whatever
/// disturbed the link (or the prober) back then. 40 s: a link probed at the
/// edges' slow rate (every 2 s) keeps all [`RTT_WINDOW`] samples. At 20 s
/// it kept ten, whose median, and with it the jitter estimate, jumped with
/// single samples on a loaded machine: replaying the probes of two edges of
/// a 60-edge lab, their idle links' costs moved by more than 3% (the
/// controller's hysteresis) 18 times in 40 s, against 4 times at 40 s. The
/// price: an idle link that gets slower reads so after about 30 s rather
/// than 15 s. One that loses probes is measured at the fast rate
/// ([`LinkStats::wants_samples`]), and one that carries traffic is probed
/// fast anyway.
pub const RTT_MAX_AGE: Duration = Duration::from_secs(40);

/// Samples kept whatever their age.
pub const RTT_MIN_SAMPLES: usize = 5;

/// The shortest loss window, in resolved probes: 10 s at 5 probes/s, the
/// window a change in loss is detected over.
pub const LOSS_WINDOW_MIN: usize = 50;

/// The older part of the loss window is taken in stretches of this many
/// probes, each tested on its own against the newest [`LOSS_WINDOW_MIN`]
/// ([`LinkStats::loss`]): short enough that a spell of a few seconds fills
/// most of one, long enough that the test has some power (12 lost of 25
/// against none of 50 disagree at [`LOSS_CHANGE_Z`]; 4 do not).
pub const LOSS_STRETCH: usize = 25;

/// The longest loss window: 60 s at 5 probes/s. Longer would follow a link's
/// real changes too slowly even with the change test, since the test needs
/// the newest [`LOSS_WINDOW_MIN`] probes to disagree.
pub const LOSS_WINDOW_MAX: usize = 300;

/// How many standard errors the newest probes' loss must differ from the
/// older ones' for the window to be cut back to the newest. 3: a stable link
/// is cut back in about 1% of its estimates (0.9% at 5% loss in the unit
/// test; each costs some precision for a while, nothing else), and a link
/// going from 0% to 10% loss is detected within about [`LOSS_WINDOW_MIN`]
/// probes.
pub const LOSS_CHANGE_Z: f64 = 3.0;

/// The z-score of [`LinkStats::loss_interval`]: a two-sided 90% interval.
pub const LOSS_INTERVAL_Z: f64 = 1.645;

/// The serialisable summary of a link that probes publish and route
/// computation consumes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkSummary {
    /// Round-trip time in ms: the 25th percentile of the recent samples.
    pub rtt_ms: f64,
    /// Jitter in ms: twice the distance from the 25th percentile of the
    /// recent RTT samples to their median (their interquartile range when
    /// the spread is symmetric).
    pub jitter_ms: f64,
    /// Fraction of probes lost (either way) over the adaptive window, 0..=1.
    pub loss: f64,
    /// Number of RTT samples (replies) taken since the link's statistics
    /// were created.
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

impl Outcome {
    /// Whether the probe is resolved, and if so whether it was lost.
    fn lost(self) -> Option<bool> {
        match self {
            Outcome::Pending => None,
            Outcome::Replied => Some(false),
            Outcome::Lost | Outcome::LostThenReplied => Some(true),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    seq: u64,
    sent_at: Instant,
    outcome: Outcome,
}

#[derive(Debug, Clone, Copy)]
struct RttSample {
    arrived: Instant,
    ms: f64,
    /// The reply came after its probe was declared lost.
    late: bool,
}

/// Running statistics of one probed link.
#[derive(Debug, Clone)]
pub struct LinkStats {
    /// The last probes sent, oldest first, with their outcomes.
    window: VecDeque<Probe>,
    capacity: usize,
    /// The last RTT samples, oldest first.
    rtts: VecDeque<RttSample>,
    last_heard: Option<Instant>,
    samples: u64,
}

impl Default for LinkStats {
    fn default() -> Self {
        LinkStats::new(LOSS_WINDOW_MAX)
    }
}

impl LinkStats {
    /// Statistics whose loss is measured over at most the last `window`
    /// probes (at least 1).
    pub fn new(window: usize) -> Self {
        let capacity = window.max(1);
        LinkStats {
            window: VecDeque::with_capacity(capacity.min(LOSS_WINDOW_MAX)),
            capacity,
            rtts: VecDeque::with_capacity(RTT_WINDOW),
            last_heard: None,
            samples: 0,
        }
    }

    /// Records that probe `seq` left at `at`. The oldest probe leaves the
    /// window once it is full. Re-using a sequence number still in the window
    /// restarts that probe.
    pub fn on_probe_sent(&mut self, seq: u64, at: Instant) {
        if let Some(i) = self.window.iter().rposition(|p| p.seq == seq) {
            self.window.remove(i);
        }
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
        // Replies come for recent probes: search from the newest.
        let Some(probe) = self.window.iter_mut().rev().find(|p| p.seq == seq) else {
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
        self.add_rtt_sample(RttSample {
            arrived,
            ms: rtt.as_secs_f64() * 1000.0,
            late: outcome == ReplyOutcome::Late,
        });
        outcome
    }

    /// Declares probe `seq` lost (its timer fired). Returns whether a pending
    /// probe was found.
    pub fn on_timeout(&mut self, seq: u64) -> bool {
        match self.window.iter_mut().rev().find(|p| p.seq == seq) {
            Some(p) if p.outcome == Outcome::Pending => {
                p.outcome = Outcome::Lost;
                true
            }
            _ => false,
        }
    }

    /// Forgets an outage that probe `answered`, just answered in time,
    /// ended: the probes lost, answered late, or still unanswered since the
    /// last probe answered in time before it, and the late replies' RTT
    /// samples. An outage is the far end not heard from yet, seen dead, its
    /// process restarted, or the link cut. Its probes measured the outage,
    /// which routing already handled by leaving the link out, not the
    /// link's loss; and those still pending went to a connection the far
    /// end no longer has, so they would be lost later. Kept, they read as
    /// loss for up to [`LOSS_WINDOW_MIN`] probes after the link came back
    /// (10 s at the fast rate, far longer at the slow one; measured in the
    /// lab's relay-kill plan: 75% loss published for a restarted edge's
    /// link, 13% still 8 s later) and steer routes away from a healthy
    /// link. The run of losses that made the link look dead goes too (a
    /// link that loses runs that long reads somewhat better than it is; it
    /// was out of the routes meanwhile, and is again at its next such run).
    ///
    /// Only an answer in time ends an outage. A late one (its probe already
    /// declared lost) is what a starting mesh gives: in a 60-edge lab, the
    /// first replies on many links took 1.1-1.5 s while every edge was
    /// dialling its peers, and the probes sent until the first timely
    /// answer were lost or late. Ended by the first late answer, the outage
    /// left them in the window: 5 s in, 222 of 3,540 links published 2-33%
    /// loss and jitter up to 480 ms on a mesh that loses nothing; 40 s in,
    /// slow-probed links still read 5%, and routes moved away and back all
    /// that time.
    pub fn forget_outage(&mut self, answered: u64) {
        let Some(end) = self.window.iter().rposition(|p| p.seq == answered) else {
            return;
        };
        if self.window[end].outcome != Outcome::Replied {
            return;
        }
        let start = self
            .window
            .range(..end)
            .rposition(|p| p.outcome == Outcome::Replied)
            .map_or(0, |i| i + 1);
        let mut i = 0;
        self.window.retain(|p| {
            let in_outage = (start..end).contains(&i);
            i += 1;
            !(in_outage && p.outcome != Outcome::Replied)
        });
        self.rtts.retain(|r| !r.late);
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

    fn add_rtt_sample(&mut self, sample: RttSample) {
        self.samples = self.samples.saturating_add(1);
        if self.rtts.len() == RTT_WINDOW {
            self.rtts.pop_front();
        }
        self.rtts.push_back(sample);
        while self.rtts.len() > RTT_MIN_SAMPLES
            && self.rtts.front().is_some_and(|old| {
                sample.arrived.saturating_duration_since(old.arrived) > RTT_MAX_AGE
            })
        {
            self.rtts.pop_front();
        }
    }

    /// The RTT window's percentiles `ps` (0..=100), by linear interpolation
    /// between the sorted samples; `None` before the first sample.
    fn rtt_percentiles<const N: usize>(&self, ps: [f64; N]) -> Option<[f64; N]> {
        if self.rtts.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = self.rtts.iter().map(|r| r.ms).collect();
        sorted.sort_by(f64::total_cmp);
        Some(ps.map(|p| interpolated(&sorted, p)))
    }

    /// The link's RTT: the [`RTT_PERCENTILE`] of the recent samples, once a
    /// reply has been seen.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt_ms().map(ms_to_duration)
    }

    fn rtt_ms(&self) -> Option<f64> {
        self.rtt_percentiles([RTT_PERCENTILE]).map(|[p]| p)
    }

    /// Jitter: twice the distance from the 25th percentile of the recent
    /// RTT samples to their median (zero until two replies have been seen).
    pub fn jitter(&self) -> Duration {
        ms_to_duration(self.jitter_ms())
    }

    fn jitter_ms(&self) -> f64 {
        self.rtt_percentiles([25.0, 50.0])
            .map_or(0.0, |[q1, median]| 2.0 * (median - q1).max(0.0))
    }

    /// (lost, resolved) over the newest `n` resolved probes.
    fn losses_over(&self, n: usize) -> (usize, usize) {
        let (mut lost, mut resolved) = (0, 0);
        for l in self.window.iter().rev().filter_map(|p| p.outcome.lost()) {
            if resolved == n {
                break;
            }
            resolved += 1;
            lost += l as usize;
        }
        (lost, resolved)
    }

    /// (lost, resolved) over the adaptive window: the newest
    /// [`LOSS_WINDOW_MIN`] probes, extended into the past by stretches of
    /// [`LOSS_STRETCH`] probes for as long as each stretch, on its own and
    /// with the stretches before it, agrees with the newest probes (on its
    /// own, a stretch is too short to tell 20% from nothing; together with
    /// the others it is diluted). Where one does not (a change), the
    /// stretch just after it goes too if it leans the same way: a change
    /// rarely falls on a stretch's edge, and the few probes of the other
    /// side in that stretch are too few to disagree on their own.
    ///
    /// Each stretch is tested on its own, not the whole older part at once:
    /// a lossy spell behind a long clean history agrees with clean newest
    /// probes once the history dilutes it. Tested as a whole (the first
    /// version), a 14 s spell at 51% loss (the lab's Miami, every link at
    /// 30% each way) still read 10-11% 36 s after the links healed, steered
    /// routes around them (stretch 1.15), and would have stayed until the
    /// spell left the longest window: 300 probes, ten minutes at the slow
    /// rate an avoided, idle link is probed at.
    fn loss_window(&self) -> (usize, usize) {
        let (new_lost, new) = self.losses_over(LOSS_WINDOW_MIN);
        let new_rate = new_lost as f64 / new.max(1) as f64;
        let lean = |lost: usize, n: usize| (lost as f64 / n as f64).total_cmp(&new_rate);
        // (lost, resolved) up to the end of the last stretch taken, and of
        // the one before it (none while only the newest are taken).
        let (mut end, mut before) = ((new_lost, new), None);
        loop {
            let (lost, resolved) = end;
            let (wider_lost, wider) = self.losses_over(resolved + LOSS_STRETCH);
            if wider == resolved {
                return end;
            }
            let (stretch_lost, stretch) = (wider_lost - lost, wider - resolved);
            let agrees = proportions_agree(new_lost, new, stretch_lost, stretch)
                && proportions_agree(new_lost, new, wider_lost - new_lost, wider - new);
            if !agrees {
                return match before {
                    Some((b_lost, b_resolved))
                        if lean(lost - b_lost, resolved - b_resolved)
                            == lean(stretch_lost, stretch) =>
                    {
                        (b_lost, b_resolved)
                    }
                    _ => end,
                };
            }
            (before, end) = (Some(end), (wider_lost, wider));
        }
    }

    /// Fraction of lost probes over the adaptive loss window (pending ones
    /// are not counted either way); 0 when none is resolved.
    pub fn loss(&self) -> f64 {
        let (lost, resolved) = self.loss_window();
        if resolved == 0 {
            0.0
        } else {
            lost as f64 / resolved as f64
        }
    }

    /// The Wilson score interval of the loss at [`LOSS_INTERVAL_Z`] (90%),
    /// over the same window as [`LinkStats::loss`]; `(0, 1)` when nothing is
    /// resolved yet.
    pub fn loss_interval(&self) -> (f64, f64) {
        let (lost, n) = self.loss_window();
        wilson(lost, n, LOSS_INTERVAL_Z)
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

    /// Whether more probes would change what the summary says: fewer than
    /// [`RTT_MIN_SAMPLES`] replies yet, or a lost probe in the adaptive
    /// window ([`LinkStats::loss`]'s) while it is not yet full. A clean link
    /// is measured well enough by a few probes; a lossy one needs hundreds
    /// before its loss is known (the published figure is the lower end of
    /// its confidence interval, which a short window keeps low), and a link
    /// that lost a probe once by accident is cleared the same way. A link
    /// whose lossy spell is over wants no more once the spell is told apart
    /// from its newest probes: counted over the whole window, the spell kept
    /// it wanting until the window filled (60 s at the fast rate), holding
    /// one of the few fast-rate places the prober gives slow links while an
    /// edge's other links, healed with it, waited at the slow rate (a grey
    /// edge's 24 link directions healed at once in the lab: the last read
    /// clean about 26 s after the heal, 21 s since; half within 11 s).
    pub fn wants_samples(&self) -> bool {
        let (lost, resolved) = self.loss_window();
        self.samples < RTT_MIN_SAMPLES as u64 || (lost > 0 && resolved < self.capacity)
    }

    /// The summary to publish, or `None` before the first reply (a link with
    /// no RTT is not usable for routing anyway).
    pub fn summary(&self) -> Option<LinkSummary> {
        Some(LinkSummary {
            rtt_ms: self.rtt_ms()?,
            jitter_ms: self.jitter_ms(),
            loss: self.loss(),
            samples: self.samples,
        })
    }
}

/// Whether `a_lost` of `a` and `b_lost` of `b` can be the same loss rate:
/// their difference is within [`LOSS_CHANGE_Z`] standard errors of the
/// pooled rate. The pooled rate is taken with one loss and one success
/// added (Laplace's rule), so that a first loss after a clean history is
/// not, by itself, a change.
fn proportions_agree(a_lost: usize, a: usize, b_lost: usize, b: usize) -> bool {
    if a == 0 || b == 0 {
        return true;
    }
    let (pa, pb) = (a_lost as f64 / a as f64, b_lost as f64 / b as f64);
    let pooled = (a_lost + b_lost + 1) as f64 / (a + b + 2) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / a as f64 + 1.0 / b as f64)).sqrt();
    (pa - pb).abs() <= LOSS_CHANGE_Z * se
}

/// The Wilson score interval of `lost` in `n` at `z` standard errors.
fn wilson(lost: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (n, p) = (n as f64, lost as f64 / n as f64);
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Percentile `p` (0..=100) of sorted, non-empty `v`, interpolating
/// linearly between neighbours (the "type 7" estimator of R and NumPy).
fn interpolated(v: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0).clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
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

    /// Send probe `seq` at `t0 + seq × 200 ms` and answer it after `rtt` ms
    /// (`None`: it is lost).
    fn probe(s: &mut LinkStats, t0: Instant, seq: u64, rtt: Option<f64>) {
        s.on_probe_sent(seq, t0 + ms(seq * 200));
        match rtt {
            Some(r) => {
                s.on_reply(seq, Duration::from_secs_f64(r / 1000.0));
            }
            None => {
                s.on_timeout(seq);
            }
        }
    }

    #[test]
    fn rtt_is_the_windows_25th_percentile_and_jitter_twice_its_lower_quarter() {
        let t0 = Instant::now();
        let mut s = LinkStats::default();
        assert!(s.summary().is_none());
        probe(&mut s, t0, 0, Some(80.0));
        assert_eq!(s.rtt(), Some(ms(80)));
        assert_eq!(s.jitter(), Duration::ZERO);
        // Samples 80, 84, 88, 92, 96: q1 84, median 88 (ranks 1 and 2).
        for (seq, rtt) in [(1, 84.0), (2, 88.0), (3, 92.0), (4, 96.0)] {
            probe(&mut s, t0, seq, Some(rtt));
        }
        let sum = s.summary().expect("has samples");
        assert!((sum.rtt_ms - 84.0).abs() < 1e-9, "{sum:?}");
        assert!((sum.jitter_ms - 8.0).abs() < 1e-9, "{sum:?}");
        assert_eq!(sum.samples, 5);
        assert_eq!(sum.loss, 0.0);
        // Only the last RTT_WINDOW samples count.
        for seq in 5..5 + RTT_WINDOW as u64 {
            probe(&mut s, t0, seq, Some(40.0));
        }
        let sum = s.summary().expect("samples");
        assert_eq!((sum.rtt_ms, sum.jitter_ms), (40.0, 0.0));
    }

    #[test]
    fn scheduler_outliers_move_neither_rtt_nor_jitter() {
        // A 40 ms link whose prober is descheduled for 5-30 ms on one probe
        // in five (a loaded machine): the moving average and RFC 3550 jitter
        // used before read about 43 and 6 ms.
        let t0 = Instant::now();
        let mut s = LinkStats::default();
        for seq in 0..100u64 {
            let late = if seq % 5 == 2 {
                5.0 + (seq % 26) as f64
            } else {
                0.0
            };
            probe(&mut s, t0, seq, Some(40.0 + late));
        }
        let sum = s.summary().expect("samples");
        assert_eq!(sum.rtt_ms, 40.0, "{sum:?}");
        assert!(sum.jitter_ms < 0.5, "{sum:?}");
    }

    #[test]
    fn a_slower_link_is_read_within_the_window() {
        let t0 = Instant::now();
        let mut s = LinkStats::default();
        for seq in 0..40 {
            probe(&mut s, t0, seq, Some(40.0));
        }
        // +100 ms: after 3/4 of the window the 25th percentile follows.
        let steps = (40..80)
            .position(|seq| {
                probe(&mut s, t0, seq, Some(140.0));
                s.rtt_ms().unwrap() > 139.0
            })
            .expect("follows");
        assert!(steps < RTT_WINDOW, "{steps}");
        // Faster again: a quarter of the window suffices.
        let steps = (80..120)
            .position(|seq| {
                probe(&mut s, t0, seq, Some(40.0));
                s.rtt_ms().unwrap() < 41.0
            })
            .expect("follows");
        assert!(steps <= RTT_WINDOW / 4 + 1, "{steps}");
    }

    #[test]
    fn a_stable_lossy_link_gets_the_long_windows_precision() {
        // Exactly 6% loss, spread evenly: over 300 probes the estimate is
        // exact, and the 90% interval is a few points wide.
        let t0 = Instant::now();
        let mut s = LinkStats::default();
        for seq in 0..600u64 {
            let lost = seq % 50 < 3;
            probe(&mut s, t0, seq, (!lost).then_some(40.0));
        }
        assert!((s.loss() - 0.06).abs() < 1e-9, "{}", s.loss());
        let (lo, hi) = s.loss_interval();
        assert!(lo > 0.035 && hi < 0.095, "({lo}, {hi})");
    }

    #[test]
    fn a_change_in_loss_is_followed_at_the_short_windows_speed() {
        let t0 = Instant::now();
        let mut s = LinkStats::default();
        for seq in 0..300u64 {
            probe(&mut s, t0, seq, Some(40.0));
        }
        assert_eq!(s.loss(), 0.0);
        // One lost probe after a clean history is not a change.
        probe(&mut s, t0, 300, None);
        assert!((s.loss() - 1.0 / 300.0).abs() < 1e-9, "{}", s.loss());
        // 20% loss from now on: the long window would say about 3% after 50
        // probes; the estimate follows the new rate instead.
        for seq in 301..351u64 {
            probe(&mut s, t0, seq, (seq % 5 != 0).then_some(40.0));
        }
        assert!(s.loss() > 0.12, "{}", s.loss());
        // Clean again: once the newest probes are clean and the spell is
        // told apart from them, it no longer counts.
        for seq in 351..451u64 {
            probe(&mut s, t0, seq, Some(40.0));
        }
        assert!(s.loss() < 0.05, "{}", s.loss());
        for seq in 451..651u64 {
            probe(&mut s, t0, seq, Some(40.0));
        }
        assert_eq!(s.loss(), 0.0);
    }

    #[test]
    fn a_lossy_spell_behind_a_clean_history_is_forgotten_once_told_apart() {
        // Clean for 100 probes, 70 probes at 45% loss (a link degraded for
        // 14 s), then clean. Tested as a whole, the older part (spell plus
        // clean history) agreed with the clean newest probes once the
        // history diluted the spell, and the window kept it: 13% read 107
        // clean probes after the spell (the lab: 10-11% 36 s after the heal).
        let t0 = Instant::now();
        let mut s = LinkStats::default();
        let mut seq = 0u64;
        for _ in 0..100 {
            probe(&mut s, t0, seq, Some(40.0));
            seq += 1;
        }
        for i in 0..70u64 {
            probe(&mut s, t0, seq, (i % 20 >= 9).then_some(40.0));
            seq += 1;
        }
        assert!(s.loss() > 0.3, "the spell is read: {}", s.loss());
        let mut worst_after_heal = Vec::new();
        for clean in 1..=400u64 {
            probe(&mut s, t0, seq, Some(40.0));
            seq += 1;
            if clean >= LOSS_WINDOW_MIN as u64 {
                worst_after_heal.push((clean, s.loss()));
            }
        }
        let worst = worst_after_heal
            .iter()
            .copied()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert!(
            worst.1 < 0.02,
            "read {:.3} {} clean probes after the heal",
            worst.1,
            worst.0
        );
        // Nor does it keep asking for probes at the fast rate.
        assert!(!s.wants_samples());
    }

    #[test]
    fn a_stable_link_keeps_the_long_window_nearly_always() {
        // 5% loss drawn at random (a fixed seed): testing each older stretch
        // on its own makes more tests than testing the older part as a
        // whole, so count how often a stable link's window is cut short.
        let t0 = Instant::now();
        let mut s = LinkStats::default();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let (mut estimates, mut short, mut worst) = (0u32, 0u32, 0f64);
        for seq in 0..20_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let lost = rng % 100 < 5;
            probe(&mut s, t0, seq, (!lost).then_some(40.0));
            if seq >= LOSS_WINDOW_MAX as u64 {
                estimates += 1;
                short += u32::from(s.loss_window().1 < LOSS_WINDOW_MAX);
                worst = worst.max((s.loss() - 0.05).abs());
            }
        }
        let share = f64::from(short) / f64::from(estimates);
        assert!(
            share < 0.03,
            "window cut short in {:.2}% of estimates",
            share * 100.0
        );
        assert!(worst < 0.08, "worst error {worst:.3}");
    }

    #[test]
    fn old_samples_leave_a_slowly_probed_window() {
        // One probe every 4 s: the first ten are from a disturbed start
        // (300 ms), the next ten clean (40 ms). Kept, the start would be
        // half the window and move its median; older than RTT_MAX_AGE, it
        // is gone.
        let t0 = Instant::now();
        let mut s = LinkStats::default();
        for seq in 0..20u64 {
            s.on_probe_sent(seq, t0 + Duration::from_secs(4 * seq));
            s.on_reply(seq, ms(if seq < 10 { 300 } else { 40 }));
        }
        assert!(s.rtts.len() < RTT_WINDOW);
        let sum = s.summary().expect("samples");
        assert_eq!((sum.rtt_ms, sum.jitter_ms), (40.0, 0.0), "{sum:?}");
        // Fewer than RTT_MIN_SAMPLES recent ones: old ones stay.
        let mut s = LinkStats::default();
        for seq in 0..3u64 {
            s.on_probe_sent(seq, t0 + Duration::from_secs(60 * seq));
            s.on_reply(seq, ms(40 + seq));
        }
        assert_eq!(s.rtts.len(), 3);
    }

    #[test]
    fn links_that_lose_probes_want_more_until_their_window_is_full() {
        let t0 = Instant::now();
        let mut s = LinkStats::default();
        assert!(s.wants_samples(), "new");
        for seq in 0..5u64 {
            probe(&mut s, t0, seq, Some(40.0));
        }
        assert!(!s.wants_samples(), "a few clean replies suffice");
        probe(&mut s, t0, 5, None);
        assert!(s.wants_samples(), "a lost probe: measure more");
        for seq in 6..(LOSS_WINDOW_MAX as u64 + 6) {
            probe(&mut s, t0, seq, Some(40.0));
        }
        assert!(!s.wants_samples(), "the window is full");
        assert!(s.loss() < 0.004, "{}", s.loss());
    }

    #[test]
    fn an_outage_is_not_loss_once_the_link_answers_again() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = LinkStats::default();
        let mut seq = 0;
        let mut probe = |s: &mut LinkStats, at: Duration, answered: bool| {
            seq += 1;
            s.on_probe_sent(seq, t0 + at);
            if answered {
                s.on_reply(seq, ms(10));
            } else {
                s.on_timeout(seq);
            }
        };
        // 100 probes, 2 lost: a 2% link. Then three lost (the dead
        // verdict), then 50 lost while the far end was down.
        for i in 0..100 {
            probe(&mut s, ms(200 * i), i % 50 != 7);
        }
        for i in 100..103 {
            probe(&mut s, ms(200 * i), false);
        }
        for i in 103..153 {
            probe(&mut s, ms(200 * i), false);
        }
        assert!(s.loss() > 0.3, "the outage reads as loss: {}", s.loss());
        // Two more went to the old connection and are still pending when a
        // later one is answered: the outage is forgotten from the last
        // answer before it, pending ones included; the link's loss before
        // it is not, nor a probe sent after the answered one.
        s.on_probe_sent(1_000, t0 + ms(200 * 153));
        s.on_probe_sent(1_001, t0 + ms(200 * 154));
        probe(&mut s, ms(200 * 155), true);
        s.on_probe_sent(1_002, t0 + ms(200 * 156));
        s.forget_outage(seq);
        let (lost, resolved) = s.losses_over(usize::MAX);
        assert_eq!((lost, resolved), (2, 101));
        assert!((s.loss() - 2.0 / 101.0).abs() < 1e-9, "{}", s.loss());
        assert_eq!(s.window.back().map(|p| p.seq), Some(1_002));
        assert_eq!(s.window.len(), 102, "the newest pending probe stays");
    }

    #[test]
    fn a_start_answered_late_is_an_outage_until_an_answer_in_time() {
        // A mesh starting: the first probes of a link are answered after
        // their deadline (1.2 s) or not at all, then the link answers in
        // 40 ms. Only that timely answer ends the outage, which forgets the
        // late ones, their RTT samples and the lost ones.
        let t0 = Instant::now();
        let timeout = Duration::from_secs(1);
        let mut s = LinkStats::default();
        for seq in 0..6u64 {
            s.on_probe_sent(seq, t0 + ms(200 * seq));
        }
        s.expire_pending(t0 + ms(1_500), timeout);
        assert_eq!(s.on_reply(0, ms(1_200)), ReplyOutcome::Late);
        s.forget_outage(0);
        assert!(s.loss() > 0.0, "a late answer does not end the outage");
        assert_eq!(s.on_reply(2, ms(1_150)), ReplyOutcome::Late);
        s.expire_pending(t0 + ms(1_900), timeout);
        assert_eq!(s.on_reply(5, ms(40)), ReplyOutcome::Accepted);
        s.forget_outage(5);
        for seq in 6..12u64 {
            probe(&mut s, t0, seq, Some(40.0));
        }
        assert_eq!(s.loss(), 0.0);
        assert_eq!(s.losses_over(usize::MAX), (0, 7));
        let sum = s.summary().expect("samples");
        assert_eq!((sum.rtt_ms, sum.jitter_ms), (40.0, 0.0), "{sum:?}");
        assert_eq!(sum.samples, 9, "every reply was a sample when it came");
    }

    #[test]
    fn wilson_interval_bounds() {
        assert_eq!(wilson(0, 0, LOSS_INTERVAL_Z), (0.0, 1.0));
        let (lo, hi) = wilson(0, 300, LOSS_INTERVAL_Z);
        assert_eq!(lo, 0.0);
        assert!(hi > 0.0 && hi < 0.015, "{hi}");
        let (lo, hi) = wilson(5, 50, LOSS_INTERVAL_Z);
        assert!(
            lo > 0.03 && lo < 0.1 && hi > 0.1 && hi < 0.25,
            "({lo}, {hi})"
        );
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
        assert_eq!(s.rtt(), Some(ms(1500)));
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
                    prop_assert!(sum.jitter_ms >= 0.0 && sum.jitter_ms <= 2.0 * max_rtt + 1e-9);
                    prop_assert!(sum.samples > 0);
                }
            }
        }
    }
}
