//! The user commands (`user add`, `disable`, `enable`, `remove`): the local store changes
//! first, and with `keycloak.manage_users` Keycloak hears of it — at once when it is usable,
//! else through the queue at the highest priority, in the order the changes were made.

use super::{queued, Auth, LoginError, PasswdResult};
use crate::account::Account;
use crate::local_users::UserError;
use crate::store::StoreError;
use crate::sync_queue::{LocalChange, NewUser, QueueError, SyncData, PRIORITY_HIGHEST};

impl Auth {
    /// Adds a local user; with `keycloak.manage_users`, also creates them in Keycloak (now when
    /// it is usable, else through the queue) with the same password and `profile`.
    ///
    /// The local account is written (and flushed) first, then the change for Keycloak: a crash
    /// in between leaves a local-only user, never a Keycloak user unknown here.
    pub fn add_user(
        &self,
        account: &Account,
        password: &str,
        profile: Profile,
    ) -> Result<Option<PasswdResult>, UserChangeError> {
        // Checked before anything is written; only where it will be sent.
        let new = match self.client.config().consistency.manage_users {
            true => Some(NewUser::new(
                password.to_string(),
                profile.email,
                profile.first_name,
                profile.last_name,
            )?),
            false => None,
        };
        self.users.add(account, password)?;
        match new {
            Some(new) => self.to_keycloak(account, SyncData::UserCreate(new)),
            None => Ok(None),
        }
    }

    /// Disables a local user and ends what they hold: sessions and the cached Keycloak token
    /// (which would otherwise still log them in offline through another front end); with
    /// `keycloak.manage_users`, disables them in Keycloak too. Returns the sessions ended.
    pub fn disable_user(
        &self,
        account: &Account,
    ) -> Result<(usize, Option<PasswdResult>), UserChangeError> {
        self.users.set_enabled(account, false)?;
        let ended = self.revoke(account)?;
        Ok((ended, self.to_keycloak(account, SyncData::UserDisable)?))
    }

    /// Enables a local user again; with `keycloak.manage_users`, in Keycloak too.
    pub fn enable_user(&self, account: &Account) -> Result<Option<PasswdResult>, UserChangeError> {
        self.users.set_enabled(account, true)?;
        self.to_keycloak(account, SyncData::UserEnable)
    }

    /// Removes a local user, their sessions and their cached token; `in_keycloak` (which needs
    /// `keycloak.manage_users`) deletes them from Keycloak too. The deletion is queued before
    /// the local account goes, so that a crash leaves it to be done, not forgotten.
    pub fn remove_user(
        &self,
        account: &Account,
        in_keycloak: bool,
    ) -> Result<(usize, Option<PasswdResult>), UserChangeError> {
        if in_keycloak && !self.client.config().consistency.manage_users {
            return Err(UserChangeError::NotManaged);
        }
        if self.users.get(account)?.is_none() {
            return Err(UserError::NotFound {
                user: account.user().to_string(),
                package: account.package().to_string(),
            }
            .into());
        }
        let sent = if in_keycloak {
            self.to_keycloak(account, SyncData::UserDelete)?
        } else {
            None
        };
        self.users.remove(account)?;
        Ok((self.revoke(account)?, sent))
    }

    /// With `keycloak.manage_users`, queues `data` for the account at the highest priority
    /// and, when Keycloak looks usable and nothing older of the user's waits, sends it at once
    /// through the replay's path; without it, nothing (`None`).
    fn to_keycloak(
        &self,
        account: &Account,
        data: SyncData,
    ) -> Result<Option<PasswdResult>, UserChangeError> {
        if !self.client.config().consistency.manage_users {
            return Ok(None);
        }
        // The record is there (just written or checked): the change only claims it.
        let keep = |current: &[u8]| Ok(current.to_vec());
        let local = LocalChange {
            key: account.key(),
            change: &keep,
            cached_token: None,
            claim: self.client.keycloak().should_try_keycloak(),
        };
        let enqueued =
            self.client
                .queue()
                .enqueue(account, data, PRIORITY_HIGHEST, Some(&local))?;
        let Some(claimed) = enqueued.claimed else {
            return Ok(Some(queued(enqueued.id)));
        };
        let sent = self.sync_now(account, claimed, None);
        self.client.store().flush()?;
        Ok(Some(sent?))
    }
}

/// The profile fields a user created in Keycloak gets (`user add --email …`); the realm's user
/// profile may require them (Keycloak 26 creates the user anyway, who then gets "Account is
/// not fully set up" at login until they are set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// The email address.
    pub email: Option<String>,
    /// The first name.
    pub first_name: Option<String>,
    /// The last name.
    pub last_name: Option<String>,
}

/// Why a user command did nothing (or only its local part).
#[derive(Debug, thiserror::Error)]
pub enum UserChangeError {
    /// The local user store refused it.
    #[error(transparent)]
    User(#[from] UserError),
    /// Queueing the change for Keycloak failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `--in-keycloak` without `keycloak.manage_users: true`.
    #[error("removing a user in Keycloak needs keycloak.manage_users: true in the config")]
    NotManaged,
}

impl From<LoginError> for UserChangeError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::User(e) => UserChangeError::User(e),
            LoginError::Store(e) => UserChangeError::Store(e),
        }
    }
}
