"""SSE streams end cleanly: a failure once streaming has begun (token revoked by logout, task deleted, control plane
gone) is one `event: error` with the error JSON, then the end of a well-formed response — never a broken one.

A real control plane without agents keeps a submitted task queued, so its streams stay open until something ends them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from gateway import stream_routes
from tests.helpers.tiny_models import write_sft_rows
from tests.helpers.live import LiveControlPlane, start_gateway

CONFIG = {"model_name_or_path": "models/tiny-llama", "train_data_path": "data/train.jsonl", "max_steps": 1}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    path = tmp_path_factory.mktemp("gateway-streams")
    write_sft_rows(path / "data" / "train.jsonl", 8)
    return path


@pytest.fixture(scope="module")
def control_plane(workspace):
    running = LiveControlPlane(workspace).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def gateway(control_plane):
    running = start_gateway(control_plane)
    yield running
    running.stop()


def login(gateway, control_plane) -> dict[str, str]:
    """A fresh admin token (each test may revoke its own)."""
    reply = httpx.post(f"{gateway.base_url}/api/auth/login",
                       json={"username": "admin", "password": control_plane.admin_password}, timeout=30)
    assert reply.status_code == 200, reply.text
    return {"authorization": f"Bearer {reply.json()['token']}"}


def queued_task(gateway, auth) -> str:
    reply = httpx.post(f"{gateway.base_url}/api/finetune/start", json={"type": "sft", "config": CONFIG}, headers=auth,
                       timeout=60)
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


def sse_events(response: httpx.Response) -> Iterator[dict[str, str]]:
    """The events of a text/event-stream response, as {field: value} (comments such as pings skipped)."""
    event: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")
    if event:
        yield event


def read_stream(gateway, url: str, auth: dict[str, str], after_first=None, timeout: float = 30) -> list[dict[str, str]]:
    """Reads the stream to its end; `after_first()` runs once the first event has arrived."""
    events = []
    started = time.monotonic()
    with httpx.stream("GET", f"{gateway.base_url}{url}", headers=auth, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in sse_events(response):
            events.append(event)
            if len(events) == 1 and after_first is not None:
                after_first()
            assert time.monotonic() - started < timeout, events
    return events


def assert_ends_with_error(events: list[dict[str, str]], code: str) -> dict:
    assert events and events[-1].get("event") == "error", events
    assert all(e.get("event") not in ("end", "error") for e in events[:-1]), events
    body = json.loads(events[-1]["data"])
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


def test_events_stream_ends_with_an_error_event_when_the_token_is_revoked(gateway, control_plane):
    auth = login(gateway, control_plane)
    task_id = queued_task(gateway, auth)

    def log_out():
        assert httpx.post(f"{gateway.base_url}/api/auth/logout", headers=auth, timeout=30).json() == {"ok": True}

    events = read_stream(gateway, f"/api/finetune/tasks/{task_id}/events/stream", auth, after_first=log_out)
    assert events[0]["event"] == "task" and json.loads(events[0]["data"])["status"] == "queued"
    assert_ends_with_error(events, "unauthenticated")


def test_logs_stream_ends_with_an_error_event_when_the_token_is_revoked(gateway, control_plane):
    # The log stream is one long gRPC call; the control plane re-checks its token every couple of seconds.
    auth = login(gateway, control_plane)
    task_id = queued_task(gateway, auth)
    url = f"{gateway.base_url}/api/finetune/tasks/{task_id}/logs/stream"
    events = []
    with httpx.stream("GET", url, headers=auth, timeout=30) as response:
        assert response.status_code == 200
        assert httpx.post(f"{gateway.base_url}/api/auth/logout", headers=auth, timeout=30).status_code == 200
        started = time.monotonic()
        events = list(sse_events(response))
        assert time.monotonic() - started < 15
    assert_ends_with_error(events, "unauthenticated")


def test_events_stream_ends_with_an_error_event_when_the_task_is_deleted(gateway, control_plane, monkeypatch):
    monkeypatch.setattr(stream_routes, "POLL_SECONDS", 3.0)  # room to stop and delete between two polls
    auth = login(gateway, control_plane)
    task_id = queued_task(gateway, auth)

    def stop_and_delete():
        base = f"{gateway.base_url}/api/finetune/tasks/{task_id}"
        assert httpx.delete(base, headers=auth, timeout=30).json()["status"] == "stopped"
        assert httpx.delete(f"{base}/delete", headers=auth, timeout=30).json() == {"deleted": task_id}

    events = read_stream(gateway, f"/api/finetune/tasks/{task_id}/events/stream", auth, after_first=stop_and_delete)
    err = assert_ends_with_error(events, "not_found")
    assert task_id in err["message"]


def test_a_finished_stream_still_ends_with_end(gateway, control_plane):
    auth = login(gateway, control_plane)
    task_id = queued_task(gateway, auth)
    assert httpx.delete(f"{gateway.base_url}/api/finetune/tasks/{task_id}", headers=auth, timeout=30).status_code == 200
    events = read_stream(gateway, f"/api/finetune/tasks/{task_id}/events/stream", auth)
    assert [e.get("event") for e in events] == ["task", "end"]
    logs = read_stream(gateway, f"/api/finetune/tasks/{task_id}/logs/stream", auth)
    assert logs[-1]["event"] == "end"


@pytest.mark.parametrize("route", ["logs/stream", "events/stream"])
def test_streams_end_with_an_error_event_when_the_control_plane_goes_away(tmp_path, route):
    write_sft_rows(tmp_path / "data" / "train.jsonl", 8)
    own = LiveControlPlane(tmp_path).start()
    gateway = start_gateway(own)
    try:
        auth = login(gateway, own)
        task_id = queued_task(gateway, auth)
        url = f"{gateway.base_url}/api/finetune/tasks/{task_id}/{route}"
        with httpx.stream("GET", url, headers=auth, timeout=30) as response:
            assert response.status_code == 200
            stream = sse_events(response)
            # The events stream starts with the task; the log stream of a queued task sends nothing until it ends.
            events = [next(stream)] if route == "events/stream" else []
            own.stop()
            events += list(stream)
        code = json.loads(events[-1]["data"])["error"]["code"] if events else None
        assert code in ("unavailable", "cancelled"), events
        assert_ends_with_error(events, code)
    finally:
        gateway.stop()
        own.stop()
