"""Prometheus metrics of the control plane, served on a port of their own (BUGAGARIC_CONTROL_PLANE_METRICS_PORT).

- Tasks by status and the queue depth are read from the store when Prometheus scrapes (a custom collector: the scrape
  runs in prometheus_client's HTTP thread, so the store read blocks no event loop, and the figures are never stale).
- Scheduling latency: seconds from a task's latest entry into `queued` (submit, retry, resume) to its placement,
  observed by the scheduler.
- Ingestion: lines and metric points stored (counters: `rate()` gives per second), and the lag from a batch's arrival
  at the control plane to its commit. The agent's clock is not this host's, so the time a line was written on the
  agent is not compared with this clock: the lag measured is the part this process owns (waiting behind the
  previous write, the write itself).
- gRPC: every method's calls by status code and their duration (a stream: to its end) through a server interceptor.

Each RunningControlPlane has a registry of its own, so tests may run several in one process.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any, Callable

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlmodel import col, func, select

from control_plane.models import Task, TaskValidation
from control_plane.state_machine import TaskStatus

log = logging.getLogger(__name__)

# Seconds. Placement takes milliseconds on an idle cluster and hours behind a long queue.
SCHEDULING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)
INGESTION_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Unary calls take milliseconds; streams (logs followed live, uploads, downloads) last up to hours.
GRPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0, 3600.0)


class StoreCollector(Collector):
    """Tasks by status and the queue's depth, counted in the store at scrape time. A store that cannot be read makes
    `bugagaric_store_up` 0 instead of failing the scrape."""

    def __init__(self, counts: Callable[[], tuple[dict[str, int], int]]):
        self._counts = counts

    def describe(self):
        # Declared without reading the store (registering a collector calls describe()).
        return [GaugeMetricFamily("bugagaric_tasks", "Tasks by status", labels=["status"]),
                GaugeMetricFamily("bugagaric_queue_depth", "Queued tasks waiting for placement"),
                GaugeMetricFamily("bugagaric_store_up", "1 when the scrape could read the store")]

    def collect(self):
        try:
            by_status, depth = self._counts()
            up = 1
        except Exception as exc:  # the store is down: say so, keep the other families scrapable
            log.warning("metrics: store unreadable: %s", exc)
            by_status, depth, up = {}, None, 0
        tasks = GaugeMetricFamily("bugagaric_tasks", "Tasks by status", labels=["status"])
        for status, count in by_status.items():
            tasks.add_metric([status], count)
        yield tasks
        if depth is not None:
            yield GaugeMetricFamily("bugagaric_queue_depth", "Queued tasks waiting for placement (not those whose "
                                    "data are still being checked)", value=depth)
        yield GaugeMetricFamily("bugagaric_store_up", "1 when the scrape could read the store", value=up)


def store_counts(store) -> tuple[dict[str, int], int]:
    """(tasks by status, queue depth), from the store's index counts."""
    by_status = store.status_counts([status.value for status in TaskStatus])
    checking = select(TaskValidation.task_id).where(col(TaskValidation.state) == "pending")
    with store.session() as session:
        depth = session.exec(select(func.count()).select_from(Task).where(
            col(Task.status) == TaskStatus.QUEUED, col(Task.id).not_in(checking))).one()
    return by_status, int(depth)


class ControlPlaneMetrics:
    """The control plane's metric families, in a registry of their own. `store`: read at scrape time (None: no task
    gauges, e.g. a scheduler built alone in a test)."""

    def __init__(self, store=None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.scheduling_latency = Histogram(
            "bugagaric_scheduling_latency_seconds", "From a task's latest entry into the queue to its placement",
            buckets=SCHEDULING_BUCKETS, registry=self.registry)
        self.ingested_lines = Counter("bugagaric_ingested_lines", "Log lines stored by ingestion (rate(): lines per "
                                      "second)", registry=self.registry)
        self.ingested_metric_points = Counter("bugagaric_ingested_metric_points", "Metric points stored by ingestion",
                                              registry=self.registry)
        self.ingestion_lag = Histogram(
            "bugagaric_ingestion_lag_seconds", "From a batch's arrival from its agent to its commit in the store "
            "(the agent's clock is not compared with this one)", buckets=INGESTION_LAG_BUCKETS, registry=self.registry)
        labels = ("grpc_service", "grpc_method", "grpc_type")
        self.grpc_handled = Counter("bugagaric_grpc_server_handled", "gRPC calls ended, by method and status code",
                                    (*labels, "grpc_code"), registry=self.registry)
        self.grpc_duration = Histogram("bugagaric_grpc_server_handling_seconds", "gRPC call duration (a stream: "
                                       "from its start to its end)", labels, buckets=GRPC_BUCKETS,
                                       registry=self.registry)
        if store is not None:
            self.registry.register(StoreCollector(lambda: store_counts(store)))

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return GrpcMetricsInterceptor(self)


# -- gRPC ------------------------------------------------------------------------------------------------------------

_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
# (request streaming, response streaming) -> the grpc_type label
_KINDS = {(False, False): "unary", (False, True): "server_stream", (True, False): "client_stream",
          (True, True): "bidi_stream"}


def _code_name(code: Any, default: str) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        return _CODE_NAMES.get(code, default)
    return default


class GrpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every registered method (unknown methods never reach a handler, so the labels stay bounded).
    Goes first in the server's interceptor list, so refused calls (UNAUTHENTICATED) are counted too."""

    def __init__(self, metrics: ControlPlaneMetrics):
        self._metrics = metrics

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        return _timed(handler, self._metrics, service, method)


def _timed(handler: grpc.RpcMethodHandler, metrics: ControlPlaneMetrics, service: str,
           method: str) -> grpc.RpcMethodHandler:
    kind = _KINDS[bool(handler.request_streaming), bool(handler.response_streaming)]
    behaviour = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    labels = {"grpc_service": service, "grpc_method": method, "grpc_type": kind}

    def done(started: float, context, failed: BaseException | None) -> None:
        if failed is None:
            code = _code_name(context.code(), "OK")
        elif isinstance(failed, (GeneratorExit, asyncio.CancelledError)):  # the client went away
            code = "CANCELLED"
        else:  # an abort sets the code; any other exception is answered UNKNOWN
            code = _code_name(context.code(), "UNKNOWN")
        metrics.grpc_handled.labels(**labels, grpc_code=code).inc()
        metrics.grpc_duration.labels(**labels).observe(time.perf_counter() - started)

    if inspect.isasyncgenfunction(behaviour):
        async def wrapped(request, context):
            started, failed = time.perf_counter(), None
            try:
                async for response in behaviour(request, context):
                    yield response
            except BaseException as exc:
                failed = exc
                raise
            finally:
                done(started, context, failed)
    else:  # a coroutine (unary answers, or a stream written with context.write)
        async def wrapped(request, context):
            started, failed = time.perf_counter(), None
            try:
                result = behaviour(request, context)
                return await result if inspect.isawaitable(result) else result
            except BaseException as exc:
                failed = exc
                raise
            finally:
                done(started, context, failed)

    make = {"unary": grpc.unary_unary_rpc_method_handler, "server_stream": grpc.unary_stream_rpc_method_handler,
            "client_stream": grpc.stream_unary_rpc_method_handler,
            "bidi_stream": grpc.stream_stream_rpc_method_handler}[kind]
    return make(wrapped, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
