//! Draining the queue against a SQLite reference (issue 17 point 2): items/s of one sync cycle
//! of 100 and of 1000 queued password changes, against the same Keycloak look-alike.
//!
//! The look-alike answers like Keycloak's admin API (token, user search, credentials,
//! reset-password) after a fixed service time per request ([`SERVICE_MS`], a Keycloak on the
//! same network: its reset hashes the password). The reference drains as the original design's
//! Python does: SQLite (WAL, `synchronous=FULL`), pending items by status, priority and time;
//! one admin token a cycle; per item a search by name and the reset, each on a new connection
//! (as `urllib` makes them), then the item's row updated and committed. Ours is
//! [`ResilientClient::process_sync_queue`]: per item the credentials read that makes it
//! exactly-once (flushed mark), the reset, the settle; different users side by side; the
//! search by name only for users not linked here (in this bench none is, as with the
//! reference).
//!
//! [`ROUNDS`] rounds per batch size, ours and the reference interleaved; medians.
//! `cargo bench --bench drain` prints one Markdown table.

use keycloak_resilient::{Config, QueuedChange, ResilientClient};
use rusqlite::Connection;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;
const SERVICE_MS: u64 = 3;
const REALM: &str = "bench";

// --- the Keycloak look-alike -------------------------------------------------------------

/// Serves the admin API on 127.0.0.1, a thread per connection, keep-alive; counts requests.
fn serve(requests: Arc<AtomicUsize>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let requests = requests.clone();
            std::thread::spawn(move || connection(stream, &requests));
        }
    });
    port
}

fn connection(stream: TcpStream, requests: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        let mut close = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            close |= lower.starts_with("connection:") && lower.contains("close");
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(SERVICE_MS));
        let (status, json) = answer(&line);
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        );
        if stream.write_all(reply.as_bytes()).is_err() || close {
            return;
        }
    }
}

fn answer(request_line: &str) -> (&'static str, String) {
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let admin = format!("/admin/realms/{REALM}/users");
    if path.ends_with("/protocol/openid-connect/token") {
        let token = r#"{"access_token":"e30.e30.sig","expires_in":300,"token_type":"Bearer"}"#;
        return ("200 OK", token.into());
    }
    if path.ends_with("/.well-known/openid-configuration") {
        return (
            "200 OK",
            r#"{"issuer":"http://127.0.0.1/realms/bench"}"#.into(),
        );
    }
    if path == admin && method == "GET" {
        let name = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("username="))
            .unwrap_or("nobody");
        let user = format!(r#"[{{"id":"id-{name}","username":"{name}","enabled":true}}]"#);
        return ("200 OK", user);
    }
    if let Some(rest) = path.strip_prefix(&format!("{admin}/")) {
        if rest.ends_with("/credentials") {
            let now = chrono::Utc::now().timestamp_millis();
            return (
                "200 OK",
                format!(r#"[{{"type":"password","createdDate":{now}}}]"#),
            );
        }
        if rest.ends_with("/reset-password") && method == "PUT" {
            return ("204 No Content", String::new());
        }
    }
    ("404 Not Found", r#"{"error":"HTTP 404 Not Found"}"#.into())
}

// --- ours --------------------------------------------------------------------------------

fn ours(dir: &Path, port: u16) -> ResilientClient {
    let yaml = format!(
        "keycloak:\n  server_url: http://127.0.0.1:{port}\n  realm: {REALM}\n  client_id: webapp\n  admin_client_id: sync\n  admin_client_secret: bench-secret\n  timeout_seconds: 10\nstorage:\n  path: {}\n",
        dir.join("data").display()
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).expect("config");
    ResilientClient::new(Config::load(&path).expect("config loads")).expect("client")
}

fn fill_ours(client: &ResilientClient, users: &[String]) {
    let changes: Vec<QueuedChange> = users
        .iter()
        .map(|u| QueuedChange {
            username: u.clone(),
            package: "web".into(),
            sync_type: "password_change".into(),
            sync_data: serde_json::json!({"new_password": "Bench-Password-1"}),
            priority: 5,
        })
        .collect();
    client.queue_sync_many(&changes).expect("enqueue");
}

// --- the reference -----------------------------------------------------------------------

fn reference(path: &Path) -> Connection {
    let c = Connection::open(path).expect("open sqlite");
    c.pragma_update(None, "journal_mode", "WAL").expect("WAL");
    c.pragma_update(None, "synchronous", "FULL").expect("FULL");
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS sync_queue (id INTEGER PRIMARY KEY AUTOINCREMENT, sync_id TEXT UNIQUE NOT NULL, username TEXT NOT NULL, package TEXT NOT NULL, sync_type TEXT NOT NULL, sync_data TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 5, status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, queued_at TEXT NOT NULL, processed_at TEXT);
         CREATE INDEX IF NOT EXISTS idx_sync_queue_status ON sync_queue (status, priority, queued_at);",
    )
    .expect("schema");
    c
}

fn fill_reference(c: &mut Connection, users: &[String]) {
    let tx = c.transaction().expect("tx");
    for u in users {
        tx.execute(
            "INSERT INTO sync_queue (sync_id, username, package, sync_type, sync_data, queued_at) VALUES (?1, ?2, 'web', 'password_change', ?3, ?4)",
            (
                uuid::Uuid::new_v4().to_string(),
                u,
                r#"{"new_password": "Bench-Password-1"}"#,
                chrono::Utc::now().to_rfc3339(),
            ),
        )
        .expect("insert");
    }
    tx.commit().expect("commit");
}

/// One reference cycle of up to `batch` items; how many it completed.
fn drain_reference(c: &Connection, port: u16, batch: usize) -> usize {
    // A new connection per request, as urllib makes them.
    let http = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("http");
    let base = format!("http://127.0.0.1:{port}");
    let token: serde_json::Value = http
        .post(format!(
            "{base}/realms/{REALM}/protocol/openid-connect/token"
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "sync"),
            ("client_secret", "bench-secret"),
        ])
        .send()
        .and_then(|r| r.json())
        .expect("admin token");
    let bearer = token["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut select = c
        .prepare("SELECT id, username, sync_data FROM sync_queue WHERE status = 'pending' ORDER BY priority, queued_at LIMIT ?1")
        .expect("select");
    let items: Vec<(i64, String, String)> = select
        .query_map([batch as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let mut done = 0;
    for (id, username, data) in items {
        let users: serde_json::Value = http
            .get(format!("{base}/admin/realms/{REALM}/users"))
            .query(&[("username", username.as_str()), ("exact", "true")])
            .bearer_auth(&bearer)
            .send()
            .and_then(|r| r.json())
            .expect("search");
        let user_id = users[0]["id"].as_str().unwrap_or_default().to_string();
        let data: serde_json::Value = serde_json::from_str(&data).expect("data");
        let reset = http
            .put(format!("{base}/admin/realms/{REALM}/users/{user_id}/reset-password"))
            .bearer_auth(&bearer)
            .json(&serde_json::json!({"type": "password", "value": data["new_password"], "temporary": false}))
            .send()
            .expect("reset");
        assert!(reset.status().is_success(), "reset refused");
        c.execute(
            "UPDATE sync_queue SET status = 'completed', processed_at = ?1 WHERE id = ?2",
            (chrono::Utc::now().to_rfc3339(), id),
        )
        .expect("update");
        done += 1;
    }
    done
}

// --- the table ---------------------------------------------------------------------------

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[path = "support/summary.rs"]
mod summary;

fn main() {
    let requests = Arc::new(AtomicUsize::new(0));
    let port = serve(requests.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let client = ours(dir.path(), port);
    let mut sqlite = reference(&dir.path().join("reference.db"));
    let mut next_user = 0;
    let mut users = |n: usize| -> Vec<String> {
        let names = (next_user..next_user + n)
            .map(|i| format!("user{i:07}"))
            .collect();
        next_user += n;
        names
    };
    println!("| batch | ours, items/s | requests/item | SQLite reference, items/s | requests/item | ours / reference |");
    println!("|---|---|---|---|---|---|");
    for batch in [100, 1000] {
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        let (mut mine_requests, mut their_requests) = (0, 0);
        for _ in 0..ROUNDS {
            fill_ours(&client, &users(batch));
            let before = requests.load(Ordering::Relaxed);
            let started = Instant::now();
            let report = client.process_sync_queue(batch).expect("cycle");
            mine.push(report.completed as f64 / started.elapsed().as_secs_f64());
            assert_eq!(report.completed, batch, "{report:?}");
            mine_requests += requests.load(Ordering::Relaxed) - before;

            fill_reference(&mut sqlite, &users(batch));
            let before = requests.load(Ordering::Relaxed);
            let started = Instant::now();
            let done = drain_reference(&sqlite, port, batch);
            theirs.push(done as f64 / started.elapsed().as_secs_f64());
            assert_eq!(done, batch);
            their_requests += requests.load(Ordering::Relaxed) - before;
        }
        let per_item = |n: usize| n as f64 / (ROUNDS * batch) as f64;
        let (m, t) = (median(mine), median(theirs));
        println!(
            "| {batch} | {m:.0} | {:.2} | {t:.0} | {:.2} | {:.2} |",
            per_item(mine_requests),
            per_item(their_requests),
            m / t
        );
        summary::row(
            &format!("drain, items/s, batch {batch}"),
            &format!("{:.2}", m / t),
            "≥ 2",
        );
    }
    println!("(Keycloak look-alike with {SERVICE_MS} ms per request; medians of {ROUNDS} interleaved rounds)");
}
