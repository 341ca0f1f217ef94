"""The original design's API, over the socket: code written for the in-process
``ObjKeycloakResilient`` and ``ObjUser.Login`` / ``ChangePassword`` runs unchanged apart from
its import line.

Names, arguments and return shapes are the original ones: plain dicts and ints, ``None`` where
the original returned nothing (no token). Refusals the original reported in its return value
(a wrong password, no cached token) are return values here too; a service that cannot be
reached, or a request it calls bad (an unknown package), raises
:class:`~keycloak_resilient.KeycloakResilientError` — the original could not fail that way,
and hiding it would make a dead service look like wrong passwords.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from .client import Client, PathLike
from .errors import KeycloakRejected, Refused
from .results import Token

#: The original's default priority for ``queue_sync``.
DEFAULT_PRIORITY = 5


def _token_dict(token: Token) -> Dict[str, Any]:
    """A token as the original returned it: ``cached`` always, ``cached_at`` when cached."""
    out: Dict[str, Any] = {
        "access_token": token.access_token,
        "expires_at": token.expires_at,
        "cached": token.cached,
    }
    if token.cached:
        out["cached_at"] = token.cached_at
    return out


class ObjKeycloakResilient:
    """The original resilient client: Keycloak behind a circuit breaker, the token cache, the
    sync queue — now in the running service, reached at ``socket_path`` (default
    ``$KEYCLOAK_RESILIENT_SOCKET``, then ``data/control.sock``)."""

    def __init__(self, socket_path: Optional[PathLike] = None, timeout: Optional[float] = None) -> None:
        self.client = Client(socket_path) if timeout is None else Client(socket_path, timeout=timeout)

    def close(self) -> None:
        """Closes the connection to the service (the next call opens another)."""
        self.client.close()

    def is_available(self) -> bool:
        """Whether Keycloak is reachable now (from the service's cached health probe)."""
        return self.client.status().available

    def authenticate(self, username: str, password: str, package: str) -> Optional[Dict[str, Any]]:
        """A token from Keycloak, or the cached one while Keycloak is away: a dict with
        ``access_token``, ``expires_at``, ``cached`` (and ``cached_at`` when cached); ``None``
        when refused."""
        try:
            return _token_dict(self.client.authenticate(user=username, package=package, password=password))
        except Refused:
            return None

    def get_cached_token(self, username: str, package: str) -> Optional[Dict[str, Any]]:
        """The cached token inside the grace period (the same dict as :meth:`authenticate`),
        or ``None``."""
        try:
            return _token_dict(self.client.cached_token(user=username, package=package))
        except Refused:
            return None

    def queue_sync(
        self,
        username: str,
        package: str,
        sync_type: str,
        sync_data: Dict[str, Any],
        priority: int = DEFAULT_PRIORITY,
    ) -> str:
        """Queues a change for Keycloak (durable before it returns); returns its id."""
        return self.client.queue_sync(user=username, package=package, sync_type=sync_type, data=sync_data, priority=priority)

    def process_sync_queue(self, batch_size: int = 100) -> int:
        """Runs one sync cycle of at most ``batch_size`` items; returns how many Keycloak dealt
        with (0 while it is away)."""
        return self.client.sync_now(batch_size=batch_size).processed

    def cleanup_expired_tokens(self, hours: int = 48) -> int:
        """Removes cached tokens older than ``hours``; returns how many. (The service's cleanup
        also removes, at its default ages, what its hourly cleanup would.)"""
        return self.client.cleanup(token_hours=hours).tokens_removed

    def cleanup_completed_syncs(self, days: int = 7) -> int:
        """Removes completed and superseded sync items finished more than ``days`` ago;
        returns how many. (As :meth:`cleanup_expired_tokens`, at default ages for the rest.)"""
        return self.client.cleanup(sync_days=days).syncs_removed

    def get_status(self) -> Dict[str, Any]:
        """``available``, ``circuit_state``, ``failure_count``, ``mode``, ``pending_syncs``,
        ``cached_tokens``, ``config`` (``failure_threshold``, ``cooldown_seconds``,
        ``grace_period_hours``, ``offline_mode_allowed``), then the service's additions
        (``failed_syncs``, ``queue_blocked``, ``unavailable_reason``, ``active_sessions``, …)."""
        status = self.client.call("status")
        original = ("available", "circuit_state", "failure_count", "mode", "pending_syncs", "cached_tokens", "config")
        out = {key: status.get(key) for key in original}
        out.update({k: v for k, v in status.items() if k not in out})
        return out

    def login(self, username: str, password: str, package: str) -> Dict[str, Any]:
        """The original ``ObjUser.Login``: local authentication first, then Keycloak or the
        cached token; a session whatever Keycloak's availability. Returns ``success``,
        ``session_id``, ``auth_mode`` (keycloak | cached | local), ``keycloak_status`` and
        ``reason`` (``None`` unless refused); ``locked_until`` too for a locked account."""
        try:
            result: Dict[str, Any] = self.client.call("login", user=username, package=package, password=password)
        except Refused as refused:
            if not isinstance(refused.result, dict):
                raise
            result = refused.result
        out = {key: result.get(key) for key in ("success", "session_id", "auth_mode", "keycloak_status", "reason")}
        out["success"] = bool(out["success"])
        if result.get("locked_until"):
            out["locked_until"] = result["locked_until"]
        return out

    def change_password(self, username: str, old_password: str, new_password: str, package: str) -> Dict[str, Any]:
        """The original ``ObjUser.ChangePassword``: checks the old password locally, changes
        it locally always, then in Keycloak now or through the queue. Returns ``success``,
        ``mode`` (synchronized | queued; rejected when Keycloak refused the new password,
        which stays changed locally) and ``reason`` (``None`` unless refused or rejected);
        ``sync_id`` too when queued."""
        try:
            result: Dict[str, Any] = self.client.call(
                "passwd", user=username, package=package, old_password=old_password, new_password=new_password
            )
        except (Refused, KeycloakRejected) as e:
            if not isinstance(e.result, dict):
                raise
            result = e.result
        out: Dict[str, Any] = {
            "success": bool(result.get("success")),
            "mode": result.get("mode"),
            "reason": result.get("reason") or result.get("keycloak_error"),
        }
        if result.get("sync_id"):
            out["sync_id"] = result["sync_id"]
        return out
