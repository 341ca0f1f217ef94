//! `queue show`, `queue retry`, `queue remove`: an operator acting on one item once the cause
//! of a failure is fixed, each with its `--json` view. The rules (what may be retried or
//! removed, and when) live in the queue ([`crate::sync_queue::SyncQueue::retry_item`]); a
//! refusal is exit 1 with the queue's reason.

use super::render::print_json;
use super::sync::{item_line, ItemView};
use super::{EXIT_OK, EXIT_REFUSED};
use crate::client::ResilientClient;
use crate::sync_queue::{FailedFilter, QueueError};
use serde::Serialize;
use uuid::Uuid;

use super::Io;

/// `queue show --json`.
#[derive(Serialize)]
struct ShowView<'a> {
    #[serde(flatten)]
    item: ItemView<'a>,
    /// Whether the item still holds its sealed data (a retry needs it).
    data_kept: bool,
}

/// `queue retry --json` and `queue remove --json`.
#[derive(Serialize)]
struct ActedView {
    /// `retried` or `removed`.
    done: &'static str,
    /// The items it was done to.
    sync_ids: Vec<Uuid>,
    /// Items left as they were, with why.
    refused: Vec<RefusedView>,
}

#[derive(Serialize)]
struct RefusedView {
    sync_id: Uuid,
    reason: String,
}

/// Prints one item.
pub(super) fn show(
    client: &ResilientClient,
    id: Uuid,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let item = client.queue().get(id)?.ok_or(QueueError::NotFound(id))?;
    if json {
        let view = ShowView {
            item: ItemView::from(&item),
            data_kept: item.has_data(),
        };
        print_json(&mut *io.out, &view)?;
        return Ok(EXIT_OK);
    }
    item_line(&mut *io.out, &item)?;
    let kept = if item.has_data() {
        "kept, sealed (a retry sends it)"
    } else {
        "none left"
    };
    writeln!(io.out, "  data: {kept}")?;
    Ok(EXIT_OK)
}

/// Sends one item again, or every failed one `filter` selects.
pub(super) fn retry(
    client: &ResilientClient,
    selection: Result<Uuid, FailedFilter>,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let queue = client.queue();
    let (retried, refused) = match selection {
        Ok(id) => match queue.retry_item(id) {
            Ok(()) => (vec![id], Vec::new()),
            Err(QueueError::Refused(reason)) => (Vec::new(), vec![(id, reason)]),
            Err(e) => return Err(e.into()),
        },
        Err(filter) => {
            let done = queue.retry_failed(&filter)?;
            (done.retried, done.refused)
        }
    };
    // One item refused is a refusal; a batch with some left behind still did its work.
    let code = if retried.is_empty() && !refused.is_empty() {
        EXIT_REFUSED
    } else {
        EXIT_OK
    };
    acted(io, json, "retried", retried, refused)?;
    Ok(code)
}

/// Removes one item.
pub(super) fn remove(
    client: &ResilientClient,
    id: Uuid,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    match client.queue().remove(id) {
        Ok(_) => {
            acted(io, json, "removed", vec![id], Vec::new())?;
            Ok(EXIT_OK)
        }
        Err(QueueError::Refused(reason)) => {
            acted(io, json, "removed", Vec::new(), vec![(id, reason)])?;
            Ok(EXIT_REFUSED)
        }
        Err(e) => Err(e.into()),
    }
}

fn acted(
    io: &mut Io,
    json: bool,
    done: &'static str,
    ids: Vec<Uuid>,
    refused: Vec<(Uuid, String)>,
) -> anyhow::Result<()> {
    // The reasons go to stderr either way: one line each, what a caller shows.
    for (_, reason) in &refused {
        writeln!(io.err, "refused: {reason}")?;
    }
    if json {
        let view = ActedView {
            done,
            sync_ids: ids,
            refused: refused
                .into_iter()
                .map(|(sync_id, reason)| RefusedView { sync_id, reason })
                .collect(),
        };
        return print_json(&mut *io.out, &view);
    }
    for id in &ids {
        writeln!(io.out, "{done} {id}")?;
    }
    if ids.is_empty() && refused.is_empty() {
        writeln!(io.out, "nothing to retry: no failed item matches")?;
    }
    Ok(())
}
