//! A full disk, and getting over it without a restart.
//!
//! sled keeps the first I/O error of a flush and answers every later write with it, for as
//! long as the database stays open: once the disk was full, freeing space does not help the
//! process that met it. So the service watches for it ([`DiskWatch`]): a flush that fails for
//! lack of space marks the database stuck; from then on it tries, every few seconds, whether
//! the data directory's filesystem takes a write again (a probe file written, synced and
//! removed). Once it does, the service closes the database and opens it again — nothing that
//! was acknowledged is lost, since every acknowledgement came after its flush.

use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// How often a stuck database's directory is probed for space.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How often a flush checks whether the database met a full disk (sled flushes every second
/// on its own, so this adds no disk work to speak of).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Bytes the probe writes: room for a few of sled's writes, not just one byte.
const PROBE_BYTES: usize = 1024 * 1024;
/// The probe file, in the data directory (removed at once).
const PROBE_FILE: &str = ".space-probe";

/// Whether `e` says the disk (or a quota, or a file size limit) is full. sled hands some I/O
/// errors on as text of their `Debug` form, so the text is read too.
pub fn is_full(e: &io::Error) -> bool {
    use io::ErrorKind as K;
    if matches!(
        e.kind(),
        K::StorageFull | K::FileTooLarge | K::QuotaExceeded
    ) {
        return true;
    }
    let text = format!("{e:?}");
    [
        "StorageFull",
        "FileTooLarge",
        "QuotaExceeded",
        "No space left",
    ]
    .iter()
    .any(|k| text.contains(k))
}

/// Whether `dir`'s filesystem takes a write of [`PROBE_BYTES`] now.
pub fn takes_writes(dir: &Path) -> bool {
    let path = dir.join(PROBE_FILE);
    let written = (|| -> io::Result<()> {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&vec![0u8; PROBE_BYTES])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    written.is_ok()
}

/// What the service's loop does about a full disk; pure but for the two calls it is given.
#[derive(Debug, Default)]
pub struct DiskWatch {
    stuck_since: Option<Instant>,
    next_probe: Option<Instant>,
}

/// What [`DiskWatch::tick`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disk {
    /// Writes work (or nothing says otherwise).
    Fine,
    /// The database met a full disk and space is still short.
    Stuck,
    /// Space is back: close and reopen the database.
    Reopen,
}

impl DiskWatch {
    /// One look at `now`: `flush_full` says whether a flush fails for lack of space (asked
    /// every [`CHECK_EVERY`] while not known to be stuck), `space` whether the directory takes
    /// a write again (asked every [`PROBE_EVERY`] while stuck).
    pub fn tick(
        &mut self,
        now: Instant,
        flush_full: impl FnOnce() -> bool,
        space: impl FnOnce() -> bool,
    ) -> Disk {
        let Some(since) = self.stuck_since else {
            if self.next_probe.is_some_and(|t| now < t) {
                return Disk::Fine;
            }
            self.next_probe = Some(now + CHECK_EVERY);
            if flush_full() {
                log::error!("the disk under the data directory is full: requests that write fail until space is freed; the database is reopened by itself once it is");
                self.stuck_since = Some(now);
                self.next_probe = Some(now + PROBE_EVERY);
                return Disk::Stuck;
            }
            return Disk::Fine;
        };
        if self.next_probe.is_some_and(|t| now < t) {
            return Disk::Stuck;
        }
        self.next_probe = Some(now + PROBE_EVERY);
        if space() {
            log::warn!(
                "space is free again after {}s: reopening the database",
                now.duration_since(since).as_secs()
            );
            *self = DiskWatch::default();
            return Disk::Reopen;
        }
        Disk::Stuck
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_on_a_full_flush_then_reopen_once_space_is_back() {
        let mut w = DiskWatch::default();
        let t = Instant::now();
        assert_eq!(w.tick(t, || false, || panic!("not probed")), Disk::Fine);
        assert_eq!(
            w.tick(t, || panic!("checked a second ago"), || panic!()),
            Disk::Fine
        );
        let t = t + CHECK_EVERY;
        assert_eq!(w.tick(t, || true, || panic!("not yet")), Disk::Stuck);
        let soon = t + Duration::from_millis(100);
        assert_eq!(
            w.tick(soon, || panic!("no flush"), || panic!("not yet")),
            Disk::Stuck
        );
        let later = t + PROBE_EVERY;
        assert_eq!(w.tick(later, || panic!("no flush"), || false), Disk::Stuck);
        let then = later + PROBE_EVERY;
        assert_eq!(w.tick(then, || panic!("no flush"), || true), Disk::Reopen);
        assert_eq!(w.tick(then, || false, || panic!("fine again")), Disk::Fine);
    }

    #[test]
    fn full_is_told_by_kind_and_by_sleds_text() {
        assert!(is_full(&io::Error::from(io::ErrorKind::StorageFull)));
        assert!(is_full(&io::Error::other(
            "Os { code: 27, kind: FileTooLarge, message: \"File too large\" }"
        )));
        assert!(!is_full(&io::Error::from(io::ErrorKind::PermissionDenied)));
    }

    #[test]
    fn a_writable_directory_takes_the_probe_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(takes_writes(dir.path()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(!takes_writes(&dir.path().join("missing")));
    }
}
