//! Logging: env_logger for the process, plus a per-thread capture so that the warnings a
//! socket request causes reach its caller's stderr, as they would have in a direct run.
//!
//! A one-shot command run directly prints its warnings (the default level for one-shot
//! commands) on its own stderr. Run by the service on the caller's behalf, the same warnings
//! would otherwise end up only in the service's log; [`capture`] collects them, in the same
//! format, for the answer. The service's own log still gets every line it asks for.
//!
//! Two shapes on stderr ([`Format`]): text, or one JSON object a line for log shippers. Under
//! systemd, when `JOURNAL_STREAM` names the very file stderr is (as sd-daemon(3) says to
//! check: a child that inherited the variable but writes elsewhere must not get prefixes),
//! every line starts with its syslog priority, `<3>` error to `<7>` debug, which journald
//! strips and records as the entry's priority (so `journalctl -p warning` works); the
//! timestamp is then left out, journald has its own.

use log::{Level, LevelFilter, Log, Metadata, Record};
use serde::Serialize;
use std::cell::RefCell;
use std::io::Write;

thread_local! {
    static CAPTURED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The level one-shot commands log at unless RUST_LOG says otherwise.
pub const ONE_SHOT_LEVEL: &str = "warn";

struct Tee {
    inner: env_logger::Logger,
}

impl Log for Tee {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata) || (metadata.level() <= Level::Warn && capturing())
    }

    fn log(&self, record: &Record<'_>) {
        if self.inner.matches(record) {
            self.inner.log(record);
        }
        if record.level() <= Level::Warn {
            CAPTURED.with(|c| {
                if let Some(buf) = c.borrow_mut().as_mut() {
                    buf.push_str(&format_line(record));
                }
            });
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

fn capturing() -> bool {
    CAPTURED.with(|c| c.borrow().is_some())
}

/// A record as env_logger prints it with second timestamps (the binary's format).
fn format_line(record: &Record<'_>) -> String {
    format!(
        "[{} {:<5} {}] {}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        record.level(),
        record.target(),
        record.args()
    )
}

/// How log lines look on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `[ts LEVEL target] message`.
    Text,
    /// `{"ts": …, "level": …, "target": …, "message": …}`, one object a line.
    Json,
}

/// Where and how lines are written: the format, and whether stderr is the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// The line format.
    pub format: Format,
    /// True when stderr is connected to journald: lines get a `<N>` priority prefix and no
    /// timestamp.
    pub journal: bool,
}

impl Style {
    /// `format`, with the journal detected from `JOURNAL_STREAM` and stderr.
    pub fn detect(format: Format) -> Style {
        let journal = std::env::var("JOURNAL_STREAM")
            .ok()
            .is_some_and(|v| stderr_is(&v));
        Style { format, journal }
    }
}

/// True when `journal_stream` (`DEVICE:INODE`, as systemd sets it) is the file behind stderr.
fn stderr_is(journal_stream: &str) -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = journal_stream.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// The syslog priority journald records for a level (sd-daemon(3)'s `SD_ERR` … `SD_DEBUG`).
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// One `--log-format json` line.
#[derive(Serialize)]
struct JsonLine<'a> {
    ts: &'a str,
    level: &'a str,
    target: &'a str,
    message: &'a str,
}

/// One record as a line (with its newline) in `style`, at time `ts` (RFC 3339).
fn render(style: Style, ts: &str, level: Level, target: &str, message: &str) -> String {
    let prefix = if style.journal {
        format!("<{}>", priority(level))
    } else {
        String::new()
    };
    let body = match style.format {
        Format::Json => {
            let line = JsonLine {
                ts,
                level: level.as_str(),
                target,
                message,
            };
            // A struct of strings always serialises.
            serde_json::to_string(&line).unwrap_or_default()
        }
        Format::Text if style.journal => format!("{:<5} {target}] {message}", level.as_str()),
        Format::Text => format!("[{ts} {:<5} {target}] {message}", level.as_str()),
    };
    format!("{prefix}{body}\n")
}

/// Sets up logging on stderr in text, RUST_LOG or `default_level` deciding the level.
pub fn init(default_level: &str) {
    init_with(default_level, Style::detect(Format::Text));
}

/// Sets up logging on stderr in `style`: RUST_LOG, or `default_level` when it is not set.
/// Without RUST_LOG, sled's own lines are left out: what they say (a failed CRC of `conf`, a
/// missing setting) comes with our one-line error naming the directory and what to do;
/// `RUST_LOG=sled=warn` shows them.
pub fn init_with(default_level: &str, style: Style) {
    let default_filter = format!("{default_level},sled=off");
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
            .format(move |buf, record| {
                let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let message = record.args().to_string();
                let line = render(style, &ts, record.level(), record.target(), &message);
                buf.write_all(line.as_bytes())
            })
            .build();
    let max = inner.filter().max(LevelFilter::Warn);
    if log::set_boxed_logger(Box::new(Tee { inner })).is_ok() {
        log::set_max_level(max);
    }
}

/// Runs `f`, returning what it returned and the warnings and errors it logged on this thread.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, String) {
    let previous = CAPTURED.with(|c| c.borrow_mut().replace(String::new()));
    let result = f();
    let lines = CAPTURED.with(|c| std::mem::replace(&mut *c.borrow_mut(), previous));
    (result, lines.unwrap_or_default())
}

/// Adds `lines` — what [`capture`] collected on a thread working for this one (a sync cycle's
/// send workers) — to this thread's capture, if it is capturing: the caller's stderr gets
/// them as if this thread had logged them.
pub fn add_captured(lines: &str) {
    CAPTURED.with(|c| {
        if let Some(buf) = c.borrow_mut().as_mut() {
            buf.push_str(lines);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_warnings_of_this_thread_only() {
        init("off");
        let ((), lines) = capture(|| {
            log::warn!("first");
            log::info!("not at one-shot level");
            std::thread::spawn(|| log::warn!("another thread"))
                .join()
                .unwrap();
            log::error!("second");
        });
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].ends_with("WARN  keycloak_resilient::logs::tests] first"),
            "{lines:?}"
        );
        assert!(
            lines[1].ends_with("ERROR keycloak_resilient::logs::tests] second"),
            "{lines:?}"
        );
        let ((), none) = capture(|| ());
        assert!(none.is_empty());
    }

    const TS: &str = "2026-01-02T03:04:05Z";

    #[test]
    fn text_lines_keep_their_shape() {
        let text = Style {
            format: Format::Text,
            journal: false,
        };
        assert_eq!(
            render(text, TS, Level::Warn, "kr::x", "careful"),
            "[2026-01-02T03:04:05Z WARN  kr::x] careful\n"
        );
    }

    #[test]
    fn the_journal_gets_priorities_and_no_timestamp() {
        let journal = Style {
            format: Format::Text,
            journal: true,
        };
        let got: Vec<String> = [
            Level::Error,
            Level::Warn,
            Level::Info,
            Level::Debug,
            Level::Trace,
        ]
        .into_iter()
        .map(|l| render(journal, TS, l, "t", "m"))
        .collect();
        assert_eq!(
            got,
            [
                "<3>ERROR t] m\n",
                "<4>WARN  t] m\n",
                "<6>INFO  t] m\n",
                "<7>DEBUG t] m\n",
                "<7>TRACE t] m\n"
            ]
        );
    }

    #[test]
    fn json_lines_are_one_object_each() {
        let json = Style {
            format: Format::Json,
            journal: false,
        };
        let line = render(json, TS, Level::Error, "kr::y", "a \"quoted\"\nsecond line");
        assert!(
            line.ends_with("}\n") && line.matches('\n').count() == 1,
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ts": TS, "level": "ERROR", "target": "kr::y", "message": "a \"quoted\"\nsecond line"})
        );
        let journal = Style {
            journal: true,
            ..json
        };
        assert!(render(journal, TS, Level::Info, "t", "m").starts_with("<6>{\"ts\""));
    }

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(!stderr_is(""));
        assert!(!stderr_is("garbage"));
        assert!(!stderr_is("1:x"));
        // Not stderr's inode (whatever stderr is while the tests run).
        assert!(!stderr_is("0:0"));
    }
}
