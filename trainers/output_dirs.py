"""Each task writes into a directory of its own under the output root, which no other task may name.

The directory is the `output_dir` the user gave (the control plane refuses a second task naming one already used),
or `<output root>/<type>/<task id>` when none was given; the trainer marks it with `.bugagaric-task.json` (task id,
owner) before writing anything, and a task whose directory would lie inside another task's marked directory, or be
another task's, is refused. The check runs where the files
are: on the agent, in the submit-time dry run and again in the trainer.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path, PurePath

from trainers.errors import ConfigError
from trainers.paths import TASK_MARKER, current_scope, owning_task, policy, resolve, shown

FIELD = "output_dir"


def default_output_dir(task_type: str, task_id: str, base: Path | None = None) -> Path:
    return policy(base).output_root / task_type / task_id


def check_output_dir(value: str | os.PathLike[str], task_id: str | None, base: Path | None = None,
                     *, field: str = FIELD) -> Path:
    """The resolved output directory, or ConfigError naming `field`: inside the output root and outside the
    platform's state, not inside another task's directory, and not another task's."""
    rules = policy(base)
    # Messages name the directory the user gave: the task's own last component was added by the platform.
    user_part = PurePath(value).parent if task_id and PurePath(value).name == task_id else PurePath(value)
    given = str(user_part)
    try:
        path = resolve(value, rules.workspace).resolve()  # existing parts' symlinks followed
    except (OSError, RuntimeError):
        raise ConfigError(field, f"{field}: cannot be used: {given}") from None
    root = rules.output_root
    if rules.is_forbidden(path) or root not in path.parents:
        raise ConfigError(field, f"{field}: {given!r} is outside the output root "
                                 f"({shown(root, rules.workspace)}); give a directory inside it")
    if path.exists() and not path.is_dir():
        raise ConfigError(field, f"{field}: {given!r} exists and is not a directory")
    marker = owning_task(path, root)
    if marker is not None and marker.get("task_id") != task_id:
        named = path.parent if user_part != PurePath(value) else path
        where = "is" if (named / TASK_MARKER).is_file() else "is inside"
        raise ConfigError(field, f"{field}: {given!r} {where} the output directory of another task")
    return path


def claim_output_dir(value: str | os.PathLike[str], task_id: str | None, base: Path | None = None) -> Path:
    """The trainer, before writing: checks again, creates the directory and marks it as this task's."""
    path = check_output_dir(value, task_id, base)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if task_id:
            marker = path / TASK_MARKER
            if not marker.is_file():
                marker.write_text(json.dumps({"task_id": task_id, "owner": current_scope().owner}), encoding="utf-8")
    except OSError as exc:  # e.g. the agent's user may not write there, or the disk is full
        raise ConfigError(FIELD, f"{FIELD}: {shown(path, policy(base).workspace)} cannot be created on this "
                                 f"host ({exc.strerror or exc})") from None
    return path


def check_resume_checkpoint(value: str, output_dir: Path, base: Path | None = None) -> Path:
    """A checkpoint to resume from must be one this task wrote: inside its own output directory. A `checkpoint-N`
    that is gone because save_total_limit rotated it away (the run went on saving after the control plane last heard
    from it) stands for the newest later `checkpoint-M` beside it."""
    rules = policy(base)
    given = resolve(value, rules.workspace)
    try:
        path = given.resolve(strict=True)
    except (OSError, RuntimeError):
        path = _later_checkpoint(given)
        if path is None:
            raise ConfigError("checkpoint", f"checkpoint: not found: {value}") from None
    if output_dir.resolve() not in path.parents:
        raise ConfigError("checkpoint", f"checkpoint: {value!r} is not inside this task's output directory")
    return path


def _checkpoint_step(path: Path) -> int | None:
    prefix, _, step = path.name.partition("-")
    return int(step) if prefix == "checkpoint" and step.isdigit() else None


def _later_checkpoint(missing: Path) -> Path | None:
    """The newest complete `checkpoint-M` (M > N) in the directory of a missing `checkpoint-N`, resolved; None if
    none. Complete: its trainer_state.json, which the Trainer writes last, is there (a run killed mid-save leaves a
    checkpoint without it)."""
    step = _checkpoint_step(missing)
    try:
        parent = missing.parent.resolve(strict=True)
        later = [p for p in parent.iterdir() if p.is_dir() and (_checkpoint_step(p) or -1) > (step or 0)
                 and (p / "trainer_state.json").is_file()]
    except OSError:
        return None
    if step is None or not later:
        return None
    return max(later, key=_checkpoint_step).resolve()


def check_task_paths(config, task_type: str, task_id: str | None, base: Path | None = None) -> Path:
    """The path checks every type shares (its data files are its validator's): a local base model must be readable,
    and the output directory (returned) must be the task's own."""
    from trainers.common.model_loading import confine_local_model

    model = getattr(config, "model_name_or_path", None)
    if isinstance(model, str):
        confine_local_model(model, base)
    return check_output_dir(output_dir_value(config, task_type, task_id, base), task_id, base)


def output_dir_value(config, task_type: str, task_id: str | None, base: Path | None = None) -> str | Path:
    """Where the task writes, before any check: the config's output_dir as given, else its default directory."""
    return getattr(config, "output_dir", None) or default_output_dir(
        task_type, task_id or time.strftime("%Y%m%d-%H%M%S"), base)
