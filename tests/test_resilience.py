"""Scheduling across agents, and nothing lost when a process dies: real services, real trainers, real kill -9."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.stack import Stack, start_stack
from tests.helpers.tiny_models import write_sft_rows

TERMINAL = {"succeeded", "failed", "stopped"}


def sft_config(**overrides) -> dict:
    config = {
        "model_name_or_path": "models/tiny-llama", "train_data_path": "data/train.jsonl", "learning_rate": 5e-3,
        "per_device_train_batch_size": 4, "max_length": 48, "max_steps": 12,
    }
    config.update(overrides)
    return config


def make_workspace(tmp_path_factory, tiny_llama_dir, name: str) -> Path:
    workspace = tmp_path_factory.mktemp(name)
    shutil.copytree(tiny_llama_dir, workspace / "models" / "tiny-llama")
    write_sft_rows(workspace / "data" / "train.jsonl", 32)
    return workspace


class Api:
    def __init__(self, stack: Stack):
        self.client = httpx.Client(base_url=stack.base_url, timeout=30, headers={"authorization": f"Bearer {stack.admin_token}"})

    def start(self, **config) -> dict:
        response = self.client.post("/api/finetune/start", json={"type": "sft", "config": sft_config(**config)})
        assert response.status_code == 201, response.text
        return response.json()

    def task(self, task_id: str) -> dict:
        response = self.client.get(f"/api/finetune/tasks/{task_id}")
        response.raise_for_status()
        return response.json()

    def wait(self, task_id: str, statuses: set[str], timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                task = self.task(task_id)
            except httpx.HTTPError:  # the control plane may be down for a moment in these tests
                time.sleep(0.3)
                continue
            if task["status"] in statuses:
                return task
            time.sleep(0.3)
        raise TimeoutError(f"task {task_id} not {statuses} after {timeout}s: {task}")

    def wait_progress(self, task_id: str, step: int, timeout: float = 240) -> dict:
        """Until the task has logged `step` training steps."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.task(task_id)
            assert task["status"] not in TERMINAL, task
            if task["progress"]["step"] >= step:
                return task
            time.sleep(0.2)
        raise TimeoutError(f"task {task_id} never reached step {step}")

    def log_seqs(self, task_id: str) -> list[int]:
        lines = self.client.get(f"/api/finetune/tasks/{task_id}/logs", params={"after_seq": 0, "limit": 10000}).json()["lines"]
        return [line["seq"] for line in lines]

    def metric_steps(self, task_id: str) -> list[int]:
        points = self.client.get(f"/api/finetune/tasks/{task_id}/metrics").json()["points"]
        return [p["step"] for p in points if p.get("event") == "step"]


def spool_log_count(stack: Stack, agent: str, task_id: str) -> int:
    """Lines the agent spooled for the task, over all its attempts there."""
    return sum(
        1
        for spool in (stack.agent_dir(agent) / "tasks" / task_id).glob("attempt-*/spool.jsonl")
        for line in spool.read_text().splitlines()
        if json.loads(line).get("kind") == "log"
    )


def trainer_pgids(stack: Stack, agent: str, task_id: str) -> list[int]:
    states = (stack.agent_dir(agent) / "tasks" / task_id).glob("attempt-*/state.json")
    return [int(json.loads(p.read_text())["pgid"]) for p in states]


@pytest.fixture
def api_factory():
    clients = []

    def make(stack: Stack) -> Api:
        api = Api(stack)
        clients.append(api.client)
        return api

    yield make
    for client in clients:
        client.close()


def test_a_killed_control_plane_loses_no_line(tmp_path_factory, tiny_llama_dir, api_factory):
    # Down for longer than the agent timeout: the restarted control plane must not take its agents for lost.
    stack = start_stack(make_workspace(tmp_path_factory, tiny_llama_dir, "cp-kill"), slots=3, agent_timeout_seconds=6)
    try:
        api = api_factory(stack)
        tasks = [api.start(max_steps=150, output_dir=f"output/cp-{i}") for i in range(3)]
        for task in tasks:
            api.wait_progress(task["id"], 2)
        stack.kill("control_plane")
        time.sleep(7)  # the trainers go on writing while nobody ingests
        restarted = time.monotonic()
        stack.restart("control_plane")
        stack.wait_healthy()
        assert [api.task(t["id"])["status"] for t in tasks] == ["running"] * 3  # they kept running meanwhile
        # Back when every stream has resumed: each task's stored lines move past what the agent had before the kill.
        for task in tasks:
            api.wait(task["id"], {"running", *TERMINAL}, timeout=60)
        print(f"\ncontrol plane back with streams resumed after {time.monotonic() - restarted:.1f}s")
        for task in tasks:
            done = api.wait(task["id"], TERMINAL)
            assert done["status"] == "succeeded", done["error"]
            seqs = api.log_seqs(task["id"])
            assert seqs == list(range(1, len(seqs) + 1)), "a gap or a duplicate"
            assert len(seqs) == done["last_log_seq"] == spool_log_count(stack, "agent", task["id"]), "a line was lost"
            assert api.metric_steps(task["id"]) == list(range(1, 151))
            assert [a["number"] for a in done["attempts"]] == [1] and "agent_lost" not in [e["reason"] for e in done["events"]]
    finally:
        stack.stop()


def test_a_killed_agent_readopts_its_trainer(tmp_path_factory, tiny_llama_dir, api_factory):
    stack = start_stack(make_workspace(tmp_path_factory, tiny_llama_dir, "agent-kill"), slots=1)
    try:
        api = api_factory(stack)
        task = api.start(max_steps=40, output_dir="output/adopted")
        api.wait_progress(task["id"], 2)
        stack.kill("agent")
        time.sleep(1.5)
        stack.restart("agent")
        done = api.wait(task["id"], TERMINAL)
        assert done["status"] == "succeeded", done["error"]
        assert [a["number"] for a in done["attempts"]] == [1]  # the same attempt, adopted, not a rerun
        seqs = api.log_seqs(task["id"])
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == spool_log_count(stack, "agent", task["id"])
        assert api.metric_steps(task["id"]) == list(range(1, 41))
        assert "adopt" in stack.log("agent").lower()
    finally:
        stack.stop()


def test_an_agent_down_longer_than_its_timeout_comes_back_to_tasks_that_end_in_their_real_status(
    tmp_path_factory, tiny_llama_dir, api_factory
):
    # kill -9, 20 s down (the heartbeat timeout is 6 s), restart: the trainers went on and ended meanwhile.
    stack = start_stack(make_workspace(tmp_path_factory, tiny_llama_dir, "agent-outage"), slots=3, agent_timeout_seconds=6)
    try:
        api = api_factory(stack)
        # Long enough that the first run cannot end while the others still start (cold, on a loaded machine).
        tasks = [api.start(max_steps=120, output_dir=f"output/outage-{i}") for i in range(3)]
        for task in tasks:
            api.wait_progress(task["id"], 1)
        stack.kill("agent")
        time.sleep(20)
        health = api.client.get("/api/health").json()
        assert [a["alive"] for a in health["agents"]] == [False]  # no new placements there meanwhile
        assert [api.task(t["id"])["status"] for t in tasks] == ["running"] * 3  # but its runs are not given up
        stack.restart("agent")
        for task in tasks:
            done = api.wait(task["id"], TERMINAL)
            assert done["status"] == "succeeded", done["error"]
            seqs = api.log_seqs(task["id"])
            spooled = spool_log_count(stack, "agent", task["id"])
            print(f"\ntask {task['id'][:8]}: {len(seqs)} lines stored, {spooled} spooled by the agent")
            assert seqs == list(range(1, spooled + 1)), "a line lost or doubled"
            assert done["last_log_seq"] == spooled
            assert api.metric_steps(task["id"]) == list(range(1, 121))
            assert [a["number"] for a in done["attempts"]] == [1]
            assert "agent_lost" not in [e["reason"] for e in done["events"]]
            assert (Path(done["output_dir"]) / "adapter_config.json").is_file()  # its adapter was saved
    finally:
        stack.stop()


def test_a_lost_agent_requeues_the_task_which_resumes_from_its_checkpoint(tmp_path_factory, tiny_llama_dir, api_factory):
    stack = start_stack(make_workspace(tmp_path_factory, tiny_llama_dir, "agent-lost"), slots=1, agent_timeout_seconds=3,
                        agent_gone_seconds=4)
    try:
        api = api_factory(stack)
        task = api.start(max_steps=60, save_steps=3, max_retries=1, output_dir="output/retried")
        first = api.wait_progress(task["id"], 4)
        assert first["agent_id"] == "agent"
        deadline = time.monotonic() + 60
        while not api.task(task["id"])["checkpoints"]:
            assert time.monotonic() < deadline, "no checkpoint recorded"
            time.sleep(0.2)
        stack.add_agent("agent-2", 1)
        # The first host dies for good: its agent and its trainer.
        pgids = trainer_pgids(stack, "agent", task["id"])
        stack.kill("agent")
        for pgid in pgids:
            os.killpg(pgid, signal.SIGKILL)
        done = api.wait(task["id"], TERMINAL)
        assert done["status"] == "succeeded", done["error"]
        assert [(a["number"], a["agent_id"]) for a in done["attempts"]] == [(1, "agent"), (2, "agent-2")]
        assert done["attempts"][0]["status"] == "queued" and done["attempts"][0]["reason"] == "retry"
        resumed_from = done["attempts"][1]["resumed_from"]
        assert resumed_from and Path(resumed_from).name.startswith("checkpoint-")
        checkpoint_step = int(Path(resumed_from).name.split("-")[1])
        steps = api.metric_steps(task["id"])
        second_attempt = steps[steps.index(checkpoint_step + 1, 1):] if checkpoint_step + 1 in steps[1:] else []
        assert second_attempt and second_attempt[0] == checkpoint_step + 1 and second_attempt[-1] == 60  # continues
        reasons = [e["reason"] for e in done["events"]]
        assert "retry" in reasons and reasons.count("placed") == 2
        seqs = api.log_seqs(task["id"])
        assert seqs == list(range(1, len(seqs) + 1))
    finally:
        stack.stop()


def test_a_killed_trainer_fails_the_task_with_its_last_stderr_lines(tmp_path_factory, tiny_llama_dir, api_factory):
    stack = start_stack(make_workspace(tmp_path_factory, tiny_llama_dir, "trainer-kill"), slots=1)
    try:
        api = api_factory(stack)
        task = api.start(max_steps=400, output_dir="output/killed")
        running = api.wait_progress(task["id"], 2)
        trainer_pid = next(
            int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _is_trainer_of(p, running["pid"])
        )
        os.kill(trainer_pid, signal.SIGKILL)
        failed = api.wait(task["id"], TERMINAL, timeout=60)
        assert failed["status"] == "failed" and failed["error_reason"] == "trainer_error"
        assert "killed by signal 9" in failed["error"]
        assert failed["exit_code"] == -9
    finally:
        stack.stop()


def _is_trainer_of(proc: Path, supervisor_pid: int) -> bool:
    try:
        stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        # A trainer forked from the warm pool keeps the fork server's command line.
        cmdline = (proc / "cmdline").read_bytes()
        return int(stat[1]) == supervisor_pid and (b"trainers.sft" in cmdline or b"gpu_agent.fork_server" in cmdline)
    except OSError:
        return False


def test_two_agents_run_six_tasks_four_at_a_time_in_queue_order(tmp_path_factory, tiny_llama_dir, api_factory):
    stack = start_stack(make_workspace(tmp_path_factory, tiny_llama_dir, "six"), slots=2)
    try:
        stack.add_agent("agent-2", 2)
        api = api_factory(stack)
        deadline = time.monotonic() + 30
        while len([a for a in api.client.get("/api/health").json()["agents"] if a["alive"]]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        seen_violation: list[str] = []
        peak = [0]
        stop_watch = threading.Event()

        def watch() -> None:
            with httpx.Client(base_url=stack.base_url, timeout=30, headers={"authorization": f"Bearer {stack.admin_token}"}) as client:
                while not stop_watch.is_set():
                    tasks = client.get("/api/finetune/tasks", params={"limit": 500}).json()["tasks"]
                    active = [t for t in tasks if t["status"] in ("starting", "running", "stopping")]
                    peak[0] = max(peak[0], len(active))
                    held = [(t["agent_id"], d) for t in active for d in t["devices"]]
                    if len(held) != len(set(held)):
                        seen_violation.append(f"a device held twice: {held}")
                    if len(active) > 4:
                        seen_violation.append(f"{len(active)} tasks active at once")
                    time.sleep(0.1)

        watcher = threading.Thread(target=watch)
        watcher.start()
        tasks = [api.start(max_steps=6, output_dir=f"output/six-{i}") for i in range(6)]
        done = [api.wait(t["id"], TERMINAL) for t in tasks]
        stop_watch.set()
        watcher.join()
        assert all(d["status"] == "succeeded" for d in done), [d["error"] for d in done]
        assert not seen_violation, seen_violation[:3]
        assert peak[0] == 4
        assert {d["agent_id"] for d in done} == {"agent", "agent-2"}
        started = [d["attempts"][0]["started_at"] for d in done]
        assert started == sorted(started), "placed out of submission order"
    finally:
        stack.stop()


def test_priority_and_queue_position(tmp_path_factory, tiny_llama_dir, api_factory):
    stack = start_stack(make_workspace(tmp_path_factory, tiny_llama_dir, "priority"), slots=1)
    try:
        api = api_factory(stack)
        blocker = api.start(max_steps=400, output_dir="output/blocker")
        api.wait(blocker["id"], {"running"})
        low = api.start(output_dir="output/low")
        high = api.start(priority=10, output_dir="output/high")
        assert (api.task(high["id"])["queue_position"], api.task(low["id"])["queue_position"]) == (1, 2)
        too_big = api.client.post("/api/finetune/start", json={"type": "sft", "config": sft_config(gpus=3)})
        assert too_big.status_code == 400 and too_big.json()["error"]["field"] == "gpus"
        assert "largest agent" in too_big.json()["error"]["message"]
        api.client.delete(f"/api/finetune/tasks/{blocker['id']}")
        high_done, low_done = api.wait(high["id"], TERMINAL), api.wait(low["id"], TERMINAL)
        assert high_done["attempts"][0]["started_at"] < low_done["attempts"][0]["started_at"]
    finally:
        stack.stop()


def test_a_two_slot_task_trains_data_parallel(tmp_path_factory, tiny_llama_dir, api_factory):
    stack = start_stack(make_workspace(tmp_path_factory, tiny_llama_dir, "ddp"), slots=2)
    try:
        api = api_factory(stack)
        task = api.start(gpus=2, max_steps=6, output_dir="output/ddp")
        done = api.wait(task["id"], TERMINAL)
        assert done["status"] == "succeeded", done["error"]
        assert sorted(done["devices"]) == [0, 1]
        lines = api.client.get(f"/api/finetune/tasks/{task['id']}/logs", params={"after_seq": 0, "limit": 10000}).json()["lines"]
        headers = [line["text"] for line in lines if "CUDA_VISIBLE_DEVICES=0,1" in line["text"]]
        assert len(headers) == 2, "expected one start line per rank"
        assert api.metric_steps(task["id"]) == list(range(1, 7))  # rank 0 alone reports
        assert done["progress"]["percent"] == 100.0
    finally:
        stack.stop()


def test_stop_then_resume_from_the_checkpoint(tmp_path_factory, tiny_llama_dir, api_factory):
    stack = start_stack(make_workspace(tmp_path_factory, tiny_llama_dir, "resume"), slots=1)
    try:
        api = api_factory(stack)
        task = api.start(max_steps=30, output_dir="output/resume")
        api.wait_progress(task["id"], 3)
        assert api.client.post(f"/api/finetune/tasks/{task['id']}/resume").status_code == 409  # still running
        api.client.delete(f"/api/finetune/tasks/{task['id']}")
        stopped = api.wait(task["id"], TERMINAL, timeout=60)
        assert stopped["status"] == "stopped" and len(stopped["checkpoints"]) == 1
        checkpoint = stopped["checkpoints"][0]
        unknown = api.client.post(f"/api/finetune/tasks/{task['id']}/resume", json={"checkpoint": "/elsewhere/checkpoint-1"})
        assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "checkpoint"
        resumed = api.client.post(f"/api/finetune/tasks/{task['id']}/resume")
        assert resumed.status_code == 200, resumed.text
        done = api.wait(task["id"], {"succeeded", "failed"})
        assert done["status"] == "succeeded", done["error"]
        assert [a["number"] for a in done["attempts"]] == [1, 2]
        assert done["attempts"][1]["resumed_from"] == checkpoint["path"]
        steps = api.metric_steps(task["id"])
        assert steps[: checkpoint["step"]] == list(range(1, checkpoint["step"] + 1))
        assert steps[checkpoint["step"]:] == list(range(checkpoint["step"] + 1, 31))
        seqs = api.log_seqs(task["id"])
        assert seqs == list(range(1, len(seqs) + 1))
        assert [e["reason"] for e in done["events"]].count("resume") == 1
    finally:
        stack.stop()
