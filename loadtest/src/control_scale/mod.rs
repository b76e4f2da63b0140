//! `loadtest control-scale`: the control plane at fleet size, on one machine.
//!
//! What it measures: how many etcd writes (and bytes) N edges cost in steady
//! state, what the real region controllers cost (CPU, RSS, recompute time)
//! at that size, and how long a material link change takes to reach the
//! routes of the edges it affects.
//!
//! How:
//! - **Edges are synthetic**: tokio tasks in this process, no QUIC. Each
//!   registers `edges/<id>` under its own lease (the edge's default TTL,
//!   kept alive at TTL/3), writes `load/<id>`, and publishes `probes/<id>`
//!   with the real edge's policy (`edge_node::control::materially_changed`,
//!   at most every `PROBE_PUBLISH_INTERVAL`, refreshed every
//!   `PROBE_REFRESH`; load at most every `LOAD_INTERVAL`, only when it
//!   changed). Each watches its own `routes/<id>`, every region record
//!   (`regions/`) and its region's `exits/`, as a real edge does; it does
//!   not watch the registry (`edges/`), which a real edge also does.
//!   Edges start at `--register-rate` per second; the edges share
//!   `--clients` etcd connections.
//! - **Geography and links** come from `topology::synth::generate` with
//!   `SynthParams::probe_mesh(N, seed)`. Every probed pair is published by
//!   one of its ends, chosen by a hash of the pair (the controller uses a
//!   link probed from one end both ways), so a record lists about 160
//!   links: somewhat over the real budget (108 targets at 10,000 edges in
//!   20 regions, docs/control-plane.md), so byte figures err high. From
//!   `--hierarchical-from-edges` edges on (the controllers' threshold, set
//!   in their config) the probes hierarchical routing needs are added
//!   (`hierarchy::hub_probe_pairs`, hubs chosen as the controllers do).
//! - **Wobble** (so the steady state is neither frozen nor flapping): every
//!   publish tick each link's RTT is its level times 1 ± 0.5% of fresh noise,
//!   always under the 2% material band; and with probability `--step-prob`
//!   per link per tick its level moves to base × (1 ± up to 6%), which is
//!   usually over the band. At the default 0.0005 and ~160 links, a record
//!   steps about every 25 s. Load changes with `--load-change-prob` per 5 s
//!   tick.
//! - **Controllers are real**: the `region-controller` binary, one process
//!   per region (and a standby with `--standby`), configured to this etcd.
//! - **Route updates**: every `--change-every` seconds one link that
//!   carries routes is marked dead in its publisher's summary (written at
//!   once); every edge whose best or backup paths used it must get routes
//!   without it. The time from handing the summary to its edge's task
//!   (which writes it at once) to that edge's first routes record without
//!   the link is a sample; none within `--route-timeout` is
//!   a miss. Dead rather than slower, because then every route through the
//!   link has to change and a route that does not is a real miss.
//!
//! Writes are counted client-side by record kind and also read from etcd's
//! own /metrics (served on its client URL).

mod controllers;
mod edges;
mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use control::clock::now_ms;
use control::keys::KeyLayout;
use control::store::{ControlStore, EtcdStore};

use controllers::{controller_bin, mem_available_mib, proc_rss_mib, ControllerSample, Controllers};
use edges::{route_updates, CounterSnapshot, Ctx, Plan};
use report::{loopback_endpoint, EtcdSample};
pub use report::{
    ControllerFigures, EtcdFigures, Goal, KindFigures, MeanMax, P50Max, Report, RouteUpdate,
};

/// Goal: steady-state writes per edge per second (docs/control-plane.md,
/// "Write-rate arithmetic").
const GOAL_WRITES_PER_EDGE: f64 = 0.2;
/// Goal: a material link change reaches the affected edges' routes within.
const GOAL_ROUTE_UPDATE_MS: f64 = 2_000.0;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Synthetic edges to run.
    #[arg(long)]
    pub edges: usize,
    /// etcd client URL (http://, loopback only: this floods it).
    #[arg(long)]
    pub etcd: String,
    /// Seconds of steady state measured after registration and warm-up.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Write the report as JSON here.
    #[arg(long)]
    pub report: PathBuf,
    /// Regions of the synthetic mesh (one controller each).
    #[arg(long, default_value_t = 20)]
    pub regions: usize,
    /// The region-controller binary; default: next to this one, else built
    /// with `cargo build --release -p region-controller`.
    #[arg(long)]
    pub controller_bin: Option<PathBuf>,
    /// Also run a standby controller per region.
    #[arg(long)]
    pub standby: bool,
    /// Seed of the synthetic mesh and the wobble.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// etcd connections the synthetic edges share (0: one per 50 edges,
    /// at least 4). Real edges have one each; the store drops a connection
    /// after a call times out, and shared by thousands that would hit them
    /// all at once.
    #[arg(long, default_value_t = 0)]
    pub clients: usize,
    /// Edges starting per second (0: all at once, 256 registrations in
    /// flight at most). A fleet comes up over minutes; everything at once
    /// is what follows an etcd outage longer than the lease TTL.
    #[arg(long, default_value_t = 50.0)]
    pub register_rate: f64,
    /// Longest wait for every edge to register, seconds.
    #[arg(long, default_value_t = 300)]
    pub register_timeout: u64,
    /// Longest wait for every edge's first routes, seconds.
    #[arg(long, default_value_t = 180)]
    pub warmup_timeout: u64,
    /// Seconds between route-update measurements.
    #[arg(long, default_value_t = 8)]
    pub change_every: u64,
    /// Seconds an affected edge gets to receive new routes before a miss.
    #[arg(long, default_value_t = 10)]
    pub route_timeout: u64,
    /// The controllers' `hierarchical_from_edges`: from this many edges
    /// they route hierarchically, and the synthetic edges add the hub
    /// probes that needs and follow the region records.
    #[arg(long, default_value_t = 500)]
    pub hierarchical_from_edges: usize,
    /// Probability per link per publish tick that its RTT level steps.
    #[arg(long, default_value_t = 0.0005)]
    pub step_prob: f64,
    /// Probability per 5 s load tick that an edge's session count changes.
    #[arg(long, default_value_t = 0.25)]
    pub load_change_prob: f64,
    /// Stop the run (reported as broken) when the machine's available
    /// memory falls below this many MiB.
    #[arg(long, default_value_t = 2048)]
    pub min_free_mib: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.edges >= 2, "--edges must be at least 2");
    anyhow::ensure!(args.regions >= 1, "--regions must be at least 1");
    let etcd_addr = loopback_endpoint(&args.etcd)?;
    let started = Instant::now();
    let hierarchical = args.edges >= args.hierarchical_from_edges;
    let plan = Plan::generate(args.edges, args.regions, args.seed, hierarchical);
    println!(
        "control-scale: {} edges in {} regions, {} probed pairs ({:.0} links per probe record), etcd {}",
        args.edges,
        plan.regions.len(),
        plan.publisher.len(),
        plan.publisher.len() as f64 / args.edges as f64,
        args.etcd
    );
    // A fresh prefix per run: routes have no lease and would outlive it.
    let keys = KeyLayout::new(&format!("/rtn-scale/{}/", now_ms())).map_err(anyhow::Error::msg)?;
    let clients = if args.clients == 0 {
        args.edges.div_ceil(50).max(4)
    } else {
        args.clients
    };
    let mut stores: Vec<Arc<dyn ControlStore>> = Vec::with_capacity(clients);
    for _ in 0..clients {
        let s = EtcdStore::connect(vec![args.etcd.clone()])
            .await
            .with_context(|| format!("connecting to etcd at {}", args.etcd))?;
        stores.push(Arc::new(s));
    }
    let bin = controller_bin(args.controller_bin.as_deref())?;
    let logs = std::env::temp_dir().join(format!("control-scale-{}", std::process::id()));
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let controllers = Controllers::spawn(
        &bin,
        &plan.regions,
        args.standby,
        &args.etcd,
        &keys,
        &logs,
        args.hierarchical_from_edges,
    )
    .await?;
    println!(
        "controllers: {} processes ({}), logs in {}",
        controllers.procs.len(),
        bin.display(),
        logs.display()
    );
    let mut report = Report::new(&args, plan.regions.len(), controllers.procs.len());
    let ctx = Arc::new(Ctx::new(keys, stores, &args));
    let mut window = None;
    let outcome = tokio::select! {
        r = phases(&ctx, &plan, &controllers, etcd_addr, &args, &mut report, &mut window) => r,
        why = guard(&controllers, args.min_free_mib) => {
            report.broke.push(why);
            Ok(())
        }
        _ = crate::stop_signal() => {
            report.broke.push("interrupted by a signal".into());
            Ok(())
        }
    };
    // A window cut short by the guard or a signal: what it saw so far.
    if let Some(start) = window.take() {
        report.broke.push(format!(
            "steady state cut short after {:.0} s",
            start.at.elapsed().as_secs_f64()
        ));
        start
            .finish(&ctx, &controllers, etcd_addr, &mut report)
            .await;
    }
    // Edges first (their leases then expire), then the controllers.
    ctx.stop_edges();
    let log_notes = controllers.stop().await;
    report.broke.extend(log_notes);
    report.broke.extend(ctx.error_notes());
    report.finish(started.elapsed());
    report.print();
    let json = serde_json::to_string_pretty(&report).context("serialising the report")?;
    std::fs::write(&args.report, json + "\n")
        .with_context(|| format!("writing {}", args.report.display()))?;
    println!("report: {}", args.report.display());
    outcome
}

/// Registration, warm-up and the measured steady state, filling `report`
/// as they go (so a run stopped early still reports what it saw).
async fn phases(
    ctx: &Arc<Ctx>,
    plan: &Plan,
    controllers: &Controllers,
    etcd: SocketAddr,
    args: &Args,
    report: &mut Report,
    window: &mut Option<WindowStart>,
) -> anyhow::Result<()> {
    if let Err(e) = controllers.await_leaders(&ctx.stores[0], &ctx.keys).await {
        report.broke.push(format!("controllers: {e:#}"));
    }
    let t = Instant::now();
    let deadline = t + Duration::from_secs(args.register_timeout);
    ctx.start_edges(plan);
    let n = plan.edges.len() as u64;
    while ctx.registered.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report.registration_s = t.elapsed().as_secs_f64();
    let registered = ctx.registered.load(Ordering::Relaxed);
    if registered < n {
        report.broke.push(format!(
            "registration: only {registered} of {n} edges registered within {} s",
            args.register_timeout
        ));
    }
    println!(
        "registration: {registered} edges in {:.1} s",
        report.registration_s
    );

    let t = Instant::now();
    let deadline = t + Duration::from_secs(args.warmup_timeout);
    let mut last_print = t;
    loop {
        let with = ctx.edges_with_routes();
        if with == plan.edges.len() || Instant::now() >= deadline {
            report.warmup_s = t.elapsed().as_secs_f64();
            report.warmup_edges_with_routes = with;
            if with < plan.edges.len() {
                report.broke.push(format!(
                    "warm-up: only {with} of {} edges had routes after {} s",
                    plan.edges.len(),
                    args.warmup_timeout
                ));
            }
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            println!(
                "warm-up: routes at {with}/{} edges after {:.0} s",
                plan.edges.len(),
                t.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "warm-up: routes at {}/{} edges after {:.1} s",
        report.warmup_edges_with_routes,
        plan.edges.len(),
        report.warmup_s
    );

    // The measured window.
    let end = Instant::now() + Duration::from_secs(args.duration);
    *window = Some(WindowStart::now(ctx, controllers, etcd).await);
    println!("steady state: {} s", args.duration);
    route_updates(ctx, plan, end, args).await;
    tokio::time::sleep_until(end.into()).await;
    if let Some(start) = window.take() {
        start.finish(ctx, controllers, etcd, report).await;
    }
    Ok(())
}

/// Counters at the start of the measured window.
struct WindowStart {
    at: Instant,
    writes: CounterSnapshot,
    etcd: Option<EtcdSample>,
    controllers: Vec<ControllerSample>,
}

impl WindowStart {
    async fn now(ctx: &Ctx, controllers: &Controllers, etcd: SocketAddr) -> WindowStart {
        let writes = ctx.counters.snapshot();
        let etcd = EtcdSample::scrape(etcd).await;
        let controllers = controllers.sample().await;
        WindowStart {
            at: Instant::now(),
            writes,
            etcd,
            controllers,
        }
    }

    /// The window's figures, from its start to now, into `report`.
    async fn finish(
        self,
        ctx: &Ctx,
        controllers: &Controllers,
        etcd: SocketAddr,
        report: &mut Report,
    ) {
        let elapsed = self.at.elapsed().as_secs_f64().max(1e-3);
        let writes = ctx.counters.snapshot();
        let etcd_now = EtcdSample::scrape(etcd).await;
        let ctl = controllers.sample().await;
        let n = ctx.registered.load(Ordering::Relaxed).max(1) as usize;
        report.edges_registered = n;
        report.record_writes(&self.writes, &writes, elapsed, n);
        report.etcd = EtcdFigures::between(self.etcd.as_ref(), etcd_now.as_ref(), elapsed);
        if report.etcd.is_none() {
            report
                .broke
                .push(format!("etcd /metrics at {etcd} not readable"));
        }
        report.record_controllers(&controllers.procs, &self.controllers, &ctl, elapsed);
        let events = std::mem::take(&mut *ctx.events.lock().expect("events lock"));
        report.record_routes(ctx, events);
    }
}

/// Resolves with a reason when the run must stop: memory running out, or a
/// controller process gone.
async fn guard(controllers: &Controllers, min_free_mib: u64) -> String {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(free) = mem_available_mib() {
            if free < min_free_mib {
                return format!(
                    "memory: available memory fell to {free} MiB (controllers' RSS {:.0} MiB in all)",
                    controllers
                        .procs
                        .iter()
                        .filter_map(|p| proc_rss_mib(p.pid).map(|r| r.0))
                        .sum::<f64>()
                );
            }
        }
        if let Some(why) = controllers.exited() {
            return why;
        }
    }
}
