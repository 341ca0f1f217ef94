//! One sync cycle: replay queued changes against Keycloak, in queue order.
//!
//! Outcomes per item, following the classification in [`crate::keycloak`]:
//! - applied → `completed`, secret wiped;
//! - Keycloak refused for good (unknown user, password policy, other 4xx) → `failed` with
//!   Keycloak's reason, secret wiped;
//! - Keycloak refused for a passing reason (409, 423, …) → attempt counted, retried after an
//!   exponential, jittered backoff; `failed` after [`MAX_ATTEMPTS`];
//! - Keycloak unreachable (or circuit open) → the item and the rest of the batch go back to
//!   `pending` untouched: an outage never moves anything toward `failed`;
//! - admin credentials refused → the queue is *blocked* (the reason is kept for `status`), items
//!   untouched; each later cycle checks the admin login first and unblocks when it works.

use crate::client::{CallError, ClientError, ResilientClient};
use crate::keycloak::{KcError, Rejection};
use crate::sync_queue::{Claimed, SyncData};
use serde::Serialize;

/// Meta key holding the reason the queue is blocked.
pub const BLOCKED_KEY: &str = "queue_blocked";
/// Keycloak-answered passing errors an item may collect before it fails for good.
pub const MAX_ATTEMPTS: u32 = 5;

/// What a cycle did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SyncReport {
    /// Items Keycloak dealt with (completed + failed + retried).
    pub processed: usize,
    /// Applied in Keycloak.
    pub completed: usize,
    /// Refused for good.
    pub failed: usize,
    /// Refused for a passing reason; will be retried.
    pub retried: usize,
    /// Claimed but put back untouched (outage, block, shutdown).
    pub released: usize,
    /// Why the cycle did nothing or stopped early.
    pub stopped: Option<String>,
}

/// Runs one cycle of at most `batch` items; `stop` is checked between items.
pub fn run(client: &ResilientClient, batch: usize, stop: &dyn Fn() -> bool) -> Result<SyncReport, ClientError> {
    let mut report = SyncReport::default();
    let queue = client.queue();
    if queue.pending_count() == 0 {
        return Ok(report);
    }
    if !client.is_available() {
        report.stopped = Some(format!("Keycloak unavailable: {}", client.unavailable_reason()));
        return Ok(report);
    }
    if let Some(reason) = client.queue_blocked() {
        let realm = client.config().keycloak.realm.clone();
        match client.call(|kc| kc.admin_token(&realm).map(|_| ())) {
            Ok(()) => {
                log::info!("admin credentials accepted again: sync queue unblocked (was: {reason})");
                client.store().remove_meta(BLOCKED_KEY)?;
            }
            Err(CallError::Keycloak(KcError::Misconfigured(m))) => {
                client.store().put_meta(BLOCKED_KEY, &m)?;
                report.stopped = Some(format!("queue blocked: {m}"));
                return Ok(report);
            }
            Err(e) => {
                report.stopped = Some(format!("Keycloak unavailable: {e}"));
                return Ok(report);
            }
        }
    }

    let mut claimed = queue.claim(batch)?.into_iter();
    while let Some(item) = claimed.next() {
        if stop() {
            report.stopped = Some("shutting down".into());
            release(client, item, claimed, &mut report, None)?;
            break;
        }
        let id = item.item.sync_id;
        let what = format!("{} for {}/{}", item.item.sync_type.as_str(), item.item.username, item.item.package);
        match apply(client, &item) {
            Ok(()) => {
                queue.complete(id)?;
                client.store().bump_counter(crate::metrics::SYNC_COMPLETED_COUNTER, 1)?;
                log::info!("sync {id}: {what} applied in Keycloak");
                report.completed += 1;
            }
            Err(CallError::Keycloak(KcError::Rejected(r @ Rejection::Transient { .. }))) => {
                let attempts = item.item.attempts + 1;
                if attempts >= MAX_ATTEMPTS {
                    queue.fail(id, &format!("{r} (after {attempts} attempts)"))?;
                    client.store().bump_counter(crate::metrics::SYNC_FAILED_COUNTER, 1)?;
                    log::warn!("sync {id}: {what} failed after {attempts} attempts: {r}");
                    report.failed += 1;
                } else {
                    let delay = client.backoff_delay(attempts);
                    queue.retry(id, &r.to_string(), delay)?;
                    log::info!("sync {id}: {what} refused for now ({r}); retry in {}s", delay.as_secs());
                    report.retried += 1;
                }
            }
            Err(CallError::Keycloak(KcError::Rejected(r))) => {
                queue.fail(id, &r.to_string())?;
                client.store().bump_counter(crate::metrics::SYNC_FAILED_COUNTER, 1)?;
                log::warn!("sync {id}: {what} failed: {r}");
                report.failed += 1;
            }
            Err(CallError::Keycloak(KcError::Misconfigured(m))) => {
                log::error!("sync queue blocked: {m}");
                client.store().put_meta(BLOCKED_KEY, &m)?;
                report.stopped = Some(format!("queue blocked: {m}"));
                release(client, item, claimed, &mut report, Some("queue blocked"))?;
                break;
            }
            Err(e) => {
                report.stopped = Some(format!("Keycloak unavailable: {e}"));
                release(client, item, claimed, &mut report, Some("Keycloak unavailable"))?;
                break;
            }
        }
    }
    report.processed = report.completed + report.failed + report.retried;
    client.store().flush()?;
    Ok(report)
}

fn apply(client: &ResilientClient, item: &Claimed) -> Result<(), CallError> {
    let realm = client.config().package(&item.item.package).realm;
    match &item.data {
        SyncData::PasswordChange(pc) => {
            let user = client
                .call(|kc| kc.find_user(&realm, &item.item.username))?
                .ok_or(CallError::Keycloak(KcError::Rejected(Rejection::UserNotFound)))?;
            client.call(|kc| kc.reset_password(&realm, &user.id, &pc.password))
        }
    }
}

fn release(
    client: &ResilientClient,
    first: Claimed,
    rest: impl Iterator<Item = Claimed>,
    report: &mut SyncReport,
    reason: Option<&str>,
) -> Result<(), ClientError> {
    for item in std::iter::once(first).chain(rest) {
        client.queue().release(item.item.sync_id, reason)?;
        report.released += 1;
    }
    Ok(())
}
