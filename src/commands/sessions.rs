//! The session commands: `login` (which creates one), `session show`, `logout`, with their
//! `--json` views.

use super::render::{print_json, rfc3339};
use super::{Io, EXIT_OK, EXIT_REFUSED};
use crate::account::Account;
use crate::auth::{Auth, FailReason, LoginResult};
use crate::sessions::AuthMode;
use serde::Serialize;

/// `login --json`; `locked_until` and `reason` only when refused for them.
#[derive(Serialize)]
struct LoginView {
    auth_mode: Option<AuthMode>,
    keycloak_status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    locked_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<FailReason>,
    session_id: Option<uuid::Uuid>,
    success: bool,
}

/// Logs in; exit 1 with the reason on stderr when refused.
pub(super) fn login(
    auth: &Auth,
    account: &Account,
    password: &str,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let r = auth.login(account, password)?;
    show_login(&r, json, io)
}

/// Prints a login's result; exit 1 with the reason on stderr when refused.
pub(super) fn show_login(r: &LoginResult, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    if json {
        let view = LoginView {
            auth_mode: r.auth_mode,
            keycloak_status: r.keycloak_status,
            locked_until: r.locked_until.map(rfc3339),
            reason: r.reason,
            session_id: r.session_id,
            success: r.success,
        };
        print_json(out, &view)?;
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

/// `session show --json`.
#[derive(Serialize)]
struct SessionView<'a> {
    auth_mode: AuthMode,
    created_at: String,
    expires_at: String,
    package: &'a str,
    session_id: uuid::Uuid,
    user: &'a str,
}

/// Shows an active session; exit 1 when there is none.
pub(super) fn session_show(
    auth: &Auth,
    id: uuid::Uuid,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let Some(s) = auth.sessions().get(id)? else {
        writeln!(io.err, "no active session {id}")?;
        return Ok(EXIT_REFUSED);
    };
    if json {
        let view = SessionView {
            auth_mode: s.auth_mode,
            created_at: rfc3339(s.created_at),
            expires_at: rfc3339(s.expires_at),
            package: &s.package,
            session_id: s.id,
            user: &s.username,
        };
        print_json(out, &view)?;
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

/// `logout --json`.
#[derive(Serialize)]
struct LogoutView {
    ended: bool,
    session_id: uuid::Uuid,
}

/// Ends a session; exit 1 when there was none.
pub(super) fn logout(auth: &Auth, id: uuid::Uuid, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let ended = auth.sessions().remove(id)?;
    if json {
        print_json(
            out,
            &LogoutView {
                ended,
                session_id: id,
            },
        )?;
    } else if ended {
        writeln!(out, "session {id} ended")?;
    }
    if !ended {
        writeln!(io.err, "no session {id}")?;
        return Ok(EXIT_REFUSED);
    }
    Ok(EXIT_OK)
}
