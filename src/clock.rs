//! Time as a value that can be passed in, and the rule for stored times when the wall clock
//! steps.
//!
//! The breaker, the health cache, the token grace period and the queue's backoff all depend on
//! "now". Passing the clock in (instead of calling `Utc::now()` deep inside) lets tests freeze
//! and move time, including on the health thread, which a thread-local fake clock cannot reach.
//!
//! Waits inside one process use the monotonic clock (`Instant`). Times that outlive the
//! process are wall-clock times, and a wall clock steps (NTP after boot, an operator fixing a
//! fast clock): a time stored while the clock was a month fast would otherwise hold a circuit
//! open, a session alive or an account locked for that month. So no stored time is trusted
//! further ahead than it could be: the moment something happened is at most now
//! ([`happened`]), and a deadline set some time-to-live after a moment is at most now plus that
//! time-to-live ([`deadline`]). A clock set back by a day therefore costs at most one TTL, and
//! a clock set forward ends what it would have ended anyway.

use chrono::{DateTime, Duration, Utc};
use std::sync::{Arc, Mutex};

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// The current instant in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to; cloning shares the same instant.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock frozen at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }

    /// Sets the clock to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The shared clock handle the rest of the crate takes.
pub type SharedClock = Arc<dyn Clock>;

/// When something stored as having happened at `at` is taken to have happened: never later
/// than `now` (see the module's rule). Pure.
pub fn happened(at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    at.min(now)
}

/// A stored deadline that was set `ttl` after some moment: never later than `now + ttl` (see
/// the module's rule). Pure.
pub fn deadline(at: DateTime<Utc>, now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    at.min(
        now.checked_add_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_stored_time_is_trusted_no_further_ahead_than_it_could_be() {
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
        let fast = now + Duration::days(30);
        assert_eq!(happened(fast, now), now);
        assert_eq!(
            happened(now - Duration::hours(1), now),
            now - Duration::hours(1)
        );
        let ttl = Duration::minutes(15);
        assert_eq!(deadline(fast, now, ttl), now + ttl);
        assert_eq!(
            deadline(now + Duration::minutes(5), now, ttl),
            now + Duration::minutes(5)
        );
        assert_eq!(deadline(now, now, Duration::MAX), now);
        assert_eq!(
            deadline(DateTime::<Utc>::MAX_UTC, now, Duration::MAX),
            DateTime::<Utc>::MAX_UTC
        );
    }
}
