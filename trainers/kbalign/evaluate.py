"""KB-QA evaluation: held-out questions about the knowledge base answered greedily by the base model (before round
1) and after every round, scored against their reference answers by exact match (SQuAD-normalised) and token F1.

Settings (`eval_mode`): "rag" asks with the passages retrieved from the knowledge base for the question (what the
RAG stack sends), "closed_book" with the question alone; "both" reports each. Predictions go to
`annotations/eval_predictions_<phase>.jsonl`; the scores into the summary's `eval` and an `eval` metric event.
The base model's and the last round's answers also fill the predictions file every LM type writes
(trainers.common.predictions: predictions.jsonl with ROUGE-L too, `predict` metric events). Training code path only.
"""

from __future__ import annotations

from typing import Any

from trainers.common.predictions import Predictions, PredictRow
from trainers.kbalign.pairs import Pair
from trainers.kbalign.records import RecordBuilder
from trainers.kbalign.runtime import Runtime
from trainers.kbalign.scoring import exact_match, mean_scores, overlap_f1
from trainers.kbalign.state import ItemLog

RAG, CLOSED_BOOK = "rag", "closed_book"


def settings(eval_mode: str, has_knowledge_base: bool) -> list[str]:
    """The settings evaluated: RAG needs a knowledge base to retrieve from (annotated chat input has none)."""
    wanted = [RAG, CLOSED_BOOK] if eval_mode == "both" else [eval_mode]
    return [s for s in wanted if s != RAG or has_knowledge_base] or [CLOSED_BOOK]


def stage_name(phase: str) -> str:
    return f"eval_{phase}"


def evaluate(rt: Runtime, phase: str, questions: list[Pair], builder: RecordBuilder, modes: list[str],
             step: int) -> dict[str, Any] | None:
    """Scores of the current model on the held-out questions ({"questions", "<setting>_exact_match",
    "<setting>_f1"}), also emitted as an `eval` metric event; None when there are no questions."""
    if not questions:
        return None
    name = stage_name(phase)
    log = ItemLog(rt.annotations / f"eval_predictions_{phase}.jsonl", writer=rt.ranks.keeps_state)
    rows = log.resume(len(questions) if rt.state.finished(name) else rt.state.progress(name))
    if not rt.state.finished(name):
        def work(items: list[int]) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = [{} for _ in items]
            for mode in modes:
                prompts = [builder.question_prompt(questions[i], questions[i].retrieved if mode == RAG else [])
                           for i in items]
                for row, answer in zip(out, rt.generate(prompts)):
                    row[mode] = answer.strip()
            return out

        def commit(done: list[tuple[int, dict[str, Any]]]) -> None:
            lines = []
            for item, answers in done:
                reference = questions[item].answer
                line: dict[str, Any] = {"item": item, "question": questions[item].question, "reference": reference}
                for mode, answer in answers.items():
                    line[mode] = {"answer": answer, "exact_match": exact_match(answer, reference),
                                  "f1": round(overlap_f1(answer, reference), 4)}
                lines.append(line)
            log.append(lines)
            rows.extend(lines)

        rt.run_items(name, len(questions), work, commit)
        result: dict[str, Any] = {"questions": len(rows)}
        for mode in modes:
            scores = mean_scores((row[mode]["answer"], row["reference"]) for row in rows)
            result.update({f"{mode}_{key}": value for key, value in scores.items()})
        rt.state.finish(name, result)
    result = rt.state.result(name)
    rt.emitter.emit("eval", phase=phase, step=step, **result)
    return result


def _answers(rt: Runtime, phase: str, mode: str, n: int) -> list[str]:
    """A finished phase's answers in the given setting, in question order, read back from its predictions file."""
    rows = {row["item"]: row for row in ItemLog(rt.annotations / f"eval_predictions_{phase}.jsonl",
                                                writer=False).resume(n)}
    return [rows[i][mode]["answer"] for i in range(n)]


def write_predictions(rt: Runtime, questions: list[Pair], builder: RecordBuilder, modes: list[str], last_phase: str,
                      *, source: str, step: int) -> dict[str, Any] | None:
    """predictions.jsonl and predictions_summary.json in the output directory from the answers this evaluation
    generated: the base model's as "before", `last_phase`'s as "after", in the first setting evaluated (RAG when
    there is a knowledge base). The predictions summary; None without questions (or off rank 0)."""
    if not questions or not rt.ranks.is_main:
        return None
    mode = modes[0]
    rows = [PredictRow(q.input_line or q.line or i + 1, q.question,
                       builder.question_prompt(q, q.retrieved if mode == RAG else []), q.answer)
            for i, q in enumerate(questions)]
    predictions = Predictions(rows, rt.emitter, source=source, max_new_tokens=rt.config.max_new_tokens,
                              setting=mode)
    predictions.record("before", _answers(rt, "base", mode, len(rows)), step=0)
    predictions.record("after", _answers(rt, last_phase, mode, len(rows)), step=step)
    return predictions.write(rt.out)
