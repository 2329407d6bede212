"""The held-out retrieval evaluation: sentence-transformers' InformationRetrievalEvaluator, run by the workflow
before and after training and by the trainer during training (where its nDCG@10 picks the best checkpoint), and the
before -> after table of the summary. Training code path only (imports sentence-transformers)."""

from __future__ import annotations

import time
from typing import Any

from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from transformers import TrainerCallback

from trainers.common.metrics import MetricsEmitter
from trainers.embedding.data import RetrievalEval

# The retrieval metrics reported before, during and after training, and compared in the summary's eval_table
# (InformationRetrievalEvaluator's names without the evaluator and similarity-function prefixes).
EVAL_METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
# The evaluator's name: every metric it returns starts with it ("heldout_cosine_ndcg@10").
EVALUATOR_NAME = "heldout"
BEST_METRIC = "ndcg@10"


def retrieval_evaluator(data: RetrievalEval, batch_size: int, truncate_dim: int | None = None
                        ) -> InformationRetrievalEvaluator:
    """The evaluator of the held-out queries. The queries already carry the query instruction, exactly as the
    training anchors do, so no model prompt is added on top (query_prompt="")."""
    return InformationRetrievalEvaluator(
        data.queries, data.corpus, data.relevant, accuracy_at_k=[1, 5, 10], precision_recall_at_k=[1, 5, 10],
        mrr_at_k=[10], ndcg_at_k=[10], map_at_k=[10], batch_size=batch_size, name=EVALUATOR_NAME, write_csv=False,
        show_progress_bar=False, truncate_dim=truncate_dim, query_prompt="", corpus_prompt="",
    )


def metric_prefix(model) -> str:
    """What the evaluator puts before each metric name for this model."""
    return f"{EVALUATOR_NAME}_{model.similarity_fn_name}_"


def best_metric_key(model) -> str:
    """The trainer's name of the evaluator's nDCG@10 (`metric_for_best_model`)."""
    return f"eval_{metric_prefix(model)}{BEST_METRIC}"


def plain_metrics(raw: dict[str, Any], prefix: str) -> dict[str, float]:
    """The metrics under `prefix`, renamed without it: EVAL_METRICS first, then the rest (accuracy@k, map@10);
    precision@k is left out (with one relevant passage a query it is recall@k / k)."""
    metrics = {key[len(prefix):]: round(float(value), 6) for key, value in raw.items() if key.startswith(prefix)}
    ordered = {name: metrics[name] for name in EVAL_METRICS if name in metrics}
    ordered.update({k: v for k, v in metrics.items() if k not in ordered and not k.startswith("precision@")})
    return ordered


def retrieval_metrics(evaluator: InformationRetrievalEvaluator, model) -> dict[str, Any]:
    """recall@1/5/10, MRR@10 and nDCG@10 (plus accuracy@k, MAP@10) of the held-out queries, as plain floats."""
    started = time.monotonic()
    metrics: dict[str, Any] = plain_metrics(evaluator(model), metric_prefix(model))
    metrics.update(queries=len(evaluator.queries), corpus_size=len(evaluator.corpus),
                   eval_seconds=round(time.monotonic() - started, 2))
    return metrics


def eval_table(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each reported metric before and after training, and the change."""
    return {name: {"before": before[name], "after": after[name], "delta": round(after[name] - before[name], 6)}
            for name in EVAL_METRICS}


class InTrainingEvalEvents(TrainerCallback):
    """Each evaluation the trainer runs during training becomes an `eval` metric event with phase "during" (the same
    metric names as the before/after events, so one chart shows all of them)."""

    def __init__(self, emitter: MetricsEmitter, model):
        self.emitter = emitter
        self.prefix = f"eval_{metric_prefix(model)}"

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        values = plain_metrics(metrics or {}, self.prefix)
        if values:
            self.emitter.emit("eval", phase="during", step=state.global_step, epoch=state.epoch, **values)
