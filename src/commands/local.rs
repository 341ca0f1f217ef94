//! The local-authentication commands: login, passwd, user …, session show, logout, metrics.

use super::{input, open_auth as open, print_json, rfc3339, EXIT_OK, EXIT_PARTIAL, EXIT_REFUSED};
use crate::auth::{PasswdError, PasswdMode};
use crate::cli::{UserArgs, UserCommand};
use crate::config::Config;
use crate::local_users::ImportFormat;
use serde_json::json;
use std::io::Write;
use std::path::Path;

pub fn login(
    config: Config,
    who: &UserArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let password = input::passwords(&["password"])?.remove(0);
    let auth = open(config)?;
    let r = auth.login(&who.user, &who.package, &password)?;
    if json {
        let mut v = json!({
            "success": r.success,
            "session_id": r.session_id,
            "auth_mode": r.auth_mode,
            "keycloak_status": r.keycloak_status,
        });
        if let Some(reason) = r.reason {
            v["reason"] = json!(reason);
        }
        if let Some(until) = r.locked_until {
            v["locked_until"] = json!(rfc3339(until));
        }
        print_json(out, &v)?;
    } else if r.success {
        writeln!(
            out,
            "logged in: session {} (auth_mode {}, keycloak {})",
            r.session_id.map(|s| s.to_string()).unwrap_or_default(),
            r.auth_mode.map(|m| m.as_str()).unwrap_or("local"),
            r.keycloak_status
        )?;
    }
    if !r.success {
        let reason = r.reason.map(|r| r.as_str()).unwrap_or("refused");
        match r.locked_until {
            Some(until) => eprintln!("login refused: {reason} (until {})", rfc3339(until)),
            None => eprintln!("login refused: {reason}"),
        }
        return Ok(EXIT_REFUSED);
    }
    Ok(EXIT_OK)
}

pub fn passwd(
    config: Config,
    who: &UserArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let mut pws = input::passwords(&["old password", "new password"])?;
    let new = pws.remove(1);
    let old = pws.remove(0);
    let auth = open(config)?;
    let r = match auth.change_password(&who.user, &who.package, &old, &new) {
        Ok(r) => r,
        Err(
            e @ (PasswdError::InvalidCredentials
            | PasswdError::AccountDisabled
            | PasswdError::AccountLocked(_)),
        ) => {
            if json {
                print_json(out, &json!({"success": false, "reason": e.to_string()}))?;
            }
            eprintln!("passwd refused: {e}");
            return Ok(EXIT_REFUSED);
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        print_json(
            out,
            &json!({"success": true, "mode": r.mode, "sync_id": r.sync_id, "keycloak_error": r.keycloak_error}),
        )?;
    } else {
        match r.mode {
            PasswdMode::Synchronized => writeln!(out, "password changed locally and in Keycloak (mode synchronized)")?,
            PasswdMode::Queued => writeln!(
                out,
                "password changed locally; Keycloak is unavailable, change queued as {} (mode queued)",
                r.sync_id.map(|s| s.to_string()).unwrap_or_default()
            )?,
            PasswdMode::Rejected => writeln!(
                out,
                "password changed locally, but Keycloak refused it: {} (mode rejected)",
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

pub fn user(
    config: Config,
    cmd: UserCommand,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    if let UserCommand::Add(who) = &cmd {
        // Read the password before opening the database, so bad input changes nothing.
        let password = input::passwords(&["password"])?.remove(0);
        let auth = open(config)?;
        auth.users().add(&who.user, &who.package, &password)?;
        writeln!(out, "added {}/{}", who.user, who.package)?;
        return Ok(EXIT_OK);
    }
    if let UserCommand::Import { file } = &cmd {
        // An InputError value (not a context string), so that the exit code is 2.
        let format = ImportFormat::from_path(file).ok_or_else(|| {
            super::InputError(format!(
                "{}: unknown format (use .jsonl, .ndjson, .json or .csv)",
                file.display()
            ))
        })?;
        let reader = std::fs::File::open(file)
            .map(std::io::BufReader::new)
            .map_err(|e| super::InputError(format!("{}: {e}", file.display())))?;
        let auth = open(config)?;
        let report = auth.users().import(reader, format)?;
        if json {
            let errors: Vec<_> = report
                .errors
                .iter()
                .map(|(line, msg)| json!({"line": line, "error": msg}))
                .collect();
            print_json(out, &json!({"imported": report.imported, "errors": errors}))?;
        } else {
            writeln!(
                out,
                "imported {} user(s) from {}",
                report.imported,
                file.display()
            )?;
            for (line, msg) in &report.errors {
                writeln!(out, "{}:{line}: {msg}", file.display())?;
            }
        }
        return Ok(if report.errors.is_empty() {
            EXIT_OK
        } else {
            EXIT_REFUSED
        });
    }
    let auth = open(config)?;
    let users = auth.users();
    match cmd {
        UserCommand::List => {
            let list = users.list()?;
            let now = auth.client().clock().now();
            if json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|u| {
                        json!({
                            "user": u.username,
                            "package": u.package,
                            "enabled": u.enabled,
                            "locked_until": u.lockout.is_locked(now).map(rfc3339),
                            "created_at": rfc3339(u.created_at),
                            "updated_at": rfc3339(u.updated_at),
                        })
                    })
                    .collect();
                print_json(out, &rows)?;
            } else {
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
            }
        }
        UserCommand::Disable(who) => {
            let ended = auth.disable_user(&who.user, &who.package)?;
            writeln!(
                out,
                "disabled {}/{} ({ended} session(s) ended)",
                who.user, who.package
            )?;
        }
        UserCommand::Unlock(who) => {
            users.unlock(&who.user, &who.package)?;
            writeln!(out, "unlocked {}/{}", who.user, who.package)?;
        }
        UserCommand::Enable(who) => {
            users.set_enabled(&who.user, &who.package, true)?;
            writeln!(out, "enabled {}/{}", who.user, who.package)?;
        }
        UserCommand::Remove(who) => {
            let ended = auth.remove_user(&who.user, &who.package)?;
            writeln!(
                out,
                "removed {}/{} ({ended} session(s) ended)",
                who.user, who.package
            )?;
        }
        UserCommand::Add(_) | UserCommand::Import { .. } => {}
    }
    Ok(EXIT_OK)
}

pub fn session_show(
    config: Config,
    id: &str,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let id = input::session_id(id)?;
    let auth = open(config)?;
    match auth.sessions().get(id)? {
        Some(s) => {
            if json {
                print_json(
                    out,
                    &json!({
                        "session_id": s.id, "user": s.username, "package": s.package,
                        "auth_mode": s.auth_mode, "created_at": rfc3339(s.created_at), "expires_at": rfc3339(s.expires_at)
                    }),
                )?;
            } else {
                writeln!(
                    out,
                    "session {} of {}/{}: auth_mode {}, created {}, expires {}",
                    s.id,
                    s.username,
                    s.package,
                    s.auth_mode.as_str(),
                    rfc3339(s.created_at),
                    rfc3339(s.expires_at)
                )?;
            }
            Ok(EXIT_OK)
        }
        None => {
            eprintln!("no active session {id}");
            Ok(EXIT_REFUSED)
        }
    }
}

pub fn logout(config: Config, id: &str, json: bool, out: &mut dyn Write) -> anyhow::Result<u8> {
    let id = input::session_id(id)?;
    let auth = open(config)?;
    let ended = auth.sessions().remove(id)?;
    if json {
        print_json(out, &json!({"session_id": id, "ended": ended}))?;
    } else if ended {
        writeln!(out, "session {id} ended")?;
    }
    if !ended {
        eprintln!("no session {id}");
        return Ok(EXIT_REFUSED);
    }
    Ok(EXIT_OK)
}

pub fn metrics(config: Config, textfile: Option<&Path>, out: &mut dyn Write) -> anyhow::Result<u8> {
    let auth = open(config)?;
    let text = crate::metrics::render(&auth)?;
    match textfile {
        Some(path) => crate::metrics::write_textfile(path, &text)?,
        None => out.write_all(text.as_bytes())?,
    }
    Ok(EXIT_OK)
}
