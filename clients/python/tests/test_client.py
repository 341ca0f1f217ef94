"""Every :class:`Client` method against the real service, and the connection's behaviour."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from conftest import ALICE_PW, BOB_PW, NEW_PW
from fake_keycloak import FakeKeycloak
from keycloak_resilient import (
    BadRequest,
    Client,
    KeycloakRejected,
    Refused,
    ServiceUnavailable,
    Status,
    Token,
)
from service import PACKAGE, Service


@pytest.fixture
def client(service: Service):
    with Client(service.socket_path, timeout=30) as c:
        yield c


def test_status_is_typed(client: Client) -> None:
    s = client.status()
    assert isinstance(s, Status)
    assert (s.available, s.circuit_state, s.failure_count, s.mode) == (True, "closed", 0, "normal")
    assert s.pending_syncs == 0 and s.cached_tokens == 0
    assert s.config.failure_threshold == 2 and s.config.offline_mode_allowed is True
    assert set(s.auth_modes_last_hour) == {"keycloak", "cached", "local"}


def test_login_and_its_refusal(client: Client) -> None:
    r = client.login(user="alice", package=PACKAGE, password=ALICE_PW)
    assert r.success and r.auth_mode == "keycloak" and r.keycloak_status == "online"
    assert r.session_id
    with pytest.raises(Refused) as refused:
        client.login(user="alice", package=PACKAGE, password="wrong-password")
    e = refused.value
    assert e.exit_code == 1 and e.op == "login"
    assert "login refused" in e.message
    assert e.result["success"] is False and e.result["reason"]


def test_authenticate_cached_token_and_refresh(client: Client) -> None:
    fresh = client.authenticate(user="alice", package=PACKAGE, password=ALICE_PW)
    assert isinstance(fresh, Token) and fresh.cached is False and fresh.cached_at is None
    assert fresh.access_token.count(".") == 2
    cached = client.cached_token(user="alice", package=PACKAGE)
    assert cached.cached is True and cached.cached_at and cached.access_token == fresh.access_token
    refreshed = client.refresh(user="alice", package=PACKAGE)
    assert refreshed.cached is False and refreshed.access_token != fresh.access_token
    with pytest.raises(Refused) as none:
        client.cached_token(user="bob", package=PACKAGE)
    assert none.value.exit_code == 1 and "bob" in none.value.message
    with pytest.raises(Refused):
        client.authenticate(user="alice", package=PACKAGE, password="wrong-password")


def test_passwd_synchronized_refused_and_rejected(client: Client, keycloak: FakeKeycloak) -> None:
    r = client.passwd(user="alice", package=PACKAGE, old_password=ALICE_PW, new_password=NEW_PW)
    assert r.success and r.mode == "synchronized"
    assert keycloak.password_of("alice") == NEW_PW
    with pytest.raises(Refused) as refused:
        client.passwd(user="alice", package=PACKAGE, old_password=ALICE_PW, new_password="Other-Password-1")
    assert refused.value.exit_code == 1 and refused.value.result["success"] is False
    # A local account Keycloak does not know: changed locally, refused there (exit 4).
    client.user_add(user="carol", package=PACKAGE, password=ALICE_PW)
    with pytest.raises(KeycloakRejected) as rejected:
        client.passwd(user="carol", package=PACKAGE, old_password=ALICE_PW, new_password=NEW_PW)
    assert rejected.value.exit_code == 4
    assert rejected.value.result["mode"] == "rejected" and rejected.value.result["keycloak_error"]
    assert client.login(user="carol", package=PACKAGE, password=NEW_PW).success


def test_verify_token_answers_with_one_reason(client: Client) -> None:
    with pytest.raises(Refused) as bad:
        client.verify_token(token="not-a-token")
    e = bad.value
    assert e.exit_code == 1 and e.op == "verify-token"
    assert e.result["valid"] is False and e.result["reason"] == "malformed"
    assert "malformed" in e.message
    # This fake signs nothing (random signatures) and publishes no keys: never valid.
    fresh = client.authenticate(user="alice", package=PACKAGE, password=ALICE_PW)
    with pytest.raises(Refused) as unsigned:
        client.verify_token(token=fresh.access_token)
    assert unsigned.value.result["reason"] in {"unknown_key", "bad_signature", "wrong_issuer"}
    assert fresh.access_token not in unsigned.value.message


def test_user_management(client: Client, tmp_path: Path) -> None:
    # The profile fields travel with the request (used with keycloak.manage_users).
    assert "added carol/webapp" in client.user_add(
        user="carol", package=PACKAGE, password=ALICE_PW, email="carol@example.test", first_name="Carol"
    )
    with pytest.raises(BadRequest) as exists:
        client.user_add(user="carol", package=PACKAGE, password=ALICE_PW)
    assert exists.value.exit_code == 2 and "carol" in exists.value.message
    users = {(u.user, u.package): u for u in client.user_list()}
    assert set(users) == {("alice", PACKAGE), ("bob", PACKAGE), ("carol", PACKAGE)}
    assert users[("carol", PACKAGE)].enabled and users[("carol", PACKAGE)].locked_until is None
    assert "disabled carol/webapp" in client.user_disable(user="carol", package=PACKAGE)
    with pytest.raises(Refused):
        client.login(user="carol", package=PACKAGE, password=ALICE_PW)
    assert "enabled carol/webapp" in client.user_enable(user="carol", package=PACKAGE)
    assert "unlocked carol/webapp" in client.user_unlock(user="carol", package=PACKAGE)
    assert client.login(user="carol", package=PACKAGE, password=ALICE_PW).auth_mode == "local"
    assert "removed carol/webapp" in client.user_remove(user="carol", package=PACKAGE)
    assert ("carol", PACKAGE) not in {(u.user, u.package) for u in client.user_list()}

    rows = tmp_path / "users.jsonl"
    rows.write_text(
        json.dumps({"username": "dave", "package": PACKAGE, "password": "Dave-Password-1"})
        + "\n"
        + json.dumps({"username": "alice", "package": PACKAGE, "password": "x-Password-1"})
        + "\n"
    )
    with pytest.raises(Refused) as partly:  # alice exists: that row fails, dave is imported
        client.user_import(file=rows)
    assert partly.value.result["imported"] == 1 and partly.value.result["errors"][0]["line"] == 2
    rows.write_text(json.dumps({"username": "erin", "package": PACKAGE, "password": "Erin-Password-1"}) + "\n")
    assert client.user_import(file=rows).imported == 1
    assert client.login(user="dave", package=PACKAGE, password="Dave-Password-1").success


def test_queue_sync_queue_and_sync_now(client: Client, keycloak: FakeKeycloak) -> None:
    sync_id = client.queue_sync(
        user="bob", package=PACKAGE, sync_type="password_change", data={"new_password": NEW_PW}, priority=1
    )
    page = client.queue()
    assert page.counts["pending"] == 1 and page.next is None and page.blocked is None
    (item,) = page.items
    assert (item.sync_id, item.user, item.sync_type, item.status, item.priority) == (
        sync_id,
        "bob",
        "password_change",
        "pending",
        1,
    )
    report = client.sync_now(batch_size=10)
    assert (report.processed, report.completed, report.pending_syncs, report.failed_syncs) == (1, 1, 0, 0)
    assert keycloak.password_of("bob") == NEW_PW
    assert client.queue(limit=1).items[0].status == "completed"
    with pytest.raises(BadRequest) as bad:
        client.queue_sync(user="bob", package=PACKAGE, sync_type="password_change", data={})
    assert bad.value.exit_code == 2


def test_queue_sync_many_queues_a_batch_or_nothing(client: Client, keycloak: FakeKeycloak) -> None:
    change = {"user": "bob", "package": PACKAGE, "type": "password_change", "data": {"new_password": NEW_PW}}
    with pytest.raises(BadRequest) as bad:
        client.queue_sync_many(changes=[{"user": "alice", "package": PACKAGE, "type": "user_disable", "data": {}}, {**change, "type": "nope"}])
    assert bad.value.exit_code == 2 and "change 2 of 2" in str(bad.value)
    assert client.queue().counts["pending"] == 0, "a refused batch queues none of its changes"
    alice = {"user": "alice", "package": PACKAGE, "type": "password_change", "data": {"password": "Alice-Next-1"}, "priority": 1}
    ids = client.queue_sync_many(changes=[change, alice])
    assert len(set(ids)) == 2
    page = client.queue()
    assert [(i.sync_id, i.user, i.priority) for i in page.items] == [(ids[1], "alice", 1), (ids[0], "bob", 5)]
    assert client.sync_now().completed == 2
    assert (keycloak.password_of("bob"), keycloak.password_of("alice")) == (NEW_PW, "Alice-Next-1")


def test_a_failed_item_is_shown_retried_and_removed(client: Client, keycloak: FakeKeycloak) -> None:
    sync_id = client.queue_sync(
        user="carol-later", package=PACKAGE, sync_type="password_change", data={"new_password": NEW_PW}
    )
    assert client.sync_now().failed == 1, "the user is not in Keycloak yet"
    shown = client.queue_show(sync_id=sync_id)
    assert (shown.status, shown.data_kept) == ("failed", True)
    keycloak.add_user("carol-later", "Created-Pw-0")
    assert client.queue_retry(failed=True, user="carol-later") == [sync_id]
    assert client.sync_now().completed == 1
    assert keycloak.password_of("carol-later") == NEW_PW
    with pytest.raises(Refused) as refused:
        client.queue_retry(sync_id=sync_id)
    assert "already applied" in str(refused.value)
    client.queue_remove(sync_id=sync_id)
    with pytest.raises(BadRequest):
        client.queue_show(sync_id=sync_id)


def test_reconcile_disables_what_keycloak_disabled(client: Client, keycloak: FakeKeycloak) -> None:
    first = client.reconcile()
    assert first.stopped is None and first.checked >= 1 and first.disabled == 0
    assert first.last_complete == first.at
    keycloak.add_user("alice", ALICE_PW, enabled=False)
    second = client.reconcile()
    assert second.disabled == 1, second
    with pytest.raises(Refused) as refused:
        client.login(user="alice", package=PACKAGE, password=ALICE_PW)
    assert refused.value.result["reason"] == "account_disabled"


def test_cleanup(client: Client) -> None:
    client.authenticate(user="alice", package=PACKAGE, password=ALICE_PW)
    report = client.cleanup(token_hours=0, sync_days=0, failed_days=0)
    assert report.tokens_removed == 1 and report.syncs_removed == 0 and report.sessions_removed == 0
    assert client.cleanup().tokens_removed == 0


def test_sessions(client: Client) -> None:
    login = client.login(user="alice", package=PACKAGE, password=ALICE_PW)
    session = client.session_show(session_id=login.session_id)
    assert (session.session_id, session.user, session.package, session.auth_mode) == (
        login.session_id,
        "alice",
        PACKAGE,
        "keycloak",
    )
    assert client.logout(session_id=login.session_id) is True
    with pytest.raises(Refused) as gone:
        client.session_show(session_id=login.session_id)
    assert gone.value.exit_code == 1 and login.session_id in gone.value.message
    with pytest.raises(Refused):
        client.logout(session_id=login.session_id)


def test_metrics(client: Client, tmp_path: Path) -> None:
    assert "keycloak_resilient_" in client.metrics()
    target = tmp_path / "kr.prom"
    assert client.metrics(textfile=target) == ""
    assert "keycloak_resilient_" in target.read_text()


def test_bad_requests_raise_with_exit_code_2(client: Client) -> None:
    with pytest.raises(BadRequest) as bad_name:
        client.login(user="alice", package="web/app", password=ALICE_PW)
    assert bad_name.value.exit_code == 2 and "--package" in bad_name.value.message
    answer = client.request("fly")
    assert answer.exit == 2 and "unknown variant" in answer.stderr
    with pytest.raises(BadRequest):
        client.call("fly")
    # The connection is still good after a bad request.
    assert client.status().available


def test_one_connection_is_reused(client: Client) -> None:
    client.status()
    first = client._sock
    client.login(user="alice", package=PACKAGE, password=ALICE_PW)
    client.status()
    assert first is not None and client._sock is first


def test_threads_share_one_client(client: Client) -> None:
    errors = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                if i % 2:
                    assert client.status().available
                else:
                    assert client.login(user="bob", package=PACKAGE, password=BOB_PW).success
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert client.status().auth_modes_last_hour["keycloak"] == 20


def test_no_service_raises_service_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ServiceUnavailable) as missing:
        Client(tmp_path / "nothing.sock").status()
    assert missing.value.exit_code == 3 and "nothing.sock" in missing.value.message


def test_socket_path_from_the_environment_then_the_default(
    service: Service, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KEYCLOAK_RESILIENT_SOCKET", str(service.socket_path))
    monkeypatch.chdir(tmp_path)
    assert Client().socket_path == str(service.socket_path)
    assert Client().status().available
    monkeypatch.delenv("KEYCLOAK_RESILIENT_SOCKET")
    assert Client().socket_path == os.path.join("data", "control.sock")
    monkeypatch.chdir(service.root)  # where data/control.sock is
    assert Client().status().available
