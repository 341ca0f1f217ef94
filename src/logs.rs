//! Logging: env_logger for the process, plus a per-thread capture so that the warnings a
//! socket request causes reach its caller's stderr, as they would have in a direct run.
//!
//! A one-shot command run directly prints its warnings (the default level for one-shot
//! commands) on its own stderr. Run by the service on the caller's behalf, the same warnings
//! would otherwise end up only in the service's log; [`capture`] collects them, in the same
//! format, for the answer. The service's own log still gets every line it asks for.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::cell::RefCell;

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

/// Sets up logging on stderr: RUST_LOG, or `default_level` when it is not set.
pub fn init(default_level: &str) {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
            .format_timestamp_secs()
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
}
