//! Wall-clock time as the control plane records it. Records carry
//! wall-clock times for operators and for lag metrics; nothing orders
//! events across machines by them.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    since_epoch().as_millis() as u64
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn now_us() -> u64 {
    since_epoch().as_micros() as u64
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    since_epoch().as_secs()
}

fn since_epoch() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_agree() {
        let (s, ms, us) = (now_secs(), now_ms(), now_us());
        assert!(s > 1_700_000_000, "after 2023");
        assert!(ms / 1000 >= s && ms / 1000 <= s + 1);
        assert!(us / 1000 >= ms && us / 1000 <= ms + 1000);
    }
}
