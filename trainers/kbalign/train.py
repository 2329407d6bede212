"""KBAlign training: self-annotation of the knowledge base, then iterative tuning with self-verification, over the
shared training skeleton (trainers.common.workflow: its arguments, model loading, LoRA config, metrics callback and
summary/stop semantics). KBAlign has several stages and rounds, so it drives them itself (`run`):

  chunking, embedding, annotate_short, clustering, annotate_long, split   (trainers.kbalign.pipeline)
  eval_base                                   KB-QA exact match / token F1 of the base model (trainers.kbalign.evaluate)
  train_round_1, eval_round_1                 SFT on part 1 of the pairs
  verify_round_k, train_round_k, eval_round_k (k >= 2) the current model drafts and critiques part k's answers;
                                              SFT on part k's pairs and the critiques (trainers.kbalign.verify)

One learning-rate schedule spans all rounds (trainers.kbalign.schedule); the adapter carries over from round to round;
every round's result is kept in rounds/round_<k>/final. Every stage reports `{"event": "stage", ...}` metric events;
the training steps of all rounds share one step count (`step`/`total_steps` over the run, `round`/`round_step`).

A stop request ends the run at the next step or batch boundary: the state is saved, a checkpoint is reported (a
stage snapshot, or the round's Trainer checkpoint), the summary says `stopped_early` and no final model is written.
A resumed run skips every finished stage (trainers.kbalign.state).

Heavy imports live here; `python -m trainers.kbalign` imports this only after config and data checked out.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from trl import SFTConfig

from trainers.common import graceful_stop
from trainers.common.cli import RunContext
from trainers.common.hf_callback import MetricsCallback, install as install_callback
from trainers.common.metrics import MetricsEmitter
from trainers.common.model_loading import load_model_to_train, load_tokenizer, locate_named_model
from trainers.common.prompt_fit import FitTally
from trainers.common.sft_training import sft_args, sft_trainer
from trainers.common.training_args import compute_dtype
from trainers.common.workflow import Workflow, latest_checkpoint
from trainers.errors import TrainerError
from trainers.kbalign import evaluate as kbqa
from trainers.kbalign.annotate import LONG, SHORT
from trainers.kbalign.distributed import Ranks
from trainers.kbalign.embedder import (
    NO_EMBEDDING_MODEL_WARNING, hidden_state_embedder, sentence_transformer_embedder,
)
from trainers.kbalign.kb import digest
from trainers.kbalign.mixing import general_counts, general_rows_per_round
from trainers.kbalign.pairs import Pair
from trainers.kbalign.pipeline import PAIRS_FILE, annotated_pairs, split
from trainers.kbalign.records import RecordBuilder, fit_all, merged_report
from trainers.kbalign.runtime import Runtime, Stopped
from trainers.kbalign.schedule import CrossRoundSchedule, StepPlan, planned_steps
from trainers.kbalign.spec import (
    EMBEDDING_FIELD, KbalignConfig, load_eval_rows, load_general_rows, load_knowledge_base,
)
from trainers.kbalign.state import StageState
from trainers.kbalign.verify import stage_name as verify_stage, verify


class RoundEmitter(MetricsEmitter):
    """The shared metrics callback's events for one round, moved onto the run's step count: `step`/`total_steps`
    are overall, `round_step`/`round_total_steps` the round's own; a round's start/end become round_start/round_end
    (the run's one start and end event are emitted around all rounds)."""

    def __init__(self, base: MetricsEmitter, plan: StepPlan, round_no: int):
        super().__init__(base.path, base.task_id, base._stdout)
        self.plan, self.round_no = plan, round_no
        self.started = time.monotonic()
        self.first_step: int | None = None

    def emit(self, event: str, **values: Any) -> dict[str, Any]:
        values["round"] = self.round_no
        if event == "start":
            self.plan.round_started(self.round_no, values.get("total_steps"))
            self.started = time.monotonic()
        offset = self.plan.offset(self.round_no)
        if isinstance(values.get("step"), int):
            values["round_step"] = values["step"]
            values["step"] += offset
        if "total_steps" in values:
            values["round_total_steps"] = values["total_steps"]
            values["total_steps"] = self.plan.total
        if values.get("eta_seconds") is not None and values.get("round_step"):
            if self.first_step is None:
                self.first_step = values["round_step"] - 1
            per_step = (time.monotonic() - self.started) / max(1, values["round_step"] - self.first_step)
            values["eta_seconds"] = round(per_step * max(0, self.plan.total - values["step"]), 1)
        if event in ("start", "end"):
            event = f"round_{event}"
        return super().emit(event, **values)


class RoundStopped(Exception):
    """A stop request ended a round's training; the Trainer saved `checkpoint`."""

    def __init__(self, round_no: int, checkpoint: str | None, steps: int, losses: list[float]):
        super().__init__(checkpoint)
        self.round_no, self.checkpoint, self.steps, self.losses = round_no, checkpoint, steps, losses


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config")


class KBAlignWorkflow(Workflow):
    task_type = "kbalign"

    def __init__(self, config: KbalignConfig, ctx: RunContext):
        super().__init__(config, ctx)
        self.output_noun = "LoRA adapter" if config.use_lora else "model"
        self.ranks = Ranks()
        self.out = Path(ctx.output_dir)
        self.started = time.monotonic()

    # --- the skeleton's pieces ---------------------------------------------------------------------------------

    def args_class(self) -> type:
        return SFTConfig

    def type_args(self) -> dict[str, Any]:
        return sft_args(self.config)

    def load_processor(self):
        return load_tokenizer(self.config.model_name_or_path, self.ctx.workspace)

    def round_dir(self, round_no: int) -> Path:
        return self.out / "rounds" / f"round_{round_no}"

    # --- the run -----------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        c, ctx = self.config, self.ctx
        self.kb = kb = load_knowledge_base(c, ctx.workspace)
        if c.embedding_model_name_or_path:  # a missing embedding model fails now, not after annotation
            locate_named_model(c.embedding_model_name_or_path, EMBEDDING_FIELD, ctx.workspace)
        self.emitter.emit("stage", stage="chunking", done=kb.documents, total=kb.documents, **kb.stats())
        self.args = args = self.arguments(has_eval=False, output_dir=self.round_dir(1))
        device = args.device  # on a multi-device run this sets up the process group the stages gather over
        self.state = state = StageState.start(self.out, ctx.resume_from_checkpoint, writer=self.ranks.keeps_state)
        if not kb.annotated:
            state.check_knowledge_base(digest(kb.chunks), len(kb.chunks))
        model, tokenizer = load_model_to_train(c, args, ctx.workspace)
        if not c.quantization:  # a quantized model is placed on this rank's device by its loader
            model.to(device)
        self.rt = Runtime(c, self.out, self.emitter, self.ranks, state, model, tokenizer,
                          compute_dtype=compute_dtype(args))
        self.rt.load_embedder = self._load_embedder
        self.rt.annotations.mkdir(parents=True, exist_ok=True)
        if state.resumed:
            self.rt.log(f"resuming: finished stages {', '.join(state.data['finished'])}")
        self.plan: StepPlan | None = None
        self.schedule: CrossRoundSchedule | None = None
        graceful_stop.training_started()  # from here a stop request ends the run at the next boundary, with a save
        try:
            return self._run()
        except Stopped as stop:
            return self._stopped(str(self.state.snapshot(stop.label)), stop.label)
        except RoundStopped as stop:
            return self._stopped(stop.checkpoint, f"train_round_{stop.round_no}", stop)

    def _load_embedder(self):
        c = self.config
        if c.embedding_model_name_or_path:
            return sentence_transformer_embedder(c.embedding_model_name_or_path, self.ctx.workspace,
                                                 str(self.args.device), c.generation_batch_size)
        if not self.state.finished("embedding"):
            self.rt.log(f"warning: {NO_EMBEDDING_MODEL_WARNING}")
        return hidden_state_embedder(self.rt.model, self.rt.tokenizer, c.model_name_or_path, c.max_length,
                                     c.generation_batch_size, self.rt.compute_dtype)

    def report_checkpoint(self, path: str, stage: str) -> None:
        if path != getattr(self, "reported", None):
            self.emitter.emit("checkpoint", step=self.global_step(), path=path, stage=stage)
            self.reported = path

    def boundary(self, label: str) -> None:
        """After a finished stage: a snapshot to resume from (reported as a checkpoint once every node has written its
        copy), then a pending stop."""
        snapshot = self.state.snapshot(label)
        self.ranks.barrier()
        self.report_checkpoint(str(snapshot), label)
        if self.ranks.any(graceful_stop.requested()):
            raise Stopped(label)

    def global_step(self) -> int:
        """Training steps of the finished rounds."""
        return sum(self.plan.finished.values()) if self.plan else 0

    def _run(self) -> dict[str, Any]:
        c, rt, state = self.config, self.rt, self.state
        pairs = annotated_pairs(rt, self.kb, self.boundary)
        eval_rows = load_eval_rows(c, self.ctx.workspace) if c.eval_data_path else None
        train, held_out = split(rt, self.kb, pairs, *(eval_rows or (None, None)))
        self.boundary("split")
        self.builder = builder = RecordBuilder(rt.tokenizer, c.max_length, c.max_new_tokens, self.kb.chunks)
        parts = [[p for p in train if p.part == k] for k in range(1, max((p.part for p in train), default=0) + 1)]
        self.n_rounds = len(parts)
        qa = self._qa_records(parts)
        general = self._general_rows(parts, qa)
        self._plan(parts, qa, general)
        self.modes = kbqa.settings(c.eval_mode, not self.kb.annotated)
        self.emitter.emit("start", step=self.global_step(), total_steps=self.plan.total, rounds=len(parts),
                          num_pairs=len(train), model_name_or_path=c.model_name_or_path, use_lora=c.use_lora)
        if not state.finished(kbqa.stage_name("base")):
            kbqa.evaluate(rt, "base", held_out, builder, self.modes, step=0)
            self.boundary("eval_base")
        finished = [k for k in range(1, len(parts) + 1) if state.finished(f"train_round_{k}")]
        if finished:
            self._load_round(max(finished))
        trainer = None
        for k, part in enumerate(parts, start=1):
            if not state.finished(f"train_round_{k}"):
                records = list(qa[k - 1][0])
                if k > 1:
                    fresh = not state.finished(verify_stage(k))
                    rows, _ = verify(rt, k, part, builder)
                    if fresh:
                        self.boundary(verify_stage(k))
                    records += self._verification_records(k, part, rows)
                records += general[k - 1][0]
                trainer = self._train_round(k, records, qa[k - 1][1], general[k - 1][1])
                self.boundary(f"train_round_{k}")
            phase = f"round_{k}"
            if not state.finished(kbqa.stage_name(phase)):
                kbqa.evaluate(rt, phase, held_out, builder, self.modes, step=self.global_step())
                self.boundary(kbqa.stage_name(phase))
        predictions = None
        if parts:
            predictions = kbqa.write_predictions(rt, held_out, builder, self.modes, f"round_{len(parts)}",
                                                 source=c.eval_data_path or "eval_ratio split of the annotated pairs",
                                                 step=self.global_step())
        self._save_final(trainer)
        summary = self.summary()
        if predictions is not None:
            summary["predictions"] = predictions
        self.emitter.end(step=self.plan.total, total_steps=self.plan.total, rounds=len(parts),
                         train_runtime=summary["runtime_seconds"], first_loss=summary["first_loss"],
                         final_loss=summary["final_loss"], stopped_early=False)
        return self.finish(summary, self.out, False)

    # --- records -----------------------------------------------------------------------------------------------

    def _tally(self, field: str, name: str) -> FitTally:
        return FitTally(field, name, self.config.max_length)

    def _qa_records(self, parts: list[list[Pair]]) -> list[tuple[list[dict], dict]]:
        """Each round's question-answer records and its fit report; all built before round 1, so a pair that cannot
        fit fails a `truncation: error` run before any training."""
        # A pair is named by its line in the input (annotated chat rows) or in annotations/pairs.jsonl.
        name = self.kb.path if self.kb.annotated else str(self.rt.annotations / PAIRS_FILE)
        out = []
        for part in parts:
            tally = self._tally("input_path", name)
            records = fit_all([(p.input_line or p.line, *self.builder.qa(p)) for p in part], tally)
            if self.config.truncation == "error":
                tally.raise_if_dropped()
            out.append((records, tally.report("rows")))
        dropped = sum(report["rows_dropped"] for _, report in out)
        if dropped:
            self.rt.log(f"{dropped} pair(s) are longer than max_length ({self.config.max_length}) even without "
                        f"passages: skipped (see the summary's rows_dropped_lines, lines of {name})")
        return out

    def _verification_records(self, round_no: int, part: list[Pair], rows: list[dict]) -> list[dict]:
        by_item = {row["item"]: row for row in rows}
        tally = self._tally("input_path", str(self.rt.annotations / f"round_{round_no}_verification.jsonl"))
        records = fit_all([(i + 1, *self.builder.verification(p, by_item[i]["passages"], by_item[i]["draft"],
                                                              by_item[i]["text"]))
                           for i, p in enumerate(part) if i in by_item], tally)
        if self.config.truncation == "error":
            tally.raise_if_dropped()
        self._verification_fit = tally.report("verification_rows")
        return records

    def _general_rows(self, parts: list[list[Pair]], qa) -> list[tuple[list[dict], dict]]:
        """General-domain chat rows mixed into each round at general_data_ratio per knowledge-base record."""
        c = self.config
        if not c.general_data_path:
            return [([], {}) for _ in parts]
        rows, lines = load_general_rows(c, self.ctx.workspace)
        from trainers.sft.data import split_chat

        kb_records = [len(records) + (len(part) if k > 1 else 0) for k, ((records, _), part)
                      in enumerate(zip(qa, parts), start=1)]
        picks = general_rows_per_round(len(rows), general_counts(kb_records, c.general_data_ratio), c.seed)
        out = []
        for chosen in picks:
            tally = self._tally("general_data_path", c.general_data_path)
            records = fit_all([(lines[i], *self.builder.chat_row(*split_chat(rows[i]))) for i in chosen], tally)
            if c.truncation == "error":
                tally.raise_if_dropped()
            out.append((records, tally.report("general_rows")))
        return out

    # --- rounds ------------------------------------------------------------------------------------------------

    def _plan(self, parts, qa, general) -> None:
        """The steps of every round (the learning-rate schedule spans them all), fixed when first planned."""
        planned = self.state.data.get("planned_steps")
        if planned is None or len(planned) != len(parts):
            planned = [planned_steps(len(qa[k][0]) + (len(parts[k]) if k else 0) + len(general[k][0]), self.args)
                       for k in range(len(parts))]
            self.state.data["planned_steps"] = planned
            self.state.save()
        finished = {k: self.state.result(f"train_round_{k}")["steps"] for k in range(1, len(parts) + 1)
                    if self.state.finished(f"train_round_{k}")}
        self.plan = StepPlan(planned, finished)
        self.schedule = CrossRoundSchedule.from_args(self.args, sum(planned))

    def _load_round(self, round_no: int) -> None:
        """A resumed run continues from the last finished round's model (rounds/round_<k>/final)."""
        path = self.round_dir(round_no) / "final"
        if self.config.use_lora:
            from peft import PeftModel

            self.rt.model = PeftModel.from_pretrained(self.rt.model, str(path), is_trainable=True)
        else:
            import torch
            from transformers import AutoModelForCausalLM

            self.rt.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).to(self.args.device)
        self.rt.log(f"resuming from round {round_no}'s model in {path}")

    def _train_round(self, k: int, records: list[dict], qa_fit: dict, general_fit: dict):
        c, rt, state = self.config, self.rt, self.state
        name = f"train_round_{k}"
        if not records:
            raise TrainerError(f"round {k} has no training record that fits max_length ({c.max_length}): see the "
                               "rows_dropped lines of the summary, or raise max_length")
        args = self.args if k == 1 else self.arguments(has_eval=False, output_dir=self.round_dir(k))
        state.round_snapshot(k)  # what a Trainer checkpoint of this round resumes from
        resume = state.trainer_checkpoint[1] if state.trainer_checkpoint and state.trainer_checkpoint[0] == k else None
        rt.stage(name, 0, self.plan.steps[k - 1], records=len(records))
        callback = MetricsCallback(RoundEmitter(self.emitter, self.plan, k), num_rows=len(records),
                                   model_name_or_path=c.model_name_or_path, use_lora=c.use_lora)
        offset = self.plan.offset(k)
        peft = None
        if c.use_lora and not _is_peft(rt.model):
            from trainers.common.lora import lora_config

            peft = lora_config(c)
        trainer = sft_trainer(rt.model, rt.tokenizer, args, records, peft_config=peft,
                              scheduler_factory=lambda optimizer: self.schedule.for_round(optimizer, offset))
        install_callback(trainer, callback)
        result = trainer.train(resume_from_checkpoint=resume)
        graceful_stop.training_started()  # the callback's train end re-armed immediate exit; the stages cooperate
        rt.model = trainer.model  # round 1 wrapped it in the adapter; later rounds train the same adapter on
        steps = trainer.state.global_step
        if graceful_stop.requested() and steps < trainer.state.max_steps:
            raise RoundStopped(k, latest_checkpoint(self.round_dir(k)), steps, callback.losses)
        trainer.save_model(str(self.round_dir(k) / "final"))
        self.plan.round_finished(k, steps)
        rt.stage(name, steps, steps)
        info = {"round": k, "records": len(records), "steps": steps, "train_loss": result.training_loss,
                "first_loss": callback.losses[0] if callback.losses else None,
                "final_loss": callback.losses[-1] if callback.losses else None, "losses": callback.losses,
                "learning_rates": logged_learning_rates(trainer), "fit": qa_fit, "general_fit": general_fit}
        if k > 1:
            info["verification"] = state.result(verify_stage(k))
            info["verification_fit"] = self._verification_fit
        state.finish(name, info)
        return trainer

    def _save_final(self, trainer) -> None:
        """The last round's model into the output directory (adapter only with LoRA), and its tokenizer."""
        if trainer is not None:
            self.save(trainer, self.rt.tokenizer, self.out)
        elif self.ranks.is_main:  # every round was finished by an earlier attempt
            self.rt.model.save_pretrained(str(self.out))
            self.rt.tokenizer.save_pretrained(str(self.out))

    # --- summary and stop --------------------------------------------------------------------------------------

    def summary(self, stop: RoundStopped | None = None) -> dict[str, Any]:
        c, state = self.config, self.state
        n_rounds = getattr(self, "n_rounds", c.iter_num)
        rounds = [state.result(f"train_round_{k}") for k in range(1, n_rounds + 1)
                  if state.finished(f"train_round_{k}")]
        losses = [loss for r in rounds for loss in r["losses"]] + (stop.losses if stop else [])
        phases = ["base"] + [f"round_{k}" for k in range(1, n_rounds + 1)]
        evals = {p: state.result(kbqa.stage_name(p)) for p in phases if state.finished(kbqa.stage_name(p))}
        split_stats = state.result("split") or {}
        summary = {
            "task_type": "kbalign",
            "model_name_or_path": c.model_name_or_path,
            "use_lora": c.use_lora,
            "input": self.kb.stats(),
            "embedding": state.result("embedding"),
            "annotation": {"skipped": self.kb.annotated, "short": state.result(SHORT),
                           "clustering": state.result("clustering"), "long": state.result(LONG)},
            "num_pairs": split_stats.get("pairs"),
            "num_eval_questions": split_stats.get("eval_questions"),
            "split": split_stats,
            "iter_num": c.iter_num,
            "rounds": rounds,
            **merged_report([r["fit"] for r in rounds], "rows"),
            **merged_report([r.get("verification_fit", {}) for r in rounds], "verification_rows"),
            **(merged_report([r["general_fit"] for r in rounds], "general_rows") if c.general_data_path else {}),
            "eval_settings": getattr(self, "modes", None),
            "eval": evals,
            "lr_schedule": self.schedule.to_json() if self.schedule else None,
            "global_step": sum(r["steps"] for r in rounds) + (stop.steps if stop else 0),
            "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "runtime_seconds": round(time.monotonic() - self.started, 3),
            "resumed_from": self.ctx.resume_from_checkpoint,
            "annotations_dir": str(self.out / "annotations"),
        }
        return summary

    def _stopped(self, checkpoint: str | None, stage: str, stop: RoundStopped | None = None) -> dict[str, Any]:
        if stop is None and checkpoint:  # a round's stop was reported by the Trainer's own checkpoint event
            self.report_checkpoint(checkpoint, stage)
        summary = self.summary(stop)
        summary["stopped_at"] = stage
        self.emitter.end(step=summary["global_step"], total_steps=self.plan.total if self.plan else 0,
                         stopped_early=True, stopped_at=stage)
        return self.finish(summary, self.out, True, checkpoint)

    # --- the dry run -------------------------------------------------------------------------------------------

    def dry_run(self) -> dict[str, Any]:
        """The training arguments as the run builds them (config_file extras, QLoRA/Liger on this agent), the
        knowledge base's chunks and their token lengths, annotated or general rows too long for max_length."""
        from trainers.common.prompt_fit import PromptFitter
        from trainers.common.token_stats import length_stats
        from trainers.common.generation import count_tokens
        from trainers.sft.data import split_chat

        c = self.config
        kb = load_knowledge_base(c, self.ctx.workspace)
        if c.embedding_model_name_or_path:  # missing: the deeper checks stop here with a warning naming the key
            locate_named_model(c.embedding_model_name_or_path, EMBEDDING_FIELD, self.ctx.workspace)
        with tempfile.TemporaryDirectory(prefix="bugagaric-dry-run-") as scratch:
            self.arguments(has_eval=False, output_dir=Path(scratch) / "output")
        tokenizer = self.load_processor()
        fitter = PromptFitter(tokenizer, c.max_length)
        stats: dict[str, Any] = dict(kb.stats())
        warnings: list[str] = []

        def measure(rows, lines, field: str, name: str, prefix: str) -> None:
            tally = FitTally(field, name, c.max_length)
            given = []
            for row, line in zip(rows, lines):
                prompt, completion = split_chat(row)
                fitted = fitter.measure(prompt, [completion])
                given.append(fitted.given_tokens)
                tally.add(line, fitted)
            if c.truncation == "error":
                tally.raise_if_dropped()
            stats.update(tally.report(prefix))
            stats[f"{prefix}_tokens" if prefix != "rows" else "tokens"] = length_stats(given, c.max_length)
            if tally.dropped:
                warnings.append(f"{tally.message()}; {tally.dropped} row(s) will be skipped")

        if kb.annotated:
            measure(kb.chat_rows, kb.chat_lines, "input_path", c.input_path, "rows")
        else:
            stats["chunk_tokens"] = length_stats([count_tokens(tokenizer, ch.text) for ch in kb.chunks], c.max_length)
            if not c.embedding_model_name_or_path:
                warnings.append(NO_EMBEDDING_MODEL_WARNING)
        if c.general_data_path:
            rows, lines = load_general_rows(c, self.ctx.workspace)
            measure(rows, lines, "general_data_path", c.general_data_path, "general_rows")
        return {**stats, "warnings": warnings}


def logged_learning_rates(trainer) -> list[float]:
    """The learning rate of every logged step of the round (the schedule across rounds shows in them)."""
    return [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]


def train(config: KbalignConfig, ctx: RunContext) -> dict[str, Any]:
    return KBAlignWorkflow(config, ctx).run()
