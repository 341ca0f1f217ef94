//! `cleanup`: the sweep [`crate::cleanup`] does, reported as lines or as its `--json` view.

use super::render::print_json;
use super::{Io, EXIT_OK};
use crate::auth::Auth;
use crate::cleanup::Ages;
use serde::Serialize;

/// `cleanup --json`: how many of each were removed.
#[derive(Serialize)]
struct RemovedView {
    auth_events_removed: usize,
    failed_syncs_removed: usize,
    sessions_removed: usize,
    syncs_removed: usize,
    tokens_removed: usize,
}

/// Removes what is older than `ages` and says how much went.
pub(super) fn cleanup(auth: &Auth, ages: Ages, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    let r = crate::cleanup::run(auth, ages)?;
    if json {
        let view = RemovedView {
            auth_events_removed: r.auth_events,
            failed_syncs_removed: r.failed_syncs,
            sessions_removed: r.sessions,
            syncs_removed: r.syncs,
            tokens_removed: r.tokens,
        };
        print_json(out, &view)?;
        return Ok(EXIT_OK);
    }
    let Ages {
        token_hours,
        sync_days,
        failed_days,
    } = ages;
    writeln!(
        out,
        "removed {} cached token(s) older than {token_hours}h",
        r.tokens
    )?;
    writeln!(
        out,
        "removed {} finished sync item(s) older than {sync_days}d",
        r.syncs
    )?;
    writeln!(
        out,
        "removed {} failed sync item(s) older than {failed_days}d",
        r.failed_syncs
    )?;
    writeln!(out, "removed {} expired session(s)", r.sessions)?;
    Ok(EXIT_OK)
}
