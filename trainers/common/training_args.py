"""Builds a trl/transformers args object from our LM config plus the user's `config_file` extras, rejecting unknown
argument names with a clear ConfigError. Imports torch: training code path only."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

import torch

from trainers.common.config import LMConfig, load_extra_args
from trainers.errors import ConfigError
from trainers.paths import resolve


def precision_args() -> dict[str, Any]:
    """bf16 mixed precision on a GPU that has it, fp16 on older GPUs, plain fp32 on CPU (trl defaults bf16 on)."""
    if torch.cuda.is_available():
        bf16 = torch.cuda.is_bf16_supported()
        return {"bf16": bf16, "fp16": not bf16, "use_cpu": False}
    return {"bf16": False, "fp16": False, "use_cpu": True}


def build_args(args_cls: type, config: LMConfig, output_dir: Path, workspace: Path, **type_specific: Any):
    """`args_cls(...)` from the shared options, then type-specific ones, then the config_file on top."""
    values: dict[str, Any] = {
        "output_dir": str(output_dir),
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "max_steps": config.max_steps,
        "logging_steps": config.logging_steps,
        "seed": config.seed,
        "report_to": [],
        "disable_tqdm": True,
        # trl turns checkpointing on by default; off is ~30% faster and what small/CPU runs want.
        "gradient_checkpointing": False,
        "save_strategy": "no",  # the final model is saved explicitly
        **precision_args(),
        **type_specific,
    }
    known = {f.name for f in dataclasses.fields(args_cls) if f.init}
    if "activation_checkpointing" in known:  # transformers 5.2x renamed it; setting both avoids a FutureWarning
        values["activation_checkpointing"] = False
    extra = load_extra_args(config, workspace)
    unknown = sorted(set(extra) - known)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        path = resolve(config.config_file or "", workspace)
        raise ConfigError("config_file", f"config_file: {path}: unknown training argument(s) {', '.join(hints)} "
                                         f"for {args_cls.__name__}")
    values.update(extra)
    try:
        return args_cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError("config_file" if extra else "", f"invalid training arguments: {exc}") from None
