//! Stage 1 of reading `config.yaml`: the file as written ([`RawConfig`], serde only, unknown
//! keys refused), and the steps that turn each of its sections into the typed configuration
//! (defaults and presets applied, secrets from the environment or files, every value checked, each
//! error naming the file and the key).

use super::{
    AuthConfig, Config, ConfigError, KeycloakConfig, PackageConfig, Preset, Resilience, Secret,
    ServiceConfig, SocketConfig, DEFAULT_APPLICATION_OPS, DEFAULT_SOCKET_MODE,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod authority;
mod tls;
mod verify;

/// The file's layout, as written; only serde checks here.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    keycloak: RawKeycloak,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    service: RawService,
    #[serde(default)]
    auth: RawAuth,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeycloak {
    server_url: String,
    realm: String,
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    admin_client_id: Option<String>,
    #[serde(default)]
    admin_client_secret: Option<String>,
    #[serde(default)]
    timeout_seconds: Option<i64>,
    #[serde(default)]
    connect_timeout_seconds: Option<i64>,
    #[serde(default)]
    max_concurrent_calls: Option<i64>,
    #[serde(default)]
    slow_call_seconds: Option<i64>,
    #[serde(default)]
    trial_timeout_ms: Option<i64>,
    #[serde(default)]
    tls: tls::RawTls,
    #[serde(default)]
    packages: Option<BTreeMap<String, RawPackage>>,
    #[serde(default)]
    resilience: RawResilience,
    #[serde(default)]
    verify: verify::RawVerify,
    #[serde(default)]
    authority: authority::RawAuthority,
    #[serde(default)]
    manage_users: Option<bool>,
    #[serde(default)]
    reconcile_interval_seconds: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    realm: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawResilience {
    enabled: Option<bool>,
    preset: Option<Preset>,
    failure_threshold: Option<i64>,
    cooldown_seconds: Option<i64>,
    token_grace_period_hours: Option<i64>,
    allow_offline_mode: Option<bool>,
    health_check_cache_seconds: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    path: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawService {
    sync_interval_seconds: Option<i64>,
    batch_size: Option<i64>,
    cleanup_interval_seconds: Option<i64>,
    metrics_textfile: Option<String>,
    refresh_ahead_seconds: Option<i64>,
    refresh_per_minute: Option<i64>,
    socket_path: Option<String>,
    socket_group: Option<String>,
    socket_mode: Option<RawMode>,
    application_ops: Option<Vec<String>>,
}

/// `service.socket_mode` as written: meant as a quoted octal string; a YAML number is caught
/// here so that the error can say how to write it.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawMode {
    Text(String),
    Number(i64),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    max_failed_logins: Option<i64>,
    failure_window_seconds: Option<i64>,
    lockout_seconds: Option<i64>,
    session_ttl_seconds: Option<i64>,
}

/// Checks a URL's host name as DNS has it (RFC 1123): dot-separated labels of 1 to 63
/// letters, digits, `-` (never first or last) or `_` (container and service names use it),
/// 253 characters at most, one trailing dot allowed. The `url` crate has already lowered it
/// and turned any non-ASCII name into punycode. The name is not quoted back: it is part of a
/// URL, which may be a secret's neighbour.
fn check_host_name(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() || bare.len() > 253 {
        return Err("the host name must be 1 to 253 characters long".to_string());
    }
    for (i, label) in bare.split('.').enumerate() {
        let n = i + 1;
        if label.is_empty() {
            return Err(format!(
                "label {n} of the host name is empty (`..` or a leading dot)"
            ));
        }
        if label.len() > 63 {
            return Err(format!(
                "label {n} of the host name is longer than 63 characters"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "label {n} of the host name starts or ends with '-'"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "label {n} of the host name has a character other than a letter, a digit, '-' or '_'"
            ));
        }
    }
    Ok(())
}

impl RawConfig {
    /// The whole configuration, section by section in file order (so the first wrong key is
    /// the one reported); `path` is the file it came from, `env` reads the environment.
    pub(super) fn build(
        self,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let v = Validator { file: path };
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let (keycloak, resilience, verify, consistency) = self.keycloak.build(&v, env)?;
        let resilience = resilience.build(&v)?;
        let verify = verify.build(&v, &keycloak, &resilience)?;
        let consistency = consistency.build(&v)?;
        Ok(Config {
            source: path.to_path_buf(),
            keycloak,
            resilience,
            verify,
            consistency,
            storage_path: self.storage.build(&v, base)?,
            service: self.service.build(&v, base)?,
            auth: self.auth.build(&v)?,
        })
    }
}

impl RawKeycloak {
    /// `keycloak.*` but its `resilience`, `verify` and consistency keys, which are handed back
    /// for their own steps.
    #[allow(clippy::type_complexity)]
    fn build(
        self,
        v: &Validator<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<
        (
            KeycloakConfig,
            RawResilience,
            verify::RawVerify,
            authority::RawConsistency,
        ),
        ConfigError,
    > {
        let k = self;
        let server_url = v.url("keycloak.server_url", &k.server_url)?;
        let realm = v.realm("keycloak.realm", &k.realm)?;
        let client_id = v.name("keycloak.client_id", &k.client_id)?;
        let client_secret =
            super::secrets::resolve(&super::secrets::CLIENT_SECRET, k.client_secret, env, v.file)?;
        let admin_client_id = v.name(
            "keycloak.admin_client_id",
            k.admin_client_id
                .as_deref()
                .unwrap_or("keycloak-resilient-sync"),
        )?;
        let admin_client_secret = super::secrets::resolve(
            &super::secrets::ADMIN_CLIENT_SECRET,
            k.admin_client_secret,
            env,
            v.file,
        )?;
        let timeout = v.seconds("keycloak.timeout_seconds", k.timeout_seconds, 5, 1)?;
        let connect_timeout = v.seconds(
            "keycloak.connect_timeout_seconds",
            k.connect_timeout_seconds,
            2,
            1,
        )?;
        let raw_limits = (
            k.max_concurrent_calls,
            k.slow_call_seconds,
            k.trial_timeout_ms,
        );
        let limits = v.call_limits(raw_limits, timeout)?;
        let tls_ca = k.tls.build(v)?;
        let default = PackageConfig {
            realm,
            client_id,
            client_secret,
        };
        let packages = build_packages(v, k.packages.unwrap_or_default(), &default)?;
        let keycloak = KeycloakConfig {
            server_url,
            realm: default.realm,
            client_id: default.client_id,
            client_secret: default.client_secret,
            admin_client_id,
            admin_client_secret,
            timeout,
            connect_timeout,
            max_concurrent_calls: limits.max_concurrent_calls,
            slow_call: limits.slow_call,
            trial_timeout: limits.trial_timeout,
            tls_ca,
            packages,
        };
        let consistency = authority::RawConsistency {
            authority: k.authority,
            manage_users: k.manage_users,
            reconcile_interval_seconds: k.reconcile_interval_seconds,
        };
        Ok((keycloak, k.resilience, k.verify, consistency))
    }
}

/// `keycloak.packages`: each package's realm, client and secret, the top-level ones
/// (`default`) where it names none.
fn build_packages(
    v: &Validator<'_>,
    raw: BTreeMap<String, RawPackage>,
    default: &PackageConfig,
) -> Result<BTreeMap<String, PackageConfig>, ConfigError> {
    let mut packages = BTreeMap::new();
    for (name, p) in raw {
        // Package names are not secret; quoted escaped, so an invisible character shows.
        crate::account::check_name(&format!("package name {name:?}"), &name)
            .map_err(|reason| v.invalid("keycloak.packages", reason))?;
        let key = |field: &str| format!("keycloak.packages.{name}.{field}");
        let config = PackageConfig {
            realm: v.realm(&key("realm"), p.realm.as_deref().unwrap_or(&default.realm))?,
            client_id: v.name(
                &key("client_id"),
                p.client_id.as_deref().unwrap_or(&default.client_id),
            )?,
            client_secret: match p.client_secret {
                Some(s) => Secret::new(s),
                None => default.client_secret.clone(),
            },
        };
        packages.insert(name, config);
    }
    Ok(packages)
}

impl RawResilience {
    /// `keycloak.resilience.*`: the preset's values where no explicit key overrides them.
    fn build(self, v: &Validator<'_>) -> Result<Resilience, ConfigError> {
        let r = self;
        let preset = r.preset.unwrap_or(Preset::Balanced);
        let (threshold, cooldown, grace) = preset.values();
        Ok(Resilience {
            enabled: r.enabled.unwrap_or(true),
            preset,
            failure_threshold: v.count(
                "keycloak.resilience.failure_threshold",
                r.failure_threshold,
                threshold as u64,
            )? as u32,
            cooldown: v.seconds(
                "keycloak.resilience.cooldown_seconds",
                r.cooldown_seconds,
                cooldown,
                1,
            )?,
            token_grace_period: v.hours(
                "keycloak.resilience.token_grace_period_hours",
                r.token_grace_period_hours,
                grace,
            )?,
            allow_offline_mode: r.allow_offline_mode.unwrap_or(true),
            health_check_cache: v.seconds(
                "keycloak.resilience.health_check_cache_seconds",
                r.health_check_cache_seconds,
                30,
                0,
            )?,
        })
    }
}

impl RawStorage {
    /// `storage.path`, relative to the config file's directory `base`.
    fn build(self, v: &Validator<'_>, base: &Path) -> Result<PathBuf, ConfigError> {
        let storage_dir = self.path.unwrap_or_else(|| "./data".to_string());
        if storage_dir.trim().is_empty() {
            return Err(v.invalid("storage.path", "must not be empty"));
        }
        // "./config.yaml" + "./data" reads better as "data" than as "././data".
        let storage_path: PathBuf = base
            .join(storage_dir)
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect();
        Ok(if storage_path.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            storage_path
        })
    }
}

impl RawService {
    /// `service.*`; the metrics text file is relative to the config file's directory `base`.
    fn build(self, v: &Validator<'_>, base: &Path) -> Result<ServiceConfig, ConfigError> {
        let s = self;
        Ok(ServiceConfig {
            sync_interval: v.seconds(
                "service.sync_interval_seconds",
                s.sync_interval_seconds,
                60,
                1,
            )?,
            batch_size: v.count("service.batch_size", s.batch_size, 100)? as usize,
            cleanup_interval: v.seconds(
                "service.cleanup_interval_seconds",
                s.cleanup_interval_seconds,
                3600,
                1,
            )?,
            metrics_textfile: s
                .metrics_textfile
                .filter(|p| !p.trim().is_empty())
                .map(|p| base.join(p)),
            refresh_ahead: v.seconds(
                "service.refresh_ahead_seconds",
                s.refresh_ahead_seconds,
                60,
                0,
            )?,
            refresh_per_minute: match s.refresh_per_minute {
                Some(0) => 0, // proactive refresh off
                other => v.count("service.refresh_per_minute", other, 60)? as u32,
            },
            socket: SocketConfig {
                path: s
                    .socket_path
                    .filter(|p| !p.trim().is_empty())
                    .map(|p| base.join(p)),
                group: v.socket_group(s.socket_group)?,
                mode: v.socket_mode(s.socket_mode)?,
                application_ops: v.ops("service.application_ops", s.application_ops)?,
            },
        })
    }
}

impl RawAuth {
    /// `auth.*`: failed-login limits and session lifetime.
    fn build(self, v: &Validator<'_>) -> Result<AuthConfig, ConfigError> {
        let a = self;
        Ok(AuthConfig {
            max_failed_logins: match a.max_failed_logins {
                None => 5,
                // 0: locking off.
                Some(n) if (0..=u32::MAX as i64).contains(&n) => n as u32,
                Some(n) => {
                    return Err(v.invalid(
                        "auth.max_failed_logins",
                        format!(
                            "must be a whole number from 0 (locking off) to {}, got {n}",
                            u32::MAX
                        ),
                    ))
                }
            },
            failure_window: v.seconds(
                "auth.failure_window_seconds",
                a.failure_window_seconds,
                300,
                1,
            )?,
            lockout: v.seconds("auth.lockout_seconds", a.lockout_seconds, 300, 1)?,
            session_ttl: v.seconds(
                "auth.session_ttl_seconds",
                a.session_ttl_seconds,
                8 * 3600,
                1,
            )?,
        })
    }
}

struct Validator<'a> {
    file: &'a Path,
}

/// `keycloak.max_concurrent_calls`, `slow_call_seconds` and `trial_timeout_ms`, checked.
struct CallLimits {
    max_concurrent_calls: usize,
    slow_call: Duration,
    trial_timeout: Duration,
}

/// Default `keycloak.max_concurrent_calls`.
const DEFAULT_MAX_CONCURRENT_CALLS: i64 = 10;
/// Most `keycloak.max_concurrent_calls` accepted (each is a slot file and a connection).
const MAX_CONCURRENT_CALLS: i64 = 1000;
/// Default `keycloak.slow_call_seconds` (at most the timeout).
const DEFAULT_SLOW_CALL_SECONDS: u64 = 3;
/// Default `keycloak.trial_timeout_ms` (at most the timeout).
const DEFAULT_TRIAL_TIMEOUT_MS: u64 = 500;
/// Least `keycloak.trial_timeout_ms` accepted: below it even a healthy Keycloak on the same
/// host seldom answers.
const MIN_TRIAL_TIMEOUT_MS: i64 = 50;

impl Validator<'_> {
    fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// An http(s) base URL. The value is never quoted back: a URL may carry credentials.
    fn url(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        let parsed = reqwest::Url::parse(value.trim())
            .map_err(|e| self.invalid(key, format!("not a URL ({e})")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(self.invalid(key, "must be an http:// or https:// URL"));
        }
        if let Some(name) = parsed.domain() {
            check_host_name(name).map_err(|reason| self.invalid(key, reason))?;
        }
        if parsed.port() == Some(0) {
            return Err(self.invalid(key, "port 0 is not a port one can connect to"));
        }
        // `http://user:pw@host` would print the password wherever the URL is shown (status,
        // the start banner, error messages); Keycloak credentials belong in client_secret.
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(self.invalid(
                key,
                "must not contain a user name or password (user:password@); use client_secret / admin_client_secret",
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(self.invalid(key, "must not carry a query or fragment"));
        }
        Ok(value.trim().trim_end_matches('/').to_string())
    }

    fn name(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(self.invalid(key, "must not be empty"));
        }
        if value.contains('/') || value.chars().any(char::is_control) {
            return Err(self.invalid(
                key,
                format!("must not contain '/' or control characters: {value:?}"),
            ));
        }
        Ok(value.to_string())
    }

    /// A realm: the one name rule ([`crate::account::check_name`]), since it becomes a path
    /// segment of every request.
    fn realm(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        let value = value.trim();
        crate::account::check_name("realm", value).map_err(|reason| self.invalid(key, reason))?;
        Ok(value.to_string())
    }

    /// `service.socket_group`: a group name, or a numeric gid; looked up when the service
    /// starts, not here (a one-shot command on another machine must not need the group).
    fn socket_group(&self, value: Option<String>) -> Result<Option<String>, ConfigError> {
        match value.map(|g| g.trim().to_string()) {
            None => Ok(None),
            Some(g) if g.is_empty() => Ok(None),
            Some(g) if g.chars().any(|c| c.is_control() || c == ':' || c == '/') => Err(self
                .invalid(
                    "service.socket_group",
                    "must be a group name or a numeric gid (no ':', '/' or control characters)",
                )),
            Some(g) => Ok(Some(g)),
        }
    }

    /// `service.socket_mode`: permission bits as an octal string. The owner must keep read
    /// and write (its own one-shot commands connect through it); nothing beyond 0777.
    fn socket_mode(&self, value: Option<RawMode>) -> Result<u32, ConfigError> {
        const KEY: &str = "service.socket_mode";
        const FORMS: &str =
            "a quoted octal string of permission bits such as \"0660\", \"660\" or \"0o660\"";
        let text = match value {
            None => return Ok(DEFAULT_SOCKET_MODE),
            Some(RawMode::Text(t)) => t,
            Some(RawMode::Number(n)) => {
                return Err(self.invalid(
                    KEY,
                    format!("expected {FORMS}; got the number {n}, which YAML may not read as octal: quote it"),
                ))
            }
        };
        let t = text.trim();
        let digits = t.strip_prefix("0o").unwrap_or(t);
        let mode = (!digits.is_empty()
            && digits.len() <= 4
            && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)))
        .then(|| u32::from_str_radix(digits, 8).ok())
        .flatten()
        .ok_or_else(|| self.invalid(KEY, format!("expected {FORMS}; got {t:?}")))?;
        if mode > 0o777 {
            return Err(self.invalid(
                KEY,
                format!("{mode:04o}: only permission bits (at most 0777), no setuid, setgid or sticky bit"),
            ));
        }
        if mode & 0o600 != 0o600 {
            return Err(self.invalid(
                KEY,
                format!(
                    "{mode:04o}: the owner (the service's user) must keep read and write (0600)"
                ),
            ));
        }
        Ok(mode)
    }

    /// `service.application_ops`: op names (checked against the real ops when the service
    /// starts: the op list belongs to the command layer, above this one).
    fn ops(&self, key: &str, value: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
        let Some(ops) = value else {
            return Ok(DEFAULT_APPLICATION_OPS
                .iter()
                .map(|s| s.to_string())
                .collect());
        };
        let mut seen = Vec::new();
        for op in ops {
            let op = op.trim().to_string();
            if op.is_empty() || !op.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
                return Err(self.invalid(
                    key,
                    format!(
                        "{op:?} is not an op name (lower-case words joined by '-', as `user-add`)"
                    ),
                ));
            }
            if !seen.contains(&op) {
                seen.push(op);
            }
        }
        Ok(seen)
    }

    /// The bulkhead and the two bounds tied to `timeout` (`keycloak.timeout_seconds`).
    fn call_limits(
        &self,
        (max_calls, slow_call, trial_ms): (Option<i64>, Option<i64>, Option<i64>),
        timeout: Duration,
    ) -> Result<CallLimits, ConfigError> {
        let max_concurrent_calls = match max_calls {
            None => DEFAULT_MAX_CONCURRENT_CALLS,
            Some(n) if (1..=MAX_CONCURRENT_CALLS).contains(&n) => n,
            Some(n) => {
                return Err(self.invalid(
                    "keycloak.max_concurrent_calls",
                    format!("must be a whole number from 1 to {MAX_CONCURRENT_CALLS}, got {n}"),
                ))
            }
        } as usize;
        let timeout_s = timeout.as_secs();
        let slow_call = match slow_call {
            None => Duration::from_secs(DEFAULT_SLOW_CALL_SECONDS.min(timeout_s)),
            Some(n) if n >= 1 && n as u64 <= timeout_s => Duration::from_secs(n as u64),
            Some(n) => {
                return Err(self.invalid(
                    "keycloak.slow_call_seconds",
                    format!(
                        "must be between 1 and keycloak.timeout_seconds ({timeout_s}), got {n}"
                    ),
                ))
            }
        };
        let timeout_ms = timeout.as_millis() as i64;
        let trial_timeout = match trial_ms {
            None => Duration::from_millis(DEFAULT_TRIAL_TIMEOUT_MS.min(timeout_ms as u64)),
            Some(n) if (MIN_TRIAL_TIMEOUT_MS..=timeout_ms).contains(&n) => {
                Duration::from_millis(n as u64)
            }
            Some(n) => {
                return Err(self.invalid(
                    "keycloak.trial_timeout_ms",
                    format!("must be between {MIN_TRIAL_TIMEOUT_MS} and keycloak.timeout_seconds in milliseconds ({timeout_ms}), got {n}"),
                ))
            }
        };
        Ok(CallLimits {
            max_concurrent_calls,
            slow_call,
            trial_timeout,
        })
    }

    fn count(&self, key: &str, value: Option<i64>, default: u64) -> Result<u64, ConfigError> {
        match value {
            None => Ok(default),
            Some(n) if n >= 1 && n <= u32::MAX as i64 => Ok(n as u64),
            Some(n) => Err(self.invalid(
                key,
                format!("must be a whole number from 1 to {}, got {n}", u32::MAX),
            )),
        }
    }

    /// Hours from 1 to ten years' worth.
    fn hours(&self, key: &str, value: Option<i64>, default: u64) -> Result<Duration, ConfigError> {
        const MAX: i64 = 10 * 366 * 24;
        match value {
            None => Ok(Duration::from_secs(default * 3600)),
            Some(n) if (1..=MAX).contains(&n) => Ok(Duration::from_secs(n as u64 * 3600)),
            Some(n) => {
                Err(self.invalid(key, format!("must be between 1 and {MAX} hours, got {n}")))
            }
        }
    }

    fn seconds(
        &self,
        key: &str,
        value: Option<i64>,
        default: u64,
        min: i64,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(Duration::from_secs(default)),
            Some(n) if n >= min && n <= 366 * 24 * 3600 => Ok(Duration::from_secs(n as u64)),
            Some(n) => Err(self.invalid(
                key,
                format!(
                    "must be between {min} and {} seconds, got {n}",
                    366 * 24 * 3600
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15 point 5: a host name DNS would refuse, and port 0, are refused naming the key
    /// (and never quoting the URL); real names, IPs and ports pass.
    #[test]
    fn server_urls_with_impossible_hosts_or_port_0_are_refused() {
        let parse = |url: &str| {
            let yaml = format!("keycloak:\n  server_url: {url}\n  realm: demo\n  client_id: web\n");
            Config::parse(&yaml, Path::new("/etc/kr/config.yaml"), &|_| None)
        };
        for ok in [
            "http://localhost:8080",
            "https://kc.example.com/",
            "https://kc.example.com./auth",
            "http://keycloak_1:8080",
            "http://10.0.0.1:8443",
            "http://[::1]:8080",
            "https://xn--bcher-kva.example",
            "https://bücher.example",
        ] {
            assert!(parse(ok).is_ok(), "{ok}: {:?}", parse(ok).err());
        }
        for (bad, why) in [
            ("https://-invalid-.example/", "starts or ends with '-'"),
            ("https://kc-.example/", "starts or ends with '-'"),
            ("https://kc..example/", "label 2 of the host name is empty"),
            ("https://kc.exa$mple/", "other than a letter"),
            ("http://localhost:0", "port 0"),
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(
                err.starts_with("config file /etc/kr/config.yaml: keycloak.server_url: "),
                "{err}"
            );
            assert!(err.contains(why), "{bad}: {err}");
            assert!(!err.contains("example"), "{err}");
        }
        let long = format!("https://{}.example", "a".repeat(64));
        assert!(parse(&long)
            .unwrap_err()
            .to_string()
            .contains("longer than 63"));
    }
}
