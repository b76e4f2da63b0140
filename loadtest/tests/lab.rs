//! CI-sized labs (emulated WAN, controllers, SDK clients running the
//! traffic mix), asserting what the network promises users:
//!
//! - the CI world (ten edges in five regions) with an edge killed mid-run;
//! - the hard world (`topologies/hard.toml`: one- and two-relay optima, a
//!   cut pair, a congested link in a four-city region) with relays killed in
//!   the middle of paths;
//! - the hard world with lossy and jittery links, judged by the cost the
//!   controller minimises;
//! - the CI world at 10% loss on every link and last mile, with loss repair
//!   off and on.
//!
//! The labs run one at a time (each wants the machine to itself).

use std::time::Duration;

use loadtest::lab::chaos::{Action, Event, Plan};
use loadtest::lab::world::{TopologyFile, WeakNetwork};
use loadtest::lab::{run, LabOptions, Report};

/// One lab at a time in this process.
static MACHINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Run `topology` (a file of `loadtest/topologies`) for `duration_s` with
/// `chaos`; the report and its JSON form.
async fn lab(topology: &str, duration_s: u64, chaos: Vec<Event>) -> (Report, serde_json::Value) {
    lab_with(topology, duration_s, chaos, None, true).await
}

/// [`lab`] with `weak` on every link and last mile, and loss repair on or
/// off.
async fn lab_with(
    topology: &str,
    duration_s: u64,
    chaos: Vec<Event>,
    weak: Option<WeakNetwork>,
    repair: bool,
) -> (Report, serde_json::Value) {
    let _machine = MACHINE.lock().await;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_test_writer()
        .try_init();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("topologies")
        .join(topology);
    let mut topology = TopologyFile::load(&path).expect("topology");
    topology.weak_network = weak.or(topology.weak_network);
    let report_path = std::env::temp_dir().join(format!(
        "rtn-lab-{}-{}.json",
        std::process::id(),
        path.file_stem().unwrap().to_string_lossy()
    ));
    let report = tokio::time::timeout(
        Duration::from_secs(duration_s + 80),
        run(LabOptions {
            topology,
            etcd: None,
            duration: Some(Duration::from_secs(duration_s)),
            chaos: Plan { events: chaos },
            report: Some(report_path.clone()),
            verbose: true,
            repair,
        }),
    )
    .await
    .expect("the lab run is bounded")
    .expect("the lab runs");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let _ = std::fs::remove_file(&report_path);
    (report, json)
}

/// What every lab run must show: everyone joined, every expected stream
/// received something, and no message lost, duplicated or reordered.
fn assert_users_were_served(report: &Report) {
    let f = &report.felt;
    assert_eq!(
        report.clients_joined, report.clients,
        "{:?}",
        f.join_failures
    );
    assert!(f.join_failures.is_empty(), "{:?}", f.join_failures);
    assert!(f.messages.sent > 0);
    assert!(f.media_streams.expected > 0);
    assert_eq!(f.media_streams.silent, 0, "{:?}", f.media_streams);
    assert_eq!(f.messages.lost, 0, "{:?}", f.messages);
    assert_eq!(f.messages.duplicates, 0, "{:?}", f.messages);
    assert_eq!(f.messages.reordered, 0, "{:?}", f.messages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_lab_keeps_its_promises() {
    // Edge 3 (Ashburn) serves two clients; kill it abruptly mid-run.
    let chaos = vec![Event {
        at_s: 8.0,
        action: Action::KillEdge { edge: 3 },
    }];
    let (report, json) = lab("ci.toml", 32, chaos).await;
    for field in [
        "start_together_ms",
        "first_media",
        "media_latency_ms",
        "media_loss",
        "media_streams",
        "messages",
        "path_stretch",
        "cost_stretch",
        "route_changes",
        "relayed_better_than_direct",
        "failover_ms",
        "machine",
    ] {
        assert!(json.get(field).is_some(), "report field {field} missing");
    }
    for field in ["all_pairs", "traffic_pairs"] {
        assert!(
            json["path_stretch"].get(field).is_some(),
            "report field path_stretch.{field} missing"
        );
    }
    assert!(json["route_changes"].get("unexplained").is_some());
    println!(
        "CI lab: all-pairs stretch {:?}; route changes {:?}; first media {:?}; machine {:?}",
        report.path_stretch.all_pairs.figures,
        report.route_changes,
        report.first_media,
        report.machine
    );
    // A late joiner a second, an edge killed among them: every one gets
    // media (the race passes over the dead candidate).
    let late = &report.first_media;
    assert!(late.joiners >= 20, "{late:?}");
    assert!(late.failures.is_empty(), "{late:?}");
    assert!(late.first_media_ms.is_some(), "{late:?}");

    assert_users_were_served(&report);
    let f = &report.felt;
    let traffic = &report.path_stretch.traffic_pairs.figures;
    assert!(
        traffic.samples > 0 && traffic.within_5pct >= 0.99,
        "{:?}",
        report.path_stretch.traffic_pairs
    );
    let all = &report.path_stretch.all_pairs.figures;
    assert!(
        all.samples > 0 && all.within_5pct >= 0.99,
        "{:?}",
        report.path_stretch.all_pairs
    );
    assert!(
        report.relayed_better_than_direct >= 1,
        "some pair must use a relay that beats its degraded direct link"
    );
    let failover = f.failover_ms.as_ref().expect("a failure was injected");
    assert!(
        failover.interrupted >= 1,
        "the killed edge's clients were affected"
    );
    assert_eq!(failover.unrecovered, 0, "{failover:?}");
    assert!(failover.max < 1_000.0, "{failover:?}");
    let streams = f
        .stream_failover_ms
        .as_ref()
        .expect("a failure was injected");
    assert_eq!(
        streams.unrecovered, 0,
        "every stream came back: {streams:?}"
    );
}

/// The hard world with relays killed in the middle of paths (ids of
/// `topologies/hard.toml`): San Jose, the second relay of São Paulo -> Miami
/// -> San Jose -> Tokyo and the relay of the US east coast's paths to Tokyo
/// (the broadcast's among them); then Miami, the first relay of São Paulo's
/// paths. Each also hosts a client, which fails over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_world_takes_the_best_paths_and_survives_relay_kills_and_a_cut() {
    let event = |at_s, action| Event { at_s, action };
    let chaos = vec![
        event(8.0, Action::KillEdge { edge: 13 }),
        event(16.0, Action::RestartEdge { edge: 13 }),
        event(22.0, Action::KillEdge { edge: 4 }),
        // Not a death: Ashburn - San Jose, the first link of the
        // broadcast's path to Tokyo, is cut with both edges up. San Jose's
        // own members are reached around it.
        event(
            30.0,
            Action::Partition {
                a: "iad".into(),
                b: "sjc".into(),
            },
        ),
    ];
    let (report, _) = lab("hard.toml", 44, chaos).await;
    println!(
        "hard lab: all-pairs stretch {:?}; route changes {:?}; stream failover {:?}; machine {:?}",
        report.path_stretch.all_pairs.figures,
        report.route_changes,
        report.felt.stream_failover_ms,
        report.machine
    );
    assert_users_were_served(&report);
    let all = &report.path_stretch.all_pairs.figures;
    assert!(
        all.samples > 0 && all.within_5pct >= 0.99 && all.p99 < 1.10 && all.broken == 0,
        "{:?}",
        report.path_stretch.all_pairs
    );
    assert!(
        report.relayed_better_than_direct >= 2,
        "relays beat the world's detoured links"
    );
    assert_eq!(
        report.route_changes.unexplained, 0,
        "no route change without a change in the network: {:?}",
        report.route_changes
    );
    let streams = report
        .felt
        .stream_failover_ms
        .as_ref()
        .expect("failures were injected");
    assert_eq!(streams.unrecovered, 0, "{streams:?}");
    // The slowest streams are those of the killed edges' own clients, which
    // fail over to another edge first (under 1 s measured in release; a
    // margin for a busy CI machine).
    assert!(streams.max < 1_500.0, "{streams:?}");
}

/// The hard world with lossy and jittery links: paths within 5% of the
/// optimum of the cost the controller minimises (RTT stretch is reported
/// beside it: avoiding loss may take a longer path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_lossy_world_takes_the_cheapest_paths() {
    let (report, _) = lab("hard-lossy.toml", 28, vec![]).await;
    println!(
        "hard lossy lab: cost stretch {:?}; RTT stretch {:?}; machine {:?}",
        report.cost_stretch.all_pairs, report.path_stretch.all_pairs.figures, report.machine
    );
    assert_users_were_served(&report);
    // 97%: on 3-6% loss, a loss estimate from a few hundred probes ranks
    // near-tie paths either way for a while (100% in release runs, 98.4% in
    // a CI-like run with the suite loading the machine; the figures are in
    // docs/benchmarks.md).
    let cost = &report.cost_stretch.all_pairs;
    assert!(
        cost.samples > 0 && cost.within_5pct >= 0.97 && cost.broken == 0,
        "{:?}",
        report.cost_stretch.all_pairs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_on_every_link_is_repaired() {
    let weak = WeakNetwork {
        loss: 0.10,
        ..WeakNetwork::default()
    };
    let (off, _) = lab_with("ci.toml", 15, vec![], Some(weak), false).await;
    let (on, json) = lab_with("ci.toml", 15, vec![], Some(weak), true).await;
    for field in [
        "stall_rate",
        "residual_loss",
        "playout_loss",
        "repair_overhead",
        "playout_audio",
        "playout_video",
        "repair",
    ] {
        assert!(json.get(field).is_some(), "report field {field} missing");
    }
    loadtest::bench_weak::print(&[
        loadtest::bench_weak::Row::of("CI world, 10% loss", false, &off),
        loadtest::bench_weak::Row::of("CI world, 10% loss", true, &on),
    ]);
    let (q_off, q_on) = (&off.quality, &on.quality);
    // Messages ride QUIC streams: nothing lost whatever the loss.
    assert_users_were_served(&on);
    // Off: three or four lossy hops lose about a third of the media.
    assert!(q_off.residual_loss.audio > 0.15, "{q_off:?}");
    assert_eq!(q_off.repair_overhead, 0.0);
    // On: every hop repairs its own loss.
    for (kind, off, on) in [
        ("audio", q_off.residual_loss.audio, q_on.residual_loss.audio),
        ("video", q_off.residual_loss.video, q_on.residual_loss.video),
    ] {
        assert!(
            on < off / 4.0,
            "{kind} residual loss {on} with repair, {off} without"
        );
    }
    assert!(
        q_on.stall_rate.audio < q_off.stall_rate.audio / 2.0,
        "audio stalls {} with repair, {} without",
        q_on.stall_rate.audio,
        q_off.stall_rate.audio
    );
    assert!(
        q_on.repair_overhead > 0.0 && q_on.repair_overhead < 0.5,
        "{q_on:?}"
    );
}
