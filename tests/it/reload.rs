//! Issue 16 point 2: `start` reloads its configuration and secrets on SIGHUP (what
//! `systemctl reload` sends), so rotating a client secret needs no restart; a bad new
//! configuration is refused with a log line and the running one kept.
//!
//! `cargo test --test it reload::`

use crate::common::cli::{fake_and_env, try_call, Service};
use crate::common::{unique_user, TestEnv, Tuning, LOGIN_CLIENT_SECRET, PACKAGE};
use serde_json::json;
use std::time::{Duration, Instant};

const PASSWORD: &str = "Reload-Password-1";

fn sighup(svc: &Service) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &svc.pid()])
        .status()
        .expect("run kill");
    assert!(ok.success());
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_rotated_client_secret_is_taken_on_sighup_and_a_bad_config_is_refused() {
    let (fake, env) = fake_and_env(&Tuning::default());
    let user = unique_user("reload");
    fake.add_user(&user, PASSWORD, true);
    crate::common::cli::kr(
        &env,
        &crate::common::cli::args(&["user", "add"], &user),
        &format!("{PASSWORD}\n"),
    )
    .expect(0);
    let login = json!({"op": "login", "user": user, "package": PACKAGE, "password": PASSWORD});
    let mode = |env: &TestEnv| -> Option<String> {
        try_call(env, &login).and_then(|a| a["result"]["auth_mode"].as_str().map(str::to_string))
    };
    let mut svc = Service::start(&env);
    svc.wait_for("stop with Ctrl-C or SIGTERM", Duration::from_secs(20));
    assert_eq!(mode(&env).as_deref(), Some("keycloak"));

    // The secret is rotated in Keycloak: logins fall back to local until the config has it.
    fake.set_client_secret("webapp", "rotated-reload-secret");
    assert_eq!(mode(&env).as_deref(), Some("local"));
    let config = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(
        env.config_path(),
        config.replace(LOGIN_CLIENT_SECRET, "rotated-reload-secret"),
    )
    .unwrap();
    sighup(&svc);
    eventually("a login through Keycloak with the new secret", || {
        mode(&env).as_deref() == Some("keycloak")
    });

    // A broken config: refused with a log line; the service goes on with the running one.
    std::fs::write(env.config_path(), "keycloak: [not, a, mapping\n").unwrap();
    sighup(&svc);
    eventually("the refusal in the log", || {
        svc.stderr.lock().unwrap().contains("configuration refused")
    });
    assert!(!svc.stderr.lock().unwrap().contains("rotated-reload-secret"));
    assert_eq!(
        mode(&env).as_deref(),
        Some("keycloak"),
        "the running config is kept"
    );
    assert!(svc.child.try_wait().unwrap().is_none(), "no restart");
    svc.sigterm();
    assert_eq!(svc.wait_exit(Duration::from_secs(30)).code(), Some(0));
}
