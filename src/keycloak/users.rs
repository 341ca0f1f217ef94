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
        let resp = self.admin_call(realm, |http, token| http.get(&url).bearer_auth(token))?;
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
        let resp = self.admin_call(realm, |http, token| {
            http.get(&url)
                .query(&[
                    ("first", first.as_str()),
                    ("max", max.as_str()),
                    ("briefRepresentation", "true"),
                ])
                .bearer_auth(token)
        })?;
        self.realm_read(realm, resp)
    }
}

/// What creating a user came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// Keycloak created it now.
    Now,
    /// Keycloak has a user of that name already (409 "User exists with same username").
    Exists,
}

impl KeycloakClient {
    /// Creates an enabled user with a password (not temporary) and the profile fields given.
    /// A realm whose user profile requires a field left out still creates the user, who then
    /// gets "Account is not fully set up" at login until the field is set (measured on 26.7.3).
    pub fn create_user(
        &self,
        realm: &str,
        username: &str,
        user: &crate::sync_queue::NewUser,
    ) -> Result<Created, KcError> {
        let url = self.endpoint(&["admin", "realms", realm, "users"]);
        let mut body = serde_json::json!({
            "username": username,
            "enabled": true,
            "credentials": [{"type": "password", "value": user.password(), "temporary": false}],
        });
        for (key, value) in [
            ("email", &user.email),
            ("firstName", &user.first_name),
            ("lastName", &user.last_name),
        ] {
            if let Some(v) = value {
                body[key] = serde_json::Value::String(v.clone());
            }
        }
        let resp = self.admin_call(realm, |http, token| {
            http.post(&url).json(&body).bearer_auth(token)
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Created::Now);
        }
        let err = self.error_body(resp)?;
        match status {
            // "User exists with same username" is the user we meant; "same email" is another
            // user holding that address: a refusal.
            StatusCode::CONFLICT if err.reason().contains("username") => Ok(Created::Exists),
            StatusCode::NOT_FOUND => Err(realm_missing(realm, &err)),
            s => Err(KcError::Rejected(Rejection::Other {
                status: s.as_u16(),
                reason: err.reason(),
            })),
        }
    }

    /// Enables or disables the user with this id.
    pub fn set_user_enabled(
        &self,
        realm: &str,
        user_id: &str,
        enabled: bool,
    ) -> Result<(), KcError> {
        let url = self.endpoint(&["admin", "realms", realm, "users", user_id]);
        let body = serde_json::json!({ "enabled": enabled });
        let resp = self.admin_call(realm, |http, token| {
            http.put(&url).json(&body).bearer_auth(token)
        })?;
        self.no_content(resp, "user update")
    }

    /// Deletes the user with this id; one already gone is not an error.
    pub fn delete_user(&self, realm: &str, user_id: &str) -> Result<(), KcError> {
        let url = self.endpoint(&["admin", "realms", realm, "users", user_id]);
        let resp = self.admin_call(realm, |http, token| http.delete(&url).bearer_auth(token))?;
        match self.no_content(resp, "user delete") {
            Err(KcError::Rejected(Rejection::UserNotFound)) => Ok(()),
            other => other,
        }
    }

    /// A write's answer: 2xx is done; Keycloak's own 404 is "no such user".
    fn no_content(&self, resp: reqwest::blocking::Response, what: &str) -> Result<(), KcError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let err = self.error_body(resp)?;
        if status == StatusCode::NOT_FOUND {
            return Err(super::user_route_404(what, &err));
        }
        Err(KcError::Rejected(Rejection::Other {
            status: status.as_u16(),
            reason: err.reason(),
        }))
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
