"""Keeps the control plane's grpc.health.v1 answer true to its store: NOT_SERVING (for "" and every service) while the
store does not answer, SERVING again once it does. Load balancers, compose healthchecks and `grpc_health_probe` read
that answer; without this they would see SERVING from a control plane that can serve nothing."""

from __future__ import annotations

import asyncio
import logging
from typing import Sequence

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio
from sqlalchemy import text
from sqlalchemy.engine import Engine

from control_plane.db_calls import in_db_thread

log = logging.getLogger(__name__)

# A probe unanswered this long counts as a failure (a store that hangs rather than refuses).
PROBE_TIMEOUT_SECONDS = 5.0


class StoreHealth:
    """Probes the store (SELECT 1 on a store thread) every `interval_seconds` and sets the health servicer's status
    for `service_names` whenever the answer changes. It starts from SERVING: the store answered at start."""

    def __init__(self, engine: Engine, servicer: health_aio.HealthServicer, service_names: Sequence[str],
                 interval_seconds: float, timeout_seconds: float = PROBE_TIMEOUT_SECONDS) -> None:
        self._engine = engine
        self._servicer = servicer
        self._service_names = tuple(service_names)
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self.reachable = True
        self._task: asyncio.Task[None] | None = None

    async def set_all(self, reachable: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if reachable else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in self._service_names:
            await self._servicer.set(name, status)
        self.reachable = reachable

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-health")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        # One probe at a time: one the store hangs on is waited for again, never joined by others that would take
        # every store thread.
        pending: asyncio.Future[None] | None = None
        while True:
            await asyncio.sleep(self._interval)
            if pending is None:
                pending = asyncio.ensure_future(in_db_thread(self._select_one))
            await asyncio.wait({pending}, timeout=self._timeout)
            if not pending.done():
                error = f"no answer within {self._timeout:g} s"
            else:
                failure = pending.exception()
                error = f"{type(failure).__name__}: {failure}".splitlines()[0] if failure is not None else ""
                pending = None
            if bool(error) == self.reachable:
                if error:
                    log.warning("the store does not answer (%s): gRPC health says NOT_SERVING until it does", error)
                else:
                    log.info("the store answers again: gRPC health says SERVING")
                await self.set_all(not error)

    def _select_one(self) -> None:
        with self._engine.connect() as connection:
            connection.execute(text("SELECT 1"))
