//! One sync cycle: replay queued changes against Keycloak, in queue order.
//!
//! Outcomes per item, following the classification in [`crate::keycloak`]:
//! - applied → `completed`, secret wiped;
//! - Keycloak refused for good (unknown user, password policy, other 4xx) → `failed` with
//!   Keycloak's reason, its secret kept sealed until an operator retries (`queue retry`) or
//!   removes it (`queue remove`, or the failed-item cleanup);
//! - Keycloak refused for a passing reason (409, 423, …) → attempt counted, retried after an
//!   exponential, jittered backoff; `failed` after [`MAX_ATTEMPTS`];
//! - Keycloak unreachable (or circuit open) → the item and the rest of the batch go back to
//!   `pending` untouched: an outage never moves anything toward `failed`;
//! - admin credentials refused → the queue is *blocked* (the reason is kept for `status`), items
//!   untouched, cached admin tokens forgotten; each later cycle first makes a real admin request
//!   (a user lookup, with a new admin token) and unblocks only when Keycloak accepts it.
//!
//! Exactly once, across crashes: before a change is sent, the item records (and flushes) what
//! Keycloak said the user's password credential `createdDate` was; an item found with that
//! mark after a crash is checked against Keycloak first and completed without sending when the
//! date has moved (see [`crate::sync_queue::Applying`]).
//!
//! Whatever ends a cycle — the last item, a stop request, an outage, or an error of our own
//! (the database) — every claimed item not yet finished goes back to `pending` before `run`
//! returns: nothing is left `processing` until the next start.

use crate::backoff::Backoff;
use crate::config::Config;
use crate::keycloak::guard::{CallError, GuardedKeycloak};
use crate::keycloak::{KcError, KeycloakClient, Rejection};
use crate::local_users;
use crate::store::meta::MetaKey;
use crate::store::Store;
use crate::sync_queue::{Claimed, QueueError, SyncData, SyncQueue};
use rand::{rngs::StdRng, SeedableRng};
use serde::Serialize;
use std::sync::Mutex;

/// Keycloak-answered passing errors an item may collect before it fails for good.
pub const MAX_ATTEMPTS: u32 = 5;
/// The username the blocked-queue check looks up: a read-only admin request needing the same
/// rights as a sync. Found or not, an answer proves the admin client works again.
const UNBLOCK_PROBE_USER: &str = "keycloak-resilient-unblock-check";

/// What a cycle did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SyncReport {
    /// Items Keycloak dealt with (completed + failed + retried).
    pub processed: usize,
    /// Applied in Keycloak (including `already_applied`).
    pub completed: usize,
    /// Of those, changes a crash interrupted after they were sent, found applied in Keycloak
    /// and therefore not sent again.
    pub already_applied: usize,
    /// Refused for good.
    pub failed: usize,
    /// Refused for a passing reason; will be retried.
    pub retried: usize,
    /// Claimed but put back untouched (outage, block, shutdown, error).
    pub released: usize,
    /// Why the cycle did nothing or stopped early.
    pub stopped: Option<String>,
}

/// What a sync cycle works with — the pieces it needs, not the client that owns them.
#[derive(Clone, Copy)]
pub struct Cycle<'a> {
    /// The one way to call Keycloak.
    pub keycloak: &'a GuardedKeycloak,
    /// The queue replayed.
    pub queue: &'a SyncQueue,
    /// Where the queue block is recorded.
    pub store: &'a Store,
    /// Realms per package.
    pub config: &'a Config,
    /// Retry delays.
    pub retries: &'a Retries,
}

/// The retry delays of items Keycloak refused for a passing reason: the backoff and its
/// random source (jitter).
#[derive(Debug)]
pub struct Retries {
    /// The delays.
    backoff: Backoff,
    /// Jitter; shared by every cycle of the process.
    rng: Mutex<StdRng>,
}

impl Default for Retries {
    fn default() -> Retries {
        Retries {
            backoff: Backoff::default(),
            rng: Mutex::new(StdRng::from_os_rng()),
        }
    }
}

impl Retries {
    /// The delay before retry number `attempt`.
    pub fn delay(&self, attempt: u32) -> std::time::Duration {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        self.backoff.delay(attempt, &mut *rng)
    }
}

/// Why the queue is blocked, if it is (an unreadable record is logged and reads as a block,
/// so nothing is replayed past a state we cannot read).
pub fn queue_blocked(store: &Store) -> Option<String> {
    store
        .get_meta::<String>(MetaKey::QueueBlocked)
        .unwrap_or_else(|e| {
            log::error!("queue block record unreadable: {e}");
            Some(format!("block record unreadable: {e}"))
        })
}

/// Runs one cycle of at most `batch` items; `stop` is checked between items.
///
/// # Errors
///
/// A database error ([`QueueError`]); the claimed items not yet finished are put back to
/// `pending` first (failures to do so are logged).
pub fn run(
    cycle: &Cycle<'_>,
    batch: usize,
    stop: &dyn Fn() -> bool,
) -> Result<SyncReport, QueueError> {
    let mut report = SyncReport::default();
    let queue = cycle.queue;
    if !queue.has_due()? {
        return Ok(report);
    }
    // Nobody waits for a cycle: its probe (perhaps the half-open trial) gets the full timeout.
    if !cycle.keycloak.available_within(cycle.keycloak.timeout()) {
        report.stopped = Some(format!(
            "Keycloak unavailable: {}",
            cycle.keycloak.unavailable_reason()
        ));
        return Ok(report);
    }
    if let Some(stopped) = check_block(cycle)? {
        report.stopped = Some(stopped);
        return Ok(report);
    }
    // In rounds: a claim takes one item per user (a user's changes go in order), so a user's
    // next change becomes claimable once the one before it is settled; within a round every
    // item is another user's, and they are sent side by side.
    let mut left = batch;
    while left > 0 {
        let claimed = queue.claim(left)?;
        let taken = claimed.len();
        if taken == 0 {
            break;
        }
        let round = replay_round(cycle, claimed, &mut report, stop);
        if let Some(e) = round.error {
            log::error!("sync cycle interrupted: {e}; putting its claimed items back");
            // Best effort, as for the item in hand, which its drop already put back.
            let _ = release_all(round.unsent.into_iter(), None, &mut report);
            return Err(e);
        }
        if let Some(reason) = round.ended {
            release_all(round.unsent.into_iter(), reason, &mut report)?;
            break;
        }
        left -= taken;
        if stop() {
            break;
        }
    }
    report.processed = report.completed + report.failed + report.retried;
    if report.stopped.is_none() && report.released == 0 && report.processed > 0 {
        let now = cycle.queue.now().timestamp();
        cycle.store.put_meta(MetaKey::LastSyncSuccess, &now)?;
    }
    cycle.store.flush()?;
    Ok(report)
}

/// When the queue is blocked, makes a real admin request (a user lookup, with a new admin
/// token) and unblocks it when Keycloak accepts it; returns why the cycle stops otherwise.
fn check_block(cycle: &Cycle<'_>) -> Result<Option<String>, QueueError> {
    let Some(reason) = queue_blocked(cycle.store) else {
        return Ok(None);
    };
    let realm = cycle.config.keycloak.realm.clone();
    // A real admin request with a new token: a cached token (taken before the block, or
    // before an operator's fix) would prove nothing.
    let check = cycle.keycloak.call(|kc| {
        kc.forget_admin_tokens();
        forgetting_on_refusal(kc, kc.find_user(&realm, UNBLOCK_PROBE_USER)).map(|_| ())
    });
    match check {
        Ok(()) => {
            log::info!("admin credentials accepted again: sync queue unblocked (was: {reason})");
            cycle.store.remove_meta(MetaKey::QueueBlocked)?;
            Ok(None)
        }
        Err(CallError::Keycloak(KcError::Misconfigured(m))) => {
            cycle.store.put_meta(MetaKey::QueueBlocked, &m)?;
            Ok(Some(format!("queue blocked: {m}")))
        }
        Err(e) => Ok(Some(format!("Keycloak unavailable: {e}"))),
    }
}

/// At most this many items are sent at once (to different users), and at most half of
/// `keycloak.max_concurrent_calls`, so that logins keep bulkhead slots while the queue drains.
const SEND_WORKERS: usize = 4;

/// How many items of a round are sent at once.
fn send_workers(config: &Config) -> usize {
    (config.keycloak.max_concurrent_calls / 2).clamp(1, SEND_WORKERS)
}

/// What became of a round.
struct Round<'q> {
    /// Claimed items not settled: the one that ended the round early, and those not sent.
    unsent: Vec<Claimed<'q>>,
    /// The round ended early (an outage, a block, a stop), with the reason to record on the
    /// items put back.
    ended: Option<Option<&'static str>>,
    /// Our database failed.
    error: Option<QueueError>,
}

/// What one item's replay came to.
enum Replayed<'q> {
    /// Settled (completed, failed or retried): what it adds to the report.
    Settled(SyncReport),
    /// It ends the round: handed back unsettled with the reason to record and why the cycle
    /// stopped.
    Ends(Box<Claimed<'q>>, Option<&'static str>, String),
    /// Our database failed (the item's drop put it back).
    Failed(QueueError),
}

/// Replays a round's claimed items — each another user's — on up to [`send_workers`]
/// threads, settling each, until one of them ends the round early: then no further item is
/// sent, the ones in flight are settled, and the rest come back unsent. `stop` is asked here,
/// between items, by this thread only.
fn replay_round<'q>(
    cycle: &Cycle<'_>,
    claimed: Vec<Claimed<'q>>,
    report: &mut SyncReport,
    stop: &dyn Fn() -> bool,
) -> Round<'q> {
    let workers = send_workers(cycle.config).min(claimed.len()).max(1);
    let mut round = Round {
        unsent: Vec::new(),
        ended: None,
        error: None,
    };
    let mut items = claimed.into_iter();
    let (jobs, job_queue) = std::sync::mpsc::channel::<Claimed<'q>>();
    let job_queue = Mutex::new(job_queue);
    // With what each item logged: a request served over the socket answers with its
    // warnings, whichever thread logged them.
    let (done, results) = std::sync::mpsc::channel::<(Replayed<'q>, String)>();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (job_queue, done) = (&job_queue, done.clone());
            scope.spawn(move || loop {
                let next = job_queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok(item) = next else { break };
                if done
                    .send(crate::logs::capture(|| replay_one(cycle, item)))
                    .is_err()
                {
                    break;
                }
            });
        }
        drop(done);
        let mut in_flight = 0;
        loop {
            while round.ended.is_none() && in_flight < workers {
                if stop() {
                    report.stopped = Some("shutting down".into());
                    round.ended = Some(None);
                    break;
                }
                let Some(item) = items.next() else { break };
                if let Err(back) = jobs.send(item) {
                    round.unsent.push(back.0);
                    break;
                }
                in_flight += 1;
            }
            if in_flight == 0 {
                break;
            }
            let Ok((result, logged)) = results.recv() else {
                break;
            };
            crate::logs::add_captured(&logged);
            in_flight -= 1;
            match result {
                Replayed::Settled(part) => add(report, &part),
                Replayed::Ends(item, reason, stopped) => {
                    round.unsent.push(*item);
                    report.stopped.get_or_insert(stopped);
                    round.ended.get_or_insert(reason);
                }
                Replayed::Failed(e) => {
                    round.error.get_or_insert(e);
                    round.ended.get_or_insert(None);
                }
            }
        }
        drop(jobs);
    });
    round.unsent.extend(items);
    round
}

/// Adds a settled item's counts to the cycle's report.
fn add(report: &mut SyncReport, part: &SyncReport) {
    report.completed += part.completed;
    report.already_applied += part.already_applied;
    report.failed += part.failed;
    report.retried += part.retried;
}

/// Sends one claimed item and settles it, or hands it back when it ends the round.
fn replay_one<'q>(cycle: &Cycle<'_>, item: Claimed<'q>) -> Replayed<'q> {
    let mut part = SyncReport::default();
    let outcome = match apply(cycle.keycloak, cycle.config, cycle.store, &item) {
        Ok(applied) => Ok(applied),
        Err(ApplyError::Call(e)) => Err(e),
        Err(ApplyError::Queue(e)) => return Replayed::Failed(e),
    };
    let settled = match outcome {
        Ok(applied) => settle_applied(item, applied, &mut part),
        Err(CallError::Keycloak(KcError::Rejected(r))) => {
            settle_refused(cycle.retries, item, &r, &mut part)
        }
        Err(CallError::Keycloak(KcError::Misconfigured(m))) => {
            log::error!("sync queue blocked: {m}");
            if let Err(e) = cycle.store.put_meta(MetaKey::QueueBlocked, &m) {
                return Replayed::Failed(e.into());
            }
            let stopped = format!("queue blocked: {m}");
            return Replayed::Ends(Box::new(item), Some("queue blocked"), stopped);
        }
        Err(e) => {
            let stopped = format!("Keycloak unavailable: {e}");
            return Replayed::Ends(Box::new(item), Some("Keycloak unavailable"), stopped);
        }
    };
    match settled {
        Ok(()) => Replayed::Settled(part),
        Err(e) => Replayed::Failed(e),
    }
}

/// What an item is about, for log lines.
fn describe(item: &Claimed<'_>) -> String {
    let i = item.item();
    format!("{} for {}/{}", i.sync_type.as_str(), i.username, i.package)
}

/// Keycloak applied the item (now, or before an interruption): completed.
fn settle_applied(
    item: Claimed<'_>,
    applied: Applied,
    report: &mut SyncReport,
) -> Result<(), QueueError> {
    let (id, what) = (item.id(), describe(&item));
    item.complete()?;
    if applied == Applied::Already {
        log::info!("sync {id}: {what} had been applied in Keycloak before the interruption; not sent again");
        report.already_applied += 1;
    } else {
        log::info!("sync {id}: {what} applied in Keycloak");
    }
    report.completed += 1;
    Ok(())
}

/// Keycloak refused the item: retried after a backoff for a passing reason (failed after
/// [`MAX_ATTEMPTS`]), failed for good otherwise.
fn settle_refused(
    retries: &Retries,
    item: Claimed<'_>,
    r: &Rejection,
    report: &mut SyncReport,
) -> Result<(), QueueError> {
    let (id, what) = (item.id(), describe(&item));
    let attempts = item.item().attempts + 1;
    if !matches!(r, Rejection::Transient { .. }) {
        item.fail(&r.to_string())?;
        log::warn!("sync {id}: {what} failed: {r}");
        report.failed += 1;
    } else if attempts >= MAX_ATTEMPTS {
        item.fail(&format!("{r} (after {attempts} attempts)"))?;
        log::warn!("sync {id}: {what} failed after {attempts} attempts: {r}");
        report.failed += 1;
    } else {
        let delay = retries.delay(attempts);
        item.retry(&r.to_string(), delay)?;
        log::info!(
            "sync {id}: {what} refused for now ({r}); retry in {}s",
            delay.as_secs()
        );
        report.retried += 1;
    }
    Ok(())
}

/// How [`apply`] succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Sent now; Keycloak accepted it.
    Now,
    /// An earlier attempt (interrupted before its answer was recorded) had been applied:
    /// nothing sent.
    Already,
}

/// Why [`apply`] did not succeed.
#[derive(Debug)]
pub(crate) enum ApplyError {
    /// Keycloak refused, or was not reached (see [`CallError`]).
    Call(CallError),
    /// Our database failed while marking the item (nothing was sent).
    Queue(QueueError),
}

impl From<CallError> for ApplyError {
    fn from(e: CallError) -> Self {
        ApplyError::Call(e)
    }
}

/// Applies one claimed item in Keycloak, at most once across crashes:
/// 1. looks the user up and reads their password credential's `createdDate`;
/// 2. if an earlier attempt was marked as sent and that date has moved since, it was applied:
///    [`Applied::Already`], nothing sent;
/// 3. otherwise marks the item as being sent with that date, flushed
///    ([`crate::sync_queue::SyncQueue::mark_sending`]), then sends it. When Keycloak answers
///    with an error the mark is cleared (not applied); when the outcome is unknown (timeout,
///    5xx, connection lost) it stays, for the next attempt's step 2.
///
/// The caller completes, retries, fails or releases the item.
pub(crate) fn apply(
    keycloak: &GuardedKeycloak,
    config: &Config,
    store: &Store,
    item: &Claimed<'_>,
) -> Result<Applied, ApplyError> {
    let realm = config.package(&item.item().package).realm;
    match item.data() {
        SyncData::PasswordChange(pc) => {
            let (user, created) = password_created(keycloak, &realm, store, item)?;
            if let Some(earlier) = &item.item().applying {
                if earlier.applied(created) {
                    return Ok(Applied::Already);
                }
            }
            item.mark_sending(created).map_err(ApplyError::Queue)?;
            let sent = keycloak.call(|kc| {
                forgetting_on_refusal(kc, kc.reset_password(&realm, &user, pc.password()))
            });
            match sent {
                Ok(()) => Ok(Applied::Now),
                Err(e) => {
                    let outcome_unknown = matches!(e, CallError::Keycloak(KcError::Unavailable(_)));
                    if !outcome_unknown {
                        item.clear_sending().map_err(ApplyError::Queue)?;
                    }
                    Err(ApplyError::Call(e))
                }
            }
        }
        // The user changes are idempotent (a create finds the user there, a delete finds it
        // gone, enabling twice is enabling): a send whose answer was lost is simply made again.
        SyncData::UserCreate(new) => {
            let username = &item.item().username;
            keycloak.call(|kc| forgetting_on_refusal(kc, kc.create_user(&realm, username, new)))?;
            Ok(Applied::Now)
        }
        SyncData::UserDisable | SyncData::UserEnable => {
            let enabled = matches!(item.data(), SyncData::UserEnable);
            let user = keycloak
                .call(|kc| forgetting_on_refusal(kc, kc.find_user(&realm, &item.item().username)))?
                .ok_or(CallError::Keycloak(KcError::Rejected(
                    Rejection::UserNotFound,
                )))?;
            keycloak.call(|kc| {
                forgetting_on_refusal(kc, kc.set_user_enabled(&realm, &user.id, enabled))
            })?;
            Ok(Applied::Now)
        }
        SyncData::UserDelete => {
            let found = keycloak.call(|kc| {
                forgetting_on_refusal(kc, kc.find_user(&realm, &item.item().username))
            })?;
            match found {
                Some(user) => {
                    keycloak
                        .call(|kc| forgetting_on_refusal(kc, kc.delete_user(&realm, &user.id)))?;
                    Ok(Applied::Now)
                }
                None => Ok(Applied::Already),
            }
        }
    }
}

/// The Keycloak id of the item's user and the `createdDate` of their password credential. A
/// user linked here (a Keycloak id in the local record: a login through Keycloak, `reconcile`)
/// is asked for by that id, one request; otherwise, or when Keycloak no longer knows the id
/// (the user was deleted and made again), the user is looked up by name first.
fn password_created(
    keycloak: &GuardedKeycloak,
    realm: &str,
    store: &Store,
    item: &Claimed<'_>,
) -> Result<(String, Option<i64>), ApplyError> {
    let username = &item.item().username;
    let linked = crate::account::Account::new(username, &item.item().package)
        .ok()
        .and_then(|account| match local_users::linked_id(store, &account) {
            Ok(id) => id,
            Err(e) => {
                log::warn!(
                    "sync item {}: local record not read ({e}); looking the user up in Keycloak",
                    item.id()
                );
                None
            }
        });
    let read =
        |id: &str| keycloak.call(|kc| forgetting_on_refusal(kc, kc.password_created(realm, id)));
    if let Some(id) = linked {
        match read(&id) {
            Err(CallError::Keycloak(KcError::Rejected(Rejection::UserNotFound))) => log::info!(
                "sync item {}: Keycloak no longer knows the id {username} is linked to; looking the user up by name",
                item.id()
            ),
            other => return Ok((id, other?)),
        }
    }
    let user = keycloak
        .call(|kc| forgetting_on_refusal(kc, kc.find_user(realm, username)))?
        .ok_or(CallError::Keycloak(KcError::Rejected(
            Rejection::UserNotFound,
        )))?;
    let created = read(&user.id)?;
    Ok((user.id, created))
}

/// Passes `result` on; when Keycloak refused our admin client (the queue is about to be
/// blocked) the cached admin tokens are forgotten first, so that the next check logs in anew.
fn forgetting_on_refusal<T>(kc: &KeycloakClient, result: Result<T, KcError>) -> Result<T, KcError> {
    if let Err(KcError::Misconfigured(_)) = &result {
        kc.forget_admin_tokens();
    }
    result
}

/// Puts claimed items back to `pending`, attempts untouched, `reason` recorded. Best effort:
/// every item is tried, each failure is logged (and the item's drop tries once more), and the
/// first one is returned.
fn release_all<'q>(
    items: impl Iterator<Item = Claimed<'q>>,
    reason: Option<&str>,
    report: &mut SyncReport,
) -> Result<(), QueueError> {
    let mut first_error = None;
    for item in items {
        let id = item.id();
        match item.release(reason) {
            Ok(()) => report.released += 1,
            Err(e) => {
                log::error!("sync {id}: could not put it back to pending: {e}");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::account::acct;
    use crate::clock::{Clock, ManualClock};
    use crate::keycloak::health::ProbeRecord;
    use crate::store::Store;
    use crate::sync_queue::tests::enqueue;
    use crate::sync_queue::SyncStatus;
    use chrono::{TimeZone, Utc};
    use serde_json::json;
    use std::cell::Cell;
    use std::path::Path;
    use std::sync::Arc;

    /// A config whose Keycloak refuses every connection at once, and a store with a fresh
    /// successful probe on record so that a cycle starts without asking.
    pub(crate) fn keycloak_gone() -> (Config, Arc<Store>, ManualClock) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let yaml = format!(
            "keycloak:\n  server_url: http://127.0.0.1:{port}\n  realm: demo\n  client_id: webapp\n  admin_client_secret: s\n  resilience:\n    failure_threshold: 100\n    health_check_cache_seconds: 3600\n"
        );
        let config =
            Config::parse(&yaml, Path::new("/nonexistent/config.yaml"), &|_| None).unwrap();
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0).unwrap());
        let store = Arc::new(Store::temporary().unwrap());
        let up = ProbeRecord {
            at: clock.now(),
            ok: true,
            outage: false,
            reason: None,
        };
        store.put_meta(MetaKey::HealthProbe, &up).unwrap();
        (config, store, clock)
    }

    #[test]
    fn an_error_mid_cycle_leaves_no_claimed_item_processing() {
        let (config, store, clock) = keycloak_gone();
        let clock: crate::clock::SharedClock = Arc::new(clock);
        let http = KeycloakClient::new(&config.keycloak).unwrap();
        let keycloak = GuardedKeycloak::new(http, &config, store.clone(), clock.clone()).unwrap();
        let queue = &SyncQueue::new(store.clone(), clock);
        let retries = Retries::default();
        let cycle = Cycle {
            keycloak: &keycloak,
            queue,
            store: &store,
            config: &config,
            retries: &retries,
        };
        let enqueue = |user: &str, priority| {
            let pw = json!({"new_password": "pw-123456"});
            enqueue(queue, &acct(user, "web"), "password_change", &pw, priority).unwrap()
        };
        let (first, second, third) = (enqueue("a", 1), enqueue("b", 2), enqueue("c", 3));
        // Once claimed, the first item's record is damaged: putting it back fails.
        let damaged = Cell::new(false);
        let stop = || {
            if !damaged.replace(true) {
                store
                    .sync_items
                    .insert(
                        first.as_bytes(),
                        &[crate::store::codec::RECORD_VERSION, 0xff][..],
                    )
                    .unwrap();
            }
            false
        };
        assert!(
            run(&cycle, 10, &stop).is_err(),
            "the failed release is reported"
        );
        for id in [second, third] {
            let item = queue.get(id).unwrap().unwrap();
            assert_eq!(item.status, SyncStatus::Pending, "{id} was put back");
            assert_eq!(item.attempts, 0);
        }
        assert_eq!(
            store.sync_inflight.len(),
            1,
            "only the damaged item is left"
        );
    }
}
