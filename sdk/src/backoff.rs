//! Jittered exponential backoff between failed reconnect rounds.

use std::time::Duration;

use crate::config::Backoff;

/// The delays of one outage: call [`BackoffState::next_delay`] after each
/// failed round, [`BackoffState::reset`] once connected.
#[derive(Debug, Clone)]
pub struct BackoffState {
    cfg: Backoff,
    failures: u32,
}

impl BackoffState {
    pub fn new(cfg: Backoff) -> Self {
        BackoffState { cfg, failures: 0 }
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The wait before the next round, with a fresh random jitter.
    pub fn next_delay(&mut self) -> Duration {
        let d = delay(&self.cfg, self.failures, rand::random::<f64>());
        self.failures = self.failures.saturating_add(1);
        d
    }
}

/// The delay after `failures` earlier failed rounds of this outage, with
/// `sample` a uniform random number in [0, 1): `min(initial * 2^failures,
/// max)` plus `sample * jitter` times that.
pub fn delay(cfg: &Backoff, failures: u32, sample: f64) -> Duration {
    let base = cfg
        .initial
        .checked_mul(1u32 << failures.min(31))
        .unwrap_or(cfg.max)
        .min(cfg.max);
    let extra = (sample.clamp(0.0, 1.0) * cfg.jitter).max(0.0);
    base + base.mul_f64(extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(jitter: f64) -> Backoff {
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
            jitter,
        }
    }

    #[test]
    fn doubles_up_to_the_max() {
        let ms: Vec<u128> = (0..9)
            .map(|n| delay(&cfg(0.0), n, 0.5).as_millis())
            .collect();
        assert_eq!(ms, vec![50, 100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        // Huge failure counts neither overflow nor exceed the max.
        assert_eq!(delay(&cfg(0.0), u32::MAX, 0.0), Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let c = cfg(1.0);
        assert_eq!(delay(&c, 0, 0.0), Duration::from_millis(50));
        assert_eq!(delay(&c, 0, 0.5), Duration::from_millis(75));
        assert!(delay(&c, 6, 0.999_999) < Duration::from_secs(4));
        // Out-of-range samples are clamped.
        assert_eq!(delay(&c, 0, 7.0), Duration::from_millis(100));
        let mut s = BackoffState::new(c);
        for n in 0..20u32 {
            let d = s.next_delay();
            let base = Duration::from_millis(50)
                .saturating_mul(1 << n.min(10))
                .min(Duration::from_secs(2));
            assert!(d >= base && d <= base * 2, "{n}: {d:?}");
        }
        s.reset();
        assert!(s.next_delay() <= Duration::from_millis(100));
    }
}
