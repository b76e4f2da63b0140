//! Routes to other regions, composed by the edge from what hierarchical
//! routing publishes (docs/control-plane.md "Routes at scale"): its own
//! routes record (paths to its region's edges and to the hubs it reaches,
//! with costs), every region's record (hubs, table, tolls, hub links) and
//! its region's exits. No I/O: [`crate::control`] feeds it the records.
//!
//! With flat routing the routes record already names every destination (it
//! carries no costs) and nothing is composed.

use std::collections::{BTreeMap, HashMap};

use control::records::{ExitsRecord, RegionRecord, RoutesRecord};
use protocol::EdgeId;
use topology::hierarchy::{Exits, Hierarchy, HubLink, HubPolicy, Hubs};
use topology::GeoPoint;

/// Best and backup paths composed for the edges of other regions.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ComposedRoutes {
    pub paths: HashMap<EdgeId, Vec<EdgeId>>,
    pub backups: HashMap<EdgeId, Vec<EdgeId>>,
}

impl ComposedRoutes {
    /// The routes of `routes`' edge to every edge of another region that a
    /// record of `regions` lists. Empty when routing is flat (no costs
    /// published) or no region record is known yet; a region record that
    /// does not validate is left out (the mirror already dropped it).
    pub fn compose(
        routes: &RoutesRecord,
        regions: &BTreeMap<String, RegionRecord>,
        exits: Option<&ExitsRecord>,
    ) -> ComposedRoutes {
        let mut out = ComposedRoutes::default();
        let hierarchical = routes.routes.iter().any(|r| r.cost_us.is_some());
        if !hierarchical || regions.is_empty() {
            return out;
        }
        let tables = regions.values().filter_map(|r| r.table().ok()).collect();
        let links: Vec<HubLink> = regions.values().flat_map(RegionRecord::hub_links).collect();
        let hier = Hierarchy::from_published(tables, &links);
        let source = hier.source_routes_of(routes.route_set());
        let exits: Exits = exits.map(ExitsRecord::exits).unwrap_or_default();
        let mine = hier.region_of(routes.edge).map(str::to_owned);
        for table in hier.tables() {
            if Some(table.region()) == mine.as_deref() {
                continue;
            }
            for &dest in table.members() {
                let Some(c) = hier.compose(&exits, &source, dest) else {
                    continue;
                };
                if let Some(b) = c.backup() {
                    out.backups.insert(dest, b.to_vec());
                }
                out.paths.insert(dest, c.best);
            }
        }
        out
    }
}

/// The hubs this edge probes besides its own choice of targets, from the
/// region records (`topology::hierarchy::hub_targets`): without those
/// links the hub graph has holes and routes between regions would miss
/// their best entry. Empty when no region record is known (flat routing).
pub fn hub_probe_targets(
    (me, region, at): (EdgeId, &str, GeoPoint),
    regions: &BTreeMap<String, RegionRecord>,
    location: impl Fn(EdgeId) -> Option<GeoPoint>,
) -> Vec<EdgeId> {
    let hubs: Hubs = regions
        .values()
        .map(|r| (r.region.clone(), r.hubs.clone()))
        .collect();
    topology::hierarchy::hub_targets((me, region, at), &hubs, location, &HubPolicy::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::records::{RouteRecord, RoutesRecord};

    /// Region a: 1 (hub), 2. Region b: 3 (hub), 4. Links 1-3 (10 ms),
    /// 3-4 (5 ms), 2-1 (2 ms); tolls 1 ms.
    fn records() -> (RoutesRecord, BTreeMap<String, RegionRecord>) {
        let region =
            |name: &str, members: Vec<EdgeId>, cost: Vec<Option<u64>>, pred, links| RegionRecord {
                region: name.into(),
                controller: "c".into(),
                computed_at_ms: 0,
                hubs: vec![members[0]],
                members,
                cost_us: cost,
                pred,
                toll_us: vec![1_000, 1_000],
                hub_links: links,
            };
        let mut regions = BTreeMap::new();
        regions.insert(
            "a".into(),
            region(
                "a",
                vec![1, 2],
                vec![Some(0), Some(2_000)],
                vec![None, Some(0)],
                vec![(1, 3, 10_000)],
            ),
        );
        regions.insert(
            "b".into(),
            region(
                "b",
                vec![3, 4],
                vec![Some(0), Some(5_000)],
                vec![None, Some(0)],
                vec![(3, 1, 10_000)],
            ),
        );
        let route = |dest, best: Vec<EdgeId>, cost_us| RouteRecord {
            dest,
            best,
            backup: None,
            cost_us: Some(cost_us),
            backup_cost_us: None,
        };
        let routes = RoutesRecord {
            edge: 2,
            region: "a".into(),
            controller: "c".into(),
            computed_at_ms: 0,
            routes: vec![route(1, vec![2, 1], 2_000), route(3, vec![2, 1, 3], 13_000)],
        };
        (routes, regions)
    }

    #[test]
    fn edges_of_other_regions_are_reached_through_their_hubs() {
        let (routes, regions) = records();
        let c = ComposedRoutes::compose(&routes, &regions, None);
        assert_eq!(c.paths.get(&4), Some(&vec![2, 1, 3, 4]));
        assert_eq!(c.paths.get(&3), Some(&vec![2, 1, 3]));
        assert!(!c.paths.contains_key(&1), "own region: the record's");
    }

    #[test]
    fn an_exit_straight_to_the_destination_wins_when_cheaper() {
        let (routes, regions) = records();
        let exits = ExitsRecord {
            region: "a".into(),
            controller: "c".into(),
            computed_at_ms: 0,
            links: vec![(2, 4, 9_000)],
        };
        let c = ComposedRoutes::compose(&routes, &regions, Some(&exits));
        assert_eq!(c.paths.get(&4), Some(&vec![2, 4]));
        assert_eq!(c.backups.get(&4), Some(&vec![2, 1, 3, 4]));
    }

    #[test]
    fn flat_routes_compose_nothing() {
        let (mut routes, regions) = records();
        for r in &mut routes.routes {
            r.cost_us = None;
        }
        assert_eq!(
            ComposedRoutes::compose(&routes, &regions, None),
            ComposedRoutes::default()
        );
    }
}
