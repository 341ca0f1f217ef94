//! Durable enqueue against a SQLite reference (issue 17 points 1 and 5): items/s with the queue
//! already holding 10 000 and 100 000 items, one client and eight, side by side in one run.
//!
//! The reference is what a careful user of the original design would write: SQLite in WAL
//! mode, its two tables (`sync_queue`, `sync_log`) and the index on status, priority and queue
//! time, `synchronous=FULL`, one commit per item, eight clients as eight connections. Ours is
//! [`SyncQueue::enqueue`] on a data directory: sealed data, supersede check, indexes, and a
//! flush that is durable after power loss (sled's flush and an `fdatasync`, shared by
//! concurrent writers). A third row sends the same items as batches of 100 through
//! [`SyncQueue::enqueue_many`] (the library's `queue_sync_many`): one flush a batch.
//!
//! Each measured round enqueues [`PER_ROUND`] items per mode, modes interleaved, [`ROUNDS`]
//! rounds; the table shows medians. `cargo bench --bench enqueue` prints one Markdown table.

use keycloak_resilient::clock::SystemClock;
use keycloak_resilient::store::Store;
use keycloak_resilient::sync_queue::{SyncData, SyncQueue};
use keycloak_resilient::Account;
use rusqlite::Connection;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const ROUNDS: usize = 5;
const PER_ROUND: usize = 800;
const CLIENTS: usize = 8;
const BATCH: usize = 100;

fn data() -> SyncData {
    SyncData::parse(
        "password_change",
        &serde_json::json!({"new_password": "Bench-Password-1"}),
    )
    .expect("bench data parses")
}

fn acct(i: usize) -> Account {
    Account::new(format!("user{i}"), "web").expect("bench names pass the rule")
}

// --- the reference -----------------------------------------------------------------------

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sync_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sync_id TEXT UNIQUE NOT NULL,
    username TEXT NOT NULL,
    package TEXT NOT NULL,
    sync_type TEXT NOT NULL,
    sync_data TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 5,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    queued_at TEXT NOT NULL,
    processed_at TEXT
);
CREATE INDEX IF NOT EXISTS idx_sync_queue_status
    ON sync_queue (status, priority, queued_at);
CREATE TABLE IF NOT EXISTS sync_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sync_id TEXT NOT NULL,
    event TEXT NOT NULL,
    at TEXT NOT NULL
);";

fn reference(path: &Path) -> Connection {
    let c = Connection::open(path).expect("open sqlite");
    c.busy_timeout(std::time::Duration::from_secs(30))
        .expect("busy timeout");
    c.pragma_update(None, "journal_mode", "WAL").expect("WAL");
    c.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous");
    c.execute_batch(SCHEMA).expect("schema");
    c
}

fn reference_insert(c: &Connection, i: usize) {
    c.execute(
        "INSERT INTO sync_queue (sync_id, username, package, sync_type, sync_data, priority, queued_at) VALUES (?1, ?2, 'web', 'password_change', ?3, 5, ?4)",
        (
            uuid::Uuid::new_v4().to_string(),
            format!("user{i}"),
            r#"{"new_password": "Bench-Password-1"}"#,
            chrono::Utc::now().to_rfc3339(),
        ),
    )
    .expect("insert");
}

fn reference_fill(path: &Path, n: usize) {
    let mut c = reference(path);
    let tx = c.transaction().expect("tx");
    for i in 0..n {
        reference_insert(&tx, i);
    }
    tx.commit().expect("commit");
}

// --- the measured modes --------------------------------------------------------------------

/// Items/s of `per_client` enqueues on each of `clients` threads, `op(client, i)` each.
fn rate(clients: usize, per_client: usize, op: impl Fn(usize, usize) + Sync) -> f64 {
    let started = Instant::now();
    std::thread::scope(|s| {
        for c in 0..clients {
            let op = &op;
            s.spawn(move || {
                for i in 0..per_client {
                    op(c, i);
                }
            });
        }
    });
    (clients * per_client) as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Row {
    size: usize,
    what: &'static str,
    ours: f64,
    reference: f64,
}

/// Disk the queue takes once it holds `size` items.
struct Disk {
    size: usize,
    ours: u64,
    reference: u64,
}

/// Bytes allocated on disk under `path` (a file, or a folder and everything in it).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.blocks() * 512;
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| allocated(&e.path())).sum())
        .unwrap_or(0)
}

fn measure(size: usize) -> (Vec<Row>, Disk) {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = SyncQueue::new(
        Arc::new(Store::open(&dir.path().join("data")).expect("open store")),
        Arc::new(SystemClock),
    );
    let mut filled = 0;
    while filled < size {
        let n = (size - filled).min(1000);
        let batch = (filled..filled + n).map(|i| (acct(i), data(), 5)).collect();
        queue.enqueue_many(batch).expect("fill");
        filled += n;
    }
    let sqlite = dir.path().join("reference.db");
    reference_fill(&sqlite, size);
    // Measured after the fill (each enqueue_many batch was flushed), before the rounds.
    let disk = Disk {
        size,
        ours: allocated(&dir.path().join("data")),
        reference: ["reference.db", "reference.db-wal", "reference.db-shm"]
            .iter()
            .map(|f| allocated(&dir.path().join(f)))
            .sum(),
    };
    // rusqlite's Connection is Send, not Sync: each client has its own, as processes would.
    let connections: Vec<_> = (0..CLIENTS)
        .map(|_| std::sync::Mutex::new(reference(&sqlite)))
        .collect();
    let insert = |c: usize, i: usize| {
        let conn = connections[c].lock().expect("connection");
        reference_insert(&conn, i);
    };
    // Users beyond the filled ones, so that nothing supersedes anything.
    let next = std::sync::atomic::AtomicUsize::new(size);
    let fresh = || next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut samples: [(Vec<f64>, Vec<f64>); 3] = Default::default();
    for _ in 0..ROUNDS {
        let one = &mut samples[0];
        one.0.push(rate(1, PER_ROUND, |_, _| {
            queue
                .enqueue(&acct(fresh()), data(), 5, None)
                .expect("enqueue");
        }));
        one.1.push(rate(1, PER_ROUND, |_, _| insert(0, fresh())));
        let eight = &mut samples[1];
        eight.0.push(rate(CLIENTS, PER_ROUND / CLIENTS, |_, _| {
            queue
                .enqueue(&acct(fresh()), data(), 5, None)
                .expect("enqueue");
        }));
        eight.1.push(rate(CLIENTS, PER_ROUND / CLIENTS, |c, _| {
            insert(c, fresh())
        }));
        samples[2].0.push(
            rate(1, PER_ROUND / BATCH, |_, _| {
                let batch = (0..BATCH).map(|_| (acct(fresh()), data(), 5)).collect();
                queue.enqueue_many(batch).expect("enqueue_many");
            }) * BATCH as f64,
        );
        let reference_one = *samples[0].1.last().expect("this round's sample");
        samples[2].1.push(reference_one);
    }
    let what = ["1 client", "8 clients", "1 client, batches of 100"];
    let rows = samples
        .into_iter()
        .zip(what)
        .map(|((ours, reference), what)| Row {
            size,
            what,
            ours: median(ours),
            reference: median(reference),
        })
        .collect();
    (rows, disk)
}

#[path = "support/summary.rs"]
mod summary;

fn main() {
    let (mut rows, mut disks) = (Vec::new(), Vec::new());
    for size in [10_000, 100_000] {
        let (measured, disk) = measure(size);
        rows.extend(measured);
        disks.push(disk);
    }
    println!(
        "| queue holds | enqueue | ours, items/s | SQLite reference, items/s | ours / reference |"
    );
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} |",
            r.size,
            r.what,
            r.ours,
            r.reference,
            r.ours / r.reference
        );
        summary::row(
            &format!("durable enqueue into {}, {}", r.size, r.what),
            &format!("{:.2}", r.ours / r.reference),
            "≥ 2",
        );
    }
    println!(
        "(durable: ours sled flush + fdatasync, the reference synchronous=FULL; one commit per item unless batched; medians of {ROUNDS} interleaved rounds of {PER_ROUND} items; the reference's batched row is its one-commit-per-item rate)"
    );
    println!();
    println!("| queue holds | disk, ours | disk, SQLite reference | ours / reference |");
    println!("|---|---|---|---|");
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    for d in disks {
        println!(
            "| {} | {:.1} MiB | {:.1} MiB | {:.2} |",
            d.size,
            mib(d.ours),
            mib(d.reference),
            d.ours as f64 / d.reference as f64
        );
        summary::row(
            &format!("disk once {} items are queued", d.size),
            &format!("{:.2}", d.ours as f64 / d.reference as f64),
            "≤ 2",
        );
    }
}
