"""Annotated question-answer pairs: where they came from, which round trains them, whether their training prompt
carries retrieved passages. Cheap to import (no torch)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from trainers.kbalign.kb import Chunk

Messages = list[dict[str, str]]


@dataclass
class Pair:
    grain: str  # "short" (one chunk), "long" (a cluster of chunks) or "chat" (an annotated input row)
    question: str
    answer: str
    chunk_ids: list[str] = field(default_factory=list)  # the chunks it was annotated from
    messages: Messages | None = None  # chat rows: the turns before the answer
    line: int = 0  # its line in annotations/pairs.jsonl (or in the input, for chat rows): named by fit messages
    part: int = 0  # the round that trains it (1..iter_num); 0: held out for evaluation
    rag: bool = False  # its training prompt carries the passages retrieved for its question
    retrieved: list[int] = field(default_factory=list)  # chunk indices, best first
    input_line: int = 0  # chat rows: the row's line in input_path

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"grain": self.grain, "question": self.question, "answer": self.answer,
                               "part": self.part, "rag": self.rag}
        if self.chunk_ids:
            out["chunk_ids"] = self.chunk_ids
        if self.messages is not None:
            out["messages"] = self.messages
        if self.retrieved:
            out["retrieved"] = self.retrieved
        if self.input_line:
            out["input_line"] = self.input_line
        return out

    @classmethod
    def from_json(cls, row: dict[str, Any], line: int) -> "Pair":
        return cls(row["grain"], row["question"], row["answer"], list(row.get("chunk_ids", [])),
                   row.get("messages"), line, int(row.get("part", 0)), bool(row.get("rag", False)),
                   list(row.get("retrieved", [])), int(row.get("input_line", 0)))


def passage_text(chunk: Chunk) -> str:
    return f"{chunk.title}: {chunk.text}" if chunk.title else chunk.text


def pairs_from_chat_rows(rows: list[Any], lines: list[int]) -> list[Pair]:
    """Annotated input: each chat row's last assistant message is the reference answer to the turns before it."""
    from trainers.sft.data import split_chat

    pairs = []
    for row, line in zip(rows, lines):
        prompt, completion = split_chat(row)
        question = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), prompt[-1]["content"])
        pairs.append(Pair("chat", question, completion[0]["content"], messages=prompt, line=line, input_line=line))
    return pairs


def split_parts(pairs: list[Pair], parts: int, seed: int) -> list[list[Pair]]:
    """`parts` non-empty parts (fewer when there are fewer pairs), the reference code's round-robin split
    (split_verify.py: `lines[i::num]`) done grain by grain after a seeded shuffle, so every part has its share of
    short and long pairs; the count runs on across grains."""
    parts = max(1, min(parts, len(pairs)))
    rng = random.Random(seed)
    out: list[list[Pair]] = [[] for _ in range(parts)]
    dealt = 0
    for grain in dict.fromkeys(p.grain for p in pairs):
        group = [p for p in pairs if p.grain == grain]
        rng.shuffle(group)
        for pair in group:
            out[dealt % parts].append(pair)
            dealt += 1
    return out


def choose_rag(n: int, ratio: float, seed: int) -> list[bool]:
    """Which of n training prompts carry retrieved passages: round(n x ratio) of them, seeded (the reference code
    flips a coin per pair; a fixed count keeps small runs at the ratio)."""
    chosen = set(random.Random(seed).sample(range(n), round(n * ratio))) if n else set()
    return [i in chosen for i in range(n)]
