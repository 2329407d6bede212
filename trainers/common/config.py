"""The pydantic base every task config builds on, and the options shared by the language-model types.

Strict on purpose: a typo'd key, a missing key, "3" for a number or an out-of-range value is rejected with the
key's name before any GPU time is spent. The field descriptions are what the console form and templates show.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from trainers.common.task_models import TASK_REF
from trainers.errors import ConfigError
from trainers.paths import policy, readable_file, shown


class TaskConfig(BaseModel):
    """Base of every task config: unknown keys and loose types are errors (strict still takes an int for a float)."""

    # allow_inf_nan=False: JSON's Infinity/NaN would only fail later, at launch.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    # Keys listed here come first in the JSON schema (the console form's order); the rest follow.
    schema_order: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        schema = super().model_json_schema(*args, **kwargs)
        props = schema.get("properties", {})
        order = [k for k in cls.schema_order if k in props] + [k for k in props if k not in cls.schema_order]
        schema["properties"] = {k: props[k] for k in order}
        return schema

    # Devices, for every type. The agent turns them into CUDA_VISIBLE_DEVICES for the trainer.
    gpu_vis: str | None = Field(
        default=None,
        pattern=r"^\s*\d+(\s*,\s*\d+)*\s*$",
        description='Pin the task to these GPU indices, e.g. "0,1" (the seed\'s key). Overrides `gpus`.',
        json_schema_extra={"advanced": True},
    )
    gpus: int | None = Field(
        default=None, ge=1, description="How many devices the task needs (default 1); more than one trains "
        "data-parallel (torchrun).", json_schema_extra={"advanced": True},
    )
    # Scheduling, for every type (the trainer ignores them).
    priority: int = Field(
        default=0, ge=-100, le=100, description="Queue priority: higher runs first, then older first.",
        json_schema_extra={"advanced": True},
    )
    max_retries: int = Field(
        default=0, ge=0, le=10, description="Requeues allowed when the task's agent is lost (it resumes from its "
        "latest checkpoint; set save_steps).", json_schema_extra={"advanced": True},
    )


class LMConfig(TaskConfig):
    """Options shared by the causal-LM trainers (sft, dpo, kbalign)."""

    model_name_or_path: str = Field(
        min_length=1,
        description="Base model: a local directory (absolute, or relative to the workspace) or a model hub id.",
    )
    output_dir: str | None = Field(
        default=None,
        description="Where the trained adapter/model is saved (relative to the workspace). "
        "Default: a directory of the task's own, <output root>/<type>/<task id>.",
    )
    config_file: str | None = Field(
        default=None,
        description="Optional YAML or JSON file of extra training arguments (HF TrainingArguments / trl config "
        "names), applied on top of these options.",
    )
    init_from: str | None = Field(
        default=None,
        description="Continue a finished task's training: task:<task id> of a succeeded task of yours. Its LoRA "
        "adapter keeps training on model_name_or_path (the adapter's own rank and targets win over lora_*), or its "
        "full weights replace model_name_or_path's. None: start from model_name_or_path.",
        json_schema_extra={"advanced": True},
    )
    use_lora: bool = Field(default=True, description="Train a LoRA adapter instead of all weights.")
    learning_rate: float = Field(default=5e-5, gt=0, description="Peak learning rate.")
    num_train_epochs: float = Field(default=3, gt=0, description="Passes over the training data.")
    per_device_train_batch_size: int = Field(default=4, ge=1, description="Rows per batch on each device.")
    max_length: int = Field(default=1024, ge=16, description="Longest tokenized sequence (prompt + answer). A longer "
                            "row has its retrieved passages trimmed to fit (see truncation).")
    max_steps: int = Field(default=-1, ge=-1, description="Stop after this many optimizer steps (-1: use epochs).")
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, description="Batches accumulated per optimizer step (effective batch = batch x this x GPUs).",
        json_schema_extra={"advanced": True},
    )
    warmup_ratio: float = Field(
        default=0.0, ge=0, lt=1, description="Fraction of the steps spent warming the learning rate up from 0.",
        json_schema_extra={"advanced": True},
    )
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
    ] = Field(default="linear", description="Learning-rate schedule after warm-up.", json_schema_extra={"advanced": True})
    logging_steps: int = Field(default=1, ge=1, description="Emit loss/progress metrics every N steps.",
                               json_schema_extra={"advanced": True})
    save_steps: int | None = Field(
        default=None, ge=1, description="Save a checkpoint every N steps (none: only the final model).",
        json_schema_extra={"advanced": True},
    )
    eval_data_path: str | None = Field(
        default=None, description="Evaluation data in the training format (relative to the workspace).",
        json_schema_extra={"advanced": True},
    )
    eval_ratio: float = Field(
        default=0.0, ge=0, lt=1, description="Hold this fraction of the training rows out for evaluation "
        "(ignored when eval_data_path is given).", json_schema_extra={"advanced": True},
    )
    eval_steps: int | None = Field(
        default=None, ge=1, description="Evaluate every N steps (none: once per epoch).",
        json_schema_extra={"advanced": True},
    )
    gradient_checkpointing: bool = Field(
        default=False, description="Trade compute for memory on large models (activations are recomputed in the "
        "backward pass).", json_schema_extra={"advanced": True},
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto", description="Mixed precision: the weights being trained stay float32 and the matrix "
        "products run in half precision. auto = bf16 on GPUs that support it, else fp16; fp32 on a CPU (bf16 given "
        "explicitly runs as CPU autocast).", json_schema_extra={"advanced": True},
    )
    use_liger_kernel: bool = Field(
        default=False, description="Use Liger's fused Triton kernels (less memory, faster). Needs a CUDA device "
        "and the liger-kernel package on the agent.", json_schema_extra={"advanced": True},
    )
    quantization: Literal["4bit", "8bit"] | None = Field(
        default=None, description="QLoRA: load the frozen base model in 4-bit (NF4) or 8-bit through "
        "bitsandbytes and train a LoRA adapter on top. Needs use_lora, a CUDA device and bitsandbytes on the "
        "agent.", json_schema_extra={"advanced": True},
    )
    save_total_limit: int | None = Field(
        default=3, ge=1, description="Keep at most this many checkpoints; older ones are deleted (none: keep all).",
        json_schema_extra={"advanced": True},
    )
    truncation: Literal["passages", "error"] = Field(
        default="passages", description="Rows longer than max_length: passages = the retrieved passages are "
        "trimmed or dropped until the row fits (never the question or the answer); a row that still does not fit "
        "is skipped and reported by line. error = such a row fails the task instead of being skipped.",
        json_schema_extra={"advanced": True},
    )
    seed: int = Field(default=42, description="Random seed for reproducible runs.", json_schema_extra={"advanced": True})
    lora_r: int = Field(default=8, ge=1, description="LoRA rank.", json_schema_extra={"advanced": True})
    lora_alpha: int = Field(default=16, ge=1, description="LoRA scaling alpha.", json_schema_extra={"advanced": True})
    lora_dropout: float = Field(default=0.05, ge=0, le=1, description="Dropout on the LoRA layers.",
                                json_schema_extra={"advanced": True})
    lora_target_modules: list[str] = Field(
        default=["all-linear"], min_length=1,
        description='Module names LoRA wraps, e.g. ["q_proj", "v_proj"]. Default ["all-linear"]: every linear '
        "layer but the output head (what QLoRA and LLaMA-Factory use).",
        json_schema_extra={"advanced": True},
    )

    @field_validator("init_from")
    @classmethod
    def _task_ref(cls, value: str | None) -> str | None:
        if value is not None and not TASK_REF.match(value):
            raise PydanticCustomError("task_ref", "must name a succeeded task as task:<task id>")
        return value

    @field_validator("quantization")
    @classmethod
    def _quantization_needs_lora(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("use_lora") is False:
            raise PydanticCustomError("needs_lora", "a quantized base model can only train a LoRA adapter "
                                                    "(set use_lora: true, or leave quantization out)")
        return value


class PackedLMConfig(LMConfig):
    """The LM types trained by trl's SFTTrainer (sft, kbalign), which can pack rows (trl's DPO trainer cannot)."""

    packing: bool = Field(
        default=False, description="Pack several short rows into one max_length sequence without padding (trl's "
        "best-fit packing, padding-free). Faster on GPUs when rows are much shorter than "
        "max_length; the loss still covers the answers only.", json_schema_extra={"advanced": True},
    )


# Training arguments the platform sets itself: where the task writes, what it resumes from, what it uploads.
PLATFORM_OWNED_ARGS = frozenset({
    "output_dir", "logging_dir", "overwrite_output_dir", "resume_from_checkpoint", "push_to_hub", "hub_model_id",
    "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push", "hub_revision", "push_to_hub_model_id",
    "push_to_hub_organization", "push_to_hub_token",
})
# Arguments that may name a file to read (or hold its contents inline as a mapping).
FILE_ARGS = ("deepspeed", "fsdp_config", "accelerator_config")


def load_extra_args(config: LMConfig, workspace: Path | None = None) -> dict[str, Any]:
    """Reads `config_file` (YAML or JSON mapping). Cheap: used by validate_data and by the trainers.

    A parse error says where (line and column) and what kind of mistake, never what the line holds.
    """
    if not config.config_file:
        return {}
    field = "config_file"
    path = readable_file(config.config_file, field, workspace, error=ConfigError)
    where = shown(path, policy(workspace).workspace)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(field, f"{field}: {where} is not UTF-8 text (byte {exc.start})") from None
    data = _parse_mapping(text, path.suffix.lower() == ".json", field, where)
    owned = sorted(set(data) & PLATFORM_OWNED_ARGS)
    if owned:
        raise ConfigError(field, f"{field}: {where}: {', '.join(map(repr, owned))} cannot be set here; the platform "
                                 "sets it for every task")
    for name in FILE_ARGS:
        if isinstance(data.get(name), str):
            data[name] = str(readable_file(data[name], f"{field}.{name}", workspace, error=ConfigError))
    return data


def _parse_mapping(text: str, is_json: bool, field: str, where: str) -> dict[str, Any]:
    if is_json:
        import json

        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise ConfigError(field, f"{field}: {where} line {exc.lineno} column {exc.colno}: not valid JSON "
                                     f"({exc.msg})") from None
        except RecursionError:
            raise ConfigError(field, f"{field}: {where} is nested too deeply") from None
    else:
        import yaml  # YAML is a superset of JSON, so any other suffix is read as YAML

        try:
            data = yaml.safe_load(text) or {}
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            at = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            raise ConfigError(field, f"{field}: {where}{at}: not valid YAML ({exc.problem or 'syntax error'})") from None
        except (yaml.YAMLError, RecursionError):
            raise ConfigError(field, f"{field}: {where} is not valid YAML") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(field, f"{field}: {where} must hold a mapping of argument names to values")
    return data
