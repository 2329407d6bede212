"""Turns validated embedding rows into (a) training examples — the columns anchor, positive, negative_1..k that
sentence-transformers' ranking losses take in order —, (b) the inputs and outputs of hard-negative mining, and (c) the
queries / corpus / relevance judgements of the held-out retrieval evaluation. No heavy imports: plain Python,
unit-testable."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from trainers.embedding.spec import EmbeddingRow


def with_instruction(query: str, instruction: str | None) -> str:
    """The query text the model sees, at training and at evaluation time alike."""
    return f"{instruction}{query}" if instruction else query


@dataclass
class TrainingExamples:
    """The training examples in at most two groups, because a loss needs the same columns in every example of a
    dataset: `hard` = anchor, positive, negative_1..negative_k (rows with their own or mined negatives); `in_batch` =
    anchor, positive (rows with no negative to give, or every row when k is 0), trained on in-batch negatives only."""

    hard: dict[str, list[str]]
    in_batch: dict[str, list[str]]
    # Negative slots filled with mined passages (rows without `neg`), and rows that had none to give.
    mined_negatives: int = 0
    rows_in_batch_only: int = 0

    def __len__(self) -> int:
        return len(self.hard["anchor"]) + len(self.in_batch["anchor"])

    def groups(self) -> dict[str, dict[str, list[str]]]:
        """The non-empty groups by name (the names the trainer's datasets get)."""
        return {name: columns for name, columns in (("hard_negatives", self.hard), ("in_batch", self.in_batch))
                if columns["anchor"]}


def to_examples(rows: Sequence[EmbeddingRow], *, num_hard_negatives: int, query_instruction: str | None = None,
                mined: Mapping[int, list[str]] | None = None) -> TrainingExamples:
    """One example per (query, positive) pair, each with `num_hard_negatives` negatives.

    Every positive of a row is used (duplicate queries in one batch are kept apart by the no-duplicates batch
    sampler). A row's negatives are its `neg`, else what was mined for it (`mined`: row index -> passages); they are
    taken in turn, so its different positives see different ones, and repeated when there are fewer than needed. A
    row with neither goes to the in-batch group."""
    k = num_hard_negatives
    mined = mined or {}
    hard: dict[str, list[str]] = {"anchor": [], "positive": [], **{f"negative_{j + 1}": [] for j in range(k)}}
    in_batch: dict[str, list[str]] = {"anchor": [], "positive": []}
    examples = TrainingExamples(hard, in_batch)
    for i, row in enumerate(rows):
        anchor = with_instruction(row.query, query_instruction)
        pool = list(row.neg) or list(mined.get(i, ()))
        if not k or not pool:
            examples.rows_in_batch_only += bool(k)
            in_batch["anchor"].extend(anchor for _ in row.pos)
            in_batch["positive"].extend(row.pos)
            continue
        for n, positive in enumerate(row.pos):
            hard["anchor"].append(anchor)
            hard["positive"].append(positive)
            for j in range(k):
                hard[f"negative_{j + 1}"].append(pool[(n * k + j) % len(pool)])
        if not row.neg:
            examples.mined_negatives += k * len(row.pos)
    return examples


def mining_inputs(rows: Sequence[EmbeddingRow], query_instruction: str | None = None
                  ) -> tuple[list[int], dict[str, list[str]], list[str]]:
    """What hard-negative mining needs: the indices of the rows to mine for (those without `neg`); the (anchor,
    positive) pairs, with every positive of every row that asks one of those queries, since the miner never
    returns a pair's positive as a negative of its anchor; and the corpus to mine from (every training passage)."""
    targets = [i for i, row in enumerate(rows) if not row.neg]
    anchors = {with_instruction(rows[i].query, query_instruction) for i in targets}
    pairs: dict[str, list[str]] = {"anchor": [], "positive": []}
    for row in rows:
        anchor = with_instruction(row.query, query_instruction)
        if anchor in anchors:
            pairs["anchor"].extend(anchor for _ in row.pos)
            pairs["positive"].extend(row.pos)
    corpus = list(dict.fromkeys(p for row in rows for p in (*row.pos, *row.neg)))
    return targets, pairs, corpus


def mined_by_row(rows: Sequence[EmbeddingRow], targets: Sequence[int], anchors: Sequence[str],
                 negatives: Sequence[str], query_instruction: str | None = None) -> dict[int, list[str]]:
    """The miner's (anchor, negative) output as row index -> distinct negatives, hardest first; a row's own
    positives are dropped even if the miner returned them."""
    by_anchor: dict[str, list[str]] = {}
    for anchor, negative in zip(anchors, negatives):
        found = by_anchor.setdefault(anchor, [])
        if negative not in found:
            found.append(negative)
    result = {}
    for i in targets:
        own = set(rows[i].pos)
        found = [n for n in by_anchor.get(with_instruction(rows[i].query, query_instruction), []) if n not in own]
        if found:
            result[i] = found
    return result


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
