"""Scheduling latency with two agents: submit -> starting (placement) and submit -> running (trainer started), from
the tasks' own event times, for tasks submitted while devices are free.

    .venv/bin/python benchmarks/scheduling_latency.py [--tasks 4]
"""

from __future__ import annotations

import argparse
import statistics

from _common import TERMINAL, event_time, running_system, submit, wait


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=4)
    args = parser.parse_args()
    with running_system(slots=2) as (stack, client):
        stack.add_agent("agent-2", 2)
        placed, started = [], []
        for i in range(args.tasks):  # one at a time, each on free devices
            task = submit(client, max_steps=3, output_dir=f"output/bench-{i}")
            done = wait(client, task["id"], TERMINAL)
            submitted = event_time(done, "queued")
            placed.append((event_time(done, "starting") - submitted).total_seconds() * 1000)
            started.append((event_time(done, "running") - submitted).total_seconds() * 1000)
        print(f"submit -> starting: median {statistics.median(placed):.0f} ms, max {max(placed):.0f} ms ({len(placed)} tasks)")
        print(f"submit -> running:  median {statistics.median(started):.0f} ms, max {max(started):.0f} ms")


if __name__ == "__main__":
    main()
