//! The control socket's wire format: one JSON request per line in, one JSON answer per line
//! out.
//!
//! A request is a one-shot command with every input it needs — passwords included — so that
//! the service can run it exactly as the command line would have: `{"op": "login", "user":
//! "alice", "package": "web", "password": "…"}`. `op` is the command's name as typed on the
//! command line (`user add` is `user-add`); the other keys are its arguments and what it would
//! have read from stdin. The answer carries the exit code the command would have ended with,
//! what it would have printed on stdout and stderr, and — when the request asked for JSON
//! (the default) — stdout parsed, as `result`.
//!
//! The command line itself is a client: when the service holds the database, a one-shot
//! command sends its request here and prints the answer, so its output and exit code are the
//! same either way. This module is only the data and its parsing; the socket lives in
//! `commands::server` and `commands::forward`.
//!
//! Every default and every range of a request's numbers is defined here, once: clap's
//! `default_value_t` and help text are built from the same constants, and [`Request::check`]
//! applies the ranges to every request whichever door it came through, so the command line and
//! the socket refuse the same value with the same message.

use super::InputError;
use crate::account::Account;
use serde::{Deserialize, Serialize};
use std::fmt::Display;
use std::path::PathBuf;

/// Longest request line the service reads; a longer one is answered with an error.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// A one-shot command with its inputs. `Debug` is not derived: passwords live here.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// `status`.
    Status {},
    /// `sync-now`.
    SyncNow {
        /// Items to process at most (default: the service's batch size).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch_size: Option<u32>,
    },
    /// `reconcile`.
    Reconcile {},
    /// `cleanup`.
    Cleanup {
        /// Remove cached tokens older than this many hours.
        #[serde(default = "default_token_hours")]
        token_hours: u64,
        /// Remove finished sync items older than this many days.
        #[serde(default = "default_sync_days")]
        sync_days: u64,
        /// Remove failed sync items older than this many days.
        #[serde(default = "default_failed_days")]
        failed_days: u64,
    },
    /// `authenticate`.
    Authenticate {
        /// The username.
        user: String,
        /// The package.
        package: String,
        /// The password.
        password: String,
    },
    /// `cached-token`.
    CachedToken {
        /// The username.
        user: String,
        /// The package.
        package: String,
    },
    /// `refresh`.
    Refresh {
        /// The username.
        user: String,
        /// The package.
        package: String,
    },
    /// `queue-sync`.
    QueueSync {
        /// The username.
        user: String,
        /// The package.
        package: String,
        /// The sync type (`password_change`).
        #[serde(rename = "type")]
        sync_type: String,
        /// The sync data, as `queue-sync` reads it from stdin.
        data: serde_json::Value,
        /// 1 runs first.
        #[serde(default = "default_priority")]
        priority: u32,
    },
    /// `queue-sync-many`: many changes, queued together by one flush; none when one is
    /// refused.
    QueueSyncMany {
        /// The changes, in order (at most [`MAX_CHANGES`]).
        changes: Vec<Change>,
    },
    /// `queue`: one page.
    Queue {
        /// Items per page.
        #[serde(default = "default_queue_limit")]
        limit: u32,
        /// The `next` of the previous page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// `queue show`: one item, everything but its data.
    QueueShow {
        /// The item.
        sync_id: uuid::Uuid,
    },
    /// `queue retry`: one item (`sync_id`), or every failed one (`failed`, optionally only of
    /// a type or a user).
    QueueRetry {
        /// The item.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sync_id: Option<uuid::Uuid>,
        /// Every failed item (that `type` and `user` select).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        failed: bool,
        /// With `failed`: only items of this sync type.
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        sync_type: Option<String>,
        /// With `failed`: only items of this user (any package).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// `queue remove`: one item, for good.
    QueueRemove {
        /// The item.
        sync_id: uuid::Uuid,
    },
    /// `login`.
    Login {
        /// The username.
        user: String,
        /// The package.
        package: String,
        /// The password.
        password: String,
    },
    /// `passwd`.
    Passwd {
        /// The username.
        user: String,
        /// The package.
        package: String,
        /// The current password.
        old_password: String,
        /// The new password.
        new_password: String,
    },
    /// `user add`.
    UserAdd {
        /// The username.
        user: String,
        /// The package.
        package: String,
        /// The password.
        password: String,
        /// With `keycloak.manage_users`: the email the Keycloak user gets.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
        /// With `keycloak.manage_users`: the first name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first_name: Option<String>,
        /// With `keycloak.manage_users`: the last name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_name: Option<String>,
    },
    /// `user list`.
    UserList {},
    /// `user disable`.
    UserDisable {
        /// The username.
        user: String,
        /// The package.
        package: String,
    },
    /// `user enable`.
    UserEnable {
        /// The username.
        user: String,
        /// The package.
        package: String,
    },
    /// `user unlock`.
    UserUnlock {
        /// The username.
        user: String,
        /// The package.
        package: String,
    },
    /// `user remove`.
    UserRemove {
        /// The username.
        user: String,
        /// The package.
        package: String,
        /// Delete the user from Keycloak too (needs `keycloak.manage_users`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        in_keycloak: bool,
    },
    /// `user import`: the service reads the file itself (an absolute path).
    UserImport {
        /// The file to import.
        file: PathBuf,
    },
    /// `session show`.
    SessionShow {
        /// The session id.
        session_id: uuid::Uuid,
    },
    /// `logout`.
    Logout {
        /// The session id.
        session_id: uuid::Uuid,
    },
    /// `verify-token`: an application op (it checks a token an application was shown).
    VerifyToken {
        /// The access token (a JWT).
        token: String,
    },
    /// `backup`: the service writes the file itself (an absolute path).
    Backup {
        /// The backup file to write.
        file: PathBuf,
    },
    /// `metrics` (with `textfile`, an absolute path, written by the service).
    Metrics {
        /// Write here instead of answering with the text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        textfile: Option<PathBuf>,
    },
}

/// The accepted values of one numeric argument, named as the command line spells it (the
/// socket's key is the same name without the dashes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range<T: 'static> {
    /// The command-line flag, for messages and help.
    pub flag: &'static str,
    /// The smallest value accepted.
    pub min: T,
    /// The largest value accepted; `None` for the type's own limit.
    pub max: Option<T>,
}

impl<T: PartialOrd + Copy + Display> Range<T> {
    /// `value` if it is in range, else the message both doors print (exit 2).
    ///
    /// # Errors
    ///
    /// [`InputError`] naming the flag, the value and the range.
    pub fn check(&self, value: T) -> Result<T, InputError> {
        let above = self.max.is_some_and(|max| value > max);
        if value < self.min || above {
            return Err(InputError(format!(
                "{} {value} is out of range ({})",
                self.flag,
                self.expected()
            )));
        }
        Ok(value)
    }

    /// `expected 1 to 10000`, or `expected at least 1` without a maximum.
    fn expected(&self) -> String {
        match self.max {
            Some(max) => format!("expected {} to {max}", self.min),
            None => format!("expected at least {}", self.min),
        }
    }

    /// The help line of the flag: `what` and the range, e.g. `Items per page (expected 1 to
    /// 10000)`.
    pub fn help(&self, what: &str) -> String {
        format!("{what} ({})", self.expected())
    }
}

/// `sync-now --batch-size` (no default here: the config's `service.batch_size`).
pub const BATCH_SIZE: Range<u32> = Range {
    flag: "--batch-size",
    min: 1,
    max: None,
};
/// `cleanup --token-hours`: up to a century.
pub const TOKEN_HOURS: Range<u64> = Range {
    flag: "--token-hours",
    min: 0,
    max: Some(876_000),
};
/// `cleanup --token-hours` when not given.
pub const TOKEN_HOURS_DEFAULT: u64 = crate::service::CLEANUP_TOKEN_HOURS;
/// `cleanup --sync-days`: up to a century.
pub const SYNC_DAYS: Range<u64> = Range {
    flag: "--sync-days",
    min: 0,
    max: Some(36_500),
};
/// `cleanup --sync-days` when not given.
pub const SYNC_DAYS_DEFAULT: u64 = crate::service::CLEANUP_SYNC_DAYS;
/// `cleanup --failed-days`: up to a century.
pub const FAILED_DAYS: Range<u64> = Range {
    flag: "--failed-days",
    min: 0,
    max: Some(36_500),
};
/// `cleanup --failed-days` when not given.
pub const FAILED_DAYS_DEFAULT: u64 = crate::service::CLEANUP_FAILED_DAYS;
/// `queue-sync --priority`: 1 runs first.
pub const PRIORITY: Range<u32> = Range {
    flag: "--priority",
    min: crate::sync_queue::PRIORITY_HIGHEST,
    max: None,
};
/// `queue-sync --priority` when not given.
pub const PRIORITY_DEFAULT: u32 = crate::sync_queue::PRIORITY_DEFAULT;
/// The most changes one `queue-sync-many` carries: a batch is checked whole in memory before
/// any is written, so it is bounded (a thousand password changes fit a request line).
pub const MAX_CHANGES: usize = 1_000;
/// `queue --limit`: a page is built in memory, so it is bounded.
pub const QUEUE_LIMIT: Range<u32> = Range {
    flag: "--limit",
    min: 1,
    max: Some(10_000),
};
/// `queue --limit` when not given.
pub const QUEUE_LIMIT_DEFAULT: u32 = 100;

fn default_token_hours() -> u64 {
    TOKEN_HOURS_DEFAULT
}

fn default_sync_days() -> u64 {
    SYNC_DAYS_DEFAULT
}

fn default_failed_days() -> u64 {
    FAILED_DAYS_DEFAULT
}

fn default_queue_limit() -> u32 {
    QUEUE_LIMIT_DEFAULT
}

fn default_priority() -> u32 {
    PRIORITY_DEFAULT
}

/// What `queue retry` selects: one item by id, or the failed items of [`FailedFilter`]; either
/// door's request checked the same way.
///
/// # Errors
///
/// [`InputError`] (exit 2): neither or both of an id and `--failed`, `--type`/`--user` without
/// `--failed`, an unknown type, a user name the name rule refuses.
pub fn retry_selection(
    sync_id: Option<uuid::Uuid>,
    failed: bool,
    sync_type: Option<&str>,
    user: Option<&str>,
) -> Result<Result<uuid::Uuid, crate::sync_queue::FailedFilter>, InputError> {
    match (sync_id, failed) {
        (Some(_), true) => Err(InputError(
            "queue retry: give a sync id or --failed, not both".into(),
        )),
        (None, false) => Err(InputError(
            "queue retry: give a sync id, or --failed for every failed item".into(),
        )),
        (Some(id), false) if sync_type.is_none() && user.is_none() => Ok(Ok(id)),
        (Some(_), false) => Err(InputError(
            "queue retry: --type and --user select failed items: use them with --failed".into(),
        )),
        (None, true) => {
            let sync_type = sync_type
                .map(|t| t.parse::<crate::sync_queue::SyncType>())
                .transpose()
                .map_err(|e| InputError(format!("--type: {e}")))?;
            if let Some(u) = user {
                Account::new(u, "any").map_err(|e| InputError(e.message("--user", "--package")))?;
            }
            Ok(Err(crate::sync_queue::FailedFilter {
                sync_type,
                user: user.map(str::to_string),
            }))
        }
    }
}

impl Request {
    /// Checks what can be checked without the database: every number against its range, and
    /// the user and package names against the name rule. Both doors call it — the command line
    /// before it opens or forwards anything, the service before it runs a request — so a
    /// value is refused the same way, with the same message, wherever it came from.
    ///
    /// # Errors
    ///
    /// [`InputError`] (exit 2) naming the flag and what is wrong.
    pub fn check(&self) -> Result<(), InputError> {
        self.check_ranges()?;
        self.account().map(drop)
    }

    /// The numbers of [`Request::check`]: each against its range.
    ///
    /// # Errors
    ///
    /// [`InputError`] (exit 2) naming the flag and its range.
    pub fn check_ranges(&self) -> Result<(), InputError> {
        match self {
            Request::SyncNow {
                batch_size: Some(n),
            } => {
                BATCH_SIZE.check(*n)?;
            }
            Request::Cleanup {
                token_hours,
                sync_days,
                failed_days,
            } => {
                TOKEN_HOURS.check(*token_hours)?;
                SYNC_DAYS.check(*sync_days)?;
                FAILED_DAYS.check(*failed_days)?;
            }
            Request::QueueSync { priority, .. } => {
                PRIORITY.check(*priority)?;
            }
            Request::QueueSyncMany { changes } => {
                if changes.is_empty() || changes.len() > MAX_CHANGES {
                    return Err(InputError(format!(
                        "queue-sync-many: {} changes given, expected 1 to {MAX_CHANGES}",
                        changes.len()
                    )));
                }
                for (i, c) in changes.iter().enumerate() {
                    PRIORITY.check(c.priority).map_err(|e| {
                        InputError(format!("change {} of {}: {e}", i + 1, changes.len()))
                    })?;
                }
            }
            Request::Queue { limit, .. } => {
                QUEUE_LIMIT.check(*limit)?;
            }
            Request::QueueRetry {
                sync_id,
                failed,
                sync_type,
                user,
            } => {
                retry_selection(*sync_id, *failed, sync_type.as_deref(), user.as_deref())
                    .map(drop)?;
            }
            // The service would resolve a relative path against its own working directory.
            Request::Backup { file } if !file.is_absolute() => {
                return Err(InputError(format!(
                    "backup file {}: must be an absolute path",
                    file.display()
                )));
            }
            _ => {}
        }
        Ok(())
    }

    /// The account a request names, if any, its names checked by the name rule: made once per
    /// request, and what its handler works with.
    ///
    /// # Errors
    ///
    /// [`InputError`] (exit 2) naming `--user` or `--package` and what is wrong.
    pub fn account(&self) -> Result<Option<Account>, InputError> {
        let Some((user, package)) = self.who() else {
            return Ok(None);
        };
        Account::new(user, package)
            .map(Some)
            .map_err(|e| InputError(e.message("--user", "--package")))
    }

    /// The user and package a request names, if any.
    pub fn who(&self) -> Option<(&str, &str)> {
        match self {
            Request::Authenticate { user, package, .. }
            | Request::CachedToken { user, package }
            | Request::Refresh { user, package }
            | Request::QueueSync { user, package, .. }
            | Request::Login { user, package, .. }
            | Request::Passwd { user, package, .. }
            | Request::UserAdd { user, package, .. }
            | Request::UserDisable { user, package }
            | Request::UserEnable { user, package }
            | Request::UserUnlock { user, package }
            | Request::UserRemove { user, package, .. } => Some((user, package)),
            _ => None,
        }
    }

    /// The package of a request that uses it to reach Keycloak or to create something; the
    /// requests that only look at or remove what exists (cached-token, user disable/enable/
    /// unlock/remove) still accept a package the config no longer lists, so it can be
    /// cleaned up.
    pub fn package_to_check(&self) -> Option<&str> {
        match self {
            Request::Authenticate { package, .. }
            | Request::Refresh { package, .. }
            | Request::QueueSync { package, .. }
            | Request::Login { package, .. }
            | Request::Passwd { package, .. }
            | Request::UserAdd { package, .. } => Some(package),
            _ => None,
        }
    }

    /// The `op` name, for logs (never the arguments: passwords live there).
    pub fn op(&self) -> &'static str {
        match self {
            Request::Status {} => "status",
            Request::SyncNow { .. } => "sync-now",
            Request::Cleanup { .. } => "cleanup",
            Request::Reconcile {} => "reconcile",
            Request::Authenticate { .. } => "authenticate",
            Request::CachedToken { .. } => "cached-token",
            Request::Refresh { .. } => "refresh",
            Request::QueueSync { .. } => "queue-sync",
            Request::QueueSyncMany { .. } => "queue-sync-many",
            Request::Queue { .. } => "queue",
            Request::QueueShow { .. } => "queue-show",
            Request::QueueRetry { .. } => "queue-retry",
            Request::QueueRemove { .. } => "queue-remove",
            Request::Login { .. } => "login",
            Request::Passwd { .. } => "passwd",
            Request::UserAdd { .. } => "user-add",
            Request::UserList {} => "user-list",
            Request::UserDisable { .. } => "user-disable",
            Request::UserEnable { .. } => "user-enable",
            Request::UserUnlock { .. } => "user-unlock",
            Request::UserRemove { .. } => "user-remove",
            Request::UserImport { .. } => "user-import",
            Request::SessionShow { .. } => "session-show",
            Request::Logout { .. } => "logout",
            Request::Metrics { .. } => "metrics",
            Request::Backup { .. } => "backup",
            Request::VerifyToken { .. } => "verify-token",
        }
    }
}

/// One change of `queue-sync-many`: what `queue-sync` takes, its flags as keys. `Debug` is
/// not derived: the data may hold a password.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// The username.
    pub user: String,
    /// The package.
    pub package: String,
    /// The sync type (`password_change`, …).
    #[serde(rename = "type")]
    pub sync_type: String,
    /// The sync data, as `queue-sync` reads it from stdin.
    pub data: serde_json::Value,
    /// 1 runs first.
    #[serde(default = "default_priority")]
    pub priority: u32,
}

impl From<Change> for crate::client::QueuedChange {
    fn from(c: Change) -> Self {
        crate::client::QueuedChange {
            username: c.user,
            package: c.package,
            sync_type: c.sync_type,
            sync_data: c.data,
            priority: c.priority,
        }
    }
}

/// How the answer's output is rendered: what `--json` chooses on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON output, also given parsed as `result` (the default).
    #[default]
    Json,
    /// The command line's text output.
    Text,
}

/// A request line: the request and the output format.
#[derive(Clone, PartialEq)]
pub struct Envelope {
    /// What to do.
    pub request: Request,
    /// How to answer.
    pub format: Format,
}

impl Envelope {
    /// Parses one request line. The error says what is wrong with the request, and never
    /// quotes it (it may hold a password).
    pub fn parse(line: &str) -> Result<Envelope, String> {
        let mut value = crate::sync_queue::parse_strict_json(line.as_bytes())
            .map_err(|e| format!("request is not valid JSON ({e})"))?;
        let obj = value
            .as_object_mut()
            .ok_or_else(|| "request must be a JSON object with an \"op\" key".to_string())?;
        let format = match obj.remove("format") {
            None => Format::Json,
            Some(f) => serde_json::from_value(f)
                .map_err(|_| "\"format\" must be \"json\" or \"text\"".to_string())?,
        };
        let op = match obj.get("op") {
            Some(serde_json::Value::String(op)) => op.clone(),
            Some(_) => return Err("\"op\" must be a string".into()),
            None => return Err("request has no \"op\" key".into()),
        };
        let request = serde_json::from_value(value).map_err(|e| describe(&op, &e))?;
        Ok(Envelope { request, format })
    }

    /// The request as one line (no newline), as the command line sends it.
    pub fn to_line(&self) -> Result<String, serde_json::Error> {
        let mut value = serde_json::to_value(&self.request)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("format".into(), serde_json::to_value(self.format)?);
        }
        serde_json::to_string(&value)
    }
}

/// A serde error about a request, without the value it choked on. serde_json's messages for
/// a request built from a `Value` name fields and variants ("missing field `password`",
/// "unknown variant `x`", "unknown field `y`") but its "invalid type" messages quote the
/// value: those are replaced.
fn describe(op: &str, e: &serde_json::Error) -> String {
    format!("request {op:?}: {}", without_values(e))
}

/// serde_json's error about fields, without the value it choked on (see [`describe`]).
pub(super) fn without_values(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
        "a field has the wrong type".into()
    } else if let Some(rest) = msg.strip_prefix("unknown field `") {
        // The unknown key itself is not repeated: it may be a password typed in the wrong
        // place. What is expected is.
        let expected = rest.split_once("`, ").map(|(_, e)| e).unwrap_or("");
        format!("unknown field, {expected}")
    } else {
        msg
    }
}

/// The answer to one request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Answer {
    /// The exit code the command would have ended with.
    pub exit: u8,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr (refusal reasons, `error: …`).
    pub stderr: String,
    /// stdout parsed, for requests in the JSON format that printed JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// True when the request was not carried out at all (the service is shutting down), so
    /// sending it again — to the next holder of the database — is safe.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_run: bool,
}

impl Answer {
    /// An error answer: `error: {message}` on stderr.
    pub fn error(exit: u8, message: &str) -> Answer {
        Answer {
            exit,
            stderr: format!("error: {message}\n"),
            ..Answer::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_with_their_format() {
        let e = Envelope {
            request: Request::Passwd {
                user: "alice".into(),
                package: "web".into(),
                old_password: "old".into(),
                new_password: "new".into(),
            },
            format: Format::Text,
        };
        let line = e.to_line().unwrap();
        assert!(!line.contains('\n'));
        assert!(line.contains("\"op\":\"passwd\""), "{line}");
        assert!(Envelope::parse(&line).unwrap() == e);
    }

    #[test]
    fn defaults_fill_in_and_json_is_the_default_format() {
        let e = Envelope::parse(r#"{"op":"queue-sync","user":"a","package":"p","type":"password_change","data":{"new_password":"x"}}"#).unwrap();
        assert_eq!(e.format, Format::Json);
        match e.request {
            Request::QueueSync { priority, .. } => assert_eq!(priority, 5),
            _ => panic!("wrong request"),
        }
        let e = Envelope::parse(r#"{"op":"cleanup"}"#).unwrap();
        assert!(
            e.request
                == Request::Cleanup {
                    token_hours: 48,
                    sync_days: 7,
                    failed_days: 30
                }
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong_and_never_quote_a_password() {
        let cases = [
            ("not json", "not valid JSON"),
            ("[1]", "JSON object"),
            (r#"{"user":"a"}"#, "no \"op\""),
            (r#"{"op":7}"#, "must be a string"),
            (r#"{"op":"fly"}"#, "unknown variant"),
            (
                r#"{"op":"login","user":"a","package":"p"}"#,
                "missing field `password`",
            ),
            (r#"{"op":"status","extra":1}"#, "unknown field"),
            (
                r#"{"op":"login","s3cret-pw":1}"#,
                "unknown field, expected one of `user`",
            ),
            (
                r#"{"op":"login","user":"a","package":"p","password":"x","pw":1}"#,
                "unknown field",
            ),
            (r#"{"op":"status","format":"xml"}"#, "\"format\""),
            (
                r#"{"op":"login","user":"a","package":"p","password":"x","password":"y"}"#,
                "key `password` appears twice",
            ),
            (
                r#"{"op":"login","user":"a","package":"p","password":["s3cret-pw"]}"#,
                "wrong type",
            ),
        ];
        for (line, want) in cases {
            let err = Envelope::parse(line).err().unwrap_or_default();
            assert!(err.contains(want), "{line}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }

    /// Issue 11: the socket applies the ranges the command line applies, with its message.
    #[test]
    fn every_number_is_checked_against_its_one_range() {
        let queue = |limit| Request::Queue { limit, after: None };
        assert!(queue(1).check().is_ok());
        assert!(queue(QUEUE_LIMIT_DEFAULT).check().is_ok());
        assert!(queue(10_000).check().is_ok());
        for bad in [0, 10_001, 1_000_000_000] {
            let e = queue(bad).check().unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("--limit {bad} is out of range (expected 1 to 10000)")
            );
        }
        let e = Request::SyncNow {
            batch_size: Some(0),
        }
        .check()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--batch-size 0 is out of range (expected at least 1)"
        );
        assert!(Request::SyncNow { batch_size: None }.check().is_ok());
        let cleanup = |token_hours, sync_days, failed_days| Request::Cleanup {
            token_hours,
            sync_days,
            failed_days,
        };
        assert!(cleanup(0, 0, 0).check().is_ok());
        assert!(cleanup(876_000, 36_500, 36_500).check().is_ok());
        for (req, flag) in [
            (cleanup(876_001, 0, 0), "--token-hours"),
            (cleanup(0, 36_501, 0), "--sync-days"),
            (cleanup(0, 0, 36_501), "--failed-days"),
        ] {
            let e = req.check().unwrap_err().to_string();
            assert!(e.starts_with(flag), "{e}");
        }
    }

    #[test]
    fn a_backup_file_must_be_absolute() {
        let e = Envelope::parse(r#"{"op":"backup","file":"b.krbak"}"#).unwrap();
        let err = e.request.check().unwrap_err().to_string();
        assert!(err.contains("must be an absolute path"), "{err}");
        let e = Envelope::parse(r#"{"op":"backup","file":"/tmp/b.krbak"}"#).unwrap();
        assert!(e.request.check().is_ok());
    }

    #[test]
    fn names_are_checked_with_the_ranges() {
        let req = Request::CachedToken {
            user: "..".into(),
            package: "web".into(),
        };
        assert!(req.check().unwrap_err().to_string().contains("--user"));
    }

    /// Issue 11 point 5: the account a request names is made once, by `account()`, with the
    /// doors' flag names in its message; a request naming none has none.
    #[test]
    fn a_request_makes_its_account_once_with_the_flag_names() {
        let login = |user: &str, package: &str| Request::Login {
            user: user.into(),
            package: package.into(),
            password: "pw".into(),
        };
        let a = login("Alice", "web").account().unwrap().unwrap();
        assert_eq!((a.user(), a.package()), ("Alice", "web"));
        assert_eq!(
            login("bob", "a/b").account().unwrap_err().to_string(),
            "--package must not contain any of / \\ ? # %"
        );
        assert_eq!(
            login("", "a/b").account().unwrap_err().to_string(),
            "--user must not be empty"
        );
        assert!(Request::Status {}.account().unwrap().is_none());
        // Ranges are checked apart, so that `execute` checks each thing once.
        let bad_name = Request::QueueSync {
            user: "..".into(),
            package: "web".into(),
            sync_type: "password_change".into(),
            data: serde_json::json!({"new_password": "pw-123456"}),
            priority: 1,
        };
        assert!(bad_name.check_ranges().is_ok());
        assert!(bad_name.check().is_err());
    }

    #[test]
    fn answers_leave_out_empty_extras() {
        let a = Answer {
            exit: 0,
            stdout: "ok\n".into(),
            ..Answer::default()
        };
        let line = serde_json::to_string(&a).unwrap();
        assert_eq!(line, r#"{"exit":0,"stdout":"ok\n","stderr":""}"#);
        let e = Answer::error(2, "bad");
        assert_eq!(e.stderr, "error: bad\n");
        assert!(!e.not_run);
    }
}
