//! Removing what has aged out, everywhere at once: cached tokens, finished and failed sync
//! items, expired sessions and old login-log entries, then one flush.
//!
//! The `cleanup` command and anything else that wants the same sweep call [`run`]; the command
//! only prints the [`Removed`] counts.

use crate::auth::Auth;
use crate::store::StoreError;
use crate::sync_queue::QueueError;

/// Why a sweep stopped part way (what was removed before stays removed).
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// A database error in the token cache, the sessions or the login log.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A database error in the sync queue.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// The ages after which things are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ages {
    /// Cached tokens obtained more than this many hours ago.
    pub token_hours: u64,
    /// Completed and superseded sync items finished more than this many days ago.
    pub sync_days: u64,
    /// Failed sync items that failed more than this many days ago.
    pub failed_days: u64,
}

/// How many of each were removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Cached tokens.
    pub tokens: usize,
    /// Completed and superseded sync items.
    pub syncs: usize,
    /// Failed sync items.
    pub failed_syncs: usize,
    /// Expired sessions.
    pub sessions: usize,
    /// Login-log entries past their keep time.
    pub auth_events: usize,
}

/// Removes everything older than `ages` (sessions and the login log by their own expiry), and
/// flushes, so that what is reported removed stays removed.
///
/// # Errors
///
/// [`CleanupError`] on a database error; the sweep stops there.
pub fn run(auth: &Auth, ages: Ages) -> Result<Removed, CleanupError> {
    let client = auth.client();
    let removed = Removed {
        tokens: client.cleanup_expired_tokens(ages.token_hours)?,
        syncs: client.cleanup_completed_syncs(ages.sync_days)?,
        failed_syncs: client.cleanup_failed_syncs(ages.failed_days)?,
        sessions: auth.sessions().cleanup()?,
        auth_events: auth.events().cleanup()?,
    };
    client.store().flush()?;
    Ok(removed)
}
