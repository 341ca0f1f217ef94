//! The command line, as clap definitions. `--help` is the manual: every flag says what it does.

//!
//! Defaults and ranges of the numbers are not written here: they come from
//! [`crate::commands::protocol`], where the socket takes them too. clap parses the type only;
//! the range is checked on the request (`Request::check`), so that both doors refuse a value
//! with the same one-line message.

use super::protocol::{
    BATCH_SIZE, FAILED_DAYS, FAILED_DAYS_DEFAULT, PRIORITY, PRIORITY_DEFAULT, QUEUE_LIMIT,
    QUEUE_LIMIT_DEFAULT, SYNC_DAYS, SYNC_DAYS_DEFAULT, TOKEN_HOURS, TOKEN_HOURS_DEFAULT,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const EXIT_CODES: &str = "\
Exit codes:
  0  done (for sync-now also when Keycloak is down: nothing processed, and it says why)
  1  refused: wrong credentials, no cached token, a failed check in `test`, locked account
  2  bad input: a bad argument, bad config.yaml, bad data on stdin
  3  runtime failure: the data directory stayed locked for --lock-timeout, or is damaged;
     a secret.key that does not belong to it; no database for a command that only works on
     stored data (status, queue, user list, …: they never create one); I/O errors
  4  passwd only: the local password changed but Keycloak refused the new one

While `start` runs, every other command is served by it over its control socket
(service.socket_path, default data/control.sock; --socket): same output, same exit code.

Passwords are read from standard input (one per line) or, on a terminal, from a prompt that
does not echo. They are never accepted as arguments.
Logs go to stderr; RUST_LOG=debug|info|warn sets the level (default: info for start, warn
otherwise). Under systemd (JOURNAL_STREAM names stderr) each line starts with its journald
priority (<3> error … <7> debug). Secrets never appear in logs.";

/// Keeps logins working when Keycloak is down or slow, and brings Keycloak back in line when it
/// returns.
#[derive(Debug, Parser)]
#[command(name = "keycloak-resilient", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "./config.yaml"
    )]
    pub config: PathBuf,
    /// The sled data directory (overrides storage.path of the config file).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The control socket of the running service (overrides service.socket_path); `start`
    /// listens there, other commands send their request there.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "KEYCLOAK_RESILIENT_SOCKET"
    )]
    pub socket: Option<PathBuf>,
    /// Print data as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// How long to wait, in seconds, while another process holds the data directory (a
    /// running `start` answers at once over its socket instead).
    #[arg(long, global = true, value_name = "SECS", default_value_t = 10.0, value_parser = parse_lock_timeout)]
    pub lock_timeout: f64,
    /// How log lines on stderr look: `text` (a timestamp, the level, the module), or `json`,
    /// one object per line with `ts`, `level`, `target` and `message`, for log shippers.
    #[arg(long, global = true, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `[2026-01-01T00:00:00Z WARN  target] message`.
    Text,
    /// `{"ts": …, "level": "WARN", "target": …, "message": …}`.
    Json,
}

/// A shell `completions` can write a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash (`source <(keycloak-resilient completions bash)`).
    Bash,
    /// zsh (into a directory on `$fpath`, as `_keycloak-resilient`).
    Zsh,
    /// fish (into `~/.config/fish/completions/keycloak-resilient.fish`).
    Fish,
}

fn parse_lock_timeout(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=3600.0).contains(&v) => Ok(v),
        _ => Err("expected seconds between 0 and 3600".into()),
    }
}

/// A user in a package (application).
#[derive(Debug, Args, Clone)]
pub struct UserArgs {
    /// The username (compared case-insensitively). Names: at most 255 characters; no control,
    /// bidi or zero-width characters; none of / \ ? # %; not . or ..
    #[arg(long, value_name = "U")]
    pub user: String,
    /// The package (application) the user belongs to; one of keycloak.packages when the
    /// config lists any. Same name rule as --user.
    #[arg(long, value_name = "P")]
    pub package: String,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show availability, circuit, mode, queue and cache (probes Keycloak if the last probe is stale).
    Status,
    /// Validate the config, probe Keycloak, check the login client and the admin service account.
    Test,
    /// Ask Keycloak now through the circuit breaker (the half-open trial when it is due) and
    /// record the answer; a one-shot login starts one in the background when the trial is due.
    Probe,
    /// Run one sync cycle now (for cron).
    SyncNow {
        /// Items to process at most (default: service.batch_size).
        #[arg(long, value_name = "N", help = BATCH_SIZE.help("Items to process at most (default: service.batch_size)"))]
        batch_size: Option<u32>,
    },
    /// Compare the local accounts with Keycloak's user list: disable what Keycloak disabled or
    /// deleted, enable what it enabled again, remember Keycloak ids (for cron).
    Reconcile,
    /// Remove old cached tokens, finished and failed sync items, expired sessions.
    Cleanup {
        /// Remove cached tokens obtained more than H hours ago.
        #[arg(long, value_name = "H", default_value_t = TOKEN_HOURS_DEFAULT,
              help = TOKEN_HOURS.help("Remove cached tokens obtained more than H hours ago"))]
        token_hours: u64,
        /// Remove completed/superseded sync items finished more than D days ago.
        #[arg(long, value_name = "D", default_value_t = SYNC_DAYS_DEFAULT,
              help = SYNC_DAYS.help("Remove completed/superseded sync items finished more than D days ago"))]
        sync_days: u64,
        /// Remove failed sync items (refused by Keycloak for good; `queue` shows why) that
        /// failed more than D days ago. Kept longer than completed ones so that an operator
        /// sees them first.
        #[arg(long, value_name = "D", default_value_t = FAILED_DAYS_DEFAULT,
              help = FAILED_DAYS.help("Remove failed sync items (refused by Keycloak for good; `queue` shows why) that failed more than D days ago; kept longer than completed ones so that an operator sees them first"))]
        failed_days: u64,
    },
    /// Get a token for a user: from Keycloak, or from the cache while Keycloak is away (password on stdin).
    Authenticate(UserArgs),
    /// Show the cached token of a user, if inside the grace period.
    CachedToken(UserArgs),
    /// Exchange a user's cached refresh token for fresh tokens at Keycloak.
    Refresh(UserArgs),
    /// Queue a change for Keycloak; sync data as JSON on stdin; prints the SyncId.
    QueueSync {
        #[command(flatten)]
        /// The user and package.
        who: UserArgs,
        /// The sync type: password_change (data: {"new_password": "..."}; "password" is
        /// accepted as an alias). Data: at most 8192 bytes of JSON, no key twice; the
        /// password as for login (at most 1024 bytes, no NUL).
        #[arg(long = "type", value_name = "T")]
        sync_type: String,
        /// 1 runs first.
        #[arg(long, value_name = "N", default_value_t = PRIORITY_DEFAULT, help = PRIORITY.help("1 runs first"))]
        priority: u32,
    },
    /// Queue many changes for Keycloak at once, made durable by one flush: one JSON object
    /// per line on stdin, each with queue-sync's arguments as keys ({"user": "alice",
    /// "package": "web", "type": "password_change", "data": {"new_password": "..."},
    /// "priority": 5}; priority optional). At most 1000 changes and 960 KiB. Every change is
    /// checked before any is written: one refused (its line, or "change N of M") writes none.
    /// Prints the SyncIds in order, one per line.
    QueueSyncMany,
    /// List the sync queue, one page at a time (no secrets): pending items in queue order,
    /// then backing-off, in-flight and finished ones. Prints the counts per status and, when
    /// there is more, the `--after` value of the next page (`next` with --json). `queue show`,
    /// `retry` and `remove` act on one item.
    #[command(args_conflicts_with_subcommands = true)]
    Queue {
        /// Act on one item instead of listing.
        #[command(subcommand)]
        action: Option<QueueCommand>,
        /// Items per page.
        #[arg(long, value_name = "N", default_value_t = QUEUE_LIMIT_DEFAULT, help = QUEUE_LIMIT.help("Items per page"))]
        limit: u32,
        /// Start after this position: the `next` value printed by the previous page.
        #[arg(long, value_name = "CURSOR")]
        after: Option<String>,
    },
    /// Run the service: health probe, sync every interval and when Keycloak returns, cleanup.
    Start,
    /// Log in: local password first, then Keycloak or the cache (password on stdin); creates a session.
    Login(UserArgs),
    /// Change a password: old and new on stdin, one a line; updates Keycloak now or queues it.
    Passwd(UserArgs),
    /// Manage the local user store.
    #[command(subcommand)]
    User(UserCommand),
    /// Session operations.
    #[command(subcommand)]
    Session(SessionCommand),
    /// End a session.
    Logout {
        /// The session id, or `-` to read it from stdin (keeps it out of `ps`).
        id: String,
    },
    /// Check an access token of the realm for another application (token on stdin): valid
    /// with its user and roles (exit 0), or invalid with one reason (exit 1). Works while
    /// Keycloak is down, from the realm keys kept here.
    VerifyToken,
    /// Print Prometheus metrics, or write them for node_exporter's textfile collector.
    Metrics {
        /// Write atomically to this file instead of printing.
        #[arg(long, value_name = "PATH")]
        textfile: Option<PathBuf>,
    },
    /// Copy the database into FILE, consistently, while the service runs (through its socket)
    /// or not: every tree, sealed secrets still sealed, never the key (back up secret.key
    /// apart, once). FILE is replaced atomically if it exists (mode 0600), so cron can write
    /// dated names and rotate them.
    Backup {
        /// The backup file to write.
        file: PathBuf,
    },
    /// Put a backup back: only with the service stopped, and only into a data directory
    /// holding the secret.key the backup was made with. The database there is kept in
    /// data/before-restore-<time>/; a damaged or truncated backup is refused, changing nothing.
    Restore {
        /// The backup file to restore.
        file: PathBuf,
    },
    /// Print a shell completion script, generated from these definitions (needs no config).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the manual page (roff) for man(1), generated from these definitions (needs no
    /// config): `keycloak-resilient man > /usr/local/share/man/man1/keycloak-resilient.1`.
    Man,
}

/// `user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a local user (password on stdin); with keycloak.manage_users, in Keycloak too.
    Add {
        /// Who.
        #[command(flatten)]
        who: UserArgs,
        /// With keycloak.manage_users: the Keycloak user's email (the realm's user profile may
        /// require it, with the names, before the user can log in there).
        #[arg(long, value_name = "EMAIL")]
        email: Option<String>,
        /// With keycloak.manage_users: the Keycloak user's first name.
        #[arg(long, value_name = "NAME")]
        first_name: Option<String>,
        /// With keycloak.manage_users: the Keycloak user's last name.
        #[arg(long, value_name = "NAME")]
        last_name: Option<String>,
    },
    /// List local users.
    List,
    /// Disable a user: logins are refused; their sessions and cached token are dropped.
    Disable(UserArgs),
    /// Enable a user again.
    Enable(UserArgs),
    /// Lift a lock left by failed logins before it expires.
    Unlock(UserArgs),
    /// Remove a user, their sessions and cached token.
    Remove {
        /// Who.
        #[command(flatten)]
        who: UserArgs,
        /// Delete the user from Keycloak too (needs keycloak.manage_users: true).
        #[arg(long)]
        in_keycloak: bool,
    },
    /// Import users from JSON lines (.jsonl/.ndjson/.json) or CSV (.csv) with existing hashes.
    Import {
        /// The file to import.
        file: PathBuf,
    },
}

/// `queue …`: what an operator does to an item once the cause of a failure is fixed.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Show one item: everything `queue` lists and the reason it failed, never its data.
    Show {
        /// The SyncId (`queue` lists them).
        id: String,
    },
    /// Send an item again at the next sync: a failed one goes back to pending (its secret
    /// was kept sealed), one backing off becomes due now. Refused for an item in flight, one
    /// already applied, or one older than a change of its user already applied (it would undo
    /// that one).
    Retry {
        /// The SyncId.
        #[arg(required_unless_present = "failed")]
        id: Option<String>,
        /// Every failed item instead (oldest first; narrowed by --type and --user).
        #[arg(long, conflicts_with = "id")]
        failed: bool,
        /// With --failed: only items of this sync type.
        #[arg(long = "type", value_name = "T", requires = "failed")]
        sync_type: Option<String>,
        /// With --failed: only items of this user (any package).
        #[arg(long, value_name = "U", requires = "failed")]
        user: Option<String>,
    },
    /// Remove an item for good (a pending change is then never sent; a failed one's secret
    /// goes with it). Refused for an item in flight.
    Remove {
        /// The SyncId.
        id: String,
    },
}

/// `session …`
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Show a session.
    Show {
        /// The session id, or `-` to read it from stdin (keeps it out of `ps`).
        id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_app() {
        Cli::command().debug_assert();
    }

    /// `queue-sync-many`'s help states its limits in words: they are the consts' values.
    #[test]
    fn queue_sync_many_help_states_the_limits_in_force() {
        let help = Cli::command()
            .find_subcommand_mut("queue-sync-many")
            .expect("queue-sync-many")
            .render_long_help()
            .to_string();
        let limits = format!(
            "At most {} changes and {} KiB",
            super::super::protocol::MAX_CHANGES,
            super::super::input::MAX_CHANGES_BYTES / 1024
        );
        assert!(help.contains(&limits), "{limits} in {help}");
    }

    /// The help shows the range and default the request check applies, from the same consts.
    #[test]
    fn help_shows_the_one_range_and_default() {
        let mut cmd = Cli::command();
        let queue = cmd
            .find_subcommand_mut("queue")
            .expect("queue")
            .render_help()
            .to_string();
        assert!(
            queue.contains("Items per page (expected 1 to 10000) [default: 100]"),
            "{queue}"
        );
        let cli = Cli::try_parse_from(["kr", "cleanup"]).expect("parses");
        match cli.command {
            Command::Cleanup {
                token_hours,
                sync_days,
                failed_days,
            } => assert_eq!(
                (token_hours, sync_days, failed_days),
                (TOKEN_HOURS_DEFAULT, SYNC_DAYS_DEFAULT, FAILED_DAYS_DEFAULT)
            ),
            other => panic!("{other:?}"),
        }
    }
}
