//! `loadtest run`: the lab's traffic mix against any running RTN (the
//! terraform-provisioned local mesh, a real fleet), through its public API
//! and the SDK only: clients ask a controller for their nearest edges, join,
//! talk, and the report says what they felt.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::lab::joiners::{FirstMedia, LateJoiners, LATE_JOIN_EVERY};
use crate::lab::record::{Felt, Recorder};
use crate::lab::traffic::{client_config, App, ClientSpec, Traffic};

pub struct RunOptions {
    /// Region controllers' API URLs; clients are spread over them.
    pub controllers: Vec<String>,
    pub app: App,
    /// PEM CA the edges' certificates chain to.
    /// How clients verify edges.
    pub trust: sdk::EdgeTrust,
    pub clients: usize,
    /// Local addresses the clients send from, round robin (e.g. loopback
    /// addresses a WAN emulation places in different cities); empty: the
    /// system's choice.
    pub local_ips: Vec<std::net::IpAddr>,
    pub duration: Duration,
    pub report: Option<PathBuf>,
    pub verbose: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub controllers: Vec<String>,
    pub clients: usize,
    pub clients_joined: usize,
    pub duration_s: f64,
    #[serde(flatten)]
    pub felt: Felt,
    /// Late joiners' time from token to first media, step by step.
    pub first_media: FirstMedia,
}

pub async fn run(opts: RunOptions) -> anyhow::Result<RunReport> {
    anyhow::ensure!(
        !opts.controllers.is_empty(),
        "at least one --controller URL is needed"
    );
    anyhow::ensure!(
        (2..=10_000).contains(&opts.clients),
        "--clients must be within 2..=10000"
    );
    let specs: Vec<ClientSpec> = (0..opts.clients)
        .map(|i| {
            let controller = &opts.controllers[i % opts.controllers.len()];
            let local_ip =
                (!opts.local_ips.is_empty()).then(|| opts.local_ips[i % opts.local_ips.len()]);
            ClientSpec {
                name: format!("run-{i}"),
                // Calls pair clients of different controllers or addresses
                // where there are several (different regions), any two
                // otherwise.
                place: format!("{controller} {local_ip:?}"),
                // Its own controller first, then the others in turn (as
                // many as the SDK takes): one down does not stop joins.
                config: client_config(
                    &opts.trust,
                    opts.controllers
                        .iter()
                        .cycle()
                        .skip(i % opts.controllers.len())
                        .take(opts.controllers.len().min(sdk::MAX_CONTROLLERS))
                        .cloned()
                        .collect(),
                    local_ip,
                    None,
                ),
            }
        })
        .collect();
    let rec = Arc::new(Recorder::default());
    let join_places = crate::lab::joiners::one_per_place(&specs);
    let traffic = Traffic::start(specs, &opts.app, rec.clone(), Duration::from_secs(30)).await?;
    let clients_joined = traffic
        .clients
        .iter()
        .filter(|(spec, _)| traffic.joined_all(&spec.name))
        .count();
    if opts.verbose {
        println!(
            "{clients_joined} of {} clients joined through {}",
            opts.clients,
            opts.controllers.join(", ")
        );
    }
    let started = Instant::now();
    let joiners = LateJoiners::start(join_places, opts.app.clone(), LATE_JOIN_EVERY);
    let mut status = tokio::time::interval(Duration::from_secs(5));
    let end = tokio::time::sleep(opts.duration);
    tokio::pin!(end);
    let ctrl_c = crate::stop_signal();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut end => break,
            _ = &mut ctrl_c => break,
            _ = status.tick() => if opts.verbose {
                let (sent, delivered) = rec.message_counts();
                println!(
                    "[{:>4}s] media rx {}  messages sent {sent} delivered {delivered}",
                    started.elapsed().as_secs(),
                    rec.media_received()
                );
            }
        }
    }
    let duration_s = started.elapsed().as_secs_f64();
    let first_media = joiners.finish().await;
    traffic.stop(Duration::from_secs(3)).await;
    let report = RunReport {
        controllers: opts.controllers.clone(),
        clients: opts.clients,
        clients_joined,
        duration_s,
        felt: rec.felt(),
        first_media,
    };
    if opts.verbose {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if let Some(path) = &opts.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing the report {}", path.display()))?;
    }
    Ok(report)
}
