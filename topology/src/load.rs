//! Load penalty shared by path costs and nearest-edge ranking.
//!
//! Why: a relay near saturation queues and drops packets, which users feel as
//! latency and loss that probes taken a second ago have not seen yet. Both the
//! path computation (relays used as transit) and the nearest-edge ranking
//! (edges offered to clients) steer away from such relays the same way: no
//! penalty below a soft limit, then a penalty that grows linearly to a cap at
//! full load. LiveKit uses the same soft limit (about 0.9) for node selection.

use serde::{Deserialize, Serialize};

/// Penalty, in ms-equivalent, for a node's load above a soft limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoadPenalty {
    /// Load (0..1) up to which a node costs nothing extra. 0.9: below it a
    /// relay still has headroom for bursts, above it queues start to build
    /// (LiveKit's default soft limit).
    pub soft_limit: f64,
    /// Penalty at full load (1.0), growing linearly from 0 at the soft limit.
    /// 100 ms: a saturated relay is avoided unless the alternative is more than
    /// 100 ms worse, which is still less harm than its drops would cause.
    pub full_load_penalty_ms: f64,
}

impl Default for LoadPenalty {
    fn default() -> Self {
        LoadPenalty {
            soft_limit: 0.9,
            full_load_penalty_ms: 100.0,
        }
    }
}

impl LoadPenalty {
    /// The penalty in ms for a node at `load`. Load is clamped to 0..=1 and
    /// an unknown load (not a number) counts as full: a node that cannot report
    /// its load is not one to pile more traffic onto. Never negative, never
    /// NaN.
    pub fn penalty_ms(&self, load: f64) -> f64 {
        let load = if load.is_nan() {
            1.0
        } else {
            load.clamp(0.0, 1.0)
        };
        let soft = if self.soft_limit.is_nan() {
            1.0
        } else {
            self.soft_limit.clamp(0.0, 1.0)
        };
        if load <= soft {
            return 0.0;
        }
        let full = if self.full_load_penalty_ms > 0.0 {
            self.full_load_penalty_ms
        } else {
            0.0
        };
        let headroom = 1.0 - soft;
        if headroom <= 0.0 {
            full
        } else {
            full * (load - soft) / headroom
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_below_soft_limit_then_linear() {
        let p = LoadPenalty::default();
        assert_eq!(p.penalty_ms(0.0), 0.0);
        assert_eq!(p.penalty_ms(0.9), 0.0);
        assert!((p.penalty_ms(0.95) - 50.0).abs() < 1e-9);
        assert!((p.penalty_ms(1.0) - 100.0).abs() < 1e-9);
        assert!((p.penalty_ms(7.0) - 100.0).abs() < 1e-9);
        assert!((p.penalty_ms(f64::NAN) - 100.0).abs() < 1e-9);
        assert_eq!(p.penalty_ms(-1.0), 0.0);
    }

    #[test]
    fn odd_settings_stay_finite() {
        let p = LoadPenalty {
            soft_limit: 1.0,
            full_load_penalty_ms: f64::NAN,
        };
        assert_eq!(p.penalty_ms(1.0), 0.0);
        let p = LoadPenalty {
            soft_limit: f64::NAN,
            full_load_penalty_ms: -5.0,
        };
        assert_eq!(p.penalty_ms(0.99), 0.0);
    }
}
