"""The agent's devices: NVIDIA GPUs through NVML (`nvidia-ml-py`, imported as `pynvml`) where there are any, else
`BUGAGARIC_AGENT_SLOTS` CPU slots (kind "cpu", index 0..N-1).

Reported at registration, in every heartbeat (with fresh memory and utilization readings) and by DescribeAgent.
NVML missing or failing (no package, no driver, no GPU) falls back to CPU slots with one info line, never an error.
GPU indices are NVML's, i.e. PCI bus order; trainers get `CUDA_DEVICE_ORDER=PCI_BUS_ID` so CUDA numbers them the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

log = logging.getLogger(__name__)

GPU = "gpu"
CPU = "cpu"


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    kind: str
    uuid: str = ""
    name: str = ""
    memory_total_bytes: int = 0
    memory_free_bytes: int = 0
    utilization_percent: float = 0.0


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Inventory:
    """The device list, fixed at start (its readings refreshed on demand)."""

    def __init__(self, devices: list[DeviceInfo], nvml: Any = None):
        self._devices = devices
        self._nvml = nvml  # the pynvml module while NVML serves the readings

    @classmethod
    def discover(cls, cpu_slots: int, mode: str = "auto") -> Inventory:
        """mode "auto": GPUs through NVML when there are any, else CPU slots; "cpu": CPU slots only."""
        if mode != CPU:
            found = cls._from_nvml()
            if found is not None:
                return found
        return cls.cpu_slots(cpu_slots)

    @classmethod
    def cpu_slots(cls, slots: int) -> Inventory:
        return cls([DeviceInfo(index=i, kind=CPU, name=f"CPU slot {i}") for i in range(max(0, slots))])

    @classmethod
    def _from_nvml(cls) -> Inventory | None:
        try:
            import pynvml
        except ImportError:
            log.info("NVML bindings (nvidia-ml-py) not installed: using CPU slots")
            return None
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded / ...: a host without NVIDIA GPUs
            log.info("NVML unavailable (%s): using CPU slots", exc)
            return None
        try:
            count = pynvml.nvmlDeviceGetCount()
            devices = []
            for index in range(count):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                devices.append(DeviceInfo(index=index, kind=GPU, uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                                          name=_text(pynvml.nvmlDeviceGetName(handle))))
        except Exception as exc:
            log.info("NVML could not list the GPUs (%s): using CPU slots", exc)
            _shutdown(pynvml)
            return None
        if not devices:
            log.info("NVML found no GPU: using CPU slots")
            _shutdown(pynvml)
            return None
        inventory = cls(devices, nvml=pynvml)
        inventory.refresh()
        log.info("NVML: %d GPU(s): %s", len(devices), ", ".join(f"{d.index} {d.name}" for d in devices))
        return inventory

    @property
    def kind(self) -> str:
        return self._devices[0].kind if self._devices else CPU

    @property
    def devices(self) -> list[DeviceInfo]:
        return list(self._devices)

    @property
    def indices(self) -> list[int]:
        return [d.index for d in self._devices]

    def __len__(self) -> int:
        return len(self._devices)

    def refresh(self) -> list[DeviceInfo]:
        """Fresh memory/utilization readings (a few NVML calls per GPU; nothing for CPU slots).

        A reading that fails keeps the previous value: a flaky GPU must not take the heartbeat down.
        """
        if self._nvml is None:
            return self.devices
        nvml = self._nvml
        fresh = []
        for device in self._devices:
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(device.index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                device = replace(device, memory_total_bytes=int(memory.total), memory_free_bytes=int(memory.free))
                device = replace(device, utilization_percent=float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
            except Exception as exc:
                log.debug("NVML reading of GPU %d failed: %s", device.index, exc)
            fresh.append(device)
        self._devices = fresh
        return self.devices

    def close(self) -> None:
        if self._nvml is not None:
            _shutdown(self._nvml)
            self._nvml = None


def _shutdown(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:
        pass
