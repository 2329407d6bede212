"""What a file of a task's output directory is, by its path: one rule for the agent's listing and the control plane's
listing of a published model."""

from __future__ import annotations

from pathlib import PurePosixPath

ADAPTER, MODEL, CHECKPOINT, SUMMARY, LOG, PREDICTIONS = "adapter", "model", "checkpoint", "summary", "log", "predictions"
KINDS = (ADAPTER, MODEL, CHECKPOINT, SUMMARY, LOG, PREDICTIONS)
_SUMMARY_WORDS = ("summary", "metrics", "results", "trainer_state")


def artifact_kind(relative: str) -> str:
    """One of KINDS for a "/"-separated path relative to the output directory."""
    parts = PurePosixPath(relative).parts
    name = parts[-1].lower()
    if parts[0].startswith("checkpoint-") and len(parts) > 1:
        return CHECKPOINT
    if name.startswith("adapter_model.") or name == "adapter_config.json":
        return ADAPTER
    if name.endswith(".log"):
        return LOG
    if "prediction" in name:
        return PREDICTIONS
    if name.endswith((".json", ".jsonl")) and any(word in name for word in _SUMMARY_WORDS):
        return SUMMARY
    return MODEL


def in_final_model(relative: str) -> bool:
    """Whether a file belongs in the published model: not a checkpoint, not a log."""
    return artifact_kind(relative) not in (CHECKPOINT, LOG)
