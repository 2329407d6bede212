"""Hard negatives for the rows that have none, mined with the base model before training by sentence-transformers'
own miner (`util.mine_hard_negatives`). Training code path only.

Choices: the corpus is every training passage (positives and negatives of all training rows; never the held-out
rows'); the hardest candidates are taken ("top"); a candidate scoring above the row's weakest positive less
`relative_margin` x |that score| is skipped as a probable false negative (NV-Retriever's TopK-PercPos, 0.05 by
default). The miner never returns a positive of the query it mines for, and every row that asks the same query
contributes its positives; `data.mined_by_row` drops a row's own positives once more regardless.
"""

from __future__ import annotations

import warnings
from typing import Sequence

from datasets import Dataset
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import mine_hard_negatives

from trainers.embedding.data import mined_by_row, mining_inputs
from trainers.embedding.spec import EmbeddingRow


def mine_negatives(model: SentenceTransformer, rows: Sequence[EmbeddingRow], *, num_negatives: int,
                   relative_margin: float, query_instruction: str | None = None, batch_size: int = 32
                   ) -> dict[int, list[str]]:
    """Row index -> up to `num_negatives` mined negatives, hardest first, for each row without `neg` that got any."""
    targets, pairs, corpus = mining_inputs(rows, query_instruction)
    if not targets:
        return {}
    with warnings.catch_warnings():
        # The miner's statistics table takes a std() of what it found, which torch warns about when that is
        # nothing or one score; the line printed below says what was found.
        warnings.filterwarnings("ignore", message="std\\(\\): degrees of freedom", category=UserWarning)
        mined = mine_hard_negatives(
            Dataset.from_dict(pairs), model, anchor_column_name="anchor", positive_column_name="positive",
            corpus=corpus, num_negatives=num_negatives, relative_margin=relative_margin, sampling_strategy="top",
            output_format="triplet", batch_size=batch_size,
            # The anchors already carry the query instruction, as in training: no model prompt on top.
            query_prompt="", corpus_prompt="",
        )
    found = mined_by_row(rows, targets, list(mined["anchor"]), list(mined["negative"]), query_instruction)
    print(f"hard-negative mining: {sum(map(len, found.values()))} negatives for {len(found)} of {len(targets)} "
          f"row(s) without `neg` (corpus {len(corpus)} passages, relative margin {relative_margin:g})", flush=True)
    return found
