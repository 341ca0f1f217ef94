"""A web application running as another Unix user (issue 13, points 1 and 2).

The service is configured to put its socket outside the data directory, group-owned by the
application's group and mode 0660::

    service:
      socket_path: <dir>/control.sock
      socket_group: <the application user's group>
      socket_mode: "0660"

Then, as that other user (created here when the tests run as root; skipped otherwise, saying
why), through this package with ``$KEYCLOAK_RESILIENT_SOCKET``:

- the application ops ``status`` and ``login`` succeed;
- the admin ops ``user-add`` and ``queue`` are refused by the service from the peer's
  credentials: the answer has exit code 1 (refused), so the client raises
  :class:`~keycloak_resilient.Refused`, and the message names the op; the user is not added;
- the refusal is logged with the peer's uid.

Until the service supports those settings it refuses the config (an unknown key) and this test
fails saying so.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

import pytest

from conftest import ALICE_PW
from keycloak_resilient import Client
from service import PACKAGE

PEER_USER = "kr-peer-test"
SRC = Path(__file__).resolve().parents[1] / "src" / "keycloak_resilient"

#: What the application user runs: each op, and what came of it, as one JSON line.
PEER_SCRIPT = r"""
import json, sys
from keycloak_resilient import Client, KeycloakResilientError
password = sys.stdin.readline().rstrip("\n")
client = Client()  # the socket from $KEYCLOAK_RESILIENT_SOCKET
out = {}
def attempt(op, call):
    try:
        value = call()
        out[op] = {"ok": True, "auth_mode": getattr(value, "auth_mode", None)}
    except KeycloakResilientError as e:
        out[op] = {"ok": False, "type": type(e).__name__, "exit_code": e.exit_code, "message": e.message}
attempt("status", lambda: client.status())
attempt("login", lambda: client.login(user="alice", package="webapp", password=password))
attempt("user-add", lambda: client.user_add(user="mallory", package="webapp", password="Mallory-Password-1"))
attempt("queue", lambda: client.queue())
print(json.dumps(out))
"""


class Peer(NamedTuple):
    """The application's Unix user."""

    name: str
    uid: int
    gid: int
    group: str
    python: str


def _python_for(uid: int, gid: int) -> Optional[str]:
    """An interpreter the user can run (this one may live in root's home)."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if not os.path.exists(candidate):
            continue
        try:
            probe = subprocess.run(
                [candidate, "-c", "pass"], user=uid, group=gid, extra_groups=[], capture_output=True, cwd="/", timeout=60
            )
        except OSError:
            continue
        if probe.returncode == 0:
            return candidate
    return None


@pytest.fixture
def peer() -> Iterator[Peer]:
    """The application user, created for the test (root only)."""
    if os.geteuid() != 0:
        pytest.skip("peer access: needs root to create a second Unix user (run the tests as root to cover it)")
    if shutil.which("useradd") is None:
        pytest.skip("peer access: useradd is not available to create a second Unix user")
    created = False
    try:
        pwd.getpwnam(PEER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", PEER_USER],
            check=True,
            capture_output=True,
        )
        created = True
    entry = pwd.getpwnam(PEER_USER)
    try:
        python = _python_for(entry.pw_uid, entry.pw_gid)
        if python is None:
            pytest.skip(f"peer access: no Python interpreter that user {PEER_USER} may run")
        yield Peer(PEER_USER, entry.pw_uid, entry.pw_gid, grp.getgrgid(entry.pw_gid).gr_name, python)
    finally:
        if created:
            subprocess.run(["userdel", PEER_USER], capture_output=True)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may enter: the socket, and a copy of this package, live here."""
    where = Path(tempfile.mkdtemp(prefix="kr-peer-"))
    try:
        where.chmod(0o755)
        lib = where / "lib"
        shutil.copytree(SRC, lib / "keycloak_resilient", ignore=shutil.ignore_patterns("__pycache__"))
        for path in [lib, *lib.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


def test_another_user_may_log_in_but_not_administer(make_service, peer: Peer, shared_dir: Path) -> None:
    sock = shared_dir / "control.sock"
    try:
        svc = make_service(
            service_yaml=f'socket_path: {sock}\nsocket_group: {peer.group}\nsocket_mode: "0660"',
            socket_path=sock,
        )
    except AssertionError as e:
        pytest.fail(
            "the service did not start with service.socket_path / socket_group / socket_mode "
            f"(issue 13 point 1 not implemented yet?):\n{e}"
        )
    mode = os.stat(sock)
    assert stat.S_IMODE(mode.st_mode) == 0o660 and mode.st_gid == peer.gid, "socket mode and group as configured"

    done = subprocess.run(
        [peer.python, "-c", PEER_SCRIPT],
        input=ALICE_PW + "\n",
        capture_output=True,
        text=True,
        user=peer.uid,
        group=peer.gid,
        extra_groups=[],
        cwd=str(shared_dir),
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(shared_dir / "lib"), "KEYCLOAK_RESILIENT_SOCKET": str(sock)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)

    assert outcome["status"] == {"ok": True, "auth_mode": None}, outcome
    assert outcome["login"] == {"ok": True, "auth_mode": "keycloak"}, outcome
    for op in ("user-add", "queue"):
        refused = outcome[op]
        assert refused["ok"] is False, f"{op} must be refused to uid {peer.uid}: {outcome}"
        assert (refused["type"], refused["exit_code"]) == ("Refused", 1), refused
        assert op in refused["message"], f"the refusal names the op: {refused}"

    # Not run: the owner sees no new user; and the refusal is in the service's log with the uid.
    with Client(sock) as owner:
        assert "mallory" not in {u.user for u in owner.user_list()}
        assert owner.login(user="alice", package=PACKAGE, password=ALICE_PW).success
    assert str(peer.uid) in svc.log(), "the refusal is logged with the peer's uid"
