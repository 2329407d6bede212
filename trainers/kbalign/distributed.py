"""Multi-device runs (torchrun): every rank annotates, embeds, verifies and evaluates its share of each step's work,
and the results are gathered onto every rank in item order, so all ranks hold the same pairs and train on the same
records, and rank 0 writes the files.

Work is dealt in steps of `world_size x batch_size` items taken in order; within a step the items are dealt
round-robin (`items[rank::world_size]`). After a step every item before its end is done, whatever the world size,
so a stopped run can resume on a different number of devices.
"""

from __future__ import annotations

import os
from typing import Any, Sequence, TypeVar

Item = TypeVar("Item")


def shard(items: Sequence[Item], rank: int, world_size: int) -> list[Item]:
    """This rank's share of a step's items: round-robin, so shares differ by one item at most."""
    return list(items[rank::world_size])


def step_windows(start: int, total: int, world_size: int, batch_size: int) -> list[range]:
    """The steps from item `start` to `total`: consecutive windows of world_size x batch_size items."""
    size = max(1, world_size * batch_size)
    return [range(pos, min(total, pos + size)) for pos in range(start, total, size)]


class Ranks:
    """This process's place in the run. A single process (WORLD_SIZE unset or 1) gathers trivially; several need the
    process group, which the training arguments set up (`args.device`)."""

    def __init__(self) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def keeps_state(self) -> bool:
        """Whether this process writes the files a resumed run reads (stage state, annotations, pairs): the first
        process of each node, since nodes share no disk and each resumes from its own copy (as its Trainer
        checkpoints: save_on_each_node); on one node, rank 0 alone. Outputs (model, summary, predictions): rank 0."""
        return self.local_rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def gather(self, mine: list[Any]) -> list[Any]:
        """Every rank's list, concatenated in rank order, on every rank."""
        if not self.distributed:
            return list(mine)
        import torch.distributed as dist

        everyone: list[Any] = [None] * self.world_size
        dist.all_gather_object(everyone, mine)
        return [item for part in everyone for item in part]

    def from_main(self, value: Any) -> Any:
        """Rank 0's value on every rank (e.g. clusters, which must not differ by a rounding between devices)."""
        return self.gather([value if self.is_main else None])[0] if self.distributed else value

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (e.g. a stop request that reached one rank first)."""
        from trainers.common.distributed import agreed

        return agreed(flag) if self.distributed else bool(flag)

    def barrier(self) -> None:
        if self.distributed:
            from trainers.common.distributed import all_ranks_reached

            all_ranks_reached()
