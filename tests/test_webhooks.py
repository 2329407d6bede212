"""Webhooks: per-user endpoints told when their tasks start and end, signed the Standard Webhooks way (verified here
with the `standardwebhooks` package), retried with backoff, logged for the user, and never lost or sent twice
across a control plane restart. Real receivers on loopback, a real store (SQLite and PostgreSQL), a real control
plane, and a whole stack (control plane, agent, gateway) running real tasks."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from control_plane.models import Task, TaskEvent, WebhookDelivery
from control_plane.state_machine import TaskStatus
from control_plane.task_store import TaskStore
from control_plane.webhook_dispatcher import RetryPolicy, WebhookDispatcher, send_once, signed_headers
from control_plane.webhook_events import EVENT_TYPES, event_payload
from control_plane.webhook_store import DueDelivery, WebhookStore
from control_plane.webhook_urls import UrlRefused, forbidden_address, parse_url
from protos import control_plane_pb2 as cp, control_plane_pb2_grpc
from tests.helpers.live import LiveControlPlane
from tests.helpers.tasks import ENDED, wait_for_task
from tests.helpers.webhook_receiver import Receiver
from tests.helpers.stack import free_port, start_stack

S = TaskStatus


def wait_until(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what} not met after {timeout}s")


def verified(secret: str, request) -> dict:
    """The payload, after standardwebhooks checked the request's signature."""
    return Webhook(secret).verify(request.body, request.headers)


# --- signing, backoff, URLs, payload --------------------------------------------------------------------------------


def test_signed_headers_verify_with_standardwebhooks():
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"type":"task.succeeded"}'
    headers = signed_headers(secret, "msg_1", body, datetime.now(UTC))
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert Webhook(secret).verify(body, headers) == {"type": "task.succeeded"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"type":"task.failed"}', headers)
    with pytest.raises(WebhookVerificationError):  # another secret
        Webhook("whsec_" + "A" * 32).verify(body, headers)


def test_retry_delays_grow_exponentially_up_to_the_cap_and_stop_after_the_last_try():
    policy = RetryPolicy(max_attempts=5, base_seconds=2, max_seconds=10)
    assert [policy.delay_after(n) for n in range(1, 6)] == [2, 4, 8, 10, None]
    assert RetryPolicy(max_attempts=1).delay_after(1) is None


@pytest.mark.parametrize("url, why", [
    ("", "give the receiver"), ("ftp://example.com/x", "only http"), ("example.com/hook", "only http"),
    ("http://user:pw@example.com/", "credentials"), ("http:///nohost", "no host"), ("http://exa mple.com/", "url:"),
    ("https://example.com/" + "a" * 3000, "at most"),
])
def test_bad_urls_are_refused_with_the_reason(url, why):
    with pytest.raises(UrlRefused, match=why):
        parse_url(url)


@pytest.mark.parametrize("address, forbidden", [
    ("127.0.0.1", True), ("10.1.2.3", True), ("172.16.0.1", True), ("192.168.1.1", True), ("169.254.169.254", True),
    ("::1", True), ("fe80::1", True), ("fd00::1", True), ("0.0.0.0", True), ("::ffff:127.0.0.1", True),
    ("224.0.0.1", True), ("100.64.0.1", True), ("93.184.216.34", False), ("2606:4700::1111", False),
])
def test_loopback_private_and_link_local_addresses_are_forbidden(address, forbidden):
    assert forbidden_address(address) is forbidden


def test_payload_names_the_event_and_the_task():
    now = datetime.now(UTC)
    task = Task(id="t1", type="sft", status="failed", owner="alice", config_json="{}", created_at=now, started_at=now,
                finished_at=now, error="CUDA out of memory", exit_code=1, attempt=1)
    event = TaskEvent(task_id="t1", time=now, from_status="running", to_status="failed", reason="trainer_error",
                      message="CUDA out of memory")
    payload = event_payload("task.failed", task, event)
    assert payload["type"] == "task.failed" and payload["timestamp"].endswith("Z")
    assert payload["data"]["task"].items() >= {"id": "t1", "type": "sft", "status": "failed",
                                               "reason": "trainer_error", "error": "CUDA out of memory",
                                               "exit_code": 1}.items()
    datetime.fromisoformat(payload["data"]["task"]["finished_at"])


# --- the outbox in the store (SQLite and PostgreSQL) ----------------------------------------------------------------


def run_task(store: TaskStore, task_id: str, owner: str, end: TaskStatus) -> None:
    store.create_task(task_id, "sft", "{}", "out", owner)
    store.transition(task_id, S.STARTING, "placed", attempt=1)
    store.transition(task_id, S.RUNNING, "started")
    store.transition(task_id, end, "trainer_error" if end == S.FAILED else "done", "boom" if end == S.FAILED else "",
                     **({"error": "boom"} if end == S.FAILED else {}))


def deliveries_of(store: WebhookStore, webhook_id: str, owner: str) -> list:
    return [log.delivery for log in reversed(store.deliveries(webhook_id, owner, 200))]


def test_transitions_write_deliveries_for_the_owners_subscribed_endpoints_only(engine):
    tasks, hooks = TaskStore(engine), WebhookStore(engine)
    every = hooks.create("alice", "http://a.example/all", list(EVENT_TYPES), "")
    ended = hooks.create("alice", "http://a.example/ended", ["task.succeeded", "task.failed"], "")
    bobs = hooks.create("bob", "http://b.example/", list(EVENT_TYPES), "")
    admins = hooks.create("admin", "http://admin.example/", list(EVENT_TYPES), "")
    run_task(tasks, "t-ok", "alice", S.SUCCEEDED)
    run_task(tasks, "t-bad", "alice", S.FAILED)

    rows = deliveries_of(hooks, every.id, "alice")
    assert [(d.task_id, d.event_type) for d in rows] == [
        ("t-ok", "task.started"), ("t-ok", "task.succeeded"), ("t-bad", "task.started"), ("t-bad", "task.failed")]
    assert {d.state for d in rows} == {"pending"} and len({d.id for d in rows}) == 4
    failed = json.loads(rows[-1].payload_json)
    assert failed["type"] == "task.failed"
    assert failed["data"]["task"].items() >= {"id": "t-bad", "status": "failed", "reason": "trainer_error",
                                              "error": "boom"}.items()
    assert failed["data"]["task"]["finished_at"] is not None
    assert [(d.task_id, d.event_type) for d in deliveries_of(hooks, ended.id, "alice")] == [
        ("t-ok", "task.succeeded"), ("t-bad", "task.failed")]
    assert deliveries_of(hooks, bobs.id, "bob") == []
    assert deliveries_of(hooks, admins.id, "admin") == []  # an admin's endpoint gets the admin's own tasks only


def test_a_claimed_delivery_is_tried_once_and_its_tries_are_logged(engine):
    tasks, hooks = TaskStore(engine), WebhookStore(engine)
    endpoint = hooks.create("alice", "http://a.example/", ["task.succeeded"], "")
    run_task(tasks, "t1", "alice", S.SUCCEEDED)
    now = datetime.now(UTC) + timedelta(seconds=1)
    lease = timedelta(seconds=60)
    [due] = hooks.claim_due(now, lease, 10)
    assert due.attempt == 1 and due.url == "http://a.example/" and due.secret == endpoint.secret
    assert hooks.claim_due(now, lease, 10) == []  # claimed: not due again while the lease lasts
    retry_at = now + timedelta(seconds=5)
    assert hooks.record_attempt(due.id, 1, status_code=500, error="HTTP 500", duration_ms=3, delivered=False,
                                next_attempt_at=retry_at)
    assert not hooks.record_attempt(due.id, 1, status_code=500, error="again", duration_ms=3, delivered=False,
                                    next_attempt_at=retry_at)  # the same try is never counted twice
    assert hooks.claim_due(now + timedelta(seconds=4), lease, 10) == []
    [again] = hooks.claim_due(retry_at, lease, 10)
    assert again.id == due.id and again.attempt == 2
    assert hooks.record_attempt(due.id, 2, status_code=204, error="", duration_ms=2, delivered=True,
                                next_attempt_at=None)
    [log] = hooks.deliveries(endpoint.id, "alice", 10)
    assert (log.delivery.state, log.delivery.attempts) == ("delivered", 2)
    assert [(a.number, a.status_code, a.next_attempt_at is not None) for a in log.attempts] == [
        (1, 500, True), (2, 204, False)]
    assert hooks.claim_due(retry_at + timedelta(hours=1), lease, 10) == []
    hooks.delete(endpoint.id, "alice")
    with engine.connect() as conn:
        assert conn.execute(WebhookDelivery.__table__.select()).all() == []


def test_ended_deliveries_leave_the_log_after_the_retention_and_pending_ones_stay(engine):
    tasks, hooks = TaskStore(engine), WebhookStore(engine)
    endpoint = hooks.create("alice", "http://a.example/", list(EVENT_TYPES), "")
    run_task(tasks, "t1", "alice", S.SUCCEEDED)
    now = datetime.now(UTC) + timedelta(seconds=1)
    first, second = hooks.claim_due(now, timedelta(seconds=60), 10)
    for due, delivered in ((first, True), (second, False)):
        hooks.record_attempt(due.id, 1, status_code=200 if delivered else 0, error="" if delivered else "refused",
                             duration_ms=1, delivered=delivered, next_attempt_at=None if delivered else now)
    assert hooks.prune(now - timedelta(days=1)) == 0
    assert hooks.prune(now + timedelta(seconds=5)) == 1
    [kept] = hooks.deliveries(endpoint.id, "alice", 10)
    assert kept.delivery.state == "pending" and len(kept.attempts) == 1


# --- the dispatcher against a real receiver -------------------------------------------------------------------------


def test_dispatcher_retries_until_out_of_tries_then_gives_up(tmp_path):
    from control_plane.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    tasks, hooks = TaskStore(engine), WebhookStore(engine)
    with Receiver() as receiver:
        receiver.plans["/down"] = lambda path, body, seen: 503
        endpoint = hooks.create("alice", receiver.url("/down"), ["task.succeeded"], "")
        run_task(tasks, "t1", "alice", S.SUCCEEDED)

        async def main():
            dispatcher = WebhookDispatcher(hooks, RetryPolicy(3, 0.05, 0.1), timeout_seconds=5, poll_seconds=0.05,
                                           allow_private=True)
            dispatcher.start()
            try:
                while hooks.deliveries(endpoint.id, "alice", 1)[0].delivery.state == "pending":
                    await asyncio.sleep(0.05)
            finally:
                await dispatcher.close()

        asyncio.run(main())
        [log] = hooks.deliveries(endpoint.id, "alice", 1)
        assert (log.delivery.state, log.delivery.attempts) == ("failed", 3)
        assert [(a.status_code, a.error) for a in log.attempts] == [(503, "HTTP 503 Service Unavailable")] * 3
        assert [a.next_attempt_at is None for a in log.attempts] == [False, False, True]
        requests = receiver.at("/down")
        assert len(requests) == 3 and len({r.webhook_id for r in requests}) == 1
        for request in requests:
            assert verified(endpoint.secret, request)["data"]["task"]["id"] == "t1"
    engine.dispose()


def test_a_receiver_on_a_private_address_is_refused_at_send_time_too(tmp_path):
    """An endpoint stored while private addresses were allowed (or whose name now resolves to one) is not called."""
    from control_plane.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    tasks, hooks = TaskStore(engine), WebhookStore(engine)
    with Receiver() as receiver:
        endpoint = hooks.create("alice", receiver.url("/inside"), ["task.succeeded"], "")
        run_task(tasks, "t1", "alice", S.SUCCEEDED)

        async def main():
            dispatcher = WebhookDispatcher(hooks, RetryPolicy(1), timeout_seconds=5, poll_seconds=0.05)
            dispatcher.start()
            try:
                while hooks.deliveries(endpoint.id, "alice", 1)[0].delivery.state == "pending":
                    await asyncio.sleep(0.05)
            finally:
                await dispatcher.close()

        asyncio.run(main())
        [log] = hooks.deliveries(endpoint.id, "alice", 1)
        assert log.delivery.state == "failed"
        assert "loopback, private or link-local" in log.attempts[0].error
        assert receiver.at("/inside") == []
    engine.dispose()


def test_an_https_receiver_is_called_on_the_checked_address_with_its_name_verified():
    """The try connects to the address the URL check passed, yet TLS still checks the certificate against the URL's
    host name (SNI), so pinning the address weakens nothing."""
    import trustme

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    now = datetime.now(UTC)
    with Receiver(server_context) as receiver:

        async def send(url: str):
            due = DueDelivery("msg_tls", "wh_1", url, "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", '{"type":"x"}', 1)
            async with httpx.AsyncClient(verify=client_context, trust_env=False) as client:
                return await send_once(client, due, timeout_seconds=10, allow_private=True, now=now)

        good = asyncio.run(send(receiver.url("/tls", host="localhost")))
        assert (good.status_code, good.error) == (200, "")
        [request] = receiver.at("/tls")
        assert request.headers["host"] == f"localhost:{receiver.url('/').split(':')[2].rstrip('/')}"
        wrong_name = asyncio.run(send(receiver.url("/tls", host="127.0.0.1")))  # the certificate names localhost
        assert wrong_name.status_code == 0 and "certificate" in wrong_name.error.lower()
        assert len(receiver.at("/tls")) == 1


# --- the control plane refuses private URLs unless allowed ----------------------------------------------------------


@pytest.fixture(scope="module")
def strict_plane(tmp_path_factory):
    running = LiveControlPlane(tmp_path_factory.mktemp("webhooks-strict")).start()
    yield running
    running.stop()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "http://localhost/hook", "http://10.0.0.5/hook", "http://169.254.169.254/latest",
    "http://[::1]:9000/", "https://192.168.1.10/hook",
])
def test_private_urls_are_refused_without_the_setting(strict_plane, url):
    with grpc.insecure_channel(strict_plane.address) as channel:
        auth = control_plane_pb2_grpc.AuthServiceStub(channel)
        token = auth.Login(cp.LoginRequest(username="admin", password=strict_plane.admin_password)).token
        stub = control_plane_pb2_grpc.WebhookServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreateWebhook(cp.CreateWebhookRequest(url=url), metadata=(("authorization", f"Bearer {token}"),))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "loopback, private or link-local" in refused.value.details()
    assert dict(refused.value.trailing_metadata())["bugagaric-error-field"] == "url"


# --- a whole stack running real tasks -------------------------------------------------------------------------------

STACK_ENV = {
    "BUGAGARIC_TRAINER_PLUGINS": "tests.helpers.line_trainer",  # a real trainer process that starts in well under 1 s
    "BUGAGARIC_WEBHOOK_ALLOW_PRIVATE_URLS": "1",  # the receiver is on loopback
    "BUGAGARIC_WEBHOOK_BACKOFF_BASE_SECONDS": "0.3",
    "BUGAGARIC_WEBHOOK_BACKOFF_MAX_SECONDS": "1.5",
    "BUGAGARIC_WEBHOOK_MAX_ATTEMPTS": "40",  # room for a control plane restart between two tries
    "BUGAGARIC_WEBHOOK_POLL_SECONDS": "0.2",
    "BUGAGARIC_WEBHOOK_TIMEOUT_SECONDS": "5",
}
STATUS_EVENTS = {"running": "task.started", "succeeded": "task.succeeded", "failed": "task.failed",
                 "stopped": "task.stopped"}


@pytest.fixture(scope="module")
def receiver():
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = start_stack(tmp_path_factory.mktemp("webhooks"), slots=3, extra_env=STACK_ENV)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(stack):
    """username -> an httpx client logged in as that user."""
    clients = {}
    for name in ("alice", "bob"):
        token = stack.create_user(name, f"{name}-password-1")
        clients[name] = httpx.Client(base_url=stack.base_url, headers={"authorization": f"Bearer {token}"},
                                     timeout=30)
    yield clients
    for client in clients.values():
        client.close()


def add_endpoint(client: httpx.Client, url: str, events: list[str] | None = None) -> dict:
    body = {"url": url, **({"events": events} if events is not None else {})}
    response = client.post("/api/webhooks", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def submit(client: httpx.Client, **config) -> str:
    response = client.post("/api/finetune/start", json={"type": "line-test", "config": config})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def delivery_log(client: httpx.Client, webhook_id: str) -> list[dict]:
    try:
        response = client.get(f"/api/webhooks/{webhook_id}/deliveries", params={"limit": 200})
    except httpx.HTTPError:
        return []  # the control plane restarting
    return response.json()["deliveries"] if response.status_code == 200 else []


def all_delivered(client: httpx.Client, webhook_id: str, count: int) -> list[dict]:
    log = delivery_log(client, webhook_id)
    return log if len(log) == count and all(d["state"] == "delivered" for d in log) else []


def test_every_event_of_real_tasks_reaches_its_owners_endpoint_once_signed(stack, api, receiver):
    alice, bob = api["alice"], api["bob"]
    mine = add_endpoint(alice, receiver.url("/alice"))
    theirs = add_endpoint(bob, receiver.url("/bob"))
    assert mine["secret"].startswith("whsec_") and mine["events"] == list(EVENT_TYPES)
    ok = submit(alice, lines=3)
    bad = submit(alice, lines=1, exit_code=3)
    held = submit(alice, lines=1, hold=120)
    wait_for_task(alice, held, lambda t: t["status"] == "running")
    assert alice.delete(f"/api/finetune/tasks/{held}").status_code == 200
    ended = {task_id: wait_for_task(alice, task_id, lambda t: t["status"] in ENDED) for task_id in (ok, bad, held)}
    assert [ended[t]["status"] for t in (ok, bad, held)] == ["succeeded", "failed", "stopped"]
    # What the receiver must see: each task's webhook-worthy transitions, as the task's own event list records them.
    expected = {task_id: [STATUS_EVENTS[e["to_status"]] for e in task["events"] if e["to_status"] in STATUS_EVENTS]
                for task_id, task in ended.items()}
    assert expected[ok] == ["task.started", "task.succeeded"]
    assert expected[held] == ["task.started", "task.stopped"]
    assert expected[bad][-1] == "task.failed"
    log = wait_until(lambda: all_delivered(alice, mine["id"], sum(map(len, expected.values()))),
                     what="every delivery made")

    requests = receiver.at("/alice")
    assert all(r.status == 200 for r in requests)
    assert len({r.webhook_id for r in requests}) == len(requests) == len(log)  # each event once
    received: dict[str, list[str]] = {}
    for request in requests:
        payload = verified(mine["secret"], request)
        assert payload["type"] == STATUS_EVENTS[payload["data"]["task"]["status"]]
        received.setdefault(payload["data"]["task"]["id"], []).append(payload["type"])
    assert {task_id: sorted(types) for task_id, types in received.items()} == {
        task_id: sorted(types) for task_id, types in expected.items()}
    failure = next(r.payload for r in requests if r.payload["type"] == "task.failed")
    assert failure["data"]["task"]["error"] and failure["data"]["task"]["reason"]
    assert {d["id"] for d in log} == {r.webhook_id for r in requests}
    # Nobody else's endpoint heard of alice's tasks, nor may bob read or delete alice's endpoint.
    assert receiver.at("/bob") == [] and delivery_log(bob, theirs["id"]) == []
    assert bob.get(f"/api/webhooks/{mine['id']}/deliveries").status_code == 404
    assert bob.delete(f"/api/webhooks/{mine['id']}").status_code == 404
    assert [w["id"] for w in bob.get("/api/webhooks").json()["webhooks"]] == [theirs["id"]]
    listed = alice.get("/api/webhooks").json()["webhooks"]
    assert [w["id"] for w in listed] == [mine["id"]] and "secret" not in listed[0]
    for client, endpoint in ((alice, mine), (bob, theirs)):
        assert client.delete(f"/api/webhooks/{endpoint['id']}").json() == {"deleted": endpoint["id"]}


def test_a_failing_receiver_gets_the_event_on_a_later_try_and_the_log_shows_every_try(stack, api, receiver):
    alice = api["alice"]
    receiver.plans["/flaky"] = lambda path, body, seen: 500 if seen < 2 else 200
    endpoint = add_endpoint(alice, receiver.url("/flaky"), ["task.succeeded"])
    task_id = submit(alice, lines=2)
    [delivery] = wait_until(lambda: all_delivered(alice, endpoint["id"], 1), what="the delivery made")

    requests = receiver.at("/flaky")
    assert [r.status for r in requests] == [500, 500, 200]
    assert len({r.webhook_id for r in requests}) == 1 and len({r.body for r in requests}) == 1
    for request in requests:
        assert verified(endpoint["secret"], request)["data"]["task"]["id"] == task_id
    assert delivery["id"] == requests[0].webhook_id
    assert (delivery["event_type"], delivery["task_id"], delivery["attempts"]) == ("task.succeeded", task_id, 3)
    tries = delivery["attempt_log"]
    assert [(t["number"], t["status_code"]) for t in tries] == [(1, 500), (2, 500), (3, 200)]
    assert [t["error"] for t in tries] == ["HTTP 500 Internal Server Error"] * 2 + [None]
    assert [t["next_attempt_at"] is not None for t in tries] == [True, True, False]
    assert all(isinstance(t["duration_ms"], int) and t["time"] for t in tries)
    assert delivery["payload"]["data"]["task"]["status"] == "succeeded"
    alice.delete(f"/api/webhooks/{endpoint['id']}")


def test_a_control_plane_restart_during_a_pending_retry_still_delivers_once(stack, api, receiver):
    alice = api["alice"]
    gate = {"open": False}

    def plan(path, body, seen):
        return 200 if body["type"] == "task.started" or gate["open"] else 503

    receiver.plans["/restart"] = plan
    endpoint = add_endpoint(alice, receiver.url("/restart"))
    task_id = submit(alice, lines=2)
    wait_for_task(alice, task_id, lambda t: t["status"] in ENDED)

    def retry_pending():
        log = {d["event_type"]: d for d in delivery_log(alice, endpoint["id"])}
        started, ended = log.get("task.started"), log.get("task.succeeded")
        return (started and started["state"] == "delivered" and ended and ended["state"] == "pending"
                and ended["attempts"] >= 1)

    wait_until(retry_pending, what="a retry pending")
    stack.kill("control_plane", signal.SIGKILL)
    gate["open"] = True
    stack.restart("control_plane")
    stack.wait_healthy()
    log = wait_until(lambda: all_delivered(alice, endpoint["id"], 2), timeout=90, what="both deliveries made")

    requests = receiver.at("/restart")
    answered = [r for r in requests if r.status == 200]
    assert sorted(r.payload["type"] for r in answered) == ["task.started", "task.succeeded"]  # each once
    assert len({r.webhook_id for r in answered}) == 2
    succeeded = [r for r in requests if r.payload["type"] == "task.succeeded"]
    assert len({r.webhook_id for r in succeeded}) == 1 and [r.status for r in succeeded][-1] == 200
    for request in requests:
        verified(endpoint["secret"], request)
    by_type = {d["event_type"]: d for d in log}
    assert by_type["task.succeeded"]["attempts"] == len(succeeded)
    assert [t["status_code"] for t in by_type["task.succeeded"]["attempt_log"]][-1] == 200
    alice.delete(f"/api/webhooks/{endpoint['id']}")


@pytest.mark.parametrize("body, field", [
    ({}, "url"),
    ({"url": 5}, "url"),
    ({"url": "ftp://example.com/hook"}, "url"),
    ({"url": "not a url"}, "url"),
    ({"url": "http://user:secret@example.com/hook"}, "url"),
    ({"url": "http://does-not-exist.invalid/hook"}, "url"),
    ({"url": "http://127.0.0.1/hook", "events": ["task.bogus"]}, "events"),
    ({"url": "http://127.0.0.1/hook", "events": "task.started"}, "events"),
    ({"url": "http://127.0.0.1/hook", "events": [1]}, "events"),
    ({"url": "http://127.0.0.1/hook", "description": "x" * 600}, "description"),
    ({"url": "http://127.0.0.1/hook", "secret": "mine"}, "secret"),
])
def test_bad_webhook_input_is_a_400_naming_the_field(api, body, field):
    response = api["alice"].post("/api/webhooks", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field


def test_a_delivery_log_query_checks_its_limit_and_the_endpoint(api, receiver):
    alice = api["alice"]
    endpoint = add_endpoint(alice, receiver.url("/limits"), ["task.failed"])
    for limit in (0, 201, -1):
        response = alice.get(f"/api/webhooks/{endpoint['id']}/deliveries", params={"limit": limit})
        assert response.status_code == 400 and response.json()["error"]["field"] == "limit"
    assert alice.get("/api/webhooks/wh_nope/deliveries").status_code == 404
    assert alice.delete("/api/webhooks/wh_nope").json()["error"]["field"] == "webhook_id"
    assert alice.delete(f"/api/webhooks/{endpoint['id']}").status_code == 200
    assert alice.get(f"/api/webhooks/{endpoint['id']}/deliveries").status_code == 404


def test_a_deleted_users_webhooks_go_with_them(stack, receiver):
    admin = httpx.Client(base_url=stack.base_url, headers={"authorization": f"Bearer {stack.admin_token}"}, timeout=30)
    with admin:
        carol = httpx.Client(base_url=stack.base_url, timeout=30,
                             headers={"authorization": f"Bearer {stack.create_user('carol', 'carol-password-1')}"})
        with carol:
            add_endpoint(carol, receiver.url("/carol"))
        assert admin.delete("/api/users/carol").status_code == 200
        again = stack.create_user("carol", "carol-password-2")
        with httpx.Client(base_url=stack.base_url, headers={"authorization": f"Bearer {again}"}, timeout=30) as carol:
            assert carol.get("/api/webhooks").json() == {"webhooks": []}  # the new carol inherits nothing


def readme_receiver() -> str:
    """The receiver example of the README's "Webhooks" section, as printed there."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Webhooks", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n# receiver.py\n", 1)[1].split("```", 1)[0]


def test_the_readme_receiver_verifies_and_prints_each_event(stack, api, tmp_path):
    alice = api["alice"]
    port = free_port()
    endpoint = add_endpoint(alice, f"http://127.0.0.1:{port}/", ["task.succeeded"])
    code = readme_receiver()
    assert '"whsec_..."' in code and "9000" in code
    script = tmp_path / "receiver.py"
    script.write_text(code.replace('"whsec_..."', repr(endpoint["secret"])).replace('"0.0.0.0", 9000',
                                                                                  f'"127.0.0.1", {port}'))
    output = tmp_path / "receiver.out"
    with open(output, "wb") as out:
        process = subprocess.Popen([sys.executable, str(script)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _listening(port), what="the README receiver listening")
        task_id = submit(alice, lines=1)
        [delivery] = wait_until(lambda: all_delivered(alice, endpoint["id"], 1), what="the delivery made")
        assert delivery["attempt_log"][-1]["status_code"] == 204
        assert output.read_text().split()[:3] == ["task.succeeded", task_id, "succeeded"]
    finally:
        process.terminate()
        process.wait(timeout=10)
        alice.delete(f"/api/webhooks/{endpoint['id']}")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
