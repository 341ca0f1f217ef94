//! `start`: the long-running loop.
//!
//! Two threads. The health thread probes Keycloak every `health_check_cache_seconds` (through
//! the breaker, so an open circuit is not hammered), makes the half-open trial as soon as it is
//! due (no login does while the service runs), and reports when Keycloak comes back. The
//! main thread runs a sync cycle every `sync_interval_seconds` and at once on such a report, and
//! a cleanup every `cleanup_interval_seconds`, a reconcile with Keycloak's user list every
//! `keycloak.reconcile_interval_seconds` ([`crate::reconcile`]); between them it keeps the realm keys
//! ([`crate::verify::upkeep`]) and refreshes cached tokens ahead of expiry
//! ([`crate::refresh_ahead`]). The stop signal is a parameter (the binary wires
//! it to SIGINT/SIGTERM, tests pass their own); a cycle checks it between items, so the item in
//! flight finishes and the rest stay pending. `run` returns once both threads are done.

use crate::auth::Auth;
use crate::client::ResilientClient;
use crate::store::space::{self, Disk, DiskWatch};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Cached tokens older than this are removed by the loop's cleanup (as `cleanup`'s default).
pub const CLEANUP_TOKEN_HOURS: u64 = 48;
/// Finished sync items older than this are removed by the loop's cleanup.
pub const CLEANUP_SYNC_DAYS: u64 = 7;
/// Failed sync items older than this are removed by the loop's cleanup (as `cleanup`'s
/// default `--failed-days`).
pub const CLEANUP_FAILED_DAYS: u64 = 30;
/// How often the loops look at the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// Why [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// `stop` became true.
    Stopped,
    /// The database met a full disk and space is back: the caller closes it and opens it
    /// again ([`crate::store::space`]), then runs the loop anew.
    Reopen,
}

/// Runs until `stop` becomes true, or until the database must be reopened after a full disk.
/// Writes the banner and one line per event to `out`. `socket` is shown in the banner when
/// one-shot commands are served beside the loop.
pub fn run(
    client: &ResilientClient,
    stop: Arc<AtomicBool>,
    socket: Option<&std::path::Path>,
    out: &mut dyn Write,
) -> anyhow::Result<Ended> {
    banner(client, socket, out)?;

    // The health thread makes the half-open trial from now on: no login pays for it.
    client.keycloak().set_background_trials(true);
    let (came_back_tx, came_back) = mpsc::channel::<()>();
    let health = {
        let client = client.clone();
        let stop = stop.clone();
        let every = client
            .config()
            .resilience
            .health_check_cache
            .max(Duration::from_secs(1));
        std::thread::Builder::new()
            .name("health".into())
            .spawn(move || health_loop(&client, &stop, every, came_back_tx))?
    };

    let result = main_loop(client, &stop, &came_back, out);
    stop.store(true, Ordering::SeqCst);
    if health.join().is_err() {
        log::error!("health thread panicked");
    }
    client.keycloak().set_background_trials(false);
    if let Ok(Ended::Reopen) = result {
        // This database cannot write any more (that is why it is reopened): nothing to flush.
        say(
            out,
            format_args!("reopening the database: space is free again"),
        );
        return result;
    }
    client.store().flush()?;
    say(out, format_args!("stopped"));
    result
}

/// The text banner: what runs, where, and the state it starts in.
fn banner(
    client: &ResilientClient,
    socket: Option<&std::path::Path>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let cfg = client.config();
    let status = client.get_status()?;
    writeln!(
        out,
        "keycloak-resilient {} starting",
        env!("CARGO_PKG_VERSION")
    )?;
    writeln!(
        out,
        "  keycloak:         {} (realm {})",
        cfg.keycloak.server_url, cfg.keycloak.realm
    )?;
    writeln!(
        out,
        "  data:             {}",
        client.store().path().display()
    )?;
    writeln!(
        out,
        "  sync interval:    {}s",
        cfg.service.sync_interval.as_secs()
    )?;
    writeln!(out, "  batch size:       {}", cfg.service.batch_size)?;
    if let Some(socket) = socket {
        writeln!(out, "  control socket:   {}", socket.display())?;
    }
    writeln!(
        out,
        "  cleanup interval: {}s",
        cfg.service.cleanup_interval.as_secs()
    )?;
    let reconcile = cfg.consistency.reconcile_interval.as_secs();
    if reconcile == 0 {
        writeln!(out, "  reconcile:        off")?;
    } else {
        writeln!(out, "  reconcile every:  {reconcile}s")?;
    }
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
            if status.mode.as_str() == "degraded" {
                "cached tokens and local auth"
            } else {
                "local auth only"
            }
        )?;
    }
    writeln!(out, "  stop with Ctrl-C or SIGTERM")?;
    out.flush()?;
    Ok(())
}

/// Writes one event line. stdout going away (a closed pipe, a full disk behind a redirect) must
/// not stop the service: the line is dropped and logging carries on.
fn say(out: &mut dyn Write, line: std::fmt::Arguments<'_>) {
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        log::debug!("could not write to stdout: {line}");
    }
}

fn main_loop(
    client: &ResilientClient,
    stop: &Arc<AtomicBool>,
    came_back: &mpsc::Receiver<()>,
    out: &mut dyn Write,
) -> anyhow::Result<Ended> {
    let cfg = client.config();
    let auth = Auth::new(client.clone());
    let mut disk = DiskWatch::default();
    let store = client.store();
    let mut next_sync = Instant::now();
    let mut next_cleanup = Instant::now() + cfg.service.cleanup_interval;
    let reconcile_every = cfg.consistency.reconcile_interval;
    let mut next_reconcile = Instant::now() + reconcile_every;
    let mut reconcile_stopped: Option<String> = None;
    let mut keys = crate::verify::upkeep::KeysUpkeep::default();
    let mut refresh_ahead = crate::refresh_ahead::RefreshAhead::default();
    while !stop.load(Ordering::SeqCst) {
        match disk.tick(
            Instant::now(),
            || store.flush_hits_full_disk(),
            || space::takes_writes(store.path()),
        ) {
            Disk::Fine => {}
            // Nothing that writes can work: requests still get their one-line error.
            Disk::Stuck => {
                std::thread::sleep(TICK);
                continue;
            }
            Disk::Reopen => return Ok(Ended::Reopen),
        }
        let mut due = Instant::now() >= next_sync;
        if came_back.try_recv().is_ok() {
            say(out, format_args!("Keycloak is back: syncing now"));
            due = true;
        }
        if due {
            next_sync = Instant::now() + cfg.service.sync_interval;
            sync_cycle(&auth, stop, out);
        }
        if Instant::now() >= next_cleanup {
            next_cleanup = Instant::now() + cfg.service.cleanup_interval;
            match cleanup(client, &auth) {
                Ok((tokens, syncs, sessions)) if tokens + syncs + sessions > 0 => say(
                    out,
                    format_args!(
                        "cleanup: removed {tokens} cached token(s), {syncs} finished sync item(s), {sessions} expired session(s)"
                    ),
                ),
                Ok(_) => {}
                Err(e) => log::error!("cleanup failed: {e:#}"),
            }
        }
        if !reconcile_every.is_zero() && Instant::now() >= next_reconcile {
            next_reconcile = Instant::now() + reconcile_every;
            match crate::reconcile::run(&auth) {
                Ok(r) if r.disabled + r.re_enabled + r.gone > 0 => say(
                    out,
                    format_args!(
                        "reconcile: {} checked, {} disabled, {} re-enabled, {} gone from Keycloak",
                        r.checked, r.disabled, r.re_enabled, r.gone
                    ),
                ),
                // Said once per reason, not every interval while Keycloak stays away.
                Ok(r) => {
                    if r.stopped.is_some() && r.stopped != reconcile_stopped {
                        log::info!("reconcile stopped: {}", r.stopped.as_deref().unwrap_or(""));
                    }
                    reconcile_stopped = r.stopped;
                }
                Err(e) => log::error!("reconcile failed: {e}"),
            }
        }
        // After the sync cycle, so that the first one still runs the moment the loop starts.
        for line in [keys.tick(client), refresh_ahead.tick(&auth)]
            .into_iter()
            .flatten()
        {
            say(out, format_args!("{line}"));
        }
        std::thread::sleep(TICK);
    }
    Ok(Ended::Stopped)
}

/// One sync cycle, then the metrics textfile. A failed cycle (a storage error) is logged and
/// tried again next interval: the service keeps logins and the health probe going.
fn sync_cycle(auth: &Auth, stop: &Arc<AtomicBool>, out: &mut dyn Write) {
    let client = auth.client();
    let cfg = client.config();
    let stop_flag = stop.clone();
    match client.process_sync_queue_until(cfg.service.batch_size, &move || {
        stop_flag.load(Ordering::SeqCst)
    }) {
        Ok(r) if r.processed > 0 || r.released > 0 => say(
            out,
            format_args!(
                "sync: {} processed ({} completed, {} failed, {} retried){}",
                r.processed,
                r.completed,
                r.failed,
                r.retried,
                r.stopped
                    .map(|s| format!("; stopped: {s}"))
                    .unwrap_or_default()
            ),
        ),
        Ok(_) => {}
        Err(e) => log::error!("sync cycle failed: {e}"),
    }
    if let Some(path) = &cfg.service.metrics_textfile {
        match crate::metrics::render(auth)
            .and_then(|text| crate::metrics::write_textfile(path, &text))
        {
            Ok(()) => {}
            Err(e) => log::error!("metrics textfile: {e:#}"),
        }
    }
}

fn cleanup(client: &ResilientClient, auth: &Auth) -> anyhow::Result<(usize, usize, usize)> {
    let tokens = client.cleanup_expired_tokens(CLEANUP_TOKEN_HOURS)?;
    let syncs = client.cleanup_completed_syncs(CLEANUP_SYNC_DAYS)?
        + client.cleanup_failed_syncs(CLEANUP_FAILED_DAYS)?;
    let sessions = auth.sessions().cleanup()?;
    auth.events().cleanup()?;
    Ok((tokens, syncs, sessions))
}

fn health_loop(
    client: &ResilientClient,
    stop: &AtomicBool,
    every: Duration,
    came_back: mpsc::Sender<()>,
) {
    // Nobody waits for this probe: it gets the full timeout, so that a restarted Keycloak's
    // slow first answer still closes the circuit. It runs every `every`, and at once when the
    // half-open trial is due (which only this thread makes while it runs).
    let kc = client.keycloak();
    let probe = || kc.available_within(kc.timeout());
    let mut was_available = probe();
    let mut next = Instant::now() + every;
    while !stop.load(Ordering::SeqCst) {
        if Instant::now() >= next || kc.trial_due() {
            let available = probe();
            if available && !was_available {
                log::info!("Keycloak is reachable again");
                let _ = came_back.send(());
            } else if !available && was_available {
                log::warn!(
                    "Keycloak became unreachable: {}",
                    client.unavailable_reason()
                );
            }
            was_available = available;
            next = Instant::now() + every;
        }
        std::thread::sleep(TICK);
    }
}
