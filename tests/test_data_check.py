"""Checks that outlast the submit: a task whose data are still being checked is accepted at once, waits outside the
queue, and then runs or fails with the check's message; a control plane killed meanwhile checks it again, and none of
a burst of accepted submissions is lost. The whole system as real processes (submit budget 0: every check goes on
after the answer)."""

from __future__ import annotations

import json
import shutil
import threading
import time

import httpx
import pytest

from tests.helpers.stack import start_stack
from tests.helpers.tasks import tiny_sft_config, wait_for_task
from tests.helpers.tiny_models import sft_rows, write_sft_rows

TERMINAL = {"succeeded", "failed", "stopped"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_llama_dir):
    workspace = tmp_path_factory.mktemp("data-check")
    shutil.copytree(tiny_llama_dir, workspace / "models" / "tiny-llama")
    write_sft_rows(workspace / "data" / "train.jsonl", 16)
    running = start_stack(workspace, slots=2, extra_env={"BUGAGARIC_SUBMIT_CHECK_BUDGET_SECONDS": "0"})
    yield running
    running.stop()


@pytest.fixture
def api(stack):
    with httpx.Client(base_url=stack.base_url, timeout=30, headers={"authorization": f"Bearer {stack.admin_token}"}) as c:
        yield c


def write_rows(path, count: int, bad_last: bool = False) -> None:
    rows = sft_rows(64)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(count):
            handle.write(json.dumps(rows[i % len(rows)]) + "\n")
        if bad_last:
            handle.write('{"query": "q?", "chosen": {}}\n')


def test_a_task_waits_for_its_check_then_runs(api):
    task = api.post("/api/finetune/start", json={"type": "sft", "config": tiny_sft_config()}).json()
    assert task["status"] == "queued" and task["validation"]["state"] == "pending"
    assert task["queue_position"] is None  # not placed while its data are being checked
    done = wait_for_task(api, task["id"], lambda t: t["status"] in TERMINAL)
    assert done["status"] == "succeeded", done["error"]
    assert done["validation"] == {"state": "passed", "rows": 16, "message": ""}


def test_a_failed_check_fails_the_task_naming_the_line(api, stack):
    write_rows(stack.workspace / "data" / "bad-at-end.jsonl", 30_000, bad_last=True)
    task = api.post("/api/finetune/start", json={"type": "sft", "config": tiny_sft_config(train_data_path="data/bad-at-end.jsonl")})
    assert task.status_code == 201, task.text
    done = wait_for_task(api, task.json()["id"], lambda t: t["status"] in TERMINAL)
    assert done["status"] == "failed" and done["error_reason"] == "invalid_data"
    assert "data/bad-at-end.jsonl line 30001: chosen.text: Field required" in done["error"]
    assert done["validation"]["state"] == "failed" and "line 30001" in done["validation"]["message"]
    assert [e["to_status"] for e in done["events"]] == ["queued", "failed"] and not done["attempts"]


def test_a_check_interrupted_by_a_control_plane_kill_is_made_again(api, stack):
    write_rows(stack.workspace / "data" / "big.jsonl", 400_000)
    task = api.post("/api/finetune/start", json={"type": "sft", "config": tiny_sft_config(train_data_path="data/big.jsonl")}).json()
    assert task["validation"]["state"] == "pending"
    stack.kill("control_plane")
    stack.restart("control_plane")
    checked = wait_for_task(api, task["id"], lambda t: t["validation"]["state"] != "pending")
    assert checked["validation"] == {"state": "passed", "rows": 400_000, "message": ""}
    api.delete(f"/api/finetune/tasks/{task['id']}")  # training on it is not the point
    wait_for_task(api, task["id"], lambda t: t["status"] in TERMINAL)


def test_a_control_plane_killed_in_a_burst_of_submissions_loses_none_it_accepted(api, stack):
    accepted: list[str] = []
    stop = threading.Event()

    def submit() -> None:
        with httpx.Client(base_url=stack.base_url, timeout=10,
                          headers={"authorization": f"Bearer {stack.admin_token}"}) as client:
            while not stop.is_set():
                try:
                    response = client.post("/api/finetune/start", json={"type": "sft", "config": tiny_sft_config(max_steps=1)})
                except httpx.HTTPError:
                    continue
                if response.status_code == 201:
                    accepted.append(response.json()["id"])

    submitters = [threading.Thread(target=submit) for _ in range(4)]
    for thread in submitters:
        thread.start()
    time.sleep(2)
    before_kill = len(accepted)
    stack.kill("control_plane")
    time.sleep(0.5)
    stack.restart("control_plane")
    stack.wait_healthy()
    time.sleep(1)
    stop.set()
    for thread in submitters:
        thread.join()
    assert before_kill > 0 and len(accepted) > before_kill, (before_kill, len(accepted))
    stored = {t["id"] for t in api.get("/api/finetune/tasks", params={"limit": 500}).json()["tasks"]}
    assert set(accepted) <= stored, set(accepted) - stored
    print(f"\n{len(accepted)} submissions accepted around a kill -9 ({before_kill} before it); all stored")
    for task_id in accepted:
        api.delete(f"/api/finetune/tasks/{task_id}")
