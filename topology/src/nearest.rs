//! Ranking candidate edges for a client: the GeoIP shortlist of docs/control-plane.md, "Nearest edge".
//!
//! Why: the controller cannot measure a client's RTT before it connects, so
//! it offers a short list of edges likely to be close, and the SDK probes
//! them and connects to the fastest (keeping the next as fallback). The list
//! must be good enough that the real best edge is on it, and spread enough
//! that a wrong GeoIP guess is caught by the probes.
//!
//! With a client location, edges are ranked by estimated RTT (great-circle
//! fiber bound × inflation) plus a load penalty. Without one (GeoIP miss,
//! private address), there is nothing to estimate from, so the list is the
//! least-loaded healthy edges taken round-robin across regions: one per region
//! before a second from any region, regions ordered by their least-loaded
//! edge. The SDK's probes then find the nearest of a geographically spread
//! set, which is what Tailscale's netcheck does at start (probe every region).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::geo::{estimated_rtt_ms, GeoPoint, DEFAULT_INFLATION};
use crate::graph::EdgeId;
use crate::load::LoadPenalty;

/// An edge that could serve a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeCandidate {
    /// The edge's id.
    pub id: EdgeId,
    /// Where the edge is.
    pub location: GeoPoint,
    /// Its region.
    pub region: String,
    /// Registered and reporting fresh stats.
    pub healthy: bool,
    /// Shutting down: takes no new clients.
    pub draining: bool,
    /// Load, 0..1.
    pub load: f64,
}

/// A candidate on the shortlist, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedEdge {
    /// The edge's id.
    pub id: EdgeId,
    /// Its region.
    pub region: String,
    /// Great-circle distance from the client, when its location is known.
    pub distance_km: Option<f64>,
    /// Estimated RTT from the client, when its location is known.
    pub est_rtt_ms: Option<f64>,
    /// Lower is better, and the list is in increasing score order. With a
    /// client location: estimated RTT plus load penalties, in ms. Without one:
    /// the rank (0, 1, 2, ...), as there is no latency to speak of.
    pub score: f64,
}

/// Tunables of the ranking.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NearestPolicy {
    /// RTT inflation over the fiber bound. 1.6: the median of published
    /// inter-region measurements.
    pub inflation: f64,
    /// Penalty above the soft load limit (0.9, as for transit relays).
    pub load: LoadPenalty,
    /// Extra ms per unit of load at any load. 2 ms: enough that of several
    /// edges in one city the least loaded wins (instead of the lowest id taking
    /// every client until it hits the soft limit), small enough that it never
    /// outweighs more than about 125 km of distance.
    pub load_tiebreak_ms: f64,
}

impl Default for NearestPolicy {
    fn default() -> Self {
        NearestPolicy {
            inflation: DEFAULT_INFLATION,
            load: LoadPenalty::default(),
            load_tiebreak_ms: 2.0,
        }
    }
}

/// Ranks `candidates` for a client at `client` with the default policy and
/// returns at most `limit` of them. See [`rank_nearest_with`].
pub fn rank_nearest(
    client: Option<GeoPoint>,
    candidates: &[EdgeCandidate],
    limit: usize,
) -> Vec<RankedEdge> {
    rank_nearest_with(&NearestPolicy::default(), client, candidates, limit)
}

/// Ranks `candidates` for a client at `client` and returns at most `limit`,
/// best first. Unhealthy and draining edges are never listed. Ties break on
/// distance, then on id, so the result depends only on the input set.
pub fn rank_nearest_with(
    policy: &NearestPolicy,
    client: Option<GeoPoint>,
    candidates: &[EdgeCandidate],
    limit: usize,
) -> Vec<RankedEdge> {
    let eligible = candidates.iter().filter(|c| c.healthy && !c.draining);
    match client {
        Some(at) => by_distance(policy, at, eligible, limit),
        None => spread_by_region(eligible, limit),
    }
}

fn by_distance<'a>(
    policy: &NearestPolicy,
    client: GeoPoint,
    eligible: impl Iterator<Item = &'a EdgeCandidate>,
    limit: usize,
) -> Vec<RankedEdge> {
    let tiebreak = if policy.load_tiebreak_ms > 0.0 {
        policy.load_tiebreak_ms
    } else {
        0.0
    };
    let mut ranked: Vec<RankedEdge> = eligible
        .map(|c| {
            let est = estimated_rtt_ms(client, c.location, policy.inflation);
            RankedEdge {
                id: c.id,
                region: c.region.clone(),
                distance_km: Some(client.distance_km(&c.location)),
                est_rtt_ms: Some(est),
                score: est + policy.load.penalty_ms(c.load) + tiebreak * effective_load(c.load),
            }
        })
        .collect();
    ranked.sort_by(|a, b| {
        a.score
            .total_cmp(&b.score)
            .then(
                a.distance_km
                    .unwrap_or(0.0)
                    .total_cmp(&b.distance_km.unwrap_or(0.0)),
            )
            .then(a.id.cmp(&b.id))
    });
    ranked.truncate(limit);
    ranked
}

fn spread_by_region<'a>(
    eligible: impl Iterator<Item = &'a EdgeCandidate>,
    limit: usize,
) -> Vec<RankedEdge> {
    // Each region's edges, least loaded first.
    let mut regions: BTreeMap<&str, Vec<&EdgeCandidate>> = BTreeMap::new();
    for c in eligible {
        regions.entry(c.region.as_str()).or_default().push(c);
    }
    let by_load = |a: &&EdgeCandidate, b: &&EdgeCandidate| {
        effective_load(a.load)
            .total_cmp(&effective_load(b.load))
            .then(a.id.cmp(&b.id))
    };
    let mut queues: Vec<(&str, Vec<&EdgeCandidate>)> = regions.into_iter().collect();
    for (_, edges) in &mut queues {
        edges.sort_by(by_load);
    }
    // Regions ordered by their least-loaded edge (BTreeMap order, by name,
    // breaks ties since the sort is stable).
    queues.sort_by(|(_, a), (_, b)| match (a.first(), b.first()) {
        (Some(x), Some(y)) => by_load(x, y),
        _ => std::cmp::Ordering::Equal,
    });
    let mut out = Vec::new();
    let mut round = 0;
    while out.len() < limit {
        let mut any = false;
        for (_, edges) in &queues {
            if out.len() == limit {
                break;
            }
            if let Some(c) = edges.get(round) {
                any = true;
                out.push(RankedEdge {
                    id: c.id,
                    region: c.region.clone(),
                    distance_km: None,
                    est_rtt_ms: None,
                    score: out.len() as f64,
                });
            }
        }
        if !any {
            break;
        }
        round += 1;
    }
    out
}

/// Load for ordering: clamped to 0..=1, unknown counts as full.
fn effective_load(load: f64) -> f64 {
    if load.is_nan() {
        1.0
    } else {
        load.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::city_by_code;
    use proptest::prelude::*;

    fn at(code: &str) -> GeoPoint {
        city_by_code(code).expect("city").point()
    }

    fn edge(id: EdgeId, code: &str, load: f64) -> EdgeCandidate {
        let city = city_by_code(code).expect("city");
        EdgeCandidate {
            id,
            location: city.point(),
            region: city.region.to_string(),
            healthy: true,
            draining: false,
            load,
        }
    }

    fn ids(r: &[RankedEdge]) -> Vec<EdgeId> {
        r.iter().map(|e| e.id).collect()
    }

    #[test]
    fn nearest_first_with_estimates() {
        let c = [
            edge(1, "nrt", 0.1),
            edge(2, "ams", 0.1),
            edge(3, "fra", 0.1),
            edge(4, "syd", 0.1),
        ];
        let r = rank_nearest(Some(at("fra")), &c, 3);
        assert_eq!(ids(&r), vec![3, 2, 1]);
        assert_eq!(r[0].distance_km, Some(0.0));
        let ams_km = r[1].distance_km.expect("known");
        assert!((ams_km - 365.0).abs() < 5.0);
        let est = r[1].est_rtt_ms.expect("known");
        assert!((est - 2.0 * ams_km / 200.0 * 1.6).abs() < 1e-9);
        assert!(r.windows(2).all(|w| w[0].score <= w[1].score));
        assert_eq!(r[0].region, "eu-central");
    }

    #[test]
    fn unhealthy_and_draining_are_excluded() {
        let mut c = vec![
            edge(1, "fra", 0.1),
            edge(2, "ams", 0.1),
            edge(3, "lhr", 0.1),
        ];
        c[0].healthy = false;
        c[1].draining = true;
        assert_eq!(ids(&rank_nearest(Some(at("fra")), &c, 5)), vec![3]);
        assert_eq!(ids(&rank_nearest(None, &c, 5)), vec![3]);
        c[2].healthy = false;
        assert!(rank_nearest(Some(at("fra")), &c, 5).is_empty());
        assert!(rank_nearest(Some(at("fra")), &[], 5).is_empty());
    }

    #[test]
    fn overloaded_edge_loses_to_a_close_neighbour() {
        let c = [edge(1, "fra", 1.0), edge(2, "ams", 0.3)];
        let r = rank_nearest(Some(at("fra")), &c, 2);
        assert_eq!(ids(&r), vec![2, 1]);
        // Below the soft limit, distance wins.
        let c = [edge(1, "fra", 0.85), edge(2, "ams", 0.1)];
        assert_eq!(ids(&rank_nearest(Some(at("fra")), &c, 2)), vec![1, 2]);
    }

    #[test]
    fn same_city_prefers_less_load_then_lower_id() {
        let c = [
            edge(7, "fra", 0.5),
            edge(5, "fra", 0.2),
            edge(6, "fra", 0.2),
        ];
        assert_eq!(ids(&rank_nearest(Some(at("fra")), &c, 3)), vec![5, 6, 7]);
        assert_eq!(
            ids(&rank_nearest(Some(at("fra")), &c, 0)),
            Vec::<EdgeId>::new()
        );
    }

    #[test]
    fn unknown_location_spreads_across_regions() {
        let c = [
            edge(1, "fra", 0.5),
            edge(2, "fra", 0.1),
            edge(3, "ams", 0.3),
            edge(4, "iad", 0.2),
            edge(5, "jfk", 0.6),
            edge(6, "nrt", 0.9),
            edge(7, "sin", f64::NAN),
        ];
        let r = rank_nearest(None, &c, 10);
        // Regions by least load: eu-central (0.1), us-east (0.2), eu-west
        // (0.3), ap-northeast (0.9), ap-southeast (unknown = 1.0); then the
        // second round.
        assert_eq!(ids(&r), vec![2, 4, 3, 6, 7, 1, 5]);
        assert!(r
            .iter()
            .all(|e| e.distance_km.is_none() && e.est_rtt_ms.is_none()));
        assert_eq!(
            r.iter().map(|e| e.score).collect::<Vec<_>>(),
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        assert_eq!(ids(&rank_nearest(None, &c, 3)), vec![2, 4, 3]);
    }

    fn candidate() -> impl Strategy<Value = EdgeCandidate> {
        (
            0..50u32,
            0..crate::geo::CITIES.len(),
            any::<bool>(),
            prop::bool::weighted(0.2),
            0.0..1.2f64,
        )
            .prop_map(|(id, city, healthy, draining, load)| {
                let c = &crate::geo::CITIES[city];
                EdgeCandidate {
                    id,
                    location: c.point(),
                    region: c.region.to_string(),
                    healthy,
                    draining,
                    load,
                }
            })
    }

    proptest! {
        #[test]
        fn ranking_is_sorted_filtered_and_order_independent(
            cands in prop::collection::vec(candidate(), 0..30),
            client in prop::option::of(0..crate::geo::CITIES.len()),
            limit in 0..12usize,
        ) {
            let client = client.map(|i| crate::geo::CITIES[i].point());
            let r = rank_nearest(client, &cands, limit);
            let eligible = cands.iter().filter(|c| c.healthy && !c.draining).count();
            prop_assert_eq!(r.len(), limit.min(eligible));
            prop_assert!(r.windows(2).all(|w| w[0].score <= w[1].score));
            for e in &r {
                prop_assert!(cands.iter().any(|c| c.id == e.id && c.healthy && !c.draining));
            }
            let mut reversed = cands.clone();
            reversed.reverse();
            // Same ranking from any input order (ids may repeat in the
            // generated input, so compare ids and scores only).
            let r2 = rank_nearest(client, &reversed, limit);
            let key = |r: &[RankedEdge]| r.iter().map(|e| (e.id, e.score.to_bits())).collect::<Vec<_>>();
            if cands.iter().map(|c| c.id).collect::<std::collections::HashSet<_>>().len() == cands.len() {
                prop_assert_eq!(key(&r), key(&r2));
            }
        }
    }
}
