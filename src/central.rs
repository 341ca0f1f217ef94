//! What Keycloak's answer about a user means for the local store: the table of the README's
//! "Consistency" section as one pure function, so that every case is tested without a server.
//!
//! Local auth is primary for *availability*; Keycloak is the authority for *central decisions*
//! whenever it can be asked: a password it accepts is adopted, one it refuses (while it still
//! has the user) stops working here, an account it disables or deletes is disabled here. A local
//! change still waiting in the queue is newer than anything Keycloak holds, so it wins.
//! `keycloak.authority.*: local` turns each decision back into "logged and counted only".

use crate::config::{Authority, ConsistencyConfig};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the local store said about the login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalAnswer {
    /// The password is right and the account usable.
    Accepted,
    /// Wrong password (or a stale one) for an account that exists and is enabled.
    Refused,
    /// No such account here.
    Unknown,
    /// The account is disabled, and Keycloak is the one that disabled it.
    DisabledByKeycloak,
}

/// What the admin API says about a user whose password Keycloak refused: a deleted user, a
/// brute-force lock and a changed password all look alike at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The user exists.
    Exists {
        /// Disabled in Keycloak.
        enabled: bool,
        /// Temporarily or permanently locked by Keycloak's brute-force detection.
        locked: bool,
    },
    /// Keycloak has no such user.
    Gone,
    /// The admin API could not be asked or did not answer (no admin client, an outage).
    Unknown,
}

/// Keycloak's answer to the login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CentralAnswer {
    /// The password grant succeeded.
    Accepted,
    /// "Invalid user credentials", with what the admin API says about the user.
    InvalidCredentials(Lookup),
    /// "Account disabled".
    AccountDisabled,
    /// Anything else: not asked, unreachable, a required action ("account is not fully set
    /// up"), a misconfigured client. Not a central decision about the user.
    NoDecision,
}

/// What the login does, locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The login goes on as the local answer says; nothing changes here.
    AsLocal,
    /// Keycloak's password becomes the local one (new hash); the login succeeds.
    AdoptPassword,
    /// A local account is created with this password; the login succeeds.
    Provision,
    /// The local password is stale (changed centrally): it stops working; the login is refused.
    MarkStale,
    /// The account is disabled here (source: Keycloak), its sessions and token dropped; the
    /// login is refused.
    Disable,
    /// The account Keycloak had disabled is enabled again, with this password; the login
    /// succeeds.
    EnableAndAdopt,
    /// Keycloak refused a user only it could have vouched for: the login is refused.
    Refuse,
}

/// Whether a login the local store did not accept should still ask Keycloak: only where its
/// answer could change the outcome.
pub fn asks_keycloak(local: LocalAnswer, config: &ConsistencyConfig) -> bool {
    match local {
        LocalAnswer::Accepted => true,
        LocalAnswer::Refused => config.passwords == Authority::Keycloak,
        LocalAnswer::Unknown => config.provision,
        LocalAnswer::DisabledByKeycloak => config.accounts == Authority::Keycloak,
    }
}

/// The decision for one login. `pending_change`: a local change of this user waits in the
/// queue (it is newer than Keycloak's password); `linked`: the account has a Keycloak id (only
/// then does "gone" mean deleted there rather than "never there").
pub fn decide(
    local: LocalAnswer,
    central: &CentralAnswer,
    config: &ConsistencyConfig,
    pending_change: bool,
    linked: bool,
) -> Decision {
    let passwords = config.passwords == Authority::Keycloak;
    let accounts = config.accounts == Authority::Keycloak;
    match (local, central) {
        (LocalAnswer::Accepted, CentralAnswer::Accepted | CentralAnswer::NoDecision) => {
            Decision::AsLocal
        }
        (LocalAnswer::Accepted, CentralAnswer::AccountDisabled) if accounts => Decision::Disable,
        (LocalAnswer::Accepted, CentralAnswer::AccountDisabled) => Decision::AsLocal,
        (LocalAnswer::Accepted, CentralAnswer::InvalidCredentials(lookup)) => match lookup {
            // Keycloak still has the password our queued change replaces.
            _ if pending_change => Decision::AsLocal,
            Lookup::Exists { locked: true, .. } => Decision::AsLocal,
            Lookup::Exists { enabled: false, .. } if accounts => Decision::Disable,
            Lookup::Exists { enabled: true, .. } if passwords => Decision::MarkStale,
            Lookup::Gone if linked && accounts => Decision::Disable,
            _ => Decision::AsLocal,
        },
        (LocalAnswer::Refused, CentralAnswer::Accepted) if passwords && !pending_change => {
            Decision::AdoptPassword
        }
        (LocalAnswer::Unknown, CentralAnswer::Accepted) if config.provision => Decision::Provision,
        (LocalAnswer::DisabledByKeycloak, CentralAnswer::Accepted)
            if accounts && !pending_change =>
        {
            Decision::EnableAndAdopt
        }
        (LocalAnswer::Refused | LocalAnswer::Unknown | LocalAnswer::DisabledByKeycloak, _) => {
            Decision::Refuse
        }
    }
}

/// What a reconcile with Keycloak's user list found and did (kept in `meta` as
/// `last_reconcile`; see `crate::reconcile`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// When it ran.
    pub at: Option<DateTime<Utc>>,
    /// Local accounts compared with a complete listing of their realm.
    pub checked: usize,
    /// Disabled here: disabled in Keycloak.
    pub disabled: usize,
    /// Enabled again here: Keycloak had disabled them and enabled them again.
    pub re_enabled: usize,
    /// Linked accounts Keycloak no longer has (disabled here where Keycloak decides accounts).
    pub gone: usize,
    /// Keycloak users with no local account (they are provisioned at their first login).
    pub only_in_keycloak: usize,
    /// Local accounts Keycloak never had (never linked): local-only users, left alone.
    pub only_here: usize,
    /// Accounts linked to their Keycloak id by this run.
    pub linked: usize,
    /// Why it stopped before the end (Keycloak unavailable, misconfigured), if it did.
    pub stopped: Option<String>,
    /// When a reconcile last went through to the end (this one, or an earlier one when this
    /// one stopped).
    pub last_complete: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(passwords: Authority, accounts: Authority, provision: bool) -> ConsistencyConfig {
        ConsistencyConfig {
            passwords,
            accounts,
            provision,
            manage_users: false,
            reconcile_interval: Duration::ZERO,
        }
    }

    const KC: Authority = Authority::Keycloak;
    const LOCAL: Authority = Authority::Local;
    const THERE: Lookup = Lookup::Exists {
        enabled: true,
        locked: false,
    };

    #[test]
    fn keycloak_decides_passwords_accounts_and_provisioning_by_default() {
        let c = config(KC, KC, true);
        let d = |local, central: CentralAnswer, pending, linked| {
            decide(local, &central, &c, pending, linked)
        };
        use CentralAnswer as C;
        use LocalAnswer as L;
        assert_eq!(d(L::Accepted, C::Accepted, false, true), Decision::AsLocal);
        assert_eq!(
            d(L::Accepted, C::NoDecision, false, true),
            Decision::AsLocal
        );
        assert_eq!(
            d(L::Accepted, C::AccountDisabled, false, false),
            Decision::Disable
        );
        assert_eq!(
            d(L::Accepted, C::InvalidCredentials(THERE), false, false),
            Decision::MarkStale
        );
        assert_eq!(
            d(L::Refused, C::Accepted, false, false),
            Decision::AdoptPassword
        );
        assert_eq!(
            d(L::Unknown, C::Accepted, false, false),
            Decision::Provision
        );
        assert_eq!(
            d(L::DisabledByKeycloak, C::Accepted, false, true),
            Decision::EnableAndAdopt
        );
        assert_eq!(d(L::Refused, C::NoDecision, false, true), Decision::Refuse);
        assert_eq!(
            d(L::Unknown, C::AccountDisabled, false, false),
            Decision::Refuse
        );
        assert_eq!(
            d(L::DisabledByKeycloak, C::AccountDisabled, false, true),
            Decision::Refuse
        );
    }

    #[test]
    fn a_pending_local_change_is_newer_than_keycloaks_password() {
        let c = config(KC, KC, true);
        let stale = CentralAnswer::InvalidCredentials(THERE);
        assert_eq!(
            decide(LocalAnswer::Accepted, &stale, &c, true, true),
            Decision::AsLocal
        );
        // The old password, which Keycloak still accepts, is not adopted.
        assert_eq!(
            decide(
                LocalAnswer::Refused,
                &CentralAnswer::Accepted,
                &c,
                true,
                true
            ),
            Decision::Refuse
        );
        assert_eq!(
            decide(
                LocalAnswer::DisabledByKeycloak,
                &CentralAnswer::Accepted,
                &c,
                true,
                true
            ),
            Decision::Refuse
        );
    }

    #[test]
    fn a_lock_a_lookup_that_failed_or_a_user_never_linked_is_not_a_central_decision() {
        let c = config(KC, KC, true);
        let invalid = |lookup| CentralAnswer::InvalidCredentials(lookup);
        let locked = Lookup::Exists {
            enabled: true,
            locked: true,
        };
        for (lookup, linked, want) in [
            (locked, true, Decision::AsLocal),
            (Lookup::Unknown, true, Decision::AsLocal),
            (Lookup::Gone, false, Decision::AsLocal),
            (Lookup::Gone, true, Decision::Disable),
            (
                Lookup::Exists {
                    enabled: false,
                    locked: false,
                },
                false,
                Decision::Disable,
            ),
        ] {
            assert_eq!(
                decide(
                    LocalAnswer::Accepted,
                    &invalid(lookup.clone()),
                    &c,
                    false,
                    linked
                ),
                want,
                "{lookup:?} linked {linked}"
            );
        }
    }

    #[test]
    fn local_authority_only_logs_and_never_provisions_when_told_not_to() {
        let c = config(LOCAL, LOCAL, false);
        for (local, central) in [
            (LocalAnswer::Accepted, CentralAnswer::AccountDisabled),
            (
                LocalAnswer::Accepted,
                CentralAnswer::InvalidCredentials(THERE),
            ),
            (
                LocalAnswer::Accepted,
                CentralAnswer::InvalidCredentials(Lookup::Gone),
            ),
        ] {
            assert_eq!(decide(local, &central, &c, false, true), Decision::AsLocal);
        }
        for local in [
            LocalAnswer::Refused,
            LocalAnswer::Unknown,
            LocalAnswer::DisabledByKeycloak,
        ] {
            assert!(!asks_keycloak(local, &c), "{local:?}");
            assert_eq!(
                decide(local, &CentralAnswer::Accepted, &c, false, true),
                Decision::Refuse
            );
        }
        assert!(asks_keycloak(LocalAnswer::Accepted, &c));
        let kc = config(KC, KC, true);
        for local in [
            LocalAnswer::Refused,
            LocalAnswer::Unknown,
            LocalAnswer::DisabledByKeycloak,
        ] {
            assert!(asks_keycloak(local, &kc), "{local:?}");
        }
    }
}
