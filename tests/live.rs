//! The live-Keycloak suite: the shared scenarios (`tests/it/scenarios`) against a real Keycloak
//! (26.7.3 by default, `KC_VERSION`; `.ci/run` also runs it on 26.4.7) started by
//! `scripts/keycloak.sh`, plus what only a real server can show — a JVM that
//! is SIGKILLed or SIGSTOPped mid-run, recovery after a restart, and the server's exact answers
//! that the client's classification relies on (so a Keycloak upgrade that changes them fails
//! here, loudly, instead of silently opening circuits or failing items).
//!
//! Run it with `scripts/live-tests.sh`: it installs Java/Maven if missing, starts Keycloak, runs
//! `cargo test --test live -- --test-threads=1` with `KEYCLOAK_TEST_URL` set, and stops Keycloak.
//! Without `KEYCLOAK_TEST_URL` every test prints `SKIPPED …` and passes (the plain `cargo test`
//! step), unless `KEYCLOAK_LIVE_REQUIRED=1` is set — the runner sets it, so the live step can
//! never pass by skipping.
//!
//! All tests share one server and several of them kill or pause it, so they run one at a time:
//! each takes [`LOCK`] first (the runner also passes `--test-threads=1`), and a [`KeepUp`] guard
//! makes sure the server is up and answering before and after every test, whatever happened
//! inside it, so one failure does not cascade into the next tests.

// The live binary shares the hermetic binary's helpers and scenarios. It uses only part of
// them (the fake Keycloak, the CLI runner), so what it leaves unused is not a warning here.
#[allow(dead_code)]
#[path = "it/common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "it/scenarios/mod.rs"]
mod scenarios;

use common::server::Server;
use common::{
    acct, repo_file, unique_user, TestEnv, Tuning, ADMIN_CLIENT_SECRET, LOGIN_CLIENT_SECRET,
    PACKAGE,
};
use keycloak_resilient::auth::FailReason;
use keycloak_resilient::keycloak::Rejection;
use keycloak_resilient::sessions::AuthMode;
use keycloak_resilient::sync_queue::SyncStatus;
use keycloak_resilient::{AuthError, Mode, PasswdMode};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One test at a time: they share one Keycloak and some of them take it down.
static LOCK: Mutex<()> = Mutex::new(());

const REALM: &str = "resilient-test";

/// The live Keycloak started by `scripts/keycloak.sh` at `KEYCLOAK_TEST_URL`.
struct LiveKeycloak {
    /// Base URL, without a trailing slash.
    url: String,
}

impl LiveKeycloak {
    /// The live server, when `KEYCLOAK_TEST_URL` is set; `None` (and a clear "skipped" line)
    /// otherwise.
    fn from_env(test: &str) -> Option<LiveKeycloak> {
        match std::env::var("KEYCLOAK_TEST_URL") {
            Ok(url) if !url.is_empty() => Some(LiveKeycloak {
                url: url.trim_end_matches('/').to_string(),
            }),
            _ => {
                eprintln!(
                    "SKIPPED {test}: KEYCLOAK_TEST_URL is not set (run scripts/live-tests.sh)"
                );
                None
            }
        }
    }

    fn script(&self, action: &str) {
        let status = std::process::Command::new(repo_file("scripts/keycloak.sh"))
            .arg(action)
            .status()
            .expect("run scripts/keycloak.sh");
        assert!(status.success(), "scripts/keycloak.sh {action} failed");
    }

    fn admin_token(&self) -> String {
        let http = reqwest::blocking::Client::new();
        let v: serde_json::Value = http
            .post(format!(
                "{}/realms/resilient-test/protocol/openid-connect/token",
                self.url
            ))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "keycloak-resilient-sync"),
                ("client_secret", ADMIN_CLIENT_SECRET),
            ])
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .expect("admin token");
        v["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }
}

impl Server for LiveKeycloak {
    fn url(&self) -> String {
        self.url.clone()
    }
    fn kind(&self) -> &'static str {
        "live"
    }
    fn create_user(&self, username: &str, password: &str, enabled: bool) {
        let http = reqwest::blocking::Client::new();
        let resp = http
            .post(format!("{}/admin/realms/resilient-test/users", self.url))
            .bearer_auth(self.admin_token())
            .json(&serde_json::json!({
                "username": username,
                "enabled": enabled,
                "email": format!("{username}@example.test"),
                "emailVerified": true,
                "firstName": "Test",
                "lastName": "User",
                "credentials": [{"type": "password", "value": password, "temporary": false}],
            }))
            .send()
            .expect("create user");
        assert_eq!(
            resp.status().as_u16(),
            201,
            "creating {username} on the live Keycloak"
        );
    }
    fn go_down(&self) {
        self.script("kill");
    }
    fn come_back(&self) {
        self.script("restart");
        // "Ready" is not warm: a restarted Keycloak answers its first token and admin requests
        // slowly (classes loading, caches cold), past the scenarios' 2 s timeout on a busy
        // machine. One of each here, without that timeout, so a scenario sees the server as
        // its users do a moment after a restart, not its warm-up.
        let token = self.admin_token();
        let warm = reqwest::blocking::Client::new()
            .get(format!(
                "{}/admin/realms/resilient-test/users?max=1",
                self.url
            ))
            .bearer_auth(token)
            .send();
        assert!(warm.is_ok(), "admin API after restart: {warm:?}");
    }
    fn brute_force_lock(&self, username: &str) {
        set_brute_force_protection(&self.url, true);
        for _ in 0..3 {
            let (status, _) = password_grant(
                &self.url,
                "webapp",
                LOGIN_CLIENT_SECRET,
                username,
                "Wrong-Password-0",
            );
            assert!(status == 400 || status == 401, "wrong password: {status}");
        }
    }
    fn brute_force_unlock(&self, username: &str) {
        let id = user_id(&self.url, &sync_admin_token(&self.url), username);
        let resp = http()
            .delete(format!(
                "{}/admin/realms/{REALM}/attack-detection/brute-force/users/{id}",
                self.url
            ))
            .bearer_auth(sync_admin_token(&self.url))
            .send()
            .expect("unlock");
        assert_eq!(resp.status().as_u16(), 204, "unlock {username}");
        set_brute_force_protection(&self.url, false);
    }
    fn hang(&self) {
        self.script("pause");
    }
    fn unhang(&self) {
        self.script("resume");
    }
}

/// Switches the realm's brute-force detection on (3 failures lock for 60 s) or off (the
/// fixture's setting); realm settings need the master admin.
fn set_brute_force_protection(url: &str, on: bool) {
    let resp = http()
        .put(format!("{url}/admin/realms/{REALM}"))
        .bearer_auth(master_admin_token(url))
        .json(&serde_json::json!({
            "bruteForceProtected": on,
            "failureFactor": 3,
            "waitIncrementSeconds": 60,
        }))
        .send()
        .expect("realm update");
    assert_eq!(resp.status().as_u16(), 204, "bruteForceProtected={on}");
}

/// Takes [`LOCK`], tolerating a poisoned mutex (a failed test must not fail all the others).
fn serial() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `KEYCLOAK_TEST_URL` is unset: fine for the plain `cargo test` step, a failure for the live
/// step (the runner sets `KEYCLOAK_LIVE_REQUIRED=1`).
fn skipped(name: &str) {
    if std::env::var("KEYCLOAK_LIVE_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("{name}: KEYCLOAK_LIVE_REQUIRED=1 but KEYCLOAK_TEST_URL is not set: the live suite would be skipped");
    }
}

/// Runs `body` against the live server: serialised, timed, and with the server brought back up
/// afterwards whatever `body` did.
fn live_test(name: &str, body: impl FnOnce(&LiveKeycloak)) {
    let _serial = serial();
    let Some(server) = LiveKeycloak::from_env(name) else {
        return skipped(name);
    };
    let _up = KeepUp::new(name, &server.url);
    body(&server);
}

/// Wires a scenario of `tests/scenarios` to a live test of the same name.
macro_rules! scenario {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            live_test(stringify!($name), |server| scenarios::$name(server));
        }
    )*};
}

scenario!(
    authenticate_online_then_cached_offline,
    wrong_password_never_opens_circuit,
    disabled_user_is_rejected,
    password_change_queued_while_down_drains_when_back,
    superseded_password_change_never_overwrites_newer,
    password_policy_rejection_fails_item,
    a_failed_change_is_retried_once_its_cause_is_fixed,
    wrong_admin_secret_blocks_queue,
    hang_is_bounded_and_breaker_stops_calls,
    login_modes_keycloak_cached_local,
    passwd_while_down_then_sync,
    passwd_online_synchronized_and_policy_rejection,
    allow_offline_false_refuses_when_down,
    replay_after_a_crash_mid_send_is_not_applied_twice,
    keycloak_disable_reaches_the_local_account,
    keycloak_password_reset_is_adopted_and_the_old_one_stops,
    pending_local_change_wins_over_keycloaks_old_password,
    user_only_in_keycloak_is_provisioned,
    keycloak_delete_disables_a_linked_account,
    two_data_directories_converge_through_keycloak,
    brute_force_lock_and_required_action_are_not_central_decisions,
    reconcile_applies_keycloaks_account_decisions,
    managed_users_reach_keycloak_in_order,
);

// --- keeping the server up ------------------------------------------------------------------

/// Before and after each test: the server is running, not paused, and answers discovery.
/// Drop resumes or restarts it as needed (never panics: it may run during a panic), and prints
/// the test's outcome and duration as one `LIVE-RESULT` line for the runner's summary.
struct KeepUp {
    name: String,
    url: String,
    started: Instant,
    /// Print the `LIVE-RESULT` line (off for the guard's own self-check).
    report: bool,
}

impl KeepUp {
    fn new(name: &str, url: &str) -> KeepUp {
        if let Err(e) = ensure_up(url) {
            panic!("{name}: the live Keycloak is not usable before the test: {e}");
        }
        KeepUp {
            name: name.to_string(),
            url: url.to_string(),
            started: Instant::now(),
            report: true,
        }
    }
}

impl Drop for KeepUp {
    fn drop(&mut self) {
        let outcome = if std::thread::panicking() {
            "FAIL"
        } else {
            "ok"
        };
        let secs = self.started.elapsed().as_secs_f64();
        if let Err(e) = ensure_up(&self.url) {
            eprintln!(
                "LIVE-KEEPUP {}: could not bring Keycloak back: {e}",
                self.name
            );
        }
        if self.report {
            eprintln!("LIVE-RESULT {outcome} {secs:.1}s {}", self.name);
        }
    }
}

/// Runs `scripts/keycloak.sh <action>` and returns its exit code.
fn kc_script(action: &str) -> Result<i32, String> {
    let out = Command::new(repo_file("scripts/keycloak.sh"))
        .arg(action)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running scripts/keycloak.sh {action}: {e}"))?;
    Ok(out.status.code().unwrap_or(-1))
}

/// Does discovery answer 200 within `within`?
fn answers(url: &str, within: Duration) -> bool {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("http client");
    let deadline = Instant::now() + within;
    loop {
        let ok = http
            .get(format!(
                "{url}/realms/{REALM}/.well-known/openid-configuration"
            ))
            .send()
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Resumes a paused server, restarts a dead or wedged one, and waits until it answers.
fn ensure_up(url: &str) -> Result<(), String> {
    match kc_script("status")? {
        0 => {}
        1 => {
            eprintln!("LIVE-KEEPUP: Keycloak was left paused; resuming it");
            kc_script("resume")?;
        }
        3 => {
            eprintln!("LIVE-KEEPUP: Keycloak was left down; restarting it");
            if kc_script("restart")? != 0 {
                return Err("scripts/keycloak.sh restart failed".into());
            }
        }
        code => return Err(format!("scripts/keycloak.sh status exited {code}")),
    }
    if answers(url, Duration::from_secs(30)) {
        return Ok(());
    }
    eprintln!("LIVE-KEEPUP: Keycloak runs but does not answer; restarting it");
    if kc_script("restart")? != 0 {
        return Err("scripts/keycloak.sh restart failed".into());
    }
    if answers(url, Duration::from_secs(60)) {
        Ok(())
    } else {
        Err("Keycloak does not answer discovery after a restart".into())
    }
}

// --- small helpers --------------------------------------------------------------------------

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("http client")
}

fn token_url(url: &str) -> String {
    format!("{url}/realms/{REALM}/protocol/openid-connect/token")
}

/// Status and JSON body of an answer (Value::Null for an empty body).
fn answer(resp: reqwest::blocking::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().expect("body");
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("HTTP {status}: body is not JSON: {text}"))
    };
    (status, body)
}

fn password_grant(
    url: &str,
    client_id: &str,
    secret: &str,
    username: &str,
    password: &str,
) -> (u16, Value) {
    answer(
        http()
            .post(token_url(url))
            .form(&[
                ("grant_type", "password"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("username", username),
                ("password", password),
                ("scope", "openid"),
            ])
            .send()
            .expect("token request"),
    )
}

fn sync_admin_token(url: &str) -> String {
    let (status, body) = answer(
        http()
            .post(token_url(url))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "keycloak-resilient-sync"),
                ("client_secret", ADMIN_CLIENT_SECRET),
            ])
            .send()
            .expect("admin token request"),
    );
    assert_eq!(status, 200, "admin token: {body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

fn user_id(url: &str, token: &str, username: &str) -> String {
    let (status, body) = answer(
        http()
            .get(format!("{url}/admin/realms/{REALM}/users"))
            .query(&[("username", username), ("exact", "true")])
            .bearer_auth(token)
            .send()
            .expect("user search"),
    );
    assert_eq!(status, 200, "user search: {body}");
    body[0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{username} not found: {body}"))
        .to_string()
}

/// Polls `f` every 250 ms until it is true or `within` has passed.
fn wait_for(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs the CLI; returns exit code, parsed JSON stdout (Null if not JSON), stdout, stderr and
/// how long it took.
fn cli(env: &TestEnv, args: &[&str], stdin: &str) -> (i32, Value, String, String, Duration) {
    let started = Instant::now();
    let out = env
        .cmd()
        .args(args)
        .write_stdin(stdin.to_string())
        .output()
        .expect("run the binary");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stdout, stderr, took)
}

// --- the real answers the client relies on --------------------------------------------------

/// The Keycloak under test is older than 26.6 (`KC_VERSION`, as `scripts/keycloak.sh` reads it;
/// default 26.7.3): the answers that changed are in tests/fixtures/keycloak-answers.md,
/// "26.4.7 vs 26.7.3".
fn before_26_6() -> bool {
    let version = std::env::var("KC_VERSION").unwrap_or_else(|_| "26.7.3".into());
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) < (26, 6)
}

/// Pins Keycloak 26.7.3's answers that `src/keycloak.rs` classifies (see
/// tests/fixtures/keycloak-answers.md). If an upgrade changes any of them, this fails first and
/// says which, instead of the client silently misclassifying (e.g. a wrong password counted as
/// an outage).
#[test]
fn real_answers_the_client_relies_on() {
    live_test("real_answers_the_client_relies_on", |server| {
        let url = server.url();
        let user = unique_user("pin");
        server.create_user(&user, "Pin-Password-1", true);

        // Success: the token fields the cache stores.
        let (status, body) =
            password_grant(&url, "webapp", LOGIN_CLIENT_SECRET, &user, "Pin-Password-1");
        assert_eq!(status, 200, "right password: {body}");
        assert!(body["access_token"].is_string(), "{body}");
        assert!(body["refresh_token"].is_string(), "{body}");
        assert_eq!(body["token_type"], "Bearer", "{body}");
        // 300 s and 1800 s, the realm's access token and SSO session lifespans; a loaded server
        // has been seen to say 299 and 1799 (the second it took to answer already spent).
        let expires_in = body["expires_in"].as_i64().unwrap_or_default();
        assert!((295..=300).contains(&expires_in), "{body}");
        let refresh_expires_in = body["refresh_expires_in"].as_i64().unwrap_or_default();
        assert!((1795..=1800).contains(&refresh_expires_in), "{body}");

        let invalid =
            json!({"error": "invalid_grant", "error_description": "Invalid user credentials"});
        // Wrong password: 400 since Keycloak 26.6 (401 before); the client reads `error`.
        let bad = if before_26_6() { 401 } else { 400 };
        assert_eq!(
            password_grant(
                &url,
                "webapp",
                LOGIN_CLIENT_SECRET,
                &user,
                "Wrong-Password-1"
            ),
            (bad, invalid.clone()),
            "wrong password"
        );
        // Unknown user: the same answer as a wrong password.
        assert_eq!(
            password_grant(
                &url,
                "webapp",
                LOGIN_CLIENT_SECRET,
                &unique_user("ghost"),
                "Whatever-1"
            ),
            (bad, invalid.clone()),
            "unknown user"
        );
        // Disabled preset user carol: "Account disabled" only with the right password.
        assert_eq!(
            password_grant(
                &url,
                "webapp",
                LOGIN_CLIENT_SECRET,
                "carol",
                "Carol-Password-1"
            ),
            (
                400,
                json!({"error": "invalid_grant", "error_description": "Account disabled"})
            ),
            "disabled carol"
        );
        assert_eq!(
            password_grant(
                &url,
                "webapp",
                LOGIN_CLIENT_SECRET,
                "carol",
                "Wrong-Password-1"
            ),
            // 26.4.7 told a disabled user's wrong password apart; 26.7.3 no longer does.
            if before_26_6() {
                (
                    400,
                    json!({"error": "invalid_grant", "error_description": "Account disabled"}),
                )
            } else {
                (400, invalid)
            },
            "disabled carol, wrong password"
        );
        // Bad client secret: about us, not the user.
        assert_eq!(
            password_grant(&url, "webapp", "not-the-secret", &user, "Pin-Password-1"),
            (
                401,
                json!({"error": "unauthorized_client", "error_description": "Invalid client or Invalid client credentials"})
            ),
            "bad client secret"
        );
        // A client without direct access grants.
        assert_eq!(
            password_grant(
                &url,
                "no-direct-grants",
                "no-direct-test-secret",
                &user,
                "Pin-Password-1"
            ),
            (
                400,
                json!({"error": "unauthorized_client", "error_description": "Client not allowed for direct access grants"})
            ),
            "client without direct access grants"
        );
        // Admin service account with a wrong secret.
        let (status, body) = answer(
            http()
                .post(token_url(&url))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", "keycloak-resilient-sync"),
                    ("client_secret", "not-the-secret"),
                ])
                .send()
                .expect("admin token request"),
        );
        assert_eq!(
            (status, body),
            (
                401,
                json!({"error": "unauthorized_client", "error_description": "Invalid client or Invalid client credentials"})
            ),
            "admin client, wrong secret"
        );

        // Admin API without a token.
        let users_url = format!("{url}/admin/realms/{REALM}/users");
        let resp = http()
            .get(&users_url)
            .query(&[("username", user.as_str()), ("exact", "true")])
            .send()
            .expect("users");
        assert!(
            resp.headers().get("www-authenticate").is_none(),
            "no WWW-Authenticate expected"
        );
        assert_eq!(
            answer(resp),
            (401, json!({"error": "HTTP 401 Unauthorized"})),
            "admin API without a token"
        );

        // Admin API: exact search finds the user; unknown → [].
        let token = sync_admin_token(&url);
        let id = user_id(&url, &token, &user);
        let (status, body) = answer(
            http()
                .get(&users_url)
                .query(&[
                    ("username", unique_user("ghost").as_str()),
                    ("exact", "true"),
                ])
                .bearer_auth(&token)
                .send()
                .expect("users"),
        );
        assert_eq!(
            (status, body),
            (200, json!([])),
            "exact search for an unknown user"
        );

        // reset-password: policy rejection, unknown user, success.
        let reset = |id: &str, value: &str| {
            answer(
                http()
                    .put(format!("{users_url}/{id}/reset-password"))
                    .bearer_auth(&token)
                    .json(&json!({"type": "password", "value": value, "temporary": false}))
                    .send()
                    .expect("reset-password"),
            )
        };
        assert_eq!(
            reset(&id, "short"),
            (
                400,
                json!({"error": "invalidPasswordMinLengthMessage", "error_description": "Invalid password: minimum length 8."})
            ),
            "reset-password against the length(8) policy"
        );
        assert_eq!(
            reset(&uuid::Uuid::new_v4().to_string(), "Pin-Password-2"),
            (404, json!({"error": "User not found"})),
            "reset-password of an unknown id"
        );
        assert_eq!(
            reset(&id, "Pin-Password-2"),
            (204, Value::Null),
            "reset-password"
        );
        assert!(
            server.login_works(&user, "Pin-Password-2"),
            "new password works after the reset"
        );
        assert!(
            !server.login_works(&user, "Pin-Password-1"),
            "old password refused after the reset"
        );
    });
}

// --- outages only a real server shows -------------------------------------------------------

/// SIGKILL mid-run: logins fall back to the cache, a password change is queued, a sync cycle
/// (library and one-shot CLI) leaves it untouched; after the restart the queue drains, Keycloak
/// grants the new password and refuses the old one, and logins are online again.
#[test]
fn live_sigkill_cached_logins_queued_change_drains_after_restart() {
    live_test(
        "live_sigkill_cached_logins_queued_change_drains_after_restart",
        |server| {
            let user = unique_user("kill");
            let (p1, p2) = ("Kill-Password-1", "Kill-Password-2");
            server.create_user(&user, p1, true);
            let tuning = Tuning {
                failure_threshold: 2,
                cooldown_seconds: 2,
                timeout_seconds: 3,
                ..Tuning::default()
            };
            let env = TestEnv::new(&server.url(), &tuning);
            let auth = env.auth();
            auth.users()
                .add(
                    &keycloak_resilient::Account::new(&user, PACKAGE).unwrap(),
                    p1,
                )
                .expect("add local user");

            let r = auth.login(&acct(&user, PACKAGE), p1).expect("login");
            assert!(r.success, "{r:?}");
            assert_eq!(
                (r.auth_mode, r.keycloak_status),
                (Some(AuthMode::Keycloak), "online"),
                "{r:?}"
            );
            assert!(r.access_token.is_some(), "a Keycloak token while online");

            server.go_down();

            let started = Instant::now();
            let t = auth
                .client()
                .authenticate(&user, p1, PACKAGE)
                .expect("cached token while down");
            assert!(t.cached, "{t:?}");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "a refused connection is fast: {:?}",
                started.elapsed()
            );
            match auth
                .client()
                .authenticate(&user, "Wrong-Password-9", PACKAGE)
            {
                Err(AuthError::NoCachedLogin { .. }) => {}
                other => {
                    panic!("wrong password while down must find no cached login, got {other:?}")
                }
            }
            let r = auth
                .login(&acct(&user, PACKAGE), p1)
                .expect("login while down");
            assert!(r.success, "{r:?}");
            assert_eq!(
                (r.auth_mode, r.keycloak_status),
                (Some(AuthMode::Cached), "offline"),
                "{r:?}"
            );

            let pr = auth
                .change_password(&acct(&user, PACKAGE), p1, p2)
                .expect("passwd while down");
            assert_eq!(pr.mode, PasswdMode::Queued, "{pr:?}");
            let id = pr.sync_id.expect("queued item id");
            // The cached entry follows the local password: the new one logs in offline, the old not.
            let r = auth
                .login(&acct(&user, PACKAGE), p2)
                .expect("login with the new password while down");
            assert_eq!(
                (r.success, r.auth_mode),
                (true, Some(AuthMode::Cached)),
                "{r:?}"
            );
            let r = auth
                .login(&acct(&user, PACKAGE), p1)
                .expect("login with the old password while down");
            assert!(!r.success, "the old password is gone locally: {r:?}");

            let s = auth.client().get_status().expect("status");
            assert!(!s.available, "{s:?}");
            assert_eq!(s.mode, Mode::Degraded, "{s:?}");
            assert_eq!(s.pending_syncs, 1, "{s:?}");

            let report = auth
                .client()
                .process_sync_queue(10)
                .expect("sync while down");
            assert_eq!(report.processed, 0, "{report:?}");
            assert!(
                report
                    .stopped
                    .as_deref()
                    .unwrap_or("")
                    .contains("unavailable"),
                "{report:?}"
            );
            let item = auth.client().queue().get(id).expect("get").expect("item");
            assert_eq!(
                (item.status, item.attempts),
                (SyncStatus::Pending, 0),
                "an outage never counts: {item:?}"
            );

            // The one-shot CLI (cron) sees the same: nothing done, says why, exit 0, no secret shown.
            drop(auth);
            let (code, j, out, err, _) = cli(&env, &["--json", "sync-now"], "");
            assert_eq!(code, 0, "sync-now while down: {out}{err}");
            assert_eq!(j["report"]["processed"], 0, "{out}");
            assert_eq!(j["pending_syncs"], 1, "{out}");
            let (code, j, out, err, _) = cli(&env, &["--json", "queue"], "");
            assert_eq!(code, 0, "queue: {out}{err}");
            assert!(!out.contains(p2), "the queued password must not be shown");
            assert_eq!(j["items"][0]["status"], "pending", "{out}");

            server.come_back();

            // Cron after the restart: the breaker cools down (2 s), then the queue drains.
            let drained = wait_for(Duration::from_secs(30), || {
                let (code, j, out, err, _) = cli(&env, &["--json", "sync-now"], "");
                assert_eq!(code, 0, "sync-now after restart: {out}{err}");
                j["pending_syncs"] == 0
            });
            assert!(drained, "the queue drains once Keycloak is back");
            assert!(
                server.login_works(&user, p2),
                "Keycloak grants the new password"
            );
            assert!(
                !server.login_works(&user, p1),
                "Keycloak refuses the old password"
            );

            let auth = env.auth();
            let item = auth.client().queue().get(id).expect("get").expect("item");
            assert_eq!(item.status, SyncStatus::Completed, "{item:?}");
            let r = auth
                .login(&acct(&user, PACKAGE), p2)
                .expect("login after recovery");
            assert_eq!(
                (r.success, r.auth_mode, r.keycloak_status),
                (true, Some(AuthMode::Keycloak), "online"),
                "{r:?}"
            );
            let s = auth.client().get_status().expect("status");
            assert!(s.available, "{s:?}");
            assert_eq!(
                (s.mode, s.circuit_state, s.pending_syncs),
                (Mode::Normal, "closed", 0),
                "{s:?}"
            );
        },
    );
}

/// SIGSTOP: connections are accepted and never answered. Every call is bounded by the timeout;
/// after `failure_threshold` of them the breaker (persisted across one-shot CLI runs) stops
/// calling, so later calls return at once with the cached token. After SIGCONT Keycloak answers.
#[test]
fn live_sigstop_calls_bounded_and_breaker_stops_calling() {
    live_test(
        "live_sigstop_calls_bounded_and_breaker_stops_calling",
        |server| {
            let user = unique_user("hang");
            let password = "Hang-Password-1";
            server.create_user(&user, password, true);
            let timeout = Duration::from_secs(2);
            let tuning = Tuning {
                failure_threshold: 2,
                cooldown_seconds: 300,
                timeout_seconds: timeout.as_secs(),
                ..Tuning::default()
            };
            let env = TestEnv::new(&server.url(), &tuning);
            let who = ["--user", user.as_str(), "--package", PACKAGE];
            let stdin = format!("{password}\n");
            let auth_args: Vec<&str> = ["--json", "authenticate"]
                .iter()
                .copied()
                .chain(who)
                .collect();

            let (code, j, out, err, _) = cli(&env, &auth_args, &stdin);
            assert_eq!(code, 0, "authenticate online: {out}{err}");
            assert_eq!(j["cached"], false, "{out}");

            server.hang();

            // Two one-shot runs, each bounded by the timeout (plus process start and argon2).
            let bound = timeout + Duration::from_millis(2500);
            for run in 1..=2 {
                let (code, j, out, err, took) = cli(&env, &auth_args, &stdin);
                eprintln!("hung Keycloak, CLI authenticate #{run}: {took:?}");
                assert_eq!(code, 0, "authenticate #{run} while hung: {out}{err}");
                assert_eq!(j["cached"], true, "cached token while hung: {out}");
                assert!(
                    took >= timeout - Duration::from_millis(200),
                    "#{run} did try Keycloak: {took:?}"
                );
                assert!(
                    took < bound,
                    "#{run} bounded by the {timeout:?} timeout: {took:?}"
                );
            }
            // The breaker opened (state persisted by the previous runs): no more waiting.
            let (code, j, out, err, took) = cli(&env, &auth_args, &stdin);
            eprintln!("hung Keycloak, CLI authenticate #3 (circuit open): {took:?}");
            assert_eq!((code, &j["cached"]), (0, &json!(true)), "{out}{err}");
            assert!(took < timeout, "open circuit: no network call: {took:?}");
            let (code, j, out, err, took) = cli(&env, &["--json", "status"], "");
            assert_eq!(code, 0, "status: {out}{err}");
            assert!(
                took < timeout,
                "status with an open circuit does not probe: {took:?}"
            );
            assert_eq!(j["available"], false, "{out}");
            assert_eq!(j["circuit_state"], "open", "{out}");
            assert_eq!(j["mode"], "degraded", "{out}");

            // The library in-process: same persisted breaker; calls return at once.
            let auth = env.auth();
            auth.users()
                .add(
                    &keycloak_resilient::Account::new(&user, PACKAGE).unwrap(),
                    password,
                )
                .expect("add local user");
            let started = Instant::now();
            assert!(!auth.client().is_available());
            let t = auth
                .client()
                .authenticate(&user, password, PACKAGE)
                .expect("cached");
            assert!(t.cached);
            let r = auth.login(&acct(&user, PACKAGE), password).expect("login");
            assert_eq!(
                (r.success, r.auth_mode),
                (true, Some(AuthMode::Cached)),
                "{r:?}"
            );
            let pr = auth
                .change_password(&acct(&user, PACKAGE), password, "Hang-Password-2")
                .expect("passwd");
            assert_eq!(pr.mode, PasswdMode::Queued, "{pr:?}");
            let report = auth.client().process_sync_queue(10).expect("sync");
            assert_eq!(report.processed, 0, "{report:?}");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "open circuit: nothing waits on the hung server: {:?}",
                started.elapsed()
            );
            drop(auth);

            server.unhang();
            assert!(
                answers(&server.url(), Duration::from_secs(20)),
                "Keycloak answers after SIGCONT"
            );
            assert!(
                server.login_works(&user, password),
                "Keycloak still has the old password (the change is queued)"
            );
        },
    );
}

/// Issue 14 point 2: SIGSTOP, then 10 simultaneous logins over the socket with
/// `max_concurrent_calls: 3` and a breaker that does not open (threshold 50). Counting the
/// token requests that reached a real Keycloak is not possible from here (a stopped JVM logs
/// nothing), so the logins' outcomes and time bounds are counted instead: all 10 succeed
/// locally; at most 3 (those holding a bulkhead slot) waited for the timeout, and the others
/// came back before it — they did not send a request and wait.
#[test]
fn live_sigstop_ten_socket_logins_bulkhead_bounds_the_calls() {
    live_test(
        "live_sigstop_ten_socket_logins_bulkhead_bounds_the_calls",
        |server| {
            let user = unique_user("bulkhead");
            let password = "Bulkhead-Password-1";
            server.create_user(&user, password, true);
            let timeout = Duration::from_secs(4);
            let tuning = Tuning {
                failure_threshold: 50,
                cooldown_seconds: 300,
                health_check_cache_seconds: 300,
                timeout_seconds: timeout.as_secs(),
                keycloak_extra: "  max_concurrent_calls: 3\n".into(),
                ..Tuning::default()
            };
            let env = TestEnv::new(&server.url(), &tuning);
            let who = ["--user", user.as_str(), "--package", PACKAGE];
            let stdin = format!("{password}\n");
            let (code, _, out, err, _) = cli(&env, &[&["user", "add"][..], &who].concat(), &stdin);
            assert_eq!(code, 0, "user add: {out}{err}");
            let mut service = common::cli::Service::start(&env);
            service.wait_for("stop with Ctrl-C", Duration::from_secs(60));
            let login: Vec<&str> = [&["--json", "login"][..], &who].concat();
            let (code, j, out, err, _) = cli(&env, &login, &stdin);
            assert_eq!(
                (code, &j["auth_mode"]),
                (0, &json!("keycloak")),
                "{out}{err}"
            );

            server.hang();
            let runs: Vec<_> = (0..10)
                .map(|_| {
                    let login: Vec<String> = login.iter().map(|a| a.to_string()).collect();
                    let stdin = stdin.clone();
                    let config = env.config_path();
                    std::thread::spawn(move || {
                        let started = Instant::now();
                        let out = Command::new(env!("CARGO_BIN_EXE_keycloak-resilient"))
                            .arg("--config")
                            .arg(config)
                            .args(&login)
                            .stdin(Stdio::piped())
                            .stdout(Stdio::piped())
                            .stderr(Stdio::piped())
                            .spawn()
                            .and_then(|mut c| {
                                use std::io::Write;
                                if let Some(mut i) = c.stdin.take() {
                                    i.write_all(stdin.as_bytes())?;
                                }
                                c.wait_with_output()
                            })
                            .expect("login");
                        let j: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                        (out.status.code(), j, started.elapsed())
                    })
                })
                .collect();
            let results: Vec<_> = runs
                .into_iter()
                .map(|h| h.join().expect("login thread"))
                .collect();
            server.unhang();
            drop(service);
            for (code, j, took) in &results {
                eprintln!("SIGSTOP socket login: exit {code:?} {j} in {took:?}");
                assert_eq!(*code, Some(0), "{j}");
                assert_eq!(j["success"], true, "{j}");
            }
            let waited = results
                .iter()
                .filter(|(_, _, took)| *took >= timeout - Duration::from_millis(300))
                .count();
            assert!(
                waited <= 3,
                "{waited} logins waited for the hung Keycloak (bulkhead 3)"
            );
            assert!(
                results.iter().all(|(_, _, took)| *took < timeout * 3),
                "every login bounded"
            );
        },
    );
}

/// A fresh client over the same data after SIGSTOP + SIGCONT and a short cooldown: the half-open
/// trial succeeds, the queue drains and Keycloak has the new password.
#[test]
fn live_sigstop_then_resume_half_open_trial_drains_queue() {
    live_test(
        "live_sigstop_then_resume_half_open_trial_drains_queue",
        |server| {
            let user = unique_user("stall");
            let (p1, p2) = ("Stall-Password-1", "Stall-Password-2");
            server.create_user(&user, p1, true);
            let tuning = Tuning {
                failure_threshold: 1,
                cooldown_seconds: 2,
                timeout_seconds: 2,
                ..Tuning::default()
            };
            let env = TestEnv::new(&server.url(), &tuning);
            let auth = env.auth();
            auth.users()
                .add(
                    &keycloak_resilient::Account::new(&user, PACKAGE).unwrap(),
                    p1,
                )
                .expect("add local user");
            assert_eq!(
                auth.login(&acct(&user, PACKAGE), p1)
                    .expect("login")
                    .auth_mode,
                Some(AuthMode::Keycloak)
            );

            server.hang();
            let started = Instant::now();
            let pr = auth
                .change_password(&acct(&user, PACKAGE), p1, p2)
                .expect("passwd while hung");
            let took = started.elapsed();
            assert_eq!(pr.mode, PasswdMode::Queued, "{pr:?}");
            assert!(
                took < Duration::from_secs(4),
                "passwd bounded by the 2 s timeout: {took:?}"
            );
            let (circuit, failures) = auth.client().circuit();
            assert_eq!(
                (circuit.as_str(), failures),
                ("open", 1),
                "threshold 1: open after one timeout"
            );
            server.unhang();

            // After the cooldown the half-open trial closes the circuit and the item is applied.
            let drained = wait_for(Duration::from_secs(20), || {
                auth.client().process_sync_queue(10).expect("sync");
                auth.client().queue().pending_count() == 0
            });
            assert!(drained, "queue drained after SIGCONT");
            let item = auth
                .client()
                .queue()
                .get(pr.sync_id.expect("id"))
                .expect("get")
                .expect("item");
            assert_eq!(item.status, SyncStatus::Completed, "{item:?}");
            assert_eq!(auth.client().circuit().0.as_str(), "closed");
            assert!(server.login_works(&user, p2), "new password granted");
            assert!(!server.login_works(&user, p1), "old password refused");
        },
    );
}

/// Disabled preset user carol: Keycloak refuses her (a rejection, never an outage), her right
/// and wrong passwords are told apart, and the circuit stays closed even at threshold 1.
#[test]
fn live_disabled_carol_rejected_circuit_stays_closed() {
    live_test(
        "live_disabled_carol_rejected_circuit_stays_closed",
        |server| {
            let tuning = Tuning {
                failure_threshold: 1,
                ..Tuning::default()
            };
            let env = TestEnv::new(&server.url(), &tuning);
            let auth = env.auth();
            for _ in 0..3 {
                match auth
                    .client()
                    .authenticate("carol", "Carol-Password-1", PACKAGE)
                {
                    Err(AuthError::Rejected(Rejection::AccountDisabled)) => {}
                    other => {
                        panic!("carol, right password: expected AccountDisabled, got {other:?}")
                    }
                }
                // 26.4.7 still said "Account disabled" to a wrong password as well.
                let wrong = if before_26_6() {
                    Rejection::AccountDisabled
                } else {
                    Rejection::InvalidCredentials
                };
                match auth
                    .client()
                    .authenticate("carol", "Wrong-Password-1", PACKAGE)
                {
                    Err(AuthError::Rejected(r)) if r == wrong => {}
                    other => {
                        panic!("carol, wrong password: expected {wrong:?}, got {other:?}")
                    }
                }
            }
            assert!(
                auth.client()
                    .get_cached_token("carol", PACKAGE)
                    .expect("cache")
                    .is_none(),
                "nothing cached for carol"
            );
            // Keycloak decides accounts (issue 12): a local carol is refused and disabled here,
            // with Keycloak as the source; Keycloak took part (online) and vouched for nothing.
            let carol = keycloak_resilient::Account::new("carol", PACKAGE).unwrap();
            auth.users()
                .add(&carol, "Carol-Password-1")
                .expect("add local carol");
            let r = auth
                .login(&acct("carol", PACKAGE), "Carol-Password-1")
                .expect("login");
            assert_eq!(
                (r.success, r.reason, r.keycloak_status),
                (false, Some(FailReason::AccountDisabled), "online"),
                "{r:?}"
            );
            assert!(r.access_token.is_none(), "{r:?}");
            let record = auth.users().get(&carol).unwrap().expect("carol");
            assert_eq!(
                record.disabled_by,
                Some(keycloak_resilient::local_users::Origin::Keycloak)
            );
            let s = auth.client().get_status().expect("status");
            assert!(s.available, "{s:?}");
            assert_eq!(
                (s.circuit_state, s.failure_count, s.mode),
                ("closed", 0, Mode::Normal),
                "{s:?}"
            );
        },
    );
}

/// Password policy (realm `length(8)`): online `passwd` reports `rejected` (CLI exit 4) with
/// Keycloak's reason; a queued change to a too-short password fails for good with that reason;
/// Keycloak keeps the old password either way, and the circuit stays closed.
#[test]
fn live_password_policy_rejection() {
    live_test("live_password_policy_rejection", |server| {
        let user = unique_user("policy");
        let p1 = "Policy-Password-1";
        server.create_user(&user, p1, true);
        let env = TestEnv::new(&server.url(), &Tuning::default());

        let who = ["--user", user.as_str(), "--package", PACKAGE];
        let add: Vec<&str> = ["user", "add"].iter().copied().chain(who).collect();
        let (code, _, out, err, _) = cli(&env, &add, &format!("{p1}\n"));
        assert_eq!(code, 0, "user add: {out}{err}");
        let passwd: Vec<&str> = ["--json", "passwd"].iter().copied().chain(who).collect();
        let (code, j, out, err, _) = cli(&env, &passwd, &format!("{p1}\nshort\n"));
        assert_eq!(
            code, 4,
            "passwd refused by Keycloak's policy exits 4: {out}{err}"
        );
        assert_eq!(j["mode"], "rejected", "{out}");
        assert!(
            j["keycloak_error"]
                .as_str()
                .unwrap_or("")
                .contains("minimum length 8"),
            "Keycloak's reason is shown: {out}"
        );
        assert!(
            server.login_works(&user, p1),
            "Keycloak keeps the old password"
        );

        let client = env.client();
        let id = client
            .queue_sync(
                &user,
                PACKAGE,
                "password_change",
                &json!({"new_password": "short2"}),
                1,
            )
            .expect("queue");
        let report = client.process_sync_queue(10).expect("sync");
        assert_eq!((report.processed, report.failed), (1, 1), "{report:?}");
        let item = client.queue().get(id).expect("get").expect("item");
        assert_eq!(item.status, SyncStatus::Failed, "{item:?}");
        assert!(
            item.last_error
                .as_deref()
                .unwrap_or("")
                .contains("minimum length 8"),
            "{item:?}"
        );
        assert_eq!(
            item.attempts, 1,
            "one answer from Keycloak, not retried: {item:?}"
        );
        assert!(
            server.login_works(&user, p1),
            "Keycloak still keeps the old password"
        );
        let s = client.get_status().expect("status");
        assert_eq!(
            (s.circuit_state, s.failure_count, s.failed_syncs),
            ("closed", 0, 2),
            "{s:?}"
        );
    });
}

/// Wrong admin secret: the queue is blocked (status says why), the item is untouched and
/// nothing counts toward the breaker; `test` names the failing check. With the right secret the
/// next cycle unblocks and applies it.
#[test]
fn live_wrong_admin_secret_blocks_queue_until_fixed() {
    live_test(
        "live_wrong_admin_secret_blocks_queue_until_fixed",
        |server| {
            let user = unique_user("admin");
            let (p1, p2) = ("Admin-Password-1", "Admin-Password-2");
            server.create_user(&user, p1, true);
            let tuning = Tuning {
                admin_client_secret: "wrong-admin-secret".into(),
                failure_threshold: 1,
                ..Tuning::default()
            };
            let env = TestEnv::new(&server.url(), &tuning);

            let (code, j, out, err, _) = cli(&env, &["--json", "test"], "");
            assert_eq!(code, 1, "test with a wrong admin secret fails: {out}{err}");
            let checks = j["checks"].as_array().cloned().unwrap_or_default();
            let failed: Vec<&str> = checks
                .iter()
                .filter(|c| c["ok"] == false)
                .filter_map(|c| c["check"].as_str())
                .collect();
            assert_eq!(failed.len(), 1, "only the admin check fails: {out}");
            assert!(failed[0].contains("admin service account"), "{out}");

            let client = env.client();
            let id = client
                .queue_sync(
                    &user,
                    PACKAGE,
                    "password_change",
                    &json!({"new_password": p2}),
                    1,
                )
                .expect("queue");
            for _ in 0..2 {
                let report = client.process_sync_queue(10).expect("sync");
                assert_eq!(report.processed, 0, "{report:?}");
                assert!(
                    report.stopped.as_deref().unwrap_or("").contains("blocked"),
                    "{report:?}"
                );
            }
            let item = client.queue().get(id).expect("get").expect("item");
            assert_eq!(
                (item.status, item.attempts),
                (SyncStatus::Pending, 0),
                "{item:?}"
            );
            let s = client.get_status().expect("status");
            assert!(
                s.queue_blocked.is_some(),
                "status says the queue is blocked: {s:?}"
            );
            assert_eq!(
                (s.available, s.circuit_state, s.failure_count),
                (true, "closed", 0),
                "{s:?}"
            );
            assert!(server.login_works(&user, p1), "nothing changed in Keycloak");
            drop(client);

            // The operator fixes the secret.
            let path = env.config_path();
            let yaml = std::fs::read_to_string(&path).expect("read config");
            std::fs::write(
                &path,
                yaml.replace(
                    "admin_client_secret: wrong-admin-secret",
                    &format!("admin_client_secret: {ADMIN_CLIENT_SECRET}"),
                ),
            )
            .expect("write config");
            let (code, _, out, err, _) = cli(&env, &["test"], "");
            assert_eq!(code, 0, "test with the right secret passes: {out}{err}");
            let client = env.client();
            let report = client.process_sync_queue(10).expect("sync");
            assert_eq!(report.completed, 1, "{report:?}");
            assert!(client.queue_blocked().is_none(), "unblocked");
            assert_eq!(
                client.queue().get(id).expect("get").expect("item").status,
                SyncStatus::Completed
            );
            assert!(server.login_works(&user, p2), "new password granted");
            assert!(!server.login_works(&user, p1), "old password refused");
        },
    );
}

/// The safety net itself: a test that leaves Keycloak paused or killed (as a failing outage
/// test would) is followed by a server that answers again.
#[test]
fn live_keepup_guard_restores_a_paused_or_killed_server() {
    live_test(
        "live_keepup_guard_restores_a_paused_or_killed_server",
        |server| {
            let url = server.url();
            for (what, take_down) in [("paused", "pause"), ("killed", "kill")] {
                {
                    let mut inner = KeepUp::new(what, &url);
                    inner.report = false;
                    assert_eq!(
                        kc_script(take_down),
                        Ok(0),
                        "scripts/keycloak.sh {take_down}"
                    );
                    assert!(
                        !answers(&url, Duration::from_secs(1)),
                        "{what}: Keycloak does not answer"
                    );
                }
                assert!(
                    answers(&url, Duration::from_secs(5)),
                    "the guard brought a {what} Keycloak back"
                );
                assert_eq!(
                    kc_script("status"),
                    Ok(0),
                    "running and not paused after a {what} server"
                );
            }
        },
    );
}

// --- issue 18: tokens verified from the kept realm keys -------------------------------------

/// The master-realm admin `scripts/keycloak.sh` bootstraps (realm keys need `manage-realm`,
/// which the sync client lacks).
fn master_admin_token(url: &str) -> String {
    let user = std::env::var("KC_BOOTSTRAP_ADMIN_USERNAME").unwrap_or_else(|_| "kc-admin".into());
    let pw = std::env::var("KC_BOOTSTRAP_ADMIN_PASSWORD")
        .unwrap_or_else(|_| "kc-admin-throwaway-pw".into());
    let (status, body) = answer(
        http()
            .post(format!("{url}/realms/master/protocol/openid-connect/token"))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", user.as_str()),
                ("password", pw.as_str()),
            ])
            .send()
            .expect("master admin token request"),
    );
    assert_eq!(status, 200, "master admin token: {body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

/// An `rsa-generated` key provider added to the realm with priority 200 (it signs every token
/// from now on); removed again on drop, whatever the test did.
struct RotatedKey {
    url: String,
    component: String,
}

impl RotatedKey {
    fn add(url: &str) -> RotatedKey {
        let token = master_admin_token(url);
        let (status, realm) = answer(
            http()
                .get(format!("{url}/admin/realms/{REALM}"))
                .bearer_auth(&token)
                .send()
                .expect("realm"),
        );
        assert_eq!(status, 200, "realm: {realm}");
        let resp = http()
            .post(format!("{url}/admin/realms/{REALM}/components"))
            .bearer_auth(&token)
            .json(&json!({
                "name": "rsa-rotated-live-test",
                "providerId": "rsa-generated",
                "providerType": "org.keycloak.keys.KeyProvider",
                "parentId": realm["id"],
                "config": {"priority": ["200"], "keySize": ["2048"], "algorithm": ["RS256"]},
            }))
            .send()
            .expect("add key");
        assert_eq!(resp.status().as_u16(), 201, "adding a realm key");
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .expect("Location")
            .to_string();
        RotatedKey {
            url: url.to_string(),
            component: location.rsplit('/').next().unwrap_or_default().to_string(),
        }
    }
}

impl Drop for RotatedKey {
    fn drop(&mut self) {
        let token = master_admin_token(&self.url);
        let deleted = http()
            .delete(format!(
                "{}/admin/realms/{REALM}/components/{}",
                self.url, self.component
            ))
            .bearer_auth(token)
            .send();
        if !deleted.is_ok_and(|r| r.status().is_success()) {
            eprintln!(
                "LIVE-CLEANUP: could not remove key component {}",
                self.component
            );
        }
    }
}

fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().expect("header");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url");
    let v: Value = serde_json::from_slice(&bytes).expect("header JSON");
    v["kid"].as_str().expect("kid").to_string()
}

/// A real access token verified online, with Keycloak killed (from the kept keys), and after a
/// new realm key signs: fetched again at once for the unknown `kid`; a removed key's tokens are
/// refused once the keys are fetched again.
#[test]
fn live_verify_token_online_offline_and_after_a_key_rotation() {
    use keycloak_resilient::verify::{self, keys, Reason, Verification};
    live_test(
        "live_verify_token_online_offline_and_after_a_key_rotation",
        |server| {
            let env = TestEnv::new(&server.url, &Tuning::default());
            let auth = env.auth();
            let user = unique_user("verify");
            let pw = "Verify-Password-1";
            server.create_user(&user, pw, true);
            let login = |what: &str| {
                auth.client()
                    .authenticate(&user, pw, PACKAGE)
                    .unwrap_or_else(|e| panic!("{what}: {e}"))
                    .access_token
            };
            let check =
                |token: &str| verify::verify_token(&auth, token).expect("verification runs");
            let token = login("online");
            match check(&token) {
                Verification::Valid(v) => {
                    assert_eq!(v.claims.preferred_username.as_deref(), Some(user.as_str()));
                    assert_eq!(v.realm, REALM);
                    assert!(!v.expired_in_grace);
                }
                other => panic!("online: {other:?}"),
            }
            let kept = keys::kept(auth.client().store()).unwrap();
            assert_eq!(kept[REALM].issuer, format!("{}/realms/{REALM}", server.url));

            server.go_down();
            assert!(
                matches!(check(&token), Verification::Valid(_)),
                "Keycloak down: from the kept keys"
            );
            server.come_back();

            let rotated = RotatedKey::add(&server.url);
            let new_token = login("after the rotation");
            assert_ne!(kid_of(&new_token), kid_of(&token), "the new key signs");
            assert!(
                matches!(check(&new_token), Verification::Valid(_)),
                "fetched for the new kid"
            );
            assert!(
                matches!(check(&token), Verification::Valid(_)),
                "the old key still verifies"
            );
            drop(rotated);
            let ring = keys::Keyring {
                store: auth.client().store(),
                keycloak: auth.client().keycloak(),
                clock: auth.client().clock(),
            };
            ring.refresh(REALM).expect("keys again");
            match check(&new_token) {
                Verification::Invalid(r) => assert_eq!(r.reason, Reason::UnknownKey, "{r:?}"),
                other => panic!("removed key: {other:?}"),
            }
        },
    );
}
