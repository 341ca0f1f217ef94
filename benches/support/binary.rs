//! The real binary, run the way a user runs it: a fresh process on a config file, its answer
//! to stdin given at once, and how long it took from spawn to exit.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The binary these benches measure (the release build of this package).
pub const BIN: &str = env!("CARGO_BIN_EXE_keycloak-resilient");

/// Runs the binary on `config` with `args`, writes `stdin` to it, and panics unless it exits
/// 0; how long it took.
pub fn run(config: &Path, args: &[&str], stdin: &str) -> Duration {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "{args:?} failed");
    started.elapsed()
}
