//! The hermetic integration tests: one binary, so the fake Keycloak and the helpers are
//! compiled once. Every test here talks only to 127.0.0.1 and needs nothing installed.
//!
//! `cargo test --test it` runs them all; `cargo test --test it cli::` one module.
//! The live-Keycloak suite is its own binary, `tests/live.rs`, run by `scripts/live-tests.sh`.

/// Shared helpers: a temporary data directory with its config, the CLI runner, the fake
/// Keycloak, and the `Server` trait that lets a scenario run against the fake or a real server.
mod common;
/// Scenarios written once and run twice: here against the fake, in `tests/live.rs` against a
/// real Keycloak. A scenario that cannot hold on both does not belong here.
mod scenarios;

/// Issue 15 point 7: `backup` and `restore`, and a damaged database's plain message.
mod backup;
/// The real binary, one-shot: exit codes, stdout/stderr text, `--json` shapes, `start` as a
/// child stopped by SIGTERM or SIGKILL.
mod cli;
/// Issue 16: command-line conventions (`--json` everywhere, closed pipes, completions, man,
/// journald and JSON logs), secrets from files and credentials, the shipped unit and cron
/// job as the README documents them.
mod conventions;
/// Kill -9 at random moments, hundreds of times: nothing acknowledged is lost, nothing is
/// applied twice.
mod crash;
/// The `test` command's checks and the refresh grant.
mod diagnostics;
/// The fake Keycloak itself, through a real HTTP client: a fake that drifts from Keycloak's
/// answers would make every other test lie, so it is pinned first.
mod fake;
/// Keycloak's faults at the HTTP level (trickle, stall mid-body, oversized, closed, a route
/// that is not there; hang and slow): bounded calls, the bulkhead, the trial as a probe, and
/// one-shot logins that hold no lock across a Keycloak call (issue 14).
mod faults;
/// Issue 15 point 4: a full disk (a real small tmpfs, as root) heals without a restart.
mod full_disk;
/// The library end to end (`ResilientClient`, `Auth`) against the fake: the shared scenarios,
/// and what only the fake can drive (5xx pages, 429, slowness, exact request counts).
mod library;
/// Issue 15 point 3: private files whatever the umask, a 0644 metrics textfile, another
/// user's data directory refused.
mod modes;
/// Issue 16 point 1: `queue show`, `retry`, `remove`, one-shot and over the socket.
mod queue_ops;
/// Issue 16 point 2: SIGHUP reloads the configuration and secrets; a bad one is refused.
mod reload;
/// One database, many callers: a running `start` serving one-shot commands and applications
/// over its Unix socket.
mod socket;
/// Issue 16 point 6: a private CA for Keycloak's TLS (`keycloak.tls.ca_file`), made in the test.
mod tls;
/// Issue 18: `verify-token` from the kept realm keys, the outage grace, cached tokens
/// refreshed ahead of expiry.
mod verify;
