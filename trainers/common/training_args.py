"""Builds a trl/transformers args object from our config plus the user's `config_file` extras, through transformers'
own argument parser (HfArgumentParser), so an unknown or mistyped argument is a ConfigError naming it, in the dry run
as well as at launch. Also the checks of options that depend on the agent's hardware and packages (precision,
QLoRA, Liger). Imports torch: training and dry-run code paths only."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import typing
from pathlib import Path
from typing import Any

import torch

from trainers.common import distributed
from trainers.common.config import LMConfig, TaskConfig, load_extra_args
from trainers.errors import ConfigError


# What build_args uses for the LM-only options when a config does not have them (LMConfig's defaults).
_LM_DEFAULTS: dict[str, Any] = {name: LMConfig.model_fields[name].default for name in (
    "gradient_accumulation_steps", "lr_scheduler_type", "gradient_checkpointing", "save_steps", "eval_steps",
    "precision", "save_total_limit", "use_liger_kernel")}


def precision_args(precision: str = "auto") -> dict[str, Any]:
    """Mixed precision from the config's `precision`: auto = bf16 on a GPU that has it, fp16 on older GPUs, fp32 on a
    CPU. On a CPU an explicit bf16 runs as CPU autocast; fp16 falls back to fp32 (CPU fp16 autocast is slow and
    loses precision). The weights being trained stay float32 in every case (model_loading.load_causal_lm)."""
    if not torch.cuda.is_available():
        if precision == "bf16":
            return {"bf16": True, "fp16": False, "use_cpu": True}
        if precision == "fp16":
            print("precision fp16 needs a GPU; training in fp32 on the CPU", flush=True)
        return {"bf16": False, "fp16": False, "use_cpu": True}
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision", "precision: this GPU does not support bf16; use fp16 or auto")
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": False}


def compute_dtype(args) -> torch.dtype:
    """The dtype the matrix products run in under these arguments (what frozen or quantized weights load as)."""
    return torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else torch.float32


def check_runtime_options(config: Any) -> None:
    """Options this agent must be able to honour: a clear ConfigError naming the key, before any model is loaded
    (the dry run calls this on the agent too)."""
    distributed.check(config)  # first: what the config must change comes before what this agent lacks
    quantization = getattr(config, "quantization", None)
    if quantization:
        if not torch.cuda.is_available():
            raise ConfigError("quantization", f"quantization: {quantization} (QLoRA) needs a CUDA device and this "
                                              "agent has none; leave quantization out to train in full precision")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError("quantization", "quantization: the bitsandbytes package is not installed on this "
                                              "agent (pip install bitsandbytes)")
    if getattr(config, "use_liger_kernel", False):
        if not torch.cuda.is_available():
            raise ConfigError("use_liger_kernel", "use_liger_kernel: Liger's kernels need a CUDA device and this "
                                                  "agent has none")
        if importlib.util.find_spec("liger_kernel") is None:
            raise ConfigError("use_liger_kernel", "use_liger_kernel: the liger-kernel package is not installed on "
                                                  "this agent (pip install liger-kernel)")
    check_trackers(config)


def check_trackers(config: Any) -> None:
    """Every tracker in `report_to` must be installed on this agent (the HF trainer would fail at its first step)."""
    for tracker in getattr(config, "report_to", None) or ():
        if importlib.util.find_spec(tracker) is None:
            raise ConfigError("report_to", f"report_to: {tracker} is not installed on this agent (pip install "
                                           f"'bugagaric-finetune[tracking]', or leave {tracker} out)")


def tracker_environment(config: Any, output_dir: Path) -> None:
    """mlflow without a tracking server of the agent's own logs into the output directory (mlruns/), so the run lands
    among the task's artifacts instead of the trainer's working directory."""
    if "mlflow" in (getattr(config, "report_to", None) or ()) and not os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ["MLFLOW_TRACKING_URI"] = (Path(output_dir).resolve() / "mlruns").as_uri()


def build_args(
    args_cls: type, config: LMConfig | TaskConfig, output_dir: Path, workspace: Path, *, has_eval: bool = False,
    **type_specific: Any
):
    """`args_cls(...)` from the shared options, then type-specific ones, then the config_file on top.

    `config` is an LMConfig, or any config with the basic options (learning_rate, num_train_epochs,
    per_device_train_batch_size, max_steps, warmup_ratio, logging_steps, seed, config_file): the LM-only ones
    (accumulation, scheduler, checkpoints, eval_steps, gradient checkpointing, precision) then take their defaults.
    """
    check_runtime_options(config)
    tracker_environment(config, output_dir)
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
        # Our own metrics callback always reports; these are the user's trackers on top (tensorboard: runs/).
        "report_to": list(getattr(config, "report_to", None) or []),
        "disable_tqdm": True,
        # trl turns checkpointing on by default; off is ~30% faster and what small/CPU runs want.
        "gradient_checkpointing": opt("gradient_checkpointing"),
        # The final model is always saved explicitly; intermediate checkpoints only when asked for.
        "save_strategy": "steps" if opt("save_steps") else "no",
        **({"save_steps": opt("save_steps")} if opt("save_steps") else {}),
        "save_total_limit": opt("save_total_limit"),
        "eval_strategy": ("steps" if opt("eval_steps") else "epoch") if has_eval else "no",
        **({"eval_steps": opt("eval_steps")} if has_eval and opt("eval_steps") else {}),
        "use_liger_kernel": opt("use_liger_kernel"),
        **precision_args(opt("precision")),
        **distributed.training_values(config),  # the sharding strategy; a copy of each checkpoint on every node
        **type_specific,
    }
    fields = {f.name: f for f in dataclasses.fields(args_cls) if f.init}
    if "activation_checkpointing" in fields:  # transformers 5.2x renamed it; setting both avoids a FutureWarning
        values["activation_checkpointing"] = opt("gradient_checkpointing")
    extra = load_extra_args(config, workspace)
    _check_extra_args(args_cls, extra, fields, str(config.config_file))
    distributed.check_extra_args(config, extra)
    values.update(extra)
    from transformers import HfArgumentParser

    try:
        (args,) = HfArgumentParser(args_cls).parse_dict(values, allow_extra_keys=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError("config_file" if extra else "", f"invalid training arguments: {exc}") from None
    return args


def _check_extra_args(args_cls: type, extra: dict[str, Any], fields: dict[str, dataclasses.Field],
                      config_file: str) -> None:
    """Unknown names (with a did-you-mean) and values of the wrong type, each named: what the argument parser would
    otherwise let through to fail mid-run."""
    unknown = sorted(set(extra) - set(fields))
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, fields, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError("config_file", f"config_file: {config_file}: unknown training argument(s) "
                                         f"{', '.join(hints)} for {args_cls.__name__}")
    if not extra:
        return
    from pydantic import TypeAdapter, ValidationError

    hints = typing.get_type_hints(args_cls)
    for name, value in extra.items():
        kind = hints.get(name)
        if kind is None:
            continue
        try:
            TypeAdapter(kind).validate_python(value)
        except ValidationError as exc:
            reason = exc.errors()[0].get("msg", "wrong type")
            raise ConfigError("config_file", f"config_file: {config_file}: {name}: {reason} (got "
                                             f"{type(value).__name__} {value!r:.60})") from None
        except Exception:  # noqa: BLE001 - a type pydantic cannot check (a callable, a class): the parser decides
            continue
