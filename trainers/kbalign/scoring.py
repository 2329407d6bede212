"""Comparing answers as text: word counts, token recall and mean exact match / token F1 over the tokens of
trainers.common.text_scores (words and single CJK characters). Used by the annotation filters (word counts), the
self-verification checks and the KB-QA evaluation. Pure Python."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

# The tokenizer and the answer scores are shared with the predictions every LM type writes after training.
from trainers.common.text_scores import exact_match, normalize_answer, overlap_f1, tokens

__all__ = ["exact_match", "normalize_answer", "overlap_f1", "tokens", "word_count", "token_recall", "mean_scores"]


def word_count(text: str) -> int:
    return len(tokens(text))


def token_recall(candidate: str, reference: str) -> float:
    """The share of the reference's tokens the candidate holds."""
    ref = tokens(reference)
    if not ref:
        return 0.0
    return sum((Counter(tokens(candidate)) & Counter(ref)).values()) / len(ref)


def mean_scores(pairs: Iterable[tuple[str, str]]) -> dict[str, float]:
    """{"exact_match", "f1"} averaged over (prediction, reference) pairs, each rounded to 4 places."""
    em = f1 = 0.0
    n = 0
    for prediction, reference in pairs:
        em += exact_match(prediction, reference)
        f1 += overlap_f1(prediction, reference)
        n += 1
    return {"exact_match": round(em / n, 4) if n else 0.0, "f1": round(f1 / n, 4) if n else 0.0}
