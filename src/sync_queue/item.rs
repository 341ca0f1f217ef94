//! The stored record of one queued change, its status, and the decoding of both record layouts
//! (layout 1, before `applying`, is still read).

use super::SyncType;
use crate::account::user_key;
use crate::store::codec::{self, CodecError};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub(super) const TREE: &str = "sync_items";

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
    /// Sealed data; `None` once the item is completed or superseded (a failed one keeps it for
    /// an operator's retry).
    pub(super) sealed_data: Option<Vec<u8>>,
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
    pub(super) seq: u64,
    /// A pending item backing off after [`SyncQueue::retry`]: indexed in `sync_delayed` (by
    /// `next_attempt_at`) instead of `sync_order` until a claim finds it due and promotes it.
    /// Meaningless unless `status` is pending.
    pub(super) delayed: bool,
    /// Set (and flushed) just before the change is sent to Keycloak; cleared once Keycloak's
    /// answer is known. Still set on a pending item, it means an earlier attempt may have been
    /// applied (a crash, or a timeout, came before the answer): the next attempt asks Keycloak
    /// before sending it again. Absent from records written before layout 2.
    pub applying: Option<Applying>,
}

impl SyncItem {
    /// The key of the account the change is about ([`user_key`] of its user and package): the
    /// record keeps the names as it was written, so it is keyed from them.
    pub fn account_key(&self) -> Vec<u8> {
        user_key(&self.username, &self.package)
    }

    /// Whether the item still holds its (sealed) data: what `queue retry` needs to send it.
    pub fn has_data(&self) -> bool {
        self.sealed_data.is_some()
    }
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
pub(super) const ITEM_LAYOUT: u8 = 2;

/// [`SyncItem`] as layout 1 (every release before `applying`) wrote it: same fields, same
/// order, without the last one. Read, never written.
#[derive(Deserialize)]
pub(super) struct SyncItemV1 {
    sync_id: Uuid,
    username: String,
    package: String,
    sync_type: SyncType,
    pub(super) sealed_data: Option<Vec<u8>>,
    queued_at: DateTime<Utc>,
    processed_at: Option<DateTime<Utc>>,
    status: SyncStatus,
    attempts: u32,
    last_error: Option<String>,
    priority: u32,
    next_attempt_at: DateTime<Utc>,
    pub(super) seq: u64,
    pub(super) delayed: bool,
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

pub(super) fn encode_item(item: &SyncItem) -> Result<Vec<u8>, StoreError> {
    codec::encode_versioned(ITEM_LAYOUT, item)
        .map_err(|cause| StoreError::Encode { tree: TREE, cause })
}

/// Decodes a sync item of either layout.
pub(super) fn decode_item(bytes: &[u8]) -> Result<SyncItem, StoreError> {
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

pub(super) fn finish(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::acct;
    use crate::sync_queue::counts::COUNTS_BUILT;
    use crate::sync_queue::order_key;
    use crate::sync_queue::tests::{enqueue, pw, setup};

    /// A pending item as the previous release (layout 1) wrote it: `queue-sync --user alice
    /// --package webapp --priority 3`, captured from that build's database.
    const LAYOUT_1_RECORD: &str = "011000000000000000825b4cb9d5e04e8ea2e88c00e91b5b9b0500000000000000616c6963650600000000000000776562617070000000000137000000000000001f5259bd44c34ed51f645c40420a28d73bfad3f242237675bb96b615ea0ee0bc9630c722f3f8b0802b68ccbc949aa6e8aee5ecd89d5aee1e00000000000000323032362d31322d30315432323a35393a31372e3033323030383335395a00000000000000000000030000001e00000000000000323032362d31322d30315432323a35393a31372e3033323030383335395a000000000000000000";

    pub(super) fn unhex(hex: &str) -> Vec<u8> {
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
        enqueue(
            &q,
            &acct("bob", "webapp"),
            "password_change",
            &pw("pw-bbbbbbbb"),
            5,
        )
        .unwrap();
        assert_eq!(q.counts().unwrap().pending, 2);
        // An unknown newer layout is an error naming it, not a misread.
        let mut newer = encode_item(&item).unwrap();
        newer[0] = 9;
        let err = decode_item(&newer).unwrap_err().to_string();
        assert!(err.contains("layout 9"), "{err}");
    }
}
