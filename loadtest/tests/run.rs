//! `loadtest run` against a running RTN it knows only by its controller's
//! URL: two edges and a region controller serving its public API on
//! loopback; the clients find their edges through the API.

use std::time::Duration;

use loadtest::lab::traffic::App;
use loadtest::run::{run, RunOptions};
use testkit::region::{ClientCert, Region};
use testkit::tokens::{APP, SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_drives_a_deployment_through_its_public_api() {
    let region = Region::start().await;
    let mut edges = vec![];
    for (id, city) in [(1, "fra"), (2, "ams")] {
        let at = "127.0.0.1:0".parse().unwrap();
        edges.push(region.edge(id, city, at, ClientCert::FromCa).await);
    }
    // Routes between the two edges, so members on both meet.
    Region::routes_between(&edges).await;
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        run(RunOptions {
            controllers: vec![region.api_url()],
            app: App {
                id: APP.into(),
                secret: SECRET.into(),
            },
            trust: sdk::EdgeTrust::Ca(region.pki.ca_pem().into_bytes()),
            clients: 6,
            local_ips: vec![[127, 0, 0, 1].into(), [127, 0, 0, 2].into()],
            duration: Duration::from_secs(5),
            report: None,
            verbose: false,
        }),
    )
    .await
    .expect("bounded")
    .expect("runs");
    assert_eq!(report.clients_joined, 6, "{:?}", report.felt.join_failures);
    let m = &report.felt.messages;
    assert!(m.sent > 0 && m.delivered > 0, "{m:?}");
    assert_eq!((m.lost, m.duplicates, m.reordered), (0, 0, 0), "{m:?}");
    assert!(report.felt.media_received > 0);
    assert!(report.felt.start_together_ms.is_some());
    let late = &report.first_media;
    assert!(late.joiners >= 2, "{late:?}");
    assert!(late.failures.is_empty(), "{late:?}");
    assert!(late.first_media_ms.is_some(), "{late:?}");
    for e in edges {
        e.kill().await;
    }
    region.stop().await;
}
