"""A stop request (SIGTERM from the agent) during training ends the run at the next step boundary with a checkpoint
saved, within the agent's grace period; before training has started there is nothing to save, so the process exits.

The resumed attempt gets the checkpoint back through BUGAGARIC_RESUME_FROM_CHECKPOINT.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from trainers.errors import EXIT_STOPPED_EARLY


class StoppedEarly(Exception):
    """Raised by a trainer after a stop request ended its training: the checkpoint and the summary (stopped_early)
    are written, the final model is not. The CLI exits with EXIT_STOPPED_EARLY, so the run never reads as finished."""

    def __init__(self, checkpoint: str | None):
        super().__init__(f"stopped early; resume from {checkpoint}" if checkpoint else "stopped early")
        self.checkpoint = checkpoint


_requested = threading.Event()
_training = threading.Event()


def install() -> None:
    """Called once by the trainer CLI, before any heavy import."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum, frame) -> None:
    _requested.set()
    if not _training.is_set():
        print("stop requested before training started: exiting", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_STOPPED_EARLY)
    print("stop requested: saving a checkpoint at the end of this step", flush=True)


def requested() -> bool:
    return _requested.is_set()


def request() -> None:
    """What a SIGTERM does, for code that stops a run inside this process (in-process tests)."""
    _on_sigterm(signal.SIGTERM, None)


def reset() -> None:
    """Forgets a stop request and the training state: the next run in this process starts clean."""
    _requested.clear()
    _training.clear()


def training_started() -> None:
    _training.set()
    if _requested.is_set():  # the signal came while the trainer was being built
        print("stop requested: saving a checkpoint at the end of this step", flush=True)


def training_finished() -> None:
    """Outside a training loop (e.g. between kbalign's rounds) a stop exits at once again."""
    _training.clear()


def resume_checkpoint() -> str | None:
    return os.environ.get("BUGAGARIC_RESUME_FROM_CHECKPOINT") or None


def is_main_process() -> bool:
    """Rank 0 of a data-parallel (torchrun) run, or the only process: the one that reports and writes files."""
    return int(os.environ.get("RANK", "0")) == 0
