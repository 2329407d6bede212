"""Gateway input handling against a real control plane (in this process, SQLite in a tmp dir), plus serializer and
grpc->http mapping unit tests.

The contract: a protected route without a bearer token is a 401 before anything else and before any gRPC call; bad
input with a token is a 400 with the error JSON naming the field once one WhoAmI call has shown the token valid (401
if not, 503 if the control plane is unreachable); valid input with the control plane down is a 503; never a 500.
"""

from __future__ import annotations

import json
import re
import secrets

import grpc
import pytest
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.app import create_app
from gateway.body_limit import max_body_bytes
from gateway.errors import (
    api_error_from_rpc,
    error_field_from_metadata,
    grpc_code_name,
    http_status_for,
    retry_after_from_metadata,
)
from gateway.serializers import (
    TASK_STATUSES,
    log_line_model,
    metric_point_model,
    status_name,
    task_model,
    template_model,
    to_json,
)
from gateway.settings import GatewaySettings
from protos import common_pb2, control_plane_pb2 as cp
from protos.auth import CLIENT_ADDRESS_KEY
from tests.helpers.live import LiveControlPlane, RpcLog, free_port, spy_on

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
WHOAMI = "AuthService.WhoAmI"


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory):
    running = LiveControlPlane(tmp_path_factory.mktemp("gateway-input")).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def app(control_plane):
    return create_app(GatewaySettings(control_plane_address=control_plane.address, grpc_timeout_seconds=10))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def token(client, control_plane) -> str:
    reply = client.post("/api/auth/login", json={"username": "admin", "password": control_plane.admin_password})
    assert reply.status_code == 200, reply.text
    return reply.json()["token"]


@pytest.fixture(scope="module")
def auth(token) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def rpc_calls(app, monkeypatch) -> RpcLog:
    return spy_on(app, monkeypatch)


def assert_error(resp, status: int, code: str, field: str | None) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["code"] == code
    assert body["error"]["field"] == field
    assert body["error"]["message"]
    return body["error"]


def bad_input(client, auth, rpc_calls, method: str, url: str, field: str | None, **kwargs) -> dict:
    """A 400 naming `field`, after exactly one WhoAmI call (the token is checked first), no other call."""
    err = assert_error(client.request(method, url, headers=auth, **kwargs), 400, "invalid_argument", field)
    assert rpc_calls == [WHOAMI]
    return err


# --- POST /api/finetune/start body -------------------------------------------------------------------------------


def test_invalid_json_names_position(client, auth, rpc_calls):
    err = bad_input(client, auth, rpc_calls, "POST", "/api/finetune/start", None, content=b'{"type": 1 "config": {}}')
    assert err["message"] == "request body is not valid JSON: Expecting ',' delimiter: line 1 column 12"


@pytest.mark.parametrize("raw", [b"", b"   ", b"\xff\xfe\x00garbage"])
def test_empty_or_undecodable_body(client, auth, rpc_calls, raw):
    err = bad_input(client, auth, rpc_calls, "POST", "/api/finetune/start", None, content=raw)
    assert "not valid" in err["message"]


@pytest.mark.parametrize(
    ("raw", "kind"), [(b"[]", "array"), (b'["sft"]', "array"), (b'"sft"', "string"), (b"null", "null"), (b"3", "number")]
)
def test_body_not_an_object(client, auth, rpc_calls, raw, kind):
    err = bad_input(client, auth, rpc_calls, "POST", "/api/finetune/start", None, content=raw)
    assert err["message"] == f"request body must be a JSON object, got {kind}"


@pytest.mark.parametrize(
    "body",
    [{"config": {}}, {"type": "", "config": {}}, {"type": "   ", "config": {}}, {"type": None, "config": {}},
     {"type": 3, "config": {}}, {"type": ["sft"], "config": {}}],
)
def test_missing_or_bad_type(client, auth, rpc_calls, body):
    err = bad_input(client, auth, rpc_calls, "POST", "/api/finetune/start", "type", json=body)
    assert "'type'" in err["message"]


@pytest.mark.parametrize(
    "body",
    [{"type": "sft"}, {"type": "sft", "config": None}, {"type": "sft", "config": []},
     {"type": "sft", "config": "{}"}, {"type": "sft", "config": 1}],
)
def test_config_missing_or_not_object(client, auth, rpc_calls, body):
    err = bad_input(client, auth, rpc_calls, "POST", "/api/finetune/start", "config", json=body)
    assert "'config'" in err["message"]


def test_unknown_top_level_keys_are_named(client, auth, rpc_calls):
    body = {"type": "sft", "config": {}, "model": "x", "epochs": 3}
    err = bad_input(client, auth, rpc_calls, "POST", "/api/finetune/start", "epochs", json=body)
    assert "'epochs'" in err["message"] and "'model'" in err["message"]


def test_typo_in_type_key_reported_as_unknown(client, auth, rpc_calls):
    err = bad_input(client, auth, rpc_calls, "POST", "/api/finetune/start", "tpye", json={"tpye": "sft", "config": {}})
    assert "'tpye'" in err["message"]


# --- JSON hygiene: what Python's json accepts but nothing downstream can hold ----------------------------------------


def _deep(levels: int, inner: bytes = b"1") -> bytes:
    return b'{"a": ' * levels + inner + b"}" * levels


@pytest.mark.parametrize(
    ("url", "raw", "field"),
    [
        ("/api/finetune/start", b'{"type": "sft", "config": {"learning_rate": Infinity}}', "config.learning_rate"),
        ("/api/finetune/start", b'{"type": "sft", "config": {"learning_rate": -Infinity}}', "config.learning_rate"),
        ("/api/finetune/start", b'{"type": "sft", "config": {"warmup_ratio": NaN}}', "config.warmup_ratio"),
        ("/api/finetune/start", b'{"type": "sft", "config": {"learning_rate": 1e999}}', "config.learning_rate"),
        ("/api/finetune/start", b'{"type": "sft", "config": {"lora_target_modules": [1, NaN]}}',
         "config.lora_target_modules.1"),
        ("/api/finetune/start", b'{"type": "sft", "config": {"seed": 1' + b"0" * 5000 + b"}}", "config.seed"),
        ("/api/finetune/validate", b'{"type": "sft", "config": {"learning_rate": Infinity}}', "config.learning_rate"),
        ("/api/finetune/start", b'{"type": "sft", "config": {"x": "a\\ud800b"}}', "config.x"),
        ("/api/finetune/start", b'{"type": "sft", "config": {"x": ["ok", {"y": "\\udfff"}]}}', "config.x.1.y"),
        ("/api/finetune/start", b'{"type": "\\ud800", "config": {}}', "type"),
        ("/api/finetune/start", b'{"type": "sft", "config": {"x": "nul\\u0000"}}', "config.x"),
        ("/api/finetune/templates", b'{"name": "\\ud800", "type": "sft", "config": {}}', "name"),
        ("/api/finetune/templates", b'{"name": "n", "type": "sft", "config": {"\\ud800": 1}}', "config.\\ud800"),
        ("/api/finetune/templates", b'{"name": "n\\u0000", "type": "sft", "config": {}}', "name"),
        ("/api/finetune/tasks/t1/resume", b'{"checkpoint": "ckpt-\\ud800"}', "checkpoint"),
        ("/api/users", b'{"username": "\\ud800", "password": "long enough"}', "username"),
        ("/api/users", b'{"username": "bob", "password": "long\\u0000enough"}', "password"),
        ("/api/finetune/start", b'{"type": "sft", "config": ' + _deep(65) + b"}", "config"),
        ("/api/finetune/start", b'{"type": "sft", "config": ' + b"[" * 5000 + b"]" * 5000 + b"}", "config"),
        ("/api/finetune/start", b'{"type": "sft", "config": ' + _deep(5000) + b"}", "config"),
    ],
)
def test_json_hygiene_names_the_path(client, auth, rpc_calls, url, raw, field):
    err = bad_input(client, auth, rpc_calls, "POST", url, field, content=raw)
    assert "\\ud" not in field or "\\ud" in err["message"]  # a surrogate is shown escaped, never sent raw


def test_a_deep_body_without_a_top_level_object(client, auth, rpc_calls):
    err = bad_input(client, auth, rpc_calls, "POST", "/api/finetune/start", None, content=b"[" * 5000 + b"]" * 5000)
    assert "nested more than 64" in err["message"]


def test_brackets_inside_strings_are_not_nesting(client, auth, rpc_calls):
    """A string full of brackets is text, not depth: it reaches the control plane (which judges the config)."""
    raw = json.dumps({"type": "sft", "config": {"x": "[{" * 5000}}).encode()
    resp = client.post("/api/finetune/start", content=raw, headers=auth)
    assert resp.status_code == 400 and resp.json()["error"]["field"] != "config", resp.text
    assert rpc_calls == ["StartTask"]


@pytest.mark.parametrize(
    ("raw", "field"),
    [(b'{"username": "\\ud800", "password": "whatever1"}', "username"),
     (b'{"username": "adm\\udbffin", "password": "whatever1"}', "username"),
     (b'{"username": "a", "password": "\\udc00"}', "password")],
)
def test_surrogates_in_login_are_400_without_any_call(client, rpc_calls, raw, field):
    assert_error(client.post("/api/auth/login", content=raw), 400, "invalid_argument", field)
    assert rpc_calls == []  # a public route: no token to check


def test_a_surrogate_valid_pair_is_ordinary_text(client, auth, rpc_calls):
    raw = b'{"name": "emoji \\ud83d\\ude00", "type": "sft", "config": {}}'
    resp = client.post("/api/finetune/templates", content=raw, headers=auth)
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"] == "emoji \U0001F600"
    client.delete(f"/api/finetune/templates/{resp.json()['id']}", headers=auth)


# --- path and query parameters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "field"),
    [
        ("GET", "/api/finetune/tasks?limit=abc", "limit"),
        ("GET", "/api/finetune/tasks?limit=0", "limit"),
        ("GET", "/api/finetune/tasks?limit=501", "limit"),
        ("GET", "/api/finetune/tasks?limit=1.5", "limit"),
        ("GET", "/api/finetune/tasks?offset=-1", "offset"),
        ("GET", "/api/finetune/tasks?offset=x", "offset"),
        ("GET", f"/api/finetune/tasks?offset={INT32_MAX + 1}", "offset"),
        ("GET", "/api/finetune/tasks?status=bogus", "status"),
        ("GET", "/api/finetune/tasks?type=%ED%A0%80", "type"),
        ("GET", "/api/finetune/tasks?type=sft%00", "type"),
        ("GET", "/api/finetune/tasks?status=%0Arunning", "status"),
        ("GET", "/api/finetune/tasks?%FF=1", "\\xff"),
        ("GET", "/api/finetune/tasks/%ED%A0%80", "task_id"),
        ("GET", "/api/finetune/tasks/%C3%28", "task_id"),
        ("GET", "/api/finetune/tasks/t%00", "task_id"),
        ("DELETE", "/api/finetune/tasks/%ED%A0%80", "task_id"),
        ("DELETE", "/api/finetune/tasks/%ED%A0%80/delete", "task_id"),
        ("POST", "/api/finetune/tasks/%ED%A0%80/resume", "task_id"),
        ("GET", "/api/finetune/tasks/%ED%A0%80/logs", "task_id"),
        ("GET", "/api/finetune/tasks/%ED%A0%80/metrics", "task_id"),
        ("GET", "/api/finetune/tasks/%ED%A0%80/logs/stream", "task_id"),
        ("GET", "/api/finetune/tasks/%ED%A0%80/events/stream", "task_id"),
        ("DELETE", "/api/users/%ED%A0%80", "username"),
        ("DELETE", "/api/users/bob%1B", "username"),
        ("DELETE", "/api/finetune/templates/%ED%A0%80", "template_id"),
        ("DELETE", "/api/finetune/templates/%00", "template_id"),
        ("GET", "/api/finetune/tasks/t1/logs?limit=0", "limit"),
        ("GET", "/api/finetune/tasks/t1/logs?limit=abc", "limit"),
        ("GET", "/api/finetune/tasks/t1/logs?after_seq=-1", "after_seq"),
        ("GET", f"/api/finetune/tasks/t1/logs?after_seq={INT64_MAX + 1}", "after_seq"),
        ("GET", f"/api/finetune/tasks/t1/logs?before_seq={INT64_MAX + 1}", "before_seq"),
        ("GET", "/api/finetune/tasks/t1/logs?before_seq=x", "before_seq"),
        ("GET", "/api/finetune/tasks/t1/logs?after_seq=5&before_seq=9", "before_seq"),
        ("GET", "/api/finetune/tasks/t1/metrics?after_seq=-3", "after_seq"),
        ("GET", f"/api/finetune/tasks/t1/metrics?after_seq={INT64_MAX + 1}", "after_seq"),
        ("GET", "/api/finetune/tasks/t1/metrics?limit=0", "limit"),
        ("GET", f"/api/finetune/tasks/t1/logs/stream?after_seq={INT64_MAX + 1}", "after_seq"),
        ("GET", f"/api/finetune/tasks/t1/events/stream?after_seq={INT64_MAX + 1}", "after_seq"),
        ("GET", "/api/finetune/tasks/t1/logs/stream?after_seq=-1", "after_seq"),
    ],
)
def test_bad_parameters_are_400(client, auth, rpc_calls, method, url, field):
    err = bad_input(client, auth, rpc_calls, method, url, field)
    assert field.strip("\\") in err["message"]


@pytest.mark.parametrize("route", ["logs/stream", "events/stream"])
@pytest.mark.parametrize("value", [str(INT64_MAX + 1), "-1", "abc", "1.5"])
def test_bad_last_event_id_is_400_before_streaming(client, auth, rpc_calls, route, value):
    url = f"/api/finetune/tasks/t1/{route}"
    err = assert_error(client.get(url, headers={**auth, "last-event-id": value}), 400, "invalid_argument", "Last-Event-ID")
    assert "Last-Event-ID" in err["message"]
    assert rpc_calls == [WHOAMI]


@pytest.mark.parametrize(
    "url",
    [f"/api/finetune/tasks?offset={INT32_MAX}", f"/api/finetune/tasks/t1/logs?after_seq={INT64_MAX}",
     f"/api/finetune/tasks/t1/logs?before_seq={INT64_MAX}", f"/api/finetune/tasks/t1/metrics?after_seq={INT64_MAX}"],
)
def test_largest_values_in_range_reach_the_control_plane(client, auth, url):
    resp = client.get(url, headers=auth)
    assert resp.status_code in (200, 404), resp.text  # 404: no task t1; never a 500
    if resp.status_code == 404:
        assert resp.json()["error"]["field"] == "task_id"


def test_last_event_id_at_the_top_of_the_range_is_accepted(client, auth):
    # Unknown task: the one GetTask before streaming answers; the header itself was fine.
    resp = client.get("/api/finetune/tasks/t1/logs/stream", headers={**auth, "last-event-id": str(INT64_MAX)})
    assert_error(resp, 404, "not_found", "task_id")


@pytest.mark.parametrize(
    "url",
    ["/api/finetune/tasks/t1/logs/stream?access_token=abc", "/api/finetune/tasks/t1/events/stream?access_token=abc",
     "/api/finetune/tasks?access_token=abc", "/api/auth/me?limit=1&access_token="],
)
def test_a_token_in_the_url_is_refused(client, auth, rpc_calls, url):
    err = bad_input(client, auth, rpc_calls, "GET", url, "access_token")
    assert "Authorization" in err["message"]


def test_a_token_in_the_url_of_a_public_route_is_refused_too(client, rpc_calls):
    err = assert_error(client.get("/api/health?access_token=abc"), 400, "invalid_argument", "access_token")
    assert "Authorization" in err["message"]
    assert rpc_calls == []


@pytest.mark.parametrize("path", ["/api/users/\ud800", "/api/users/a\udcff"])
def test_a_server_that_decodes_to_surrogates_and_sends_no_raw_path(app, path):
    """Some ASGI servers leave lone surrogates in scope["path"] (and raw_path is optional): still a 400."""
    from gateway.errors import ApiError
    from gateway.raw_params import check_raw_parameters

    from gateway.auth_routes import router

    route = next(r for r in router.routes if r.path == "/api/users/{username}")
    scope = {"type": "http", "method": "DELETE", "path": path, "query_string": b"", "headers": [], "route": route}
    with pytest.raises(ApiError) as info:
        check_raw_parameters(Request(scope))
    assert (info.value.status, info.value.field) == (400, "username")


def test_an_ordinary_replacement_character_is_just_text(client, auth):
    # %EF%BF%BD is valid UTF-8 (U+FFFD): an unknown task, not bad encoding.
    assert_error(client.get("/api/finetune/tasks/%EF%BF%BD", headers=auth), 404, "not_found", "task_id")


# --- authentication comes first ------------------------------------------------------------------------------------

# One bad input per kind of check, on protected routes: each must be a 401 without a token, with no gRPC call.
BAD_INPUTS = [
    ("POST", "/api/finetune/start", {"content": b'{"type": 1 "config": {}}'}),
    ("POST", "/api/finetune/start", {"content": b'{"type": "sft", "config": {"learning_rate": Infinity}}'}),
    ("POST", "/api/finetune/start", {"content": b'{"type": "sft", "config": ' + b"[" * 5000 + b"]" * 5000 + b"}"}),
    ("POST", "/api/finetune/start", {"content": b"x" * (2 * 1024 * 1024)}),
    ("POST", "/api/finetune/validate", {"json": {"type": "sft"}}),
    ("POST", "/api/finetune/templates", {"content": b'{"name": "\\ud800", "type": "sft", "config": {}}'}),
    ("POST", "/api/finetune/tasks/t1/resume", {"content": b'{"checkpoint": 3}'}),
    ("POST", "/api/users", {"json": {"username": "x"}}),
    ("DELETE", "/api/users/%ED%A0%80", {}),
    ("GET", f"/api/finetune/tasks?offset={INT32_MAX + 1}", {}),
    ("GET", "/api/finetune/tasks?type=%ED%A0%80", {}),
    ("GET", "/api/finetune/tasks?limit=abc", {}),
    ("GET", f"/api/finetune/tasks/t1/logs?after_seq={INT64_MAX + 1}", {}),
    ("GET", "/api/finetune/tasks/t1/logs/stream?access_token=abc", {}),
    ("GET", "/api/finetune/tasks/t1/events/stream", {"headers": {"last-event-id": "x"}}),
    ("DELETE", "/api/finetune/templates/%00", {}),
    ("POST", "/api/finetune/datasets", {"content": b"not multipart", "headers": {"content-type": "text/plain"}}),
    ("GET", "/api/finetune/datasets?type=%00", {}),
    ("GET", "/api/finetune/tasks/t1/artifacts/a/%ED%A0%80", {}),
    ("POST", "/api/finetune/tasks/t1/export", {"content": b'{"merge_lora": 1}'}),
    ("GET", "/api/nope", {}),
]


# No credential, or none that could even travel as gRPC metadata (non-ASCII, control characters, kilobytes).
NOT_A_BEARER_TOKEN = [None, b"", b"Bearer", b"Bearer   ", b"Basic YWRtaW46eA==", b"token-without-scheme",
                      b"Bearer tok\xe9n", b"Bearer a\x01b", b"Bearer a b", b"Bearer " + b"x" * 5000]


@pytest.mark.parametrize(("method", "url", "kwargs"), BAD_INPUTS)
@pytest.mark.parametrize("authorization", NOT_A_BEARER_TOKEN)
def test_no_bearer_token_is_401_before_input_and_without_a_call(client, rpc_calls, method, url, kwargs, authorization):
    kwargs = dict(kwargs)
    headers = {k.encode(): v.encode() for k, v in kwargs.pop("headers", {}).items()}
    if authorization is not None:
        headers[b"authorization"] = authorization
    resp = client.request(method, url, headers=headers, **kwargs)
    err = assert_error(resp, 401, "unauthenticated", None)
    assert "Bearer" in err["message"] and resp.headers["www-authenticate"] == "Bearer"
    assert rpc_calls == []


def test_every_protected_route_is_401_without_a_token_and_without_a_call(client, rpc_calls):
    paths = client.get("/openapi.json").json()["paths"]
    checked = 0
    for path, methods in paths.items():
        for method in methods:
            if path in ("/api/health", "/api/auth/login"):
                continue
            url = re.sub(r"\{[^}]+\}", "x", path)
            assert_error(client.request(method.upper(), url), 401, "unauthenticated", None)
            checked += 1
    assert checked >= 16
    assert rpc_calls == []


# An oversized body is refused before anything reads it, token or not (413, below); an unknown route is a 404.
CHECKED_BAD_INPUTS = [b for b in BAD_INPUTS if b[1] != "/api/nope" and len(b[2].get("content", b"")) < 1024 * 1024]


@pytest.mark.parametrize(("method", "url", "kwargs"), CHECKED_BAD_INPUTS)
def test_an_invalid_token_with_bad_input_is_401_after_one_whoami(client, rpc_calls, method, url, kwargs):
    kwargs = dict(kwargs)
    headers = {**kwargs.pop("headers", {}), "authorization": "Bearer not-a-real-token"}
    assert_error(client.request(method, url, headers=headers, **kwargs), 401, "unauthenticated", None)
    assert rpc_calls == [WHOAMI]


def test_an_invalid_token_with_valid_input_is_the_control_planes_401(client, rpc_calls):
    assert_error(client.get("/api/finetune/tasks", headers={"authorization": "Bearer nope"}), 401, "unauthenticated", None)
    assert rpc_calls == ["ListTasks"]


@pytest.mark.parametrize("authorization", NOT_A_BEARER_TOKEN[1:])
def test_a_malformed_authorization_header_on_public_routes_is_not_forwarded(client, control_plane, rpc_calls,
                                                                           authorization):
    headers = {b"authorization": authorization}
    assert client.get("/api/health", headers=headers).status_code == 200
    login = {"username": "admin", "password": control_plane.admin_password}
    assert client.post("/api/auth/login", json=login, headers=headers).status_code == 200
    assert rpc_calls == ["GetSystemHealth", "AuthService.Login"]
    assert all("authorization" not in m for m in rpc_calls.metadata)


def test_bad_input_on_a_public_route_needs_no_token_check(client, rpc_calls):
    resp = client.post("/api/auth/login", json={"username": "admin"}, headers={"authorization": "Bearer whatever"})
    assert_error(resp, 400, "invalid_argument", "password")
    assert rpc_calls == []


def test_docs_and_openapi_are_public(client):
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200


def test_every_call_names_the_client_address(client, auth, rpc_calls):
    client.get("/api/finetune/tasks", headers=auth)
    client.get("/api/finetune/tasks?limit=0", headers=auth)
    client.get("/api/health")
    assert rpc_calls == ["ListTasks", WHOAMI, "GetSystemHealth"]
    # TestClient's client is "testclient"; over real HTTP see test_gateway_server.py.
    assert [m[CLIENT_ADDRESS_KEY] for m in rpc_calls.metadata] == ["testclient"] * 3
    assert [m.get("authorization") for m in rpc_calls.metadata] == [auth["authorization"]] * 2 + [None]


# --- request body size ---------------------------------------------------------------------------------------------


def test_a_5_mb_login_body_is_413(client, rpc_calls):
    body = json.dumps({"username": "admin", "password": "x" * 5_000_000})
    err = assert_error(client.post("/api/auth/login", content=body), 413, "payload_too_large", None)
    assert "1048576" in err["message"]
    assert rpc_calls == []


@pytest.mark.parametrize("authorization", ["Bearer not-a-real-token", None])
def test_an_oversized_body_with_a_token_is_413_without_a_call(client, auth, rpc_calls, authorization):
    headers = {"authorization": authorization} if authorization else auth
    resp = client.post("/api/finetune/start", content=b"x" * (2 * 1024 * 1024), headers=headers)
    assert_error(resp, 413, "payload_too_large", None)
    assert rpc_calls == []


def test_a_streamed_body_over_the_limit_is_413(client, auth, rpc_calls):
    def chunks():  # no Content-Length: sent chunked, counted as it arrives
        yield b'{"type": "sft", "config": {"x": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}}'

    assert_error(client.post("/api/finetune/start", content=chunks(), headers=auth), 413, "payload_too_large", None)
    assert rpc_calls == []


def test_a_body_just_under_the_limit_is_read(client, auth, rpc_calls):
    raw = json.dumps({"type": "sft", "config": {"x": "y" * (1024 * 1024 - 100)}}).encode()
    assert len(raw) <= 1024 * 1024
    assert client.post("/api/finetune/start", content=raw, headers=auth).status_code == 400  # the control plane's
    assert rpc_calls == ["StartTask"]


def test_the_limit_is_a_setting_and_a_route_can_take_more(control_plane, monkeypatch):
    monkeypatch.setenv("BUGAGARIC_GATEWAY_MAX_BODY_BYTES", "1000")
    settings = GatewaySettings(control_plane_address=control_plane.address)
    assert settings.gateway_max_body_bytes == 1000
    assert GatewaySettings.model_fields["gateway_max_body_bytes"].default == 1024 * 1024
    small = create_app(settings)

    uploads = APIRouter(prefix="/api/test")  # included like the gateway's own routers

    @uploads.post("/upload")
    @max_body_bytes(50_000)  # how a route opts into a larger body
    async def upload(request: Request) -> dict:
        return {"size": len(await request.body())}

    small.include_router(uploads)

    headers = {"authorization": "Bearer any"}  # the route calls nothing: only the size matters
    with TestClient(small) as c:
        assert_error(c.post("/api/auth/login", content=b"x" * 1001), 413, "payload_too_large", None)
        assert c.post("/api/test/upload", content=b"x" * 40_000, headers=headers).json() == {"size": 40_000}
        assert c.post("/api/test/upload", content=iter([b"x" * 20_000] * 2), headers=headers).json() == {"size": 40_000}
        assert_error(c.post("/api/test/upload", content=b"x" * 50_001, headers=headers), 413, "payload_too_large", None)
        assert_error(c.post("/api/test/upload", content=iter([b"x" * 20_000] * 3), headers=headers), 413,
                     "payload_too_large", None)


# --- control plane down ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dead_app():
    return create_app(GatewaySettings(control_plane_address=f"127.0.0.1:{free_port()}", grpc_timeout_seconds=3))


@pytest.fixture(scope="module")
def dead_client(dead_app):
    with TestClient(dead_app) as c:
        yield c


DEAD_AUTH = {"authorization": "Bearer some-token"}


def test_valid_start_with_control_plane_down_is_503(dead_app, dead_client, monkeypatch):
    calls = spy_on(dead_app, monkeypatch)
    resp = dead_client.post("/api/finetune/start", json={"type": "sft", "config": {"epochs": 1}}, headers=DEAD_AUTH)
    assert_error(resp, 503, "unavailable", None)
    assert calls == ["StartTask"]


@pytest.mark.parametrize(
    ("method", "url", "kwargs"),
    [("POST", "/api/finetune/start", {"content": b"{"}), ("GET", "/api/finetune/tasks?limit=0", {}),
     ("GET", "/api/finetune/tasks/t1/logs/stream?access_token=x", {})],
)
def test_bad_input_with_control_plane_down_is_503(dead_app, dead_client, monkeypatch, method, url, kwargs):
    calls = spy_on(dead_app, monkeypatch)
    assert_error(dead_client.request(method, url, headers=DEAD_AUTH, **kwargs), 503, "unavailable", None)
    assert calls == [WHOAMI]


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/api/finetune/tasks"),
        ("GET", "/api/finetune/tasks?status=running&type=sft&limit=500&offset=0"),
        ("GET", "/api/finetune/tasks/t1"),
        ("GET", "/api/finetune/tasks/t1/logs?limit=100"),
        ("GET", "/api/finetune/tasks/t1/metrics"),
        ("GET", "/api/finetune/tasks/t1/logs/stream"),
        ("GET", "/api/finetune/tasks/t1/events/stream"),
        ("DELETE", "/api/finetune/tasks/t1"),
        ("DELETE", "/api/finetune/tasks/t1/delete"),
        ("GET", "/api/finetune/templates"),
        ("GET", "/api/auth/me"),
        ("GET", "/api/finetune/datasets"),
        ("GET", "/api/finetune/datasets/d1"),
        ("DELETE", "/api/finetune/datasets/d1"),
        ("GET", "/api/finetune/models"),
        ("GET", "/api/finetune/tasks/t1/artifacts"),
        ("GET", "/api/finetune/tasks/t1/artifacts/sub/file.bin"),
        ("GET", "/api/finetune/tasks/t1/model"),
        ("POST", "/api/finetune/tasks/t1/export"),
    ],
)
def test_every_route_with_control_plane_down_is_503(dead_client, method, url):
    assert_error(dead_client.request(method, url, headers=DEAD_AUTH), 503, "unavailable", None)


def test_an_upload_with_control_plane_down_is_503(dead_client):
    body = (b'--b\r\nContent-Disposition: form-data; name="type"\r\n\r\nsft\r\n--b\r\nContent-Disposition: form-data; '
            b'name="file"; filename="a.jsonl"\r\n\r\n{}\r\n--b--\r\n')
    headers = {**DEAD_AUTH, "content-type": "multipart/form-data; boundary=b"}
    assert_error(dead_client.post("/api/finetune/datasets", content=body, headers=headers), 503, "unavailable", None)


def test_no_token_with_control_plane_down_is_still_401(dead_client):
    assert_error(dead_client.get("/api/finetune/tasks"), 401, "unauthenticated", None)


def test_health_with_control_plane_down(dead_client):
    err = assert_error(dead_client.get("/api/health"), 503, "control_plane_unavailable", None)
    assert "control plane" in err["message"]


def test_unknown_route_and_method_use_error_json(client, auth):
    assert_error(client.get("/api/nope", headers=auth), 404, "not_found", None)
    resp = client.put("/api/health")
    assert_error(resp, 405, "method_not_allowed", None)
    assert resp.headers["allow"] == "GET"


def test_unexpected_exception_is_500_json(app, client, auth, monkeypatch):
    async def boom(rpc, request, metadata=(), timeout=None):
        raise RuntimeError("kaput")

    monkeypatch.setattr(app.state.control_plane, "unary", boom)
    assert_error(client.get("/api/finetune/templates", headers=auth), 500, "internal", None)


# --- 429 Retry-After -----------------------------------------------------------------------------------------------


def test_a_429_carries_the_control_planes_retry_after(client):
    user = f"ghost-{secrets.token_hex(4)}"
    answers = [client.post("/api/auth/login", json={"username": user, "password": "x" * 9}) for _ in range(8)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    err = assert_error(limited[0], 429, "resource_exhausted", limited[0].json()["error"]["field"])
    # The login limiter says the delay in its message and in `retry-after` trailing metadata; the header is the latter.
    said = re.search(r"try again in (\d+) s", err["message"])
    assert said, err["message"]
    assert limited[0].headers["retry-after"] == said.group(1)


@pytest.mark.parametrize(("sent", "header"), [("30", "30"), ("2.2", "3"), ("0", "0"), ("soon", None), ("-1", None),
                                              ("inf", None), (None, None)])
def test_retry_after_from_trailing_metadata(sent, header):
    trailing = grpc.aio.Metadata(*([("retry-after", sent)] if sent is not None else []))
    assert retry_after_from_metadata(trailing) == header
    err = api_error_from_rpc(grpc.aio.AioRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(), trailing,
                                                  details="too many failed login attempts"))
    assert err.status == 429 and err.headers == ({"Retry-After": header} if header else {})


def test_retry_after_only_on_429():
    trailing = grpc.aio.Metadata(("retry-after", "5"))
    err = api_error_from_rpc(grpc.aio.AioRpcError(grpc.StatusCode.UNAUTHENTICATED, grpc.aio.Metadata(), trailing))
    assert err.headers == {}


# --- docs ------------------------------------------------------------------------------------------------------------

ROUTES = {
    "/api/health": {"get"},
    "/api/auth/login": {"post"},
    "/api/auth/logout": {"post"},
    "/api/auth/me": {"get"},
    "/api/users": {"get", "post"},
    "/api/users/{username}": {"delete"},
    "/api/auth/keys": {"get", "post"},
    "/api/auth/keys/{key_id}": {"delete"},
    "/api/finetune/start": {"post"},
    "/api/finetune/validate": {"post"},
    "/api/finetune/tasks": {"get"},
    "/api/finetune/tasks/{task_id}": {"get", "delete", "patch"},
    "/api/finetune/tasks/{task_id}/logs": {"get"},
    "/api/finetune/tasks/{task_id}/logs/stream": {"get"},
    "/api/finetune/tasks/{task_id}/events/stream": {"get"},
    "/api/finetune/tasks/{task_id}/metrics": {"get"},
    "/api/finetune/tasks/{task_id}/delete": {"delete"},
    "/api/finetune/tasks/{task_id}/resume": {"post"},
    "/api/finetune/templates": {"get", "post"},
    "/api/finetune/templates/{template_id}": {"delete"},
    "/api/finetune/datasets": {"get", "post"},
    "/api/finetune/datasets/{dataset_id}": {"get", "delete"},
    "/api/finetune/models": {"get"},
    "/api/finetune/tasks/{task_id}/artifacts": {"get"},
    "/api/finetune/tasks/{task_id}/artifacts/{path}": {"get"},
    "/api/finetune/tasks/{task_id}/model": {"get"},
    "/api/finetune/tasks/{task_id}/export": {"post"},
    "/api/finetune/tasks/{task_id}/chat": {"post", "delete"},
    "/api/webhooks": {"get", "post"},
    "/api/webhooks/{webhook_id}": {"delete"},
    "/api/webhooks/{webhook_id}/deliveries": {"get"},
}


def test_openapi_lists_every_route(client):
    spec = client.get("/openapi.json").json()
    assert {p: set(ops) for p, ops in spec["paths"].items()} == ROUTES
    start = spec["paths"]["/api/finetune/start"]["post"]
    schema = start["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:  # the typed API documents the body as a named component
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    assert set(schema["required"]) == {"type", "config"}
    params = {p["name"] for p in spec["paths"]["/api/finetune/tasks"]["get"]["parameters"]}
    assert params == {"status", "type", "limit", "offset", "page_token"}
    offset = next(p for p in spec["paths"]["/api/finetune/tasks"]["get"]["parameters"] if p["name"] == "offset")
    assert offset["schema"]["maximum"] == INT32_MAX


def test_openapi_has_no_token_parameter_and_documents_the_ranges(client):
    spec = client.get("/openapi.json").json()
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            names = {p["name"] for p in operation.get("parameters", [])}
            assert "access_token" not in names, f"{method} {path}"
    for route in ("logs/stream", "events/stream"):
        params = {p["name"]: p for p in spec["paths"][f"/api/finetune/tasks/{{task_id}}/{route}"]["get"]["parameters"]}
        assert set(params) == {"task_id", "after_seq", "Last-Event-ID"}
        assert params["after_seq"]["schema"]["maximum"] == INT64_MAX and params["Last-Event-ID"]["in"] == "header"
    logs = {p["name"]: p for p in spec["paths"]["/api/finetune/tasks/{task_id}/logs"]["get"]["parameters"]}
    assert logs["after_seq"]["schema"]["anyOf"][0]["maximum"] == INT64_MAX
    assert logs["before_seq"]["schema"]["maximum"] == INT64_MAX


def test_docs_page_served(client):
    resp = client.get("/docs")
    assert resp.status_code == 200
    assert "swagger" in resp.text.lower() and "/openapi.json" in resp.text


# --- grpc -> http ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "http"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.FAILED_PRECONDITION, 409),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.UNKNOWN, 500),
        (grpc.StatusCode.UNIMPLEMENTED, 500),
    ],
)
def test_grpc_status_to_http(code, http):
    assert http_status_for(code) == http


def test_grpc_code_names():
    assert grpc_code_name(grpc.StatusCode.INVALID_ARGUMENT) == "invalid_argument"
    assert grpc_code_name(grpc.StatusCode.FAILED_PRECONDITION) == "failed_precondition"
    assert grpc_code_name(grpc.StatusCode.NOT_FOUND) == "not_found"


def test_api_error_from_rpc_reads_field_from_trailing_metadata():
    err = grpc.aio.AioRpcError(
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("other", "x"), ("bugagaric-error-field", "config.learning_rate")),
        details="config.learning_rate: must be > 0",
    )
    api = api_error_from_rpc(err)
    assert (api.status, api.code, api.field, api.message) == (
        400, "invalid_argument", "config.learning_rate", "config.learning_rate: must be > 0"
    )


def test_api_error_from_rpc_without_field():
    err = grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), details="no task x")
    api = api_error_from_rpc(err)
    assert (api.status, api.code, api.field, api.message) == (404, "not_found", None, "no task x")


def test_error_field_from_plain_pairs():
    assert error_field_from_metadata((("bugagaric-error-field", b"type"),)) == "type"
    assert error_field_from_metadata(None) is None


# --- serializers -----------------------------------------------------------------------------------------------------


def _ts(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def test_status_names():
    assert status_name(common_pb2.TASK_STATUS_RUNNING) == "running"
    assert status_name(common_pb2.TASK_STATUS_SUCCEEDED) == "succeeded"
    assert status_name(999) == "unknown"
    assert TASK_STATUSES == ("queued", "starting", "running", "stopping", "succeeded", "failed", "stopped")


def test_task_json_full():
    task = cp.Task(
        id="t1",
        type="sft",
        status=common_pb2.TASK_STATUS_RUNNING,
        config_json='{"epochs": 3, "learning_rate": 2e-05, "warmup_ratio": 1.0, "model": "m"}',
        created_at=_ts(1_700_000_000),
        updated_at=_ts(1_700_000_010, 500_000_000),
        started_at=_ts(1_700_000_005),
        agent_id="agent-1",
        progress=cp.Progress(step=5, total_steps=10, percent=50.0, eta_seconds=12.5, loss=0.25),
        latest_metrics_json='{"step": 5, "loss": 0.25}',
        output_dir="/out/t1",
        last_log_seq=42,
        events=[
            cp.TaskEvent(time=_ts(1_700_000_000), from_status=common_pb2.TASK_STATUS_UNSPECIFIED,
                         to_status=common_pb2.TASK_STATUS_QUEUED, reason="submitted", message="queued"),
        ],
    )
    d = to_json(task_model(task))
    assert list(d) == ["id", "type", "status", "config", "created_at", "updated_at", "started_at", "finished_at",
                       "agent_id", "error", "error_details", "error_reason", "exit_code", "pid", "owner", "progress", "latest_metrics", "output_dir",
                       "last_log_seq", "events", "priority", "queue_position", "devices", "attempt",
                       "max_retries", "checkpoints", "attempts", "validation", "published_model_sha256", "nodes",
                       "gpus_per_node", "node_placements"]
    assert d["published_model_sha256"] == ""
    assert d["status"] == "running"
    assert d["config"] == {"epochs": 3, "learning_rate": 2e-05, "warmup_ratio": 1.0, "model": "m"}
    assert type(d["config"]["epochs"]) is int and type(d["config"]["warmup_ratio"]) is float
    assert d["created_at"] == "2023-11-14T22:13:20Z"
    assert d["updated_at"] == "2023-11-14T22:13:30.500000Z"
    assert d["finished_at"] is None
    assert d["progress"] == {"step": 5, "total_steps": 10, "percent": 50.0, "eta_seconds": 12.5, "epoch": None,
                             "loss": 0.25, "learning_rate": None, "stage": None, "stage_done": 0, "stage_total": 0}
    assert d["latest_metrics"] == {"step": 5, "loss": 0.25}
    assert d["error"] is None and d["error_details"] is None and d["error_reason"] is None and d["exit_code"] == 0
    assert d["last_log_seq"] == 42
    assert d["events"] == [{"time": "2023-11-14T22:13:20Z", "from_status": "unspecified", "to_status": "queued",
                            "reason": "submitted", "message": "queued"}]


def test_task_json_of_an_empty_message():
    d = to_json(task_model(cp.Task(id="t2", type="dpo")))
    assert d["status"] == "unspecified"
    assert d["config"] == {} and d["latest_metrics"] == {}
    assert d["created_at"] is None and d["agent_id"] is None and d["output_dir"] is None
    assert d["progress"]["eta_seconds"] is None and d["progress"]["step"] == 0
    assert d["events"] == []


def test_log_line_and_metric_point():
    line = common_pb2.LogLine(seq=7, time=_ts(0), stream="stderr", text="oops")
    assert to_json(log_line_model(line)) == {"seq": 7, "time": "1970-01-01T00:00:00Z", "stream": "stderr", "text": "oops"}
    point = common_pb2.MetricPoint(seq=3, values_json='{"step": 10, "loss": 1.5, "seq": 99, "accuracy": 1.0}')
    d = to_json(metric_point_model(point))
    assert d == {"seq": 3, "time": None, "step": 10, "loss": 1.5, "accuracy": 1.0}
    assert list(d)[:2] == ["seq", "time"] and type(d["step"]) is int


def test_template_json():
    t = cp.Template(type="sft", name="SFT", description="d", default_config_json='{"epochs": 1}',
                    json_schema='{"type": "object"}', data_example_json='{"query": "q"}')
    assert to_json(template_model(t)) == {"id": None, "builtin": False, "owner": None,
                                   "type": "sft", "name": "SFT", "description": "d", "default_config": {"epochs": 1},
                                   "json_schema": {"type": "object"}, "data_example": {"query": "q"}}
