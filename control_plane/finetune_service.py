"""The client-facing FinetuneService: submit, read, list, stop, delete tasks; logs, metrics, templates, health."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path
from typing import Awaitable, Callable

import grpc
from sqlalchemy import text

from control_plane.agent_clients import AgentClients
from control_plane.auth_service import caller
from control_plane.converters import agent_to_proto, line_to_proto, metric_to_proto, task_to_proto
from control_plane.grpc_errors import abort
from control_plane.data_check import CHECK_BROKEN_REASON, SubmissionChecks
from control_plane.models import Task, TaskValidation, utcnow
from control_plane.notifier import TaskChangeNotifier
from control_plane.placement import device_indices, devices_needed, largest_agent, pinned_devices
from control_plane.scheduler import Scheduler
from control_plane.state_machine import TERMINAL, IllegalTransition, TaskStatus
from control_plane.task_store import TaskNotFound, TaskStillActive, TaskStore
from control_plane.template_store import TemplateStore
from protos import agent_pb2, common_pb2, control_plane_pb2, control_plane_pb2_grpc
from protos.json_values import JsonProblem, loads
from trainers import registry
from trainers.errors import ConfigError
from trainers.output_dirs import default_output_dir, task_output_dir
from trainers.paths import resolve

log = logging.getLogger(__name__)

MAX_LIST_LIMIT = 500
MAX_LOG_LIMIT = 10000
STREAM_PAGE = 1000
# Readers re-check the store at least this often even without a wake-up (e.g. after a missed notification).
STREAM_POLL_SECONDS = 1.0
VALIDATE_TIMEOUT_SECONDS = 330.0  # the agent's own limit on a dry run is 300 s


class FinetuneService(control_plane_pb2_grpc.FinetuneServiceServicer):
    def __init__(
        self, store: TaskStore, templates: TemplateStore, scheduler: Scheduler, clients: AgentClients,
        notifier: TaskChangeNotifier, workspace: Path, checks: SubmissionChecks,
        serving: Callable[[], Awaitable[bool]],
    ):
        self._store = store
        self._templates = templates
        self._scheduler = scheduler
        self._clients = clients
        self._notifier = notifier
        self._workspace = workspace
        self._checks = checks
        self._serving = serving  # whether token checks are being served, for the health report

    async def StartTask(self, request, context):
        try:
            task_type = registry.get(request.type)
            config = task_type.parse_config(_parse_config_json(request.config_json))
        except ConfigError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.message, exc.field)
        gpu_vis = ",".join(part.strip() for part in (getattr(config, "gpu_vis", None) or "").split(",") if part.strip())
        scheduling = {
            "priority": getattr(config, "priority", 0), "max_retries": getattr(config, "max_retries", 0),
            "gpus": getattr(config, "gpus", None) or 1, "gpu_vis": gpu_vis,
        }
        await self._refuse_unplaceable(Task(**scheduling), context)
        task_id = uuid.uuid4().hex
        if "output_dir" in type(config).model_fields:  # a directory of its own, which no other task can name
            config = config.model_copy(update={"output_dir": task_output_dir(config.output_dir, task_id)})
        config_json = config.model_dump_json()
        principal = caller()
        # The paths and data are checked off the event loop; a slow check (a big file) goes on after the answer.
        job = self._checks.start(task_type.name, config_json, task_id, principal.username, principal.is_admin)
        result = await self._checks.within_budget(job)
        if result is not None and not result.ok:
            code = grpc.StatusCode.UNAVAILABLE if result.reason == CHECK_BROKEN_REASON else grpc.StatusCode.INVALID_ARGUMENT
            await abort(context, code, result.message, result.field)
        validation = TaskValidation(state="passed" if result else "pending", rows=result.rows if result else 0,
                                    admin_paths=principal.is_admin, finished_at=utcnow() if result else None)
        output_dir = getattr(config, "output_dir", None) or default_output_dir(task_type.name, task_id, self._workspace)
        task = self._store.create_task(
            task_id, task_type.name, config_json, str(resolve(output_dir, self._workspace)), owner=principal.username,
            validation=validation, **scheduling,
        )
        if result is None:
            self._checks.finish_later(task_id, job)
            log.info("task %s (%s) queued; its data are still being checked", task_id, task_type.name)
        else:
            log.info("task %s (%s) queued", task_id, task_type.name)
            self._scheduler.wake()
        return self._full_task(task)

    async def _refuse_unplaceable(self, wanted: Task, context) -> None:
        """A task needing more devices than any registered agent has could never run: refuse it now."""
        agents = self._store.agents()
        agent, size = largest_agent(agents)
        needed = devices_needed(wanted)
        field = "gpu_vis" if wanted.gpu_vis else "gpus"
        if agent is not None and needed > size:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                        f"{field}: the task needs {needed} device(s) but the largest agent ({agent.id}) has {size}", field)
        pinned = pinned_devices(wanted)
        if agent is not None and pinned and not any(set(pinned) <= set(device_indices(a)) for a in agents):
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                        f"gpu_vis: no agent has device(s) {wanted.gpu_vis}", field)

    def _full_task(self, task: Task) -> control_plane_pb2.Task:
        return task_to_proto(
            task, self._store.events(task.id), queue_position=self._store.queue_positions().get(task.id, 0),
            attempts=self._store.attempts(task.id), checkpoints=self._store.checkpoints(task.id),
            validation=self._store.validation(task.id),
        )

    async def GetTask(self, request, context):
        task = await self._task_or_404(request.task_id, context)
        return self._full_task(task)

    async def ResumeTask(self, request, context):
        task = await self._task_or_404(request.task_id, context)
        if task.status not in (TaskStatus.STOPPED, TaskStatus.FAILED):
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                        f"task {task.id} is {task.status}; only a stopped or failed task can be resumed", "task_id")
        checkpoints = [c.path for c in self._store.checkpoints(task.id)]
        if request.checkpoint and request.checkpoint not in checkpoints:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                        f"checkpoint {request.checkpoint!r} is not one of the task's: {', '.join(checkpoints) or 'none'}", "checkpoint")
        if not checkpoints:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                        f"task {task.id} saved no checkpoint to resume from (set save_steps, or stop it while it runs)", "task_id")
        checkpoint = request.checkpoint or checkpoints[-1]
        try:
            task = self._store.transition(
                task.id, TaskStatus.QUEUED, "resume", f"resume from {checkpoint}",
                resume_from=checkpoint, error="", error_reason="", exit_code=0, agent_id="", devices="", pid=0,
            )
        except IllegalTransition as exc:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc), "task_id")
        self._scheduler.wake()
        return self._full_task(task)

    async def ListTasks(self, request, context):
        limit = request.limit or 50
        if not 1 <= limit <= MAX_LIST_LIMIT:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"limit must be between 1 and {MAX_LIST_LIMIT}", "limit")
        if request.offset < 0:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "offset must be >= 0", "offset")
        if request.status and request.status not in {s.value for s in TaskStatus}:
            known = ", ".join(s.value for s in TaskStatus)
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"unknown status {request.status!r}; one of: {known}", "status")
        if request.type:
            try:
                registry.get(request.type)
            except ConfigError as exc:
                await abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.message, "type")
        principal = caller()
        tasks, total = self._store.list_tasks(
            status=request.status, task_type=request.type, limit=limit, offset=request.offset,
            owner="" if principal.is_admin else principal.username,
        )
        positions = self._store.queue_positions()
        return control_plane_pb2.ListTasksResponse(
            tasks=[task_to_proto(t, queue_position=positions.get(t.id, 0)) for t in tasks], total=total
        )

    async def StopTask(self, request, context):
        task = await self._task_or_404(request.task_id, context)
        try:
            if task.status == TaskStatus.QUEUED:
                task = self._store.transition(task.id, TaskStatus.STOPPED, "user_stop", "stopped before it started")
            elif task.status in (TaskStatus.STARTING, TaskStatus.RUNNING):
                task = self._store.transition(task.id, TaskStatus.STOPPING, "user_stop", "stop requested")
                await self._stop_on_agent(task.id, task.agent_id)
            elif task.status == TaskStatus.STOPPING:
                await self._stop_on_agent(task.id, task.agent_id)  # asking again is harmless
            else:
                await abort(context, grpc.StatusCode.FAILED_PRECONDITION, f"task {task.id} has already ended ({task.status})", "task_id")
        except IllegalTransition as exc:  # it moved on while we looked
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc), "task_id")
        self._notifier.notify(task.id)
        self._scheduler.wake()
        return self._full_task(self._store.get_task(task.id))

    async def _stop_on_agent(self, task_id: str, agent_id: str) -> None:
        agent = self._store.get_agent(agent_id)
        if agent is None:
            return
        try:
            await self._clients.stub(agent.address).StopTask(agent_pb2.AgentStopTaskRequest(task_id=task_id), timeout=10)
        except grpc.aio.AioRpcError as exc:
            # NOT_FOUND: the launch is still in flight; the scheduler stops it once launched.
            log.warning("task %s: stop on agent %s: %s %s", task_id, agent_id, exc.code().name, exc.details())

    async def DeleteTask(self, request, context):
        await self._task_or_404(request.task_id, context)
        try:
            self._store.delete_task(request.task_id)
        except TaskNotFound as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc), "task_id")
        except TaskStillActive as exc:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc), "task_id")
        self._notifier.notify(request.task_id)
        return control_plane_pb2.DeleteTaskResponse(task_id=request.task_id)

    async def ListTemplates(self, request, context):
        builtin = [_template(t, name=t.name, config_json=json.dumps(t.default_config), builtin=True) for t in registry.all_types()]
        saved = []
        for row in self._templates.owned_by(caller().username):
            try:
                task_type = registry.get(row.type)
            except ConfigError:
                continue  # its type is no longer installed
            saved.append(_template(task_type, name=row.name, config_json=row.config_json, builtin=False, id=row.id, owner=row.owner))
        return control_plane_pb2.ListTemplatesResponse(templates=builtin + saved)

    async def SaveTemplate(self, request, context):
        if not request.name.strip():
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "a template needs a name", "name")
        try:
            task_type = registry.get(request.type)
            # Saved as given (a form may be half filled in), but it must at least be a JSON object of known keys.
            raw = _parse_config_json(request.config_json)
            unknown = sorted(set(raw) - set(task_type.config_model.model_fields))
            if unknown:
                raise ConfigError(unknown[0], f"unknown config key {unknown[0]!r}")
        except ConfigError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.message, exc.field)
        row = self._templates.save(caller().username, request.name.strip(), task_type.name, json.dumps(raw))
        return _template(task_type, name=row.name, config_json=row.config_json, builtin=False, id=row.id, owner=row.owner)

    async def DeleteTemplate(self, request, context):
        if not self._templates.delete(request.template_id, caller().username):
            await abort(context, grpc.StatusCode.NOT_FOUND, f"template {request.template_id!r} not found", "template_id")
        return control_plane_pb2.DeleteTemplateResponse(template_id=request.template_id)

    async def GetTaskLogs(self, request, context):
        task = await self._task_or_404(request.task_id, context)
        limit = request.limit or 100
        if not 1 <= limit <= MAX_LOG_LIMIT:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"limit must be between 1 and {MAX_LOG_LIMIT}", "limit")
        if request.HasField("after_seq"):
            lines = self._store.log_lines_after(task.id, request.after_seq, limit)
        else:
            lines = self._store.log_lines_tail(task.id, limit, before_seq=request.before_seq)
        return control_plane_pb2.GetTaskLogsResponse(lines=[line_to_proto(l) for l in lines], last_seq=task.last_log_seq)

    async def StreamTaskLogs(self, request, context):
        """Pages through the store from after_seq; with follow, waits for ingestion's wake-ups until the task ends.

        The store is the only source, so a line is sent once whatever the timing of ingestion and wake-ups.
        """
        await self._task_or_404(request.task_id, context)
        last = request.after_seq
        while True:
            changed = self._notifier.event(request.task_id)  # taken before reading: no wake-up is missed
            lines = self._store.log_lines_after(request.task_id, last, STREAM_PAGE)
            for line in lines:
                yield line_to_proto(line)
                last = line.seq
            if len(lines) == STREAM_PAGE:
                continue
            if not request.follow:
                return
            try:
                task = self._store.get_task(request.task_id)
            except TaskNotFound:
                return
            # Ingestion stores a task's last lines before its final status, so a finished task has no more lines.
            if task.status in TERMINAL and task.last_log_seq <= last:
                return
            try:
                await asyncio.wait_for(changed.wait(), STREAM_POLL_SECONDS)
            except TimeoutError:
                pass

    async def GetTaskMetrics(self, request, context):
        task = await self._task_or_404(request.task_id, context)
        limit = request.limit or MAX_LOG_LIMIT
        points = self._store.metric_points(task.id, after_seq=request.after_seq, limit=limit)
        return control_plane_pb2.GetTaskMetricsResponse(points=[metric_to_proto(p) for p in points])

    async def ValidateTask(self, request, context):
        """Forwarded to a live agent: the data live on the agents' hosts, and the check imports the trainer stack.
        The agent checks paths for the caller (their own outputs; admins' extra roots), never for whom a client says."""
        agents = self._scheduler.live_agents()
        if not agents:
            await abort(context, grpc.StatusCode.UNAVAILABLE, "no live agent to run the dry run on")
        principal = caller()
        forwarded = common_pb2.ValidateTaskRequest(type=request.type, config_json=request.config_json,
                                                   owner=principal.username, admin_paths=principal.is_admin)
        try:
            return await self._clients.stub(agents[0].address).ValidateTask(forwarded, timeout=VALIDATE_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            await abort(context, exc.code(), f"dry run on agent {agents[0].id} failed: {exc.details()}")

    async def GetSystemHealth(self, request, context):
        try:
            with self._store.session() as session:
                session.execute(text("SELECT 1"))
            database = "ok"
        except Exception as exc:  # report, don't fail: health is how a user finds this out
            database = f"error: {exc}"
        # A control plane that cannot check tokens cannot serve anything but this: say so instead of "ok".
        serving = await self._serving()
        held = self._store.held_devices()
        agents = [
            agent_to_proto(a, alive=self._scheduler.is_alive(a), free_slots=len(set(device_indices(a)) - held.get(a.id, set())))
            for a in self._store.agents()
        ]
        _, queued = self._store.list_tasks(status=TaskStatus.QUEUED, limit=1)
        _, running = self._store.list_tasks(status=TaskStatus.RUNNING, limit=1)
        if database != "ok" or not serving:
            status = "unavailable"
        else:
            status = "ok" if any(a.alive for a in agents) else "degraded"
        return control_plane_pb2.SystemHealth(
            status=status, database=database, agents=agents, queued_tasks=queued, running_tasks=running,
            serving=serving,
        )

    async def _task_or_404(self, task_id: str, context):
        """The task, if the caller may see it: their own, or any for an admin. Others' tasks do not exist for them."""
        principal = caller()
        try:
            task = self._store.get_task(task_id)
            if task.owner != principal.username and not principal.is_admin:
                raise TaskNotFound(task_id)
            return task
        except TaskNotFound as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc), "task_id")


def _template(task_type, *, name: str, config_json: str, builtin: bool, id: str = "", owner: str = "") -> control_plane_pb2.Template:
    return control_plane_pb2.Template(
        type=task_type.name,
        name=name,
        description=task_type.description,
        default_config_json=config_json,
        json_schema=json.dumps(task_type.json_schema()),
        data_example_json=json.dumps(task_type.data_example, ensure_ascii=False),
        id=id,
        builtin=builtin,
        owner=owner,
    )


def _parse_config_json(config_json: str) -> dict:
    """The config object of a request, held to what the gateway takes (protos.json_values): a gRPC client that never
    passes the gateway gets the same 400s, never a config that cannot be stored or echoed."""
    try:
        raw = loads(config_json or "{}", "config")
    except JsonProblem as problem:
        raise ConfigError(problem.field or "config", problem.message) from None
    if not isinstance(raw, dict):
        raise ConfigError("config", f"config must be a JSON object, got {type(raw).__name__}")
    return raw
