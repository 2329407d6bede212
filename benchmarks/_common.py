"""Shared set-up for the benchmark scripts: a running system (real processes, as the tests start it) with the tiny
models and data in its workspace, and an authenticated REST client."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.stack import Stack, start_stack  # noqa: E402
from tests.helpers.tiny_models import build_tiny_llama, write_sft_rows  # noqa: E402

TERMINAL = {"succeeded", "failed", "stopped"}


@contextmanager
def running_system(slots: int = 2, *, tiny_sft: bool = True, **kwargs) -> Iterator[tuple[Stack, httpx.Client]]:
    """The whole system in a fresh workspace, and a client logged in as the admin. `tiny_sft`: with a tiny Llama
    (models/tiny-llama) and 48 SFT rows (data/train.jsonl) in it."""
    workspace = Path(tempfile.mkdtemp(prefix="bugagaric-bench-"))
    if tiny_sft:
        build_tiny_llama(workspace / "models" / "tiny-llama")
        write_sft_rows(workspace / "data" / "train.jsonl", 48)
    stack = start_stack(workspace, slots=slots, **kwargs)
    client = httpx.Client(base_url=stack.base_url, timeout=60, headers={"authorization": f"Bearer {stack.admin_token}"})
    try:
        yield stack, client
    finally:
        client.close()
        stack.stop()
        shutil.rmtree(workspace, ignore_errors=True)


def sft_config(**overrides) -> dict:
    config = {"model_name_or_path": "models/tiny-llama", "train_data_path": "data/train.jsonl", "learning_rate": 5e-3,
              "num_train_epochs": 4, "per_device_train_batch_size": 8, "max_length": 64}
    config.update(overrides)
    return config


def submit(client: httpx.Client, **config) -> dict:
    response = client.post("/api/finetune/start", json={"type": "sft", "config": sft_config(**config)})
    response.raise_for_status()
    return response.json()


def wait(client: httpx.Client, task_id: str, statuses: set[str], timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            task = client.get(f"/api/finetune/tasks/{task_id}").json()
            if task["status"] in statuses:
                return task
        except (httpx.HTTPError, KeyError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{task_id} not in {statuses}")


def event_time(task: dict, to_status: str) -> datetime:
    stamp = next(e["time"] for e in task["events"] if e["to_status"] == to_status)
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
