//! `loadtest`: benchmarks and load against RTN.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "RTN load generator and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A global RTN on loopback: edges in cities across regions, a region
    /// controller and a standby per region, WAN emulation on every socket,
    /// SDK clients running a traffic mix; prints the dashboard URL, a status
    /// line and a summary. Until Ctrl-C or --duration.
    Lab(LabArgs),
    /// The lab's traffic mix against a running RTN (any deployment), through
    /// its public API and the SDK only; prints and writes the report.
    Run(RunArgs),
    /// A small local mesh on loopback (3 edges, relayed path) with SDK
    /// clients exchanging audio and chat, until Ctrl-C or --duration.
    Demo {
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<u64>,
    },
    /// The lab's latency model against published inter-region RTTs: every
    /// pair, the fitted figures, each model's per-pair error, and the
    /// published triangle-inequality violations (docs/lab.md, "Calibration").
    Calibration,
    /// The control plane at fleet size: N synthetic edges (tokio tasks) on a
    /// real etcd (loopback only) with the real region-controller binary per
    /// region; prints and writes etcd write rates, controller CPU, RSS and
    /// recompute times, and route-update latency, against the goals.
    #[cfg(feature = "etcd")]
    ControlScale(loadtest::control_scale::Args),
    /// Benchmarks that print figures against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(clap::Args)]
struct LabArgs {
    /// Topology file (cities, edges and clients per city, link overrides);
    /// default: the built-in world (loadtest/topologies/world.toml).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// etcd client URL(s), comma-separated; default: the embedded store.
    #[arg(long)]
    etcd: Option<String>,
    /// Seconds of traffic; default: until Ctrl-C.
    #[arg(long)]
    duration: Option<u64>,
    /// Failure-injection plan (TOML, see docs/lab.md).
    #[arg(long)]
    chaos: Option<PathBuf>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Forward media best-effort: no loss repair (NACK, parity) on the
    /// edges or the clients, to compare with the default.
    #[arg(long)]
    no_repair: bool,
    /// Where the demo page is served (sdk-js/demo with the browser SDK,
    /// tokens for it; printed as `demo: http://...`).
    #[arg(long, default_value = "127.0.0.1:0")]
    web_listen: std::net::SocketAddr,
    /// Also serve the lab's control endpoints on the web server (/lab/*:
    /// kill, drain and restart edges, run a Rust peer), for browser tests.
    /// Off by default.
    #[arg(long)]
    lab_control: bool,
    /// The browser SDK's build (rtn.js); default: sdk-js/dist of this
    /// repository (`npm ci && npm run build` in sdk-js).
    #[arg(long)]
    sdk_js_dist: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// A region controller's API URL (http://host:port); repeat for several
    /// regions, clients are spread over them.
    #[arg(long = "controller", required = true)]
    controllers: Vec<String>,
    /// App id the tokens are minted for.
    #[arg(long, env = "RTN_APP_ID", default_value = "demo")]
    app: String,
    /// The app's token secret (from the environment, so it stays out of
    /// process listings).
    #[arg(long, env = "RTN_APP_SECRET", hide_env_values = true)]
    app_secret: String,
    /// PEM CA certificate the edges' client certificates chain to (a
    /// private deployment). Default: the system's WebPKI roots.
    #[arg(long, conflicts_with = "pin_published")]
    ca: Option<PathBuf>,
    /// Trust the certificate digests the controller publishes for edges
    /// with self-signed development certificates (`client_tls.mode =
    /// "self_signed"`), as browsers do.
    #[arg(long)]
    pin_published: bool,
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// A local address clients send from; repeat for several (round robin),
    /// e.g. loopback addresses placed in different cities by a WAN
    /// emulation. Default: the system's choice.
    #[arg(long = "client-ip")]
    client_ips: Vec<std::net::IpAddr>,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Write the report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Bench {
    /// Floods and hostile clients against one edge, with a legitimate
    /// call's latency during each against a no-attack baseline.
    Abuse {
        /// Seconds of the baseline and of each attack.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Spoofed source addresses in the handshake flood.
        #[arg(long, default_value_t = 500)]
        spoofed_sources: usize,
        /// Only these attacks (default: all).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Print the report as JSON too.
        #[arg(long)]
        json: bool,
    },
    /// Media through one edge vs a direct quinn flow: packet-rate ratio and added latency.
    Forwarding {
        #[arg(long, default_value_t = 200)]
        payload: usize,
        /// Seconds of the flat-out run and of each throughput trial (six per
        /// flow and round, a failed one tried twice); latency rounds take
        /// twice as long.
        #[arg(long, default_value_t = 1)]
        seconds: u64,
        /// Alternating direct/edge rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// The edge without loss repair (to measure what repair costs a
        /// healthy network).
        #[arg(long)]
        no_repair: bool,
        /// Print the report as JSON too.
        #[arg(long)]
        json: bool,
    },
    /// One publisher to many subscribers over several edges: delivery, CPU per
    /// delivered Mbit/s, and packets per overlay link (each packet once).
    Fanout {
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 4)]
        edges: usize,
        /// Edges (the last ones) the publisher's edge reaches through the
        /// second edge rather than directly.
        #[arg(long, default_value_t = 1)]
        relayed: usize,
        /// Media packets per second from the publisher.
        #[arg(long, default_value_t = 50)]
        pps: u32,
        #[arg(long, default_value_t = 1000)]
        payload: usize,
        /// Seconds of measured publishing.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Print the report as JSON too.
        #[arg(long)]
        json: bool,
    },
    /// A big broadcast channel: one publisher and N viewers over many edges;
    /// setup time (first Join until every viewer is joined, knows the member
    /// count and gets media), directory bytes per second per edge, and the
    /// membership frames each viewer receives.
    Channel {
        /// Viewers (the channel has one member more, the publisher).
        #[arg(long, default_value_t = 10_000)]
        members: usize,
        #[arg(long, default_value_t = 50)]
        edges: usize,
        /// Seconds measured after setup.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Media packets per second from the publisher.
        #[arg(long, default_value_t = 50)]
        pps: u32,
        /// Joins waiting for their answer at once.
        #[arg(long, default_value_t = 1_000)]
        join_parallel: usize,
        /// Give up setup after this many seconds.
        #[arg(long, default_value_t = 60)]
        setup_timeout: u64,
        /// Print the report as JSON too.
        #[arg(long)]
        json: bool,
    },
    /// One-way media latency through chains of 1..N edges vs a direct quinn
    /// flow in the same run: added latency per relay hop (p50/p99).
    Multihop {
        /// Longest chain, in edges.
        #[arg(long, default_value_t = 4)]
        max_hops: usize,
        /// Packets per second of every flow.
        #[arg(long, default_value_t = 1000)]
        pps: u32,
        #[arg(long, default_value_t = 200)]
        payload: usize,
        /// Rounds; in each, every flow gets one turn.
        #[arg(long, default_value_t = 4)]
        rounds: usize,
        /// Seconds of each turn.
        #[arg(long, default_value_t = 1.0)]
        turn: f64,
        /// Print the report as JSON too.
        #[arg(long)]
        json: bool,
    },
    /// The lab's world under weak networks (none, 5%, 10% + 50 ms jitter,
    /// 20%, bursty 10%, 30% loss on every link and last mile), each run with
    /// loss repair off and on: residual loss, stall rates, latency at
    /// playout and repair overhead side by side.
    WeakNetwork {
        /// Topology file; default: the built-in world.
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Seconds of traffic in each run.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Only profiles whose names contain one of these (e.g. "10%").
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Print the rows as JSON too.
        #[arg(long)]
        json: bool,
    },
    /// Media Gbit/s per core of one edge-node process, with 1 and 2 quinn
    /// endpoints on its port (SO_REUSEPORT), flat out and paced.
    Capacity {
        /// Media payload per datagram (default: the largest the protocol
        /// carries).
        #[arg(long, default_value_t = protocol::limits::MAX_MEDIA_PAYLOAD)]
        payload: usize,
        /// Publisher -> subscriber pairs per edge.
        #[arg(long, default_value_t = 4)]
        flows: usize,
        /// Endpoint counts to compare, one edge process each.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        endpoints: Vec<usize>,
        /// Seconds of each trial.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Paced load as a fraction of the first edge's flat-out goodput.
        #[arg(long, default_value_t = 0.6)]
        pace: f64,
        /// The edge-node binary; default: next to this one.
        #[arg(long)]
        edge_bin: Option<PathBuf>,
        /// Print the report as JSON too.
        #[arg(long)]
        json: bool,
    },
    /// An idle edge-node process's RSS, then with N idle sessions joined:
    /// bytes per session.
    Memory {
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// Sessions per channel; 0: all in one channel.
        #[arg(long, default_value_t = 0)]
        channel_size: usize,
        /// Seconds to wait before each RSS reading.
        #[arg(long, default_value_t = 2.0)]
        settle: f64,
        /// The edge-node binary; default: next to this one.
        #[arg(long)]
        edge_bin: Option<PathBuf>,
        /// Run the edge in this process instead (the RSS then includes the
        /// clients' side of every connection).
        #[arg(long)]
        in_process: bool,
        /// Keepalive period of each session, ms (the SDK's default: 150).
        #[arg(long, default_value_t = 2000)]
        keepalive_ms: u64,
        /// Print the report as JSON too.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The lab injects failures on purpose: their warnings (links down,
    // dials refused) would bury the status line. RUST_LOG=warn shows them.
    let default_filter = match cli.command {
        Command::Lab(_) | Command::Run(_) => "error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Lab(args) => {
            let topology = match &args.topology {
                Some(p) => loadtest::lab::world::TopologyFile::load(p)?,
                None => loadtest::lab::world::TopologyFile::builtin(),
            };
            let chaos = match &args.chaos {
                Some(p) => loadtest::lab::chaos::Plan::load(p)?,
                None => Default::default(),
            };
            let web = loadtest::lab::web::WebOptions {
                listen: args.web_listen,
                lab_control: args.lab_control,
                sdk_js_dist: args
                    .sdk_js_dist
                    .unwrap_or_else(loadtest::lab::web::default_sdk_js_dist),
            };
            rt.block_on(loadtest::lab::run_with(
                loadtest::lab::LabOptions {
                    topology,
                    etcd: args.etcd,
                    duration: args.duration.map(Duration::from_secs),
                    chaos,
                    report: args.report,
                    verbose: true,
                    repair: !args.no_repair,
                },
                Some(web),
            ))?;
        }
        Command::Run(args) => {
            let trust = match (&args.ca, args.pin_published) {
                (Some(ca), _) => sdk::EdgeTrust::Ca(
                    std::fs::read(ca)
                        .map_err(|e| anyhow::anyhow!("reading --ca {}: {e}", ca.display()))?,
                ),
                (None, true) => sdk::EdgeTrust::PinnedHashes,
                (None, false) => sdk::EdgeTrust::WebPki,
            };
            rt.block_on(loadtest::run::run(loadtest::run::RunOptions {
                controllers: args.controllers,
                app: loadtest::lab::traffic::App {
                    id: args.app,
                    secret: args.app_secret,
                },
                trust,
                clients: args.clients,
                local_ips: args.client_ips,
                duration: Duration::from_secs(args.duration),
                report: args.report,
                verbose: true,
            }))?;
        }
        Command::Demo { duration } => {
            rt.block_on(loadtest::demo::run(duration.map(Duration::from_secs)))?
        }
        #[cfg(feature = "etcd")]
        Command::ControlScale(args) => rt.block_on(loadtest::control_scale::run(args))?,
        Command::Calibration => {
            use loadtest::lab::calibration::{print, report, Published};
            print(&report(Published::builtin()?));
        }
        Command::Bench {
            which:
                Bench::Forwarding {
                    payload,
                    seconds,
                    rounds,
                    no_repair,
                    json,
                },
        } => {
            let p = loadtest::bench_forwarding::Params {
                payload,
                saturate_for: Duration::from_secs(seconds),
                rounds,
                latency_for: Duration::from_secs(2 * rounds.max(1) as u64 * seconds),
                repair: !no_repair,
            };
            let r = rt.block_on(loadtest::bench_forwarding::run(p))?;
            println!(
                "forwarding benchmark ({} B payload, loopback, same run)",
                r.payload_bytes
            );
            println!(
                "  flat out, delivered: direct {:.0} packets/s, via edge {:.0} ({:.0}% of what was sent; the edge drops the excess oldest-first)",
                r.direct_flat_out_pps,
                r.edge_flat_out_pps,
                r.edge_flat_out_delivered * 100.0
            );
            println!(
                "  throughput (RFC 2544: highest paced rate losing <= 0.5%, median of rounds):"
            );
            println!(
                "  direct quinn client->client : {:>10.0} packets/s",
                r.direct_pps
            );
            println!(
                "  client->edge->client        : {:>10.0} packets/s",
                r.edge_pps
            );
            println!(
                "  ratio edge/direct           : {:>10.2}   (target >= 0.50; rounds {:.2?})",
                r.ratio, r.round_ratios
            );
            println!(
                "  paced at half edge throughput: {:>9.0} packets/s",
                r.paced_pps
            );
            println!(
                "  one-way latency direct      : p50 {:.3} ms  p99 {:.3} ms",
                r.direct_latency_ms[0], r.direct_latency_ms[1]
            );
            println!(
                "  one-way latency via edge    : p50 {:.3} ms  p99 {:.3} ms  (loss {:.4})",
                r.edge_latency_ms[0], r.edge_latency_ms[1], r.edge_paced_loss
            );
            println!(
                "  added by the edge           : p50 {:.3} ms  p99 {:.3} ms   (target p99 < 1 ms; medians of rounds, p99 {:.3?})",
                r.added_p50_ms, r.added_p99_ms, r.round_added_p99_ms
            );
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
        }
        Command::Bench {
            which:
                Bench::Abuse {
                    seconds,
                    spoofed_sources,
                    only,
                    json,
                },
        } => {
            let p = loadtest::bench_abuse::Params {
                phase: Duration::from_secs(seconds),
                spoofed_sources,
            };
            let r = rt.block_on(loadtest::bench_abuse::run(p, &only))?;
            loadtest::bench_abuse::print(&r);
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
        }
        Command::Bench {
            which:
                Bench::Fanout {
                    subscribers,
                    edges,
                    relayed,
                    pps,
                    payload,
                    seconds,
                    json,
                },
        } => {
            let p = loadtest::bench_fanout::Params {
                subscribers,
                edges,
                relayed,
                pps,
                payload,
                duration: Duration::from_secs(seconds),
                ..Default::default()
            };
            let r = rt.block_on(loadtest::bench_fanout::run(p))?;
            loadtest::bench_fanout::print(&r);
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
        }
        Command::Bench {
            which:
                Bench::Channel {
                    members,
                    edges,
                    seconds,
                    pps,
                    join_parallel,
                    setup_timeout,
                    json,
                },
        } => {
            let p = loadtest::bench_channel::Params {
                members,
                edges,
                pps,
                steady: Duration::from_secs(seconds),
                join_parallel,
                setup_timeout: Duration::from_secs(setup_timeout),
                ..Default::default()
            };
            let r = rt.block_on(loadtest::bench_channel::run(p))?;
            loadtest::bench_channel::print(&r);
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
        }
        Command::Bench {
            which:
                Bench::WeakNetwork {
                    topology,
                    seconds,
                    only,
                    json,
                },
        } => {
            let topology = match topology {
                Some(p) => loadtest::lab::world::TopologyFile::load(&p)?,
                None => loadtest::lab::world::TopologyFile::builtin(),
            };
            let rows = rt.block_on(loadtest::bench_weak::run(loadtest::bench_weak::Params {
                topology,
                seconds,
                only,
            }))?;
            loadtest::bench_weak::print(&rows);
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            }
        }
        Command::Bench {
            which:
                Bench::Multihop {
                    max_hops,
                    pps,
                    payload,
                    rounds,
                    turn,
                    json,
                },
        } => {
            let p = loadtest::bench_multihop::Params {
                max_hops,
                pps,
                payload,
                rounds,
                turn: Duration::from_secs_f64(turn),
                ..Default::default()
            };
            let r = rt.block_on(loadtest::bench_multihop::run(p))?;
            loadtest::bench_multihop::print(&r);
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
        }
        Command::Bench {
            which:
                Bench::Capacity {
                    payload,
                    flows,
                    endpoints,
                    seconds,
                    rounds,
                    pace,
                    edge_bin,
                    json,
                },
        } => {
            let p = loadtest::bench_capacity::Params {
                payload,
                flows,
                endpoints,
                trial: Duration::from_secs_f64(seconds),
                rounds,
                pace,
                edge_bin,
            };
            let r = rt.block_on(loadtest::bench_capacity::run(p))?;
            loadtest::bench_capacity::print(&r);
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
        }
        Command::Bench {
            which:
                Bench::Memory {
                    sessions,
                    channel_size,
                    settle,
                    edge_bin,
                    in_process,
                    keepalive_ms,
                    json,
                },
        } => {
            use loadtest::bench_memory::{Mode, Params};
            let p = Params {
                sessions,
                channel_size,
                settle: Duration::from_secs_f64(settle),
                mode: if in_process {
                    Mode::InProcess
                } else {
                    Mode::Process(edge_bin)
                },
                keepalive: Duration::from_millis(keepalive_ms.max(1)),
                ..Default::default()
            };
            let r = rt.block_on(loadtest::bench_memory::run(p))?;
            loadtest::bench_memory::print(&r);
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
        }
    }
    Ok(())
}
