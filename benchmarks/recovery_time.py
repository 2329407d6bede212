"""How long a control plane killed with -9 takes to be back with every task's stream resumed: from its restart to
the moment the store holds, for each of 3 running tasks, every line its agent had spooled by the restart (and none
lost or doubled by the end).

    .venv/bin/python benchmarks/recovery_time.py
"""

from __future__ import annotations

import json
import time

from _common import TERMINAL, running_system, submit, wait


def spooled_lines(stack, task_id: str) -> int:
    spool = stack.agent_dir() / "tasks" / task_id / "attempt-1" / "spool.jsonl"
    return sum(1 for line in spool.read_text().splitlines() if json.loads(line).get("kind") == "log")


def main() -> None:
    with running_system(slots=3) as (stack, client):
        tasks = [submit(client, max_steps=60, output_dir=f"output/recovery-{i}") for i in range(3)]
        for task in tasks:
            wait(client, task["id"], {"running"})
        time.sleep(3)
        stack.kill("control_plane")
        time.sleep(2)
        spooled = {task["id"]: spooled_lines(stack, task["id"]) for task in tasks}  # what ingestion must catch up on
        restarted = time.monotonic()
        stack.restart("control_plane")
        stack.wait_healthy()
        healthy = time.monotonic() - restarted
        pending = set(spooled)
        while pending:
            for task_id in list(pending):
                if client.get(f"/api/finetune/tasks/{task_id}").json()["last_log_seq"] >= spooled[task_id]:
                    pending.discard(task_id)
            time.sleep(0.05)
        resumed = time.monotonic() - restarted
        lost = 0
        for task in tasks:
            done = wait(client, task["id"], TERMINAL)
            lines = client.get(f"/api/finetune/tasks/{task['id']}/logs", params={"after_seq": 0, "limit": 10000}).json()["lines"]
            seqs = [line["seq"] for line in lines]
            lost += (done["last_log_seq"] - len(set(seqs))) + (len(seqs) - len(set(seqs)))
        print(f"restart -> healthy: {healthy:.1f}s; restart -> all 3 streams resumed: {resumed:.1f}s; lines lost or doubled: {lost}")


if __name__ == "__main__":
    main()
