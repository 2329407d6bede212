"""The peft LoraConfig for a causal LM from the shared LM options. Imports peft: training code path only."""

from __future__ import annotations

from peft import LoraConfig

from trainers.common.config import LMConfig


def lora_config(config: LMConfig) -> LoraConfig:
    targets: list[str] | str = config.lora_target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"  # peft only understands the shortcut as a plain string (every linear but the head)
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
    )
