//! Who owns a data directory: an advisory lock on `lock` beside the database, and a note in
//! it naming the holder.
//!
//! sled takes a lock of its own, but it is all-or-nothing: a second process is refused at once
//! with "could not acquire lock", and nobody can tell who holds it. Taking our own lock first
//! gives three things sled's does not: waiting for a bounded time (one-shot commands queue up
//! behind each other instead of failing), a message that names the holder (its pid, its
//! command, since when), and a moment where this process alone may tidy the directory before
//! sled reads it (see [`remove_stale_snapshots`]). The kernel drops the lock when its holder
//! exits, SIGKILL included, so a crashed holder never blocks anyone.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "lock";
/// How long to sleep between attempts while another process holds the lock: from the first
/// pause, doubled each time up to the longest. Most holders are one-shot commands that let go
/// within milliseconds; a fixed 20 ms pause added up to 20 ms to a login that found one.
pub const POLL_FIRST: Duration = Duration::from_millis(1);
/// See [`POLL_FIRST`].
pub const POLL_LONGEST: Duration = Duration::from_millis(20);

/// The pause after `pause` (see [`POLL_FIRST`]).
pub fn next_poll(pause: Duration) -> Duration {
    (pause * 2).min(POLL_LONGEST)
}

static LABEL: OnceLock<String> = OnceLock::new();

/// Names what this process is doing, for the holder note (`sync-now`, `start`, …). Set once,
/// by the binary; a library user's processes are described as such.
pub fn set_holder_label(label: &str) {
    let _ = LABEL.set(label.to_string());
}

fn holder_label() -> &'static str {
    LABEL
        .get()
        .map(String::as_str)
        .unwrap_or("a program using the keycloak_resilient library")
}

/// The held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Why the lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Someone else held it for the whole wait; their note, if readable.
    Busy {
        /// Who holds the lock, when its note could be read.
        holder: Option<Holder>,
    },
    /// The lock file could not be opened or locked.
    Io(io::Error),
}

/// What the holder wrote about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// What it is doing (`start`, `sync-now`, …).
    pub label: String,
    /// Since when (RFC 3339).
    pub since: String,
}

impl Holder {
    /// Whether the holder is the long-running service (which answers on the socket).
    pub fn is_service(&self) -> bool {
        self.label == "start"
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} (`{}`, since {})",
            self.pid, self.label, self.since
        )
    }
}

/// Takes the lock on `dir`, waiting up to `wait` for another holder to let go.
pub fn acquire(dir: &Path, wait: Duration) -> Result<DirLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let mut file = open_private(&path).map_err(LockError::Io)?;
    let deadline = Instant::now() + wait;
    let mut pause = POLL_FIRST;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = next_poll(pause);
            }
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Busy {
                    holder: read_holder(&mut file),
                })
            }
            Err(TryLockError::Error(e)) => return Err(LockError::Io(e)),
        }
    }
    // The note is a courtesy for error messages; failing to write it does not stop anything.
    let note = format!(
        "{}\n{}\n{}\n",
        std::process::id(),
        holder_label(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(note.as_bytes()));
    if let Err(e) = written {
        log::debug!("could not write the holder note in {}: {e}", path.display());
    }
    Ok(DirLock { _file: file })
}

/// The holder note of `dir`'s lock, whether or not anyone holds it now.
pub fn holder(dir: &Path) -> Option<Holder> {
    let mut file = File::open(dir.join(LOCK_FILE)).ok()?;
    read_holder(&mut file)
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(4096).read_to_string(&mut text).ok()?;
    parse_holder(&text)
}

/// Parses a holder note: pid, label, time, a line each. Pure.
pub fn parse_holder(text: &str) -> Option<Holder> {
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let label = lines.next()?.trim().to_string();
    let since = lines.next()?.trim().to_string();
    Some(Holder { pid, label, since })
}

fn open_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Removes sled's half-written snapshots (`snap.*.generating`) from `dir`; returns what it
/// removed. sled writes a snapshot to such a file and renames it when complete, but on opening
/// it reads the newest `snap.*` file *including* these: a kill in between leaves a short file
/// that sled then rejects as "Read corrupted data", forever. Only the process holding the lock
/// may call this, so no live writer's file is taken away.
pub fn remove_stale_snapshots(dir: &Path, _held: &DirLock) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let stale = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("snap.") && n.ends_with(".generating"));
        if stale {
            fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_notes_parse_and_reject_garbage() {
        let h = parse_holder("42\nsync-now\n2026-12-01T10:00:00Z\n").unwrap();
        assert_eq!(h.pid, 42);
        assert_eq!(h.label, "sync-now");
        assert!(!h.is_service());
        assert_eq!(
            h.to_string(),
            "pid 42 (`sync-now`, since 2026-12-01T10:00:00Z)"
        );
        assert!(parse_holder("").is_none());
        assert!(parse_holder("x\nstart\nnow\n").is_none());
        assert!(parse_holder("7\nstart\n").is_none());
    }

    #[test]
    fn a_second_lock_in_the_same_process_waits_then_reports_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path(), Duration::ZERO).unwrap();
        // flock locks belong to the open file, so a second open in this process conflicts.
        match acquire(dir.path(), Duration::from_millis(60)) {
            Err(LockError::Busy { holder: Some(h) }) => assert_eq!(h.pid, std::process::id()),
            other => panic!("expected Busy with a holder, got {other:?}"),
        }
        drop(first);
        acquire(dir.path(), Duration::ZERO).unwrap();
    }

    #[test]
    fn only_half_written_snapshots_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let lock = acquire(dir.path(), Duration::ZERO).unwrap();
        fs::write(dir.path().join("snap.00000000000001A0.generating"), b"").unwrap();
        fs::write(dir.path().join("snap.0000000000000100"), b"kept").unwrap();
        fs::write(dir.path().join("db"), b"kept").unwrap();
        let removed = remove_stale_snapshots(dir.path(), &lock).unwrap();
        assert_eq!(removed.len(), 1);
        assert!(!dir.path().join("snap.00000000000001A0.generating").exists());
        assert!(dir.path().join("snap.0000000000000100").exists());
        assert!(dir.path().join("db").exists());
    }
}
