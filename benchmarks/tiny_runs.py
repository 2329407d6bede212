"""Whole-process time (submit -> succeeded, through the running system) and first/final loss of each task type on
the tiny models the tests build, plus the time from the start script's `start` to a task running.

    .venv/bin/python benchmarks/tiny_runs.py
"""

from __future__ import annotations

import time

from _common import TERMINAL, running_system, sft_config, wait
from tests.helpers.dpo_data import tiny_dpo_config, write_dpo_rows
from tests.helpers.embedding_data import tiny_embedding_config, write_embedding_rows
from tests.helpers.kbalign_data import tiny_kbalign_config, write_kb
from tests.helpers.tiny_bert import build_tiny_bert


def main() -> None:
    began = time.monotonic()
    with running_system(slots=1) as (stack, client):
        up = time.monotonic() - began
        workspace = stack.workspace
        build_tiny_bert(workspace / "models" / "tiny-bert")
        write_dpo_rows(workspace / "data" / "dpo.jsonl", 32)
        write_embedding_rows(workspace / "data" / "embedding.jsonl", 80)
        write_kb(workspace / "data" / "kb.jsonl", "jsonl")
        runs = {
            "sft": sft_config(output_dir="output/sft"),
            "dpo": tiny_dpo_config("models/tiny-llama", "data/dpo.jsonl", output_dir="output/dpo"),
            "embedding": tiny_embedding_config("models/tiny-bert", "data/embedding.jsonl", output_dir="output/embedding"),
            "kbalign": tiny_kbalign_config("models/tiny-llama", "data/kb.jsonl", output_dir="output/kbalign"),
        }
        print(f"system up (3 services healthy) in {up:.1f}s")
        for task_type, config in runs.items():
            submitted = time.monotonic()
            task = client.post("/api/finetune/start", json={"type": task_type, "config": config}).json()
            running = wait(client, task["id"], {"running", *TERMINAL})
            to_running = time.monotonic() - submitted
            done = wait(client, task["id"], TERMINAL)
            total = time.monotonic() - submitted
            points = client.get(f"/api/finetune/tasks/{task['id']}/metrics").json()["points"]
            losses = [p["loss"] for p in points if p.get("event") == "step" and p.get("loss") is not None]
            print(f"{task_type:9s} {done['status']:9s} submit->running {to_running:4.1f}s  submit->end {total:5.1f}s  "
                  f"loss {losses[0]:.4f} -> {losses[-1]:.4f} ({len(losses)} steps)")


if __name__ == "__main__":
    main()
