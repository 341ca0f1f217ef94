//! The queue's one error enum.

use super::SyncType;
use crate::store::StoreError;
use uuid::Uuid;

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
    /// An operator's action the item's state does not allow (in flight, already applied,
    /// older than a change already applied).
    #[error("{0}")]
    Refused(String),
    /// A stored item is unreadable.
    #[error("damaged sync item: {0}")]
    Corrupt(String),
    /// The local user record written together with a queue change (`passwd`) is gone or
    /// unreadable.
    #[error("local user record: {0}")]
    LocalUser(String),
    /// One change of a batch ([`crate::ResilientClient::queue_sync_many`]) was refused, so
    /// none was written.
    #[error("change {number} of {total}", number = index + 1)]
    InChange {
        /// Its place in the batch, from 0.
        index: usize,
        /// How many changes the batch held.
        total: usize,
        /// Why it was refused.
        #[source]
        source: Box<QueueError>,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl QueueError {
    /// `e`, as the refusal of the change at `index` of a batch of `total`.
    pub fn in_change(index: usize, total: usize, e: QueueError) -> QueueError {
        QueueError::InChange {
            index,
            total,
            source: Box::new(e),
        }
    }
}

impl From<sled::Error> for QueueError {
    fn from(e: sled::Error) -> Self {
        QueueError::Store(StoreError::from(e))
    }
}
