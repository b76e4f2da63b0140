//! What the client knows of a channel's other members: their sessions and
//! their tracks, and the events that report changes to the app.
//!
//! Events are per user and per (user, track name), not per session or track
//! key: a member that reconnects shows up with a new session (and its tracks
//! with new keys) before or after the old ones go, and the app should see
//! neither a leave nor a track that vanishes and comes back. Media datagrams
//! name tracks by key, so every key stays mapped (in `Shared::tracks`) for
//! the media reader. Our own user id is never a member to us (our previous
//! session may linger on a remote edge for a moment).
//!
//! In a large channel (docs/protocol.md §4.3, "Large channels") only members
//! that publish are listed; the others are counted ([`Census`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::limits::MAX_MEMBER_EDGES;
use protocol::pb;

use crate::connection::{RemoteTrack, Shared};
use crate::events::{Event, TrackKind};
use crate::stream::Stream;

/// A channel's member sessions (ours included) and whether it is large, as
/// last heard (`Joined`, `MemberCount`); shared with its handles.
#[derive(Debug, Default)]
pub(crate) struct Census {
    pub members: AtomicU64,
    pub large: AtomicBool,
}

pub(crate) struct Roster {
    channel_id: u64,
    channel: String,
    /// Our own user id in the channel.
    pub me: String,
    /// Other members: user id -> sessions.
    members: HashMap<String, HashSet<u64>>,
    /// The edge hosting each other member's session (`Member.edge_id`, 0
    /// read as `my_edge`): named on a rejoin (`Join.member_edges`).
    edges: HashMap<u64, u32>,
    /// The edge this client is on (`Joined.edge_id`; 0 until known). Its
    /// other members must be named too when the client moves: they stay
    /// there, and the new edge may not have heard of them yet.
    my_edge: u32,
    /// Remote tracks: key -> (user, track name).
    remote: HashMap<u64, (String, String)>,
    /// How many keys name each (user, track name), and the stream they
    /// share.
    names: HashMap<(String, String), (usize, Arc<Stream>)>,
    /// Sessions (with their user) and track keys known before a rejoin
    /// that the new edge did not list: kept until `unconfirmed_until`
    /// unless it announces them meanwhile ([`REJOIN_GRACE`]).
    unconfirmed_sessions: HashMap<u64, String>,
    unconfirmed_keys: HashSet<u64>,
    unconfirmed_until: Option<Instant>,
    census: Arc<Census>,
    /// Sessions hidden in a large channel (they publish nothing; at most
    /// [`MAX_HIDDEN`]): one announced again never left, so it is not a new
    /// session to replay messages to.
    hidden: HashSet<u64>,
}

/// After a rejoin, how long a member or track the new edge did not list
/// is kept before it counts as gone. An edge a client has just moved to
/// knows only what the edges the client named (`Join.member_edges`) and the
/// channel's homes have told it yet; the homes push every member within a
/// second, and an entry lives 3.5 s. Dropping the rest at once would stop
/// their media still arriving over the old link, and tell the app they
/// left and came back.
pub(crate) const REJOIN_GRACE: Duration = Duration::from_millis(3_500);

/// Hidden sessions remembered at most: past that, one announced again gets
/// a replay it does not need (receivers drop the duplicates).
const MAX_HIDDEN: usize = 4_096;

impl Roster {
    pub fn new(channel_id: u64, channel: &str, me: &str) -> Self {
        Roster {
            channel_id,
            channel: channel.to_string(),
            me: me.to_string(),
            members: HashMap::new(),
            edges: HashMap::new(),
            my_edge: 0,
            remote: HashMap::new(),
            names: HashMap::new(),
            unconfirmed_sessions: HashMap::new(),
            unconfirmed_keys: HashSet::new(),
            unconfirmed_until: None,
            census: Arc::default(),
            hidden: HashSet::new(),
        }
    }

    pub fn census(&self) -> Arc<Census> {
        self.census.clone()
    }

    /// Whether the channel is large (members publishing nothing are
    /// counted, not announced).
    pub fn is_large(&self) -> bool {
        self.census.large.load(Relaxed)
    }

    fn emit(&self, shared: &Shared, e: Event) {
        shared.events.push(e);
    }

    pub fn add_track(&mut self, shared: &Shared, user: &str, t: &pb::TrackInfo) {
        self.unconfirmed_keys.remove(&t.track_key);
        if user == self.me || self.remote.contains_key(&t.track_key) {
            return;
        }
        self.remote
            .insert(t.track_key, (user.to_string(), t.name.clone()));
        let (n, stream) = self
            .names
            .entry((user.to_string(), t.name.clone()))
            .or_default();
        *n += 1;
        shared.tracks_mut().insert(
            t.track_key,
            Arc::new(RemoteTrack {
                channel_id: self.channel_id,
                channel: self.channel.clone(),
                user: user.to_string(),
                name: t.name.clone(),
                lateness: Default::default(),
                stream: stream.clone(),
            }),
        );
        if *n == 1 {
            self.emit(
                shared,
                Event::TrackAvailable {
                    channel: self.channel.clone(),
                    user: user.to_string(),
                    track: t.name.clone(),
                    kind: TrackKind::try_from(t.kind).unwrap_or(TrackKind::Unspecified),
                },
            );
        }
    }

    pub fn remove_track(&mut self, shared: &Shared, key: u64) {
        self.unconfirmed_keys.remove(&key);
        let Some((user, name)) = self.remote.remove(&key) else {
            return;
        };
        shared.tracks_mut().remove(&key);
        let id = (user, name);
        let left = match self.names.get_mut(&id) {
            Some((n, _)) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if left == 0 {
            self.names.remove(&id);
            let (user, track) = id;
            self.emit(
                shared,
                Event::TrackUnavailable {
                    channel: self.channel.clone(),
                    user,
                    track,
                },
            );
        }
    }

    /// The edges hosting the other members, as this client last heard
    /// (at most [`MAX_MEMBER_EDGES`], lowest ids first): on a rejoin, the
    /// new edge tells them directly that it hosts us now. In a large
    /// channel the edge we are on is named anyway: members that publish
    /// nothing are not listed, and some are likely there.
    pub fn member_edges(&self) -> Vec<u32> {
        let ours = self.host(0).filter(|_| self.census.large.load(Relaxed));
        let mut edges: Vec<u32> = self.edges.values().copied().chain(ours).collect();
        edges.sort_unstable();
        edges.dedup();
        edges.truncate(MAX_MEMBER_EDGES);
        edges
    }

    /// The edge this client is on, as its `Joined` said (0 until known).
    pub fn my_edge(&self) -> u32 {
        self.my_edge
    }

    /// The edge an announcement's `edge_id` names (0: the one we are on).
    fn host(&self, edge_id: u32) -> Option<u32> {
        Some(if edge_id == 0 { self.my_edge } else { edge_id }).filter(|&e| e != 0)
    }

    /// A member session appeared (on edge `edge`, 0: ours); true if it is
    /// new (neither known nor hidden before): it may have missed messages.
    pub fn member_joined(&mut self, shared: &Shared, user: &str, session: u64, edge: u32) -> bool {
        if user == self.me {
            return false;
        }
        self.unconfirmed_sessions.remove(&session);
        if let Some(e) = self.host(edge) {
            self.edges.insert(session, e);
        }
        let sessions = self.members.entry(user.to_string()).or_default();
        let first = sessions.is_empty();
        if !sessions.insert(session) {
            return false;
        }
        if first {
            self.emit(
                shared,
                Event::MemberJoined {
                    channel: self.channel.clone(),
                    user: user.to_string(),
                },
            );
        }
        !self.hidden.remove(&session)
    }

    /// A member session left, or (`hidden`) is no longer listed in a large
    /// channel: it publishes nothing any more.
    pub fn member_left(&mut self, shared: &Shared, user: &str, session: u64, hidden: bool) {
        self.unconfirmed_sessions.remove(&session);
        if hidden {
            self.hide(session);
        }
        let Some(sessions) = self.members.get_mut(user) else {
            return;
        };
        sessions.remove(&session);
        self.edges.remove(&session);
        if !sessions.is_empty() {
            return;
        }
        self.members.remove(user);
        // Its tracks are gone with it (the edge says so too; be sure).
        let stale: Vec<u64> = self
            .remote
            .iter()
            .filter(|(_, (u, _))| u == user)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            self.remove_track(shared, k);
        }
        self.emit(
            shared,
            Event::MemberLeft {
                channel: self.channel.clone(),
                user: user.to_string(),
                hidden,
            },
        );
    }

    fn hide(&mut self, session: u64) {
        if self.hidden.len() < MAX_HIDDEN {
            self.hidden.insert(session);
        }
    }

    /// The channel's member count and size (from `Joined` or
    /// `MemberCount`; reported if changed). In a large channel the members
    /// that publish nothing are not listed: they go, without `MemberLeft`.
    pub fn set_count(&mut self, shared: &Shared, members: u64, large: bool) {
        let was = (
            self.census.members.swap(members, Relaxed),
            self.census.large.swap(large, Relaxed),
        );
        if was != (members, large) {
            self.emit(
                shared,
                Event::MemberCount {
                    channel: self.channel.clone(),
                    members,
                    large,
                },
            );
        }
        if !large {
            return;
        }
        let publishing: HashSet<&String> = self.remote.values().map(|(u, _)| u).collect();
        let quiet: Vec<String> = self
            .members
            .keys()
            .filter(|u| !publishing.contains(u))
            .cloned()
            .collect();
        for user in quiet {
            for s in self.members.remove(&user).unwrap_or_default() {
                self.edges.remove(&s);
                self.unconfirmed_sessions.remove(&s);
                self.hide(s);
            }
        }
    }

    /// Adopt a `Joined`: its members (see [`Roster::reconcile`]; what it
    /// does not list is kept for [`REJOIN_GRACE`]) and its count.
    pub fn adopt(&mut self, shared: &Shared, j: &pb::Joined) {
        self.reconcile(shared, j.edge_id, &j.members, Instant::now() + REJOIN_GRACE);
        self.set_count(shared, j.member_count, j.large);
    }

    /// Adopt the member list of a `Joined` from edge `edge`, reporting only
    /// what changed.
    /// Sessions of our own user id (e.g. our previous session, still known
    /// to a remote edge for a moment) are not members to us. Sessions and
    /// tracks known before and not listed are kept, unconfirmed, until
    /// `grace_until` ([`REJOIN_GRACE`], [`Roster::expire_unconfirmed`]).
    pub fn reconcile(
        &mut self,
        shared: &Shared,
        edge: u32,
        members: &[pb::Member],
        grace_until: Instant,
    ) {
        self.my_edge = edge;
        let mut now: HashMap<String, HashSet<u64>> = HashMap::new();
        let mut keys: HashSet<u64> = HashSet::new();
        let members: Vec<&pb::Member> = members.iter().filter(|m| m.user_id != self.me).collect();
        let old_edges = std::mem::take(&mut self.edges);
        for m in &members {
            now.entry(m.user_id.clone()).or_default().insert(m.session);
            if let Some(e) = self.host(m.edge_id) {
                self.edges.insert(m.session, e);
            }
        }
        let listed: HashSet<u64> = now.values().flatten().copied().collect();
        for (user, sessions) in &self.members {
            for &s in sessions.iter().filter(|s| !listed.contains(s)) {
                now.entry(user.clone()).or_default().insert(s);
                self.unconfirmed_sessions.insert(s, user.clone());
                if let Some(&e) = old_edges.get(&s) {
                    self.edges.insert(s, e);
                }
            }
        }
        for s in &listed {
            self.unconfirmed_sessions.remove(s);
        }
        for user in now.keys() {
            if !self.members.contains_key(user) {
                self.emit(
                    shared,
                    Event::MemberJoined {
                        channel: self.channel.clone(),
                        user: user.clone(),
                    },
                );
            }
        }
        for m in &members {
            for t in &m.tracks {
                keys.insert(t.track_key);
                self.add_track(shared, &m.user_id, t);
            }
        }
        let unlisted = self.remote.keys().filter(|k| !keys.contains(k));
        self.unconfirmed_keys.extend(unlisted);
        self.members = now;
        self.unconfirmed_until = Some(grace_until);
    }

    /// Sessions and tracks a rejoin's new edge has not confirmed by
    /// `now`, past their grace, are gone (with the events that says).
    pub fn expire_unconfirmed(&mut self, shared: &Shared, now: Instant) {
        if self.unconfirmed_until.is_none_or(|t| now < t) {
            return;
        }
        self.unconfirmed_until = None;
        for k in std::mem::take(&mut self.unconfirmed_keys) {
            self.remove_track(shared, k);
        }
        for (s, user) in std::mem::take(&mut self.unconfirmed_sessions) {
            self.member_left(shared, &user, s, false);
        }
    }

    /// Forget every remote track (no events: the channel is going away).
    pub fn clear(&mut self, shared: &Shared) {
        let mut map = shared.tracks_mut();
        for k in self.remote.keys() {
            map.remove(k);
        }
        self.remote.clear();
        self.names.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(user: &str, session: u64, tracks: &[(&str, u64)]) -> pb::Member {
        pb::Member {
            user_id: user.into(),
            session,
            tracks: tracks.iter().map(|(n, k)| track(n, *k)).collect(),
            edge_id: 0,
        }
    }

    fn on_edge(edge: u32, m: pb::Member) -> pb::Member {
        pb::Member { edge_id: edge, ..m }
    }

    fn track(name: &str, key: u64) -> pb::TrackInfo {
        pb::TrackInfo {
            name: name.into(),
            track_key: key,
            kind: pb::TrackKind::Video as i32,
        }
    }

    fn events(shared: &Shared) -> Vec<Event> {
        std::iter::from_fn(|| shared.events.try_next()).collect()
    }

    fn joined(user: &str) -> Event {
        Event::MemberJoined {
            channel: "room".into(),
            user: user.into(),
        }
    }

    fn left(user: &str) -> Event {
        Event::MemberLeft {
            channel: "room".into(),
            user: user.into(),
            hidden: false,
        }
    }

    fn available(user: &str, name: &str) -> Event {
        Event::TrackAvailable {
            channel: "room".into(),
            user: user.into(),
            track: name.into(),
            kind: TrackKind::Video,
        }
    }

    fn unavailable(user: &str, name: &str) -> Event {
        Event::TrackUnavailable {
            channel: "room".into(),
            user: user.into(),
            track: name.into(),
        }
    }

    /// A grace that lasts the whole test.
    fn later() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    fn mapped(shared: &Shared, key: u64) -> Option<(String, String)> {
        shared
            .tracks
            .read()
            .unwrap()
            .get(&key)
            .map(|t| (t.user.clone(), t.name.clone()))
    }

    #[test]
    fn the_member_edges_named_on_a_rejoin_follow_the_sessions() {
        let shared = Shared::new(16);
        let mut r = Roster::new(1, "room", "me");
        // On edge 2: bob on edge 3, carol on ours (0), our own old session
        // on edge 5.
        r.reconcile(
            &shared,
            2,
            &[
                on_edge(3, member("bob", 1, &[])),
                member("carol", 2, &[]),
                on_edge(5, member("me", 9, &[])),
            ],
            later(),
        );
        // Carol stays on edge 2 when we move: it is named too.
        assert_eq!(r.member_edges(), [2, 3]);
        assert!(r.member_joined(&shared, "dave", 4, 7));
        assert!(r.member_joined(&shared, "erin", 6, 3));
        assert!(r.member_joined(&shared, "fay", 11, 0));
        assert_eq!(r.member_edges(), [2, 3, 7], "each edge once");
        r.member_left(&shared, "bob", 1, false);
        r.member_left(&shared, "erin", 6, false);
        r.member_left(&shared, "carol", 2, false);
        r.member_left(&shared, "fay", 11, false);
        assert_eq!(r.member_edges(), [7]);
        // A rejoin's member list (here from edge 9) adds to what was known;
        // what it does not list goes after the grace.
        r.reconcile(&shared, 9, &[on_edge(8, member("dave", 10, &[]))], later());
        assert_eq!(r.member_edges(), [7, 8]);
        r.expire_unconfirmed(&shared, later() + Duration::from_secs(1));
        assert_eq!(r.member_edges(), [8]);
        // Before any Joined, an edge 0 names nothing.
        let mut fresh = Roster::new(1, "room", "me");
        fresh.member_joined(&shared, "gil", 12, 0);
        assert!(fresh.member_edges().is_empty());
        // At most MAX_MEMBER_EDGES, lowest first.
        for s in 0..40u64 {
            r.member_joined(&shared, &format!("u{s}"), 100 + s, 100 + s as u32);
        }
        let edges = r.member_edges();
        assert_eq!(edges.len(), MAX_MEMBER_EDGES);
        assert_eq!(edges[0], 8);
    }

    #[test]
    fn first_join_reports_members_and_tracks_but_not_ourselves() {
        let shared = Shared::new(16);
        let mut r = Roster::new(1, "room", "me");
        r.reconcile(
            &shared,
            0,
            &[
                member("bob", 1, &[("cam", 10)]),
                member("me", 2, &[("mic", 11)]),
            ],
            later(),
        );
        assert_eq!(
            events(&shared),
            vec![joined("bob"), available("bob", "cam")]
        );
        assert_eq!(mapped(&shared, 10), Some(("bob".into(), "cam".into())));
        assert_eq!(mapped(&shared, 11), None);
        assert!(!r.member_joined(&shared, "me", 3, 0));
        assert!(events(&shared).is_empty());
    }

    #[test]
    fn a_reconnecting_member_is_neither_gone_nor_new() {
        let shared = Shared::new(16);
        let mut r = Roster::new(1, "room", "me");
        r.reconcile(&shared, 0, &[member("bob", 1, &[("cam", 10)])], later());
        events(&shared);
        // New session and key first, old ones go after.
        assert!(r.member_joined(&shared, "bob", 2, 0));
        assert!(!r.member_joined(&shared, "bob", 2, 0), "known session");
        r.add_track(&shared, "bob", &track("cam", 20));
        r.remove_track(&shared, 10);
        r.member_left(&shared, "bob", 1, false);
        assert!(events(&shared).is_empty());
        assert_eq!(mapped(&shared, 10), None);
        assert_eq!(mapped(&shared, 20), Some(("bob".into(), "cam".into())));
        // The last session leaving takes its tracks with it.
        r.member_left(&shared, "bob", 2, false);
        assert_eq!(
            events(&shared),
            vec![unavailable("bob", "cam"), left("bob")]
        );
        assert_eq!(mapped(&shared, 20), None);
    }

    #[test]
    fn reconcile_after_a_rejoin_reports_only_the_differences() {
        let shared = Shared::new(16);
        let mut r = Roster::new(1, "room", "me");
        r.reconcile(
            &shared,
            0,
            &[
                member("bob", 1, &[("cam", 10), ("mic", 11)]),
                member("carol", 2, &[]),
                member("frank", 6, &[]),
            ],
            later(),
        );
        events(&shared);
        // While we were away: frank left, dave came, bob moved edge (new
        // keys) and dropped his mic. The new edge lists what it has heard
        // of so far: not carol yet.
        let grace = Instant::now() + REJOIN_GRACE;
        r.reconcile(
            &shared,
            0,
            &[
                member("bob", 3, &[("cam", 30)]),
                member("dave", 4, &[("cam", 40)]),
            ],
            grace,
        );
        assert_eq!(
            events(&shared),
            vec![joined("dave"), available("dave", "cam")]
        );
        assert_eq!(mapped(&shared, 30), Some(("bob".into(), "cam".into())));
        // Until the grace ends, what it did not list stays (its media may
        // still come over the old link), and carol is confirmed meanwhile.
        assert_eq!(mapped(&shared, 11), Some(("bob".into(), "mic".into())));
        assert!(!r.member_joined(&shared, "carol", 2, 5), "known: no event");
        r.expire_unconfirmed(&shared, grace - Duration::from_millis(1));
        assert!(events(&shared).is_empty());
        r.expire_unconfirmed(&shared, grace);
        assert_eq!(
            events(&shared),
            vec![unavailable("bob", "mic"), left("frank")]
        );
        assert_eq!(mapped(&shared, 10), None);
        assert_eq!(r.member_edges(), [5]);
        r.clear(&shared);
        assert!(shared.tracks.read().unwrap().is_empty());
        assert!(events(&shared).is_empty());
    }

    fn count(members: u64, large: bool) -> Event {
        Event::MemberCount {
            channel: "room".into(),
            members,
            large,
        }
    }

    fn hidden(user: &str) -> Event {
        Event::MemberLeft {
            channel: "room".into(),
            user: user.into(),
            hidden: true,
        }
    }

    /// A roster on edge 2 that heard of bob (publishing, on edge 3) and
    /// carol (publishing nothing, on edge 4); its events read.
    fn bob_and_carol(shared: &Shared) -> Roster {
        let mut r = Roster::new(1, "room", "me");
        let members = [
            on_edge(3, member("bob", 1, &[("cam", 10)])),
            on_edge(4, member("carol", 2, &[])),
        ];
        r.reconcile(shared, 2, &members, later());
        events(shared);
        r
    }

    #[test]
    fn a_large_joined_lists_the_publishers_and_counts_everyone() {
        let shared = Shared::new(16);
        let mut r = Roster::new(1, "room", "me");
        r.adopt(
            &shared,
            &pb::Joined {
                members: vec![on_edge(3, member("bob", 1, &[("cam", 10)]))],
                edge_id: 2,
                member_count: 150,
                large: true,
                ..Default::default()
            },
        );
        assert_eq!(
            events(&shared),
            vec![joined("bob"), available("bob", "cam"), count(150, true)]
        );
        let c = r.census();
        assert_eq!(
            (c.members.load(Relaxed), c.large.load(Relaxed)),
            (150, true)
        );
        // The unlisted members may be on our edge: it is named too.
        assert_eq!(r.member_edges(), [2, 3]);
        // The same count again is no news.
        r.set_count(&shared, 150, true);
        assert!(events(&shared).is_empty());
    }

    #[test]
    fn becoming_large_drops_the_quiet_members_without_member_left() {
        let shared = Shared::new(16);
        let mut r = bob_and_carol(&shared);
        r.set_count(&shared, 101, true);
        assert_eq!(events(&shared), vec![count(101, true)]);
        assert_eq!(r.member_edges(), [2, 3], "carol's edge is not named");
        // Carol is no member to us now: her leaving is nothing to report,
        // and bob's unpublishing and leaving still is.
        r.member_left(&shared, "carol", 2, false);
        r.remove_track(&shared, 10);
        r.member_left(&shared, "bob", 1, false);
        assert_eq!(
            events(&shared),
            vec![unavailable("bob", "cam"), left("bob")]
        );
    }

    #[test]
    fn a_member_hidden_in_a_large_channel_is_reported_hidden_not_gone() {
        let shared = Shared::new(16);
        let mut r = bob_and_carol(&shared);
        r.set_count(&shared, 120, true);
        events(&shared);
        r.remove_track(&shared, 10);
        r.member_left(&shared, "bob", 1, true);
        assert_eq!(
            events(&shared),
            vec![unavailable("bob", "cam"), hidden("bob")]
        );
        assert_eq!(r.member_edges(), [2]);
        // Publishing again, the same session is announced again: listed,
        // but not a new session (it missed no message: no replay).
        assert!(!r.member_joined(&shared, "bob", 1, 3));
        r.add_track(&shared, "bob", &track("cam", 11));
        assert_eq!(
            events(&shared),
            vec![joined("bob"), available("bob", "cam")]
        );
        assert!(r.member_joined(&shared, "dave", 5, 3), "a new session");
    }

    #[test]
    fn small_again_the_members_not_listed_are_announced() {
        let shared = Shared::new(16);
        let mut r = bob_and_carol(&shared);
        r.set_count(&shared, 101, true);
        r.set_count(&shared, 50, false);
        assert_eq!(events(&shared), vec![count(101, true), count(50, false)]);
        assert_eq!(r.member_edges(), [3], "our edge is named for members only");
        // Carol was there all along (no replay), erin joined meanwhile.
        assert!(!r.member_joined(&shared, "carol", 2, 4));
        assert!(r.member_joined(&shared, "erin", 6, 0));
        assert_eq!(events(&shared), vec![joined("carol"), joined("erin")]);
        assert_eq!(r.member_edges(), [2, 3, 4]);
    }

    #[test]
    fn unknown_keys_and_sessions_are_harmless() {
        let shared = Shared::new(16);
        let mut r = Roster::new(1, "room", "me");
        r.remove_track(&shared, 99);
        r.member_left(&shared, "nobody", 5, false);
        r.member_left(&shared, "nobody", 6, true);
        r.add_track(&shared, "bob", &track("cam", 10));
        r.add_track(&shared, "bob", &track("cam", 10));
        assert_eq!(events(&shared), vec![available("bob", "cam")]);
    }
}
