"""The submit-time check of a task (a shallow dry run: config, paths and every row, no tokenizer) in warm worker
processes of the agent.

A submit waits a couple of seconds for this answer, so it must not pay for a new interpreter per check (a deep dry run
does: it loads tokenizers). In worker processes (pebble) a check never holds the agent's event loop or GIL, and one
that outlives its deadline is killed with its worker. Workers start without the agent's secrets in their environment
(they read user data), and each check sets, for its own duration, the environment a trainer would get: whose paths,
the fetched inputs, the model roots.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
from concurrent.futures import CancelledError as FutureCancelled
from pathlib import Path
from typing import Any, Mapping

from pebble import ProcessPool

from gpu_agent.process_runner import SECRET_ENV

TIMEOUT_SECONDS = 300.0


class CheckCrashed(RuntimeError):
    pass


def _start_worker() -> None:
    for name in SECRET_ENV:
        os.environ.pop(name, None)
    from trainers import preflight, registry

    del preflight  # imported now for its imports (the checks' code), not called here
    registry.all_types()


def _check(type_name: str, config_json: str, workspace: str, env: Mapping[str, str]) -> dict[str, Any]:
    from trainers import preflight

    saved = {name: os.environ.get(name) for name in (*env, "BUGAGARIC_WORKSPACE")}
    os.environ.update({**env, "BUGAGARIC_WORKSPACE": workspace})
    try:
        try:
            raw = json.loads(config_json or "{}")
        except json.JSONDecodeError as exc:
            return preflight.failed_report(type_name, "config", f"config is not valid JSON: {exc}")
        return preflight.check(type_name, raw, Path(workspace), deep=False)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class ShallowChecks:
    def __init__(self, workspace: Path, workers: int = 2, timeout_seconds: float = TIMEOUT_SECONDS):
        self._workspace = workspace
        self._timeout = timeout_seconds
        # spawn: the agent runs gRPC threads, which a forked child must not inherit. Workers are recycled now and
        # then, so that one huge file's memory does not stay with them.
        self._pool = ProcessPool(max_workers=workers, max_tasks=200, initializer=_start_worker,
                                 context=multiprocessing.get_context("spawn"))
        for _ in range(workers):  # start them now, not on the first submit
            self._pool.schedule(_noop)

    async def check(self, type_name: str, config_json: str, env: Mapping[str, str]) -> dict[str, Any]:
        """preflight's report; CheckCrashed when the check could not run or took too long."""
        future = self._pool.schedule(_check, args=(type_name, config_json, str(self._workspace), dict(env)),
                                     timeout=self._timeout)
        try:
            return await asyncio.wrap_future(future)
        except TimeoutError:
            raise CheckCrashed(f"the check took longer than {self._timeout:g} s") from None
        except asyncio.CancelledError:
            future.cancel()  # pebble stops the worker running it
            raise
        except (FutureCancelled, Exception) as exc:  # noqa: BLE001 - a crashed worker is reported, not raised on
            raise CheckCrashed(f"the check could not run ({type(exc).__name__})") from None

    def close(self) -> None:
        self._pool.stop()
        self._pool.join(timeout=5)


def _noop() -> None:
    pass
