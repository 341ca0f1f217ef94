//! The kept realm keys: each configured realm's issuer and JWKS as Keycloak last published
//! them, in `meta` ([`MetaKey::RealmKeys`]), so that a token can be verified while Keycloak
//! is away.
//!
//! They are fetched through the breaker ([`GuardedKeycloak::call`]): by `start` at once and
//! every `keycloak.verify.keys_refresh_seconds` while Keycloak is up, when `verify-token`
//! meets a realm whose keys were never fetched, and — at most once per
//! [`UNKNOWN_KID_INTERVAL`] and realm — when a token names a key id the kept JWKS lacks
//! (Keycloak signs with a new key the moment it is added). A failed fetch keeps the old
//! keys: stale keys still verify every token signed before the rotation.

use crate::clock::SharedClock;
use crate::config::Config;
use crate::keycloak::guard::{CallError, GuardedKeycloak};
use crate::store::meta::MetaKey;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A token naming an unknown key makes us fetch the realm's keys again at most this often,
/// so that tokens with made-up key ids cannot make us hammer Keycloak.
pub const UNKNOWN_KID_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// One realm's keys as fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealmKeys {
    /// The realm's `issuer` (discovery document): every token of the realm carries it as `iss`.
    pub issuer: String,
    /// The JWKS, as JSON text (parsed when a token is checked, so that a newer key type is
    /// kept even if this version cannot use it).
    pub jwks: String,
    /// When it was fetched.
    pub fetched_at: DateTime<Utc>,
    /// When an unknown key id last made us fetch again (the rate limit's clock).
    #[serde(default)]
    pub unknown_kid_fetch_at: Option<DateTime<Utc>>,
}

/// Every realm's kept keys, by realm name.
pub type Kept = BTreeMap<String, RealmKeys>;

/// Why keys could not be refreshed.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// Keycloak was not asked (circuit open) or did not give them.
    #[error("keys of realm {realm}: {source}")]
    Keycloak {
        /// The realm.
        realm: String,
        /// What the call said.
        source: CallError,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Serialises the read-modify-write of the one `meta` record within this process (only one
/// process has the database open).
static WRITE: Mutex<()> = Mutex::new(());

/// The configured realms: the top-level one and each package's, once each.
pub fn realms(config: &Config) -> Vec<String> {
    let mut all = vec![config.keycloak.realm.clone()];
    all.extend(config.keycloak.packages.values().map(|p| p.realm.clone()));
    all.sort();
    all.dedup();
    all
}

/// The kept keys (none yet: empty).
///
/// # Errors
///
/// [`StoreError`] when the database fails or the record does not decode.
pub fn kept(store: &Store) -> Result<Kept, StoreError> {
    Ok(store.get_meta(MetaKey::RealmKeys)?.unwrap_or_default())
}

/// Changes the record of `realm` (`change` gets it as it is) and writes it back.
fn update(
    store: &Store,
    realm: &str,
    change: impl FnOnce(Option<RealmKeys>) -> Option<RealmKeys>,
) -> Result<Option<RealmKeys>, StoreError> {
    let _serial = WRITE.lock().unwrap_or_else(|e| e.into_inner());
    let mut all = kept(store)?;
    let new = change(all.remove(realm));
    if let Some(keys) = &new {
        all.insert(realm.to_string(), keys.clone());
    }
    store.put_meta(MetaKey::RealmKeys, &all)?;
    Ok(new)
}

/// What fetches keys: the breaker-guarded Keycloak, the store they are kept in, the clock.
pub struct Keyring<'a> {
    /// Where the keys are kept.
    pub store: &'a Store,
    /// The one way to call Keycloak.
    pub keycloak: &'a GuardedKeycloak,
    /// Time, as a value.
    pub clock: &'a SharedClock,
}

impl Keyring<'_> {
    /// Fetches the issuer and keys of `realm` now and keeps them.
    ///
    /// # Errors
    ///
    /// [`KeysError::Keycloak`] when Keycloak is away or refuses (the old keys stay);
    /// [`KeysError::Store`] when they cannot be kept.
    pub fn refresh(&self, realm: &str) -> Result<RealmKeys, KeysError> {
        self.fetch_and_keep(realm, None)
    }

    fn fetch_and_keep(
        &self,
        realm: &str,
        unknown_kid_at: Option<DateTime<Utc>>,
    ) -> Result<RealmKeys, KeysError> {
        let fetched = self.keycloak.call(|kc| {
            let discovery = kc.discovery(realm)?;
            let jwks = kc.jwks(realm, &discovery)?;
            Ok((discovery.issuer, jwks))
        });
        let (issuer, jwks) = match fetched {
            Ok(f) => f,
            Err(source) => {
                return Err(KeysError::Keycloak {
                    realm: realm.to_string(),
                    source,
                })
            }
        };
        let mut record = RealmKeys {
            issuer,
            jwks,
            fetched_at: self.clock.now(),
            unknown_kid_fetch_at: unknown_kid_at,
        };
        update(self.store, realm, |old| {
            if record.unknown_kid_fetch_at.is_none() {
                record.unknown_kid_fetch_at = old.and_then(|o| o.unknown_kid_fetch_at);
            }
            Some(record.clone())
        })?;
        Ok(record)
    }

    /// Refreshes every configured realm; returns how many were refreshed and the failures
    /// (logged by the caller).
    pub fn refresh_all(&self, realms: &[String]) -> (usize, Vec<KeysError>) {
        let mut ok = 0;
        let mut failed = Vec::new();
        for realm in realms {
            match self.refresh(realm) {
                Ok(_) => ok += 1,
                Err(e) => failed.push(e),
            }
        }
        (ok, failed)
    }

    /// A token named a key id the kept JWKS of `realm` lacks: fetches the keys again unless
    /// that was done less than [`UNKNOWN_KID_INTERVAL`] ago for the same reason, or Keycloak
    /// should not be tried now. Returns the new keys when fetched.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the database fails (Keycloak's failures only mean `None`).
    pub fn refresh_for_unknown_kid(&self, realm: &str) -> Result<Option<RealmKeys>, StoreError> {
        let now = self.clock.now();
        let interval = Duration::from_std(UNKNOWN_KID_INTERVAL).unwrap_or(Duration::MAX);
        let last = kept(self.store)?
            .get(realm)
            .and_then(|k| k.unknown_kid_fetch_at);
        if last.is_some_and(|t| t <= now && now < t + interval) {
            log::debug!("realm {realm}: unknown key id, but keys were fetched again just now");
            return Ok(None);
        }
        if !self.keycloak.should_try_keycloak() {
            return Ok(None);
        }
        // The attempt counts for the rate limit whether it succeeds or not.
        update(self.store, realm, |old| {
            old.map(|o| RealmKeys {
                unknown_kid_fetch_at: Some(now),
                ..o
            })
        })?;
        match self.fetch_and_keep(realm, Some(now)) {
            Ok(keys) => Ok(Some(keys)),
            Err(KeysError::Store(e)) => Err(e),
            Err(e) => {
                log::warn!("{e}");
                Ok(None)
            }
        }
    }
}
