//! An adaptive jitter buffer for one received media track: packets go in as
//! they arrive (lost, duplicated, reordered, jittered), frames come out in
//! sequence order at their playout time, and the gaps the player has to
//! conceal are reported as such. No I/O: the caller pushes what it receives,
//! sleeps until [`JitterBuffer::next_wakeup`] and polls.
//!
//! **Playout time.** Sender and receiver clocks are not synchronised, so, as
//! in `lateness.rs`, a packet's *transit* `arrival - sent` (receiver clock
//! minus sender clock) carries an unknown offset. The smallest transit seen is
//! the track's *baseline* (the offset plus the fastest path); a packet's
//! *excess* `transit - baseline` is how much later than the fastest path it
//! came. Its playout time is `sent + baseline + target`: its sender
//! timestamp mapped onto our clock, plus the target delay. Deadlines are
//! recomputed from the current baseline and target whenever they are looked
//! at, so every held packet moves together when the target moves (playout
//! stretches when the target rises and speeds up when it falls, never
//! reorders).
//!
//! The baseline drops at once to a faster transit (the old samples'
//! excesses grow by as much, which raises the target in step, so playout
//! does not jump ahead), and rises towards the smallest transit of the
//! recent window by at most 2% of elapsed time (20 ms per second) when the
//! path gets slower: a slower path is first absorbed by the target, then
//! taken into the baseline slowly enough for playout to stretch smoothly.
//! If for a whole second nothing usable arrives (every packet late or out of
//! range: a route change or a sender clock step beyond `max_delay`, which
//! no slow drift could follow), the buffer re-anchors on the packet at hand.
//!
//! **Target delay.** The jitter estimate is the 95th percentile of the
//! excesses of the last 5 s (at most 1024 samples), not RFC 3550's
//! interarrival jitter. RFC 3550 averages the absolute difference of
//! consecutive transits with a 1/16 gain: bursty jitter (Wi-Fi and cellular
//! schedulers holding a few packets back by 80 ms, then releasing them
//! together) shows up as a few large differences diluted by many small
//! ones, so its estimate stays far below the delays actually seen and every
//! burst ends up late. A percentile of the excess measures the quantity a
//! buffer has to cover (how far behind the fastest path packets come)
//! whatever the shape of its distribution; it also covers the spread of a
//! video frame's packets, which a player can only use together. Excesses
//! above `max_delay` (media queued through an outage) are left out: no
//! allowed target could have saved them. The target is
//! `jitter_multiplier × p95`, clamped to `[min_delay, max_delay]`, and a
//! late packet raises what it asks for to that packet's excess (if within
//! `max_delay`), so that the next one as late is on time. Once frames play,
//! the target rises towards that by at most half the elapsed time
//! ([`RISE`]: playout slowed to two thirds, which a player absorbs by
//! stretching audio and holding video frames), not at once: a target raised
//! at once stops playout for the whole rise, a stall of its own (measured
//! at 10% loss and 50 ms jitter: a third of audio's stalled time was gaps
//! with no packet missing, the target raised by 135 ms on average). Only
//! when two packets in a row come late (the path got slower, not one
//! packet) does it rise at once, as before frames play. It falls only as
//! the window forgets the high samples (over 5 s), and then by at most 2%
//! of elapsed time (20 ms per second): this asymmetry is what keeps the
//! buffer from oscillating. A baseline that drops raises the target by as
//! much at once, which moves no deadline.
//!
//! **Order, gaps, lateness.** Frames come out in sequence order, each once.
//! Sender timestamps grow with the sequence, so when a held packet's
//! playout time comes, the playout time of every missing packet before it
//! has come too: they are reported as [`Playout::Concealed`] and the packet
//! follows. A packet whose playout time has passed (by more than
//! [`TOLERANCE`]) when it arrives, or whose slot was already concealed, is
//! dropped as [`Pushed::Late`]; nothing is ever handed out past its playout
//! time plus [`TOLERANCE`] (if the caller polls later than that, the frame
//! is concealed and counted `expired`).
//!
//! **Sequences** are 32-bit and wrap; they are extended to 64 bits relative
//! to the playout point. A jump ahead by [`MAX_GAP`] or more with sender
//! timestamps moving on too, or a sequence that goes back while timestamps
//! go forward by more than 50 ms (a publisher that restarted at 0), resets
//! the buffer rather than conceal billions of packets. At most [`MAX_HELD`] packets are held,
//! a gap is at most [`MAX_GAP`] long and every other structure is bounded
//! too, whatever the sender sends.
//!
//! **Stalls** are measured at the playout point, between consecutive
//! *played* frames; see [`PlayoutStats`] for the exact definitions. The
//! part of a gap the sender's own timestamps explain as a pause (it sent
//! nothing) is not a stall.
//!
//! **Wiring.** One buffer per received track (channel, user, track name),
//! made with [`PlayoutConfig::for_kind`]. Push each [`crate::Media`] with
//! its `sequence` and `timestamp_us` and a monotonic instant taken when the
//! datagram was read; poll after each push and at `next_wakeup`. The SDK's
//! lateness gate (`max_media_lateness`) in front of it only removes what
//! this buffer would drop as late anyway.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::events::TrackKind;

/// The most packets a buffer holds (frames waiting for their playout time,
/// plus markers of late packets). A further packet is refused
/// ([`Pushed::Overflow`]) if it comes after all of them, or else takes the
/// place of the last one.
pub const MAX_HELD: usize = 512;

/// A packet this many sequence numbers or more ahead of the playout point
/// is a discontinuity (a publisher that jumped or restarted, or an outage
/// of thousands of packets): the buffer resets on it instead of concealing
/// the whole gap. Also bounds the [`Playout::Concealed`] entries of one gap.
pub const MAX_GAP: u32 = 1024;

/// How many sequence numbers behind the playout point are remembered as
/// played or concealed, to tell a duplicate from a late packet. Older ones
/// are [`Pushed::TooOld`].
pub const HISTORY: usize = 512;

/// How far past its playout time a packet may still be handed out: room for
/// the caller's timer granularity and scheduling.
pub const TOLERANCE: Duration = Duration::from_millis(10);

const TOLERANCE_US: i64 = TOLERANCE.as_micros() as i64;
/// The jitter window: samples this old are forgotten.
const WINDOW_US: i64 = 5_000_000;
const MAX_SAMPLES: usize = 1024;
const QUANTILE: f64 = 0.95;
/// The target falls, and the baseline rises, by at most this fraction of
/// the elapsed time: 2% (20 ms per second) is a rate a player can absorb
/// inaudibly by time-stretching audio, and slow enough not to oscillate.
const SLEW: f64 = 0.02;
/// Once frames play, the target rises by at most this fraction of the
/// elapsed time, unless packets keep coming late (see the module doc).
const RISE: f64 = 0.5;
/// Elapsed time counted for one slew step at most, so that a long silence
/// does not move held packets' deadlines by more than [`TOLERANCE`] at once.
const MAX_STEP_US: i64 = 250_000;
/// Nothing usable for this long: re-anchor on the next packet ahead.
const REANCHOR_AFTER: Duration = Duration::from_secs(1);
/// A sequence behind the playout point sent this much later than anything
/// before it is a restarted publisher, not a straggler.
const RESTART_MARGIN_US: u64 = 50_000;
/// Sender timestamp steps remembered to estimate the sender's cadence.
const CADENCE_STEPS: usize = 32;
/// Extended sequences start here, so that they can go back from the first.
const EXT_BASE: u64 = 1 << 32;

/// How one track's buffer adapts and what counts as a stall.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlayoutConfig {
    /// The target delay never goes below this.
    pub min_delay: Duration,
    /// Nor above this: past it the buffer drops late packets rather than
    /// add latency.
    pub max_delay: Duration,
    /// The target delay is this times the 95th percentile of the recent
    /// excess transit (see the module doc).
    pub jitter_multiplier: f64,
    /// A gap between two played frames, not explained by a pause of the
    /// sender, longer than this is a stall.
    pub stall_threshold: Duration,
}

impl PlayoutConfig {
    /// For 20 ms audio frames.
    ///
    /// - `min_delay` 20 ms: one frame. Below that, the timer granularity
    ///   and scheduling of sender and receiver alone make packets late.
    /// - `max_delay` 400 ms: ITU-T G.114 puts the limit of acceptable
    ///   one-way delay for conversation at 400 ms; past it, dropping and
    ///   concealing a packet hurts less than the added delay.
    /// - `jitter_multiplier` 1.5: the 95th percentile leaves 5% late by
    ///   definition, and a 5 s window estimates it noisily. For the
    ///   exponential-like tails of queueing delay, 1.5 × p95 is about the
    ///   99th percentile (`ln 100 / ln 20 ≈ 1.54`), i.e. about 1% late
    ///   before the late-packet boost, which packet loss concealment
    ///   hides well; 2 or more would buy little for a lot of delay.
    /// - `stall_threshold` 100 ms: five frames. Loss concealment masks a
    ///   few missing frames; past 100 ms it is an audible dropout.
    pub fn audio() -> Self {
        PlayoutConfig {
            min_delay: Duration::from_millis(20),
            // One number with the hops' repair deadline, which is this
            // bound: a packet repaired within it may still be played.
            max_delay: repair::AUDIO_DEADLINE,
            jitter_multiplier: 1.5,
            stall_threshold: Duration::from_millis(100),
        }
    }

    /// For 30 fps video, several packets per frame.
    ///
    /// - `min_delay` 20 ms and `jitter_multiplier` 1.5: as for audio (the
    ///   spread of a frame's packets is part of the measured excess).
    /// - `max_delay` 500 ms: a little more room than audio, whose delay the
    ///   player can also align video to; beyond it a frozen frame is
    ///   better than ever later video.
    /// - `stall_threshold` 200 ms: WebRTC counts a freeze when the interval
    ///   between frames exceeds `max(3 × frame duration, frame duration +
    ///   150 ms)`, 183 ms at 30 fps; 200 ms rounds it up.
    pub fn video() -> Self {
        PlayoutConfig {
            min_delay: Duration::from_millis(20),
            max_delay: repair::VIDEO_DEADLINE,
            jitter_multiplier: 1.5,
            stall_threshold: Duration::from_millis(200),
        }
    }

    /// [`audio`](Self::audio) for audio tracks, [`video`](Self::video) for
    /// any other kind.
    pub fn for_kind(kind: TrackKind) -> Self {
        match kind {
            TrackKind::Audio => Self::audio(),
            _ => Self::video(),
        }
    }
}

/// What became of a pushed packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Held until its playout time.
    Buffered,
    /// Already held or already played (dropped, counted `duplicates`).
    Duplicate,
    /// Its playout time had passed, or its slot was already concealed:
    /// dropped and counted `late`. The target delay rises to cover it.
    Late,
    /// Too far from the playout point to use: behind it further than it
    /// remembers ([`HISTORY`] slots, fewer since a reset), or [`MAX_GAP`] or
    /// more ahead with a sender timestamp that went back (dropped, counted
    /// `too_old`).
    TooOld,
    /// The buffer already holds [`MAX_HELD`] packets that come before this
    /// one (dropped, counted `overflow`).
    Overflow,
}

/// One slot of the track at its playout time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Playout {
    /// A packet to play.
    Frame {
        seq: u32,
        /// The sender's timestamp (µs, the sender's clock).
        sent_us: u64,
        payload: Bytes,
        /// How long the packet waited in the buffer: from its arrival (the
        /// `now` of its push) to the `now` of the poll that returned it.
        /// Like WebRTC's `jitterBufferDelay`, this is the delay the buffer
        /// adds, not the end-to-end latency (unknowable without
        /// synchronised clocks).
        delay: Duration,
    },
    /// The packet's playout time came and it had not arrived (or arrived
    /// late): a gap for the player to conceal.
    Concealed { seq: u32 },
}

impl Playout {
    pub fn seq(&self) -> u32 {
        match self {
            Playout::Frame { seq, .. } | Playout::Concealed { seq } => *seq,
        }
    }
}

/// What one buffer has done so far.
///
/// Per slot of the sequence (once the first packet arrived): either it is
/// played (`frames_played`) or concealed (`concealed`), in sequence order,
/// except the slots skipped by a reset. Per packet received: it is either
/// buffered, or one of `late`, `duplicates`, `too_old`, `overflow`.
///
/// **Stalls.** For each pair of consecutive *played* frames (concealed
/// slots in between do not count as played) let `gap` be the time between
/// the polls that returned them, `step` how far the sender's timestamp
/// advanced between them and `n` how many sequence numbers apart they are.
/// With `cadence` the sender's typical step between consecutive packets
/// (median of the last 32 positive steps between consecutive sequence
/// numbers: 20 ms for audio, the frame interval for video),
/// `pause = max(0, step - n × cadence)` is how long the sender itself sent
/// nothing beyond its cadence (a muted microphone, a stopped camera,
/// silence suppression), and `unexplained = max(0, gap - pause)`. If
/// `unexplained > stall_threshold` it is one stall, and the whole of
/// `unexplained` (not just what exceeds the threshold) is added to
/// `stalled_time`. A gap with packets lost in it is thus a stall as long as
/// the missing packets could have filled it; the sender's silence is never
/// one. Not counted: the startup delay before the first frame, and a gap
/// still open (it is counted once the next frame plays). A publisher whose
/// SDK does not spend sequence numbers while it cannot send (the RTN SDK
/// while it reconnects) looks as if it paused.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlayoutStats {
    /// Frames returned by `poll` ([`Playout::Frame`]).
    pub frames_played: u64,
    /// Slots returned as [`Playout::Concealed`]: packets that never arrived
    /// in time, late ones, and `expired` ones.
    pub concealed: u64,
    /// Packets that arrived after their playout time (plus [`TOLERANCE`])
    /// or after their slot was concealed, and were dropped. Their slots are
    /// in `concealed` too.
    pub late: u64,
    /// Packets that were held in time but not polled until more than
    /// [`TOLERANCE`] after their playout time (the caller's lateness):
    /// concealed instead. Also in `concealed`.
    pub expired: u64,
    /// Copies of packets already held or played, dropped.
    pub duplicates: u64,
    /// Packets too far from the playout point to place ([`Pushed::TooOld`]).
    pub too_old: u64,
    /// Packets dropped because [`MAX_HELD`] were held.
    pub overflow: u64,
    /// Discontinuities (sequence jumps, publisher restarts, re-anchoring)
    /// that reset the buffer.
    pub resets: u64,
    /// Packets held when a reset came, dropped (neither played nor
    /// concealed).
    pub reset_dropped: u64,
    /// Gaps between consecutive played frames whose unexplained part
    /// exceeded `stall_threshold` (see above).
    pub stalls: u64,
    /// The sum of those gaps' unexplained parts.
    pub stalled_time: Duration,
    /// From the first frame played to the last, minus `sender_paused`: the
    /// sum of every gap's unexplained part, stalled or not. The stall rate
    /// is `stalled_time / playing_time` ([`PlayoutStats::stall_rate`]).
    pub playing_time: Duration,
    /// From the first frame played to the last, the time explained by the
    /// sender's pauses. `playing_time + sender_paused` is exactly the time
    /// from the first frame played to the last.
    pub sender_paused: Duration,
    /// The sum of the played frames' [`Playout::Frame`] `delay`s: divided
    /// by `frames_played`, the mean time a frame waited in the buffer.
    pub delay_total: Duration,
    /// The current target delay.
    pub target_delay: Duration,
    /// Packets held now.
    pub held: usize,
}

impl PlayoutStats {
    /// `stalled_time / playing_time` (0 before two frames played).
    pub fn stall_rate(&self) -> f64 {
        if self.playing_time.is_zero() {
            0.0
        } else {
            self.stalled_time.as_secs_f64() / self.playing_time.as_secs_f64()
        }
    }

    /// The mean time a played frame waited in the buffer.
    pub fn mean_delay(&self) -> Option<Duration> {
        let n = u32::try_from(self.frames_played).ok().filter(|&n| n > 0)?;
        Some(self.delay_total / n)
    }
}

/// The jitter buffer of one received track. See the module doc.
///
/// ```
/// use bytes::Bytes;
/// use sdk::playout::{JitterBuffer, PlayoutConfig, Playout};
/// use tokio::time::Instant;
///
/// let mut jb = JitterBuffer::new(PlayoutConfig::audio());
/// let t = Instant::now();
/// // From `Event::Media`: `sequence`, `timestamp_us`, `payload`.
/// jb.push(1, 1_700_000_000_000_000, t, Bytes::from_static(b"opus"));
/// // The receive loop sleeps until `next_wakeup` (or the next packet).
/// let due = jb.next_wakeup().unwrap();
/// for out in jb.poll(due) {
///     match out {
///         Playout::Frame { payload, .. } => assert_eq!(&payload[..], b"opus"),
///         Playout::Concealed { .. } => unreachable!("nothing missing"),
///     }
/// }
/// assert_eq!(jb.stats().frames_played, 1);
/// ```
#[derive(Debug)]
pub struct JitterBuffer {
    config: PlayoutConfig,
    clock: Clock,
    delay: DelayEstimator,
    /// By extended sequence.
    held: BTreeMap<u64, Held>,
    /// The extended sequence of the next slot to play out (None before the
    /// first packet).
    next: Option<u64>,
    /// The newest sender timestamp accepted since the last reset.
    max_sent: Option<u64>,
    history: History,
    meter: StallMeter,
    /// Counters (the derived figures are filled in by `stats`).
    counts: PlayoutStats,
    /// Since when every packet has been unusable (late or too old).
    rejecting_since: Option<Instant>,
}

#[derive(Debug)]
struct Held {
    sent_us: u64,
    arrived: Instant,
    /// None: a packet that arrived late, kept only to conceal its slot.
    payload: Option<Bytes>,
}

/// One pushed packet.
struct Arrival {
    sent_us: u64,
    now: Instant,
    now_us: i64,
    payload: Bytes,
}

impl Arrival {
    fn transit_us(&self) -> i64 {
        self.now_us.wrapping_sub(self.sent_us as i64)
    }
}

impl JitterBuffer {
    pub fn new(config: PlayoutConfig) -> Self {
        JitterBuffer {
            delay: DelayEstimator::new(&config),
            meter: StallMeter::new(config.stall_threshold),
            config,
            clock: Clock::default(),
            held: BTreeMap::new(),
            next: None,
            max_sent: None,
            history: History::default(),
            counts: PlayoutStats::default(),
            rejecting_since: None,
        }
    }

    pub fn config(&self) -> &PlayoutConfig {
        &self.config
    }

    /// The current target delay (playout time minus the fastest path).
    pub fn target_delay(&self) -> Duration {
        self.delay.target()
    }

    /// Packets held now (at most [`MAX_HELD`]).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Take one received packet: `seq` and `sent_us` from its header, `now`
    /// when it arrived. Poll afterwards: it may be due at once.
    pub fn push(&mut self, seq: u32, sent_us: u64, now: Instant, payload: Bytes) -> Pushed {
        let now_us = self.clock.micros(now);
        self.delay.tick(now_us);
        let next = *self.next.get_or_insert(EXT_BASE + u64::from(seq));
        let arrival = Arrival {
            sent_us,
            now,
            now_us,
            payload,
        };
        let d = i64::from(seq.wrapping_sub(next as u32) as i32);
        let pushed = if d >= i64::from(MAX_GAP) {
            self.jumped(next + d as u64, arrival)
        } else if d < 0 {
            self.behind(next, d.unsigned_abs(), arrival)
        } else {
            self.ahead(next + d as u64, arrival)
        };
        self.track_rejections(pushed, now);
        pushed
    }

    /// Everything due by `now`, in sequence order: frames whose playout
    /// time has come, and the slots before them that will not come.
    pub fn poll(&mut self, now: Instant) -> Vec<Playout> {
        let now_us = self.clock.micros(now);
        let mut out = Vec::new();
        while self.head_due(now_us) {
            let Some((ext, held)) = self.held.pop_first() else {
                break;
            };
            self.conceal_up_to(ext, &mut out);
            self.next = Some(ext + 1);
            self.emit(ext, held, now, now_us, &mut out);
        }
        out
    }

    /// When the next held packet is due (possibly already past: poll at
    /// once); None while nothing is held. A later push may make it sooner.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let (_, held) = self.held.first_key_value()?;
        self.clock.instant(self.delay.deadline_us(held.sent_us))
    }

    pub fn stats(&self) -> PlayoutStats {
        PlayoutStats {
            stalls: self.meter.stalls,
            stalled_time: micros(self.meter.stalled_us),
            playing_time: micros(self.meter.playing_us),
            sender_paused: micros(self.meter.paused_us),
            target_delay: self.delay.target(),
            held: self.held.len(),
            ..self.counts.clone()
        }
    }

    /// A packet at or ahead of the playout point, within [`MAX_GAP`].
    fn ahead(&mut self, ext: u64, a: Arrival) -> Pushed {
        if self.held.contains_key(&ext) {
            self.counts.duplicates += 1;
            return Pushed::Duplicate;
        }
        let transit = a.transit_us();
        let excess = self.delay.observe(transit);
        let late = excess > self.delay.target_us + TOLERANCE_US;
        if late && self.reanchor_due(a.now) {
            self.reset_path(ext);
            return self.ahead(ext, a);
        }
        self.delay.add_sample(a.now_us, transit, late);
        self.max_sent = Some(self.max_sent.map_or(a.sent_us, |m| m.max(a.sent_us)));
        let held = Held {
            sent_us: a.sent_us,
            arrived: a.now,
            payload: (!late).then_some(a.payload),
        };
        if !late {
            return self.hold(ext, held);
        }
        self.delay.bump(excess);
        self.counts.late += 1;
        if self.held.len() < MAX_HELD {
            // Conceals its slot as soon as the poll gets to it.
            self.held.insert(ext, held);
        }
        Pushed::Late
    }

    /// A packet `back` sequence numbers behind the playout point.
    fn behind(&mut self, next: u64, back: u64, a: Arrival) -> Pushed {
        if self
            .max_sent
            .is_some_and(|m| a.sent_us > m.saturating_add(RESTART_MARGIN_US))
        {
            // Sequence back, time forward: the publisher restarted.
            // The same seq, ahead: `back` behind is 2^32 - `back` ahead.
            let ext = next + u64::from((back as u32).wrapping_neg());
            self.reset_sequence(ext);
            self.meter.sequence_restarted();
            return self.ahead(ext, a);
        }
        let ext = next - back;
        if self.history.is_empty() && self.span_from(ext) < u64::from(MAX_GAP) {
            // Nothing played yet: the stream starts earlier than we thought.
            self.next = Some(ext);
            return self.ahead(ext, a);
        }
        match self.history.get(back) {
            Some(true) => {
                self.counts.duplicates += 1;
                Pushed::Duplicate
            }
            Some(false) => self.late_behind(a),
            None => {
                self.counts.too_old += 1;
                Pushed::TooOld
            }
        }
    }

    /// A packet whose slot was concealed: too late, but it tells how late.
    fn late_behind(&mut self, a: Arrival) -> Pushed {
        let transit = a.transit_us();
        let excess = self.delay.observe(transit);
        self.delay.add_sample(a.now_us, transit, true);
        if excess > self.delay.target_us {
            self.delay.bump(excess);
        }
        self.counts.late += 1;
        Pushed::Late
    }

    /// A packet [`MAX_GAP`] or more ahead of the playout point.
    fn jumped(&mut self, ext: u64, a: Arrival) -> Pushed {
        if self.max_sent.is_none_or(|m| a.sent_us >= m) {
            self.reset_sequence(ext);
            return self.ahead(ext, a);
        }
        if self.reanchor_due(a.now) {
            self.reset_path(ext);
            return self.ahead(ext, a);
        }
        self.counts.too_old += 1;
        Pushed::TooOld
    }

    fn hold(&mut self, ext: u64, held: Held) -> Pushed {
        if self.held.len() >= MAX_HELD {
            self.counts.overflow += 1;
            if self
                .held
                .last_key_value()
                .is_some_and(|(&last, _)| ext > last)
            {
                return Pushed::Overflow;
            }
            self.held.pop_last();
        }
        self.held.insert(ext, held);
        Pushed::Buffered
    }

    /// How far the held packets reach beyond `ext`.
    fn span_from(&self, ext: u64) -> u64 {
        self.held
            .last_key_value()
            .map_or(0, |(&last, _)| last.saturating_sub(ext))
    }

    fn reanchor_due(&self, now: Instant) -> bool {
        self.rejecting_since
            .is_some_and(|since| now.saturating_duration_since(since) >= REANCHOR_AFTER)
    }

    fn track_rejections(&mut self, pushed: Pushed, now: Instant) {
        match pushed {
            Pushed::Buffered => self.rejecting_since = None,
            Pushed::Late | Pushed::TooOld => {
                self.rejecting_since.get_or_insert(now);
            }
            Pushed::Duplicate | Pushed::Overflow => {}
        }
    }

    /// Start a new sequence space at `next` (never behind the old playout
    /// point, so that what comes out stays in order), from the same sender
    /// over the same path: the baseline, the jitter window and the target
    /// delay carry over, the held packets are dropped.
    fn reset_sequence(&mut self, next: u64) {
        let frames = self.held.values().filter(|h| h.payload.is_some()).count();
        self.counts.reset_dropped += frames as u64;
        self.held.clear();
        self.history.clear();
        self.rejecting_since = None;
        self.next = Some(next);
        self.counts.resets += 1;
    }

    /// Start over at `next` on a new path or sender clock: the baseline and
    /// the jitter window go too (the target delay carries over).
    fn reset_path(&mut self, next: u64) {
        self.reset_sequence(next);
        self.delay.reset_path();
        self.max_sent = None;
    }

    fn head_due(&self, now_us: i64) -> bool {
        self.held
            .first_key_value()
            .is_some_and(|(_, h)| self.delay.deadline_us(h.sent_us) <= now_us)
    }

    fn conceal_up_to(&mut self, ext: u64, out: &mut Vec<Playout>) {
        for missing in self.next.unwrap_or(ext)..ext {
            self.conceal(missing, out);
        }
    }

    fn conceal(&mut self, ext: u64, out: &mut Vec<Playout>) {
        out.push(Playout::Concealed { seq: ext as u32 });
        self.history.record(false);
        self.counts.concealed += 1;
    }

    fn emit(&mut self, ext: u64, held: Held, now: Instant, now_us: i64, out: &mut Vec<Playout>) {
        let deadline = self.delay.deadline_us(held.sent_us);
        match held.payload {
            Some(payload) if now_us <= deadline.saturating_add(TOLERANCE_US) => {
                self.delay.playing = true;
                let delay = now.saturating_duration_since(held.arrived);
                self.counts.frames_played += 1;
                self.counts.delay_total += delay;
                self.history.record(true);
                self.meter.on_played(Played {
                    ext,
                    sent_us: held.sent_us,
                    at: now,
                });
                out.push(Playout::Frame {
                    seq: ext as u32,
                    sent_us: held.sent_us,
                    payload,
                    delay,
                });
            }
            Some(_) => {
                self.counts.expired += 1;
                self.conceal(ext, out);
            }
            None => self.conceal(ext, out),
        }
    }
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(us.max(0) as u64)
}

fn us_of(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The receiver's clock in µs since the first instant seen.
#[derive(Debug, Default)]
struct Clock {
    epoch: Option<Instant>,
}

impl Clock {
    fn micros(&mut self, now: Instant) -> i64 {
        let epoch = *self.epoch.get_or_insert(now);
        us_of(now.saturating_duration_since(epoch))
    }

    fn instant(&self, us: i64) -> Option<Instant> {
        self.epoch?.checked_add(micros(us))
    }
}

/// One transit measurement.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at_us: i64,
    transit_us: i64,
}

/// The baseline and the target delay.
#[derive(Debug)]
struct DelayEstimator {
    min_us: i64,
    max_us: i64,
    multiplier: f64,
    /// The smallest transit (receiver clock minus sender clock), slowly
    /// following a slower path.
    baseline_us: Option<i64>,
    /// The last [`WINDOW_US`] of transits, in arrival order.
    samples: VecDeque<Sample>,
    scratch: Vec<i64>,
    /// What the window, or a late packet ([`Self::late_us`]), asks for.
    desired_us: i64,
    target_us: i64,
    /// The excess of the latest late packet, falling as the target does:
    /// the target is asked to cover it even when the window does not.
    late_us: i64,
    /// Frames have played: the target rises gradually ([`RISE`]).
    playing: bool,
    /// Packets pushed late in a row, up to this one.
    late_run: u32,
    last_tick_us: Option<i64>,
}

impl DelayEstimator {
    fn new(config: &PlayoutConfig) -> Self {
        let min_us = us_of(config.min_delay);
        let max_us = us_of(config.max_delay).max(min_us);
        DelayEstimator {
            min_us,
            max_us,
            multiplier: config.jitter_multiplier.max(0.0),
            baseline_us: None,
            samples: VecDeque::new(),
            scratch: Vec::new(),
            desired_us: min_us,
            target_us: min_us,
            late_us: 0,
            playing: false,
            late_run: 0,
            last_tick_us: None,
        }
    }

    fn target(&self) -> Duration {
        micros(self.target_us)
    }

    /// The playout time of a packet sent at `sent_us`, on the receiver's
    /// clock (µs).
    fn deadline_us(&self, sent_us: u64) -> i64 {
        (sent_us as i64)
            .wrapping_add(self.baseline_us.unwrap_or(0))
            .saturating_add(self.target_us)
    }

    /// Let time pass: forget old samples, let the target fall and the
    /// baseline rise, at most [`SLEW`] of the elapsed time each.
    fn tick(&mut self, now_us: i64) {
        let last = *self.last_tick_us.get_or_insert(now_us);
        let dt = now_us.saturating_sub(last).clamp(0, MAX_STEP_US);
        self.last_tick_us = Some(last.max(now_us));
        self.prune(now_us);
        let slew = (dt as f64 * SLEW) as i64;
        self.late_us = (self.late_us - slew).max(0);
        if self.target_us > self.desired_us {
            self.target_us = (self.target_us - slew).max(self.desired_us);
        } else {
            let rise = (dt as f64 * RISE) as i64;
            self.target_us = (self.target_us + rise).min(self.desired_us);
        }
        let floor = self.samples.iter().map(|s| s.transit_us).min();
        if let (Some(base), Some(floor)) = (self.baseline_us, floor) {
            if floor > base {
                self.baseline_us = Some(base.saturating_add(slew.min(floor.saturating_sub(base))));
            }
        }
    }

    /// Take a transit into the baseline; its excess over it. A baseline
    /// that drops raises the target (and the late packet's excess) by as
    /// much, so no deadline moves.
    fn observe(&mut self, transit_us: i64) -> i64 {
        let base = self.baseline_us.map_or(transit_us, |b| b.min(transit_us));
        if let Some(drop) = self.baseline_us.map(|b| b - base).filter(|d| *d > 0) {
            self.target_us = (self.target_us + drop).min(self.max_us);
            self.late_us = self.late_us.saturating_add(drop);
        }
        self.baseline_us = Some(base);
        transit_us.saturating_sub(base).max(0)
    }

    /// Add a transit to the window and ask for what it needs. Every
    /// packet of a track passes here: `late` says whether it came late.
    fn add_sample(&mut self, now_us: i64, transit_us: i64, late: bool) {
        self.samples.push_back(Sample {
            at_us: now_us,
            transit_us,
        });
        self.prune(now_us);
        self.late_run = if late {
            self.late_run.saturating_add(1)
        } else {
            0
        };
        let window = self.window_target();
        self.ask(window);
    }

    /// A packet `excess_us` behind the fastest path was late: cover the
    /// next one like it, if any allowed target can.
    fn bump(&mut self, excess_us: i64) {
        if excess_us <= self.max_us {
            self.late_us = self.late_us.max(excess_us);
            let desired = self.desired_us;
            self.ask(desired);
        }
    }

    /// Aim at `window_us` or the late packet's excess, whichever is more;
    /// get there at once before frames play or when packets keep coming
    /// late, else gradually ([`Self::tick`]).
    fn ask(&mut self, window_us: i64) {
        self.desired_us = window_us.max(self.late_us).clamp(self.min_us, self.max_us);
        if !self.playing || self.late_run >= 2 {
            self.target_us = self.target_us.max(self.desired_us);
        }
    }

    /// A new path and sender clock: forget the baseline and the samples.
    fn reset_path(&mut self) {
        self.baseline_us = None;
        self.samples.clear();
        self.desired_us = self.min_us;
        self.late_us = 0;
        self.playing = false;
        self.late_run = 0;
    }

    fn prune(&mut self, now_us: i64) {
        let oldest = now_us.saturating_sub(WINDOW_US);
        while self
            .samples
            .front()
            .is_some_and(|s| s.at_us < oldest || self.samples.len() > MAX_SAMPLES)
        {
            self.samples.pop_front();
        }
    }

    /// `multiplier × p95(excess)` over the window, clamped.
    fn window_target(&mut self) -> i64 {
        let base = self.baseline_us.unwrap_or(0);
        let max = self.max_us;
        self.scratch.clear();
        self.scratch.extend(
            self.samples
                .iter()
                .map(|s| s.transit_us.saturating_sub(base).max(0))
                .filter(|&e| e <= max),
        );
        let n = self.scratch.len();
        if n == 0 {
            return self.min_us;
        }
        let rank = ((n as f64 * QUANTILE).ceil() as usize).clamp(1, n) - 1;
        let (_, &mut p95, _) = self.scratch.select_nth_unstable(rank);
        ((p95 as f64 * self.multiplier) as i64).clamp(self.min_us, self.max_us)
    }
}

/// Whether each of the last [`HISTORY`] slots behind the playout point was
/// played (true) or concealed.
#[derive(Debug, Default)]
struct History {
    slots: VecDeque<bool>,
}

impl History {
    fn record(&mut self, played: bool) {
        if self.slots.len() == HISTORY {
            self.slots.pop_front();
        }
        self.slots.push_back(played);
    }

    /// The slot `back` behind the playout point (1: the last one out).
    fn get(&self, back: u64) -> Option<bool> {
        let len = self.slots.len() as u64;
        (1..=len)
            .contains(&back)
            .then(|| self.slots[(len - back) as usize])
    }

    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn clear(&mut self) {
        self.slots.clear();
    }
}

/// A played frame, as the stall meter sees it.
#[derive(Clone, Copy, Debug)]
struct Played {
    ext: u64,
    sent_us: u64,
    at: Instant,
}

/// Stalls at the playout point (see [`PlayoutStats`]).
#[derive(Debug)]
struct StallMeter {
    threshold_us: i64,
    last: Option<Played>,
    restarted: bool,
    /// Recent positive sender steps between consecutive sequence numbers.
    steps: VecDeque<i64>,
    /// Their median.
    cadence_us: Option<i64>,
    stalls: u64,
    stalled_us: i64,
    playing_us: i64,
    paused_us: i64,
}

impl StallMeter {
    fn new(threshold: Duration) -> Self {
        StallMeter {
            threshold_us: us_of(threshold),
            last: None,
            restarted: false,
            steps: VecDeque::new(),
            cadence_us: None,
            stalls: 0,
            stalled_us: 0,
            playing_us: 0,
            paused_us: 0,
        }
    }

    fn on_played(&mut self, frame: Played) {
        if let Some(last) = self.last.replace(frame) {
            self.on_gap(last, frame);
        }
    }

    /// The sender restarted its sequence: the next gap is judged as if
    /// nothing was lost in it.
    fn sequence_restarted(&mut self) {
        self.restarted = true;
    }

    fn on_gap(&mut self, a: Played, b: Played) {
        let gap = us_of(b.at.saturating_duration_since(a.at));
        let step = (b.sent_us as i64).wrapping_sub(a.sent_us as i64).max(0);
        let n = if std::mem::take(&mut self.restarted) {
            1
        } else {
            b.ext.saturating_sub(a.ext)
        };
        if n == 1 && step > 0 {
            self.record_step(step);
        }
        let unexplained = gap.saturating_sub(self.pause_us(step, n)).max(0);
        self.playing_us = self.playing_us.saturating_add(unexplained);
        self.paused_us = self.paused_us.saturating_add(gap - unexplained);
        if unexplained > self.threshold_us {
            self.stalls += 1;
            self.stalled_us = self.stalled_us.saturating_add(unexplained);
        }
    }

    /// How much of a sender step over `n` sequence numbers the sender spent
    /// sending nothing (none before its cadence is known).
    fn pause_us(&self, step: i64, n: u64) -> i64 {
        let Some(cadence) = self.cadence_us else {
            return 0;
        };
        let sending = i64::try_from(n).unwrap_or(i64::MAX).saturating_mul(cadence);
        step.saturating_sub(sending).max(0)
    }

    fn record_step(&mut self, step: i64) {
        if self.steps.len() == CADENCE_STEPS {
            self.steps.pop_front();
        }
        self.steps.push_back(step);
        let mut sorted: Vec<i64> = self.steps.iter().copied().collect();
        sorted.sort_unstable();
        // The lower median: of two steps, a pause is the larger.
        self.cadence_us = Some(sorted[(sorted.len() - 1) / 2]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The sender's wall clock (µs) when the tests start: hours away from
    /// the receiver's, which the buffer must not care about.
    const T0_SENT: u64 = 1_700_000_000_000_000;
    const AUDIO_US: u64 = 20_000;
    const VIDEO_US: u64 = 33_333;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn payload(seq: u32) -> Bytes {
        Bytes::copy_from_slice(&seq.to_be_bytes())
    }

    /// One packet on the wire: when it arrives (receiver time since the
    /// start of the test), its sequence and its sender timestamp.
    #[derive(Clone, Copy, Debug)]
    struct Packet {
        at: Duration,
        seq: u32,
        sent_us: u64,
    }

    /// `n` packets from `start`, `per_frame` packets sharing each sender
    /// timestamp, frames `interval_us` apart; `transit(i)` is how long
    /// packet `i` takes (None: lost). Sent at the sender's `T0_SENT`, the
    /// first frame leaves at receiver time 0.
    fn stream(
        start: u32,
        n: u32,
        per_frame: u32,
        interval_us: u64,
        transit: impl Fn(u32) -> Option<Duration>,
    ) -> Vec<Packet> {
        (0..n)
            .filter_map(|i| {
                let frame_us = u64::from(i / per_frame) * interval_us;
                Some(Packet {
                    at: Duration::from_micros(frame_us) + transit(i)?,
                    seq: start.wrapping_add(i),
                    sent_us: T0_SENT + frame_us,
                })
            })
            .collect()
    }

    fn audio(n: u32, transit: impl Fn(u32) -> Option<Duration>) -> Vec<Packet> {
        stream(0, n, 1, AUDIO_US, transit)
    }

    /// What a receive loop saw: outputs with when they came out, and what
    /// each push said.
    #[derive(Default)]
    struct Run {
        out: Vec<(Duration, Playout)>,
        pushed: Vec<(u32, Pushed)>,
        /// The target delay after each push.
        targets: Vec<(Duration, Duration)>,
    }

    impl Run {
        fn frames(&self) -> Vec<u32> {
            self.out
                .iter()
                .filter(|(_, p)| matches!(p, Playout::Frame { .. }))
                .map(|(_, p)| p.seq())
                .collect()
        }

        fn concealed(&self) -> Vec<u32> {
            self.out
                .iter()
                .filter(|(_, p)| matches!(p, Playout::Concealed { .. }))
                .map(|(_, p)| p.seq())
                .collect()
        }

        fn verdicts(&self, seq: u32) -> Vec<Pushed> {
            self.pushed
                .iter()
                .filter(|(s, _)| *s == seq)
                .map(|(_, p)| *p)
                .collect()
        }

        fn target_at(&self, at: Duration) -> Duration {
            self.targets
                .iter()
                .take_while(|(t, _)| *t <= at)
                .last()
                .map(|(_, d)| *d)
                .expect("a push before")
        }
    }

    /// A receive loop: each packet pushed when it arrives, polls at every
    /// wakeup and after every push.
    fn drive(jb: &mut JitterBuffer, t0: Instant, mut packets: Vec<Packet>) -> Run {
        packets.sort_by_key(|p| p.at);
        let mut run = Run::default();
        let mut packets = packets.into_iter().peekable();
        loop {
            let arrival = packets.peek().map(|p| t0 + p.at);
            let now = match (arrival, jb.next_wakeup()) {
                (None, None) => break,
                (Some(a), Some(w)) => a.min(w),
                (a, w) => a.or(w).unwrap(),
            };
            if arrival == Some(now) {
                let p = packets.next().unwrap();
                let verdict = jb.push(p.seq, p.sent_us, now, payload(p.seq));
                run.pushed.push((p.seq, verdict));
                run.targets.push((now - t0, jb.target_delay()));
                assert!(jb.held() <= MAX_HELD);
            }
            for out in jb.poll(now) {
                run.out.push((now - t0, out));
            }
        }
        run
    }

    fn run(config: PlayoutConfig, packets: Vec<Packet>) -> (Run, PlayoutStats) {
        let mut jb = JitterBuffer::new(config);
        let run = drive(&mut jb, Instant::now(), packets);
        let stats = jb.stats();
        (run, stats)
    }

    /// Every slot once, in order: played or concealed.
    fn assert_every_slot_once(run: &Run, seqs: impl Iterator<Item = u32>) {
        let out: Vec<u32> = run.out.iter().map(|(_, p)| p.seq()).collect();
        assert_eq!(out, seqs.collect::<Vec<_>>());
    }

    /// A deterministic pseudo-random sequence in [0, 1).
    fn noise(i: u32) -> f64 {
        let x = u64::from(i)
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((x >> 33) % 10_000) as f64 / 10_000.0
    }

    #[test]
    fn plays_in_order_under_reordering_whatever_the_clock_offset() {
        for offset_us in [0, 3_600_000_000, T0_SENT / 2] {
            // Every 4th packet 35 ms slower: it comes after the next one.
            let mut packets = audio(100, |i| Some(ms(30 + if i % 4 == 1 { 35 } else { 0 })));
            for p in &mut packets {
                p.sent_us -= offset_us;
            }
            let (run, stats) = run(PlayoutConfig::audio(), packets);
            // The first slow packet is late (the target starts at 20 ms)
            // and raises the target: the others are on time.
            assert_eq!(run.verdicts(1), vec![Pushed::Late]);
            assert_eq!(run.concealed(), vec![1]);
            assert_every_slot_once(&run, 0..100);
            assert_eq!(
                (stats.frames_played, stats.late, stats.concealed),
                (99, 1, 1)
            );
            // A quarter of the excesses are 35 ms: p95 × 1.5.
            assert_eq!(stats.target_delay, ms(35).mul_f64(1.5));
            assert_eq!(stats.stalls, 0);
        }
    }

    #[test]
    fn frames_wait_for_their_playout_time_and_no_longer() {
        let mut jb = JitterBuffer::new(PlayoutConfig::audio());
        let t = Instant::now();
        assert_eq!(jb.next_wakeup(), None);
        assert_eq!(jb.push(7, T0_SENT, t, payload(7)), Pushed::Buffered);
        assert_eq!(jb.next_wakeup(), Some(t + ms(20)));
        assert!(jb.poll(t + ms(19)).is_empty());
        let out = jb.poll(t + ms(20));
        assert_eq!(
            out,
            vec![Playout::Frame {
                seq: 7,
                sent_us: T0_SENT,
                payload: payload(7),
                delay: ms(20),
            }]
        );
        // Polled too late: concealed, not handed out stale.
        jb.push(8, T0_SENT + AUDIO_US, t + ms(20), payload(8));
        assert_eq!(jb.next_wakeup(), Some(t + ms(40)));
        assert_eq!(
            jb.poll(t + ms(40) + TOLERANCE + ms(1)),
            vec![Playout::Concealed { seq: 8 }]
        );
        let s = jb.stats();
        assert_eq!((s.frames_played, s.expired, s.concealed), (1, 1, 1));
        assert_eq!(
            jb.push(8, T0_SENT + AUDIO_US, t + ms(60), payload(8)),
            Pushed::Late
        );
    }

    #[test]
    fn configs_serialize() {
        for config in [PlayoutConfig::audio(), PlayoutConfig::video()] {
            let json = serde_json::to_string(&config).unwrap();
            assert_eq!(
                serde_json::from_str::<PlayoutConfig>(&json).unwrap(),
                config
            );
        }
        assert_eq!(
            PlayoutConfig::for_kind(TrackKind::Audio),
            PlayoutConfig::audio()
        );
        assert_eq!(
            PlayoutConfig::for_kind(TrackKind::Video),
            PlayoutConfig::video()
        );
        let stats = JitterBuffer::new(PlayoutConfig::audio()).stats();
        assert_eq!(stats.target_delay, ms(20));
        assert!(serde_json::to_string(&stats).is_ok());
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut jb = JitterBuffer::new(PlayoutConfig::audio());
        let t = Instant::now();
        assert_eq!(jb.push(0, T0_SENT, t, payload(0)), Pushed::Buffered);
        let sent1 = T0_SENT + AUDIO_US;
        assert_eq!(jb.push(1, sent1, t + ms(20), payload(1)), Pushed::Buffered);
        assert_eq!(jb.push(1, sent1, t + ms(25), payload(1)), Pushed::Duplicate);
        assert_eq!(jb.poll(t + ms(20)).len(), 1);
        assert_eq!(
            jb.push(0, T0_SENT, t + ms(25), payload(0)),
            Pushed::Duplicate
        );
        let seqs: Vec<u32> = jb.poll(t + ms(40)).iter().map(Playout::seq).collect();
        assert_eq!(seqs, vec![1]);
        let s = jb.stats();
        assert_eq!((s.frames_played, s.duplicates, s.late), (2, 2, 0));
    }

    #[test]
    fn a_retransmission_before_its_playout_time_fills_the_gap() {
        // Packet 3 lost, then repaired 15 ms after it was due to arrive:
        // within the 20 ms target.
        let mut packets = audio(10, |i| (i != 3).then(|| ms(30)));
        packets.push(Packet {
            at: Duration::from_micros(3 * AUDIO_US) + ms(45),
            seq: 3,
            sent_us: T0_SENT + 3 * AUDIO_US,
        });
        let (run, stats) = run(PlayoutConfig::audio(), packets);
        assert_eq!(run.frames(), (0..10).collect::<Vec<_>>());
        assert!(run.concealed().is_empty());
        assert_eq!((stats.late, stats.concealed), (0, 0));
    }

    #[test]
    fn a_retransmission_after_its_playout_time_is_late() {
        let mut packets = audio(100, |i| (i != 50).then(|| ms(30)));
        packets.push(Packet {
            at: Duration::from_micros(50 * AUDIO_US) + ms(130),
            seq: 50,
            sent_us: T0_SENT + 50 * AUDIO_US,
        });
        let (run, stats) = run(PlayoutConfig::audio(), packets);
        assert_every_slot_once(&run, 0..100);
        assert_eq!(run.concealed(), vec![50]);
        assert_eq!(run.verdicts(50), vec![Pushed::Late]);
        assert_eq!(
            (stats.late, stats.concealed, stats.frames_played),
            (1, 1, 99)
        );
        // It raises the target to cover a repair that slow next time (one
        // sample in a hundred does not move the 95th percentile): not at
        // once, which would stop playout for the whole rise, but at half
        // the elapsed time, there within 200 ms.
        let at = run.pushed.iter().position(|p| *p == (50, Pushed::Late));
        let at = at.unwrap();
        assert!(run.targets[at].1 < ms(50), "{:?}", run.targets[at]);
        let risen = run.targets[at..at + 12].iter().map(|t| t.1).max();
        assert!(risen >= Some(ms(90)), "{risen:?}");
        assert!(stats.target_delay < ms(90), "and it falls back slowly");
        assert_eq!(stats.stalls, 0, "one late packet is no stall");
    }

    #[test]
    fn packets_late_in_a_row_raise_the_target_at_once() {
        // From packet 100 on the path is 100 ms slower: the second late
        // packet in a row raises the target to cover it at once, so only
        // those two are lost.
        let packets = audio(200, |i| Some(ms(if i < 100 { 30 } else { 130 })));
        let (run, stats) = run(PlayoutConfig::audio(), packets);
        assert_eq!(run.concealed(), vec![100, 101], "{stats:?}");
        assert_every_slot_once(&run, 0..200);
    }

    #[test]
    fn a_late_packet_ahead_of_the_playout_point_is_concealed_at_once() {
        // The last packet comes 80 ms behind the others: nothing after it
        // proves its slot gone, its own timestamp does.
        let packets = audio(100, |i| Some(ms(if i == 99 { 110 } else { 30 })));
        let (run, stats) = run(PlayoutConfig::audio(), packets);
        assert_eq!(run.verdicts(99), vec![Pushed::Late]);
        let arrived = Duration::from_micros(99 * AUDIO_US) + ms(110);
        assert_eq!(
            run.out.last().unwrap(),
            &(arrived, Playout::Concealed { seq: 99 })
        );
        // It asks for 80 ms; with nothing played after it, nothing has
        // risen yet (the target rises with playout time).
        assert!(stats.target_delay < ms(80), "{:?}", stats.target_delay);
    }

    #[test]
    fn the_target_rises_with_jitter_and_falls_back_slowly() {
        // 5 s steady, 5 s of 0-60 ms jitter, 40 s steady.
        let jittery = 250..500;
        let packets = audio(2_500, |i| {
            let jitter = if jittery.contains(&i) {
                60.0 * noise(i)
            } else {
                0.0
            };
            Some(ms(30) + Duration::from_secs_f64(jitter / 1_000.0))
        });
        let (run, stats) = run(PlayoutConfig::audio(), packets);
        let at = |s: f64| run.target_at(Duration::from_secs_f64(s) + ms(30));
        assert_eq!(at(4.9), ms(20), "no jitter, the minimum");
        assert!(at(5.5) >= ms(40), "up within half a second: {:?}", at(5.5));
        assert!(at(6.0) >= ms(60), "up within a second: {:?}", at(6.0));
        let high = at(9.99);
        assert!((ms(60)..=ms(100)).contains(&high), "{high:?}");
        // The window forgets the jitter over 5 s, and the target follows
        // it down by at most 20 ms per second.
        assert!(at(13.0) >= high - ms(10), "{:?}", at(13.0));
        for pair in run.targets.windows(2) {
            let ((t1, d1), (t2, d2)) = (pair[0], pair[1]);
            let fall = d1.saturating_sub(d2);
            assert!(fall <= (t2 - t1).mul_f64(SLEW) + Duration::from_micros(1));
        }
        assert!(at(15.0) > ms(40), "{:?}", at(15.0));
        assert_eq!(at(17.0), ms(20));
        assert_eq!(stats.target_delay, ms(20), "back to the minimum");
        // After the jitter, nothing was late.
        let calm_lates = run.pushed[500..]
            .iter()
            .filter(|(_, v)| *v == Pushed::Late)
            .count();
        assert_eq!(calm_lates, 0);
    }

    #[test]
    fn a_faster_path_does_not_make_playout_jump_ahead() {
        // 80 ms transit, then 40 ms: the baseline drops at once, the
        // target rises with it, so held frames keep their place.
        let packets = audio(200, |i| Some(ms(if i < 100 { 80 } else { 40 })));
        let (run, stats) = run(PlayoutConfig::audio(), packets);
        assert_every_slot_once(&run, 0..200);
        assert_eq!(stats.late + stats.concealed, 0);
        let times: Vec<Duration> = run.out.iter().map(|(t, _)| *t).collect();
        assert!(times.windows(2).all(|w| w[1] >= w[0] + ms(19)), "no burst");
    }

    #[test]
    fn a_slower_path_is_followed() {
        // 30 ms transit, then 250 ms for good: a few late packets, then
        // the target covers it; the baseline rises to it slowly.
        let packets = audio(3_000, |i| Some(ms(if i < 100 { 30 } else { 250 })));
        let (run, stats) = run(PlayoutConfig::audio(), packets);
        assert!(stats.late <= 2, "{stats:?}");
        assert_eq!(stats.frames_played + stats.concealed, 3_000);
        assert_eq!(run.frames().len() as u64, stats.frames_played);
        assert_eq!(stats.target_delay, ms(20), "the baseline took it in");
    }

    #[test]
    fn a_300_ms_video_outage_is_a_stall_and_a_50_ms_one_is_not() {
        let video = |outage_ms: u64| {
            // 4 packets per frame, 40 ms transit; the frames sent during
            // the outage are lost.
            let lost = 1_000_000..1_000_000 + outage_ms * 1_000;
            stream(0, 4 * 90, 4, VIDEO_US, |i| {
                let sent = u64::from(i / 4) * VIDEO_US;
                (!lost.contains(&sent)).then(|| ms(40))
            })
        };
        let (_, long) = run(PlayoutConfig::video(), video(300));
        assert_eq!(long.stalls, 1, "{long:?}");
        assert!(
            (ms(300)..=ms(367)).contains(&long.stalled_time),
            "{:?}",
            long.stalled_time
        );
        assert_eq!(long.concealed, 4 * 9);
        let (_, short) = run(PlayoutConfig::video(), video(50));
        assert_eq!((short.stalls, short.stalled_time), (0, Duration::ZERO));
        assert!(short.concealed > 0);
        // Playing time covers the whole stream, outage included.
        let whole = Duration::from_micros(89 * VIDEO_US);
        assert_eq!(long.playing_time, whole);
        assert_eq!(long.sender_paused, Duration::ZERO);
        let rate = long.stall_rate();
        assert!((rate - long.stalled_time.as_secs_f64() / whole.as_secs_f64()).abs() < 1e-9);
    }

    #[test]
    fn an_audio_outage_over_the_threshold_is_a_stall() {
        // 300 ms of packets lost: the sender kept sending (the sequence
        // says so), so its timestamps do not explain the gap.
        let packets = audio(200, |i| (!(50..65).contains(&i)).then(|| ms(30)));
        let (_, stats) = run(PlayoutConfig::audio(), packets);
        assert_eq!(stats.stalls, 1);
        assert_eq!(stats.stalled_time, ms(320));
        assert_eq!(stats.concealed, 15);
    }

    /// Audio with the sender silent for `pause` after packet 99.
    fn paused_audio(pause: Duration, lose: &[u32]) -> Vec<Packet> {
        let pause_us = pause.as_micros() as u64;
        audio(200, |i| (!lose.contains(&i)).then(|| ms(30)))
            .into_iter()
            .map(|mut p| {
                if p.seq >= 100 {
                    p.sent_us += pause_us;
                    p.at += pause;
                }
                p
            })
            .collect()
    }

    #[test]
    fn a_publisher_pause_is_not_a_stall() {
        let (_, stats) = run(PlayoutConfig::audio(), paused_audio(ms(2_000), &[]));
        assert_eq!((stats.stalls, stats.concealed), (0, 0));
        assert_eq!(stats.sender_paused, ms(2_000));
        assert_eq!(stats.playing_time, Duration::from_micros(199 * AUDIO_US));
        assert_eq!(stats.stall_rate(), 0.0);
        // Losing the packets on either side of the pause does not make it
        // one either.
        let (_, stats) = run(PlayoutConfig::audio(), paused_audio(ms(2_000), &[99, 100]));
        assert_eq!((stats.stalls, stats.concealed), (0, 2));
        assert_eq!(stats.sender_paused, ms(2_000));
    }

    #[test]
    fn playing_time_and_pauses_add_up_to_the_time_played() {
        let packets = paused_audio(ms(700), &[20, 21, 22, 23, 24, 25, 140]);
        let (run, stats) = run(PlayoutConfig::audio(), packets);
        let times: Vec<Duration> = run
            .out
            .iter()
            .filter(|(_, p)| matches!(p, Playout::Frame { .. }))
            .map(|(t, _)| *t)
            .collect();
        let span = *times.last().unwrap() - times[0];
        assert_eq!(stats.playing_time + stats.sender_paused, span);
        assert_eq!(stats.stalls, 1, "the 140 ms of lost packets");
    }

    #[test]
    fn sequences_wrap_around() {
        let start = u32::MAX - 9;
        let packets = stream(start, 30, 1, AUDIO_US, |i| {
            Some(ms(30 + if i % 3 == 0 { 25 } else { 0 }))
        });
        let config = PlayoutConfig {
            min_delay: ms(60),
            ..PlayoutConfig::audio()
        };
        let (run, stats) = run(config, packets);
        assert_every_slot_once(&run, (0..30).map(|i| start.wrapping_add(i)));
        assert_eq!((stats.frames_played, stats.resets), (30, 0));
    }

    #[test]
    fn a_sequence_jump_resets_instead_of_concealing_it() {
        // The sequence jumps by 5 million, `pause_us` after packet 49.
        let jumped = |pause_us: u64| {
            let mut packets = audio(50, |_| Some(ms(30)));
            let after = stream(50 + 5_000_000, 50, 1, AUDIO_US, |_| Some(ms(30)));
            packets.extend(after.into_iter().map(|mut p| {
                p.at += Duration::from_micros(50 * AUDIO_US + pause_us);
                p.sent_us += 50 * AUDIO_US + pause_us;
                p
            }));
            run(PlayoutConfig::audio(), packets)
        };
        let (run, stats) = jumped(40_000);
        assert_eq!(run.out.len(), 100, "no flood of concealment");
        assert_eq!((stats.frames_played, stats.resets), (100, 1));
        assert_eq!((stats.stalls, stats.reset_dropped), (0, 0));
        // Without the pause, packet 49 is still held when the jump comes.
        let (run, stats) = jumped(0);
        assert_eq!(run.out.len(), 99);
        assert_eq!((stats.resets, stats.reset_dropped), (1, 1));
    }

    #[test]
    fn a_restarted_publisher_resets_the_buffer() {
        // 0..100, then the publisher restarts at 0 a second later: these
        // sequences were played already, but their timestamps are new.
        let mut packets = audio(100, |_| Some(ms(30)));
        packets.extend(audio(100, |_| Some(ms(30))).into_iter().map(|mut p| {
            p.at += ms(3_000);
            p.sent_us += 3_000_000;
            p
        }));
        let (run, stats) = run(PlayoutConfig::audio(), packets);
        assert_eq!(run.frames(), (0..100).chain(0..100).collect::<Vec<_>>());
        assert_eq!((stats.resets, stats.duplicates, stats.late), (1, 0, 0));
        assert_eq!(stats.stalls, 0, "a restart is a pause of the sender");
        // A straggler of the old run is no reason to go back.
        let mut jb = JitterBuffer::new(PlayoutConfig::audio());
        let t = Instant::now();
        drive(&mut jb, t, audio(100, |_| Some(ms(30))));
        let now = t + ms(2_500);
        assert_eq!(
            jb.push(40, T0_SENT + 40 * AUDIO_US, now, payload(40)),
            Pushed::Duplicate
        );
        assert_eq!(jb.stats().resets, 0);
    }

    #[test]
    fn a_clock_step_beyond_max_delay_re_anchors_after_a_second() {
        // The sender's clock steps back 2 s at packet 100: every packet
        // then looks 2 s late, until the buffer re-anchors on them.
        let packets: Vec<Packet> = audio(300, |_| Some(ms(30)))
            .into_iter()
            .map(|mut p| {
                if p.seq >= 100 {
                    p.sent_us -= 2_000_000;
                }
                p
            })
            .collect();
        let (run, stats) = run(PlayoutConfig::audio(), packets);
        assert_eq!(stats.resets, 1);
        assert_eq!(stats.late, 50, "one second of packets");
        assert_eq!(run.frames().len(), 250);
        assert_eq!(stats.stalls, 1);
    }

    #[test]
    fn bounds_hold() {
        let mut jb = JitterBuffer::new(PlayoutConfig::video());
        let t = Instant::now();
        // A 1000-packet frame in one go: at most MAX_HELD held.
        for seq in 0..1_000 {
            jb.push(seq, T0_SENT, t, payload(seq));
            assert!(jb.held() <= MAX_HELD);
        }
        assert_eq!(jb.stats().overflow, 1_000 - MAX_HELD as u64);
        let out = jb.poll(t + ms(20));
        assert_eq!(out.len(), MAX_HELD);
        assert!(out.iter().all(|o| matches!(o, Playout::Frame { .. })));
        // The longest gap concealed is MAX_GAP - 1; past that, a reset.
        let seq = MAX_HELD as u32 + MAX_GAP - 1;
        let push = |jb: &mut JitterBuffer, seq: u32, at_ms: u64| {
            jb.push(seq, T0_SENT + at_ms * 1_000, t + ms(at_ms), payload(seq))
        };
        assert_eq!(push(&mut jb, seq, 500), Pushed::Buffered);
        let out = jb.poll(t + ms(520));
        assert_eq!(out.len(), MAX_GAP as usize);
        let far = seq + 1 + MAX_GAP;
        assert_eq!(push(&mut jb, far, 1_000), Pushed::Buffered);
        assert_eq!(jb.poll(t + ms(1_020)).len(), 1);
        let s = jb.stats();
        assert_eq!((s.resets, s.concealed), (1, u64::from(MAX_GAP) - 1));
        // A far jump back in time is dropped, not a reset.
        assert_eq!(
            jb.push(far + 5_000, T0_SENT, t + ms(1_020), payload(0)),
            Pushed::TooOld
        );
        // Behind the remembered history.
        let old = far.wrapping_sub(HISTORY as u32 + 10);
        assert_eq!(
            jb.push(old, T0_SENT, t + ms(1_500), payload(0)),
            Pushed::TooOld
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any loss, duplication and reordering (up to 150 ms of jitter),
        /// polled at every wakeup or only now and then: frames come out in
        /// sequence order, each at most once, at most MAX_HELD held.
        #[test]
        fn frames_come_out_in_order_once(
            start in any::<u32>(),
            fates in prop::collection::vec((0u8..10, 0u64..150_000, any::<bool>()), 1..300),
            video in any::<bool>(),
            poll_at_wakeups in any::<bool>(),
        ) {
            let (config, per_frame, interval) = if video {
                (PlayoutConfig::video(), 4, VIDEO_US)
            } else {
                (PlayoutConfig::audio(), 1, AUDIO_US)
            };
            let max_delay = config.max_delay;
            let n = fates.len() as u32;
            let transit = |i: u32| {
                let (fate, jitter, _) = fates[i as usize];
                (fate != 0).then(|| ms(30) + Duration::from_micros(jitter))
            };
            let mut packets = stream(start, n, per_frame, interval, transit);
            let copies: Vec<Packet> = packets
                .iter()
                .filter(|p| fates[p.seq.wrapping_sub(start) as usize].2)
                .map(|p| Packet { at: p.at + ms(7), ..*p })
                .collect();
            packets.extend(copies);
            packets.sort_by_key(|p| p.at);
            let Some(end) = packets.last().map(|p| p.at + ms(10_000)) else {
                return Ok(()); // all lost
            };

            let mut jb = JitterBuffer::new(config);
            let t0 = Instant::now();
            let mut out = Vec::new();
            for p in &packets {
                let now = t0 + p.at;
                while let Some(w) = jb.next_wakeup().filter(|&w| poll_at_wakeups && w <= now) {
                    out.extend(jb.poll(w));
                }
                jb.push(p.seq, p.sent_us, now, payload(p.seq));
                prop_assert!(jb.held() <= MAX_HELD);
                out.extend(jb.poll(now));
            }
            out.extend(jb.poll(t0 + end));
            prop_assert_eq!(jb.held(), 0);

            let mut last = None;
            for o in &out {
                let index = o.seq().wrapping_sub(start);
                prop_assert!(index < n);
                prop_assert!(last.is_none_or(|l| index > l), "{:?} after {:?}", index, last);
                last = Some(index);
                if let Playout::Frame { seq, payload: p, delay, .. } = o {
                    prop_assert_eq!(p, &payload(*seq));
                    prop_assert!(*delay <= max_delay + TOLERANCE);
                }
            }
            let stats = jb.stats();
            prop_assert_eq!(stats.frames_played + stats.concealed, out.len() as u64);
            prop_assert_eq!(stats.resets, 0);
        }

        /// Whatever a broken or hostile sender sends, nothing grows past
        /// its bound and nothing panics.
        #[test]
        fn hostile_input_stays_bounded(
            base in any::<u32>(),
            narrow in any::<bool>(),
            ops in prop::collection::vec((any::<u32>(), any::<u64>(), 0u64..50_000, any::<bool>()), 1..400),
        ) {
            let mut jb = JitterBuffer::new(PlayoutConfig::audio());
            let mut now = Instant::now();
            for (seq, sent, dt, poll) in ops {
                let (seq, sent) = if narrow {
                    (base.wrapping_add(seq % 3_000), T0_SENT + sent % 10_000_000)
                } else {
                    (seq, sent)
                };
                now += Duration::from_micros(dt);
                jb.push(seq, sent, now, payload(seq));
                prop_assert!(jb.held() <= MAX_HELD);
                let _ = jb.next_wakeup();
                if poll {
                    let out = jb.poll(now);
                    prop_assert!(out.len() <= MAX_GAP as usize + MAX_HELD);
                }
            }
            let target = jb.target_delay();
            prop_assert!((ms(20)..=ms(400)).contains(&target));
        }
    }
}
