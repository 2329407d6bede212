"""The SFT training step shared by the trainers that learn conversational prompt/completion records (sft, and the
rounds of kbalign): trl's SFTTrainer with the loss on the completion only, our metrics callback installed.
Imports torch/trl: training code path only."""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from trl import SFTTrainer

from trainers.common.hf_callback import MetricsCallback, install as install_callback


def train_sft_records(
    model,
    tokenizer,
    args,
    train_records: list[dict[str, Any]],
    *,
    eval_records: list[dict[str, Any]] | None = None,
    peft_config=None,
    callback: MetricsCallback | None = None,
    resume_from_checkpoint: str | None = None,
):
    """Trains `model` on `{"prompt": [messages], "completion": [messages]}` records; returns (trainer, result).

    `peft_config` wraps a plain model in a new adapter; a model that already is a PeftModel trains its adapter on
    (pass peft_config=None), which is how a later round continues an earlier one."""
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_records),
        eval_dataset=Dataset.from_list(eval_records) if eval_records else None,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    if callback is not None:
        install_callback(trainer, callback)
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer, result
