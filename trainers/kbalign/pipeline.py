"""From the knowledge base to the pairs each round trains on, stage by stage (training code path only):

embedding       every chunk embedded (sentence-transformers, or the tuned model's hidden states), kept in
                stages/chunk_embeddings.npy for clustering and retrieval
annotate_short  several pairs per chunk over all chunks (max_chunks, sampled evenly) -> annotations/short.jsonl
clustering      MiniBatchKMeans over the chunk embeddings -> annotations/clusters.jsonl
annotate_long   questions per cluster, answered passage by passage and merged -> annotations/long.jsonl
split           held-out evaluation questions, the rounds' parts, which training prompts carry retrieved passages,
                and the passages retrieved for every question -> annotations/pairs.jsonl, eval_questions.jsonl

Annotated chat input skips everything but the split. After each stage `boundary(stage)` lets the run snapshot its
state and honour a stop request.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from trainers.common.eval_split import split_eval
from trainers.errors import TrainerError
from trainers.kbalign.annotate import LONG, SHORT, Deduplicator, annotate_long, annotate_short
from trainers.kbalign.clustering import cluster_chunks
from trainers.kbalign.embedder import top_k
from trainers.kbalign.kb import KnowledgeBase, sample_evenly
from trainers.kbalign.pairs import Pair, choose_rag, pairs_from_chat_rows, passage_text, split_parts
from trainers.kbalign.parsing import QAFilter
from trainers.kbalign.runtime import Runtime
from trainers.kbalign.state import STATE_DIR

EMBEDDING, CLUSTERING, SPLIT = "embedding", "clustering", "split"
PAIRS_FILE, EVAL_FILE = "pairs.jsonl", "eval_questions.jsonl"


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def embed_chunks(rt: Runtime, kb: KnowledgeBase) -> np.ndarray:
    """The chunk embeddings (rows L2-normalised), computed once and kept for the rest of the run (a resumed run
    reads them back)."""
    path = rt.out / STATE_DIR / "chunk_embeddings.npy"
    if "chunk_vectors" in rt.extra:
        return rt.extra["chunk_vectors"]
    if rt.state.finished(EMBEDDING):
        rt.extra["chunk_vectors"] = np.load(path)
        return rt.extra["chunk_vectors"]
    embedder = rt.get_embedder()
    parts: list[np.ndarray] = []

    def work(items: list[int]) -> list[np.ndarray]:
        return list(embedder.encode([passage_text(kb.chunks[i]) for i in items]))

    rt.state.data["progress"].pop(EMBEDDING, None)  # embeddings are not kept per step: a stopped stage starts over
    rt.run_items(EMBEDDING, len(kb.chunks), work, lambda done: parts.extend(v for _, v in done), stoppable=False,
                 progress=lambda: {"source": embedder.source})
    vectors = np.stack(parts).astype(np.float32)
    if rt.ranks.keeps_state:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    rt.state.finish(EMBEDDING, {**embedder.describe(), "dimension": int(vectors.shape[1]), "chunks": len(vectors)})
    rt.extra["chunk_vectors"] = vectors
    return vectors


def cluster_stage(rt: Runtime, kb: KnowledgeBase, vectors: np.ndarray) -> list[list[int]]:
    path = rt.annotations / "clusters.jsonl"
    if rt.state.finished(CLUSTERING):
        return [row["chunks"] for row in _read_jsonl(path)]
    rt.stage(CLUSTERING, 0, len(kb.chunks))
    clusters, stats = rt.ranks.from_main(cluster_chunks(vectors, rt.config.cluster_size, rt.config.seed))
    if rt.ranks.keeps_state:
        _write_jsonl(path, [{"cluster": i, "chunks": members, "chunk_ids": [kb.chunks[j].id for j in members]}
                            for i, members in enumerate(clusters)])
    rt.stage(CLUSTERING, len(kb.chunks), len(kb.chunks), **stats)
    rt.state.finish(CLUSTERING, stats)
    return clusters


def annotated_pairs(rt: Runtime, kb: KnowledgeBase, boundary: Callable[[str], None]) -> list[Pair]:
    """Every pair annotated from the knowledge base (or read from annotated chat input)."""
    c = rt.config
    if kb.annotated:
        rt.log(f"input is annotated chat rows: skipping self-annotation ({len(kb.chat_rows)} pairs)")
        return pairs_from_chat_rows(kb.chat_rows, kb.chat_lines)
    if rt.ranks.keeps_state and not rt.state.finished(EMBEDDING):  # a resumed run keeps its files as they are
        _write_jsonl(rt.annotations / "chunks.jsonl", [{"index": i, "id": ch.id, "title": ch.title,
                                                         "source": ch.source, "text": ch.text}
                                                        for i, ch in enumerate(kb.chunks)])
    vectors = embed_chunks(rt, kb)
    boundary(EMBEDDING)
    dedup = Deduplicator()
    short, _ = annotate_short(rt, kb.chunks, sample_evenly(len(kb.chunks), c.max_chunks), dedup)
    boundary(SHORT)
    long: list[Pair] = []
    if c.long_pairs > 0 and len(kb.chunks) >= 2:
        clusters = cluster_stage(rt, kb, vectors)
        boundary(CLUSTERING)
        long, _ = annotate_long(rt, kb.chunks, clusters, vectors, dedup)
        boundary(LONG)
    elif c.long_pairs > 0 and not rt.state.finished(LONG):
        rt.log(f"{LONG}: skipped, the knowledge base has a single chunk")
        rt.stage(LONG, 0, 0, skipped="single chunk")
        rt.state.finish(LONG, {"kept": 0, "skipped": "single chunk"})
    pairs = short + long
    if not pairs:
        _no_pairs(rt)
    return pairs


def _no_pairs(rt: Runtime) -> None:
    reasons: Counter = Counter()
    generations = 0
    for stage in (SHORT, LONG):
        result = rt.state.result(stage) or {}
        reasons.update(result.get("rejected", {}))
        generations += result.get("generations", result.get("questions", 0))
    top = ", ".join(f"{r} x{k}" for r, k in reasons.most_common(3)) or "none"
    raise TrainerError(
        f"self-annotation kept no question-answer pair: all {generations} generations failed the filters "
        f"({QAFilter.from_config(rt.config).describe()}; max_attempts={rt.config.max_attempts}); most common "
        f"rejections: {top}. Relax the filters or raise max_attempts; see {rt.annotations}")


def split(rt: Runtime, kb: KnowledgeBase, pairs: list[Pair], eval_rows: list[Any] | None,
          eval_lines: list[int] | None) -> tuple[list[Pair], list[Pair]]:
    """(training pairs, each with its part, rag choice and retrieved passages; held-out evaluation questions)."""
    c = rt.config
    pairs_path, eval_path = rt.annotations / PAIRS_FILE, rt.annotations / EVAL_FILE
    if rt.state.finished(SPLIT):
        train = [Pair.from_json(row, n) for n, row in enumerate(_read_jsonl(pairs_path), start=1)]
        held_out = [Pair.from_json(row, n) for n, row in enumerate(_read_jsonl(eval_path), start=1)]
        return train, held_out
    rt.stage(SPLIT, 0, 1)
    if eval_rows is not None:
        held_out = [Pair("eval", p.question, p.answer, line=p.line)  # the last user turn is the question
                    for p in pairs_from_chat_rows(eval_rows, eval_lines or [])]
        train, source = list(pairs), "eval_data_path"
    else:
        train, held_out = split_eval(pairs, eval_ratio=c.eval_ratio, seed=c.seed)
        source = "held out of the annotated pairs"
        train += held_out[c.eval_max_questions:]  # annotated pairs over the evaluation budget are trained on
    held_out = held_out[:c.eval_max_questions]
    parts = split_parts(train, c.iter_num, c.seed)
    train = []
    for k, part in enumerate(parts, start=1):
        for pair in part:
            pair.part = k
            train.append(pair)
    for pair, rag in zip(train, choose_rag(len(train), c.rag_ratio if not kb.annotated else 0.0, c.seed)):
        pair.rag = rag
    if not kb.annotated:
        _retrieve(rt, kb, train + held_out)
    if rt.ranks.keeps_state:
        _write_jsonl(pairs_path, [p.to_json() for p in train])
        _write_jsonl(eval_path, [{**p.to_json(), "part": 0} for p in held_out])
    for n, pair in enumerate(train, start=1):
        pair.line = n
    for n, pair in enumerate(held_out, start=1):
        pair.line = n
    stats = {"pairs": len(train), "eval_questions": len(held_out), "eval_source": source,
             "parts": [len(p) for p in parts], "rag_prompts": sum(p.rag for p in train),
             "grains": dict(Counter(p.grain for p in train))}
    if len(parts) < c.iter_num:
        rt.log(f"only {len(train)} pair(s): running {len(parts)} round(s) instead of iter_num={c.iter_num}")
    rt.stage(SPLIT, 1, 1, **{k: v for k, v in stats.items() if isinstance(v, (int, str))})
    rt.state.finish(SPLIT, stats)
    return train, held_out


def _retrieve(rt: Runtime, kb: KnowledgeBase, pairs: list[Pair]) -> None:
    """Each pair's top retrieval_top_k chunks for its question, from the whole knowledge base."""
    vectors = embed_chunks(rt, kb)
    embedder = rt.get_embedder()
    found: dict[int, list[int]] = {}

    def work(items: list[int]) -> list[list[int]]:
        queries = embedder.encode([pairs[i].question for i in items])
        return top_k(queries, vectors, rt.config.retrieval_top_k)

    rt.state.data["progress"].pop("retrieval", None)  # not kept per step: always done whole
    rt.run_items("retrieval", len(pairs), work, lambda done: found.update(done), stoppable=False,
                 batch_size=max(32, rt.config.generation_batch_size))
    rt.state.data["progress"].pop("retrieval", None)
    for i, pair in enumerate(pairs):
        pair.retrieved = found[i]

