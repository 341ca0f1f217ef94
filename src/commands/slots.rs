//! The control socket's connections: one thread accepts them, reads their request lines and
//! keeps their deadlines, and hands each whole line to the workers of [`super::server`]; the
//! connection comes back once its answer is written.
//!
//! Why one thread: a connection costs a slot in a table, not a thread, so memory does not grow
//! with callers (issue 15 point 1), and the thread sleeps in `poll(2)` until something
//! happens — a connection arrives and is accepted at once, a line is read, a deadline falls
//! due, or the service wakes it to stop (issue 15 point 6). When every slot is taken, the
//! connection idle the longest (connected, no request under way) is closed to make room: idle
//! callers cannot lock others out. A request under way keeps its slot and its
//! [`REQUEST_TIMEOUT`]; only when every slot holds one is a newcomer answered "busy".

use super::protocol::{Answer, MAX_REQUEST_BYTES};
use super::EXIT_INPUT;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections open at once (waiting, sending or being answered).
pub const MAX_CLIENTS: usize = 64;
/// A request line must arrive whole within this time of its first byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// After an accept error other than "nothing waiting" (out of file descriptors), how long
/// to leave the listener alone before trying again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// A client connection and what it sent so far.
pub struct Conn {
    /// The socket (non-blocking while it waits here).
    pub stream: UnixStream,
    /// The peer's uid, from the kernel.
    pub uid: u32,
    pending: Vec<u8>,
    idle_since: Instant,
    started: Option<Instant>,
    eof: bool,
}

impl Conn {
    fn new(stream: UnixStream, uid: u32) -> Conn {
        Conn {
            stream,
            uid,
            pending: Vec::new(),
            idle_since: Instant::now(),
            started: None,
            eof: false,
        }
    }

    /// After an answer: idle again, unless the next request already started arriving.
    pub fn answered(&mut self) {
        self.idle_since = Instant::now();
        self.started = (!self.pending.is_empty()).then(Instant::now);
    }

    /// Reads what is there without blocking, stopping at a whole line or the size limit (the
    /// rest stays in the kernel's buffer). False when the connection failed.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        while !self.eof && !self.pending.contains(&b'\n') && self.pending.len() <= MAX_REQUEST_BYTES
        {
            match self.stream.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.started.get_or_insert_with(Instant::now);
                    self.pending.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    fn take_line(&mut self) -> Option<Vec<u8>> {
        let end = self.pending.iter().position(|&b| b == b'\n')?;
        Some(self.pending.drain(..=end).collect())
    }

    /// When this connection needs looking at even if it sends nothing.
    fn deadline(&self) -> Instant {
        match self.started {
            Some(t) => t + REQUEST_TIMEOUT,
            None => self.idle_since + IDLE_TIMEOUT,
        }
    }
}

/// What a worker is given.
pub enum Work {
    /// A request line to run and answer; the connection comes back afterwards.
    Run(Vec<u8>),
    /// An answer to write, then close.
    Reply(Answer),
}

/// A connection and what to do for it.
pub struct Job {
    /// The connection.
    pub conn: Conn,
    /// The work.
    pub work: Work,
}

/// The connection table and its thread's ends of the channels.
pub struct Slots {
    /// The listening socket (non-blocking).
    pub listener: UnixListener,
    /// Readable when a worker finished or the service stops.
    pub wake: UnixStream,
    /// To the workers.
    pub jobs: Sender<Job>,
    /// From the workers: the connection back, or `None` when it was closed.
    pub done: Receiver<Option<Conn>>,
    /// Set when the service stops.
    pub stop: Arc<AtomicBool>,
    /// How long to wait for the requests running when the stop comes.
    pub drain: Duration,
    open: Vec<Conn>,
    busy: usize,
    accept_paused_until: Option<Instant>,
}

/// The answer for a request that arrives while the service stops: not run, so that the
/// command line sends it to the next holder of the database.
pub fn shutting_down() -> Answer {
    Answer {
        not_run: true,
        ..Answer::error(
            super::EXIT_RUNTIME,
            "the service is shutting down; the request was not run",
        )
    }
}

fn busy_answer() -> Answer {
    // Not run: the command line tries again until its --lock-timeout.
    Answer {
        not_run: true,
        ..Answer::error(
            super::EXIT_RUNTIME,
            "the service is serving too many connections; the request was not run",
        )
    }
}

/// Writes `answer` as one line: a client reads an answer whole or not at all (it needs the
/// newline), so a service killed mid-write never leaves a partial answer that looks complete.
pub fn write_answer(stream: &mut UnixStream, answer: &Answer) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(answer).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    stream.flush()
}

/// Answers a fresh connection without reading from it, without blocking: its send buffer is
/// empty, and an answer is far smaller.
fn refuse(mut stream: UnixStream, answer: &Answer) {
    let _ = stream.set_nonblocking(true);
    let _ = write_answer(&mut stream, answer);
}

impl Slots {
    /// The table, empty.
    pub fn new(
        listener: UnixListener,
        wake: UnixStream,
        jobs: Sender<Job>,
        done: Receiver<Option<Conn>>,
        stop: Arc<AtomicBool>,
        drain: Duration,
    ) -> Slots {
        Slots {
            listener,
            wake,
            jobs,
            done,
            stop,
            drain,
            open: Vec::new(),
            busy: 0,
            accept_paused_until: None,
        }
    }

    /// Serves until the service stops and the requests then running are answered (or the
    /// drain bound passes); returns how many were still running.
    pub fn run(mut self) -> usize {
        let mut drain_until: Option<Instant> = None;
        loop {
            let stopping = self.stop.load(Ordering::SeqCst);
            if stopping && drain_until.is_none() {
                drain_until = Some(Instant::now() + self.drain);
            }
            if let Some(until) = drain_until {
                if self.busy == 0 && self.open.is_empty() || Instant::now() >= until {
                    return self.busy;
                }
            }
            let (woken, accept, readable) = self.wait(drain_until);
            if woken {
                self.drain_wake();
            }
            let stopping = self.stop.load(Ordering::SeqCst);
            let open = std::mem::take(&mut self.open);
            for (mut conn, ready) in open.into_iter().zip(readable) {
                // Stopping: one more read finds a request sent just before the stop, so that
                // it is answered "not run" rather than dropped unanswered.
                if (ready || stopping) && !conn.fill() {
                    continue;
                }
                self.keep_or_dispatch(conn, stopping);
            }
            while let Ok(back) = self.done.try_recv() {
                self.busy = self.busy.saturating_sub(1);
                if let Some(conn) = back {
                    self.keep_or_dispatch(conn, stopping);
                }
            }
            if accept {
                self.accept_all(stopping);
            }
        }
    }

    /// Sleeps in poll(2) until the wake socket, the listener or a connection is readable, or
    /// the next deadline; returns which were ready.
    fn wait(&mut self, drain_until: Option<Instant>) -> (bool, bool, Vec<bool>) {
        let now = Instant::now();
        let listening = self.accept_paused_until.is_none_or(|t| now >= t);
        if listening {
            self.accept_paused_until = None;
        }
        let next = self
            .open
            .iter()
            .map(Conn::deadline)
            .chain(drain_until)
            .chain(self.accept_paused_until)
            .min();
        let timeout = match next {
            None => PollTimeout::NONE,
            Some(t) => {
                // Rounded up, so that the deadline has passed on waking.
                let ms = t.saturating_duration_since(now).as_millis() + 1;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = Vec::with_capacity(self.open.len() + 2);
        fds.push(PollFd::new(self.wake.as_fd(), PollFlags::POLLIN));
        fds.push(PollFd::new(
            self.listener.as_fd(),
            if listening {
                PollFlags::POLLIN
            } else {
                PollFlags::empty()
            },
        ));
        for conn in &self.open {
            fds.push(PollFd::new(conn.stream.as_fd(), PollFlags::POLLIN));
        }
        if let Err(e) = poll(&mut fds, timeout) {
            if e != nix::errno::Errno::EINTR {
                log::warn!("control socket: poll failed: {e}");
            }
            return (false, false, vec![false; self.open.len()]);
        }
        let ready = |fd: &PollFd| fd.any().unwrap_or(false);
        let woken = ready(&fds[0]);
        let accept = listening && ready(&fds[1]);
        (woken, accept, fds[2..].iter().map(ready).collect())
    }

    fn drain_wake(&mut self) {
        let mut buf = [0u8; 256];
        loop {
            match self.wake.read(&mut buf) {
                Ok(0) => {
                    // Every waker is gone: nobody can stop us any more but this.
                    self.stop.store(true, Ordering::SeqCst);
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Hands a whole line (or an answer for a bad one) to a worker, or keeps the connection
    /// waiting, or closes it.
    fn keep_or_dispatch(&mut self, mut conn: Conn, stopping: bool) {
        if let Some(line) = conn.take_line() {
            let work = if line.len() > MAX_REQUEST_BYTES + 1 {
                Work::Reply(too_long())
            } else if stopping {
                Work::Reply(shutting_down())
            } else {
                Work::Run(line)
            };
            return self.dispatch(conn, work);
        }
        if conn.pending.len() > MAX_REQUEST_BYTES {
            return self.dispatch(conn, Work::Reply(too_long()));
        }
        if conn.eof {
            return; // closed by the client: nothing more to answer
        }
        if stopping {
            if !conn.pending.is_empty() {
                self.dispatch(conn, Work::Reply(shutting_down()));
            }
            return;
        }
        let now = Instant::now();
        match conn.started {
            Some(t) if now.duration_since(t) >= REQUEST_TIMEOUT => {
                self.dispatch(conn, Work::Reply(too_slow()))
            }
            None if now.duration_since(conn.idle_since) >= IDLE_TIMEOUT => {}
            _ => self.open.push(conn),
        }
    }

    fn dispatch(&mut self, conn: Conn, work: Work) {
        if self.jobs.send(Job { conn, work }).is_ok() {
            self.busy += 1;
        }
    }

    /// Accepts every connection waiting.
    fn accept_all(&mut self, stopping: bool) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("control socket: accept failed: {e}");
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
            };
            if stopping {
                refuse(stream, &shutting_down());
                continue;
            }
            if self.open.len() + self.busy >= MAX_CLIENTS && !self.close_idlest() {
                refuse(stream, &busy_answer());
                continue;
            }
            let uid = match super::access::peer_uid(&stream) {
                Ok(uid) => uid,
                Err(e) => {
                    log::warn!("control socket: no peer credentials, connection closed: {e}");
                    continue;
                }
            };
            if let Err(e) = stream.set_nonblocking(true) {
                log::warn!("control socket: could not set up a connection: {e}");
                continue;
            }
            self.open.push(Conn::new(stream, uid));
        }
    }

    /// Closes the connection idle the longest (no request under way); false when every
    /// connection has one under way or is being answered.
    fn close_idlest(&mut self) -> bool {
        let idlest = self
            .open
            .iter()
            .enumerate()
            .filter(|(_, c)| c.pending.is_empty() && c.started.is_none())
            .min_by_key(|(_, c)| c.idle_since)
            .map(|(i, _)| i);
        match idlest {
            Some(i) => {
                let conn = self.open.swap_remove(i);
                log::debug!(
                    "control socket: every slot taken; closed the connection of uid {} idle for {:.1}s",
                    conn.uid,
                    conn.idle_since.elapsed().as_secs_f64()
                );
                true
            }
            None => false,
        }
    }
}

fn too_long() -> Answer {
    Answer::error(
        EXIT_INPUT,
        &format!("bad request: longer than {MAX_REQUEST_BYTES} bytes"),
    )
}

fn too_slow() -> Answer {
    Answer::error(
        EXIT_INPUT,
        &format!(
            "bad request: incomplete after {}s (one JSON object per line)",
            REQUEST_TIMEOUT.as_secs()
        ),
    )
}
