//! The embedded database: one sled directory, typed trees, sealed secrets.
//!
//! One process owns the directory at a time: [`lock`] takes an advisory lock (and notes who
//! holds it) before sled opens; another process waits for it up to a bound, then gets
//! [`StoreError::Locked`] naming the holder. The trees:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `token_cache` | `lower(user) 0x00 package` | [`crate::token_cache::CachedToken`] |
//! | `sync_items` | sync id (16 bytes) | [`crate::sync_queue::SyncItem`] |
//! | `sync_order` | `priority u32 BE ‖ queued µs i64 BE (sign-flipped) ‖ seq u64 BE` | sync id — pending items due now |
//! | `sync_by_user` | `lower(user) 0x00 package 0x00 sync id` | empty — pending items only |
//! | `sync_inflight` | sync id | empty — items claimed by a running cycle |
//! | `sync_delayed` | `due µs i64 BE (sign-flipped) ‖ seq u64 BE` | sync id — pending items backing off |
//! | `local_users` | `lower(user) 0x00 package` | [`crate::local_users::LocalUser`] |
//! | `sessions` | session id (16 bytes) | [`crate::sessions::Session`] |
//! | `auth_events` | minute's start µs BE (sign-flipped); older builds: `time µs BE ‖ seq BE` | logins per mode in that minute, 3 × u64 BE; older builds: one login's mode |
//! | `meta` | name | every name listed in [`meta`]: breaker state, health probe, queue block, counters, schema version |
//!
//! A write is durable once [`Store::flush`] returned: sled's flush and an `fdatasync` of `db`,
//! shared by concurrent writers ([`commit`]).
//!
//! The directory is its owner's alone: another user's is refused, and what is in it is kept
//! 0600 / 0700 whatever the umask (see [`perms`]).

pub mod backup;
pub mod codec;
pub mod commit;
pub mod lock;
pub mod meta;
pub mod perms;
pub mod seal;
pub mod space;

use serde::{de::DeserializeOwned, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meta::MetaKey;
pub use seal::{SealError, Sealer};

/// sled's page cache: small servers, small cache (sled's default is 1 GiB). 4 MiB rather than
/// 16: the service ends 100 000 logins 10 MiB lower (benches/socket_memory.rs), and the queue's
/// enqueue and drain benches measure the same either way.
const CACHE_BYTES: u64 = 4 * 1024 * 1024;
/// How long [`Store::open`] waits for another process to let go of the directory.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(10);
/// How often to try sled's own lock once ours is held (50 ms apart): sled lets go of it from a
/// background thread a moment after the last handle of an earlier open in this process drops.
const SLED_LOCK_ATTEMPTS: u32 = 20;
/// The layout version of the trees; bumped with a migration step when the layout changes.
/// - 2: sync items may carry an `applying` mark (layout-1 records still decode as they are);
///   per-status queue counters in `meta` (`sync_count/*`), built by one scan on first use.
///   Builds that know only 1 refuse a layout-2 database: they would write items without
///   keeping the counters.
const LAYOUT_VERSION: u32 = 2;
/// How many sealed values of one tree the key of an older database is tried on, at most (see
/// [`Store::confirm_key`]): enough that a few damaged records do not pass for a wrong key,
/// few enough that a wrong key is refused without a scan of the whole database.
pub const KEY_SAMPLES: usize = 32;

/// What can go wrong with the embedded database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process held the database for the whole wait.
    #[error(
        "data directory {path} is in use by {holder} (waited {secs:.1}s); try again once it is done, or wait longer with --lock-timeout",
        holder = holder.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "another process".into()),
        secs = waited.as_secs_f64()
    )]
    Locked {
        /// The path concerned.
        path: PathBuf,
        /// Who holds the lock, when its note could be read.
        holder: Option<lock::Holder>,
        /// How long we waited for it.
        waited: Duration,
    },
    /// The data directory, or a file in it, belongs to another user.
    #[error("data directory {dir}: {path} is owned by uid {owner}, but this process runs as uid {euid}: refused (run it as uid {owner}, or give the directory to uid {euid} with chown -R)")]
    Foreign {
        /// The data directory.
        dir: PathBuf,
        /// The directory or the file in it owned by someone else.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        euid: u32,
    },
    /// sled found the files damaged. The message stays plain: sled's own description (a file
    /// offset, an internal error name) helps nobody decide what to do, so it goes to the log
    /// at debug level only.
    #[error("data directory {path} is damaged: its database files cannot be read; stop the service if it runs, then `restore FILE` from a backup (see `restore --help`), or move the directory aside to start with an empty database (anything queued in it is then lost)")]
    Damaged {
        /// The path concerned.
        path: PathBuf,
    },
    /// A `restore` was stopped halfway through swapping the database in.
    #[error("data directory {path}: a restore was interrupted; run `restore FILE` again to finish it (the database from before it is kept in {aside})")]
    RestoreInterrupted {
        /// The data directory.
        path: PathBuf,
        /// Where the database from before the restore was moved.
        aside: PathBuf,
    },
    /// The directory could not be created or opened.
    #[error("data directory {path}: {cause}")]
    Dir {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        cause: io::Error,
    },
    /// sled reported an error.
    #[error("database error: {0}")]
    Sled(sled::Error),
    /// Reading or writing the database files failed.
    #[error("database I/O error: {0}")]
    Io(String),
    /// A record did not decode.
    #[error("damaged record in tree {tree}: {cause}")]
    Corrupt {
        /// The tree the record is in.
        tree: &'static str,
        /// The underlying error.
        cause: codec::CodecError,
    },
    /// A record could not be encoded.
    #[error("could not encode record for tree {tree}: {cause}")]
    Encode {
        /// The tree the record is in.
        tree: &'static str,
        /// The underlying error.
        cause: codec::CodecError,
    },
    /// Sealing or unsealing a secret failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// `secret.key` is a key, but not the one this database's secrets were sealed with.
    #[error("key file {key_file} does not match the database in {data_dir} (its secrets were sealed with another key): put back the secret.key that belongs to this data directory; nothing was changed")]
    KeyMismatch {
        /// The key file.
        key_file: PathBuf,
        /// The data directory.
        data_dir: PathBuf,
    },
    /// The database was written by a newer layout.
    #[error("data directory {path} has layout version {found}; this build knows {LAYOUT_VERSION}")]
    Layout {
        /// The path concerned.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// The password verifier for a record could not be computed.
    #[error(transparent)]
    Hash(#[from] crate::password::HashError),
}

// Every error here quotes its cause in its own message, so none also reports it as a `source`
// (an anyhow chain printed with `{:#}` would say it twice).
impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(cause) => StoreError::Io(describe_io(&cause)),
            other => StoreError::Sled(other),
        }
    }
}

/// An I/O error of sled's as one readable line. sled hands some of them on as a string of
/// their `Debug` form (`Os { code: 27, kind: FileTooLarge, … }`): the kind says it better.
fn describe_io(e: &io::Error) -> String {
    use io::ErrorKind as K;
    let what = match e.raw_os_error() {
        Some(_) => e.to_string(),
        None => e.kind().to_string(),
    };
    match e.kind() {
        K::StorageFull | K::FileTooLarge | K::QuotaExceeded => format!(
            "{what}: the disk is full or a file size limit was reached; free some space and run the command again"
        ),
        _ => what,
    }
}

/// The open database and its trees.
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    sealer: Sealer,
    pub(crate) token_cache: sled::Tree,
    pub(crate) sync_items: sled::Tree,
    pub(crate) sync_order: sled::Tree,
    pub(crate) sync_by_user: sled::Tree,
    pub(crate) sync_inflight: sled::Tree,
    pub(crate) sync_delayed: sled::Tree,
    pub(crate) local_users: sled::Tree,
    pub(crate) sessions: sled::Tree,
    pub(crate) auth_events: sled::Tree,
    pub(crate) meta: sled::Tree,
    /// sled's `db` file, for the `fdatasync` that makes a flush durable ([`commit`]); `None`
    /// for a temporary database.
    db_file: Option<std::fs::File>,
    /// Concurrent flushes share one commit.
    commits: commit::GroupCommit,
    /// The key has no check value yet in this (older) database: see [`Store::confirm_key`].
    key_unverified: bool,
    /// Held for as long as the store lives; dropped after the database (declared last).
    dir_lock: Option<lock::DirLock>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// True when `path` holds a database (sled's `db` file), without opening or creating
/// anything: for the commands that must not create one.
pub fn exists(path: &Path) -> bool {
    path.join("db").symlink_metadata().is_ok()
}

impl Store {
    /// Opens (creating if needed, mode 0700) the database directory `path`, waiting up to
    /// [`DEFAULT_LOCK_WAIT`] for another process to let go of it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_waiting(path, DEFAULT_LOCK_WAIT)
    }

    /// [`Store::open`], waiting up to `wait` for the directory's lock.
    pub fn open_waiting(path: &Path, wait: Duration) -> Result<Store, StoreError> {
        create_private_dir(path)?;
        check_owner(path)?;
        let dir_lock = lock::acquire(path, wait).map_err(|e| match e {
            lock::LockError::Busy { holder } => StoreError::Locked {
                path: path.to_path_buf(),
                holder,
                waited: wait,
            },
            lock::LockError::Io(cause) => StoreError::Dir {
                path: path.join(lock::LOCK_FILE),
                cause,
            },
        })?;
        Self::open_locked(path, dir_lock)
    }

    /// Opens the database directory `path` whose lock the caller already holds (`restore`
    /// keeps it from the swap to the check that the result opens).
    pub(crate) fn open_locked(path: &Path, dir_lock: lock::DirLock) -> Result<Store, StoreError> {
        if let Some(aside) = backup::interrupted_restore(path) {
            return Err(StoreError::RestoreInterrupted {
                path: path.to_path_buf(),
                aside,
            });
        }
        for stale in
            lock::remove_stale_snapshots(path, &dir_lock).map_err(|cause| StoreError::Dir {
                path: path.to_path_buf(),
                cause,
            })?
        {
            log::warn!(
                "removed {}: a snapshot left half-written by a process that was killed",
                stale.display()
            );
        }
        let new = !exists(path);
        let mut attempts = 0;
        let db = loop {
            let opened = perms::with_private_umask(|| {
                sled::Config::new()
                    .path(path)
                    .cache_capacity(CACHE_BYTES)
                    .open()
            });
            match opened {
                Ok(db) => break db,
                Err(sled::Error::Io(ref io))
                    if is_lock_error(io) && attempts < SLED_LOCK_ATTEMPTS =>
                {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(sled::Error::Io(ref io)) if is_lock_error(io) => {
                    return Err(StoreError::Locked {
                        path: path.to_path_buf(),
                        holder: None,
                        waited: Duration::from_millis(50 * u64::from(SLED_LOCK_ATTEMPTS)),
                    })
                }
                Err(other) => return Err(damaged_or(path, other)),
            }
        };
        tighten(path)?;
        let dir_error = |cause| StoreError::Dir {
            path: path.to_path_buf(),
            cause,
        };
        let db_file = std::fs::File::open(path.join("db")).map_err(dir_error)?;
        if new {
            // The new files' names are on disk too, not only their contents.
            std::fs::File::open(path)
                .and_then(|dir| dir.sync_all())
                .map_err(dir_error)?;
        }
        let (sealer, key_unverified) =
            open_sealer(path, &db).map_err(|e| damaged_store_error(path, e))?;
        let mut store = Self::from_db(db, sealer, path.to_path_buf())
            .map_err(|e| damaged_store_error(path, e))?;
        store.dir_lock = Some(dir_lock);
        store.db_file = Some(db_file);
        store.key_unverified = key_unverified;
        Ok(store)
    }

    /// A throw-away in-memory store, for tests.
    pub fn temporary() -> Result<Store, StoreError> {
        let db = sled::Config::new().temporary(true).open()?;
        Self::from_db(db, Sealer::ephemeral(), PathBuf::from("(temporary)"))
    }

    /// True for a [`Store::temporary`] database: it has no directory of its own, so nothing
    /// may be put beside it.
    pub fn is_temporary(&self) -> bool {
        self.dir_lock.is_none()
    }

    fn from_db(db: sled::Db, sealer: Sealer, path: PathBuf) -> Result<Store, StoreError> {
        let store = Store {
            token_cache: db.open_tree("token_cache")?,
            sync_items: db.open_tree("sync_items")?,
            sync_order: db.open_tree("sync_order")?,
            sync_by_user: db.open_tree("sync_by_user")?,
            sync_inflight: db.open_tree("sync_inflight")?,
            sync_delayed: db.open_tree("sync_delayed")?,
            local_users: db.open_tree("local_users")?,
            sessions: db.open_tree("sessions")?,
            auth_events: db.open_tree("auth_events")?,
            meta: db.open_tree("meta")?,
            db,
            sealer,
            path,
            key_unverified: false,
            db_file: None,
            commits: commit::GroupCommit::default(),
            dir_lock: None,
        };
        match store.get_meta::<u32>(MetaKey::LayoutVersion)? {
            None => store.put_meta(MetaKey::LayoutVersion, &LAYOUT_VERSION)?,
            Some(v) if v == LAYOUT_VERSION => {}
            // 1 → 2 needs no rewrite (see LAYOUT_VERSION).
            Some(1) => store.put_meta(MetaKey::LayoutVersion, &LAYOUT_VERSION)?,
            Some(found) => {
                return Err(StoreError::Layout {
                    path: store.path.clone(),
                    found,
                })
            }
        }
        Ok(store)
    }

    /// The directory this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sealer for secrets at rest.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Settles the key of a database written before key check values existed: `sample_opens`
    /// says whether any of the sealed records tried opened with the key (`Some(false)`: some
    /// were tried, none opened; `None`: it holds none, so there is nothing a wrong key could
    /// lose). The caller tries the records of every tree holding sealed values (the queue and
    /// the token cache) and combines them with [`any_sample_opens`]. A key that opened one, or
    /// nothing to check against, gets its check value written; a key that opened none is
    /// refused, and nothing is written.
    pub fn confirm_key(&self, sample_opens: Option<bool>) -> Result<(), StoreError> {
        if !self.key_unverified {
            return Ok(());
        }
        if sample_opens == Some(false) {
            return Err(StoreError::KeyMismatch {
                key_file: Sealer::key_path(&self.path),
                data_dir: self.path.clone(),
            });
        }
        self.put_meta(MetaKey::KeyCheck, &self.sealer.check_value()?)?;
        self.flush()
    }

    /// Whether [`Store::confirm_key`] still has to be called.
    pub fn key_unverified(&self) -> bool {
        self.key_unverified
    }

    /// Makes every write done so far durable — on disk after a power loss too (see
    /// [`commit`]); call before acknowledging anything that must last. Concurrent callers
    /// share one commit.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.commits.commit(|| {
            self.db.flush()?;
            if let Some(file) = &self.db_file {
                file.sync_data().map_err(|cause| StoreError::Dir {
                    path: self.path.join("db"),
                    cause,
                })?;
            }
            Ok(())
        })
    }

    /// Whether a flush now fails because the disk is full (see [`space`]): then sled fails
    /// every later write too, until the database is opened again.
    pub fn flush_hits_full_disk(&self) -> bool {
        match self.db.flush() {
            Err(sled::Error::Io(e)) => space::is_full(&e),
            Err(sled::Error::ReportableBug(text)) => text.contains("No space left"),
            _ => false,
        }
    }

    /// A fresh, strictly increasing id (unique within this database).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }
}

/// The answers of several trees to "does the key open your sealed records?" as one (see
/// [`Store::confirm_key`]): yes if any tree's did; no if some tree had sealed records and none
/// opened; `None` only if no tree had any.
pub fn any_sample_opens(answers: impl IntoIterator<Item = Option<bool>>) -> Option<bool> {
    answers.into_iter().fold(None, |all, one| match (all, one) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), _) | (_, Some(false)) => Some(false),
        (None, None) => None,
    })
}

/// Reads and decodes one record.
pub(crate) fn get<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    match tree.get(key)? {
        Some(bytes) => codec::decode(&bytes)
            .map(Some)
            .map_err(|cause| StoreError::Corrupt { tree: name, cause }),
        None => Ok(None),
    }
}

/// Encodes and writes one record.
pub(crate) fn put<T: Serialize>(
    tree: &sled::Tree,
    name: &'static str,
    key: &[u8],
    value: &T,
) -> Result<(), StoreError> {
    tree.insert(key, encode(name, value)?)?;
    Ok(())
}

/// Encodes a record for `tree`.
pub(crate) fn encode<T: Serialize>(tree: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    codec::encode(value).map_err(|cause| StoreError::Encode { tree, cause })
}

/// Decodes a record read from `tree`.
pub(crate) fn decode<T: DeserializeOwned>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    codec::decode(bytes).map_err(|cause| StoreError::Corrupt { tree, cause })
}

/// Loads the data directory's key and proves it is the one the database's secrets were sealed
/// with, before anything is read or written with it:
/// - a database holding data but no key file → [`SealError::Missing`]: a new key would make
///   every sealed secret unreadable. "Holding data" is judged from sled's trees, not from sled's
///   `conf` file, which can be lost along with the key;
/// - a key check value in `meta` that the key does not open → [`StoreError::KeyMismatch`];
/// - no check value yet: a new database gets one made with this key, flushed; one written
///   before check values existed is returned as unverified (`true`), for [`Store::confirm_key`].
fn open_sealer(path: &Path, db: &sled::Db) -> Result<(Sealer, bool), StoreError> {
    let mut holds_data = false;
    for name in db.tree_names() {
        holds_data |= !db.open_tree(name)?.is_empty();
    }
    let sealer = Sealer::load_or_create(path, !holds_data)?;
    let meta = db.open_tree("meta")?;
    match get::<Vec<u8>>(&meta, "meta", MetaKey::KeyCheck.name().as_bytes())? {
        Some(check) if sealer.matches_check(&check) => {}
        Some(_) => {
            return Err(StoreError::KeyMismatch {
                key_file: Sealer::key_path(path),
                data_dir: path.to_path_buf(),
            })
        }
        // A database from before check values: whether this key is its key is not known yet.
        // Its check value is made once a sealed record has opened with the key (see
        // [`Store::confirm_key`]): made now, a wrong key's check value would lock the right
        // key out for good.
        None if holds_data => return Ok((sealer, true)),
        None => {
            put(
                &meta,
                "meta",
                MetaKey::KeyCheck.name().as_bytes(),
                &sealer.check_value()?,
            )?;
            db.flush()?;
        }
    }
    Ok((sealer, false))
}

/// sled's error at open as ours: damage (sled's `Corruption`, an unsupported file, or the
/// I/O error its reader gives for a short or garbled file) becomes [`StoreError::Damaged`]
/// naming the directory, with sled's own words in the log only.
fn damaged_or(path: &Path, e: sled::Error) -> StoreError {
    let damaged = match &e {
        sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => true,
        sled::Error::Io(io) => {
            io.kind() == io::ErrorKind::UnexpectedEof
                || io.kind() == io::ErrorKind::InvalidData
                || io.to_string().contains("corrupt")
        }
        _ => false,
    };
    if damaged {
        log::debug!("data directory {}: sled says {e:?}", path.display());
        StoreError::Damaged {
            path: path.to_path_buf(),
        }
    } else {
        e.into()
    }
}

/// [`damaged_or`] for an error met just after the open (reading the trees' first records).
fn damaged_store_error(path: &Path, e: StoreError) -> StoreError {
    match e {
        StoreError::Sled(inner) => damaged_or(path, inner),
        other => other,
    }
}

fn is_lock_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

/// [`perms::check_owner`] as a [`StoreError`].
fn check_owner(path: &Path) -> Result<(), StoreError> {
    perms::check_owner(path).map_err(|e| match e {
        perms::CheckError::Foreign(f) => StoreError::Foreign {
            dir: path.to_path_buf(),
            path: f.path,
            owner: f.owner,
            euid: f.euid,
        },
        perms::CheckError::Io(cause) => StoreError::Dir {
            path: path.to_path_buf(),
            cause,
        },
    })
}

/// [`perms::tighten`] as a [`StoreError`] naming the path it could not change.
fn tighten(path: &Path) -> Result<(), StoreError> {
    perms::tighten(path).map_err(|(path, cause)| StoreError::Dir { path, cause })
}

fn create_private_dir(path: &Path) -> Result<(), StoreError> {
    let wrap = |cause| StoreError::Dir {
        path: path.to_path_buf(),
        cause,
    };
    if !path.exists() {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(path).map_err(wrap)?;
    } else if !path.is_dir() {
        return Err(wrap(io::Error::other("exists and is not a directory")));
    } else {
        // Someone else's directory is refused, not chmod-ed (see [`perms`]).
        check_owner(path)?;
        // An existing directory may have been created by hand with a wide mode: the database
        // holds password hashes, so it is owner-only whatever made it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(path).map_err(wrap)?.permissions().mode();
            if mode & 0o077 != 0 {
                fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(wrap)?;
                log::warn!(
                    "data directory {} was readable by others; set to 0700",
                    path.display()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let _first = Store::open(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        // sled's lock is per process (flock), so a second open in-process shares it; the
        // cross-process refusal is covered by the CLI tests.
        drop(_first);
        let again = Store::open(&path).unwrap();
        assert_eq!(
            again.get_meta::<u32>(MetaKey::LayoutVersion).unwrap(),
            Some(LAYOUT_VERSION)
        );
    }

    #[test]
    fn an_existing_database_without_its_key_is_refused_and_a_wide_dir_is_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        drop(Store::open(&path).unwrap());
        fs::remove_file(path.join("secret.key")).unwrap();
        let err = Store::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("is missing but the database beside it exists"),
            "{err}"
        );
        assert!(!path.join("secret.key").exists(), "no new key was made");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let fresh = dir.path().join("wide");
            fs::create_dir(&fresh).unwrap();
            fs::set_permissions(&fresh, fs::Permissions::from_mode(0o755)).unwrap();
            drop(Store::open(&fresh).unwrap());
            let mode = fs::metadata(&fresh).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }

    /// Issue 7 point 2: another 32-byte key is refused up front, naming the key file and the
    /// data directory; the database is left as it was and opens again with the right key.
    #[test]
    fn a_different_key_is_refused_before_any_secret_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        drop(Store::open(&path).unwrap());
        let key_file = path.join("secret.key");
        let right = fs::read(&key_file).unwrap();
        fs::write(&key_file, [7u8; 32]).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::KeyMismatch { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&key_file.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("database in {}", path.display())),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
        fs::write(&key_file, &right).unwrap();
        Store::open(&path).unwrap();
    }

    /// Issue 7 point 2: with sled's `conf` and the key both gone, the data is still seen and no
    /// new key is made over it.
    #[test]
    fn losing_conf_and_key_together_makes_no_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        {
            let s = Store::open(&path).unwrap();
            s.put_meta(MetaKey::QueueBlocked, &1u32).unwrap();
            s.flush().unwrap();
        }
        fs::remove_file(path.join("conf")).unwrap();
        fs::remove_file(path.join("secret.key")).unwrap();
        let err = Store::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("is missing but the database beside it exists"),
            "{err}"
        );
        assert!(!path.join("secret.key").exists(), "no new key was made");
    }

    /// A database written before key check values existed keeps opening, and gets one.
    #[test]
    fn a_database_without_a_check_value_gets_one_at_its_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        {
            let s = Store::open(&path).unwrap();
            s.remove_meta(MetaKey::KeyCheck).unwrap();
            s.flush().unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert!(s.key_unverified());
        assert!(
            s.get_meta::<Vec<u8>>(MetaKey::KeyCheck).unwrap().is_none(),
            "not before a check"
        );
        let err = s.confirm_key(Some(false)).unwrap_err();
        assert!(matches!(err, StoreError::KeyMismatch { .. }), "{err}");
        assert!(s.get_meta::<Vec<u8>>(MetaKey::KeyCheck).unwrap().is_none());
        s.confirm_key(Some(true)).unwrap();
        let check: Vec<u8> = s
            .get_meta(MetaKey::KeyCheck)
            .unwrap()
            .expect("check value written");
        assert!(s.sealer().matches_check(&check));
    }

    #[test]
    fn sample_answers_combine_to_yes_if_any_opens_and_none_only_if_none_was_tried() {
        for (answers, all) in [
            (vec![], None),
            (vec![None, None], None),
            (vec![None, Some(false)], Some(false)),
            (vec![Some(false), None], Some(false)),
            (vec![Some(false), Some(true)], Some(true)),
            (vec![Some(true), Some(false)], Some(true)),
            (vec![None, Some(true)], Some(true)),
        ] {
            assert_eq!(any_sample_opens(answers.clone()), all, "{answers:?}");
        }
    }

    #[test]
    fn a_newer_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        {
            let s = Store::open(&path).unwrap();
            s.put_meta(MetaKey::LayoutVersion, &99u32).unwrap();
            s.flush().unwrap();
        }
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::Layout { found: 99, .. })
        ));
    }
}
