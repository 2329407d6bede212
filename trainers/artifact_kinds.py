"""A file of a task's output directory by its path: which paths may name one, and what kind of file it is. One rule
for the agent (the live directory) and the control plane (a published model)."""

from __future__ import annotations

from pathlib import PurePosixPath

ADAPTER, MODEL, CHECKPOINT, SUMMARY, LOG, PREDICTIONS, TRACKING = (
    "adapter", "model", "checkpoint", "summary", "log", "predictions", "tracking")
KINDS = (ADAPTER, MODEL, CHECKPOINT, SUMMARY, LOG, PREDICTIONS, TRACKING)
_SUMMARY_WORDS = ("summary", "metrics", "results", "trainer_state")
# Directories of intermediate states, not the task's model: KBAlign's per-round models (rounds/round_<k>/final and
# their Trainer checkpoints) and its stage snapshots (stages/<label>/).
_INTERMEDIATE_DIRS = ("rounds", "stages")
# Training data the model wrote for itself (KBAlign's question-answer pairs and critiques).
_MODEL_WRITTEN_DIRS = ("annotations",)
# Experiment trackers' files (`report_to`): tensorboard's event files, a local mlflow store. Kept with the published
# model so they outlive the agent's attempt directory.
_TRACKING_DIRS = ("runs", "mlruns")


def artifact_kind(relative: str) -> str:
    """One of KINDS for a "/"-separated path relative to the output directory."""
    parts = PurePosixPath(relative).parts
    name = parts[-1].lower()
    directories = parts[:-1]
    if directories and (directories[0] in _INTERMEDIATE_DIRS or any(d.startswith("checkpoint-") for d in directories)):
        return CHECKPOINT
    if directories and directories[0] in _MODEL_WRITTEN_DIRS:
        return PREDICTIONS
    if directories and directories[0] in _TRACKING_DIRS:
        return TRACKING
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


class BadArtifactPath(ValueError):
    """The message names `path`."""


def relative_artifact_path(given: str) -> PurePosixPath:
    """`given` as a path inside the output directory, judged by its text alone (the agent also follows symlinks):
    not empty, not absolute, no `..`, no backslashes."""
    if not given:
        raise BadArtifactPath("path: empty; name a file of the task's output directory")
    pure = PurePosixPath(given)
    if pure.is_absolute() or given.startswith("\\") or (len(given) > 1 and given[1] == ":"):
        raise BadArtifactPath(f"path: {given!r} is absolute; give it relative to the task's output directory")
    if ".." in pure.parts or "\\" in given or "\x00" in given:
        raise BadArtifactPath(f"path: {given!r} leaves the task's output directory")
    return pure
