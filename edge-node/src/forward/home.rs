//! A channel's directory as its home edge keeps it: which edges host which
//! members, from their reports (docs/protocol.md §9.6). The home pushes the
//! whole of it to every edge that hosts members.

use std::collections::HashMap;
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
    members: Vec<DirectoryMember>,
    generation: u64,
    seen: Instant,
}

impl Home {
    /// Take an edge's report, received at `now`. A report older (by
    /// generation) than the one the home has is ignored: reports cross the
    /// overlay on several paths and may arrive out of order. Returns whether
    /// the members changed (then the home pushes an update).
    pub fn apply_report(&mut self, r: pb::DirectoryReport, now: Instant) -> bool {
        match self.edges.get_mut(&r.reporter_edge) {
            Some(e) if e.generation > r.generation => false,
            Some(e) => {
                e.seen = now;
                e.generation = r.generation;
                let changed = e.members != r.members;
                e.members = r.members;
                changed
            }
            None => {
                self.edges.insert(
                    r.reporter_edge,
                    HomeEntry {
                        members: r.members,
                        generation: r.generation,
                        seen: now,
                    },
                );
                true
            }
        }
    }

    /// The update the home at `me` pushes for `channel` (a new version), and
    /// the edges it goes to: every edge hosting members.
    pub fn update(&mut self, me: EdgeId, channel: ChannelId) -> (pb::DirectoryUpdate, Vec<EdgeId>) {
        self.version += 1;
        let update = pb::DirectoryUpdate {
            home_edge: me,
            channel_id: channel.0,
            edges: self
                .edges
                .iter()
                .map(|(id, e)| pb::EdgeMembers {
                    edge_id: *id,
                    members: e.members.clone(),
                    ..Default::default()
                })
                .collect(),
            version: self.version,
            hop_limit: INITIAL_HOP_LIMIT as u32,
            tree: vec![],
            greeting: false,
            ..Default::default()
        };
        let mut dests: Vec<EdgeId> = update
            .edges
            .iter()
            .filter(|e| !e.members.is_empty())
            .map(|e| e.edge_id)
            .collect();
        dests.sort_unstable();
        (update, dests)
    }

    /// Forget edges whose last report is `ttl` old at `now` (a dead edge's
    /// members vanish). Returns whether the home is left empty.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> bool {
        self.edges
            .retain(|_, e| now.saturating_duration_since(e.seen) < ttl);
        self.edges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(edge: EdgeId, generation: u64, users: &[&str]) -> pb::DirectoryReport {
        pb::DirectoryReport {
            reporter_edge: edge,
            channel_id: 7,
            members: users
                .iter()
                .enumerate()
                .map(|(i, u)| DirectoryMember {
                    user_id: (*u).into(),
                    tracks: vec![],
                    subscribes: true,
                    session: i as u64,
                })
                .collect(),
            generation,
            hop_limit: 8,
            tree: vec![],
            ..Default::default()
        }
    }

    #[test]
    fn reports_change_the_home_in_generation_order_and_expire() {
        let mut home = Home::default();
        let t0 = Instant::now();
        assert!(home.apply_report(report(2, 10, &["a"]), t0));
        assert!(home.apply_report(report(3, 5, &["b"]), t0));
        assert!(
            !home.apply_report(report(2, 9, &[]), t0),
            "an older report is ignored"
        );
        assert!(
            !home.apply_report(report(2, 11, &["a"]), t0),
            "a refresh changes nothing"
        );
        assert!(
            home.apply_report(report(3, 6, &[]), t0),
            "edge 3's member left"
        );
        let (u, dests) = home.update(1, ChannelId(7));
        assert_eq!((u.home_edge, u.version), (1, 1));
        assert_eq!(
            u.edges.len(),
            2,
            "the empty entry is pushed too: edges drop it"
        );
        assert_eq!(dests, [2], "only edges hosting members get it");
        assert_eq!(home.update(1, ChannelId(7)).0.version, 2);
        let ttl = Duration::from_secs(3);
        assert!(home.apply_report(report(3, 7, &["c"]), t0 + ttl));
        assert!(!home.expire(t0 + ttl, ttl), "edge 3 refreshed");
        assert_eq!(home.update(1, ChannelId(7)).1, [3], "edge 2 expired");
        assert!(home.expire(t0 + 2 * ttl, ttl));
    }
}
