//! Hot paths measured side by side in one run, reported as ratios (absolute times on a shared
//! 2-core machine are noise; ratios measured interleaved are not).
//!
//! Run: `cargo bench --bench hot_paths`. What each row should show:
//! - unknown user vs known user, wrong password: ≈ 1.0 (no user enumeration by timing);
//! - locked account vs known user, wrong password: ≈ 1.0;
//! - offline login (local verify + cached token) vs a bare local verify: ≈ 1.0 — the cache's
//!   verifier is the local hash, so the login path pays one argon2 run, not two;
//! - claim 100 from a 10 000-item queue vs from a 100-item queue: ≈ 1.0 (the order index gives
//!   the next batch without a scan);
//! - queue counts (what `status` shows) and the first page of `queue` at 100 000 vs 10 000
//!   items: ≈ 1.0 (per-status counters; pages read only what they show).
//!
//! The last line is the process's RSS after all of it (some 200 argon2 runs, 10 000 queued
//! items): argon2's working memory is a fixed set of buffers, one per core, so it stays in the
//! tens of MiB (it was over 1 GiB when every run allocated its own 19 MiB).

use keycloak_resilient::clock::{SharedClock, SystemClock};
use keycloak_resilient::local_users::{LocalUsers, Verification};
use keycloak_resilient::lockout::LockoutPolicy;
use keycloak_resilient::store::Store;
use keycloak_resilient::sync_queue::{SyncData, SyncQueue};
use keycloak_resilient::{Account, Auth, Config, ResilientClient};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The account of `user` in `package` (the bench's names are good names).
fn acct(user: &str, package: &str) -> Account {
    Account::new(user, package).expect("a bench account's names pass the rule")
}

fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// Runs `a` and `b` alternately `rounds` times; returns (mean a, mean b).
fn interleaved(rounds: u32, mut a: impl FnMut(), mut b: impl FnMut()) -> (Duration, Duration) {
    let (mut ta, mut tb) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let t = Instant::now();
        a();
        ta += t.elapsed();
        let t = Instant::now();
        b();
        tb += t.elapsed();
    }
    (ta / rounds, tb / rounds)
}

fn row(name: &str, (a, b): (Duration, Duration)) {
    println!(
        "| {name:<62} | {:>10.3} ms | {:>10.3} ms | {:>6.2} |",
        a.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3,
        a.as_secs_f64() / b.as_secs_f64().max(1e-12)
    );
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> anyhow::Result<()> {
    println!(
        "| {:<62} | {:>13} | {:>13} | {:>6} |",
        "A vs B", "A", "B", "A/B"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(64),
        "-".repeat(15),
        "-".repeat(15),
        "-".repeat(8)
    );

    // The primitive under the timing-safety rows.
    let real = keycloak_resilient::password::hash("some-password")?;
    keycloak_resilient::password::verify_dummy("warm-up");
    row(
        "argon2id: dummy verify vs verify against a stored hash",
        interleaved(
            20,
            || keycloak_resilient::password::verify_dummy("wrong"),
            || {
                let _ = keycloak_resilient::password::verify("wrong", &real);
            },
        ),
    );

    // Local verification: known, unknown, locked.
    let store = Arc::new(Store::temporary()?);
    let policy = LockoutPolicy {
        max_failures: 3,
        window: Duration::from_secs(3600),
        lockout: Duration::from_secs(3600),
    };
    let users = LocalUsers::new(store.clone(), clock(), policy);
    users.add(&acct("known", "web"), "right-password")?;
    users.add(&acct("locked", "web"), "right-password")?;
    for _ in 0..3 {
        users.verify(&acct("locked", "web"), "wrong")?;
    }
    assert!(matches!(
        users.verify(&acct("locked", "web"), "right-password")?,
        Verification::Locked { .. }
    ));
    // Locking off here, so that "known" keeps answering "invalid" rather than "locked".
    let no_lock = LocalUsers::new(
        store.clone(),
        clock(),
        LockoutPolicy {
            max_failures: 0,
            ..policy
        },
    );
    row(
        "local verify: unknown user vs known user (wrong password)",
        interleaved(
            20,
            || drop(no_lock.verify(&acct("nobody", "web"), "wrong")),
            || drop(no_lock.verify(&acct("known", "web"), "wrong")),
        ),
    );
    no_lock.verify(&acct("known", "web"), "right-password")?;
    row(
        "local verify: locked user vs known user (right password)",
        interleaved(
            20,
            || drop(users.verify(&acct("locked", "web"), "right-password")),
            || drop(users.verify(&acct("known", "web"), "right-password")),
        ),
    );

    // Offline login: local verify + cached token lookup vs a bare local verify.
    let dir = tempfile::tempdir()?;
    let yaml = "keycloak:\n  server_url: http://127.0.0.1:9\n  realm: bench\n  client_id: webapp\n  connect_timeout_seconds: 1\n  timeout_seconds: 1\n  resilience:\n    health_check_cache_seconds: 3600\n";
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml)?;
    let auth = Auth::new(ResilientClient::new(Config::load(&path)?)?);
    auth.users().add(&acct("alice", "web"), "right-password")?;
    let first = auth.login(&acct("alice", "web"), "right-password")?; // probes once, then cached "down"
    assert!(first.success);
    row(
        "login while Keycloak is down vs bare local verify",
        interleaved(
            20,
            || drop(auth.login(&acct("alice", "web"), "right-password")),
            || drop(auth.users().verify(&acct("alice", "web"), "right-password")),
        ),
    );

    // Queue: claim a batch from a large vs a small queue; enqueue latency (flushed).
    let qdir = tempfile::tempdir()?;
    let big = SyncQueue::new(Arc::new(Store::open(&qdir.path().join("big"))?), clock());
    let small = SyncQueue::new(Arc::new(Store::open(&qdir.path().join("small"))?), clock());
    let data = SyncData::parse(
        "password_change",
        &serde_json::json!({"new_password": "Bench-Password-1"}),
    )?;
    for i in 0..10_000u32 {
        big.enqueue(
            &acct(&format!("user{i}"), "web"),
            data.clone(),
            1 + i % 9,
            None,
        )?;
    }
    for i in 0..100u32 {
        small.enqueue(
            &acct(&format!("user{i}"), "web"),
            data.clone(),
            1 + i % 9,
            None,
        )?;
    }
    let claim = |q: &SyncQueue| {
        let got = q.claim(100).expect("claim");
        for c in got {
            c.release(None).expect("release");
        }
    };
    row(
        "claim+release 100: queue of 10 000 vs queue of 100",
        interleaved(10, || claim(&big), || claim(&small)),
    );
    // Let sled settle after the bulk load (its background flusher and segment cleaner), so the
    // row measures enqueue rather than the tail of the load.
    for _ in 0..5 {
        drop(big.enqueue(
            &acct(&format!("warm-{}", uuid::Uuid::new_v4()), "web"),
            data.clone(),
            5,
            None,
        ));
        drop(small.enqueue(
            &acct(&format!("warm-{}", uuid::Uuid::new_v4()), "web"),
            data.clone(),
            5,
            None,
        ));
    }
    std::thread::sleep(Duration::from_secs(1));
    row(
        "enqueue (flushed) into 10 000 vs into 100",
        interleaved(
            50,
            || {
                drop(big.enqueue(
                    &acct(&format!("extra-{}", uuid::Uuid::new_v4()), "web"),
                    data.clone(),
                    5,
                    None,
                ))
            },
            || {
                drop(small.enqueue(
                    &acct(&format!("extra-{}", uuid::Uuid::new_v4()), "web"),
                    data.clone(),
                    5,
                    None,
                ))
            },
        ),
    );
    // Counts (what `status` and `queue` print): kept in counters, so a queue ten times larger
    // costs the same. (They decoded every item before: 6x at 100 000 vs 10 000.)
    let counted = |n: u32| -> anyhow::Result<SyncQueue> {
        let q = SyncQueue::new(Arc::new(Store::temporary()?), clock());
        for i in 0..n {
            q.enqueue(
                &acct(&format!("user{i}"), "web"),
                data.clone(),
                1 + i % 9,
                None,
            )?;
        }
        q.counts()?;
        Ok(q)
    };
    let (q100k, q10k) = (counted(100_000)?, counted(10_000)?);
    row(
        "queue counts (status): 100 000 items vs 10 000 items",
        interleaved(
            200,
            || {
                std::hint::black_box(q100k.counts().expect("counts"));
            },
            || {
                std::hint::black_box(q10k.counts().expect("counts"));
            },
        ),
    );
    row(
        "queue first page of 100: 100 000 items vs 10 000 items",
        interleaved(
            50,
            || drop(q100k.page(None, 100).expect("page")),
            || drop(q10k.page(None, 100).expect("page")),
        ),
    );
    drop((q100k, q10k));
    if let Some(rss) = rss_kib() {
        println!(
            "\nprocess RSS at the end (10 000+ queued items, 16 MiB sled cache): {} MiB",
            rss / 1024
        );
    }
    Ok(())
}
