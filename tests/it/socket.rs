// One database, many callers: while `start` runs it owns the sled directory and serves
// one-shot commands (and applications) over `data/control.sock`. Every test here runs the
// real binary against the in-process fake Keycloak.

use crate::common::cli::*;
use crate::common::fake_keycloak::{Behavior, FakeKeycloak};
use crate::common::{repo_file, TestEnv, Tuning, PACKAGE};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const ALICE_PW: &str = "Alice-Password-1";
const NEW_PW: &str = "New-Password-9";

fn socket_path(env: &TestEnv) -> PathBuf {
    env.data_dir().join("control.sock")
}

fn started(env: &TestEnv) -> Service {
    let mut svc = Service::start(env);
    svc.wait_for("stop with Ctrl-C or SIGTERM", Duration::from_secs(20));
    svc
}

/// One request line, one answer line, over a fresh connection.
fn call(env: &TestEnv, request: &str) -> Value {
    let mut conn = UnixStream::connect(socket_path(env)).expect("connect to the service");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    conn.write_all(b"\n").unwrap();
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).unwrap();
    assert!(line.ends_with('\n'), "partial answer: {line:?}");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {line}"))
}

/// The binary with stdin, spawned (not waited for).
fn spawn(env: &TestEnv, args: &[&str], stdin: &str) -> Child {
    let mut child = std::process::Command::new(BIN)
        .arg("--config")
        .arg(env.config_path())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keycloak-resilient");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child
}

fn finish(child: Child) -> Out {
    let o = child.wait_with_output().expect("wait");
    let out = Out {
        code: o.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    assert!(!out.stderr.contains("panicked"), "{out:#?}");
    out
}

/// Output with what differs between two runs of the same thing (ids, times, the data path,
/// counts of logins made by earlier steps) replaced by placeholders.
fn normalized(env: &TestEnv, out: &Out) -> (i32, String, String) {
    let clean = |s: &str| {
        let mut t = s.replace(&env.dir.path().display().to_string(), "<dir>");
        let words: Vec<String> = t
            .split_inclusive(|c: char| c.is_whitespace() || c == '"' || c == ',')
            .map(|w| {
                let core = w.trim_end_matches(|c: char| {
                    c.is_whitespace() || matches!(c, '"' | ',' | ')' | ':')
                });
                let tail = &w[core.len()..];
                let (head, core) = match core.strip_prefix('[') {
                    Some(rest) => ("[", rest),
                    None => ("", core),
                };
                if uuid::Uuid::parse_str(core).is_ok() {
                    format!("{head}<id>{tail}")
                } else if chrono::DateTime::parse_from_rfc3339(core).is_ok() {
                    format!("{head}<time>{tail}")
                } else {
                    w.to_string()
                }
            })
            .collect();
        t = words.concat();
        t
    };
    (out.code, clean(&out.stdout), clean(&out.stderr))
}

/// The same commands, in the same order, on two fresh data directories: one run directly, one
/// through a running service. Output and exit codes must match.
#[test]
fn forwarded_commands_answer_exactly_like_direct_runs() {
    let fake = FakeKeycloak::start();
    let t = Tuning::default();
    let direct = TestEnv::new(&fake.url(), &t);
    let served = TestEnv::new(&fake.url(), &t);
    let steps: Vec<(Vec<&str>, String)> = vec![
        (args(&["user", "add"], "carol"), format!("{ALICE_PW}\n")),
        (args(&["login"], "carol"), format!("{ALICE_PW}\n")),
        (args(&["login"], "carol"), "wrong-password\n".into()),
        (
            args(&["--json", "login"], "carol"),
            "wrong-password\n".into(),
        ),
        (args(&["user", "add"], "carol"), format!("{ALICE_PW}\n")),
        (
            args(&["queue-sync", "--type", "password_change"], "ghost"),
            format!("{{\"new_password\": \"{NEW_PW}\"}}"),
        ),
        (vec!["queue"], String::new()),
        (vec!["--json", "queue"], String::new()),
        (
            args(&["passwd"], "carol"),
            format!("{ALICE_PW}\n{NEW_PW}\n"),
        ),
        (args(&["cached-token"], "carol"), String::new()),
        (vec!["user", "list"], String::new()),
        (
            vec!["session", "show", "7d4f5a60-0000-4000-8000-000000000000"],
            String::new(),
        ),
        (vec!["sync-now"], String::new()),
        (vec!["--json", "sync-now"], String::new()),
        (vec!["status"], String::new()),
        (vec!["cleanup", "--sync-days", "0"], String::new()),
        (
            vec![
                "queue-sync",
                "--user",
                "x",
                "--package",
                PACKAGE,
                "--type",
                "password_change",
            ],
            "{}".into(),
        ),
    ];
    let mut expected = Vec::new();
    for (a, stdin) in &steps {
        expected.push(normalized(&direct, &kr(&direct, a, stdin)));
    }
    let mut svc = started(&served);
    for ((a, stdin), want) in steps.iter().zip(&expected) {
        let got = normalized(&served, &kr(&served, a, stdin));
        assert_eq!(&got, want, "{a:?} differs through the service");
    }
    svc.sigterm();
    assert_eq!(svc.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert!(
        !socket_path(&served).exists(),
        "the socket is removed at exit"
    );
}

/// Several clients at once, each its own kind of work; every answer is the one a direct run
/// gives, and the service's state afterwards adds up.
#[test]
fn concurrent_clients_are_all_served() {
    let (fake, env) = fake_and_env(&Tuning::default());
    for i in 0..4 {
        let user = format!("user{i}");
        fake.add_user(&user, ALICE_PW, true);
        add_user(&env, &user, ALICE_PW);
    }
    let svc = started(&env);
    let mut children = Vec::new();
    for round in 0..3 {
        for i in 0..4 {
            let user = format!("user{i}");
            let mut a = vec!["--json".to_string(), "login".into()];
            a.extend([
                "--user".into(),
                user.clone(),
                "--package".into(),
                PACKAGE.into(),
            ]);
            children.push(("login", spawn_owned(&env, &a, &format!("{ALICE_PW}\n"))));
        }
        children.push(("status", spawn(&env, &["--json", "status"], "")));
        children.push(("sync-now", spawn(&env, &["--json", "sync-now"], "")));
        if round == 0 {
            children.push((
                "passwd",
                spawn(
                    &env,
                    &args(&["--json", "passwd"], "user0"),
                    &format!("{ALICE_PW}\n{NEW_PW}\n"),
                ),
            ));
        }
    }
    let mut logins_ok = 0;
    for (what, child) in children {
        let out = finish(child);
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {out:#?}"));
        match what {
            // user0's password may change under the later logins: both answers are whole.
            "login" if out.code == 0 => {
                assert_eq!(v["success"], json!(true), "{out:#?}");
                logins_ok += 1;
            }
            "login" => assert_eq!(v["reason"], json!("invalid_credentials"), "{out:#?}"),
            "status" => assert_eq!(out.code, 0, "{out:#?}"),
            "sync-now" => assert!(v["report"].is_object(), "{out:#?}"),
            "passwd" => assert_eq!(v["mode"], json!("synchronized"), "{out:#?}"),
            _ => unreachable!(),
        }
    }
    assert!(logins_ok >= 9, "{logins_ok} of 12 logins succeeded");
    assert_eq!(fake.password_of("user0").as_deref(), Some(NEW_PW));
    let s = call(&env, r#"{"op":"status"}"#);
    assert_eq!(s["exit"], json!(0), "{s}");
    assert_eq!(
        s["result"]["active_sessions"].as_u64(),
        Some(logins_ok),
        "{s}"
    );
    drop(svc);
}

fn spawn_owned(env: &TestEnv, a: &[String], stdin: &str) -> Child {
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    spawn(env, &refs, stdin)
}

/// A request stuck on a hanging Keycloak holds up nobody else's local work.
#[test]
fn a_slow_keycloak_call_does_not_block_other_clients() {
    let t = Tuning {
        timeout_seconds: 30,
        ..Tuning::default()
    };
    let (fake, env) = fake_and_env(&t);
    add_user(&env, "alice", ALICE_PW);
    let _svc = started(&env);
    fake.set_behavior(Behavior::Hang);
    let seen = fake.request_count();
    let stuck = spawn(
        &env,
        &args(&["authenticate"], "alice"),
        &format!("{ALICE_PW}\n"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.request_count() == seen {
        assert!(
            Instant::now() < deadline,
            "authenticate never reached Keycloak"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Keycloak now holds `authenticate`; local work goes through meanwhile.
    kr(&env, &["user", "list"], "").expect(0);
    kr(
        &env,
        &args(&["user", "add"], "bob"),
        &format!("{ALICE_PW}\n"),
    )
    .expect(0);
    kr(&env, &["queue"], "").expect(0);
    // A login's own Keycloak call starts while `authenticate` still waits on its own: it
    // waits for nobody else's (it would not reach Keycloak before `authenticate` is done if
    // requests were served one at a time).
    let seen = fake.request_count();
    let login = spawn(&env, &args(&["login"], "alice"), &format!("{ALICE_PW}\n"));
    while fake.request_count() == seen {
        assert!(
            Instant::now() < deadline,
            "login's Keycloak call waited behind authenticate's"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stuck = stuck;
    assert!(
        stuck.try_wait().expect("try_wait").is_none(),
        "authenticate was expected to still wait on Keycloak"
    );
    fake.set_behavior(Behavior::Normal);
    let out = finish(stuck);
    assert!(out.code == 0 || out.code == 1, "{out:#?}");
    let out = finish(login);
    assert_eq!(out.code, 0, "local password decides: {out:#?}");
}

/// Every name in a request follows the one name rule, whatever the command, over the socket
/// and on the command line alike.
#[test]
fn names_are_checked_for_every_command() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    for (cmd, user) in [
        ("cached-token", ".."),
        ("refresh", "a/b"),
        ("authenticate", "evil\u{202e}txt"),
    ] {
        let out = kr(&env, &args(&[cmd], user), &format!("{ALICE_PW}\n")).expect(2);
        assert!(one_line(&out).contains("--user"), "{cmd}: {out:?}");
    }
    let _svc = started(&env);
    let a = call(
        &env,
        r#"{"op":"cached-token","user":"../../etc/passwd","package":"webapp"}"#,
    );
    assert_eq!(a["exit"], json!(2), "{a}");
    assert!(a["stderr"].as_str().unwrap().contains("--user"), "{a}");
}

/// Issue 11: a socket caller gets the ranges the command line has, and the same one-line
/// refusal (exit 2), whichever door: a request line, or the command line forwarded.
#[test]
fn the_socket_refuses_out_of_range_values_as_the_command_line_does() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    let _svc = started(&env);
    for (request, cli, want) in [
        (
            json!({"op": "queue", "limit": 0}),
            vec!["queue", "--limit", "0"],
            "error: --limit 0 is out of range (expected 1 to 10000)",
        ),
        (
            json!({"op": "queue", "limit": 1_000_000_000u32}),
            vec!["queue", "--limit", "1000000000"],
            "error: --limit 1000000000 is out of range (expected 1 to 10000)",
        ),
        (
            json!({"op": "sync-now", "batch_size": 0}),
            vec!["sync-now", "--batch-size", "0"],
            "error: --batch-size 0 is out of range (expected at least 1)",
        ),
        (
            json!({"op": "cleanup", "failed_days": 36_501}),
            vec!["cleanup", "--failed-days", "36501"],
            "error: --failed-days 36501 is out of range (expected 0 to 36500)",
        ),
    ] {
        let a = call(&env, &request.to_string());
        assert_eq!(a["exit"], json!(2), "{request}: {a}");
        assert_eq!(a["stderr"], json!(format!("{want}\n")), "{request}: {a}");
        assert_eq!(a["stdout"], json!(""), "{request}: {a}");
        let out = kr(&env, &cli, "").expect(2);
        assert_eq!(one_line(&out), want, "{cli:?}");
    }
    // The defaults fill in from the same place: a page of 100.
    let a = call(&env, r#"{"op":"queue"}"#);
    assert_eq!(a["exit"], json!(0), "{a}");
}

/// Connects and has one request answered: the connection is then idle, and known to the
/// service.
fn served_connection(env: &TestEnv) -> UnixStream {
    let mut conn = UnixStream::connect(socket_path(env)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(b"{\"op\":\"user-list\"}\n").unwrap();
    let line = read_answer(&conn);
    assert!(line.contains("\"exit\":0"), "{line}");
    conn
}

/// One answer line from `conn` (its read timeout bounds the wait).
fn read_answer(conn: &UnixStream) -> String {
    let mut line = String::new();
    let mut byte = [0u8; 1];
    let mut reader = conn;
    while !line.ends_with('\n') {
        match reader.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => line.push(byte[0] as char),
            Err(e) => panic!("no answer: {e} (so far {line:?})"),
        }
    }
    line
}

/// Issue 15 point 6: idle connections in every slot do not lock callers out: the one idle
/// the longest is closed to make room, and the caller is served at once.
#[test]
fn idle_connections_make_room_for_a_new_caller() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    let _svc = started(&env);
    let served: Vec<UnixStream> = (0..64).map(|_| served_connection(&env)).collect();
    let silent: Vec<UnixStream> = (0..6)
        .map(|_| UnixStream::connect(socket_path(&env)).expect("connect"))
        .collect();
    // No wait for a slot: --lock-timeout 0 is a single try.
    let out = kr(&env, &["--lock-timeout", "0", "status"], "").expect(0);
    assert!(out.stdout.contains("Mode:"), "{out:?}");
    // The first served connection was idle the longest: it was closed (end of file, not a
    // timeout).
    served[0]
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!((&served[0]).read(&mut buf).expect("closed, not hung"), 0);
    drop(silent);
}

/// Issue 15 point 6: a request under way keeps its slot for its 10 s — when every slot holds
/// one, a newcomer is told "busy" (the command line retries until --lock-timeout) — and is
/// then answered "incomplete".
#[test]
fn half_sent_requests_keep_their_slot_and_their_ten_seconds() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    let _svc = started(&env);
    // A whole request and half of the next in one write: once the first is answered, the
    // service has read the half too, and the connection has a request under way.
    let halves: Vec<UnixStream> = (0..64)
        .map(|_| {
            let mut conn = UnixStream::connect(socket_path(&env)).expect("connect");
            conn.set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            conn.write_all(b"{\"op\":\"status\"}\n{\"op\":\"sta")
                .unwrap();
            let line = read_answer(&conn);
            assert!(line.contains("\"exit\":0"), "{line}");
            conn
        })
        .collect();
    let out = kr(&env, &["--lock-timeout", "0.5", "status"], "").expect(3);
    let line = one_line(&out);
    assert!(line.contains("too many connections"), "{line}");
    assert!(line.contains("--lock-timeout"), "{line}");
    for conn in &halves {
        let line = read_answer(conn);
        assert!(line.contains("incomplete after 10s"), "{line}");
    }
    drop(halves);
    kr(&env, &["--lock-timeout", "20", "status"], "").expect(0);
}

/// The number of threads of process `pid`.
fn threads_of(pid: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads line")
}

/// Issue 15 point 1: connections cost no thread: the service's workers are a fixed pool, so
/// its thread count does not grow with its callers (a thread per connection, each with its own
/// argon2 buffer, grew it to gigabytes).
#[test]
fn connections_are_served_by_a_fixed_pool_of_threads() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    add_user(&env, "alice", ALICE_PW);
    let svc = started(&env);
    let pid = svc.pid();
    let before = threads_of(&pid);
    let login = json!({"op": "login", "user": "alice", "package": PACKAGE, "password": ALICE_PW});
    let open: Vec<UnixStream> = (0..40)
        .map(|_| {
            let mut conn = UnixStream::connect(socket_path(&env)).expect("connect");
            conn.set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            conn.write_all(format!("{login}\n").as_bytes()).unwrap();
            conn
        })
        .collect();
    for conn in &open {
        let line = read_answer(conn);
        assert!(line.contains("\"exit\":0"), "{line}");
    }
    let during = threads_of(&pid);
    // A few threads may start on first use (the HTTP client's); forty would be one per
    // connection.
    assert!(
        during < before + 8,
        "{before} threads before, {during} with 40 connections open"
    );
    drop(open);
}

/// A `sync-now` sent to the service stops between items when the service is told to stop:
/// it answers with what it did, and the service exits 0.
#[test]
fn a_forwarded_sync_now_stops_between_items_at_shutdown() {
    let t = Tuning {
        extra: "service:\n  sync_interval_seconds: 3600\n".into(),
        ..Tuning::default()
    };
    let (fake, env) = fake_and_env(&t);
    let mut svc = started(&env);
    for i in 0..5 {
        let user = format!("sync{i}");
        fake.add_user(&user, ALICE_PW, true);
        let data = format!("{{\"new_password\": \"{NEW_PW}{i}\"}}");
        kr(
            &env,
            &args(&["queue-sync", "--type", "password_change"], &user),
            &data,
        )
        .expect(0);
    }
    fake.set_behavior(Behavior::Slow(Duration::from_millis(700)));
    let seen = fake.request_count();
    let sync = spawn(&env, &["--json", "sync-now"], "");
    while fake.request_count() == seen {
        std::thread::sleep(Duration::from_millis(20));
    }
    svc.sigterm();
    let out = finish(sync);
    assert_eq!(out.code, 0, "{out:#?}");
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let processed = v["report"]["processed"].as_u64().expect("processed");
    assert!(processed < 5, "the cycle went on after the stop: {v}");
    assert_eq!(svc.wait_exit(Duration::from_secs(30)).code(), Some(0));
}

/// The wire protocol: errors are answers, the connection carries several requests, and the
/// service survives whatever a client sends.
#[test]
fn malformed_requests_get_error_answers_and_the_service_lives_on() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    add_user(&env, "alice", ALICE_PW);
    let _svc = started(&env);

    for (line, want) in [
        ("hello", "not valid JSON"),
        ("[]", "JSON object"),
        (r#"{"op":"fly"}"#, "unknown variant"),
        (
            r#"{"op":"login","user":"alice","package":"webapp"}"#,
            "missing field `password`",
        ),
    ] {
        let a = call(&env, line);
        assert_eq!(a["exit"], json!(2), "{line}: {a}");
        let err = a["stderr"].as_str().unwrap();
        assert!(err.starts_with("error: bad request: "), "{err}");
        assert!(err.contains(want), "{line}: {err}");
    }

    // Two requests in one write, answered in order on the same connection.
    let mut conn = UnixStream::connect(socket_path(&env)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let login = json!({"op": "login", "user": "alice", "package": PACKAGE, "password": ALICE_PW});
    conn.write_all(format!("{login}\n{{\"op\":\"user-list\",\"format\":\"text\"}}\n").as_bytes())
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["exit"], json!(0), "{first}");
    assert_eq!(first["result"]["success"], json!(true), "{first}");
    let mut second = String::new();
    reader.read_line(&mut second).unwrap();
    let second: Value = serde_json::from_str(&second).unwrap();
    assert!(
        second["stdout"]
            .as_str()
            .unwrap()
            .starts_with("alice/webapp enabled"),
        "{second}"
    );
    assert!(second.get("result").is_none(), "{second}");

    // Not UTF-8; then a line over the size limit: answered, connection closed.
    let a = call(&env, "\u{fffd}");
    assert_eq!(a["exit"], json!(2), "{a}");
    let mut conn = UnixStream::connect(socket_path(&env)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(&[0xff, 0xfe, b'\n']).unwrap();
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).unwrap();
    assert!(line.contains("not UTF-8"), "{line}");
    let mut conn = UnixStream::connect(socket_path(&env)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let big = vec![b'x'; 1024 * 1024 + 10];
    // The service may close before reading it all: the answer is what counts.
    let _ = conn.write_all(&big);
    let mut line = String::new();
    let _ = BufReader::new(conn).read_line(&mut line);
    assert!(line.contains("longer than 1048576 bytes"), "{line}");

    // A client that connects and goes away, and one that sends half a request and closes.
    drop(UnixStream::connect(socket_path(&env)).unwrap());
    let mut half = UnixStream::connect(socket_path(&env)).unwrap();
    half.write_all(br#"{"op":"sta"#).unwrap();
    drop(half);

    // Still serving.
    kr(&env, &["status"], "").expect(0);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(socket_path(&env))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the socket is owner-only");
    }
}

/// A killed service leaves its socket behind: commands do not hang on it, and the next start
/// replaces it.
#[test]
fn a_sigkilled_service_leaves_no_command_hanging() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    add_user(&env, "alice", ALICE_PW);
    let svc = started(&env);
    // Clients busy while the service dies: each ends with a whole answer or a clear error.
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(spawn(
            &env,
            &args(&["--json", "login"], "alice"),
            &format!("{ALICE_PW}\n"),
        ));
    }
    std::thread::sleep(Duration::from_millis(150));
    svc.sigkill();
    assert!(socket_path(&env).exists(), "SIGKILL leaves the socket file");
    for c in clients {
        let out = finish(c);
        match out.code {
            0 => {
                let v: Value = serde_json::from_str(&out.stdout).expect("a whole answer");
                assert_eq!(v["success"], json!(true), "{out:#?}");
            }
            3 => {
                assert!(out.stdout.is_empty(), "no partial output: {out:#?}");
                assert!(out.stderr.contains("without a complete answer"), "{out:#?}");
            }
            _ => panic!("unexpected: {out:#?}"),
        }
    }
    // The stale socket answers nobody; the database is free: commands run directly, and the
    // first that serves replaces the socket while it runs, then removes it: `sync-now`
    // always, `status` when it has to probe Keycloak (not when the last probe still tells).
    let status = kr(&env, &["status"], "").expect(0);
    assert!(status.stdout.contains("Mode:"), "{status:?}");
    let sync = kr(&env, &["sync-now"], "").expect(0);
    let replaced = |o: &Out| o.stderr.contains("replaced the control socket");
    assert!(
        replaced(&status) != replaced(&sync),
        "replaced once: {status:?} {sync:?}"
    );
    assert!(
        !socket_path(&env).exists(),
        "the one-shot command removed it"
    );
    let mut svc = Service::start(&env);
    svc.wait_for("stop with Ctrl-C or SIGTERM", Duration::from_secs(20));
    kr(&env, &["user", "list"], "").expect(0);
}

/// SIGTERM: the request in flight is answered, later ones are refused as not run (the command
/// line then runs them itself once the service is gone), the socket is removed, exit 0.
#[test]
fn sigterm_finishes_the_request_in_flight_and_hands_over() {
    let t = Tuning {
        timeout_seconds: 20,
        ..Tuning::default()
    };
    let (fake, env) = fake_and_env(&t);
    add_user(&env, "alice", ALICE_PW);
    let mut svc = started(&env);
    fake.set_behavior(Behavior::Slow(Duration::from_millis(1500)));
    let seen = fake.request_count();
    let in_flight = spawn(
        &env,
        &args(&["--json", "login"], "alice"),
        &format!("{ALICE_PW}\n"),
    );
    while fake.request_count() == seen {
        std::thread::sleep(Duration::from_millis(20));
    }
    svc.sigterm();
    std::thread::sleep(Duration::from_millis(200));
    // Arrives during the drain: not run by the service, run directly after it exits.
    let late = spawn(&env, &["--json", "user", "list"], "");
    let out = finish(in_flight);
    assert_eq!(out.code, 0, "{out:#?}");
    let v: Value = serde_json::from_str(&out.stdout).expect("whole answer");
    assert_eq!(v["success"], json!(true), "{out:#?}");
    let status = svc.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{:#?}", svc.stdout);
    assert!(!socket_path(&env).exists(), "socket removed");
    let late = finish(late);
    assert_eq!(late.code, 0, "{late:#?}");
    let users: Value = serde_json::from_str(&late.stdout).expect("JSON");
    assert_eq!(users[0]["user"], json!("alice"), "{late:#?}");
}

/// The Python client printed in the README works as printed.
#[test]
fn the_readme_python_client_works() {
    let readme = std::fs::read_to_string(repo_file("README.md")).expect("README");
    let start = readme
        .find("```python\n")
        .expect("README has a ```python block");
    let code = &readme[start + "```python\n".len()..];
    let code = &code[..code.find("```").expect("closed block")];
    let (fake, env) = fake_and_env(&Tuning::default());
    fake.add_user("alice", ALICE_PW, true);
    add_user(&env, "alice", ALICE_PW);
    let _svc = started(&env);
    let script = env.dir.path().join("client.py");
    std::fs::write(&script, code).unwrap();
    let mut child = std::process::Command::new("python3")
        .arg(&script)
        .arg(socket_path(&env))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is on this machine");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{ALICE_PW}\n").as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(
        stdout.contains("login: exit 0, auth_mode keycloak"),
        "{stdout}"
    );
    assert!(stdout.contains("status: mode normal"), "{stdout}");
}

/// Without a service, one-shot commands queue up behind each other for the lock instead of
/// failing (issue: 20 of 48 parallel logins exited 3).
#[test]
fn parallel_one_shot_commands_wait_for_each_other() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    add_user(&env, "alice", ALICE_PW);
    let mut children = Vec::new();
    for i in 0..24 {
        if i % 4 == 0 {
            children.push(spawn(&env, &["--lock-timeout", "600", "status"], ""));
        } else {
            children.push(spawn(
                &env,
                &args(&["--lock-timeout", "600", "login"], "alice"),
                &format!("{ALICE_PW}\n"),
            ));
        }
    }
    for c in children {
        finish(c).expect(0);
    }
}

/// The lock holder is named when the wait runs out, and a bare `--lock-timeout` is checked.
#[test]
fn a_held_lock_names_its_holder() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    env.create_database();
    kr(&env, &["status"], "").expect(0);
    // Hold the lock from this process: a library user.
    let store = keycloak_resilient::store::Store::open(&env.data_dir()).expect("open");
    let out = kr(&env, &["--lock-timeout", "0.2", "queue"], "").expect(3);
    let line = one_line(&out);
    assert!(
        line.contains(&format!("pid {}", std::process::id())),
        "{line}"
    );
    assert!(line.contains("(waited 0.2s)"), "{line}");
    // Let go while a command waits: it proceeds.
    let waiting = spawn(&env, &["--lock-timeout", "30", "queue"], "");
    std::thread::sleep(Duration::from_millis(300));
    drop(store);
    finish(waiting).expect(0);
    let out = kr(&env, &["--lock-timeout", "soon", "status"], "").expect(2);
    assert!(out.stderr.contains("--lock-timeout"), "{out:?}");
}

/// A kill at the wrong moment leaves a half-written sled snapshot (`snap.*.generating`);
/// sled would read it as corruption forever. Opening removes it.
#[test]
fn a_half_written_snapshot_does_not_lock_users_out() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    add_user(&env, "alice", ALICE_PW);
    std::fs::write(env.data_dir().join("snap.FFFFFFFFFFFFFFFF.generating"), b"").unwrap();
    let out = kr(&env, &args(&["login"], "alice"), &format!("{ALICE_PW}\n")).expect(0);
    assert!(out.stdout.starts_with("logged in"), "{out:?}");
    assert!(
        !env.data_dir()
            .join("snap.FFFFFFFFFFFFFFFF.generating")
            .exists(),
        "removed"
    );
    let mut s = String::new();
    std::fs::File::open(env.data_dir().join("lock"))
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert!(
        s.contains("login"),
        "the lock note names the last holder: {s}"
    );
}

/// The deployment files run as shipped: the cron line (under /bin/sh, with the cron file's
/// variables: the secrets read from the files they name) drains the queue, and the unit's ExecStart starts a service that the cron line's
/// sync-now is then served by. Paths are moved into a temporary directory; nothing else
/// changes.
#[test]
fn contrib_cron_line_and_unit_command_work() {
    let (fake, env) = fake_and_env(&Tuning::default());
    let dir = env.dir.path().display().to_string();
    // The secret files the cron file names, with the secrets the fake expects (the config's
    // own are overridden by them), owner and group only as documented.
    let etc = env.dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    for (name, secret) in [
        ("keycloak-client-secret", crate::common::LOGIN_CLIENT_SECRET),
        (
            "keycloak-admin-client-secret",
            crate::common::ADMIN_CLIENT_SECRET,
        ),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let p = etc.join(name);
        std::fs::write(&p, format!("{secret}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    let localize = |s: &str| {
        s.replace("/usr/local/bin/keycloak-resilient", BIN)
            .replace(
                "/etc/keycloak-resilient/config.yaml",
                &env.config_path().display().to_string(),
            )
            .replace("/etc/keycloak-resilient", &etc.display().to_string())
            .replace("/var/lib/keycloak-resilient", &dir)
    };
    let cron = std::fs::read_to_string(repo_file("contrib/keycloak-resilient.cron")).unwrap();
    let is_variable = |l: &str| l.split_whitespace().next().is_some_and(|w| w.contains('='));
    let variables: Vec<(String, String)> = cron
        .lines()
        .filter(|l| !l.starts_with('#') && is_variable(l))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), localize(v)))
        .collect();
    let line = cron
        .lines()
        .find(|l| !l.starts_with('#') && !is_variable(l) && !l.trim().is_empty())
        .expect("a cron line");
    let mut fields = line.splitn(7, ' ');
    let user = fields.nth(5).expect("user field");
    assert_eq!(user, "keycloak-resilient");
    let command = localize(fields.next().expect("command"));
    let run_cron = || {
        let o = std::process::Command::new("/bin/sh")
            .args(["-c", &command])
            .env_remove("RUST_LOG")
            .env_remove("KEYCLOAK_CLIENT_SECRET")
            .env_remove("KEYCLOAK_ADMIN_CLIENT_SECRET")
            .env_remove("CREDENTIALS_DIRECTORY")
            .envs(variables.iter().filter(|(k, _)| k != "SHELL").cloned())
            .output()
            .expect("run /bin/sh");
        assert!(o.status.success(), "cron line failed: {o:?}");
    };

    fake.add_user("cronuser", ALICE_PW, true);
    let data = format!("{{\"new_password\": \"{NEW_PW}\"}}");
    kr(
        &env,
        &args(&["queue-sync", "--type", "password_change"], "cronuser"),
        &data,
    )
    .expect(0);
    run_cron();
    assert_eq!(fake.password_of("cronuser").as_deref(), Some(NEW_PW));

    let unit = std::fs::read_to_string(repo_file("contrib/keycloak-resilient.service")).unwrap();
    // Issue 13: the socket's directory under /run, made and removed by systemd.
    assert!(
        unit.lines()
            .any(|l| l == "RuntimeDirectory=keycloak-resilient"),
        "{unit}"
    );
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let exec = localize(exec);
    let mut argv = exec.split_whitespace();
    let mut child = std::process::Command::new(argv.next().unwrap())
        .args(argv)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start as the unit does");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.contains("control socket:"))),
        "the unit's service serves the socket"
    );
    kr(
        &env,
        &args(&["queue-sync", "--type", "password_change"], "cronuser"),
        &data.replace(NEW_PW, ALICE_PW),
    )
    .expect(0);
    run_cron();
    assert_eq!(fake.password_of("cronuser").as_deref(), Some(ALICE_PW));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// A full disk (here: a file size limit on the service, which sled meets the same way) makes
/// requests fail at once with one line and exit 3 — never a hang — and every change that was
/// acknowledged before is still there afterwards.
#[test]
fn a_full_disk_fails_requests_with_one_line_and_keeps_what_was_acknowledged() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    env.create_database();
    kr(&env, &["status"], "").expect(0);
    // dash's `ulimit -f` counts 512-byte blocks: about 550 KB, a little over sled's first
    // segment. SIGXFSZ ignored, so a write past it fails with EFBIG instead of killing.
    let mut svc = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 1100; exec {BIN} --config {} start",
            env.config_path().display()
        ))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start under a file size limit");
    let mut lines = BufReader::new(svc.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.is_ok_and(|l| l.contains("control socket:"))));
    let mut conn = UnixStream::connect(socket_path(&env)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut acknowledged = 0;
    let mut failure = None;
    for i in 0..5000 {
        let req = json!({"op": "queue-sync", "user": format!("u{i}"), "package": PACKAGE,
            "type": "password_change", "data": {"new_password": "x".repeat(1000)}});
        conn.write_all(format!("{req}\n").as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).expect("an answer, not a hang");
        let a: Value = serde_json::from_str(&line).expect("whole answer");
        if a["exit"] == json!(0) {
            acknowledged += 1;
        } else {
            failure = Some(a);
            break;
        }
    }
    let failure = failure.expect("the size limit was reached");
    assert_eq!(failure["exit"], json!(3), "{failure}");
    let err = failure["stderr"].as_str().unwrap().trim_end();
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(
        err.contains("file too large") && err.contains("disk is full"),
        "{err}"
    );
    // Still answering, at once.
    let a = call(&env, r#"{"op":"user-list"}"#);
    assert!(a["exit"] == json!(0) || a["exit"] == json!(3), "{a}");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &svc.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while svc.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the service hung at shutdown");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every acknowledged item is still there: pending, or — when the service's first sync
    // cycle claimed it meanwhile (requests are accepted at once) — refused by the fake, which
    // knows none of these users.
    let counts = kr_json(&env, &["queue", "--limit", "1"], "", 0)["counts"].clone();
    let kept: u64 = ["pending", "processing", "completed", "failed", "superseded"]
        .iter()
        .map(|k| counts[*k].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(kept, acknowledged, "{counts}");
    assert_eq!(counts["completed"], json!(0), "{counts}");
    assert!(acknowledged > 0);
}

/// Issue 13 point 1: the socket where `service.socket_path` puts it; a one-shot command finds
/// it through the same setting, `--socket` or `$KEYCLOAK_RESILIENT_SOCKET` — with no access to
/// the data directory needed (here: `--data-dir` names one that does not exist).
#[test]
fn the_socket_lives_where_configured_and_commands_find_it() {
    let place = tempfile::tempdir().unwrap();
    let sock = place.path().join("kr.sock");
    let t = Tuning {
        extra: format!("service:\n  socket_path: {}\n", sock.display()),
        ..Tuning::default()
    };
    let (_fake, env) = fake_and_env(&t);
    add_user(&env, "alice", ALICE_PW);
    let mut svc = started(&env);
    svc.wait_for(
        &format!("control socket:   {}", sock.display()),
        Duration::from_secs(5),
    );
    assert!(
        !socket_path(&env).exists(),
        "no socket in the data directory"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "owner-only unless configured");
    }
    // The same config: the database is locked by the service, so only the socket answers.
    kr(&env, &["--lock-timeout", "0", "user", "list"], "").expect(0);
    // Another config, without the setting, and a data directory that is not there.
    let bare = TestEnv::new("http://127.0.0.1:9", &Tuning::default());
    let nowhere = place.path().join("no-such-data");
    let nowhere = nowhere.to_str().unwrap();
    let out = kr(
        &bare,
        &[
            "--data-dir",
            nowhere,
            "--socket",
            sock.to_str().unwrap(),
            "user",
            "list",
        ],
        "",
    )
    .expect(0);
    assert!(out.stdout.contains("alice/webapp"), "{out:?}");
    let mut c = bare.cmd();
    c.args(["--data-dir", nowhere, "user", "list"])
        .env("KEYCLOAK_RESILIENT_SOCKET", &sock);
    let out = run(c).expect(0);
    assert!(out.stdout.contains("alice/webapp"), "{out:?}");
    assert!(
        !std::path::Path::new(nowhere).exists(),
        "nothing made there"
    );
    // A bad group is a config error naming the key, before anything is opened.
    svc.sigterm();
    assert_eq!(svc.wait_exit(Duration::from_secs(30)).code(), Some(0));
    assert!(!sock.exists(), "socket removed at shutdown");
    let t = Tuning {
        extra: "service:\n  socket_group: no-such-group-kr\n".into(),
        ..Tuning::default()
    };
    let env = TestEnv::new("http://127.0.0.1:9", &t);
    let out = kr(&env, &["start"], "").expect(2);
    let line = one_line(&out);
    assert!(
        line.contains("service.socket_group: no group named \"no-such-group-kr\""),
        "{line}"
    );
}

/// A Unix user made for a test, removed afterwards.
struct TempUser {
    name: &'static str,
    uid: u32,
    gid: u32,
}

impl TempUser {
    /// Creates `name` with a group of its own; `None` when not root or without useradd.
    fn create(name: &'static str) -> Option<TempUser> {
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !root {
            return None;
        }
        let _ = std::process::Command::new("userdel").arg(name).output();
        let made = std::process::Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .output()
            .ok()?;
        if !made.status.success() {
            return None;
        }
        let id = |flag: &str| -> Option<u32> {
            let o = std::process::Command::new("id")
                .args([flag, name])
                .output()
                .ok()?;
            String::from_utf8_lossy(&o.stdout).trim().parse().ok()
        };
        // Removed on drop, even when a look-up below fails.
        let mut user = TempUser {
            name,
            uid: 0,
            gid: 0,
        };
        user.uid = id("-u")?;
        user.gid = id("-g")?;
        Some(user)
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel")
            .arg(self.name)
            .output();
    }
}

/// Issue 13 point 2: another Unix user, allowed on the socket by its group and mode, runs the
/// application ops and is refused the others, named, exit 1, logged with its uid; the
/// service's own user runs everything. Needs root (to make the user); says so otherwise, and
/// the decision itself is covered by `commands::access`'s unit tests.
#[test]
fn another_user_runs_application_ops_only() {
    let Some(peer) = TempUser::create("kr-it-peer") else {
        eprintln!("skipped: needs root and useradd to create a second Unix user");
        return;
    };
    let shared = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let sock = shared.path().join("control.sock");
    let service_yaml = format!(
        "service:\n  socket_path: {}\n  socket_group: {}\n  socket_mode: \"0660\"\n",
        sock.display(),
        peer.name
    );
    let t = Tuning {
        extra: service_yaml.clone(),
        ..Tuning::default()
    };
    let (fake, env) = fake_and_env(&t);
    fake.add_user("alice", ALICE_PW, true);
    add_user(&env, "alice", ALICE_PW);
    let mut svc = started(&env);
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(&sock).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(meta.gid(), peer.gid);
    }
    // The peer's own config: no secrets, a data directory it cannot enter.
    let config = shared.path().join("peer.yaml");
    std::fs::write(
        &config,
        format!(
            "keycloak:\n  server_url: http://127.0.0.1:9\n  realm: resilient-test\n  client_id: webapp\nstorage:\n  path: {}\n",
            env.data_dir().display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let as_peer = |args: &[&str], stdin: &str| -> Out {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(&sock)
            .args(args)
            .uid(peer.uid)
            .gid(peer.gid)
            .current_dir("/")
            .env_clear()
            .env("PATH", "/usr/bin:/bin");
        let mut cmd = assert_cmd::Command::from_std(cmd);
        cmd.write_stdin(stdin.to_string());
        run(cmd)
    };
    as_peer(&["status"], "").expect(0);
    let v = as_peer(
        &["--json", "login", "--user", "alice", "--package", PACKAGE],
        &format!("{ALICE_PW}\n"),
    )
    .expect(0)
    .json();
    assert_eq!(v["success"], json!(true), "{v}");
    for (args, op) in [
        (
            vec!["user", "add", "--user", "mallory", "--package", PACKAGE],
            "user-add",
        ),
        (vec!["queue"], "queue"),
        (vec!["user", "list"], "user-list"),
    ] {
        let out = as_peer(&args, "Mallory-Password-1\n").expect(1);
        let line = one_line(&out);
        assert!(
            line.contains(&format!("op \"{op}\" is not allowed to uid {}", peer.uid)),
            "{line}"
        );
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    // The service's own user runs everything; mallory was never added.
    let users = kr(&env, &["user", "list"], "").expect(0);
    assert!(!users.stdout.contains("mallory"), "{users:?}");
    kr(&env, &["queue"], "").expect(0);
    svc.sigterm();
    assert_eq!(svc.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let log = svc.stderr.lock().unwrap().clone();
    assert!(
        log.contains(&format!("refused op \"user-add\" to uid {}", peer.uid)),
        "{log}"
    );
}
