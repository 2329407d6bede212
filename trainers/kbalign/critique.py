"""Self-verification critiques: the verdict on a draft answer, checked; its error type; and the critique text that is
trained on, which must never reveal the reference answer. Pure Python.

The teacher pass that writes a critique sees the reference answer (so its verdict is grounded, as in the reference
code's gen_iterate_verify.py); what is *trained on* does not:

- the verdict is the model's ("The student response is correct/wrong because ..."), checked against the draft's
  overlap with the reference: an exact match is always correct, a draft sharing no token with the reference always
  wrong (the model is overruled); without a readable verdict, token F1 >= the threshold decides;
- a sentence of the model's critique that states the reference answer (and the draft did not already say it) is
  redacted; a critique whose verdict sentence goes, that is malformed, or that disagrees with the checked verdict is
  replaced by a templated critique built from the verdict and an error type derived from the token overlap;
- every critique records where it came from ("model", "model_redacted", "template") and why.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from trainers.kbalign.prompts import (
    CORRECT_OPENING, ERROR_NONE, ERROR_NOT_DIRECT, ERROR_PARTIAL, ERROR_TYPE_LABEL, ERROR_TYPES, ERROR_UNRELATED,
    ERROR_WRONG, WRONG_OPENING,
)
from trainers.kbalign.scoring import exact_match, normalize_answer, overlap_f1, tokens

_STOPWORDS = frozenset(
    "a an the of in on at to for from by with and or is are was were be been it its this that these those what who "
    "whom which when where why how do does did has have had as not no".split()
)
_CORRECT_WORDS = ("correct", "right", "accurate", "正确", "对")
_WRONG_WORDS = ("wrong", "incorrect", "not correct", "inaccurate", "partially", "partly", "错误", "不正确", "不对", "错")
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+")
_MIN_REASON_WORDS = 3


@dataclass(frozen=True)
class Critique:
    text: str  # what the verification example trains on
    correct: bool
    error_type: str
    overlap_f1: float
    verdict_source: str  # "model", "overruled" (the model's verdict contradicted the overlap) or "overlap"
    critique_source: str  # "model", "model_redacted" or "template"
    note: str | None = None  # why the model's critique was redacted or not used

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_verdict(critique: str) -> bool | None:
    """True/False from "The student response is correct/wrong because ...", None when it says neither."""
    head = critique.lower()
    head = head.split("because", 1)[0] if "because" in head else " ".join(head.split()[:8])
    wrong = min((head.find(w) for w in _WRONG_WORDS if w in head), default=-1)
    correct = min((head.find(w) for w in _CORRECT_WORDS if w in head), default=-1)
    if wrong == -1 and correct == -1:
        return None
    if correct == -1 or (wrong != -1 and wrong <= correct):  # "incorrect" holds "correct": the earlier word wins
        return False
    return True


def parse_error_type(critique: str) -> str | None:
    """The known error type named after `ERROR TYPE:` (closest by token overlap), or None."""
    at = critique.upper().rfind(ERROR_TYPE_LABEL)
    if at == -1:
        return None
    named = critique[at + len(ERROR_TYPE_LABEL):].strip().split("\n", 1)[0]
    best, score = None, 0.0
    for kind in ERROR_TYPES:
        overlap = overlap_f1(named, kind)
        if overlap > score:
            best, score = kind, overlap
    return best if score >= 0.5 else None


def check_verdict(model_verdict: bool | None, draft: str, reference: str, threshold: float) -> tuple[bool, str, float]:
    """(correct, verdict_source, overlap F1): the model's verdict unless the overlap makes it certain otherwise."""
    overlap = round(overlap_f1(draft, reference), 4)
    certain = True if exact_match(draft, reference) else False if overlap == 0 else None
    if model_verdict is None:
        return (certain if certain is not None else overlap >= threshold), "overlap", overlap
    if certain is not None and certain != model_verdict:
        return certain, "overruled", overlap
    return model_verdict, "model", overlap


def _content(text: str, without: set[str]) -> set[str]:
    return {t for t in tokens(text) if t not in _STOPWORDS and t not in without}


def error_type_from_overlap(correct: bool, question: str, draft: str, reference: str) -> str:
    """The error type a templated critique names, from what the draft shares with the reference answer."""
    if correct:
        return ERROR_NONE
    draft_tokens = set(tokens(draft))
    question_tokens = set(tokens(question))
    if not draft_tokens - question_tokens - _STOPWORDS:  # empty, or the question said back
        return ERROR_NOT_DIRECT
    wanted = _content(reference, question_tokens) or set(tokens(reference))
    covered = len(wanted & draft_tokens) / len(wanted) if wanted else 0.0
    if covered == 0:
        return ERROR_UNRELATED if not draft_tokens & (question_tokens - _STOPWORDS) else ERROR_WRONG
    return ERROR_PARTIAL if covered < 1 else ERROR_NOT_DIRECT


_TEMPLATE_REASONS = {
    ERROR_NONE: "it gives the information the question asks for, in agreement with the knowledge base",
    ERROR_NOT_DIRECT: "it does not answer the question directly",
    ERROR_WRONG: "the information it gives does not agree with the knowledge base",
    ERROR_PARTIAL: "it gives only part of the information the question asks for",
    ERROR_UNRELATED: "what it says is unrelated to the question",
}


def templated_critique(correct: bool, error_type: str) -> str:
    opening = CORRECT_OPENING if correct else WRONG_OPENING
    return f"{opening} {_TEMPLATE_REASONS[error_type]}. {ERROR_TYPE_LABEL} {error_type}."


def leaks_reference(sentence: str, reference: str, question: str, draft: str) -> bool:
    """The sentence points out the reference answer: it states it (when the draft did not), or it holds at least half
    of the reference's content words that neither the question nor the draft has."""
    ref = normalize_answer(reference)
    if ref and ref in normalize_answer(sentence) and ref not in normalize_answer(draft):
        return True
    new = _content(reference, set(tokens(question)) | set(tokens(draft)))
    if not new:
        return False
    return len(new & set(tokens(sentence))) >= max(1, math.ceil(len(new) / 2))


def redact(critique: str, reference: str, question: str, draft: str) -> tuple[str, int]:
    """The critique without its sentences that leak the reference answer, and how many were removed."""
    sentences = [s for s in _SENTENCE.split(critique.strip()) if s]
    kept = [s for s in sentences if not leaks_reference(s, reference, question, draft)]
    return " ".join(kept), len(sentences) - len(kept)


def _well_formed(text: str) -> bool:
    lowered = text.lower()
    for opening in (CORRECT_OPENING, WRONG_OPENING):
        if lowered.startswith(opening.lower()):
            return len(tokens(text[len(opening):].split(ERROR_TYPE_LABEL)[0])) >= _MIN_REASON_WORDS
    return False


def build_critique(reply: str, question: str, draft: str, reference: str, threshold: float) -> Critique:
    """The critique a verification example trains on, from the teacher pass's reply (prefill included)."""
    reply = " ".join(reply.split())
    correct, verdict_source, overlap = check_verdict(parse_verdict(reply), draft, reference, threshold)
    error_type = error_type_from_overlap(correct, question, draft, reference)
    if correct:
        error_type = ERROR_NONE
    else:
        named = parse_error_type(reply)
        error_type = named if named not in (None, ERROR_NONE) else error_type

    def template(note: str) -> Critique:
        return Critique(templated_critique(correct, error_type), correct, error_type, overlap, verdict_source,
                        "template", note)

    if not _well_formed(reply):
        return template("malformed")
    if parse_verdict(reply) != correct:
        return template("verdict overruled")
    text, removed = redact(reply, reference, question, draft)
    if not _well_formed(text) or parse_verdict(text) != correct:
        return template("leaked the reference answer")
    if ERROR_TYPE_LABEL.lower() not in text.lower():
        text = f"{text.rstrip('.')}. {ERROR_TYPE_LABEL} {error_type}."
    if removed:
        return Critique(text, correct, error_type, overlap, verdict_source, "model_redacted",
                        f"{removed} sentence(s) leaked the reference answer")
    return Critique(text, correct, error_type, overlap, verdict_source, "model")
