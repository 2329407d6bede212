"""`report_to`: the HF trainers' own tracker integrations, on top of our metrics. Tensorboard's event files land in
the task's output directory (runs/), among its artifacts; a tracker missing on the agent is a config error naming
report_to before any model is loaded; an unknown tracker is refused by the config model."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.helpers.tiny_models import write_sft_rows
from tests.test_sft_trainer import last_stderr_line, run_trainer
from trainers.artifact_kinds import artifact_kind, in_final_model
from trainers.errors import EXIT_INVALID_DATA, EXIT_OK


def _config(tiny_llama_dir, **extra) -> dict:
    return {"model_name_or_path": str(tiny_llama_dir), "train_data_path": "data/train.jsonl", "output_dir": "output/sft",
            "use_lora": True, "learning_rate": 5e-3, "per_device_train_batch_size": 4, "max_steps": 6,
            "max_length": 96, **extra}


def test_tensorboard_event_files_land_among_the_artifacts(tiny_llama_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_sft_rows(tmp_path / "data/train.jsonl", 24)
    proc = run_trainer(tmp_path, _config(tiny_llama_dir, report_to=["tensorboard"]))
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]

    out = tmp_path / "output/sft"
    event_files = sorted(out.glob("runs/*/events.out.tfevents.*"))
    assert event_files, sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    relative = event_files[0].relative_to(out).as_posix()
    assert artifact_kind(relative) == "tracking" and in_final_model(relative)
    run = EventAccumulator(str(event_files[0].parent)).Reload()
    losses = run.Scalars("train/loss")
    assert [point.step for point in losses] == [1, 2, 3, 4, 5, 6]  # every logged step, as our own metrics have it


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is not None, reason="mlflow is installed here")
def test_a_tracker_missing_on_the_agent_is_a_config_error_naming_report_to(tiny_llama_dir, tmp_path):
    write_sft_rows(tmp_path / "data/train.jsonl", 8)
    proc = run_trainer(tmp_path, _config(tiny_llama_dir, report_to=["mlflow"]))
    assert proc.returncode == EXIT_INVALID_DATA
    line = last_stderr_line(proc)
    assert "report_to" in line and "mlflow is not installed" in line and "[tracking]" in line, line
    assert not (tmp_path / "output/sft" / "adapter_config.json").exists()


@pytest.mark.parametrize("type_name", ["sft", "dpo", "kbalign", "embedding"])
def test_unknown_trackers_are_refused_naming_report_to(type_name):
    from trainers import registry

    spec = registry.get(type_name)
    schema = spec.config_model.model_json_schema()["properties"]["report_to"]
    assert schema["items"]["enum"] == ["tensorboard", "mlflow"]
    with pytest.raises(Exception) as refused:
        spec.config_model.model_validate({"report_to": ["wandb"]})
    assert "report_to" in str(refused.value)
    assert json.dumps(schema)  # the form renders it from the schema like every other field
