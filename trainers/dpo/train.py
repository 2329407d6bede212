"""DPO training: trl DPOTrainer on conversational preference records, LoRA by default, over the shared training
skeleton (trainers.common.workflow). Heavy imports live here; `python -m trainers.dpo` imports this only after config
and data checked out.

With LoRA the reference policy is the base model with the adapter switched off (`ref_model=None`), so only one copy
of the weights is in memory. With full weights a second, frozen copy is loaded as the reference. The held-out split
is scored after training: reward accuracy (how often the chosen answer gets the higher implicit reward) and the
reward margin, not only the last training batch's."""

from __future__ import annotations

from typing import Any

from trl import DPOConfig, DPOTrainer

from trainers.common.cli import RunContext
from trainers.common.model_loading import load_causal_lm, starting_weights
from trainers.common.training_args import compute_dtype
from trainers.common.workflow import LMWorkflow, Prepared
from trainers.dpo.data import fit_record
from trainers.dpo.spec import DpoConfig, load_dpo_rows

def last_logged(log_history: list[dict[str, Any]], key: str) -> float | None:
    """The last value of `key` the trainer logged (eval entries are prefixed `eval_`)."""
    for entry in reversed(log_history):
        if key in entry:
            return entry[key]
    return None


class DpoWorkflow(LMWorkflow):
    task_type = "dpo"
    load_file = staticmethod(load_dpo_rows)
    fit_record = staticmethod(fit_record)

    def __init__(self, config: DpoConfig, ctx: RunContext):
        super().__init__(config, ctx)
        self.ref_model = None
        self.extra_summary.update(beta=config.beta, loss_type=config.loss_type)

    def args_class(self) -> type:
        return DPOConfig

    def type_args(self) -> dict[str, Any]:
        return {"max_length": self.config.max_length, "beta": self.config.beta, "loss_type": [self.config.loss_type]}

    def load_model(self, args):
        model, tokenizer = super().load_model(args)
        if not self.config.use_lora:
            # Loaded the same way as the policy (local path or hub id, same pad-token handling), never trained, so
            # in the compute dtype.
            # Continuing a finished task's full model (init_from): the reference is where this run starts.
            self.ref_model, _ = load_causal_lm(self.config.model_name_or_path, self.ctx.workspace,
                                               tokenizer=tokenizer, weights=starting_weights(self.config),
                                               dtype=compute_dtype(args))
            self.ref_model.requires_grad_(False).eval()
        return model, tokenizer

    def make_trainer(self, model, tokenizer, args, prepared: Prepared):
        return DPOTrainer(model=model, ref_model=self.ref_model, args=args, train_dataset=prepared.train,
                          eval_dataset=prepared.eval, processing_class=tokenizer, peft_config=self.peft_config(model))

    def start_info(self) -> dict[str, Any]:
        return {**super().start_info(), "beta": self.config.beta, "loss_type": self.config.loss_type}

    def evaluate(self, trainer, phase: str) -> dict[str, Any] | None:
        """The held-out pairs after training. (Before training the policy is the reference: every reward is 0.)"""
        if phase != "after" or trainer.eval_dataset is None:
            return None
        metrics = trainer.evaluate()
        return {"reward_accuracy": metrics.get("eval_rewards/accuracies"),
                "reward_margin": metrics.get("eval_rewards/margins"),
                "reward_chosen": metrics.get("eval_rewards/chosen"),
                "reward_rejected": metrics.get("eval_rewards/rejected"),
                "loss": metrics.get("eval_loss"), "pairs": len(trainer.eval_dataset)}

    def save(self, trainer, processor, out) -> None:
        super().save(trainer, processor, out)
        history = trainer.state.log_history
        # The last training batches' figures, beside the held-out ones in eval_after.
        self.extra_summary["final_reward_accuracy"] = last_logged(history, "rewards/accuracies")
        self.extra_summary["final_reward_margin"] = last_logged(history, "rewards/margins")


def train(config: DpoConfig, ctx: RunContext) -> dict:
    return DpoWorkflow(config, ctx).run()
