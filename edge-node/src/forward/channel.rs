//! A channel as one edge sees it: its local members (sessions on this edge)
//! and the remote edges that host other members (learned from the channel's
//! directory homes, see [`super::home`]). All soft state: rebuilt from
//! clients rejoining and from directory refreshes.
//!
//! Generic over `C`, the handle of a local member's client: the edge's is a
//! QUIC connection's, the tests' a plain name. Methods return the handles a
//! packet or an announcement goes to; the caller sends.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use protocol::limits::MAX_MEMBER_EDGES;
use protocol::pb::{self, server_frame::Kind as SK, DirectoryMember, TrackInfo};
use protocol::{ChannelId, EdgeId, TrackKey};

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

pub struct RemoteEdge {
    pub members: Vec<DirectoryMember>,
    pub expires: Instant,
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
    pub local: HashMap<u64, LocalMember<C>>,
    pub remote: HashMap<EdgeId, RemoteEdge>,
    /// The one index of track ownership, local and remote, rebuilt by
    /// [`ChannelState::change`].
    tracks: HashMap<TrackKey, TrackOwner>,
    /// Bumped on every local change; the directory report carries it.
    pub local_generation: u64,
    /// Bumped on every change of `remote`; invalidates cached trees.
    pub remote_version: u64,
    /// Edges told of local changes directly for a while ([`HINT_TTL`]).
    pub hinted: HashMap<EdgeId, HintedEdge>,
}

impl<C> Default for ChannelState<C> {
    fn default() -> Self {
        ChannelState {
            local: HashMap::new(),
            remote: HashMap::new(),
            tracks: HashMap::new(),
            local_generation: 0,
            remote_version: 0,
            hinted: HashMap::new(),
        }
    }
}

/// A control frame for one local member's client, telling it of a change
/// in the channel.
pub type Announcement<C> = (C, SK);

/// A member session as announced to clients.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MemberView {
    user: String,
    tracks: Vec<TrackInfo>,
    /// The edge hosting it; 0 for this edge.
    edge: EdgeId,
}

impl<C: Clone> ChannelState<C> {
    /// Apply a change; returns its result and what each local member must
    /// be told of it (joins, leaves, tracks; never a member about its own
    /// session), in order.
    pub fn change<R>(
        &mut self,
        channel: ChannelId,
        change: impl FnOnce(&mut Self) -> R,
    ) -> (R, Vec<Announcement<C>>) {
        let before = self.views();
        let out = change(self);
        let after = self.views();
        self.reindex_tracks();
        let events = diff(channel, &before, &after);
        let mut told = Vec::new();
        for m in self.local.values() {
            for (about, ev) in &events {
                if *about != m.session {
                    told.push((m.client.clone(), ev.clone()));
                }
            }
        }
        (out, told)
    }
}

impl<C> ChannelState<C> {
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

    /// The local clients that get `msg`, except session `except` (the
    /// sender's, for a local message).
    pub fn message_recipients<'a>(
        &'a self,
        msg: &'a pb::ChatMessage,
        except: Option<u64>,
    ) -> impl Iterator<Item = &'a C> + 'a {
        self.local
            .values()
            .filter(move |m| {
                Some(m.session) != except
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
            .iter()
            .filter(|(_, r)| {
                r.members
                    .iter()
                    .any(|m| m.subscribes && only_user.is_none_or(|u| m.user_id == u))
            })
            .map(|(e, _)| *e)
            .chain(
                self.hinted
                    .iter()
                    .filter(|(e, h)| !h.heard && !self.remote.contains_key(e))
                    .map(|(e, _)| *e),
            )
            .collect();
        out.sort_unstable();
        out
    }

    /// The directory entry this edge reports for the channel.
    pub fn local_report(&self) -> Vec<DirectoryMember> {
        self.local
            .values()
            .map(|m| DirectoryMember {
                user_id: m.user.clone(),
                tracks: m.tracks.clone(),
                subscribes: m.can_subscribe,
                session: m.session,
            })
            .collect()
    }

    /// The members other than `session`, for a Joined reply.
    pub fn members_except(&self, session: u64) -> Vec<pb::Member> {
        self.views()
            .into_iter()
            .filter(|(s, _)| *s != session)
            .map(|(s, v)| pb::Member {
                user_id: v.user,
                tracks: v.tracks,
                session: s,
                edge_id: v.edge,
            })
            .collect()
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
            let known = self.remote.contains_key(&e);
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

    /// Whether a home's update says anything this edge does not know (`me`
    /// is this edge: its own entry is its local members, never merged).
    /// Most updates are a home's refresh of what this edge already has.
    pub fn is_news(&self, me: EdgeId, u: &pb::DirectoryUpdate) -> bool {
        u.edges.iter().any(|e| {
            e.edge_id != me
                && (match self.remote.get(&e.edge_id) {
                    None => !e.members.is_empty(),
                    Some(r) => r.members != e.members,
                } || self.hinted.get(&e.edge_id).is_some_and(|h| !h.heard))
        })
    }

    /// A home refreshed entries this edge has: only their expiries move (no
    /// member changes, so nothing to announce).
    pub fn refresh_expiries(&mut self, me: EdgeId, u: &pb::DirectoryUpdate, expires: Instant) {
        for e in u.edges.iter().filter(|e| e.edge_id != me) {
            if let Some(r) = self.remote.get_mut(&e.edge_id) {
                r.expires = r.expires.max(expires);
            }
        }
    }

    /// Merge a home's update (entries it has, refreshed until `expires`; an
    /// empty entry is an edge that left). Updates from several homes are a
    /// union, each entry with its own expiry, so a home that has just
    /// started and knows little cannot erase what another home said. Run it
    /// inside [`ChannelState::change`] to announce what it changed. Returns
    /// whether the channel's receiving edges may have changed (`remote`, or
    /// a hinted edge heard from).
    pub fn merge_update(&mut self, me: EdgeId, u: &pb::DirectoryUpdate, expires: Instant) -> bool {
        let mut changed = false;
        for e in u.edges.iter().filter(|e| e.edge_id != me) {
            if let Some(h) = self.hinted.get_mut(&e.edge_id) {
                // Heard from: its entry decides from now on.
                changed |= !std::mem::replace(&mut h.heard, true);
            }
            if e.members.is_empty() {
                changed |= self.remote.remove(&e.edge_id).is_some();
                continue;
            }
            match self.remote.get_mut(&e.edge_id) {
                Some(r) => {
                    r.expires = r.expires.max(expires);
                    if r.members != e.members {
                        r.members = e.members.clone();
                        changed = true;
                    }
                }
                None => {
                    self.remote.insert(
                        e.edge_id,
                        RemoteEdge {
                            members: e.members.clone(),
                            expires,
                        },
                    );
                    changed = true;
                }
            }
        }
        if changed {
            self.remote_version += 1;
        }
        changed
    }

    /// Whether an entry has expired by `now` (then [`ChannelState::expire`]
    /// inside a change announces who left).
    pub fn has_expired(&self, now: Instant) -> bool {
        self.remote.values().any(|r| r.expires <= now)
    }

    /// Forget remote edges no home refreshed by `now`.
    pub fn expire(&mut self, now: Instant) {
        let before = self.remote.len();
        self.remote.retain(|_, r| r.expires > now);
        if self.remote.len() != before {
            self.remote_version += 1;
        }
    }

    fn views(&self) -> HashMap<u64, MemberView> {
        let mut out: HashMap<u64, MemberView> = self
            .local
            .values()
            .map(|m| {
                (
                    m.session,
                    MemberView {
                        user: m.user.clone(),
                        tracks: m.tracks.clone(),
                        edge: 0,
                    },
                )
            })
            .collect();
        for (edge, r) in &self.remote {
            for m in &r.members {
                out.entry(m.session).or_insert_with(|| MemberView {
                    user: m.user_id.clone(),
                    tracks: m.tracks.clone(),
                    edge: *edge,
                });
            }
        }
        out
    }

    fn reindex_tracks(&mut self) {
        let mut tracks = HashMap::new();
        for m in self.local.values() {
            for t in &m.tracks {
                tracks.insert(
                    TrackKey(t.track_key),
                    TrackOwner {
                        user: m.user.clone(),
                        session: m.session,
                    },
                );
            }
        }
        for r in self.remote.values() {
            for m in &r.members {
                for t in &m.tracks {
                    tracks
                        .entry(TrackKey(t.track_key))
                        .or_insert_with(|| TrackOwner {
                            user: m.user_id.clone(),
                            session: m.session,
                        });
                }
            }
        }
        self.tracks = tracks;
    }
}

/// The announcements (about which session) that turn `before` into `after`.
fn diff(
    channel: ChannelId,
    before: &HashMap<u64, MemberView>,
    after: &HashMap<u64, MemberView>,
) -> Vec<(u64, SK)> {
    let mut events: Vec<(u64, SK)> = vec![];
    let cid = channel.0;
    for (s, v) in after {
        match before.get(s) {
            None => {
                events.push((
                    *s,
                    SK::MemberJoined(pb::MemberJoined {
                        channel_id: cid,
                        user_id: v.user.clone(),
                        session: *s,
                        edge_id: v.edge,
                    }),
                ));
                for t in &v.tracks {
                    events.push((*s, track_available(cid, &v.user, t)));
                }
            }
            Some(old) => {
                for t in &v.tracks {
                    if !old.tracks.iter().any(|o| o.track_key == t.track_key) {
                        events.push((*s, track_available(cid, &v.user, t)));
                    }
                }
                for o in &old.tracks {
                    if !v.tracks.iter().any(|t| t.track_key == o.track_key) {
                        events.push((*s, track_unavailable(cid, &v.user, o.track_key)));
                    }
                }
            }
        }
    }
    for (s, old) in before {
        if !after.contains_key(s) {
            for o in &old.tracks {
                events.push((*s, track_unavailable(cid, &old.user, o.track_key)));
            }
            events.push((
                *s,
                SK::MemberLeft(pb::MemberLeft {
                    channel_id: cid,
                    user_id: old.user.clone(),
                    session: *s,
                    ..Default::default()
                }),
            ));
        }
    }
    events
}

fn track_available(cid: u64, user: &str, t: &TrackInfo) -> SK {
    SK::TrackAvailable(pb::TrackAvailable {
        channel_id: cid,
        user_id: user.into(),
        track: Some(t.clone()),
    })
}

fn track_unavailable(cid: u64, user: &str, key: u64) -> SK {
    SK::TrackUnavailable(pb::TrackUnavailable {
        channel_id: cid,
        user_id: user.into(),
        track_key: key,
    })
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

    fn update(home: EdgeId, edges: &[(EdgeId, Vec<DirectoryMember>)]) -> pb::DirectoryUpdate {
        pb::DirectoryUpdate {
            home_edge: home,
            channel_id: CH.0,
            edges: edges
                .iter()
                .map(|(e, m)| pb::EdgeMembers {
                    edge_id: *e,
                    members: m.clone(),
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
        st.change(CH, |st| {
            st.local
                .insert(1, member("alice", 1, MediaSubscription::All));
            st.local.insert(2, member("bob", 2, MediaSubscription::All));
            st.local.insert(
                3,
                member(
                    "carol",
                    3,
                    MediaSubscription::Users(["alice".into()].into()),
                ),
            );
            st.local.insert(
                4,
                member("dave", 4, MediaSubscription::Users(["bob".into()].into())),
            );
            st.local
                .insert(5, member("erin", 5, MediaSubscription::None));
            let mut mute = member("frank", 6, MediaSubscription::All);
            mute.can_subscribe = false;
            st.local.insert(6, mute);
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
        st.change(CH, |st| {
            st.local.insert(
                1,
                member("alice", 1, MediaSubscription::Users(["zoe".into()].into())),
            );
            st.local.insert(
                2,
                member("bob", 2, MediaSubscription::Users(["yann".into()].into())),
            );
            st.merge_update(
                ME,
                &update(9, &[(2, vec![remote("zoe", 20, &[100], true)])]),
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
        let (_, told_join) = st.change(CH, |st| {
            st.local
                .insert(1, member("alice", 1, MediaSubscription::All));
        });
        assert!(told_join.is_empty(), "a member is not told of its own join");
        let (_, a) = st.change(CH, |st| {
            st.local.insert(2, member("bob", 2, MediaSubscription::All));
        });
        assert_eq!(told(&a), [("alice", "joined", "bob".into())]);
        let (_, a) = st.change(CH, |st| {
            st.local.get_mut(&2).unwrap().tracks.push(track(5));
        });
        assert_eq!(told(&a), [("alice", "track", "bob".into())]);
        assert_eq!(st.track_owner(TrackKey(5)).unwrap().session, 2);
        let (_, a) = st.change(CH, |st| {
            st.local.remove(&2);
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
        let (_, a) = st.change(CH, |st| {
            st.local.get_mut(&1).unwrap().media = MediaSubscription::None
        });
        assert!(a.is_empty(), "a subscription change announces nothing");
    }

    #[test]
    fn updates_from_two_homes_are_merged_not_replaced() {
        let mut st = State::default();
        let now = Instant::now();
        st.local
            .insert(1, member("alice", 1, MediaSubscription::All));
        // Home 8 knows edges 2 and 3; home 9 has just started and knows only
        // edge 3 (and this edge, whose entry is never merged).
        let from_8 = update(
            8,
            &[
                (2, vec![remote("bob", 2, &[], true)]),
                (3, vec![remote("carol", 3, &[], true)]),
            ],
        );
        let from_9 = update(
            9,
            &[
                (3, vec![remote("carol", 3, &[], true)]),
                (ME, vec![remote("ghost", 99, &[], true)]),
            ],
        );
        let (_, a) = st.change(CH, |st| {
            st.merge_update(ME, &from_8, now + Duration::from_secs(3))
        });
        assert_eq!(
            told(&a),
            [
                ("alice", "joined", "bob".into()),
                ("alice", "joined", "carol".into())
            ]
        );
        let version = st.remote_version;
        assert!(!st.is_news(ME, &from_9), "home 9 says nothing new");
        st.refresh_expiries(ME, &from_9, now + Duration::from_secs(5));
        assert_eq!(st.receiving_edges(None), [2, 3], "home 9 erased nothing");
        assert_eq!(st.remote_version, version, "trees stay cached");
        // Edge 3's entry lives until home 9's later expiry, edge 2's until
        // home 8's: at 4 s edge 2's member is gone, carol stays.
        let later = now + Duration::from_secs(4);
        assert!(st.has_expired(later));
        let (_, a) = st.change(CH, |st| st.expire(later));
        assert_eq!(told(&a), [("alice", "left", "bob".into())]);
        assert_eq!(st.receiving_edges(None), [3]);
        // A home's empty entry is an edge that left.
        let (changed, a) = st.change(CH, |st| {
            st.merge_update(ME, &update(8, &[(3, vec![])]), later)
        });
        assert!(changed);
        assert_eq!(told(&a), [("alice", "left", "carol".into())]);
        assert!(st.remote.is_empty());
    }

    #[test]
    fn members_carry_their_edge_and_hinted_edges_are_greeted_once_then_told_until_the_hint_ends() {
        let mut st = State::default();
        let now = Instant::now();
        st.local
            .insert(1, member("alice", 1, MediaSubscription::All));
        let (_, a) = st.change(CH, |st| {
            st.merge_update(
                ME,
                &update(8, &[(2, vec![remote("bob", 2, &[5], true)])]),
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
        st.local
            .insert(1, member("alice", 1, MediaSubscription::All));
        st.merge_update(
            ME,
            &update(8, &[(2, vec![remote("bob", 2, &[5], true)])]),
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
        assert!(st.is_news(ME, &update_3));
        assert!(st.merge_update(ME, &update_3, now + Duration::from_secs(3)));
        assert_eq!(st.receiving_edges(None), [2, 4]);
        // Edge 4 withdraws (its members left): no longer provisional.
        let version = st.remote_version;
        let update_4 = update(4, &[(4, vec![])]);
        assert!(
            st.is_news(ME, &update_4),
            "an unheard hint's withdrawal is news"
        );
        st.merge_update(ME, &update_4, now + Duration::from_secs(3));
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
        st.change(CH, |st| {
            st.local
                .insert(1, member("alice", 1, MediaSubscription::None));
            st.local
                .insert(2, member("bob", 2, MediaSubscription::None));
            let mut listener = member("carol", 3, MediaSubscription::None);
            listener.can_subscribe = false;
            st.local.insert(3, listener);
            let u = update(
                8,
                &[
                    (2, vec![remote("dan", 20, &[], true)]),
                    (3, vec![remote("bob", 30, &[], true)]),
                    (4, vec![remote("eve", 40, &[], false)]),
                ],
            );
            st.merge_update(ME, &u, Instant::now());
        });
        let all = pb::ChatMessage {
            channel_id: CH.0,
            ..Default::default()
        };
        assert_eq!(sorted(st.message_recipients(&all, Some(1))), ["bob"]);
        assert_eq!(
            st.receiving_edges(None),
            [2, 3],
            "edge 4 hosts no subscriber"
        );
        let to_bob = pb::ChatMessage {
            to_user: "bob".into(),
            ..all
        };
        assert_eq!(sorted(st.message_recipients(&to_bob, None)), ["bob"]);
        assert_eq!(st.receiving_edges(Some("bob")), [3]);
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
