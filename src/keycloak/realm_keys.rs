//! The two calls that fetch what a token verifier needs from a realm: its issuer (the OpenID
//! discovery document) and its signing keys (the JWKS at `jwks_uri`).
//!
//! The JWKS is fetched from `jwks_uri` when that lies under the configured `server_url`;
//! otherwise (Keycloak behind a proxy announcing another host name) from the standard path
//! under `server_url`, so that a discovery document can never send us to another server.
//! Answers are classified as every other call here (see the parent module).

use super::{realm_missing, KcError, KeycloakClient};
use reqwest::StatusCode;
use serde::Deserialize;

/// Largest JWKS accepted (Keycloak's, with certificates, is a few KiB).
const MAX_JWKS_BYTES: usize = 512 * 1024;

/// What the discovery document says about tokens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Discovery {
    /// The `iss` every token of the realm carries.
    pub issuer: String,
    /// Where the realm publishes its keys.
    #[serde(default)]
    pub jwks_uri: String,
}

impl KeycloakClient {
    /// The realm's discovery document (issuer and `jwks_uri`).
    ///
    /// # Errors
    ///
    /// [`KcError::Misconfigured`] for an unknown realm; [`KcError::Unavailable`] when
    /// Keycloak is not reached or does not answer as Keycloak.
    pub fn discovery(&self, realm: &str) -> Result<Discovery, KcError> {
        let url = self.endpoint(&["realms", realm, ".well-known", "openid-configuration"]);
        let resp = self.send(self.http()?.get(&url))?;
        let status = resp.status();
        if status.is_success() {
            let doc: Discovery = self.json_body(resp)?;
            if doc.issuer.is_empty() {
                return Err(KcError::Unavailable(
                    "discovery document without an issuer (not Keycloak?)".into(),
                ));
            }
            return Ok(doc);
        }
        let body = self.error_body(resp)?;
        Err(match status {
            StatusCode::NOT_FOUND => realm_missing(realm, &body),
            _ => KcError::Misconfigured(format!(
                "discovery: HTTP {}: {}",
                status.as_u16(),
                body.reason()
            )),
        })
    }

    /// The realm's JWKS as Keycloak sent it (JSON text with a `keys` array), from
    /// `discovery.jwks_uri` when it lies under `server_url`, else from the standard path.
    ///
    /// # Errors
    ///
    /// [`KcError::Unavailable`] when Keycloak is not reached, answers with an error, or the
    /// answer is not a JWKS.
    pub fn jwks(&self, realm: &str, discovery: &Discovery) -> Result<String, KcError> {
        let url = self.jwks_url(realm, &discovery.jwks_uri);
        let resp = self.send(self.http()?.get(&url))?;
        let status = resp.status();
        if !status.is_success() {
            let body = self.error_body(resp)?;
            return Err(KcError::Misconfigured(format!(
                "JWKS: HTTP {}: {}",
                status.as_u16(),
                body.reason()
            )));
        }
        let value: serde_json::Value = self.json_body(resp)?;
        if !value.get("keys").is_some_and(serde_json::Value::is_array) {
            return Err(KcError::Unavailable(
                "JWKS answer without a keys array (not Keycloak?)".into(),
            ));
        }
        let text = value.to_string();
        if text.len() > MAX_JWKS_BYTES {
            return Err(KcError::Unavailable(format!(
                "JWKS larger than {MAX_JWKS_BYTES} bytes"
            )));
        }
        Ok(text)
    }

    /// `announced` if it lies under `server_url`, else the standard certs path of `realm`.
    fn jwks_url(&self, realm: &str, announced: &str) -> String {
        let base = format!("{}/", self.config.server_url.trim_end_matches('/'));
        if announced.starts_with(&base) && !announced.contains("/../") {
            return announced.to_string();
        }
        if !announced.is_empty() {
            log::debug!("jwks_uri is not under server_url; using the standard path");
        }
        self.endpoint(&["realms", realm, "protocol", "openid-connect", "certs"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn client() -> KeycloakClient {
        let yaml = "keycloak:\n  server_url: http://kc.internal:8080\n  realm: demo\n  client_id: webapp\n";
        let config =
            crate::config::Config::parse(yaml, Path::new("/x/config.yaml"), &|_| None).unwrap();
        KeycloakClient::new(&config.keycloak).unwrap()
    }

    #[test]
    fn the_jwks_is_fetched_only_from_the_configured_server() {
        let kc = client();
        let own = "http://kc.internal:8080/realms/demo/protocol/openid-connect/certs";
        assert_eq!(kc.jwks_url("demo", own), own);
        let standard = own;
        for elsewhere in [
            "https://sso.example.com/realms/demo/protocol/openid-connect/certs",
            "http://kc.internal:8080.evil.test/certs",
            "http://kc.internal:8080/../x",
            "",
        ] {
            assert_eq!(kc.jwks_url("demo", elsewhere), standard, "{elsewhere}");
        }
    }
}
