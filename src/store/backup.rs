//! Backups of the database, and putting one back: the way back from a damaged data directory.
//!
//! sled cannot repair its files: one flipped bit in `db` and the database does not open
//! again. So `backup FILE` copies every tree, record by record, into a file of our own format
//! while the service keeps running, and `restore FILE` builds a fresh sled database from it
//! and swaps it in, keeping the old one.
//!
//! The file: the magic `KRBACKUP`, a format version (u32 big-endian), the body's length (u64
//! big-endian), the body (bincode, see [`super::codec::encode_bare`]), and a SHA-256 of
//! everything before it. A truncated or flipped file fails the checksum and is refused before
//! anything is touched. The body carries:
//! - every tree's records as they are stored: sealed values stay sealed, so a backup holds no
//!   secret in clear;
//! - a key check value (a known constant sealed under the key, as the database keeps one),
//!   never the key: `restore` proves with it that the data directory's `secret.key` is the
//!   one the records were sealed with. The key is backed up apart, once;
//! - sled's id counter, so that ids made after a restore never repeat one in the backup.
//!
//! Consistency: the queue's trees and `meta` (its counters) are copied while the queue's
//! writes wait (see [`create`]), so items, indexes and counters agree; every other tree is
//! copied one record after another while the service goes on (a login during the backup may
//! or may not be in it; each record is whole).
//!
//! A restore never leaves a half-restored database: the new one is built beside the old in
//! `restore.partial/`, the old one's files are moved into `before-restore-<time>/`, the new
//! ones moved in. A marker file (`restore.incomplete`) is kept during the moves; while it is
//! there every open is refused ([`interrupted_restore`]) and a new `restore` finishes the job.

use super::{check_owner, codec, lock, perms, Sealer, Store, StoreError, CACHE_BYTES};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"KRBACKUP";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8;
const CHECKSUM_LEN: usize = 32;
/// The marker kept in the data directory while a restore moves files.
const MARKER: &str = "restore.incomplete";
/// Where the new database is built, inside the data directory.
const PARTIAL: &str = "restore.partial";
/// The trees copied while the queue's writes wait: the queue's and `meta`, its counters.
const HELD_TREES: [&str; 6] = [
    "sync_items",
    "sync_order",
    "sync_by_user",
    "sync_inflight",
    "sync_delayed",
    "meta",
];

/// One tree's records, as stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct TreeCopy {
    /// The tree's name.
    name: Vec<u8>,
    /// Key and value of every record, in key order.
    records: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the backup file holds after its header.
#[derive(Debug, Serialize, Deserialize)]
struct Body {
    /// When the copy was made (RFC 3339).
    created_at: String,
    /// The data directory it was made from, for messages.
    source: String,
    /// The layout version of the trees (see `LAYOUT_VERSION`).
    layout_version: u32,
    /// A key check value made with the data directory's key (see [`Sealer::check_value`]).
    key_check: Vec<u8>,
    /// sled's id counter at the time: ids made after a restore start above it.
    next_id: u64,
    /// Every tree.
    trees: Vec<TreeCopy>,
}

/// What [`create`] wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The backup file.
    pub file: PathBuf,
    /// How many trees it holds.
    pub trees: usize,
    /// How many records, in all trees.
    pub records: usize,
    /// Its size.
    pub bytes: u64,
    /// When it was made (RFC 3339).
    pub created_at: String,
}

/// What [`restore`] did.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The backup file.
    pub file: PathBuf,
    /// The data directory restored into.
    pub data_dir: PathBuf,
    /// When the backup was made (RFC 3339).
    pub created_at: String,
    /// The data directory the backup was made from.
    pub source: String,
    /// Trees restored.
    pub trees: usize,
    /// Records restored.
    pub records: usize,
    /// Where the database from before the restore is now; `None` when there was none.
    pub previous: Option<PathBuf>,
}

/// Why a backup or a restore did not happen. Every message names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The backup file (or its temporary file) could not be read or written.
    #[error("backup file {path}: {cause}")]
    File {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        cause: io::Error,
    },
    /// The file does not start like a backup.
    #[error("backup file {path} is not a keycloak-resilient backup")]
    NotABackup {
        /// The path concerned.
        path: PathBuf,
    },
    /// Another format version.
    #[error(
        "backup file {path} has format version {found}; this build reads version {FORMAT_VERSION}"
    )]
    Version {
        /// The path concerned.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// Truncated, flipped, or otherwise not as written.
    #[error("backup file {path} is damaged or incomplete (its checksum does not match): it was not used and nothing was changed; restore another backup")]
    Damaged {
        /// The path concerned.
        path: PathBuf,
    },
    /// The layout of a newer build.
    #[error("backup file {path} holds layout version {found}, newer than this build's {known}: restore it with the build that made it; nothing was changed")]
    Layout {
        /// The path concerned.
        path: PathBuf,
        /// The version in the backup.
        found: u32,
        /// This build's.
        known: u32,
    },
    /// The data directory has no key to open the backup's sealed values with.
    #[error("data directory {dir} has no secret.key: a backup never holds the key; copy the secret.key of the directory {backup} was made from to {key_file} (mode 0600) first; nothing was changed")]
    NoKey {
        /// The data directory.
        dir: PathBuf,
        /// The key file that is missing.
        key_file: PathBuf,
        /// The backup file.
        backup: PathBuf,
    },
    /// The data directory's key is not the backup's.
    #[error("backup file {backup} was made with another key than {key_file}: put the secret.key of the directory it was made from there, or restore a backup made with this key; nothing was changed")]
    KeyMismatch {
        /// The backup file.
        backup: PathBuf,
        /// The data directory's key file.
        key_file: PathBuf,
    },
    /// The service holds the data directory.
    #[error("data directory {dir} is held by the running service, {holder}: stop it first (e.g. systemctl stop keycloak-resilient), then run restore again; nothing was changed")]
    ServiceRunning {
        /// The data directory.
        dir: PathBuf,
        /// Who holds it.
        holder: lock::Holder,
    },
    /// A database error, or the data directory's.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Copies every tree of `store` into `file` (atomically: a temporary file beside it, synced,
/// then renamed over it; mode 0600). `hold` runs the copy of the queue's trees and `meta`
/// with the queue's writes held (pass `|copy| queue.while_held(copy)`).
///
/// # Errors
///
/// [`BackupError::File`] when `file` cannot be written (nothing is left behind), a
/// [`StoreError`] when a tree cannot be read.
pub fn create(
    store: &Store,
    file: &Path,
    hold: impl FnOnce(
        &dyn Fn() -> Result<Vec<TreeCopy>, StoreError>,
    ) -> Result<Vec<TreeCopy>, StoreError>,
) -> Result<Summary, BackupError> {
    let names: Vec<sled::IVec> = store.db.tree_names();
    let (held, free): (Vec<_>, Vec<_>) = names
        .into_iter()
        .partition(|n| HELD_TREES.iter().any(|h| h.as_bytes() == &n[..]));
    let mut trees = hold(&|| copy_trees(store, &held))?;
    trees.extend(copy_trees(store, &free)?);
    let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let body = Body {
        created_at: created_at.clone(),
        source: store.path().display().to_string(),
        layout_version: super::LAYOUT_VERSION,
        key_check: store.sealer().check_value().map_err(StoreError::from)?,
        next_id: store.next_id()?,
        trees,
    };
    let bytes = encode_file(&body)?;
    write_atomically(file, &bytes)?;
    Ok(Summary {
        file: file.to_path_buf(),
        trees: body.trees.len(),
        records: body.trees.iter().map(|t| t.records.len()).sum(),
        bytes: bytes.len() as u64,
        created_at,
    })
}

fn copy_trees(store: &Store, names: &[sled::IVec]) -> Result<Vec<TreeCopy>, StoreError> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let tree = store.db.open_tree(name)?;
        let mut records = Vec::new();
        for entry in tree.iter() {
            let (k, v) = entry?;
            records.push((k.to_vec(), v.to_vec()));
        }
        out.push(TreeCopy {
            name: name.to_vec(),
            records,
        });
    }
    Ok(out)
}

fn encode_file(body: &Body) -> Result<Vec<u8>, BackupError> {
    let encoded = codec::encode_bare(body).map_err(|cause| StoreError::Encode {
        tree: "(backup)",
        cause,
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + encoded.len() + CHECKSUM_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&(encoded.len() as u64).to_be_bytes());
    out.extend_from_slice(&encoded);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    Ok(out)
}

/// Reads and checks a backup file: magic, version, length, checksum, then the body.
fn read_file(path: &Path) -> Result<Body, BackupError> {
    let bytes = fs::read(path).map_err(|cause| BackupError::File {
        path: path.to_path_buf(),
        cause,
    })?;
    let damaged = || BackupError::Damaged {
        path: path.to_path_buf(),
    };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(BackupError::NotABackup {
            path: path.to_path_buf(),
        });
    }
    if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
        return Err(damaged());
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&bytes[8..12]);
    let found = u32::from_be_bytes(version);
    if found != FORMAT_VERSION {
        return Err(BackupError::Version {
            path: path.to_path_buf(),
            found,
        });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[12..HEADER_LEN]);
    let body_len = u64::from_be_bytes(len);
    if body_len != (bytes.len() - HEADER_LEN - CHECKSUM_LEN) as u64 {
        return Err(damaged());
    }
    let (signed, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if Sha256::digest(signed)[..] != *sum {
        return Err(damaged());
    }
    codec::decode_bare(&signed[HEADER_LEN..]).map_err(|_| damaged())
}

/// Writes `bytes` to `path` through a temporary file in the same directory (mode 0600,
/// synced, renamed over `path`, the directory synced): `path` is the old file or the new one,
/// never a part of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let wrap = |cause| BackupError::File {
        path: path.to_path_buf(),
        cause,
    };
    let name = path
        .file_name()
        .ok_or_else(|| wrap(io::Error::other("not a file path")))?;
    if path.is_dir() {
        return Err(wrap(io::Error::other("is a directory")));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(perms::FILE_MODE)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(perms::FILE_MODE))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        wrap(e)
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// The database-before-the-restore directory named by an interrupted restore's marker in
/// `dir`, if there is one.
pub fn interrupted_restore(dir: &Path) -> Option<PathBuf> {
    read_marker(dir).map(|(aside, _)| aside)
}

/// Which moves a restore had reached, as its marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Moving the old database's files aside.
    Out,
    /// Moving the new database's files in.
    In,
}

fn read_marker(dir: &Path) -> Option<(PathBuf, Phase)> {
    let text = fs::read_to_string(dir.join(MARKER)).ok()?;
    let mut lines = text.lines();
    let aside = dir.join(lines.next()?.trim());
    let phase = match lines.next()?.trim() {
        "in" => Phase::In,
        _ => Phase::Out,
    };
    Some((aside, phase))
}

fn write_marker(dir: &Path, aside: &Path, phase: Phase) -> Result<(), BackupError> {
    let name = aside.file_name().unwrap_or_default().to_string_lossy();
    let phase = match phase {
        Phase::Out => "out",
        Phase::In => "in",
    };
    let wrap = |cause| StoreError::Dir {
        path: dir.join(MARKER),
        cause,
    };
    let tmp = dir.join(format!("{MARKER}.tmp"));
    fs::write(&tmp, format!("{name}\n{phase}\n")).map_err(wrap)?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(wrap)?;
    fs::rename(&tmp, dir.join(MARKER)).map_err(wrap)?;
    sync_dir(dir).map_err(wrap)?;
    Ok(())
}

/// The names of sled's own files in `dir`: `conf`, `db`, `blobs/`, `snap.*`.
fn sled_files(dir: &Path) -> Result<Vec<std::ffi::OsString>, StoreError> {
    let wrap = |cause| StoreError::Dir {
        path: dir.to_path_buf(),
        cause,
    };
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(wrap)? {
        let name = entry.map_err(wrap)?.file_name();
        let s = name.to_string_lossy();
        if s == "conf" || s == "db" || s == "blobs" || s.starts_with("snap.") {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Restores the backup `file` into the data directory `dir` (see the module's docs). The
/// directory must exist with the `secret.key` the backup was made with; its lock is taken
/// (waiting up to `wait` for a one-shot command; the running service is refused at once).
///
/// # Errors
///
/// Every refusal of [`BackupError`]; all of them but a failure in the middle of the moves
/// leave the data directory as it was, and that one is finished by running `restore` again.
pub fn restore(dir: &Path, file: &Path, wait: Duration) -> Result<Restored, BackupError> {
    let body = read_file(file)?;
    let key_file = Sealer::key_path(dir);
    if !dir.is_dir() {
        return Err(BackupError::NoKey {
            dir: dir.to_path_buf(),
            key_file,
            backup: file.to_path_buf(),
        });
    }
    check_owner(dir)?;
    let held = take_lock(dir, wait)?;
    match Sealer::load_or_create(dir, false) {
        Ok(sealer) if sealer.matches_check(&body.key_check) => {}
        Ok(_) => {
            return Err(BackupError::KeyMismatch {
                backup: file.to_path_buf(),
                key_file,
            })
        }
        Err(super::SealError::Missing { .. }) => {
            return Err(BackupError::NoKey {
                dir: dir.to_path_buf(),
                key_file,
                backup: file.to_path_buf(),
            })
        }
        Err(e) => return Err(StoreError::from(e).into()),
    }
    if body.layout_version > super::LAYOUT_VERSION {
        return Err(BackupError::Layout {
            path: file.to_path_buf(),
            found: body.layout_version,
            known: super::LAYOUT_VERSION,
        });
    }
    let partial = build_partial(dir, &body)?;
    let previous = swap_in(dir, &partial)?;
    // The restored database opens as any other (its key check included) before we say so.
    drop(Store::open_locked(dir, held)?);
    Ok(Restored {
        file: file.to_path_buf(),
        data_dir: dir.to_path_buf(),
        created_at: body.created_at,
        source: body.source,
        trees: body.trees.len(),
        records: body.trees.iter().map(|t| t.records.len()).sum(),
        previous,
    })
}

fn take_lock(dir: &Path, wait: Duration) -> Result<lock::DirLock, BackupError> {
    let to_error = |e, waited| match e {
        lock::LockError::Busy {
            holder: Some(holder),
        } if holder.is_service() => BackupError::ServiceRunning {
            dir: dir.to_path_buf(),
            holder,
        },
        lock::LockError::Busy { holder } => BackupError::Store(StoreError::Locked {
            path: dir.to_path_buf(),
            holder,
            waited,
        }),
        lock::LockError::Io(cause) => BackupError::Store(StoreError::Dir {
            path: dir.join(lock::LOCK_FILE),
            cause,
        }),
    };
    match lock::acquire(dir, Duration::ZERO) {
        Ok(held) => Ok(held),
        Err(e @ lock::LockError::Busy { holder: Some(_) }) if is_service(&e) => {
            Err(to_error(e, Duration::ZERO))
        }
        Err(lock::LockError::Busy { .. }) => {
            lock::acquire(dir, wait).map_err(|e| to_error(e, wait))
        }
        Err(e) => Err(to_error(e, Duration::ZERO)),
    }
}

fn is_service(e: &lock::LockError) -> bool {
    matches!(e, lock::LockError::Busy { holder: Some(h) } if h.is_service())
}

/// Builds a fresh sled database from `body` in `dir/restore.partial` (any earlier one there
/// was built from a backup too, and is replaced); flushed and closed.
fn build_partial(dir: &Path, body: &Body) -> Result<PathBuf, BackupError> {
    let partial = dir.join(PARTIAL);
    let wrap = |cause| StoreError::Dir {
        path: partial.clone(),
        cause,
    };
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(wrap)?;
    }
    let db = perms::with_private_umask(|| {
        sled::Config::new()
            .path(&partial)
            .cache_capacity(CACHE_BYTES)
            .open()
    })
    .map_err(StoreError::from)?;
    for copy in &body.trees {
        let tree = db.open_tree(&copy.name).map_err(StoreError::from)?;
        let mut batch = sled::Batch::default();
        for (k, v) in &copy.records {
            batch.insert(&k[..], &v[..]);
        }
        tree.apply_batch(batch).map_err(StoreError::from)?;
    }
    while db.generate_id().map_err(StoreError::from)? < body.next_id {}
    db.flush().map_err(StoreError::from)?;
    drop(db);
    Ok(partial)
}

/// Moves the database files of `dir` aside and those of `partial` in, with the marker kept
/// meanwhile; finishes an interrupted restore first. Returns where the old files went, or
/// `None` when there were none.
fn swap_in(dir: &Path, partial: &Path) -> Result<Option<PathBuf>, BackupError> {
    let resumed = read_marker(dir);
    let aside = match &resumed {
        Some((aside, _)) => aside.clone(),
        None => fresh_aside(dir),
    };
    let dir_error = |path: &Path, cause| StoreError::Dir {
        path: path.to_path_buf(),
        cause,
    };
    // What is in `dir` now: the old database (or what is left of it), or, after an
    // interruption while moving the new one in, part of the new one: kept apart too.
    let target = match resumed {
        Some((_, Phase::In)) => aside.join("interrupted-restore"),
        _ => aside.clone(),
    };
    fs::create_dir_all(&target).map_err(|e| dir_error(&target, e))?;
    write_marker(dir, &aside, Phase::Out)?;
    let old = sled_files(dir)?;
    let moved_out = move_all(dir, &target, &old);
    if let Err(e) = moved_out {
        if resumed.is_none() {
            let _ = move_all(&target, dir, &old);
            let _ = fs::remove_file(dir.join(MARKER));
            let _ = fs::remove_dir(&aside);
        }
        return Err(e.into());
    }
    write_marker(dir, &aside, Phase::In)?;
    let new = sled_files(partial)?;
    if let Err(e) = move_all(partial, dir, &new) {
        if resumed.is_none() {
            let _ = move_all(dir, partial, &new);
            let _ = move_all(&target, dir, &old);
            let _ = fs::remove_file(dir.join(MARKER));
            let _ = fs::remove_dir(&aside);
        }
        return Err(e.into());
    }
    sync_dir(dir).map_err(|e| dir_error(dir, e))?;
    fs::remove_file(dir.join(MARKER)).map_err(|e| dir_error(&dir.join(MARKER), e))?;
    sync_dir(dir).map_err(|e| dir_error(dir, e))?;
    let _ = fs::remove_dir_all(partial);
    if target != aside {
        let _ = fs::remove_dir(&target);
    }
    // An empty aside directory (there was no database before) is not worth keeping.
    if fs::remove_dir(&aside).is_ok() {
        return Ok(None);
    }
    Ok(Some(aside))
}

fn fresh_aside(dir: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let first = dir.join(format!("before-restore-{stamp}"));
    if !first.exists() {
        return first;
    }
    dir.join(format!("before-restore-{stamp}-{}", std::process::id()))
}

/// Renames each of `names` from `from` into `to`; stops at the first failure.
fn move_all(from: &Path, to: &Path, names: &[std::ffi::OsString]) -> Result<(), StoreError> {
    for name in names {
        let src = from.join(name);
        if !src.exists() {
            continue;
        }
        fs::rename(&src, to.join(name)).map_err(|cause| StoreError::Dir { path: src, cause })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::meta::MetaKey;

    fn store_with_data(dir: &Path) -> Store {
        let s = Store::open(dir).unwrap();
        s.put_meta(MetaKey::QueueBlocked, &7u32).unwrap();
        s.local_users.insert(b"alice\0web", &b"sealed"[..]).unwrap();
        s.flush().unwrap();
        s
    }

    #[test]
    fn a_backup_restores_into_its_own_directory_and_keeps_the_old_one() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let file = tmp.path().join("b.krbak");
        let store = store_with_data(&data);
        let summary = create(&store, &file, |copy| copy()).unwrap();
        assert!(summary.records >= 2, "{summary:?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        store.local_users.remove(b"alice\0web").unwrap();
        store.flush().unwrap();
        drop(store);
        let restored = restore(&data, &file, Duration::ZERO).unwrap();
        let previous = restored.previous.expect("the old database was kept");
        assert!(previous.join("db").exists());
        let s = Store::open(&data).unwrap();
        assert!(s.local_users.get(b"alice\0web").unwrap().is_some());
        assert_eq!(s.get_meta::<u32>(MetaKey::QueueBlocked).unwrap(), Some(7));
        assert!(s.next_id().unwrap() > 0);
        assert!(!data.join(MARKER).exists() && !data.join(PARTIAL).exists());
    }

    #[test]
    fn every_flipped_byte_and_a_truncation_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let file = tmp.path().join("b.krbak");
        let store = store_with_data(&data);
        create(&store, &file, |copy| copy()).unwrap();
        drop(store);
        let good = fs::read(&file).unwrap();
        for at in (MAGIC.len()..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            fs::write(&file, &bad).unwrap();
            assert!(read_file(&file).is_err(), "flip at {at} passed");
        }
        fs::write(&file, &good[..good.len() - 1]).unwrap();
        assert!(matches!(read_file(&file), Err(BackupError::Damaged { .. })));
        fs::write(&file, b"hello").unwrap();
        assert!(matches!(
            read_file(&file),
            Err(BackupError::NotABackup { .. })
        ));
    }

    #[test]
    fn an_interrupted_restore_blocks_opens_and_a_new_restore_finishes_it() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let file = tmp.path().join("b.krbak");
        let store = store_with_data(&data);
        create(&store, &file, |copy| copy()).unwrap();
        drop(store);
        // As if killed after moving the old files aside, before moving the new ones in.
        let aside = data.join("before-restore-x");
        fs::create_dir(&aside).unwrap();
        write_marker(&data, &aside, Phase::In).unwrap();
        let old = sled_files(&data).unwrap();
        move_all(&data, &aside, &old).unwrap();
        let err = Store::open(&data).unwrap_err();
        assert!(
            matches!(err, StoreError::RestoreInterrupted { .. }),
            "{err}"
        );
        let restored = restore(&data, &file, Duration::ZERO).unwrap();
        assert_eq!(restored.previous.as_deref(), Some(aside.as_path()));
        let s = Store::open(&data).unwrap();
        assert!(s.local_users.get(b"alice\0web").unwrap().is_some());
    }
}
