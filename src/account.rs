//! Who a login, a token, a session or a queued change is about: a user in a package.
//!
//! [`Account`] is the (user, package) pair, checked once when it is made, so that the stores
//! below the front doors take one value that is known to be good instead of two strings each
//! of them checks again. The name rule lives here and nowhere else ([`check_name`]; the
//! config's realms and package names use it too), and so does what makes two accounts the
//! same: usernames compare case-insensitively, as in Keycloak ([`user_key`]); an account keeps
//! the spelling it was made with.
//!
//! A pure leaf: no I/O, no other module of the crate.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest user, package or realm name accepted (Keycloak's own username limit is 255).
pub const MAX_NAME_CHARS: usize = 255;

/// Characters no name may hold: path and URL delimiters (`/ \ ? # %`), so that a name can never
/// change a request path or a file path, whatever encodes it.
pub const NAME_FORBIDDEN: &[char] = &['/', '\\', '?', '#', '%'];

/// What is wrong with a name, by the one rule (see [`check_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameProblem {
    /// Empty, or only spaces.
    Empty,
    /// More than [`MAX_NAME_CHARS`] characters.
    TooLong,
    /// A control character (keys use 0x00 as a separator).
    Control,
    /// An invisible formatting character: they make one name look like another.
    Invisible,
    /// One of [`NAME_FORBIDDEN`].
    Forbidden,
    /// `.` or `..`.
    Dot,
}

impl NameProblem {
    /// What is wrong with `value`, or `None` when it is a good name.
    pub fn of(value: &str) -> Option<NameProblem> {
        if value.trim().is_empty() {
            Some(NameProblem::Empty)
        } else if value.chars().count() > MAX_NAME_CHARS {
            Some(NameProblem::TooLong)
        } else if value.chars().any(char::is_control) {
            Some(NameProblem::Control)
        } else if value.chars().any(is_invisible_format) {
            Some(NameProblem::Invisible)
        } else if value.contains(NAME_FORBIDDEN) {
            Some(NameProblem::Forbidden)
        } else if value == "." || value == ".." {
            Some(NameProblem::Dot)
        } else {
            None
        }
    }

    /// The one-line message for a name called `field` (the value itself is never quoted).
    pub fn message(self, field: &str) -> String {
        match self {
            NameProblem::Empty => format!("{field} must not be empty"),
            NameProblem::TooLong => format!("{field} is longer than {MAX_NAME_CHARS} characters"),
            NameProblem::Control => format!("{field} contains a control character"),
            NameProblem::Invisible => format!(
                "{field} contains an invisible formatting character (bidi control, zero-width or similar)"
            ),
            NameProblem::Forbidden => format!("{field} must not contain any of / \\ ? # %"),
            NameProblem::Dot => format!("{field} must not be . or .."),
        }
    }
}

/// The one rule for user, package and realm names wherever they enter (CLI arguments, the
/// config's packages and realms, sync items, local users and their import):
/// - not empty (nor only spaces), at most [`MAX_NAME_CHARS`] characters;
/// - no control characters (keys use 0x00 as a separator) and no invisible formatting
///   characters: bidi controls such as U+202E, zero-width characters, the BOM, tags — they
///   make one name look like another;
/// - none of [`NAME_FORBIDDEN`];
/// - not `.` or `..`.
///
/// The message names `field` and quotes nothing.
///
/// # Errors
///
/// A one-line message naming `field` and what is wrong.
pub fn check_name(field: &str, value: &str) -> Result<(), String> {
    match NameProblem::of(value) {
        Some(problem) => Err(problem.message(field)),
        None => Ok(()),
    }
}

/// Unicode format characters (category Cf) and the line/paragraph separators: invisible, and
/// some (the bidi controls) reorder the text around them.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// The key of a (user, package) pair in every per-account tree: usernames compare
/// case-insensitively, as in Keycloak (lowercased, then 0x00, then the package).
pub fn user_key(user: &str, package: &str) -> Vec<u8> {
    let mut key = user.to_lowercase().into_bytes();
    key.push(0);
    key.extend_from_slice(package.as_bytes());
    key
}

/// Which half of an account a [`NameError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameField {
    /// The username.
    User,
    /// The package.
    Package,
}

impl NameField {
    /// The field's name in messages: `username` or `package`.
    pub fn label(self) -> &'static str {
        match self {
            NameField::User => "username",
            NameField::Package => "package",
        }
    }
}

/// Why [`Account::new`] refused a pair: which field, and what is wrong with it. Displayed as
/// the name rule's message for that field (`username must not be empty`); a door that names
/// its fields otherwise (`--user`) says so with [`NameError::message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.problem.message(self.field.label()))]
pub struct NameError {
    field: NameField,
    problem: NameProblem,
}

impl NameError {
    /// The field that broke the rule.
    pub fn field(&self) -> NameField {
        self.field
    }

    /// What is wrong with it.
    pub fn problem(&self) -> NameProblem {
        self.problem
    }

    /// The message with the fields called `user_label` and `package_label` (as a door names
    /// them: `--user`, `user`, …).
    pub fn message(&self, user_label: &str, package_label: &str) -> String {
        self.problem.message(match self.field {
            NameField::User => user_label,
            NameField::Package => package_label,
        })
    }
}

/// A user in a package, both names checked by [`check_name`]. Two accounts are equal when
/// their [`user_key`]s are: the username's case does not matter, its spelling is kept.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "RawAccount")]
pub struct Account {
    /// The username, as spelled when the account was made.
    user: String,
    /// The package (application) the user belongs to.
    package: String,
}

/// The unchecked shape an [`Account`] is read from.
#[derive(Deserialize)]
struct RawAccount {
    user: String,
    package: String,
}

impl TryFrom<RawAccount> for Account {
    type Error = NameError;

    fn try_from(raw: RawAccount) -> Result<Account, NameError> {
        Account::new(raw.user, raw.package)
    }
}

impl Account {
    /// The account of `user` in `package`, once both names pass the rule (the username is
    /// checked first).
    ///
    /// # Errors
    ///
    /// [`NameError`] naming the first field that breaks the rule, and why.
    pub fn new(user: impl Into<String>, package: impl Into<String>) -> Result<Account, NameError> {
        let (user, package) = (user.into(), package.into());
        for (field, value) in [(NameField::User, &user), (NameField::Package, &package)] {
            if let Some(problem) = NameProblem::of(value) {
                return Err(NameError { field, problem });
            }
        }
        Ok(Account { user, package })
    }

    /// The username, as spelled when the account was made.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The package.
    pub fn package(&self) -> &str {
        &self.package
    }

    /// The account's key in the per-account trees (see [`user_key`]).
    pub fn key(&self) -> Vec<u8> {
        user_key(&self.user, &self.package)
    }
}

impl PartialEq for Account {
    fn eq(&self, other: &Account) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Account {}

impl std::hash::Hash for Account {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Account({:?}/{:?})", self.user, self.package)
    }
}

/// `user/package`, as the logs write it (neither name can hold a `/`).
impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.user, self.package)
    }
}

/// The account of `user` in `package`, for tests (whose names are good names).
#[cfg(test)]
pub(crate) fn acct(user: &str, package: &str) -> Account {
    Account::new(user, package).expect("a test account's names pass the rule")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 7 point 6: one rule for names.
    #[test]
    fn names_refuse_paths_dots_and_invisible_characters() {
        for ok in [
            "alice",
            "Alice.Smith",
            "a@example.com",
            "école",
            "a b",
            "...",
            ".a",
        ] {
            assert_eq!(check_name("user", ok), Ok(()), "{ok:?}");
        }
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        for (bad, why) in [
            ("", "empty"),
            ("  ", "empty"),
            (".", ". or .."),
            ("..", ". or .."),
            ("../../etc/passwd", "/"),
            ("a/b", "/"),
            ("a\\b", "/"),
            ("realm?x=1", "?"),
            ("realm#x", "#"),
            ("a%2Fb", "%"),
            ("evil\u{202E}gnp.exe", "invisible"),
            ("zero\u{200B}width", "invisible"),
            ("\u{FEFF}bom", "invisible"),
            ("nul\0", "control"),
            ("tab\t", "control"),
            (long.as_str(), "longer than"),
        ] {
            let err = check_name("user", bad).expect_err(bad);
            assert!(err.starts_with("user "), "{err}");
            assert!(err.contains(why), "{bad:?}: {err}");
            if !bad.is_empty() && bad.trim().len() > 2 {
                assert!(!err.contains(bad), "the value is quoted: {err}");
            }
        }
    }

    #[test]
    fn user_keys_ignore_case() {
        assert_eq!(user_key("Alice", "web"), user_key("alice", "web"));
        assert_ne!(user_key("alice", "web"), user_key("alice", "api"));
    }

    #[test]
    fn an_account_is_checked_once_and_names_the_field() {
        let a = Account::new("Alice", "web").unwrap();
        assert_eq!((a.user(), a.package()), ("Alice", "web"));
        assert_eq!(a.to_string(), "Alice/web");
        assert_eq!(a.key(), user_key("alice", "web"));

        let err = Account::new("", "web").unwrap_err();
        assert_eq!(err.field(), NameField::User);
        assert_eq!(err.problem(), NameProblem::Empty);
        assert_eq!(err.to_string(), "username must not be empty");
        assert_eq!(
            err.message("--user", "--package"),
            "--user must not be empty"
        );

        // The username is checked first; then the package.
        let err = Account::new("a/b", "..").unwrap_err();
        assert_eq!(err.field(), NameField::User);
        let err = Account::new("bob", "a\u{202E}b").unwrap_err();
        assert_eq!(err.field(), NameField::Package);
        assert_eq!(
            err.to_string(),
            check_name("package", "a\u{202E}b").unwrap_err()
        );
        assert_eq!(
            err.message("user", "pkg"),
            check_name("pkg", "a\u{202E}b").unwrap_err()
        );
    }

    #[test]
    fn accounts_compare_ignoring_the_usernames_case() {
        let a = Account::new("Alice", "web").unwrap();
        assert_eq!(a, Account::new("aLiCe", "web").unwrap());
        assert_ne!(a, Account::new("alice", "api").unwrap());
        let set: std::collections::HashSet<_> = [a.clone(), Account::new("ALICE", "web").unwrap()]
            .into_iter()
            .collect();
        assert_eq!(set.len(), 1);
        assert_eq!(format!("{a:?}"), "Account(\"Alice\"/\"web\")");
    }

    #[test]
    fn serde_checks_what_it_reads() {
        let a = Account::new("bob", "web").unwrap();
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"user":"bob","package":"web"}"#);
        let back: Account = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        let err = serde_json::from_str::<Account>(r#"{"user":"bob","package":"a/b"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("package must not contain"), "{err}");
    }
}
