//! Waiting for a condition in a test, bounded.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
const RECHECK: Duration = Duration::from_millis(50);

/// Check `check` until it holds, at most `secs` seconds (then panic, naming
/// `what`); how long it took.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s: {what}"
        );
        tokio::time::sleep(RECHECK).await;
    }
    start.elapsed()
}
