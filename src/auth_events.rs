//! A short log of successful logins by auth mode, for `status` ("logins in the last hour by
//! mode") and the metrics' counters. Keys are big-endian microseconds, so "since T" is a range
//! scan and cleanup drops a prefix of the tree.

use crate::clock::SharedClock;
use crate::sessions::AuthMode;
use crate::store::meta::Counter;
use crate::store::{self, Store, StoreError};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const TREE: &str = "auth_events";
/// Events older than this are dropped by cleanup.
pub const KEEP: Duration = Duration::hours(24);

/// Logins per auth mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ModeCounts {
    /// Via a live Keycloak token.
    pub keycloak: u64,
    /// Via a cached token.
    pub cached: u64,
    /// Local only.
    pub local: u64,
}

impl ModeCounts {
    fn add(&mut self, mode: AuthMode, n: u64) {
        match mode {
            AuthMode::Keycloak => self.keycloak += n,
            AuthMode::Cached => self.cached += n,
            AuthMode::Local => self.local += n,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuthEvent {
    mode: AuthMode,
}

/// The event log.
#[derive(Clone)]
pub struct AuthEvents {
    store: Arc<Store>,
    clock: SharedClock,
}

fn key(at: DateTime<Utc>, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&((at.timestamp_micros() as u64) ^ (1 << 63)).to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The lifetime login counter of `mode`.
fn counter(mode: AuthMode) -> Counter {
    match mode {
        AuthMode::Keycloak => Counter::LoginsKeycloak,
        AuthMode::Cached => Counter::LoginsCached,
        AuthMode::Local => Counter::LoginsLocal,
    }
}

impl AuthEvents {
    /// The log in `store`.
    pub fn new(store: Arc<Store>, clock: SharedClock) -> AuthEvents {
        AuthEvents { store, clock }
    }

    /// Records a successful login and bumps the lifetime counter for its mode.
    pub fn record(&self, mode: AuthMode) -> Result<(), StoreError> {
        let k = key(self.clock.now(), self.store.next_id()?);
        store::put(&self.store.auth_events, TREE, &k, &AuthEvent { mode })?;
        self.store.bump_counter(counter(mode), 1)?;
        Ok(())
    }

    /// Logins per mode since `now - window`.
    pub fn since(&self, window: Duration) -> Result<ModeCounts, StoreError> {
        let from = key(self.clock.now() - window, 0);
        let mut counts = ModeCounts::default();
        for item in self.store.auth_events.range(from..) {
            let (_, bytes) = item?;
            counts.add(store::decode::<AuthEvent>(TREE, &bytes)?.mode, 1);
        }
        Ok(counts)
    }

    /// Lifetime logins per mode (the metrics' counters).
    pub fn totals(&self) -> Result<ModeCounts, StoreError> {
        let mut counts = ModeCounts::default();
        for mode in AuthMode::ALL {
            counts.add(mode, self.store.counter(counter(mode))?);
        }
        Ok(counts)
    }

    /// Drops events older than [`KEEP`].
    pub fn cleanup(&self) -> Result<usize, StoreError> {
        let until = key(self.clock.now() - KEEP, 0);
        let mut n = 0;
        for item in self.store.auth_events.range(..until) {
            let (k, _) = item?;
            self.store.auth_events.remove(k)?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use chrono::TimeZone;

    #[test]
    fn counts_by_window_and_keeps_lifetime_totals() {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        let e = AuthEvents::new(
            Arc::new(Store::temporary().unwrap()),
            Arc::new(clock.clone()),
        );
        e.record(AuthMode::Local).unwrap();
        clock.advance(Duration::minutes(90));
        e.record(AuthMode::Keycloak).unwrap();
        e.record(AuthMode::Cached).unwrap();
        e.record(AuthMode::Cached).unwrap();
        assert_eq!(
            e.since(Duration::hours(1)).unwrap(),
            ModeCounts {
                keycloak: 1,
                cached: 2,
                local: 0
            }
        );
        clock.advance(Duration::hours(25));
        assert_eq!(e.cleanup().unwrap(), 4);
        assert_eq!(e.since(Duration::hours(1)).unwrap(), ModeCounts::default());
        assert_eq!(
            e.totals().unwrap(),
            ModeCounts {
                keycloak: 1,
                cached: 2,
                local: 1
            }
        );
    }
}
