"""Turns validated preference rows into trl's conversational preference records: the RAG prompt as a user turn (the
same prompt SFT trains on), chosen and rejected as one assistant turn each. The passages are fitted so that the
prompt with the longer of the two answers fits max_length (trainers.common.prompt_fit). An OpenAI preference row's
conversation is the prompt as it is: it fits whole or not at all, like an SFT chat row."""

from __future__ import annotations

from typing import Any

from trainers.common.prompt_fit import Fitted, PromptFitter
from trainers.common.rag_prompt import passages_of
from trainers.dpo.spec import ChatPreferenceRow, PreferenceRow


def fit_record(row: PreferenceRow | ChatPreferenceRow, fitter: PromptFitter) -> tuple[Fitted, dict[str, Any]]:
    if isinstance(row, ChatPreferenceRow):
        chosen = [{"role": "assistant", "content": row.chosen_text}]
        rejected = [{"role": "assistant", "content": row.rejected_text}]
        prompt = [{"role": m.role, "content": m.content} for m in row.input.messages]
        fitted = fitter.measure(prompt, [chosen, rejected])
    else:
        chosen = [{"role": "assistant", "content": row.chosen.text}]
        rejected = [{"role": "assistant", "content": row.rejected.text}]
        fitted = fitter.fit(row.query, passages_of(row.retrieval_result), [chosen, rejected])
    return fitted, {"prompt": fitted.prompt, "chosen": chosen, "rejected": rejected}
