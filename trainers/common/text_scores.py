"""Scores of a generated answer against its reference: exact match (SQuAD-normalised), token F1 and ROUGE-L.

Tokens are lower-cased runs of ASCII letters/digits, and single CJK characters: Chinese and Japanese put no spaces
between words, so a character is their token (what the CJK SQuAD-style evaluations, e.g. CMRC, score by). ROUGE-L is the
F-measure of the longest common subsequence of those tokens (beta = 1, as rouge-score's `fmeasure`); rouge-score
itself keeps only [a-z0-9] and would score any Chinese answer 0. Pure Python.
"""

from __future__ import annotations

import re
import string
from collections import Counter

# Han (with extension A and compatibility ideographs), kana, Hangul syllables: one token per character. Words are
# ASCII letters and digits, so a small model's byte-level noise (Ã, Ġ, ...) never counts as words (KBAlign's
# annotation filters count words with these tokens).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(f"[a-z0-9]+|[{_CJK}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation) | set("，。！？；：、“”‘’（）《》【】…·「」『』")
SCORE_NAMES = ("exact_match", "token_f1", "rouge_l")


def tokens(text: str) -> list[str]:
    """Lower-cased ASCII words (letters and digits) and single CJK characters."""
    return _TOKEN.findall(text.lower())


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(candidate: str, reference: str) -> bool:
    return normalize_answer(candidate) == normalize_answer(reference)


def _f_measure(overlap: int, n_candidate: int, n_reference: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_candidate, overlap / n_reference
    return 2 * precision * recall / (precision + recall)


def overlap_f1(candidate: str, reference: str) -> float:
    """Token-level F1 between two texts (SQuAD-style bag of tokens)."""
    cand, ref = tokens(candidate), tokens(reference)
    if not cand or not ref:
        return 0.0
    return _f_measure(sum((Counter(cand) & Counter(ref)).values()), len(cand), len(ref))


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (one row of the DP table at a time)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F-measure over the tokens above."""
    cand, ref = tokens(candidate), tokens(reference)
    if not cand or not ref:
        return 0.0
    return _f_measure(lcs_length(cand, ref), len(cand), len(ref))


def answer_scores(prediction: str, reference: str) -> dict[str, float]:
    """{"exact_match": 0 or 1, "token_f1", "rouge_l"} of one prediction, rounded to 4 places."""
    return {"exact_match": float(exact_match(prediction, reference)),
            "token_f1": round(overlap_f1(prediction, reference), 4),
            "rouge_l": round(rouge_l(prediction, reference), 4)}


def mean_answer_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    """Each score averaged over rows (0.0 for none), rounded to 4 places."""
    n = len(scores)
    return {name: round(sum(s[name] for s in scores) / n, 4) if n else 0.0 for name in SCORE_NAMES}
