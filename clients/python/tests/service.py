"""The real service for the tests: the built binary, a config and data directory in a temporary
directory, users seeded with ``user add``, and ``start`` run until the test is done.

:class:`Service` knows nothing about pytest; ``conftest.py`` turns it into fixtures.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

from fake_keycloak import SYNC_CLIENT, WEBAPP_CLIENT

REPO = Path(__file__).resolve().parents[3]
PACKAGE = "webapp"
#: Longest wait for the service to answer ``status`` after ``start``, seconds.
READY_TIMEOUT = 30.0
#: Longest wait for the service to exit after SIGTERM, seconds.
STOP_TIMEOUT = 20.0
#: Environment variables the service and the CLI must not inherit from whoever runs the tests.
SCRUBBED = ("KEYCLOAK_CLIENT_SECRET", "KEYCLOAK_ADMIN_CLIENT_SECRET", "RUST_LOG", "KEYCLOAK_RESILIENT_SOCKET")


def binary() -> Path:
    """``$KEYCLOAK_RESILIENT_BIN``, else the debug binary ``cargo build`` makes in the repo."""
    given = os.environ.get("KEYCLOAK_RESILIENT_BIN")
    if given:
        path = Path(given)
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"KEYCLOAK_RESILIENT_BIN={given} is not an executable file")
        return path
    subprocess.run(["cargo", "build", "--quiet", "--bin", "keycloak-resilient"], cwd=REPO, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    return target / "debug" / "keycloak-resilient"


def clean_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment for the binary: this one without the variables in :data:`SCRUBBED`."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update(extra or {})
    return env


class Service:
    """One service: ``root/config.yaml``, ``root/data``, ``root/service.log``.

    ``service_yaml`` adds keys to the config's ``service:`` block (one ``key: value`` a line);
    the resilience tunables are those the Rust tests use (failure threshold 2, probes never
    cached, 2 s timeouts).
    """

    def __init__(
        self,
        bin_path: Path,
        root: Path,
        keycloak_url: str,
        *,
        cooldown_seconds: int = 60,
        service_yaml: str = "",
        socket_path: Optional[Path] = None,
    ) -> None:
        self.bin = bin_path
        self.root = root
        self.keycloak_url = keycloak_url
        self.cooldown_seconds = cooldown_seconds
        self.service_yaml = service_yaml
        self.socket_path = socket_path or root / "data" / "control.sock"
        self.proc: Optional[subprocess.Popen] = None
        self.config_path = root / "config.yaml"
        self.log_path = root / "service.log"
        self._write_config()

    def _write_config(self) -> None:
        service = "".join(f"  {line}\n" for line in self.service_yaml.splitlines() if line.strip())
        self.config_path.write_text(
            "keycloak:\n"
            f"  server_url: {self.keycloak_url}\n"
            "  realm: resilient-test\n"
            f"  client_id: {WEBAPP_CLIENT[0]}\n"
            f"  client_secret: {WEBAPP_CLIENT[1]}\n"
            f"  admin_client_id: {SYNC_CLIENT[0]}\n"
            f"  admin_client_secret: {SYNC_CLIENT[1]}\n"
            "  timeout_seconds: 2\n"
            "  connect_timeout_seconds: 1\n"
            "  resilience:\n"
            "    failure_threshold: 2\n"
            f"    cooldown_seconds: {self.cooldown_seconds}\n"
            "    health_check_cache_seconds: 0\n"
            "storage:\n"
            "  path: ./data\n" + (f"service:\n{service}" if service else "")
        )

    def cli(self, *args: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess:
        """``keycloak-resilient --config CONFIG ARGS`` with ``stdin``; ``check``: exit 0."""
        done = subprocess.run(
            [str(self.bin), "--config", str(self.config_path), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=120,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"keycloak-resilient {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done

    def add_user(self, user: str, password: str, package: str = PACKAGE) -> None:
        """``user add``, the password on stdin."""
        self.cli("user", "add", "--user", user, "--package", package, stdin=password + "\n")

    def start(self) -> None:
        """Runs ``start`` and waits (bounded) until the socket answers ``status``."""
        assert self.proc is None, "already started"
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [str(self.bin), "--config", str(self.config_path), "start"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(),
            )
        finally:
            log.close()
        self.wait_ready()

    def wait_ready(self) -> None:
        """Returns once ``status`` is answered with exit 0; fails with the log if ``start``
        exits first or :data:`READY_TIMEOUT` passes."""
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        why = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"`start` exited {self.proc.returncode} before answering:\n{self.log()}")
            try:
                answer = raw_request(self.socket_path, {"op": "status"}, timeout=5)
                if answer.get("exit") == 0:
                    return
                why = f"status answered {answer}"
            except OSError as e:
                why = str(e)
            time.sleep(0.02)
        raise AssertionError(f"the service did not answer within {READY_TIMEOUT}s ({why}):\n{self.log()}")

    def stop(self) -> int:
        """SIGTERM, then waits for the exit (kills after :data:`STOP_TIMEOUT`); the exit code."""
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(f"the service did not stop within {STOP_TIMEOUT}s:\n{self.log()}")
        return proc.returncode

    def restart(self) -> None:
        """Stops (cleanly) and starts again on the same data directory."""
        code = self.stop()
        assert code == 0, f"the service exited {code}:\n{self.log()}"
        self.start()

    def log(self) -> str:
        """What ``start`` printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def raw_request(path: Path, request: Dict[str, object], timeout: float) -> Dict[str, object]:
    """One request over a fresh connection, without the client under test."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall((json.dumps(request) + "\n").encode())
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed without answering")
            reply += chunk
    return json.loads(reply)


def users_of(answer_rows: List[Dict[str, object]]) -> List[str]:
    """``user/package`` of each row of a ``user-list`` result."""
    return [f"{row['user']}/{row['package']}" for row in answer_rows]
