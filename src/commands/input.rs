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

/// Reads all of stdin as one JSON value (for `queue-sync`).
pub fn json() -> Result<serde_json::Value, InputError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| InputError(format!("reading sync data from stdin: {e}")))?;
    if text.trim().is_empty() {
        return Err(InputError(
            "no sync data on stdin (expected JSON, e.g. {\"password\": \"…\"})".into(),
        ));
    }
    // serde_json's message gives line and column, never the text itself.
    serde_json::from_str(&text)
        .map_err(|e| InputError(format!("sync data on stdin is not valid JSON: {e}")))
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
