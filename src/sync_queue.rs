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
//! - `sync_by_user`: (user, package, id) for pending password changes: superseding is a prefix
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
//! failed) its data is wiped.

use crate::clock::SharedClock;
use crate::store::codec::{self, CodecError};
use crate::store::{self, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::collections::HashSet;
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

/// Largest sync data accepted as JSON text, in bytes: room for a password of
/// [`crate::password::MAX_PASSWORD_BYTES`] written entirely as `\uXXXX` escapes, and no more.
pub const MAX_SYNC_DATA_BYTES: usize = 8 * 1024;

/// The kinds of change the queue knows how to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncType {
    /// Set the user's Keycloak password. Data: `{"new_password": "…"}` (the original design's
    /// key; `{"password": "…"}` is accepted as an alias).
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

/// The keys `password_change` data may use: the documented one first, then its alias.
const PASSWORD_KEYS: [&str; 2] = ["new_password", "password"];

impl SyncData {
    /// Validates JSON `data` against `sync_type`.
    ///
    /// `password_change` wants `{"new_password": "…"}` (the original design's key) or the alias
    /// `{"password": "…"}` — not both; the password follows
    /// [`crate::password::check_password`] (the rule `login` applies).
    ///
    /// # Errors
    ///
    /// [`QueueError::BadData`], naming the field and never quoting a value.
    pub fn from_json(
        sync_type: SyncType,
        data: &serde_json::Value,
    ) -> Result<SyncData, QueueError> {
        match sync_type {
            SyncType::PasswordChange => {
                // Checked by hand rather than through serde: serde's messages quote the value
                // they choke on, and here the value is a password.
                let bad = |reason: &str| QueueError::BadData {
                    sync_type: sync_type.as_str(),
                    reason: reason.to_string(),
                };
                let obj = data
                    .as_object()
                    .ok_or_else(|| bad("expected a JSON object like {\"new_password\": \"…\"}"))?;
                if obj.keys().any(|k| !PASSWORD_KEYS.contains(&k.as_str())) {
                    return Err(bad(
                        "unknown field (expected only `new_password`, or its alias `password`)",
                    ));
                }
                let (key, value) = match (obj.get("new_password"), obj.get("password")) {
                    (Some(_), Some(_)) => {
                        return Err(bad(
                            "both `new_password` and its alias `password` are given (use one)",
                        ))
                    }
                    (Some(v), None) => ("new_password", v),
                    (None, Some(v)) => ("password", v),
                    (None, None) => return Err(bad("missing field `new_password`")),
                };
                let serde_json::Value::String(password) = value else {
                    return Err(bad(&format!("field `{key}` must be a string")));
                };
                crate::password::check_password(&format!("field `{key}`"), password)
                    .map_err(|reason| bad(&reason))?;
                let pc = PasswordChange {
                    password: password.clone(),
                };
                Ok(SyncData::PasswordChange(pc))
            }
        }
    }

    /// Parses and validates sync data given as JSON text: at most [`MAX_SYNC_DATA_BYTES`],
    /// a key given twice refused (a JSON object keeps only the last one silently), then
    /// [`SyncData::from_json`].
    ///
    /// # Errors
    ///
    /// [`QueueError::BadData`] for data that is too large, not JSON, has a duplicate key or does
    /// not fit the type; messages give positions and key names, never values.
    pub fn from_json_text(sync_type: SyncType, text: &[u8]) -> Result<SyncData, QueueError> {
        let bad = |reason: String| QueueError::BadData {
            sync_type: sync_type.as_str(),
            reason,
        };
        if text.len() > MAX_SYNC_DATA_BYTES {
            return Err(bad(format!(
                "larger than {MAX_SYNC_DATA_BYTES} bytes (the limit for sync data)"
            )));
        }
        let StrictValue(value) =
            serde_json::from_slice(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        Self::from_json(sync_type, &value)
    }

    /// Checks data built in code (not parsed): the password rule still applies.
    fn check(&self, sync_type: SyncType) -> Result<(), QueueError> {
        match self {
            SyncData::PasswordChange(pc) => {
                crate::password::check_password("new password", &pc.password).map_err(|reason| {
                    QueueError::BadData {
                        sync_type: sync_type.as_str(),
                        reason,
                    }
                })
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

/// Parses JSON text into a value, refusing an object that repeats a key (which
/// `serde_json::Value` would silently collapse to its last occurrence).
///
/// # Errors
///
/// serde_json's error: a position and the duplicate key's name, never a value.
pub fn parse_strict_json(text: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::from_slice::<StrictValue>(text).map(|StrictValue(v)| v)
}

/// A JSON value whose objects may not repeat a key: `serde_json::Value` keeps the last of
/// two, so `{"new_password": "a", "new_password": "b"}` would queue a password nobody saw.
struct StrictValue(serde_json::Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(serde_json::Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut obj = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if obj.contains_key(&key) {
                // Only a known key is named: an unknown one might be a password typed in the
                // wrong place.
                let msg = if PASSWORD_KEYS.contains(&key.as_str()) {
                    format!("key `{key}` appears twice")
                } else {
                    "a key appears twice".to_string()
                };
                return Err(serde::de::Error::custom(msg));
            }
            let StrictValue(value) = map.next_value()?;
            obj.insert(key, value);
        }
        Ok(serde_json::Value::Object(obj))
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
    /// The local user record written together with a queue change (`passwd`) is gone or
    /// unreadable.
    #[error("local user record: {0}")]
    LocalUser(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sled::Error> for QueueError {
    fn from(e: sled::Error) -> Self {
        QueueError::Store(StoreError::from(e))
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
    /// Tie-breaker for items queued in the same microsecond; also tells which of two changes
    /// was queued last (it only grows).
    seq: u64,
    /// A pending item backing off after [`SyncQueue::retry`]: indexed in `sync_delayed` (by
    /// `next_attempt_at`) instead of `sync_order` until a claim finds it due and promotes it.
    /// Meaningless unless `status` is pending.
    delayed: bool,
    /// Set (and flushed) just before the change is sent to Keycloak; cleared once Keycloak's
    /// answer is known. Still set on a pending item, it means an earlier attempt may have been
    /// applied (a crash, or a timeout, came before the answer): the next attempt asks Keycloak
    /// before sending it again. Absent from records written before layout 2.
    pub applying: Option<Applying>,
}

/// An attempt whose outcome is unknown until Keycloak is asked (see [`SyncItem::applying`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applying {
    /// When it was sent (our clock; for people reading `queue`, never compared with Keycloak's).
    pub sent_at: DateTime<Utc>,
    /// The `createdDate` (epoch milliseconds, Keycloak's clock) of the user's password
    /// credential, read from Keycloak just before sending; `None` when the user had none.
    /// Keycloak sets it anew on every password reset, so a different value later means the
    /// password was reset since. Comparing Keycloak's clock only with itself keeps clock skew
    /// between the two machines out of the decision.
    pub password_created_before: Option<i64>,
}

impl Applying {
    /// Pure decision after a crash: was the change sent at `self` applied, given the password
    /// credential's `createdDate` Keycloak reports now? Yes when it differs from the one read
    /// before sending (a reset happened since). An unchanged date, or no password at all, means
    /// not applied: the change is sent again. Errs on the side of sending twice, never of
    /// losing a change — except when someone else reset the password in Keycloak between our
    /// read and our request, which cannot be told apart from our own reset.
    pub fn applied(&self, password_created_now: Option<i64>) -> bool {
        password_created_now.is_some() && password_created_now != self.password_created_before
    }
}

/// The record layout of [`SyncItem`] written by this build (the version byte in front).
const ITEM_LAYOUT: u8 = 2;

/// [`SyncItem`] as layout 1 (every release before `applying`) wrote it: same fields, same
/// order, without the last one. Read, never written.
#[derive(Deserialize)]
struct SyncItemV1 {
    sync_id: Uuid,
    username: String,
    package: String,
    sync_type: SyncType,
    sealed_data: Option<Vec<u8>>,
    queued_at: DateTime<Utc>,
    processed_at: Option<DateTime<Utc>>,
    status: SyncStatus,
    attempts: u32,
    last_error: Option<String>,
    priority: u32,
    next_attempt_at: DateTime<Utc>,
    seq: u64,
    delayed: bool,
}

impl From<SyncItemV1> for SyncItem {
    fn from(v: SyncItemV1) -> SyncItem {
        SyncItem {
            sync_id: v.sync_id,
            username: v.username,
            package: v.package,
            sync_type: v.sync_type,
            sealed_data: v.sealed_data,
            queued_at: v.queued_at,
            processed_at: v.processed_at,
            status: v.status,
            attempts: v.attempts,
            last_error: v.last_error,
            priority: v.priority,
            next_attempt_at: v.next_attempt_at,
            seq: v.seq,
            delayed: v.delayed,
            applying: None,
        }
    }
}

fn encode_item(item: &SyncItem) -> Result<Vec<u8>, StoreError> {
    codec::encode_versioned(ITEM_LAYOUT, item)
        .map_err(|cause| StoreError::Encode { tree: TREE, cause })
}

/// Decodes a sync item of either layout.
fn decode_item(bytes: &[u8]) -> Result<SyncItem, StoreError> {
    let corrupt = |cause| StoreError::Corrupt { tree: TREE, cause };
    let (layout, body) = codec::split(bytes).map_err(corrupt)?;
    match layout {
        ITEM_LAYOUT => codec::decode_body(body).map_err(corrupt),
        1 => codec::decode_body::<SyncItemV1>(body)
            .map(SyncItem::from)
            .map_err(corrupt),
        found => Err(corrupt(CodecError::Decode(format!(
            "sync item layout {found} is unknown to this build (it reads 1 and {ITEM_LAYOUT})"
        )))),
    }
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
    fn slot(&mut self, status: SyncStatus) -> &mut usize {
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

const ALL_STATUSES: [SyncStatus; 5] = [
    SyncStatus::Pending,
    SyncStatus::Processing,
    SyncStatus::Completed,
    SyncStatus::Superseded,
    SyncStatus::Failed,
];

/// The `meta` key of the counter of items in `status` (u64 big-endian).
fn count_key(status: SyncStatus) -> String {
    format!("sync_count/{}", status.as_str())
}

/// Present in `meta` once the counters hold every item (a database from before layout 2 has
/// none until one scan builds them).
const COUNTS_BUILT: &str = "sync_count/built";

/// Net change of each status's counter for a set of item changes. Pure.
fn count_deltas(
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

fn read_count(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// Adds `deltas` to the counters inside a transaction on `meta`.
fn apply_deltas(
    meta: &sled::transaction::TransactionalTree,
    deltas: &[i64; 5],
) -> Result<(), sled::transaction::UnabortableTransactionError> {
    for (status, delta) in ALL_STATUSES.iter().zip(deltas) {
        if *delta == 0 {
            continue;
        }
        let key = count_key(*status);
        let old = read_count(meta.get(key.as_bytes())?.as_deref());
        let new = if *delta < 0 {
            old.saturating_sub(delta.unsigned_abs())
        } else {
            old.saturating_add(delta.unsigned_abs())
        };
        meta.insert(key.as_bytes(), &new.to_be_bytes()[..])?;
    }
    Ok(())
}

/// Where a page of [`SyncQueue::page`] starts: just after this position. Printed by `queue` as
/// an opaque word (`--after`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// 0 due, 1 backing off, 2 in flight, 3 finished: the sections in the order `queue` lists.
    section: u8,
    /// The last key shown, in that section's tree.
    key: Vec<u8>,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-", self.section)?;
        for b in &self.key {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Cursor {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<Cursor, QueueError> {
        let bad = || QueueError::BadInput("not a cursor printed by `queue` (as `next`)".into());
        let (section, hex) = s.split_once('-').ok_or_else(bad)?;
        let section: u8 = section.parse().map_err(|_| bad())?;
        if section > 3 || hex.len() % 2 != 0 || hex.len() > 128 {
            return Err(bad());
        }
        let key = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(bad)?;
        Ok(Cursor { section, key })
    }
}

/// One page of the queue listing.
#[derive(Debug)]
pub struct Page {
    /// At most the limit asked for, in listing order.
    pub items: Vec<SyncItem>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// Current bytes of a local user record → its new bytes (see [`LocalChange`]).
pub type RecordChange<'a> = &'a dyn Fn(&[u8]) -> Result<Vec<u8>, StoreError>;

/// Current bytes of a token cache entry → its new bytes, or `None` to drop it (see
/// [`LocalChange`]).
pub type CachedTokenChange<'a> = &'a dyn Fn(&[u8]) -> Option<Vec<u8>>;

/// A local user record written in the same transaction as a queue change (`passwd`): `change`
/// gets the record's current bytes and returns the new ones. It may run more than once (sled
/// retries a transaction on conflict), so it must only compute.
pub struct LocalChange<'a> {
    /// The record's key in `local_users`; also the key of the account's entry in
    /// `token_cache` (both are [`store::user_key`] of the user and package).
    pub key: Vec<u8>,
    /// Current bytes → new bytes.
    pub change: RecordChange<'a>,
    /// The account's token cache entry, if it has one, changed (or dropped) in the same
    /// transaction: the new password's verifier lands with the new password, or not at all.
    /// Pure as `change` is.
    pub cached_token: Option<CachedTokenChange<'a>>,
}

/// Why a queue transaction gave up.
#[derive(Debug)]
enum WriteAbort {
    /// The local user record of a [`LocalChange`] is not there.
    LocalUserMissing,
    /// The local user record of a [`LocalChange`] could not be changed.
    Local(StoreError),
}

/// A time as 8 big-endian bytes that sort in time order (sign bit flipped, so negative
/// times — never expected — still sort before positive ones).
fn time_bytes(t: DateTime<Utc>) -> [u8; 8] {
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

/// A sync id stored as a key or value; `None` when the bytes are not one.
fn id_of(bytes: &[u8]) -> Option<Uuid> {
    Uuid::from_slice(bytes).ok()
}

/// How to name a record in a log line without showing its content.
fn key_name(key: &[u8]) -> String {
    match id_of(key) {
        Some(id) => id.to_string(),
        None => format!("<malformed key of {} bytes>", key.len()),
    }
}

/// True for errors that mean one stored record is unreadable (as opposed to the database
/// failing): those are logged and skipped by scans so that one bad record stops nothing else.
fn is_damage(e: &QueueError) -> bool {
    matches!(
        e,
        QueueError::Corrupt(_) | QueueError::Store(StoreError::Corrupt { .. })
    )
}

/// Changes to write together: (the record as read, if any; the record to write).
type Changes = Vec<(Option<SyncItem>, SyncItem)>;

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

    /// Flushes to disk; called without the queue lock, so that claims and completions of a
    /// running cycle do not wait on the disk behind an enqueue.
    fn flush(&self) -> Result<(), QueueError> {
        #[cfg(test)]
        FLUSHED_UNDER_LOCK.with(|c| c.set(Some(self.lock.try_lock().is_err())));
        self.store.flush()?;
        Ok(())
    }

    /// Validates, seals and stores a change; supersedes older pending password changes of the
    /// same (user, package); flushes to disk before returning the new SyncId.
    ///
    /// # Errors
    ///
    /// [`QueueError::UnknownType`], [`QueueError::BadData`] or [`QueueError::BadInput`] for
    /// input the queue refuses; [`QueueError::Store`] when the database fails.
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

    /// [`SyncQueue::enqueue`] with the data as JSON text, checked by
    /// [`SyncData::from_json_text`] (size limit, duplicate keys) — the form to use for data
    /// from outside, where a repeated key would otherwise go unseen.
    ///
    /// # Errors
    ///
    /// As [`SyncQueue::enqueue`].
    pub fn enqueue_json(
        &self,
        username: &str,
        package: &str,
        sync_type: &str,
        data: &[u8],
        priority: u32,
    ) -> Result<Uuid, QueueError> {
        let sync_type: SyncType = sync_type.parse()?;
        let data = SyncData::from_json_text(sync_type, data)?;
        self.enqueue_data(username, package, data, priority)
    }

    /// [`SyncQueue::enqueue`] with data that is already typed.
    ///
    /// # Errors
    ///
    /// As [`SyncQueue::enqueue`].
    pub fn enqueue_data(
        &self,
        username: &str,
        package: &str,
        data: SyncData,
        priority: u32,
    ) -> Result<Uuid, QueueError> {
        let (id, _) = self.enqueue_inner(username, package, data, priority, false, None)?;
        Ok(id)
    }

    /// `passwd`: queues a password change and changes the local user record in ONE
    /// transaction (flushed before it returns), so that a crash leaves either both or neither:
    /// never a new local password that Keycloak will not hear of.
    ///
    /// With `claim` the item is written already claimed (`processing`) and returned with its
    /// data, for the caller to send to Keycloak at once (see [`crate::replay::apply`]) and then
    /// complete, fail or release — unless a change for the same user is in flight (a running
    /// cycle), in which case it is queued behind it as usual and `None` is returned. A crash
    /// before the caller is done leaves it to recovery like any claimed item.
    ///
    /// # Errors
    ///
    /// As [`SyncQueue::enqueue`]; [`QueueError::LocalUser`] when the local record is gone or
    /// cannot be changed (then nothing was written).
    pub fn enqueue_with_local_change(
        &self,
        username: &str,
        package: &str,
        data: SyncData,
        priority: u32,
        claim: bool,
        local: &LocalChange<'_>,
    ) -> Result<(Uuid, Option<Claimed>), QueueError> {
        self.enqueue_inner(username, package, data, priority, claim, Some(local))
    }

    fn enqueue_inner(
        &self,
        username: &str,
        package: &str,
        data: SyncData,
        priority: u32,
        claim: bool,
        local: Option<&LocalChange<'_>>,
    ) -> Result<(Uuid, Option<Claimed>), QueueError> {
        check_name("user", username)?;
        check_name("package", package)?;
        if priority == 0 {
            return Err(QueueError::BadInput(
                "priority must be 1 or more (1 runs first)".into(),
            ));
        }
        let sync_type = match data {
            SyncData::PasswordChange(_) => SyncType::PasswordChange,
        };
        data.check(sync_type)?;
        let sealed = self
            .store
            .sealer()
            .seal(&data.to_bytes())
            .map_err(StoreError::from)?;
        let result = {
            let _g = self.guard();
            // Time and sequence are taken under the lock, so that the item written last is
            // also the one with the highest sequence: "newest" means the same thing to every
            // rule below.
            let now = self.clock.now();
            let mut item = SyncItem {
                sync_id: Uuid::new_v4(),
                username: username.to_string(),
                package: package.to_string(),
                sync_type,
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
            let claim = claim
                && !self
                    .users_in_flight()?
                    .contains(&store::user_key(username, package));
            if claim {
                item.status = SyncStatus::Processing;
            }
            changes.push((None, item.clone()));
            self.write_with(&changes, local)?;
            let claimed = claim.then(|| Claimed {
                item: item.clone(),
                data,
            });
            (item.sync_id, claimed)
        };
        self.flush()?;
        Ok(result)
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
    pub fn claim(&self, batch: usize) -> Result<Vec<Claimed>, QueueError> {
        let now = self.clock.now();
        let _g = self.guard();
        self.promote_due(now)?;
        let mut busy = self.users_in_flight()?;
        let mut claimed = Vec::new();
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
            let user = (item.sync_type == SyncType::PasswordChange)
                .then(|| store::user_key(&item.username, &item.package));
            if user.as_ref().is_some_and(|u| busy.contains(u)) {
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
            busy.extend(user);
            claimed.push(Claimed { item: new, data });
        }
        Ok(claimed)
    }

    /// Moves every backing-off item due by `now` from `sync_delayed` to `sync_order`.
    /// Caller holds the lock.
    fn promote_due(&self, now: DateTime<Utc>) -> Result<(), QueueError> {
        for entry in self.store.sync_delayed.range(..=delayed_key(now, u64::MAX)) {
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

    /// The (user, package) keys of password changes in flight. Empty — and free — unless a
    /// cycle is running or a crash left items behind.
    fn users_in_flight(&self) -> Result<HashSet<Vec<u8>>, QueueError> {
        let mut users = HashSet::new();
        for key in self.store.sync_inflight.iter().keys() {
            let key = key?;
            let Some(id) = id_of(&key) else {
                continue;
            };
            if let Some(item) = self.get_or_skip(id)? {
                if item.status == SyncStatus::Processing
                    && item.sync_type == SyncType::PasswordChange
                {
                    users.insert(store::user_key(&item.username, &item.package));
                }
            }
        }
        Ok(users)
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

    /// Keycloak applied the change.
    ///
    /// # Errors
    ///
    /// [`QueueError::NotFound`] for an unknown id; [`QueueError::Store`] otherwise.
    pub fn complete(&self, id: Uuid) -> Result<(), QueueError> {
        self.transition(id, |item, now| {
            finish(item, SyncStatus::Completed, now, None::<String>)
        })
    }

    /// Keycloak refused the change for good.
    ///
    /// # Errors
    ///
    /// As [`SyncQueue::complete`].
    pub fn fail(&self, id: Uuid, reason: &str) -> Result<(), QueueError> {
        self.transition(id, |item, now| {
            item.attempts = item.attempts.saturating_add(1);
            finish(item, SyncStatus::Failed, now, Some(reason.to_string()))
        })
    }

    /// Keycloak refused for a passing reason: count the attempt, retry after `delay`. The item
    /// waits in `sync_delayed`, where claims do not look at it until it is due. A password
    /// change for which a newer one is pending is superseded instead.
    ///
    /// # Errors
    ///
    /// As [`SyncQueue::complete`].
    pub fn retry(
        &self,
        id: Uuid,
        reason: &str,
        delay: std::time::Duration,
    ) -> Result<(), QueueError> {
        self.transition(id, |item, now| {
            let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
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
    /// A password change for which a newer one is pending is superseded instead.
    ///
    /// # Errors
    ///
    /// As [`SyncQueue::complete`].
    pub fn release(&self, id: Uuid, reason: Option<&str>) -> Result<(), QueueError> {
        self.transition(id, |item, _| {
            item.status = SyncStatus::Pending;
            if let Some(r) = reason {
                item.last_error = Some(r.to_string());
            }
        })
    }

    fn transition(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut SyncItem, DateTime<Utc>),
    ) -> Result<(), QueueError> {
        #[cfg(test)]
        if FAILING_TRANSITIONS.with(|c| c.replace(c.get().saturating_sub(1)) > 0) {
            return Err(QueueError::Store(StoreError::Sled(sled::Error::Io(
                std::io::Error::other("injected fault: no space left on device"),
            ))));
        }
        let now = self.clock.now();
        let _g = self.guard();
        let old = self.get(id)?.ok_or(QueueError::NotFound(id))?;
        self.change_locked(old, now, change)
    }

    /// Applies `change` to `old` and writes it, with the superseding that "last password
    /// wins" asks for when it becomes pending. Caller holds the lock.
    fn change_locked(
        &self,
        old: SyncItem,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut SyncItem, DateTime<Utc>),
    ) -> Result<(), QueueError> {
        let mut new = old.clone();
        change(&mut new, now);
        let mut changes = self.settle_password_changes(&mut new, now)?;
        changes.insert(0, (Some(old), new));
        self.write(&changes)
    }

    /// Last password wins: when `item`, a password change, is about to be pending, of it and
    /// the pending password changes of its (user, package) only the newest (highest sequence)
    /// stays pending; the others are finished as `superseded`, their secret wiped.
    ///
    /// At enqueue `item` is the newest and supersedes the rest. When an item in flight comes
    /// back (retry, release, recovery after a crash), a pending sibling was queued while it
    /// was in flight, so it is newer and the item coming back is the one superseded. `item`
    /// is changed in place; the changes to its siblings are returned. Caller holds the lock.
    fn settle_password_changes(
        &self,
        item: &mut SyncItem,
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError> {
        if item.status != SyncStatus::Pending || item.sync_type != SyncType::PasswordChange {
            return Ok(Vec::new());
        }
        let mut siblings = Vec::new();
        for entry in self
            .store
            .sync_by_user
            .scan_prefix(by_user_prefix(&item.username, &item.package))
        {
            let (key, _) = entry?;
            let Some(id) = key.get(key.len().saturating_sub(16)..).and_then(id_of) else {
                log::error!("sync_by_user entry with a malformed sync id: skipped");
                continue;
            };
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
                    self.change_locked(old, now, |item, _| item.status = SyncStatus::Pending)?;
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
    pub fn has_pending_password_change(
        &self,
        username: &str,
        package: &str,
    ) -> Result<bool, QueueError> {
        let prefix = by_user_prefix(username, package);
        if self
            .store
            .sync_by_user
            .scan_prefix(prefix)
            .next()
            .transpose()?
            .is_some()
        {
            return Ok(true);
        }
        let wanted = store::user_key(username, package);
        for key in self.store.sync_inflight.iter().keys() {
            let key = key?;
            let id = id_of(&key)
                .ok_or_else(|| QueueError::Corrupt("malformed sync id in sync_inflight".into()))?;
            if let Some(item) = self.get(id)? {
                if item.sync_type == SyncType::PasswordChange
                    && store::user_key(&item.username, &item.package) == wanted
                {
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
        let due_by = delayed_key(self.clock.now(), u64::MAX);
        Ok(self
            .store
            .sync_delayed
            .first()?
            .is_some_and(|(key, _)| key.as_ref() <= &due_by[..]))
    }

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
            let n = read_count(
                self.store
                    .meta
                    .get(count_key(status).as_bytes())?
                    .as_deref(),
            );
            *c.slot(status) = usize::try_from(n).unwrap_or(usize::MAX);
        }
        Ok(c)
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
        self.for_each_item(|item| *c.slot(item.status) += 1)?;
        let result: Result<(), TransactionError<()>> = self.store.meta.transaction(|meta| {
            for status in ALL_STATUSES {
                let n = c.of(status) as u64;
                meta.insert(count_key(status).as_bytes(), &n.to_be_bytes()[..])?;
            }
            meta.insert(COUNTS_BUILT.as_bytes(), &[1u8][..])?;
            Ok(())
        });
        tx_result(result)?;
        log::info!("sync queue counters built: {} item(s)", c.total());
        Ok(c)
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

    /// Takes the index entry `key` of a damaged record out of `index`, and the record out of
    /// the counter of `counted_as` (the status that index implies), in one transaction, so the
    /// counts agree with a scan (which skips damaged records). The record itself stays.
    fn drop_damaged(
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
    /// As [`SyncQueue::complete`].
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

    /// One page of the listing, in the order `queue` shows: pending items due now (queue
    /// order), pending items backing off (by due time), items in flight, then finished items
    /// (in id order). Reads the page and one item more, whatever the queue's size — except
    /// that paging through finished items also reads the unfinished ones it steps over. Items
    /// that change section between two pages may be missed or shown twice.
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] when the database fails.
    pub fn page(&self, after: Option<&Cursor>, limit: usize) -> Result<Page, QueueError> {
        use std::ops::Bound;
        let limit = limit.max(1);
        let mut items: Vec<SyncItem> = Vec::new();
        let mut last: Option<Cursor> = None;
        let first = after.map_or(0, |c| c.section);
        let s = &self.store;
        let trees = [
            &s.sync_order,
            &s.sync_delayed,
            &s.sync_inflight,
            &s.sync_items,
        ];
        for section in first..4u8 {
            let from = match after {
                Some(c) if c.section == section => Bound::Excluded(c.key.clone()),
                _ => Bound::Unbounded,
            };
            let tree = trees[usize::from(section)];
            for entry in tree.range::<Vec<u8>, _>((from, Bound::Unbounded)) {
                let (key, value) = entry?;
                let item = if section == 3 {
                    match decode_item(&value) {
                        Ok(item) if item.status.is_finished() => item,
                        Ok(_) => continue,
                        Err(e) => {
                            log::error!(
                                "sync item {} is damaged and was skipped: {e}",
                                key_name(&key)
                            );
                            continue;
                        }
                    }
                } else {
                    let raw_id = if section == 2 { &key } else { &value };
                    let Some(id) = id_of(raw_id) else { continue };
                    match self.get_or_skip(id)? {
                        Some(item) => item,
                        None => continue,
                    }
                };
                if items.len() == limit {
                    return Ok(Page { items, next: last });
                }
                items.push(item);
                last = Some(Cursor {
                    section,
                    key: key.to_vec(),
                });
            }
        }
        Ok(Page { items, next: None })
    }

    /// Writes item changes and their index entries in one transaction. Index membership is
    /// derived from the record alone: pending and not delayed → `sync_order`; pending and
    /// delayed → `sync_delayed`; pending password change → `sync_by_user` as well;
    /// processing → `sync_inflight`; finished → no index. The per-status counters in `meta`
    /// change in the same transaction.
    fn write(&self, changes: &[(Option<SyncItem>, SyncItem)]) -> Result<(), QueueError> {
        self.write_with(changes, None)
    }

    /// [`SyncQueue::write`], plus a local user record changed in the same transaction.
    fn write_with(
        &self,
        changes: &[(Option<SyncItem>, SyncItem)],
        local: Option<&LocalChange<'_>>,
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

/// Inside a queue transaction: the account record of `local` changed, and its token cache
/// entry with it (when it has one).
fn apply_local_change(
    users: &sled::transaction::TransactionalTree,
    cache: &sled::transaction::TransactionalTree,
    local: &LocalChange<'_>,
) -> Result<(), ConflictableTransactionError<WriteAbort>> {
    let Some(current) = users.get(&local.key)? else {
        return Err(ConflictableTransactionError::Abort(
            WriteAbort::LocalUserMissing,
        ));
    };
    let new = (local.change)(&current)
        .map_err(|e| ConflictableTransactionError::Abort(WriteAbort::Local(e)))?;
    users.insert(local.key.as_slice(), new)?;
    if let Some(retoken) = local.cached_token {
        if let Some(cached) = cache.get(&local.key)? {
            match retoken(&cached) {
                Some(new) => cache.insert(local.key.as_slice(), new)?,
                None => cache.remove(local.key.as_slice())?,
            };
        }
    }
    Ok(())
}

/// A queue transaction that never aborts on purpose, as a queue result.
fn tx_result(result: Result<(), TransactionError<()>>) -> Result<(), QueueError> {
    result.map_err(|e| match e {
        TransactionError::Storage(e) => QueueError::from(e),
        TransactionError::Abort(()) => QueueError::Corrupt("transaction aborted".into()),
    })
}

fn finish(
    item: &mut SyncItem,
    status: SyncStatus,
    now: DateTime<Utc>,
    reason: Option<impl Into<String>>,
) {
    item.status = status;
    item.processed_at = Some(now);
    item.sealed_data = None;
    item.applying = None;
    if let Some(r) = reason {
        item.last_error = Some(r.into());
    }
}

fn check_name(what: &str, value: &str) -> Result<(), QueueError> {
    store::check_name(what, value).map_err(QueueError::BadInput)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use chrono::{Duration, TimeZone};
    use serde_json::json;

    fn setup() -> (SyncQueue, ManualClock) {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0).unwrap());
        let q = SyncQueue::new(
            Arc::new(Store::temporary().unwrap()),
            Arc::new(clock.clone()),
        );
        (q, clock)
    }

    fn pw(p: &str) -> serde_json::Value {
        json!({ "new_password": p })
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
    fn claims_in_priority_order_and_respects_batch_size() {
        let (q, clock) = setup();
        let low = q
            .enqueue("u1", "p", "password_change", &pw("a-password"), 9)
            .unwrap();
        clock.advance(Duration::seconds(1));
        let high = q
            .enqueue("u2", "p", "password_change", &pw("b-password"), 1)
            .unwrap();
        clock.advance(Duration::seconds(1));
        let mid = q
            .enqueue("u3", "p", "password_change", &pw("c-password"), 5)
            .unwrap();
        let first = q.claim(2).unwrap();
        assert_eq!(
            first.iter().map(|c| c.item.sync_id).collect::<Vec<_>>(),
            vec![high, mid]
        );
        assert_eq!(first[0].item.status, SyncStatus::Processing);
        let rest = q.claim(10).unwrap();
        assert_eq!(
            rest.iter().map(|c| c.item.sync_id).collect::<Vec<_>>(),
            vec![low]
        );
        assert!(q.claim(10).unwrap().is_empty());
    }

    #[test]
    fn a_newer_password_change_supersedes_older_pending_ones_whatever_the_priority() {
        let (q, clock) = setup();
        let old = q
            .enqueue("Alice", "web", "password_change", &pw("first-pass"), 1)
            .unwrap();
        clock.advance(Duration::seconds(1));
        let other_pkg = q
            .enqueue("alice", "api", "password_change", &pw("api-pass"), 1)
            .unwrap();
        let new = q
            .enqueue("alice", "web", "password_change", &pw("second-pass"), 9)
            .unwrap();
        let old_item = q.get(old).unwrap().unwrap();
        assert_eq!(old_item.status, SyncStatus::Superseded);
        assert!(
            old_item.sealed_data.is_none(),
            "superseded items keep no secret"
        );
        let claimed = q.claim(10).unwrap();
        let ids: Vec<_> = claimed.iter().map(|c| c.item.sync_id).collect();
        assert_eq!(ids, vec![other_pkg, new]);
        assert_eq!(password_of(&claimed[1]), "second-pass");
    }

    #[test]
    fn bad_data_errors_never_quote_the_value() {
        for data in [
            json!("hunter2-secret"),
            json!({"password": 12345678}),
            json!({"password": ["hunter2-secret"]}),
            json!({"password": "x", "hunter2-secret": 1}),
        ] {
            let err = SyncData::from_json(SyncType::PasswordChange, &data)
                .unwrap_err()
                .to_string();
            assert!(
                !err.contains("hunter2") && !err.contains("12345678"),
                "{err}"
            );
        }
    }

    /// Issue 7 point 8: the original design's `new_password`, and `password` as an alias.
    #[test]
    fn new_password_is_the_key_and_password_its_alias() {
        let (q, _) = setup();
        for data in [
            json!({"new_password": "pw-123456"}),
            json!({"password": "pw-123456"}),
        ] {
            let id = q.enqueue("u", "p", "password_change", &data, 1).unwrap();
            let claimed = q.claim(1).unwrap();
            assert_eq!(ids(&claimed), vec![id]);
            assert_eq!(password_of(&claimed[0]), "pw-123456");
            q.complete(id).unwrap();
        }
        let err = q
            .enqueue(
                "u",
                "p",
                "password_change",
                &json!({"new_password": "pw-1", "password": "pw-2"}),
                1,
            )
            .unwrap_err();
        assert!(matches!(err, QueueError::BadData { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("both `new_password` and its alias"),
            "{err}"
        );
        assert!(!err.to_string().contains("pw-"), "{err}");
    }

    /// Issue 7 point 5: the password rule of `login` (1,024 bytes, no NUL) holds for the queue,
    /// through every entry point.
    #[test]
    fn queued_passwords_follow_the_login_rule() {
        let (q, _) = setup();
        let max = "p".repeat(crate::password::MAX_PASSWORD_BYTES);
        q.enqueue("u", "p", "password_change", &pw(&max), 1)
            .unwrap();
        for (bad, why) in [
            (
                "p".repeat(crate::password::MAX_PASSWORD_BYTES + 1),
                "longer than 1024 bytes",
            ),
            ("pw\0-tail".to_string(), "NUL"),
            (String::new(), "must not be empty"),
        ] {
            let err = q
                .enqueue("u", "p", "password_change", &pw(&bad), 1)
                .unwrap_err();
            assert!(matches!(err, QueueError::BadData { .. }), "{err}");
            assert!(err.to_string().contains(why), "{err}");
            let data = SyncData::PasswordChange(PasswordChange { password: bad });
            let err = q.enqueue_data("u", "p", data, 1).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        assert_eq!(q.pending_count(), 1);
    }

    /// Issue 7 point 5: JSON text is capped and may not repeat a key.
    #[test]
    fn json_text_is_capped_and_duplicate_keys_are_refused() {
        let (q, _) = setup();
        let t = SyncType::PasswordChange;
        let dup = br#"{"new_password": "first-pw", "new_password": "second-pw"}"#;
        let err = SyncData::from_json_text(t, dup).unwrap_err().to_string();
        assert!(err.contains("key `new_password` appears twice"), "{err}");
        assert!(!err.contains("-pw"), "{err}");
        let nested = br#"{"password": "x", "other": {"k": 1, "k": 2}}"#;
        let err = SyncData::from_json_text(t, nested).unwrap_err().to_string();
        assert!(err.contains("a key appears twice"), "{err}");
        let big = format!(
            r#"{{"new_password": "{}"}}"#,
            "x".repeat(MAX_SYNC_DATA_BYTES)
        );
        let err = SyncData::from_json_text(t, big.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than 8192 bytes"), "{err}");
        // The largest password fits even written entirely as escapes.
        let escaped = format!(r#"{{"new_password": "{}"}}"#, "\\u00e9".repeat(512));
        assert!(SyncData::from_json_text(t, escaped.as_bytes()).is_ok());
        assert!(q.enqueue_json("u", "p", "password_change", dup, 1).is_err());
        let id = q
            .enqueue_json(
                "u",
                "p",
                "password_change",
                br#"{"new_password": "pw-1"}"#,
                1,
            )
            .unwrap();
        assert_eq!(password_of(&q.claim(1).unwrap()[0]), "pw-1");
        assert_eq!(q.get(id).unwrap().unwrap().status, SyncStatus::Processing);
    }

    /// Issue 7 point 6: the queue refuses names the name rule refuses.
    #[test]
    fn queue_refuses_path_like_and_invisible_names() {
        let (q, _) = setup();
        for (user, package) in [
            ("..", "p"),
            ("../../etc/passwd", "p"),
            ("evil\u{202E}", "p"),
            ("u", "a/b"),
            ("u", "."),
            ("nul\0", "p"),
        ] {
            let err = q
                .enqueue(user, package, "password_change", &pw("pw-123456"), 1)
                .unwrap_err();
            assert!(
                matches!(err, QueueError::BadInput(_)),
                "{user:?}/{package:?}: {err}"
            );
        }
        assert_eq!(q.pending_count(), 0);
    }

    #[test]
    fn unknown_types_and_bad_data_are_refused_at_enqueue() {
        let (q, _) = setup();
        assert!(matches!(
            q.enqueue("u", "p", "email_change", &pw("x"), 1),
            Err(QueueError::UnknownType(_))
        ));
        for data in [
            json!({}),
            json!({"password": 5}),
            json!({"password": ""}),
            json!({"password": "x", "extra": 1}),
            json!("x"),
        ] {
            let err = q
                .enqueue("u", "p", "password_change", &data, 1)
                .unwrap_err();
            assert!(matches!(err, QueueError::BadData { .. }), "{data}: {err}");
        }
        assert!(matches!(
            q.enqueue("", "p", "password_change", &pw("x"), 1),
            Err(QueueError::BadInput(_))
        ));
        assert!(matches!(
            q.enqueue("u", "p", "password_change", &pw("x"), 0),
            Err(QueueError::BadInput(_))
        ));
        assert_eq!(q.pending_count(), 0);
    }

    #[test]
    fn retry_backs_off_release_does_not_count_and_finish_wipes_secrets() {
        let (q, clock) = setup();
        let id = q
            .enqueue("u", "p", "password_change", &pw("secret-pw"), 1)
            .unwrap();
        let c = q.claim(1).unwrap();
        assert_eq!(c.len(), 1);
        q.release(id, Some("Keycloak unavailable")).unwrap();
        assert_eq!(q.get(id).unwrap().unwrap().attempts, 0);
        q.claim(1).unwrap();
        q.retry(id, "HTTP 409", std::time::Duration::from_secs(60))
            .unwrap();
        let item = q.get(id).unwrap().unwrap();
        assert_eq!((item.status, item.attempts), (SyncStatus::Pending, 1));
        assert!(q.claim(1).unwrap().is_empty(), "not due yet");
        clock.advance(Duration::seconds(61));
        assert_eq!(q.claim(1).unwrap().len(), 1);
        q.fail(id, "password policy: too short").unwrap();
        let item = q.get(id).unwrap().unwrap();
        assert_eq!(item.status, SyncStatus::Failed);
        assert_eq!(
            item.last_error.as_deref(),
            Some("password policy: too short")
        );
        assert!(item.sealed_data.is_none());
        assert_eq!(q.pending_count(), 0);
        let raw = q.store.sync_items.get(id.as_bytes()).unwrap().unwrap();
        assert!(!raw.windows(9).any(|w| w == b"secret-pw"));
    }

    #[test]
    fn processing_items_return_to_pending_on_recover() {
        let (q, _) = setup();
        let id = q
            .enqueue("u", "p", "password_change", &pw("pw-123456"), 1)
            .unwrap();
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
        let done = q
            .enqueue("a", "p", "password_change", &pw("pw-aaaaaa"), 1)
            .unwrap();
        let bad = q
            .enqueue("b", "p", "password_change", &pw("pw-bbbbbb"), 1)
            .unwrap();
        q.claim(5).unwrap();
        q.complete(done).unwrap();
        q.fail(bad, "user not found").unwrap();
        clock.advance(Duration::days(8));
        assert_eq!(
            q.cleanup(std::time::Duration::from_secs(7 * 86400))
                .unwrap(),
            1
        );
        assert!(q.get(done).unwrap().is_none());
        assert!(q.get(bad).unwrap().is_some());
    }

    #[test]
    fn pending_password_change_is_visible_per_user() {
        let (q, _) = setup();
        assert!(!q.has_pending_password_change("u", "p").unwrap());
        q.enqueue("U", "p", "password_change", &pw("pw-123456"), 1)
            .unwrap();
        assert!(q.has_pending_password_change("u", "p").unwrap());
        q.claim(1).unwrap();
        assert!(
            q.has_pending_password_change("u", "p").unwrap(),
            "in flight counts too"
        );
    }

    fn ids(claimed: &[Claimed]) -> Vec<Uuid> {
        claimed.iter().map(|c| c.item.sync_id).collect()
    }

    /// Overwrites an item's record with bytes that do not decode (right version byte).
    fn damage(q: &SyncQueue, id: Uuid) {
        q.store
            .sync_items
            .insert(id.as_bytes(), &[codec_version(), 0xff][..])
            .unwrap();
    }

    fn codec_version() -> u8 {
        crate::store::codec::RECORD_VERSION
    }

    fn assert_superseded_by(q: &SyncQueue, id: Uuid, newer: Uuid) {
        let item = q.get(id).unwrap().unwrap();
        assert_eq!(item.status, SyncStatus::Superseded);
        assert!(
            item.sealed_data.is_none(),
            "a superseded item keeps no secret"
        );
        assert_eq!(item.last_error, Some(format!("superseded by {newer}")));
        assert!(item.processed_at.is_some());
    }

    #[test]
    fn a_change_in_flight_released_beside_a_newer_one_is_superseded() {
        let (q, clock) = setup();
        let old = q
            .enqueue("alice", "web", "password_change", &pw("old-password"), 1)
            .unwrap();
        assert_eq!(ids(&q.claim(10).unwrap()), vec![old]);
        clock.advance(Duration::seconds(1));
        let new = q
            .enqueue("Alice", "web", "password_change", &pw("new-password"), 9)
            .unwrap();
        q.release(old, Some("Keycloak unavailable")).unwrap();
        assert_superseded_by(&q, old, new);
        let claimed = q.claim(10).unwrap();
        assert_eq!(ids(&claimed), vec![new]);
        assert_eq!(password_of(&claimed[0]), "new-password");
        assert_eq!(q.pending_count(), 0);
    }

    #[test]
    fn a_change_in_flight_retried_beside_a_newer_one_is_superseded() {
        let (q, clock) = setup();
        let old = q
            .enqueue("alice", "web", "password_change", &pw("old-password"), 1)
            .unwrap();
        q.claim(10).unwrap();
        let new = q
            .enqueue("alice", "web", "password_change", &pw("new-password"), 5)
            .unwrap();
        q.retry(old, "HTTP 409", std::time::Duration::from_secs(60))
            .unwrap();
        assert_superseded_by(&q, old, new);
        assert_eq!(
            q.get(old).unwrap().unwrap().attempts,
            1,
            "the attempt still counts"
        );
        assert!(
            q.store.sync_delayed.is_empty(),
            "a superseded item is in no index"
        );
        clock.advance(Duration::seconds(120));
        assert_eq!(ids(&q.claim(10).unwrap()), vec![new]);
        assert!(q.claim(10).unwrap().is_empty());
    }

    #[test]
    fn recover_supersedes_a_crash_left_change_when_a_newer_one_is_pending() {
        let (q, _) = setup();
        let old = q
            .enqueue("alice", "web", "password_change", &pw("old-password"), 1)
            .unwrap();
        let other = q
            .enqueue("bob", "web", "password_change", &pw("bob-password"), 1)
            .unwrap();
        q.claim(10).unwrap();
        let new = q
            .enqueue("alice", "web", "password_change", &pw("new-password"), 1)
            .unwrap();
        let q2 = SyncQueue::new(q.store.clone(), q.clock.clone());
        assert_eq!(q2.recover().unwrap(), 2);
        assert_superseded_by(&q2, old, new);
        assert_eq!(q2.get(other).unwrap().unwrap().status, SyncStatus::Pending);
        let claimed = q2.claim(10).unwrap();
        assert_eq!(claimed.len(), 2);
        assert!(ids(&claimed).contains(&new) && ids(&claimed).contains(&other));
    }

    #[test]
    fn a_change_waits_while_another_for_the_same_user_is_in_flight() {
        let (q, _) = setup();
        let first = q
            .enqueue("alice", "web", "password_change", &pw("first-pass"), 1)
            .unwrap();
        q.claim(10).unwrap();
        let second = q
            .enqueue("alice", "web", "password_change", &pw("second-pass"), 1)
            .unwrap();
        let bob = q
            .enqueue("bob", "web", "password_change", &pw("bob-password"), 1)
            .unwrap();
        // A second cycle running meanwhile must not take alice's newer change: if it finished
        // before the first one, the older password would land last.
        assert_eq!(ids(&q.claim(10).unwrap()), vec![bob]);
        q.complete(first).unwrap();
        assert_eq!(ids(&q.claim(10).unwrap()), vec![second]);
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

    #[test]
    fn backed_off_items_wait_outside_the_order_index_until_due() {
        let (q, clock) = setup();
        let slow = q
            .enqueue("u1", "p", "password_change", &pw("slow-password"), 1)
            .unwrap();
        q.claim(10).unwrap();
        q.retry(slow, "HTTP 409", std::time::Duration::from_secs(60))
            .unwrap();
        let item = q.get(slow).unwrap().unwrap();
        assert!(item.delayed && item.status == SyncStatus::Pending);
        assert!(
            q.store.sync_order.is_empty(),
            "claims never walk a backing-off item"
        );
        assert_eq!(
            q.store
                .sync_delayed
                .get(delayed_key(item.next_attempt_at, item.seq))
                .unwrap()
                .as_deref(),
            Some(&slow.as_bytes()[..])
        );
        assert!(q.has_pending_password_change("u1", "p").unwrap());
        assert_eq!((q.pending_count(), q.counts().unwrap().pending), (1, 1));
        assert!(!q.has_due().unwrap());

        clock.advance(Duration::seconds(30));
        let later = q
            .enqueue("u2", "p", "password_change", &pw("later-password"), 5)
            .unwrap();
        assert!(q.claim(0).unwrap().is_empty());
        assert_eq!(q.store.sync_delayed.len(), 1, "not due: not promoted");
        assert_eq!(ids(&q.claim(10).unwrap()), vec![later]);

        clock.advance(Duration::seconds(31));
        assert!(q.has_due().unwrap());
        let late = q
            .enqueue("u3", "p", "password_change", &pw("late-password"), 5)
            .unwrap();
        // Once due, the item is promoted and takes its place by priority.
        let claimed = q.claim(1).unwrap();
        assert_eq!(ids(&claimed), vec![slow]);
        assert!(!claimed[0].item.delayed);
        assert!(q.store.sync_delayed.is_empty());
        assert_eq!(ids(&q.claim(10).unwrap()), vec![late]);
    }

    #[test]
    fn a_huge_backoff_or_age_does_not_panic() {
        let (q, _) = setup();
        let id = q
            .enqueue("u", "p", "password_change", &pw("pw-123456"), 1)
            .unwrap();
        q.claim(1).unwrap();
        q.retry(id, "HTTP 409", std::time::Duration::MAX).unwrap();
        assert!(q.claim(1).unwrap().is_empty());
        assert_eq!(q.cleanup(std::time::Duration::MAX).unwrap(), 0);
    }

    #[test]
    fn a_damaged_record_is_skipped_and_taken_out_of_the_order() {
        let (q, clock) = setup();
        let a = q
            .enqueue("a", "p", "password_change", &pw("pw-aaaaaa"), 1)
            .unwrap();
        let bad = q
            .enqueue("b", "p", "password_change", &pw("pw-bbbbbb"), 2)
            .unwrap();
        let c = q
            .enqueue("c", "p", "password_change", &pw("pw-cccccc"), 3)
            .unwrap();
        damage(&q, bad);
        assert_eq!(ids(&q.claim(10).unwrap()), vec![a, c]);
        assert!(
            q.store.sync_order.is_empty(),
            "the damaged id is not met again"
        );
        assert!(
            q.store.sync_items.get(bad.as_bytes()).unwrap().is_some(),
            "raw record kept"
        );
        assert!(q.claim(10).unwrap().is_empty());
        let counts = q.counts().unwrap();
        assert_eq!((counts.pending, counts.processing), (0, 2));
        assert_eq!(q.list().unwrap().len(), 2);
        q.complete(a).unwrap();
        clock.advance(Duration::days(8));
        assert_eq!(q.cleanup(std::time::Duration::from_secs(86400)).unwrap(), 1);
        assert!(q.store.sync_items.get(bad.as_bytes()).unwrap().is_some());
    }

    #[test]
    fn a_damaged_record_does_not_stop_recovery_or_promotion() {
        let (q, clock) = setup();
        let bad = q
            .enqueue("a", "p", "password_change", &pw("pw-aaaaaa"), 1)
            .unwrap();
        let good = q
            .enqueue("b", "p", "password_change", &pw("pw-bbbbbb"), 1)
            .unwrap();
        let backing_off = q
            .enqueue("c", "p", "password_change", &pw("pw-cccccc"), 1)
            .unwrap();
        q.claim(10).unwrap();
        q.retry(backing_off, "HTTP 409", std::time::Duration::from_secs(1))
            .unwrap();
        damage(&q, bad);
        let q2 = SyncQueue::new(q.store.clone(), q.clock.clone());
        assert_eq!(q2.recover().unwrap(), 1);
        assert!(q2.store.sync_inflight.is_empty());
        assert_eq!(q2.get(good).unwrap().unwrap().status, SyncStatus::Pending);
        damage(&q2, backing_off);
        clock.advance(Duration::seconds(2));
        assert_eq!(ids(&q2.claim(10).unwrap()), vec![good]);
        assert!(q2.store.sync_delayed.is_empty());
    }

    /// Issue 7 point 2: an item whose data does not open under the key in use is failed,
    /// counted, and keeps its sealed data, which opens again under the right key.
    #[test]
    fn an_item_that_does_not_open_is_failed_but_keeps_its_sealed_data() {
        let (q, _) = setup();
        let id = q
            .enqueue("u", "p", "password_change", &pw("pw-123456"), 1)
            .unwrap();
        let mut item = q.get(id).unwrap().unwrap();
        // The same item as another key would have sealed it.
        item.sealed_data = Some(
            crate::store::Sealer::ephemeral()
                .seal(b"pw-123456")
                .unwrap(),
        );
        q.store
            .sync_items
            .insert(id.as_bytes(), crate::store::encode(TREE, &item).unwrap())
            .unwrap();
        assert!(q.claim(10).unwrap().is_empty());
        let failed = q.get(id).unwrap().unwrap();
        assert_eq!(failed.status, SyncStatus::Failed);
        assert!(failed.last_error.unwrap().contains("sealed data kept"));
        assert_eq!(
            failed.sealed_data, item.sealed_data,
            "sealed data not wiped"
        );
        assert_eq!(q.counts().unwrap().failed, 1);
    }

    #[test]
    fn an_unreadable_item_in_flight_is_an_error_not_a_no() {
        let (q, _) = setup();
        let id = q
            .enqueue("u", "p", "password_change", &pw("pw-123456"), 1)
            .unwrap();
        q.claim(1).unwrap();
        damage(&q, id);
        assert!(q.has_pending_password_change("u", "p").is_err());
    }

    /// A database from before key check values, opened with the wrong key: refused, and the
    /// right key still works afterwards (no check value was made under the wrong one).
    #[test]
    fn an_old_database_opened_with_a_wrong_key_keeps_the_right_one_usable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let clock: SharedClock = Arc::new(ManualClock::new(Utc::now()));
        {
            let store = Arc::new(Store::open(&path).unwrap());
            let q = SyncQueue::new(store.clone(), clock.clone());
            q.enqueue("alice", "web", "password_change", &pw("Queued-Pw-1"), 1)
                .unwrap();
            store.remove_meta("key_check").unwrap();
            store.flush().unwrap();
        }
        let key_file = crate::store::Sealer::key_path(&path);
        let right_key = std::fs::read(&key_file).unwrap();
        std::fs::write(&key_file, [7u8; 32]).unwrap();
        {
            let store = Arc::new(Store::open(&path).unwrap());
            let q = SyncQueue::new(store.clone(), clock.clone());
            assert_eq!(q.sealed_sample_opens().unwrap(), Some(false));
            let err = store
                .confirm_key(q.sealed_sample_opens().unwrap())
                .unwrap_err();
            assert!(matches!(err, StoreError::KeyMismatch { .. }), "{err}");
        }
        std::fs::write(&key_file, &right_key).unwrap();
        let store = Arc::new(Store::open(&path).unwrap());
        let q = SyncQueue::new(store.clone(), clock.clone());
        assert_eq!(q.sealed_sample_opens().unwrap(), Some(true));
        store.confirm_key(Some(true)).unwrap();
        let claimed = q.claim(10).unwrap();
        assert_eq!(password_of(&claimed[0]), "Queued-Pw-1");
    }

    /// Flips a bit of an item's sealed data: the record still decodes, the data no longer opens.
    fn damage_sealed(q: &SyncQueue, key: &[u8]) {
        let bytes = q.store.sync_items.get(key).unwrap().unwrap();
        let mut item = decode_item(&bytes).unwrap();
        let sealed = item.sealed_data.as_mut().unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        q.store
            .sync_items
            .insert(key, encode_item(&item).unwrap())
            .unwrap();
    }

    /// An old database whose first sealed item is damaged is not taken for a wrong key while
    /// another item opens; only when none opens is the key refused.
    #[test]
    fn one_damaged_sealed_item_does_not_pass_for_a_wrong_key() {
        let (q, _) = setup();
        assert_eq!(q.sealed_sample_opens().unwrap(), None, "nothing to check");
        for user in ["a", "b", "c"] {
            q.enqueue(user, "p", "password_change", &pw("pw-123456"), 1)
                .unwrap();
        }
        let keys: Vec<_> = q
            .store
            .sync_items
            .iter()
            .keys()
            .map(|k| k.unwrap())
            .collect();
        damage_sealed(&q, &keys[0]);
        assert_eq!(q.sealed_sample_opens().unwrap(), Some(true));
        for key in &keys[1..] {
            damage_sealed(&q, key);
        }
        assert_eq!(q.sealed_sample_opens().unwrap(), Some(false));
    }

    /// A pending item as the previous release (layout 1) wrote it: `queue-sync --user alice
    /// --package webapp --priority 3`, captured from that build's database.
    const LAYOUT_1_RECORD: &str = "011000000000000000825b4cb9d5e04e8ea2e88c00e91b5b9b0500000000000000616c6963650600000000000000776562617070000000000137000000000000001f5259bd44c34ed51f645c40420a28d73bfad3f242237675bb96b615ea0ee0bc9630c722f3f8b0802b68ccbc949aa6e8aee5ecd89d5aee1e00000000000000323032362d31322d30315432323a35393a31372e3033323030383335395a00000000000000000000030000001e00000000000000323032362d31322d30315432323a35393a31372e3033323030383335395a000000000000000000";

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn a_layout_1_record_from_the_previous_release_still_reads_and_counts() {
        let bytes = unhex(LAYOUT_1_RECORD);
        let item = decode_item(&bytes).unwrap();
        assert_eq!(
            item.sync_id,
            "825b4cb9-d5e0-4e8e-a2e8-8c00e91b5b9b"
                .parse::<Uuid>()
                .unwrap()
        );
        assert_eq!(
            (item.username.as_str(), item.package.as_str()),
            ("alice", "webapp")
        );
        assert_eq!(
            (item.status, item.priority, item.attempts),
            (SyncStatus::Pending, 3, 0)
        );
        assert!(item.sealed_data.is_some() && item.applying.is_none() && !item.delayed);
        // Written back, it takes the new layout and reads the same.
        let again = encode_item(&item).unwrap();
        assert_eq!(again[0], ITEM_LAYOUT);
        assert_eq!(decode_item(&again).unwrap().sync_id, item.sync_id);

        // A database of that release has no counters: the first count builds them by a scan.
        let (q, _) = setup();
        q.store
            .sync_items
            .insert(item.sync_id.as_bytes(), bytes)
            .unwrap();
        q.store
            .sync_order
            .insert(
                order_key(3, item.queued_at, item.seq),
                item.sync_id.as_bytes(),
            )
            .unwrap();
        assert!(q.store.meta.get(COUNTS_BUILT).unwrap().is_none());
        assert_eq!(q.counts().unwrap().pending, 1);
        assert!(q.store.meta.get(COUNTS_BUILT).unwrap().is_some());
        q.enqueue("bob", "webapp", "password_change", &pw("pw-bbbbbbbb"), 5)
            .unwrap();
        assert_eq!(q.counts().unwrap().pending, 2);
        // An unknown newer layout is an error naming it, not a misread.
        let mut newer = encode_item(&item).unwrap();
        newer[0] = 9;
        let err = decode_item(&newer).unwrap_err().to_string();
        assert!(err.contains("layout 9"), "{err}");
    }

    /// The counters against a fresh scan of every record.
    fn assert_counts_match_a_scan(q: &SyncQueue) {
        let kept = q.counts().unwrap();
        let scanned = q.rebuild_counts().unwrap();
        assert_eq!(kept, scanned);
    }

    #[test]
    fn counters_follow_every_transition_and_agree_with_a_scan() {
        let (q, clock) = setup();
        assert_eq!(q.counts().unwrap(), QueueCounts::default());
        let a = q
            .enqueue("a", "p", "password_change", &pw("pw-aaaaaa"), 1)
            .unwrap();
        let b = q
            .enqueue("b", "p", "password_change", &pw("pw-bbbbbb"), 1)
            .unwrap();
        let c = q
            .enqueue("c", "p", "password_change", &pw("pw-cccccc"), 1)
            .unwrap();
        assert_counts_match_a_scan(&q);
        assert_eq!(q.counts().unwrap().pending, 3);
        q.claim(10).unwrap();
        assert_eq!(q.counts().unwrap().processing, 3);
        q.complete(a).unwrap();
        q.fail(b, "user not found").unwrap();
        q.retry(c, "HTTP 409", std::time::Duration::from_secs(1))
            .unwrap();
        q.enqueue("c", "p", "password_change", &pw("pw-cccccc-2"), 1)
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

    #[test]
    fn cleanup_failed_removes_only_failed_items_older_than_its_age() {
        let (q, clock) = setup();
        let old_fail = q
            .enqueue("a", "p", "password_change", &pw("pw-aaaaaa"), 1)
            .unwrap();
        let done = q
            .enqueue("b", "p", "password_change", &pw("pw-bbbbbb"), 1)
            .unwrap();
        q.claim(5).unwrap();
        q.fail(old_fail, "policy").unwrap();
        q.complete(done).unwrap();
        clock.advance(Duration::days(31));
        let new_fail = q
            .enqueue("c", "p", "password_change", &pw("pw-cccccc"), 1)
            .unwrap();
        q.claim(5).unwrap();
        q.fail(new_fail, "policy").unwrap();
        assert_eq!(
            q.cleanup_failed(std::time::Duration::from_secs(30 * 86400))
                .unwrap(),
            1
        );
        assert!(q.get(old_fail).unwrap().is_none());
        assert!(q.get(new_fail).unwrap().is_some());
        assert!(
            q.get(done).unwrap().is_some(),
            "completed items are cleanup()'s"
        );
    }

    #[test]
    fn pages_walk_every_item_once_pending_first_and_cursors_round_trip() {
        let (q, clock) = setup();
        let mut all = HashSet::new();
        for i in 0..7u32 {
            all.insert(
                q.enqueue(
                    &format!("u{i}"),
                    "p",
                    "password_change",
                    &pw("pw-1234567"),
                    1 + i % 3,
                )
                .unwrap(),
            );
            clock.advance(Duration::seconds(1));
        }
        let claimed = ids(&q.claim(3).unwrap());
        q.complete(claimed[0]).unwrap();
        q.retry(claimed[1], "HTTP 409", std::time::Duration::from_secs(60))
            .unwrap();
        // claimed[2] stays in flight.
        let mut seen = Vec::new();
        let mut after: Option<Cursor> = None;
        loop {
            let page = q.page(after.as_ref(), 2).unwrap();
            assert!(page.items.len() <= 2);
            seen.extend(page.items.iter().map(|i| (i.sync_id, i.status)));
            match page.next {
                Some(next) => {
                    let printed = next.to_string();
                    after = Some(printed.parse().unwrap());
                    assert_eq!(after.as_ref(), Some(&next));
                }
                None => break,
            }
        }
        let ids_seen: HashSet<Uuid> = seen.iter().map(|(id, _)| *id).collect();
        assert_eq!(seen.len(), 7, "each item once: {seen:?}");
        assert_eq!(ids_seen, all);
        let statuses: Vec<SyncStatus> = seen.iter().map(|(_, s)| *s).collect();
        let rank = |s: &SyncStatus| match s {
            SyncStatus::Pending => 0,
            SyncStatus::Processing => 1,
            _ => 2,
        };
        assert!(
            statuses.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])),
            "{statuses:?}"
        );
        assert!(q.page(None, 100).unwrap().next.is_none());
        for bad in ["", "x", "9-00", "0-0", "0-zz"] {
            assert!(
                matches!(bad.parse::<Cursor>(), Err(QueueError::BadInput(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_send_mark_survives_a_crash_and_keycloaks_date_decides() {
        let before = Applying {
            sent_at: Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0).unwrap(),
            password_created_before: Some(1_000),
        };
        assert!(
            !before.applied(Some(1_000)),
            "unchanged: not applied, send again"
        );
        assert!(before.applied(Some(1_001)), "reset since: applied");
        assert!(
            before.applied(Some(999)),
            "Keycloak's clock stepped back: still a reset"
        );
        assert!(!before.applied(None), "no password at all: not ours");
        let no_password = Applying {
            password_created_before: None,
            ..before
        };
        assert!(no_password.applied(Some(5)));
        assert!(!no_password.applied(None));

        let (q, _) = setup();
        let id = q
            .enqueue("u", "p", "password_change", &pw("pw-123456"), 1)
            .unwrap();
        q.claim(1).unwrap();
        FLUSHED_UNDER_LOCK.with(|c| c.set(None));
        q.mark_sending(id, Some(1_000)).unwrap();
        assert_eq!(
            FLUSHED_UNDER_LOCK.with(|c| c.get()),
            Some(false),
            "the mark is flushed before the request goes out"
        );
        let q2 = SyncQueue::new(q.store.clone(), q.clock.clone());
        assert_eq!(q2.recover().unwrap(), 1);
        let item = q2.get(id).unwrap().unwrap();
        assert_eq!(item.status, SyncStatus::Pending);
        assert_eq!(item.applying.unwrap().password_created_before, Some(1_000));
        let claimed = q2.claim(1).unwrap();
        assert!(
            claimed[0].item.applying.is_some(),
            "the next attempt sees the mark"
        );
        q2.clear_sending(id).unwrap();
        assert!(q2.get(id).unwrap().unwrap().applying.is_none());
        q2.mark_sending(id, None).unwrap();
        q2.complete(id).unwrap();
        assert!(
            q2.get(id).unwrap().unwrap().applying.is_none(),
            "finished: no mark"
        );
        assert!(
            q2.mark_sending(id, None).is_err(),
            "only a claimed item is sent"
        );
    }

    #[test]
    fn a_local_change_lands_with_its_queue_item_or_not_at_all() {
        let (q, _) = setup();
        q.store.local_users.insert(b"u\0p", &b"old"[..]).unwrap();
        let data = || {
            SyncData::PasswordChange(PasswordChange {
                password: "pw-123456".into(),
            })
        };
        let ok = |cur: &[u8]| -> Result<Vec<u8>, StoreError> {
            assert_eq!(cur, b"old");
            Ok(b"new".to_vec())
        };
        let (id, claimed) = q
            .enqueue_with_local_change(
                "u",
                "p",
                data(),
                1,
                true,
                &LocalChange {
                    key: b"u\0p".to_vec(),
                    change: &ok,
                    cached_token: None,
                },
            )
            .unwrap();
        assert_eq!(
            q.store.local_users.get(b"u\0p").unwrap().as_deref(),
            Some(&b"new"[..])
        );
        let claimed = claimed.expect("claimed for an immediate send");
        assert_eq!(claimed.item.sync_id, id);
        assert_eq!(q.get(id).unwrap().unwrap().status, SyncStatus::Processing);
        // A second change while the first is in flight waits behind it.
        let (_, second) = q
            .enqueue_with_local_change(
                "u",
                "p",
                data(),
                1,
                true,
                &LocalChange {
                    key: b"u\0p".to_vec(),
                    change: &ok2,
                    cached_token: None,
                },
            )
            .unwrap();
        fn ok2(_: &[u8]) -> Result<Vec<u8>, StoreError> {
            Ok(b"newer".to_vec())
        }
        assert!(second.is_none());
        // The local change fails: nothing at all is written.
        let before = q.counts().unwrap();
        let broken = |_: &[u8]| -> Result<Vec<u8>, StoreError> {
            Err(StoreError::Corrupt {
                tree: "local_users",
                cause: CodecError::Decode("bad".into()),
            })
        };
        let err = q
            .enqueue_with_local_change(
                "u",
                "p",
                data(),
                1,
                false,
                &LocalChange {
                    key: b"u\0p".to_vec(),
                    change: &broken,
                    cached_token: None,
                },
            )
            .unwrap_err();
        assert!(matches!(err, QueueError::LocalUser(_)), "{err}");
        let missing = q
            .enqueue_with_local_change(
                "nobody",
                "p",
                data(),
                1,
                false,
                &LocalChange {
                    key: b"nobody\0p".to_vec(),
                    change: &ok2,
                    cached_token: None,
                },
            )
            .unwrap_err();
        assert!(matches!(missing, QueueError::LocalUser(_)), "{missing}");
        assert_eq!(q.counts().unwrap(), before);
        assert_eq!(
            q.store.local_users.get(b"u\0p").unwrap().as_deref(),
            Some(&b"newer"[..])
        );
        assert_counts_match_a_scan(&q);
    }

    #[test]
    fn enqueue_flushes_outside_the_queue_lock() {
        let (q, _) = setup();
        FLUSHED_UNDER_LOCK.with(|c| c.set(None));
        q.enqueue("u", "p", "password_change", &pw("pw-123456"), 1)
            .unwrap();
        assert_eq!(FLUSHED_UNDER_LOCK.with(|c| c.get()), Some(false));
        q.claim(1).unwrap();
        FLUSHED_UNDER_LOCK.with(|c| c.set(None));
        SyncQueue::new(q.store.clone(), q.clock.clone())
            .recover()
            .unwrap();
        assert_eq!(FLUSHED_UNDER_LOCK.with(|c| c.get()), Some(false));
    }
}
