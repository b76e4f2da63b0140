//! WAN emulation in user space: a quinn socket that delays, jitters and drops
//! what it sends, as if the host sat in a city far from the others.
//!
//! Lab and test code: the lab (`loadtest`) and the tests use it through
//! `testkit`; an edge takes it only when built with its non-default `netem`
//! feature (the terraform local example emulates a WAN between edges on one
//! host).
//!
//! Kernel netem is not available where the lab and the tests run, so the
//! emulation wraps the socket quinn writes to ([`quinn::AsyncUdpSocket`]).
//! Hosts are told apart by IP address: in the lab every loopback address
//! `127.x.y.z` stands for one host in one city. A shared [`Wan`] holds the
//! one-way [`LinkProfile`] of every (sender, receiver) pair; each wrapped
//! socket applies the profile of its own address to the destination of each
//! datagram on the way **out**, so a link's delay is paid once per crossing
//! whichever process sits at either end. A datagram for another socket of
//! the same [`Wan`] (the lab: every edge and client in one process) is then
//! handed to it in memory rather than through the kernel; one for anybody
//! else leaves through the real socket.
//!
//! Behaviour, chosen to look like a WAN path and not like a broken one:
//! - delay: `delay + uniform(-jitter, +jitter)`, never below zero;
//! - no reordering by default: a datagram never leaves before the one sent
//!   before it to the same destination (backbone paths reorder rarely, and
//!   reordering makes jitter look like loss to QUIC); with `reorder` each
//!   datagram's delay is its own, so jitter wider than the gap between two
//!   datagrams reorders them, as mobile and Wi-Fi paths do;
//! - loss: independent per datagram with probability `loss`; or, with
//!   `burst_len`, in bursts ([`GilbertElliott`], a chain per sender socket
//!   and destination), as fading radio and contended Wi-Fi lose runs of
//!   datagrams: the same average loss hurts a stream far more when it comes
//!   in runs (whole frames, consecutive audio packets) than spread out;
//! - `rate_kbps`: a narrow link; datagrams leave one after another at
//!   that rate, and one that would queue over [`RATE_QUEUE_LIMIT`] is
//!   dropped (a router's buffer);
//! - `down`: every datagram dropped (a partition, or a host that died);
//! - bounded: at most [`MAX_QUEUED_BYTES`] wait per socket; past that new
//!   datagrams are dropped, as a router's full queue would;
//! - a pair with a zero profile and nothing queued goes straight to the
//!   socket (no copy, no timer).
//!
//! Delayed datagrams leave from one thread per [`Wan`] that sleeps on a
//! condition variable until the next departure: they leave within tens of
//! microseconds of their time (tokio's millisecond timer ticks would add up
//! to 1 ms per crossing, which probes would read as jitter). How late they
//! actually leave is counted ([`Wan::lateness`]): on a machine that cannot
//! keep up the thread runs late, and every delay the emulation promises
//! grows by that much.

use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use ipnet::IpNet;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Datagrams waiting in one socket's delay line, in bytes, at most. A
/// 100 Mbit/s sender with 150 ms of delay keeps about 1.9 MB in flight; 16 MiB
/// leaves room for bursts without letting a runaway sender eat memory.
pub const MAX_QUEUED_BYTES: usize = 16 << 20;

/// One direction of one emulated link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkProfile {
    /// One-way delay, milliseconds.
    #[serde(default)]
    pub delay_ms: f64,
    /// Each datagram's delay varies uniformly by up to this much either way.
    #[serde(default)]
    pub jitter_ms: f64,
    /// Probability that a datagram is dropped, 0.0-1.0.
    #[serde(default)]
    pub loss: f64,
    /// Drop everything (partition, dead host).
    #[serde(default)]
    pub down: bool,
    /// Mean number of consecutive datagrams lost in a burst (`>= 1`); `0`
    /// (the default): every datagram is lost independently with `loss`.
    /// With bursts `loss` stays the long-run average: see
    /// [`GilbertElliott`] for the chain it makes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub burst_len: f64,
    /// Let datagrams overtake each other: each one's delay is drawn on its
    /// own, where by default none leaves before the one sent before it to
    /// the same destination.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reorder: bool,
    /// The link's bandwidth, kbit/s (`0`, the default: unlimited). Datagrams
    /// leave one after another at this rate; a datagram that would wait
    /// longer than [`RATE_QUEUE_LIMIT`] behind the others is dropped, as a
    /// router's full buffer would. What a congested or mobile last mile is:
    /// a lossy link is not a slow one to a congestion controller that does
    /// not read loss as congestion (BBR).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rate_kbps: f64,
}

/// How long a datagram may queue behind others on a rate-limited link
/// before it is dropped: a router's buffer of a couple hundred milliseconds.
pub const RATE_QUEUE_LIMIT: Duration = Duration::from_millis(200);

// Left out of serialised rules when off, so `GET /netem` and rule files
// read as they did before these fields existed.
fn is_zero(v: &f64) -> bool {
    *v == 0.0
}
fn is_false(v: &bool) -> bool {
    !*v
}

/// Longest mean loss burst a profile may ask for, in datagrams: about 20 s
/// of audio at 50 packets a second, far past any fade a call survives.
pub const MAX_BURST_LEN: f64 = 1_000.0;

impl LinkProfile {
    pub fn delay(ms: f64) -> LinkProfile {
        LinkProfile {
            delay_ms: ms,
            ..LinkProfile::default()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let finite = |v: f64| v.is_finite() && v >= 0.0;
        if !finite(self.delay_ms) || self.delay_ms > 10_000.0 {
            return Err(format!("delay_ms {} is not within 0-10000", self.delay_ms));
        }
        if !finite(self.jitter_ms) || self.jitter_ms > 10_000.0 {
            return Err(format!(
                "jitter_ms {} is not within 0-10000",
                self.jitter_ms
            ));
        }
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(format!("loss {} is not within 0.0-1.0", self.loss));
        }
        if !finite(self.rate_kbps) || (self.rate_kbps > 0.0 && self.rate_kbps < 8.0) {
            return Err(format!(
                "rate_kbps {} is neither 0 (unlimited) nor at least 8",
                self.rate_kbps
            ));
        }
        let b = self.burst_len;
        if !(b == 0.0 || (1.0..=MAX_BURST_LEN).contains(&b)) {
            return Err(format!(
                "burst_len {b} must be 0 (independent loss) or within 1-{MAX_BURST_LEN} (mean datagrams lost in a row)"
            ));
        }
        if b >= 1.0 {
            // p(Good->Bad) = loss / (1 - loss) / burst_len must be a
            // probability: a burst is followed by at least one datagram
            // that gets through.
            let max = b / (b + 1.0);
            if self.loss > max {
                return Err(format!(
                    "loss {} with burst_len {b}: bursty loss must be at most burst_len / (burst_len + 1) = {max:.4} (a burst ends with a datagram that gets through)",
                    self.loss
                ));
            }
        }
        Ok(())
    }

    /// The burst-loss chain of this profile, if its loss comes in bursts
    /// (`burst_len >= 1` and some loss).
    pub fn burst_chain(&self) -> Option<GilbertElliott> {
        GilbertElliott::new(self.loss, self.burst_len)
    }

    fn is_transparent(&self) -> bool {
        self.delay_ms == 0.0
            && self.jitter_ms == 0.0
            && self.loss == 0.0
            && self.rate_kbps == 0.0
            && !self.down
    }

    /// The delay of one datagram.
    fn sample_delay(&self, rng: &mut impl Rng) -> Duration {
        let jitter = if self.jitter_ms > 0.0 {
            rng.random_range(-self.jitter_ms..=self.jitter_ms)
        } else {
            0.0
        };
        Duration::from_secs_f64((self.delay_ms + jitter).max(0.0) / 1000.0)
    }
}

/// Burst loss: the two-state Gilbert-Elliott chain of a [`LinkProfile`]
/// with `burst_len`, stepped once per datagram of one directed (sender
/// socket, destination) pair.
///
/// In the Bad state every datagram is lost, in the Good state none. With
/// `loss` the long-run average loss and `burst_len` the mean burst length:
///
/// - `p_bg = p(Bad -> Good) = 1 / burst_len`: bursts last a geometric number
///   of datagrams with mean `burst_len`;
/// - `p_gb = p(Good -> Bad) = loss * p_bg / (1 - loss)`: the chain is then
///   in Bad a fraction `p_gb / (p_gb + p_bg) = loss` of the time.
///
/// `p_gb <= 1` needs `loss <= burst_len / (burst_len + 1)`
/// ([`LinkProfile::validate`] checks it). Bursts are counted in datagrams,
/// not time: at 60 datagrams a second a burst of 4 lasts 67 ms, between
/// two keepalives a second apart it lasts 4 s. A pure function of its state
/// and the random numbers it is given, so it can be tested with a seeded
/// RNG.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    /// p(Good -> Bad), per datagram.
    pub p_gb: f64,
    /// p(Bad -> Good), per datagram.
    pub p_bg: f64,
}

impl GilbertElliott {
    /// The chain for an average `loss` in bursts of mean `burst_len`
    /// datagrams; `None` when the loss is not bursty (`burst_len < 1`) or
    /// there is none (or the figures are not a valid profile's: NaN
    /// included, so stepping can never be asked for an invalid probability).
    pub fn new(loss: f64, burst_len: f64) -> Option<GilbertElliott> {
        let bursty = (1.0..=MAX_BURST_LEN).contains(&burst_len);
        let lossy = loss > 0.0 && loss < 1.0;
        if !(bursty && lossy) {
            return None;
        }
        let p_bg = 1.0 / burst_len;
        let p_gb = (loss * p_bg / (1.0 - loss)).min(1.0);
        Some(GilbertElliott { p_gb, p_bg })
    }

    /// Step the chain for one datagram: `bad` is the state after the
    /// previous datagram to the same destination; returns the new state,
    /// which is also whether this datagram is lost.
    pub fn step(&self, bad: bool, rng: &mut impl Rng) -> bool {
        if bad {
            !rng.random_bool(self.p_bg)
        } else {
            rng.random_bool(self.p_gb)
        }
    }
}

/// A rule: datagrams from an address in `from` to an address in `to` get
/// `profile`. The most specific rule wins (longest `from` + `to` prefixes,
/// then the later rule). In TOML and JSON the profile's fields sit beside
/// `from` and `to`: `{from = "127.0.1.0/24", to = "127.0.2.1/32", delay_ms = 40}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "FlatRule", into = "FlatRule")]
pub struct LinkRule {
    pub from: IpNet,
    pub to: IpNet,
    pub profile: LinkProfile,
}

/// The wire form of [`LinkRule`]. (`#[serde(flatten)]` would do, but serde
/// cannot refuse unknown fields through it, and a misspelt `dealy_ms` must
/// be an error, not a silently perfect link.)
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlatRule {
    from: IpNet,
    to: IpNet,
    #[serde(default)]
    delay_ms: f64,
    #[serde(default)]
    jitter_ms: f64,
    #[serde(default)]
    loss: f64,
    #[serde(default)]
    down: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    burst_len: f64,
    #[serde(default, skip_serializing_if = "is_false")]
    reorder: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    rate_kbps: f64,
}

impl From<FlatRule> for LinkRule {
    fn from(f: FlatRule) -> Self {
        LinkRule {
            from: f.from,
            to: f.to,
            profile: LinkProfile {
                delay_ms: f.delay_ms,
                jitter_ms: f.jitter_ms,
                loss: f.loss,
                down: f.down,
                burst_len: f.burst_len,
                reorder: f.reorder,
                rate_kbps: f.rate_kbps,
            },
        }
    }
}

impl From<LinkRule> for FlatRule {
    fn from(r: LinkRule) -> Self {
        let p = r.profile;
        FlatRule {
            from: r.from,
            to: r.to,
            delay_ms: p.delay_ms,
            jitter_ms: p.jitter_ms,
            loss: p.loss,
            down: p.down,
            burst_len: p.burst_len,
            reorder: p.reorder,
            rate_kbps: p.rate_kbps,
        }
    }
}

impl LinkRule {
    /// The rule for one host pair, one direction.
    pub fn between(from: IpAddr, to: IpAddr, profile: LinkProfile) -> LinkRule {
        LinkRule {
            from: IpNet::from(from),
            to: IpNet::from(to),
            profile,
        }
    }

    fn specificity(&self) -> u16 {
        self.from.prefix_len() as u16 + self.to.prefix_len() as u16
    }
}

/// How late things happen, in microseconds: a histogram of log-spaced
/// buckets (four per power of two, so a quantile is known within 25%) and
/// the exact maximum. Recording is two relaxed atomic operations and a
/// `fetch_max`: cheap enough for the emulation's send path, and readable
/// from any thread without a lock.
#[derive(Debug)]
pub struct LateHistogram {
    buckets: [AtomicU64; LATE_BUCKETS],
    max_us: AtomicU64,
}

/// Buckets of [`LateHistogram`]: 4 exact ones (0-3 µs), then 4 per power of
/// two up to 2^35 µs (about 9.5 hours); anything later lands in the last.
const LATE_BUCKETS: usize = 136;

/// The bucket of a lateness of `us` microseconds.
fn late_bucket(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let octave = 63 - us.leading_zeros() as usize; // >= 2
    let quarter = ((us >> (octave - 2)) & 3) as usize;
    (4 * (octave - 1) + quarter).min(LATE_BUCKETS - 1)
}

/// The first lateness, in microseconds, past bucket `i` (its exclusive
/// upper bound).
fn late_bucket_end(i: usize) -> u64 {
    if i < 4 {
        return i as u64 + 1;
    }
    let (octave, quarter) = (i / 4 + 1, (i % 4) as u64);
    (5 + quarter) << (octave - 2)
}

impl Default for LateHistogram {
    fn default() -> Self {
        LateHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            max_us: AtomicU64::new(0),
        }
    }
}

impl LateHistogram {
    pub fn record(&self, late: Duration) {
        let us = late.as_micros().min(u64::MAX as u128) as u64;
        self.buckets[late_bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Lateness {
        Lateness {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            max_us: self.max_us.load(Ordering::Relaxed),
        }
    }
}

/// A [`LateHistogram`] at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Lateness {
    buckets: [u64; LATE_BUCKETS],
    max_us: u64,
}

impl Lateness {
    /// Events counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The latest event.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us)
    }

    /// The `p`-th percentile (0-100, nearest rank) as an upper bound: the end
    /// of the bucket that holds it, at most 25% above the true value and
    /// never above [`Lateness::max`]. Zero if nothing was counted.
    pub fn percentile(&self, p: f64) -> Duration {
        let n = self.count();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0 * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_micros(late_bucket_end(i).min(self.max_us));
            }
        }
        self.max()
    }

    /// What was counted after `earlier` (a snapshot of the same histogram).
    /// The maximum of that span is not kept, so it is bounded: the end of
    /// the latest bucket counted since, or the whole maximum if lower.
    pub fn since(&self, earlier: &Lateness) -> Lateness {
        let buckets: [u64; LATE_BUCKETS] =
            std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i]));
        let last = buckets.iter().rposition(|c| *c > 0);
        Lateness {
            buckets,
            max_us: last.map_or(0, |i| late_bucket_end(i).min(self.max_us)),
        }
    }
}

/// The sockets of one [`Wan`] by address, for handing datagrams over in
/// process (see [`Inbox`]).
#[derive(Default)]
struct Hosts {
    sockets: RwLock<HashMap<SocketAddr, Weak<Inbox>>>,
}

impl Hosts {
    /// Hand `contents` from `from` to the socket of this network bound to
    /// `to`; gives the datagram back when there is none (a peer outside the
    /// process: the kernel carries it).
    /// On success, the task to wake for it (if it was waiting): woken by
    /// the caller, once per batch.
    fn deliver(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        contents: Vec<u8>,
    ) -> Result<Option<Waker>, Vec<u8>> {
        match self.inbox(to) {
            Some(inbox) => Ok(inbox.push(from, contents)),
            None => Err(contents),
        }
    }

    /// The in-process socket bound to `to`, if any.
    fn inbox(&self, to: SocketAddr) -> Option<Arc<Inbox>> {
        self.sockets
            .read()
            .unwrap()
            .get(&to)
            .and_then(Weak::upgrade)
    }
}

/// Datagrams from other sockets of the same process and [`Wan`], handed
/// over in memory. The emulation has already applied delay, jitter and loss
/// by then, so the kernel would only copy them through a loopback socket:
/// two system calls and a wake-up per datagram, which on a 60-edge,
/// 200-client lab were most of the emulation's thread. Bounded like a
/// socket's receive buffer (full: the datagram is dropped).
#[derive(Default)]
struct Inbox {
    state: Mutex<InboxState>,
}

#[derive(Default)]
struct InboxState {
    datagrams: VecDeque<(SocketAddr, Vec<u8>)>,
    bytes: usize,
    waker: Option<Waker>,
}

/// Bytes an [`Inbox`] holds at most: the receive buffer edges ask the kernel
/// for (`edge.udp_buffer_bytes`).
const INBOX_MAX_BYTES: usize = 8 << 20;

impl Inbox {
    /// Queue a datagram; returns the waiting task, to be woken by the
    /// caller. Waking from the emulation's thread is a system call into the
    /// runtime, so it wakes each socket once per batch of datagrams, not
    /// once per datagram.
    #[must_use]
    fn push(&self, from: SocketAddr, contents: Vec<u8>) -> Option<Waker> {
        let mut st = self.state.lock().unwrap();
        if st.bytes + contents.len() > INBOX_MAX_BYTES {
            return None;
        }
        st.bytes += contents.len();
        st.datagrams.push_back((from, contents));
        st.waker.take()
    }

    /// Move waiting datagrams into `bufs`; when there are none, remember the
    /// task to wake for the next one. Returns how many were moved.
    fn take(
        &self,
        local: SocketAddr,
        waker: &Waker,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> usize {
        let mut st = self.state.lock().unwrap();
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some((from, contents)) = st.datagrams.pop_front() else {
                break;
            };
            st.bytes -= contents.len();
            let len = contents.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&contents[..len]);
            meta[n] = RecvMeta {
                addr: from,
                len,
                stride: len,
                ecn: None,
                dst_ip: Some(local.ip()),
            };
            n += 1;
        }
        if n == 0 && !st.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            st.waker = Some(waker.clone());
        }
        n
    }
}

/// Wraps a bound UDP socket into what quinn sends and receives through.
pub type SocketHook =
    Arc<dyn Fn(std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> + Send + Sync>;

/// The emulated network: link rules, shared by every socket of a process.
/// Changing a rule takes effect for the next datagram sent.
#[derive(Default)]
pub struct Wan {
    rules: RwLock<Rules>,
    dropped: AtomicU64,
    delayed: AtomicU64,
    scheduler: Scheduler,
    hosts: Arc<Hosts>,
}

impl Drop for Wan {
    fn drop(&mut self) {
        self.scheduler.stop();
    }
}

#[derive(Default)]
struct Rules {
    list: Vec<LinkRule>,
    /// Lookups made since the rules last changed.
    cache: HashMap<(IpAddr, IpAddr), LinkProfile>,
}

impl fmt::Debug for Wan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wan")
            .field("rules", &self.rules().len())
            .finish()
    }
}

impl Wan {
    pub fn new(rules: Vec<LinkRule>) -> Result<Arc<Wan>, String> {
        let wan = Arc::new(Wan::default());
        wan.replace(rules)?;
        Ok(wan)
    }

    /// Replace every rule.
    pub fn replace(&self, rules: Vec<LinkRule>) -> Result<(), String> {
        for r in &rules {
            r.profile
                .validate()
                .map_err(|e| format!("link {} -> {}: {e}", r.from, r.to))?;
        }
        let mut w = self.rules.write().unwrap();
        w.list = rules;
        w.cache.clear();
        Ok(())
    }

    /// Add a rule, or replace the one with the same `from` and `to`.
    pub fn set(&self, rule: LinkRule) -> Result<(), String> {
        rule.profile.validate()?;
        let mut w = self.rules.write().unwrap();
        w.list.retain(|r| !(r.from == rule.from && r.to == rule.to));
        w.list.push(rule);
        w.cache.clear();
        Ok(())
    }

    /// Set both directions between two hosts.
    pub fn set_link(&self, a: IpAddr, b: IpAddr, profile: LinkProfile) -> Result<(), String> {
        self.set(LinkRule::between(a, b, profile))?;
        self.set(LinkRule::between(b, a, profile))
    }

    /// Cut a host off (or bring it back): everything it sends and everything
    /// sent to it is dropped. Other rules are kept for when it comes back.
    pub fn set_host_down(&self, host: IpAddr, down: bool) {
        let mut w = self.rules.write().unwrap();
        let all = IpNet::new(host, 0).expect("/0 is valid").trunc();
        let host = IpNet::from(host);
        let rules = [(all, host), (host, all)].map(|(from, to)| LinkRule {
            from,
            to,
            profile: LinkProfile::default(),
        });
        w.list
            .retain(|r| !(rules.iter().any(|d| d.from == r.from && d.to == r.to)));
        if down {
            // A matching down rule wins over any delay rule (see `profile`).
            for mut r in rules {
                r.profile.down = true;
                w.list.push(r);
            }
        }
        w.cache.clear();
    }

    pub fn rules(&self) -> Vec<LinkRule> {
        self.rules.read().unwrap().list.clone()
    }

    /// The profile of datagrams from `from` to `to`.
    pub fn profile(&self, from: IpAddr, to: IpAddr) -> LinkProfile {
        if let Some(p) = self.rules.read().unwrap().cache.get(&(from, to)) {
            return *p;
        }
        let mut w = self.rules.write().unwrap();
        let matching = w
            .list
            .iter()
            .enumerate()
            .filter(|(_, r)| r.from.contains(&from) && r.to.contains(&to));
        // A down rule for either host wins whatever else matches.
        let down = matching.clone().any(|(_, r)| r.profile.down);
        let best = matching
            .max_by_key(|(i, r)| (r.specificity(), *i))
            .map(|(_, r)| r.profile)
            .unwrap_or_default();
        let p = LinkProfile {
            down: best.down || down,
            ..best
        };
        w.cache.insert((from, to), p);
        p
    }

    /// Datagrams dropped (loss, down, full queue) since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Datagrams that went through a delay line since the start.
    pub fn delayed(&self) -> u64 {
        self.delayed.load(Ordering::Relaxed)
    }

    /// How late delayed datagrams left, past their departure time, since the
    /// start. Tens of microseconds on a machine that keeps up; more, and
    /// every emulated delay is that much longer than the world says.
    pub fn lateness(&self) -> Lateness {
        self.scheduler.shared.late.snapshot()
    }

    /// Bind a UDP socket at `addr` behind this network (a host of it), ready
    /// for quinn.
    pub fn bind(self: &Arc<Self>, addr: SocketAddr) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let socket = std::net::UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        self.wrap(socket)
    }

    /// [`Wan::wrap`] as a hook that a socket's owner calls with the bound
    /// socket (an edge's `EdgeOptions::socket`).
    pub fn hook(self: &Arc<Self>) -> SocketHook {
        let wan = self.clone();
        Arc::new(move |socket| wan.wrap(socket))
    }

    /// Wrap a bound, non-blocking UDP socket: what it sends follows this
    /// network's rules for its own address. Call inside a tokio runtime
    /// (quinn's receive side needs one).
    pub fn wrap(
        self: &Arc<Self>,
        socket: std::net::UdpSocket,
    ) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let local = socket.local_addr()?;
        // Delayed datagrams leave through a clone of the socket, from the
        // scheduler's thread.
        let sender = socket.try_clone()?;
        let inner = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, socket)?;
        self.scheduler.ensure_running();
        let inbox = Arc::new(Inbox::default());
        self.hosts
            .sockets
            .write()
            .unwrap()
            .insert(local, Arc::downgrade(&inbox));
        Ok(Arc::new(EmulatedSocket {
            inner,
            local,
            wan: self.clone(),
            inbox,
            line: Arc::new(DelayLine {
                sender,
                local,
                hosts: self.hosts.clone(),
                state: Mutex::default(),
            }),
        }))
    }
}

/// A socket whose sends go through the emulated network.
pub struct EmulatedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    local: SocketAddr,
    wan: Arc<Wan>,
    /// What other sockets of this network hand over in process.
    inbox: Arc<Inbox>,
    line: Arc<DelayLine>,
}

impl Drop for EmulatedSocket {
    fn drop(&mut self) {
        let mut sockets = self.wan.hosts.sockets.write().unwrap();
        if sockets
            .get(&self.local)
            .is_some_and(|w| w.as_ptr() == Arc::as_ptr(&self.inbox))
        {
            sockets.remove(&self.local);
        }
    }
}

impl fmt::Debug for EmulatedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatedSocket")
            .field("local", &self.local)
            .finish()
    }
}

/// One socket's datagrams on their way out.
struct DelayLine {
    /// Shares the socket's file descriptor.
    sender: std::net::UdpSocket,
    local: SocketAddr,
    hosts: Arc<Hosts>,
    state: Mutex<LineState>,
}

#[derive(Default)]
struct LineState {
    /// Latest departure queued per destination (no overtaking, unless the
    /// profile reorders).
    last_departure: HashMap<SocketAddr, Instant>,
    /// Destinations whose burst-loss chain ([`GilbertElliott`]) is in its
    /// Bad state; the others are in Good. A set of the few pairs in a burst
    /// rather than a state per destination, so that it does not grow with
    /// every address a socket ever sent to (clients come and go on new
    /// ports).
    in_burst: HashSet<SocketAddr>,
    /// Datagrams queued per destination, to know when the fast path is safe.
    queued_to: HashMap<SocketAddr, usize>,
    bytes: usize,
}

struct Delayed {
    departure: Instant,
    seq: u64,
    line: Arc<DelayLine>,
    destination: SocketAddr,
    contents: Vec<u8>,
}

// Min-heap by (departure, seq).
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.departure, other.seq).cmp(&(self.departure, self.seq))
    }
}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}
impl Eq for Delayed {}

/// Sends every delayed datagram of a [`Wan`] at its departure time, from a
/// thread of its own: tokio's timers tick in whole milliseconds, which would
/// add up to 1 ms per crossing and make probes see jitter that is not in
/// the emulated link. A condition variable wakes within tens of
/// microseconds.
#[derive(Default)]
struct Scheduler {
    shared: Arc<SchedulerShared>,
    started: std::sync::OnceLock<()>,
}

#[derive(Default)]
struct SchedulerShared {
    queue: Mutex<SchedulerQueue>,
    wake: Condvar,
    /// How late each datagram left.
    late: LateHistogram,
}

#[derive(Default)]
struct SchedulerQueue {
    heap: BinaryHeap<Delayed>,
    next_seq: u64,
    stopped: bool,
    /// The thread is waiting, until this instant (`Some(None)`: until
    /// woken); `None` while it sends.
    waiting: Option<Option<Instant>>,
}

/// A datagram due this little before the thread's planned wake-up waits for
/// it rather than waking the thread: every wake-up is a futex call on each
/// side, and on a busy lab (tens of thousands of datagrams a second, many
/// of them on short metro links) waking per datagram was a fifth of the
/// process's CPU. Datagrams leave at most this late on that account.
const WAKE_SLACK: Duration = Duration::from_micros(200);

/// Datagrams sent per hold of the queue's lock at most.
const SEND_BATCH: usize = 256;

impl Scheduler {
    fn ensure_running(&self) {
        self.started.get_or_init(|| {
            let shared = self.shared.clone();
            std::thread::Builder::new()
                .name("rtn-netem".into())
                .spawn(move || shared.run())
                .expect("spawning the WAN emulation thread");
        });
    }

    fn stop(&self) {
        self.shared.queue.lock().unwrap().stopped = true;
        self.shared.wake.notify_one();
    }

    /// Queue a datagram; wakes the thread if it now leaves first.
    fn push(
        &self,
        departure: Instant,
        line: Arc<DelayLine>,
        destination: SocketAddr,
        contents: Vec<u8>,
    ) {
        let mut q = self.shared.queue.lock().unwrap();
        let wake = match q.waiting {
            Some(None) => true,
            Some(Some(at)) => departure + WAKE_SLACK < at,
            None => false,
        };
        let seq = q.next_seq;
        q.next_seq += 1;
        q.heap.push(Delayed {
            departure,
            seq,
            line,
            destination,
            contents,
        });
        if wake {
            // Once: the thread recomputes its deadline when it wakes.
            q.waiting = None;
        }
        drop(q);
        if wake {
            self.shared.wake.notify_one();
        }
    }
}

impl SchedulerShared {
    fn run(&self) {
        let mut q = self.queue.lock().unwrap();
        let mut due = Vec::with_capacity(SEND_BATCH);
        loop {
            if q.stopped {
                return;
            }
            let now = Instant::now();
            while due.len() < SEND_BATCH && q.heap.peek().is_some_and(|d| d.departure <= now) {
                due.push(q.heap.pop().expect("peeked"));
            }
            if !due.is_empty() {
                drop(q);
                let mut wake: Vec<Waker> = Vec::new();
                for d in due.drain(..) {
                    self.late.record(now - d.departure);
                    wake.extend(d.send());
                }
                for w in wake {
                    w.wake();
                }
                q = self.queue.lock().unwrap();
                continue;
            }
            match q.heap.peek().map(|d| d.departure) {
                Some(at) => {
                    q.waiting = Some(Some(at));
                    q = self.wake.wait_timeout(q, at - now).unwrap().0;
                }
                None => {
                    q.waiting = Some(None);
                    q = self.wake.wait(q).unwrap();
                }
            }
            q.waiting = None;
        }
    }
}

impl Delayed {
    /// Send it; the task to wake if it was handed over in process.
    fn send(self) -> Option<Waker> {
        {
            let mut state = self.line.state.lock().unwrap();
            state.bytes -= self.contents.len();
            if let Some(n) = state.queued_to.get_mut(&self.destination) {
                *n -= 1;
                if *n == 0 {
                    state.queued_to.remove(&self.destination);
                    state.last_departure.remove(&self.destination);
                }
            }
        }
        let contents =
            match self
                .line
                .hosts
                .deliver(self.line.local, self.destination, self.contents)
            {
                Ok(waker) => return waker,
                Err(contents) => contents,
            };
        // The socket is non-blocking: a full send buffer is retried for up to
        // a millisecond, then the datagram is lost, as on a congested host.
        for _ in 0..20 {
            match self.line.sender.send_to(&contents, self.destination) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_micros(50))
                }
                _ => return None,
            }
        }
        None
    }
}

impl AsyncUdpSocket for EmulatedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let profile = self.wan.profile(self.local.ip(), transmit.destination.ip());
        if profile.down {
            self.wan.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let mut rng = rand::rng();
        let mut line = self.line.state.lock().unwrap();
        let lost = match profile.burst_chain() {
            Some(chain) => {
                let bad = line.in_burst.contains(&transmit.destination);
                let now_bad = chain.step(bad, &mut rng);
                if now_bad != bad {
                    if now_bad {
                        line.in_burst.insert(transmit.destination);
                    } else {
                        line.in_burst.remove(&transmit.destination);
                    }
                }
                now_bad
            }
            None => {
                // Independent loss (or none): a burst in progress under an
                // earlier profile ends with it.
                if !line.in_burst.is_empty() {
                    line.in_burst.remove(&transmit.destination);
                }
                profile.loss > 0.0 && rng.random_bool(profile.loss)
            }
        };
        if lost {
            self.wan.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let queued = line
            .queued_to
            .get(&transmit.destination)
            .copied()
            .unwrap_or(0);
        if profile.is_transparent() && queued == 0 {
            drop(line);
            return match self.wan.hosts.inbox(transmit.destination) {
                Some(inbox) => {
                    if let Some(w) = inbox.push(self.local, transmit.contents.to_vec()) {
                        w.wake();
                    }
                    Ok(())
                }
                None => self.inner.try_send(transmit),
            };
        }
        if line.bytes + transmit.contents.len() > MAX_QUEUED_BYTES {
            self.wan.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let earliest = Instant::now() + profile.sample_delay(&mut rng);
        let mut departure = earliest;
        let last = line
            .last_departure
            .entry(transmit.destination)
            .or_insert(departure);
        if profile.rate_kbps > 0.0 {
            // Serialised behind what the link is still sending.
            let on_the_wire = Duration::from_secs_f64(
                transmit.contents.len() as f64 * 8.0 / (profile.rate_kbps * 1_000.0),
            );
            departure = departure.max(*last + on_the_wire);
            if departure > earliest + RATE_QUEUE_LIMIT {
                self.wan.dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        } else if !profile.reorder {
            departure = departure.max(*last);
        }
        // The latest departure either way: should the profile stop
        // reordering, later datagrams queue behind every earlier one.
        *last = (*last).max(departure);
        *line.queued_to.entry(transmit.destination).or_default() += 1;
        line.bytes += transmit.contents.len();
        drop(line);
        self.wan.delayed.fetch_add(1, Ordering::Relaxed);
        self.wan.scheduler.push(
            departure,
            self.line.clone(),
            transmit.destination,
            transmit.contents.to_vec(),
        );
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        // In-process datagrams first; the waker is registered with the
        // inbox before the kernel socket is polled, so neither source's
        // next datagram can go unnoticed.
        let n = self.inbox.take(self.local, cx.waker(), bufs, meta);
        if n > 0 {
            return Poll::Ready(Ok(n));
        }
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    // One datagram per transmit: each may have its own fate (loss, delay).
    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn most_specific_rule_wins_and_down_overrides() {
        let wan = Wan::new(vec![
            LinkRule {
                from: "127.0.0.0/8".parse().unwrap(),
                to: "127.0.0.0/8".parse().unwrap(),
                profile: LinkProfile::delay(5.0),
            },
            LinkRule::between(ip("127.0.1.1"), ip("127.0.2.1"), LinkProfile::delay(40.0)),
        ])
        .unwrap();
        assert_eq!(wan.profile(ip("127.0.1.1"), ip("127.0.2.1")).delay_ms, 40.0);
        assert_eq!(wan.profile(ip("127.0.2.1"), ip("127.0.1.1")).delay_ms, 5.0);
        assert_eq!(
            wan.profile(ip("10.0.0.1"), ip("127.0.1.1")),
            LinkProfile::default()
        );
        wan.set_host_down(ip("127.0.2.1"), true);
        assert!(wan.profile(ip("127.0.1.1"), ip("127.0.2.1")).down);
        assert!(wan.profile(ip("127.0.2.1"), ip("127.0.3.1")).down);
        assert!(!wan.profile(ip("127.0.1.1"), ip("127.0.3.1")).down);
        wan.set_host_down(ip("127.0.2.1"), false);
        assert_eq!(wan.profile(ip("127.0.1.1"), ip("127.0.2.1")).delay_ms, 40.0);
    }

    #[test]
    fn rules_read_from_toml_and_refuse_unknown_fields() {
        #[derive(Debug, Deserialize)]
        struct Doc {
            links: Vec<LinkRule>,
        }
        let doc: Doc = toml::from_str(
            r#"links = [{from = "127.0.1.0/24", to = "127.0.2.1/32", delay_ms = 40, jitter_ms = 2.5}]"#,
        )
        .unwrap();
        assert_eq!(doc.links[0].profile.delay_ms, 40.0);
        assert_eq!(doc.links[0].profile.jitter_ms, 2.5);
        assert_eq!(doc.links[0].to, "127.0.2.1/32".parse::<IpNet>().unwrap());
        let typo = toml::from_str::<Doc>(
            r#"links = [{from = "127.0.0.1/32", to = "127.0.0.2/32", dealy_ms = 4}]"#,
        );
        assert!(typo.unwrap_err().to_string().contains("dealy_ms"));
        let json = serde_json::to_string(&doc.links).unwrap();
        assert_eq!(
            serde_json::from_str::<Vec<LinkRule>>(&json).unwrap(),
            doc.links
        );
    }

    #[test]
    fn bad_profiles_are_refused() {
        for p in [
            LinkProfile {
                loss: 1.5,
                ..LinkProfile::default()
            },
            LinkProfile {
                delay_ms: -1.0,
                ..LinkProfile::default()
            },
            LinkProfile {
                jitter_ms: f64::NAN,
                ..LinkProfile::default()
            },
        ] {
            assert!(
                Wan::new(vec![LinkRule::between(ip("127.0.0.1"), ip("127.0.0.2"), p)]).is_err()
            );
        }
    }

    /// Loss and mean burst length of `n` datagrams through `chain`.
    fn run_chain(chain: GilbertElliott, n: usize, seed: u64) -> (f64, f64) {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (mut bad, mut lost, mut bursts) = (false, 0usize, 0usize);
        for _ in 0..n {
            let now_bad = chain.step(bad, &mut rng);
            if now_bad {
                lost += 1;
                if !bad {
                    bursts += 1;
                }
            }
            bad = now_bad;
        }
        (lost as f64 / n as f64, lost as f64 / bursts as f64)
    }

    #[test]
    fn the_burst_chain_keeps_the_average_loss_and_the_mean_burst_length() {
        for (i, (loss, burst_len)) in [(0.02, 3.0), (0.05, 4.0), (0.3, 6.0), (0.1, 1.5), (0.5, 1.0)]
            .into_iter()
            .enumerate()
        {
            let chain = GilbertElliott::new(loss, burst_len).unwrap();
            assert_eq!(chain.p_bg, 1.0 / burst_len);
            let (got_loss, got_burst) = run_chain(chain, 1_000_000, i as u64 + 7);
            assert!(
                (got_loss / loss - 1.0).abs() < 0.05,
                "loss {loss} burst_len {burst_len}: measured loss {got_loss}"
            );
            assert!(
                (got_burst / burst_len - 1.0).abs() < 0.05,
                "loss {loss} burst_len {burst_len}: measured bursts of {got_burst}"
            );
        }
        // burst_len 1 at the most loss it allows: lost, kept, lost, kept...
        let alternating = GilbertElliott::new(0.5, 1.0).unwrap();
        assert_eq!((alternating.p_gb, alternating.p_bg), (1.0, 1.0));
        // Not bursty: independent loss, as before the chain existed.
        assert_eq!(GilbertElliott::new(0.05, 0.0), None);
        assert_eq!(GilbertElliott::new(0.0, 3.0), None);
        assert_eq!(GilbertElliott::new(0.1, f64::NAN), None);
        assert_eq!(GilbertElliott::new(f64::NAN, 3.0), None);
        let independent = LinkProfile {
            loss: 0.05,
            ..LinkProfile::default()
        };
        assert_eq!(independent.burst_chain(), None);
    }

    #[test]
    fn burst_and_reorder_fields_read_validate_and_stay_out_of_old_output() {
        let rule = |extra: &str| -> Result<LinkRule, String> {
            let r: LinkRule = serde_json::from_str(&format!(
                r#"{{"from": "127.0.0.1/32", "to": "127.0.0.2/32", "loss": 0.05{extra}}}"#
            ))
            .map_err(|e| e.to_string())?;
            r.profile.validate()?;
            Ok(r)
        };
        let r = rule(r#", "burst_len": 4, "reorder": true"#).unwrap();
        assert_eq!((r.profile.burst_len, r.profile.reorder), (4.0, true));
        assert!(serde_json::to_string(&r)
            .unwrap()
            .contains(r#""burst_len":4.0"#));
        // Off: the fields are left out, so rules read as they always did.
        let plain = rule("").unwrap();
        assert_eq!(
            (plain.profile.burst_len, plain.profile.reorder),
            (0.0, false)
        );
        let json = serde_json::to_string(&plain).unwrap();
        assert!(
            !json.contains("burst_len") && !json.contains("reorder"),
            "{json}"
        );
        assert!(rule(r#", "burstlen": 4"#).unwrap_err().contains("burstlen"));
        for (bad, why) in [
            (
                r#", "burst_len": 0.5"#,
                "must be 0 (independent loss) or within 1-1000",
            ),
            (r#", "burst_len": 5000"#, "within 1-1000"),
            (r#", "burst_len": -1"#, "burst_len -1"),
        ] {
            let e = rule(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let nan = LinkProfile {
            burst_len: f64::NAN,
            ..LinkProfile::default()
        };
        assert!(nan.validate().unwrap_err().contains("burst_len NaN"));
        // A burst must end: at most burst_len / (burst_len + 1) lost.
        for (loss, burst_len) in [(1.0, 3.0), (0.6, 1.0), (0.8, 3.0)] {
            let p = LinkProfile {
                loss,
                burst_len,
                ..LinkProfile::default()
            };
            let e = p.validate().unwrap_err();
            assert!(e.contains("bursty loss must be at most"), "{e}");
            let e =
                Wan::new(vec![LinkRule::between(ip("127.0.0.1"), ip("127.0.0.2"), p)]).unwrap_err();
            assert!(
                e.starts_with("link 127.0.0.1/32 -> 127.0.0.2/32: loss"),
                "{e}"
            );
        }
        let edge = LinkProfile {
            loss: 0.75,
            burst_len: 3.0,
            ..LinkProfile::default()
        };
        assert!(edge.validate().is_ok());
    }

    #[test]
    fn lateness_buckets_bound_every_value_within_a_quarter() {
        for us in (0..5_000).chain([65_535, 1 << 20, (1 << 35) - 1]) {
            let i = late_bucket(us);
            assert!(late_bucket_end(i) > us, "{us} past bucket {i}");
            if i > 0 {
                assert!(late_bucket_end(i - 1) <= us, "{us} before bucket {i}");
            }
            assert!(late_bucket_end(i) as f64 <= (us as f64 * 1.25).max(us as f64 + 1.0));
        }
        assert_eq!(late_bucket(u64::MAX), LATE_BUCKETS - 1);
        let h = LateHistogram::default();
        for us in 1..=1_000 {
            h.record(Duration::from_micros(us));
        }
        let before = h.snapshot();
        let p50 = before.percentile(50.0).as_micros();
        assert!((500..=625).contains(&p50), "p50 {p50}");
        assert_eq!(before.percentile(100.0), Duration::from_micros(1_000));
        assert_eq!(before.max(), Duration::from_micros(1_000));
        h.record(Duration::from_millis(7));
        let after = h.snapshot().since(&before);
        assert_eq!(after.count(), 1);
        assert_eq!(after.percentile(99.0), Duration::from_millis(7));
        assert_eq!(
            LateHistogram::default().snapshot().percentile(99.0),
            Duration::ZERO
        );
    }

    #[test]
    fn datagrams_leaving_after_their_departure_are_counted_late() {
        let wan = Wan::new(vec![]).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let to = rx.local_addr().unwrap();
        let line = Arc::new(DelayLine {
            local: tx.local_addr().unwrap(),
            sender: tx,
            hosts: wan.hosts.clone(),
            state: Mutex::new(LineState {
                queued_to: HashMap::from([(to, 1)]),
                bytes: 4,
                ..LineState::default()
            }),
        });
        wan.scheduler.ensure_running();
        // Due 30 ms ago, as if the thread had not run for that long.
        let due = Instant::now() - Duration::from_millis(30);
        wan.scheduler.push(due, line, to, b"late".to_vec());
        let mut buf = [0u8; 8];
        assert_eq!(rx.recv(&mut buf).unwrap(), 4);
        let late = wan.lateness();
        assert_eq!(late.count(), 1);
        assert!(late.max() >= Duration::from_millis(30), "{:?}", late.max());
        assert!(late.percentile(50.0) >= Duration::from_millis(30));
    }

    /// Receive one datagram from an emulated socket, as quinn does.
    async fn recv_emulated(s: &Arc<dyn AsyncUdpSocket>) -> (SocketAddr, Vec<u8>) {
        let mut buf = [0u8; 2048];
        let mut meta = [RecvMeta::default()];
        std::future::poll_fn(|cx| {
            let mut bufs = [IoSliceMut::new(&mut buf)];
            s.poll_recv(cx, &mut bufs, &mut meta)
        })
        .await
        .unwrap();
        (meta[0].addr, buf[..meta[0].len].to_vec())
    }

    #[tokio::test]
    async fn datagrams_between_sockets_of_one_wan_are_handed_over_in_process() {
        let wan = Wan::new(vec![LinkRule::between(
            ip("127.0.0.1"),
            ip("127.0.0.2"),
            LinkProfile::delay(20.0),
        )])
        .unwrap();
        let a = wan.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = wan.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // Delayed one way (through the emulation's thread), transparent the
        // other (straight from the sender): both arrive, from the sender's
        // address, the delayed one no sooner than its delay.
        let sent = Instant::now();
        send(&*a, b_addr, b"delayed");
        let (from, got) = tokio::time::timeout(Duration::from_secs(2), recv_emulated(&b))
            .await
            .unwrap();
        assert_eq!((from, got.as_slice()), (a_addr, &b"delayed"[..]));
        assert!(sent.elapsed() >= Duration::from_millis(20));
        send(&*b, a_addr, b"direct");
        let (from, got) = tokio::time::timeout(Duration::from_secs(2), recv_emulated(&a))
            .await
            .unwrap();
        assert_eq!((from, got.as_slice()), (b_addr, &b"direct"[..]));
        // Nothing went through the kernel: the real sockets have nothing.
        let mut meta = [RecvMeta::default()];
        let mut buf = [0u8; 64];
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut bufs = [IoSliceMut::new(&mut buf)];
        assert!(b.poll_recv(&mut cx, &mut bufs, &mut meta).is_pending());
        // A socket dropped leaves the network: datagrams for it take the
        // kernel path (and are lost there).
        drop(a);
        assert!(wan.hosts.inbox(a_addr).is_none());
    }

    /// Two sockets on 127.0.0.1 and 127.0.0.2 with the given profile one way.
    async fn pair(
        profile: LinkProfile,
    ) -> (Arc<Wan>, Arc<dyn AsyncUdpSocket>, tokio::net::UdpSocket) {
        let wan = Wan::new(vec![LinkRule::between(
            ip("127.0.0.1"),
            ip("127.0.0.2"),
            profile,
        )])
        .unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_nonblocking(true).unwrap();
        let rx = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
        (wan.clone(), wan.wrap(tx).unwrap(), rx)
    }

    fn send(s: &dyn AsyncUdpSocket, to: SocketAddr, payload: &[u8]) {
        s.try_send(&Transmit {
            destination: to,
            ecn: None,
            contents: payload,
            segment_size: None,
            src_ip: None,
        })
        .unwrap();
    }

    #[tokio::test]
    async fn datagrams_are_delayed_in_order() {
        let profile = LinkProfile {
            delay_ms: 30.0,
            jitter_ms: 10.0,
            ..LinkProfile::default()
        };
        let (wan, tx, rx) = pair(profile).await;
        let to = rx.local_addr().unwrap();
        let started = std::time::Instant::now();
        for i in 0..200u32 {
            send(&*tx, to, &i.to_be_bytes());
        }
        let mut buf = [0u8; 16];
        for i in 0..200u32 {
            let n = tokio::time::timeout(Duration::from_secs(5), rx.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], &i.to_be_bytes(), "datagram {i} out of order");
            if i == 0 {
                assert!(
                    started.elapsed() >= Duration::from_millis(20),
                    "first arrived after {:?}",
                    started.elapsed()
                );
            }
        }
        assert_eq!(wan.delayed(), 200);
        assert_eq!(wan.dropped(), 0);
    }

    #[tokio::test]
    async fn loss_drops_about_the_given_fraction_and_down_drops_all() {
        let (wan, tx, rx) = pair(LinkProfile {
            loss: 0.3,
            ..LinkProfile::default()
        })
        .await;
        let to = rx.local_addr().unwrap();
        let mut buf = [0u8; 16];
        let mut got = 0;
        // In batches, so that the receiver's kernel buffer never overflows.
        for batch in 0..20u32 {
            for i in 0..100u32 {
                send(&*tx, to, &(batch * 100 + i).to_be_bytes());
            }
            while tokio::time::timeout(Duration::from_millis(50), rx.recv(&mut buf))
                .await
                .is_ok()
            {
                got += 1;
            }
        }
        let dropped = wan.dropped();
        assert!(
            (450..=750).contains(&dropped),
            "dropped {dropped} of 2000 at 30%"
        );
        assert_eq!(got, 2000 - dropped);
        wan.set_host_down(ip("127.0.0.2"), true);
        send(&*tx, to, b"lost");
        assert!(
            tokio::time::timeout(Duration::from_millis(200), rx.recv(&mut buf))
                .await
                .is_err()
        );
        wan.set_host_down(ip("127.0.0.2"), false);
        wan.set(LinkRule::between(
            ip("127.0.0.1"),
            ip("127.0.0.2"),
            LinkProfile::default(),
        ))
        .unwrap();
        send(&*tx, to, b"back");
        let n = tokio::time::timeout(Duration::from_secs(1), rx.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"back");
    }

    /// Send `n` numbered datagrams in batches of 100 (so the receiver's
    /// kernel buffer never overflows) and return the numbers that arrived,
    /// in arrival order.
    async fn send_numbered(
        tx: &dyn AsyncUdpSocket,
        rx: &tokio::net::UdpSocket,
        n: u32,
        wait: Duration,
    ) -> Vec<u32> {
        let to = rx.local_addr().unwrap();
        let mut buf = [0u8; 16];
        let mut got = Vec::new();
        for batch in 0..n.div_ceil(100) {
            for i in batch * 100..((batch + 1) * 100).min(n) {
                send(tx, to, &i.to_be_bytes());
            }
            while let Ok(r) = tokio::time::timeout(wait, rx.recv(&mut buf)).await {
                let len = r.unwrap();
                got.push(u32::from_be_bytes(buf[..len].try_into().unwrap()));
            }
        }
        got
    }

    #[tokio::test]
    async fn bursty_loss_drops_runs_of_datagrams_per_destination() {
        let (wan, tx, rx) = pair(LinkProfile {
            loss: 0.3,
            burst_len: 6.0,
            ..LinkProfile::default()
        })
        .await;
        let got = send_numbered(&*tx, &rx, 3000, Duration::from_millis(50)).await;
        let dropped = wan.dropped() as usize;
        assert_eq!(got.len() + dropped, 3000);
        // 900 expected; bursts make the count vary more than independent
        // loss would (the exact figures are tested on the chain itself).
        assert!(
            (450..=1350).contains(&dropped),
            "dropped {dropped} of 3000 at 30%"
        );
        // Runs of lost datagrams: about 6 long. Independent 30% loss would
        // give runs of 1.4 on average, so the chain's state is carried from
        // one datagram to the next.
        let mut gaps = Vec::new();
        let mut expected = 0;
        for &i in got.iter().chain([3000].iter()) {
            if i > expected {
                gaps.push(i - expected);
            }
            expected = i + 1;
        }
        let mean = gaps.iter().sum::<u32>() as f64 / gaps.len() as f64;
        assert!(
            (3.5..=10.0).contains(&mean),
            "mean burst {mean} over {} bursts",
            gaps.len()
        );
    }

    #[tokio::test]
    async fn a_rate_limit_paces_datagrams_and_drops_what_overflows_its_buffer() {
        // 800 kbit/s: a 1,000-byte datagram takes 10 ms on the wire; 200 ms
        // of buffer holds about 20 of them.
        let limited = LinkProfile {
            rate_kbps: 800.0,
            ..LinkProfile::default()
        };
        assert!(limited.validate().is_ok());
        assert!(LinkProfile {
            rate_kbps: 1.0,
            ..limited
        }
        .validate()
        .is_err());
        assert!(!limited.is_transparent());
        let (wan, tx, rx) = pair(limited).await;
        let to = rx.local_addr().unwrap();
        let started = std::time::Instant::now();
        for _ in 0..100 {
            send(&*tx, to, &[0u8; 1000]);
        }
        let mut buf = [0u8; 1500];
        let mut got = 0;
        while let Ok(r) = tokio::time::timeout(Duration::from_millis(300), rx.recv(&mut buf)).await
        {
            r.unwrap();
            got += 1;
        }
        let took = started.elapsed() - Duration::from_millis(300);
        assert!(
            (15..=25).contains(&got),
            "{got} of 100 through 200 ms of buffer"
        );
        assert!(
            took >= Duration::from_millis(150),
            "paced, not at once: {took:?}"
        );
        assert!(wan.dropped() >= 70);
    }

    #[tokio::test]
    async fn reorder_lets_jittered_datagrams_overtake_each_other() {
        let (_wan, tx, rx) = pair(LinkProfile {
            delay_ms: 20.0,
            jitter_ms: 15.0,
            reorder: true,
            ..LinkProfile::default()
        })
        .await;
        let mut got = send_numbered(&*tx, &rx, 200, Duration::from_millis(100)).await;
        assert_eq!(got.len(), 200, "reordering loses nothing");
        let overtaken = got.windows(2).filter(|w| w[1] < w[0]).count();
        // Sent within a millisecond, each delayed 5-35 ms on its own: in
        // order only by an astronomical chance.
        assert!(
            overtaken > 10,
            "only {overtaken} of 200 datagrams overtaken"
        );
        got.sort_unstable();
        assert_eq!(got, (0..200).collect::<Vec<u32>>());
    }
}
