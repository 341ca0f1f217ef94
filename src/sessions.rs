//! Login sessions: created by every successful `login`, whatever Keycloak did.
//!
//! A session is the application's proof that local authentication succeeded; it records which
//! layer vouched for the user (`auth_mode`) so that the application can, for instance, ask for
//! a fresh Keycloak login once Keycloak is back. Expired sessions read as absent and are removed
//! by cleanup.

use crate::account::Account;
use crate::clock::{deadline, happened, SharedClock};
use crate::store::{self, Store, StoreError};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

const TREE: &str = "sessions";

/// Which layer authenticated the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Local password and a live Keycloak token.
    Keycloak,
    /// Local password and a cached Keycloak token (Keycloak away).
    Cached,
    /// Local password only.
    Local,
}

impl AuthMode {
    /// Every mode, in display order.
    pub const ALL: [AuthMode; 3] = [AuthMode::Keycloak, AuthMode::Cached, AuthMode::Local];

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Keycloak => "keycloak",
            AuthMode::Cached => "cached",
            AuthMode::Local => "local",
        }
    }
}

/// One session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Session id (handed to the application).
    pub id: Uuid,
    /// The user.
    pub username: String,
    /// The package.
    pub package: String,
    /// Which layer vouched for the user.
    pub auth_mode: AuthMode,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Expires at.
    pub expires_at: DateTime<Utc>,
}

/// The sessions tree.
#[derive(Clone)]
pub struct Sessions {
    store: Arc<Store>,
    clock: SharedClock,
    ttl: Duration,
}

impl Sessions {
    /// Sessions that live for `ttl`.
    pub fn new(store: Arc<Store>, clock: SharedClock, ttl: std::time::Duration) -> Sessions {
        Sessions {
            store,
            clock,
            ttl: Duration::from_std(ttl).unwrap_or(Duration::MAX),
        }
    }

    /// Creates and stores a session.
    pub fn create(&self, account: &Account, auth_mode: AuthMode) -> Result<Session, StoreError> {
        let now = self.clock.now();
        let session = Session {
            id: Uuid::new_v4(),
            username: account.user().to_string(),
            package: account.package().to_string(),
            auth_mode,
            created_at: now,
            expires_at: now + self.ttl,
        };
        store::put(&self.store.sessions, TREE, session.id.as_bytes(), &session)?;
        self.store.flush()?;
        Ok(session)
    }

    /// The session, unless unknown or expired. A session made while the clock was ahead is
    /// brought back to the clock rule ([`crate::clock`]) and written so: it ends at most one
    /// TTL from the correction.
    pub fn get(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
        let now = self.clock.now();
        let Some(s) = store::get::<Session>(&self.store.sessions, TREE, id.as_bytes())? else {
            return Ok(None);
        };
        let (s, settled) = self.settled(s, now);
        if settled {
            log::warn!("session {id} was made while the clock was ahead: it now ends at most one TTL from now");
            store::put(&self.store.sessions, TREE, id.as_bytes(), &s)?;
        }
        Ok((s.expires_at > now).then_some(s))
    }

    /// `s` under the clock rule at `now`, and whether that changed it.
    fn settled(&self, mut s: Session, now: DateTime<Utc>) -> (Session, bool) {
        let before = (s.created_at, s.expires_at);
        s.created_at = happened(s.created_at, now);
        s.expires_at = deadline(s.expires_at, now, self.ttl);
        let changed = (s.created_at, s.expires_at) != before;
        (s, changed)
    }

    /// Whether `s` is still live at `now`, under the clock rule.
    fn is_live(&self, s: Session, now: DateTime<Utc>) -> bool {
        self.settled(s, now).0.expires_at > now
    }

    /// Ends a session; false when there was none.
    pub fn remove(&self, id: Uuid) -> Result<bool, StoreError> {
        let existed = self.store.sessions.remove(id.as_bytes())?.is_some();
        self.store.flush()?;
        Ok(existed)
    }

    /// Ends every session of `account`; returns how many.
    pub fn remove_user(&self, account: &Account) -> Result<usize, StoreError> {
        let key = account.key();
        let mut n = 0;
        for item in self.store.sessions.iter() {
            let (id, bytes) = item?;
            let s: Session = store::decode(TREE, &bytes)?;
            if crate::account::user_key(&s.username, &s.package) == key
                && self.store.sessions.remove(id)?.is_some()
            {
                n += 1;
            }
        }
        self.store.flush()?;
        Ok(n)
    }

    /// The accounts with a session not yet expired, each once, in key order (`start` refreshes
    /// their cached tokens ahead of expiry). One pass that keeps accounts, not sessions: a
    /// user with a hundred thousand sessions costs one entry, not a hundred thousand.
    pub fn live_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let now = self.clock.now();
        let mut accounts = std::collections::BTreeMap::new();
        for item in self.store.sessions.iter() {
            let (_, bytes) = item?;
            let s: Session = store::decode(TREE, &bytes)?;
            let key = crate::account::user_key(&s.username, &s.package);
            if accounts.contains_key(&key) || !self.is_live(s.clone(), now) {
                continue;
            }
            if let Ok(account) = Account::new(&s.username, &s.package) {
                accounts.insert(key, account);
            }
        }
        Ok(accounts.into_values().collect())
    }

    /// Sessions not yet expired.
    pub fn active_count(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let mut n = 0;
        for item in self.store.sessions.iter() {
            let (_, bytes) = item?;
            if self.is_live(store::decode::<Session>(TREE, &bytes)?, now) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Removes expired sessions; returns how many.
    pub fn cleanup(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let mut n = 0;
        for item in self.store.sessions.iter() {
            let (key, bytes) = item?;
            let session = store::decode::<Session>(TREE, &bytes).ok();
            let expired = session.clone().is_none_or(|s| !self.is_live(s, now));
            if expired && self.store.sessions.remove(&key)?.is_some() {
                n += 1;
            } else if let Some((s, true)) = session.map(|s| self.settled(s, now)) {
                // Made under a fast clock: written back, so that it ends one TTL from now.
                store::put(&self.store.sessions, TREE, &key, &s)?;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::acct;
    use crate::clock::ManualClock;
    use chrono::TimeZone;

    /// Issue 15 point 2: a session made while the clock was 30 days fast ends one TTL after
    /// the correction, not 30 days and a TTL later; cleanup settles those it does not remove.
    #[test]
    fn a_session_made_under_a_fast_clock_ends_one_ttl_after_the_correction() {
        let right = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let clock = ManualClock::new(right + Duration::days(30));
        let s = Sessions::new(
            Arc::new(Store::temporary().unwrap()),
            Arc::new(clock.clone()),
            std::time::Duration::from_secs(60),
        );
        let a = s.create(&acct("alice", "web"), AuthMode::Local).unwrap();
        let b = s.create(&acct("bob", "web"), AuthMode::Local).unwrap();
        clock.set(right);
        let got = s
            .get(a.id)
            .unwrap()
            .expect("still live just after the correction");
        assert_eq!(
            (got.created_at, got.expires_at),
            (right, right + Duration::seconds(60))
        );
        assert_eq!(s.cleanup().unwrap(), 0, "bob's is settled, not removed");
        clock.advance(Duration::seconds(61));
        assert!(s.get(a.id).unwrap().is_none());
        assert_eq!(s.active_count().unwrap(), 0);
        assert_eq!(s.cleanup().unwrap(), 2);
        assert!(s.get(b.id).unwrap().is_none());
    }

    /// Issue 15 point 1: the accounts behind many sessions are listed once each, without
    /// holding the sessions (the service looks every 5 s; 100 000 sessions of one user used to
    /// be read into memory each time).
    #[test]
    fn live_accounts_lists_each_account_once() {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        let s = Sessions::new(
            Arc::new(Store::temporary().unwrap()),
            Arc::new(clock.clone()),
            std::time::Duration::from_secs(60),
        );
        for _ in 0..50 {
            s.create(&acct("alice", "web"), AuthMode::Local).unwrap();
        }
        s.create(&acct("ALICE", "web"), AuthMode::Local).unwrap();
        s.create(&acct("bob", "web"), AuthMode::Local).unwrap();
        let users: Vec<String> = s
            .live_accounts()
            .unwrap()
            .iter()
            .map(|a| a.user().to_lowercase())
            .collect();
        assert_eq!(users, ["alice", "bob"]);
    }

    #[test]
    fn sessions_expire_and_can_be_ended() {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        let s = Sessions::new(
            Arc::new(Store::temporary().unwrap()),
            Arc::new(clock.clone()),
            std::time::Duration::from_secs(60),
        );
        let a = s.create(&acct("alice", "web"), AuthMode::Cached).unwrap();
        let b = s.create(&acct("bob", "web"), AuthMode::Local).unwrap();
        assert_eq!(s.get(a.id).unwrap().unwrap().auth_mode, AuthMode::Cached);
        assert_eq!(s.active_count().unwrap(), 2);
        assert_eq!(s.live_accounts().unwrap().len(), 2);
        assert!(s.remove(b.id).unwrap());
        assert!(!s.remove(b.id).unwrap());
        let c = s.create(&acct("Carol", "web"), AuthMode::Local).unwrap();
        s.create(&acct("carol", "api"), AuthMode::Local).unwrap();
        assert_eq!(s.remove_user(&acct("CAROL", "web")).unwrap(), 1);
        assert!(s.get(c.id).unwrap().is_none());
        assert_eq!(s.active_count().unwrap(), 2);
        clock.advance(Duration::seconds(61));
        assert!(s.get(a.id).unwrap().is_none());
        assert_eq!(s.active_count().unwrap(), 0);
        assert!(s.live_accounts().unwrap().is_empty());
        assert_eq!(s.cleanup().unwrap(), 2);
    }
}
