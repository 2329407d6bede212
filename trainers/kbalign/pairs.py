"""Annotated question-answer pairs, their split into tuning rounds, and the trl records built from them.
Cheap to import (no torch)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

from trainers.common.rag_prompt import build_rag_prompt
from trainers.kbalign.kb import Chunk
from trainers.kbalign.prompts import CHECK_REQUEST, feedback_completion

Messages = list[dict[str, str]]


@dataclass
class Pair:
    grain: str  # "short" (one chunk), "long" (a group of related chunks) or "chat" (an annotated input row)
    question: str
    answer: str
    chunk_ids: list[str] = field(default_factory=list)
    passages: list[str] = field(default_factory=list)
    messages: Messages | None = None  # chat rows: the turns before the answer

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"grain": self.grain, "question": self.question, "answer": self.answer}
        if self.chunk_ids:
            out["chunk_ids"] = self.chunk_ids
        return out


def passage_text(chunk: Chunk) -> str:
    return f"{chunk.title}: {chunk.text}" if chunk.title else chunk.text


def pair_from_chunks(grain: str, question: str, answer: str, chunks: list[Chunk]) -> Pair:
    return Pair(grain, question, answer, [c.id for c in chunks], [passage_text(c) for c in chunks])


def pairs_from_chat_rows(rows: list[Any]) -> list[Pair]:
    """Annotated input: each chat row's last assistant message is the reference answer to the turns before it."""
    from trainers.sft.data import to_record

    pairs = []
    for row in rows:
        record = to_record(row)
        prompt = record["prompt"]
        question = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), prompt[-1]["content"])
        pairs.append(Pair("chat", question, record["completion"][0]["content"], messages=prompt))
    return pairs


def prompt_messages(pair: Pair, with_context: bool, fit: Callable[[Pair], list[str]] | None = None) -> Messages:
    """The question as the model is asked it: the chat turns, a RAG prompt over the source chunk(s), or the bare
    question (closed-book). `fit` shortens the passages to the token budget."""
    if pair.messages is not None:
        return [dict(m) for m in pair.messages]
    passages = (fit(pair) if fit else pair.passages) if with_context else []
    return [{"role": "user", "content": build_rag_prompt(pair.question, passages)}]


def qa_record(prompt: Messages, answer: str) -> dict[str, Any]:
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": answer}]}


def verification_record(prompt: Messages, draft: str, correct: bool, reference: str) -> dict[str, Any]:
    """The model's own draft, the request to check it, then the feedback and the corrected (reference) answer."""
    turns = prompt + [{"role": "assistant", "content": draft}, {"role": "user", "content": CHECK_REQUEST}]
    return {"prompt": turns, "completion": [{"role": "assistant", "content": feedback_completion(correct, reference)}]}


def split_parts(pairs: list[Pair], parts: int, seed: int) -> list[list[Pair]]:
    """`parts` non-empty parts (fewer when there are fewer pairs), each with a share of every grain: the pairs of
    each grain are shuffled and dealt out round-robin, the count running on across grains."""
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
