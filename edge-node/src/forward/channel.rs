//! A channel as one edge sees it: its local members (sessions on this edge)
//! and the remote edges that host other members (learned from the channel's
//! directory homes, see [`super::home`] and [`super::remote`]), the roster
//! its clients are told of ([`super::roster`]) and who owns which track. All
//! soft state: rebuilt from clients rejoining and from directory refreshes.
//!
//! Every change names the sessions it touches, and costs what they cost:
//! the roster, the track index and the directory report move by those
//! sessions only, so a join into a large channel is O(1) here.
//!
//! Generic over `C`, the handle of a local member's client: the edge's is a
//! QUIC connection's, the tests' a plain name. Methods return the handles a
//! packet or an announcement goes to; the caller sends.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::datagram::MediaHeader;
use protocol::limits::MAX_MEMBER_EDGES;
use protocol::pb::{self, server_frame::Kind as SK, DirectoryMember, TrackInfo};
use protocol::{ChannelId, EdgeId, TrackKey};
use repair::early::EarlyMedia;

use super::remote::{Merged, RemoteEntries};
use super::roster::{MemberView, Roster};

/// What a local member wants of the channel's media.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum MediaSubscription {
    #[default]
    None,
    All,
    Users(HashSet<String>),
}

impl MediaSubscription {
    pub fn wants(&self, publisher: &str) -> bool {
        match self {
            MediaSubscription::None => false,
            MediaSubscription::All => true,
            MediaSubscription::Users(u) => u.contains(publisher),
        }
    }

    /// After a `Subscribe` to `user` (empty: everyone).
    pub fn subscribe(self, user: &str) -> Self {
        match self {
            _ if user.is_empty() => MediaSubscription::All,
            MediaSubscription::All => MediaSubscription::All,
            MediaSubscription::Users(mut u) => {
                u.insert(user.into());
                MediaSubscription::Users(u)
            }
            MediaSubscription::None => MediaSubscription::Users([user.into()].into()),
        }
    }

    /// After an `Unsubscribe` from `user` (empty: everyone).
    pub fn unsubscribe(self, user: &str) -> Self {
        match self {
            _ if user.is_empty() => MediaSubscription::None,
            MediaSubscription::Users(mut users) => {
                users.remove(user);
                MediaSubscription::Users(users)
            }
            // Unsubscribing one user from "all" is not expressible without
            // the member list; keep "all".
            other => other,
        }
    }
}

pub struct LocalMember<C> {
    pub user: String,
    pub session: u64,
    pub client: C,
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub media: MediaSubscription,
    pub tracks: Vec<TrackInfo>,
}

/// How long the edges a rejoining client named are told of this edge's
/// local changes directly: until the channel's homes have surely heard of
/// the new member and pushed it (reports go every second; an entry lives
/// 3.5 s, [`crate::directory::ENTRY_TTL`]).
pub const HINT_TTL: Duration = Duration::from_millis(3_500);

/// An edge a rejoining client named (`Join.member_edges`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HintedEdge {
    pub until: Instant,
    /// Sent a greeting (which asks for its entry in return) already.
    pub greeted: bool,
    /// Its entry (its answer, or any update listing it) has been merged
    /// since: until then it is a provisional receiver of the channel's
    /// media and messages ([`ChannelState::receiving_edges`]).
    pub heard: bool,
}

/// Who owns a track: relayed media is handed to the members subscribed to
/// its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackOwner {
    pub user: String,
    pub session: u64,
}

pub struct ChannelState<C> {
    local: HashMap<u64, LocalMember<C>>,
    remote: RemoteEntries,
    roster: Roster,
    /// The one index of track ownership, local and remote.
    tracks: HashMap<TrackKey, TrackOwner>,
    /// Relayed media of tracks not in `tracks` yet.
    early: EarlyMedia,
    /// Sessions touched by the change under way ([`ChannelState::change`]).
    touched: Vec<u64>,
    /// Bumped on every local change; the directory report carries it.
    pub local_generation: u64,
    /// The generation last reported to the homes (`None`: never, the next
    /// report is whole) and the local sessions changed since.
    reported: Option<u64>,
    changed_since_report: HashSet<u64>,
    /// Bumped on every change of the receiving edges; invalidates cached
    /// trees.
    pub remote_version: u64,
    /// Edges told of local changes directly for a while ([`HINT_TTL`]).
    pub hinted: HashMap<EdgeId, HintedEdge>,
    /// The directory homes last reported to: a new one (the live edges
    /// changed) gets the whole entry at once, not a delta or summary it
    /// cannot use.
    pub homes: Vec<EdgeId>,
    /// Whether a home's update of the channel has been merged: then this
    /// edge's whole reports ask for no other entry in return
    /// (`DirectoryReport.knows_entries`).
    heard_home: bool,
}

impl<C> Default for ChannelState<C> {
    fn default() -> Self {
        ChannelState {
            local: HashMap::new(),
            remote: RemoteEntries::default(),
            roster: Roster::default(),
            tracks: HashMap::new(),
            early: EarlyMedia::default(),
            touched: Vec::new(),
            local_generation: 0,
            reported: None,
            changed_since_report: HashSet::new(),
            remote_version: 0,
            hinted: HashMap::new(),
            homes: Vec::new(),
            heard_home: false,
        }
    }
}

/// A control frame for one local member's client, telling it of a change
/// in the channel.
pub type Announcement<C> = (C, SK);

/// What this edge reports to a channel's homes (docs/protocol.md §9.6).
#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    /// Every local member.
    Whole(Vec<DirectoryMember>),
    /// Changes since `base` (a generation reported before).
    Delta {
        base: u64,
        members: Vec<DirectoryMember>,
        left: Vec<u64>,
    },
    /// Nothing changed since the last report.
    Summary,
}

impl<C: Clone> ChannelState<C> {
    /// Apply a change; returns its result and what each local member must
    /// be told of it (joins, leaves, tracks, counts; never a member about
    /// its own session), in order. Only the sessions the change touched
    /// (through the methods below) are looked at.
    pub fn change<R>(
        &mut self,
        channel: ChannelId,
        now: Instant,
        change: impl FnOnce(&mut Self) -> R,
    ) -> (R, Vec<Announcement<C>>) {
        let out = change(self);
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        let views: Vec<(u64, Option<MemberView>)> =
            touched.into_iter().map(|s| (s, self.view(s))).collect();
        for (s, v) in &views {
            self.reindex_tracks(*s, v.as_ref());
        }
        self.roster.set_uncopied(self.remote.uncopied());
        let events = self.roster.apply(channel, views, now);
        (out, self.tell(events))
    }

    /// The count of a large channel if due ([`Roster::count_due`]), for
    /// every local member.
    pub fn count_due(&mut self, channel: ChannelId, now: Instant) -> Vec<Announcement<C>> {
        self.roster.set_uncopied(self.remote.uncopied());
        match self.roster.count_due(channel, now) {
            Some(ev) => self.tell(vec![(None, ev)]),
            None => vec![],
        }
    }

    fn tell(&self, events: Vec<super::roster::Event>) -> Vec<Announcement<C>> {
        let mut told = Vec::new();
        for (about, ev) in &events {
            for m in self.local.values() {
                if *about != Some(m.session) {
                    told.push((m.client.clone(), ev.clone()));
                }
            }
        }
        told
    }
}

impl<C> ChannelState<C> {
    /// A session joined here.
    pub fn insert_local(&mut self, m: LocalMember<C>) {
        self.local_changed(m.session);
        self.local.insert(m.session, m);
    }

    /// A session left; whether it was here.
    pub fn remove_local(&mut self, session: u64) -> bool {
        self.local_changed(session);
        self.local.remove(&session).is_some()
    }

    /// Change what a local member publishes (what the directory and the
    /// other members see of it).
    pub fn edit_local<R>(
        &mut self,
        session: u64,
        edit: impl FnOnce(&mut LocalMember<C>) -> R,
    ) -> Option<R> {
        let m = self.local.get_mut(&session)?;
        let out = edit(m);
        self.local_changed(session);
        Some(out)
    }

    /// A local member's media subscription (seen by no one else).
    pub fn media_mut(&mut self, session: u64) -> Option<&mut MediaSubscription> {
        self.local.get_mut(&session).map(|m| &mut m.media)
    }

    fn local_changed(&mut self, session: u64) {
        self.touched.push(session);
        self.changed_since_report.insert(session);
        self.local_generation += 1;
    }

    pub fn has_local(&self) -> bool {
        !self.local.is_empty()
    }

    pub fn has_remote(&self) -> bool {
        !self.remote.edges.is_empty()
    }

    /// Remote edges with an entry, for logs.
    pub fn remote_edges(&self) -> Vec<EdgeId> {
        let mut v: Vec<EdgeId> = self.remote.edges.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Member sessions in the channel, here and elsewhere.
    pub fn member_count(&self) -> usize {
        self.roster.len()
    }

    pub fn is_large(&self) -> bool {
        self.roster.is_large()
    }

    /// The owner of a track, local or remote.
    pub fn track_owner(&self, track: TrackKey) -> Option<&TrackOwner> {
        self.tracks.get(&track)
    }

    /// The local clients that get a media packet of `publisher`'s, except
    /// session `except` (the publisher's own, for local media).
    pub fn media_recipients<'a>(
        &'a self,
        publisher: &'a str,
        except: Option<u64>,
    ) -> impl Iterator<Item = &'a C> + 'a {
        self.local
            .values()
            .filter(move |m| {
                Some(m.session) != except && m.can_subscribe && m.media.wants(publisher)
            })
            .map(|m| &m.client)
    }

    /// The local clients that get a relayed media packet of `track`; `None`
    /// when the track is unknown here (dropped, counted).
    pub fn relayed_media_recipients(
        &self,
        track: TrackKey,
    ) -> Option<impl Iterator<Item = &C> + '_> {
        let owner = self.track_owner(track)?;
        Some(self.media_recipients(&owner.user, None))
    }

    /// Hold a relayed packet of a track not known here yet, until an entry
    /// names it ([`EarlyMedia`]); how many held packets were dropped.
    pub fn hold_early(&mut self, header: MediaHeader, media: Bytes, now: Instant) -> usize {
        self.early.hold(header, media, now)
    }

    /// The held packets whose track is known now, in the order they came,
    /// and how many were dropped as too old.
    pub fn release_early(&mut self, now: Instant) -> (Vec<(MediaHeader, Bytes)>, usize) {
        if self.early.is_empty() {
            return (vec![], 0);
        }
        let tracks = &self.tracks;
        self.early.release(|t| tracks.contains_key(&t), now)
    }

    /// The local clients that get `msg`: sessions that may subscribe, of
    /// the addressed user if any, and none of the sender's user
    /// (`from_user`, set by the sender's edge). One user's sessions share one
    /// message sequence (protocol §8): a client that moved to another edge
    /// while its old session is still listed, or its second session here,
    /// would otherwise get its own messages back.
    pub fn message_recipients<'a>(
        &'a self,
        msg: &'a pb::ChatMessage,
    ) -> impl Iterator<Item = &'a C> + 'a {
        self.local
            .values()
            .filter(move |m| {
                m.user != msg.from_user
                    && m.can_subscribe
                    && (msg.to_user.is_empty() || m.user == msg.to_user)
            })
            .map(|m| &m.client)
    }

    /// Remote edges that need the channel's media and messages (only those
    /// hosting `only_user`, for a message to one user). Hinted edges not
    /// heard from yet are included: the rejoining client saw members of
    /// the channel there, and waiting for their answer would cost a round
    /// trip between the edges of media (a publisher moving off a draining
    /// edge), while a wrong guess costs that edge a few dropped packets
    /// until the hint ends.
    pub fn receiving_edges(&self, only_user: Option<&str>) -> Vec<EdgeId> {
        let mut out: Vec<EdgeId> = self
            .remote
            .edges
            .iter()
            .filter(|(_, r)| match only_user {
                None => r.has_subscribers(),
                Some(u) => r.members.values().any(|m| m.subscribes && m.user_id == u),
            })
            .map(|(e, _)| *e)
            .chain(
                self.hinted
                    .iter()
                    .filter(|(e, h)| !h.heard && !self.remote.edges.contains_key(e))
                    .map(|(e, _)| *e),
            )
            .collect();
        out.sort_unstable();
        out
    }

    /// The whole directory entry of this edge for the channel.
    pub fn local_report(&self) -> Vec<DirectoryMember> {
        self.local.values().map(directory_member).collect()
    }

    /// The report due now: whole the first time, then the changes since
    /// the last report, or a summary. `base` turns the channel's local
    /// generations into the edge's ([`crate::directory`]). Marks it
    /// reported.
    pub fn take_report(&mut self, base: u64) -> (Report, u64) {
        let generation = base + self.local_generation;
        let changed = std::mem::take(&mut self.changed_since_report);
        let report = match self.reported.replace(generation) {
            None => Report::Whole(self.local_report()),
            Some(_) if changed.is_empty() => Report::Summary,
            Some(reported) => {
                let (mut members, mut left) = (vec![], vec![]);
                for s in changed {
                    match self.local.get(&s) {
                        Some(m) => members.push(directory_member(m)),
                        None => left.push(s),
                    }
                }
                Report::Delta {
                    base: reported,
                    members,
                    left,
                }
            }
        };
        (report, generation)
    }

    /// The generation last reported to the homes (0: none yet). A summary
    /// sent between the regular reports (asking a home for entries) says
    /// this one, not the current generation: a change not reported yet
    /// would read as a generation the home lacks, and it would ask for the
    /// whole entry.
    pub fn reported_generation(&self) -> u64 {
        self.reported.unwrap_or(0)
    }

    /// Whether a home's update of the channel has been merged here (see
    /// `DirectoryReport.knows_entries`).
    pub fn knows_entries(&self) -> bool {
        self.heard_home
    }

    /// The members a joining session is told of in its `Joined` (every
    /// other one, or in a large channel those that publish).
    pub fn members_except(&self, session: u64) -> Vec<pb::Member> {
        self.roster.listed_except(session)
    }

    /// A rejoining member named `edges` (`Join.member_edges`, as its client
    /// last knew the channel): this edge tells them of its local changes
    /// directly until `until`, not only through the channel's homes (which
    /// may be far). This edge itself, 0 and edges past
    /// [`MAX_MEMBER_EDGES`] are ignored.
    pub fn hint(&mut self, me: EdgeId, edges: &[EdgeId], until: Instant) {
        for &e in edges.iter().take(MAX_MEMBER_EDGES) {
            if e == me || e == 0 {
                continue;
            }
            let known = self.remote.edges.contains_key(&e);
            let h = self.hinted.entry(e).or_insert_with(|| {
                if !known {
                    // A new provisional receiver: cached trees are stale.
                    self.remote_version += 1;
                }
                HintedEdge {
                    until,
                    greeted: false,
                    heard: known,
                }
            });
            h.until = h.until.max(until);
        }
    }

    /// The hinted edges to tell of this edge's members at `now`, each with
    /// whether to greet it (ask for its entry in return: the first time);
    /// expired hints are forgotten.
    pub fn hinted_now(&mut self, now: Instant) -> Vec<(EdgeId, bool)> {
        if self.hinted.values().any(|h| h.until <= now && !h.heard) {
            // A provisional receiver ends: cached trees are stale.
            self.remote_version += 1;
        }
        self.hinted.retain(|_, h| h.until > now);
        let mut out: Vec<(EdgeId, bool)> = self
            .hinted
            .iter_mut()
            .map(|(e, h)| (*e, !std::mem::replace(&mut h.greeted, true)))
            .collect();
        out.sort_unstable();
        out
    }

    /// Greet again, at the next [`Self::hinted_now`], the hinted edges not
    /// heard from yet (a greeting may have been lost in a dead relay).
    /// Whether any hint lives.
    pub fn greet_unheard_again(&mut self) -> bool {
        for h in self.hinted.values_mut() {
            h.greeted &= h.heard;
        }
        !self.hinted.is_empty()
    }

    /// Merge a home's update (or a member edge's own entry, for a hint)
    /// at `now`, what it has living until `expires`. Run it inside
    /// [`ChannelState::change`] to announce what it changed. Returns what
    /// the merge found: the entries to ask the home for, and whether the
    /// home lacks this edge's own entry.
    pub fn merge_update(
        &mut self,
        me: EdgeId,
        u: &pb::DirectoryUpdate,
        now: Instant,
        expires: Instant,
    ) -> Merged {
        let mut heard = false;
        for e in u.edges.iter().filter(|e| e.edge_id != me) {
            if let Some(h) = self.hinted.get_mut(&e.edge_id) {
                // Heard from: its entry decides from now on.
                heard |= !std::mem::replace(&mut h.heard, true);
            }
        }
        // A member edge's own entry (a hint) has no version; a home counts
        // its updates from 1.
        self.heard_home |= u.version > 0;
        let merged = self.remote.merge_update(me, u, now, expires);
        self.absorb(&merged);
        if heard {
            self.remote_version += 1;
        }
        merged
    }

    /// Whether an entry has expired by `now` (then [`ChannelState::expire`]
    /// inside a change announces who left).
    pub fn has_expired(&self, now: Instant) -> bool {
        self.remote.has_expired(now)
    }

    /// Forget remote edges no home refreshed by `now`.
    pub fn expire(&mut self, now: Instant) {
        let merged = self.remote.expire(now);
        self.absorb(&merged);
    }

    fn absorb(&mut self, merged: &Merged) {
        self.touched.extend_from_slice(&merged.touched);
        if merged.edges_changed {
            self.remote_version += 1;
        }
    }

    /// A session's view now: local first, else the remote entry hosting it.
    fn view(&self, s: u64) -> Option<MemberView> {
        if let Some(m) = self.local.get(&s) {
            return Some(MemberView {
                user: m.user.clone(),
                tracks: m.tracks.clone(),
                edge: 0,
            });
        }
        let (edge, m) = self.remote.member(s)?;
        Some(MemberView {
            user: m.user_id.clone(),
            tracks: m.tracks.clone(),
            edge,
        })
    }

    /// Move session `s`'s tracks in the index from its roster view to `new`.
    fn reindex_tracks(&mut self, s: u64, new: Option<&MemberView>) {
        if let Some(old) = self.roster.get(s) {
            for t in &old.tracks {
                let key = TrackKey(t.track_key);
                if self.tracks.get(&key).is_some_and(|o| o.session == s) {
                    self.tracks.remove(&key);
                }
            }
        }
        if let Some(v) = new {
            for t in &v.tracks {
                self.tracks.insert(
                    TrackKey(t.track_key),
                    TrackOwner {
                        user: v.user.clone(),
                        session: s,
                    },
                );
            }
        }
    }
}

fn directory_member<C>(m: &LocalMember<C>) -> DirectoryMember {
    DirectoryMember {
        user_id: m.user.clone(),
        tracks: m.tracks.clone(),
        subscribes: m.can_subscribe,
        session: m.session,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const CH: ChannelId = ChannelId(7);
    const ME: EdgeId = 1;

    /// A channel whose clients are their names.
    type State = ChannelState<&'static str>;

    fn member(
        name: &'static str,
        session: u64,
        media: MediaSubscription,
    ) -> LocalMember<&'static str> {
        LocalMember {
            user: name.into(),
            session,
            client: name,
            can_publish: true,
            can_subscribe: true,
            media,
            tracks: vec![],
        }
    }

    fn track(key: u64) -> TrackInfo {
        TrackInfo {
            name: format!("t{key}"),
            track_key: key,
            kind: 0,
        }
    }

    fn remote(user: &str, session: u64, tracks: &[u64], subscribes: bool) -> DirectoryMember {
        DirectoryMember {
            user_id: user.into(),
            tracks: tracks.iter().map(|k| track(*k)).collect(),
            subscribes,
            session,
        }
    }

    /// A home's update of whole entries, each newer than any before.
    fn update(home: EdgeId, edges: &[(EdgeId, Vec<DirectoryMember>)]) -> pb::DirectoryUpdate {
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        pb::DirectoryUpdate {
            home_edge: home,
            channel_id: CH.0,
            edges: edges
                .iter()
                .map(|(e, m)| pb::EdgeMembers {
                    edge_id: *e,
                    members: m.clone(),
                    generation,
                    ..Default::default()
                })
                .collect(),
            version: 1,
            hop_limit: 8,
            tree: vec![],
            greeting: false,
            ..Default::default()
        }
    }

    fn sorted<'a>(it: impl Iterator<Item = &'a &'static str>) -> Vec<&'static str> {
        let mut v: Vec<_> = it.copied().collect();
        v.sort_unstable();
        v
    }

    /// Who was told what, as (client, frame kind, about user).
    fn told(a: &[Announcement<&'static str>]) -> Vec<(&'static str, &'static str, String)> {
        let mut out: Vec<_> = a
            .iter()
            .map(|(c, f)| match f {
                SK::MemberJoined(m) => (*c, "joined", m.user_id.clone()),
                SK::MemberLeft(m) => (*c, "left", m.user_id.clone()),
                SK::TrackAvailable(t) => (*c, "track", t.user_id.clone()),
                SK::TrackUnavailable(t) => (*c, "untrack", t.user_id.clone()),
                other => panic!("unexpected announcement {other:?}"),
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn local_media_goes_to_subscribed_members_but_not_back_to_its_publisher() {
        let mut st = State::default();
        st.change(CH, Instant::now(), |st| {
            st.insert_local(member("alice", 1, MediaSubscription::All));
            st.insert_local(member("bob", 2, MediaSubscription::All));
            st.insert_local(member(
                "carol",
                3,
                MediaSubscription::Users(["alice".into()].into()),
            ));
            st.insert_local(member(
                "dave",
                4,
                MediaSubscription::Users(["bob".into()].into()),
            ));
            st.insert_local(member("erin", 5, MediaSubscription::None));
            let mut mute = member("frank", 6, MediaSubscription::All);
            mute.can_subscribe = false;
            st.insert_local(mute);
        });
        assert_eq!(
            sorted(st.media_recipients("alice", Some(1))),
            ["bob", "carol"]
        );
        assert_eq!(
            sorted(st.media_recipients("bob", Some(2))),
            ["alice", "dave"]
        );
    }

    #[test]
    fn relayed_media_goes_to_the_members_subscribed_to_its_remote_owner() {
        let mut st = State::default();
        st.change(CH, Instant::now(), |st| {
            st.insert_local(member(
                "alice",
                1,
                MediaSubscription::Users(["zoe".into()].into()),
            ));
            st.insert_local(member(
                "bob",
                2,
                MediaSubscription::Users(["yann".into()].into()),
            ));
            st.merge_update(
                ME,
                &update(9, &[(2, vec![remote("zoe", 20, &[100], true)])]),
                Instant::now(),
                Instant::now(),
            );
        });
        let to: Vec<_> = st
            .relayed_media_recipients(TrackKey(100))
            .unwrap()
            .copied()
            .collect();
        assert_eq!(to, ["alice"]);
        assert_eq!(
            st.track_owner(TrackKey(100)),
            Some(&TrackOwner {
                user: "zoe".into(),
                session: 20
            })
        );
        assert!(
            st.relayed_media_recipients(TrackKey(101)).is_none(),
            "unknown track"
        );
    }

    #[test]
    fn a_join_a_track_and_a_leave_are_announced_to_every_other_member() {
        let mut st = State::default();
        let (_, told_join) = st.change(CH, Instant::now(), |st| {
            st.insert_local(member("alice", 1, MediaSubscription::All));
        });
        assert!(told_join.is_empty(), "a member is not told of its own join");
        let (_, a) = st.change(CH, Instant::now(), |st| {
            st.insert_local(member("bob", 2, MediaSubscription::All));
        });
        assert_eq!(told(&a), [("alice", "joined", "bob".into())]);
        let (_, a) = st.change(CH, Instant::now(), |st| {
            st.edit_local(2, |m| m.tracks.push(track(5)));
        });
        assert_eq!(told(&a), [("alice", "track", "bob".into())]);
        assert_eq!(st.track_owner(TrackKey(5)).unwrap().session, 2);
        let (_, a) = st.change(CH, Instant::now(), |st| {
            st.remove_local(2);
        });
        assert_eq!(
            told(&a),
            [
                ("alice", "left", "bob".into()),
                ("alice", "untrack", "bob".into())
            ]
        );
        assert!(
            st.track_owner(TrackKey(5)).is_none(),
            "a left member's track is gone"
        );
        let (_, a) = st.change(CH, Instant::now(), |st| {
            *st.media_mut(1).unwrap() = MediaSubscription::None
        });
        assert!(a.is_empty(), "a subscription change announces nothing");
    }

    #[test]
    fn updates_from_two_homes_are_merged_not_replaced() {
        let mut st = State::default();
        let now = Instant::now();
        st.insert_local(member("alice", 1, MediaSubscription::All));
        // Home 8 knows edges 2 and 3; home 9 has just started and knows only
        // edge 3 (and this edge, whose entry is never merged).
        let from_8 = update(
            8,
            &[
                (2, vec![remote("bob", 2, &[], true)]),
                (3, vec![remote("carol", 3, &[], true)]),
            ],
        );
        // Home 9 lists edge 3 at the generation this edge has, and this
        // edge's own entry, whose stray copy is never merged.
        let gen3 = from_8.edges[1].generation;
        let from_9 = pb::DirectoryUpdate {
            digest: vec![pb::EntryDigest {
                edge_id: 3,
                generation: gen3,
                members: 1,
            }],
            ..update(9, &[(ME, vec![remote("ghost", 99, &[], true)])])
        };
        let (_, a) = st.change(CH, now, |st| {
            st.merge_update(ME, &from_8, now, now + Duration::from_secs(3))
        });
        assert_eq!(
            told(&a),
            [
                ("alice", "joined", "bob".into()),
                ("alice", "joined", "carol".into())
            ]
        );
        let version = st.remote_version;
        let (merged, a) = st.change(CH, now, |st| {
            st.merge_update(ME, &from_9, now, now + Duration::from_secs(5))
        });
        assert!(a.is_empty() && merged.touched.is_empty() && merged.want.is_empty());
        assert_eq!(st.receiving_edges(None), [2, 3], "home 9 erased nothing");
        assert_eq!(st.remote_version, version, "trees stay cached");
        // Edge 3's entry lives until home 9's later expiry, edge 2's until
        // home 8's: at 4 s edge 2's member is gone, carol stays.
        let later = now + Duration::from_secs(4);
        assert!(st.has_expired(later));
        let (_, a) = st.change(CH, later, |st| st.expire(later));
        assert_eq!(told(&a), [("alice", "left", "bob".into())]);
        assert_eq!(st.receiving_edges(None), [3]);
        // A home's empty entry is an edge that left.
        let (merged, a) = st.change(CH, later, |st| {
            st.merge_update(ME, &update(8, &[(3, vec![])]), later, later)
        });
        assert!(merged.edges_changed);
        assert_eq!(told(&a), [("alice", "left", "carol".into())]);
        assert!(st.receiving_edges(None).is_empty());
        assert_eq!(st.member_count(), 1);
    }

    #[test]
    fn members_carry_their_edge_and_hinted_edges_are_greeted_once_then_told_until_the_hint_ends() {
        let mut st = State::default();
        let now = Instant::now();
        st.insert_local(member("alice", 1, MediaSubscription::All));
        let (_, a) = st.change(CH, Instant::now(), |st| {
            st.merge_update(
                ME,
                &update(8, &[(2, vec![remote("bob", 2, &[5], true)])]),
                Instant::now(),
                now + Duration::from_secs(3),
            )
        });
        let joined: Vec<u32> = a
            .iter()
            .filter_map(|(_, f)| match f {
                SK::MemberJoined(m) => Some(m.edge_id),
                _ => None,
            })
            .collect();
        assert_eq!(joined, [2], "bob is on edge 2");
        let mut edges: Vec<(String, u32)> = st
            .members_except(99)
            .into_iter()
            .map(|m| (m.user_id, m.edge_id))
            .collect();
        edges.sort();
        assert_eq!(
            edges,
            [("alice".into(), 0), ("bob".into(), 2)],
            "0: this edge"
        );

        // A rejoining client names edges 2, 3, this edge and 0: only 2 and 3
        // are hinted, greeted the first time, told after, until the end.
        st.hint(ME, &[2, 3, ME, 0], now + HINT_TTL);
        assert_eq!(st.hinted_now(now), [(2, true), (3, true)]);
        assert_eq!(st.hinted_now(now), [(2, false), (3, false)]);
        // Greeted again if asked (a relay on the way went suspect), unless
        // heard from (edge 2's entry is known): told only.
        assert!(st.greet_unheard_again());
        assert_eq!(st.hinted_now(now), [(2, false), (3, true)]);
        assert_eq!(st.hinted_now(now), [(2, false), (3, false)]);
        // Another rejoin names edge 3 again later: its hint lasts longer.
        st.hint(ME, &[3], now + HINT_TTL * 2);
        let after = now + HINT_TTL;
        assert_eq!(st.hinted_now(after), [(3, false)]);
        assert!(st.hinted_now(now + HINT_TTL * 2).is_empty());
        assert!(st.hinted.is_empty(), "expired hints are forgotten");
        // At most MAX_MEMBER_EDGES of a long list.
        st.hinted.clear();
        let many: Vec<EdgeId> = (10..100).collect();
        st.hint(ME, &many, now + HINT_TTL);
        assert_eq!(st.hinted.len(), MAX_MEMBER_EDGES);
    }

    #[test]
    fn hinted_edges_receive_until_heard_from_then_their_entry_decides() {
        let mut st = State::default();
        let now = Instant::now();
        st.insert_local(member("alice", 1, MediaSubscription::All));
        st.merge_update(
            ME,
            &update(8, &[(2, vec![remote("bob", 2, &[5], true)])]),
            Instant::now(),
            now + Duration::from_secs(3),
        );
        assert_eq!(st.receiving_edges(None), [2]);
        let version = st.remote_version;
        // Alice rejoined here naming edges 2 (known), 3 and 4 (not yet).
        st.hint(ME, &[2, 3, 4], now + HINT_TTL);
        assert_ne!(
            st.remote_version, version,
            "cached trees must not miss 3, 4"
        );
        assert_eq!(st.receiving_edges(None), [2, 3, 4], "3, 4 provisionally");
        assert_eq!(st.receiving_edges(Some("carol")), [3, 4]);
        // Edge 3 answers: a member who does not subscribe. 3 drops out.
        let update_3 = update(3, &[(3, vec![remote("dan", 3, &[], false)])]);
        let merged = st.merge_update(ME, &update_3, now, now + Duration::from_secs(3));
        assert!(merged.edges_changed);
        assert_eq!(st.receiving_edges(None), [2, 4]);
        // Edge 4 withdraws (its members left): no longer provisional.
        let version = st.remote_version;
        let update_4 = update(4, &[(4, vec![])]);
        st.merge_update(ME, &update_4, Instant::now(), now + Duration::from_secs(3));
        assert_ne!(st.remote_version, version);
        assert_eq!(st.receiving_edges(None), [2]);
        // A hint that ends unheard stops receiving too.
        st.hint(ME, &[5], now + HINT_TTL);
        assert_eq!(st.receiving_edges(None), [2, 5]);
        let version = st.remote_version;
        st.hinted_now(now + HINT_TTL);
        assert_ne!(st.remote_version, version);
        assert_eq!(st.receiving_edges(None), [2]);
    }

    #[test]
    fn messages_and_receiving_edges_follow_the_recipient() {
        let mut st = State::default();
        st.change(CH, Instant::now(), |st| {
            st.insert_local(member("alice", 1, MediaSubscription::None));
            st.insert_local(member("bob", 2, MediaSubscription::None));
            // Alice's session from before she reconnected, still listed.
            st.insert_local(member("alice", 5, MediaSubscription::None));
            let mut listener = member("carol", 3, MediaSubscription::None);
            listener.can_subscribe = false;
            st.insert_local(listener);
            let u = update(
                8,
                &[
                    (2, vec![remote("dan", 20, &[], true)]),
                    (3, vec![remote("bob", 30, &[], true)]),
                    (4, vec![remote("eve", 40, &[], false)]),
                ],
            );
            st.merge_update(ME, &u, Instant::now(), Instant::now());
        });
        let all = pb::ChatMessage {
            channel_id: CH.0,
            from_user: "alice".into(),
            ..Default::default()
        };
        assert_eq!(sorted(st.message_recipients(&all)), ["bob"]);
        assert_eq!(
            st.receiving_edges(None),
            [2, 3],
            "edge 4 hosts no subscriber"
        );
        let to_bob = pb::ChatMessage {
            to_user: "bob".into(),
            ..all
        };
        assert_eq!(sorted(st.message_recipients(&to_bob)), ["bob"]);
        assert_eq!(st.receiving_edges(Some("bob")), [3]);
    }

    #[test]
    fn reports_are_whole_then_the_changes_since_the_last_then_summaries() {
        let mut st = State::default();
        let now = Instant::now();
        st.change(CH, now, |st| {
            st.insert_local(member("alice", 1, MediaSubscription::All));
            st.insert_local(member("bob", 2, MediaSubscription::All));
        });
        let (r, g1) = st.take_report(1_000);
        assert!(matches!(r, Report::Whole(m) if m.len() == 2));
        assert_eq!(g1, 1_002, "the base plus two local changes");
        st.change(CH, now, |st| {
            st.remove_local(1);
            st.edit_local(2, |m| m.tracks.push(track(4)));
            st.insert_local(member("carol", 3, MediaSubscription::All));
        });
        let (r, g2) = st.take_report(1_000);
        match r {
            Report::Delta {
                base,
                mut members,
                left,
            } => {
                members.sort_by_key(|m| m.session);
                assert_eq!(base, g1);
                assert_eq!(left, [1]);
                let got: Vec<(u64, usize)> = members
                    .iter()
                    .map(|m| (m.session, m.tracks.len()))
                    .collect();
                assert_eq!(got, [(2, 1), (3, 0)]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(st.take_report(1_000), (Report::Summary, g2));
        // A change not reported yet: a summary asking a home for entries
        // still says the generation reported.
        st.change(CH, now, |st| {
            st.insert_local(member("dave", 4, MediaSubscription::All));
        });
        assert_eq!(st.reported_generation(), g2);
    }

    #[test]
    fn an_edge_knows_the_entries_once_a_home_s_update_is_merged_not_a_hint() {
        let mut st = State::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(3);
        st.change(CH, now, |st| {
            st.insert_local(member("alice", 1, MediaSubscription::All))
        });
        assert!(!st.knows_entries());
        let hint = pb::DirectoryUpdate {
            version: 0,
            ..update(5, &[(5, vec![remote("bob", 9, &[], true)])])
        };
        st.change(CH, now, |st| st.merge_update(ME, &hint, now, later));
        assert!(!st.knows_entries(), "a member edge's own entry");
        st.change(CH, now, |st| {
            st.merge_update(ME, &update(2, &[]), now, later)
        });
        assert!(st.knows_entries());
    }

    #[test]
    fn joins_into_a_large_channel_announce_nothing_to_the_viewers() {
        let mut st = State::default();
        let now = Instant::now();
        let names: Vec<&'static str> = (0..=protocol::limits::LARGE_CHANNEL_MEMBERS + 50)
            .map(|i| &*Box::leak(format!("v{i}").into_boxed_str()))
            .collect();
        let mut told_per_join = vec![];
        for (i, name) in names.iter().enumerate() {
            let (_, a) = st.change(CH, now, |st| {
                st.insert_local(member(name, i as u64, MediaSubscription::All))
            });
            told_per_join.push(a.len());
        }
        let n = protocol::limits::LARGE_CHANNEL_MEMBERS;
        // Up to the threshold each join is told to every other member; the
        // one past it tells everyone of the switch alone; after it, nothing.
        assert_eq!(told_per_join[n - 1], n - 1);
        assert_eq!(told_per_join[n], n + 1, "the switch alone, to all");
        assert!(told_per_join[n + 1..].iter().all(|t| *t == 0));
        assert!(st.is_large());
        assert_eq!(st.member_count(), names.len());
        assert!(st.members_except(0).is_empty(), "nobody publishes");
        // A count is due after the interval, to every member.
        let later = now + Duration::from_millis(protocol::limits::MEMBER_COUNT_INTERVAL_MS);
        assert_eq!(st.count_due(CH, later).len(), names.len());
    }

    #[test]
    fn subscriptions_add_and_remove_users() {
        let s = MediaSubscription::None.subscribe("a").subscribe("b");
        assert!(s.wants("a") && s.wants("b") && !s.wants("c"));
        let s = s.unsubscribe("a");
        assert!(!s.wants("a") && s.wants("b"));
        assert_eq!(s.clone().subscribe(""), MediaSubscription::All);
        assert_eq!(s.unsubscribe(""), MediaSubscription::None);
        assert_eq!(
            MediaSubscription::All.unsubscribe("a"),
            MediaSubscription::All
        );
    }
}
