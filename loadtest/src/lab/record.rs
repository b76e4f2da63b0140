//! What the clients felt, recorded as events arrive: join times, one-way
//! media latency, media loss over every (receiver, stream) the traffic mix
//! expects (from what publishers sent and receivers got, silent streams
//! included), message delivery per sender, and media gaps around injected
//! failures.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::stats::{percentile, Reservoir};

/// A stream is "interrupted" by a failure if nothing arrived for longer than
/// this across the failure time. Audio sends every 40 ms and video every
/// 33 ms: 100 ms is two and a half audio packets, past jitter, scheduling
/// noise and a lone lost packet, and short enough that a fast failover
/// still counts (with a longer threshold, the quickest recoveries would
/// drop out of the figure and flatter it).
pub const GAP: Duration = Duration::from_millis(100);

/// Media samples kept for the latency percentiles (a uniform reservoir past
/// that): bounded memory however long the run.
const MAX_LATENCY_SAMPLES: usize = 200_000;

#[derive(Default)]
pub struct Recorder {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    start_together_ms: Vec<f64>,
    joins: u64,
    join_failures: Vec<String>,
    latency_ms: Reservoir<MAX_LATENCY_SAMPLES>,
    /// Per (receiver, stream): what arrived.
    streams: HashMap<StreamKey, Stream>,
    /// Per published stream: what its publisher sent.
    published: HashMap<StreamId, Published>,
    /// Per (receiver, channel, sender).
    inbox: HashMap<(String, String, String), Inbox>,
    /// Per (channel, sender): messages the sender's edge accepted.
    sent: HashMap<(String, String), u64>,
    /// Members of each channel (receivers of its messages).
    members: HashMap<String, Vec<String>>,
    /// Per (client, channel): the other members its SDK has listed
    /// (`MemberJoined`).
    listed: HashMap<(String, String), HashSet<String>>,
    /// From a client's joins to its SDK listing every other member of a
    /// channel, ms.
    roster_wait_ms: Vec<f64>,
    /// When failures were injected.
    failures: Vec<Instant>,
    /// Regions cut off from the rest of the world, and when they healed.
    isolations: Vec<Isolation>,
    /// Last media arrival per receiver, any stream.
    receivers: HashMap<String, Instant>,
    /// (ms, receiver) of each receiver's failover.
    receiver_failovers: Vec<(f64, String)>,
    /// (ms, "receiver <- user/track in channel") of each stream's failover.
    stream_failovers: Vec<(f64, String)>,
    /// The same for media cut off by a region's partition: ms from the
    /// heal.
    receivers_after_heal: Vec<(f64, String)>,
    streams_after_heal: Vec<(f64, String)>,
    media_rx: u64,
    /// When the first thing was recorded (gaps are timed from it).
    started: Option<Instant>,
    gaps: Vec<Gap>,
}

/// One published track: every other member of its channel should get it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamId {
    pub channel: String,
    /// The publisher.
    pub user: String,
    pub track: String,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct StreamKey {
    receiver: String,
    stream: StreamId,
}

/// "receiver <- user/track in channel", as the report names a stream.
impl std::fmt::Display for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let StreamId {
            channel,
            user,
            track,
        } = &self.stream;
        write!(f, "{} <- {user}/{track} in {channel}", self.receiver)
    }
}

/// What a receiver got of one stream.
struct Stream {
    seen: SeqSet,
    /// Packets whose sequence number had arrived before.
    duplicates: u64,
    last_arrival: Instant,
}

/// What a publisher did with one stream.
#[derive(Default)]
struct Published {
    /// Video (else audio), as published.
    video: bool,
    /// Packets its SDK accepted (sent on a QUIC connection).
    sent: u64,
    /// Packets its SDK refused (no connection: reconnecting, or the track
    /// could not be published). Dropped at the source, as a live call would.
    unsent: u64,
}

/// The distinct sequence numbers of one stream seen so far, as sorted,
/// disjoint, non-adjacent ranges: packets arrive mostly in order, so a
/// stream of any length takes one range per gap still open, not a bit per
/// packet. (A track's 32-bit sequence wraps after 4.5 years at 30 packets/s;
/// packets past the wrap count as new.)
#[derive(Default)]
struct SeqSet {
    /// `[start, end)` ranges.
    ranges: Vec<(u64, u64)>,
    len: u64,
}

impl SeqSet {
    /// Adds `seq`; false if it was there already.
    fn insert(&mut self, seq: u32) -> bool {
        let s = seq as u64;
        let i = self.ranges.partition_point(|r| r.0 <= s);
        if i > 0 && self.ranges[i - 1].1 > s {
            return false;
        }
        let joins_before = i > 0 && self.ranges[i - 1].1 == s;
        let joins_after = i < self.ranges.len() && self.ranges[i].0 == s + 1;
        match (joins_before, joins_after) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = s + 1,
            (false, true) => self.ranges[i].0 = s,
            (false, false) => self.ranges.insert(i, (s, s + 1)),
        }
        self.len += 1;
        true
    }

    fn len(&self) -> u64 {
        self.len
    }
}

#[derive(Default)]
struct Inbox {
    last_seq: u64,
    delivered: u64,
    duplicates: u64,
    reordered: u64,
}

/// Percentiles of a distribution.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Pct {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Pct {
    pub fn of(samples: &mut [f64]) -> Option<Pct> {
        Some(Pct {
            p50: percentile(samples, 50.0)?,
            p95: percentile(samples, 95.0)?,
            p99: percentile(samples, 99.0)?,
        })
    }
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Messages {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// The first few gaps seen: where a receiver's next message from a
    /// sender was not the one after the last (the SDK skipped a gap).
    pub gaps: Vec<Gap>,
    /// The (receiver, sender) pairs short of most messages, worst first
    /// (at most five): "receiver <- sender in channel: delivered of sent".
    /// A pair short at its end with no gap lost its last messages.
    pub short: Vec<String>,
}

/// A jump in one sender's messages at one receiver.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Gap {
    pub receiver: String,
    pub channel: String,
    pub sender: String,
    /// The last seq delivered before the gap, and the one after it.
    pub after: u64,
    pub next: u64,
    /// Seconds since the lab's traffic started.
    pub at_s: f64,
}

/// Gaps listed in a report at most.
const MAX_GAPS: usize = 20;

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Failover {
    pub p50: f64,
    pub max: f64,
    /// Receivers (or streams) interrupted by a failure.
    pub interrupted: u64,
    /// Interrupted ones that never got media again.
    pub unrecovered: u64,
    /// The slowest recoveries.
    pub slowest: Vec<String>,
}

impl Failover {
    fn of(samples: &[(f64, String)], unrecovered: u64) -> Failover {
        let mut ms: Vec<f64> = samples.iter().map(|(m, _)| *m).collect();
        let mut slow = samples.to_vec();
        slow.sort_by(|a, b| b.0.total_cmp(&a.0));
        Failover {
            p50: percentile(&mut ms, 50.0).unwrap_or(0.0),
            max: percentile(&mut ms, 100.0).unwrap_or(0.0),
            interrupted: samples.len() as u64 + unrecovered,
            unrecovered,
            slowest: slow
                .iter()
                .take(5)
                .map(|(ms, what)| format!("{ms:.0} ms: {what}"))
                .collect(),
        }
    }
}

/// A region cut off from the rest (`partition_region`): no way around it
/// until it heals, so media across it is not a failover.
struct Isolation {
    region: String,
    at: Instant,
    healed: Option<Instant>,
}

/// What a silence was.
#[derive(Debug, PartialEq)]
enum Silence {
    /// Begun by a failure the network can route around: its length, ms,
    /// and the failure.
    Failover(f64, Instant),
    /// Begun by a region's partition and ended after its heal: ms from the
    /// heal, and the partition.
    AfterHeal(f64, Instant),
}

/// A silence that starts this soon after a failure is the failure's doing:
/// packets already on the wire (up to ~150 ms one way) still land after it,
/// and relays and clients take up to half a second to notice a dead hop.
const FAILURE_REACH: Duration = Duration::from_secs(1);

/// If the silence from `last` to `now` is a gap (over [`GAP`]) that began
/// with a failure (at most [`FAILURE_REACH`] after it): the silence, in ms,
/// and when the failure was. The silence, not the time since the failure:
/// after a kill they are the same (plus the part of a packet interval
/// before the kill), while a client moving off a draining edge keeps its
/// media until it leaves the old link, and what users feel is the silence
/// then, if any, not how long ago the drain began.
///
/// A silence begun by a region's partition that lasted past its heal is
/// timed from the heal: nothing could reach across before it, and what
/// users then feel is how soon the call comes back.
fn silence(
    failures: &[Instant],
    isolations: &[Isolation],
    last: Instant,
    now: Instant,
) -> Option<Silence> {
    if now - last <= GAP {
        return None;
    }
    let began = |f: Instant| f <= now && last < f + FAILURE_REACH;
    let failure = failures.iter().copied().filter(|f| began(*f)).max();
    let isolation = isolations
        .iter()
        .filter(|i| began(i.at))
        .max_by_key(|i| i.at);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    match (failure, isolation) {
        (f, Some(i)) if f.is_none_or(|f| f < i.at) => match i.healed {
            Some(h) if h < now => Some(Silence::AfterHeal(ms(now - h), i.at)),
            _ => Some(Silence::Failover(ms(now - last), i.at)),
        },
        (Some(f), _) => Some(Silence::Failover(ms(now - last), f)),
        (None, _) => None,
    }
}

/// File `silence` (if any) among the failovers or the silences after a
/// heal, as `what` says it given when its cause was.
fn file(
    silence: Option<Silence>,
    started: Option<Instant>,
    what: impl Fn(String) -> String,
    failovers: &mut Vec<(f64, String)>,
    after_heal: &mut Vec<(f64, String)>,
) {
    let (ms, cause, list) = match silence {
        Some(Silence::Failover(ms, cause)) => (ms, cause, failovers),
        Some(Silence::AfterHeal(ms, cause)) => (ms, cause, after_heal),
        None => return,
    };
    list.push((ms, what(traffic_time(started, cause))));
}

/// "t=12.3 s": when `at` was in the traffic's time, as chaos plans say.
fn traffic_time(started: Option<Instant>, at: Instant) -> String {
    let s = started.map_or(0.0, |t| at.saturating_duration_since(t).as_secs_f64());
    format!("t={s:.1} s")
}

/// Media over every expected (receiver, stream): each member of a channel
/// (its join succeeded) and each stream another member of it published.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct MediaStreams {
    /// (receiver, stream) pairs.
    pub expected: u64,
    /// Expected pairs that got no packet at all.
    pub silent: u64,
    /// Packets owed: for every expected pair, what its publisher sent.
    pub sent: u64,
    /// Distinct packets (by sequence number) that arrived, over expected
    /// pairs.
    pub received: u64,
    /// Packets that arrived again (not in `received`).
    pub duplicates: u64,
    /// Packets publishers could not send (their SDK had no connection):
    /// dropped at the source, so in no figure above.
    pub unsent: u64,
    /// The streams that lost most, worst first (at most five, only those
    /// that lost anything): "receiver <- user/track in channel: received
    /// of sent", to tell one broken stream from loss spread over all.
    pub worst: Vec<String>,
    /// `sent` and `received` of the audio and of the video streams.
    #[serde(skip)]
    pub by_kind: [(u64, u64); 2],
}

/// One figure for audio and one for video.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct PerKind {
    pub audio: f64,
    pub video: f64,
}

/// The recorder's part of the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Felt {
    pub joins: u64,
    pub join_failures: Vec<String>,
    /// When every client starts at once and sending begins only once all
    /// are in: from a client's first connection attempt to its first media
    /// packet in each channel. It includes waiting for the slowest other
    /// client; a user's own time to first media is the late joiners'
    /// `first_media` figure.
    pub start_together_ms: Option<Pct>,
    /// From a client's joins to its SDK listing every other member of a
    /// channel (when it starts sending there): how long a join takes to
    /// reach the other members' edges.
    pub roster_wait_ms: Option<Pct>,
    pub media_latency_ms: Option<Pct>,
    /// 1 - received / sent of [`MediaStreams`]: a silent stream counts as
    /// all lost.
    pub media_loss: f64,
    /// The same per track kind: the packets receivers never played (lost
    /// for good, or arrived after their playout time).
    pub playout_loss: PerKind,
    pub media_streams: MediaStreams,
    pub media_received: u64,
    pub messages: Messages,
    /// Per affected receiver: from the failure to its first media packet
    /// after the gap (on whichever stream).
    pub failover_ms: Option<Failover>,
    /// Per affected (receiver, stream): from the failure to that stream's
    /// first packet after the gap.
    pub stream_failover_ms: Option<Failover>,
    /// Per receiver cut off by a region's partition (none of it in the
    /// failover figures): from the heal to its first media packet.
    pub receivers_after_heal_ms: Option<Failover>,
    /// The same per (receiver, stream).
    pub streams_after_heal_ms: Option<Failover>,
}

impl Recorder {
    pub fn joined(&self, took: Option<Duration>) {
        let mut r = self.inner.lock().unwrap();
        r.started.get_or_insert_with(Instant::now);
        r.joins += 1;
        if let Some(t) = took {
            r.start_together_ms.push(t.as_secs_f64() * 1e3);
        }
    }

    pub fn join_failed(&self, who: &str, why: String) {
        self.inner
            .lock()
            .unwrap()
            .join_failures
            .push(format!("{who}: {why}"));
    }

    pub fn member(&self, channel: &str, user: &str) {
        let mut r = self.inner.lock().unwrap();
        let m = r.members.entry(channel.into()).or_default();
        if !m.iter().any(|u| u == user) {
            m.push(user.into());
        }
    }

    /// `client`'s SDK listed `user` as a member of `channel`: its edge now
    /// knows the edge `user` is on, so what `client` sends reaches it.
    pub fn member_listed(&self, client: &str, channel: &str, user: &str) {
        let mut r = self.inner.lock().unwrap();
        let key = (client.to_string(), channel.to_string());
        r.listed.entry(key).or_default().insert(user.to_string());
    }

    /// Whether `client`'s SDK lists every other member of `channel` (in a
    /// large channel, where members are counted and not listed: whether
    /// its `count` has them all).
    pub fn lists_everyone(&self, client: &str, channel: &str, count: Option<u64>) -> bool {
        let r = self.inner.lock().unwrap();
        let members = r.members.get(channel).map_or(&[][..], |m| m.as_slice());
        if let Some(count) = count {
            return count >= members.len() as u64;
        }
        let listed = r.listed.get(&(client.to_string(), channel.to_string()));
        members
            .iter()
            .filter(|m| *m != client)
            .all(|m| listed.is_some_and(|l| l.contains(m)))
    }

    /// A client waited `took` for its roster before sending.
    pub fn roster_waited(&self, took: Duration) {
        let mut r = self.inner.lock().unwrap();
        r.roster_wait_ms.push(took.as_secs_f64() * 1e3);
    }

    pub fn message_sent(&self, channel: &str, user: &str) {
        *self
            .inner
            .lock()
            .unwrap()
            .sent
            .entry((channel.into(), user.into()))
            .or_default() += 1;
    }

    /// `stream` (`video`, else audio) is about to be published: from now on
    /// its channel's other members expect it, even if not one packet of it
    /// goes out.
    pub fn publishing(&self, stream: &StreamId, video: bool) {
        self.inner
            .lock()
            .unwrap()
            .published
            .entry(stream.clone())
            .or_default()
            .video = video;
    }

    /// The publisher of `stream` handed a packet to its SDK, which `accepted`
    /// it (sent it) or not (no connection).
    pub fn media_sent(&self, stream: &StreamId, accepted: bool) {
        let mut r = self.inner.lock().unwrap();
        if !r.published.contains_key(stream) {
            r.published.insert(stream.clone(), Published::default());
        }
        let p = r.published.get_mut(stream).expect("inserted");
        if accepted {
            p.sent += 1;
        } else {
            p.unsent += 1;
        }
    }

    pub fn failure(&self, at: Instant) {
        self.inner.lock().unwrap().failures.push(at);
    }

    /// `region` was cut off from the rest of the world.
    pub fn isolated(&self, region: &str, at: Instant) {
        let region = region.to_string();
        let healed = None;
        let cut = Isolation { region, at, healed };
        self.inner.lock().unwrap().isolations.push(cut);
    }

    /// `region` is joined to the world again.
    pub fn healed(&self, region: &str, at: Instant) {
        let mut r = self.inner.lock().unwrap();
        let cut = r.isolations.iter_mut();
        for i in cut.filter(|i| i.region == region && i.healed.is_none()) {
            i.healed = Some(at);
        }
    }

    pub fn media(&self, receiver: &str, m: &sdk::Media) {
        // When the SDK played it out, not when this task got to it: a busy
        // machine must not read as network latency.
        let waited = SystemTime::now()
            .duration_since(m.played_at)
            .unwrap_or_default();
        let arrived = Instant::now() - waited;
        // Latency at the playout point: when the SDK handed it out (its
        // jitter buffer's playout time), not when it arrived.
        let played_us = m
            .played_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        let latency_ms = played_us.saturating_sub(m.timestamp_us) as f64 / 1e3;
        let mut guard = self.inner.lock().unwrap();
        let r = &mut *guard;
        r.media_rx += 1;
        r.latency_ms.push(latency_ms);
        let key = StreamKey {
            receiver: receiver.into(),
            stream: StreamId {
                channel: m.channel.clone(),
                user: m.user.clone(),
                track: m.track.clone(),
            },
        };
        if let Some(last) = r.receivers.insert(receiver.into(), arrived) {
            file(
                silence(&r.failures, &r.isolations, last, arrived),
                r.started,
                |at| format!("{receiver} (failure at {at})"),
                &mut r.receiver_failovers,
                &mut r.receivers_after_heal,
            );
        }
        match r.streams.get_mut(&key) {
            None => {
                let mut seen = SeqSet::default();
                seen.insert(m.sequence);
                r.streams.insert(
                    key,
                    Stream {
                        seen,
                        duplicates: 0,
                        last_arrival: arrived,
                    },
                );
            }
            Some(s) => {
                file(
                    silence(&r.failures, &r.isolations, s.last_arrival, arrived),
                    r.started,
                    |at| format!("{key} (failure at {at})"),
                    &mut r.stream_failovers,
                    &mut r.streams_after_heal,
                );
                if !s.seen.insert(m.sequence) {
                    s.duplicates += 1;
                }
                s.last_arrival = arrived;
            }
        }
    }

    pub fn message(&self, receiver: &str, m: &sdk::Message) {
        let mut r = self.inner.lock().unwrap();
        let started = *r.started.get_or_insert_with(Instant::now);
        let r = &mut *r;
        let inbox = r
            .inbox
            .entry((receiver.into(), m.channel.clone(), m.from.clone()))
            .or_default();
        if m.seq <= inbox.last_seq {
            inbox.duplicates += 1;
            return;
        }
        if m.seq != inbox.last_seq + 1 {
            inbox.reordered += 1;
            // Members joined before anyone sent, so a first message above
            // seq 1 is a gap too (`after` 0).
            if r.gaps.len() < MAX_GAPS {
                let gap = Gap {
                    receiver: receiver.into(),
                    channel: m.channel.clone(),
                    sender: m.from.clone(),
                    after: inbox.last_seq,
                    next: m.seq,
                    at_s: started.elapsed().as_secs_f64(),
                };
                r.gaps.push(gap);
            }
        }
        inbox.last_seq = m.seq;
        inbox.delivered += 1;
    }

    /// Media packets received so far (for the status line).
    pub fn media_received(&self) -> u64 {
        self.inner.lock().unwrap().media_rx
    }

    /// Messages sent and delivered so far (for the status line).
    pub fn message_counts(&self) -> (u64, u64) {
        let r = self.inner.lock().unwrap();
        (
            r.sent.values().sum(),
            r.inbox.values().map(|i| i.delivered).sum(),
        )
    }

    /// Deliveries still missing: each message sent, to each other member
    /// of its channel that has not received it yet.
    pub fn messages_outstanding(&self) -> u64 {
        let r = self.inner.lock().unwrap();
        r.message_deliveries()
            .map(|(sent, got)| sent.saturating_sub(got))
            .sum()
    }

    pub fn joins(&self) -> u64 {
        self.inner.lock().unwrap().joins
    }

    /// Summarise. Call once the senders stopped and in-flight traffic landed.
    pub fn felt(&self) -> Felt {
        let mut r = self.inner.lock().unwrap();
        let media_streams = r.media_streams();
        let mut messages = Messages {
            sent: r.sent.values().sum(),
            ..Messages::default()
        };
        for (sent, got) in r.message_deliveries() {
            messages.delivered += got.min(sent);
            messages.lost += sent.saturating_sub(got);
        }
        for i in r.inbox.values() {
            messages.duplicates += i.duplicates;
            messages.reordered += i.reordered;
        }
        messages.gaps = r.gaps.clone();
        let mut short: Vec<_> = r
            .message_pairs()
            .filter(|(_, sent, got)| got < sent)
            .map(|((rx, channel, sender), sent, got)| {
                (
                    sent - got,
                    format!("{rx} <- {sender} in {channel}: {got} of {sent}"),
                )
            })
            .collect();
        short.sort_by_key(|s| std::cmp::Reverse(s.0));
        messages.short = short.into_iter().take(5).map(|(_, s)| s).collect();
        let causes = r.failures.iter().chain(r.isolations.iter().map(|i| &i.at));
        let (failover, stream_failover) = match causes.max() {
            None => (None, None),
            Some(last) => {
                let silent_receivers = r.receivers.values().filter(|t| *t < last).count() as u64;
                let silent_streams = r
                    .streams
                    .values()
                    .filter(|s| s.last_arrival < *last)
                    .count() as u64;
                (
                    Some(Failover::of(&r.receiver_failovers, silent_receivers)),
                    Some(Failover::of(&r.stream_failovers, silent_streams)),
                )
            }
        };
        let (receivers_after_heal_ms, streams_after_heal_ms) = if r.isolations.is_empty() {
            (None, None)
        } else {
            (
                Some(Failover::of(&r.receivers_after_heal, 0)),
                Some(Failover::of(&r.streams_after_heal, 0)),
            )
        };
        let join_failures = r.join_failures.clone();
        let joins = r.joins;
        let media_received = r.media_rx;
        let loss = |(sent, received): (u64, u64)| {
            if sent == 0 {
                0.0
            } else {
                1.0 - received as f64 / sent as f64
            }
        };
        Felt {
            joins,
            join_failures,
            start_together_ms: Pct::of(&mut r.start_together_ms),
            roster_wait_ms: Pct::of(&mut r.roster_wait_ms),
            media_latency_ms: Pct::of(r.latency_ms.values_mut()),
            media_loss: loss((media_streams.sent, media_streams.received)),
            playout_loss: PerKind {
                audio: loss(media_streams.by_kind[0]),
                video: loss(media_streams.by_kind[1]),
            },
            media_streams,
            media_received,
            messages,
            failover_ms: failover,
            stream_failover_ms: stream_failover,
            receivers_after_heal_ms,
            streams_after_heal_ms,
        }
    }
}

impl Inner {
    /// For each sender's messages in a channel and each other member of it:
    /// how many were sent and how many that member got.
    fn message_deliveries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.message_pairs().map(|(_, sent, got)| (sent, got))
    }

    /// Every expected (receiver, channel, sender) with the messages sent
    /// and delivered.
    fn message_pairs(&self) -> impl Iterator<Item = ((&str, &str, &str), u64, u64)> + '_ {
        self.sent.iter().flat_map(move |((channel, sender), n)| {
            let others = self.members.get(channel).into_iter().flatten();
            others.filter(move |m| *m != sender).map(move |member| {
                let key = (member.clone(), channel.clone(), sender.clone());
                let got = self.inbox.get(&key).map_or(0, |i| i.delivered);
                (
                    (member.as_str(), channel.as_str(), sender.as_str()),
                    *n,
                    got,
                )
            })
        })
    }

    /// Every expected (receiver, stream): each published stream, for each
    /// other member of its channel. A client sends in a channel only once
    /// its SDK lists every other member (its edge knows their edges), so a
    /// receiver was reachable for all its publisher sent.
    fn media_streams(&self) -> MediaStreams {
        let mut out = MediaStreams::default();
        let mut lossy = Vec::new();
        for (id, p) in &self.published {
            out.unsent += p.unsent;
            let receivers = self.members.get(&id.channel).into_iter().flatten();
            for receiver in receivers.filter(|m| **m != id.user) {
                let key = StreamKey {
                    receiver: receiver.clone(),
                    stream: id.clone(),
                };
                let got = self.streams.get(&key).map_or(0, |s| s.seen.len());
                out.expected += 1;
                out.sent += p.sent;
                out.received += got;
                let kind = &mut out.by_kind[p.video as usize];
                kind.0 += p.sent;
                kind.1 += got;
                out.silent += (got == 0) as u64;
                if got < p.sent {
                    let what = format!("{key}: {got} of {}", p.sent);
                    lossy.push((got as f64 / p.sent as f64, what));
                }
            }
        }
        lossy.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.worst = lossy.into_iter().take(5).map(|(_, w)| w).collect();
        out.duplicates = self.streams.values().map(|s| s.duplicates).sum();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn media(seq: u32) -> sdk::Media {
        sdk::Media {
            channel: "c".into(),
            user: "u".into(),
            track: "mic".into(),
            sequence: seq,
            timestamp_us: control::clock::now_us(),
            payload: Bytes::new(),
            received_at: SystemTime::now(),
            played_at: SystemTime::now(),
        }
    }

    fn message(seq: u64) -> sdk::Message {
        sdk::Message {
            channel: "c".into(),
            from: "u".into(),
            seq,
            payload: Bytes::new(),
            sent_at_us: 0,
        }
    }

    fn mic() -> StreamId {
        StreamId {
            channel: "c".into(),
            user: "u".into(),
            track: "mic".into(),
        }
    }

    /// `u` publishes its mic in `c` and sends packets 0..sent.
    fn publish(r: &Recorder, sent: u32) {
        r.publishing(&mic(), false);
        for _ in 0..sent {
            r.media_sent(&mic(), true);
        }
    }

    #[test]
    fn loss_duplicates_and_gaps_are_counted() {
        let r = Recorder::default();
        r.member("c", "u");
        r.member("c", "rx");
        publish(&r, 7);
        r.media_sent(&mic(), false);
        // Packets 0-6 sent: 4 lost, 3 twice.
        for seq in [0, 1, 2, 3, 3, 5, 6] {
            r.media("rx", &media(seq));
        }
        for _ in 0..4 {
            r.message_sent("c", "u");
        }
        for seq in [1, 2, 2, 4] {
            r.message("rx", &message(seq));
        }
        let f = r.felt();
        assert!((f.media_loss - 1.0 / 7.0).abs() < 1e-9, "{}", f.media_loss);
        assert_eq!(
            f.media_streams,
            MediaStreams {
                expected: 1,
                silent: 0,
                sent: 7,
                received: 6,
                duplicates: 1,
                unsent: 1,
                worst: vec!["rx <- u/mic in c: 6 of 7".into()],
                by_kind: [(7, 6), (0, 0)],
            }
        );
        assert!((f.playout_loss.audio - 1.0 / 7.0).abs() < 1e-9);
        assert_eq!(
            f.messages,
            Messages {
                sent: 4,
                delivered: 3,
                lost: 1,
                duplicates: 1,
                reordered: 1,
                gaps: vec![Gap {
                    receiver: "rx".into(),
                    channel: f.messages.gaps[0].channel.clone(),
                    sender: "u".into(),
                    after: 2,
                    next: 4,
                    at_s: f.messages.gaps[0].at_s,
                }],
                short: vec!["rx <- u in c: 3 of 4".into()],
            }
        );
        assert!(f.failover_ms.is_none());
    }

    #[test]
    fn a_member_that_got_nothing_counts_as_all_lost() {
        let r = Recorder::default();
        for m in ["u", "rx", "deaf"] {
            r.member("c", m);
        }
        publish(&r, 10);
        for seq in 0..10 {
            r.media("rx", &media(seq));
        }
        // A publisher whose track never went out is expected too.
        r.publishing(
            &StreamId {
                track: "cam".into(),
                ..mic()
            },
            true,
        );
        let f = r.felt();
        assert_eq!(
            f.media_streams,
            MediaStreams {
                expected: 4,
                silent: 3,
                sent: 20,
                received: 10,
                duplicates: 0,
                unsent: 0,
                worst: vec!["deaf <- u/mic in c: 0 of 10".into()],
                by_kind: [(20, 10), (0, 0)],
            }
        );
        assert!((f.media_loss - 0.5).abs() < 1e-9, "{}", f.media_loss);
        // The silent video stream was sent nothing: no video loss to speak of.
        assert_eq!(f.playout_loss.video, 0.0);
    }

    #[test]
    fn a_client_lists_everyone_once_its_sdk_named_every_other_member() {
        let rec = Recorder::default();
        for u in ["a", "b", "c"] {
            rec.member("room", u);
        }
        assert!(!rec.lists_everyone("a", "room", None));
        rec.member_listed("a", "room", "b");
        rec.member_listed("b", "room", "c");
        assert!(!rec.lists_everyone("a", "room", None), "c not yet, for a");
        rec.member_listed("a", "room", "c");
        assert!(rec.lists_everyone("a", "room", None));
        assert!(
            !rec.lists_everyone("b", "room", None),
            "b has not heard of a"
        );
        // A large channel counts its members (its own session included).
        assert!(!rec.lists_everyone("b", "room", Some(2)));
        assert!(rec.lists_everyone("b", "room", Some(3)));
    }

    #[test]
    fn sequence_sets_merge_ranges_and_refuse_repeats() {
        let mut s = SeqSet::default();
        for seq in [5, 7, 6, 1, 3, 2, 9, 0] {
            assert!(s.insert(seq), "{seq}");
        }
        assert_eq!(s.ranges, vec![(0, 4), (5, 8), (9, 10)]);
        for seq in [0, 3, 5, 7, 9] {
            assert!(!s.insert(seq), "{seq}");
        }
        assert!(s.insert(4) && s.insert(8) && s.insert(u32::MAX));
        assert_eq!(s.ranges, vec![(0, 10), (u32::MAX as u64, 1 << 32)]);
        assert_eq!(s.len(), 11);
    }

    #[test]
    fn a_gap_across_a_region_partition_is_timed_from_the_heal() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let cut = Isolation {
            region: "ap-south".into(),
            at: t0 + ms(100),
            healed: Some(t0 + ms(5_000)),
        };
        let isolations = [cut];
        // Back after the heal: from the heal.
        assert_eq!(
            silence(&[], &isolations, t0 + ms(90), t0 + ms(5_300)),
            Some(Silence::AfterHeal(300.0, t0 + ms(100)))
        );
        // Back before it (a way inside the region): a failover.
        assert_eq!(
            silence(&[], &isolations, t0 + ms(90), t0 + ms(600)),
            Some(Silence::Failover(510.0, t0 + ms(100)))
        );
        // A kill after the partition began the silence: a failover.
        let kill = t0 + ms(200);
        assert_eq!(
            silence(&[kill], &isolations, t0 + ms(190), t0 + ms(5_300)),
            Some(Silence::Failover(5_110.0, kill))
        );
        // Not a gap, or begun by nothing.
        assert_eq!(silence(&[], &isolations, t0 + ms(90), t0 + ms(100)), None);
        assert_eq!(
            silence(&[], &isolations, t0 + ms(2_000), t0 + ms(5_300)),
            None
        );
    }

    #[test]
    fn a_heal_ends_only_its_own_region_s_partition() {
        let r = Recorder::default();
        let t0 = Instant::now();
        r.isolated("ap-south", t0);
        r.isolated("eu-west", t0);
        r.healed("eu-west", t0 + Duration::from_secs(1));
        let inner = r.inner.lock().unwrap();
        let healed: Vec<(&str, bool)> = inner
            .isolations
            .iter()
            .map(|i| (i.region.as_str(), i.healed.is_some()))
            .collect();
        assert_eq!(healed, [("ap-south", false), ("eu-west", true)]);
    }

    #[test]
    fn a_gap_across_a_failure_is_a_failover() {
        let r = Recorder::default();
        r.media("rx", &media(1));
        std::thread::sleep(Duration::from_millis(20));
        r.failure(Instant::now());
        std::thread::sleep(GAP + Duration::from_millis(30));
        r.media("rx", &media(2));
        let felt = r.felt();
        assert_eq!(felt.stream_failover_ms.unwrap().interrupted, 1);
        let f = felt.failover_ms.unwrap();
        assert_eq!(f.interrupted, 1);
        assert_eq!(f.unrecovered, 0);
        assert!(f.max >= GAP.as_secs_f64() * 1e3, "{f:?}");
    }
}
