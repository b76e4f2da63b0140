//! Route computation on synthetic probe meshes of 100, 1,000 and 10,000
//! edges (see `topology::synth::SynthParams::probe_mesh`): one source, and
//! all sources of the 100- and 1,000-edge meshes.
//!
//! Run: `cargo bench -p topology --bench routes` (about two minutes).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use topology::synth::{generate, SynthParams};
use topology::{compute_all, compute_all_parallel, compute_routes, CostModel, EdgeId, MeshGraph};

fn mesh(edges: usize) -> MeshGraph {
    generate(&SynthParams::probe_mesh(edges, 42))
        .graph(CostModel::default())
        .expect("generated meshes are valid")
}

fn routes(c: &mut Criterion) {
    let meshes: Vec<(usize, MeshGraph)> = [100, 1_000, 10_000]
        .into_iter()
        .map(|n| (n, mesh(n)))
        .collect();
    for (n, g) in &meshes {
        eprintln!(
            "mesh of {n} edges: {} directed links ({:.0} per edge)",
            g.link_count(),
            g.link_count() as f64 / *n as f64
        );
    }

    let mut one = c.benchmark_group("compute_routes_one_source");
    one.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (n, g) in &meshes {
        one.bench_with_input(BenchmarkId::from_parameter(n), g, |b, g| {
            b.iter(|| compute_routes(g, black_box(0)).expect("known source"))
        });
    }
    one.finish();

    let mut all = c.benchmark_group("compute_all_sources");
    all.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (n, g) in meshes.iter().filter(|(n, _)| *n <= 1_000) {
        let sources: Vec<EdgeId> = (0..*n as EdgeId).collect();
        all.bench_with_input(BenchmarkId::new("sequential", n), g, |b, g| {
            b.iter(|| compute_all(g, sources.iter().copied()).expect("known sources"))
        });
        all.bench_with_input(BenchmarkId::new("two_threads", n), g, |b, g| {
            b.iter(|| compute_all_parallel(g, &sources, 2).expect("known sources"))
        });
    }
    all.finish();
}

criterion_group!(benches, routes);
criterion_main!(benches);
