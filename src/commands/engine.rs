//! The engine's commands: status, test, sync-now, cleanup, authenticate, cached-token,
//! queue-sync, queue, start.

use super::{print_json, rfc3339, Io, EXIT_OK, EXIT_REFUSED};
use crate::auth::Auth;
use crate::client::{AuthError, ResilientClient};
use crate::config::Config;
use crate::keycloak::{KcError, KeycloakClient, Rejection};
use crate::protocol::Who;
use crate::token_cache::AuthToken;
use anyhow::Context;
use serde::Serialize;
use serde_json::json;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The status block, engine part plus the local-auth part.
#[derive(Serialize)]
struct FullStatus {
    #[serde(flatten)]
    engine: crate::client::Status,
    active_sessions: usize,
    auth_modes_last_hour: crate::auth_events::ModeCounts,
    locked_accounts: Vec<serde_json::Value>,
}

pub fn status(auth: &Auth, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let s = auth.client().get_status()?;
    let full = FullStatus {
        active_sessions: auth.sessions().active_count()?,
        auth_modes_last_hour: auth.modes_last_hour()?,
        locked_accounts: auth
            .users()
            .locked()?
            .into_iter()
            .map(|(user, package, until)| json!({"user": user, "package": package, "locked_until": rfc3339(until)}))
            .collect(),
        engine: s,
    };
    if json {
        print_json(out, &full)?;
        return Ok(EXIT_OK);
    }
    let s = &full.engine;
    let c = auth.client().config();
    writeln!(
        out,
        "Keycloak:          {} ({})",
        c.keycloak.server_url,
        if s.available {
            "available"
        } else {
            "unavailable"
        }
    )?;
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
    writeln!(out, "Failed syncs:      {}", s.failed_syncs)?;
    if let Some(b) = &s.queue_blocked {
        writeln!(out, "Queue BLOCKED:     {b}")?;
    }
    writeln!(out, "Cached tokens:     {}", s.cached_tokens)?;
    writeln!(out, "Active sessions:   {}", full.active_sessions)?;
    let m = full.auth_modes_last_hour;
    writeln!(
        out,
        "Logins last hour:  keycloak {}, cached {}, local {}",
        m.keycloak, m.cached, m.local
    )?;
    for l in &full.locked_accounts {
        writeln!(
            out,
            "Locked:            {}/{} until {}",
            l["user"].as_str().unwrap_or(""),
            l["package"].as_str().unwrap_or(""),
            l["locked_until"].as_str().unwrap_or("")
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
    )?;
    Ok(EXIT_OK)
}

/// One line of `test`.
#[derive(Serialize)]
struct Check {
    check: String,
    ok: bool,
    detail: String,
}

pub fn test(config: &Config, json: bool, out: &mut dyn Write) -> anyhow::Result<u8> {
    let mut checks = vec![Check {
        check: "config".into(),
        ok: true,
        detail: format!("{} is valid", config.source.display()),
    }];
    let kc = KeycloakClient::new(&config.keycloak)?;
    let mut packages = vec![("(default)".to_string(), config.package(""))];
    packages.extend(
        config
            .keycloak
            .packages
            .keys()
            .map(|name| (name.clone(), config.package(name))),
    );
    let mut realms: Vec<String> = packages.iter().map(|(_, p)| p.realm.clone()).collect();
    realms.sort();
    realms.dedup();
    for realm in &realms {
        let probe = kc.probe(realm);
        checks.push(Check {
            check: format!("keycloak reachable (realm {realm})"),
            ok: probe.is_ok(),
            detail: match probe {
                Ok(()) => format!("{} answers", config.keycloak.server_url),
                Err(e) => e.to_string(),
            },
        });
    }
    let reachable = checks.iter().skip(1).all(|c| c.ok);
    if reachable {
        // A password grant for a user that cannot exist: "invalid credentials" proves the client
        // is set up for direct access grants; any other answer says what is wrong.
        let nobody = format!("keycloak-resilient-probe-{}", uuid::Uuid::new_v4().simple());
        for (name, pkg) in &packages {
            let r = kc.password_grant(pkg, &nobody, &uuid::Uuid::new_v4().to_string());
            let (ok, detail) = match r {
                Err(KcError::Rejected(Rejection::InvalidCredentials)) => {
                    (true, "accepts direct access grants".to_string())
                }
                Ok(_) => (true, "accepts direct access grants".to_string()),
                Err(e) => (false, e.to_string()),
            };
            checks.push(Check {
                check: format!("login client {} (package {name})", pkg.client_id),
                ok,
                detail,
            });
        }
        for realm in &realms {
            let lookup = kc
                .find_user(realm, &nobody)
                .and_then(|_| kc.admin_roles(realm));
            let (ok, detail) = match lookup {
                Ok(roles) if roles.iter().any(|r| r == "manage-users") => {
                    (true, "can look up users and holds manage-users".to_string())
                }
                Ok(_) => (false, "can look up users but lacks realm-management manage-users (needed to reset passwords)".to_string()),
                Err(e) => (false, e.to_string()),
            };
            checks.push(Check {
                check: format!(
                    "admin service account {} (realm {realm})",
                    config.keycloak.admin_client_id
                ),
                ok,
                detail,
            });
        }
    }
    let all_ok = reachable && checks.iter().all(|c| c.ok);
    if json {
        print_json(out, &json!({"ok": all_ok, "checks": checks}))?;
    } else {
        for c in &checks {
            writeln!(
                out,
                "{:<6} {}: {}",
                if c.ok { "ok" } else { "FAILED" },
                c.check,
                c.detail
            )?;
        }
        if !reachable {
            writeln!(
                out,
                "skipped: client and service-account checks (Keycloak not reachable)"
            )?;
        }
    }
    Ok(if all_ok { EXIT_OK } else { EXIT_REFUSED })
}

pub fn sync_now(
    client: &ResilientClient,
    batch: Option<u32>,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let batch = batch
        .map(|b| b as usize)
        .unwrap_or(client.config().service.batch_size);
    let report = client.process_sync_queue_until(batch, io.stopping)?;
    // Failed items include those a claim could not open (wrong key, damaged record): they are
    // not in this run's report, but must not go unseen.
    let failed_syncs = client.queue().counts()?.failed;
    if json {
        print_json(
            out,
            &json!({"report": report, "pending_syncs": client.queue().pending_count(), "failed_syncs": failed_syncs}),
        )?;
    } else {
        writeln!(
            out,
            "{} processed ({} completed, {} failed, {} retried); {} pending",
            report.processed,
            report.completed,
            report.failed,
            report.retried,
            client.queue().pending_count()
        )?;
        if let Some(why) = &report.stopped {
            writeln!(out, "nothing more done: {why}")?;
        }
        if failed_syncs > 0 {
            writeln!(
                out,
                "{failed_syncs} failed item(s) in the queue (see `queue`)"
            )?;
        }
    }
    Ok(EXIT_OK)
}

/// The ages `cleanup` removes things after.
pub struct CleanupAges {
    /// Cached tokens.
    pub token_hours: u64,
    /// Completed and superseded sync items.
    pub sync_days: u64,
    /// Failed sync items.
    pub failed_days: u64,
}

pub fn cleanup(auth: &Auth, ages: CleanupAges, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let CleanupAges {
        token_hours,
        sync_days,
        failed_days,
    } = ages;
    let client = auth.client();
    let tokens = client.cleanup_expired_tokens(token_hours)?;
    let syncs = client.cleanup_completed_syncs(sync_days)?;
    let failed = client.cleanup_failed_syncs(failed_days)?;
    let sessions = auth.sessions().cleanup()?;
    let events = auth.events().cleanup()?;
    client.store().flush()?;
    if json {
        print_json(
            out,
            &json!({"tokens_removed": tokens, "syncs_removed": syncs, "failed_syncs_removed": failed, "sessions_removed": sessions, "auth_events_removed": events}),
        )?;
    } else {
        writeln!(
            out,
            "removed {tokens} cached token(s) older than {token_hours}h"
        )?;
        writeln!(
            out,
            "removed {syncs} finished sync item(s) older than {sync_days}d"
        )?;
        writeln!(
            out,
            "removed {failed} failed sync item(s) older than {failed_days}d"
        )?;
        writeln!(out, "removed {sessions} expired session(s)")?;
    }
    Ok(EXIT_OK)
}

fn print_token(out: &mut dyn Write, t: &AuthToken, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(
            out,
            &json!({
                "cached": t.cached,
                "cached_at": t.cached_at.map(rfc3339),
                "access_token": t.access_token,
                "expires_at": rfc3339(t.expires_at),
            }),
        );
    }
    match t.cached_at {
        Some(at) => writeln!(
            out,
            "cached token (obtained from Keycloak at {}), expires {}",
            rfc3339(at),
            rfc3339(t.expires_at)
        )?,
        None => writeln!(
            out,
            "token from Keycloak, expires {}",
            rfc3339(t.expires_at)
        )?,
    }
    writeln!(out, "{}", t.access_token)?;
    Ok(())
}

/// Prints a token (exit 0), or the refusal: the same JSON shape with nulls and the reason, and
/// one line on stderr, `prefix` then the reason (exit 1). Database errors are not refusals: they
/// stay errors.
fn answer_token(
    io: &mut Io,
    json: bool,
    prefix: &str,
    answer: Result<AuthToken, AuthError>,
) -> anyhow::Result<u8> {
    match answer {
        Ok(t) => {
            print_token(io.out, &t, json)?;
            Ok(EXIT_OK)
        }
        Err(AuthError::Store(e)) => Err(e.into()),
        Err(e) => {
            if json {
                print_json(
                    io.out,
                    &json!({"cached": false, "cached_at": null, "access_token": null, "expires_at": null, "error": e.to_string()}),
                )?;
            }
            writeln!(io.err, "{prefix}{e}")?;
            Ok(EXIT_REFUSED)
        }
    }
}

pub fn authenticate(
    client: &ResilientClient,
    who: &Who,
    password: &str,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    answer_token(
        io,
        json,
        "refused: ",
        client.authenticate(&who.user, password, &who.package),
    )
}

pub fn cached_token(
    client: &ResilientClient,
    who: &Who,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let answer = client
        .get_cached_token(&who.user, &who.package)?
        .ok_or_else(|| AuthError::NoCachedToken {
            user: who.user.clone(),
            package: who.package.clone(),
        });
    answer_token(io, json, "", answer)
}

pub fn refresh(client: &ResilientClient, who: &Who, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    answer_token(
        io,
        json,
        "refresh refused: ",
        client.refresh(&who.user, &who.package),
    )
}

pub fn queue_sync(
    client: &ResilientClient,
    who: &Who,
    sync_type: &str,
    data: &serde_json::Value,
    priority: u32,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let id = client.queue_sync(&who.user, &who.package, sync_type, data, priority)?;
    if json {
        print_json(out, &json!({"sync_id": id}))?;
    } else {
        writeln!(out, "{id}")?;
    }
    Ok(EXIT_OK)
}

pub fn queue(
    client: &ResilientClient,
    limit: usize,
    after: Option<&str>,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let after = after
        .map(str::parse::<crate::sync_queue::Cursor>)
        .transpose()
        .context("--after")?;
    let queue = client.queue();
    let counts = queue.counts()?;
    let page = queue.page(after.as_ref(), limit)?;
    let next = page.next.as_ref().map(ToString::to_string);
    if json {
        let rows: Vec<_> = page
            .items
            .iter()
            .map(|i| {
                json!({
                    "sync_id": i.sync_id,
                    "user": i.username,
                    "package": i.package,
                    "sync_type": i.sync_type.as_str(),
                    "status": i.status.as_str(),
                    "priority": i.priority,
                    "attempts": i.attempts,
                    "queued_at": rfc3339(i.queued_at),
                    "processed_at": i.processed_at.map(rfc3339),
                    "next_attempt_at": rfc3339(i.next_attempt_at),
                    "last_error": i.last_error,
                    "sent_at": i.applying.map(|a| rfc3339(a.sent_at)),
                })
            })
            .collect();
        print_json(
            out,
            &json!({"items": rows, "next": next, "counts": counts, "blocked": client.queue_blocked()}),
        )?;
        return Ok(EXIT_OK);
    }
    if let Some(b) = client.queue_blocked() {
        writeln!(out, "queue BLOCKED: {b}")?;
    }
    writeln!(
        out,
        "{} pending, {} processing, {} completed, {} superseded, {} failed",
        counts.pending, counts.processing, counts.completed, counts.superseded, counts.failed
    )?;
    if page.items.is_empty() && after.is_none() {
        writeln!(out, "queue is empty")?;
    }
    for i in &page.items {
        writeln!(
            out,
            "{} {:<10} p{} {}/{} {} queued {} attempts {}{}{}",
            i.sync_id,
            i.status.as_str(),
            i.priority,
            i.username,
            i.package,
            i.sync_type.as_str(),
            rfc3339(i.queued_at),
            i.attempts,
            i.applying
                .map(|a| format!(
                    " (sent {}, outcome unknown: Keycloak is asked before it is sent again)",
                    rfc3339(a.sent_at)
                ))
                .unwrap_or_default(),
            i.last_error
                .as_ref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default()
        )?;
    }
    if let Some(next) = next {
        writeln!(
            out,
            "more: keycloak-resilient queue --limit {limit} --after {next}"
        )?;
    }
    Ok(EXIT_OK)
}

/// Runs the service: owns the database, serves one-shot commands on the control socket, runs
/// the sync loop until SIGINT/SIGTERM.
pub fn start(config: Config, lock_timeout: Duration, out: &mut dyn Write) -> anyhow::Result<u8> {
    let auth = Arc::new(super::open_auth(config, lock_timeout)?);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the SIGINT/SIGTERM handler")?;
    // Without its socket the service still keeps logins and sync going; one-shot commands
    // then wait for the lock and say who holds it.
    let server = match super::server::Server::start(auth.clone(), stop.clone()) {
        Ok(server) => Some(server),
        Err(e) => {
            log::error!("{e:#}; one-shot commands cannot reach this service");
            None
        }
    };
    let result = crate::service::run(
        auth.client(),
        stop.clone(),
        server.as_ref().map(|s| s.path()),
        out,
    );
    stop.store(true, Ordering::SeqCst);
    if let Some(server) = server {
        server.shutdown();
    }
    // Requests answered during the drain wrote after the loop's last flush.
    auth.client().store().flush()?;
    result?;
    Ok(EXIT_OK)
}
