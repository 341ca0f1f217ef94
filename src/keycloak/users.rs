//! The admin API's user calls that bring Keycloak's decisions back here: a user's state (with
//! its brute-force lock, which the token endpoint hides behind "invalid user credentials"), the
//! user list a reconcile pages through, and the user id a token names.

use super::{realm_missing, KcError, KcUser, KeycloakClient, Rejection};
use reqwest::StatusCode;
use serde::Deserialize;

/// The largest page a reconcile asks for (Keycloak's own default page is 100).
pub const MAX_PAGE: usize = 500;

/// `GET …/attack-detection/brute-force/users/{id}`: `disabled` is true while the user is
/// locked out by brute-force detection (and false when detection is off).
#[derive(Deserialize)]
struct BruteForce {
    #[serde(default)]
    disabled: bool,
}

impl KeycloakClient {
    /// The user's state and whether brute-force detection locks it now, by exact username;
    /// `None` when Keycloak has no such user.
    pub fn user_state(
        &self,
        realm: &str,
        username: &str,
    ) -> Result<Option<(KcUser, bool)>, KcError> {
        let Some(user) = self.find_user(realm, username)? else {
            return Ok(None);
        };
        let url = self.endpoint(&[
            "admin",
            "realms",
            realm,
            "attack-detection",
            "brute-force",
            "users",
            &user.id,
        ]);
        let resp = self.admin_call(realm, |token| self.http.get(&url).bearer_auth(token))?;
        let status = resp.status();
        if !status.is_success() {
            let body = self.error_body(resp)?;
            return Err(KcError::Rejected(Rejection::Other {
                status: status.as_u16(),
                reason: body.reason(),
            }));
        }
        let brute: BruteForce = self.json_body(resp)?;
        Ok(Some((user, brute.disabled)))
    }

    /// One page of the realm's users (`first`, at most `max`, brief representations), in
    /// Keycloak's order.
    pub fn list_users(
        &self,
        realm: &str,
        first: usize,
        max: usize,
    ) -> Result<Vec<KcUser>, KcError> {
        let url = self.endpoint(&["admin", "realms", realm, "users"]);
        let (first, max) = (first.to_string(), max.min(MAX_PAGE).to_string());
        let resp = self.admin_call(realm, |token| {
            self.http
                .get(&url)
                .query(&[
                    ("first", first.as_str()),
                    ("max", max.as_str()),
                    ("briefRepresentation", "true"),
                ])
                .bearer_auth(token)
        })?;
        let status = resp.status();
        if !status.is_success() {
            let body = self.error_body(resp)?;
            if status == StatusCode::NOT_FOUND {
                return Err(realm_missing(realm, &body));
            }
            return Err(KcError::Rejected(Rejection::Other {
                status: status.as_u16(),
                reason: body.reason(),
            }));
        }
        self.json_body(resp)
    }
}

/// The user id (`sub`) an access token names, read without checking the signature: only for a
/// token just received from Keycloak itself. `None` when the token does not say.
pub fn token_subject(access_token: &str) -> Option<String> {
    let claims = super::claims(access_token)?;
    claims.get("sub")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_is_read_from_the_tokens_claims() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(r#"{"sub":"d4e5-1","preferred_username":"alice"}"#)
        );
        assert_eq!(token_subject(&token).as_deref(), Some("d4e5-1"));
        let no_sub = format!("{}.{}.sig", b64("{}"), b64(r#"{"aud":"x"}"#));
        assert_eq!(token_subject(&no_sub), None);
        assert_eq!(token_subject("not a token"), None);
    }
}
