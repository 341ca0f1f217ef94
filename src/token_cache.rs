//! The token cache: the last good Keycloak tokens per (user, package), usable for a grace period.
//!
//! Stored on every successful Keycloak login together with an argon2id verifier of the password
//! used, so that while Keycloak is away the same password (and only that one) gets the cached
//! token back. Tokens are sealed at rest. A Keycloak "invalid credentials" answer drops the entry:
//! the password changed centrally and the old one must stop working offline too.
//!
//! Requests run concurrently (one thread per socket client), so no entry is ever read and then
//! written back blindly: changes to an entry are compare-and-swap loops (`TokenCache::update`),
//! a login's write is checked against the local account in one transaction
//! ([`Verifier::Hash`]), and `passwd` sets the new verifier in its own transaction (see
//! `TokenCache::with_verifier`). A `passwd` can therefore never be undone by a login or a
//! refresh that read the entry, or the old password's hash, just before it.

use crate::account::Account;
use crate::clock::{happened, SharedClock};
use crate::keycloak::TokenSet;
use crate::local_users;
use crate::password;
use crate::store::{self, Store, StoreError};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::TransactionError;
use sled::Transactional;
use std::convert::Infallible;
use std::sync::Arc;

const TREE: &str = "token_cache";

/// One cached entry as stored (secrets sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedToken {
    /// The username as the user typed it at the last Keycloak login.
    pub username: String,
    /// The package (application) the token is for.
    pub package: String,
    /// Sealed access token.
    access_token: Vec<u8>,
    /// Sealed refresh token, if Keycloak gave one.
    refresh_token: Option<Vec<u8>>,
    /// When the access token itself expires (Keycloak's `expires_in`).
    pub expires_at: DateTime<Utc>,
    /// When the refresh token expires, if known.
    pub refresh_expires_at: Option<DateTime<Utc>>,
    /// When Keycloak issued it: the grace period runs from here.
    pub cached_at: DateTime<Utc>,
    /// When it was last handed out from the cache.
    pub last_used: Option<DateTime<Utc>>,
    /// How often it was handed out from the cache.
    pub use_count: u64,
    /// argon2id PHC string of the password that obtained it.
    verifier: String,
}

/// A token handed to a caller. `Debug` hides the tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken {
    /// The access token.
    pub access_token: String,
    /// The refresh token, if any.
    pub refresh_token: Option<String>,
    /// When the access token expires.
    pub expires_at: DateTime<Utc>,
    /// True when it came from the cache rather than a live Keycloak answer.
    pub cached: bool,
    /// When the cached entry was obtained from Keycloak (None for a live answer).
    pub cached_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthToken")
            .field("expires_at", &self.expires_at)
            .field("cached", &self.cached)
            .field("cached_at", &self.cached_at)
            .finish_non_exhaustive()
    }
}

/// How the cache learns the password's verifier.
pub enum Verifier<'a> {
    /// Hash this password now.
    Password(&'a str),
    /// A PHC hash of the same password that the caller already has (local auth verified the
    /// password against it): no second argon2 run on the login path. The entry is written only
    /// if the local account (same user and package) still holds this hash when it is written:
    /// a `passwd` that landed since local auth read it must not get the old password's
    /// verifier written back over its new one. Otherwise the fresh token is still returned,
    /// just not cached.
    Hash(&'a str),
}

/// The cache over the `token_cache` tree.
#[derive(Clone)]
pub struct TokenCache {
    store: Arc<Store>,
    clock: SharedClock,
    grace: Duration,
}

impl TokenCache {
    /// A cache whose entries are usable for `grace` after Keycloak issued them.
    pub fn new(store: Arc<Store>, clock: SharedClock, grace: std::time::Duration) -> TokenCache {
        TokenCache {
            store,
            clock,
            grace: Duration::from_std(grace).unwrap_or(Duration::MAX),
        }
    }

    /// Stores a fresh Keycloak answer and returns it as an [`AuthToken`] (with
    /// [`Verifier::Hash`], only if the local account still holds that hash).
    pub fn put(
        &self,
        account: &Account,
        tokens: &TokenSet,
        verifier: Verifier<'_>,
    ) -> Result<AuthToken, StoreError> {
        let (verifier, checked_locally) = match verifier {
            Verifier::Password(p) => (password::hash(p)?, false),
            Verifier::Hash(h) => (h.to_string(), true),
        };
        let entry = self.fresh_entry(account, tokens, verifier)?;
        let key = account.key();
        let bytes = store::encode(TREE, &entry)?;
        if !checked_locally {
            self.store.token_cache.insert(key, bytes)?;
        } else if !self.put_if_local_hash(&key, &entry.verifier, bytes)? {
            log::info!("token of {account} not cached: the local password changed meanwhile");
        }
        Ok(live(tokens, entry.expires_at))
    }

    /// A fresh Keycloak answer as an [`AuthToken`], not stored: for an answer that must not
    /// become the offline verifier (see `ResilientClient::authenticate_with`).
    pub fn uncached(&self, tokens: &TokenSet) -> AuthToken {
        live(tokens, after(self.clock.now(), tokens.expires_in))
    }

    /// A new entry for `tokens`, just issued, its secrets sealed.
    fn fresh_entry(
        &self,
        account: &Account,
        tokens: &TokenSet,
        verifier: String,
    ) -> Result<CachedToken, StoreError> {
        let now = self.clock.now();
        let sealer = self.store.sealer();
        Ok(CachedToken {
            username: account.user().to_string(),
            package: account.package().to_string(),
            access_token: sealer.seal_str(&tokens.access_token)?,
            refresh_token: tokens
                .refresh_token
                .as_deref()
                .map(|r| sealer.seal_str(r))
                .transpose()?,
            expires_at: after(now, tokens.expires_in),
            refresh_expires_at: (tokens.refresh_expires_in > 0)
                .then(|| after(now, tokens.refresh_expires_in)),
            cached_at: now,
            last_used: None,
            use_count: 0,
            verifier,
        })
    }

    /// Writes `bytes` as the entry at `key` if the local account at the same key holds the hash
    /// `phc`: checked and written in one transaction. `passwd` changes the account and this
    /// entry in one transaction too, so it is either wholly before this one (then `phc` is out
    /// of date and nothing is written) or wholly after it (and sets its verifier over this
    /// one). A missing or unreadable account record writes nothing either. Returns whether it
    /// was written.
    fn put_if_local_hash(&self, key: &[u8], phc: &str, bytes: Vec<u8>) -> Result<bool, StoreError> {
        let s = &self.store;
        let result: Result<bool, TransactionError<Infallible>> = (&s.local_users, &s.token_cache)
            .transaction(|(users, cache)| {
                let current = users.get(key)?;
                let same = current
                    .as_deref()
                    .is_some_and(|r| local_users::hash_in_record(r).is_ok_and(|h| h == phc));
                if same {
                    cache.insert(key, bytes.as_slice())?;
                }
                Ok(same)
            });
        result.map_err(|e| match e {
            TransactionError::Storage(e) => StoreError::from(e),
            TransactionError::Abort(never) => match never {},
        })
    }

    /// The entry, if any, regardless of age.
    pub fn entry(&self, account: &Account) -> Result<Option<CachedToken>, StoreError> {
        store::get(&self.store.token_cache, TREE, &account.key())
    }

    /// The cached token inside the grace period whose verifier matches `password`; marks it used.
    /// `already_verified` is a PHC hash the caller has just verified this password against: if
    /// it is the entry's verifier, the (costly) check is not repeated.
    pub fn authenticate(
        &self,
        account: &Account,
        password: &str,
        already_verified: Option<&str>,
    ) -> Result<Option<AuthToken>, StoreError> {
        let Some(entry) = self.entry(account)? else {
            return Ok(None);
        };
        if !self.in_grace(&entry) {
            return Ok(None);
        }
        let matches = already_verified == Some(entry.verifier.as_str())
            || password::verify(password, &entry.verifier);
        if !matches {
            return Ok(None);
        }
        // Handed out only if the verifier just checked is still the entry's: a `passwd` since
        // then has set another one.
        self.hand_out(account, Some(&entry.verifier))
    }

    /// The cached token inside the grace period, without a password check; marks it used.
    pub fn get(&self, account: &Account) -> Result<Option<AuthToken>, StoreError> {
        self.hand_out(account, None)
    }

    /// Marks the entry used and returns its tokens, if it is inside the grace period and (with
    /// `verified`) still has that verifier.
    fn hand_out(
        &self,
        account: &Account,
        verified: Option<&str>,
    ) -> Result<Option<AuthToken>, StoreError> {
        let now = self.clock.now();
        let handed = self.update(&account.key(), |entry| {
            if !self.in_grace(entry) || verified.is_some_and(|v| v != entry.verifier) {
                return false;
            }
            // The clock rule: cached "in the future" (the clock was ahead) counts from now.
            entry.cached_at = happened(entry.cached_at, now);
            entry.last_used = Some(now);
            entry.use_count = entry.use_count.saturating_add(1);
            true
        })?;
        let Some(entry) = handed else { return Ok(None) };
        let sealer = self.store.sealer();
        Ok(Some(AuthToken {
            access_token: sealer.open_string(&entry.access_token)?,
            refresh_token: entry
                .refresh_token
                .as_deref()
                .map(|r| sealer.open_string(r))
                .transpose()?,
            expires_at: entry.expires_at,
            cached: true,
            cached_at: Some(entry.cached_at),
        }))
    }

    /// Read-modify-write of the entry at `key` as one atomic step: `change` gets the entry as
    /// it is and says whether to write it as changed; the write is a compare-and-swap against
    /// the bytes read, and when another write landed in between, `change` runs again on the
    /// newer entry. So a verifier set by `passwd` meanwhile is kept, and an entry dropped
    /// meanwhile stays dropped. Returns the entry as written; `None` when there is none or
    /// `change` declined.
    fn update(
        &self,
        key: &[u8],
        mut change: impl FnMut(&mut CachedToken) -> bool,
    ) -> Result<Option<CachedToken>, StoreError> {
        let tree = &self.store.token_cache;
        loop {
            let Some(current) = tree.get(key)? else {
                return Ok(None);
            };
            let mut entry: CachedToken = store::decode(TREE, &current)?;
            if !change(&mut entry) {
                return Ok(None);
            }
            let new = store::encode(TREE, &entry)?;
            #[cfg(test)]
            tests::between_read_and_write();
            if tree
                .compare_and_swap(key, Some(current), Some(new))?
                .is_ok()
            {
                return Ok(Some(entry));
            }
        }
    }

    /// The unsealed refresh token of the entry, if it has one (regardless of age).
    pub fn refresh_token(&self, account: &Account) -> Result<Option<String>, StoreError> {
        let Some(entry) = self.entry(account)? else {
            return Ok(None);
        };
        entry
            .refresh_token
            .as_deref()
            .map(|r| self.store.sealer().open_string(r))
            .transpose()
            .map_err(StoreError::from)
    }

    /// Replaces the tokens of an existing entry with a refreshed set, keeping its verifier (the
    /// password did not change — or if it did meanwhile, the new verifier is the one kept); the
    /// grace period starts again. None when there is no entry (also when it was dropped while
    /// Keycloak was asked).
    pub fn replace_tokens(
        &self,
        account: &Account,
        tokens: &TokenSet,
    ) -> Result<Option<AuthToken>, StoreError> {
        let fresh = self.fresh_entry(account, tokens, String::new())?;
        let written = self.update(&account.key(), |entry| {
            let verifier = std::mem::take(&mut entry.verifier);
            *entry = CachedToken {
                verifier,
                ..fresh.clone()
            };
            true
        })?;
        Ok(written.map(|entry| live(tokens, entry.expires_at)))
    }

    /// Replaces the verifier of the entry of `account` (the password changed
    /// locally and the cached token should follow it). `passwd` does this inside its own
    /// transaction instead (see `TokenCache::with_verifier`).
    pub fn set_verifier(&self, account: &Account, phc: &str) -> Result<bool, StoreError> {
        let written = self.update(&account.key(), |entry| {
            entry.verifier = phc.to_string();
            true
        })?;
        Ok(written.is_some())
    }

    /// For `passwd`'s transaction: the stored entry `current` with its verifier replaced by
    /// `phc`. `None` when `current` does not decode or encode: the caller then drops the entry,
    /// which is always safe (a cache miss only means no offline token) — a damaged entry must
    /// neither stop a password change nor keep an old verifier. Pure: sled may run the
    /// transaction more than once.
    pub(crate) fn with_verifier(current: &[u8], phc: &str) -> Option<Vec<u8>> {
        let mut entry: CachedToken = store::decode(TREE, current).ok()?;
        entry.verifier = phc.to_string();
        store::encode(TREE, &entry).ok()
    }

    /// Drops the entry (Keycloak said the password is wrong, or the account is gone).
    pub fn remove(&self, account: &Account) -> Result<bool, StoreError> {
        Ok(self.store.token_cache.remove(account.key())?.is_some())
    }

    /// Whether the store's key opens the sealed tokens of the cache: `Some(true)` as soon as
    /// one opens, `Some(false)` when some were tried and none opened, `None` when the cache
    /// holds none. At most [`store::KEY_SAMPLES`] are tried; entries that do not decode are
    /// skipped. Used once, to settle the key of a database written before key check values
    /// existed (see [`Store::confirm_key`]).
    ///
    /// # Errors
    ///
    /// [`StoreError::Sled`] when the database fails.
    pub fn sealed_sample_opens(&self) -> Result<Option<bool>, StoreError> {
        let sealer = self.store.sealer();
        let mut tried = 0;
        for item in self.store.token_cache.iter() {
            let (_, bytes) = item?;
            let Ok(entry) = store::decode::<CachedToken>(TREE, &bytes) else {
                continue;
            };
            for sealed in std::iter::once(&entry.access_token).chain(&entry.refresh_token) {
                if sealer.open(sealed).is_ok() {
                    return Ok(Some(true));
                }
                tried += 1;
                if tried >= store::KEY_SAMPLES {
                    return Ok(Some(false));
                }
            }
        }
        Ok((tried > 0).then_some(false))
    }

    /// (entries inside the grace period, all entries).
    pub fn counts(&self) -> Result<(usize, usize), StoreError> {
        let mut valid = 0;
        let mut all = 0;
        for item in self.store.token_cache.iter() {
            let (_, bytes) = item?;
            let entry: CachedToken = store::decode(TREE, &bytes)?;
            all += 1;
            if self.in_grace(&entry) {
                valid += 1;
            }
        }
        Ok((valid, all))
    }

    /// When the oldest access token still inside the grace period was obtained from
    /// Keycloak (`status` shows its age: how stale the token handed out in an outage would
    /// be); `None` when there is none.
    pub fn oldest_cached_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mut oldest: Option<DateTime<Utc>> = None;
        for item in self.store.token_cache.iter() {
            let (_, bytes) = item?;
            let entry: CachedToken = store::decode(TREE, &bytes)?;
            if self.in_grace(&entry) && oldest.is_none_or(|o| entry.cached_at < o) {
                oldest = Some(entry.cached_at);
            }
        }
        Ok(oldest)
    }

    /// Removes entries obtained from Keycloak more than `max_age` ago; returns how many.
    pub fn cleanup(&self, max_age: std::time::Duration) -> Result<usize, StoreError> {
        let cutoff = Duration::from_std(max_age)
            .ok()
            .and_then(|age| self.clock.now().checked_sub_signed(age))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let now = self.clock.now();
        let mut removed = 0;
        for item in self.store.token_cache.iter() {
            let (key, bytes) = item?;
            let drop = match store::decode::<CachedToken>(TREE, &bytes) {
                Ok(entry) if entry.cached_at > now => {
                    // Cached while the clock was ahead: from now on it counts from now.
                    self.update(&key, |e| {
                        e.cached_at = happened(e.cached_at, now);
                        true
                    })?;
                    false
                }
                Ok(entry) => entry.cached_at < cutoff,
                Err(e) => {
                    log::warn!("token cache: removing unreadable entry: {e}");
                    true
                }
            };
            if drop && self.store.token_cache.remove(key)?.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Inside the grace period at the clock's now, under the clock rule ([`crate::clock`]):
    /// a token cached while the clock was ahead counts as cached now, so it is usable for
    /// one grace period from the correction (written so when it is handed out or cleaned up),
    /// never for the skew plus the grace.
    fn in_grace(&self, entry: &CachedToken) -> bool {
        let now = self.clock.now();
        happened(entry.cached_at, now)
            .checked_add_signed(self.grace)
            .is_none_or(|end| now < end)
    }
}

/// `now` plus Keycloak's `expires_in` seconds, whatever number Keycloak (or something posing
/// as it) sent: negative counts as 0, absurdly large as ten years.
/// A token Keycloak has just issued, as handed out.
fn live(tokens: &TokenSet, expires_at: DateTime<Utc>) -> AuthToken {
    AuthToken {
        access_token: tokens.access_token.clone(),
        refresh_token: tokens.refresh_token.clone(),
        expires_at,
        cached: false,
        cached_at: None,
    }
}

fn after(now: DateTime<Utc>, seconds: i64) -> DateTime<Utc> {
    const TEN_YEARS: i64 = 10 * 366 * 24 * 3600;
    now.checked_add_signed(Duration::seconds(seconds.clamp(0, TEN_YEARS)))
        .unwrap_or(now)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::account::acct;
    use crate::clock::{Clock, ManualClock};
    use crate::local_users::LocalUsers;
    use crate::lockout::LockoutPolicy;
    use chrono::TimeZone;
    use std::cell::RefCell;

    thread_local! {
        /// Run once by [`TokenCache::update`] between its read and its write: another
        /// request's write landing in that window.
        static RACE: RefCell<Option<Box<dyn FnOnce()>>> = RefCell::new(None);
    }

    pub(crate) fn between_read_and_write() {
        if let Some(race) = RACE.with(|r| r.borrow_mut().take()) {
            race();
        }
    }

    /// Makes `race` run in the window of the next read-modify-write on this thread.
    fn race_next_update(race: impl FnOnce() + 'static) {
        RACE.with(|r| *r.borrow_mut() = Some(Box::new(race)));
    }

    fn users(cache: &TokenCache) -> LocalUsers {
        let policy = LockoutPolicy {
            max_failures: 5,
            window: std::time::Duration::from_secs(60),
            lockout: std::time::Duration::from_secs(60),
        };
        LocalUsers::new(cache.store.clone(), cache.clock.clone(), policy)
    }

    fn setup() -> (TokenCache, ManualClock) {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap());
        let store = Arc::new(Store::temporary().unwrap());
        let cache = TokenCache::new(
            store,
            Arc::new(clock.clone()),
            std::time::Duration::from_secs(24 * 3600),
        );
        (cache, clock)
    }

    fn tokens(access: &str) -> TokenSet {
        TokenSet {
            access_token: access.into(),
            expires_in: 300,
            refresh_token: Some(format!("{access}-refresh")),
            refresh_expires_in: 1800,
            token_type: "Bearer".into(),
        }
    }

    #[test]
    fn offline_login_needs_the_same_password_inside_the_grace_period() {
        let (cache, clock) = setup();
        cache
            .put(
                &acct("Alice", "web"),
                &tokens("tok-a"),
                Verifier::Password("pw-1"),
            )
            .unwrap();
        let got = cache
            .authenticate(&acct("alice", "web"), "pw-1", None)
            .unwrap()
            .unwrap();
        assert!(got.cached);
        assert_eq!(got.access_token, "tok-a");
        assert!(cache
            .authenticate(&acct("alice", "web"), "pw-2", None)
            .unwrap()
            .is_none());
        assert!(cache
            .authenticate(&acct("bob", "web"), "pw-1", None)
            .unwrap()
            .is_none());
        assert!(cache
            .authenticate(&acct("alice", "api"), "pw-1", None)
            .unwrap()
            .is_none());
        clock.advance(Duration::hours(24));
        assert!(cache
            .authenticate(&acct("alice", "web"), "pw-1", None)
            .unwrap()
            .is_none());
    }

    /// Issue 15 point 2: cached while the clock was 30 days fast, then corrected: usable
    /// for one grace period from the correction, not the skew plus the grace.
    #[test]
    fn a_token_cached_under_a_fast_clock_counts_from_the_correction() {
        let (cache, clock) = setup();
        let right = clock.now();
        clock.advance(Duration::days(30));
        for user in ["alice", "bob"] {
            let verifier = Verifier::Password("pw-1");
            cache
                .put(&acct(user, "web"), &tokens("tok"), verifier)
                .unwrap();
        }
        clock.set(right);
        let got = cache
            .get(&acct("alice", "web"))
            .unwrap()
            .expect("usable now");
        assert_eq!(got.cached_at, Some(right), "counted from the correction");
        assert_eq!(
            cache.cleanup(std::time::Duration::from_secs(3600)).unwrap(),
            0
        );
        let bob = cache.entry(&acct("bob", "web")).unwrap().unwrap();
        assert_eq!(bob.cached_at, right, "cleanup settles what it keeps");
        clock.advance(Duration::hours(24));
        assert!(cache.get(&acct("alice", "web")).unwrap().is_none());
        assert!(cache
            .authenticate(&acct("bob", "web"), "pw-1", None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn handing_out_counts_uses_and_secrets_are_sealed() {
        let (cache, clock) = setup();
        cache
            .put(
                &acct("alice", "web"),
                &tokens("tok-secret-xyz"),
                Verifier::Password("pw-secret-verifier"),
            )
            .unwrap();
        clock.advance(Duration::minutes(5));
        cache.get(&acct("alice", "web")).unwrap().unwrap();
        cache.get(&acct("ALICE", "web")).unwrap().unwrap();
        let entry = cache.entry(&acct("alice", "web")).unwrap().unwrap();
        assert_eq!(entry.use_count, 2);
        assert_eq!(entry.last_used, Some(clock.now()));
        for item in cache.store.token_cache.iter() {
            let (_, v) = item.unwrap();
            assert!(!v.windows(14).any(|w| w == b"tok-secret-xyz"));
            // Long enough that sealed (random-looking) bytes never contain it by chance.
            assert!(!v.windows(18).any(|w| w == b"pw-secret-verifier"));
        }
    }

    #[test]
    fn a_known_hash_skips_the_second_verify_and_verifier_follows_password() {
        let (cache, _) = setup();
        let users = users(&cache);
        users.add(&acct("u", "p"), "old").unwrap();
        let phc = users.get(&acct("u", "p")).unwrap().unwrap().hash;
        cache
            .put(&acct("u", "p"), &tokens("t"), Verifier::Hash(&phc))
            .unwrap();
        assert!(cache
            .authenticate(&acct("u", "p"), "old", Some(&phc))
            .unwrap()
            .is_some());
        let new_phc = password::hash("new").unwrap();
        assert!(cache.set_verifier(&acct("u", "p"), &new_phc).unwrap());
        assert!(cache
            .authenticate(&acct("u", "p"), "old", None)
            .unwrap()
            .is_none());
        assert!(cache
            .authenticate(&acct("u", "p"), "new", None)
            .unwrap()
            .is_some());
    }

    #[test]
    fn absurd_lifetimes_and_ages_do_not_panic() {
        let (cache, _) = setup();
        let mut t = tokens("x");
        t.expires_in = i64::MAX;
        t.refresh_expires_in = i64::MIN;
        cache
            .put(&acct("u", "p"), &t, Verifier::Password("pw"))
            .unwrap();
        assert!(cache.get(&acct("u", "p")).unwrap().is_some());
        assert_eq!(cache.cleanup(std::time::Duration::MAX).unwrap(), 0);
        let forever = TokenCache::new(
            cache.store.clone(),
            cache.clock.clone(),
            std::time::Duration::MAX,
        );
        assert!(forever.get(&acct("u", "p")).unwrap().is_some());
    }

    #[test]
    fn counts_and_cleanup_by_age() {
        let (cache, clock) = setup();
        cache
            .put(&acct("a", "p"), &tokens("1"), Verifier::Password("x"))
            .unwrap();
        clock.advance(Duration::hours(30));
        cache
            .put(&acct("b", "p"), &tokens("2"), Verifier::Password("x"))
            .unwrap();
        assert_eq!(cache.counts().unwrap(), (1, 2));
        // "a" is out of the grace period: the oldest usable token is "b", just obtained.
        assert_eq!(cache.oldest_cached_at().unwrap(), Some(clock.now()));
        assert_eq!(
            cache
                .cleanup(std::time::Duration::from_secs(48 * 3600))
                .unwrap(),
            0
        );
        assert_eq!(
            cache.cleanup(std::time::Duration::from_secs(3600)).unwrap(),
            1
        );
        assert!(cache.entry(&acct("a", "p")).unwrap().is_none());
        assert!(cache.remove(&acct("b", "p")).unwrap());
        assert_eq!(cache.counts().unwrap(), (0, 0));
    }

    /// A login that verified the old password locally, then got its token from Keycloak after
    /// a `passwd` changed the local password: its write would put the old verifier back.
    #[test]
    fn a_login_writing_after_a_password_change_does_not_bring_the_old_verifier_back() {
        let (cache, _) = setup();
        let users = users(&cache);
        users.add(&acct("u", "p"), "old").unwrap();
        let old_phc = users.get(&acct("u", "p")).unwrap().unwrap().hash;
        users.set_password(&acct("u", "p"), "new").unwrap();
        let token = cache
            .put(&acct("u", "p"), &tokens("t"), Verifier::Hash(&old_phc))
            .unwrap();
        assert_eq!(token.access_token, "t", "the fresh token is still returned");
        assert!(
            cache.entry(&acct("u", "p")).unwrap().is_none(),
            "but not cached"
        );
        assert!(cache
            .authenticate(&acct("u", "p"), "old", None)
            .unwrap()
            .is_none());
        // The hash the account holds is cached as before; an unknown account's is not.
        let new_phc = users.get(&acct("u", "p")).unwrap().unwrap().hash;
        cache
            .put(&acct("u", "p"), &tokens("t2"), Verifier::Hash(&new_phc))
            .unwrap();
        assert!(cache
            .authenticate(&acct("u", "p"), "new", None)
            .unwrap()
            .is_some());
        cache
            .put(&acct("ghost", "p"), &tokens("t3"), Verifier::Hash(&new_phc))
            .unwrap();
        assert!(cache.entry(&acct("ghost", "p")).unwrap().is_none());
    }

    /// A refresh that read the entry just before a password change set its new verifier.
    #[test]
    fn a_refresh_racing_a_password_change_keeps_the_new_verifier() {
        let (cache, _) = setup();
        cache
            .put(&acct("u", "p"), &tokens("t"), Verifier::Password("old"))
            .unwrap();
        let new_phc = password::hash("new").unwrap();
        let racer = cache.clone();
        race_next_update(move || {
            assert!(racer.set_verifier(&acct("u", "p"), &new_phc).unwrap());
        });
        let refreshed = cache
            .replace_tokens(&acct("u", "p"), &tokens("t2"))
            .unwrap()
            .unwrap();
        assert_eq!(refreshed.access_token, "t2");
        assert!(cache
            .authenticate(&acct("u", "p"), "old", None)
            .unwrap()
            .is_none());
        let got = cache
            .authenticate(&acct("u", "p"), "new", None)
            .unwrap()
            .unwrap();
        assert_eq!(got.access_token, "t2", "the refreshed tokens are kept too");
    }

    /// A refresh whose entry was dropped meanwhile (Keycloak refused the password, the account
    /// was disabled) does not bring it back.
    #[test]
    fn a_refresh_racing_a_drop_does_not_recreate_the_entry() {
        let (cache, _) = setup();
        cache
            .put(&acct("u", "p"), &tokens("t"), Verifier::Password("old"))
            .unwrap();
        let racer = cache.clone();
        race_next_update(move || {
            assert!(racer.remove(&acct("u", "p")).unwrap());
        });
        assert!(cache
            .replace_tokens(&acct("u", "p"), &tokens("t2"))
            .unwrap()
            .is_none());
        assert!(cache.entry(&acct("u", "p")).unwrap().is_none());
    }

    /// Two verifier changes racing: the later write wins whole, neither is lost half-way; and
    /// an offline login checked against the old verifier is not handed the token once a
    /// password change replaced it.
    #[test]
    fn verifier_changes_and_hand_outs_are_atomic() {
        let (cache, _) = setup();
        cache
            .put(&acct("u", "p"), &tokens("t"), Verifier::Password("old"))
            .unwrap();
        let newer = password::hash("newer").unwrap();
        let racer = cache.clone();
        race_next_update(move || {
            assert!(racer.set_verifier(&acct("u", "p"), &newer).unwrap());
        });
        // The password check passes on the entry as read; the change lands before the token
        // is handed out.
        assert!(cache
            .authenticate(&acct("u", "p"), "old", None)
            .unwrap()
            .is_none());
        assert_eq!(cache.entry(&acct("u", "p")).unwrap().unwrap().use_count, 0);
        assert!(cache
            .authenticate(&acct("u", "p"), "newer", None)
            .unwrap()
            .is_some());
    }

    #[test]
    fn with_verifier_rewrites_a_record_and_gives_up_on_a_damaged_one() {
        let (cache, _) = setup();
        cache
            .put(&acct("u", "p"), &tokens("t"), Verifier::Password("old"))
            .unwrap();
        let key = crate::account::user_key("u", "p");
        let current = cache.store.token_cache.get(&key).unwrap().unwrap();
        let phc = password::hash("new").unwrap();
        let new = TokenCache::with_verifier(&current, &phc).unwrap();
        cache.store.token_cache.insert(&key, new).unwrap();
        assert!(cache
            .authenticate(&acct("u", "p"), "new", None)
            .unwrap()
            .is_some());
        assert!(TokenCache::with_verifier(&[store::codec::RECORD_VERSION, 0xff], &phc).is_none());
    }
}
