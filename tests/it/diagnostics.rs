//! The `test` command's checks and the refresh grant, against the fake Keycloak.

use crate::common::fake_keycloak::{Behavior, FakeKeycloak};
use crate::common::{acct, unique_user, TestEnv, Tuning, PACKAGE};
use keycloak_resilient::client::AuthError;

#[test]
fn test_command_passes_against_a_well_configured_keycloak() {
    let kc = FakeKeycloak::start();
    let env = TestEnv::new(&kc.url(), &Tuning::default());
    let out = env
        .cmd()
        .arg("test")
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("ok     config"), "{out}");
    assert!(
        out.contains("ok     keycloak reachable (realm resilient-test)"),
        "{out}"
    );
    assert!(out.contains("ok     login client webapp"), "{out}");
    assert!(out.contains("holds manage-users"), "{out}");
    assert!(!out.contains("FAILED"), "{out}");
}

#[test]
fn test_command_names_each_broken_part() {
    let kc = FakeKeycloak::start();
    // Admin account without realm-management roles, login client without direct grants.
    let tuning = Tuning {
        admin_client_secret: "no-admin-test-secret".into(),
        ..Tuning::default()
    };
    let env = TestEnv::new(&kc.url(), &tuning);
    let yaml = std::fs::read_to_string(env.config_path())
        .unwrap()
        .replace(
            "admin_client_id: keycloak-resilient-sync",
            "admin_client_id: no-admin-rights",
        )
        .replace("client_id: webapp\n", "client_id: no-direct-grants\n")
        .replace(
            "client_secret: webapp-test-secret",
            "client_secret: no-direct-test-secret",
        );
    std::fs::write(env.config_path(), yaml).unwrap();
    let out = env
        .cmd()
        .args(["--json", "test"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["ok"], false);
    let checks = v["checks"].as_array().unwrap();
    let find = |prefix: &str| {
        checks
            .iter()
            .find(|c| c["check"].as_str().unwrap().starts_with(prefix))
            .unwrap()
            .clone()
    };
    assert_eq!(find("keycloak reachable")["ok"], true);
    let login = find("login client no-direct-grants");
    assert_eq!(login["ok"], false);
    assert!(
        login["detail"]
            .as_str()
            .unwrap()
            .contains("direct access grants"),
        "{login}"
    );
    let admin = find("admin service account no-admin-rights");
    assert_eq!(admin["ok"], false);
    assert!(
        admin["detail"].as_str().unwrap().contains("manage-users"),
        "{admin}"
    );
}

#[test]
fn test_command_reports_an_unreachable_keycloak() {
    let kc = FakeKeycloak::start();
    kc.set_behavior(Behavior::Refuse);
    let env = TestEnv::new(&kc.url(), &Tuning::default());
    let assert = env.cmd().arg("test").assert().code(1);
    let out = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert!(out.contains("FAILED keycloak reachable"), "{out}");
    assert!(
        out.contains("skipped: client and service-account checks"),
        "{out}"
    );
}

#[test]
fn refresh_exchanges_the_cached_refresh_token_and_keeps_the_verifier() {
    let kc = FakeKeycloak::start();
    let user = unique_user("refresh");
    kc.add_user(&user, "Refresh-Pass-1", true);
    let env = TestEnv::new(&kc.url(), &Tuning::default());
    let client = env.client();
    assert!(matches!(
        client.refresh(&acct(&user, PACKAGE)),
        Err(AuthError::NoRefreshToken)
    ));
    let first = client
        .authenticate(&user, "Refresh-Pass-1", PACKAGE)
        .unwrap();
    let second = client.refresh(&acct(&user, PACKAGE)).unwrap();
    assert!(!second.cached);
    assert_ne!(first.access_token, second.access_token);
    assert!(
        kc.requests()
            .iter()
            .filter(|r| r.ends_with("/protocol/openid-connect/token"))
            .count()
            >= 2
    );
    // The refreshed entry still answers offline for the same password, and only for it.
    kc.set_behavior(Behavior::Refuse);
    let cached = client
        .authenticate(&user, "Refresh-Pass-1", PACKAGE)
        .unwrap();
    assert!(cached.cached);
    assert_eq!(cached.access_token, second.access_token);
    assert!(client.authenticate(&user, "Wrong-Pass-1", PACKAGE).is_err());
    assert!(matches!(
        client.refresh(&acct(&user, PACKAGE)),
        Err(AuthError::Unavailable { .. })
    ));
}

#[test]
fn refresh_cli_exit_codes() {
    let kc = FakeKeycloak::start();
    let user = unique_user("refresh");
    kc.add_user(&user, "Refresh-Pass-1", true);
    let env = TestEnv::new(&kc.url(), &Tuning::default());
    env.create_database();
    // No cached entry yet: refused.
    env.cmd()
        .args(["refresh", "--user", &user, "--package", PACKAGE])
        .assert()
        .code(1);
    let client = env.client();
    client
        .authenticate(&user, "Refresh-Pass-1", PACKAGE)
        .unwrap();
    drop(client);
    let out = env
        .cmd()
        .args(["--json", "refresh", "--user", &user, "--package", PACKAGE])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["cached"], false);
    assert!(v["access_token"]
        .as_str()
        .is_some_and(|t| t.split('.').count() == 3));
}
