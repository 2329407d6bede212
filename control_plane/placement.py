"""Where a queued task goes: the agent(s) and devices, best fit.

A task asks for a device count (`gpus`, default 1) or pins device indices (`gpu_vis`). Among the live agents that can
take it now, the one left with the fewest free devices wins (best fit keeps big holes for big tasks); devices are the
lowest free indices. A device is never given to two active tasks.

A multi-node task (a gang: `nodes` > 1, `gpus_per_node` each, or `gpus` that `split_gpus` lets the scheduler split
in equal shares) is placed on distinct agents all at once or not at all: a half-placed gang never holds a device, so
two gangs can never wait on each other. A task that cannot be placed now reserves the agents it will wait for
(`reservation`): tasks behind it may only use the others, so a big task is not starved by a stream of small ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from control_plane.models import Agent, Task


@dataclass(frozen=True)
class Placement:
    agent: Agent
    devices: list[int]


def device_indices(agent: Agent) -> list[int]:
    """The agent's device indices from its reported inventory (slot numbers for an agent that reported none)."""
    devices = json.loads(agent.devices_json or "[]")
    return sorted(int(d["index"]) for d in devices) if devices else list(range(agent.slots))


def pinned_devices(task: Task) -> list[int] | None:
    return [int(part) for part in task.gpu_vis.split(",") if part.strip()] if task.gpu_vis else None


def devices_needed(task: Task) -> int:
    pinned = pinned_devices(task)
    return len(pinned) if pinned else max(1, task.gpus or 1)


def free_devices(agent: Agent, held: dict[str, set[int]]) -> list[int]:
    return [index for index in device_indices(agent) if index not in held.get(agent.id, set())]


def gang_request(config: object) -> dict[str, object]:
    """A parsed config's multi-node request as the task's columns (nodes, gpus_per_node, split_gpus, and the total
    gpus of a gang)."""
    nodes = getattr(config, "nodes", None) or 1
    per_node = getattr(config, "gpus_per_node", None) or 0
    request: dict[str, object] = {"nodes": nodes, "gpus_per_node": per_node,
                                  "split_gpus": bool(getattr(config, "split_gpus", False))}
    if nodes > 1 or per_node:
        request["gpus"] = nodes * max(1, per_node)
    return request


def gang_shape(task: Task) -> tuple[int, int] | None:
    """(nodes, devices per node) of a task that asked for several nodes; None for a one-node task, and for a
    split_gpus task (its shape is chosen at each placement: `split_shapes`)."""
    if (task.nodes or 1) <= 1 or task.split_gpus:
        return None
    return task.nodes, max(1, task.gpus_per_node or 1)


def split_shapes(task: Task) -> list[tuple[int, int]]:
    """The ways `split_gpus` may split `gpus` over agents, fewest nodes first (equal shares: torchrun's nodes run
    the same number of processes)."""
    if not task.split_gpus or (task.gpus or 1) <= 1:
        return []
    total = task.gpus
    return [(nodes, total // nodes) for nodes in range(2, total + 1) if total % nodes == 0]


def place(task: Task, agents: list[Agent], held: dict[str, set[int]], prefer: set[str] = frozenset()
          ) -> list[Placement] | None:
    """The task's placement now, node 0 first (one entry for a one-node task), or None. `prefer`: agents a gang
    goes to first (those holding its checkpoint)."""
    shape = gang_shape(task)
    if shape is not None:
        return choose_gang(*shape, agents, held, prefer)
    one = choose(task, agents, held)
    if one is not None:
        return [one]
    for shape in split_shapes(task):
        gang = choose_gang(*shape, agents, held)
        if gang is not None:
            return gang
    return None


def choose_gang(nodes: int, per_node: int, agents: list[Agent], held: dict[str, set[int]],
                prefer: set[str] = frozenset()) -> list[Placement] | None:
    """`nodes` distinct agents with `per_node` free devices each, `prefer`red ones first, then best fit; None unless
    all of them exist."""
    fitting = [(agent.id not in prefer, len(free) - per_node, agent.id, agent, free)
               for agent in agents if len(free := free_devices(agent, held)) >= per_node]
    if len(fitting) < nodes:
        return None
    fitting.sort(key=lambda fit: fit[:3])
    return [Placement(agent, free[:per_node]) for *_, agent, free in fitting[:nodes]]


def reservation(task: Task, agents: list[Agent], held: dict[str, set[int]]) -> set[str]:
    """The agents a task that cannot be placed now waits for: of those big enough for its shape, the ones with the
    most free devices (the first to fit it). Empty when no shape fits the agents at all."""
    shapes = [gang_shape(task)] if gang_shape(task) else [(1, devices_needed(task)), *split_shapes(task)]
    for nodes, per_node in shapes:
        big_enough = [agent for agent in agents if len(device_indices(agent)) >= per_node]
        if len(big_enough) >= nodes:
            big_enough.sort(key=lambda agent: (-len(free_devices(agent, held)), agent.id))
            return {agent.id for agent in big_enough[:nodes]}
    return set()


def choose(task: Task, agents: list[Agent], held: dict[str, set[int]]) -> Placement | None:
    pinned, needed = pinned_devices(task), devices_needed(task)
    best: tuple[int, Placement] | None = None
    for agent in agents:
        free = free_devices(agent, held)
        if pinned is not None:
            if not set(pinned) <= set(free):
                continue
            devices = pinned
        elif len(free) >= needed:
            devices = free[:needed]
        else:
            continue
        leftover = len(free) - needed
        if best is None or leftover < best[0]:
            best = (leftover, Placement(agent, devices))
    return best[1] if best else None


def largest_agent(agents: list[Agent]) -> tuple[Agent | None, int]:
    """The agent with the most devices, and how many: a task needing more can never run."""
    if not agents:
        return None, 0
    agent = max(agents, key=lambda a: len(device_indices(a)))
    return agent, len(device_indices(agent))
