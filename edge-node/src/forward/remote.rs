//! The other edges' entries of a channel directory, as one edge merges them
//! from the channel's homes (docs/protocol.md §9.6): whole entries and
//! deltas, each at its reporter's generation, and the homes' digests, which
//! refresh the entries this edge has and name the ones it lacks.
//!
//! Entries from several homes are a union ordered by generation: a home that
//! has just started, or lags, cannot erase or roll back what another said.
//! An entry whose members all left stays as an empty entry (a tombstone) at
//! its generation until it expires, so a lagging home's older copy cannot
//! bring its members back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use protocol::pb::{self, DirectoryMember};
use protocol::EdgeId;

pub struct RemoteEdge {
    pub members: HashMap<u64, DirectoryMember>,
    /// The reporter's generation this copy is at.
    pub generation: u64,
    pub expires: Instant,
    /// Members that subscribe: the edge needs the channel's media and
    /// messages while there is one.
    subscribers: usize,
}

impl RemoteEdge {
    pub fn has_subscribers(&self) -> bool {
        self.subscribers > 0
    }

    fn set(&mut self, m: DirectoryMember) -> bool {
        let subscribes = m.subscribes as usize;
        match self.members.get_mut(&m.session) {
            Some(old) if *old == m => false,
            Some(old) => {
                self.subscribers = self.subscribers - old.subscribes as usize + subscribes;
                *old = m;
                true
            }
            None => {
                self.subscribers += subscribes;
                self.members.insert(m.session, m);
                true
            }
        }
    }

    fn remove(&mut self, session: u64) -> bool {
        match self.members.remove(&session) {
            Some(old) => {
                self.subscribers -= old.subscribes as usize;
                true
            }
            None => false,
        }
    }
}

/// The sessions of `held` that the whole entry `fresh` no longer lists
/// (they left), on a home or an edge replacing its copy.
pub fn gone<V>(held: &HashMap<u64, V>, fresh: &[DirectoryMember]) -> Vec<u64> {
    let fresh: std::collections::HashSet<u64> = fresh.iter().map(|m| m.session).collect();
    held.keys()
        .filter(|s| !fresh.contains(s))
        .copied()
        .collect()
}

/// A lacking entry is asked for again after this long without it: the
/// answer may be lost, but a home pushes on every change (a hundred times a
/// second in a burst of joins), and asking on each would have it send the
/// whole directory as often. The same holds the other way: a home that
/// lacks this edge's entry lists it at 0 in every push until the whole
/// entry arrives, and this edge resends it at most this often per home
/// (resending on every push sent a 3,000-member channel's home a whole
/// entry a dozen times per gap).
pub const WANT_RETRY: Duration = Duration::from_millis(1_000);

/// What merging a home's update found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Sessions whose membership or tracks changed.
    pub touched: Vec<u64>,
    /// Whether the set of edges or their subscribers changed (trees to
    /// rebuild).
    pub edges_changed: bool,
    /// Edges whose whole entries to ask the home for.
    pub want: Vec<EdgeId>,
    /// The home lacks this edge's own entry: send it whole.
    pub resend_own: bool,
}

#[derive(Default)]
pub struct RemoteEntries {
    pub edges: HashMap<EdgeId, RemoteEdge>,
    /// Which edge hosts each remote session (one of them, if a session were
    /// reported by two).
    sessions: HashMap<u64, EdgeId>,
    /// Entries asked for, and when (see [`WANT_RETRY`]).
    wanted: HashMap<EdgeId, Instant>,
    /// The newest digest line of each other edge (either home's): its
    /// generation and member count, living until the expiry of the update
    /// that carried it. What the count of a big channel goes by while the
    /// members themselves are still on their way ([`Self::uncopied`]).
    lines: HashMap<EdgeId, DigestLine>,
    /// When this edge's own entry was last resent whole to each home that
    /// listed it at 0 (see [`WANT_RETRY`]).
    resent_own: HashMap<EdgeId, Instant>,
}

struct DigestLine {
    generation: u64,
    members: u32,
    expires: Instant,
}

impl RemoteEntries {
    /// A remote session's member and edge.
    pub fn member(&self, session: u64) -> Option<(EdgeId, &DirectoryMember)> {
        let edge = *self.sessions.get(&session)?;
        Some((edge, self.edges.get(&edge)?.members.get(&session)?))
    }

    /// How many more members the newest digest lines count than this
    /// edge's copies hold, over the entries whose copy is older than their
    /// line (or missing): a join reaches the count in one digest from the
    /// homes, not after its member has come through a push. Negative when
    /// members left. A copy at its line's generation may still be partial:
    /// a big whole entry comes in parts at one generation (addenda), so it
    /// counts by the line until the last part is in.
    pub fn uncopied(&self) -> isize {
        self.lines
            .iter()
            .map(|(edge, line)| match self.edges.get(edge) {
                Some(r) if r.generation > line.generation => 0,
                Some(r) => line.members as isize - r.members.len() as isize,
                None => line.members as isize,
            })
            .sum()
    }

    /// Merge a home's (or, for a hint, a member edge's) update at `now`;
    /// entries it has or refreshes live until `expires`. `me` is this edge:
    /// its own entry is its local members, never merged.
    pub fn merge_update(
        &mut self,
        me: EdgeId,
        u: &pb::DirectoryUpdate,
        now: Instant,
        expires: Instant,
    ) -> Merged {
        let mut out = Merged::default();
        for e in u.edges.iter().filter(|e| e.edge_id != me) {
            if !self.merge_entry(e, expires, &mut out) {
                out.want.push(e.edge_id);
            }
        }
        for d in &u.digest {
            if d.edge_id == me {
                out.resend_own |= d.generation == 0;
                continue;
            }
            self.read_line(d, expires);
            match self.edges.get_mut(&d.edge_id) {
                // A home that lacks an entry lists it at 0; one that lags,
                // lower: neither is news.
                _ if d.generation == 0 => {}
                Some(r) if r.generation >= d.generation => {
                    if r.generation == d.generation {
                        r.expires = r.expires.max(expires);
                    }
                }
                None if d.members == 0 => {}
                _ => out.want.push(d.edge_id),
            }
        }
        if out.resend_own {
            out.resend_own = match self.resent_own.get(&u.home_edge) {
                Some(at) => now.saturating_duration_since(*at) >= WANT_RETRY,
                None => true,
            };
            if out.resend_own {
                self.resent_own
                    .retain(|_, at| now.saturating_duration_since(*at) < WANT_RETRY);
                self.resent_own.insert(u.home_edge, now);
            }
        }
        out.want.sort_unstable();
        out.want.dedup();
        out.want.retain(|e| match self.wanted.get(e) {
            Some(at) if now.saturating_duration_since(*at) < WANT_RETRY => false,
            _ => {
                self.wanted.insert(*e, now);
                true
            }
        });
        out
    }

    /// Keep `d` if it is the newest line of its edge (a line at 0 is a
    /// home lacking the entry: no news).
    fn read_line(&mut self, d: &pb::EntryDigest, expires: Instant) {
        if d.generation == 0 {
            return;
        }
        let line = DigestLine {
            generation: d.generation,
            members: d.members,
            expires,
        };
        match self.lines.get_mut(&d.edge_id) {
            Some(l) if l.generation > d.generation => {}
            Some(l) if l.generation == d.generation => l.expires = l.expires.max(expires),
            _ => {
                self.lines.insert(d.edge_id, line);
            }
        }
    }

    /// Merge one entry; false if it is a delta this edge cannot apply (it
    /// lacks the base).
    fn merge_entry(&mut self, e: &pb::EdgeMembers, expires: Instant, out: &mut Merged) -> bool {
        let whole = e.base_generation == 0;
        let Some(r) = self.edges.get_mut(&e.edge_id) else {
            if !whole {
                return false;
            }
            self.wanted.remove(&e.edge_id);
            self.edges.insert(
                e.edge_id,
                RemoteEdge {
                    members: HashMap::new(),
                    generation: e.generation,
                    expires,
                    subscribers: 0,
                },
            );
            out.edges_changed = true;
            for m in &e.members {
                self.add(e.edge_id, m.clone(), out);
            }
            return true;
        };
        if !whole && e.base_generation == e.generation {
            // An addendum: more of the whole entry at this generation.
            if r.generation != e.generation {
                return r.generation > e.generation;
            }
            let had_subscribers = r.has_subscribers();
            for m in &e.members {
                self.add(e.edge_id, m.clone(), out);
            }
            out.edges_changed |= self.edges[&e.edge_id].has_subscribers() != had_subscribers;
            return true;
        }
        if r.generation >= e.generation {
            if r.generation == e.generation {
                r.expires = r.expires.max(expires);
            }
            return true;
        }
        // A delta applies on any copy from its base up: it holds the final
        // state of every session that changed since the base.
        if !whole && r.generation < e.base_generation {
            return false;
        }
        r.generation = e.generation;
        r.expires = r.expires.max(expires);
        let had_subscribers = r.has_subscribers();
        let edge = e.edge_id;
        if whole {
            self.wanted.remove(&edge);
            for s in gone(&r.members, &e.members) {
                self.remove(edge, s, out);
            }
        } else {
            for s in &e.left {
                self.remove(edge, *s, out);
            }
        }
        for m in &e.members {
            self.add(edge, m.clone(), out);
        }
        out.edges_changed |= self.edges[&edge].has_subscribers() != had_subscribers;
        true
    }

    fn add(&mut self, edge: EdgeId, m: DirectoryMember, out: &mut Merged) {
        let s = m.session;
        let Some(r) = self.edges.get_mut(&edge) else {
            return;
        };
        if r.set(m) {
            self.sessions.entry(s).or_insert(edge);
            out.touched.push(s);
        }
    }

    fn remove(&mut self, edge: EdgeId, s: u64, out: &mut Merged) {
        let Some(r) = self.edges.get_mut(&edge) else {
            return;
        };
        if !r.remove(s) {
            return;
        }
        out.touched.push(s);
        if self.sessions.get(&s) == Some(&edge) {
            match self.edges.iter().find(|(_, r)| r.members.contains_key(&s)) {
                Some((other, _)) => self.sessions.insert(s, *other),
                None => self.sessions.remove(&s),
            };
        }
    }

    pub fn has_expired(&self, now: Instant) -> bool {
        self.edges.values().any(|r| r.expires <= now)
            || self.lines.values().any(|l| l.expires <= now)
    }

    /// Forget the entries no home refreshed by `now`: their sessions, and
    /// whether any edge went.
    pub fn expire(&mut self, now: Instant) -> Merged {
        let mut out = Merged::default();
        let gone: Vec<EdgeId> = self
            .edges
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(e, _)| *e)
            .collect();
        self.lines.retain(|_, l| l.expires > now);
        for edge in gone {
            let sessions: Vec<u64> = self.edges[&edge].members.keys().copied().collect();
            for s in sessions {
                self.remove(edge, s, &mut out);
            }
            self.edges.remove(&edge);
            out.edges_changed = true;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: EdgeId = 1;

    fn member(session: u64, subscribes: bool) -> DirectoryMember {
        DirectoryMember {
            user_id: format!("u{session}"),
            tracks: vec![],
            subscribes,
            session,
        }
    }

    fn entry(
        edge: EdgeId,
        base: u64,
        generation: u64,
        add: &[u64],
        left: &[u64],
    ) -> pb::EdgeMembers {
        pb::EdgeMembers {
            edge_id: edge,
            members: add.iter().map(|s| member(*s, true)).collect(),
            generation,
            base_generation: base,
            left: left.to_vec(),
        }
    }

    fn update(entries: Vec<pb::EdgeMembers>, digest: &[(EdgeId, u64, u32)]) -> pb::DirectoryUpdate {
        pb::DirectoryUpdate {
            home_edge: 9,
            edges: entries,
            digest: digest
                .iter()
                .map(|(e, g, n)| pb::EntryDigest {
                    edge_id: *e,
                    generation: *g,
                    members: *n,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn sessions(r: &RemoteEntries, edge: EdgeId) -> Vec<u64> {
        let mut v: Vec<u64> = r.edges[&edge].members.keys().copied().collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn deltas_apply_from_their_base_up_and_whole_entries_replace() {
        let mut r = RemoteEntries::default();
        let now = Instant::now();
        let exp = now + Duration::from_secs(3);
        let m = r.merge_update(
            ME,
            &update(vec![entry(2, 0, 10, &[1, 2], &[])], &[]),
            now,
            exp,
        );
        assert_eq!((m.touched.len(), m.edges_changed), (2, true));
        // A delta 10 -> 12 applies; a duplicate (from the other home) or an
        // older one does nothing.
        let d = entry(2, 10, 12, &[3], &[1]);
        let m = r.merge_update(ME, &update(vec![d.clone()], &[]), now, exp);
        assert_eq!(m.touched, [1, 3]);
        assert!(!m.edges_changed, "edge 2 still has subscribers");
        assert!(r
            .merge_update(ME, &update(vec![d], &[]), now, exp)
            .touched
            .is_empty());
        assert_eq!(sessions(&r, 2), [2, 3]);
        // A delta 11 -> 13 holds every change since 11: it applies on 12.
        r.merge_update(
            ME,
            &update(vec![entry(2, 11, 13, &[4], &[])], &[]),
            now,
            exp,
        );
        assert_eq!(sessions(&r, 2), [2, 3, 4]);
        // One from 20 does not: the entry is wanted.
        let m = r.merge_update(
            ME,
            &update(vec![entry(2, 20, 21, &[5], &[])], &[]),
            now,
            exp,
        );
        assert_eq!(m.want, [2]);
        assert_eq!(sessions(&r, 2), [2, 3, 4]);
        // The whole entry replaces.
        let m = r.merge_update(
            ME,
            &update(vec![entry(2, 0, 21, &[4, 5], &[])], &[]),
            now,
            exp,
        );
        let mut t = m.touched;
        t.sort_unstable();
        assert_eq!(t, [2, 3, 5]);
        assert_eq!(sessions(&r, 2), [4, 5]);
        assert_eq!(r.member(5).map(|(e, _)| e), Some(2));
        // All left: a tombstone at its generation, no subscribers.
        let m = r.merge_update(
            ME,
            &update(vec![entry(2, 21, 22, &[], &[4, 5])], &[]),
            now,
            exp,
        );
        assert!(m.edges_changed);
        assert!(!r.edges[&2].has_subscribers());
        // A lagging home's older whole entry cannot bring them back.
        r.merge_update(
            ME,
            &update(vec![entry(2, 0, 21, &[4, 5], &[])], &[]),
            now,
            exp,
        );
        assert!(r.edges[&2].members.is_empty());
        assert!(r.member(5).is_none());
    }

    #[test]
    fn digest_counts_run_ahead_of_the_members_until_the_copies_catch_up() {
        let mut r = RemoteEntries::default();
        let now = Instant::now();
        let exp = now + Duration::from_secs(3);
        r.merge_update(ME, &update(vec![entry(2, 0, 10, &[1], &[])], &[]), now, exp);
        assert_eq!(r.uncopied(), 0);
        // The homes count 40 members at edge 2 (generation 12) and 7 at
        // edge 3, whose entry this edge lacks; a lagging home's older line
        // and this edge's own line change nothing.
        let digest = [(2, 12, 40), (3, 5, 7), (ME, 9, 100)];
        r.merge_update(ME, &update(vec![], &digest), now, exp);
        r.merge_update(ME, &update(vec![], &[(2, 11, 20)]), now, exp);
        assert_eq!(r.uncopied(), 39 + 7);
        // Edge 2's members arrive (a delta to 12): its line is copied.
        let added: Vec<u64> = (100..139).collect();
        r.merge_update(
            ME,
            &update(vec![entry(2, 10, 12, &added, &[])], &[]),
            now,
            exp,
        );
        assert_eq!(r.uncopied(), 7);
        // Members leaving count down before their delta comes.
        r.merge_update(ME, &update(vec![], &[(2, 13, 30)]), now, exp);
        assert_eq!(r.uncopied(), 7 - 10);
        // Edge 3's whole entry comes in two parts at its line's generation:
        // after the first, the count still goes by the line.
        let parts = [
            entry(3, 0, 5, &[200, 201, 202], &[]),
            entry(3, 5, 5, &[203, 204, 205, 206], &[]),
        ];
        r.merge_update(ME, &update(vec![parts[0].clone()], &[]), now, exp);
        assert_eq!(r.uncopied(), 4 - 10);
        r.merge_update(ME, &update(vec![parts[1].clone()], &[]), now, exp);
        assert_eq!(r.uncopied(), -10);
        // Lines no home refreshes expire with the update that carried them.
        assert!(r.has_expired(exp));
        r.expire(exp);
        assert_eq!(r.uncopied(), 0);
    }

    #[test]
    fn a_home_lacking_this_edge_s_entry_is_resent_it_once_per_retry() {
        let mut r = RemoteEntries::default();
        let now = Instant::now();
        let exp = now + Duration::from_secs(3);
        let lacking = |home| pb::DirectoryUpdate {
            home_edge: home,
            ..update(vec![], &[(ME, 0, 0)])
        };
        assert!(r.merge_update(ME, &lacking(9), now, exp).resend_own);
        // Every push lists it at 0 until the whole entry arrives: not
        // resent on each; the other home is its own case.
        let soon = now + WANT_RETRY / 2;
        assert!(!r.merge_update(ME, &lacking(9), soon, exp).resend_own);
        assert!(r.merge_update(ME, &lacking(8), soon, exp).resend_own);
        assert!(
            r.merge_update(ME, &lacking(9), now + WANT_RETRY, exp)
                .resend_own
        );
    }

    #[test]
    fn digests_refresh_what_matches_and_name_what_is_lacking_once_per_retry() {
        let mut r = RemoteEntries::default();
        let now = Instant::now();
        let exp = now + Duration::from_secs(3);
        r.merge_update(ME, &update(vec![entry(2, 0, 10, &[1], &[])], &[]), now, exp);
        let later = exp + Duration::from_secs(1);
        // Edge 2 at 10 (refreshed), edge 3 unknown (wanted), edge 4 empty
        // (nothing to want), edge 5 at 0 (the home lacks it), this edge at
        // 0 (the home lacks it: resend).
        let digest = [(2, 10, 1), (3, 7, 2), (4, 3, 0), (5, 0, 4), (ME, 0, 0)];
        let m = r.merge_update(ME, &update(vec![], &digest), now, later);
        assert_eq!(m.want, [3]);
        assert!(m.resend_own);
        assert_eq!(r.edges[&2].expires, later);
        assert!(
            r.merge_update(ME, &update(vec![], &digest), now, later)
                .want
                .is_empty(),
            "asked already"
        );
        let retry = now + WANT_RETRY;
        assert_eq!(
            r.merge_update(ME, &update(vec![], &digest), retry, later)
                .want,
            [3]
        );
        // A lagging home's digest does not refresh a newer copy.
        r.merge_update(ME, &update(vec![entry(2, 10, 11, &[], &[])], &[]), now, exp);
        r.merge_update(
            ME,
            &update(vec![], &[(2, 10, 1)]),
            now,
            later + later.duration_since(now),
        );
        assert_eq!(r.edges[&2].expires, later);
        // Expiry forgets the entry and its sessions.
        let m = r.expire(later);
        assert!(m.edges_changed);
        assert!(r.edges.is_empty() && r.member(1).is_none());
    }
}
