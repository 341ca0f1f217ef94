//! The token cache: the last good Keycloak tokens per (user, package), usable for a grace period.
//!
//! Stored on every successful Keycloak login together with an argon2id verifier of the password
//! used, so that while Keycloak is away the same password (and only that one) gets the cached
//! token back. Tokens are sealed at rest. A Keycloak "invalid credentials" answer drops the entry:
//! the password changed centrally and the old one must stop working offline too.

use crate::clock::SharedClock;
use crate::keycloak::TokenSet;
use crate::password;
use crate::store::{self, user_key, Store, StoreError};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
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
    /// password against it): no second argon2 run on the login path.
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

    /// Stores a fresh Keycloak answer and returns it as an [`AuthToken`].
    pub fn put(
        &self,
        username: &str,
        package: &str,
        tokens: &TokenSet,
        verifier: Verifier<'_>,
    ) -> Result<AuthToken, StoreError> {
        let now = self.clock.now();
        let verifier = match verifier {
            Verifier::Password(p) => password::hash(p)?,
            Verifier::Hash(h) => h.to_string(),
        };
        let sealer = self.store.sealer();
        let entry = CachedToken {
            username: username.to_string(),
            package: package.to_string(),
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
        };
        store::put(
            &self.store.token_cache,
            TREE,
            &user_key(username, package),
            &entry,
        )?;
        Ok(AuthToken {
            access_token: tokens.access_token.clone(),
            refresh_token: tokens.refresh_token.clone(),
            expires_at: entry.expires_at,
            cached: false,
            cached_at: None,
        })
    }

    /// The entry, if any, regardless of age.
    pub fn entry(&self, username: &str, package: &str) -> Result<Option<CachedToken>, StoreError> {
        store::get(&self.store.token_cache, TREE, &user_key(username, package))
    }

    /// The cached token inside the grace period whose verifier matches `password`; marks it used.
    /// `already_verified` is a PHC hash the caller has just verified this password against: if
    /// it is the entry's verifier, the (costly) check is not repeated.
    pub fn authenticate(
        &self,
        username: &str,
        package: &str,
        password: &str,
        already_verified: Option<&str>,
    ) -> Result<Option<AuthToken>, StoreError> {
        let Some(entry) = self.entry(username, package)? else {
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
        self.hand_out(username, package)
    }

    /// The cached token inside the grace period, without a password check; marks it used.
    pub fn get(&self, username: &str, package: &str) -> Result<Option<AuthToken>, StoreError> {
        self.hand_out(username, package)
    }

    fn hand_out(&self, username: &str, package: &str) -> Result<Option<AuthToken>, StoreError> {
        let key = user_key(username, package);
        let now = self.clock.now();
        let mut found = None;
        // Read-modify-write on one key; the tree's update is atomic per key.
        let mut failure = None;
        self.store.token_cache.update_and_fetch(&key, |old| {
            let bytes = old?;
            let mut entry: CachedToken = match store::decode(TREE, bytes) {
                Ok(e) => e,
                Err(e) => {
                    failure = Some(e);
                    return Some(bytes.to_vec());
                }
            };
            if !self.in_grace(&entry) {
                return Some(bytes.to_vec());
            }
            entry.last_used = Some(now);
            entry.use_count = entry.use_count.saturating_add(1);
            found = Some(entry.clone());
            store::encode(TREE, &entry)
                .ok()
                .or_else(|| Some(bytes.to_vec()))
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        let Some(entry) = found else { return Ok(None) };
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

    /// The unsealed refresh token of the entry, if it has one (regardless of age).
    pub fn refresh_token(
        &self,
        username: &str,
        package: &str,
    ) -> Result<Option<String>, StoreError> {
        let Some(entry) = self.entry(username, package)? else {
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
    /// password did not change); the grace period starts again. None when there is no entry.
    pub fn replace_tokens(
        &self,
        username: &str,
        package: &str,
        tokens: &TokenSet,
    ) -> Result<Option<AuthToken>, StoreError> {
        let Some(entry) = self.entry(username, package)? else {
            return Ok(None);
        };
        Ok(Some(self.put(
            username,
            package,
            tokens,
            Verifier::Hash(&entry.verifier),
        )?))
    }

    /// Replaces the verifier of every entry of `username` in `package` (the password changed
    /// locally and the cached token should follow it).
    pub fn set_verifier(
        &self,
        username: &str,
        package: &str,
        phc: &str,
    ) -> Result<bool, StoreError> {
        let key = user_key(username, package);
        let Some(mut entry) = self.entry(username, package)? else {
            return Ok(false);
        };
        entry.verifier = phc.to_string();
        store::put(&self.store.token_cache, TREE, &key, &entry)?;
        Ok(true)
    }

    /// Drops the entry (Keycloak said the password is wrong, or the account is gone).
    pub fn remove(&self, username: &str, package: &str) -> Result<bool, StoreError> {
        Ok(self
            .store
            .token_cache
            .remove(user_key(username, package))?
            .is_some())
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

    /// Removes entries obtained from Keycloak more than `max_age` ago; returns how many.
    pub fn cleanup(&self, max_age: std::time::Duration) -> Result<usize, StoreError> {
        let cutoff = Duration::from_std(max_age)
            .ok()
            .and_then(|age| self.clock.now().checked_sub_signed(age))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut removed = 0;
        for item in self.store.token_cache.iter() {
            let (key, bytes) = item?;
            let drop = match store::decode::<CachedToken>(TREE, &bytes) {
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

    fn in_grace(&self, entry: &CachedToken) -> bool {
        entry
            .cached_at
            .checked_add_signed(self.grace)
            .is_none_or(|end| self.clock.now() < end)
    }
}

/// `now` plus Keycloak's `expires_in` seconds, whatever number Keycloak (or something posing
/// as it) sent: negative counts as 0, absurdly large as ten years.
fn after(now: DateTime<Utc>, seconds: i64) -> DateTime<Utc> {
    const TEN_YEARS: i64 = 10 * 366 * 24 * 3600;
    now.checked_add_signed(Duration::seconds(seconds.clamp(0, TEN_YEARS)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use chrono::TimeZone;

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
            .put("Alice", "web", &tokens("tok-a"), Verifier::Password("pw-1"))
            .unwrap();
        let got = cache
            .authenticate("alice", "web", "pw-1", None)
            .unwrap()
            .unwrap();
        assert!(got.cached);
        assert_eq!(got.access_token, "tok-a");
        assert!(cache
            .authenticate("alice", "web", "pw-2", None)
            .unwrap()
            .is_none());
        assert!(cache
            .authenticate("bob", "web", "pw-1", None)
            .unwrap()
            .is_none());
        assert!(cache
            .authenticate("alice", "api", "pw-1", None)
            .unwrap()
            .is_none());
        clock.advance(Duration::hours(24));
        assert!(cache
            .authenticate("alice", "web", "pw-1", None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn handing_out_counts_uses_and_secrets_are_sealed() {
        let (cache, clock) = setup();
        cache
            .put(
                "alice",
                "web",
                &tokens("tok-secret-xyz"),
                Verifier::Password("pw"),
            )
            .unwrap();
        clock.advance(Duration::minutes(5));
        cache.get("alice", "web").unwrap().unwrap();
        cache.get("ALICE", "web").unwrap().unwrap();
        let entry = cache.entry("alice", "web").unwrap().unwrap();
        assert_eq!(entry.use_count, 2);
        assert_eq!(entry.last_used, Some(clock.now()));
        for item in cache.store.token_cache.iter() {
            let (_, v) = item.unwrap();
            assert!(!v.windows(14).any(|w| w == b"tok-secret-xyz"));
            assert!(!v.windows(2).any(|w| w == b"pw"));
        }
    }

    #[test]
    fn a_known_hash_skips_the_second_verify_and_verifier_follows_password() {
        let (cache, _) = setup();
        let phc = password::hash("old").unwrap();
        cache
            .put("u", "p", &tokens("t"), Verifier::Hash(&phc))
            .unwrap();
        assert!(cache
            .authenticate("u", "p", "old", Some(&phc))
            .unwrap()
            .is_some());
        let new_phc = password::hash("new").unwrap();
        assert!(cache.set_verifier("u", "p", &new_phc).unwrap());
        assert!(cache.authenticate("u", "p", "old", None).unwrap().is_none());
        assert!(cache.authenticate("u", "p", "new", None).unwrap().is_some());
    }

    #[test]
    fn absurd_lifetimes_and_ages_do_not_panic() {
        let (cache, _) = setup();
        let mut t = tokens("x");
        t.expires_in = i64::MAX;
        t.refresh_expires_in = i64::MIN;
        cache.put("u", "p", &t, Verifier::Password("pw")).unwrap();
        assert!(cache.get("u", "p").unwrap().is_some());
        assert_eq!(cache.cleanup(std::time::Duration::MAX).unwrap(), 0);
        let forever = TokenCache::new(
            cache.store.clone(),
            cache.clock.clone(),
            std::time::Duration::MAX,
        );
        assert!(forever.get("u", "p").unwrap().is_some());
    }

    #[test]
    fn counts_and_cleanup_by_age() {
        let (cache, clock) = setup();
        cache
            .put("a", "p", &tokens("1"), Verifier::Password("x"))
            .unwrap();
        clock.advance(Duration::hours(30));
        cache
            .put("b", "p", &tokens("2"), Verifier::Password("x"))
            .unwrap();
        assert_eq!(cache.counts().unwrap(), (1, 2));
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
        assert!(cache.entry("a", "p").unwrap().is_none());
        assert!(cache.remove("b", "p").unwrap());
        assert_eq!(cache.counts().unwrap(), (0, 0));
    }
}
