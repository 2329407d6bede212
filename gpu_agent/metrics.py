"""Prometheus metrics of one GPU agent, served on a port of their own (BUGAGARIC_AGENT_METRICS_PORT): read from the
agent when Prometheus scrapes, in prometheus_client's HTTP thread (NVML and the warm pool's status are blocking calls,
so they stay off the event loop).

- `bugagaric_agent_running_trainers`: attempts this agent runs (adopted ones included).
- `bugagaric_agent_devices`: its devices (GPUs, or CPU slots where NVML finds none).
- Per GPU (NVML; nothing for CPU slots): utilization percent, memory used and total bytes.
- The warm trainer pool: idle workers forked ahead, memory held, attempts it started.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gpu_agent.inventory import GPU

log = logging.getLogger(__name__)


class AgentCollector(Collector):
    def __init__(self, agent):
        self._agent = agent

    def describe(self):
        return []  # everything is read at scrape time; nothing to read while registering

    def collect(self):
        agent = self._agent
        runs = list(agent.tasks.values())  # a copy: the event loop adds runs meanwhile
        yield GaugeMetricFamily("bugagaric_agent_running_trainers", "Trainer attempts running on this agent",
                                value=sum(1 for run in runs if not run.ended))
        yield _devices_family(agent.inventory)
        yield from _gpu_families(agent.inventory)
        yield from _warm_pool_families(agent.warm_pool)


def _devices_family(inventory) -> GaugeMetricFamily:
    family = GaugeMetricFamily("bugagaric_agent_devices", "Devices this agent offers, by kind", labels=["kind"])
    family.add_metric([inventory.kind], len(inventory))
    return family


def _gpu_families(inventory):
    devices = [d for d in inventory.refresh() if d.kind == GPU]  # fresh NVML readings; CPU slots have none
    labels = ["index", "uuid", "name"]
    utilization = GaugeMetricFamily("bugagaric_agent_gpu_utilization_percent", "GPU utilization (NVML, over its last "
                                    "sample period)", labels=labels)
    used = GaugeMetricFamily("bugagaric_agent_gpu_memory_used_bytes", "GPU memory in use (NVML)", labels=labels)
    total = GaugeMetricFamily("bugagaric_agent_gpu_memory_total_bytes", "GPU memory (NVML)", labels=labels)
    for device in devices:
        values = [str(device.index), device.uuid, device.name]
        utilization.add_metric(values, device.utilization_percent)
        used.add_metric(values, device.memory_total_bytes - device.memory_free_bytes)
        total.add_metric(values, device.memory_total_bytes)
    return utilization, used, total


def _warm_pool_families(pool):
    idle = GaugeMetricFamily("bugagaric_agent_warm_pool_idle_workers", "Warm-pool workers forked and ready (0 while "
                             "the pool is off or still importing)")
    memory = GaugeMetricFamily("bugagaric_agent_warm_pool_memory_bytes", "Memory the warm pool holds (proportional set "
                               "size of its server and idle workers)")
    launched = CounterMetricFamily("bugagaric_agent_warm_pool_launches", "Attempts started from the warm pool")
    status = None
    if pool is not None:
        try:
            status = pool.status()  # a local round trip to the fork server; None while it is not ready
        except Exception as exc:
            log.debug("metrics: warm pool status failed: %s", exc)
    idle.add_metric([], len(status.get("idle_workers", ())) if status else 0)
    memory.add_metric([], int(status.get("memory_bytes", 0)) if status else 0)
    launched.add_metric([], pool.launched if pool is not None else 0)
    return idle, memory, launched


def agent_registry(agent) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    return registry
