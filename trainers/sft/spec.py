"""SFT's config model, data-row models and validator, registered as task type "sft". Cheap to import: no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainers.common.config import PackedLMConfig, PredictingLMConfig, load_extra_args
from trainers.common.field_texts import texts
from trainers.common.jsonl import RowChecker, load_rows
from trainers.registry import DataReport, TaskType, register


class SftConfig(PackedLMConfig, PredictingLMConfig):
    schema_order = ("model_name_or_path", "train_data_path", "output_dir", "config_file", "use_lora",
                    "learning_rate", "num_train_epochs", "per_device_train_batch_size")

    train_data_path: str = Field(
        min_length=1,
        description="JSONL training data: an uploaded dataset (dataset:<id>) or a path on the agent (relative to "
        "its workspace). RAG rows {query, retrieval_result, chosen: {text}} or chat rows {messages: [{role, "
        "content}, ...]}.",
        json_schema_extra=texts(
            "训练数据", "Training data",
            "JSONL 训练数据：上传的数据集（dataset:<id>）或 agent 上的路径（相对其工作区）。RAG 行 {query, "
            "retrieval_result, chosen: {text}}，或对话行 {messages: [{role, content}, ...]}。"),
    )


class _Row(BaseModel):
    # Strict types, but extra keys (ids, metadata) are the user's business.
    model_config = ConfigDict(strict=True, extra="ignore")


class TextField(_Row):
    text: str = Field(min_length=1)


class SeedRow(_Row):
    """The seed's row: the answer to learn is `chosen.text`; `rejected` is for DPO and ignored here."""

    query: str = Field(min_length=1)
    retrieval_result: str | list[str] | None = None
    chosen: TextField
    rejected: TextField | None = None


class ChatMessage(_Row):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRow(_Row):
    """A conversation; the model learns the last assistant message given everything before it."""

    messages: list[ChatMessage] = Field(min_length=1)

    @model_validator(mode="after")
    def _has_answer(self) -> "ChatRow":
        roles = [m.role for m in self.messages]
        if "assistant" not in roles[1:]:
            raise ValueError("needs an assistant message after at least one system/user message")
        return self


def parse_row(raw: Any) -> SeedRow | ChatRow:
    """Picks the row kind by its keys, so a broken row's error names the field it misses (e.g. chosen.text)."""
    if not isinstance(raw, dict):
        raise ValueError(f"row must be a JSON object, got {type(raw).__name__}")
    if "messages" in raw:
        return ChatRow.model_validate(raw)
    return SeedRow.model_validate(raw)


def _count(stats: dict[str, int], row: SeedRow | ChatRow) -> None:
    stats["chat_rows" if isinstance(row, ChatRow) else "rag_rows"] += 1


def sft_rows() -> RowChecker:
    """A fresh checker of one file's SFT rows (the type's `row_parser`), counting RAG and chat rows."""
    return RowChecker(parse_row, {"rag_rows": 0, "chat_rows": 0}, _count)


def load_sft_rows(
    config: SftConfig, workspace: Path | None = None, *, field: str = "train_data_path", keep: bool = True
) -> tuple[list[SeedRow | ChatRow], DataReport]:
    """The rows of the file named by `field` (train_data_path, or eval_data_path); keep=False: stats only."""
    return load_rows(getattr(config, field), sft_rows(), field=field, workspace=workspace, keep=keep)


def validate_data(config: SftConfig, workspace: Path) -> DataReport:
    load_extra_args(config, workspace)  # a missing/unparsable config_file fails here too, before any GPU time
    if config.eval_data_path:
        load_sft_rows(config, workspace, field="eval_data_path", keep=False)
    return load_sft_rows(config, workspace, keep=False)[1]


def preflight(config: SftConfig, workspace: Path) -> dict[str, Any]:
    """Dry-run extras, with the trainer's own code: the training arguments (config_file through transformers'
    parser, QLoRA/Liger on this agent), token lengths, and rows trimmed or too long for max_length, by line."""
    from trainers.sft.train import SftWorkflow

    return SftWorkflow.for_dry_run(config, workspace).dry_run()


DEFAULT_CONFIG = {
    "model_name_or_path": "microsoft/DialoGPT-medium",
    "train_data_path": "data/train.jsonl",
    "use_lora": True,
    "learning_rate": 5e-5,
    "num_train_epochs": 3,
    "per_device_train_batch_size": 4,
}

# The seed's SFT/DPO row (SFT learns chosen.text; DPO also uses rejected.text).
SEED_ROW_EXAMPLE = DATA_EXAMPLE = {
    "query": "What is the capital of France?",
    "retrieval_result": ["Paris is the capital and largest city of France."],
    "chosen": {"text": "The capital of France is Paris."},
    "rejected": {"text": "The capital of France is Lyon."},
}

TASK_TYPE = register(
    TaskType(
        name="sft",
        description="Supervised fine-tuning of a causal language model on RAG answers (query + retrieved "
        "passages -> chosen answer) or chat conversations, with LoRA or full weights.",
        config_model=SftConfig,
        entry_module="trainers.sft",
        validate_data=validate_data,
        default_config=DEFAULT_CONFIG,
        data_example=DATA_EXAMPLE,
        preflight=preflight,
        input_fields=("train_data_path", "eval_data_path", "init_from"),
        row_parser=sft_rows,
        title_zh="监督微调 SFT",
        title_en="Supervised fine-tuning (SFT)",
        summary_zh="用问题 + 检索段落 → 参考答案（或多轮对话）训练语言模型，LoRA 或全量权重。",
        summary_en="Teach a language model to answer from retrieved passages (or chat turns), with LoRA or full "
        "weights.",
    )
)
