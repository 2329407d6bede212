"""The shared entry point of every `python -m trainers.<type> --config FILE`.

It checks the config and data before any heavy import (so a bad row fails in a second with exit 3 and line
numbers), then runs the type's train function, and always ends stderr with one human-readable `error: ...` line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from trainers import output_dirs, paths, registry
from trainers.common import graceful_stop
from trainers.common.metrics import checkpoint_name
from trainers.errors import (ERROR_LINE_PREFIX, EXIT_INVALID_DATA, EXIT_OK, EXIT_STOPPED_EARLY, EXIT_TRAINER_ERROR,
                             ConfigError, ModelNotFound, TrainerError, problem_lines)
from trainers.registry import DataReport


@dataclass
class RunContext:
    """What a train function gets besides its config."""

    task_type: str
    workspace: Path
    output_dir: Path
    task_id: str | None
    data_report: DataReport | None
    # A checkpoint directory to continue from (a resumed or retried attempt), for `trainer.train(resume_from_checkpoint=)`.
    resume_from_checkpoint: str | None = None


TrainFn = Callable[[BaseModel, RunContext], Any]


def _quiet_env() -> None:
    # Forked tokenizer threads deadlock-warn under the Trainer; progress bars are noise in a captured log.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning")
    os.environ.setdefault("TQDM_DISABLE", "1")  # e.g. "Writing model shards" bars from save_pretrained
    # Library-internal deprecation chatter (trl/peft calling renamed transformers APIs) is not the user's concern.
    warnings.filterwarnings("ignore", category=FutureWarning)


def _fail(message: str, code: int) -> int:
    print(f"{ERROR_LINE_PREFIX}{message}", file=sys.stderr, flush=True)
    return code


def _resolve_train_fn(train_fn: TrainFn | str) -> TrainFn:
    """`"pkg.module:func"` is imported only now, so config/data errors never pay for torch's import."""
    if callable(train_fn):
        return train_fn
    module, _, attr = train_fn.partition(":")
    return getattr(importlib.import_module(module), attr or "train")


def main(task_type_name: str, train_fn: TrainFn | str, argv: list[str] | None = None) -> int:
    """Runs one training task and returns the exit code (0 ok, 3 invalid config/data, 143 stopped early with a
    checkpoint saved, 1 anything else)."""
    parser = argparse.ArgumentParser(prog=f"python -m trainers.{task_type_name}")
    parser.add_argument("--config", required=True, help="JSON file holding the task's config object")
    args = parser.parse_args(argv)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)  # the agent tails our output live
    _quiet_env()
    graceful_stop.install()

    workspace = paths.workspace()
    task_id = os.environ.get("BUGAGARIC_TASK_ID") or None
    try:
        config_path = Path(args.config).expanduser().resolve()  # a CLI path: relative to the cwd
        try:
            raw = json.loads(config_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("", f"config file not found: {config_path}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError("", f"config file {config_path} is not valid JSON ({exc})") from None
        task_type = registry.get(task_type_name)
        config = task_type.parse_config(raw)
        report = task_type.validate_data(config, workspace)
        output_dir = output_dirs.claim_output_dir(
            output_dirs.check_task_paths(config, task_type_name, task_id, workspace), task_id, workspace)
        resume = asked = graceful_stop.resume_checkpoint()
        if asked:
            resume = str(output_dirs.check_resume_checkpoint(asked, output_dir, workspace))
            if Path(resume).name != Path(asked).name:
                print(f"checkpoint {asked} is gone (save_total_limit keeps the newest checkpoints); the newest later "
                      f"one stands for it", flush=True)
    except ConfigError as exc:
        return _report_config_error(exc)

    context = RunContext(task_type_name, workspace, output_dir, task_id, report, resume)
    if context.resume_from_checkpoint:
        print(f"resuming from {checkpoint_name(context.resume_from_checkpoint, output_dir)}", flush=True)
    print(f"{task_type_name}: {report.rows} rows from {report.path}; output -> {output_dir}; "
          f"devices: CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<all>')}", flush=True)
    try:
        if isinstance(getattr(config, "model_name_or_path", None), str):
            from trainers.common.model_loading import preflight

            preflight(config.model_name_or_path, workspace)  # a missing model fails in a second, not after imports
        _resolve_train_fn(train_fn)(config, context)
        _leave_process_group()
    except graceful_stop.StoppedEarly as exc:  # a stop, not a finish: the agent must not read it as success
        print(f"stopped early; resume from {checkpoint_name(exc.checkpoint, output_dir)}" if exc.checkpoint
              else str(exc), flush=True)
        # Every rank stopped at the same, agreed step (hf_callback, kbalign's boundaries): wait for rank 0's summary,
        # or torchrun would take an early rank's exit for a failure and end the others mid-write.
        _leave_process_group()
        return EXIT_STOPPED_EARLY
    except ConfigError as exc:  # e.g. an unknown name in config_file, found once trl is imported
        return _report_config_error(exc)
    except ModelNotFound as exc:  # the user's input, not a bug: no traceback
        return _fail(str(exc), EXIT_TRAINER_ERROR)
    except TrainerError as exc:
        traceback.print_exc()
        return _fail(str(exc), EXIT_TRAINER_ERROR)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_TRAINER_ERROR)
    except Exception as exc:  # noqa: BLE001 - the whole point: a readable last line for any failure
        traceback.print_exc()
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return _fail(f"{type(exc).__name__}: {message}" if message else type(exc).__name__, EXIT_TRAINER_ERROR)
    return EXIT_OK


def _leave_process_group() -> None:
    """A data-parallel run (torchrun) ends together: every rank waits until rank 0 has written the model, then the
    process group is taken down before the process exits (a rank exiting with gloo's threads still running can abort
    with "terminate called without an active exception" and fail a run that succeeded)."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _report_config_error(exc: ConfigError) -> int:
    message, *others = problem_lines(exc.message, exc.problems)  # each problem once; the message last
    for line in others:
        print(line, file=sys.stderr)
    return _fail(message, EXIT_INVALID_DATA)
