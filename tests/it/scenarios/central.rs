//! Issue 12: what Keycloak decides reaches the local store. Each scenario changes a user in
//! Keycloak through its admin API, as an administrator (or another app server) would, then logs
//! in here; "offline" checks use a second client over the same database whose Keycloak is a
//! closed port, so that no scenario needs a restart of the live server.

use super::manual_clock;
use crate::common::server::Server;
use crate::common::{acct, unique_user, TestEnv, Tuning, PACKAGE};
use keycloak_resilient::auth::{FailReason, LoginResult, Profile};
use keycloak_resilient::clock::{ManualClock, SharedClock};
use keycloak_resilient::local_users::Origin;
use keycloak_resilient::sessions::AuthMode;
use keycloak_resilient::store::meta::Counter;
use keycloak_resilient::store::Store;
use keycloak_resilient::{Auth, PasswdMode, ResilientClient};
use std::sync::Arc;

/// Two `Auth`s over one in-memory database: `online` talks to `server`, `offline` to a port
/// nothing listens on (its breaker state is its own only in that it never reaches Keycloak).
pub struct Pair {
    pub online: Auth,
    pub offline: Auth,
    pub store: Arc<Store>,
}

pub fn pair(env: &TestEnv, clock: &ManualClock) -> Pair {
    let store = Arc::new(Store::temporary().expect("store"));
    let shared: SharedClock = Arc::new(clock.clone());
    let online =
        ResilientClient::with_parts(env.config(), store.clone(), shared.clone()).expect("client");
    let mut dead = env.config();
    dead.keycloak.server_url = format!("http://127.0.0.1:{}", closed_port());
    let offline = ResilientClient::with_parts(dead, store.clone(), shared).expect("client");
    Pair {
        online: Auth::new(online),
        offline: Auth::new(offline),
        store,
    }
}

/// A port on 127.0.0.1 with nothing listening (bound, then let go).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn login(auth: &Auth, user: &str, password: &str) -> LoginResult {
    auth.login(&acct(user, PACKAGE), password).expect("login")
}

fn assert_ok(r: &LoginResult, mode: AuthMode, what: &str) {
    assert!(r.success, "{what}: {r:?}");
    assert_eq!(r.auth_mode, Some(mode), "{what}: {r:?}");
}

fn assert_refused(r: &LoginResult, reason: FailReason, what: &str) {
    assert!(!r.success, "{what}: {r:?}");
    assert_eq!(r.reason, Some(reason), "{what}: {r:?}");
}

/// Whether the user has a live session (1) or none (0).
fn sessions_of(auth: &Auth, user: &str) -> usize {
    let live = auth.sessions().live_accounts().expect("sessions");
    live.iter().filter(|a| a.user() == user).count()
}

fn counter(p: &Pair, c: Counter) -> u64 {
    p.store.counter(c).expect("counter")
}

/// A user both sides know with `password`, logged in once online (so linked).
fn linked_user(server: &dyn Server, p: &Pair, prefix: &str, password: &str) -> String {
    let user = unique_user(prefix);
    server.create_user(&user, password, true);
    p.online
        .users()
        .add(&acct(&user, PACKAGE), password)
        .expect("add local user");
    assert_ok(
        &login(&p.online, &user, password),
        AuthMode::Keycloak,
        "first login",
    );
    let record = p
        .online
        .users()
        .get(&acct(&user, PACKAGE))
        .unwrap()
        .unwrap();
    assert_eq!(
        record.keycloak_id,
        server.keycloak_id(&user),
        "the Keycloak id is remembered at the first login"
    );
    user
}

/// Disabled in Keycloak (a leaver): refused here at the next login, disabled with Keycloak as
/// the source, sessions and cached token gone, refused offline too; enabled again in Keycloak
/// → logs in again.
pub fn keycloak_disable_reaches_the_local_account(server: &dyn Server) {
    let env = TestEnv::new(&server.url(), &Tuning::default());
    let p = pair(&env, &manual_clock());
    let pw = "Leaver-Password-1";
    let user = linked_user(server, &p, "leaver", pw);
    let account = acct(&user, PACKAGE);
    assert_eq!(sessions_of(&p.online, &user), 1);

    server.set_enabled_in_keycloak(&user, false);
    let r = login(&p.online, &user, pw);
    assert_refused(&r, FailReason::AccountDisabled, "disabled in Keycloak");
    assert_eq!(r.keycloak_status, "online");
    let record = p.online.users().get(&account).unwrap().unwrap();
    assert!(!record.enabled);
    assert_eq!(record.disabled_by, Some(Origin::Keycloak));
    assert_eq!(sessions_of(&p.online, &user), 0);
    assert!(p
        .online
        .client()
        .tokens()
        .entry(&account)
        .unwrap()
        .is_none());
    assert_eq!(counter(&p, Counter::CentralDisables), 1);
    assert_refused(
        &login(&p.offline, &user, pw),
        FailReason::AccountDisabled,
        "offline after the central disable",
    );

    server.set_enabled_in_keycloak(&user, true);
    assert_ok(
        &login(&p.online, &user, pw),
        AuthMode::Keycloak,
        "enabled again in Keycloak",
    );
    let record = p.online.users().get(&account).unwrap().unwrap();
    assert!(record.enabled && record.disabled_by.is_none(), "{record:?}");
    assert_eq!(counter(&p, Counter::CentralEnables), 1);

    // An account disabled here stays disabled whatever Keycloak says.
    p.online.disable_user(&account).unwrap();
    assert_refused(
        &login(&p.online, &user, pw),
        FailReason::AccountDisabled,
        "disabled here",
    );
    assert_eq!(
        p.online.users().get(&account).unwrap().unwrap().disabled_by,
        Some(Origin::Local)
    );
}

/// Reset in Keycloak (an administrator, the account console, another app server): the old
/// password stops working here, online and offline; the new one is adopted at the first
/// login and then works offline.
pub fn keycloak_password_reset_is_adopted_and_the_old_one_stops(server: &dyn Server) {
    let env = TestEnv::new(&server.url(), &Tuning::default());
    let p = pair(&env, &manual_clock());
    let (old, new) = ("Before-Reset-1", "After-Reset-22");
    let user = linked_user(server, &p, "reset", old);

    server.reset_in_keycloak(&user, new);
    let r = login(&p.online, &user, old);
    assert_refused(
        &r,
        FailReason::InvalidCredentials,
        "old password after the reset",
    );
    assert_eq!(r.keycloak_status, "online");
    assert_eq!(counter(&p, Counter::PasswordsStale), 1);
    assert!(
        p.online
            .users()
            .get(&acct(&user, PACKAGE))
            .unwrap()
            .unwrap()
            .password_stale
    );
    assert_refused(
        &login(&p.offline, &user, old),
        FailReason::InvalidCredentials,
        "old password offline",
    );

    let r = login(&p.online, &user, new);
    assert_ok(&r, AuthMode::Keycloak, "new password, adopted");
    assert_eq!(counter(&p, Counter::PasswordsAdopted), 1);
    assert_ok(
        &login(&p.offline, &user, new),
        AuthMode::Cached,
        "new password offline: the cached token",
    );
    // With the cached token gone, local auth alone vouches for the adopted password.
    p.online
        .client()
        .tokens()
        .remove(&acct(&user, PACKAGE))
        .unwrap();
    assert_ok(
        &login(&p.offline, &user, new),
        AuthMode::Local,
        "new password offline, local",
    );
    assert_refused(
        &login(&p.offline, &user, old),
        FailReason::InvalidCredentials,
        "old password offline, after the adoption",
    );
}

/// A local change queued while Keycloak could not take it is newer than Keycloak's password:
/// the new password logs in (Keycloak's refusal is explained), the old one is not adopted
/// although Keycloak still accepts it; the replay then brings Keycloak in line.
pub fn pending_local_change_wins_over_keycloaks_old_password(server: &dyn Server) {
    // The admin client's secret is wrong: passwd's change cannot reach Keycloak and waits.
    let blocked = Tuning {
        admin_client_secret: "not-the-secret".into(),
        ..Tuning::default()
    };
    let env = TestEnv::new(&server.url(), &blocked);
    let clock = manual_clock();
    let p = pair(&env, &clock);
    let (old, new) = ("Pending-Old-1", "Pending-New-22");
    let user = linked_user(server, &p, "pending", old);
    let changed = p
        .online
        .change_password(&acct(&user, PACKAGE), old, new)
        .unwrap();
    assert_eq!(changed.mode, PasswdMode::Queued, "{changed:?}");
    assert!(
        server.login_works(&user, old),
        "Keycloak still has the old password"
    );

    assert_ok(
        &login(&p.online, &user, new),
        AuthMode::Local,
        "the new password, Keycloak not told yet",
    );
    assert_refused(
        &login(&p.online, &user, old),
        FailReason::InvalidCredentials,
        "the old password, which Keycloak still accepts",
    );
    assert_eq!(counter(&p, Counter::PasswordsAdopted), 0);
    assert_eq!(counter(&p, Counter::PasswordsStale), 0);
    assert_ok(
        &login(&p.online, &user, new),
        AuthMode::Local,
        "the new password still works",
    );

    // The secret fixed: the queued change drains and both sides agree.
    let fixed = TestEnv::new(&server.url(), &Tuning::default());
    let client =
        ResilientClient::with_parts(fixed.config(), p.store.clone(), Arc::new(clock.clone()))
            .unwrap();
    let report = client.process_sync_queue(10).unwrap();
    assert_eq!(report.completed, 1, "{report:?}");
    assert!(server.login_works(&user, new));
    assert_ok(
        &login(&Auth::new(client), &user, new),
        AuthMode::Keycloak,
        "after the replay",
    );
}

/// A user only Keycloak knows logs in here: a local account is provisioned with that
/// password (linked), and offline logins work for them from then on.
pub fn user_only_in_keycloak_is_provisioned(server: &dyn Server) {
    let env = TestEnv::new(&server.url(), &Tuning::default());
    let p = pair(&env, &manual_clock());
    let pw = "Central-Only-1";
    let user = unique_user("central");
    server.create_user(&user, pw, true);

    assert_refused(
        &login(&p.online, &user, "Wrong-Password-1"),
        FailReason::InvalidCredentials,
        "a wrong password provisions nothing",
    );
    assert!(p
        .online
        .users()
        .get(&acct(&user, PACKAGE))
        .unwrap()
        .is_none());

    assert_ok(
        &login(&p.online, &user, pw),
        AuthMode::Keycloak,
        "first login",
    );
    let record = p
        .online
        .users()
        .get(&acct(&user, PACKAGE))
        .unwrap()
        .expect("provisioned");
    assert!(record.enabled);
    assert_eq!(record.keycloak_id, server.keycloak_id(&user));
    assert_eq!(counter(&p, Counter::Provisioned), 1);
    p.online
        .client()
        .tokens()
        .remove(&acct(&user, PACKAGE))
        .unwrap();
    assert_ok(
        &login(&p.offline, &user, pw),
        AuthMode::Local,
        "offline after provisioning",
    );
}

/// Deleted in Keycloak: a linked account is disabled here at the next login; an account that
/// was never linked (a local-only user of the same name) is left alone.
pub fn keycloak_delete_disables_a_linked_account(server: &dyn Server) {
    let env = TestEnv::new(&server.url(), &Tuning::default());
    let p = pair(&env, &manual_clock());
    let pw = "Deleted-Password-1";
    let user = linked_user(server, &p, "deleted", pw);
    server.delete_in_keycloak(&user);
    assert_refused(
        &login(&p.online, &user, pw),
        FailReason::AccountDisabled,
        "deleted in Keycloak",
    );
    let record = p
        .online
        .users()
        .get(&acct(&user, PACKAGE))
        .unwrap()
        .unwrap();
    assert_eq!(record.disabled_by, Some(Origin::Keycloak));

    let local_only = unique_user("localonly");
    p.online
        .users()
        .add(&acct(&local_only, PACKAGE), pw)
        .unwrap();
    assert_ok(
        &login(&p.online, &local_only, pw),
        AuthMode::Local,
        "never in Keycloak, never linked",
    );
}

/// Two app servers, each with its own data directory, one Keycloak: a `passwd` on one reaches
/// Keycloak, and the other adopts it at the user's next login there.
pub fn two_data_directories_converge_through_keycloak(server: &dyn Server) {
    let clock = manual_clock();
    let env_a = TestEnv::new(&server.url(), &Tuning::default());
    let env_b = TestEnv::new(&server.url(), &Tuning::default());
    let a = pair(&env_a, &clock);
    let b = pair(&env_b, &clock);
    let (old, new) = ("Shared-Old-1", "Shared-New-22");
    let user = unique_user("twosrv");
    server.create_user(&user, old, true);
    for side in [&a, &b] {
        side.online.users().add(&acct(&user, PACKAGE), old).unwrap();
    }
    let changed = a
        .online
        .change_password(&acct(&user, PACKAGE), old, new)
        .unwrap();
    assert_eq!(changed.mode, PasswdMode::Synchronized, "{changed:?}");

    assert_refused(
        &login(&b.online, &user, old),
        FailReason::InvalidCredentials,
        "server B, the old password",
    );
    assert_ok(
        &login(&b.online, &user, new),
        AuthMode::Keycloak,
        "server B, the new one",
    );
    b.online
        .client()
        .tokens()
        .remove(&acct(&user, PACKAGE))
        .unwrap();
    assert_ok(
        &login(&b.offline, &user, new),
        AuthMode::Local,
        "server B offline, the new one",
    );
}

/// Keycloak's brute-force lock and a required action refuse the right password at the token
/// endpoint ("Invalid user credentials", "Account is not fully set up"): neither is a password
/// change, so the local password keeps working (local login) and nothing goes stale.
pub fn brute_force_lock_and_required_action_are_not_central_decisions(server: &dyn Server) {
    let env = TestEnv::new(&server.url(), &Tuning::default());
    let p = pair(&env, &manual_clock());
    let pw = "Locked-Password-1";
    let user = linked_user(server, &p, "bflock", pw);

    server.brute_force_lock(&user);
    let r = login(&p.online, &user, pw);
    server.brute_force_unlock(&user);
    assert_ok(
        &r,
        AuthMode::Local,
        "locked by Keycloak's brute-force detection",
    );
    let record = p
        .online
        .users()
        .get(&acct(&user, PACKAGE))
        .unwrap()
        .unwrap();
    assert!(!record.password_stale && record.enabled, "{record:?}");
    assert_eq!(counter(&p, Counter::PasswordsStale), 0);

    server.set_required_action_in_keycloak(&user, Some("UPDATE_PASSWORD"));
    let r = login(&p.online, &user, pw);
    server.set_required_action_in_keycloak(&user, None);
    assert_ok(&r, AuthMode::Local, "a required action");
    let record = p
        .online
        .users()
        .get(&acct(&user, PACKAGE))
        .unwrap()
        .unwrap();
    assert!(!record.password_stale && record.enabled, "{record:?}");
    assert_ok(
        &login(&p.online, &user, pw),
        AuthMode::Keycloak,
        "unlocked, set up",
    );
}

/// A reconcile brings accounts in line with Keycloak without anyone logging in: disabled and
/// deleted (linked) users are disabled here, one Keycloak enabled again is enabled, a user of
/// the same name that was never linked is linked, a local-only one left alone.
pub fn reconcile_applies_keycloaks_account_decisions(server: &dyn Server) {
    let env = TestEnv::new(&server.url(), &Tuning::default());
    let p = pair(&env, &manual_clock());
    let pw = "Reconcile-Password-1";
    let disabled = linked_user(server, &p, "rcdis", pw);
    let deleted = linked_user(server, &p, "rcdel", pw);
    let back = linked_user(server, &p, "rcback", pw);
    let unlinked = unique_user("rcnew");
    server.create_user(&unlinked, pw, true);
    p.online.users().add(&acct(&unlinked, PACKAGE), pw).unwrap();
    let local_only = unique_user("rclocal");
    p.online
        .users()
        .add(&acct(&local_only, PACKAGE), pw)
        .unwrap();

    server.set_enabled_in_keycloak(&disabled, false);
    server.delete_in_keycloak(&deleted);
    server.set_enabled_in_keycloak(&back, false);
    let first = keycloak_resilient::reconcile::run(&p.online).unwrap();
    assert_eq!(first.stopped, None, "{first:?}");
    assert_eq!(
        (first.checked, first.disabled, first.gone),
        (5, 2, 1),
        "{first:?}"
    );
    assert_eq!((first.only_here, first.linked), (1, 1), "{first:?}");
    assert!(
        first.only_in_keycloak >= 1,
        "the fixture's users at least: {first:?}"
    );
    let record = |u: &str| p.online.users().get(&acct(u, PACKAGE)).unwrap().unwrap();
    for u in [&disabled, &deleted, &back] {
        assert_eq!(record(u).disabled_by, Some(Origin::Keycloak), "{u}");
        assert_eq!(sessions_of(&p.online, u), 0, "{u}: sessions ended");
    }
    assert_eq!(record(&unlinked).keycloak_id, server.keycloak_id(&unlinked));
    assert!(record(&local_only).enabled && record(&unlinked).enabled);
    assert_refused(
        &login(&p.offline, &disabled, pw),
        FailReason::AccountDisabled,
        "offline after the reconcile",
    );

    server.set_enabled_in_keycloak(&back, true);
    let second = keycloak_resilient::reconcile::run(&p.online).unwrap();
    assert_eq!(second.re_enabled, 1, "{second:?}");
    assert!(record(&back).enabled);
    assert!(!record(&disabled).enabled, "still disabled in Keycloak");
    let status = keycloak_resilient::overview::gather(&p.online).unwrap();
    assert_eq!(status.last_reconcile.as_ref(), Some(&second));
    assert_eq!(status.central.disabled, 3);
    assert_eq!(status.central.enabled, 1);
}

/// `keycloak.manage_users: true`: `user add/disable/enable/remove --in-keycloak` reach
/// Keycloak, queued while it cannot take them, and one user's changes arrive in the order they
/// were made (the create before the password change before the disable); a user created
/// without the profile fields the realm requires exists in Keycloak but cannot log in there
/// ("Account is not fully set up"), and logs in here locally.
pub fn managed_users_reach_keycloak_in_order(server: &dyn Server) {
    let managed = "  manage_users: true\n".to_string();
    let blocked = Tuning {
        admin_client_secret: "not-the-secret".into(),
        keycloak_extra: managed.clone(),
        ..Tuning::default()
    };
    let env = TestEnv::new(&server.url(), &blocked);
    let clock = manual_clock();
    let p = pair(&env, &clock);
    let (pw, pw2) = ("Managed-First-1", "Managed-Second-22");
    let user = unique_user("managed");
    let account = acct(&user, PACKAGE);
    let profile = Profile {
        email: Some(format!("{user}@example.test")),
        first_name: Some("Managed".into()),
        last_name: Some("User".into()),
    };
    let added = p.online.add_user(&account, pw, profile).unwrap();
    assert_eq!(added.map(|r| r.mode), Some(PasswdMode::Queued));
    let changed = p.online.change_password(&account, pw, pw2).unwrap();
    assert_eq!(changed.mode, PasswdMode::Queued, "{changed:?}");
    let (_, disabled) = p.online.disable_user(&account).unwrap();
    assert_eq!(disabled.map(|r| r.mode), Some(PasswdMode::Queued));
    assert_eq!(
        server.keycloak_id(&user),
        None,
        "nothing reached Keycloak yet"
    );
    let waiting = keycloak_resilient::overview::gather(&p.online)
        .unwrap()
        .waiting_by_type;
    for (t, n) in [
        ("password_change", 1),
        ("user_create", 1),
        ("user_disable", 1),
    ] {
        assert_eq!(waiting.get(t), Some(&n), "{t}: {waiting:?}");
    }

    let fixed_env = TestEnv::new(
        &server.url(),
        &Tuning {
            keycloak_extra: managed,
            ..Tuning::default()
        },
    );
    let client =
        ResilientClient::with_parts(fixed_env.config(), p.store.clone(), Arc::new(clock.clone()))
            .unwrap();
    let report = client.process_sync_queue(10).unwrap();
    assert_eq!((report.completed, report.failed), (3, 0), "{report:?}");
    assert!(server.keycloak_id(&user).is_some(), "created");
    assert!(
        !server.login_works(&user, pw2),
        "disabled in Keycloak, last"
    );
    let fixed = Auth::new(client);
    let enabled = fixed.enable_user(&account).unwrap();
    assert_eq!(enabled.map(|r| r.mode), Some(PasswdMode::Synchronized));
    assert!(
        server.login_works(&user, pw2),
        "enabled, with the changed password"
    );
    assert!(!server.login_works(&user, pw));

    let (_, removed) = fixed.remove_user(&account, true).unwrap();
    assert_eq!(removed.map(|r| r.mode), Some(PasswdMode::Synchronized));
    assert_eq!(server.keycloak_id(&user), None, "deleted in Keycloak");

    let bare = unique_user("bare");
    let sent = fixed
        .add_user(&acct(&bare, PACKAGE), pw, Profile::default())
        .unwrap();
    assert_eq!(sent.map(|r| r.mode), Some(PasswdMode::Synchronized));
    assert!(server.keycloak_id(&bare).is_some());
    assert!(
        !server.login_works(&bare, pw),
        "not fully set up in Keycloak"
    );
    assert_ok(
        &login(&fixed, &bare, pw),
        AuthMode::Local,
        "created without a profile: local login",
    );
}
