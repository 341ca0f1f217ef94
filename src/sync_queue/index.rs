//! The big-endian index keys (order, delayed, by user) and the one write transaction that keeps
//! an item, its index entries and the per-status counters together.

use super::counts::{apply_deltas, apply_waiting_deltas, count_deltas, waiting_deltas};
use super::item::encode_item;
use super::local_change::{apply_local_change, LocalChange, WriteAbort};
use super::{QueueError, SyncItem, SyncQueue, SyncStatus};
use crate::store::meta::{self, Counter};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use uuid::Uuid;

/// times — never expected — still sort before positive ones).
pub(super) fn time_bytes(t: DateTime<Utc>) -> [u8; 8] {
    ((t.timestamp_micros() as u64) ^ (1 << 63)).to_be_bytes()
}

/// The ordering key of a pending item that is due: priority, then queue time, then sequence —
/// all big-endian so sled's byte order is the queue order. Pure; tested without sled.
pub fn order_key(priority: u32, queued_at: DateTime<Utc>, seq: u64) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..4].copy_from_slice(&priority.to_be_bytes());
    key[4..12].copy_from_slice(&time_bytes(queued_at));
    key[12..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The key of a pending item backing off: due time, then sequence, big-endian, so the items
/// due by a given time are one range scan from the start of `sync_delayed`. Pure.
pub fn delayed_key(due: DateTime<Utc>, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&time_bytes(due));
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The prefix of an account's entries in `sync_by_user`: its key ([`crate::account::user_key`]),
/// then 0x00.
pub(super) fn by_user_prefix(account_key: Vec<u8>) -> Vec<u8> {
    let mut key = account_key;
    key.push(0);
    key
}

pub(super) fn by_user_key(item: &SyncItem) -> Vec<u8> {
    let mut key = by_user_prefix(item.account_key());
    key.extend_from_slice(item.sync_id.as_bytes());
    key
}

/// A sync id stored as a key or value; `None` when the bytes are not one.
pub(super) fn id_of(bytes: &[u8]) -> Option<Uuid> {
    Uuid::from_slice(bytes).ok()
}

/// How to name a record in a log line without showing its content.
pub(super) fn key_name(key: &[u8]) -> String {
    match id_of(key) {
        Some(id) => id.to_string(),
        None => format!("<malformed key of {} bytes>", key.len()),
    }
}

/// True for errors that mean one stored record is unreadable (as opposed to the database
/// failing): those are logged and skipped by scans so that one bad record stops nothing else.
pub(super) fn is_damage(e: &QueueError) -> bool {
    matches!(
        e,
        QueueError::Corrupt(_) | QueueError::Store(StoreError::Corrupt { .. })
    )
}

/// Changes to write together: (the record as read, if any; the record to write).
pub(super) type Changes = Vec<(Option<SyncItem>, SyncItem)>;

pub(super) fn tx_result(result: Result<(), TransactionError<()>>) -> Result<(), QueueError> {
    result.map_err(|e| match e {
        TransactionError::Storage(e) => QueueError::from(e),
        TransactionError::Abort(()) => QueueError::Corrupt("transaction aborted".into()),
    })
}

impl SyncQueue {
    /// The ids of an account's pending items, from `sync_by_user` (a user's own few: a prefix
    /// scan). A malformed entry is logged and skipped.
    pub(super) fn pending_ids_of(&self, account_key: Vec<u8>) -> Result<Vec<Uuid>, QueueError> {
        let mut ids = Vec::new();
        for entry in self
            .store
            .sync_by_user
            .scan_prefix(by_user_prefix(account_key))
        {
            let (key, _) = entry?;
            match key.get(key.len().saturating_sub(16)..).and_then(id_of) {
                Some(id) => ids.push(id),
                None => log::error!("sync_by_user entry with a malformed sync id: skipped"),
            }
        }
        Ok(ids)
    }

    /// Writes item changes and their index entries in one transaction. Index membership is
    /// derived from the record alone: pending and not delayed → `sync_order`; pending and
    /// delayed → `sync_delayed`; pending (any type) → `sync_by_user` as well;
    /// processing → `sync_inflight`; finished → no index. The per-status counters in `meta`
    /// change in the same transaction.
    pub(super) fn write(&self, changes: &[(Option<SyncItem>, SyncItem)]) -> Result<(), QueueError> {
        self.write_with(changes, None, None)
    }

    /// [`SyncQueue::write`], plus a local user record changed, and `counter` bumped, in the same
    /// transaction.
    pub(super) fn write_with(
        &self,
        changes: &[(Option<SyncItem>, SyncItem)],
        local: Option<&LocalChange<'_>>,
        counter: Option<Counter>,
    ) -> Result<(), QueueError> {
        let mut encoded = Vec::with_capacity(changes.len());
        for (_, new) in changes {
            encoded.push(encode_item(new)?);
        }
        let deltas = count_deltas(
            changes
                .iter()
                .map(|(old, new)| (old.as_ref().map(|o| o.status), Some(new.status))),
        );
        let waiting = waiting_deltas(changes.iter().map(|(old, new)| (old.as_ref(), new)));
        let s = &self.store;
        let result: Result<(), TransactionError<WriteAbort>> = (
            &s.sync_items,
            &s.sync_order,
            &s.sync_by_user,
            &s.sync_inflight,
            &s.sync_delayed,
            &s.meta,
            &s.local_users,
            &s.token_cache,
        )
            .transaction(
                |(items, order, by_user, inflight, delayed, meta, users, cache)| {
                    if let Some(local) = local {
                        apply_local_change(users, cache, local)?;
                    }
                    apply_deltas(meta, &deltas)?;
                    apply_waiting_deltas(meta, &waiting)?;
                    if let Some(counter) = counter {
                        meta::bump_in(meta, counter, 1)?;
                    }
                    for ((old, new), bytes) in changes.iter().zip(&encoded) {
                        if let Some(old) = old {
                            order.remove(&order_key(old.priority, old.queued_at, old.seq)[..])?;
                            delayed.remove(&delayed_key(old.next_attempt_at, old.seq)[..])?;
                            by_user.remove(by_user_key(old))?;
                            inflight.remove(old.sync_id.as_bytes())?;
                        }
                        items.insert(new.sync_id.as_bytes(), bytes.as_slice())?;
                        match new.status {
                            SyncStatus::Pending => {
                                if new.delayed {
                                    delayed.insert(
                                        &delayed_key(new.next_attempt_at, new.seq)[..],
                                        new.sync_id.as_bytes(),
                                    )?;
                                } else {
                                    order.insert(
                                        &order_key(new.priority, new.queued_at, new.seq)[..],
                                        new.sync_id.as_bytes(),
                                    )?;
                                }
                                by_user.insert(by_user_key(new), &[][..])?;
                            }
                            SyncStatus::Processing => {
                                inflight.insert(new.sync_id.as_bytes(), &[][..])?;
                            }
                            _ => {}
                        }
                    }
                    Ok::<(), ConflictableTransactionError<WriteAbort>>(())
                },
            );
        result.map_err(|e| match e {
            TransactionError::Storage(e) => QueueError::from(e),
            TransactionError::Abort(WriteAbort::LocalUserMissing) => {
                QueueError::LocalUser("the user was removed meanwhile; nothing changed".into())
            }
            TransactionError::Abort(WriteAbort::Local(e)) => {
                QueueError::LocalUser(format!("{e}; nothing changed"))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    #[test]
    fn order_keys_sort_by_priority_then_time_then_sequence() {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let later = t + Duration::seconds(1);
        let mut keys = vec![
            order_key(2, t, 1),
            order_key(1, later, 2),
            order_key(1, t, 9),
            order_key(1, t, 3),
            order_key(300, t, 0),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                order_key(1, t, 3),
                order_key(1, t, 9),
                order_key(1, later, 2),
                order_key(2, t, 1),
                order_key(300, t, 0)
            ]
        );
    }

    #[test]
    fn delayed_keys_sort_by_due_time_then_sequence() {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let later = t + Duration::microseconds(1);
        let mut keys = vec![delayed_key(later, 0), delayed_key(t, 7), delayed_key(t, 2)];
        keys.sort();
        assert_eq!(
            keys,
            vec![delayed_key(t, 2), delayed_key(t, 7), delayed_key(later, 0)]
        );
        assert!(delayed_key(t, u64::MAX) < delayed_key(later, 0));
    }
}
