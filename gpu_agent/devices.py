"""Which devices a task gets on this host, handed to the trainer as CUDA_VISIBLE_DEVICES.

`gpu_vis` (the seed's key, e.g. "0,1") pins devices; otherwise `gpus` (default 1) takes that many devices that no
other running task on this agent holds. Device indices are 0..slots-1 (the scheduling issue brings real inventory).
"""

from __future__ import annotations

from typing import Iterable


class DevicesBusy(Exception):
    pass


def pick_devices(gpu_vis: str | None, gpus: int | None, busy: Iterable[int], total: int) -> list[int]:
    if gpu_vis:
        return [int(part) for part in gpu_vis.split(",")]
    wanted = gpus or 1
    free = [index for index in range(total) if index not in set(busy)]
    if len(free) < wanted:
        raise DevicesBusy(f"the task needs {wanted} device(s); free on this agent: {free or 'none'}")
    return free[:wanted]


def visible_devices_env(devices: list[int]) -> dict[str, str]:
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(index) for index in devices)}
