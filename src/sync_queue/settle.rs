//! Moving an item on: complete, fail, retry, release — with "last password wins" applied whenever
//! an item becomes pending again — and recovery of items a crash left in flight.

use super::index::{id_of, is_damage, Changes};
use super::item::finish;
use super::{QueueError, SyncItem, SyncQueue, SyncStatus, SyncType};
use crate::store::meta::Counter;
use chrono::{DateTime, Utc};
use uuid::Uuid;

impl SyncQueue {
    /// Keycloak applied the change; [`Counter::SyncCompleted`] counts it in the same
    /// transaction, and the send that succeeded counts as an attempt (a change applied at the
    /// first try shows 1, as a failed one does). Only [`super::Claimed::complete`] calls it.
    pub(super) fn complete(&self, id: Uuid) -> Result<(), QueueError> {
        self.transition(id, Some(Counter::SyncCompleted), |item, now| {
            item.attempts = item.attempts.saturating_add(1);
            finish(item, SyncStatus::Completed, now, None::<String>)
        })
    }

    /// Keycloak refused the change for good; [`Counter::SyncFailed`] counts it in the same
    /// transaction. With `keep_data` the sealed data stays, for [`SyncQueue::retry_item`]. Only [`super::Claimed::fail`] calls it.
    pub(super) fn fail(&self, id: Uuid, reason: &str, keep_data: bool) -> Result<(), QueueError> {
        self.transition(id, Some(Counter::SyncFailed), |item, now| {
            item.attempts = item.attempts.saturating_add(1);
            // Kept (sealed) for an operator's retry once the cause is fixed.
            let data = item.sealed_data.take().filter(|_| keep_data);
            finish(item, SyncStatus::Failed, now, Some(reason.to_string()));
            item.sealed_data = data;
        })
    }

    /// Keycloak refused for a passing reason: count the attempt, retry after `delay`. The item
    /// waits in `sync_delayed`, where claims do not look at it until it is due. A password
    /// change for which a newer one is pending is superseded instead. Only
    /// [`super::Claimed::retry`] calls it.
    pub(super) fn retry(
        &self,
        id: Uuid,
        reason: &str,
        delay: std::time::Duration,
    ) -> Result<(), QueueError> {
        self.transition(id, None, |item, now| {
            let delay = chrono::Duration::from_std(delay.min(super::MAX_RETRY_DELAY))
                .unwrap_or(chrono::Duration::MAX);
            item.attempts = item.attempts.saturating_add(1);
            item.status = SyncStatus::Pending;
            item.last_error = Some(reason.to_string());
            item.next_attempt_at = now
                .checked_add_signed(delay)
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            item.delayed = true;
        })
    }

    /// Keycloak was not reached (or the queue is blocked): back to pending, attempts untouched.
    /// A password change for which a newer one is pending is superseded instead. Only
    /// [`super::Claimed`] calls it.
    pub(super) fn release(&self, id: Uuid, reason: Option<&str>) -> Result<(), QueueError> {
        self.transition(id, None, |item, _| {
            item.status = SyncStatus::Pending;
            if let Some(r) = reason {
                item.last_error = Some(r.to_string());
            }
        })
    }

    /// Puts `id` back to pending if it is still `processing` (a claim dropped unsettled);
    /// returns whether it did. An unreadable record is tried anyway: the release says what is
    /// wrong if it cannot.
    pub(super) fn put_back(&self, id: Uuid) -> Result<bool, QueueError> {
        let still_claimed = match self.get(id) {
            Ok(Some(item)) => item.status == SyncStatus::Processing,
            Ok(None) => false,
            Err(_) => true,
        };
        if still_claimed {
            self.release(id, None)?;
        }
        Ok(still_claimed)
    }

    /// Reads `id`, applies `change` and writes it with `counter` bumped in the same
    /// transaction.
    fn transition(
        &self,
        id: Uuid,
        counter: Option<Counter>,
        change: impl FnOnce(&mut SyncItem, DateTime<Utc>),
    ) -> Result<(), QueueError> {
        #[cfg(test)]
        if super::FAILING_TRANSITIONS.with(|c| c.replace(c.get().saturating_sub(1)) > 0) {
            return Err(QueueError::Store(crate::store::StoreError::Sled(
                sled::Error::Io(std::io::Error::other(
                    "injected fault: no space left on device",
                )),
            )));
        }
        let now = self.clock.now();
        let _g = self.guard();
        let old = self.get(id)?.ok_or(QueueError::NotFound(id))?;
        self.change_locked(old, now, counter, change)
    }

    /// Applies `change` to `old` and writes it, with the superseding that "last password
    /// wins" asks for when it becomes pending. Caller holds the lock.
    pub(super) fn change_locked(
        &self,
        old: SyncItem,
        now: DateTime<Utc>,
        counter: Option<Counter>,
        change: impl FnOnce(&mut SyncItem, DateTime<Utc>),
    ) -> Result<(), QueueError> {
        let mut new = old.clone();
        change(&mut new, now);
        let mut changes = self.settle_password_changes(&mut new, now)?;
        changes.insert(0, (Some(old), new));
        self.write_with(&changes, None, counter)
    }

    /// Last password wins: when `item`, a password change, is about to be pending, of it and
    /// the pending password changes of its (user, package) only the newest (highest sequence)
    /// stays pending; the others are finished as `superseded`, their secret wiped.
    ///
    /// At enqueue `item` is the newest and supersedes the rest. When an item in flight comes
    /// back (retry, release, recovery after a crash), a pending sibling was queued while it
    /// was in flight, so it is newer and the item coming back is the one superseded. `item`
    /// is changed in place; the changes to its siblings are returned. Caller holds the lock.
    pub(super) fn settle_password_changes(
        &self,
        item: &mut SyncItem,
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError> {
        if item.status != SyncStatus::Pending || item.sync_type != SyncType::PasswordChange {
            return Ok(Vec::new());
        }
        let mut siblings = Vec::new();
        for id in self.pending_ids_of(item.account_key())? {
            if id == item.sync_id {
                continue;
            }
            if let Some(other) = self.get_or_skip(id)? {
                if other.status == SyncStatus::Pending
                    && other.sync_type == SyncType::PasswordChange
                {
                    siblings.push(other);
                }
            }
        }
        let newest = siblings
            .iter()
            .map(|s| (s.seq, s.sync_id))
            .fold((item.seq, item.sync_id), |a, b| a.max(b))
            .1;
        let reason = format!("superseded by {newest}");
        let mut changes = Vec::new();
        for old in siblings.into_iter().filter(|s| s.sync_id != newest) {
            let mut new = old.clone();
            finish(&mut new, SyncStatus::Superseded, now, Some(reason.as_str()));
            changes.push((Some(old), new));
        }
        if item.sync_id != newest {
            log::info!(
                "sync item {} is superseded by the newer password change {newest}",
                item.sync_id
            );
            finish(item, SyncStatus::Superseded, now, Some(reason.as_str()));
        }
        Ok(changes)
    }

    /// Puts items left `processing` by a crash back to `pending` (or superseded, when a newer
    /// password change for the same user is pending); returns how many. A damaged record is
    /// logged and its in-flight entry dropped (the record is kept), so it stops nothing.
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] when the database fails.
    pub fn recover(&self) -> Result<usize, QueueError> {
        let keys: Vec<sled::IVec> = self
            .store
            .sync_inflight
            .iter()
            .keys()
            .collect::<Result<_, sled::Error>>()?;
        let mut recovered = 0;
        for key in keys {
            let now = self.clock.now();
            let _g = self.guard();
            let Some(id) = id_of(&key) else {
                log::error!("sync_inflight entry with a malformed sync id: removed");
                self.store.sync_inflight.remove(key)?;
                continue;
            };
            match self.get(id) {
                Ok(Some(old)) if old.status == SyncStatus::Processing => {
                    if old.applying.is_some() {
                        log::warn!("sync item {id} was being sent to Keycloak when the process stopped; back to pending, Keycloak will be asked whether it was applied before it is sent again");
                    } else {
                        log::warn!("sync item {id} was left processing (crash?); back to pending");
                    }
                    self.change_locked(old, now, None, |item, _| {
                        item.status = SyncStatus::Pending
                    })?;
                    recovered += 1;
                }
                Err(e) if is_damage(&e) => {
                    log::error!(
                        "sync_inflight entry for damaged sync item {id} dropped (record kept for inspection): {e}"
                    );
                    self.drop_damaged(&self.store.sync_inflight, &key, SyncStatus::Processing)?;
                }
                Err(e) => return Err(e),
                Ok(Some(old)) => {
                    log::warn!(
                        "sync item {id} is {} but was in flight: reindexed",
                        old.status.as_str()
                    );
                    self.write(&[(Some(old.clone()), old)])?;
                }
                Ok(None) => {
                    log::warn!("sync_inflight entry for missing sync item {id} dropped");
                    self.store.sync_inflight.remove(key)?;
                }
            }
        }
        if recovered > 0 {
            self.flush()?;
        }
        Ok(recovered)
    }
}
