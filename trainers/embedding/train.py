"""Embedding training over the shared skeleton (trainers.common.workflow): a SentenceTransformer fine-tuned with a
contrastive loss (trainers.embedding.losses) on (query, positive, hard negatives...) examples, where rows without
negatives get negatives mined by the base model (trainers.embedding.mining). With held-out rows the
InformationRetrievalEvaluator scores them before training, during training (the checkpoint with the best nDCG@10
becomes the final model) and after. Heavy imports live here; `python -m trainers.embedding` imports this only after
config and data checked out."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

# sentence-transformers' model-card code draws an unconditional tqdm bar ("Computing widget examples"): noise in a log.
os.environ.setdefault("TQDM_DISABLE", "1")

from datasets import Dataset, DatasetDict  # noqa: E402
from sentence_transformers import (  # noqa: E402
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.base.sampler import BatchSamplers  # noqa: E402

from trainers.common.cli import RunContext  # noqa: E402
from trainers.common.model_loading import load_failure, load_tokenizer, locate_model, locate_named_model  # noqa: E402
from trainers.common.workflow import Prepared, Rows, Split, Workflow  # noqa: E402
from trainers.embedding.data import to_examples, to_retrieval_eval  # noqa: E402
from trainers.embedding.evaluation import (  # noqa: E402
    BEST_METRIC,
    InTrainingEvalEvents,
    best_metric_key,
    eval_table,
    retrieval_evaluator,
    retrieval_metrics,
)
from trainers.embedding.losses import build_loss, check_matryoshka_dims  # noqa: E402
from trainers.embedding.mining import mine_negatives  # noqa: E402
from trainers.embedding.spec import (  # noqa: E402
    GIST_LOSSES,
    EmbeddingConfig,
    load_embedding_rows,
    saved_embedding_dimension,
)

GUIDE_FIELD = "guide_model_name_or_path"


def load_sentence_transformer(name_or_path: str, workspace: Path | None = None, **kwargs) -> SentenceTransformer:
    """A local directory (a sentence-transformers model, or a plain HF encoder, which gets mean pooling) or a hub id;
    a missing model is a clear ModelNotFound."""
    source = locate_model(name_or_path, workspace)
    try:
        return SentenceTransformer(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise load_failure(name_or_path, source, exc) from exc


def load_guide(source: str, name_or_path: str) -> SentenceTransformer:
    """The guide from where locate_named_model found it; a failure names guide_model_name_or_path."""
    try:
        return SentenceTransformer(source)
    except (OSError, ValueError) as exc:
        failure = load_failure(name_or_path, source, exc)
        raise type(failure)(f"{GUIDE_FIELD}: {failure}") from exc


def checkpoint_args(config: EmbeddingConfig, has_eval: bool) -> dict[str, Any]:
    """With held-out rows: evaluate every eval_steps (else every save_steps, else once per epoch), save a checkpoint
    at each evaluation (every save_steps when given, a multiple of eval_steps) and end on the checkpoint with the
    best nDCG@10. Without, build_args' checkpoints (every save_steps when given) stand."""
    if not has_eval:
        return {}
    every = config.eval_steps or config.save_steps
    if every is None:
        schedule: dict[str, Any] = {"eval_strategy": "epoch", "save_strategy": "epoch"}
    else:
        schedule = {"eval_strategy": "steps", "eval_steps": every, "save_strategy": "steps",
                    "save_steps": config.save_steps or every}
    # metric_for_best_model names the model's similarity function: set once the model is loaded (make_trainer).
    return {**schedule, "load_best_model_at_end": True, "greater_is_better": True}


def encode_batch_size(config: EmbeddingConfig) -> int:
    """Texts embedded at once by the evaluation and the mining (per_device_eval_batch_size): as many as one training
    step embeds at once with gradients, which inference without them surely fits: a batch's anchors, positives and
    hard negatives, or a mini-batch of the cached losses."""
    if config.loss.startswith("cached_"):
        return config.mini_batch_size
    return config.per_device_train_batch_size * (2 + config.num_hard_negatives)


def frozen(model: SentenceTransformer) -> SentenceTransformer:
    model.requires_grad_(False)
    return model.eval()


class EmbeddingWorkflow(Workflow):
    task_type = "embedding"
    output_noun = "sentence-transformers model"

    def __init__(self, config: EmbeddingConfig, ctx: RunContext):
        super().__init__(config, ctx)
        self.has_eval = False  # whether held-out rows exist: known in arguments(), used by type_args()
        self.guide: SentenceTransformer | None = None
        self.retrieval = None  # the held-out queries, corpus and judgements (RetrievalEval)
        self.eval_before: dict[str, Any] | None = None
        self.extra_summary.update(
            loss=config.loss, scale=config.loss_scale, num_hard_negatives=config.num_hard_negatives,
            hard_negative_mining=config.hard_negative_mining, query_instruction=config.query_instruction,
            matryoshka_dims=config.matryoshka_dims,
        )

    # --- rows ------------------------------------------------------------------------------------------------------

    def load_rows(self):
        rows, report = load_embedding_rows(self.config, self.ctx.workspace)
        return Rows.loaded(rows, report, self.config.data_field, self.config.data_path), report

    def load_eval_rows(self) -> Rows | None:
        if not self.config.eval_data_path:
            return None
        rows, report = load_embedding_rows(self.config, self.ctx.workspace, eval_file=True)
        return Rows.loaded(rows, report, "eval_data_path", self.config.eval_data_path)

    # --- arguments -------------------------------------------------------------------------------------------------

    def arguments(self, has_eval: bool, output_dir: Path | None = None):
        self.has_eval = has_eval
        return super().arguments(has_eval, output_dir)

    def args_class(self) -> type:
        return SentenceTransformerTrainingArguments

    def type_args(self) -> dict[str, Any]:
        # No duplicate texts in a batch: with in-batch negatives a duplicate would be a false negative.
        return {"batch_sampler": BatchSamplers.NO_DUPLICATES,
                "per_device_eval_batch_size": encode_batch_size(self.config),
                **checkpoint_args(self.config, self.has_eval)}

    # --- models ----------------------------------------------------------------------------------------------------

    def guide_source(self) -> str | None:
        """Where the GIST guide loads from; None: a frozen copy of the base model (or no guide: not a GIST loss)."""
        if self.config.loss in GIST_LOSSES and self.config.guide_model_name_or_path:
            return locate_named_model(self.config.guide_model_name_or_path, GUIDE_FIELD, self.ctx.workspace)
        return None

    def load_model(self, args):
        guide_source = self.guide_source()  # before the base model loads: a wrong guide fails at once
        model = load_sentence_transformer(self.config.model_name_or_path, self.ctx.workspace)
        if self.config.max_seq_length:
            model.max_seq_length = self.config.max_seq_length
        check_matryoshka_dims(self.config.matryoshka_dims, model.get_embedding_dimension())
        if self.config.loss in GIST_LOSSES:
            if guide_source:
                self.guide = frozen(load_guide(guide_source, self.config.guide_model_name_or_path))
            else:
                self.guide = frozen(copy.deepcopy(model))
        print(f"model: {type(model[0]).__name__} + {', '.join(type(m).__name__ for m in list(model)[1:])}; "
              f"dim {model.get_embedding_dimension()}, max_seq_length {model.max_seq_length}"
              + (f"; guide {self.config.guide_model_name_or_path or 'a frozen copy of the base model'}"
                 if self.guide is not None else ""), flush=True)
        self.extra_summary.update(max_seq_length=model.max_seq_length,
                                  embedding_dimension=model.get_embedding_dimension())
        if self.guide is not None:
            self.extra_summary["guide_model"] = self.config.guide_model_name_or_path or "base model (frozen copy)"
        return model, model

    def load_processor(self):
        return load_tokenizer(self.config.model_name_or_path, self.ctx.workspace)

    # --- data ------------------------------------------------------------------------------------------------------

    def mined_negatives(self, rows, model, args) -> dict[int, list[str]]:
        """Mined negatives of the training rows without `neg` (none to mine when every row has its own, when no hard
        negatives are wanted, or when mining is off)."""
        without = sum(not row.neg for row in rows)
        if not without or not self.config.num_hard_negatives:
            return {}
        if not self.config.hard_negative_mining:
            print(f"hard_negative_mining is off: {without} row(s) without `neg` train with in-batch negatives only",
                  flush=True)
            return {}
        return mine_negatives(model, rows, num_negatives=self.config.num_hard_negatives,
                              relative_margin=self.config.mining_relative_margin,
                              query_instruction=self.config.query_instruction,
                              batch_size=args.per_device_eval_batch_size)

    def prepare(self, split: Split, model, args) -> Prepared:
        rows = split.train.rows
        examples = to_examples(rows, num_hard_negatives=self.config.num_hard_negatives,
                               query_instruction=self.config.query_instruction,
                               mined=self.mined_negatives(rows, model, args))
        groups = {name: Dataset.from_dict(columns) for name, columns in examples.groups().items()}
        # Two groups (rows with and without negatives) train as two datasets, each batch from one of them: a loss
        # takes the same columns in every example of a batch.
        train = DatasetDict(groups) if len(groups) > 1 else next(iter(groups.values()))
        print(f"{len(examples)} training examples from {len(rows)} rows: "
              + ", ".join(f"{name} {len(ds)}" for name, ds in groups.items())
              + f"; {examples.mined_negatives} mined negatives; {len(split.eval)} held-out queries", flush=True)
        self.extra_summary.update(num_examples=len(examples), mined_negatives=examples.mined_negatives,
                                  rows_in_batch_negatives_only=examples.rows_in_batch_only,
                                  num_eval_queries=len(split.eval))
        if not split.eval:
            print("no held-out rows (eval_ratio 0 or too few rows, no eval_data_path): no retrieval evaluation, no "
                  "best-checkpoint selection; the final model is the last step's", flush=True)
            return Prepared(train, None)
        self.retrieval = to_retrieval_eval(split.eval.rows, query_instruction=self.config.query_instruction,
                                           distractor_rows=rows, max_distractors=self.config.eval_max_distractors,
                                           seed=self.config.seed)
        return Prepared(train, retrieval_evaluator(self.retrieval, args.per_device_eval_batch_size))

    # --- training --------------------------------------------------------------------------------------------------

    def make_trainer(self, model, processor, args, prepared: Prepared):
        evaluator = prepared.eval
        if evaluator is not None and args.load_best_model_at_end and args.metric_for_best_model in (None, "loss"):
            # The evaluator's nDCG@10 key names the model's similarity function, known only now that it is loaded
            # (a metric_for_best_model from config_file stands).
            args.metric_for_best_model = best_metric_key(model)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=prepared.train,
                                             loss=build_loss(self.config, model, self.guide), evaluator=evaluator)
        if evaluator is not None:
            trainer.add_callback(InTrainingEvalEvents(self.emitter, model))
        return trainer

    def start_info(self) -> dict[str, Any]:
        return {"model_name_or_path": self.config.model_name_or_path, "loss": self.config.loss,
                **{key: self.extra_summary.get(key) for key in ("num_examples", "mined_negatives",
                                                                "num_eval_queries")}}

    def evaluate(self, trainer, phase: str) -> dict[str, Any] | None:
        """The held-out queries' retrieval metrics (rank 0). After training the model is the best checkpoint's."""
        if trainer.evaluator is None or not trainer.is_world_process_zero():
            return None
        metrics = retrieval_metrics(trainer.evaluator, trainer.model)
        if phase == "before":
            self.eval_before = metrics
        else:
            self.extra_summary["eval_table"] = eval_table(self.eval_before, metrics)
            self.extra_summary.update(self.truncated_evaluation(trainer))
        return metrics

    def truncated_evaluation(self, trainer) -> dict[str, Any]:
        """With Matryoshka training: the held-out metrics with the embeddings cut to the smallest size."""
        if not self.config.matryoshka_dims:
            return {}
        dim = self.config.matryoshka_dims[-1]
        evaluator = retrieval_evaluator(self.retrieval, trainer.args.per_device_eval_batch_size, truncate_dim=dim)
        return {"eval_after_truncated": {"dim": dim, **retrieval_metrics(evaluator, trainer.model)}}

    def save(self, trainer, processor, out: Path) -> None:
        """The final model (the best checkpoint's, when held-out rows picked one) with the query instruction saved
        as its "query" prompt, so model.encode_query() adds the instruction the model was trained with."""
        self.extra_summary.update({"best_checkpoint": trainer.state.best_model_checkpoint,
                                   f"best_{BEST_METRIC}": trainer.state.best_metric})
        if not trainer.is_world_process_zero():
            return
        model = trainer.model
        if self.config.query_instruction:
            model.prompts["query"] = self.config.query_instruction
        model.save_pretrained(str(out))

    # --- dry run ---------------------------------------------------------------------------------------------------

    def dry_run(self) -> dict[str, Any]:
        """The skeleton's checks (training arguments with the config_file extras), then the guide model's path and
        matryoshka_dims against the embedding size read from the model's files."""
        checks = super().dry_run()
        self.guide_source()
        if self.config.matryoshka_dims:
            dimension = saved_embedding_dimension(locate_model(self.config.model_name_or_path, self.ctx.workspace))
            if dimension is None:
                checks["warnings"].append("matryoshka_dims: the model's embedding size could not be read from its "
                                          "files; it is checked when the model loads")
            else:
                check_matryoshka_dims(self.config.matryoshka_dims, dimension)
        return checks


def train(config: EmbeddingConfig, ctx: RunContext) -> dict:
    return EmbeddingWorkflow(config, ctx).run()

