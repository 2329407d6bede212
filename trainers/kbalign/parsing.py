"""Reading what the model wrote during annotation, and the filters a question-answer pair must pass. Pure Python.

Following the reference code (short_dependency/1gen_data.py): a reply holds several pairs; a question needs a
question mark and 4-25 words, an answer at most 70 words and no question mark; a pair whose answer (or question)
says the passage does not hold the answer ("not mentioned", "no information", "未提及", ...) is rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from trainers.kbalign.scoring import word_count

QA = tuple[str, "str | None"]

_LABEL = re.compile(
    r"(?:^|(?<=\n))[ \t]*(?:\d+[.)][ \t]*)?(question|q|问题|answer|a|答案|回答)[ \t]*\d*[ \t]*[:：]|"  # at a line start
    r"(?<=[\s?？.。!！])(question|answer|问题|答案)[ \t]*[:：]",  # or inside a line, after a sentence
    re.IGNORECASE,
)
_ANSWER_WORDS = {"answer", "a", "答案", "回答"}
_LIST_MARK = re.compile(r"^\s*(?:[-*•]|\d+[.)、]|\(\d+\))\s*")


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _strip_label(text: str) -> str:
    """Without a leading list mark ("1.", "-") or repeated label ("Q1:", "Question:")."""
    text = _LIST_MARK.sub("", text.strip())
    return re.sub(r"^(?:question|q|问题|answer|a|答案|回答)\s*\d*\s*[:：]\s*", "", text, flags=re.IGNORECASE).strip()


def parse_qa_pairs(reply: str) -> list[QA]:
    """The (question, answer or None) pairs of a reply written after the `Question:` prefill (pass the prefill and the
    continuation together).

    Labelled replies (`Question:` / `Answer:`, `Q1:` / `A1:`, `问题：` / `答案：`) pair each question with the answer
    that follows it. A reply without any answer label is read the reference code's way: non-empty lines alternately
    question and answer. A question left without an answer comes back with None (the caller may ask for it)."""
    marks = list(_LABEL.finditer(reply))
    segments: list[tuple[str, str]] = []
    for i, mark in enumerate(marks):
        label = (mark.group(1) or mark.group(2)).lower()
        end = marks[i + 1].start() if i + 1 < len(marks) else len(reply)
        segments.append(("a" if label in _ANSWER_WORDS else "q", _strip_label(reply[mark.end():end])))
    if not any(kind == "a" for kind, _ in segments):
        body = reply[marks[0].end():] if marks and not reply[:marks[0].start()].strip() else reply
        lines = [_strip_label(line) for line in body.splitlines()]
        lines = [line for line in lines if line]
        return [(_clean(lines[i]), _clean(lines[i + 1]) if i + 1 < len(lines) else None)
                for i in range(0, len(lines), 2)]
    pairs: list[QA] = []
    question: str | None = None
    for kind, text in segments:
        if kind == "q":
            if question is not None:
                pairs.append((question, None))
            question = _clean(text)
        elif question is not None:
            pairs.append((question, _clean(text)))
            question = None
    if question is not None:
        pairs.append((question, None))
    return [(q, a) for q, a in pairs if q]


def parse_questions(reply: str) -> list[str]:
    """The questions of a reply listing them one per line (labels and list marks stripped)."""
    out = []
    for line in reply.splitlines():
        for piece in re.split(r"(?<=[?？])\s+(?=\S)", line):  # several questions on one line
            piece = _clean(_strip_label(piece))
            if piece:
                out.append(piece)
    return out


def parse_answer(reply: str) -> str:
    """An answer written after the `Answer:` prefill: it ends where the model starts another question."""
    text = re.sub(r"^\s*(?:answer|a|答案|回答)\s*[:：]\s*", "", reply, flags=re.IGNORECASE)
    nxt = re.search(r"(?:^|\n)\s*(?:question|q|问题)\s*\d*\s*[:：]", text, re.IGNORECASE)
    return _clean(text[: nxt.start()] if nxt else text)


# --- "the passage does not say" ----------------------------------------------------------------------------------

_NO_ANSWER_EN = (
    "none", "not mentioned", "not discussed", "not covered", "not included", "no information", "no details",
    "not available", "unmentioned", "unspecified", "absent", "missing", "not found", "no mention of",
    "no reference to", "no indication", "no data", "no evidence", "not stated", "not described", "not listed",
    "not reported", "no record", "not specified", "not provided", "not given", "cannot be determined",
    "cannot be answered", "can't be answered", "unable to answer", "does not mention", "doesn't mention",
    "does not say", "doesn't say", "does not specify", "doesn't specify", "does not contain", "doesn't contain",
    "does not provide", "doesn't provide", "does not state", "doesn't state",
)
_NO_ANSWER_EN_RE = re.compile(r"\b(?:" + "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in _NO_ANSWER_EN) + r")\b",
                              re.IGNORECASE)
_NO_ANSWER_ZH = (
    "没有提到", "未提到", "没有提及", "未提及", "没提到", "没有涉及", "未涉及", "没有说明", "未说明", "没有描述", "未描述",
    "没有信息", "无相关信息", "没有相关信息", "没有相关内容", "没有具体", "未具体", "不包含", "未包含", "没有包含",
    "无法回答", "无法确定", "无从得知", "没有记载", "未记载", "没有给出", "未给出", "没有找到", "未找到", "文中没有",
    "没有明确", "未明确", "不清楚", "未知",
)


def says_no_answer(text: str) -> bool:
    """The text says the passage does not hold the answer (English or Chinese)."""
    return bool(_NO_ANSWER_EN_RE.search(text)) or any(phrase in text for phrase in _NO_ANSWER_ZH)


# --- filters -----------------------------------------------------------------------------------------------------

_QUESTION_MARKS = ("?", "？")


@dataclass(frozen=True)
class QAFilter:
    """The reference code's filters, each a config option (defaults: its values)."""

    require_question_mark: bool = True
    min_question_words: int = 4
    max_question_words: int = 25
    min_answer_words: int = 1
    max_answer_words: int = 70
    reject_no_answer: bool = True

    @classmethod
    def from_config(cls, config: Any) -> "QAFilter":
        return cls(**{name: getattr(config, name) for name in cls.__dataclass_fields__})

    def describe(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)}" for name in self.__dataclass_fields__)

    def question_reason(self, question: str) -> str | None:
        """None when the question passes; otherwise why not."""
        if not question:
            return "no question"
        words = word_count(question)
        if words < self.min_question_words:
            return "question too short"
        if words > self.max_question_words:
            return "question too long"
        if self.require_question_mark and not any(m in question for m in _QUESTION_MARKS):
            return "question has no '?'"
        if self.reject_no_answer and says_no_answer(question):
            return "says the passage does not answer it"
        return None

    def answer_reason(self, answer: str | None) -> str | None:
        """None when the answer passes; otherwise why not."""
        if not answer:
            return "no answer"
        if self.reject_no_answer and says_no_answer(answer):
            return "says the passage does not answer it"
        words = word_count(answer)
        if words < self.min_answer_words:
            return "answer too short"
        if words > self.max_answer_words:
            return "answer too long"
        if self.require_question_mark and any(m in answer for m in _QUESTION_MARKS):
            return "answer has a '?'"
        return None

    def reject_reason(self, question: str, answer: str | None) -> str | None:
        """None when the pair passes; otherwise why not (a short reason kept in the annotation files)."""
        return self.question_reason(question) or self.answer_reason(answer)


def question_key(question: str) -> str:
    """Duplicate detection: case, spacing and punctuation do not make a question new."""
    return re.sub(r"[\W_]+", " ", question.lower()).strip()
