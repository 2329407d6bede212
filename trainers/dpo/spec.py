"""DPO's config model, preference-row model and validator, registered as task type "dpo". Cheap to import: no torch.

Rows are the seed's format (the same as SFT's RAG rows), except that `rejected` is required and must differ from
`chosen`: a pair with nothing to prefer teaches nothing and only dilutes the loss. OpenAI's preference rows
(`{"input": {"messages"}, "preferred_output", "non_preferred_output"}`) are taken too, with the same rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from trainers.common.config import PredictingLMConfig, load_extra_args
from trainers.common.field_texts import texts
from trainers.common.jsonl import RowChecker, load_rows
from trainers.common.rag_prompt import passages_of
from trainers.registry import DataReport, TaskType, register
from trainers.sft.spec import SEED_ROW_EXAMPLE, ChatMessage, SeedRow, TextField, _Row

# trl DPOTrainer loss types offered in the form; the sigmoid loss is the DPO paper's.
LossType = Literal["sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "apo_down"]


class DpoConfig(PredictingLMConfig):
    schema_order = ("model_name_or_path", "train_data_path", "output_dir", "config_file", "use_lora",
                    "learning_rate", "num_train_epochs", "per_device_train_batch_size", "beta", "loss_type")

    train_data_path: str = Field(
        min_length=1,
        description="JSONL preference data: an uploaded dataset (dataset:<id>) or a path on the agent (relative "
        "to its workspace). Rows {query, retrieval_result, chosen: {text}, rejected: {text}}, or OpenAI's {input: "
        "{messages}, preferred_output: [assistant message], non_preferred_output: [assistant message]}.",
        json_schema_extra=texts(
            "偏好数据", "Preference data",
            "JSONL 偏好数据：上传的数据集（dataset:<id>）或 agent 上的路径（相对其工作区）。行 {query, "
            "retrieval_result, chosen: {text}, rejected: {text}}，或 OpenAI 的 {input: {messages}, preferred_output, "
            "non_preferred_output}。"),
    )
    # DPO moves a model that already answers well: far smaller steps than SFT (LLaMA-Factory's DPO examples use 5e-6
    # with LoRA; full fine-tuning usually wants 5e-7 to 1e-6).
    learning_rate: float = Field(default=5e-6, gt=0, description="Peak learning rate. DPO wants small steps: 5e-6 "
                                 "suits LoRA; for full fine-tuning use about 5e-7 to 1e-6.",
                                 json_schema_extra=texts(
                                     "学习率", "Learning rate",
                                     "峰值学习率。DPO 需要小步长：LoRA 用 5e-6 合适；全量微调约 5e-7 到 1e-6。"))
    # Reward accuracy on pairs the model never trained on is what says it learned the preference.
    eval_ratio: float = Field(
        default=0.1, ge=0, lt=1, description="Hold this fraction of the pairs out; after training their reward "
        "accuracy and margin are reported (ignored when eval_data_path is given; 0: none).",
        json_schema_extra=texts(
            "验证集比例", "Held-out ratio",
            "留出这一比例的偏好对；训练后报告它们的奖励准确率和奖励间隔（给了 eval_data_path 时忽略；0"
            "：不留出）。", advanced=True),
    )
    beta: float = Field(
        default=0.1, gt=0,
        description="DPO temperature: how far the model may move from the reference model (higher = stays closer).",
        json_schema_extra=texts(
            "DPO 温度 beta", "DPO beta",
            "DPO 温度：模型可以偏离参考模型多远（越大越贴近参考模型）。"),
    )
    loss_type: LossType = Field(
        default="sigmoid",
        description="Preference loss (trl): sigmoid is the original DPO loss; ipo, hinge, robust, ... are variants.",
        json_schema_extra=texts(
            "偏好损失", "Preference loss",
            "trl 的偏好损失：sigmoid 是原始的 DPO 损失；ipo、hinge、robust 等是变体。", advanced=True),
    )


class PreferenceRow(SeedRow):
    """The seed's row with `rejected` required: the model learns to prefer `chosen.text` over `rejected.text`."""

    rejected: TextField

    @field_validator("retrieval_result", mode="before")
    @classmethod
    def _passages_shape(cls, value: Any) -> Any:
        # Checked up front so a wrong type is reported at `retrieval_result` (pydantic's union error would name
        # `retrieval_result.str` / `retrieval_result.list[str]`).
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise PydanticCustomError("passages_type", "must be a string or a list of strings, got {kind}",
                                      {"kind": type(value).__name__})
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise PydanticCustomError("passages_type", "item {index} must be a string, got {kind}",
                                          {"index": index, "kind": type(item).__name__})
        return value


class AssistantMessage(ChatMessage):
    role: Literal["assistant"]
    content: str = Field(min_length=1)


class ChatInput(_Row):
    messages: list[ChatMessage] = Field(min_length=1)

    @field_validator("messages")
    @classmethod
    def _asks_something(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" for m in messages):
            raise PydanticCustomError("no_user_message", "needs at least one user message")
        return messages


class ChatPreferenceRow(_Row):
    """OpenAI's preference row: the conversation so far (`input.messages`), then the preferred and the non-preferred
    assistant answer (one message each, as OpenAI takes them)."""

    input: ChatInput
    preferred_output: list[AssistantMessage] = Field(min_length=1, max_length=1)
    non_preferred_output: list[AssistantMessage] = Field(min_length=1, max_length=1)

    @property
    def chosen_text(self) -> str:
        return self.preferred_output[0].content

    @property
    def rejected_text(self) -> str:
        return self.non_preferred_output[0].content


def is_chat_preference(raw: Any) -> bool:
    """An OpenAI preference row, told by its keys (what the upload check and the trainer both go by)."""
    return isinstance(raw, dict) and ("preferred_output" in raw or "non_preferred_output" in raw)


def _identical(model: str, loc: tuple[Any, ...], text: str, other: str) -> ValidationError:
    # A ValidationError located at the rejected answer, so the line's problem names that field.
    return ValidationError.from_exception_data(model, [{
        "type": PydanticCustomError(
            "identical_answers", "is identical to {other}; a preference pair needs two different answers",
            {"other": other}),
        "loc": loc,
        "input": text,
    }])


def parse_row(raw: Any) -> PreferenceRow | ChatPreferenceRow:
    if not isinstance(raw, dict):
        raise ValueError(f"row must be a JSON object, got {type(raw).__name__}")
    if is_chat_preference(raw):
        chat = ChatPreferenceRow.model_validate(raw)
        if chat.chosen_text.strip() == chat.rejected_text.strip():
            raise _identical("ChatPreferenceRow", ("non_preferred_output", 0, "content"), chat.rejected_text,
                             "preferred_output[0].content")
        return chat
    row = PreferenceRow.model_validate(raw)
    if row.chosen.text.strip() == row.rejected.text.strip():
        raise _identical("PreferenceRow", ("rejected", "text"), row.rejected.text, "chosen.text")
    return row


def _count(stats: dict[str, int], row: PreferenceRow | ChatPreferenceRow) -> None:
    stats["pairs"] += 1
    if isinstance(row, ChatPreferenceRow):
        stats["chat_pairs"] = stats.get("chat_pairs", 0) + 1  # only in the stats of files that have them
    else:
        stats["rows_with_passages"] += bool(passages_of(row.retrieval_result))


def dpo_rows() -> RowChecker:
    """A fresh checker of one file's preference rows (the type's `row_parser`), counting pairs and passages."""
    return RowChecker(parse_row, {"pairs": 0, "rows_with_passages": 0}, _count)


def load_dpo_rows(
    config: DpoConfig, workspace: Path | None = None, *, field: str = "train_data_path", keep: bool = True
) -> tuple[list[PreferenceRow | ChatPreferenceRow], DataReport]:
    """The rows of the file named by `field` (train_data_path, or eval_data_path); keep=False: stats only."""
    return load_rows(getattr(config, field), dpo_rows(), field=field, workspace=workspace, keep=keep)


def validate_data(config: DpoConfig, workspace: Path) -> DataReport:
    load_extra_args(config, workspace)  # a missing/unparsable config_file fails here too, before any GPU time
    if config.eval_data_path:
        load_dpo_rows(config, workspace, field="eval_data_path", keep=False)
    return load_dpo_rows(config, workspace, keep=False)[1]


def preflight(config: DpoConfig, workspace: Path) -> dict[str, Any]:
    """Dry-run extras, with the trainer's own code: the training arguments, and how the pairs fit max_length —
    `tokens` is the longer of prompt+chosen and prompt+rejected per pair as given (what max_length must hold),
    rows trimmed and rows too long by line."""
    from trainers.dpo.train import DpoWorkflow

    return DpoWorkflow.for_dry_run(config, workspace).dry_run()


DEFAULT_CONFIG = {
    "model_name_or_path": "microsoft/DialoGPT-medium",
    "train_data_path": "data/train.jsonl",
    "use_lora": True,
    "learning_rate": 5e-6,
    "num_train_epochs": 3,
    "per_device_train_batch_size": 4,
    "beta": 0.1,
}

DATA_EXAMPLE = SEED_ROW_EXAMPLE  # the seed's row, with its rejected answer

TASK_TYPE = register(
    TaskType(
        name="dpo",
        description="Direct preference optimisation (DPO) of a causal language model on RAG preference pairs "
        "(query + retrieved passages -> chosen answer preferred over rejected), with LoRA or full weights.",
        config_model=DpoConfig,
        entry_module="trainers.dpo",
        validate_data=validate_data,
        default_config=DEFAULT_CONFIG,
        data_example=DATA_EXAMPLE,
        preflight=preflight,
        input_fields=("train_data_path", "eval_data_path", "init_from"),
        row_parser=dpo_rows,
        title_zh="偏好优化 DPO",
        title_en="Preference optimization (DPO)",
        summary_zh="用成对的好/坏回答让模型偏好更好的答案，训练后报告奖励准确率。",
        summary_en="Make a model prefer the better of two answers to the same question; reward accuracy reported "
        "after training.",
    )
)
