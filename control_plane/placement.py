"""Where a queued task goes: the agent and devices, best fit.

A task asks for a device count (`gpus`, default 1) or pins device indices (`gpu_vis`). Among the live agents that can
take it now, the one left with the fewest free devices wins (best fit keeps big holes for big tasks); devices are the
lowest free indices. A device is never given to two active tasks.
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


def choose(task: Task, agents: list[Agent], held: dict[str, set[int]]) -> Placement | None:
    pinned, needed = pinned_devices(task), devices_needed(task)
    best: tuple[int, Placement] | None = None
    for agent in agents:
        free = [index for index in device_indices(agent) if index not in held.get(agent.id, set())]
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
