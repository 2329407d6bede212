"""Structured metric events: one JSON object per line appended to `BUGAGARIC_METRICS_FILE` (flushed per event, so the
agent can tail it live), plus a short human-readable line on stdout for the task log.

Events (all carry "event", "time" and, when known, "task_id"):
  {"event": "start", "total_steps", "num_rows", ...}
  {"event": "step", "step", "total_steps", "epoch", "loss", "learning_rate", "eta_seconds", <other numbers>}
  {"event": "end", "step", "total_steps", "train_runtime", "final_loss", "train_loss", ...}
  {"event": "stage", "stage", "done", "total", ...}   progress of a non-training stage (e.g. kbalign's annotation)

`BUGAGARIC_METRICS_FILE=-` (a trainer on Kubernetes or Ray, which cannot write the agent's files): each event goes to
stdout instead, as one line `METRIC_LINE_PREFIX + json`; the agent's log pump (gpu_agent.backends.log_demux) moves
those lines into the attempt's metrics.jsonl.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from trainers.common.graceful_stop import is_main_process

METRICS_TO_STDOUT = "-"  # the BUGAGARIC_METRICS_FILE value that sends events to stdout
METRIC_LINE_PREFIX = "@@bugagaric-metric@@ "


def _clean(value: Any) -> Any:
    # NaN/inf are not JSON; keep the event parseable.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsEmitter:
    def __init__(self, path: str | os.PathLike[str] | None = None, task_id: str | None = None,
                 stdout: TextIO | None = None, output_dir: str | os.PathLike[str] | None = None):
        if path is None:
            path = os.environ.get("BUGAGARIC_METRICS_FILE") or None
        self.to_stdout = path == METRICS_TO_STDOUT
        self.path = Path(path) if path and not self.to_stdout else None
        self.task_id = task_id if task_id is not None else os.environ.get("BUGAGARIC_TASK_ID") or None
        self._stdout = stdout
        self.output_dir = output_dir  # the task's outputs: log lines name checkpoints relative to it
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def out(self) -> TextIO:
        return self._stdout or sys.stdout

    def emit(self, event: str, **values: Any) -> dict[str, Any]:
        record: dict[str, Any] = {"event": event, "time": round(time.time(), 3)}
        if self.task_id:
            record["task_id"] = self.task_id
        record.update({k: _clean(v) for k, v in values.items()})
        if not is_main_process():
            return record  # in a data-parallel run, rank 0 alone reports progress
        line = json.dumps(record, default=str)
        if self.to_stdout:
            print(METRIC_LINE_PREFIX + line, file=self.out, flush=True)
        elif self.path is not None:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
                handle.flush()
        else:
            # No metrics file: keep the structured record in the log so nothing is lost.
            print(f"metrics: {line}", file=self.out, flush=True)
        print(human_line(record, self.output_dir), file=self.out, flush=True)
        return record

    def step(self, **values: Any) -> dict[str, Any]:
        return self.emit("step", **values)

    def end(self, **values: Any) -> dict[str, Any]:
        return self.emit("end", **values)


def checkpoint_name(path: str | os.PathLike[str], output_dir: str | os.PathLike[str] | None) -> str:
    """A checkpoint as the task's outputs show it (`checkpoint-12`, `rounds/round_1/checkpoint-8`): relative to the
    task's output directory, never the agent's absolute path."""
    try:
        return Path(path).relative_to(output_dir).as_posix() if output_dir else Path(path).name
    except ValueError:
        return Path(path).name


def human_line(record: dict[str, Any], output_dir: str | os.PathLike[str] | None = None) -> str:
    """e.g. `step 3/12 loss=2.1034 lr=4.2e-05 eta=12s`, `checkpoint saved at step 8: checkpoint-8`."""
    event = record.get("event")
    if event == "checkpoint":
        where = checkpoint_name(record["path"], output_dir) if record.get("path") else "?"
        stage = f" (after stage {record['stage']})" if isinstance(record.get("stage"), str) else ""
        return f"checkpoint saved at step {record.get('step')}{stage}: {where}"
    parts: list[str] = []
    if event == "step":
        parts.append(f"step {record.get('step')}/{record.get('total_steps')}")
    elif event == "stage":  # a multi-stage trainer's progress, e.g. `stage annotate_short 12/200`
        parts.append(f"stage {record.get('stage')} {record.get('done')}/{record.get('total')}")
    else:
        parts.append(str(event) + (f" {record['phase']}" if isinstance(record.get("phase"), str) else ""))
    for key, label, fmt in (("loss", "loss", ".4f"), ("learning_rate", "lr", ".2g"), ("final_loss", "final_loss", ".4f"),
                            ("train_runtime", "runtime", ".1f"), ("total_steps", "total_steps", "d"),
                            ("num_rows", "rows", "d")):
        value = record.get(key)
        if event == "step" and key == "total_steps":
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                parts.append(f"{label}={value:{fmt}}")
            except ValueError:
                parts.append(f"{label}={value}")
    # Retrieval metrics of "eval" events (recall@1, mrr@10, ndcg@10, ...) and answer scores of "predict" events.
    parts.extend(f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}"
                 for key, value in record.items()
                 if ("@" in key or key.startswith("predict/")) and isinstance(value, (int, float))
                 and not isinstance(value, bool))
    eta = record.get("eta_seconds")
    if isinstance(eta, (int, float)):
        parts.append(f"eta={eta:.0f}s")
    return " ".join(parts)
