//! Who may touch the data directory: its owner, and nobody else, whatever the umask.
//!
//! The directory holds password hashes and sealed secrets, so it must not rely on its own mode
//! alone: sled creates `db`, `conf`, `snap.*` and `blobs/` with the process umask (0644 and
//! 0755 under the usual 022, 0666 under 000). Three rules, kept here:
//! - a directory (or a `lock`, `db`, `conf` or `secret.key` in it) owned by another uid than
//!   this process's effective uid is refused, root included: chmod-ing someone else's
//!   database, or writing ours into a directory they control, is never right ([`check_owner`]);
//! - sled opens with the umask narrowed to 077 ([`with_private_umask`]), and the binary narrows
//!   it for its whole life at start (sled writes new `snap.*` files later, from its own
//!   threads);
//! - what is there after an open is set to 0600 (files) and 0700 (directories)
//!   ([`tighten`]): a directory made by hand, or files an older build left wide. Sockets (the
//!   control socket may live here, with its own mode) and symlinks are left alone.
//!
//! A program embedding the library should call [`narrow_process_umask`] at start as the binary
//! does: the snapshots sled writes after the open follow the process umask (narrowing them at
//! every flush instead would cost a directory scan per acknowledged write).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Mode of every regular file in the data directory.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the data directory and every directory in it.
pub const DIR_MODE: u32 = 0o700;
/// The files whose owner is checked besides the directory's: the ones this tool or sled reads
/// first (another user's planted `conf` or `db` would be read, a planted `lock` would be ours).
const OWNED: [&str; 4] = ["lock", "db", "conf", "secret.key"];

/// A path in the data directory owned by someone else.
#[derive(Debug)]
pub struct Foreign {
    /// The directory or file.
    pub path: PathBuf,
    /// Its owner's uid.
    pub owner: u32,
    /// This process's effective uid.
    pub euid: u32,
}

/// Refuses `dir` when it, or one of the files [`OWNED`] names in it, is owned by another uid
/// than this process's effective uid.
///
/// # Errors
///
/// [`Foreign`] for the first such path; an I/O error when one cannot be looked at.
pub fn check_owner(dir: &Path) -> Result<(), CheckError> {
    let euid = nix::unistd::geteuid().as_raw();
    let owner = fs::metadata(dir)?.uid();
    if owner != euid {
        return Err(CheckError::Foreign(Foreign {
            path: dir.to_path_buf(),
            owner,
            euid,
        }));
    }
    for name in OWNED {
        let path = dir.join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.uid() != euid => {
                return Err(CheckError::Foreign(Foreign {
                    path,
                    owner: meta.uid(),
                    euid,
                }))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(CheckError::Io(e)),
        }
    }
    Ok(())
}

/// Why [`check_owner`] refused.
#[derive(Debug)]
pub enum CheckError {
    /// Someone else's.
    Foreign(Foreign),
    /// Could not be looked at.
    Io(io::Error),
}

impl From<io::Error> for CheckError {
    fn from(e: io::Error) -> Self {
        CheckError::Io(e)
    }
}

/// One umask change at a time in this process: two opens restoring each other's "old" value
/// would leave the narrowed one behind for good.
static UMASK: Mutex<()> = Mutex::new(());

/// Runs `f` with the process umask narrowed to deny group and others everything, then puts
/// the previous one back. The umask is process-wide: another thread creating a file meanwhile
/// gets it narrower, never wider.
pub fn with_private_umask<R>(f: impl FnOnce() -> R) -> R {
    use nix::sys::stat::{umask, Mode};
    let _one = UMASK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let old = umask(Mode::from_bits_truncate(0o077));
    umask(old | Mode::from_bits_truncate(0o077));
    let result = f();
    umask(old);
    result
}

/// Narrows the umask of the whole process to deny group and others everything, for the
/// binary: every file it creates afterwards is private unless it sets a mode itself (the
/// socket, the metrics textfile).
pub fn narrow_process_umask() {
    use nix::sys::stat::{umask, Mode};
    let _one = UMASK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let old = umask(Mode::from_bits_truncate(0o077));
    umask(old | Mode::from_bits_truncate(0o077));
}

/// Sets every regular file under `dir` to [`FILE_MODE`] and every directory (`dir` included)
/// to [`DIR_MODE`], where it is not so already; sockets and symlinks are left as they are.
/// Goes two levels down (sled's `blobs/` is one).
///
/// # Errors
///
/// The first path that could not be read or changed, with its error.
pub fn tighten(dir: &Path) -> Result<(), (PathBuf, io::Error)> {
    tighten_at(dir, 2)
}

fn tighten_at(dir: &Path, depth: u32) -> Result<(), (PathBuf, io::Error)> {
    set_mode(dir, DIR_MODE)?;
    let entries = fs::read_dir(dir).map_err(|e| (dir.to_path_buf(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| (dir.to_path_buf(), e))?;
        let path = entry.path();
        let kind = match entry.file_type() {
            Ok(kind) => kind,
            // Removed meanwhile (sled replaces snapshots): nothing to narrow.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err((path, e)),
        };
        if kind.is_file() {
            set_mode(&path, FILE_MODE)?;
        } else if kind.is_dir() && depth > 0 {
            tighten_at(&path, depth - 1)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), (PathBuf, io::Error)> {
    let wrap = |e| (path.to_path_buf(), e);
    let current = match fs::symlink_metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(wrap(e)),
    };
    if current == mode {
        return Ok(());
    }
    match fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(wrap(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn tighten_narrows_files_and_dirs_and_leaves_sockets_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("db"), b"x").unwrap();
        fs::set_permissions(d.join("db"), fs::Permissions::from_mode(0o666)).unwrap();
        fs::create_dir(d.join("blobs")).unwrap();
        fs::set_permissions(d.join("blobs"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(d.join("blobs/1"), b"x").unwrap();
        fs::set_permissions(d.join("blobs/1"), fs::Permissions::from_mode(0o644)).unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        fs::set_permissions(outside.path(), fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.join("link")).unwrap();
        let sock = d.join("control.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        fs::set_permissions(&sock, fs::Permissions::from_mode(0o660)).unwrap();
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();

        tighten(d).unwrap();
        assert_eq!(mode(d), 0o700);
        assert_eq!(mode(&d.join("db")), 0o600);
        assert_eq!(mode(&d.join("blobs")), 0o700);
        assert_eq!(mode(&d.join("blobs/1")), 0o600);
        assert_eq!(mode(&sock), 0o660, "the socket keeps its own mode");
        assert_eq!(
            mode(outside.path()),
            0o644,
            "a link's target is not ours to change"
        );
    }

    #[test]
    fn our_own_directory_and_files_pass_the_owner_check() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("db"), b"x").unwrap();
        check_owner(dir.path()).unwrap();
    }

    #[test]
    fn files_created_under_the_private_umask_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let created = with_private_umask(|| {
            let p = dir.path().join("inside");
            fs::write(&p, b"x").unwrap();
            mode(&p)
        });
        assert_eq!(created & 0o077, 0, "{created:o}");
    }
}
