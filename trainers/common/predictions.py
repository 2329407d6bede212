"""Predictions on the held-out rows: the model's greedy answers, scored against the references (exact match, token
F1, ROUGE-L; trainers.common.text_scores), after training and, with `eval_before`, before it on the same rows.

Each phase is emitted as a `predict` metric event ({"phase": "before" | "after", "predict/exact_match",
"predict/token_f1", "predict/rouge_l", "predict/rows"}), so the task's metrics hold the scores and the console can
show before -> after; `write()` leaves in the output directory
  predictions.jsonl          one line per row: line, question, prompt, reference, prediction, scores
                             (and "before": {prediction, scores} when the base model was scored)
  predictions_summary.json   the mean scores of each phase, the row count, where the rows came from.
sft and dpo generate through the training skeleton (trainers.common.workflow); KBAlign hands in the answers its own
KB-QA evaluation generated (trainers.kbalign.train).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainers.common.metrics import MetricsEmitter
from trainers.common.text_scores import SCORE_NAMES, answer_scores, mean_answer_scores

PREDICTIONS_FILE = "predictions.jsonl"
SUMMARY_FILE = "predictions_summary.json"
EVENT = "predict"
PHASES = ("before", "after")

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class PredictRow:
    """A held-out row as it is asked: its line in the file, the question as the user wrote it, the prompt the model
    gets (the RAG prompt the task trained on, fitted into max_length) and the reference answer."""

    line: int
    question: str
    prompt: Messages
    reference: str


def metric_key(score: str) -> str:
    return f"{EVENT}/{score}"


class Predictions:
    """The answers of each phase for one task's held-out rows; see the module's docstring."""

    def __init__(self, rows: list[PredictRow], emitter: MetricsEmitter, *, source: str, max_new_tokens: int,
                 setting: str | None = None):
        self.rows, self.emitter = rows, emitter
        self.source, self.max_new_tokens, self.setting = source, max_new_tokens, setting
        self.answers: dict[str, list[str]] = {}
        self.scores: dict[str, list[dict[str, float]]] = {}

    def generate(self, phase: str, model, tokenizer, *, max_prompt_tokens: int, batch_size: int,
                 compute_dtype=None, step: int = 0) -> dict[str, float]:
        """Answers every row greedily with `model`, then `record`s them."""
        from trainers.common.generation import generate

        answers = generate(model, tokenizer, [r.prompt for r in self.rows], max_new_tokens=self.max_new_tokens,
                           max_prompt_tokens=max_prompt_tokens, batch_size=batch_size, compute_dtype=compute_dtype)
        return self.record(phase, answers, step=step)

    def record(self, phase: str, answers: list[str], *, step: int = 0) -> dict[str, float]:
        """Scores one phase's answers (one per row, in order) and emits the means as a `predict` event."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if len(answers) != len(self.rows):
            raise ValueError(f"{len(answers)} answers for {len(self.rows)} rows")
        self.answers[phase] = [a.strip() for a in answers]
        self.scores[phase] = [answer_scores(a, r.reference) for a, r in zip(self.answers[phase], self.rows)]
        means = self.means(phase)
        self.emitter.emit(EVENT, phase=phase, step=step, **{metric_key("rows"): len(self.rows)},
                          **{metric_key(name): value for name, value in means.items()})
        return means

    def means(self, phase: str) -> dict[str, float]:
        return mean_answer_scores(self.scores[phase])

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rows": len(self.rows), "source": self.source, "max_new_tokens": self.max_new_tokens,
                               "scores": list(SCORE_NAMES)}
        if self.setting:
            out["setting"] = self.setting
        for phase in PHASES:
            if phase in self.scores:
                out[phase] = self.means(phase)
        return out

    def write(self, out_dir: Path | str) -> dict[str, Any]:
        """predictions.jsonl and predictions_summary.json into `out_dir` (after the "after" phase); the summary."""
        if "after" not in self.answers:
            raise ValueError("write() needs the answers after training")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with (out_dir / PREDICTIONS_FILE).open("w", encoding="utf-8") as handle:
            for i, row in enumerate(self.rows):
                line: dict[str, Any] = {"line": row.line, "question": row.question, "prompt": row.prompt,
                                        "reference": row.reference, "prediction": self.answers["after"][i],
                                        "scores": self.scores["after"][i]}
                if "before" in self.answers:
                    line["before"] = {"prediction": self.answers["before"][i], "scores": self.scores["before"][i]}
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        summary = self.summary()
        (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return summary


def last_user_text(prompt: Messages) -> str:
    """The question of a chat prompt: its last user turn."""
    return next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), "")
