"""General-domain data mixing: a user's chat rows mixed into every round at a ratio, so adapting to the knowledge
base does not wear away the model's general abilities (the paper's optional mixing). Pure Python."""

from __future__ import annotations

import random


def general_counts(kb_records: list[int], ratio: float) -> list[int]:
    """General rows per round: round(ratio x the round's knowledge-base records)."""
    return [round(n * ratio) for n in kb_records]


def general_rows_per_round(n_rows: int, counts: list[int], seed: int) -> list[list[int]]:
    """Indices into the general rows for each round: a seeded order walked on from round to round (so the rounds see
    different rows), reshuffled each time it runs out; empty lists when there are no rows."""
    if n_rows <= 0:
        return [[] for _ in counts]
    rng = random.Random(seed)
    order: list[int] = []
    out: list[list[int]] = []
    for count in counts:
        picked: list[int] = []
        while len(picked) < count:
            if not order:
                order = list(range(n_rows))
                rng.shuffle(order)
            picked.append(order.pop())
        out.append(picked)
    return out
