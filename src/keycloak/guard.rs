//! The breaker-guarded Keycloak caller: THE one way to call Keycloak.
//!
//! Every call goes through [`GuardedKeycloak::call`], which asks the breaker first (no I/O while
//! the circuit is open), classifies the outcome (only unavailability counts as a failure),
//! records it as a health probe, and persists the breaker so that the next one-shot command
//! honours it. The client's logins and the replay's sync cycle both call Keycloak through it.

use super::breaker::{Breaker, BreakerState, CircuitState, Permit};
use super::health::{ProbeRecord, Verdict};
use super::{KcError, KeycloakClient};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::store::meta::MetaKey;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a guarded Keycloak call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The circuit is open: no I/O was attempted.
    #[error("Keycloak circuit open (next trial at {retry_at})")]
    CircuitOpen {
        /// When a trial will be allowed.
        retry_at: DateTime<Utc>,
    },
    /// Keycloak was asked and the call failed.
    #[error(transparent)]
    Keycloak(#[from] KcError),
}

impl CallError {
    /// True when Keycloak is down or not asked because it was down.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            CallError::CircuitOpen { .. } | CallError::Keycloak(KcError::Unavailable(_))
        )
    }
}

/// Keycloak behind the circuit breaker, with the health record and the breaker's persistence.
pub struct GuardedKeycloak {
    /// The HTTP client.
    http: KeycloakClient,
    /// The breaker, shared by every call of this process.
    breaker: Mutex<Breaker>,
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
        let threshold = if r.enabled {
            r.failure_threshold
        } else {
            u32::MAX
        };
        Ok(GuardedKeycloak {
            http,
            breaker: Mutex::new(Breaker::new(threshold, r.cooldown, state)),
            store,
            clock,
            realm: config.keycloak.realm.clone(),
            health_ttl: r.health_check_cache,
            cooldown: r.cooldown,
        })
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist_breaker(&self, state: &BreakerState) {
        if let Err(e) = self.store.put_meta(MetaKey::Breaker, state) {
            log::error!("could not persist circuit breaker state: {e}");
        }
    }

    /// Runs one Keycloak call behind the breaker: no I/O while the circuit is open, outcome
    /// classified and recorded (only unavailability counts as a failure).
    pub fn call<T>(
        &self,
        f: impl FnOnce(&KeycloakClient) -> Result<T, KcError>,
    ) -> Result<T, CallError> {
        let now = self.clock.now();
        {
            let mut b = self.breaker();
            let before = b.state().clone();
            let permit = b.permit(now);
            if &before != b.state() {
                self.persist_breaker(b.state());
            }
            if let Permit::Rejected { retry_at } = permit {
                return Err(CallError::CircuitOpen { retry_at });
            }
            if permit == Permit::Trial {
                log::info!("circuit half-open: trying Keycloak once");
            }
        }
        let result = f(&self.http);
        let now = self.clock.now();
        let mut b = self.breaker();
        let before = b.state().clone();
        match &result {
            Err(KcError::Unavailable(reason)) => {
                b.on_failure(now);
                self.record_probe(false, true, Some(reason.clone()));
                if before.state != CircuitState::Open && b.state().state == CircuitState::Open {
                    log::warn!(
                        "circuit opened after {} consecutive failures: {reason}",
                        b.state().failure_count
                    );
                }
            }
            _ => {
                b.on_success();
                if before.state != CircuitState::Closed {
                    log::info!("Keycloak is back: circuit closed");
                }
                if let Err(KcError::Misconfigured(m)) = &result {
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
        result.map_err(CallError::Keycloak)
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
    fn known_availability(&self) -> Option<bool> {
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

    /// Whether a login or password change should try Keycloak now. Unlike
    /// [`GuardedKeycloak::is_available`] it never probes: when nothing fresh is known, the real
    /// call itself tells (and is recorded as a probe), so a login costs one round trip, not two.
    pub fn should_try_keycloak(&self) -> bool {
        self.known_availability().unwrap_or(true)
    }

    /// Is Keycloak usable now? Without I/O while the circuit is open and cooling down, after a
    /// success younger than `health_check_cache_seconds`, or after a misconfiguration that young;
    /// otherwise one probe (a failed probe below the failure threshold is not trusted for the
    /// cache period: the breaker judges outages).
    pub fn is_available(&self) -> bool {
        match self.known_availability() {
            Some(known) => known,
            None => self.probe(),
        }
    }

    /// Probes Keycloak now (through the breaker) and records the result.
    pub fn probe(&self) -> bool {
        let realm = self.realm.clone();
        match self.call(|kc| kc.probe(&realm)) {
            Ok(()) => true,
            // Unavailability was recorded by `call`.
            Err(CallError::CircuitOpen { .. })
            | Err(CallError::Keycloak(KcError::Unavailable(_))) => false,
            Err(CallError::Keycloak(e)) => {
                self.record_probe(false, false, Some(e.to_string()));
                false
            }
        }
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
