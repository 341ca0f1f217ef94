//! Per-status item counters kept in `meta` by every queue transaction, so counts are O(1).

use super::{tx_result, QueueError, SyncItem, SyncQueue, SyncStatus, SyncType};
use crate::store::meta::{self, MetaKey};
use serde::{Deserialize, Serialize};
use sled::transaction::TransactionError;
use sled::Transactional;

/// Counts per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    /// Waiting.
    pub pending: usize,
    /// Claimed right now.
    pub processing: usize,
    /// Applied.
    pub completed: usize,
    /// Replaced by a newer change.
    pub superseded: usize,
    /// Refused for good.
    pub failed: usize,
}

impl QueueCounts {
    pub(super) fn slot(&mut self, status: SyncStatus) -> &mut usize {
        match status {
            SyncStatus::Pending => &mut self.pending,
            SyncStatus::Processing => &mut self.processing,
            SyncStatus::Completed => &mut self.completed,
            SyncStatus::Superseded => &mut self.superseded,
            SyncStatus::Failed => &mut self.failed,
        }
    }

    /// The count of `status`.
    pub fn of(&self, status: SyncStatus) -> usize {
        let mut copy = *self;
        *copy.slot(status)
    }

    /// Every item counted.
    pub fn total(&self) -> usize {
        self.pending + self.processing + self.completed + self.superseded + self.failed
    }
}

pub(super) const ALL_STATUSES: [SyncStatus; 5] = [
    SyncStatus::Pending,
    SyncStatus::Processing,
    SyncStatus::Completed,
    SyncStatus::Superseded,
    SyncStatus::Failed,
];

/// The `meta` key of the counter of items in `status` (see [`meta::sync_count_key`]).
fn count_key(status: SyncStatus) -> String {
    meta::sync_count_key(status.as_str())
}

/// Present in `meta` once the counters hold every item.
pub(super) const COUNTS_BUILT: &str = MetaKey::SyncCountsBuilt.name();

/// Net change of each status's counter for a set of item changes. Pure.
pub(super) fn count_deltas(
    changes: impl IntoIterator<Item = (Option<SyncStatus>, Option<SyncStatus>)>,
) -> [i64; 5] {
    let index = |s: SyncStatus| ALL_STATUSES.iter().position(|x| *x == s).unwrap_or(0);
    let mut deltas = [0i64; 5];
    for (old, new) in changes {
        if let Some(old) = old {
            deltas[index(old)] -= 1;
        }
        if let Some(new) = new {
            deltas[index(new)] += 1;
        }
    }
    deltas
}

/// Whether an item in `status` still waits to reach Keycloak (pending or in flight).
fn waiting(status: SyncStatus) -> bool {
    matches!(status, SyncStatus::Pending | SyncStatus::Processing)
}

fn type_index(t: SyncType) -> usize {
    SyncType::EVERY.iter().position(|x| *x == t).unwrap_or(0)
}

/// Net change of each type's waiting counter for a set of item changes. Pure.
pub(super) fn waiting_deltas<'a>(
    changes: impl IntoIterator<Item = (Option<&'a SyncItem>, &'a SyncItem)>,
) -> [i64; 5] {
    let mut deltas = [0i64; 5];
    for (old, new) in changes {
        if let Some(old) = old.filter(|o| waiting(o.status)) {
            deltas[type_index(old.sync_type)] -= 1;
        }
        if waiting(new.status) {
            deltas[type_index(new.sync_type)] += 1;
        }
    }
    deltas
}

/// Adds `deltas` to the per-type waiting counters inside a transaction on `meta`.
pub(super) fn apply_waiting_deltas(
    meta: &sled::transaction::TransactionalTree,
    deltas: &[i64; 5],
) -> Result<(), sled::transaction::UnabortableTransactionError> {
    for (t, delta) in SyncType::EVERY.iter().zip(deltas) {
        if *delta != 0 {
            add(meta, &meta::sync_waiting_key(t.as_str()), *delta)?;
        }
    }
    Ok(())
}

fn add(
    meta: &sled::transaction::TransactionalTree,
    key: &str,
    delta: i64,
) -> Result<(), sled::transaction::UnabortableTransactionError> {
    let old = meta::read_u64(meta.get(key.as_bytes())?.as_deref());
    let new = if delta < 0 {
        old.saturating_sub(delta.unsigned_abs())
    } else {
        old.saturating_add(delta.unsigned_abs())
    };
    meta.insert(key.as_bytes(), &new.to_be_bytes()[..])?;
    Ok(())
}

/// Adds `deltas` to the counters inside a transaction on `meta`.
pub(super) fn apply_deltas(
    meta: &sled::transaction::TransactionalTree,
    deltas: &[i64; 5],
) -> Result<(), sled::transaction::UnabortableTransactionError> {
    for (status, delta) in ALL_STATUSES.iter().zip(deltas) {
        if *delta == 0 {
            continue;
        }
        let key = count_key(*status);
        let old = meta::read_u64(meta.get(key.as_bytes())?.as_deref());
        let new = if *delta < 0 {
            old.saturating_sub(delta.unsigned_abs())
        } else {
            old.saturating_add(delta.unsigned_abs())
        };
        meta.insert(key.as_bytes(), &new.to_be_bytes()[..])?;
    }
    Ok(())
}

impl SyncQueue {
    /// Counts per status: read from counters kept in `meta` by every write, so O(1). A
    /// database without counters (written before layout 2) gets them built by one scan, once.
    /// Damaged records are not counted.
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] when the database fails.
    pub fn counts(&self) -> Result<QueueCounts, QueueError> {
        if self.store.meta.get(COUNTS_BUILT.as_bytes())?.is_none() {
            return self.rebuild_counts();
        }
        let mut c = QueueCounts::default();
        for status in ALL_STATUSES {
            let n = meta::read_u64(
                self.store
                    .meta
                    .get(count_key(status).as_bytes())?
                    .as_deref(),
            );
            *c.slot(status) = usize::try_from(n).unwrap_or(usize::MAX);
        }
        Ok(c)
    }

    /// Items still waiting to reach Keycloak (pending or in flight), per sync type, in
    /// [`SyncType::EVERY`]'s order: from counters kept by every write, so O(1); built by one
    /// scan on a database from before them.
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] when the database fails.
    pub fn waiting_by_type(&self) -> Result<Vec<(SyncType, usize)>, QueueError> {
        if self
            .store
            .meta
            .get(MetaKey::SyncWaitingBuilt.name().as_bytes())?
            .is_none()
        {
            self.rebuild_counts()?;
        }
        let mut out = Vec::new();
        for t in SyncType::EVERY {
            let key = meta::sync_waiting_key(t.as_str());
            let n = meta::read_u64(self.store.meta.get(key.as_bytes())?.as_deref());
            out.push((t, usize::try_from(n).unwrap_or(usize::MAX)));
        }
        Ok(out)
    }

    /// Recounts every item (one scan) and stores the counters. Runs by itself once on a
    /// database that has none; callable to repair counters after damage was found.
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] when the database fails.
    pub fn rebuild_counts(&self) -> Result<QueueCounts, QueueError> {
        let _g = self.guard();
        let mut c = QueueCounts::default();
        let mut by_type = [0u64; 5];
        self.for_each_item(|item| {
            *c.slot(item.status) += 1;
            if waiting(item.status) {
                by_type[type_index(item.sync_type)] += 1;
            }
        })?;
        let result: Result<(), TransactionError<()>> = self.store.meta.transaction(|meta| {
            for status in ALL_STATUSES {
                let n = c.of(status) as u64;
                meta.insert(count_key(status).as_bytes(), &n.to_be_bytes()[..])?;
            }
            for (t, n) in SyncType::EVERY.iter().zip(by_type) {
                let key = meta::sync_waiting_key(t.as_str());
                meta.insert(key.as_bytes(), &n.to_be_bytes()[..])?;
            }
            meta.insert(COUNTS_BUILT.as_bytes(), &[1u8][..])?;
            meta.insert(MetaKey::SyncWaitingBuilt.name().as_bytes(), &[1u8][..])?;
            Ok(())
        });
        tx_result(result)?;
        log::info!("sync queue counters built: {} item(s)", c.total());
        Ok(c)
    }

    /// Takes the index entry `key` of a damaged record out of `index`, and the record out of
    /// the counter of `counted_as` (the status that index implies), in one transaction, so the
    /// counts agree with a scan (which skips damaged records). The record itself stays.
    pub(super) fn drop_damaged(
        &self,
        index: &sled::Tree,
        key: &[u8],
        counted_as: SyncStatus,
    ) -> Result<(), QueueError> {
        let deltas = count_deltas([(Some(counted_as), None)]);
        let result: Result<(), TransactionError<()>> =
            (index, &self.store.meta).transaction(|(index, meta)| {
                if index.remove(key)?.is_some() {
                    apply_deltas(meta, &deltas)?;
                }
                Ok(())
            });
        tx_result(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::acct;
    use crate::sync_queue::tests::{assert_counts_match_a_scan, claim_ids, enqueue, pw, setup};
    use chrono::Duration;

    #[test]
    fn counters_follow_every_transition_and_agree_with_a_scan() {
        let (q, clock) = setup();
        assert_eq!(q.counts().unwrap(), QueueCounts::default());
        let a = enqueue(&q, &acct("a", "p"), "password_change", &pw("pw-aaaaaa"), 1).unwrap();
        let b = enqueue(&q, &acct("b", "p"), "password_change", &pw("pw-bbbbbb"), 1).unwrap();
        let c = enqueue(&q, &acct("c", "p"), "password_change", &pw("pw-cccccc"), 1).unwrap();
        assert_counts_match_a_scan(&q);
        assert_eq!(q.counts().unwrap().pending, 3);
        claim_ids(&q, 10);
        assert_eq!(q.counts().unwrap().processing, 3);
        q.complete(a).unwrap();
        q.fail(b, "user not found", true).unwrap();
        q.retry(c, "HTTP 409", std::time::Duration::from_secs(1))
            .unwrap();
        enqueue(
            &q,
            &acct("c", "p"),
            "password_change",
            &pw("pw-cccccc-2"),
            1,
        )
        .unwrap();
        let counts = q.counts().unwrap();
        assert_eq!(
            (
                counts.pending,
                counts.processing,
                counts.completed,
                counts.failed,
                counts.superseded
            ),
            (1, 0, 1, 1, 1)
        );
        assert_counts_match_a_scan(&q);
        assert_eq!(q.pending_count(), 1);
        clock.advance(Duration::days(40));
        assert_eq!(q.cleanup(std::time::Duration::from_secs(86400)).unwrap(), 2);
        assert_eq!(
            q.cleanup_failed(std::time::Duration::from_secs(86400))
                .unwrap(),
            1
        );
        assert_eq!(q.counts().unwrap().total(), 1);
        assert_counts_match_a_scan(&q);
    }
}
