//! [`ResilientClient`]: the library's front door, with the original design's API.
//!
//! It owns the pieces — store, the breaker-guarded Keycloak caller, token cache, sync queue —
//! and wires them: every Keycloak call goes through [`GuardedKeycloak::call`] (see
//! [`crate::keycloak::guard`]); a sync cycle gets the pieces it needs ([`Cycle`]).
//!
//! ```no_run
//! use keycloak_resilient::{Config, ResilientClient};
//! # fn main() -> anyhow::Result<()> {
//! let client = ResilientClient::new(Config::load("config.yaml".as_ref())?)?;
//! match client.authenticate("alice", "her password", "webapp") {
//!     Ok(token) if token.cached => println!("Keycloak is away; cached token used"),
//!     Ok(_) => println!("fresh token from Keycloak"),
//!     Err(e) => println!("refused: {e}"),
//! }
//! client.queue_sync("alice", "webapp", "password_change",
//!                   &serde_json::json!({"new_password": "new password"}), 1)?;
//! let report = client.process_sync_queue(100)?;
//! println!("{} processed; status: {:?}", report.processed, client.get_status()?.mode);
//! # Ok(()) }
//! ```

use crate::account::{Account, NameError};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::keycloak::breaker::CircuitState;
use crate::keycloak::guard::{Admission, CallError, CallKind, GuardedKeycloak, Ran};
use crate::keycloak::{KcError, KeycloakClient, Rejection, TokenSet};
use crate::replay::{self, Cycle, Retries, SyncReport};
use crate::store::meta::MetaKey;
use crate::store::{Store, StoreError};
use crate::sync_queue::{QueueError, SyncData, SyncQueue};
use crate::token_cache::{AuthToken, TokenCache, Verifier};
use serde::Serialize;
use std::sync::Arc;
use uuid::Uuid;

/// Why `authenticate` gave no token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Keycloak said no to this user's credentials or account.
    #[error("refused by Keycloak: {0}")]
    Rejected(Rejection),
    /// Keycloak is unavailable and no cached login matches (same answer for an unknown user
    /// and a wrong password).
    #[error(
        "Keycloak is unavailable ({reason}) and no cached login matches this user and password"
    )]
    NoCachedLogin {
        /// Why Keycloak was not used.
        reason: String,
    },
    /// Keycloak is unavailable, no cached login matches, and offline mode is off.
    #[error(
        "Keycloak is unavailable ({reason}), no cached login matches, and offline mode is disabled"
    )]
    OfflineDisabled {
        /// Why Keycloak was not used.
        reason: String,
    },
    /// Keycloak answered about our configuration.
    #[error("Keycloak misconfigured: {0}")]
    Misconfigured(String),
    /// `cached-token`: no cached token for this user and package inside the grace period.
    #[error("no cached token for {account} inside the grace period")]
    NoCachedToken {
        /// The account asked for.
        account: Account,
    },
    /// `refresh`: there is no cached refresh token for this user.
    #[error("no cached refresh token for this user and package")]
    NoRefreshToken,
    /// `refresh`: Keycloak is unavailable (the cached token is still there).
    #[error("Keycloak is unavailable ({reason})")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// A user or package name the name rule refuses ([`crate::account::check_name`]).
    #[error(transparent)]
    BadName(#[from] NameError),
    /// The local database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a client could not be built or a call failed locally.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue refused or failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Keycloak(#[from] KcError),
}

/// The resilience settings shown in status.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatusConfig {
    /// Consecutive outages that open the circuit.
    pub failure_threshold: u32,
    /// Open-circuit cooldown.
    pub cooldown_seconds: u64,
    /// Token grace period.
    pub grace_period_hours: u64,
    /// Whether offline logins are allowed.
    pub offline_mode_allowed: bool,
}

/// The global mode.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Keycloak reachable.
    Normal,
    /// Unreachable; at least one cached token inside its grace period.
    Degraded,
    /// Unreachable; local authentication only.
    Offline,
}

impl Mode {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Degraded => "degraded",
            Mode::Offline => "offline",
        }
    }
}

/// The original `get_status()` block.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Keycloak reachable now.
    pub available: bool,
    /// closed | open | half_open.
    pub circuit_state: &'static str,
    /// Consecutive availability failures.
    pub failure_count: u32,
    /// normal | degraded | offline.
    pub mode: Mode,
    /// Items waiting in the sync queue.
    pub pending_syncs: usize,
    /// Cached tokens inside the grace period.
    pub cached_tokens: usize,
    /// The resilience settings in force.
    pub config: StatusConfig,
    /// Items refused for good (see `queue`).
    pub failed_syncs: usize,
    /// Why the queue is blocked (admin credentials refused), if it is.
    pub queue_blocked: Option<String>,
    /// The clients Keycloak refuses for our configuration, and why (never a secret): logins
    /// fall back to cached or local while the login client is refused, the queue waits while
    /// the admin client is. The mode keeps its three values.
    pub misconfigured: Vec<Misconfigured>,
    /// Why Keycloak is unavailable, if it is.
    pub unavailable_reason: Option<String>,
}

/// A client Keycloak refuses for our configuration (see [`Status::misconfigured`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Misconfigured {
    /// `login` (the password grant's client) or `admin` (the sync service account).
    pub client: &'static str,
    /// Keycloak's reason, as classified.
    pub reason: String,
}

/// A login's Keycloak step, admitted by the breaker and the bulkhead, not yet made (see
/// [`ResilientClient::plan_login`]).
#[derive(Debug)]
pub enum LoginStep {
    /// The password grant.
    Grant(Admission),
    /// The half-open trial: a health probe bounded by `trial_timeout_ms`, and the password
    /// grant only once it answered (otherwise the login goes on cached or local).
    Trial {
        /// The probe's admission.
        admission: Admission,
        /// The realm probed.
        realm: String,
    },
}

/// A login's Keycloak step, made; settled by [`ResilientClient::finish_login`].
#[derive(Debug)]
pub enum StepRan {
    /// The password grant's outcome.
    Grant(Ran<TokenSet>),
    /// The trial probe's outcome, and the grant's when the probe answered.
    Trial(Ran<()>, Option<Ran<TokenSet>>),
}

impl StepRan {
    /// The password grant, if it was made.
    pub fn grant(&self) -> Option<&Ran<TokenSet>> {
        match self {
            StepRan::Grant(g) | StepRan::Trial(_, Some(g)) => Some(g),
            StepRan::Trial(_, None) => None,
        }
    }
}

impl LoginStep {
    /// Makes the call on `http`, touching no database (a one-shot command holds no lock
    /// meanwhile); bounded as the admission says.
    pub fn run(
        self,
        http: &KeycloakClient,
        package: &crate::config::PackageConfig,
        username: &str,
        password: &str,
    ) -> StepRan {
        match self {
            LoginStep::Grant(a) => {
                StepRan::Grant(a.run(http, |kc| kc.password_grant(package, username, password)))
            }
            LoginStep::Trial { admission, realm } => {
                let probe = admission.run(http, |kc| kc.probe(&realm));
                let grant = probe.answered().then(|| {
                    probe
                        .then_request()
                        .run(http, |kc| kc.password_grant(package, username, password))
                });
                StepRan::Trial(probe, grant)
            }
        }
    }
}

/// The account a queued change names, its names checked.
fn queued_account(username: &str, package: &str) -> Result<Account, QueueError> {
    Account::new(username, package).map_err(|e| QueueError::BadInput(e.message("user", "package")))
}

/// One change for [`ResilientClient::queue_sync_many`]: the arguments of
/// [`ResilientClient::queue_sync`]. No `Debug`: the data may hold a password.
#[derive(Clone)]
pub struct QueuedChange {
    /// Whose change.
    pub username: String,
    /// Their package.
    pub package: String,
    /// `password_change`, `user_create`, …
    pub sync_type: String,
    /// The change's data, as for `queue-sync`.
    pub sync_data: serde_json::Value,
    /// 1 runs first.
    pub priority: u32,
}

/// The resilient client. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct ResilientClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    store: Arc<Store>,
    clock: SharedClock,
    keycloak: GuardedKeycloak,
    tokens: TokenCache,
    queue: SyncQueue,
    retries: Retries,
}

impl std::fmt::Debug for ResilientClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilientClient")
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

impl ResilientClient {
    /// Opens the store at `config.storage_path` and builds the client on the wall clock.
    pub fn new(config: Config) -> Result<ResilientClient, ClientError> {
        let store = Arc::new(Store::open(&config.storage_path)?);
        Self::with_parts(config, store, Arc::new(SystemClock))
    }

    /// Builds the client on a given store and clock (tests, embedding).
    pub fn with_parts(
        config: Config,
        store: Arc<Store>,
        clock: SharedClock,
    ) -> Result<ResilientClient, ClientError> {
        let http = KeycloakClient::new(&config.keycloak)?;
        let keycloak = GuardedKeycloak::new(http, &config, store.clone(), clock.clone())?;
        let r = &config.resilience;
        let tokens = TokenCache::new(store.clone(), clock.clone(), r.token_grace_period);
        let queue = SyncQueue::new(store.clone(), clock.clone());
        if store.key_unverified() {
            // Both trees that hold sealed values: a queue with none (or only damaged ones) must
            // not let a wrong key through while the token cache holds sealed tokens.
            let opens = match queue.sealed_sample_opens()? {
                Some(true) => Some(true),
                from_queue => {
                    crate::store::any_sample_opens([from_queue, tokens.sealed_sample_opens()?])
                }
            };
            store.confirm_key(opens)?;
        }
        queue.recover()?;
        Ok(ResilientClient {
            inner: Arc::new(Inner {
                keycloak,
                tokens,
                queue,
                retries: Retries::default(),
                config,
                store,
                clock,
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The store (shared with the local-auth layer).
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// The token cache.
    pub fn tokens(&self) -> &TokenCache {
        &self.inner.tokens
    }

    /// The sync queue.
    pub fn queue(&self) -> &SyncQueue {
        &self.inner.queue
    }

    /// What a sync cycle works with, borrowed from this client.
    fn cycle(&self) -> Cycle<'_> {
        Cycle {
            keycloak: &self.inner.keycloak,
            queue: &self.inner.queue,
            store: &self.inner.store,
            config: &self.inner.config,
            retries: &self.inner.retries,
        }
    }

    /// The breaker-guarded Keycloak caller: the one way this client calls Keycloak.
    pub fn keycloak(&self) -> &GuardedKeycloak {
        &self.inner.keycloak
    }

    /// Is Keycloak usable now? See [`GuardedKeycloak::is_available`].
    pub fn is_available(&self) -> bool {
        self.inner.keycloak.is_available()
    }

    /// Why Keycloak is not available, for messages. See
    /// [`GuardedKeycloak::unavailable_reason`].
    pub fn unavailable_reason(&self) -> String {
        self.inner.keycloak.unavailable_reason()
    }

    /// Authenticates at Keycloak (password grant) when available; otherwise, when offline mode
    /// is allowed, hands out the cached token if the password matches its verifier and it is
    /// inside the grace period.
    ///
    /// # Errors
    ///
    /// [`AuthError::BadName`] for a name the name rule refuses (checked here, once); the
    /// others as [`ResilientClient::authenticate_with`].
    pub fn authenticate(
        &self,
        username: &str,
        password: &str,
        package: &str,
    ) -> Result<AuthToken, AuthError> {
        let account = Account::new(username, package)?;
        self.authenticate_with(&account, password, Verifier::Password(password), None)
    }

    /// Whether a password change of `account` waits in the queue or is in flight (an
    /// unreadable queue is logged and read as no).
    fn password_change_queued(&self, account: &Account) -> bool {
        self.inner
            .queue
            .has_pending_password_change(account)
            .unwrap_or_else(|e| {
                log::error!("sync queue unreadable: {e}");
                false
            })
    }

    /// [`ResilientClient::authenticate`] of an account, with the verifier the cache is to keep:
    /// the password itself, or — for callers that already verified the password against a PHC
    /// hash (local auth) — that hash, so that the offline check skips a second argon2 run when
    /// the cached verifier is that same hash (`already_verified`).
    pub fn authenticate_with(
        &self,
        account: &Account,
        password: &str,
        verifier: Verifier<'_>,
        already_verified: Option<&str>,
    ) -> Result<AuthToken, AuthError> {
        let ran = self.plan_login().map(|step| {
            let pkg = self.inner.config.package(account.package());
            step.run(self.inner.keycloak.http(), &pkg, account.user(), password)
        });
        self.finish_login(account, password, verifier, already_verified, ran)
    }

    /// A login's Keycloak step, decided now, without I/O: the password grant while the circuit
    /// is closed; the half-open trial (a health probe bounded by `trial_timeout_ms`) when it is
    /// due and no health thread makes it; else why Keycloak is not asked. The step holds no
    /// reference to the database: a one-shot command closes it while the step runs.
    pub fn plan_login(&self) -> Result<LoginStep, String> {
        let kc = &self.inner.keycloak;
        if kc.should_try_keycloak() {
            return match kc.admit(CallKind::Request, kc.timeout()) {
                Ok(admission) => Ok(LoginStep::Grant(admission)),
                Err(e) => Err(e.to_string()),
            };
        }
        if kc.trial_due() && !kc.background_trials() {
            if let Ok(admission) = kc.admit(CallKind::Probe, kc.trial_timeout()) {
                return Ok(LoginStep::Trial {
                    admission,
                    realm: kc.realm().to_string(),
                });
            }
        }
        kc.count_if_circuit_refused();
        Err(self.unavailable_reason())
    }

    /// Settles a login's Keycloak step (or its absence, with the reason) and completes the
    /// login: the new token cached, or the cached one, or why neither. See
    /// [`ResilientClient::authenticate_with`].
    pub fn finish_login(
        &self,
        account: &Account,
        password: &str,
        verifier: Verifier<'_>,
        already_verified: Option<&str>,
        ran: Result<StepRan, String>,
    ) -> Result<AuthToken, AuthError> {
        let kc = &self.inner.keycloak;
        let grant = match ran {
            Err(reason) => Err(reason),
            Ok(StepRan::Grant(grant)) => Ok(grant),
            Ok(StepRan::Trial(probe, grant)) => match (kc.settle_probe(probe), grant) {
                (true, Some(grant)) => Ok(grant),
                _ => Err(self.unavailable_reason()),
            },
        };
        let reason = match grant {
            Err(reason) => reason,
            Ok(ran) => match kc.settle(ran) {
                // While a password change of ours waits in the queue, Keycloak still takes the
                // password it replaces: the token is good, but that password must not become
                // the offline verifier (it would keep working offline for the grace period).
                // Login's verifier is the local hash, checked against the account instead.
                Ok(tokens)
                    if matches!(verifier, Verifier::Password(_))
                        && self.password_change_queued(account) =>
                {
                    self.note_login_client(None);
                    log::info!(
                        "token of {account} not cached: a queued password change replaces the password Keycloak accepted"
                    );
                    return Ok(self.inner.tokens.uncached(&tokens));
                }
                Ok(tokens) => {
                    self.note_login_client(None);
                    return Ok(self.inner.tokens.put(account, &tokens, verifier)?);
                }
                Err(CallError::Keycloak(KcError::Rejected(r))) => {
                    // An answer about the user: the client itself was accepted.
                    self.note_login_client(None);
                    // The password changed centrally (or the account went away): the cached
                    // token must stop working offline too — unless a queued change of ours
                    // explains why Keycloak still has the old password.
                    let explained = self.password_change_queued(account);
                    if !explained && self.inner.tokens.remove(account)? {
                        log::info!("dropped cached token of {account}: Keycloak refused ({r})");
                    }
                    return Err(AuthError::Rejected(r));
                }
                Err(CallError::Keycloak(KcError::Misconfigured(m))) => {
                    self.note_login_client(Some(&m));
                    return Err(AuthError::Misconfigured(m));
                }
                Err(e) => e.to_string(),
            },
        };
        // Degraded mode (a cached token) needs resilience on; offline mode (local auth alone,
        // which the login layer falls back to on `NoCachedLogin`) needs allow_offline_mode.
        let r = &self.inner.config.resilience;
        let cached = if r.enabled {
            self.inner
                .tokens
                .authenticate(account, password, already_verified)?
        } else {
            None
        };
        match cached {
            Some(token) => {
                log::info!("Keycloak unavailable ({reason}); cached token used for {account}");
                Ok(token)
            }
            None if r.allow_offline_mode => Err(AuthError::NoCachedLogin { reason }),
            None => Err(AuthError::OfflineDisabled { reason }),
        }
    }

    /// Exchanges the cached refresh token of `account` for fresh tokens at Keycloak and
    /// caches them (the password verifier stays; the grace period starts again).
    pub fn refresh(&self, account: &Account) -> Result<AuthToken, AuthError> {
        let refresh_token = self
            .inner
            .tokens
            .refresh_token(account)?
            .ok_or(AuthError::NoRefreshToken)?;
        if !self.inner.keycloak.should_try_keycloak() {
            return Err(AuthError::Unavailable {
                reason: self.unavailable_reason(),
            });
        }
        let pkg = self.inner.config.package(account.package());
        match self
            .inner
            .keycloak
            .call(|kc| kc.refresh(&pkg, &refresh_token))
        {
            Ok(tokens) => {
                self.note_login_client(None);
                self.inner
                    .tokens
                    .replace_tokens(account, &tokens)?
                    .ok_or(AuthError::NoRefreshToken)
            }
            Err(CallError::Keycloak(KcError::Rejected(r))) => Err(AuthError::Rejected(r)),
            Err(CallError::Keycloak(KcError::Misconfigured(m))) => {
                self.note_login_client(Some(&m));
                Err(AuthError::Misconfigured(m))
            }
            Err(e) => Err(AuthError::Unavailable {
                reason: e.to_string(),
            }),
        }
    }

    /// The cached token of (user, package) inside the grace period; marks it used.
    pub fn get_cached_token(
        &self,
        username: &str,
        package: &str,
    ) -> Result<Option<AuthToken>, StoreError> {
        // A name the rule refuses has no cache entry.
        let Ok(account) = Account::new(username, package) else {
            return Ok(None);
        };
        self.inner.tokens.get(&account)
    }

    /// Queues a change for Keycloak (durable before it returns). `sync_data` for
    /// `password_change` is `{"new_password": "…"}` (`{"password": "…"}` is accepted as an
    /// alias). The names are checked here, once, into an [`Account`]; then as
    /// [`ResilientClient::queue_change`].
    ///
    /// # Errors
    ///
    /// [`QueueError::BadInput`] for a name the name rule refuses; the others as
    /// [`ResilientClient::queue_change`].
    pub fn queue_sync(
        &self,
        username: &str,
        package: &str,
        sync_type: &str,
        sync_data: &serde_json::Value,
        priority: u32,
    ) -> Result<Uuid, QueueError> {
        self.queue_change(
            &queued_account(username, package)?,
            sync_type,
            sync_data,
            priority,
        )
    }

    /// [`ResilientClient::queue_sync`] of an account. The data is parsed here, once, into
    /// [`SyncData`]; the queue takes it as it is.
    ///
    /// # Errors
    ///
    /// [`QueueError::BadInput`] for a package that the config does not know (when
    /// `keycloak.packages` lists any); [`QueueError::UnknownType`] and [`QueueError::BadData`]
    /// for data [`SyncData::parse`] refuses; the queue's own refusals (see
    /// [`SyncQueue::enqueue`]); [`QueueError::Store`] when the database fails.
    pub fn queue_change(
        &self,
        account: &Account,
        sync_type: &str,
        sync_data: &serde_json::Value,
        priority: u32,
    ) -> Result<Uuid, QueueError> {
        let data = self.checked_change(account, sync_type, sync_data)?;
        let enqueued = self.inner.queue.enqueue(account, data, priority, None)?;
        Ok(enqueued.id)
    }

    /// A change's data, parsed, once its package is one the config knows.
    fn checked_change(
        &self,
        account: &Account,
        sync_type: &str,
        sync_data: &serde_json::Value,
    ) -> Result<SyncData, QueueError> {
        self.inner
            .config
            .check_package(account.package())
            .map_err(QueueError::BadInput)?;
        SyncData::parse(sync_type, sync_data)
    }

    /// [`ResilientClient::queue_sync`] of many changes, made durable together by one flush
    /// (see [`SyncQueue::enqueue_many`]): their SyncIds in order. Every change is checked —
    /// names, package, type, data, priority — before any is written.
    ///
    /// # Errors
    ///
    /// [`QueueError::InChange`] naming the first change refused and why, as
    /// [`ResilientClient::queue_sync`] would have refused it (nothing written); the queue's
    /// own refusals of the batch (see [`SyncQueue::enqueue_many`]).
    pub fn queue_sync_many(&self, changes: &[QueuedChange]) -> Result<Vec<Uuid>, QueueError> {
        let mut checked = Vec::with_capacity(changes.len());
        for (index, c) in changes.iter().enumerate() {
            let in_change = |e| QueueError::in_change(index, changes.len(), e);
            let account = queued_account(&c.username, &c.package).map_err(in_change)?;
            let data = self
                .checked_change(&account, &c.sync_type, &c.sync_data)
                .map_err(in_change)?;
            checked.push((account, data, c.priority));
        }
        self.inner.queue.enqueue_many(checked)
    }

    /// Replays up to `batch_size` queued changes; see [`crate::replay`].
    pub fn process_sync_queue(&self, batch_size: usize) -> Result<SyncReport, ClientError> {
        Ok(replay::run(&self.cycle(), batch_size, &|| false)?)
    }

    /// [`ResilientClient::process_sync_queue`] that stops between items once `stop()` is true.
    pub fn process_sync_queue_until(
        &self,
        batch_size: usize,
        stop: &dyn Fn() -> bool,
    ) -> Result<SyncReport, ClientError> {
        Ok(replay::run(&self.cycle(), batch_size, stop)?)
    }

    /// Removes cached tokens obtained more than `hours` ago.
    pub fn cleanup_expired_tokens(&self, hours: u64) -> Result<usize, StoreError> {
        self.inner
            .tokens
            .cleanup(std::time::Duration::from_secs(hours.saturating_mul(3600)))
    }

    /// Removes completed and superseded sync items finished more than `days` ago.
    pub fn cleanup_completed_syncs(&self, days: u64) -> Result<usize, QueueError> {
        self.inner
            .queue
            .cleanup(std::time::Duration::from_secs(days.saturating_mul(86400)))
    }

    /// Removes failed sync items that failed more than `days` ago.
    pub fn cleanup_failed_syncs(&self, days: u64) -> Result<usize, QueueError> {
        self.inner
            .queue
            .cleanup_failed(std::time::Duration::from_secs(days.saturating_mul(86400)))
    }

    /// Why the queue is blocked, if it is (an unreadable record is logged and reads as a block,
    /// so nothing is replayed past a state we cannot read).
    pub fn queue_blocked(&self) -> Option<String> {
        replay::queue_blocked(&self.inner.store)
    }

    /// The clients Keycloak refuses now: the login client (from the last grant or refresh)
    /// and the admin client (the queue's block).
    pub fn misconfigured(&self) -> Vec<Misconfigured> {
        let login = self
            .inner
            .store
            .get_meta::<String>(MetaKey::LoginMisconfigured)
            .unwrap_or_else(|e| {
                log::error!("login client record unreadable: {e}");
                None
            });
        let admin = self.queue_blocked();
        [("login", login), ("admin", admin)]
            .into_iter()
            .filter_map(|(client, reason)| reason.map(|reason| Misconfigured { client, reason }))
            .collect()
    }

    /// Records what the login client's last grant or refresh said about our configuration:
    /// refused (`Some`, Keycloak's reason) or accepted (`None`). Said once per change of
    /// state, not at every login.
    fn note_login_client(&self, refused: Option<&str>) {
        let store = &self.inner.store;
        let before: Option<String> = store
            .get_meta(MetaKey::LoginMisconfigured)
            .unwrap_or_default();
        if before.as_deref() == refused {
            return;
        }
        let written = match refused {
            Some(reason) => {
                log::warn!(
                    "Keycloak refuses the login client {}: {reason}; logins fall back to cached or local until it is fixed",
                    self.inner.config.keycloak.client_id
                );
                store.put_meta(MetaKey::LoginMisconfigured, &reason.to_string())
            }
            None => {
                log::info!("Keycloak accepts the login client again");
                store.remove_meta(MetaKey::LoginMisconfigured)
            }
        };
        if let Err(e) = written {
            log::error!("could not record the login client's state: {e}");
        }
    }

    /// The circuit as a status display shows it, and the consecutive failure count.
    pub fn circuit(&self) -> (CircuitState, u32) {
        self.inner.keycloak.circuit()
    }

    /// The original status block (probes Keycloak if the health record is stale).
    pub fn get_status(&self) -> Result<Status, ClientError> {
        let available = self.is_available();
        let (circuit, failure_count) = self.circuit();
        let (cached_tokens, _) = self.inner.tokens.counts()?;
        let counts = self.inner.queue.counts()?;
        let r = &self.inner.config.resilience;
        let mode = if available {
            Mode::Normal
        } else if cached_tokens > 0 && r.enabled {
            Mode::Degraded
        } else {
            Mode::Offline
        };
        Ok(Status {
            available,
            circuit_state: circuit.as_str(),
            failure_count,
            mode,
            pending_syncs: counts.pending + counts.processing,
            cached_tokens,
            config: StatusConfig {
                failure_threshold: r.failure_threshold,
                cooldown_seconds: r.cooldown.as_secs(),
                grace_period_hours: r.token_grace_period.as_secs() / 3600,
                offline_mode_allowed: r.allow_offline_mode,
            },
            failed_syncs: counts.failed,
            misconfigured: self.misconfigured(),
            queue_blocked: self.queue_blocked(),
            unavailable_reason: (!available).then(|| self.unavailable_reason()),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::keycloak::TokenSet;
    use crate::store::Sealer;
    use crate::token_cache::Verifier;
    use chrono::{TimeZone, Utc};
    use std::path::Path;

    /// A client whose Keycloak refuses every connection at once, with a fresh successful
    /// probe on record so that a cycle starts without asking.
    pub(crate) fn client_with_keycloak_gone() -> (ResilientClient, Arc<Store>) {
        let (config, store, clock) = crate::replay::tests::keycloak_gone();
        let client = ResilientClient::with_parts(config, store.clone(), Arc::new(clock)).unwrap();
        (client, store)
    }

    fn config() -> Config {
        let yaml = "keycloak:\n  server_url: http://127.0.0.1:9\n  realm: demo\n  client_id: webapp\n  admin_client_secret: s\n";
        Config::parse(yaml, Path::new("/nonexistent/config.yaml"), &|_| None).unwrap()
    }

    /// Issue 7 point 6: `queue_sync` refuses names the name rule refuses (the queue below
    /// takes an [`Account`], whose names are checked when it is made), and queues nothing.
    #[test]
    fn queue_sync_refuses_path_like_and_invisible_names() {
        let clock: SharedClock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0).unwrap(),
        ));
        let store = Arc::new(Store::temporary().unwrap());
        let client = ResilientClient::with_parts(config(), store, clock).unwrap();
        for (user, package, why) in [
            ("..", "p", "user must not be . or .."),
            ("../../etc/passwd", "p", "user must not contain"),
            ("evil\u{202E}", "p", "user contains an invisible"),
            ("u", "a/b", "package must not contain"),
            ("u", ".", "package must not be . or .."),
            ("nul\0", "p", "user contains a control"),
        ] {
            let data = serde_json::json!({"new_password": "pw-123456"});
            let err = client
                .queue_sync(user, package, "password_change", &data, 1)
                .unwrap_err();
            assert!(
                matches!(&err, QueueError::BadInput(m) if m.starts_with(why)),
                "{user:?}/{package:?}: {err}"
            );
        }
        assert_eq!(client.queue().pending_count(), 0);
    }

    /// `authenticate`, the original API, checks the names once at entry: a name the rule
    /// refuses is refused before Keycloak or the cache is asked.
    #[test]
    fn authenticate_refuses_a_name_the_rule_refuses() {
        let clock: SharedClock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0).unwrap(),
        ));
        let store = Arc::new(Store::temporary().unwrap());
        let client = ResilientClient::with_parts(config(), store, clock).unwrap();
        let err = client.authenticate("a/b", "pw", "web").unwrap_err();
        assert!(matches!(err, AuthError::BadName(_)), "{err}");
        assert_eq!(
            err.to_string(),
            "username must not contain any of / \\ ? # %"
        );
        assert!(client.get_cached_token("..", "web").unwrap().is_none());
    }

    /// A database from before key check values whose queue holds no sealed data (its one item
    /// is finished) but whose token cache holds sealed tokens: a wrong key is refused and
    /// writes no check value of its own, so the right key still opens it afterwards.
    #[test]
    fn an_old_database_with_sealed_tokens_only_refuses_a_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let clock: SharedClock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0).unwrap(),
        ));
        {
            let store = Arc::new(Store::open(&path).unwrap());
            let client =
                ResilientClient::with_parts(config(), store.clone(), clock.clone()).unwrap();
            let tokens = TokenSet {
                access_token: "access".into(),
                expires_in: 300,
                refresh_token: Some("refresh".into()),
                refresh_expires_in: 1800,
                token_type: "Bearer".into(),
            };
            client
                .tokens()
                .put(
                    &crate::account::acct("alice", "web"),
                    &tokens,
                    Verifier::Password("pw"),
                )
                .unwrap();
            let id = client
                .queue_sync(
                    "alice",
                    "web",
                    "password_change",
                    &serde_json::json!({"new_password": "pw-123456"}),
                    1,
                )
                .unwrap();
            let mut claimed = client.queue().claim(1).unwrap();
            assert_eq!(claimed[0].id(), id);
            claimed.remove(0).complete().unwrap();
            assert_eq!(client.queue().sealed_sample_opens().unwrap(), None);
            store
                .remove_meta(crate::store::meta::MetaKey::KeyCheck)
                .unwrap();
            store.flush().unwrap();
        }
        let key_file = Sealer::key_path(&path);
        let right_key = std::fs::read(&key_file).unwrap();
        std::fs::write(&key_file, [7u8; 32]).unwrap();
        {
            let store = Arc::new(Store::open(&path).unwrap());
            assert!(store.key_unverified());
            let err = ResilientClient::with_parts(config(), store, clock.clone()).unwrap_err();
            assert!(
                matches!(err, ClientError::Store(StoreError::KeyMismatch { .. })),
                "{err}"
            );
        }
        std::fs::write(&key_file, &right_key).unwrap();
        {
            let store = Arc::new(Store::open(&path).expect("the right key still opens it"));
            assert!(store.key_unverified());
            let client = ResilientClient::with_parts(config(), store, clock.clone()).unwrap();
            assert!(client.get_cached_token("alice", "web").unwrap().is_some());
        }
        let store = Store::open(&path).unwrap();
        assert!(!store.key_unverified(), "its check value was written");
    }
}
