//! Failed-login limiting: too many wrong passwords in a short time lock the account for a while.
//!
//! Local authentication is the layer that always answers, so it is also the layer an attacker
//! guessing passwords talks to. This module is the rule only — pure logic over a small state
//! that the local user store keeps with each user; no I/O, and "now" is always passed in, so
//! tests walk it with fixed instants.
//!
//! The rule: a failure older than `window` is forgotten; when `max_failures` failures sit inside
//! the window, the account is locked for `lockout`, during which even the right password is
//! refused. When the lock runs out the count starts from zero. A success clears everything.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How many failures, in how long, lock an account for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures inside `window` that lock the account; 0 turns locking off.
    pub max_failures: u32,
    /// How far back failures count.
    pub window: Duration,
    /// How long a lock lasts.
    pub lockout: Duration,
}

impl Default for LockoutPolicy {
    /// 5 failures within 5 minutes lock the account for 5 minutes (config.yaml's defaults).
    fn default() -> Self {
        LockoutPolicy {
            max_failures: 5,
            window: Duration::from_secs(5 * 60),
            lockout: Duration::from_secs(5 * 60),
        }
    }
}

impl LockoutPolicy {
    fn window(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::MAX)
    }

    fn lockout(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.lockout).unwrap_or(chrono::Duration::MAX)
    }
}

/// The failure record of one account, stored with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutState {
    /// Recent failures, oldest first: only those inside the window, at most `max_failures`.
    pub failures: Vec<DateTime<Utc>>,
    /// While in the future, the account is locked until then.
    pub locked_until: Option<DateTime<Utc>>,
}

impl LockoutState {
    /// Until when the account is locked, if it is locked at `now`.
    pub fn is_locked(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.locked_until.filter(|until| *until > now)
    }

    /// True when there is nothing to remember (no failures, no lock): lets callers skip a write.
    pub fn is_clear(&self) -> bool {
        self.failures.is_empty() && self.locked_until.is_none()
    }

    /// Records a failed attempt at `now`; returns the end of the lock if this failure caused one.
    ///
    /// A failure while locked changes nothing (the caller should not have checked the password;
    /// extending the lock would let anyone keep an account locked for ever).
    pub fn record_failure(
        &mut self,
        now: DateTime<Utc>,
        policy: &LockoutPolicy,
    ) -> Option<DateTime<Utc>> {
        if policy.max_failures == 0 || self.is_locked(now).is_some() {
            return None;
        }
        // An expired lock is over: its failures were cleared when it began.
        self.locked_until = None;
        let since = now.checked_sub_signed(policy.window());
        self.failures
            .retain(|f| since.is_none_or(|since| *f > since));
        self.failures.push(now);
        let max = usize::try_from(policy.max_failures).unwrap_or(usize::MAX);
        if self.failures.len() > max {
            let excess = self.failures.len() - max;
            self.failures.drain(..excess);
        }
        if self.failures.len() >= max {
            let until = now
                .checked_add_signed(policy.lockout())
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            self.failures.clear();
            self.locked_until = Some(until);
            return Some(until);
        }
        None
    }

    /// Applies the clock rule ([`crate::clock`]): failures happened at most `now`, a lock ends
    /// at most one lockout duration from `now`. An account locked while the clock was a month
    /// fast is then locked for one lockout duration from the correction, not the month.
    /// Returns whether anything changed (the caller writes it back).
    pub fn settle_clock(&mut self, now: DateTime<Utc>, policy: &LockoutPolicy) -> bool {
        let before = self.clone();
        for f in &mut self.failures {
            *f = crate::clock::happened(*f, now);
        }
        self.locked_until = self
            .locked_until
            .map(|until| crate::clock::deadline(until, now, policy.lockout()));
        *self != before
    }

    /// Records a successful login: forgets all failures and any lock.
    pub fn record_success(&mut self) {
        self.failures.clear();
        self.locked_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    fn mins(m: i64) -> chrono::Duration {
        chrono::Duration::minutes(m)
    }

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            max_failures: 3,
            window: Duration::from_secs(10 * 60),
            lockout: Duration::from_secs(30 * 60),
        }
    }

    /// Issue 15 point 2: locked while the clock was 30 days fast, then corrected.
    #[test]
    fn a_lock_made_under_a_fast_clock_lasts_one_lockout_after_the_correction() {
        let p = policy();
        let mut s = LockoutState::default();
        let fast = t0() + chrono::Duration::days(30);
        for _ in 0..p.max_failures {
            s.record_failure(fast, &p);
        }
        assert!(
            s.is_locked(t0() + mins(60)).is_some(),
            "without the rule: a month"
        );
        assert!(s.settle_clock(t0(), &p));
        assert!(!s.settle_clock(t0(), &p), "once");
        let until = s
            .is_locked(t0())
            .expect("still locked right after the correction");
        assert_eq!(until, t0() + p.lockout());
        assert_eq!(s.is_locked(until), None);
    }

    #[test]
    fn locks_after_max_failures_inside_the_window() {
        let p = policy();
        let mut s = LockoutState::default();
        assert!(s.is_clear());
        assert_eq!(s.record_failure(t0(), &p), None);
        assert_eq!(s.record_failure(t0() + mins(1), &p), None);
        assert_eq!(s.is_locked(t0() + mins(1)), None);
        let until = t0() + mins(2) + mins(30);
        assert_eq!(s.record_failure(t0() + mins(2), &p), Some(until));
        assert_eq!(s.is_locked(t0() + mins(2)), Some(until));
        assert_eq!(s.is_locked(t0() + mins(31)), Some(until));
        assert!(s.failures.is_empty());
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_lock() {
        let p = policy();
        let mut s = LockoutState::default();
        for i in 0..10 {
            // One every 6 minutes: never three inside 10 minutes.
            assert_eq!(
                s.record_failure(t0() + mins(6 * i), &p),
                None,
                "failure {i}"
            );
            assert!(s.failures.len() <= 2);
        }
        assert_eq!(s.is_locked(t0() + mins(60)), None);
    }

    #[test]
    fn lock_expires_and_counting_starts_again() {
        let p = policy();
        let mut s = LockoutState::default();
        for i in 0..3 {
            s.record_failure(t0() + mins(i), &p);
        }
        let until = s.is_locked(t0() + mins(3)).unwrap();
        assert_eq!(until, t0() + mins(32));
        // Failures while locked neither count nor extend the lock.
        assert_eq!(s.record_failure(t0() + mins(10), &p), None);
        assert_eq!(s.is_locked(t0() + mins(10)), Some(until));
        assert!(s.failures.is_empty());
        // At the instant it ends, it has ended.
        assert_eq!(s.is_locked(until), None);
        assert_eq!(s.record_failure(until + mins(1), &p), None);
        assert_eq!(s.locked_until, None);
        assert_eq!(s.failures, vec![until + mins(1)]);
    }

    #[test]
    fn success_resets() {
        let p = policy();
        let mut s = LockoutState::default();
        s.record_failure(t0(), &p);
        s.record_failure(t0() + mins(1), &p);
        s.record_success();
        assert!(s.is_clear());
        // Two more do not lock: the earlier two were forgiven.
        assert_eq!(s.record_failure(t0() + mins(2), &p), None);
        assert_eq!(s.record_failure(t0() + mins(3), &p), None);
        assert_eq!(s.is_locked(t0() + mins(3)), None);
        s.record_failure(t0() + mins(4), &p);
        assert!(s.is_locked(t0() + mins(4)).is_some());
        s.record_success();
        assert_eq!(s.is_locked(t0() + mins(4)), None);
    }

    #[test]
    fn zero_max_failures_never_locks_and_huge_durations_do_not_panic() {
        let off = LockoutPolicy {
            max_failures: 0,
            ..policy()
        };
        let mut s = LockoutState::default();
        for i in 0..20 {
            assert_eq!(s.record_failure(t0() + mins(i), &off), None);
        }
        assert!(s.is_clear());
        let huge = LockoutPolicy {
            max_failures: 1,
            window: Duration::MAX,
            lockout: Duration::MAX,
        };
        let until = s.record_failure(t0(), &huge).unwrap();
        assert_eq!(s.is_locked(t0() + mins(1_000_000)), Some(until));
    }

    #[test]
    fn state_round_trips_through_serde() {
        let mut s = LockoutState::default();
        s.record_failure(t0(), &policy());
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<LockoutState>(&json).unwrap(), s);
    }
}
