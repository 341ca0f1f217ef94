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
//! | `status.rs` `diagnostics.rs` `sync.rs` `cleanup.rs` `tokens.rs` `verify.rs` `users.rs` `sessions.rs` `metrics.rs` `start.rs` `backup.rs` | one verb family each: handler and typed `--json` view |
//! | `manual.rs` | `completions` and `man`, generated from the clap definition |
//! | `one_shot.rs` | a command run on the database it opened: `login` and `reconcile` let go of it for their Keycloak calls, the others serve the socket meanwhile; `probe` |
//! | `server.rs`, `slots.rs`, `forward.rs` | the socket: binding it and its workers; its connections; its client |
//! | `access.rs` | which ops a socket caller may run, from its peer credentials |
//!
//! A new command is a clap variant in `cli.rs`, a [`Request`] variant (and its `op` name) in
//! [`protocol`], an arm in `gather.rs` and one in [`execute`], and its handler and view in its
//! family's file.

mod access;
mod backup;
mod cleanup;
pub mod cli;
mod diagnostics;
mod forward;
mod gather;
mod input;
mod manual;
mod metrics;
mod one_shot;
pub mod protocol;
mod queue_item;
mod reconcile;
mod render;
mod server;
mod sessions;
mod signals;
mod slots;
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
use protocol::{Answer, Envelope, Format, Request};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::config::SOCKET_FILE;
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

/// Where the configuration comes from: `--config`, with `--data-dir` and `--socket` applied
/// over it. Kept by `start`, which loads it again on SIGHUP.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    file: PathBuf,
    data_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
}

impl ConfigSource {
    /// The command-line options that name this source, for a command started from this one.
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args = vec!["--config".into(), self.file.clone().into_os_string()];
        if let Some(dir) = &self.data_dir {
            args.extend(["--data-dir".into(), dir.clone().into_os_string()]);
        }
        if let Some(socket) = &self.socket {
            args.extend(["--socket".into(), socket.clone().into_os_string()]);
        }
        args
    }

    /// The source the command line names.
    pub fn of(cli: &Cli) -> ConfigSource {
        ConfigSource {
            file: cli.config.clone(),
            data_dir: cli.data_dir.clone(),
            socket: cli.socket.clone().filter(|s| !s.as_os_str().is_empty()),
        }
    }

    /// Reads the file (and the secrets the environment points at) and applies the overrides.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file or the key.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(&self.file)?;
        if let Some(dir) = &self.data_dir {
            config.storage_path = dir.clone();
        }
        if let Some(socket) = &self.socket {
            config.service.socket.path = Some(socket.clone());
        }
        Ok(config)
    }
}

/// Loads the config named by `--config`, with `--data-dir` and `--socket` applied.
pub fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    ConfigSource::of(cli).load()
}

/// Opens the database (waiting up to `lock_timeout` for its lock) and builds the engine with
/// the local-authentication layer on top.
fn open_auth(config: Config, lock_timeout: Duration) -> anyhow::Result<Auth> {
    let path = config.storage_path.clone();
    let store =
        Store::open_waiting(&path, lock_timeout).map_err(|e| opening_failed(e, &path, ""))?;
    from_store(config, store)
}

/// A failed open as one line: "opening data directory X: …" (and `also`), unless the error
/// names the directory itself (damaged, locked) and there is nothing to add: said once.
fn opening_failed(
    e: crate::store::StoreError,
    path: &std::path::Path,
    also: &str,
) -> anyhow::Error {
    let named = e.to_string().contains(&path.display().to_string());
    let e = anyhow::Error::new(e);
    if named && also.is_empty() {
        e
    } else {
        e.context(format!("opening data directory {}{also}", path.display()))
    }
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
    // Generated from the command line's definition: no config, no database.
    match cli.command {
        Command::Completions { shell } => return manual::completions(shell, out),
        Command::Man => return manual::man(out),
        _ => {}
    }
    let source = ConfigSource::of(&cli);
    let config = source.load()?;
    let json = cli.json;
    let lock_timeout = Duration::from_secs_f64(cli.lock_timeout);
    let request = match cli.command {
        Command::Test => {
            crate::store::lock::set_holder_label("test");
            return diagnostics::test(&config, json, out);
        }
        Command::Start => {
            crate::store::lock::set_holder_label("start");
            return start::start(config, source, lock_timeout, json, out);
        }
        Command::Restore { file } => {
            crate::store::lock::set_holder_label("restore");
            return backup::restore(&config, &file, lock_timeout, json, out);
        }
        Command::Probe => {
            crate::store::lock::set_holder_label("probe");
            return one_shot::probe(config, lock_timeout, json, out);
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
        let refuse = |config: &Config| {
            refuse_without_database(&envelope.request, config)?;
            // The login runs here: its verify's memory is made ready while the database opens.
            if matches!(envelope.request, Request::Login { .. }) {
                crate::password::warm_up();
            }
            Ok(())
        };
        match forward::open_or_connect(config.clone(), wait, &refuse)? {
            forward::Target::Local(auth) => {
                let mut io = Io {
                    out,
                    err,
                    stopping: &|| false,
                };
                return one_shot::run(envelope.request, auth, &source, lock_timeout, json, &mut io);
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

/// True for the commands that only read what is stored, or change what is already there
/// (a user, a session, a queued item): on a data directory without a database they have
/// nothing to work on, and creating an empty one (with a new `secret.key`) would only hide a
/// wrong `--data-dir` or `storage.path`. The others may be the first command of a new
/// installation: `start`, `user add`, `user import`, `queue-sync`, `login` (a user known only
/// to Keycloak is provisioned), `authenticate` (caches a token). `test` never opens the
/// database.
fn needs_existing_database(request: &Request) -> bool {
    match request {
        Request::Status {}
        | Request::Reconcile {}
        | Request::Queue { .. }
        | Request::QueueShow { .. }
        | Request::QueueRetry { .. }
        | Request::QueueRemove { .. }
        | Request::Metrics { .. }
        | Request::Backup { .. }
        | Request::CachedToken { .. }
        | Request::SessionShow { .. }
        | Request::UserList {}
        | Request::SyncNow { .. }
        | Request::Cleanup { .. }
        | Request::Refresh { .. }
        | Request::Logout { .. }
        | Request::Passwd { .. }
        | Request::UserDisable { .. }
        | Request::UserEnable { .. }
        | Request::UserUnlock { .. }
        | Request::UserRemove { .. } => true,
        Request::Authenticate { .. }
        | Request::QueueSync { .. }
        | Request::QueueSyncMany { .. }
        | Request::Login { .. }
        | Request::UserAdd { .. }
        | Request::UserImport { .. }
        | Request::VerifyToken { .. } => false,
    }
}

/// Refuses (exit 3, nothing created) a command of [`needs_existing_database`] when the data
/// directory holds no database, saying where it looked.
fn refuse_without_database(request: &Request, config: &Config) -> anyhow::Result<()> {
    let dir = &config.storage_path;
    if !needs_existing_database(request) || crate::store::exists(dir) {
        return Ok(());
    }
    let op = request.op();
    let command = match op.split_once('-') {
        Some((family @ ("user" | "session"), verb)) => format!("{family} {verb}"),
        _ => op.to_string(),
    };
    Err(anyhow::anyhow!(
        "no database in {} (storage.path of {}, or --data-dir): `{command}` works on an existing one and does not create it; check the path, or create it with `user add`, `user import` or `start`",
        dir.display(),
        config.source.display()
    ))
}

/// Runs a request against an open engine, writing what the command line would print. The
/// request is checked first (as [`Request::check`] does: its ranges, then its account),
/// whichever door it came through.
pub fn execute(request: Request, auth: &Auth, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    request.check_ranges()?;
    // The account is made here, once: its handler takes it as it is.
    let account = request.account()?;
    let client = auth.client();
    if let Some(package) = request.package_to_check() {
        client.config().check_package(package).map_err(InputError)?;
    }
    let op = request.op();
    // Every request that names a user and package has an account (see `Request::who`).
    let account = || {
        account
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("{op} request without a user and package"))
    };
    match request {
        Request::Status {} => status::status(auth, json, io),
        Request::Reconcile {} => reconcile::reconcile(auth, json, io),
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
        Request::Authenticate { password, .. } => {
            tokens::authenticate(client, account()?, &password, json, io)
        }
        Request::CachedToken { .. } => tokens::cached_token(client, account()?, json, io),
        Request::Refresh { .. } => tokens::refresh(client, account()?, json, io),
        Request::QueueSync {
            sync_type,
            data,
            priority,
            ..
        } => sync::queue_sync(client, account()?, &sync_type, &data, priority, json, io),
        Request::QueueSyncMany { changes } => sync::queue_sync_many(client, changes, json, io),
        Request::Queue { limit, after } => {
            sync::queue(client, limit as usize, after.as_deref(), json, io)
        }
        Request::QueueShow { sync_id } => queue_item::show(client, sync_id, json, io),
        Request::QueueRetry {
            sync_id,
            failed,
            sync_type,
            user,
        } => {
            let selection =
                protocol::retry_selection(sync_id, failed, sync_type.as_deref(), user.as_deref())?;
            queue_item::retry(client, selection, json, io)
        }
        Request::QueueRemove { sync_id } => queue_item::remove(client, sync_id, json, io),
        Request::Login { password, .. } => sessions::login(auth, account()?, &password, json, io),
        Request::Passwd {
            old_password,
            new_password,
            ..
        } => users::passwd(auth, account()?, &old_password, &new_password, json, io),
        Request::UserAdd {
            password,
            email,
            first_name,
            last_name,
            ..
        } => {
            let profile = crate::auth::Profile {
                email,
                first_name,
                last_name,
            };
            users::user_add(auth, account()?, &password, profile, json, io)
        }
        Request::UserList {} => users::user_list(auth, json, io),
        Request::UserDisable { .. } => users::user_disable(auth, account()?, json, io),
        Request::UserEnable { .. } => users::user_enable(auth, account()?, json, io),
        Request::UserUnlock { .. } => users::user_unlock(auth, account()?, json, io),
        Request::UserRemove { in_keycloak, .. } => {
            users::user_remove(auth, account()?, in_keycloak, json, io)
        }
        Request::UserImport { file } => users::user_import(auth, &file, json, io),
        Request::SessionShow { session_id } => sessions::session_show(auth, session_id, json, io),
        Request::Logout { session_id } => sessions::logout(auth, session_id, json, io),
        Request::Metrics { textfile } => metrics::metrics(auth, textfile.as_deref(), io),
        Request::VerifyToken { token } => verify::verify_token(auth, &token, json, io),
        Request::Backup { file } => backup::backup(auth, &file, json, io),
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

/// The exit code for an error: 2 when the user's input or config was wrong, 1 for an action
/// the queue refuses in the item's state, 3 otherwise.
pub fn exit_code_for(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<ConfigError>() || cause.is::<InputError>() {
            return EXIT_INPUT;
        }
        let mut queue_error = cause.downcast_ref::<QueueError>().or_else(|| {
            match cause.downcast_ref::<crate::auth::UserChangeError>() {
                Some(crate::auth::UserChangeError::Queue(q)) => Some(q),
                _ => None,
            }
        });
        // A batch's refusal is the refusal of its change (boxed: the chain cannot see it).
        while let Some(QueueError::InChange { source, .. }) = queue_error {
            queue_error = Some(source);
        }
        if let Some(q) = queue_error {
            match q {
                QueueError::UnknownType(_)
                | QueueError::BadData { .. }
                | QueueError::BadInput(_)
                | QueueError::NotFound(_) => return EXIT_INPUT,
                QueueError::Refused(_) => return EXIT_REFUSED,
                _ => {}
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
            })
            .or_else(
                || match cause.downcast_ref::<crate::auth::UserChangeError>() {
                    Some(crate::auth::UserChangeError::User(u)) => Some(u),
                    _ => None,
                },
            );
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
