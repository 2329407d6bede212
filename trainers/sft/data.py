"""Turns validated SFT rows into trl records. A trl dataset must be one kind, so both row kinds become the same
conversational prompt/completion record: the prompt messages, then the one assistant message to learn."""

from __future__ import annotations

from typing import Any

from trainers.common.rag_prompt import build_rag_prompt
from trainers.sft.spec import ChatRow, SeedRow


def to_record(row: SeedRow | ChatRow) -> dict[str, Any]:
    if isinstance(row, ChatRow):
        messages = [{"role": m.role, "content": m.content} for m in row.messages]
        # Learn the last assistant turn; earlier turns are context. Anything after it has nothing to teach.
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        return {"prompt": messages[:last], "completion": [messages[last]]}
    prompt = build_rag_prompt(row.query, row.retrieval_result)
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "completion": [{"role": "assistant", "content": row.chosen.text}],
    }


def to_records(rows: list[SeedRow | ChatRow]) -> list[dict[str, Any]]:
    return [to_record(row) for row in rows]
