"""Gateway input handling with no control plane running, plus serializer and grpc->http mapping unit tests.

Bad input must be a 400 with the error JSON naming the field before any gRPC call; valid input with the
control plane down must be a 503 JSON, never a 500.
"""

from __future__ import annotations

import socket

import grpc
import pytest
from fastapi.testclient import TestClient
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.app import create_app
from gateway.errors import api_error_from_rpc, error_field_from_metadata, grpc_code_name, http_status_for
from gateway.serializers import (
    TASK_STATUSES,
    log_line_to_dict,
    metric_point_to_dict,
    status_name,
    task_to_dict,
    template_to_dict,
)
from gateway.settings import GatewaySettings
from protos import common_pb2, control_plane_pb2 as cp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app():
    settings = GatewaySettings(control_plane_address=f"127.0.0.1:{_free_port()}", grpc_timeout_seconds=3)
    return create_app(settings)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture
def rpc_calls(app, monkeypatch):
    """Records every gRPC call the gateway attempts (and still lets it go to the dead address)."""
    calls: list[str] = []
    cp_client = app.state.control_plane
    original = cp_client.unary

    async def spy(rpc, request, authorization=None, timeout=None):
        calls.append(rpc)
        return await original(rpc, request, authorization, timeout)

    monkeypatch.setattr(cp_client, "unary", spy)
    return calls


def _assert_error(resp, status: int, code: str, field: str | None) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["code"] == code
    assert body["error"]["field"] == field
    assert body["error"]["message"]
    return body["error"]


# --- POST /api/finetune/start body -------------------------------------------------------------------------------


def test_invalid_json_names_position(client, rpc_calls):
    err = _assert_error(
        client.post("/api/finetune/start", content=b'{"type": 1 "config": {}}'), 400, "invalid_argument", None
    )
    assert err["message"] == "request body is not valid JSON: Expecting ',' delimiter: line 1 column 12"
    assert rpc_calls == []


@pytest.mark.parametrize("raw", [b"", b"   ", b"\xff\xfe\x00garbage"])
def test_empty_or_undecodable_body(client, rpc_calls, raw):
    err = _assert_error(client.post("/api/finetune/start", content=raw), 400, "invalid_argument", None)
    assert "not valid" in err["message"]
    assert rpc_calls == []


@pytest.mark.parametrize(
    ("raw", "kind"), [(b"[]", "array"), (b'["sft"]', "array"), (b'"sft"', "string"), (b"null", "null"), (b"3", "number")]
)
def test_body_not_an_object(client, rpc_calls, raw, kind):
    err = _assert_error(client.post("/api/finetune/start", content=raw), 400, "invalid_argument", None)
    assert err["message"] == f"request body must be a JSON object, got {kind}"
    assert rpc_calls == []


@pytest.mark.parametrize(
    "body",
    [{"config": {}}, {"type": "", "config": {}}, {"type": "   ", "config": {}}, {"type": None, "config": {}},
     {"type": 3, "config": {}}, {"type": ["sft"], "config": {}}],
)
def test_missing_or_bad_type(client, rpc_calls, body):
    err = _assert_error(client.post("/api/finetune/start", json=body), 400, "invalid_argument", "type")
    assert "'type'" in err["message"]
    assert rpc_calls == []


@pytest.mark.parametrize(
    "body",
    [{"type": "sft"}, {"type": "sft", "config": None}, {"type": "sft", "config": []},
     {"type": "sft", "config": "{}"}, {"type": "sft", "config": 1}],
)
def test_config_missing_or_not_object(client, rpc_calls, body):
    err = _assert_error(client.post("/api/finetune/start", json=body), 400, "invalid_argument", "config")
    assert "'config'" in err["message"]
    assert rpc_calls == []


def test_unknown_top_level_keys_are_named(client, rpc_calls):
    body = {"type": "sft", "config": {}, "model": "x", "epochs": 3}
    err = _assert_error(client.post("/api/finetune/start", json=body), 400, "invalid_argument", "epochs")
    assert "'epochs'" in err["message"] and "'model'" in err["message"]
    assert rpc_calls == []


def test_typo_in_type_key_reported_as_unknown(client, rpc_calls):
    err = _assert_error(client.post("/api/finetune/start", json={"tpye": "sft", "config": {}}), 400,
                        "invalid_argument", "tpye")
    assert "'tpye'" in err["message"]
    assert rpc_calls == []


# --- query parameters ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/finetune/tasks?limit=abc", "limit"),
        ("/api/finetune/tasks?limit=0", "limit"),
        ("/api/finetune/tasks?limit=501", "limit"),
        ("/api/finetune/tasks?limit=1.5", "limit"),
        ("/api/finetune/tasks?offset=-1", "offset"),
        ("/api/finetune/tasks?offset=x", "offset"),
        ("/api/finetune/tasks?status=bogus", "status"),
        ("/api/finetune/tasks/t1/logs?limit=0", "limit"),
        ("/api/finetune/tasks/t1/logs?limit=abc", "limit"),
        ("/api/finetune/tasks/t1/logs?after_seq=-1", "after_seq"),
        ("/api/finetune/tasks/t1/logs?before_seq=x", "before_seq"),
        ("/api/finetune/tasks/t1/logs?after_seq=5&before_seq=9", "before_seq"),
        ("/api/finetune/tasks/t1/metrics?after_seq=-3", "after_seq"),
        ("/api/finetune/tasks/t1/metrics?limit=0", "limit"),
    ],
)
def test_bad_query_parameters_are_400(client, rpc_calls, url, field):
    err = _assert_error(client.get(url), 400, "invalid_argument", field)
    assert field in err["message"]
    assert rpc_calls == []


# --- control plane down ----------------------------------------------------------------------------------------------


def test_valid_start_with_control_plane_down_is_503(client, rpc_calls):
    resp = client.post("/api/finetune/start", json={"type": "sft", "config": {"epochs": 1}})
    _assert_error(resp, 503, "unavailable", None)
    assert rpc_calls == ["StartTask"]


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/api/finetune/tasks"),
        ("GET", "/api/finetune/tasks?status=running&type=sft&limit=500&offset=0"),
        ("GET", "/api/finetune/tasks/t1"),
        ("GET", "/api/finetune/tasks/t1/logs?limit=100"),
        ("GET", "/api/finetune/tasks/t1/metrics"),
        ("DELETE", "/api/finetune/tasks/t1"),
        ("DELETE", "/api/finetune/tasks/t1/delete"),
        ("GET", "/api/finetune/templates"),
    ],
)
def test_every_route_with_control_plane_down_is_503(client, method, url):
    _assert_error(client.request(method, url), 503, "unavailable", None)


def test_health_with_control_plane_down(client):
    err = _assert_error(client.get("/api/health"), 503, "control_plane_unavailable", None)
    assert "control plane" in err["message"]


def test_unknown_route_and_method_use_error_json(client):
    _assert_error(client.get("/api/nope"), 404, "not_found", None)
    resp = client.put("/api/health")
    _assert_error(resp, 405, "method_not_allowed", None)
    assert resp.headers["allow"] == "GET"


def test_unexpected_exception_is_500_json(app, client, monkeypatch):
    async def boom(rpc, request, authorization=None, timeout=None):
        raise RuntimeError("kaput")

    monkeypatch.setattr(app.state.control_plane, "unary", boom)
    _assert_error(client.get("/api/finetune/templates"), 500, "internal", None)


# --- docs ------------------------------------------------------------------------------------------------------------

ROUTES = {
    "/api/health": {"get"},
    "/api/auth/login": {"post"},
    "/api/auth/logout": {"post"},
    "/api/auth/me": {"get"},
    "/api/users": {"get", "post"},
    "/api/users/{username}": {"delete"},
    "/api/finetune/start": {"post"},
    "/api/finetune/validate": {"post"},
    "/api/finetune/tasks": {"get"},
    "/api/finetune/tasks/{task_id}": {"get", "delete"},
    "/api/finetune/tasks/{task_id}/logs": {"get"},
    "/api/finetune/tasks/{task_id}/logs/stream": {"get"},
    "/api/finetune/tasks/{task_id}/events/stream": {"get"},
    "/api/finetune/tasks/{task_id}/metrics": {"get"},
    "/api/finetune/tasks/{task_id}/delete": {"delete"},
    "/api/finetune/tasks/{task_id}/resume": {"post"},
    "/api/finetune/templates": {"get", "post"},
    "/api/finetune/templates/{template_id}": {"delete"},
}


def test_openapi_lists_every_route(client):
    spec = client.get("/openapi.json").json()
    assert {p: set(ops) for p, ops in spec["paths"].items()} == ROUTES
    start = spec["paths"]["/api/finetune/start"]["post"]
    schema = start["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"type", "config"}
    params = {p["name"] for p in spec["paths"]["/api/finetune/tasks"]["get"]["parameters"]}
    assert params == {"status", "type", "limit", "offset"}


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


def test_task_to_dict_full():
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
    d = task_to_dict(task)
    assert list(d) == ["id", "type", "status", "config", "created_at", "updated_at", "started_at", "finished_at",
                       "agent_id", "error", "error_reason", "exit_code", "pid", "owner", "progress", "latest_metrics", "output_dir",
                       "last_log_seq", "events", "priority", "queue_position", "devices", "attempt",
                       "max_retries", "checkpoints", "attempts"]
    assert d["status"] == "running"
    assert d["config"] == {"epochs": 3, "learning_rate": 2e-05, "warmup_ratio": 1.0, "model": "m"}
    assert type(d["config"]["epochs"]) is int and type(d["config"]["warmup_ratio"]) is float
    assert d["created_at"] == "2023-11-14T22:13:20Z"
    assert d["updated_at"] == "2023-11-14T22:13:30.500000Z"
    assert d["finished_at"] is None
    assert d["progress"] == {"step": 5, "total_steps": 10, "percent": 50.0, "eta_seconds": 12.5, "epoch": None,
                             "loss": 0.25, "learning_rate": None}
    assert d["latest_metrics"] == {"step": 5, "loss": 0.25}
    assert d["error"] is None and d["error_reason"] is None and d["exit_code"] == 0
    assert d["last_log_seq"] == 42
    assert d["events"] == [{"time": "2023-11-14T22:13:20Z", "from_status": "unspecified", "to_status": "queued",
                            "reason": "submitted", "message": "queued"}]


def test_task_to_dict_empty_message():
    d = task_to_dict(cp.Task(id="t2", type="dpo"))
    assert d["status"] == "unspecified"
    assert d["config"] == {} and d["latest_metrics"] == {}
    assert d["created_at"] is None and d["agent_id"] is None and d["output_dir"] is None
    assert d["progress"]["eta_seconds"] is None and d["progress"]["step"] == 0
    assert d["events"] == []


def test_log_line_and_metric_point():
    line = common_pb2.LogLine(seq=7, time=_ts(0), stream="stderr", text="oops")
    assert log_line_to_dict(line) == {"seq": 7, "time": "1970-01-01T00:00:00Z", "stream": "stderr", "text": "oops"}
    point = common_pb2.MetricPoint(seq=3, values_json='{"step": 10, "loss": 1.5, "seq": 99, "accuracy": 1.0}')
    d = metric_point_to_dict(point)
    assert d == {"seq": 3, "time": None, "step": 10, "loss": 1.5, "accuracy": 1.0}
    assert list(d)[:2] == ["seq", "time"] and type(d["step"]) is int


def test_template_to_dict():
    t = cp.Template(type="sft", name="SFT", description="d", default_config_json='{"epochs": 1}',
                    json_schema='{"type": "object"}', data_example_json='{"query": "q"}')
    assert template_to_dict(t) == {"id": None, "builtin": False, "owner": None,
                                   "type": "sft", "name": "SFT", "description": "d", "default_config": {"epochs": 1},
                                   "json_schema": {"type": "object"}, "data_example": {"query": "q"}}
