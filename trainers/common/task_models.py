"""What a task's fetched model (`task:<id>`, its published output directory) holds: a LoRA adapter, a causal LM, a
sentence-transformers model. Cheap (no torch): export and the LM trainers' `init_from` check it before any heavy
import, and every error names the config key that named the task."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trainers.errors import ConfigError
from trainers.paths import input_path

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# The task ids the platform hands out (the agent's launcher accepts the same).
TASK_REF = re.compile(r"^task:[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "*.bin.index.json")
_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")

SourceKind = Literal["lora_adapter", "causal_lm", "sentence_transformers", "model"]
KIND_TEXT = {
    "lora_adapter": "LoRA adapter", "causal_lm": "causal language model",
    "sentence_transformers": "sentence-transformers model", "model": "Hugging Face model",
}


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


def inspect_task_model(ref: str, field: str) -> Source:
    """The local copy of `ref` (fetched by the agent) and what kind of model it is; ConfigError naming `field` when it
    holds none."""
    path = input_path(ref, field)
    if not path.is_dir():
        raise ConfigError(field, f"{field}: {ref} is not a model directory on this host ({path})")
    if (path / ADAPTER_CONFIG).is_file():
        if not any((path / name).is_file() for name in ADAPTER_WEIGHTS):
            raise ConfigError(field, f"{field}: {ref} has {ADAPTER_CONFIG} but no adapter weights "
                                     f"({' or '.join(ADAPTER_WEIGHTS)})")
        return Source(ref, path, "lora_adapter", _adapter_base(ref, path / ADAPTER_CONFIG, field))
    if (path / "modules.json").is_file():
        return Source(ref, path, "sentence_transformers")
    if (path / "config.json").is_file():
        if not any(next(path.glob(pattern), None) for pattern in _WEIGHT_PATTERNS):
            raise ConfigError(field, f"{field}: {ref} has config.json but no model weights "
                                     "(model.safetensors or pytorch_model.bin)")
        return Source(ref, path, "causal_lm" if _is_causal_lm(path / "config.json") else "model")
    raise ConfigError(field, f"{field}: {ref} holds no model files (no {ADAPTER_CONFIG}, modules.json or config.json)")


def _read_json(ref: str, path: Path, field: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(field, f"{field}: {ref}: {path.name} cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(field, f"{field}: {ref}: {path.name} is not a JSON object")
    return data


def _adapter_base(ref: str, adapter_config: Path, field: str) -> str | None:
    value = _read_json(ref, adapter_config, field).get("base_model_name_or_path")
    return value if isinstance(value, str) and value else None


def _is_causal_lm(config_json: Path) -> bool:
    try:
        architectures = json.loads(config_json.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return False
    return any(isinstance(name, str) and name.endswith("ForCausalLM") for name in architectures)
