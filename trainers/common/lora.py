"""The peft LoraConfig for a causal LM from the shared LM options. Imports peft: training code path only."""

from __future__ import annotations

from peft import LoraConfig
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

from trainers.common.config import LMConfig


def lora_config(config: LMConfig, model) -> LoraConfig:
    targets: list[str] | str | None = config.lora_target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"  # peft only understands the shortcut as a plain string
    elif targets is None and model.config.model_type not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
        targets = "all-linear"  # peft has no default for this architecture
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
    )
