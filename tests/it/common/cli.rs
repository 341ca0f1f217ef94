//! Running the binary from tests: one invocation ([`kr`]) or the `start` service ([`Service`]).

use super::fake_keycloak::FakeKeycloak;
use super::{TestEnv, Tuning, PACKAGE};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_keycloak-resilient");

/// What one invocation did.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    pub fn expect(self, code: i32) -> Out {
        assert_eq!(self.code, code, "unexpected exit status: {self:#?}");
        self
    }
}

/// Runs a prepared command; a panic or backtrace in stderr always fails the test.
pub fn run(mut cmd: assert_cmd::Command) -> Out {
    cmd.env("RUST_BACKTRACE", "1");
    let o = cmd.output().expect("run keycloak-resilient");
    let out = Out {
        code: o
            .status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {o:?}")),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    assert!(
        !out.stderr.contains("panicked") && !out.stderr.contains("stack backtrace"),
        "the binary panicked: {out:#?}"
    );
    out
}

/// `keycloak-resilient --config <env> ARGS` with `stdin`.
pub fn kr(env: &TestEnv, args: &[&str], stdin: &str) -> Out {
    let mut c = env.cmd();
    c.args(args).write_stdin(stdin.to_string());
    run(c)
}

/// Same, with `--json` and the output parsed.
pub fn kr_json(env: &TestEnv, args: &[&str], stdin: &str, code: i32) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    kr(env, &all, stdin).expect(code).json()
}

pub fn args<'a>(cmd: &[&'a str], user: &'a str) -> Vec<&'a str> {
    let mut v = cmd.to_vec();
    v.extend_from_slice(&["--user", user, "--package", PACKAGE]);
    v
}

pub fn fake_and_env(t: &Tuning) -> (FakeKeycloak, TestEnv) {
    let fake = FakeKeycloak::start();
    let env = TestEnv::new(&fake.url(), t);
    (fake, env)
}

pub fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

pub fn status(env: &TestEnv) -> Value {
    kr_json(env, &["status"], "", 0)
}

pub fn queue(env: &TestEnv) -> Vec<Value> {
    let page = kr_json(env, &["queue", "--limit", "10000"], "", 0);
    assert!(
        page["next"].is_null(),
        "one page holds the test's queue: {page}"
    );
    page["items"]
        .as_array()
        .expect("queue --json has an items array")
        .clone()
}

pub fn queue_sync(env: &TestEnv, user: &str, password: &str) -> String {
    let data = format!("{{\"new_password\": \"{password}\"}}");
    let out = kr(
        env,
        &args(&["queue-sync", "--type", "password_change"], user),
        &data,
    )
    .expect(0);
    let id = out.stdout.trim().to_string();
    uuid::Uuid::parse_str(&id).unwrap_or_else(|_| panic!("queue-sync printed no SyncId: {out:?}"));
    id
}

pub fn add_user(env: &TestEnv, user: &str, password: &str) {
    let out = kr(env, &args(&["user", "add"], user), &format!("{password}\n")).expect(0);
    assert_eq!(out.stdout.trim(), format!("added {user}/{PACKAGE}"));
}

pub fn login(env: &TestEnv, user: &str, password: &str, code: i32) -> Value {
    kr_json(env, &args(&["login"], user), &format!("{password}\n"), code)
}

/// Asserts `stderr` is exactly one line.
pub fn one_line(out: &Out) -> &str {
    let s = out.stderr.trim_end_matches('\n');
    assert!(
        !s.is_empty() && !s.contains('\n'),
        "stderr is not one line: {out:#?}"
    );
    s
}

/// One request line to the service at `env`'s control socket; `None` while it cannot be
/// reached (not started yet, or between two rounds: a reload, a reopen).
pub fn try_call(env: &TestEnv, request: &Value) -> Option<Value> {
    use std::io::Write;
    let mut conn =
        std::os::unix::net::UnixStream::connect(env.data_dir().join("control.sock")).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    conn.write_all(format!("{request}\n").as_bytes()).ok()?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

/// A running `keycloak-resilient start`.
pub struct Service {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub stdout: Vec<String>,
    pub stderr: Arc<Mutex<String>>,
}

impl Service {
    pub fn start(env: &TestEnv) -> Service {
        Self::start_with(env, &[])
    }

    /// `keycloak-resilient --config <env> FLAGS start`.
    pub fn start_with(env: &TestEnv, flags: &[&str]) -> Service {
        let mut child = std::process::Command::new(BIN)
            .arg("--config")
            .arg(env.config_path())
            .args(flags)
            .arg("start")
            .env_remove("KEYCLOAK_CLIENT_SECRET")
            .env_remove("KEYCLOAK_ADMIN_CLIENT_SECRET")
            .env_remove("KEYCLOAK_RESILIENT_SOCKET")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn start");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Service {
            child,
            lines,
            stdout: Vec::new(),
            stderr,
        }
    }

    /// The next stdout line (not kept in `stdout`), waiting at most `within`.
    pub fn next_line(&mut self, within: Duration) -> String {
        self.lines.recv_timeout(within).unwrap_or_else(|e| {
            panic!(
                "start printed no line ({e}); stderr: {}",
                self.stderr.lock().unwrap()
            )
        })
    }

    /// Waits until a stdout line contains `needle`.
    pub fn wait_for(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        if self.stdout.iter().any(|l| l.contains(needle)) {
            return;
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.stdout.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "start never printed {needle:?}; stdout: {:#?}\nstderr: {}",
            self.stdout,
            self.stderr.lock().unwrap()
        );
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn sigterm(&self) {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.pid()])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -TERM failed");
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap.
    pub fn sigkill(mut self) {
        self.child.kill().expect("SIGKILL");
        let status = self.child.wait().expect("wait");
        assert!(
            status.code().is_none(),
            "start was not killed by a signal: {status:?}"
        );
    }

    /// Waits for exit; collects the rest of stdout.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The reader thread ends at EOF; take what it still has.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
                    self.stdout.push(line);
                }
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("start did not exit; stdout: {:#?}", self.stdout);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
