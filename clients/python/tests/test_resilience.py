"""The client across a service restart, and logins while the Keycloak look-alike is down."""

from __future__ import annotations

import time

import pytest

from conftest import ALICE_PW, BOB_PW, NEW_PW
from fake_keycloak import FakeKeycloak
from keycloak_resilient import Client, ObjKeycloakResilient, ServiceUnavailable
from service import PACKAGE, Service

#: Longest wait for the breaker's cooldown to pass and a sync cycle to reach Keycloak again.
RECOVERY_TIMEOUT = 30.0


def test_a_restarted_service_is_reconnected_on_the_next_call(service: Service) -> None:
    client = Client(service.socket_path)
    first = client.login(user="alice", package=PACKAGE, password=ALICE_PW)
    old_connection = client._sock
    service.restart()
    # The old service closed the kept connection; the next call notices and reconnects.
    second = client.login(user="alice", package=PACKAGE, password=ALICE_PW)
    assert second.success and second.session_id != first.session_id
    assert client._sock is not None and client._sock is not old_connection
    # Sessions live in the database: the one made before the restart is still there.
    assert client.session_show(session_id=first.session_id).user == "alice"
    client.close()


def test_a_stopped_service_raises_then_a_started_one_answers(service: Service) -> None:
    client = Client(service.socket_path)
    assert client.status().available
    assert service.stop() == 0
    with pytest.raises(ServiceUnavailable) as down:
        client.status()
    assert down.value.exit_code == 3
    service.start()
    assert client.status().available


def test_keycloak_down_logins_are_cached_or_local(make_service, keycloak: FakeKeycloak) -> None:
    svc = make_service(users={"alice": ALICE_PW, "bob": BOB_PW, "carol": ALICE_PW}, cooldown_seconds=1)
    kr = ObjKeycloakResilient(svc.socket_path)
    assert kr.login("alice", ALICE_PW, PACKAGE)["auth_mode"] == "keycloak"  # caches alice's token
    keycloak.stop()

    cached = kr.login("alice", ALICE_PW, PACKAGE)
    assert cached["success"] is True and cached["auth_mode"] == "cached"
    assert cached["keycloak_status"] == "offline"
    local = kr.login("carol", ALICE_PW, PACKAGE)  # never seen by Keycloak: no cached token
    assert local["success"] is True and local["auth_mode"] == "local"
    assert kr.login("alice", "wrong-password", PACKAGE)["success"] is False

    token = kr.authenticate("alice", ALICE_PW, PACKAGE)
    assert token is not None and token["cached"] is True and token["cached_at"]
    assert kr.authenticate("bob", BOB_PW, PACKAGE) is None  # nothing cached for bob
    assert kr.is_available() is False
    status = kr.get_status()
    assert status["mode"] == "degraded" and status["cached_tokens"] == 1

    changed = kr.change_password("bob", BOB_PW, NEW_PW, PACKAGE)
    assert changed["success"] is True and changed["mode"] == "queued" and changed["sync_id"]
    assert kr.process_sync_queue() == 0  # Keycloak is away: nothing done, nothing lost
    assert kr.get_status()["pending_syncs"] == 1

    keycloak.start()
    # process_sync_queue until the change reached Keycloak: the service's own loop may also
    # replay it as soon as it sees Keycloak back, so either may be the one that does.
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    while keycloak.password_of("bob") != NEW_PW and time.monotonic() < deadline:
        if kr.process_sync_queue() == 0:
            time.sleep(0.1)  # the breaker's 1 s cooldown, then a half-open trial
    assert keycloak.password_of("bob") == NEW_PW, svc.log()
    assert kr.get_status()["pending_syncs"] == 0
    assert kr.login("bob", NEW_PW, PACKAGE)["auth_mode"] == "keycloak"
    kr.close()
