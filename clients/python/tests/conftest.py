"""Fixtures: the binary (built once), a Keycloak look-alike per test, and a running service
per test seeded with the same users in Keycloak and in its local store."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, List

import pytest

from fake_keycloak import FakeKeycloak
from service import Service, binary

ALICE_PW = "Alice-Password-1"
BOB_PW = "Bob-Password-1"
NEW_PW = "New-Password-9"


@pytest.fixture(scope="session")
def kr_binary() -> Path:
    """The keycloak-resilient binary."""
    return binary()


@pytest.fixture
def keycloak() -> Iterator[FakeKeycloak]:
    """A Keycloak look-alike knowing alice and bob."""
    fake = FakeKeycloak()
    fake.add_user("alice", ALICE_PW)
    fake.add_user("bob", BOB_PW)
    yield fake
    fake.stop()


@pytest.fixture
def make_service(kr_binary: Path, keycloak: FakeKeycloak, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Builds a started service: ``make_service(users={"alice": pw}, **Service options)``."""
    started: List[Service] = []

    def make(users: "dict[str, str] | None" = None, root: "Path | None" = None, **options: object) -> Service:
        where = root or tmp_path / f"svc{len(started)}"
        where.mkdir(parents=True, exist_ok=True)
        svc = Service(kr_binary, where, keycloak.url, **options)  # type: ignore[arg-type]
        for user, password in (users if users is not None else {"alice": ALICE_PW, "bob": BOB_PW}).items():
            svc.add_user(user, password)
        svc.start()
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.stop()


@pytest.fixture
def service(make_service: Callable[..., Service]) -> Service:
    """A running service with alice and bob, known to Keycloak as well."""
    return make_service()
