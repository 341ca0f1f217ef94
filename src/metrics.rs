//! Prometheus text exposition (format 0.0.4) of the tool's state and counters.
//!
//! `metrics` prints it; `metrics --textfile PATH` writes it for node_exporter's textfile
//! collector atomically (temp file in the same directory, then rename), so the collector never
//! reads half a file.

use crate::auth::Auth;
use crate::breaker::CircuitState;
use crate::store::meta::Counter;
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

/// Renders every metric.
pub fn render(auth: &Auth) -> anyhow::Result<String> {
    let client = auth.client();
    let status = client.get_status()?;
    let store = client.store();
    let (circuit, _) = client.circuit();
    let totals = auth.events().totals()?;
    let b = |v: bool| if v { 1.0 } else { 0.0 };
    let mut out = String::new();
    metric(
        &mut out,
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
    let circuit_samples: Vec<(String, f64)> = states
        .iter()
        .map(|s| (format!("{{state=\"{}\"}}", s.as_str()), b(*s == circuit)))
        .collect();
    let circuit_refs: Vec<(&str, f64)> = circuit_samples
        .iter()
        .map(|(l, v)| (l.as_str(), *v))
        .collect();
    metric(
        &mut out,
        "circuit_state",
        "gauge",
        "Circuit breaker state (1 for the current one).",
        &circuit_refs,
    );
    metric(
        &mut out,
        "circuit_failures",
        "gauge",
        "Consecutive Keycloak availability failures.",
        &[("", status.failure_count as f64)],
    );
    let modes = ["normal", "degraded", "offline"];
    let mode_samples: Vec<(String, f64)> = modes
        .iter()
        .map(|m| (format!("{{mode=\"{m}\"}}"), b(*m == status.mode.as_str())))
        .collect();
    let mode_refs: Vec<(&str, f64)> = mode_samples.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        &mut out,
        "mode",
        "gauge",
        "Global mode (1 for the current one).",
        &mode_refs,
    );
    metric(
        &mut out,
        "sync_pending",
        "gauge",
        "Sync items waiting for Keycloak.",
        &[("", status.pending_syncs as f64)],
    );
    metric(
        &mut out,
        "sync_failed",
        "gauge",
        "Sync items Keycloak refused for good.",
        &[("", status.failed_syncs as f64)],
    );
    metric(
        &mut out,
        "sync_blocked",
        "gauge",
        "1 when the queue is blocked (admin credentials refused).",
        &[("", b(status.queue_blocked.is_some()))],
    );
    metric(
        &mut out,
        "cached_tokens",
        "gauge",
        "Cached tokens inside the grace period.",
        &[("", status.cached_tokens as f64)],
    );
    metric(
        &mut out,
        "active_sessions",
        "gauge",
        "Sessions not yet expired.",
        &[("", auth.sessions().active_count()? as f64)],
    );
    metric(
        &mut out,
        "locked_accounts",
        "gauge",
        "Local accounts locked after failed logins.",
        &[("", auth.users().locked()?.len() as f64)],
    );
    metric(
        &mut out,
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
        &mut out,
        "sync_processed_total",
        "counter",
        "Sync items applied in Keycloak.",
        &[("", store.counter(Counter::SyncCompleted)? as f64)],
    );
    metric(
        &mut out,
        "sync_failed_total",
        "counter",
        "Sync items Keycloak refused for good.",
        &[("", store.counter(Counter::SyncFailed)? as f64)],
    );
    metric(
        &mut out,
        "password_divergence_total",
        "counter",
        "Logins where Keycloak refused a password local auth accepted, unexplained by the queue.",
        &[("", store.counter(Counter::PasswordDivergence)? as f64)],
    );
    Ok(out)
}

/// Writes `text` to `path` atomically: a temp file beside it, fsync, rename.
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
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("--textfile {}: {e}", path.display())
    })
}
