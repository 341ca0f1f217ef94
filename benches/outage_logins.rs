//! Login latency during an outage next to a local login's, one-shot and over the socket
//! (issue 14 point 3: once the circuit has opened, login p99 ≤ 1.2 × a local login's).
//!
//! "Local": Keycloak refused the connection once, the circuit opened with a cooldown longer
//! than the run — every login is local auth alone. "Outage": Keycloak *hangs* (connections
//! accepted, never answered) and the cooldown is 1 s, so the half-open trial falls due again
//! and again during the run: one-shot, the login that finds it due starts a background `probe`
//! and goes on locally; with `start` running, its health thread makes it. No login waits.
//!
//! `cargo bench --bench outage_logins` prints one table; absolute times vary with the machine's
//! load, the ratios are the point.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[path = "support/binary.rs"]
mod binary;

use binary::BIN;

const PW: &str = "Bench-Password-1";
const LOGINS: usize = 30;

/// A port where connections are accepted and never answered, for the life of the process.
fn hanging_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    port
}

/// A port nothing listens on.
fn refused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn env(dir: &Path, port: u16, cooldown: u64) -> PathBuf {
    let yaml = format!(
        "keycloak:\n  server_url: http://127.0.0.1:{port}\n  realm: r\n  client_id: webapp\n  timeout_seconds: 2\n  connect_timeout_seconds: 1\n  trial_timeout_ms: 200\n  resilience:\n    failure_threshold: 1\n    cooldown_seconds: {cooldown}\nstorage:\n  path: ./data\n"
    );
    let config = dir.join("config.yaml");
    std::fs::write(&config, yaml).expect("config");
    run(&config, &["user", "add", "--user", "u", "--package", "p"]);
    // The first login opens the circuit (a refused connection, or a 2 s hang).
    run(&config, &["login", "--user", "u", "--package", "p"]);
    config
}

/// One run of the binary with the bench's password on stdin.
fn run(config: &Path, args: &[&str]) -> Duration {
    binary::run(config, args, &format!("{PW}\n"))
}

fn logins(config: &Path) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..LOGINS)
        .map(|_| run(config, &["login", "--user", "u", "--package", "p"]))
        .collect();
    times.sort();
    times
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn start(config: &Path) -> Child {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("start")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    let out = child.stdout.take().expect("stdout");
    for line in BufReader::new(out).lines() {
        if line.map_or(true, |l| l.contains("stop with Ctrl-C")) {
            break;
        }
    }
    child
}

#[path = "support/summary.rs"]
mod summary;

fn main() {
    let hang = hanging_port();
    let mut rows = Vec::new();
    for socket in [false, true] {
        let local_dir = tempfile::tempdir().expect("tempdir");
        let outage_dir = tempfile::tempdir().expect("tempdir");
        let local = env(local_dir.path(), refused_port(), 86_400);
        let outage = env(outage_dir.path(), hang, 1);
        let services = socket.then(|| (start(&local), start(&outage)));
        let l = logins(&local);
        let o = logins(&outage);
        if let Some((mut a, mut b)) = services {
            let _ = a.kill();
            let _ = b.kill();
            let _ = a.wait();
            let _ = b.wait();
        }
        rows.push((if socket { "socket" } else { "one-shot" }, l, o));
    }
    println!("| mode | local p50 | local p99 | outage p50 | outage p99 | outage p99 / local p99 |");
    println!("|---|---|---|---|---|---|");
    for (mode, l, o) in rows {
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| {mode} | {} | {} | {} | {} | {:.2} |",
            ms(pct(&l, 0.5)),
            ms(pct(&l, 0.99)),
            ms(pct(&o, 0.5)),
            ms(pct(&o, 0.99)),
            pct(&o, 0.99).as_secs_f64() / pct(&l, 0.99).as_secs_f64()
        );
        summary::row(
            &format!("{mode} login p99 during an outage / a local login's p99"),
            &format!(
                "{:.2}",
                pct(&o, 0.99).as_secs_f64() / pct(&l, 0.99).as_secs_f64()
            ),
            "≤ 1.2",
        );
    }
    println!("({LOGINS} sequential logins each; outage: Keycloak hangs, cooldown 1 s, trial_timeout_ms 200)");
}
