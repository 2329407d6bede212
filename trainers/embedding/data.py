"""Turns validated embedding rows into (a) training examples — the columns anchor, positive, negative_1..k that
sentence-transformers' ranking losses take in order — and (b) the queries / corpus / relevance judgements of the
held-out retrieval evaluation. No heavy imports: plain Python, unit-testable."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

from trainers.embedding.spec import EmbeddingRow


def with_instruction(query: str, instruction: str | None) -> str:
    """The query text the model sees, at training and at evaluation time alike."""
    return f"{instruction}{query}" if instruction else query


@dataclass
class TrainingExamples:
    columns: dict[str, list[str]]  # anchor, positive, negative_1..negative_k: equal-length text columns
    # Negatives that did not come from a row's own `neg` list (rows with no negatives get other rows' positives).
    borrowed_negatives: int = 0

    def __len__(self) -> int:
        return len(self.columns["anchor"])


def to_examples(rows: Sequence[EmbeddingRow], *, num_hard_negatives: int, query_instruction: str | None = None,
                seed: int = 42) -> TrainingExamples:
    """One example per (query, positive) pair, each with `num_hard_negatives` negatives.

    Every positive of a row is used (duplicate queries in one batch are kept apart by the no-duplicates batch
    sampler). The row's negatives are taken in turn, so its different positives see different ones; a row with fewer
    than needed repeats its own, and a row with none borrows random positives of other rows (random negatives, the
    usual fallback)."""
    rng = random.Random(seed)
    k = num_hard_negatives
    columns: dict[str, list[str]] = {"anchor": [], "positive": [], **{f"negative_{j + 1}": [] for j in range(k)}}
    borrowed = 0
    all_positives = [(i, p) for i, row in enumerate(rows) for p in row.pos]
    for i, row in enumerate(rows):
        anchor = with_instruction(row.query, query_instruction)
        own = set(row.pos)
        for n, positive in enumerate(row.pos):
            if k:
                if row.neg:
                    negatives = [row.neg[(n * k + j) % len(row.neg)] for j in range(k)]
                else:
                    negatives = _borrow(rng, all_positives, i, own, k)
                    borrowed += k
            columns["anchor"].append(anchor)
            columns["positive"].append(positive)
            for j in range(k):
                columns[f"negative_{j + 1}"].append(negatives[j])
    return TrainingExamples(columns, borrowed)


def _borrow(rng: random.Random, pool: list[tuple[int, str]], row_index: int, own: set[str], k: int) -> list[str]:
    candidates = [p for i, p in pool if i != row_index and p not in own]
    if not candidates:  # a single-row data set: nothing to borrow, so the row's positive stands in (loss still works)
        candidates = sorted(own)
    return [rng.choice(candidates) for _ in range(k)]


@dataclass
class RetrievalEval:
    """InformationRetrievalEvaluator's inputs: query id -> text, passage id -> text, query id -> relevant ids."""

    queries: dict[str, str] = field(default_factory=dict)
    corpus: dict[str, str] = field(default_factory=dict)
    relevant: dict[str, set[str]] = field(default_factory=dict)
    distractors: int = 0


def to_retrieval_eval(eval_rows: Sequence[EmbeddingRow], *, query_instruction: str | None = None,
                      distractor_rows: Sequence[EmbeddingRow] = (), max_distractors: int = 0,
                      seed: int = 42) -> RetrievalEval:
    """Corpus = every positive and negative of the evaluation rows, plus up to `max_distractors` passages of the
    training rows (chosen at random, fixed by seed); each query's relevant passages are its `pos`. Identical texts
    share one passage id."""
    result = RetrievalEval()
    ids: dict[str, str] = {}

    def passage_id(text: str) -> str:
        if text not in ids:
            ids[text] = f"p{len(ids)}"
            result.corpus[ids[text]] = text
        return ids[text]

    for n, row in enumerate(eval_rows):
        qid = f"q{n}"
        result.queries[qid] = with_instruction(row.query, query_instruction)
        result.relevant[qid] = {passage_id(p) for p in row.pos}
        for negative in row.neg:
            passage_id(negative)
    if max_distractors:
        extra = sorted({p for row in distractor_rows for p in (*row.pos, *row.neg)} - set(ids))
        random.Random(seed).shuffle(extra)
        for text in extra[:max_distractors]:
            passage_id(text)
            result.distractors += 1
    return result
