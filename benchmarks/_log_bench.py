"""Shared by the log benchmarks: a running system with the `log-bench` trainer type, submitting it, reading logs."""

from __future__ import annotations

import os
import time

import httpx

from _common import TERMINAL, running_system  # noqa: F401  (TERMINAL: for the scripts that import it from here)

PLUGIN = "tests.helpers.log_printer"


def log_system():
    """The whole system with the `log-printer` trainer type registered on its agent."""
    return running_system(slots=1, tiny_sft=False, extra_env={"BUGAGARIC_TRAINER_PLUGINS": PLUGIN})


def submit_printer(client: httpx.Client, **config) -> dict:
    response = client.post("/api/finetune/start", json={"type": "log-printer", "config": config})
    response.raise_for_status()
    return response.json()


def all_lines(client: httpx.Client, task_id: str) -> list[dict]:
    lines: list[dict] = []
    while True:
        after = lines[-1]["seq"] if lines else 0
        page = client.get(f"/api/finetune/tasks/{task_id}/logs", params={"after_seq": after, "limit": 10000}).json()["lines"]
        if not page:
            return lines
        lines.extend(page)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def wait_stored(client: httpx.Client, task_id: str, seq: int, timeout: float = 600) -> float:
    """time.time() when the store first holds line `seq` of the task (polled every 20 ms through the gateway)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get(f"/api/finetune/tasks/{task_id}").json()["last_log_seq"] >= seq:
                return time.time()
        except (httpx.HTTPError, KeyError):
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{task_id}: line {seq} not stored after {timeout}s")
