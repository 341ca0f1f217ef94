//! The `test` command's checks as data: is the config valid, does Keycloak answer for every
//! realm in use, does every login client accept direct access grants, may the admin service
//! account look up users and reset passwords.
//!
//! Computed here, in the library, so that anything — the command line, a health page, a test —
//! can run them and decide for itself how to show them; `commands::diagnostics` only renders.

use crate::config::{Config, PackageConfig};
use crate::keycloak::{KcError, KeycloakClient, Rejection};

/// Why the checks could not run at all (a failed check is not an error: it is in the report).
#[derive(Debug, thiserror::Error)]
pub enum DiagnosticsError {
    /// The HTTP client for Keycloak could not be built from the config.
    #[error(transparent)]
    Client(#[from] KcError),
}

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked, naming the realm, client or package it is about.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found: the answer that proves it, or what is wrong.
    pub detail: String,
}

/// Every check that ran, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The checks, config first, then reachability per realm, then (when every realm
    /// answered) the login clients and the admin service account.
    pub checks: Vec<Check>,
    /// False when a realm did not answer: the client and service-account checks were then
    /// skipped, and the report does not pass even though every check listed may be ok.
    pub reachable: bool,
}

impl Report {
    /// True when Keycloak was reachable and every check passed.
    pub fn ok(&self) -> bool {
        self.reachable && self.checks.iter().all(|c| c.ok)
    }
}

/// Runs the checks against the Keycloak `config` names.
///
/// # Errors
///
/// [`DiagnosticsError::Client`] when the HTTP client cannot be built; every answer (or
/// silence) from Keycloak is a check outcome, not an error.
pub fn run(config: &Config) -> Result<Report, DiagnosticsError> {
    let mut checks = vec![Check {
        name: "config".into(),
        ok: true,
        detail: format!("{} is valid", config.source.display()),
    }];
    let kc = KeycloakClient::new(&config.keycloak)?;
    let mut packages = vec![("(default)".to_string(), config.package(""))];
    packages.extend(
        config
            .keycloak
            .packages
            .keys()
            .map(|name| (name.clone(), config.package(name))),
    );
    let mut realms: Vec<String> = packages.iter().map(|(_, p)| p.realm.clone()).collect();
    realms.sort();
    realms.dedup();
    for realm in &realms {
        let probe = kc.probe(realm);
        checks.push(Check {
            name: format!("keycloak reachable (realm {realm})"),
            ok: probe.is_ok(),
            detail: match probe {
                Ok(()) => format!("{} answers", config.keycloak.server_url),
                Err(e) => e.to_string(),
            },
        });
    }
    let reachable = checks.iter().skip(1).all(|c| c.ok);
    if reachable {
        // A user that cannot exist: "invalid credentials" proves the client is set up for
        // direct access grants; any other answer says what is wrong.
        let nobody = format!("keycloak-resilient-probe-{}", uuid::Uuid::new_v4().simple());
        checks.extend(
            packages
                .iter()
                .map(|(name, pkg)| login_client(&kc, name, pkg, &nobody)),
        );
        checks.extend(
            realms
                .iter()
                .map(|realm| admin_account(&kc, config, realm, &nobody)),
        );
    }
    Ok(Report { checks, reachable })
}

/// A password grant for `nobody` through the login client of package `name`.
fn login_client(kc: &KeycloakClient, name: &str, pkg: &PackageConfig, nobody: &str) -> Check {
    let r = kc.password_grant(pkg, nobody, &uuid::Uuid::new_v4().to_string());
    let (ok, detail) = match r {
        Ok(_) | Err(KcError::Rejected(Rejection::InvalidCredentials)) => {
            (true, "accepts direct access grants".to_string())
        }
        Err(e) => (false, e.to_string()),
    };
    Check {
        name: format!("login client {} (package {name})", pkg.client_id),
        ok,
        detail,
    }
}

/// A user lookup and the service account's roles in `realm`.
fn admin_account(kc: &KeycloakClient, config: &Config, realm: &str, nobody: &str) -> Check {
    let lookup = kc
        .find_user(realm, nobody)
        .and_then(|_| kc.admin_roles(realm));
    let (ok, detail) = match lookup {
        Ok(roles) if roles.iter().any(|r| r == "manage-users") => {
            (true, "can look up users and holds manage-users".to_string())
        }
        Ok(_) => (
            false,
            "can look up users but lacks realm-management manage-users (needed to reset passwords)"
                .to_string(),
        ),
        Err(e) => (false, e.to_string()),
    };
    Check {
        name: format!(
            "admin service account {} (realm {realm})",
            config.keycloak.admin_client_id
        ),
        ok,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ok: bool) -> Check {
        Check {
            name: "x".into(),
            ok,
            detail: String::new(),
        }
    }

    #[test]
    fn a_report_passes_only_when_reachable_and_every_check_passed() {
        let all = Report {
            checks: vec![check(true), check(true)],
            reachable: true,
        };
        assert!(all.ok());
        let one_failed = Report {
            checks: vec![check(true), check(false)],
            reachable: true,
        };
        assert!(!one_failed.ok());
        let skipped = Report {
            checks: vec![check(true)],
            reachable: false,
        };
        assert!(!skipped.ok());
    }

    #[test]
    fn an_unreachable_keycloak_is_a_failed_check_not_an_error() {
        let yaml = "keycloak:\n  server_url: http://127.0.0.1:9\n  realm: demo\n  client_id: web\n  timeout_seconds: 1\n  connect_timeout_seconds: 1\n";
        let config =
            Config::parse(yaml, std::path::Path::new("/x/config.yaml"), &|_| None).unwrap();
        let report = run(&config).unwrap();
        assert_eq!(report.checks[0].name, "config");
        assert!(report.checks[0].ok);
        assert_eq!(report.checks[1].name, "keycloak reachable (realm demo)");
        assert!(!report.checks[1].ok);
        assert_eq!(report.checks.len(), 2, "the rest is skipped");
        assert!(!report.reachable && !report.ok());
    }
}
