//! The bulkhead: at most `keycloak.max_concurrent_calls` Keycloak calls in flight.
//!
//! The breaker counts only finished calls, so at the start of a hang every concurrent login
//! would go to Keycloak and wait its full timeout. The bulkhead bounds that: a call that finds
//! every slot taken is not made (the caller takes the cached or local path at once).
//!
//! A slot is an advisory lock on one of `limit` small files in the data directory
//! (`keycloak-calls/slot-N`). That makes the bound hold across processes as well as threads —
//! one-shot commands started side by side share it, and they make their call without holding
//! the data directory's lock — and the kernel drops a slot when its holder exits, however it
//! exits, so a crash never leaks one.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The folder of slot files inside the data directory.
pub const SLOT_DIR: &str = "keycloak-calls";

/// The slots of one data directory (or of one process, for a temporary database).
#[derive(Debug, Clone)]
pub struct Bulkhead {
    /// The slot files' folder; `None`: slots counted in memory.
    dir: Option<PathBuf>,
    /// Calls in flight, when counted in memory.
    in_flight: Arc<AtomicUsize>,
    limit: usize,
}

/// A held slot; released when dropped.
#[derive(Debug)]
pub struct Slot {
    _file: Option<File>,
    /// The in-memory count this slot holds one of.
    counted: Option<Arc<AtomicUsize>>,
}

impl Slot {
    /// A slot that holds nothing: for a call made under another call's slot, or when a slot
    /// file could not be used.
    pub(crate) fn unbounded() -> Slot {
        Slot {
            _file: None,
            counted: None,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(n) = &self.counted {
            n.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Bulkhead {
    /// `limit` slots in `data_dir` (at least one), shared with every process using it.
    pub fn new(data_dir: &Path, limit: usize) -> Bulkhead {
        Bulkhead {
            dir: Some(data_dir.join(SLOT_DIR)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            limit: limit.max(1),
        }
    }

    /// `limit` slots counted in this process only (a temporary database has no directory).
    pub fn in_memory(limit: usize) -> Bulkhead {
        Bulkhead {
            dir: None,
            in_flight: Arc::new(AtomicUsize::new(0)),
            limit: limit.max(1),
        }
    }

    /// The configured limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes a free slot, without waiting; `None` when all are held. A slot file that cannot
    /// be opened or locked (a full disk, a read-only directory) is logged and treated as
    /// free: the bulkhead protects Keycloak and our callers, it must not stop every call.
    pub fn try_enter(&self) -> Option<Slot> {
        let Some(dir) = &self.dir else {
            let n = &self.in_flight;
            let limit = self.limit;
            return n
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| {
                    (k < limit).then_some(k + 1)
                })
                .ok()
                .map(|_| Slot {
                    _file: None,
                    counted: Some(n.clone()),
                });
        };
        if let Err(e) = std::fs::create_dir_all(dir) {
            log::warn!("bulkhead folder {}: {e}; call not bounded", dir.display());
            return Some(Slot::unbounded());
        }
        for i in 0..self.limit {
            let path = dir.join(format!("slot-{i}"));
            let file = match open_private(&path) {
                Ok(f) => f,
                Err(e) => {
                    log::warn!("bulkhead slot {}: {e}; call not bounded", path.display());
                    return Some(Slot::unbounded());
                }
            };
            match file.try_lock() {
                Ok(()) => {
                    return Some(Slot {
                        _file: Some(file),
                        counted: None,
                    })
                }
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Error(e)) => {
                    log::warn!("bulkhead slot {}: {e}; call not bounded", path.display());
                    return Some(Slot::unbounded());
                }
            }
        }
        None
    }
}

/// The background probe's turn: an advisory lock on `keycloak-calls/probe`. A one-shot login
/// that finds the half-open trial due starts a `probe` process instead of making the trial
/// itself; the lock keeps it to one such probe per data directory, however many logins found
/// the trial due side by side.
#[derive(Debug)]
pub struct ProbeTurn {
    _file: File,
}

impl ProbeTurn {
    /// Takes the turn without waiting; `Ok(None)` while another process holds it.
    ///
    /// # Errors
    ///
    /// The folder or the file cannot be made or opened.
    pub fn try_take(data_dir: &Path) -> std::io::Result<Option<ProbeTurn>> {
        let dir = data_dir.join(SLOT_DIR);
        std::fs::create_dir_all(&dir)?;
        let file = open_private(&dir.join("probe"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(ProbeTurn { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

fn open_private(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_limit_slots_are_held_and_a_dropped_one_is_free_again() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bulkhead::new(dir.path(), 2);
        let one = b.try_enter().expect("first slot");
        let two = b.try_enter().expect("second slot");
        assert!(b.try_enter().is_none(), "a third call is refused");
        // Another process's view: a second handle on the same folder sees the same slots.
        assert!(Bulkhead::new(dir.path(), 2).try_enter().is_none());
        drop(one);
        let three = b.try_enter().expect("a released slot is free");
        drop((two, three));

        let m = Bulkhead::in_memory(1);
        let held = m.try_enter().expect("slot");
        assert!(m.try_enter().is_none());
        drop(held);
        assert!(m.try_enter().is_some());
    }

    #[test]
    fn one_probe_turn_per_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let turn = ProbeTurn::try_take(dir.path()).unwrap().expect("free");
        assert!(ProbeTurn::try_take(dir.path()).unwrap().is_none());
        drop(turn);
        assert!(ProbeTurn::try_take(dir.path()).unwrap().is_some());
    }
}
