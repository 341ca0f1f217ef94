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

    /// A token of the sync client (`keycloak-resilient-sync`), for the admin API.
    fn sync_token(&self) -> String {
        let resp = admin_http()
            .post(format!(
                "{}/realms/resilient-test/protocol/openid-connect/token",
                self.url()
            ))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "keycloak-resilient-sync"),
                ("client_secret", ADMIN_CLIENT_SECRET),
            ])
            .send()
            .expect("sync client token request");
        assert!(
            resp.status().is_success(),
            "sync client token: {}",
            resp.status()
        );
        let body: serde_json::Value = resp.json().expect("token JSON");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// The user's id in Keycloak, if it has the user.
    fn keycloak_id(&self, username: &str) -> Option<String> {
        let resp = admin_http()
            .get(format!("{}/admin/realms/resilient-test/users", self.url()))
            .query(&[("username", username), ("exact", "true")])
            .bearer_auth(self.sync_token())
            .send()
            .expect("user search");
        assert!(resp.status().is_success(), "user search: {}", resp.status());
        let body: serde_json::Value = resp.json().expect("search JSON");
        body[0]["id"].as_str().map(str::to_string)
    }

    /// Disables or enables the user through the admin API, as an administrator would.
    fn set_enabled_in_keycloak(&self, username: &str, enabled: bool) {
        let id = self.keycloak_id(username).expect("user exists in Keycloak");
        let resp = admin_http()
            .put(format!(
                "{}/admin/realms/resilient-test/users/{id}",
                self.url()
            ))
            .bearer_auth(self.sync_token())
            .json(&serde_json::json!({ "enabled": enabled }))
            .send()
            .expect("user update");
        assert_eq!(
            resp.status().as_u16(),
            204,
            "enabled={enabled} for {username}"
        );
    }

    /// Resets the user's password through the admin API (an administrator after an incident,
    /// or another app server replaying its `passwd`).
    fn reset_in_keycloak(&self, username: &str, password: &str) {
        let id = self.keycloak_id(username).expect("user exists in Keycloak");
        let resp = admin_http()
            .put(format!(
                "{}/admin/realms/resilient-test/users/{id}/reset-password",
                self.url()
            ))
            .bearer_auth(self.sync_token())
            .json(&serde_json::json!({"type": "password", "value": password, "temporary": false}))
            .send()
            .expect("reset-password");
        assert_eq!(resp.status().as_u16(), 204, "reset-password for {username}");
    }

    /// Locks the user as Keycloak's brute-force detector does after too many failures (live:
    /// detection switched on for the realm, then wrong passwords); undone by
    /// [`Server::brute_force_unlock`].
    fn brute_force_lock(&self, username: &str);
    /// Lifts the lock (live: and switches detection off again, as the fixture has it).
    fn brute_force_unlock(&self, username: &str);

    /// Sets (`Some`) or clears the user's required actions through the admin API.
    fn set_required_action_in_keycloak(&self, username: &str, action: Option<&str>) {
        let id = self.keycloak_id(username).expect("user exists in Keycloak");
        let actions: Vec<&str> = action.into_iter().collect();
        let resp = admin_http()
            .put(format!(
                "{}/admin/realms/resilient-test/users/{id}",
                self.url()
            ))
            .bearer_auth(self.sync_token())
            .json(&serde_json::json!({ "requiredActions": actions }))
            .send()
            .expect("user update");
        assert_eq!(
            resp.status().as_u16(),
            204,
            "requiredActions for {username}"
        );
    }

    /// Deletes the user through the admin API.
    fn delete_in_keycloak(&self, username: &str) {
        let id = self.keycloak_id(username).expect("user exists in Keycloak");
        let resp = admin_http()
            .delete(format!(
                "{}/admin/realms/resilient-test/users/{id}",
                self.url()
            ))
            .bearer_auth(self.sync_token())
            .send()
            .expect("user delete");
        assert_eq!(resp.status().as_u16(), 204, "deleting {username}");
    }
}

/// The tests' own HTTP client for the admin API (never the code under test's).
fn admin_http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
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
    fn brute_force_lock(&self, username: &str) {
        assert!(self.set_brute_force_locked(username, true), "{username}");
    }
    fn brute_force_unlock(&self, username: &str) {
        assert!(self.set_brute_force_locked(username, false), "{username}");
    }
}
