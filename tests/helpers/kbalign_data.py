"""Small knowledge bases for the KBAlign tests, and a config small enough that a whole run on the tiny Llama (built
by tests/helpers/tiny_models.py) takes well under a minute on a CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers.tiny_models import _COLOURS, _TOPIC_WORDS

# Words the tiny tokenizer knows as whole tokens, so the chunks stay short in tokens.
DOCUMENTS = [
    {"id": f"doc-{topic}", "title": topic,
     "text": f"The {topic} is {colour}. What colour is the {topic}? The answer is {colour}. "
             f"The {topic} and the sky: the sky is blue."}
    for topic, colour in zip(_TOPIC_WORDS[:6], _COLOURS[:6])
]

# One document longer than the tiny config's chunk_size, so it is cut into several chunks.
LONG_DOCUMENT = " ".join(f"The {topic} is {colour}." for topic, colour in zip(_TOPIC_WORDS, _COLOURS)) * 2


def write_kb(path_or_dir: Path | str, kind: str = "jsonl", documents: list[dict[str, Any]] | None = None) -> Path:
    """Writes a knowledge base: `jsonl` ({"text", "title", "id"} rows), `json` (a list of strings) or `folder`
    (one .txt/.md file per document, in sub-folders too). Returns the path to use as `input_path`."""
    docs = documents if documents is not None else DOCUMENTS + [{"id": "long", "text": LONG_DOCUMENT}]
    path = Path(path_or_dir)
    if kind == "jsonl":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    elif kind == "json":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([d["text"] for d in docs]), encoding="utf-8")
    elif kind == "folder":
        for i, doc in enumerate(docs):
            sub = path / ("notes" if i % 2 else "")
            sub.mkdir(parents=True, exist_ok=True)
            name = f"{i:02d}-{doc.get('id', i)}{'.md' if i % 3 == 0 else '.txt'}"
            (sub / name).write_text(doc["text"], encoding="utf-8")
    else:
        raise ValueError(f"unknown knowledge-base kind {kind!r}")
    return path


def write_chat_rows(path: Path | str, n: int = 6) -> Path:
    """Already annotated input: chat rows {"messages": [...]}, which skip the self-annotation stage."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        topic, colour = _TOPIC_WORDS[i % len(_TOPIC_WORDS)], _COLOURS[i % len(_COLOURS)]
        rows.append({"messages": [{"role": "user", "content": f"What colour is the {topic}?"},
                                  {"role": "assistant", "content": f"The {topic} is {colour}."}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_kbalign_config(model_dir: Path | str, input_path: Path | str, **overrides: Any) -> dict[str, Any]:
    """A config for the tiny random Llama: filters relaxed so its babble can pass, small counts and lengths."""
    config: dict[str, Any] = {
        "model_name_or_path": str(model_dir),
        "input_path": str(input_path),
        "output_dir": "output/kbalign",
        "use_lora": True,
        "iter_num": 2,
        "max_chunks": 8,
        "pairs_per_chunk": 2,
        "long_pairs": 4,
        "long_questions_per_cluster": 2,
        "long_answer_passages": 2,
        "max_attempts": 1,
        "chunk_size": 120,
        "chunk_overlap": 20,
        "cluster_size": 3,
        "retrieval_top_k": 2,
        "eval_max_questions": 3,
        "max_new_tokens": 12,
        "temperature": 0.7,
        "top_p": 0.9,
        "do_sample": True,
        "generation_batch_size": 8,
        "require_question_mark": False,
        "min_question_words": 1,
        "max_question_words": 500,
        "min_answer_words": 1,
        "max_answer_words": 500,
        "reject_no_answer": False,
        "learning_rate": 1e-2,
        "num_train_epochs": 30,
        "per_device_train_batch_size": 2,
        "max_steps": 12,  # per round
        "max_length": 256,
        "logging_steps": 1,
    }
    config.update(overrides)
    return config


def write_general_rows(path: Path | str, n: int = 12) -> Path:
    """General-domain chat rows (arithmetic), the kind a user mixes in to keep the model's general abilities."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"messages": [{"role": "user", "content": f"What is {i} plus {i + 1}?"},
                          {"role": "assistant", "content": f"{i} plus {i + 1} is {2 * i + 1}."}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
