//! `reconcile` against a realm of many users (issue 12 point 5: 100 000 users in minutes, not
//! hours, and bounded memory).
//!
//! Run: `cargo bench --bench reconcile` (10 000 then 100 000 users; `KR_BENCH_USERS=20000,50000`
//! for other sizes). For each size it starts a Keycloak look-alike serving that many users page
//! by page (`GET /admin/realms/bench/users?first=&max=`, 1 in 100 disabled), imports as many
//! local accounts (one argon2 hash for all: no hashing here), then runs the real binary's
//! one-shot `reconcile --json` and prints its wall time, the pages it asked for, and its peak
//! RSS next to a `status`'s and a `queue --limit 1`'s (a command that reads almost nothing) on
//! the same database.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REALM: &str = "bench";

fn sizes() -> Vec<usize> {
    match std::env::var("KR_BENCH_USERS") {
        Ok(v) => v
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("KR_BENCH_USERS={v}: expected numbers"))
            })
            .collect(),
        Err(_) => vec![10_000, 100_000],
    }
}

/// A Keycloak look-alike with `users` users: the admin token and the paged user list only.
fn serve(users: usize, pages: Arc<AtomicUsize>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let pages = pages.clone();
            std::thread::spawn(move || answer(stream, users, &pages));
        }
    });
    port
}

fn answer(stream: TcpStream, users: usize, pages: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let target = line.split_whitespace().nth(1).unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let json = if path.ends_with("/protocol/openid-connect/token") {
        // Claims `{}`: no roles needed to page through users.
        r#"{"access_token":"e30.e30.sig","expires_in":300,"token_type":"Bearer"}"#.to_string()
    } else if path == format!("/admin/realms/{REALM}/users") {
        pages.fetch_add(1, Ordering::Relaxed);
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse::<usize>().ok())
        };
        let first = param("first").unwrap_or(0);
        let max = param("max").unwrap_or(100);
        let page: Vec<String> = (first..users.min(first + max))
            .map(|i| {
                format!(
                    r#"{{"id":"00000000-0000-0000-0000-{i:012}","username":"user{i:06}","enabled":{},"emailVerified":true,"createdTimestamp":1796000000000,"email":"user{i:06}@example.test","firstName":"Bench","lastName":"User","access":{{"manage":true}}}}"#,
                    i % 100 != 0
                )
            })
            .collect();
        format!("[{}]", page.join(","))
    } else {
        r#"{"error":"HTTP 404 Not Found"}"#.to_string()
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
}

/// Runs the binary with `args`; (wall time, peak RSS in KiB, stdout). The peak is the
/// kernel's own (`ru_maxrss`), read by a copy of this bench that only starts the command and
/// waits for it (`KR_BENCH_WRAP`), so that each command's figure is its own.
fn run(config: &Path, args: &[&str]) -> (Duration, u64, String) {
    let started = Instant::now();
    let out = Command::new(std::env::current_exe().expect("this bench"))
        .env("KR_BENCH_WRAP", "1")
        .arg(env!("CARGO_BIN_EXE_keycloak-resilient"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run the binary");
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, peak) = text
        .rsplit_once("\nMAXRSS_KIB ")
        .expect("the wrapper's last line");
    (
        took,
        peak.trim().parse().expect("a number"),
        body.to_string(),
    )
}

/// The wrapper: runs argv[1..], passes its stdout on, then prints its peak RSS.
fn wrap() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .expect("run the command");
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    println!("\nMAXRSS_KIB {}", usage.max_rss());
}

fn main() {
    if std::env::var("KR_BENCH_WRAP").is_ok() {
        return wrap();
    }
    let hash = keycloak_resilient::password::hash("Bench-Password-1").expect("hash");
    println!(
        "| users | reconcile | pages | per 1 000 users | peak RSS: reconcile | status | queue --limit 1 | reconcile / queue |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for users in sizes() {
        let pages = Arc::new(AtomicUsize::new(0));
        let port = serve(users, pages.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "keycloak:\n  server_url: http://127.0.0.1:{port}\n  realm: {REALM}\n  client_id: webapp\n  admin_client_secret: bench\n  timeout_seconds: 30\n  slow_call_seconds: 30\nstorage:\n  path: ./data\n"
            ),
        )
        .expect("config");
        let rows = dir.path().join("users.jsonl");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&rows).expect("rows"));
        for i in 0..users {
            writeln!(
                file,
                r#"{{"username":"user{i:06}","package":"webapp","password_hash":"{hash}"}}"#
            )
            .expect("row");
        }
        drop(file);
        let rows_arg = rows.to_string_lossy().to_string();
        let (imported, _, out) = run(&config, &["--json", "user", "import", &rows_arg]);
        let imported_json: serde_json::Value = serde_json::from_str(&out).expect("import JSON");
        assert_eq!(imported_json["imported"], users, "import: {out}");
        let (took, peak, out) = run(&config, &["--json", "reconcile"]);
        let report: serde_json::Value = serde_json::from_str(&out).expect("reconcile JSON");
        assert_eq!(report["checked"], users, "{report}");
        assert_eq!(report["disabled"], users / 100, "{report}");
        let (_, status_peak, _) = run(&config, &["--json", "status"]);
        let (_, queue_peak, _) = run(&config, &["--json", "queue", "--limit", "1"]);
        println!(
            "| {users} | {:.1} s (import {:.1} s) | {} | {:.0} ms | {} MiB | {} MiB | {} MiB | {:.2} |",
            took.as_secs_f64(),
            imported.as_secs_f64(),
            pages.load(Ordering::Relaxed),
            took.as_secs_f64() * 1000.0 / (users as f64 / 1000.0),
            peak / 1024,
            status_peak / 1024,
            queue_peak / 1024,
            peak as f64 / queue_peak.max(1) as f64
        );
    }
}
