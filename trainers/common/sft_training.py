"""trl's SFTTrainer on conversational prompt/completion records (the loss on the completion only), for the trainers
that build their records themselves and train in several rounds (kbalign): a round's trainer can take its
learning-rate scheduler from a schedule that spans all rounds. Imports torch/trl: training code path only."""

from __future__ import annotations

from typing import Any, Callable

from datasets import Dataset
from trl import SFTTrainer

# (optimizer) -> the LR scheduler a round's trainer steps; None: the Trainer's own (warm-up and decay per round).
SchedulerFactory = Callable[[Any], Any]


class RoundSFTTrainer(SFTTrainer):
    """An SFTTrainer whose scheduler comes from `scheduler_factory` (e.g. a slice of a schedule over all rounds), so
    a later round neither warms up again nor restarts its decay. The optimizer is the Trainer's own (fresh)."""

    def __init__(self, *args: Any, scheduler_factory: SchedulerFactory | None = None, **kwargs: Any):
        self.scheduler_factory = scheduler_factory
        super().__init__(*args, **kwargs)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.scheduler_factory is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        self.lr_scheduler = self.scheduler_factory(optimizer if optimizer is not None else self.optimizer)
        self._created_lr_scheduler = True
        return self.lr_scheduler


def sft_args(config) -> dict[str, Any]:
    """The SFTConfig arguments of every SFT-style type: the loss covers the answer only (prompt tokens labelled
    -100); records are already fitted to max_length; packing as the config says."""
    return {"max_length": config.max_length, "packing": config.packing, "completion_only_loss": True}


def sft_trainer(model, tokenizer, args, train_records: list[dict[str, Any]], *,
                eval_records: list[dict[str, Any]] | None = None, peft_config=None,
                scheduler_factory: SchedulerFactory | None = None) -> RoundSFTTrainer:
    """A trainer of `model` on `{"prompt": [messages], "completion": [messages]}` records.

    `peft_config` wraps a plain model in a new adapter; a model that already is a PeftModel trains its adapter on
    (pass peft_config=None), which is how a later round continues an earlier one."""
    return RoundSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_records),
        eval_dataset=Dataset.from_list(eval_records) if eval_records else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        scheduler_factory=scheduler_factory,
    )
