"""Turns validated preference rows into trl's conversational preference records: the RAG prompt as a user turn (the
same prompt SFT trains on), chosen and rejected as one assistant turn each."""

from __future__ import annotations

from typing import Any

from trainers.common.rag_prompt import build_rag_prompt
from trainers.dpo.spec import PreferenceRow


def to_record(row: PreferenceRow) -> dict[str, Any]:
    return {
        "prompt": [{"role": "user", "content": build_rag_prompt(row.query, row.retrieval_result)}],
        "chosen": [{"role": "assistant", "content": row.chosen.text}],
        "rejected": [{"role": "assistant", "content": row.rejected.text}],
    }


def to_records(rows: list[PreferenceRow]) -> list[dict[str, Any]]:
    return [to_record(row) for row in rows]
