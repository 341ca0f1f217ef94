//! A one-shot command that holds the database: how it keeps every other command free of its
//! Keycloak calls (issue 14: local auth never waits on Keycloak, with or without `start`).
//!
//! - `login` and `reconcile` let go of the database for their calls: planned with it open,
//!   the call made with it closed, the outcome recorded with it open again.
//! - The commands that only read (`queue`, `user list`, …, and `status` or `metrics` when
//!   Keycloak's availability is known without a probe) answer in milliseconds: they just run.
//! - Every other command keeps the database for as long as it runs (a sync cycle's items,
//!   `passwd`'s send, a managed user's change are written around each call) and *serves* the
//!   control socket meanwhile, as `start` does: a command that finds the database held sends
//!   its request there and is answered at once, instead of waiting for the lock behind a
//!   hanging Keycloak. Best effort: a socket that cannot be bound (a `service.socket_path`
//!   in a folder this user cannot write) leaves the others waiting for the lock, as before.
//! - The half-open trial is never a user's login: a one-shot login that finds it due answers
//!   from the local store at once and starts `probe` in the background, which makes the trial
//!   within the full timeout, the database closed during the call. One probe at a time per
//!   data directory ([`ProbeTurn`]).

use super::protocol::Request;
use super::server::{check_settings, Server};
use super::{execute, open_auth, sessions, ConfigSource, Io, EXIT_OK, EXIT_REFUSED};
use crate::auth::Auth;
use crate::config::Config;
use crate::keycloak::bulkhead::ProbeTurn;
use crate::keycloak::guard::CallKind;
use crate::keycloak::KeycloakClient;
use serde::Serialize;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Workers of the socket a one-shot command serves while it works: enough for the logins
/// that find the database held (each is local work, or bounded by the bulkhead), and few
/// threads to start for every command.
const SERVING_WORKERS: usize = 2;

/// Runs `request` on the database this process opened (see the module).
pub(super) fn run(
    request: Request,
    auth: Auth,
    source: &ConfigSource,
    lock_timeout: Duration,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    match request {
        Request::Login { .. } => login(request, auth, source, lock_timeout, json, io),
        Request::Reconcile {} => super::reconcile::reconcile_one_shot(auth, lock_timeout, json, io),
        request if reads_only(&request, &auth) => execute(request, &auth, json, io),
        request => serving(auth, |auth| execute(request, auth, json, io)),
    }
}

/// True for the commands that read what is stored and answer at once: they hold the
/// database for milliseconds, so serving the socket meanwhile would only make them slower (a
/// socket bound, workers started and stopped: a third of a cold `status`). `status` and
/// `metrics` show whether Keycloak is available, which may take a probe: they count only
/// when the breaker and the last probe already tell, without asking.
fn reads_only(request: &Request, auth: &Auth) -> bool {
    match request {
        Request::Queue { .. }
        | Request::QueueShow { .. }
        | Request::UserList {}
        | Request::SessionShow { .. } => true,
        Request::Status {} | Request::Metrics { .. } => {
            auth.client().keycloak().known_availability().is_some()
        }
        _ => false,
    }
}

/// Runs `work` while serving the control socket from the same engine (see the module).
fn serving(auth: Auth, work: impl FnOnce(&Auth) -> anyhow::Result<u8>) -> anyhow::Result<u8> {
    let auth = Arc::new(auth);
    let config = auth.client().config();
    let server = check_settings(config)
        .map_err(anyhow::Error::new)
        .and_then(|settings| {
            let stop = Arc::new(AtomicBool::new(false));
            Server::start(auth.clone(), stop, settings, SERVING_WORKERS)
        });
    let server = match server {
        Ok(server) => Some(server),
        Err(e) => {
            log::debug!("not serving other one-shot commands meanwhile: {e:#}");
            None
        }
    };
    let result = work(&auth);
    if let Some(server) = server {
        server.shutdown();
        // What the requests it served wrote is on disk before the process ends.
        auth.client().store().flush()?;
    }
    result
}

/// A one-shot `login`: local auth with the database open; then, when Keycloak is to be asked,
/// the database is closed (its lock released) for the call, and re-opened briefly to record
/// the outcome and create the session. A due half-open trial is left to a background probe.
fn login(
    request: Request,
    auth: Auth,
    source: &ConfigSource,
    lock_timeout: Duration,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    request.check_ranges()?;
    let account = request.account()?;
    let Request::Login {
        package, password, ..
    } = request
    else {
        return execute(request, &auth, json, io);
    };
    let account = account.ok_or_else(|| anyhow::anyhow!("login request without an account"))?;
    let config = auth.client().config().clone();
    config.check_package(&package).map_err(super::InputError)?;
    let kc = auth.client().keycloak();
    let trial_due = kc.trial_due();
    kc.set_background_trials(true);
    let begun = auth.login_begin(&account, &password);
    if trial_due {
        start_probe(source, &config);
    }
    let pending = match begun? {
        crate::auth::LoginBegun::Done(result) => return sessions::show_login(&result, json, io),
        crate::auth::LoginBegun::Keycloak(pending) => pending,
    };
    auth.client().store().flush()?;
    drop(auth);
    let http = KeycloakClient::new(&config.keycloak)?;
    let ran = pending.run(&http, &config, &password);
    let auth = open_auth(config, lock_timeout)?;
    let result = auth.login_finish(ran, &password)?;
    sessions::show_login(&result, json, io)
}

/// Starts `probe` in the background with this command's config, unless one is running. Its
/// output goes nowhere: what it found is recorded (`status` shows it).
fn start_probe(source: &ConfigSource, config: &Config) {
    let started = ProbeTurn::try_take(&config.storage_path).and_then(|turn| {
        if turn.is_none() {
            return Ok(None); // one is running
        }
        // Let go before the probe starts: it takes the turn itself.
        drop(turn);
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command.args(source.args()).arg("probe");
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // Its own process group: a Ctrl-C meant for the login does not stop it.
            .process_group(0);
        command.spawn().map(Some)
    });
    match started {
        Ok(Some(child)) => log::debug!(
            "Keycloak's trial is due: probe started (pid {})",
            child.id()
        ),
        Ok(None) => {}
        Err(e) => log::warn!(
            "Keycloak's trial is due, but no probe was started ({e}): run `status` or `probe`"
        ),
    }
}

/// What `probe` found.
#[derive(Serialize)]
struct ProbeView {
    /// Keycloak answered as Keycloak, with the realm in place.
    available: bool,
    /// Whether the call was made: false when another probe runs, the service probes for
    /// itself, or the circuit is cooling down.
    asked: bool,
    /// The circuit after the probe.
    circuit: Option<String>,
    /// Why Keycloak was not asked, or is not available.
    reason: Option<String>,
}

/// `probe`: asks Keycloak now through the circuit breaker — the half-open trial when it is
/// due — within the full timeout, the database closed during the call, and records the answer.
/// Exit 0 when Keycloak answered, 1 when it did not or was not asked.
pub(super) fn probe(
    config: Config,
    lock_timeout: Duration,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let dir = config.storage_path.clone();
    let not_asked = |reason: String| ProbeView {
        available: false,
        asked: false,
        circuit: None,
        reason: Some(reason),
    };
    let Some(_turn) = ProbeTurn::try_take(&dir)
        .map_err(|e| anyhow::anyhow!("probe lock in {}: {e}", dir.display()))?
    else {
        return show(
            &not_asked("another probe is asking Keycloak".into()),
            json,
            out,
        );
    };
    if std::os::unix::net::UnixStream::connect(config.socket_path()).is_ok() {
        let why = "the running service probes Keycloak itself (see `status`)";
        return show(&not_asked(why.into()), json, out);
    }
    if !crate::store::exists(&dir) {
        anyhow::bail!(
            "no database in {} (storage.path of {}, or --data-dir): nothing to record a probe in",
            dir.display(),
            config.source.display()
        );
    }
    let auth = open_auth(config.clone(), lock_timeout)?;
    let kc = auth.client().keycloak();
    let admission = match kc.admit(CallKind::Probe, kc.timeout()) {
        Ok(admission) => admission,
        Err(e) => return show(&not_asked(e.to_string()), json, out),
    };
    let realm = kc.realm().to_string();
    auth.client().store().flush()?;
    drop(auth);
    let http = KeycloakClient::new(&config.keycloak)?;
    let ran = admission.run(&http, |kc| kc.probe(&realm));
    let auth = open_auth(config, lock_timeout)?;
    let client = auth.client();
    let available = client.keycloak().settle_probe(ran);
    client.store().flush()?;
    let view = ProbeView {
        available,
        asked: true,
        circuit: Some(client.circuit().0.as_str().to_string()),
        reason: (!available).then(|| client.keycloak().unavailable_reason()),
    };
    show(&view, json, out)
}

fn show(view: &ProbeView, json: bool, out: &mut dyn Write) -> anyhow::Result<u8> {
    if json {
        super::render::print_json(out, view)?;
    } else {
        match (&view.circuit, &view.reason) {
            (Some(circuit), None) => writeln!(out, "Keycloak: available (circuit {circuit})")?,
            (Some(circuit), Some(why)) => {
                writeln!(out, "Keycloak: not available: {why} (circuit {circuit})")?
            }
            (None, why) => writeln!(
                out,
                "Keycloak not asked: {}",
                why.as_deref().unwrap_or("no reason")
            )?,
        }
    }
    Ok(if view.available {
        EXIT_OK
    } else {
        EXIT_REFUSED
    })
}
