//! Many changes queued with one flush: what a caller with a batch in hand (an import, an
//! application sending a day's changes) pays once instead of once per change. Each change is
//! written exactly as [`SyncQueue::enqueue`] writes one, in order; only the flush is shared.

use super::{check_priority, Account, QueueError, SyncData, SyncQueue};
use uuid::Uuid;

impl SyncQueue {
    /// [`SyncQueue::enqueue`] of many changes, made durable by one flush: their SyncIds in
    /// order once all are on disk. Each is written in its own transaction, in order, as if
    /// enqueued one after another (a later password change of a user supersedes an earlier
    /// one); every priority is checked before anything is written. A crash before the flush
    /// may keep a first part of them, none acknowledged: sending the batch again is safe for
    /// every change type (a password change supersedes its twin, the others are idempotent).
    ///
    /// # Errors
    ///
    /// [`QueueError::InChange`] for the first priority 0, refusing the batch with nothing
    /// written; as [`SyncQueue::enqueue`] when the database fails.
    pub fn enqueue_many(
        &self,
        changes: Vec<(Account, SyncData, u32)>,
    ) -> Result<Vec<Uuid>, QueueError> {
        let total = changes.len();
        for (index, (_, _, priority)) in changes.iter().enumerate() {
            check_priority(*priority).map_err(|e| QueueError::in_change(index, total, e))?;
        }
        let mut ids = Vec::with_capacity(changes.len());
        for (account, data, priority) in changes {
            ids.push(self.write_new(&account, data, priority, None)?.id);
        }
        self.flush()?;
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{password_of, pw, setup};
    use super::*;
    use crate::account::acct;
    use crate::sync_queue::SyncStatus;
    #[test]
    fn a_batch_is_enqueued_in_order_as_one_after_another() {
        let (q, _) = setup();
        let change = |user: &str, p: &str| {
            let data = SyncData::parse("password_change", &pw(p)).unwrap();
            (acct(user, "web"), data, 1)
        };
        let ids = q
            .enqueue_many(vec![
                change("alice", "first-password"),
                change("bob", "bob-password"),
                change("alice", "second-password"),
            ])
            .unwrap();
        assert_eq!(ids.len(), 3);
        let status = |id| q.get(id).unwrap().unwrap().status;
        assert_eq!(status(ids[0]), SyncStatus::Superseded, "the later one wins");
        assert_eq!(status(ids[1]), SyncStatus::Pending);
        assert_eq!(status(ids[2]), SyncStatus::Pending);
        let claimed = q.claim(10).unwrap();
        let got: Vec<&str> = claimed.iter().map(password_of).collect();
        assert_eq!(got, vec!["bob-password", "second-password"]);
    }

    #[test]
    fn a_batch_with_a_bad_priority_writes_nothing() {
        let (q, _) = setup();
        let data = |p: &str| SyncData::parse("password_change", &pw(p)).unwrap();
        let refused = q.enqueue_many(vec![
            (acct("alice", "web"), data("one-password"), 1),
            (acct("bob", "web"), data("two-password"), 0),
        ]);
        match refused {
            Err(QueueError::InChange {
                index: 1,
                total: 2,
                source,
            }) => assert!(matches!(*source, QueueError::BadInput(_)), "{source:?}"),
            other => panic!("expected the second change refused: {other:?}"),
        }
        assert!(q.list().unwrap().is_empty());
    }
}
