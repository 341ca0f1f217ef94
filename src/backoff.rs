//! Retry delays for sync items that Keycloak refused for a passing reason.
//!
//! Exponential (`base · 2^(attempt-1)`, capped at `max`) with "equal jitter": half the delay is
//! fixed, half is random, so retries of many items spread out but none retries sooner than half
//! its step. The random source is passed in so tests use a seeded one.

use rand::Rng;
use std::time::Duration;

/// Exponential backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// Upper bound for any delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(30),
            max: crate::sync_queue::MAX_RETRY_DELAY,
        }
    }
}

impl Backoff {
    /// The delay after the `attempt`-th failed attempt (1-based).
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let step = self.step(attempt);
        let half = step / 2;
        let jitter_ms = rng.random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter_ms)
    }

    /// The un-jittered step for `attempt`.
    fn step(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        self.base
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The delays for attempts 1, 2, 3, … as an iterator.
    pub fn iter<R: Rng>(self, rng: R) -> impl Iterator<Item = Duration> {
        let mut rng = rng;
        (1u32..).map(move |attempt| self.delay(attempt, &mut rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn grows_exponentially_within_jitter_bounds_and_caps() {
        let b = Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(100),
        };
        let delays: Vec<_> = b.iter(StdRng::seed_from_u64(7)).take(6).collect();
        let steps = [10, 20, 40, 80, 100, 100];
        for (d, step) in delays.iter().zip(steps) {
            let step = Duration::from_secs(step);
            assert!(
                *d >= step / 2 && *d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
    }

    #[test]
    fn jitter_spreads_retries() {
        let b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(1);
        let a: Vec<_> = (0..20).map(|_| b.delay(3, &mut rng)).collect();
        assert!(a.iter().any(|d| *d != a[0]), "no spread: {a:?}");
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(3);
        assert!(b.delay(u32::MAX, &mut rng) <= b.max);
    }
}
