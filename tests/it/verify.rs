//! Issue 18: tokens checked for other applications from the kept realm keys (`verify-token`),
//! the outage grace, and cached tokens refreshed ahead of expiry — against the fake, whose
//! tokens are real RS256 JWTs and whose JWKS verifies them.

use crate::common::cli::{kr, kr_json, Service};
use crate::common::fake_keycloak::{Behavior, FakeKeycloak};
use crate::common::{unique_user, TestEnv, Tuning, PACKAGE};
use crate::scenarios::{manual_clock, past_cooldown};
use base64::Engine;
use keycloak_resilient::clock::ManualClock;
use keycloak_resilient::verify::{self, keys, Reason, Verification};
use keycloak_resilient::{Account, Auth};
use serde_json::{json, Value};
use std::time::Duration;

const PASSWORD: &str = "Verify-Password-1";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The claims of a JWT, unverified (to build odd tokens from a real one).
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims")
}

/// A config for `fake` with `verify_yaml` as its `keycloak.verify` section.
fn env_with_verify(fake: &FakeKeycloak, tuning: &Tuning, verify_yaml: &str) -> TestEnv {
    let env = TestEnv::new(&fake.url(), tuning);
    let path = env.config_path();
    let yaml = std::fs::read_to_string(&path).unwrap();
    let yaml = yaml.replacen(
        "  resilience:\n",
        &format!("  verify:\n{verify_yaml}  resilience:\n"),
        1,
    );
    std::fs::write(&path, yaml).unwrap();
    env
}

struct Setup {
    fake: FakeKeycloak,
    user: String,
    clock: ManualClock,
    auth: Auth,
    tuning: Tuning,
}

fn setup(verify_yaml: &str) -> Setup {
    let fake = FakeKeycloak::start();
    let user = unique_user("verify");
    fake.add_user(&user, PASSWORD, true);
    let tuning = Tuning::default();
    let env = env_with_verify(&fake, &tuning, verify_yaml);
    let clock = manual_clock();
    let auth = Auth::new(env.client_with_clock(&clock));
    Setup {
        fake,
        user,
        clock,
        auth,
        tuning,
    }
}

impl Setup {
    fn token(&self) -> String {
        self.auth
            .client()
            .authenticate(&self.user, PASSWORD, PACKAGE)
            .expect("online login")
            .access_token
    }

    fn verify(&self, token: &str) -> Verification {
        verify::verify_token(&self.auth, token).expect("verification runs")
    }

    fn refused(&self, token: &str) -> Reason {
        match self.verify(token) {
            Verification::Invalid(r) => r.reason,
            Verification::Valid(v) => panic!("expected a refusal, got {v:?}"),
        }
    }

    fn valid(&self, token: &str) -> verify::Valid {
        match self.verify(token) {
            Verification::Valid(v) => v,
            Verification::Invalid(r) => panic!("expected valid, got {r:?}"),
        }
    }

    /// Opens the circuit (the fake refuses connections; two failures is the threshold).
    fn open_circuit(&self) {
        self.fake.set_behavior(Behavior::Refuse);
        for _ in 0..self.tuning.failure_threshold {
            self.auth.client().keycloak().probe();
        }
        assert_eq!(
            self.auth.client().circuit().0,
            keycloak_resilient::keycloak::breaker::CircuitState::Open
        );
    }
}

#[test]
fn a_real_token_verifies_online_and_with_keycloak_down_from_the_kept_keys() {
    let s = setup("");
    let token = s.token();
    let v = s.valid(&token);
    assert_eq!(v.realm, s.fake.realm());
    assert_eq!(
        v.claims.preferred_username.as_deref(),
        Some(s.user.as_str())
    );
    assert_eq!(Some(v.claims.sub.clone()), s.fake.user_id(&s.user));
    assert!(!v.expired_in_grace);
    let kept = keys::kept(s.auth.client().store()).unwrap();
    assert_eq!(
        kept[s.fake.realm()].issuer,
        format!("{}/realms/{}", s.fake.url(), s.fake.realm())
    );

    // Kept keys: a second check asks Keycloak nothing.
    let before = s.fake.request_count();
    s.valid(&token);
    assert_eq!(s.fake.request_count(), before);

    s.fake.set_behavior(Behavior::Refuse);
    let v = s.valid(&token);
    assert_eq!(
        v.claims.preferred_username.as_deref(),
        Some(s.user.as_str())
    );
}

#[test]
fn a_rotated_key_is_fetched_once_and_the_refetch_is_rate_limited() {
    let s = setup("");
    let old = s.token();
    s.valid(&old);
    let new_kid = s.fake.add_signing_key(200);
    let rotated = s.token();
    assert_ne!(new_kid, "");
    let v = s.valid(&rotated);
    assert_eq!(v.realm, s.fake.realm());
    s.valid(&old);

    // Another rotation right away: the refetch that just ran holds the next one back.
    s.fake.add_signing_key(300);
    let again = s.token();
    let before = s.fake.request_count();
    assert_eq!(s.refused(&again), Reason::UnknownKey);
    assert_eq!(
        s.fake.request_count(),
        before,
        "no fetch inside the interval"
    );
    s.clock
        .advance(chrono::Duration::from_std(keys::UNKNOWN_KID_INTERVAL).unwrap());
    s.clock.advance(chrono::Duration::seconds(1));
    s.valid(&again);

    // A removed key's tokens stop verifying once the keys are fetched again.
    assert!(s.fake.remove_signing_key(&new_kid));
    let ring = keys::Keyring {
        store: s.auth.client().store(),
        keycloak: s.auth.client().keycloak(),
        clock: s.auth.client().clock(),
    };
    ring.refresh(s.fake.realm()).unwrap();
    assert_eq!(s.refused(&rotated), Reason::UnknownKey);
}

#[test]
fn tampered_unsigned_hmac_wrong_issuer_audience_and_expired_tokens_are_refused() {
    let s = setup("");
    let token = s.token();
    s.valid(&token);
    let claims = claims_of(&token);
    let parts: Vec<&str> = token.split('.').collect();

    let mut forged = claims.clone();
    forged["preferred_username"] = json!("admin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(forged.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(s.refused(&tampered), Reason::BadSignature);

    let kid = s.fake.active_kid();
    let none_header = json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string();
    let unsigned = format!("{}.{}.", b64(none_header.as_bytes()), parts[1]);
    assert_eq!(s.refused(&unsigned), Reason::BadSignature);
    let hs_header = json!({"alg": "HS256", "typ": "JWT", "kid": kid}).to_string();
    let hmac = format!("{}.{}.{}", b64(hs_header.as_bytes()), parts[1], parts[2]);
    assert_eq!(s.refused(&hmac), Reason::BadSignature);

    let mut other = claims.clone();
    other["iss"] = json!("http://sso.elsewhere.test/realms/resilient-test");
    assert_eq!(s.refused(&s.fake.sign_token(&other)), Reason::WrongIssuer);

    let mut foreign = claims.clone();
    foreign["azp"] = json!("another-app");
    assert_eq!(
        s.refused(&s.fake.sign_token(&foreign)),
        Reason::WrongAudience
    );
    foreign["aud"] = json!(["account", "webapp"]);
    s.valid(&s.fake.sign_token(&foreign));

    let now = s.auth.client().clock().now().timestamp();
    let mut expired = claims.clone();
    expired["exp"] = json!(now - 31);
    assert_eq!(s.refused(&s.fake.sign_token(&expired)), Reason::Expired);
    expired["exp"] = json!(now - 29);
    s.valid(&s.fake.sign_token(&expired));
    let mut early = claims.clone();
    early["nbf"] = json!(now + 120);
    assert_eq!(s.refused(&s.fake.sign_token(&early)), Reason::Expired);

    assert_eq!(s.refused("not a token"), Reason::Malformed);
    let mut no_exp = claims;
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(s.refused(&s.fake.sign_token(&no_exp)), Reason::Malformed);
}

#[test]
fn the_outage_grace_applies_only_while_the_circuit_is_open() {
    let s = setup("    outage_grace_seconds: 600\n");
    let token = s.token();
    let now = s.auth.client().clock().now().timestamp();
    let mut claims = claims_of(&token);
    claims["exp"] = json!(now - 120);
    let expired = s.fake.sign_token(&claims);
    assert_eq!(
        s.refused(&expired),
        Reason::Expired,
        "circuit closed: no grace"
    );

    s.open_circuit();
    let v = s.valid(&expired);
    assert!(v.expired_in_grace);
    s.clock.advance(chrono::Duration::seconds(600));
    assert_eq!(s.refused(&expired), Reason::Expired, "grace over");

    s.clock.advance(chrono::Duration::seconds(-600));
    s.fake.set_behavior(Behavior::Normal);
    past_cooldown(&s.clock, &s.tuning);
    assert!(s.auth.client().keycloak().probe(), "circuit closes");
    assert_eq!(
        s.refused(&expired),
        Reason::Expired,
        "closed again: no grace"
    );
}

#[test]
fn without_the_opt_in_an_expired_token_is_refused_during_an_outage_too() {
    let s = setup("");
    let token = s.token();
    let mut claims = claims_of(&token);
    claims["exp"] = json!(s.auth.client().clock().now().timestamp() - 120);
    let expired = s.fake.sign_token(&claims);
    s.valid(&token);
    s.open_circuit();
    assert_eq!(s.refused(&expired), Reason::Expired);
}

#[test]
fn an_outage_grace_longer_than_the_token_cache_grace_is_refused() {
    let fake = FakeKeycloak::start();
    let env = env_with_verify(
        &fake,
        &Tuning::default(),
        "    outage_grace_seconds: 90000\n",
    );
    let out = kr(&env, &["status"], "").expect(2);
    assert!(
        out.stderr
            .contains("keycloak.verify.outage_grace_seconds: 90000 seconds is longer"),
        "{out:?}"
    );
}

#[test]
fn a_disabled_users_token_is_refused_whatever_its_dates() {
    let s = setup("    outage_grace_seconds: 600\n");
    let account = Account::new(&s.user, PACKAGE).unwrap();
    s.auth.users().add(&account, PASSWORD).unwrap();
    let token = s.token();
    s.valid(&token);
    s.auth
        .disable_user(&crate::common::acct(&s.user, PACKAGE))
        .unwrap();
    assert_eq!(s.refused(&token), Reason::AccountDisabled);
    s.open_circuit();
    assert_eq!(s.refused(&token), Reason::AccountDisabled, "offline too");
    s.auth.users().set_enabled(&account, true).unwrap();
    s.valid(&token);
}

#[test]
fn verify_token_on_the_command_line_and_through_the_running_service() {
    let fake = FakeKeycloak::start();
    let user = unique_user("verifycli");
    fake.add_user(&user, PASSWORD, true);
    let env = TestEnv::new(&fake.url(), &Tuning::default());
    let token = kr_json(
        &env,
        &["authenticate", "--user", &user, "--package", PACKAGE],
        &format!("{PASSWORD}\n"),
        0,
    )["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    let v = kr_json(&env, &["verify-token"], &token, 0);
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["preferred_username"], user.as_str(), "{v}");
    assert_eq!(v["realm"], "resilient-test", "{v}");
    assert_eq!(v["expired_in_grace"], false, "{v}");
    assert!(
        v["realm_roles"].is_array() && v["client_roles"].is_object(),
        "{v}"
    );
    let text = kr(&env, &["verify-token"], &format!("{token}\n")).expect(0);
    assert!(text.stdout.starts_with("valid: "), "{text:?}");
    assert!(!text.stdout.contains(&token) && !text.stderr.contains(&token));

    let bad = kr_json(&env, &["verify-token"], "garbage", 1);
    assert_eq!(bad["valid"], false);
    assert_eq!(bad["reason"], "malformed");
    let empty = kr(&env, &["verify-token"], "").expect(2);
    assert!(empty.stderr.contains("no token on stdin"), "{empty:?}");

    // The service fetches the keys when it starts; with Keycloak gone, the forwarded
    // request is answered from them.
    std::fs::remove_dir_all(env.data_dir()).unwrap();
    let mut service = Service::start(&env);
    service.wait_for(
        "keys: fetched the signing keys of 1 realm(s)",
        Duration::from_secs(20),
    );
    fake.set_behavior(Behavior::Refuse);
    let v = kr_json(&env, &["verify-token"], &token, 0);
    assert_eq!(v["valid"], true, "{v}");
    service.sigterm();
    service.wait_exit(Duration::from_secs(20));
}

// ---------------------------------------------------------------------------------------------
// Point 4: cached tokens of live sessions refreshed ahead of expiry.

#[test]
fn live_sessions_get_fresh_tokens_before_expiry_at_a_bounded_rate() {
    let s = setup("");
    let other = unique_user("verify2");
    s.fake.add_user(&other, PASSWORD, true);
    let idle = unique_user("verify3");
    s.fake.add_user(&idle, PASSWORD, true);
    for u in [&s.user, &other] {
        let a = Account::new(u, PACKAGE).unwrap();
        s.auth.users().add(&a, PASSWORD).unwrap();
        assert!(
            s.auth
                .login(&crate::common::acct(u, PACKAGE), PASSWORD)
                .unwrap()
                .success
        );
    }
    // A cached token without a session is not refreshed.
    s.auth
        .client()
        .authenticate(&idle, PASSWORD, PACKAGE)
        .unwrap();
    let first = Account::new(&s.user, PACKAGE).unwrap();
    let second = Account::new(&other, PACKAGE).unwrap();
    let tokens = s.auth.client().tokens();
    let old_refresh = tokens.refresh_token(&first).unwrap().unwrap();
    let old_cached_at = tokens.entry(&first).unwrap().unwrap().cached_at;

    let ahead = Duration::from_secs(60);
    let none = keycloak_resilient::refresh_ahead::run(&s.auth, ahead, 10).unwrap();
    assert_eq!(none.refreshed, 0, "nothing expires within a minute yet");

    s.clock.advance(chrono::Duration::seconds(250));
    let r = keycloak_resilient::refresh_ahead::run(&s.auth, ahead, 1).unwrap();
    assert_eq!((r.refreshed, r.dropped), (1, 0), "{r:?}");
    let r = keycloak_resilient::refresh_ahead::run(&s.auth, ahead, 10).unwrap();
    assert_eq!((r.refreshed, r.dropped), (1, 0), "the other one; {r:?}");
    let entry = tokens.entry(&first).unwrap().unwrap();
    assert!(entry.cached_at > old_cached_at);
    assert_ne!(
        tokens.refresh_token(&first).unwrap().unwrap(),
        old_refresh,
        "the rotated refresh token is kept"
    );
    let idle_entry = tokens
        .entry(&Account::new(&idle, PACKAGE).unwrap())
        .unwrap();
    assert!(idle_entry.unwrap().cached_at <= old_cached_at);

    // Keycloak refuses the refresh of a disabled user: the entry goes.
    s.fake.disable_user(&other);
    s.clock.advance(chrono::Duration::seconds(250));
    let r = keycloak_resilient::refresh_ahead::run(&s.auth, ahead, 10).unwrap();
    assert_eq!((r.refreshed, r.dropped), (1, 1), "{r:?}");
    assert!(tokens.entry(&second).unwrap().is_none());

    // Status shows the age of the oldest usable cached token: the idle one, from the start.
    let overview = keycloak_resilient::overview::gather(&s.auth).unwrap();
    assert_eq!(overview.oldest_cached_token_age_seconds, Some(500));

    // Keycloak away: the round stops, nothing is dropped.
    s.fake.set_behavior(Behavior::Refuse);
    s.clock.advance(chrono::Duration::seconds(250));
    let r = keycloak_resilient::refresh_ahead::run(&s.auth, ahead, 10).unwrap();
    assert_eq!((r.refreshed, r.dropped), (0, 0), "{r:?}");
    assert!(r.stopped.is_some());
    assert!(tokens.entry(&first).unwrap().is_some());
}
