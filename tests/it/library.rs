//! The library end to end: the shared scenarios (`scenarios`) against the in-process
//! fake Keycloak, plus engine tests only the fake can drive (5xx pages, 429, slowness, exact
//! request counts).
//!
//! `cargo test --test it library::`

use crate::common::fake_keycloak::{Behavior, FakeKeycloak};
use crate::common::{acct, unique_user, TestEnv, Tuning, PACKAGE};
use crate::scenarios::{self, manual_clock, past_cooldown};
use keycloak_resilient::auth::FailReason;
use keycloak_resilient::keycloak::breaker::CircuitState;
use keycloak_resilient::keycloak::Rejection;
use keycloak_resilient::sessions::AuthMode;
use keycloak_resilient::store::meta::Counter;
use keycloak_resilient::sync_queue::SyncStatus;
use keycloak_resilient::{Auth, AuthError, AuthToken, Mode, PasswdMode, ResilientClient};
use serde_json::json;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// The shared scenarios, each against a fresh fake.

fn fake() -> FakeKeycloak {
    FakeKeycloak::start()
}

/// The fake answering a wrong password the way a given Keycloak version does.
fn fake_answering_wrong_password_with(status: u16) -> FakeKeycloak {
    let fake = FakeKeycloak::start();
    fake.set_wrong_password_status(status);
    fake
}

#[test]
fn authenticate_online_then_cached_offline_wrong_password_401() {
    scenarios::authenticate_online_then_cached_offline(&fake_answering_wrong_password_with(401));
}

#[test]
fn authenticate_online_then_cached_offline_wrong_password_400() {
    scenarios::authenticate_online_then_cached_offline(&fake_answering_wrong_password_with(400));
}

#[test]
fn wrong_password_never_opens_circuit_wrong_password_401() {
    scenarios::wrong_password_never_opens_circuit(&fake_answering_wrong_password_with(401));
}

#[test]
fn wrong_password_never_opens_circuit_wrong_password_400() {
    scenarios::wrong_password_never_opens_circuit(&fake_answering_wrong_password_with(400));
}

// Issue 12: Keycloak's decisions reach the local store.
#[test]
fn keycloak_disable_reaches_the_local_account() {
    scenarios::keycloak_disable_reaches_the_local_account(&fake());
}

#[test]
fn keycloak_password_reset_is_adopted_and_the_old_one_stops() {
    scenarios::keycloak_password_reset_is_adopted_and_the_old_one_stops(&fake());
}

#[test]
fn pending_local_change_wins_over_keycloaks_old_password() {
    scenarios::pending_local_change_wins_over_keycloaks_old_password(&fake());
}

#[test]
fn user_only_in_keycloak_is_provisioned() {
    scenarios::user_only_in_keycloak_is_provisioned(&fake());
}

#[test]
fn keycloak_delete_disables_a_linked_account() {
    scenarios::keycloak_delete_disables_a_linked_account(&fake());
}

#[test]
fn two_data_directories_converge_through_keycloak() {
    scenarios::two_data_directories_converge_through_keycloak(&fake());
}

#[test]
fn brute_force_lock_and_required_action_are_not_central_decisions() {
    scenarios::brute_force_lock_and_required_action_are_not_central_decisions(&fake());
}

#[test]
fn reconcile_applies_keycloaks_account_decisions() {
    scenarios::reconcile_applies_keycloaks_account_decisions(&fake());
}

#[test]
fn managed_users_reach_keycloak_in_order() {
    scenarios::managed_users_reach_keycloak_in_order(&fake());
}

#[test]
fn disabled_user_is_rejected() {
    scenarios::disabled_user_is_rejected(&fake());
}

#[test]
fn password_change_queued_while_down_drains_when_back() {
    scenarios::password_change_queued_while_down_drains_when_back(&fake());
}

#[test]
fn superseded_password_change_never_overwrites_newer() {
    scenarios::superseded_password_change_never_overwrites_newer(&fake());
}

#[test]
fn password_policy_rejection_fails_item() {
    scenarios::password_policy_rejection_fails_item(&fake());
}

#[test]
fn a_failed_change_is_retried_once_its_cause_is_fixed() {
    scenarios::a_failed_change_is_retried_once_its_cause_is_fixed(&fake());
}

#[test]
fn wrong_admin_secret_blocks_queue() {
    scenarios::wrong_admin_secret_blocks_queue(&fake());
}

#[test]
fn hang_is_bounded_and_breaker_stops_calls() {
    scenarios::hang_is_bounded_and_breaker_stops_calls(&fake());
}

#[test]
fn login_modes_keycloak_cached_local() {
    scenarios::login_modes_keycloak_cached_local(&fake());
}

#[test]
fn passwd_while_down_then_sync() {
    scenarios::passwd_while_down_then_sync(&fake());
}

#[test]
fn passwd_online_synchronized_and_policy_rejection() {
    scenarios::passwd_online_synchronized_and_policy_rejection(&fake());
}

/// Issue 11: a password `passwd` synchronizes at once is a sync item applied in Keycloak, and
/// counts in `keycloak_resilient_sync_processed_total` as one a sync cycle applies does.
#[test]
fn issue11_passwd_synchronized_at_once_counts_as_processed() {
    let (fake, user) = fake_with_user("passwdcount");
    let env = TestEnv::new(&fake.url(), &Tuning::default());
    let auth = Auth::new(env.client_with_clock(&manual_clock()));
    auth.users()
        .add(
            &keycloak_resilient::Account::new(&user, PACKAGE).unwrap(),
            PASSWORD,
        )
        .unwrap();
    let synced = auth
        .change_password(&acct(&user, PACKAGE), PASSWORD, "Second-Password-22")
        .expect("online passwd");
    assert_eq!(synced.mode, PasswdMode::Synchronized, "{synced:?}");
    let store = auth.client().store();
    assert_eq!(store.counter(Counter::SyncCompleted).unwrap(), 1);
    let text = keycloak_resilient::metrics::render(&auth).unwrap();
    assert!(
        text.contains("\nkeycloak_resilient_sync_processed_total 1\n"),
        "{text}"
    );
}

/// Issue 16 point 3: the metrics an operator alerts on — call
/// durations, the last successful sync and the oldest waiting item's age — move with what
/// happened.
#[test]
fn metrics_count_refused_calls_durations_and_the_last_good_sync() {
    // Keycloak refuses connections: two failures open the circuit, the third login is refused
    // by the circuit without I/O.
    let env = TestEnv::new("http://127.0.0.1:9", &Tuning::default());
    let auth = Auth::new(env.client_with_clock(&manual_clock()));
    let alice = acct("alice", PACKAGE);
    auth.users().add(&alice, PASSWORD).unwrap();
    for _ in 0..3 {
        auth.login(&alice, PASSWORD).expect("local login");
    }
    let text = keycloak_resilient::metrics::render(&auth).unwrap();
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("keycloak_resilient_{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    assert!(
        value(&text, "keycloak_call_duration_seconds_count") >= 2.0,
        "{text}"
    );
    assert!(
        value(&text, "keycloak_calls_rejected_total") >= 1.0,
        "the third login was refused by the open circuit: {text}"
    );
    assert_eq!(
        value(&text, "sync_last_success_timestamp_seconds"),
        0.0,
        "{text}"
    );

    // Keycloak up: a queued change waits (its age grows with the clock), then a cycle applies
    // it and records when.
    let (fake, user) = fake_with_user("metricsync");
    let env = TestEnv::new(&fake.url(), &Tuning::default());
    let clock = manual_clock();
    let client = env.client_with_clock(&clock);
    client
        .queue_sync(
            &user,
            PACKAGE,
            "password_change",
            &json!({"password": "Metrics-Sync-Pw-1"}),
            1,
        )
        .unwrap();
    clock.advance(chrono::Duration::seconds(90));
    let auth = Auth::new(client);
    let text = keycloak_resilient::metrics::render(&auth).unwrap();
    assert_eq!(
        value(&text, "sync_oldest_pending_age_seconds"),
        90.0,
        "{text}"
    );
    let report = auth.client().process_sync_queue(10).unwrap();
    assert_eq!(report.completed, 1, "{report:?}");
    let text = keycloak_resilient::metrics::render(&auth).unwrap();
    let now = keycloak_resilient::clock::Clock::now(&clock).timestamp() as f64;
    assert_eq!(
        value(&text, "sync_last_success_timestamp_seconds"),
        now,
        "{text}"
    );
    assert_eq!(
        value(&text, "sync_oldest_pending_age_seconds"),
        0.0,
        "{text}"
    );
}

/// Issue 15 point 2: a circuit opened while the clock was 30 days fast does not stay open
/// for 30 days once the clock is corrected: one cooldown later the queue drains again, in a
/// new process (a new client over the same data directory) as in the same one.
#[test]
fn a_circuit_opened_under_a_fast_clock_reopens_the_way_one_cooldown_after_the_correction() {
    let (fake, user) = fake_with_user("skew");
    let tuning = Tuning {
        failure_threshold: 1,
        ..Tuning::default()
    };
    let env = TestEnv::new(&fake.url(), &tuning);
    // Two processes in turn over the env's data directory, on the test's clock.
    let on_disk = |clock: &keycloak_resilient::clock::ManualClock| {
        let config = env.config();
        let store = keycloak_resilient::store::Store::open(&config.storage_path).unwrap();
        ResilientClient::with_parts(
            config,
            std::sync::Arc::new(store),
            std::sync::Arc::new(clock.clone()),
        )
        .unwrap()
    };
    let clock = manual_clock();
    let right = keycloak_resilient::clock::Clock::now(&clock);
    clock.advance(chrono::Duration::days(30));
    {
        let client = on_disk(&clock);
        client
            .queue_sync(
                &user,
                PACKAGE,
                "password_change",
                &json!({"new_password": "Skewed-Pw-1"}),
                1,
            )
            .unwrap();
        fake.set_behavior(Behavior::Status(503));
        client.process_sync_queue(10).unwrap();
        assert_eq!(client.circuit().0, CircuitState::Open);
    }
    fake.set_behavior(Behavior::Normal);
    clock.set(right);
    let client = on_disk(&clock);
    let report = client.process_sync_queue(10).unwrap();
    assert_eq!(
        report.processed, 0,
        "open for one cooldown after the correction: {report:?}"
    );
    past_cooldown(&clock, &tuning);
    assert!(
        client.is_available(),
        "the trial goes one cooldown after the correction"
    );
    let report = client.process_sync_queue(10).unwrap();
    assert_eq!(report.completed, 1, "{report:?}");
    assert_eq!(fake.password_of(&user).as_deref(), Some("Skewed-Pw-1"));
}

/// Issue 16 point 2: a login client Keycloak refuses (rotated secret) is shown, not taken for
/// a working Keycloak: logins fall back to local, `status` and the metric name the login
/// client while it lasts, and both clear on the next grant that goes through.
#[test]
fn a_refused_login_client_is_shown_until_a_grant_goes_through() {
    let (fake, user) = fake_with_user("misconf");
    let env = TestEnv::new(&fake.url(), &Tuning::default());
    let auth = Auth::new(env.client_with_clock(&manual_clock()));
    let account = acct(&user, PACKAGE);
    auth.users().add(&account, PASSWORD).unwrap();
    let gauge = |auth: &Auth| -> String {
        let text = keycloak_resilient::metrics::render(auth).unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix("keycloak_resilient_keycloak_misconfigured{client=\"login\"} ")
            })
            .unwrap_or_else(|| panic!("no login misconfigured gauge in {text}"))
            .to_string()
    };
    let login_refused = |auth: &Auth| -> Vec<String> {
        let status = auth.client().get_status().unwrap();
        status
            .misconfigured
            .iter()
            .filter(|m| m.client == "login")
            .map(|m| m.reason.clone())
            .collect()
    };

    let ok = auth.login(&account, PASSWORD).unwrap();
    assert_eq!(ok.auth_mode, Some(AuthMode::Keycloak), "{ok:?}");
    assert!(login_refused(&auth).is_empty());
    assert_eq!(gauge(&auth), "0");

    fake.set_client_secret("webapp", "rotated-secret");
    for _ in 0..2 {
        let r = auth.login(&account, PASSWORD).unwrap();
        assert!(r.success, "{r:?}");
        assert_eq!(r.auth_mode, Some(AuthMode::Local), "{r:?}");
    }
    let reasons = login_refused(&auth);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(!reasons[0].contains("rotated-secret"), "{reasons:?}");
    assert!(
        !reasons[0].contains(crate::common::LOGIN_CLIENT_SECRET),
        "{reasons:?}"
    );
    assert_eq!(gauge(&auth), "1");
    let status = auth.client().get_status().unwrap();
    assert_eq!(status.mode, Mode::Normal, "the mode keeps its three values");

    fake.set_client_secret("webapp", crate::common::LOGIN_CLIENT_SECRET);
    let r = auth.login(&account, PASSWORD).unwrap();
    assert_eq!(r.auth_mode, Some(AuthMode::Keycloak), "{r:?}");
    assert!(login_refused(&auth).is_empty());
    assert_eq!(gauge(&auth), "0");
}

#[test]
fn replay_after_a_crash_mid_send_is_not_applied_twice() {
    let fake = fake();
    scenarios::replay_after_a_crash_mid_send_is_not_applied_twice(&fake);
}

/// Issue 7, point 4: Keycloak applied a reset but its answer was lost (the connection closed):
/// the outcome is unknown, so the item goes back to pending with its send mark; the next cycle
/// asks Keycloak, finds the password reset since, and completes it without sending it again.
#[test]
fn a_reset_whose_answer_was_lost_is_not_sent_again() {
    let (fake, user) = fake_with_user("lost");
    let env = TestEnv::new(&fake.url(), &Tuning::default());
    let clock = manual_clock();
    let client = env.client_with_clock(&clock);
    let id = client
        .queue_sync(
            &user,
            PACKAGE,
            "password_change",
            &json!({"password": "Lost-Answer-Pw-1"}),
            1,
        )
        .unwrap();
    fake.lose_reset_answers(1);
    let first = client.process_sync_queue(10).unwrap();
    assert_eq!((first.completed, first.released), (0, 1), "{first:?}");
    let left = client.queue().get(id).unwrap().unwrap();
    assert_eq!(left.status, SyncStatus::Pending);
    assert!(
        left.applying.is_some(),
        "outcome unknown: the send mark stays"
    );
    assert_eq!(
        fake.password_resets(&user),
        vec!["Lost-Answer-Pw-1".to_string()]
    );

    let second = client.process_sync_queue(10).unwrap();
    assert_eq!(
        (second.completed, second.already_applied),
        (1, 1),
        "{second:?}"
    );
    assert_eq!(
        fake.password_resets(&user),
        vec!["Lost-Answer-Pw-1".to_string()],
        "applied exactly once"
    );
    assert_eq!(
        client.queue().get(id).unwrap().unwrap().status,
        SyncStatus::Completed
    );
}

#[test]
fn allow_offline_false_refuses_when_down() {
    scenarios::allow_offline_false_refuses_when_down(&fake());
}

// ---------------------------------------------------------------------------------------------
// Engine tests the fake alone can drive.

const PASSWORD: &str = "Engine-Password-1";

fn fake_with_user(prefix: &str) -> (FakeKeycloak, String) {
    let fake = FakeKeycloak::start();
    let user = unique_user(prefix);
    fake.add_user(&user, PASSWORD, true);
    (fake, user)
}

fn no_cached_login(result: Result<AuthToken, AuthError>, what: &str) -> String {
    match result {
        Err(AuthError::NoCachedLogin { reason }) => reason,
        other => panic!("{what}: expected NoCachedLogin, got {other:?}"),
    }
}

fn reset_password_calls(fake: &FakeKeycloak) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| r.ends_with("/reset-password"))
        .collect()
}

/// closed → (threshold refusals) open → no I/O during the cooldown, even with Keycloak back →
/// half-open trial failing re-opens for a new cooldown → trial succeeding closes.
#[test]
fn breaker_walks_every_transition_through_the_library() {
    let (fake, user) = fake_with_user("breaker");
    let tuning = Tuning {
        failure_threshold: 3,
        cooldown_seconds: 60,
        ..Tuning::default()
    };
    let env = TestEnv::new(&fake.url(), &tuning);
    let clock = manual_clock();
    let client = env.client_with_clock(&clock);

    let online = client
        .authenticate(&user, PASSWORD, PACKAGE)
        .expect("online");
    assert!(!online.cached);
    assert_eq!(client.circuit(), (CircuitState::Closed, 0));

    fake.set_behavior(Behavior::Refuse);
    for i in 1..tuning.failure_threshold {
        assert!(!client.is_available());
        assert_eq!(
            client.circuit(),
            (CircuitState::Closed, i),
            "below the threshold stays closed"
        );
    }
    assert!(!client.is_available());
    assert_eq!(
        client.circuit(),
        (CircuitState::Open, tuning.failure_threshold),
        "the threshold-th refusal opens the circuit"
    );

    // Keycloak is back, but the circuit is open: nothing touches the network until the cooldown
    // has passed — not the health check, not a login, not the sync queue.
    fake.set_behavior(Behavior::Normal);
    let id = client
        .queue_sync(
            &user,
            PACKAGE,
            "password_change",
            &json!({"new_password": "Queued-Password-9"}),
            1,
        )
        .unwrap();
    let before = fake.request_count();
    clock.advance(chrono::Duration::seconds(
        tuning.cooldown_seconds as i64 - 1,
    ));
    assert!(!client.is_available());
    assert!(!client.keycloak().probe());
    let cached = client
        .authenticate(&user, PASSWORD, PACKAGE)
        .expect("cached login while open");
    assert!(cached.cached, "an open circuit serves the cache");
    no_cached_login(
        client.authenticate(&user, "Wrong-Password-1", PACKAGE),
        "wrong password while open",
    );
    let report = client.process_sync_queue(100).unwrap();
    assert_eq!(report.processed, 0, "{report:?}");
    assert_eq!(client.queue().get(id).unwrap().unwrap().attempts, 0);
    let status = client.get_status().unwrap();
    assert_eq!(status.circuit_state, "open");
    assert!(!status.available);
    assert_eq!(
        fake.request_count(),
        before,
        "no request reached Keycloak during the cooldown"
    );
    assert_eq!(client.circuit().0, CircuitState::Open);

    // Cooldown over: one trial, which fails (a proxy's 503) and re-opens the circuit.
    fake.set_behavior(Behavior::Status(503));
    clock.advance(chrono::Duration::seconds(2));
    assert_eq!(client.circuit().0, CircuitState::HalfOpen);
    assert!(!client.is_available());
    assert_eq!(
        fake.request_count(),
        before + 1,
        "exactly one trial request"
    );
    assert_eq!(
        client.circuit().0,
        CircuitState::Open,
        "a failed trial re-opens"
    );
    assert!(!client.is_available());
    assert_eq!(
        fake.request_count(),
        before + 1,
        "re-opened: no further request"
    );

    // The new cooldown runs from the failed trial, not from the first opening.
    clock.advance(chrono::Duration::seconds(
        tuning.cooldown_seconds as i64 - 1,
    ));
    assert!(!client.is_available());
    assert_eq!(fake.request_count(), before + 1);
    assert_eq!(client.circuit().0, CircuitState::Open);

    // Trial succeeding closes; the login that carried it gets a fresh token.
    fake.set_behavior(Behavior::Normal);
    clock.advance(chrono::Duration::seconds(2));
    assert_eq!(client.circuit().0, CircuitState::HalfOpen);
    let token = client
        .authenticate(&user, PASSWORD, PACKAGE)
        .expect("trial login");
    assert!(!token.cached);
    assert_eq!(client.circuit(), (CircuitState::Closed, 0));
    let report = client.process_sync_queue(100).unwrap();
    assert_eq!(report.completed, 1, "{report:?}");
    assert_eq!(
        fake.password_of(&user).as_deref(),
        Some("Queued-Password-9")
    );
}

/// 5xx pages and 429 are Keycloak being unavailable: they open the circuit and never move a
/// queue item toward failure.
#[test]
fn server_errors_and_429_count_as_unavailable() {
    for status in [503u16, 500, 502, 429] {
        let (fake, user) = fake_with_user("status");
        let tuning = Tuning::default();
        let env = TestEnv::new(&fake.url(), &tuning);
        let clock = manual_clock();
        let client = env.client_with_clock(&clock);
        let id = client
            .queue_sync(
                &user,
                PACKAGE,
                "password_change",
                &json!({"new_password": "Never-Applied-1"}),
                1,
            )
            .unwrap();

        fake.set_behavior(Behavior::Status(status));
        let reason = no_cached_login(
            client.authenticate(&user, PASSWORD, PACKAGE),
            &format!("HTTP {status}"),
        );
        assert!(
            reason.contains(&status.to_string()),
            "HTTP {status}: reason names the status: {reason:?}"
        );
        assert_eq!(client.circuit(), (CircuitState::Closed, 1), "HTTP {status}");
        let report = client.process_sync_queue(100).unwrap();
        assert_eq!(report.processed, 0, "HTTP {status}: {report:?}");
        assert_eq!(
            client.circuit(),
            (CircuitState::Open, 2),
            "HTTP {status} opens the circuit"
        );
        let item = client.queue().get(id).unwrap().unwrap();
        assert_eq!(item.status, SyncStatus::Pending, "HTTP {status}");
        assert_eq!(
            item.attempts, 0,
            "HTTP {status}: an outage is not an attempt"
        );
        assert_eq!(fake.password_of(&user).as_deref(), Some(PASSWORD));

        fake.set_behavior(Behavior::Normal);
        past_cooldown(&clock, &tuning);
        let report = client.process_sync_queue(100).unwrap();
        assert_eq!(
            report.completed, 1,
            "HTTP {status}: drains once Keycloak is back: {report:?}"
        );
        assert_eq!(client.circuit(), (CircuitState::Closed, 0));
    }
}

/// Keycloak answering 400 or 401 about a user (wrong password, unknown user, disabled account)
/// is Keycloak working, however many times; so is an answer about our own client.
#[test]
fn keycloak_4xx_answers_never_open_the_circuit() {
    for status in [400u16, 401] {
        let (fake, user) = fake_with_user("fourxx");
        fake.set_wrong_password_status(status);
        let disabled = unique_user("fourxx-off");
        fake.add_user(&disabled, PASSWORD, false);
        let tuning = Tuning {
            failure_threshold: 1,
            ..Tuning::default()
        };
        let env = TestEnv::new(&fake.url(), &tuning);
        let client = env.client_with_clock(&manual_clock());
        for i in 0..4 {
            match client.authenticate(&user, &format!("Wrong-{i}-Password"), PACKAGE) {
                Err(AuthError::Rejected(Rejection::InvalidCredentials)) => {}
                other => panic!("{status}: wrong password: {other:?}"),
            }
            match client.authenticate(&unique_user("nobody"), PASSWORD, PACKAGE) {
                Err(AuthError::Rejected(Rejection::InvalidCredentials)) => {}
                other => panic!("{status}: unknown user: {other:?}"),
            }
            match client.authenticate(&disabled, PASSWORD, PACKAGE) {
                Err(AuthError::Rejected(Rejection::AccountDisabled)) => {}
                other => panic!("{status}: disabled: {other:?}"),
            }
            assert_eq!(
                client.circuit(),
                (CircuitState::Closed, 0),
                "{status}, round {i}"
            );
        }
        // Our login client's secret no longer matches: misconfiguration, not an outage.
        fake.set_client_secret("webapp", "rotated-secret");
        for _ in 0..3 {
            match client.authenticate(&user, PASSWORD, PACKAGE) {
                Err(AuthError::Misconfigured(m)) => assert!(!m.is_empty()),
                other => panic!("{status}: wrong client secret: {other:?}"),
            }
        }
        assert_eq!(
            client.circuit(),
            (CircuitState::Closed, 0),
            "{status}: misconfiguration"
        );
        assert!(client.is_available());
    }
}

/// A slow Keycloak inside the timeout is a working Keycloak; beyond the timeout it is an outage.
#[test]
fn slow_keycloak_under_the_timeout_still_succeeds() {
    let (fake, user) = fake_with_user("slow");
    let tuning = Tuning {
        timeout_seconds: 2,
        ..Tuning::default()
    };
    let env = TestEnv::new(&fake.url(), &tuning);
    let client = env.client_with_clock(&manual_clock());
    fake.set_behavior(Behavior::Slow(Duration::from_millis(400)));
    let started = Instant::now();
    let token = client
        .authenticate(&user, PASSWORD, PACKAGE)
        .expect("slow but in time");
    assert!(!token.cached);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "the fake was slow"
    );
    assert_eq!(client.circuit(), (CircuitState::Closed, 0));

    let tuning = Tuning {
        timeout_seconds: 1,
        ..Tuning::default()
    };
    let env = TestEnv::new(&fake.url(), &tuning);
    let client = env.client_with_clock(&manual_clock());
    fake.set_behavior(Behavior::Slow(Duration::from_millis(3000)));
    let started = Instant::now();
    let reason = no_cached_login(
        client.authenticate(&user, PASSWORD, PACKAGE),
        "slower than the timeout",
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(reason.contains("timed out"), "{reason:?}");
    assert_eq!(
        client.circuit(),
        (CircuitState::Closed, 1),
        "a timeout counts as a failure"
    );
}

/// An open circuit is persisted: a new client over the same data directory (the next cron
/// invocation) honours it without sending anything.
#[test]
fn breaker_state_persists_across_client_instances() {
    let (fake, user) = fake_with_user("persist");
    let tuning = Tuning {
        failure_threshold: 2,
        cooldown_seconds: 300,
        ..Tuning::default()
    };
    let env = TestEnv::new(&fake.url(), &tuning);
    {
        let client: ResilientClient = env.client();
        fake.set_behavior(Behavior::Status(503));
        assert!(!client.is_available());
        assert!(!client.is_available());
        assert_eq!(client.circuit().0, CircuitState::Open);
    }
    fake.set_behavior(Behavior::Normal);
    let before = fake.request_count();

    let client = env.client();
    assert_eq!(
        client.circuit(),
        (CircuitState::Open, 2),
        "the new client loads the open circuit"
    );
    assert!(!client.is_available());
    let reason = no_cached_login(
        client.authenticate(&user, PASSWORD, PACKAGE),
        "open circuit, new client",
    );
    assert!(reason.contains("circuit"), "{reason:?}");
    client
        .queue_sync(
            &user,
            PACKAGE,
            "password_change",
            &json!({"new_password": "Not-Yet-Password-1"}),
            1,
        )
        .unwrap();
    assert_eq!(client.process_sync_queue(10).unwrap().processed, 0);
    let status = client.get_status().unwrap();
    assert_eq!(status.circuit_state, "open");
    assert_eq!(status.pending_syncs, 1);
    assert_eq!(fake.request_count(), before, "no request reached the fake");
    drop(client);

    // A third instance still sees it (the second did not clear it by merely looking).
    let client = env.client();
    assert_eq!(client.circuit().0, CircuitState::Open);
    assert_eq!(fake.request_count(), before);
}

/// When Keycloak returns, the queue is replayed by priority (1 first), then queue time — also
/// across batches. With one send worker (`max_concurrent_calls` 2 or 3) the resets arrive in
/// exactly that order; with more, that many users' changes are sent side by side, started in
/// that order.
#[test]
fn queue_drains_in_priority_order_when_keycloak_returns() {
    let fake = FakeKeycloak::start();
    let tuning = Tuning {
        keycloak_extra: "  max_concurrent_calls: 2\n".into(),
        ..Tuning::default()
    };
    let env = TestEnv::new(&fake.url(), &tuning);
    let clock = manual_clock();
    let client = env.client_with_clock(&clock);

    // (label, priority) in the order queued.
    let plan = [
        ("p5", 5u32),
        ("p1a", 1),
        ("p3", 3),
        ("p1b", 1),
        ("p9", 9),
        ("p3b", 3),
    ];
    let mut users = Vec::new();
    fake.set_behavior(Behavior::Refuse);
    for (label, priority) in plan {
        let user = unique_user(label);
        fake.add_user(&user, PASSWORD, true);
        client
            .queue_sync(
                &user,
                PACKAGE,
                "password_change",
                &json!({"new_password": format!("{label}-New-Password")}),
                priority,
            )
            .unwrap();
        users.push((user, label));
        clock.advance(chrono::Duration::seconds(1));
    }
    assert_eq!(
        client.process_sync_queue(100).unwrap().processed,
        0,
        "down: nothing replayed"
    );
    fake.set_behavior(Behavior::Normal);
    past_cooldown(&clock, &tuning);

    let first = client.process_sync_queue(3).unwrap();
    assert_eq!(first.completed, 3, "{first:?}");
    assert_eq!(client.queue().pending_count(), 3);
    let rest = client.process_sync_queue(100).unwrap();
    assert_eq!(rest.completed, 3, "{rest:?}");

    let id_of = |label: &str| {
        let user = &users.iter().find(|(_, l)| *l == label).unwrap().0;
        fake.user_id(user).unwrap()
    };
    let expected: Vec<String> = ["p1a", "p1b", "p3", "p3b", "p5", "p9"]
        .iter()
        .map(|l| {
            format!(
                "PUT /admin/realms/resilient-test/users/{}/reset-password",
                id_of(l)
            )
        })
        .collect();
    assert_eq!(
        reset_password_calls(&fake),
        expected,
        "replay order: priority, then queue time"
    );
    for (user, label) in &users {
        assert_eq!(
            fake.password_of(user),
            Some(format!("{label}-New-Password"))
        );
    }
}

/// `is_available` answers from a fresh probe without I/O, probes again once it is stale, and
/// answers false without I/O while the circuit is open.
#[test]
fn is_available_uses_the_health_cache_and_no_io_while_open() {
    let (fake, user) = fake_with_user("health");
    let tuning = Tuning {
        health_check_cache_seconds: 30,
        failure_threshold: 2,
        cooldown_seconds: 60,
        ..Tuning::default()
    };
    let env = TestEnv::new(&fake.url(), &tuning);
    let clock = manual_clock();
    let client = env.client_with_clock(&clock);

    let n = fake.request_count();
    assert!(client.is_available());
    assert_eq!(fake.request_count(), n + 1, "first call probes");
    assert!(client.is_available());
    clock.advance(chrono::Duration::seconds(29));
    assert!(client.is_available());
    assert_eq!(
        fake.request_count(),
        n + 1,
        "a probe younger than 30 s answers"
    );
    client
        .authenticate(&user, PASSWORD, PACKAGE)
        .expect("login");
    assert_eq!(
        fake.request_count(),
        n + 2,
        "a login on a fresh probe sends only the token request"
    );
    clock.advance(chrono::Duration::seconds(31));
    assert!(client.is_available());
    assert_eq!(fake.request_count(), n + 3, "a stale probe is renewed");

    // Open the circuit with explicit probes (which bypass the cache).
    fake.set_behavior(Behavior::Status(503));
    assert!(!client.keycloak().probe());
    assert!(!client.keycloak().probe());
    assert_eq!(client.circuit().0, CircuitState::Open);
    fake.set_behavior(Behavior::Normal);
    let n = fake.request_count();
    for _ in 0..5 {
        assert!(!client.is_available());
    }
    clock.advance(chrono::Duration::seconds(45));
    assert!(
        !client.is_available(),
        "still cooling down, even though the last probe is stale"
    );
    assert!(!client.get_status().unwrap().available);
    assert_eq!(fake.request_count(), n, "no I/O while the circuit is open");

    clock.advance(chrono::Duration::seconds(16));
    assert!(
        client.is_available(),
        "cooldown over: the trial probe succeeds"
    );
    assert_eq!(fake.request_count(), n + 1);
    assert_eq!(client.circuit(), (CircuitState::Closed, 0));
    assert!(client.is_available());
    assert_eq!(
        fake.request_count(),
        n + 1,
        "and its result is cached again"
    );
}

/// A hung Keycloak: once the breaker opens, not one more request reaches it (the fake counts
/// hung requests too).
#[test]
fn hung_keycloak_gets_no_requests_once_the_circuit_is_open() {
    let (fake, user) = fake_with_user("hung");
    let tuning = Tuning {
        timeout_seconds: 1,
        failure_threshold: 1,
        ..Tuning::default()
    };
    let env = TestEnv::new(&fake.url(), &tuning);
    let clock = manual_clock();
    let client = env.client_with_clock(&clock);
    client
        .authenticate(&user, PASSWORD, PACKAGE)
        .expect("online");

    fake.set_behavior(Behavior::Hang);
    let n = fake.request_count();
    let started = Instant::now();
    let token = client
        .authenticate(&user, PASSWORD, PACKAGE)
        .expect("cached login while hung");
    assert!(token.cached);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the timeout"
    );
    assert_eq!(fake.request_count(), n + 1, "one hung probe");
    assert_eq!(client.circuit().0, CircuitState::Open);

    for _ in 0..5 {
        assert!(
            client
                .authenticate(&user, PASSWORD, PACKAGE)
                .unwrap()
                .cached
        );
        assert!(!client.is_available());
    }
    assert_eq!(
        fake.request_count(),
        n + 1,
        "nothing more reached the hung server"
    );

    fake.set_behavior(Behavior::Normal);
    past_cooldown(&clock, &tuning);
    assert!(
        !client
            .authenticate(&user, PASSWORD, PACKAGE)
            .unwrap()
            .cached
    );
    assert_eq!(client.circuit(), (CircuitState::Closed, 0));
}

/// `get_status`: normal while Keycloak answers; degraded while it is down and a cached token is
/// inside its grace period; offline once the grace period is over — and cached logins end with
/// it.
#[test]
fn status_modes_follow_the_token_grace_period() {
    let (fake, user) = fake_with_user("modes");
    let tuning = Tuning::default();
    let env = TestEnv::new(&fake.url(), &tuning);
    let clock = manual_clock();
    let client = env.client_with_clock(&clock);

    let status = client.get_status().unwrap();
    assert_eq!(status.mode, Mode::Normal);
    assert!(status.available);
    assert_eq!(status.circuit_state, "closed");
    assert_eq!(status.cached_tokens, 0);
    assert!(status.unavailable_reason.is_none());
    assert_eq!(status.config.failure_threshold, tuning.failure_threshold);
    assert_eq!(status.config.cooldown_seconds, tuning.cooldown_seconds);
    assert!(status.config.offline_mode_allowed);
    let grace_hours = status.config.grace_period_hours as i64;
    assert!(grace_hours > 1, "{grace_hours}");

    client
        .authenticate(&user, PASSWORD, PACKAGE)
        .expect("online");
    assert_eq!(client.get_status().unwrap().cached_tokens, 1);

    fake.set_behavior(Behavior::Refuse);
    let status = client.get_status().unwrap();
    assert_eq!(status.mode, Mode::Degraded, "{status:?}");
    assert!(!status.available);
    assert!(status.unavailable_reason.is_some());
    assert!(
        client
            .authenticate(&user, PASSWORD, PACKAGE)
            .unwrap()
            .cached
    );

    clock.advance(chrono::Duration::hours(grace_hours) - chrono::Duration::minutes(1));
    assert!(
        client
            .authenticate(&user, PASSWORD, PACKAGE)
            .unwrap()
            .cached,
        "inside the grace period"
    );
    clock.advance(chrono::Duration::minutes(2));
    no_cached_login(
        client.authenticate(&user, PASSWORD, PACKAGE),
        "grace period over",
    );
    assert!(client.get_cached_token(&user, PACKAGE).unwrap().is_none());
    let status = client.get_status().unwrap();
    assert_eq!(status.mode, Mode::Offline, "{status:?}");
    assert_eq!(status.cached_tokens, 0);
    assert_eq!(
        client.cleanup_expired_tokens(grace_hours as u64).unwrap(),
        1
    );
    assert!(client
        .tokens()
        .entry(&keycloak_resilient::Account::new(&user, PACKAGE).unwrap())
        .unwrap()
        .is_none());
}

/// Queued changes survive the process, and an item a crash left `processing` goes back to
/// `pending` when the next client opens the data directory, then drains.
#[test]
fn queue_is_durable_and_crash_left_items_are_recovered() {
    let (fake, user) = fake_with_user("crash");
    let env = TestEnv::new(&fake.url(), &Tuning::default());
    let id = {
        let client = env.client();
        let id = client
            .queue_sync(
                &user,
                PACKAGE,
                "password_change",
                &json!({"new_password": "After-Crash-Password-1"}),
                2,
            )
            .unwrap();
        // A cycle claims the item and "crashes" before finishing it.
        let claimed = client.queue().claim(10).unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            client.queue().get(id).unwrap().unwrap().status,
            SyncStatus::Processing
        );
        client.store().flush().unwrap();
        // The process dies holding them: no drop puts them back.
        std::mem::forget(claimed);
        id
    };
    let client = env.client();
    let item = client.queue().get(id).unwrap().expect("the item survived");
    assert_eq!(item.status, SyncStatus::Pending, "recovered to pending");
    assert_eq!(item.attempts, 0);
    let report = client.process_sync_queue(10).unwrap();
    assert_eq!(report.completed, 1, "{report:?}");
    assert_eq!(
        fake.password_of(&user).as_deref(),
        Some("After-Crash-Password-1")
    );
}

/// Keycloak keeps usernames lowercase and matches them case-insensitively; the cache and the
/// queue must too. A change for a user Keycloak does not know fails for good, with the reason.
#[test]
fn usernames_ignore_case_and_unknown_users_fail_their_items() {
    let (fake, user) = fake_with_user("case");
    let tuning = Tuning::default();
    let env = TestEnv::new(&fake.url(), &tuning);
    let clock = manual_clock();
    let client = env.client_with_clock(&clock);
    let shouted = user.to_uppercase();

    let online = client
        .authenticate(&shouted, PASSWORD, PACKAGE)
        .expect("online, upper case");
    fake.set_behavior(Behavior::Refuse);
    let offline = client
        .authenticate(&user, PASSWORD, PACKAGE)
        .expect("offline, lower case");
    assert!(offline.cached);
    assert_eq!(offline.access_token, online.access_token);
    fake.set_behavior(Behavior::Normal);
    past_cooldown(&clock, &tuning);

    let id = client
        .queue_sync(
            &shouted,
            PACKAGE,
            "password_change",
            &json!({"new_password": "Case-Password-22"}),
            1,
        )
        .unwrap();
    let ghost = client
        .queue_sync(
            &unique_user("ghost"),
            PACKAGE,
            "password_change",
            &json!({"new_password": "Ghost-Password-1"}),
            1,
        )
        .unwrap();
    let report = client.process_sync_queue(10).unwrap();
    assert_eq!((report.completed, report.failed), (1, 1), "{report:?}");
    assert_eq!(
        client.queue().get(id).unwrap().unwrap().status,
        SyncStatus::Completed
    );
    assert_eq!(fake.password_of(&user).as_deref(), Some("Case-Password-22"));
    let ghost = client.queue().get(ghost).unwrap().unwrap();
    assert_eq!(ghost.status, SyncStatus::Failed);
    assert!(
        ghost
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("not found"),
        "{ghost:?}"
    );
    assert_eq!(client.circuit(), (CircuitState::Closed, 0));
}

/// When the cooldown ends, concurrent callers do not stampede a recovering Keycloak: one trial
/// goes out, everyone else is answered "unavailable" without I/O until it decides.
#[test]
fn half_open_lets_exactly_one_trial_through_concurrent_callers() {
    let (fake, _user) = fake_with_user("trial");
    let tuning = Tuning {
        failure_threshold: 1,
        timeout_seconds: 2,
        ..Tuning::default()
    };
    let env = TestEnv::new(&fake.url(), &tuning);
    let clock = manual_clock();
    let client = env.client_with_clock(&clock);
    fake.set_behavior(Behavior::Refuse);
    assert!(!client.is_available());
    assert_eq!(client.circuit().0, CircuitState::Open);

    fake.set_behavior(Behavior::Hang);
    past_cooldown(&clock, &tuning);
    let n = fake.request_count();
    let trial_client = client.clone();
    let trial = std::thread::spawn(move || trial_client.is_available());
    let waited = Instant::now();
    while fake.request_count() == n && waited.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(fake.request_count(), n + 1, "the trial reached the server");
    for _ in 0..5 {
        assert!(!client.is_available(), "a trial is in flight: others wait");
    }
    assert_eq!(
        fake.request_count(),
        n + 1,
        "no second request while the trial is in flight"
    );
    assert!(!trial.join().unwrap(), "the hung trial fails");
    assert_eq!(
        client.circuit().0,
        CircuitState::Open,
        "and re-opens the circuit"
    );
}

/// Between Keycloak's return and the next sync, Keycloak still has the old password: a login
/// with the new one is local only, explained by the queued change (not counted as a
/// divergence); after the sync it is a Keycloak login again. A real divergence is counted.
#[test]
fn login_between_return_and_sync_is_local_and_explained() {
    let (fake, user) = fake_with_user("between");
    let tuning = Tuning::default();
    let env = TestEnv::new(&fake.url(), &tuning);
    let clock = manual_clock();
    let auth = Auth::new(env.client_with_clock(&clock));
    auth.users()
        .add(
            &keycloak_resilient::Account::new(&user, PACKAGE).unwrap(),
            PASSWORD,
        )
        .unwrap();
    let new = "Between-Password-22";

    fake.set_behavior(Behavior::Refuse);
    let changed = auth
        .change_password(&acct(&user, PACKAGE), PASSWORD, new)
        .unwrap();
    assert_eq!(changed.mode, PasswdMode::Queued);
    fake.set_behavior(Behavior::Normal);
    past_cooldown(&clock, &tuning);

    let divergences = || {
        auth.client()
            .store()
            .counter(Counter::PasswordDivergence)
            .unwrap()
    };
    let before = divergences();
    let login = auth.login(&acct(&user, PACKAGE), new).unwrap();
    assert!(login.success, "{login:?}");
    assert_eq!(login.auth_mode, Some(AuthMode::Local));
    assert_eq!(
        login.keycloak_status, "online",
        "Keycloak took part (and refused)"
    );
    assert_eq!(divergences(), before, "explained by the queued change");

    assert_eq!(auth.client().process_sync_queue(10).unwrap().completed, 1);
    let login = auth.login(&acct(&user, PACKAGE), new).unwrap();
    assert_eq!(login.auth_mode, Some(AuthMode::Keycloak), "{login:?}");

    // Someone changes the password in Keycloak behind our back, no change of ours pending:
    // Keycloak decides, so the local password is stale (issue 12), not a divergence.
    fake.add_user(&user, "Changed-In-Keycloak-1", true);
    let login = auth.login(&acct(&user, PACKAGE), new).unwrap();
    assert_eq!(
        login.reason,
        Some(FailReason::InvalidCredentials),
        "{login:?}"
    );
    assert_eq!(divergences(), before);
    let stale = auth.client().store().counter(Counter::PasswordsStale);
    assert_eq!(stale.unwrap(), 1);
}

#[test]
fn a_failed_probe_below_the_threshold_does_not_hide_a_recovered_keycloak() {
    let kc = fake();
    let tuning = Tuning {
        failure_threshold: 3,
        health_check_cache_seconds: 30,
        ..Tuning::default()
    };
    let env = TestEnv::new(&kc.url(), &tuning);
    let clock = manual_clock();
    let client = env.client_with_clock(&clock);
    kc.set_behavior(Behavior::Refuse);
    assert!(!client.is_available());
    assert_eq!(client.circuit(), (CircuitState::Closed, 1));
    // Back within the cache period: one failure below the threshold is the breaker's to judge,
    // so the next question probes again instead of trusting the cached failure.
    kc.set_behavior(Behavior::Normal);
    assert!(client.is_available());
    assert_eq!(client.circuit(), (CircuitState::Closed, 0));
    // A fresh success is trusted: no further request within the cache period.
    let seen = kc.request_count();
    assert!(client.is_available());
    assert_eq!(kc.request_count(), seen);
}

#[test]
fn a_misconfigured_realm_is_cached_as_unavailable_without_counting() {
    let kc = fake();
    let tuning = Tuning {
        health_check_cache_seconds: 30,
        ..Tuning::default()
    };
    let env = TestEnv::new(&kc.url(), &tuning);
    let yaml = std::fs::read_to_string(env.config_path())
        .unwrap()
        .replace("realm: resilient-test", "realm: no-such-realm");
    std::fs::write(env.config_path(), yaml).unwrap();
    let client = env.client_with_clock(&manual_clock());
    assert!(!client.is_available());
    assert_eq!(
        client.circuit(),
        (CircuitState::Closed, 0),
        "Keycloak answered"
    );
    assert!(
        client.unavailable_reason().contains("no-such-realm"),
        "{}",
        client.unavailable_reason()
    );
    let seen = kc.request_count();
    assert!(!client.is_available());
    assert_eq!(
        kc.request_count(),
        seen,
        "the cached answer stands for the cache period"
    );
}

/// Once the queue is blocked, each cycle's check asks Keycloak itself — a new admin token and
/// a real admin request — instead of trusting the admin token cached before the block (whose
/// roles may be the very reason for it); the item stays untouched meanwhile.
#[test]
fn blocked_queue_check_makes_a_real_admin_request_with_a_fresh_token() {
    let (fake, user) = fake_with_user("unblock");
    let tuning = Tuning {
        admin_client_secret: "no-admin-test-secret".to_string(),
        ..Tuning::default()
    };
    let env = TestEnv::new(&fake.url(), &tuning);
    // The service account without realm-management roles: its token is issued, the admin
    // API answers 403.
    let yaml = std::fs::read_to_string(env.config_path()).unwrap();
    let yaml = yaml.replace(
        "admin_client_id: keycloak-resilient-sync",
        "admin_client_id: no-admin-rights",
    );
    std::fs::write(env.config_path(), yaml).unwrap();
    let client = env.client();
    let id = client
        .queue_sync(
            &user,
            PACKAGE,
            "password_change",
            &json!({ "new_password": "Unblock-Password-2" }),
            1,
        )
        .unwrap();
    let first = client.process_sync_queue(10).unwrap();
    assert!(client.queue_blocked().is_some(), "{first:?}");

    let before = fake.requests().len();
    let second = client.process_sync_queue(10).unwrap();
    let during = fake.requests()[before..].to_vec();
    assert!(
        second
            .stopped
            .as_deref()
            .is_some_and(|s| s.contains("blocked")),
        "{second:?}"
    );
    assert!(
        during
            .iter()
            .any(|r| r.starts_with("POST ") && r.ends_with("/protocol/openid-connect/token")),
        "the check logs in anew: {during:?}"
    );
    assert!(
        during
            .iter()
            .any(|r| r.starts_with("GET ") && r.contains("/admin/realms/")),
        "the check makes an admin request: {during:?}"
    );
    assert!(reset_password_calls(&fake).is_empty());
    let item = client.queue().get(id).unwrap().unwrap();
    assert_eq!((item.status, item.attempts), (SyncStatus::Pending, 0));
    assert!(client.queue_blocked().is_some(), "still blocked");
}

/// While a password change of ours waits in the queue, Keycloak still accepts the password it
/// replaces: `authenticate` hands out that token, but does not make the old password the
/// offline verifier (it would keep working offline for the whole grace period).
#[test]
fn authenticate_with_the_replaced_password_is_not_cached_while_a_change_is_queued() {
    let fake = FakeKeycloak::start();
    let user = unique_user("queued");
    fake.add_user(&user, "Old-Password-1", true);
    let env = TestEnv::new(&fake.url(), &Tuning::default());
    let client = env.client();
    client
        .queue_sync(
            &user,
            PACKAGE,
            "password_change",
            &json!({"new_password": "New-Password-2"}),
            1,
        )
        .expect("queue");
    let token = client
        .authenticate(&user, "Old-Password-1", PACKAGE)
        .expect("Keycloak still takes the old password");
    assert!(!token.cached);
    assert!(
        client
            .get_cached_token(&user, PACKAGE)
            .expect("cache")
            .is_none(),
        "the replaced password became the offline verifier"
    );
    // Once the change is applied, a login with the new password is cached as usual.
    client.process_sync_queue(10).expect("sync");
    client
        .authenticate(&user, "New-Password-2", PACKAGE)
        .expect("new password");
    assert!(client
        .get_cached_token(&user, PACKAGE)
        .expect("cache")
        .is_some());
}

/// `keycloak.authority.*: local` and `provision: false`: today's "local decides" — Keycloak's
/// disable and reset are logged and counted only, a user only Keycloak knows is refused.
#[test]
fn local_authority_keeps_keycloaks_decisions_out_of_the_local_store() {
    let kc = fake();
    let tuning = Tuning {
        keycloak_extra:
            "  authority:\n    passwords: local\n    accounts: local\n    provision: false\n".into(),
        ..Tuning::default()
    };
    let env = TestEnv::new(&kc.url(), &tuning);
    let auth = Auth::new(env.client_with_clock(&manual_clock()));
    let user = unique_user("localrule");
    kc.add_user(&user, PASSWORD, true);
    auth.users().add(&acct(&user, PACKAGE), PASSWORD).unwrap();

    kc.disable_user(&user);
    let r = auth.login(&acct(&user, PACKAGE), PASSWORD).unwrap();
    assert_eq!(r.auth_mode, Some(AuthMode::Local), "{r:?}");
    kc.enable_user(&user);
    kc.add_user(&user, "Reset-Centrally-1", true);
    let r = auth.login(&acct(&user, PACKAGE), PASSWORD).unwrap();
    assert_eq!(r.auth_mode, Some(AuthMode::Local), "{r:?}");
    let r = auth
        .login(&acct(&user, PACKAGE), "Reset-Centrally-1")
        .unwrap();
    assert_eq!(r.reason, Some(FailReason::InvalidCredentials), "{r:?}");
    let store = auth.client().store();
    assert_eq!(store.counter(Counter::PasswordDivergence).unwrap(), 1);
    for c in [
        Counter::PasswordsAdopted,
        Counter::PasswordsStale,
        Counter::CentralDisables,
    ] {
        assert_eq!(store.counter(c).unwrap(), 0, "{c:?}");
    }

    let central = unique_user("centralonly");
    kc.add_user(&central, PASSWORD, true);
    let r = auth.login(&acct(&central, PACKAGE), PASSWORD).unwrap();
    assert_eq!(r.reason, Some(FailReason::InvalidCredentials), "{r:?}");
    assert_eq!(r.keycloak_status, "not_asked");
    assert!(auth
        .users()
        .get(&acct(&central, PACKAGE))
        .unwrap()
        .is_none());
}

/// A user linked here (their Keycloak id in the local record) has a queued password change
/// sent by that id: the credentials read and the reset, no search by name. Deleted and made
/// again in Keycloak (a new id), the next change finds them by name and is applied.
#[test]
fn a_linked_users_change_is_sent_by_id_and_a_gone_id_is_looked_up_by_name() {
    let fake = fake();
    let env = TestEnv::new(&fake.url(), &Tuning::default());
    fake.add_user("linda", "Linked-Password-1", true);
    let auth = Auth::new(env.client());
    let account = acct("linda", PACKAGE);
    auth.users().add(&account, "Linked-Password-1").unwrap();
    auth.users()
        .link(&account, &fake.user_id("linda").unwrap())
        .unwrap();
    let queue = |password: &str| {
        let data = json!({ "new_password": password });
        auth.client()
            .queue_sync("linda", PACKAGE, "password_change", &data, 1)
            .unwrap();
        let before = fake.request_count();
        let report = auth.client().process_sync_queue(10).unwrap();
        assert_eq!(report.completed, 1, "{report:?}");
        assert_eq!(fake.password_of("linda").as_deref(), Some(password));
        fake.requests()[before..].to_vec()
    };
    let sent = queue("Linked-Password-2");
    let searched = |sent: &[String]| {
        sent.iter()
            .any(|r| r.starts_with("GET") && r.ends_with("/users"))
    };
    assert!(
        !searched(&sent),
        "a linked user is not searched for: {sent:?}"
    );
    assert!(fake.remove_user("linda"));
    fake.add_user("linda", "Linked-Password-1", true);
    let sent = queue("Linked-Password-3");
    assert!(searched(&sent), "a gone id is looked up by name: {sent:?}");
}

/// A cycle sends different users' changes side by side (up to 4, half the bulkhead's
/// default 10): against a Keycloak that takes 200 ms a request, more than one request is
/// in flight at once, and every change is applied once.
#[test]
fn different_users_changes_are_sent_side_by_side() {
    let fake = FakeKeycloak::start();
    let env = TestEnv::new(&fake.url(), &Tuning::default());
    let client = env.client();
    let users: Vec<String> = (0..6).map(|i| unique_user(&format!("side{i}"))).collect();
    for user in &users {
        fake.add_user(user, PASSWORD, true);
        let data = json!({"new_password": format!("{user}-New-Password")});
        client
            .queue_sync(user, PACKAGE, "password_change", &data, 1)
            .unwrap();
    }
    fake.set_behavior(Behavior::Slow(Duration::from_millis(200)));
    fake.take_max_in_flight();
    let report = client.process_sync_queue(10).unwrap();
    assert_eq!(report.completed, 6, "{report:?}");
    assert!(fake.take_max_in_flight() > 1, "one request at a time");
    for user in &users {
        assert_eq!(fake.password_resets(user).len(), 1, "{user}");
    }
}
