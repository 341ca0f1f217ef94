//! `start`: the service. Owns the database, serves one-shot commands on the control socket,
//! runs the sync loop until SIGINT/SIGTERM; SIGHUP reloads the configuration.
//!
//! With `--json` its stdout is a stream of JSON lines, one object per event ([`EventView`]):
//! `started` (what the text banner says, as fields), one `message` per event line of the
//! loop, and `stopped`.

use super::render::{print_json_line, rfc3339};
use super::EXIT_OK;
use crate::client::Mode;
use crate::config::Config;
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One line of `start --json`.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum EventView<'a> {
    /// The service is up: what the text banner shows.
    Started(Box<StartedView<'a>>),
    /// One event line of the loop (a sync cycle, Keycloak coming back, a cleanup).
    Message {
        /// The text line, as the text output has it.
        message: &'a str,
        /// When it was written, RFC 3339.
        ts: String,
    },
    /// The loop stopped and the database was flushed.
    Stopped {
        /// When, RFC 3339.
        ts: String,
    },
}

/// `started`: the banner's fields.
#[derive(Serialize)]
struct StartedView<'a> {
    available: bool,
    batch_size: usize,
    cached_tokens: usize,
    circuit_state: &'a str,
    cleanup_interval_seconds: u64,
    control_socket: Option<&'a Path>,
    data: &'a Path,
    keycloak: &'a str,
    mode: Mode,
    pending_syncs: usize,
    realm: &'a str,
    sync_interval_seconds: u64,
    ts: String,
    unavailable_reason: Option<&'a str>,
    version: &'a str,
}

/// Runs the service until stopped; the database is flushed before it returns. After a full
/// disk it closes the database and opens it again once space is free
/// ([`crate::store::space`]): the socket goes away for that moment and comes back.
///
/// SIGHUP reads the configuration again from `source`; a good one replaces the running one
/// the same way, a bad one is logged and the running one kept ([`super::signals`]).
pub(super) fn start(
    config: Config,
    source: super::ConfigSource,
    lock_timeout: Duration,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    // A wrong socket group or op name is a config error, found before anything is opened.
    let mut settings = super::server::check_settings(&config)?;
    let mut config = config;
    let signals = super::signals::Signals::install(source)?;
    // With --json a new round says `started` again.
    while let Some(stop) = signals.next_round() {
        let ended = round(&config, settings.clone(), lock_timeout, json, stop, out)?;
        if let Some((reloaded, checked)) = signals.take_reloaded() {
            (config, settings) = (reloaded, checked);
            continue;
        }
        if ended == crate::service::Ended::Stopped {
            break;
        }
    }
    Ok(EXIT_OK)
}

/// One life of the database: opened, served and looped over until stopped or until it must
/// be reopened.
fn round(
    config: &Config,
    settings: super::server::Settings,
    lock_timeout: Duration,
    json: bool,
    stop: Arc<AtomicBool>,
    out: &mut dyn Write,
) -> anyhow::Result<crate::service::Ended> {
    let auth = Arc::new(super::open_auth(config.clone(), lock_timeout)?);
    // Without its socket the service still keeps logins and sync going; one-shot commands
    // then wait for the lock and say who holds it.
    let workers = super::server::worker_count(config.keycloak.max_concurrent_calls);
    let server = match super::server::Server::start(auth.clone(), stop.clone(), settings, workers) {
        Ok(server) => Some(server),
        Err(e) => {
            log::error!("{e:#}; one-shot commands cannot reach this service");
            None
        }
    };
    let socket = server.as_ref().map(|s| s.path());
    let result = if json {
        started(auth.client(), socket, out)?;
        let mut events = JsonLines::new(out);
        crate::service::run(auth.client(), stop.clone(), socket, &mut events)
    } else {
        crate::service::run(auth.client(), stop.clone(), socket, out)
    };
    stop.store(true, Ordering::SeqCst);
    if let Some(server) = server {
        server.shutdown();
    }
    let ended = result?;
    if ended == crate::service::Ended::Stopped {
        // Requests answered during the drain wrote after the loop's last flush.
        auth.client().store().flush()?;
    }
    Ok(ended)
}

/// Writes the `started` event.
fn started(
    client: &crate::client::ResilientClient,
    socket: Option<&Path>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let cfg = client.config();
    let status = client.get_status()?;
    let view = StartedView {
        available: status.available,
        batch_size: cfg.service.batch_size,
        cached_tokens: status.cached_tokens,
        circuit_state: status.circuit_state,
        cleanup_interval_seconds: cfg.service.cleanup_interval.as_secs(),
        control_socket: socket,
        data: client.store().path(),
        keycloak: &cfg.keycloak.server_url,
        mode: status.mode,
        pending_syncs: status.pending_syncs,
        realm: &cfg.keycloak.realm,
        sync_interval_seconds: cfg.service.sync_interval.as_secs(),
        ts: now(),
        unavailable_reason: status.unavailable_reason.as_deref(),
        version: env!("CARGO_PKG_VERSION"),
    };
    print_json_line(out, &EventView::Started(Box::new(view)))
}

fn now() -> String {
    rfc3339(chrono::Utc::now())
}

/// What the loop writes, as JSON lines. The loop writes its text banner and flushes once
/// before its first event: that banner is the `started` event already written, so what comes
/// before the first flush is dropped; every later line becomes a `message` (`stopped` its own
/// event).
struct JsonLines<'a> {
    out: &'a mut dyn Write,
    banner_done: bool,
    line: Vec<u8>,
}

impl<'a> JsonLines<'a> {
    fn new(out: &'a mut dyn Write) -> Self {
        JsonLines {
            out,
            banner_done: false,
            line: Vec::new(),
        }
    }

    fn emit(&mut self, line: &str) -> std::io::Result<()> {
        let view = if line == "stopped" {
            EventView::Stopped { ts: now() }
        } else {
            EventView::Message {
                message: line,
                ts: now(),
            }
        };
        print_json_line(self.out, &view).map_err(|e| match e.downcast::<std::io::Error>() {
            Ok(io) => io,
            Err(other) => std::io::Error::other(other.to_string()),
        })
    }
}

impl Write for JsonLines<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        if self.banner_done {
            while let Some(end) = self.line.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.line.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line[..end]).into_owned();
                self.emit(&text)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.banner_done {
            self.banner_done = true;
            self.line.clear();
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_is_dropped_and_each_later_line_is_one_event() {
        let mut buf = Vec::new();
        {
            let mut w = JsonLines::new(&mut buf);
            writeln!(w, "keycloak-resilient 0.1.0 starting").unwrap();
            writeln!(w, "  stop with Ctrl-C or SIGTERM").unwrap();
            w.flush().unwrap();
            write!(w, "sync: 1 processed").unwrap();
            writeln!(w, " (1 completed)").unwrap();
            writeln!(w, "stopped").unwrap();
        }
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["event"], "message");
        assert_eq!(lines[0]["message"], "sync: 1 processed (1 completed)");
        assert_eq!(lines[1]["event"], "stopped");
    }
}
