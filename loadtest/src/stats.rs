//! Small statistics helpers for printed figures.

/// Percentile (0..=100) of unsorted samples, nearest-rank. None if empty.
pub fn percentile(samples: &mut [f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    Some(samples[rank.clamp(1, samples.len()) - 1])
}

/// A uniform sample of at most `CAP` values of a stream of any length
/// (Vitter's algorithm R): percentiles of a long run in bounded memory,
/// exact while fewer than `CAP` values came.
#[derive(Clone, Debug, Default)]
pub struct Reservoir<const CAP: usize> {
    values: Vec<f64>,
    seen: u64,
}

impl<const CAP: usize> Reservoir<CAP> {
    pub fn push(&mut self, v: f64) {
        self.seen += 1;
        if self.values.len() < CAP {
            self.values.push(v);
        } else {
            let slot = rand::random_range(0..self.seen) as usize;
            if slot < CAP {
                self.values[slot] = v;
            }
        }
    }

    /// The kept values, for [`percentile`].
    pub fn values_mut(&mut self) -> &mut [f64] {
        &mut self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), Some(50.0));
        assert_eq!(percentile(&mut v, 99.0), Some(99.0));
        assert_eq!(percentile(&mut v, 100.0), Some(100.0));
        assert_eq!(percentile(&mut [], 50.0), None);
    }

    #[test]
    fn a_reservoir_keeps_everything_under_its_cap_and_a_uniform_sample_past_it() {
        let mut small = Reservoir::<10>::default();
        for v in 0..10 {
            small.push(v as f64);
        }
        assert_eq!(small.values_mut().len(), 10);
        assert_eq!(percentile(small.values_mut(), 100.0), Some(9.0));
        let mut r = Reservoir::<1_000>::default();
        for v in 0..100_000 {
            r.push(v as f64);
        }
        assert_eq!(r.values_mut().len(), 1_000);
        // The median of a uniform sample of 0..100000: within a few percent.
        let p50 = percentile(r.values_mut(), 50.0).unwrap();
        assert!((40_000.0..60_000.0).contains(&p50), "{p50}");
    }
}
