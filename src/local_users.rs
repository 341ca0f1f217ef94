//! The local user store (the `sys_user` of the original design): the layer that always answers.
//!
//! Local authentication is primary: a login is decided here first, whatever Keycloak is doing,
//! so this store must work with no network at all. Each (user, package) pair has one record in
//! the `local_users` tree under [`store::user_key`] (usernames compare case-insensitively, as in
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

use crate::clock::SharedClock;
use crate::lockout::{LockoutPolicy, LockoutState};
use crate::password;
use crate::store::{self, user_key, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

const TREE: &str = "local_users";

/// One local account as stored. `Debug` leaves out the hash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalUser {
    /// The username as it was created (lookups ignore case).
    pub username: String,
    /// The package (application) the account belongs to.
    pub package: String,
    /// The password hash, a PHC string (argon2id; PBKDF2 or bcrypt until the first login after
    /// an import).
    pub hash: String,
    /// A disabled account never logs in.
    pub enabled: bool,
    /// When the account was added or imported.
    pub created_at: DateTime<Utc>,
    /// The last administrative change (password, enabled); logins and hash upgrades leave it.
    pub updated_at: DateTime<Utc>,
    /// Recent failed logins and the lock they may have caused.
    pub lockout: LockoutState,
}

impl std::fmt::Debug for LocalUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalUser")
            .field("username", &self.username)
            .field("package", &self.package)
            .field("enabled", &self.enabled)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("lockout", &self.lockout)
            .finish_non_exhaustive()
    }
}

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

/// The layout of an import file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    /// One JSON object per line:
    /// `{"username": "...", "package": "...", "password_hash": "$argon2id$..."}`, or
    /// `"password": "plain"` instead of `password_hash` (hashed on import); optional
    /// `"enabled": bool` (default true). Other keys are ignored.
    JsonLines,
    /// A header line naming the columns, then one row per user. Columns (any order):
    /// `username`, `package`, `password_hash` or `password`, optional `enabled`
    /// (`true/false/yes/no/1/0`, empty = true). Fields may be double-quoted (`""` is a quote
    /// inside); a quoted field cannot span lines. PHC hashes contain commas
    /// (`m=19456,t=2,p=1`): when a row has more fields than the header, the surplus is given
    /// back to the one secret column (joined with commas), which is right because the other
    /// columns never contain an unquoted comma. With both secret columns, quote the hash.
    Csv,
}

impl ImportFormat {
    /// The format for a file name: `.jsonl`, `.ndjson`, `.json` → JSON lines; `.csv` → CSV.
    pub fn from_path(path: &Path) -> Option<ImportFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "ndjson" | "json" => Some(ImportFormat::JsonLines),
            "csv" => Some(ImportFormat::Csv),
            _ => None,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Accounts created.
    pub imported: usize,
    /// Rows naming an account that already existed (left untouched; each is also in `errors`).
    pub skipped_existing: usize,
    /// `(line number, why)` for every row not imported; line numbers count from 1 and include
    /// blank, comment and header lines. No message contains a password or a hash.
    pub errors: Vec<(usize, String)>,
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

/// One row of an import, checked.
struct Row {
    username: String,
    package: String,
    secret: Secret,
    enabled: bool,
}

/// The password part of an import row.
enum Secret {
    Hash(String),
    Plain(String),
}

impl Secret {
    /// One of the two columns (JSON keys) `password_hash` and `password`, never both.
    fn from_columns(hash: Option<String>, plain: Option<String>) -> Result<Secret, RowError> {
        match (hash, plain) {
            (Some(h), None) => Ok(Secret::Hash(h)),
            (None, Some(p)) => Ok(Secret::Plain(p)),
            (Some(_), Some(_)) => Err(RowError::Bad(
                "give either `password_hash` or `password`, not both".to_string(),
            )),
            (None, None) => Err(RowError::Bad(
                "`password_hash` (or `password`) is missing or empty".to_string(),
            )),
        }
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
    /// [`UserError::BadInput`] for an unacceptable name or password, [`UserError::Exists`] when
    /// the account is there already (names compare case-insensitively), or a store error.
    pub fn add(&self, user: &str, package: &str, password: &str) -> Result<(), UserError> {
        check_name("username", user)?;
        check_name("package", package)?;
        check_password("password", password)?;
        let hash = hash(password)?;
        self.insert_new(user, package, hash, true)?;
        self.store.flush()?;
        log::info!("local user {user:?} added to package {package:?}");
        Ok(())
    }

    /// Replaces the password of an account; returns the new PHC hash. Also clears failed logins
    /// and any lock: a new password is a fresh start.
    ///
    /// # Errors
    /// [`UserError::BadInput`], [`UserError::NotFound`], or a store error.
    pub fn set_password(
        &self,
        user: &str,
        package: &str,
        new_password: &str,
    ) -> Result<String, UserError> {
        check_name("username", user)?;
        check_name("package", package)?;
        check_password("new password", new_password)?;
        let hash = hash(new_password)?;
        let now = self.clock.now();
        let updated = self.update(&user_key(user, package), |u| {
            u.hash = hash.clone();
            u.updated_at = now;
            u.lockout.record_success();
            true
        })?;
        if updated.is_none() {
            return Err(not_found(user, package));
        }
        self.store.flush()?;
        log::info!("password of local user {user:?} in package {package:?} changed");
        Ok(hash)
    }

    /// For `passwd`, where the new hash must land in the same transaction as the queued change
    /// for Keycloak: checks and hashes `new_password` and returns the change to apply to the
    /// account's record; nothing is written here.
    ///
    /// # Errors
    /// [`UserError::BadInput`] for a bad name or password, [`UserError::Hash`].
    pub fn prepare_password(
        &self,
        user: &str,
        package: &str,
        new_password: &str,
    ) -> Result<PasswordChangeRecord, UserError> {
        check_name("username", user)?;
        check_name("package", package)?;
        check_password("new password", new_password)?;
        Ok(PasswordChangeRecord {
            key: user_key(user, package),
            hash: hash(new_password)?,
            at: self.clock.now(),
        })
    }

    /// Enables or disables an account.
    ///
    /// # Errors
    /// [`UserError::BadInput`], [`UserError::NotFound`], or a store error.
    pub fn set_enabled(&self, user: &str, package: &str, enabled: bool) -> Result<(), UserError> {
        check_name("username", user)?;
        check_name("package", package)?;
        let now = self.clock.now();
        let updated = self.update(&user_key(user, package), |u| {
            if u.enabled == enabled {
                return false;
            }
            u.enabled = enabled;
            u.updated_at = now;
            true
        })?;
        if updated.is_none() {
            return Err(not_found(user, package));
        }
        self.store.flush()?;
        let what = if enabled { "enabled" } else { "disabled" };
        log::info!("local user {user:?} in package {package:?} {what}");
        Ok(())
    }

    /// Lifts a lock and forgets failed logins (an administrator's "let them try again").
    ///
    /// # Errors
    /// [`UserError::BadInput`], [`UserError::NotFound`], or a store error.
    pub fn unlock(&self, user: &str, package: &str) -> Result<(), UserError> {
        check_name("username", user)?;
        check_name("package", package)?;
        let updated = self.update(&user_key(user, package), |u| {
            if u.lockout.is_clear() {
                return false;
            }
            u.lockout.record_success();
            true
        })?;
        if updated.is_none() {
            return Err(not_found(user, package));
        }
        self.store.flush()?;
        log::info!("local user {user:?} in package {package:?} unlocked");
        Ok(())
    }

    /// Removes an account.
    ///
    /// # Errors
    /// [`UserError::BadInput`], [`UserError::NotFound`], or a store error.
    pub fn remove(&self, user: &str, package: &str) -> Result<(), UserError> {
        check_name("username", user)?;
        check_name("package", package)?;
        let removed = self
            .store
            .local_users
            .remove(user_key(user, package))
            .map_err(StoreError::from)?;
        if removed.is_none() {
            return Err(not_found(user, package));
        }
        self.store.flush()?;
        log::info!("local user {user:?} removed from package {package:?}");
        Ok(())
    }

    /// The account, if there is one (the username's case does not matter).
    ///
    /// # Errors
    /// A store error, including a record that does not decode.
    pub fn get(&self, user: &str, package: &str) -> Result<Option<LocalUser>, UserError> {
        Ok(store::get(
            &self.store.local_users,
            TREE,
            &user_key(user, package),
        )?)
    }

    /// Every account, sorted by package, then username (ignoring case).
    ///
    /// # Errors
    /// A store error, including a record that does not decode (never skipped silently).
    pub fn list(&self) -> Result<Vec<LocalUser>, UserError> {
        let mut users = Vec::new();
        for item in self.store.local_users.iter() {
            let (_, bytes) = item.map_err(StoreError::from)?;
            users.push(store::decode::<LocalUser>(TREE, &bytes)?);
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
        Ok(self
            .list()?
            .into_iter()
            .filter_map(|u| {
                let until = u.lockout.is_locked(now)?;
                Some((u.username, u.package, until))
            })
            .collect())
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
    /// [`UserError::BadInput`] for a name or password of impossible shape (empty, too long,
    /// control characters) — nothing about the account is revealed by it — or a store error.
    pub fn verify(
        &self,
        user: &str,
        package: &str,
        password: &str,
    ) -> Result<Verification, UserError> {
        check_name("username", user)?;
        check_name("package", package)?;
        check_password("password", password)?;
        let key = user_key(user, package);
        let Some(found) = self.get(user, package)? else {
            password::verify_dummy(password);
            return Ok(Verification::Invalid);
        };
        let now = self.clock.now();
        // Always one full verify, so the time says nothing. A locked or disabled account is
        // named only to someone who knows its password: anyone else gets the answer an unknown
        // user gets (and a locked account's failures are not counted again).
        let right = password::verify(password, &found.hash);
        if let Some(until) = found.lockout.is_locked(now) {
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
            let policy = self.policy;
            let after = self.update(&key, |u| {
                u.lockout.record_failure(now, &policy);
                true
            })?;
            if let Some(until) = after.and_then(|u| u.lockout.is_locked(now)) {
                log::warn!(
                    "local user {user:?} in package {package:?} locked until {} after {} failed logins",
                    until.to_rfc3339(),
                    policy.max_failures
                );
            }
            return Ok(Verification::Invalid);
        }
        // Right password. Upgrade a legacy hash while we hold the password in clear.
        let upgrade = if password::needs_rehash(&found.hash) {
            match password::hash(password) {
                Ok(h) => Some(h),
                Err(e) => {
                    // The login stands; the upgrade is tried again next time.
                    log::warn!("could not upgrade the password hash of local user {user:?} in package {package:?}: {e}");
                    None
                }
            }
        } else {
            None
        };
        let mut stored = None;
        let after = self.update(&key, |u| {
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
            log::info!("password hash of local user {user:?} in package {package:?} upgraded from {from} to argon2id");
        }
        Ok(Verification::Ok {
            hash: stored.unwrap_or(found.hash),
        })
    }

    /// Imports accounts from `reader` (see [`ImportFormat`] for the layouts). Blank lines and
    /// lines starting with `#` are skipped. A bad row is reported with its line number and the
    /// rest is still imported; an existing account is never overwritten (reported as "already
    /// exists" and counted in `skipped_existing`). Hashes are checked with
    /// [`password::check_importable`]; plain passwords are hashed with argon2id.
    ///
    /// # Errors
    /// [`UserError::BadInput`] when a CSV header is missing or unusable, [`UserError::Read`] when
    /// the reader fails (what was imported before stays), or a store error.
    pub fn import(
        &self,
        mut reader: impl BufRead,
        format: ImportFormat,
    ) -> Result<ImportReport, UserError> {
        let mut report = ImportReport::default();
        let mut header: Option<CsvHeader> = None;
        let mut buf = Vec::new();
        let mut line_no = 0usize;
        let result = loop {
            buf.clear();
            line_no += 1;
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(cause) => {
                    break Err(UserError::Read {
                        line: line_no,
                        cause,
                    })
                }
            }
            let Ok(text) = std::str::from_utf8(&buf) else {
                report.errors.push((line_no, "not valid UTF-8".to_string()));
                continue;
            };
            let text = text.strip_suffix('\n').unwrap_or(text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            // Spreadsheet exports often start with a byte-order mark.
            let text = if line_no == 1 {
                text.strip_prefix('\u{feff}').unwrap_or(text)
            } else {
                text
            };
            let trimmed = text.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let row = match format {
                ImportFormat::JsonLines => parse_json_row(trimmed),
                ImportFormat::Csv => match &header {
                    None => match CsvHeader::parse(text) {
                        Ok(h) => {
                            header = Some(h);
                            continue;
                        }
                        Err(e) => break Err(UserError::BadInput(format!("line {line_no}: {e}"))),
                    },
                    Some(h) => h.row(text),
                },
            };
            match row.and_then(|r| self.import_row(r)) {
                Ok(()) => report.imported += 1,
                Err(RowError::Exists) => {
                    report.skipped_existing += 1;
                    report.errors.push((line_no, "already exists".to_string()));
                }
                Err(RowError::Bad(msg)) => report.errors.push((line_no, msg)),
                Err(RowError::Fatal(e)) => break Err(e),
            }
        };
        // Whatever happened, what was imported must last.
        self.store.flush()?;
        result?;
        if format == ImportFormat::Csv && header.is_none() {
            return Err(UserError::BadInput(
                "the CSV file has no header line (username,package,password_hash[,enabled])"
                    .to_string(),
            ));
        }
        log::info!(
            "import: {} local user(s) imported, {} already existed, {} row(s) refused",
            report.imported,
            report.skipped_existing,
            report.errors.len() - report.skipped_existing
        );
        Ok(report)
    }

    fn import_row(&self, row: Row) -> Result<(), RowError> {
        check_name("username", &row.username).map_err(RowError::from_input)?;
        check_name("package", &row.package).map_err(RowError::from_input)?;
        let hash = match row.secret {
            Secret::Hash(h) => {
                password::check_importable(&h)
                    .map_err(|e| RowError::Bad(format!("password_hash: {e}")))?;
                h
            }
            Secret::Plain(p) => {
                check_password("password", &p).map_err(RowError::from_input)?;
                hash(&p).map_err(RowError::Fatal)?
            }
        };
        match self.insert_new(&row.username, &row.package, hash, row.enabled) {
            Ok(()) => Ok(()),
            Err(UserError::Exists { .. }) => Err(RowError::Exists),
            Err(e) => Err(RowError::Fatal(e)),
        }
    }

    /// Writes a new record unless the key is taken (atomically: two concurrent adds of the same
    /// name cannot both succeed).
    fn insert_new(
        &self,
        user: &str,
        package: &str,
        hash: String,
        enabled: bool,
    ) -> Result<(), UserError> {
        let now = self.clock.now();
        let record = LocalUser {
            username: user.to_string(),
            package: package.to_string(),
            hash,
            enabled,
            created_at: now,
            updated_at: now,
            lockout: LockoutState::default(),
        };
        let bytes = store::encode(TREE, &record)?;
        let swapped = self
            .store
            .local_users
            .compare_and_swap(user_key(user, package), None::<&[u8]>, Some(bytes))
            .map_err(StoreError::from)?;
        swapped.map_err(|_| UserError::Exists {
            user: user.to_string(),
            package: package.to_string(),
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
            let mut user: LocalUser = store::decode(TREE, &old)?;
            if !change(&mut user) {
                return Ok(Some(user));
            }
            let new = store::encode(TREE, &user)?;
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

/// A new password for an account, hashed, to be written by the caller's transaction
/// (see [`LocalUsers::prepare_password`]). `Debug` leaves out the hash.
pub struct PasswordChangeRecord {
    /// The account's key in `local_users`.
    pub key: Vec<u8>,
    /// The new argon2id hash (also the token cache's new verifier).
    pub hash: String,
    /// When the change was made.
    at: DateTime<Utc>,
}

impl std::fmt::Debug for PasswordChangeRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordChangeRecord")
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl PasswordChangeRecord {
    /// The account record `current` with the new password set (as
    /// [`LocalUsers::set_password`] sets it: hash, `updated_at`, failed logins cleared).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when `current` does not decode.
    pub fn apply(&self, current: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut user: LocalUser = store::decode(TREE, current)?;
        user.hash = self.hash.clone();
        user.updated_at = self.at;
        user.lockout.record_success();
        store::encode(TREE, &user)
    }
}

/// The password hash in a stored account record: for a writer that checks, inside its own
/// transaction, that the password did not change since it read it (see
/// [`crate::token_cache::Verifier::Hash`]).
///
/// # Errors
/// [`StoreError::Corrupt`] when `record` does not decode.
pub(crate) fn hash_in_record(record: &[u8]) -> Result<String, StoreError> {
    let user: LocalUser = store::decode(TREE, record)?;
    Ok(user.hash)
}

/// Why one import row was not imported.
enum RowError {
    /// The account is there already.
    Exists,
    /// The row is wrong; the message says how (never with a secret in it).
    Bad(String),
    /// Not the row's fault (store, hashing): the import stops.
    Fatal(UserError),
}

impl RowError {
    fn from_input(e: UserError) -> RowError {
        match e {
            UserError::BadInput(msg) => RowError::Bad(msg),
            other => RowError::Fatal(other),
        }
    }
}

fn hash(password: &str) -> Result<String, UserError> {
    password::hash(password).map_err(|e| UserError::Hash(e.to_string()))
}

fn not_found(user: &str, package: &str) -> UserError {
    UserError::NotFound {
        user: user.to_string(),
        package: package.to_string(),
    }
}

/// A username or package, by the one rule of [`store::check_name`].
fn check_name(field: &str, value: &str) -> Result<(), UserError> {
    store::check_name(field, value).map_err(UserError::BadInput)
}

/// A password, by the one rule of [`password::check_password`].
fn check_password(field: &str, value: &str) -> Result<(), UserError> {
    password::check_password(field, value).map_err(UserError::BadInput)
}

/// One JSON-lines row. Parsed through `serde_json::Value` so that no message can quote a
/// value (serde's type errors do: "invalid type: string \"…\"").
fn parse_json_row(line: &str) -> Result<Row, RowError> {
    let value: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| RowError::Bad(format!("not valid JSON ({})", json_error_kind(&e))))?;
    let serde_json::Value::Object(obj) = value else {
        return Err(RowError::Bad("not a JSON object".to_string()));
    };
    let string = |name: &str| -> Result<Option<String>, RowError> {
        match obj.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(RowError::Bad(format!("field `{name}` must be a string"))),
        }
    };
    let required = |name: &str| -> Result<String, RowError> {
        string(name)?.ok_or_else(|| RowError::Bad(format!("field `{name}` is missing")))
    };
    let username = required("username")?;
    let package = required("package")?;
    let secret = Secret::from_columns(string("password_hash")?, string("password")?)?;
    let enabled = match obj.get("enabled") {
        None | Some(serde_json::Value::Null) => true,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => {
            return Err(RowError::Bad(
                "field `enabled` must be true or false".to_string(),
            ))
        }
    };
    Ok(Row {
        username,
        package,
        secret,
        enabled,
    })
}

/// The kind and column of a JSON syntax error, without serde_json's wording (kept short and
/// certainly free of the line's content).
fn json_error_kind(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Eof => "unexpected end of line",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Io => "read error",
    };
    format!("{kind} at column {}", e.column())
}

/// The column positions named by a CSV header.
struct CsvHeader {
    width: usize,
    username: usize,
    package: usize,
    hash: Option<usize>,
    plain: Option<usize>,
    enabled: Option<usize>,
}

impl CsvHeader {
    fn parse(line: &str) -> Result<CsvHeader, String> {
        let names = split_csv(line).map_err(|e| format!("CSV header: {e}"))?;
        let find = |name: &str| -> Result<Option<usize>, String> {
            let mut hits = names
                .iter()
                .enumerate()
                .filter(|(_, n)| n.trim().eq_ignore_ascii_case(name))
                .map(|(i, _)| i);
            let first = hits.next();
            if hits.next().is_some() {
                return Err(format!("CSV header names column `{name}` twice"));
            }
            Ok(first)
        };
        let expected = "expected username,package,password_hash[,enabled]";
        let username = find("username")?
            .ok_or_else(|| format!("CSV header has no `username` column ({expected})"))?;
        let package = find("package")?
            .ok_or_else(|| format!("CSV header has no `package` column ({expected})"))?;
        let hash = find("password_hash")?;
        let plain = find("password")?;
        let enabled = find("enabled")?;
        if hash.is_none() && plain.is_none() {
            return Err(format!(
                "CSV header has no `password_hash` (or `password`) column ({expected})"
            ));
        }
        for (i, n) in names.iter().enumerate() {
            if ![Some(username), Some(package), hash, plain, enabled].contains(&Some(i)) {
                return Err(format!(
                    "CSV header has an unknown column `{}` ({expected})",
                    n.trim()
                ));
            }
        }
        Ok(CsvHeader {
            width: names.len(),
            username,
            package,
            hash,
            plain,
            enabled,
        })
    }

    fn row(&self, line: &str) -> Result<Row, RowError> {
        let mut fields = split_csv(line).map_err(RowError::Bad)?;
        if fields.len() > self.width {
            // Give the surplus back to the one secret column (see `ImportFormat::Csv`).
            let secret = match (self.hash, self.plain) {
                (Some(i), None) | (None, Some(i)) => i,
                _ => {
                    return Err(RowError::Bad(format!(
                        "{} fields, the header has {} (quote the password_hash)",
                        fields.len(),
                        self.width
                    )))
                }
            };
            let surplus = fields.len() - self.width;
            let joined = fields
                .drain(secret..=secret + surplus)
                .collect::<Vec<_>>()
                .join(",");
            fields.insert(secret, joined);
        }
        if fields.len() < self.width {
            return Err(RowError::Bad(format!(
                "{} fields, the header has {}",
                fields.len(),
                self.width
            )));
        }
        // Every index is below `width`, and `fields` has exactly `width` entries now.
        let mut take_field = |i: usize| std::mem::take(&mut fields[i]);
        let username = take_field(self.username).trim().to_string();
        let package = take_field(self.package).trim().to_string();
        let hash = self
            .hash
            .map(&mut take_field)
            .filter(|h| !h.trim().is_empty());
        let plain = self.plain.map(&mut take_field).filter(|p| !p.is_empty());
        let secret = Secret::from_columns(hash.map(|h| h.trim().to_string()), plain)?;
        let enabled = match self.enabled.map(&mut take_field) {
            None => true,
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" | "true" | "yes" | "1" => true,
                "false" | "no" | "0" => false,
                _ => {
                    return Err(RowError::Bad(
                        "enabled must be true/false, yes/no or 1/0".to_string(),
                    ))
                }
            },
        };
        Ok(Row {
            username,
            package,
            secret,
            enabled,
        })
    }
}

/// Splits one CSV line: commas separate fields; a field that starts with `"` runs to the
/// closing `"` (`""` inside is one quote) and may contain commas. Unquoted fields are taken
/// as they are.
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("a quoted field is not closed".to_string()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => {
                    return Err("unexpected text after a closing quote".to_string());
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use chrono::TimeZone;
    use pbkdf2::password_hash::CustomizedPasswordHasher;

    fn setup() -> (LocalUsers, ManualClock) {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap());
        let policy = LockoutPolicy {
            max_failures: 3,
            window: std::time::Duration::from_secs(600),
            lockout: std::time::Duration::from_secs(1800),
        };
        let users = LocalUsers::new(
            Arc::new(Store::temporary().unwrap()),
            Arc::new(clock.clone()),
            policy,
        );
        (users, clock)
    }

    fn pbkdf2_hash(password: &str) -> String {
        pbkdf2::Pbkdf2::default()
            .hash_password_customized(
                password.as_bytes(),
                b"saltsaltsaltsalt",
                Some("pbkdf2-sha512"),
                None,
                pbkdf2::Params::new_with_output_len(1000, 64).unwrap(),
            )
            .unwrap()
            .to_string()
    }

    fn is_ok(v: &Verification) -> bool {
        matches!(v, Verification::Ok { .. })
    }

    #[test]
    fn add_refuses_duplicates_whatever_the_case() {
        let (users, _) = setup();
        users.add("Alice", "web", "pw1").unwrap();
        let err = users.add("alice", "web", "pw2").unwrap_err();
        assert!(matches!(err, UserError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("\"alice\"") && err.to_string().contains("\"web\""));
        // Another package is another account.
        users.add("ALICE", "api", "pw3").unwrap();
        let a = users.get("aLiCe", "web").unwrap().unwrap();
        assert_eq!(a.username, "Alice");
        assert!(a.hash.starts_with("$argon2id$"));
        assert!(a.enabled);
        assert!(
            !format!("{a:?}").contains("argon2"),
            "Debug must hide the hash"
        );
        let list = users.list().unwrap();
        let names: Vec<_> = list
            .iter()
            .map(|u| (u.package.as_str(), u.username.as_str()))
            .collect();
        assert_eq!(names, [("api", "ALICE"), ("web", "Alice")]);
    }

    #[test]
    fn names_and_passwords_are_checked_without_echo() {
        let (users, _) = setup();
        for (user, package, password, field) in [
            ("", "web", "pw", "username"),
            ("bob", "", "pw", "package"),
            ("bo\nb", "web", "pw", "username"),
            (&*"x".repeat(256), "web", "pw", "username"),
            ("bob", "web", "", "password"),
            ("bob", "web", &*"s".repeat(1025), "password"),
        ] {
            let err = users.add(user, package, password).unwrap_err();
            assert!(matches!(err, UserError::BadInput(_)));
            let msg = err.to_string();
            assert!(msg.starts_with(field), "{msg}");
            assert!(!msg.contains("sss"), "{msg}");
        }
        users
            .add(&"é".repeat(255), "web", &"p".repeat(1024))
            .unwrap();
    }

    #[test]
    fn verify_ok_invalid_unknown_disabled() {
        let (users, _) = setup();
        users.add("bob", "web", "right").unwrap();
        let stored = users.get("bob", "web").unwrap().unwrap().hash;
        assert_eq!(
            users.verify("BOB", "web", "right").unwrap(),
            Verification::Ok {
                hash: stored.clone()
            }
        );
        assert_eq!(
            users.verify("bob", "web", "wrong").unwrap(),
            Verification::Invalid
        );
        assert_eq!(
            users.verify("nobody", "web", "right").unwrap(),
            Verification::Invalid
        );
        assert_eq!(
            users.verify("bob", "api", "right").unwrap(),
            Verification::Invalid
        );
        users.set_enabled("bob", "web", false).unwrap();
        assert_eq!(
            users.verify("bob", "web", "right").unwrap(),
            Verification::Disabled
        );
        assert_eq!(
            users.verify("bob", "web", "wrong").unwrap(),
            Verification::Invalid,
            "a disabled account is named only to someone who knows its password"
        );
        users.set_enabled("Bob", "web", true).unwrap();
        assert!(is_ok(&users.verify("bob", "web", "right").unwrap()));
        // One failure recorded earlier, cleared by the success.
        assert!(users.get("bob", "web").unwrap().unwrap().lockout.is_clear());
        assert!(!format!("{:?}", Verification::Ok { hash: stored }).contains("argon2"));
    }

    #[test]
    fn lockout_refuses_even_the_right_password_until_it_expires() {
        let (users, clock) = setup();
        users.add("carol", "web", "right").unwrap();
        assert_eq!(
            users.verify("carol", "web", "w1").unwrap(),
            Verification::Invalid
        );
        clock.advance(chrono::Duration::minutes(1));
        assert_eq!(
            users.verify("carol", "web", "w2").unwrap(),
            Verification::Invalid
        );
        assert!(users.locked().unwrap().is_empty());
        clock.advance(chrono::Duration::minutes(1));
        assert_eq!(
            users.verify("carol", "web", "w3").unwrap(),
            Verification::Invalid
        );
        let until = clock.now() + chrono::Duration::minutes(30);
        assert_eq!(
            users.verify("carol", "web", "right").unwrap(),
            Verification::Locked { until }
        );
        assert_eq!(
            users.locked().unwrap(),
            vec![("carol".to_string(), "web".to_string(), until)]
        );
        assert_eq!(
            users.verify("carol", "web", "wrong").unwrap(),
            Verification::Invalid,
            "a lock is named only to someone who knows the password"
        );
        clock.advance(chrono::Duration::minutes(29));
        assert_eq!(
            users.verify("carol", "web", "right").unwrap(),
            Verification::Locked { until }
        );
        clock.advance(chrono::Duration::minutes(1));
        assert!(is_ok(&users.verify("carol", "web", "right").unwrap()));
        assert!(users.locked().unwrap().is_empty());
        // unlock lifts a lock early.
        for _ in 0..3 {
            users.verify("carol", "web", "nope").unwrap();
        }
        assert!(matches!(
            users.verify("carol", "web", "right").unwrap(),
            Verification::Locked { .. }
        ));
        users.unlock("carol", "web").unwrap();
        assert!(is_ok(&users.verify("carol", "web", "right").unwrap()));
    }

    #[test]
    fn imported_legacy_hashes_are_upgraded_on_first_good_login() {
        let (users, _) = setup();
        let pb = pbkdf2_hash("pbkdf2 pw");
        let bc = bcrypt::hash("bcrypt pw", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        let input = format!(
            "{{\"username\":\"dave\",\"package\":\"web\",\"password_hash\":\"{pb}\"}}\n\
             {{\"username\":\"erin\",\"package\":\"web\",\"password_hash\":\"{bc}\"}}\n"
        );
        let report = users
            .import(input.as_bytes(), ImportFormat::JsonLines)
            .unwrap();
        assert_eq!(report.imported, 2, "{report:?}");
        for (user, pw, legacy) in [("dave", "pbkdf2 pw", &pb), ("erin", "bcrypt pw", &bc)] {
            assert_eq!(&users.get(user, "web").unwrap().unwrap().hash, legacy);
            assert_eq!(
                users.verify(user, "web", "wrong").unwrap(),
                Verification::Invalid
            );
            assert_eq!(&users.get(user, "web").unwrap().unwrap().hash, legacy);
            let Verification::Ok { hash } = users.verify(user, "web", pw).unwrap() else {
                panic!("{user} should log in");
            };
            assert!(hash.starts_with("$argon2id$"), "{user}");
            let stored = users.get(user, "web").unwrap().unwrap();
            assert_eq!(stored.hash, hash);
            assert!(stored.lockout.is_clear());
            assert_eq!(
                users.verify(user, "web", pw).unwrap(),
                Verification::Ok { hash }
            );
        }
    }

    #[test]
    fn import_json_lines_reports_bad_rows_by_line() {
        let (users, _) = setup();
        users.add("existing", "web", "pw").unwrap();
        let argon = password::hash("a1").unwrap();
        let input = format!(
            "# exported 2024-05-01\n\
             {{\"username\":\"u1\",\"package\":\"web\",\"password_hash\":\"{argon}\"}}\n\
             \n\
             {{\"username\":\"u2\",\"package\":\"web\",\"password\":\"plain-secret\",\"enabled\":false}}\n\
             {{\"username\":\"u3\",\"package\":\"web\",\"password_hash\":\"$1$SECRETSALT$SECRETHASH\"}}\n\
             {{not json SECRET\n\
             {{\"username\":\"u4\",\"password\":\"SECRET\"}}\n\
             {{\"username\":\"EXISTING\",\"package\":\"web\",\"password\":\"SECRET\"}}\n\
             {{\"username\":\"u5\",\"package\":\"web\",\"password\":\"SECRET\",\"enabled\":\"SECRET\"}}\n\
             {{\"username\":\"u\\u0007\",\"package\":\"web\",\"password\":\"SECRET\"}}\n\
             {{\"username\":\"u1\",\"package\":\"web\",\"password\":\"SECRET\"}}\r\n\
             [\"SECRET\"]\n\
             {{\"username\":\"u6\",\"package\":\"web\",\"password_hash\":123456}}\n\
             {{\"username\":\"u7\",\"package\":\"web\",\"password\":\"ok\"}}"
        );
        let report = users
            .import(input.as_bytes(), ImportFormat::JsonLines)
            .unwrap();
        let lines: Vec<usize> = report.errors.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [5, 6, 7, 8, 9, 10, 11, 12, 13], "{report:?}");
        assert_eq!(report.imported, 3);
        assert_eq!(report.skipped_existing, 2);
        for (_, msg) in &report.errors {
            assert!(!msg.contains("SECRET") && !msg.contains("123456"), "{msg}");
        }
        assert!(report.errors[0].1.contains("`$1$` is not accepted"));
        assert!(report.errors[2].1.contains("`package` is missing"));
        assert_eq!(report.errors[3].1, "already exists");
        assert!(report.errors[5].1.starts_with("username"));
        assert_eq!(users.get("u1", "web").unwrap().unwrap().hash, argon);
        let u2 = users.get("u2", "web").unwrap().unwrap();
        assert!(!u2.enabled);
        assert!(password::verify("plain-secret", &u2.hash));
        assert!(is_ok(&users.verify("u7", "web", "ok").unwrap()));
        // The existing account was not overwritten.
        assert!(is_ok(&users.verify("existing", "web", "pw").unwrap()));
    }

    #[test]
    fn import_csv_with_unquoted_and_quoted_phc_hashes() {
        let (users, _) = setup();
        let a1 = password::hash("one").unwrap();
        let a2 = password::hash("two").unwrap();
        let bc = bcrypt::hash("three", 4).unwrap();
        assert!(a1.contains(','), "argon2 PHC params contain commas");
        let input = format!(
            "\u{feff}username,package,password_hash,enabled\n\
             u1,web,{a1},true\n\
             \"u,2\",web,\"{a2}\",no\n\
             # comment\n\
             u3, web ,{bc},\n\
             u4,web,$5$SECRET,true\n\
             u5,web\n\
             u6,web,{a1},maybe\n\
             u1,web,{a2},true\n\
             u7,web,\"{a1}\",true,extra\n\
             u8,web,\"{a1}"
        );
        let report = users.import(input.as_bytes(), ImportFormat::Csv).unwrap();
        let lines: Vec<usize> = report.errors.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [6, 7, 8, 9, 10, 11], "{report:?}");
        assert_eq!(report.imported, 3);
        assert_eq!(report.skipped_existing, 1);
        for (_, msg) in &report.errors {
            assert!(
                !msg.contains("SECRET") && !msg.contains("argon2id$v"),
                "{msg}"
            );
        }
        assert!(is_ok(&users.verify("u1", "web", "one").unwrap()));
        assert_eq!(
            users.verify("u,2", "web", "two").unwrap(),
            Verification::Disabled
        );
        let u2 = users.get("u,2", "web").unwrap().unwrap();
        assert!(password::verify("two", &u2.hash));
        assert!(is_ok(&users.verify("u3", "web", "three").unwrap()));

        // Columns in another order, plain passwords.
        let input = "password,PACKAGE,username\nsecret,with,commas,api,frank\n";
        let report = users.import(input.as_bytes(), ImportFormat::Csv).unwrap();
        assert_eq!((report.imported, report.errors.len()), (1, 0), "{report:?}");
        assert!(is_ok(
            &users.verify("frank", "api", "secret,with,commas").unwrap()
        ));
    }

    #[test]
    fn import_csv_header_problems_are_errors() {
        let (users, _) = setup();
        for input in [
            "user,package,password_hash\nu,web,x\n",
            "username,package\n",
            "username,package,password_hash,email\n",
            "# only a comment\n\n",
        ] {
            let err = users
                .import(input.as_bytes(), ImportFormat::Csv)
                .unwrap_err();
            assert!(matches!(err, UserError::BadInput(_)), "{input:?}: {err}");
        }
    }

    #[test]
    fn import_format_from_path() {
        let f = |p: &str| ImportFormat::from_path(Path::new(p));
        assert_eq!(f("users.jsonl"), Some(ImportFormat::JsonLines));
        assert_eq!(f("users.NDJSON"), Some(ImportFormat::JsonLines));
        assert_eq!(f("dir/users.json"), Some(ImportFormat::JsonLines));
        assert_eq!(f("users.csv"), Some(ImportFormat::Csv));
        assert_eq!(f("users.txt"), None);
        assert_eq!(f("users"), None);
    }

    #[test]
    fn changes_to_unknown_users_are_not_found() {
        let (users, clock) = setup();
        assert!(matches!(
            users.set_password("ghost", "web", "pw"),
            Err(UserError::NotFound { .. })
        ));
        assert!(matches!(
            users.set_enabled("ghost", "web", false),
            Err(UserError::NotFound { .. })
        ));
        assert!(matches!(
            users.remove("ghost", "web"),
            Err(UserError::NotFound { .. })
        ));
        assert!(matches!(
            users.unlock("ghost", "web"),
            Err(UserError::NotFound { .. })
        ));
        let err = users.remove("ghost", "web").unwrap_err().to_string();
        assert!(
            err.contains("\"ghost\"") && err.contains("\"web\""),
            "{err}"
        );

        users.add("gina", "web", "old").unwrap();
        let created = clock.now();
        clock.advance(chrono::Duration::minutes(5));
        let new_hash = users.set_password("GINA", "web", "new").unwrap();
        let g = users.get("gina", "web").unwrap().unwrap();
        assert_eq!(g.hash, new_hash);
        assert_eq!((g.created_at, g.updated_at), (created, clock.now()));
        assert_eq!(
            users.verify("gina", "web", "old").unwrap(),
            Verification::Invalid
        );
        assert!(is_ok(&users.verify("gina", "web", "new").unwrap()));
        assert!(matches!(
            users.set_password("gina", "web", ""),
            Err(UserError::BadInput(m)) if m == "new password must not be empty"
        ));
        users.remove("Gina", "web").unwrap();
        assert!(users.get("gina", "web").unwrap().is_none());
        assert_eq!(
            users.verify("gina", "web", "new").unwrap(),
            Verification::Invalid
        );
    }

    #[test]
    fn csv_splitting() {
        assert_eq!(split_csv("a,b,,c").unwrap(), ["a", "b", "", "c"]);
        assert_eq!(split_csv("\"a,\"\"b\"\"\",c").unwrap(), ["a,\"b\"", "c"]);
        assert_eq!(split_csv("\"\"").unwrap(), [""]);
        assert_eq!(split_csv("a,").unwrap(), ["a", ""]);
        assert!(split_csv("\"open").is_err());
        assert!(split_csv("\"a\"b").is_err());
    }
}
