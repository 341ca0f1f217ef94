//! The `keycloak-resilient` binary: parse, set up logging, run, map the outcome to an exit code.

use clap::Parser;
use keycloak_resilient::commands;
use keycloak_resilient::commands::cli::{Cli, Command, LogFormat};
use keycloak_resilient::logs::{self, Format, Style};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before anything creates a file: sled writes snapshots for as long as the process runs,
    // and every one must be private (see `store::perms`).
    keycloak_resilient::store::perms::narrow_process_umask();
    let cli = Cli::parse();
    let format = match cli.log_format {
        LogFormat::Text => Format::Text,
        LogFormat::Json => Format::Json,
    };
    let level = if matches!(cli.command, Command::Start) {
        "info"
    } else {
        logs::ONE_SHOT_LEVEL
    };
    logs::init_with(level, Style::detect(format));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut err = std::io::stderr();
    match commands::run(cli, &mut out, &mut err) {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(commands::exit_code_for(&e))
        }
    }
}

/// `status | head` closing the pipe early is not an error. The io error is looked for in the
/// whole cause chain; views hand it over as an [`std::io::Error`] (see `commands::render`), not
/// hidden inside serde_json's error, whose `source()` skips it.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
