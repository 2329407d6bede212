"""SFT training: trl SFTTrainer on conversational prompt/completion records (loss on the answer only), LoRA by
default. Heavy imports live here; `python -m trainers.sft` imports this only after config and data checked out."""

from __future__ import annotations

from pathlib import Path

from trl import SFTConfig

from trainers.common.cli import RunContext
from trainers.common.hf_callback import MetricsCallback, run_summary, write_summary
from trainers.common.lora import lora_config
from trainers.common.metrics import MetricsEmitter
from trainers.common.model_loading import load_causal_lm
from trainers.common.eval_split import split_eval
from trainers.common.sft_training import train_sft_records
from trainers.common.training_args import build_args
from trainers.sft.data import to_records
from trainers.sft.spec import SftConfig, load_sft_rows


def train(config: SftConfig, ctx: RunContext) -> dict:
    rows, report = load_sft_rows(config, ctx.workspace)
    load_eval = (lambda: load_sft_rows(config, ctx.workspace, field="eval_data_path")[0]) if config.eval_data_path else None
    rows, eval_rows = split_eval(rows, eval_ratio=config.eval_ratio, seed=config.seed, load_eval=load_eval)
    args = build_args(SFTConfig, config, ctx.output_dir, ctx.workspace, has_eval=bool(eval_rows), max_length=config.max_length)
    dtype = "bfloat16" if args.bf16 else "float32"
    model, tokenizer = load_causal_lm(config.model_name_or_path, ctx.workspace, dtype=dtype)

    callback = MetricsCallback(MetricsEmitter(task_id=ctx.task_id), num_rows=len(rows),
                               model_name_or_path=config.model_name_or_path, use_lora=config.use_lora)
    trainer, result = train_sft_records(
        model, tokenizer, args, to_records(rows),
        eval_records=to_records(eval_rows) if eval_rows else None,
        peft_config=lora_config(config, model) if config.use_lora else None,
        callback=callback,
        resume_from_checkpoint=ctx.resume_from_checkpoint,
    )

    out = Path(args.output_dir)
    trainer.save_model(str(out))  # adapter only when LoRA, full weights otherwise; rank 0 writes in a parallel run
    if not trainer.is_world_process_zero():
        return {}
    tokenizer.save_pretrained(str(out))
    summary = {
        "task_type": "sft",
        "model_name_or_path": config.model_name_or_path,
        "use_lora": config.use_lora,
        "num_rows": len(rows),
        "data_stats": report.stats,
        **run_summary(trainer, result, callback),
        "output_dir": str(out),
    }
    write_summary(out, summary)
    print(f"saved {'LoRA adapter' if config.use_lora else 'model'} to {out}", flush=True)
    return summary
