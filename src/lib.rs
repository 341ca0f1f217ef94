//! # keycloak-resilient
//!
//! Keeps a web application's logins working when Keycloak is down or slow, and brings Keycloak
//! back in line when it returns. Local password authentication is primary and always works;
//! Keycloak is used best-effort behind a circuit breaker; good Keycloak tokens are cached for a
//! grace period; changes made while Keycloak is away wait in a durable, priority-ordered queue.
//!
//! # Layout
//!
//! | module | job |
//! |---|---|
//! | [`account`] | [`Account`]: a user in a package, the name rule applied once |
//! | [`config`] | `config.yaml` → validated [`Config`]; presets; secrets from env |
//! | [`store`] | the sled database: trees, record codec, sealing of secrets at rest, backups ([`store::backup`]); [`store::meta`] names every meta key and counter |
//! | [`clock`] | time as a value, so tests can move it |
//! | [`backoff`] | retry delays (pure) |
//! | [`password`] | password hashes (argon2id; pbkdf2 and bcrypt accepted on import) |
//! | [`lockout`] | failed-login limits (pure) |
//! | [`central`] | what Keycloak's answer about a user means for the local store (pure) |
//! | [`keycloak`] | Keycloak HTTP calls, every answer classified; [`keycloak::breaker`] the circuit breaker (pure); [`keycloak::health`] the health probe's record; [`keycloak::guard`] the breaker-guarded caller, the one way to call Keycloak |
//! | [`token_cache`] | last good tokens per (user, package) with an offline verifier |
//! | [`sync_queue`] | the durable, ordered queue of changes for Keycloak; a claimed item is a guard settled one way |
//! | [`local_users`] | the local user store |
//! | [`sessions`], [`auth_events`] | login sessions and logins counted per minute |
//! | [`replay`] | one sync cycle: queue → Keycloak, and the exactly-once apply `passwd` shares |
//! | [`client`] | [`ResilientClient`], the front door with the original API |
//! | [`auth`] | login and change-password: local first, Keycloak as enhancement |
//! | [`overview`] | the status picture: engine status plus sessions, logins, locks |
//! | [`cleanup`] | removing aged-out tokens, sync items, sessions, log entries |
//! | [`diagnostics`] | the `test` checks as data |
//! | [`metrics`] | Prometheus text exposition |
//! | [`logs`] | logging, and the warnings of a socket request captured for its caller |
//! | [`verify`] | `verify-token`: a token of the realm checked for other applications, from the kept realm keys |
//! | [`reconcile`] | the local accounts brought in line with Keycloak's user list (disabled, deleted, re-enabled) |
//! | [`refresh_ahead`] | `start` refreshing cached tokens of live sessions before they expire |
//! | [`service`] | the `start` loop |
//! | [`commands`] | the two doors: the command line ([`commands::cli`], clap only) and the control socket (protocol, server, client); one file per verb family |
//!
//! Dependencies point one way; each line uses only the lines below it:
//!
//! ```text
//! commands → service · reconcile · refresh_ahead · verify · metrics · diagnostics · overview
//!     · cleanup
//!   → auth → client → replay
//!   → keycloak::guard · sync_queue · token_cache · local_users · sessions · auth_events
//!   → keycloak (http) · keycloak::breaker · keycloak::health · password · lockout · backoff
//!     · central
//!   → store (meta, codec, seal, lock) · account · config · clock
//! ```

pub mod account;
pub mod auth;
pub mod auth_events;
pub mod backoff;
pub mod central;
pub mod cleanup;
pub mod client;
pub mod clock;
pub mod commands;
pub mod config;
pub mod diagnostics;
pub mod keycloak;
pub mod local_users;
pub mod lockout;
pub mod logs;
pub mod metrics;
pub mod overview;
pub mod password;
pub mod reconcile;
pub mod refresh_ahead;
pub mod replay;
pub mod service;
pub mod sessions;
pub mod store;
pub mod sync_queue;
pub mod token_cache;
pub mod verify;

pub use account::{Account, NameError};
pub use auth::{Auth, LoginResult, PasswdMode, PasswdResult};
pub use client::{AuthError, Mode, QueuedChange, ResilientClient, Status};
pub use config::Config;
pub use sync_queue::SyncQueue;
pub use token_cache::AuthToken;
