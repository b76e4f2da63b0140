//! The CI-sized lab: ten edges in five regions on an emulated WAN, their
//! controllers, thirteen SDK clients running the traffic mix, and an edge
//! killed mid-run. Asserts what the network promises users.

use std::time::Duration;

use loadtest::lab::chaos::{Action, Event, Plan};
use loadtest::lab::world::TopologyFile;
use loadtest::lab::{run, LabOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_lab_keeps_its_promises() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_test_writer()
        .try_init();
    let topology: TopologyFile =
        toml::from_str(include_str!("../topologies/ci.toml")).expect("ci topology");
    // Edge 3 (Ashburn) serves two clients; kill it abruptly mid-run.
    let chaos = Plan {
        events: vec![Event {
            at_s: 8.0,
            action: Action::KillEdge { edge: 3 },
        }],
    };
    let report_path = std::env::temp_dir().join(format!("rtn-lab-{}.json", std::process::id()));
    let report = tokio::time::timeout(
        Duration::from_secs(110),
        run(LabOptions {
            topology,
            etcd: None,
            duration: Some(Duration::from_secs(32)),
            chaos,
            report: Some(report_path.clone()),
            verbose: true,
        }),
    )
    .await
    .expect("the lab run stays well under two minutes")
    .expect("the lab runs");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let _ = std::fs::remove_file(&report_path);
    for field in [
        "join_ms",
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
    // Other work makes routes hold still without a change in the network;
    // until then the figure is only reported.
    assert!(json["route_changes"].get("unexplained").is_some());
    println!(
        "CI lab: all-pairs stretch {:?}; route changes {:?}; machine {:?}",
        report.path_stretch.all_pairs.figures, report.route_changes, report.machine
    );

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
