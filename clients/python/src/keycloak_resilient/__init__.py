"""Python client for keycloak-resilient: log an application's users in through the running
service, over its Unix socket, with the standard library only.

- :class:`Client`: one method per socket operation, typed results, exceptions carrying the
  exit code and message.
- :class:`ObjKeycloakResilient`: the original design's API (``authenticate``, ``get_status``,
  ``login``, ``change_password``, …) with its names, arguments and return shapes.

The socket is ``socket_path`` when given, else ``$KEYCLOAK_RESILIENT_SOCKET``, else
``data/control.sock``.
"""

from .client import DEFAULT_SOCKET, SOCKET_ENV, Client, default_socket_path
from .compat import ObjKeycloakResilient
from .errors import (
    BadRequest,
    KeycloakRejected,
    KeycloakResilientError,
    Refused,
    ServiceError,
    ServiceUnavailable,
)
from .results import (
    Answer,
    CleanupReport,
    ImportReport,
    LocalUser,
    LoginResult,
    PasswdResult,
    QueueItem,
    QueuePage,
    ResilienceConfig,
    Session,
    Status,
    SyncReport,
    Token,
    TokenCheck,
)

__version__ = "0.1.0"

__all__ = [
    "Answer",
    "BadRequest",
    "CleanupReport",
    "Client",
    "DEFAULT_SOCKET",
    "ImportReport",
    "KeycloakRejected",
    "KeycloakResilientError",
    "LocalUser",
    "LoginResult",
    "ObjKeycloakResilient",
    "PasswdResult",
    "QueueItem",
    "QueuePage",
    "Refused",
    "ResilienceConfig",
    "SOCKET_ENV",
    "ServiceError",
    "ServiceUnavailable",
    "Session",
    "Status",
    "SyncReport",
    "Token",
    "TokenCheck",
    "default_socket_path",
]
