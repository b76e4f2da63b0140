//! `loadtest run` against a running RTN it knows only by its controller's
//! URL: two edges and a region controller serving its public API on
//! loopback; the clients find their edges through the API.

use std::sync::Arc;
use std::time::Duration;

use control::keys::KeyLayout;
use control::store::{ControlStore, MemoryStore};
use edge_node::tls::DevPki;
use edge_node::{Edge, EdgeConfig, EdgeOptions};
use loadtest::lab::traffic::App;
use loadtest::run::{run, RunOptions};
use region_controller::api::Api;
use region_controller::controller::{Controller, RoutingOptions};

const APP: &str = "demo";
const SECRET: &str = "run-test-secret-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_drives_a_deployment_through_its_public_api() {
    let store: Arc<dyn ControlStore> = Arc::new(MemoryStore::new());
    let controller = Controller::start(
        store.clone(),
        KeyLayout::default(),
        RoutingOptions::quick("eu", "ctl"),
    );
    let api = Api::new(
        controller.mesh.clone(),
        controller.leader.clone(),
        "eu".into(),
        None,
        1_000,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(Arc::new(api).serve(listener));
    let pki = DevPki::new().unwrap();
    let mut edges = vec![];
    for (id, city) in [(1, "fra"), (2, "ams")] {
        let mut cfg = EdgeConfig::dev(id, APP, SECRET);
        cfg.edge.region = "eu".into();
        cfg.edge.city = city.into();
        let opts = EdgeOptions {
            tls: Some(pki.material(&["localhost".into()]).unwrap()),
            client_cert: Some(pki.client_cert(&["localhost".into()]).unwrap()),
            store: Some(store.clone()),
            ..Default::default()
        };
        edges.push(Edge::start(cfg, opts).await.unwrap());
    }
    // Routes between the two edges, so members on both meet.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while edges.iter().any(|e| e.core.route_table().paths.is_empty()) {
        assert!(std::time::Instant::now() < deadline, "no routes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        run(RunOptions {
            controllers: vec![url],
            app: App {
                id: APP.into(),
                secret: SECRET.into(),
            },
            trust: sdk::EdgeTrust::Ca(pki.ca_pem().into_bytes()),
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
    controller.shutdown().await;
}
