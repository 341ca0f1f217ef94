//! The one-shot path (issue 17 point 4): what a command pays to start, open the database and
//! go, measured on the real binary. `status` cold (a fresh process on a database holding a
//! user and 1 000 queued changes, Keycloak refusing connections), and a one-shot local `login`
//! next to one argon2 verify in this process and one in a fresh process that does nothing
//! else — the floor a one-shot login cannot go below: the process, and argon2's 19 MiB touched
//! for the first time — in interleaved rounds, medians.
//!
//! `cargo bench --bench one_shot` prints one table; `bench/ratios.sh` adds its rows to the
//! summary.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/binary.rs"]
mod binary;
#[path = "support/summary.rs"]
mod summary;

use binary::run;

const PW: &str = "Bench-Password-1";
const ROUNDS: usize = 15;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Set in the environment of this bench's own executable, run again: it hashes nothing, does
/// one verify of the bench's password against the hash given there, and exits.
const VERIFY_ONLY: &str = "KR_BENCH_VERIFY_ONLY";

/// A fresh process that only verifies: what a one-shot login cannot go below (the process,
/// and argon2's 19 MiB touched for the first time).
fn fresh_verify(hash: &str) -> Duration {
    let started = Instant::now();
    let status = Command::new(std::env::current_exe().expect("this bench's executable"))
        .env(VERIFY_ONLY, hash)
        .stdout(Stdio::null())
        .status()
        .expect("spawn");
    assert!(status.success(), "the verify-only run failed");
    started.elapsed()
}

/// A one-shot local login of the bench's user.
fn login(config: &Path) -> Duration {
    run(
        config,
        &["login", "--user", "u", "--package", "p"],
        &format!("{PW}\n"),
    )
}

/// A database in `dir` holding a user and 1 000 queued changes, its Keycloak refusing
/// connections and the circuit open for the day; its config file.
fn prepared(dir: &Path) -> PathBuf {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!("keycloak:\n  server_url: http://127.0.0.1:{port}\n  realm: r\n  client_id: webapp\n  resilience:\n    failure_threshold: 1\n    cooldown_seconds: 86400\nstorage:\n  path: ./data\n"),
    )
    .expect("config");
    run(
        &config,
        &["user", "add", "--user", "u", "--package", "p"],
        &format!("{PW}\n"),
    );
    let changes: String = (0..1_000)
        .map(|i| {
            format!(
                "{{\"user\":\"q{i}\",\"package\":\"p\",\"type\":\"user_disable\",\"data\":{{}}}}\n"
            )
        })
        .collect();
    run(&config, &["queue-sync-many"], &changes);
    // The first login opens the circuit: every later one is local auth alone.
    login(&config);
    config
}

fn main() {
    if let Ok(hash) = std::env::var(VERIFY_ONLY) {
        std::process::exit(if keycloak_resilient::password::verify(PW, &hash) {
            0
        } else {
            1
        });
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = prepared(dir.path());
    let hash = keycloak_resilient::password::hash(PW).expect("hash");

    let (mut status, mut logins, mut verifies, mut fresh) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        fresh.push(fresh_verify(&hash));
        status.push(run(&config, &["status"], ""));
        logins.push(login(&config));
        let started = Instant::now();
        assert!(keycloak_resilient::password::verify(PW, &hash));
        verifies.push(started.elapsed());
    }
    report(
        median(status),
        median(logins),
        median(verifies),
        median(fresh),
    );
}

/// Prints the table and adds the rows of `bench/ratios.sh`.
fn report(status: Duration, login: Duration, verify: Duration, fresh: Duration) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("| what | median |");
    println!("|---|---|");
    println!(
        "| `status`, a fresh process (1 000 queued items) | {:.1} ms |",
        ms(status)
    );
    println!(
        "| one-shot local `login`, a fresh process | {:.1} ms |",
        ms(login)
    );
    println!(
        "| one argon2 verify in this process | {:.1} ms |",
        ms(verify)
    );
    println!(
        "| one argon2 verify in a fresh process (its memory touched for the first time) | {:.1} ms |",
        ms(fresh)
    );
    println!("| login / verify | {:.2} |", ms(login) / ms(verify));
    println!(
        "| login / a fresh process's verify | {:.2} |",
        ms(login) / ms(fresh)
    );
    println!(
        "(medians of {ROUNDS} interleaved rounds; Keycloak refusing connections, the circuit open)"
    );
    summary::row(
        "`status`, a fresh process, ms",
        &format!("{:.1}", ms(status)),
        "≤ 10",
    );
    summary::row(
        "one-shot local login / one argon2 verify",
        &format!("{:.2}", ms(login) / ms(verify)),
        "≤ 1.3",
    );
    summary::row(
        "one-shot local login / a fresh process doing one verify",
        &format!("{:.2}", ms(login) / ms(fresh)),
        "(the floor: 1)",
    );
}
