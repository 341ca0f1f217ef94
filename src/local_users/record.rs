//! The stored shape of a local account, and the two pieces of it other writers need: a new
//! password as a change to apply inside their own transaction (`passwd`), and the hash in a
//! record (the token cache's "same password still?" check).
//!
//! Layout 2 added what Keycloak decided about the account (its Keycloak id, who disabled it, a
//! password Keycloak refused); layout 1 records are read as "not linked, disabled here".

use crate::lockout::LockoutState;
use crate::store::codec::{self, CodecError};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The sled tree the accounts live in (named in decode errors).
pub(super) const TREE: &str = "local_users";

/// The record layout written now.
const LAYOUT: u8 = 2;

/// Who made an account's last enable/disable decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// An administrator here (`user disable`), or an import.
    Local,
    /// Keycloak (an "account disabled" answer at login, or a reconcile): Keycloak may also
    /// enable it again.
    Keycloak,
}

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
    /// The user's id in Keycloak, once seen (a login's token, a reconcile): only a linked
    /// account is disabled when Keycloak no longer has it.
    pub keycloak_id: Option<String>,
    /// Who disabled the account (meaningful while `enabled` is false).
    pub disabled_by: Option<Origin>,
    /// Keycloak refused this password while it still has the user, and no change of ours
    /// explains it: the password was changed centrally. The stale hash no longer logs in, here
    /// or offline, until a password Keycloak accepts replaces it.
    pub password_stale: bool,
}

/// Layout 1: before the Keycloak link.
#[derive(Deserialize)]
struct LocalUserV1 {
    username: String,
    package: String,
    hash: String,
    enabled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    lockout: LockoutState,
}

/// Encodes an account record in the current layout.
pub(super) fn encode(user: &LocalUser) -> Result<Vec<u8>, StoreError> {
    codec::encode_versioned(LAYOUT, user).map_err(corrupt)
}

/// Decodes an account record of any layout this build knows.
pub(crate) fn decode(bytes: &[u8]) -> Result<LocalUser, StoreError> {
    match codec::split(bytes).map_err(corrupt)? {
        (LAYOUT, body) => codec::decode_body(body).map_err(corrupt),
        (1, body) => {
            let v1: LocalUserV1 = codec::decode_body(body).map_err(corrupt)?;
            Ok(LocalUser {
                disabled_by: (!v1.enabled).then_some(Origin::Local),
                username: v1.username,
                package: v1.package,
                hash: v1.hash,
                enabled: v1.enabled,
                created_at: v1.created_at,
                updated_at: v1.updated_at,
                lockout: v1.lockout,
                keycloak_id: None,
                password_stale: false,
            })
        }
        (found, _) => Err(corrupt(CodecError::Version { found })),
    }
}

fn corrupt(cause: CodecError) -> StoreError {
    StoreError::Corrupt { tree: TREE, cause }
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
            .field("keycloak_id", &self.keycloak_id)
            .field("disabled_by", &self.disabled_by)
            .field("password_stale", &self.password_stale)
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
        let mut user = decode(current)?;
        user.hash = self.hash.clone();
        user.updated_at = self.at;
        user.password_stale = false;
        user.lockout.record_success();
        encode(&user)
    }
}

/// The password hash in a stored account record: for a writer that checks, inside its own
/// transaction, that the password did not change since it read it (see
/// [`crate::token_cache::Verifier::Hash`]).
///
/// # Errors
/// [`StoreError::Corrupt`] when `record` does not decode.
pub(crate) fn hash_in_record(record: &[u8]) -> Result<String, StoreError> {
    let user = decode(record)?;
    Ok(user.hash)
}
