//! The service's side of the control socket: while `start` owns the database, one-shot
//! commands and applications send it requests (see [`super::protocol`]) on a Unix socket at
//! `service.socket_path` (the data directory's `control.sock` unless set).
//!
//! Requests are run by a fixed pool of workers, about one per core (at least 2): memory stays
//! flat however many callers come and go — each worker keeps one argon2 working buffer for
//! its whole life, where a thread per connection allocated a fresh 19 MiB one for every login
//! and glibc did not give it back (issue 15 point 1). The connections themselves are held by
//! [`super::slots`], which reads request lines, keeps each one's deadlines and hands whole
//! lines to the workers. A request waiting on a slow Keycloak holds one worker, bounded by the
//! configured timeouts (and the breaker, which stops calling a failing Keycloak).
//!
//! Who may connect is the socket file's business: its mode (`service.socket_mode`, 0600
//! unless set) and group (`service.socket_group`). What a caller may run is decided from its
//! peer credentials by [`super::access`]. The file is bound under a temporary name and given
//! its mode and group before it is renamed into place, so nobody reaches it before it has
//! them.
//!
//! At shutdown the service finishes the requests it is running, answers any request that
//! arrives meanwhile with `not_run` (the command line then sends it to the next holder of the
//! database), and removes the socket.

use super::access::Access;
use super::protocol::{Answer, Envelope};
use super::slots::{shutting_down, write_answer, Conn, Job, Slots, Work};
use super::EXIT_INPUT;
use crate::auth::Auth;
use crate::config::{Config, ConfigError, SocketConfig};
use anyhow::Context;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A client that does not read its answer for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most workers, however many cores: each may hold an argon2 buffer.
const MAX_WORKERS: usize = 16;

/// The listening socket, its connection thread and its workers.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    wake: Arc<UnixStream>,
    slots: Option<JoinHandle<usize>>,
    workers: Vec<JoinHandle<()>>,
}

/// The socket settings checked against this machine (the group looked up, the op names
/// checked): a mistake is a config error before the service opens anything.
#[derive(Clone)]
pub struct Settings {
    access: Access,
    gid: Option<u32>,
}

/// Checks `service.socket_group` and `service.application_ops` of `config`.
///
/// # Errors
///
/// [`ConfigError::Invalid`] naming the key: an unknown group, an unknown op.
pub fn check_settings(config: &Config) -> Result<Settings, ConfigError> {
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        file: config.source.clone(),
        key: key.to_string(),
        reason,
    };
    let socket = &config.service.socket;
    let access = Access::for_this_process(socket).map_err(|why| {
        let reason = why.split_once(": ").map_or(why.as_str(), |(_, r)| r);
        invalid("service.application_ops", reason.to_string())
    })?;
    let gid = match &socket.group {
        None => None,
        Some(group) => Some(group_id(group).map_err(|why| invalid("service.socket_group", why))?),
    };
    if gid.is_some() && socket.mode & 0o060 == 0 {
        log::warn!(
            "service.socket_group is set but service.socket_mode {:04o} gives the group no access (\"0660\" lets it connect)",
            socket.mode
        );
    }
    Ok(Settings { access, gid })
}

/// A group name or a numeric gid → the gid.
fn group_id(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("no group named {group:?} on this machine")),
        Err(e) => Err(format!("looking up group {group:?}: {e}")),
    }
}

/// How many workers run requests: the number of cores (at least 2, at most [`MAX_WORKERS`])
/// for the local work, plus one for each Keycloak call the bulkhead lets wait at once
/// (`keycloak.max_concurrent_calls`, at most [`MAX_WORKERS`] counted): however long those
/// calls hang, that many cores' worth of workers are left for local logins.
pub fn worker_count(max_concurrent_calls: usize) -> usize {
    let cores = std::thread::available_parallelism()
        .map_or(2, usize::from)
        .clamp(2, MAX_WORKERS);
    cores + max_concurrent_calls.min(MAX_WORKERS)
}

impl Server {
    /// Binds the socket configured for `auth` (with `settings`, from [`check_settings`] on
    /// the same config) and starts serving with `worker_threads` workers (`start`: [`worker_count`]);
    /// stops when `stop` becomes true (then [`Server::shutdown`] waits for the requests in
    /// flight).
    pub fn start(
        auth: Arc<Auth>,
        stop: Arc<AtomicBool>,
        settings: Settings,
        worker_threads: usize,
    ) -> anyhow::Result<Server> {
        let config = auth.client().config();
        let path = config.socket_path();
        let listener = bind(&path, &config.service.socket, settings.gid)?;
        listener
            .set_nonblocking(true)
            .context("control socket: non-blocking accept")?;
        let (wake_rx, wake_tx) = UnixStream::pair().context("control socket: wake pair")?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let wake = Arc::new(wake_tx);
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<Job>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Option<Conn>>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let access = Arc::new(settings.access);
        let mut workers = Vec::new();
        for i in 0..worker_threads.max(1) {
            let worker = Worker {
                auth: auth.clone(),
                stop: stop.clone(),
                access: access.clone(),
                wake: wake.clone(),
                done: done_tx.clone(),
            };
            let jobs = jobs_rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("control-{i}"))
                .spawn(move || worker.run(&jobs))
                .context("starting a control socket worker")?;
            workers.push(spawned);
        }
        let drain = drain_bound(&auth);
        let table = Slots::new(listener, wake_rx, jobs_tx, done_rx, stop.clone(), drain);
        let slots = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || table.run())
            .context("starting the control socket thread")?;
        log::info!(
            "serving one-shot commands on {} ({} workers)",
            path.display(),
            workers.len()
        );
        Ok(Server {
            path,
            stop,
            wake,
            slots: Some(slots),
            workers,
        })
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving: finishes the requests in flight (bounded), removes the socket.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = (&*self.wake).write(&[1]);
        let still_running = match self.slots.take().map(JoinHandle::join) {
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                log::error!("control socket thread panicked");
                1
            }
            None => 0,
        };
        if still_running > 0 {
            log::warn!(
                "{still_running} control socket request(s) still running at shutdown; not waiting longer"
            );
        } else {
            // Idle, and their queue is closed: they end at once.
            for worker in self.workers.drain(..) {
                let _ = worker.join();
            }
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != ErrorKind::NotFound {
                log::warn!("could not remove {}: {e}", self.path.display());
            }
        }
    }
}

/// Binds the socket at `path` with the configured mode and group: under a temporary name in
/// the same directory first, renamed into place once it has them.
fn bind(path: &Path, socket: &SocketConfig, gid: Option<u32>) -> anyhow::Result<UnixListener> {
    check_stale(path)?;
    let name = path
        .file_name()
        .with_context(|| format!("control socket {}: not a file path", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)
        .with_context(|| format!("listening on control socket {}", path.display()))?;
    let setup = (|| -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(gid))?;
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(socket.mode))?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = setup {
        let _ = std::fs::remove_file(&tmp);
        let group = gid.map(|g| format!(", group {g}")).unwrap_or_default();
        return Err(e).with_context(|| {
            format!(
                "setting up control socket {} (mode {:04o}{group})",
                path.display(),
                socket.mode
            )
        });
    }
    Ok(listener)
}

/// A file already at `path`: a socket nobody answers on is one left by a service that died
/// (it is replaced); a live one, or anything but a socket, is refused.
fn check_stale(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("control socket {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        anyhow::bail!(
            "control socket {}: a file that is not a socket is in the way; not replacing it (set service.socket_path elsewhere)",
            path.display()
        );
    }
    if UnixStream::connect(path).is_ok() {
        anyhow::bail!(
            "control socket {}: another service answers there; not replacing it (stop it, or set service.socket_path elsewhere)",
            path.display()
        );
    }
    log::warn!(
        "replaced the control socket {} left by a service that did not stop cleanly",
        path.display()
    );
    Ok(())
}

/// How long shutdown waits for requests in flight: one request's worth of Keycloak calls (a
/// password change: admin token, user lookup, credential date, reset, and one retry after a
/// refused token), each bounded by the configured timeout. A sync cycle stops between items.
fn drain_bound(auth: &Auth) -> Duration {
    auth.client().config().keycloak.timeout * 5 + Duration::from_secs(2)
}

/// One worker of the pool, with what it needs to run requests.
struct Worker {
    auth: Arc<Auth>,
    stop: Arc<AtomicBool>,
    access: Arc<Access>,
    wake: Arc<UnixStream>,
    done: Sender<Option<Conn>>,
}

impl Worker {
    /// Runs jobs until the connection thread closes the queue.
    fn run(self, jobs: &Mutex<Receiver<Job>>) {
        loop {
            let job = {
                let queue = jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                queue.recv()
            };
            let Ok(job) = job else { return };
            // A panic in one request must not cost the pool a worker, nor the table a slot.
            let back = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.serve(job)))
                .unwrap_or_else(|_| {
                    log::error!("control socket: a request panicked; its connection was closed");
                    None
                });
            let _ = self.done.send(back);
            // Non-blocking: when the wake socket is full, the connection thread is awake anyway.
            let _ = (&*self.wake).write(&[1]);
        }
    }

    /// Writes the job's answer; the connection back when it stays open.
    fn serve(&self, job: Job) -> Option<Conn> {
        let Job { mut conn, work } = job;
        let setup = conn
            .stream
            .set_nonblocking(false)
            .and_then(|()| conn.stream.set_write_timeout(Some(WRITE_TIMEOUT)));
        if let Err(e) = setup {
            log::warn!("control socket: could not set up a connection: {e}");
            return None;
        }
        let (answer, close) = match work {
            Work::Reply(answer) => (answer, true),
            Work::Run(_) if self.stop.load(Ordering::SeqCst) => (shutting_down(), true),
            Work::Run(line) => (self.handle(&line, conn.uid), false),
        };
        if write_answer(&mut conn.stream, &answer).is_err() || close {
            return None;
        }
        conn.stream.set_nonblocking(true).ok()?;
        conn.answered();
        Some(conn)
    }

    /// Parses and runs one request line from a peer running as `uid`.
    fn handle(&self, line: &[u8], uid: u32) -> Answer {
        let Ok(text) = std::str::from_utf8(line) else {
            return Answer::error(EXIT_INPUT, "bad request: not UTF-8");
        };
        match Envelope::parse(text.trim_end()) {
            Ok(envelope) => {
                let op = envelope.request.op();
                if let Some(refusal) = self.access.check(uid, op) {
                    return refusal;
                }
                log::debug!("control socket: {op} (uid {uid})");
                let stop = &self.stop;
                super::answer(envelope.request, envelope.format, &self.auth, &|| {
                    stop.load(Ordering::SeqCst)
                })
            }
            Err(why) => Answer::error(EXIT_INPUT, &format!("bad request: {why}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_resolve_by_name_or_number_and_unknown_ones_are_named() {
        assert_eq!(group_id("0"), Ok(0));
        assert_eq!(group_id("root"), Ok(0));
        let err = group_id("no-such-group-kr").unwrap_err();
        assert_eq!(err, "no group named \"no-such-group-kr\" on this machine");
    }

    #[test]
    fn the_pool_has_at_least_two_workers_and_a_bound() {
        let n = worker_count(0);
        assert!((2..=MAX_WORKERS).contains(&n), "{n}");
        assert_eq!(
            worker_count(3),
            n + 3,
            "a worker for each call the bulkhead admits"
        );
        assert_eq!(worker_count(1000), n + MAX_WORKERS);
    }
}
