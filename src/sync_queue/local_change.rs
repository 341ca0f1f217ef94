//! `passwd`'s local change: the local user record (and its token cache entry) written in the
//! same transaction as the queue item, so a crash leaves both or neither.

use crate::store::StoreError;
use sled::transaction::ConflictableTransactionError;

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
    /// `token_cache` (both are [`crate::account::user_key`] of the user and package).
    pub key: Vec<u8>,
    /// Current bytes → new bytes.
    pub change: RecordChange<'a>,
    /// The account's token cache entry, if it has one, changed (or dropped) in the same
    /// transaction: the new password's verifier lands with the new password, or not at all.
    /// Pure as `change` is.
    pub cached_token: Option<CachedTokenChange<'a>>,
    /// Write the item already claimed (`processing`) and hand it back
    /// ([`super::Enqueued::claimed`]), for the caller to send to Keycloak at once and settle —
    /// unless a change for the same user is in flight (a running cycle): then it is queued
    /// behind it as usual. A crash before it is settled leaves it to recovery.
    pub claim: bool,
}

/// Why a queue transaction gave up.
#[derive(Debug)]
pub(super) enum WriteAbort {
    /// The local user record of a [`LocalChange`] is not there.
    LocalUserMissing,
    /// The local user record of a [`LocalChange`] could not be changed.
    Local(StoreError),
}

/// Inside a queue transaction: the account record of `local` changed, and its token cache
/// entry with it (when it has one).
pub(super) fn apply_local_change(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::acct;
    use crate::store::codec::CodecError;
    use crate::sync_queue::tests::{assert_counts_match_a_scan, setup};
    use crate::sync_queue::{PasswordChange, QueueError, SyncData, SyncStatus};

    #[test]
    fn a_local_change_lands_with_its_queue_item_or_not_at_all() {
        let (q, _) = setup();
        q.store.local_users.insert(b"u\0p", &b"old"[..]).unwrap();
        let data = || SyncData::PasswordChange(PasswordChange::new("pw-123456".into()).unwrap());
        let ok = |cur: &[u8]| -> Result<Vec<u8>, StoreError> {
            assert_eq!(cur, b"old");
            Ok(b"new".to_vec())
        };
        let enqueued = q
            .enqueue(
                &acct("u", "p"),
                data(),
                1,
                Some(&LocalChange {
                    key: b"u\0p".to_vec(),
                    change: &ok,
                    cached_token: None,
                    claim: true,
                }),
            )
            .unwrap();
        assert_eq!(
            q.store.local_users.get(b"u\0p").unwrap().as_deref(),
            Some(&b"new"[..])
        );
        let id = enqueued.id;
        let claimed = enqueued.claimed.expect("claimed for an immediate send");
        assert_eq!(claimed.id(), id);
        assert_eq!(q.get(id).unwrap().unwrap().status, SyncStatus::Processing);
        // A second change while the first is in flight waits behind it.
        let second = q
            .enqueue(
                &acct("u", "p"),
                data(),
                1,
                Some(&LocalChange {
                    key: b"u\0p".to_vec(),
                    change: &ok2,
                    cached_token: None,
                    claim: true,
                }),
            )
            .unwrap();
        fn ok2(_: &[u8]) -> Result<Vec<u8>, StoreError> {
            Ok(b"newer".to_vec())
        }
        assert!(second.claimed.is_none());
        // The local change fails: nothing at all is written.
        let before = q.counts().unwrap();
        let broken = |_: &[u8]| -> Result<Vec<u8>, StoreError> {
            Err(StoreError::Corrupt {
                tree: "local_users",
                cause: CodecError::Decode("bad".into()),
            })
        };
        let err = q
            .enqueue(
                &acct("u", "p"),
                data(),
                1,
                Some(&LocalChange {
                    key: b"u\0p".to_vec(),
                    change: &broken,
                    cached_token: None,
                    claim: false,
                }),
            )
            .unwrap_err();
        assert!(matches!(err, QueueError::LocalUser(_)), "{err}");
        let missing = q
            .enqueue(
                &acct("nobody", "p"),
                data(),
                1,
                Some(&LocalChange {
                    key: b"nobody\0p".to_vec(),
                    change: &ok2,
                    cached_token: None,
                    claim: false,
                }),
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
}
