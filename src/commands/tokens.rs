//! The token commands: `authenticate`, `cached-token`, `refresh`. All three answer with a
//! token or a refusal, in one `--json` shape.

use super::render::{print_json, rfc3339};
use super::{Io, EXIT_OK, EXIT_REFUSED};
use crate::account::Account;
use crate::client::{AuthError, ResilientClient};
use crate::token_cache::{AuthToken, Verifier};
use serde::Serialize;
use std::io::Write;

/// A token, or a refusal (then every token field is null and `error` says why).
#[derive(Serialize)]
struct TokenView<'a> {
    access_token: Option<&'a str>,
    cached: bool,
    cached_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    expires_at: Option<String>,
}

impl<'a> From<&'a AuthToken> for TokenView<'a> {
    fn from(t: &'a AuthToken) -> Self {
        TokenView {
            access_token: Some(&t.access_token),
            cached: t.cached,
            cached_at: t.cached_at.map(rfc3339),
            error: None,
            expires_at: Some(rfc3339(t.expires_at)),
        }
    }
}

fn print_token(out: &mut dyn Write, t: &AuthToken, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(out, &TokenView::from(t));
    }
    let expires = rfc3339(t.expires_at);
    match t.cached_at {
        Some(at) => writeln!(
            out,
            "cached token (obtained from Keycloak at {}), expires {expires}",
            rfc3339(at)
        )?,
        None => writeln!(out, "token from Keycloak, expires {expires}")?,
    }
    writeln!(out, "{}", t.access_token)?;
    Ok(())
}

/// Prints a token (exit 0), or the refusal: the same JSON shape with nulls and the reason, and
/// one line on stderr, `prefix` then the reason (exit 1). Database errors are not refusals: they
/// stay errors.
fn answer_token(
    io: &mut Io,
    json: bool,
    prefix: &str,
    answer: Result<AuthToken, AuthError>,
) -> anyhow::Result<u8> {
    match answer {
        Ok(t) => {
            print_token(io.out, &t, json)?;
            Ok(EXIT_OK)
        }
        Err(AuthError::Store(e)) => Err(e.into()),
        Err(e) => {
            if json {
                let view = TokenView {
                    access_token: None,
                    cached: false,
                    cached_at: None,
                    error: Some(e.to_string()),
                    expires_at: None,
                };
                print_json(io.out, &view)?;
            }
            writeln!(io.err, "{prefix}{e}")?;
            Ok(EXIT_REFUSED)
        }
    }
}

/// A token from Keycloak, or from the cache while Keycloak is away.
pub(super) fn authenticate(
    client: &ResilientClient,
    account: &Account,
    password: &str,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let answer = client.authenticate_with(account, password, Verifier::Password(password), None);
    answer_token(io, json, "refused: ", answer)
}

/// The cached token, if inside the grace period.
pub(super) fn cached_token(
    client: &ResilientClient,
    account: &Account,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let answer = client
        .tokens()
        .get(account)?
        .ok_or_else(|| AuthError::NoCachedToken {
            account: account.clone(),
        });
    answer_token(io, json, "", answer)
}

/// Fresh tokens for the cached refresh token.
pub(super) fn refresh(
    client: &ResilientClient,
    account: &Account,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let answer = client.refresh(account);
    answer_token(io, json, "refresh refused: ", answer)
}
