//! A channel's directory as its home edge keeps it: which edges host which
//! members, from their reports (docs/protocol.md §9.6). The home pushes what
//! changed since its last push to every edge that hosts members, with a
//! digest of every entry; every second only the digest. An edge that lacks
//! an entry asks for it whole.
//!
//! Costs: a join costs the home one member in one entry and, at the next
//! push, that member to each member edge; a refresh costs a digest of one
//! line per member edge, whatever the members.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use protocol::limits::INITIAL_HOP_LIMIT;
use protocol::pb::{self, DirectoryMember};
use protocol::{ChannelId, EdgeId};

#[derive(Default)]
pub struct Home {
    edges: HashMap<EdgeId, HomeEntry>,
    version: u64,
}

struct HomeEntry {
    members: HashMap<u64, DirectoryMember>,
    generation: u64,
    seen: Instant,
    /// A delta or summary arrived whose base this home lacks: the digest
    /// lists the entry at 0, and the reporter sends it whole.
    needs_whole: bool,
    /// The generation of the entry's last push (`None`: never pushed, the
    /// next push is whole) and the sessions changed since.
    pushed: Option<u64>,
    changed: HashSet<u64>,
    /// Deltas that came before the one they build on, applied when it
    /// comes ([`REORDER_WAIT`]), and since when the entry has been behind.
    early: Vec<pb::DirectoryReport>,
    behind_since: Option<Instant>,
}

/// How long a home holds a delta that arrived before the one it builds on,
/// waiting for that one, before asking the reporter for its whole entry.
/// Reports cross the overlay on several paths: around a suspect hop a copy
/// goes another way and can overtake the original stuck on the slow link,
/// by about the hop's stall (a few round trips). Asking at once cost the
/// whole entry for every overtaken delta: a dozen in a burst of 3,000 joins
/// on a loaded machine.
pub const REORDER_WAIT: Duration = Duration::from_millis(500);
/// Deltas held per entry while waiting ([`REORDER_WAIT`]); past this the
/// home asks for the whole entry.
pub const EARLY_KEPT: usize = 64;

impl HomeEntry {
    fn new(now: Instant) -> Self {
        HomeEntry {
            members: HashMap::new(),
            generation: 0,
            seen: now,
            needs_whole: false,
            pushed: None,
            changed: HashSet::new(),
            early: Vec::new(),
            behind_since: None,
        }
    }

    /// Apply a delta whose base is at or before the entry's generation: it
    /// holds the final state of every session that changed since its base.
    fn apply_delta(&mut self, d: &pb::DirectoryReport) {
        for s in &d.left {
            self.remove(*s);
        }
        for m in &d.members {
            self.set(m.clone());
        }
        self.generation = d.generation;
    }

    /// Apply the held deltas that build on the entry now, in turn; forget
    /// those it has passed.
    fn catch_up(&mut self) {
        loop {
            let generation = self.generation;
            self.early.retain(|d| d.generation > generation);
            let Some(i) = self
                .early
                .iter()
                .position(|d| d.base_generation <= generation)
            else {
                break;
            };
            let d = self.early.swap_remove(i);
            self.apply_delta(&d);
        }
        if self.early.is_empty() {
            self.behind_since = None;
        }
    }

    /// Hold `r`, a delta or summary from further on than the entry, if it
    /// may have overtaken the deltas between (see [`REORDER_WAIT`]);
    /// false if the entry must be asked for whole instead. A summary
    /// starts no wait: it follows its deltas on their path, so one ahead
    /// of the entry with nothing held means a delta was lost.
    fn hold_early(&mut self, r: &pb::DirectoryReport, now: Instant) -> bool {
        let waiting = self
            .behind_since
            .is_some_and(|t| now.saturating_duration_since(t) < REORDER_WAIT);
        if r.summary {
            return waiting;
        }
        if self.early.len() >= EARLY_KEPT || (self.behind_since.is_some() && !waiting) {
            return false;
        }
        self.behind_since.get_or_insert(now);
        self.early.push(r.clone());
        true
    }

    fn set(&mut self, m: DirectoryMember) {
        if self.members.get(&m.session) != Some(&m) {
            self.changed.insert(m.session);
            self.members.insert(m.session, m);
        }
    }

    fn remove(&mut self, session: u64) {
        if self.members.remove(&session).is_some() {
            self.changed.insert(session);
        }
    }

    fn whole(&self, edge: EdgeId) -> pb::EdgeMembers {
        pb::EdgeMembers {
            edge_id: edge,
            members: self.members.values().cloned().collect(),
            generation: self.generation,
            base_generation: 0,
            left: vec![],
        }
    }

    /// What changed since the last push (whole if never pushed); marks it
    /// pushed.
    fn take_push(&mut self, edge: EdgeId) -> Option<pb::EdgeMembers> {
        let out = match self.pushed {
            None => self.whole(edge),
            Some(_) if self.changed.is_empty() => return None,
            Some(base) => {
                let (mut members, mut left) = (vec![], vec![]);
                for s in &self.changed {
                    match self.members.get(s) {
                        Some(m) => members.push(m.clone()),
                        None => left.push(*s),
                    }
                }
                pb::EdgeMembers {
                    edge_id: edge,
                    members,
                    generation: self.generation,
                    base_generation: base,
                    left,
                }
            }
        };
        self.pushed = Some(self.generation);
        self.changed.clear();
        Some(out)
    }

    fn digest(&self, edge: EdgeId) -> pb::EntryDigest {
        pb::EntryDigest {
            edge_id: edge,
            generation: if self.needs_whole { 0 } else { self.generation },
            members: self.members.len() as u32,
        }
    }
}

/// Whether a report holds the reporter's whole entry (not a delta, an
/// addendum or a summary).
pub fn is_whole(r: &pb::DirectoryReport) -> bool {
    !r.summary && r.base_generation == 0
}

impl Home {
    /// Take an edge's report, received at `now`. A report older (by
    /// generation) than the entry is ignored: reports cross the overlay on
    /// several paths and may arrive out of order. A delta applies on an
    /// entry from its base up; one from further on, or a summary of a
    /// generation the home lacks, marks the entry for a whole report.
    /// Returns whether to push (the members changed, or the reporter must
    /// be asked for its whole entry).
    pub fn apply_report(&mut self, r: &pb::DirectoryReport, now: Instant) -> bool {
        let whole = is_whole(r);
        let created = !self.edges.contains_key(&r.reporter_edge);
        let e = self.edges.entry(r.reporter_edge).or_insert_with(|| {
            let mut e = HomeEntry::new(now);
            e.needs_whole = true;
            e
        });
        if !r.summary && r.base_generation != 0 && r.base_generation == r.generation {
            // An addendum: more of the whole report at this generation.
            if e.generation != r.generation || e.needs_whole {
                return false;
            }
            e.seen = now;
            for m in &r.members {
                e.set(m.clone());
            }
            return true;
        }
        if e.generation > r.generation || (e.generation == r.generation && !e.needs_whole) {
            if e.generation == r.generation {
                e.seen = now;
            }
            return false;
        }
        e.seen = now;
        let ahead = !whole && (r.summary || e.generation < r.base_generation);
        if ahead && !e.needs_whole && !created && e.hold_early(r, now) {
            return false;
        }
        if ahead || (!whole && e.needs_whole) {
            // The home lacks what the report builds on.
            e.early.clear();
            e.behind_since = None;
            return !std::mem::replace(&mut e.needs_whole, true) || created;
        }
        if whole {
            for s in super::remote::gone(&e.members, &r.members) {
                e.remove(s);
            }
            e.needs_whole = false;
            for m in &r.members {
                e.set(m.clone());
            }
            e.generation = r.generation;
        } else {
            e.apply_delta(r);
        }
        e.catch_up();
        true
    }

    /// Whether the home lacks `reporter`'s entry and lists it at 0 until
    /// the whole entry comes.
    pub fn wants_whole(&self, reporter: EdgeId) -> bool {
        self.edges.get(&reporter).is_some_and(|e| e.needs_whole)
    }

    /// An update with `edges` and the digest: of every entry, or (`full`
    /// false, a push) only the entries wanted whole, so their reporters
    /// resend them at once. Pushes come a hundred a second in a burst of
    /// joins; a full digest on each cost more than the joins they carry.
    fn update(
        &mut self,
        me: EdgeId,
        channel: ChannelId,
        edges: Vec<pb::EdgeMembers>,
        full: bool,
    ) -> pb::DirectoryUpdate {
        self.version += 1;
        let mut digest: Vec<pb::EntryDigest> = self
            .edges
            .iter()
            .filter(|(_, e)| full || e.needs_whole)
            .map(|(id, e)| e.digest(*id))
            .collect();
        digest.sort_unstable_by_key(|d| d.edge_id);
        pb::DirectoryUpdate {
            home_edge: me,
            channel_id: channel.0,
            edges,
            version: self.version,
            hop_limit: INITIAL_HOP_LIMIT as u32,
            tree: vec![],
            greeting: false,
            digest,
        }
    }

    /// The edges an update goes to: every edge hosting members, and every
    /// edge whose whole entry the home needs (the digest asks for it).
    fn dests(&self) -> Vec<EdgeId> {
        let mut dests: Vec<EdgeId> = self
            .edges
            .iter()
            .filter(|(_, e)| !e.members.is_empty() || e.needs_whole)
            .map(|(id, _)| *id)
            .collect();
        dests.sort_unstable();
        dests
    }

    /// The push after a change, from the home at `me`: the entries changed
    /// since the last push and the digest; and the edges it goes to.
    pub fn push(&mut self, me: EdgeId, channel: ChannelId) -> (pb::DirectoryUpdate, Vec<EdgeId>) {
        let mut edges: Vec<pb::EdgeMembers> = self
            .edges
            .iter_mut()
            .filter(|(_, e)| !e.needs_whole)
            .filter_map(|(id, e)| e.take_push(*id))
            .collect();
        edges.sort_unstable_by_key(|e| e.edge_id);
        (self.update(me, channel, edges, false), self.dests())
    }

    /// The refresh: the digest alone; and the edges it goes to.
    pub fn refresh(
        &mut self,
        me: EdgeId,
        channel: ChannelId,
    ) -> (pb::DirectoryUpdate, Vec<EdgeId>) {
        (self.update(me, channel, vec![], true), self.dests())
    }

    /// The whole entries of `wanted` the home has (an edge asked), with the
    /// digest.
    pub fn wholes(
        &mut self,
        me: EdgeId,
        channel: ChannelId,
        wanted: &[u32],
    ) -> pb::DirectoryUpdate {
        let edges = wanted
            .iter()
            .filter_map(|id| {
                let e = self.edges.get(id)?;
                (!e.needs_whole).then(|| e.whole(*id))
            })
            .collect();
        self.update(me, channel, edges, true)
    }

    /// Every entry the home has whole, for `reporter`, whose report was
    /// whole: it has just taken the channel up (or again) and knows no other
    /// entry yet; waiting for the next digest to ask would leave its
    /// members' messages without destinations for up to a second.
    pub fn wholes_for(
        &mut self,
        me: EdgeId,
        channel: ChannelId,
        reporter: EdgeId,
    ) -> pb::DirectoryUpdate {
        let others: Vec<EdgeId> = self
            .edges
            .keys()
            .filter(|e| **e != reporter)
            .copied()
            .collect();
        self.wholes(me, channel, &others)
    }

    /// Forget edges whose last report is `ttl` old at `now` (a dead edge's
    /// members vanish). Returns whether the home is left empty.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> bool {
        self.edges
            .retain(|_, e| now.saturating_duration_since(e.seen) < ttl);
        self.edges.is_empty()
    }
}

/// Largest directory update sent in one relay frame, in encoded bytes: a
/// quarter below [`protocol::limits::MAX_FRAME_LEN`], leaving room for the
/// route tree a relay frame adds.
pub const UPDATE_BUDGET: usize = protocol::limits::MAX_FRAME_LEN * 3 / 4;

/// `u` as updates of at most [`UPDATE_BUDGET`] bytes each, its entries dealt
/// out in order, each part with the digest (a new edge's first answer holds
/// every entry of a big channel: 10,000 members are about 400 KB). A whole
/// entry bigger than a part (thousands of members of the channel on one
/// edge) goes as its first members, whole, then addenda ([`chunk_whole`]).
pub fn split(u: pb::DirectoryUpdate) -> Vec<pb::DirectoryUpdate> {
    use prost::Message;
    if u.encoded_len() <= UPDATE_BUDGET {
        return vec![u];
    }
    let bare = pb::DirectoryUpdate {
        edges: vec![],
        ..u.clone()
    };
    let base = bare.encoded_len();
    let mut parts = vec![];
    let mut part = bare.clone();
    let mut size = base;
    let entries = u.edges.into_iter().flat_map(|e| {
        if e.base_generation != 0 || e.encoded_len() + base <= UPDATE_BUDGET {
            return vec![e];
        }
        let (edge, generation) = (e.edge_id, e.generation);
        chunk_whole(e.members, UPDATE_BUDGET - base)
            .map(|(base_generation, members)| pb::EdgeMembers {
                edge_id: edge,
                members,
                generation,
                base_generation: base_generation * generation,
                left: vec![],
            })
            .collect()
    });
    for e in entries {
        let n = e.encoded_len() + 8;
        if size + n > UPDATE_BUDGET && !part.edges.is_empty() {
            parts.push(std::mem::replace(&mut part, bare.clone()));
            size = base;
        }
        size += n;
        part.edges.push(e);
    }
    parts.push(part);
    parts
}

/// A whole report (`members` of `r`, base 0) of more than
/// [`UPDATE_BUDGET`] bytes as its first members, whole, then addenda.
pub fn split_report(r: pb::DirectoryReport) -> Vec<pb::DirectoryReport> {
    use prost::Message;
    if !is_whole(&r) || r.encoded_len() <= UPDATE_BUDGET {
        return vec![r];
    }
    let bare = pb::DirectoryReport {
        members: vec![],
        ..r.clone()
    };
    chunk_whole(r.members, UPDATE_BUDGET - bare.encoded_len())
        .map(|(addendum, members)| pb::DirectoryReport {
            members,
            base_generation: addendum * r.generation,
            ..bare.clone()
        })
        .collect()
}

/// `members` in runs of at most `budget` encoded bytes, each with 0 for the
/// first (the whole entry starts with it) and 1 for the others (addenda:
/// deltas whose base is their own generation, docs/protocol.md §9.6).
fn chunk_whole(
    members: Vec<DirectoryMember>,
    budget: usize,
) -> impl Iterator<Item = (u64, Vec<DirectoryMember>)> {
    use prost::Message;
    let mut runs: Vec<Vec<DirectoryMember>> = vec![vec![]];
    let mut size = 0;
    for m in members {
        // The field tag and length prefix of a repeated member.
        let n = m.encoded_len() + 4;
        if size + n > budget && !runs.last().is_some_and(Vec::is_empty) {
            runs.push(vec![]);
            size = 0;
        }
        size += n;
        if let Some(run) = runs.last_mut() {
            run.push(m);
        }
    }
    runs.into_iter()
        .enumerate()
        .map(|(i, run)| (u64::from(i > 0), run))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(session: u64) -> DirectoryMember {
        DirectoryMember {
            user_id: format!("u{session}"),
            tracks: vec![],
            subscribes: true,
            session,
        }
    }

    fn whole(edge: EdgeId, generation: u64, sessions: &[u64]) -> pb::DirectoryReport {
        pb::DirectoryReport {
            reporter_edge: edge,
            channel_id: 7,
            members: sessions.iter().map(|s| member(*s)).collect(),
            generation,
            ..Default::default()
        }
    }

    fn delta(
        edge: EdgeId,
        base: u64,
        generation: u64,
        add: &[u64],
        left: &[u64],
    ) -> pb::DirectoryReport {
        pb::DirectoryReport {
            base_generation: base,
            left: left.to_vec(),
            ..whole(edge, generation, add)
        }
    }

    fn summary(edge: EdgeId, generation: u64) -> pb::DirectoryReport {
        pb::DirectoryReport {
            summary: true,
            ..whole(edge, generation, &[])
        }
    }

    /// (edge, generation, members) of a digest.
    fn digest(u: &pb::DirectoryUpdate) -> Vec<(EdgeId, u64, u32)> {
        u.digest
            .iter()
            .map(|d| (d.edge_id, d.generation, d.members))
            .collect()
    }

    /// (edge, base, generation, members, left) of each entry.
    fn entries(u: &pb::DirectoryUpdate) -> Vec<(EdgeId, u64, u64, usize, usize)> {
        u.edges
            .iter()
            .map(|e| {
                (
                    e.edge_id,
                    e.base_generation,
                    e.generation,
                    e.members.len(),
                    e.left.len(),
                )
            })
            .collect()
    }

    #[test]
    fn pushes_carry_what_changed_since_the_last_push_and_refreshes_the_digest() {
        let mut home = Home::default();
        let t0 = Instant::now();
        assert!(home.apply_report(&whole(2, 10, &[1, 2]), t0));
        assert!(home.apply_report(&whole(3, 5, &[3]), t0));
        let (u, dests) = home.push(1, ChannelId(7));
        assert_eq!(
            entries(&u),
            [(2, 0, 10, 2, 0), (3, 0, 5, 1, 0)],
            "first push: whole"
        );
        assert!(
            digest(&u).is_empty(),
            "a push lists only entries wanted whole"
        );
        assert_eq!(dests, [2, 3]);
        // Two deltas from edge 2 make one push of the net change.
        assert!(home.apply_report(&delta(2, 10, 11, &[4], &[]), t0));
        assert!(home.apply_report(&delta(2, 11, 12, &[], &[1]), t0));
        assert!(
            !home.apply_report(&delta(2, 11, 12, &[], &[1]), t0),
            "a duplicate"
        );
        assert!(!home.apply_report(&whole(2, 9, &[]), t0), "an older report");
        let (u, _) = home.push(1, ChannelId(7));
        assert_eq!(entries(&u), [(2, 10, 12, 1, 1)]);
        // A refresh is the digest alone; a summary at the entry's
        // generation changes nothing.
        assert!(!home.apply_report(&summary(2, 12), t0));
        let (u, dests) = home.refresh(1, ChannelId(7));
        assert!(u.edges.is_empty());
        assert_eq!(digest(&u), [(2, 12, 2), (3, 5, 1)]);
        assert_eq!(dests, [2, 3]);
        // An edge that lacks edge 2's entry asks for it whole.
        let u = home.wholes(1, ChannelId(7), &[2, 9]);
        assert_eq!(entries(&u), [(2, 0, 12, 2, 0)]);
        // Edge 3's members leave: it stays a destination no more.
        assert!(home.apply_report(&delta(3, 5, 6, &[], &[3]), t0));
        assert_eq!(home.push(1, ChannelId(7)).1, [2]);
    }

    #[test]
    fn a_report_the_home_cannot_build_on_asks_for_the_whole_entry() {
        let mut home = Home::default();
        let t0 = Instant::now();
        // A home that has just started hears a summary: it lists the edge
        // at 0 and sends it the digest, once.
        assert!(home.apply_report(&summary(2, 10), t0));
        assert!(!home.apply_report(&summary(2, 10), t0));
        let (u, dests) = home.push(1, ChannelId(7));
        assert!(u.edges.is_empty());
        assert_eq!(digest(&u), [(2, 0, 0)]);
        assert_eq!(dests, [2]);
        assert!(home.apply_report(&whole(2, 10, &[1]), t0));
        // A delta from further on than the home has is held for the one
        // before it; when that has not come within the wait, the next
        // report asks for the whole entry, and the entry's stale members
        // are kept but not pushed.
        assert!(!home.apply_report(&delta(2, 12, 13, &[5], &[]), t0));
        assert!(!home.wants_whole(2));
        let late = t0 + REORDER_WAIT;
        assert!(home.apply_report(&summary(2, 13), late));
        assert!(home.wants_whole(2));
        let (u, _) = home.push(1, ChannelId(7));
        assert!(u.edges.is_empty());
        assert_eq!(digest(&u), [(2, 0, 1)]);
        assert!(home.wholes(1, ChannelId(7), &[2]).edges.is_empty());
        assert!(home.apply_report(&whole(2, 13, &[1, 5]), t0));
        assert_eq!(entries(&home.push(1, ChannelId(7)).0), [(2, 0, 13, 2, 0)]);
    }

    #[test]
    fn deltas_that_overtook_the_one_they_build_on_wait_for_it() {
        let mut home = Home::default();
        let t0 = Instant::now();
        assert!(home.apply_report(&whole(2, 10, &[1]), t0));
        home.push(1, ChannelId(7));
        // 11 -> 12 and 12 -> 13 come before 10 -> 11, and a summary of 13
        // before it too: held, nothing asked.
        assert!(!home.apply_report(&delta(2, 12, 13, &[4], &[1]), t0));
        assert!(!home.apply_report(&delta(2, 11, 12, &[3], &[]), t0));
        assert!(!home.apply_report(&summary(2, 13), t0));
        assert!(!home.wants_whole(2));
        assert!(home.apply_report(&delta(2, 10, 11, &[2], &[]), t0));
        assert_eq!(
            entries(&home.push(1, ChannelId(7)).0),
            [(2, 10, 13, 3, 1)],
            "the three deltas as one"
        );
        let members = home.wholes(1, ChannelId(7), &[2]).edges;
        let mut sessions: Vec<u64> = members[0].members.iter().map(|m| m.session).collect();
        sessions.sort_unstable();
        assert_eq!(sessions, [2, 3, 4]);
        // A summary ahead with nothing held is a lost delta: whole at once.
        assert!(home.apply_report(&summary(2, 15), t0));
        assert!(home.wants_whole(2));
        // So is a gap that outlives the wait, and more held deltas than
        // EARLY_KEPT.
        let mut home = Home::default();
        home.apply_report(&whole(3, 10, &[1]), t0);
        for g in 0..EARLY_KEPT as u64 {
            assert!(!home.apply_report(&delta(3, 20 + g, 21 + g, &[], &[]), t0));
        }
        assert!(home.apply_report(&delta(3, 90, 91, &[], &[]), t0));
        assert!(home.wants_whole(3));
        let mut home = Home::default();
        home.apply_report(&whole(3, 10, &[1]), t0);
        assert!(!home.apply_report(&delta(3, 12, 13, &[], &[]), t0));
        assert!(home.apply_report(&delta(3, 13, 14, &[], &[]), t0 + REORDER_WAIT));
        assert!(home.wants_whole(3));
    }

    #[test]
    fn big_updates_are_split_by_entries_under_the_budget() {
        use prost::Message;
        let mut home = Home::default();
        let t0 = Instant::now();
        let per_edge: Vec<u64> = (0..2_000).collect();
        for edge in 2..12 {
            let sessions: Vec<u64> = per_edge.iter().map(|s| s + edge as u64 * 10_000).collect();
            home.apply_report(&whole(edge, 1, &sessions), t0);
        }
        let (u, _) = home.push(1, ChannelId(7));
        assert!(u.encoded_len() > UPDATE_BUDGET);
        let parts = split(u.clone());
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.encoded_len() <= UPDATE_BUDGET));
        assert!(parts.iter().all(|p| p.digest == u.digest));
        let entries: Vec<pb::EdgeMembers> = parts.into_iter().flat_map(|p| p.edges).collect();
        assert_eq!(entries, u.edges);
    }

    #[test]
    fn an_entry_bigger_than_a_frame_goes_whole_then_in_addenda_and_arrives_whole() {
        use prost::Message;
        let t0 = Instant::now();
        let sessions: Vec<u64> = (0..12_000).collect();
        // The reporter's side: one report too big for a frame.
        let parts = split_report(whole(2, 10, &sessions));
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.encoded_len() <= UPDATE_BUDGET));
        assert_eq!(parts[0].base_generation, 0);
        assert!(parts[1..].iter().all(|p| p.base_generation == 10));
        let mut home = Home::default();
        for p in &parts {
            assert!(home.apply_report(p, t0));
        }
        // An addendum of another generation changes nothing.
        assert!(!home.apply_report(&delta(2, 9, 9, &[99_999], &[]), t0));
        // The home's side: its push of that entry, split too, rebuilds it
        // on an edge.
        let (u, _) = home.push(1, ChannelId(7));
        assert_eq!(u.edges[0].members.len(), sessions.len());
        let updates = split(u);
        assert!(updates.len() > 1);
        let mut remote = crate::forward::remote::RemoteEntries::default();
        for u in &updates {
            assert!(u.encoded_len() <= UPDATE_BUDGET);
            remote.merge_update(5, u, t0, t0 + ttl());
        }
        assert_eq!(remote.edges[&2].members.len(), sessions.len());
        assert_eq!(remote.edges[&2].generation, 10);
    }

    fn ttl() -> Duration {
        Duration::from_secs(3)
    }

    #[test]
    fn entries_expire_unrefreshed() {
        let mut home = Home::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(3);
        home.apply_report(&whole(2, 10, &[1]), t0);
        home.apply_report(&whole(3, 10, &[2]), t0);
        home.apply_report(&summary(3, 10), t0 + ttl);
        assert!(!home.expire(t0 + ttl, ttl));
        assert_eq!(home.refresh(1, ChannelId(7)).1, [3], "edge 2 expired");
        assert!(home.expire(t0 + 2 * ttl, ttl));
    }
}
