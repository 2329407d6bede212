"""Multi-node training across agents: two agents of one CPU slot each, each in a workspace (and models directory) of
its own, no path shared. A task with `nodes: 2` runs as torchrun on both, joined by the c10d rendezvous on node 0's
agent (gloo on the CPU); a node's death stops the other and requeues the task, which resumes from its checkpoint;
gangs and one-slot tasks share the two agents without deadlock; a gang first in the queue is not starved."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.gang import gang_processes, kill_while_saving
from tests.helpers.stack import start_stack
from tests.helpers.tasks import ENDED, wait_for_task
from tests.helpers.tiny_models import build_tiny_llama, sft_rows


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


@pytest.fixture(scope="module")
def gang_hosts(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi-node")
    hosts = {"node-a": root / "host-a", "node-b": root / "host-b"}
    for host in hosts.values():
        build_tiny_llama(host / "models" / "tiny-llama")
    stack = start_stack(root / "control-plane", slots=1, agent_workspaces=hosts, stop_grace_seconds=10.0)
    api = httpx.Client(base_url=stack.base_url, headers={"authorization": f"Bearer {stack.admin_token}"}, timeout=120)
    deadline = time.monotonic() + 60
    while len([a for a in api.get("/api/health").json()["agents"] if a["alive"]]) < 2:
        assert time.monotonic() < deadline, "both agents alive"
        time.sleep(0.3)
    dataset = api.post("/api/finetune/datasets", data={"type": "sft"},
                       files={"file": ("train.jsonl", jsonl(sft_rows(32)), "application/jsonl")})
    assert dataset.status_code == 201, dataset.text
    yield stack, api, hosts, dataset.json()["id"]
    api.close()
    stack.stop()


def sft(dataset_id: str, **overrides) -> dict:
    config = {"model_name_or_path": "tiny-llama", "train_data_path": f"dataset:{dataset_id}", "max_length": 32,
              "per_device_train_batch_size": 2, "max_steps": 4, "logging_steps": 1}
    config.update(overrides)
    return config


def submit(api: httpx.Client, config: dict) -> dict:
    started = api.post("/api/finetune/start", json={"type": "sft", "config": config})
    assert started.status_code == 201, started.text
    return started.json()


def all_lines(api: httpx.Client, task_id: str) -> list[dict]:
    lines, after = [], 0
    while True:
        page = api.get(f"/api/finetune/tasks/{task_id}/logs", params={"after_seq": after, "limit": 1000}).json()
        if not page["lines"]:
            return lines
        lines += page["lines"]
        after = page["lines"][-1]["seq"]


def wait_until(what: str, check, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise TimeoutError(what)


def busy_intervals(task: dict) -> list[tuple[str, float, float]]:
    """(agent, start, end) of every attempt's device use; gangs by their node placements (one attempt here)."""
    def seconds(stamp: str) -> float:
        from datetime import datetime
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

    attempts = [a for a in task["attempts"] if a["started_at"]]
    if task["node_placements"]:
        (attempt,) = attempts
        return [(node["agent_id"], seconds(attempt["started_at"]), seconds(attempt["ended_at"]))
                for node in task["node_placements"]]
    return [(a["agent_id"], seconds(a["started_at"]), seconds(a["ended_at"])) for a in attempts]


def test_two_nodes_train_one_task_through_the_c10d_rendezvous(gang_hosts):
    stack, api, hosts, dataset_id = gang_hosts
    task = submit(api, sft(dataset_id, nodes=2, max_steps=6, save_steps=3))
    assert task["nodes"] == 2 and task["gpus_per_node"] == 0
    done = wait_for_task(api, task["id"], lambda t: t["status"] in ENDED, timeout=300)
    lines = all_lines(api, task["id"])
    text = "\n".join(line["text"] for line in lines)
    assert done["status"] == "succeeded", (done, text[-4000:])
    assert [line["seq"] for line in lines] == list(range(1, len(lines) + 1))  # one seq space, no gap, no repeat

    nodes = done["node_placements"]
    assert [(n["node"], n["agent_id"], n["devices"], n["status"]) for n in nodes] == [
        (0, nodes[0]["agent_id"], [0], "succeeded"), (1, nodes[1]["agent_id"], [0], "succeeded")]
    assert {n["agent_id"] for n in nodes} == {"node-a", "node-b"}
    (rank0,) = [n for n in nodes if n["rank0"]]
    # Rank 0 alone reports (one start, one step event per step) and writes the model, on its own host.
    metrics = api.get(f"/api/finetune/tasks/{task['id']}/metrics").json()["points"]
    assert [p["step"] for p in metrics if p.get("event") == "step"] == [1, 2, 3, 4, 5, 6]
    assert len([p for p in metrics if p.get("event") == "start"]) == 1
    assert done["agent_id"] == rank0["agent_id"]
    assert done["output_dir"].startswith(str(hosts[rank0["agent_id"]]))
    assert (Path(done["output_dir"]) / "adapter_model.safetensors").is_file()
    # Every node's lines, marked with their node and rank.
    for node, rank in ((0, 0), (1, 1)):
        assert any(line["text"].startswith(f"[node{node}] ") for line in lines), node
    ranked = {(line["text"].split("]")[0], line["text"].split("] ", 1)[1].split("]:")[0])
              for line in lines if "[rank" in line["text"]}
    assert {("[node0", "[rank0"), ("[node1", "[rank1")} <= ranked or {("[node0", "[rank1"), ("[node1", "[rank0")} <= ranked
    # Checkpoints on every node (no shared disk: each node resumes from its own copy).
    for host in hosts.values():
        assert (host / "output" / "sft" / task["id"] / "checkpoint-3").is_dir(), host
    published = wait_for_task(api, task["id"], lambda t: t["published_model_sha256"], timeout=120)
    assert len(published["published_model_sha256"]) == 64


def test_split_gpus_lets_two_one_slot_agents_run_a_two_device_task(gang_hosts):
    stack, api, hosts, dataset_id = gang_hosts
    refused = api.post("/api/finetune/start", json={"type": "sft", "config": sft(dataset_id, gpus=2)})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "gpus"
    assert "split_gpus" in refused.json()["error"]["message"]
    refused = api.post("/api/finetune/start", json={"type": "sft", "config": sft(dataset_id, nodes=3)})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "nodes"
    task = submit(api, sft(dataset_id, gpus=2, split_gpus=True))
    done = wait_for_task(api, task["id"], lambda t: t["status"] in ENDED, timeout=300)
    assert done["status"] == "succeeded", done["error"]
    assert (done["nodes"], done["gpus_per_node"]) == (2, 1)
    assert sorted(n["agent_id"] for n in done["node_placements"]) == ["node-a", "node-b"]


def test_a_killed_node_stops_the_gang_which_is_requeued_and_resumes(gang_hosts):
    stack, api, hosts, dataset_id = gang_hosts
    # One retry: the second attempt must resume, though node 1 is killed while it writes a checkpoint (a checkpoint
    # is reported only once every rank has saved it, so the latest reported one is whole on both nodes).
    task = submit(api, sft(dataset_id, nodes=2, max_steps=100000, save_steps=5, max_retries=1))
    running = wait_for_task(api, task["id"], lambda t: t["checkpoints"], timeout=240)
    victim = wait_until("node 1's rank", lambda: gang_processes(task["id"], node=1))
    survivors = gang_processes(task["id"], node=0)
    assert survivors
    (node1,) = [n["agent_id"] for n in running["node_placements"] if n["node"] == 1]
    kill_while_saving(victim[0], hosts[node1] / "output" / "sft" / task["id"])
    killed = time.monotonic()
    # The other node's ranks are gone within the gang's stop grace (5 s) plus the time to notice.
    wait_until("node 0's ranks gone", lambda: not any(Path(f"/proc/{pid}").exists() and
                                                      pid in gang_processes(task["id"], node=0) for pid in survivors),
               timeout=60)
    gone_after = time.monotonic() - killed
    requeued = wait_for_task(api, task["id"], lambda t: t["attempt"] == 2 and t["status"] == "running", timeout=240)
    print(f"node killed -> other node's ranks gone in {gone_after:.1f} s")
    retry = [e for e in requeued["events"] if e["reason"] == "retry"]
    assert retry and "node 1" in retry[-1]["message"], requeued["events"]
    checkpoint_step = max(c["step"] for c in requeued["checkpoints"] if c["attempt"] == 1)

    def resumed_start_or_end():
        points = api.get(f"/api/finetune/tasks/{task['id']}/metrics").json()["points"]
        starts = [p for p in points if p.get("event") == "start"]
        if len(starts) > 1:
            return starts[1]
        now = api.get(f"/api/finetune/tasks/{task['id']}").json()
        return {"ended": now} if now["status"] in ENDED else None

    start = wait_until("the second attempt's start", resumed_start_or_end, timeout=300)
    if "ended" in start:  # say what the task did instead
        now = start["ended"]
        tail = "\n".join(line["text"] for line in all_lines(api, task["id"])[-40:])
        raise AssertionError(f"no second start: {now['status']} attempt {now['attempt']} {now['error']!r} "
                             f"{[(e['reason'], e['message']) for e in now['events']]}\n{tail}")
    assert start["step"] >= checkpoint_step > 0  # its step count continues from the checkpoint
    texts = [line["text"] for line in all_lines(api, task["id"])]
    assert any("resuming from checkpoint-" in text for text in texts)

    # Stop stops every node within the grace period.
    wait_until("both nodes' ranks", lambda: gang_processes(task["id"], node=0) and gang_processes(task["id"], node=1))
    assert api.delete(f"/api/finetune/tasks/{task['id']}").status_code == 200
    stopped = wait_for_task(api, task["id"], lambda t: t["status"] in ENDED, timeout=60)
    assert stopped["status"] == "stopped", stopped
    assert not gang_processes(task["id"])
    assert {n["status"] for n in stopped["node_placements"]} == {"stopped"}


def test_gangs_and_one_slot_tasks_share_two_agents_without_deadlock(gang_hosts):
    stack, api, hosts, dataset_id = gang_hosts
    kinds = ["gang", "one", "gang", "one", "one"]
    tasks = [submit(api, sft(dataset_id, max_steps=2, **({"nodes": 2} if kind == "gang" else {}))) for kind in kinds]
    done = [wait_for_task(api, t["id"], lambda t: t["status"] in ENDED, timeout=400) for t in tasks]
    assert [t["status"] for t in done] == ["succeeded"] * 5, [(t["status"], t["error"]) for t in done]
    intervals = [interval for task in done for interval in busy_intervals(task)]
    for i, (agent, start, end) in enumerate(intervals):  # one slot per agent: no two runs there at once
        for other, other_start, other_end in intervals[i + 1:]:
            assert agent != other or end <= other_start or other_end <= start, intervals


def test_a_gang_first_in_the_queue_is_placed_while_small_tasks_keep_coming(gang_hosts):
    stack, api, hosts, dataset_id = gang_hosts
    small = lambda steps=2: submit(api, sft(dataset_id, max_steps=steps))  # noqa: E731
    before = [small(200), small(200)]  # both agents busy for a while
    wait_until("both agents busy", lambda: all(api.get(f"/api/finetune/tasks/{t['id']}").json()["status"] == "running"
                                               for t in before))
    gang = submit(api, sft(dataset_id, nodes=2, max_steps=2))
    after = []
    deadline = time.monotonic() + 90
    while api.get(f"/api/finetune/tasks/{gang['id']}").json()["status"] == "queued":
        assert time.monotonic() < deadline, "the gang was never placed"
        if len(after) < 6:
            after.append(small())  # a stream of one-slot tasks that would always find a free agent
        time.sleep(1.0)
    assert after  # the stream did arrive while the gang waited
    gang = wait_for_task(api, gang["id"], lambda t: t["status"] in ENDED, timeout=300)
    assert gang["status"] == "succeeded"
    placed_at = min(e["time"] for e in gang["events"] if e["reason"] == "placed")
    for task in after:  # none of those submitted behind the gang jumped it
        task = wait_for_task(api, task["id"], lambda t: t["status"] in ENDED, timeout=300)
        assert task["status"] == "succeeded"
        assert min(e["time"] for e in task["events"] if e["reason"] == "placed") > placed_at
