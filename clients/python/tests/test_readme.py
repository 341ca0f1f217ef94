"""The top-level README's "Integrating your application" examples run as printed: the client in
five lines, and the Flask login view (against a stand-in for Flask, which the tests do not
install)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import ALICE_PW
from service import Service

README = Path(__file__).resolve().parents[3] / "README.md"


def _python_blocks() -> List[str]:
    text = README.read_text()
    section = text[text.index("## Integrating your application") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_five_lines(service: Service, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    five = _python_blocks()[0]
    assert len(five.strip().splitlines()) == 5
    monkeypatch.setenv("KEYCLOAK_RESILIENT_SOCKET", str(service.socket_path))
    exec(five, {"password": ALICE_PW})
    session_id, auth_mode, keycloak_status = capsys.readouterr().out.split()
    assert (auth_mode, keycloak_status) == ("keycloak", "online") and len(session_id) == 36


def test_the_flask_login_view(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    flask = types.ModuleType("flask")

    class Flask:
        def __init__(self, name: str) -> None:
            self.name = name

        def post(self, path: str) -> Any:
            return lambda view: view

    flask.Flask = Flask  # type: ignore[attr-defined]
    flask.redirect = lambda url: ("redirect", url)  # type: ignore[attr-defined]
    flask.render_template = lambda template, **values: ("render", template, values)  # type: ignore[attr-defined]
    flask.request = types.SimpleNamespace(form={})  # type: ignore[attr-defined]
    flask.session = {}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "flask", flask)
    monkeypatch.setenv("KEYCLOAK_RESILIENT_SOCKET", str(service.socket_path))
    app: Dict[str, Any] = {}
    exec(_python_blocks()[1], app)

    flask.request.form = {"username": "alice", "password": "wrong-password"}  # type: ignore[attr-defined]
    (kind, template, values), status = app["login"]()
    assert (kind, template, status, values["error"]) == ("render", "login.html", 401, "Login refused")
    flask.request.form = {"username": "alice", "password": ALICE_PW}  # type: ignore[attr-defined]
    assert app["login"]() == ("redirect", "/")
    assert flask.session["user"] == "alice" and flask.session["kr_session"]  # type: ignore[attr-defined]
    assert app["logout"]() == ("redirect", "/login") and flask.session == {}  # type: ignore[attr-defined]
    service.stop()
    flask.request.form = {"username": "alice", "password": ALICE_PW}  # type: ignore[attr-defined]
    (_, _, values), status = app["login"]()
    assert (status, values["error"]) == (503, "Login is unavailable")
