"""Learnable retrieval rows for the embedding trainer's tests, and a config for a fast tiny-BERT run.

Each row asks for one attribute of one made-up thing: "what is the price of the kalomi?". Its positive states that
attribute with a marker word the query does not contain ("the kalomi has vorn seven."), and its hard negatives state
other attributes of the same thing ("the kalomi has tiska three."). Matching the thing's name separates the row from
the other rows (in-batch negatives: any encoder, even a random one, learns that fast); telling the positive from the
hard negatives needs the query word -> marker word association (price -> vorn, colour -> tiska, ...), which no
pretrained model knows and which the training rows teach. Held-out rows use new names with the same associations.
`entity_rows` asks several attributes of each thing, so the things' other passages are the hard negatives a miner
finds among the training passages.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

# (word in the query, marker word in the passage)
RELATIONS = [("price", "vorn"), ("colour", "tiska"), ("age", "plimo"), ("size", "dakru"), ("owner", "felbo"),
             ("home", "grenu"), ("food", "mossa"), ("speed", "quilo")]
VALUES = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "many", "few"]
_SYLLABLES = ["ka", "lo", "mi", "ne", "tu", "ra", "si", "po", "de", "ga", "vi", "zu", "he", "bo", "fa", "wy"]
NUM_NEGATIVES = 3


def names(n: int, seed: int = 0) -> list[str]:
    """n distinct made-up three-syllable names, in a fixed random order."""
    pool = ["".join(p) for p in itertools.product(_SYLLABLES, repeat=3)]
    random.Random(seed).shuffle(pool)
    if n > len(pool):
        raise ValueError(f"at most {len(pool)} rows")
    return pool[:n]


def embedding_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n rows {query, pos, neg}, one thing each. Every 5th row has a second positive; every 10th has no negatives
    (the trainer mines some for it)."""
    rng = random.Random(seed)
    rows = []
    for i, name in enumerate(names(n, seed)):
        relation = i % len(RELATIONS)
        asked, marker = RELATIONS[relation]
        value = rng.choice(VALUES)
        row: dict[str, Any] = {
            "query": f"what is the {asked} of the {name}?",
            "pos": [f"the {name} has {marker} {value}."],
        }
        if i % 5 == 4:
            row["pos"].append(f"{marker} {value} is what the {name} has.")
        others = [r for r in range(len(RELATIONS)) if r != relation]
        row["neg"] = [] if i % 10 == 9 else [
            f"the {name} has {RELATIONS[r][1]} {rng.choice(VALUES)}." for r in rng.sample(others, NUM_NEGATIVES)]
        rows.append(row)
    return rows


def entity_rows(entities: int, *, relations: int = 4, first: int = 0, seed: int = 0,
                without_negatives_every: int = 0) -> list[dict[str, Any]]:
    """Several rows about each made-up thing, one per attribute asked ("what is the price of the kalomi?", "what is
    the colour of the kalomi?", ...): a row's positive is the thing's passage with the asked attribute's marker word,
    and its negatives are the thing's other passages, which are the other rows' positives. A pretrained model matches
    the name, then guesses among the thing's passages (recall@1 near 1 / relations); learning the query word ->
    marker word association fixes that. `first`: skip that many names (disjoint training and held-out things);
    every `without_negatives_every`-th row has no `neg` (the trainer mines negatives for it)."""
    rng = random.Random(seed)
    rows = []
    for name in names(first + entities, seed)[first:]:
        passages = [f"the {name} has {marker} {rng.choice(VALUES)}." for _, marker in RELATIONS[:relations]]
        for r, (asked, _) in enumerate(RELATIONS[:relations]):
            bare = without_negatives_every and (len(rows) + 1) % without_negatives_every == 0
            rows.append({"query": f"what is the {asked} of the {name}?", "pos": [passages[r]],
                         "neg": [] if bare else [p for s, p in enumerate(passages) if s != r]})
    return rows


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_embedding_rows(path: Path, n: int, seed: int = 0) -> Path:
    return write_rows(path, embedding_rows(n, seed))


def corpus_lines(n: int = 400) -> list[str]:
    """Text in the rows' vocabulary, for training the tiny BERT's tokenizer."""
    lines = []
    for row in embedding_rows(n, seed=1):
        lines.extend([row["query"], *row["pos"], *row["neg"]])
    return lines


def tiny_embedding_config(model_dir: Path, data_path: str | Path, **overrides: Any) -> dict[str, Any]:
    """A config for a fast CPU run on the tiny BERT (random weights: a high learning rate, many short steps)."""
    config: dict[str, Any] = {
        "model_name_or_path": str(model_dir),
        "train_data": str(data_path),
        "output_dir": "output/embedding",
        "learning_rate": 1e-3,
        "num_train_epochs": 10,
        "per_device_train_batch_size": 16,
        "max_steps": 30,
        "num_hard_negatives": 2,
        "max_seq_length": 32,
        "warmup_ratio": 0.0,
        "eval_ratio": 0.1,
        "eval_max_distractors": 100,
    }
    config.update(overrides)
    return config
