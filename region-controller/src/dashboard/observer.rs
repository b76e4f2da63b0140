//! What the controller remembers about the mesh beyond its current view, for
//! the dashboard and the operator API:
//!
//! - **gone edges**: an edge that was registered and left the registry (its
//!   lease expired or it was deregistered) is listed as `down` for
//!   [`ObserverLimits::gone_retention`], so that a crash shows as a red edge
//!   rather than as an edge that silently vanished, also after a page reload;
//! - **link history**: a ring of RTT, jitter, loss and liveness samples per
//!   probed link, taken from the view every [`ObserverLimits::interval`] and
//!   kept for [`ObserverLimits::window`].
//!
//! Memory is bounded whatever the mesh size: at most
//! [`ObserverLimits::max_links`] links are tracked (links beyond that are
//! counted, not stored; links that left the view are forgotten once their
//! last sample is out of the window) with at most `window / interval`
//! samples of [`SAMPLE_BYTES`] each, and at most [`ObserverLimits::max_gone`]
//! gone edges. With the defaults: 2,000 links x 300 samples x 20 bytes =
//! 12 MB at most.
//!
//! The memory is the controller's own: a restarted controller starts empty,
//! and two controllers may differ (each samples its own mirror).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::EdgeId;
use serde::Serialize;
use tracing::warn;

use crate::mesh::{MeshView, SharedMesh};
use control::clock::now_ms;
use control::records::EdgeRecord;

/// Bytes of one stored sample (checked by a test).
pub const SAMPLE_BYTES: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObserverLimits {
    /// Time between two samples of a link. 2 s: edges publish a probe
    /// summary at most every 2 s, so sampling faster would only repeat it.
    pub interval: Duration,
    /// How far back a link's history goes. 10 minutes: long enough to see
    /// the episode an operator is looking at, short enough to stay small.
    pub window: Duration,
    /// Links tracked at most. 2,000: every link of a 45-edge full mesh, or
    /// the links of a larger mesh first seen (the rest are counted).
    pub max_links: usize,
    /// How long a gone edge is listed as down. 10 minutes, as the history.
    pub gone_retention: Duration,
    /// Gone edges remembered at most (the oldest are forgotten first).
    pub max_gone: usize,
}

impl Default for ObserverLimits {
    fn default() -> Self {
        ObserverLimits {
            interval: Duration::from_secs(2),
            window: Duration::from_secs(600),
            max_links: 2_000,
            gone_retention: Duration::from_secs(600),
            max_gone: 1_000,
        }
    }
}

impl ObserverLimits {
    /// Samples kept per link at most.
    pub fn samples_per_link(&self) -> usize {
        let interval = self.interval.as_millis().max(1);
        (self.window.as_millis() / interval).max(1) as usize
    }
}

/// One stored sample: time in tenths of a second since the observer was
/// created (u32: 13 years), figures as f32 (ample for milliseconds and
/// loss fractions).
#[derive(Clone, Copy, Debug)]
struct Sample {
    t_ds: u32,
    rtt_ms: f32,
    jitter_ms: f32,
    loss: f32,
    alive: bool,
}

#[derive(Debug, Default)]
struct Ring {
    samples: VecDeque<Sample>,
}

/// An edge that left the registry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GoneEdge {
    /// Its registration as last seen.
    pub edge: EdgeRecord,
    /// When this controller last saw it registered.
    pub last_seen_ms: u64,
    /// When this controller saw it gone (within one observation of it
    /// leaving the registry).
    pub gone_at_ms: u64,
}

/// A link's samples as served by `/v1/links/history`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HistorySample {
    pub t_ms: u64,
    pub rtt_ms: f64,
    pub jitter_ms: f64,
    pub loss: f64,
    pub alive: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkHistory {
    pub from: EdgeId,
    pub to: EdgeId,
    /// False when the link was never seen or is beyond `max_links`.
    pub tracked: bool,
    pub interval_ms: u64,
    pub window_ms: u64,
    /// Oldest first. A gap longer than the interval means the link was not
    /// in the view (its prober was gone or stopped probing it).
    pub samples: Vec<HistorySample>,
}

#[derive(Debug)]
struct Inner {
    /// Edges seen registered, as last seen, and when.
    known: BTreeMap<EdgeId, (EdgeRecord, u64)>,
    gone: BTreeMap<EdgeId, GoneEdge>,
    links: HashMap<(EdgeId, EdgeId), Ring>,
    /// Distinct links refused because `max_links` were tracked (since start).
    untracked: u64,
    untracked_seen: std::collections::HashSet<(EdgeId, EdgeId)>,
    last_sample_ms: Option<u64>,
}

/// Gone edges and link history; see the module documentation.
#[derive(Debug)]
pub struct Observer {
    limits: ObserverLimits,
    /// Wall-clock origin of the samples' `t_ds`.
    epoch_ms: u64,
    inner: Mutex<Inner>,
}

/// Links the refused-link set remembers at most (so that it is bounded too);
/// past this the count goes on, possibly counting a link twice.
const MAX_UNTRACKED_REMEMBERED: usize = 10_000;

impl Observer {
    pub fn new(limits: ObserverLimits) -> Self {
        Self::with_epoch(limits, now_ms())
    }

    /// An observer whose sample times count from `epoch_ms` (tests).
    pub fn with_epoch(limits: ObserverLimits, epoch_ms: u64) -> Self {
        Observer {
            limits,
            epoch_ms,
            inner: Mutex::new(Inner {
                known: BTreeMap::new(),
                gone: BTreeMap::new(),
                links: HashMap::new(),
                untracked: 0,
                untracked_seen: Default::default(),
                last_sample_ms: None,
            }),
        }
    }

    pub fn limits(&self) -> ObserverLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sample `mesh` every interval until cancelled. Each sample runs on a
    /// blocking thread, over a copy of the view: it walks every link of the
    /// mesh, which on a runtime worker would hold up the API's answers and
    /// the election's keepalives, and under the view's read lock the
    /// store's watch, which writes the view.
    pub async fn run(self: Arc<Self>, mesh: SharedMesh) {
        let mut tick = tokio::time::interval(self.limits.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (observer, mesh) = (self.clone(), mesh.clone());
            let sampled =
                tokio::task::spawn_blocking(move || observer.observe(&mesh.snapshot(), now_ms()));
            if sampled.await.is_err() {
                warn!("a dashboard sample failed");
            }
        }
    }

    /// Note which edges are registered and, when an interval has passed
    /// since the last sample, sample every link of `view`.
    pub fn observe(&self, view: &MeshView, now_ms: u64) {
        let mut inner = self.lock();
        self.observe_edges_locked(&mut inner, view, now_ms);
        let due = inner.last_sample_ms.is_none_or(|last| {
            // A tick that fires a little early still samples.
            now_ms.saturating_sub(last) + 100 >= self.limits.interval.as_millis() as u64
        });
        if due {
            self.sample_links_locked(&mut inner, view, now_ms);
            inner.last_sample_ms = Some(now_ms);
        }
        metrics::gauge!("rtn_controller_history_links").set(inner.links.len() as f64);
        metrics::gauge!("rtn_controller_gone_edges").set(inner.gone.len() as f64);
    }

    /// Note which edges are registered (cheap enough to do on every mesh
    /// request, so that an edge is down on the first request after it left).
    pub fn observe_edges(&self, view: &MeshView, now_ms: u64) {
        let mut inner = self.lock();
        self.observe_edges_locked(&mut inner, view, now_ms);
    }

    fn observe_edges_locked(&self, inner: &mut Inner, view: &MeshView, now_ms: u64) {
        for (id, rec) in &view.edges {
            match inner.known.get_mut(id) {
                Some((known, seen)) => {
                    if known != rec {
                        *known = rec.clone();
                    }
                    *seen = now_ms;
                }
                None => {
                    inner.known.insert(*id, (rec.clone(), now_ms));
                }
            }
            inner.gone.remove(id);
        }
        let left: Vec<EdgeId> = inner
            .known
            .keys()
            .filter(|id| !view.edges.contains_key(id))
            .copied()
            .collect();
        for id in left {
            if let Some((edge, last_seen_ms)) = inner.known.remove(&id) {
                inner.gone.insert(
                    id,
                    GoneEdge {
                        edge,
                        last_seen_ms,
                        gone_at_ms: now_ms,
                    },
                );
            }
        }
        let retention = self.limits.gone_retention.as_millis() as u64;
        inner
            .gone
            .retain(|_, g| now_ms.saturating_sub(g.gone_at_ms) < retention);
        while inner.gone.len() > self.limits.max_gone {
            let oldest = inner
                .gone
                .values()
                .min_by_key(|g| (g.gone_at_ms, g.edge.id))
                .map(|g| g.edge.id);
            match oldest {
                Some(id) => inner.gone.remove(&id),
                None => break,
            };
        }
    }

    fn sample_links_locked(&self, inner: &mut Inner, view: &MeshView, now_ms: u64) {
        let t_ds = (now_ms.saturating_sub(self.epoch_ms) / 100).min(u32::MAX as u64) as u32;
        let per_link = self.limits.samples_per_link();
        for p in view.probes.values() {
            for l in &p.links {
                let key = (p.from, l.to);
                if !inner.links.contains_key(&key) {
                    if inner.links.len() >= self.limits.max_links {
                        if inner.untracked_seen.len() < MAX_UNTRACKED_REMEMBERED {
                            if inner.untracked_seen.insert(key) {
                                inner.untracked += 1;
                            }
                        } else if !inner.untracked_seen.contains(&key) {
                            inner.untracked += 1;
                        }
                        continue;
                    }
                    inner.links.insert(key, Ring::default());
                }
                let ring = inner.links.get_mut(&key).expect("inserted above");
                if ring.samples.len() >= per_link {
                    ring.samples.pop_front();
                }
                ring.samples.push_back(Sample {
                    t_ds,
                    rtt_ms: l.rtt_ms as f32,
                    jitter_ms: l.jitter_ms as f32,
                    loss: l.loss as f32,
                    alive: l.alive,
                });
            }
        }
        // Forget what is out of the window; a link with nothing left goes,
        // which frees its place for another.
        let window_ds = (self.limits.window.as_millis() / 100) as u32;
        let oldest = t_ds.saturating_sub(window_ds);
        inner.links.retain(|_, ring| {
            while ring.samples.front().is_some_and(|s| s.t_ds < oldest) {
                ring.samples.pop_front();
            }
            !ring.samples.is_empty()
        });
    }

    /// Edges that left the registry within the retention, by id.
    pub fn gone(&self) -> Vec<GoneEdge> {
        self.lock().gone.values().cloned().collect()
    }

    /// Links refused because `max_links` were tracked.
    pub fn untracked_links(&self) -> u64 {
        self.lock().untracked
    }

    pub fn tracked_links(&self) -> usize {
        self.lock().links.len()
    }

    pub fn history(&self, from: EdgeId, to: EdgeId) -> LinkHistory {
        let inner = self.lock();
        let ring = inner.links.get(&(from, to));
        LinkHistory {
            from,
            to,
            tracked: ring.is_some(),
            interval_ms: self.limits.interval.as_millis() as u64,
            window_ms: self.limits.window.as_millis() as u64,
            samples: ring
                .map(|r| {
                    r.samples
                        .iter()
                        .map(|s| HistorySample {
                            t_ms: self.epoch_ms + s.t_ds as u64 * 100,
                            rtt_ms: round3(s.rtt_ms),
                            jitter_ms: round3(s.jitter_ms),
                            loss: round4(s.loss),
                            alive: s.alive,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// f32 figures widened to f64 print as 9.5 rather than 9.5000001.
fn round3(v: f32) -> f64 {
    (v as f64 * 1000.0).round() / 1000.0
}

fn round4(v: f32) -> f64 {
    (v as f64 * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::records::{EdgeState, ProbeLink, ProbeRecord};

    fn edge(id: EdgeId) -> EdgeRecord {
        EdgeRecord {
            id,
            region: "eu".into(),
            city: "fra".into(),
            lat: 50.1,
            lon: 8.7,
            addr: format!("127.0.0.{id}:4433").parse().unwrap(),
            server_name: "localhost".into(),
            cert_sha256: vec![],
            admin_addr: None,
            capacity: 100,
            state: EdgeState::Serving,
            version: "test".into(),
            started_at_ms: 1,
        }
    }

    fn link(to: EdgeId, rtt_ms: f64) -> ProbeLink {
        ProbeLink {
            to,
            rtt_ms,
            jitter_ms: 0.5,
            loss: 0.01,
            samples: 10,
            alive: true,
        }
    }

    /// Edges `ids`, each probing every other with RTT `rtt`.
    fn view(ids: &[EdgeId], rtt: f64) -> MeshView {
        let mut v = MeshView::default();
        for &id in ids {
            v.edges.insert(id, edge(id));
            v.probes.insert(
                id,
                ProbeRecord {
                    from: id,
                    at_ms: 0,
                    links: ids
                        .iter()
                        .filter(|&&o| o != id)
                        .map(|&o| link(o, rtt))
                        .collect(),
                },
            );
        }
        v
    }

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn samples_are_small() {
        assert_eq!(std::mem::size_of::<Sample>(), SAMPLE_BYTES);
        let l = ObserverLimits::default();
        assert_eq!(l.samples_per_link(), 300);
        // The documented worst case.
        assert_eq!(
            l.max_links * l.samples_per_link() * SAMPLE_BYTES,
            12_000_000
        );
    }

    #[test]
    fn history_ring_keeps_the_window_and_no_more() {
        let limits = ObserverLimits {
            interval: Duration::from_secs(2),
            window: Duration::from_secs(20),
            ..Default::default()
        };
        let o = Observer::with_epoch(limits, T0);
        for i in 0..25u64 {
            o.observe(&view(&[1, 2], 10.0 + i as f64), T0 + i * 2_000);
        }
        let h = o.history(1, 2);
        assert!(h.tracked);
        assert_eq!((h.interval_ms, h.window_ms), (2_000, 20_000));
        assert_eq!(h.samples.len(), limits.samples_per_link());
        assert_eq!(h.samples.len(), 10);
        // The newest ten, oldest first, at their times.
        let rtts: Vec<f64> = h.samples.iter().map(|s| s.rtt_ms).collect();
        assert_eq!(rtts, (15..25).map(|i| 10.0 + i as f64).collect::<Vec<_>>());
        assert_eq!(h.samples[9].t_ms, T0 + 24 * 2_000);
        assert_eq!(h.samples[0].loss, 0.01);
        assert_eq!(h.samples[0].jitter_ms, 0.5);
        // Observations closer together than the interval do not sample.
        o.observe(&view(&[1, 2], 99.0), T0 + 24 * 2_000 + 500);
        assert_eq!(o.history(1, 2).samples.last().unwrap().rtt_ms, 34.0);
        // Both directions are separate links; unknown links are untracked.
        assert!(o.history(2, 1).tracked);
        let none = o.history(1, 3);
        assert!(!none.tracked && none.samples.is_empty());
    }

    #[test]
    fn links_that_left_are_forgotten_after_the_window() {
        let limits = ObserverLimits {
            window: Duration::from_secs(10),
            ..Default::default()
        };
        let o = Observer::with_epoch(limits, T0);
        o.observe(&view(&[1, 2, 3], 10.0), T0);
        assert_eq!(o.tracked_links(), 6);
        // Edge 3 leaves: its links stop being sampled (a gap), then go.
        let mut t = T0;
        for _ in 0..4 {
            t += 2_000;
            o.observe(&view(&[1, 2], 10.0), t);
        }
        assert_eq!(o.history(1, 3).samples.len(), 1);
        assert_eq!(o.tracked_links(), 6);
        for _ in 0..2 {
            t += 2_000;
            o.observe(&view(&[1, 2], 10.0), t);
        }
        assert_eq!(o.tracked_links(), 2);
        assert!(!o.history(1, 3).tracked);
    }

    #[test]
    fn tracked_links_are_capped_whatever_the_mesh_size() {
        let limits = ObserverLimits {
            max_links: 10,
            ..Default::default()
        };
        let o = Observer::with_epoch(limits, T0);
        // 8 edges probing each other: 56 links.
        let ids: Vec<EdgeId> = (1..=8).collect();
        for i in 0..400u64 {
            o.observe(&view(&ids, 5.0), T0 + i * 2_000);
        }
        assert_eq!(o.tracked_links(), 10);
        assert_eq!(o.untracked_links(), 46);
        let tracked = (1..=8)
            .flat_map(|a| (1..=8).map(move |b| (a, b)))
            .filter(|&(a, b)| o.history(a, b).tracked)
            .count();
        assert_eq!(tracked, 10);
        for (a, b) in [(1, 2), (2, 1)] {
            if o.history(a, b).tracked {
                assert_eq!(o.history(a, b).samples.len(), 300);
            }
        }
    }

    #[test]
    fn gone_edges_are_listed_until_they_return_or_the_retention_ends() {
        let limits = ObserverLimits {
            gone_retention: Duration::from_secs(60),
            max_gone: 2,
            ..Default::default()
        };
        let o = Observer::with_epoch(limits, T0);
        o.observe_edges(&view(&[1, 2, 3, 4, 5], 1.0), T0);
        assert!(o.gone().is_empty());
        o.observe_edges(&view(&[1, 2, 3, 4], 1.0), T0 + 1_000);
        let gone = o.gone();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].edge, edge(5));
        assert_eq!((gone[0].last_seen_ms, gone[0].gone_at_ms), (T0, T0 + 1_000));
        // Back (a restart): no longer down.
        o.observe_edges(&view(&[1, 2, 3, 4, 5], 1.0), T0 + 2_000);
        assert!(o.gone().is_empty());
        // At most `max_gone`, the most recent kept.
        o.observe_edges(&view(&[1, 2, 3, 4], 1.0), T0 + 3_000);
        o.observe_edges(&view(&[1, 2, 3], 1.0), T0 + 4_000);
        o.observe_edges(&view(&[1], 1.0), T0 + 5_000);
        let ids: Vec<EdgeId> = o.gone().iter().map(|g| g.edge.id).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&2) && ids.contains(&3), "{ids:?}");
        // Forgotten after the retention.
        o.observe_edges(&view(&[1], 1.0), T0 + 5_000 + 59_000);
        assert_eq!(o.gone().len(), 2);
        o.observe_edges(&view(&[1], 1.0), T0 + 5_000 + 60_000);
        assert!(o.gone().is_empty());
        // An edge first seen late is remembered as well.
        o.observe_edges(&view(&[1, 9], 1.0), T0 + 70_000);
        o.observe_edges(&view(&[1], 1.0), T0 + 71_000);
        assert_eq!(o.gone()[0].edge.id, 9);
    }

    #[test]
    fn a_changed_registration_is_remembered_as_last_seen() {
        let o = Observer::with_epoch(ObserverLimits::default(), T0);
        let mut v = view(&[1, 2], 1.0);
        o.observe_edges(&v, T0);
        v.edges.get_mut(&2).unwrap().state = EdgeState::Draining;
        o.observe_edges(&v, T0 + 1_000);
        o.observe_edges(&view(&[1], 1.0), T0 + 2_000);
        let g = &o.gone()[0];
        assert_eq!(g.edge.state, EdgeState::Draining);
        assert_eq!(g.last_seen_ms, T0 + 1_000);
    }
}
