//! Prints how long route computation takes for every source of synthetic
//! meshes of 100, 1,000 and 10,000 edges, for docs/benchmarks.md.
//!
//! Run: `cargo run --release -p topology --example route_scale`
//!
//! For 10,000 edges only 100 sources are computed and the total is
//! extrapolated (sources are independent and cost the same on average); the
//! output says so.
//!
//! Then hierarchical routes (`topology::hierarchy`) on the 10,000-edge probe
//! mesh with hub probes added: one region recomputed from scratch and after
//! one link change, route state, and path quality against the flat optimum
//! on the same mesh, over every destination of `--sources` sources per
//! region (default 10; `--all` for every source: about 20 minutes).
//! `--hier` skips the flat table; `--seed N` and `--sparse` (10 in-region
//! and 1 per other region chosen per edge) change the world.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use topology::hierarchy::{
    hub_probe_pairs, select_hubs, wire, Hierarchy, HubPolicy, RegionRoutes, RegionTable,
};
use topology::synth::{generate, SynthParams, XorShift64};
use topology::{
    compute_all, compute_all_parallel, compute_plain_routes, compute_routes, CostModel, EdgeId,
    GraphError, LinkSummary, MeshGraph, RouteSet,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let per_region = match args.iter().position(|a| a == "--sources") {
        Some(i) => match args.get(i + 1).and_then(|v| v.parse::<usize>().ok()) {
            Some(n) if n > 0 => n,
            _ => {
                eprintln!("--sources takes a positive number of sources per region");
                std::process::exit(2);
            }
        },
        None if args.iter().any(|a| a == "--all") => usize::MAX,
        None => 10,
    };
    let seed = match args.iter().position(|a| a == "--seed") {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| {
                eprintln!("--seed takes a number");
                std::process::exit(2);
            }),
        None => 42,
    };
    let params = if args.iter().any(|a| a == "--sparse") {
        SynthParams::sparse_mesh(10_000, seed)
    } else {
        SynthParams::probe_mesh(10_000, seed)
    };
    if !args.iter().any(|a| a == "--hier") {
        flat();
    }
    hierarchical(params, per_region);
}

fn flat() {
    println!("RTN route computation scale (best + backup paths to every destination)");
    println!();
    println!(
        "{:<7} {:>7} {:>10} {:>9} {:>9} {:>10} {:>11} {:>11} {:>8} {:>16} {:>16}",
        "mesh",
        "edges",
        "links",
        "per edge",
        "searched",
        "build",
        "one source",
        "plain",
        "moved",
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

        // Five sources with the shared-risk pass and without it (`plain`),
        // and how many of their backups the pass moved.
        let timed = |compute: fn(&MeshGraph, EdgeId) -> Result<RouteSet, GraphError>, s| {
            let t = Instant::now();
            let routes = compute(&graph, s).expect("a node of the graph");
            (t.elapsed(), routes)
        };
        let (mut one, mut plain) = (vec![], vec![]);
        let (mut moved, mut backups) = (0usize, 0usize);
        for i in 0..5 {
            let s = i * 7 % n as EdgeId;
            let (d, with_rule) = timed(compute_routes, s);
            let (p, without) = timed(compute_plain_routes, s);
            one.push(d);
            plain.push(p);
            for (x, y) in with_rule.iter().zip(without.iter()) {
                backups += usize::from(x.backup.is_some());
                moved += usize::from(x.backup != y.backup);
            }
        }
        let (one, plain) = (median(one.into_iter()), median(plain.into_iter()));

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
            "{:<7} {:>7} {:>10} {:>9.0} {:>9} {:>10} {:>11} {:>11} {:>7.1}% {:>16} {:>16}",
            kind,
            n,
            graph.link_count(),
            graph.link_count() as f64 / n as f64,
            graph.routing_link_count(),
            fmt(build),
            fmt(one),
            fmt(plain),
            100.0 * moved as f64 / backups.max(1) as f64,
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
    println!("plain: the same without the shared-risk pass (backups that may share a site or city pair with");
    println!(
        "       their best path's first link); moved: backups of those sources the pass changed."
    );
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

/// Hierarchical routes on the `n`-edge probe mesh plus hub probes.
fn hierarchical(params: SynthParams, per_region: usize) {
    let n = params.edges;
    println!();
    println!(
        "Hierarchical routes, {n}-edge mesh (seed {}, {} in-region and {} per other region chosen per edge) with hub probes",
        params.seed, params.in_region_links, params.per_region_links
    );
    let policy = HubPolicy::default();
    let mut mesh = generate(&params);
    let base = mesh.graph(CostModel::default()).unwrap_or_else(|e| fail(e));
    let hubs = select_hubs(&base, &policy);
    drop(base);
    let added = hub_probe_pairs(&mesh.nodes, &hubs, &policy);
    let before = mesh.links.len();
    mesh.add_probes(added);
    let graph = mesh.graph(CostModel::default()).unwrap_or_else(|e| fail(e));
    let hub_count: usize = hubs.values().map(Vec::len).sum();
    println!(
        "  {} hubs; hub probes add {} directed links ({:.0} per edge) to {} ({:.0} per edge)",
        hub_count,
        mesh.links.len() - before,
        (mesh.links.len() - before) as f64 / n as f64,
        before,
        before as f64 / n as f64
    );

    // The largest region: the one a controller recomputes.
    let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
    for node in graph.nodes() {
        *sizes.entry(node.region.as_str()).or_default() += 1;
    }
    let (&region, &size) = sizes
        .iter()
        .max_by_key(|(r, s)| (**s, std::cmp::Reverse(**r)))
        .expect("regions");
    let t = Instant::now();
    let table = RegionTable::compute(&graph, region, &hubs[region]);
    let own_table = t.elapsed();
    let t = Instant::now();
    let hier = Hierarchy::build(&graph, &hubs);
    let all_tables = t.elapsed();
    let t = Instant::now();
    let _ = Hierarchy::from_tables(&graph, hier.tables().to_vec());
    let hub_graph = t.elapsed();
    let t = Instant::now();
    let local = hier.local_graph(&graph, region);
    let local_build = t.elapsed();
    let t = Instant::now();
    let _ = RegionRoutes::compute(&hier, &graph, region, 1);
    let one_thread = t.elapsed();
    let t = Instant::now();
    let mut routes = RegionRoutes::compute(&hier, &graph, region, 2);
    let two_threads = t.elapsed();
    let scratch = own_table + hub_graph + two_threads;
    println!(
        "  region {region}: {size} edges, {} hubs; local graph {} nodes, {} links",
        table.hubs().len(),
        local.node_count(),
        local.link_count()
    );
    println!(
        "  from scratch: own table {}, hub graph {}, local graph {}, sources {} (1 thread) / {} (2 threads)",
        fmt(own_table),
        fmt(hub_graph),
        fmt(local_build),
        fmt(one_thread),
        fmt(two_threads)
    );
    println!(
        "  region recompute from scratch (own table + hub graph + sources, 2 threads): {}   goal < 1 s: {}",
        fmt(scratch),
        verdict(scratch < Duration::from_secs(1))
    );
    println!(
        "  (every region's table, as a controller reading none would compute them: {})",
        fmt(all_tables)
    );

    // One link change inside the region, both ways: 20 links, median. The
    // time is the controller's: its local graph with the new summary, and
    // the sources the change can affect.
    let mut rng = XorShift64::new(7);
    let members: Vec<EdgeId> = table.members().to_vec();
    for (label, factor) in [("30% dearer", 1.3), ("30% cheaper", 1.0 / 1.3)] {
        let mut times = Vec::new();
        let mut recomputed = Vec::new();
        for _ in 0..20 {
            let from = members[rng.below(members.len())];
            let inside: Vec<EdgeId> = graph
                .neighbors(from)
                .map(|(to, _)| to)
                .filter(|to| members.binary_search(to).is_ok())
                .collect();
            let to = inside[rng.below(inside.len())];
            let original = *graph.link(from, to).expect("a link");
            let changed = LinkSummary {
                rtt_ms: original.rtt_ms * factor,
                jitter_ms: original.jitter_ms * factor,
                ..original
            };
            let t = Instant::now();
            let count = routes
                .set_link(&hier, from, to, Some(changed), 2)
                .unwrap_or_else(|e| fail(e));
            times.push(t.elapsed());
            recomputed.push(count);
            routes
                .set_link(&hier, from, to, Some(original), 2)
                .unwrap_or_else(|e| fail(e));
        }
        recomputed.sort_unstable();
        let median_time = median(times.iter().copied());
        println!(
            "  one in-region link {label}: median {} (max {}), sources recomputed median {} of {size}   goal < 100 ms: {}",
            fmt(median_time),
            fmt(*times.iter().max().expect("20 runs")),
            recomputed[recomputed.len() / 2],
            verdict(median_time < Duration::from_millis(100))
        );
    }

    // Route state as published: each edge's routes inside its region in
    // their wire form (topology::hierarchy::wire); per region its table (a
    // parent and a cost per hub and edge, 2 bytes each), useful exits and
    // hub exits (edge number, target id, cost: 8 bytes each) and each
    // edge's transit toll (2 bytes); the hub graph once (a cost and a via
    // hub per pair, 2 bytes each). Regions are extrapolated from this one.
    let members = table.members().to_vec();
    let mut local_bytes = 0usize;
    for (_, r) in routes.sources() {
        let published = r.published(&hier, region);
        local_bytes += wire::encode(&published, &members)
            .unwrap_or_else(|e| fail(e))
            .len();
    }
    let per_edge = local_bytes as f64 / size as f64;
    let (raw_exits, useful_exits) = routes.exit_counts();
    let hub_exits = hier.hub_exits(routes.local_graph(), region).len();
    let tables: usize = hier.tables().iter().map(|t| 4 * t.len()).sum();
    let scale = n as f64 / size as f64;
    let exits = (8 * (useful_exits + hub_exits) + 2 * size) as f64 * scale;
    let hub_pairs = 4 * hier.hub_graph().len() * hier.hub_graph().len();
    let total = per_edge * n as f64 + tables as f64 + exits + hub_pairs as f64;
    println!(
        "  route state: {:.2} KB per edge ({} edges in its region), tables {:.2} MB, exits {:.2} MB ({region}: {} of {} exits kept, {} hub exits), hub graph {:.2} MB",
        per_edge / 1e3,
        members.len(),
        tables as f64 / 1e6,
        exits / 1e6,
        useful_exits,
        raw_exits,
        hub_exits,
        hub_pairs as f64 / 1e6
    );
    println!(
        "  whole mesh: {:.1} MB ({:.2} KB per edge; flat routes as paths: about {:.0} MB)   goal < 50 MB: {}",
        total / 1e6,
        total / n as f64 / 1e3,
        flat_state_mb(&graph, n),
        verdict(total < 50e6)
    );

    quality(&graph, &hier, per_region);
}

/// The flat routes of the mesh as lists of paths (4 bytes per hop, best and
/// backup, per destination), extrapolated from 5 sources.
fn flat_state_mb(graph: &MeshGraph, n: usize) -> f64 {
    let sources: Vec<EdgeId> = (0..5).map(|i| (i * n / 5) as EdgeId).collect();
    let sets = compute_all_parallel(graph, &sources, 2).unwrap_or_else(|e| fail(e));
    let bytes: usize = sets
        .iter()
        .flat_map(|s| s.iter())
        .map(|r| 8 + 4 * (r.best.edges.len() + r.backup.as_ref().map_or(0, |b| b.edges.len())))
        .sum();
    bytes as f64 / sources.len() as f64 * n as f64 / 1e6
}

/// Hierarchical routes against the flat optimum on the same graph, over
/// every destination of `per_region` sources of each region.
fn quality(graph: &MeshGraph, hier: &Hierarchy, per_region: usize) {
    let t = Instant::now();
    let (mut pairs, mut within, mut within_rtt, mut backups, mut flat_backups) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut ratios: Vec<f64> = Vec::new();
    for table in hier.tables() {
        let local = hier.local_graph(graph, table.region());
        let exits = hier.exits(&local, &hier.raw_exits(graph, table.region()));
        let step = (table.members().len() / per_region.min(table.members().len())).max(1);
        let sources: Vec<EdgeId> = table.members().iter().step_by(step).copied().collect();
        let flat = compute_all_parallel(graph, &sources, 2).unwrap_or_else(|e| fail(e));
        let hier_routes = hier.sources_routes(&local, &sources, 2);
        for ((_, h), f) in hier_routes.iter().zip(&flat) {
            for fr in f.iter() {
                pairs += 1;
                let Some(hr) = hier.route(graph, &exits, h, fr.destination) else {
                    ratios.push(f64::INFINITY);
                    continue;
                };
                let ratio = hr.best.cost_ms / fr.best.cost_ms.max(1e-3);
                ratios.push(ratio);
                within += u64::from(ratio <= 1.05);
                within_rtt += u64::from(hr.best.rtt_ms <= fr.best.rtt_ms * 1.05);
                backups += u64::from(hr.backup.is_some());
                flat_backups += u64::from(fr.backup.is_some());
            }
        }
    }
    ratios.sort_by(|a, b| a.total_cmp(b));
    let pct = |x: u64| 100.0 * x as f64 / pairs.max(1) as f64;
    let q = |p: f64| ratios[((ratios.len() - 1) as f64 * p) as usize];
    println!(
        "  quality over {pairs} pairs ({} sources per region, every destination; {}):",
        if per_region == usize::MAX {
            "all".to_string()
        } else {
            per_region.to_string()
        },
        fmt(t.elapsed())
    );
    println!(
        "    cost within 5% of the flat optimum: {:.2}%   goal >= 99%: {}",
        pct(within),
        verdict(pct(within) >= 99.0)
    );
    println!(
        "    RTT within 5% of the flat best path's: {:.2}%; cost ratio p50 {:.3}, p99 {:.3}, p99.9 {:.3}, max {:.3}",
        pct(within_rtt),
        q(0.5),
        q(0.99),
        q(0.999),
        q(1.0)
    );
    println!(
        "    backups: {:.2}% of pairs (flat: {:.2}%)",
        pct(backups),
        pct(flat_backups)
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT MET"
    }
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("invalid mesh: {e}");
    std::process::exit(1);
}
