//! The durable sync queue: changes made while Keycloak was away, replayed in priority order.
//!
//! Storage is five sled trees written together in one transaction per change, so an item and
//! its index entries can never disagree. Which index holds an item follows from its record
//! alone (status, and the `delayed` flag of a pending item):
//! - `sync_items`: sync id → [`SyncItem`] (the record of the original `sync_queue` table);
//! - `sync_order`: [`order_key`] (priority, queue time, sequence; big-endian so byte order is
//!   numeric order) → sync id, for pending items that are *due*: the next batch is the first
//!   keys, with no due-time check and nothing to skip;
//! - `sync_delayed`: [`delayed_key`] (due time, sequence) → sync id, for pending items backing
//!   off after a retry: [`SyncQueue::claim`] first moves the ones now due into `sync_order`
//!   (a range scan up to now), so an item that is not due is never read by a claim;
//! - `sync_by_user`: (user, package, id) for pending items: superseding and one user's order are a prefix
//!   scan, not a queue scan;
//! - `sync_inflight`: ids claimed by a cycle; a crash leaves them there and [`SyncQueue::recover`]
//!   puts them back to pending.
//!
//! Last password wins: of the pending password changes of a (user, package) only the newest
//! is kept — at enqueue, and again whenever an item in flight comes back to pending (retry,
//! release, recovery), when a newer one queued meanwhile supersedes it. A claim takes at most
//! one password change per (user, package) at a time.
//!
//! One damaged record stops nothing else: scans (claim, recover, list, counts, cleanup) log it
//! by id — never its content — and go on; a claim also takes it out of `sync_order`, keeping
//! the record for an operator.
//!
//! Enqueue flushes before it returns (outside the queue lock). Sync data is validated against
//! its type at enqueue and sealed at rest; once an item is finished (completed, superseded,
//! superseded) its data is wiped; a failed item keeps it, sealed, for an operator's retry
//! ([`SyncQueue::retry_item`]) until it is removed.

mod batch;
mod claim;
mod claimed;
mod counts;
mod data;
mod error;
mod index;
mod item;
mod local_change;
mod oldest;
mod operator;
mod page;
mod settle;
#[cfg(test)]
pub(crate) mod tests;

pub use claimed::Claimed;
pub use counts::QueueCounts;
pub use data::{
    parse_strict_json, NewUser, PasswordChange, SyncData, SyncType, MAX_SYNC_DATA_BYTES,
};
pub use error::QueueError;
pub use index::{delayed_key, order_key};
pub use item::{Applying, SyncItem, SyncStatus};
pub use local_change::{CachedTokenChange, LocalChange, RecordChange};
pub use operator::{FailedFilter, RetriedFailed};
pub use page::{Cursor, Page};

use crate::account::Account;
use crate::clock::SharedClock;
use crate::store::{self, Store, StoreError};
use chrono::{DateTime, Utc};
use counts::{apply_deltas, count_deltas};
use index::{id_of, is_damage, key_name, tx_result};
use item::decode_item;
use sled::transaction::TransactionError;
use sled::Transactional;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Lowest (most urgent) priority.
pub const PRIORITY_HIGHEST: u32 = 1;
/// Priority when none is given.
pub const PRIORITY_DEFAULT: u32 = 5;
/// The longest a backing-off item waits ([`crate::backoff::Backoff`]'s cap). A due time
/// further ahead was set while the clock was ahead: a claim takes it as due.
pub const MAX_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(3600);

#[cfg(test)]
thread_local! {
    /// Whether the queue lock was held when this thread last flushed (see `flush`).
    static FLUSHED_UNDER_LOCK: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

#[cfg(test)]
thread_local! {
    /// How many of this thread's next item transitions (complete, fail, retry, release) fail
    /// as a full disk would, before anything is written (see [`fail_next_transitions`]).
    static FAILING_TRANSITIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Makes the next `n` item transitions on this thread fail with a database error.
#[cfg(test)]
pub(crate) fn fail_next_transitions(n: usize) {
    FAILING_TRANSITIONS.with(|c| c.set(n));
}

/// What [`SyncQueue::enqueue`] did.
#[derive(Debug)]
pub struct Enqueued<'q> {
    /// The new item's SyncId.
    pub id: Uuid,
    /// The item, claimed, when [`LocalChange::claim`] asked for it and no change of the same
    /// user was in flight.
    pub claimed: Option<Claimed<'q>>,
}

/// The queue over the store.
#[derive(Clone)]
pub struct SyncQueue {
    store: Arc<Store>,
    clock: SharedClock,
    /// Serialises read-modify-write of items within this process (sled's lock keeps other
    /// processes out of the directory altogether). Never held across a flush.
    lock: Arc<Mutex<()>>,
}

impl SyncQueue {
    /// The queue in `store`.
    pub fn new(store: Arc<Store>, clock: SharedClock) -> SyncQueue {
        SyncQueue {
            store,
            clock,
            lock: Arc::new(Mutex::new(())),
        }
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` while no write of the queue can start in this process: what `f` reads of the
    /// queue's trees (items, indexes, counters in `meta`) agrees with itself. For `backup`;
    /// `f` must not write the queue (it would wait for itself).
    pub fn while_held<R>(&self, f: impl FnOnce() -> R) -> R {
        let _g = self.guard();
        f()
    }

    /// Flushes to disk; called without the queue lock, so that claims and completions of a
    /// running cycle do not wait on the disk behind an enqueue.
    fn flush(&self) -> Result<(), QueueError> {
        #[cfg(test)]
        FLUSHED_UNDER_LOCK.with(|c| c.set(Some(self.lock.try_lock().is_err())));
        self.store.flush()?;
        Ok(())
    }

    /// Seals and stores a change (`data` is valid by construction: see [`SyncData`]);
    /// supersedes older pending password changes of the same (user, package); flushes to disk
    /// before returning the new SyncId. The one way into the queue.
    ///
    /// With `local` (`passwd`) a local user record changes in the SAME transaction, so that a
    /// crash leaves either both or neither: never a new local password that Keycloak will not
    /// hear of; with its [`LocalChange::claim`] the item comes back claimed, to be sent at once.
    ///
    /// # Errors
    ///
    /// [`QueueError::BadInput`] for priority 0 (the names were checked when `account` was made);
    /// [`QueueError::LocalUser`] when the local record is gone or cannot be changed (then
    /// nothing was written); [`QueueError::Store`] when the database fails.
    pub fn enqueue(
        &self,
        account: &Account,
        data: SyncData,
        priority: u32,
        local: Option<&LocalChange<'_>>,
    ) -> Result<Enqueued<'_>, QueueError> {
        check_priority(priority)?;
        let enqueued = self.write_new(account, data, priority, local)?;
        self.flush()?;
        Ok(enqueued)
    }

    /// Writes a new item (not yet flushed): see [`SyncQueue::enqueue`].
    fn write_new(
        &self,
        account: &Account,
        data: SyncData,
        priority: u32,
        local: Option<&LocalChange<'_>>,
    ) -> Result<Enqueued<'_>, QueueError> {
        let sealed = self
            .store
            .sealer()
            .seal(&data.to_bytes())
            .map_err(StoreError::from)?;
        let enqueued = {
            let _g = self.guard();
            // Time and sequence are taken under the lock, so that the item written last is
            // also the one with the highest sequence: "newest" means the same thing to every
            // rule below.
            let now = self.clock.now();
            let mut item = SyncItem {
                sync_id: Uuid::new_v4(),
                username: account.user().to_string(),
                package: account.package().to_string(),
                sync_type: data.sync_type(),
                sealed_data: Some(sealed),
                queued_at: now,
                processed_at: None,
                status: SyncStatus::Pending,
                attempts: 0,
                last_error: None,
                priority,
                next_attempt_at: now,
                seq: self.store.next_id()?,
                delayed: false,
                applying: None,
            };
            // It is the newest: it supersedes the pending ones as a pending item would.
            let mut changes = self.settle_password_changes(&mut item, now)?;
            // Claimed at once only when nothing older of the user's waits either: one user's
            // changes reach Keycloak in the order they were made.
            let superseded: Vec<Uuid> = changes.iter().map(|(_, c)| c.sync_id).collect();
            let claim = local.is_some_and(|l| l.claim)
                && !self.users_in_flight()?.contains(&account.key())
                && !self.older_pending_of_user_except(&item, &superseded)?;
            if claim {
                item.status = SyncStatus::Processing;
            }
            changes.push((None, item.clone()));
            self.write_with(&changes, local, None)?;
            Enqueued {
                id: item.sync_id,
                claimed: claim.then(|| Claimed::new(self, item, data)),
            }
        };
        Ok(enqueued)
    }

    /// The queue's clock: what a cycle records its times with.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// One item by id.
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] when the record is damaged or the database fails.
    pub fn get(&self, id: Uuid) -> Result<Option<SyncItem>, QueueError> {
        match self.store.sync_items.get(id.as_bytes())? {
            Some(bytes) => Ok(Some(decode_item(&bytes)?)),
            None => Ok(None),
        }
    }

    /// [`SyncQueue::get`] for scans: a damaged record is logged (its id, never its content)
    /// and read as absent, so that it stops nothing else. Database failures still propagate.
    fn get_or_skip(&self, id: Uuid) -> Result<Option<SyncItem>, QueueError> {
        match self.get(id) {
            Err(e) if is_damage(&e) => {
                log::error!(
                    "sync item {id} is damaged and was skipped (record kept for inspection): {e}"
                );
                Ok(None)
            }
            other => other,
        }
    }

    fn open(&self, item: &SyncItem) -> Result<SyncData, QueueError> {
        let sealed = item
            .sealed_data
            .as_deref()
            .ok_or_else(|| QueueError::Corrupt("pending item without data".into()))?;
        let bytes = self.store.sealer().open(sealed).map_err(StoreError::from)?;
        SyncData::from_bytes(item.sync_type, bytes)
    }

    /// Whether the store's key opens the items still holding sealed data: `Some(true)` as soon
    /// as one opens, `Some(false)` when some were tried and none opened, `None` when no item
    /// holds any. At most [`store::KEY_SAMPLES`] are tried, so that one damaged record cannot
    /// pass for a wrong key. Used once, to settle the key of a database written before key
    /// check values existed (see [`Store::confirm_key`]).
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] when the database fails.
    pub fn sealed_sample_opens(&self) -> Result<Option<bool>, QueueError> {
        let mut tried = 0;
        for entry in self.store.sync_items.iter() {
            let (_, bytes) = entry?;
            let Ok(item) = decode_item(&bytes) else {
                continue;
            };
            let Some(sealed) = &item.sealed_data else {
                continue;
            };
            if self.store.sealer().open(sealed).is_ok() {
                return Ok(Some(true));
            }
            tried += 1;
            if tried == store::KEY_SAMPLES {
                break;
            }
        }
        Ok((tried > 0).then_some(false))
    }

    /// Items in queue order (pending first, by priority and time), then the rest by time.
    /// Damaged records are logged and left out.
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] when the database fails.
    pub fn list(&self) -> Result<Vec<SyncItem>, QueueError> {
        let mut items = Vec::new();
        self.for_each_item(|item| items.push(item))?;
        items.sort_by_key(|i| {
            (
                i.status != SyncStatus::Pending,
                order_key(i.priority, i.queued_at, i.seq),
            )
        });
        Ok(items)
    }

    /// Calls `f` with every readable item; damaged records are logged (id only) and skipped.
    fn for_each_item(&self, mut f: impl FnMut(SyncItem)) -> Result<(), QueueError> {
        for entry in self.store.sync_items.iter() {
            let (key, bytes) = entry?;
            match decode_item(&bytes) {
                Ok(item) => f(item),
                Err(e) => log::error!(
                    "sync item {} is damaged and was skipped: {e}",
                    key_name(&key)
                ),
            }
        }
        Ok(())
    }

    /// Pending password changes for (user, package), or one in flight: either explains why
    /// Keycloak still has the old password.
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] when the database fails or an item in flight is damaged (then
    /// the answer is unknown), [`QueueError::Corrupt`] for a malformed in-flight entry.
    pub fn has_pending_password_change(&self, account: &Account) -> Result<bool, QueueError> {
        self.has_pending(account, Some(SyncType::PasswordChange))
    }

    /// Any change of (user, package) waiting or in flight: a local change Keycloak has not
    /// heard of yet, newer than whatever Keycloak holds.
    ///
    /// # Errors
    ///
    /// As [`SyncQueue::has_pending_password_change`].
    pub fn has_pending_change(&self, account: &Account) -> Result<bool, QueueError> {
        self.has_pending(account, None)
    }

    fn has_pending(&self, account: &Account, of: Option<SyncType>) -> Result<bool, QueueError> {
        let wanted = account.key();
        let fits = |item: &SyncItem| of.is_none_or(|t| item.sync_type == t);
        for id in self.pending_ids_of(wanted.clone())? {
            if let Some(item) = self.get(id)? {
                if fits(&item) {
                    return Ok(true);
                }
            }
        }
        for key in self.store.sync_inflight.iter().keys() {
            let key = key?;
            let id = id_of(&key)
                .ok_or_else(|| QueueError::Corrupt("malformed sync id in sync_inflight".into()))?;
            if let Some(item) = self.get(id)? {
                if fits(&item) && item.account_key() == wanted {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Number of pending items, due now or backing off (from the counters: no scan once they
    /// are built). An unreadable counter is logged and the index trees are counted instead.
    pub fn pending_count(&self) -> usize {
        match self.counts() {
            Ok(c) => c.pending,
            Err(e) => {
                log::error!("sync queue counters unreadable ({e}); counting the indexes");
                self.store.sync_order.len() + self.store.sync_delayed.len()
            }
        }
    }

    /// Whether a claim now would find anything: a due item, or a backing-off one now due.
    /// Cheap (looks at the first key of each index), so a cycle with nothing to do costs no
    /// Keycloak call.
    pub(crate) fn has_due(&self) -> Result<bool, QueueError> {
        if !self.store.sync_order.is_empty() {
            return Ok(true);
        }
        let now = self.clock.now();
        let due_by = delayed_key(now, u64::MAX);
        let delayed = &self.store.sync_delayed;
        let first_due = delayed
            .first()?
            .is_some_and(|(key, _)| key.as_ref() <= &due_by[..]);
        // By the clock rule, a due time beyond the longest backoff counts as due (see claim).
        let last_skewed = delayed
            .last()?
            .is_some_and(|(key, _)| key.as_ref() > &claim::skewed_from(now)[..]);
        Ok(first_due || last_skewed)
    }

    /// Removes completed and superseded items finished more than `max_age` ago. Failed items
    /// are left to [`SyncQueue::cleanup_failed`] (they keep the reason an operator needs);
    /// damaged records stay (logged).
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] when the database fails.
    pub fn cleanup(&self, max_age: std::time::Duration) -> Result<usize, QueueError> {
        self.remove_finished(max_age, |s| {
            matches!(s, SyncStatus::Completed | SyncStatus::Superseded)
        })
    }

    /// Removes failed items that failed more than `max_age` ago.
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] when the database fails.
    pub fn cleanup_failed(&self, max_age: std::time::Duration) -> Result<usize, QueueError> {
        self.remove_finished(max_age, |s| s == SyncStatus::Failed)
    }

    /// One scan; the chosen finished items older than `max_age` go, with their counters, in
    /// transactions of a few hundred.
    fn remove_finished(
        &self,
        max_age: std::time::Duration,
        wanted: impl Fn(SyncStatus) -> bool,
    ) -> Result<usize, QueueError> {
        let max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
        let cutoff = self
            .clock
            .now()
            .checked_sub_signed(max_age)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let _g = self.guard();
        let mut old = Vec::new();
        self.for_each_item(|item| {
            let old_enough = item.processed_at.is_some_and(|t| t < cutoff);
            if wanted(item.status) && item.status.is_finished() && old_enough {
                old.push((item.sync_id, item.status));
            }
        })?;
        let s = &self.store;
        for chunk in old.chunks(256) {
            let deltas = count_deltas(chunk.iter().map(|(_, status)| (Some(*status), None)));
            let result: Result<(), TransactionError<()>> =
                (&s.sync_items, &s.meta).transaction(|(items, meta)| {
                    for (id, _) in chunk {
                        items.remove(id.as_bytes())?;
                    }
                    apply_deltas(meta, &deltas)?;
                    Ok(())
                });
            tx_result(result)?;
        }
        Ok(old.len())
    }

    /// Marks a claimed item as being sent to Keycloak and flushes, before the request goes
    /// out: `password_created_before` is what Keycloak reported just now (see [`Applying`]).
    /// After a crash the mark tells the next attempt to ask Keycloak first.
    ///
    /// # Errors
    ///
    /// [`QueueError::NotFound`]; [`QueueError::Corrupt`] when the item is not `processing`;
    /// [`QueueError::Store`] otherwise.
    pub fn mark_sending(
        &self,
        id: Uuid,
        password_created_before: Option<i64>,
    ) -> Result<(), QueueError> {
        {
            let now = self.clock.now();
            let _g = self.guard();
            let old = self.get(id)?.ok_or(QueueError::NotFound(id))?;
            if old.status != SyncStatus::Processing {
                return Err(QueueError::Corrupt(format!(
                    "sync item {id} is {}, not processing: not sent",
                    old.status.as_str()
                )));
            }
            let mut new = old.clone();
            new.applying = Some(Applying {
                sent_at: now,
                password_created_before,
            });
            self.write(&[(Some(old), new)])?;
        }
        self.flush()
    }

    /// Keycloak answered the request sent after [`SyncQueue::mark_sending`] (with an error):
    /// it was not applied, so the mark goes (no flush: a lost clear only costs one question to
    /// Keycloak).
    ///
    /// # Errors
    ///
    /// [`QueueError::NotFound`] for an unknown id; [`QueueError::Store`] otherwise.
    pub fn clear_sending(&self, id: Uuid) -> Result<(), QueueError> {
        let _g = self.guard();
        let old = self.get(id)?.ok_or(QueueError::NotFound(id))?;
        if old.applying.is_none() {
            return Ok(());
        }
        let mut new = old.clone();
        new.applying = None;
        self.write(&[(Some(old), new)])
    }
}

/// A priority is 1 or more.
fn check_priority(priority: u32) -> Result<(), QueueError> {
    if priority == 0 {
        return Err(QueueError::BadInput(
            "priority must be 1 or more (1 runs first)".into(),
        ));
    }
    Ok(())
}
