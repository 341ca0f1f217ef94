//! The embedded database: one sled directory, typed trees, sealed secrets.
//!
//! One process owns the directory at a time (sled takes an exclusive lock); a second process
//! gets [`StoreError::Locked`] at once, with a message that says what to do. The trees:
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
//! | `auth_events` | `time µs BE ‖ seq BE` | [`crate::auth_events::AuthEvent`] |
//! | `meta` | name | breaker state, health probe, queue block, counters (`sync_count/<status>`: items per status, kept by the queue's transactions), schema version |

pub mod codec;
pub mod seal;

use serde::{de::DeserializeOwned, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use seal::{SealError, Sealer};

/// sled's page cache: small servers, small cache (sled's default is 1 GiB).
const CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// How often to try a locked database (50 ms apart) before reporting it in use.
const LOCK_ATTEMPTS: u32 = 10;
/// The layout version of the trees; bumped with a migration step when the layout changes.
/// - 2: sync items may carry an `applying` mark (layout-1 records still decode as they are);
///   per-status queue counters in `meta` (`sync_count/*`), built by one scan on first use.
///   Builds that know only 1 refuse a layout-2 database: they would write items without
///   keeping the counters.
const LAYOUT_VERSION: u32 = 2;

/// What can go wrong with the embedded database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database.
    #[error("data directory {path} is in use by another keycloak-resilient process (is `start` running?)")]
    Locked { path: PathBuf },
    /// The directory could not be created or opened.
    #[error("data directory {path}: {cause}")]
    Dir { path: PathBuf, cause: io::Error },
    /// sled reported an error.
    #[error("database error: {0}")]
    Sled(sled::Error),
    /// A record did not decode.
    #[error("damaged record in tree {tree}: {cause}")]
    Corrupt {
        tree: &'static str,
        cause: codec::CodecError,
    },
    /// A record could not be encoded.
    #[error("could not encode record for tree {tree}: {cause}")]
    Encode {
        tree: &'static str,
        cause: codec::CodecError,
    },
    /// Sealing or unsealing a secret failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The database was written by a newer layout.
    #[error("data directory {path} has layout version {found}; this build knows {LAYOUT_VERSION}")]
    Layout { path: PathBuf, found: u32 },
    /// The password verifier for a record could not be computed.
    #[error(transparent)]
    Hash(#[from] crate::password::HashError),
}

// Every error here quotes its cause in its own message, so none also reports it as a `source`
// (an anyhow chain printed with `{:#}` would say it twice).
impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e)
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
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed, mode 0700) the database directory `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        create_private_dir(path)?;
        // sled writes `conf` when it creates a database: its presence means there is data that
        // the existing key sealed.
        let is_new = !path.join("conf").exists();
        // sled releases its file lock from a background thread once the last handle is gone,
        // a moment after a drop: reopening in the same process right away can see it still
        // held. A short wait covers that; another process holding the database still gets
        // `Locked` within half a second.
        let mut attempts = 0;
        let db = loop {
            match sled::Config::new()
                .path(path)
                .cache_capacity(CACHE_BYTES)
                .open()
            {
                Ok(db) => break db,
                Err(sled::Error::Io(ref io)) if is_lock_error(io) => {
                    attempts += 1;
                    if attempts >= LOCK_ATTEMPTS {
                        return Err(StoreError::Locked {
                            path: path.to_path_buf(),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(other) => return Err(StoreError::Sled(other)),
            }
        };
        let sealer = Sealer::load_or_create(path, is_new)?;
        Self::from_db(db, sealer, path.to_path_buf())
    }

    /// A throw-away in-memory store, for tests.
    pub fn temporary() -> Result<Store, StoreError> {
        let db = sled::Config::new().temporary(true).open()?;
        Self::from_db(db, Sealer::ephemeral(), PathBuf::from("(temporary)"))
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
        };
        match store.get_meta::<u32>("layout_version")? {
            None => store.put_meta("layout_version", &LAYOUT_VERSION)?,
            Some(v) if v == LAYOUT_VERSION => {}
            // 1 → 2 needs no rewrite (see LAYOUT_VERSION).
            Some(1) => store.put_meta("layout_version", &LAYOUT_VERSION)?,
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

    /// Flushes every pending write to disk; call before acknowledging anything that must last.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Reads a typed value from `meta`.
    pub fn get_meta<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        get(&self.meta, "meta", name.as_bytes())
    }

    /// Writes a typed value to `meta`.
    pub fn put_meta<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StoreError> {
        put(&self.meta, "meta", name.as_bytes(), value)
    }

    /// Removes a value from `meta`.
    pub fn remove_meta(&self, name: &str) -> Result<(), StoreError> {
        self.meta.remove(name.as_bytes())?;
        Ok(())
    }

    /// Adds `by` to the u64 counter `name` in `meta` and returns the new value.
    pub fn bump_counter(&self, name: &str, by: u64) -> Result<u64, StoreError> {
        let key = format!("counter/{name}");
        let new = self.meta.update_and_fetch(key.as_bytes(), |old| {
            let old = old
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Some(old.saturating_add(by).to_be_bytes().to_vec())
        })?;
        Ok(new
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// Reads the u64 counter `name` (0 when never bumped).
    pub fn counter(&self, name: &str) -> Result<u64, StoreError> {
        let key = format!("counter/{name}");
        Ok(self
            .meta
            .get(key.as_bytes())?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// A fresh, strictly increasing id (unique within this database).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }
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

/// The key of a (user, package) pair: usernames compare case-insensitively, as in Keycloak.
pub fn user_key(user: &str, package: &str) -> Vec<u8> {
    let mut key = user.to_lowercase().into_bytes();
    key.push(0);
    key.extend_from_slice(package.as_bytes());
    key
}

/// Longest user or package name accepted (Keycloak's own username limit is 255).
pub const MAX_NAME_CHARS: usize = 255;

/// The one rule for user and package names wherever they enter (local users, the queue): not
/// empty, at most [`MAX_NAME_CHARS`] characters, no control characters (keys use 0x00 as a
/// separator). The message names `field`, and quotes nothing.
pub fn check_name(field: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "{field} is longer than {MAX_NAME_CHARS} characters"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field} contains a control character"));
    }
    Ok(())
}

fn is_lock_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
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
            again.get_meta::<u32>("layout_version").unwrap(),
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

    #[test]
    fn counters_and_meta_round_trip() {
        let s = Store::temporary().unwrap();
        assert_eq!(s.counter("x").unwrap(), 0);
        assert_eq!(s.bump_counter("x", 2).unwrap(), 2);
        assert_eq!(s.bump_counter("x", 3).unwrap(), 5);
        s.put_meta("name", &"v".to_string()).unwrap();
        assert_eq!(s.get_meta::<String>("name").unwrap().as_deref(), Some("v"));
        s.remove_meta("name").unwrap();
        assert_eq!(s.get_meta::<String>("name").unwrap(), None);
    }

    #[test]
    fn user_keys_ignore_case() {
        assert_eq!(user_key("Alice", "web"), user_key("alice", "web"));
        assert_ne!(user_key("alice", "web"), user_key("alice", "api"));
    }

    #[test]
    fn a_newer_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        {
            let s = Store::open(&path).unwrap();
            s.put_meta("layout_version", &99u32).unwrap();
            s.flush().unwrap();
        }
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::Layout { found: 99, .. })
        ));
    }
}
