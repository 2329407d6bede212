"""The one training skeleton: load → split → arguments → model → data → callback → train → save → predictions →
summary.

Each task type is a `Workflow` subclass that fills in what differs (its rows, its args class, its model, its
datasets, its trainer, its evaluation); the sequence itself, the held-out split, the stop semantics and the summary
are written here once, so a fix to any of them reaches every type. (LLaMA-Factory's shape: one workflow per method
over one shared skeleton.)

A stop request (SIGTERM from the agent) ends training at a step boundary with a checkpoint saved (the metrics
callback does that); the workflow then skips the final evaluation and the final model, writes the summary with
`stopped_early: true` and raises StoppedEarly, so the run is never presented as finished.

Training code path only: subclasses import torch/transformers at module level.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from trainers.common import graceful_stop
from trainers.common.cli import RunContext
from trainers.common.eval_split import split_eval
from trainers.common.hf_callback import MetricsCallback, install as install_callback, run_summary, write_summary
from trainers.common.metrics import MetricsEmitter, checkpoint_name
from trainers.common.predictions import Predictions, PredictRow, last_user_text
from trainers.common.prompt_fit import FitTally, Fitted
from trainers.registry import DataReport


@dataclass
class Rows:
    """Rows of one file with the line (or row) number of each, so every message can name the line."""

    rows: list[Any]
    lines: list[int]
    field: str  # the config key that named the file
    name: str  # the file as shown to the user

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def loaded(cls, rows: list[Any], report: DataReport, field: str, name: str | None = None) -> "Rows":
        lines = report.lines if len(report.lines) == len(rows) else list(range(1, len(rows) + 1))
        return cls(list(rows), list(lines), field, name or report.path)


@dataclass
class Split:
    """The rows trained on and the held-out rows (from eval_data_path, or held out of the training file)."""

    train: Rows
    eval: Rows
    report: DataReport  # of the training file (its stats go into the summary)


@dataclass
class Prepared:
    """The datasets as the trainer takes them, and what fitting them into max_length did."""

    train: Any
    eval: Any | None
    fits: dict[str, FitTally] = field(default_factory=dict)  # "rows" (training) and "eval_rows" (held out)


@dataclass
class Built:
    """A workflow's state right before `trainer.train()`."""

    split: Split
    args: Any
    processor: Any
    prepared: Prepared
    callback: MetricsCallback
    trainer: Any


def fit_rows(rows: Rows, fit_one: Callable[[Any], tuple[Fitted, Any]], max_length: int,
             truncation: str = "passages") -> tuple[list[Any], FitTally]:
    """Fits every row (fit_one: row -> (Fitted, record)); the records of the rows that fit, and the tally. With
    truncation "error" a row that cannot fit raises DataError naming its line."""
    tally = FitTally(rows.field, rows.name, max_length)
    records = []
    for row, line in zip(rows.rows, rows.lines):
        fitted, record = fit_one(row)
        if tally.add(line, fitted):
            records.append(record)
    if truncation == "error":
        tally.raise_if_dropped()
    if tally.dropped:
        print(f"{tally.message()}: {tally.dropped} row(s) skipped", flush=True)
    if tally.trimmed:
        print(f"{rows.field}: {tally.trimmed} row(s) had their passages trimmed to fit max_length ({max_length})",
              flush=True)
    return records, tally


class Workflow:
    """A task type's training run; `run()` is the skeleton, the methods below it are what a type fills in."""

    task_type: str = ""
    # What the saved output is called in the log ("LoRA adapter", "model", "sentence-transformers model").
    output_noun: str = "model"

    def __init__(self, config: Any, ctx: RunContext):
        self.config, self.ctx = config, ctx
        self.emitter = MetricsEmitter(task_id=ctx.task_id, output_dir=ctx.output_dir)
        self.extra_summary: dict[str, Any] = {}  # what a type adds to training_summary.json along the way

    @classmethod
    def for_dry_run(cls, config: Any, workspace: Path) -> "Workflow":
        """An instance for `dry_run()` only (no task, no output directory)."""
        return cls(config, RunContext(cls.task_type, workspace, workspace / "output", None, None))

    # --- the skeleton --------------------------------------------------------------------------------------------

    def build(self) -> Built:
        """Everything up to `trainer.train()`: the split, the arguments, the model, the fitted datasets, the
        trainer with the metrics callback installed."""
        split = self.split()
        args = self.arguments(has_eval=bool(split.eval))
        model, processor = self.load_model(args)
        prepared = self.prepare(split, processor, args)
        callback = MetricsCallback(self.emitter, num_rows=len(split.train), **self.start_info())
        trainer = self.make_trainer(model, processor, args, prepared)
        install_callback(trainer, callback)
        return Built(split, args, processor, prepared, callback, trainer)

    def run(self) -> dict[str, Any]:
        built = self.build()
        trainer = built.trainer
        predictions = self.predictions(built)
        if predictions is not None and self.config.eval_before:
            self.predict(predictions, built, "before")
        evaluations = {"eval_before": self.evaluate_phase(trainer, "before")}
        result = trainer.train(resume_from_checkpoint=self.ctx.resume_from_checkpoint)
        stopped = graceful_stop.requested()
        out = Path(built.args.output_dir)
        if not stopped:
            evaluations["eval_after"] = self.evaluate_phase(trainer, "after")
            self.save(trainer, built.processor, out)  # every rank calls it (sharded saves); rank 0 writes
        if not trainer.is_world_process_zero():
            if stopped:
                raise graceful_stop.StoppedEarly(None)
            return {}
        if predictions is not None and not stopped:
            self.predict(predictions, built, "after")
            self.extra_summary["predictions"] = predictions.write(out)
        fits = {key: value for name, tally in built.prepared.fits.items() for key, value in tally.report(name).items()}
        summary = {
            "task_type": self.task_type,
            "model_name_or_path": self.config.model_name_or_path,
            "num_rows": len(built.split.train),
            "num_eval_rows": len(built.split.eval),
            "data_stats": built.split.report.stats,
            **fits,
            **run_summary(trainer, result, built.callback),
            **{key: value for key, value in evaluations.items() if value is not None},
            **self.extra_summary,
        }
        return self.finish(summary, out, stopped)

    def finish(self, summary: dict[str, Any], out: Path, stopped: bool,
               checkpoint: str | None = None) -> dict[str, Any]:
        """Writes training_summary.json (rank 0); a stopped run says so, names where to resume (`checkpoint`, else
        the newest checkpoint-N in `out`) and raises StoppedEarly."""
        summary["stopped_early"] = stopped
        summary["output_dir"] = str(out)
        if stopped:
            checkpoint = summary["resume_from"] = checkpoint or latest_checkpoint(out)
        if graceful_stop.is_main_process():
            write_summary(out, summary)
        if stopped:
            where = summary.get("stopped_at") or f"step {summary.get('global_step')}"
            shown = checkpoint_name(checkpoint, self.ctx.output_dir) if checkpoint else "no checkpoint"
            self.log(f"stopped early at {where}: no final {self.output_noun} written; resume from {shown}")
            raise graceful_stop.StoppedEarly(checkpoint)
        self.log(f"saved {self.output_noun} to {out}")
        return summary

    def log(self, message: str) -> None:
        """A line of the task log, from rank 0 only."""
        if graceful_stop.is_main_process():
            print(message, flush=True)

    def split(self) -> Split:
        """The training rows and the held-out ones: eval_data_path when given, else a seeded eval_ratio share."""
        train, report = self.load_rows()
        held_out = self.load_eval_rows()
        if held_out is None:
            pairs, eval_pairs = split_eval(list(zip(train.rows, train.lines)), eval_ratio=self.config.eval_ratio,
                                           seed=self.config.seed)
            held_out = Rows([r for r, _ in eval_pairs], [n for _, n in eval_pairs], train.field, train.name)
            train = Rows([r for r, _ in pairs], [n for _, n in pairs], train.field, train.name)
        return Split(train, held_out, report)

    def arguments(self, has_eval: bool, output_dir: Path | None = None):
        from trainers.common.training_args import build_args

        return build_args(self.args_class(), self.config, output_dir or self.ctx.output_dir, self.ctx.workspace,
                          has_eval=has_eval, **self.type_args())

    def predictions(self, built: Built) -> Predictions | None:
        """The held-out rows to answer after training (rank 0; a type that generates, with predict_after_training
        on and held-out rows), or None."""
        config = self.config
        if not getattr(config, "predict_after_training", False) or not built.split.eval \
                or not graceful_stop.is_main_process():
            return None
        rows = self.prediction_rows(built.split.eval, built.processor, config.predict_max_rows)
        if not rows:
            return None
        source = config.eval_data_path or f"eval_ratio {config.eval_ratio} of {built.split.train.name}"
        return Predictions(rows, self.emitter, source=source, max_new_tokens=config.predict_max_new_tokens)

    def predict(self, predictions: Predictions, built: Built, phase: str) -> dict[str, float]:
        """One phase's answers from the trainer's model: the base model before training (a new LoRA adapter changes
        nothing yet), the tuned one after."""
        from trainers.common.training_args import compute_dtype

        trainer = built.trainer
        which = "base" if phase == "before" else "tuned"
        self.log(f"predicting {len(predictions.rows)} held-out row(s) with the {which} model "
                 f"(at most {predictions.max_new_tokens} new tokens each)")
        return predictions.generate(phase, trainer.model, built.processor, max_prompt_tokens=self.config.max_length,
                                    batch_size=built.args.per_device_eval_batch_size,
                                    compute_dtype=compute_dtype(built.args), step=trainer.state.global_step)

    def evaluate_phase(self, trainer, phase: str) -> dict[str, Any] | None:
        """Runs the type's evaluation (rank 0 reports it) and emits it as an `eval` metric event."""
        metrics = self.evaluate(trainer, phase)
        if metrics is not None:
            self.emitter.emit("eval", phase=phase, step=trainer.state.global_step,
                              **{k: v for k, v in metrics.items() if isinstance(v, (int, float, str))})
        return metrics

    def dry_run(self) -> dict[str, Any]:
        """The dry run's deeper checks, with the trainer's own code: the training arguments as the run would build
        them (config_file extras through transformers' parser; QLoRA/Liger against this agent) and how the rows fit
        into max_length (trimmed / dropped rows by line). Raises ConfigError/DataError like the run would."""
        train, report = self.load_rows()
        held_out = self.load_eval_rows()
        with tempfile.TemporaryDirectory(prefix="bugagaric-dry-run-") as scratch:
            args = self.arguments(has_eval=bool(held_out) or self.config.eval_ratio > 0,
                                  output_dir=Path(scratch) / "output")
        processor = self.load_processor()
        stats: dict[str, Any] = {}
        warnings: list[str] = []
        for name, rows in (("rows", train), ("eval_rows", held_out)):
            if rows is None:
                continue
            fitted = self.fit_report(rows, processor, args)
            if fitted is None:
                continue
            tokens, tally = fitted
            stats.update(tally.report(name))
            if name == "rows":
                stats["tokens"] = tokens
            if tally.dropped:
                warnings.append(f"{tally.message()}; {tally.dropped} row(s) will be skipped")
        return {**stats, "warnings": warnings}

    # --- what a type fills in ------------------------------------------------------------------------------------

    def load_rows(self) -> tuple[Rows, DataReport]:
        raise NotImplementedError

    def load_eval_rows(self) -> Rows | None:
        """The rows of eval_data_path, or None when the config names none."""
        return None

    def args_class(self) -> type:
        raise NotImplementedError

    def type_args(self) -> dict[str, Any]:
        return {}

    def load_model(self, args) -> tuple[Any, Any]:
        """(model, processor: the tokenizer or the model itself)."""
        raise NotImplementedError

    def load_processor(self) -> Any:
        """The tokenizer alone (the dry run measures rows without loading the model)."""
        raise NotImplementedError

    def prepare(self, split: Split, processor, args) -> Prepared:
        raise NotImplementedError

    def fit_report(self, rows: Rows, processor, args) -> tuple[dict[str, Any], FitTally] | None:
        """For the dry run: token-length stats of the rows and what fitting does to them; None when the type does
        not fit rows (embedding)."""
        return None

    def make_trainer(self, model, processor, args, prepared: Prepared):
        raise NotImplementedError

    def start_info(self) -> dict[str, Any]:
        """Extra fields of the `start` metric event."""
        return {"model_name_or_path": self.config.model_name_or_path}

    def evaluate(self, trainer, phase: str) -> dict[str, Any] | None:
        """Held-out metrics before ("before") or after ("after") training; None: nothing to report."""
        return None

    def prediction_rows(self, rows: Rows, processor, limit: int) -> list[PredictRow]:
        """At most `limit` held-out rows as the predictions ask them; [] for a type that does not generate."""
        return []

    def save(self, trainer, processor, out: Path) -> None:
        """The final model into the output directory (adapter only with LoRA), and its tokenizer."""
        trainer.save_model(str(out))
        if trainer.is_world_process_zero() and hasattr(processor, "save_pretrained"):
            processor.save_pretrained(str(out))


def latest_checkpoint(output_dir: Path | str) -> str | None:
    """The newest `checkpoint-N` directory under output_dir (by N), or None."""
    root = Path(output_dir)
    found = [p for p in root.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return str(max(found, key=lambda p: int(p.name.split("-", 1)[1]))) if found else None


class LMWorkflow(Workflow):
    """A causal-LM type whose rows live in train_data_path (and eval_data_path) and are fitted into max_length one by
    one (sft, dpo): a subclass names its row loader, its record builder and its trl trainer."""

    # (config, workspace, field=...) -> (rows, DataReport): the type's validated row loader.
    load_file: Callable[..., tuple[list[Any], DataReport]]
    # (row, PromptFitter) -> (Fitted, trl record).
    fit_record: Callable[[Any, Any], tuple[Fitted, dict[str, Any]]]

    def __init__(self, config: Any, ctx: RunContext):
        super().__init__(config, ctx)
        self.output_noun = "LoRA adapter" if config.use_lora else "model"
        self.extra_summary["use_lora"] = config.use_lora

    def load_rows(self) -> tuple[Rows, DataReport]:
        rows, report = type(self).load_file(self.config, self.ctx.workspace)
        return Rows.loaded(rows, report, "train_data_path", self.config.train_data_path), report

    def load_eval_rows(self) -> Rows | None:
        if not self.config.eval_data_path:
            return None
        rows, report = type(self).load_file(self.config, self.ctx.workspace, field="eval_data_path")
        return Rows.loaded(rows, report, "eval_data_path", self.config.eval_data_path)

    def load_model(self, args):
        from trainers.common.model_loading import load_model_to_train

        return load_model_to_train(self.config, args, self.ctx.workspace)

    def load_processor(self):
        from trainers.common.model_loading import load_tokenizer

        return load_tokenizer(self.config.model_name_or_path, self.ctx.workspace)

    def records(self, rows: Rows, tokenizer) -> tuple[list[dict[str, Any]], FitTally, list[int]]:
        """The trl records of the rows that fit, the tally, and each row's token length as given."""
        from trainers.common.prompt_fit import PromptFitter

        fitter = PromptFitter(tokenizer, self.config.max_length)
        given: list[int] = []

        def fit_one(row):
            fitted, record = type(self).fit_record(row, fitter)
            given.append(fitted.given_tokens)
            return fitted, record

        records, tally = fit_rows(rows, fit_one, self.config.max_length, self.config.truncation)
        return records, tally, given

    def prepare(self, split: Split, tokenizer, args) -> Prepared:
        from datasets import Dataset

        train, train_tally, _ = self.records(split.train, tokenizer)
        prepared = Prepared(Dataset.from_list(train), None, {"rows": train_tally})
        if split.eval:
            held_out, eval_tally, _ = self.records(split.eval, tokenizer)
            prepared.eval = Dataset.from_list(held_out) if held_out else None
            prepared.fits["eval_rows"] = eval_tally
        return prepared

    def prediction_rows(self, rows: Rows, tokenizer, limit: int) -> list[PredictRow]:
        """The first `limit` held-out rows that fit max_length, with the prompt they would train on (passages
        fitted the same way) and their reference: sft's answer (chosen.text, or a chat row's last assistant turn),
        dpo's chosen answer."""
        from trainers.common.prompt_fit import PromptFitter

        fitter = PromptFitter(tokenizer, self.config.max_length)
        out: list[PredictRow] = []
        for row, line in zip(rows.rows, rows.lines):
            if len(out) >= limit:
                break
            fitted, record = type(self).fit_record(row, fitter)
            if not fitted.fits:
                continue
            answer = record.get("completion") or record["chosen"]
            question = getattr(row, "query", None) or last_user_text(fitted.prompt)
            out.append(PredictRow(line, question, fitted.prompt, answer[-1]["content"]))
        return out

    def fit_report(self, rows: Rows, tokenizer, args) -> tuple[dict[str, Any], FitTally]:
        from trainers.common.token_stats import length_stats

        _, tally, given = self.records(rows, tokenizer)
        return length_stats(given, self.config.max_length), tally

    def start_info(self) -> dict[str, Any]:
        info = {"model_name_or_path": self.config.model_name_or_path, "use_lora": self.config.use_lora}
        if self.config.init_from:  # continuing a finished task's model
            info["init_from"] = self.config.init_from
        return info

    def peft_config(self, model=None):
        """A new LoRA adapter for the trainer to wrap the model in, or None for full fine-tuning and for a model that
        already carries one (a finished task's adapter, `init_from`), which trains on."""
        from trainers.common.lora import lora_config

        if not self.config.use_lora or hasattr(model, "peft_config"):
            return None
        return lora_config(self.config)
