//! `verify-token`: is this access token good? The token comes on stdin (never argv, where
//! `ps` shows it); the answer is `valid` with the claims a caller needs, or `invalid` with
//! one reason. Exit 0 for valid, 1 for invalid.

use super::render::{print_json, rfc3339};
use super::{InputError, Io, EXIT_OK, EXIT_REFUSED};
use crate::auth::Auth;
use crate::verify::{self, Verification};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Read;

/// `verify-token --json`.
#[derive(Serialize)]
struct VerifyView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    client_roles: Option<&'a BTreeMap<String, Vec<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expired_in_grace: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preferred_username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    realm: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    realm_roles: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    valid: bool,
}

/// Reads the token from stdin: the first non-empty line, at most
/// [`verify::jwt::MAX_TOKEN_BYTES`] (one byte more is read to tell).
pub(super) fn token_from_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .lock()
        .take(verify::jwt::MAX_TOKEN_BYTES as u64 + 2)
        .read_to_string(&mut text)
        .map_err(|e| InputError(format!("reading the token from stdin: {e}")))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(
            InputError("no token on stdin (expected an access token, a JWT)".into()).into(),
        );
    }
    if token.len() > verify::jwt::MAX_TOKEN_BYTES {
        return Err(InputError(format!(
            "the token on stdin is longer than {} bytes",
            verify::jwt::MAX_TOKEN_BYTES
        ))
        .into());
    }
    Ok(token.to_string())
}

/// Checks the token and prints the verdict.
pub(super) fn verify_token(
    auth: &Auth,
    token: &str,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let verdict = verify::verify_token(auth, token)?;
    let view = match &verdict {
        Verification::Valid(v) => VerifyView {
            client_roles: Some(&v.claims.client_roles),
            detail: None,
            exp: Some(v.claims.exp),
            expired_in_grace: Some(v.expired_in_grace),
            expires_at: chrono::DateTime::from_timestamp(v.claims.exp, 0).map(rfc3339),
            preferred_username: v.claims.preferred_username.as_deref(),
            realm: Some(&v.realm),
            realm_roles: Some(&v.claims.realm_roles),
            reason: None,
            sub: Some(&v.claims.sub),
            valid: true,
        },
        Verification::Invalid(r) => VerifyView {
            client_roles: None,
            detail: Some(&r.detail),
            exp: None,
            expired_in_grace: None,
            expires_at: None,
            preferred_username: None,
            realm: None,
            realm_roles: None,
            reason: Some(r.reason.as_str()),
            sub: None,
            valid: false,
        },
    };
    if json {
        print_json(io.out, &view)?;
    }
    match &verdict {
        Verification::Valid(v) => {
            if !json {
                writeln!(
                    io.out,
                    "valid: {} ({}) in realm {}, expires {}{}",
                    v.claims.preferred_username.as_deref().unwrap_or("-"),
                    v.claims.sub,
                    v.realm,
                    view.expires_at.as_deref().unwrap_or("?"),
                    if v.expired_in_grace {
                        " (expired: accepted in the outage grace)"
                    } else {
                        ""
                    }
                )?;
            }
            Ok(EXIT_OK)
        }
        Verification::Invalid(r) => {
            writeln!(io.err, "invalid: {} ({})", r.reason.as_str(), r.detail)?;
            Ok(EXIT_REFUSED)
        }
    }
}
