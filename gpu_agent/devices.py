"""Checks the devices the control plane's scheduler placed a task on, and hands them to the trainer.

Placement is the control plane's job; the agent only refuses what it cannot honour (a device it does not have, or one
another running task on this agent holds). A request without devices (an older caller) gets the lowest free one.
"""

from __future__ import annotations

from typing import Iterable


class DevicesUnavailable(Exception):
    pass


class BadDevices(Exception):
    pass


def claim(requested: Iterable[int], existing: Iterable[int], held: Iterable[int]) -> list[int]:
    """The devices the task gets: `requested` checked against this host's devices and those held by running tasks."""
    requested, existing, held = list(requested), sorted(set(existing)), set(held)
    if len(set(requested)) != len(requested):
        raise BadDevices(f"devices {requested} name a device twice")
    free = [index for index in existing if index not in held]
    if not requested:
        if not free:
            raise DevicesUnavailable(f"no free device on this agent (all of {existing or 'none'} are held)")
        return free[:1]
    unknown = [index for index in requested if index not in existing]
    if unknown:
        raise DevicesUnavailable(f"device(s) {unknown} do not exist on this agent (it has {existing or 'none'})")
    busy = [index for index in requested if index in held]
    if busy:
        raise DevicesUnavailable(f"device(s) {busy} are held by another running task; free: {free or 'none'}")
    return requested


def visible_devices_env(devices: list[int], kind: str = "gpu") -> dict[str, str]:
    env = {"CUDA_VISIBLE_DEVICES": ",".join(str(index) for index in devices)}
    if kind == "gpu":
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the same numbering as NVML's
    return env
