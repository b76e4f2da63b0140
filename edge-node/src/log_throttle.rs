//! Logging for events an attacker can trigger at packet rate: the first one
//! of each kind is logged, then at most one line per interval with how many
//! happened since. Metrics count every one; logs stay readable and cheap
//! (a flood must not turn into a disk-filling log flood).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One summary line per kind per this interval at most.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Per-kind throttle state; one per edge.
#[derive(Default)]
pub struct LogThrottle {
    kinds: Mutex<HashMap<&'static str, Window>>,
}

struct Window {
    logged_at: Instant,
    suppressed: u64,
}

impl LogThrottle {
    /// Whether to log an event of `kind` now: `Some(n)` with the number of
    /// events of that kind left unlogged since the last line (0 for the
    /// first), `None` to stay quiet.
    pub fn admit(&self, kind: &'static str) -> Option<u64> {
        self.admit_at(kind, Instant::now())
    }

    fn admit_at(&self, kind: &'static str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        match kinds.get_mut(kind) {
            None => {
                kinds.insert(
                    kind,
                    Window {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
            Some(w) if now.duration_since(w.logged_at) >= LOG_INTERVAL => {
                let n = w.suppressed;
                w.logged_at = now;
                w.suppressed = 0;
                Some(n)
            }
            Some(w) => {
                w.suppressed += 1;
                None
            }
        }
    }
}

/// Log an event a client can trigger at will through a [`LogThrottle`], at
/// `level` (a `tracing::Level` constant): the first of its kind, then one
/// line per [`LOG_INTERVAL`] saying how many were not logged.
#[macro_export]
macro_rules! log_throttled {
    ($level:expr, $throttle:expr, $kind:expr, $($arg:tt)+) => {
        if let Some(suppressed) = $throttle.admit($kind) {
            tracing::event!($level, kind = $kind, suppressed_since_last_line = suppressed, $($arg)+);
        }
    };
}

/// `warn!` an abuse event through a [`LogThrottle`] (see [`log_throttled!`]).
#[macro_export]
macro_rules! warn_throttled {
    ($throttle:expr, $kind:expr, $($arg:tt)+) => {
        $crate::log_throttled!(tracing::Level::WARN, $throttle, $kind, $($arg)+)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_event_logged_then_one_line_per_interval_with_the_count() {
        let t = LogThrottle::default();
        let t0 = Instant::now();
        assert_eq!(t.admit_at("flood", t0), Some(0));
        for i in 1..1000 {
            assert_eq!(t.admit_at("flood", t0 + Duration::from_millis(i)), None);
        }
        // Another kind has its own window.
        assert_eq!(t.admit_at("forged_token", t0), Some(0));
        assert_eq!(t.admit_at("flood", t0 + LOG_INTERVAL), Some(999));
        assert_eq!(t.admit_at("flood", t0 + LOG_INTERVAL), None);
    }
}
