//! `backup FILE` and `restore FILE`: the way back from a damaged data directory (the work is
//! in [`crate::store::backup`]).
//!
//! `backup` is a request like any other, so that it runs inside the service while `start`
//! holds the database (the path is made absolute before it is sent). `restore` is not: it
//! replaces the database under whoever holds it, so it runs only with the service stopped,
//! as a one-shot command, and refuses at once when the service holds the directory.

use super::render::print_json;
use super::{Io, EXIT_OK};
use crate::auth::Auth;
use crate::config::Config;
use crate::store::backup;
use anyhow::Context;
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// `backup --json`.
#[derive(Serialize)]
struct BackupView<'a> {
    file: &'a Path,
    trees: usize,
    records: usize,
    bytes: u64,
    created_at: &'a str,
}

/// `restore --json`.
#[derive(Serialize)]
struct RestoreView<'a> {
    file: &'a Path,
    data_dir: &'a Path,
    backup_created_at: &'a str,
    backup_source: &'a str,
    trees: usize,
    records: usize,
    /// Where the database from before is now; null when there was none.
    previous: Option<&'a Path>,
}

/// Writes a backup of the open database to `file` (absolute), the queue's writes held while
/// its trees are copied.
pub(super) fn backup(auth: &Auth, file: &Path, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    let client = auth.client();
    let queue = client.queue();
    let s = backup::create(client.store(), file, |copy| queue.while_held(copy))?;
    if json {
        let view = BackupView {
            file: &s.file,
            trees: s.trees,
            records: s.records,
            bytes: s.bytes,
            created_at: &s.created_at,
        };
        print_json(io.out, &view)?;
    } else {
        writeln!(
            io.out,
            "backed up {} records of {} trees to {} ({} bytes)",
            s.records,
            s.trees,
            s.file.display(),
            s.bytes
        )?;
    }
    Ok(EXIT_OK)
}

/// Restores `file` into the configured data directory (see [`backup::restore`]).
pub(super) fn restore(
    config: &Config,
    file: &Path,
    lock_timeout: Duration,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let file =
        std::path::absolute(file).with_context(|| format!("backup file {}", file.display()))?;
    let r = backup::restore(&config.storage_path, &file, lock_timeout)?;
    if json {
        let view = RestoreView {
            file: &r.file,
            data_dir: &r.data_dir,
            backup_created_at: &r.created_at,
            backup_source: &r.source,
            trees: r.trees,
            records: r.records,
            previous: r.previous.as_deref(),
        };
        print_json(out, &view)?;
        return Ok(EXIT_OK);
    }
    writeln!(
        out,
        "restored {} records of {} trees from {} (made {} of {}) into {}",
        r.records,
        r.trees,
        r.file.display(),
        r.created_at,
        r.source,
        r.data_dir.display()
    )?;
    match &r.previous {
        Some(p) => writeln!(out, "the database from before is kept in {}", p.display())?,
        None => writeln!(out, "there was no database there before")?,
    }
    Ok(EXIT_OK)
}
