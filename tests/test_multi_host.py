"""Data in, models out, across hosts: the control plane and gateway in one workspace, two agents each in a workspace
(and models directory) of its own, no path shared between any two. A dataset is uploaded through the gateway, SFT
trains on the agent that holds the model, the adapter is downloaded and loaded with peft, exported merged and loaded
with transformers alone, and the published model is downloaded again after its agent is gone for good.

Isolation: separate workspaces on loopback (the services are not put in network namespaces: a test here must not
need root or ip-netns, and nothing crosses between the hosts but gRPC either way).
"""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.stack import start_stack
from tests.helpers.tasks import wait_for_task
from tests.helpers.tiny_models import build_tiny_llama, sft_rows

ISOLATION = "separate workspaces on loopback"


def ended(task: dict) -> bool:
    return task["status"] in ("succeeded", "failed", "stopped")


def wait_until(what, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise TimeoutError(what)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi-host")
    host_a, host_b = root / "host-a", root / "host-b"
    build_tiny_llama(host_a / "models" / "tiny-llama")
    (host_b / "models").mkdir(parents=True)
    stack = start_stack(root / "control-plane", slots=2, agent_workspaces={"host-a": host_a, "host-b": host_b})
    api = httpx.Client(base_url=stack.base_url, headers={"authorization": f"Bearer {stack.admin_token}"}, timeout=120)
    wait_until("both agents alive", lambda: len([a for a in api.get("/api/health").json()["agents"] if a["alive"]]) == 2)
    yield stack, api, host_a, host_b
    api.close()
    stack.stop()


def upload(api: httpx.Client, data: bytes, name: str = "train.jsonl", type: str = "sft") -> httpx.Response:
    return api.post("/api/finetune/datasets", data={"type": type}, files={"file": (name, data, "application/jsonl")})


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def test_bad_uploads_output_dirs_and_other_users(hosts):
    stack, api, _, _ = hosts
    rows = [json.dumps(row) for row in sft_rows(10)]
    rows[6] = json.dumps({"query": "q", "chosen": {"text": ""}})
    refused = upload(api, ("\n".join(rows) + "\n").encode(), name="bad.jsonl")
    assert refused.status_code == 400, refused.text
    assert "line 7" in refused.json()["error"]["message"] and "chosen.text" in refused.json()["error"]["message"]
    assert all(d["name"] != "bad.jsonl" for d in api.get("/api/finetune/datasets").json()["datasets"])

    good = upload(api, jsonl(sft_rows(8)), name="shared.jsonl").json()
    assert upload(api, jsonl(sft_rows(8)), name="shared.jsonl").json()["id"] == good["id"]

    other = httpx.Client(base_url=stack.base_url, timeout=60,
                         headers={"authorization": f"Bearer {stack.create_user('mallory', 'mallory-password-1')}"})
    assert good["id"] not in {d["id"] for d in other.get("/api/finetune/datasets").json()["datasets"]}
    assert other.get(f"/api/finetune/datasets/{good['id']}").status_code == 404
    stolen = other.post("/api/finetune/start", json={"type": "sft", "config": {
        "model_name_or_path": "tiny-llama", "train_data_path": f"dataset:{good['id']}"}})
    assert stolen.status_code == 400 and stolen.json()["error"]["field"] == "train_data_path"

    missing = api.post("/api/finetune/start", json={"type": "sft", "config": {
        "model_name_or_path": "no-such-model", "train_data_path": f"dataset:{good['id']}"}})
    assert missing.status_code == 400 and missing.json()["error"]["field"] == "model_name_or_path"
    assert "tiny-llama" in missing.json()["error"]["message"]

    config = {"model_name_or_path": "tiny-llama", "train_data_path": f"dataset:{good['id']}", "max_length": 32,
              "max_steps": 1, "output_dir": "output/team-run"}
    assert api.post("/api/finetune/start", json={"type": "sft", "config": config}).status_code == 201
    second = api.post("/api/finetune/start", json={"type": "sft", "config": config})
    assert second.status_code == 400 and second.json()["error"]["field"] == "output_dir"

    # Three runs of one type with the template's config (no output_dir): three directories.
    template = next(t for t in api.get("/api/finetune/templates").json()["templates"] if t["type"] == "sft")
    assert "output_dir" not in template["default_config"]
    runs = [api.post("/api/finetune/start", json={"type": "sft", "config": {
        **template["default_config"], "model_name_or_path": "tiny-llama", "train_data_path": f"dataset:{good['id']}",
        "max_length": 32, "max_steps": 1, "num_train_epochs": 1}}).json()["id"] for _ in range(3)]
    finished = [wait_for_task(api, run, ended) for run in runs]
    assert all(t["status"] == "succeeded" for t in finished), finished
    assert len({t["output_dir"] for t in finished}) == 3


def test_a_restarted_control_plane_publishes_what_it_had_not(hosts):
    stack, api, _, _ = hosts
    dataset = upload(api, jsonl(sft_rows(8)), name="republish.jsonl").json()
    started = api.post("/api/finetune/start", json={"type": "sft", "config": {
        "model_name_or_path": "tiny-llama", "train_data_path": f"dataset:{dataset['id']}", "max_length": 32,
        "max_steps": 1}})
    task = wait_for_task(api, started.json()["id"], lambda t: t["published_model_sha256"])
    # As if the control plane had died while copying the model: no published row, then a restart.
    stack.kill("control_plane")
    with sqlite3.connect(stack.workspace / "var" / "bugagaric.db") as db:
        db.execute("DELETE FROM published_model WHERE task_id = ?", (task["id"],))
    stack.restart("control_plane")
    again = wait_for_task(api, task["id"], lambda t: t["published_model_sha256"], timeout=120)
    assert len(again["published_model_sha256"]) == 64


# Last: it kills host-a for good.
def test_upload_train_download_export_and_outlive_the_agent(hosts, tmp_path, record_property):
    stack, api, host_a, host_b = hosts
    record_property("isolation", ISOLATION)
    print(f"isolation: {ISOLATION}")
    models = wait_until("host-a reports its model", lambda: api.get("/api/finetune/models").json()["models"])
    assert [(m["name"], m["kind"], m["agents"]) for m in models] == [("tiny-llama", "causal_lm", ["host-a"])]

    dataset = upload(api, jsonl(sft_rows(16)))
    assert dataset.status_code == 201, dataset.text
    dataset = dataset.json()
    assert dataset["rows"] == 16 and len(dataset["sha256"]) == 64

    config = {"model_name_or_path": "tiny-llama", "train_data_path": f"dataset:{dataset['id']}", "max_length": 32,
              "per_device_train_batch_size": 4, "max_steps": 2, "use_lora": True}
    started = api.post("/api/finetune/start", json={"type": "sft", "config": config})
    assert started.status_code == 201, started.text
    task = wait_for_task(api, started.json()["id"], ended)
    assert task["status"] == "succeeded", task
    assert task["agent_id"] == "host-a"  # the only agent holding the model
    assert task["output_dir"].startswith(str(host_a)) and not str(task["output_dir"]).startswith(str(stack.workspace))
    task = wait_for_task(api, task["id"], lambda t: t["published_model_sha256"])

    artifacts = api.get(f"/api/finetune/tasks/{task['id']}/artifacts").json()
    assert artifacts["source"] == "agent"
    kinds = {a["path"]: a["kind"] for a in artifacts["artifacts"]}
    assert kinds["adapter_config.json"] == "adapter" and kinds["adapter_model.safetensors"] == "adapter"
    adapter_dir = tmp_path / "adapter"
    adapter_dir.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        response = api.get(f"/api/finetune/tasks/{task['id']}/artifacts/{name}")
        assert response.status_code == 200, response.text
        (adapter_dir / name).write_bytes(response.content)
    (Path(task["output_dir"]) / "escape").symlink_to(host_a / "models" / "tiny-llama" / "config.json")
    for bad in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "sub/..%2F..%2Fsecret", "escape"):
        refused = api.get(f"/api/finetune/tasks/{task['id']}/artifacts/{bad}")
        assert refused.status_code == 400 and refused.json()["error"]["field"] == "path", (bad, refused.text)
        assert "vocab_size" not in refused.text
    load_adapter = (
        "import sys, torch\nfrom transformers import AutoModelForCausalLM\nfrom peft import PeftModel\n"
        "base = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
        "model = PeftModel.from_pretrained(base, sys.argv[2])\n"
        "print(type(model).__name__, sum(p.numel() for n, p in model.named_parameters() if 'lora' in n))\n")
    loaded = subprocess.run([sys.executable, "-c", load_adapter, str(host_a / "models" / "tiny-llama"),
                             str(adapter_dir)], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0 and loaded.stdout.startswith("PeftModel"), loaded.stderr[-2000:]

    exported = api.post(f"/api/finetune/tasks/{task['id']}/export", json={"merge_lora": True})
    assert exported.status_code == 201, exported.text
    assert exported.json()["type"] == "export"
    export_task = wait_for_task(api, exported.json()["id"], ended)
    assert export_task["status"] == "succeeded", export_task
    export_task = wait_for_task(api, export_task["id"], lambda t: t["published_model_sha256"])
    merged_dir = tmp_path / "merged"
    extract(api.get(f"/api/finetune/tasks/{export_task['id']}/model"), merged_dir)
    assert not (merged_dir / "adapter_config.json").exists()
    load_alone = (
        "import sys\nsys.modules['peft'] = None\nfrom transformers import AutoModelForCausalLM\n"
        "model = AutoModelForCausalLM.from_pretrained(sys.argv[1])\nprint(type(model).__name__)\n")
    loaded = subprocess.run([sys.executable, "-c", load_alone, str(merged_dir)], capture_output=True, text=True,
                            timeout=120)
    assert loaded.returncode == 0 and "ForCausalLM" in loaded.stdout, loaded.stderr[-2000:]

    # The agent's host is gone for good: the published model is still there.
    stack.kill("host-a")
    again = tmp_path / "again"
    extract(api.get(f"/api/finetune/tasks/{task['id']}/model"), again)
    assert (again / "adapter_model.safetensors").read_bytes() == (adapter_dir / "adapter_model.safetensors").read_bytes()
    listed = wait_until("artifacts served from the published model", lambda: (
        (r := api.get(f"/api/finetune/tasks/{task['id']}/artifacts").json()).get("source") == "published" and r))
    assert "adapter_model.safetensors" in {a["path"] for a in listed["artifacts"]}
    assert not any(a["kind"] == "checkpoint" for a in listed["artifacts"])


def extract(response: httpx.Response, into: Path) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-tar")
    with tarfile.open(fileobj=io.BytesIO(response.content)) as archive:
        archive.extractall(into, filter="data")
