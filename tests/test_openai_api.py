"""The OpenAI-compatible fine-tuning API (gateway/openai_api), driven by the real `openai` Python package against a
running system (control plane, agent, gateway as processes): upload a chat file, train a supervised job on the tiny
Llama while following its events, list its checkpoints, cancel another job, page through the jobs, create a dpo job
from an OpenAI preference file, and OpenAI's error shape for the ways a request can be wrong. The walk-through is
printed (pytest -s) for the closing note."""

from __future__ import annotations

import io
import json
import shutil
import time

import httpx
import openai
import pytest
from openai import OpenAI

from tests.helpers.stack import REPO_ROOT, start_stack

TOPICS = [("apple", "red"), ("sky", "blue"), ("grass", "green"), ("snow", "white"), ("sun", "yellow"),
          ("coal", "black"), ("lemon", "yellow"), ("cherry", "red")]


def chat_rows(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"What colour is the {topic}?"},
                          {"role": "assistant", "content": f"The {topic} is {colour}."}]}
            for topic, colour in (TOPICS[i % len(TOPICS)] for i in range(n))]


def preference_rows(n: int) -> list[dict]:
    return [{"input": {"messages": [{"role": "user", "content": f"What colour is the {topic}?"}]},
             "preferred_output": [{"role": "assistant", "content": f"The {topic} is {colour}."}],
             "non_preferred_output": [{"role": "assistant", "content": "the answer is what colour is"}]}
            for topic, colour in (TOPICS[i % len(TOPICS)] for i in range(n))]


def jsonl(rows: list) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def wait_until(check, what: str, timeout: float = 300.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while (value := check()) is None or value is False:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
    return value


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_llama_dir):
    workspace = tmp_path_factory.mktemp("openai-api")
    shutil.copytree(tiny_llama_dir, workspace / "models" / "tiny-llama")
    running = start_stack(workspace, slots=2)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api_key(stack) -> str:
    """An API key with the submit scope (POST /api/auth/keys), as a CI job or a service would hold."""
    response = httpx.post(f"{stack.base_url}/api/auth/keys", json={"name": "openai-client", "scopes": ["submit"]},
                          headers={"authorization": f"Bearer {stack.admin_token}"}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["key"]


@pytest.fixture(scope="module")
def client(stack, api_key):
    # The OpenAI port starts with the gateway process; it answers 401 to a request without a key once it is up.
    wait_until(lambda: _answers(f"{stack.openai_base_url}/files"), "the OpenAI-compatible API", timeout=60)
    with OpenAI(base_url=stack.openai_base_url, api_key=api_key, max_retries=0, timeout=60) as openai_client:
        yield openai_client


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 401
    except httpx.TransportError:
        return False


def upload(client: OpenAI, name: str, rows: list):
    return client.files.create(file=(name, io.BytesIO(jsonl(rows)), "application/jsonl"), purpose="fine-tune")


def _error(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def test_walk_through_upload_train_follow_events_and_checkpoints(client):
    print("\n--- OpenAI client walk-through (openai", openai.__version__, ") ---")
    data = jsonl(chat_rows(16))
    file = upload(client, "colours.jsonl", chat_rows(16))
    print(f"client.files.create(purpose='fine-tune') -> {file.model_dump_json()}")
    assert file.id.startswith("file-") and file.object == "file" and file.purpose == "fine-tune"
    assert (file.bytes, file.filename, file.status) == (len(data), "colours.jsonl", "processed")
    assert client.files.retrieve(file.id).id == file.id
    assert file.id in [f.id for f in client.files.list()]

    # 16 rows in batches of 4: 4 steps, a checkpoint every 2 (save_steps: one of the platform's own config keys,
    # taken beside OpenAI's hyperparameters).
    job = client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=file.id, seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 100, "save_steps": 2, "max_length": 64}}},
    )
    print(f"client.fine_tuning.jobs.create(...) -> id={job.id} status={job.status} model={job.model} "
          f"hyperparameters={job.hyperparameters.model_dump()} method={job.method.type}")
    assert job.id.startswith("ftjob-") and job.object == "fine_tuning.job"
    assert job.status in ("validating_files", "queued", "running")
    assert (job.model, job.training_file, job.seed, job.method.type) == ("tiny-llama", file.id, 7, "supervised")
    assert job.hyperparameters.n_epochs == 1 and job.hyperparameters.batch_size == 4
    assert job.hyperparameters.learning_rate_multiplier == pytest.approx(100)
    assert job.method.supervised.hyperparameters.batch_size == 4

    seen: set[str] = set()

    def follow():
        # Newest first, as OpenAI lists them: print the new ones oldest first.
        new = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data if e.id not in seen]
        for event in reversed(new):
            seen.add(event.id)
            print(f"  event {event.created_at} [{event.level}] {event.type}: {event.message[:110]}")
        current = client.fine_tuning.jobs.retrieve(job.id)
        return current if current.status in ("succeeded", "failed", "cancelled") else None

    print(f"client.fine_tuning.jobs.list_events({job.id!r}) while it runs:")
    done = wait_until(follow, "the supervised job", timeout=400, every=1.0)
    print(f"client.fine_tuning.jobs.retrieve -> status={done.status} fine_tuned_model={done.fine_tuned_model} "
          f"trained_tokens={done.trained_tokens} finished_at={done.finished_at}")
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"task:{job.id.removeprefix('ftjob-')}" and done.finished_at >= done.created_at
    assert done.error is None and done.estimated_finish is None

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))  # the iterator pages with `after`
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)
    metrics = [e for e in events if e.type == "metrics"]
    assert len(metrics) == 4 and all(e.data["train_loss"] is not None for e in metrics)  # no held-out rows
    assert events[0].type == "message" and events[0].message.startswith("Job succeeded")
    first_page = client.fine_tuning.jobs.list_events(job.id, limit=3)
    second_page = client.fine_tuning.jobs.list_events(job.id, limit=3, after=first_page.data[-1].id)
    assert first_page.has_more and [e.id for e in first_page.data + second_page.data] == [e.id for e in events[:6]]

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    print(f"client.fine_tuning.jobs.checkpoints.list({job.id!r}):")
    for checkpoint in checkpoints:
        print(f"  {checkpoint.id} step={checkpoint.step_number} train_loss={checkpoint.metrics.train_loss} "
              f"checkpoint={checkpoint.fine_tuned_model_checkpoint}")
    assert [c.step_number for c in checkpoints] == [4, 2]  # newest first
    assert all(c.fine_tuning_job_id == job.id and c.metrics.train_loss is not None for c in checkpoints)
    assert checkpoints[0].fine_tuned_model_checkpoint.endswith("checkpoint-4")


def test_cancel_a_job(client):
    file = upload(client, "cancel.jsonl", chat_rows(8))
    # Long enough that it is still queued or running when cancelled.
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=file.id,
                                         hyperparameters={"n_epochs": 500, "batch_size": 2})
    assert job.method.type == "supervised" and job.hyperparameters.n_epochs == 500  # the legacy top-level form
    wait_until(lambda: client.fine_tuning.jobs.retrieve(job.id).status == "running", "the job to run")
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    print(f"\nclient.fine_tuning.jobs.cancel({job.id!r}) -> status={cancelled.status}")
    assert cancelled.status in ("running", "cancelled")  # stopping (the trainer saves a checkpoint) shows as running
    final = wait_until(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status != "running" and j, "the stop")
    print(f"client.fine_tuning.jobs.retrieve({job.id!r}) -> status={final.status}")
    assert final.status == "cancelled" and final.fine_tuned_model is None
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert any(e.message.startswith("Job cancelled (user_stop)") for e in events)
    with pytest.raises(openai.ConflictError) as info:
        client.fine_tuning.jobs.cancel(job.id)
    assert _error(info.value)["type"] == "invalid_request_error"


def test_dpo_job_from_an_openai_preference_file(client):
    """The dpo trainer takes OpenAI's preference rows as they were uploaded: the job trains to the end."""
    file = upload(client, "preferences.jsonl", preference_rows(8))
    job = client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=file.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.25, "n_epochs": 1, "batch_size": 4,
                                                            "max_length": 64}}})
    print(f"\ndpo: client.fine_tuning.jobs.create(method dpo) -> {job.id} status={job.status} "
          f"hyperparameters={job.hyperparameters.model_dump()}")
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.25
    assert job.hyperparameters.learning_rate_multiplier == pytest.approx(1.0)  # "auto": the dpo default
    done = wait_until(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in
                      ("succeeded", "failed", "cancelled") and j, "the dpo job", timeout=400)
    print(f"dpo: client.fine_tuning.jobs.retrieve -> status={done.status}")
    assert done.status == "succeeded", done.error
    steps = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data if e.type == "metrics"]
    training = [e for e in steps if e.data["train_loss"] is not None]
    assert training and all("rewards/accuracies" in e.data for e in training)  # DPO's own figures
    # The held-out pairs' evaluation at the end (eval_ratio, dpo's default 0.1) is a metrics event too.
    assert any(e.data.get("valid_loss") is not None and "validation loss" in e.message for e in steps)


def test_list_jobs_pages_with_a_cursor(client):
    file = upload(client, "paging.jsonl", chat_rows(4))
    made = [client.fine_tuning.jobs.create(model="tiny-llama", training_file=file.id,
                                           hyperparameters={"n_epochs": 1}) for _ in range(3)]
    for job in made:
        client.fine_tuning.jobs.cancel(job.id)
    first = client.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in first.data] == [made[2].id, made[1].id] and first.has_more
    second = client.fine_tuning.jobs.list(limit=2, after=first.data[-1].id)
    assert second.data[0].id == made[0].id
    every = [j.id for j in client.fine_tuning.jobs.list(limit=2)]  # the iterator follows `after` to the end
    assert every[:3] == [made[2].id, made[1].id, made[0].id] and len(every) == len(set(every)) >= 6
    assert client.fine_tuning.jobs.list(limit=100).has_more is False


def test_errors_have_openai_s_shape(client, stack):
    with pytest.raises(openai.NotFoundError) as info:
        client.fine_tuning.jobs.retrieve("ftjob-does-not-exist")
    error = _error(info.value)
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "fine_tuning_job_not_found",
                                                              "fine_tuning_job_id")
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.list_events("ftjob-nope")
    with pytest.raises(openai.NotFoundError) as info:
        client.files.retrieve("file-nope")
    assert _error(info.value)["code"] == "file_not_found"
    with pytest.raises(openai.NotFoundError) as info:  # a cursor must be a job the caller may see
        client.fine_tuning.jobs.list(after="ftjob-nope")
    assert _error(info.value)["param"] == "after"

    chat = upload(client, "chat.jsonl", chat_rows(4))
    for hyperparameters, param, words in (
        ({"n_epochs": 0}, "method.supervised.hyperparameters.n_epochs", "positive integer"),
        ({"batch_size": "many"}, "method.supervised.hyperparameters.batch_size", "positive integer"),
        ({"learning_rate_multiplier": -1}, "method.supervised.hyperparameters.learning_rate_multiplier", "greater than 0"),
        ({"beta": 0.1}, "method.supervised.hyperparameters.beta", "unknown hyperparameter"),
        ({"max_length": 2}, "method.supervised.hyperparameters.max_length", "max_length"),  # the control plane's check
    ):
        with pytest.raises(openai.BadRequestError) as info:
            client.fine_tuning.jobs.create(model="tiny-llama", training_file=chat.id, method={
                "type": "supervised", "supervised": {"hyperparameters": hyperparameters}})
        error = _error(info.value)
        assert error["type"] == "invalid_request_error" and error["param"] == param, error
        assert words in error["message"], error

    preferences = upload(client, "prefs.jsonl", preference_rows(4))
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=preferences.id)
    error = _error(info.value)
    assert (error["param"], error["code"]) == ("training_file", "invalid_file_format"), error
    assert "needs chat rows" in error["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=chat.id, method={"type": "dpo"})
    assert _error(info.value)["param"] == "training_file"
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file="file-nope")
    assert _error(info.value)["param"] == "training_file"
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=chat.id, method={"type": "reinforcement"})
    assert _error(info.value)["param"] == "method.type"

    # A bad row: named by line, and nothing is kept.
    before = len(list(client.files.list()))
    with pytest.raises(openai.BadRequestError) as info:
        upload(client, "broken.jsonl", [*chat_rows(2), {"messages": [{"role": "user", "content": "no answer"}]}])
    error = _error(info.value)
    assert error["param"] == "file" and "line 3" in error["message"], error
    assert len(list(client.files.list())) == before
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("x.jsonl", io.BytesIO(jsonl(chat_rows(1))), "application/jsonl"), purpose="batch")
    assert _error(info.value)["param"] == "purpose"

    # No key: 401 before anything else; a wrong key: 401 from the control plane.
    anonymous = httpx.get(f"{stack.openai_base_url}/fine_tuning/jobs", timeout=30)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "missing_api_key"
    with OpenAI(base_url=stack.openai_base_url, api_key="not-a-key", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError) as info:
            wrong.fine_tuning.jobs.list()
        assert _error(info.value)["type"] == "invalid_request_error"
        with pytest.raises(openai.AuthenticationError):  # a bad body from a wrong key is still a 401
            wrong.fine_tuning.jobs.create(model="x", training_file="y", hyperparameters={"n_epochs": 0})

    deleted = client.files.delete(chat.id)
    assert deleted.deleted and deleted.id == chat.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(chat.id)


# --- the request mapping alone (no stack) ---------------------------------------------------------------------------

SFT_SCHEMA = {"properties": {"model_name_or_path": {}, "train_data_path": {}, "eval_data_path": {}, "seed": {},
                             "learning_rate": {"default": 5e-5}, "num_train_epochs": {"default": 3},
                             "per_device_train_batch_size": {"default": 4}, "save_steps": {}}}


def test_hyperparameters_map_to_the_type_s_config():
    from gateway.openai_api.job_request import parse_job_request

    job = parse_job_request({"model": "m", "training_file": "file-abc", "validation_file": "file-def", "seed": 3,
                             "hyperparameters": {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 2,
                                                 "save_steps": 5}})
    assert (job.method, job.task_type) == ("supervised", "sft")
    assert job.config(SFT_SCHEMA) == {"model_name_or_path": "m", "train_data_path": "dataset:abc",
                                      "eval_data_path": "dataset:def", "seed": 3, "num_train_epochs": 2,
                                      "learning_rate": pytest.approx(1e-4), "save_steps": 5}
    assert job.params["num_train_epochs"] == "hyperparameters.n_epochs"
    assert job.params["eval_data_path"] == "validation_file"


@pytest.mark.parametrize(("body", "param"), [
    ({"training_file": "f"}, "model"),
    ({"model": "m", "training_file": "f", "extra": 1}, "extra"),
    ({"model": "m", "training_file": "f", "suffix": "no spaces please"}, "suffix"),
    ({"model": "m", "training_file": "f", "seed": -1}, "seed"),
    ({"model": "m", "training_file": "f", "integrations": [{"type": "wandb"}]}, "integrations"),
    ({"model": "m", "training_file": "f", "method": {"type": "dpo", "supervised": {}}}, "method.supervised"),
    ({"model": "m", "training_file": "f", "method": {"type": "dpo"}, "hyperparameters": {"n_epochs": 1}},
     "hyperparameters"),
    ({"model": "m", "training_file": "f", "method": {"type": "supervised", "supervised": {"epochs": 1}}},
     "method.supervised.epochs"),
])
def test_a_bad_job_request_names_its_param(body, param):
    from gateway.openai_api.errors import OpenAIError
    from gateway.openai_api.job_request import parse_job_request

    with pytest.raises(OpenAIError) as info:
        parse_job_request(body)
    assert (info.value.status, info.value.param) == (400, param), info.value.message


@pytest.mark.parametrize(("hyperparameters", "param"), [
    ({"n_epochs": 1.5}, "hyperparameters.n_epochs"),
    ({"n_epochs": True}, "hyperparameters.n_epochs"),
    ({"num_train_epochs": 2}, "hyperparameters.num_train_epochs"),  # OpenAI's name covers it
    ({"train_data_path": "x"}, "hyperparameters.train_data_path"),  # paths come from the body's own fields
    ({"seed": 1}, "hyperparameters.seed"),
])
def test_a_bad_hyperparameter_names_its_param(hyperparameters, param):
    from gateway.openai_api.errors import OpenAIError
    from gateway.openai_api.job_request import parse_job_request

    job = parse_job_request({"model": "m", "training_file": "f", "hyperparameters": hyperparameters})
    with pytest.raises(OpenAIError) as info:
        job.config(SFT_SCHEMA)
    assert info.value.param == param, info.value.message


def test_the_upload_tells_the_type_by_the_first_row():
    from gateway.openai_api.file_upload import task_type_of

    assert task_type_of(jsonl(chat_rows(2))) == "sft"
    assert task_type_of(jsonl(preference_rows(2))) == "dpo"
    assert task_type_of(b"\n\n" + jsonl(preference_rows(1))) == "dpo"
    assert task_type_of(json.dumps(preference_rows(2), indent=1).encode()) == "dpo"  # a .json list
    assert task_type_of(b'{"query": "q", "chosen": {"text": "a"}}\n') == "sft"  # the seed's rows
    assert task_type_of(b"not json") == "sft"  # the sft validator names the line


def test_the_readme_example_runs(stack, api_key, client):
    """The README's python example, pointed at this system (and its tiny model), runs as written."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## OpenAI-compatible API", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    for written, here in (("http://localhost:18081/v1", stack.openai_base_url), ("bgk_...", api_key),
                          ("Qwen2.5-0.5B-Instruct", "tiny-llama")):
        assert written in code
        code = code.replace(written, here)
    scope: dict = {}
    exec(compile(code, "README.md (OpenAI-compatible API)", "exec"), scope)
    assert scope["job"].id.startswith("ftjob-")
    status = wait_until(lambda: (j := client.fine_tuning.jobs.retrieve(scope["job"].id)).status in
                        ("cancelled", "succeeded") and j.status, "the README's job to end")
    assert status in ("cancelled", "succeeded")



def _start_gateway(tmp_path, openai_port: str):
    """`python -m gateway` (no control plane: it starts all the same), once its REST port answers."""
    import os
    import subprocess
    import sys

    from tests.helpers.stack import free_port

    rest_port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "BUGAGARIC_GATEWAY_PORT": str(rest_port),
           "BUGAGARIC_OPENAI_PORT": openai_port, "BUGAGARIC_CONTROL_PLANE_ADDRESS": f"127.0.0.1:{free_port()}"}
    log_path = tmp_path / f"gateway-{openai_port or 'empty'}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=tmp_path, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    wait_until(lambda: process.poll() is not None or _up(f"http://127.0.0.1:{rest_port}/api/health"),
               "the gateway", timeout=60, every=0.2)
    assert process.poll() is None, log_path.read_text(errors="replace")
    return process, log_path


def _up(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
        return True
    except httpx.TransportError:
        return False


def test_python_m_gateway_serves_both_apps_and_one_signal_stops_both(tmp_path):
    import signal

    from tests.helpers.stack import free_port

    port = free_port()
    process, log_path = _start_gateway(tmp_path, str(port))
    try:
        wait_until(lambda: _up(f"http://127.0.0.1:{port}/v1/files"), "the OpenAI port", timeout=30, every=0.2)
        answer = httpx.get(f"http://127.0.0.1:{port}/v1/fine_tuning/jobs", timeout=10)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "missing_api_key"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert log_path.read_text(errors="replace").count("Uvicorn running on") == 2


@pytest.mark.parametrize("setting", ["0", ""])
def test_the_openai_port_can_be_turned_off(tmp_path, setting):
    from gateway.settings import GatewaySettings

    assert GatewaySettings(openai_port=setting).openai_port == 0
    process, log_path = _start_gateway(tmp_path, setting)
    process.terminate()
    process.wait(30)
    assert log_path.read_text(errors="replace").count("Uvicorn running on") == 1  # the REST gateway alone
