//! A channel as one edge sees it: its local members (sessions on this edge)
//! and the remote edges that host other members (learned from the channel's
//! directory home, see `directory.rs`). All soft state: rebuilt from clients
//! rejoining and from directory refreshes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use protocol::pb::{self, server_frame::Kind as SK, DirectoryMember, TrackInfo};
use protocol::{ChannelId, EdgeId, TrackKey};

use crate::session::ClientHandle;

/// What a local member wants of the channel's media.
#[derive(Clone, Debug, Default)]
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
}

pub struct LocalMember {
    pub user: String,
    pub session: u64,
    pub client: Arc<ClientHandle>,
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub media: MediaSubscription,
    pub tracks: Vec<TrackInfo>,
}

pub struct RemoteEdge {
    pub members: Vec<DirectoryMember>,
    pub expires: Instant,
}

/// Who owns a track: used to filter media by subscription.
#[derive(Clone, Debug)]
pub struct TrackOwner {
    pub user: String,
    pub session: u64,
}

#[derive(Default)]
pub struct ChannelState {
    pub local: HashMap<u64, LocalMember>,
    pub remote: HashMap<EdgeId, RemoteEdge>,
    pub tracks: HashMap<TrackKey, TrackOwner>,
    /// Bumped on every local change; the directory report carries it.
    pub local_generation: u64,
    /// Bumped on every change of `remote`; invalidates cached trees.
    pub remote_version: u64,
}

pub struct Channel {
    pub id: ChannelId,
    pub app: String,
    pub name: String,
    state: RwLock<ChannelState>,
    /// Media trees to the remote edges, cached per (route table version,
    /// remote version): rebuilt only when either changes, not per packet.
    pub tree_cache: std::sync::Mutex<Option<TreeCache>>,
}

pub struct TreeCache {
    pub route_version: u64,
    pub remote_version: u64,
    pub trees: Arc<Vec<protocol::route_tree::RouteTree>>,
}

/// A member session as announced to clients.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MemberView {
    user: String,
    tracks: Vec<TrackInfo>,
}

impl Channel {
    pub fn new(id: ChannelId, app: &str, name: &str) -> Arc<Self> {
        Arc::new(Channel {
            id,
            app: app.into(),
            name: name.into(),
            state: RwLock::new(ChannelState::default()),
            tree_cache: std::sync::Mutex::new(None),
        })
    }

    pub fn read(&self) -> RwLockReadGuard<'_, ChannelState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Apply a change and tell local members what it changed (joins, leaves,
    /// tracks), excluding each member's own session.
    pub fn update<R>(&self, change: impl FnOnce(&mut ChannelState) -> R) -> R {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        let before = views(&st);
        let out = change(&mut st);
        let after = views(&st);
        reindex_tracks(&mut st);
        announce(self.id, &st, &before, &after);
        out
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, ChannelState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The members other than `session`, for a Joined reply.
    pub fn members_except(&self, session: u64) -> Vec<pb::Member> {
        views(&self.read())
            .into_iter()
            .filter(|(s, _)| *s != session)
            .map(|(s, v)| pb::Member {
                user_id: v.user,
                tracks: v.tracks,
                session: s,
            })
            .collect()
    }
}

impl ChannelState {
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

    /// Remote edges that need the channel's media and messages.
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
            .collect();
        out.sort_unstable();
        out
    }
}

fn views(st: &ChannelState) -> HashMap<u64, MemberView> {
    let mut out: HashMap<u64, MemberView> = st
        .local
        .values()
        .map(|m| {
            (
                m.session,
                MemberView {
                    user: m.user.clone(),
                    tracks: m.tracks.clone(),
                },
            )
        })
        .collect();
    for r in st.remote.values() {
        for m in &r.members {
            out.entry(m.session).or_insert_with(|| MemberView {
                user: m.user_id.clone(),
                tracks: m.tracks.clone(),
            });
        }
    }
    out
}

fn reindex_tracks(st: &mut ChannelState) {
    let mut tracks = HashMap::new();
    for m in st.local.values() {
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
    for r in st.remote.values() {
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
    st.tracks = tracks;
}

fn announce(
    channel: ChannelId,
    st: &ChannelState,
    before: &HashMap<u64, MemberView>,
    after: &HashMap<u64, MemberView>,
) {
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
                }),
            ));
        }
    }
    if events.is_empty() {
        return;
    }
    for m in st.local.values() {
        for (about, ev) in &events {
            if *about != m.session {
                m.client.send_frame(ev.clone());
            }
        }
    }
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
