//! `reconcile`: the local accounts compared with Keycloak's user list ([`crate::reconcile`]),
//! reported as lines or as its `--json` view. One-shot, the database is closed while Keycloak
//! is listed (no other command waits behind it).

use super::render::print_json;
use super::{Io, EXIT_OK};
use crate::auth::Auth;
use crate::config::Config;
use crate::reconcile::ReconcileReport;
use std::time::Duration;

/// Runs a reconcile with the database open throughout (the service's door).
pub(super) fn reconcile(auth: &Auth, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    let report = crate::reconcile::run(auth)?;
    show(&report, json, io)
}

/// A one-shot reconcile: planned with the database open, listed with it closed, applied
/// with it open again.
pub(super) fn reconcile_one_shot(
    auth: Auth,
    lock_timeout: Duration,
    json: bool,
    io: &mut Io,
) -> anyhow::Result<u8> {
    let planned = match crate::reconcile::plan(&auth)? {
        Ok(planned) => planned,
        Err(reason) => {
            let report = crate::reconcile::not_run(&auth, reason)?;
            return show(&report, json, io);
        }
    };
    let config: Config = auth.client().config().clone();
    auth.client().store().flush()?;
    drop(auth);
    let http = crate::keycloak::KeycloakClient::new(&config.keycloak)?;
    let listing = planned.list(&http);
    let auth = super::open_auth(config, lock_timeout)?;
    let report = crate::reconcile::apply(&auth, listing)?;
    show(&report, json, io)
}

fn show(r: &ReconcileReport, json: bool, io: &mut Io) -> anyhow::Result<u8> {
    let out = &mut *io.out;
    if json {
        print_json(out, r)?;
        return Ok(EXIT_OK);
    }
    writeln!(
        out,
        "reconcile: {} checked, {} disabled, {} re-enabled, {} gone from Keycloak, {} only in Keycloak, {} only here, {} linked",
        r.checked, r.disabled, r.re_enabled, r.gone, r.only_in_keycloak, r.only_here, r.linked
    )?;
    if let Some(why) = &r.stopped {
        writeln!(out, "stopped: {why}")?;
    }
    Ok(EXIT_OK)
}
