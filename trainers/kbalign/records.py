"""The prompts KBAlign trains on and generates from, every one built by the shared `PromptFitter`
(trainers.common.prompt_fit): a prompt with passages has them trimmed or dropped to fit `max_length`, never its
question or its answer, and what fitting did is counted (FitTally) for the summary.

- question-answer records: the RAG prompt over the passages retrieved for the question (a `rag_ratio` share of them),
  else the bare question (closed-book); a chat pair keeps its own turns;
- verification records: the question prompt, the model's own draft as an assistant turn, the request to verify it
  (`prompts.VERIFY_REQUEST`), and the critique as the target. The reference answer is in none of its turns;
- general-domain chat rows, as they are;
- generation prompts (drafts, evaluation answers), fitted so that prompt + `max_new_tokens` fit in `max_length`.
"""

from __future__ import annotations

from typing import Any

from trainers.common.prompt_fit import FitTally, Fitted, PromptFitter
from trainers.kbalign.kb import Chunk
from trainers.kbalign.pairs import Messages, Pair, passage_text
from trainers.kbalign.prompts import VERIFY_REQUEST

Record = dict[str, Any]

# Tokens the chat template's generation prompt (e.g. "<|assistant|>\n") may add beyond what the fitter counts.
_GENERATION_MARGIN = 8


def _answer(text: str) -> Messages:
    return [{"role": "assistant", "content": text}]


class RecordBuilder:
    def __init__(self, tokenizer, max_length: int, max_new_tokens: int, chunks: list[Chunk]):
        self.fitter = PromptFitter(tokenizer, max_length)
        self.generation_fitter = PromptFitter(tokenizer, max(16, max_length - max_new_tokens - _GENERATION_MARGIN))
        self.chunks = chunks

    def passages(self, retrieved: list[int]) -> list[str]:
        return [passage_text(self.chunks[i]) for i in retrieved if 0 <= i < len(self.chunks)]

    def _fit(self, fitter: PromptFitter, pair: Pair, passages: list[str], completions: list[Messages],
             after: Messages = ()) -> Fitted:
        if pair.messages is not None:  # a chat pair: its own turns, nothing to trim
            return fitter.measure([*pair.messages, *after], completions)
        return fitter.fit(pair.question, passages, completions, after=after)

    def qa(self, pair: Pair) -> tuple[Fitted, Record]:
        """The pair's training record: RAG prompt when `pair.rag`, closed-book otherwise."""
        completion = _answer(pair.answer)
        fitted = self._fit(self.fitter, pair, self.passages(pair.retrieved) if pair.rag else [], [completion])
        return fitted, {"prompt": fitted.prompt, "completion": completion}

    def verification(self, pair: Pair, passages: list[int], draft: str, critique: str) -> tuple[Fitted, Record]:
        """question prompt -> the model's draft -> "verify it" -> the critique (no reference answer anywhere)."""
        completion = _answer(critique)
        after = [{"role": "assistant", "content": draft}, {"role": "user", "content": VERIFY_REQUEST}]
        fitted = self._fit(self.fitter, pair, self.passages(passages), [completion], after)
        return fitted, {"prompt": fitted.prompt, "completion": completion}

    def chat_row(self, prompt: Messages, completion: Messages) -> tuple[Fitted, Record]:
        fitted = self.fitter.measure(prompt, [completion])
        return fitted, {"prompt": fitted.prompt, "completion": completion}

    def question_prompt(self, pair: Pair, passages: list[int], after: Messages = ()) -> Messages:
        """What the model is asked when it drafts, critiques (`after`: its draft and the request) or is evaluated;
        its reply must fit after it."""
        return self._fit(self.generation_fitter, pair, self.passages(passages), [], after).prompt


def fit_all(items: list[tuple[int, Fitted, Record]], tally: FitTally) -> list[Record]:
    """The records that fit, each counted in the tally under its line."""
    return [record for line, fitted, record in items if tally.add(line, fitted)]


def merged_report(reports: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    """Several FitTally reports (e.g. one per round) added up into one with the same keys."""
    kept = "trained" if prefix == "rows" else "kept"
    out: dict[str, Any] = {f"{prefix}_{kept}": 0, f"{prefix}_trimmed": 0, f"{prefix}_dropped": 0,
                           f"{prefix}_dropped_lines": []}
    for report in reports:
        for key in (f"{prefix}_{kept}", f"{prefix}_trimmed", f"{prefix}_dropped"):
            out[key] += report.get(key, 0)
        out[f"{prefix}_dropped_lines"] += report.get(f"{prefix}_dropped_lines", [])
    out[f"{prefix}_dropped_lines"] = sorted(set(out[f"{prefix}_dropped_lines"]))[:20]
    return out
