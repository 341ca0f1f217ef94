"""``ObjKeycloakResilient``: the original design's names, arguments and return shapes."""

from __future__ import annotations

import pytest

from conftest import ALICE_PW, BOB_PW, NEW_PW
from fake_keycloak import FakeKeycloak
from keycloak_resilient import ObjKeycloakResilient, ServiceUnavailable
from service import PACKAGE, Service

ORIGINAL_STATUS_KEYS = ["available", "circuit_state", "failure_count", "mode", "pending_syncs", "cached_tokens", "config"]


@pytest.fixture
def kr(service: Service):
    obj = ObjKeycloakResilient(service.socket_path)
    yield obj
    obj.close()


def test_is_available_and_get_status(kr: ObjKeycloakResilient) -> None:
    assert kr.is_available() is True
    status = kr.get_status()
    assert list(status)[:7] == ORIGINAL_STATUS_KEYS
    assert status["circuit_state"] == "closed" and status["mode"] == "normal"
    assert status["config"] == {
        "failure_threshold": 2,
        "cooldown_seconds": 60,
        "grace_period_hours": 24,
        "offline_mode_allowed": True,
    }


def test_authenticate_and_get_cached_token(kr: ObjKeycloakResilient) -> None:
    assert kr.get_cached_token("alice", PACKAGE) is None
    token = kr.authenticate("alice", ALICE_PW, PACKAGE)
    assert token is not None and token["cached"] is False and "cached_at" not in token
    assert token["access_token"] and token["expires_at"]
    cached = kr.get_cached_token("alice", PACKAGE)
    assert cached is not None and cached["cached"] is True and cached["cached_at"]
    assert cached["access_token"] == token["access_token"]
    assert kr.authenticate("alice", "wrong-password", PACKAGE) is None


def test_queue_sync_and_process_sync_queue(kr: ObjKeycloakResilient, keycloak: FakeKeycloak) -> None:
    sync_id = kr.queue_sync("bob", PACKAGE, "password_change", {"new_password": NEW_PW}, priority=1)
    assert isinstance(sync_id, str) and len(sync_id) == 36
    assert kr.get_status()["pending_syncs"] == 1
    assert kr.process_sync_queue(batch_size=100) == 1
    assert keycloak.password_of("bob") == NEW_PW
    assert kr.process_sync_queue() == 0
    assert kr.cleanup_completed_syncs(days=0) == 1
    assert kr.cleanup_completed_syncs() == 0


def test_queue_sync_default_priority(kr: ObjKeycloakResilient, service: Service) -> None:
    kr.queue_sync("bob", PACKAGE, "password_change", {"new_password": NEW_PW})
    (item,) = kr.client.queue().items
    assert item.priority == 5


def test_cleanup_expired_tokens(kr: ObjKeycloakResilient) -> None:
    kr.authenticate("alice", ALICE_PW, PACKAGE)
    kr.authenticate("bob", BOB_PW, PACKAGE)
    assert kr.cleanup_expired_tokens(hours=48) == 0
    assert kr.cleanup_expired_tokens(hours=0) == 2
    assert kr.get_cached_token("alice", PACKAGE) is None


def test_login_result_dicts(kr: ObjKeycloakResilient) -> None:
    ok = kr.login("alice", ALICE_PW, PACKAGE)
    assert ok["success"] is True and ok["auth_mode"] == "keycloak" and ok["keycloak_status"] == "online"
    assert ok["session_id"] and ok["reason"] is None
    assert set(ok) == {"success", "session_id", "auth_mode", "keycloak_status", "reason"}
    refused = kr.login("alice", "wrong-password", PACKAGE)
    assert refused["success"] is False and refused["session_id"] is None and refused["reason"]
    assert set(refused) >= {"success", "session_id", "auth_mode", "keycloak_status", "reason"}


def test_change_password_result_dicts(kr: ObjKeycloakResilient, keycloak: FakeKeycloak) -> None:
    done = kr.change_password("alice", ALICE_PW, NEW_PW, PACKAGE)
    assert done == {"success": True, "mode": "synchronized", "reason": None}
    assert keycloak.password_of("alice") == NEW_PW
    wrong = kr.change_password("alice", ALICE_PW, "Other-Password-1", PACKAGE)
    assert wrong["success"] is False and wrong["mode"] is None and wrong["reason"]
    assert kr.login("alice", NEW_PW, PACKAGE)["success"] is True


def test_a_dead_service_is_an_error_not_a_wrong_password(tmp_path) -> None:
    kr = ObjKeycloakResilient(tmp_path / "none.sock")
    with pytest.raises(ServiceUnavailable):
        kr.login("alice", ALICE_PW, PACKAGE)
