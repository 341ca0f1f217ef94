//! The service's memory under a stream of socket logins (issue 15 point 1), and how long a
//! fresh connection waits to be answered (issue 15 point 6).
//!
//! Run: `cargo bench --bench socket_memory` (20 000 logins); `KR_BENCH_LOGINS=100000` for
//! more, `KR_BENCH_CLIENTS` for the number of callers at once (default 8), `KR_BENCH_BIN` to
//! measure another build of the binary (an older one, say). It starts the real binary
//! (`start`) on a temporary data directory with Keycloak unreachable (so every login is
//! a local argon2 verify, the memory-hungry part), makes the logins over the control socket —
//! a fresh connection each, as the command line does — and prints the service's VmRSS and
//! VmHWM from /proc/PID/status at each quarter. Flat VmRSS rows are the point: before the
//! worker pool, a thread per connection grew the service to gigabytes.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The binary measured: `$KR_BENCH_BIN`, else the one built with this bench.
fn bin() -> String {
    std::env::var("KR_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_keycloak-resilient").into())
}
const PASSWORD: &str = "Bench-Password-1";

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: expected a whole number")),
        Err(_) => default,
    }
}

/// (VmRSS, VmHWM) of `pid` in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One request over a fresh connection; the answer's exit code.
fn request(socket: &Path, line: &str) -> u64 {
    let mut conn = UnixStream::connect(socket).expect("connect to the service");
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    conn.write_all(line.as_bytes()).expect("send");
    let mut answer = String::new();
    BufReader::new(conn)
        .read_line(&mut answer)
        .expect("an answer");
    let v: serde_json::Value = serde_json::from_str(&answer).expect("a JSON answer");
    v["exit"].as_u64().expect("an exit code")
}

struct Service {
    child: Child,
    socket: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Service {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "keycloak:\n  server_url: http://127.0.0.1:9\n  realm: bench\n  client_id: web\n  timeout_seconds: 1\n  connect_timeout_seconds: 1\nstorage:\n  path: ./data\n",
    )
    .expect("config");
    let mut add = Command::new(bin())
        .arg("--config")
        .arg(&config)
        .args(["user", "add", "--user", "alice", "--package", "web"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("user add");
    add.stdin
        .take()
        .expect("stdin")
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .expect("password");
    assert!(add.wait().expect("user add").success(), "user add failed");
    let child = Command::new(bin())
        .arg("--config")
        .arg(&config)
        .arg("start")
        .env_remove("RUST_LOG")
        .env_remove("KEYCLOAK_RESILIENT_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    let service = Service {
        child,
        socket: dir.join("data").join("control.sock"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while UnixStream::connect(&service.socket).is_err() {
        assert!(Instant::now() < deadline, "the service did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    service
}

fn main() {
    let logins = env_number("KR_BENCH_LOGINS", 20_000);
    let clients = env_number("KR_BENCH_CLIENTS", 8).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let service = start(dir.path());
    let pid = service.child.id();
    let login = format!(
        "{{\"op\":\"login\",\"user\":\"alice\",\"package\":\"web\",\"password\":\"{PASSWORD}\"}}\n"
    );
    // Warm up: the breaker opens on the unreachable Keycloak, the workers get their buffers.
    for _ in 0..50 {
        assert_eq!(
            request(&service.socket, &login),
            0,
            "a warm-up login failed"
        );
    }
    // A fresh connection's round trip for `status`: accepted at once, not on a poll tick.
    let mut trips: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            request(&service.socket, "{\"op\":\"status\"}\n");
            t.elapsed()
        })
        .collect();
    trips.sort();
    let (rss0, hwm0) = memory(pid);
    println!("binary: {}", bin());
    println!("socket logins: {logins} over fresh connections, {clients} callers at once");
    println!(
        "status round trip on a fresh connection: median {:.2} ms, p90 {:.2} ms",
        trips[trips.len() / 2].as_secs_f64() * 1e3,
        trips[trips.len() * 9 / 10].as_secs_f64() * 1e3
    );
    println!();
    println!("| logins done | seconds | VmRSS MiB | VmHWM MiB |");
    println!("|---|---|---|---|");
    println!(
        "| 0 (after warm-up) | 0 | {:.1} | {:.1} |",
        mib(rss0),
        mib(hwm0)
    );
    let done = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let quarter = logins.div_ceil(4).max(1);
    let mut next_report = quarter;
    std::thread::scope(|s| {
        for _ in 0..clients {
            let (done, socket, login) = (done.clone(), &service.socket, &login);
            s.spawn(move || {
                while done.fetch_add(1, Ordering::SeqCst) < logins {
                    assert_eq!(request(socket, login), 0, "a login failed");
                }
            });
        }
        while next_report <= logins {
            if done.load(Ordering::SeqCst).min(logins) >= next_report {
                let (rss, hwm) = memory(pid);
                println!(
                    "| {next_report} | {:.0} | {:.1} | {:.1} |",
                    t0.elapsed().as_secs_f64(),
                    mib(rss),
                    mib(hwm)
                );
                next_report += quarter;
            } else {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    });
    let (rss, hwm) = memory(pid);
    println!();
    println!(
        "VmRSS {:.1} MiB before, {:.1} MiB after {logins} logins (VmHWM {:.1} MiB) in {:.0} s",
        mib(rss0),
        mib(rss),
        mib(hwm),
        t0.elapsed().as_secs_f64()
    );
    drop(service);
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
