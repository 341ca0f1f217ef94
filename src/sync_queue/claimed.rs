//! The job in hand: a claimed item and the one way to settle it.
//!
//! A [`Claimed`] is what a claim ([`SyncQueue::claim`], or `passwd`'s
//! [`SyncQueue::enqueue`] with [`super::LocalChange::claim`]) hands out. It is settled by
//! consuming it — [`Claimed::complete`], [`Claimed::fail`], [`Claimed::retry`] or
//! [`Claimed::release`] — and those are the only ways an item in flight moves on; the
//! completed and failed counters change in the item's own transaction. One dropped unsettled
//! (an early return, an error, a panic unwinding) is put back to pending, as sqlxmq's job
//! guard does: nothing stays `processing` until the next restart. A crash runs no drop, and
//! leaves the item to [`SyncQueue::recover`].

use super::{QueueError, SyncData, SyncItem, SyncQueue};
use uuid::Uuid;

/// A claimed item with its opened data (status `processing`); see the module.
pub struct Claimed<'q> {
    /// The queue it goes back to.
    queue: &'q SyncQueue,
    /// The item as claimed.
    item: SyncItem,
    /// Its data, unsealed.
    data: SyncData,
    /// Set once a settle was written; until then, drop puts the item back.
    settled: bool,
}

impl std::fmt::Debug for Claimed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("item", &self.item)
            .field("data", &self.data)
            .field("settled", &self.settled)
            .finish()
    }
}

impl<'q> Claimed<'q> {
    /// `item`, just written `processing`, in hand.
    pub(super) fn new(queue: &'q SyncQueue, item: SyncItem, data: SyncData) -> Claimed<'q> {
        Claimed {
            queue,
            item,
            data,
            settled: false,
        }
    }

    /// The item (status `processing`).
    pub fn item(&self) -> &SyncItem {
        &self.item
    }

    /// Its data, unsealed.
    pub fn data(&self) -> &SyncData {
        &self.data
    }

    /// Its SyncId.
    pub fn id(&self) -> Uuid {
        self.item().sync_id
    }

    /// See [`SyncQueue::mark_sending`].
    ///
    /// # Errors
    ///
    /// As [`SyncQueue::mark_sending`].
    pub fn mark_sending(&self, password_created_before: Option<i64>) -> Result<(), QueueError> {
        self.queue.mark_sending(self.id(), password_created_before)
    }

    /// See [`SyncQueue::clear_sending`].
    ///
    /// # Errors
    ///
    /// As [`SyncQueue::clear_sending`].
    pub fn clear_sending(&self) -> Result<(), QueueError> {
        self.queue.clear_sending(self.id())
    }

    /// Keycloak applied the change: `completed`, secret wiped, counted in
    /// [`crate::store::meta::Counter::SyncCompleted`] in the same transaction.
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] when the database fails (the item then goes back to pending).
    pub fn complete(self) -> Result<(), QueueError> {
        self.settle(|q, id| q.complete(id))
    }

    /// Keycloak refused the change for good: `failed` with `reason`, secret kept sealed for
    /// an operator's retry ([`SyncQueue::retry_item`]), counted in
    /// [`crate::store::meta::Counter::SyncFailed`] in the same transaction.
    ///
    /// # Errors
    ///
    /// As [`Claimed::complete`].
    pub fn fail(self, reason: &str) -> Result<(), QueueError> {
        self.settle(|q, id| q.fail(id, reason, true))
    }

    /// As [`Claimed::fail`], the secret wiped: for a change that must never be sent later,
    /// because its author was told at once that it was refused and it was undone here
    /// (`passwd` refused by Keycloak's password policy).
    ///
    /// # Errors
    ///
    /// As [`Claimed::complete`].
    pub fn fail_for_good(self, reason: &str) -> Result<(), QueueError> {
        self.settle(|q, id| q.fail(id, reason, false))
    }

    /// Keycloak refused for a passing reason: the attempt counts; pending again after `delay`
    /// (superseded instead when a newer password change is pending).
    ///
    /// # Errors
    ///
    /// As [`Claimed::complete`].
    pub fn retry(self, reason: &str, delay: std::time::Duration) -> Result<(), QueueError> {
        self.settle(|q, id| q.retry(id, reason, delay))
    }

    /// Keycloak was not reached (or the queue is blocked, or the cycle stops): back to pending
    /// with attempts untouched, `reason` recorded when given (superseded instead when a newer
    /// password change is pending).
    ///
    /// # Errors
    ///
    /// As [`Claimed::complete`].
    pub fn release(self, reason: Option<&str>) -> Result<(), QueueError> {
        self.settle(|q, id| q.release(id, reason))
    }

    /// Writes one settle; on failure the guard stays unsettled, so its drop puts the item back.
    fn settle(
        mut self,
        write: impl FnOnce(&SyncQueue, Uuid) -> Result<(), QueueError>,
    ) -> Result<(), QueueError> {
        let result = write(self.queue, self.item().sync_id);
        self.settled = result.is_ok();
        result
    }
}

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let id = self.item().sync_id;
        match self.queue.put_back(id) {
            Ok(true) => log::warn!("sync {id}: left unsettled; back to pending"),
            Ok(false) => {}
            Err(e) => log::error!("sync {id}: could not put it back to pending: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::account::acct;
    use crate::sync_queue::tests::{enqueue, pw, setup};
    use crate::sync_queue::SyncStatus;

    /// A settle that worked is final: dropping the spent guard touches nothing.
    #[test]
    fn a_settled_claim_is_left_alone() {
        let (q, _) = setup();
        let id = enqueue(
            &q,
            &acct("alice", "web"),
            "password_change",
            &pw("New-Pass-1"),
            1,
        )
        .unwrap();
        let mut claimed = q.claim(1).unwrap();
        assert_eq!(claimed.len(), 1);
        claimed.remove(0).complete().unwrap();
        assert_eq!(q.get(id).unwrap().unwrap().status, SyncStatus::Completed);
    }

    /// One dropped unsettled goes back to pending, attempts untouched, and can be claimed again.
    #[test]
    fn a_claim_dropped_unsettled_goes_back_to_pending() {
        let (q, _) = setup();
        let id = enqueue(
            &q,
            &acct("alice", "web"),
            "password_change",
            &pw("New-Pass-1"),
            1,
        )
        .unwrap();
        drop(q.claim(1).unwrap());
        let item = q.get(id).unwrap().unwrap();
        assert_eq!(item.status, SyncStatus::Pending);
        assert_eq!(item.attempts, 0);
        assert!(q.store.sync_inflight.is_empty());
        assert_eq!(q.claim(1).unwrap().len(), 1);
    }

    /// Completed and failed items are counted in the item's own transaction.
    #[test]
    fn settles_bump_the_lifetime_counters() {
        use crate::store::meta::Counter;
        let (q, _) = setup();
        enqueue(
            &q,
            &acct("a", "web"),
            "password_change",
            &pw("New-Pass-1"),
            1,
        )
        .unwrap();
        enqueue(
            &q,
            &acct("b", "web"),
            "password_change",
            &pw("New-Pass-1"),
            1,
        )
        .unwrap();
        enqueue(
            &q,
            &acct("c", "web"),
            "password_change",
            &pw("New-Pass-1"),
            1,
        )
        .unwrap();
        let mut claimed = q.claim(3).unwrap().into_iter();
        claimed.next().unwrap().complete().unwrap();
        claimed.next().unwrap().fail("refused").unwrap();
        claimed
            .next()
            .unwrap()
            .retry("busy", std::time::Duration::from_secs(1))
            .unwrap();
        assert_eq!(q.store.counter(Counter::SyncCompleted).unwrap(), 1);
        assert_eq!(q.store.counter(Counter::SyncFailed).unwrap(), 1);
    }
}
