"""What every KBAlign stage shares: the model and tokenizer, the config, the run's state and metrics, the ranks, and
the loop that works through a stage's items in steps (sharded over the ranks, gathered in item order, progress and
state saved after every step, a stop request honoured between steps). Training code path only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from trainers.common import graceful_stop
from trainers.common.metrics import MetricsEmitter
from trainers.common import generation as lm
from trainers.kbalign.distributed import Ranks, shard, step_windows
from trainers.kbalign.state import StageState


class Stopped(Exception):
    """A stop request ended a stage between two steps; `label` names the snapshot to resume from."""

    def __init__(self, label: str):
        super().__init__(label)
        self.label = label


@dataclass
class Runtime:
    config: Any
    out: Path
    emitter: MetricsEmitter
    ranks: Ranks
    state: StageState
    model: Any = None
    tokenizer: Any = None
    compute_dtype: Any = None  # the dtype generation runs its matrix products in (the training precision)
    embedder: Any = None  # trainers.kbalign.embedder.Embedder, loaded when a stage first needs it
    load_embedder: Callable[[], Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def annotations(self) -> Path:
        return self.out / "annotations"

    def log(self, message: str) -> None:
        """A line of the task log, from rank 0 only (every rank runs the same stages)."""
        if self.ranks.is_main:
            print(message, flush=True)

    def stage(self, name: str, done: int, total: int, **extra: Any) -> None:
        self.emitter.emit("stage", stage=name, done=done, total=total, **extra)

    def get_embedder(self):
        if self.embedder is None and self.load_embedder is not None:
            self.embedder = self.load_embedder()
        return self.embedder

    def generate(self, conversations: list[list[dict[str, str]]], *, prefills: list[str] | str = "",
                 sample: bool = False, max_new_tokens: int | None = None) -> list[str]:
        """Generations of the current model; sampled with the annotation settings, or greedy."""
        c = self.config
        new = max_new_tokens or c.max_new_tokens
        return lm.generate(self.model, self.tokenizer, conversations, prefills=prefills, max_new_tokens=new,
                           max_prompt_tokens=max(16, c.max_length - new), do_sample=sample and c.do_sample,
                           temperature=c.temperature, top_p=c.top_p, batch_size=c.generation_batch_size,
                           compute_dtype=self.compute_dtype)

    def tokens(self, text: str) -> int:
        return lm.count_tokens(self.tokenizer, text)

    def run_items(self, name: str, total: int, work: Callable[[list[int]], list[Any]],
                  commit: Callable[[list[tuple[int, Any]]], None], *, batch_size: int | None = None,
                  progress: Callable[[], dict[str, Any]] | None = None, stoppable: bool = True) -> None:
        """Works through items state.progress(name)..total in steps: each rank runs `work` on its share of the
        step (-> one result per item), the results are gathered onto every rank and `commit`ted in item order
        (rank 0 writes files), the progress is saved and reported. Raises Stopped between steps on a stop request."""
        start = self.state.progress(name)
        self.stage(name, start, total, **(progress() if progress else {}))
        size = batch_size or self.config.generation_batch_size
        for window in step_windows(start, total, self.ranks.world_size, size):
            mine = shard(list(window), self.ranks.rank, self.ranks.world_size)
            results = work(mine) if mine else []
            gathered = sorted(self.ranks.gather(list(zip(mine, results))), key=lambda pair: pair[0])
            commit(gathered)
            self.state.set_progress(name, window.stop)
            self.stage(name, window.stop, total, **(progress() if progress else {}))
            if stoppable and window.stop < total and self.ranks.any(graceful_stop.requested()):
                raise Stopped(f"{name}@{window.stop}")
