"""Comparing answers as text: the tokens of a text (Latin words and single CJK characters), SQuAD-style token F1 and
exact match. Used by the annotation filters (word counts), the self-verification checks and the KB-QA evaluation.
Pure Python."""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable

_TOKEN = re.compile(r"[a-z0-9]+|[\u4e00-\u9fff]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation) | set("，。！？；：、“”‘’（）《》【】")


def tokens(text: str) -> list[str]:
    """Lower-cased Latin/digit words and single CJK characters (Chinese has no spaces between words)."""
    return _TOKEN.findall(text.lower())


def word_count(text: str) -> int:
    return len(tokens(text))


def overlap_f1(candidate: str, reference: str) -> float:
    """Token-level F1 between two texts (SQuAD-style bag of tokens)."""
    cand, ref = tokens(candidate), tokens(reference)
    if not cand or not ref:
        return 0.0
    common = sum((Counter(cand) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(cand), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def token_recall(candidate: str, reference: str) -> float:
    """The share of the reference's tokens the candidate holds."""
    ref = tokens(reference)
    if not ref:
        return 0.0
    return sum((Counter(tokens(candidate)) & Counter(ref)).values()) / len(ref)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(candidate: str, reference: str) -> bool:
    return normalize_answer(candidate) == normalize_answer(reference)


def mean_scores(pairs: Iterable[tuple[str, str]]) -> dict[str, float]:
    """{"exact_match", "f1"} averaged over (prediction, reference) pairs, each rounded to 4 places."""
    em = f1 = 0.0
    n = 0
    for prediction, reference in pairs:
        em += exact_match(prediction, reference)
        f1 += overlap_f1(prediction, reference)
        n += 1
    return {"exact_match": round(em / n, 4) if n else 0.0, "f1": round(f1 / n, 4) if n else 0.0}
