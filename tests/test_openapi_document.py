"""The gateway's OpenAPI document types the whole API: a response schema for every route, the bearer scheme on every
route that needs a token, clean unique operation ids, and the error JSON (never FastAPI's 422) for the errors. Read
from the document itself, so a route added later is held to the same rules."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from google.protobuf.timestamp_pb2 import Timestamp
from jsonschema_rs import Draft202012Validator  # schemathesis's validator

from gateway import serializers as ser
from gateway.app import create_app
from gateway.authn import is_public
from gateway.settings import GatewaySettings
from protos import common_pb2, control_plane_pb2 as cp

PUBLIC_OPERATIONS = {("get", "/api/health"), ("post", "/api/auth/login")}
JSON = "application/json"
ERROR_REF = "#/components/schemas/ErrorResponse"


@pytest.fixture(scope="module")
def doc() -> dict:
    return create_app(GatewaySettings.model_construct()).openapi()


def operations(doc: dict):
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            yield method, path, operation


def success(operation: dict) -> tuple[str, dict]:
    codes = [code for code in operation["responses"] if code.startswith("2")]
    assert len(codes) == 1, codes
    return codes[0], operation["responses"][codes[0]]


def test_every_route_declares_its_response_schema(doc):
    assert len(list(operations(doc))) >= 30
    schemas = doc["components"]["schemas"]
    for method, path, operation in operations(doc):
        code, response = success(operation)
        content = response.get("content")
        assert content, f"{method} {path}: {code} has no content"
        for media_type, body in content.items():
            if media_type == "text/event-stream":  # each event: its `data` is the JSON of a documented schema
                data = body["itemSchema"]["properties"]["data"]
                assert data["contentMediaType"] == JSON and data["contentSchema"]["anyOf"], f"{method} {path}"
                assert "schema" not in body  # it would have to describe the whole stream
                continue
            schema = body.get("schema")
            assert schema, f"{method} {path}: {media_type} has no schema"
            if media_type == JSON:
                ref = schema.get("$ref", "")
                assert ref.startswith("#/components/schemas/"), f"{method} {path}: untyped JSON {schema}"
                assert schemas[ref.rsplit("/", 1)[1]].get("properties"), f"{method} {path}: {ref} has no fields"
            else:  # a stream or a download says what it is
                assert media_type in {"application/octet-stream", "application/x-tar"}, media_type
                assert schema["type"] == "string"


def test_streams_and_downloads_document_their_media_types(doc):
    paths = doc["paths"]
    for path in ("/api/finetune/tasks/{task_id}/logs/stream", "/api/finetune/tasks/{task_id}/events/stream"):
        assert set(paths[path]["get"]["responses"]["200"]["content"]) == {"text/event-stream"}
    assert set(paths["/api/finetune/tasks/{task_id}/chat"]["post"]["responses"]["200"]["content"]) == {"text/event-stream"}
    assert set(paths["/api/finetune/tasks/{task_id}/model"]["get"]["responses"]["200"]["content"]) == {"application/x-tar"}
    artifact = paths["/api/finetune/tasks/{task_id}/artifacts/{path}"]["get"]["responses"]["200"]["content"]
    assert artifact == {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    # What the events carry, as schemas in the document, for generated clients.
    def payloads(path: str, method: str = "get") -> set[str]:
        item = paths[path][method]["responses"]["200"]["content"]["text/event-stream"]["itemSchema"]
        refs = {ref["$ref"].rsplit("/", 1)[1] for ref in item["properties"]["data"]["contentSchema"]["anyOf"]}
        assert refs <= set(doc["components"]["schemas"]), refs
        return refs
    assert payloads("/api/finetune/tasks/{task_id}/logs/stream") == {"LogLine", "LogStreamEnd", "ErrorResponse"}
    assert payloads("/api/finetune/tasks/{task_id}/events/stream") == {"Task", "MetricPoint", "EventStreamEnd",
                                                                        "ErrorResponse"}
    assert payloads("/api/finetune/tasks/{task_id}/chat", "post") == {"ChatToken", "ChatDone", "ErrorResponse"}


def test_the_bearer_scheme_is_on_every_route_that_needs_a_token(doc):
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearer"]["description"]}
    seen_public = set()
    for method, path, operation in operations(doc):
        if is_public(path):
            seen_public.add((method, path))
            assert "security" not in operation, f"{method} {path} is public"
            assert "401" not in operation["responses"] or (method, path) == ("post", "/api/auth/login")
        else:
            assert operation.get("security") == [{"bearer": []}], f"{method} {path}"
            assert operation["responses"]["401"]["content"][JSON]["schema"] == {"$ref": ERROR_REF}
    assert seen_public == PUBLIC_OPERATIONS


def test_operation_ids_are_clean_unique_and_tagged(doc):
    ids = [operation["operationId"] for _, _, operation in operations(doc)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for method, path, operation in operations(doc):
        assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z0-9]*)*", operation["operationId"]), operation["operationId"]
        assert operation.get("tags"), f"{method} {path} has no tag"
    by_route = {(m, p): o["operationId"] for m, p, o in operations(doc)}
    assert by_route[("get", "/api/finetune/tasks")] == "listTasks"
    assert by_route[("get", "/api/finetune/tasks/{task_id}")] == "getTask"
    assert by_route[("post", "/api/finetune/start")] == "startTask"
    assert by_route[("get", "/api/finetune/tasks/{task_id}/logs/stream")] == "streamTaskLogs"


def test_errors_are_the_error_envelope_never_fastapis_422(doc):
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    envelope = schemas["ErrorResponse"]
    assert envelope["required"] == ["error"]
    detail = schemas[envelope["properties"]["error"]["$ref"].rsplit("/", 1)[1]]
    assert detail["required"] == ["code", "message", "field"]
    assert detail["properties"]["field"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    statuses = set()
    for method, path, operation in operations(doc):
        responses = operation["responses"]
        assert "422" not in responses, f"{method} {path}"
        assert "400" in responses, f"{method} {path}: every route can answer a bad parameter with 400"
        assert "default" in responses, f"{method} {path}"
        for code, response in responses.items():
            if code.startswith("2"):
                continue
            statuses.add(code)
            schema = response["content"][JSON]["schema"]
            refs = [s["$ref"] for s in schema.get("anyOf", [schema])]
            assert ERROR_REF in refs, f"{method} {path} {code}: {schema}"
    assert {"400", "401", "403", "404", "409", "429", "503"} <= statuses


def test_request_bodies_are_typed(doc):
    schemas = doc["components"]["schemas"]
    for method, path, operation in operations(doc):
        body = operation.get("requestBody")
        if body is None:
            continue
        (media_type, content), = body["content"].items()
        if media_type == "multipart/form-data":
            assert content["schema"]["required"] == ["type", "file"]
            continue
        ref = content["schema"]["$ref"]
        schema = schemas[ref.rsplit("/", 1)[1]]
        assert schema["additionalProperties"] is False, f"{method} {path}: the gateway refuses unknown keys"
    login = doc["paths"]["/api/auth/login"]["post"]["requestBody"]["content"][JSON]["schema"]
    assert set(schemas[login["$ref"].rsplit("/", 1)[1]]["required"]) == {"username", "password"}


def test_the_served_document_is_the_same(doc):
    with TestClient(create_app(GatewaySettings.model_construct())) as client:
        assert client.get("/openapi.json").json() == doc


def _validator(doc: dict, name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})


def test_the_serializers_json_is_what_the_document_says(doc):
    """The models are truthful: what the serializers send validates against the document, full and empty."""
    ts = Timestamp(seconds=1_700_000_000)
    full = cp.Task(
        id="t1", type="sft", status=common_pb2.TASK_STATUS_FAILED, config_json='{"epochs": 1}', created_at=ts,
        finished_at=ts, agent_id="a1", error="boom", error_details="Traceback", error_reason="trainer_error",
        exit_code=1, pid=42, owner="alice", progress=cp.Progress(step=1, total_steps=2, percent=50.0, loss=0.5,
                                                                 stage="annotate_short", stage_done=1, stage_total=3),
        latest_metrics_json='{"loss": 0.5}', output_dir="/out", last_log_seq=9, priority=3, queue_position=0,
        devices=[0, 1], attempt=2, max_retries=1,
        events=[cp.TaskEvent(time=ts, from_status=common_pb2.TASK_STATUS_RUNNING,
                             to_status=common_pb2.TASK_STATUS_FAILED, reason="exit", message="failed")],
        checkpoints=[cp.Checkpoint(path="checkpoint-1", step=1, time=ts, attempt=1)],
        attempts=[cp.TaskAttempt(number=1, agent_id="a1", devices=[0], started_at=ts, ended_at=ts,
                                 status=common_pb2.TASK_STATUS_FAILED, reason="exit"), cp.TaskAttempt(number=2)],
        validation=cp.DataValidation(state="passed", rows=10),
    )
    for task in (full, cp.Task(), cp.Task(status=999)):
        _validator(doc, "Task").validate(ser.to_json(ser.task_model(task)))
    point = common_pb2.MetricPoint(seq=3, time=ts, values_json='{"step": 10, "loss": 1.5, "event": "eval"}')
    _validator(doc, "MetricPoint").validate(ser.to_json(ser.metric_point_model(point)))
    _validator(doc, "LogLine").validate(ser.to_json(ser.log_line_model(common_pb2.LogLine(seq=1, text="x"))))
    health = cp.SystemHealth(status="degraded", agents=[cp.AgentInfo(agent_id="a", devices=[common_pb2.Device()])])
    _validator(doc, "SystemHealth").validate(ser.to_json(ser.health_model(health)))
    report = common_pb2.ValidationReport(ok=False, error_message="bad", problems=[common_pb2.DataProblem(line=1)])
    _validator(doc, "ValidationReport").validate(ser.to_json(ser.validation_report_model(report)))
    dataset = cp.Dataset(id="d", stats_json='{"rows": 1}', preview_json=['{"a": 1}', "not json"])
    _validator(doc, "DatasetDetail").validate(ser.to_json(ser.dataset_detail_model(dataset)))
    done = common_pb2.ChatEvent(done=common_pb2.ChatDone(text="hi", ranking=[common_pb2.PassageScore(index=0)]))
    _validator(doc, "ChatDone").validate(ser.to_json(ser.chat_event_model(done), exclude_unset=True))
