//! Reconcile: the local accounts compared with Keycloak's user list, so that what Keycloak
//! decided about a user reaches this store even when the user never logs in here (a leaver
//! disabled or deleted centrally keeps no working account, a re-enabled one gets it back).
//!
//! Two phases, so that a one-shot `reconcile` holds no database lock across a Keycloak call:
//! [`plan`] (database open: which realms, the first call admitted by the breaker), then
//! [`Planned::list`] (no database: pages through each realm's users, at most
//! [`PAGE`] a request), then [`apply`] (database open again: every page settled with the
//! breaker, then each local account brought in line). A realm whose listing did not complete
//! is left alone: without the whole list, "not there" proves nothing.
//!
//! Memory: the listing keeps each Keycloak user's name, id and enabled flag (about 100 bytes
//! a user), not their representations; the local accounts are read one at a time.

use crate::auth::{Auth, LoginError};
pub use crate::central::ReconcileReport;
use crate::config::Authority;
use crate::keycloak::guard::{Admission, CallKind, Ran};
use crate::keycloak::{KcUser, KeycloakClient};
use crate::local_users::Origin;
use crate::store::meta::{Counter, MetaKey};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Users asked for per request (Keycloak 26.4 ignores `briefRepresentation` and sends the full
/// form with its user-profile metadata: about 3 KB a user, well inside the answer cap).
pub const PAGE: usize = 100;

/// A reconcile whose first call is admitted, not yet made.
#[derive(Debug)]
pub struct Planned {
    realms: Vec<String>,
    admission: Admission,
}

/// One realm's users as Keycloak listed them, by lowercase username: (id, enabled).
type RealmUsers = HashMap<String, (String, bool)>;

/// The listing phase's result, to hand to [`apply`].
pub struct Listing {
    complete: BTreeMap<String, RealmUsers>,
    pages: Vec<Ran<()>>,
    stopped: Option<String>,
}

/// Which realms to list (the default realm and those of the packages holding local accounts)
/// and the first call, admitted by the breaker; or why Keycloak cannot be asked now.
pub fn plan(auth: &Auth) -> Result<Result<Planned, String>, LoginError> {
    let config = auth.client().config();
    let mut realms = BTreeSet::from([config.keycloak.realm.clone()]);
    let mut packages = BTreeSet::new();
    for user in auth.users().each() {
        packages.insert(user?.package);
    }
    realms.extend(packages.iter().map(|p| config.package(p).realm));
    let kc = auth.client().keycloak();
    Ok(match kc.admit(CallKind::Request, kc.timeout()) {
        Ok(admission) => Ok(Planned {
            realms: realms.into_iter().collect(),
            admission,
        }),
        Err(e) => Err(e.to_string()),
    })
}

impl Planned {
    /// Pages through every realm's users on `http`, touching no database; each request is
    /// bounded by the timeout. Stops at the first call that fails.
    pub fn list(self, http: &KeycloakClient) -> Listing {
        let mut complete = BTreeMap::new();
        let mut pages = Vec::new();
        let mut next = Some(self.admission);
        let mut stopped = None;
        'realms: for realm in &self.realms {
            let mut users = RealmUsers::new();
            let mut first = 0;
            loop {
                let Some(admission) = next.take() else {
                    break 'realms;
                };
                let ran = admission.run(http, |kc| kc.list_users(realm, first, PAGE));
                next = Some(ran.then_request());
                let (ran, page) = ran.take();
                if let Err(e) = ran.result() {
                    stopped = Some(format!("listing realm {realm}: {e}"));
                    pages.push(ran);
                    break 'realms;
                }
                pages.push(ran);
                let page: Vec<KcUser> = page.unwrap_or_default();
                let n = page.len();
                for u in page {
                    users.insert(u.username.to_lowercase(), (u.id, u.enabled));
                }
                if n < PAGE {
                    break;
                }
                first += n;
            }
            complete.insert(realm.clone(), users);
        }
        Listing {
            complete,
            pages,
            stopped,
        }
    }
}

/// Settles the listing's calls with the breaker, then brings each local account of a
/// completely listed realm in line with Keycloak, and records the report.
pub fn apply(auth: &Auth, listing: Listing) -> Result<ReconcileReport, LoginError> {
    let kc = auth.client().keycloak();
    for ran in listing.pages {
        // Each call's outcome is in `stopped` already; here it only feeds the breaker.
        let _ = kc.settle(ran);
    }
    let config = auth.client().config();
    let accounts = config.consistency.accounts == Authority::Keycloak;
    let now = auth.client().clock().now();
    let mut report = ReconcileReport {
        at: Some(now),
        stopped: listing.stopped,
        ..ReconcileReport::default()
    };
    let mut matched: HashMap<String, BTreeSet<String>> = HashMap::new();
    for user in auth.users().each() {
        let user = user?;
        let realm = config.package(&user.package).realm;
        let Some(listed) = listing.complete.get(&realm) else {
            continue;
        };
        let account = match crate::account::Account::new(&user.username, &user.package) {
            Ok(a) => a,
            Err(e) => {
                log::warn!("reconcile: skipping a stored account: {e}");
                continue;
            }
        };
        report.checked += 1;
        let name = user.username.to_lowercase();
        match listed.get(&name) {
            Some((id, enabled)) => {
                matched.entry(realm.clone()).or_default().insert(name);
                if user.keycloak_id.as_deref() != Some(id.as_str()) {
                    auth.users().link(&account, id)?;
                    report.linked += 1;
                }
                if !accounts {
                    continue;
                }
                if !enabled && user.enabled {
                    if auth.users().disable_by_keycloak(&account)? {
                        auth.revoke(&account)?;
                        count(auth, Counter::CentralDisables);
                        report.disabled += 1;
                    }
                } else if *enabled
                    && !user.enabled
                    && user.disabled_by == Some(Origin::Keycloak)
                    && auth.users().enable_by_keycloak(&account)?
                {
                    count(auth, Counter::CentralEnables);
                    report.re_enabled += 1;
                }
            }
            None if user.keycloak_id.is_some() => {
                report.gone += 1;
                if accounts && user.enabled && auth.users().disable_by_keycloak(&account)? {
                    auth.revoke(&account)?;
                    count(auth, Counter::CentralDisables);
                }
            }
            None => report.only_here += 1,
        }
    }
    for (realm, users) in &listing.complete {
        let seen = matched.get(realm).map_or(0, BTreeSet::len);
        report.only_in_keycloak += users.len().saturating_sub(seen);
    }
    record(auth, report)
}

/// Keeps `report` as the last reconcile, carrying the time of the last complete one over a
/// run that stopped.
fn record(auth: &Auth, mut report: ReconcileReport) -> Result<ReconcileReport, LoginError> {
    let store = auth.client().store();
    report.last_complete = match report.stopped {
        None => report.at,
        Some(_) => store
            .get_meta::<ReconcileReport>(MetaKey::LastReconcile)?
            .and_then(|r| r.last_complete),
    };
    store.put_meta(MetaKey::LastReconcile, &report)?;
    Ok(report)
}

/// A whole reconcile with the database open throughout (the service, the library).
pub fn run(auth: &Auth) -> Result<ReconcileReport, LoginError> {
    match plan(auth)? {
        Ok(planned) => {
            let listing = planned.list(auth.client().keycloak().http());
            apply(auth, listing)
        }
        Err(reason) => not_run(auth, reason),
    }
}

/// The report of a reconcile Keycloak could not be asked for (recorded like any other).
pub fn not_run(auth: &Auth, reason: String) -> Result<ReconcileReport, LoginError> {
    let report = ReconcileReport {
        at: Some(auth.client().clock().now()),
        stopped: Some(reason),
        ..ReconcileReport::default()
    };
    record(auth, report)
}

fn count(auth: &Auth, counter: Counter) {
    if let Err(e) = auth.client().store().bump_counter(counter, 1) {
        log::error!("could not count {}: {e}", counter.key());
    }
}
