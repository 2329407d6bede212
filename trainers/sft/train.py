"""SFT training: trl SFTTrainer on conversational prompt/completion records (loss on the answer only), LoRA by
default, over the shared training skeleton (trainers.common.workflow). Heavy imports live here; `python -m
trainers.sft` imports this only after config and data checked out."""

from __future__ import annotations

from typing import Any

from trl import SFTConfig, SFTTrainer

from trainers.common.cli import RunContext
from trainers.common.sft_training import sft_args
from trainers.common.workflow import LMWorkflow, Prepared
from trainers.sft.data import fit_record
from trainers.sft.spec import SftConfig, load_sft_rows


class SftWorkflow(LMWorkflow):
    task_type = "sft"
    load_file = staticmethod(load_sft_rows)
    fit_record = staticmethod(fit_record)

    def args_class(self) -> type:
        return SFTConfig

    def type_args(self) -> dict[str, Any]:
        return sft_args(self.config)

    def make_trainer(self, model, tokenizer, args, prepared: Prepared):
        return SFTTrainer(model=model, args=args, train_dataset=prepared.train, eval_dataset=prepared.eval,
                          processing_class=tokenizer, peft_config=self.peft_config(model))

    def evaluate(self, trainer, phase: str) -> dict[str, Any] | None:
        """The held-out rows' loss and token accuracy after training (their generated answers are the skeleton's
        predictions)."""
        if phase != "after" or trainer.eval_dataset is None:
            return None
        metrics = trainer.evaluate()
        return {"loss": metrics.get("eval_loss"), "mean_token_accuracy": metrics.get("eval_mean_token_accuracy")}


def train(config: SftConfig, ctx: RunContext) -> dict:
    return SftWorkflow(config, ctx).run()
