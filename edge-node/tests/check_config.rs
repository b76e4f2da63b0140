//! `edge-node check-config` prints the configuration the edge would run
//! with: the file under the flags and `RTN_*` variables given (old and new
//! names), app secrets redacted; unknown keys are still refused.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use testkit::process::{assert_refused, config_key, effective_config, output_within, strings};

const BIN: &str = env!("CARGO_BIN_EXE_edge-node");
const SECRET: &str = "0123456789abcdef-file-secret";
const ENV_SECRET: &str = "0123456789abcdef-env-secret";

fn config(extra: &str) -> String {
    format!(
        r#"[edge]
id = 3
region = "eu-west"
city = "FRA"
[tls]
dev_self_signed = true
[limits]
max_sessions = 100
join_timeout_ms = 10000
subscriber_queue = 256
client_frame_queue = 4096
client_idle_timeout_ms = 10000
drain_timeout_ms = 5000
goaway_reconnect_ms = 50
[[apps]]
id = "demo"
secrets = ["{SECRET}"]
secrets_env = "RTN_TEST_APP_SECRETS"
{extra}"#
    )
}

/// Runs `check-config` on `text` with `args` and `env` only (no RTN_* of
/// the caller's), killing it if it hangs.
fn check(dir: &Path, text: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let path = dir.join("edge.toml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("check-config")
        .arg("--config")
        .arg(&path)
        .args(args)
        .env_clear()
        .env("RTN_TEST_APP_SECRETS", ENV_SECRET)
        .envs(env.iter().copied());
    output_within(&mut cmd, Duration::from_secs(30))
}

#[test]
fn the_file_is_printed_as_the_edge_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let (t, ok) = effective_config(&check(dir.path(), &config(""), &[], &[]));
    assert!(ok.starts_with("config ok: edge 3 region eu-west"), "{ok}");
    assert_eq!(
        config_key(&t, "limits.max_sessions").as_integer(),
        Some(100)
    );
    assert_eq!(config_key(&t, "edge.city").as_str(), Some("FRA"));
    // Defaults the file left out are printed too.
    assert_eq!(config_key(&t, "admission.retry").as_str(), Some("auto"));
    assert_eq!(config_key(&t, "control.prefix").as_str(), Some("/rtn/v1/"));
}

#[test]
fn flags_and_variables_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(
        dir.path(),
        &config(""),
        &[
            // The --<section>-<field> flags, and the short names kept.
            "--limits-max-sessions",
            "7",
            "--edge-admin-token-env",
            "RTN_TEST_ADMIN_TOKEN",
            "--id",
            "9",
            "--join-timeout-ms",
            "1234",
            "--admission-retry",
            "always",
        ],
        &[
            ("RTN_EDGE_REGION", "eu-env"),
            ("RTN_LIMITS_SUBSCRIBER_QUEUE", "64"),
            // A flag beats a variable.
            ("RTN_LIMITS_MAX_SESSIONS", "5"),
            // Lists are comma-separated; the variable keeps its old name.
            ("RTN_CONTROL_ETCD", "http://127.0.0.1:1,http://127.0.0.1:2"),
            ("RTN_CONTROL_LEASE_TTL_MS", "4000"),
        ],
    );
    let (t, ok) = effective_config(&out);
    assert!(ok.starts_with("config ok: edge 9 region eu-env"), "{ok}");
    let int = |k| config_key(&t, k).as_integer();
    assert_eq!(int("limits.max_sessions"), Some(7));
    assert_eq!(int("limits.join_timeout_ms"), Some(1234));
    assert_eq!(int("limits.subscriber_queue"), Some(64));
    assert_eq!(int("control.lease_ttl_ms"), Some(4000));
    assert_eq!(int("edge.id"), Some(9));
    assert_eq!(config_key(&t, "admission.retry").as_str(), Some("always"));
    assert_eq!(
        config_key(&t, "edge.admin_token_env").as_str(),
        Some("RTN_TEST_ADMIN_TOKEN")
    );
    assert_eq!(
        strings(config_key(&t, "control.etcd_endpoints")),
        ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    );

    // A switch takes a value, and false overrides the file's true: the
    // edge then needs certificate files.
    let out = check(
        dir.path(),
        &config(""),
        &[],
        &[("RTN_TLS_DEV_SELF_SIGNED", "false")],
    );
    assert_refused(&out, "tls.cert is required");
    // A bad value names its flag.
    let out = check(
        dir.path(),
        &config(""),
        &["--limits-max-sessions", "many"],
        &[],
    );
    assert_refused(&out, "--limits-max-sessions");
}

#[test]
fn secrets_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(dir.path(), &config(""), &[], &[]);
    let (t, _) = effective_config(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains(SECRET) && !stdout.contains(ENV_SECRET),
        "{stdout}"
    );
    let app = &t["apps"].as_array().unwrap()[0];
    assert_eq!(
        app["secrets"].as_array().unwrap(),
        &[toml::Value::from("<redacted>")]
    );
    // The variable holding more is named, as in the file.
    assert_eq!(app["secrets_env"].as_str(), Some("RTN_TEST_APP_SECRETS"));
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        (
            config("").replace("max_sessions = 100", "max_sesions = 100"),
            "unknown field `max_sesions`",
        ),
        // [control] flattens the shared store settings: refused in validate.
        (
            config("[control]\netcd_endpoint = [\"http://127.0.0.1:1\"]\n"),
            "control: unknown field `etcd_endpoint`",
        ),
        (config("[limitz]\n"), "unknown field `limitz`"),
    ] {
        let out = check(dir.path(), &text, &[], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted: {text}");
        assert!(stderr.contains(want), "{want}: {stderr}");
        assert!(out.stdout.is_empty(), "printed a refused config");
    }
}
