//! Where the two Keycloak client secrets come from, the way services are deployed: the config
//! file, an environment variable, a file named by `*_FILE`, or a systemd credential
//! (`LoadCredential=`, read from `$CREDENTIALS_DIRECTORY`).
//!
//! # Precedence
//!
//! The config file's value is the default. At most ONE of the three outside sources may be
//! set, and it wins over the file; two at once are refused, naming both. An operator who adds
//! `LoadCredential=` while an old `EnvironmentFile=` still sets the variable is told so, rather
//! than left guessing which of two secrets is in use (a silent order would keep the stale one
//! working on one host and not on another). An empty variable counts as unset, as before.
//!
//! # Secret files (`*_FILE` and credentials)
//!
//! Read whole, trailing newlines (`\n`, `\r\n`) trimmed — `echo secret > file` is the usual
//! way to write one. Refused, naming the file: unreadable (or not UTF-8), empty, or readable
//! or writable by every user (the secret is then no secret; `chmod o-rw`). Group-readable is accepted: `root:service
//! 0640` is how a root-owned secret is shared with the service user.

use super::ConfigError;
use super::Secret;
use std::path::{Path, PathBuf};

/// The environment variable naming `$CREDENTIALS_DIRECTORY` (systemd's `LoadCredential=`).
pub const ENV_CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// One secret's sources, by name.
#[derive(Debug, Clone, Copy)]
pub struct SecretSources {
    /// The config key (`keycloak.client_secret`).
    pub key: &'static str,
    /// The variable holding the value (`KEYCLOAK_CLIENT_SECRET`).
    pub env: &'static str,
    /// The variable naming a file that holds it (`KEYCLOAK_CLIENT_SECRET_FILE`).
    pub env_file: &'static str,
    /// The credential's name in `$CREDENTIALS_DIRECTORY` (`keycloak-client-secret`).
    pub credential: &'static str,
}

/// The login client's secret.
pub const CLIENT_SECRET: SecretSources = SecretSources {
    key: "keycloak.client_secret",
    env: super::ENV_CLIENT_SECRET,
    env_file: "KEYCLOAK_CLIENT_SECRET_FILE",
    credential: "keycloak-client-secret",
};

/// The admin service account's secret.
pub const ADMIN_CLIENT_SECRET: SecretSources = SecretSources {
    key: "keycloak.admin_client_secret",
    env: super::ENV_ADMIN_CLIENT_SECRET,
    env_file: "KEYCLOAK_ADMIN_CLIENT_SECRET_FILE",
    credential: "keycloak-admin-client-secret",
};

/// An outside source that is set.
enum Source {
    Env(String),
    File { var: &'static str, path: PathBuf },
    Credential(PathBuf),
}

impl Source {
    fn describe(&self, s: &SecretSources) -> String {
        match self {
            Source::Env(_) => s.env.to_string(),
            Source::File { var, path } => format!("{var} ({})", path.display()),
            Source::Credential(path) => format!("credential {} ({})", s.credential, path.display()),
        }
    }
}

/// Resolves one secret: `from_config` unless one outside source is set (see the module's
/// precedence); `config_file` is named in errors.
///
/// # Errors
///
/// [`ConfigError::Secret`] when two outside sources are set, or a secret file is unreadable,
/// empty or readable by every user.
pub fn resolve(
    s: &SecretSources,
    from_config: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
    config_file: &Path,
) -> Result<Secret, ConfigError> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    let mut found = Vec::new();
    if let Some(v) = set(s.env) {
        found.push(Source::Env(v));
    }
    if let Some(path) = set(s.env_file) {
        found.push(Source::File {
            var: s.env_file,
            path: PathBuf::from(path),
        });
    }
    if let Some(dir) = set(ENV_CREDENTIALS_DIRECTORY) {
        let path = Path::new(&dir).join(s.credential);
        if path.exists() {
            found.push(Source::Credential(path));
        }
    }
    let err = |reason: String| ConfigError::Secret {
        file: config_file.to_path_buf(),
        key: s.key,
        reason,
    };
    match found.len() {
        0 => return Ok(Secret::new(from_config.unwrap_or_default())),
        1 => {}
        _ => {
            let names: Vec<String> = found.iter().map(|f| f.describe(s)).collect();
            return Err(err(format!(
                "set by {}: give it one source only",
                names.join(" and ")
            )));
        }
    }
    match found.remove(0) {
        Source::Env(v) => Ok(Secret::new(v)),
        Source::File { var, path } => {
            read_secret_file(&path).map_err(|r| err(format!("{var}: {r}")))
        }
        Source::Credential(path) => {
            read_secret_file(&path).map_err(|r| err(format!("credential {}: {r}", s.credential)))
        }
    }
}

/// Reads a secret file (see the module's rules); the error names the file, never the content.
fn read_secret_file(path: &Path) -> Result<Secret, String> {
    use std::os::unix::fs::PermissionsExt;
    let named = |what: String| format!("{}: {what}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| named(e.to_string()))?;
    if !meta.is_file() {
        return Err(named("not a file".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o006 != 0 {
        return Err(named(format!(
            "open to every user (mode {mode:04o}): chmod o-rw it, and change the secret"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| named(format!("cannot be read: {e}")))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(named("empty".into()));
    }
    Ok(Secret::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    fn file(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn resolve_with(vars: &[(&str, String)], from_config: Option<&str>) -> Result<Secret, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        resolve(
            &CLIENT_SECRET,
            from_config.map(String::from),
            &|name| map.get(name).cloned(),
            Path::new("/etc/kr/config.yaml"),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn each_source_alone_wins_over_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(dir.path(), "s", "from-file\n", 0o600);
        let creds = tempfile::tempdir().unwrap();
        file(
            creds.path(),
            "keycloak-client-secret",
            "from-cred\r\n",
            0o400,
        );
        let cases = [
            (vec![], "from-config"),
            (
                vec![(ENV_CLIENT_SECRET_NAME, "from-env".to_string())],
                "from-env",
            ),
            (
                vec![("KEYCLOAK_CLIENT_SECRET_FILE", f.display().to_string())],
                "from-file",
            ),
            (
                vec![(
                    ENV_CREDENTIALS_DIRECTORY,
                    creds.path().display().to_string(),
                )],
                "from-cred",
            ),
            // An empty variable is unset.
            (vec![(ENV_CLIENT_SECRET_NAME, String::new())], "from-config"),
        ];
        for (vars, want) in cases {
            let got = resolve_with(&vars, Some("from-config")).unwrap();
            assert_eq!(got.expose(), want, "{vars:?}");
        }
    }

    const ENV_CLIENT_SECRET_NAME: &str = super::super::ENV_CLIENT_SECRET;

    #[test]
    fn a_credentials_directory_without_this_credential_is_not_a_source() {
        let creds = tempfile::tempdir().unwrap();
        let vars = [
            (
                ENV_CREDENTIALS_DIRECTORY,
                creds.path().display().to_string(),
            ),
            (ENV_CLIENT_SECRET_NAME, "from-env".to_string()),
        ];
        assert_eq!(resolve_with(&vars, None).unwrap().expose(), "from-env");
    }

    #[test]
    fn two_sources_are_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(dir.path(), "s", "from-file", 0o640);
        let creds = tempfile::tempdir().unwrap();
        file(creds.path(), "keycloak-client-secret", "from-cred", 0o400);
        let err = resolve_with(
            &[
                (ENV_CLIENT_SECRET_NAME, "s3cret-env".to_string()),
                (
                    ENV_CREDENTIALS_DIRECTORY,
                    creds.path().display().to_string(),
                ),
            ],
            None,
        )
        .unwrap_err();
        assert!(err.starts_with("config file /etc/kr/config.yaml: keycloak.client_secret: set by KEYCLOAK_CLIENT_SECRET and credential keycloak-client-secret ("), "{err}");
        assert!(err.ends_with("give it one source only"), "{err}");
        assert!(
            !err.contains("s3cret") && !err.contains("from-cred"),
            "{err}"
        );
        let err = resolve_with(
            &[
                ("KEYCLOAK_CLIENT_SECRET_FILE", f.display().to_string()),
                (ENV_CLIENT_SECRET_NAME, "x".to_string()),
            ],
            None,
        )
        .unwrap_err();
        assert!(
            err.contains("KEYCLOAK_CLIENT_SECRET and KEYCLOAK_CLIENT_SECRET_FILE ("),
            "{err}"
        );
    }

    #[test]
    fn bad_secret_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                file(dir.path(), "world", "s3cret\n", 0o644),
                "open to every user (mode 0644)",
            ),
            (file(dir.path(), "empty", "\n", 0o600), "empty"),
            (dir.path().join("missing"), "No such file"),
            (dir.path().to_path_buf(), "not a file"),
            (dir.path().join("world").join("x"), "Not a directory"),
            (
                {
                    let p = dir.path().join("binary");
                    std::fs::write(&p, [0xff, 0xfe]).unwrap();
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
                    p
                },
                "cannot be read",
            ),
            (
                file(dir.path(), "writable", "s3cret", 0o602),
                "open to every user (mode 0602)",
            ),
        ];
        for (path, want) in cases {
            let err = resolve_with(
                &[("KEYCLOAK_CLIENT_SECRET_FILE", path.display().to_string())],
                Some("from-config"),
            )
            .unwrap_err();
            let named = format!(
                "config file /etc/kr/config.yaml: keycloak.client_secret: KEYCLOAK_CLIENT_SECRET_FILE: {}: ",
                path.display()
            );
            assert!(err.starts_with(&named), "{err}");
            assert!(err.contains(want), "{want} not in {err}");
            assert!(!err.contains("s3cret") && !err.contains('\n'), "{err}");
        }
        // Group-readable (root:service 0640) is how a secret is shared with the service.
        let shared = file(dir.path(), "shared", "ok\n\n", 0o640);
        let got = resolve_with(
            &[("KEYCLOAK_CLIENT_SECRET_FILE", shared.display().to_string())],
            None,
        )
        .unwrap();
        assert_eq!(got.expose(), "ok");
    }
}
