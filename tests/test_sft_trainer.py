"""`python -m trainers.sft` as the agent runs it: a real subprocess on a tiny Llama built on the spot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.tiny_models import write_sft_rows
from trainers.errors import EXIT_INVALID_DATA, EXIT_OK, EXIT_TRAINER_ERROR


def run_trainer(workspace: Path, config: dict, timeout: float = 240, **env) -> subprocess.CompletedProcess:
    (workspace / "cfg.json").write_text(json.dumps(config), encoding="utf-8")
    full_env = {**os.environ, "BUGAGARIC_WORKSPACE": str(workspace), "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-m", "trainers.sft", "--config", "cfg.json"], cwd=workspace,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def last_stderr_line(proc: subprocess.CompletedProcess) -> str:
    return [line for line in proc.stderr.splitlines() if line.strip()][-1]


def test_sft_lora_run_learns_and_saves_an_adapter(tiny_llama_dir, tmp_path):
    write_sft_rows(tmp_path / "data/train.jsonl", 48)
    metrics = tmp_path / "metrics.jsonl"
    config = {
        "model_name_or_path": str(tiny_llama_dir), "train_data_path": "data/train.jsonl", "output_dir": "output/sft",
        "use_lora": True, "learning_rate": 5e-3, "num_train_epochs": 10, "per_device_train_batch_size": 4,
        "max_steps": 40, "max_length": 128,
    }
    started = time.monotonic()
    proc = run_trainer(tmp_path, config, BUGAGARIC_METRICS_FILE=str(metrics), BUGAGARIC_TASK_ID="task-1")
    wall = time.monotonic() - started
    print(f"tiny SFT run: {wall:.1f}s wall")
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]

    events = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert events[0]["event"] == "start" and events[0]["total_steps"] == 40 and events[-1]["event"] == "end"
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == 40 and all(e["task_id"] == "task-1" for e in events)
    for key in ("step", "total_steps", "epoch", "loss", "learning_rate", "eta_seconds"):
        assert steps[-1][key] is not None, key
    losses = [e["loss"] for e in steps]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.5, (first, last)
    assert "step 40/40 loss=" in proc.stdout

    out = tmp_path / "output/sft"
    assert (out / "adapter_config.json").is_file()
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["global_step"] == 40 and summary["num_rows"] == 48 and summary["use_lora"] is True
    assert summary["final_loss"] < summary["first_loss"]

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), out)
    assert model.peft_config["default"].r == 8


def test_unknown_model_offline_fails_with_a_clear_last_line(tmp_path):
    write_sft_rows(tmp_path / "data/train.jsonl", 4)
    proc = run_trainer(tmp_path, {"model_name_or_path": "no-such-org/no-such-model",
                                  "train_data_path": "data/train.jsonl"})
    assert proc.returncode == EXIT_TRAINER_ERROR, proc.stderr[-3000:]
    assert last_stderr_line(proc) == (
        "error: model 'no-such-org/no-such-model' not found: no local directory 'no-such-org/no-such-model' "
        "and the model hub is unreachable (HF_HUB_OFFLINE=1)"
    )


def test_bad_data_exits_3_naming_the_line(tmp_path):
    rows = tmp_path / "data/train.jsonl"
    write_sft_rows(rows, 3)
    with rows.open("a") as handle:
        handle.write('{"query": "q", "chosen": {"txt": "a"}}\n')
    proc = run_trainer(tmp_path, {"model_name_or_path": "whatever", "train_data_path": "data/train.jsonl"}, timeout=60)
    assert proc.returncode == EXIT_INVALID_DATA, proc.stderr
    assert "line 4: chosen.text: Field required" in proc.stderr
    assert last_stderr_line(proc).startswith("error: train_data_path: ")
    assert "data/train.jsonl line 4" in last_stderr_line(proc)


@pytest.mark.parametrize(("config", "words"), [
    ({"learning_rate": "fast"}, "learning_rate"),
])
def test_bad_config_exits_3(tmp_path, config, words):
    proc = run_trainer(tmp_path, {"model_name_or_path": "m", "train_data_path": "x.jsonl", **config}, timeout=60)
    assert proc.returncode == EXIT_INVALID_DATA and words in last_stderr_line(proc)


def test_model_loading_errors_and_tiny_model_defaults(tiny_llama_dir, tmp_path, monkeypatch):
    from trainers.common.model_loading import DEFAULT_CHAT_TEMPLATE, load_causal_lm, load_tokenizer
    from trainers.errors import ModelNotFound

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match=r"HF_HUB_OFFLINE=1"):
        load_tokenizer("no-such-org/no-such-model", tmp_path)
    with pytest.raises(ModelNotFound, match=r"no local directory '.*models/nope'$"):
        load_tokenizer("./models/nope", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="not a model directory"):
        load_tokenizer("empty", tmp_path)

    model, tokenizer = load_causal_lm(str(tiny_llama_dir))
    assert tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE and tokenizer.pad_token is not None
    prompt = [{"role": "user", "content": "What colour is the sky?"}]
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": "Blue."}], tokenize=False)
    assert full.startswith(text)  # trl masks the prompt by this prefix
    assert model.config.vocab_size == len(tokenizer)


def test_config_file_extras_are_checked_by_name(tmp_path):
    from trl import SFTConfig

    from trainers import registry
    from trainers.common.training_args import build_args
    from trainers.errors import ConfigError

    sft = registry.get("sft")
    (tmp_path / "extra.yaml").write_text("weight_decay: 0.1\nlerning_rate_decay: 2\n", encoding="utf-8")
    cfg = sft.parse_config({"model_name_or_path": "m", "train_data_path": "d", "config_file": "extra.yaml"})
    with pytest.raises(ConfigError) as info:
        build_args(SFTConfig, cfg, tmp_path / "output", tmp_path)
    assert info.value.field == "config_file" and "'lerning_rate_decay'" in info.value.message
    (tmp_path / "extra.yaml").write_text("weight_decay: 0.1\nlearning_rate: 0.001\n", encoding="utf-8")
    args = build_args(SFTConfig, cfg, tmp_path / "output", tmp_path, max_length=64)
    assert (args.weight_decay, args.learning_rate, args.max_length) == (0.1, 0.001, 64)
    assert args.bf16 is False and args.gradient_checkpointing is False and args.report_to == []


# --- what the trainer trains on (in-process, the real trl trainer built by the workflow) ---------------------------

def _workflow(tmp_path, tiny_llama_dir, **overrides):
    from trainers import registry
    from trainers.common.cli import RunContext
    from trainers.sft.train import SftWorkflow

    config = registry.get("sft").parse_config({
        "model_name_or_path": str(tiny_llama_dir), "train_data_path": "data/train.jsonl", "max_length": 96,
        "learning_rate": 5e-3, "per_device_train_batch_size": 2, "max_steps": 2, **overrides})
    return SftWorkflow(config, RunContext("sft", tmp_path, tmp_path / "output" / "sft", None, None))


def test_prompt_tokens_are_masked_and_a_long_rag_row_keeps_its_answer(tiny_llama_dir, tmp_path):
    rows = write_sft_rows(tmp_path / "data/train.jsonl", 4)
    long_row = {"query": "What colour is the apple?", "chosen": {"text": "The apple is red."},
                "retrieval_result": ["The apple is red. " * 40, "The sky is blue. " * 40]}
    with rows.open("a") as handle:
        handle.write(json.dumps(long_row) + "\n")
    built = _workflow(tmp_path, tiny_llama_dir).build()
    tokenizer, dataset = built.processor, built.trainer.train_dataset
    assert len(dataset) == 5 and built.prepared.fits["rows"].report() == {
        "rows_trained": 5, "rows_trimmed": 1, "rows_dropped": 0, "rows_dropped_lines": []}

    from trainers.sft.data import fit_record
    from trainers.sft.spec import parse_row
    from trainers.common.prompt_fit import PromptFitter

    for number, line in enumerate(rows.read_text().splitlines()):
        _, record = fit_record(parse_row(json.loads(line)), PromptFitter(tokenizer, 96))
        prompt_ids = tokenizer.apply_chat_template(record["prompt"], add_generation_prompt=True, tokenize=True,
                                                   return_dict=False)
        example = dataset[number]
        labels, input_ids = example["labels"], example["input_ids"]
        assert len(input_ids) <= 96
        assert input_ids[:len(prompt_ids)] == prompt_ids
        assert all(label == -100 for label in labels[:len(prompt_ids)]), number  # no loss on the prompt
        assert labels[len(prompt_ids):] == input_ids[len(prompt_ids):], number  # the whole answer is learned
        answer = tokenizer.decode(labels[len(prompt_ids):], skip_special_tokens=True)
        assert answer.strip() == record["completion"][0]["content"]
    assert "The apple is red." in tokenizer.decode(dataset[4]["input_ids"])  # the long row: trimmed, answer intact


def test_full_fine_tuning_under_mixed_precision_keeps_float32_weights(tiny_llama_dir, tmp_path):
    """bf16 autocast (CPU autocast here) runs the products in bf16; the weights the optimizer updates stay float32."""
    import torch
    from safetensors import safe_open

    write_sft_rows(tmp_path / "data/train.jsonl", 8)
    workflow = _workflow(tmp_path, tiny_llama_dir, use_lora=False, precision="bf16")
    built = workflow.build()
    assert built.args.bf16 is True
    model = built.trainer.model
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    built.trainer.train()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert any(not torch.equal(before[name], p) for name, p in model.named_parameters())  # it did train
    workflow.save(built.trainer, built.processor, tmp_path / "saved")
    with safe_open(str(tmp_path / "saved" / "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.float32}


def test_speed_and_memory_options_reach_the_trainer(tiny_llama_dir, tmp_path):
    write_sft_rows(tmp_path / "data/train.jsonl", 8)
    built = _workflow(tmp_path, tiny_llama_dir, packing=True, gradient_checkpointing=True, save_total_limit=2,
                      save_steps=1).build()
    args = built.args
    assert (args.packing, args.gradient_checkpointing, args.save_total_limit, args.save_steps) == (True, True, 2, 1)
    assert args.completion_only_loss is True
    # LoRA on every linear layer by default, never the output head.
    targets = {name.rsplit(".", 1)[-1] for name in built.trainer.model.peft_config["default"].target_modules}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert len(built.trainer.train_dataset) < 8  # packed: several rows per sequence
    built.trainer.train()  # packing (padding-free, position ids) and checkpointing really run
    checkpoints = sorted(p.name for p in (tmp_path / "output/sft").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-1", "checkpoint-2"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a CPU-only agent's answer")
@pytest.mark.parametrize(("option", "words"), [
    ({"quantization": "4bit"}, "needs a CUDA device"),
    ({"use_liger_kernel": True}, "need a CUDA device"),
])
def test_gpu_only_options_fail_the_dry_run_on_a_cpu_agent(tiny_llama_dir, tmp_path, option, words):
    from trainers.preflight import check

    write_sft_rows(tmp_path / "data/train.jsonl", 4)
    report = check("sft", {"model_name_or_path": str(tiny_llama_dir), "train_data_path": "data/train.jsonl",
                           **option}, tmp_path)
    field = next(iter(option))
    assert report["ok"] is False and report["error"]["field"] == field and words in report["error"]["message"]
    assert report["error"]["message"].startswith(f"{field}: ")


@pytest.mark.parametrize(("extra", "words"), [
    ("weight_decay: plenty\n", "weight_decay: Input should be a valid number"),
    ("lerning_rate: 0.1\n", "'lerning_rate' (did you mean 'learning_rate'?)"),
    ("lr_scheduler_type: sideways\n", "invalid training arguments"),
])
def test_config_file_extras_fail_the_dry_run_not_the_run(tiny_llama_dir, tmp_path, extra, words):
    from trainers.preflight import check

    write_sft_rows(tmp_path / "data/train.jsonl", 4)
    (tmp_path / "extra.yaml").write_text(extra, encoding="utf-8")
    report = check("sft", {"model_name_or_path": str(tiny_llama_dir), "train_data_path": "data/train.jsonl",
                           "config_file": "extra.yaml"}, tmp_path)
    assert report["ok"] is False and report["error"]["field"] == "config_file", report
    assert words in report["error"]["message"], report["error"]["message"]


def test_dry_run_reports_rows_too_long_and_truncation_error_fails_it(tiny_llama_dir, tmp_path):
    from trainers.preflight import check

    rows = write_sft_rows(tmp_path / "data/train.jsonl", 3)
    with rows.open("a") as handle:
        handle.write(json.dumps({"query": "What colour is the sky? " * 30, "chosen": {"text": "Blue."}}) + "\n")
    config = {"model_name_or_path": str(tiny_llama_dir), "train_data_path": "data/train.jsonl", "max_length": 64}
    report = check("sft", config, tmp_path)
    assert report["ok"] is True and report["stats"]["rows_dropped"] == 1
    assert report["stats"]["rows_dropped_lines"] == [4] and "line 4" in report["warnings"][0]
    report = check("sft", {**config, "truncation": "error"}, tmp_path)
    assert report["ok"] is False and report["error"]["field"] == "train_data_path"
    assert "data/train.jsonl line 4" in report["error"]["message"] and report["problems"][0]["line"] == 4
