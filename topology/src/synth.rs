//! Synthetic meshes on real-ish geography, for benchmarks, scale tests and
//! the lab.
//!
//! Why: route computation must be measured on meshes the size of a real
//! deployment (docs/benchmarks.md, "Route computation": 1,000 edges well under 1 s, a 10,000-edge mesh
//! measured), and those meshes must look like what probing produces: edges
//! clustered in regions around real cities, each probing its own region and
//! the few nearest edges of every other region, RTTs derived from distance
//! with realistic inflation, a little loss and load here and there.
//! Generation is deterministic from a seed (a small xorshift generator, no
//! dependency).

use crate::geo::{estimated_rtt_ms, GeoPoint, CITIES, MAX_INFLATION, MIN_INFLATION};
use crate::graph::{CostModel, EdgeId, GraphError, MeshGraph, NodeInfo};
use crate::probe::LinkSummary;

/// Shape of a synthetic mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthParams {
    /// Number of edges.
    pub edges: usize,
    /// Number of regions (at most the number of regions in [`CITIES`]);
    /// edges are dealt round-robin to regions.
    pub regions: usize,
    /// Each edge probes up to this many nearest edges of its own region
    /// (`usize::MAX` for all of them).
    pub in_region_links: usize,
    /// Each edge probes up to this many nearest edges of every other region.
    pub per_region_links: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl SynthParams {
    /// The probe mesh the benchmarks use: 20 regions, each edge probing the
    /// 32 nearest edges of its region (all of them up to 33 per region) and
    /// the 8 nearest of every other region: about 180 chosen per edge, about
    /// 320 directed links per edge once every probed pair is counted both
    /// ways (at 1,000 edges and more).
    pub fn probe_mesh(edges: usize, seed: u64) -> Self {
        SynthParams {
            edges,
            regions: 20,
            in_region_links: 32,
            per_region_links: 8,
            seed,
        }
    }

    /// A sparse mesh: 10 in-region and 1 per other region chosen per edge (20
    /// regions), about 50 directed links per edge both ways counted.
    pub fn sparse_mesh(edges: usize, seed: u64) -> Self {
        SynthParams {
            edges,
            regions: 20,
            in_region_links: 10,
            per_region_links: 1,
            seed,
        }
    }
}

/// A generated mesh: nodes and directed links (both directions of every
/// probed pair).
#[derive(Debug, Clone)]
pub struct SynthMesh {
    /// Nodes, ids 0..edges.
    pub nodes: Vec<NodeInfo>,
    /// Directed links with their probe summaries.
    pub links: Vec<(EdgeId, EdgeId, LinkSummary)>,
}

impl SynthMesh {
    /// Builds the graph with `cost`.
    pub fn graph(&self, cost: CostModel) -> Result<MeshGraph, GraphError> {
        let mut b = MeshGraph::builder(cost);
        for n in &self.nodes {
            b.add_node(n.clone())?;
        }
        for &(from, to, summary) in &self.links {
            b.add_link(from, to, summary)?;
        }
        b.build()
    }
}

/// xorshift64* (Vigna): small, fast, good enough for test data.
#[derive(Debug, Clone)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// A generator from `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        XorShift64(splitmix64(seed) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Generates a mesh. Edge `i` sits in region `i % regions`, at a random city
/// of that region moved by up to ±1.5° in each direction. Each probed pair
/// gets one RTT for both directions: the great-circle fiber RTT times an
/// inflation within 1.4-2.1, plus 0.5 ms of processing. Inflation is not
/// independent per pair: each edge has a connectivity quality and a pair's
/// inflation follows the mean quality of its ends, with some noise, so well
/// connected edges make good relays (as sites at large exchanges do). 3% of pairs see
/// 0.1-5% loss, jitter is up to 2% of the RTT, loads are 0.05-0.95 with 2% of
/// edges above the soft limit, and 1% of edges are draining.
pub fn generate(params: &SynthParams) -> SynthMesh {
    let region_names = crate::geo::regions();
    let regions = params.regions.clamp(1, region_names.len());
    let mut rng = XorShift64::new(params.seed);

    let mut nodes = Vec::with_capacity(params.edges);
    let mut unit = Vec::with_capacity(params.edges);
    let mut quality = Vec::with_capacity(params.edges);
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); regions];
    for i in 0..params.edges {
        let r = i % regions;
        let cities: Vec<_> = CITIES
            .iter()
            .filter(|c| c.region == region_names[r])
            .collect();
        let city = cities[rng.below(cities.len())];
        let lat = (city.lat + rng.range(-1.5, 1.5)).clamp(-90.0, 90.0);
        let mut lon = city.lon + rng.range(-1.5, 1.5);
        if lon > 180.0 {
            lon -= 360.0;
        } else if lon < -180.0 {
            lon += 360.0;
        }
        let location = GeoPoint::new(lat, lon).unwrap_or_else(|_| city.point());
        let roll = rng.next_f64();
        let load = if roll < 0.02 {
            rng.range(0.9, 1.0)
        } else {
            rng.range(0.05, 0.9)
        };
        // How well connected the edge's site is: 0 = on a major exchange,
        // 1 = behind a detour. A pair's inflation follows both ends.
        quality.push(rng.next_f64());
        nodes.push(NodeInfo {
            id: i as EdgeId,
            region: region_names[r].to_string(),
            location,
            load,
            draining: rng.next_f64() < 0.01,
        });
        unit.push(to_unit(location));
        members[r].push(i as u32);
    }

    // Probed pairs, each once as (low, high).
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    let mut scratch: Vec<(f64, u32)> = Vec::new();
    for (a, &ua) in unit.iter().enumerate() {
        let a = a as u32;
        let own = a as usize % regions;
        for (r, group) in members.iter().enumerate() {
            let k = if r == own {
                params.in_region_links
            } else {
                params.per_region_links
            };
            if k == 0 {
                continue;
            }
            scratch.clear();
            // Larger dot product of unit vectors = closer on the sphere.
            scratch.extend(
                group
                    .iter()
                    .filter(|&&b| b != a)
                    .map(|&b| (-dot(ua, unit[b as usize]), b)),
            );
            if scratch.len() > k {
                scratch.select_nth_unstable_by(k, |x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
                scratch.truncate(k);
            }
            pairs.extend(scratch.iter().map(|&(_, b)| (a.min(b), a.max(b))));
        }
    }
    pairs.sort_unstable();
    pairs.dedup();

    let mut links = Vec::with_capacity(pairs.len() * 2);
    for (a, b) in pairs {
        // Per-pair randomness, independent of generation order.
        let mut r = XorShift64::new(params.seed ^ splitmix64(((a as u64) << 32) | b as u64));
        let (pa, pb) = (nodes[a as usize].location, nodes[b as usize].location);
        let q = (quality[a as usize] + quality[b as usize]) / 2.0 + r.range(-0.15, 0.15);
        let inflation = MIN_INFLATION + (MAX_INFLATION - MIN_INFLATION) * q.clamp(0.0, 1.0);
        let rtt = estimated_rtt_ms(pa, pb, inflation) + 0.5;
        let loss = if r.next_f64() < 0.03 {
            r.range(0.001, 0.05)
        } else {
            0.0
        };
        let summary = LinkSummary {
            rtt_ms: rtt,
            jitter_ms: rtt * r.range(0.0, 0.02),
            loss,
            samples: 50,
        };
        links.push((a, b, summary));
        links.push((b, a, summary));
    }
    SynthMesh { nodes, links }
}

fn to_unit(p: GeoPoint) -> [f64; 3] {
    let (lat, lon) = (p.lat().to_radians(), p.lon().to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::{compute_routes, path_stretch};

    #[test]
    fn generation_is_deterministic_and_shaped() {
        let p = SynthParams::probe_mesh(200, 7);
        let (a, b) = (generate(&p), generate(&p));
        assert_eq!(a.nodes, b.nodes);
        assert_eq!(a.links, b.links);
        assert_ne!(generate(&SynthParams { seed: 8, ..p }).links, a.links);
        assert_eq!(a.nodes.len(), 200);
        let regions: std::collections::HashSet<_> = a.nodes.iter().map(|n| &n.region).collect();
        assert_eq!(regions.len(), 20);
        // 10 per region: 9 in-region links plus 8 x 19 others, at least.
        let g = a.graph(CostModel::default()).expect("valid");
        for n in g.nodes() {
            assert!(g.neighbors(n.id).count() >= 9 + 8 * 19, "{}", n.id);
        }
        for (x, y, s) in &a.links {
            assert!(
                s.rtt_ms >= 0.5 && s.rtt_ms < 600.0,
                "{x}->{y}: {}",
                s.rtt_ms
            );
        }
    }

    #[test]
    fn routes_on_a_synthetic_mesh_are_sane() {
        let mesh = generate(&SynthParams::sparse_mesh(300, 3));
        let g = mesh.graph(CostModel::default()).expect("valid");
        for src in [0, 17, 299] {
            let rs = compute_routes(&g, src).expect("known");
            assert_eq!(rs.len(), 299, "connected mesh");
            for r in rs.iter() {
                assert!(g.is_valid_path(&r.best.edges));
                let stretch = path_stretch(&g, &r.best.edges).expect("valid");
                assert!(stretch >= 1.0 - 1e-9);
                if let Some(b) = &r.backup {
                    assert!(g.is_valid_path(&b.edges));
                    assert!(b.cost_ms >= r.best.cost_ms);
                    assert_ne!(b.first_hop(), r.best.first_hop());
                }
            }
        }
    }

    #[test]
    fn rng_ranges() {
        let mut r = XorShift64::new(0);
        for _ in 0..1000 {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
            assert!(r.below(7) < 7);
        }
        assert_eq!(r.below(0), 0);
    }
}
