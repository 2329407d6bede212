"""One learning-rate schedule over all rounds, and one step count over all rounds.

The reference code (iter_pipeline.sh) warms up in round 1 only and decays over `iter_num x steps per round`: the
rounds are one run cut in pieces. Here the schedule is transformers' own (`get_scheduler` with the config's
`lr_scheduler_type`, warm-up `warmup_ratio` of the whole run) planned over the steps of all rounds; each round's
trainer gets a slice of it, shifted by the steps the earlier rounds ran. Each round starts a fresh optimizer (its
moments are not carried over; the adapter weights are).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

from trainers.errors import ConfigError


def planned_steps(n_records: int, args) -> int:
    """The optimizer steps the Trainer will run on n_records (every rank sees 1/world_size of the batches)."""
    if args.max_steps and args.max_steps > 0:
        return args.max_steps
    batches = math.ceil(n_records / (args.per_device_train_batch_size * max(1, args.world_size)))
    per_epoch = max(1, math.ceil(batches / args.gradient_accumulation_steps))
    return math.ceil(args.num_train_epochs * per_epoch)


def _shifted(factor: Callable[[int], float], offset: int, step: int) -> float:
    return factor(step + offset)


@dataclass(frozen=True)
class CrossRoundSchedule:
    """The run's schedule: `scheduler_type` with `warmup_steps` over `total_steps` (all rounds together)."""

    scheduler_type: str
    warmup_steps: int
    total_steps: int
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_args(cls, args, total_steps: int) -> "CrossRoundSchedule":
        total = max(1, total_steps)
        return cls(str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
                   args.get_warmup_steps(total), total, dict(args.lr_scheduler_kwargs or {}))

    def _factors(self, optimizer) -> list[Callable[[int], float]]:
        import torch
        from transformers import get_scheduler

        # Built on a throwaway optimizer: only its per-step factors are wanted.
        probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        base = get_scheduler(self.scheduler_type, probe, num_warmup_steps=self.warmup_steps,
                             num_training_steps=self.total_steps, scheduler_specific_kwargs=self.kwargs)
        factors = getattr(base, "lr_lambdas", None)
        if not factors:
            raise ConfigError("lr_scheduler_type", f"lr_scheduler_type: {self.scheduler_type!r} cannot run as one "
                                                   "schedule across KBAlign's rounds; use linear, cosine, ...")
        return [factors[0]] * len(optimizer.param_groups)

    def factor(self, step: int) -> float:
        """The multiplier of the peak learning rate at the run's `step` (0-based)."""
        import torch

        return self._factors(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0))[0](step)

    def for_round(self, optimizer, offset: int):
        """The round's scheduler: the run's schedule from step `offset` on (a LambdaLR, so a Trainer checkpoint
        saves and restores its position)."""
        from torch.optim.lr_scheduler import LambdaLR

        return LambdaLR(optimizer, [partial(_shifted, f, offset) for f in self._factors(optimizer)])

    def to_json(self) -> dict[str, Any]:
        return {"type": self.scheduler_type, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


class StepPlan:
    """One step count over all rounds: planned steps per round, corrected by what each round actually ran."""

    def __init__(self, planned: list[int], finished: dict[int, int] | None = None):
        self.steps = list(planned)
        for round_no, steps in (finished or {}).items():
            self.steps[round_no - 1] = steps
        self.finished = dict(finished or {})

    @property
    def total(self) -> int:
        return sum(self.steps)

    def offset(self, round_no: int) -> int:
        """Steps run before round `round_no`."""
        return sum(self.steps[:round_no - 1])

    def round_started(self, round_no: int, steps: int | None) -> None:
        if isinstance(steps, int) and steps > 0 and round_no not in self.finished:
            self.steps[round_no - 1] = steps

    def round_finished(self, round_no: int, steps: int) -> None:
        self.steps[round_no - 1] = steps
        self.finished[round_no] = steps
