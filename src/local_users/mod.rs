//! The local user store (the `sys_user` of the original design): the layer that always answers.
//!
//! Local authentication is primary: a login is decided here first, whatever Keycloak is doing,
//! so this store must work with no network at all. Each (user, package) pair has one record in
//! the `local_users` tree under [`Account::key`] (usernames compare case-insensitively, as in
//! Keycloak; the record keeps the spelling it was created with).
//!
//! Passwords are stored as argon2id PHC strings. Users imported from another system may bring
//! PBKDF2 or bcrypt hashes ([`crate::password`] reads them); their first good login replaces
//! the hash with argon2id. Failed logins are limited by [`crate::lockout`].
//!
//! Answers are shaped against probing: an unknown user costs about the same time as a wrong
//! password, and a locked account is refused without looking at the password (even the right
//! one) but after the same amount of work. Nothing here writes a password or a hash to an error
//! or a log line.
//!
//! The record's shape is in `record`, the CSV and JSON-lines import in `import`.

use crate::account::{Account, NameError};
use crate::clock::SharedClock;
use crate::lockout::{LockoutPolicy, LockoutState};
use crate::password;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::sync::Arc;

mod import;
mod record;

pub use import::{ImportFormat, ImportReport};
pub(crate) use record::hash_in_record;
pub use record::{LocalUser, Origin, PasswordChangeRecord};

/// What can go wrong with the local user store.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// `add` or an import row named an account that is already there.
    #[error("local user {user:?} already exists in package {package:?}")]
    Exists {
        /// The username.
        user: String,
        /// The package.
        package: String,
    },
    /// The account to change does not exist.
    #[error("no local user {user:?} in package {package:?}")]
    NotFound {
        /// The username.
        user: String,
        /// The package.
        package: String,
    },
    /// A username, package or password is unacceptable; the message names the field.
    #[error("{0}")]
    BadInput(String),
    /// Hashing a password failed.
    #[error("{0}")]
    Hash(String),
    /// The import source could not be read.
    #[error("reading the import at line {line}: {cause}")]
    Read {
        /// The line number, from 1.
        line: usize,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<NameError> for UserError {
    /// A name that breaks the rule is bad input, with the rule's message (`username …`,
    /// `package …`).
    fn from(e: NameError) -> UserError {
        UserError::BadInput(e.to_string())
    }
}

/// The outcome of checking a password. `Debug` leaves out the hash.
#[derive(Clone, PartialEq, Eq)]
pub enum Verification {
    /// The password is right.
    Ok {
        /// The PHC hash now stored for the account, which this password verifies against
        /// (argon2id after an upgrade); callers may reuse it as a verifier without hashing again.
        hash: String,
    },
    /// Unknown user or wrong password (deliberately the same answer).
    Invalid,
    /// The account exists but is disabled.
    Disabled,
    /// Too many recent failures: refused without checking the password.
    Locked {
        /// When the lock ends.
        until: DateTime<Utc>,
    },
}

impl std::fmt::Debug for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verification::Ok { .. } => f.write_str("Ok { .. }"),
            Verification::Invalid => f.write_str("Invalid"),
            Verification::Disabled => f.write_str("Disabled"),
            Verification::Locked { until } => {
                f.debug_struct("Locked").field("until", until).finish()
            }
        }
    }
}

/// The local user store over the `local_users` tree.
#[derive(Clone)]
pub struct LocalUsers {
    store: Arc<Store>,
    clock: SharedClock,
    policy: LockoutPolicy,
}

impl std::fmt::Debug for LocalUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalUsers")
            .field("store", &self.store)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl LocalUsers {
    /// The store over `store`, with failed logins limited by `policy`.
    pub fn new(store: Arc<Store>, clock: SharedClock, policy: LockoutPolicy) -> Self {
        LocalUsers {
            store,
            clock,
            policy,
        }
    }

    /// The lockout policy in force.
    pub fn policy(&self) -> &LockoutPolicy {
        &self.policy
    }

    /// Adds an enabled account with an argon2id hash of `password`.
    ///
    /// # Errors
    /// [`UserError::BadInput`] for an unacceptable password, [`UserError::Exists`] when the
    /// account is there already (names compare case-insensitively), or a store error.
    pub fn add(&self, account: &Account, password: &str) -> Result<(), UserError> {
        check_password("password", password)?;
        let hash = hash(password)?;
        self.insert_new(account, hash, true)?;
        self.store.flush()?;
        let (user, package) = (account.user(), account.package());
        log::info!("local user {user:?} added to package {package:?}");
        Ok(())
    }

    /// Replaces the password of an account; returns the new PHC hash. Also clears failed logins
    /// and any lock: a new password is a fresh start.
    ///
    /// # Errors
    /// [`UserError::BadInput`], [`UserError::NotFound`], or a store error.
    pub fn set_password(&self, account: &Account, new_password: &str) -> Result<String, UserError> {
        check_password("new password", new_password)?;
        let hash = hash(new_password)?;
        let now = self.clock.now();
        let updated = self.update(&account.key(), |u| {
            u.hash = hash.clone();
            u.updated_at = now;
            u.password_stale = false;
            u.lockout.record_success();
            true
        })?;
        if updated.is_none() {
            return Err(not_found(account));
        }
        self.store.flush()?;
        let (user, package) = (account.user(), account.package());
        log::info!("password of local user {user:?} in package {package:?} changed");
        Ok(hash)
    }

    /// For `passwd`, where the new hash must land in the same transaction as the queued change
    /// for Keycloak: checks and hashes `new_password` and returns the change to apply to the
    /// account's record; nothing is written here.
    ///
    /// # Errors
    /// [`UserError::BadInput`] for a bad password, [`UserError::Hash`].
    pub fn prepare_password(
        &self,
        account: &Account,
        new_password: &str,
    ) -> Result<PasswordChangeRecord, UserError> {
        check_password("new password", new_password)?;
        Ok(PasswordChangeRecord {
            key: account.key(),
            hash: hash(new_password)?,
            at: self.clock.now(),
        })
    }

    /// Enables or disables an account.
    ///
    /// # Errors
    /// [`UserError::NotFound`], or a store error.
    pub fn set_enabled(&self, account: &Account, enabled: bool) -> Result<(), UserError> {
        let now = self.clock.now();
        let updated = self.update(&account.key(), |u| {
            if u.enabled == enabled {
                return false;
            }
            u.enabled = enabled;
            u.disabled_by = (!enabled).then_some(Origin::Local);
            u.updated_at = now;
            true
        })?;
        if updated.is_none() {
            return Err(not_found(account));
        }
        self.store.flush()?;
        let what = if enabled { "enabled" } else { "disabled" };
        let (user, package) = (account.user(), account.package());
        log::info!("local user {user:?} in package {package:?} {what}");
        Ok(())
    }

    /// Keycloak's decision that the account is disabled (or gone): disables it, recording
    /// Keycloak as the source. An account already disabled here keeps its local source (only
    /// an administrator here may enable it again). Returns whether it changed.
    ///
    /// # Errors
    /// [`UserError::NotFound`], or a store error.
    pub fn disable_by_keycloak(&self, account: &Account) -> Result<bool, UserError> {
        let now = self.clock.now();
        let mut changed = false;
        let updated = self.update(&account.key(), |u| {
            changed = u.enabled;
            if !u.enabled {
                return false;
            }
            u.enabled = false;
            u.disabled_by = Some(Origin::Keycloak);
            u.updated_at = now;
            true
        })?;
        if updated.is_none() {
            return Err(not_found(account));
        }
        if changed {
            self.store.flush()?;
            let (user, package) = (account.user(), account.package());
            log::warn!("local user {user:?} in package {package:?} disabled: Keycloak disabled or removed it");
        }
        Ok(changed)
    }

    /// Keycloak enabled again an account it had disabled: enables it here too. An account an
    /// administrator here disabled stays disabled. Returns whether it changed.
    ///
    /// # Errors
    /// [`UserError::NotFound`], or a store error.
    pub fn enable_by_keycloak(&self, account: &Account) -> Result<bool, UserError> {
        let now = self.clock.now();
        let mut changed = false;
        let updated = self.update(&account.key(), |u| {
            changed = !u.enabled && u.disabled_by == Some(Origin::Keycloak);
            if !changed {
                return false;
            }
            u.enabled = true;
            u.disabled_by = None;
            u.updated_at = now;
            true
        })?;
        if updated.is_none() {
            return Err(not_found(account));
        }
        if changed {
            self.store.flush()?;
            let (user, package) = (account.user(), account.package());
            log::info!(
                "local user {user:?} in package {package:?} enabled again: Keycloak enabled it"
            );
        }
        Ok(changed)
    }

    /// Remembers the account's Keycloak id (from a login's token or a reconcile). Not flushed:
    /// losing it in a crash only means it is learnt again.
    ///
    /// # Errors
    /// A store error (a missing account is not one: nothing to link).
    pub fn link(&self, account: &Account, keycloak_id: &str) -> Result<(), UserError> {
        self.update(&account.key(), |u| {
            if u.keycloak_id.as_deref() == Some(keycloak_id) {
                return false;
            }
            u.keycloak_id = Some(keycloak_id.to_string());
            true
        })?;
        Ok(())
    }

    /// Keycloak refused the password whose hash is `seen` while it still has the user: the
    /// password changed centrally, so this one stops working here (offline too) until a
    /// password Keycloak accepts replaces it. Does nothing when the password changed here
    /// meanwhile. Returns whether it marked it.
    ///
    /// # Errors
    /// A store error.
    pub fn mark_stale(&self, account: &Account, seen: &str) -> Result<bool, UserError> {
        let mut marked = false;
        self.update(&account.key(), |u| {
            marked = u.hash == seen && !u.password_stale;
            if marked {
                u.password_stale = true;
            }
            marked
        })?;
        if marked {
            self.store.flush()?;
            let (user, package) = (account.user(), account.package());
            log::warn!("password of local user {user:?} in package {package:?} no longer works: Keycloak refused it (changed centrally)");
        }
        Ok(marked)
    }

    /// A password Keycloak accepted becomes the local one (a new argon2id hash), unless the
    /// account's password changed here since it was read as `seen` (a `passwd` meanwhile is
    /// newer). `enable`: the account Keycloak had disabled is enabled again too. Returns the
    /// new hash, or `None` when nothing was adopted.
    ///
    /// # Errors
    /// [`UserError::BadInput`], [`UserError::Hash`], or a store error.
    pub fn adopt_password(
        &self,
        account: &Account,
        password: &str,
        seen: &str,
        enable: bool,
    ) -> Result<Option<String>, UserError> {
        check_password("password", password)?;
        let hash = hash(password)?;
        let now = self.clock.now();
        let mut adopted = false;
        self.update(&account.key(), |u| {
            adopted = u.hash == seen
                && (!enable || (!u.enabled && u.disabled_by == Some(Origin::Keycloak)));
            if !adopted {
                return false;
            }
            u.hash = hash.clone();
            u.password_stale = false;
            u.updated_at = now;
            u.lockout.record_success();
            if enable {
                u.enabled = true;
                u.disabled_by = None;
            }
            true
        })?;
        if !adopted {
            return Ok(None);
        }
        self.store.flush()?;
        let (user, package) = (account.user(), account.package());
        log::info!("local user {user:?} in package {package:?}: the password Keycloak accepted is now the local one");
        Ok(Some(hash))
    }

    /// Puts the hash `previous` back where `replaced` is still the account's hash (`passwd`
    /// whose new password Keycloak refused for good). Returns whether it did.
    ///
    /// # Errors
    /// A store error.
    pub fn restore_password(
        &self,
        account: &Account,
        replaced: &str,
        previous: &str,
    ) -> Result<bool, UserError> {
        let mut restored = false;
        self.update(&account.key(), |u| {
            restored = u.hash == replaced;
            if restored {
                u.hash = previous.to_string();
            }
            restored
        })?;
        if restored {
            self.store.flush()?;
        }
        Ok(restored)
    }

    /// A user only Keycloak knew logged in with a password it accepted: the local account is
    /// created with it, linked to `keycloak_id`. Returns the hash.
    ///
    /// # Errors
    /// [`UserError::Exists`] when the account appeared meanwhile, or as [`Self::add`].
    pub fn provision(
        &self,
        account: &Account,
        password: &str,
        keycloak_id: Option<&str>,
    ) -> Result<String, UserError> {
        check_password("password", password)?;
        let hash = hash(password)?;
        self.insert_new(account, hash.clone(), true)?;
        if let Some(id) = keycloak_id {
            self.link(account, id)?;
        }
        self.store.flush()?;
        let (user, package) = (account.user(), account.package());
        log::info!("local user {user:?} provisioned in package {package:?} from Keycloak");
        Ok(hash)
    }

    /// Lifts a lock and forgets failed logins (an administrator's "let them try again").
    ///
    /// # Errors
    /// [`UserError::NotFound`], or a store error.
    pub fn unlock(&self, account: &Account) -> Result<(), UserError> {
        let updated = self.update(&account.key(), |u| {
            if u.lockout.is_clear() {
                return false;
            }
            u.lockout.record_success();
            true
        })?;
        if updated.is_none() {
            return Err(not_found(account));
        }
        self.store.flush()?;
        let (user, package) = (account.user(), account.package());
        log::info!("local user {user:?} in package {package:?} unlocked");
        Ok(())
    }

    /// Removes an account.
    ///
    /// # Errors
    /// [`UserError::NotFound`], or a store error.
    pub fn remove(&self, account: &Account) -> Result<(), UserError> {
        let removed = self
            .store
            .local_users
            .remove(account.key())
            .map_err(StoreError::from)?;
        if removed.is_none() {
            return Err(not_found(account));
        }
        self.store.flush()?;
        let (user, package) = (account.user(), account.package());
        log::info!("local user {user:?} removed from package {package:?}");
        Ok(())
    }

    /// The account, if there is one (the username's case does not matter).
    ///
    /// # Errors
    /// A store error, including a record that does not decode.
    pub fn get(&self, account: &Account) -> Result<Option<LocalUser>, UserError> {
        read(&self.store, account)
    }

    /// Every account of this username, in any package (the username's case does not matter):
    /// `verify-token` asks whether a token's user is disabled here.
    ///
    /// # Errors
    /// A store error, including a record that does not decode.
    pub fn named(&self, username: &str) -> Result<Vec<LocalUser>, UserError> {
        let prefix = crate::account::user_key(username, "");
        let mut users = Vec::new();
        for item in self.store.local_users.scan_prefix(prefix) {
            let (_, bytes) = item.map_err(StoreError::from)?;
            users.push(record::decode(&bytes)?);
        }
        Ok(users)
    }

    /// Every account in key order, one at a time (memory stays flat however many there
    /// are): for passes over all of them, such as a reconcile.
    ///
    /// # Errors
    /// A store error, including a record that does not decode (never skipped silently).
    pub fn each(&self) -> impl Iterator<Item = Result<LocalUser, UserError>> + '_ {
        self.store.local_users.iter().map(|item| {
            let (_, bytes) = item.map_err(StoreError::from)?;
            Ok(record::decode(&bytes)?)
        })
    }

    /// Every account, sorted by package, then username (ignoring case).
    ///
    /// # Errors
    /// A store error, including a record that does not decode (never skipped silently).
    pub fn list(&self) -> Result<Vec<LocalUser>, UserError> {
        let mut users = Vec::new();
        for item in self.store.local_users.iter() {
            let (_, bytes) = item.map_err(StoreError::from)?;
            users.push(record::decode(&bytes)?);
        }
        users.sort_by(|a, b| {
            (&a.package, a.username.to_lowercase(), &a.username).cmp(&(
                &b.package,
                b.username.to_lowercase(),
                &b.username,
            ))
        });
        Ok(users)
    }

    /// The accounts locked now: `(username, package, locked until)`, in [`Self::list`] order.
    ///
    /// # Errors
    /// As [`Self::list`].
    pub fn locked(&self) -> Result<Vec<(String, String, DateTime<Utc>)>, UserError> {
        let now = self.clock.now();
        // One account at a time: `status` must not hold every account to find the few locked.
        let mut locked = Vec::new();
        for user in self.each() {
            let mut u = user?;
            u.lockout.settle_clock(now, &self.policy);
            if let Some(until) = u.lockout.is_locked(now) {
                locked.push((u.username, u.package, until));
            }
        }
        locked.sort_by(|a, b| {
            (&a.1, a.0.to_lowercase(), &a.0).cmp(&(&b.1, b.0.to_lowercase(), &b.0))
        });
        Ok(locked)
    }

    /// Checks `password` for an account and records the outcome (failed-login count, lock,
    /// hash upgrade to argon2id).
    ///
    /// - unknown account → [`Verification::Invalid`], after a dummy verify of the same cost;
    /// - locked → [`Verification::Locked`] without checking the password (a dummy verify keeps
    ///   the time the same);
    /// - disabled → the password is checked (same time), then [`Verification::Disabled`];
    /// - wrong password → the failure is recorded (it may lock the account), [`Verification::Invalid`];
    /// - right password → failures are cleared, a non-argon2id hash is replaced by argon2id,
    ///   [`Verification::Ok`] with the hash now stored.
    ///
    /// Login state is written without a flush (sled flushes on its own within a second);
    /// losing a failure count in a crash is harmless.
    ///
    /// # Errors
    /// [`UserError::BadInput`] for a password of impossible shape (empty, too long) — nothing
    /// about the account is revealed by it — or a store error.
    pub fn verify(&self, account: &Account, password: &str) -> Result<Verification, UserError> {
        check_password("password", password)?;
        let Some(found) = self.get(account)? else {
            password::verify_dummy(password);
            return Ok(Verification::Invalid);
        };
        let now = self.clock.now();
        // Always one full verify, so the time says nothing. A locked or disabled account is
        // named only to someone who knows its password: anyone else gets the answer an unknown
        // user gets (and a locked account's failures are not counted again).
        // A stale password (Keycloak refused it: changed centrally) counts as a wrong one.
        let right = password::verify(password, &found.hash) && !found.password_stale;
        let mut lockout = found.lockout.clone();
        if lockout.settle_clock(now, &self.policy) {
            log::warn!("local user {account}: its failed-login record was ahead of the clock; brought back to now");
            let policy = self.policy;
            self.update(&account.key(), |u| u.lockout.settle_clock(now, &policy))?;
        }
        if let Some(until) = lockout.is_locked(now) {
            return Ok(if right {
                Verification::Locked { until }
            } else {
                Verification::Invalid
            });
        }
        if !found.enabled {
            return Ok(if right {
                Verification::Disabled
            } else {
                Verification::Invalid
            });
        }
        if !right {
            self.record_failure(account, now)?;
            return Ok(Verification::Invalid);
        }
        self.record_success(account, password, found)
    }

    /// A wrong password for an enabled, unlocked account: counts it, and says so when that
    /// locks the account.
    fn record_failure(&self, account: &Account, now: DateTime<Utc>) -> Result<(), UserError> {
        let policy = self.policy;
        let after = self.update(&account.key(), |u| {
            u.lockout.record_failure(now, &policy);
            true
        })?;
        if let Some(until) = after.and_then(|u| u.lockout.is_locked(now)) {
            let (user, package) = (account.user(), account.package());
            log::warn!(
                "local user {user:?} in package {package:?} locked until {} after {} failed logins",
                until.to_rfc3339(),
                policy.max_failures
            );
        }
        Ok(())
    }

    /// The right password for `found`: clears failed logins and upgrades a legacy hash while
    /// the password is at hand in clear. An account removed meanwhile no longer logs in.
    fn record_success(
        &self,
        account: &Account,
        password: &str,
        found: LocalUser,
    ) -> Result<Verification, UserError> {
        let upgrade = upgraded_hash(account, password, &found.hash);
        let mut stored = None;
        let after = self.update(&account.key(), |u| {
            let mut changed = false;
            stored = None;
            // Only replace the hash we verified: a password set meanwhile wins.
            if let Some(new) = upgrade.as_ref().filter(|_| u.hash == found.hash) {
                u.hash = new.clone();
                stored = Some(new.clone());
                changed = true;
            }
            if !u.lockout.is_clear() {
                u.lockout.record_success();
                changed = true;
            }
            changed
        })?;
        if after.is_none() {
            // Removed while we were checking: it no longer logs in.
            return Ok(Verification::Invalid);
        }
        if stored.is_some() {
            let from = password::family(&found.hash)
                .map(|f| f.to_string())
                .unwrap_or_else(|_| "unknown".to_string());
            let (user, package) = (account.user(), account.package());
            log::info!("password hash of local user {user:?} in package {package:?} upgraded from {from} to argon2id");
        }
        Ok(Verification::Ok {
            hash: stored.unwrap_or(found.hash),
        })
    }

    /// Writes a new record unless the key is taken (atomically: two concurrent adds of the same
    /// name cannot both succeed).
    fn insert_new(&self, account: &Account, hash: String, enabled: bool) -> Result<(), UserError> {
        let now = self.clock.now();
        let record = LocalUser {
            username: account.user().to_string(),
            package: account.package().to_string(),
            hash,
            enabled,
            created_at: now,
            updated_at: now,
            lockout: LockoutState::default(),
            keycloak_id: None,
            disabled_by: (!enabled).then_some(Origin::Local),
            password_stale: false,
        };
        let bytes = record::encode(&record)?;
        let swapped = self
            .store
            .local_users
            .compare_and_swap(account.key(), None::<&[u8]>, Some(bytes))
            .map_err(StoreError::from)?;
        swapped.map_err(|_| UserError::Exists {
            user: account.user().to_string(),
            package: account.package().to_string(),
        })
    }

    /// Applies `change` to the record at `key` atomically, retrying when another writer got
    /// there first (so `change` must only set fields on the record it is given). `change`
    /// returns false to leave the record as it is. Returns the record as it now stands, or
    /// `None` when there is no record.
    fn update(
        &self,
        key: &[u8],
        mut change: impl FnMut(&mut LocalUser) -> bool,
    ) -> Result<Option<LocalUser>, UserError> {
        let tree = &self.store.local_users;
        loop {
            let Some(old) = tree.get(key).map_err(StoreError::from)? else {
                return Ok(None);
            };
            let mut user = record::decode(&old)?;
            if !change(&mut user) {
                return Ok(Some(user));
            }
            let new = record::encode(&user)?;
            match tree
                .compare_and_swap(key, Some(&old), Some(new))
                .map_err(StoreError::from)?
            {
                Ok(()) => return Ok(Some(user)),
                Err(_) => continue,
            }
        }
    }
}

fn hash(password: &str) -> Result<String, UserError> {
    password::hash(password).map_err(|e| UserError::Hash(e.to_string()))
}

fn not_found(account: &Account) -> UserError {
    UserError::NotFound {
        user: account.user().to_string(),
        package: account.package().to_string(),
    }
}

/// A legacy hash's argon2id replacement, made while the right password is at hand; `None` when
/// the hash is argon2id already, or hashing failed (the login stands; the upgrade is tried
/// again next time).
fn upgraded_hash(account: &Account, password: &str, old: &str) -> Option<String> {
    if !password::needs_rehash(old) {
        return None;
    }
    match password::hash(password) {
        Ok(h) => Some(h),
        Err(e) => {
            let (user, package) = (account.user(), account.package());
            log::warn!("could not upgrade the password hash of local user {user:?} in package {package:?}: {e}");
            None
        }
    }
}

/// A password, by the one rule of [`password::check_password`].
fn check_password(field: &str, value: &str) -> Result<(), UserError> {
    password::check_password(field, value).map_err(UserError::BadInput)
}

/// The account's record, if there is one.
fn read(store: &Store, account: &Account) -> Result<Option<LocalUser>, UserError> {
    match store
        .local_users
        .get(account.key())
        .map_err(StoreError::from)?
    {
        Some(bytes) => Ok(Some(record::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// The Keycloak id `account` is linked to, if it is: the drain sends a linked user's change
/// by id, without asking Keycloak for the user by name first.
///
/// # Errors
/// A store error, including a record that does not decode.
pub fn linked_id(store: &Store, account: &Account) -> Result<Option<String>, UserError> {
    Ok(read(store, account)?.and_then(|u| u.keycloak_id))
}

#[cfg(test)]
mod tests;
