//! The durable sync queue: changes made while Keycloak was away, replayed in priority order.
//!
//! Storage is four sled trees written together in one transaction per change, so an item and
//! its index entries can never disagree:
//! - `sync_items`: sync id → [`SyncItem`] (the record of the original `sync_queue` table);
//! - `sync_order`: [`order_key`] (priority, queue time, sequence; big-endian so byte order is
//!   numeric order) → sync id, for *pending* items only: the next batch is the first keys;
//! - `sync_by_user`: (user, package, id) for pending password changes: superseding is a prefix
//!   scan, not a queue scan;
//! - `sync_inflight`: ids claimed by a cycle; a crash leaves them there and [`SyncQueue::recover`]
//!   puts them back to pending.
//!
//! Enqueue flushes before it returns. Sync data is validated against its type at enqueue and
//! sealed at rest; once an item is finished (completed, superseded, failed) its data is wiped.

use crate::clock::SharedClock;
use crate::store::{self, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

const TREE: &str = "sync_items";

/// Lowest (most urgent) priority.
pub const PRIORITY_HIGHEST: u32 = 1;
/// Priority when none is given.
pub const PRIORITY_DEFAULT: u32 = 5;

/// Where an item is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncStatus {
    /// Waiting for Keycloak.
    Pending,
    /// Claimed by a running cycle.
    Processing,
    /// Applied in Keycloak.
    Completed,
    /// Replaced by a newer change before it ran.
    Superseded,
    /// Keycloak refused it for good (reason in `last_error`).
    Failed,
}

impl SyncStatus {
    /// Lowercase name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Pending => "pending",
            SyncStatus::Processing => "processing",
            SyncStatus::Completed => "completed",
            SyncStatus::Superseded => "superseded",
            SyncStatus::Failed => "failed",
        }
    }

    /// True once nothing more will happen to the item.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            SyncStatus::Completed | SyncStatus::Superseded | SyncStatus::Failed
        )
    }
}

/// The kinds of change the queue knows how to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncType {
    /// Set the user's Keycloak password. Data: `{"password": "…"}`.
    PasswordChange,
}

impl SyncType {
    /// Every known type, for error messages and `--help`.
    pub const ALL: &'static [&'static str] = &["password_change"];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncType::PasswordChange => "password_change",
        }
    }
}

impl std::str::FromStr for SyncType {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<Self, QueueError> {
        match s {
            "password_change" => Ok(SyncType::PasswordChange),
            other => Err(QueueError::UnknownType(other.to_string())),
        }
    }
}

/// The validated data of an item (secrets inside; never logged).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The new password.
    pub password: String,
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordChange { password: *** }")
    }
}

/// The data of an item, by type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncData {
    /// See [`PasswordChange`].
    PasswordChange(PasswordChange),
}

impl SyncData {
    /// Validates JSON `data` against `sync_type`.
    pub fn from_json(sync_type: SyncType, data: &serde_json::Value) -> Result<SyncData, QueueError> {
        match sync_type {
            SyncType::PasswordChange => {
                let pc: PasswordChange = serde_json::from_value(data.clone()).map_err(|e| {
                    QueueError::BadData {
                        sync_type: sync_type.as_str(),
                        // serde's message names the field, never the value of a string.
                        reason: e.to_string(),
                    }
                })?;
                if pc.password.is_empty() {
                    return Err(QueueError::BadData {
                        sync_type: sync_type.as_str(),
                        reason: "field `password` must not be empty".into(),
                    });
                }
                Ok(SyncData::PasswordChange(pc))
            }
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        match self {
            SyncData::PasswordChange(pc) => pc.password.as_bytes().to_vec(),
        }
    }

    fn from_bytes(sync_type: SyncType, bytes: Vec<u8>) -> Result<SyncData, QueueError> {
        match sync_type {
            SyncType::PasswordChange => Ok(SyncData::PasswordChange(PasswordChange {
                password: String::from_utf8(bytes)
                    .map_err(|_| QueueError::Corrupt("password is not UTF-8".into()))?,
            })),
        }
    }
}

/// What can go wrong with the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The sync type is not one this build replays.
    #[error("unknown sync type {0:?} (known: {known})", known = SyncType::ALL.join(", "))]
    UnknownType(String),
    /// The data does not fit the type.
    #[error("sync data does not fit type {sync_type}: {reason}")]
    BadData {
        /// The type it was checked against.
        sync_type: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A bad user, package or priority.
    #[error("{0}")]
    BadInput(String),
    /// No such item.
    #[error("no sync item {0}")]
    NotFound(Uuid),
    /// A stored item is unreadable.
    #[error("damaged sync item: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sled::Error> for QueueError {
    fn from(e: sled::Error) -> Self {
        QueueError::Store(StoreError::Sled(e))
    }
}

/// One queued change (the original table's fields, plus what the queue needs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncItem {
    /// SyncId.
    pub sync_id: Uuid,
    /// The user the change is about.
    pub username: String,
    /// The package (application) of the user.
    pub package: String,
    /// What to do.
    pub sync_type: SyncType,
    /// Sealed data; `None` once the item is finished.
    sealed_data: Option<Vec<u8>>,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
    /// When it reached its current finished state.
    pub processed_at: Option<DateTime<Utc>>,
    /// Where it is in its life.
    pub status: SyncStatus,
    /// Attempts that Keycloak itself answered with an error (outages do not count).
    pub attempts: u32,
    /// The last error, or the reason it failed / was superseded.
    pub last_error: Option<String>,
    /// 1 is most urgent.
    pub priority: u32,
    /// Not retried before this time (backoff).
    pub next_attempt_at: DateTime<Utc>,
    /// Tie-breaker for items queued in the same microsecond.
    seq: u64,
}

/// A claimed item with its opened data.
#[derive(Debug)]
pub struct Claimed {
    /// The item (status `processing`).
    pub item: SyncItem,
    /// Its data, unsealed.
    pub data: SyncData,
}

/// Counts per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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

/// The ordering key of a pending item: priority, then queue time, then sequence — all
/// big-endian so sled's byte order is the queue order. Pure; tested without sled.
pub fn order_key(priority: u32, queued_at: DateTime<Utc>, seq: u64) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..4].copy_from_slice(&priority.to_be_bytes());
    // Flip the sign bit so negative times (never expected) still sort before positive ones.
    let micros = (queued_at.timestamp_micros() as u64) ^ (1 << 63);
    key[4..12].copy_from_slice(&micros.to_be_bytes());
    key[12..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn by_user_prefix(username: &str, package: &str) -> Vec<u8> {
    let mut key = store::user_key(username, package);
    key.push(0);
    key
}

fn by_user_key(item: &SyncItem) -> Vec<u8> {
    let mut key = by_user_prefix(&item.username, &item.package);
    key.extend_from_slice(item.sync_id.as_bytes());
    key
}

/// The queue over the store.
#[derive(Clone)]
pub struct SyncQueue {
    store: Arc<Store>,
    clock: SharedClock,
    /// Serialises read-modify-write of items within this process (sled's lock keeps other
    /// processes out of the directory altogether).
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

    /// Validates, seals and stores a change; supersedes older pending password changes of the
    /// same (user, package); flushes to disk before returning the new SyncId.
    pub fn enqueue(
        &self,
        username: &str,
        package: &str,
        sync_type: &str,
        data: &serde_json::Value,
        priority: u32,
    ) -> Result<Uuid, QueueError> {
        let sync_type: SyncType = sync_type.parse()?;
        let data = SyncData::from_json(sync_type, data)?;
        self.enqueue_data(username, package, data, priority)
    }

    /// [`SyncQueue::enqueue`] with data that is already typed.
    pub fn enqueue_data(
        &self,
        username: &str,
        package: &str,
        data: SyncData,
        priority: u32,
    ) -> Result<Uuid, QueueError> {
        check_name("user", username)?;
        check_name("package", package)?;
        if priority == 0 {
            return Err(QueueError::BadInput("priority must be 1 or more (1 runs first)".into()));
        }
        let sync_type = match data {
            SyncData::PasswordChange(_) => SyncType::PasswordChange,
        };
        let now = self.clock.now();
        let item = SyncItem {
            sync_id: Uuid::new_v4(),
            username: username.to_string(),
            package: package.to_string(),
            sync_type,
            sealed_data: Some(self.store.sealer().seal(&data.to_bytes()).map_err(StoreError::from)?),
            queued_at: now,
            processed_at: None,
            status: SyncStatus::Pending,
            attempts: 0,
            last_error: None,
            priority,
            next_attempt_at: now,
            seq: self.store.next_id()?,
        };
        let _g = self.guard();
        let mut changes: Vec<(Option<SyncItem>, SyncItem)> = Vec::new();
        if sync_type == SyncType::PasswordChange {
            for entry in self.store.sync_by_user.scan_prefix(by_user_prefix(username, package)) {
                let (key, _) = entry?;
                let Some(id) = key.get(key.len().saturating_sub(16)..).and_then(|b| Uuid::from_slice(b).ok()) else {
                    continue;
                };
                let old = self.get(id)?.ok_or(QueueError::NotFound(id))?;
                if old.status == SyncStatus::Pending && old.sync_type == SyncType::PasswordChange {
                    let mut new = old.clone();
                    new.status = SyncStatus::Superseded;
                    new.processed_at = Some(now);
                    new.sealed_data = None;
                    new.last_error = Some(format!("superseded by {}", item.sync_id));
                    changes.push((Some(old), new));
                }
            }
        }
        changes.push((None, item.clone()));
        self.write(&changes)?;
        self.store.flush()?;
        Ok(item.sync_id)
    }

    /// One item by id.
    pub fn get(&self, id: Uuid) -> Result<Option<SyncItem>, QueueError> {
        Ok(store::get(&self.store.sync_items, TREE, id.as_bytes())?)
    }

    /// Claims up to `batch` due pending items in queue order and marks them `processing`.
    pub fn claim(&self, batch: usize) -> Result<Vec<Claimed>, QueueError> {
        let now = self.clock.now();
        let _g = self.guard();
        let mut claimed = Vec::new();
        for entry in self.store.sync_order.iter() {
            if claimed.len() >= batch {
                break;
            }
            let (_, id) = entry?;
            let id = Uuid::from_slice(&id).map_err(|e| QueueError::Corrupt(e.to_string()))?;
            let Some(item) = self.get(id)? else {
                continue;
            };
            if item.next_attempt_at > now {
                continue;
            }
            let data = match self.open(&item) {
                Ok(d) => d,
                Err(e) => {
                    // An item whose secret cannot be opened can never run: fail it, visibly.
                    log::error!("sync item {id}: {e}; marking failed");
                    let mut failed = item.clone();
                    finish(&mut failed, SyncStatus::Failed, now, Some(format!("unreadable: {e}")));
                    self.write(&[(Some(item), failed)])?;
                    continue;
                }
            };
            let mut new = item.clone();
            new.status = SyncStatus::Processing;
            self.write(&[(Some(item), new.clone())])?;
            claimed.push(Claimed { item: new, data });
        }
        Ok(claimed)
    }

    fn open(&self, item: &SyncItem) -> Result<SyncData, QueueError> {
        let sealed = item
            .sealed_data
            .as_deref()
            .ok_or_else(|| QueueError::Corrupt("pending item without data".into()))?;
        let bytes = self.store.sealer().open(sealed).map_err(StoreError::from)?;
        SyncData::from_bytes(item.sync_type, bytes)
    }

    /// Keycloak applied the change.
    pub fn complete(&self, id: Uuid) -> Result<(), QueueError> {
        self.transition(id, |item, now| finish(item, SyncStatus::Completed, now, None::<String>))
    }

    /// Keycloak refused the change for good.
    pub fn fail(&self, id: Uuid, reason: &str) -> Result<(), QueueError> {
        self.transition(id, |item, now| {
            item.attempts = item.attempts.saturating_add(1);
            finish(item, SyncStatus::Failed, now, Some(reason.to_string()))
        })
    }

    /// Keycloak refused for a passing reason: count the attempt, retry after `delay`.
    pub fn retry(&self, id: Uuid, reason: &str, delay: std::time::Duration) -> Result<(), QueueError> {
        self.transition(id, |item, now| {
            item.attempts = item.attempts.saturating_add(1);
            item.status = SyncStatus::Pending;
            item.last_error = Some(reason.to_string());
            item.next_attempt_at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        })
    }

    /// Keycloak was not reached (or the queue is blocked): back to pending, attempts untouched.
    pub fn release(&self, id: Uuid, reason: Option<&str>) -> Result<(), QueueError> {
        self.transition(id, |item, _| {
            item.status = SyncStatus::Pending;
            if let Some(r) = reason {
                item.last_error = Some(r.to_string());
            }
        })
    }

    fn transition(&self, id: Uuid, change: impl FnOnce(&mut SyncItem, DateTime<Utc>)) -> Result<(), QueueError> {
        let now = self.clock.now();
        let _g = self.guard();
        let old = self.get(id)?.ok_or(QueueError::NotFound(id))?;
        let mut new = old.clone();
        change(&mut new, now);
        self.write(&[(Some(old), new)])
    }

    /// Puts items left `processing` by a crash back to `pending`; returns how many.
    pub fn recover(&self) -> Result<usize, QueueError> {
        let ids: Vec<Uuid> = self
            .store
            .sync_inflight
            .iter()
            .keys()
            .map(|k| Uuid::from_slice(&k?).map_err(|e| QueueError::Corrupt(e.to_string())))
            .collect::<Result<_, QueueError>>()?;
        for id in &ids {
            log::warn!("sync item {id} was left processing (crash?); back to pending");
            self.release(*id, None)?;
        }
        if !ids.is_empty() {
            self.store.flush()?;
        }
        Ok(ids.len())
    }

    /// Items in queue order (pending first, by priority and time), then the rest by time.
    pub fn list(&self) -> Result<Vec<SyncItem>, QueueError> {
        let mut items = Vec::new();
        for entry in self.store.sync_items.iter() {
            let (_, bytes) = entry?;
            items.push(store::decode::<SyncItem>(TREE, &bytes)?);
        }
        items.sort_by_key(|i| (i.status != SyncStatus::Pending, order_key(i.priority, i.queued_at, i.seq)));
        Ok(items)
    }

    /// Pending password changes for (user, package): a pending one explains why Keycloak still
    /// has the old password.
    pub fn has_pending_password_change(&self, username: &str, package: &str) -> Result<bool, QueueError> {
        let pending = self.store.sync_by_user.scan_prefix(by_user_prefix(username, package)).next().transpose()?.is_some();
        let inflight = if pending {
            false
        } else {
            self.store.sync_inflight.iter().keys().any(|k| {
                k.ok()
                    .and_then(|k| Uuid::from_slice(&k).ok())
                    .and_then(|id| self.get(id).ok().flatten())
                    .is_some_and(|i| {
                        i.sync_type == SyncType::PasswordChange
                            && store::user_key(&i.username, &i.package) == store::user_key(username, package)
                    })
            })
        };
        Ok(pending || inflight)
    }

    /// Number of pending items (cheap: the order index holds only those).
    pub fn pending_count(&self) -> usize {
        self.store.sync_order.len()
    }

    /// Counts per status (scans the items).
    pub fn counts(&self) -> Result<QueueCounts, QueueError> {
        let mut c = QueueCounts::default();
        for entry in self.store.sync_items.iter() {
            let (_, bytes) = entry?;
            let item: SyncItem = store::decode(TREE, &bytes)?;
            match item.status {
                SyncStatus::Pending => c.pending += 1,
                SyncStatus::Processing => c.processing += 1,
                SyncStatus::Completed => c.completed += 1,
                SyncStatus::Superseded => c.superseded += 1,
                SyncStatus::Failed => c.failed += 1,
            }
        }
        Ok(c)
    }

    /// Removes completed and superseded items finished more than `max_age` ago. Failed items
    /// stay until an operator has seen them (`queue` lists them with their reason).
    pub fn cleanup(&self, max_age: std::time::Duration) -> Result<usize, QueueError> {
        let cutoff = self.clock.now() - chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
        let _g = self.guard();
        let mut removed = 0;
        for entry in self.store.sync_items.iter() {
            let (key, bytes) = entry?;
            let item: SyncItem = store::decode(TREE, &bytes)?;
            let old_enough = item.processed_at.is_some_and(|t| t < cutoff);
            if matches!(item.status, SyncStatus::Completed | SyncStatus::Superseded) && old_enough {
                self.store.sync_items.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Writes item changes and their index entries in one transaction.
    fn write(&self, changes: &[(Option<SyncItem>, SyncItem)]) -> Result<(), QueueError> {
        let mut encoded = Vec::with_capacity(changes.len());
        for (_, new) in changes {
            encoded.push(store::encode(TREE, new)?);
        }
        let s = &self.store;
        let result: Result<(), TransactionError<()>> =
            (&s.sync_items, &s.sync_order, &s.sync_by_user, &s.sync_inflight).transaction(
                |(items, order, by_user, inflight)| {
                    for ((old, new), bytes) in changes.iter().zip(&encoded) {
                        if let Some(old) = old {
                            order.remove(&order_key(old.priority, old.queued_at, old.seq)[..])?;
                            by_user.remove(by_user_key(old))?;
                            inflight.remove(old.sync_id.as_bytes())?;
                        }
                        items.insert(new.sync_id.as_bytes(), bytes.as_slice())?;
                        match new.status {
                            SyncStatus::Pending => {
                                order.insert(
                                    &order_key(new.priority, new.queued_at, new.seq)[..],
                                    new.sync_id.as_bytes(),
                                )?;
                                if new.sync_type == SyncType::PasswordChange {
                                    by_user.insert(by_user_key(new), &[][..])?;
                                }
                            }
                            SyncStatus::Processing => {
                                inflight.insert(new.sync_id.as_bytes(), &[][..])?;
                            }
                            _ => {}
                        }
                    }
                    Ok::<(), ConflictableTransactionError<()>>(())
                },
            );
        result.map_err(|e| match e {
            TransactionError::Storage(e) => QueueError::from(e),
            TransactionError::Abort(()) => QueueError::Corrupt("transaction aborted".into()),
        })
    }
}

fn finish(item: &mut SyncItem, status: SyncStatus, now: DateTime<Utc>, reason: Option<impl Into<String>>) {
    item.status = status;
    item.processed_at = Some(now);
    item.sealed_data = None;
    if let Some(r) = reason {
        item.last_error = Some(r.into());
    }
}

fn check_name(what: &str, value: &str) -> Result<(), QueueError> {
    if value.trim().is_empty() {
        return Err(QueueError::BadInput(format!("{what} must not be empty")));
    }
    if value.contains('\0') || value.chars().any(char::is_control) {
        return Err(QueueError::BadInput(format!("{what} must not contain control characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use chrono::{Duration, TimeZone};
    use serde_json::json;

    fn setup() -> (SyncQueue, ManualClock) {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0).unwrap());
        let q = SyncQueue::new(Arc::new(Store::temporary().unwrap()), Arc::new(clock.clone()));
        (q, clock)
    }

    fn pw(p: &str) -> serde_json::Value {
        json!({ "password": p })
    }

    fn password_of(c: &Claimed) -> &str {
        match &c.data {
            SyncData::PasswordChange(pc) => &pc.password,
        }
    }

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
            vec![order_key(1, t, 3), order_key(1, t, 9), order_key(1, later, 2), order_key(2, t, 1), order_key(300, t, 0)]
        );
    }

    #[test]
    fn claims_in_priority_order_and_respects_batch_size() {
        let (q, clock) = setup();
        let low = q.enqueue("u1", "p", "password_change", &pw("a-password"), 9).unwrap();
        clock.advance(Duration::seconds(1));
        let high = q.enqueue("u2", "p", "password_change", &pw("b-password"), 1).unwrap();
        clock.advance(Duration::seconds(1));
        let mid = q.enqueue("u3", "p", "password_change", &pw("c-password"), 5).unwrap();
        let first = q.claim(2).unwrap();
        assert_eq!(first.iter().map(|c| c.item.sync_id).collect::<Vec<_>>(), vec![high, mid]);
        assert_eq!(first[0].item.status, SyncStatus::Processing);
        let rest = q.claim(10).unwrap();
        assert_eq!(rest.iter().map(|c| c.item.sync_id).collect::<Vec<_>>(), vec![low]);
        assert!(q.claim(10).unwrap().is_empty());
    }

    #[test]
    fn a_newer_password_change_supersedes_older_pending_ones_whatever_the_priority() {
        let (q, clock) = setup();
        let old = q.enqueue("Alice", "web", "password_change", &pw("first-pass"), 1).unwrap();
        clock.advance(Duration::seconds(1));
        let other_pkg = q.enqueue("alice", "api", "password_change", &pw("api-pass"), 1).unwrap();
        let new = q.enqueue("alice", "web", "password_change", &pw("second-pass"), 9).unwrap();
        let old_item = q.get(old).unwrap().unwrap();
        assert_eq!(old_item.status, SyncStatus::Superseded);
        assert!(old_item.sealed_data.is_none(), "superseded items keep no secret");
        let claimed = q.claim(10).unwrap();
        let ids: Vec<_> = claimed.iter().map(|c| c.item.sync_id).collect();
        assert_eq!(ids, vec![other_pkg, new]);
        assert_eq!(password_of(&claimed[1]), "second-pass");
    }

    #[test]
    fn unknown_types_and_bad_data_are_refused_at_enqueue() {
        let (q, _) = setup();
        assert!(matches!(q.enqueue("u", "p", "email_change", &pw("x"), 1), Err(QueueError::UnknownType(_))));
        for data in [json!({}), json!({"password": 5}), json!({"password": ""}), json!({"password": "x", "extra": 1}), json!("x")] {
            let err = q.enqueue("u", "p", "password_change", &data, 1).unwrap_err();
            assert!(matches!(err, QueueError::BadData { .. }), "{data}: {err}");
        }
        assert!(matches!(q.enqueue("", "p", "password_change", &pw("x"), 1), Err(QueueError::BadInput(_))));
        assert!(matches!(q.enqueue("u", "p", "password_change", &pw("x"), 0), Err(QueueError::BadInput(_))));
        assert_eq!(q.pending_count(), 0);
    }

    #[test]
    fn retry_backs_off_release_does_not_count_and_finish_wipes_secrets() {
        let (q, clock) = setup();
        let id = q.enqueue("u", "p", "password_change", &pw("secret-pw"), 1).unwrap();
        let c = q.claim(1).unwrap();
        assert_eq!(c.len(), 1);
        q.release(id, Some("Keycloak unavailable")).unwrap();
        assert_eq!(q.get(id).unwrap().unwrap().attempts, 0);
        q.claim(1).unwrap();
        q.retry(id, "HTTP 409", std::time::Duration::from_secs(60)).unwrap();
        let item = q.get(id).unwrap().unwrap();
        assert_eq!((item.status, item.attempts), (SyncStatus::Pending, 1));
        assert!(q.claim(1).unwrap().is_empty(), "not due yet");
        clock.advance(Duration::seconds(61));
        assert_eq!(q.claim(1).unwrap().len(), 1);
        q.fail(id, "password policy: too short").unwrap();
        let item = q.get(id).unwrap().unwrap();
        assert_eq!(item.status, SyncStatus::Failed);
        assert_eq!(item.last_error.as_deref(), Some("password policy: too short"));
        assert!(item.sealed_data.is_none());
        assert_eq!(q.pending_count(), 0);
        let raw = q.store.sync_items.get(id.as_bytes()).unwrap().unwrap();
        assert!(!raw.windows(9).any(|w| w == b"secret-pw"));
    }

    #[test]
    fn processing_items_return_to_pending_on_recover() {
        let (q, _) = setup();
        let id = q.enqueue("u", "p", "password_change", &pw("pw-123456"), 1).unwrap();
        q.claim(5).unwrap();
        assert_eq!(q.counts().unwrap().processing, 1);
        // a new queue over the same store = the next process after a crash
        let q2 = SyncQueue::new(q.store.clone(), q.clock.clone());
        assert_eq!(q2.recover().unwrap(), 1);
        assert_eq!(q2.get(id).unwrap().unwrap().status, SyncStatus::Pending);
        assert_eq!(q2.claim(5).unwrap().len(), 1);
    }

    #[test]
    fn cleanup_removes_old_finished_items_but_keeps_failed() {
        let (q, clock) = setup();
        let done = q.enqueue("a", "p", "password_change", &pw("pw-aaaaaa"), 1).unwrap();
        let bad = q.enqueue("b", "p", "password_change", &pw("pw-bbbbbb"), 1).unwrap();
        q.claim(5).unwrap();
        q.complete(done).unwrap();
        q.fail(bad, "user not found").unwrap();
        clock.advance(Duration::days(8));
        assert_eq!(q.cleanup(std::time::Duration::from_secs(7 * 86400)).unwrap(), 1);
        assert!(q.get(done).unwrap().is_none());
        assert!(q.get(bad).unwrap().is_some());
    }

    #[test]
    fn pending_password_change_is_visible_per_user() {
        let (q, _) = setup();
        assert!(!q.has_pending_password_change("u", "p").unwrap());
        q.enqueue("U", "p", "password_change", &pw("pw-123456"), 1).unwrap();
        assert!(q.has_pending_password_change("u", "p").unwrap());
        q.claim(1).unwrap();
        assert!(q.has_pending_password_change("u", "p").unwrap(), "in flight counts too");
    }
}
