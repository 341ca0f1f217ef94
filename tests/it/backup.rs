// Issue 15 point 7: `backup FILE` and `restore FILE`, the way back from a damaged data
// directory, and the plain message a damaged one gives. The real binary; Keycloak is a dead
// port unless a test needs the service.

use crate::common::cli::*;
use crate::common::fake_keycloak::{Behavior, FakeKeycloak};
use crate::common::{TestEnv, Tuning};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const PW: &str = "Alice-Password-1";
const NEW_PW: &str = "New-Password-9";

/// Keycloak away: every change is local, and `passwd` queues.
fn offline_env() -> TestEnv {
    TestEnv::new("http://127.0.0.1:9", &Tuning::default())
}

/// Every file of the data directory's database with its bytes, to show nothing changed.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, fs::read(e.path()).unwrap())
        })
        .filter(|(name, _)| name != "lock")
        .collect();
    out.sort();
    out
}

fn backup_file(env: &TestEnv) -> String {
    env.dir.path().join("b.krbak").display().to_string()
}

/// A user and a queued password change survive a backup, a removal and a restore; the
/// old database is kept; the backup is 0600 and holds no password in clear.
#[test]
fn a_restore_brings_back_users_and_queued_changes_and_keeps_the_old_database() {
    let env = offline_env();
    add_user(&env, "alice", PW);
    let passwd = kr(
        &env,
        &args(&["--json", "passwd"], "alice"),
        &format!("{PW}\n{NEW_PW}\n"),
    )
    .expect(0);
    assert_eq!(passwd.json()["mode"], "queued", "{passwd:?}");
    let file = backup_file(&env);
    let v = kr_json(&env, &["backup", &file], "", 0);
    assert_eq!(v["file"], file.as_str());
    assert!(v["records"].as_u64().unwrap() >= 2, "{v}");
    let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let bytes = fs::read(&file).unwrap();
    assert!(!bytes.windows(NEW_PW.len()).any(|w| w == NEW_PW.as_bytes()));

    kr(&env, &args(&["user", "remove"], "alice"), "").expect(0);
    let out = kr(&env, &["restore", &file], "").expect(0);
    assert!(out.stdout.contains("restored"), "{out:?}");
    assert!(out.stdout.contains("before-restore-"), "{out:?}");
    let kept = fs::read_dir(env.data_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("before-restore-")
        })
        .expect("the old database is kept");
    assert!(kept.path().join("db").exists());

    let users = kr_json(&env, &["user", "list"], "", 0);
    assert!(users.to_string().contains("alice"), "{users}");
    let items = queue(&env);
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["status"], "pending", "{items:?}");
    let ok = login(&env, "alice", NEW_PW, 0);
    assert_eq!(ok["success"], true, "{ok}");
}

/// Through the socket of a running `start`: a relative FILE is the caller's, not the
/// service's; `restore` is refused while the service runs, and works once it is stopped.
#[test]
fn backup_runs_through_the_service_and_restore_waits_for_it_to_stop() {
    let fake = FakeKeycloak::start();
    let env = TestEnv::new(&fake.url(), &Tuning::default());
    add_user(&env, "alice", PW);
    let mut svc = Service::start(&env);
    svc.wait_for("stop with Ctrl-C or SIGTERM", Duration::from_secs(20));
    let mut c = env.cmd();
    c.current_dir(env.dir.path()).args(["backup", "rel.krbak"]);
    let out = run(c).expect(0);
    assert!(out.stdout.starts_with("backed up "), "{out:?}");
    let file = env.dir.path().join("rel.krbak");
    assert!(file.exists(), "{out:?}");
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let file = file.display().to_string();
    let before = snapshot(&env.data_dir());
    let refused = kr(&env, &["restore", &file], "").expect(3);
    let msg = one_line(&refused);
    assert!(msg.contains("held by the running service"), "{msg}");
    assert!(msg.contains("stop it first"), "{msg}");
    svc.sigterm();
    assert!(svc.wait_exit(Duration::from_secs(20)).success());
    assert_eq!(
        snapshot(&env.data_dir())
            .iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>(),
        before.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    kr(&env, &["restore", &file], "").expect(0);
    let users = kr_json(&env, &["user", "list"], "", 0);
    assert!(users.to_string().contains("alice"), "{users}");
}

/// Another key in the data directory: refused, naming the backup and the key file.
#[test]
fn a_restore_with_another_key_is_refused_naming_both_files() {
    let env = offline_env();
    add_user(&env, "alice", PW);
    let file = backup_file(&env);
    kr(&env, &["backup", &file], "").expect(0);
    let key = env.data_dir().join("secret.key");
    fs::write(&key, [9u8; 32]).unwrap();
    let before = snapshot(&env.data_dir());
    let out = kr(&env, &["restore", &file], "").expect(3);
    let msg = one_line(&out);
    assert!(msg.contains(&file), "{msg}");
    assert!(msg.contains(&key.display().to_string()), "{msg}");
    assert!(msg.contains("another key"), "{msg}");
    assert_eq!(snapshot(&env.data_dir()), before);

    fs::remove_file(&key).unwrap();
    let out = kr(&env, &["restore", &file], "").expect(3);
    let msg = one_line(&out);
    assert!(msg.contains("has no secret.key"), "{msg}");
}

/// A truncated or flipped backup is refused before anything in the data directory changes.
#[test]
fn a_damaged_backup_is_refused_and_nothing_changes() {
    let env = offline_env();
    add_user(&env, "alice", PW);
    let file = backup_file(&env);
    kr(&env, &["backup", &file], "").expect(0);
    let good = fs::read(&file).unwrap();
    let before = snapshot(&env.data_dir());
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    for bad in [good[..good.len() - 10].to_vec(), flipped] {
        fs::write(&file, &bad).unwrap();
        let out = kr(&env, &["restore", &file], "").expect(3);
        let msg = one_line(&out);
        assert!(msg.contains("is damaged or incomplete"), "{msg}");
        assert!(msg.contains(&file), "{msg}");
        assert_eq!(snapshot(&env.data_dir()), before);
    }
}

/// A flipped database file: exit 3 and one plain line naming the directory and `restore`,
/// no sled internals.
#[test]
fn a_damaged_database_says_so_plainly() {
    let env = offline_env();
    for i in 0..20 {
        add_user(&env, &format!("user{i}"), PW);
    }
    let file = backup_file(&env);
    kr(&env, &["backup", &file], "").expect(0);
    let db = env.data_dir().join("db");
    let mut bytes = fs::read(&db).unwrap();
    // Every byte: where sled keeps a record in its (mostly preallocated) segments depends on
    // its version, and a flip in an empty part is never read.
    for b in &mut bytes {
        *b ^= 0xA5;
    }
    fs::write(&db, &bytes).unwrap();
    let out = kr(&env, &["user", "list"], "").expect(3);
    let msg = one_line(&out);
    let dir = env.data_dir().display().to_string();
    assert!(
        msg.contains(&format!("data directory {dir} is damaged")),
        "{msg}"
    );
    assert!(msg.contains("restore FILE"), "{msg}");
    assert_eq!(
        msg.matches(dir.as_str()).count(),
        1,
        "the directory named once: {msg}"
    );
    assert!(!msg.contains("Corruption") && !msg.contains("at:"), "{msg}");
    // The way back: the backup restores over the damaged database, which is kept aside.
    let out = kr(&env, &["restore", &file], "").expect(0);
    assert!(out.stdout.contains("before-restore-"), "{out:?}");
    let users = kr_json(&env, &["user", "list"], "", 0);
    assert!(users.to_string().contains("user19"), "{users}");
}

/// A flipped byte in sled's `conf`: the same one line, and none of sled's own log lines.
#[test]
fn a_damaged_conf_file_says_so_in_one_line() {
    let env = offline_env();
    add_user(&env, "alice", PW);
    let conf = env.data_dir().join("conf");
    let mut bytes = fs::read(&conf).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&conf, &bytes).unwrap();
    let out = kr(&env, &["user", "list"], "").expect(3);
    let msg = one_line(&out);
    assert!(msg.contains("is damaged"), "{msg}");
    assert!(msg.contains("restore FILE"), "{msg}");
    assert!(!msg.contains("sled"), "{msg}");
}

/// The queued change's sealed password still opens after a restore: replayed, Keycloak gets
/// it.
#[test]
fn a_queued_password_change_replays_after_a_restore() {
    let fake = FakeKeycloak::start();
    fake.add_user("alice", PW, true);
    let t = Tuning {
        failure_threshold: 50,
        ..Tuning::default()
    };
    let env = TestEnv::new(&fake.url(), &t);
    add_user(&env, "alice", PW);
    fake.set_behavior(Behavior::Refuse);
    let passwd = kr(
        &env,
        &args(&["--json", "passwd"], "alice"),
        &format!("{PW}\n{NEW_PW}\n"),
    )
    .expect(0);
    assert_eq!(passwd.json()["mode"], "queued", "{passwd:?}");
    let file = backup_file(&env);
    kr(&env, &["backup", &file], "").expect(0);
    kr(&env, &args(&["user", "remove"], "alice"), "").expect(0);
    kr(&env, &["restore", &file], "").expect(0);
    fake.set_behavior(Behavior::Normal);
    kr(&env, &["sync-now"], "").expect(0);
    assert_eq!(fake.password_of("alice").as_deref(), Some(NEW_PW));
    let items = queue(&env);
    assert_eq!(items[0]["status"], "completed", "{items:?}");
}
