//! A claimed item: the job in hand.

use super::{SyncData, SyncItem};

/// A claimed item with its opened data.
#[derive(Debug)]
pub struct Claimed {
    /// The item (status `processing`).
    pub item: SyncItem,
    /// Its data, unsealed.
    pub data: SyncData,
}
