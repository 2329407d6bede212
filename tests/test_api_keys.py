"""API keys: made, listed and revoked over REST; accepted as bearer tokens on REST and gRPC within their scopes; stored
hashed; revoked (or their owner deleted) -> refused at once. A real stack (control plane, agent, gateway) as
subprocesses; the store checks run on SQLite and on the PostgreSQL server."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import grpc
import httpx
import pytest
from sqlalchemy import create_engine, inspect, text, update
from sqlmodel import Session, col

from control_plane.accounts import AccountStore
from control_plane.api_key_scopes import ADMIN, METHOD_SCOPES, READ, SUBMIT, allows, scope_needed
from control_plane.models import ApiKey, utcnow
from protos import control_plane_pb2 as cp, control_plane_pb2_grpc
from tests.helpers.stack import start_stack

AGENT_SERVICE = "AgentRegistry"  # called with the cluster token, never a user's credential


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = start_stack(tmp_path_factory.mktemp("api-keys"), slots=1)
    yield running
    running.stop()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def alice(stack) -> str:
    return stack.create_user("alice", "alice-password-1")


@pytest.fixture(scope="module")
def bob(stack) -> str:
    return stack.create_user("bob", "bob-password-1")


def create_key(stack, token: str, name: str = "ci", scopes=(READ,)) -> dict:
    response = httpx.post(f"{stack.base_url}/api/auth/keys", json={"name": name, "scopes": list(scopes)},
                          headers=bearer(token), timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


def list_keys(stack, token: str) -> list[dict]:
    response = httpx.get(f"{stack.base_url}/api/auth/keys", headers=bearer(token), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["keys"]


def get(stack, path: str, token: str) -> httpx.Response:
    return httpx.get(f"{stack.base_url}{path}", headers=bearer(token), timeout=30)


def grpc_stubs(stack):
    channel = grpc.insecure_channel(stack.control_plane_address)
    return channel, control_plane_pb2_grpc.FinetuneServiceStub(channel), control_plane_pb2_grpc.AuthServiceStub(channel)


def test_create_list_and_delete_over_rest(stack, alice):
    made = create_key(stack, alice, "nightly CI", [SUBMIT, READ])
    assert made["key"].startswith("bgk_") and len(made["key"]) > 40
    assert made["name"] == "nightly CI" and made["scopes"] == [READ, SUBMIT] and made["created_at"]
    listed = {key["id"]: key for key in list_keys(stack, alice)}
    entry = listed[made["id"]]
    assert entry["name"] == "nightly CI" and entry["scopes"] == [READ, SUBMIT] and entry["last_used_at"] is None
    assert made["key"].startswith(entry["prefix"]) and len(entry["prefix"]) < 16
    assert "key" not in entry and not any(made["key"] in str(value) for value in entry.values())
    deleted = httpx.delete(f"{stack.base_url}/api/auth/keys/{made['id']}", headers=bearer(alice), timeout=30)
    assert deleted.status_code == 200 and deleted.json() == {"deleted": made["id"]}
    assert made["id"] not in {key["id"] for key in list_keys(stack, alice)}
    again = httpx.delete(f"{stack.base_url}/api/auth/keys/{made['id']}", headers=bearer(alice), timeout=30)
    assert again.status_code == 404 and again.json()["error"]["field"] == "id"


def test_a_key_is_a_bearer_token_on_rest_and_on_grpc(stack, alice):
    key = create_key(stack, alice, "reader")["key"]
    me = get(stack, "/api/auth/me", key)
    assert me.status_code == 200 and me.json()["username"] == "alice"
    assert get(stack, "/api/finetune/tasks", key).status_code == 200
    channel, finetune, auth = grpc_stubs(stack)
    with channel:
        assert auth.WhoAmI(cp.WhoAmIRequest(), metadata=tuple(bearer(key).items())).username == "alice"
        finetune.ListTasks(cp.ListTasksRequest(), metadata=tuple(bearer(key).items()))


def test_a_read_key_lists_but_cannot_start_stop_or_mint_keys(stack, alice):
    key = create_key(stack, alice, "read only", [READ])["key"]
    assert get(stack, "/api/finetune/tasks", key).status_code == 200
    assert get(stack, "/api/finetune/datasets", key).status_code == 200
    start = httpx.post(f"{stack.base_url}/api/finetune/start", json={"type": "sft", "config": {}},
                       headers=bearer(key), timeout=30)
    assert start.status_code == 403, start.text
    assert start.json()["error"]["code"] == "permission_denied" and "'submit'" in start.json()["error"]["message"]
    mint = httpx.post(f"{stack.base_url}/api/auth/keys", json={"name": "more", "scopes": [ADMIN]},
                      headers=bearer(key), timeout=30)
    assert mint.status_code == 403 and "'admin'" in mint.json()["error"]["message"]
    channel, finetune, _ = grpc_stubs(stack)
    with channel:
        with pytest.raises(grpc.RpcError) as refused:
            finetune.StartTask(cp.StartTaskRequest(type="sft"), metadata=tuple(bearer(key).items()))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED and "'submit'" in refused.value.details()
        with pytest.raises(grpc.RpcError) as stopped:
            finetune.StopTask(cp.StopTaskRequest(task_id="whatever"), metadata=tuple(bearer(key).items()))
        assert stopped.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_submit_key_passes_to_the_task_checks_and_an_admin_key_mints_keys(stack, alice):
    submit = create_key(stack, alice, "submitter", [SUBMIT])["key"]
    start = httpx.post(f"{stack.base_url}/api/finetune/start", json={"type": "no-such-type", "config": {}},
                       headers=bearer(submit), timeout=30)
    assert start.status_code == 400 and start.json()["error"]["field"] == "type"  # past the scope check
    admin_key = create_key(stack, alice, "key admin", [ADMIN])["key"]
    minted = create_key(stack, admin_key, "minted by a key", [READ])
    assert minted["id"] in {key["id"] for key in list_keys(stack, alice)}  # owned by alice, the key's owner


def test_an_admin_scope_opens_only_what_its_owner_may_do(stack, alice):
    users_by_alice_key = get(stack, "/api/users", create_key(stack, alice, "not an admin", [ADMIN])["key"])
    assert users_by_alice_key.status_code == 403  # alice is no admin: her key is none either
    admins_key = create_key(stack, stack.admin_token, "ops", [ADMIN])["key"]
    assert get(stack, "/api/users", admins_key).status_code == 200
    admins_read_key = create_key(stack, stack.admin_token, "ops read", [READ])["key"]
    refused = get(stack, "/api/users", admins_read_key)
    assert refused.status_code == 403 and "'admin'" in refused.json()["error"]["message"]


def test_a_revoked_key_is_refused_at_once(stack, alice):
    made = create_key(stack, alice, "short lived")
    assert get(stack, "/api/auth/me", made["key"]).status_code == 200  # checked (and cached) just now
    assert httpx.delete(f"{stack.base_url}/api/auth/keys/{made['id']}", headers=bearer(alice), timeout=30).is_success
    assert get(stack, "/api/auth/me", made["key"]).status_code == 401
    channel, _, auth = grpc_stubs(stack)
    with channel, pytest.raises(grpc.RpcError) as refused:
        auth.WhoAmI(cp.WhoAmIRequest(), metadata=tuple(bearer(made["key"]).items()))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_deleting_a_user_ends_their_keys_at_once(stack):
    carol = stack.create_user("carol", "carol-password-1")
    key = create_key(stack, carol, "carol's")["key"]
    assert get(stack, "/api/auth/me", key).status_code == 200
    gone = httpx.delete(f"{stack.base_url}/api/users/carol", headers=bearer(stack.admin_token), timeout=30)
    assert gone.status_code == 200
    assert get(stack, "/api/auth/me", key).status_code == 401


def test_another_user_neither_sees_nor_deletes_your_keys(stack, alice, bob):
    made = create_key(stack, alice, "alice's own")
    assert made["id"] not in {key["id"] for key in list_keys(stack, bob)}
    assert made["id"] not in {key["id"] for key in list_keys(stack, stack.admin_token)}
    refused = httpx.delete(f"{stack.base_url}/api/auth/keys/{made['id']}", headers=bearer(bob), timeout=30)
    assert refused.status_code == 404
    assert get(stack, "/api/auth/me", made["key"]).status_code == 200


def test_the_store_holds_only_the_keys_hash(stack, alice):
    made = create_key(stack, alice, "hashed")
    engine = create_engine(stack.env["BUGAGARIC_DATABASE_URL"])
    try:
        with engine.connect() as connection:
            tables = inspect(connection).get_table_names()
            for table in tables:
                for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                    assert not any(made["key"] in str(value) for value in row), table
            stored = connection.execute(text("SELECT key_hash FROM api_key WHERE id = :id"), {"id": made["id"]}).one()
    finally:
        engine.dispose()
    assert stored.key_hash == hashlib.sha256(made["key"].encode()).hexdigest()


def test_last_used_at_is_set_once_the_key_is_used(stack, alice):
    made = create_key(stack, alice, "usage")
    assert {key["id"]: key for key in list_keys(stack, alice)}[made["id"]]["last_used_at"] is None
    assert get(stack, "/api/finetune/tasks", made["key"]).status_code == 200
    assert {key["id"]: key for key in list_keys(stack, alice)}[made["id"]]["last_used_at"] is not None


@pytest.mark.parametrize(("body", "field"), [
    ({"scopes": [READ]}, "name"),
    ({"name": "", "scopes": [READ]}, "name"),
    ({"name": "   ", "scopes": [READ]}, "name"),
    ({"name": "x" * 101, "scopes": [READ]}, "name"),
    ({"name": 7, "scopes": [READ]}, "name"),
    ({"name": "tab\tin name", "scopes": [READ]}, "name"),
    ({"name": "k"}, "scopes"),
    ({"name": "k", "scopes": []}, "scopes"),
    ({"name": "k", "scopes": "read"}, "scopes"),
    ({"name": "k", "scopes": [READ, "write"]}, "scopes"),
    ({"name": "k", "scopes": [1]}, "scopes"),
    ({"name": "k", "scopes": [READ], "expires": 3}, "expires"),
])
def test_bad_input_is_a_400_naming_the_field(stack, alice, body, field):
    response = httpx.post(f"{stack.base_url}/api/auth/keys", json=body, headers=bearer(alice), timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field


def test_every_client_facing_rpc_has_a_scope_and_every_entry_an_rpc():
    methods = {
        f"/{service.full_name}/{method.name}"
        for service in cp.DESCRIPTOR.services_by_name.values() if service.name != AGENT_SERVICE
        for method in service.methods
    }
    assert sorted(methods - METHOD_SCOPES.keys()) == []
    assert sorted(METHOD_SCOPES.keys() - methods) == []
    assert scope_needed("/bugagaric.finetune.v1.FinetuneService/NotYetInTheTable") == ADMIN  # fails closed


def test_scopes_nest():
    assert allows([SUBMIT], READ) and allows([ADMIN], SUBMIT) and allows([ADMIN], READ)
    assert not allows([READ], SUBMIT) and not allows([SUBMIT], ADMIN) and not allows([], READ)


def test_last_used_is_written_at_most_once_a_minute(engine):
    accounts = AccountStore(engine, timedelta(hours=1))
    accounts.create_user("dora", "dora-password")
    key, row = accounts.api_keys.create("dora", "ci", [READ])

    def last_used():
        with Session(engine) as session:
            return session.get(ApiKey, row.id).last_used_at

    def check_without_the_cache():
        accounts._recent_tokens.forget_user("dora")  # as once the short cache entry has lapsed
        principal = accounts.authenticate(key)
        assert principal.username == "dora" and principal.scopes == {READ}

    check_without_the_cache()
    first = last_used()
    assert first is not None
    check_without_the_cache()
    assert last_used() == first  # within the minute: not written again
    with Session(engine) as session:
        session.execute(update(ApiKey).where(col(ApiKey.id) == row.id).values(last_used_at=utcnow() - timedelta(minutes=2)))
        session.commit()
    check_without_the_cache()
    assert last_used() > first - timedelta(seconds=1) and last_used() > utcnow() - timedelta(minutes=1)
    assert accounts.delete_user("dora") and accounts.authenticate(key) is None
