//! An edge built with the `netem` feature and running a `[netem]` WAN
//! emulation serves its rules on the admin port to the admin token only:
//! 403 while the edge has no token, 401 without or with a wrong one, and
//! with it the rules can be read and replaced (bad rules refused, nothing
//! changed).
#![cfg(feature = "netem")]
mod common;

use common::*;
use edge_node::config::NetemSection;
use edge_node::{Edge, EdgeConfig, EdgeOptions};

const TOKEN_ENV: &str = "RTN_ADMIN_NETEM_TEST_TOKEN";

async fn edge(token_env: Option<&str>) -> Edge {
    let mut cfg = EdgeConfig::dev(1, APP, SECRET);
    cfg.edge.admin_token_env = token_env.map(String::from);
    cfg.netem = Some(NetemSection::default());
    Edge::start(cfg, EdgeOptions::default()).await.unwrap()
}

#[tokio::test]
async fn netem_rules_are_for_the_admin_token_only() {
    init_logs();
    // SAFETY (edition 2021: set_var is safe): set before any edge reads it,
    // and no other test in this binary reads this variable.
    std::env::set_var(TOKEN_ENV, "s3cret-admin");
    let rule = r#"[{"from":"127.0.0.1/32","to":"127.0.0.2/32","delay_ms":25.0}]"#;
    let bearer = |t: &str| format!("Bearer {t}");

    let closed = edge(None).await;
    let (code, body) = http(
        closed.admin_addr(),
        "GET",
        "/netem",
        &[("authorization", &bearer("s3cret-admin"))],
        "",
    )
    .await
    .unwrap();
    assert_eq!(code, 403, "{body}");
    closed.kill().await;

    let e = edge(Some(TOKEN_ENV)).await;
    let admin = e.admin_addr();
    for auth in [
        None,
        Some(bearer("wrong")),
        Some("s3cret-admin".to_string()),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let (code, _) = http(admin, "PUT", "/netem", &headers, rule).await.unwrap();
        assert_eq!(code, 401, "{auth:?}");
    }
    let ok = bearer("s3cret-admin");
    let auth = [("authorization", ok.as_str())];
    let (code, body) = http(admin, "PUT", "/netem", &auth, rule).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(admin, "GET", "/netem", &auth, "").await.unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains("127.0.0.2/32") && body.contains("25"),
        "{body}"
    );
    let (code, _) = http(admin, "PUT", "/netem", &auth, r#"[{"from":"x"}]"#)
        .await
        .unwrap();
    assert_eq!(code, 400, "bad rules refused");
    let (_, after) = http(admin, "GET", "/netem", &auth, "").await.unwrap();
    assert_eq!(after, body, "a refused PUT changes nothing");
    // Metrics and health stay open.
    let (code, _) = http(admin, "GET", "/healthz", &[], "").await.unwrap();
    assert_eq!(code, 200);
    e.kill().await;
}
