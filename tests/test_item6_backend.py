"""What trying the console found (issue 12, item 6), on the backend: a multi-stage trainer's stage and count reach the
task's progress as GetTask and REST serve it; each data problem is told once (a trainer's stderr, a failed check's
error); checkpoint log lines say the step and the checkpoint's place in the task's outputs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from control_plane.converters import task_to_proto
from control_plane.data_check import CheckResult
from control_plane.task_store import NewMetric, TaskStore
from gateway.serializers import progress_model, to_json
from tests.helpers.tiny_models import write_sft_rows
from trainers.common.metrics import MetricsEmitter
from trainers.errors import EXIT_INVALID_DATA

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _served_progress(store: TaskStore, task_id: str) -> dict:
    return to_json(progress_model(task_to_proto(store.get_task(task_id)).progress))


def test_a_stage_and_its_count_are_the_progress_until_training_steps_take_over(engine):
    store = TaskStore(engine)
    task = store.create_task(uuid.uuid4().hex, "kbalign", "{}", "/tmp/out")
    # The events as KBAlign's runtime emits them (trainers.kbalign.runtime.Runtime.stage), then a training step.
    store.ingest(task.id, [], [
        NewMetric(1, T0, {"event": "stage", "stage": "chunking", "done": 4, "total": 4, "chunks": 9}),
        NewMetric(2, T0, {"event": "stage", "stage": "annotate_short", "done": 12, "total": 40, "pairs": 30}),
    ])
    served = _served_progress(store, task.id)
    assert (served["stage"], served["stage_done"], served["stage_total"]) == ("annotate_short", 12, 40)
    assert served["percent"] == 0 and served["step"] == 0

    store.ingest(task.id, [], [NewMetric(3, T0, {"event": "stage", "stage": "clustering", "done": 0, "total": 9})])
    assert _served_progress(store, task.id)["stage"] == "clustering"

    store.ingest(task.id, [], [NewMetric(4, T0, {"event": "step", "step": 3, "total_steps": 60, "loss": 2.0})])
    served = _served_progress(store, task.id)
    assert served["stage"] is None and (served["step"], served["total_steps"]) == (3, 60) and served["percent"] == 5
    latest = json.loads(store.get_task(task.id).latest_metrics_json)
    assert latest["loss"] == 2.0  # the latest metrics still carry every value the trainer sent


def test_a_failed_check_tells_each_problem_once():
    message = "train_data_path: data/bad.jsonl line 7: not valid JSON (Expecting value at column 1) (2 bad lines in all)"
    result = CheckResult({"ok": False, "rows": 10, "error": {"field": "train_data_path", "message": message},
                          "problems": [{"line": 7, "field": "", "message": "not valid JSON (Expecting value at column 1)"},
                                       {"line": 9, "field": "chosen", "message": "Field required"}]})
    assert result.error_text().splitlines() == [message, "line 9: chosen: Field required"]


def test_a_trainer_prints_each_bad_line_once(tmp_path):
    write_sft_rows(tmp_path / "data" / "train.jsonl", 10)
    rows = (tmp_path / "data" / "train.jsonl").read_text().splitlines()
    rows[6] = "{"
    (tmp_path / "data" / "train.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "cfg.json").write_text(json.dumps({"model_name_or_path": "m", "train_data_path": "data/train.jsonl"}))
    proc = subprocess.run([sys.executable, "-m", "trainers.sft", "--config", "cfg.json"], cwd=tmp_path,
                          env={**os.environ, "BUGAGARIC_WORKSPACE": str(tmp_path)}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == EXIT_INVALID_DATA, proc.stderr
    assert proc.stderr.count("line 7") == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: train_data_path: data/train.jsonl line 7: not valid JSON")


@pytest.mark.parametrize(("path", "stage", "line"), [
    ("checkpoint-8", None, "checkpoint saved at step 8: checkpoint-8"),
    ("rounds/round_1/checkpoint-8", None, "checkpoint saved at step 8: rounds/round_1/checkpoint-8"),
    ("stages/annotate_short@2", "annotate_short",
     "checkpoint saved at step 0 (after stage annotate_short): stages/annotate_short@2"),
])
def test_a_checkpoint_line_names_its_step_and_place_in_the_outputs(tmp_path, path, stage, line):
    out = io.StringIO()
    emitter = MetricsEmitter(tmp_path / "metrics.jsonl", stdout=out, output_dir=tmp_path / "output")
    step = 0 if stage else 8
    extra = {"stage": stage} if stage else {}
    emitter.emit("checkpoint", step=step, path=str(tmp_path / "output" / path), **extra)
    assert out.getvalue().strip() == line
    assert str(tmp_path) not in out.getvalue()
    record = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert record["path"] == str(tmp_path / "output" / path)  # the platform keeps the agent's path for resuming
    assert Path(record["path"]).name == Path(path).name
