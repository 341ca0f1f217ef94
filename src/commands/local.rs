//! The local-authentication commands: login, passwd, user …, session show, logout, metrics.

use super::{print_json, rfc3339, Io, EXIT_OK, EXIT_PARTIAL, EXIT_REFUSED};
use crate::account::Account;
use crate::auth::{Auth, PasswdError, PasswdMode};
use crate::local_users::{ImportFormat, UserError};
use crate::protocol::Who;
use serde_json::json;
use std::path::Path;

pub fn login(
    auth: &Auth,
    who: &Who,
    password: &str,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let r = auth.login(&who.user, &who.package, password)?;
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
            Some(until) => writeln!(io.err, "login refused: {reason} (until {})", rfc3339(until))?,
            None => writeln!(io.err, "login refused: {reason}")?,
        }
        return Ok(EXIT_REFUSED);
    }
    Ok(EXIT_OK)
}

pub fn passwd(
    auth: &Auth,
    who: &Who,
    old: &str,
    new: &str,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let r = match auth.change_password(&who.user, &who.package, old, new) {
        Ok(r) => r,
        Err(
            e @ (PasswdError::InvalidCredentials
            | PasswdError::AccountDisabled
            | PasswdError::AccountLocked(_)),
        ) => {
            if json {
                print_json(out, &json!({"success": false, "reason": e.to_string()}))?;
            }
            writeln!(io.err, "passwd refused: {e}")?;
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

pub fn user_add(auth: &Auth, who: &Who, password: &str, io: &mut Io) -> anyhow::Result<u8> {
    auth.users().add(
        &Account::new(&who.user, &who.package).map_err(UserError::from)?,
        password,
    )?;
    writeln!(io.out, "added {}/{}", who.user, who.package)?;
    Ok(EXIT_OK)
}

pub fn user_import(auth: &Auth, file: &Path, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    // InputError values (not context strings), so that the exit code is 2.
    let format = ImportFormat::from_path(file).ok_or_else(|| {
        super::InputError(format!(
            "{}: unknown format (use .jsonl, .ndjson, .json or .csv)",
            file.display()
        ))
    })?;
    let reader = std::fs::File::open(file)
        .map(std::io::BufReader::new)
        .map_err(|e| super::InputError(format!("{}: {e}", file.display())))?;
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
    Ok(if report.errors.is_empty() {
        EXIT_OK
    } else {
        EXIT_REFUSED
    })
}

pub fn user_list(auth: &Auth, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let list = auth.users().list()?;
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

pub fn user_disable(auth: &Auth, who: &Who, io: &mut Io) -> anyhow::Result<u8> {
    let ended = auth.disable_user(&who.user, &who.package)?;
    writeln!(
        io.out,
        "disabled {}/{} ({ended} session(s) ended)",
        who.user, who.package
    )?;
    Ok(EXIT_OK)
}

pub fn user_enable(auth: &Auth, who: &Who, io: &mut Io) -> anyhow::Result<u8> {
    auth.users().set_enabled(
        &Account::new(&who.user, &who.package).map_err(UserError::from)?,
        true,
    )?;
    writeln!(io.out, "enabled {}/{}", who.user, who.package)?;
    Ok(EXIT_OK)
}

pub fn user_unlock(auth: &Auth, who: &Who, io: &mut Io) -> anyhow::Result<u8> {
    auth.users()
        .unlock(&Account::new(&who.user, &who.package).map_err(UserError::from)?)?;
    writeln!(io.out, "unlocked {}/{}", who.user, who.package)?;
    Ok(EXIT_OK)
}

pub fn user_remove(auth: &Auth, who: &Who, io: &mut Io) -> anyhow::Result<u8> {
    let ended = auth.remove_user(&who.user, &who.package)?;
    writeln!(
        io.out,
        "removed {}/{} ({ended} session(s) ended)",
        who.user, who.package
    )?;
    Ok(EXIT_OK)
}

pub fn session_show(auth: &Auth, id: uuid::Uuid, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    let out = &mut *io.out;
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
            writeln!(io.err, "no active session {id}")?;
            Ok(EXIT_REFUSED)
        }
    }
}

pub fn logout(auth: &Auth, id: uuid::Uuid, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let ended = auth.sessions().remove(id)?;
    if json {
        print_json(out, &json!({"session_id": id, "ended": ended}))?;
    } else if ended {
        writeln!(out, "session {id} ended")?;
    }
    if !ended {
        writeln!(io.err, "no session {id}")?;
        return Ok(EXIT_REFUSED);
    }
    Ok(EXIT_OK)
}

pub fn metrics(auth: &Auth, textfile: Option<&Path>, io: &mut Io) -> anyhow::Result<u8> {
    let text = crate::metrics::render(auth)?;
    match textfile {
        Some(path) => crate::metrics::write_textfile(path, &text)?,
        None => io.out.write_all(text.as_bytes())?,
    }
    Ok(EXIT_OK)
}
