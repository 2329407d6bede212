"""Embedding training: a SentenceTransformer fine-tuned with MultipleNegativesRankingLoss (or its cached variant) on
(query, positive, hard negatives...) examples, scored on held-out queries before and after training with
InformationRetrievalEvaluator. Heavy imports live here; `python -m trainers.embedding` imports this only after config
and data checked out."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

# sentence-transformers' model-card code draws an unconditional tqdm bar ("Computing widget examples"): noise in a log.
os.environ.setdefault("TQDM_DISABLE", "1")

from datasets import Dataset  # noqa: E402
from sentence_transformers import (  # noqa: E402
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.base.sampler import BatchSamplers  # noqa: E402
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator  # noqa: E402
from sentence_transformers.sentence_transformer.losses import (  # noqa: E402
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)

from trainers.common.cli import RunContext
from trainers.common.eval_split import split_eval
from trainers.common.hf_callback import MetricsCallback, install as install_callback, run_summary, write_summary
from trainers.common.metrics import MetricsEmitter
from trainers.common.model_loading import _load_failed, locate_model
from trainers.common.training_args import build_args
from trainers.embedding.data import RetrievalEval, to_examples, to_retrieval_eval
from trainers.embedding.spec import EmbeddingConfig, load_embedding_rows

# The retrieval metrics reported before and after training (InformationRetrievalEvaluator's names, without the
# similarity-function prefix).
EVAL_METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")


def load_sentence_transformer(name_or_path: str, workspace: Path | None = None, **kwargs) -> SentenceTransformer:
    """A local directory (a sentence-transformers model, or a plain HF encoder, which gets mean pooling) or a hub id;
    a missing model is a clear ModelNotFound."""
    source = locate_model(name_or_path, workspace)
    try:
        return SentenceTransformer(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_failed(name_or_path, source, exc) from exc


def build_loss(config: EmbeddingConfig, model: SentenceTransformer):
    if config.loss == "cached_mnrl":
        return CachedMultipleNegativesRankingLoss(model, scale=config.loss_scale,
                                                  mini_batch_size=config.mini_batch_size)
    return MultipleNegativesRankingLoss(model, scale=config.loss_scale)


def evaluate(model: SentenceTransformer, data: RetrievalEval, batch_size: int) -> dict[str, Any]:
    """recall@1/5/10, MRR@10 and nDCG@10 (plus accuracy@k, MAP@10) of the held-out queries, as plain floats."""
    evaluator = InformationRetrievalEvaluator(
        data.queries, data.corpus, data.relevant, accuracy_at_k=[1, 5, 10], precision_recall_at_k=[1, 5, 10],
        mrr_at_k=[10], ndcg_at_k=[10], map_at_k=[10], batch_size=batch_size, write_csv=False,
        show_progress_bar=False,
    )
    started = time.monotonic()
    raw = evaluator(model)
    prefix = f"{model.similarity_fn_name}_"
    metrics = {key[len(prefix):]: round(float(value), 6) for key, value in raw.items() if key.startswith(prefix)}
    ordered = {name: metrics[name] for name in EVAL_METRICS}
    ordered.update({k: v for k, v in metrics.items() if k not in ordered and not k.startswith("precision@")})
    ordered.update(queries=len(data.queries), corpus_size=len(data.corpus),
                   eval_seconds=round(time.monotonic() - started, 2))
    return ordered


def _emit_eval(emitter: MetricsEmitter, phase: str, metrics: dict[str, Any], step: int) -> None:
    emitter.emit("eval", phase=phase, step=step, **{k: v for k, v in metrics.items() if k != "eval_seconds"})


def train(config: EmbeddingConfig, ctx: RunContext) -> dict:
    rows, report = load_embedding_rows(config, ctx.workspace)
    load_eval = ((lambda: load_embedding_rows(config, ctx.workspace, eval_file=True)[0])
                 if config.eval_data_path else None)
    rows, eval_rows = split_eval(rows, eval_ratio=config.eval_ratio, seed=config.seed, load_eval=load_eval)
    examples = to_examples(rows, num_hard_negatives=config.num_hard_negatives,
                           query_instruction=config.query_instruction, seed=config.seed)
    retrieval = to_retrieval_eval(eval_rows, query_instruction=config.query_instruction, distractor_rows=rows,
                                  max_distractors=config.eval_max_distractors, seed=config.seed) if eval_rows else None

    # No duplicate texts in a batch: with in-batch negatives a duplicate would be a false negative.
    args = build_args(SentenceTransformerTrainingArguments, config, ctx.output_dir, ctx.workspace,
                      batch_sampler=BatchSamplers.NO_DUPLICATES)
    model = load_sentence_transformer(config.model_name_or_path, ctx.workspace)
    if config.max_seq_length:
        model.max_seq_length = config.max_seq_length
    print(f"model: {type(model[0]).__name__} + {', '.join(type(m).__name__ for m in list(model)[1:])}; "
          f"dim {model.get_embedding_dimension()}, max_seq_length {model.max_seq_length}; "
          f"{len(examples)} training examples ({config.num_hard_negatives} hard negatives each) from {len(rows)} rows, "
          f"{len(eval_rows)} held-out queries", flush=True)

    emitter = MetricsEmitter(task_id=ctx.task_id)
    eval_before = eval_after = None
    if retrieval is not None:
        eval_before = evaluate(model, retrieval, args.per_device_eval_batch_size)
        _emit_eval(emitter, "before", eval_before, step=0)

    callback = MetricsCallback(emitter, num_rows=len(rows), num_examples=len(examples), eval_rows=len(eval_rows),
                               model_name_or_path=config.model_name_or_path, loss=config.loss)
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict(examples.columns), loss=build_loss(config, model),
    )
    install_callback(trainer, callback)
    result = trainer.train(resume_from_checkpoint=ctx.resume_from_checkpoint)
    if not trainer.is_world_process_zero():
        return {}  # in a data-parallel run, rank 0 evaluates and saves

    if retrieval is not None:
        eval_after = evaluate(model, retrieval, args.per_device_eval_batch_size)
        _emit_eval(emitter, "after", eval_after, step=trainer.state.global_step)

    out = Path(args.output_dir)
    if config.query_instruction:
        # Saved with the model, so model.encode_query() adds the instruction the model was trained with.
        model.prompts["query"] = config.query_instruction
    model.save_pretrained(str(out))
    summary = {
        "task_type": "embedding",
        "model_name_or_path": config.model_name_or_path,
        "loss": config.loss,
        "scale": config.loss_scale,
        "num_hard_negatives": config.num_hard_negatives,
        "query_instruction": config.query_instruction,
        "max_seq_length": model.max_seq_length,
        "embedding_dimension": model.get_embedding_dimension(),
        "num_rows": len(rows),
        "num_examples": len(examples),
        "borrowed_negatives": examples.borrowed_negatives,
        "num_eval_queries": len(eval_rows),
        "data_stats": report.stats,
        **run_summary(trainer, result, callback),
        "eval_before": eval_before,
        "eval_after": eval_after,
        "output_dir": str(out),
    }
    write_summary(out, summary)
    print(f"saved sentence-transformers model to {out}", flush=True)
    return summary
