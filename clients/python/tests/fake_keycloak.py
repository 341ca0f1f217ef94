"""A Keycloak 26 look-alike for the client's tests: a small ``http.server`` on 127.0.0.1.

It answers the few endpoints keycloak-resilient calls, with the status codes, bodies and
headers a real Keycloak 26.7.3 gives (recorded in ``tests/fixtures/keycloak-answers.md`` at the
top of the repository; ``tests/it/common/fake_keycloak.rs`` is the fuller Rust twin):

- ``GET /realms/{realm}/.well-known/openid-configuration`` (the service's health probe);
- ``POST /realms/{realm}/protocol/openid-connect/token``: the ``password``, ``refresh_token``
  and ``client_credentials`` grants (the last one is the admin service account's token);
- ``GET /admin/realms/{realm}/users?username=…&exact=true`` (the user search);
- ``GET /admin/realms/{realm}/users/{id}/credentials`` (the password credential's date);
- ``PUT /admin/realms/{realm}/users/{id}/reset-password`` (with the realm's ``length(8)``
  password policy).

Every answer closes its connection (HTTP/1.0), so stopping the server really takes Keycloak
away: no pooled connection survives it. :meth:`FakeKeycloak.stop` and
:meth:`FakeKeycloak.start` bring it down and back on the same port.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

REALM = "resilient-test"
#: The login client (direct access grants) and its secret, as in the realm fixture.
WEBAPP_CLIENT = ("webapp", "webapp-test-secret")
#: The admin service account (realm-management manage-users, view-users) and its secret.
SYNC_CLIENT = ("keycloak-resilient-sync", "sync-test-secret")
ACCESS_TOKEN_LIFESPAN = 300
SSO_SESSION_IDLE = 1800
MIN_PASSWORD_LENGTH = 8


@dataclass
class User:
    """A realm user; the password is kept in plain text, this being a test double."""

    username: str
    password: str
    enabled: bool = True
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    credential_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    password_created: int = field(default_factory=lambda: int(time.time() * 1000))
    resets: List[str] = field(default_factory=list)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt_like(claims: Dict[str, Any]) -> str:
    """Three base64url parts like Keycloak's tokens; the signature is random bytes."""
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = _b64url(json.dumps(claims).encode())
    return f"{header}.{body}.{_b64url(secrets.token_bytes(32))}"


class FakeKeycloak:
    """The look-alike server. ``url`` is its base URL; users are added with :meth:`add_user`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: Dict[str, User] = {}
        self._access: Dict[str, Tuple[str, float]] = {}  # token -> (subject, expiry)
        self._refresh: Dict[str, Tuple[str, str, float]] = {}  # token -> (user id, client, expiry)
        self.requests: List[str] = []
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Starts serving (again, on the same port once one was chosen)."""
        if self._server is not None:
            return
        fake = self

        class Handler(_Handler):
            keycloak = fake

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-keycloak", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops serving: connections to the port are refused until :meth:`start`."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def add_user(self, username: str, password: str, enabled: bool = True) -> None:
        """Adds a fully set-up user (email, first and last name, as the realm requires)."""
        with self._lock:
            self._users[username.lower()] = User(username.lower(), password, enabled)

    def password_of(self, username: str) -> Optional[str]:
        """The user's current password, or ``None`` for an unknown user."""
        with self._lock:
            user = self._users.get(username.lower())
            return user.password if user else None

    def password_resets(self, username: str) -> List[str]:
        """The values reset-password set for the user, in order."""
        with self._lock:
            user = self._users.get(username.lower())
            return list(user.resets) if user else []

    # --- answers ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: str, headers: Any, body: bytes) -> "Reply":
        """Answers one request as Keycloak 26 would."""
        with self._lock:
            self.requests.append(f"{method} {path}")
            parts = [p for p in path.split("/") if p]
            if len(parts) >= 2 and parts[0] == "realms":
                return self._realm(method, parts[1], parts[2:], headers, body)
            if len(parts) >= 3 and parts[:2] == ["admin", "realms"]:
                return self._admin(method, parts[2], parts[3:], query, headers, body)
            return Reply.error(404, "HTTP 404 Not Found")

    def _issuer(self, realm: str) -> str:
        return f"{self.url}/realms/{realm}"

    def _realm(self, method: str, realm: str, rest: List[str], headers: Any, body: bytes) -> "Reply":
        if realm != REALM:
            return Reply.error(404, "Realm does not exist")
        if rest == [".well-known", "openid-configuration"] and method == "GET":
            issuer = self._issuer(realm)
            return Reply.json(
                200,
                {
                    "issuer": issuer,
                    "token_endpoint": f"{issuer}/protocol/openid-connect/token",
                    "grant_types_supported": ["authorization_code", "client_credentials", "password", "refresh_token"],
                },
                cache="no-cache, must-revalidate, no-transform, no-store",
            )
        if rest == ["protocol", "openid-connect", "token"]:
            if method != "POST":
                return Reply.error(405, "HTTP 405 Method Not Allowed")
            return self._token(realm, {k: v[0] for k, v in parse_qs(body.decode()).items()})
        return Reply.error(404, "HTTP 404 Not Found")

    def _token(self, realm: str, form: Dict[str, str]) -> "Reply":
        grant = form.get("grant_type")
        if grant is None:
            return Reply.oauth(400, "invalid_request", "Missing form parameter: grant_type")
        if grant not in ("password", "refresh_token", "client_credentials"):
            return Reply.oauth(400, "unsupported_grant_type", "Unsupported grant_type")
        client_id, secret = form.get("client_id"), form.get("client_secret")
        known = {WEBAPP_CLIENT[0]: WEBAPP_CLIENT[1], SYNC_CLIENT[0]: SYNC_CLIENT[1]}
        if client_id not in known:
            return Reply.oauth(401, "invalid_client", "Invalid client or Invalid client credentials")
        if secret != known[client_id]:
            return Reply.oauth(401, "unauthorized_client", "Invalid client or Invalid client credentials")
        if grant == "client_credentials":
            if client_id != SYNC_CLIENT[0]:
                return Reply.oauth(401, "unauthorized_client", "Client not enabled to retrieve service account")
            return self._service_account_token(realm, client_id)
        if client_id != WEBAPP_CLIENT[0]:
            return Reply.oauth(400, "unauthorized_client", "Client not allowed for direct access grants")
        if grant == "password":
            if "username" not in form:
                return Reply.oauth(401, "invalid_request", "Missing parameter: username")
            user = self._users.get(form["username"].lower())
            # "Account disabled" only once the password is right, as the real server answers.
            if user is None or user.password != form.get("password"):
                return Reply.oauth(400, "invalid_grant", "Invalid user credentials")
            if not user.enabled:
                return Reply.oauth(400, "invalid_grant", "Account disabled")
            return self._user_tokens(realm, user, client_id)
        token = form.get("refresh_token")
        if token is None:
            return Reply.oauth(400, "invalid_request", "No refresh token")
        grant_of = self._refresh.get(token)
        if grant_of is None or grant_of[2] < time.time():
            return Reply.oauth(400, "invalid_grant", "Invalid refresh token")
        user = next((u for u in self._users.values() if u.id == grant_of[0]), None)
        if user is None:
            return Reply.oauth(400, "invalid_grant", "Session not active")
        if not user.enabled:
            return Reply.oauth(400, "invalid_grant", "User disabled")
        return self._user_tokens(realm, user, client_id)

    def _service_account_token(self, realm: str, client_id: str) -> "Reply":
        now = int(time.time())
        token = _jwt_like(
            {
                "exp": now + ACCESS_TOKEN_LIFESPAN,
                "iat": now,
                "iss": self._issuer(realm),
                "typ": "Bearer",
                "azp": client_id,
                "aud": "realm-management",
                "resource_access": {"realm-management": {"roles": ["manage-users", "view-users", "query-groups", "query-users"]}},
                "preferred_username": f"service-account-{client_id}",
            }
        )
        self._access[token] = ("service-account", time.time() + ACCESS_TOKEN_LIFESPAN)
        return Reply.json(
            200,
            {
                "access_token": token,
                "expires_in": ACCESS_TOKEN_LIFESPAN,
                "refresh_expires_in": 0,
                "token_type": "Bearer",
                "not-before-policy": 0,
                "scope": "profile email",
            },
            cache="no-store",
        )

    def _user_tokens(self, realm: str, user: User, client_id: str) -> "Reply":
        now = int(time.time())
        session = _b64url(secrets.token_bytes(18))
        claims = {
            "exp": now + ACCESS_TOKEN_LIFESPAN,
            "iat": now,
            "iss": self._issuer(realm),
            "sub": user.id,
            "typ": "Bearer",
            "azp": client_id,
            "sid": session,
            "preferred_username": user.username,
            "email": f"{user.username}@example.test",
        }
        access = _jwt_like(claims)
        refresh = _jwt_like({**claims, "typ": "Refresh", "exp": now + SSO_SESSION_IDLE})
        self._access[access] = (user.id, time.time() + ACCESS_TOKEN_LIFESPAN)
        self._refresh[refresh] = (user.id, client_id, time.time() + SSO_SESSION_IDLE)
        return Reply.json(
            200,
            {
                "access_token": access,
                "expires_in": ACCESS_TOKEN_LIFESPAN,
                "refresh_expires_in": SSO_SESSION_IDLE,
                "refresh_token": refresh,
                "token_type": "Bearer",
                "not-before-policy": 0,
                "session_state": session,
                "scope": "profile email",
            },
            cache="no-store",
        )

    def _admin(self, method: str, realm: str, rest: List[str], query: str, headers: Any, body: bytes) -> "Reply":
        auth = headers.get("Authorization") or ""
        grant = self._access.get(auth[len("Bearer ") :]) if auth.startswith("Bearer ") else None
        if grant is None or grant[1] < time.time():
            return Reply.error(401, "HTTP 401 Unauthorized")
        if realm != REALM:
            return Reply.error(404, "Realm not found.")
        if grant[0] != "service-account":
            return Reply.error(403, "HTTP 403 Forbidden")
        if rest == ["users"] and method == "GET":
            params = {k: v[0] for k, v in parse_qs(query).items()}
            wanted = params.get("username", "").lower()
            exact = params.get("exact") == "true"
            found = [u for u in self._users.values() if (u.username == wanted if exact else wanted in u.username)]
            return Reply.json(200, [self._representation(u) for u in found], admin=True)
        if len(rest) >= 2 and rest[0] == "users":
            user = next((u for u in self._users.values() if u.id == rest[1]), None)
            if user is None:
                return Reply.error(404, "User not found")
            tail = rest[2:]
            if tail == ["credentials"] and method == "GET":
                credential = {
                    "id": user.credential_id,
                    "type": "password",
                    "createdDate": user.password_created,
                    "credentialData": json.dumps({"hashIterations": 5, "algorithm": "argon2"}),
                }
                return Reply.json(200, [credential], admin=True)
            if tail == ["reset-password"] and method == "PUT":
                if not (headers.get("Content-Type") or "").lower().startswith("application/json"):
                    return Reply.error(415, "The content-type header value did not match the value in @Consumes")
                try:
                    sent = json.loads(body)
                except ValueError:
                    return Reply.oauth(400, "invalid_request", "Cannot parse the JSON")
                value = sent.get("value")
                if not value:
                    return Reply.error(400, "Empty password not allowed")
                if len(value) < MIN_PASSWORD_LENGTH:
                    return Reply.oauth(
                        400,
                        "invalidPasswordMinLengthMessage",
                        f"Invalid password: minimum length {MIN_PASSWORD_LENGTH}.",
                    )
                user.password = value
                user.resets.append(value)
                user.password_created = int(time.time() * 1000)
                return Reply(204, b"", None)
        return Reply.error(404, "HTTP 404 Not Found")

    @staticmethod
    def _representation(user: User) -> Dict[str, Any]:
        return {
            "id": user.id,
            "username": user.username,
            "firstName": user.username.capitalize(),
            "lastName": "Test",
            "email": f"{user.username}@example.test",
            "emailVerified": True,
            "createdTimestamp": user.password_created,
            "enabled": user.enabled,
            "totp": False,
            "disableableCredentialTypes": [],
            "requiredActions": [],
            "notBefore": 0,
            "access": {"manage": True},
        }


@dataclass
class Reply:
    """One HTTP answer."""

    status: int
    body: bytes
    content_type: Optional[str]
    cache: Optional[str] = None

    @staticmethod
    def json(status: int, value: Any, cache: Optional[str] = None, admin: bool = False) -> "Reply":
        """A JSON answer; the admin API's 200s say ``charset=UTF-8`` and ``no-cache``."""
        content_type = "application/json;charset=UTF-8" if admin else "application/json"
        return Reply(status, json.dumps(value).encode(), content_type, "no-cache" if admin else cache)

    @staticmethod
    def error(status: int, message: str) -> "Reply":
        """``{"error": message}``, as the admin API and unknown paths answer."""
        return Reply.json(status, {"error": message})

    @staticmethod
    def oauth(status: int, error: str, description: str) -> "Reply":
        """An OAuth error, as the token endpoint answers (``Cache-Control: no-store``)."""
        return Reply.json(status, {"error": error, "error_description": description}, cache="no-store")


class _Handler(BaseHTTPRequestHandler):
    keycloak: FakeKeycloak

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        reply = self.keycloak.handle(self.command, url.path, url.query, self.headers, body)
        self.send_response(reply.status)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        if reply.cache:
            self.send_header("Cache-Control", reply.cache)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: the requests are kept in ``FakeKeycloak.requests``."""
