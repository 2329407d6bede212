"""KBAlign's config model and input validator, registered as task type "kbalign". Cheap to import: no torch.

KBAlign (arXiv 2411.14790) adapts a model to a knowledge base by itself: the model annotates question-answer pairs
from the knowledge base (short-dependency pairs from single chunks, long-dependency pairs from clusters of related
chunks), then is tuned on them over several rounds, each later round adding self-verification feedback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from trainers.common.config import LMConfig, load_extra_args
from trainers.common.jsonl import load_rows
from trainers.kbalign.kb import KnowledgeBase, kb_rows, load_kb
from trainers.registry import DataReport, TaskType, register


class KbalignConfig(LMConfig):
    schema_order = ("model_name_or_path", "input_path", "output_dir", "gpu_vis", "use_lora", "iter_num",
                    "short_pairs", "long_pairs", "chunk_size", "chunk_overlap", "cluster_group_size")

    input_path: str = Field(
        min_length=1,
        description="The knowledge base: an uploaded dataset (dataset:<id>) or a path on the agent (relative to "
        "its workspace). A JSONL file of chunks {text, title?, id?}, a JSON list of strings, a folder of .txt/.md "
        "files (read recursively), or a JSONL file of already annotated chat rows {messages: [...]} (then the "
        "self-annotation stage is skipped).",
    )
    iter_num: int = Field(default=2, ge=1, le=20, description="Tuning rounds. The annotations are split into this "
                          "many parts; round 1 is SFT on part 1, each later round adds self-verification feedback.")
    short_pairs: int = Field(default=200, ge=0, description="Short-dependency question-answer pairs to annotate "
                             "(each from one chunk).")
    long_pairs: int = Field(default=100, ge=0, description="Long-dependency pairs to annotate (each from a group of "
                            "related chunks found by clustering).")
    max_attempts: int = Field(default=3, ge=1, description="Generation budget: at most this many generations per "
                              "wanted pair (per grain) before annotation stops with what passed the filters.")
    chunk_size: int = Field(default=1000, ge=32, description="Longest chunk, in characters; longer documents are "
                            "cut at paragraph/sentence/word boundaries.")
    chunk_overlap: int = Field(default=100, ge=0, description="Characters shared by neighbouring chunks of a "
                               "document (less than chunk_size).")
    cluster_group_size: int = Field(default=3, ge=2, description="Chunks per group for long-dependency pairs; "
                                    "the chunks are clustered (KMeans on the model's own mean-pooled hidden "
                                    "states) into about chunks / cluster_group_size clusters.")
    train_with_context: bool = Field(default=True, description="Put the source chunk(s) into the training prompt "
                                     "(a RAG prompt: numbered passages, then the question), as the RAG stack will "
                                     "at inference. Off: the question alone (closed-book).")
    max_new_tokens: int = Field(default=256, ge=4, description="Longest generation (annotation and draft answers).",
                                json_schema_extra={"advanced": True})
    temperature: float = Field(default=0.7, gt=0, description="Sampling temperature of the annotation.",
                               json_schema_extra={"advanced": True})
    top_p: float = Field(default=0.9, gt=0, le=1, description="Nucleus sampling of the annotation.",
                         json_schema_extra={"advanced": True})
    do_sample: bool = Field(default=True, description="Sample the annotation (off: greedy decoding). Draft answers "
                            "and verdicts of the verification rounds are always greedy.",
                            json_schema_extra={"advanced": True})
    generation_batch_size: int = Field(default=8, ge=1, description="Prompts per generate/embedding call.",
                                       json_schema_extra={"advanced": True})
    require_question_mark: bool = Field(default=True, description="Keep a pair only when its question ends with "
                                        "'?' (or '？').", json_schema_extra={"advanced": True})
    require_question_word: bool = Field(default=False, description="Keep a pair only when its question starts with "
                                        "a question word (what, who, how, ...; or holds a Chinese interrogative).",
                                        json_schema_extra={"advanced": True})
    min_question_chars: int = Field(default=4, ge=0, json_schema_extra={"advanced": True},
                                    description="Shortest question kept, in characters (low by default: Chinese "
                                    "questions are short).")
    max_question_chars: int = Field(default=300, ge=1, json_schema_extra={"advanced": True},
                                    description="Longest question kept, in characters.")
    min_answer_chars: int = Field(default=2, ge=0, json_schema_extra={"advanced": True},
                                  description="Shortest answer kept, in characters.")
    max_answer_chars: int = Field(default=1500, ge=1, json_schema_extra={"advanced": True},
                                  description="Longest answer kept, in characters.")
    verify_overlap_threshold: float = Field(
        default=0.5, ge=0, le=1, json_schema_extra={"advanced": True},
        description="Self-verification fallback: when the model's verdict has no yes/no, its draft counts as correct "
        "if its token-overlap F1 with the reference answer reaches this.",
    )

    # Field validators (not a model validator) so that an error names the key that is wrong.
    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, value: int, info: ValidationInfo) -> int:
        size = info.data.get("chunk_size")
        if size is not None and value >= size:
            raise ValueError(f"must be less than chunk_size ({size})")
        return value

    @field_validator("long_pairs")
    @classmethod
    def _some_pairs(cls, value: int, info: ValidationInfo) -> int:
        if value + info.data.get("short_pairs", 1) < 1:
            raise ValueError("short_pairs + long_pairs must be at least 1")
        return value

    @field_validator("max_question_chars", "max_answer_chars")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        low_name = info.field_name.replace("max_", "min_")
        low = info.data.get(low_name)
        if low is not None and value < low:
            raise ValueError(f"must not be less than {low_name} ({low})")
        return value


def load_knowledge_base(config: KbalignConfig, workspace: Path | None = None) -> KnowledgeBase:
    return load_kb(config.input_path, config.chunk_size, config.chunk_overlap, workspace)


def _load_eval_rows(config: KbalignConfig, workspace: Path | None = None, *, keep: bool = True) -> list:
    """eval_data_path: chat rows {messages: [...]} (e.g. an edited annotations/train_messages.jsonl)."""
    from trainers.sft.spec import ChatRow

    return load_rows(config.eval_data_path or "", ChatRow, field="eval_data_path", workspace=workspace, keep=keep)[0]


def validate_data(config: KbalignConfig, workspace: Path) -> DataReport:
    load_extra_args(config, workspace)
    if config.eval_data_path:
        _load_eval_rows(config, workspace, keep=False)
    kb = load_knowledge_base(config, workspace)
    return DataReport(path=kb.path, rows=kb.documents, stats=kb.stats())


def preflight(config: KbalignConfig, workspace: Path) -> dict[str, Any]:
    """Dry-run extras: chunk counts and the token lengths of the chunks (or of the chat rows) under the tokenizer."""
    from trainers.common.model_loading import load_tokenizer
    from trainers.common.token_stats import conversation_token_stats, length_stats

    kb = load_knowledge_base(config, workspace)
    if kb.annotated:
        from trainers.sft.data import to_records

        conversations = (r["prompt"] + r["completion"] for r in to_records(kb.chat_rows))
        return {**kb.stats(), **conversation_token_stats(config.model_name_or_path, workspace, conversations,
                                                         config.max_length)}
    tokenizer = load_tokenizer(config.model_name_or_path, workspace)
    lengths = [len(tokenizer(c.text, add_special_tokens=False)["input_ids"]) for c in kb.chunks]
    return {**kb.stats(), "chunk_tokens": length_stats(lengths, config.max_length)}


DEFAULT_CONFIG = {
    "model_name_or_path": "microsoft/DialoGPT-medium",
    "input_path": "data/kb.jsonl",
    "gpu_vis": "0",
    "use_lora": True,
}

DATA_EXAMPLE = {
    "id": "handbook-3",
    "title": "Refund policy",
    "text": "Customers may return unopened items within 30 days of delivery for a full refund. Opened items can be "
    "exchanged within 14 days.",
}

TASK_TYPE = register(
    TaskType(
        name="kbalign",
        description="KBAlign knowledge-base adaptation: the model annotates question-answer pairs from your "
        "knowledge base itself (single chunks and clusters of related chunks), then is tuned on them over "
        "several rounds with self-verification, LoRA by default.",
        config_model=KbalignConfig,
        entry_module="trainers.kbalign",
        validate_data=validate_data,
        default_config=DEFAULT_CONFIG,
        data_example=DATA_EXAMPLE,
        preflight=preflight,
        input_fields=("input_path", "eval_data_path"),
        row_parser=kb_rows,
    )
)
