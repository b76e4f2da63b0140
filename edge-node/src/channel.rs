//! A channel on this edge: its state (the I/O-free
//! [`crate::forward::channel::ChannelState`], whose members are reached by
//! their [`ClientHandle`]) behind a lock, and the media trees cached for it.
//! Every change goes through [`Channel::update`], which sends the
//! announcements the state returns.

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use protocol::pb;
use protocol::route_tree::RouteTree;
use protocol::ChannelId;

use crate::forward::channel;
use crate::forward::report_pace::ReportPace;
use crate::session::ClientHandle;

pub use crate::forward::channel::{MediaSubscription, TrackOwner};

/// A channel's state on this edge: members reached by their client handle.
pub type ChannelState = channel::ChannelState<Arc<ClientHandle>>;
pub type LocalMember = channel::LocalMember<Arc<ClientHandle>>;

pub struct Channel {
    pub id: ChannelId,
    pub app: String,
    pub name: String,
    state: RwLock<ChannelState>,
    /// Media trees to the remote edges, cached per (route table version,
    /// remote version): rebuilt only when either changes, not per packet.
    pub tree_cache: Mutex<Option<TreeCache>>,
    /// Held while a directory report is taken and sent, so reports leave
    /// in the order of their generations: each delta builds on the one
    /// before, and two joins reported from two threads used to cross (the
    /// home, lacking the first delta's base, asked for the whole entry).
    /// It also paces the reports ([`ReportPace`]).
    pub reporting: Mutex<ReportPace>,
}

pub struct TreeCache {
    pub route_version: u64,
    pub remote_version: u64,
    pub trees: Arc<Vec<RouteTree>>,
}

impl Channel {
    pub fn new(id: ChannelId, app: &str, name: &str) -> Arc<Self> {
        Arc::new(Channel {
            id,
            app: app.into(),
            name: name.into(),
            state: RwLock::new(ChannelState::default()),
            tree_cache: Mutex::new(None),
            reporting: Mutex::new(ReportPace::default()),
        })
    }

    pub fn read(&self) -> RwLockReadGuard<'_, ChannelState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Apply a change and tell local members what it changed (joins, leaves,
    /// tracks), excluding each member's own session. Sent under the lock, so
    /// concurrent changes reach every client in the order they were made.
    pub fn update<R>(&self, change: impl FnOnce(&mut ChannelState) -> R) -> R {
        let mut st = self.write();
        let (out, announcements) = st.change(self.id, Instant::now(), change);
        for (client, frame) in announcements {
            client.send_frame(frame);
        }
        out
    }

    /// Tell local members a large channel's count, if due.
    pub fn tell_count_due(&self, now: Instant) {
        let mut st = self.write();
        for (client, frame) in st.count_due(self.id, now) {
            client.send_frame(frame);
        }
    }

    /// The state for a change that announces nothing (a subscription,
    /// expiries moved).
    pub fn write(&self) -> RwLockWriteGuard<'_, ChannelState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// What a `Joined` reply to `session` says of the channel: the
    /// members listed, the member count and whether the channel is large.
    pub fn joined_view(&self, session: u64) -> (Vec<pb::Member>, u64, bool) {
        let st = self.read();
        (
            st.members_except(session),
            st.member_count() as u64,
            st.is_large(),
        )
    }
}
