"""How long a control plane killed with -9 takes to be back with every task's stream resumed: from its restart to
the moment each of 3 running tasks has new lines stored again (and it must lose none of them).

    .venv/bin/python benchmarks/recovery_time.py
"""

from __future__ import annotations

import time

from _common import TERMINAL, running_system, submit, wait


def main() -> None:
    with running_system(slots=3) as (stack, client):
        tasks = [submit(client, max_steps=60, output_dir=f"output/recovery-{i}") for i in range(3)]
        for task in tasks:
            wait(client, task["id"], {"running"})
        time.sleep(3)
        stack.kill("control_plane")
        before = {}
        time.sleep(2)
        restarted = time.monotonic()
        stack.restart("control_plane")
        stack.wait_healthy()
        healthy = time.monotonic() - restarted
        for task in tasks:
            before[task["id"]] = client.get(f"/api/finetune/tasks/{task['id']}").json()["last_log_seq"]
        pending = set(before)
        while pending:
            for task_id in list(pending):
                if client.get(f"/api/finetune/tasks/{task_id}").json()["last_log_seq"] > before[task_id]:
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
