"""Fits a RAG row into `max_length` tokens by shortening its retrieved passages, never its question or its answer.

Every type that builds RAG prompts (sft, dpo, kbalign) goes through `PromptFitter.fit`, so a row is measured exactly as
trl will tokenize it (the chat template over prompt + completion) and no trainer ever truncates the answer away:

- the whole row fits: kept as it is;
- otherwise the passages are kept in their retrieval order while they fit whole, the first one that does not is cut
  to the tokens left (when at least `min_passage_tokens` are), and the rest are dropped;
- the question and the answer alone are longer than `max_length`: the row cannot fit. `FitTally` counts it with its
  line number; with `truncation: "error"` such a row fails the task (`FitTally.raise_if_dropped`).

Imports nothing heavy itself; the tokenizer passed in is a transformers tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from trainers.common.rag_prompt import build_rag_prompt
from trainers.errors import DataError, DataProblem

Messages = list[dict[str, str]]
# How many lines a summary or a dry-run report names; the counts are always complete.
MAX_LINES_SHOWN = 20


@dataclass(frozen=True)
class Fitted:
    """A row's prompt after fitting. `fits` is False when even the bare question + answer exceed max_length."""

    prompt: Messages
    tokens: int  # prompt + the longest completion, as trl counts it
    given_tokens: int  # the same before fitting (the row as the user wrote it)
    passages_given: int
    passages_kept: int  # whole or cut
    passages_cut: int  # of the kept ones, how many were shortened
    fits: bool

    @property
    def trimmed(self) -> bool:
        """Passages were dropped or shortened for this row to fit."""
        return self.fits and (self.passages_kept < self.passages_given or self.passages_cut > 0)


class PromptFitter:
    """`fit()` for one tokenizer and one max_length; see the module's docstring."""

    def __init__(self, tokenizer, max_length: int, *, min_passage_tokens: int = 16):
        self.tokenizer, self.max_length, self.min_passage_tokens = tokenizer, max_length, min_passage_tokens

    def count(self, messages: Messages) -> int:
        """Tokens of a conversation rendered with the tokenizer's chat template (what trl trains on)."""
        ids = self.tokenizer.apply_chat_template(messages, tokenize=True)
        if hasattr(ids, "keys"):  # a BatchEncoding in recent transformers
            ids = ids["input_ids"]
        return len(ids)

    def passage_tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def fit(self, query: str, passages: Sequence[str], completions: Sequence[Messages], *,
            before: Messages = (), after: Messages = ()) -> Fitted:
        """The prompt `before + [user: RAG prompt(query, passages)] + after`, its passages shortened until the
        prompt plus the longest of `completions` is at most max_length tokens."""
        passages = [p for p in passages if p.strip()]
        prompt = self._prompt(before, query, passages, after)
        tokens = self._longest(prompt, completions)
        given = tokens
        if tokens <= self.max_length:
            return Fitted(prompt, tokens, given, len(passages), len(passages), 0, True)
        bare = self._prompt(before, query, [], after)
        bare_tokens = self._longest(bare, completions)
        if bare_tokens > self.max_length or not passages:
            return Fitted(bare, bare_tokens, given, len(passages), 0, 0, False)
        ids = [self.passage_tokens(p) for p in passages]
        # What numbering and the "Passages:" header cost, spread over the passages (measured, not guessed).
        overhead = max(0, tokens - bare_tokens - sum(map(len, ids)))
        per_passage = -(-overhead // len(passages))
        budget = self.max_length - bare_tokens
        for _ in range(4):  # re-tokenized text can differ by a token or two at the cuts: measure, then tighten
            kept, cut = self._choose(passages, ids, budget, per_passage)
            prompt = self._prompt(before, query, kept, after)
            tokens = self._longest(prompt, completions)
            if tokens <= self.max_length:
                return Fitted(prompt, tokens, given, len(passages), len(kept), cut, True)
            budget -= tokens - self.max_length + 1
        return Fitted(bare, bare_tokens, given, len(passages), 0, 0, True)  # closed-book still fits

    def measure(self, prompt: Messages, completions: Sequence[Messages]) -> Fitted:
        """A prompt without passages to trim (a chat row): it fits as it is, or not at all."""
        tokens = self._longest(list(prompt), completions)
        return Fitted(list(prompt), tokens, tokens, 0, 0, 0, tokens <= self.max_length)

    def _choose(self, passages: list[str], ids: list[list[int]], budget: int,
                per_passage: int) -> tuple[list[str], int]:
        """Passages in retrieval order while they fit whole; the first that does not is cut to what is left."""
        kept: list[str] = []
        for text, tokens in zip(passages, ids):
            room = budget - per_passage
            if len(tokens) <= room:
                kept.append(text)
                budget = room - len(tokens)
                continue
            if room >= self.min_passage_tokens:
                kept.append(self.tokenizer.decode(tokens[:room], skip_special_tokens=True).strip())
                return kept, 1
            break
        return kept, 0

    def _longest(self, prompt: Messages, completions: Sequence[Messages]) -> int:
        return max(self.count(prompt + list(c)) for c in completions) if completions else self.count(prompt)

    @staticmethod
    def _prompt(before: Messages, query: str, passages: list[str], after: Messages) -> Messages:
        return [*before, {"role": "user", "content": build_rag_prompt(query, passages)}, *after]


@dataclass
class FitTally:
    """What fitting did to one file's rows: trained, trimmed, dropped (with line numbers), for the summary and the
    dry run."""

    field: str  # the config key naming the file, e.g. train_data_path
    name: str  # the file as the user named it
    max_length: int
    rows: int = 0
    trimmed: int = 0
    dropped_lines: list[int] = field(default_factory=list)

    def add(self, line: int, fitted: Fitted) -> bool:
        """Counts one row; True when it is trained on."""
        self.rows += 1
        if not fitted.fits:
            self.dropped_lines.append(line)
            return False
        self.trimmed += fitted.trimmed
        return True

    @property
    def dropped(self) -> int:
        return len(self.dropped_lines)

    def report(self, prefix: str = "rows") -> dict[str, Any]:
        """e.g. {"rows_trained": 98, "rows_trimmed": 3, "rows_dropped": 2, "rows_dropped_lines": [7, 40]}; held-out
        rows (prefix "eval_rows") are "kept", not "trained"."""
        kept = "trained" if prefix == "rows" else "kept"
        return {f"{prefix}_{kept}": self.rows - self.dropped, f"{prefix}_trimmed": self.trimmed,
                f"{prefix}_dropped": self.dropped, f"{prefix}_dropped_lines": self.dropped_lines[:MAX_LINES_SHOWN]}

    def message(self) -> str:
        lines = ", ".join(map(str, self.dropped_lines[:MAX_LINES_SHOWN]))
        more = f" and {self.dropped - MAX_LINES_SHOWN} more" if self.dropped > MAX_LINES_SHOWN else ""
        unit = "line" if self.dropped == 1 else "lines"
        return (f"{self.field}: {self.name} {unit} {lines}{more}: the question and answer alone are longer than "
                f"max_length ({self.max_length} tokens), even without passages")

    def raise_if_dropped(self) -> None:
        """With `truncation: "error"`: a row that cannot fit is the user's to fix, named by line."""
        if not self.dropped:
            return
        problems = [DataProblem(line, "", f"longer than max_length ({self.max_length} tokens) without its passages")
                    for line in self.dropped_lines[:MAX_LINES_SHOWN]]
        raise DataError(self.field, f"{self.message()} (truncation: error)", problems, rows=self.rows)
