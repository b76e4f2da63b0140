//! `edge-node`: run an RTN edge, check its config, mint dev tokens, make dev
//! certificates.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use control::flags::Flags;
use edge_node::config::EdgeConfig;
use edge_node::tls::DevPki;
use edge_node::{Edge, EdgeOptions};

#[derive(Parser)]
#[command(name = "edge-node", version, about = "RTN edge relay")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "RTN_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge until SIGTERM or Ctrl-C (then drain and exit 0).
    Run(RunArgs),
    /// Load and validate a config, print the effective values (TOML, after
    /// flags and variables, secrets redacted), and exit.
    CheckConfig(RunArgs),
    /// Mint a join token (an HS256 JWT) for development (app servers do this
    /// in production, with any JWT library).
    Token(TokenArgs),
    /// Write a development mesh CA and certificates for the given names.
    DevCerts(DevCertsArgs),
}

/// The config file, and a flag (or `RTN_*` variable) for every key of its
/// sections that overrides the file's value (`control::flags`).
#[derive(Args)]
struct RunArgs {
    #[arg(long, short, env = "RTN_CONFIG")]
    config: PathBuf,
    #[command(flatten)]
    flags: Flags<EdgeConfig>,
}

#[derive(Args)]
struct TokenArgs {
    #[arg(long, default_value = "demo")]
    app: String,
    /// The app's shared secret.
    #[arg(long, env = "RTN_APP_SECRET", hide_env_values = true)]
    secret: String,
    #[arg(long)]
    channel: String,
    #[arg(long)]
    user: String,
    #[arg(long)]
    publish: bool,
    #[arg(long)]
    subscribe: bool,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

#[derive(Args)]
struct DevCertsArgs {
    #[arg(long)]
    out: PathBuf,
    /// Server names, one certificate each (e.g. edge-1.rtn.local).
    #[arg(long = "name", required = true)]
    names: Vec<String>,
}

impl RunArgs {
    /// The file, under the flags and variables given, validated.
    fn load(&self) -> anyhow::Result<EdgeConfig> {
        let mut c = EdgeConfig::load(&self.config)?;
        self.flags.apply(&mut c)?;
        c.validate()?;
        Ok(c)
    }
}

fn init_logs(format: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logs(&cli.log_format);
    match run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge-node: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::CheckConfig(args) => {
            let c = args.load()?;
            // Builds the (lazy) store: reads the etcd TLS files, dials nothing.
            c.control.store.open()?;
            // What the edge would run with, app secrets redacted.
            print!(
                "{}",
                toml::to_string_pretty(&c).context("printing the effective config")?
            );
            println!(
                "config ok: edge {} region {} listen {} admin {} apps {} peers {} routes {}",
                c.edge.id,
                c.edge.region,
                c.edge.listen,
                c.edge.admin_listen,
                c.apps.len(),
                c.peers.len(),
                c.routes.len()
            );
            Ok(())
        }
        Command::Token(t) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            let token = protocol::token::mint(
                &protocol::token::Grant {
                    app_id: &t.app,
                    channel: &t.channel,
                    user_id: &t.user,
                    publish: t.publish,
                    subscribe: t.subscribe,
                    issued_at: now,
                    expires_at: now + t.ttl,
                },
                t.secret.as_bytes(),
            );
            println!("{token}");
            Ok(())
        }
        Command::DevCerts(d) => {
            std::fs::create_dir_all(&d.out)
                .with_context(|| format!("creating {}", d.out.display()))?;
            let pki = DevPki::new()?;
            std::fs::write(d.out.join("mesh-ca.pem"), pki.ca_pem())?;
            for name in &d.names {
                let (cert, key) = pki.issue_pem(std::slice::from_ref(name))?;
                std::fs::write(d.out.join(format!("{name}.pem")), cert)?;
                std::fs::write(d.out.join(format!("{name}.key")), key)?;
            }
            println!(
                "wrote mesh-ca.pem and {} certificates to {}",
                d.names.len(),
                d.out.display()
            );
            Ok(())
        }
        Command::Run(args) => {
            let cfg = args.load()?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                let edge = Edge::start(cfg, EdgeOptions::default()).await?;
                wait_for_signal().await?;
                tracing::info!("signal received: draining");
                tokio::time::timeout(Duration::from_secs(30), edge.shutdown())
                    .await
                    .context("drain took too long")?;
                anyhow::Ok(())
            })
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}
