"""Turns validated preference rows into trl's conversational preference records: the RAG prompt as a user turn (the
same prompt SFT trains on), chosen and rejected as one assistant turn each. The passages are fitted so that the
prompt with the longer of the two answers fits max_length (trainers.common.prompt_fit)."""

from __future__ import annotations

from typing import Any

from trainers.common.prompt_fit import Fitted, PromptFitter
from trainers.common.rag_prompt import passages_of
from trainers.dpo.spec import PreferenceRow


def fit_record(row: PreferenceRow, fitter: PromptFitter) -> tuple[Fitted, dict[str, Any]]:
    chosen = [{"role": "assistant", "content": row.chosen.text}]
    rejected = [{"role": "assistant", "content": row.rejected.text}]
    fitted = fitter.fit(row.query, passages_of(row.retrieval_result), [chosen, rejected])
    return fitted, {"prompt": fitted.prompt, "chosen": chosen, "rejected": rejected}
