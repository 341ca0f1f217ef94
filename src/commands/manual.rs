//! `completions SHELL` and `man`: the shell completion scripts and the manual page, generated
//! from the clap definition in [`super::cli`], so they can never drift from what the binary
//! accepts. Neither needs a config file or the database. Their output is its own format
//! (a script, roff), so `--json` does not change it.

use super::cli::{Cli, Shell};
use clap::CommandFactory;
use std::io::Write;

/// Writes the completion script for `shell`.
pub(super) fn completions(shell: Shell, out: &mut dyn Write) -> anyhow::Result<u8> {
    let mut command = Cli::command();
    let name = command.get_name().to_string();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // clap_complete writes through a `&mut dyn Write` of its own and cannot report an error:
    // render into memory, then write, so that a closed pipe is an error `main` sees.
    let mut script = Vec::new();
    clap_complete::generate(generator, &mut command, name, &mut script);
    out.write_all(&script)?;
    out.flush()?;
    Ok(super::EXIT_OK)
}

/// Writes the manual page (section 1, roff).
pub(super) fn man(out: &mut dyn Write) -> anyhow::Result<u8> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    out.write_all(&page)?;
    out.flush()?;
    Ok(super::EXIT_OK)
}
