"""Submitting and waiting for tasks over REST, for the tests that drive a whole system."""

from __future__ import annotations

import time

import httpx


def tiny_sft_config(**overrides) -> dict:
    """A tiny SFT task on the workspace's models/tiny-llama and data/train.jsonl: a couple of steps by default."""
    config = {"model_name_or_path": "models/tiny-llama", "train_data_path": "data/train.jsonl", "max_length": 32,
              "per_device_train_batch_size": 4, "max_steps": 2}
    config.update(overrides)
    return config


def wait_for_task(api: httpx.Client, task_id: str, done, timeout: float = 180) -> dict:
    """The task once `done(task)` holds; a control plane restarting meanwhile (503, no answer) is waited out."""
    deadline = time.monotonic() + timeout
    task = None
    while time.monotonic() < deadline:
        try:
            response = api.get(f"/api/finetune/tasks/{task_id}")
        except httpx.HTTPError:
            response = None
        if response is None or response.status_code == 503:
            time.sleep(0.3)
            continue
        task = response.json()
        if done(task):
            return task
        time.sleep(0.2)
    raise TimeoutError(f"task {task_id}: {task}")


ENDED = frozenset({"succeeded", "failed", "stopped"})


def train_until_published(api: httpx.Client, task_type: str, config: dict, timeout: float = 300) -> dict:
    """Starts a task and returns it once it has succeeded and its model is published (what chat and export load);
    a task that ends otherwise fails the test with its record."""
    response = api.post("/api/finetune/start", json={"type": task_type, "config": config})
    assert response.status_code == 201, response.text
    return wait_until_published(api, response.json()["id"], timeout)


def wait_until_published(api: httpx.Client, task_id: str, timeout: float = 300) -> dict:
    """The task once it has succeeded and its model is published; a task that ends otherwise fails the test."""
    task = wait_for_task(api, task_id,
                         lambda t: t["status"] in ENDED and (t["status"] != "succeeded" or t["published_model_sha256"]),
                         timeout=timeout)
    assert task["status"] == "succeeded", task
    return task
