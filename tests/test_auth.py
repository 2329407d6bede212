"""Accounts and access: every REST route and gRPC method refuses a missing or wrong token; users see only their own
tasks and templates; admins manage users. Against the whole system running as separate processes."""

from __future__ import annotations

import re
import shutil
import stat
import time
from datetime import timedelta

import grpc
import httpx
import pytest

from control_plane.accounts import AccountStore
from control_plane.bootstrap import ensure_admin
from control_plane.db import make_engine
from gateway.app import create_app
from protos import control_plane_pb2, control_plane_pb2_grpc
from protos.auth import bearer_metadata
from tests.helpers.stack import start_stack
from tests.helpers.tiny_models import write_sft_rows

# Open without a token: liveness, the login itself, and the API docs.
PUBLIC_ROUTES = {("GET", "/api/health"), ("POST", "/api/auth/login")}
PUBLIC_METHODS = {"/bugagaric.finetune.v1.AuthService/Login", "/bugagaric.finetune.v1.FinetuneService/GetSystemHealth"}
# A well-formed body per route, so that only the token can be what is refused.
BODIES = {
    "/api/finetune/start": {"type": "sft", "config": {}},
    "/api/finetune/validate": {"type": "sft", "config": {}},
    "/api/finetune/templates": {"name": "n", "type": "sft", "config": {}},
    "/api/users": {"username": "someone", "password": "long enough"},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_llama_dir):
    workspace = tmp_path_factory.mktemp("auth-workspace")
    shutil.copytree(tiny_llama_dir, workspace / "models" / "tiny-llama")
    write_sft_rows(workspace / "data" / "train.jsonl", 16)
    running = start_stack(workspace, slots=2)
    yield running
    running.stop()


def client(stack, token: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=stack.base_url, timeout=30, headers=headers)


def every_route() -> list[tuple[str, str]]:
    paths = create_app().openapi()["paths"]
    return sorted((method.upper(), path) for path, methods in paths.items() for method in methods)


@pytest.mark.parametrize("token", [None, "not-a-real-token"])
def test_every_rest_route_refuses_a_missing_or_wrong_token(stack, token):
    routes = every_route()
    assert len(routes) >= 17
    with client(stack, token) as api:
        for method, path in routes:
            url = re.sub(r"\{[^}]+\}", "x", path)
            response = api.request(method, url, json=BODIES.get(path) if method == "POST" else None)
            if (method, path) in PUBLIC_ROUTES:
                continue
            assert response.status_code == 401, f"{method} {path}: {response.status_code} {response.text}"
            assert response.json()["error"]["code"] == "unauthenticated"


def _all_grpc_methods():
    for service in control_plane_pb2.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            yield service, method


@pytest.mark.parametrize("token", ["", "not-a-real-token", "user"])
def test_every_grpc_method_refuses_a_missing_or_wrong_token(stack, token):
    if token == "user":  # a valid user token is still not the cluster token the agent registry wants
        token = stack.admin_token
    with grpc.insecure_channel(stack.control_plane_address) as channel:
        for service, method in _all_grpc_methods():
            path = f"/{service.full_name}/{method.name}"
            if path in PUBLIC_METHODS or (token == stack.admin_token and service.name != "AgentRegistry"):
                continue
            request_class = getattr(control_plane_pb2, method.input_type.name, None)
            if request_class is None:
                from protos import common_pb2

                request_class = getattr(common_pb2, method.input_type.name)
            serialize = request_class.SerializeToString
            if method.server_streaming:
                call = channel.unary_stream(path, request_serializer=serialize, response_deserializer=lambda b: b)
                with pytest.raises(grpc.RpcError) as info:
                    list(call(request_class(), metadata=bearer_metadata(token), timeout=10))
            else:
                call = channel.unary_unary(path, request_serializer=serialize, response_deserializer=lambda b: b)
                with pytest.raises(grpc.RpcError) as info:
                    call(request_class(), metadata=bearer_metadata(token), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, path


def test_agents_registry_accepts_the_cluster_token(stack):
    with grpc.insecure_channel(stack.control_plane_address) as channel:
        stub = control_plane_pb2_grpc.AgentRegistryStub(channel)
        reply = stub.Heartbeat(control_plane_pb2.HeartbeatRequest(agent_id="nobody"), metadata=bearer_metadata(stack.cluster_token), timeout=10)
        assert reply.known is False


def test_login_errors_and_rate_limit(stack):
    with client(stack, None) as api:
        wrong = api.post("/api/auth/login", json={"username": "admin", "password": "wrong password"})
        assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "wrong username or password"
        unknown = api.post("/api/auth/login", json={"username": "ghost", "password": "whatever1"})
        assert unknown.status_code == 401 and unknown.json()["error"]["message"] == "wrong username or password"
        assert api.post("/api/auth/login", json={"username": "admin"}).status_code == 400
        answers = [api.post("/api/auth/login", json={"username": "ghost", "password": "x" * 9}) for _ in range(5)]
        # The 5th failure for (ghost, this address) backs it off: the next attempt must wait a second.
        assert [a.status_code for a in answers] == [401] * 4 + [429]
        assert answers[-1].json()["error"]["message"] == "too many failed login attempts; try again in 1 s"
        assert answers[-1].headers["retry-after"] == "1"
        # Limits are per (user, address), not per address alone: the admin can still log in from here.
        assert api.post("/api/auth/login", json={"username": "admin", "password": stack.admin_password}).status_code == 200


def test_me_logout_and_admin_only_user_management(stack):
    token = stack.create_user("carol", "carol-password")
    with client(stack, token) as carol:
        assert carol.get("/api/auth/me").json() == {"username": "carol", "role": "user"}
        refused = carol.get("/api/users")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
        assert carol.post("/api/users", json={"username": "eve", "password": "eve-password"}).status_code == 403
        assert carol.post("/api/auth/logout").json() == {"ok": True}
        assert carol.get("/api/auth/me").status_code == 401
    with client(stack, stack.admin_token) as admin:
        assert "carol" in [u["username"] for u in admin.get("/api/users").json()["users"]]
        short = admin.post("/api/users", json={"username": "dave", "password": "short"})
        assert short.status_code == 400 and "8 characters" in short.json()["error"]["message"]
        assert admin.post("/api/users", json={"username": "carol", "password": "another-one"}).status_code == 409
        assert admin.delete("/api/users/carol").json() == {"deleted": "carol"}
        assert admin.delete("/api/users/carol").status_code == 404


def test_users_see_only_their_own_tasks(stack):
    alice, bob = stack.create_user("alice", "alice-password"), stack.create_user("bob", "bob-password-")
    config = {"model_name_or_path": "models/tiny-llama", "train_data_path": "data/train.jsonl", "max_steps": 1,
              "max_length": 32, "per_device_train_batch_size": 4, "output_dir": "output/alice"}
    with client(stack, alice) as a, client(stack, bob) as b, client(stack, stack.admin_token) as admin:
        task = a.post("/api/finetune/start", json={"type": "sft", "config": config}).json()
        assert task["owner"] == "alice"
        for method, path in [
            ("GET", f"/api/finetune/tasks/{task['id']}"),
            ("GET", f"/api/finetune/tasks/{task['id']}/logs"),
            ("GET", f"/api/finetune/tasks/{task['id']}/metrics"),
            ("GET", f"/api/finetune/tasks/{task['id']}/logs/stream"),
            ("DELETE", f"/api/finetune/tasks/{task['id']}"),
            ("DELETE", f"/api/finetune/tasks/{task['id']}/delete"),
        ]:
            response = b.request(method, path)
            assert response.status_code == 404, f"bob {method} {path}: {response.status_code}"
        assert task["id"] not in [t["id"] for t in b.get("/api/finetune/tasks").json()["tasks"]]
        assert task["id"] in [t["id"] for t in a.get("/api/finetune/tasks").json()["tasks"]]
        assert task["id"] in [t["id"] for t in admin.get("/api/finetune/tasks", params={"limit": 500}).json()["tasks"]]
        with grpc.insecure_channel(stack.control_plane_address) as channel:
            stub = control_plane_pb2_grpc.FinetuneServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.GetTask(control_plane_pb2.GetTaskRequest(task_id=task["id"]), metadata=bearer_metadata(bob), timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        # Alice's stream works with her token (in the header, never the URL) and ends with the task.
        with httpx.stream("GET", f"{stack.base_url}/api/finetune/tasks/{task['id']}/logs/stream",
                          headers={"authorization": f"Bearer {alice}"}, timeout=120) as stream:
            assert stream.status_code == 200
            body = "".join(stream.iter_text())
        seqs = [int(line[4:]) for line in body.splitlines() if line.startswith("id: ")]
        assert seqs and seqs == list(range(1, len(seqs) + 1)) and "event: end" in body
        ended = a.get(f"/api/finetune/tasks/{task['id']}").json()
        assert ended["status"] == "succeeded", ended["error"]
        # Resume after the 2nd line, as a reconnecting EventSource does.
        with httpx.stream("GET", f"{stack.base_url}/api/finetune/tasks/{task['id']}/logs/stream",
                          headers={"authorization": f"Bearer {alice}", "last-event-id": "2"}, timeout=60) as stream:
            resumed = [int(line[4:]) for line in "".join(stream.iter_text()).splitlines() if line.startswith("id: ")]
        assert resumed == seqs[2:]
        with httpx.stream("GET", f"{stack.base_url}/api/finetune/tasks/{task['id']}/events/stream",
                          headers={"authorization": f"Bearer {alice}"}, timeout=60) as stream:
            events = "".join(stream.iter_text())
        assert "event: task" in events and "event: metric" in events and "event: end" in events


def test_a_recreated_username_inherits_nothing_of_the_deleted_user(stack):
    henry = stack.create_user("henry", "henry-password")
    config = {"model_name_or_path": "models/tiny-llama", "train_data_path": "data/train.jsonl", "max_steps": 1,
              "max_length": 32, "per_device_train_batch_size": 4, "output_dir": "output/henry"}
    with client(stack, henry) as h:
        task = h.post("/api/finetune/start", json={"type": "sft", "config": config}).json()
        assert task["owner"] == "henry"
        saved = h.post("/api/finetune/templates", json={"name": "mine", "type": "sft", "config": {"learning_rate": 1e-4}})
        assert saved.status_code == 201, saved.text
    with client(stack, stack.admin_token) as admin:
        assert admin.delete("/api/users/henry").json() == {"deleted": "henry"}
        assert admin.post("/api/users", json={"username": "henry", "password": "new-henry-password"}).status_code == 201
    with client(stack, henry) as old_henry:
        assert old_henry.get("/api/auth/me").status_code == 401
    with client(stack, stack.login("henry", "new-henry-password")) as h:
        assert h.get("/api/finetune/tasks").json()["tasks"] == []
        for method, path in [("GET", f"/api/finetune/tasks/{task['id']}"), ("GET", f"/api/finetune/tasks/{task['id']}/logs"),
                             ("DELETE", f"/api/finetune/tasks/{task['id']}")]:
            assert h.request(method, path).status_code == 404, f"{method} {path}"
        assert all(t["builtin"] for t in h.get("/api/finetune/templates").json()["templates"])
        assert h.delete(f"/api/finetune/templates/{saved.json()['id']}").status_code == 404
    with client(stack, stack.admin_token) as admin:
        seen = admin.get(f"/api/finetune/tasks/{task['id']}").json()
        assert seen["owner"].startswith("deleted:henry:")
        listed = {t["id"]: t["owner"] for t in admin.get("/api/finetune/tasks", params={"limit": 500}).json()["tasks"]}
        assert listed[task["id"]] == seen["owner"]
        # Still the admins' to manage: stopped if it is still going.
        assert admin.delete(f"/api/finetune/tasks/{task['id']}").status_code in (200, 409)


def test_saved_templates_belong_to_their_owner(stack):
    erin, frank = stack.create_user("erin", "erin-password"), stack.create_user("frank", "frank-password")
    with client(stack, erin) as e, client(stack, frank) as f:
        saved = e.post("/api/finetune/templates", json={"name": "my lora", "type": "sft", "config": {"learning_rate": 1e-4}})
        assert saved.status_code == 201, saved.text
        template = saved.json()
        assert template["builtin"] is False and template["owner"] == "erin" and template["default_config"] == {"learning_rate": 1e-4}
        mine = [t for t in e.get("/api/finetune/templates").json()["templates"] if not t["builtin"]]
        assert [t["id"] for t in mine] == [template["id"]]
        assert all(t["builtin"] for t in f.get("/api/finetune/templates").json()["templates"])
        assert f.delete(f"/api/finetune/templates/{template['id']}").status_code == 404
        bad = e.post("/api/finetune/templates", json={"name": "x", "type": "sft", "config": {"learning_rat": 1}})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "learning_rat"
        assert e.delete(f"/api/finetune/templates/{template['id']}").json() == {"deleted": template["id"]}
        assert all(t["builtin"] for t in e.get("/api/finetune/templates").json()["templates"])


def test_first_start_creates_an_admin_with_a_generated_owner_only_password(tmp_path):
    accounts = AccountStore(make_engine(f"sqlite:///{tmp_path / 'a.db'}"), timedelta(hours=1))
    password_file = tmp_path / "var" / "admin_password"
    ensure_admin(accounts, "admin", "", password_file)
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    username, password = password_file.read_text().split()
    token, _, user = accounts.login(username, password)
    assert user.role == "admin" and accounts.authenticate(token).is_admin
    ensure_admin(accounts, "admin", "", password_file)  # a second start changes nothing
    assert password_file.read_text().split() == [username, password]


def test_tokens_expire_and_are_stored_hashed(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    accounts = AccountStore(engine, timedelta(seconds=1))
    accounts.create_user("gina", "gina-password")
    token, _, _ = accounts.login("gina", "gina-password")
    assert accounts.authenticate(token).username == "gina"
    with engine.connect() as conn:
        stored = [row[0] for row in conn.exec_driver_sql("SELECT token_hash FROM auth_token")]
    assert token not in stored and len(stored) == 1
    time.sleep(1.2)
    assert accounts.authenticate(token) is None

