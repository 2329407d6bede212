"""All four task types — and a fifth registered from the test — train for real through the running system, started
with the seed's config keys from POST /api/finetune/start; bad rows of each format are reported by line, by the dry
run and at submit."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.dpo_data import tiny_dpo_config, write_dpo_rows
from tests.helpers.embedding_data import tiny_embedding_config, write_embedding_rows
from tests.helpers.kbalign_data import tiny_kbalign_config, write_kb
from tests.helpers.stack import start_stack
from tests.helpers.tiny_bert import build_tiny_bert
from tests.helpers.tiny_models import write_sft_rows

TERMINAL = {"succeeded", "failed", "stopped"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_llama_dir):
    workspace = tmp_path_factory.mktemp("types")
    shutil.copytree(tiny_llama_dir, workspace / "models" / "tiny-llama")
    build_tiny_bert(workspace / "models" / "tiny-bert")
    write_sft_rows(workspace / "data" / "sft.jsonl", 32)
    write_dpo_rows(workspace / "data" / "dpo.jsonl", 32)
    write_embedding_rows(workspace / "data" / "embedding.jsonl", 80)
    write_kb(workspace / "data" / "kb.jsonl", "jsonl")
    (workspace / "data" / "qa.jsonl").write_text(
        "".join(json.dumps({"question": f"What colour is item {i % 4}?", "answer": f"Item {i % 4} is {['red', 'blue', 'green', 'gold'][i % 4]}."}) + "\n" for i in range(24))
    )
    running = start_stack(workspace, slots=2, extra_env={"BUGAGARIC_TRAINER_PLUGINS": "tests.helpers.fifth_type"})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(stack):
    with httpx.Client(base_url=stack.base_url, timeout=120, headers={"authorization": f"Bearer {stack.admin_token}"}) as client:
        yield client


def run_to_end(api, task_type: str, config: dict, timeout: float = 400) -> tuple[dict, float]:
    started = time.monotonic()
    response = api.post("/api/finetune/start", json={"type": task_type, "config": config})
    assert response.status_code == 201, response.text
    task_id = response.json()["id"]
    deadline = time.monotonic() + timeout
    while (task := api.get(f"/api/finetune/tasks/{task_id}").json())["status"] not in TERMINAL:
        assert time.monotonic() < deadline, f"{task_type} did not finish"
        time.sleep(0.5)
    return task, time.monotonic() - started


def step_losses(api, task_id: str) -> list[float]:
    points = api.get(f"/api/finetune/tasks/{task_id}/metrics").json()["points"]
    return [p["loss"] for p in points if p.get("event") == "step" and p.get("loss") is not None]


def assert_loss_falls(losses: list[float]) -> None:
    assert len(losses) >= 6, losses
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first, f"loss did not fall: {first:.4f} -> {last:.4f}"


def test_templates_cover_every_type(api):
    templates = {t["type"]: t for t in api.get("/api/finetune/templates").json()["templates"]}
    assert {"sft", "dpo", "embedding", "kbalign", "qa"} <= set(templates)
    for name in ("sft", "dpo", "embedding", "kbalign"):
        template = templates[name]
        assert template["description"] and template["default_config"] and template["data_example"]
        assert template["json_schema"]["type"] == "object" and template["json_schema"]["properties"]
    assert templates["dpo"]["default_config"]["beta"] == 0.1
    assert "gpu_vis" not in templates["kbalign"]["default_config"]  # devices are the platform's choice
    assert "train_data" in templates["embedding"]["default_config"]


def test_sft(api):
    task, seconds = run_to_end(api, "sft", {
        "model_name_or_path": "models/tiny-llama", "train_data_path": "data/sft.jsonl", "output_dir": "output/sft",
        "use_lora": True, "learning_rate": 5e-3, "num_train_epochs": 3, "per_device_train_batch_size": 4, "max_length": 64,
    })
    assert task["status"] == "succeeded", task["error"]
    losses = step_losses(api, task["id"])
    assert_loss_falls(losses)
    print(f"\nsft: {seconds:.1f}s submit-to-end, loss {losses[0]:.4f} -> {losses[-1]:.4f}")


def test_dpo(api):
    config = tiny_dpo_config("models/tiny-llama", "data/dpo.jsonl", output_dir="output/dpo")
    task, seconds = run_to_end(api, "dpo", config)
    assert task["status"] == "succeeded", task["error"]
    losses = step_losses(api, task["id"])
    assert_loss_falls(losses)
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"} <= set(task["latest_metrics"])
    print(f"\ndpo: {seconds:.1f}s submit-to-end, loss {losses[0]:.4f} -> {losses[-1]:.4f}")


def test_embedding(api, stack):
    config = tiny_embedding_config("models/tiny-bert", "data/embedding.jsonl", output_dir=None)  # one of its own
    task, seconds = run_to_end(api, "embedding", config)
    assert task["status"] == "succeeded", task["error"]
    losses = step_losses(api, task["id"])
    assert_loss_falls(losses)
    points = api.get(f"/api/finetune/tasks/{task['id']}/metrics").json()["points"]
    evals = {p["phase"]: p for p in points if p.get("event") == "eval"}
    assert {"before", "after"} <= set(evals)
    for key in ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"):
        assert 0 <= evals["before"][key] <= 1 and 0 <= evals["after"][key] <= 1, key
    assert task["output_dir"] == str(stack.workspace / "output" / "embedding" / task["id"])
    summary = json.loads((Path(task["output_dir"]) / "training_summary.json").read_text())
    assert summary["eval_before"]["recall@1"] == evals["before"]["recall@1"]
    print(f"\nembedding: {seconds:.1f}s, loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
          f"recall@1 {evals['before']['recall@1']:.3f} -> {evals['after']['recall@1']:.3f}")


def test_kbalign(api, stack):
    config = tiny_kbalign_config("models/tiny-llama", "data/kb.jsonl", output_dir="output/kbalign")
    task, seconds = run_to_end(api, "kbalign", config)
    assert task["status"] == "succeeded", task["error"]
    losses = step_losses(api, task["id"])
    assert_loss_falls(losses)
    points = api.get(f"/api/finetune/tasks/{task['id']}/metrics").json()["points"]
    stages = {p["stage"] for p in points if p.get("event") == "stage"}
    assert {"annotate_short", "annotate_long", "clustering", "train_round_1", "train_round_2"} <= stages, stages
    # Each stage counts its items, and the task's progress carries the stage it is in with that count.
    annotating = [p for p in points if p.get("event") == "stage" and p["stage"] == "annotate_short"]
    assert annotating[-1]["total"] > 0 and annotating[-1]["done"] == annotating[-1]["total"], annotating
    last = [p for p in points if p.get("event") == "stage"][-1]
    progress = task["progress"]
    assert (progress["stage"], progress["stage_done"], progress["stage_total"]) == (last["stage"], last["done"],
                                                                                  last["total"]), progress
    assert (Path(task["output_dir"]) / "annotations").is_dir()
    print(f"\nkbalign: {seconds:.1f}s, loss {losses[0]:.4f} -> {losses[-1]:.4f}")


def test_a_fifth_type_registered_from_the_test_validates_and_trains(api):
    report = api.post("/api/finetune/validate", json={"type": "qa", "config": {
        "model_name_or_path": "models/tiny-llama", "train_data_path": "data/qa.jsonl"}}).json()
    assert report["ok"] and report["rows"] == 24
    task, _ = run_to_end(api, "qa", {
        "model_name_or_path": "models/tiny-llama", "train_data_path": "data/qa.jsonl", "output_dir": "output/qa",
        "learning_rate": 5e-3, "per_device_train_batch_size": 4, "max_steps": 18, "max_length": 48,
    })
    assert task["status"] == "succeeded", task["error"]
    assert_loss_falls(step_losses(api, task["id"]))


BAD_ROWS = {
    # type: (config with the data path, rows, {(line, field prefix)})
    "sft": ("train_data_path", ['{"query": "q"}', '{"query": "q", "chosen": {"text": 3}}', "not json"],
            {(1, "chosen"), (2, "chosen.text"), (3, "")}),
    "dpo": ("train_data_path", ['{"query": "q", "chosen": {"text": "a"}}', '{"query": "q", "chosen": {"text": "a"}, "rejected": {"text": "a"}}', "{"],
            {(1, "rejected"), (2, "rejected.text"), (3, "")}),
    "embedding": ("train_data", ['{"query": "q", "pos": [], "neg": []}', '{"pos": ["p"]}', '{"query": 5, "pos": ["p"]}'],
                  {(1, "pos"), (2, "query"), (3, "query")}),
    "kbalign": ("input_path", ['{"text": "a chunk"}', '{"text": 7}', "nope"], {(2, "text"), (3, "")}),
}


@pytest.mark.parametrize("task_type", sorted(BAD_ROWS))
def test_bad_rows_are_reported_by_line_in_the_dry_run_and_at_submit(api, stack, task_type):
    key, rows, expected = BAD_ROWS[task_type]
    path = stack.workspace / "data" / f"bad-{task_type}.jsonl"
    path.write_text("\n".join(rows) + "\n")
    model = "models/tiny-bert" if task_type == "embedding" else "models/tiny-llama"
    config = {"model_name_or_path": model, key: f"data/bad-{task_type}.jsonl"}
    report = api.post("/api/finetune/validate", json={"type": task_type, "config": config}).json()
    assert report["ok"] is False and report["error"]["field"] == key, report
    found = {(p["line"], p["field"]) for p in report["problems"]}
    for line, field in expected:
        assert any(l == line and f.startswith(field) for l, f in found), (line, field, report["problems"])
    refused = api.post("/api/finetune/start", json={"type": task_type, "config": config})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == key
    first_line = min(line for line, _ in expected)
    assert f"line {first_line}" in refused.json()["error"]["message"] and f"bad-{task_type}.jsonl" in refused.json()["error"]["message"]
