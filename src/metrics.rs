//! Prometheus text exposition (format 0.0.4) of the tool's state and counters.
//!
//! `metrics` prints it; `metrics --textfile PATH` writes it for node_exporter's textfile
//! collector atomically (temp file in the same directory, then rename), so the collector never
//! reads half a file. The file is 0644 whatever the umask: node_exporter (another user) must
//! read it, and nobody but us may write it (a writable textfile lets anyone fake the
//! monitoring).

use crate::auth::Auth;
use crate::keycloak::breaker::CircuitState;
use crate::keycloak::durations::CallDurations;
use crate::store::meta::{Counter, MetaKey};
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
    let _ = writeln!(out, "# HELP keycloak_resilient_{name} {help}");
    let _ = writeln!(out, "# TYPE keycloak_resilient_{name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "keycloak_resilient_{name}{labels} {value}");
    }
}

/// A gauge per value of `label`, 1 for `current` and 0 for the others.
fn one_hot(out: &mut String, name: &str, help: &str, label: &str, values: &[&str], current: &str) {
    let samples: Vec<(String, f64)> = values
        .iter()
        .map(|v| (format!("{{{label}=\"{v}\"}}"), bool_value(*v == current)))
        .collect();
    let refs: Vec<(&str, f64)> = samples.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(out, name, "gauge", help, &refs);
}

/// Seconds from `then` to `now`, never negative (a clock set back shows 0, not a negative age).
fn age_seconds(now: DateTime<Utc>, then: DateTime<Utc>) -> f64 {
    ((now - then).num_milliseconds().max(0) as f64) / 1000.0
}

fn bool_value(v: bool) -> f64 {
    if v {
        1.0
    } else {
        0.0
    }
}

/// Renders every metric.
pub fn render(auth: &Auth) -> anyhow::Result<String> {
    let mut out = String::new();
    keycloak_gauges(&mut out, auth)?;
    local_gauges(&mut out, auth)?;
    counters(&mut out, auth)?;
    Ok(out)
}

/// Keycloak, the breaker, the mode and the queue, from the status block.
fn keycloak_gauges(out: &mut String, auth: &Auth) -> anyhow::Result<()> {
    let client = auth.client();
    let status = client.get_status()?;
    let (circuit, _) = client.circuit();
    let b = bool_value;
    metric(
        out,
        "keycloak_available",
        "gauge",
        "1 when Keycloak is reachable.",
        &[("", b(status.available))],
    );
    let states = [
        CircuitState::Closed,
        CircuitState::Open,
        CircuitState::HalfOpen,
    ];
    one_hot(
        out,
        "circuit_state",
        "Circuit breaker state (1 for the current one).",
        "state",
        &states.map(CircuitState::as_str),
        circuit.as_str(),
    );
    metric(
        out,
        "circuit_failures",
        "gauge",
        "Consecutive Keycloak availability failures.",
        &[("", status.failure_count as f64)],
    );
    one_hot(
        out,
        "mode",
        "Global mode (1 for the current one).",
        "mode",
        &["normal", "degraded", "offline"],
        status.mode.as_str(),
    );
    queue_gauges(out, client, &status)?;
    let refused = |client: &str| b(status.misconfigured.iter().any(|m| m.client == client));
    metric(
        out,
        "keycloak_misconfigured",
        "gauge",
        "1 while Keycloak refuses a client for our configuration (secret, grants, realm): login or admin.",
        &[
            ("{client=\"login\"}", refused("login")),
            ("{client=\"admin\"}", refused("admin")),
        ],
    );
    metric(
        out,
        "cached_tokens",
        "gauge",
        "Cached tokens inside the grace period.",
        &[("", status.cached_tokens as f64)],
    );
    Ok(())
}

/// The sync queue: items by status and type, the oldest one's age, the last good cycle, the
/// block.
fn queue_gauges(
    out: &mut String,
    client: &crate::client::ResilientClient,
    status: &crate::client::Status,
) -> anyhow::Result<()> {
    // One gauge family by status: `sync_failed` (a gauge) beside `sync_failed_total` (a
    // counter) would be one family to Prometheus' parser, and OpenMetrics refuses it.
    metric(
        out,
        "sync_items",
        "gauge",
        "Sync items by status: pending (waiting or in flight) and failed (refused for good).",
        &[
            ("{status=\"pending\"}", status.pending_syncs as f64),
            ("{status=\"failed\"}", status.failed_syncs as f64),
        ],
    );
    let waiting: Vec<(String, f64)> = client
        .queue()
        .waiting_by_type()?
        .into_iter()
        .map(|(t, n)| (format!("{{type=\"{}\"}}", t.as_str()), n as f64))
        .collect();
    let waiting: Vec<(&str, f64)> = waiting.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    metric(
        out,
        "sync_waiting",
        "gauge",
        "Sync items still waiting to reach Keycloak (pending or in flight), by sync type.",
        &waiting,
    );
    let now = client.clock().now();
    let oldest = client.queue().oldest_pending_queued_at()?;
    metric(
        out,
        "sync_oldest_pending_age_seconds",
        "gauge",
        "Age of the oldest sync item still waiting (0 when none waits).",
        &[("", oldest.map_or(0.0, |t| age_seconds(now, t)))],
    );
    let store = client.store();
    let last: Option<i64> = store.get_meta(MetaKey::LastSyncSuccess)?;
    metric(
        out,
        "sync_last_success_timestamp_seconds",
        "gauge",
        "When a sync cycle last settled every item it claimed with Keycloak's answer (0: never).",
        &[("", last.unwrap_or(0) as f64)],
    );
    metric(
        out,
        "sync_blocked",
        "gauge",
        "1 when the queue is blocked (admin credentials refused).",
        &[("", bool_value(status.queue_blocked.is_some()))],
    );
    Ok(())
}

/// Sessions and locked accounts.
fn local_gauges(out: &mut String, auth: &Auth) -> anyhow::Result<()> {
    metric(
        out,
        "active_sessions",
        "gauge",
        "Sessions not yet expired.",
        &[("", auth.sessions().active_count()? as f64)],
    );
    metric(
        out,
        "locked_accounts",
        "gauge",
        "Local accounts locked after failed logins.",
        &[("", auth.users().locked()?.len() as f64)],
    );
    Ok(())
}

/// The lifetime counters kept in [`crate::store::meta`].
fn counters(out: &mut String, auth: &Auth) -> anyhow::Result<()> {
    let store = auth.client().store();
    let totals = auth.events().totals()?;
    metric(
        out,
        "logins_total",
        "counter",
        "Successful logins by auth mode.",
        &[
            ("{auth_mode=\"keycloak\"}", totals.keycloak as f64),
            ("{auth_mode=\"cached\"}", totals.cached as f64),
            ("{auth_mode=\"local\"}", totals.local as f64),
        ],
    );
    metric(
        out,
        "sync_processed_total",
        "counter",
        "Sync items applied in Keycloak.",
        &[("", store.counter(Counter::SyncCompleted)? as f64)],
    );
    metric(
        out,
        "sync_failed_total",
        "counter",
        "Sync items Keycloak refused for good.",
        &[("", store.counter(Counter::SyncFailed)? as f64)],
    );
    metric(
        out,
        "keycloak_calls_rejected_total",
        "counter",
        "Keycloak calls the open circuit refused without asking Keycloak.",
        &[("", store.counter(Counter::CallsRejected)? as f64)],
    );
    call_durations(out, store)?;
    metric(
        out,
        "password_divergence_total",
        "counter",
        "Logins where Keycloak refused a password local auth accepted, unexplained by the queue.",
        &[("", store.counter(Counter::PasswordDivergence)? as f64)],
    );
    let central = |c| store.counter(c).map(|n| n as f64);
    metric(
        out,
        "central_total",
        "counter",
        "Keycloak's decisions applied to the local store, by event.",
        &[
            (
                "{event=\"password_adopted\"}",
                central(Counter::PasswordsAdopted)?,
            ),
            (
                "{event=\"password_stale\"}",
                central(Counter::PasswordsStale)?,
            ),
            ("{event=\"disabled\"}", central(Counter::CentralDisables)?),
            ("{event=\"enabled\"}", central(Counter::CentralEnables)?),
            ("{event=\"provisioned\"}", central(Counter::Provisioned)?),
        ],
    );
    metric(
        out,
        "queue_operator_total",
        "counter",
        "Sync items an operator acted on: sent again (queue retry) or removed (queue remove).",
        &[
            ("{action=\"retry\"}", central(Counter::QueueRetried)?),
            ("{action=\"remove\"}", central(Counter::QueueRemoved)?),
        ],
    );
    reconcile(out, store)
}

/// The last reconcile with Keycloak's user list: when, and what it found.
fn reconcile(out: &mut String, store: &crate::store::Store) -> anyhow::Result<()> {
    let last: Option<crate::central::ReconcileReport> = store.get_meta(MetaKey::LastReconcile)?;
    let last = last.unwrap_or_default();
    let completed = last.last_complete;
    metric(
        out,
        "reconcile_last_success_timestamp_seconds",
        "gauge",
        "When a reconcile last went through every user of Keycloak's list (0: never).",
        &[("", completed.map_or(0.0, |t| t.timestamp() as f64))],
    );
    metric(
        out,
        "reconcile_users",
        "gauge",
        "What the last reconcile found, by result.",
        &[
            ("{result=\"checked\"}", last.checked as f64),
            ("{result=\"disabled\"}", last.disabled as f64),
            ("{result=\"re_enabled\"}", last.re_enabled as f64),
            ("{result=\"gone\"}", last.gone as f64),
            (
                "{result=\"only_in_keycloak\"}",
                last.only_in_keycloak as f64,
            ),
            ("{result=\"only_here\"}", last.only_here as f64),
        ],
    );
    Ok(())
}

/// The Keycloak call duration histogram kept by the guard.
fn call_durations(out: &mut String, store: &Store) -> anyhow::Result<()> {
    let durations: CallDurations = store.get_meta(MetaKey::CallDurations)?.unwrap_or_default();
    let buckets: Vec<(String, f64)> = durations
        .cumulative()
        .into_iter()
        .map(|(le, n)| (format!("_bucket{{le=\"{le}\"}}"), n as f64))
        .collect();
    let mut samples: Vec<(&str, f64)> = buckets.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    samples.push(("_sum", durations.sum_seconds()));
    samples.push(("_count", durations.count as f64));
    metric(
        out,
        "keycloak_call_duration_seconds",
        "histogram",
        "Keycloak calls by how long they took, connect to last byte.",
        &samples,
    );
    Ok(())
}

/// The textfile's mode: readable by all, writable by its owner only.
pub const TEXTFILE_MODE: u32 = 0o644;

/// Writes `text` to `path` atomically: a temp file beside it, set to [`TEXTFILE_MODE`] on the
/// open file (so the umask does not count), fsync, rename.
pub fn write_textfile(path: &Path, text: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("--textfile {}: not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(TEXTFILE_MODE)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(TEXTFILE_MODE))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("--textfile {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Issue 15 point 3: the textfile is 0644 even where a wide file (or a stale temp file)
    /// was there before; its content is the text.
    #[test]
    fn the_textfile_is_0644_whatever_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kr.prom");
        let stale = dir
            .path()
            .join(format!(".kr.prom.tmp.{}", std::process::id()));
        for p in [&path, &stale] {
            std::fs::write(p, "old").unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666)).unwrap();
        }
        write_textfile(&path, "a 1\n").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 1\n");
        assert!(!stale.exists());
    }
}
