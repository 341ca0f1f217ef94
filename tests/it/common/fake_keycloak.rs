//! An in-process fake Keycloak 26 for hermetic tests.
//!
//! # Why it exists
//!
//! keycloak-resilient exists to keep logins working while Keycloak is down, slow or broken, and
//! to resynchronise it once it returns. Testing that needs two things a real Keycloak cannot give
//! on demand: failures of every kind (refused connections, a server that accepts and never
//! answers, a proxy's 5xx page, slowness), switched on and off in the middle of a test; and a
//! server that starts in milliseconds with no Java, no network and no shared state between tests.
//!
//! The fake is only worth having if the code under test cannot tell it from the real server, so
//! it answers with real Keycloak 26's status codes, error bodies and field names. The same
//! scenarios also run against a real Keycloak loaded with `tests/fixtures/realm-resilient-test.json`;
//! the fixture below (realm, clients, secrets, users, password policy) mirrors that file exactly.
//!
//! # Where the answers come from
//!
//! `tests/fixtures/keycloak-answers.md`, a transcript of a real Keycloak 26.7.3 loaded with the
//! fixture realm, is the reference: status codes, bodies, `Content-Type` and `Cache-Control`
//! here follow it. Cases it does not cover follow Keycloak's source (`ClientIdAndSecretAuthenticator`,
//! `ValidateUsername`, `UsersResource`, `UserResource`) and published measurements of 26.7.1.
//! Anything that disagrees with a real Keycloak and is not listed below is a bug here.
//!
//! Things worth knowing before writing a test against it (all as the real server does):
//! an unknown client is `401 invalid_client`, a wrong or missing secret `401
//! unauthorized_client`; "Account disabled" only once the password is right; a user missing
//! email, first or last name, or with a temporary password, gets "Account is not fully set
//! up"; no answer carries `WWW-Authenticate`; an unmatched path's 404 has no
//! `error_description`; refresh tokens are reusable and survive a password reset.
//! A user locked by the brute-force detector gets "Invalid user credentials" even with the
//! right password; a deleted user's id answers `404 {"error":"User not found"}`, a missing
//! route `404 {"error":"HTTP 404 Not Found"}`.
//!
//! # Controls
//!
//! Besides the admin API, tests change the realm directly: `add_user`, `disable_user`,
//! `enable_user`, `remove_user`, `set_required_action`, `clear_required_actions`,
//! `set_profile`, `set_brute_force_locked`, `set_client_secret`; the keys with
//! `add_signing_key`, `remove_signing_key`, `active_kid`, `sign_token`; failures with
//! `set_behavior`, `set_wrong_password_status`, `lose_reset_answers`.
//!
//! # Transport
//!
//! std only: a `TcpListener` on `127.0.0.1:0`, one thread per connection, hand-written
//! HTTP/1.1 (request line, headers, `Content-Length` or chunked body). Every answer carries
//! `Connection: close`, so clients never reuse a connection across a behaviour change.
//!
//! # Known differences from a real Keycloak
//!
//! - Wrong password and unknown user answer 401 by default, as Keycloak before 26.6 did
//!   (measured on 26.4.7); the 26.7.3 reference answers 400 (`set_wrong_password_status(400)`).
//!   A disabled user with a wrong password always gets `Invalid user credentials` (26.7.3);
//!   26.4.7 said `Account disabled`. Search results never carry 26.4.7's
//!   `userProfileMetadata`.
//! - `scope` is always `"profile email"`; the real server says that or `"email profile"`
//!   (the order is fixed per server start).
//! - Access and ID tokens are real RS256 JWTs (header `{"alg":"RS256","typ":"JWT","kid"}`,
//!   Keycloak's claims) signed by the realm's active key and verifiable with the JWKS at
//!   `jwks_uri` (`.../protocol/openid-connect/certs`: the signing keys, highest priority first,
//!   then an `enc` `RSA-OAEP` key; Keycloak's order varies between starts). The JWKS entries
//!   have `kid`, `kty`, `alg`, `use`, `n`, `e` but not Keycloak's `x5c`/`x5t`/`x5t#S256`.
//!   Refresh tokens are HS512-shaped with a random signature (Keycloak's HMAC key is private
//!   to the server anyway). Keys change only through the controls: no `components` or `keys`
//!   admin endpoints, no `userinfo`.
//! - Only `password`, `refresh_token`, `client_credentials` and (always failing)
//!   `authorization_code` grants exist; other grant types Keycloak knows (device, CIBA,
//!   token exchange, jwt-bearer, UMA) are answered `unsupported_grant_type`.
//! - No brute-force detector: a lock is set and lifted by `set_brute_force_locked` (or
//!   `DELETE attack-detection/brute-force/users/{id}`), never by failed logins. No sessions
//!   beyond refresh tokens, no security headers, no CORS.
//! - A wrong method on a known path answers `404 {"error":"HTTP 404 Not Found"}` except on the
//!   token endpoint (405, measured); Keycloak answers some others with 405 as well.
//! - `PUT` on a user ignores `username` (the realm has `editUsernameAllowed: false`).
//! - `GET /users/{id}/credentials` lists only the password credential, shaped as Keycloak's
//!   `CredentialRepresentation` (`id`, `type`, `createdDate` in epoch milliseconds, set anew by
//!   every reset; `credentialData` as a JSON string; never `secretData`, which Keycloak blanks).
//!   Not in the recorded transcript: from Keycloak's `UserResource.credentials()` and
//!   `JpaUserCredentialStore.updateCredential` (which copies the new `createdDate`); the live
//!   scenario `credentials_created_date_moves_on_reset` checks it against the real server.
//! - Not measured, from Keycloak's source or a guess: reset-password's
//!   `{"error":"No password provided"}` (no `value`), the refresh grant's `Session not active`
//!   (user deleted) and `User disabled`, a created user being disabled unless `enabled` is
//!   sent, service-account users appearing in filtered searches, and `PUT /users/{id}`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde_json::{json, Map, Value};

mod keys;

use keys::RealmKey;

/// The realm every fixture object lives in.
pub const REALM: &str = "resilient-test";
/// The realm's password policy, `length(8)`.
pub const MIN_PASSWORD_LENGTH: usize = 8;
/// `accessTokenLifespan` of the realm, seconds.
pub const ACCESS_TOKEN_LIFESPAN_SECS: u64 = 300;
/// `ssoSessionIdleTimeout` of the realm, seconds: what `refresh_expires_in` reports.
pub const SSO_SESSION_IDLE_SECS: u64 = 1800;

/// Confidential client with direct access grants: the one logins go through.
pub const WEBAPP_CLIENT_ID: &str = "webapp";
pub const WEBAPP_CLIENT_SECRET: &str = "webapp-test-secret";
/// Confidential client whose direct access grants are switched off.
pub const NO_DIRECT_GRANTS_CLIENT_ID: &str = "no-direct-grants";
pub const NO_DIRECT_GRANTS_CLIENT_SECRET: &str = "no-direct-test-secret";
/// Service-account client holding `manage-users` and `view-users`: the one sync uses.
pub const SYNC_CLIENT_ID: &str = "keycloak-resilient-sync";
pub const SYNC_CLIENT_SECRET: &str = "sync-test-secret";
/// Service-account client holding no admin role at all.
pub const NO_ADMIN_CLIENT_ID: &str = "no-admin-rights";
pub const NO_ADMIN_CLIENT_SECRET: &str = "no-admin-test-secret";

/// The fixture's people: (username, password, enabled).
pub const FIXTURE_USERS: &[(&str, &str, bool)] = &[
    ("alice", "Alice-Password-1", true),
    ("bob", "Bob-Password-1", true),
    ("carol", "Carol-Password-1", false),
    ("dave", "Dave-Password-1", true),
    ("erin", "Erin-Password-1", true),
];

/// Aliases of the required actions Keycloak 26 registers in a realm. Measured on 26.7.3:
/// `VERIFY_EMAIL`, `UPDATE_PASSWORD`, `UPDATE_PROFILE`, `CONFIGURE_TOTP` and
/// `TERMS_AND_CONDITIONS` block the password grant, an unknown name does not; the others
/// are from Keycloak's list of default required actions.
pub const KNOWN_REQUIRED_ACTIONS: &[&str] = &[
    "CONFIGURE_TOTP",
    "TERMS_AND_CONDITIONS",
    "UPDATE_PASSWORD",
    "UPDATE_PROFILE",
    "VERIFY_EMAIL",
    "VERIFY_PROFILE",
    "CONFIGURE_RECOVERY_AUTHN_CODES",
    "webauthn-register",
    "webauthn-register-passwordless",
    "delete_credential",
    "update_user_locale",
];

/// How often the accept loop looks for new connections or a stop request.
const ACCEPT_POLL: Duration = Duration::from_millis(5);
/// Read timeout on a connection, so its thread notices shutdown and behaviour changes.
const READ_POLL: Duration = Duration::from_millis(25);
/// Sleep step while hanging or being slow.
const WAIT_STEP: Duration = Duration::from_millis(10);
/// A connection that has not delivered a whole request by then is closed.
const IDLE_LIMIT: Duration = Duration::from_secs(30);
/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// How long `Drop` waits for connection threads to notice the stop flag.
const DRAIN_LIMIT: Duration = Duration::from_millis(800);
/// How long leaving `Behavior::Refuse` keeps trying to re-bind the port.
const REBIND_LIMIT: Duration = Duration::from_secs(3);

/// What the server does with the next connection or request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Answer like Keycloak.
    Normal,
    /// Nothing listens on the port: connections are refused (the listener is closed and
    /// re-bound on the same port when the behaviour changes again).
    Refuse,
    /// Accept and read requests, never answer. Held connections are closed, still
    /// unanswered, when the behaviour changes or the server is dropped.
    Hang,
    /// Answer every request with this status and a small HTML page, as a reverse proxy in
    /// front of a dead Keycloak does.
    Status(u16),
    /// Wait this long, then answer like Keycloak.
    Slow(Duration),
}

/// A running fake Keycloak. Dropping it stops every thread and frees the port.
pub struct FakeKeycloak {
    /// Everything the server threads share with the test.
    shared: Arc<Shared>,
    /// The accept loop, joined on drop.
    accept_thread: Option<JoinHandle<()>>,
}

impl FakeKeycloak {
    /// Starts a server on `127.0.0.1:<free port>` with the fixture loaded,
    /// `Behavior::Normal`, and wrong passwords answered 401 (Keycloak before 26.6).
    ///
    /// # Panics
    ///
    /// If no local port can be bound or no thread can be spawned.
    pub fn start() -> FakeKeycloak {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fake keycloak: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("fake keycloak: non-blocking listener");
        let port = listener
            .local_addr()
            .expect("fake keycloak: local address")
            .port();
        let shared = Arc::new(Shared {
            port,
            state: Mutex::new(State::fixture()),
            listener: Mutex::new(Some(listener)),
            control: Mutex::new(()),
            stop: AtomicBool::new(false),
            live_connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let for_thread = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name(format!("fake-keycloak-accept-{port}"))
            .spawn(move || accept_loop(&for_thread))
            .expect("fake keycloak: spawn accept thread");
        FakeKeycloak {
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    /// The server's base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.shared.port)
    }

    /// The port the server listens on (the same for its whole life).
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// The fixture realm, `resilient-test`.
    pub fn realm(&self) -> &'static str {
        REALM
    }

    /// Changes what the server does from now on. Switching to `Refuse` closes the listening
    /// socket before returning; switching away from it re-binds the same port before returning.
    ///
    /// # Panics
    ///
    /// If the port cannot be re-bound within a few seconds (another process took it).
    pub fn set_behavior(&self, behavior: Behavior) {
        let _serial = lock(&self.shared.control);
        lock(&self.shared.state).behavior = behavior;
        let mut listener = lock(&self.shared.listener);
        if behavior == Behavior::Refuse {
            drop(listener.take());
        } else if listener.is_none() {
            *listener = Some(rebind(self.shared.port));
        }
    }

    /// Status for a wrong password or unknown user on the password grant: 401 as Keycloak
    /// answered before 26.6, 400 as 26.6 and later do.
    pub fn set_wrong_password_status(&self, status: u16) {
        lock(&self.shared.state).wrong_password_status = status;
    }

    /// Creates a user, or updates the password and enabled flag of an existing one.
    /// The username is stored lowercase, as Keycloak does. A new user gets what the fixture
    /// users have (email `<username>@example.test`, first name, last name `Test`), without
    /// which Keycloak refuses the password grant with "Account is not fully set up".
    pub fn add_user(&self, username: &str, password: &str, enabled: bool) {
        let mut state = lock(&self.shared.state);
        let username = username.to_lowercase();
        if let Some(user) = state.users.iter_mut().find(|u| u.username == username) {
            user.set_password(password);
            user.enabled = enabled;
        } else {
            let mut user = User::new(&username);
            user.email = Some(format!("{username}@example.test"));
            user.first_name = Some(capitalise(&username));
            user.last_name = Some("Test".to_string());
            user.email_verified = true;
            user.set_password(password);
            user.enabled = enabled;
            state.users.push(user);
        }
    }

    /// The current password of a user (case-insensitive username), if the user exists and
    /// has one. Lets tests see what a sync wrote.
    pub fn password_of(&self, username: &str) -> Option<String> {
        let state = lock(&self.shared.state);
        state
            .user_by_name(username)
            .and_then(|u| u.password.clone())
    }

    /// Every password set through the admin API's reset-password for this user, in order
    /// (values, so tests can tell how often each change was applied).
    pub fn password_resets(&self, username: &str) -> Vec<String> {
        let state = lock(&self.shared.state);
        state
            .user_by_name(username)
            .map(|u| u.resets.clone())
            .unwrap_or_default()
    }

    /// The next `n` successful reset-password requests are applied but never answered: the
    /// connection is closed instead, as when the network fails after Keycloak did the work.
    pub fn lose_reset_answers(&self, n: usize) {
        lock(&self.shared.state).lose_reset_answers = n;
    }

    /// The Keycloak id of a user (case-insensitive username).
    pub fn user_id(&self, username: &str) -> Option<String> {
        let state = lock(&self.shared.state);
        state.user_by_name(username).map(|u| u.id.clone())
    }

    /// Changes a client's secret (tokens already issued stay valid, as in Keycloak). An
    /// unknown `client_id` becomes a new confidential client with direct access grants on
    /// and no service account.
    pub fn set_client_secret(&self, client_id: &str, secret: &str) {
        let mut state = lock(&self.shared.state);
        if let Some(client) = state.clients.iter_mut().find(|c| c.client_id == client_id) {
            client.secret = secret.to_string();
        } else {
            state.clients.push(Client {
                client_id: client_id.to_string(),
                secret: secret.to_string(),
                direct_grants: true,
                service_account_user: None,
                admin_roles: false,
            });
        }
    }

    /// How many requests reached the HTTP handler: every request read in full while the
    /// behaviour was not `Refuse`, whatever was answered (hung and `Status` ones included).
    pub fn request_count(&self) -> usize {
        lock(&self.shared.state).requests.len()
    }

    /// The most requests answered at once since the last call (which starts a new count).
    pub fn take_max_in_flight(&self) -> usize {
        self.shared.max_in_flight.swap(0, Ordering::SeqCst)
    }

    /// Those requests as `"METHOD /path"`, query strings stripped, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.state).requests.clone()
    }

    /// Runs `change` on a user (case-insensitive username); false if there is no such user.
    fn with_user(&self, username: &str, change: impl FnOnce(&mut User)) -> bool {
        let mut state = lock(&self.shared.state);
        let wanted = username.to_lowercase();
        match state.users.iter_mut().find(|u| u.username == wanted) {
            Some(user) => {
                change(user);
                true
            }
            None => false,
        }
    }

    /// Disables a user as `PUT users/{id} {"enabled":false}` does: the right password then
    /// gets 400 `Account disabled`, a wrong one the ordinary `Invalid user credentials`;
    /// refresh tokens answer 400 `User disabled`. False if there is no such user.
    pub fn disable_user(&self, username: &str) -> bool {
        self.with_user(username, |u| u.enabled = false)
    }

    /// Enables a user again (`PUT users/{id} {"enabled":true}`). False if there is no such user.
    pub fn enable_user(&self, username: &str) -> bool {
        self.with_user(username, |u| u.enabled = true)
    }

    /// Deletes a user as `DELETE users/{id}` does: its sessions and tokens end, logins get
    /// `Invalid user credentials`, `GET users/{old id}` answers 404 `User not found`.
    /// False if there is no such user.
    pub fn remove_user(&self, username: &str) -> bool {
        let Some(id) = self.user_id(username) else {
            return false;
        };
        delete_user(&mut lock(&self.shared.state), &id).status == 204
    }

    /// Adds a required action (`UPDATE_PASSWORD`, `VERIFY_EMAIL`, ...) as `PUT users/{id}
    /// {"requiredActions":[...]}` does: the right password then gets 400 `Account is not fully
    /// set up`, a wrong one `Invalid user credentials`. False if there is no such user.
    pub fn set_required_action(&self, username: &str, action: &str) -> bool {
        self.with_user(username, |u| {
            if !u.required_actions.iter().any(|a| a == action) {
                u.required_actions.push(action.to_string());
            }
        })
    }

    /// Removes every required action of a user. False if there is no such user.
    pub fn clear_required_actions(&self, username: &str) -> bool {
        self.with_user(username, |u| u.required_actions.clear())
    }

    /// Sets (`Some`) or removes (`None`) a user's email, first and last name. The realm's user
    /// profile wants all three: with any missing the right password gets 400 `Account is not
    /// fully set up`. False if there is no such user.
    pub fn set_profile(
        &self,
        username: &str,
        email: Option<&str>,
        first_name: Option<&str>,
        last_name: Option<&str>,
    ) -> bool {
        self.with_user(username, |u| {
            u.email = email.map(str::to_lowercase);
            u.first_name = first_name.map(str::to_string);
            u.last_name = last_name.map(str::to_string);
        })
    }

    /// Locks (`true`) or unlocks a user as the brute-force detector does after too many
    /// failures (temporary lockout): every password, right or wrong, then gets 400 `Invalid
    /// user credentials`, and `GET attack-detection/brute-force/users/{id}` says
    /// `"disabled":true`; `enabled` stays true. `DELETE` on that path unlocks. False if there
    /// is no such user.
    pub fn set_brute_force_locked(&self, username: &str, locked: bool) -> bool {
        self.with_user(username, |u| u.brute_force_locked = locked)
    }

    /// Adds an RS256 signing key with this priority (the realm's first key has 100), as
    /// creating an `rsa-generated` key provider through the admin API does, and returns its
    /// `kid`. With the highest priority
    /// it signs every token from now on; the other keys stay in the JWKS.
    pub fn add_signing_key(&self, priority: i64) -> String {
        let key = RealmKey::generate(priority);
        let kid = key.kid.clone();
        lock(&self.shared.state).signing_keys.push(key);
        kid
    }

    /// Removes a signing key from the realm and its JWKS (tokens it signed can no longer be
    /// verified). The last key cannot be removed: false then, or for an unknown `kid`.
    pub fn remove_signing_key(&self, kid: &str) -> bool {
        let mut state = lock(&self.shared.state);
        let before = state.signing_keys.len();
        if before < 2 {
            return false;
        }
        state.signing_keys.retain(|k| k.kid != kid);
        state.signing_keys.len() < before
    }

    /// `kid` of the key that signs tokens now.
    pub fn active_kid(&self) -> String {
        lock(&self.shared.state).active_key().kid.clone()
    }

    /// Signs any claims with the realm's active key, as Keycloak signs an access token: for
    /// tests that need an expired, wrong-issuer or otherwise odd token the realm really signed.
    pub fn sign_token(&self, claims: &Value) -> String {
        lock(&self.shared.state).sign(claims)
    }
}

impl Drop for FakeKeycloak {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        drop(lock(&self.shared.listener).take());
        if let Some(handle) = self.accept_thread.take() {
            let _ = handle.join();
        }
        let deadline = Instant::now() + DRAIN_LIMIT;
        while self.shared.live_connections.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state

/// What the test handle and the server threads share.
struct Shared {
    /// The port, kept across `Refuse` so the URL never changes.
    port: u16,
    /// Realm contents, behaviour and request log.
    state: Mutex<State>,
    /// The listening socket; `None` while refusing or after shutdown.
    listener: Mutex<Option<TcpListener>>,
    /// Serialises `set_behavior` so two callers cannot race on the listener.
    control: Mutex<()>,
    /// Set by `Drop`; every thread polls it.
    stop: AtomicBool,
    /// Connection threads still running, so `Drop` can wait for them briefly.
    live_connections: AtomicUsize,
    /// Requests being answered now, and the most at once since the last reset.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn behavior(&self) -> Behavior {
        lock(&self.state).behavior
    }
}

/// Locks a mutex, ignoring poisoning: one panicking test thread must not turn every later
/// request into a second panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct State {
    /// Current failure mode.
    behavior: Behavior,
    /// 401 (Keycloak < 26.6) or 400 (26.6+) for bad credentials on the password grant.
    wrong_password_status: u16,
    /// The realm's clients.
    clients: Vec<Client>,
    /// The realm's users, service-account users included.
    users: Vec<User>,
    /// Access tokens issued and not yet forgotten.
    access_tokens: HashMap<String, AccessGrant>,
    /// Refresh tokens issued and not yet forgotten.
    refresh_tokens: HashMap<String, RefreshGrant>,
    /// `"METHOD /path"` of every request handled.
    requests: Vec<String>,
    /// Successful resets still to leave unanswered (see `lose_reset_answers`).
    lose_reset_answers: usize,
    /// The realm's RS256 signing keys, in the order they were added.
    signing_keys: Vec<RealmKey>,
    /// The realm's `rsa-enc-generated` key: published, never used to sign.
    encryption_key: RealmKey,
}

struct Client {
    client_id: String,
    secret: String,
    /// `directAccessGrantsEnabled`: may use the password grant.
    direct_grants: bool,
    /// Id of the service-account user when `serviceAccountsEnabled`.
    service_account_user: Option<String>,
    /// Whether its service account holds realm-management `manage-users` + `view-users`.
    admin_roles: bool,
}

struct User {
    id: String,
    /// Always lowercase.
    username: String,
    /// Always lowercase.
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    enabled: bool,
    email_verified: bool,
    /// Plain text: this is a test double, and tests read it back with `password_of`.
    password: Option<String>,
    /// The password credential's (id, createdDate in epoch ms), while there is a password.
    password_credential: Option<(String, u64)>,
    /// Values set by reset-password, in order.
    resets: Vec<String>,
    /// Milliseconds since the epoch, as Keycloak reports it.
    created_timestamp: u64,
    /// Non-empty means the password grant answers "Account is not fully set up".
    required_actions: Vec<String>,
    /// `Some(client_id)` for a client's service-account user.
    service_account_client: Option<String>,
    /// Temporarily locked by the brute-force detector.
    brute_force_locked: bool,
}

impl User {
    /// Sets the password as Keycloak's `PasswordCredentialProvider` does: a new credential
    /// the first time, else the same credential id with a new `createdDate`.
    fn set_password(&mut self, value: &str) {
        self.password = Some(value.to_string());
        let id = self
            .password_credential
            .take()
            .map(|(id, _)| id)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        self.password_credential = Some((id, now_millis()));
    }

    fn new(username: &str) -> User {
        User {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.to_lowercase(),
            email: None,
            first_name: None,
            last_name: None,
            enabled: false,
            email_verified: false,
            password: None,
            password_credential: None,
            resets: Vec::new(),
            created_timestamp: now_millis(),
            required_actions: Vec::new(),
            service_account_client: None,
            brute_force_locked: false,
        }
    }
}

/// Who an access token speaks for.
#[derive(Clone)]
enum Subject {
    /// A person, by user id (password or refresh grant).
    User(String),
    /// A client's service account, by client id (client-credentials grant).
    ServiceAccount(String),
}

struct AccessGrant {
    subject: Subject,
    expires: Instant,
}

struct RefreshGrant {
    user_id: String,
    client_id: String,
    session_state: String,
    expires: Instant,
}

impl State {
    /// The realm as `tests/fixtures/realm-resilient-test.json` describes it.
    fn fixture() -> State {
        let mut state = State {
            behavior: Behavior::Normal,
            wrong_password_status: 401,
            clients: Vec::new(),
            users: Vec::new(),
            access_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            requests: Vec::new(),
            lose_reset_answers: 0,
            signing_keys: vec![RealmKey::initial_signing()],
            encryption_key: RealmKey::initial_encryption(),
        };
        for &(name, password, enabled) in FIXTURE_USERS {
            let mut user = User::new(name);
            user.email = Some(format!("{name}@example.test"));
            user.first_name = Some(capitalise(name));
            user.last_name = Some("Test".to_string());
            user.enabled = enabled;
            user.email_verified = true;
            user.set_password(password);
            state.users.push(user);
        }
        let clients = [
            (WEBAPP_CLIENT_ID, WEBAPP_CLIENT_SECRET, true, false, false),
            (
                NO_DIRECT_GRANTS_CLIENT_ID,
                NO_DIRECT_GRANTS_CLIENT_SECRET,
                false,
                false,
                false,
            ),
            (SYNC_CLIENT_ID, SYNC_CLIENT_SECRET, false, true, true),
            (
                NO_ADMIN_CLIENT_ID,
                NO_ADMIN_CLIENT_SECRET,
                false,
                true,
                false,
            ),
        ];
        for (client_id, secret, direct_grants, service_account, admin_roles) in clients {
            let service_account_user = service_account.then(|| {
                let mut user = User::new(&format!("service-account-{client_id}"));
                user.enabled = true;
                user.service_account_client = Some(client_id.to_string());
                let id = user.id.clone();
                state.users.push(user);
                id
            });
            state.clients.push(Client {
                client_id: client_id.to_string(),
                secret: secret.to_string(),
                direct_grants,
                service_account_user,
                admin_roles,
            });
        }
        state
    }

    /// The key that signs: highest priority, the earliest added among equals.
    fn active_key(&self) -> &RealmKey {
        let mut active = &self.signing_keys[0];
        for key in &self.signing_keys[1..] {
            if key.priority > active.priority {
                active = key;
            }
        }
        active
    }

    /// Signs claims with the active key (RS256), as Keycloak signs access and ID tokens.
    fn sign(&self, claims: &Value) -> String {
        self.active_key().sign_jwt(claims)
    }

    fn client(&self, client_id: &str) -> Option<&Client> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }

    fn user_by_name(&self, username: &str) -> Option<&User> {
        let wanted = username.to_lowercase();
        self.users.iter().find(|u| u.username == wanted)
    }

    fn user_by_id(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    /// What the password grant looks up: username, else email (`loginWithEmailAllowed`).
    fn user_for_login(&self, login: &str) -> Option<&User> {
        let wanted = login.to_lowercase();
        self.users
            .iter()
            .find(|u| u.username == wanted)
            .or_else(|| {
                self.users
                    .iter()
                    .find(|u| u.email.as_deref() == Some(wanted.as_str()))
            })
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn now_secs() -> u64 {
    now_millis() / 1000
}

// ---------------------------------------------------------------------------------------------
// Sockets and threads

/// Binds the port again after `Refuse`, retrying while something briefly holds it.
fn rebind(port: u16) -> TcpListener {
    let deadline = Instant::now() + REBIND_LIMIT;
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => {
                listener
                    .set_nonblocking(true)
                    .expect("fake keycloak: non-blocking listener");
                return listener;
            }
            Err(e) if Instant::now() >= deadline => {
                panic!("fake keycloak: could not re-bind 127.0.0.1:{port}: {e}")
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn accept_loop(shared: &Arc<Shared>) {
    while !shared.stopped() {
        let accepted = match lock(&shared.listener).as_ref() {
            Some(listener) => listener.accept().map(Some),
            None => Ok(None),
        };
        match accepted {
            Ok(Some((stream, _))) => spawn_connection(shared, stream),
            Ok(None) => thread::sleep(ACCEPT_POLL),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // WouldBlock (nothing pending) or a transient accept error.
            Err(_) => thread::sleep(ACCEPT_POLL),
        }
    }
}

/// Decrements the live-connection count when a connection thread ends, however it ends.
struct LiveConnection(Arc<Shared>);

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.0.live_connections.fetch_sub(1, Ordering::SeqCst);
    }
}

fn spawn_connection(shared: &Arc<Shared>, stream: TcpStream) {
    shared.live_connections.fetch_add(1, Ordering::SeqCst);
    let live = LiveConnection(Arc::clone(shared));
    let spawned = thread::Builder::new()
        .name("fake-keycloak-conn".to_string())
        .spawn(move || {
            let live = live;
            serve_connection(&live.0, stream);
        });
    // On spawn failure the closure (and with it the guard and the stream) is dropped.
    drop(spawned);
}

fn serve_connection(shared: &Shared, mut stream: TcpStream) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(READ_POLL)).is_err()
        || stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .is_err()
    {
        return;
    }
    let Some(request) = read_request(shared, &mut stream) else {
        return;
    };
    let behavior = {
        let mut state = lock(&shared.state);
        if state.behavior == Behavior::Refuse {
            // Accepted just before the listener closed: behave like the refused port.
            return;
        }
        state
            .requests
            .push(format!("{} {}", request.method, request.path));
        state.behavior
    };
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    struct Answered<'a>(&'a AtomicUsize);
    impl Drop for Answered<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _answered = Answered(&shared.in_flight);
    let response = match behavior {
        Behavior::Refuse => return,
        Behavior::Hang => {
            while !shared.stopped() && shared.behavior() == Behavior::Hang {
                thread::sleep(WAIT_STEP);
            }
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        Behavior::Status(code) => Response::proxy_error(code),
        Behavior::Slow(delay) => {
            let until = Instant::now() + delay;
            while Instant::now() < until {
                if shared.stopped() {
                    return;
                }
                thread::sleep(WAIT_STEP.min(until.saturating_duration_since(Instant::now())));
            }
            handle(shared, &request)
        }
        Behavior::Normal => handle(shared, &request),
    };
    if response.lost {
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    write_response(&mut stream, &response);
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1, the minimum

struct Request {
    method: String,
    /// Path without the query string, as sent (not percent-decoded).
    path: String,
    /// Raw query string, without the `?`.
    query: String,
    /// Header names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request; `None` when the peer goes away, sends garbage, stays silent too long,
/// or the server is stopping.
fn read_request(shared: &Shared, stream: &mut TcpStream) -> Option<Request> {
    let deadline = Instant::now() + IDLE_LIMIT;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        read_more(shared, stream, &mut buf, deadline)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
    let mut lines = head.split("\r\n");
    let mut parts = lines.next()?.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let chunked =
        header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        loop {
            if let Some(body) = decode_chunked(&buf[head_end..]) {
                break body;
            }
            if buf.len() - head_end > MAX_BODY {
                return None;
            }
            read_more(shared, stream, &mut buf, deadline)?;
        }
    } else {
        let length: usize = match header("content-length") {
            Some(v) => v.parse().ok()?,
            None => 0,
        };
        if length > MAX_BODY {
            return None;
        }
        while buf.len() < head_end + length {
            read_more(shared, stream, &mut buf, deadline)?;
        }
        buf[head_end..head_end + length].to_vec()
    };
    // Absolute-form targets (`http://host/path`) are reduced to their path.
    let target = match target.strip_prefix("http://") {
        Some(rest) => rest
            .find('/')
            .map_or_else(|| "/".to_string(), |i| rest[i..].to_string()),
        None => target,
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    Some(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

/// Appends whatever the peer sends next; `None` on EOF, error, deadline or shutdown.
fn read_more(
    shared: &Shared,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Option<()> {
    let mut chunk = [0u8; 8192];
    loop {
        if shared.stopped() || Instant::now() >= deadline {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Some(());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return None,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a complete chunked body; `None` while more bytes are needed.
fn decode_chunked(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            // Trailers end with an empty line.
            return find(data, b"\r\n").map(|_| body);
        }
        if data.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

struct Response {
    status: u16,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Close the connection instead of answering (`lose_reset_answers`).
    lost: bool,
}

impl Response {
    /// JSON as the protocol endpoints and every error send it: plain `application/json`.
    fn json(status: u16, body: &Value) -> Response {
        Response {
            status,
            content_type: Some("application/json"),
            headers: Vec::new(),
            body: body.to_string().into_bytes(),
            lost: false,
        }
    }

    /// A successful admin API read: Keycloak adds the charset there.
    fn admin_json(body: &Value) -> Response {
        Response {
            content_type: Some("application/json;charset=UTF-8"),
            ..Response::json(200, body)
        }
    }

    fn empty(status: u16) -> Response {
        Response {
            status,
            content_type: None,
            headers: Vec::new(),
            body: Vec::new(),
            lost: false,
        }
    }

    /// `{"error": message}`: Keycloak's shape for prose errors.
    fn error(status: u16, message: &str) -> Response {
        Response::json(status, &json!({ "error": message }))
    }

    /// `{"error", "error_description"}`: the OAuth 2 shape.
    fn oauth(status: u16, error: &str, description: &str) -> Response {
        Response::json(
            status,
            &json!({ "error": error, "error_description": description }),
        )
    }

    /// `{"errorMessage": message}`: the admin API's validation shape.
    fn error_message(status: u16, message: &str) -> Response {
        Response::json(status, &json!({ "errorMessage": message }))
    }

    /// What a reverse proxy answers when the backend is gone.
    fn proxy_error(status: u16) -> Response {
        Response {
            status,
            content_type: Some("text/html"),
            headers: Vec::new(),
            body: b"<html><body>Error</body></html>".to_vec(),
            lost: false,
        }
    }

    fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }
}

fn write_response(stream: &mut TcpStream, response: &Response) {
    // Writing into a String cannot fail.
    let mut head = String::new();
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason_phrase(response.status)
    );
    if let Some(content_type) = response.content_type {
        let _ = write!(head, "Content-Type: {content_type}\r\n");
    }
    for (name, value) in &response.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let _ = write!(
        head,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        response.body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&response.body);
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Write);
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

// ---------------------------------------------------------------------------------------------
// Encodings

/// `application/x-www-form-urlencoded` or a query string, decoded, in order.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(text: &str) -> Params {
        Params(
            text.split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (url_decode(k), url_decode(v))
                })
                .collect(),
        )
    }

    /// First value, as JAX-RS `getFirst` does.
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

/// Decodes `+` and `%XX`; a malformed escape is kept literally.
fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// base64url without padding, as JWT segments use.
fn base64url(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            let c = BASE64[((n >> (18 - 6 * i)) & 63) as usize];
            out.push(match c {
                b'+' => '-',
                b'/' => '_',
                c => char::from(c),
            });
        }
    }
    out
}

/// Standard or url-safe base64, padding optional.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.trim().bytes().take_while(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// `Authorization: Basic` as RFC 6749 §2.3.1 wants it: both halves form-urlencoded.
fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(encoded)?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((url_decode(id), url_decode(secret)))
}

fn bearer_token(request: &Request) -> Option<&str> {
    let (scheme, token) = request.header("authorization")?.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A string shaped like a signed JWT: real header and claims, random "signature".
fn jwt_like(alg: &str, claims: &Value) -> String {
    let header = json!({ "alg": alg, "typ": "JWT", "kid": "fake-keycloak" });
    let mut signature = [0u8; 64];
    rand::rng().fill(&mut signature[..]);
    format!(
        "{}.{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes()),
        base64url(&signature)
    )
}

/// A session id as 26.7 prints it: 24 base64url characters (older versions used a UUID).
fn session_id() -> String {
    let mut bytes = [0u8; 18];
    rand::rng().fill(&mut bytes[..]);
    base64url(&bytes)
}

// ---------------------------------------------------------------------------------------------
// Routing

fn handle(shared: &Shared, request: &Request) -> Response {
    let base = match request.header("host") {
        Some(host) if !host.is_empty() => format!("http://{host}"),
        _ => format!("http://127.0.0.1:{}", shared.port),
    };
    let path = request.path.trim_start_matches('/');
    let segments: Vec<&str> = path.split('/').collect();
    let mut state = lock(&shared.state);
    match segments.as_slice() {
        ["realms", realm, rest @ ..] if !realm.is_empty() => {
            realm_endpoints(&mut state, request, &base, realm, rest)
        }
        ["admin", "realms", realm, rest @ ..] if !realm.is_empty() => {
            admin_endpoints(&mut state, request, &base, realm, rest)
        }
        // Measured on 26.7.3: the admin console's resource owns `/admin/*`.
        ["admin", other, ..] if *other != "realms" => {
            Response::error(405, "HTTP 405 Method Not Allowed")
        }
        _ => Response::error(404, "Unable to find matching target resource method"),
    }
}

fn realm_endpoints(
    state: &mut State,
    request: &Request,
    base: &str,
    realm: &str,
    rest: &[&str],
) -> Response {
    if realm != REALM {
        return Response::error(404, "Realm does not exist");
    }
    let issuer = format!("{base}/realms/{REALM}");
    match (request.method.as_str(), rest) {
        ("GET", [] | [""]) => {
            let info = json!({
                "realm": REALM,
                "public_key": "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAfakeKeycloakKeyNotUsable",
                "token-service": format!("{issuer}/protocol/openid-connect"),
                "account-service": format!("{issuer}/account"),
                "tokens-not-before": 0,
            });
            Response::admin_json(&info)
        }
        ("GET", [".well-known", "openid-configuration"]) => {
            Response::json(200, &discovery_document(&issuer)).with_header(
                "Cache-Control",
                "no-cache, must-revalidate, no-transform, no-store".to_string(),
            )
        }
        ("GET", ["protocol", "openid-connect", "certs"]) => {
            // Measured on 26.7.3: the highest priority first.
            let mut signing: Vec<&RealmKey> = state.signing_keys.iter().collect();
            signing.sort_by_key(|k| std::cmp::Reverse(k.priority));
            let mut keys: Vec<Value> = signing.iter().map(|k| k.jwk("sig")).collect();
            keys.push(state.encryption_key.jwk("enc"));
            Response::json(200, &json!({ "keys": keys }))
                .with_header("Cache-Control", "no-cache".to_string())
        }
        ("POST", ["protocol", "openid-connect", "token"]) => {
            // Measured: every token-endpoint answer, error or not, says `no-store`.
            token_endpoint(state, request, &issuer)
                .with_header("Cache-Control", "no-store".to_string())
        }
        (_, ["protocol", "openid-connect", "token"]) => {
            Response::error(405, "HTTP 405 Method Not Allowed")
        }
        (_, ["protocol", protocol, ..]) if *protocol != "openid-connect" && *protocol != "saml" => {
            Response::error(404, "Protocol not found")
        }
        _ => Response::error(404, "HTTP 404 Not Found"),
    }
}

fn discovery_document(issuer: &str) -> Value {
    let oidc = format!("{issuer}/protocol/openid-connect");
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{oidc}/auth"),
        "token_endpoint": format!("{oidc}/token"),
        "introspection_endpoint": format!("{oidc}/token/introspect"),
        "userinfo_endpoint": format!("{oidc}/userinfo"),
        "end_session_endpoint": format!("{oidc}/logout"),
        "frontchannel_logout_session_supported": true,
        "frontchannel_logout_supported": true,
        "jwks_uri": format!("{oidc}/certs"),
        "check_session_iframe": format!("{oidc}/login-status-iframe.html"),
        "grant_types_supported": [
            "authorization_code", "client_credentials", "implicit", "password", "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code",
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "urn:ietf:params:oauth:grant-type:uma-ticket",
            "urn:openid:params:grant-type:ciba"
        ],
        "response_types_supported": [
            "code", "none", "id_token", "token", "id_token token", "code id_token",
            "code token", "code id_token token"
        ],
        "subject_types_supported": ["public", "pairwise"],
        "id_token_signing_alg_values_supported": [
            "PS384", "RS384", "EdDSA", "ES384", "HS256", "HS512", "ES256", "RS256", "HS384",
            "ES512", "PS256", "PS512", "RS512"
        ],
        "token_endpoint_auth_methods_supported": [
            "private_key_jwt", "client_secret_basic", "client_secret_post", "tls_client_auth",
            "client_secret_jwt"
        ],
        "scopes_supported": [
            "openid", "roles", "acr", "service_account", "email", "organization",
            "offline_access", "microprofile-jwt", "phone", "web-origins", "basic", "profile",
            "address"
        ],
        "claims_parameter_supported": true,
        "request_parameter_supported": true,
        "request_uri_parameter_supported": true,
        "require_request_uri_registration": true,
        "code_challenge_methods_supported": ["plain", "S256"],
        "tls_client_certificate_bound_access_tokens": true,
        "revocation_endpoint": format!("{oidc}/revoke"),
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        "device_authorization_endpoint": format!("{oidc}/auth/device"),
        "require_pushed_authorization_requests": false,
        "pushed_authorization_request_endpoint": format!("{oidc}/ext/par/request"),
        "authorization_response_iss_parameter_supported": true
    })
}

// ---------------------------------------------------------------------------------------------
// Token endpoint

fn token_endpoint(state: &mut State, request: &Request, issuer: &str) -> Response {
    let form = Params::parse(&String::from_utf8_lossy(&request.body));
    // Keycloak checks the grant type before it authenticates the client.
    let Some(grant_type) = form.get("grant_type") else {
        return Response::oauth(400, "invalid_request", "Missing form parameter: grant_type");
    };
    let grant_type = grant_type.to_string();
    if !matches!(
        grant_type.as_str(),
        "password" | "refresh_token" | "client_credentials" | "authorization_code"
    ) {
        return Response::oauth(400, "unsupported_grant_type", "Unsupported grant_type");
    }
    let client_id = match authenticate_client(state, request, &form) {
        Ok(client_id) => client_id,
        Err(response) => return response,
    };
    match grant_type.as_str() {
        "password" => password_grant(state, &form, &client_id, issuer),
        "refresh_token" => refresh_grant(state, &form, &client_id, issuer),
        "client_credentials" => client_credentials_grant(state, &client_id, issuer),
        _ => match form.get("code") {
            None => Response::oauth(400, "invalid_request", "Missing parameter: code"),
            Some(_) => Response::oauth(400, "invalid_grant", "Code not valid"),
        },
    }
}

/// Keycloak's `ClientIdAndSecretAuthenticator`: HTTP Basic or form parameters, the form
/// winning when both are present.
fn authenticate_client(
    state: &State,
    request: &Request,
    form: &Params,
) -> Result<String, Response> {
    let mut client_id = None;
    let mut secret = None;
    if let Some(header) = request.header("authorization") {
        if let Some((id, pass)) = parse_basic(header) {
            client_id = Some(id);
            secret = Some(pass);
        } else if !form.contains("client_id") {
            return Err(Response::empty(401)
                .with_header("WWW-Authenticate", format!("Basic realm=\"{REALM}\"")));
        }
    }
    if let Some(id) = form.get("client_id") {
        client_id = Some(id.to_string());
    }
    if let Some(pass) = form.get("client_secret") {
        secret = Some(pass.to_string());
    }
    let Some(client_id) = client_id else {
        return Err(Response::oauth(
            400,
            "invalid_client",
            "Missing client_id parameter",
        ));
    };
    let Some(client) = state.client(&client_id) else {
        // Measured on 26.7.1: an unknown client is `invalid_client`, a wrong secret
        // `unauthorized_client`, with the same description.
        return Err(Response::oauth(
            401,
            "invalid_client",
            "Invalid client or Invalid client credentials",
        ));
    };
    if secret.as_deref() != Some(client.secret.as_str()) {
        return Err(Response::oauth(
            401,
            "unauthorized_client",
            "Invalid client or Invalid client credentials",
        ));
    }
    Ok(client_id)
}

fn password_grant(state: &mut State, form: &Params, client_id: &str, issuer: &str) -> Response {
    let direct_grants = state.client(client_id).is_some_and(|c| c.direct_grants);
    if !direct_grants {
        return Response::oauth(
            400,
            "unauthorized_client",
            "Client not allowed for direct access grants",
        );
    }
    let Some(login) = form.get("username") else {
        return Response::oauth(401, "invalid_request", "Missing parameter: username");
    };
    let bad_credentials = Response::oauth(
        state.wrong_password_status,
        "invalid_grant",
        "Invalid user credentials",
    );
    let Some(user) = state.user_for_login(login) else {
        return bad_credentials;
    };
    if user.service_account_client.is_some() {
        return bad_credentials;
    }
    // Measured on 26.7.3: a user locked by the brute-force detector gets the ordinary answer,
    // whether the password is right or wrong.
    if user.brute_force_locked {
        return bad_credentials;
    }
    // Measured on 26.7.3: a disabled user with a wrong password gets the ordinary answer;
    // "Account disabled" only once the password is right.
    if user.password.is_none() || user.password.as_deref() != form.get("password") {
        return bad_credentials;
    }
    if !user.enabled {
        return Response::oauth(400, "invalid_grant", "Account disabled");
    }
    // The realm's user profile requires email, first and last name: a user without them, or
    // with a required action Keycloak knows (a temporary password, VERIFY_EMAIL, ...), cannot
    // use the password grant. Measured on 26.7.3: an unknown action name is ignored.
    let incomplete = user.email.is_none() || user.first_name.is_none() || user.last_name.is_none();
    let pending = user
        .required_actions
        .iter()
        .any(|a| KNOWN_REQUIRED_ACTIONS.contains(&a.as_str()));
    if incomplete || pending {
        return Response::oauth(400, "invalid_grant", "Account is not fully set up");
    }
    let user_id = user.id.clone();
    let openid = form
        .get("scope")
        .is_some_and(|s| s.split(' ').any(|w| w == "openid"));
    let session_state = session_id();
    issue_user_tokens(state, &user_id, client_id, &session_state, openid, issuer)
}

fn refresh_grant(state: &mut State, form: &Params, client_id: &str, issuer: &str) -> Response {
    let Some(token) = form.get("refresh_token") else {
        return Response::oauth(400, "invalid_request", "No refresh token");
    };
    let invalid = || Response::oauth(400, "invalid_grant", "Invalid refresh token");
    let Some(grant) = state.refresh_tokens.get(token) else {
        return invalid();
    };
    if grant.expires < Instant::now() {
        return invalid();
    }
    if grant.client_id != client_id {
        return Response::oauth(
            400,
            "invalid_grant",
            "Invalid refresh token. Token client and authorized client don't match",
        );
    }
    let (user_id, session_state) = (grant.user_id.clone(), grant.session_state.clone());
    match state.user_by_id(&user_id) {
        None => return Response::oauth(400, "invalid_grant", "Session not active"),
        Some(user) if !user.enabled => {
            return Response::oauth(400, "invalid_grant", "User disabled")
        }
        Some(_) => {}
    }
    // Keycloak does not revoke refresh tokens on use by default: the old one stays valid.
    issue_user_tokens(state, &user_id, client_id, &session_state, false, issuer)
}

fn client_credentials_grant(state: &mut State, client_id: &str, issuer: &str) -> Response {
    let Some((service_user_id, admin_roles)) = state
        .client(client_id)
        .and_then(|c| Some((c.service_account_user.clone()?, c.admin_roles)))
    else {
        return Response::oauth(
            401,
            "unauthorized_client",
            "Client not enabled to retrieve service account",
        );
    };
    let now = now_secs();
    // Claims as 26.7.3 issues them; `aud` and `resource_access` only with admin roles.
    let mut claims = json!({
        "exp": now + ACCESS_TOKEN_LIFESPAN_SECS,
        "iat": now,
        "jti": format!("trrtcc:{}", uuid::Uuid::new_v4()),
        "iss": issuer,
        "sub": service_user_id,
        "typ": "Bearer",
        "azp": client_id,
        "acr": "1",
        "scope": "profile email",
        "email_verified": false,
        "preferred_username": format!("service-account-{client_id}"),
    });
    if admin_roles {
        claims["aud"] = json!("realm-management");
        claims["resource_access"] = json!({
            "realm-management": {
                "roles": ["manage-users", "view-users", "query-groups", "query-users"]
            }
        });
    }
    let access_token = state.sign(&claims);
    state.access_tokens.insert(
        access_token.clone(),
        AccessGrant {
            subject: Subject::ServiceAccount(client_id.to_string()),
            expires: Instant::now() + Duration::from_secs(ACCESS_TOKEN_LIFESPAN_SECS),
        },
    );
    token_response(&json!({
        "access_token": access_token,
        "expires_in": ACCESS_TOKEN_LIFESPAN_SECS,
        "refresh_expires_in": 0,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "scope": "profile email",
    }))
}

fn issue_user_tokens(
    state: &mut State,
    user_id: &str,
    client_id: &str,
    session_state: &str,
    openid: bool,
    issuer: &str,
) -> Response {
    let Some(user) = state.user_by_id(user_id) else {
        return Response::oauth(400, "invalid_grant", "Session not active");
    };
    let now = now_secs();
    let scope = if openid {
        "openid profile email"
    } else {
        "profile email"
    };
    let mut access_claims = json!({
        "exp": now + ACCESS_TOKEN_LIFESPAN_SECS,
        "iat": now,
        "jti": format!("onrtro:{}", uuid::Uuid::new_v4()),
        "iss": issuer,
        "sub": user.id,
        "typ": "Bearer",
        "azp": client_id,
        "sid": session_state,
        "acr": "1",
        "scope": scope,
        "email_verified": user.email_verified,
        "preferred_username": user.username,
    });
    if let (Some(first), Some(last)) = (&user.first_name, &user.last_name) {
        access_claims["name"] = json!(format!("{first} {last}"));
        access_claims["given_name"] = json!(first);
        access_claims["family_name"] = json!(last);
    }
    if let Some(email) = &user.email {
        access_claims["email"] = json!(email);
    }
    let refresh_claims = json!({
        "exp": now + SSO_SESSION_IDLE_SECS,
        "iat": now,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iss": issuer,
        "aud": issuer,
        "sub": user.id,
        "typ": "Refresh",
        "azp": client_id,
        "sid": session_state,
        "scope": "openid email acr roles basic web-origins profile",
    });
    let id_claims = json!({
        "exp": now + ACCESS_TOKEN_LIFESPAN_SECS,
        "iat": now,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iss": issuer,
        "aud": client_id,
        "sub": user.id,
        "typ": "ID",
        "azp": client_id,
        "sid": session_state,
        "preferred_username": user.username,
    });
    let access_token = state.sign(&access_claims);
    let refresh_token = jwt_like("HS512", &refresh_claims);
    state.access_tokens.insert(
        access_token.clone(),
        AccessGrant {
            subject: Subject::User(user_id.to_string()),
            expires: Instant::now() + Duration::from_secs(ACCESS_TOKEN_LIFESPAN_SECS),
        },
    );
    state.refresh_tokens.insert(
        refresh_token.clone(),
        RefreshGrant {
            user_id: user_id.to_string(),
            client_id: client_id.to_string(),
            session_state: session_state.to_string(),
            expires: Instant::now() + Duration::from_secs(SSO_SESSION_IDLE_SECS),
        },
    );
    let mut body = json!({
        "access_token": access_token,
        "expires_in": ACCESS_TOKEN_LIFESPAN_SECS,
        "refresh_expires_in": SSO_SESSION_IDLE_SECS,
        "refresh_token": refresh_token,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "session_state": session_state,
        "scope": scope,
    });
    if openid {
        body["id_token"] = json!(state.sign(&id_claims));
    }
    token_response(&body)
}

fn token_response(body: &Value) -> Response {
    Response::json(200, body)
}

// ---------------------------------------------------------------------------------------------
// Admin API

fn admin_endpoints(
    state: &mut State,
    request: &Request,
    base: &str,
    realm: &str,
    rest: &[&str],
) -> Response {
    // Measured on 26.7.1: no WWW-Authenticate on the admin API's 401, and the same answer
    // for a missing header and a token Keycloak does not accept.
    let subject = bearer_token(request)
        .and_then(|token| state.access_tokens.get(token))
        .filter(|grant| grant.expires > Instant::now())
        .map(|grant| grant.subject.clone());
    let Some(subject) = subject else {
        return Response::error(401, "HTTP 401 Unauthorized");
    };
    if realm != REALM {
        return Response::error(404, "Realm not found.");
    }
    let may_manage_users = match &subject {
        Subject::ServiceAccount(client_id) => {
            state.client(client_id).is_some_and(|c| c.admin_roles)
        }
        // No fixture user holds a realm-management role.
        Subject::User(_) => false,
    };
    let forbidden = || Response::error(403, "HTTP 403 Forbidden");
    // JAX-RS picks the resource method by `@Consumes` before the method checks permissions,
    // so a write without a JSON body is 415 even for a caller who would get 403.
    let unsupported = || {
        Response::error(
            415,
            "The content-type header value did not match the value in @Consumes",
        )
    };
    let json_sent = request
        .header("content-type")
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    let method = request.method.as_str();
    match (method, rest) {
        ("GET", ["users"]) if may_manage_users => {
            search_users(state, &Params::parse(&request.query))
        }
        ("POST", ["users"]) if !json_sent => unsupported(),
        ("POST", ["users"]) if may_manage_users => create_user(state, request, base),
        ("GET", ["users", "count"]) if may_manage_users => {
            let count = matching_users(state, &Params::parse(&request.query)).len();
            admin_ok(&json!(count))
        }
        ("GET" | "POST", ["users"] | ["users", "count"]) => forbidden(),
        ("GET" | "DELETE", ["attack-detection", "brute-force", "users", id]) => {
            brute_force_status(state, method, id, may_manage_users)
        }
        (_, ["users", id, tail @ ..]) => {
            // `UsersResource.user(id)` answers for a missing user before any method runs:
            // 404 to a caller allowed to query users, 403 to anyone else.
            if state.user_by_id(id).is_none() {
                return if may_manage_users {
                    Response::error(404, "User not found")
                } else {
                    forbidden()
                };
            }
            match (method, tail) {
                ("PUT", [] | ["reset-password"]) if !json_sent => unsupported(),
                ("GET" | "PUT" | "DELETE", [])
                | ("PUT", ["reset-password"])
                | ("GET", ["credentials"])
                    if !may_manage_users =>
                {
                    forbidden()
                }
                ("GET", []) => match state.user_by_id(id) {
                    Some(user) => admin_ok(&user_representation(user, true)),
                    None => Response::error(404, "User not found"),
                },
                ("PUT", []) => update_user(state, request, id),
                ("DELETE", []) => delete_user(state, id),
                ("PUT", ["reset-password"]) => reset_password(state, request, id),
                ("GET", ["credentials"]) => match state.user_by_id(id) {
                    Some(user) => admin_ok(&credentials_representation(user)),
                    None => Response::error(404, "User not found"),
                },
                _ => Response::error(404, "HTTP 404 Not Found"),
            }
        }
        _ => Response::error(404, "HTTP 404 Not Found"),
    }
}

/// `GET /users/{id}/credentials`: Keycloak's `CredentialRepresentation` list, secrets blanked
/// (the hash parameters are those of Keycloak 26's default argon2 provider).
fn credentials_representation(user: &User) -> Value {
    let Some((id, created)) = &user.password_credential else {
        return json!([]);
    };
    let credential_data = json!({
        "hashIterations": 5,
        "algorithm": "argon2",
        "additionalParameters": {
            "hashLength": ["32"], "memory": ["7168"], "type": ["id"], "version": ["1.3"],
            "parallelism": ["1"]
        }
    });
    json!([{
        "id": id,
        "type": "password",
        "createdDate": created,
        "credentialData": credential_data.to_string(),
    }])
}

/// A successful admin API read, with the headers 26.7.3 sends.
fn admin_ok(body: &Value) -> Response {
    Response::admin_json(body).with_header("Cache-Control", "no-cache".to_string())
}

/// A `UserRepresentation`. `single` is the `GET /users/{id}` form, whose `access` block is
/// fuller than the one in search results (both measured on 26.7.3).
fn user_representation(user: &User, single: bool) -> Value {
    let mut rep = Map::new();
    rep.insert("id".into(), json!(user.id));
    rep.insert("username".into(), json!(user.username));
    if let Some(first) = &user.first_name {
        rep.insert("firstName".into(), json!(first));
    }
    if let Some(last) = &user.last_name {
        rep.insert("lastName".into(), json!(last));
    }
    if let Some(email) = &user.email {
        rep.insert("email".into(), json!(email));
    }
    rep.insert("emailVerified".into(), json!(user.email_verified));
    rep.insert("createdTimestamp".into(), json!(user.created_timestamp));
    rep.insert("enabled".into(), json!(user.enabled));
    rep.insert("totp".into(), json!(false));
    rep.insert("disableableCredentialTypes".into(), json!([]));
    rep.insert("requiredActions".into(), json!(user.required_actions));
    rep.insert("notBefore".into(), json!(0));
    let access = if single {
        json!({
            "manageGroupMembership": true,
            "resetPassword": true,
            "view": true,
            "mapRoles": true,
            "impersonate": false,
            "manage": true
        })
    } else {
        json!({ "manage": true })
    };
    rep.insert("access".into(), access);
    Value::Object(rep)
}

/// `GET /users`: the users `matching_users` finds, sorted by username, then the page
/// `first` (default 0, negative read as 0) .. `first + max` (default 100, Keycloak's
/// `Constants.DEFAULT_MAX_RESULTS`); `briefRepresentation=true` leaves out what the brief form
/// lacks. A `first` or `max` that is not a number is JAX-RS's 404, as measured on 26.7.3.
fn search_users(state: &State, query: &Params) -> Response {
    let number = |key: &str, default: i64| match query.get(key) {
        None | Some("") => Some(default),
        Some(v) => v.parse::<i64>().ok(),
    };
    let (Some(first), Some(max)) = (number("first", 0), number("max", 100)) else {
        return Response::error(404, "HTTP 404 Not Found");
    };
    let first = usize::try_from(first).unwrap_or(0);
    let max = usize::try_from(max).unwrap_or(0);
    let brief = query.get("briefRepresentation") == Some("true");
    let reps: Vec<Value> = matching_users(state, query)
        .into_iter()
        .skip(first)
        .take(max)
        .map(|u| {
            if brief {
                brief_representation(u)
            } else {
                user_representation(u, false)
            }
        })
        .collect();
    admin_ok(&Value::Array(reps))
}

/// The users a search or count means, sorted by username: `username`, `email`, `firstName`,
/// `lastName` match as substrings, or exactly with `exact=true`, case-insensitively; `search`
/// matches any of them (prefix, `*` for infix, `"quoted"` for exact); `enabled` matches the
/// flag. Service accounts are listed only when a field filter, `enabled` or `exact` is given,
/// not for `search` nor for no filter at all, as in Keycloak's `UsersResource` (measured on
/// 26.7.3: `count` 5, `count?enabled=true` 6, `search=*` the five people).
fn matching_users<'s>(state: &'s State, query: &Params) -> Vec<&'s User> {
    let exact = query.get("exact") == Some("true");
    let fields = ["username", "email", "firstName", "lastName"];
    let filters: Vec<(&str, String)> = fields
        .iter()
        .filter_map(|&f| query.get(f).map(|v| (f, v.to_lowercase())))
        .collect();
    let search = query.get("search").map(str::to_lowercase);
    let enabled = query.get("enabled").map(|v| v == "true");
    let any_filter =
        search.is_none() && (!filters.is_empty() || enabled.is_some() || query.contains("exact"));
    let mut found: Vec<&User> = state
        .users
        .iter()
        .filter(|u| any_filter || u.service_account_client.is_none())
        .filter(|u| {
            filters.iter().all(|(field, wanted)| {
                let value = user_field(u, field).to_lowercase();
                if exact {
                    value == *wanted
                } else {
                    value.contains(wanted.as_str())
                }
            })
        })
        .filter(|u| match &search {
            None => true,
            Some(s) => fields
                .iter()
                .any(|f| search_matches(&user_field(u, f).to_lowercase(), s)),
        })
        .filter(|u| enabled.is_none_or(|wanted| u.enabled == wanted))
        .collect();
    found.sort_by(|a, b| a.username.cmp(&b.username));
    found
}

/// `GET attack-detection/brute-force/users/{id}` (needs `view-users`) and `DELETE` on it
/// (needs `manage-users`; unlocks). Measured on 26.7.3; an unknown id answers as a user
/// never locked, as Keycloak's `AttackDetectionResource` does.
fn brute_force_status(state: &mut State, method: &str, id: &str, allowed: bool) -> Response {
    if !allowed {
        return Response::error(403, "HTTP 403 Forbidden");
    }
    let user = state.users.iter_mut().find(|u| u.id == id);
    if method == "DELETE" {
        if let Some(user) = user {
            user.brute_force_locked = false;
        }
        return Response::empty(204);
    }
    let locked = user.is_some_and(|u| u.brute_force_locked);
    admin_ok(&brute_force_body(locked))
}

/// The `briefRepresentation=true` form, measured on 26.7.3: no `totp`,
/// `disableableCredentialTypes`, `requiredActions` or `notBefore`.
fn brief_representation(user: &User) -> Value {
    let mut rep = user_representation(user, false);
    if let Some(fields) = rep.as_object_mut() {
        for key in [
            "totp",
            "disableableCredentialTypes",
            "requiredActions",
            "notBefore",
        ] {
            fields.remove(key);
        }
    }
    rep
}

/// `AttackDetectionResource`'s answer. Locked: as measured on 26.7.3 after three failures
/// (`failureFactor` 3, 60 s wait); not locked: Keycloak's defaults for a user with no failure
/// (from its source, not measured).
fn brute_force_body(locked: bool) -> Value {
    if locked {
        let now = now_millis();
        json!({
            "failedLoginNotBefore": now / 1000 + 60,
            "numFailures": 3,
            "numTemporaryLockouts": 1,
            "disabled": true,
            "numSecondaryAuthFailures": 0,
            "lastIPFailure": "127.0.0.1",
            "lastFailure": now,
        })
    } else {
        json!({ "numFailures": 0, "disabled": false, "lastIPFailure": "n/a", "lastFailure": 0 })
    }
}

fn user_field(user: &User, field: &str) -> String {
    let value = match field {
        "username" => Some(&user.username),
        "email" => user.email.as_ref(),
        "firstName" => user.first_name.as_ref(),
        "lastName" => user.last_name.as_ref(),
        _ => None,
    };
    value.cloned().unwrap_or_default()
}

fn search_matches(value: &str, search: &str) -> bool {
    let search = search.trim();
    if search == "*" || search.is_empty() {
        return true;
    }
    if let Some(inner) = search.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        return value == inner;
    }
    let infix = search.starts_with('*');
    let needle = search.trim_matches('*');
    if infix {
        value.contains(needle)
    } else {
        value.starts_with(needle)
    }
}

/// Parses an admin API JSON body the way Keycloak answers a bad one.
fn json_body(request: &Request) -> Result<Value, Response> {
    if request.body.iter().all(u8::is_ascii_whitespace) {
        // Measured on 26.7.1: no body at all is an uncaught server error.
        return Err(Response::oauth(
            500,
            "unknown_error",
            "For more on this error consult the server log.",
        ));
    }
    serde_json::from_slice::<Value>(&request.body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| Response::oauth(400, "invalid_request", "Cannot parse the JSON"))
}

fn opt_string(body: &Value, key: &str) -> Option<String> {
    body.get(key).and_then(Value::as_str).map(str::to_string)
}

fn create_user(state: &mut State, request: &Request, base: &str) -> Response {
    let body = match json_body(request) {
        Ok(body) => body,
        Err(response) => return response,
    };
    let username = opt_string(&body, "username")
        .map(|u| u.trim().to_lowercase())
        .unwrap_or_default();
    if username.is_empty() {
        return Response::error_message(400, "User name is missing");
    }
    let length = username.chars().count();
    if !(3..=255).contains(&length) {
        return Response::json(
            400,
            &json!({
                "field": "username",
                "errorMessage": "error-invalid-length",
                "params": ["username", 3, 255]
            }),
        );
    }
    // Measured on 26.7.3: when both clash, the email is the one reported.
    let email = opt_string(&body, "email")
        .map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty());
    if let Some(email) = &email {
        if state.users.iter().any(|u| u.email.as_ref() == Some(email)) {
            return Response::error_message(409, "User exists with same email");
        }
    }
    if state.user_by_name(&username).is_some() {
        return Response::error_message(409, "User exists with same username");
    }
    let mut user = User::new(&username);
    user.email = email;
    user.first_name = opt_string(&body, "firstName");
    user.last_name = opt_string(&body, "lastName");
    // Keycloak creates a disabled user unless told otherwise.
    user.enabled = body
        .get("enabled")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    user.email_verified = body
        .get("emailVerified")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(actions) = body.get("requiredActions").and_then(Value::as_array) {
        user.required_actions = actions
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
    }
    let credentials = body
        .get("credentials")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for credential in &credentials {
        let is_password = credential
            .get("type")
            .and_then(Value::as_str)
            .is_none_or(|t| t == "password");
        let Some(value) = credential.get("value").and_then(Value::as_str) else {
            continue;
        };
        if !is_password {
            continue;
        }
        if value.chars().count() < MIN_PASSWORD_LENGTH {
            // The whole creation is rolled back.
            return password_too_short();
        }
        user.set_password(value);
        if credential.get("temporary").and_then(Value::as_bool) == Some(true)
            && !user.required_actions.iter().any(|a| a == "UPDATE_PASSWORD")
        {
            user.required_actions.push("UPDATE_PASSWORD".to_string());
        }
    }
    let location = format!("{base}/admin/realms/{REALM}/users/{}", user.id);
    state.users.push(user);
    Response::empty(201).with_header("Location", location)
}

/// The realm's `length(8)` policy refusing a password, on create and on reset alike.
fn password_too_short() -> Response {
    Response::oauth(
        400,
        "invalidPasswordMinLengthMessage",
        &format!("Invalid password: minimum length {MIN_PASSWORD_LENGTH}."),
    )
}

fn update_user(state: &mut State, request: &Request, id: &str) -> Response {
    if state.user_by_id(id).is_none() {
        return Response::error(404, "User not found");
    }
    let body = match json_body(request) {
        Ok(body) => body,
        Err(response) => return response,
    };
    let email = opt_string(&body, "email").map(|e| e.trim().to_lowercase());
    if let Some(email) = email.as_ref().filter(|e| !e.is_empty()) {
        let taken = state
            .users
            .iter()
            .any(|u| u.id != id && u.email.as_ref() == Some(email));
        if taken {
            return Response::error_message(409, "User exists with same email");
        }
    }
    let Some(user) = state.users.iter_mut().find(|u| u.id == id) else {
        return Response::error(404, "User not found");
    };
    if let Some(email) = email {
        user.email = Some(email).filter(|e| !e.is_empty());
    }
    if let Some(first) = opt_string(&body, "firstName") {
        user.first_name = Some(first);
    }
    if let Some(last) = opt_string(&body, "lastName") {
        user.last_name = Some(last);
    }
    if let Some(enabled) = body.get("enabled").and_then(Value::as_bool) {
        user.enabled = enabled;
    }
    if let Some(verified) = body.get("emailVerified").and_then(Value::as_bool) {
        user.email_verified = verified;
    }
    if let Some(actions) = body.get("requiredActions").and_then(Value::as_array) {
        user.required_actions = actions
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
    }
    Response::empty(204)
}

fn delete_user(state: &mut State, id: &str) -> Response {
    let before = state.users.len();
    state.users.retain(|u| u.id != id);
    if state.users.len() == before {
        return Response::error(404, "User not found");
    }
    // Deleting a user ends its sessions.
    state.refresh_tokens.retain(|_, grant| grant.user_id != id);
    state
        .access_tokens
        .retain(|_, grant| !matches!(&grant.subject, Subject::User(u) if u == id));
    Response::empty(204).with_header("Cache-Control", "no-cache".to_string())
}

fn reset_password(state: &mut State, request: &Request, id: &str) -> Response {
    if state.user_by_id(id).is_none() {
        return Response::error(404, "User not found");
    }
    let body = match json_body(request) {
        Ok(body) => body,
        Err(response) => return response,
    };
    let value = body.get("value").and_then(Value::as_str);
    let is_password = body.get("type").and_then(Value::as_str) == Some("password");
    let Some(value) = value.filter(|_| is_password) else {
        return Response::error(400, "No password provided");
    };
    if value.trim().is_empty() {
        return Response::error(400, "Empty password not allowed");
    }
    if value.chars().count() < MIN_PASSWORD_LENGTH {
        return password_too_short();
    }
    let temporary = body.get("temporary").and_then(Value::as_bool) == Some(true);
    let Some(user) = state.users.iter_mut().find(|u| u.id == id) else {
        return Response::error(404, "User not found");
    };
    user.set_password(value);
    user.resets.push(value.to_string());
    user.required_actions.retain(|a| a != "UPDATE_PASSWORD");
    if temporary {
        user.required_actions.push("UPDATE_PASSWORD".to_string());
    }
    if state.lose_reset_answers > 0 {
        state.lose_reset_answers -= 1;
        return Response {
            lost: true,
            ..Response::empty(204)
        };
    }
    Response::empty(204)
}
