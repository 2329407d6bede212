"""Data in and models out, across hosts: dataset upload throughput through the gateway, the time for a task to start
when its dataset must be fetched into the agent's cache and when it is already there (cache hit), and the artifact
download throughput (the final model tar and one big file).

The control plane and gateway run in one workspace, one agent in a workspace of its own holding a tiny llama (padded
to about --model-mb of weights so downloads are big enough to time) in its models/ directory: no path is shared.

    .venv/bin/python benchmarks/data_transfer.py [--upload-mb 200] [--model-mb 64] [--finish] [--keep]

Step 2's two tasks are stopped once their fetch step says "inputs ready" (after it the trainer reads all the rows,
minutes for 200k rows on 2 cores even with max_steps 1: not data transfer); --finish runs them to their end. The
downloads of step 3 come from a third task, full weights on a small dataset, run to its end.

MB here is 10^6 bytes. Times are wall clock on this machine (client side for transfers; the task's own event and
log-line times for the start-up figures), reported, not asserted: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from _common import TERMINAL, event_time
from tests.helpers.stack import Stack, start_stack
from tests.helpers.tiny_models import build_tiny_llama, sft_rows

MB = 10**6
ROW_BYTES = 1000  # each dataset row is padded to about this size
AGENT = "host-a"
# The padded model: the tiny llama's tokenizer and shape, with a wider MLP sized to reach --model-mb of float32 weights.
HIDDEN, LAYERS = 256, 2
POLL_SECONDS = 0.25  # status polls only; the figures come from the task's own timestamps


class StepFailed(Exception):
    pass


def machine() -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} CPUs ({usable} usable), "
            f"Python {platform.python_version()}, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def build_padded_llama(out_dir: Path, model_mb: int) -> int:
    """The tiny llama, its weights replaced by a wider MLP so model.safetensors is about `model_mb` MB; returns its
    size in bytes. The tokenizer (and so the rows it learns) is the tiny one's."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    build_tiny_llama(out_dir)
    config = LlamaConfig.from_pretrained(out_dir)
    vocab = config.vocab_size
    head_dim = HIDDEN // config.num_attention_heads
    attention = 2 * HIDDEN * HIDDEN + 2 * HIDDEN * head_dim * config.num_key_value_heads
    fixed = 2 * vocab * HIDDEN + LAYERS * attention  # embeddings, lm head, attention
    per_mlp_width = LAYERS * 3 * HIDDEN  # gate, up and down projections grow with intermediate_size
    intermediate = max(64, (model_mb * MB // 4 - fixed) // per_mlp_width)
    config.hidden_size, config.num_hidden_layers, config.intermediate_size = HIDDEN, LAYERS, int(intermediate)
    config.head_dim = head_dim  # saved by the tiny one (32 / 4): would stay 8 otherwise
    for old in out_dir.glob("model*.safetensors*"):
        old.unlink()
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out_dir)
    return sum(p.stat().st_size for p in out_dir.glob("model*.safetensors"))


def write_dataset(path: Path, upload_mb: int) -> tuple[int, int]:
    """Valid SFT rows of about ROW_BYTES each up to `upload_mb` MB; the padding is an extra `notes` key, which the row
    validator lets through and the trainer ignores (so the rows stay short for max_length 32). -> (bytes, rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    base = [json.dumps(row) for row in sft_rows(10)]
    target, written, rows = upload_mb * MB, 0, 0
    filler = ("lorem ipsum dolor sit amet " * 64)
    with path.open("w", encoding="utf-8", buffering=1 << 20) as out:
        while written < target:
            row = base[rows % len(base)]
            pad = max(0, ROW_BYTES - len(row) - len(', "notes": ""') - 12)
            line = f'{row[:-1]}, "notes": "{rows:010d} {filler[:pad]}"}}\n'
            out.write(line)
            written += len(line)
            rows += 1
    return written, rows


def upload(api: httpx.Client, path: Path) -> tuple[dict, float]:
    """POST /api/finetune/datasets, the file streamed from disk (httpx reads the file object in chunks)."""
    began = time.monotonic()
    with path.open("rb") as handle:
        response = api.post("/api/finetune/datasets", data={"type": "sft"},
                            files={"file": (path.name, handle, "application/jsonl")})
    seconds = time.monotonic() - began
    if response.status_code != 201:
        raise StepFailed(f"upload answered {response.status_code}: {response.text[:1000]}")
    return response.json(), seconds


def submit(api: httpx.Client, dataset_id: str, *, use_lora: bool) -> dict:
    config = {"model_name_or_path": "tiny-llama", "train_data_path": f"dataset:{dataset_id}", "max_steps": 1,
              "max_length": 32, "per_device_train_batch_size": 2, "use_lora": use_lora}
    response = api.post("/api/finetune/start", json={"type": "sft", "config": config})
    if response.status_code != 201:
        raise StepFailed(f"submit answered {response.status_code}: {response.text[:1000]}")
    return response.json()


def wait_task(api: httpx.Client, task_id: str, done, what: str, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    task: dict = {}
    while time.monotonic() < deadline:
        response = api.get(f"/api/finetune/tasks/{task_id}")
        if response.status_code == 200:
            task = response.json()
            if done(task):
                return task
        time.sleep(POLL_SECONDS)
    raise StepFailed(f"task {task_id}: not {what} after {timeout:.0f} s (last status {task.get('status')!r})")


def logs(api: httpx.Client, task_id: str) -> list[dict]:
    response = api.get(f"/api/finetune/tasks/{task_id}/logs", params={"after_seq": 0, "limit": 10000})
    response.raise_for_status()
    return response.json()["lines"]


def stamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def ready_line(api: httpx.Client, task_id: str, timeout: float = 600) -> tuple[dict, dict]:
    """Polls the task and its log until the fetch step's "inputs ready" line; -> (task, that line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = api.get(f"/api/finetune/tasks/{task_id}").json()
        line = next((x for x in logs(api, task_id) if x["text"].startswith("inputs ready")), None)
        if line is not None:
            return task, line
        if task["status"] in TERMINAL:
            tail = "\n".join(x["text"] for x in logs(api, task_id)[-15:])
            raise StepFailed(f"task {task_id} {task['status']} before 'inputs ready': {task.get('error') or ''}\n{tail}")
        time.sleep(POLL_SECONDS)
    raise StepFailed(f"task {task_id}: no 'inputs ready' line after {timeout:.0f} s")


def start_figures(api: httpx.Client, dataset: dict, *, finish: bool) -> dict:
    """One full-weights task on the dataset: submit -> running and submit -> "inputs ready" (the fetch step done, the
    trainer exec'd) from the task's event and log-line times, and the fetch step's lines naming the dataset. Then it
    is stopped (finish=False: what comes after is the trainer reading the rows, not data transfer) or run to its end."""
    task = submit(api, dataset["id"], use_lora=False)
    _, ready = ready_line(api, task["id"])
    if finish:
        task = wait_task(api, task["id"], lambda t: t["status"] in TERMINAL, "ended")
        if task["status"] != "succeeded":
            raise StepFailed(f"task {task['id']} {task['status']}: {task.get('error') or ''}")
    else:
        api.delete(f"/api/finetune/tasks/{task['id']}").raise_for_status()
        task = wait_task(api, task["id"], lambda t: t["status"] in TERMINAL, "stopped", timeout=120)
    submitted = event_time(task, "queued")
    ref = f"dataset:{dataset['id']}"
    return {
        "task": task,
        "running_s": (event_time(task, "running") - submitted).total_seconds(),
        "ready_s": (stamp(ready["time"]) - submitted).total_seconds(),
        "ended_s": (event_time(task, task["status"]) - submitted).total_seconds(),
        "fetch_lines": [x["text"] for x in logs(api, task["id"])
                        if x["text"].startswith(f"{ref}:") and "%" not in x["text"]],
    }


def download(api: httpx.Client, url: str, into: Path) -> tuple[int, float]:
    """Streams a download to disk (never held whole); -> (bytes, seconds)."""
    began = time.monotonic()
    size = 0
    with api.stream("GET", url) as response, into.open("wb") as out:
        if response.status_code != 200:
            response.read()
            raise StepFailed(f"GET {url} answered {response.status_code}: {response.text[:500]}")
        for chunk in response.iter_bytes(1 << 20):
            out.write(chunk)
            size += len(chunk)
    return size, time.monotonic() - began


def rate(size: int, seconds: float) -> str:
    return f"{size / MB:.1f} MB in {seconds:.2f} s = {size / MB / seconds:.1f} MB/s"


def run(args: argparse.Namespace, root: Path) -> None:
    print(machine())
    print(f"workspace: {root}")
    step = "set-up"
    stack: Stack | None = None
    try:
        began = time.monotonic()
        agent_workspace = root / AGENT
        weights = build_padded_llama(agent_workspace / "models" / "tiny-llama", args.model_mb)
        dataset_file = root / "client" / "train.jsonl"
        size, rows = write_dataset(dataset_file, args.upload_mb)
        print(f"built: tiny-llama padded to {weights / MB:.1f} MB of safetensors in the agent's models/; "
              f"dataset {dataset_file.name} {size / MB:.1f} MB, {rows} rows ({time.monotonic() - began:.1f} s)")
        began = time.monotonic()
        stack = start_stack(root / "control-plane", slots=1, agent_workspaces={AGENT: agent_workspace})
        api = httpx.Client(base_url=stack.base_url, timeout=httpx.Timeout(600, connect=10),
                           headers={"authorization": f"Bearer {stack.admin_token}"})
        print(f"system up (control plane + gateway in control-plane/, agent {AGENT} in {AGENT}/) in "
              f"{time.monotonic() - began:.1f} s")

        step = "1. upload"
        dataset, seconds = upload(api, dataset_file)
        if dataset["rows"] != rows or dataset["size"] != size:
            raise StepFailed(f"the dataset came back with {dataset['rows']} rows, {dataset['size']} bytes; "
                             f"sent {rows} rows, {size} bytes")
        print("\n1. upload: POST /api/finetune/datasets (multipart type=sft, file streamed from disk by httpx), "
              "client wall time to the 201")
        print(f"   {rate(size, seconds)}; answer: id {dataset['id']}, rows {dataset['rows']}, "
              f"sha256 {dataset['sha256'][:16]}...")

        step = "2. task start, cache miss then hit"
        first = start_figures(api, dataset, finish=args.finish)
        second = start_figures(api, dataset, finish=args.finish)
        print("\n2. task start on that dataset: two SFT tasks one after the other (tiny-llama, max_steps 1, "
              "max_length 32, full weights);\n   times from the task's own `queued` event (submit) to its `running` "
              "event and to the fetch step's log line 'inputs ready' (the trainer exec'd next)")
        print(f"   {'':28s}{'1st task (fetch)':>18s}{'2nd task (cache)':>18s}")
        last = f"submit -> {second['task']['status']}"
        for label, key in (("submit -> running", "running_s"), ("submit -> inputs ready", "ready_s"),
                           (last, "ended_s")):
            print(f"   {label:28s}{first[key]:>17.2f}s{second[key]:>17.2f}s")
        if not args.finish:
            print("   (each stopped once it said 'inputs ready'; --finish runs them to their end)")
        for name, figures in (("1st", first), ("2nd", second)):
            print(f"   {name} task {figures['task']['id']} fetch lines:")
            for text in figures["fetch_lines"]:
                print(f"     {text}")

        step = "3. artifact download"
        # A run to its end on a small dataset (the big one's 200k rows would only add trainer start-up time).
        small_file = root / "client" / "small.jsonl"
        small_file.write_text("".join(json.dumps(row) + "\n" for row in sft_rows(32)), encoding="utf-8")
        small, _ = upload(api, small_file)
        began = time.monotonic()
        task = submit(api, small["id"], use_lora=False)
        task = wait_task(api, task["id"], lambda t: t["status"] in TERMINAL, "ended")
        if task["status"] != "succeeded":
            tail = "\n".join(x["text"] for x in logs(api, task["id"])[-15:])
            raise StepFailed(f"task {task['id']} {task['status']}: {task.get('error') or ''}\n{tail}")
        trained = time.monotonic() - began
        task = wait_task(api, task["id"], lambda t: t["published_model_sha256"], "published", timeout=300)
        listing = api.get(f"/api/finetune/tasks/{task['id']}/artifacts").json()
        biggest = max(listing["artifacts"], key=lambda a: a["size"])
        out = root / "client" / "downloads"
        out.mkdir(parents=True, exist_ok=True)
        tar_size, tar_seconds = download(api, f"/api/finetune/tasks/{task['id']}/model", out / "model.tar")
        file_size, file_seconds = download(api, f"/api/finetune/tasks/{task['id']}/artifacts/{biggest['path']}",
                                           out / Path(biggest["path"]).name)
        if file_size != biggest["size"]:
            raise StepFailed(f"{biggest['path']}: downloaded {file_size} bytes, listed {biggest['size']}")
        print(f"\n3. download of the artifacts of task {task['id']} (SFT, full weights, 32 rows, max_steps 1: "
              f"submit -> succeeded {trained:.1f} s; listing source: {listing['source']}),\n"
              f"   httpx stream + iter_bytes to disk, client wall time")
        print(f"   GET /api/finetune/tasks/{{id}}/model (tar):           {rate(tar_size, tar_seconds)}")
        print(f"   GET /api/finetune/tasks/{{id}}/artifacts/{biggest['path']}: {rate(file_size, file_seconds)}")
    except (StepFailed, httpx.HTTPError, TimeoutError, RuntimeError, OSError, KeyError, ValueError) as exc:
        print(f"\nFAILED at step {step}: {type(exc).__name__}: {exc}", file=sys.stderr)
        if stack is not None:
            for name in ("control_plane", "gateway", AGENT):
                print(f"--- {name}.log (tail) ---\n{stack.log(name)[-1500:]}", file=sys.stderr)
        raise SystemExit(1)
    finally:
        if stack is not None:
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upload-mb", type=int, default=200, help="dataset size in MB (10^6 bytes); default 200")
    parser.add_argument("--model-mb", type=int, default=64, help="the padded model's weights in MB; default 64")
    parser.add_argument("--finish", action="store_true",
                        help="run the two tasks of step 2 to their end instead of stopping them at 'inputs ready'")
    parser.add_argument("--keep", action="store_true", help="leave the workspace (its path is printed)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bugagaric-transfer-"))
    began = time.monotonic()
    try:
        run(args, root)
    finally:
        print(f"\ntotal {time.monotonic() - began:.0f} s; workspace {'kept at ' + str(root) if args.keep else 'removed'}")
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
