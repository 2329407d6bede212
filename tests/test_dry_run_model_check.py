"""The dry run and the submit check look for the model on the agent that would run it (models live on the agents;
the control plane does not share their disk), and a bad data line is told once. A real stack: control plane, one
agent, gateway, in subprocesses."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from tests.helpers.stack import start_stack
from tests.helpers.tiny_models import write_sft_rows


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_llama_dir):
    workspace = tmp_path_factory.mktemp("model-check")
    shutil.copytree(tiny_llama_dir, workspace / "models" / "tiny-llama")
    (workspace / "models" / "no-config").mkdir()  # a directory, but not a model
    write_sft_rows(workspace / "data" / "train.jsonl", 12)
    rows = (workspace / "data" / "train.jsonl").read_text().splitlines()
    rows[6] = '{"query": "q?", "chosen": {"text": "a"'  # line 7: cut short
    rows[8] = '{"query": "q?"}'  # line 9: no answer
    (workspace / "data" / "bad.jsonl").write_text("\n".join(rows) + "\n")
    running = start_stack(workspace, slots=1)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(stack):
    with httpx.Client(base_url=stack.base_url, timeout=120, headers={"authorization": f"Bearer {stack.admin_token}"}) as c:
        yield c


def validate(api, **config) -> dict:
    response = api.post("/api/finetune/validate", json={"type": "sft", "config": {
        "model_name_or_path": "models/tiny-llama", "train_data_path": "data/train.jsonl", "max_length": 64, **config}})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(("model", "words"), [
    ("./models/not-there", "neither a model directory there nor a model in its hub cache"),
    ("models/no-config", "a directory without config.json"),
])
def test_a_model_missing_on_the_agent_fails_the_dry_run_naming_the_field_and_the_agent(api, stack, model, words):
    report = validate(api, model_name_or_path=model)
    assert report["ok"] is False and report["agent_id"], report
    error = report["error"]
    assert error["field"] == "model_name_or_path", error
    assert error["message"].startswith("model_name_or_path:") and repr(model) in error["message"], error
    assert f"on agent {report['agent_id']}" in error["message"] and words in error["message"], error
    assert str(stack.workspace) not in error["message"]  # what the user gave, not the agent's layout


def test_the_tiny_model_passes_the_dry_run(api):
    report = validate(api)
    assert report["ok"] is True and report["error"] is None and report["rows"] == 12, report


def test_a_submit_naming_a_missing_model_path_is_refused_before_it_is_queued(api):
    before = api.get("/api/finetune/tasks").json()["total"]
    response = api.post("/api/finetune/start", json={"type": "sft", "config": {
        "model_name_or_path": "./models/not-there", "train_data_path": "data/train.jsonl"}})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == "model_name_or_path" and "'./models/not-there'" in error["message"], error
    assert api.get("/api/finetune/tasks").json()["total"] == before  # no task waits for a device it cannot use


def test_a_bad_json_line_is_one_problem_named_by_file_and_line(api):
    report = validate(api, train_data_path="data/bad.jsonl")
    assert report["ok"] is False
    assert [(p["line"], p["field"]) for p in report["problems"]] == [(7, ""), (9, "chosen")], report["problems"]
    assert report["problems"][0]["message"].startswith("not valid JSON")
    message = report["error"]["message"]
    assert message.startswith("train_data_path: data/bad.jsonl line 7: not valid JSON"), message
    assert "line 2" not in message and "(char" not in message  # no inner position of the json parser's own


def test_an_uploaded_file_with_bad_lines_names_each_line_once(api, stack):
    data = (stack.workspace / "data" / "bad.jsonl").read_bytes()
    response = api.post("/api/finetune/datasets", data={"type": "sft"},
                        files={"file": ("bad.jsonl", data, "application/jsonl")})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    lines = error["message"].splitlines()
    assert len(lines) == 2, lines  # line 7 in the headline, line 9 below it: each problem once
    assert "bad.jsonl line 7: not valid JSON" in lines[0] and "(2 bad lines in all)" in lines[0], lines
    assert lines[1].startswith("line 9: chosen"), lines
    assert sum(text.count("line 7") for text in lines) == 1


def test_a_task_whose_data_fail_on_the_agent_tells_each_problem_once(api):
    response = api.post("/api/finetune/start", json={"type": "sft", "config": {
        "model_name_or_path": "models/tiny-llama", "train_data_path": "data/bad.jsonl"}})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == "train_data_path" and error["message"].count("line 7") == 1, error
    assert json.dumps(error).count("Expecting") == 1
