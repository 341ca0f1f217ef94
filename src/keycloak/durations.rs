//! The histogram of Keycloak call durations, kept in the store so that `metrics` shows every
//! call made here (by the service, a one-shot command or a sync cycle), not one process's.
//!
//! Pure: [`CallDurations::observe`] adds one call; the guard persists the record after each
//! call it settles, under its breaker lock (one writer per process; one process per database).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The buckets' upper bounds in seconds (Prometheus `le`), `+Inf` aside: from a fast local
/// answer to `keycloak.timeout_seconds`' range.
pub const BOUNDS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Cumulative-ready counts: `counts[i]` are the calls at most `BOUNDS[i]` and above the bound
/// before it; calls above the last bound count only in `count`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallDurations {
    /// Calls per bucket (not cumulative).
    pub counts: Vec<u64>,
    /// Every call.
    pub count: u64,
    /// The sum of their durations, in microseconds.
    pub sum_micros: u64,
}

impl CallDurations {
    /// Adds one call that took `elapsed`.
    pub fn observe(&mut self, elapsed: Duration) {
        self.counts.resize(BOUNDS.len(), 0);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|b| secs <= *b) {
            self.counts[i] = self.counts[i].saturating_add(1);
        }
        self.count = self.count.saturating_add(1);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    /// `(le, cumulative count)` per bound, ending with `+Inf` and every call.
    pub fn cumulative(&self) -> Vec<(String, u64)> {
        let mut total = 0u64;
        let mut out: Vec<(String, u64)> = BOUNDS
            .iter()
            .enumerate()
            .map(|(i, b)| {
                total = total.saturating_add(self.counts.get(i).copied().unwrap_or(0));
                (b.to_string(), total)
            })
            .collect();
        out.push(("+Inf".to_string(), self.count));
        out
    }

    /// The sum of the durations in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_land_in_their_bucket_and_add_up_cumulatively() {
        let mut d = CallDurations::default();
        d.observe(Duration::from_millis(3));
        d.observe(Duration::from_millis(40));
        d.observe(Duration::from_millis(50));
        d.observe(Duration::from_secs(9));
        let c = d.cumulative();
        assert_eq!(c[0], ("0.005".to_string(), 1));
        assert_eq!(c[2], ("0.025".to_string(), 1));
        assert_eq!(c[3], ("0.05".to_string(), 3));
        assert_eq!(c[9], ("5".to_string(), 3));
        assert_eq!(c[10], ("+Inf".to_string(), 4));
        assert!((d.sum_seconds() - 9.093).abs() < 1e-9);
    }
}
