"""Checks a submitted task's paths and data (the dry run's shallow checks: no tokenizer) in worker processes.

Reading a data file can take seconds to minutes; in worker processes (pebble) it never holds the event loop, the GIL
or the threads that check tokens, and a check that outlives its deadline is killed with its worker. A submit waits a
short budget for the check: a quick answer is a 201 (or a 400 naming the bad line); a slower check goes on after the
answer and its result lands on the task (`task_validation`), which waits in the queue until it has passed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
from concurrent.futures import CancelledError as FutureCancelled
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pebble import ProcessPool

from control_plane.state_machine import IllegalTransition, TaskStatus
from control_plane.task_store import TaskNotFound

log = logging.getLogger(__name__)

CHECK_TIMEOUT_REASON = "invalid_data"  # data too big or too slow to read is the data's problem
CHECK_BROKEN_REASON = "validation_error"


@dataclass(frozen=True)
class CheckResult:
    """`report` is trainers.preflight's report; `reason` says why it failed when not ok."""

    report: dict[str, Any]
    reason: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.report.get("ok"))

    @property
    def failure_reason(self) -> str:
        return self.reason or "invalid_data"

    @property
    def rows(self) -> int:
        return int(self.report.get("rows") or 0)

    @property
    def field(self) -> str:
        return (self.report.get("error") or {}).get("field", "")

    @property
    def message(self) -> str:
        return (self.report.get("error") or {}).get("message", "")

    def error_text(self) -> str:
        """The message, then the first problems one per line (as a trainer's stderr tail shows them)."""
        lines = [self.message]
        for problem in self.report.get("problems") or []:
            where = f"line {problem['line']}"
            lines.append(f"{where}: {problem['field']}: {problem['message']}" if problem.get("field")
                         else f"{where}: {problem['message']}")
        return "\n".join(lines)


def run_check(type_name: str, config_json: str, workspace: str, task_id: str, owner: str, admin: bool) -> dict:
    """In a worker process: the shallow dry run of one submission, for its owner's path scope."""
    from trainers import paths, preflight

    with paths.scope(owner, admin):
        return preflight.check(type_name, json.loads(config_json), Path(workspace), deep=False, task_id=task_id)


def _import_schemas() -> None:
    """A worker's first job: import what every check needs."""
    from trainers import preflight, registry

    del preflight  # imported for its own imports (the checks' code), not called here

    registry.all_types()


class DataChecker:
    def __init__(self, workspace: Path, *, workers: int, timeout_seconds: float, submit_budget_seconds: float):
        self._workspace = workspace
        self._timeout = timeout_seconds
        self._workers = workers
        self.submit_budget = submit_budget_seconds
        # spawn: the control plane runs gRPC threads, which a forked child must not inherit. Workers are recycled
        # now and then so that one huge file's memory does not stay with them.
        self._pool = ProcessPool(max_workers=workers, max_tasks=200, context=multiprocessing.get_context("spawn"))

    def warm(self) -> None:
        """Starts the workers now (importing the trainers' schemas takes a second), not on the first submit."""
        for _ in range(self._workers):
            self._pool.schedule(_import_schemas)

    async def check(self, type_name: str, config_json: str, task_id: str, owner: str, admin: bool) -> CheckResult:
        """Never raises for the user's mistakes, a deadline or a broken worker: the result says what happened."""
        future = self._pool.schedule(
            run_check, args=(type_name, config_json, str(self._workspace), task_id, owner, admin),
            timeout=self._timeout,
        )
        try:
            return CheckResult(await asyncio.wrap_future(future))
        except TimeoutError:
            return _failed(CHECK_TIMEOUT_REASON, f"checking the data took longer than {self._timeout:g} s "
                                                 "(BUGAGARIC_DATA_CHECK_TIMEOUT_SECONDS)")
        except asyncio.CancelledError:
            future.cancel()  # pebble stops the worker running it
            raise
        except (FutureCancelled, Exception) as exc:  # noqa: BLE001 - a crashed worker must not crash the submit
            log.warning("data check of task %s failed: %r", task_id, exc)
            return _failed(CHECK_BROKEN_REASON, f"the data check could not run ({type(exc).__name__})")

    def close(self) -> None:
        self._pool.stop()
        self._pool.join(timeout=5)


def _failed(reason: str, message: str) -> CheckResult:
    return CheckResult({"ok": False, "rows": 0, "problems": [], "error": {"field": "", "message": message}}, reason)


class SubmissionChecks:
    """The data checks of submitted tasks: a submit waits `submit_budget` for its check; one still running then
    finishes in the background, and its result lands on the task (`TaskStore.finish_validation`): a pass lets the
    scheduler place it, a failure fails it with the check's message. Pending checks are restarted after a restart."""

    def __init__(self, store, checker: DataChecker, *, on_passed: Callable[[], None],
                 on_changed: Callable[[str], None]):
        self._store = store
        self._checker = checker
        self._on_passed = on_passed
        self._on_changed = on_changed
        self._background: dict[str, asyncio.Task] = {}

    def start(self, type_name: str, config_json: str, task_id: str, owner: str, admin: bool) -> asyncio.Task:
        return asyncio.create_task(self._checker.check(type_name, config_json, task_id, owner, admin),
                                   name=f"data-check-{task_id}")

    async def within_budget(self, job: asyncio.Task) -> CheckResult | None:
        """The result if the check ends within the submit budget, else None (it keeps running)."""
        done, _ = await asyncio.wait({job}, timeout=self._checker.submit_budget)
        return job.result() if done else None

    def finish_later(self, task_id: str, job: asyncio.Task) -> None:
        async def apply() -> None:
            self.apply(task_id, await job)

        self._background[task_id] = asyncio.create_task(apply(), name=f"data-check-result-{task_id}")
        self._background[task_id].add_done_callback(lambda _: self._background.pop(task_id, None))

    def apply(self, task_id: str, result: CheckResult) -> None:
        if not self._store.finish_validation(task_id, result.ok, result.rows, "" if result.ok else result.message):
            return  # already recorded, or the task was deleted
        if result.ok:
            log.info("task %s: data check passed (%d rows)", task_id, result.rows)
            self._on_passed()
        else:
            log.info("task %s: data check failed: %s", task_id, result.message)
            try:
                self._store.transition(task_id, TaskStatus.FAILED, result.failure_reason, result.message,
                                       error=result.error_text(), error_reason=result.failure_reason)
            except (IllegalTransition, TaskNotFound) as exc:  # stopped or deleted while it was checked
                log.info("task %s: %s", task_id, exc)
        self._on_changed(task_id)

    def resume_pending(self) -> None:
        for task, validation in self._store.pending_validations():
            job = self.start(task.type, task.config_json, task.id, task.owner, validation.admin_paths)
            self.finish_later(task.id, job)

    async def close(self) -> None:
        jobs = list(self._background.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        self._checker.close()
