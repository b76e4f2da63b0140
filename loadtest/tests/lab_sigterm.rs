//! `loadtest lab` as users run it: the binary, stopped with SIGTERM, still
//! prints its summary, writes its report and exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn lab_stops_cleanly_on_sigterm_with_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let topology = dir.path().join("small.toml");
    std::fs::write(
        &topology,
        "[[city]]\ncity = \"lhr\"\nedges = 1\nclients = 1\n\
         [[city]]\ncity = \"iad\"\nedges = 1\nclients = 1\n\
         [[city]]\ncity = \"sin\"\nedges = 1\nclients = 1\n",
    )
    .unwrap();
    let report = dir.path().join("report.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["lab", "--topology"])
        .arg(&topology)
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("loadtest starts");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Wait for the traffic to run (the first status lines), at most 60 s.
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut statuses = 0;
    while statuses < 2 {
        let Some(Ok(line)) = lines.next() else {
            panic!("the lab ended early: {seen:#?}");
        };
        if line.starts_with('[') {
            statuses += 1;
        }
        seen.push(line);
        assert!(started.elapsed() < Duration::from_secs(60), "{seen:#?}");
    }
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "SIGTERM sent");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}; output {rest:#?}");
    assert!(
        rest.iter().any(|l| l.contains("RTN lab summary")),
        "the summary is printed: {rest:#?}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report written")).unwrap();
    assert_eq!(json["clients"], 3);
    assert_eq!(json["clients_joined"], 3);
}
