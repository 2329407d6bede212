"""The evaluation rows of a task: from `eval_data_path` when given, else a seeded held-out fraction of the rows."""

from __future__ import annotations

import random
from typing import Callable, Sequence, TypeVar

Row = TypeVar("Row")


def split_eval(
    rows: Sequence[Row], *, eval_ratio: float, seed: int, load_eval: Callable[[], list[Row]] | None = None
) -> tuple[list[Row], list[Row]]:
    """(train, eval). `load_eval` reads the eval file when the config names one; it wins over `eval_ratio`."""
    if load_eval is not None:
        return list(rows), load_eval()
    if eval_ratio <= 0 or len(rows) < 2:
        return list(rows), []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(rows) - 1, max(1, round(len(rows) * eval_ratio)))
    held_out = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held_out], [rows[i] for i in sorted(held_out)]
