"""Export's config model and source check, registered as task type "export". Cheap to import: no torch.

An export task is queued by the control plane (ExportTask), not offered as a template: it takes a finished task's
published model (`source: task:<id>`, fetched and unpacked by the agent), merges a LoRA adapter into its base model
or packages a full model as it is, and writes the result into its own output directory, which is its artifacts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from trainers.common.config import TaskConfig
from trainers.common.model_loading import confine_local_model
from trainers.errors import ConfigError
from trainers.paths import input_path
from trainers.registry import DataReport, TaskType, register

SOURCE_FIELD = "source"
BASE_FIELD = "model_name_or_path"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# The task ids the platform hands out (the agent's launcher accepts the same).
_TASK_REF = re.compile(r"^task:[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "*.bin.index.json")
_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")

Dtype = Literal["auto", "float32", "float16", "bfloat16"]
SourceKind = Literal["lora_adapter", "causal_lm", "sentence_transformers", "model"]
KIND_TEXT = {
    "lora_adapter": "LoRA adapter", "causal_lm": "causal language model",
    "sentence_transformers": "sentence-transformers model", "model": "Hugging Face model",
}


class ExportConfig(TaskConfig):
    schema_order = ("source", "model_name_or_path", "merge_lora", "dtype", "output_dir")

    source: str = Field(description="The task whose published model is exported: task:<task id>.")
    model_name_or_path: str | None = Field(
        default=None, min_length=1,
        description="The base model of a LoRA adapter (as this agent names it). Default: the adapter's own "
        "base_model_name_or_path (adapter_config.json).",
    )
    merge_lora: bool = Field(
        default=True, description="Merge a LoRA adapter into its base model (a model that loads without peft); "
        "false: package the adapter as it is.",
    )
    dtype: Dtype = Field(
        default="auto", description="Weights of the exported causal LM; auto = the base model's own dtype.",
    )
    output_dir: str | None = Field(
        default=None, description="Where the export is written (relative to the workspace). Default: "
        "output/export/<task id>.",
    )

    @field_validator("source")
    @classmethod
    def _task_ref(cls, value: str) -> str:
        if not _TASK_REF.match(value):
            raise PydanticCustomError("task_ref", "must name a task's model as task:<task id>")
        return value


@dataclass(frozen=True)
class Source:
    """What the fetched source directory holds."""

    ref: str
    path: Path
    kind: SourceKind
    # adapter_config.json's base_model_name_or_path (adapters only; the training agent's name for it).
    adapter_base: str | None = None

    @property
    def has_tokenizer(self) -> bool:
        return any((self.path / name).is_file() for name in _TOKENIZER_FILES)


def inspect_source(config: ExportConfig) -> Source:
    """The local copy of the source and what kind of model it is; ConfigError naming `source` when it holds none."""
    ref = config.source
    path = input_path(ref, SOURCE_FIELD)
    if not path.is_dir():
        raise ConfigError(SOURCE_FIELD, f"{SOURCE_FIELD}: {ref} is not a model directory on this host ({path})")
    if (path / ADAPTER_CONFIG).is_file():
        if not any((path / name).is_file() for name in ADAPTER_WEIGHTS):
            raise ConfigError(SOURCE_FIELD, f"{SOURCE_FIELD}: {ref} has {ADAPTER_CONFIG} but no adapter weights "
                                            f"({' or '.join(ADAPTER_WEIGHTS)})")
        return Source(ref, path, "lora_adapter", _adapter_base(ref, path / ADAPTER_CONFIG))
    if (path / "modules.json").is_file():
        return Source(ref, path, "sentence_transformers")
    if (path / "config.json").is_file():
        if not any(next(path.glob(pattern), None) for pattern in _WEIGHT_PATTERNS):
            raise ConfigError(SOURCE_FIELD, f"{SOURCE_FIELD}: {ref} has config.json but no model weights "
                                            "(model.safetensors or pytorch_model.bin)")
        return Source(ref, path, "causal_lm" if _is_causal_lm(path / "config.json") else "model")
    raise ConfigError(SOURCE_FIELD, f"{SOURCE_FIELD}: {ref} holds no model files (no {ADAPTER_CONFIG}, "
                                    "modules.json or config.json)")


def _read_json(ref: str, path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(SOURCE_FIELD, f"{SOURCE_FIELD}: {ref}: {path.name} cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(SOURCE_FIELD, f"{SOURCE_FIELD}: {ref}: {path.name} is not a JSON object")
    return data


def _adapter_base(ref: str, adapter_config: Path) -> str | None:
    value = _read_json(ref, adapter_config).get("base_model_name_or_path")
    return value if isinstance(value, str) and value else None


def _is_causal_lm(config_json: Path) -> bool:
    try:
        architectures = json.loads(config_json.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return False
    return any(isinstance(name, str) and name.endswith("ForCausalLM") for name in architectures)


def base_model(config: ExportConfig, source: Source) -> str:
    """The base model to merge an adapter into: the config's, else the adapter's own."""
    if config.model_name_or_path:
        return config.model_name_or_path
    if source.adapter_base:
        return source.adapter_base
    raise ConfigError(BASE_FIELD, f"{BASE_FIELD}: the adapter in {source.ref} names no base model "
                                  f"(base_model_name_or_path in {ADAPTER_CONFIG}); give {BASE_FIELD}")


def validate_data(config: ExportConfig, workspace: Path) -> DataReport:
    """Checks the source before any heavy import: it was fetched, holds a model, and an adapter to merge has a base
    model that tasks may read."""
    source = inspect_source(config)
    stats: dict = {"kind": source.kind}
    if source.kind == "lora_adapter" and config.merge_lora:
        base = base_model(config, source)
        if config.model_name_or_path is None:  # a base given in the config is checked like every type's
            try:
                confine_local_model(base, workspace)
            except ConfigError as exc:
                raise ConfigError(BASE_FIELD, f"{exc.message} (the adapter's base_model_name_or_path; give "
                                              f"{BASE_FIELD})") from None
        stats["base_model"] = base
    return DataReport(path=source.ref, rows=0, stats=stats)


DEFAULT_CONFIG = {"source": "task:TASK_ID", "merge_lora": True, "dtype": "auto"}

TASK_TYPE = register(
    TaskType(
        name="export",
        description="Exports a finished task's model: merges a LoRA adapter into its base model (safetensors and "
        "the tokenizer, loadable without peft), or packages a full or sentence-transformers model as it is.",
        config_model=ExportConfig,
        entry_module="trainers.export",
        validate_data=validate_data,
        default_config=DEFAULT_CONFIG,
        data_example={},
        input_fields=(SOURCE_FIELD,),
        listed=False,
    )
)
