//! The sync queue's commands: `sync-now` (one cycle), `queue-sync` (enqueue a change),
//! `queue-sync-many` (a batch of them) and `queue` (one page of the listing), each with its
//! `--json` view.

use super::protocol::Change;
use super::render::{print_json, rfc3339};
use super::{Io, EXIT_OK};
use crate::account::Account;
use crate::client::{QueuedChange, ResilientClient};
use crate::replay::SyncReport;
use crate::sync_queue::{Cursor, QueueCounts, SyncItem};
use anyhow::Context;
use serde::Serialize;
use std::io::Write;

/// `sync-now --json`.
#[derive(Serialize)]
struct SyncNowView<'a> {
    failed_syncs: usize,
    pending_syncs: usize,
    report: ReportView<'a>,
}

/// What the cycle did, in `sync-now --json`.
#[derive(Serialize)]
struct ReportView<'a> {
    already_applied: usize,
    completed: usize,
    failed: usize,
    processed: usize,
    released: usize,
    retried: usize,
    stopped: Option<&'a str>,
}

impl<'a> From<&'a SyncReport> for ReportView<'a> {
    fn from(r: &'a SyncReport) -> Self {
        ReportView {
            already_applied: r.already_applied,
            completed: r.completed,
            failed: r.failed,
            processed: r.processed,
            released: r.released,
            retried: r.retried,
            stopped: r.stopped.as_deref(),
        }
    }
}

/// Runs one sync cycle of at most `batch` items (default: the config's batch size).
pub(super) fn sync_now(
    client: &ResilientClient,
    batch: Option<u32>,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let batch = batch
        .map(|b| b as usize)
        .unwrap_or(client.config().service.batch_size);
    let report = client.process_sync_queue_until(batch, io.stopping)?;
    // Failed items include those a claim could not open (wrong key, damaged record): they are
    // not in this run's report, but must not go unseen.
    let failed_syncs = client.queue().counts()?.failed;
    let pending_syncs = client.queue().pending_count();
    if json {
        let view = SyncNowView {
            failed_syncs,
            pending_syncs,
            report: ReportView::from(&report),
        };
        print_json(out, &view)?;
        return Ok(EXIT_OK);
    }
    writeln!(
        out,
        "{} processed ({} completed, {} failed, {} retried); {pending_syncs} pending",
        report.processed, report.completed, report.failed, report.retried,
    )?;
    if let Some(why) = &report.stopped {
        writeln!(out, "nothing more done: {why}")?;
    }
    if failed_syncs > 0 {
        writeln!(
            out,
            "{failed_syncs} failed item(s) in the queue (see `queue`)"
        )?;
    }
    Ok(EXIT_OK)
}

/// `queue-sync --json`.
#[derive(Serialize)]
struct QueuedView {
    sync_id: uuid::Uuid,
}

/// Enqueues a change (its data already checked by the door it came through).
pub(super) fn queue_sync(
    client: &ResilientClient,
    account: &Account,
    sync_type: &str,
    data: &serde_json::Value,
    priority: u32,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let sync_id = client.queue_change(account, sync_type, data, priority)?;
    if json {
        print_json(out, &QueuedView { sync_id })?;
    } else {
        writeln!(out, "{sync_id}")?;
    }
    Ok(EXIT_OK)
}

/// `queue-sync-many --json`.
#[derive(Serialize)]
struct QueuedManyView {
    sync_ids: Vec<uuid::Uuid>,
}

/// Enqueues a batch of changes with one flush (each checked first; none written when one is
/// refused): their SyncIds in order, one per line.
pub(super) fn queue_sync_many(
    client: &ResilientClient,
    changes: Vec<Change>,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let changes: Vec<QueuedChange> = changes.into_iter().map(QueuedChange::from).collect();
    let sync_ids = client.queue_sync_many(&changes)?;
    if json {
        print_json(out, &QueuedManyView { sync_ids })?;
    } else {
        for id in sync_ids {
            writeln!(out, "{id}")?;
        }
    }
    Ok(EXIT_OK)
}

/// `queue --json`: one page, the counts per status, and why the queue is blocked if it is.
#[derive(Serialize)]
struct PageView<'a> {
    blocked: Option<String>,
    counts: CountsView,
    items: Vec<ItemView<'a>>,
    next: Option<String>,
}

/// Items per status, in `queue --json`.
#[derive(Serialize)]
struct CountsView {
    completed: usize,
    failed: usize,
    pending: usize,
    processing: usize,
    superseded: usize,
}

impl From<QueueCounts> for CountsView {
    fn from(c: QueueCounts) -> Self {
        CountsView {
            completed: c.completed,
            failed: c.failed,
            pending: c.pending,
            processing: c.processing,
            superseded: c.superseded,
        }
    }
}

/// One item in `queue --json` (never its data: that may hold a secret).
#[derive(Serialize)]
pub(super) struct ItemView<'a> {
    attempts: u32,
    last_error: Option<&'a str>,
    next_attempt_at: String,
    package: &'a str,
    priority: u32,
    processed_at: Option<String>,
    queued_at: String,
    sent_at: Option<String>,
    status: &'static str,
    sync_id: uuid::Uuid,
    sync_type: &'static str,
    user: &'a str,
}

impl<'a> From<&'a SyncItem> for ItemView<'a> {
    fn from(i: &'a SyncItem) -> Self {
        ItemView {
            attempts: i.attempts,
            last_error: i.last_error.as_deref(),
            next_attempt_at: rfc3339(i.next_attempt_at),
            package: &i.package,
            priority: i.priority,
            processed_at: i.processed_at.map(rfc3339),
            queued_at: rfc3339(i.queued_at),
            sent_at: i.applying.map(|a| rfc3339(a.sent_at)),
            status: i.status.as_str(),
            sync_id: i.sync_id,
            sync_type: i.sync_type.as_str(),
            user: &i.username,
        }
    }
}

/// Prints one page of the queue, `limit` items after `after`.
pub(super) fn queue(
    client: &ResilientClient,
    limit: usize,
    after: Option<&str>,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let after = after
        .map(str::parse::<Cursor>)
        .transpose()
        .context("--after")?;
    let queue = client.queue();
    let counts = queue.counts()?;
    let page = queue.page(after.as_ref(), limit)?;
    let next = page.next.as_ref().map(ToString::to_string);
    let blocked = client.queue_blocked();
    if json {
        let view = PageView {
            blocked,
            counts: counts.into(),
            items: page.items.iter().map(ItemView::from).collect(),
            next,
        };
        print_json(out, &view)?;
        return Ok(EXIT_OK);
    }
    if let Some(b) = blocked {
        writeln!(out, "queue BLOCKED: {b}")?;
    }
    writeln!(
        out,
        "{} pending, {} processing, {} completed, {} superseded, {} failed",
        counts.pending, counts.processing, counts.completed, counts.superseded, counts.failed
    )?;
    if page.items.is_empty() && after.is_none() {
        writeln!(out, "queue is empty")?;
    }
    for i in &page.items {
        item_line(out, i)?;
    }
    if let Some(next) = next {
        writeln!(
            out,
            "more: keycloak-resilient queue --limit {limit} --after {next}"
        )?;
    }
    Ok(EXIT_OK)
}

pub(super) fn item_line(out: &mut dyn Write, i: &SyncItem) -> std::io::Result<()> {
    let sent = i
        .applying
        .map(|a| {
            format!(
                " (sent {}, outcome unknown: Keycloak is asked before it is sent again)",
                rfc3339(a.sent_at)
            )
        })
        .unwrap_or_default();
    let error = i
        .last_error
        .as_ref()
        .map(|e| format!(" — {e}"))
        .unwrap_or_default();
    writeln!(
        out,
        "{} {:<10} p{} {}/{} {} queued {} attempts {}{sent}{error}",
        i.sync_id,
        i.status.as_str(),
        i.priority,
        i.username,
        i.package,
        i.sync_type.as_str(),
        rfc3339(i.queued_at),
        i.attempts,
    )
}
