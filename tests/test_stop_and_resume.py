"""A stopped trainer saves a checkpoint and exits within the grace period; the next attempt continues from it.
Real `python -m trainers.sft` subprocesses on the tiny Llama, real SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.tiny_models import write_sft_rows
from trainers.errors import EXIT_STOPPED_EARLY


def start_trainer(workspace: Path, config: dict, metrics: Path, **env) -> subprocess.Popen:
    (workspace / "cfg.json").write_text(json.dumps(config), encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, "-m", "trainers.sft", "--config", "cfg.json"], cwd=workspace,
        env={**os.environ, "BUGAGARIC_WORKSPACE": str(workspace), "HF_HUB_OFFLINE": "1",
             "BUGAGARIC_METRICS_FILE": str(metrics), **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def events(metrics: Path) -> list[dict]:
    return [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []


def test_sigterm_saves_a_checkpoint_and_a_resumed_run_continues_its_steps(tiny_llama_dir, tmp_path):
    write_sft_rows(tmp_path / "data/train.jsonl", 32)
    config = {"model_name_or_path": str(tiny_llama_dir), "train_data_path": "data/train.jsonl", "output_dir": "output/run",
              "learning_rate": 5e-3, "per_device_train_batch_size": 4, "max_length": 64, "max_steps": 400}
    first_metrics = tmp_path / "first.jsonl"
    trainer = start_trainer(tmp_path, config, first_metrics)
    deadline = time.monotonic() + 180
    while not [e for e in events(first_metrics) if e["event"] == "step" and e["step"] >= 3]:
        assert trainer.poll() is None, trainer.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no training steps"
        time.sleep(0.2)
    os.killpg(trainer.pid, signal.SIGTERM)
    stopped_at = time.monotonic()
    out, err = trainer.communicate(timeout=60)
    assert trainer.returncode == EXIT_STOPPED_EARLY, err[-3000:]  # a stop is not a finish
    assert time.monotonic() - stopped_at < 30, "did not stop within the default grace period"
    assert "stop requested: saving a checkpoint" in out
    [saved] = [e for e in events(first_metrics) if e["event"] == "checkpoint"]
    checkpoint = Path(saved["path"])
    assert checkpoint.is_dir() and checkpoint.name == f"checkpoint-{saved['step']}" and saved["step"] < 400
    # The log says which step and where, relative to the task's outputs: never the agent's absolute paths.
    assert f"checkpoint saved at step {saved['step']}: checkpoint-{saved['step']}" in out
    assert f"resume from checkpoint-{saved['step']}" in out
    assert not [line for line in out.splitlines() if "checkpoint" in line and str(tmp_path) in line]
    output = tmp_path / "output/run"
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["stopped_early"] is True and summary["resume_from"] == str(checkpoint)
    assert not (output / "adapter_model.safetensors").exists()  # the half-trained weights are not the task's model
    [end] = [e for e in events(first_metrics) if e["event"] == "end"]
    assert end["stopped_early"] is True

    resumed_metrics = tmp_path / "resumed.jsonl"
    config["max_steps"] = saved["step"] + 4
    trainer = start_trainer(tmp_path, config, resumed_metrics, BUGAGARIC_RESUME_FROM_CHECKPOINT=str(checkpoint))
    out, err = trainer.communicate(timeout=240)
    assert trainer.returncode == 0, err[-3000:]
    assert f"resuming from checkpoint-{saved['step']}" in out
    steps = [e["step"] for e in events(resumed_metrics) if e["event"] == "step"]
    assert steps == list(range(saved["step"] + 1, saved["step"] + 5)), steps  # continues, not restarts
    assert json.loads((output / "training_summary.json").read_text())["stopped_early"] is False
    assert (output / "adapter_model.safetensors").exists()


def test_sigterm_before_training_exits_at_once(tiny_llama_dir, tmp_path):
    write_sft_rows(tmp_path / "data/train.jsonl", 8)
    config = {"model_name_or_path": str(tiny_llama_dir), "train_data_path": "data/train.jsonl", "output_dir": "output/run"}
    trainer = start_trainer(tmp_path, config, tmp_path / "m.jsonl")
    time.sleep(1.0)  # importing the training libraries
    os.killpg(trainer.pid, signal.SIGTERM)
    _, err = trainer.communicate(timeout=30)
    assert trainer.returncode in (143, -signal.SIGTERM), err[-2000:]
