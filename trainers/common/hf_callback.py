"""The transformers TrainerCallback that turns Trainer logs into metric events. Imports transformers: only training
code imports this module."""

from __future__ import annotations

import os
import time
from typing import Any

from transformers import TrainerCallback

from trainers.common import graceful_stop
from trainers.common.distributed import agreed, all_ranks_reached
from trainers.common.metrics import MetricsEmitter

# Keys of the final Trainer log that describe the whole run rather than one step.
_END_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss"}


class MetricsCallback(TrainerCallback):
    def __init__(self, emitter: MetricsEmitter, **start_info: Any):
        self.emitter = emitter
        self.start_info = start_info  # extra fields of the "start" event (num_rows, model, ...)
        self.started = time.monotonic()
        self.start_step = 0
        self.losses: list[float] = []
        self.ended = False
        self.end_record: dict[str, Any] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        graceful_stop.training_started()
        self.started = time.monotonic()
        self.start_step = state.global_step
        self.emitter.emit("start", step=state.global_step, total_steps=state.max_steps, **self.start_info)

    def _eta(self, state) -> float | None:
        done = state.global_step - self.start_step
        if done <= 0 or not state.max_steps:
            return None
        per_step = (time.monotonic() - self.started) / done
        return round(per_step * max(0, state.max_steps - state.global_step), 1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.ended:  # an evaluation after training: the workflow reports it as an `eval` event
            return
        logs = dict(logs or {})
        if "train_runtime" in logs:
            self._end(state, logs)
            return
        values: dict[str, Any] = {
            "step": state.global_step,
            "total_steps": state.max_steps,
            "epoch": round(state.epoch, 4) if state.epoch is not None else None,
        }
        # Every numeric value the trainer logged (loss, learning_rate, grad_norm, rewards/chosen, ...).
        for key, value in logs.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in values:
                values[key] = value
        if "loss" in values:
            self.losses.append(float(values["loss"]))
        values["eta_seconds"] = self._eta(state)
        self.emitter.step(**values)

    def on_step_end(self, args, state, control, **kwargs):
        # Agreed over the ranks (the agent may signal one rank, or the ranks a moment apart): all stop at this step,
        # so none is left waiting in a collective of the next one.
        if agreed(graceful_stop.requested()):
            if not graceful_stop.requested():
                graceful_stop.request()  # another rank was asked: this one stops with it, and says so
            control.should_save = True  # a checkpoint to resume from, whatever save_steps says
            control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        # Every rank gets here after its own save. A checkpoint of a multi-node run is one to resume from only once
        # every node has written its copy (save_on_each_node): rank 0 reports it after all have, never before, so a
        # node killed mid-save leaves the previous checkpoint the latest.
        all_ranks_reached()
        path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        self.emitter.emit("checkpoint", step=state.global_step, total_steps=state.max_steps, path=path)

    def on_train_end(self, args, state, control, **kwargs):
        graceful_stop.training_finished()
        if not self.ended:
            self._end(state, {})

    def _end(self, state, logs: dict[str, Any]) -> None:
        self.ended = True
        values: dict[str, Any] = {"step": state.global_step, "total_steps": state.max_steps}
        values.update({k: v for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        values.setdefault("train_runtime", round(time.monotonic() - self.started, 3))
        values["final_loss"] = self.losses[-1] if self.losses else logs.get("train_loss")
        values["first_loss"] = self.losses[0] if self.losses else None
        values["stopped_early"] = graceful_stop.requested()  # a stopped run's end is not a finish
        self.end_record = self.emitter.end(**values)


def run_summary(trainer, result, callback: MetricsCallback) -> dict[str, Any]:
    """The figures every training_summary.json carries, from a finished `trainer.train()`."""
    return {
        "global_step": trainer.state.global_step,
        "first_loss": callback.losses[0] if callback.losses else None,
        "final_loss": callback.losses[-1] if callback.losses else None,
        "train_loss": result.training_loss,
        "train_runtime": result.metrics.get("train_runtime"),
        "peak_gpu_memory_gb": peak_gpu_memory_gb(),
    }


def peak_gpu_memory_gb() -> float | None:
    """The most CUDA memory this process's tensors held (what sizing a batch needs); None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


def write_summary(output_dir, summary: dict[str, Any]) -> None:
    """`training_summary.json` beside the saved model."""
    import json
    from pathlib import Path

    path = Path(output_dir) / "training_summary.json"
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")


def install(trainer, callback: MetricsCallback) -> None:
    """Adds our callback and drops the Trainer's own dict printer (our callback prints a readable line)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(callback)
