//! The circuit breaker: pure state machine, clock passed in, no I/O.
//!
//! closed → open after `threshold` consecutive *availability* failures; open → half-open once
//! `cooldown` has passed, letting exactly one trial through; the trial's success closes the
//! circuit, its failure re-opens it. Keycloak answering "no" (a wrong password, a disabled
//! account, a bad client secret) is Keycloak working: callers report that as a success.
//!
//! The whole state is a small serde value so that one-shot invocations (cron's `sync-now`) load
//! it, honour an open circuit, and store it back.

use crate::clock::happened;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// The three states of the original design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CircuitState {
    /// Calls flow.
    Closed,
    /// No calls until the cooldown has passed.
    Open,
    /// One trial call is allowed; its outcome decides.
    HalfOpen,
}

impl CircuitState {
    /// The name used in status output: closed | open | half_open.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// The persisted part of the breaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerState {
    /// Current state.
    pub state: CircuitState,
    /// Consecutive availability failures.
    pub failure_count: u32,
    /// When the circuit last opened.
    pub opened_at: Option<DateTime<Utc>>,
    /// When the half-open trial was let through (a crashed trial expires after one cooldown).
    pub trial_started_at: Option<DateTime<Utc>>,
}

impl Default for BreakerState {
    fn default() -> Self {
        BreakerState {
            state: CircuitState::Closed,
            failure_count: 0,
            opened_at: None,
            trial_started_at: None,
        }
    }
}

/// What the breaker says about a call about to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: go ahead.
    Allowed,
    /// Half-open: this call is the one trial.
    Trial,
    /// Open (or a trial is already in flight): do not touch the network.
    Rejected {
        /// When a trial will next be allowed.
        retry_at: DateTime<Utc>,
    },
}

impl Permit {
    /// True unless rejected.
    pub fn is_allowed(self) -> bool {
        !matches!(self, Permit::Rejected { .. })
    }
}

/// The breaker: settings plus state.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: BreakerState,
}

impl Breaker {
    /// A breaker with the given settings, starting from `state`.
    pub fn new(threshold: u32, cooldown: std::time::Duration, state: BreakerState) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown: Duration::from_std(cooldown).unwrap_or(Duration::MAX),
            state,
        }
    }

    /// The state to persist.
    pub fn state(&self) -> &BreakerState {
        &self.state
    }

    /// The state a status display should show at `now` (an open circuit past its cooldown
    /// shows as half-open: the next call will be the trial).
    pub fn observed_state(&self, now: DateTime<Utc>) -> CircuitState {
        match self.state.state {
            CircuitState::Open if self.cooldown_over(now) => CircuitState::HalfOpen,
            s => s,
        }
    }

    /// Answers without changing anything: would a call at `now` be let through?
    pub fn would_permit(&self, now: DateTime<Utc>) -> bool {
        match self.state.state {
            CircuitState::Closed => true,
            CircuitState::Open => self.cooldown_over(now),
            CircuitState::HalfOpen => !self.trial_in_flight(now),
        }
    }

    /// Answers without changing anything: may an ordinary request (not the trial) go at `now`?
    /// Only while closed; otherwise rejected with the time a trial is (or was) due.
    pub fn permit_request(&self, now: DateTime<Utc>) -> Permit {
        match self.state.state {
            CircuitState::Closed => Permit::Allowed,
            CircuitState::Open => Permit::Rejected {
                retry_at: self.opened_at() + self.cooldown,
            },
            CircuitState::HalfOpen => Permit::Rejected {
                retry_at: self.state.trial_started_at.unwrap_or(now) + self.cooldown,
            },
        }
    }

    /// Asks to make a call at `now`; may move open → half-open and claim the trial.
    pub fn permit(&mut self, now: DateTime<Utc>) -> Permit {
        match self.state.state {
            CircuitState::Closed => Permit::Allowed,
            CircuitState::Open if self.cooldown_over(now) => self.start_trial(now),
            CircuitState::HalfOpen if !self.trial_in_flight(now) => self.start_trial(now),
            CircuitState::Open => Permit::Rejected {
                retry_at: self.opened_at() + self.cooldown,
            },
            CircuitState::HalfOpen => Permit::Rejected {
                retry_at: self.state.trial_started_at.unwrap_or(now) + self.cooldown,
            },
        }
    }

    /// Keycloak answered (whatever it said): close.
    pub fn on_success(&mut self) {
        self.state = BreakerState::default();
    }

    /// Keycloak could not be reached (connect error, timeout, 5xx, 429).
    pub fn on_failure(&mut self, now: DateTime<Utc>) {
        self.state.failure_count = self.state.failure_count.saturating_add(1);
        match self.state.state {
            CircuitState::Closed if self.state.failure_count >= self.threshold => self.open(now),
            CircuitState::Closed | CircuitState::Open => {}
            CircuitState::HalfOpen => self.open(now),
        }
    }

    fn open(&mut self, now: DateTime<Utc>) {
        self.state.state = CircuitState::Open;
        self.state.opened_at = Some(now);
        self.state.trial_started_at = None;
    }

    fn start_trial(&mut self, now: DateTime<Utc>) -> Permit {
        self.state.state = CircuitState::HalfOpen;
        self.state.trial_started_at = Some(now);
        Permit::Trial
    }

    fn opened_at(&self) -> DateTime<Utc> {
        self.state.opened_at.unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    fn cooldown_over(&self, now: DateTime<Utc>) -> bool {
        now >= self.opened_at() + self.cooldown
    }

    fn trial_in_flight(&self, now: DateTime<Utc>) -> bool {
        self.state
            .trial_started_at
            .is_some_and(|t| now < t + self.cooldown)
    }

    /// Applies the clock rule ([`crate::clock`]) to the stored times: when the circuit opened
    /// and when the trial started are at most `now`. A circuit opened while the clock was a
    /// month fast then waits one cooldown from the correction, not the month. Returns whether
    /// anything changed (the caller persists it, so the cooldown runs from this moment).
    pub fn settle_clock(&mut self, now: DateTime<Utc>) -> bool {
        let before = self.state.clone();
        self.state.opened_at = self.state.opened_at.map(|t| happened(t, now));
        self.state.trial_started_at = self.state.trial_started_at.map(|t| happened(t, now));
        self.state != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn breaker(threshold: u32) -> Breaker {
        Breaker::new(
            threshold,
            std::time::Duration::from_secs(60),
            BreakerState::default(),
        )
    }

    /// Issue 15 point 2: opened under a clock 30 days fast, then corrected (or set back a
    /// day): open for one cooldown from the correction, then the trial.
    #[test]
    fn a_circuit_opened_under_a_fast_clock_waits_one_cooldown_after_the_correction() {
        for skew in [Duration::days(30), Duration::days(1)] {
            let mut b = breaker(1);
            b.on_failure(t0() + skew);
            assert_eq!(b.state().state, CircuitState::Open);
            let now = t0();
            assert!(
                b.settle_clock(now),
                "the future opening is brought back to now"
            );
            assert!(!b.settle_clock(now), "once");
            assert!(!b.would_permit(now + Duration::seconds(59)));
            assert_eq!(b.permit(now + Duration::seconds(60)), Permit::Trial);
            // A trial started in the future is over one cooldown after the correction too.
            let mut b = breaker(1);
            b.on_failure(t0());
            assert_eq!(b.permit(t0() + skew + Duration::seconds(60)), Permit::Trial);
            b.settle_clock(now);
            assert!(
                !b.would_permit(now + Duration::seconds(59)),
                "trial in flight"
            );
            assert!(b.would_permit(now + Duration::seconds(60)), "trial expired");
        }
    }

    #[test]
    fn walks_every_transition_with_a_frozen_clock() {
        let mut b = breaker(3);
        let now = t0();
        assert_eq!(b.permit(now), Permit::Allowed);
        b.on_failure(now);
        b.on_failure(now);
        assert_eq!(b.state().state, CircuitState::Closed);
        b.on_failure(now);
        assert_eq!(b.state().state, CircuitState::Open);
        assert_eq!(b.state().failure_count, 3);

        // open: rejected until the cooldown is over, and nothing changes meanwhile
        let later = now + Duration::seconds(59);
        assert!(!b.would_permit(later));
        assert_eq!(
            b.permit(later),
            Permit::Rejected {
                retry_at: now + Duration::seconds(60)
            }
        );
        assert_eq!(b.state().state, CircuitState::Open);
        assert_eq!(b.observed_state(later), CircuitState::Open);

        // cooldown over: exactly one trial
        let after = now + Duration::seconds(60);
        assert_eq!(b.observed_state(after), CircuitState::HalfOpen);
        assert!(b.would_permit(after));
        assert_eq!(b.permit(after), Permit::Trial);
        assert_eq!(b.state().state, CircuitState::HalfOpen);
        assert!(
            !b.permit(after).is_allowed(),
            "second call during the trial"
        );

        // trial fails: open again, new cooldown from now
        b.on_failure(after);
        assert_eq!(b.state().state, CircuitState::Open);
        assert!(!b.would_permit(after + Duration::seconds(30)));

        // next trial succeeds: closed, count reset
        let again = after + Duration::seconds(60);
        assert_eq!(b.permit(again), Permit::Trial);
        b.on_success();
        assert_eq!(b.state(), &BreakerState::default());
        assert_eq!(b.permit(again), Permit::Allowed);
    }

    /// Issue 14 point 3: an ordinary request never becomes the trial.
    #[test]
    fn only_a_closed_circuit_permits_an_ordinary_request() {
        let mut b = breaker(1);
        assert_eq!(b.permit_request(t0()), Permit::Allowed);
        b.on_failure(t0());
        let after = t0() + Duration::seconds(61);
        assert!(!b.permit_request(after).is_allowed(), "trial due: still no");
        assert_eq!(b.state().state, CircuitState::Open, "and nothing changed");
        assert_eq!(b.permit(after), Permit::Trial);
        assert!(!b.permit_request(after).is_allowed());
        b.on_success();
        assert_eq!(b.permit_request(after), Permit::Allowed);
    }

    #[test]
    fn a_success_resets_the_consecutive_count() {
        let mut b = breaker(2);
        b.on_failure(t0());
        b.on_success();
        b.on_failure(t0());
        assert_eq!(b.state().state, CircuitState::Closed);
        b.on_failure(t0());
        assert_eq!(b.state().state, CircuitState::Open);
    }

    #[test]
    fn a_trial_lost_in_a_crash_expires_after_one_cooldown() {
        let mut b = breaker(1);
        b.on_failure(t0());
        let trial_at = t0() + Duration::seconds(60);
        assert_eq!(b.permit(trial_at), Permit::Trial);
        // the process holding the trial died; the persisted state says half-open, trial in flight
        let reloaded = Breaker::new(1, std::time::Duration::from_secs(60), b.state().clone());
        let mut b = reloaded;
        assert!(!b.permit(trial_at + Duration::seconds(10)).is_allowed());
        assert_eq!(b.permit(trial_at + Duration::seconds(60)), Permit::Trial);
    }

    #[test]
    fn state_round_trips_through_the_codec() {
        let mut b = breaker(1);
        b.on_failure(t0());
        let bytes = crate::store::codec::encode(b.state()).unwrap();
        let back: BreakerState = crate::store::codec::decode(&bytes).unwrap();
        assert_eq!(&back, b.state());
    }
}
