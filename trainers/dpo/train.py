"""DPO training: trl DPOTrainer on conversational preference records, LoRA by default. Heavy imports live here;
`python -m trainers.dpo` imports this only after config and data checked out.

With LoRA the reference policy is the base model with the adapter switched off (`ref_model=None`), so only one copy
of the weights is in memory. With full weights a second, frozen copy is loaded as the reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from trainers.common.cli import RunContext
from trainers.common.eval_split import split_eval
from trainers.common.hf_callback import MetricsCallback, install as install_callback, run_summary, write_summary
from trainers.common.lora import lora_config
from trainers.common.metrics import MetricsEmitter
from trainers.common.model_loading import load_causal_lm
from trainers.common.training_args import build_args
from trainers.dpo.data import to_records
from trainers.dpo.spec import DpoConfig, load_dpo_rows

REWARD_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")


def last_logged(log_history: list[dict[str, Any]], key: str) -> float | None:
    """The last training-step value of `key` the trainer logged (eval entries are prefixed `eval_`)."""
    for entry in reversed(log_history):
        if key in entry:
            return entry[key]
    return None


def build_trainer(config: DpoConfig, ctx: RunContext):
    """(trainer, tokenizer, rows, report): everything up to `trainer.train()`."""
    rows, report = load_dpo_rows(config, ctx.workspace)
    load_eval = (lambda: load_dpo_rows(config, ctx.workspace, field="eval_data_path")[0]) if config.eval_data_path else None
    rows, eval_rows = split_eval(rows, eval_ratio=config.eval_ratio, seed=config.seed, load_eval=load_eval)
    args = build_args(DPOConfig, config, ctx.output_dir, ctx.workspace, has_eval=bool(eval_rows),
                      max_length=config.max_length, beta=config.beta, loss_type=[config.loss_type])
    dtype = "bfloat16" if args.bf16 else "float32"
    model, tokenizer = load_causal_lm(config.model_name_or_path, ctx.workspace, dtype=dtype)
    ref_model = None
    if not config.use_lora:
        # Loaded the same way as the policy (local path or hub id, same pad-token handling), never trained.
        ref_model, _ = load_causal_lm(config.model_name_or_path, ctx.workspace, tokenizer=tokenizer, dtype=dtype)
        ref_model.requires_grad_(False).eval()
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=Dataset.from_list(to_records(rows)),
        eval_dataset=Dataset.from_list(to_records(eval_rows)) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=lora_config(config, model) if config.use_lora else None,
    )
    return trainer, tokenizer, rows, report


def train(config: DpoConfig, ctx: RunContext) -> dict:
    trainer, tokenizer, rows, report = build_trainer(config, ctx)
    callback = MetricsCallback(MetricsEmitter(task_id=ctx.task_id), num_rows=len(rows),
                               model_name_or_path=config.model_name_or_path, use_lora=config.use_lora,
                               beta=config.beta, loss_type=config.loss_type)
    install_callback(trainer, callback)
    result = trainer.train(resume_from_checkpoint=ctx.resume_from_checkpoint)

    out = Path(trainer.args.output_dir)
    trainer.save_model(str(out))  # adapter only when LoRA, full weights otherwise; rank 0 writes in a parallel run
    if not trainer.is_world_process_zero():
        return {}
    tokenizer.save_pretrained(str(out))
    history = trainer.state.log_history
    summary = {
        "task_type": "dpo",
        "model_name_or_path": config.model_name_or_path,
        "use_lora": config.use_lora,
        "beta": config.beta,
        "loss_type": config.loss_type,
        "num_rows": len(rows),
        "data_stats": report.stats,
        **run_summary(trainer, result, callback),
        "final_reward_accuracy": last_logged(history, "rewards/accuracies"),
        "final_reward_margin": last_logged(history, "rewards/margins"),
        "output_dir": str(out),
    }
    write_summary(out, summary)
    print(f"saved {'LoRA adapter' if config.use_lora else 'model'} to {out}", flush=True)
    return summary
