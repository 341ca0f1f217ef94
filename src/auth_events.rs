//! Successful logins by auth mode, counted per minute, for `status` ("logins in the last hour
//! by mode") and the metrics' counters.
//!
//! One record per minute that saw a login, not one per login: the tree holds at most a day of
//! minutes (1,440 records) however many logins there are, where a record per login grew the
//! database, and the service's memory with it, with every login (issue: 100,000 logins, 100,000
//! records). Keys are the minute's start in big-endian microseconds (sign-flipped), so "since
//! T" is a range scan and cleanup drops a prefix of the tree. A database written by an older
//! build still holds single events (keys of 16 bytes: the same time prefix and a sequence
//! number) until they age out; they count as one login each and sort among the minutes.

use crate::clock::SharedClock;
use crate::sessions::AuthMode;
use crate::store::meta::Counter;
use crate::store::{self, Store, StoreError};
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const TREE: &str = "auth_events";
/// Minutes older than this are dropped by cleanup.
pub const KEEP: Duration = Duration::hours(24);
/// A minute's record: three big-endian counts, in [`AuthMode::ALL`]'s order.
const MINUTE_LEN: usize = 8 * AuthMode::ALL.len();

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
    fn get(self, mode: AuthMode) -> u64 {
        match mode {
            AuthMode::Keycloak => self.keycloak,
            AuthMode::Cached => self.cached,
            AuthMode::Local => self.local,
        }
    }

    fn add(&mut self, mode: AuthMode, n: u64) {
        let slot = match mode {
            AuthMode::Keycloak => &mut self.keycloak,
            AuthMode::Cached => &mut self.cached,
            AuthMode::Local => &mut self.local,
        };
        *slot = slot.saturating_add(n);
    }

    /// A minute's record as stored; `None` when `bytes` is not one.
    fn from_minute(bytes: &[u8]) -> Option<ModeCounts> {
        let bytes = <[u8; MINUTE_LEN]>::try_from(bytes).ok()?;
        let mut counts = ModeCounts::default();
        for (mode, n) in AuthMode::ALL.into_iter().zip(bytes.chunks_exact(8)) {
            counts.add(mode, store::meta::read_u64(Some(n)));
        }
        Some(counts)
    }

    fn to_minute(self) -> [u8; MINUTE_LEN] {
        let mut out = [0u8; MINUTE_LEN];
        for (mode, n) in AuthMode::ALL.into_iter().zip(out.chunks_exact_mut(8)) {
            n.copy_from_slice(&self.get(mode).to_be_bytes());
        }
        out
    }
}

/// A single login, as builds before the per-minute counts wrote them.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuthEvent {
    mode: AuthMode,
}

/// The login counts.
#[derive(Clone)]
pub struct AuthEvents {
    store: Arc<Store>,
    clock: SharedClock,
}

/// The key of the minute holding `at`: its start, in sign-flipped big-endian microseconds.
fn minute_key(at: DateTime<Utc>) -> [u8; 8] {
    let start = at.duration_trunc(Duration::minutes(1)).unwrap_or(at);
    ((start.timestamp_micros() as u64) ^ (1 << 63)).to_be_bytes()
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
    /// The counts in `store`.
    pub fn new(store: Arc<Store>, clock: SharedClock) -> AuthEvents {
        AuthEvents { store, clock }
    }

    /// Counts a successful login in its minute and bumps the lifetime counter for its mode.
    pub fn record(&self, mode: AuthMode) -> Result<(), StoreError> {
        self.store
            .auth_events
            .update_and_fetch(minute_key(self.clock.now()), |old| {
                // A minute record this build cannot read (damaged) starts again from this login
                // rather than failing it: these are statistics, the login is what matters.
                let mut counts = old.and_then(ModeCounts::from_minute).unwrap_or_default();
                counts.add(mode, 1);
                Some(counts.to_minute().to_vec())
            })?;
        self.store.bump_counter(counter(mode), 1)?;
        Ok(())
    }

    /// Logins per mode since the start of the minute holding `now - window`.
    pub fn since(&self, window: Duration) -> Result<ModeCounts, StoreError> {
        let from = minute_key(self.clock.now() - window);
        let mut counts = ModeCounts::default();
        for item in self.store.auth_events.range(from..) {
            let (k, bytes) = item?;
            if k.len() == 8 {
                // As in `record`: a damaged minute is statistics lost, not a failed `status`;
                // the next login in that minute starts it again.
                let Some(minute) = ModeCounts::from_minute(&bytes) else {
                    log::warn!(
                        "{TREE}: a minute's counts are {MINUTE_LEN} bytes, found {}; not counted",
                        bytes.len()
                    );
                    continue;
                };
                for mode in AuthMode::ALL {
                    counts.add(mode, minute.get(mode));
                }
            } else {
                counts.add(store::decode::<AuthEvent>(TREE, &bytes)?.mode, 1);
            }
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

    /// Drops the records (minutes, and single events an older build wrote) older than
    /// [`KEEP`]; how many.
    pub fn cleanup(&self) -> Result<usize, StoreError> {
        let until = minute_key(self.clock.now() - KEEP);
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

    /// A minute record of the wrong length (damage, or a build with other modes) is left out
    /// of the counts, so `status` still answers, and the next login in it starts it again.
    #[test]
    fn a_damaged_minute_is_not_counted_and_starts_again() {
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let clock = ManualClock::new(at);
        let store = Arc::new(Store::temporary().unwrap());
        let e = AuthEvents::new(store.clone(), Arc::new(clock.clone()));
        e.record(AuthMode::Local).unwrap();
        clock.advance(Duration::minutes(2));
        store
            .auth_events
            .insert(minute_key(at + Duration::minutes(2)), &[1u8, 2, 3][..])
            .unwrap();
        assert_eq!(e.since(Duration::hours(1)).unwrap().local, 1);
        e.record(AuthMode::Keycloak).unwrap();
        assert_eq!(
            e.since(Duration::hours(1)).unwrap(),
            ModeCounts {
                keycloak: 1,
                cached: 0,
                local: 1
            }
        );
    }

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
        assert_eq!(
            e.cleanup().unwrap(),
            2,
            "one record per minute that saw logins"
        );
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

    #[test]
    fn a_minute_of_logins_is_one_record() {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 5).unwrap());
        let store = Arc::new(Store::temporary().unwrap());
        let e = AuthEvents::new(store.clone(), Arc::new(clock.clone()));
        for _ in 0..1_000 {
            e.record(AuthMode::Local).unwrap();
            clock.advance(Duration::milliseconds(50));
        }
        assert_eq!(store.auth_events.len(), 1, "1,000 logins within a minute");
        assert_eq!(e.since(Duration::hours(1)).unwrap().local, 1_000);
        assert_eq!(e.totals().unwrap().local, 1_000);
    }

    #[test]
    fn single_events_an_older_build_wrote_count_and_age_out() {
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 30).unwrap();
        let clock = ManualClock::new(at);
        let store = Arc::new(Store::temporary().unwrap());
        let e = AuthEvents::new(store.clone(), Arc::new(clock.clone()));
        for (seq, mode) in [(1u64, AuthMode::Keycloak), (2, AuthMode::Cached)] {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&((at.timestamp_micros() as u64) ^ (1 << 63)).to_be_bytes());
            k[8..].copy_from_slice(&seq.to_be_bytes());
            store::put(&store.auth_events, TREE, &k, &AuthEvent { mode }).unwrap();
        }
        e.record(AuthMode::Keycloak).unwrap();
        assert_eq!(
            e.since(Duration::minutes(1)).unwrap(),
            ModeCounts {
                keycloak: 2,
                cached: 1,
                local: 0
            }
        );
        clock.advance(KEEP + Duration::minutes(2));
        assert_eq!(e.cleanup().unwrap(), 3);
        assert!(store.auth_events.is_empty());
    }
}
