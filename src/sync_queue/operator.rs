//! What an operator does to one item once the cause of a failure is fixed (the user created in
//! Keycloak, the password policy relaxed, a route repaired): send it again, or take it out.
//!
//! A failed item keeps its sealed data until it is removed (by [`SyncQueue::remove`] or the
//! failed-item cleanup), so that retrying it needs nobody to type a password again. The rules
//! that keep one user's changes in order hold here too: an item in flight is never touched,
//! and an item is not sent again once a newer change of the same user has reached Keycloak
//! (that would undo the newer one). A retried password change goes through "last password
//! wins" like any item coming back to pending.

use super::counts::{apply_deltas, apply_waiting_deltas, count_deltas, waiting_deltas};
use super::index::{by_user_key, delayed_key, order_key, tx_result};
use super::{QueueError, SyncItem, SyncQueue, SyncStatus, SyncType};
use crate::store::meta::{self, Counter};
use sled::transaction::TransactionError;
use sled::Transactional;
use uuid::Uuid;

/// Which failed items `queue retry --failed` sends again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailedFilter {
    /// Only this type.
    pub sync_type: Option<SyncType>,
    /// Only this user (compared case-insensitively, as usernames are), in any package.
    pub user: Option<String>,
}

impl FailedFilter {
    fn fits(&self, item: &SyncItem) -> bool {
        item.status == SyncStatus::Failed
            && self.sync_type.is_none_or(|t| t == item.sync_type)
            && self
                .user
                .as_deref()
                .is_none_or(|u| u.to_lowercase() == item.username.to_lowercase())
    }
}

/// What [`SyncQueue::retry_failed`] did.
#[derive(Debug, Default)]
pub struct RetriedFailed {
    /// Items back to pending, oldest first.
    pub retried: Vec<Uuid>,
    /// Items left failed, with why.
    pub refused: Vec<(Uuid, String)>,
}

/// Why an item cannot be retried or removed now; pure, so that the rules are tested alone.
/// `newer_applied` is a newer change of the same user that already reached Keycloak.
pub(super) fn retry_refusal(item: &SyncItem, newer_applied: Option<Uuid>) -> Option<String> {
    let id = item.sync_id;
    match item.status {
        SyncStatus::Processing => {
            return Some(format!(
            "sync item {id} is being sent to Keycloak right now; try again once the cycle is done"
        ))
        }
        SyncStatus::Completed => {
            return Some(format!("sync item {id} is already applied in Keycloak"))
        }
        SyncStatus::Superseded => {
            return Some(format!(
                "sync item {id} was superseded by a newer change ({}); it is not sent",
                item.last_error.as_deref().unwrap_or("newer change")
            ))
        }
        SyncStatus::Pending | SyncStatus::Failed => {}
    }
    if item.sealed_data.is_none() {
        return Some(format!(
            "sync item {id} has no data left to send (it failed before failed items kept theirs); queue the change again"
        ));
    }
    newer_applied.map(|newer| {
        format!(
            "sync item {id} is older than {newer}, a change of the same user already applied in Keycloak: sending it now would undo that one; queue the change again if it is still wanted"
        )
    })
}

impl SyncQueue {
    /// Sends `id` again at the next cycle: a failed item goes back to pending (its attempts
    /// and last error kept for the record), a pending one backing off becomes due now.
    /// Counted in [`Counter::QueueRetried`] in the same transaction.
    ///
    /// # Errors
    ///
    /// [`QueueError::NotFound`]; [`QueueError::Refused`] for an item in flight, applied,
    /// superseded, without data, or older than a change of its user already applied;
    /// [`QueueError::Store`] when the database fails.
    pub fn retry_item(&self, id: Uuid) -> Result<(), QueueError> {
        let now = self.clock.now();
        {
            let _g = self.guard();
            let old = self.get(id)?.ok_or(QueueError::NotFound(id))?;
            if let Some(why) = retry_refusal(&old, self.newer_applied(&old)?) {
                return Err(QueueError::Refused(why));
            }
            self.change_locked(old, now, Some(Counter::QueueRetried), |item, now| {
                item.status = SyncStatus::Pending;
                item.processed_at = None;
                item.delayed = false;
                item.next_attempt_at = now;
            })?;
        }
        log::info!("sync item {id} is pending again (operator retry)");
        self.flush()
    }

    /// [`SyncQueue::retry_item`] for every failed item `filter` selects, oldest first, so that
    /// one user's changes go back in the order they were made. An item the rules refuse is
    /// left failed and reported; it stops nothing else.
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] when the database fails.
    pub fn retry_failed(&self, filter: &FailedFilter) -> Result<RetriedFailed, QueueError> {
        let mut failed = Vec::new();
        self.for_each_item(|item| {
            if filter.fits(&item) {
                failed.push((item.seq, item.sync_id));
            }
        })?;
        failed.sort();
        let mut done = RetriedFailed::default();
        for (_, id) in failed {
            match self.retry_item(id) {
                Ok(()) => done.retried.push(id),
                Err(QueueError::Refused(why)) => done.refused.push((id, why)),
                Err(QueueError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Takes `id` out of the queue for good, its record and index entries in one transaction
    /// (a pending change is then never sent; a failed one's sealed data goes with it).
    /// Counted in [`Counter::QueueRemoved`]. Returns the item as it was.
    ///
    /// # Errors
    ///
    /// [`QueueError::NotFound`]; [`QueueError::Refused`] for an item in flight;
    /// [`QueueError::Store`] when the database fails.
    pub fn remove(&self, id: Uuid) -> Result<SyncItem, QueueError> {
        let old = {
            let _g = self.guard();
            let old = self.get(id)?.ok_or(QueueError::NotFound(id))?;
            if old.status == SyncStatus::Processing {
                return Err(QueueError::Refused(format!(
                    "sync item {id} is being sent to Keycloak right now; try again once the cycle is done"
                )));
            }
            self.delete_record(&old)?;
            old
        };
        log::info!(
            "sync item {id} ({}, {}) removed by an operator",
            old.sync_type.as_str(),
            old.status.as_str()
        );
        self.flush()?;
        Ok(old)
    }

    /// The newest change of `item`'s user queued after it that Keycloak applied, if any
    /// (one scan: an operator's command, not a hot path).
    fn newer_applied(&self, item: &SyncItem) -> Result<Option<Uuid>, QueueError> {
        let key = item.account_key();
        let mut newer = None;
        self.for_each_item(|other| {
            if other.seq > item.seq
                && other.status == SyncStatus::Completed
                && other.account_key() == key
            {
                newer = Some(other.sync_id);
            }
        })?;
        Ok(newer)
    }

    /// Removes a record that is not in flight, with its index entries and counters. Caller
    /// holds the lock.
    fn delete_record(&self, old: &SyncItem) -> Result<(), QueueError> {
        let deltas = count_deltas([(Some(old.status), None)]);
        let mut waiting = waiting_deltas([(None, old)]);
        for d in &mut waiting {
            *d = -*d;
        }
        let s = &self.store;
        let result: Result<(), TransactionError<()>> = (
            &s.sync_items,
            &s.sync_order,
            &s.sync_delayed,
            &s.sync_by_user,
            &s.meta,
        )
            .transaction(|(items, order, delayed, by_user, meta)| {
                items.remove(old.sync_id.as_bytes())?;
                order.remove(&order_key(old.priority, old.queued_at, old.seq)[..])?;
                delayed.remove(&delayed_key(old.next_attempt_at, old.seq)[..])?;
                by_user.remove(by_user_key(old))?;
                apply_deltas(meta, &deltas)?;
                apply_waiting_deltas(meta, &waiting)?;
                meta::bump_in(meta, Counter::QueueRemoved, 1)?;
                Ok(())
            });
        tx_result(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::acct;
    use crate::sync_queue::tests::{enqueue, password_of, pw, setup};

    fn failed_item(q: &SyncQueue, user: &str, password: &str) -> Uuid {
        let id = enqueue(q, &acct(user, "web"), "password_change", &pw(password), 5).unwrap();
        let claimed = q.claim(10).unwrap();
        let c = claimed.into_iter().find(|c| c.id() == id).expect("claimed");
        c.fail("password policy").unwrap();
        id
    }

    #[test]
    fn a_failed_item_keeps_its_sealed_data_and_goes_back_to_pending() {
        let (q, _clock) = setup();
        let id = failed_item(&q, "alice", "Policy-Refused-1");
        let failed = q.get(id).unwrap().unwrap();
        assert_eq!(failed.status, SyncStatus::Failed);
        assert!(failed.sealed_data.is_some(), "kept for a retry");
        assert_eq!(q.counts().unwrap().failed, 1);

        q.retry_item(id).unwrap();
        let back = q.get(id).unwrap().unwrap();
        assert_eq!(back.status, SyncStatus::Pending);
        assert_eq!(back.attempts, 1, "the record of the failed attempt is kept");
        let counts = q.counts().unwrap();
        assert_eq!((counts.pending, counts.failed), (1, 0));
        let claimed = q.claim(10).unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(password_of(&claimed[0]), "Policy-Refused-1");
        drop(claimed);
        assert_eq!(q.store.counter(Counter::QueueRetried).unwrap(), 1);
    }

    #[test]
    fn retry_is_refused_in_flight_after_success_and_behind_a_newer_applied_change() {
        let (q, _clock) = setup();
        let old = failed_item(&q, "bob", "Older-Password-1");
        let newer = enqueue(
            &q,
            &acct("bob", "web"),
            "password_change",
            &pw("Newer-Password-2"),
            5,
        )
        .unwrap();
        let claimed = q.claim(10).unwrap();
        assert_eq!(claimed[0].id(), newer);
        // In flight: neither retried nor removed.
        assert!(matches!(q.retry_item(newer), Err(QueueError::Refused(_))));
        assert!(matches!(q.remove(newer), Err(QueueError::Refused(_))));
        claimed.into_iter().next().unwrap().complete().unwrap();
        // Applied: nothing to retry; and the older failed one would undo it.
        assert!(matches!(q.retry_item(newer), Err(QueueError::Refused(_))));
        match q.retry_item(old) {
            Err(QueueError::Refused(why)) => assert!(why.contains(&newer.to_string()), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(q.get(old).unwrap().unwrap().status, SyncStatus::Failed);
        assert!(matches!(
            q.retry_item(Uuid::new_v4()),
            Err(QueueError::NotFound(_))
        ));
    }

    #[test]
    fn a_retried_password_change_loses_to_a_newer_pending_one() {
        let (q, _clock) = setup();
        let old = failed_item(&q, "carol", "Older-Password-1");
        let newer = enqueue(
            &q,
            &acct("carol", "web"),
            "password_change",
            &pw("Newer-Password-2"),
            5,
        )
        .unwrap();
        q.retry_item(old).unwrap();
        assert_eq!(q.get(old).unwrap().unwrap().status, SyncStatus::Superseded);
        assert_eq!(q.get(newer).unwrap().unwrap().status, SyncStatus::Pending);
    }

    #[test]
    fn retry_failed_follows_the_filter_oldest_first() {
        let (q, _clock) = setup();
        let a = failed_item(&q, "dave", "Dave-Password-1");
        let b = failed_item(&q, "erin", "Erin-Password-1");
        let only_erin = FailedFilter {
            user: Some("ERIN".into()),
            ..FailedFilter::default()
        };
        let done = q.retry_failed(&only_erin).unwrap();
        assert_eq!(done.retried, vec![b]);
        assert_eq!(q.get(a).unwrap().unwrap().status, SyncStatus::Failed);
        let other_type = FailedFilter {
            sync_type: Some(SyncType::UserDelete),
            ..FailedFilter::default()
        };
        assert!(q.retry_failed(&other_type).unwrap().retried.is_empty());
        let done = q.retry_failed(&FailedFilter::default()).unwrap();
        assert_eq!(done.retried, vec![a]);
    }

    #[test]
    fn remove_takes_the_record_its_indexes_and_its_counts() {
        let (q, _clock) = setup();
        let pending = enqueue(
            &q,
            &acct("frank", "web"),
            "password_change",
            &pw("Frank-Password-1"),
            5,
        )
        .unwrap();
        let failed = failed_item(&q, "gina", "Gina-Password-1");
        assert_eq!(q.pending_count(), 1);
        assert_eq!(q.remove(pending).unwrap().sync_id, pending);
        assert_eq!(q.remove(failed).unwrap().status, SyncStatus::Failed);
        assert!(q.get(pending).unwrap().is_none());
        assert_eq!(q.counts().unwrap().total(), 0);
        assert_eq!(q.pending_count(), 0);
        assert!(q.waiting_by_type().unwrap().iter().all(|(_, n)| *n == 0));
        assert!(q.claim(10).unwrap().is_empty(), "nothing left to claim");
        assert!(!q.has_pending_change(&acct("frank", "web")).unwrap());
        assert!(matches!(q.remove(pending), Err(QueueError::NotFound(_))));
        assert_eq!(q.store.counter(Counter::QueueRemoved).unwrap(), 2);
    }
}
