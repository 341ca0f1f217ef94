"""Exceptions: every answer whose exit code is not 0, and a service that cannot be reached.

The service answers each request with the exit code the same command would have ended with on
the command line (see the README's "Exit codes"); each code has its exception class here, and
every one carries the code, the message and the whole answer.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

#: Exit codes, as the command line and the socket use them.
EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_INPUT = 2
EXIT_RUNTIME = 3
EXIT_PARTIAL = 4


class KeycloakResilientError(Exception):
    """An answer with a non-zero exit code, or no answer at all.

    Attributes:
        exit_code: the exit code the command would have ended with (3 when the service could
            not be reached).
        message: the reason, one line (the last line of the answer's ``stderr``, without its
            ``error:`` prefix).
        op: the request's ``op``.
        stderr: the answer's whole ``stderr`` (log lines included).
        result: the answer's parsed JSON output, when it had one (a refused ``login`` still
            says why, as ``result["reason"]``).
    """

    def __init__(
        self,
        exit_code: int,
        message: str,
        op: str = "",
        stderr: str = "",
        result: Optional[Any] = None,
    ) -> None:
        super().__init__(f"{op}: {message} (exit {exit_code})" if op else f"{message} (exit {exit_code})")
        self.exit_code = exit_code
        self.message = message
        self.op = op
        self.stderr = stderr
        self.result = result


class Refused(KeycloakResilientError):
    """Exit 1: refused — wrong credentials, no cached token, a locked or disabled account, an
    unknown session, an operation this caller may not run."""


class BadRequest(KeycloakResilientError):
    """Exit 2: bad input — an unknown user or package, a malformed request, bad sync data."""


class ServiceError(KeycloakResilientError):
    """Exit 3: a runtime failure inside the service (I/O, a damaged data directory)."""


class ServiceUnavailable(ServiceError):
    """The service could not be reached (no socket, nobody listening, permission denied), it
    closed the connection without answering, or it kept answering "not run" (busy or shutting
    down) until the client's timeout."""

    def __init__(self, message: str, op: str = "") -> None:
        super().__init__(EXIT_RUNTIME, message, op)


class KeycloakRejected(KeycloakResilientError):
    """Exit 4 (``passwd``): the local password changed, but Keycloak refused the new one
    (``result["keycloak_error"]`` says why)."""


_BY_CODE: Dict[int, Type[KeycloakResilientError]] = {
    EXIT_REFUSED: Refused,
    EXIT_INPUT: BadRequest,
    EXIT_RUNTIME: ServiceError,
    EXIT_PARTIAL: KeycloakRejected,
}


def error_for(exit_code: int, op: str, stderr: str, result: Optional[Any]) -> KeycloakResilientError:
    """The exception for an answer with a non-zero exit code."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    message = lines[-1] if lines else f"{op} ended with exit code {exit_code}"
    if message.startswith("error: "):
        message = message[len("error: ") :]
    if isinstance(result, dict) and not lines:
        message = str(result.get("reason") or result.get("error") or message)
    cls = _BY_CODE.get(exit_code, KeycloakResilientError)
    return cls(exit_code, message, op, stderr, result)
