"""KBAlign's prompts and the pure-Python pieces around them: parsing what the model wrote, the annotation filters,
the self-verification verdict and its lexical-overlap fallback. No torch here, so it is unit-testable cheaply."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# --- annotation ----------------------------------------------------------------------------------------------------

SHORT_PROMPT = (
    "Read the passage below and write one question that can be answered from it, then the answer.\n"
    "Reply exactly in this form:\n"
    "Question: <a question about the passage>\n"
    "Answer: <the answer, based on the passage>\n\n"
    "Passage:\n{passage}"
)

LONG_PROMPT = (
    "Read the related passages below and write one question whose answer needs information from more than one "
    "of them, then the answer.\n"
    "Reply exactly in this form:\n"
    "Question: <a question that connects the passages>\n"
    "Answer: <the answer, combining the passages>\n\n"
    "Passages:\n{passages}"
)

# The model's reply is started with this label, so even a weak model writes a question first.
QUESTION_PREFILL = "Question:"
ANSWER_LABEL = "Answer:"

_ANSWER_MARK = re.compile(r"(?:^|\n|\s)(?:answer|a|答案|回答)\s*[:：]", re.IGNORECASE)
_QUESTION_MARK_LABEL = re.compile(r"(?:^|\n)\s*(?:question|q|问题)\s*[:：]", re.IGNORECASE)


def numbered(passages: list[str]) -> str:
    return "\n".join(f"[{i}] {p.strip()}" for i, p in enumerate(passages, start=1))


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def parse_qa(continuation: str) -> tuple[str, str | None]:
    """(question, answer or None) from what the model wrote after the `Question:` prefill.

    The answer follows an `Answer:` label and ends where the model starts another `Question:`. Without an answer
    label the question is the first line and the answer is None (the caller asks for the answer separately)."""
    text = continuation.strip()
    text = re.sub(r"^(?:question|q|问题)\s*[:：]\s*", "", text, flags=re.IGNORECASE)  # the model repeated the label
    mark = _ANSWER_MARK.search(text)
    if mark is None:
        first_line = text.split("\n", 1)[0]
        return _clean(first_line), None
    question = _clean(text[: mark.start()])
    return question, cut_answer(text[mark.end():])


def cut_answer(text: str) -> str:
    """An answer ends where the model starts writing the next question."""
    nxt = _QUESTION_MARK_LABEL.search(text)
    if nxt is not None:
        text = text[: nxt.start()]
    return _clean(text)


# --- filters -------------------------------------------------------------------------------------------------------

_QUESTION_WORDS = (
    "what", "who", "whom", "whose", "which", "when", "where", "why", "how", "is", "are", "was", "were", "do", "does",
    "did", "can", "could", "should", "would", "will", "has", "have", "had", "may", "might", "must", "shall", "name",
    "list", "describe", "explain",
)
_CJK_INTERROGATIVES = ("什么", "谁", "哪", "何", "几", "多少", "怎么", "怎样", "如何", "为什么", "为何", "是否", "吗", "呢")


@dataclass(frozen=True)
class QAFilter:
    require_question_mark: bool = True
    require_question_word: bool = False
    min_question_chars: int = 4
    max_question_chars: int = 300
    min_answer_chars: int = 2
    max_answer_chars: int = 1500

    @classmethod
    def from_config(cls, config: Any) -> "QAFilter":
        return cls(**{name: getattr(config, name) for name in cls.__dataclass_fields__})

    def describe(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)}" for name in self.__dataclass_fields__)

    def reject_reason(self, question: str, answer: str | None) -> str | None:
        """None when the pair passes; otherwise why not (a short reason kept in the annotation files)."""
        if not question:
            return "no question"
        if len(question) < self.min_question_chars:
            return "question too short"
        if len(question) > self.max_question_chars:
            return "question too long"
        if self.require_question_mark and not question.rstrip().endswith(("?", "？")):
            return "question does not end with '?'"
        if self.require_question_word and not looks_like_question(question):
            return "question does not start with a question word"
        if not answer:
            return "no answer"
        if len(answer) < self.min_answer_chars:
            return "answer too short"
        if len(answer) > self.max_answer_chars:
            return "answer too long"
        return None


def looks_like_question(question: str) -> bool:
    words = re.findall(r"[a-z]+", question.lower())
    if words and words[0] in _QUESTION_WORDS:
        return True
    return any(w in question for w in _CJK_INTERROGATIVES)


def question_key(question: str) -> str:
    """Duplicate detection: case, spacing and punctuation do not make a question new."""
    return re.sub(r"[\W_]+", " ", question.lower()).strip()


# --- self-verification ---------------------------------------------------------------------------------------------

JUDGE_PROMPT = (
    "Compare a model's answer with the reference answer to the same question.\n"
    "Question: {question}\n"
    "Reference answer: {reference}\n"
    "Model answer: {draft}\n"
    "Is the model answer correct, i.e. does it agree with the reference answer? Reply with yes or no."
)
VERDICT_PREFILL = "Verdict:"

# The follow-up turn of a verification training example (after the model's own draft answer).
CHECK_REQUEST = "Check your answer above. Is it correct? Then give the correct answer."
FEEDBACK_CORRECT = "My answer above is correct."
FEEDBACK_WRONG = "My answer above is not correct."
CORRECTED_LABEL = "Correct answer:"

_YES = {"yes", "correct", "true", "right", "agree", "agrees", "是", "对", "正确", "一致"}
_NO = {"no", "incorrect", "wrong", "false", "disagree", "disagrees", "not", "否", "不", "错", "错误", "不对", "不正确",
       "不一致"}
_CJK_WORDS = sorted((w for w in _YES | _NO if not w.isascii()), key=len, reverse=True)


def parse_verdict(text: str) -> bool | None:
    """True/False from the judge's reply (the first yes/no-like word among its first few), None when there is none."""
    for token in re.findall(r"[a-z]+|[\u4e00-\u9fff]+", text.lower())[:8]:
        if token.isascii():
            if token in _YES or token in _NO:
                return token in _YES
            continue
        for word in _CJK_WORDS:  # Chinese has no spaces: a run like "不正确。" starts with the word
            if token.startswith(word):
                return word in _YES
    return None


def _tokens(text: str) -> list[str]:
    # Latin/digit words, and single CJK characters (Chinese has no spaces between words).
    return re.findall(r"[a-z0-9]+|[\u4e00-\u9fff]", text.lower())


def overlap_f1(candidate: str, reference: str) -> float:
    """Token-level F1 between two texts (SQuAD-style bag of tokens)."""
    cand, ref = _tokens(candidate), _tokens(reference)
    if not cand or not ref:
        return 0.0
    counts: dict[str, int] = {}
    for tok in ref:
        counts[tok] = counts.get(tok, 0) + 1
    common = 0
    for tok in cand:
        if counts.get(tok, 0) > 0:
            counts[tok] -= 1
            common += 1
    if common == 0:
        return 0.0
    precision, recall = common / len(cand), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def judge(verdict_text: str, draft: str, reference: str, threshold: float) -> tuple[bool, str, float]:
    """(correct, source, overlap): the model's verdict when it gave one, else lexical overlap >= threshold."""
    overlap = round(overlap_f1(draft, reference), 4)
    verdict = parse_verdict(verdict_text)
    if verdict is not None:
        return verdict, "model", overlap
    return overlap >= threshold, "overlap", overlap


def feedback_completion(correct: bool, reference: str) -> str:
    return f"{FEEDBACK_CORRECT if correct else FEEDBACK_WRONG}\n{CORRECTED_LABEL} {reference}"
