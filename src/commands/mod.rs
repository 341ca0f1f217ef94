//! The two doors into the library — the command line and the control socket — and the
//! commands behind them. Each command parses nothing itself (clap or [`protocol`] did), calls
//! the library, and renders what it got.
//!
//! `run` returns the exit code; errors become one line on stderr with their cause chain, and an
//! exit code chosen by what went wrong: 2 for bad input or config, 3 for everything else.
//!
//! # Layout
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | [`run`], [`execute`] (a request → its handler), [`answer`], exit codes |
//! | [`protocol`] | requests and answers; every default and range, for both doors |
//! | `gather.rs`, `input.rs` | command-line arguments and stdin → a request |
//! | `render.rs` | what the views share: JSON printing, the time format |
//! | `status.rs` `diagnostics.rs` `sync.rs` `cleanup.rs` `tokens.rs` `verify.rs` `users.rs` `sessions.rs` `metrics.rs` `start.rs` | one verb family each: handler and typed `--json` view |
//! | `server.rs`, `forward.rs` | the socket's server and client |
//!
//! A new command is a clap variant in `cli.rs`, a [`Request`] variant (and its `op` name) in
//! [`protocol`], an arm in `gather.rs` and one in [`execute`], and its handler and view in its
//! family's file.

mod cleanup;
pub mod cli;
mod diagnostics;
mod forward;
mod gather;
mod input;
mod metrics;
pub mod protocol;
mod render;
mod server;
mod sessions;
mod start;
mod status;
mod sync;
mod tokens;
mod users;
mod verify;

use crate::auth::Auth;
use crate::auth::{LoginError, PasswdError};
use crate::client::ResilientClient;
use crate::clock::SystemClock;
use crate::config::{Config, ConfigError};
use crate::local_users::UserError;
use crate::store::Store;
use crate::sync_queue::QueueError;
use anyhow::Context;
use cli::{Cli, Command};
use protocol::{Answer, Envelope, Format, Request, Who};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

pub use input::InputError;
pub use server::SOCKET_FILE;

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

/// Where a command writes — stdout and stderr, or buffers when the service answers a request —
/// and whether it should wrap up early.
pub struct Io<'a> {
    /// The command's output.
    pub out: &'a mut dyn Write,
    /// Refusal reasons.
    pub err: &'a mut dyn Write,
    /// True once the service running the command is shutting down: a long command (a sync
    /// cycle) stops between items. Always false for a direct run.
    pub stopping: &'a dyn Fn() -> bool,
}

/// Loads the config named by `--config`, with `--data-dir` applied.
pub fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let mut config = Config::load(&cli.config)?;
    if let Some(dir) = &cli.data_dir {
        config.storage_path = dir.clone();
    }
    Ok(config)
}

/// Opens the database (waiting up to `lock_timeout` for its lock) and builds the engine with
/// the local-authentication layer on top.
fn open_auth(config: Config, lock_timeout: Duration) -> anyhow::Result<Auth> {
    let path = config.storage_path.clone();
    let store = Store::open_waiting(&path, lock_timeout)
        .with_context(|| format!("opening data directory {}", path.display()))?;
    from_store(config, store)
}

fn from_store(config: Config, store: Store) -> anyhow::Result<Auth> {
    let path = config.storage_path.clone();
    let client = ResilientClient::with_parts(config, Arc::new(store), Arc::new(SystemClock))
        .with_context(|| format!("opening data directory {}", path.display()))?;
    Ok(Auth::new(client))
}

/// Runs the parsed command; returns the exit code. A one-shot command runs here when it can
/// open the database, or is sent to the running service that holds it.
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<u8> {
    let config = load_config(&cli)?;
    let json = cli.json;
    let lock_timeout = Duration::from_secs_f64(cli.lock_timeout);
    let request = match cli.command {
        Command::Test => {
            crate::store::lock::set_holder_label("test");
            return diagnostics::test(&config, json, out);
        }
        Command::Start => {
            crate::store::lock::set_holder_label("start");
            return start::start(config, lock_timeout, out);
        }
        other => match gather::gather(other)? {
            Some(request) => request,
            // gather answers None only for the two handled above.
            None => return Ok(EXIT_OK),
        },
    };
    crate::store::lock::set_holder_label(request.op());
    let deadline = std::time::Instant::now() + lock_timeout;
    let format = if json { Format::Json } else { Format::Text };
    let envelope = Envelope { request, format };
    loop {
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        match forward::open_or_connect(config.clone(), wait)? {
            forward::Target::Local(auth) => {
                let mut io = Io {
                    out,
                    err,
                    stopping: &|| false,
                };
                return execute(envelope.request, &auth, json, &mut io);
            }
            forward::Target::Service(conn) => {
                let timeout = forward::answer_timeout(&envelope.request, &config);
                match forward::send(conn, &envelope, timeout, out, err)? {
                    forward::Sent::Answered(code) => return Ok(code),
                    // The service is busy or stopping and did not run it: try again (it, or
                    // the next holder of the database) until the wait is over.
                    forward::Sent::NotRun(why) if std::time::Instant::now() >= deadline => {
                        return Err(anyhow::anyhow!(
                            "{why} (tried for {:.1}s; wait longer with --lock-timeout)",
                            lock_timeout.as_secs_f64()
                        ));
                    }
                    forward::Sent::NotRun(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

/// Runs a request against an open engine, writing what the command line would print. The
/// request is checked first ([`Request::check`]), whichever door it came through.
pub fn execute(request: Request, auth: &Auth, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    request.check()?;
    let client = auth.client();
    if let Some(package) = request.package_to_check() {
        client.config().check_package(package).map_err(InputError)?;
    }
    let who = |user, package| Who { user, package };
    match request {
        Request::Status {} => status::status(auth, json, io),
        Request::SyncNow { batch_size } => sync::sync_now(client, batch_size, json, io),
        Request::Cleanup {
            token_hours,
            sync_days,
            failed_days,
        } => {
            let ages = crate::cleanup::Ages {
                token_hours,
                sync_days,
                failed_days,
            };
            cleanup::cleanup(auth, ages, json, io)
        }
        Request::Authenticate {
            user,
            package,
            password,
        } => tokens::authenticate(client, &who(user, package), &password, json, io),
        Request::CachedToken { user, package } => {
            tokens::cached_token(client, &who(user, package), json, io)
        }
        Request::Refresh { user, package } => {
            tokens::refresh(client, &who(user, package), json, io)
        }
        Request::QueueSync {
            user,
            package,
            sync_type,
            data,
            priority,
        } => {
            let who = who(user, package);
            sync::queue_sync(client, &who, &sync_type, &data, priority, json, io)
        }
        Request::Queue { limit, after } => {
            sync::queue(client, limit as usize, after.as_deref(), json, io)
        }
        Request::Login {
            user,
            package,
            password,
        } => sessions::login(auth, &who(user, package), &password, json, io),
        Request::Passwd {
            user,
            package,
            old_password,
            new_password,
        } => {
            let who = who(user, package);
            users::passwd(auth, &who, &old_password, &new_password, json, io)
        }
        Request::UserAdd {
            user,
            package,
            password,
        } => users::user_add(auth, &who(user, package), &password, io),
        Request::UserList {} => users::user_list(auth, json, io),
        Request::UserDisable { user, package } => {
            users::user_disable(auth, &who(user, package), io)
        }
        Request::UserEnable { user, package } => users::user_enable(auth, &who(user, package), io),
        Request::UserUnlock { user, package } => users::user_unlock(auth, &who(user, package), io),
        Request::UserRemove { user, package } => users::user_remove(auth, &who(user, package), io),
        Request::UserImport { file } => users::user_import(auth, &file, json, io),
        Request::SessionShow { session_id } => sessions::session_show(auth, session_id, json, io),
        Request::Logout { session_id } => sessions::logout(auth, session_id, json, io),
        Request::Metrics { textfile } => metrics::metrics(auth, textfile.as_deref(), io),
        Request::VerifyToken { token } => verify::verify_token(auth, &token, json, io),
    }
}

/// Runs a request and captures its outcome as an [`Answer`]: what [`execute`] printed, and
/// an error as the binary would print it (`error: …` and its exit code).
pub fn answer(
    request: Request,
    format: Format,
    auth: &Auth,
    stopping: &dyn Fn() -> bool,
) -> Answer {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let json = format == Format::Json;
    let (outcome, logged) = crate::logs::capture(|| {
        let mut io = Io {
            out: &mut out,
            err: &mut err,
            stopping,
        };
        execute(request, auth, json, &mut io)
    });
    // As in a direct run: log lines as they came, then the refusal or error line. Writing to
    // a Vec cannot fail.
    let mut err = [logged.into_bytes(), err].concat();
    let exit = match outcome {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "error: {e:#}");
            exit_code_for(&e)
        }
    };
    let stdout = String::from_utf8_lossy(&out).into_owned();
    let result = if json {
        serde_json::from_str(&stdout).ok()
    } else {
        None
    };
    Answer {
        exit,
        stdout,
        stderr: String::from_utf8_lossy(&err).into_owned(),
        result,
        not_run: false,
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
