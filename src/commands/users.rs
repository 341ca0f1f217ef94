//! The local user store's commands: `user add|list|disable|enable|unlock|remove|import` and
//! `passwd`, with their `--json` views.

use super::render::{print_json, rfc3339};
use super::{InputError, Io, EXIT_OK, EXIT_PARTIAL, EXIT_REFUSED};
use crate::account::Account;
use crate::auth::{Auth, PasswdError, PasswdMode, PasswdResult};
use crate::local_users::{ImportFormat, LocalUser};
use anyhow::Context;
use serde::Serialize;
use std::path::Path;

/// `passwd --json` after a change.
#[derive(Serialize)]
struct PasswdView<'a> {
    keycloak_error: Option<&'a str>,
    /// The local password changed (always, once the old one was verified).
    local_changed: bool,
    mode: PasswdMode,
    /// The change went through as asked: false when Keycloak refused it (exit 4), even
    /// though the local password changed.
    success: bool,
    sync_id: Option<uuid::Uuid>,
}

/// `passwd --json` when the change was refused.
#[derive(Serialize)]
struct RefusedView {
    reason: String,
    success: bool,
}

/// Changes a password locally, then in Keycloak now or through the queue.
pub(super) fn passwd(
    auth: &Auth,
    account: &Account,
    old: &str,
    new: &str,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let r = match auth.change_password(account, old, new) {
        Ok(r) => r,
        Err(
            e @ (PasswdError::InvalidCredentials
            | PasswdError::AccountDisabled
            | PasswdError::AccountLocked(_)),
        ) => {
            if json {
                let view = RefusedView {
                    reason: e.to_string(),
                    success: false,
                };
                print_json(out, &view)?;
            }
            writeln!(io.err, "passwd refused: {e}")?;
            return Ok(EXIT_REFUSED);
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        let view = PasswdView {
            keycloak_error: r.keycloak_error.as_deref(),
            local_changed: r.local_changed,
            mode: r.mode,
            success: r.mode != PasswdMode::Rejected,
            sync_id: r.sync_id,
        };
        print_json(out, &view)?;
    } else {
        match r.mode {
            PasswdMode::Synchronized => writeln!(out, "password changed locally and in Keycloak (mode synchronized)")?,
            PasswdMode::Queued => writeln!(
                out,
                "password changed locally; Keycloak is unavailable, change queued as {} (mode queued)",
                r.sync_id.map(|s| s.to_string()).unwrap_or_default()
            )?,
            PasswdMode::Rejected if r.local_changed => writeln!(
                out,
                "password changed locally, but Keycloak refused it: {} (mode rejected)",
                r.keycloak_error.as_deref().unwrap_or("no reason")
            )?,
            PasswdMode::Rejected => writeln!(
                out,
                "password not changed: Keycloak refused it: {} (mode rejected)",
                r.keycloak_error.as_deref().unwrap_or("no reason")
            )?,
        }
    }
    Ok(if r.mode == PasswdMode::Rejected {
        EXIT_PARTIAL
    } else {
        EXIT_OK
    })
}

/// What a `user add|disable|enable|unlock|remove` did, in the words of its text line.
#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum Done {
    Added,
    Disabled,
    Enabled,
    Unlocked,
    Removed,
}

impl Done {
    fn as_str(self) -> &'static str {
        match self {
            Done::Added => "added",
            Done::Disabled => "disabled",
            Done::Enabled => "enabled",
            Done::Unlocked => "unlocked",
            Done::Removed => "removed",
        }
    }
}

/// `user add|disable|enable|unlock|remove --json`.
#[derive(Serialize)]
struct ChangedView<'a> {
    done: Done,
    /// With `keycloak.manage_users`: what became of the change in Keycloak.
    #[serde(skip_serializing_if = "Option::is_none")]
    keycloak: Option<KeycloakView<'a>>,
    package: &'a str,
    /// Sessions ended with it (`disable`, `remove`); absent for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    sessions_ended: Option<usize>,
    success: bool,
    user: &'a str,
}

/// The Keycloak side of a user command: synchronized, queued (with its item) or rejected
/// (with Keycloak's reason).
#[derive(Serialize)]
struct KeycloakView<'a> {
    keycloak_error: Option<&'a str>,
    mode: PasswdMode,
    sync_id: Option<uuid::Uuid>,
}

/// Prints what a user command did: `added alice/webapp`, or its `--json` view. Exit 4 when
/// Keycloak refused its part (the local part is done).
fn changed(
    account: &Account,
    done: Done,
    sessions_ended: Option<usize>,
    keycloak: Option<&PasswdResult>,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let rejected = keycloak.is_some_and(|k| k.mode == PasswdMode::Rejected);
    if json {
        let view = ChangedView {
            done,
            keycloak: keycloak.map(|k| KeycloakView {
                keycloak_error: k.keycloak_error.as_deref(),
                mode: k.mode,
                sync_id: k.sync_id,
            }),
            package: account.package(),
            sessions_ended,
            success: !rejected,
            user: account.user(),
        };
        print_json(io.out, &view)?;
    } else {
        write!(io.out, "{} {account}", done.as_str())?;
        if let Some(n) = sessions_ended {
            write!(io.out, " ({n} session(s) ended)")?;
        }
        match keycloak {
            None => writeln!(io.out)?,
            Some(k) => match k.mode {
                PasswdMode::Synchronized => writeln!(io.out, "; in Keycloak too")?,
                PasswdMode::Queued => writeln!(
                    io.out,
                    "; Keycloak is unavailable, change queued as {}",
                    k.sync_id.map(|s| s.to_string()).unwrap_or_default()
                )?,
                PasswdMode::Rejected => writeln!(
                    io.out,
                    "; Keycloak refused it: {}",
                    k.keycloak_error.as_deref().unwrap_or("no reason")
                )?,
            },
        }
    }
    Ok(if rejected { EXIT_PARTIAL } else { EXIT_OK })
}

/// `user add`.
pub(super) fn user_add(
    auth: &Auth,
    account: &Account,
    password: &str,
    profile: crate::auth::Profile,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let sent = auth.add_user(account, password, profile)?;
    changed(account, Done::Added, None, sent.as_ref(), json, io)
}

/// `user import --json`.
#[derive(Serialize)]
struct ImportView<'a> {
    errors: Vec<ImportErrorView<'a>>,
    imported: usize,
}

/// A line `user import` could not take.
#[derive(Serialize)]
struct ImportErrorView<'a> {
    error: &'a str,
    line: usize,
}

/// `user import`: exit 1 when a line was refused (the others are imported).
pub(super) fn user_import(auth: &Auth, file: &Path, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    // InputError values (not context strings), so that the exit code is 2.
    let format = ImportFormat::from_path(file).ok_or_else(|| {
        InputError(format!(
            "{}: unknown format (use .jsonl, .ndjson, .json or .csv)",
            file.display()
        ))
    })?;
    let reader = std::io::BufReader::new(open_import(file)?);
    let report = auth
        .users()
        .import(reader, format)
        .with_context(|| format!("import file {}", file.display()))?;
    if json {
        let view = ImportView {
            errors: report
                .errors
                .iter()
                .map(|(line, error)| ImportErrorView { error, line: *line })
                .collect(),
            imported: report.imported,
        };
        print_json(out, &view)?;
    } else {
        writeln!(
            out,
            "imported {} user(s) from {}",
            report.imported,
            file.display()
        )?;
        // Row errors are diagnostics: stderr, so that stdout stays the summary.
        for (line, msg) in &report.errors {
            writeln!(io.err, "{}:{line}: {msg}", file.display())?;
        }
    }
    Ok(if report.errors.is_empty() {
        EXIT_OK
    } else {
        EXIT_REFUSED
    })
}

/// Opens an import file, refusing anything but a regular file once symlinks are followed: a
/// device has no end (`/dev/zero`), a FIFO may block forever. The open is non-blocking, so a
/// FIFO is refused rather than waited on, and the type is read from the opened file, so
/// nothing can be swapped in between. A file that cannot be opened is an I/O problem (exit 3),
/// one of the wrong type a bad argument (exit 2).
fn open_import(file: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(file)
        .with_context(|| format!("opening import file {}", file.display()))?;
    let kind = opened
        .metadata()
        .with_context(|| format!("opening import file {}", file.display()))?
        .file_type();
    let what = if kind.is_file() {
        return Ok(opened);
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    };
    Err(InputError(format!(
        "import file {}: is {what}, not a regular file (symlinks are followed); import from a file",
        file.display()
    ))
    .into())
}

/// One user in `user list --json` (never the hash).
#[derive(Serialize)]
struct UserView<'a> {
    created_at: String,
    enabled: bool,
    locked_until: Option<String>,
    package: &'a str,
    updated_at: String,
    user: &'a str,
}

impl<'a> UserView<'a> {
    fn new(u: &'a LocalUser, now: chrono::DateTime<chrono::Utc>) -> Self {
        UserView {
            created_at: rfc3339(u.created_at),
            enabled: u.enabled,
            locked_until: u.lockout.is_locked(now).map(rfc3339),
            package: &u.package,
            updated_at: rfc3339(u.updated_at),
            user: &u.username,
        }
    }
}

/// `user list`.
pub(super) fn user_list(auth: &Auth, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let list = auth.users().list()?;
    let now = auth.client().clock().now();
    if json {
        let view: Vec<_> = list.iter().map(|u| UserView::new(u, now)).collect();
        print_json(out, &view)?;
        return Ok(EXIT_OK);
    }
    if list.is_empty() {
        writeln!(out, "no local users")?;
    }
    for u in &list {
        let state = match (u.enabled, u.lockout.is_locked(now)) {
            (false, _) => "disabled".to_string(),
            (true, Some(until)) => format!("locked until {}", rfc3339(until)),
            (true, None) => "enabled".to_string(),
        };
        writeln!(
            out,
            "{}/{} {} (updated {})",
            u.username,
            u.package,
            state,
            rfc3339(u.updated_at)
        )?;
    }
    Ok(EXIT_OK)
}

/// `user disable`: also ends the user's sessions.
pub(super) fn user_disable(
    auth: &Auth,
    account: &Account,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let (ended, sent) = auth.disable_user(account)?;
    changed(
        account,
        Done::Disabled,
        Some(ended),
        sent.as_ref(),
        json,
        io,
    )
}

/// `user enable`.
pub(super) fn user_enable(
    auth: &Auth,
    account: &Account,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let sent = auth.enable_user(account)?;
    changed(account, Done::Enabled, None, sent.as_ref(), json, io)
}

/// `user unlock`.
pub(super) fn user_unlock(
    auth: &Auth,
    account: &Account,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    auth.users().unlock(account)?;
    changed(account, Done::Unlocked, None, None, json, io)
}

/// `user remove`: also ends the user's sessions and drops the cached token.
pub(super) fn user_remove(
    auth: &Auth,
    account: &Account,
    in_keycloak: bool,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let (ended, sent) = match auth.remove_user(account, in_keycloak) {
        Err(crate::auth::UserChangeError::NotManaged) => {
            return Err(InputError(crate::auth::UserChangeError::NotManaged.to_string()).into())
        }
        other => other?,
    };
    changed(account, Done::Removed, Some(ended), sent.as_ref(), json, io)
}
