"""Turns a trainer's metric events into the task's progress fields (step, total, percent, ETA, latest loss)."""

from __future__ import annotations

import json
from typing import Any

# Metric keys copied straight onto the task row when an event carries them.
_PROGRESS_KEYS = ("epoch", "loss", "learning_rate", "eta_seconds")


def progress_fields(latest_metrics_json: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The task-row updates after `events` (in seq order), merged over the task's previous latest metrics."""
    latest = json.loads(latest_metrics_json or "{}")
    updates: dict[str, Any] = {}
    for values in events:
        latest.update(values)
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
