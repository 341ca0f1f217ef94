//! The stored shape of a local account, and the two pieces of it other writers need: a new
//! password as a change to apply inside their own transaction (`passwd`), and the hash in a
//! record (the token cache's "same password still?" check).

use crate::lockout::LockoutState;
use crate::store::{self, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The sled tree the accounts live in (named in decode errors).
pub(super) const TREE: &str = "local_users";

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

/// A new password for an account, hashed, to be written by the caller's transaction
/// (see [`LocalUsers::prepare_password`]). `Debug` leaves out the hash.
pub struct PasswordChangeRecord {
    /// The account's key in `local_users`.
    pub key: Vec<u8>,
    /// The new argon2id hash (also the token cache's new verifier).
    pub hash: String,
    /// When the change was made.
    pub(super) at: DateTime<Utc>,
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
