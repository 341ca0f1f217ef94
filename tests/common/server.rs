//! One interface over the fake and the live Keycloak, so that the same scenarios run against
//! both and the fake cannot drift from the real server.

use super::fake_keycloak::{Behavior, FakeKeycloak};
use super::{ADMIN_CLIENT_SECRET, LOGIN_CLIENT_SECRET};
use std::time::Duration;

/// What a scenario needs from a Keycloak.
pub trait Server {
    /// Base URL.
    fn url(&self) -> String;
    /// "fake" or "live", for messages.
    fn kind(&self) -> &'static str;
    /// Creates an enabled user with a full profile (or disabled) and returns its username.
    fn create_user(&self, username: &str, password: &str, enabled: bool);
    /// Keycloak crashes: connections are refused (live: SIGKILL).
    fn go_down(&self);
    /// Keycloak comes back with its data (live: restart and wait until ready).
    fn come_back(&self);
    /// Keycloak hangs: connections accepted, never answered (live: SIGSTOP).
    fn hang(&self);
    /// Keycloak answers again (live: SIGCONT).
    fn unhang(&self);

    /// Does Keycloak grant a token for this password now? (direct password grant)
    fn login_works(&self, username: &str, password: &str) -> bool {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        let resp = http
            .post(format!(
                "{}/realms/resilient-test/protocol/openid-connect/token",
                self.url()
            ))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "webapp"),
                ("client_secret", LOGIN_CLIENT_SECRET),
                ("username", username),
                ("password", password),
            ])
            .send()
            .expect("token request");
        resp.status().is_success()
    }
}

impl Server for FakeKeycloak {
    fn url(&self) -> String {
        FakeKeycloak::url(self)
    }
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn create_user(&self, username: &str, password: &str, enabled: bool) {
        self.add_user(username, password, enabled);
    }
    fn go_down(&self) {
        self.set_behavior(Behavior::Refuse);
    }
    fn come_back(&self) {
        self.set_behavior(Behavior::Normal);
    }
    fn hang(&self) {
        self.set_behavior(Behavior::Hang);
    }
    fn unhang(&self) {
        self.set_behavior(Behavior::Normal);
    }
}

/// The live Keycloak started by `scripts/keycloak.sh` at `KEYCLOAK_TEST_URL`.
pub struct LiveKeycloak {
    pub url: String,
}

impl LiveKeycloak {
    /// The live server, when `KEYCLOAK_TEST_URL` is set; `None` (and a clear "skipped" line)
    /// otherwise.
    pub fn from_env(test: &str) -> Option<LiveKeycloak> {
        match std::env::var("KEYCLOAK_TEST_URL") {
            Ok(url) if !url.is_empty() => Some(LiveKeycloak {
                url: url.trim_end_matches('/').to_string(),
            }),
            _ => {
                eprintln!(
                    "SKIPPED {test}: KEYCLOAK_TEST_URL is not set (run scripts/live-tests.sh)"
                );
                None
            }
        }
    }

    fn script(&self, action: &str) {
        let status = std::process::Command::new(super::repo_file("scripts/keycloak.sh"))
            .arg(action)
            .status()
            .expect("run scripts/keycloak.sh");
        assert!(status.success(), "scripts/keycloak.sh {action} failed");
    }

    fn admin_token(&self) -> String {
        let http = reqwest::blocking::Client::new();
        let v: serde_json::Value = http
            .post(format!(
                "{}/realms/resilient-test/protocol/openid-connect/token",
                self.url
            ))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "keycloak-resilient-sync"),
                ("client_secret", ADMIN_CLIENT_SECRET),
            ])
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .expect("admin token");
        v["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }
}

impl Server for LiveKeycloak {
    fn url(&self) -> String {
        self.url.clone()
    }
    fn kind(&self) -> &'static str {
        "live"
    }
    fn create_user(&self, username: &str, password: &str, enabled: bool) {
        let http = reqwest::blocking::Client::new();
        let resp = http
            .post(format!("{}/admin/realms/resilient-test/users", self.url))
            .bearer_auth(self.admin_token())
            .json(&serde_json::json!({
                "username": username,
                "enabled": enabled,
                "email": format!("{username}@example.test"),
                "emailVerified": true,
                "firstName": "Test",
                "lastName": "User",
                "credentials": [{"type": "password", "value": password, "temporary": false}],
            }))
            .send()
            .expect("create user");
        assert_eq!(
            resp.status().as_u16(),
            201,
            "creating {username} on the live Keycloak"
        );
    }
    fn go_down(&self) {
        self.script("kill");
    }
    fn come_back(&self) {
        self.script("restart");
    }
    fn hang(&self) {
        self.script("pause");
    }
    fn unhang(&self) {
        self.script("resume");
    }
}
