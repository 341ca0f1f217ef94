//! Keycloak's faults never reach the user (issue 14): small fault servers that trickle, stall
//! mid-body, send too much, close or answer a route that is not there, and the fake's `Hang`
//! and `Slow` behaviours, against the library and the one-shot binary.
//!
//! No timed assertion of speed: a call must *return at all* before a bound of a few timeouts
//! (the unbounded behaviour it replaces took many times longer), and orderings are checked by
//! counting requests and looking at which threads are still busy.

use crate::common::cli::{add_user, kr, login, queue};
use crate::common::fake_keycloak::{Behavior, FakeKeycloak};
use crate::common::{acct, TestEnv, Tuning, PACKAGE};
use crate::scenarios::{manual_clock, past_cooldown};
use keycloak_resilient::auth::{Auth, LoginResult};
use keycloak_resilient::keycloak::breaker::CircuitState;
use keycloak_resilient::sessions::AuthMode;
use keycloak_resilient::{Account, AuthError};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

const PW: &str = "Fault-Password-1";

// --- a small fault server ---------------------------------------------------------------------

/// What the fault server does with a request.
#[derive(Clone)]
enum Fault {
    /// Answer at once: status and JSON body.
    Json(u16, String),
    /// Headers at once, then the body one byte at a time, `gap` apart.
    Trickle { body: String, gap: Duration },
    /// Headers (with the full length) after `delay`, half the body, then nothing.
    StallMidBody { delay: Duration, body: String },
    /// Close the connection without a word.
    Close,
}

/// A server on 127.0.0.1 answering each request with `route(method_and_path)`.
struct FaultServer {
    port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
}

impl FaultServer {
    fn start(route: impl Fn(&str) -> Fault + Send + Sync + 'static) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let route = Arc::new(route);
        let (s, r) = (stop.clone(), requests.clone());
        thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (s, r, route) = (s.clone(), r.clone(), route.clone());
                        thread::spawn(move || serve(stream, &*route, &s, &r));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultServer {
            port,
            stop,
            requests,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads one request (head and a `Content-Length` body); its `METHOD /path`.
fn read_request(stream: &TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let mut parts = first.split_whitespace();
    let method = parts.next()?;
    let path = parts.next()?.split('?').next()?;
    Some(format!("{method} {path}"))
}

fn head(status: u16, len: usize) -> String {
    format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
}

/// Sleeps `d` in small steps; false once the server stops.
fn nap(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        thread::sleep(Duration::from_millis(10).min(until - Instant::now()));
    }
    true
}

fn serve(mut stream: TcpStream, route: &dyn Fn(&str) -> Fault, stop: &AtomicBool, n: &AtomicUsize) {
    let _ = stream.set_nonblocking(false);
    let Some(request) = read_request(&stream) else {
        return;
    };
    n.fetch_add(1, Ordering::SeqCst);
    match route(&request) {
        Fault::Json(status, body) => {
            let _ = stream.write_all(format!("{}{body}", head(status, body.len())).as_bytes());
        }
        Fault::Trickle { body, gap } => {
            let _ = stream.write_all(head(200, body.len()).as_bytes());
            for b in body.bytes() {
                if !nap(gap, stop) || stream.write_all(&[b]).is_err() {
                    return;
                }
            }
        }
        Fault::StallMidBody { delay, body } => {
            if !nap(delay, stop) {
                return;
            }
            let half = &body.as_bytes()[..body.len() / 2];
            let _ = stream.write_all(head(200, body.len()).as_bytes());
            let _ = stream.write_all(half);
            while nap(Duration::from_millis(50), stop) {}
        }
        Fault::Close => {}
    }
}

fn token_json() -> String {
    r#"{"access_token":"a.b.c","expires_in":300,"refresh_token":"r","refresh_expires_in":1800,"token_type":"Bearer"}"#.to_string()
}

// --- helpers ------------------------------------------------------------------------------------

fn env_with(url: &str, timeout: u64, threshold: u32, keycloak_extra: &str) -> (TestEnv, Tuning) {
    let tuning = Tuning {
        timeout_seconds: timeout,
        failure_threshold: threshold,
        keycloak_extra: keycloak_extra.to_string(),
        ..Tuning::default()
    };
    (TestEnv::new(url, &tuning), tuning)
}

fn with_user(auth: &Auth, user: &str) {
    auth.users()
        .add(&Account::new(user, PACKAGE).unwrap(), PW)
        .unwrap();
}

/// Logs in on another thread; the result if it came within `bound`, else `None`.
fn login_within(auth: &Auth, user: &str, bound: Duration) -> Option<LoginResult> {
    let (tx, rx) = mpsc::channel();
    let (auth, user) = (auth.clone(), user.to_string());
    thread::spawn(move || {
        let _ = tx.send(auth.login(&acct(&user, PACKAGE), PW).unwrap());
    });
    rx.recv_timeout(bound).ok()
}

/// Waits (bounded) until `f` holds.
fn wait_until(within: Duration, f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    f()
}

// --- point 1: a whole-call bound, bodies read with a cap ---------------------------------------

/// A token answer trickled a byte every 150 ms (some 15 s in all) ends at the 1 s timeout:
/// reqwest's blocking client alone gives every read of the body a fresh timeout.
#[test]
fn a_trickled_answer_ends_within_the_whole_call_bound() {
    let server = FaultServer::start(|_| Fault::Trickle {
        body: token_json(),
        gap: Duration::from_millis(150),
    });
    let (env, _) = env_with(&server.url(), 1, 5, "");
    let auth = env.auth();
    with_user(&auth, "trickle");
    let r = login_within(&auth, "trickle", Duration::from_secs(4))
        .expect("the login returns within 4 × timeout");
    assert!(r.success, "{r:?}");
    assert_eq!(r.auth_mode, Some(AuthMode::Local), "{r:?}");
}

/// Headers after 1.5 s, half the body, then silence: with a 2 s timeout the call ends at 2 s
/// from its start, not 2 s after the headers.
#[test]
fn an_answer_stalled_mid_body_ends_within_the_whole_call_bound() {
    let server = FaultServer::start(|_| Fault::StallMidBody {
        delay: Duration::from_millis(1500),
        body: token_json(),
    });
    let (env, _) = env_with(&server.url(), 2, 5, "");
    let auth = env.auth();
    with_user(&auth, "stall");
    let r = login_within(&auth, "stall", Duration::from_millis(3200))
        .expect("the login returns within 1.6 × timeout");
    assert_eq!(r.auth_mode, Some(AuthMode::Local), "{r:?}");
    match auth.client().authenticate("stall", PW, PACKAGE) {
        Err(AuthError::NoCachedLogin { reason }) => {
            assert!(reason.contains("unavailable"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

/// A 2 MB answer is not Keycloak's: refused unread past the cap, counted as an outage.
#[test]
fn an_oversized_answer_is_refused_past_the_cap() {
    let padded = format!("{}{}", " ".repeat(2 * 1024 * 1024), token_json());
    let server = FaultServer::start(move |_| Fault::Json(200, padded.clone()));
    let (env, _) = env_with(&server.url(), 5, 5, "");
    match env.client().authenticate("big", PW, PACKAGE) {
        Err(AuthError::NoCachedLogin { reason }) => {
            assert!(reason.contains("oversized"), "{reason}")
        }
        other => panic!("expected an outage, got {other:?}"),
    }
    assert_eq!(env.client().circuit().1, 1, "counted as a failure");
}

/// A connection closed without an answer is an outage too (and the login goes on locally).
#[test]
fn a_connection_closed_without_an_answer_is_an_outage() {
    let server = FaultServer::start(|_| Fault::Close);
    let (env, _) = env_with(&server.url(), 2, 5, "");
    let auth = env.auth();
    with_user(&auth, "closed");
    let r = auth.login(&acct("closed", PACKAGE), PW).unwrap();
    assert_eq!(
        (r.auth_mode, r.keycloak_status),
        (Some(AuthMode::Local), "offline")
    );
    assert_eq!(auth.client().circuit().1, 1);
    assert!(server.requests.load(Ordering::SeqCst) >= 1);
}

// --- point 2: the bulkhead and slow calls --------------------------------------------------------

/// Two logins hang in Keycloak with `max_concurrent_calls: 2`; a third takes the local path at
/// once — without sending a request — while the two are still waiting.
#[test]
fn a_login_finding_the_bulkhead_full_takes_the_local_path_at_once() {
    let fake = FakeKeycloak::start();
    fake.set_behavior(Behavior::Hang);
    let (env, _) = env_with(&fake.url(), 5, 50, "  max_concurrent_calls: 2\n");
    let auth = env.auth();
    with_user(&auth, "bulk");
    let hanging: Vec<_> = (0..2)
        .map(|_| {
            let auth = auth.clone();
            thread::spawn(move || auth.login(&acct("bulk", PACKAGE), PW).unwrap())
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(10), || fake.request_count() == 2),
        "two calls in flight"
    );
    let third = auth.login(&acct("bulk", PACKAGE), PW).unwrap();
    assert!(
        hanging.iter().all(|h| !h.is_finished()),
        "the third login did not wait for the hanging ones"
    );
    assert_eq!(third.auth_mode, Some(AuthMode::Local), "{third:?}");
    assert_eq!(fake.request_count(), 2, "no third call reached Keycloak");
    fake.set_behavior(Behavior::Normal);
    for h in hanging {
        assert!(h.join().unwrap().success);
    }
}

/// An answer slower than `slow_call_seconds` counts as a failure: with threshold 1 the circuit
/// opens, though the login got its token.
#[test]
fn an_answer_slower_than_slow_call_seconds_counts_as_a_failure() {
    let fake = FakeKeycloak::start();
    fake.add_user("slowpoke", PW, true);
    fake.set_behavior(Behavior::Slow(Duration::from_millis(1400)));
    let (env, _) = env_with(&fake.url(), 3, 1, "  slow_call_seconds: 1\n");
    let auth = env.auth();
    with_user(&auth, "slowpoke");
    let r = auth.login(&acct("slowpoke", PACKAGE), PW).unwrap();
    assert_eq!(r.auth_mode, Some(AuthMode::Keycloak), "{r:?}");
    assert_eq!(auth.client().circuit().0, CircuitState::Open);
}

// --- points 3 and 5: the trial is a probe; status answers from the record --------------------

/// With a health thread making the trial (the service), a login after the cooldown goes local
/// at once and sends nothing; `status` says unavailable without asking either.
#[test]
fn with_a_health_thread_no_login_or_status_makes_the_trial() {
    let fake = FakeKeycloak::start();
    let (env, tuning) = env_with(&fake.url(), 3, 1, "");
    let clock = manual_clock();
    let auth = Auth::new(env.client_with_clock(&clock));
    with_user(&auth, "svc");
    fake.set_behavior(Behavior::Refuse);
    auth.login(&acct("svc", PACKAGE), PW).unwrap();
    assert_eq!(auth.client().circuit().0, CircuitState::Open);
    fake.set_behavior(Behavior::Hang);
    past_cooldown(&clock, &tuning);
    auth.client().keycloak().set_background_trials(true);
    let before = fake.request_count();
    let r = login_within(&auth, "svc", Duration::from_secs(2)).expect("no wait for Keycloak");
    assert_eq!(r.auth_mode, Some(AuthMode::Local), "{r:?}");
    assert!(!auth.client().get_status().unwrap().available);
    assert_eq!(fake.request_count(), before, "neither asked Keycloak");
    // The health thread's probe is the trial.
    fake.set_behavior(Behavior::Normal);
    let kc = auth.client().keycloak();
    assert!(kc.available_within(kc.timeout()));
    assert_eq!(auth.client().circuit().0, CircuitState::Closed);
}

/// Without a health thread, a login after the cooldown makes the trial as a health probe
/// bounded by `trial_timeout_ms` — never as its own password grant with the full timeout.
#[test]
fn without_a_health_thread_the_trial_is_a_short_probe_not_the_login() {
    let fake = FakeKeycloak::start();
    let (env, tuning) = env_with(&fake.url(), 3, 1, "  trial_timeout_ms: 200\n");
    let clock = manual_clock();
    let auth = Auth::new(env.client_with_clock(&clock));
    with_user(&auth, "oneshot");
    fake.set_behavior(Behavior::Refuse);
    auth.login(&acct("oneshot", PACKAGE), PW).unwrap();
    fake.set_behavior(Behavior::Hang);
    past_cooldown(&clock, &tuning);
    let before = fake.request_count();
    let r = login_within(&auth, "oneshot", Duration::from_millis(2500))
        .expect("the login waits the trial bound, not the 3 s timeout");
    assert_eq!(r.auth_mode, Some(AuthMode::Local), "{r:?}");
    let sent = fake.requests()[before..].to_vec();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].contains("/.well-known/openid-configuration"),
        "{sent:?}"
    );
    assert_eq!(
        auth.client().circuit().0,
        CircuitState::Open,
        "failed trial re-opens"
    );
}

/// `status` against a hanging Keycloak, circuit closed, nothing fresh on record: one probe
/// bounded by `trial_timeout_ms`, not counted as a failure (our impatience, not an outage).
#[test]
fn status_waits_only_the_trial_bound_for_a_hanging_keycloak() {
    let fake = FakeKeycloak::start();
    fake.set_behavior(Behavior::Hang);
    let (env, _) = env_with(&fake.url(), 3, 5, "  trial_timeout_ms: 200\n");
    let client = env.client();
    let (tx, rx) = mpsc::channel();
    let c = client.clone();
    thread::spawn(move || {
        let _ = tx.send(c.get_status().unwrap());
    });
    let status = rx
        .recv_timeout(Duration::from_millis(2500))
        .expect("status returns before the 3 s timeout");
    assert!(!status.available);
    assert_eq!(status.failure_count, 0, "{status:?}");
    assert_eq!(fake.request_count(), 1);
}

// --- point 4: no lock held across a Keycloak call in one-shot mode ----------------------------

/// 50 one-shot logins side by side against a hanging Keycloak (45 s timeout, lock wait 90 s):
/// each holds the data directory only for its local work (under a second each on a loaded
/// machine), so all succeed. Holding it across the call, the first two in line held it for
/// 45 s each, and the other 48 gave up at 90 s.
#[test]
fn fifty_one_shot_logins_against_a_hanging_keycloak_all_succeed() {
    let fake = FakeKeycloak::start();
    let (env, _) = env_with(&fake.url(), 45, 3, "");
    add_user(&env, "many", PW);
    fake.set_behavior(Behavior::Hang);
    let children: Vec<_> = (0..50)
        .map(|_| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keycloak-resilient"));
            cmd.arg("--config")
                .arg(env.config_path())
                .args(["--lock-timeout", "90", "--json", "login", "--user", "many"])
                .args(["--package", PACKAGE])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{PW}\n").as_bytes())
                .unwrap();
            child
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut failures = Vec::new();
    for mut child in children {
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                break None;
            }
            thread::sleep(Duration::from_millis(20));
        };
        let out = child.wait_with_output().unwrap();
        if status.is_none_or(|s| !s.success()) {
            failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    fake.set_behavior(Behavior::Normal);
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        failures.first()
    );
}

/// A one-shot command hanging in its Keycloak call (20 s timeout, the bulkhead's one slot its
/// own) serves the control socket meanwhile: ten one-shot logins started then, willing to wait
/// only 5 s for the lock, are all answered while it still hangs. Without it they waited for the
/// lock and gave up (exit 3, "data directory is in use").
fn logins_are_served_while_a_one_shot_command_hangs(args: &[&str], stdin: &str) {
    let fake = FakeKeycloak::start();
    let (env, _) = env_with(&fake.url(), 20, 3, "  max_concurrent_calls: 1\n");
    add_user(&env, "busy", PW);
    add_user(&env, "other", PW);
    add_user(&env, "third", PW);
    kr(
        &env,
        &crate::common::cli::args(&["queue-sync", "--type", "password_change"], "third"),
        r#"{"new_password": "Fault-Password-2"}"#,
    )
    .expect(0);
    fake.set_behavior(Behavior::Hang);
    let before = fake.request_count();
    let mut hanging = std::process::Command::new(env!("CARGO_BIN_EXE_keycloak-resilient"))
        .arg("--config")
        .arg(env.config_path())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut input = hanging.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    assert!(
        wait_until(Duration::from_secs(30), || fake.request_count() > before),
        "{args:?} never called Keycloak"
    );
    let outs: Vec<_> = thread::scope(|scope| {
        let logins: Vec<_> = (0..10)
            .map(|_| {
                scope.spawn(|| {
                    let args = ["--lock-timeout", "5", "--json", "login"];
                    kr(
                        &env,
                        &crate::common::cli::args(&args, "busy"),
                        &format!("{PW}\n"),
                    )
                })
            })
            .collect();
        logins.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let still_hanging = hanging.try_wait().unwrap().is_none();
    fake.set_behavior(Behavior::Normal);
    let _ = hanging.kill();
    let _ = hanging.wait();
    for out in &outs {
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(out.json()["auth_mode"], "local", "{out:?}");
    }
    assert!(
        still_hanging,
        "the logins were answered only once {args:?} had ended"
    );
}

#[test]
fn a_hanging_one_shot_sync_now_serves_the_logins_meanwhile() {
    logins_are_served_while_a_one_shot_command_hangs(&["sync-now"], "");
}

#[test]
fn a_hanging_one_shot_passwd_serves_the_logins_meanwhile() {
    let args = ["passwd", "--user", "other", "--package", PACKAGE];
    logins_are_served_while_a_one_shot_command_hangs(&args, &format!("{PW}\nFault-Password-3\n"));
}

/// A one-shot login that finds the half-open trial due answers from the local store at once
/// and leaves the trial to a background `probe`: every login returns well before the trial's
/// bound (5 s; the login that made the trial used to wait it out), and none sends a request.
/// Once Keycloak answers again, a probe's trial closes the circuit and logins go through it.
#[test]
fn a_one_shot_login_leaves_a_due_trial_to_a_background_probe() {
    let fake = FakeKeycloak::start();
    let tuning = Tuning {
        timeout_seconds: 20,
        failure_threshold: 1,
        cooldown_seconds: 1,
        keycloak_extra: "  trial_timeout_ms: 5000\n".into(),
        ..Tuning::default()
    };
    let env = TestEnv::new(&fake.url(), &tuning);
    fake.add_user("bg", PW, true);
    add_user(&env, "bg", PW);
    fake.set_behavior(Behavior::Refuse);
    assert_eq!(login(&env, "bg", PW, 0)["auth_mode"], "local");
    fake.set_behavior(Behavior::Hang);
    let hung = fake.request_count();
    let probed = || {
        fake.requests()[hung..]
            .iter()
            .any(|r| r.contains("/.well-known/openid-configuration"))
    };
    // Logins go local while the circuit cools down; one after it starts the probe.
    let probe_seen = wait_until(Duration::from_secs(30), || {
        let (tx, rx) = mpsc::channel();
        thread::scope(|scope| {
            scope.spawn(|| {
                let _ = tx.send(login(&env, "bg", PW, 0));
            });
            let r = rx
                .recv_timeout(Duration::from_millis(4500))
                .expect("a login waited for Keycloak's trial");
            assert_eq!(r["auth_mode"], "local", "{r}");
        });
        probed()
    });
    assert!(probe_seen, "no probe asked Keycloak");
    let sent = fake.requests()[hung..].to_vec();
    assert!(
        sent.iter().all(|r| !r.contains("/token")),
        "a login asked Keycloak: {sent:?}"
    );
    fake.set_behavior(Behavior::Normal);
    let closed = wait_until(Duration::from_secs(60), || {
        login(&env, "bg", PW, 0)["auth_mode"] == "keycloak"
    });
    assert!(
        closed,
        "no probe closed the circuit: {}",
        kr(&env, &["status"], "").stdout
    );
    let probe = kr(&env, &["probe"], "").expect(0);
    assert_eq!(probe.stdout.trim(), "Keycloak: available (circuit closed)");
}

// --- point 6: a route that is not there is not a missing user ---------------------------------

fn admin_api(credentials: Fault) -> FaultServer {
    FaultServer::start(move |request| {
        if request.ends_with("/openid-configuration") {
            Fault::Json(
                200,
                r#"{"issuer":"http://127.0.0.1/realms/resilient-test"}"#.into(),
            )
        } else if request.ends_with("/token") {
            Fault::Json(200, token_json())
        } else if request.ends_with("/users") {
            Fault::Json(
                200,
                r#"[{"id":"u-1","username":"carl","enabled":true}]"#.into(),
            )
        } else if request.ends_with("/credentials") {
            credentials.clone()
        } else {
            Fault::Json(404, r#"{"error":"HTTP 404 Not Found"}"#.into())
        }
    })
}

/// A credentials read answered `HTTP 404 Not Found` (a gateway not routing the path) blocks
/// the queue with the reason; the item stays pending, untouched. Keycloak's own `User not
/// found` still fails the item for good.
#[test]
fn a_route_that_is_not_there_blocks_the_queue_with_items_untouched() {
    let server = admin_api(Fault::Json(404, r#"{"error":"HTTP 404 Not Found"}"#.into()));
    let (env, _) = env_with(&server.url(), 2, 5, "");
    let client = env.client();
    let data = serde_json::json!({"new_password": "Carl-New-Password-1"});
    client
        .queue_sync("carl", PACKAGE, "password_change", &data, 1)
        .unwrap();
    let report = client.process_sync_queue(10).unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    let blocked = client.queue_blocked().expect("queue blocked");
    assert!(blocked.contains("credentials"), "{blocked}");
    let items = client.queue().list().unwrap();
    assert_eq!(items[0].status.as_str(), "pending");
    assert_eq!(items[0].attempts, 0);
    drop(client);

    let server = admin_api(Fault::Json(404, r#"{"error":"User not found"}"#.into()));
    let (env, _) = env_with(&server.url(), 2, 5, "");
    let client = env.client();
    client
        .queue_sync("carl", PACKAGE, "password_change", &data, 1)
        .unwrap();
    let report = client.process_sync_queue(10).unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    assert!(client.queue_blocked().is_none());
}

// --- point 7: small wrong answers ------------------------------------------------------------

/// A wrong password local auth refuses is still put to Keycloak, which decides passwords
/// (issue 12): `online`; where the local store decides, Keycloak is not asked: `not_asked`,
/// not `offline`, while Keycloak is up. A synced change shows the attempt that applied it.
#[test]
fn a_refused_login_says_whether_keycloak_was_asked_and_a_synced_item_its_attempt() {
    let fake = FakeKeycloak::start();
    let (env, _) = env_with(&fake.url(), 2, 2, "");
    add_user(&env, "alice", PW);
    let r = login(&env, "alice", "Wrong-Password-1", 1);
    assert_eq!(r["keycloak_status"], "online", "{r}");
    let local = "  authority:\n    passwords: local\n    provision: false\n";
    let (local_env, _) = env_with(&fake.url(), 2, 2, local);
    add_user(&local_env, "alice", PW);
    let r = login(&local_env, "alice", "Wrong-Password-1", 1);
    assert_eq!(r["keycloak_status"], "not_asked", "{r}");
    let out = kr(
        &env,
        &["--json", "passwd", "--user", "alice", "--package", PACKAGE],
        &format!("{PW}\nAlice-Newer-Password-2\n"),
    )
    .expect(0);
    assert_eq!(out.json()["mode"], "synchronized", "{out:?}");
    let items = queue(&env);
    assert_eq!(items[0]["status"], "completed", "{items:?}");
    assert_eq!(items[0]["attempts"], 1, "{items:?}");
}

// --- point 8: recovery robust to a slow first answer ------------------------------------------

/// A restarted Keycloak's first answers are slow: the trial probe, slower than
/// `slow_call_seconds`, still closes the circuit (the slow-call rule is for requests).
#[test]
fn a_slow_trial_probe_still_closes_the_circuit() {
    let fake = FakeKeycloak::start();
    let (env, tuning) = env_with(&fake.url(), 3, 1, "  slow_call_seconds: 1\n");
    let clock = manual_clock();
    let client = env.client_with_clock(&clock);
    fake.set_behavior(Behavior::Refuse);
    assert!(!client.keycloak().probe());
    assert_eq!(client.circuit().0, CircuitState::Open);
    fake.set_behavior(Behavior::Slow(Duration::from_millis(1400)));
    past_cooldown(&clock, &tuning);
    let kc = client.keycloak();
    assert!(kc.available_within(kc.timeout()), "the slow trial answered");
    assert_eq!(client.circuit().0, CircuitState::Closed);
}
