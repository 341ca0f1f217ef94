//! `status`: the picture [`crate::overview`] assembles, as text or as its `--json` view.

use super::render::{print_json, rfc3339};
use super::{Io, EXIT_OK};
use crate::auth::Auth;
use crate::auth_events::ModeCounts;
use crate::client::Status;
use crate::overview::{Locked, Overview};
use serde::Serialize;
use std::io::Write;

/// `status --json`: the engine's status block, then the local-authentication side.
#[derive(Serialize)]
struct StatusView<'a> {
    #[serde(flatten)]
    engine: &'a Status,
    active_sessions: usize,
    auth_modes_last_hour: ModeCounts,
    locked_accounts: Vec<LockedView<'a>>,
    oldest_cached_token_age_seconds: Option<i64>,
    central: crate::overview::CentralCounts,
    waiting_by_type: &'a std::collections::BTreeMap<&'static str, usize>,
    last_reconcile: Option<&'a crate::central::ReconcileReport>,
}

/// A locked account in `status --json`.
#[derive(Serialize)]
struct LockedView<'a> {
    locked_until: String,
    package: &'a str,
    user: &'a str,
}

impl<'a> From<&'a Locked> for LockedView<'a> {
    fn from(l: &'a Locked) -> Self {
        LockedView {
            locked_until: rfc3339(l.until),
            package: &l.package,
            user: &l.user,
        }
    }
}

/// Prints the status.
pub(super) fn status(auth: &Auth, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let full = crate::overview::gather(auth)?;
    if json {
        let view = StatusView {
            engine: &full.engine,
            active_sessions: full.active_sessions,
            auth_modes_last_hour: full.auth_modes_last_hour,
            locked_accounts: full.locked_accounts.iter().map(LockedView::from).collect(),
            oldest_cached_token_age_seconds: full.oldest_cached_token_age_seconds,
            central: full.central,
            waiting_by_type: &full.waiting_by_type,
            last_reconcile: full.last_reconcile.as_ref(),
        };
        print_json(out, &view)?;
        return Ok(EXIT_OK);
    }
    text(out, &auth.client().config().keycloak.server_url, &full)?;
    Ok(EXIT_OK)
}

fn text(out: &mut dyn Write, server_url: &str, full: &Overview) -> std::io::Result<()> {
    let s = &full.engine;
    let available = if s.available {
        "available"
    } else {
        "unavailable"
    };
    writeln!(out, "Keycloak:          {server_url} ({available})")?;
    if let Some(r) = &s.unavailable_reason {
        writeln!(out, "  reason:          {r}")?;
    }
    writeln!(
        out,
        "Circuit:           {} ({} consecutive failure(s))",
        s.circuit_state, s.failure_count
    )?;
    writeln!(out, "Mode:              {}", s.mode.as_str())?;
    writeln!(out, "Pending syncs:     {}", s.pending_syncs)?;
    let waiting: Vec<String> = full
        .waiting_by_type
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    if !waiting.is_empty() {
        writeln!(out, "  by type:         {}", waiting.join(", "))?;
    }
    writeln!(out, "Failed syncs:      {}", s.failed_syncs)?;
    if let Some(b) = &s.queue_blocked {
        writeln!(out, "Queue BLOCKED:     {b}")?;
    }
    for m in s.misconfigured.iter().filter(|m| m.client == "login") {
        writeln!(
            out,
            "MISCONFIGURED:     login client refused by Keycloak ({}); logins fall back to cached or local",
            m.reason
        )?;
    }
    writeln!(out, "Cached tokens:     {}", s.cached_tokens)?;
    if let Some(age) = full.oldest_cached_token_age_seconds {
        writeln!(out, "  oldest obtained: {age}s ago")?;
    }
    writeln!(out, "Active sessions:   {}", full.active_sessions)?;
    let m = full.auth_modes_last_hour;
    writeln!(
        out,
        "Logins last hour:  keycloak {}, cached {}, local {}",
        m.keycloak, m.cached, m.local
    )?;
    let c = full.central;
    writeln!(
        out,
        "Keycloak decided:  {} password(s) adopted, {} gone stale, {} account(s) disabled, {} enabled again, {} provisioned",
        c.passwords_adopted, c.passwords_stale, c.disabled, c.enabled, c.provisioned
    )?;
    match &full.last_reconcile {
        Some(r) => {
            let at = r.at.map(rfc3339).unwrap_or_default();
            writeln!(
                out,
                "Last reconcile:    {at}: {} checked, {} disabled, {} re-enabled, {} gone, {} only in Keycloak, {} only here",
                r.checked, r.disabled, r.re_enabled, r.gone, r.only_in_keycloak, r.only_here
            )?;
            if let Some(why) = &r.stopped {
                writeln!(out, "  stopped:         {why}")?;
            }
        }
        None => writeln!(out, "Last reconcile:    never")?,
    }
    for l in &full.locked_accounts {
        writeln!(
            out,
            "Locked:            {}/{} until {}",
            l.user,
            l.package,
            rfc3339(l.until)
        )?;
    }
    writeln!(
        out,
        "Resilience:        threshold {}, cooldown {}s, grace {}h, offline mode {}",
        s.config.failure_threshold,
        s.config.cooldown_seconds,
        s.config.grace_period_hours,
        if s.config.offline_mode_allowed {
            "allowed"
        } else {
            "off"
        }
    )
}
