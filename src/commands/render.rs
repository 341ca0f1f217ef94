//! Shared pieces of the views: JSON printing and the one time format.
//!
//! Each command's `--json` contract is a `#[derive(Serialize)]` struct in its own file, nested
//! parts included (a library struct is never printed as it is: its fields may change without
//! the contract changing). Fields are declared in alphabetical order, the order the output had
//! when it was built as `serde_json::Value` objects; `status` keeps the order it always had.

use std::io::Write;

/// Prints `view` as pretty JSON, and a newline.
///
/// # Errors
///
/// A failed write, as the [`std::io::Error`] it was: serde_json wraps it in its own error,
/// whose `source()` skips the io error itself, so `main` could not tell a closed pipe
/// (`--json user list | head -1`, a success) from a real failure.
pub(super) fn print_json(out: &mut dyn Write, view: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, view).map_err(json_error)?;
    writeln!(out)?;
    Ok(())
}

/// Prints `view` as one line of JSON (a stream of events, one object a line).
pub(super) fn print_json_line(
    out: &mut dyn Write,
    view: &impl serde::Serialize,
) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, view).map_err(json_error)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// serde_json's error for a failed write becomes the io error it carries; any other (a view
/// that cannot be serialised) stays what it is.
fn json_error(e: serde_json::Error) -> anyhow::Error {
    if e.is_io() {
        anyhow::Error::new(std::io::Error::from(e))
    } else {
        anyhow::Error::new(e)
    }
}

/// RFC 3339 with seconds, UTC.
pub(super) fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
