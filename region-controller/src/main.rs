//! `region-controller`: one region's controller process.
//!
//! A standalone controller always talks to etcd (the embedded store only
//! makes sense inside one process: the lab runs controllers in-process).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use control::certs::{ClientCertSource, ClientCerts};
use control::flags::Flags;
use control::store::ControlStore;
use region_controller::api::{open_geoip_db, parse_proxies, Api, CorsPolicy, Face};
use region_controller::config::{ControllerConfig, StoreSection};
use region_controller::controller::{Controller, RoutingOptions};
use tracing::info;

#[derive(Parser)]
#[command(name = "region-controller", version, about = "RTN region controller")]
struct Cli {
    /// Log format: text, or json (one object per line, for log pipelines).
    #[arg(long, global = true, env = "RTN_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Validate a config file (and open its GeoIP database), print the
    /// effective values (TOML, after flags and variables), and exit.
    CheckConfig(RunArgs),
}

/// The config file, and a flag (or `RTN_CTL_*` variable) for every key of
/// it that overrides the file's value (`control::flags`).
#[derive(clap::Args)]
struct RunArgs {
    /// TOML config file.
    #[arg(long, short, env = "RTN_CTL_CONFIG")]
    config: PathBuf,
    #[command(flatten)]
    flags: Flags<ControllerConfig>,
}

impl RunArgs {
    /// The file, under the flags and variables given, validated.
    fn load(&self) -> anyhow::Result<ControllerConfig> {
        let text = std::fs::read_to_string(&self.config)
            .with_context(|| format!("reading {}", self.config.display()))?;
        let mut cfg = ControllerConfig::from_toml(&text)
            .with_context(|| format!("parsing {}", self.config.display()))?;
        self.flags.apply(&mut cfg)?;
        cfg.validate()?;
        if cfg.store.store.etcd_endpoints.is_empty() {
            anyhow::bail!("store.etcd_endpoints is required (a standalone controller needs etcd)");
        }
        Ok(cfg)
    }
}

/// The configured GeoIP database, opened, verified and logged with the
/// fields found (`open_geoip_db`).
fn open_geoip(cfg: &ControllerConfig) -> anyhow::Result<Option<topology::GeoIpDb>> {
    cfg.api
        .geoip_db
        .as_deref()
        .map(|p| open_geoip_db(p).context("api.geoip_db"))
        .transpose()
}

/// The admin token from the variable `[admin] token_env` names (None when
/// it names none): set, and at least 16 characters. `check-config` checks
/// it too, so a config whose secret is missing fails there, not at start.
fn admin_token(cfg: &ControllerConfig) -> anyhow::Result<Option<String>> {
    let Some(var) = &cfg.admin.token_env else {
        return Ok(None);
    };
    let token =
        std::env::var(var).with_context(|| format!("admin.token_env: ${var} is not set"))?;
    anyhow::ensure!(
        token.len() >= 16,
        "the admin token in ${var} must be at least 16 characters"
    );
    Ok(Some(token))
}

/// The etcd store of the `[store]` section (required: a standalone
/// controller needs etcd; the embedded store is for in-process labs).
fn etcd(store: &StoreSection) -> anyhow::Result<Arc<dyn ControlStore>> {
    store.store.open()?.ok_or_else(|| {
        anyhow::anyhow!("store.etcd_endpoints is required (a standalone controller needs etcd)")
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt().with_env_filter(
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
    );
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    match cli.command {
        Command::CheckConfig(args) => {
            let cfg = args.load()?;
            open_geoip(&cfg)?;
            admin_token(&cfg)?;
            // Builds the (lazy) store: reads the etcd TLS files, dials nothing.
            etcd(&cfg.store)?;
            // What the controller would run with (no secret is a key: the
            // admin token's variable is named, not printed).
            print!(
                "{}",
                toml::to_string_pretty(&cfg).context("printing the effective config")?
            );
            println!("config ok: region {}", cfg.controller.region);
            Ok(())
        }
        Command::Run(args) => run(args.load()?).await,
    }
}

async fn run(cfg: ControllerConfig) -> anyhow::Result<()> {
    let geoip = open_geoip(&cfg)?;
    let keys = cfg.store.store.keys().map_err(anyhow::Error::msg)?;
    let store = etcd(&cfg.store)?;
    let name = cfg.name();
    let opts = RoutingOptions {
        region: cfg.controller.region.clone(),
        name: name.clone(),
        debounce: std::time::Duration::from_millis(cfg.controller.debounce_ms),
        recompute: std::time::Duration::from_millis(cfg.controller.recompute_ms),
        election_ttl: cfg.election_ttl(),
        cost: Default::default(),
        hysteresis: Default::default(),
        hierarchical_from_edges: cfg.controller.hierarchical_from_edges,
        hubs_per_region: cfg.controller.hubs_per_region,
    };
    region_controller::metrics::prometheus();
    let controller = Controller::start(store, keys, opts);
    let mut api = Api::new(
        controller.mesh.clone(),
        controller.leader.clone(),
        cfg.controller.region.clone(),
        geoip,
        cfg.api.lookups_per_ip_per_s,
    );
    // Replaced files are reloaded while the API serves (and the watch
    // stops with it).
    api.geoip_file = cfg.api.geoip_db.clone();
    api.trusted_proxies = parse_proxies(&cfg.api.trusted_proxies).map_err(anyhow::Error::msg)?;
    api.client_ip_header = cfg
        .api
        .client_ip_header
        .as_deref()
        .map(hyper::header::HeaderName::try_from)
        .transpose()
        .context("api.client_ip_header")?;
    api.cors = CorsPolicy::new(&cfg.api.cors_origins).map_err(anyhow::Error::msg)?;
    api.tls = match (&cfg.api.tls_cert, &cfg.api.tls_key) {
        (Some(cert), Some(key)) => Some(
            ClientCerts::new(ClientCertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
                check_every: std::time::Duration::from_millis(cfg.api.tls_reload_check_ms),
            })
            .context("api.tls_cert / api.tls_key")?,
        ),
        (None, None) => None,
        _ => anyhow::bail!("api.tls_cert and api.tls_key go together"),
    };
    api.admin_token = admin_token(&cfg)?;
    let public = tokio::net::TcpListener::bind(cfg.api.listen)
        .await
        .with_context(|| format!("binding api.listen {}", cfg.api.listen))?;
    let admin = tokio::net::TcpListener::bind(cfg.admin.listen)
        .await
        .with_context(|| format!("binding admin.listen {}", cfg.admin.listen))?;
    info!(
        region = %cfg.controller.region,
        %name,
        api = %public.local_addr()?,
        admin = %admin.local_addr()?,
        "controller started"
    );
    let api_task =
        tokio::spawn(Arc::new(api).serve_faces(vec![(public, Face::Public), (admin, Face::Admin)]));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: resigning and stopping"),
        _ = tokio::signal::ctrl_c() => info!("interrupted: resigning and stopping"),
    }
    api_task.abort();
    controller.shutdown().await;
    info!("controller stopped");
    Ok(())
}
