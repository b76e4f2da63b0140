//! `edge-node`: run an RTN edge, check its config, mint dev tokens, make dev
//! certificates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
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
    /// Load and validate a config, print the effective values, and exit.
    CheckConfig(RunArgs),
    /// Mint a join token for development (app servers do this in production).
    Token(TokenArgs),
    /// Write a development mesh CA and certificates for the given names.
    DevCerts(DevCertsArgs),
}

/// The config file, and overrides for every scalar field (flag or RTN_* env).
#[derive(Args, Clone)]
struct RunArgs {
    #[arg(long, short, env = "RTN_CONFIG")]
    config: PathBuf,
    #[arg(long, env = "RTN_EDGE_ID")]
    id: Option<u32>,
    #[arg(long, env = "RTN_EDGE_REGION")]
    region: Option<String>,
    #[arg(long, env = "RTN_EDGE_CITY")]
    city: Option<String>,
    #[arg(long, env = "RTN_EDGE_LISTEN")]
    listen: Option<SocketAddr>,
    #[arg(long, env = "RTN_EDGE_PUBLIC_ADDR")]
    public_addr: Option<SocketAddr>,
    #[arg(long, env = "RTN_EDGE_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    #[arg(long, env = "RTN_EDGE_SERVER_NAME")]
    server_name: Option<String>,
    #[arg(long, env = "RTN_EDGE_UDP_BUFFER_BYTES")]
    udp_buffer_bytes: Option<usize>,
    #[arg(long, env = "RTN_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    #[arg(long, env = "RTN_TLS_KEY")]
    tls_key: Option<PathBuf>,
    #[arg(long, env = "RTN_TLS_MESH_CA")]
    tls_mesh_ca: Option<PathBuf>,
    #[arg(long, env = "RTN_TLS_DEV_SELF_SIGNED")]
    tls_dev_self_signed: Option<bool>,
    #[arg(long, env = "RTN_LIMITS_MAX_SESSIONS")]
    max_sessions: Option<usize>,
    #[arg(long, env = "RTN_LIMITS_JOIN_TIMEOUT_MS")]
    join_timeout_ms: Option<u64>,
    #[arg(long, env = "RTN_LIMITS_SUBSCRIBER_QUEUE")]
    subscriber_queue: Option<usize>,
    #[arg(long, env = "RTN_LIMITS_CLIENT_FRAME_QUEUE")]
    client_frame_queue: Option<usize>,
    #[arg(long, env = "RTN_LIMITS_CLIENT_IDLE_TIMEOUT_MS")]
    client_idle_timeout_ms: Option<u64>,
    #[arg(long, env = "RTN_LIMITS_DRAIN_TIMEOUT_MS")]
    drain_timeout_ms: Option<u64>,
    #[arg(long, env = "RTN_LIMITS_GOAWAY_RECONNECT_MS")]
    goaway_reconnect_ms: Option<u32>,
    #[arg(long, env = "RTN_ADMISSION_RETRY", value_enum)]
    retry: Option<edge_node::config::RetryMode>,
    #[arg(long, env = "RTN_ADMISSION_RETRY_ABOVE_HANDSHAKES")]
    retry_above_handshakes: Option<usize>,
    #[arg(long, env = "RTN_ADMISSION_MAX_HANDSHAKES")]
    max_handshakes: Option<usize>,
    #[arg(long, env = "RTN_ADMISSION_HANDSHAKE_TIMEOUT_MS")]
    handshake_timeout_ms: Option<u64>,
    #[arg(long, env = "RTN_ADMISSION_CONNECTIONS_PER_IP_PER_S")]
    connections_per_ip_per_s: Option<u32>,
    #[arg(long, env = "RTN_ADMISSION_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    #[arg(long, env = "RTN_ADMISSION_JOINS_PER_TOKEN_PER_S")]
    joins_per_token_per_s: Option<u32>,
    #[arg(long, env = "RTN_ADMISSION_MESSAGES_PER_SESSION_PER_S")]
    messages_per_session_per_s: Option<u32>,
    #[arg(long, env = "RTN_ADMISSION_MEDIA_BYTES_PER_SESSION_PER_S")]
    media_bytes_per_session_per_s: Option<u64>,
    #[arg(long, env = "RTN_ADMISSION_DROPPED_DATAGRAMS_PER_SESSION_PER_S")]
    dropped_datagrams_per_session_per_s: Option<u32>,
    #[arg(long, env = "RTN_EDGE_LAT")]
    lat: Option<f64>,
    #[arg(long, env = "RTN_EDGE_LON")]
    lon: Option<f64>,
    /// Comma-separated etcd URLs of the control plane.
    #[arg(long, env = "RTN_CONTROL_ETCD", value_delimiter = ',')]
    etcd: Option<Vec<String>>,
    /// PEM CA of the etcd members (https:// endpoints).
    #[arg(long, env = "RTN_CONTROL_ETCD_CA")]
    etcd_ca: Option<PathBuf>,
    /// PEM client certificate presented to etcd.
    #[arg(long, env = "RTN_CONTROL_ETCD_CERT")]
    etcd_cert: Option<PathBuf>,
    /// PEM key of the etcd client certificate.
    #[arg(long, env = "RTN_CONTROL_ETCD_KEY")]
    etcd_key: Option<PathBuf>,
    /// Name the etcd members' certificates are verified against.
    #[arg(long, env = "RTN_CONTROL_ETCD_SERVER_NAME")]
    etcd_server_name: Option<String>,
    #[arg(long, env = "RTN_CONTROL_PREFIX")]
    control_prefix: Option<String>,
    #[arg(long, env = "RTN_CONTROL_LEASE_TTL_MS")]
    lease_ttl_ms: Option<u64>,
    #[arg(long, env = "RTN_CONTROL_PROBES_PER_OTHER_REGION")]
    probes_per_other_region: Option<usize>,
    #[arg(long, env = "RTN_CONTROL_PROBE_FULL_MESH_MAX_EDGES")]
    probe_full_mesh_max_edges: Option<usize>,
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
    fn load(&self) -> anyhow::Result<EdgeConfig> {
        let mut c = EdgeConfig::load(&self.config)?;
        macro_rules! set {
            ($($field:ident => $target:expr),* $(,)?) => {
                $(if let Some(v) = self.$field.clone() { $target = v.into(); })*
            };
        }
        set!(
            id => c.edge.id,
            region => c.edge.region,
            city => c.edge.city,
            listen => c.edge.listen,
            admin_listen => c.edge.admin_listen,
            server_name => c.edge.server_name,
            udp_buffer_bytes => c.edge.udp_buffer_bytes,
            tls_dev_self_signed => c.tls.dev_self_signed,
            max_sessions => c.limits.max_sessions,
            join_timeout_ms => c.limits.join_timeout_ms,
            subscriber_queue => c.limits.subscriber_queue,
            client_frame_queue => c.limits.client_frame_queue,
            client_idle_timeout_ms => c.limits.client_idle_timeout_ms,
            drain_timeout_ms => c.limits.drain_timeout_ms,
            goaway_reconnect_ms => c.limits.goaway_reconnect_ms,
            retry => c.admission.retry,
            retry_above_handshakes => c.admission.retry_above_handshakes,
            max_handshakes => c.admission.max_handshakes,
            handshake_timeout_ms => c.admission.handshake_timeout_ms,
            connections_per_ip_per_s => c.admission.connections_per_ip_per_s,
            max_connections_per_ip => c.admission.max_connections_per_ip,
            joins_per_token_per_s => c.admission.joins_per_token_per_s,
            messages_per_session_per_s => c.admission.messages_per_session_per_s,
            media_bytes_per_session_per_s => c.admission.media_bytes_per_session_per_s,
            dropped_datagrams_per_session_per_s => c.admission.dropped_datagrams_per_session_per_s,
            etcd => c.control.store.etcd_endpoints,
            control_prefix => c.control.store.prefix,
            lease_ttl_ms => c.control.lease_ttl_ms,
            probes_per_other_region => c.control.probes_per_other_region,
            probe_full_mesh_max_edges => c.control.probe_full_mesh_max_edges,
        );
        if let Some(v) = self.lat {
            c.edge.lat = Some(v);
        }
        if let Some(v) = self.lon {
            c.edge.lon = Some(v);
        }
        if let Some(v) = self.public_addr {
            c.edge.public_addr = Some(v);
        }
        if let Some(v) = &self.tls_cert {
            c.tls.cert = Some(v.clone());
        }
        if let Some(v) = &self.tls_key {
            c.tls.key = Some(v.clone());
        }
        if let Some(v) = &self.tls_mesh_ca {
            c.tls.mesh_ca = Some(v.clone());
        }
        if let Some(v) = &self.etcd_ca {
            c.control.store.etcd_ca = Some(v.clone());
        }
        if let Some(v) = &self.etcd_cert {
            c.control.store.etcd_cert = Some(v.clone());
        }
        if let Some(v) = &self.etcd_key {
            c.control.store.etcd_key = Some(v.clone());
        }
        if let Some(v) = &self.etcd_server_name {
            c.control.store.etcd_server_name = Some(v.clone());
        }
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
