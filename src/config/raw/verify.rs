//! `keycloak.verify.*`: how tokens of the realm are checked for other applications
//! (`verify-token`), read and checked here so that [`super`] stays one step per section.

use super::super::{ConfigError, KeycloakConfig, Resilience, VerifyConfig};
use super::Validator;
use serde::Deserialize;
use std::time::Duration;

/// `keycloak.verify`, as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVerify {
    keys_refresh_seconds: Option<i64>,
    audiences: Option<Vec<String>>,
    leeway_seconds: Option<i64>,
    outage_grace_seconds: Option<i64>,
}

impl RawVerify {
    /// The typed section. `audiences` defaults to every configured login client (the
    /// top-level one and each package's); `outage_grace_seconds` may not exceed the token
    /// cache's grace period (`keycloak.resilience.token_grace_period_hours`).
    pub(super) fn build(
        self,
        v: &Validator<'_>,
        keycloak: &KeycloakConfig,
        resilience: &Resilience,
    ) -> Result<VerifyConfig, ConfigError> {
        let r = self;
        let keys_refresh = v.seconds(
            "keycloak.verify.keys_refresh_seconds",
            r.keys_refresh_seconds,
            3600,
            10,
        )?;
        let leeway = v.seconds("keycloak.verify.leeway_seconds", r.leeway_seconds, 30, 0)?;
        if leeway > Duration::from_secs(3600) {
            return Err(v.invalid(
                "keycloak.verify.leeway_seconds",
                format!("must be at most 3600 seconds, got {}", leeway.as_secs()),
            ));
        }
        let outage_grace = v.seconds(
            "keycloak.verify.outage_grace_seconds",
            r.outage_grace_seconds,
            0,
            0,
        )?;
        if outage_grace > resilience.token_grace_period {
            return Err(v.invalid(
                "keycloak.verify.outage_grace_seconds",
                format!(
                    "{} seconds is longer than the token cache's grace period ({} hours, keycloak.resilience.token_grace_period_hours)",
                    outage_grace.as_secs(),
                    resilience.token_grace_period.as_secs() / 3600
                ),
            ));
        }
        let audiences = match r.audiences {
            Some(list) => {
                if list.is_empty() {
                    return Err(v.invalid(
                        "keycloak.verify.audiences",
                        "must name at least one client (or be left out: the login clients)",
                    ));
                }
                list.iter()
                    .map(|a| v.name("keycloak.verify.audiences", a))
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => {
                let mut all = vec![keycloak.client_id.clone()];
                all.extend(keycloak.packages.values().map(|p| p.client_id.clone()));
                all.sort();
                all.dedup();
                all
            }
        };
        Ok(VerifyConfig {
            keys_refresh,
            audiences,
            leeway,
            outage_grace,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};
    use std::path::Path;
    use std::time::Duration;

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        let yaml = format!(
            "keycloak:\n  server_url: http://kc\n  realm: demo\n  client_id: webapp\n  packages:\n    shop:\n      client_id: shop-client\n{extra}"
        );
        Config::parse(&yaml, Path::new("/etc/kr/config.yaml"), &|_| None)
    }

    #[test]
    fn defaults_are_the_login_clients_30_seconds_of_leeway_and_no_grace() {
        let v = parse("").unwrap().verify;
        assert_eq!(v.audiences, vec!["shop-client", "webapp"]);
        assert_eq!(v.leeway, Duration::from_secs(30));
        assert_eq!(v.outage_grace, Duration::ZERO);
        assert_eq!(v.keys_refresh, Duration::from_secs(3600));
        let v = parse("  verify:\n    audiences: [portal]\n    outage_grace_seconds: 900\n")
            .unwrap()
            .verify;
        assert_eq!(v.audiences, vec!["portal"]);
        assert_eq!(v.outage_grace, Duration::from_secs(900));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (extra, key) in [
            ("  verify:\n    audiences: []\n", "keycloak.verify.audiences"),
            ("  verify:\n    leeway_seconds: 7200\n", "keycloak.verify.leeway_seconds"),
            ("  verify:\n    keys_refresh_seconds: 1\n", "keycloak.verify.keys_refresh_seconds"),
            (
                "  resilience:\n    token_grace_period_hours: 1\n  verify:\n    outage_grace_seconds: 3601\n",
                "keycloak.verify.outage_grace_seconds",
            ),
        ] {
            let e = parse(extra).unwrap_err().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
        assert!(parse("  verify:\n    nope: 1\n").is_err());
    }
}
