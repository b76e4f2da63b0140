//! Hostile clients against a real edge with the production admission
//! defaults (the `bench abuse` scenarios, one second each): every attack is
//! refused or paced and counted, logged once per kind rather than per
//! packet, and a legitimate call on the same edge keeps its media.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loadtest::bench_abuse::{attack_names, run, Params, Phase};

/// Log lines the edge wrote during the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn counted(ph: &Phase, key: &str) -> f64 {
    ph.counted
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_are_refused_counted_and_logged_once_while_a_call_goes_on() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter("warn")
        .with_writer(move || writer.clone())
        .init();

    let report = tokio::time::timeout(
        Duration::from_secs(90),
        run(
            Params {
                phase: Duration::from_secs(1),
                spoofed_sources: 100,
            },
            &[],
        ),
    )
    .await
    .expect("bounded")
    .expect("bench runs");
    loadtest::bench_abuse::print(&report);
    assert_eq!(report.attacks.len(), attack_names().len());
    assert!(report.baseline.legit_loss < 0.02, "{:?}", report.baseline);

    let phase = |name: &str| report.attacks.iter().find(|p| p.name == name).unwrap();
    for ph in &report.attacks {
        // The call on the same edge keeps its media through every attack.
        assert!(
            ph.legit_loss < 0.05,
            "{}: legit loss {}",
            ph.name,
            ph.legit_loss
        );
        assert!(ph.attempts > 0, "{}: the attack ran", ph.name);
    }

    // Spoofed handshakes: answered with stateless Retries, none finishes.
    let hs = phase("handshake_flood");
    assert_eq!(hs.admitted, 0);
    assert!(
        counted(hs, "rtn_edge_quic_retries_total{edge=1}") > 0.0,
        "{hs:?}"
    );

    // One address opening connections as fast as it can: a burst gets in,
    // the rest is refused.
    let cf = phase("connection_flood");
    assert!(
        counted(cf, "rtn_edge_connections_refused_total{reason=ip_rate}") > 0.0,
        "{cf:?}"
    );
    assert!(
        cf.admitted < 200,
        "at most two bursts and a second's rate: {cf:?}"
    );

    let forged = phase("forged_tokens");
    assert_eq!(forged.admitted, 0, "no forged token joins");
    assert!(counted(forged, "rtn_edge_joins_total{result=token_bad_signature}") > 0.0);
    assert!(
        counted(
            forged,
            "rtn_edge_protocol_errors_total{reason=too_many_refused_joins}"
        ) > 0.0,
        "the forger's connections are closed after their refused joins: {forged:?}"
    );

    let replay = phase("token_replay");
    assert!(replay.admitted <= 20, "burst of 10 and 5/s: {replay:?}");
    assert!(counted(replay, "rtn_edge_rate_limited_total{limit=joins_per_token}") > 0.0);

    let msgs = phase("message_flood");
    assert!(
        counted(
            msgs,
            "rtn_edge_rate_limited_total{limit=messages_per_session}"
        ) > 0.0,
        "{msgs:?}"
    );

    let dg = phase("datagram_flood");
    assert!(
        counted(dg, "rtn_edge_protocol_errors_total{reason=datagram_flood}") > 0.0,
        "the flooding session is closed: {dg:?}"
    );

    // Ten times the usual joins at once are legitimate: all get in.
    let burst = phase("join_burst");
    assert_eq!(
        burst.admitted,
        loadtest::bench_abuse::JOIN_BURST as u64,
        "{burst:?}"
    );

    // Logged once per kind (the throttle allows one line per 10 s, and the
    // whole test takes less than 20 s of attacks), not once per event.
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    for kind in [
        "ip_rate",
        "joins_per_token",
        "messages_per_session",
        "malformed_datagram",
        "datagram_flood",
        "too_many_refused_joins",
    ] {
        let lines = text
            .lines()
            .filter(|l| l.contains(&format!("kind=\"{kind}\"")))
            .count();
        assert!(
            (1..=2).contains(&lines),
            "{kind}: {lines} log lines\n{text}"
        );
    }
}
