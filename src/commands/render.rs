//! Shared pieces of the views: JSON printing and the one time format.
//!
//! Each command's `--json` contract is a `#[derive(Serialize)]` struct in its own file; its
//! fields are declared in alphabetical order, the order the output has always had.

use std::io::Write;

/// Prints `view` as pretty JSON, and a newline.
pub(super) fn print_json(out: &mut dyn Write, view: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, view)?;
    writeln!(out)?;
    Ok(())
}

/// RFC 3339 with seconds, UTC.
pub(super) fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
