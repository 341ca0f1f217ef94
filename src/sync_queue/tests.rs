//! Tests of the queue's API: enqueue, claim, last password wins, transitions, recovery, damage.

use super::item::{encode_item, TREE};
use super::*;
use crate::account::acct;
use crate::clock::ManualClock;
use chrono::{Duration, TimeZone};
use serde_json::json;

pub(crate) fn setup() -> (SyncQueue, ManualClock) {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0).unwrap());
    let q = SyncQueue::new(
        Arc::new(Store::temporary().unwrap()),
        Arc::new(clock.clone()),
    );
    (q, clock)
}

/// Parses `data` as the client does, then enqueues it: the tests' way in.
pub(crate) fn enqueue(
    q: &SyncQueue,
    account: &Account,
    sync_type: &str,
    data: &serde_json::Value,
    priority: u32,
) -> Result<Uuid, QueueError> {
    let data = SyncData::parse(sync_type, data)?;
    Ok(q.enqueue(account, data, priority, None)?.id)
}

/// Claims up to `n` items and leaves them in flight, as a process that stopped would (no drop
/// runs, so nothing puts them back): the tests drive the queue's settles by id.
pub(crate) fn claim_ids(q: &SyncQueue, n: usize) -> Vec<Uuid> {
    let claimed = q.claim(n).unwrap();
    let ids = claimed.iter().map(Claimed::id).collect();
    std::mem::forget(claimed);
    ids
}

pub(crate) fn pw(p: &str) -> serde_json::Value {
    json!({ "new_password": p })
}

pub(crate) fn password_of<'a>(c: &'a Claimed<'_>) -> &'a str {
    match c.data() {
        SyncData::PasswordChange(pc) => pc.password(),
        other => panic!("not a password change: {other:?}"),
    }
}

#[test]
fn claims_in_priority_order_and_respects_batch_size() {
    let (q, clock) = setup();
    let low = enqueue(
        &q,
        &acct("u1", "p"),
        "password_change",
        &pw("a-password"),
        9,
    )
    .unwrap();
    clock.advance(Duration::seconds(1));
    let high = enqueue(
        &q,
        &acct("u2", "p"),
        "password_change",
        &pw("b-password"),
        1,
    )
    .unwrap();
    clock.advance(Duration::seconds(1));
    let mid = enqueue(
        &q,
        &acct("u3", "p"),
        "password_change",
        &pw("c-password"),
        5,
    )
    .unwrap();
    let first = q.claim(2).unwrap();
    assert_eq!(
        first.iter().map(|c| c.item().sync_id).collect::<Vec<_>>(),
        vec![high, mid]
    );
    assert_eq!(first[0].item().status, SyncStatus::Processing);
    let rest = q.claim(10).unwrap();
    assert_eq!(
        rest.iter().map(|c| c.item().sync_id).collect::<Vec<_>>(),
        vec![low]
    );
    assert!(claim_ids(&q, 10).is_empty());
}

#[test]
fn a_newer_password_change_supersedes_older_pending_ones_whatever_the_priority() {
    let (q, clock) = setup();
    let old = enqueue(
        &q,
        &acct("Alice", "web"),
        "password_change",
        &pw("first-pass"),
        1,
    )
    .unwrap();
    clock.advance(Duration::seconds(1));
    let other_pkg = enqueue(
        &q,
        &acct("alice", "api"),
        "password_change",
        &pw("api-pass"),
        1,
    )
    .unwrap();
    let new = enqueue(
        &q,
        &acct("alice", "web"),
        "password_change",
        &pw("second-pass"),
        9,
    )
    .unwrap();
    let old_item = q.get(old).unwrap().unwrap();
    assert_eq!(old_item.status, SyncStatus::Superseded);
    assert!(
        old_item.sealed_data.is_none(),
        "superseded items keep no secret"
    );
    let claimed = q.claim(10).unwrap();
    let ids: Vec<_> = claimed.iter().map(|c| c.item().sync_id).collect();
    assert_eq!(ids, vec![other_pkg, new]);
    assert_eq!(password_of(&claimed[1]), "second-pass");
}

/// Issue 7 point 8: the original design's `new_password`, and `password` as an alias.
#[test]
fn new_password_is_the_key_and_password_its_alias() {
    let (q, _) = setup();
    for data in [
        json!({"new_password": "pw-123456"}),
        json!({"password": "pw-123456"}),
    ] {
        let id = enqueue(&q, &acct("u", "p"), "password_change", &data, 1).unwrap();
        let claimed = q.claim(1).unwrap();
        assert_eq!(ids(&claimed), vec![id]);
        assert_eq!(password_of(&claimed[0]), "pw-123456");
        q.complete(id).unwrap();
    }
    let err = enqueue(
        &q,
        &acct("u", "p"),
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
    enqueue(&q, &acct("u", "p"), "password_change", &pw(&max), 1).unwrap();
    for (bad, why) in [
        (
            "p".repeat(crate::password::MAX_PASSWORD_BYTES + 1),
            "longer than 1024 bytes",
        ),
        ("pw\0-tail".to_string(), "NUL"),
        (String::new(), "must not be empty"),
    ] {
        let err = enqueue(&q, &acct("u", "p"), "password_change", &pw(&bad), 1).unwrap_err();
        assert!(matches!(err, QueueError::BadData { .. }), "{err}");
        assert!(err.to_string().contains(why), "{err}");
        // Data built in code cannot skip the rule: it is checked when built.
        let err = PasswordChange::new(bad).unwrap_err();
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
    let data = SyncData::from_json_text(t, br#"{"new_password": "pw-1"}"#).unwrap();
    let id = q.enqueue(&acct("u", "p"), data, 1, None).unwrap().id;
    let claimed = q.claim(1).unwrap();
    assert_eq!(password_of(&claimed[0]), "pw-1");
    assert_eq!(q.get(id).unwrap().unwrap().status, SyncStatus::Processing);
}

#[test]
fn unknown_types_and_bad_data_are_refused_at_enqueue() {
    let (q, _) = setup();
    assert!(matches!(
        enqueue(&q, &acct("u", "p"), "email_change", &pw("x"), 1),
        Err(QueueError::UnknownType(_))
    ));
    for data in [
        json!({}),
        json!({"password": 5}),
        json!({"password": ""}),
        json!({"password": "x", "extra": 1}),
        json!("x"),
    ] {
        let err = enqueue(&q, &acct("u", "p"), "password_change", &data, 1).unwrap_err();
        assert!(matches!(err, QueueError::BadData { .. }), "{data}: {err}");
    }
    assert!(matches!(
        enqueue(&q, &acct("u", "p"), "password_change", &pw("x"), 0),
        Err(QueueError::BadInput(_))
    ));
    assert_eq!(q.pending_count(), 0);
}

/// Issue 15 point 2: an item backing off under a clock 30 days fast is not held for the
/// month once the clock is corrected: a due time beyond the longest backoff is due now.
#[test]
fn a_backoff_set_under_a_fast_clock_is_due_after_the_correction() {
    let (q, clock) = setup();
    let right = crate::clock::Clock::now(&clock);
    let id = enqueue(&q, &acct("u", "p"), "password_change", &pw("skewed-pw"), 1).unwrap();
    clock.advance(Duration::days(30));
    claim_ids(&q, 1);
    q.retry(id, "HTTP 409", std::time::Duration::from_secs(60))
        .unwrap();
    clock.set(right);
    assert_eq!(
        claim_ids(&q, 1),
        vec![id],
        "due at once after the correction"
    );
    // An ordinary backoff still waits, and no delay exceeds the cap.
    let other = enqueue(&q, &acct("v", "p"), "password_change", &pw("other-pw"), 1).unwrap();
    claim_ids(&q, 2);
    q.retry(other, "HTTP 409", std::time::Duration::from_secs(86_400))
        .unwrap();
    assert!(claim_ids(&q, 1).is_empty(), "backing off");
    let item = q.get(other).unwrap().unwrap();
    assert_eq!(item.next_attempt_at, right + Duration::hours(1), "capped");
}

#[test]
fn retry_backs_off_release_does_not_count_and_fail_keeps_the_secret_sealed() {
    let (q, clock) = setup();
    let id = enqueue(&q, &acct("u", "p"), "password_change", &pw("secret-pw"), 1).unwrap();
    let c = q.claim(1).unwrap();
    assert_eq!(c.len(), 1);
    q.release(id, Some("Keycloak unavailable")).unwrap();
    assert_eq!(q.get(id).unwrap().unwrap().attempts, 0);
    claim_ids(&q, 1);
    q.retry(id, "HTTP 409", std::time::Duration::from_secs(60))
        .unwrap();
    let item = q.get(id).unwrap().unwrap();
    assert_eq!((item.status, item.attempts), (SyncStatus::Pending, 1));
    assert!(claim_ids(&q, 1).is_empty(), "not due yet");
    clock.advance(Duration::seconds(61));
    assert_eq!(claim_ids(&q, 1).len(), 1);
    q.fail(id, "password policy: too short", true).unwrap();
    let item = q.get(id).unwrap().unwrap();
    assert_eq!(item.status, SyncStatus::Failed);
    assert_eq!(
        item.last_error.as_deref(),
        Some("password policy: too short")
    );
    assert!(item.sealed_data.is_some(), "kept for an operator's retry");
    assert_eq!(q.pending_count(), 0);
    let raw = q.store.sync_items.get(id.as_bytes()).unwrap().unwrap();
    assert!(
        !raw.windows(9).any(|w| w == b"secret-pw"),
        "sealed, never clear"
    );
}

#[test]
fn processing_items_return_to_pending_on_recover() {
    let (q, _) = setup();
    let id = enqueue(&q, &acct("u", "p"), "password_change", &pw("pw-123456"), 1).unwrap();
    claim_ids(&q, 5);
    assert_eq!(q.counts().unwrap().processing, 1);
    // a new queue over the same store = the next process after a crash
    let q2 = SyncQueue::new(q.store.clone(), q.clock.clone());
    assert_eq!(q2.recover().unwrap(), 1);
    assert_eq!(q2.get(id).unwrap().unwrap().status, SyncStatus::Pending);
    assert_eq!(claim_ids(&q2, 5).len(), 1);
}

#[test]
fn cleanup_removes_old_finished_items_but_keeps_failed() {
    let (q, clock) = setup();
    let done = enqueue(&q, &acct("a", "p"), "password_change", &pw("pw-aaaaaa"), 1).unwrap();
    let bad = enqueue(&q, &acct("b", "p"), "password_change", &pw("pw-bbbbbb"), 1).unwrap();
    claim_ids(&q, 5);
    q.complete(done).unwrap();
    q.fail(bad, "user not found", true).unwrap();
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
    assert!(!q.has_pending_password_change(&acct("u", "p")).unwrap());
    enqueue(&q, &acct("U", "p"), "password_change", &pw("pw-123456"), 1).unwrap();
    assert!(q.has_pending_password_change(&acct("u", "p")).unwrap());
    claim_ids(&q, 1);
    assert!(
        q.has_pending_password_change(&acct("u", "p")).unwrap(),
        "in flight counts too"
    );
}

pub(crate) fn ids(claimed: &[Claimed]) -> Vec<Uuid> {
    claimed.iter().map(|c| c.item().sync_id).collect()
}

/// Overwrites an item's record with bytes that do not decode (right version byte).
pub(crate) fn damage(q: &SyncQueue, id: Uuid) {
    q.store
        .sync_items
        .insert(id.as_bytes(), &[codec_version(), 0xff][..])
        .unwrap();
}

pub(crate) fn codec_version() -> u8 {
    crate::store::codec::RECORD_VERSION
}

pub(crate) fn assert_superseded_by(q: &SyncQueue, id: Uuid, newer: Uuid) {
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
    let old = enqueue(
        &q,
        &acct("alice", "web"),
        "password_change",
        &pw("old-password"),
        1,
    )
    .unwrap();
    assert_eq!(claim_ids(&q, 10), vec![old]);
    clock.advance(Duration::seconds(1));
    let new = enqueue(
        &q,
        &acct("Alice", "web"),
        "password_change",
        &pw("new-password"),
        9,
    )
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
    let old = enqueue(
        &q,
        &acct("alice", "web"),
        "password_change",
        &pw("old-password"),
        1,
    )
    .unwrap();
    claim_ids(&q, 10);
    let new = enqueue(
        &q,
        &acct("alice", "web"),
        "password_change",
        &pw("new-password"),
        5,
    )
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
    assert_eq!(claim_ids(&q, 10), vec![new]);
    assert!(claim_ids(&q, 10).is_empty());
}

#[test]
fn recover_supersedes_a_crash_left_change_when_a_newer_one_is_pending() {
    let (q, _) = setup();
    let old = enqueue(
        &q,
        &acct("alice", "web"),
        "password_change",
        &pw("old-password"),
        1,
    )
    .unwrap();
    let other = enqueue(
        &q,
        &acct("bob", "web"),
        "password_change",
        &pw("bob-password"),
        1,
    )
    .unwrap();
    claim_ids(&q, 10);
    let new = enqueue(
        &q,
        &acct("alice", "web"),
        "password_change",
        &pw("new-password"),
        1,
    )
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
    let first = enqueue(
        &q,
        &acct("alice", "web"),
        "password_change",
        &pw("first-pass"),
        1,
    )
    .unwrap();
    claim_ids(&q, 10);
    let second = enqueue(
        &q,
        &acct("alice", "web"),
        "password_change",
        &pw("second-pass"),
        1,
    )
    .unwrap();
    let bob = enqueue(
        &q,
        &acct("bob", "web"),
        "password_change",
        &pw("bob-password"),
        1,
    )
    .unwrap();
    // A second cycle running meanwhile must not take alice's newer change: if it finished
    // before the first one, the older password would land last.
    assert_eq!(claim_ids(&q, 10), vec![bob]);
    q.complete(first).unwrap();
    assert_eq!(claim_ids(&q, 10), vec![second]);
}

#[test]
fn backed_off_items_wait_outside_the_order_index_until_due() {
    let (q, clock) = setup();
    let slow = enqueue(
        &q,
        &acct("u1", "p"),
        "password_change",
        &pw("slow-password"),
        1,
    )
    .unwrap();
    claim_ids(&q, 10);
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
    assert!(q.has_pending_password_change(&acct("u1", "p")).unwrap());
    assert_eq!((q.pending_count(), q.counts().unwrap().pending), (1, 1));
    assert!(!q.has_due().unwrap());

    clock.advance(Duration::seconds(30));
    let later = enqueue(
        &q,
        &acct("u2", "p"),
        "password_change",
        &pw("later-password"),
        5,
    )
    .unwrap();
    assert!(claim_ids(&q, 0).is_empty());
    assert_eq!(q.store.sync_delayed.len(), 1, "not due: not promoted");
    assert_eq!(claim_ids(&q, 10), vec![later]);

    clock.advance(Duration::seconds(31));
    assert!(q.has_due().unwrap());
    let late = enqueue(
        &q,
        &acct("u3", "p"),
        "password_change",
        &pw("late-password"),
        5,
    )
    .unwrap();
    // Once due, the item is promoted and takes its place by priority.
    let claimed = q.claim(1).unwrap();
    assert_eq!(ids(&claimed), vec![slow]);
    assert!(!claimed[0].item().delayed);
    assert!(q.store.sync_delayed.is_empty());
    assert_eq!(claim_ids(&q, 10), vec![late]);
}

#[test]
fn a_huge_backoff_or_age_does_not_panic() {
    let (q, _) = setup();
    let id = enqueue(&q, &acct("u", "p"), "password_change", &pw("pw-123456"), 1).unwrap();
    claim_ids(&q, 1);
    q.retry(id, "HTTP 409", std::time::Duration::MAX).unwrap();
    assert!(claim_ids(&q, 1).is_empty());
    assert_eq!(q.cleanup(std::time::Duration::MAX).unwrap(), 0);
}

#[test]
fn a_damaged_record_is_skipped_and_taken_out_of_the_order() {
    let (q, clock) = setup();
    let a = enqueue(&q, &acct("a", "p"), "password_change", &pw("pw-aaaaaa"), 1).unwrap();
    let bad = enqueue(&q, &acct("b", "p"), "password_change", &pw("pw-bbbbbb"), 2).unwrap();
    let c = enqueue(&q, &acct("c", "p"), "password_change", &pw("pw-cccccc"), 3).unwrap();
    damage(&q, bad);
    assert_eq!(claim_ids(&q, 10), vec![a, c]);
    assert!(
        q.store.sync_order.is_empty(),
        "the damaged id is not met again"
    );
    assert!(
        q.store.sync_items.get(bad.as_bytes()).unwrap().is_some(),
        "raw record kept"
    );
    assert!(claim_ids(&q, 10).is_empty());
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
    let bad = enqueue(&q, &acct("a", "p"), "password_change", &pw("pw-aaaaaa"), 1).unwrap();
    let good = enqueue(&q, &acct("b", "p"), "password_change", &pw("pw-bbbbbb"), 1).unwrap();
    let backing_off = enqueue(&q, &acct("c", "p"), "password_change", &pw("pw-cccccc"), 1).unwrap();
    claim_ids(&q, 10);
    q.retry(backing_off, "HTTP 409", std::time::Duration::from_secs(1))
        .unwrap();
    damage(&q, bad);
    let q2 = SyncQueue::new(q.store.clone(), q.clock.clone());
    assert_eq!(q2.recover().unwrap(), 1);
    assert!(q2.store.sync_inflight.is_empty());
    assert_eq!(q2.get(good).unwrap().unwrap().status, SyncStatus::Pending);
    damage(&q2, backing_off);
    clock.advance(Duration::seconds(2));
    assert_eq!(claim_ids(&q2, 10), vec![good]);
    assert!(q2.store.sync_delayed.is_empty());
}

/// Issue 7 point 2: an item whose data does not open under the key in use is failed,
/// counted, and keeps its sealed data, which opens again under the right key.
#[test]
fn an_item_that_does_not_open_is_failed_but_keeps_its_sealed_data() {
    let (q, _) = setup();
    let id = enqueue(&q, &acct("u", "p"), "password_change", &pw("pw-123456"), 1).unwrap();
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
    assert!(claim_ids(&q, 10).is_empty());
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
    let id = enqueue(&q, &acct("u", "p"), "password_change", &pw("pw-123456"), 1).unwrap();
    claim_ids(&q, 1);
    damage(&q, id);
    assert!(q.has_pending_password_change(&acct("u", "p")).is_err());
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
        enqueue(
            &q,
            &acct("alice", "web"),
            "password_change",
            &pw("Queued-Pw-1"),
            1,
        )
        .unwrap();
        store
            .remove_meta(crate::store::meta::MetaKey::KeyCheck)
            .unwrap();
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
pub(crate) fn damage_sealed(q: &SyncQueue, key: &[u8]) {
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
        enqueue(&q, &acct(user, "p"), "password_change", &pw("pw-123456"), 1).unwrap();
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

/// The counters against a fresh scan of every record.
pub(crate) fn assert_counts_match_a_scan(q: &SyncQueue) {
    let kept = q.counts().unwrap();
    let scanned = q.rebuild_counts().unwrap();
    assert_eq!(kept, scanned);
}

#[test]
fn cleanup_failed_removes_only_failed_items_older_than_its_age() {
    let (q, clock) = setup();
    let old_fail = enqueue(&q, &acct("a", "p"), "password_change", &pw("pw-aaaaaa"), 1).unwrap();
    let done = enqueue(&q, &acct("b", "p"), "password_change", &pw("pw-bbbbbb"), 1).unwrap();
    claim_ids(&q, 5);
    q.fail(old_fail, "policy", true).unwrap();
    q.complete(done).unwrap();
    clock.advance(Duration::days(31));
    let new_fail = enqueue(&q, &acct("c", "p"), "password_change", &pw("pw-cccccc"), 1).unwrap();
    claim_ids(&q, 5);
    q.fail(new_fail, "policy", true).unwrap();
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
    let id = enqueue(&q, &acct("u", "p"), "password_change", &pw("pw-123456"), 1).unwrap();
    claim_ids(&q, 1);
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
        claimed[0].item().applying.is_some(),
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
fn enqueue_flushes_outside_the_queue_lock() {
    let (q, _) = setup();
    FLUSHED_UNDER_LOCK.with(|c| c.set(None));
    enqueue(&q, &acct("u", "p"), "password_change", &pw("pw-123456"), 1).unwrap();
    assert_eq!(FLUSHED_UNDER_LOCK.with(|c| c.get()), Some(false));
    claim_ids(&q, 1);
    FLUSHED_UNDER_LOCK.with(|c| c.set(None));
    SyncQueue::new(q.store.clone(), q.clock.clone())
        .recover()
        .unwrap();
    assert_eq!(FLUSHED_UNDER_LOCK.with(|c| c.get()), Some(false));
}

#[test]
fn the_oldest_pending_item_is_found_across_priorities_and_backoff() {
    let (q, clock) = setup();
    assert_eq!(q.oldest_pending_queued_at().unwrap(), None);
    let first = crate::clock::Clock::now(&clock);
    // The oldest item backs off; a later one waits at an urgent priority, a still later one at
    // a lax one.
    enqueue(
        &q,
        &acct("u1", "p"),
        "password_change",
        &pw("a-password"),
        5,
    )
    .unwrap();
    clock.advance(Duration::seconds(10));
    enqueue(
        &q,
        &acct("u2", "p"),
        "password_change",
        &pw("b-password"),
        1,
    )
    .unwrap();
    clock.advance(Duration::seconds(10));
    enqueue(
        &q,
        &acct("u3", "p"),
        "password_change",
        &pw("c-password"),
        9,
    )
    .unwrap();
    assert_eq!(q.oldest_pending_queued_at().unwrap(), Some(first));

    let claimed = q.claim(3).unwrap();
    let mut rest = Vec::new();
    for c in claimed {
        if c.item().username == "u1" {
            c.retry("409 conflict", std::time::Duration::from_secs(60))
                .unwrap();
        } else {
            rest.push(c);
        }
    }
    drop(rest);
    // Backing off, u1 is still the oldest waiting.
    assert_eq!(q.oldest_pending_queued_at().unwrap(), Some(first));

    let claimed = q.claim(3).unwrap();
    for c in claimed {
        c.complete().unwrap();
    }
    // u2 and u3 applied: only u1 waits, still backing off.
    assert_eq!(q.oldest_pending_queued_at().unwrap(), Some(first));
}

/// One user's changes go in the order they were made, whatever their priorities (a create
/// before its password change); priority still orders different users; a new password change
/// still supersedes the pending one, and a user change never supersedes anything.
#[test]
fn one_users_changes_go_in_the_order_they_were_made() {
    let (q, clock) = setup();
    let alice = acct("alice", "p");
    let create = enqueue(
        &q,
        &alice,
        "user_create",
        &json!({"password": "First-Password-1", "email": "alice@example.test"}),
        9,
    )
    .unwrap();
    clock.advance(Duration::seconds(1));
    let first_pw = enqueue(&q, &alice, "password_change", &pw("Second-Password-2"), 1).unwrap();
    clock.advance(Duration::seconds(1));
    let bob = enqueue(&q, &acct("bob", "p"), "user_disable", &json!({}), 5).unwrap();
    clock.advance(Duration::seconds(1));
    let second_pw = enqueue(&q, &alice, "password_change", &pw("Third-Password-3"), 1).unwrap();
    assert_eq!(
        q.get(first_pw).unwrap().unwrap().status,
        SyncStatus::Superseded,
        "last password wins"
    );
    assert_eq!(q.get(create).unwrap().unwrap().status, SyncStatus::Pending);

    // bob's (priority 5) and alice's create (9): alice's password change (1) waits for it.
    let first = q.claim(10).unwrap();
    let ids: Vec<Uuid> = first.iter().map(Claimed::id).collect();
    assert_eq!(ids, vec![bob, create]);
    for c in first {
        c.complete().unwrap();
    }
    let mut next = q.claim(10).unwrap();
    assert_eq!(
        next.iter().map(Claimed::id).collect::<Vec<_>>(),
        vec![second_pw]
    );
    assert_eq!(password_of(&next[0]), "Third-Password-3");
    let waiting = q.waiting_by_type().unwrap();
    assert_eq!(waiting[0], (SyncType::PasswordChange, 1), "{waiting:?}");
    assert!(waiting[1..].iter().all(|(_, n)| *n == 0), "{waiting:?}");
    next.remove(0).release(None).unwrap();
    q.rebuild_counts().unwrap();
    assert_eq!(q.waiting_by_type().unwrap(), waiting, "a scan agrees");
    assert!(matches!(
        SyncData::parse("user_delete", &json!({"x": 1})),
        Err(QueueError::BadData { .. })
    ));
    let err = SyncData::parse("user_create", &json!({"email": "a@b"})).unwrap_err();
    assert!(err.to_string().contains("password"), "{err}");
}
