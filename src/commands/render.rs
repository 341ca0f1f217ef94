//! Shared pieces of the views: JSON printing and the one time format.
//!
//! Each command's `--json` contract is a `#[derive(Serialize)]` struct in its own file, nested
//! parts included (a library struct is never printed as it is: its fields may change without
//! the contract changing). Fields are declared in alphabetical order, the order the output had
//! when it was built as `serde_json::Value` objects; `status` keeps the order it always had.

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
