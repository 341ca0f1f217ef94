//! Every name in the `meta` tree, in one place, with what it holds; and the typed helpers that
//! read and write them.
//!
//! Modules above the store name a record by [`MetaKey`] and a counter by [`Counter`] instead of
//! agreeing on a string, so no two modules are tied by a name written twice, and one page lists
//! everything the tree can hold.

use super::{get, put, Store, StoreError};
use serde::{de::DeserializeOwned, Serialize};
use sled::transaction::{TransactionalTree, UnabortableTransactionError};

/// A record kept under a fixed name in `meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// `u32`: the layout version of the trees (see [`Store::open`]'s migration steps).
    LayoutVersion,
    /// `Vec<u8>`: the key check value, which only the right sealing key opens (see
    /// [`super::Sealer::check_value`]).
    KeyCheck,
    /// `keycloak::breaker::BreakerState`: the circuit breaker, persisted after every change
    /// so that the next one-shot command honours an open circuit.
    Breaker,
    /// `keycloak::health::ProbeRecord`: the last health probe, or the last Keycloak answer that
    /// stands for one.
    HealthProbe,
    /// `String`: why the sync queue is blocked (Keycloak refused our admin credentials); absent
    /// while it is not.
    QueueBlocked,
    /// Present once the per-status queue counters ([`sync_count_key`]) hold every item: a
    /// database from before layout 2 has none until one scan builds them.
    SyncCountsBuilt,
    /// `BTreeMap<String, verify::keys::RealmKeys>`: each realm's issuer and JWKS as last
    /// fetched from Keycloak, so that `verify-token` works while Keycloak is away.
    RealmKeys,
    /// `i64` (Unix seconds): when a sync cycle last settled every item it claimed with
    /// Keycloak's answer (`keycloak_resilient_sync_last_success_timestamp_seconds`).
    LastSyncSuccess,
    /// `keycloak::durations::CallDurations`: the histogram of Keycloak call durations
    /// (`keycloak_resilient_keycloak_call_duration_seconds`).
    CallDurations,
    /// Present once the per-type counters of waiting items ([`sync_waiting_key`]) hold every
    /// item: a database from before them gets them built by one scan.
    SyncWaitingBuilt,
    /// `String`: why Keycloak refused the login client (wrong secret, direct access grants
    /// off, unknown realm); absent while the last grant went through (`status --json`
    /// `misconfigured`, `keycloak_resilient_keycloak_misconfigured{client="login"}`).
    LoginMisconfigured,
    /// `reconcile::ReconcileReport`: the last reconcile with Keycloak's user list, when it
    /// ran and what it found (`status`, `keycloak_resilient_reconcile_*`).
    LastReconcile,
}

impl MetaKey {
    /// The record's name in `meta` (stored databases use these: never change one).
    pub const fn name(self) -> &'static str {
        match self {
            MetaKey::LayoutVersion => "layout_version",
            MetaKey::KeyCheck => "key_check",
            MetaKey::Breaker => "breaker",
            MetaKey::HealthProbe => "health",
            MetaKey::QueueBlocked => "queue_blocked",
            MetaKey::SyncCountsBuilt => "sync_count/built",
            MetaKey::RealmKeys => "realm_keys",
            MetaKey::LastSyncSuccess => "last_sync_success",
            MetaKey::LastReconcile => "last_reconcile",
            MetaKey::LoginMisconfigured => "login_misconfigured",
            MetaKey::SyncWaitingBuilt => "sync_waiting/built",
            MetaKey::CallDurations => "keycloak_call_durations",
        }
    }
}

/// A u64 counter in `meta` that only grows (the `_total` metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Sync items applied in Keycloak, by a sync cycle or by `passwd` at once
    /// (`keycloak_resilient_sync_processed_total`). Bumped in the item's own transaction.
    SyncCompleted,
    /// Sync items Keycloak refused for good (`keycloak_resilient_sync_failed_total`). Bumped in
    /// the item's own transaction.
    SyncFailed,
    /// Logins where Keycloak refused a password local auth accepted, unexplained by the queue
    /// (`keycloak_resilient_password_divergence_total`).
    PasswordDivergence,
    /// Successful logins a Keycloak token vouched for (`logins_total{auth_mode="keycloak"}`).
    LoginsKeycloak,
    /// Successful logins a cached token vouched for (`logins_total{auth_mode="cached"}`).
    LoginsCached,
    /// Successful logins on local auth alone (`logins_total{auth_mode="local"}`).
    LoginsLocal,
    /// Keycloak calls the open circuit refused without I/O
    /// (`keycloak_resilient_keycloak_calls_rejected_total`).
    CallsRejected,
    /// Passwords Keycloak accepted that the local store refused, adopted as the local password
    /// (`keycloak_resilient_central_total{event="password_adopted"}`).
    PasswordsAdopted,
    /// Local passwords Keycloak refused while it still has the user: changed centrally, stale
    /// here (`central_total{event="password_stale"}`).
    PasswordsStale,
    /// Accounts disabled here because Keycloak disabled or deleted them
    /// (`central_total{event="disabled"}`).
    CentralDisables,
    /// Accounts Keycloak had disabled, enabled again because Keycloak did
    /// (`central_total{event="enabled"}`).
    CentralEnables,
    /// Local accounts created for users only Keycloak knew, at their first good login
    /// (`central_total{event="provisioned"}`).
    Provisioned,
    /// Sync items an operator sent again (`queue retry`;
    /// `keycloak_resilient_queue_operator_total{action="retry"}`).
    QueueRetried,
    /// Sync items an operator removed (`queue remove`;
    /// `keycloak_resilient_queue_operator_total{action="remove"}`).
    QueueRemoved,
}

impl Counter {
    /// The counter's key in `meta`: `counter/<name>` (stored databases use these).
    pub const fn key(self) -> &'static str {
        match self {
            Counter::SyncCompleted => "counter/sync_completed",
            Counter::SyncFailed => "counter/sync_failed",
            Counter::PasswordDivergence => "counter/password_divergence",
            Counter::LoginsKeycloak => "counter/logins_keycloak",
            Counter::LoginsCached => "counter/logins_cached",
            Counter::LoginsLocal => "counter/logins_local",
            Counter::CallsRejected => "counter/keycloak_calls_rejected",
            Counter::PasswordsAdopted => "counter/passwords_adopted",
            Counter::PasswordsStale => "counter/passwords_stale",
            Counter::CentralDisables => "counter/central_disables",
            Counter::CentralEnables => "counter/central_enables",
            Counter::Provisioned => "counter/provisioned",
            Counter::QueueRetried => "counter/queue_retried",
            Counter::QueueRemoved => "counter/queue_removed",
        }
    }
}

/// The key of the counter of queue items whose status is named `status` (`sync_count/<status>`,
/// u64 big-endian), kept by every queue transaction.
pub fn sync_count_key(status: &str) -> String {
    format!("sync_count/{status}")
}

/// The key of the counter of queue items of sync type `sync_type` still waiting (pending or
/// in flight): `sync_waiting/<type>`, u64 big-endian, kept by every queue transaction.
pub fn sync_waiting_key(sync_type: &str) -> String {
    format!("sync_waiting/{sync_type}")
}

/// A stored u64 (8 bytes big-endian); 0 when absent or malformed.
pub fn read_u64(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// Adds `by` to `counter` inside a transaction on `meta`, so that it changes together with
/// whatever else the transaction writes.
///
/// # Errors
///
/// sled's, to be passed on by the transaction closure.
pub fn bump_in(
    meta: &TransactionalTree,
    counter: Counter,
    by: u64,
) -> Result<(), UnabortableTransactionError> {
    let old = read_u64(meta.get(counter.key())?.as_deref());
    meta.insert(counter.key(), &old.saturating_add(by).to_be_bytes()[..])?;
    Ok(())
}

impl Store {
    /// Reads the record `key` from `meta`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the database fails or the record does not decode as `T`.
    pub fn get_meta<T: DeserializeOwned>(&self, key: MetaKey) -> Result<Option<T>, StoreError> {
        get(&self.meta, "meta", key.name().as_bytes())
    }

    /// Writes the record `key` to `meta`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the database fails.
    pub fn put_meta<T: Serialize>(&self, key: MetaKey, value: &T) -> Result<(), StoreError> {
        put(&self.meta, "meta", key.name().as_bytes(), value)
    }

    /// Removes the record `key` from `meta`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the database fails.
    pub fn remove_meta(&self, key: MetaKey) -> Result<(), StoreError> {
        self.meta.remove(key.name().as_bytes())?;
        Ok(())
    }

    /// Adds `by` to `counter` on its own and returns the new value (counters that change with
    /// other records use [`bump_in`] inside their transaction instead).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the database fails.
    pub fn bump_counter(&self, counter: Counter, by: u64) -> Result<u64, StoreError> {
        let new = self.meta.update_and_fetch(counter.key(), |old| {
            Some(read_u64(old).saturating_add(by).to_be_bytes().to_vec())
        })?;
        Ok(read_u64(new.as_deref()))
    }

    /// Reads `counter` (0 when never bumped).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the database fails.
    pub fn counter(&self, counter: Counter) -> Result<u64, StoreError> {
        Ok(read_u64(self.meta.get(counter.key())?.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_meta_round_trip() {
        let s = Store::temporary().unwrap();
        let c = Counter::PasswordDivergence;
        assert_eq!(s.counter(c).unwrap(), 0);
        assert_eq!(s.bump_counter(c, 2).unwrap(), 2);
        assert_eq!(s.bump_counter(c, 3).unwrap(), 5);
        let k = MetaKey::QueueBlocked;
        s.put_meta(k, &"v".to_string()).unwrap();
        assert_eq!(s.get_meta::<String>(k).unwrap().as_deref(), Some("v"));
        s.remove_meta(k).unwrap();
        assert_eq!(s.get_meta::<String>(k).unwrap(), None);
    }

    /// Stored databases hold these names: they never change.
    #[test]
    fn names_are_the_ones_stored_databases_use() {
        assert_eq!(Counter::SyncCompleted.key(), "counter/sync_completed");
        assert_eq!(Counter::SyncFailed.key(), "counter/sync_failed");
        assert_eq!(
            Counter::PasswordDivergence.key(),
            "counter/password_divergence"
        );
        assert_eq!(Counter::LoginsLocal.key(), "counter/logins_local");
        assert_eq!(MetaKey::Breaker.name(), "breaker");
        assert_eq!(MetaKey::HealthProbe.name(), "health");
        assert_eq!(MetaKey::QueueBlocked.name(), "queue_blocked");
        assert_eq!(MetaKey::RealmKeys.name(), "realm_keys");
        assert_eq!(sync_count_key("pending"), "sync_count/pending");
    }
}
