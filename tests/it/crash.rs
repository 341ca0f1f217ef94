//! Issue 7, "Done means": kill -9 at random moments, hundreds of times, and lose nothing.
//!
//! The real binary runs against the in-process fake Keycloak and is SIGKILLed at a random
//! moment of its run, in three phases:
//! 1. `queue-sync` (enqueue);
//! 2. `passwd` (local hash + queued change in one transaction, then Keycloak at once, or the
//!    queue while Keycloak is down);
//! 3. `sync-now` and `start` replaying a queue of a few hundred changes.
//!
//! After every kill the database must open (a cheap `queue --limit 1` must succeed). At the
//! end, with the queue drained by un-killed runs: every acknowledged change (exit 0) is there,
//! and each change reached the fake at most once — exactly once unless a newer change for the
//! same user superseded it; every user's Keycloak password is their local one (passwd) or
//! their newest change (queue-sync). The kill moments are drawn from each command's measured
//! run time (so the test adapts to debug and release builds); the seed is printed, and
//! `CRASH_SEED=n` replays a run.
//!
//! `cargo test --release --test it crash::` (some 400 kills; about half a minute in release).

use crate::common::fake_keycloak::{Behavior, FakeKeycloak};
use crate::common::{TestEnv, Tuning, PACKAGE};
use keycloak_resilient::local_users::Verification;
use keycloak_resilient::sync_queue::SyncStatus;
use keycloak_resilient::{Auth, ResilientClient};
use std::collections::HashMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_keycloak-resilient");
const ENQUEUE_ROUNDS: usize = 120;
const PASSWD_ROUNDS: usize = 100;
const REPLAY_ROUNDS: usize = 160;
/// Users whose changes phase 1 queues (several changes each: superseding is exercised).
const ENQUEUE_USERS: usize = 10;
/// Users with two queued changes each, for phase 3 to replay.
const REPLAY_USERS: usize = 120;

/// xorshift64*: enough randomness for kill moments, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A duration in `[0, max)`.
    fn below(&mut self, max: Duration) -> Duration {
        let micros = max.as_micros().max(1) as u64;
        Duration::from_micros(self.next() % micros)
    }
}

/// How one run ended.
#[derive(Debug)]
enum Ended {
    /// On its own, with this exit code and output.
    Exited {
        code: i32,
        stdout: String,
        stderr: String,
    },
    /// SIGKILLed by us.
    Killed,
}

fn spawn(env: &TestEnv, args: &[&str], stdin: &str) -> Child {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(env.config_path())
        .args(args)
        .env_remove("KEYCLOAK_CLIENT_SECRET")
        .env_remove("KEYCLOAK_ADMIN_CLIENT_SECRET")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keycloak-resilient");
    if let Some(mut input) = child.stdin.take() {
        // A child killed before it reads its stdin makes this fail: that is fine.
        let _ = input.write_all(stdin.as_bytes());
    }
    child
}

fn collect(child: Child) -> Ended {
    let out = child
        .wait_with_output()
        .expect("wait for keycloak-resilient");
    match out.status.code() {
        Some(code) => Ended::Exited {
            code,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        None => Ended::Killed,
    }
}

/// Runs the command and SIGKILLs it after `after`, unless it has exited by then.
fn run_killed(env: &TestEnv, args: &[&str], stdin: &str, after: Duration) -> Ended {
    let mut child = spawn(env, args, stdin);
    let deadline = Instant::now() + after;
    loop {
        if child.try_wait().expect("poll child").is_some() {
            return collect(child);
        }
        if Instant::now() >= deadline {
            // SIGKILL; it may have exited just now, which `collect` then reports.
            let _ = child.kill();
            return collect(child);
        }
        std::thread::sleep(Duration::from_micros(300));
    }
}

/// Runs the command to its end.
fn run(env: &TestEnv, args: &[&str], stdin: &str) -> (i32, String, String) {
    match collect(spawn(env, args, stdin)) {
        Ended::Exited {
            code,
            stdout,
            stderr,
        } => (code, stdout, stderr),
        Ended::Killed => panic!("{args:?} was killed by someone else"),
    }
}

/// Fails the test with a message that says what happened when a run could not open the
/// database. "Read corrupted data" after a SIGKILL is issue 7 point 1 (a zero-byte
/// `snap.*.generating` file), fixed in `Store::open` separately.
fn assert_not_unopenable(what: &str, code: i32, stderr: &str) {
    if stderr.contains("corrupt") {
        panic!(
            "{what}: the database did not open after a SIGKILL (exit {code}): {stderr}\n\
             This is issue 7 point 1 (a stale zero-byte snap.*.generating file left by the kill; \
             Store::open removes it once that fix is merged), not a lost change."
        );
    }
    panic!("{what}: exit {code}: {stderr}");
}

/// After a kill: the database opens and a command works.
fn assert_opens(env: &TestEnv, after: &str) {
    let (code, _, stderr) = run(env, &["--json", "queue", "--limit", "1"], "");
    if code != 0 {
        assert_not_unopenable(&format!("`queue` after a killed {after}"), code, &stderr);
    }
}

/// How long an un-killed run of the command takes (the longest of three).
fn calibrate(env: &TestEnv, args: &[&str], stdin: &dyn Fn(usize) -> String) -> Duration {
    (0..3)
        .map(|i| {
            let t = Instant::now();
            let (code, _, stderr) = run(env, args, &stdin(i));
            assert!(
                code == 0,
                "calibration run of {args:?}: exit {code}: {stderr}"
            );
            t.elapsed()
        })
        .max()
        .unwrap_or(Duration::from_millis(50))
}

/// Every item of the queue, through the pages.
fn all_items(client: &ResilientClient) -> Vec<keycloak_resilient::sync_queue::SyncItem> {
    let mut items = Vec::new();
    let mut after = None;
    loop {
        let page = client.queue().page(after.as_ref(), 1000).expect("page");
        items.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return items,
        }
    }
}

#[test]
fn kill_9_at_random_moments_loses_nothing_and_applies_nothing_twice() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
                | 1
        });
    eprintln!("crash test seed: {seed} (CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let started = Instant::now();

    let fake = FakeKeycloak::start();
    let tuning = Tuning {
        // Keycloak going down in phase 2 must not open the circuit for the rest of the test.
        failure_threshold: 1_000_000,
        extra: "service:\n  batch_size: 8\n  sync_interval_seconds: 1\n".into(),
        ..Tuning::default()
    };
    let env = TestEnv::new(&fake.url(), &tuning);
    let mut kills = 0usize;
    // (sync id, user, password) of every acknowledged queue-sync.
    let mut acked: Vec<(Uuid, String, String)> = Vec::new();

    // -- 1. queue-sync ----------------------------------------------------------------------
    let enqueue_users: Vec<String> = (0..ENQUEUE_USERS).map(|i| format!("enq{i}")).collect();
    for u in &enqueue_users {
        fake.add_user(u, "Initial-Password-0", true);
    }
    let json_for = |pw: &str| format!("{{\"password\": \"{pw}\"}}");
    let enqueue_args = |user: &str, priority: String| {
        vec![
            "queue-sync".to_string(),
            "--user".into(),
            user.to_string(),
            "--package".into(),
            PACKAGE.into(),
            "--type".into(),
            "password_change".into(),
            "--priority".into(),
            priority,
        ]
    };
    let typical = calibrate(
        &env,
        &[
            "queue-sync",
            "--user",
            "calib",
            "--package",
            PACKAGE,
            "--type",
            "password_change",
        ],
        &|i| json_for(&format!("Calibration-{i}-Password")),
    );
    for round in 0..ENQUEUE_ROUNDS {
        let user = &enqueue_users[round % ENQUEUE_USERS];
        let password = format!("Enqueue-{round}-Password");
        let args = enqueue_args(user, (1 + round % 9).to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match run_killed(
            &env,
            &args,
            &json_for(&password),
            rng.below(typical * 3 / 2),
        ) {
            Ended::Exited {
                code: 0, stdout, ..
            } => {
                let id: Uuid = stdout.trim().parse().expect("queue-sync prints the SyncId");
                acked.push((id, user.clone(), password));
            }
            Ended::Exited { code, stderr, .. } => {
                assert_not_unopenable("queue-sync", code, &stderr)
            }
            Ended::Killed => kills += 1,
        }
        assert_opens(&env, "queue-sync");
    }
    eprintln!(
        "phase 1: {ENQUEUE_ROUNDS} queue-sync runs, {kills} killed, {} acknowledged",
        acked.len()
    );

    // -- 2. passwd --------------------------------------------------------------------------
    let passwd_users: Vec<String> = (0..PASSWD_ROUNDS).map(|i| format!("pw{i}")).collect();
    let old_pw = |i: usize| format!("Old-Password-{i}");
    let new_pw = |i: usize| format!("New-Password-{i}");
    {
        let auth = env.auth();
        for (i, u) in passwd_users.iter().enumerate() {
            fake.add_user(u, &old_pw(i), true);
            auth.users()
                .add(
                    &keycloak_resilient::Account::new(u, PACKAGE).unwrap(),
                    &old_pw(i),
                )
                .expect("local user");
        }
        auth.users()
            .add(
                &keycloak_resilient::Account::new("calib", PACKAGE).unwrap(),
                "Calib-Password-0",
            )
            .expect("local user");
        fake.add_user("calib", "Calib-Password-0", true);
    }
    let typical = calibrate(
        &env,
        &["passwd", "--user", "calib", "--package", PACKAGE],
        &|i| {
            let from = if i == 0 {
                "Calib-Password-0".to_string()
            } else {
                format!("Calib-Password-{i}")
            };
            format!("{from}\nCalib-Password-{}\n", i + 1)
        },
    );
    let mut passwd_acked = [false; PASSWD_ROUNDS];
    let kills_before = kills;
    for (i, user) in passwd_users.iter().enumerate() {
        // One run in four meets Keycloak down: the change is queued instead of sent.
        let down = i % 4 == 3;
        fake.set_behavior(if down {
            Behavior::Refuse
        } else {
            Behavior::Normal
        });
        let stdin = format!("{}\n{}\n", old_pw(i), new_pw(i));
        match run_killed(
            &env,
            &["passwd", "--user", user, "--package", PACKAGE],
            &stdin,
            rng.below(typical * 3 / 2),
        ) {
            Ended::Exited { code: 0, .. } => passwd_acked[i] = true,
            Ended::Exited { code, stderr, .. } => assert_not_unopenable("passwd", code, &stderr),
            Ended::Killed => kills += 1,
        }
        fake.set_behavior(Behavior::Normal);
        assert_opens(&env, "passwd");
    }
    eprintln!(
        "phase 2: {PASSWD_ROUNDS} passwd runs, {} killed, {} acknowledged",
        kills - kills_before,
        passwd_acked.iter().filter(|a| **a).count()
    );

    // -- 3. replay ----------------------------------------------------------------------------
    {
        let client = env.client();
        for round in 0..2 {
            for i in 0..REPLAY_USERS {
                let user = format!("rep{i}");
                if round == 0 {
                    fake.add_user(&user, "Initial-Password-0", true);
                }
                let password = format!("Replay-{round}-{i}-Password");
                let id = client
                    .queue_sync(
                        &user,
                        PACKAGE,
                        "password_change",
                        &serde_json::json!({ "password": password }),
                        1 + (i % 9) as u32,
                    )
                    .expect("enqueue");
                acked.push((id, user, password));
            }
        }
    }
    let typical_sync = {
        let t = Instant::now();
        let (code, _, stderr) = run(&env, &["sync-now", "--batch-size", "8"], "");
        assert_eq!(code, 0, "calibration sync-now: {stderr}");
        t.elapsed()
    };
    let kills_before = kills;
    for round in 0..REPLAY_ROUNDS {
        let (args, window): (&[&str], Duration) = if round % 4 == 0 {
            // `start` syncs at once, then every second: killed somewhere in that.
            (&["start"], typical_sync * 4)
        } else {
            (&["sync-now", "--batch-size", "8"], typical_sync * 3 / 2)
        };
        match run_killed(&env, args, "", rng.below(window)) {
            Ended::Exited { code: 0, .. } => {}
            Ended::Exited { code, stderr, .. } => assert_not_unopenable("replay", code, &stderr),
            Ended::Killed => kills += 1,
        }
        assert_opens(&env, "replay");
    }
    eprintln!(
        "phase 3: {REPLAY_ROUNDS} sync-now/start runs, {} killed",
        kills - kills_before
    );

    // -- drain, then check --------------------------------------------------------------------
    for _ in 0..20 {
        let (code, _, stderr) = run(&env, &["sync-now", "--batch-size", "10000"], "");
        assert_eq!(code, 0, "drain: {stderr}");
        let client = env.client();
        let c = client.queue().counts().unwrap();
        if c.pending + c.processing == 0 {
            break;
        }
    }
    let auth = Auth::new(env.client());
    let client = auth.client();
    let counts = client.queue().counts().unwrap();
    assert_eq!(
        (counts.pending, counts.processing, counts.failed),
        (0, 0, 0),
        "everything replayed, nothing failed: {counts:?}"
    );
    assert_eq!(
        counts,
        client.queue().rebuild_counts().unwrap(),
        "the counters kept through {kills} kills agree with a scan"
    );

    // No password ever reached Keycloak twice (every change carries a unique password).
    let mut applied: HashMap<String, usize> = HashMap::new();
    let every_user = enqueue_users
        .iter()
        .chain(&passwd_users)
        .cloned()
        .chain((0..REPLAY_USERS).map(|i| format!("rep{i}")));
    for user in every_user {
        for value in fake.password_resets(&user) {
            *applied.entry(value).or_default() += 1;
        }
    }
    let twice: Vec<_> = applied.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "applied more than once: {twice:?}");

    // Every acknowledged enqueue is there: applied once, or superseded by a newer change.
    let items: HashMap<Uuid, _> = all_items(client)
        .into_iter()
        .map(|i| (i.sync_id, i))
        .collect();
    let mut last_acked: HashMap<&str, usize> = HashMap::new();
    for (n, (id, user, password)) in acked.iter().enumerate() {
        let item = items
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged change {id} for {user} is missing"));
        let times = applied.get(password).copied().unwrap_or(0);
        match item.status {
            SyncStatus::Completed => {
                assert_eq!(times, 1, "{id} for {user} completed: applied once")
            }
            SyncStatus::Superseded => assert!(times <= 1),
            other => panic!("{id} for {user} is {other:?} after the drain"),
        }
        last_acked.insert(user.as_str(), n);
    }
    // Each queue-sync user ends with their newest change (the last acknowledged one, or a
    // later one whose run was killed after it became durable).
    for user in enqueue_users.iter() {
        let Some(&n) = last_acked.get(user.as_str()) else {
            continue;
        };
        let final_pw = fake.password_of(user).unwrap_or_default();
        let round = |pw: &str| {
            pw.strip_prefix("Enqueue-")
                .and_then(|r| r.split('-').next())
                .and_then(|r| r.parse::<usize>().ok())
        };
        let last = round(&acked[n].2).expect("an enqueue password");
        assert!(
            round(&final_pw).is_some_and(|r| r >= last),
            "{user}: Keycloak has {final_pw:?}, older than the last acknowledged change {:?}",
            acked[n].2
        );
    }
    for i in 0..REPLAY_USERS {
        let user = format!("rep{i}");
        assert_eq!(
            fake.password_of(&user).as_deref(),
            Some(format!("Replay-1-{i}-Password").as_str()),
            "{user}: the newer of its two changes wins"
        );
    }

    // passwd: Keycloak ends with the local password, whichever it is; acknowledged ones are new.
    for (i, user) in passwd_users.iter().enumerate() {
        let is_new = matches!(
            auth.users()
                .verify(
                    &keycloak_resilient::Account::new(user, PACKAGE).unwrap(),
                    &new_pw(i)
                )
                .unwrap(),
            Verification::Ok { .. }
        );
        if passwd_acked[i] {
            assert!(
                is_new,
                "{user}: passwd exited 0 but the local password is the old one"
            );
        }
        let local = if is_new { new_pw(i) } else { old_pw(i) };
        assert_eq!(
            fake.password_of(user).as_deref(),
            Some(local.as_str()),
            "{user}: Keycloak and the local store disagree after the crashes (acked: {})",
            passwd_acked[i]
        );
        let times = applied.get(&new_pw(i)).copied().unwrap_or(0);
        assert_eq!(
            times,
            usize::from(is_new),
            "{user}: new password applied {times} time(s)"
        );
    }
    eprintln!(
        "{kills} kills in all; every acknowledged change present, none applied twice ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}
