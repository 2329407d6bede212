"""Turns validated SFT rows into trl records. A trl dataset must be one kind, so both row kinds become the same
conversational prompt/completion record: the prompt messages, then the one assistant message to learn. A RAG row's
passages are fitted into max_length (trainers.common.prompt_fit); a chat row fits as it is or not at all."""

from __future__ import annotations

from typing import Any

from trainers.common.prompt_fit import Fitted, PromptFitter
from trainers.common.rag_prompt import passages_of
from trainers.sft.spec import ChatRow, SeedRow


def split_chat(row: ChatRow) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(prompt, completion): the last assistant turn is learned; earlier turns are context, later ones teach
    nothing."""
    messages = [{"role": m.role, "content": m.content} for m in row.messages]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], [messages[last]]


def fit_record(row: SeedRow | ChatRow, fitter: PromptFitter) -> tuple[Fitted, dict[str, Any]]:
    """The row's record with its prompt fitted into the fitter's max_length, and how it was fitted."""
    if isinstance(row, ChatRow):
        prompt, completion = split_chat(row)
        fitted = fitter.measure(prompt, [completion])
    else:
        completion = [{"role": "assistant", "content": row.chosen.text}]
        fitted = fitter.fit(row.query, passages_of(row.retrieval_result), [completion])
    return fitted, {"prompt": fitted.prompt, "completion": completion}
