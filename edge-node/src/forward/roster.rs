//! Who a channel's clients are told is in it: every member session the edge
//! knows (local or remote), the announcements that turn one view into the
//! next, and large-channel mode (docs/protocol.md §4.3, "Large channels").
//!
//! The roster is kept, not recomputed: a change names the sessions it
//! touched and costs what they cost, so a join into a 10,000-member channel
//! costs the same as into a 10-member one. In a large channel, members that
//! publish nothing are counted (`MemberCount`, at most once per
//! [`MEMBER_COUNT_INTERVAL_MS`]) instead of announced, so a viewer's join
//! announces nothing to the other viewers.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use protocol::limits::{LARGE_CHANNEL_MEMBERS, MEMBER_COUNT_INTERVAL_MS, SMALL_AGAIN_MEMBERS};
use protocol::pb::{self, server_frame::Kind as SK, MemberLeftReason, TrackInfo};
use protocol::{ChannelId, EdgeId};

/// A member session as announced to clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    pub user: String,
    pub tracks: Vec<TrackInfo>,
    /// The edge hosting it; 0 for this edge.
    pub edge: EdgeId,
}

impl MemberView {
    fn publishes(&self) -> bool {
        !self.tracks.is_empty()
    }
}

/// An announcement and the session it is about (`None`: about the channel,
/// sent to every local member). A member is never told about itself.
pub type Event = (Option<u64>, SK);

#[derive(Default)]
pub struct Roster {
    views: HashMap<u64, MemberView>,
    /// Sessions with at least one track: listed even in a large channel.
    publishing: HashSet<u64>,
    large: bool,
    /// The count last sent in large mode, and when.
    count_told: Option<(usize, Instant)>,
    /// Members the homes' digests count on other edges beyond what this
    /// edge's copies of their entries hold (negative: fewer), while the
    /// copies catch up ([`super::remote::RemoteEntries::uncopied`]).
    uncopied: isize,
}

impl Roster {
    /// Member sessions in the channel: those known one by one, and those
    /// the homes' digests count that have not arrived yet.
    pub fn len(&self) -> usize {
        self.views.len().saturating_add_signed(self.uncopied)
    }

    /// Set what the digests count beyond the copies (counted from the next
    /// [`Roster::apply`] or [`Roster::count_due`] on).
    pub fn set_uncopied(&mut self, n: isize) {
        self.uncopied = n;
    }

    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    pub fn is_large(&self) -> bool {
        self.large
    }

    pub fn get(&self, session: u64) -> Option<&MemberView> {
        self.views.get(&session)
    }

    /// Set the views of some sessions (`None`: gone) and return what the
    /// local members must be told, in order. If the count crosses a
    /// threshold, the mode switch comes first when the channel becomes
    /// large (then the events about publishers only: a merge that brings
    /// a thousand viewers at once announces none of them) and last when it
    /// becomes small (events about publishers, the switch, then every member
    /// it did not list); otherwise the events, then the count if it is due.
    pub fn apply(
        &mut self,
        channel: ChannelId,
        changes: impl IntoIterator<Item = (u64, Option<MemberView>)>,
        now: Instant,
    ) -> Vec<Event> {
        let cid = channel.0;
        let mut moved = vec![];
        for (s, new) in changes {
            let old = match &new {
                Some(v) => {
                    if v.publishes() {
                        self.publishing.insert(s);
                    } else {
                        self.publishing.remove(&s);
                    }
                    self.views.insert(s, v.clone())
                }
                None => {
                    self.publishing.remove(&s);
                    self.views.remove(&s)
                }
            };
            moved.push((s, old, new));
        }
        let n = self.len();
        let was_large = self.large;
        self.large = if was_large {
            n > SMALL_AGAIN_MEMBERS
        } else {
            n > LARGE_CHANNEL_MEMBERS
        };
        // Listed in either mode while large before or after.
        let listed = |v: &MemberView| !(was_large || self.large) || v.publishes();
        let mut events = vec![];
        if self.large && !was_large {
            self.count_told = Some((n, now));
            events.push((None, member_count(cid, n, true)));
        }
        for (s, old, new) in moved {
            let still_here = new.is_some();
            let old = old.filter(|v| listed(v));
            let new = new.filter(|v| listed(v));
            diff_one(cid, s, old.as_ref(), new.as_ref(), still_here, &mut events);
        }
        if was_large && !self.large {
            self.count_told = None;
            events.push((None, member_count(cid, n, false)));
            for (s, v) in &self.views {
                if !v.publishes() {
                    events.push((Some(*s), member_joined(cid, *s, v)));
                }
            }
        } else if was_large {
            if let Some(ev) = self.count_due(channel, now) {
                events.push((None, ev));
            }
        }
        events
    }

    /// The count of a large channel, if it changed and was last sent at
    /// least [`MEMBER_COUNT_INTERVAL_MS`] ago (the edge also asks every
    /// second, so a burst's last change is told within about a second).
    pub fn count_due(&mut self, channel: ChannelId, now: Instant) -> Option<SK> {
        if !self.large {
            return None;
        }
        let n = self.len();
        let due = match self.count_told {
            Some((told, at)) => {
                told != n
                    && now.saturating_duration_since(at)
                        >= Duration::from_millis(MEMBER_COUNT_INTERVAL_MS)
            }
            None => true,
        };
        if !due {
            return None;
        }
        self.count_told = Some((n, now));
        Some(member_count(channel.0, n, true))
    }

    /// The members a joining session `except` is told of in its `Joined`:
    /// every other one, or in a large channel those that publish.
    pub fn listed_except(&self, except: u64) -> Vec<pb::Member> {
        let sessions: Box<dyn Iterator<Item = &u64>> = if self.large {
            Box::new(self.publishing.iter())
        } else {
            Box::new(self.views.keys())
        };
        sessions
            .filter(|s| **s != except)
            .filter_map(|s| {
                let v = self.views.get(s)?;
                Some(pb::Member {
                    user_id: v.user.clone(),
                    tracks: v.tracks.clone(),
                    session: *s,
                    edge_id: v.edge,
                })
            })
            .collect()
    }
}

/// The announcements about session `s` going from `old` to `new` (each
/// `None` where clients do not list it; `still_here`: the session is in the
/// channel, only no longer listed).
fn diff_one(
    cid: u64,
    s: u64,
    old: Option<&MemberView>,
    new: Option<&MemberView>,
    still_here: bool,
    events: &mut Vec<Event>,
) {
    match (old, new) {
        (None, None) => {}
        (None, Some(v)) => {
            events.push((Some(s), member_joined(cid, s, v)));
            for t in &v.tracks {
                events.push((Some(s), track_available(cid, &v.user, t)));
            }
        }
        (Some(old), Some(v)) => {
            for t in &v.tracks {
                if !old.tracks.iter().any(|o| o.track_key == t.track_key) {
                    events.push((Some(s), track_available(cid, &v.user, t)));
                }
            }
            for o in &old.tracks {
                if !v.tracks.iter().any(|t| t.track_key == o.track_key) {
                    events.push((Some(s), track_unavailable(cid, &v.user, o.track_key)));
                }
            }
        }
        (Some(old), None) => {
            for o in &old.tracks {
                events.push((Some(s), track_unavailable(cid, &old.user, o.track_key)));
            }
            let reason = if still_here {
                MemberLeftReason::Hidden
            } else {
                MemberLeftReason::Left
            };
            events.push((
                Some(s),
                SK::MemberLeft(pb::MemberLeft {
                    channel_id: cid,
                    user_id: old.user.clone(),
                    session: s,
                    reason: reason.into(),
                }),
            ));
        }
    }
}

fn member_joined(cid: u64, s: u64, v: &MemberView) -> SK {
    SK::MemberJoined(pb::MemberJoined {
        channel_id: cid,
        user_id: v.user.clone(),
        session: s,
        edge_id: v.edge,
    })
}

fn member_count(cid: u64, members: usize, large: bool) -> SK {
    SK::MemberCount(pb::MemberCount {
        channel_id: cid,
        members: members as u64,
        large,
    })
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
    use super::*;

    const CH: ChannelId = ChannelId(7);

    fn view(user: &str, tracks: &[u64]) -> MemberView {
        MemberView {
            user: user.into(),
            tracks: tracks
                .iter()
                .map(|k| TrackInfo {
                    name: format!("t{k}"),
                    track_key: *k,
                    kind: 0,
                })
                .collect(),
            edge: 0,
        }
    }

    /// (about, kind) of each event.
    fn kinds(events: &[Event]) -> Vec<(Option<u64>, &'static str)> {
        events
            .iter()
            .map(|(s, e)| {
                let k = match e {
                    SK::MemberJoined(_) => "joined",
                    SK::MemberLeft(m) if m.reason == MemberLeftReason::Hidden as i32 => "hidden",
                    SK::MemberLeft(_) => "left",
                    SK::TrackAvailable(_) => "track",
                    SK::TrackUnavailable(_) => "untrack",
                    SK::MemberCount(c) if c.large => "large",
                    SK::MemberCount(_) => "small",
                    other => panic!("unexpected {other:?}"),
                };
                (*s, k)
            })
            .collect()
    }

    #[test]
    fn members_counted_by_digests_make_a_channel_large_before_they_arrive() {
        let mut r = Roster::default();
        let t0 = Instant::now();
        r.apply(CH, [(1, Some(view("host", &[9])))], t0);
        // The homes count 5,000 members elsewhere: the next change counts
        // them, and the channel is large without one of them listed.
        r.set_uncopied(5_000);
        let ev = r.apply(CH, [(2, Some(view("viewer", &[])))], t0);
        assert_eq!(kinds(&ev), [(None, "large")]);
        assert_eq!(r.len(), 5_002);
        // As their members arrive the digests' excess shrinks: the count
        // holds.
        r.set_uncopied(4_000);
        let members = (1_000..2_000).map(|s| (s, Some(view("v", &[]))));
        assert!(r.apply(CH, members, t0).is_empty());
        assert_eq!(r.len(), 5_002);
        let later = t0 + Duration::from_millis(MEMBER_COUNT_INTERVAL_MS);
        assert!(r.count_due(CH, later).is_none(), "unchanged");
    }

    #[test]
    fn a_channel_past_the_threshold_lists_publishers_and_counts_the_rest() {
        let mut r = Roster::default();
        let t0 = Instant::now();
        let ev = r.apply(CH, [(1, Some(view("host", &[9])))], t0);
        assert_eq!(kinds(&ev), [(Some(1), "joined"), (Some(1), "track")]);
        // Viewers up to the threshold are announced one by one.
        for s in 2..=LARGE_CHANNEL_MEMBERS as u64 {
            let ev = r.apply(CH, [(s, Some(view("viewer", &[])))], t0);
            assert_eq!(kinds(&ev), [(Some(s), "joined")]);
        }
        // The next makes the channel large: the switch, and no join.
        let next = LARGE_CHANNEL_MEMBERS as u64 + 1;
        let ev = r.apply(CH, [(next, Some(view("viewer", &[])))], t0);
        assert_eq!(kinds(&ev), [(None, "large")]);
        assert!(r.is_large());
        let listed = r.listed_except(next);
        assert_eq!(listed.len(), 1, "only the host is listed");
        assert_eq!(listed[0].session, 1);
        // More viewers: nothing per viewer; the count once per interval.
        let ev = r.apply(CH, [(500, Some(view("v", &[])))], t0);
        assert!(ev.is_empty(), "{:?}", kinds(&ev));
        assert!(r.count_due(CH, t0).is_none(), "told at t0 already");
        let later = t0 + Duration::from_millis(MEMBER_COUNT_INTERVAL_MS);
        match r.count_due(CH, later) {
            Some(SK::MemberCount(c)) => assert_eq!((c.members, c.large), (next + 1, true)),
            other => panic!("{other:?}"),
        }
        assert!(r.count_due(CH, later).is_none(), "unchanged");
        // A viewer publishing appears; unpublishing, it is hidden, not gone.
        let ev = r.apply(CH, [(500, Some(view("v", &[3])))], later);
        assert_eq!(kinds(&ev), [(Some(500), "joined"), (Some(500), "track")]);
        let ev = r.apply(CH, [(500, Some(view("v", &[])))], later);
        assert_eq!(kinds(&ev), [(Some(500), "untrack"), (Some(500), "hidden")]);
        // The host leaving is a leave.
        let ev = r.apply(CH, [(1, None)], later);
        assert_eq!(kinds(&ev), [(Some(1), "untrack"), (Some(1), "left")]);
    }

    #[test]
    fn a_large_channel_shrinking_to_half_lists_everyone_again() {
        let mut r = Roster::default();
        let t0 = Instant::now();
        let n = LARGE_CHANNEL_MEMBERS as u64 + 1;
        let ev = r.apply(CH, (1..=n).map(|s| (s, Some(view("v", &[])))), t0);
        assert_eq!(
            ev.last().map(|e| kinds(std::slice::from_ref(e))[0]),
            Some((None, "large"))
        );
        // Leaves down to just above the floor announce nothing.
        let floor = SMALL_AGAIN_MEMBERS as u64;
        let ev = r.apply(CH, (floor + 2..=n).map(|s| (s, None)), t0);
        assert!(ev.is_empty());
        assert!(r.is_large(), "hysteresis: still large at floor + 1");
        let ev = r.apply(CH, [(floor + 1, None)], t0);
        let k = kinds(&ev);
        assert_eq!(k[0], (None, "small"));
        assert_eq!(k.len(), 1 + floor as usize, "then every member joined");
        assert!(k[1..].iter().all(|(s, e)| s.is_some() && *e == "joined"));
        assert_eq!(r.listed_except(0).len(), floor as usize);
    }
}
