//! The command line's door: a parsed command line becomes a [`Request`], with what the
//! command reads from stdin (or a prompt) and its paths made absolute, so that the request
//! means the same wherever it runs. Done before the database is opened or the service asked,
//! so that bad input changes nothing and waits for nothing.

use super::cli::{Command, QueueCommand, SessionCommand, UserArgs, UserCommand};
use super::input::{self, InputError};
use super::protocol::Request;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// Turns `command` into a checked request ([`Request::check`], as the service checks it).
/// `test`, `probe`, `start`, `restore`, `completions` and `man` are not requests: the caller runs them before, so
/// they come back as `None`.
pub(super) fn gather(command: Command) -> anyhow::Result<Option<Request>> {
    let request = match command {
        Command::Test
        | Command::Probe
        | Command::Start
        | Command::Restore { .. }
        | Command::Completions { .. }
        | Command::Man => return Ok(None),
        Command::Status => Request::Status {},
        Command::SyncNow { batch_size } => Request::SyncNow { batch_size },
        Command::Cleanup {
            token_hours,
            sync_days,
            failed_days,
        } => Request::Cleanup {
            token_hours,
            sync_days,
            failed_days,
        },
        Command::Authenticate(w) => {
            with_password(w, |user, package, password| Request::Authenticate {
                user,
                package,
                password,
            })?
        }
        Command::CachedToken(w) => Request::CachedToken {
            user: w.user,
            package: w.package,
        },
        Command::Refresh(w) => Request::Refresh {
            user: w.user,
            package: w.package,
        },
        Command::QueueSync {
            who,
            sync_type,
            priority,
        } => queue_sync(who, sync_type, priority)?,
        Command::QueueSyncMany => queue_sync_many()?,
        Command::Queue {
            action: Some(action),
            ..
        } => queue_action(action)?,
        Command::Queue {
            action: None,
            limit,
            after,
        } => {
            // Checked here, so a typo is reported before anything is opened.
            if let Some(cursor) = &after {
                cursor
                    .parse::<crate::sync_queue::Cursor>()
                    .context("--after")?;
            }
            Request::Queue { limit, after }
        }
        Command::Login(w) => with_password(w, |user, package, password| Request::Login {
            user,
            package,
            password,
        })?,
        Command::Passwd(w) => {
            let mut pws = input::passwords(&["old password", "new password"])?;
            let new_password = pws.remove(1);
            let old_password = pws.remove(0);
            Request::Passwd {
                user: w.user,
                package: w.package,
                old_password,
                new_password,
            }
        }
        Command::User(c) => user(c)?,
        Command::Session(SessionCommand::Show { id }) => Request::SessionShow {
            session_id: input::session_id(&id)?,
        },
        Command::Logout { id } => Request::Logout {
            session_id: input::session_id(&id)?,
        },
        Command::Metrics { textfile } => Request::Metrics {
            textfile: textfile.as_deref().map(absolute).transpose()?,
        },
        Command::Reconcile => Request::Reconcile {},
        // Made absolute here: the service resolves nothing against its own directory.
        Command::Backup { file } => Request::Backup {
            file: absolute(&file)?,
        },
        Command::VerifyToken => Request::VerifyToken {
            token: super::verify::token_from_stdin()?,
        },
    };
    request.check()?;
    Ok(Some(request))
}

/// `queue show|retry|remove`.
fn queue_action(action: QueueCommand) -> Result<Request, InputError> {
    Ok(match action {
        QueueCommand::Show { id } => Request::QueueShow {
            sync_id: input::sync_id(&id)?,
        },
        QueueCommand::Retry {
            id,
            failed,
            sync_type,
            user,
        } => Request::QueueRetry {
            sync_id: id.as_deref().map(input::sync_id).transpose()?,
            failed,
            sync_type,
            user,
        },
        QueueCommand::Remove { id } => Request::QueueRemove {
            sync_id: input::sync_id(&id)?,
        },
    })
}

/// `user …`.
fn user(command: UserCommand) -> Result<Request, InputError> {
    Ok(match command {
        UserCommand::Add {
            who,
            email,
            first_name,
            last_name,
        } => {
            let password = input::passwords(&["password"])?.remove(0);
            Request::UserAdd {
                user: who.user,
                package: who.package,
                password,
                email,
                first_name,
                last_name,
            }
        }
        UserCommand::List => Request::UserList {},
        UserCommand::Disable(w) => Request::UserDisable {
            user: w.user,
            package: w.package,
        },
        UserCommand::Enable(w) => Request::UserEnable {
            user: w.user,
            package: w.package,
        },
        UserCommand::Unlock(w) => Request::UserUnlock {
            user: w.user,
            package: w.package,
        },
        UserCommand::Remove { who, in_keycloak } => Request::UserRemove {
            user: who.user,
            package: who.package,
            in_keycloak,
        },
        UserCommand::Import { file } => Request::UserImport {
            file: absolute(&file)?,
        },
    })
}

/// A request about a user that also carries the password read from stdin.
fn with_password(
    w: UserArgs,
    make: fn(String, String, String) -> Request,
) -> Result<Request, InputError> {
    let password = input::passwords(&["password"])?.remove(0);
    Ok(make(w.user, w.package, password))
}

/// `queue-sync`: the type and priority are checked before stdin is read, so that a typo is
/// reported as such; the data is checked whole (size, duplicate keys, the type's rules).
fn queue_sync(who: UserArgs, sync_type: String, priority: u32) -> anyhow::Result<Request> {
    let parsed: crate::sync_queue::SyncType = sync_type.parse()?;
    super::protocol::PRIORITY.check(priority)?;
    // Parsed once, here, before anything is opened; the request carries the checked data on as
    // JSON because it may be forwarded to the socket server.
    let text = input::sync_data()?;
    let data = crate::sync_queue::SyncData::from_json_text(parsed, &text)?;
    Ok(Request::QueueSync {
        user: who.user,
        package: who.package,
        sync_type,
        data: data.to_json(),
        priority,
    })
}

/// `queue-sync-many`: one change per line of stdin, each a JSON object of `queue-sync`'s
/// arguments, parsed strictly (no key twice) and without quoting a value in an error. The
/// changes themselves are checked where every door's are ([`Request::check`] and the queue).
fn queue_sync_many() -> anyhow::Result<Request> {
    let text = input::changes()?;
    let text = std::str::from_utf8(&text)
        .map_err(|e| InputError(format!("changes on stdin: not UTF-8 ({e})")))?;
    let changes = parse_changes(text)?;
    Ok(Request::QueueSyncMany { changes })
}

fn parse_changes(text: &str) -> Result<Vec<super::protocol::Change>, InputError> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    text.split('\n')
        .enumerate()
        .map(|(i, line)| {
            let at = |what: String| InputError(format!("changes on stdin, line {}: {what}", i + 1));
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                return Err(at("empty (one change per line, no blank lines)".into()));
            }
            let value = crate::sync_queue::parse_strict_json(line.as_bytes())
                .map_err(|e| at(format!("not valid JSON ({})", at_column(&e))))?;
            serde_json::from_value(value).map_err(|e| at(super::protocol::without_values(&e)))
        })
        .collect()
}

/// serde_json's message with its position as a column only: the line is the input's, named
/// by the caller, and serde's own "line 1" of a one-line document would only confuse.
fn at_column(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rsplit_once(" at line ") {
        Some((what, _)) => format!("{what} at column {}", e.column()),
        None => text,
    }
}

fn absolute(path: &Path) -> Result<PathBuf, InputError> {
    std::path::absolute(path).map_err(|e| InputError(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_one_per_line_and_a_bad_line_is_named() {
        let one = r#"{"user":"a","package":"web","type":"user_disable","data":{}}"#;
        let parsed = parse_changes(&format!("{one}\r\n{one}\n")).expect("two changes");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].priority, super::super::protocol::PRIORITY_DEFAULT);
        assert_eq!(parse_changes(one).expect("no final newline").len(), 1);
        for (text, says) in [
            (format!("{one}\n\n{one}"), "line 2: empty"),
            (
                format!("{one}\n{{\"user\":\"a\",\"user\":\"b\"}}"),
                "line 2: not valid JSON",
            ),
            (
                r#"{"user":"a","package":"web","type":"t","data":{},"priority":"Secret-9"}"#.into(),
                "line 1: a field has the wrong type",
            ),
        ] {
            let Err(err) = parse_changes(&text).map(|c| c.len()) else {
                panic!("{text}: parsed");
            };
            let err = err.to_string();
            assert!(err.contains(says), "{text}: {err}");
            assert!(!err.contains("Secret"), "never a value: {err}");
            assert_eq!(err.matches(" line ").count(), 1, "one line number: {err}");
        }
    }
}
