"""Turns a trainer's metric events into the task's progress fields (step, total, percent, ETA, latest loss, and a
multi-stage trainer's current stage with its count)."""

from __future__ import annotations

import json
from typing import Any

# Metric keys copied straight onto the task row when an event carries them.
_PROGRESS_KEYS = ("epoch", "loss", "learning_rate", "eta_seconds")
# Where the latest metrics keep the current stage ({"stage", "done", "total"}): set by a `stage` event, dropped by a
# training `step` (then the steps are the progress). An object, so that no chart or summary takes it for a number.
STAGE_KEY = "stage_progress"


def progress_fields(latest_metrics_json: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The task-row updates after `events` (in seq order), merged over the task's previous latest metrics."""
    latest = json.loads(latest_metrics_json or "{}")
    updates: dict[str, Any] = {}
    for values in events:
        latest.update(values)
        if values.get("event") == "stage" and isinstance(values.get("stage"), str):
            latest[STAGE_KEY] = {"stage": values["stage"], "done": _count(values.get("done")),
                                 "total": _count(values.get("total"))}
        elif values.get("event") == "step":
            latest.pop(STAGE_KEY, None)
        if isinstance(values.get("step"), (int, float)):
            updates["step"] = int(values["step"])
        if isinstance(values.get("total_steps"), (int, float)):
            updates["total_steps"] = int(values["total_steps"])
        for key in _PROGRESS_KEYS:
            if isinstance(values.get(key), (int, float)):
                updates[key] = float(values[key])
    step, total = updates.get("step"), updates.get("total_steps", latest.get("total_steps"))
    if step is not None and isinstance(total, (int, float)) and total > 0:
        updates["percent"] = round(min(100.0, 100.0 * step / total), 2)
    updates["latest_metrics_json"] = json.dumps(latest)
    return updates


def current_stage(latest_metrics_json: str) -> tuple[str, int, int] | None:
    """(stage, done, total) of the stage the task is in, or None while training steps (or nothing) are its progress."""
    try:
        stage = json.loads(latest_metrics_json or "{}").get(STAGE_KEY)
    except (ValueError, AttributeError):
        return None
    if not isinstance(stage, dict) or not isinstance(stage.get("stage"), str):
        return None
    return stage["stage"], _count(stage.get("done")), _count(stage.get("total"))


def _count(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0
