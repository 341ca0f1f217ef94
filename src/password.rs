//! Password hashes: argon2id for everything we write; argon2, PBKDF2 and bcrypt for what we read.
//!
//! New hashes are argon2id with the crate's defaults (m=19 MiB, t=2, p=1) as PHC strings; they
//! serve the local user store and the token cache's offline verifier. A hash is never the
//! password: a stolen database yields nothing that logs in.
//!
//! Users migrated from another system arrive with that system's hashes, so [`verify`] also
//! accepts argon2i/argon2d, PBKDF2-SHA256/512 in PHC form (`$pbkdf2-sha256$i=…,l=…$salt$hash`)
//! and bcrypt (`$2a$`, `$2b$`, `$2y$`). [`needs_rehash`] tells the caller when a successful login
//! should replace such a hash with argon2id, so legacy hashes fade out as people log in.
//!
//! Every hash is parsed and its cost checked *before* any work is done ([`family`]): a typo or a
//! hostile import file must not be able to make one login allocate gigabytes or run for minutes,
//! and a malformed hash simply never matches — nothing here panics on input.
//!
//! Not accepted: passlib's PBKDF2 MCF form (`$pbkdf2-sha256$29000$…`, bare round count),
//! `$2x$` bcrypt (the crypt_blowfish bug it flags is not reproduced by the `bcrypt` crate),
//! crypt(3) MD5/SHA families, scrypt, and Keycloak's own JSON credential format.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::PasswordVerifier;
use argon2::Argon2;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

/// Longest password accepted anywhere (login, passwd, user add, queued changes), in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// The one rule for a password wherever one enters (local users, the sync queue): not empty,
/// at most [`MAX_PASSWORD_BYTES`] bytes, no NUL byte (C-string APIs and many stores would
/// silently cut the password there). The message names `field`, never the value.
///
/// # Errors
///
/// A one-line message naming `field` and what is wrong.
pub fn check_password(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if value.len() > MAX_PASSWORD_BYTES {
        return Err(format!("{field} is longer than {MAX_PASSWORD_BYTES} bytes"));
    }
    if value.contains('\0') {
        return Err(format!("{field} contains a NUL byte"));
    }
    Ok(())
}

// The cost caps: what one login attempt can afford on a small server, about half a second of
// one core at most (a hash over them would let anyone holding a user name make the service
// allocate or compute that much per attempt). Imports refuse such hashes, and [`verify`] never
// runs them.
/// Largest argon2 memory cost accepted, in KiB (64 MiB, RFC 9106's second recommended option).
pub const ARGON2_MAX_M_KIB: u32 = 64 * 1024;
/// Largest argon2 time cost (passes) accepted.
pub const ARGON2_MAX_T: u32 = 10;
/// Largest argon2 parallelism accepted (the lanes run one after the other here).
pub const ARGON2_MAX_P: u32 = 4;
/// Largest argon2 memory × passes accepted, in KiB: 64 MiB three times (RFC 9106's m=64 MiB,
/// t=3); m=19 MiB with t=10 passes, 64 MiB with t=10 does not.
pub const ARGON2_MAX_WORK_KIB: u64 = 3 * 64 * 1024;
/// Largest PBKDF2 iteration count accepted (Keycloak's own default is 210 000 for SHA-512,
/// OWASP's 600 000 for SHA-256).
pub const PBKDF2_MAX_ROUNDS: u32 = 2_000_000;
/// Largest bcrypt cost accepted (2^13 rounds, about half a second per login).
pub const BCRYPT_MAX_COST: u32 = 13;

/// An argon2id hash with the default parameters, for [`verify_dummy`] if hashing ever failed.
const DUMMY_FALLBACK: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                              O7Dvn6Vn6bc3jdnbCs8Hq4DAIXyEn3nD8PqYaEDMF3A";

/// Why hashing failed (not expected with default parameters).
#[derive(Debug, thiserror::Error)]
#[error("could not hash password: {0}")]
pub struct HashError(String);

/// The hash schemes [`verify`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashFamily {
    /// argon2id (PHC); what [`hash`] writes.
    Argon2id,
    /// argon2i (PHC).
    Argon2i,
    /// argon2d (PHC).
    Argon2d,
    /// PBKDF2 with HMAC-SHA256 (PHC).
    Pbkdf2Sha256,
    /// PBKDF2 with HMAC-SHA512 (PHC).
    Pbkdf2Sha512,
    /// bcrypt (`$2a$`, `$2b$` or `$2y$`).
    Bcrypt,
}

impl fmt::Display for HashFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HashFamily::Argon2id => "argon2id",
            HashFamily::Argon2i => "argon2i",
            HashFamily::Argon2d => "argon2d",
            HashFamily::Pbkdf2Sha256 => "pbkdf2-sha256",
            HashFamily::Pbkdf2Sha512 => "pbkdf2-sha512",
            HashFamily::Bcrypt => "bcrypt",
        })
    }
}

/// What to list when a hash is refused.
const ACCEPTED: &str =
    "accepted: argon2id, argon2i, argon2d, pbkdf2-sha256, pbkdf2-sha512 (PHC), bcrypt $2a$/$2b$/$2y$";

/// Hashes `password` with argon2id and a fresh random salt; returns the PHC string.
pub fn hash(password: &str) -> Result<String, HashError> {
    let params = argon2::Params::default();
    let salt = argon2::password_hash::generate_salt();
    let mut out = vec![
        0u8;
        params
            .output_len()
            .unwrap_or(argon2::Params::DEFAULT_OUTPUT_LEN)
    ];
    let argon = Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params.clone(),
    );
    with_blocks(params.block_count(), |blocks| {
        argon.hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, blocks)
    })
    .map_err(|e| HashError(e.to_string()))?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(argon2::Version::V0x13.into()),
        params: argon2::password_hash::phc::ParamsString::try_from(&params)
            .map_err(|e| HashError(e.to_string()))?,
        salt: Some(
            argon2::password_hash::phc::Salt::new(&salt).map_err(|e| HashError(e.to_string()))?,
        ),
        hash: Some(
            argon2::password_hash::phc::Output::new(&out).map_err(|e| HashError(e.to_string()))?,
        ),
    };
    Ok(phc.to_string())
}

/// Largest argon2 memory (in 1 KiB blocks) kept for reuse: the default cost's. A costlier
/// imported hash gets a one-off buffer.
const REUSED_BLOCKS: usize = 19 * 1024;

/// argon2's working memory, a fixed number of buffers shared by every thread: one per core
/// (at most [`MAX_BUFFERS`]). argon2 would otherwise allocate (64-byte aligned, zeroed) 19 MiB
/// per hash or verify, which glibc does not hand back reliably; kept per thread instead, the
/// service's worker pool (cores plus the Keycloak calls allowed to wait) held 19 MiB in each
/// worker, 240 MiB in all. With the buffers here the memory is at most one buffer per core,
/// however many threads verify: a thread finding them all in use waits for one, which costs
/// nothing, since the cores are busy hashing anyway (benches/socket_memory.rs).
struct Buffers {
    state: Mutex<Pool>,
    returned: Condvar,
    max: usize,
}

/// What [`Buffers`] holds, under its lock.
#[derive(Default)]
struct Pool {
    /// Buffers no thread is using.
    free: Vec<Vec<argon2::Block>>,
    /// Buffers made so far (free, lent, or being warmed): at most [`Buffers::max`].
    made: usize,
    /// A buffer is being filled by [`warm_up`]: wait for it rather than make another.
    warming: bool,
}

/// The most buffers, however many cores.
const MAX_BUFFERS: usize = 16;

fn buffers() -> &'static Buffers {
    static BUFFERS: OnceLock<Buffers> = OnceLock::new();
    BUFFERS.get_or_init(|| {
        Buffers::new(
            std::thread::available_parallelism()
                .map_or(1, usize::from)
                .clamp(1, MAX_BUFFERS),
        )
    })
}

impl Buffers {
    fn new(max: usize) -> Buffers {
        Buffers {
            state: Mutex::new(Pool::default()),
            returned: Condvar::new(),
            max,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lends a free buffer, makes one while fewer than `max` are made and none is being
    /// warmed, or waits for one to be given back.
    fn lend(&'static self) -> Lent {
        let mut state = self.state();
        loop {
            if let Some(buffer) = state.free.pop() {
                return Lent::new(self, buffer, false);
            }
            if !state.warming && state.made < self.max {
                state.made += 1;
                return Lent::new(self, Vec::new(), false);
            }
            state = self.returned.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// See [`warm_up`]: fills a new buffer on a thread of its own, unless one is free or all
    /// are made.
    fn warm(&'static self) {
        let mut warming = {
            let mut state = self.state();
            if !state.free.is_empty() || state.made >= self.max {
                return; // already warm, or every buffer is made
            }
            state.made += 1;
            state.warming = true;
            Lent::new(self, Vec::new(), true)
        };
        // Given back when the thread is done — or, if it cannot be started, when the closure
        // holding it is dropped: then the next verify fills that (empty) buffer itself.
        let spawned = std::thread::Builder::new()
            .name("argon2-warm-up".into())
            .spawn(move || {
                if let Some(buffer) = warming.buffer.as_mut() {
                    buffer.resize(REUSED_BLOCKS, argon2::Block::new());
                }
            });
        if let Err(e) = spawned {
            log::debug!("argon2 buffer not warmed ahead: {e}");
        }
    }
}

/// A buffer taken from [`Buffers`]; given back when dropped (a panic in argon2 or in the
/// warm-up included), and the warm-up's marked done.
struct Lent {
    pool: &'static Buffers,
    buffer: Option<Vec<argon2::Block>>,
    warming: bool,
}

impl Lent {
    fn new(pool: &'static Buffers, buffer: Vec<argon2::Block>, warming: bool) -> Lent {
        Lent {
            pool,
            buffer: Some(buffer),
            warming,
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            let mut state = self.pool.state();
            state.free.push(buffer);
            if self.warming {
                state.warming = false;
            }
            drop(state);
            if self.warming {
                // Those waiting for the warm-up may now make buffers of their own too.
                self.pool.returned.notify_all();
            } else {
                self.pool.returned.notify_one();
            }
        }
    }
}

/// Fills one buffer of the default cost ahead, on a thread of its own, for a verify that is
/// about to come. A fresh process (a one-shot `login`) otherwise pays, inside its verify, the
/// first touch of all 19 MiB — page faults that cost as much as the hash itself on these
/// machines (benches/one_shot.rs); called before the database opens, the two overlap on
/// separate cores. Once per process; a verify arriving meanwhile waits for this buffer rather
/// than fill one of its own.
pub fn warm_up() {
    static STARTED: AtomicBool = AtomicBool::new(false);
    if !STARTED.swap(true, Ordering::SeqCst) {
        buffers().warm();
    }
}

/// Runs `f` on `n` argon2 blocks, from the shared buffers when `n` is the default cost or less.
fn with_blocks<R>(n: usize, f: impl FnOnce(&mut [argon2::Block]) -> R) -> R {
    if n > REUSED_BLOCKS {
        let mut one_off = vec![argon2::Block::new(); n];
        return f(&mut one_off);
    }
    let mut lent = buffers().lend();
    let blocks = lent.buffer.get_or_insert_with(Vec::new);
    if blocks.len() < n {
        blocks.resize(n, argon2::Block::new());
    }
    f(&mut blocks[..n])
}

/// Verifies an argon2 PHC string with the reusable working memory.
fn verify_argon2(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(argon2::Version::try_from) {
        None => argon2::Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = argon2::Params::try_from(&parsed) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    let computed = with_blocks(params.block_count(), |blocks| {
        argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, blocks)
    });
    computed.is_ok() && constant_time_eq(&out, expected.as_bytes())
}

/// Compares without an early exit, so the time does not tell how many bytes matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True when `password` matches `phc` (any family of [`HashFamily`]). A malformed hash, or one
/// whose cost is beyond the limits [`family`] enforces, never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    match family(phc) {
        Ok(HashFamily::Argon2id | HashFamily::Argon2i | HashFamily::Argon2d) => {
            verify_argon2(password, phc)
        }
        Ok(HashFamily::Pbkdf2Sha256 | HashFamily::Pbkdf2Sha512) => PasswordHash::new(phc)
            .is_ok_and(|parsed| {
                pbkdf2::Pbkdf2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            }),
        // Truncating verify: the hash was made elsewhere, by implementations that use only the
        // first 72 bytes of the password; refusing longer passwords would lock those users out.
        Ok(HashFamily::Bcrypt) => bcrypt::verify(password.as_bytes(), phc).unwrap_or(false),
        Err(_) => false,
    }
}

/// Spends about the time of one [`verify`] against a fresh [`hash`], and answers nothing.
///
/// For callers that must not reveal, by answering faster, that there was nothing to verify
/// (an unknown user, a locked account).
pub fn verify_dummy(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    // Computed once with the current defaults, so the cost follows them if they change; the
    // constant (same defaults) only serves if hashing itself fails, which it does not.
    let dummy = DUMMY.get_or_init(|| {
        hash("keycloak-resilient dummy password").unwrap_or_else(|_| DUMMY_FALLBACK.to_string())
    });
    let _ = verify_argon2(password, dummy);
}

/// True unless `phc` is argon2id: a successful login with this hash should store a fresh
/// [`hash`] of the password instead (the caller does that; this only looks at the string).
pub fn needs_rehash(phc: &str) -> bool {
    !matches!(family(phc), Ok(HashFamily::Argon2id))
}

/// Checks that `hash` is a hash [`verify`] accepts, for imports.
///
/// # Errors
/// A message saying why it is refused (unknown scheme, malformed, cost out of bounds). The
/// message never contains the hash.
pub fn check_importable(hash: &str) -> Result<(), String> {
    family(hash).map(|_| ())
}

/// Parses `hash` and says which family it is.
///
/// # Errors
/// A message saying why it is not accepted; it never contains the hash or any part of it.
pub fn family(hash: &str) -> Result<HashFamily, String> {
    let Some(rest) = hash.strip_prefix('$') else {
        return Err(format!(
            "not a password hash (it must start with `$`; {ACCEPTED})"
        ));
    };
    let id = rest.split('$').next().unwrap_or_default();
    match id {
        "argon2id" | "argon2i" | "argon2d" => argon2_family(hash),
        "pbkdf2-sha256" | "pbkdf2-sha512" => pbkdf2_family(hash),
        "2a" | "2b" | "2y" => bcrypt_family(hash),
        "2x" => Err(
            "bcrypt $2x$ hashes are not accepted (they flag a historic bug that this \
                     implementation does not reproduce)"
                .to_string(),
        ),
        // Name only schemes we recognise: an unknown id might be the start of a password
        // pasted into the wrong column.
        known @ ("1" | "5" | "6" | "apr1" | "md5" | "sha1" | "y" | "7" | "scrypt" | "pbkdf2"
        | "pbkdf2-sha1") => Err(format!(
            "hash scheme `${known}$` is not accepted ({ACCEPTED})"
        )),
        _ => Err(format!("unknown hash scheme ({ACCEPTED})")),
    }
}

fn argon2_family(hash: &str) -> Result<HashFamily, String> {
    let parsed = PasswordHash::new(hash).map_err(|e| format!("malformed argon2 hash: {e}"))?;
    let family = match parsed.algorithm.as_str() {
        "argon2id" => HashFamily::Argon2id,
        "argon2i" => HashFamily::Argon2i,
        "argon2d" => HashFamily::Argon2d,
        _ => return Err("malformed argon2 hash: unexpected algorithm".to_string()),
    };
    if let Some(v) = parsed.version {
        argon2::Version::try_from(v)
            .map_err(|_| format!("argon2 hash has unknown version {v} (known: 16, 19)"))?;
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err("malformed argon2 hash: salt or hash part missing".to_string());
    }
    let params = argon2::Params::try_from(&parsed)
        .map_err(|e| format!("argon2 hash has invalid parameters: {e}"))?;
    let work = u64::from(params.m_cost()) * u64::from(params.t_cost());
    if params.m_cost() > ARGON2_MAX_M_KIB
        || params.t_cost() > ARGON2_MAX_T
        || params.p_cost() > ARGON2_MAX_P
        || work > ARGON2_MAX_WORK_KIB
    {
        return Err(format!(
            "argon2 hash cost (m={}, t={}, p={}) is more than a login can afford (m ≤ \
             {ARGON2_MAX_M_KIB} KiB, t ≤ {ARGON2_MAX_T}, p ≤ {ARGON2_MAX_P}, m × t ≤ \
             {ARGON2_MAX_WORK_KIB}); rehash it with a lower cost before importing",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        ));
    }
    Ok(family)
}

fn pbkdf2_family(hash: &str) -> Result<HashFamily, String> {
    let parsed = PasswordHash::new(hash).map_err(|e| {
        format!("malformed pbkdf2 hash (PHC form `$pbkdf2-sha256$i=…,l=…$salt$hash` expected): {e}")
    })?;
    let family = match parsed.algorithm.as_str() {
        "pbkdf2-sha256" => HashFamily::Pbkdf2Sha256,
        "pbkdf2-sha512" => HashFamily::Pbkdf2Sha512,
        _ => return Err("malformed pbkdf2 hash: unexpected algorithm".to_string()),
    };
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err("malformed pbkdf2 hash: salt or hash part missing".to_string());
    }
    let params = pbkdf2::Params::try_from(&parsed).map_err(|e| {
        format!(
            "pbkdf2 hash has invalid parameters ({e}; i ≥ {} and l = length of the hash part)",
            pbkdf2::Params::MIN_ROUNDS
        )
    })?;
    if params.rounds() > PBKDF2_MAX_ROUNDS {
        return Err(format!(
            "pbkdf2 hash iteration count {} is more than a login can afford (at most \
             {PBKDF2_MAX_ROUNDS}); rehash it with fewer iterations before importing",
            params.rounds()
        ));
    }
    Ok(family)
}

fn bcrypt_family(hash: &str) -> Result<HashFamily, String> {
    let parts: bcrypt::HashParts = hash
        .parse()
        .map_err(|_| "malformed bcrypt hash (60 characters `$2b$NN$` + 53 expected)".to_string())?;
    let cost = parts.get_cost();
    if cost < 4 {
        return Err(format!("bcrypt cost {cost} is below bcrypt's minimum of 4"));
    }
    if cost > BCRYPT_MAX_COST {
        return Err(format!(
            "bcrypt cost {cost} is more than a login can afford (at most {BCRYPT_MAX_COST}); \
             rehash it with a lower cost before importing"
        ));
    }
    Ok(HashFamily::Bcrypt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordHasher;

    /// Issue 15 point 1: however many threads verify at once, argon2's memory is one buffer
    /// per core at most, reused (a thread-local buffer cost 19 MiB per worker thread).
    #[test]
    fn concurrent_verifies_share_at_most_one_buffer_per_core() {
        let phc = hash("Shared-Buffer-Pw-1").unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let phc = phc.clone();
                std::thread::spawn(move || verify("Shared-Buffer-Pw-1", &phc))
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap());
        }
        let pool = buffers();
        // Other tests of this binary hash too, so only the bound is checked, not who holds one.
        let created = pool.state().made;
        assert!(
            created <= pool.max,
            "{created} buffers for {} cores",
            pool.max
        );
    }

    /// The one-shot login's warm-up (issue 17 point 4): a verify that asks for a buffer while
    /// it is being filled waits for that one — already touched, the default cost's size —
    /// rather than make and fill a second, though the pool would allow two.
    #[test]
    fn a_verify_during_the_warm_up_gets_the_warmed_buffer() {
        let pool: &'static Buffers = Box::leak(Box::new(Buffers::new(2)));
        pool.warm();
        let lent = pool.lend();
        assert_eq!(lent.buffer.as_ref().map(Vec::len), Some(REUSED_BLOCKS));
        let state = pool.state();
        assert_eq!(state.made, 1, "a second buffer was made during the warm-up");
        assert!(!state.warming);
        drop(state);
        drop(lent);
        // Given back; a second warm-up finds it free and makes nothing.
        pool.warm();
        assert_eq!(pool.state().made, 1);
        assert_eq!(pool.state().free.len(), 1);
    }

    #[test]
    fn our_argon2_path_agrees_with_the_crate_both_ways() {
        let ours = hash("compat-pass").unwrap();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        assert!(Argon2::default()
            .verify_password(b"compat-pass", ours.as_str())
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"other", ours.as_str())
            .is_err());
        let theirs = Argon2::default()
            .hash_password(b"compat-pass")
            .unwrap()
            .to_string();
        assert!(verify("compat-pass", &theirs));
        assert!(!verify("other", &theirs));
        // argon2i/d and a non-default cost go through the same path.
        let costly = Argon2::new(
            argon2::Algorithm::Argon2i,
            argon2::Version::V0x13,
            argon2::Params::new(32 * 1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw")
        .unwrap()
        .to_string();
        assert!(verify("pw", &costly));
        assert!(!verify("px", &costly));
    }
    use pbkdf2::password_hash::CustomizedPasswordHasher;

    /// A PBKDF2 PHC hash of `password` (few rounds: tests only).
    fn pbkdf2_hash(password: &str, algorithm: pbkdf2::Algorithm) -> String {
        let params = pbkdf2::Params::new_with_output_len(1000, 32).unwrap();
        pbkdf2::Pbkdf2::default()
            .hash_password_customized(
                password.as_bytes(),
                b"0123456789abcdef",
                Some(algorithm.to_str()),
                None,
                params,
            )
            .unwrap()
            .to_string()
    }

    #[test]
    fn hashes_verify_and_differ_per_salt() {
        let a = hash("correct horse").unwrap();
        let b = hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b);
        assert!(verify("correct horse", &a));
        assert!(!verify("wrong horse", &a));
        assert!(!verify("correct horse", "not a hash"));
        assert!(!needs_rehash(&a));
        assert_eq!(family(&a), Ok(HashFamily::Argon2id));
    }

    #[test]
    fn argon2i_and_argon2d_verify_and_need_rehash() {
        for (alg, fam) in [
            (argon2::Algorithm::Argon2i, HashFamily::Argon2i),
            (argon2::Algorithm::Argon2d, HashFamily::Argon2d),
        ] {
            let params = argon2::Params::new(8, 1, 1, None).unwrap();
            let h = Argon2::new(alg, argon2::Version::V0x13, params)
                .hash_password(b"pw")
                .unwrap()
                .to_string();
            assert_eq!(family(&h), Ok(fam));
            assert!(verify("pw", &h));
            assert!(!verify("px", &h));
            assert!(needs_rehash(&h));
        }
    }

    #[test]
    fn pbkdf2_sha256_and_sha512_verify() {
        for (alg, fam) in [
            (pbkdf2::Algorithm::Pbkdf2Sha256, HashFamily::Pbkdf2Sha256),
            (pbkdf2::Algorithm::Pbkdf2Sha512, HashFamily::Pbkdf2Sha512),
        ] {
            let h = pbkdf2_hash("s3cret", alg);
            assert!(h.starts_with(&format!("${}$", alg.to_str())), "{h}");
            assert_eq!(family(&h), Ok(fam));
            assert!(verify("s3cret", &h));
            assert!(!verify("s3cre", &h));
            assert!(needs_rehash(&h));
        }
        // The reference vector from the pbkdf2 crate's own tests.
        let known = "$pbkdf2-sha256$i=4096,l=40\
            $c2FsdFNBTFRzYWx0U0FMVHNhbHRTQUxUc2FsdFNBTFRzYWx0\
            $NIyJ28vTKy8y2BS4EW6EzysXNH68GAAYHE4qH7jdU+HGNVGMfaxH6Q";
        assert!(verify("passwordPASSWORDpassword", known));
    }

    #[test]
    fn bcrypt_variants_verify() {
        let h = bcrypt::hash("hunter2", 4).unwrap();
        assert!(h.starts_with("$2b$04$"));
        for prefix in ["$2a$", "$2b$", "$2y$"] {
            let v = format!("{prefix}{}", &h[4..]);
            assert_eq!(family(&v), Ok(HashFamily::Bcrypt));
            assert!(verify("hunter2", &v));
            assert!(!verify("hunter3", &v));
            assert!(needs_rehash(&v));
        }
        let x = format!("$2x${}", &h[4..]);
        assert!(check_importable(&x).is_err());
        assert!(!verify("hunter2", &x));
    }

    #[test]
    fn malformed_and_unknown_hashes_are_refused_without_echo() {
        let secretish = "$6$rounds=5000$SECRETSALT$SECRETHASH";
        let cases = [
            "",
            "$",
            "$$$$",
            "plaintext-password",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$SECRETSALT",
            "$argon2id$v=99$m=19456,t=2,p=1$c29tZXNhbHQ$SECRETHASHSECRETHASH",
            "$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$SECRETHASHSECRETHASH",
            "$pbkdf2-sha256$i=10,l=32$SECRETSALT$SECRETHASH",
            "$pbkdf2-sha256$i=4000000000$c2FsdA$SECRETHASH",
            "$pbkdf2-sha256$SECRET",
            "$2b$04$SECRET",
            "$2b$31$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
            "$2b$04$£bcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ0123",
            "$SECRET$x",
            secretish,
        ];
        for c in cases {
            let err = check_importable(c).unwrap_err();
            assert!(!err.contains("SECRET"), "{c:?} → {err}");
            assert!(!verify("anything", c), "{c:?}");
            assert!(needs_rehash(c));
        }
        assert!(check_importable(secretish)
            .unwrap_err()
            .contains("`$6$` is not accepted"));
    }

    /// Issue 15 point 5: costs a login cannot afford are refused, naming the cost and the cap;
    /// the caps themselves are accepted.
    #[test]
    fn costs_beyond_what_a_login_affords_are_refused_naming_the_cap() {
        let salt = "c29tZXNhbHRzb21lc2FsdA";
        let out = "O7Dvn6Vn6bc3jdnbCs8Hq4DAIXyEn3nD8PqYaEDMF3A";
        let argon =
            |m: u32, t: u32, p: u32| format!("$argon2id$v=19$m={m},t={t},p={p}${salt}${out}");
        for ok in [argon(65536, 3, 4), argon(19456, 10, 1), argon(7168, 5, 1)] {
            assert_eq!(family(&ok), Ok(HashFamily::Argon2id), "{ok}");
        }
        for (bad, cap) in [
            (argon(65537, 1, 1), "m ≤ 65536 KiB"),
            (argon(1024 * 1024, 1, 1), "m ≤ 65536 KiB"),
            (argon(8192, 11, 1), "t ≤ 10"),
            (argon(8192, 1, 5), "p ≤ 4"),
            (argon(65536, 4, 1), "m × t ≤ 196608"),
        ] {
            let err = check_importable(&bad).unwrap_err();
            assert!(
                err.contains("more than a login can afford") && err.contains(cap),
                "{err}"
            );
            assert!(!verify("anything", &bad));
        }
        let bc = bcrypt::hash("pw", 4).unwrap();
        let at = |cost: &str| format!("$2b${cost}{}", &bc[6..]);
        assert_eq!(family(&at("13")), Ok(HashFamily::Bcrypt));
        let err = check_importable(&at("14")).unwrap_err();
        assert!(
            err.contains("bcrypt cost 14") && err.contains("at most 13"),
            "{err}"
        );
        let pb = |i: u32| {
            format!("$pbkdf2-sha256$i={i},l=32$MDEyMzQ1Njc4OWFiY2RlZg$O7Dvn6Vn6bc3jdnbCs8Hq4DAIXyEn3nD8PqYaEDMF3A")
        };
        assert_eq!(family(&pb(2_000_000)), Ok(HashFamily::Pbkdf2Sha256));
        let err = check_importable(&pb(2_000_001)).unwrap_err();
        assert!(
            err.contains("2000001") && err.contains("at most 2000000"),
            "{err}"
        );
    }

    #[test]
    fn dummy_fallback_is_a_default_argon2id_hash() {
        assert_eq!(family(DUMMY_FALLBACK), Ok(HashFamily::Argon2id));
        let parsed = PasswordHash::new(DUMMY_FALLBACK).unwrap();
        let (p, d) = (
            argon2::Params::try_from(&parsed).unwrap(),
            argon2::Params::default(),
        );
        assert_eq!(
            (p.m_cost(), p.t_cost(), p.p_cost()),
            (d.m_cost(), d.t_cost(), d.p_cost())
        );
    }
}
