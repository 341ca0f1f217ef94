//! Who may run what over the control socket. The socket's file mode and group decide who may
//! connect; this decides, from the peer's credentials as the kernel reports them
//! (`SO_PEERCRED`, never anything the caller says), which ops a connected caller may run: the
//! service's own user and root run every op, any other user only `service.application_ops`
//! (by default what a web application needs: log users in, change passwords, tokens,
//! sessions, status). A refusal names the op and is logged with the peer's uid.

use super::protocol::Answer;
use super::EXIT_REFUSED;
use crate::config::SocketConfig;
use std::os::unix::net::UnixStream;

/// Every op the socket knows, as [`super::protocol::Request::op`] names them.
pub const KNOWN_OPS: &[&str] = &[
    "status",
    "sync-now",
    "cleanup",
    "authenticate",
    "cached-token",
    "refresh",
    "queue-sync",
    "queue-sync-many",
    "queue",
    "queue-show",
    "queue-retry",
    "queue-remove",
    "login",
    "passwd",
    "user-add",
    "user-list",
    "user-disable",
    "user-enable",
    "user-unlock",
    "user-remove",
    "user-import",
    "session-show",
    "logout",
    "metrics",
    "verify-token",
    "reconcile",
    "backup",
];

/// The split between the service's user (and root) and everybody else.
#[derive(Debug, Clone)]
pub struct Access {
    /// The uid the service runs as.
    service_uid: u32,
    /// What other users may run.
    application_ops: Vec<String>,
}

/// True when a peer running as `peer_uid` may run `op` in a service running as
/// `service_uid` that lets other users run `application_ops`.
pub fn allowed(peer_uid: u32, service_uid: u32, op: &str, application_ops: &[String]) -> bool {
    peer_uid == 0 || peer_uid == service_uid || application_ops.iter().any(|o| o == op)
}

impl Access {
    /// The split configured in `socket`, for a service running as `service_uid`.
    ///
    /// # Errors
    ///
    /// A one-line message naming `service.application_ops` and the op it does not know.
    pub fn new(socket: &SocketConfig, service_uid: u32) -> Result<Access, String> {
        if let Some(bad) = socket
            .application_ops
            .iter()
            .find(|op| !KNOWN_OPS.contains(&op.as_str()))
        {
            return Err(format!(
                "service.application_ops: unknown op {bad:?} (the ops are: {})",
                KNOWN_OPS.join(", ")
            ));
        }
        Ok(Access {
            service_uid,
            application_ops: socket.application_ops.clone(),
        })
    }

    /// The split for a service running as the current effective user.
    ///
    /// # Errors
    ///
    /// As [`Access::new`].
    pub fn for_this_process(socket: &SocketConfig) -> Result<Access, String> {
        Access::new(socket, nix::unistd::geteuid().as_raw())
    }

    /// `None` when `peer_uid` may run `op`; otherwise the refusal to answer with (exit 1),
    /// after logging it with the uid.
    pub fn check(&self, peer_uid: u32, op: &str) -> Option<Answer> {
        if allowed(peer_uid, self.service_uid, op, &self.application_ops) {
            return None;
        }
        log::warn!(
            "control socket: refused op {op:?} to uid {peer_uid} (not the service's uid {} nor root; allowed: service.application_ops)",
            self.service_uid
        );
        let allowed = if self.application_ops.is_empty() {
            "none".to_string()
        } else {
            self.application_ops.join(", ")
        };
        Some(Answer::error(
            EXIT_REFUSED,
            &format!(
                "op {op:?} is not allowed to uid {peer_uid}: other users than the service's may run only service.application_ops ({allowed}); run it as the service's user or root"
            ),
        ))
    }
}

/// The uid of the process at the other end of `stream`, as the kernel recorded it when it
/// connected.
///
/// # Errors
///
/// When the kernel does not say (not expected on Linux for a Unix socket).
pub fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    getsockopt(stream, PeerCredentials)
        .map(|c| c.uid())
        .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::protocol::Envelope;
    use crate::config::DEFAULT_APPLICATION_OPS;

    fn socket(ops: &[&str]) -> SocketConfig {
        SocketConfig {
            path: None,
            group: None,
            mode: 0o600,
            application_ops: ops.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Issue 13 point 2: the decision, as a function of (peer, service, op, config).
    #[test]
    fn the_owner_and_root_run_everything_others_only_the_application_ops() {
        let app: Vec<String> = DEFAULT_APPLICATION_OPS
            .iter()
            .map(|s| s.to_string())
            .collect();
        for &op in KNOWN_OPS {
            assert!(allowed(1000, 1000, op, &app), "owner: {op}");
            assert!(allowed(0, 1000, op, &app), "root: {op}");
            assert!(allowed(0, 0, op, &[]), "root service: {op}");
            let for_others = DEFAULT_APPLICATION_OPS.contains(&op);
            assert_eq!(allowed(33, 1000, op, &app), for_others, "uid 33: {op}");
        }
        for op in [
            "user-add",
            "user-list",
            "user-import",
            "queue",
            "queue-show",
            "queue-retry",
            "queue-remove",
            "queue-sync",
            "queue-sync-many",
            "sync-now",
            "cleanup",
            "metrics",
        ] {
            assert!(!allowed(33, 1000, op, &app), "{op}");
        }
        assert!(!allowed(33, 1000, "login", &[]));
        assert!(allowed(33, 1000, "metrics", &["metrics".to_string()]));
    }

    #[test]
    fn a_refusal_names_the_op_and_the_uid_and_exits_1() {
        let access = Access::new(&socket(&["login", "status"]), 1000).unwrap();
        assert!(access.check(1000, "user-add").is_none());
        assert!(access.check(0, "user-add").is_none());
        assert!(access.check(998, "login").is_none());
        let refused = access.check(998, "user-add").expect("refused");
        assert_eq!(refused.exit, EXIT_REFUSED);
        assert!(!refused.not_run);
        let line = refused.stderr.trim_end();
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with("error: op \"user-add\" is not allowed to uid 998"),
            "{line}"
        );
        assert!(line.contains("login, status"), "{line}");
    }

    #[test]
    fn unknown_application_ops_are_refused_naming_the_key() {
        let err = Access::new(&socket(&["login", "user-ad"]), 1).unwrap_err();
        assert!(
            err.starts_with("service.application_ops: unknown op \"user-ad\""),
            "{err}"
        );
        assert!(err.contains("user-add"), "{err}");
    }

    /// The list is the protocol's: serde's "unknown variant" error names every op it knows.
    #[test]
    fn known_ops_are_exactly_the_protocol_ops() {
        let Err(err) = Envelope::parse(r#"{"op":"no-such-op"}"#) else {
            panic!("an unknown op parsed");
        };
        let listed = err
            .split_once("expected one of ")
            .unwrap_or_else(|| panic!("no op list in {err:?}"))
            .1;
        let mut from_serde: Vec<&str> = listed
            .split(", ")
            .map(|s| s.trim_matches(|c: char| c == '`' || c == ' ' || c == '"'))
            .map(|s| s.split('`').next().unwrap_or(s))
            .collect();
        let mut ours = KNOWN_OPS.to_vec();
        from_serde.sort_unstable();
        ours.sort_unstable();
        assert_eq!(from_serde, ours);
        for op in DEFAULT_APPLICATION_OPS {
            assert!(KNOWN_OPS.contains(op), "{op}");
        }
    }

    #[test]
    fn the_peer_of_a_socket_pair_is_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(peer_uid(&a).unwrap(), nix::unistd::geteuid().as_raw());
    }
}
