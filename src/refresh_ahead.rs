//! Refreshing cached tokens before they expire, so that the token handed out when an outage
//! starts is as fresh as it can be (a Keycloak access token lives 5 minutes by default).
//!
//! While Keycloak may be tried, `start` looks at the users with a live session: a cached
//! access token that expires within `service.refresh_ahead_seconds`, with a refresh token
//! still inside its own lifetime, is exchanged at Keycloak (the refresh grant through the
//! breaker, [`ResilientClient::refresh`]). The new refresh token replaces the old one
//! (rotation honoured); a refresh Keycloak refuses (session ended, user disabled) drops the
//! entry, since its tokens no longer stand for a session. At most
//! `service.refresh_per_minute` refreshes a minute, soonest-expiring first.

use crate::account::Account;
use crate::auth::Auth;
use crate::client::AuthError;
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

/// How often the service looks for tokens due when nothing was refreshed.
pub const LOOK_EVERY: Duration = Duration::from_secs(5);

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshReport {
    /// Entries refreshed.
    pub refreshed: usize,
    /// Entries dropped because Keycloak refused their refresh token.
    pub dropped: usize,
    /// Why the round stopped early (Keycloak away or misconfigured), if it did.
    pub stopped: Option<String>,
}

/// The accounts with a live session whose cached access token expires before `before` and
/// whose refresh token (when its lifetime is known) has not expired at `now`, soonest first.
///
/// # Errors
///
/// [`StoreError`] when the database fails.
pub fn due(
    auth: &Auth,
    now: DateTime<Utc>,
    before: DateTime<Utc>,
) -> Result<Vec<Account>, StoreError> {
    let mut due = Vec::new();
    for account in auth.sessions().live_accounts()? {
        let Some(entry) = auth.client().tokens().entry(&account)? else {
            continue;
        };
        let refreshable = entry.refresh_expires_at.is_none_or(|t| t > now);
        if entry.expires_at <= before && refreshable {
            due.push((entry.expires_at, account));
        }
    }
    due.sort_by_key(|(expires, _)| *expires);
    Ok(due.into_iter().map(|(_, a)| a).collect())
}

/// Refreshes at most `max` of the tokens [`due`] within `ahead`.
///
/// # Errors
///
/// [`StoreError`] when the database fails.
pub fn run(auth: &Auth, ahead: Duration, max: usize) -> Result<RefreshReport, StoreError> {
    let client = auth.client();
    let now = client.clock().now();
    let before = now + chrono::Duration::from_std(ahead).unwrap_or(chrono::Duration::MAX);
    let mut report = RefreshReport::default();
    // Nothing to refresh with: the sessions are not even looked at.
    if !client.keycloak().should_try_keycloak() {
        report.stopped = Some(client.unavailable_reason());
        return Ok(report);
    }
    for account in due(auth, now, before)?.into_iter().take(max) {
        if !client.keycloak().should_try_keycloak() {
            report.stopped = Some(client.unavailable_reason());
            break;
        }
        match client.refresh(&account) {
            Ok(_) => report.refreshed += 1,
            Err(AuthError::Rejected(r)) => {
                if client.tokens().remove(&account)? {
                    report.dropped += 1;
                    log::info!(
                        "dropped cached token of {account}: Keycloak refused its refresh ({r})"
                    );
                }
            }
            // Dropped meanwhile (logout, disable): nothing to refresh.
            Err(AuthError::NoRefreshToken) => {}
            Err(AuthError::Store(e)) => return Err(e),
            Err(e) => {
                report.stopped = Some(e.to_string());
                break;
            }
        }
    }
    Ok(report)
}

/// The service's pacing of [`run`]: each refresh spends `60 s / refresh_per_minute` of the
/// budget, so the rate stays bounded however many sessions are due at once.
#[derive(Debug)]
pub struct RefreshAhead {
    next: Instant,
}

impl Default for RefreshAhead {
    fn default() -> Self {
        RefreshAhead {
            next: Instant::now(),
        }
    }
}

impl RefreshAhead {
    /// Runs a round when one is due; returns a line for the service's output when it did
    /// something.
    pub fn tick(&mut self, auth: &Auth) -> Option<String> {
        let s = &auth.client().config().service;
        if s.refresh_per_minute == 0 || s.refresh_ahead.is_zero() || Instant::now() < self.next {
            return None;
        }
        let spacing = Duration::from_secs(60) / s.refresh_per_minute;
        // One round may use what LOOK_EVERY is worth of the budget, at least one refresh.
        let max = (LOOK_EVERY.as_millis() / spacing.as_millis().max(1)).max(1) as usize;
        let report = match run(auth, s.refresh_ahead, max) {
            Ok(r) => r,
            Err(e) => {
                log::error!("refreshing cached tokens: {e}");
                self.next = Instant::now() + LOOK_EVERY;
                return None;
            }
        };
        let spent = spacing.saturating_mul((report.refreshed + report.dropped) as u32);
        self.next = Instant::now() + LOOK_EVERY.max(spent);
        if report.refreshed + report.dropped == 0 {
            return None;
        }
        Some(format!(
            "tokens: refreshed {} cached token(s) ahead of expiry, dropped {}{}",
            report.refreshed,
            report.dropped,
            report
                .stopped
                .map(|s| format!("; stopped: {s}"))
                .unwrap_or_default()
        ))
    }
}
