//! Login sessions: created by every successful `login`, whatever Keycloak did.
//!
//! A session is the application's proof that local authentication succeeded; it records which
//! layer vouched for the user (`auth_mode`) so that the application can, for instance, ask for
//! a fresh Keycloak login once Keycloak is back. Expired sessions read as absent and are removed
//! by cleanup.

use crate::account::Account;
use crate::clock::SharedClock;
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

    /// The session, unless unknown or expired.
    pub fn get(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
        let s: Option<Session> = store::get(&self.store.sessions, TREE, id.as_bytes())?;
        Ok(s.filter(|s| s.expires_at > self.clock.now()))
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

    /// The sessions not yet expired (`start` refreshes their users' cached tokens ahead of
    /// expiry).
    pub fn live(&self) -> Result<Vec<Session>, StoreError> {
        let now = self.clock.now();
        let mut live = Vec::new();
        for item in self.store.sessions.iter() {
            let (_, bytes) = item?;
            let s: Session = store::decode(TREE, &bytes)?;
            if s.expires_at > now {
                live.push(s);
            }
        }
        Ok(live)
    }

    /// Sessions not yet expired.
    pub fn active_count(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let mut n = 0;
        for item in self.store.sessions.iter() {
            let (_, bytes) = item?;
            if store::decode::<Session>(TREE, &bytes)?.expires_at > now {
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
            let expired =
                store::decode::<Session>(TREE, &bytes).map_or(true, |s| s.expires_at <= now);
            if expired && self.store.sessions.remove(key)?.is_some() {
                n += 1;
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
        assert_eq!(s.live().unwrap().len(), 2);
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
        assert!(s.live().unwrap().is_empty());
        assert_eq!(s.cleanup().unwrap(), 2);
    }
}
