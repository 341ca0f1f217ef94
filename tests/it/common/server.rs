//! One interface over the fake and the live Keycloak, so that the same scenarios run against
//! both and the fake cannot drift from the real server.

use super::fake_keycloak::{Behavior, FakeKeycloak};
use super::LOGIN_CLIENT_SECRET;
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
