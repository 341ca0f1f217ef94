//! Paging through the queue listing with an opaque cursor.

use super::index::{id_of, key_name};
use super::item::decode_item;
use super::{QueueError, SyncItem, SyncQueue};

/// Where a page of [`SyncQueue::page`] starts: just after this position. Printed by `queue` as
/// an opaque word (`--after`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// 0 due, 1 backing off, 2 in flight, 3 finished: the sections in the order `queue` lists.
    pub(super) section: u8,
    /// The last key shown, in that section's tree.
    pub(super) key: Vec<u8>,
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

impl SyncQueue {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::acct;
    use crate::sync_queue::tests::{claim_ids, enqueue, pw, setup};
    use crate::sync_queue::SyncStatus;
    use chrono::Duration;
    use std::collections::HashSet;
    use uuid::Uuid;

    #[test]
    fn pages_walk_every_item_once_pending_first_and_cursors_round_trip() {
        let (q, clock) = setup();
        let mut all = HashSet::new();
        for i in 0..7u32 {
            all.insert(
                enqueue(
                    &q,
                    &acct(&format!("u{i}"), "p"),
                    "password_change",
                    &pw("pw-1234567"),
                    1 + i % 3,
                )
                .unwrap(),
            );
            clock.advance(Duration::seconds(1));
        }
        let claimed = claim_ids(&q, 3);
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
}
