//! The one-shot command's side of the control socket: open the database, or — when the
//! running service holds it — send the request to the service and print its answer.
//!
//! The service's answer carries the exit code and both output streams, so a forwarded command
//! looks exactly like one run directly. When the database is locked and nobody answers on the
//! socket (another one-shot command is at work, or a holder just died), the command keeps
//! trying both for `--lock-timeout`, then says who holds the lock and what to do.
//!
//! The socket is tried first: where it is comes from the config (`service.socket_path`,
//! `--socket`, `$KEYCLOAK_RESILIENT_SOCKET`), so a caller allowed on the socket needs no access
//! to the data directory while the service runs.

use super::from_store;
use super::protocol::{Answer, Envelope, Request};
use crate::auth::Auth;
use crate::config::Config;
use crate::store::{lock, Store, StoreError};
use anyhow::{anyhow, Context};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Where a one-shot command runs.
pub enum Target {
    /// Here: the database was free.
    Local(Auth),
    /// In the service, over this connection.
    Service(UnixStream),
}

/// How long to wait for the service's answer to most requests: bounded, so that a stuck (not
/// dead: a dead one closes the socket) service frees its caller.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);
/// Keycloak calls one sync item takes at most (admin token, user lookup, credential date,
/// reset, one retry after a refused token).
const CALLS_PER_ITEM: u32 = 5;

/// How long to wait for the answer to `request`: a `sync-now` may make a batch's worth of
/// Keycloak calls, each bounded by the configured timeout.
pub fn answer_timeout(request: &Request, config: &Config) -> Duration {
    match request {
        Request::SyncNow { batch_size } => {
            let batch = batch_size.unwrap_or(config.service.batch_size as u32);
            let cycle = config
                .keycloak
                .timeout
                .saturating_mul(batch.saturating_mul(CALLS_PER_ITEM));
            ANSWER_TIMEOUT.max(cycle.saturating_add(ANSWER_TIMEOUT))
        }
        // Pages through every user of the realms: minutes for a hundred thousand.
        Request::Reconcile {} => RECONCILE_ANSWER_TIMEOUT,
        _ => ANSWER_TIMEOUT,
    }
}

/// How long a `reconcile` sent to the service may take to answer.
const RECONCILE_ANSWER_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Longest answer accepted (a `queue` listing of a long queue is the largest).
const MAX_ANSWER_BYTES: u64 = 256 * 1024 * 1024;

/// Connects to the service, or opens the database when no service answers, waiting up to
/// `lock_timeout` for one or the other. `before_open` runs before the database is opened here
/// (never when the service answers): it may refuse to open it at all.
pub fn open_or_connect(
    config: Config,
    lock_timeout: Duration,
    before_open: &dyn Fn(&Config) -> anyhow::Result<()>,
) -> anyhow::Result<Target> {
    let path = config.storage_path.clone();
    let socket = config.socket_path();
    let deadline = Instant::now() + lock_timeout;
    // How long to pause before looking again while the database is locked.
    let mut pause = lock::POLL_FIRST;
    loop {
        let refused = match UnixStream::connect(&socket) {
            Ok(conn) => return Ok(Target::Service(conn)),
            Err(e) => e,
        };
        // No service answers: the database is ours to open, if it may be opened here.
        before_open(&config)?;
        match Store::open_waiting(&path, Duration::ZERO) {
            Ok(store) => return Ok(Target::Local(from_store(config, store)?)),
            Err(StoreError::Locked { holder, .. }) => {
                if Instant::now() >= deadline {
                    let locked = StoreError::Locked {
                        path: path.clone(),
                        holder: holder.clone(),
                        waited: lock_timeout,
                    };
                    return Err(match holder {
                        Some(h) if h.is_service() => anyhow!(
                            "{locked}; the service holding it does not answer on {} ({refused}): see its log, or restart it",
                            socket.display()
                        ),
                        _ => anyhow!(locked),
                    });
                }
                std::thread::sleep(pause);
                pause = lock::next_poll(pause);
            }
            Err(e) => {
                // No socket, or nobody on it: the usual "no service"; anything else (no
                // permission on it) is worth saying too.
                let socket_too = match refused.kind() {
                    ErrorKind::NotFound | ErrorKind::ConnectionRefused => String::new(),
                    _ => format!(" (and the control socket {}: {refused})", socket.display()),
                };
                return Err(super::opening_failed(e, &path, &socket_too));
            }
        }
    }
}

/// What came of sending a request.
pub enum Sent {
    /// The service ran it; the command's exit code.
    Answered(u8),
    /// The service did not run it (busy, or shutting down), and says why: sending it again is
    /// safe.
    NotRun(String),
}

/// Sends `envelope` over `conn` and, when the service ran it, prints the answer as the command
/// would have printed it.
pub fn send(
    mut conn: UnixStream,
    envelope: &Envelope,
    answer_timeout: Duration,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<Sent> {
    let mut line = envelope.to_line().context("encoding the request")?;
    line.push('\n');
    conn.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    conn.set_read_timeout(Some(answer_timeout))?;
    // A write error here (the service went away) shows up as no answer below.
    let _ = conn.write_all(line.as_bytes());
    drop(line);
    let mut reply = Vec::new();
    let read = BufReader::new(&conn)
        .take(MAX_ANSWER_BYTES)
        .read_until(b'\n', &mut reply);
    if let Err(e) = read {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            return Err(anyhow!(
                "the running service gave no answer within {}s; the command may or may not have been carried out",
                answer_timeout.as_secs()
            ));
        }
    }
    if reply.last() != Some(&b'\n') {
        return Err(anyhow!(
            "the running service closed the connection without a complete answer (was it stopped or killed?); the command may or may not have been carried out"
        ));
    }
    let answer: Answer = serde_json::from_slice(&reply)
        .context("the running service's answer is not valid (is it another version?)")?;
    if answer.not_run {
        let why = answer.stderr.trim();
        return Ok(Sent::NotRun(
            why.strip_prefix("error: ").unwrap_or(why).to_string(),
        ));
    }
    out.write_all(answer.stdout.as_bytes())?;
    out.flush()?;
    err.write_all(answer.stderr.as_bytes())?;
    Ok(Sent::Answered(answer.exit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_sync_now_waits_for_a_batch_of_keycloak_calls_others_for_the_fixed_bound() {
        let yaml = "keycloak:\n  server_url: http://127.0.0.1:9\n  realm: demo\n  client_id: web\n  timeout_seconds: 5\nservice:\n  batch_size: 100\n";
        let config = Config::parse(yaml, Path::new("/x/config.yaml"), &|_| None).unwrap();
        let status = Request::Status {};
        assert_eq!(answer_timeout(&status, &config), ANSWER_TIMEOUT);
        let default_batch = Request::SyncNow { batch_size: None };
        assert_eq!(
            answer_timeout(&default_batch, &config),
            Duration::from_secs(100 * 5 * 5 + 300)
        );
        let small = Request::SyncNow {
            batch_size: Some(2),
        };
        assert_eq!(
            answer_timeout(&small, &config),
            Duration::from_secs(2 * 5 * 5 + 300)
        );
    }
}
