//! The queue time of the oldest item still waiting for Keycloak, for the
//! `sync_oldest_pending_age_seconds` gauge: a queue that is stuck shows as a growing age long
//! before its count looks unusual.
//!
//! Cheap on a long queue: `sync_order` is sorted by priority and then queue time, so the oldest
//! due item of each priority is the first key of that priority's range — one seek per distinct
//! priority in use. Items backing off (`sync_delayed`, sorted by due time) are read one by one;
//! they are the few that Keycloak answered with a passing error.

use super::index::id_of;
use super::{QueueError, SyncQueue, SyncStatus};
use chrono::{DateTime, Utc};

/// Decodes the queue time out of an order key (see [`super::order_key`]); `None` when the key
/// is not one.
fn queued_at_of(key: &[u8]) -> Option<DateTime<Utc>> {
    let bytes: [u8; 8] = key.get(4..12)?.try_into().ok()?;
    let micros = (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64;
    DateTime::from_timestamp_micros(micros)
}

impl SyncQueue {
    /// When the oldest pending item (due or backing off) was queued; `None` with none pending.
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] when the database fails.
    pub fn oldest_pending_queued_at(&self) -> Result<Option<DateTime<Utc>>, QueueError> {
        let mut oldest: Option<DateTime<Utc>> = None;
        let mut keep = |t: DateTime<Utc>| oldest = Some(oldest.map_or(t, |o| o.min(t)));
        let order = &self.store.sync_order;
        let mut from: Vec<u8> = Vec::new();
        while let Some(entry) = order.range(from.as_slice()..).next() {
            let (key, _) = entry?;
            let Some(priority) = key.get(..4).and_then(|p| <[u8; 4]>::try_from(p).ok()) else {
                break;
            };
            if let Some(t) = queued_at_of(&key) {
                keep(t);
            }
            match u32::from_be_bytes(priority).checked_add(1) {
                Some(next) => from = next.to_be_bytes().to_vec(),
                None => break,
            }
        }
        for entry in self.store.sync_delayed.iter() {
            let (_, raw_id) = entry?;
            let Some(id) = id_of(&raw_id) else { continue };
            // A damaged record is the claim's to report; it does not hide the others' age.
            if let Ok(Some(item)) = self.get(id) {
                if item.status == SyncStatus::Pending {
                    keep(item.queued_at);
                }
            }
        }
        Ok(oldest)
    }
}

#[cfg(test)]
mod tests {
    use super::super::order_key;
    use super::queued_at_of;
    use chrono::{TimeZone, Utc};

    #[test]
    fn the_queue_time_reads_back_out_of_an_order_key() {
        let t = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap();
        assert_eq!(queued_at_of(&order_key(7, t, 42)), Some(t));
        assert_eq!(queued_at_of(&[0, 1]), None);
    }
}
