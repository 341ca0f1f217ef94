//! Tests of the fake Keycloak itself (`common/fake_keycloak.rs`).
//!
//! Every other hermetic test trusts the fake to answer like Keycloak 26 and to fail on demand
//! the way a real outage does; these tests pin both, through a real HTTP client, so a change to
//! the fake that would make other tests lie shows up here first.

use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::fake_keycloak::{Behavior, FakeKeycloak, REALM};
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A client with short timeouts and no proxy, so a hang shows up as a timeout quickly.
fn client() -> Client {
    client_with_timeout(Duration::from_secs(5))
}

fn client_with_timeout(timeout: Duration) -> Client {
    Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .build()
        .expect("build reqwest client")
}

fn token_url(kc: &FakeKeycloak) -> String {
    format!(
        "{}/realms/{}/protocol/openid-connect/token",
        kc.url(),
        kc.realm()
    )
}

fn users_url(kc: &FakeKeycloak) -> String {
    format!("{}/admin/realms/{}/users", kc.url(), kc.realm())
}

fn post_token(kc: &FakeKeycloak, form: &[(&str, &str)]) -> Response {
    client()
        .post(token_url(kc))
        .form(form)
        .send()
        .expect("token request")
}

fn password_login(kc: &FakeKeycloak, username: &str, password: &str) -> Response {
    post_token(
        kc,
        &[
            ("grant_type", "password"),
            ("client_id", "webapp"),
            ("client_secret", "webapp-test-secret"),
            ("username", username),
            ("password", password),
        ],
    )
}

fn client_credentials(kc: &FakeKeycloak, client_id: &str, secret: &str) -> Response {
    post_token(
        kc,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
        ],
    )
}

fn admin_token(kc: &FakeKeycloak) -> String {
    let response = client_credentials(kc, "keycloak-resilient-sync", "sync-test-secret");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().expect("token json");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

/// Status and parsed JSON body, asserting the JSON content type on the way.
fn status_json(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type:?} for status {status}"
    );
    (status, response.json().expect("json body"))
}

fn find_user(kc: &FakeKeycloak, token: &str, username: &str) -> Vec<Value> {
    let response = client()
        .get(users_url(kc))
        .bearer_auth(token)
        .query(&[("username", username), ("exact", "true")])
        .send()
        .expect("user search");
    let (status, body) = status_json(response);
    assert_eq!(status, 200);
    body.as_array().expect("array").clone()
}

fn is_base64url(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The claims of a JWT-shaped token (the fake's payload is plain base64url JSON).
fn decode_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    let mut bits = 0u32;
    let mut acc = 0u32;
    let mut bytes = Vec::new();
    for c in payload.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {payload}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push(u8::try_from((acc >> bits) & 0xff).unwrap());
        }
    }
    serde_json::from_slice(&bytes).expect("claims are JSON")
}

fn assert_jwt_shaped(token: &str) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    assert!(parts.iter().all(|p| is_base64url(p)), "{token}");
}

// --- discovery --------------------------------------------------------------------------------

#[test]
fn discovery_names_issuer_and_token_endpoint() {
    let kc = FakeKeycloak::start();
    let url = format!(
        "{}/realms/{}/.well-known/openid-configuration",
        kc.url(),
        REALM
    );
    let (status, body) = status_json(client().get(url).send().unwrap());
    assert_eq!(status, 200);
    let issuer = format!("{}/realms/resilient-test", kc.url());
    assert_eq!(body["issuer"], json!(issuer));
    assert_eq!(
        body["token_endpoint"],
        json!(format!("{issuer}/protocol/openid-connect/token"))
    );
}

#[test]
fn unknown_realm_does_not_exist() {
    let kc = FakeKeycloak::start();
    let url = format!(
        "{}/realms/nosuch/.well-known/openid-configuration",
        kc.url()
    );
    let (status, body) = status_json(client().get(url).send().unwrap());
    assert_eq!(status, 404);
    assert_eq!(body, json!({"error": "Realm does not exist"}));

    let url = format!("{}/realms/nosuch/protocol/openid-connect/token", kc.url());
    let response = client()
        .post(url)
        .form(&[("grant_type", "password")])
        .send()
        .unwrap();
    assert_eq!(
        status_json(response),
        (404, json!({"error": "Realm does not exist"}))
    );
}

#[test]
fn unmatched_path_is_keycloaks_generic_404() {
    let kc = FakeKeycloak::start();
    let (status, body) = status_json(
        client()
            .get(format!("{}/nosuchpath", kc.url()))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"error": "Unable to find matching target resource method"})
    );
}

// --- password grant ---------------------------------------------------------------------------

#[test]
fn password_grant_success_has_keycloaks_fields() {
    let kc = FakeKeycloak::start();
    let response = password_login(&kc, "alice", "Alice-Password-1");
    let (status, body) = status_json(response);
    assert_eq!(status, 200);
    assert_jwt_shaped(body["access_token"].as_str().unwrap());
    assert!(!body["refresh_token"].as_str().unwrap().is_empty());
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["refresh_expires_in"], 1800);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["not-before-policy"], 0);
    assert_eq!(body["scope"], "profile email");
    assert!(body.get("id_token").is_none());
    // 26.7 session ids are 24 base64url characters, not UUIDs.
    let session_state = body["session_state"].as_str().unwrap();
    assert_eq!(session_state.len(), 24);
    assert!(is_base64url(session_state));
}

#[test]
fn token_answers_say_no_store() {
    let kc = FakeKeycloak::start();
    for response in [
        password_login(&kc, "alice", "Alice-Password-1"),
        password_login(&kc, "alice", "wrong"),
    ] {
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(response.headers()["content-type"], "application/json");
    }
}

#[test]
fn access_token_claims_name_the_user_and_client() {
    let kc = FakeKeycloak::start();
    let (_, body) = status_json(password_login(&kc, "alice", "Alice-Password-1"));
    let token = body["access_token"].as_str().unwrap();
    let claims = decode_claims(token);
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["azp"], "webapp");
    assert_eq!(claims["typ"], "Bearer");
    assert_eq!(claims["email"], "alice@example.test");
    assert_eq!(claims["sid"], body["session_state"]);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        300
    );
    assert_eq!(
        claims["sub"].as_str(),
        kc.user_id("alice").as_deref(),
        "sub is the user id"
    );
}

#[test]
fn email_works_as_login_name() {
    let kc = FakeKeycloak::start();
    let (status, _) = status_json(password_login(
        &kc,
        "Alice@Example.test",
        "Alice-Password-1",
    ));
    assert_eq!(status, 200);
}

#[test]
fn missing_username_is_401_and_missing_password_is_bad_credentials() {
    let kc = FakeKeycloak::start();
    let response = post_token(
        &kc,
        &[
            ("grant_type", "password"),
            ("client_id", "webapp"),
            ("client_secret", "webapp-test-secret"),
            ("password", "Alice-Password-1"),
        ],
    );
    assert_eq!(
        status_json(response),
        (
            401,
            json!({"error": "invalid_request", "error_description": "Missing parameter: username"})
        )
    );
    let response = post_token(
        &kc,
        &[
            ("grant_type", "password"),
            ("client_id", "webapp"),
            ("client_secret", "webapp-test-secret"),
            ("username", "alice"),
        ],
    );
    assert_eq!(
        status_json(response),
        (
            401,
            json!({"error": "invalid_grant", "error_description": "Invalid user credentials"})
        )
    );
}

#[test]
fn get_on_the_token_endpoint_is_405() {
    let kc = FakeKeycloak::start();
    let response = client().get(token_url(&kc)).send().unwrap();
    assert_eq!(
        status_json(response),
        (405, json!({"error": "HTTP 405 Method Not Allowed"}))
    );
}

#[test]
fn two_logins_get_different_tokens() {
    let kc = FakeKeycloak::start();
    let (_, a) = status_json(password_login(&kc, "bob", "Bob-Password-1"));
    let (_, b) = status_json(password_login(&kc, "bob", "Bob-Password-1"));
    assert_ne!(a["access_token"], b["access_token"]);
    assert_ne!(a["refresh_token"], b["refresh_token"]);
}

#[test]
fn username_is_case_insensitive() {
    let kc = FakeKeycloak::start();
    let (status, _) = status_json(password_login(&kc, "ALICE", "Alice-Password-1"));
    assert_eq!(status, 200);
    let (status, _) = status_json(password_login(&kc, "Dave", "Dave-Password-1"));
    assert_eq!(status, 200);
    // The password is not.
    let (status, _) = status_json(password_login(&kc, "alice", "alice-password-1"));
    assert_eq!(status, 401);
}

#[test]
fn wrong_password_and_unknown_user_are_invalid_grant_401_by_default() {
    let kc = FakeKeycloak::start();
    let expected =
        json!({"error": "invalid_grant", "error_description": "Invalid user credentials"});
    assert_eq!(
        status_json(password_login(&kc, "alice", "wrong")),
        (401, expected.clone())
    );
    assert_eq!(
        status_json(password_login(&kc, "nobody", "whatever")),
        (401, expected)
    );
}

#[test]
fn wrong_password_status_can_be_400_like_keycloak_26_6() {
    let kc = FakeKeycloak::start();
    kc.set_wrong_password_status(400);
    let expected =
        json!({"error": "invalid_grant", "error_description": "Invalid user credentials"});
    assert_eq!(
        status_json(password_login(&kc, "alice", "wrong")),
        (400, expected.clone())
    );
    assert_eq!(
        status_json(password_login(&kc, "nobody", "whatever")),
        (400, expected)
    );
}

#[test]
fn disabled_user_is_account_disabled_only_with_the_right_password() {
    let kc = FakeKeycloak::start();
    assert_eq!(
        status_json(password_login(&kc, "carol", "Carol-Password-1")),
        (
            400,
            json!({"error": "invalid_grant", "error_description": "Account disabled"})
        )
    );
    assert_eq!(
        status_json(password_login(&kc, "carol", "wrong")),
        (
            401,
            json!({"error": "invalid_grant", "error_description": "Invalid user credentials"})
        )
    );
}

#[test]
fn client_without_direct_grants_is_refused() {
    let kc = FakeKeycloak::start();
    let response = post_token(
        &kc,
        &[
            ("grant_type", "password"),
            ("client_id", "no-direct-grants"),
            ("client_secret", "no-direct-test-secret"),
            ("username", "alice"),
            ("password", "Alice-Password-1"),
        ],
    );
    assert_eq!(
        status_json(response),
        (
            400,
            json!({"error": "unauthorized_client", "error_description": "Client not allowed for direct access grants"})
        )
    );
}

#[test]
fn wrong_secret_and_unknown_client_are_401() {
    let kc = FakeKeycloak::start();
    let form = |id: &'static str, secret: &'static str| {
        [
            ("grant_type", "password"),
            ("client_id", id),
            ("client_secret", secret),
            ("username", "alice"),
            ("password", "Alice-Password-1"),
        ]
    };
    let description = "Invalid client or Invalid client credentials";
    assert_eq!(
        status_json(post_token(&kc, &form("webapp", "wrong-secret"))),
        (
            401,
            json!({"error": "unauthorized_client", "error_description": description})
        )
    );
    // Keycloak answers an unknown client with `invalid_client`, not `unauthorized_client`.
    assert_eq!(
        status_json(post_token(&kc, &form("nosuchclient", "x"))),
        (
            401,
            json!({"error": "invalid_client", "error_description": description})
        )
    );
}

#[test]
fn http_basic_client_authentication_is_accepted() {
    let kc = FakeKeycloak::start();
    let response = client()
        .post(token_url(&kc))
        .basic_auth("webapp", Some("webapp-test-secret"))
        .form(&[
            ("grant_type", "password"),
            ("username", "erin"),
            ("password", "Erin-Password-1"),
        ])
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let response = client()
        .post(token_url(&kc))
        .basic_auth("webapp", Some("nope"))
        .form(&[
            ("grant_type", "password"),
            ("username", "erin"),
            ("password", "Erin-Password-1"),
        ])
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn form_decoding_handles_plus_and_percent() {
    let kc = FakeKeycloak::start();
    kc.add_user("frank", "p@ss w+rd&=%", true);
    // reqwest encodes space as `+` and the rest as %XX.
    let (status, _) = status_json(password_login(&kc, "frank", "p@ss w+rd&=%"));
    assert_eq!(status, 200);
}

#[test]
fn grant_type_errors() {
    let kc = FakeKeycloak::start();
    let response = post_token(
        &kc,
        &[
            ("grant_type", "magic"),
            ("client_id", "webapp"),
            ("client_secret", "webapp-test-secret"),
        ],
    );
    assert_eq!(
        status_json(response),
        (
            400,
            json!({"error": "unsupported_grant_type", "error_description": "Unsupported grant_type"})
        )
    );
    let response = post_token(
        &kc,
        &[
            ("client_id", "webapp"),
            ("client_secret", "webapp-test-secret"),
        ],
    );
    assert_eq!(
        status_json(response),
        (
            400,
            json!({"error": "invalid_request", "error_description": "Missing form parameter: grant_type"})
        )
    );
}

// --- refresh and client credentials -----------------------------------------------------------

#[test]
fn refresh_token_grant() {
    let kc = FakeKeycloak::start();
    let (_, login) = status_json(password_login(&kc, "alice", "Alice-Password-1"));
    let refresh = login["refresh_token"].as_str().unwrap();
    let response = post_token(
        &kc,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "webapp"),
            ("client_secret", "webapp-test-secret"),
            ("refresh_token", refresh),
        ],
    );
    let (status, body) = status_json(response);
    assert_eq!(status, 200);
    assert_jwt_shaped(body["access_token"].as_str().unwrap());
    assert_ne!(body["access_token"], login["access_token"]);
    assert_eq!(body["session_state"], login["session_state"]);
    assert_eq!(body["refresh_expires_in"], 1800);

    // Not single-use.
    let response = post_token(
        &kc,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "webapp"),
            ("client_secret", "webapp-test-secret"),
            ("refresh_token", refresh),
        ],
    );
    assert_eq!(response.status(), StatusCode::OK);

    // Bound to the client it was issued to.
    let response = post_token(
        &kc,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "no-direct-grants"),
            ("client_secret", "no-direct-test-secret"),
            ("refresh_token", refresh),
        ],
    );
    assert_eq!(
        status_json(response),
        (
            400,
            json!({"error": "invalid_grant", "error_description": "Invalid refresh token. Token client and authorized client don't match"})
        )
    );

    let response = post_token(
        &kc,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "webapp"),
            ("client_secret", "webapp-test-secret"),
        ],
    );
    assert_eq!(
        status_json(response),
        (
            400,
            json!({"error": "invalid_request", "error_description": "No refresh token"})
        )
    );

    let response = post_token(
        &kc,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "webapp"),
            ("client_secret", "webapp-test-secret"),
            ("refresh_token", "not-a-refresh-token"),
        ],
    );
    assert_eq!(
        status_json(response),
        (
            400,
            json!({"error": "invalid_grant", "error_description": "Invalid refresh token"})
        )
    );
}

#[test]
fn client_credentials_grant() {
    let kc = FakeKeycloak::start();
    let (status, body) = status_json(client_credentials(
        &kc,
        "keycloak-resilient-sync",
        "sync-test-secret",
    ));
    assert_eq!(status, 200);
    assert_jwt_shaped(body["access_token"].as_str().unwrap());
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["refresh_expires_in"], 0);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["not-before-policy"], 0);
    assert_eq!(body["scope"], "profile email");
    assert!(body.get("refresh_token").is_none());
    assert!(body.get("session_state").is_none());
    let claims = decode_claims(body["access_token"].as_str().unwrap());
    assert_eq!(
        claims["preferred_username"],
        "service-account-keycloak-resilient-sync"
    );

    // A service account without admin roles still gets a token; the admin API refuses later.
    let (status, _) = status_json(client_credentials(
        &kc,
        "no-admin-rights",
        "no-admin-test-secret",
    ));
    assert_eq!(status, 200);

    assert_eq!(
        status_json(client_credentials(&kc, "webapp", "webapp-test-secret")),
        (
            401,
            json!({"error": "unauthorized_client", "error_description": "Client not enabled to retrieve service account"})
        )
    );
}

// --- admin API ---------------------------------------------------------------------------------

#[test]
fn admin_api_needs_a_token_with_admin_roles() {
    let kc = FakeKeycloak::start();
    let unauthorized = (401, json!({"error": "HTTP 401 Unauthorized"}));
    let response = client().get(users_url(&kc)).send().unwrap();
    assert_eq!(status_json(response), unauthorized);
    let response = client()
        .get(users_url(&kc))
        .bearer_auth("garbage")
        .send()
        .unwrap();
    assert_eq!(status_json(response), unauthorized);

    let (_, body) = status_json(client_credentials(
        &kc,
        "no-admin-rights",
        "no-admin-test-secret",
    ));
    let weak = body["access_token"].as_str().unwrap().to_string();
    let response = client()
        .get(users_url(&kc))
        .bearer_auth(&weak)
        .query(&[("username", "alice"), ("exact", "true")])
        .send()
        .unwrap();
    assert_eq!(
        status_json(response),
        (403, json!({"error": "HTTP 403 Forbidden"}))
    );

    // A person's token is no admin token either.
    let (_, login) = status_json(password_login(&kc, "alice", "Alice-Password-1"));
    let response = client()
        .get(users_url(&kc))
        .bearer_auth(login["access_token"].as_str().unwrap())
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // Unknown realm on the admin side has its own message (trailing period included).
    let response = client()
        .get(format!("{}/admin/realms/nosuch/users", kc.url()))
        .bearer_auth(admin_token(&kc))
        .send()
        .unwrap();
    assert_eq!(
        status_json(response),
        (404, json!({"error": "Realm not found."}))
    );
}

#[test]
fn user_search_is_exact_and_case_insensitive() {
    let kc = FakeKeycloak::start();
    let token = admin_token(&kc);
    let found = find_user(&kc, &token, "ALICE");
    assert_eq!(found.len(), 1);
    let alice = &found[0];
    assert_eq!(alice["username"], "alice");
    assert_eq!(alice["enabled"], true);
    assert_eq!(alice["email"], "alice@example.test");
    assert_eq!(alice["totp"], false);
    assert_eq!(alice["requiredActions"], json!([]));
    assert!(uuid::Uuid::parse_str(alice["id"].as_str().unwrap()).is_ok());
    assert_eq!(
        alice["id"].as_str(),
        kc.user_id("alice").as_deref(),
        "id matches the control API"
    );
    assert!(alice["createdTimestamp"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(alice["access"], json!({"manage": true}));

    assert!(find_user(&kc, &token, "nobody").is_empty());
    // exact=true does not match a prefix; without it the username is a substring.
    assert!(find_user(&kc, &token, "ali").is_empty());
    let response = client()
        .get(users_url(&kc))
        .bearer_auth(&token)
        .query(&[("username", "LIC")])
        .send()
        .unwrap();
    let (status, body) = status_json(response);
    assert_eq!(status, 200);
    assert_eq!(body.as_array().unwrap().len(), 1);
    assert_eq!(body[0]["username"], "alice");
    let carol = find_user(&kc, &token, "carol");
    assert_eq!(carol[0]["enabled"], false);
}

#[test]
fn reset_password_then_login_with_new_password() {
    let kc = FakeKeycloak::start();
    let (_, before) = status_json(password_login(&kc, "bob", "Bob-Password-1"));
    let token = admin_token(&kc);
    let id = kc.user_id("bob").unwrap();
    let url = format!("{}/{id}/reset-password", users_url(&kc));
    let response = client()
        .put(&url)
        .bearer_auth(&token)
        .json(&json!({"type": "password", "value": "Bob-New-Password-2", "temporary": false}))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.text().unwrap().is_empty());
    assert_eq!(kc.password_of("BOB").as_deref(), Some("Bob-New-Password-2"));

    let (status, _) = status_json(password_login(&kc, "bob", "Bob-New-Password-2"));
    assert_eq!(status, 200);
    let (status, _) = status_json(password_login(&kc, "bob", "Bob-Password-1"));
    assert_eq!(status, 401);

    // A reset does not end existing sessions.
    let response = post_token(
        &kc,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "webapp"),
            ("client_secret", "webapp-test-secret"),
            ("refresh_token", before["refresh_token"].as_str().unwrap()),
        ],
    );
    assert_eq!(response.status(), StatusCode::OK);
}

#[test]
fn reset_password_errors() {
    let kc = FakeKeycloak::start();
    let token = admin_token(&kc);
    let id = kc.user_id("dave").unwrap();
    let response = client()
        .put(format!("{}/{id}/reset-password", users_url(&kc)))
        .bearer_auth(&token)
        .json(&json!({"type": "password", "value": "short", "temporary": false}))
        .send()
        .unwrap();
    assert_eq!(
        status_json(response),
        (
            400,
            json!({"error": "invalidPasswordMinLengthMessage", "error_description": "Invalid password: minimum length 8."})
        )
    );
    assert_eq!(kc.password_of("dave").as_deref(), Some("Dave-Password-1"));

    let response = client()
        .put(format!(
            "{}/{}/reset-password",
            users_url(&kc),
            uuid::Uuid::new_v4()
        ))
        .bearer_auth(&token)
        .json(&json!({"type": "password", "value": "Long-Enough-1", "temporary": false}))
        .send()
        .unwrap();
    assert_eq!(
        status_json(response),
        (404, json!({"error": "User not found"}))
    );

    let reset_url = format!("{}/{id}/reset-password", users_url(&kc));
    let response = client()
        .put(&reset_url)
        .bearer_auth(&token)
        .json(&json!({"type": "password", "value": "", "temporary": false}))
        .send()
        .unwrap();
    assert_eq!(
        status_json(response),
        (400, json!({"error": "Empty password not allowed"}))
    );

    let response = client()
        .put(&reset_url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(
        status_json(response),
        (
            400,
            json!({"error": "invalid_request", "error_description": "Cannot parse the JSON"})
        )
    );

    let response = client()
        .put(&reset_url)
        .bearer_auth(&token)
        .body(r#"{"type":"password","value":"Long-Enough-1","temporary":false}"#)
        .send()
        .unwrap();
    assert_eq!(
        status_json(response),
        (
            415,
            json!({"error": "The content-type header value did not match the value in @Consumes"})
        )
    );

    let (_, weak) = status_json(client_credentials(
        &kc,
        "no-admin-rights",
        "no-admin-test-secret",
    ));
    let response = client()
        .put(&reset_url)
        .bearer_auth(weak["access_token"].as_str().unwrap())
        .json(&json!({"type": "password", "value": "Long-Enough-1", "temporary": false}))
        .send()
        .unwrap();
    assert_eq!(
        status_json(response),
        (403, json!({"error": "HTTP 403 Forbidden"}))
    );
    assert_eq!(kc.password_of("dave").as_deref(), Some("Dave-Password-1"));
}

#[test]
fn temporary_password_blocks_the_password_grant() {
    let kc = FakeKeycloak::start();
    let token = admin_token(&kc);
    let id = kc.user_id("erin").unwrap();
    let response = client()
        .put(format!("{}/{id}/reset-password", users_url(&kc)))
        .bearer_auth(&token)
        .json(&json!({"type": "password", "value": "Erin-Temp-Pass-1", "temporary": true}))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        status_json(password_login(&kc, "erin", "Erin-Temp-Pass-1")),
        (
            400,
            json!({"error": "invalid_grant", "error_description": "Account is not fully set up"})
        )
    );
}

#[test]
fn create_then_delete_user() {
    let kc = FakeKeycloak::start();
    let token = admin_token(&kc);
    let new_user = json!({
        "username": "Grace",
        "enabled": true,
        "email": "grace@example.test",
        "firstName": "Grace",
        "lastName": "Test",
        "emailVerified": false,
        "credentials": [{"type": "password", "value": "Grace-Password-1", "temporary": false}]
    });
    let response = client()
        .post(users_url(&kc))
        .bearer_auth(&token)
        .json(&new_user)
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert!(response.text().unwrap().is_empty());
    let id = kc.user_id("grace").expect("created, lowercased");
    assert_eq!(location, format!("{}/{id}", users_url(&kc)));

    let (status, _) = status_json(password_login(&kc, "grace", "Grace-Password-1"));
    assert_eq!(status, 200);

    let response = client().get(&location).bearer_auth(&token).send().unwrap();
    let (status, rep) = status_json(response);
    assert_eq!(status, 200);
    assert_eq!(rep["username"], "grace");
    assert_eq!(rep["access"]["resetPassword"], true);

    // Same username and same email: Keycloak reports the email.
    let response = client()
        .post(users_url(&kc))
        .bearer_auth(&token)
        .json(&new_user)
        .send()
        .unwrap();
    assert_eq!(
        status_json(response),
        (409, json!({"errorMessage": "User exists with same email"}))
    );
    let response = client()
        .post(users_url(&kc))
        .bearer_auth(&token)
        .json(&json!({"username": "GRACE", "enabled": true}))
        .send()
        .unwrap();
    assert_eq!(
        status_json(response),
        (
            409,
            json!({"errorMessage": "User exists with same username"})
        )
    );

    let response = client()
        .delete(&location)
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(kc.user_id("grace").is_none());
    let response = client()
        .delete(&location)
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(
        status_json(response),
        (404, json!({"error": "User not found"}))
    );
}

#[test]
fn create_user_with_short_password_is_refused_whole() {
    let kc = FakeKeycloak::start();
    let token = admin_token(&kc);
    let response = client()
        .post(users_url(&kc))
        .bearer_auth(&token)
        .json(&json!({
            "username": "heidi",
            "enabled": true,
            "credentials": [{"type": "password", "value": "short", "temporary": false}]
        }))
        .send()
        .unwrap();
    assert_eq!(
        status_json(response),
        (
            400,
            json!({"error": "invalidPasswordMinLengthMessage", "error_description": "Invalid password: minimum length 8."})
        )
    );
    assert!(kc.user_id("heidi").is_none());

    let response = client()
        .post(users_url(&kc))
        .bearer_auth(&token)
        .json(&json!({"enabled": true}))
        .send()
        .unwrap();
    assert_eq!(
        status_json(response),
        (400, json!({"errorMessage": "User name is missing"}))
    );
}

#[test]
fn user_without_profile_fields_is_not_fully_set_up() {
    let kc = FakeKeycloak::start();
    let token = admin_token(&kc);
    let response = client()
        .post(users_url(&kc))
        .bearer_auth(&token)
        .json(&json!({
            "username": "ivan",
            "enabled": true,
            "credentials": [{"type": "password", "value": "Ivan-Password-1", "temporary": false}]
        }))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        status_json(password_login(&kc, "ivan", "Ivan-Password-1")),
        (
            400,
            json!({"error": "invalid_grant", "error_description": "Account is not fully set up"})
        )
    );
}

// --- control API --------------------------------------------------------------------------------

#[test]
fn control_api_users_and_secrets() {
    let kc = FakeKeycloak::start();
    assert_eq!(kc.realm(), "resilient-test");
    assert!(kc.url().starts_with("http://127.0.0.1:"));
    assert_eq!(kc.password_of("alice").as_deref(), Some("Alice-Password-1"));
    assert_eq!(kc.password_of("nobody"), None);

    kc.add_user("Ivan", "Ivan-Password-1", true);
    assert_eq!(kc.password_of("ivan").as_deref(), Some("Ivan-Password-1"));
    let (status, _) = status_json(password_login(&kc, "ivan", "Ivan-Password-1"));
    assert_eq!(status, 200);
    kc.add_user("ivan", "Ivan-Password-2", false);
    let (status, body) = status_json(password_login(&kc, "ivan", "Ivan-Password-2"));
    assert_eq!(
        (status, body["error_description"].clone()),
        (400, json!("Account disabled"))
    );

    kc.set_client_secret("webapp", "rotated-secret");
    let (status, _) = status_json(password_login(&kc, "alice", "Alice-Password-1"));
    assert_eq!(status, 401);
}

#[test]
fn requests_are_logged_without_query_strings() {
    let kc = FakeKeycloak::start();
    assert_eq!(kc.request_count(), 0);
    let token = admin_token(&kc);
    find_user(&kc, &token, "alice");
    assert_eq!(kc.request_count(), 2);
    assert_eq!(
        kc.requests(),
        vec![
            "POST /realms/resilient-test/protocol/openid-connect/token".to_string(),
            "GET /admin/realms/resilient-test/users".to_string(),
        ]
    );
}

// --- behaviours ---------------------------------------------------------------------------------

fn discovery(kc: &FakeKeycloak, http: &Client) -> reqwest::Result<Response> {
    http.get(format!(
        "{}/realms/{}/.well-known/openid-configuration",
        kc.url(),
        REALM
    ))
    .send()
}

#[test]
fn refuse_then_normal_again_on_the_same_port() {
    let kc = FakeKeycloak::start();
    let url = kc.url();
    kc.set_behavior(Behavior::Refuse);
    let error = discovery(&kc, &client()).expect_err("connection refused");
    assert!(error.is_connect(), "{error:?}");
    assert!(TcpStream::connect(("127.0.0.1", kc.port())).is_err());
    assert_eq!(kc.request_count(), 0);

    kc.set_behavior(Behavior::Normal);
    assert_eq!(kc.url(), url);
    let response = discovery(&kc, &client()).expect("serving again");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(kc.request_count(), 1);

    // And once more, to be sure the re-bound listener can be closed again.
    kc.set_behavior(Behavior::Refuse);
    assert!(discovery(&kc, &client()).unwrap_err().is_connect());
    kc.set_behavior(Behavior::Normal);
    assert!(discovery(&kc, &client()).is_ok());
}

#[test]
fn hang_times_out_at_the_client_timeout() {
    let kc = FakeKeycloak::start();
    kc.set_behavior(Behavior::Hang);
    let started = Instant::now();
    let error =
        discovery(&kc, &client_with_timeout(Duration::from_millis(500))).expect_err("no answer");
    assert!(error.is_timeout(), "{error:?}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(started.elapsed() < Duration::from_secs(4));
    // The request did reach the server.
    assert_eq!(kc.request_count(), 1);
}

#[test]
fn hung_connection_is_released_when_behaviour_changes() {
    let kc = FakeKeycloak::start();
    kc.set_behavior(Behavior::Hang);
    let url = format!(
        "{}/realms/{}/.well-known/openid-configuration",
        kc.url(),
        REALM
    );
    let started = Instant::now();
    let hung = thread::spawn(move || {
        client_with_timeout(Duration::from_secs(20))
            .get(url)
            .send()
            .map(|r| r.status())
    });
    while kc.request_count() == 0 && started.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(10));
    }
    kc.set_behavior(Behavior::Normal);
    // Other requests are served while (and after) one is hung.
    assert_eq!(discovery(&kc, &client()).unwrap().status(), StatusCode::OK);
    let result = hung.join().unwrap();
    assert!(result.is_err(), "the hung request is dropped unanswered");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn status_behaviour_answers_like_a_proxy() {
    let kc = FakeKeycloak::start();
    kc.set_behavior(Behavior::Status(503));
    let response = discovery(&kc, &client()).unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["content-type"], "text/html");
    assert_eq!(response.text().unwrap(), "<html><body>Error</body></html>");
    let response = password_login(&kc, "alice", "Alice-Password-1");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(kc.request_count(), 2);

    kc.set_behavior(Behavior::Normal);
    assert_eq!(discovery(&kc, &client()).unwrap().status(), StatusCode::OK);
}

#[test]
fn slow_behaviour_delays_then_answers_normally() {
    let kc = FakeKeycloak::start();
    kc.set_behavior(Behavior::Slow(Duration::from_millis(300)));
    let started = Instant::now();
    let response = password_login(&kc, "alice", "Alice-Password-1");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Slower than the client's patience is a timeout.
    kc.set_behavior(Behavior::Slow(Duration::from_secs(3)));
    let error =
        discovery(&kc, &client_with_timeout(Duration::from_millis(300))).expect_err("too slow");
    assert!(error.is_timeout(), "{error:?}");
}

#[test]
fn drop_is_prompt_and_releases_the_port_even_with_hung_connections() {
    let kc = FakeKeycloak::start();
    let port = kc.port();
    kc.set_behavior(Behavior::Hang);
    let url = kc.url();
    let hung = thread::spawn(move || {
        client_with_timeout(Duration::from_secs(20))
            .get(format!("{url}/realms/resilient-test"))
            .send()
            .map(|r| r.status())
    });
    let waiting = Instant::now();
    while kc.request_count() == 0 && waiting.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(kc.request_count(), 1);

    let started = Instant::now();
    drop(kc);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        started.elapsed()
    );
    assert!(hung.join().unwrap().is_err());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    TcpListener::bind(("127.0.0.1", port)).expect("port is free again");
}

#[test]
fn drop_while_refusing_is_fine() {
    let kc = FakeKeycloak::start();
    kc.set_behavior(Behavior::Refuse);
    let started = Instant::now();
    drop(kc);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn credentials_list_the_password_with_a_created_date_that_moves_on_reset() {
    let kc = FakeKeycloak::start();
    let token = admin_token(&kc);
    let id = kc.user_id("dave").unwrap();
    let list = |token: &str| {
        client()
            .get(format!("{}/{id}/credentials", users_url(&kc)))
            .bearer_auth(token)
            .send()
            .unwrap()
    };
    let (status, before) = status_json(list(&token));
    assert_eq!(status, 200);
    let creds = before
        .as_array()
        .expect("an array of CredentialRepresentation");
    assert_eq!(creds.len(), 1);
    assert_eq!(creds[0]["type"], "password");
    assert!(creds[0].get("secretData").is_none(), "never the secret");
    assert!(creds[0]["credentialData"].is_string());
    let created = creds[0]["createdDate"]
        .as_u64()
        .expect("epoch milliseconds");
    assert!(
        created > 1_000_000_000_000,
        "milliseconds, not seconds: {created}"
    );

    std::thread::sleep(Duration::from_millis(3));
    let response = client()
        .put(format!("{}/{id}/reset-password", users_url(&kc)))
        .bearer_auth(&token)
        .json(&json!({"type": "password", "value": "Dave-New-Password-2", "temporary": false}))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (_, after) = status_json(list(&token));
    assert_eq!(
        after[0]["id"], creds[0]["id"],
        "a reset keeps the credential id"
    );
    assert!(after[0]["createdDate"].as_u64().unwrap() > created);
    assert_eq!(
        kc.password_resets("dave"),
        vec!["Dave-New-Password-2".to_string()]
    );

    // Without view-users: 403, as every admin read.
    let (_, no_admin) = status_json(client_credentials(
        &kc,
        "no-admin-rights",
        "no-admin-test-secret",
    ));
    let weak = no_admin["access_token"].as_str().unwrap();
    assert_eq!(list(weak).status(), StatusCode::FORBIDDEN);
}

// --- account states (issue 12), measured on 26.7.3 ---------------------------------------------

fn admin_get(kc: &FakeKeycloak, token: &str, path: &str) -> (u16, Value) {
    let url = format!("{}/admin/realms/{}/{path}", kc.url(), kc.realm());
    status_json(client().get(url).bearer_auth(token).send().unwrap())
}

fn invalid_credentials() -> Value {
    json!({"error": "invalid_grant", "error_description": "Invalid user credentials"})
}

fn not_fully_set_up() -> Value {
    json!({"error": "invalid_grant", "error_description": "Account is not fully set up"})
}

#[test]
fn disable_user_then_enable_again() {
    let kc = FakeKeycloak::start();
    kc.set_wrong_password_status(400);
    assert!(kc.disable_user("Dave"));
    assert_eq!(
        status_json(password_login(&kc, "dave", "Dave-Password-1")),
        (
            400,
            json!({"error": "invalid_grant", "error_description": "Account disabled"})
        )
    );
    assert_eq!(
        status_json(password_login(&kc, "dave", "Wrong-Password-0")),
        (400, invalid_credentials())
    );
    let token = admin_token(&kc);
    assert_eq!(find_user(&kc, &token, "dave")[0]["enabled"], json!(false));
    assert!(kc.enable_user("dave"));
    assert_eq!(password_login(&kc, "dave", "Dave-Password-1").status(), 200);
    assert!(!kc.disable_user("nobody"));
}

#[test]
fn removed_user_is_gone_and_its_id_is_user_not_found() {
    let kc = FakeKeycloak::start();
    kc.set_wrong_password_status(400);
    let id = kc.user_id("dave").unwrap();
    let token = admin_token(&kc);
    assert!(kc.remove_user("dave"));
    assert!(!kc.remove_user("dave"));
    assert_eq!(
        status_json(password_login(&kc, "dave", "Dave-Password-1")),
        (400, invalid_credentials())
    );
    let user_not_found = (404, json!({"error": "User not found"}));
    assert_eq!(
        admin_get(&kc, &token, &format!("users/{id}")),
        user_not_found
    );
    assert_eq!(
        admin_get(&kc, &token, &format!("users/{id}/nosuch")),
        user_not_found
    );
    assert_eq!(admin_get(&kc, &token, "users/not-a-uuid"), user_not_found);
}

#[test]
fn missing_route_404_differs_from_missing_user_404() {
    let kc = FakeKeycloak::start();
    let token = admin_token(&kc);
    let no_route = (404, json!({"error": "HTTP 404 Not Found"}));
    assert_eq!(admin_get(&kc, &token, "userz"), no_route);
    let alice = kc.user_id("alice").unwrap();
    assert_eq!(
        admin_get(&kc, &token, &format!("users/{alice}/nosuch")),
        no_route
    );
    let url = format!("{}/admin/realms/nope/users/{alice}", kc.url());
    assert_eq!(
        status_json(client().get(url).bearer_auth(&token).send().unwrap()),
        (404, json!({"error": "Realm not found."}))
    );
    let url = format!("{}/admin/nosuch", kc.url());
    assert_eq!(
        status_json(client().get(url).bearer_auth(&token).send().unwrap()),
        (405, json!({"error": "HTTP 405 Method Not Allowed"}))
    );
}

#[test]
fn brute_force_lock_refuses_even_the_right_password_until_unlocked() {
    let kc = FakeKeycloak::start();
    kc.set_wrong_password_status(400);
    let token = admin_token(&kc);
    let id = kc.user_id("erin").unwrap();
    let path = format!("attack-detection/brute-force/users/{id}");
    assert_eq!(admin_get(&kc, &token, &path).1["disabled"], json!(false));
    assert!(kc.set_brute_force_locked("erin", true));
    for password in ["Erin-Password-1", "Wrong-Password-0"] {
        assert_eq!(
            status_json(password_login(&kc, "erin", password)),
            (400, invalid_credentials())
        );
    }
    let (status, body) = admin_get(&kc, &token, &path);
    assert_eq!((status, &body["disabled"]), (200, &json!(true)));
    // The account itself stays enabled: only the detector knows.
    assert_eq!(find_user(&kc, &token, "erin")[0]["enabled"], json!(true));
    let noadm = client_credentials(&kc, "no-admin-rights", "no-admin-test-secret");
    let noadm = noadm.json::<Value>().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(admin_get(&kc, &noadm, &path).0, 403);
    let url = format!("{}/admin/realms/{}/{path}", kc.url(), kc.realm());
    let response = client().delete(url).bearer_auth(&token).send().unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(password_login(&kc, "erin", "Erin-Password-1").status(), 200);
}

#[test]
fn required_actions_block_the_password_grant_unless_unknown() {
    let kc = FakeKeycloak::start();
    kc.set_wrong_password_status(400);
    for action in [
        "VERIFY_EMAIL",
        "UPDATE_PASSWORD",
        "UPDATE_PROFILE",
        "CONFIGURE_TOTP",
    ] {
        assert!(kc.set_required_action("dave", action));
        assert_eq!(
            status_json(password_login(&kc, "dave", "Dave-Password-1")),
            (400, not_fully_set_up()),
            "{action}"
        );
        assert_eq!(
            status_json(password_login(&kc, "dave", "Wrong-Password-0")),
            (400, invalid_credentials()),
            "{action}"
        );
        assert!(kc.clear_required_actions("dave"));
    }
    let token = admin_token(&kc);
    kc.set_required_action("dave", "NO_SUCH_ACTION");
    assert_eq!(
        find_user(&kc, &token, "dave")[0]["requiredActions"],
        json!(["NO_SUCH_ACTION"])
    );
    assert_eq!(password_login(&kc, "dave", "Dave-Password-1").status(), 200);
}

#[test]
fn set_profile_without_names_or_email_is_not_fully_set_up() {
    let kc = FakeKeycloak::start();
    kc.set_wrong_password_status(400);
    let full = (Some("dave@example.test"), Some("Dave"), Some("Test"));
    let partial = [
        (None, full.1, full.2),
        (full.0, None, full.2),
        (full.0, full.1, None),
    ];
    for (email, first, last) in partial {
        assert!(kc.set_profile("dave", email, first, last));
        assert_eq!(
            status_json(password_login(&kc, "dave", "Dave-Password-1")),
            (400, not_fully_set_up())
        );
    }
    kc.set_profile("dave", full.0, full.1, full.2);
    assert_eq!(password_login(&kc, "dave", "Dave-Password-1").status(), 200);
}

#[test]
fn created_user_without_profile_fields_or_enabled() {
    let kc = FakeKeycloak::start();
    let token = admin_token(&kc);
    let create = |body: Value| {
        client()
            .post(users_url(&kc))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .unwrap()
    };
    let password = json!([{"type": "password", "value": "Kim-Password-1", "temporary": false}]);
    let response = create(json!({"username": "kim", "enabled": true, "credentials": password}));
    assert_eq!(response.status(), 201);
    assert_eq!(
        status_json(password_login(&kc, "kim", "Kim-Password-1")),
        (400, not_fully_set_up())
    );
    let (status, body) = status_json(create(json!({"username": "kim", "enabled": true})));
    assert_eq!(
        (status, body),
        (
            409,
            json!({"errorMessage": "User exists with same username"})
        )
    );
    let body = json!({"username": "nia", "enabled": true, "email": "ALICE@example.test"});
    assert_eq!(
        status_json(create(body)),
        (409, json!({"errorMessage": "User exists with same email"}))
    );
    let body = json!({"username": "ola", "email": "ola@example.test", "firstName": "Ola",
        "lastName": "Test", "credentials": password});
    assert_eq!(create(body).status(), 201);
    let ola = &find_user(&kc, &token, "ola")[0];
    assert_eq!(
        (&ola["enabled"], &ola["emailVerified"]),
        (&json!(false), &json!(false))
    );
    assert_eq!(
        status_json(password_login(&kc, "ola", "Kim-Password-1")),
        (
            400,
            json!({"error": "invalid_grant", "error_description": "Account disabled"})
        )
    );
}

// --- paging (issue 12), measured on 26.7.3 -----------------------------------------------------

fn usernames(body: &Value) -> Vec<String> {
    body.as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn user_list_pages_with_first_and_max() {
    let kc = FakeKeycloak::start();
    let token = admin_token(&kc);
    let page = |query: &str| {
        let (status, body) = admin_get(&kc, &token, &format!("users{query}"));
        assert_eq!(status, 200, "{query}");
        usernames(&body)
    };
    assert_eq!(page(""), ["alice", "bob", "carol", "dave", "erin"]);
    assert_eq!(page("?first=0&max=2"), ["alice", "bob"]);
    assert_eq!(page("?first=2&max=2"), ["carol", "dave"]);
    assert_eq!(page("?first=4&max=2"), ["erin"]);
    assert!(page("?first=6&max=2").is_empty());
    assert!(page("?max=0").is_empty());
    assert_eq!(page("?first=-1&max=2"), ["alice", "bob"]);
    assert_eq!(page("?first=3"), ["dave", "erin"]);
    assert_eq!(page("?enabled=false"), ["carol"]);
    assert_eq!(page("?search=*&first=0&max=100").len(), 5);
    assert_eq!(
        admin_get(&kc, &token, "users?first=abc"),
        (404, json!({"error": "HTTP 404 Not Found"}))
    );
    assert_eq!(admin_get(&kc, &token, "users/count"), (200, json!(5)));
}

#[test]
fn brief_representation_leaves_out_what_keycloak_leaves_out() {
    let kc = FakeKeycloak::start();
    let token = admin_token(&kc);
    let (status, body) = admin_get(&kc, &token, "users?first=0&max=2&briefRepresentation=true");
    assert_eq!(status, 200);
    let mut keys: Vec<&String> = body[0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "access",
            "createdTimestamp",
            "email",
            "emailVerified",
            "enabled",
            "firstName",
            "id",
            "lastName",
            "username"
        ]
    );
}

#[test]
fn count_and_enabled_filter_include_service_accounts_like_keycloak() {
    let kc = FakeKeycloak::start();
    let token = admin_token(&kc);
    assert_eq!(admin_get(&kc, &token, "users/count"), (200, json!(5)));
    assert_eq!(
        admin_get(&kc, &token, "users/count?enabled=true"),
        (200, json!(6))
    );
    assert_eq!(
        admin_get(&kc, &token, "users/count?username=ali"),
        (200, json!(1))
    );
    assert_eq!(
        usernames(&admin_get(&kc, &token, "users?search=*").1),
        ["alice", "bob", "carol", "dave", "erin"]
    );
}

// --- realm keys (issue 18) -----------------------------------------------------------------------

fn b64url_decode(part: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut acc = 0u32;
    let mut bytes = Vec::new();
    for c in part.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {part}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push(u8::try_from((acc >> bits) & 0xff).unwrap());
        }
    }
    bytes
}

fn jwt_header(token: &str) -> Value {
    serde_json::from_slice(&b64url_decode(token.split('.').next().unwrap())).unwrap()
}

fn jwks(kc: &FakeKeycloak) -> Value {
    let url = format!(
        "{}/realms/{}/.well-known/openid-configuration",
        kc.url(),
        REALM
    );
    let (_, discovery) = status_json(client().get(url).send().unwrap());
    let response = client()
        .get(discovery["jwks_uri"].as_str().unwrap())
        .send()
        .unwrap();
    let cache = response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(cache, "no-cache");
    let (status, body) = status_json(response);
    assert_eq!(status, 200);
    body
}

/// Verifies an RS256 JWT against the JWKS entry its `kid` names; false if none does or the
/// signature is wrong.
fn verifies(token: &str, jwks: &Value) -> bool {
    use aws_lc_rs::signature::{RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256};
    let kid = jwt_header(token)["kid"].clone();
    let Some(jwk) = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid && k["use"] == "sig")
    else {
        return false;
    };
    let (input, signature) = token.rsplit_once('.').unwrap();
    let key = RsaPublicKeyComponents {
        n: b64url_decode(jwk["n"].as_str().unwrap()),
        e: b64url_decode(jwk["e"].as_str().unwrap()),
    };
    key.verify(
        &RSA_PKCS1_2048_8192_SHA256,
        input.as_bytes(),
        &b64url_decode(signature),
    )
    .is_ok()
}

fn access_token(kc: &FakeKeycloak, username: &str, password: &str) -> String {
    let body: Value = password_login(kc, username, password).json().unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

#[test]
fn jwks_has_a_signing_and_an_encryption_key_shaped_like_keycloaks() {
    let kc = FakeKeycloak::start();
    let keys = jwks(&kc)["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2);
    let sig = keys.iter().find(|k| k["use"] == "sig").unwrap();
    let enc = keys.iter().find(|k| k["use"] == "enc").unwrap();
    assert_eq!((&sig["kty"], &sig["alg"]), (&json!("RSA"), &json!("RS256")));
    assert_eq!(
        (&enc["kty"], &enc["alg"]),
        (&json!("RSA"), &json!("RSA-OAEP"))
    );
    assert_eq!(sig["e"], json!("AQAB"));
    // A 2048-bit modulus is 256 bytes, 342 base64url characters; Keycloak's kid has 43.
    assert_eq!(sig["n"].as_str().unwrap().len(), 342);
    assert_eq!(sig["kid"].as_str().unwrap().len(), 43);
    assert_ne!(sig["kid"], enc["kid"]);
    assert_eq!(sig["kid"], json!(kc.active_kid()));
}

#[test]
fn tokens_are_rs256_and_verify_with_the_jwks() {
    let kc = FakeKeycloak::start();
    let keys = jwks(&kc);
    let token = access_token(&kc, "alice", "Alice-Password-1");
    assert_eq!(
        jwt_header(&token),
        json!({"alg": "RS256", "typ": "JWT", "kid": kc.active_kid()})
    );
    assert!(verifies(&token, &keys));
    let claims = decode_claims(&token);
    let issuer = format!("{}/realms/{REALM}", kc.url());
    assert_eq!(
        (
            &claims["iss"],
            &claims["azp"],
            &claims["preferred_username"]
        ),
        (&json!(issuer), &json!("webapp"), &json!("alice"))
    );
    assert!(claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap());
    assert!(verifies(&admin_token(&kc), &keys));
    // A tampered payload no longer verifies.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = parts[1].replacen('e', "f", 1);
    assert!(!verifies(&parts.join("."), &keys));
    // sign_token: any claims, signed by the realm.
    let odd = kc.sign_token(&json!({"iss": "elsewhere", "exp": 1}));
    assert!(verifies(&odd, &keys));
    assert_eq!(decode_claims(&odd)["iss"], json!("elsewhere"));
}

#[test]
fn an_added_key_with_a_higher_priority_signs_and_the_old_one_stays_published() {
    let kc = FakeKeycloak::start();
    let old_kid = kc.active_kid();
    let old_token = access_token(&kc, "alice", "Alice-Password-1");
    let new_kid = kc.add_signing_key(200);
    assert_ne!(new_kid, old_kid);
    assert_eq!(kc.active_kid(), new_kid);
    let keys = jwks(&kc);
    let sig_kids: Vec<&Value> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] == "sig")
        .map(|k| &k["kid"])
        .collect();
    assert_eq!(sig_kids, [&json!(new_kid), &json!(old_kid)]);
    let new_token = access_token(&kc, "alice", "Alice-Password-1");
    assert_eq!(jwt_header(&new_token)["kid"], json!(new_kid));
    assert!(verifies(&new_token, &keys) && verifies(&old_token, &keys));
    // A lower priority key is published but does not sign.
    let low = kc.add_signing_key(50);
    assert_eq!(kc.active_kid(), new_kid);
    assert!(kc.remove_signing_key(&low));
    // Removing the new key: its tokens stop verifying, the old key signs again.
    assert!(kc.remove_signing_key(&new_kid));
    assert!(!kc.remove_signing_key(&new_kid));
    let keys = jwks(&kc);
    assert!(!verifies(&new_token, &keys));
    assert!(verifies(&old_token, &keys));
    assert_eq!(kc.active_kid(), old_kid);
    assert!(!kc.remove_signing_key(&old_kid), "the last key stays");
}
