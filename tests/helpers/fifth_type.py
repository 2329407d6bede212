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


def load_qa_rows(config: QaConfig, workspace: Path | None = None, *, field: str = "train_data_path"):
    return load_rows(getattr(config, field), QaRow, field=field, workspace=workspace)


def validate_data(config: QaConfig, workspace: Path) -> DataReport:
    return load_qa_rows(config, workspace)[1]


def train(config: QaConfig, ctx) -> dict:
    """The shared training skeleton with the qa rows: a plugin names its rows, its records and its trainer."""
    from trl import SFTConfig, SFTTrainer

    from trainers.common.workflow import LMWorkflow

    class QaWorkflow(LMWorkflow):
        task_type = "qa"
        load_file = staticmethod(load_qa_rows)

        @staticmethod
        def fit_record(row: QaRow, fitter):
            completion = [{"role": "assistant", "content": row.answer}]
            fitted = fitter.fit(row.question, [], [completion])
            return fitted, {"prompt": fitted.prompt, "completion": completion}

        def args_class(self):
            return SFTConfig

        def type_args(self):
            return {"max_length": self.config.max_length}

        def make_trainer(self, model, tokenizer, args, prepared):
            return SFTTrainer(model=model, args=args, train_dataset=prepared.train, processing_class=tokenizer,
                              peft_config=self.peft_config())

    return QaWorkflow(config, ctx).run()


TASK_TYPE = register(TaskType(
    name="qa", description="Question → answer fine-tuning (a plugin type registered by the tests).",
    config_model=QaConfig, entry_module="tests.helpers.fifth_type", validate_data=validate_data,
    default_config={"model_name_or_path": "m", "train_data_path": "data/qa.jsonl"},
    data_example={"question": "What is 2+2?", "answer": "4"},
))

if __name__ == "__main__":
    from trainers.common.cli import main

    sys.exit(main("qa", train))
