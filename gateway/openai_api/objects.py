"""Proto messages -> OpenAI's objects: `file`, `fine_tuning.job`, `fine_tuning.job.event`,
`fine_tuning.job.checkpoint`. Times are unix seconds, as OpenAI gives them."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from google.protobuf.message import Message

from gateway.openai_api import ids
from gateway.openai_api.job_request import HYPERPARAMETERS, OPENAI_METHODS
from gateway.serializers import status_name
from protos import control_plane_pb2 as cp

DATASET_REF = "dataset:"
# Our task statuses -> OpenAI's job statuses (queued while its data check is pending: validating_files).
JOB_STATUS = {"queued": "queued", "starting": "queued", "running": "running", "stopping": "running",
              "succeeded": "succeeded", "failed": "failed", "stopped": "cancelled"}
FINISHED = {"succeeded", "failed", "cancelled"}


def unix(msg: Message, name: str) -> int | None:
    return getattr(msg, name).seconds if msg.HasField(name) else None


def seconds(msg: Message, name: str) -> float:
    return getattr(msg, name).ToNanoseconds() / 1e9 if msg.HasField(name) else 0.0


def file_object(d: cp.Dataset) -> dict[str, Any]:
    return {"id": ids.file_id(d.id), "object": "file", "bytes": d.size_bytes, "created_at": unix(d, "created_at"),
            "filename": d.name, "purpose": "fine-tune", "status": "processed", "status_details": None,
            "expires_at": None}


def _file_of(value: Any) -> str | None:
    """A config's data path as the job names it: `dataset:<id>` is a file id; a path on an agent stays a path."""
    if not isinstance(value, str) or not value:
        return None
    return ids.file_id(value.removeprefix(DATASET_REF)) if value.startswith(DATASET_REF) else value


def job_status(t: cp.Task) -> str:
    status = status_name(t.status)
    if status == "queued" and t.HasField("validation") and t.validation.state == "pending":
        return "validating_files"
    return JOB_STATUS.get(status, status)


def hyperparameters_of(task_type: str, config: dict[str, Any], default_learning_rate: float | None) -> dict[str, Any]:
    method = OPENAI_METHODS[task_type]
    out: dict[str, Any] = {}
    for name, key in HYPERPARAMETERS[method].items():
        value = config.get(key)
        if name == "learning_rate_multiplier":
            value = value / default_learning_rate if isinstance(value, (int, float)) and default_learning_rate else None
        if name == "n_epochs" and isinstance(value, float) and value.is_integer():
            value = int(value)
        out[name] = value
    return out


def job_object(t: cp.Task, default_learning_rate: float | None) -> dict[str, Any]:
    config = json.loads(t.config_json or "{}")
    status = job_status(t)
    method = OPENAI_METHODS[t.type]
    hyperparameters = hyperparameters_of(t.type, config, default_learning_rate)
    metrics = json.loads(t.latest_metrics_json or "{}")
    eta = t.progress.eta_seconds if t.progress.HasField("eta_seconds") else None
    return {
        "id": ids.job_id(t.id),
        "object": "fine_tuning.job",
        "created_at": unix(t, "created_at"),
        "finished_at": unix(t, "finished_at") if status in FINISHED else None,
        "model": config.get("model_name_or_path"),
        # How the platform names a succeeded task's model: `init_from: task:<id>`, export, chat.
        "fine_tuned_model": f"task:{t.id}" if status == "succeeded" else None,
        "organization_id": t.owner or None,
        "status": status,
        "training_file": _file_of(config.get("train_data_path")),
        "validation_file": _file_of(config.get("eval_data_path")),
        "hyperparameters": hyperparameters,
        "method": {"type": method, method: {"hyperparameters": hyperparameters}},
        "trained_tokens": _int(metrics.get("num_tokens")) if status == "succeeded" else None,
        "error": {"code": t.error_reason or "failed", "message": t.error or "the job failed", "param": None}
        if status == "failed" else None,
        "seed": config.get("seed"),
        "result_files": [],
        "estimated_finish": int(time.time() + eta) if status == "running" and eta is not None else None,
        "integrations": [],
        "user_provided_suffix": None,
        "metadata": None,
    }


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _event(task_id: str, kind: str, number: int, at: float, level: str, message: str, data: Any,
           event_type: str = "message") -> dict[str, Any]:
    return {"object": "fine_tuning.job.event", "id": ids.event_id(task_id, kind, number), "created_at": int(at),
            "level": level, "message": message, "data": data, "type": event_type,
            _ORDER: (at, _KIND_RANK[kind], number)}


# At the same instant: log lines, then the metrics they printed, then the status change they led to.
_KIND_RANK = {"l": 0, "m": 1, "s": 2}
_ORDER = "_order"


def newest_first(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    events.sort(key=lambda e: e[_ORDER], reverse=True)
    for event in events:
        del event[_ORDER]
    return events


def status_events(t: cp.Task) -> list[dict[str, Any]]:
    out = []
    for number, e in enumerate(t.events):
        to_status = status_name(e.to_status)
        job_to = JOB_STATUS.get(to_status, to_status)
        level = "error" if to_status == "failed" else "info"
        message = f"Job {job_to}" + (f" ({e.reason})" if e.reason else "") + (f": {e.message}" if e.message else "")
        out.append(_event(t.id, "s", number, seconds(e, "time"), level, message,
                          {"status": job_to, "task_status": to_status, "reason": e.reason}))
    return out


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def metric_events(task_id: str, points: list[Any]) -> list[dict[str, Any]]:
    """Each training step's point as a `metrics` event (step, total_steps, train_loss, learning_rate, ...). The other
    points (start, checkpoint, eval, end) are told by the trainer's own log line for each, which the events carry."""
    out = []
    for p in points:
        values = json.loads(p.values_json or "{}")
        if not isinstance(values, dict) or values.get("event") != "step":
            continue
        numbers = {k: v for k, v in values.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("time", "loss")}
        data = {"step": values.get("step"), "total_steps": values.get("total_steps"), "train_loss": values.get("loss"),
                **numbers}
        # A step point carries the training loss, or (an evaluation logged at that step) the held-out loss.
        losses = [f"{label}={_number(values[key])}" for key, label in (("loss", "training loss"),
                                                                       ("eval_loss", "validation loss"))
                  if key in values]
        if "eval_loss" in values:
            data["valid_loss"] = values["eval_loss"]
        message = f"Step {values.get('step')}/{values.get('total_steps')}" + (f": {', '.join(losses)}" if losses else "")
        out.append(_event(task_id, "m", p.seq, seconds(p, "time"), "info", message, data, "metrics"))
    return out


# The trainer's log line for each step point (trainers.common.metrics.human_line): its metrics event says it.
_STEP_LINE = re.compile(r"step \d+/\d+( |$)")


def log_events(task_id: str, lines: list[Any]) -> list[dict[str, Any]]:
    """The task's log lines (stderr ones at level warn), less the per-step lines the metrics events carry."""
    return [_event(task_id, "l", line.seq, seconds(line, "time"), "warn" if line.stream == "stderr" else "info",
                   line.text, {"stream": line.stream, "seq": line.seq})
            for line in lines if not _STEP_LINE.match(line.text)]


def checkpoint_objects(t: cp.Task, points: list[Any]) -> list[dict[str, Any]]:
    """Newest first; each with the metrics of the last step logged at or before it."""
    steps = []
    for p in points:
        values = json.loads(p.values_json or "{}")
        if isinstance(values, dict) and isinstance(values.get("step"), int):
            steps.append(values)
    out = []
    for c in sorted(t.checkpoints, key=lambda c: (c.step, seconds(c, "time")), reverse=True):
        logged = [v for v in steps if v["step"] <= c.step and v.get("event") in ("step", "eval")]
        last_step = next((v for v in reversed(logged) if v.get("event") == "step"), {})
        last_eval = next((v for v in reversed(logged) if v.get("event") == "eval" and "loss" in v), {})
        metrics = {"step": c.step, "train_loss": last_step.get("loss"),
                   "train_mean_token_accuracy": last_step.get("mean_token_accuracy"),
                   "valid_loss": last_eval.get("loss"), "valid_mean_token_accuracy": last_eval.get("mean_token_accuracy"),
                   "full_valid_loss": None, "full_valid_mean_token_accuracy": None}
        out.append({"object": "fine_tuning.job.checkpoint", "id": ids.checkpoint_id(t.id, c.step, c.attempt),
                    "created_at": unix(c, "time"), "fine_tuned_model_checkpoint": c.path,
                    "fine_tuning_job_id": ids.job_id(t.id), "metrics": metrics, "step_number": c.step})
    return out
