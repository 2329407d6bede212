"""Fuzzing the REST API from its own OpenAPI document (schemathesis): no request may get a 5xx, and every answer
is what the document says (status, content type, and the JSON's schema: the response models are truthful).

Valid and invalid parameters, headers and bodies, with the admin's token (so admin routes are reached) and without
one. Bounded and repeatable: a fixed number of examples per operation, derandomized. The whole system runs as real
processes with a task running and one finished, and half the generated task ids are replaced by theirs, so the task
routes are exercised on real tasks, not only on unknown ids. `BUGAGARIC_FUZZ_EXAMPLES=500` for a deeper run by hand.
"""

from __future__ import annotations

import os
import time
import zlib
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.app import create_app
from tests.helpers.stack import start_stack

EXAMPLES_PER_OPERATION = int(os.environ.get("BUGAGARIC_FUZZ_EXAMPLES", "40"))
LOGOUT = "/api/auth/logout"
STREAMS = ("/logs/stream", "/events/stream")

statuses: Counter = Counter()
server_errors: list[str] = []
real_task_requests: Counter = Counter()  # status codes of the requests that named a real task
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # An agent is part of it: without one a dry run is rightly a 503 ("no live agent").
    running = start_stack(tmp_path_factory.mktemp("fuzz"), slots=2,
                          extra_env={"BUGAGARIC_TRAINER_PLUGINS": "tests.helpers.line_trainer"})
    yield running
    running.stop()
    print(f"\nfuzz: {sum(statuses.values())} requests, {len(server_errors)} answered 5xx; by status: "
          f"{dict(sorted(statuses.items()))}; on the real tasks: {dict(sorted(real_task_requests.items()))}")


@pytest.fixture(scope="module")
def real_tasks(stack) -> dict[str, str]:
    """A task that keeps running through the run, and one that has finished (its streams end at once)."""
    with httpx.Client(base_url=stack.base_url, timeout=30, headers={"authorization": f"Bearer {stack.admin_token}"}) as api:
        running = api.post("/api/finetune/start", json={"type": "line-test", "config": {"lines": 100000, "sleep": 0.05}})
        finished = api.post("/api/finetune/start", json={"type": "line-test", "config": {"lines": 3}})
        assert running.status_code == finished.status_code == 201, (running.text, finished.text)
        ids = {"running": running.json()["id"], "finished": finished.json()["id"]}
        deadline = time.monotonic() + 60
        while api.get(f"/api/finetune/tasks/{ids['finished']}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    return ids


@pytest.fixture(scope="module")
def logout_tokens(stack) -> list[str]:
    """Logging out with the token every other case uses would end the run's access: each logout case spends one of
    these (made up front, before the fuzzer's wrong logins back this address off)."""
    return [stack.login(stack.admin_user, stack.admin_password) for _ in range(4 * EXAMPLES_PER_OPERATION)]


# The document the gateway serves (tests/test_gateway_input.py checks it is); the cases go to the live server.
schema = schemathesis.openapi.from_dict(create_app().openapi())
schema.config.generation.update(modes=list(GenerationMode), max_examples=EXAMPLES_PER_OPERATION, allow_x00=True)
FUZZ = settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


def call(case, stack, real_tasks, headers: dict[str, str]) -> None:
    if "task_id" in (case.path_parameters or {}):
        generated = str(case.path_parameters["task_id"])
        if zlib.crc32(generated.encode("utf-8", "surrogatepass")) % 2 == 0:  # deterministic: half are real
            case.path_parameters["task_id"] = real_tasks["finished" if case.path.endswith(STREAMS) else "running"]
    response = case.call(base_url=stack.base_url, headers=headers, timeout=60)
    statuses[response.status_code] += 1
    if case.path_parameters and case.path_parameters.get("task_id") in real_tasks.values():
        real_task_requests[response.status_code] += 1
    if response.status_code >= 500:
        server_errors.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}")
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    case.validate_response(response, checks=CONFORMANCE)


@schema.parametrize()
@FUZZ
def test_no_input_with_a_token_is_a_server_error(case, stack, real_tasks, logout_tokens):
    token = logout_tokens.pop() if case.path == LOGOUT and logout_tokens else stack.admin_token
    call(case, stack, real_tasks, {"authorization": f"Bearer {token}"})


@schema.parametrize()
@FUZZ
def test_no_anonymous_input_is_a_server_error(case, stack, real_tasks):
    call(case, stack, real_tasks, {})


def test_the_run_exercised_the_api():
    """After the fuzz above (file order): it must have made requests, reached real tasks, and met no 5xx."""
    assert sum(statuses.values()) >= 500, statuses
    assert not server_errors, server_errors[:5]
    assert real_task_requests[200] >= 10, real_task_requests  # real tasks were read, streamed, stopped ...
