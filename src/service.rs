//! `start`: the long-running loop.
//!
//! Two threads. The health thread probes Keycloak every `health_check_cache_seconds` (through
//! the breaker, so an open circuit is not hammered) and reports when Keycloak comes back. The
//! main thread runs a sync cycle every `sync_interval_seconds` and at once on such a report, and
//! a cleanup every `cleanup_interval_seconds`. The stop signal is a parameter (the binary wires
//! it to SIGINT/SIGTERM, tests pass their own); a cycle checks it between items, so the item in
//! flight finishes and the rest stay pending. `run` returns once both threads are done.

use crate::auth::Auth;
use crate::client::ResilientClient;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Cached tokens older than this are removed by the loop's cleanup (as `cleanup`'s default).
pub const CLEANUP_TOKEN_HOURS: u64 = 48;
/// Finished sync items older than this are removed by the loop's cleanup.
pub const CLEANUP_SYNC_DAYS: u64 = 7;
/// How often the loops look at the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// Runs until `stop` becomes true. Writes the banner and one line per event to `out`.
pub fn run(client: &ResilientClient, stop: Arc<AtomicBool>, out: &mut dyn Write) -> anyhow::Result<()> {
    let cfg = client.config().clone();
    let status = client.get_status()?;
    writeln!(out, "keycloak-resilient {} starting", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, "  keycloak:         {} (realm {})", cfg.keycloak.server_url, cfg.keycloak.realm)?;
    writeln!(out, "  data:             {}", client.store().path().display())?;
    writeln!(out, "  sync interval:    {}s", cfg.service.sync_interval.as_secs())?;
    writeln!(out, "  batch size:       {}", cfg.service.batch_size)?;
    writeln!(out, "  cleanup interval: {}s", cfg.service.cleanup_interval.as_secs())?;
    writeln!(
        out,
        "  status:           mode {}, circuit {}, {} pending sync(s), {} cached token(s)",
        status.mode.as_str(),
        status.circuit_state,
        status.pending_syncs,
        status.cached_tokens
    )?;
    if !status.available {
        writeln!(
            out,
            "  Keycloak is unavailable ({}): running {}; logins use {}",
            status.unavailable_reason.as_deref().unwrap_or("unknown"),
            status.mode.as_str(),
            if status.mode.as_str() == "degraded" { "cached tokens and local auth" } else { "local auth only" }
        )?;
    }
    writeln!(out, "  stop with Ctrl-C or SIGTERM")?;
    out.flush()?;

    let (came_back_tx, came_back) = mpsc::channel::<()>();
    let health = {
        let client = client.clone();
        let stop = stop.clone();
        let every = cfg.resilience.health_check_cache.max(Duration::from_secs(1));
        std::thread::Builder::new()
            .name("health".into())
            .spawn(move || health_loop(&client, &stop, every, came_back_tx))?
    };

    let auth = Auth::new(client.clone());
    let mut next_sync = Instant::now();
    let mut next_cleanup = Instant::now() + cfg.service.cleanup_interval;
    let mut result = Ok(());
    while !stop.load(Ordering::SeqCst) {
        let mut due = Instant::now() >= next_sync;
        if came_back.try_recv().is_ok() {
            writeln!(out, "Keycloak is back: syncing now")?;
            due = true;
        }
        if due {
            next_sync = Instant::now() + cfg.service.sync_interval;
            let stop_flag = stop.clone();
            match client.process_sync_queue_until(cfg.service.batch_size, &move || stop_flag.load(Ordering::SeqCst)) {
                Ok(r) if r.processed > 0 || r.released > 0 => writeln!(
                    out,
                    "sync: {} processed ({} completed, {} failed, {} retried){}",
                    r.processed,
                    r.completed,
                    r.failed,
                    r.retried,
                    r.stopped.map(|s| format!("; stopped: {s}")).unwrap_or_default()
                )?,
                Ok(_) => {}
                Err(e) => {
                    result = Err(anyhow::Error::new(e).context("sync cycle"));
                    break;
                }
            }
            out.flush()?;
        }
        if Instant::now() >= next_cleanup {
            next_cleanup = Instant::now() + cfg.service.cleanup_interval;
            let tokens = client.cleanup_expired_tokens(CLEANUP_TOKEN_HOURS)?;
            let syncs = client.cleanup_completed_syncs(CLEANUP_SYNC_DAYS)?;
            let sessions = auth.sessions().cleanup()?;
            auth.events().cleanup()?;
            if tokens + syncs + sessions > 0 {
                writeln!(
                    out,
                    "cleanup: removed {tokens} cached token(s), {syncs} finished sync item(s), {sessions} expired session(s)"
                )?;
            }
        }
        std::thread::sleep(TICK);
    }
    stop.store(true, Ordering::SeqCst);
    if health.join().is_err() {
        log::error!("health thread panicked");
    }
    client.store().flush()?;
    writeln!(out, "stopped")?;
    result
}

fn health_loop(client: &ResilientClient, stop: &AtomicBool, every: Duration, came_back: mpsc::Sender<()>) {
    let mut was_available = client.is_available();
    let mut next = Instant::now() + every;
    while !stop.load(Ordering::SeqCst) {
        if Instant::now() >= next {
            let available = client.is_available();
            if available && !was_available {
                log::info!("Keycloak is reachable again");
                let _ = came_back.send(());
            } else if !available && was_available {
                log::warn!("Keycloak became unreachable: {}", client.unavailable_reason());
            }
            was_available = available;
            next = Instant::now() + every;
        }
        std::thread::sleep(TICK);
    }
}
