"""Self-verification before round k >= 2 (reference: verify/gen_iterate_verify.py), training code path only.

For each pair of part k the *current* model drafts an answer to the question with the passages retrieved for it
(greedy), then a teacher pass (the same model, shown the reference answer so its verdict is grounded) critiques the
draft: "The student response is correct/wrong because ...", with an error type. The critique is checked, redacted
and, where the model's is unusable, templated (`critique.build_critique`). Round k then trains on
(question + passages -> draft -> "verify the response above") -> critique: the reference answer appears nowhere in
what is trained on. Everything is logged to `annotations/round_<k>_verification.jsonl`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from trainers.kbalign.critique import build_critique
from trainers.kbalign.pairs import Pair
from trainers.kbalign.prompts import CRITIQUE_PREFILL, TEACHER_REQUEST
from trainers.kbalign.records import RecordBuilder
from trainers.kbalign.runtime import Runtime
from trainers.kbalign.state import ItemLog


def stage_name(round_no: int) -> str:
    return f"verify_round_{round_no}"


def verification_log(rt: Runtime, round_no: int) -> ItemLog:
    return ItemLog(rt.annotations / f"round_{round_no}_verification.jsonl", writer=rt.ranks.keeps_state)


def verify(rt: Runtime, round_no: int, part: list[Pair], builder: RecordBuilder) -> tuple[list[dict[str, Any]], dict]:
    """The verification log rows of part k (one per pair, in order) and their stats."""
    name = stage_name(round_no)
    log = verification_log(rt, round_no)
    rows = log.resume(len(part) if rt.state.finished(name) else rt.state.progress(name))
    if rt.state.finished(name):
        return rows, rt.state.result(name)
    threshold = rt.config.verify_overlap_threshold

    def work(items: list[int]) -> list[dict[str, Any]]:
        pairs = [part[i] for i in items]
        prompts = [builder.question_prompt(p, p.retrieved) for p in pairs]
        drafts = [d.strip() for d in rt.generate(prompts)]
        teacher = [builder.question_prompt(p, p.retrieved, after=[
            {"role": "assistant", "content": d},
            {"role": "user", "content": TEACHER_REQUEST.format(reference=p.answer)}]) for p, d in zip(pairs, drafts)]
        replies = rt.generate(teacher, prefills=CRITIQUE_PREFILL)
        out = []
        for pair, draft, reply in zip(pairs, drafts, replies):
            critique = build_critique(CRITIQUE_PREFILL + reply, pair.question, draft, pair.answer, threshold)
            out.append({"draft": draft, "critique_raw": CRITIQUE_PREFILL + reply, **critique.to_json()})
        return out

    def commit(done: list[tuple[int, dict[str, Any]]]) -> None:
        lines = [{"item": item, "line": part[item].line, "question": part[item].question,
                  "reference": part[item].answer, "passages": part[item].retrieved, **result}
                 for item, result in done]
        log.append(lines)
        rows.extend(lines)

    rt.run_items(name, len(part), work, commit, progress=lambda: {"correct": sum(r["correct"] for r in rows)})
    stats = {
        "checked": len(rows), "correct": sum(r["correct"] for r in rows),
        "verdict_sources": dict(Counter(r["verdict_source"] for r in rows)),
        "critique_sources": dict(Counter(r["critique_source"] for r in rows)),
        "error_types": dict(Counter(r["error_type"] for r in rows)),
    }
    rt.log(f"{name}: {stats['correct']}/{stats['checked']} drafts judged correct; verdicts "
           f"{stats['verdict_sources']}, critiques {stats['critique_sources']}")
    rt.state.finish(name, stats)
    return rows, stats
