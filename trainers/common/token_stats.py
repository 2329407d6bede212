"""Token-length statistics for the dry run: how long the rows are under the model's tokenizer, and how many
`max_length` would cut. Imports transformers (through the tokenizer): preflight subprocess only."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from trainers.common.model_loading import load_tokenizer


def _percentile(sorted_values: list[int], fraction: float) -> int:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def conversation_lengths(tokenizer, conversations: Iterable[list[dict[str, str]]]) -> list[int]:
    """Token count of each conversation rendered with the tokenizer's chat template (what the trainer sees)."""
    lengths = []
    for messages in conversations:
        ids = tokenizer.apply_chat_template(messages, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        lengths.append(len(ids))
    return lengths


def length_stats(lengths: list[int], max_length: int) -> dict[str, Any]:
    if not lengths:
        return {"max_length": max_length, "rows": 0}
    ordered = sorted(lengths)
    return {
        "p50": _percentile(ordered, 0.50),
        "p95": _percentile(ordered, 0.95),
        "max": ordered[-1],
        "mean": round(sum(ordered) / len(ordered), 1),
        "max_length": max_length,
        "truncated_rows": sum(1 for n in ordered if n > max_length),
    }


def conversation_token_stats(
    model_name_or_path: str, workspace: Path, conversations: Iterable[list[dict[str, str]]], max_length: int
) -> dict[str, Any]:
    """{"tokens": {p50, p95, max, mean, max_length, truncated_rows}} for chat-formatted rows."""
    tokenizer = load_tokenizer(model_name_or_path, workspace)
    return {"tokens": length_stats(conversation_lengths(tokenizer, conversations), max_length)}
