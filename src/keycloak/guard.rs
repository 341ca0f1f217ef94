//! The breaker-guarded Keycloak caller: THE one way to call Keycloak.
//!
//! Every call goes through [`GuardedKeycloak::call`] — or its two halves, [`GuardedKeycloak::admit`]
//! and [`GuardedKeycloak::settle`], for a one-shot login that makes its call while it holds no
//! lock on the database. Admission asks the breaker (no I/O while the circuit is open) and the
//! [`super::bulkhead`] (no call when `max_concurrent_calls` are in flight), and bounds the call
//! as a whole. Settling classifies the outcome (only unavailability, or an answer slower than
//! `slow_call_seconds`, counts as a failure), records it as a health probe, and persists the
//! breaker so that the next one-shot command honours it.
//!
//! The half-open trial is never a user's request: only a health probe ([`CallKind::Probe`]) may
//! be it. With `start` running, its health thread makes it; without, a one-shot login or
//! `status` makes it bounded by `trial_timeout_ms`.

use super::breaker::{Breaker, BreakerState, CircuitState, Permit};
use super::bulkhead::{Bulkhead, Slot};
use super::durations::CallDurations;
use super::health::{ProbeRecord, Verdict};
use super::{KcError, KeycloakClient};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::store::meta::{Counter, MetaKey};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a guarded Keycloak call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The circuit is open (or half-open, its trial left to the health probe): no I/O.
    #[error("Keycloak circuit open (next trial at {retry_at})")]
    CircuitOpen {
        /// When a trial will be allowed.
        retry_at: DateTime<Utc>,
    },
    /// `keycloak.max_concurrent_calls` calls are in flight already: no I/O.
    #[error("{limit} Keycloak calls already in flight (keycloak.max_concurrent_calls)")]
    Saturated {
        /// The limit.
        limit: usize,
    },
    /// Keycloak was asked and the call failed.
    #[error(transparent)]
    Keycloak(#[from] KcError),
}

impl CallError {
    /// True when Keycloak is down or not asked because it was down or busy.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            CallError::CircuitOpen { .. }
                | CallError::Saturated { .. }
                | CallError::Keycloak(KcError::Unavailable(_))
        )
    }
}

/// What a call is for: only a probe may be the half-open trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// A login, refresh or sync request: made only while the circuit is closed.
    Request,
    /// The health probe: may be the half-open trial; exempt from the slow-call rule (a
    /// restarted Keycloak's first answers are slow, and it is up).
    Probe,
}

/// A call let through by the breaker and the bulkhead, not yet made. Holds its bulkhead slot;
/// carries no reference to the database, so that a one-shot command may close it meanwhile.
#[derive(Debug)]
pub struct Admission {
    kind: CallKind,
    trial: bool,
    budget: Duration,
    full_timeout: Duration,
    slot: Slot,
}

/// A call made, its outcome not yet recorded (see [`GuardedKeycloak::settle`]).
#[derive(Debug)]
pub struct Ran<T> {
    kind: CallKind,
    trial: bool,
    /// Bounded below the configured timeout (a `status` or a one-shot trial).
    shortened: bool,
    budget: Duration,
    full_timeout: Duration,
    elapsed: Duration,
    result: Result<T, KcError>,
    _slot: Slot,
}

impl Admission {
    /// Makes the call on `http` (any client built from the same config: the one-shot login's
    /// own, or [`GuardedKeycloak::http`]), bounded as a whole by the admission's budget.
    pub fn run<T>(
        self,
        http: &KeycloakClient,
        f: impl FnOnce(&KeycloakClient) -> Result<T, KcError>,
    ) -> Ran<T> {
        let started = Instant::now();
        let result = f(&http.bounded(self.budget));
        Ran {
            kind: self.kind,
            trial: self.trial,
            shortened: self.budget < self.full_timeout,
            budget: self.budget,
            full_timeout: self.full_timeout,
            elapsed: started.elapsed(),
            result,
            _slot: self.slot,
        }
    }

    /// Whether this call is the half-open trial.
    pub fn is_trial(&self) -> bool {
        self.trial
    }
}

impl<T> Ran<T> {
    /// Whether this call was the half-open trial.
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    /// The answer, and the call as a record to settle later without it: for a caller that
    /// keeps many answers while it holds no database (a one-shot reconcile's pages).
    pub fn take(self) -> (Ran<()>, Option<T>) {
        let (result, value) = match self.result {
            Ok(v) => (Ok(()), Some(v)),
            Err(e) => (Err(e), None),
        };
        let ran = Ran {
            kind: self.kind,
            trial: self.trial,
            shortened: self.shortened,
            budget: self.budget,
            full_timeout: self.full_timeout,
            elapsed: self.elapsed,
            result,
            _slot: self._slot,
        };
        (ran, value)
    }

    /// What Keycloak answered (before the breaker has heard of it).
    pub fn result(&self) -> &Result<T, KcError> {
        &self.result
    }

    /// Whether Keycloak answered (whatever it said) and not too slowly for the breaker.
    pub fn answered(&self) -> bool {
        !matches!(self.result, Err(KcError::Unavailable(_)))
    }

    /// A request to make right after this call answered, before it is settled (a one-shot
    /// login's grant after its successful trial probe): within the full timeout, under this
    /// call's bulkhead slot.
    pub fn then_request(&self) -> Admission {
        Admission {
            kind: CallKind::Request,
            trial: false,
            budget: self.full_timeout,
            full_timeout: self.full_timeout,
            slot: Slot::unbounded(),
        }
    }
}

/// Keycloak behind the circuit breaker, with the health record and the breaker's persistence.
pub struct GuardedKeycloak {
    /// The HTTP client.
    http: KeycloakClient,
    /// The breaker, shared by every call of this process.
    breaker: Mutex<Breaker>,
    /// The calls in flight, bounded.
    bulkhead: Bulkhead,
    /// Where the breaker and the health record persist.
    store: Arc<Store>,
    /// Time, as a value.
    clock: SharedClock,
    /// The realm the health probe asks about.
    realm: String,
    /// How long a probe (or an answered call) is trusted.
    health_ttl: Duration,
    /// The open circuit's cooldown, for messages.
    cooldown: Duration,
    /// The whole-call bound.
    timeout: Duration,
    /// The bound of a probe someone waits for.
    trial_timeout: Duration,
    /// Answers slower than this count as failures.
    slow_call: Duration,
    /// True while a health thread (the service's) makes the half-open trial: nobody else does.
    background_trials: AtomicBool,
}

impl std::fmt::Debug for GuardedKeycloak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedKeycloak")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

impl GuardedKeycloak {
    /// Guards `http` with the breaker persisted in `store` (a fresh one when none is), set up
    /// as `config.resilience` says.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the persisted breaker cannot be read.
    pub fn new(
        http: KeycloakClient,
        config: &Config,
        store: Arc<Store>,
        clock: SharedClock,
    ) -> Result<GuardedKeycloak, StoreError> {
        let state: BreakerState = store.get_meta(MetaKey::Breaker)?.unwrap_or_default();
        let r = &config.resilience;
        let k = &config.keycloak;
        let threshold = if r.enabled {
            r.failure_threshold
        } else {
            u32::MAX
        };
        Ok(GuardedKeycloak {
            http,
            breaker: Mutex::new(Breaker::new(threshold, r.cooldown, state)),
            bulkhead: if store.is_temporary() {
                Bulkhead::in_memory(k.max_concurrent_calls)
            } else {
                Bulkhead::new(store.path(), k.max_concurrent_calls)
            },
            store,
            clock,
            realm: config.keycloak.realm.clone(),
            health_ttl: r.health_check_cache,
            cooldown: r.cooldown,
            timeout: k.timeout,
            trial_timeout: k.trial_timeout,
            slow_call: k.slow_call,
            background_trials: AtomicBool::new(false),
        })
    }

    /// The HTTP client (for [`Admission::run`]).
    pub fn http(&self) -> &KeycloakClient {
        &self.http
    }

    /// The configured whole-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The bound of a probe someone waits for (`keycloak.trial_timeout_ms`).
    pub fn trial_timeout(&self) -> Duration {
        self.trial_timeout
    }

    /// From now on a health thread makes the half-open trial (the service calls this before
    /// it starts its health thread): logins and `status` leave it alone.
    pub fn set_background_trials(&self, on: bool) {
        self.background_trials.store(on, Ordering::SeqCst);
    }

    /// Whether a health thread makes the trial.
    pub fn background_trials(&self) -> bool {
        self.background_trials.load(Ordering::SeqCst)
    }

    /// The breaker, its stored times settled against the clock first (see
    /// [`Breaker::settle_clock`]).
    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        if b.settle_clock(self.clock.now()) {
            log::warn!("the circuit breaker's times were ahead of the clock (the clock was stepped back): its cooldown now runs from the present");
            self.persist_breaker(b.state());
        }
        b
    }

    fn persist_breaker(&self, state: &BreakerState) {
        if let Err(e) = self.store.put_meta(MetaKey::Breaker, state) {
            log::error!("could not persist circuit breaker state: {e}");
        }
    }

    /// Lets a call of `kind` through, bounded by `budget`, or says why not (no I/O either
    /// way). A [`CallKind::Request`] goes only while the circuit is closed; a probe may claim
    /// the half-open trial (persisted at once, so that other processes leave it alone).
    pub fn admit(&self, kind: CallKind, budget: Duration) -> Result<Admission, CallError> {
        let now = self.clock.now();
        let mut b = self.breaker();
        let would = match kind {
            CallKind::Request => b.permit_request(now),
            CallKind::Probe if b.would_permit(now) => Permit::Allowed,
            CallKind::Probe => b.permit_request(now),
        };
        if let Permit::Rejected { retry_at } = would {
            self.count_rejected();
            return Err(CallError::CircuitOpen { retry_at });
        }
        let Some(slot) = self.bulkhead.try_enter() else {
            return Err(CallError::Saturated {
                limit: self.bulkhead.limit(),
            });
        };
        let before = b.state().clone();
        let permit = b.permit(now);
        if &before != b.state() {
            self.persist_breaker(b.state());
        }
        if let Permit::Rejected { retry_at } = permit {
            self.count_rejected();
            return Err(CallError::CircuitOpen { retry_at });
        }
        let trial = permit == Permit::Trial;
        if trial {
            log::info!("circuit half-open: probing Keycloak once");
        }
        Ok(Admission {
            kind,
            trial,
            budget: budget.min(self.timeout),
            full_timeout: self.timeout,
            slot,
        })
    }

    /// Runs one Keycloak request behind the breaker and the bulkhead: admitted, made within
    /// the timeout, settled.
    pub fn call<T>(
        &self,
        f: impl FnOnce(&KeycloakClient) -> Result<T, KcError>,
    ) -> Result<T, CallError> {
        let admission = self.admit(CallKind::Request, self.timeout)?;
        self.settle(admission.run(&self.http, f))
    }

    /// Records a call's outcome: breaker, health record, persistence. Only unavailability
    /// counts as a failure, and an answer slower than `slow_call_seconds` (probes aside); a
    /// probe that only ran out of a shortened budget (not the trial) counts for nothing: it
    /// says we were impatient, not that Keycloak is down.
    pub fn settle<T>(&self, ran: Ran<T>) -> Result<T, CallError> {
        let now = self.clock.now();
        let mut b = self.breaker();
        let before = b.state().clone();
        let slow = ran.kind == CallKind::Request && ran.elapsed > self.slow_call;
        self.observe_duration(ran.elapsed);
        match &ran.result {
            Err(KcError::Unavailable(_))
                if ran.shortened && !ran.trial && ran.elapsed >= ran.budget =>
            {
                log::info!(
                    "Keycloak gave no answer within {} ms (not counted as a failure)",
                    ran.budget.as_millis()
                );
            }
            Err(KcError::Unavailable(reason)) => {
                b.on_failure(now);
                self.record_probe(false, true, Some(reason.clone()));
                self.log_opened(&before, &b, reason);
            }
            _ if slow => {
                let reason = format!(
                    "answered in {:.1}s, slower than keycloak.slow_call_seconds ({}s)",
                    ran.elapsed.as_secs_f64(),
                    self.slow_call.as_secs()
                );
                log::warn!("slow Keycloak call: {reason}");
                b.on_failure(now);
                self.record_probe(false, true, Some(reason.clone()));
                self.log_opened(&before, &b, &reason);
            }
            _ => {
                b.on_success();
                if before.state != CircuitState::Closed {
                    log::info!("Keycloak is back: circuit closed");
                }
                if let Err(KcError::Misconfigured(m)) = &ran.result {
                    log::warn!("Keycloak misconfigured: {m}");
                }
                // Keycloak answered: that is as good as a probe (written only when it changes
                // what the record says, to keep the login path free of needless writes).
                let ttl = self.health_ttl;
                if ProbeRecord::verdict(self.last_probe().as_ref(), now, ttl) != Verdict::Up {
                    self.record_probe(true, false, None);
                }
            }
        }
        if &before != b.state() {
            self.persist_breaker(b.state());
        }
        ran.result.map_err(CallError::Keycloak)
    }

    /// Counts a call the open circuit refused (`keycloak_calls_rejected_total`).
    fn count_rejected(&self) {
        if let Err(e) = self.store.bump_counter(Counter::CallsRejected, 1) {
            log::error!("could not count a call the circuit refused: {e}");
        }
    }

    /// Adds a settled call to the stored duration histogram (callers hold the breaker lock,
    /// so the read and the write are not interleaved within the process).
    fn observe_duration(&self, elapsed: Duration) {
        let mut durations: CallDurations = self
            .store
            .get_meta(MetaKey::CallDurations)
            .unwrap_or_else(|e| {
                log::error!("call duration histogram unreadable, starting it again: {e}");
                None
            })
            .unwrap_or_default();
        durations.observe(elapsed);
        if let Err(e) = self.store.put_meta(MetaKey::CallDurations, &durations) {
            log::error!("could not record a Keycloak call's duration: {e}");
        }
    }

    fn log_opened(&self, before: &BreakerState, b: &Breaker, reason: &str) {
        if before.state != CircuitState::Open && b.state().state == CircuitState::Open {
            log::warn!(
                "circuit opened after {} consecutive failures: {reason}",
                b.state().failure_count
            );
        }
    }

    fn record_probe(&self, ok: bool, outage: bool, reason: Option<String>) {
        let record = ProbeRecord {
            at: self.clock.now(),
            ok,
            outage,
            reason,
        };
        if let Err(e) = self.store.put_meta(MetaKey::HealthProbe, &record) {
            log::error!("could not persist health record: {e}");
        }
    }

    /// The last probe record, if any (an unreadable one counts as none, and is logged).
    pub fn last_probe(&self) -> Option<ProbeRecord> {
        self.store
            .get_meta(MetaKey::HealthProbe)
            .unwrap_or_else(|e| {
                log::error!("health record unreadable, probing again: {e}");
                None
            })
    }

    /// What the breaker and the health record say, without I/O: `Some(false)` when a call must
    /// not be tried (circuit open and cooling down, or a fresh misconfiguration), `Some(true)`
    /// after a fresh success, `None` when only asking Keycloak tells.
    pub fn known_availability(&self) -> Option<bool> {
        let now = self.clock.now();
        let (would_permit, closed) = {
            let b = self.breaker();
            (b.would_permit(now), b.state().state == CircuitState::Closed)
        };
        if !would_permit {
            return Some(false);
        }
        if !closed {
            return None; // the next call is the half-open trial
        }
        let ttl = self.health_ttl;
        match ProbeRecord::verdict(self.last_probe().as_ref(), now, ttl) {
            Verdict::Up => Some(true),
            Verdict::Misconfigured => Some(false),
            Verdict::Unknown => None,
        }
    }

    /// Whether a login or password change should try Keycloak now: the circuit is closed and
    /// no fresh misconfiguration is on record. Never probes: when nothing fresh is known, the
    /// real call itself tells (and is recorded as a probe), so a login costs one round trip.
    pub fn should_try_keycloak(&self) -> bool {
        let closed = self.breaker().state().state == CircuitState::Closed;
        closed && self.known_availability().unwrap_or(true)
    }

    /// A login that does not ask Keycloak because the circuit is not closed: counted as a call
    /// the circuit refused (`keycloak_calls_rejected_total`), as [`GuardedKeycloak::admit`]
    /// counts one it refuses.
    pub fn count_if_circuit_refused(&self) {
        if self.breaker().state().state != CircuitState::Closed {
            self.count_rejected();
        }
    }

    /// Whether the half-open trial is due: the circuit is open past its cooldown (or a trial
    /// lost in a crash has expired) and nobody is making it.
    pub fn trial_due(&self) -> bool {
        let now = self.clock.now();
        let b = self.breaker();
        b.state().state != CircuitState::Closed && b.would_permit(now)
    }

    /// Is Keycloak usable now? From the record, without I/O, while the circuit is open and
    /// cooling down, after a success younger than `health_check_cache_seconds`, or after a
    /// misconfiguration that young. Otherwise one probe bounded by `trial_timeout_ms` — except
    /// for a due trial while a health thread makes it (the answer is then no, at once).
    pub fn is_available(&self) -> bool {
        match self.known_availability() {
            Some(known) => known,
            None if self.background_trials() && self.trial_due() => false,
            None => self.probe_within(self.trial_timeout),
        }
    }

    /// [`GuardedKeycloak::is_available`] for a caller that can wait `budget` for the probe
    /// (the health thread and a sync cycle wait the full timeout), and that makes the trial
    /// whoever else would.
    pub fn available_within(&self, budget: Duration) -> bool {
        match self.known_availability() {
            Some(known) => known,
            None => self.probe_within(budget),
        }
    }

    /// Probes Keycloak now (through the breaker, within the timeout) and records the result.
    pub fn probe(&self) -> bool {
        self.probe_within(self.timeout)
    }

    /// Probes Keycloak within `budget` (through the breaker: it may be the half-open trial).
    pub fn probe_within(&self, budget: Duration) -> bool {
        match self.admit(CallKind::Probe, budget) {
            Ok(admission) => {
                let realm = self.realm.clone();
                self.settle_probe(admission.run(&self.http, |kc| kc.probe(&realm)))
            }
            Err(_) => false,
        }
    }

    /// Records a probe's outcome (see [`GuardedKeycloak::settle`]); true when Keycloak answered
    /// as Keycloak, with the realm in place.
    pub fn settle_probe(&self, ran: Ran<()>) -> bool {
        match self.settle(ran) {
            Ok(()) => true,
            // Unavailability was recorded by `settle`.
            Err(CallError::Keycloak(KcError::Unavailable(_))) => false,
            Err(CallError::Keycloak(e)) => {
                self.record_probe(false, false, Some(e.to_string()));
                false
            }
            Err(_) => false,
        }
    }

    /// The realm the health probe asks about.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Why Keycloak is not available, for messages.
    pub fn unavailable_reason(&self) -> String {
        let now = self.clock.now();
        let b = self.breaker();
        if !b.would_permit(now) {
            let retry = b
                .state()
                .opened_at
                .map(|t| t + chrono::Duration::from_std(self.cooldown).unwrap_or_default());
            return match retry {
                Some(t) => format!(
                    "circuit open until {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
                None => "circuit open".into(),
            };
        }
        drop(b);
        self.last_probe()
            .and_then(|p| p.reason)
            .unwrap_or_else(|| "not reachable".into())
    }

    /// The circuit as a status display shows it, and the consecutive failure count.
    pub fn circuit(&self) -> (CircuitState, u32) {
        let now = self.clock.now();
        let b = self.breaker();
        (b.observed_state(now), b.state().failure_count)
    }
}
