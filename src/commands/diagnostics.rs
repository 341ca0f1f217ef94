//! `test`: the checks [`crate::diagnostics`] runs, as lines or as their `--json` view. Runs
//! before (and without) the database: it needs only the config and Keycloak.

use super::render::print_json;
use super::{EXIT_OK, EXIT_REFUSED};
use crate::config::Config;
use crate::diagnostics::Check;
use serde::Serialize;
use std::io::Write;

/// `test --json`.
#[derive(Serialize)]
struct TestView<'a> {
    checks: Vec<CheckView<'a>>,
    ok: bool,
}

/// One check in `test --json`.
#[derive(Serialize)]
struct CheckView<'a> {
    check: &'a str,
    detail: &'a str,
    ok: bool,
}

impl<'a> From<&'a Check> for CheckView<'a> {
    fn from(c: &'a Check) -> Self {
        CheckView {
            check: &c.name,
            detail: &c.detail,
            ok: c.ok,
        }
    }
}

/// Runs the checks and prints them; exit 1 when one failed or was skipped.
pub(super) fn test(config: &Config, json: bool, out: &mut dyn Write) -> anyhow::Result<u8> {
    let report = crate::diagnostics::run(config)?;
    if json {
        let view = TestView {
            checks: report.checks.iter().map(CheckView::from).collect(),
            ok: report.ok(),
        };
        print_json(out, &view)?;
    } else {
        for c in &report.checks {
            let outcome = if c.ok { "ok" } else { "FAILED" };
            writeln!(out, "{outcome:<6} {}: {}", c.name, c.detail)?;
        }
        if !report.reachable {
            writeln!(
                out,
                "skipped: client and service-account checks (Keycloak not reachable)"
            )?;
        }
    }
    Ok(if report.ok() { EXIT_OK } else { EXIT_REFUSED })
}
