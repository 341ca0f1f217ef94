//! `start`: the service. Owns the database, serves one-shot commands on the control socket,
//! runs the sync loop until SIGINT/SIGTERM.

use super::EXIT_OK;
use crate::config::Config;
use anyhow::Context;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Runs the service until stopped; the database is flushed before it returns.
pub(super) fn start(
    config: Config,
    lock_timeout: Duration,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    // A wrong socket group or op name is a config error, found before anything is opened.
    let settings = super::server::check_settings(&config)?;
    let auth = Arc::new(super::open_auth(config, lock_timeout)?);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the SIGINT/SIGTERM handler")?;
    // Without its socket the service still keeps logins and sync going; one-shot commands
    // then wait for the lock and say who holds it.
    let server = match super::server::Server::start(auth.clone(), stop.clone(), settings) {
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
