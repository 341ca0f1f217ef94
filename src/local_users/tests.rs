//! Unit tests of the local user store (the import's are in `import.rs`).

use super::*;
pub(super) use crate::account::acct;
use crate::clock::{Clock, ManualClock};
use chrono::TimeZone;
use pbkdf2::password_hash::CustomizedPasswordHasher;

pub(super) fn setup() -> (LocalUsers, ManualClock) {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap());
    let policy = LockoutPolicy {
        max_failures: 3,
        window: std::time::Duration::from_secs(600),
        lockout: std::time::Duration::from_secs(1800),
    };
    let users = LocalUsers::new(
        Arc::new(Store::temporary().unwrap()),
        Arc::new(clock.clone()),
        policy,
    );
    (users, clock)
}

pub(super) fn pbkdf2_hash(password: &str) -> String {
    pbkdf2::Pbkdf2::default()
        .hash_password_customized(
            password.as_bytes(),
            b"saltsaltsaltsalt",
            Some("pbkdf2-sha512"),
            None,
            pbkdf2::Params::new_with_output_len(1000, 64).unwrap(),
        )
        .unwrap()
        .to_string()
}

pub(super) fn is_ok(v: &Verification) -> bool {
    matches!(v, Verification::Ok { .. })
}

#[test]
fn add_refuses_duplicates_whatever_the_case() {
    let (users, _) = setup();
    users.add(&acct("Alice", "web"), "pw1").unwrap();
    let err = users.add(&acct("alice", "web"), "pw2").unwrap_err();
    assert!(matches!(err, UserError::Exists { .. }), "{err}");
    assert!(err.to_string().contains("\"alice\"") && err.to_string().contains("\"web\""));
    // Another package is another account.
    users.add(&acct("ALICE", "api"), "pw3").unwrap();
    let a = users.get(&acct("aLiCe", "web")).unwrap().unwrap();
    assert_eq!(a.username, "Alice");
    assert!(a.hash.starts_with("$argon2id$"));
    assert!(a.enabled);
    assert!(
        !format!("{a:?}").contains("argon2"),
        "Debug must hide the hash"
    );
    let list = users.list().unwrap();
    let names: Vec<_> = list
        .iter()
        .map(|u| (u.package.as_str(), u.username.as_str()))
        .collect();
    assert_eq!(names, [("api", "ALICE"), ("web", "Alice")]);
}

#[test]
fn names_and_passwords_are_checked_without_echo() {
    let (users, _) = setup();
    for (user, package, password, field) in [
        ("", "web", "pw", "username"),
        ("bob", "", "pw", "package"),
        ("bo\nb", "web", "pw", "username"),
        (&*"x".repeat(256), "web", "pw", "username"),
        ("bob", "web", "", "password"),
        ("bob", "web", &*"s".repeat(1025), "password"),
    ] {
        // The names are checked where the account is made, the password by `add`.
        let err = Account::new(user, package)
            .map_err(UserError::from)
            .and_then(|account| users.add(&account, password))
            .unwrap_err();
        assert!(matches!(err, UserError::BadInput(_)));
        let msg = err.to_string();
        assert!(msg.starts_with(field), "{msg}");
        assert!(!msg.contains("sss"), "{msg}");
    }
    users
        .add(&acct(&"é".repeat(255), "web"), &"p".repeat(1024))
        .unwrap();
}

#[test]
fn verify_ok_invalid_unknown_disabled() {
    let (users, _) = setup();
    users.add(&acct("bob", "web"), "right").unwrap();
    let stored = users.get(&acct("bob", "web")).unwrap().unwrap().hash;
    assert_eq!(
        users.verify(&acct("BOB", "web"), "right").unwrap(),
        Verification::Ok {
            hash: stored.clone()
        }
    );
    assert_eq!(
        users.verify(&acct("bob", "web"), "wrong").unwrap(),
        Verification::Invalid
    );
    assert_eq!(
        users.verify(&acct("nobody", "web"), "right").unwrap(),
        Verification::Invalid
    );
    assert_eq!(
        users.verify(&acct("bob", "api"), "right").unwrap(),
        Verification::Invalid
    );
    users.set_enabled(&acct("bob", "web"), false).unwrap();
    assert_eq!(
        users.verify(&acct("bob", "web"), "right").unwrap(),
        Verification::Disabled
    );
    assert_eq!(
        users.verify(&acct("bob", "web"), "wrong").unwrap(),
        Verification::Invalid,
        "a disabled account is named only to someone who knows its password"
    );
    users.set_enabled(&acct("Bob", "web"), true).unwrap();
    assert!(is_ok(&users.verify(&acct("bob", "web"), "right").unwrap()));
    // One failure recorded earlier, cleared by the success.
    assert!(users
        .get(&acct("bob", "web"))
        .unwrap()
        .unwrap()
        .lockout
        .is_clear());
    assert!(!format!("{:?}", Verification::Ok { hash: stored }).contains("argon2"));
}

#[test]
fn lockout_refuses_even_the_right_password_until_it_expires() {
    let (users, clock) = setup();
    users.add(&acct("carol", "web"), "right").unwrap();
    assert_eq!(
        users.verify(&acct("carol", "web"), "w1").unwrap(),
        Verification::Invalid
    );
    clock.advance(chrono::Duration::minutes(1));
    assert_eq!(
        users.verify(&acct("carol", "web"), "w2").unwrap(),
        Verification::Invalid
    );
    assert!(users.locked().unwrap().is_empty());
    clock.advance(chrono::Duration::minutes(1));
    assert_eq!(
        users.verify(&acct("carol", "web"), "w3").unwrap(),
        Verification::Invalid
    );
    let until = clock.now() + chrono::Duration::minutes(30);
    assert_eq!(
        users.verify(&acct("carol", "web"), "right").unwrap(),
        Verification::Locked { until }
    );
    assert_eq!(
        users.locked().unwrap(),
        vec![("carol".to_string(), "web".to_string(), until)]
    );
    assert_eq!(
        users.verify(&acct("carol", "web"), "wrong").unwrap(),
        Verification::Invalid,
        "a lock is named only to someone who knows the password"
    );
    clock.advance(chrono::Duration::minutes(29));
    assert_eq!(
        users.verify(&acct("carol", "web"), "right").unwrap(),
        Verification::Locked { until }
    );
    clock.advance(chrono::Duration::minutes(1));
    assert!(is_ok(
        &users.verify(&acct("carol", "web"), "right").unwrap()
    ));
    assert!(users.locked().unwrap().is_empty());
    // unlock lifts a lock early.
    for _ in 0..3 {
        users.verify(&acct("carol", "web"), "nope").unwrap();
    }
    assert!(matches!(
        users.verify(&acct("carol", "web"), "right").unwrap(),
        Verification::Locked { .. }
    ));
    users.unlock(&acct("carol", "web")).unwrap();
    assert!(is_ok(
        &users.verify(&acct("carol", "web"), "right").unwrap()
    ));
}

#[test]
fn changes_to_unknown_users_are_not_found() {
    let (users, clock) = setup();
    assert!(matches!(
        users.set_password(&acct("ghost", "web"), "pw"),
        Err(UserError::NotFound { .. })
    ));
    assert!(matches!(
        users.set_enabled(&acct("ghost", "web"), false),
        Err(UserError::NotFound { .. })
    ));
    assert!(matches!(
        users.remove(&acct("ghost", "web")),
        Err(UserError::NotFound { .. })
    ));
    assert!(matches!(
        users.unlock(&acct("ghost", "web")),
        Err(UserError::NotFound { .. })
    ));
    let err = users.remove(&acct("ghost", "web")).unwrap_err().to_string();
    assert!(
        err.contains("\"ghost\"") && err.contains("\"web\""),
        "{err}"
    );

    users.add(&acct("gina", "web"), "old").unwrap();
    let created = clock.now();
    clock.advance(chrono::Duration::minutes(5));
    let new_hash = users.set_password(&acct("GINA", "web"), "new").unwrap();
    let g = users.get(&acct("gina", "web")).unwrap().unwrap();
    assert_eq!(g.hash, new_hash);
    assert_eq!((g.created_at, g.updated_at), (created, clock.now()));
    assert_eq!(
        users.verify(&acct("gina", "web"), "old").unwrap(),
        Verification::Invalid
    );
    assert!(is_ok(&users.verify(&acct("gina", "web"), "new").unwrap()));
    assert!(matches!(
        users.set_password(&acct("gina", "web"), ""),
        Err(UserError::BadInput(m)) if m == "new password must not be empty"
    ));
    users.remove(&acct("Gina", "web")).unwrap();
    assert!(users.get(&acct("gina", "web")).unwrap().is_none());
    assert_eq!(
        users.verify(&acct("gina", "web"), "new").unwrap(),
        Verification::Invalid
    );
}
