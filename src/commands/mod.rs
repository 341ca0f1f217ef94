//! The commands behind the CLI: each parses nothing itself (clap did), calls the library, prints.
//!
//! `run` returns the exit code; errors become one line on stderr with their cause chain, and an
//! exit code chosen by what went wrong: 2 for bad input or config, 3 for everything else.

mod engine;
mod input;
mod local;

use crate::auth::Auth;
use crate::auth::{LoginError, PasswdError};
use crate::cli::{Cli, Command};
use crate::client::ResilientClient;
use crate::config::{Config, ConfigError};
use crate::local_users::UserError;
use crate::sync_queue::QueueError;
use anyhow::Context;
use std::io::Write;

pub use input::InputError;

/// Exit code: done.
pub const EXIT_OK: u8 = 0;
/// Exit code: refused.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: bad input.
pub const EXIT_INPUT: u8 = 2;
/// Exit code: runtime failure.
pub const EXIT_RUNTIME: u8 = 3;
/// Exit code: local password changed, Keycloak refused it.
pub const EXIT_PARTIAL: u8 = 4;

/// Loads the config named by `--config`, with `--data-dir` applied.
pub fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let mut config = Config::load(&cli.config)?;
    if let Some(dir) = &cli.data_dir {
        config.storage_path = dir.clone();
    }
    Ok(config)
}

/// Opens the database and builds the engine.
fn open_client(config: Config) -> anyhow::Result<ResilientClient> {
    let path = config.storage_path.clone();
    ResilientClient::new(config)
        .with_context(|| format!("opening data directory {}", path.display()))
}

/// [`open_client`] with the local-authentication layer on top.
fn open_auth(config: Config) -> anyhow::Result<Auth> {
    Ok(Auth::new(open_client(config)?))
}

/// Runs the parsed command; returns the exit code.
pub fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<u8> {
    let config = load_config(&cli)?;
    let json = cli.json;
    match cli.command {
        Command::Status => engine::status(config, json, out),
        Command::Test => engine::test(&config, json, out),
        Command::SyncNow { batch_size } => engine::sync_now(config, batch_size, json, out),
        Command::Cleanup {
            token_hours,
            sync_days,
            failed_days,
        } => engine::cleanup(
            config,
            engine::CleanupAges {
                token_hours,
                sync_days,
                failed_days,
            },
            json,
            out,
        ),
        Command::Authenticate(who) => engine::authenticate(config, &who, json, out),
        Command::CachedToken(who) => engine::cached_token(config, &who, json, out),
        Command::Refresh(who) => engine::refresh(config, &who, json, out),
        Command::QueueSync {
            who,
            sync_type,
            priority,
        } => engine::queue_sync(config, &who, &sync_type, priority, json, out),
        Command::Queue { limit, after } => {
            engine::queue(config, limit as usize, after.as_deref(), json, out)
        }
        Command::Start => engine::start(config, out),
        Command::Login(who) => local::login(config, &who, json, out),
        Command::Passwd(who) => local::passwd(config, &who, json, out),
        Command::User(cmd) => local::user(config, cmd, json, out),
        Command::Session(crate::cli::SessionCommand::Show { id }) => {
            local::session_show(config, &id, json, out)
        }
        Command::Logout { id } => local::logout(config, &id, json, out),
        Command::Metrics { textfile } => local::metrics(config, textfile.as_deref(), out),
    }
}

/// The exit code for an error: 2 when the user's input or config was wrong, 3 otherwise.
pub fn exit_code_for(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<ConfigError>() || cause.is::<InputError>() {
            return EXIT_INPUT;
        }
        if let Some(q) = cause.downcast_ref::<QueueError>() {
            if matches!(
                q,
                QueueError::UnknownType(_) | QueueError::BadData { .. } | QueueError::BadInput(_)
            ) {
                return EXIT_INPUT;
            }
        }
        // A transparent wrapper hides its inner error from the chain: look inside.
        let user_error = cause
            .downcast_ref::<UserError>()
            .or_else(|| match cause.downcast_ref::<LoginError>() {
                Some(LoginError::User(u)) => Some(u),
                _ => None,
            })
            .or_else(|| match cause.downcast_ref::<PasswdError>() {
                Some(PasswdError::User(u)) => Some(u),
                _ => None,
            });
        if let Some(u) = user_error {
            if matches!(
                u,
                UserError::Exists { .. } | UserError::NotFound { .. } | UserError::BadInput(_)
            ) {
                return EXIT_INPUT;
            }
        }
    }
    EXIT_RUNTIME
}

/// Prints `value` as pretty JSON.
fn print_json(out: &mut dyn Write, value: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// RFC 3339 with seconds, UTC.
fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
