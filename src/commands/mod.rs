//! The commands behind the CLI: each parses nothing itself (clap did), calls the library, prints.
//!
//! `run` returns the exit code; errors become one line on stderr with their cause chain, and an
//! exit code chosen by what went wrong: 2 for bad input or config, 3 for everything else.

mod engine;
mod forward;
mod input;
mod local;
mod server;

use crate::auth::Auth;
use crate::auth::{LoginError, PasswdError};
use crate::cli::{Cli, Command, SessionCommand, UserCommand};
use crate::client::ResilientClient;
use crate::clock::SystemClock;
use crate::config::{Config, ConfigError};
use crate::local_users::UserError;
use crate::protocol::{Answer, Envelope, Format, Request, Who};
use crate::store::Store;
use crate::sync_queue::QueueError;
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
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
            return engine::test(&config, json, out);
        }
        Command::Start => {
            crate::store::lock::set_holder_label("start");
            return engine::start(config, lock_timeout, out);
        }
        other => gather(other)?,
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

/// Turns a parsed command line into a request: reads what the command reads from stdin (or
/// a prompt) and makes paths absolute, so that the request means the same wherever it runs.
/// Done before the database is opened, so that bad input changes nothing.
fn gather(command: Command) -> anyhow::Result<Request> {
    use crate::cli::UserArgs;
    // A request about a user, and one that also carries the password read from stdin.
    let named = |w: UserArgs, make: fn(String, String) -> Request| make(w.user, w.package);
    let with_password =
        |w: UserArgs, make: fn(String, String, String) -> Request| -> Result<Request, InputError> {
            let password = input::passwords(&["password"])?.remove(0);
            Ok(make(w.user, w.package, password))
        };
    Ok(match command {
        Command::Status => Request::Status {},
        Command::SyncNow { batch_size } => Request::SyncNow { batch_size },
        Command::Cleanup {
            token_hours,
            sync_days,
            failed_days,
        } => Request::Cleanup {
            token_hours,
            sync_days,
            failed_days,
        },
        Command::Authenticate(w) => {
            with_password(w, |user, package, password| Request::Authenticate {
                user,
                package,
                password,
            })?
        }
        Command::CachedToken(w) => named(w, |user, package| Request::CachedToken { user, package }),
        Command::Refresh(w) => named(w, |user, package| Request::Refresh { user, package }),
        Command::QueueSync {
            who: w,
            sync_type,
            priority,
        } => {
            // Check the type before reading stdin, so a typo is reported as such.
            let parsed: crate::sync_queue::SyncType = sync_type.parse()?;
            // Checked whole here (size, duplicate keys, the type's rules), before the database
            // is opened, so bad input changes nothing.
            // The bytes are parsed once, here; the request carries the data on as JSON (it may
            // be forwarded to the socket server), where the client parses it into sync data.
            let text = input::sync_data()?;
            let data = crate::sync_queue::SyncData::from_json_text(parsed, &text)?;
            Request::QueueSync {
                user: w.user,
                package: w.package,
                sync_type,
                data: data.to_json(),
                priority,
            }
        }
        Command::Queue { limit, after } => {
            // Checked here, so a typo is reported before anything is opened.
            if let Some(cursor) = &after {
                cursor
                    .parse::<crate::sync_queue::Cursor>()
                    .context("--after")?;
            }
            Request::Queue { limit, after }
        }
        Command::Login(w) => with_password(w, |user, package, password| Request::Login {
            user,
            package,
            password,
        })?,
        Command::Passwd(w) => {
            let mut pws = input::passwords(&["old password", "new password"])?;
            let new_password = pws.remove(1);
            let old_password = pws.remove(0);
            Request::Passwd {
                user: w.user,
                package: w.package,
                old_password,
                new_password,
            }
        }
        Command::User(UserCommand::Add(w)) => {
            with_password(w, |user, package, password| Request::UserAdd {
                user,
                package,
                password,
            })?
        }
        Command::User(UserCommand::List) => Request::UserList {},
        Command::User(UserCommand::Disable(w)) => {
            named(w, |user, package| Request::UserDisable { user, package })
        }
        Command::User(UserCommand::Enable(w)) => {
            named(w, |user, package| Request::UserEnable { user, package })
        }
        Command::User(UserCommand::Unlock(w)) => {
            named(w, |user, package| Request::UserUnlock { user, package })
        }
        Command::User(UserCommand::Remove(w)) => {
            named(w, |user, package| Request::UserRemove { user, package })
        }
        Command::User(UserCommand::Import { file }) => Request::UserImport {
            file: absolute(&file)?,
        },
        Command::Session(SessionCommand::Show { id }) => Request::SessionShow {
            session_id: input::session_id(&id)?,
        },
        Command::Logout { id } => Request::Logout {
            session_id: input::session_id(&id)?,
        },
        Command::Metrics { textfile } => Request::Metrics {
            textfile: textfile.as_deref().map(absolute).transpose()?,
        },
        Command::Test | Command::Start => {
            unreachable!("test and start run before gather")
        }
    })
}

fn absolute(path: &Path) -> Result<PathBuf, InputError> {
    std::path::absolute(path).map_err(|e| InputError(format!("{}: {e}", path.display())))
}

/// Runs a request against an open engine, writing what the command line would print.
pub fn execute(request: Request, auth: &Auth, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    let client = auth.client();
    if let Some((user, package)) = request.who() {
        crate::store::check_name("--user", user).map_err(InputError)?;
        crate::store::check_name("--package", package).map_err(InputError)?;
    }
    if let Some(package) = request.package_to_check() {
        check_package(client.config(), package)?;
    }
    match request {
        Request::Status {} => engine::status(auth, json, io),
        Request::SyncNow { batch_size } => engine::sync_now(client, batch_size, json, io),
        Request::Cleanup {
            token_hours,
            sync_days,
            failed_days,
        } => engine::cleanup(
            auth,
            engine::CleanupAges {
                token_hours,
                sync_days,
                failed_days,
            },
            json,
            io,
        ),
        Request::Authenticate {
            user,
            package,
            password,
        } => engine::authenticate(client, &Who { user, package }, &password, json, io),
        Request::CachedToken { user, package } => {
            engine::cached_token(client, &Who { user, package }, json, io)
        }
        Request::Refresh { user, package } => {
            engine::refresh(client, &Who { user, package }, json, io)
        }
        Request::QueueSync {
            user,
            package,
            sync_type,
            data,
            priority,
        } => engine::queue_sync(
            client,
            &Who { user, package },
            &sync_type,
            &data,
            priority,
            json,
            io,
        ),
        Request::Queue { limit, after } => {
            engine::queue(client, limit as usize, after.as_deref(), json, io)
        }
        Request::Login {
            user,
            package,
            password,
        } => local::login(auth, &Who { user, package }, &password, json, io),
        Request::Passwd {
            user,
            package,
            old_password,
            new_password,
        } => local::passwd(
            auth,
            &Who { user, package },
            &old_password,
            &new_password,
            json,
            io,
        ),
        Request::UserAdd {
            user,
            package,
            password,
        } => local::user_add(auth, &Who { user, package }, &password, io),
        Request::UserList {} => local::user_list(auth, json, io),
        Request::UserDisable { user, package } => {
            local::user_disable(auth, &Who { user, package }, io)
        }
        Request::UserEnable { user, package } => {
            local::user_enable(auth, &Who { user, package }, io)
        }
        Request::UserUnlock { user, package } => {
            local::user_unlock(auth, &Who { user, package }, io)
        }
        Request::UserRemove { user, package } => {
            local::user_remove(auth, &Who { user, package }, io)
        }
        Request::UserImport { file } => local::user_import(auth, &file, json, io),
        Request::SessionShow { session_id } => local::session_show(auth, session_id, json, io),
        Request::Logout { session_id } => local::logout(auth, session_id, json, io),
        Request::Metrics { textfile } => local::metrics(auth, textfile.as_deref(), io),
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

/// `--package` by the name rule and against the config's packages (exit 2 with a message
/// naming it and the configured ones).
fn check_package(config: &Config, package: &str) -> Result<(), InputError> {
    crate::store::check_name("--package", package).map_err(InputError)?;
    config.check_package(package).map_err(InputError)
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
