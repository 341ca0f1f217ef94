//! Login and change-password: local authentication first, Keycloak as an enhancement.
//!
//! The original web layer's `ObjUser.Login`: the local password decides; a failure ends it.
//! Then a Keycloak token is fetched if Keycloak is usable, else the cached one; the session is
//! created whatever Keycloak does. `ChangePassword`, corrected: the old password is verified
//! locally, the local password always changes, and Keycloak is updated through the admin API
//! when it is usable, else the change waits in the queue at priority 1.

use crate::account::Account;
use crate::auth_events::{AuthEvents, ModeCounts};
use crate::central::{self, CentralAnswer, Decision, LocalAnswer, Lookup};
use crate::client::{AuthError, LoginStep, ResilientClient, StepRan};
use crate::config::{Authority, Config};
use crate::keycloak::guard::{CallError, Ran};
use crate::keycloak::{KcError, KcUser, KeycloakClient, Rejection};
use crate::local_users::{LocalUsers, Origin, UserError, Verification};
use crate::lockout::LockoutPolicy;
use crate::replay::{self, ApplyError};
use crate::sessions::{AuthMode, Session, Sessions};
use crate::store::meta::Counter;
use crate::store::StoreError;
use crate::sync_queue::{
    Claimed, LocalChange, PasswordChange, QueueError, SyncData, PRIORITY_HIGHEST,
};
use crate::token_cache::{TokenCache, Verifier};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

mod user_changes;
pub use user_changes::{Profile, UserChangeError};

/// Why a login failed (the `reason` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    /// Wrong password or unknown user (one answer for both).
    InvalidCredentials,
    /// The local account is disabled.
    AccountDisabled,
    /// Too many failures: locked for a while, even for the right password.
    AccountLocked,
    /// Keycloak is unreachable, no cached token, and offline mode is off.
    KeycloakUnavailable,
}

impl FailReason {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::InvalidCredentials => "invalid_credentials",
            FailReason::AccountDisabled => "account_disabled",
            FailReason::AccountLocked => "account_locked",
            FailReason::KeycloakUnavailable => "keycloak_unavailable",
        }
    }
}

/// The result of `login`. `Debug` leaves out the access token.
#[derive(Clone, Serialize)]
pub struct LoginResult {
    /// True when a session was created.
    pub success: bool,
    /// The new session.
    pub session_id: Option<Uuid>,
    /// Which layer vouched for the user.
    pub auth_mode: Option<AuthMode>,
    /// online | offline | not_asked: Keycloak took part; was unavailable (or its circuit open);
    /// or was not asked because local auth refused first.
    pub keycloak_status: &'static str,
    /// Why it failed.
    pub reason: Option<FailReason>,
    /// Until when the account is locked (with `account_locked`).
    pub locked_until: Option<DateTime<Utc>>,
    /// The Keycloak access token, when there is one (not printed unless asked for).
    #[serde(skip)]
    pub access_token: Option<String>,
}

impl std::fmt::Debug for LoginResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginResult")
            .field("success", &self.success)
            .field("session_id", &self.session_id)
            .field("auth_mode", &self.auth_mode)
            .field("keycloak_status", &self.keycloak_status)
            .field("reason", &self.reason)
            .field("locked_until", &self.locked_until)
            .finish_non_exhaustive()
    }
}

/// How the new password reached Keycloak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PasswdMode {
    /// Set in Keycloak now.
    Synchronized,
    /// Waiting in the sync queue.
    Queued,
    /// Keycloak refused it (policy, unknown user): see [`PasswdResult::local_changed`].
    Rejected,
}

/// The result of `passwd`.
#[derive(Debug, Clone, Serialize)]
pub struct PasswdResult {
    /// synchronized | queued | rejected.
    pub mode: PasswdMode,
    /// The queue item, when one was recorded.
    pub sync_id: Option<Uuid>,
    /// Whether the local password is the new one. False only when Keycloak's password policy
    /// refused it and Keycloak decides passwords (`keycloak.authority.passwords: keycloak`): the old
    /// password was put back, as it is still Keycloak's.
    pub local_changed: bool,
    /// Keycloak's reason, when it refused.
    pub keycloak_error: Option<String>,
}

/// What [`Auth::login_begin`] got to.
#[derive(Debug)]
pub enum LoginBegun {
    /// The login is complete (refused locally, or Keycloak not to be asked).
    Done(LoginResult),
    /// Local auth accepted the user; Keycloak is to be asked.
    Keycloak(PendingLogin),
}

/// A login whose Keycloak step is still to run: accepted by local auth, or refused by it where
/// Keycloak's answer could change that (see [`crate::central`]). Holds no reference to the
/// database. `Debug` leaves out the verified hash.
pub struct PendingLogin {
    account: Account,
    local: LocalSide,
    step: LoginStep,
}

/// What local auth said, as the rest of the login needs it.
enum LocalSide {
    /// The password is right; the hash it verified against.
    Accepted { hash: String },
    /// Refused here (or no account), but Keycloak is to be asked.
    NotAccepted {
        /// Which refusal.
        answer: LocalAnswer,
        /// The account's hash as read (adoption replaces only that one); `None` when there is
        /// no account.
        seen: Option<String>,
        /// What the login answers when Keycloak does not change it.
        refusal: FailReason,
    },
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// A login whose Keycloak step has run (or was not made, with the reason), to be completed by
/// [`Auth::login_finish`].
pub struct RanLogin {
    account: Account,
    local: LocalSide,
    ran: Result<StepRan, String>,
    /// The admin API's view of a user whose right local password Keycloak refused.
    lookup: Option<Ran<Option<(KcUser, bool)>>>,
}

impl PendingLogin {
    /// Runs the Keycloak step on `http` with `config`'s realm and client for the account's
    /// package; when Keycloak refuses a password local auth accepted, also asks the admin API
    /// about the user (a changed password, a deleted user and a brute-force lock all read
    /// "invalid user credentials"). Touches no database.
    pub fn run(self, http: &KeycloakClient, config: &Config, password: &str) -> RanLogin {
        let package = config.package(self.account.package());
        let ran = self.step.run(http, &package, self.account.user(), password);
        let c = &config.consistency;
        let central_matters =
            c.passwords == Authority::Keycloak || c.accounts == Authority::Keycloak;
        let lookup = match (&self.local, ran.grant()) {
            (LocalSide::Accepted { .. }, Some(grant))
                if central_matters
                    && matches!(
                        grant.result(),
                        Err(KcError::Rejected(Rejection::InvalidCredentials))
                    ) =>
            {
                let user = self.account.user();
                Some(
                    grant
                        .then_request()
                        .run(http, |kc| kc.user_state(&package.realm, user)),
                )
            }
            _ => None,
        };
        RanLogin {
            account: self.account,
            local: self.local,
            ran: Ok(ran),
            lookup,
        }
    }
}

/// Why `passwd` did nothing.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    /// The old password is wrong, or the user unknown.
    #[error("invalid credentials: the old password does not match")]
    InvalidCredentials,
    /// The account is disabled.
    #[error("account disabled")]
    AccountDisabled,
    /// The account is locked.
    #[error("account locked until {0}")]
    AccountLocked(DateTime<Utc>),
    /// The new password is not acceptable locally.
    #[error(transparent)]
    User(#[from] UserError),
    /// Queueing failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Login failures that are not a user's fault.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The local user store failed.
    #[error(transparent)]
    User(#[from] UserError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The local-first authentication layer.
#[derive(Clone)]
pub struct Auth {
    client: ResilientClient,
    users: LocalUsers,
    sessions: Sessions,
    events: AuthEvents,
}

impl Auth {
    /// Builds the layer over the client's store and clock.
    pub fn new(client: ResilientClient) -> Auth {
        let store = client.store().clone();
        let clock = client.clock().clone();
        let a = &client.config().auth;
        let policy = LockoutPolicy {
            max_failures: a.max_failed_logins,
            window: a.failure_window,
            lockout: a.lockout,
        };
        Auth {
            users: LocalUsers::new(store.clone(), clock.clone(), policy),
            sessions: Sessions::new(store.clone(), clock.clone(), a.session_ttl),
            events: AuthEvents::new(store, clock),
            client,
        }
    }

    /// The engine underneath.
    pub fn client(&self) -> &ResilientClient {
        &self.client
    }

    /// The local user store.
    pub fn users(&self) -> &LocalUsers {
        &self.users
    }

    /// The sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The login event log.
    pub fn events(&self) -> &AuthEvents {
        &self.events
    }

    /// Ends what an account holds without touching the account: its sessions and its cached
    /// token. Returns the sessions ended.
    pub fn revoke(&self, account: &Account) -> Result<usize, LoginError> {
        self.client.tokens().remove(account)?;
        Ok(self.sessions.remove_user(account)?)
    }

    /// Logins in the last hour by mode.
    pub fn modes_last_hour(&self) -> Result<ModeCounts, StoreError> {
        self.events.since(chrono::Duration::hours(1))
    }

    /// Local auth first; then Keycloak, else the cached token, else local only.
    pub fn login(&self, account: &Account, password: &str) -> Result<LoginResult, LoginError> {
        match self.login_begin(account, password)? {
            LoginBegun::Done(result) => Ok(result),
            LoginBegun::Keycloak(pending) => {
                let ran = pending.run(
                    self.client.keycloak().http(),
                    self.client.config(),
                    password,
                );
                self.login_finish(ran, password)
            }
        }
    }

    /// The part of a login before Keycloak is asked: local auth decides, then the Keycloak step
    /// is planned. When Keycloak is not to be asked the login is completed here; otherwise the
    /// step comes back to be run — by a one-shot command after it has let go of the database —
    /// and handed to [`Auth::login_finish`]. A password local auth refuses still goes to
    /// Keycloak where its answer could change that (a password changed centrally, a user only
    /// Keycloak knows, an account Keycloak had disabled): see [`crate::central`].
    pub fn login_begin(&self, account: &Account, password: &str) -> Result<LoginBegun, LoginError> {
        let account = account.clone();
        let local = match self.users.verify(&account, password)? {
            Verification::Ok { hash } => LocalSide::Accepted { hash },
            Verification::Locked { until } => {
                return Ok(LoginBegun::Done(failed(
                    FailReason::AccountLocked,
                    Some(until),
                )))
            }
            Verification::Invalid => {
                match self.not_accepted(&account, FailReason::InvalidCredentials)? {
                    Some(local) => local,
                    None => {
                        return Ok(LoginBegun::Done(failed(
                            FailReason::InvalidCredentials,
                            None,
                        )))
                    }
                }
            }
            Verification::Disabled => {
                match self.not_accepted(&account, FailReason::AccountDisabled)? {
                    Some(local) => local,
                    None => return Ok(LoginBegun::Done(failed(FailReason::AccountDisabled, None))),
                }
            }
        };
        match (self.client.plan_login(), local) {
            (Ok(step), local) => Ok(LoginBegun::Keycloak(PendingLogin {
                account,
                local,
                step,
            })),
            (Err(reason), local @ LocalSide::Accepted { .. }) => {
                let ran = RanLogin {
                    account,
                    local,
                    ran: Err(reason),
                    lookup: None,
                };
                Ok(LoginBegun::Done(self.login_finish(ran, password)?))
            }
            // Keycloak cannot be asked: local auth's refusal stands.
            (Err(_), LocalSide::NotAccepted { refusal, .. }) => {
                Ok(LoginBegun::Done(failed(refusal, None)))
            }
        }
    }

    /// A login local auth refused, if Keycloak is to be asked about it: which refusal, and the
    /// hash read (see [`central::asks_keycloak`]).
    fn not_accepted(
        &self,
        account: &Account,
        refusal: FailReason,
    ) -> Result<Option<LocalSide>, LoginError> {
        let record = self.users.get(account)?;
        let answer = match &record {
            None => LocalAnswer::Unknown,
            Some(u) if u.enabled => LocalAnswer::Refused,
            Some(u) if u.disabled_by == Some(Origin::Keycloak) => LocalAnswer::DisabledByKeycloak,
            Some(_) => return Ok(None),
        };
        if !central::asks_keycloak(answer, &self.client.config().consistency) {
            return Ok(None);
        }
        Ok(Some(LocalSide::NotAccepted {
            answer,
            seen: record.map(|u| u.hash),
            refusal,
        }))
    }

    /// Completes a login whose Keycloak step has run: the outcome recorded (breaker, health,
    /// token cache), then what Keycloak decided applied here ([`crate::central`]); the session
    /// created whatever Keycloak's availability.
    pub fn login_finish(&self, ran: RanLogin, password: &str) -> Result<LoginResult, LoginError> {
        let RanLogin {
            account,
            local,
            ran,
            lookup,
        } = ran;
        let lookup = lookup.map(|l| match self.client.keycloak().settle(l) {
            Ok(Some((user, locked))) => Lookup::Exists {
                enabled: user.enabled,
                locked,
            },
            Ok(None) => Lookup::Gone,
            Err(e) => {
                log::info!("login {account}: could not ask Keycloak about the user ({e})");
                Lookup::Unknown
            }
        });
        match local {
            LocalSide::Accepted { hash } => {
                self.finish_accepted(&account, &hash, ran, lookup, password)
            }
            LocalSide::NotAccepted {
                answer,
                seen,
                refusal,
            } => self.finish_not_accepted(&account, answer, seen, refusal, ran, password),
        }
    }

    /// A login local auth accepted: Keycloak may still say the password changed centrally or
    /// the account is disabled or gone.
    fn finish_accepted(
        &self,
        account: &Account,
        hash: &str,
        ran: Result<StepRan, String>,
        lookup: Option<Lookup>,
        password: &str,
    ) -> Result<LoginResult, LoginError> {
        let outcome =
            self.client
                .finish_login(account, password, Verifier::Hash(hash), Some(hash), ran);
        let central = match &outcome {
            Ok(t) if !t.cached => CentralAnswer::Accepted,
            Err(AuthError::Rejected(Rejection::InvalidCredentials)) => {
                CentralAnswer::InvalidCredentials(lookup.unwrap_or(Lookup::Unknown))
            }
            Err(AuthError::Rejected(Rejection::AccountDisabled)) => CentralAnswer::AccountDisabled,
            _ => CentralAnswer::NoDecision,
        };
        if let Ok(t) = &outcome {
            if !t.cached {
                self.link(account, &t.access_token);
            }
        }
        let decision = if central == CentralAnswer::NoDecision || central == CentralAnswer::Accepted
        {
            Decision::AsLocal
        } else {
            let linked = self
                .users
                .get(account)?
                .is_some_and(|u| u.keycloak_id.is_some());
            central::decide(
                LocalAnswer::Accepted,
                &central,
                &self.client.config().consistency,
                self.pending_change(account),
                linked,
            )
        };
        match decision {
            Decision::MarkStale => {
                if self.users.mark_stale(account, hash)? {
                    self.count(Counter::PasswordsStale);
                }
                return Ok(refused_online(FailReason::InvalidCredentials));
            }
            Decision::Disable => {
                self.disable_by_keycloak(account)?;
                return Ok(refused_online(FailReason::AccountDisabled));
            }
            _ => {}
        }
        let (mode, online, token) = match outcome {
            Ok(t) if t.cached => (AuthMode::Cached, false, Some(t.access_token)),
            Ok(t) => (AuthMode::Keycloak, true, Some(t.access_token)),
            Err(AuthError::Rejected(r)) => {
                self.note_divergence(account, &r);
                (AuthMode::Local, true, None)
            }
            Err(AuthError::NoCachedLogin { reason } | AuthError::Unavailable { reason }) => {
                log::info!("login {account}: local only (Keycloak: {reason})");
                (AuthMode::Local, false, None)
            }
            Err(AuthError::OfflineDisabled { reason }) => {
                log::warn!("login {account} refused: Keycloak unavailable ({reason}) and offline mode is off");
                return Ok(LoginResult {
                    keycloak_status: "offline",
                    ..failed(FailReason::KeycloakUnavailable, None)
                });
            }
            // Said once per change by the client (`status` shows it meanwhile).
            Err(AuthError::Misconfigured(m)) => {
                log::debug!("login {account}: local only, Keycloak misconfigured: {m}");
                (AuthMode::Local, false, None)
            }
            // Not answers of a login (the account is already checked, no refresh is asked for).
            Err(
                AuthError::NoRefreshToken | AuthError::NoCachedToken { .. } | AuthError::BadName(_),
            ) => (AuthMode::Local, false, None),
            // Local auth has vouched for the user: a damaged cache entry or an unreadable key
            // must not lock them out. Say so loudly and go on locally.
            Err(AuthError::Store(e)) => {
                log::error!("login {account}: token cache unusable ({e}); local login only");
                (AuthMode::Local, false, None)
            }
        };
        self.succeed(account, mode, online, token)
    }

    /// A login local auth refused, where Keycloak's acceptance adopts the password, provisions
    /// the account or enables it again; anything else leaves the refusal standing.
    fn finish_not_accepted(
        &self,
        account: &Account,
        answer: LocalAnswer,
        seen: Option<String>,
        refusal: FailReason,
        ran: Result<StepRan, String>,
        password: &str,
    ) -> Result<LoginResult, LoginError> {
        // The password is the offline verifier: local auth has no hash of it yet.
        let outcome =
            self.client
                .finish_login(account, password, Verifier::Password(password), None, ran);
        let (central, token, online) = match outcome {
            Ok(t) if !t.cached => (CentralAnswer::Accepted, Some(t.access_token), true),
            Ok(_) => (CentralAnswer::NoDecision, None, false),
            Err(AuthError::Rejected(_)) => (CentralAnswer::NoDecision, None, true),
            Err(_) => (CentralAnswer::NoDecision, None, false),
        };
        let decision = central::decide(
            answer,
            &central,
            &self.client.config().consistency,
            self.pending_change(account),
            false,
        );
        let adopted = match (decision, seen.as_deref(), token.as_deref()) {
            (Decision::AdoptPassword, Some(seen), Some(_)) => {
                let adopted = self.users.adopt_password(account, password, seen, false)?;
                adopted.is_some().then_some(Counter::PasswordsAdopted)
            }
            (Decision::EnableAndAdopt, Some(seen), Some(_)) => {
                let adopted = self.users.adopt_password(account, password, seen, true)?;
                adopted.is_some().then_some(Counter::CentralEnables)
            }
            (Decision::Provision, None, Some(access)) => {
                let id = crate::keycloak::users::token_subject(access);
                match self.users.provision(account, password, id.as_deref()) {
                    Ok(_) => Some(Counter::Provisioned),
                    Err(UserError::Exists { .. }) => None,
                    Err(e) => return Err(e.into()),
                }
            }
            _ => None,
        };
        let Some(counter) = adopted else {
            // Keycloak's token must not outlive the refusal (a queued change, a race with
            // `passwd`, provisioning off): nothing here vouches for this password.
            if token.is_some() {
                self.client.tokens().remove(account)?;
            }
            return Ok(LoginResult {
                keycloak_status: if online { "online" } else { "offline" },
                ..failed(refusal, None)
            });
        };
        self.count(counter);
        if let Some(access) = &token {
            self.link(account, access);
        }
        self.succeed(account, AuthMode::Keycloak, true, token)
    }

    /// The session and the login event of a successful login.
    fn succeed(
        &self,
        account: &Account,
        mode: AuthMode,
        online: bool,
        token: Option<String>,
    ) -> Result<LoginResult, LoginError> {
        let session: Session = self.sessions.create(account, mode)?;
        self.events.record(mode)?;
        Ok(LoginResult {
            success: true,
            session_id: Some(session.id),
            auth_mode: Some(mode),
            keycloak_status: if online { "online" } else { "offline" },
            reason: None,
            locked_until: None,
            access_token: token,
        })
    }

    /// Keycloak disabled or removed the account: disabled here (source Keycloak), its sessions
    /// and cached token dropped.
    fn disable_by_keycloak(&self, account: &Account) -> Result<(), LoginError> {
        if self.users.disable_by_keycloak(account)? {
            self.count(Counter::CentralDisables);
        }
        self.revoke(account)?;
        Ok(())
    }

    /// Remembers the Keycloak id the login's token names (a failure is logged: the link is
    /// learnt again at the next login).
    fn link(&self, account: &Account, access_token: &str) {
        let Some(id) = crate::keycloak::users::token_subject(access_token) else {
            return;
        };
        if let Err(e) = self.users.link(account, &id) {
            log::error!("login {account}: could not remember the Keycloak id: {e}");
        }
    }

    /// Whether a local change of the account waits in the queue (an unreadable queue is logged
    /// and read as yes: nothing central is applied over a change that may be there).
    fn pending_change(&self, account: &Account) -> bool {
        self.client
            .queue()
            .has_pending_change(account)
            .unwrap_or_else(|e| {
                log::error!("sync queue unreadable: {e}");
                true
            })
    }

    fn count(&self, counter: Counter) {
        if let Err(e) = self.client.store().bump_counter(counter, 1) {
            log::error!("could not count {}: {e}", counter.key());
        }
    }

    /// Keycloak refused a user local auth accepted. A wrong password is a divergence worth
    /// counting — unless a queued change explains it; any other refusal (account disabled or
    /// not set up in Keycloak) is logged: local auth stays primary. Never fails the login.
    fn note_divergence(&self, account: &Account, r: &Rejection) {
        if *r != Rejection::InvalidCredentials {
            log::warn!("login {account}: Keycloak refuses the account ({r}); local login only");
            return;
        }
        let explained = self
            .client
            .queue()
            .has_pending_password_change(account)
            .unwrap_or_else(|e| {
                log::error!("sync queue unreadable: {e}");
                false
            });
        if explained {
            log::info!(
                "login {account}: Keycloak still has the old password; a queued change will fix it"
            );
            return;
        }
        if let Err(e) = self
            .client
            .store()
            .bump_counter(Counter::PasswordDivergence, 1)
        {
            log::error!("could not count a password divergence: {e}");
        }
        log::warn!(
            "login {account}: local password accepted but Keycloak refused it: the two have diverged"
        );
    }

    /// Verifies `old` locally, sets `new` locally, then in Keycloak or the queue.
    ///
    /// The new local hash and the queued change for Keycloak are written in one transaction
    /// and flushed before Keycloak is asked: a crash at any point leaves either the old
    /// password and no change, or the new password with its change queued — never a new
    /// local password that Keycloak will not hear of. When Keycloak looks usable the change
    /// is written already claimed and sent at once, through the same exactly-once path as the
    /// replay ([`crate::replay`]); it is completed, failed (Keycloak refused it for good) or
    /// put back to pending (Keycloak away) afterwards.
    pub fn change_password(
        &self,
        account: &Account,
        old: &str,
        new: &str,
    ) -> Result<PasswdResult, PasswdError> {
        let previous = match self.users.verify(account, old)? {
            Verification::Ok { hash } => hash,
            Verification::Invalid => return Err(PasswdError::InvalidCredentials),
            Verification::Disabled => return Err(PasswdError::AccountDisabled),
            Verification::Locked { until } => return Err(PasswdError::AccountLocked(until)),
        };
        let record = self.users.prepare_password(account, new)?;
        let data = SyncData::PasswordChange(PasswordChange::new(new.to_string())?);
        let change = |current: &[u8]| record.apply(current);
        // The cached token follows the new password: its verifier is replaced in the same
        // transaction as the password, so that no crash and no concurrent login or refresh can
        // leave the old password opening it offline. Updated rather than dropped because the
        // user keeps an offline token (with the new password) while Keycloak is away; a damaged
        // entry is dropped, which is always safe.
        let retoken = |current: &[u8]| TokenCache::with_verifier(current, &record.hash);
        let local = LocalChange {
            key: record.key.clone(),
            change: &change,
            cached_token: Some(&retoken),
            claim: self.client.keycloak().should_try_keycloak(),
        };
        let enqueued =
            self.client
                .queue()
                .enqueue(account, data, PRIORITY_HIGHEST, Some(&local))?;
        log::info!(
            "password of local user {:?} in package {:?} changed",
            account.user(),
            account.package()
        );
        let Some(claimed) = enqueued.claimed else {
            return Ok(queued(enqueued.id));
        };
        let result = self.sync_now(account, claimed, Some((&previous, &record.hash)));
        self.client.store().flush()?;
        Ok(result?)
    }

    /// Sends the change `passwd` claimed to Keycloak at once, through the replay's exactly-once
    /// path, and settles it: completed, failed (Keycloak refused it for good) or released
    /// (Keycloak away; not counted as an attempt, as when a cycle meets an outage). A database
    /// error leaves the claim unsettled, and its drop puts the change back to pending, so that
    /// it does not hold up the user's later changes until a restart.
    ///
    /// When Keycloak refuses the new password by its policy and decides passwords, the previous password
    /// is put back (`hashes`: the previous and the new hash; only the new one is replaced, so
    /// a change made meanwhile stands) and the cached token dropped: Keycloak still has the
    /// previous password, and a local-only new one would only be found stale at the next login.
    fn sync_now(
        &self,
        account: &Account,
        claimed: Claimed<'_>,
        hashes: Option<(&str, &str)>,
    ) -> Result<PasswdResult, QueueError> {
        let id = claimed.id();
        let c = &self.client;
        match replay::apply(c.keycloak(), c.config(), c.store(), &claimed) {
            Ok(_) => {
                claimed.complete()?;
                Ok(PasswdResult {
                    mode: PasswdMode::Synchronized,
                    sync_id: None,
                    keycloak_error: None,
                    local_changed: true,
                })
            }
            Err(ApplyError::Call(CallError::Keycloak(KcError::Rejected(r))))
                if !matches!(r, Rejection::Transient { .. }) =>
            {
                // Only a policy refusal says Keycloak keeps another password for the user; a
                // user Keycloak does not know is local-only, and its new password stands
                // (and may reach Keycloak on an operator's `queue retry` once it has the user).
                let central = c.config().consistency.passwords == Authority::Keycloak
                    && matches!(r, Rejection::PasswordPolicy(_));
                if central {
                    claimed.fail_for_good(&r.to_string())?;
                } else {
                    claimed.fail(&r.to_string())?;
                }
                let restored = match hashes {
                    Some((previous, new)) if central => self
                        .users
                        .restore_password(account, new, previous)
                        .map_err(|e| QueueError::LocalUser(e.to_string()))?,
                    _ => false,
                };
                if restored {
                    c.tokens().remove(account)?;
                    log::warn!("passwd {account}: Keycloak refused the new password ({r}); the previous one stays");
                } else {
                    log::warn!("passwd {account}: local password changed, Keycloak refused: {r}");
                }
                Ok(PasswdResult {
                    mode: PasswdMode::Rejected,
                    sync_id: Some(id),
                    keycloak_error: Some(r.to_string()),
                    local_changed: !restored,
                })
            }
            Err(ApplyError::Call(e)) => {
                if let CallError::Keycloak(KcError::Misconfigured(m)) = &e {
                    log::warn!("passwd {account}: Keycloak misconfigured ({m}); change queued");
                }
                claimed.release(Some(&e.to_string()))?;
                Ok(queued(id))
            }
            Err(ApplyError::Queue(e)) => Err(e),
        }
    }
}

/// `passwd`'s answer when the change waits in the queue.
fn queued(id: Uuid) -> PasswdResult {
    PasswdResult {
        mode: PasswdMode::Queued,
        sync_id: Some(id),
        keycloak_error: None,
        local_changed: true,
    }
}

/// `keycloak_status` of a login local auth refused (Keycloak was not asked, whatever its
/// state; the KeycloakUnavailable refusal overrides it).
const KEYCLOAK_NOT_ASKED: &str = "not_asked";

/// A login refused on Keycloak's word (it was asked and answered).
fn refused_online(reason: FailReason) -> LoginResult {
    LoginResult {
        keycloak_status: "online",
        ..failed(reason, None)
    }
}

fn failed(reason: FailReason, locked_until: Option<DateTime<Utc>>) -> LoginResult {
    LoginResult {
        success: false,
        session_id: None,
        auth_mode: None,
        keycloak_status: KEYCLOAK_NOT_ASKED,
        reason: Some(reason),
        locked_until,
        access_token: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{acct, user_key};
    use crate::keycloak::TokenSet;
    use crate::store::codec::RECORD_VERSION;
    use crate::sync_queue::fail_next_transitions;

    const OLD: &str = "Old-Password-1";
    const NEW: &str = "New-Password-22";

    /// Login and passwd over a Keycloak that refuses every connection at once, with a fresh
    /// successful probe on record: passwd tries it at once (claimed), and puts the change back.
    fn auth_with_keycloak_gone() -> Auth {
        Auth::new(crate::client::tests::client_with_keycloak_gone().0)
    }

    fn tokens() -> TokenSet {
        TokenSet {
            access_token: "access".into(),
            expires_in: 300,
            refresh_token: Some("refresh".into()),
            refresh_expires_in: 1800,
            token_type: "Bearer".into(),
        }
    }

    fn verified_hash(auth: &Auth, user: &str, password: &str) -> String {
        match auth
            .users()
            .verify(&crate::account::acct(user, "web"), password)
            .unwrap()
        {
            Verification::Ok { hash } => hash,
            other => panic!("{user}: {other:?}"),
        }
    }

    /// The verifier changes in passwd's own transaction: a login that verified the old password
    /// just before, and writes its token just after, does not bring the old verifier back; a
    /// damaged entry is dropped rather than failing the change.
    #[test]
    fn passwd_sets_the_cached_verifier_with_the_password() {
        let auth = auth_with_keycloak_gone();
        let cache = auth.client().tokens();
        auth.users()
            .add(&crate::account::acct("alice", "web"), OLD)
            .unwrap();
        let old_hash = verified_hash(&auth, "alice", OLD);
        cache
            .put(
                &crate::account::acct("alice", "web"),
                &tokens(),
                Verifier::Hash(&old_hash),
            )
            .unwrap();

        let changed = auth
            .change_password(&acct("alice", "web"), OLD, NEW)
            .unwrap();
        assert_eq!(changed.mode, PasswdMode::Queued);
        assert!(cache
            .authenticate(&crate::account::acct("alice", "web"), OLD, None)
            .unwrap()
            .is_none());
        assert!(cache
            .authenticate(&crate::account::acct("alice", "web"), NEW, None)
            .unwrap()
            .is_some());
        // The slow login's write lands now.
        cache
            .put(
                &crate::account::acct("alice", "web"),
                &tokens(),
                Verifier::Hash(&old_hash),
            )
            .unwrap();
        assert!(
            cache
                .authenticate(&crate::account::acct("alice", "web"), OLD, None)
                .unwrap()
                .is_none(),
            "the old password opens the cache again"
        );

        auth.users()
            .add(&crate::account::acct("bob", "web"), OLD)
            .unwrap();
        auth.client()
            .store()
            .token_cache
            .insert(user_key("bob", "web"), &[RECORD_VERSION, 0xff][..])
            .unwrap();
        auth.change_password(&acct("bob", "web"), OLD, NEW).unwrap();
        assert!(cache
            .entry(&crate::account::acct("bob", "web"))
            .unwrap()
            .is_none());
        verified_hash(&auth, "bob", NEW);
    }

    /// A database error settling the change passwd claimed (here: putting it back after
    /// Keycloak was not reached) must not leave it `processing` until the next restart.
    #[test]
    fn a_failed_settle_after_passwd_puts_the_change_back_to_pending() {
        let auth = auth_with_keycloak_gone();
        auth.users()
            .add(&crate::account::acct("alice", "web"), OLD)
            .unwrap();
        fail_next_transitions(1);
        let err = auth
            .change_password(&acct("alice", "web"), OLD, NEW)
            .expect_err("the failed release is reported");
        assert!(err.to_string().contains("no space left"), "{err}");
        verified_hash(&auth, "alice", NEW);
        let queue = auth.client().queue();
        let items = queue.list().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0].status,
            crate::sync_queue::SyncStatus::Pending,
            "{:?}",
            items[0]
        );
        assert!(auth.client().store().sync_inflight.is_empty());
        assert_eq!(queue.claim(10).unwrap().len(), 1, "it can be sent again");
    }
}
