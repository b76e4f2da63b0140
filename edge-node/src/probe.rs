//! Live probes between edges: RTT, jitter and loss per peer, and the set of
//! peers this edge sees dead (which reroutes at once, see
//! `routes::effective_table`).
//!
//! Probes are datagrams on the relay link to each probe target (wire layout
//! in `protocol::datagram::Probe`); the peer answers on the same connection.
//! Statistics are `topology::LinkStats`. The policy, with the reasons:

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::datagram::Probe;
use protocol::EdgeId;
use tokio::sync::watch;
use topology::probe::ReplyOutcome;
use topology::{LinkStats, LinkSummary};
use tracing::{info, warn};

use crate::edge::EdgeCore;

/// One probe per target every 200 ms: a dead next hop is noticed within
/// about 0.6 s plus its RTT (three missed probes), which leaves time inside
/// the design's one-second failover budget; at 17-byte probes (~70 bytes on
/// the wire) it costs 350 B/s per target, nothing next to media.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// A probe unanswered this long is lost. 1 s: longer than any RTT on Earth
/// (about 400 ms at worst through a congested path), so only real losses
/// count.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// A peer is dead after this many probe intervals (plus its smoothed RTT)
/// without hearing anything. 3: one or two lost probes in a row happen on
/// lossy links (at 2% loss, three in a row happen once in 125,000 probes, or
/// about every 7 hours per link); three are an outage.
pub const DEAD_AFTER_INTERVALS: u32 = 3;
/// A target never heard from is dead once it has been probed this long:
/// enough for a relay link's dial and handshake (a few RTTs) to complete.
pub const FIRST_ANSWER_GRACE: Duration = Duration::from_secs(2);

struct Target {
    stats: LinkStats,
    probing_since: Instant,
}

/// Per-peer link statistics and the dead set.
pub struct Prober {
    epoch: Instant,
    seq: AtomicU64,
    targets: Mutex<HashMap<EdgeId, Target>>,
    dead: watch::Sender<BTreeSet<EdgeId>>,
}

impl Default for Prober {
    fn default() -> Self {
        Prober {
            epoch: Instant::now(),
            seq: AtomicU64::new(0),
            targets: Mutex::default(),
            dead: watch::channel(BTreeSet::new()).0,
        }
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
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// The peers currently seen dead.
    pub fn dead(&self) -> watch::Receiver<BTreeSet<EdgeId>> {
        self.dead.subscribe()
    }

    /// Record a reply; the RTT it measured if the statistics used it (for
    /// the RTT histogram).
    pub fn on_reply(&self, peer: EdgeId, p: Probe) -> Option<Duration> {
        let rtt = Duration::from_micros(self.now_us().saturating_sub(p.sent_at_us));
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = targets.get_mut(&peer)?.stats.on_reply(p.seq, rtt);
        matches!(outcome, ReplyOutcome::Accepted | ReplyOutcome::Late).then_some(rtt)
    }

    /// Links to every current target that has been measured.
    pub fn links(&self) -> Vec<PeerLink> {
        let now = Instant::now();
        let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<PeerLink> = targets
            .iter()
            .filter_map(|(&peer, t)| {
                Some(PeerLink {
                    peer,
                    summary: t.stats.summary()?,
                    alive: t.stats.is_alive(now, dead_after(&t.stats)),
                })
            })
            .collect();
        out.sort_by_key(|l| l.peer);
        out
    }

    /// One probing round: probe every target, expire old probes, update the
    /// dead set. Returns the probes to send.
    fn round(&self, targets: &[EdgeId]) -> Vec<(EdgeId, Probe)> {
        let now = Instant::now();
        let sent_at_us = self.now_us();
        let mut map = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|peer, _| targets.contains(peer));
        let mut out = Vec::with_capacity(targets.len());
        let mut dead = BTreeSet::new();
        for &peer in targets {
            let t = map.entry(peer).or_insert_with(|| Target {
                stats: LinkStats::default(),
                probing_since: now,
            });
            t.stats.expire_pending(now, PROBE_TIMEOUT);
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            t.stats.on_probe_sent(seq, now);
            out.push((
                peer,
                Probe {
                    reply: false,
                    seq,
                    sent_at_us,
                },
            ));
            let silent = match t.stats.last_heard() {
                Some(_) => !t.stats.is_alive(now, dead_after(&t.stats)),
                None => now.duration_since(t.probing_since) > FIRST_ANSWER_GRACE,
            };
            if silent {
                dead.insert(peer);
            }
        }
        drop(map);
        self.dead.send_if_modified(|d| {
            let changed = *d != dead;
            *d = dead;
            changed
        });
        out
    }
}

fn dead_after(stats: &LinkStats) -> Duration {
    PROBE_INTERVAL * DEAD_AFTER_INTERVALS + stats.srtt().unwrap_or_default()
}

/// Probe the current table's targets until the edge stops.
pub async fn run(core: Arc<EdgeCore>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_dead = BTreeSet::new();
    let mut was_probed = BTreeSet::new();
    loop {
        tick.tick().await;
        let mut targets: Vec<EdgeId> = core.route_table().probe.iter().copied().collect();
        targets.retain(|p| *p != core.id);
        let probes = core.prober.round(&targets);
        for (peer, probe) in probes {
            core.relay.send_probe(peer, probe.encode());
            core.metrics.probe_sent(peer);
        }
        let dead = core.prober.dead.borrow().clone();
        core.metrics.dead_peers.set(dead.len() as f64);
        // Link metrics and up/down events, as the prober sees them.
        let probed: BTreeSet<EdgeId> = targets.iter().copied().collect();
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
        for peer in dead.difference(&was_dead) {
            warn!(edge = core.id, peer, "link down: probes unanswered");
        }
        for peer in was_dead.difference(&dead) {
            if probed.contains(peer) {
                info!(edge = core.id, peer, "link up: probes answered again");
            }
        }
        was_dead = dead;
        was_probed = probed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_targets_become_dead_and_answers_revive_them() {
        let p = Prober::default();
        let probes = p.round(&[2, 3]);
        assert_eq!(probes.len(), 2);
        // 2 answers; 3 never does.
        p.on_reply(2, probes[0].1);
        assert!(p.dead.borrow().is_empty(), "not dead within the grace");
        {
            let mut m = p.targets.lock().unwrap();
            let t = m.get_mut(&3).unwrap();
            t.probing_since -= FIRST_ANSWER_GRACE + Duration::from_millis(1);
        }
        p.round(&[2, 3]);
        assert_eq!(*p.dead.borrow(), BTreeSet::from([3]));
        let links = p.links();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].peer, 2);
        assert!(links[0].alive);
        // Targets no longer wanted are forgotten.
        p.round(&[2]);
        assert!(p.dead.borrow().is_empty());
    }
}
