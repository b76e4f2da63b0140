//! Channel directories: which edges host a channel's members.
//!
//! Membership never goes to etcd (it is O(users)); edges exchange it over the
//! overlay as soft state. A channel's directory is homed on the edges chosen
//! by rendezvous hashing over the live edges ([`REPLICAS`] of them, so losing
//! one home loses nothing). Every edge with members reports its changes to
//! the homes as they happen (deltas, each at a generation) and a summary
//! every [`REFRESH`]; a home pushes what changed to every edge that hosts
//! members (coalesced, [`PUSH_COALESCE`]) with a digest of every entry, and
//! the digest alone every [`REFRESH`]. Whoever lacks what the other has
//! asks for it whole: a home lists an entry it cannot build on at
//! generation 0 and its edge resends it; an edge asks a home for entries
//! its digest names and it lacks. So a join costs one member on the wire
//! per member edge, and a refresh one digest line per member edge, however
//! big the channel. Entries not refreshed within [`ENTRY_TTL`] expire, on
//! the home and on the edges, so a dead edge's members vanish and a lost
//! home is rebuilt by the next refresh. An edge merges updates from several
//! homes (a union ordered by generation), so a home that has just started
//! and knows little cannot erase what another home said.
//!
//! The decisions are I/O-free in [`crate::forward::home`] (a home's
//! entries) and [`crate::forward::channel`] (merging updates on an edge);
//! this module sends and receives them and runs the refresh loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use protocol::ids::directory_homes;
use protocol::limits::INITIAL_HOP_LIMIT;
use protocol::pb::{self, relay_frame::Kind as RK};
use protocol::{ChannelId, EdgeId};

use crate::channel::Channel;
use crate::edge::EdgeCore;
use crate::forward::channel::Report;
use crate::forward::home::{self, Home};
use crate::forward::report_pace::Pace;

/// How often reports and updates are refreshed. Short, because a member that
/// joins through an edge that lost its home is seen within this time.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How long an unrefreshed entry lives: three refreshes and a half, so one or
/// two lost frames do not make members flicker.
pub const ENTRY_TTL: Duration = Duration::from_millis(3_500);
/// Homes per channel.
pub const REPLICAS: usize = 2;
/// A home pushes a change at most this long after the report that made it,
/// with every other change of the channel in the meantime: a burst of joins
/// (a broadcast starting, clients failing over from a dead edge) costs one
/// push to every member edge instead of one per join. Small next to the
/// failover budget.
pub const PUSH_COALESCE: Duration = Duration::from_millis(10);

pub struct Directory {
    homed: Mutex<HashMap<ChannelId, Home>>,
    /// Homed channels changed since their last push (see [`PUSH_COALESCE`]).
    changed: Mutex<std::collections::HashSet<ChannelId>>,
    changed_notify: tokio::sync::Notify,
    /// Generations start from the wall clock so a restarted edge's reports
    /// supersede its previous life's.
    generation_base: u64,
    started: Instant,
}

impl Default for Directory {
    fn default() -> Self {
        Self::new()
    }
}

impl Directory {
    pub fn new() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Directory {
            homed: Mutex::default(),
            changed: Mutex::default(),
            changed_notify: tokio::sync::Notify::new(),
            generation_base: micros.saturating_mul(1_000),
            started: Instant::now(),
        }
    }

    /// Where a channel's local generation starts when this edge takes it up
    /// (again): above anything an earlier instance of the channel on this
    /// edge reported, since that one counted from an earlier instant (at
    /// most a thousand changes per microsecond). A channel is dropped when
    /// its last member leaves, after a withdrawal at its last generation;
    /// restarting from zero made homes ignore the next member's reports as
    /// stale until the withdrawal expired (3.5 s without media for a
    /// client failing over to an edge that had just lost the channel's last
    /// member).
    pub fn channel_generation_start(&self) -> u64 {
        (self.started.elapsed().as_micros() as u64).saturating_mul(1_000)
    }
}

impl EdgeCore {
    fn homes(&self, ch: ChannelId) -> Vec<EdgeId> {
        let table = self.route_table();
        directory_homes(
            ch,
            table.live_edges().chain(std::iter::once(self.id)),
            REPLICAS,
        )
    }

    /// Local membership of `ch` changed: report it, now or, in a large
    /// channel, at the end of its
    /// [`REPORT_GAP`](crate::forward::report_pace::REPORT_GAP) with the
    /// changes meanwhile. A small channel's changes go at once (a call's
    /// clients failing over together are not held back by each other), and
    /// so does the last local member's leave: the channel is pruned from
    /// this edge.
    pub fn local_membership_changed(self: &Arc<Self>, ch: &Arc<Channel>) {
        let (has_local, large) = {
            let st = ch.read();
            (st.has_local(), st.is_large())
        };
        let pace = if has_local && large {
            let mut pace = ch.reporting.lock().unwrap_or_else(|e| e.into_inner());
            pace.changed(Instant::now())
        } else {
            Pace::Now
        };
        match pace {
            Pace::Now => self.report(ch),
            Pace::At(at) => {
                let (core, ch) = (self.clone(), ch.clone());
                self.tasks.spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    core.report(&ch);
                });
            }
            Pace::Scheduled => {}
        }
        if !has_local {
            self.prune_channels();
        }
    }

    /// Report what changed since the last report (a summary if nothing
    /// did) to the channel's homes.
    fn report(&self, ch: &Channel) {
        let mut in_order = ch.reporting.lock().unwrap_or_else(|e| e.into_inner());
        in_order.reported(Instant::now());
        let (report, generation) = ch.write().take_report(self.directory.generation_base);
        let report = match report {
            Report::Whole(members) => self.whole_report(ch, members, generation),
            Report::Delta {
                base,
                members,
                left,
            } => pb::DirectoryReport {
                members,
                base_generation: base,
                left,
                ..self.report_frame(ch, generation)
            },
            Report::Summary => pb::DirectoryReport {
                summary: true,
                ..self.report_frame(ch, generation)
            },
        };
        self.tell_hinted(ch);
        let homes = self.homes(ch.id);
        let before = std::mem::replace(&mut ch.write().homes, homes.clone());
        tracing::debug!(edge = self.id, channel = %ch.id, ?homes, generation, members = report.members.len(), left = report.left.len(), summary = report.summary, "directory report");
        let whole = home::is_whole(&report);
        for home in homes {
            if whole || before.contains(&home) {
                self.report_to(home, report.clone());
            } else {
                // A new home (the live edges changed) lacks the entry.
                self.report_whole_to(ch, home);
            }
        }
    }

    fn report_frame(&self, ch: &Channel, generation: u64) -> pb::DirectoryReport {
        pb::DirectoryReport {
            reporter_edge: self.id,
            channel_id: ch.id.0,
            generation,
            hop_limit: INITIAL_HOP_LIMIT as u32,
            ..Default::default()
        }
    }

    /// A whole report of `ch`: `members` at `generation`, saying whether
    /// this edge has the other entries already (`knows_entries`).
    fn whole_report(
        &self,
        ch: &Channel,
        members: Vec<pb::DirectoryMember>,
        generation: u64,
    ) -> pb::DirectoryReport {
        pb::DirectoryReport {
            members,
            knows_entries: ch.read().knows_entries(),
            ..self.report_frame(ch, generation)
        }
    }

    /// This edge's whole entry of `ch`, at its current generation.
    fn whole_entry(&self, ch: &Channel) -> pb::EdgeMembers {
        let st = ch.read();
        pb::EdgeMembers {
            edge_id: self.id,
            members: st.local_report(),
            generation: self.directory.generation_base + st.local_generation,
            ..Default::default()
        }
    }

    /// `home` lacks this edge's entry of `ch`: send it whole.
    fn report_whole_to(&self, ch: &Channel, home: EdgeId) {
        let entry = self.whole_entry(ch);
        self.report_to(home, self.whole_report(ch, entry.members, entry.generation));
    }

    /// Ask `home` for the whole entries of `want` (its digest named them).
    fn ask_whole(&self, ch: &Channel, home: EdgeId, want: Vec<EdgeId>) {
        let generation = ch.read().reported_generation();
        let report = pb::DirectoryReport {
            summary: true,
            want,
            ..self.report_frame(ch, generation)
        };
        self.report_to(home, report);
    }

    fn report_to(&self, home: EdgeId, report: pb::DirectoryReport) {
        for part in home::split_report(report) {
            if home == self.id {
                self.apply_report(part);
                continue;
            }
            for t in self.trees_to(&[home]) {
                self.send_along(&t, None, |nodes| {
                    RK::DirectoryReport(pb::DirectoryReport {
                        tree: nodes,
                        ..part.clone()
                    })
                });
            }
        }
    }

    /// This edge's members of `ch`, sent directly to the edges a rejoining
    /// client named while the hint lasts
    /// ([`crate::forward::channel::ChannelState::hint`]): they
    /// learn of the new member (and it of them, from their answers to the
    /// first, a greeting) in one round trip between the two edges, instead
    /// of through the channel's homes, which may be across the world.
    fn tell_hinted(&self, ch: &Channel) {
        if ch.read().hinted.is_empty() {
            return;
        }
        let targets = ch.write().hinted_now(Instant::now());
        let table = self.route_table();
        let live: std::collections::HashSet<EdgeId> = table.live_edges().collect();
        for greeting in [true, false] {
            let dests: Vec<EdgeId> = targets
                .iter()
                .filter(|(e, g)| *g == greeting && live.contains(e))
                .map(|(e, _)| *e)
                .collect();
            self.send_own_entry(ch, &dests, greeting);
        }
    }

    /// Tell every hinted edge of every channel this edge's entry again,
    /// greeting those not heard from yet (a next hop just went suspect:
    /// what was sent through it may be lost, and these are what a rejoined
    /// member's media waits for). How many channels had hints.
    pub fn greet_unheard_hinted(&self) -> usize {
        let mut told = 0;
        for ch in self.channels() {
            if ch.read().hinted.is_empty() || !ch.write().greet_unheard_again() {
                continue;
            }
            self.tell_hinted(&ch);
            told += 1;
        }
        told
    }

    /// Send `dests` this edge's whole entry of `ch` as a directory update
    /// of its own (protocol §9.6, "Hints").
    fn send_own_entry(&self, ch: &Channel, dests: &[EdgeId], greeting: bool) {
        if dests.is_empty() {
            return;
        }
        let event = if greeting { "greeted" } else { "told" };
        self.metrics.directory_hints(event, dests.len());
        let update = pb::DirectoryUpdate {
            home_edge: self.id,
            channel_id: ch.id.0,
            edges: vec![self.whole_entry(ch)],
            hop_limit: INITIAL_HOP_LIMIT as u32,
            greeting,
            ..Default::default()
        };
        self.send_update(update, dests);
    }

    fn send_update(&self, update: pb::DirectoryUpdate, dests: &[EdgeId]) {
        let trees = self.trees_to(dests);
        for part in home::split(update) {
            for t in &trees {
                self.send_along(t, None, |nodes| {
                    RK::DirectoryUpdate(pb::DirectoryUpdate {
                        tree: nodes,
                        ..part.clone()
                    })
                });
            }
        }
    }

    /// A report reached this edge: apply it if this edge is a destination,
    /// pass it on otherwise.
    pub fn relay_report(&self, r: pb::DirectoryReport, from: Option<EdgeId>) {
        let Some((tree, deliver, hop_limit)) = self.accept_tree(&r.tree, r.hop_limit) else {
            return;
        };
        if deliver {
            self.apply_report(r.clone());
        }
        self.send_along(&tree, from, |nodes| {
            RK::DirectoryReport(pb::DirectoryReport {
                tree: nodes,
                hop_limit,
                ..r.clone()
            })
        });
    }

    pub fn relay_update(&self, u: pb::DirectoryUpdate, from: Option<EdgeId>) {
        let Some((tree, deliver, hop_limit)) = self.accept_tree(&u.tree, u.hop_limit) else {
            return;
        };
        if deliver {
            self.apply_update(&u);
        }
        self.send_along(&tree, from, |nodes| {
            RK::DirectoryUpdate(pb::DirectoryUpdate {
                tree: nodes,
                hop_limit,
                ..u.clone()
            })
        });
    }

    fn apply_report(&self, r: pb::DirectoryReport) {
        let (channel, reporter) = (ChannelId(r.channel_id), r.reporter_edge);
        let (changed, wholes) = {
            let mut homed = self
                .directory
                .homed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let home = homed.entry(channel).or_default();
            let lacked = home.wants_whole(reporter);
            let changed = home.apply_report(&r, Instant::now());
            if !lacked && home.wants_whole(reporter) {
                self.metrics.directory_resyncs("home_lacked_entry", 1);
            }
            let wholes = if home::is_whole(&r) && !r.knows_entries {
                Some(home.wholes_for(self.id, channel, reporter))
            } else {
                (!r.want.is_empty()).then(|| home.wholes(self.id, channel, &r.want))
            };
            (changed, wholes)
        };
        tracing::debug!(edge = self.id, %channel, reporter, generation = r.generation, base = r.base_generation, summary = r.summary, changed, want = r.want.len(), "directory report applied");
        if let Some(update) = wholes {
            if reporter == self.id {
                self.apply_update(&update);
            } else {
                self.send_update(update, &[reporter]);
            }
        }
        if changed {
            let first = self
                .directory
                .changed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(channel);
            if first {
                self.directory.changed_notify.notify_one();
            }
        }
    }

    /// Push the homed channels that changed since their last push.
    fn push_changed(&self) {
        let changed = std::mem::take(
            &mut *self
                .directory
                .changed
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for ch in changed {
            self.push_update(ch, Home::push);
        }
    }

    /// Send the home's push (or refresh) of `ch` to every edge hosting
    /// members.
    fn push_update(
        &self,
        ch: ChannelId,
        make: fn(&mut Home, EdgeId, ChannelId) -> (pb::DirectoryUpdate, Vec<EdgeId>),
    ) {
        let (update, mut dests) = {
            let mut homed = self
                .directory
                .homed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let Some(home) = homed.get_mut(&ch) else {
                return;
            };
            make(home, self.id, ch)
        };
        if dests.contains(&self.id) {
            self.apply_update(&update);
            dests.retain(|d| *d != self.id);
        }
        self.send_update(update, &dests);
    }

    fn apply_update(&self, u: &pb::DirectoryUpdate) {
        let Some(ch) = self.existing_channel(ChannelId(u.channel_id)) else {
            return;
        };
        if u.greeting && u.home_edge != self.id {
            // A rejoined member's new edge introduced itself: answer with
            // this edge's members, so it sends them the channel's media
            // without waiting for a home.
            if ch.read().has_local() {
                self.send_own_entry(&ch, &[u.home_edge], false);
            }
        }
        let now = Instant::now();
        let merged = ch.update(|st| st.merge_update(self.id, u, now, now + ENTRY_TTL));
        // After the announcements: a subscriber hears of a track before
        // its first packets.
        self.release_early_media(&ch);
        tracing::debug!(edge = self.id, channel = %ch.id, home = u.home_edge, touched = merged.touched.len(), want = ?merged.want, resend_own = merged.resend_own, "directory update applied");
        if !merged.want.is_empty() {
            self.metrics
                .directory_resyncs("entries_wanted", merged.want.len());
            self.ask_whole(&ch, u.home_edge, merged.want);
        }
        if merged.resend_own {
            self.metrics.directory_resyncs("own_entry_resent", 1);
            self.report_whole_to(&ch, u.home_edge);
        }
    }

    /// `revived` came back after being dead longer than [`ENTRY_TTL`]: each
    /// side's entry of the other has expired. Greet them with this edge's
    /// own entry of every channel with members here (as a rejoining
    /// client's new edge greets the edges it names, protocol §9.6 "Hints"):
    /// one that hosts members of the channel merges it and answers with
    /// its own, so media flows both ways one round trip after the links are
    /// back, before the homes have both entries again.
    fn greet_revived(&self, revived: &[EdgeId]) {
        for ch in self.channels() {
            if ch.read().has_local() {
                self.send_own_entry(&ch, revived, true);
            }
        }
    }

    /// One refresh round: re-report (a summary, mostly), expire, tell large
    /// channels' counts, send every homed channel's digest.
    fn refresh(&self) {
        let now = Instant::now();
        for ch in self.channels() {
            self.report(&ch);
            // Most rounds expire nothing: only then pay for a change.
            if ch.read().has_expired(now) {
                ch.update(|st| st.expire(now));
            }
            ch.tell_count_due(now);
        }
        let homed: Vec<ChannelId> = {
            let mut homed = self
                .directory
                .homed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            homed.retain(|_, home| !home.expire(now, ENTRY_TTL));
            homed.keys().copied().collect()
        };
        // Changes pending now go out with the digests' next push.
        let pending = std::mem::take(
            &mut *self
                .directory
                .changed
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for ch in homed {
            let make = if pending.contains(&ch) {
                Home::push
            } else {
                Home::refresh
            };
            self.push_update(ch, make);
        }
    }
}

/// Death-prompted refreshes come at most this often. An overloaded machine
/// misses probes, so its peers flap dead and alive; a refresh per death
/// (every channel reported, every homed channel pushed) then fed the load
/// that made them flap (10,000 members over 50 edges on two cores).
pub const MIN_REFRESH_GAP: Duration = Duration::from_millis(250);

/// Refresh every [`REFRESH`], and as soon as [`MIN_REFRESH_GAP`] allows
/// when this edge sees a peer die: reports or updates sent through it in
/// its last moments were lost, and waiting for the next round would add up
/// to a second to a failover. Not on every route change: routes move for
/// many reasons, and on a busy mesh a refresh per change fed the load that
/// moved them.
///
/// A peer back after being dead long enough for the entries on either side
/// to expire (a partition healed) is greeted at once for every channel
/// with members here ([`EdgeCore::greet_revived`]), and the next refresh
/// comes as for a death: waiting for the homes to learn both entries again
/// and push them (a report, a digest asking for the whole entry, the
/// entry, a push: rounds of a second each) kept media from the two sides
/// of a healed partition apart for 0.8-1.6 s after its links were back.
pub async fn run_refresh(core: Arc<EdgeCore>) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dead = core.prober.dead();
    let mut was_dead = dead.borrow_and_update().clone();
    let mut dead_since: HashMap<EdgeId, Instant> = HashMap::new();
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = dead.changed() => {
                if changed.is_err() {
                    return;
                }
                let now_dead = dead.borrow_and_update().clone();
                let now = Instant::now();
                let died = now_dead.difference(&was_dead).next().is_some();
                for d in now_dead.difference(&was_dead) {
                    dead_since.insert(*d, now);
                }
                let revived: Vec<EdgeId> = was_dead
                    .difference(&now_dead)
                    .filter(|p| {
                        let long = dead_since
                            .remove(p)
                            .is_some_and(|since| now.duration_since(since) >= ENTRY_TTL);
                        // Not dead any more because it left the mesh (no
                        // longer probed) is not back.
                        long && core.prober.is_target(**p)
                    })
                    .copied()
                    .collect();
                was_dead = now_dead;
                if !revived.is_empty() {
                    core.greet_revived(&revived);
                }
                if died || !revived.is_empty() {
                    // The next tick comes at once, or when the gap allows.
                    tick.reset_at(last + MIN_REFRESH_GAP);
                }
                continue;
            }
            _ = core.directory.changed_notify.notified() => {
                tokio::time::sleep(PUSH_COALESCE).await;
                core.push_changed();
                continue;
            }
        }
        last = tokio::time::Instant::now();
        core.refresh();
    }
}
