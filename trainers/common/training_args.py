"""Builds a trl/transformers args object from our LM config plus the user's `config_file` extras, rejecting unknown
argument names with a clear ConfigError. Imports torch: training code path only."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

import torch

from trainers.common.config import LMConfig, TaskConfig, load_extra_args
from trainers.errors import ConfigError


# What build_args uses for the LM-only options when a config does not have them (LMConfig's defaults).
_LM_DEFAULTS: dict[str, Any] = {name: LMConfig.model_fields[name].default for name in (
    "gradient_accumulation_steps", "lr_scheduler_type", "gradient_checkpointing", "save_steps", "eval_steps",
    "precision")}


def precision_args(precision: str = "auto") -> dict[str, Any]:
    """Mixed precision from the config's `precision`: auto = bf16 on a GPU that has it, fp16 on older GPUs; always
    fp32 on CPU, where half precision is slow or unsupported (and trl would default bf16 on)."""
    if not torch.cuda.is_available():
        if precision in ("bf16", "fp16"):
            print(f"precision {precision} needs a GPU; training in fp32 on the CPU", flush=True)
        return {"bf16": False, "fp16": False, "use_cpu": True}
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision", "precision: this GPU does not support bf16; use fp16 or auto")
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": False}


def build_args(
    args_cls: type, config: LMConfig | TaskConfig, output_dir: Path, workspace: Path, *, has_eval: bool = False,
    **type_specific: Any
):
    """`args_cls(...)` from the shared options, then type-specific ones, then the config_file on top.

    `config` is an LMConfig, or any config with the basic options (learning_rate, num_train_epochs,
    per_device_train_batch_size, max_steps, warmup_ratio, logging_steps, seed, config_file): the LM-only ones
    (accumulation, scheduler, checkpoints, eval_steps, gradient checkpointing, precision) then take their defaults.
    """
    opt = lambda name: getattr(config, name, _LM_DEFAULTS[name])  # noqa: E731
    values: dict[str, Any] = {
        "output_dir": str(output_dir),
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "per_device_eval_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": opt("gradient_accumulation_steps"),
        "max_steps": config.max_steps,
        # transformers 5 takes a float < 1 here as a fraction of the total steps (warmup_ratio is gone).
        "warmup_steps": config.warmup_ratio,
        "lr_scheduler_type": opt("lr_scheduler_type"),
        "logging_steps": config.logging_steps,
        "seed": config.seed,
        "report_to": [],
        "disable_tqdm": True,
        # trl turns checkpointing on by default; off is ~30% faster and what small/CPU runs want.
        "gradient_checkpointing": opt("gradient_checkpointing"),
        # The final model is always saved explicitly; intermediate checkpoints only when asked for.
        "save_strategy": "steps" if opt("save_steps") else "no",
        **({"save_steps": opt("save_steps")} if opt("save_steps") else {}),
        "eval_strategy": ("steps" if opt("eval_steps") else "epoch") if has_eval else "no",
        **({"eval_steps": opt("eval_steps")} if has_eval and opt("eval_steps") else {}),
        **precision_args(opt("precision")),
        **type_specific,
    }
    known = {f.name for f in dataclasses.fields(args_cls) if f.init}
    if "activation_checkpointing" in known:  # transformers 5.2x renamed it; setting both avoids a FutureWarning
        values["activation_checkpointing"] = opt("gradient_checkpointing")
    extra = load_extra_args(config, workspace)
    unknown = sorted(set(extra) - known)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError("config_file", f"config_file: {config.config_file}: unknown training argument(s) {', '.join(hints)} "
                                         f"for {args_cls.__name__}")
    values.update(extra)
    try:
        return args_cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError("config_file" if extra else "", f"invalid training arguments: {exc}") from None
