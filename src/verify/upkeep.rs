//! `start`'s share of keeping the realm keys: fetch them at once, then every
//! `keycloak.verify.keys_refresh_seconds` while Keycloak may be tried; after a failed round,
//! again within [`RETRY`], so that keys missing at start are there soon after Keycloak is.

use super::keys::{self, Keyring};
use crate::client::ResilientClient;
use std::time::{Duration, Instant};

/// How soon a round that left a realm without fresh keys is tried again.
pub const RETRY: Duration = Duration::from_secs(30);

/// When the next round is due.
#[derive(Debug)]
pub struct KeysUpkeep {
    next: Instant,
}

impl Default for KeysUpkeep {
    fn default() -> Self {
        KeysUpkeep {
            next: Instant::now(),
        }
    }
}

impl KeysUpkeep {
    /// Runs a round if one is due; returns a line for the service's output when keys were
    /// fetched.
    pub fn tick(&mut self, client: &ResilientClient) -> Option<String> {
        if Instant::now() < self.next {
            return None;
        }
        let every = client.config().verify.keys_refresh;
        if !client.keycloak().should_try_keycloak() {
            self.next = Instant::now() + RETRY.min(every);
            return None;
        }
        let ring = Keyring {
            store: client.store(),
            keycloak: client.keycloak(),
            clock: client.clock(),
        };
        let realms = keys::realms(client.config());
        let (ok, failed) = ring.refresh_all(&realms);
        for e in &failed {
            log::warn!("{e}");
        }
        self.next = Instant::now()
            + if failed.is_empty() {
                every
            } else {
                RETRY.min(every)
            };
        (ok > 0).then(|| format!("keys: fetched the signing keys of {ok} realm(s)"))
    }
}
