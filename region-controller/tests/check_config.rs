//! `region-controller check-config` prints the configuration the controller
//! would run with: the file under the flags and `RTN_CTL_*` variables given
//! (every key has both, old names kept); the admin token is named, never
//! printed; unknown keys are still refused.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use testkit::process::{assert_refused, config_key, effective_config, output_within, strings};

const BIN: &str = env!("CARGO_BIN_EXE_region-controller");
const TOKEN: &str = "an-admin-token-0123456789abcdef";

/// A config with `api_keys` in its `[api]` section.
fn config(api_keys: &str) -> String {
    format!(
        "[controller]\nregion = \"eu\"\n[store]\netcd_endpoints = [\"http://127.0.0.1:1\"]\n[admin]\ntoken_env = \"RTN_TEST_ADMIN_TOKEN\"\n[api]\n{api_keys}"
    )
}

/// Runs `check-config` on `text` with `args` and `env` only (no RTN_CTL_*
/// of the caller's), killing it if it hangs.
fn check(dir: &Path, text: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let path = dir.join("controller.toml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("check-config")
        .arg("--config")
        .arg(&path)
        .args(args)
        .env_clear()
        .env("RTN_TEST_ADMIN_TOKEN", TOKEN)
        // anyhow appends a backtrace when RUST_BACKTRACE is set.
        .env("RUST_LIB_BACKTRACE", "0")
        .envs(env.iter().copied());
    output_within(&mut cmd, Duration::from_secs(30))
}

/// The printed configuration and the "config ok" line; the admin token is
/// never printed.
fn effective(out: &Output) -> (toml::Table, String) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains(TOKEN),
        "the admin token is printed: {stdout}"
    );
    effective_config(out)
}

#[test]
fn the_file_is_printed_as_the_controller_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let (t, ok) = effective(&check(dir.path(), &config(""), &[], &[]));
    assert_eq!(ok.trim(), "config ok: region eu");
    assert_eq!(
        config_key(&t, "controller.recompute_ms").as_integer(),
        Some(5_000)
    );
    assert_eq!(
        config_key(&t, "admin.token_env").as_str(),
        Some("RTN_TEST_ADMIN_TOKEN")
    );
    assert_eq!(
        config_key(&t, "admin.listen").as_str(),
        Some("127.0.0.1:9434")
    );
    assert_eq!(
        strings(config_key(&t, "store.etcd_endpoints")),
        ["http://127.0.0.1:1"]
    );
}

#[test]
fn flags_and_variables_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(
        dir.path(),
        &config("lookups_per_ip_per_s = 50\n"),
        &[
            // Keys that had no flag before.
            "--controller-recompute-ms",
            "2500",
            "--api-client-ip-header",
            "x-forwarded-for",
            "--admin-token-env",
            "RTN_OTHER_TOKEN",
            // Old names, kept.
            "--region",
            "us",
            "--etcd",
            "http://127.0.0.1:2,http://127.0.0.1:3",
        ],
        &[
            ("RTN_CTL_TRUSTED_PROXIES", "10.0.0.0/8,192.168.1.1"),
            ("RTN_CTL_LOOKUPS_PER_IP_PER_S", "7"),
            ("RTN_CTL_API_LISTEN", "127.0.0.1:8081"),
            ("RTN_CTL_ADMIN_LISTEN", "10.0.0.5:9500"),
            // A flag beats a variable.
            ("RTN_CTL_RECOMPUTE_MS", "9000"),
            // The token the flag names is checked too.
            ("RTN_OTHER_TOKEN", TOKEN),
        ],
    );
    let (t, ok) = effective(&out);
    assert_eq!(ok.trim(), "config ok: region us");
    assert_eq!(config_key(&t, "controller.region").as_str(), Some("us"));
    assert_eq!(
        config_key(&t, "controller.recompute_ms").as_integer(),
        Some(2500)
    );
    assert_eq!(
        config_key(&t, "api.client_ip_header").as_str(),
        Some("x-forwarded-for")
    );
    assert_eq!(
        config_key(&t, "admin.token_env").as_str(),
        Some("RTN_OTHER_TOKEN")
    );
    assert_eq!(
        config_key(&t, "admin.listen").as_str(),
        Some("10.0.0.5:9500")
    );
    assert_eq!(
        strings(config_key(&t, "api.trusted_proxies")),
        ["10.0.0.0/8", "192.168.1.1"]
    );
    assert_eq!(
        config_key(&t, "api.lookups_per_ip_per_s").as_integer(),
        Some(7)
    );
    assert_eq!(
        config_key(&t, "api.listen").as_str(),
        Some("127.0.0.1:8081")
    );
    assert_eq!(
        strings(config_key(&t, "store.etcd_endpoints")),
        ["http://127.0.0.1:2", "http://127.0.0.1:3"]
    );

    // What a flag sets is validated like the file.
    let out = check(
        dir.path(),
        &config(""),
        &["--api-trusted-proxies", "10.0.0.0/99"],
        &[],
    );
    assert_refused(&out, "api.trusted_proxies");
    // The admin face never shares the public listener.
    let out = check(
        dir.path(),
        &config("listen = \"0.0.0.0:8080\"\n"),
        &["--admin-listen", "127.0.0.1:8080"],
        &[],
    );
    assert_refused(&out, "admin.listen");
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        (
            config("listen_addr = \"127.0.0.1:1\"\n"),
            "unknown field `listen_addr`",
        ),
        // [store] flattens the shared store settings: refused in validate.
        (
            config("").replace("[store]\n", "[store]\netcd_endpoint = []\n"),
            "store: unknown field `etcd_endpoint`",
        ),
    ] {
        let out = check(dir.path(), &text, &[], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted: {text}");
        assert!(stderr.contains(want), "{want}: {stderr}");
        assert!(out.stdout.is_empty(), "printed a refused config");
    }
}

/// The admin token is a secret the config names: check-config fails when
/// its variable is unset or too short (as `run` would), and never prints it.
#[test]
fn the_admin_token_must_be_set() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(
        dir.path(),
        &config(""),
        &["--admin-token-env", "RTN_UNSET_TOKEN"],
        &[],
    );
    assert_refused(&out, "admin.token_env: $RTN_UNSET_TOKEN is not set");
    let out = check(
        dir.path(),
        &config(""),
        &[],
        &[("RTN_TEST_ADMIN_TOKEN", "short")],
    );
    assert_refused(&out, "at least 16 characters");
    // Without token_env there is nothing to check (the operator endpoints
    // are refused).
    let text = config("").replace("token_env = \"RTN_TEST_ADMIN_TOKEN\"\n", "");
    let (_, ok) = effective(&check(dir.path(), &text, &[], &[]));
    assert_eq!(ok.trim(), "config ok: region eu");
}
