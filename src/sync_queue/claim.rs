//! Claiming the next batch: promote due backing-off items, then take the first keys of the order
//! index, one password change per user at a time.

use super::index::{delayed_key, id_of, is_damage};
use super::{Claimed, QueueError, SyncItem, SyncQueue, SyncStatus};
use chrono::{DateTime, Utc};
use std::collections::HashSet;

/// The first `sync_delayed` key whose due time is further ahead than any backoff from `now`
/// could have set ([`super::MAX_RETRY_DELAY`]): set while the clock was ahead.
pub(super) fn skewed_from(now: DateTime<Utc>) -> [u8; 16] {
    let cap = chrono::Duration::from_std(super::MAX_RETRY_DELAY).unwrap_or(chrono::Duration::MAX);
    let beyond = now
        .checked_add_signed(cap)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    delayed_key(beyond, u64::MAX)
}

impl SyncQueue {
    /// Claims up to `batch` pending items in queue order and marks them `processing`.
    ///
    /// Backing-off items that have become due are first moved from `sync_delayed` to
    /// `sync_order` (one transaction each); then the batch is the first keys of `sync_order`,
    /// which holds due items only. A password change whose (user, package) already has one
    /// in flight waits for it, so that at most one change per user is in flight and the
    /// newest one is always the one left to run. A damaged item is taken out of `sync_order`
    /// (its record kept) and logged; an item whose secret cannot be opened is failed with its
    /// sealed data kept (never wiped: it may open again with the right key).
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] when the database fails.
    pub fn claim(&self, batch: usize) -> Result<Vec<Claimed<'_>>, QueueError> {
        let now = self.clock.now();
        // Declared before the lock so that, on an early return, the lock goes first and the
        // claims dropped after it can put their items back.
        let mut claimed = Vec::new();
        let _g = self.guard();
        self.promote_due(now)?;
        let mut busy = self.users_in_flight()?;
        for entry in self.store.sync_order.iter() {
            if claimed.len() >= batch {
                break;
            }
            let (key, raw_id) = entry?;
            let Some(id) = id_of(&raw_id) else {
                log::error!("sync_order entry with a malformed sync id: removed");
                self.store.sync_order.remove(key)?;
                continue;
            };
            let item = match self.get(id) {
                Ok(Some(item)) if item.status == SyncStatus::Pending => item,
                Ok(Some(item)) => {
                    log::warn!(
                        "sync item {id} is {} but was in sync_order: entry removed",
                        item.status.as_str()
                    );
                    self.store.sync_order.remove(key)?;
                    continue;
                }
                Ok(None) => {
                    log::warn!("sync_order pointed at missing sync item {id}: entry removed");
                    self.store.sync_order.remove(key)?;
                    continue;
                }
                Err(e) if is_damage(&e) => {
                    log::error!(
                        "sync item {id} is damaged: taken out of the queue, record kept for inspection: {e}"
                    );
                    self.drop_damaged(&self.store.sync_order, &key, SyncStatus::Pending)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            // One user's changes reach Keycloak in the order they were made, whatever their
            // priorities: none while another of theirs is in flight, and none before an older
            // one of theirs still waiting (backing off included).
            let user = item.account_key();
            if busy.contains(&user) || self.older_pending_of_user(&item)? {
                continue;
            }
            let data = match self.open(&item) {
                Ok(d) => d,
                Err(e) => {
                    // An item whose secret cannot be opened cannot run now: fail it, visibly,
                    // but keep its sealed data — with the right key back (or the record
                    // repaired) it is still the user's password, and wiping it would lose
                    // the change for good.
                    log::error!("sync item {id}: {e}; marking failed, sealed data kept");
                    let mut failed = item.clone();
                    failed.status = SyncStatus::Failed;
                    failed.processed_at = Some(now);
                    failed.last_error = Some(format!("unreadable (sealed data kept): {e}"));
                    self.write(&[(Some(item), failed)])?;
                    continue;
                }
            };
            let mut new = item.clone();
            new.status = SyncStatus::Processing;
            self.write(&[(Some(item), new.clone())])?;
            busy.insert(user);
            claimed.push(Claimed::new(self, new, data));
        }
        Ok(claimed)
    }

    /// Moves every backing-off item due by `now` from `sync_delayed` to `sync_order`, and,
    /// by the clock rule ([`crate::clock`]), every one due later than the longest backoff
    /// from now ([`super::MAX_RETRY_DELAY`]): its due time was set while the clock was ahead.
    /// Caller holds the lock.
    pub(super) fn promote_due(&self, now: DateTime<Utc>) -> Result<(), QueueError> {
        let due = self.store.sync_delayed.range(..=delayed_key(now, u64::MAX));
        let skewed = self.store.sync_delayed.range(skewed_from(now)..);
        for entry in due.chain(skewed) {
            let (key, raw_id) = entry?;
            let Some(id) = id_of(&raw_id) else {
                log::error!("sync_delayed entry with a malformed sync id: removed");
                self.store.sync_delayed.remove(key)?;
                continue;
            };
            match self.get(id) {
                Ok(Some(item)) if item.status == SyncStatus::Pending && item.delayed => {
                    let mut new = item.clone();
                    new.delayed = false;
                    self.write(&[(Some(item), new)])?;
                }
                Err(e) if is_damage(&e) => {
                    log::error!(
                        "sync item {id} is damaged: taken out of the queue, record kept for inspection: {e}"
                    );
                    self.drop_damaged(&self.store.sync_delayed, &key, SyncStatus::Pending)?;
                }
                Err(e) => return Err(e),
                Ok(_) => {
                    log::warn!(
                        "sync_delayed entry for sync item {id} that is not backing off: removed"
                    );
                    self.store.sync_delayed.remove(key)?;
                }
            }
        }
        Ok(())
    }

    /// Whether the item's user has an older item (a smaller `seq`) still pending. A prefix
    /// scan of `sync_by_user`: a user's own few items.
    fn older_pending_of_user(&self, item: &SyncItem) -> Result<bool, QueueError> {
        self.older_pending_of_user_except(item, &[])
    }

    /// [`Self::older_pending_of_user`], leaving out the items `except` (being finished in the
    /// same write).
    pub(super) fn older_pending_of_user_except(
        &self,
        item: &SyncItem,
        except: &[uuid::Uuid],
    ) -> Result<bool, QueueError> {
        for id in self.pending_ids_of(item.account_key())? {
            if id == item.sync_id || except.contains(&id) {
                continue;
            }
            if let Some(other) = self.get_or_skip(id)? {
                if other.status == SyncStatus::Pending && other.seq < item.seq {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// The (user, package) keys of items in flight. Empty — and free — unless a cycle is
    /// running or a crash left items behind.
    pub(super) fn users_in_flight(&self) -> Result<HashSet<Vec<u8>>, QueueError> {
        let mut users = HashSet::new();
        for key in self.store.sync_inflight.iter().keys() {
            let key = key?;
            let Some(id) = id_of(&key) else {
                continue;
            };
            if let Some(item) = self.get_or_skip(id)? {
                if item.status == SyncStatus::Processing {
                    users.insert(item.account_key());
                }
            }
        }
        Ok(users)
    }
}
