//! The whole status picture in one value: the engine's [`Status`] (Keycloak, circuit, mode,
//! queue, cache) and the local-authentication side (sessions, logins per mode in the last hour,
//! locked accounts, what Keycloak's decisions did here, the last reconcile).
//!
//! Assembled here so that the `status` command only renders it.

use crate::auth::Auth;
use crate::auth_events::ModeCounts;
use crate::central::ReconcileReport;
use crate::client::{ClientError, Status};
use crate::local_users::UserError;
use crate::store::meta::{Counter, MetaKey};
use crate::store::StoreError;
use chrono::{DateTime, Utc};

/// Why the picture could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum OverviewError {
    /// The engine's status (token cache or queue counts).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Sessions or the login log.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The local user store.
    #[error(transparent)]
    Users(#[from] UserError),
}

/// An account locked by failed logins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked {
    /// The username.
    pub user: String,
    /// The package.
    pub package: String,
    /// When the lock lifts by itself.
    pub until: DateTime<Utc>,
}

/// Keycloak's decisions applied here (the `central_total` counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CentralCounts {
    /// Passwords Keycloak accepted that became the local one.
    pub passwords_adopted: u64,
    /// Local passwords that went stale (changed in Keycloak).
    pub passwords_stale: u64,
    /// Accounts disabled because Keycloak disabled or deleted them.
    pub disabled: u64,
    /// Accounts enabled again because Keycloak did.
    pub enabled: u64,
    /// Accounts created for users only Keycloak knew.
    pub provisioned: u64,
}

/// The engine's status plus the local-authentication side.
#[derive(Debug, Clone)]
pub struct Overview {
    /// The original `get_status()` block.
    pub engine: Status,
    /// Sessions not yet expired.
    pub active_sessions: usize,
    /// Successful logins in the last hour, per auth mode.
    pub auth_modes_last_hour: ModeCounts,
    /// Accounts locked right now.
    pub locked_accounts: Vec<Locked>,
    /// What Keycloak's decisions did here, counted since the database was created.
    pub central: CentralCounts,
    /// Sync items still waiting to reach Keycloak (pending or in flight), per sync type.
    pub waiting_by_type: std::collections::BTreeMap<&'static str, usize>,
    /// The last reconcile with Keycloak's user list, if one ran.
    pub last_reconcile: Option<ReconcileReport>,
    /// Seconds since the oldest cached access token still inside the grace period was
    /// obtained from Keycloak (how stale a token handed out now could be); `None` when the
    /// cache holds none.
    pub oldest_cached_token_age_seconds: Option<i64>,
}

/// Assembles the picture (probing Keycloak if the last probe is stale).
///
/// # Errors
///
/// [`OverviewError`] on a database error.
pub fn gather(auth: &Auth) -> Result<Overview, OverviewError> {
    let engine = auth.client().get_status()?;
    let now = auth.client().clock().now();
    let oldest = auth.client().tokens().oldest_cached_at()?;
    let store = auth.client().store();
    let central = CentralCounts {
        passwords_adopted: store.counter(Counter::PasswordsAdopted)?,
        passwords_stale: store.counter(Counter::PasswordsStale)?,
        disabled: store.counter(Counter::CentralDisables)?,
        enabled: store.counter(Counter::CentralEnables)?,
        provisioned: store.counter(Counter::Provisioned)?,
    };
    let waiting_by_type = auth
        .client()
        .queue()
        .waiting_by_type()
        .map_err(ClientError::from)?
        .into_iter()
        .map(|(t, n)| (t.as_str(), n))
        .collect();
    Ok(Overview {
        central,
        waiting_by_type,
        last_reconcile: store.get_meta(MetaKey::LastReconcile)?,
        oldest_cached_token_age_seconds: oldest.map(|t| (now - t).num_seconds().max(0)),
        active_sessions: auth.sessions().active_count()?,
        auth_modes_last_hour: auth.modes_last_hour()?,
        locked_accounts: auth
            .users()
            .locked()?
            .into_iter()
            .map(|(user, package, until)| Locked {
                user,
                package,
                until,
            })
            .collect(),
        engine,
    })
}
