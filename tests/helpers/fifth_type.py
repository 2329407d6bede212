"""A fifth task type registered from outside trainers/ (BUGAGARIC_TRAINER_PLUGINS=tests.helpers.fifth_type): "qa",
rows {"question", "answer"}, trained for real with the shared SFT machinery. Proves that templates, validation, the
dry run and a real run need no change anywhere else."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from trainers.common.config import LMConfig
from trainers.common.jsonl import load_rows
from trainers.registry import DataReport, TaskType, register


class QaConfig(LMConfig):
    train_data_path: str = Field(min_length=1, description="JSONL rows {question, answer}.")


class QaRow(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)


def validate_data(config: QaConfig, workspace: Path) -> DataReport:
    return load_rows(config.train_data_path, QaRow, field="train_data_path", workspace=workspace)[1]


def train(config: QaConfig, ctx) -> dict:
    from trl import SFTConfig

    from trainers.common.hf_callback import MetricsCallback
    from trainers.common.lora import lora_config
    from trainers.common.metrics import MetricsEmitter
    from trainers.common.model_loading import load_causal_lm
    from trainers.common.sft_training import train_sft_records
    from trainers.common.training_args import build_args

    rows, _ = load_rows(config.train_data_path, QaRow, field="train_data_path", workspace=ctx.workspace)
    records = [{"prompt": [{"role": "user", "content": r.question}], "completion": [{"role": "assistant", "content": r.answer}]}
               for r in rows]
    args = build_args(SFTConfig, config, ctx.output_dir, ctx.workspace, max_length=config.max_length)
    model, tokenizer = load_causal_lm(config.model_name_or_path, ctx.workspace)
    trainer, _ = train_sft_records(model, tokenizer, args, records, peft_config=lora_config(config, model),
                                   callback=MetricsCallback(MetricsEmitter(task_id=ctx.task_id), num_rows=len(rows)))
    trainer.save_model(str(ctx.output_dir))
    return {}


TASK_TYPE = register(TaskType(
    name="qa", description="Question → answer fine-tuning (a plugin type registered by the tests).",
    config_model=QaConfig, entry_module="tests.helpers.fifth_type", validate_data=validate_data,
    default_config={"model_name_or_path": "m", "train_data_path": "data/qa.jsonl"},
    data_example={"question": "What is 2+2?", "answer": "4"},
))

if __name__ == "__main__":
    from trainers.common.cli import main

    sys.exit(main("qa", train))
