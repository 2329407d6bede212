"""Multi-node on this machine: two agents of one CPU slot each (separate workspaces), the same tiny SFT run as one
node and as two nodes (torchrun, c10d rendezvous, gloo), interleaved; then a two-node run whose node 1 rank is killed
with -9: kill → the other node's ranks gone, kill → the task requeued (`retry`), kill → the next attempt placed,
kill → its first step (resumed from the checkpoint on both nodes), `--kills` times: how many of them resumed.

Prints JSON. On a 2-core machine two nodes share the same two cores, so the 2-node wall time shows the launcher's and
the rendezvous' overhead, not a speed-up. A 1-node run is forked from the agent's warm trainer pool; a node of a gang
always starts cold (torchrun): `--no-warm-pool` compares cold with cold.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.gang import gang_processes, kill_while_saving  # noqa: E402
from tests.helpers.stack import start_stack  # noqa: E402
from tests.helpers.tiny_models import build_tiny_llama, sft_rows  # noqa: E402

TERMINAL = {"succeeded", "failed", "stopped"}


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def wait(api: httpx.Client, task_id: str, done, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = api.get(f"/api/finetune/tasks/{task_id}").json()
        if done(task):
            return task
        time.sleep(0.1)
    raise TimeoutError(task_id)


def run_once(api: httpx.Client, config: dict) -> dict:
    submitted = time.monotonic()
    task = api.post("/api/finetune/start", json={"type": "sft", "config": config}).json()
    task = wait(api, task["id"], lambda t: t["status"] in TERMINAL)
    assert task["status"] == "succeeded", task["error"]
    placed = min(seconds(e["time"]) for e in task["events"] if e["reason"] == "placed")
    return {"submit_to_succeeded_s": time.monotonic() - submitted,
            "placed_to_finished_s": seconds(task["finished_at"]) - placed, "final_loss": task["progress"]["loss"]}


def node_death(api: httpx.Client, hosts: dict[str, Path], config: dict) -> dict:
    """A two-node run (checkpoint every 5 steps) whose node 1 rank is killed with -9 while it writes its copy of a
    checkpoint (after the first one is recorded): seconds from the kill to the other node's ranks gone, the requeue, the next attempt placed and its first step."""
    task = api.post("/api/finetune/start", json={"type": "sft", "config": {
        **config, "nodes": 2, "max_steps": 100000, "save_steps": 5, "logging_steps": 1, "max_retries": 1}}).json()
    running = wait(api, task["id"], lambda t: t["checkpoints"])
    while not (victims := gang_processes(task["id"], node=1)):
        time.sleep(0.1)
    survivors = gang_processes(task["id"], node=0)
    (node1,) = [n["agent_id"] for n in running["node_placements"] if n["node"] == 1]
    kill_while_saving(victims[0], hosts[node1] / "output" / "sft" / task["id"])
    killed = time.monotonic()
    while any(pid in gang_processes(task["id"], node=0) for pid in survivors):
        time.sleep(0.05)
    figures = {"kill_to_other_ranks_gone_s": time.monotonic() - killed}
    wait(api, task["id"], lambda t: any(e["reason"] == "retry" for e in t["events"]))
    figures["kill_to_requeued_s"] = time.monotonic() - killed
    wait(api, task["id"], lambda t: t["attempt"] == 2 and t["status"] in ("starting", "running"))
    figures["kill_to_next_attempt_placed_s"] = time.monotonic() - killed

    def resumed_or_ended(t: dict) -> bool:
        points = api.get(f"/api/finetune/tasks/{task['id']}/metrics").json()["points"]
        return len([p for p in points if p.get("event") == "start"]) > 1 or t["status"] in TERMINAL

    ended = wait(api, task["id"], resumed_or_ended)
    figures["kill_to_resumed_s"] = time.monotonic() - killed
    figures["resumed"] = ended["status"] not in TERMINAL
    api.delete(f"/api/finetune/tasks/{task['id']}")
    wait(api, task["id"], lambda t: t["status"] in TERMINAL)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--kills", type=int, default=1, help="two-node runs whose node 1 rank is killed")
    parser.add_argument("--no-warm-pool", action="store_true",
                        help="agents without the warm trainer pool: the 1-node run starts cold, as a node always does")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bugagaric-multinode-"))
    hosts = {"node-a": root / "host-a", "node-b": root / "host-b"}
    for host in hosts.values():
        build_tiny_llama(host / "models" / "tiny-llama")
    stack = start_stack(root / "control-plane", slots=1, agent_workspaces=hosts, stop_grace_seconds=10.0,
                        extra_env={"BUGAGARIC_WARM_POOL_SIZE": "0"} if args.no_warm_pool else None)
    api = httpx.Client(base_url=stack.base_url, timeout=60, headers={"authorization": f"Bearer {stack.admin_token}"})
    try:
        while len([a for a in api.get("/api/health").json()["agents"] if a["alive"]]) < 2:
            time.sleep(0.3)
        data = "".join(json.dumps(row) + "\n" for row in sft_rows(64)).encode()
        dataset = api.post("/api/finetune/datasets", data={"type": "sft"},
                           files={"file": ("train.jsonl", data, "application/jsonl")}).json()["id"]
        config = {"model_name_or_path": "tiny-llama", "train_data_path": f"dataset:{dataset}", "max_length": 32,
                  "per_device_train_batch_size": 2, "max_steps": args.steps}
        runs: dict[str, list[dict]] = {"1_node": [], "2_nodes": []}
        for _ in range(args.repeats):  # interleaved: both arms see the same machine
            runs["1_node"].append(run_once(api, config))
            runs["2_nodes"].append(run_once(api, {**config, "nodes": 2}))
        figures = {arm: {key: round(statistics.median(r[key] for r in results), 2) for key in results[0]}
                   for arm, results in runs.items() if results}

        deaths = [node_death(api, hosts, config) for _ in range(args.kills)]
        resumed = [d for d in deaths if d.pop("resumed")]
        figures["node_death"] = {key: [round(min(d[key] for d in resumed), 2), round(max(d[key] for d in resumed), 2)]
                                 for key in (resumed[0] if resumed else {})}  # [fastest, slowest]
        figures["node_death"]["resumed"] = f"{len(resumed)} of {args.kills}"
        figures["steps"], figures["repeats"], figures["warm_pool"] = args.steps, args.repeats, not args.no_warm_pool
        print(json.dumps(figures, indent=2))
    finally:
        api.close()
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
