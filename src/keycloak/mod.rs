//! Keycloak over HTTP (blocking reqwest): the calls this tool needs, every answer classified.
//!
//! The classification is the heart of the breaker: only [`KcError::Unavailable`] (connect error,
//! timeout, 5xx, 429, a body that is not Keycloak's JSON) counts as Keycloak being down.
//! [`KcError::Rejected`] is an answer about the user or the item (wrong password, disabled
//! account, unknown user, password policy) and [`KcError::Misconfigured`] is an answer about us
//! (unknown realm, bad client secret, client without direct access grants, admin account not
//! permitted): both mean Keycloak is up. Classification reads Keycloak's `error` field, not only
//! the status: before 26.6 a wrong password is 401 `invalid_grant`, from 26.6 on it is 400.
//!
//! No secret (password, token, client secret) is ever put into an error or a log line here:
//! secrets travel only in form bodies and the `Authorization` header.
//!
//! Nothing outside this folder calls [`KeycloakClient`] directly: [`guard::GuardedKeycloak`]
//! puts the [`breaker`] in front of it and keeps the [`health`] record.

pub mod breaker;
pub mod bulkhead;
pub mod durations;
pub mod guard;
pub mod health;
pub mod realm_keys;
pub mod users;

use crate::config::{KeycloakConfig, PackageConfig, Secret};
use percent_encoding::utf8_percent_encode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use serde::Deserialize;
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long before its expiry an admin token is replaced.
const ADMIN_TOKEN_MARGIN: Duration = Duration::from_secs(30);
/// Error bodies larger than this are not Keycloak's JSON answers.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Success bodies larger than this are not Keycloak's answers to the calls made here (a token
/// set, one user, a credential list, a discovery document: a few KB each).
const MAX_BODY: usize = 1024 * 1024;
/// How much of a body is read at a time (the deadline is checked between reads).
const READ_CHUNK: usize = 8 * 1024;
/// Keycloak's own answer for an id the admin API does not know, as opposed to a route that
/// is not there (`HTTP 404 Not Found`, from Keycloak or from a proxy in front of it).
const USER_NOT_FOUND: &str = "User not found";

/// A Keycloak call's failure, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KcError {
    /// Keycloak could not be reached or did not answer as Keycloak: counts toward the breaker.
    #[error("Keycloak unavailable: {0}")]
    Unavailable(String),
    /// Keycloak answered about the user or the item.
    #[error("Keycloak refused: {0}")]
    Rejected(Rejection),
    /// Keycloak answered about our configuration (realm, clients, admin rights).
    #[error("Keycloak misconfigured: {0}")]
    Misconfigured(String),
}

impl KcError {
    /// True for the class that counts toward opening the circuit.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, KcError::Unavailable(_))
    }
}

/// What Keycloak said no to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Wrong password or unknown user (Keycloak does not tell which).
    #[error("invalid user credentials")]
    InvalidCredentials,
    /// The account is disabled.
    #[error("account disabled")]
    AccountDisabled,
    /// The account has required actions (profile, password update, …).
    #[error("account is not fully set up")]
    AccountNotSetUp,
    /// The refresh token is expired, revoked or unknown.
    #[error("refresh token no longer valid")]
    InvalidRefreshToken,
    /// The admin API does not know the user.
    #[error("user not found in Keycloak")]
    UserNotFound,
    /// The password does not meet the realm's policy (Keycloak's reason).
    #[error("password policy: {0}")]
    PasswordPolicy(String),
    /// A conflict or other passing refusal worth retrying later.
    #[error("HTTP {status}: {reason}")]
    Transient {
        /// HTTP status.
        status: u16,
        /// Keycloak's reason.
        reason: String,
    },
    /// Any other refusal: retrying will not help.
    #[error("HTTP {status}: {reason}")]
    Other {
        /// HTTP status.
        status: u16,
        /// Keycloak's reason.
        reason: String,
    },
}

/// Tokens from a password or refresh grant. `Debug` hides them.
#[derive(Clone, Deserialize)]
pub struct TokenSet {
    /// The access token (a JWT).
    pub access_token: String,
    /// Seconds the access token is valid.
    #[serde(default)]
    pub expires_in: i64,
    /// The refresh token, when the client gets one.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Seconds the refresh token is valid (0: no expiry given).
    #[serde(default)]
    pub refresh_expires_in: i64,
    /// Usually "Bearer".
    #[serde(default)]
    pub token_type: String,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("expires_in", &self.expires_in)
            .field("refresh_expires_in", &self.refresh_expires_in)
            .finish_non_exhaustive()
    }
}

/// The part of Keycloak's user representation this tool reads.
#[derive(Debug, Clone, Deserialize)]
pub struct KcUser {
    /// Keycloak's user id.
    pub id: String,
    /// The username (Keycloak keeps it lowercase).
    pub username: String,
    /// Whether the account is enabled.
    #[serde(default)]
    pub enabled: bool,
}

/// The part of Keycloak's `CredentialRepresentation` this tool reads (the list never carries
/// secrets: Keycloak blanks `secretData`).
#[derive(Debug, Clone, Deserialize)]
struct KcCredential {
    /// `password`, `otp`, …
    #[serde(default, rename = "type")]
    kind: String,
    /// Epoch milliseconds; set when the credential is created or the password reset.
    #[serde(default, rename = "createdDate")]
    created_date: Option<i64>,
}

/// The `createdDate` of the password credential (the newest, should there be several). Pure.
fn newest_password(credentials: &[KcCredential]) -> Option<i64> {
    credentials
        .iter()
        .filter(|c| c.kind == "password")
        .filter_map(|c| c.created_date)
        .max()
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default, rename = "errorMessage")]
    error_message: String,
}

impl ErrorBody {
    fn reason(&self) -> String {
        [&self.error_description, &self.error_message, &self.error]
            .into_iter()
            .find(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| "no reason given".to_string())
    }
}

struct AdminToken {
    token: Secret,
    valid_until: Instant,
}

/// A blocking Keycloak client for one server.
///
/// Every call is bounded as a whole: [`KeycloakClient::bounded`] gives a handle whose requests
/// (connect, TLS, headers and body, and every request of a call that makes several) all end by
/// one deadline. reqwest's blocking client alone waits `timeout` for the headers and again for
/// each read of the body, so a trickling answer could hold a call for many timeouts.
#[derive(Clone)]
pub struct KeycloakClient {
    /// Built at the first request ([`KeycloakClient::http`]): a command that never calls
    /// Keycloak (`status`, a local login) loads no trust store.
    http: Arc<OnceLock<Result<Client, String>>>,
    /// What the client is built with: the CA file's certificates, parsed when the handle is
    /// made, so a bad one is refused at once.
    roots: Arc<Roots>,
    config: KeycloakConfig,
    admin_tokens: Arc<Mutex<HashMap<String, AdminToken>>>,
    /// When the call this handle serves must be over (`None`: each request gets `timeout`).
    deadline: Option<Instant>,
}

/// The certificates a [`KeycloakClient`] trusts.
enum Roots {
    /// None: Keycloak is spoken to over `http://`, no TLS.
    None,
    /// The system's trust store.
    System,
    /// The system's, and those of `keycloak.tls.ca_file` (`file`, for messages).
    SystemAnd {
        certs: Vec<reqwest::Certificate>,
        file: std::path::PathBuf,
    },
}

impl std::fmt::Debug for KeycloakClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeycloakClient")
            .field("server_url", &self.config.server_url)
            .finish_non_exhaustive()
    }
}

impl KeycloakClient {
    /// A handle on this Keycloak; its HTTP client is built at the first request.
    ///
    /// # Errors
    ///
    /// [`KcError::Misconfigured`] when `keycloak.tls.ca_file` holds no usable certificate.
    pub fn new(config: &KeycloakConfig) -> Result<KeycloakClient, KcError> {
        let roots = if config.server_url.starts_with("http://") {
            Roots::None
        } else if let Some(ca) = &config.tls_ca {
            // Checked when the config was loaded; trusted besides the system's roots.
            let certs = reqwest::Certificate::from_pem_bundle(&ca.pem).map_err(|e| {
                KcError::Misconfigured(format!("keycloak.tls.ca_file {}: {e}", ca.path.display()))
            })?;
            Roots::SystemAnd {
                certs,
                file: ca.path.clone(),
            }
        } else {
            Roots::System
        };
        Ok(KeycloakClient {
            http: Arc::new(OnceLock::new()),
            roots: Arc::new(roots),
            config: config.clone(),
            admin_tokens: Arc::new(Mutex::new(HashMap::new())),
            deadline: None,
        })
    }

    /// A handle on the same connection pool and admin tokens whose every request ends within
    /// `budget` from now, all of them together.
    pub fn bounded(&self, budget: Duration) -> KeycloakClient {
        KeycloakClient {
            deadline: Some(Instant::now() + budget),
            ..self.clone()
        }
    }

    /// What is left of this handle's budget (the configured timeout when it has none).
    fn remaining(&self) -> Result<Duration, KcError> {
        let Some(deadline) = self.deadline else {
            return Ok(self.config.timeout);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(KcError::Unavailable(
                "timed out: the call's time budget is spent".into(),
            ));
        }
        Ok(left)
    }

    /// The HTTP client (rustls, JSON, the configured timeouts), built on first use and shared
    /// by every clone of this handle. Loading the system's trust store reads every CA file on
    /// the machine: a one-shot command pays it only when it does call Keycloak, and an
    /// `http://` Keycloak never.
    fn http(&self) -> Result<&Client, KcError> {
        let built = self.http.get_or_init(|| {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                reqwest::header::ACCEPT,
                reqwest::header::HeaderValue::from_static("application/json"),
            );
            let mut builder = Client::builder()
                .timeout(self.config.timeout)
                .connect_timeout(self.config.connect_timeout)
                .default_headers(headers)
                .user_agent(concat!("keycloak-resilient/", env!("CARGO_PKG_VERSION")));
            builder = match &*self.roots {
                Roots::None => builder.tls_certs_only(Vec::<reqwest::Certificate>::new()),
                Roots::System => builder,
                Roots::SystemAnd { certs, .. } => builder.tls_certs_merge(certs.iter().cloned()),
            };
            builder.build().map_err(|e| match &*self.roots {
                Roots::SystemAnd { file, .. } => {
                    format!("keycloak.tls.ca_file {}: {e}", file.display())
                }
                _ => format!("HTTP client: {e}"),
            })
        });
        built
            .as_ref()
            .map_err(|e| KcError::Misconfigured(e.clone()))
    }

    /// Sends a request bounded by what is left of the budget: reqwest's per-request timeout
    /// runs from connecting to the end of the body.
    fn send(&self, request: RequestBuilder) -> Result<Response, KcError> {
        let left = self.remaining()?;
        let resp = request.timeout(left).send().map_err(transport)?;
        Ok(resp)
    }

    /// Reads a body of at most `cap` bytes, within the budget.
    fn read_body(&self, resp: Response, cap: usize) -> Result<Vec<u8>, KcError> {
        let status = resp.status().as_u16();
        let mut reader = resp.take(cap as u64 + 1);
        let mut body = Vec::new();
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            self.remaining()?;
            let n = reader.read(&mut chunk).map_err(|e| {
                KcError::Unavailable(format!("reading HTTP {status} answer: {}", io_text(&e)))
            })?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
            if body.len() > cap {
                return Err(KcError::Unavailable(format!(
                    "HTTP {status} with an oversized body (over {cap} bytes)"
                )));
            }
        }
        Ok(body)
    }

    /// `server_url` with `segments` appended, each percent-encoded as one path segment: a realm
    /// or user id can never add a segment, a query or a fragment (config validation refuses
    /// such realm names too; this holds whatever built the config).
    fn endpoint(&self, segments: &[&str]) -> String {
        endpoint(&self.config.server_url, segments)
    }

    /// The health probe: the realm's OpenID discovery document.
    pub fn probe(&self, realm: &str) -> Result<(), KcError> {
        let url = self.endpoint(&["realms", realm, ".well-known", "openid-configuration"]);
        let resp = self.send(self.http()?.get(&url))?;
        let status = resp.status();
        if status.is_success() {
            let doc: serde_json::Value = self.json_body(resp)?;
            if doc.get("issuer").is_some() {
                return Ok(());
            }
            return Err(KcError::Unavailable(
                "discovery document without an issuer (not Keycloak?)".into(),
            ));
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

    /// The password grant: a user's tokens for `package`'s client.
    pub fn password_grant(
        &self,
        package: &PackageConfig,
        username: &str,
        password: &str,
    ) -> Result<TokenSet, KcError> {
        let mut form = vec![
            ("grant_type", "password"),
            ("client_id", package.client_id.as_str()),
            ("username", username),
            ("password", password),
            ("scope", "openid"),
        ];
        if !package.client_secret.is_empty() {
            form.push(("client_secret", package.client_secret.expose()));
        }
        self.token_request(&package.realm, &form)
    }

    /// The refresh grant.
    pub fn refresh(
        &self,
        package: &PackageConfig,
        refresh_token: &str,
    ) -> Result<TokenSet, KcError> {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("client_id", package.client_id.as_str()),
            ("refresh_token", refresh_token),
        ];
        if !package.client_secret.is_empty() {
            form.push(("client_secret", package.client_secret.expose()));
        }
        self.token_request(&package.realm, &form)
    }

    fn token_request(&self, realm: &str, form: &[(&str, &str)]) -> Result<TokenSet, KcError> {
        let url = self.endpoint(&["realms", realm, "protocol", "openid-connect", "token"]);
        let resp = self.send(self.http()?.post(&url).form(form))?;
        let status = resp.status();
        if status.is_success() {
            return self.json_body(resp);
        }
        let body = self.error_body(resp)?;
        Err(classify_token_error(status, &body, realm))
    }

    /// A service-account token for the admin API, reused until shortly before it expires.
    pub fn admin_token(&self, realm: &str) -> Result<Secret, KcError> {
        if let Some(t) = self.lock_tokens().get(realm) {
            if Instant::now() < t.valid_until {
                return Ok(t.token.clone());
            }
        }
        if self.config.admin_client_secret.is_empty() {
            return Err(KcError::Misconfigured(
                "admin_client_secret is not set (config or KEYCLOAK_ADMIN_CLIENT_SECRET)".into(),
            ));
        }
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.config.admin_client_id.as_str()),
            ("client_secret", self.config.admin_client_secret.expose()),
        ];
        let tokens = self.token_request(realm, &form).map_err(|e| match e {
            KcError::Rejected(r) => KcError::Misconfigured(format!(
                "admin client {} refused: {r}",
                self.config.admin_client_id
            )),
            KcError::Misconfigured(m) => {
                KcError::Misconfigured(format!("admin client {}: {m}", self.config.admin_client_id))
            }
            other => other,
        })?;
        // At most a day, whatever the server says: the token is re-fetched well before then.
        let lifetime = Duration::from_secs(tokens.expires_in.clamp(0, 86_400) as u64);
        let token = Secret::new(tokens.access_token);
        self.lock_tokens().insert(
            realm.to_string(),
            AdminToken {
                token: token.clone(),
                valid_until: Instant::now() + lifetime.saturating_sub(ADMIN_TOKEN_MARGIN),
            },
        );
        Ok(token)
    }

    /// Drops every cached admin token, so that the next admin call logs in again. A token
    /// carries the roles of its moment: once Keycloak refused our admin client, a cached one
    /// says nothing about whether an operator has fixed it since.
    pub fn forget_admin_tokens(&self) {
        self.lock_tokens().clear();
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, AdminToken>> {
        self.admin_tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs an admin call; on a 401 (token revoked or expired early) gets a new token and tries
    /// once more.
    fn admin_call(
        &self,
        realm: &str,
        call: impl Fn(&Client, &str) -> RequestBuilder,
    ) -> Result<Response, KcError> {
        let http = self.http()?;
        let send = |token: Secret| self.send(call(http, token.expose()));
        let mut resp = send(self.admin_token(realm)?)?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            self.lock_tokens().remove(realm);
            resp = send(self.admin_token(realm)?)?;
        }
        match resp.status() {
            StatusCode::UNAUTHORIZED => Err(KcError::Misconfigured(format!(
                "admin client {} token refused by the admin API",
                self.config.admin_client_id
            ))),
            StatusCode::FORBIDDEN => Err(KcError::Misconfigured(format!(
                "admin client {} lacks realm-management manage-users/view-users",
                self.config.admin_client_id
            ))),
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => Err(
                KcError::Unavailable(format!("admin API: HTTP {}", s.as_u16())),
            ),
            _ => Ok(resp),
        }
    }

    /// The realm-management roles the admin service account's token carries (read from the
    /// token's claims; used by `test` to check for manage-users without changing anything).
    pub fn admin_roles(&self, realm: &str) -> Result<Vec<String>, KcError> {
        let token = self.admin_token(realm)?;
        Ok(realm_management_roles(token.expose()).unwrap_or_default())
    }

    /// Looks a user up by exact username (case-insensitive, as Keycloak stores it).
    pub fn find_user(&self, realm: &str, username: &str) -> Result<Option<KcUser>, KcError> {
        let url = self.endpoint(&["admin", "realms", realm, "users"]);
        let resp = self.admin_call(realm, |http, token| {
            http.get(&url)
                .query(&[("username", username), ("exact", "true")])
                .bearer_auth(token)
        })?;
        let users: Vec<KcUser> = self.realm_read(realm, resp)?;
        Ok(users.into_iter().find(|u| {
            u.username.eq_ignore_ascii_case(username) || u.username == username.to_lowercase()
        }))
    }

    /// Sets a user's password (not temporary) through the admin API.
    pub fn reset_password(
        &self,
        realm: &str,
        user_id: &str,
        password: &str,
    ) -> Result<(), KcError> {
        let url = self.endpoint(&["admin", "realms", realm, "users", user_id, "reset-password"]);
        let body = serde_json::json!({"type": "password", "value": password, "temporary": false});
        let resp = self.admin_call(realm, |http, token| {
            http.put(&url).json(&body).bearer_auth(token)
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let err = self.error_body(resp)?;
        if status == StatusCode::NOT_FOUND {
            return Err(user_route_404("reset-password", &err));
        }
        Err(KcError::Rejected(match status {
            StatusCode::BAD_REQUEST => Rejection::PasswordPolicy(err.reason()),
            StatusCode::CONFLICT | StatusCode::REQUEST_TIMEOUT | StatusCode::LOCKED => {
                Rejection::Transient {
                    status: status.as_u16(),
                    reason: err.reason(),
                }
            }
            s => Rejection::Other {
                status: s.as_u16(),
                reason: err.reason(),
            },
        }))
    }

    /// The `createdDate` (epoch milliseconds, Keycloak's clock) of the user's password
    /// credential, `None` when the user has no password. Keycloak sets it anew on every
    /// password reset (`GET /admin/realms/{realm}/users/{id}/credentials`, which never
    /// returns the secret itself): the replay compares it before and after a send whose
    /// answer a crash lost. Needs `view-users`, which the sync client holds.
    pub fn password_created(&self, realm: &str, user_id: &str) -> Result<Option<i64>, KcError> {
        let url = self.endpoint(&["admin", "realms", realm, "users", user_id, "credentials"]);
        let resp = self.admin_call(realm, |http, token| http.get(&url).bearer_auth(token))?;
        let status = resp.status();
        if !status.is_success() {
            let body = self.error_body(resp)?;
            if status == StatusCode::NOT_FOUND {
                return Err(user_route_404("credentials", &body));
            }
            return Err(KcError::Rejected(Rejection::Other {
                status: status.as_u16(),
                reason: body.reason(),
            }));
        }
        let credentials: Vec<KcCredential> = self.json_body(resp)?;
        Ok(newest_password(&credentials))
    }

    /// The configuration this client was built from.
    pub fn config(&self) -> &KeycloakConfig {
        &self.config
    }
}

/// `base` (a URL without query or fragment, as config validation leaves it) with `segments`
/// appended, each percent-encoded as a single path segment.
fn endpoint(base: &str, segments: &[&str]) -> String {
    let mut url = base.trim_end_matches('/').to_string();
    for segment in segments {
        url.push('/');
        url.extend(utf8_percent_encode(segment, PATH_SEGMENT));
    }
    url
}

/// What is escaped inside one path segment: everything but RFC 3986 unreserved characters, so
/// `/`, `?`, `#` and `%` arrive as data. (A segment of only `.` or `..` is a dot segment however
/// it is encoded — URL parsers treat `%2E` as `.` — which is why the name rule refuses those.)
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The `resource_access.realm-management.roles` claim of a JWT, if it can be read.
fn realm_management_roles(jwt: &str) -> Option<Vec<String>> {
    let claims = claims(jwt)?;
    let roles = claims
        .get("resource_access")?
        .get("realm-management")?
        .get("roles")?
        .as_array()?;
    Some(
        roles
            .iter()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect(),
    )
}

/// A JWT's claims, unchecked: only for tokens received from Keycloak itself.
fn claims(jwt: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn realm_missing(realm: &str, body: &ErrorBody) -> KcError {
    KcError::Misconfigured(format!("realm {realm}: {}", body.reason()))
}

/// Classifies a non-2xx answer of the token endpoint.
fn classify_token_error(status: StatusCode, body: &ErrorBody, realm: &str) -> KcError {
    let desc = body.error_description.as_str();
    match body.error.as_str() {
        "invalid_grant" => KcError::Rejected(if desc.contains("disabled") {
            Rejection::AccountDisabled
        } else if desc.contains("not fully set up") {
            Rejection::AccountNotSetUp
        } else if desc.to_lowercase().contains("refresh")
            || desc.contains("not active")
            || desc.contains("Session")
        {
            Rejection::InvalidRefreshToken
        } else {
            Rejection::InvalidCredentials
        }),
        "invalid_client"
        | "unauthorized_client"
        | "unsupported_grant_type"
        | "invalid_scope"
        | "invalid_request" => KcError::Misconfigured(format!("{}: {}", body.error, body.reason())),
        _ if status == StatusCode::NOT_FOUND => realm_missing(realm, body),
        _ => KcError::Rejected(Rejection::Other {
            status: status.as_u16(),
            reason: body.reason(),
        }),
    }
}

/// Maps a transport error: everything here means Keycloak was not reached.
fn transport(e: reqwest::Error) -> KcError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // reqwest's message carries the URL (no secrets: they travel in bodies and headers).
    let text = error_text(&e);
    if is_certificate_error(&text) {
        // Our trust settings, not Keycloak being away: never opens the breaker.
        return KcError::Misconfigured(format!(
            "TLS: {text}; if Keycloak's certificate comes from a private CA, set keycloak.tls.ca_file to it"
        ));
    }
    KcError::Unavailable(format!("{what}: {text}"))
}

/// Whether a transport error's text is rustls refusing the server's certificate (an unknown
/// issuer, a wrong name, expired): a configuration problem. Pure.
fn is_certificate_error(text: &str) -> bool {
    text.contains("invalid peer certificate") || text.contains("certificate verify failed")
}

/// reqwest's error with its causes on one line (URLs only: secrets travel in bodies and headers).
fn error_text(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// An I/O error with its causes on one line (reqwest's timeout surfaces as one of them).
fn io_text(e: &std::io::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// A 404 from the admin API about a user's sub-resource: Keycloak's own "User not found" is an
/// answer about the user; any other 404 (`HTTP 404 Not Found` for a route that is not there,
/// from Keycloak or a proxy that does not route the path) is about our setup. Pure.
fn user_route_404(what: &str, body: &ErrorBody) -> KcError {
    if body.error == USER_NOT_FOUND {
        return KcError::Rejected(Rejection::UserNotFound);
    }
    KcError::Misconfigured(format!(
        "admin API {what}: HTTP 404 ({}): the route is not there (a proxy or gateway not routing it?)",
        body.reason()
    ))
}

impl KeycloakClient {
    /// The JSON answer of a read of the realm's admin API (user search, user list): a 404 is
    /// a realm Keycloak does not have (our configuration), another refusal Keycloak's reason.
    fn realm_read<T: serde::de::DeserializeOwned>(
        &self,
        realm: &str,
        resp: Response,
    ) -> Result<T, KcError> {
        let status = resp.status();
        if status.is_success() {
            return self.json_body(resp);
        }
        let body = self.error_body(resp)?;
        if status == StatusCode::NOT_FOUND {
            return Err(realm_missing(realm, &body));
        }
        Err(KcError::Rejected(Rejection::Other {
            status: status.as_u16(),
            reason: body.reason(),
        }))
    }

    /// Reads a JSON success body; anything else means we are not talking to Keycloak.
    fn json_body<T: serde::de::DeserializeOwned>(&self, resp: Response) -> Result<T, KcError> {
        let status = resp.status().as_u16();
        let body = self.read_body(resp, MAX_BODY)?;
        serde_json::from_slice(&body).map_err(|_| {
            KcError::Unavailable(format!("HTTP {status} answer is not Keycloak's JSON"))
        })
    }

    /// Reads an error answer. 5xx/429 and non-JSON bodies mean Keycloak is not (really) there.
    fn error_body(&self, resp: Response) -> Result<ErrorBody, KcError> {
        let status = resp.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(KcError::Unavailable(format!("HTTP {}", status.as_u16())));
        }
        let body = self.read_body(resp, MAX_ERROR_BODY)?;
        let text = String::from_utf8_lossy(&body);
        if text.trim().is_empty() {
            return Ok(ErrorBody::default());
        }
        serde_json::from_str(&text).map_err(|_| {
            KcError::Unavailable(format!(
                "HTTP {} answer is not Keycloak's JSON",
                status.as_u16()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(error: &str, desc: &str) -> ErrorBody {
        ErrorBody {
            error: error.into(),
            error_description: desc.into(),
            error_message: String::new(),
        }
    }

    /// Issue 17 point 4: making a handle loads no trust store; the first request builds the
    /// client, once, for every clone (here an `https://` URL to a port nobody listens on).
    #[test]
    fn the_http_client_is_built_at_the_first_request_and_shared() {
        let yaml =
            "keycloak:\n  server_url: https://127.0.0.1:9\n  realm: demo\n  client_id: webapp\n";
        let config =
            crate::config::Config::parse(yaml, std::path::Path::new("/x/config.yaml"), &|_| None)
                .unwrap();
        let kc = KeycloakClient::new(&config.keycloak).unwrap();
        let clone = kc.clone();
        assert!(kc.http.get().is_none(), "built before any request");
        assert!(kc.probe("demo").is_err(), "nobody listens on port 9");
        assert!(
            matches!(clone.http.get(), Some(Ok(_))),
            "not shared with the clone"
        );
    }

    /// Issue 7 point 6: a realm or id can never change the shape of a request path.
    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(
            endpoint("http://kc:8080/auth/", &["realms", "demo", "users"]),
            "http://kc:8080/auth/realms/demo/users"
        );
        assert_eq!(
            endpoint("http://kc", &["realms", "a/b?x=1#f%", "token"]),
            "http://kc/realms/a%2Fb%3Fx%3D1%23f%25/token"
        );
        assert_eq!(
            endpoint("http://kc", &["realms", "d\u{e9}mo x"]),
            "http://kc/realms/d%C3%A9mo%20x"
        );
    }

    #[test]
    fn the_password_credential_date_is_read_from_keycloaks_credential_list() {
        // The shape of GET /admin/realms/{realm}/users/{id}/credentials (Keycloak 26): no
        // secretData, credentialData as a JSON string, createdDate in epoch milliseconds.
        let body = r#"[
            {"id":"4e0c","type":"otp","userLabel":"phone","createdDate":1795888999000,"credentialData":"{}"},
            {"id":"9a1f","type":"password","createdDate":1795888351123,
             "credentialData":"{\"hashIterations\":5,\"algorithm\":\"argon2\",\"additionalParameters\":{}}"}
        ]"#;
        let creds: Vec<KcCredential> = serde_json::from_str(body).unwrap();
        assert_eq!(newest_password(&creds), Some(1_795_888_351_123));
        let none: Vec<KcCredential> =
            serde_json::from_str(r#"[{"id":"x","type":"otp","createdDate":5}]"#).unwrap();
        assert_eq!(newest_password(&none), None);
        assert_eq!(newest_password(&[]), None);
    }

    #[test]
    fn reads_realm_management_roles_from_a_token() {
        use base64::Engine;
        let enc = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let claims = serde_json::json!({"resource_access": {"realm-management": {"roles": ["view-users", "manage-users"]}}});
        let jwt = format!(
            "{}.{}.sig",
            enc(serde_json::json!({"alg": "RS256"})),
            enc(claims)
        );
        assert_eq!(
            realm_management_roles(&jwt),
            Some(vec!["view-users".to_string(), "manage-users".to_string()])
        );
        let none = format!(
            "{}.{}.sig",
            enc(serde_json::json!({})),
            enc(serde_json::json!({"sub": "x"}))
        );
        assert_eq!(realm_management_roles(&none), None);
        assert_eq!(realm_management_roles("not a jwt"), None);
    }

    /// Issue 14 point 6: the two 404s of the admin API (tests/fixtures/keycloak-answers.md,
    /// section n) are told apart.
    #[test]
    fn a_missing_user_and_a_missing_route_are_told_apart() {
        assert_eq!(
            user_route_404("credentials", &body("User not found", "")),
            KcError::Rejected(Rejection::UserNotFound)
        );
        for other in [
            "HTTP 404 Not Found",
            "Unable to find matching target resource method",
            "",
        ] {
            assert!(
                matches!(user_route_404("credentials", &body(other, "")), KcError::Misconfigured(m) if m.contains("credentials")),
                "{other}"
            );
        }
    }

    #[test]
    fn wrong_password_is_a_rejection_with_either_status() {
        for status in [StatusCode::UNAUTHORIZED, StatusCode::BAD_REQUEST] {
            assert_eq!(
                classify_token_error(
                    status,
                    &body("invalid_grant", "Invalid user credentials"),
                    "r"
                ),
                KcError::Rejected(Rejection::InvalidCredentials)
            );
        }
    }

    #[test]
    fn account_states_and_client_problems_are_told_apart() {
        let s = StatusCode::BAD_REQUEST;
        assert_eq!(
            classify_token_error(s, &body("invalid_grant", "Account disabled"), "r"),
            KcError::Rejected(Rejection::AccountDisabled)
        );
        assert_eq!(
            classify_token_error(
                s,
                &body("invalid_grant", "Account is not fully set up"),
                "r"
            ),
            KcError::Rejected(Rejection::AccountNotSetUp)
        );
        assert_eq!(
            classify_token_error(s, &body("invalid_grant", "Invalid refresh token"), "r"),
            KcError::Rejected(Rejection::InvalidRefreshToken)
        );
        assert!(matches!(
            classify_token_error(
                StatusCode::UNAUTHORIZED,
                &body(
                    "unauthorized_client",
                    "Invalid client or Invalid client credentials"
                ),
                "r"
            ),
            KcError::Misconfigured(_)
        ));
        assert!(matches!(
            classify_token_error(
                s,
                &body(
                    "unauthorized_client",
                    "Client not allowed for direct access grants"
                ),
                "r"
            ),
            KcError::Misconfigured(_)
        ));
        assert!(matches!(
            classify_token_error(StatusCode::NOT_FOUND, &body("Realm does not exist", ""), "nope"),
            KcError::Misconfigured(m) if m.contains("nope")
        ));
    }
}
