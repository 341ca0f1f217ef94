//! Reading secrets and data from standard input, and the error that says the input was bad.
//!
//! Passwords never come from argv (where `ps` and shell history would show them): one per line
//! on stdin, or a no-echo prompt when stdin is a terminal.

use std::io::{BufRead, IsTerminal, Read};

/// Bad input from the user (exit code 2). The message names what was wrong, never a secret.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// Reads `what` passwords: lines of stdin, or no-echo prompts on a terminal.
pub fn passwords(prompts: &[&str]) -> Result<Vec<String>, InputError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return prompts
            .iter()
            .map(|p| {
                rpassword::prompt_password(format!("{p}: "))
                    .map_err(|e| InputError(format!("reading {p} from the terminal: {e}")))
                    .and_then(|pw| nonempty(pw, p))
            })
            .collect();
    }
    let mut lines = stdin.lock().lines();
    prompts
        .iter()
        .map(|p| match lines.next() {
            Some(Ok(line)) => nonempty(line.trim_end_matches('\r').to_string(), p),
            Some(Err(e)) => Err(InputError(format!("reading {p} from stdin: {e}"))),
            None => Err(InputError(format!(
                "no {p} on stdin (expected one per line)"
            ))),
        })
        .collect()
}

fn nonempty(pw: String, what: &str) -> Result<String, InputError> {
    if pw.is_empty() {
        Err(InputError(format!("{what} on stdin is empty")))
    } else {
        Ok(pw)
    }
}

/// Reads the sync data for `queue-sync`: all of stdin, at most
/// [`MAX_SYNC_DATA_BYTES`](crate::sync_queue::MAX_SYNC_DATA_BYTES) (one byte more is read to
/// tell, never the whole of an oversized input). Parsing is the queue's job
/// ([`crate::sync_queue::SyncData::from_json_text`]).
///
/// # Errors
///
/// [`InputError`] (exit 2) for no data or too much; a plain I/O error (exit 3) when stdin
/// cannot be read.
pub fn sync_data() -> anyhow::Result<Vec<u8>> {
    read_sync_data(std::io::stdin().lock())
}

fn read_sync_data(input: impl Read) -> anyhow::Result<Vec<u8>> {
    read_limited(
        input,
        crate::sync_queue::MAX_SYNC_DATA_BYTES,
        "sync data",
        "JSON, e.g. {\"new_password\": \"…\"}",
    )
}

/// The most bytes `queue-sync-many` reads from stdin: what fits one request line to the
/// service with room for the keys the request adds.
pub const MAX_CHANGES_BYTES: usize = super::protocol::MAX_REQUEST_BYTES - 64 * 1024;

/// Reads the changes for `queue-sync-many`: all of stdin, at most [`MAX_CHANGES_BYTES`].
/// Parsing them is [`super::gather`]'s job.
///
/// # Errors
///
/// As [`sync_data`].
pub fn changes() -> anyhow::Result<Vec<u8>> {
    read_limited(
        std::io::stdin().lock(),
        MAX_CHANGES_BYTES,
        "changes",
        "one JSON object per line, e.g. {\"user\": \"alice\", \"package\": \"web\", \"type\": \"password_change\", \"data\": {\"new_password\": \"…\"}}",
    )
}

/// All of `input`, at most `limit` bytes (one byte more is read to tell, never the whole of
/// an oversized input), and not blank.
fn read_limited(
    input: impl Read,
    limit: usize,
    what: &str,
    expected: &str,
) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    let mut data = Vec::new();
    input
        .take(limit as u64 + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("reading {what} from stdin"))?;
    if data.len() > limit {
        return Err(InputError(format!(
            "{what} on stdin: larger than {limit} bytes (the limit)"
        ))
        .into());
    }
    if data.trim_ascii().is_empty() {
        return Err(InputError(format!("no {what} on stdin (expected {expected})")).into());
    }
    Ok(data)
}

/// Parses a session id argument; `-` reads it from stdin instead, so that the id (which
/// stands for a logged-in user) need not appear in argv, where `ps` shows it.
pub fn session_id(arg: &str) -> Result<uuid::Uuid, InputError> {
    if arg == "-" {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| InputError(format!("reading the session id from stdin: {e}")))?;
        return uuid::Uuid::parse_str(line.trim())
            .map_err(|_| InputError("the session id on stdin is not a UUID".into()));
    }
    uuid::Uuid::parse_str(arg).map_err(|_| InputError(format!("session id {arg:?} is not a UUID")))
}

/// A SyncId as `queue` prints it.
///
/// # Errors
///
/// [`InputError`] (exit 2) quoting the argument.
pub fn sync_id(arg: &str) -> Result<uuid::Uuid, InputError> {
    uuid::Uuid::parse_str(arg.trim()).map_err(|_| {
        InputError(format!(
            "sync id {arg:?} is not a UUID (`queue` lists them)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 7 point 5: an endless or huge stdin is cut at the limit, not buffered.
    #[test]
    fn sync_data_is_read_with_a_limit() {
        let endless = std::io::repeat(b'x');
        let err = read_sync_data(endless).unwrap_err();
        assert!(err.is::<InputError>(), "{err}");
        assert!(err.to_string().contains("larger than 8192 bytes"), "{err}");
        assert!(err.to_string().starts_with("sync data on stdin"), "{err}");
        let err = read_sync_data(&b" \n"[..]).unwrap_err();
        assert!(err.to_string().contains("no sync data"), "{err}");
        assert_eq!(read_sync_data(&b"{}"[..]).unwrap(), b"{}");
    }

    /// An unreadable stdin is a runtime failure (exit 3), not bad input.
    #[test]
    fn a_stdin_read_error_is_not_an_input_error() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("device gone"))
            }
        }
        let err = read_sync_data(Broken).unwrap_err();
        assert!(!err.is::<InputError>(), "{err:#}");
        assert_eq!(
            crate::commands::exit_code_for(&err),
            crate::commands::EXIT_RUNTIME
        );
        assert_eq!(
            format!("{err:#}"),
            "reading sync data from stdin: device gone"
        );
    }
}
