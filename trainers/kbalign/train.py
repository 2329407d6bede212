"""KBAlign training: self-annotation of the knowledge base, then iterative tuning with self-verification.

1. chunking        the knowledge base is read and cut into chunks (trainers.kbalign.kb)
2. annotate_short  the model writes "Question: ...\\nAnswer: ..." from single chunks; parsed and filtered
3. clustering      the chunks are embedded with the model's own mean-pooled hidden states and grouped by KMeans
4. annotate_long   the model writes questions that connect the chunks of a group
5. train_round_1   LoRA SFT (trl, shared with the sft type) on part 1 of the pairs
6. verify_round_k  the current model answers the questions of part k and judges its answers against the references
   train_round_k   SFT on part k's pairs plus verification examples (draft -> feedback + corrected answer);
                   the adapter carries over from round to round.

Every stage reports `{"event": "stage", "stage", "done", "total"}` metric events; the training steps of all rounds
share one step count (`step`/`total_steps` run over the whole run, `round`/`round_step` say where in it).
Heavy imports live here; `python -m trainers.kbalign` imports this only after config and data checked out.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from trl import SFTConfig

from trainers.common.cli import RunContext
from trainers.common.eval_split import split_eval
from trainers.common.hf_callback import MetricsCallback
from trainers.common.lora import lora_config
from trainers.common.metrics import MetricsEmitter
from trainers.common.model_loading import load_causal_lm
from trainers.common import graceful_stop
from trainers.common.sft_training import train_sft_records
from trainers.common.training_args import build_args, precision_args
from trainers.errors import TrainerError
from trainers.kbalign import lm
from trainers.kbalign.kb import Chunk
from trainers.kbalign.pairs import (
    Pair, pair_from_chunks, pairs_from_chat_rows, passage_text, prompt_messages, qa_record, split_parts,
    verification_record,
)
from trainers.kbalign.prompts import (
    ANSWER_LABEL, CHECK_REQUEST, JUDGE_PROMPT, LONG_PROMPT, QUESTION_PREFILL, SHORT_PROMPT, VERDICT_PREFILL, QAFilter,
    cut_answer, feedback_completion, judge, numbered, parse_qa, question_key,
)
from trainers.kbalign.spec import KbalignConfig, _load_eval_rows, load_knowledge_base


class StepPlan:
    """One step count over all rounds: planned steps per round, corrected by what each round actually ran."""

    def __init__(self, planned: list[int]):
        self.steps = list(planned)
        self.offset = 0  # steps finished in earlier rounds

    @property
    def total(self) -> int:
        return sum(self.steps)

    def round_started(self, round_no: int, steps: int | None) -> None:
        if isinstance(steps, int) and steps > 0:
            self.steps[round_no - 1] = steps

    def round_finished(self, round_no: int, steps: int) -> None:
        self.steps[round_no - 1] = steps
        self.offset = sum(self.steps[:round_no])


class RoundEmitter(MetricsEmitter):
    """The shared metrics callback's events for one round, moved onto the run's step count: `step`/`total_steps`
    are overall, `round_step`/`round_total_steps` the round's own; a round's start/end become round_start/round_end
    (the run's one start and end event are emitted around all rounds)."""

    def __init__(self, base: MetricsEmitter, plan: StepPlan, round_no: int):
        super().__init__(base.path, base.task_id, base._stdout)
        self.plan, self.round_no = plan, round_no
        self.started = time.monotonic()

    def emit(self, event: str, **values: Any) -> dict[str, Any]:
        values["round"] = self.round_no
        if event == "start":
            self.plan.round_started(self.round_no, values.get("total_steps"))
            self.started = time.monotonic()
        if isinstance(values.get("step"), int):
            values["round_step"] = values["step"]
            values["step"] += self.plan.offset
        if "total_steps" in values:
            values["round_total_steps"] = values["total_steps"]
            values["total_steps"] = self.plan.total
        if values.get("eta_seconds") is not None and values.get("round_step"):
            per_step = (time.monotonic() - self.started) / values["round_step"]
            values["eta_seconds"] = round(per_step * max(0, self.plan.total - values["step"]), 1)
        if event in ("start", "end"):
            event = f"round_{event}"
        return super().emit(event, **values)


def planned_steps(n_records: int, args) -> int:
    """What the Trainer will compute for a dataset of n_records (single process)."""
    if args.max_steps and args.max_steps > 0:
        return args.max_steps
    batches = math.ceil(n_records / args.train_batch_size)
    per_epoch = max(1, math.ceil(batches / args.gradient_accumulation_steps))
    return math.ceil(args.num_train_epochs * per_epoch)


class KBAlignRun:
    def __init__(self, config: KbalignConfig, ctx: RunContext):
        self.config, self.ctx = config, ctx
        self.out = Path(ctx.output_dir)
        self.ann_dir = self.out / "annotations"
        self.ann_dir.mkdir(parents=True, exist_ok=True)
        self.emitter = MetricsEmitter(task_id=ctx.task_id)
        self.filter = QAFilter.from_config(config)
        self.model = self.tokenizer = None
        self.seen_questions: set[str] = set()

    # --- helpers ---------------------------------------------------------------------------------------------------

    def stage(self, name: str, done: int, total: int, **extra: Any) -> None:
        self.emitter.emit("stage", stage=name, done=done, total=total, **extra)

    def n_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat_tokens(self, messages: list[dict[str, str]]) -> int:
        return self.n_tokens(lm.chat_prompt_text(self.tokenizer, messages))

    def fitted_prompt(self, pair: Pair, reserve_tokens: int) -> list[dict[str, str]]:
        """The pair's prompt, its passages cut so that prompt + `reserve_tokens` fit in max_length."""
        def fit(p: Pair) -> list[str]:
            skeleton = prompt_messages(p, True, fit=lambda q: ["."] * len(q.passages))
            budget = self.config.max_length - reserve_tokens - self.chat_tokens(skeleton) - 4
            return lm.fit_passages(self.tokenizer, p.passages, budget)

        return prompt_messages(pair, self.config.train_with_context, fit)

    def write_jsonl(self, name: str, rows: list[dict[str, Any]]) -> Path:
        path = self.ann_dir / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return path

    def generate(self, conversations, **kwargs) -> list[str]:
        c = self.config
        kwargs.setdefault("max_new_tokens", c.max_new_tokens)
        kwargs.setdefault("max_prompt_tokens", max(16, c.max_length - kwargs["max_new_tokens"]))
        return lm.generate(self.model, self.tokenizer, conversations, batch_size=c.generation_batch_size, **kwargs)

    # --- annotation ------------------------------------------------------------------------------------------------

    def annotate(self, grain: str, sources: list[list[Chunk]], target: int) -> tuple[list[Pair], dict[str, Any]]:
        """Generates pairs from the sources (cycled in a seeded order) until `target` pass the filters or the
        budget of target x max_attempts generations is spent. Every generation is written to annotations/<grain>.jsonl
        with whether it was kept and why not."""
        c = self.config
        stage_name = f"annotate_{grain}"
        budget = target * c.max_attempts
        order = list(range(len(sources)))
        random.Random(c.seed + (0 if grain == "short" else 1)).shuffle(order)
        kept: list[Pair] = []
        rejected: Counter[str] = Counter()
        attempts = answered_separately = 0
        self.stage(stage_name, 0, target, attempts=0, max_attempts=budget)
        with (self.ann_dir / f"{grain}.jsonl").open("w", encoding="utf-8") as handle:
            while len(kept) < target and attempts < budget and sources:
                n = min(c.generation_batch_size, budget - attempts)
                batch = [sources[order[(attempts + i) % len(order)]] for i in range(n)]
                attempts += n
                conversations = [self._annotation_messages(grain, chunks) for chunks in batch]
                raw = self.generate(conversations, prefills=QUESTION_PREFILL, do_sample=c.do_sample,
                                    temperature=c.temperature, top_p=c.top_p)
                parsed = [parse_qa(text) for text in raw]
                # No "Answer:" in the reply (the model stopped, or wrote something else): ask for the answer alone.
                missing = [i for i, (q, a) in enumerate(parsed) if q and a is None]
                if missing:
                    prefills = [f"{QUESTION_PREFILL} {parsed[i][0]}\n{ANSWER_LABEL}" for i in missing]
                    follow = self.generate([conversations[i] for i in missing], prefills=prefills,
                                           do_sample=c.do_sample, temperature=c.temperature, top_p=c.top_p)
                    for i, text in zip(missing, follow):
                        parsed[i] = (parsed[i][0], cut_answer(text))
                    answered_separately += len(missing)
                for i, (question, answer) in enumerate(parsed):
                    reason = self.filter.reject_reason(question, answer)
                    key = question_key(question)
                    if reason is None and key in self.seen_questions:
                        reason = "duplicate question"
                    if reason is None and len(kept) >= target:
                        reason = "over target"
                    record = {"grain": grain, "chunk_ids": [ch.id for ch in batch[i]], "question": question,
                              "answer": answer, "raw": QUESTION_PREFILL + raw[i],
                              "answer_asked_separately": i in missing, "kept": reason is None, "reason": reason}
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                    if reason is None:
                        self.seen_questions.add(key)
                        kept.append(pair_from_chunks(grain, question, answer or "", batch[i]))
                    else:
                        rejected[reason] += 1
                handle.flush()
                self.stage(stage_name, len(kept), target, attempts=attempts, max_attempts=budget)
        stats = {"target": target, "generated": attempts, "kept": len(kept), "answer_asked_separately":
                 answered_separately, "rejected": dict(rejected.most_common())}
        print(f"annotate_{grain}: kept {len(kept)}/{target} from {attempts} generations"
              + (f"; rejected: {dict(rejected.most_common())}" if rejected else ""), flush=True)
        return kept, stats

    def _annotation_messages(self, grain: str, chunks: list[Chunk]) -> list[dict[str, str]]:
        c = self.config
        template, key = (SHORT_PROMPT, "passage") if grain == "short" else (LONG_PROMPT, "passages")
        skeleton = [{"role": "user", "content": template.format(**{key: ""})}]
        budget = c.max_length - c.max_new_tokens - self.chat_tokens(skeleton) - self.n_tokens(QUESTION_PREFILL) - 4
        passages = lm.fit_passages(self.tokenizer, [passage_text(ch) for ch in chunks], budget)
        body = passages[0] if grain == "short" else numbered(passages)
        return [{"role": "user", "content": template.format(**{key: body})}]

    def cluster(self, chunks: list[Chunk]) -> list[list[Chunk]]:
        c = self.config
        total = len(chunks)
        self.stage("clustering", 0, total, phase="embedding")
        embeddings = lm.embed(self.model, self.tokenizer, [passage_text(ch) for ch in chunks],
                              max_length=c.max_length, batch_size=c.generation_batch_size,
                              on_batch=lambda done: self.stage("clustering", done, total, phase="embedding"))
        groups, labels = lm.group_by_clusters(embeddings, c.cluster_group_size, c.seed)
        self.cluster_labels = labels
        self.n_clusters = len(set(labels))
        self.stage("clustering", total, total, phase="kmeans", clusters=self.n_clusters, groups=len(groups))
        self.write_jsonl("groups.jsonl", [{"group": i, "cluster": labels[g[0]], "chunk_ids": [chunks[j].id for j in g]}
                                          for i, g in enumerate(groups)])
        return [[chunks[j] for j in g] for g in groups]

    # --- self-verification -----------------------------------------------------------------------------------------

    def verify(self, round_no: int, part: list[Pair]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The current model answers part k's questions (greedy), then judges each draft against the reference. The
        verdict is the first yes/no word of its reply; without one, token-overlap F1 >= verify_overlap_threshold."""
        c = self.config
        name, n = f"verify_round_{round_no}", len(part)
        self.stage(name, 0, 2 * n, phase="draft")
        prompts = [self.fitted_prompt(p, reserve_tokens=c.max_new_tokens) for p in part]
        drafts = [d.strip() for d in self.generate(
            prompts, do_sample=False, on_batch=lambda done: self.stage(name, done, 2 * n, phase="draft"))]
        ref_budget = max(16, c.max_length // 4)
        judge_prompts = [[{"role": "user", "content": JUDGE_PROMPT.format(
            question=lm.trim_to_tokens(self.tokenizer, p.question, ref_budget),
            reference=lm.trim_to_tokens(self.tokenizer, p.answer, ref_budget), draft=draft)}]
            for p, draft in zip(part, drafts)]
        verdicts = self.generate(judge_prompts, prefills=VERDICT_PREFILL, do_sample=False, max_new_tokens=8,
                                 on_batch=lambda done: self.stage(name, n + done, 2 * n, phase="judge"))
        records, log = [], []
        sources: Counter[str] = Counter()
        correct_count = 0
        for pair, prompt, draft, verdict in zip(part, prompts, drafts, verdicts):
            correct, source, overlap = judge(verdict, draft, pair.answer, c.verify_overlap_threshold)
            sources[source] += 1
            correct_count += correct
            log.append({**pair.to_json(), "draft": draft, "verdict_raw": VERDICT_PREFILL + verdict,
                        "verdict_source": source, "overlap_f1": overlap, "correct": correct})
            # The training example holds the draft and the feedback too: its passages get a smaller budget.
            reserve = sum(map(self.n_tokens, (draft, CHECK_REQUEST, feedback_completion(correct, pair.answer)))) + 24
            records.append(verification_record(self.fitted_prompt(pair, reserve), draft, correct, pair.answer))
        self.write_jsonl(f"round_{round_no}_verification.jsonl", log)
        stats = {"checked": n, "correct": correct_count, "verdict_from_model": sources["model"],
                 "verdict_from_overlap": sources["overlap"]}
        print(f"{name}: {correct_count}/{n} drafts judged correct ({sources['model']} verdicts from the model, "
              f"{sources['overlap']} by token overlap)", flush=True)
        return records, stats

    # --- the run ---------------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        c, ctx = self.config, self.ctx
        started = time.monotonic()
        kb = load_knowledge_base(c, ctx.workspace)
        self.stage("chunking", kb.documents, kb.documents, **kb.stats())

        dtype = "bfloat16" if precision_args(c.precision)["bf16"] else "float32"
        self.model, self.tokenizer = load_causal_lm(c.model_name_or_path, ctx.workspace, dtype=dtype)
        import torch

        if torch.cuda.is_available():
            self.model.to("cuda")  # generation and embedding run before the Trainer places the model

        annotation: dict[str, Any]
        if kb.annotated:
            pairs = pairs_from_chat_rows(kb.chat_rows)
            annotation = {"skipped": True, "chat_rows": len(pairs)}
            print(f"input is annotated chat rows: skipping self-annotation ({len(pairs)} pairs)", flush=True)
        else:
            annotation = {"skipped": False}
            self.write_jsonl("chunks.jsonl", [{"id": ch.id, "title": ch.title, "source": ch.source, "text": ch.text}
                                              for ch in kb.chunks])
            short, annotation["short"] = self.annotate("short", [[ch] for ch in kb.chunks], c.short_pairs)
            long: list[Pair] = []
            if c.long_pairs > 0 and len(kb.chunks) >= 2:
                groups = self.cluster(kb.chunks)
                annotation["clusters"], annotation["groups"] = self.n_clusters, len(groups)
                long, annotation["long"] = self.annotate("long", groups, c.long_pairs)
            elif c.long_pairs > 0:
                print("annotate_long: skipped, the knowledge base has a single chunk", flush=True)
                self.stage("annotate_long", 0, 0, skipped="single chunk")
                annotation["long"] = {"target": c.long_pairs, "generated": 0, "kept": 0, "skipped": "single chunk"}
            pairs = short + long
            if not pairs:
                tried = sum(annotation[g]["generated"] for g in ("short", "long") if g in annotation)
                reasons = Counter()
                for g in ("short", "long"):
                    reasons.update(annotation.get(g, {}).get("rejected", {}))
                top = ", ".join(f"{r} x{k}" for r, k in reasons.most_common(3)) or "none"
                raise TrainerError(
                    f"self-annotation kept no question-answer pair: all {tried} generations failed the filters "
                    f"({self.filter.describe()}; max_attempts={c.max_attempts}); most common rejections: {top}. "
                    f"Relax the filters or raise max_attempts; see {self.ann_dir}")

        eval_pairs: list[Pair] = []
        if c.eval_data_path:
            eval_pairs = pairs_from_chat_rows(_load_eval_rows(c, ctx.workspace))
        else:
            pairs, eval_pairs = split_eval(pairs, eval_ratio=c.eval_ratio, seed=c.seed)
        parts = split_parts(pairs, c.iter_num, c.seed)
        if len(parts) < c.iter_num:
            print(f"only {len(pairs)} pair(s): running {len(parts)} round(s) instead of iter_num={c.iter_num}",
                  flush=True)

        qa_reserve = lambda p: self.n_tokens(p.answer) + 8  # noqa: E731
        train_messages = []
        for k, part in enumerate(parts, start=1):
            for p in part:
                record = qa_record(self.fitted_prompt(p, qa_reserve(p)), p.answer)
                train_messages.append({"messages": record["prompt"] + record["completion"], "round": k,
                                       "grain": p.grain})
        self.write_jsonl("train_messages.jsonl", train_messages)
        eval_records = [qa_record(self.fitted_prompt(p, qa_reserve(p)), p.answer) for p in eval_pairs]

        args_of = lambda k: build_args(  # noqa: E731
            SFTConfig, c, self.out / "rounds" / f"round_{k}", ctx.workspace, has_eval=bool(eval_records),
            max_length=c.max_length)
        first_args = args_of(1)
        plan = StepPlan([planned_steps(len(p) * (1 if k == 1 else 2), first_args) for k, p in enumerate(parts, 1)])
        self.emitter.emit("start", step=0, total_steps=plan.total, rounds=len(parts), num_pairs=len(pairs),
                          model_name_or_path=c.model_name_or_path, use_lora=c.use_lora)

        rounds: list[dict[str, Any]] = []
        all_losses: list[float] = []
        trainer = None
        model = self.model
        for k, part in enumerate(parts, start=1):
            records = [qa_record(self.fitted_prompt(p, qa_reserve(p)), p.answer) for p in part]
            info: dict[str, Any] = {"round": k, "pairs": len(part), "grains": dict(Counter(p.grain for p in part))}
            if k > 1:
                self.model = model
                verification, info["verification"] = self.verify(k, part)
                records += verification
            info["records"] = len(records)
            name = f"train_round_{k}"
            self.stage(name, 0, plan.steps[k - 1])
            callback = MetricsCallback(RoundEmitter(self.emitter, plan, k), num_rows=len(records),
                                       model_name_or_path=c.model_name_or_path, use_lora=c.use_lora)
            trainer, result = train_sft_records(
                model, self.tokenizer, first_args if k == 1 else args_of(k), records,
                eval_records=eval_records or None,
                peft_config=lora_config(c, model) if c.use_lora and k == 1 else None,
                callback=callback,
            )
            model = trainer.model  # round 1 wrapped it in the adapter; later rounds train the same adapter on
            plan.round_finished(k, trainer.state.global_step)
            self.stage(name, trainer.state.global_step, trainer.state.global_step)
            info.update(steps=trainer.state.global_step, first_loss=callback.losses[0] if callback.losses else None,
                        final_loss=callback.losses[-1] if callback.losses else None, train_loss=result.training_loss,
                        losses=callback.losses)
            all_losses += callback.losses
            rounds.append(info)
            if graceful_stop.requested():
                print(f"stopped after round {k} of {len(parts)}: saving what is trained so far", flush=True)
                break

        assert trainer is not None
        trainer.save_model(str(self.out))  # adapter only when LoRA, full weights otherwise
        self.tokenizer.save_pretrained(str(self.out))
        runtime = round(time.monotonic() - started, 3)
        first_loss, final_loss = (all_losses[0], all_losses[-1]) if all_losses else (None, None)
        self.emitter.end(step=plan.total, total_steps=plan.total, rounds=len(rounds), train_runtime=runtime,
                         first_loss=first_loss, final_loss=final_loss)
        summary = {
            "task_type": "kbalign",
            "model_name_or_path": c.model_name_or_path,
            "use_lora": c.use_lora,
            "input": kb.stats(),
            "annotation": annotation,
            "num_pairs": len(pairs),
            "num_eval_pairs": len(eval_pairs),
            "iter_num": c.iter_num,
            "rounds": rounds,
            "global_step": plan.total,
            "first_loss": first_loss,
            "final_loss": final_loss,
            "runtime_seconds": runtime,
            "annotations_dir": str(self.ann_dir),
            "output_dir": str(self.out),
        }
        (self.out / "training_summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False),
                                                         encoding="utf-8")
        print(f"saved {'LoRA adapter' if c.use_lora else 'model'} to {self.out}", flush=True)
        return summary


def train(config: KbalignConfig, ctx: RunContext) -> dict[str, Any]:
    if ctx.resume_from_checkpoint:
        # Its rounds re-annotate with the model as it grows: there is no single trainer state to continue.
        print("kbalign cannot continue from a checkpoint mid-run: starting over", flush=True)
    return KBAlignRun(config, ctx).run()
