//! The service's side of the control socket: while `start` owns the database, one-shot
//! commands and applications send it requests (see [`super::protocol`]) on a Unix socket
//! beside the database.
//!
//! One thread per connection, so a request waiting on a slow Keycloak holds up nobody else:
//! the engine holds no lock across a Keycloak call, and each call is bounded by the configured
//! timeouts. Requests are bounded too: a line over [`MAX_REQUEST_BYTES`] or one that takes
//! longer than [`REQUEST_TIMEOUT`] to arrive is answered with an error and the connection
//! closed; at most [`MAX_CLIENTS`] connections are served at once. A malformed request gets an
//! error answer; nothing a client sends stops the service.
//!
//! The socket is owner-only (0600, in a 0700 directory). At shutdown the service finishes the
//! requests it is running, answers any request that arrives meanwhile with `not_run` (the
//! command line then sends it to the next holder of the database), and removes the socket.

use super::protocol::{Answer, Envelope, MAX_REQUEST_BYTES};
use super::EXIT_INPUT;
use crate::auth::Auth;
use anyhow::Context;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The socket's file name inside the data directory.
pub const SOCKET_FILE: &str = "control.sock";
/// Connections served at once; more are answered "busy".
pub const MAX_CLIENTS: usize = 64;
/// A request line must arrive whole within this time of its first byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often blocked reads and the accept loop look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// A client that does not read its answer for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The listening socket and its accept thread.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds the socket beside the database of `auth` and starts serving; stops when `stop`
    /// becomes true (then [`Server::shutdown`] waits for the requests in flight).
    pub fn start(auth: Arc<Auth>, stop: Arc<AtomicBool>) -> anyhow::Result<Server> {
        let path = auth.client().store().path().join(SOCKET_FILE);
        // This process holds the database lock, so a socket file here belongs to a service
        // that died without cleaning up: nobody listens on it any more.
        match std::fs::remove_file(&path) {
            Ok(()) => log::warn!(
                "replaced the control socket {} left by a service that did not stop cleanly",
                path.display()
            ),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing stale socket {}", path.display()))
            }
        }
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("listening on control socket {}", path.display()))?;
        // The directory is 0700, so nobody else could reach the socket before this.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("restricting control socket {}", path.display()))?;
        }
        listener
            .set_nonblocking(true)
            .context("control socket: non-blocking accept")?;
        let drain = drain_bound(&auth);
        let acceptor = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("control".into())
                .spawn(move || accept_loop(listener, auth, stop, drain))
                .context("starting the control socket thread")?
        };
        log::info!("serving one-shot commands on {}", path.display());
        Ok(Server {
            path,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving: finishes the requests in flight (bounded), removes the socket.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            if acceptor.join().is_err() {
                log::error!("control socket thread panicked");
            }
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != ErrorKind::NotFound {
                log::warn!("could not remove {}: {e}", self.path.display());
            }
        }
    }
}

/// How long shutdown waits for requests in flight: one request's worth of Keycloak calls (a
/// password change: admin token, user lookup, credential date, reset, and one retry after a
/// refused token), each bounded by the configured timeout. A sync cycle stops between items.
fn drain_bound(auth: &Auth) -> Duration {
    auth.client().config().keycloak.timeout * 5 + Duration::from_secs(2)
}

fn accept_loop(listener: UnixListener, auth: Arc<Auth>, stop: Arc<AtomicBool>, drain: Duration) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                workers.retain(|w| !w.is_finished());
                if active.load(Ordering::SeqCst) >= MAX_CLIENTS {
                    // Not run: the command line tries again until its --lock-timeout.
                    refuse(
                        stream,
                        &Answer {
                            not_run: true,
                            ..Answer::error(
                                super::EXIT_RUNTIME,
                                "the service is serving too many connections; the request was not run",
                            )
                        },
                    );
                    continue;
                }
                let guard = Active::enter(&active);
                let (auth, stop) = (auth.clone(), stop.clone());
                let spawned = std::thread::Builder::new()
                    .name("control-client".into())
                    .spawn(move || {
                        let _guard = guard;
                        serve(stream, &auth, &stop);
                    });
                match spawned {
                    Ok(w) => workers.push(w),
                    Err(e) => log::error!("control socket: could not start a thread: {e}"),
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => {
                log::warn!("control socket: accept failed: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
    // Stopping: finish what runs, and tell whoever arrives meanwhile that nothing was done.
    let deadline = Instant::now() + drain;
    loop {
        workers.retain(|w| !w.is_finished());
        while let Ok((stream, _)) = listener.accept() {
            refuse(stream, &shutting_down());
        }
        if workers.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            log::warn!(
                "{} control socket request(s) still running at shutdown; not waiting longer",
                workers.len()
            );
            break;
        }
        std::thread::sleep(POLL);
    }
}

fn shutting_down() -> Answer {
    Answer {
        not_run: true,
        ..Answer::error(
            super::EXIT_RUNTIME,
            "the service is shutting down; the request was not run",
        )
    }
}

/// Counts a connection as active until dropped.
struct Active(Arc<AtomicUsize>);

impl Active {
    fn enter(count: &Arc<AtomicUsize>) -> Active {
        count.fetch_add(1, Ordering::SeqCst);
        Active(count.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers without reading (the request, if any, stays unread).
fn refuse(mut stream: UnixStream, answer: &Answer) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = write_answer(&mut stream, answer);
}

fn write_answer(stream: &mut UnixStream, answer: &Answer) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(answer).map_err(std::io::Error::other)?;
    line.push(b'\n');
    // One write of the whole line: a client reads an answer whole or not at all (it needs
    // the newline), so a service killed mid-write never leaves a partial answer that looks
    // complete.
    stream.write_all(&line)?;
    stream.flush()
}

/// What reading a request line came to.
enum Next {
    Line(Vec<u8>),
    Closed,
    TooLong,
    Slow,
    Stopping { partial: bool },
}

/// Serves one connection: requests one per line, answered in order, until the client closes
/// it, idles, misbehaves or the service stops.
fn serve(mut stream: UnixStream, auth: &Auth, stop: &AtomicBool) {
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(POLL)))
        .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)));
    if let Err(e) = setup {
        log::warn!("control socket: could not set up a connection: {e}");
        return;
    }
    let mut pending = Vec::new();
    loop {
        // After a request too long or too slow, the rest of the stream cannot be trusted to
        // start at a line: answer, then close.
        let (answer, close) = match next_line(&mut stream, &mut pending, stop) {
            Next::Line(_) if stop.load(Ordering::SeqCst) => (shutting_down(), true),
            Next::Line(line) => (handle(&line, auth, stop), false),
            Next::Closed | Next::Stopping { partial: false } => return,
            Next::Stopping { partial: true } => (shutting_down(), true),
            Next::TooLong => (
                Answer::error(
                    EXIT_INPUT,
                    &format!("bad request: longer than {MAX_REQUEST_BYTES} bytes"),
                ),
                true,
            ),
            Next::Slow => (
                Answer::error(
                    EXIT_INPUT,
                    &format!(
                        "bad request: incomplete after {}s (one JSON object per line)",
                        REQUEST_TIMEOUT.as_secs()
                    ),
                ),
                true,
            ),
        };
        if write_answer(&mut stream, &answer).is_err() || close {
            return;
        }
    }
}

/// Reads up to the next newline into a line; bytes after it stay in `pending`.
fn next_line(stream: &mut UnixStream, pending: &mut Vec<u8>, stop: &AtomicBool) -> Next {
    let mut started: Option<Instant> = (!pending.is_empty()).then(Instant::now);
    let idle_since = Instant::now();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            return if line.len() > MAX_REQUEST_BYTES + 1 {
                Next::TooLong
            } else {
                Next::Line(line)
            };
        }
        if pending.len() > MAX_REQUEST_BYTES {
            return Next::TooLong;
        }
        if stop.load(Ordering::SeqCst) {
            // A request may be waiting unread (sent just before the stop): one more read
            // finds it, so that it is answered "not run" rather than dropped unanswered.
            if pending.is_empty() {
                if let Ok(n @ 1..) = stream.read(&mut chunk) {
                    pending.extend_from_slice(&chunk[..n]);
                }
            }
            return Next::Stopping {
                partial: !pending.is_empty(),
            };
        }
        match started {
            Some(t) if t.elapsed() > REQUEST_TIMEOUT => return Next::Slow,
            None if idle_since.elapsed() > IDLE_TIMEOUT => return Next::Closed,
            _ => {}
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Next::Closed,
            Ok(n) => {
                started.get_or_insert_with(Instant::now);
                pending.extend_from_slice(&chunk[..n]);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Next::Closed,
        }
    }
}

/// Parses and runs one request line.
fn handle(line: &[u8], auth: &Auth, stop: &AtomicBool) -> Answer {
    let Ok(text) = std::str::from_utf8(line) else {
        return Answer::error(EXIT_INPUT, "bad request: not UTF-8");
    };
    match Envelope::parse(text.trim_end()) {
        Ok(envelope) => {
            log::debug!("control socket: {}", envelope.request.op());
            super::answer(envelope.request, envelope.format, auth, &|| {
                stop.load(Ordering::SeqCst)
            })
        }
        Err(why) => Answer::error(EXIT_INPUT, &format!("bad request: {why}")),
    }
}
