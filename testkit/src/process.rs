//! Running a binary under test, bounded, and reading what `check-config`
//! prints.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How often a running command is checked for its end.
const POLL: Duration = Duration::from_millis(20);

/// Run `cmd` to its end with stdin closed and stdout and stderr captured;
/// kill it and fail the test if it runs longer than `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{:?}", cmd.get_program());
    try_output_within(cmd, limit).unwrap_or_else(|e| panic!("run {what}: {e}"))
}

/// [`output_within`], with an error instead of a failed test when `cmd`
/// cannot be started (e.g. an interpreter that is not installed).
pub fn try_output_within(cmd: &mut Command, limit: Duration) -> std::io::Result<Output> {
    let what = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} {:?} did not exit within {limit:?}", cmd.get_args());
        }
        std::thread::sleep(POLL);
    }
    child.wait_with_output()
}

/// The configuration a binary's `check-config` printed (everything before
/// its "config ok:" line), parsed, and that line; fails the test if the
/// command failed or printed no TOML.
pub fn effective_config(out: &Output) -> (toml::Table, String) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check-config failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (text, ok) = stdout
        .split_once("config ok:")
        .unwrap_or_else(|| panic!("no config ok line: {stdout}"));
    let table = text
        .parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("printed config is not TOML: {e}\n{text}"));
    (table, format!("config ok:{ok}"))
}

/// The value of key `section.field` in a printed config.
pub fn config_key<'a>(config: &'a toml::Table, key: &str) -> &'a toml::Value {
    let (section, field) = key.split_once('.').expect("a key is section.field");
    &config[section][field]
}

/// The strings of a list value.
pub fn strings(v: &toml::Value) -> Vec<&str> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_str().expect("a string"))
        .collect()
}

/// Fails the test unless the command failed and its stderr names `what`.
pub fn assert_refused(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(what), "{stderr}");
}
