// The command line, end to end: every test runs the real binary (`keycloak-resilient`) against
// the in-process fake Keycloak and checks the exit status and what was printed. `start` runs as
// a spawned child that the tests stop with SIGTERM or kill with SIGKILL.

use crate::common::cli::*;
use crate::common::fake_keycloak::{Behavior, FakeKeycloak};
use crate::common::{TestEnv, Tuning, ADMIN_CLIENT_SECRET, LOGIN_CLIENT_SECRET, PACKAGE};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const ALICE_PW: &str = "Alice-Password-1";
const BOB_PW: &str = "Bob-Password-1";
const NEW_PW: &str = "New-Password-9";

// ------------------------------------------------------------------------------------------
// Helpers

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

// ------------------------------------------------------------------------------------------
// 1. Exit codes

/// Issue 11: every range is one rule for both doors. The command line refuses an
/// out-of-range value with the one line the socket answers (`socket::
/// the_socket_refuses_out_of_range_values_as_the_command_line_does`), exit 2.
#[test]
fn out_of_range_values_are_refused_in_one_line() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    env.create_database();
    for (cmd, flag, value, want) in [
        (
            "queue",
            "--limit",
            "0",
            "--limit 0 is out of range (expected 1 to 10000)",
        ),
        (
            "queue",
            "--limit",
            "1000000000",
            "--limit 1000000000 is out of range (expected 1 to 10000)",
        ),
        (
            "sync-now",
            "--batch-size",
            "0",
            "--batch-size 0 is out of range (expected at least 1)",
        ),
        (
            "cleanup",
            "--token-hours",
            "876001",
            "--token-hours 876001 is out of range (expected 0 to 876000)",
        ),
    ] {
        let out = kr(&env, &[cmd, flag, value], "").expect(2);
        assert_eq!(
            one_line(&out),
            format!("error: {want}"),
            "{cmd} {flag} {value}"
        );
    }
    // The bounds themselves are accepted.
    kr(&env, &["queue", "--limit", "10000"], "").expect(0);
    kr(&env, &["queue", "--limit", "1"], "").expect(0);
}

#[test]
fn exit_codes_are_as_documented() {
    let (fake, env) = fake_and_env(&Tuning::default());
    env.create_database();
    // 0: done.
    let out = kr(&env, &["status"], "").expect(0);
    assert!(out.stdout.contains("Mode:              normal"), "{out:?}");
    // 1: refused.
    let out = kr(&env, &args(&["authenticate"], "alice"), "wrong-password\n").expect(1);
    assert!(out.stderr.contains("refused"), "{out:?}");
    // 2: bad input (argument) and bad config.
    let out = kr(&env, &["sync-now", "--batch-size", "0"], "").expect(2);
    assert!(out.stderr.contains("--batch-size"), "{out:?}");
    std::fs::write(env.config_path(), "keycloak: [1, 2").unwrap();
    let out = kr(&env, &["status"], "").expect(2);
    assert!(out.stderr.starts_with("error: config file "), "{out:?}");
    let env = TestEnv::new(&fake.url(), &Tuning::default());
    // 4: passwd, local password changed, Keycloak refused the new one.
    add_user(&env, "bob", BOB_PW);
    let out = kr(
        &env,
        &args(&["passwd"], "bob"),
        &format!("{BOB_PW}\nshort\n"),
    )
    .expect(4);
    assert!(out.stdout.contains("mode rejected"), "{out:?}");
    // 3: runtime: the database is held by another process (here: the test itself).
    let store =
        keycloak_resilient::store::Store::open(&env.data_dir()).expect("open store in test");
    let out = kr(&env, &["--lock-timeout", "0.3", "status"], "").expect(3);
    assert!(
        out.stderr.contains(&format!(
            "is in use by pid {} (`a program using the keycloak_resilient library`",
            std::process::id()
        )),
        "{out:?}"
    );
    assert!(out.stderr.contains("--lock-timeout"), "{out:?}");
    drop(store);
    kr(&env, &["status"], "").expect(0);
}

/// A damaged data directory is a runtime failure (3), reported on one line that says each
/// cause once.
#[test]
fn damaged_data_dir_is_exit_3_with_each_cause_once() {
    let env = TestEnv::new("http://127.0.0.1:9", &Tuning::default());
    // sled's log file `db` is a directory: sled cannot open it.
    std::fs::create_dir_all(env.data_dir().join("db")).unwrap();
    // Owner-only, as the tool would have made it (a wider mode is narrowed with a warning line).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(env.data_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let out = kr(&env, &["status"], "").expect(3);
    let line = one_line(&out);
    assert!(line.starts_with("error: opening data directory "), "{line}");
    assert_eq!(
        line.matches("Is a directory").count(),
        1,
        "cause repeated: {line}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
}

// ------------------------------------------------------------------------------------------
// 2. Bad config

#[test]
fn bad_config_is_one_line_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = "keycloak:\n  server_url: http://127.0.0.1:9\n  realm: resilient-test\n  client_id: webapp\n";
    let cases: Vec<(&str, String, &str)> = vec![
        ("invalid yaml", "keycloak: [1, 2".into(), ""),
        (
            "unknown key",
            format!("{base}  resilience:\n    bogus_knob: 1\n"),
            "bogus_knob",
        ),
        (
            "wrong type",
            format!("{base}  resilience:\n    failure_threshold: three\n"),
            "failure_threshold",
        ),
        (
            "threshold 0",
            format!("{base}  resilience:\n    failure_threshold: 0\n"),
            "keycloak.resilience.failure_threshold: ",
        ),
        (
            "negative cooldown",
            format!("{base}  resilience:\n    cooldown_seconds: -5\n"),
            "keycloak.resilience.cooldown_seconds: ",
        ),
        (
            "ftp url",
            base.replace("http://127.0.0.1:9", "ftp://x"),
            "keycloak.server_url: ",
        ),
        (
            "not a url",
            base.replace("http://127.0.0.1:9", "not a url"),
            "keycloak.server_url: ",
        ),
    ];
    for (what, yaml, key) in cases {
        let path = dir.path().join(format!("{}.yaml", what.replace(' ', "-")));
        std::fs::write(&path, yaml).unwrap();
        let mut c = assert_cmd::Command::cargo_bin("keycloak-resilient").unwrap();
        c.arg("--config").arg(&path).arg("status");
        let out = run(c).expect(2);
        let line = one_line(&out);
        let prefix = format!("error: config file {}: ", path.display());
        assert!(line.starts_with(&prefix), "{what}: {line}");
        assert!(line.contains(key), "{what}: {key:?} not named in {line}");
        assert!(out.stdout.is_empty(), "{what}: {out:?}");
        assert!(
            !dir.path().join("data").exists(),
            "{what}: a data directory was created"
        );
    }
    // A missing file.
    let missing = dir.path().join("nope.yaml");
    let mut c = assert_cmd::Command::cargo_bin("keycloak-resilient").unwrap();
    c.arg("--config").arg(&missing).arg("queue");
    let out = run(c).expect(2);
    assert_eq!(
        one_line(&out),
        format!(
            "error: config file {}: not found (pass --config FILE)",
            missing.display()
        )
    );
}

#[test]
fn data_dir_flag_overrides_storage_path() {
    let env = TestEnv::new("http://127.0.0.1:9", &Tuning::default());
    let other = env.dir.path().join("elsewhere");
    let mut c = env.cmd();
    c.arg("--data-dir")
        .arg(&other)
        .args(args(&["user", "add"], "zed"))
        .write_stdin("Zed-Password-1\n");
    run(c).expect(0);
    assert!(
        other.join("secret.key").exists(),
        "nothing written to --data-dir"
    );
    assert!(
        !env.data_dir().exists(),
        "storage.path was used despite --data-dir"
    );
    let mut c = env.cmd();
    c.arg("--data-dir")
        .arg(&other)
        .args(["--json", "user", "list"]);
    let users = run(c).expect(0).json();
    assert_eq!(users[0]["user"], "zed", "{users}");
    // storage.path has no database: `user list` says so rather than creating one there.
    let out = kr(&env, &["--json", "user", "list"], "").expect(3);
    assert!(one_line(&out).contains("no database in "), "{out:?}");
    assert!(
        !env.data_dir().exists(),
        "a read-only command created a database"
    );
}

// ------------------------------------------------------------------------------------------
// 3. Bad command-line input

#[test]
fn bad_cli_input_is_exit_2_and_changes_nothing() {
    let env = TestEnv::new("http://127.0.0.1:9", &Tuning::default());
    env.create_database();
    let out = kr(&env, &["frobnicate"], "").expect(2);
    assert!(
        out.stderr.contains("unrecognized subcommand 'frobnicate'"),
        "{out:?}"
    );
    let out = kr(&env, &["authenticate", "--package", PACKAGE], "pw\n").expect(2);
    assert!(out.stderr.contains("--user"), "{out:?}");

    let qs = |ty: &str, stdin: &str| {
        kr(&env, &args(&["queue-sync", "--type", ty], "alice"), stdin).expect(2)
    };
    let out = qs("password_reset", "{\"new_password\": \"Secret-Pw-1\"}");
    assert!(
        one_line(&out).contains("unknown sync type \"password_reset\""),
        "{out:?}"
    );
    let out = qs("password_change", "{\"new_password\": ");
    assert!(one_line(&out).contains("not valid JSON"), "{out:?}");
    let out = qs("password_change", "{}");
    assert!(one_line(&out).contains("password"), "{out:?}");
    assert!(out.stderr.contains("missing field"), "{out:?}");
    let out = qs("password_change", "");
    assert!(one_line(&out).contains("no sync data on stdin"), "{out:?}");
    let mut a = args(&["queue-sync", "--type", "password_change"], "alice");
    a.extend_from_slice(&["--priority", "0"]);
    let out = kr(&env, &a, "{\"new_password\": \"Secret-Pw-1\"}").expect(2);
    assert!(out.stderr.contains("--priority"), "{out:?}");
    assert!(!out.stderr.contains("Secret-Pw-1") && !out.stdout.contains("Secret-Pw-1"));
    assert!(queue(&env).is_empty(), "bad input was queued");

    let out = kr(&env, &args(&["authenticate"], "alice"), "").expect(2);
    assert!(one_line(&out).contains("no password"), "{out:?}");
    let out = kr(&env, &["session", "show", "not-a-uuid"], "").expect(2);
    assert!(one_line(&out).contains("not a UUID"), "{out:?}");
    let out = kr(&env, &["logout", "not-a-uuid"], "").expect(2);
    assert!(one_line(&out).contains("not a UUID"), "{out:?}");
}

// ------------------------------------------------------------------------------------------
// 4. status --json

fn check_status_shape(s: &Value) {
    assert!(s["available"].is_boolean(), "{s}");
    assert!(
        matches!(
            s["circuit_state"].as_str(),
            Some("closed" | "open" | "half_open")
        ),
        "{s}"
    );
    assert!(s["failure_count"].is_u64(), "{s}");
    assert!(
        matches!(s["mode"].as_str(), Some("normal" | "degraded" | "offline")),
        "{s}"
    );
    assert!(s["pending_syncs"].is_u64(), "{s}");
    assert!(s["cached_tokens"].is_u64(), "{s}");
    let c = &s["config"];
    assert!(c["failure_threshold"].is_u64(), "{s}");
    assert!(c["cooldown_seconds"].is_u64(), "{s}");
    assert!(c["grace_period_hours"].is_u64(), "{s}");
    assert!(c["offline_mode_allowed"].is_boolean(), "{s}");
    assert!(s["active_sessions"].is_u64(), "{s}");
    for m in ["keycloak", "cached", "local"] {
        assert!(s["auth_modes_last_hour"][m].is_u64(), "{s}");
    }
    assert!(s["locked_accounts"].is_array(), "{s}");
}

#[test]
fn status_json_shape_and_modes() {
    let fake = FakeKeycloak::start();
    let plain = TestEnv::new(&fake.url(), &Tuning::default());
    let cached = TestEnv::new(&fake.url(), &Tuning::default());
    plain.create_database();
    cached.create_database();
    let s = status(&plain);
    check_status_shape(&s);
    assert_eq!(
        (
            s["available"].as_bool(),
            s["circuit_state"].as_str(),
            s["mode"].as_str()
        ),
        (Some(true), Some("closed"), Some("normal"))
    );
    assert_eq!(s["config"]["failure_threshold"], 2);
    assert_eq!(s["config"]["cooldown_seconds"], 60);
    assert_eq!(s["config"]["grace_period_hours"], 24);
    assert_eq!(s["config"]["offline_mode_allowed"], true);
    // A token cached in one data directory while Keycloak is up.
    kr(
        &cached,
        &args(&["authenticate"], "alice"),
        &format!("{ALICE_PW}\n"),
    )
    .expect(0);

    fake.set_behavior(Behavior::Refuse);
    for env in [&plain, &cached] {
        let s = status(env);
        assert_eq!(
            (
                s["available"].as_bool(),
                s["circuit_state"].as_str(),
                s["failure_count"].as_u64()
            ),
            (Some(false), Some("closed"), Some(1)),
            "{s}"
        );
        let s = status(env);
        check_status_shape(&s);
        assert_eq!(s["circuit_state"], "open", "{s}");
        assert_eq!(s["failure_count"], 2, "{s}");
        assert_eq!(s["available"], false, "{s}");
    }
    assert_eq!(status(&plain)["mode"], "offline");
    let s = status(&cached);
    assert_eq!(s["mode"], "degraded", "{s}");
    assert_eq!(s["cached_tokens"], 1, "{s}");
}

// ------------------------------------------------------------------------------------------
// 5. The circuit persists across invocations

#[test]
fn open_circuit_persists_across_invocations() {
    let (fake, env) = fake_and_env(&Tuning::default());
    fake.set_behavior(Behavior::Refuse);
    for _ in 0..2 {
        let out = kr(
            &env,
            &args(&["authenticate"], "alice"),
            &format!("{ALICE_PW}\n"),
        )
        .expect(1);
        assert!(out.stderr.contains("unavailable"), "{out:?}");
    }
    queue_sync(&env, "alice", NEW_PW);
    // Keycloak is back, but the circuit is open for 60 s: no invocation may ask it.
    fake.set_behavior(Behavior::Normal);
    let before = fake.request_count();
    let s = status(&env);
    assert_eq!(s["circuit_state"], "open", "{s}");
    assert_eq!(s["mode"], "offline", "{s}");
    let out = kr(&env, &["sync-now"], "").expect(0);
    assert!(out.stdout.contains("0 processed"), "{out:?}");
    assert!(out.stdout.contains("circuit open"), "{out:?}");
    let out = kr(
        &env,
        &args(&["authenticate"], "alice"),
        &format!("{ALICE_PW}\n"),
    )
    .expect(1);
    assert!(out.stderr.contains("circuit open"), "{out:?}");
    assert_eq!(
        fake.request_count(),
        before,
        "Keycloak was asked while the circuit was open: {:?}",
        fake.requests()
    );
    assert_eq!(fake.password_of("alice").as_deref(), Some(ALICE_PW));
    assert_eq!(queue(&env)[0]["status"], "pending");
}

// ------------------------------------------------------------------------------------------
// 6. authenticate / cached-token

#[test]
fn authenticate_online_then_cached() {
    let (fake, env) = fake_and_env(&Tuning::default());
    let auth = args(&["authenticate"], "alice");
    let t = kr_json(&env, &auth, &format!("{ALICE_PW}\n"), 0);
    assert_eq!(t["cached"], false, "{t}");
    assert!(t["cached_at"].is_null(), "{t}");
    let token = t["access_token"]
        .as_str()
        .expect("access_token string")
        .to_string();
    assert!(token.len() > 20, "{t}");
    assert!(is_rfc3339(&t["expires_at"]), "{t}");
    // Wrong password online: Keycloak refuses.
    let out = kr(&env, &auth, "Wrong-Password-1\n").expect(1);
    assert!(out.stderr.contains("refused by Keycloak"), "{out:?}");
    // The wrong password dropped the cache entry ("invalid credentials"); log in again.
    kr(&env, &auth, &format!("{ALICE_PW}\n")).expect(0);

    fake.set_behavior(Behavior::Refuse);
    let t = kr_json(&env, &auth, &format!("{ALICE_PW}\n"), 0);
    assert_eq!(t["cached"], true, "{t}");
    assert!(is_rfc3339(&t["cached_at"]), "{t}");
    assert!(t["access_token"].is_string(), "{t}");
    assert!(is_rfc3339(&t["expires_at"]), "{t}");
    // Wrong password offline: no cached login matches.
    let out = kr(&env, &auth, "Wrong-Password-1\n").expect(1);
    assert!(out.stderr.contains("no cached login matches"), "{out:?}");

    let t = kr_json(&env, &args(&["cached-token"], "alice"), "", 0);
    assert_eq!(t["cached"], true, "{t}");
    assert!(t["access_token"].is_string(), "{t}");
    let out = kr(&env, &args(&["cached-token"], "nobody"), "").expect(1);
    assert_eq!(
        one_line(&out),
        format!("no cached token for nobody/{PACKAGE} inside the grace period")
    );
}

// ------------------------------------------------------------------------------------------
// 7. sync-now

#[test]
fn sync_now_says_why_then_processes() {
    let (fake, env) = fake_and_env(&Tuning::default());
    let id = queue_sync(&env, "alice", NEW_PW);
    fake.set_behavior(Behavior::Refuse);
    let out = kr(&env, &["sync-now"], "").expect(0);
    assert!(out.stdout.starts_with("0 processed"), "{out:?}");
    assert!(out.stdout.contains("1 pending"), "{out:?}");
    assert!(
        out.stdout
            .contains("nothing more done: Keycloak unavailable"),
        "{out:?}"
    );
    assert_eq!(fake.password_of("alice").as_deref(), Some(ALICE_PW));

    fake.set_behavior(Behavior::Normal);
    let out = kr(&env, &["sync-now"], "").expect(0);
    assert_eq!(
        out.stdout.lines().next(),
        Some("1 processed (1 completed, 0 failed, 0 retried); 0 pending"),
        "{out:?}"
    );
    assert_eq!(fake.password_of("alice").as_deref(), Some(NEW_PW));
    let q = queue(&env);
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0]["sync_id"], id.as_str());
    assert_eq!(q[0]["status"], "completed");
    let text = kr(&env, &["queue"], "").expect(0);
    assert!(
        text.stdout.contains(&id) && text.stdout.contains("completed"),
        "{text:?}"
    );
}

// ------------------------------------------------------------------------------------------
// 8. Durability

#[test]
fn queued_item_survives_a_sigkilled_process() {
    let (fake, env) = fake_and_env(&Tuning::default());
    fake.set_behavior(Behavior::Refuse);
    let id = queue_sync(&env, "alice", NEW_PW);
    let mut svc = Service::start(&env);
    svc.wait_for("stop with Ctrl-C or SIGTERM", Duration::from_secs(15));
    svc.sigkill();
    let q = queue(&env);
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0]["sync_id"], id.as_str(), "{q:?}");
    assert_eq!(q[0]["status"], "pending", "{q:?}");
    assert_eq!(q[0]["sync_type"], "password_change", "{q:?}");
}

#[test]
fn twenty_queued_items_survive_a_sigkilled_process() {
    let (fake, env) = fake_and_env(&Tuning::default());
    fake.set_behavior(Behavior::Refuse);
    let ids: Vec<String> = (0..20)
        .map(|i| queue_sync(&env, &format!("user{i}"), NEW_PW))
        .collect();
    let mut svc = Service::start(&env);
    svc.wait_for("20 pending sync(s)", Duration::from_secs(15));
    svc.sigkill();
    let q = queue(&env);
    assert_eq!(q.len(), 20, "{q:?}");
    for id in &ids {
        let item = q
            .iter()
            .find(|i| i["sync_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} lost"));
        assert_eq!(item["status"], "pending", "{item}");
    }
    assert_eq!(status(&env)["pending_syncs"], 20);
}

/// The harder crash: `queue-sync` itself is SIGKILLed after `enqueue` returned but before the
/// process can exit (where dropping the database would flush it anyway). Its stdout is a FIFO
/// the test filled beforehand, so printing the SyncId blocks; once the kernel reports it blocked
/// in the pipe write (`/proc/PID/wchan`), the test kills it. The item must be there.
#[test]
#[cfg(target_os = "linux")]
fn queue_sync_killed_while_printing_its_id_loses_nothing() {
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    /// O_NONBLOCK on Linux (x86_64 and aarch64); no libc dependency for one constant.
    const O_NONBLOCK: i32 = 0o4000;

    let env = TestEnv::new("http://127.0.0.1:9", &Tuning::default());
    for i in 0..5 {
        let fifo = env.dir.path().join(format!("stdout-{i}.fifo"));
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(made.success(), "mkfifo failed");
        // Read+write, non-blocking: keeps a reader open and lets the test fill the FIFO.
        let mut filler = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(O_NONBLOCK)
            .open(&fifo)
            .expect("open fifo");
        // A separate, blocking open file description for the child's stdout.
        let child_stdout = OpenOptions::new()
            .write(true)
            .open(&fifo)
            .expect("open fifo for writing");
        let chunk = [b'#'; 4096];
        loop {
            match filler.write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling the fifo: {e}"),
            }
        }
        // The last chunk may have been written in part; top up byte by byte.
        while filler.write(b"#").is_ok() {}

        let user = format!("crash{i}");
        let mut child = std::process::Command::new(BIN)
            .arg("--config")
            .arg(env.config_path())
            .args(args(&["queue-sync", "--type", "password_change"], &user))
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::from(child_stdout))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn queue-sync");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{{\"new_password\": \"{NEW_PW}\"}}").as_bytes())
            .unwrap();
        let wchan = format!("/proc/{}/wchan", child.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                panic!("queue-sync exited ({st:?}) although its stdout was full");
            }
            if std::fs::read_to_string(&wchan).is_ok_and(|w| w.contains("pipe_write")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "queue-sync never blocked printing its SyncId"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().expect("SIGKILL");
        let st = child.wait().expect("wait");
        assert!(st.code().is_none(), "not killed: {st:?}");
        drop(filler);
    }
    let q = queue(&env);
    for i in 0..5 {
        let user = format!("crash{i}");
        let item = q
            .iter()
            .find(|it| it["user"] == user.as_str())
            .unwrap_or_else(|| panic!("the item of {user} was lost in the crash: {q:?}"));
        assert_eq!(item["status"], "pending", "{item}");
    }
    assert_eq!(q.len(), 5, "{q:?}");
}

// ------------------------------------------------------------------------------------------
// 9. Locked data directory, banner, SIGTERM

#[test]
fn start_locks_the_data_dir_and_stops_on_sigterm() {
    let t = Tuning {
        extra: "service:\n  sync_interval_seconds: 45\n  batch_size: 7\n  cleanup_interval_seconds: 1234\n".into(),
        ..Tuning::default()
    };
    let (_fake, env) = fake_and_env(&t);
    let mut svc = Service::start(&env);
    svc.wait_for("stop with Ctrl-C or SIGTERM", Duration::from_secs(15));
    let banner = svc.stdout.join("\n");
    assert!(
        banner.contains(&format!(
            "keycloak-resilient {} starting",
            env!("CARGO_PKG_VERSION")
        )),
        "{banner}"
    );
    assert!(banner.contains("sync interval:    45s"), "{banner}");
    assert!(banner.contains("batch size:       7"), "{banner}");
    assert!(banner.contains("cleanup interval: 1234s"), "{banner}");
    assert!(banner.contains("mode normal"), "{banner}");

    // One-shot commands are served by the running service over its socket.
    assert!(banner.contains("control socket:"), "{banner}");
    let out = kr(&env, &["status"], "").expect(0);
    assert!(out.stdout.contains("Mode:              normal"), "{out:?}");
    kr(&env, &["queue"], "").expect(0);

    svc.sigterm();
    let st = svc.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "start: {st:?} {:#?}", svc.stdout);
    assert_eq!(
        svc.stdout.last().map(String::as_str),
        Some("stopped"),
        "{:#?}",
        svc.stdout
    );
    // The lock went with it.
    kr(&env, &["status"], "").expect(0);
}

// ------------------------------------------------------------------------------------------
// 10. start syncs as soon as Keycloak returns

#[test]
fn start_syncs_at_once_when_keycloak_returns() {
    let t = Tuning {
        cooldown_seconds: 1,
        health_check_cache_seconds: 1,
        extra: "service:\n  sync_interval_seconds: 3600\n".into(),
        ..Tuning::default()
    };
    let (fake, env) = fake_and_env(&t);
    fake.set_behavior(Behavior::Refuse);
    queue_sync(&env, "alice", NEW_PW);
    let mut svc = Service::start(&env);
    svc.wait_for("stop with Ctrl-C or SIGTERM", Duration::from_secs(15));
    assert!(
        svc.stdout
            .iter()
            .any(|l| l.contains("Keycloak is unavailable")),
        "{:#?}",
        svc.stdout
    );
    std::thread::sleep(Duration::from_millis(1500));
    fake.set_behavior(Behavior::Normal);
    let deadline = Instant::now() + Duration::from_secs(15);
    while fake.password_of("alice").as_deref() != Some(NEW_PW) {
        assert!(
            Instant::now() < deadline,
            "not synced within 15 s; stdout {:#?}",
            svc.stdout
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    svc.wait_for("sync: 1 processed (1 completed", Duration::from_secs(5));
    assert!(
        svc.stdout
            .iter()
            .any(|l| l == "Keycloak is back: syncing now"),
        "{:#?}",
        svc.stdout
    );
    svc.sigterm();
    let st = svc.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0));
    assert_eq!(svc.stdout.last().map(String::as_str), Some("stopped"));
    assert_eq!(queue(&env)[0]["status"], "completed");
}

// ------------------------------------------------------------------------------------------
// 11. Local authentication

#[test]
fn user_login_session_logout() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    add_user(&env, "alice", ALICE_PW);
    let users = kr_json(&env, &["user", "list"], "", 0);
    assert_eq!(users.as_array().map(Vec::len), Some(1), "{users}");
    assert_eq!(users[0]["user"], "alice");
    assert_eq!(users[0]["package"], PACKAGE);
    assert_eq!(users[0]["enabled"], true);
    assert!(users[0]["locked_until"].is_null());
    // Adding the same user again is bad input.
    let out = kr(&env, &args(&["user", "add"], "alice"), "Other-Password-1\n").expect(2);
    assert!(one_line(&out).contains("alice"), "{out:?}");

    let r = login(&env, "alice", ALICE_PW, 0);
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["auth_mode"], "keycloak", "{r}");
    assert_eq!(r["keycloak_status"], "online", "{r}");
    let id = r["session_id"].as_str().expect("session_id").to_string();
    uuid::Uuid::parse_str(&id).expect("session id is a UUID");

    let s = kr_json(&env, &["session", "show", &id], "", 0);
    assert_eq!(s["session_id"], id.as_str(), "{s}");
    assert_eq!(s["user"], "alice", "{s}");
    assert_eq!(s["auth_mode"], "keycloak", "{s}");
    assert!(is_rfc3339(&s["expires_at"]), "{s}");
    let st = status(&env);
    assert_eq!(st["active_sessions"], 1, "{st}");
    assert_eq!(st["auth_modes_last_hour"]["keycloak"], 1, "{st}");

    let out = kr(&env, &["logout", &id], "").expect(0);
    assert_eq!(out.stdout.trim(), format!("session {id} ended"));
    let out = kr(&env, &["session", "show", &id], "").expect(1);
    assert_eq!(one_line(&out), format!("no active session {id}"));
    kr(&env, &["logout", &id], "").expect(1);
    assert_eq!(status(&env)["active_sessions"], 0);
}

#[test]
fn passwd_synchronized_queued_and_rejected() {
    let (fake, env) = fake_and_env(&Tuning::default());
    add_user(&env, "alice", ALICE_PW);
    add_user(&env, "bob", BOB_PW);
    let r = kr_json(
        &env,
        &args(&["passwd"], "alice"),
        &format!("{ALICE_PW}\n{NEW_PW}\n"),
        0,
    );
    assert_eq!(r["mode"], "synchronized", "{r}");
    assert_eq!(fake.password_of("alice").as_deref(), Some(NEW_PW));
    // Wrong old password: refused, nothing changes.
    let out = kr(
        &env,
        &args(&["passwd"], "alice"),
        "Not-The-Password\nWhatever-Pw-1\n",
    )
    .expect(1);
    assert!(out.stderr.contains("invalid credentials"), "{out:?}");
    // Only one line on stdin.
    let out = kr(&env, &args(&["passwd"], "alice"), &format!("{NEW_PW}\n")).expect(2);
    assert!(one_line(&out).contains("no new password"), "{out:?}");

    // Keycloak refuses the new password (policy: 8 characters): exit 4; Keycloak decides
    // passwords, so the local one stays the previous one.
    let out = kr(
        &env,
        &["--json", "passwd", "--user", "bob", "--package", PACKAGE],
        &format!("{BOB_PW}\nshort\n"),
    )
    .expect(4);
    let r = out.json();
    assert_eq!(r["mode"], "rejected", "{r}");
    // Issue 14 point 7: the output tells what the exit code says.
    assert_eq!(r["success"], false, "{r}");
    assert_eq!(r["local_changed"], false, "{r}");
    assert!(r["keycloak_error"].is_string(), "{r}");
    assert_eq!(fake.password_of("bob").as_deref(), Some(BOB_PW));
    let r = login(&env, "bob", "short", 1);
    assert_eq!(r["reason"], "invalid_credentials", "{r}");
    let r = login(&env, "bob", BOB_PW, 0);
    assert_eq!(r["auth_mode"], "keycloak", "{r}");

    fake.set_behavior(Behavior::Refuse);
    let newer = "Newer-Password-10";
    let r = kr_json(
        &env,
        &args(&["passwd"], "alice"),
        &format!("{NEW_PW}\n{newer}\n"),
        0,
    );
    assert_eq!(r["mode"], "queued", "{r}");
    let sync_id = r["sync_id"].as_str().expect("sync_id").to_string();
    let q = queue(&env);
    let item = q
        .iter()
        .find(|i| i["sync_id"] == sync_id.as_str())
        .expect("queued item listed");
    assert_eq!(item["status"], "pending", "{item}");
    assert_eq!(item["priority"], 1, "{item}");
    let r = login(&env, "alice", newer, 0);
    assert_eq!(r["auth_mode"], "local", "{r}");
    assert_eq!(r["keycloak_status"], "offline", "{r}");
}

#[test]
fn lockout_disable_and_uniform_refusals() {
    let fake = FakeKeycloak::start();
    fake.set_behavior(Behavior::Refuse);
    let env = TestEnv::new(&fake.url(), &Tuning::default());
    add_user(&env, "dave", "Dave-Password-1");
    add_user(&env, "erin", "Erin-Password-1");

    // Unknown user and wrong password look the same.
    let unknown = kr(
        &env,
        &["--json", "login", "--user", "nobody", "--package", PACKAGE],
        "Dave-Password-1\n",
    )
    .expect(1);
    let wrong = kr(
        &env,
        &["--json", "login", "--user", "erin", "--package", PACKAGE],
        "Not-Her-Password\n",
    )
    .expect(1);
    assert_eq!(
        unknown.json()["reason"],
        "invalid_credentials",
        "{unknown:?}"
    );
    assert_eq!(unknown.json(), wrong.json());
    // Both were put to Keycloak (it decides passwords), which is down: the first such call
    // may log the circuit opening; the refusal itself reads the same.
    let last = |out: &crate::common::cli::Out| out.stderr.lines().last().unwrap_or("").to_string();
    assert_eq!(last(&unknown), last(&wrong));
    assert_eq!(last(&unknown), "login refused: invalid_credentials");

    for _ in 0..5 {
        let r = login(&env, "dave", "Not-His-Password", 1);
        assert_eq!(r["reason"], "invalid_credentials", "{r}");
    }
    let out = kr(
        &env,
        &["--json", "login", "--user", "dave", "--package", PACKAGE],
        "Dave-Password-1\n",
    )
    .expect(1);
    let r = out.json();
    assert_eq!(r["success"], false, "{r}");
    assert_eq!(r["reason"], "account_locked", "{r}");
    assert!(is_rfc3339(&r["locked_until"]), "{r}");
    assert!(
        one_line(&out).starts_with("login refused: account_locked (until "),
        "{out:?}"
    );
    let s = status(&env);
    let locked = s["locked_accounts"].as_array().expect("locked_accounts");
    assert_eq!(locked.len(), 1, "{s}");
    assert_eq!(locked[0]["user"], "dave", "{s}");
    assert_eq!(locked[0]["package"], PACKAGE, "{s}");
    assert!(is_rfc3339(&locked[0]["locked_until"]), "{s}");

    let out = kr(&env, &args(&["user", "disable"], "erin"), "").expect(0);
    assert!(
        out.stdout
            .trim()
            .starts_with(&format!("disabled erin/{PACKAGE}")),
        "{out:?}"
    );
    let r = login(&env, "erin", "Erin-Password-1", 1);
    assert_eq!(r["reason"], "account_disabled", "{r}");
    kr(&env, &args(&["user", "enable"], "erin"), "").expect(0);
    let r = login(&env, "erin", "Erin-Password-1", 0);
    assert_eq!(r["auth_mode"], "local", "{r}");
    assert_eq!(r["keycloak_status"], "offline", "{r}");
    kr(&env, &args(&["user", "disable"], "nobody"), "").expect(2);
}

#[test]
fn user_import_reports_bad_rows_and_imports_good_ones() {
    let env = TestEnv::new("http://127.0.0.1:9", &Tuning::default());
    let hash = keycloak_resilient::password::hash("Imported-Password-1").expect("argon2 hash");
    assert!(hash.contains(','), "the PHC string has commas: {hash}");
    let dir = env.dir.path();

    let jsonl = dir.join("users.jsonl");
    std::fs::write(
        &jsonl,
        format!(
            "{{\"username\": \"ivan\", \"package\": \"{PACKAGE}\", \"password_hash\": \"{hash}\"}}\n\
             {{\"username\": \"judy\", \"package\": \"{PACKAGE}\", \"password_hash\": \"not-a-hash\"}}\n\
             this is not json\n\
             \n\
             {{\"username\": \"kim\", \"package\": \"{PACKAGE}\", \"password\": \"Kim-Password-1\", \"enabled\": false}}\n"
        ),
    )
    .unwrap();
    let out = kr(&env, &["user", "import", jsonl.to_str().unwrap()], "").expect(1);
    assert!(out.stdout.contains("imported 2 user(s)"), "{out:?}");
    let shown = jsonl.display().to_string();
    // Row errors are diagnostics: on stderr, the summary alone on stdout.
    assert!(
        out.stderr.contains(&format!("{shown}:2: password_hash")),
        "{out:?}"
    );
    assert!(
        out.stderr.contains(&format!("{shown}:3: not valid JSON")),
        "{out:?}"
    );
    assert!(!out.stdout.contains(&format!("{shown}:")), "{out:?}");
    assert!(
        !out.stderr.contains(&format!("{shown}:1:"))
            && !out.stderr.contains(&format!("{shown}:5:")),
        "{out:?}"
    );
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !stream.contains(&hash) && !stream.contains("Kim-Password-1"),
            "{out:?}"
        );
    }

    let csv = dir.join("users.csv");
    std::fs::write(
        &csv,
        format!("username,package,password_hash,enabled\nlena,{PACKAGE},{hash},yes\nmax,{PACKAGE},$md5$nope,true\nivan,{PACKAGE},{hash},\n"),
    )
    .unwrap();
    let r = kr_json(&env, &["user", "import", csv.to_str().unwrap()], "", 1);
    assert_eq!(r["imported"], 1, "{r}");
    let errors = r["errors"].as_array().expect("errors");
    let lines: Vec<u64> = errors.iter().map(|e| e["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, vec![3, 4], "{r}");
    assert!(
        errors[1]["error"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{r}"
    );

    // All-good file: exit 0.
    let ok = dir.join("ok.ndjson");
    std::fs::write(&ok, format!("{{\"username\": \"nina\", \"package\": \"{PACKAGE}\", \"password_hash\": \"{hash}\"}}\n")).unwrap();
    kr(&env, &["user", "import", ok.to_str().unwrap()], "").expect(0);
    // Unknown extension: bad input (2); a missing file: an I/O problem (3).
    let out = kr(&env, &["user", "import", "users.xml"], "").expect(2);
    assert!(one_line(&out).contains("unknown format"), "{out:?}");
    let out = kr(&env, &["user", "import", "/nonexistent/users.csv"], "").expect(3);
    assert!(one_line(&out).contains("/nonexistent/users.csv"), "{out:?}");
    // Issue 15 point 5: what is not a regular file, even behind a symlink, is refused (exit 2,
    // naming it) instead of being read without end; a FIFO is refused, not waited on.
    let zero = dir.join("zero.jsonl");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let fifo = dir.join("fifo.csv");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for (path, what) in [(&zero, "is a device"), (&fifo, "is a FIFO")] {
        let out = kr(&env, &["user", "import", path.to_str().unwrap()], "").expect(2);
        let line = one_line(&out);
        assert!(
            line.contains(&format!(
                "import file {}: {what}, not a regular file",
                path.display()
            )),
            "{out:?}"
        );
    }

    let users = kr_json(&env, &["user", "list"], "", 0);
    let mut names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ivan", "kim", "lena", "nina"], "{users}");
    let kim = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user"] == "kim")
        .unwrap();
    assert_eq!(kim["enabled"], false);
    // Imported hashes work.
    login(&env, "lena", "Imported-Password-1", 0);
    login(&env, "ivan", "Imported-Password-1", 0);
    let r = login(&env, "kim", "Kim-Password-1", 1);
    assert_eq!(r["reason"], "account_disabled");
}

// ------------------------------------------------------------------------------------------
// 12. Metrics

#[test]
fn metrics_print_and_textfile() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    add_user(&env, "alice", ALICE_PW);
    login(&env, "alice", ALICE_PW, 0);
    let out = kr(&env, &["metrics"], "").expect(0);
    for needle in [
        "keycloak_resilient_keycloak_available 1\n",
        "keycloak_resilient_circuit_state{state=\"closed\"} 1\n",
        "keycloak_resilient_circuit_state{state=\"open\"} 0\n",
        "keycloak_resilient_logins_total{auth_mode=\"keycloak\"} 1\n",
        "# TYPE keycloak_resilient_logins_total counter\n",
        "keycloak_resilient_mode{mode=\"normal\"} 1\n",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle:?} missing from:\n{}",
            out.stdout
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kr.prom");
    let out = kr(&env, &["metrics", "--textfile", path.to_str().unwrap()], "").expect(0);
    assert!(out.stdout.is_empty(), "{out:?}");
    let text = std::fs::read_to_string(&path).expect("textfile written");
    assert!(
        text.contains("keycloak_resilient_logins_total{auth_mode=\"keycloak\"} 1"),
        "{text}"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("kr.prom")],
        "leftover files"
    );

    let out = kr(
        &env,
        &["metrics", "--textfile", "/nonexistent/dir/m.prom"],
        "",
    );
    assert_ne!(out.code, 0, "{out:?}");
    let line = one_line(&out);
    assert!(
        line.starts_with("error: ") && line.contains("/nonexistent/dir/m.prom"),
        "{line}"
    );
}

// ------------------------------------------------------------------------------------------
// 13. Secrets never leak

#[test]
fn secrets_never_leak_to_output_or_disk() {
    let (fake, env) = fake_and_env(&Tuning::default());
    let newer = "Newer-Password-10";
    let queued = "Queued-Password-11";
    let passwords = [ALICE_PW, NEW_PW, newer, queued, "Wrong-Password-7"];
    let secrets = [LOGIN_CLIENT_SECRET, ADMIN_CLIENT_SECRET];
    let debug = |a: &[&str], stdin: &str| {
        let mut c = env.cmd();
        c.env("RUST_LOG", "debug")
            .args(a)
            .write_stdin(stdin.to_string());
        run(c)
    };
    let mut outputs = Vec::new();
    let mut tokens = Vec::new();

    outputs.push(debug(&args(&["user", "add"], "alice"), &format!("{ALICE_PW}\n")).expect(0));
    let out = debug(
        &[
            "--json",
            "authenticate",
            "--user",
            "alice",
            "--package",
            PACKAGE,
        ],
        &format!("{ALICE_PW}\n"),
    )
    .expect(0);
    tokens.push(out.json()["access_token"].as_str().unwrap().to_string());
    // The token may be on stdout (asked for); nowhere else.
    assert!(!out.stderr.contains(&tokens[0]), "{out:?}");
    outputs.push(Out {
        stdout: out.stdout.replace(&tokens[0], "<token>"),
        ..out
    });
    outputs.push(debug(&args(&["authenticate"], "alice"), "Wrong-Password-7\n").expect(1));
    outputs.push(debug(&args(&["login"], "alice"), &format!("{ALICE_PW}\n")).expect(0));
    outputs.push(
        debug(
            &args(&["passwd"], "alice"),
            &format!("{ALICE_PW}\n{NEW_PW}\n"),
        )
        .expect(0),
    );
    assert_eq!(fake.password_of("alice").as_deref(), Some(NEW_PW));
    let out = debug(
        &[
            "--json",
            "authenticate",
            "--user",
            "alice",
            "--package",
            PACKAGE,
        ],
        &format!("{NEW_PW}\n"),
    )
    .expect(0);
    tokens.push(out.json()["access_token"].as_str().unwrap().to_string());
    outputs.push(Out {
        stdout: out.stdout.replace(&tokens[1], "<token>"),
        ..out
    });

    fake.set_behavior(Behavior::Refuse);
    let out = debug(
        &[
            "--json",
            "authenticate",
            "--user",
            "alice",
            "--package",
            PACKAGE,
        ],
        &format!("{NEW_PW}\n"),
    )
    .expect(0);
    assert_eq!(
        out.json()["access_token"],
        tokens[1].as_str(),
        "cached token is the last one"
    );
    outputs.push(Out {
        stdout: out.stdout.replace(&tokens[1], "<token>"),
        ..out
    });
    outputs.push(debug(&args(&["passwd"], "alice"), &format!("{NEW_PW}\n{newer}\n")).expect(0));
    outputs.push(debug(&args(&["login"], "alice"), &format!("{newer}\n")).expect(0));
    outputs.push(
        debug(
            &args(&["queue-sync", "--type", "password_change"], "bob"),
            &format!("{{\"new_password\": \"{queued}\"}}"),
        )
        .expect(0),
    );
    outputs.push(debug(&["sync-now"], "").expect(0));
    outputs.push(debug(&["queue"], "").expect(0));
    outputs.push(debug(&["status"], "").expect(0));
    outputs.push(debug(&["metrics"], "").expect(0));
    // Debug logging is really on (the check below would be empty otherwise).
    assert!(
        outputs.iter().any(|o| o.stderr.contains("DEBUG")),
        "RUST_LOG=debug produced no debug lines"
    );

    for o in &outputs {
        for s in passwords
            .iter()
            .chain(secrets.iter())
            .copied()
            .chain(tokens.iter().map(String::as_str))
        {
            assert!(
                !o.stdout.contains(s) && !o.stderr.contains(s),
                "{s:?} leaked: {o:#?}"
            );
        }
    }

    let files = files_under(&env.data_dir());
    assert!(files.len() > 1, "{files:?}");
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for s in passwords.iter().chain(secrets.iter()) {
            assert!(
                !contains_bytes(&bytes, s.as_bytes()),
                "{s:?} in plain text in {}",
                f.display()
            );
        }
        for t in &tokens {
            assert!(
                !contains_bytes(&bytes, t.as_bytes()),
                "access token in plain text in {}",
                f.display()
            );
            let signature = t.rsplit('.').next().unwrap();
            assert!(
                !contains_bytes(&bytes, signature.as_bytes()),
                "token signature in {}",
                f.display()
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// 14. --help and --version

#[test]
fn help_lists_subcommands_and_exit_codes() {
    let mut c = assert_cmd::Command::cargo_bin("keycloak-resilient").unwrap();
    c.arg("--help");
    let out = run(c).expect(0);
    for sub in [
        "status",
        "test",
        "sync-now",
        "cleanup",
        "authenticate",
        "cached-token",
        "refresh",
        "queue-sync",
        "queue",
        "start",
        "login",
        "passwd",
        "user",
        "session",
        "logout",
        "metrics",
    ]
    .into_iter()
    .map(String::from)
    // And whatever the clap definitions hold, so a new subcommand is covered too.
    .chain(
        <keycloak_resilient::commands::cli::Cli as clap::CommandFactory>::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string()),
    ) {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
            "{sub} not listed:\n{}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("Exit codes:"), "{}", out.stdout);
    for code in [
        "0  done",
        "1  refused",
        "2  bad input",
        "3  runtime failure",
        "4  passwd only",
    ] {
        assert!(
            out.stdout.contains(code),
            "{code:?} missing:\n{}",
            out.stdout
        );
    }
    let mut c = assert_cmd::Command::cargo_bin("keycloak-resilient").unwrap();
    c.arg("--version");
    let out = run(c).expect(0);
    assert_eq!(
        out.stdout.trim(),
        format!("keycloak-resilient {}", env!("CARGO_PKG_VERSION"))
    );
    for sub in ["passwd", "queue-sync", "user"] {
        let mut c = assert_cmd::Command::cargo_bin("keycloak-resilient").unwrap();
        c.args([sub, "--help"]);
        let out = run(c).expect(0);
        assert!(
            out.stdout.starts_with(|ch: char| ch.is_uppercase()),
            "{sub}: {}",
            out.stdout
        );
    }
}

// ------------------------------------------------------------------------------------------
// start writes the metrics textfile (the `metrics` command cannot open a database `start` holds)

#[test]
fn start_writes_the_metrics_textfile_every_cycle() {
    let t = Tuning {
        extra: "service:\n  sync_interval_seconds: 1\n  metrics_textfile: metrics/kr.prom\n".into(),
        ..Tuning::default()
    };
    let (_fake, env) = fake_and_env(&t);
    let dir = env.dir.path().join("metrics");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("kr.prom");
    let mut svc = Service::start(&env);
    svc.wait_for("stop with Ctrl-C or SIGTERM", Duration::from_secs(15));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !path.exists() {
        assert!(Instant::now() < deadline, "no metrics textfile within 15 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("keycloak_resilient_keycloak_available 1"),
        "{text}"
    );
    assert!(
        text.contains("keycloak_resilient_sync_items{status=\"pending\"} 0"),
        "{text}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "kr.prom")
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    svc.sigterm();
    assert!(svc.wait_exit(Duration::from_secs(15)).success());
}

#[test]
fn disabling_a_user_ends_their_sessions_and_unlock_lifts_a_lock() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    env.cmd()
        .args(["user", "add", "--user", "alice", "--package", PACKAGE])
        .write_stdin("Alice-Password-1\n")
        .assert()
        .code(0);
    let out = env
        .cmd()
        .args(["--json", "login", "--user", "alice", "--package", PACKAGE])
        .write_stdin("Alice-Password-1\n")
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let session = v["session_id"].as_str().unwrap().to_string();
    assert_eq!(v["auth_mode"], "keycloak");
    env.cmd()
        .args(["cached-token", "--user", "alice", "--package", PACKAGE])
        .assert()
        .code(0);
    let out = env
        .cmd()
        .args(["user", "disable", "--user", "alice", "--package", PACKAGE])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8_lossy(&out).contains("1 session(s) ended"));
    env.cmd()
        .args(["session", "show", &session])
        .assert()
        .code(1);
    env.cmd()
        .args(["cached-token", "--user", "alice", "--package", PACKAGE])
        .assert()
        .code(1);
    env.cmd()
        .args(["user", "enable", "--user", "alice", "--package", PACKAGE])
        .assert()
        .code(0);
    for _ in 0..5 {
        env.cmd()
            .args(["login", "--user", "alice", "--package", PACKAGE])
            .write_stdin("wrong-password\n")
            .assert()
            .code(1);
    }
    let err = env
        .cmd()
        .args(["login", "--user", "alice", "--package", PACKAGE])
        .write_stdin("Alice-Password-1\n")
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&err).contains("account_locked"));
    env.cmd()
        .args(["user", "unlock", "--user", "alice", "--package", PACKAGE])
        .assert()
        .code(0);
    env.cmd()
        .args(["login", "--user", "alice", "--package", PACKAGE])
        .write_stdin("Alice-Password-1\n")
        .assert()
        .code(0);
    env.cmd()
        .args(["user", "unlock", "--user", "nobody", "--package", PACKAGE])
        .assert()
        .code(2);
}

#[test]
fn session_id_can_come_from_stdin() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    env.cmd()
        .args(["user", "add", "--user", "bob", "--package", PACKAGE])
        .write_stdin("Bob-Password-1\n")
        .assert()
        .code(0);
    let out = env
        .cmd()
        .args(["--json", "login", "--user", "bob", "--package", PACKAGE])
        .write_stdin("Bob-Password-1\n")
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let id = v["session_id"].as_str().unwrap().to_string();
    env.cmd()
        .args(["session", "show", "-"])
        .write_stdin(format!("{id}\n"))
        .assert()
        .code(0);
    env.cmd()
        .args(["logout", "-"])
        .write_stdin(format!("{id}\n"))
        .assert()
        .code(0);
    env.cmd()
        .args(["session", "show", "-"])
        .write_stdin(format!("{id}\n"))
        .assert()
        .code(1);
    env.cmd()
        .args(["logout", "-"])
        .write_stdin("not-a-uuid\n")
        .assert()
        .code(2);
}

// ------------------------------------------------------------------------------------------
// Issue 7: the original design's wire contract, names, sync data limits, key checks

/// `queue-sync` with `stdin`, for `user`/`package`; the `Out`.
fn queue_sync_raw(env: &TestEnv, user: &str, package: &str, stdin: &[u8]) -> Out {
    let mut c = env.cmd();
    c.args([
        "queue-sync",
        "--type",
        "password_change",
        "--user",
        user,
        "--package",
        package,
    ])
    .write_stdin(stdin.to_vec());
    run(c)
}

/// Issue 7 point 8: `{"new_password": …}` is the documented key, `password` its alias; both
/// at once is an error.
#[test]
fn issue7_queue_sync_takes_new_password_and_its_alias() {
    let (fake, env) = fake_and_env(&Tuning::default());
    let id = queue_sync(&env, "alice", NEW_PW);
    let alias = format!("{{\"password\": \"{NEW_PW}-2\"}}");
    queue_sync_raw(&env, "alice", PACKAGE, alias.as_bytes()).expect(0);
    let both = format!("{{\"new_password\": \"{NEW_PW}\", \"password\": \"{NEW_PW}-3\"}}");
    let out = queue_sync_raw(&env, "alice", PACKAGE, both.as_bytes()).expect(2);
    assert!(
        one_line(&out).contains("both `new_password` and its alias"),
        "{out:?}"
    );
    assert!(!out.stderr.contains(NEW_PW), "{out:?}");
    let items = queue(&env);
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(items.iter().any(|i| i["sync_id"] == id.as_str()));
    kr(&env, &["sync-now"], "").expect(0);
    assert_eq!(
        fake.password_of("alice").as_deref(),
        Some(format!("{NEW_PW}-2").as_str())
    );
}

/// Issue 7 point 5: the password rule of `login`, a size limit on stdin, no NUL, no key twice;
/// each a one-line exit 2 that quotes no secret, and nothing queued.
#[test]
fn issue7_queue_sync_caps_and_checks_sync_data() {
    let env = TestEnv::new("http://127.0.0.1:9", &Tuning::default());
    let long = "L".repeat(1025);
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{{\"new_password\": \"{long}\"}}"),
            "longer than 1024 bytes",
        ),
        (
            "{\"new_password\": \"Secret\\u0000Tail\"}".to_string(),
            "contains a NUL byte",
        ),
        (
            "{\"new_password\": \"Secret-A\", \"new_password\": \"Secret-B\"}".to_string(),
            "key `new_password` appears twice",
        ),
        (
            format!("{{\"new_password\": \"{}\"}}", "S".repeat(20_000)),
            "larger than 8192 bytes",
        ),
    ];
    for (stdin, why) in cases {
        let out = queue_sync_raw(&env, "alice", PACKAGE, stdin.as_bytes()).expect(2);
        let line = one_line(&out);
        assert!(line.contains(why), "{why}: {line}");
        assert!(
            !line.contains("Secret") && !line.contains("LLLL") && !line.contains("SSSS"),
            "{line}"
        );
    }
    // A huge stdin is not buffered: the command answers after reading past the limit.
    let huge = vec![b' '; 4 * 1024 * 1024];
    let out = queue_sync_raw(&env, "alice", PACKAGE, &huge).expect(2);
    assert!(one_line(&out).contains("larger than 8192 bytes"), "{out:?}");
    // The same password rule as `login`: 1,024 bytes pass in both.
    let max = "M".repeat(1024);
    queue_sync_raw(
        &env,
        "alice",
        PACKAGE,
        format!("{{\"new_password\": \"{max}\"}}").as_bytes(),
    )
    .expect(0);
    add_user(&env, "alice", &max);
    let out = kr(&env, &args(&["login"], "alice"), &format!("{long}\n")).expect(2);
    assert!(one_line(&out).contains("longer than 1024 bytes"), "{out:?}");
    assert_eq!(queue(&env).len(), 1);
}

/// Issue 7 point 6: one name rule at the door, and a package the config does not list is an
/// error naming it and the listed ones.
#[test]
fn issue7_names_are_checked_and_unknown_packages_refused() {
    let env = TestEnv::new("http://127.0.0.1:9", &Tuning::default());
    env.create_database();
    let data = b"{\"new_password\": \"Secret-Pw-1\"}";
    for (user, package) in [
        ("..", PACKAGE),
        ("../../etc/passwd", PACKAGE),
        ("evil\u{202E}txt", PACKAGE),
        ("alice", "a/b"),
        ("alice", ".."),
    ] {
        let out = queue_sync_raw(&env, user, package, data).expect(2);
        let line = one_line(&out);
        assert!(line.starts_with("error: "), "{line}");
        assert!(!line.contains('\u{202E}'), "{line}");
    }
    let out = kr(&env, &args(&["user", "add"], "a/../b"), "Pw-Pw-Pw-1\n").expect(2);
    assert!(one_line(&out).contains("must not contain"), "{out:?}");
    assert!(queue(&env).is_empty());

    // With packages listed, another package is refused, by name.
    let yaml = std::fs::read_to_string(env.config_path()).unwrap().replace(
        "  resilience:\n",
        "  packages:\n    webapp: {}\n    billing:\n      realm: finance\n  resilience:\n",
    );
    std::fs::write(env.config_path(), yaml).unwrap();
    queue_sync_raw(&env, "alice", PACKAGE, data).expect(0);
    let out = queue_sync_raw(&env, "alice", "webap", data).expect(2);
    let line = one_line(&out);
    assert!(line.contains("unknown package \"webap\""), "{line}");
    assert!(line.contains("billing, webapp"), "{line}");
    let out = kr(
        &env,
        &["login", "--user", "alice", "--package", "webap"],
        "Pw\n",
    )
    .expect(2);
    assert!(one_line(&out).contains("unknown package"), "{out:?}");
    assert_eq!(queue(&env).len(), 1);
}

/// Issue 7 point 6: a realm that would change request paths is a config error naming the file
/// and the key.
#[test]
fn issue7_realms_that_change_paths_are_config_errors() {
    for realm in ["demo?x=1", "demo#frag", "..", "a/b"] {
        let env = TestEnv::new("http://127.0.0.1:9", &Tuning::default());
        let yaml = std::fs::read_to_string(env.config_path())
            .unwrap()
            .replace("realm: resilient-test", &format!("realm: \"{realm}\""));
        std::fs::write(env.config_path(), yaml).unwrap();
        let out = kr(&env, &["status"], "").expect(2);
        let line = one_line(&out);
        let prefix = format!(
            "error: config file {}: keycloak.realm: ",
            env.config_path().display()
        );
        assert!(line.starts_with(&prefix), "{realm}: {line}");
    }
}

/// Issue 7 point 7: credentials in server_url are refused at load, never printed.
#[test]
fn issue7_credentials_in_server_url_are_refused_and_never_printed() {
    let fake = FakeKeycloak::start();
    let with_creds = fake
        .url()
        .replace("http://", "http://kcadmin:Url-Secret-9@");
    let env = TestEnv::new(&with_creds, &Tuning::default());
    for cmd in [
        &["status"][..],
        &["--json", "status"],
        &["test"],
        &["queue"],
    ] {
        let out = kr(&env, cmd, "").expect(2);
        let line = one_line(&out);
        assert!(
            line.starts_with(&format!(
                "error: config file {}: keycloak.server_url: ",
                env.config_path().display()
            )),
            "{line}"
        );
        assert!(
            !line.contains("Url-Secret-9") && !line.contains("kcadmin"),
            "{line}"
        );
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    // `start` refuses before printing any banner.
    let mut c = env.cmd();
    c.arg("start");
    let out = run(c).expect(2);
    assert!(!out.stdout.contains("Url-Secret-9") && !out.stderr.contains("Url-Secret-9"));
}

/// Issue 7 point 2: another key is refused with one line naming the key file and the data
/// directory (exit 3), and the queue is intact once the right key is back.
#[test]
fn issue7_a_replaced_key_is_refused_and_the_queue_survives() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    let id = queue_sync(&env, "alice", NEW_PW);
    let key_file = env.data_dir().join("secret.key");
    let right = std::fs::read(&key_file).unwrap();
    std::fs::write(&key_file, [42u8; 32]).unwrap();
    for cmd in [&["sync-now"][..], &["status"], &["queue"]] {
        let out = kr(&env, cmd, "").expect(3);
        let line = one_line(&out);
        assert!(line.contains(&key_file.display().to_string()), "{line}");
        assert!(
            line.contains(&format!("database in {}", env.data_dir().display())),
            "{line}"
        );
    }
    std::fs::write(&key_file, &right).unwrap();
    let items = queue(&env);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["sync_id"], id.as_str());
    assert_eq!(items[0]["status"], "pending");
}

/// `reconcile` one-shot: pages through Keycloak's users (more than one page), links the local
/// account by name, disables it once Keycloak does; with Keycloak down it says why it stopped
/// and keeps the time of the last complete run; `start` runs it every
/// `reconcile_interval_seconds`.
#[test]
fn reconcile_one_shot_and_in_the_service() {
    let fake = FakeKeycloak::start();
    for i in 0..230 {
        fake.add_user(&format!("bulk{i:03}"), "Bulk-Password-1", true);
    }
    fake.add_user("frank", "Frank-Password-1", true);
    let tuning = Tuning {
        keycloak_extra: "  reconcile_interval_seconds: 1\n".into(),
        cooldown_seconds: 1,
        ..Tuning::default()
    };
    let env = TestEnv::new(&fake.url(), &tuning);
    add_user(&env, "frank", "Frank-Password-1");

    let r = kr_json(&env, &["reconcile"], "", 0);
    assert_eq!(r["stopped"], Value::Null, "{r}");
    assert_eq!(
        (r["checked"].as_u64(), r["linked"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert!(r["only_in_keycloak"].as_u64() >= Some(230), "{r}");
    let pages = fake
        .requests()
        .iter()
        .filter(|r| *r == "GET /admin/realms/resilient-test/users")
        .count();
    assert!(pages >= 3, "{pages} page request(s)");
    let text = kr(&env, &["reconcile"], "").expect(0);
    assert!(
        text.stdout.starts_with("reconcile: 1 checked, 0 disabled"),
        "{text:?}"
    );

    assert!(fake.disable_user("frank"));
    let r = kr_json(&env, &["reconcile"], "", 0);
    assert_eq!(r["disabled"], 1, "{r}");
    let refused = login(&env, "frank", "Frank-Password-1", 1);
    assert_eq!(refused["reason"], "account_disabled", "{refused}");
    let complete = r["last_complete"].clone();
    assert!(is_rfc3339(&complete), "{r}");

    fake.set_behavior(Behavior::Refuse);
    let r = kr_json(&env, &["reconcile"], "", 0);
    assert!(r["stopped"].is_string(), "{r}");
    assert_eq!(r["last_complete"], complete, "{r}");
    let s = status(&env);
    assert_eq!(s["last_reconcile"]["stopped"], r["stopped"], "{s}");
    assert_eq!(s["central"]["disabled"], 1, "{s}");
    fake.set_behavior(Behavior::Normal);

    assert!(fake.enable_user("frank"));
    let mut svc = Service::start(&env);
    svc.wait_for(
        "reconcile: 1 checked, 0 disabled, 1 re-enabled",
        Duration::from_secs(30),
    );
    svc.sigterm();
    svc.wait_exit(Duration::from_secs(15));
    let back = login(&env, "frank", "Frank-Password-1", 0);
    assert_eq!(back["auth_mode"], "keycloak", "{back}");
}

/// `keycloak.manage_users`: `user add --email …`, `user disable`, `user remove --in-keycloak`
/// reach Keycloak and say so; without it `--in-keycloak` is refused (exit 2, nothing removed).
#[test]
fn managed_user_commands_reach_keycloak() {
    let fake = FakeKeycloak::start();
    let plain = TestEnv::new(&fake.url(), &Tuning::default());
    add_user(&plain, "gina", "Gina-Password-1");
    let out = kr(
        &plain,
        &[
            "user",
            "remove",
            "--user",
            "gina",
            "--package",
            PACKAGE,
            "--in-keycloak",
        ],
        "",
    )
    .expect(2);
    assert!(one_line(&out).contains("keycloak.manage_users"), "{out:?}");
    assert_eq!(kr_json(&plain, &["user", "list"], "", 0)[0]["user"], "gina");

    let env = TestEnv::new(
        &fake.url(),
        &Tuning {
            keycloak_extra: "  manage_users: true\n".into(),
            ..Tuning::default()
        },
    );
    let added = kr_json(
        &env,
        &[
            "user",
            "add",
            "--user",
            "hank",
            "--package",
            PACKAGE,
            "--email",
            "hank@example.test",
            "--first-name",
            "Hank",
            "--last-name",
            "Test",
        ],
        "Hank-Password-1\n",
        0,
    );
    assert_eq!(added["keycloak"]["mode"], "synchronized", "{added}");
    assert_eq!(fake.password_of("hank").as_deref(), Some("Hank-Password-1"));
    let r = login(&env, "hank", "Hank-Password-1", 0);
    assert_eq!(r["auth_mode"], "keycloak", "{r}");
    let text = kr(
        &env,
        &["user", "disable", "--user", "hank", "--package", PACKAGE],
        "",
    )
    .expect(0);
    assert!(text.stdout.contains("in Keycloak too"), "{text:?}");
    let removed = kr_json(
        &env,
        &[
            "user",
            "remove",
            "--user",
            "hank",
            "--package",
            PACKAGE,
            "--in-keycloak",
        ],
        "",
        0,
    );
    assert_eq!(removed["keycloak"]["mode"], "synchronized", "{removed}");
    assert_eq!(fake.password_of("hank"), None, "deleted in Keycloak");
    let bad = kr(
        &env,
        &[
            "user",
            "add",
            "--user",
            "ivy",
            "--package",
            PACKAGE,
            "--email",
            " ",
        ],
        "Ivy-Password-1\n",
    )
    .expect(2);
    assert!(one_line(&bad).contains("email"), "{bad:?}");
    assert_eq!(
        kr_json(&env, &["user", "list"], "", 0)
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}
