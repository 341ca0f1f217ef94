//! `config.yaml` → a typed, validated [`Config`].
//!
//! Two stages, as ripgrep does with its flags: [`RawConfig`] only mirrors the file (serde, unknown
//! keys refused), then [`Config::from_raw`] applies the preset, checks every value and resolves
//! paths and secrets. Every error names the file and the key. serde_yaml 0.9 is deprecated but
//! was named by the project's user; it is used only here.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variable that overrides `keycloak.client_secret` (also: `*_FILE` and a systemd
/// credential, see [`secrets`]).
pub const ENV_CLIENT_SECRET: &str = "KEYCLOAK_CLIENT_SECRET";
/// Environment variable that overrides `keycloak.admin_client_secret`.
pub const ENV_ADMIN_CLIENT_SECRET: &str = "KEYCLOAK_ADMIN_CLIENT_SECRET";

/// A config problem, always naming the file and, where there is one, the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {file}: {reason}")]
    Read {
        /// The file concerned.
        file: PathBuf,
        /// What was wrong, in words.
        reason: String,
    },
    /// The YAML does not parse or does not fit the layout (serde names the key).
    #[error("config file {file}: {reason}")]
    Parse {
        /// The file concerned.
        file: PathBuf,
        /// What was wrong, in words.
        reason: String,
    },
    /// A secret's sources disagree, or its file cannot be used (see [`secrets`]). Never
    /// quotes the secret.
    #[error("config file {file}: {key}: {reason}")]
    Secret {
        /// The config file (the secret's default lives there).
        file: PathBuf,
        /// The secret's config key.
        key: &'static str,
        /// What was wrong, naming the variable or file.
        reason: String,
    },
    /// A value is out of range or malformed.
    #[error("config file {file}: {key}: {reason}")]
    Invalid {
        /// The file concerned.
        file: PathBuf,
        /// The config key at fault.
        key: String,
        /// What was wrong, in words.
        reason: String,
    },
}

/// A secret string: never printed by `Debug`, never logged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value, for the one place that sends it to Keycloak.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// True when no secret was configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(empty)"
        } else {
            "Secret(***)"
        })
    }
}

/// The resilience presets of the original design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// 1 failure opens, 30 s cooldown, 48 h grace.
    HighAvailability,
    /// 3 failures, 60 s, 24 h.
    Balanced,
    /// 5 failures, 120 s, 12 h.
    KeycloakFirst,
}

impl Preset {
    /// (failure_threshold, cooldown_seconds, token_grace_period_hours)
    fn values(self) -> (u32, u64, u64) {
        match self {
            Preset::HighAvailability => (1, 30, 48),
            Preset::Balanced => (3, 60, 24),
            Preset::KeycloakFirst => (5, 120, 12),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stage 1: the file as written, and the steps that build each section (in `raw`).

pub mod limits;
mod raw;
pub mod secrets;

pub use raw::RawConfig;

// ---------------------------------------------------------------------------------------------
// Stage 2: the typed configuration.

/// Where to reach Keycloak and as whom.
#[derive(Debug, Clone)]
pub struct KeycloakConfig {
    /// Base URL, without a trailing slash, e.g. `http://localhost:8080`.
    pub server_url: String,
    /// The default realm.
    pub realm: String,
    /// The login client (direct access grants).
    pub client_id: String,
    /// Its secret (empty for a public client).
    pub client_secret: Secret,
    /// The service-account client used for the admin API (sync).
    pub admin_client_id: String,
    /// Its secret.
    pub admin_client_secret: Secret,
    /// Whole-call timeout: every Keycloak call (connect, TLS, headers, body; every request of
    /// a call that makes several) ends within it from its start.
    pub timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// The bulkhead: Keycloak calls in flight at most (across the processes sharing the data
    /// directory); a login finding them all taken takes the cached or local path at once.
    pub max_concurrent_calls: usize,
    /// A call that answers, but slower than this, counts as a failure for the breaker.
    pub slow_call: Duration,
    /// The bound of a health probe someone waits for: `status`, and the half-open trial a
    /// one-shot login runs when no service's health thread does.
    pub trial_timeout: Duration,
    /// `keycloak.tls.ca_file`: a private CA trusted besides the system's roots.
    pub tls_ca: Option<TlsCa>,
    /// Per-package realm/client overrides.
    pub packages: BTreeMap<String, PackageConfig>,
}

/// A certificate authority read from `keycloak.tls.ca_file` (PEM, one or more certificates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCa {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// The PEM text, checked to hold at least one certificate.
    pub pem: Vec<u8>,
}

/// Where one package's users live; defaults to the top-level realm and client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageConfig {
    /// Realm of this package.
    pub realm: String,
    /// Login client of this package.
    pub client_id: String,
    /// Its secret.
    pub client_secret: Secret,
}

/// Breaker, cache and offline behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resilience {
    /// False: no breaker, no cached logins — every call goes to Keycloak.
    pub enabled: bool,
    /// The preset the values started from.
    pub preset: Preset,
    /// Consecutive availability failures that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit stays open before one trial.
    pub cooldown: Duration,
    /// How long a cached token can stand in for Keycloak.
    pub token_grace_period: Duration,
    /// Whether local-only logins may succeed while Keycloak is unreachable and no cached
    /// token matches (cached tokens are used either way).
    pub allow_offline_mode: bool,
    /// How long a health probe result is trusted.
    pub health_check_cache: Duration,
}

/// The long-running loop's timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Pause between sync cycles.
    pub sync_interval: Duration,
    /// Items per sync cycle.
    pub batch_size: usize,
    /// Pause between cleanups.
    pub cleanup_interval: Duration,
    /// Where `start` writes the Prometheus metrics after every cycle (node_exporter's textfile
    /// collector), resolved against the config file's folder; the CLI's `metrics` cannot open
    /// the database while `start` holds it.
    pub metrics_textfile: Option<PathBuf>,
    /// How long before its access token expires `start` refreshes the cached token of a user
    /// with a live session (0: never ahead of time).
    pub refresh_ahead: Duration,
    /// At most this many such refreshes a minute (0: proactive refresh off).
    pub refresh_per_minute: u32,
    /// The control socket.
    pub socket: SocketConfig,
}

/// The socket's file name inside the data directory, where `service.socket_path` puts it when
/// not set.
pub const SOCKET_FILE: &str = "control.sock";
/// `service.socket_mode` when not set: owner only.
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;
/// `service.application_ops` when not set: what a web application needs, nothing that
/// manages users or reads the queue.
pub const DEFAULT_APPLICATION_OPS: &[&str] = &[
    "login",
    "passwd",
    "authenticate",
    "cached-token",
    "refresh",
    "logout",
    "session-show",
    "status",
    "verify-token",
];

/// The control socket: where it is, who may connect, what other users may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    /// `service.socket_path`, resolved against the config file's folder; `None`: the data
    /// directory's [`SOCKET_FILE`] (see [`Config::socket_path`]).
    pub path: Option<PathBuf>,
    /// The group the socket file is given (a name or a numeric gid), if any.
    pub group: Option<String>,
    /// The socket file's permission bits.
    pub mode: u32,
    /// The ops a caller other than the service's own user and root may run.
    pub application_ops: Vec<String>,
}

/// How `verify-token` checks a token for another application (`keycloak.verify.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyConfig {
    /// How often `start` fetches each realm's issuer and keys again while Keycloak is up.
    pub keys_refresh: Duration,
    /// A token is for us if its `aud` names one of these clients, or its `azp` is one.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// While the circuit is open, a token expired less than this long ago is still accepted
    /// (marked `expired_in_grace`); zero: never. At most the token cache's grace period.
    pub outage_grace: Duration,
}

/// Which side decides when the local store and Keycloak disagree (`keycloak.authority.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Authority {
    /// Keycloak's answer wins whenever it can be asked (the default).
    Keycloak,
    /// The local store decides; Keycloak's disagreement is logged and counted only.
    Local,
}

/// Consistency from Keycloak back to the local store (see the README's "Consistency").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyConfig {
    /// Who decides a password both sides know differently.
    pub passwords: Authority,
    /// Who decides whether an account is enabled.
    pub accounts: Authority,
    /// A user only Keycloak knows gets a local account at their first good login.
    pub provision: bool,
    /// `user add/disable/enable` and `user remove --in-keycloak` are replayed to Keycloak.
    pub manage_users: bool,
    /// How often `start` reconciles with Keycloak's user list (zero: never).
    pub reconcile_interval: Duration,
}

/// Local authentication policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Failed logins within the window that lock an account (0: never lock).
    pub max_failed_logins: u32,
    /// The window failures are counted in.
    pub failure_window: Duration,
    /// How long a locked account stays locked.
    pub lockout: Duration,
    /// How long a session lives.
    pub session_ttl: Duration,
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages).
    pub source: PathBuf,
    /// Keycloak connection.
    pub keycloak: KeycloakConfig,
    /// Resilience settings (preset applied).
    pub resilience: Resilience,
    /// Token verification for other applications.
    pub verify: VerifyConfig,
    /// Which side decides what, and whether users are managed in Keycloak from here.
    pub consistency: ConsistencyConfig,
    /// The sled directory, resolved against the config file's folder.
    pub storage_path: PathBuf,
    /// Loop timing.
    pub service: ServiceConfig,
    /// Local authentication policy.
    pub auth: AuthConfig,
}

impl Config {
    /// Reads, parses and validates `path`, taking secrets from the environment where set.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = limits::read(path)?;
        Self::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses YAML text that came from `path`; `env` looks up secret overrides.
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        limits::check(text, path)?;
        let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            file: path.to_path_buf(),
            reason: without_string_values(&one_line(&e.to_string())),
        })?;
        Self::from_raw(raw, path, env)
    }

    /// Stage 2: builds the configuration from what the file said (see [`RawConfig`]): presets
    /// applied, defaults filled in, secrets taken from the environment, every value checked.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the file, the key and what is wrong.
    pub fn from_raw(
        raw: RawConfig,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        raw.build(path, env)
    }

    /// Checks that `package` may be used: when `keycloak.packages` lists packages, only those
    /// exist (a typo must not silently land in the default realm); when it lists none, every
    /// package is served by the top-level realm and client.
    ///
    /// # Errors
    ///
    /// A one-line message naming the package and the configured ones.
    pub fn check_package(&self, package: &str) -> Result<(), String> {
        let known = &self.keycloak.packages;
        if known.is_empty() || known.contains_key(package) {
            return Ok(());
        }
        Err(format!(
            "unknown package {package:?}: {} configures only {} (keycloak.packages)",
            self.source.display(),
            known
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// Where the control socket is: `service.socket_path` (or `--socket`), else
    /// [`SOCKET_FILE`] in the data directory (which follows `--data-dir`).
    pub fn socket_path(&self) -> PathBuf {
        self.service
            .socket
            .path
            .clone()
            .unwrap_or_else(|| self.storage_path.join(SOCKET_FILE))
    }

    /// The realm and login client that serve `package`.
    pub fn package(&self, package: &str) -> PackageConfig {
        self.keycloak
            .packages
            .get(package)
            .cloned()
            .unwrap_or_else(|| PackageConfig {
                realm: self.keycloak.realm.clone(),
                client_id: self.keycloak.client_id.clone(),
                client_secret: self.keycloak.client_secret.clone(),
            })
    }
}

/// serde quotes a mistyped string value back ("invalid type: string \"…\", expected …"); a secret
/// pasted under the wrong key must not end up in an error message, so the value is dropped.
fn without_string_values(msg: &str) -> String {
    const MARK: &str = "string \"";
    match (msg.find(MARK), msg.find("\", expected")) {
        (Some(start), Some(end)) if end > start => {
            format!("{}a string{}", &msg[..start], &msg[end + 1..])
        }
        _ => msg.to_string(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, ConfigError> {
        Config::parse(yaml, Path::new("/etc/kr/config.yaml"), &|_| None)
    }

    const MINIMAL: &str =
        "keycloak:\n  server_url: http://localhost:8080/\n  realm: demo\n  client_id: webapp\n";

    #[test]
    fn minimal_file_gets_balanced_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.keycloak.server_url, "http://localhost:8080");
        assert_eq!(c.resilience.failure_threshold, 3);
        assert_eq!(c.resilience.cooldown, Duration::from_secs(60));
        assert_eq!(
            c.resilience.token_grace_period,
            Duration::from_secs(24 * 3600)
        );
        assert_eq!(c.storage_path, Path::new("/etc/kr/data"));
        assert_eq!(c.keycloak.admin_client_id, "keycloak-resilient-sync");
        assert_eq!(c.service.batch_size, 100);
        assert_eq!(c.auth.max_failed_logins, 5);
    }

    #[test]
    fn max_failed_logins_allows_zero_and_says_so_when_out_of_range() {
        let c = parse(&format!("{MINIMAL}auth:\n  max_failed_logins: 0\n")).unwrap();
        assert_eq!(c.auth.max_failed_logins, 0);
        let e = parse(&format!("{MINIMAL}auth:\n  max_failed_logins: -1\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("auth.max_failed_logins") && e.contains("from 0 (locking off)"),
            "{e}"
        );
    }

    #[test]
    fn presets_apply_and_explicit_keys_win() {
        let c = parse(&format!(
            "{MINIMAL}  resilience:\n    preset: high_availability\n"
        ))
        .unwrap();
        assert_eq!(
            (
                c.resilience.failure_threshold,
                c.resilience.cooldown.as_secs(),
                c.resilience.token_grace_period.as_secs()
            ),
            (1, 30, 48 * 3600)
        );
        let c = parse(&format!(
            "{MINIMAL}  resilience:\n    preset: keycloak_first\n    cooldown_seconds: 7\n"
        ))
        .unwrap();
        assert_eq!(
            (
                c.resilience.failure_threshold,
                c.resilience.cooldown.as_secs()
            ),
            (5, 7)
        );
    }

    /// Issue 14: the bulkhead and the two call bounds, defaulted and checked against the
    /// timeout, each error naming its key.
    #[test]
    fn call_limits_default_and_are_checked_against_the_timeout() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.keycloak.max_concurrent_calls, 10);
        assert_eq!(c.keycloak.slow_call, Duration::from_secs(3));
        assert_eq!(c.keycloak.trial_timeout, Duration::from_millis(500));
        let c = parse(&format!(
            "{MINIMAL}  timeout_seconds: 1
"
        ))
        .unwrap();
        assert_eq!(c.keycloak.slow_call, Duration::from_secs(1));
        let c = parse(&format!(
            "{MINIMAL}  max_concurrent_calls: 2
  slow_call_seconds: 4
  trial_timeout_ms: 150
"
        ))
        .unwrap();
        assert_eq!(c.keycloak.max_concurrent_calls, 2);
        assert_eq!(c.keycloak.slow_call, Duration::from_secs(4));
        assert_eq!(c.keycloak.trial_timeout, Duration::from_millis(150));
        for (line, key) in [
            ("max_concurrent_calls: 0", "keycloak.max_concurrent_calls"),
            ("slow_call_seconds: 6", "keycloak.slow_call_seconds"),
            ("trial_timeout_ms: 10", "keycloak.trial_timeout_ms"),
            ("trial_timeout_ms: 5001", "keycloak.trial_timeout_ms"),
        ] {
            let err = parse(&format!(
                "{MINIMAL}  {line}
"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains(key), "{line}: {err}");
        }
    }

    #[test]
    fn env_secrets_override_the_file() {
        let yaml = format!("{MINIMAL}  client_secret: from-file\n");
        let c = Config::parse(&yaml, Path::new("c.yaml"), &|name| {
            (name == ENV_CLIENT_SECRET).then(|| "from-env".to_string())
        })
        .unwrap();
        assert_eq!(c.keycloak.client_secret.expose(), "from-env");
        assert!(c.keycloak.admin_client_secret.is_empty());
        assert!(!format!("{c:?}").contains("from-env"));
    }

    #[test]
    fn packages_inherit_and_override() {
        let yaml = format!("{MINIMAL}  packages:\n    billing:\n      realm: finance\n");
        let c = parse(&yaml).unwrap();
        assert_eq!(c.package("billing").realm, "finance");
        assert_eq!(c.package("billing").client_id, "webapp");
        assert_eq!(c.package("other").realm, "demo");
    }

    #[test]
    fn bad_values_name_the_file_and_key() {
        let cases = [
            (
                format!("{MINIMAL}  resilience:\n    failure_threshold: 0\n"),
                "keycloak.resilience.failure_threshold",
            ),
            (
                format!("{MINIMAL}  resilience:\n    cooldown_seconds: -5\n"),
                "keycloak.resilience.cooldown_seconds",
            ),
            (format!("{MINIMAL}  resilience:\n    bogus: 1\n"), "bogus"),
            (
                format!("{MINIMAL}  resilience:\n    failure_threshold: three\n"),
                "failure_threshold",
            ),
            (
                format!("{MINIMAL}  resilience:\n    preset: turbo\n"),
                "turbo",
            ),
            (
                MINIMAL.replace("http://localhost:8080/", "ftp://x"),
                "keycloak.server_url",
            ),
            (
                MINIMAL.replace("http://localhost:8080/", "not a url"),
                "keycloak.server_url",
            ),
            (MINIMAL.replace("  realm: demo\n", ""), "realm"),
            (
                format!("{MINIMAL}service:\n  batch_size: 0\n"),
                "service.batch_size",
            ),
            (
                format!("{MINIMAL}  resilience:\n    token_grace_period_hours: 4294967295\n"),
                "token_grace_period_hours",
            ),
            ("keycloak: [1, 2".to_string(), "config.yaml"),
        ];
        for (yaml, key) in cases {
            let err = parse(&yaml).unwrap_err().to_string();
            assert!(
                err.starts_with("config file /etc/kr/config.yaml: "),
                "{err}"
            );
            assert!(err.contains(key), "{key} not in {err}");
            assert!(!err.contains('\n'), "multi-line: {err}");
        }
    }

    /// Issue 7 point 6: realm and package names follow the one name rule.
    #[test]
    fn realm_and_package_names_follow_the_name_rule() {
        for (yaml, key) in [
            (
                MINIMAL.replace("realm: demo", "realm: \"demo?x=1\""),
                "keycloak.realm: ",
            ),
            (
                MINIMAL.replace("realm: demo", "realm: \"demo#frag\""),
                "keycloak.realm: ",
            ),
            (
                MINIMAL.replace("realm: demo", "realm: \"..\""),
                "keycloak.realm: ",
            ),
            (
                MINIMAL.replace("realm: demo", "realm: \"a/b\""),
                "keycloak.realm: ",
            ),
            (
                MINIMAL.replace("realm: demo", "realm: \"a%2Fb\""),
                "keycloak.realm: ",
            ),
            (
                format!("{MINIMAL}  packages:\n    billing:\n      realm: \"../master\"\n"),
                "keycloak.packages.billing.realm: ",
            ),
            (
                format!("{MINIMAL}  packages:\n    \"a/b\":\n      realm: finance\n"),
                "keycloak.packages: ",
            ),
            (
                format!("{MINIMAL}  packages:\n    \"evil\\u202E\":\n      realm: finance\n"),
                "keycloak.packages: ",
            ),
        ] {
            let err = parse(&yaml).unwrap_err().to_string();
            assert!(
                err.starts_with("config file /etc/kr/config.yaml: "),
                "{err}"
            );
            assert!(err.contains(key), "{key} not in {err}");
            assert!(!err.contains('\u{202E}'), "{err}");
        }
    }

    /// Issue 7 point 6: with packages configured, any other package is a clear error.
    #[test]
    fn unknown_packages_are_named_with_the_configured_ones() {
        let c = parse(&format!(
            "{MINIMAL}  packages:\n    billing:\n      realm: finance\n    shop: {{}}\n"
        ))
        .unwrap();
        assert_eq!(c.check_package("billing"), Ok(()));
        let err = c.check_package("biling").unwrap_err();
        assert!(err.contains("unknown package \"biling\""), "{err}");
        assert!(err.contains("billing, shop"), "{err}");
        assert!(err.contains("/etc/kr/config.yaml"), "{err}");
        assert_eq!(parse(MINIMAL).unwrap().check_package("anything"), Ok(()));
    }

    /// Issue 7 point 7: credentials in server_url are refused and never quoted back.
    #[test]
    fn credentials_in_the_server_url_are_refused_unquoted() {
        for url in [
            "http://kcuser:s3cret-pw@localhost:8080",
            "https://kcuser@localhost",
            "http://:s3cret-pw@localhost",
        ] {
            let err = parse(&MINIMAL.replace("http://localhost:8080/", url))
                .unwrap_err()
                .to_string();
            assert!(err.contains("keycloak.server_url: "), "{err}");
            assert!(err.contains("/etc/kr/config.yaml"), "{err}");
            assert!(!err.contains("s3cret") && !err.contains("kcuser"), "{err}");
        }
        let err = parse(&MINIMAL.replace("http://localhost:8080/", "http://u:s3cret pw@h"))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn a_mistyped_string_value_is_not_quoted_back() {
        let yaml = format!("{MINIMAL}  resilience:\n    failure_threshold: \"s3cret-value\"\n");
        let err = parse(&yaml).unwrap_err().to_string();
        assert!(err.contains("failure_threshold"), "{err}");
        assert!(err.contains("invalid type: a string, expected"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    /// Issue 13 point 1: the socket's place, group and mode.
    #[test]
    fn socket_settings_default_and_resolve_like_storage_path() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.socket_path(), Path::new("/etc/kr/data/control.sock"));
        assert_eq!(c.service.socket.mode, 0o600);
        assert_eq!(c.service.socket.group, None);
        assert_eq!(c.service.socket.application_ops, DEFAULT_APPLICATION_OPS);
        let mut moved = c.clone();
        moved.storage_path = PathBuf::from("/srv/kr");
        assert_eq!(moved.socket_path(), Path::new("/srv/kr/control.sock"));
        let c = parse(&format!(
            "{MINIMAL}service:\n  socket_path: run/kr.sock\n  socket_group: www-data\n  socket_mode: \"0660\"\n  application_ops: [login, status]\n"
        ))
        .unwrap();
        assert_eq!(c.socket_path(), Path::new("/etc/kr/run/kr.sock"));
        assert_eq!(c.service.socket.group.as_deref(), Some("www-data"));
        assert_eq!(c.service.socket.mode, 0o660);
        assert_eq!(c.service.socket.application_ops, ["login", "status"]);
        for (mode, want) in [
            ("\"660\"", 0o660),
            ("\"0o640\"", 0o640),
            ("'0600'", 0o600),
            ("0660", 0o660),
        ] {
            let c = parse(&format!("{MINIMAL}service:\n  socket_mode: {mode}\n")).unwrap();
            assert_eq!(c.service.socket.mode, want, "{mode}");
        }
    }

    #[test]
    fn bad_socket_settings_say_what_is_accepted() {
        for (value, want) in [
            ("660", "quote it"),
            ("0o660", "quote it"),
            ("\"rw-rw----\"", "quoted octal string"),
            ("\"0668\"", "quoted octal string"),
            ("\"4660\"", "at most 0777"),
            ("\"0060\"", "must keep read and write"),
        ] {
            let err = parse(&format!("{MINIMAL}service:\n  socket_mode: {value}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("service.socket_mode: "), "{err}");
            assert!(err.contains(want), "{value}: {err}");
            if want == "quote it" || want == "quoted octal string" {
                assert!(err.contains("\"0660\""), "names the accepted forms: {err}");
            }
        }
        let err = parse(&format!(
            "{MINIMAL}service:\n  application_ops: [\"user add\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("service.application_ops: "), "{err}");
        let err = parse(&format!("{MINIMAL}service:\n  socket_group: \"a:b\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("service.socket_group: "), "{err}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = Config::load(Path::new("/nonexistent/kr.yaml"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config file /nonexistent/kr.yaml: not found (pass --config FILE)"
        );
    }

    #[test]
    fn shipped_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.resilience.preset, Preset::Balanced);
    }
}
