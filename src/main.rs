//! The `keycloak-resilient` binary: parse, set up logging, run, map the outcome to an exit code.

use clap::Parser;
use keycloak_resilient::commands;
use keycloak_resilient::commands::cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    keycloak_resilient::logs::init(if matches!(cli.command, Command::Start) {
        "info"
    } else {
        keycloak_resilient::logs::ONE_SHOT_LEVEL
    });
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

/// `status | head` closing the pipe early is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
