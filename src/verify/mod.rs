//! `verify-token`: tells another application of the SSO whether a Keycloak access token is
//! good, from the realm keys kept here — so it works while Keycloak is down, which is when the
//! application could not fetch them itself.
//!
//! A token is valid when: it is a JWT signed with RS256, PS256 or ES256 by a key of the
//! configured realm whose issuer it names ([`keys`]: fetched again, rate-limited, when the key
//! id is new); its `aud` or `azp` is one of `keycloak.verify.audiences`; the user's local
//! account (in a package of that realm) is not disabled; and it is inside `exp`/`nbf` with
//! `keycloak.verify.leeway_seconds`. While the circuit is open (Keycloak known to be away), a
//! token expired less than `keycloak.verify.outage_grace_seconds` ago is still accepted and
//! marked `expired_in_grace`. Otherwise the answer is one [`Reason`].
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | [`verify_token`]: the steps in order |
//! | [`jwt`] | one token's header, signature and claims (pure) |
//! | [`keys`] | the kept issuer and JWKS of each realm, and fetching them |
//! | [`upkeep`] | `start`'s periodic key refresh |

pub mod jwt;
pub mod keys;
pub mod upkeep;

use crate::auth::Auth;
use crate::keycloak::breaker::CircuitState;
use crate::local_users::UserError;
use crate::store::StoreError;
use jwt::refuse;
pub use jwt::{Reason, Refusal, TokenClaims};
use keys::{Keyring, RealmKeys};

/// The answer about one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The token is good.
    Valid(Valid),
    /// It is not, for this reason.
    Invalid(Refusal),
}

/// A good token: what a caller needs from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Valid {
    /// The realm whose key signed it.
    pub realm: String,
    /// Its claims.
    pub claims: TokenClaims,
    /// True when it is past `exp` and accepted only because Keycloak is away (the outage
    /// grace).
    pub expired_in_grace: bool,
}

/// Why a token could not be checked at all (not a verdict on the token).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The local user store failed.
    #[error(transparent)]
    Users(#[from] UserError),
}

/// A step's way out: a verdict on the token, or a failure to check it.
enum Stop {
    Refused(Refusal),
    Failed(VerifyError),
}

impl From<Refusal> for Stop {
    fn from(r: Refusal) -> Stop {
        Stop::Refused(r)
    }
}

impl<E: Into<VerifyError>> From<E> for Stop {
    fn from(e: E) -> Stop {
        Stop::Failed(e.into())
    }
}

/// Checks `token` (surrounding whitespace ignored). Asks Keycloak only when the realm's keys
/// were never fetched, or the token names a key id they lack.
///
/// # Errors
///
/// [`VerifyError`] when the database fails; a bad token is an [`Verification::Invalid`].
pub fn verify_token(auth: &Auth, token: &str) -> Result<Verification, VerifyError> {
    match check(auth, token.trim()) {
        Ok(valid) => Ok(Verification::Valid(valid)),
        Err(Stop::Refused(r)) => Ok(Verification::Invalid(r)),
        Err(Stop::Failed(e)) => Err(e),
    }
}

fn check(auth: &Auth, token: &str) -> Result<Valid, Stop> {
    let client = auth.client();
    let config = client.config();
    let header = jwt::header(token)?;
    let unverified = jwt::unverified_claims(token)?;
    let iss = unverified
        .get("iss")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| refuse(Reason::Malformed, "no iss claim"))?;
    let ring = Keyring {
        store: client.store(),
        keycloak: client.keycloak(),
        clock: client.clock(),
    };
    let (realm, kept) = realm_of(&ring, auth, iss)?;
    let key = match jwt::find_key(&kept.jwks, &header.kid) {
        Some(key) => key,
        None => ring
            .refresh_for_unknown_kid(&realm)?
            .and_then(|fresh| jwt::find_key(&fresh.jwks, &header.kid))
            .ok_or_else(|| {
                refuse(
                    Reason::UnknownKey,
                    format!(
                        "realm {realm} has no signing key {} (keys fetched {})",
                        header.kid,
                        kept.fetched_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                )
            })?,
    };
    let payload = jwt::check_signature(token, &header, &key)?;
    let claims = jwt::claims(&payload)?;
    if claims.issuer != kept.issuer {
        return Err(refuse(Reason::WrongIssuer, "iss changed under the signature").into());
    }
    jwt::check_audience(&claims, &config.verify.audiences)?;
    if let Some(user) = &claims.preferred_username {
        if disabled_here(auth, user, &realm)? {
            return Err(refuse(
                Reason::AccountDisabled,
                format!("the local account of {user} is disabled"),
            )
            .into());
        }
    }
    let grace = if client.circuit().0 == CircuitState::Closed {
        0
    } else {
        config.verify.outage_grace.as_secs() as i64
    };
    let leeway = config.verify.leeway.as_secs() as i64;
    let now = client.clock().now().timestamp();
    let expired_in_grace = jwt::check_dates(&claims, now, leeway, grace)?;
    Ok(Valid {
        realm,
        claims,
        expired_in_grace,
    })
}

/// The configured realm whose kept issuer is `iss`. Realms whose keys were never fetched are
/// fetched first when Keycloak may be tried.
fn realm_of(ring: &Keyring<'_>, auth: &Auth, iss: &str) -> Result<(String, RealmKeys), Stop> {
    let realms = keys::realms(auth.client().config());
    let find = |kept: &keys::Kept| {
        realms.iter().find_map(|r| {
            kept.get(r)
                .filter(|k| k.issuer == iss)
                .map(|k| (r.clone(), k.clone()))
        })
    };
    let mut kept = keys::kept(ring.store)?;
    if let Some(found) = find(&kept) {
        return Ok(found);
    }
    let never: Vec<&String> = realms.iter().filter(|r| !kept.contains_key(*r)).collect();
    if !never.is_empty() && ring.keycloak.should_try_keycloak() {
        for realm in &never {
            if let Err(e) = ring.refresh(realm) {
                log::warn!("{e}");
            }
        }
        kept = keys::kept(ring.store)?;
        if let Some(found) = find(&kept) {
            return Ok(found);
        }
    }
    let never: Vec<&str> = realms
        .iter()
        .filter(|r| !kept.contains_key(*r))
        .map(String::as_str)
        .collect();
    Err(if never.is_empty() {
        refuse(
            Reason::WrongIssuer,
            format!("{iss} is not the issuer of realm {}", realms.join(", ")),
        )
    } else {
        refuse(
            Reason::UnknownKey,
            format!(
                "the keys of realm {} were never fetched (Keycloak unavailable)",
                never.join(", ")
            ),
        )
    }
    .into())
}

/// Whether `user` has a disabled local account in a package served by `realm`.
fn disabled_here(auth: &Auth, user: &str, realm: &str) -> Result<bool, UserError> {
    let config = auth.client().config();
    Ok(auth
        .users()
        .named(user)?
        .iter()
        .any(|u| !u.enabled && config.package(&u.package).realm == realm))
}
