"""The texts KBAlign puts to the model: annotation, long-range answering and merging, the teacher's critique, and the
turn that asks the model to verify its own draft. Text only (the parsing is in `parsing` and `critique`), in the
words of the reference code (thunlp/KBAlign) where it has them.

A generation prompt is a chat conversation plus a *prefill*: the start of the assistant's reply, forced, so that
even a weak model writes in the expected form.
"""

from __future__ import annotations

# --- short-range annotation: several question-answer pairs from one chunk --------------------------------------------

SHORT_PROMPT = (
    "Write {n} question-answer pairs about the passage below. Each question must be answerable from the passage "
    "alone.\n"
    "Reply in this form:\n"
    "Question: <question>\n"
    "Answer: <answer>\n\n"
    "Passage:\n{passage}"
)
QUESTION_PREFILL = "Question:"
ANSWER_PREFILL = "Answer:"

# --- long-range annotation: questions over a cluster, answered passage by passage, merged -------------------------

# Asked after a cluster's passages (the shared RAG prompt shape, so the passages are fitted like any other).
LONG_QUESTION_REQUEST = (
    "Write {n} general questions that several of the related passages above help to answer, one question per line."
)
LONG_ANSWER_PROMPT = (
    "Answer the question based on the passage. If the passage does not answer it, reply \"none\".\n\n"
    "Passage:\n{passage}\n\n"
    "Question: {question}"
)
MERGE_PROMPT = (
    "The answer below is a concatenation of several answers to the same question. Rewrite it as one smooth answer "
    "that keeps all of their information.\n\n"
    "Question: {question}\n"
    "Answer: {answer}"
)

# --- self-verification -------------------------------------------------------------------------------------------

# The reference code's error types; "none" is this project's for a correct response.
ERROR_NONE = "none"
ERROR_NOT_DIRECT = "does not answer the question directly"
ERROR_WRONG = "provides totally wrong information"
ERROR_PARTIAL = "provides only part of the information"
ERROR_UNRELATED = "provides unrelated information"
ERROR_TYPES = (ERROR_NONE, ERROR_NOT_DIRECT, ERROR_WRONG, ERROR_PARTIAL, ERROR_UNRELATED)

CORRECT_OPENING = "The student response is correct because"
WRONG_OPENING = "The student response is wrong because"
CRITIQUE_PREFILL = "The student response is"
ERROR_TYPE_LABEL = "ERROR TYPE:"

_INSTRUCTIONS = (
    f"Start with '{CORRECT_OPENING}' or '{WRONG_OPENING}', say why, and end with '{ERROR_TYPE_LABEL} <type>' "
    f"(one of: {', '.join(ERROR_TYPES)}). You are NOT ALLOWED to directly point out the correct answer in your "
    "verification."
)

# Both follow the same conversation: the question prompt (with its retrieved passages) and the model's own draft as
# the assistant's turn.
# The teacher pass that *generates* a critique sees the reference answer, so its verdict is grounded.
TEACHER_REQUEST = (
    "You are a teacher evaluating the student response above. The reference answer is: {reference}\n" + _INSTRUCTIONS
)
# The turn of a verification training example: no reference answer anywhere, so the model learns to check a draft
# from the question and the passages alone, as it must at inference. Short: the critique it is trained to write
# carries the form.
VERIFY_REQUEST = "Verify the response above: is it correct or wrong, why, and what is its ERROR TYPE?"
