"""Embedding's config model, data-row model and validator, registered as task type "embedding". Cheap to import: no
torch, no sentence-transformers (those load in trainers.embedding.train, or inside `preflight` only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from trainers.common.config import TaskConfig, load_extra_args
from trainers.common.jsonl import RowChecker, load_rows
from trainers.registry import DataReport, TaskType, register

DEFAULT_SCALE = 20.0  # = 1 / temperature 0.05, sentence-transformers' and FlagEmbedding's usual setting


class EmbeddingConfig(TaskConfig):
    schema_order = ("model_name_or_path", "train_data", "train_data_path", "output_dir", "config_file",
                    "learning_rate", "num_train_epochs", "per_device_train_batch_size", "loss", "num_hard_negatives",
                    "query_instruction", "max_seq_length", "scale", "temperature", "mini_batch_size")

    model_name_or_path: str = Field(
        min_length=1,
        description="Base embedding model: a local directory (a sentence-transformers model, or a plain Hugging "
        "Face encoder such as BERT, which gets mean pooling) or a model hub id.",
    )
    # train_data_path comes before train_data in the class so train_data's validator can see it (the form's order is
    # schema_order's).
    train_data_path: str | None = Field(
        default=None, min_length=1, description="Alias of train_data (give one of the two).",
        json_schema_extra={"advanced": True},
    )
    train_data: str | None = Field(
        default=None, min_length=1, validate_default=True,
        description="JSONL training data: an uploaded dataset (dataset:<id>) or a path on the agent (relative to "
        'its workspace), one row per query: {"query": "...", "pos": ["relevant passage", ...], "neg": ["hard '
        'negative", ...]} (neg may be empty). Required (or its alias train_data_path).',
    )
    output_dir: str | None = Field(
        default=None,
        description="Where the trained sentence-transformers model is saved, on the agent that runs the task "
        "(relative to its workspace; a directory no other task used). Default: a directory of the task's own, "
        "<output root>/embedding/<task id>.",
    )
    config_file: str | None = Field(
        default=None,
        description="Optional YAML or JSON file of extra training arguments (SentenceTransformerTrainingArguments / "
        "HF TrainingArguments names), applied on top of these options.",
    )
    learning_rate: float = Field(default=2e-5, gt=0, description="Peak learning rate.")
    num_train_epochs: float = Field(default=3, gt=0, description="Passes over the training data.")
    per_device_train_batch_size: int = Field(
        default=16, ge=1, description="Queries per batch on each device. With the in-batch-negatives losses every "
        "other query's passages are negatives too, so larger batches train better (see cached_mnrl).",
    )
    loss: Literal["mnrl", "cached_mnrl"] = Field(
        default="mnrl",
        description="mnrl: MultipleNegativesRankingLoss (InfoNCE over in-batch and hard negatives). cached_mnrl: the "
        "same loss computed in mini-batches (GradCache), for batch sizes that do not fit in memory at once.",
    )
    mini_batch_size: int = Field(
        default=32, ge=1, description="cached_mnrl only: texts embedded at once; memory use, not the result, "
        "depends on it.", json_schema_extra={"advanced": True},
    )
    num_hard_negatives: int = Field(
        default=1, ge=0, le=64,
        description="Hard negatives from each row's `neg` per training example (0: in-batch negatives only). A row "
        "with fewer gets its own repeated, or other rows' positives when it has none.",
    )
    query_instruction: str | None = Field(
        default=None,
        description='Prefix added to every query at training and evaluation time, e.g. "Represent this sentence for '
        'searching relevant passages: " for BGE models. Saved as the model\'s "query" prompt, so '
        "model.encode_query() applies it.",
    )
    max_seq_length: int | None = Field(
        default=None, ge=8, description="Longest tokenized text; longer ones are cut. Default: the model's own limit.",
    )
    scale: float | None = Field(
        default=None, gt=0,
        description=f"Similarity scale of the contrastive loss: logits = scale x cosine similarity; scale = "
        f"1 / temperature. Default {DEFAULT_SCALE:g} (temperature {1 / DEFAULT_SCALE:g}). Give scale or temperature.",
        json_schema_extra={"advanced": True},
    )
    temperature: float | None = Field(
        default=None, gt=0,
        description="The loss temperature, the other way to set `scale` (scale = 1 / temperature).",
        json_schema_extra={"advanced": True},
    )
    max_steps: int = Field(default=-1, ge=-1, description="Stop after this many optimizer steps (-1: use epochs).",
                           json_schema_extra={"advanced": True})
    warmup_ratio: float = Field(
        default=0.1, ge=0, lt=1, description="Fraction of the steps spent warming the learning rate up from 0.",
        json_schema_extra={"advanced": True},
    )
    logging_steps: int = Field(default=1, ge=1, description="Emit loss/progress metrics every N steps.",
                               json_schema_extra={"advanced": True})
    eval_data_path: str | None = Field(
        default=None, description="Held-out evaluation rows in the training format (dataset:<id>, or a path on "
        "the agent); scored before and after training with recall@1/5/10, MRR@10 and nDCG@10.",
        json_schema_extra={"advanced": True},
    )
    eval_ratio: float = Field(
        default=0.1, ge=0, lt=1, description="Hold this fraction of the training rows out for the before/after "
        "retrieval evaluation (ignored when eval_data_path is given; 0: no evaluation).",
        json_schema_extra={"advanced": True},
    )
    eval_max_distractors: int = Field(
        default=2000, ge=0, description="Training passages added to the evaluation corpus as distractors, besides "
        "the evaluation rows' own positives and negatives (0: none).", json_schema_extra={"advanced": True},
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto", description="Mixed precision; auto = bf16 on GPUs that support it, else fp16; fp32 on CPU.",
        json_schema_extra={"advanced": True},
    )
    seed: int = Field(default=42, description="Random seed for reproducible runs.",
                      json_schema_extra={"advanced": True})

    @field_validator("train_data")
    @classmethod
    def _one_data_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        alias = info.data.get("train_data_path")
        if value is not None and alias is not None:
            raise PydanticCustomError("both_given", "give train_data or its alias train_data_path, not both")
        if value is None and alias is None and "train_data_path" in info.data:  # (a bad alias has its own error)
            raise PydanticCustomError("missing", "Field required (train_data, or its alias train_data_path)")
        return value

    @field_validator("temperature")
    @classmethod
    def _scale_or_temperature(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("scale") is not None:
            raise PydanticCustomError("both_given", "give scale or temperature, not both (scale = 1 / temperature)")
        return value

    @property
    def loss_scale(self) -> float:
        """The loss's scale: `scale`, else 1 / `temperature`, else the default 20 (temperature 0.05)."""
        if self.scale is not None:
            return self.scale
        return 1.0 / self.temperature if self.temperature is not None else DEFAULT_SCALE

    @property
    def data_path(self) -> str:
        """The training data file, whichever of train_data / train_data_path named it."""
        return self.train_data if self.train_data is not None else self.train_data_path  # type: ignore[return-value]

    @property
    def data_field(self) -> str:
        return "train_data" if self.train_data is not None else "train_data_path"


class EmbeddingRow(BaseModel):
    """One query with its relevant passages and (optional) hard negatives; the FlagEmbedding / UltraRAG format."""

    # Strict types, but extra keys (ids, scores, metadata) are the user's business.
    model_config = ConfigDict(strict=True, extra="ignore")

    query: str = Field(min_length=1)
    pos: list[str] = Field(min_length=1)
    neg: list[str] = Field(default_factory=list)


def _count(stats: dict[str, int], row: EmbeddingRow) -> None:
    stats["positives"] += len(row.pos)
    stats["negatives"] += len(row.neg)
    stats["rows_without_negatives"] += not row.neg


def embedding_rows() -> RowChecker:
    """A fresh checker of one file's embedding rows (the type's `row_parser`), counting positives and negatives."""
    return RowChecker(EmbeddingRow.model_validate, {"positives": 0, "negatives": 0, "rows_without_negatives": 0},
                      _count)


def load_embedding_rows(
    config: EmbeddingConfig, workspace: Path | None = None, *, eval_file: bool = False, keep: bool = True
) -> tuple[list[EmbeddingRow], DataReport]:
    """The rows of the training file (or, with eval_file, of eval_data_path), with a few counts as stats;
    keep=False: stats only."""
    field, value = ("eval_data_path", config.eval_data_path) if eval_file else (config.data_field, config.data_path)
    checker = embedding_rows()
    rows, report = load_rows(value, checker, field=field, workspace=workspace, keep=keep)
    return rows, DataReport(path=report.path, rows=report.rows, problems=report.problems, stats=checker.stats)


def validate_data(config: EmbeddingConfig, workspace: Path) -> DataReport:
    load_extra_args(config, workspace)  # a missing/unparsable config_file fails here too, before any GPU time
    if config.eval_data_path:
        load_embedding_rows(config, workspace, eval_file=True, keep=False)
    return load_embedding_rows(config, workspace, keep=False)[1]


def _model_max_seq_length(source: str, tokenizer) -> int:
    """What sentence-transformers will use when max_seq_length is not set: the model's sentence_bert_config.json,
    else the tokenizer's limit capped by the position embeddings."""
    path = Path(source)
    for config_name in ("sentence_bert_config.json", "sentence_xlnet_config.json"):
        if (path / config_name).is_file():
            value = json.loads((path / config_name).read_text(encoding="utf-8")).get("max_seq_length")
            if isinstance(value, int):
                return value
    limits = [n for n in (getattr(tokenizer, "model_max_length", None),) if isinstance(n, int) and n < 1_000_000]
    if (path / "config.json").is_file():
        positions = json.loads((path / "config.json").read_text(encoding="utf-8")).get("max_position_embeddings")
        if isinstance(positions, int):
            limits.append(positions)
    return min(limits) if limits else 512


def preflight(config: EmbeddingConfig, workspace: Path) -> dict[str, Any]:
    """Dry-run extras: token lengths of the queries (with the instruction) and passages vs max_seq_length."""
    from trainers.common.model_loading import load_tokenizer, locate_model
    from trainers.common.token_stats import length_stats

    rows, _ = load_embedding_rows(config, workspace)
    tokenizer = load_tokenizer(config.model_name_or_path, workspace)
    max_len = config.max_seq_length or _model_max_seq_length(locate_model(config.model_name_or_path, workspace),
                                                             tokenizer)
    prefix = config.query_instruction or ""

    def lengths(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(texts)["input_ids"]] if texts else []

    passages = [p for r in rows for p in (*r.pos, *r.neg)]
    return {
        "query_tokens": length_stats(lengths([prefix + r.query for r in rows]), max_len),
        "passage_tokens": length_stats(lengths(passages), max_len),
    }


DEFAULT_CONFIG = {
    "model_name_or_path": "BAAI/bge-base-zh-v1.5",
    "train_data": "data/embedding.jsonl",
    "learning_rate": 2e-5,
    "num_train_epochs": 3,
    "per_device_train_batch_size": 16,
}

DATA_EXAMPLE = {
    "query": "What is the capital of France?",
    "pos": ["Paris is the capital and largest city of France."],
    "neg": ["Lyon is the third-largest city of France.", "Berlin is the capital of Germany."],
}

TASK_TYPE = register(
    TaskType(
        name="embedding",
        description="Contrastive fine-tuning of a retrieval embedding model (sentence-transformers) on queries with "
        "relevant passages and hard negatives; recall@k / MRR / nDCG on held-out queries before and after.",
        config_model=EmbeddingConfig,
        entry_module="trainers.embedding",
        validate_data=validate_data,
        default_config=DEFAULT_CONFIG,
        data_example=DATA_EXAMPLE,
        preflight=preflight,
        input_fields=("train_data", "train_data_path", "eval_data_path"),
        row_parser=embedding_rows,
    )
)
