"""Self-annotation, the paper's two grains (training code path only).

Short-range (reference: short_dependency/1gen_data.py): every chunk (or `max_chunks` of them, sampled evenly over
the knowledge base) is shown to the model once with a request for `pairs_per_chunk` question-answer pairs; the
reply is parsed into pairs and filtered (`parsing.QAFilter`); a chunk none of whose pairs pass is asked again, up to
`max_attempts` times. A question the model left without an answer is asked for its answer alone.

Long-range (reference: long_dependency/detail_data.py): for each cluster of related chunks the model writes
`long_questions_per_cluster` general questions over the cluster's passages; each question is answered against each
of the cluster's `long_answer_passages` passages most similar to it ("none" when a passage does not answer it), and
the answers that say something are merged by the model into one ("the answer is a concatenation of multiple
answers ... make it smoother"). At most `long_pairs` long-range pairs are kept.

Every generation is written to `annotations/short.jsonl` / `long.jsonl` with what was parsed and why a pair was
kept or not; the pairs are read back from those files, so a resumed run continues from them.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from trainers.kbalign.embedder import top_k
from trainers.kbalign.kb import Chunk
from trainers.common.generation import chat_prompt_text, trim_to_tokens
from trainers.kbalign.pairs import Pair, passage_text
from trainers.kbalign.parsing import (
    QAFilter, parse_answer, parse_qa_pairs, parse_questions, question_key, says_no_answer,
)
from trainers.kbalign.prompts import (
    ANSWER_PREFILL, LONG_ANSWER_PROMPT, LONG_QUESTION_REQUEST, MERGE_PROMPT, QUESTION_PREFILL, SHORT_PROMPT,
)
from trainers.kbalign.runtime import Runtime
from trainers.kbalign.state import ItemLog

SHORT, LONG = "annotate_short", "annotate_long"


def _passage_budget(rt: Runtime, template: str, prefill: str) -> int:
    """Tokens left for a passage in a one-passage prompt once the template and the reply are counted."""
    skeleton = [{"role": "user", "content": template}]
    used = rt.tokens(chat_prompt_text(rt.tokenizer, skeleton, prefill))
    return max(16, rt.config.max_length - rt.config.max_new_tokens - used - 8)


def _kept_pairs(rows: list[dict[str, Any]], grain: str) -> list[Pair]:
    pairs = []
    for row in rows:
        for cand in row.get("pairs", []):
            if cand.get("kept"):
                pairs.append(Pair(grain, cand["question"], cand["answer"], list(cand.get("chunk_ids")
                                                                                 or row["chunk_ids"])))
    return pairs


def _rejections(rows: list[dict[str, Any]]) -> Counter:
    return Counter(cand["reason"] for row in rows for cand in row.get("pairs", []) if not cand.get("kept"))


class Deduplicator:
    """Questions already kept (short and long alike): case, spacing and punctuation do not make one new."""

    def __init__(self, pairs: list[Pair] = ()):
        self.seen = {question_key(p.question) for p in pairs}

    def admit(self, question: str) -> bool:
        key = question_key(question)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


# --- short-range -------------------------------------------------------------------------------------------------

def annotate_short(rt: Runtime, chunks: list[Chunk], selected: list[int],
                   dedup: Deduplicator) -> tuple[list[Pair], dict]:
    """Pairs from each selected chunk (indices into chunks); returns (kept pairs, stats)."""
    c = rt.config
    qa_filter = QAFilter.from_config(c)
    log = ItemLog(rt.annotations / "short.jsonl", writer=rt.ranks.keeps_state)
    total = len(selected)
    rows = log.resume(total if rt.state.finished(SHORT) else rt.state.progress(SHORT))
    for pair in _kept_pairs(rows, "short"):
        dedup.admit(pair.question)
    if rt.state.finished(SHORT):
        return _kept_pairs(rows, "short"), rt.state.result(SHORT)

    budget = _passage_budget(rt, SHORT_PROMPT.format(n=c.pairs_per_chunk, passage=""), QUESTION_PREFILL)

    def prompt(chunk: Chunk) -> list[dict[str, str]]:
        passage = trim_to_tokens(rt.tokenizer, passage_text(chunk), budget)
        return [{"role": "user", "content": SHORT_PROMPT.format(n=c.pairs_per_chunk, passage=passage)}]

    def work(items: list[int]) -> list[list[dict[str, Any]]]:
        generations: dict[int, list[dict[str, Any]]] = {i: [] for i in items}
        pending = list(items)
        for attempt in range(1, c.max_attempts + 1):
            if not pending:
                break
            conversations = [prompt(chunks[selected[i]]) for i in pending]
            raws = rt.generate(conversations, prefills=QUESTION_PREFILL, sample=True)
            parsed = [parse_qa_pairs(QUESTION_PREFILL + raw) for raw in raws]
            asked = _ask_missing_answers(rt, conversations, parsed)
            still = []
            for k, item in enumerate(pending):
                candidates = [{"question": q, "answer": a, "answer_asked_separately": (k, j) in asked,
                               "reason": qa_filter.reject_reason(q, a)} for j, (q, a) in enumerate(parsed[k])]
                generations[item].append({"attempt": attempt, "raw": QUESTION_PREFILL + raws[k],
                                          "pairs": candidates})
                if not any(cand["reason"] is None for cand in candidates):
                    still.append(item)
            pending = still
        return [generations[i] for i in items]

    def commit(done: list[tuple[int, list[dict[str, Any]]]]) -> None:
        lines = []
        for item, generations in done:
            chunk = chunks[selected[item]]
            kept_here = 0
            for generation in generations:
                for cand in generation["pairs"]:
                    if cand["reason"] is None and kept_here >= c.pairs_per_chunk:
                        cand["reason"] = "over pairs_per_chunk"
                    if cand["reason"] is None and not dedup.admit(cand["question"]):
                        cand["reason"] = "duplicate question"
                    cand["kept"] = cand["reason"] is None
                    kept_here += cand["kept"]
                lines.append({"item": item, "chunk": selected[item], "chunk_ids": [chunk.id], **generation})
        log.append(lines)
        rows.extend(lines)

    rt.run_items(SHORT, total, work, commit, progress=lambda: {"pairs": len(_kept_pairs(rows, "short"))})
    pairs = _kept_pairs(rows, "short")
    annotated = {row["item"] for row in rows}
    with_pairs = {row["item"] for row in rows if any(cand.get("kept") for cand in row["pairs"])}
    stats = {
        "chunks": len(chunks), "chunks_annotated": len(annotated), "sampled": len(selected) < len(chunks),
        "pairs_per_chunk": c.pairs_per_chunk, "generations": len(rows),
        "candidates": sum(len(row["pairs"]) for row in rows), "kept": len(pairs),
        "chunks_without_pairs": len(annotated - with_pairs),
        "answers_asked_separately": sum(cand.get("answer_asked_separately", False) for row in rows
                                        for cand in row["pairs"]),
        "rejected": dict(_rejections(rows).most_common()),
    }
    rt.log(f"{SHORT}: kept {len(pairs)} pairs from {len(annotated)} chunks ({len(rows)} generations)"
           + (f"; rejected: {stats['rejected']}" if stats["rejected"] else ""))
    rt.state.finish(SHORT, stats)
    return pairs, stats


def _ask_missing_answers(rt: Runtime, conversations, parsed: list[list[tuple[str, str | None]]]) -> set:
    """Questions the model wrote without an answer: the answer alone is asked for (the question forced as the
    reply's start). Fills `parsed` in place; returns the (reply, pair) positions asked."""
    missing = [(k, j) for k, pairs in enumerate(parsed) for j, (q, a) in enumerate(pairs) if q and a is None]
    if not missing:
        return set()
    prefills = [f"{QUESTION_PREFILL} {parsed[k][j][0]}\n{ANSWER_PREFILL}" for k, j in missing]
    replies = rt.generate([conversations[k] for k, _ in missing], prefills=prefills, sample=True)
    for (k, j), reply in zip(missing, replies):
        parsed[k][j] = (parsed[k][j][0], parse_answer(reply))
    return set(missing)


# --- long-range --------------------------------------------------------------------------------------------------

def annotate_long(rt: Runtime, chunks: list[Chunk], clusters: list[list[int]], vectors: np.ndarray,
                  dedup: Deduplicator) -> tuple[list[Pair], dict]:
    """Pairs over clusters of related chunks; returns (kept pairs, stats)."""
    from trainers.common.prompt_fit import PromptFitter

    c = rt.config
    qa_filter = QAFilter.from_config(c)
    log = ItemLog(rt.annotations / "long.jsonl", writer=rt.ranks.keeps_state)
    total = min(len(clusters), math.ceil(c.long_pairs / c.long_questions_per_cluster))
    rows = log.resume(total if rt.state.finished(LONG) else rt.state.progress(LONG))
    for pair in _kept_pairs(rows, "long"):
        dedup.admit(pair.question)
    if rt.state.finished(LONG):
        return _kept_pairs(rows, "long"), rt.state.result(LONG)

    question_fitter = PromptFitter(rt.tokenizer, max(16, c.max_length - c.max_new_tokens - 8))
    request = LONG_QUESTION_REQUEST.format(n=c.long_questions_per_cluster)
    answer_budget = _passage_budget(rt, LONG_ANSWER_PROMPT.format(passage="", question=""), ANSWER_PREFILL)

    def answer_prompt(chunk: Chunk, question: str) -> list[dict[str, str]]:
        passage = trim_to_tokens(rt.tokenizer, passage_text(chunk), answer_budget - rt.tokens(question))
        return [{"role": "user", "content": LONG_ANSWER_PROMPT.format(passage=passage, question=question)}]

    def work(items: list[int]) -> list[dict[str, Any]]:
        members = [clusters[i] for i in items]
        prompts = [question_fitter.fit(request, [passage_text(chunks[j]) for j in m], []).prompt for m in members]
        raws = rt.generate(prompts, prefills=QUESTION_PREFILL, sample=True)
        results = []
        asks: list[tuple[int, int, int]] = []  # (result, question, chunk)
        for m, raw in zip(members, raws):
            questions = []
            for question in parse_questions(QUESTION_PREFILL + raw)[:c.long_questions_per_cluster]:
                questions.append({"question": question, "reason": qa_filter.question_reason(question)})
            results.append({"raw_questions": QUESTION_PREFILL + raw, "questions": questions})
        wanted = [(r, q) for r, res in enumerate(results) for q, entry in enumerate(res["questions"])
                  if entry["reason"] is None]
        if wanted:
            vectors_q = rt.get_embedder().encode([results[r]["questions"][q]["question"] for r, q in wanted])
            for (r, q), vector in zip(wanted, vectors_q):
                nearest = top_k(vector[None, :], vectors, c.long_answer_passages, among=members[r])[0]
                results[r]["questions"][q]["answers"] = []
                asks += [(r, q, j) for j in nearest]
        replies = rt.generate([answer_prompt(chunks[j], results[r]["questions"][q]["question"]) for r, q, j in asks],
                              prefills=ANSWER_PREFILL) if asks else []
        for (r, q, j), reply in zip(asks, replies):
            answer = parse_answer(reply)
            results[r]["questions"][q]["answers"].append(
                {"chunk_id": chunks[j].id, "answer": answer, "used": bool(answer) and not says_no_answer(answer)})
        _merge_answers(rt, results, qa_filter)
        return results

    kept_so_far = [len(_kept_pairs(rows, "long"))]

    def commit(done: list[tuple[int, dict[str, Any]]]) -> None:
        lines = []
        for item, result in done:
            pairs = []
            for entry in result["questions"]:
                if entry["reason"] is None and kept_so_far[0] >= c.long_pairs:
                    entry["reason"] = "over long_pairs"
                if entry["reason"] is None and not dedup.admit(entry["question"]):
                    entry["reason"] = "duplicate question"
                used = [a["chunk_id"] for a in entry.get("answers", []) if a["used"]]
                pairs.append({"question": entry["question"], "answer": entry.get("answer"), "chunk_ids": used,
                              "kept": entry["reason"] is None, "reason": entry["reason"]})
                kept_so_far[0] += entry["reason"] is None
            lines.append({"item": item, "chunk_ids": [chunks[j].id for j in clusters[item]],
                          "raw_questions": result["raw_questions"], "questions": result["questions"], "pairs": pairs})
        log.append(lines)
        rows.extend(lines)

    rt.run_items(LONG, total, work, commit, progress=lambda: {"pairs": len(_kept_pairs(rows, "long"))})
    pairs = _kept_pairs(rows, "long")
    stats = {
        "clusters_annotated": len(rows), "questions": sum(len(row["questions"]) for row in rows),
        "answers_asked": sum(len(q.get("answers", [])) for row in rows for q in row["questions"]),
        "answers_merged": sum(q.get("answer_source") == "merged" for row in rows for q in row["questions"]),
        "kept": len(pairs), "rejected": dict(_rejections(rows).most_common()),
    }
    rt.log(f"{LONG}: kept {len(pairs)} pairs from {len(rows)} clusters"
           + (f"; rejected: {stats['rejected']}" if stats["rejected"] else ""))
    rt.state.finish(LONG, stats)
    return pairs, stats


def _merge_answers(rt: Runtime, results: list[dict[str, Any]], qa_filter: QAFilter) -> None:
    """Each question's usable answers merged into one (one answer is taken as it is); sets answer, answer_source and
    the question's reason."""
    merges = []
    for res in results:
        for entry in res["questions"]:
            if entry["reason"] is not None:
                continue
            used = [a["answer"] for a in entry["answers"] if a["used"]]
            if not used:
                entry["reason"] = "no passage answers it"
            elif len(used) == 1:
                entry.update(answer=used[0], answer_source="single")
            else:
                entry["answer"] = " ".join(used)
                merges.append(entry)
    if merges:
        prompts = [[{"role": "user", "content": MERGE_PROMPT.format(question=e["question"], answer=e["answer"])}]
                   for e in merges]
        for entry, reply in zip(merges, rt.generate(prompts, prefills=ANSWER_PREFILL)):
            merged = parse_answer(reply)
            entry["merged_raw"] = ANSWER_PREFILL + reply
            if qa_filter.answer_reason(merged) is None:
                entry.update(answer=merged, answer_source="merged")
            else:  # the model's merge failed the filters: the answers side by side are still an answer
                entry["answer_source"] = "concatenated"
    for res in results:
        for entry in res["questions"]:
            if entry["reason"] is None:
                entry["reason"] = qa_filter.answer_reason(entry.get("answer"))
