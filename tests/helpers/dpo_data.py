"""Learnable DPO preference rows for the tiny Llama (tests/helpers/tiny_models.py) and a config that trains it fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Words the tiny Llama's tokenizer was trained on, so the rows are short in tokens.
_TOPICS = ["apple", "sky", "grass", "snow", "sun", "coal", "lemon", "cherry", "ocean", "cloud"]
_COLOURS = ["red", "blue", "green", "white", "yellow", "black", "yellow", "red", "blue", "white"]


def dpo_rows(n: int, colour_shift: int = 0) -> list[dict[str, Any]]:
    """Seed-format preference rows: chosen always states the topic's colour, rejected always the same wrong pattern.
    `colour_shift` pairs each topic with another colour: held-out pairs the model never saw, with the same
    preference (a plain statement over the babble)."""
    rows = []
    for i in range(n):
        topic, colour = _TOPICS[i % len(_TOPICS)], _COLOURS[(i + colour_shift) % len(_COLOURS)]
        row: dict[str, Any] = {
            "query": f"What colour is the {topic}?",
            "chosen": {"text": f"The {topic} is {colour}."},
            "rejected": {"text": "the answer is what colour is what colour"},
        }
        if i % 2:
            row["retrieval_result"] = [f"The {topic} is {colour}.", "The sky is blue."]
        elif i % 4 == 2:
            row["retrieval_result"] = f"The {topic} is {colour}."
        rows.append(row)
    return rows


def write_dpo_rows(path: Path, n: int, colour_shift: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in dpo_rows(n, colour_shift)), encoding="utf-8")
    return path


def tiny_dpo_config(model_dir: str, data_path: str, **overrides: Any) -> dict[str, Any]:
    """A LoRA DPO config that runs a few seconds of training on the tiny Llama and whose loss clearly falls."""
    config: dict[str, Any] = {
        "model_name_or_path": str(model_dir),
        "train_data_path": str(data_path),
        "output_dir": "output/dpo",
        "use_lora": True,
        "learning_rate": 5e-3,
        "num_train_epochs": 10,
        "per_device_train_batch_size": 4,
        "max_steps": 24,
        "max_length": 128,
        "beta": 0.1,
    }
    config.update(overrides)
    return config
