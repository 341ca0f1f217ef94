//! Sealing of secrets at rest (tokens, passwords waiting in the sync queue).
//!
//! XChaCha20-Poly1305 with a random 24-byte nonce per value, so nonces never need a counter.
//! The 32-byte key lives in `secret.key` beside the database, created owner-only (0600) at first
//! start. Whoever can read the data directory as its owner can read the key; the point is that a
//! copied database file, a backup or a stray `strings` over it reveals no secret.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const KEY_FILE: &str = "secret.key";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
/// The known plaintext of the key check value (see [`Sealer::check_value`]).
const CHECK_PLAINTEXT: &[u8] = b"keycloak-resilient key check v1";

/// Why sealing or unsealing failed. Never carries the plaintext.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key file could not be created or read.
    #[error("key file {path}: {cause}")]
    KeyFile {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        cause: io::Error,
    },
    /// The database exists but its key file does not.
    #[error("key file {path} is missing but the database beside it exists: restore the key from the backup the database came from (without it, cached tokens and queued passwords cannot be read)")]
    Missing {
        /// The path concerned.
        path: PathBuf,
    },
    /// The key file exists but is not a 32-byte key.
    #[error("key file {path} is not a {KEY_LEN}-byte key (was it truncated or replaced?)")]
    BadKey {
        /// The path concerned.
        path: PathBuf,
    },
    /// The sealed value was tampered with, truncated, or sealed under another key.
    #[error("sealed value does not open (wrong key or damaged record)")]
    Open,
    /// Encryption itself failed (not expected).
    #[error("could not seal value")]
    Seal,
}

/// Seals and opens values under the data directory's key.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// Loads `dir/secret.key`, creating it (0600) with a fresh random key if it does not exist
    /// and `may_create` (a new database). For an existing database a missing key is an error: a
    /// new key would make every sealed token and queued password unreadable.
    pub fn load_or_create(dir: &Path, may_create: bool) -> Result<Sealer, SealError> {
        let path = dir.join(KEY_FILE);
        let key = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound && may_create => create_key(&path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SealError::Missing { path })
            }
            Err(cause) => return Err(SealError::KeyFile { path, cause }),
        };
        if key.len() != KEY_LEN {
            return Err(SealError::BadKey { path });
        }
        Ok(Sealer {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }

    /// A sealer with a random in-memory key, for tests.
    pub fn ephemeral() -> Sealer {
        let key: [u8; KEY_LEN] = rand::random();
        Sealer {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&key)),
        }
    }

    /// The path of the key file in the data directory `dir`.
    pub fn key_path(dir: &Path) -> PathBuf {
        dir.join(KEY_FILE)
    }

    /// A key check value: a known constant sealed under this key. Stored in the database
    /// (never the key, nor anything derived from it without the AEAD), it lets a later open tell
    /// a wrong or regenerated key from the right one before any secret is touched.
    pub fn check_value(&self) -> Result<Vec<u8>, SealError> {
        self.seal(CHECK_PLAINTEXT)
    }

    /// True when `check` is a [`Sealer::check_value`] made under this key.
    pub fn matches_check(&self, check: &[u8]) -> bool {
        self.open(check).is_ok_and(|p| p == CHECK_PLAINTEXT)
    }

    /// Returns nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut out = nonce.to_vec();
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext)
            .map_err(|_| SealError::Seal)?;
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a value produced by [`Sealer::seal`].
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), body)
            .map_err(|_| SealError::Open)
    }

    /// Seals a UTF-8 string.
    pub fn seal_str(&self, plaintext: &str) -> Result<Vec<u8>, SealError> {
        self.seal(plaintext.as_bytes())
    }

    /// Opens a value sealed by [`Sealer::seal_str`].
    pub fn open_string(&self, sealed: &[u8]) -> Result<String, SealError> {
        String::from_utf8(self.open(sealed)?).map_err(|_| SealError::Open)
    }
}

fn create_key(path: &Path) -> Result<Vec<u8>, SealError> {
    let key: [u8; KEY_LEN] = rand::random();
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let wrap = |cause| SealError::KeyFile {
        path: path.to_path_buf(),
        cause,
    };
    let mut file = options.open(path).map_err(wrap)?;
    file.write_all(&key).map_err(wrap)?;
    file.sync_all().map_err(wrap)?;
    Ok(key.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_detects_tampering() {
        let s = Sealer::ephemeral();
        let sealed = s.seal_str("hunter2-password").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(s.open_string(&sealed).unwrap(), "hunter2-password");
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(s.open(&bad).is_err());
        assert!(Sealer::ephemeral().open(&sealed).is_err());
        assert!(s.open(&[1, 2, 3]).is_err());
    }

    #[test]
    fn a_check_value_matches_its_own_key_only() {
        let s = Sealer::ephemeral();
        let check = s.check_value().unwrap();
        assert!(s.matches_check(&check));
        assert!(!Sealer::ephemeral().matches_check(&check));
        assert!(!s.matches_check(&s.seal_str("other").unwrap()));
        assert!(!s.matches_check(b"short"));
    }

    #[test]
    fn key_file_is_created_owner_only_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Sealer::load_or_create(dir.path(), false),
            Err(SealError::Missing { .. })
        ));
        let a = Sealer::load_or_create(dir.path(), true).unwrap();
        let sealed = a.seal_str("x").unwrap();
        let b = Sealer::load_or_create(dir.path(), false).unwrap();
        assert_eq!(b.open_string(&sealed).unwrap(), "x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        assert!(matches!(
            Sealer::load_or_create(dir.path(), true),
            Err(SealError::BadKey { .. })
        ));
    }
}
