//! Live probes between edges: RTT, jitter and loss per peer, and the set of
//! peers this edge sees dead (which reroutes at once, see
//! `routes::effective_table`).
//!
//! Probes are datagrams on the relay link to each probe target (wire layout
//! in `protocol::datagram::Probe`); the peer answers on the same connection.
//! Statistics are `topology::LinkStats`. The policy, with the reasons:

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::datagram::Probe;
use protocol::EdgeId;
use tokio::sync::watch;
use topology::probe::ReplyOutcome;
use topology::{LinkStats, LinkSummary};
use tracing::{debug, info, warn};

use crate::edge::EdgeCore;
use crate::relay::TransportCounts;

/// Peers this edge relays traffic to are probed every 200 ms: a dead next
/// hop is noticed within about 0.6 s plus its RTT (three missed probes),
/// which leaves time inside the design's one-second failover budget; at
/// 17-byte probes (~70 bytes on the wire) it costs 350 B/s per target,
/// nothing next to the traffic it protects.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// Every other target is only measured, for route computation and for the
/// moment it carries traffic: one probe every this many rounds (2 s, in a
/// round drawn afresh each time: [`Prober::phase`]), once
/// it is measured well enough (`topology::LinkStats::wants_samples`: a few
/// replies, and a full loss window if it loses probes; until then, every
/// round).
/// Nobody needs to know within a second that an idle link died (a path
/// that starts using it promotes it to the fast rate, and a dead edge
/// leaves the registry within its lease), and its RTT window
/// (`topology::probe::RTT_WINDOW` samples, 40 s) follows links whose
/// figures move on the scale of minutes. Probing every path's next hop
/// fast instead, a 60-edge full mesh (mostly direct paths: every peer a
/// next hop) sent 18,000 probes a second, most of a 2-core lab's CPU.
pub const SLOW_PROBE_ROUNDS: u64 = 10;
/// Slow targets measured at the fast rate at once, at most: new targets and
/// targets that lost a probe want a few hundred samples, and a busy machine
/// losing probes everywhere must not turn every link into a fast one (on a
/// loaded 60-edge lab that fed the load that lost the probes). The others
/// wait their turn at the slow rate.
pub const MEASURED_AT_ONCE: usize = 4;
/// A peer this edge relayed traffic to within this long is probed at the
/// fast rate: whichever edge of a path it is (ingress or relay on somebody
/// else's path), it must see its next hop die at once (it repairs around
/// it, see `forwarding`).
pub const RECENT_TRAFFIC: Duration = Duration::from_secs(5);
/// Link metrics are refreshed every this many rounds (1 s): Prometheus
/// scrapes them every few seconds, and each refresh sorts every link's RTT
/// window.
const METRICS_ROUNDS: u64 = 5;

/// A probe unanswered this long is lost. 1 s: longer than any RTT on Earth
/// (about 400 ms at worst through a congested path), so only real losses
/// count.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// A peer is dead after at least this many probe intervals (plus its
/// smoothed RTT) without hearing anything: one or two lost probes in a row
/// happen on any link; on a clean one three are an outage. A lossy link
/// needs more ([`unanswered_for_dead`]).
pub const DEAD_AFTER_INTERVALS: u32 = 3;
/// ... and at most this many, however lossy the link: 2 s at the fast rate.
pub const MAX_DEAD_AFTER_INTERVALS: u32 = 10;
/// The chance that a live link's loss alone leaves a run of sends
/// unanswered long enough to call it dead, at most. A false verdict moves
/// every route through the link away and back (measured in the lab at 10%
/// loss and 50 ms jitter on every link, with three probes and one
/// unanswered send as the rule: twelve edges called about five live links
/// a second dead).
/// At one in a million, a link probed five times a second is wrongly
/// called dead about once in two days.
pub const FALSE_DEAD_CHANCE: f64 = 1e-6;
/// How long a next hop a rejoining client left for its silence
/// (`Join.unreachable_edge`) is suspect on that word alone: long enough for
/// this edge's own judgement (four round trips of silence after a send, or
/// three probe intervals) to take over; a hop this edge neither sends to
/// nor probes carries none of its traffic, and suspecting it costs
/// nothing. Heard from meanwhile, it stops being suspect at once, so a
/// client that names a live edge (its own network failed) costs copies
/// for a round trip at most.
pub const UNREACHABLE_HINT_TTL: Duration = Duration::from_secs(2);
/// How long a peer that said it is draining (`RelayDraining`) is routed
/// around at most, whatever time it said: the reference edge says it a
/// second before it closes, and its close or its silence ends the episode
/// sooner; this bounds the detours around a peer that said so and then
/// stayed.
pub const DRAINING_PEER_TTL: Duration = Duration::from_secs(30);
/// A target never heard from is dead once its first probe has been out
/// this long unanswered: ten probes at the fast rate, enough for a link
/// losing a fifth of its probes both ways to answer one.
pub const FIRST_ANSWER_GRACE: Duration = Duration::from_secs(2);
/// ...or once no probe could be sent to it for this long (its relay link
/// not up): a QUIC handshake over a lossy link waits a probe timeout (about
/// 1 s before a first RTT sample, then twice as long) for each lost
/// flight; two lost flights fit. With the 2 s counted from the first
/// attempt, the built-in world at 10% loss and 50 ms jitter on every link
/// saw 24 live links called dead in its first seconds; 2-3 with this and
/// the acknowledgements below (measured 2026-12-07).
pub const DIAL_GRACE: Duration = Duration::from_secs(4);

/// A next hop carrying traffic is also judged by its relay connection,
/// sooner than by its probes (three intervals, 600 ms plus its RTT): a live
/// peer's QUIC stack acknowledges what this edge sends within a round trip
/// plus its ACK delay (25 ms), so a connection from which not one packet
/// arrives for [`TRANSPORT_SILENCE_RTTS`] round trips (at least
/// [`TRANSPORT_SILENCE_MIN`]) after this edge sent on it is an outage,
/// whatever the link's loss (the SDKs' watchdog rule). Its counters are
/// looked at this often: each look costs a read of the connection's
/// counters per recently used link, and the looks bound how late a silence
/// is seen (its start is known only to the look that saw the first
/// unanswered send, its length only at the next look). At 50 ms the looks
/// added up to 150 ms to a suspect verdict (measured in the lab's relay-kill
/// plan: a 115 ms hop suspect about 350 ms after its edge died, where a
/// round trip and a quarter plus the ACK delay is 170 ms).
pub const TRANSPORT_CHECK_EVERY: Duration = Duration::from_millis(20);
/// Looks further apart than this mean this edge's own tasks were starved:
/// what the peer sent may still wait in the socket, so the silence is not
/// the peer's. (An absolute bound, not a number of looks: a loaded machine
/// delays a 20 ms tick by tens of milliseconds without starving anybody.)
pub const TRANSPORT_STARVED_AFTER: Duration = Duration::from_millis(150);
/// The least silence that kills a next hop: a busy peer or edge process
/// (scheduling on a loaded machine) holds packets back for tens of
/// milliseconds without being dead.
pub const TRANSPORT_SILENCE_MIN: Duration = Duration::from_millis(150);
/// Round trips of silence that kill a next hop: room for a jittery path.
pub const TRANSPORT_SILENCE_RTTS: u32 = 4;
/// Long before that, a next hop is *suspect* once its connection has been
/// silent for a round trip and a quarter plus [`ACK_DELAY`] after a send
/// (at least [`TRANSPORT_SUSPECT_MIN`]): a live peer's acknowledgement is
/// late by then only on a jittery or busy path. Media for the destinations
/// behind a suspect hop is also sent around it, as copies
/// (`forward::trees::Children::copies`), until the hop answers or is
/// found dead. Being wrong costs only bandwidth for a moment, where
/// waiting for the dead verdict costs every stream through the hop three
/// round trips of silence.
pub const TRANSPORT_SUSPECT_MIN: Duration = Duration::from_millis(60);
/// The most a live QUIC peer delays an acknowledgement (quinn's and the
/// RFC's default `max_ack_delay`).
pub const ACK_DELAY: Duration = Duration::from_millis(25);

/// The data behind a poisoned lock is still whole here: each holder
/// changes it in one step.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Publish `set` on `tx`, waking its watchers only if it changed.
fn replace_set(tx: &watch::Sender<BTreeSet<EdgeId>>, set: BTreeSet<EdgeId>) {
    tx.send_if_modified(|s| {
        let changed = *s != set;
        *s = set;
        changed
    });
}

/// How many sends (probes, or anything else the peer answers) in a row a
/// link losing `loss` of them (round trip) may leave unanswered before the
/// peer is dead: the fewest whose loss by chance alone is rarer than
/// [`FALSE_DEAD_CHANCE`]. 1 on a link that loses nothing, 3 at 1%, 4 at
/// 2%, 9 at 19% (10% each way).
pub fn unanswered_for_dead(loss: f64) -> u32 {
    if loss.is_nan() || loss <= 0.0 {
        return 1;
    }
    if loss >= 1.0 {
        return MAX_DEAD_AFTER_INTERVALS;
    }
    let runs = (FALSE_DEAD_CHANCE.ln() / loss.ln()).ceil();
    (runs as u32).clamp(1, MAX_DEAD_AFTER_INTERVALS)
}

/// How long `rtt` peers may stay silent after a send before they are
/// suspect, and before they are dead.
fn silence_waits(rtt: Duration) -> (Duration, Duration) {
    let suspect = (rtt + rtt / 4 + ACK_DELAY).max(TRANSPORT_SUSPECT_MIN);
    let dead = (rtt * TRANSPORT_SILENCE_RTTS).max(TRANSPORT_SILENCE_MIN);
    (suspect, dead.max(suspect))
}

/// What a relay connection's counters say of its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Silence {
    /// Answering, or nothing sent to answer.
    None,
    /// Unanswered for a little over a round trip: send around it as well.
    Suspect,
    /// Unanswered for [`TRANSPORT_SILENCE_RTTS`] round trips (and, on a
    /// lossy link, enough sends): dead.
    Dead,
}

struct Target {
    stats: LinkStats,
    probing_since: Instant,
    /// A slow target still being measured (`LinkStats::wants_samples`,
    /// checked at each of its slow rounds) is probed at the fast rate.
    measuring: bool,
    /// How often it is probed now, and since when: silence is counted from
    /// then at the earliest, so a target promoted to the fast rate is not
    /// dead for having been probed slowly before.
    interval: Duration,
    interval_since: Instant,
    /// When its first probe was sent (its relay link up).
    first_sent: Option<Instant>,
    /// When the peer last acknowledged what this edge sent on its relay
    /// connection (read once a round, [`Prober::note_acks`]): like a probe's
    /// answer, proof that each end hears the other, and frequent (probes
    /// and media are acknowledged, and an acknowledgement lost is repeated
    /// in the next). A live link whose loss just rose (and is not measured
    /// yet) leaves a few probes in a row unanswered by chance: a system
    /// test at 10% loss each way saw a live relay called dead that way,
    /// its media sent around it. Acknowledgements keep such a peer alive,
    /// but only while a probe was answered within [`ack_ceiling`]: a peer
    /// whose QUIC stack answers while the edge process above it hangs is
    /// dead all the same.
    acked_at: Option<Instant>,
    /// The connection (`stable_id`) and the ACK frames received on it at
    /// the last round.
    acks_seen: Option<(usize, u64)>,
    /// Its relay connection went silent ([`TransportSilence`]) or the peer
    /// closed it going away: dead until a probe is answered (or, silent,
    /// until the same connection answers: [`Prober::answered_again`]).
    link_lost: Option<LinkLoss>,
    /// Seen dead, or probed without an answer in time yet: the probes lost
    /// (or late, or still pending) since its last timely answer measured
    /// the outage, and are forgotten when it answers in time again
    /// (`LinkStats::forget_outage`).
    outage: bool,
}

/// How a peer's relay link was lost ([`Prober::link_lost`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkLoss {
    /// Its connection (`stable_id`) left what this edge sent unanswered
    /// ([`Silence::Dead`]).
    Silent(usize),
    /// It closed its connection going away (stopping).
    GoingAway,
}

/// Per-peer link statistics and the dead set.
pub struct Prober {
    epoch: Instant,
    /// Draws the slow targets' probing rounds ([`Prober::phase`]): a hash
    /// keyed afresh for each prober, so that edges do not draw alike.
    draws: std::hash::RandomState,
    seq: AtomicU64,
    rounds: AtomicU64,
    targets: Mutex<HashMap<EdgeId, Target>>,
    dead: watch::Sender<BTreeSet<EdgeId>>,
    /// Next hops whose relay connection is [`Silence::Suspect`] now, and
    /// whether there is any (read per relayed packet and child: a healthy
    /// mesh pays one relaxed load, not a lock).
    suspect: watch::Sender<BTreeSet<EdgeId>>,
    any_suspect: AtomicBool,
    /// The part of `suspect` its relay connection's silence made
    /// ([`TransportSilence`]).
    silent: Mutex<BTreeSet<EdgeId>>,
    /// The part a rejoining client's word made
    /// ([`Prober::hint_unreachable`]): each peer until when.
    hinted: Mutex<HashMap<EdgeId, Instant>>,
    /// Peers that said they are draining ([`Prober::peer_draining`]): each
    /// until when; and whether there is any (read per relayed packet and
    /// child, as `any_suspect`).
    draining: Mutex<HashMap<EdgeId, Instant>>,
    any_draining: AtomicBool,
}

impl Default for Prober {
    fn default() -> Self {
        Prober {
            epoch: Instant::now(),
            draws: std::hash::RandomState::new(),
            seq: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
            targets: Mutex::default(),
            dead: watch::channel(BTreeSet::new()).0,
            suspect: watch::channel(BTreeSet::new()).0,
            any_suspect: AtomicBool::new(false),
            silent: Mutex::default(),
            hinted: Mutex::default(),
            draining: Mutex::default(),
            any_draining: AtomicBool::new(false),
        }
    }
}

impl crate::forward::trees::HopView for Prober {
    fn is_dead(&self, peer: EdgeId) -> bool {
        Prober::is_dead(self, peer)
    }
    fn is_suspect(&self, peer: EdgeId) -> bool {
        Prober::is_suspect(self, peer)
    }
    fn is_draining(&self, peer: EdgeId) -> bool {
        Prober::is_draining(self, peer)
    }
}

/// What this edge measured toward one peer.
#[derive(Clone, Copy, Debug)]
pub struct PeerLink {
    pub peer: EdgeId,
    pub summary: LinkSummary,
    pub alive: bool,
}

impl Prober {
    /// The round of cycle `cycle` (of `every` rounds) in which `peer` is
    /// probed: drawn afresh each cycle, so that a probe's moment in the
    /// cycle owes nothing to its peer. At a fixed moment, a link probed
    /// slowly met whatever else recurs at the same period every time: in
    /// the 60-edge lab, work every 2 s delayed the probes sent in a tenth
    /// of each cycle by 10-50 ms, and the links probed then (always the
    /// same ones) read 5-100 ms of jitter for 0.3 ms real, moving routes
    /// over and over (docs/benchmarks.md, "Routes at rest"). Drawn, every
    /// link takes its share of such moments, which the RTT and jitter
    /// estimates' percentiles ignore. Consecutive probes are 1 to
    /// `2 × every - 1` rounds apart: within the `3 × every` rounds of
    /// silence that make a slow target dead.
    fn phase(&self, cycle: u64, peer: EdgeId, every: u64) -> u64 {
        if every <= 1 {
            return 0;
        }
        self.draws.hash_one((cycle, peer)) % every
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Whether `peer` is probed.
    pub fn is_target(&self, peer: EdgeId) -> bool {
        lock(&self.targets).contains_key(&peer)
    }

    /// The peers currently seen dead.
    pub fn dead(&self) -> watch::Receiver<BTreeSet<EdgeId>> {
        self.dead.subscribe()
    }

    /// Whether this edge's probes see `peer` dead now.
    pub fn is_dead(&self, peer: EdgeId) -> bool {
        self.dead.borrow().contains(&peer)
    }

    /// Whether `peer`'s relay connection is suspect now (silent a little
    /// over a round trip, not yet dead): media is also sent around it.
    pub fn is_suspect(&self, peer: EdgeId) -> bool {
        self.has_suspects() && self.suspect.borrow().contains(&peer)
    }

    /// Whether any next hop is suspect now: one relaxed load, so that a
    /// healthy mesh does not look for copies to make.
    pub fn has_suspects(&self) -> bool {
        self.any_suspect.load(Ordering::Relaxed)
    }

    /// Whether `peer` is suspect for its relay connection's silence (not
    /// only on a client's word).
    fn is_silent(&self, peer: EdgeId) -> bool {
        lock(&self.silent).contains(&peer)
    }

    /// The next hops whose relay connections are silent now.
    fn set_suspect(&self, silent: BTreeSet<EdgeId>) {
        *lock(&self.silent) = silent;
        self.publish_suspects(Instant::now());
    }

    /// A client rejoining here left `peer` at `now` because it stopped
    /// answering (`Join.unreachable_edge`): suspect it (media and frames
    /// through it also go around it) for [`UNREACHABLE_HINT_TTL`], unless
    /// it is heard from or found dead first. The client's link to it
    /// crossed other paths than this edge's, but an edge that stopped
    /// answering a client has most often died, and this edge would find
    /// that out only a few round trips after sending through it.
    pub fn hint_unreachable(&self, peer: EdgeId, now: Instant) {
        if self.is_dead(peer) {
            return;
        }
        lock(&self.hinted).insert(peer, now + UNREACHABLE_HINT_TTL);
        self.publish_suspects(now);
    }

    /// `peer` said it is draining (`RelayDraining`): it will close within
    /// `closes_within` (at most [`DRAINING_PEER_TTL`]) and forwards until
    /// then. Until its link is lost (closed or silent) or it restarts, what
    /// this edge routes *through* it goes around it (`forward::trees`), and
    /// goaways redirect no client to it; what is for its own members still
    /// goes to it. Its answers do not end this (it answers until it closes).
    pub fn peer_draining(&self, peer: EdgeId, closes_within: Duration, now: Instant) {
        if self.is_dead(peer) {
            return;
        }
        let until = now + closes_within.min(DRAINING_PEER_TTL);
        let mut draining = lock(&self.draining);
        draining.insert(peer, until);
        self.any_draining.store(true, Ordering::Relaxed);
    }

    /// Whether `peer` said it is draining and has not gone yet. One relaxed
    /// load while no peer is draining.
    pub fn is_draining(&self, peer: EdgeId) -> bool {
        self.any_draining.load(Ordering::Relaxed)
            && lock(&self.draining)
                .get(&peer)
                .is_some_and(|until| *until > Instant::now())
    }

    /// `peer` went (its link lost) or came back as a new process: its word
    /// that it was draining is spent.
    pub fn forget_draining(&self, peer: EdgeId) {
        self.forget_draining_where(|p, _| p == peer);
    }

    /// Forget the draining peers `spent` says (peer, until) are done with.
    fn forget_draining_where(&self, spent: impl Fn(EdgeId, Instant) -> bool) {
        if !self.any_draining.load(Ordering::Relaxed) {
            return;
        }
        let mut draining = lock(&self.draining);
        draining.retain(|p, until| !spent(*p, *until));
        self.any_draining
            .store(!draining.is_empty(), Ordering::Relaxed);
    }

    /// `peer` answered: a client's word no longer makes it suspect.
    fn heard_from(&self, peer: EdgeId) {
        if lock(&self.hinted).remove(&peer).is_some() {
            self.publish_suspects(Instant::now());
        }
    }

    /// Publish the suspects: the silent hops and the hinted ones still
    /// within their time and not dead. (Draining peers past their time are
    /// forgotten here too: this runs at every look at the connections.)
    fn publish_suspects(&self, now: Instant) {
        self.forget_draining_where(|_, until| until <= now);
        let mut all = lock(&self.silent).clone();
        {
            let mut hinted = lock(&self.hinted);
            hinted.retain(|_, until| *until > now);
            let dead = self.dead.borrow();
            all.extend(hinted.keys().filter(|p| !dead.contains(p)));
        }
        self.any_suspect.store(!all.is_empty(), Ordering::Relaxed);
        replace_set(&self.suspect, all);
    }

    /// Record a reply; the RTT it measured if the statistics used it (for
    /// the RTT histogram).
    pub fn on_reply(&self, peer: EdgeId, p: Probe) -> Option<Duration> {
        let rtt = Duration::from_micros(self.now_us().saturating_sub(p.sent_at_us));
        self.heard_from(peer);
        let mut targets = lock(&self.targets);
        let target = targets.get_mut(&peer)?;
        target.link_lost = None;
        let outcome = target.stats.on_reply(p.seq, rtt);
        let answered = matches!(outcome, ReplyOutcome::Accepted | ReplyOutcome::Late);
        // Only an answer in time ends an outage (see `forget_outage`).
        if outcome == ReplyOutcome::Accepted && std::mem::take(&mut target.outage) {
            target.stats.forget_outage(p.seq);
        }
        // A dead peer that answers is alive by the rule the next round
        // would apply (`is_alive`: it was just heard): back at once, not up
        // to a probing interval later, so that routes and the directory
        // (`directory::run_refresh`) take it back a round trip after its
        // link is up again.
        if answered && is_alive(target, Instant::now()) && self.is_dead(peer) {
            drop(targets);
            self.dead.send_if_modified(|dead| dead.remove(&peer));
        }
        answered.then_some(rtt)
    }

    /// A probe to send to `peer` now, out of the rounds, counted as sent
    /// (`None` if `peer` is not a probe target): for a relay link just up
    /// again to a peer seen dead, whose next round may be a slow round
    /// (2 s) away.
    pub fn probe_now(&self, peer: EdgeId) -> Option<Probe> {
        let mut targets = lock(&self.targets);
        let target = targets.get_mut(&peer)?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        target.stats.on_probe_sent(seq, Instant::now());
        Some(Probe {
            reply: false,
            seq,
            sent_at_us: self.now_us(),
        })
    }

    /// `peer`'s relay connection `conn` has received `acks` ACK frames so
    /// far, at `now`: more than at the last round on the same connection
    /// means the peer acknowledged what this edge sent since (see
    /// `Target::acked_at`; a link lost stays lost until a probe is
    /// answered).
    pub fn note_acks(&self, peer: EdgeId, conn: usize, acks: u64, now: Instant) {
        let mut targets = lock(&self.targets);
        let Some(t) = targets.get_mut(&peer) else {
            return;
        };
        if t.acks_seen.is_some_and(|(c, n)| c == conn && acks > n) {
            t.acked_at = Some(now);
        }
        t.acks_seen = Some((conn, acks));
    }

    /// `peer`'s relay connection went silent, or the peer closed it going
    /// away: dead now (if probed), until a probe is answered; if it said it
    /// was draining, that is spent. True if that made it dead.
    pub fn link_lost(&self, peer: EdgeId, how: LinkLoss) -> bool {
        let mut targets = lock(&self.targets);
        let Some(t) = targets.get_mut(&peer) else {
            drop(targets);
            self.forget_draining(peer);
            return false;
        };
        t.link_lost = Some(how);
        t.outage = true;
        drop(targets);
        let made_dead = self.dead.send_if_modified(|d| d.insert(peer));
        self.forget_draining(peer);
        made_dead
    }

    /// `peer` answered again on connection `conn`: if that connection's
    /// silence alone made it dead, and its probes still count it alive,
    /// alive again at once. A round trip that grows at once past the
    /// silence rule (a route change, a queue filling up: 0.1 ms to 200 ms)
    /// is a silence of one round trip, not a death; waiting for a probe's
    /// answer left a stream with no other way to the peer silent for
    /// 0.6-0.8 s (`tests/mid_path.rs`). True if that made it alive.
    pub fn answered_again(&self, peer: EdgeId, conn: usize) -> bool {
        let mut targets = lock(&self.targets);
        let Some(t) = targets.get_mut(&peer) else {
            return false;
        };
        if t.link_lost != Some(LinkLoss::Silent(conn)) {
            return false;
        }
        t.link_lost = None;
        let alive = is_alive(t, Instant::now());
        drop(targets);
        alive && self.dead.send_if_modified(|d| d.remove(&peer))
    }

    /// The round trip and jitter this edge measured to `peer`, if it has.
    pub fn rtt_jitter(&self, peer: EdgeId) -> Option<(Duration, Duration)> {
        let targets = lock(&self.targets);
        let s = targets.get(&peer)?.stats.summary()?;
        Some((
            Duration::from_secs_f64(s.rtt_ms / 1e3),
            Duration::from_secs_f64(s.jitter_ms / 1e3),
        ))
    }

    /// The loss of this edge's probes to `peer` (round trip); 0 when not
    /// measured.
    pub fn loss(&self, peer: EdgeId) -> f64 {
        let targets = lock(&self.targets);
        targets.get(&peer).map_or(0.0, |t| t.stats.loss())
    }

    /// Links to every current target that has been measured.
    pub fn links(&self) -> Vec<PeerLink> {
        let now = Instant::now();
        let targets = lock(&self.targets);
        let mut out: Vec<PeerLink> = targets
            .iter()
            .filter_map(|(&peer, t)| {
                Some(PeerLink {
                    peer,
                    summary: t.stats.summary()?,
                    alive: is_alive(t, now),
                })
            })
            .collect();
        out.sort_by_key(|l| l.peer);
        out
    }

    /// One probing round: probe every `fast` target and, every
    /// [`SLOW_PROBE_ROUNDS`] rounds (staggered by peer), every `slow` one,
    /// through `send` (false: there is no connection to send it on yet, and
    /// the probe is not counted, so a link being dialled does not read as
    /// lossy); expire old probes; update the dead set.
    fn round(
        &self,
        fast: &BTreeSet<EdgeId>,
        slow: &BTreeSet<EdgeId>,
        mut send: impl FnMut(EdgeId, Probe) -> bool,
    ) {
        let now = Instant::now();
        let sent_at_us = self.now_us();
        let round = self.rounds.fetch_add(1, Ordering::Relaxed);
        let mut map = lock(&self.targets);
        map.retain(|peer, _| fast.contains(peer) || slow.contains(peer));
        let mut dead = BTreeSet::new();
        let mut measuring = map
            .iter()
            .filter(|(p, t)| t.measuring && !fast.contains(p))
            .count();
        let tiers = fast.iter().map(|p| (*p, 1)).chain(
            slow.iter()
                .filter(|p| !fast.contains(p))
                .map(|p| (*p, SLOW_PROBE_ROUNDS)),
        );
        for (peer, tier) in tiers {
            let t = map.entry(peer).or_insert_with(|| Target {
                stats: LinkStats::default(),
                probing_since: now,
                measuring: false,
                interval: PROBE_INTERVAL,
                interval_since: now,
                first_sent: None,
                acked_at: None,
                acks_seen: None,
                link_lost: None,
                // Not heard from yet: its first probes may go to a
                // connection being dialled, or to a process gone.
                outage: true,
            });
            if tier > 1
                && (t.stats.samples() == 0
                    || (round + peer as u64).is_multiple_of(SLOW_PROBE_ROUNDS))
            {
                let wants =
                    t.stats.wants_samples() && (t.measuring || measuring < MEASURED_AT_ONCE);
                if wants != t.measuring {
                    t.measuring = wants;
                    if wants {
                        measuring += 1;
                    } else {
                        measuring -= 1;
                    }
                }
            }
            let every = if t.measuring { 1 } else { tier };
            let interval = PROBE_INTERVAL * every as u32;
            if t.interval != interval {
                t.interval = interval;
                t.interval_since = now;
            }
            t.stats.expire_pending(now, PROBE_TIMEOUT);
            if round % every == self.phase(round / every, peer, every) {
                let seq = self.seq.fetch_add(1, Ordering::Relaxed);
                let probe = Probe {
                    reply: false,
                    seq,
                    sent_at_us,
                };
                if send(peer, probe) {
                    t.stats.on_probe_sent(seq, now);
                    t.first_sent.get_or_insert(now);
                }
            }
            let silent = t.link_lost.is_some()
                || match (t.stats.last_heard(), t.first_sent) {
                    (Some(_), _) => !is_alive(t, now),
                    (None, Some(first)) => {
                        now.duration_since(first) > FIRST_ANSWER_GRACE + t.interval
                    }
                    (None, None) => now.duration_since(t.probing_since) > DIAL_GRACE,
                };
            if silent {
                if !self.dead.borrow().contains(&peer) {
                    debug!(
                        peer,
                        never_answered = t.stats.last_heard().is_none(),
                        link_lost = ?t.link_lost,
                        "probes: peer dead"
                    );
                }
                dead.insert(peer);
                t.outage = true;
            }
        }
        drop(map);
        replace_set(&self.dead, dead);
    }
}

/// What one relay connection's counters said at the last look: see
/// [`TRANSPORT_CHECK_EVERY`]. Pure: the edge feeds it the counters.
#[derive(Debug, Default)]
pub struct TransportSilence {
    /// The connection looked at (its `stable_id`): a new one starts over.
    conn: usize,
    udp_rx: u64,
    sent: u64,
    /// The first look that saw this edge send with nothing received since.
    unanswered_since: Option<Instant>,
    /// Sends counted before that look: those after it are unanswered.
    sent_before_silence: u64,
    last_look: Option<Instant>,
}

impl TransportSilence {
    /// Whether the peer sent anything on the same connection since the last
    /// look.
    pub fn answered(&self, c: &TransportCounts) -> bool {
        c.conn == self.conn && c.udp_rx != self.udp_rx
    }

    /// Look at a connection's counters `c` at `now` (UDP datagrams
    /// received, ack-eliciting frames sent: media, probes and messages; its
    /// RTT), on a link whose probes lose `loss()` (round trip; read only
    /// when the silence is long enough to matter). How long the
    /// peer has been silent after a send, judged. Dead takes
    /// [`TRANSPORT_SILENCE_RTTS`] round trips and, on a lossy link, enough
    /// unanswered sends ([`unanswered_for_dead`]): a link carrying a
    /// message now and then waits for QUIC's loss recovery (a probe timeout,
    /// a few round trips) after a lost packet or acknowledgement, and at 10%
    /// loss each way one send in five goes unanswered that long.
    pub fn look(
        &mut self,
        now: Instant,
        c: &TransportCounts,
        loss: impl FnOnce() -> f64,
    ) -> Silence {
        // Looks far apart: this edge was starved. Start over.
        let starved = self
            .last_look
            .is_some_and(|l| now.saturating_duration_since(l) > TRANSPORT_STARVED_AFTER);
        if c.conn != self.conn || self.answered(c) || starved {
            *self = TransportSilence {
                conn: c.conn,
                udp_rx: c.udp_rx,
                sent: c.sent,
                unanswered_since: None,
                sent_before_silence: c.sent,
                last_look: Some(now),
            };
            return Silence::None;
        }
        self.last_look = Some(now);
        if c.sent > self.sent {
            if self.unanswered_since.is_none() {
                self.unanswered_since = Some(now);
                self.sent_before_silence = self.sent;
            }
            self.sent = c.sent;
        }
        let Some(since) = self.unanswered_since else {
            return Silence::None;
        };
        let silent = now.saturating_duration_since(since);
        let (suspect, dead) = silence_waits(c.rtt);
        let unanswered = self.sent - self.sent_before_silence;
        if silent >= dead && unanswered >= u64::from(unanswered_for_dead(loss())) {
            Silence::Dead
        } else if silent >= suspect {
            Silence::Suspect
        } else {
            Silence::None
        }
    }
}

fn dead_after(t: &Target) -> Duration {
    let intervals = unanswered_for_dead(t.stats.loss()).max(DEAD_AFTER_INTERVALS);
    t.interval * intervals + t.stats.rtt().unwrap_or_default()
}

/// The longest a peer that acknowledges what this edge sends may leave its
/// probes unanswered: as many intervals as the lossiest link is allowed
/// ([`MAX_DEAD_AFTER_INTERVALS`]), plus its RTT.
fn ack_ceiling(t: &Target) -> Duration {
    t.interval * MAX_DEAD_AFTER_INTERVALS + t.stats.rtt().unwrap_or_default()
}

/// Heard from within [`dead_after`], counting from the last change of its
/// probe rate at the earliest: a probe answered, or its relay connection
/// acknowledged while a probe was answered within [`ack_ceiling`].
fn is_alive(t: &Target, now: Instant) -> bool {
    let after = dead_after(t);
    let acked = t
        .acked_at
        .is_some_and(|at| now.saturating_duration_since(at) <= after);
    t.stats.is_alive(now, after)
        || (acked && t.stats.is_alive(now, ack_ceiling(t)))
        || now.saturating_duration_since(t.interval_since) <= after
}

/// Probe the current table's targets, and watch the relay connections of
/// those carrying traffic, until the edge stops.
pub async fn run(core: Arc<EdgeCore>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut transport_tick = tokio::time::interval(TRANSPORT_CHECK_EVERY);
    transport_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut silences: HashMap<EdgeId, TransportSilence> = HashMap::new();
    // Peers made dead between rounds (`Prober::link_lost`, here or by a
    // relay link closed by its peer) are handled at once.
    let mut dead_rx = core.prober.dead();
    let mut was_dead = BTreeSet::new();
    let mut was_probed = BTreeSet::new();
    let mut round = 0u64;
    loop {
        // The peers probed, when this step was a probing round.
        let mut probed = None;
        tokio::select! {
            _ = tick.tick() => {
                round += 1;
                probed = Some(probing_round(&core, round, &mut was_probed));
            }
            _ = transport_tick.tick() => check_relay_connections(&core, &mut silences),
            Ok(()) = dead_rx.changed() => {}
        }
        dead_rx.mark_unchanged();
        let dead = core.prober.dead.borrow().clone();
        for peer in dead.difference(&was_dead) {
            if probed.is_some() {
                warn!(edge = core.id, peer, "link down: probes unanswered");
            }
            let resent = crate::relay::resend_around(&core, *peer, crate::relay::RESEND_WINDOW);
            if resent > 0 {
                info!(
                    edge = core.id,
                    peer,
                    messages = resent,
                    "peer dead: resent the messages it was handed lately around it"
                );
            }
        }
        // Peers come back when a probe is answered (`Prober::on_reply`) or
        // in a probing round; not when they left the probed set.
        for peer in was_dead.difference(&dead) {
            if core.prober.is_target(*peer) {
                info!(edge = core.id, peer, "link up: probes answered again");
            }
        }
        was_dead = dead;
    }
}

/// Send `probe` on the relay link to `peer`, counted; false if the link has
/// no connection to send it on.
pub fn send_probe(core: &EdgeCore, peer: EdgeId, probe: Probe) -> bool {
    let sent = core.relay.send_probe(peer, probe.encode());
    if sent {
        core.metrics.probe_sent(peer);
    }
    sent
}

/// One probing round (number `round`) and the link metrics it refreshes;
/// the peers it probed.
fn probing_round(
    core: &EdgeCore,
    round: u64,
    was_probed: &mut BTreeSet<EdgeId>,
) -> BTreeSet<EdgeId> {
    let table = core.route_table();
    let mut fast: BTreeSet<EdgeId> = core
        .relay
        .relayed_to_within(RECENT_TRAFFIC)
        .into_iter()
        .collect();
    fast.remove(&core.id);
    let mut slow: BTreeSet<EdgeId> = table.probe.iter().copied().collect();
    slow.remove(&core.id);
    let now = Instant::now();
    for (peer, conn, acks) in core.relay.ack_counts() {
        core.prober.note_acks(peer, conn, acks, now);
    }
    core.prober
        .round(&fast, &slow, |peer, probe| send_probe(core, peer, probe));
    let dead = core.prober.dead.borrow().clone();
    core.metrics.dead_peers.set(dead.len() as f64);
    // Link metrics and up/down events, as the prober sees them.
    let probed: BTreeSet<EdgeId> = fast.union(&slow).copied().collect();
    if round.is_multiple_of(METRICS_ROUNDS) {
        let links = core.prober.links();
        for l in &links {
            let s = &l.summary;
            core.metrics.link(
                l.peer,
                Duration::from_secs_f64(s.rtt_ms / 1e3),
                Duration::from_secs_f64(s.jitter_ms / 1e3),
                s.loss,
                !dead.contains(&l.peer),
            );
        }
        let unmeasured = dead.iter().filter(|p| !links.iter().any(|l| l.peer == **p));
        for peer in was_probed.difference(&probed).chain(unmeasured) {
            core.metrics.link_down(*peer);
        }
        *was_probed = probed.clone();
        // Series about peers that left the mesh for good go.
        let gone = core
            .metrics
            .forget_departed(|p| table.peers.contains_key(&p), Instant::now());
        if !gone.is_empty() {
            info!(edge = core.id, peers = ?gone, "peers out of the route table for {} s: their series removed", crate::metrics::FORGET_PEER_AFTER.as_secs());
        }
    }
    probed
}

/// `peer` just became suspect. Frames queued to it from now on also go
/// around it (`EdgeCore::send_along`); those it was handed since it went
/// silent are sent around it now: the messages written to it within
/// [`suspect_resend_window`] (and the directory frames: answers to a
/// rejoined member's greeting among them), and a greeting to an edge a rejoined client
/// named (protocol §9.6, "Hints"), sent again to every such edge not heard
/// from yet (one queued to the dead hop is lost, and the rejoined member's
/// media then waits for the channel's homes to tell the publisher's edge,
/// or for the next directory refresh). Wrong suspicions cost duplicates,
/// which receivers drop.
fn newly_suspect(core: &EdgeCore, peer: EdgeId, rtt: Duration) {
    let resent = crate::relay::resend_around(core, peer, suspect_resend_window(rtt));
    let greeted = core.greet_unheard_hinted();
    debug!(
        edge = core.id,
        peer,
        messages = resent,
        greeted,
        "next hop suspect: resent around it what it was handed since it went silent"
    );
}

/// How far back the messages written to a peer that went suspect at `rtt`
/// may be unacknowledged: since its silence began (the suspect wait), plus
/// a round trip and the ACK delay before that (an answer arriving at the
/// start of the silence acknowledged only what was written a round trip
/// earlier), plus the two looks that bound when the silence began.
pub fn suspect_resend_window(rtt: Duration) -> Duration {
    silence_waits(rtt).0 + rtt + ACK_DELAY + TRANSPORT_CHECK_EVERY * 2
}

/// Look at the relay connections this edge sent on lately
/// ([`TransportSilence`]): a silent one makes its peer dead, one silent a
/// little over a round trip suspect.
fn check_relay_connections(core: &EdgeCore, silences: &mut HashMap<EdgeId, TransportSilence>) {
    let now = Instant::now();
    let counts = core.relay.transport_counts(RECENT_TRAFFIC);
    let looked: HashSet<EdgeId> = counts.iter().map(|c| c.peer).collect();
    silences.retain(|peer, _| looked.contains(peer));
    let mut suspect = BTreeSet::new();
    let mut newly = vec![];
    for c in counts {
        let silence = silences.entry(c.peer).or_default();
        if silence.answered(&c) {
            core.prober.heard_from(c.peer);
            if core.prober.answered_again(c.peer, c.conn) {
                info!(
                    edge = core.id,
                    peer = c.peer,
                    "link up: relay connection answered again"
                );
            }
        }
        match silence.look(now, &c, || core.prober.loss(c.peer)) {
            Silence::None => {}
            Silence::Suspect => {
                if !core.prober.is_dead(c.peer) {
                    suspect.insert(c.peer);
                    if !core.prober.is_silent(c.peer) {
                        newly.push((c.peer, c.rtt));
                    }
                }
            }
            Silence::Dead => {
                if core.prober.link_lost(c.peer, LinkLoss::Silent(c.conn)) {
                    warn!(
                        edge = core.id,
                        peer = c.peer,
                        "link down: relay connection silent"
                    );
                }
            }
        }
    }
    core.prober.set_suspect(suspect);
    // Suspect first: what is resent then goes around them.
    for (peer, rtt) in newly {
        newly_suspect(core, peer, rtt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[EdgeId]) -> BTreeSet<EdgeId> {
        ids.iter().copied().collect()
    }

    fn counts(conn: usize, udp_rx: u64, sent: u64, rtt: Duration) -> TransportCounts {
        TransportCounts {
            peer: 2,
            conn,
            udp_rx,
            sent,
            rtt,
        }
    }

    #[test]
    fn silent_targets_become_dead_and_answers_revive_them() {
        let p = Prober::default();
        let none = BTreeSet::new();
        let mut probes = vec![];
        p.round(&set(&[2, 3]), &none, |peer, probe| {
            probes.push((peer, probe));
            true
        });
        assert_eq!(probes.len(), 2);
        // 2 answers; 3 never does.
        p.on_reply(2, probes[0].1);
        assert!(p.dead.borrow().is_empty(), "not dead within the grace");
        {
            let mut m = p.targets.lock().unwrap();
            let t = m.get_mut(&3).unwrap();
            let first = t.first_sent.as_mut().expect("probed");
            *first -= FIRST_ANSWER_GRACE + PROBE_INTERVAL + Duration::from_millis(1);
        }
        p.round(&set(&[2, 3]), &none, |_, _| true);
        assert_eq!(*p.dead.borrow(), BTreeSet::from([3]));
        assert!(p.is_dead(3) && !p.is_dead(2));
        let links = p.links();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].peer, 2);
        assert!(links[0].alive);
        // Targets no longer wanted are forgotten.
        p.round(&set(&[2]), &none, |_, _| true);
        assert!(p.dead.borrow().is_empty());
    }

    #[test]
    fn a_peer_acknowledging_its_relay_connection_stays_alive_while_a_few_probes_go_unanswered() {
        let p = Prober::default();
        let mut probes = vec![];
        p.round(&set(&[2]), &BTreeSet::new(), |_, probe| {
            probes.push(probe);
            true
        });
        p.on_reply(2, probes[0]);
        let now = Instant::now();
        let (after, ceiling) = {
            let t = &lock(&p.targets)[&2];
            (dead_after(t), ack_ceiling(t))
        };
        assert!(ceiling > after + Duration::from_millis(100));
        let alive_at = |at: Instant| is_alive(&lock(&p.targets)[&2], at);
        let later = now + after + Duration::from_millis(50);
        assert!(!alive_at(later), "probes unanswered past their limit: dead");
        p.note_acks(2, 7, 10, later - Duration::from_millis(100));
        assert!(!alive_at(later), "a first count says nothing");
        p.note_acks(2, 7, 12, later - Duration::from_millis(50));
        assert!(alive_at(later), "acknowledged since: alive");
        // A new connection's count is only a baseline.
        p.note_acks(2, 8, 13, later + after);
        assert!(!alive_at(later + after + Duration::from_millis(60)));
        // However fresh the acknowledgements, probes unanswered past the
        // ceiling are a hung peer.
        let much_later = now + ceiling + Duration::from_millis(50);
        p.note_acks(2, 8, 20, much_later - Duration::from_millis(10));
        assert!(!alive_at(much_later));
        // An unknown peer's count is ignored.
        p.note_acks(3, 7, 1, later);
        assert!(lock(&p.targets).get(&3).is_none());
    }

    #[test]
    fn a_peer_whose_relay_link_is_still_coming_up_gets_the_dial_grace() {
        let p = Prober::default();
        let none = BTreeSet::new();
        // No link yet: nothing can be sent.
        p.round(&set(&[2]), &none, |_, _| false);
        let back = |by: Duration| {
            let mut m = lock(&p.targets);
            m.get_mut(&2).unwrap().probing_since -= by;
        };
        back(FIRST_ANSWER_GRACE + PROBE_INTERVAL + Duration::from_millis(1));
        p.round(&set(&[2]), &none, |_, _| false);
        assert!(!p.is_dead(2), "a slow handshake is not a dead peer");
        back(DIAL_GRACE);
        p.round(&set(&[2]), &none, |_, _| false);
        assert!(p.is_dead(2), "no link within the dial grace: dead");
    }

    #[test]
    fn a_hop_a_client_found_unreachable_is_suspect_until_heard_from_or_its_time_is_up() {
        let p = Prober::default();
        let now = Instant::now();
        p.hint_unreachable(2, now);
        assert!(p.is_suspect(2) && !p.is_silent(2));
        // The relay connections' looks keep it...
        p.set_suspect(set(&[5]));
        assert!(p.is_suspect(2) && p.is_suspect(5));
        p.set_suspect(BTreeSet::new());
        assert!(p.is_suspect(2) && !p.is_suspect(5));
        // ...until it answers.
        p.heard_from(2);
        assert!(!p.is_suspect(2) && !p.has_suspects());
        // A hint ends on its own, at the next look after its time.
        p.hint_unreachable(3, now - UNREACHABLE_HINT_TTL - Duration::from_millis(1));
        p.set_suspect(BTreeSet::new());
        assert!(!p.is_suspect(3));
        // A peer seen dead is routed around as dead already.
        p.dead.send_modify(|d| {
            d.insert(4);
        });
        p.hint_unreachable(4, now);
        assert!(!p.is_suspect(4));
    }

    #[test]
    fn a_draining_peer_is_draining_until_its_link_goes_or_its_time_is_up() {
        let p = Prober::default();
        let now = Instant::now();
        p.round(&set(&[2]), &BTreeSet::new(), |_, _| true);
        assert!(!p.is_draining(2));
        p.peer_draining(2, Duration::from_secs(5), now);
        assert!(p.is_draining(2) && !p.is_suspect(2));
        // It answers until it closes: still draining.
        p.heard_from(2);
        p.set_suspect(BTreeSet::new());
        assert!(p.is_draining(2));
        // Its close makes it dead; its word is spent (not draining when back).
        assert!(p.link_lost(2, LinkLoss::GoingAway));
        assert!(!p.is_draining(2) && !p.any_draining.load(Ordering::Relaxed));
        // A restart (or its time running out) ends it too; the time is
        // bounded whatever the peer said.
        p.peer_draining(3, Duration::from_secs(5), now);
        p.forget_draining(3);
        assert!(!p.is_draining(3));
        p.peer_draining(4, Duration::from_secs(3_600), now - DRAINING_PEER_TTL);
        assert!(!p.is_draining(4));
        p.set_suspect(BTreeSet::new());
        assert!(
            !p.any_draining.load(Ordering::Relaxed),
            "forgotten at the next look"
        );
    }

    #[test]
    fn lossy_links_take_more_unanswered_sends_to_be_dead() {
        assert_eq!(unanswered_for_dead(0.0), 1);
        assert_eq!(unanswered_for_dead(f64::NAN), 1);
        assert_eq!(unanswered_for_dead(0.01), 3);
        assert_eq!(unanswered_for_dead(0.02), 4);
        // 10% each way.
        assert_eq!(unanswered_for_dead(1.0 - 0.9 * 0.9), 9);
        assert_eq!(unanswered_for_dead(0.6), MAX_DEAD_AFTER_INTERVALS);
        assert_eq!(unanswered_for_dead(1.0), MAX_DEAD_AFTER_INTERVALS);
        for loss in [0.001, 0.01, 0.05, 0.19, 0.3] {
            let n = unanswered_for_dead(loss);
            assert!(
                loss.powi(n as i32) <= FALSE_DEAD_CHANCE * (1.0 + 1e-9)
                    || n == MAX_DEAD_AFTER_INTERVALS
            );
            assert!(n == 1 || loss.powi(n as i32 - 1) > FALSE_DEAD_CHANCE);
        }

        // A link carrying a message now and then at 10% loss each way: one
        // send, its answer lost, QUIC's probe timeout pending. Silent for
        // long, but one send: suspect, not dead.
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let rtt = ms(40);
        let lossy = 0.19;
        let mut s = TransportSilence::default();
        s.look(t0, &counts(7, 10, 10, rtt), || lossy);
        let mut at = t0;
        let mut sent = 11;
        // Looks every 20 ms for 400 ms after the one send.
        for _ in 0..20 {
            at += TRANSPORT_CHECK_EVERY;
            let verdict = s.look(at, &counts(7, 10, sent, rtt), || lossy);
            assert_ne!(verdict, Silence::Dead);
        }
        assert_eq!(
            s.look(at, &counts(7, 10, sent, rtt), || lossy),
            Silence::Suspect
        );
        // Sends go on (probes, media) and none is answered: dead at the
        // ninth.
        while sent < 18 {
            sent += 1;
            at += TRANSPORT_CHECK_EVERY;
            assert_eq!(
                s.look(at, &counts(7, 10, sent, rtt), || lossy),
                Silence::Suspect
            );
        }
        at += TRANSPORT_CHECK_EVERY;
        assert_eq!(s.look(at, &counts(7, 10, 19, rtt), || lossy), Silence::Dead);
        // The same on a clean link: dead after the silence alone.
        let mut clean = TransportSilence::default();
        clean.look(t0, &counts(7, 10, 10, rtt), || 0.0);
        let verdicts: Vec<Silence> = (1..=10)
            .map(|i| {
                clean.look(
                    t0 + TRANSPORT_CHECK_EVERY * i,
                    &counts(7, 10, 11, rtt),
                    || 0.0,
                )
            })
            .collect();
        assert_eq!(verdicts.last(), Some(&Silence::Dead), "{verdicts:?}");
    }

    #[test]
    fn a_relay_connection_silent_after_a_send_kills_its_peer_until_a_probe_is_answered() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let rtt = ms(10);
        let mut s = TransportSilence::default();
        let (none, suspect, dead) = (Silence::None, Silence::Suspect, Silence::Dead);
        assert_eq!(s.look(t0, &counts(7, 100, 50, rtt), || 0.0), none);
        // Sending, and hearing ACKs: alive.
        for i in 1..10u64 {
            let at = t0 + TRANSPORT_CHECK_EVERY * i as u32;
            assert_eq!(s.look(at, &counts(7, 100 + i, 50 + i, rtt), || 0.0), none);
        }
        // The peer goes silent while this edge sends: suspect after the
        // 60 ms floor (a round trip and a quarter plus the ACK delay is
        // 38 ms), dead once the 150 ms floor (4 RTTs is 40 ms) has passed
        // since the first unanswered send was seen.
        let quiet = t0 + TRANSPORT_CHECK_EVERY * 10;
        assert_eq!(s.look(quiet, &counts(7, 109, 60, rtt), || 0.0), none);
        assert_eq!(
            s.look(quiet + ms(50), &counts(7, 109, 61, rtt), || 0.0),
            none
        );
        assert_eq!(
            s.look(quiet + ms(100), &counts(7, 109, 63, rtt), || 0.0),
            suspect
        );
        assert_eq!(
            s.look(quiet + ms(150), &counts(7, 109, 64, rtt), || 0.0),
            dead
        );
        // An answer clears it.
        assert_eq!(
            s.look(quiet + ms(200), &counts(7, 110, 65, rtt), || 0.0),
            none
        );
        // Far peers: suspect after 150 ms (100 + 25 + 25), dead after four
        // round trips.
        let mut far = TransportSilence::default();
        far.look(t0, &counts(7, 1, 1, ms(100)), || 0.0);
        far.look(t0 + ms(50), &counts(7, 1, 2, ms(100)), || 0.0);
        for after in (50..=450).step_by(50) {
            let verdict = match after {
                ..150 => none,
                150..400 => suspect,
                _ => dead,
            };
            let at = t0 + ms(50 + after);
            assert_eq!(
                far.look(at, &counts(7, 1, 3, ms(100)), || 0.0),
                verdict,
                "{after} ms"
            );
        }
        // Not sending: silence means nothing (an idle link).
        let mut idle = TransportSilence::default();
        for i in 0..20u32 {
            assert_eq!(
                idle.look(
                    t0 + TRANSPORT_CHECK_EVERY * i,
                    &counts(7, 5, 9, rtt),
                    || 0.0
                ),
                none
            );
        }
        // A new connection starts over, and so does a starved look.
        assert_eq!(
            s.look(quiet + ms(300), &counts(8, 110, 65, rtt), || 0.0),
            none
        );
        let mut starved = TransportSilence::default();
        starved.look(t0, &counts(7, 1, 1, rtt), || 0.0);
        starved.look(t0 + ms(50), &counts(7, 1, 2, rtt), || 0.0);
        assert_eq!(
            starved.look(t0 + ms(400), &counts(7, 1, 3, rtt), || 0.0),
            none
        );
        // A look late by tens of milliseconds (a loaded machine delays the
        // ticks) is not starvation: the silence goes on counting.
        let mut late = TransportSilence::default();
        late.look(t0, &counts(7, 1, 1, rtt), || 0.0);
        late.look(t0 + TRANSPORT_CHECK_EVERY, &counts(7, 1, 2, rtt), || 0.0);
        assert_eq!(
            late.look(t0 + ms(140), &counts(7, 1, 3, rtt), || 0.0),
            suspect
        );

        // The prober: dead at once, alive again at a probe's answer.
        let p = Prober::default();
        let mut probes = vec![];
        p.round(&set(&[2]), &BTreeSet::new(), |peer, probe| {
            probes.push((peer, probe));
            true
        });
        let going = LinkLoss::GoingAway;
        assert!(!p.link_lost(9, going), "not a target");
        assert!(p.link_lost(2, going) && p.is_dead(2));
        assert!(!p.link_lost(2, going), "already dead");
        p.round(&set(&[2]), &BTreeSet::new(), |_, _| true);
        assert!(p.is_dead(2), "stays dead through probing rounds");
        assert!(!p.answered_again(2, 7), "a peer going away is not silent");
        p.on_reply(2, probes[0].1);
        p.round(&set(&[2]), &BTreeSet::new(), |_, _| true);
        assert!(!p.is_dead(2));
        // Silent: alive again when the same connection answers (its probes
        // answered lately), not when another one does.
        assert!(p.link_lost(2, LinkLoss::Silent(7)) && p.is_dead(2));
        assert!(!p.answered_again(2, 8), "another connection");
        assert!(p.is_dead(2));
        assert!(p.answered_again(2, 7));
        assert!(!p.is_dead(2));
        p.round(&set(&[2]), &BTreeSet::new(), |_, _| true);
        assert!(!p.is_dead(2), "and through the next round");
        // A peer its probes count dead stays dead, whatever its connection
        // says.
        let q = Prober::default();
        q.round(&set(&[3]), &BTreeSet::new(), |_, _| true);
        lock(&q.targets).get_mut(&3).unwrap().interval_since -= Duration::from_secs(5);
        assert!(q.link_lost(3, LinkLoss::Silent(1)));
        assert!(!q.answered_again(3, 1));
        assert!(q.is_dead(3));
        // Suspects, as the connection check sets them.
        assert!(!p.is_suspect(2));
        p.set_suspect(set(&[2]));
        assert!(p.is_suspect(2) && !p.is_suspect(3));
        p.set_suspect(BTreeSet::new());
        assert!(!p.is_suspect(2));
    }

    #[test]
    fn new_and_lossy_slow_targets_are_measured_at_the_fast_rate() {
        let p = Prober::default();
        let (none, slow) = (BTreeSet::new(), set(&[2, 3]));
        let mut sent: HashMap<EdgeId, usize> = HashMap::new();
        // New: probed every round until a few replies came.
        for _ in 0..SLOW_PROBE_ROUNDS {
            p.round(&none, &slow, |peer, _| {
                *sent.entry(peer).or_default() += 1;
                true
            });
        }
        assert_eq!(sent[&2], SLOW_PROBE_ROUNDS as usize);
        // Clean replies to 2; 3 loses a probe now and then.
        {
            let mut targets = p.targets.lock().unwrap();
            for (peer, t) in targets.iter_mut() {
                for seq in 2000..2010 {
                    t.stats.on_probe_sent(seq, Instant::now());
                    if *peer == 3 && seq == 2004 {
                        t.stats.on_timeout(seq);
                    } else {
                        t.stats.on_reply(seq, Duration::from_millis(10));
                    }
                }
            }
        }
        sent.clear();
        for _ in 0..SLOW_PROBE_ROUNDS * 2 {
            p.round(&none, &slow, |peer, _| {
                *sent.entry(peer).or_default() += 1;
                true
            });
        }
        // 2 drops to the slow rate at its next slow round.
        assert!(sent[&2] <= 12, "measured: back to the slow rate ({sent:?})");
        assert_eq!(sent[&3], 20, "a lost probe: measured at the fast rate");
    }

    #[test]
    fn slow_probes_fall_in_every_round_of_the_cycle_alike() {
        let p = Prober::default();
        let every = SLOW_PROBE_ROUNDS;
        for peer in [1, 2, 60] {
            let mut per_round = vec![0u32; every as usize];
            for cycle in 0..2_000 {
                per_round[p.phase(cycle, peer, every) as usize] += 1;
            }
            // 200 expected in each; a fixed moment would put all 2,000 in one.
            assert!(
                per_round.iter().all(|n| (140..=260).contains(n)),
                "{peer}: {per_round:?}"
            );
        }
        assert_eq!(p.phase(7, 3, 1), 0, "fast targets: every round");
    }

    #[test]
    fn slow_targets_are_probed_once_in_ten_rounds_and_die_slower() {
        let p = Prober::default();
        let (fast, slow) = (set(&[2]), set(&[2, 3, 4, 5, 6, 7]));
        // Measured well enough already (replies to a few probes).
        p.round(&slow, &BTreeSet::new(), |_, _| false);
        for t in p.targets.lock().unwrap().values_mut() {
            for seq in 1000..1005 {
                t.stats.on_probe_sent(seq, Instant::now());
                t.stats.on_reply(seq, Duration::from_millis(10));
            }
            t.measuring = false;
        }
        // The rest of the first cycle (its draw may have fallen in round 0).
        for _ in 1..SLOW_PROBE_ROUNDS {
            p.round(&fast, &slow, |_, _| true);
        }
        let mut sent: HashMap<EdgeId, usize> = HashMap::new();
        for _ in 0..SLOW_PROBE_ROUNDS * 4 {
            p.round(&fast, &slow, |peer, _| {
                *sent.entry(peer).or_default() += 1;
                // Edge 7's link is not up yet: its probes do not count.
                peer != 7
            });
        }
        assert_eq!(p.targets.lock().unwrap()[&7].stats.loss(), 0.0);
        assert_eq!(
            sent[&2],
            4 * SLOW_PROBE_ROUNDS as usize,
            "fast: every round"
        );
        for peer in 3..=7 {
            assert_eq!(
                sent[&peer], 4,
                "slow: once in {SLOW_PROBE_ROUNDS} rounds ({peer})"
            );
        }
        // A slow target is given its interval before it is dead.
        let mut targets = p.targets.lock().unwrap();
        let t = targets.get_mut(&3).unwrap();
        assert_eq!(
            dead_after(t),
            PROBE_INTERVAL * SLOW_PROBE_ROUNDS as u32 * DEAD_AFTER_INTERVALS
                + t.stats.rtt().unwrap()
        );
        // Heard from 0.8 s ago at the slow rate, then promoted: alive until
        // the fast rate's own deadline has passed since the promotion.
        let now = Instant::now();
        t.stats.on_probe_sent(999, now - Duration::from_millis(900));
        t.stats.on_reply(999, Duration::from_millis(100));
        t.interval = PROBE_INTERVAL;
        t.interval_since = now;
        assert!(is_alive(t, now + Duration::from_millis(500)));
        let heard = t.stats.last_heard().unwrap().max(now);
        assert!(!is_alive(
            t,
            heard + dead_after(t) + Duration::from_millis(1)
        ));
        // A link losing a fifth of its probes takes nine missed intervals.
        let t = targets.get_mut(&4).unwrap();
        t.interval = PROBE_INTERVAL;
        for seq in 2000..2100 {
            t.stats.on_probe_sent(seq, now);
            if seq % 5 == 0 {
                t.stats.on_timeout(seq);
            } else {
                t.stats.on_reply(seq, Duration::from_millis(10));
            }
        }
        assert!((t.stats.loss() - 0.2).abs() < 0.01, "{}", t.stats.loss());
        assert_eq!(dead_after(t), PROBE_INTERVAL * 9 + t.stats.rtt().unwrap());
    }
}
