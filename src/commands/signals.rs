//! The service's signals: SIGINT and SIGTERM stop it (through `ctrlc`), SIGHUP reloads its
//! configuration and secrets (`systemctl reload`).
//!
//! The service runs in rounds (see `start`): each opens the database, serves and loops until
//! its own stop flag is set. A stop signal sets the running round's flag and keeps any later
//! round from starting. SIGHUP reads the configuration again — the file and the secrets the
//! environment points at (`*_SECRET_FILE`, systemd credentials) — and, only when it is valid,
//! ends the running round so that the next one starts with it; a bad new configuration is
//! logged with what is wrong and the running one is kept. SIGHUP is blocked in every thread and
//! read from a `signalfd` by a thread of its own, so it never reaches a handler (ctrlc's
//! `termination` feature would take it for a stop).

use super::server::{check_settings, Settings};
use super::ConfigSource;
use crate::config::Config;
use anyhow::Context;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A configuration read on SIGHUP, checked, waiting for the next round.
type Reloaded = Option<(Config, Settings)>;

/// What the signals asked for so far.
pub(super) struct Signals {
    stopped: Arc<AtomicBool>,
    current: Arc<Mutex<Arc<AtomicBool>>>,
    reloaded: Arc<Mutex<Reloaded>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Signals {
    /// Installs the handlers. Call before any other thread is started: SIGHUP is blocked on
    /// this thread, and the threads started afterwards inherit that.
    ///
    /// # Errors
    ///
    /// When a handler cannot be installed.
    pub(super) fn install(source: ConfigSource) -> anyhow::Result<Signals> {
        let mut hup = SigSet::empty();
        hup.add(Signal::SIGHUP);
        hup.thread_block().context("blocking SIGHUP")?;
        let signals = Signals {
            stopped: Arc::new(AtomicBool::new(false)),
            current: Arc::new(Mutex::new(Arc::new(AtomicBool::new(false)))),
            reloaded: Arc::new(Mutex::new(None)),
        };
        let (stopped, current) = (signals.stopped.clone(), signals.current.clone());
        ctrlc::set_handler(move || {
            stopped.store(true, Ordering::SeqCst);
            locked(&current).store(true, Ordering::SeqCst);
        })
        .context("installing the SIGINT/SIGTERM handler")?;
        let fd = SignalFd::new(&hup).context("reading SIGHUP from a signalfd")?;
        let (current, reloaded) = (signals.current.clone(), signals.reloaded.clone());
        std::thread::Builder::new()
            .name("sighup".into())
            .spawn(move || {
                while let Ok(Some(_)) = fd.read_signal() {
                    reload(&source, &current, &reloaded);
                }
            })
            .context("starting the SIGHUP thread")?;
        Ok(signals)
    }

    /// The stop flag of the next round; `None` once a stop signal came.
    pub(super) fn next_round(&self) -> Option<Arc<AtomicBool>> {
        let stop = Arc::new(AtomicBool::new(false));
        *locked(&self.current) = stop.clone();
        // Checked after the flag is in place: a signal in between sets this one.
        (!self.stopped.load(Ordering::SeqCst)).then_some(stop)
    }

    /// The configuration a SIGHUP read, if one is waiting.
    pub(super) fn take_reloaded(&self) -> Reloaded {
        locked(&self.reloaded).take()
    }
}

/// On SIGHUP: the configuration read again and checked; when good, kept for the next round
/// and the running one ended.
fn reload(source: &ConfigSource, current: &Mutex<Arc<AtomicBool>>, reloaded: &Mutex<Reloaded>) {
    let checked = source
        .load()
        .map_err(anyhow::Error::from)
        .and_then(|config| Ok((check_settings(&config)?, config)));
    match checked {
        Ok((settings, config)) => {
            log::info!("SIGHUP: configuration read again; reopening with it");
            *locked(reloaded) = Some((config, settings));
            locked(current).store(true, Ordering::SeqCst);
        }
        Err(e) => {
            log::error!("SIGHUP: configuration refused, the running one is kept: {e:#}")
        }
    }
}
