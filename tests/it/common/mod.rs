//! Shared test helpers: a temporary data directory with a config file pointing at a Keycloak
//! (fake or live), the CLI runner, and the [`server::Server`] abstraction that lets one set of
//! scenarios run against both.

pub mod cli;
pub mod fake_keycloak;
pub mod server;

use assert_cmd::Command;
use keycloak_resilient::clock::{ManualClock, SharedClock};
use keycloak_resilient::store::Store;
use keycloak_resilient::{Auth, Config, ResilientClient};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Secrets of the realm fixture (tests/fixtures/realm-resilient-test.json); test-only values
/// for a throw-away Keycloak on 127.0.0.1.
pub const LOGIN_CLIENT_SECRET: &str = "webapp-test-secret";
pub const ADMIN_CLIENT_SECRET: &str = "sync-test-secret";
pub const PACKAGE: &str = "webapp";

/// A temporary directory holding `config.yaml` and the sled `data/`.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

/// Tunables a scenario may change in the config file.
#[derive(Clone)]
pub struct Tuning {
    pub failure_threshold: u32,
    pub cooldown_seconds: u64,
    pub health_check_cache_seconds: u64,
    pub timeout_seconds: u64,
    pub allow_offline_mode: bool,
    pub admin_client_secret: String,
    pub extra: String,
    /// More `keycloak:` keys, each line indented by two spaces (`  max_concurrent_calls: 2\n`).
    pub keycloak_extra: String,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            failure_threshold: 2,
            cooldown_seconds: 60,
            health_check_cache_seconds: 0,
            timeout_seconds: 2,
            allow_offline_mode: true,
            admin_client_secret: ADMIN_CLIENT_SECRET.to_string(),
            extra: String::new(),
            keycloak_extra: String::new(),
        }
    }
}

impl TestEnv {
    /// A config for Keycloak at `url`, realm `resilient-test`, with the given tuning.
    pub fn new(url: &str, t: &Tuning) -> TestEnv {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = format!(
            "keycloak:\n  server_url: {url}\n  realm: resilient-test\n  client_id: webapp\n  client_secret: {LOGIN_CLIENT_SECRET}\n  admin_client_id: keycloak-resilient-sync\n  admin_client_secret: {admin}\n  timeout_seconds: {timeout}\n  connect_timeout_seconds: 1\n{kextra}  resilience:\n    failure_threshold: {threshold}\n    cooldown_seconds: {cooldown}\n    health_check_cache_seconds: {health}\n    allow_offline_mode: {offline}\nstorage:\n  path: ./data\n{extra}",
            admin = t.admin_client_secret,
            timeout = t.timeout_seconds,
            threshold = t.failure_threshold,
            cooldown = t.cooldown_seconds,
            health = t.health_check_cache_seconds,
            offline = t.allow_offline_mode,
            extra = t.extra,
            kextra = t.keycloak_extra,
        );
        std::fs::write(dir.path().join("config.yaml"), yaml).expect("write config");
        TestEnv { dir }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Creates the (empty) database, as a first `user add` or `start` would: the commands
    /// that only work on an existing one refuse a directory without it (issue 16 point 4).
    pub fn create_database(&self) {
        drop(
            keycloak_resilient::store::Store::open(&self.data_dir()).expect("create the database"),
        );
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path()).expect("test config loads")
    }

    /// A library client on the real clock, opening the env's data directory.
    pub fn client(&self) -> ResilientClient {
        ResilientClient::new(self.config()).expect("client")
    }

    /// A library client on a manual clock over a fresh in-memory store.
    pub fn client_with_clock(&self, clock: &ManualClock) -> ResilientClient {
        let store = Arc::new(Store::temporary().expect("store"));
        let clock: SharedClock = Arc::new(clock.clone());
        ResilientClient::with_parts(self.config(), store, clock).expect("client")
    }

    /// The local-auth layer over a client opening the env's data directory.
    pub fn auth(&self) -> Auth {
        Auth::new(self.client())
    }

    /// The binary with `--config` pointing at this env; no stdin unless given.
    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("keycloak-resilient").expect("binary");
        c.arg("--config").arg(self.config_path());
        clean_env(&mut c);
        c.write_stdin("");
        c
    }
}

/// Leaves out of `c`'s environment what would change the binary's behaviour under test: the
/// secrets' variables, systemd's, the socket override, the log level.
pub fn clean_env(c: &mut Command) -> &mut Command {
    for var in [
        "KEYCLOAK_CLIENT_SECRET",
        "KEYCLOAK_ADMIN_CLIENT_SECRET",
        "KEYCLOAK_CLIENT_SECRET_FILE",
        "KEYCLOAK_ADMIN_CLIENT_SECRET_FILE",
        "CREDENTIALS_DIRECTORY",
        "JOURNAL_STREAM",
        "KEYCLOAK_RESILIENT_SOCKET",
        "RUST_LOG",
    ] {
        c.env_remove(var);
    }
    c
}

/// Path of the repo's file `rel`.
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A username unique to this test run (live Keycloak keeps users between tests).
pub fn unique_user(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// The account of `user` in `package` (the tests' names are good names).
pub fn acct(user: &str, package: &str) -> keycloak_resilient::Account {
    keycloak_resilient::Account::new(user, package).expect("a test account's names pass the rule")
}
