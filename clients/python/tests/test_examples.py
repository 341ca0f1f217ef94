"""The original design's usage examples (``examples/original_usage.py``) run as written against
a running ``start``: only their import line differs from the in-process original."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fake_keycloak import FakeKeycloak

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "original_usage.py"
SRC = Path(__file__).resolve().parents[1] / "src"


def test_the_only_line_naming_this_package_is_the_import() -> None:
    lines = [line for line in EXAMPLE.read_text().splitlines() if "keycloak_resilient" in line]
    assert lines == ["from keycloak_resilient import ObjKeycloakResilient"]


def test_the_original_examples_run_unchanged(make_service, keycloak: FakeKeycloak) -> None:
    keycloak.add_user("john.doe", "password123")
    svc = make_service(users={"john.doe": "password123"})
    env = {**os.environ, "KEYCLOAK_RESILIENT_SOCKET": str(svc.socket_path), "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, env=env, timeout=120, cwd=svc.root
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Keycloak is available" in out
    assert "Authenticated with Keycloak" in out
    assert "Login OK: session " in out and "auth_mode keycloak" in out
    assert "Queued password change " in out
    assert "Processed 1 sync item(s)" in out
    assert "Mode:           normal" in out and "Pending syncs:  0" in out
    assert keycloak.password_of("john.doe") == "NewPassword456"
