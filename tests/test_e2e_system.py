"""The seed's REST checklist and a real SFT run, against the whole system running as separate processes:
control plane, one GPU agent and the gateway on free loopback ports; trainers are real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import grpc
import httpx
import pytest

from protos import control_plane_pb2, control_plane_pb2_grpc
from protos.auth import bearer_metadata
from tests.helpers.stack import start_stack
from tests.helpers.tiny_models import write_sft_rows

TERMINAL = {"succeeded", "failed", "stopped"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_llama_dir):
    workspace = tmp_path_factory.mktemp("workspace")
    shutil.copytree(tiny_llama_dir, workspace / "models" / "tiny-llama")
    write_sft_rows(workspace / "data" / "train.jsonl", 48)
    running = start_stack(workspace, slots=3, stop_grace_seconds=5)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(stack):
    """The REST API as the admin."""
    with httpx.Client(base_url=stack.base_url, timeout=30, headers={"authorization": f"Bearer {stack.admin_token}"}) as client:
        yield client


def sft_config(**overrides) -> dict:
    config = {
        "model_name_or_path": "models/tiny-llama",
        "train_data_path": "data/train.jsonl",
        "use_lora": True,
        "learning_rate": 5e-3,
        "num_train_epochs": 4,
        "per_device_train_batch_size": 8,
        "max_length": 64,
    }
    config.update(overrides)
    return config


def start(api: httpx.Client, config: dict, task_type: str = "sft") -> dict:
    response = api.post("/api/finetune/start", json={"type": task_type, "config": config})
    assert response.status_code == 201, response.text
    return response.json()


def wait_for(api: httpx.Client, task_id: str, statuses: set[str], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = api.get(f"/api/finetune/tasks/{task_id}").json()
        if task["status"] in statuses:
            return task
        if task["status"] in TERMINAL:
            raise AssertionError(f"task ended {task['status']} while waiting for {statuses}: {task['error']}")
        time.sleep(0.3)
    raise TimeoutError(f"task {task_id} not in {statuses} after {timeout}s: {task}")


def wait_for_log_lines(api: httpx.Client, task_id: str, count: int, timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = api.get(f"/api/finetune/tasks/{task_id}/logs", params={"limit": 1000}).json()["lines"]
        if len(lines) >= count:
            return lines
        time.sleep(0.3)
    raise TimeoutError(f"fewer than {count} log lines for {task_id}")


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def finished_sft(stack, api):
    """One real SFT run to the end; several tests read it."""
    started = time.monotonic()
    task = start(api, sft_config(output_dir="output/sft-run"))
    done = wait_for(api, task["id"], TERMINAL)
    print(f"\nwhole tiny SFT task, submit to succeeded: {time.monotonic() - started:.1f}s")
    assert done["status"] == "succeeded", f"{done['error']}\n{stack.log('agent')[-3000:]}"
    return done


# --- the seed's checklist ------------------------------------------------------------------------------------------


def test_health_reports_control_plane_and_agent(api):
    body = api.get("/api/health").json()
    assert body["status"] == "ok"
    assert body["control_plane"]["database"] == "ok"
    [agent] = body["agents"]
    assert agent["alive"] and agent["slots"] == 3


def test_health_reports_the_memory_of_the_agents_warm_pool(api):
    # The agent starts its pool beside registering: the reading comes with a heartbeat (every second here).
    deadline = time.monotonic() + 60
    while (memory := api.get("/api/health").json()["agents"][0]["warm_pool_memory_bytes"]) == 0:
        assert time.monotonic() < deadline, "no warm-pool memory reported within 60 s"
        time.sleep(0.5)
    assert 10 * 2**20 < memory < 8 * 2**30  # a Python process with the preloaded modules, not a stray figure


def test_templates_describe_sft(api):
    templates = {t["type"]: t for t in api.get("/api/finetune/templates").json()["templates"]}
    sft = templates["sft"]
    assert sft["description"]
    assert sft["default_config"]["use_lora"] is True and sft["default_config"]["learning_rate"] == 5e-5
    assert "learning_rate" in sft["json_schema"]["properties"]
    assert set(sft["json_schema"]["required"]) >= {"model_name_or_path", "train_data_path"}
    assert "query" in sft["data_example"]


def test_real_sft_run_trains_and_saves_a_loadable_adapter(api, finished_sft, stack):
    task = finished_sft
    assert task["progress"]["percent"] == 100.0 and task["progress"]["total_steps"] > 0
    assert [e["to_status"] for e in task["events"]] == ["queued", "starting", "running", "succeeded"]
    assert task["exit_code"] == 0 and task["finished_at"] and task["started_at"]

    points = api.get(f"/api/finetune/tasks/{task['id']}/metrics").json()["points"]
    losses = [p["loss"] for p in points if "loss" in p and "step" in p]
    assert len(losses) >= 6
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first * 0.8, f"loss did not fall: {losses}"
    assert all({"step", "total_steps", "learning_rate", "eta_seconds"} <= p.keys() for p in points if "loss" in p)

    output_dir = Path(task["output_dir"])
    assert output_dir == stack.workspace / "output" / "sft-run"  # as named: the task's own (claimed at submit)
    assert json.loads((output_dir / ".bugagaric-task.json").read_text()) == {"task_id": task["id"], "owner": "admin"}
    summary = json.loads((output_dir / "training_summary.json").read_text())
    assert summary["final_loss"] < summary["first_loss"]

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(stack.workspace / "models" / "tiny-llama")
    model = PeftModel.from_pretrained(base, output_dir)
    assert any("lora_" in name for name, _ in model.named_parameters())


def test_logs_last_lines_and_paging(api, finished_sft):
    task_id = finished_sft["id"]
    everything = api.get(f"/api/finetune/tasks/{task_id}/logs", params={"limit": 10000}).json()
    seqs = [line["seq"] for line in everything["lines"]]
    assert seqs == list(range(1, len(seqs) + 1)) and everything["last_seq"] == len(seqs)
    tail = api.get(f"/api/finetune/tasks/{task_id}/logs", params={"limit": 3}).json()["lines"]
    assert [line["seq"] for line in tail] == seqs[-3:]
    page = api.get(f"/api/finetune/tasks/{task_id}/logs", params={"after_seq": 2, "limit": 2}).json()["lines"]
    assert [line["seq"] for line in page] == [3, 4]
    first = api.get(f"/api/finetune/tasks/{task_id}/logs", params={"after_seq": 0, "limit": 2}).json()["lines"]
    assert [line["seq"] for line in first] == [1, 2]
    before = api.get(f"/api/finetune/tasks/{task_id}/logs", params={"before_seq": 4, "limit": 10}).json()["lines"]
    assert [line["seq"] for line in before] == [1, 2, 3]


def test_list_filters_and_pages(api, finished_sft):
    listed = api.get("/api/finetune/tasks", params={"status": "succeeded", "type": "sft"}).json()
    assert finished_sft["id"] in [t["id"] for t in listed["tasks"]]
    assert all(t["status"] == "succeeded" for t in listed["tasks"])
    page = api.get("/api/finetune/tasks", params={"limit": 1}).json()
    assert len(page["tasks"]) == 1 and page["total"] >= 1


def test_stop_running_task_kills_its_process_group_then_delete(api, stack):
    task = start(api, sft_config(num_train_epochs=1000, output_dir="output/sft-stop"))
    running = wait_for(api, task["id"], {"running"})
    wait_for_log_lines(api, task["id"], 3)
    pgid = running["pid"] or api.get(f"/api/finetune/tasks/{task['id']}").json()["pid"]
    assert pgid and process_group_alive(pgid)

    # A running task cannot be deleted.
    refused = api.delete(f"/api/finetune/tasks/{task['id']}/delete")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "failed_precondition"

    stopping = api.delete(f"/api/finetune/tasks/{task['id']}")
    assert stopping.status_code == 200 and stopping.json()["status"] in {"stopping", "stopped"}
    stopped = wait_for(api, task["id"], {"stopped"}, timeout=30)
    assert [e["reason"] for e in stopped["events"]][-2:] == ["user_stop", "user_stop"]
    deadline = time.monotonic() + 10
    while process_group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_group_alive(pgid), "the trainer's process group outlived the stop"

    # Stopping it again is a clear 409; deleting it removes the task, its events and its logs.
    assert api.delete(f"/api/finetune/tasks/{task['id']}").status_code == 409
    deleted = api.delete(f"/api/finetune/tasks/{task['id']}/delete")
    assert deleted.status_code == 200 and deleted.json() == {"deleted": task["id"]}
    for path in (f"/api/finetune/tasks/{task['id']}", f"/api/finetune/tasks/{task['id']}/logs"):
        gone = api.get(path)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    assert task["id"] not in [t["id"] for t in api.get("/api/finetune/tasks", params={"limit": 500}).json()["tasks"]]


def test_queued_tasks_can_be_stopped_and_data_are_checked_again_when_they_run(api, stack):
    # Fill the agent's three slots with long tasks so the next ones wait in the queue.
    blockers = [start(api, sft_config(num_train_epochs=1000, output_dir=f"output/block-{i}")) for i in range(3)]
    to_stop = start(api, sft_config(output_dir="output/never"))
    data = stack.workspace / "data" / "changing.jsonl"
    shutil.copy(stack.workspace / "data" / "train.jsonl", data)
    to_break = start(api, sft_config(train_data_path="data/changing.jsonl", output_dir="output/broken"))
    time.sleep(1.5)
    assert api.get(f"/api/finetune/tasks/{to_stop['id']}").json()["status"] == "queued"
    assert api.get(f"/api/finetune/tasks/{to_break['id']}").json()["status"] == "queued"

    stopped = api.delete(f"/api/finetune/tasks/{to_stop['id']}").json()
    assert stopped["status"] == "stopped" and stopped["events"][-1]["reason"] == "user_stop"
    never_ran = api.post(f"/api/finetune/tasks/{to_stop['id']}/resume")
    assert never_ran.status_code == 409 and "no checkpoint" in never_ran.json()["error"]["message"]

    # The data change after submit; the trainer checks them again on the agent before loading any model.
    lines = data.read_text().splitlines()
    lines[4] = json.dumps({"query": "no answer here"})
    data.write_text("\n".join(lines) + "\n")
    for blocker in blockers:
        api.delete(f"/api/finetune/tasks/{blocker['id']}")
    failed = wait_for(api, to_break["id"], {"failed"}, timeout=120)
    assert failed["error_reason"] == "invalid_data" and failed["exit_code"] == 3
    assert "line 5" in failed["error"] and "chosen" in failed["error"]
    for blocker in blockers:
        wait_for(api, blocker["id"], TERMINAL, timeout=60)


def test_gpu_vis_reaches_the_trainer_as_cuda_visible_devices(api):
    task = start(api, sft_config(gpu_vis="0,1", max_steps=1, output_dir="output/devices"))
    done = wait_for(api, task["id"], TERMINAL)
    assert done["status"] == "succeeded", done["error"]
    first = api.get(f"/api/finetune/tasks/{task['id']}/logs", params={"after_seq": 0, "limit": 1}).json()["lines"][0]
    assert "CUDA_VISIBLE_DEVICES=0,1" in first["text"]


# --- dry run ----------------------------------------------------------------------------------------------------------


def test_dry_run_reports_rows_and_token_lengths(api):
    report = api.post("/api/finetune/validate", json={"type": "sft", "config": sft_config(max_length=40)}, timeout=120)
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["ok"] and body["rows"] == 48 and body["problems"] == [] and body["agent_id"]
    tokens = body["stats"]["tokens"]
    assert 0 < tokens["p50"] <= tokens["p95"] <= tokens["max"]
    assert tokens["max_length"] == 40 and 0 < tokens["truncated_rows"] < 48  # the tiny rows straddle 40 tokens
    roomy = api.post("/api/finetune/validate", json={"type": "sft", "config": sft_config(max_length=4096)}, timeout=120)
    assert roomy.json()["stats"]["tokens"]["truncated_rows"] == 0


def test_dry_run_lists_bad_rows_with_lines_and_fields(api, stack):
    path = stack.workspace / "data" / "dry-bad.jsonl"
    rows = (stack.workspace / "data" / "train.jsonl").read_text().splitlines()[:8]
    rows[1] = json.dumps({"query": "q", "chosen": {"text": 5}})
    rows[3] = "not json"
    rows[5] = json.dumps({"query": "q", "retrieval_result": 7, "chosen": {"text": "a"}})
    path.write_text("\n".join(rows) + "\n")
    body = api.post("/api/finetune/validate", json={"type": "sft", "config": sft_config(train_data_path="data/dry-bad.jsonl")}, timeout=120).json()
    assert body["ok"] is False and body["rows"] == 8 and body["error"]["field"] == "train_data_path"
    found = {(p["line"], p["field"].split(".")[0]) for p in body["problems"]}
    assert {(2, "chosen"), (4, ""), (6, "retrieval_result")} <= found, body["problems"]


def test_dry_run_reports_config_errors_without_failing(api):
    body = api.post("/api/finetune/validate", json={"type": "sft", "config": sft_config(learning_rate=-1)}, timeout=120).json()
    assert body["ok"] is False and body["error"]["field"] == "learning_rate"
    body = api.post("/api/finetune/validate", json={"type": "nope", "config": {}}, timeout=120).json()
    assert body["ok"] is False and body["error"]["field"] == "type"


# --- gRPC log streaming -------------------------------------------------------------------------------------------


def _stream(stack, task_id: str, after_seq: int, follow: bool) -> list:
    with grpc.insecure_channel(stack.control_plane_address) as channel:
        stub = control_plane_pb2_grpc.FinetuneServiceStub(channel)
        request = control_plane_pb2.StreamTaskLogsRequest(task_id=task_id, after_seq=after_seq, follow=follow)
        return list(stub.StreamTaskLogs(request, timeout=240, metadata=bearer_metadata(stack.admin_token)))


def test_stream_logs_from_start_and_from_middle_exactly_once(api, stack, finished_sft):
    task_id = finished_sft["id"]
    stored = api.get(f"/api/finetune/tasks/{task_id}/logs", params={"limit": 10000}).json()["lines"]
    whole = _stream(stack, task_id, 0, follow=True)
    assert [(l.seq, l.text) for l in whole] == [(l["seq"], l["text"]) for l in stored]
    middle = len(stored) // 2
    rest = _stream(stack, task_id, middle, follow=False)
    assert [l.seq for l in rest] == list(range(middle + 1, len(stored) + 1))


def test_follow_stream_tails_a_live_task_to_its_end(api, stack):
    task = start(api, sft_config(num_train_epochs=2, output_dir="output/sft-follow"))
    lines = _stream(stack, task["id"], 0, follow=True)  # returns when the task ends
    done = api.get(f"/api/finetune/tasks/{task['id']}").json()
    assert done["status"] == "succeeded"
    assert done["last_log_seq"] > 0
    assert [l.seq for l in lines] == list(range(1, done["last_log_seq"] + 1))


def test_stream_unknown_task_is_not_found(stack):
    with pytest.raises(grpc.RpcError) as info:
        _stream(stack, "no-such-task", 0, follow=False)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# --- bad input: each a 4xx whose message names what is wrong --------------------------------------------------------


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_invalid_json_body(api):
    error = _error(api.post("/api/finetune/start", content=b'{"type": "sft",', headers={"content-type": "application/json"}), 400)
    assert "not valid JSON" in error["message"]


def test_missing_type(api):
    error = _error(api.post("/api/finetune/start", json={"config": sft_config()}), 400)
    assert error["field"] == "type"


def test_unknown_type(api):
    error = _error(api.post("/api/finetune/start", json={"type": "rlhf", "config": sft_config()}), 400)
    assert error["field"] == "type" and "rlhf" in error["message"] and "sft" in error["message"]


@pytest.mark.parametrize(
    "overrides, field, words",
    [
        ({"learning_rat": 1e-4}, "learning_rat", "unknown config key"),
        ({"learning_rate": -1e-4}, "learning_rate", "greater than 0"),
        ({"num_train_epochs": "3"}, "num_train_epochs", "num_train_epochs"),
        ({"model_name_or_path": None}, "model_name_or_path", "model_name_or_path"),
    ],
)
def test_bad_config_values_name_the_key(api, overrides, field, words):
    error = _error(api.post("/api/finetune/start", json={"type": "sft", "config": sft_config(**overrides)}), 400)
    assert error["field"] == field and words in error["message"]


def test_missing_required_key(api):
    config = sft_config()
    del config["model_name_or_path"]
    error = _error(api.post("/api/finetune/start", json={"type": "sft", "config": config}), 400)
    assert error["field"] == "model_name_or_path" and "missing" in error["message"]


def test_missing_data_file(api, stack):
    error = _error(api.post("/api/finetune/start", json={"type": "sft", "config": sft_config(train_data_path="data/nope.jsonl")}), 400)
    assert error["field"] == "train_data_path" and "file not found: data/nope.jsonl" in error["message"]


def test_data_file_with_bad_json_on_line_7(api, stack):
    path = stack.workspace / "data" / "broken.jsonl"
    lines = (stack.workspace / "data" / "train.jsonl").read_text().splitlines()[:10]
    lines[6] = '{"query": "half a row", '
    path.write_text("\n".join(lines) + "\n")
    error = _error(api.post("/api/finetune/start", json={"type": "sft", "config": sft_config(train_data_path="data/broken.jsonl")}), 400)
    assert error["field"] == "train_data_path" and "line 7" in error["message"] and "broken.jsonl" in error["message"]


def test_unknown_task_id_is_404(api):
    for method, path in [
        ("GET", "/api/finetune/tasks/nope"),
        ("GET", "/api/finetune/tasks/nope/logs"),
        ("DELETE", "/api/finetune/tasks/nope"),
        ("DELETE", "/api/finetune/tasks/nope/delete"),
    ]:
        error = _error(api.request(method, path), 404)
        assert "nope" in error["message"]


def test_a_model_no_agent_holds_is_refused_at_submit(api):
    response = api.post("/api/finetune/start", json={"type": "sft", "config": sft_config(
        model_name_or_path="no-such-org/no-such-model")})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == "model_name_or_path" and "no agent holds a model named 'no-such-org/no-such-model'" in error["message"]
    assert "tiny-llama" in error["message"]  # what the agents do hold


def test_a_model_path_missing_on_the_agent_is_refused_at_submit_with_a_clear_error(api, stack):
    missing = stack.workspace / "models" / "not-there"
    response = api.post("/api/finetune/start", json={"type": "sft", "config": sft_config(
        model_name_or_path=str(missing), output_dir="output/no-model")})
    assert response.status_code == 400, response.text  # the agent's check, not a task failing a second in
    error = response.json()["error"]
    assert error["field"] == "model_name_or_path" and repr(str(missing)) in error["message"], error


def test_control_plane_serves_health_and_reflection(stack):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(stack.control_plane_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "bugagaric.finetune.v1.FinetuneService", "bugagaric.finetune.v1.AgentRegistry"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        [answer] = list(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
        names = {s.name for s in answer.list_services_response.service}
        assert {"bugagaric.finetune.v1.FinetuneService", "grpc.health.v1.Health"} <= names
