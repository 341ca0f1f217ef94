//! `keycloak.authority.*`, `keycloak.manage_users` and `keycloak.reconcile_interval_seconds`:
//! which side decides what when the local store and Keycloak disagree (see the README's
//! "Consistency" section), read and checked here so that [`super`] stays one step per section.

use super::super::{Authority, ConfigError, ConsistencyConfig};
use super::Validator;
use serde::Deserialize;

/// `keycloak.authority`, as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuthority {
    passwords: Option<String>,
    accounts: Option<String>,
    provision: Option<bool>,
}

/// The consistency keys of `keycloak`, as written.
pub(super) struct RawConsistency {
    pub(super) authority: RawAuthority,
    pub(super) manage_users: Option<bool>,
    pub(super) reconcile_interval_seconds: Option<i64>,
}

impl RawConsistency {
    /// The typed settings: Keycloak decides passwords and accounts, users it knows are
    /// provisioned, user management stays local, a reconcile every 15 minutes.
    pub(super) fn build(self, v: &Validator<'_>) -> Result<ConsistencyConfig, ConfigError> {
        let a = self.authority;
        let passwords = authority(v, "keycloak.authority.passwords", a.passwords)?;
        let accounts = authority(v, "keycloak.authority.accounts", a.accounts)?;
        let reconcile_interval = v.seconds(
            "keycloak.reconcile_interval_seconds",
            self.reconcile_interval_seconds,
            900,
            0,
        )?;
        Ok(ConsistencyConfig {
            passwords,
            accounts,
            provision: a.provision.unwrap_or(true),
            manage_users: self.manage_users.unwrap_or(false),
            reconcile_interval,
        })
    }
}

fn authority(
    v: &Validator<'_>,
    key: &str,
    value: Option<String>,
) -> Result<Authority, ConfigError> {
    match value.as_deref().map(str::trim) {
        None | Some("keycloak") => Ok(Authority::Keycloak),
        Some("local") => Ok(Authority::Local),
        Some(other) => Err(v.invalid(key, format!("must be keycloak or local, got {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Authority, Config, ConfigError};
    use std::path::Path;
    use std::time::Duration;

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        let yaml = format!(
            "keycloak:\n  server_url: http://kc\n  realm: demo\n  client_id: webapp\n{extra}"
        );
        Config::parse(&yaml, Path::new("/etc/kr/config.yaml"), &|_| None)
    }

    #[test]
    fn consistency_keys_default_to_keycloak_deciding_and_refuse_unknown_values() {
        let c = parse("").unwrap().consistency;
        assert_eq!(c.passwords, Authority::Keycloak);
        assert_eq!(c.accounts, Authority::Keycloak);
        assert!(c.provision);
        assert!(!c.manage_users);
        assert_eq!(c.reconcile_interval, Duration::from_secs(900));
        let c = parse(
            "  authority:\n    passwords: local\n    accounts: local\n    provision: false\n  manage_users: true\n  reconcile_interval_seconds: 0\n",
        )
        .unwrap()
        .consistency;
        assert_eq!(c.passwords, Authority::Local);
        assert_eq!(c.accounts, Authority::Local);
        assert!(!c.provision);
        assert!(c.manage_users);
        assert_eq!(c.reconcile_interval, Duration::ZERO);
        for (extra, key) in [
            (
                "  authority:\n    passwords: central\n",
                "keycloak.authority.passwords",
            ),
            (
                "  authority:\n    accounts: both\n",
                "keycloak.authority.accounts",
            ),
            (
                "  reconcile_interval_seconds: -5\n",
                "keycloak.reconcile_interval_seconds",
            ),
        ] {
            let e = parse(extra).unwrap_err().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
        let e = parse("  authority:\n    nope: 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }
}
