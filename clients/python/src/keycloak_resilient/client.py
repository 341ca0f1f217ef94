"""The client: one method per socket operation, over one reused connection.

The service (``keycloak-resilient start``) listens on a Unix socket and takes one JSON request
per line, answering each with one JSON line: the exit code the same command would have ended
with on the command line, its output, and that output parsed (``result``). :class:`Client`
turns each operation into a method with typed arguments and a typed result, and every non-zero
exit code into an exception (:mod:`keycloak_resilient.errors`).

One connection is opened on first use and reused; a connection the service closed (it closes
idle ones after 60 s, and all of them when it stops or restarts) is noticed before the next
request and replaced. A lock makes a :class:`Client` safe to share between threads: requests
from several threads take turns on its connection. The service serves each connection on its
own thread, so for requests in parallel give each worker thread its own :class:`Client`.
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from .errors import ServiceUnavailable, error_for
from .results import (
    Answer,
    CleanupReport,
    ImportReport,
    LocalUser,
    LoginResult,
    PasswdResult,
    QueueItem,
    QueuePage,
    ReconcileReport,
    Session,
    Status,
    SyncReport,
    Token,
    TokenCheck,
)

#: The environment variable naming the socket when no ``socket_path`` is given.
SOCKET_ENV = "KEYCLOAK_RESILIENT_SOCKET"
#: The socket when neither ``socket_path`` nor the environment variable says otherwise:
#: ``data/control.sock``, relative to the working directory (the service's default).
DEFAULT_SOCKET = os.path.join("data", "control.sock")
#: How long a request may take by default, seconds (connecting and answering).
DEFAULT_TIMEOUT = 30.0
#: How long a ``sync-now`` may take by default: the command line waits as long.
SYNC_TIMEOUT = 300.0
#: Longest answer line accepted (a long ``queue`` page is the largest).
MAX_ANSWER_BYTES = 256 * 1024 * 1024
#: Pause between two tries of a request the service did not run (busy or shutting down).
NOT_RUN_RETRY = 0.05

PathLike = Union[str, "os.PathLike[str]"]


def default_socket_path() -> str:
    """``$KEYCLOAK_RESILIENT_SOCKET`` when set and not empty, else ``data/control.sock``."""
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


class Client:
    """A connection to the keycloak-resilient service.

    Args:
        socket_path: the service's socket; default :func:`default_socket_path`.
        timeout: seconds a request may take, connecting included (``sync_now`` waits at least
            :data:`SYNC_TIMEOUT`).

    Every operation method returns its typed result, or raises a
    :class:`~keycloak_resilient.KeycloakResilientError` subclass carrying the exit code and
    the message: :class:`~keycloak_resilient.Refused` (1), :class:`~keycloak_resilient.BadRequest`
    (2), :class:`~keycloak_resilient.ServiceError` (3), :class:`~keycloak_resilient.KeycloakRejected`
    (4), and :class:`~keycloak_resilient.ServiceUnavailable` when the service cannot be reached.
    """

    def __init__(self, socket_path: Optional[PathLike] = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path: str = os.fspath(socket_path) if socket_path is not None else default_socket_path()
        self.timeout = timeout
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._buffer = b""

    def __repr__(self) -> str:
        return f"Client(socket_path={self.socket_path!r}, timeout={self.timeout!r})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection (the next request opens a new one)."""
        with self._lock:
            self._drop()

    # --- the protocol ----------------------------------------------------------------------

    def request(self, op: str, timeout: Optional[float] = None, **fields: Any) -> Answer:
        """Sends one request and returns the answer as it came, whatever its exit code.

        ``op`` is the command's name (``user add`` is ``user-add``); ``fields`` are its keys
        (``None`` values are left out, so the service applies its defaults). A request the
        service did not run (``not_run``: busy, or shutting down) is sent again until
        ``timeout``. Raises :class:`~keycloak_resilient.ServiceUnavailable` when there is no
        answer.
        """
        body: Dict[str, Any] = {"op": op}
        body.update({k: v for k, v in fields.items() if v is not None})
        line = (json.dumps(body) + "\n").encode()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._lock:
            while True:
                answer = self._exchange(line, op, deadline)
                if not answer.not_run:
                    return answer
                # The service said nothing was done; the next holder of the socket may run it.
                self._drop()
                if time.monotonic() >= deadline:
                    raise ServiceUnavailable(_last_line(answer.stderr) or "the request was not run", op)
                time.sleep(NOT_RUN_RETRY)

    def call(self, op: str, timeout: Optional[float] = None, **fields: Any) -> Any:
        """Sends one request; returns its ``result`` (its ``stdout`` for text-only output), or
        raises the exception for its exit code."""
        answer = self.request(op, timeout=timeout, **fields)
        if answer.exit != 0:
            raise error_for(answer.exit, op, answer.stderr, answer.result)
        return answer.result if answer.result is not None else answer.stdout

    # --- operations, in the README's order -------------------------------------------------

    def login(self, *, user: str, package: str, password: str) -> LoginResult:
        """``login``: local authentication first, then Keycloak or the cached token; creates a
        session. A refused login raises :class:`~keycloak_resilient.Refused` whose ``result``
        holds ``success: false`` and the ``reason``."""
        return LoginResult.from_json(self.call("login", user=user, package=package, password=password))

    def authenticate(self, *, user: str, package: str, password: str) -> Token:
        """``authenticate``: a token from Keycloak, or the cached one while Keycloak is away."""
        return Token.from_json(self.call("authenticate", user=user, package=package, password=password))

    def user_add(
        self,
        *,
        user: str,
        package: str,
        password: str,
        email: Optional[str] = None,
        first_name: Optional[str] = None,
        last_name: Optional[str] = None,
    ) -> str:
        """``user-add``: a local account; with ``keycloak.manage_users``, in Keycloak too, with
        the profile fields given. Returns the service's message."""
        return _said(
            self.call(
                "user-add",
                user=user,
                package=package,
                password=password,
                email=email,
                first_name=first_name,
                last_name=last_name,
            )
        )

    def passwd(self, *, user: str, package: str, old_password: str, new_password: str) -> PasswdResult:
        """``passwd``: checks the old password locally, changes it locally, then in Keycloak
        or in the queue. Keycloak refusing the new one raises
        :class:`~keycloak_resilient.KeycloakRejected` (the local password did change)."""
        return PasswdResult.from_json(
            self.call("passwd", user=user, package=package, old_password=old_password, new_password=new_password)
        )

    def status(self) -> Status:
        """``status``: availability, circuit, mode, queue, cache, sessions."""
        return Status.from_json(self.call("status"))

    def user_list(self) -> List[LocalUser]:
        """``user-list``: the local accounts."""
        return [LocalUser.from_json(row) for row in self.call("user-list")]

    def queue(self, *, limit: Optional[int] = None, after: Optional[str] = None) -> QueuePage:
        """``queue``: one page of the sync queue (``limit`` items, default 100, after the
        ``next`` of the previous page)."""
        return QueuePage.from_json(self.call("queue", limit=limit, after=after))

    def queue_show(self, *, sync_id: str) -> QueueItem:
        """``queue show``: one item, everything but its data; raises
        :class:`~keycloak_resilient.BadRequest` for an unknown id."""
        return QueueItem.from_json(self.call("queue-show", sync_id=str(sync_id)))

    def queue_retry(
        self,
        *,
        sync_id: Optional[str] = None,
        failed: bool = False,
        sync_type: Optional[str] = None,
        user: Optional[str] = None,
    ) -> List[str]:
        """``queue retry``: sends one item again (``sync_id``), or every failed one
        (``failed=True``, narrowed by ``sync_type`` and ``user``), at the next sync. Returns
        the ids sent again; raises :class:`~keycloak_resilient.Refused` when the one item
        named cannot be (in flight, applied, older than a change already applied)."""
        result = self.call(
            "queue-retry",
            sync_id=None if sync_id is None else str(sync_id),
            failed=failed or None,
            type=sync_type,
            user=user,
        )
        return [str(i) for i in result["sync_ids"]]

    def queue_remove(self, *, sync_id: str) -> None:
        """``queue remove``: takes an item out for good (a failed one's secret with it);
        raises :class:`~keycloak_resilient.Refused` for an item in flight."""
        self.call("queue-remove", sync_id=str(sync_id))

    def sync_now(self, *, batch_size: Optional[int] = None, timeout: Optional[float] = None) -> SyncReport:
        """``sync-now``: one sync cycle of at most ``batch_size`` items (default: the service's
        ``batch_size``). Waits up to ``timeout`` (default: the client's, at least
        :data:`SYNC_TIMEOUT`)."""
        wait = timeout if timeout is not None else max(self.timeout, SYNC_TIMEOUT)
        return SyncReport.from_json(self.call("sync-now", timeout=wait, batch_size=batch_size))

    def reconcile(self, *, timeout: Optional[float] = None) -> ReconcileReport:
        """``reconcile``: compares the local accounts with Keycloak's user list and applies
        what Keycloak decided (disabled, deleted, enabled again). Waits up to ``timeout``
        (default: the client's, at least :data:`SYNC_TIMEOUT`)."""
        wait = timeout if timeout is not None else max(self.timeout, SYNC_TIMEOUT)
        return ReconcileReport.from_json(self.call("reconcile", timeout=wait))

    def cleanup(
        self,
        *,
        token_hours: Optional[int] = None,
        sync_days: Optional[int] = None,
        failed_days: Optional[int] = None,
    ) -> CleanupReport:
        """``cleanup``: removes cached tokens older than ``token_hours`` (48), finished sync
        items older than ``sync_days`` (7), failed ones older than ``failed_days`` (30), and
        expired sessions."""
        return CleanupReport.from_json(
            self.call("cleanup", token_hours=token_hours, sync_days=sync_days, failed_days=failed_days)
        )

    def cached_token(self, *, user: str, package: str) -> Token:
        """``cached-token``: the cached token inside the grace period; raises
        :class:`~keycloak_resilient.Refused` when there is none."""
        return Token.from_json(self.call("cached-token", user=user, package=package))

    def refresh(self, *, user: str, package: str) -> Token:
        """``refresh``: exchanges the cached refresh token for fresh tokens at Keycloak."""
        return Token.from_json(self.call("refresh", user=user, package=package))

    def verify_token(self, *, token: str) -> TokenCheck:
        """``verify-token``: checks an access token of the realm from the keys the service
        keeps (works while Keycloak is down). An invalid token raises
        :class:`~keycloak_resilient.Refused`; its ``result`` has ``reason`` (``expired``,
        ``bad_signature``, ``unknown_key``, ``wrong_issuer``, ``wrong_audience``,
        ``malformed``, ``account_disabled``) and ``detail``."""
        return TokenCheck.from_json(self.call("verify-token", token=token))

    def user_disable(self, *, user: str, package: str) -> str:
        """``user-disable``: also ends the user's sessions and drops the cached token."""
        return _said(self.call("user-disable", user=user, package=package))

    def user_enable(self, *, user: str, package: str) -> str:
        """``user-enable``."""
        return _said(self.call("user-enable", user=user, package=package))

    def user_unlock(self, *, user: str, package: str) -> str:
        """``user-unlock``: lifts a failed-login lock early."""
        return _said(self.call("user-unlock", user=user, package=package))

    def user_remove(self, *, user: str, package: str, in_keycloak: bool = False) -> str:
        """``user-remove``: also ends the user's sessions and drops the cached token;
        ``in_keycloak`` deletes the user from Keycloak too (needs ``keycloak.manage_users``)."""
        return _said(self.call("user-remove", user=user, package=package, in_keycloak=in_keycloak or None))

    def queue_sync(
        self,
        *,
        user: str,
        package: str,
        sync_type: str,
        data: Dict[str, Any],
        priority: Optional[int] = None,
    ) -> str:
        """``queue-sync``: queues a change for Keycloak (``password_change``:
        ``{"new_password": "…"}``); ``priority`` 1 runs first (default 5). Returns the
        item's id."""
        result = self.call("queue-sync", user=user, package=package, type=sync_type, data=data, priority=priority)
        return str(result["sync_id"])

    def queue_sync_many(self, *, changes: Sequence[Mapping[str, Any]]) -> List[str]:
        """``queue-sync-many``: queues up to 1000 changes with one flush, far faster than as
        many ``queue_sync`` calls. Each change is a dict of the request's keys: ``user``,
        ``package``, ``type``, ``data`` and optionally ``priority``. Every change is checked
        before any is written; one refused raises :class:`~keycloak_resilient.BadRequest`
        naming it (``change 3 of 10: …``) and queues none. Returns the ids in order."""
        result = self.call("queue-sync-many", changes=[dict(c) for c in changes])
        return [str(i) for i in result["sync_ids"]]

    def session_show(self, *, session_id: str) -> Session:
        """``session-show``: raises :class:`~keycloak_resilient.Refused` for a session that is
        not active."""
        return Session.from_json(self.call("session-show", session_id=str(session_id)))

    def logout(self, *, session_id: str) -> bool:
        """``logout``: ends the session; raises :class:`~keycloak_resilient.Refused` when there
        was none."""
        return bool(self.call("logout", session_id=str(session_id))["ended"])

    def user_import(self, *, file: PathLike) -> ImportReport:
        """``user-import``: the service reads ``file`` itself (made absolute here), so its
        user must be able to read it. Rows that failed raise
        :class:`~keycloak_resilient.Refused` carrying the report as ``result``."""
        return ImportReport.from_json(self.call("user-import", file=os.path.abspath(os.fspath(file))))

    def metrics(self, *, textfile: Optional[PathLike] = None) -> str:
        """``metrics``: the Prometheus text, or ``""`` once written to ``textfile`` (an
        absolute path the service writes)."""
        path = os.path.abspath(os.fspath(textfile)) if textfile is not None else None
        return str(self.call("metrics", textfile=path))

    # --- the connection --------------------------------------------------------------------

    def _exchange(self, line: bytes, op: str, deadline: float) -> Answer:
        """One request line out, one answer line back, on the kept connection or a new one."""
        if self._sock is not None and self._peer_closed():
            self._drop()
        reused = self._sock is not None
        if not reused:
            self._connect(op, deadline)
        if not self._send(line, op, deadline) and reused:
            # Closed between the check and the send: nothing was read, so nothing ran.
            self._drop()
            self._connect(op, deadline)
            self._send(line, op, deadline)
        # After a failed send on a fresh connection the service may still have answered (busy,
        # shutting down) before reading anything: the answer, or its absence, says which.
        return self._read_answer(op, deadline)

    def _connect(self, op: str, deadline: float) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(_remaining(deadline))
        path = self.socket_path
        try:
            sock.connect(path)
        except FileNotFoundError:
            sock.close()
            raise ServiceUnavailable(
                f"no socket at {path}: is `keycloak-resilient start` running? "
                f"(set socket_path or ${SOCKET_ENV})",
                op,
            ) from None
        except ConnectionRefusedError:
            sock.close()
            raise ServiceUnavailable(f"nobody listens on {path}: the service is not running", op) from None
        except PermissionError:
            sock.close()
            raise ServiceUnavailable(
                f"permission denied connecting to {path}: this user may not use the socket "
                f"(its group and mode are set by the service's configuration)",
                op,
            ) from None
        except (OSError, socket.timeout) as e:
            sock.close()
            raise ServiceUnavailable(f"cannot connect to {path}: {e}", op) from None
        self._sock = sock
        self._buffer = b""

    def _send(self, line: bytes, op: str, deadline: float) -> bool:
        """Sends the line; False when the service had closed the connection."""
        assert self._sock is not None
        try:
            self._sock.settimeout(_remaining(deadline))
            self._sock.sendall(line)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            return False
        except socket.timeout:
            self._drop()
            raise ServiceUnavailable(f"the service at {self.socket_path} did not read the request in time", op) from None
        return True

    def _read_answer(self, op: str, deadline: float) -> Answer:
        assert self._sock is not None
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_ANSWER_BYTES:
                self._drop()
                raise ServiceUnavailable(f"answer longer than {MAX_ANSWER_BYTES} bytes", op)
            try:
                self._sock.settimeout(_remaining(deadline))
                chunk = self._sock.recv(65536)
            except socket.timeout:
                # The answer may still come, but this connection's next line would be it.
                self._drop()
                raise ServiceUnavailable(
                    f"no answer within the timeout; the request may still complete in the service", op
                ) from None
            except OSError as e:
                chunk = b""
                if not isinstance(e, (ConnectionResetError, BrokenPipeError)):
                    self._drop()
                    raise ServiceUnavailable(f"reading the answer: {e}", op) from None
            if not chunk:
                self._drop()
                raise ServiceUnavailable(
                    "the service closed the connection without answering (it stopped or was "
                    "restarted); the request may or may not have run",
                    op,
                )
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\n")
        try:
            return Answer.from_json(json.loads(raw))
        except (ValueError, TypeError) as e:
            self._drop()
            raise ServiceUnavailable(f"the answer is not a protocol answer ({e})", op) from None

    def _peer_closed(self) -> bool:
        """True when the kept connection cannot carry a request: the service closed it, or
        something unasked-for is waiting on it."""
        assert self._sock is not None
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._buffer = b""


def _remaining(deadline: float) -> float:
    """Seconds left until ``deadline``, at least a little (a timeout of 0 means non-blocking)."""
    return max(deadline - time.monotonic(), 0.001)


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return last[len("error: ") :] if last.startswith("error: ") else last


def _said(result: object) -> str:
    """A user change in the service's words, ``added alice/webapp``, from its JSON view
    (``done``, ``user``, ``package``, and ``sessions_ended`` for disable and remove)."""
    if isinstance(result, dict) and "done" in result:
        line = f"{result['done']} {result['user']}/{result['package']}"
        if "sessions_ended" in result:
            line += f" ({result['sessions_ended']} session(s) ended)"
        keycloak = result.get("keycloak")
        if isinstance(keycloak, dict):
            line += f"; in Keycloak: {keycloak.get('mode')}"
        return line
    return str(result).strip()
