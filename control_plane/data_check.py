"""Checks the paths and data of a submitted task where they live: on an agent, by a shallow dry run (no tokenizer).

The control plane reads no task data itself. A submit waits a short budget for the check: a quick answer is a 201 (or
a 400 naming the bad line); a slower check goes on after the answer and its result lands on the task
(`task_validation`), which waits in the queue until it has passed. The check is asked of the live agents that could
run the task, one after the other, until one finds the data fine or finds them wrong (an agent that cannot see a file
passes the question on to the next). With no live agent the trainer's own check on its agent is the only one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable

import grpc

from control_plane.agent_clients import AgentClients
from control_plane.db_calls import in_db_thread
from control_plane.models import Agent
from trainers.errors import DataProblem, problem_lines
from control_plane.state_machine import IllegalTransition, TaskStatus
from control_plane.task_store import TaskNotFound

log = logging.getLogger(__name__)

CHECK_TIMEOUT_REASON = "invalid_data"  # data too big or too slow to read is the data's problem
CHECK_BROKEN_REASON = "validation_error"
BUSY_RETRY_SECONDS = 0.5


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
        """The message, then the first problems it does not name, one per line (as a trainer's stderr tail shows them)."""
        problems = [DataProblem(p["line"], p.get("field", ""), p["message"]) for p in self.report.get("problems") or []]
        return "\n".join(problem_lines(self.message, problems))


def report_from_proto(report) -> dict[str, Any]:
    """An agent's ValidationReport as the dict trainers.preflight prints."""
    error = {"field": report.error_field, "message": report.error_message} if report.error_message else None
    return {"ok": report.ok, "type": report.type, "rows": report.rows, "error": error,
            "problems": [{"line": p.line, "field": p.field, "message": p.message} for p in report.problems],
            "agent_id": report.agent_id}


class DataChecker:
    """Runs a submission's shallow dry run on an agent. `candidates(type, config_json)` lists the live agents that
    could run the task; `request_for(...)` builds the agent's ValidateTaskRequest (with the inputs to fetch). Both
    read the store: they run on store threads."""

    def __init__(self, clients: AgentClients, *, candidates: Callable[[str, str], list[Agent]],
                 request_for: Callable[..., Any], timeout_seconds: float, submit_budget_seconds: float):
        self._clients = clients
        self._candidates = candidates
        self._request_for = request_for
        self._timeout = timeout_seconds
        self.submit_budget = submit_budget_seconds

    async def check(self, type_name: str, config_json: str, task_id: str, owner: str, admin: bool) -> CheckResult:
        """Never raises for the user's mistakes, a deadline or a broken agent: the result says what happened."""
        agents = await in_db_thread(self._candidates, type_name, config_json)
        if not agents:
            return CheckResult({"ok": True, "rows": 0, "problems": [], "error": None,
                                "note": "no live agent: the trainer checks the data on its agent"})
        request = await in_db_thread(self._request_for, type_name, config_json, owner, admin)
        first_failure: CheckResult | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while True:
            busy = False
            for agent in agents:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    reply = await self._clients.stub(agent.address).ValidateTask(request, timeout=remaining)
                except grpc.aio.AioRpcError as exc:
                    busy = busy or exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    log.warning("data check of task %s on agent %s: %s %s", task_id, agent.id, exc.code().name,
                                exc.details())
                    continue
                result = CheckResult(report_from_proto(reply))
                if result.ok or result.report["problems"] or result.rows:
                    return result  # fine, or it read the data and found them wrong
                first_failure = first_failure or result
            if first_failure is not None:
                return first_failure
            if not busy or loop.time() >= deadline:
                break
            await asyncio.sleep(BUSY_RETRY_SECONDS)  # every agent that could check it is busy: ask again shortly
        if loop.time() >= deadline:
            return _failed(CHECK_TIMEOUT_REASON, f"checking the data took longer than {self._timeout:g} s "
                                                 "(BUGAGARIC_DATA_CHECK_TIMEOUT_SECONDS)")
        return _failed(CHECK_BROKEN_REASON, "the data check could not run on any agent")


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
            result = await job
            if await in_db_thread(self.apply, task_id, result):
                self._on_changed(task_id)
                if result.ok:
                    self._on_passed()

        self._background[task_id] = asyncio.create_task(apply(), name=f"data-check-result-{task_id}")
        self._background[task_id].add_done_callback(lambda _: self._background.pop(task_id, None))

    def apply(self, task_id: str, result: CheckResult) -> bool:
        """Records the result on the task (on a store thread); False when it was already recorded or the task is
        gone. The caller tells the scheduler and the task's watchers (on the event loop)."""
        if not self._store.finish_validation(task_id, result.ok, result.rows, "" if result.ok else result.message):
            return False
        if result.ok:
            log.info("task %s: data check passed (%d rows)", task_id, result.rows)
        else:
            log.info("task %s: data check failed: %s", task_id, result.message)
            try:
                self._store.transition(task_id, TaskStatus.FAILED, result.failure_reason, result.message,
                                       error=result.error_text(), error_reason=result.failure_reason)
            except (IllegalTransition, TaskNotFound) as exc:  # stopped or deleted while it was checked
                log.info("task %s: %s", task_id, exc)
        return True

    async def resume_pending(self) -> None:
        for task, validation in await in_db_thread(self._store.pending_validations):
            job = self.start(task.type, task.config_json, task.id, task.owner, validation.admin_paths)
            self.finish_later(task.id, job)

    async def close(self) -> None:
        jobs = list(self._background.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
