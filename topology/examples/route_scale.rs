//! Prints how long route computation takes for every source of synthetic
//! meshes of 100, 1,000 and 10,000 edges, for docs/benchmarks.md.
//!
//! Run: `cargo run --release -p topology --example route_scale`
//!
//! For 10,000 edges only 100 sources are computed and the total is
//! extrapolated (sources are independent and cost the same on average); the
//! output says so.

use std::time::{Duration, Instant};

use topology::synth::{generate, SynthParams};
use topology::{compute_all, compute_all_parallel, compute_routes, CostModel, EdgeId};

fn main() {
    println!("RTN route computation scale (best + backup paths to every destination)");
    println!();
    println!(
        "{:<7} {:>7} {:>10} {:>9} {:>9} {:>10} {:>11} {:>16} {:>16}",
        "mesh",
        "edges",
        "links",
        "per edge",
        "searched",
        "build",
        "one source",
        "all, 1 thread",
        "all, 2 threads"
    );
    for (kind, params) in [
        ("probe", SynthParams::probe_mesh(100, 42)),
        ("probe", SynthParams::probe_mesh(1_000, 42)),
        ("probe", SynthParams::probe_mesh(10_000, 42)),
        ("sparse", SynthParams::sparse_mesh(10_000, 42)),
    ] {
        let n = params.edges;
        let mesh = generate(&params);
        let start = Instant::now();
        let graph = match mesh.graph(CostModel::default()) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("invalid mesh: {e}");
                std::process::exit(1);
            }
        };
        let build = start.elapsed();

        let one = median((0..5).map(|i| {
            let t = Instant::now();
            let routes = compute_routes(&graph, i * 7 % n as EdgeId);
            let d = t.elapsed();
            assert!(routes.is_ok());
            d
        }));

        // At most 100 sources for the 10,000-edge meshes, then scale up.
        let measured = n.min(if n > 1_000 { 100 } else { n });
        let sources: Vec<EdgeId> = (0..measured as EdgeId).collect();
        let scale = n as f64 / measured as f64;
        let t = Instant::now();
        let seq = compute_all(&graph, sources.iter().copied());
        let seq_time = t.elapsed().mul_f64(scale);
        let t = Instant::now();
        let par = compute_all_parallel(&graph, &sources, 2);
        let par_time = t.elapsed().mul_f64(scale);
        assert!(seq.is_ok() && par.is_ok());
        let mark = if measured < n { " *" } else { "" };
        println!(
            "{:<7} {:>7} {:>10} {:>9.0} {:>9} {:>10} {:>11} {:>16} {:>16}",
            kind,
            n,
            graph.link_count(),
            graph.link_count() as f64 / n as f64,
            graph.routing_link_count(),
            fmt(build),
            fmt(one),
            format!("{}{mark}", fmt(seq_time)),
            format!("{}{mark}", fmt(par_time)),
        );
    }
    println!();
    println!("probe: 20 regions; each edge probes the 32 nearest edges of its region and the 8 nearest of every");
    println!("       other region; links are directed, both ways of every probed pair.");
    println!("sparse: 20 regions; 10 nearest in-region and 1 per other region (about 30 chosen per edge).");
    println!("searched: links left after dropping those that can be on no best or backup path.");
    println!("* extrapolated from 100 sources x (edges / 100); sources are independent.");
    println!("'one source' is the median of 5 sources; 'build' turns the probe summaries into the graph.");
}

fn median(times: impl Iterator<Item = Duration>) -> Duration {
    let mut v: Vec<Duration> = times.collect();
    v.sort();
    v[v.len() / 2]
}

fn fmt(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}
