"""Typed answers: one dataclass per kind of result the service gives.

Each is built from the answer's ``result`` (the command's ``--json`` output) by ``from_json``,
which ignores keys it does not know, so that a newer service does not break an older client.
Times are RFC 3339 strings in UTC, as the service sends them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Type, TypeVar

T = TypeVar("T")


def _build(cls: Type[T], data: Any) -> T:
    """``cls`` from the keys of ``data`` that are fields of ``cls``."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Token:
    """A Keycloak access token, fresh or from the cache (``authenticate``, ``cached-token``,
    ``refresh``)."""

    #: The access token.
    access_token: str
    #: When it expires.
    expires_at: str
    #: True when it came from the cache rather than from Keycloak just now.
    cached: bool = False
    #: When the cached token was obtained from Keycloak (``None`` for a fresh one).
    cached_at: Optional[str] = None

    @classmethod
    def from_json(cls, data: Any) -> "Token":
        """From the answer's ``result``."""
        return _build(cls, data)


@dataclass(frozen=True)
class ResilienceConfig:
    """The resilience settings in force (``status``'s ``config``)."""

    #: Consecutive outages that open the circuit.
    failure_threshold: int
    #: Open-circuit cooldown, seconds.
    cooldown_seconds: int
    #: How long a cached token stands in for Keycloak, hours.
    grace_period_hours: int
    #: Whether local-only logins are allowed while Keycloak is unreachable.
    offline_mode_allowed: bool

    @classmethod
    def from_json(cls, data: Any) -> "ResilienceConfig":
        """From ``status``'s ``config``."""
        return _build(cls, data)


@dataclass(frozen=True)
class Status:
    """``status``: the original ``get_status()`` block and the service's additions."""

    #: Keycloak reachable now.
    available: bool
    #: ``closed``, ``open`` or ``half_open``.
    circuit_state: str
    #: Consecutive availability failures.
    failure_count: int
    #: ``normal``, ``degraded`` or ``offline``.
    mode: str
    #: Items waiting in the sync queue.
    pending_syncs: int
    #: Cached tokens inside the grace period.
    cached_tokens: int
    #: The resilience settings in force.
    config: ResilienceConfig
    #: Items Keycloak refused for good.
    failed_syncs: int = 0
    #: Why the queue is blocked (admin credentials refused), if it is.
    queue_blocked: Optional[str] = None
    #: Why Keycloak is unavailable, if it is.
    unavailable_reason: Optional[str] = None
    #: Sessions not yet expired.
    active_sessions: int = 0
    #: Logins in the last hour by ``auth_mode`` (``keycloak``, ``cached``, ``local``).
    auth_modes_last_hour: Dict[str, int] = field(default_factory=dict)
    #: Locked accounts: ``user``, ``package``, ``locked_until``.
    locked_accounts: List[Dict[str, Any]] = field(default_factory=list)
    #: Seconds since the oldest usable cached token was obtained (``None``: none cached).
    oldest_cached_token_age_seconds: Optional[int] = None

    @classmethod
    def from_json(cls, data: Any) -> "Status":
        """From the answer's ``result``."""
        status = _build(cls, {**data, "config": ResilienceConfig.from_json(data.get("config", {}))})
        return status


@dataclass(frozen=True)
class LoginResult:
    """``login``: the original ``ObjUser.Login`` result (a refused login raises
    :class:`~keycloak_resilient.Refused` carrying this shape as ``result``)."""

    #: True when the user is logged in.
    success: bool
    #: The new session, when logged in.
    session_id: Optional[str] = None
    #: ``keycloak``, ``cached`` or ``local``.
    auth_mode: Optional[str] = None
    #: What Keycloak was doing: ``online``, ``offline``, …
    keycloak_status: Optional[str] = None
    #: Why the login was refused.
    reason: Optional[str] = None
    #: Until when a locked account stays locked.
    locked_until: Optional[str] = None

    @classmethod
    def from_json(cls, data: Any) -> "LoginResult":
        """From the answer's ``result``."""
        return _build(cls, data)


@dataclass(frozen=True)
class PasswdResult:
    """``passwd``: the original ``ChangePassword`` result."""

    #: True when the local password changed.
    success: bool
    #: ``synchronized`` (Keycloak has it), ``queued`` (it will) or ``rejected`` (it refused).
    mode: Optional[str] = None
    #: The queued change, when Keycloak was away or refused it.
    sync_id: Optional[str] = None
    #: Keycloak's reason, when it refused the new password.
    keycloak_error: Optional[str] = None
    #: Why the change was refused (wrong old password, locked or disabled account).
    reason: Optional[str] = None
    #: Whether the local password is the new one (false when Keycloak's password policy
    #: refused it and Keycloak decides passwords: the previous one stays).
    local_changed: Optional[bool] = None

    @classmethod
    def from_json(cls, data: Any) -> "PasswdResult":
        """From the answer's ``result``."""
        return _build(cls, data)


@dataclass(frozen=True)
class SyncReport:
    """``sync-now``: what one sync cycle did."""

    #: Items Keycloak dealt with (completed + failed + retried).
    processed: int
    #: Applied in Keycloak.
    completed: int
    #: Of those, changes found already applied after a crash (not sent again).
    already_applied: int
    #: Refused for good.
    failed: int
    #: Refused for a passing reason; will be retried.
    retried: int
    #: Claimed but put back untouched.
    released: int
    #: Why the cycle did nothing or stopped early.
    stopped: Optional[str]
    #: Items still waiting afterwards.
    pending_syncs: int
    #: Failed items in the queue afterwards.
    failed_syncs: int

    @classmethod
    def from_json(cls, data: Any) -> "SyncReport":
        """From the answer's ``result`` (``report`` and the two counts beside it)."""
        return _build(cls, {**data.get("report", {}), **{k: v for k, v in data.items() if k != "report"}})


@dataclass(frozen=True)
class ReconcileReport:
    """``reconcile``: the local accounts compared with Keycloak's user list."""

    #: Local accounts compared with a complete listing of their realm.
    checked: int
    #: Disabled here because Keycloak disabled them.
    disabled: int
    #: Enabled again because Keycloak did (it had disabled them).
    re_enabled: int
    #: Linked accounts Keycloak no longer has.
    gone: int
    #: Keycloak users with no local account.
    only_in_keycloak: int
    #: Local accounts Keycloak never had.
    only_here: int
    #: Accounts linked to their Keycloak id by this run.
    linked: int
    #: Why it stopped before the end, if it did.
    stopped: Optional[str] = None
    #: When it ran.
    at: Optional[str] = None
    #: When a reconcile last went through to the end.
    last_complete: Optional[str] = None

    @classmethod
    def from_json(cls, data: Any) -> "ReconcileReport":
        """From the answer's ``result``."""
        return _build(cls, data)


@dataclass(frozen=True)
class CleanupReport:
    """``cleanup``: what was removed."""

    #: Cached tokens.
    tokens_removed: int
    #: Completed and superseded sync items.
    syncs_removed: int
    #: Failed sync items.
    failed_syncs_removed: int
    #: Expired sessions.
    sessions_removed: int
    #: Old login records.
    auth_events_removed: int = 0

    @classmethod
    def from_json(cls, data: Any) -> "CleanupReport":
        """From the answer's ``result``."""
        return _build(cls, data)


@dataclass(frozen=True)
class QueueItem:
    """One sync item as ``queue`` lists it (never its data)."""

    #: The item's id.
    sync_id: str
    #: The username.
    user: str
    #: The package.
    package: str
    #: ``password_change``, …
    sync_type: str
    #: ``pending``, ``processing``, ``completed``, ``superseded`` or ``failed``.
    status: str
    #: 1 runs first.
    priority: int
    #: Errors Keycloak answered so far.
    attempts: int
    #: When it was queued.
    queued_at: str
    #: When it was finished.
    processed_at: Optional[str] = None
    #: When it is tried next.
    next_attempt_at: Optional[str] = None
    #: The last error.
    last_error: Optional[str] = None
    #: When it was sent with its outcome unknown (a crash), if it was.
    sent_at: Optional[str] = None
    #: ``queue-show`` only: whether the item still holds its sealed data (a retry needs it).
    data_kept: Optional[bool] = None

    @classmethod
    def from_json(cls, data: Any) -> "QueueItem":
        """From one of ``queue``'s ``items``."""
        return _build(cls, data)


@dataclass(frozen=True)
class QueuePage:
    """``queue``: one page of items and the counts per status."""

    #: The items of this page.
    items: List[QueueItem]
    #: Items per status.
    counts: Dict[str, int]
    #: The ``after`` of the next page, ``None`` on the last one.
    next: Optional[str] = None
    #: Why the queue is blocked, if it is.
    blocked: Optional[str] = None

    @classmethod
    def from_json(cls, data: Any) -> "QueuePage":
        """From the answer's ``result``."""
        items = [QueueItem.from_json(i) for i in data.get("items", [])]
        return _build(cls, {**data, "items": items})


@dataclass(frozen=True)
class LocalUser:
    """One local account as ``user-list`` shows it (never its password hash)."""

    #: The username.
    user: str
    #: The package.
    package: str
    #: False once disabled.
    enabled: bool
    #: Until when it is locked, if it is.
    locked_until: Optional[str] = None
    #: When it was created.
    created_at: Optional[str] = None
    #: When it last changed.
    updated_at: Optional[str] = None

    @classmethod
    def from_json(cls, data: Any) -> "LocalUser":
        """From one row of ``user-list``."""
        return _build(cls, data)


@dataclass(frozen=True)
class ImportReport:
    """``user-import``: how many rows were imported and which failed (``line``, ``error``)."""

    #: Rows imported.
    imported: int
    #: Rows refused.
    errors: List[Dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Any) -> "ImportReport":
        """From the answer's ``result``."""
        return _build(cls, data)


@dataclass(frozen=True)
class Session:
    """``session-show``: one active session."""

    #: The session id.
    session_id: str
    #: The username.
    user: str
    #: The package.
    package: str
    #: How its login was decided: ``keycloak``, ``cached`` or ``local``.
    auth_mode: str
    #: When it began.
    created_at: str
    #: When it ends.
    expires_at: str

    @classmethod
    def from_json(cls, data: Any) -> "Session":
        """From the answer's ``result``."""
        return _build(cls, data)


@dataclass(frozen=True)
class TokenCheck:
    """``verify-token``: a good access token's claims (an invalid one raises
    :class:`~keycloak_resilient.Refused` whose ``result`` has ``reason`` and ``detail``)."""

    #: Always true here.
    valid: bool
    #: Keycloak's user id.
    sub: str
    #: The realm whose key signed it.
    realm: str
    #: ``exp``, epoch seconds.
    exp: int
    #: ``exp`` as RFC 3339.
    expires_at: str
    #: ``preferred_username``, when the token has it.
    preferred_username: Optional[str] = None
    #: ``realm_access.roles``.
    realm_roles: List[str] = field(default_factory=list)
    #: ``resource_access.<client>.roles``, per client.
    client_roles: Dict[str, List[str]] = field(default_factory=dict)
    #: True when past ``exp`` and accepted only in the outage grace (Keycloak away).
    expired_in_grace: bool = False

    @classmethod
    def from_json(cls, data: Any) -> "TokenCheck":
        """From the answer's ``result``."""
        return _build(cls, data)


@dataclass(frozen=True)
class Answer:
    """One answer line, as the service sent it (see the README's "The socket protocol")."""

    #: The exit code the command would have ended with.
    exit: int
    #: What it printed on stdout.
    stdout: str = ""
    #: What it printed on stderr (refusal reasons, ``error: …``).
    stderr: str = ""
    #: stdout parsed, for JSON output.
    result: Optional[Any] = None
    #: True when the service did not run the request (busy or shutting down): safe to resend.
    not_run: bool = False

    @classmethod
    def from_json(cls, data: Any) -> "Answer":
        """From the parsed answer line."""
        return _build(cls, data)
