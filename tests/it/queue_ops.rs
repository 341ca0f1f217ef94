//! Issue 16 point 1: `queue show`, `queue retry`, `queue remove` through the binary, one-shot
//! and through a running service: a failed change reaches Keycloak once its cause is fixed,
//! without anybody typing the password again. And `queue-sync-many` (issue 17 point 1): a
//! batch is queued whole or not at all, the same one-shot and through the service.
//!
//! `cargo test --test it queue_ops::`

use crate::common::cli::{fake_and_env, kr, kr_json, one_line, queue_sync, Service};
use crate::common::{unique_user, Tuning};
use std::time::{Duration, Instant};

const NEW_PW: &str = "Retried-Queue-Pw-1";

/// A password change for a user Keycloak does not have yet, failed by one `sync-now`.
fn failed_change(env: &crate::common::TestEnv, user: &str) -> String {
    let id = queue_sync(env, user, NEW_PW);
    let out = kr(env, &["sync-now"], "").expect(0);
    assert!(out.stdout.contains("1 failed"), "{out:?}");
    id
}

#[test]
fn a_failed_item_is_shown_retried_and_removed_from_the_command_line() {
    let (fake, env) = fake_and_env(&Tuning::default());
    let user = unique_user("qops");
    let id = failed_change(&env, &user);

    let shown = kr_json(&env, &["queue", "show", &id], "", 0);
    assert_eq!(shown["status"], "failed", "{shown}");
    assert_eq!(shown["data_kept"], true, "{shown}");
    assert!(shown["last_error"].as_str().is_some(), "{shown}");
    assert!(
        !shown.to_string().contains(NEW_PW),
        "never the secret: {shown}"
    );
    let text = kr(&env, &["queue", "show", &id], "").expect(0);
    assert!(
        text.stdout.contains("failed") && text.stdout.contains("data: kept"),
        "{text:?}"
    );
    assert!(!text.stdout.contains(NEW_PW));

    // Fixed: the user exists now. Retrying the failed ones of that user sends it again.
    fake.add_user(&user, "Created-Pw-0", true);
    let retried = kr_json(
        &env,
        &["queue", "retry", "--failed", "--user", &user],
        "",
        0,
    );
    assert_eq!(retried["done"], "retried", "{retried}");
    assert_eq!(retried["sync_ids"][0], id.as_str(), "{retried}");
    let out = kr(&env, &["sync-now"], "").expect(0);
    assert!(out.stdout.contains("1 completed"), "{out:?}");
    assert_eq!(fake.password_of(&user).as_deref(), Some(NEW_PW));

    // Applied: a retry is refused (exit 1, one line saying why); removal works.
    let refused = kr(&env, &["queue", "retry", &id], "").expect(1);
    assert!(
        one_line(&refused).contains("already applied"),
        "{refused:?}"
    );
    let removed = kr_json(&env, &["queue", "remove", &id], "", 0);
    assert_eq!(removed["done"], "removed", "{removed}");
    let gone = kr(&env, &["queue", "show", &id], "").expect(2);
    assert!(one_line(&gone).contains(&id), "{gone:?}");
    let metrics = kr(&env, &["metrics"], "").expect(0).stdout;
    for line in [
        "keycloak_resilient_queue_operator_total{action=\"retry\"} 1",
        "keycloak_resilient_queue_operator_total{action=\"remove\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[test]
fn bad_queue_actions_are_refused_with_one_line_naming_the_argument() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    let id = queue_sync(&env, &unique_user("qbad"), NEW_PW);
    for (args, names) in [
        (vec!["queue", "show", "not-a-uuid"], "sync id"),
        (vec!["queue", "remove", "42"], "sync id"),
        (
            vec!["queue", "retry", "--failed", "--type", "bogus"],
            "--type",
        ),
        (
            vec!["queue", "retry", "--failed", "--user", "a/b"],
            "--user",
        ),
    ] {
        let out = kr(&env, &args, "").expect(2);
        assert!(one_line(&out).contains(names), "{args:?}: {out:?}");
    }
    // clap's own refusals: neither an id nor --failed, or both, or a filter without --failed.
    for args in [
        vec!["queue", "retry"],
        vec!["queue", "retry", &id, "--failed"],
        vec!["queue", "retry", &id, "--type", "password_change"],
    ] {
        kr(&env, &args, "").expect(2);
    }
    // A pending item is retried (made due now) and removed; nothing else is touched.
    kr(&env, &["queue", "retry", &id], "").expect(0);
    let nothing = kr(&env, &["queue", "retry", "--failed"], "").expect(0);
    assert!(nothing.stdout.contains("nothing to retry"), "{nothing:?}");
    kr(&env, &["queue", "remove", &id], "").expect(0);
    let page = kr_json(&env, &["queue"], "", 0);
    assert_eq!(page["counts"]["pending"], 0, "{page}");
}

#[test]
fn queue_actions_reach_the_running_service_over_its_socket() {
    let (fake, env) = fake_and_env(&Tuning::default());
    let user = unique_user("qsock");
    let id = failed_change(&env, &user);
    fake.add_user(&user, "Created-Pw-0", true);
    let mut svc = Service::start(&env);
    svc.wait_for("stop with Ctrl-C or SIGTERM", Duration::from_secs(15));
    let shown = kr_json(&env, &["queue", "show", &id], "", 0);
    assert_eq!(shown["status"], "failed", "{shown}");
    kr_json(&env, &["queue", "retry", &id], "", 0);
    // The service's own cycle may take it first: ask for cycles until it is applied.
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.password_of(&user).as_deref() != Some(NEW_PW) {
        assert!(
            Instant::now() < deadline,
            "the retried change never reached Keycloak"
        );
        kr(&env, &["sync-now"], "").expect(0);
    }
    let shown = kr_json(&env, &["queue", "show", &id], "", 0);
    assert_eq!(shown["status"], "completed", "{shown}");
    svc.sigterm();
    assert_eq!(svc.wait_exit(Duration::from_secs(15)).code(), Some(0));
}

/// `queue-sync-many`'s stdin: one JSON change per line.
fn changes(lines: &[serde_json::Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn password_change(user: &str, priority: u32) -> serde_json::Value {
    serde_json::json!({
        "user": user, "package": "web", "type": "password_change",
        "data": {"new_password": NEW_PW}, "priority": priority,
    })
}

#[test]
fn a_batch_is_queued_whole_or_not_at_all_one_shot_and_through_the_service() {
    let (fake, env) = fake_and_env(&Tuning::default());
    let users: Vec<String> = (0..3).map(|_| unique_user("qmany")).collect();
    for u in &users {
        fake.add_user(u, "Created-Pw-0", true);
    }
    // One bad change, anywhere, refuses the batch: exit 2, one line naming it, nothing queued.
    let mut bad = vec![password_change(&users[0], 5), password_change(&users[1], 5)];
    bad[1]["type"] = "password_chnage".into();
    let out = kr(&env, &["queue-sync-many"], &changes(&bad)).expect(2);
    assert!(one_line(&out).contains("change 2 of 2"), "{out:?}");
    assert!(!out.stderr.contains(NEW_PW), "never the secret: {out:?}");
    bad[1] = serde_json::json!({"user": users[1], "package": "web", "type": "user_disable",
        "data": {}, "priority": 0});
    let out = kr(&env, &["queue-sync-many"], &changes(&bad)).expect(2);
    assert!(
        one_line(&out).contains("change 2 of 2: --priority 0"),
        "{out:?}"
    );
    let out = kr(
        &env,
        &["queue-sync-many"],
        &format!("{}\nnot json\n", bad[0]),
    )
    .expect(2);
    assert!(one_line(&out).contains("line 2: not valid JSON"), "{out:?}");
    let too_many = changes(&vec![password_change(&users[0], 5); 1_001]);
    let out = kr(&env, &["queue-sync-many"], &too_many).expect(2);
    assert!(
        one_line(&out).contains("1001 changes given, expected 1 to 1000"),
        "{out:?}"
    );
    kr(&env, &["queue-sync-many"], "").expect(2);
    assert_eq!(kr_json(&env, &["queue"], "", 0)["counts"]["pending"], 0);

    // A good batch: its ids in order, queued by priority, replayed.
    let good = [password_change(&users[0], 5), password_change(&users[1], 1)];
    let out = kr(&env, &["queue-sync-many"], &changes(&good)).expect(0);
    let ids: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(ids.len(), 2, "{out:?}");
    let page = kr_json(&env, &["queue"], "", 0);
    assert_eq!(
        page["items"][0]["sync_id"], ids[1],
        "priority 1 first: {page}"
    );
    assert_eq!(page["items"][1]["sync_id"], ids[0], "{page}");
    kr(&env, &["sync-now"], "").expect(0);
    for u in &users[..2] {
        assert_eq!(fake.password_of(u).as_deref(), Some(NEW_PW), "{u}");
    }

    // Through the running service: the same answer, the same refusals.
    let mut svc = Service::start(&env);
    svc.wait_for("stop with Ctrl-C or SIGTERM", Duration::from_secs(15));
    let out = kr(&env, &["queue-sync-many"], &changes(&bad)).expect(2);
    assert!(one_line(&out).contains("change 2 of 2"), "{out:?}");
    let queued = kr_json(
        &env,
        &["queue-sync-many"],
        &changes(&[password_change(&users[2], 5)]),
        0,
    );
    let id = queued["sync_ids"][0].as_str().expect("one id").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.password_of(&users[2]).as_deref() != Some(NEW_PW) {
        assert!(
            Instant::now() < deadline,
            "the batch never reached Keycloak"
        );
        kr(&env, &["sync-now"], "").expect(0);
    }
    let shown = kr_json(&env, &["queue", "show", &id], "", 0);
    assert_eq!(shown["status"], "completed", "{shown}");
    svc.sigterm();
    assert_eq!(svc.wait_exit(Duration::from_secs(15)).code(), Some(0));
}
