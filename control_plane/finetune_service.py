"""The client-facing FinetuneService: submit, read, list, stop, delete tasks; logs, metrics, templates, health."""

from __future__ import annotations

import asyncio
import json
import logging
import posixpath
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable

import annotated_types
import grpc
from sqlalchemy import text

from control_plane.agent_clients import AgentClients
from control_plane.agent_reports import AgentReadings
from control_plane.auth_service import caller
from control_plane.converters import agent_to_proto, line_to_proto, metric_to_proto, task_to_proto
from control_plane.grpc_errors import abort
from control_plane.artifact_rpcs import ArtifactRpcs
from control_plane.chat_rpcs import ChatRpcs
from control_plane.chat_sessions import ChatSessions
from control_plane.blob_store import BlobStore
from control_plane.data_check import CHECK_BROKEN_REASON, CheckResult, SubmissionChecks
from control_plane.db_calls import in_db_thread
from control_plane.list_cursor import BadPageToken, ListCursor
from control_plane.dataset_rpcs import DatasetRpcs
from control_plane.dataset_service import DatasetService
from control_plane.gang import stop_everywhere
from control_plane.model_catalog import ModelCatalog, config_holders, unavailable_model_message
from control_plane.published_models import PublishedModels
from control_plane.task_inputs import Caller, TaskInputs, reads_agent_paths
from control_plane.models import Task, TaskValidation, utcnow
from control_plane.notifier import TaskChangeNotifier
from control_plane.placement import (
    device_indices, devices_needed, gang_request, gang_shape, largest_agent, pinned_devices, reservation,
)
from control_plane.scheduler import Scheduler
from control_plane.state_machine import TERMINAL, IllegalTransition, TaskStatus
from control_plane.task_store import (
    OutputDirTaken, TaskDetail, TaskNotFound, TaskNotQueued, TaskStillActive, TaskStore,
)
from control_plane.template_store import TemplateStore
from protos import common_pb2, control_plane_pb2, control_plane_pb2_grpc
from protos.json_values import JsonProblem, loads
from trainers import registry
from trainers.common.config import TaskConfig
from trainers.errors import ConfigError
from trainers.export.spec import EXPORT_TYPE

log = logging.getLogger(__name__)

MAX_LIST_LIMIT = 500
MAX_LOG_LIMIT = 10000
STREAM_PAGE = 1000
# Readers re-check the store at least this often even without a wake-up (e.g. after a missed notification).
STREAM_POLL_SECONDS = 1.0
VALIDATE_TIMEOUT_SECONDS = 330.0  # the agent's own limit on a dry run is 300 s


class FinetuneService(DatasetRpcs, ArtifactRpcs, ChatRpcs, control_plane_pb2_grpc.FinetuneServiceServicer):
    def __init__(
        self, store: TaskStore, templates: TemplateStore, scheduler: Scheduler, clients: AgentClients,
        notifier: TaskChangeNotifier, checks: SubmissionChecks, serving: Callable[[], Awaitable[bool]], *,
        datasets: DatasetService, catalog: ModelCatalog, inputs: TaskInputs, published: PublishedModels,
        blobs: BlobStore, readings: AgentReadings, chat: ChatSessions,
    ):
        self._store = store
        self._templates = templates
        self._scheduler = scheduler
        self._clients = clients
        self._notifier = notifier
        self._checks = checks
        self._serving = serving  # whether token checks are being served, for the health report
        self._datasets = datasets
        self._catalog = catalog
        self._inputs = inputs
        self._published = published
        self._blobs = blobs
        self._readings = readings  # agents' last heartbeat readings, for the health report
        self._chat = chat  # chat sessions with succeeded tasks' models (ChatRpcs)

    async def StartTask(self, request, context):
        try:
            raw = _parse_config_json(request.config_json)
        except ConfigError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.message, exc.field)
        return await self._submit(request.type, raw, context)

    async def _submit(self, type_name: str, raw: dict, context) -> control_plane_pb2.Task:
        """Validates and queues one task for the caller; aborts with INVALID_ARGUMENT naming the field at fault.
        Store reads and the insert run on store threads."""
        try:
            task_type = registry.get(type_name)
            config = task_type.parse_config(raw)
        except ConfigError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.message, exc.field)
        gpu_vis = ",".join(part.strip() for part in (getattr(config, "gpu_vis", None) or "").split(",") if part.strip())
        scheduling = {
            "priority": getattr(config, "priority", 0), "max_retries": getattr(config, "max_retries", 0),
            "gpus": getattr(config, "gpus", None) or 1, "gpu_vis": gpu_vis, **gang_request(config),
        }
        task_id = uuid.uuid4().hex
        config_json = config.model_dump_json()
        stored = json.loads(config_json)
        principal = caller()
        claim = _output_dir_claim(stored.get("output_dir"))
        facts = await in_db_thread(self._submission_facts, task_type.name, stored, principal, claim)
        await self._refuse_unplaceable(Task(**scheduling), facts.agents, context)
        if isinstance(facts.refs, ConfigError):
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, facts.refs.message, facts.refs.field)
        problem = unavailable_model_message(stored, facts.live_inventories)
        if problem is not None:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, problem[1], problem[0])
        if facts.claim_holder is not None:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(OutputDirTaken(claim, facts.claim_holder)), "output_dir")
        job = None
        if reads_agent_paths(task_type.name, stored):
            # Paths are the agents': a shallow dry run on one that could run it, within the submit budget.
            job = self._checks.start(task_type.name, config_json, task_id, principal.username, principal.is_admin)
            result = await self._checks.within_budget(job)
            if result is not None and not result.ok:
                code = grpc.StatusCode.UNAVAILABLE if result.reason == CHECK_BROKEN_REASON else grpc.StatusCode.INVALID_ARGUMENT
                await abort(context, code, result.message, result.field)
        else:  # its datasets were checked row by row when they were uploaded
            result = CheckResult({"ok": True, "rows": facts.dataset_rows, "problems": []})
        validation = TaskValidation(state="passed" if result else "pending", rows=result.rows if result else 0,
                                    admin_paths=principal.is_admin, finished_at=utcnow() if result else None)

        try:
            detail = await in_db_thread(self._store.add_task, task_id, task_type.name, config_json, "",
                                        owner=principal.username, validation=validation, claim_output_dir=claim,
                                        **scheduling)
        except OutputDirTaken as exc:
            if job is not None:
                job.cancel()
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), "output_dir")
        if result is None:
            self._checks.finish_later(task_id, job)
            log.info("task %s (%s) queued; its data are still being checked", task_id, task_type.name)
        else:
            log.info("task %s (%s) queued", task_id, task_type.name)
            self._scheduler.task_joined_queue()
        return _detail_to_proto(detail)

    def _submission_facts(self, type_name: str, stored: dict, principal, claim: str | None) -> "_SubmissionFacts":
        """What a submit checks against the store, read on a store thread in one go."""
        agents = self._store.agents()
        live = {agent.id for agent in agents if self._scheduler.is_alive(agent)}
        try:
            refs = self._inputs.check(type_name, stored, Caller(principal.username, principal.is_admin))
            rows = sum(ref_rows(self._datasets, refs))
        except ConfigError as exc:
            refs, rows = exc, 0
        return _SubmissionFacts(
            agents=agents, live_inventories=self._catalog.inventories(live), refs=refs, dataset_rows=rows,
            claim_holder=self._store.output_dir_holder(claim) if claim is not None else None)

    async def ExportTask(self, request, context):
        source = await self._task_or_404(request.task_id, context)
        if source.status != TaskStatus.SUCCEEDED:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                        f"task {source.id} is {source.status}; only a succeeded task can be exported", "task_id")
        if await in_db_thread(self._published.get, source.id) is None:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                        f"the model of task {source.id} is not published yet; try again shortly", "task_id")
        raw = {"source": f"task:{source.id}", "dtype": request.dtype or "auto",
               "merge_lora": request.merge_lora if request.HasField("merge_lora") else True}
        source_config = json.loads(source.config_json)
        base = source_config.get("model_name_or_path")
        if source_config.get("use_lora") and raw["merge_lora"] and isinstance(base, str) and base:
            # A merge needs the adapter's base, as the agents name it (and runs where it is); packaging does not.
            raw["model_name_or_path"] = base
        return await self._submit(EXPORT_TYPE, raw, context)

    async def _refuse_unplaceable(self, wanted: Task, agents: list, context) -> None:
        """A task needing more devices than any registered agent has could never run: refuse it now."""
        agent, size = largest_agent(agents)
        needed = devices_needed(wanted)
        field = "gpu_vis" if wanted.gpu_vis else "gpus"
        gang = gang_shape(wanted)
        if agent is not None and gang is not None and not reservation(wanted, agents, {}):
            nodes, per_node = gang
            fitting = sum(1 for a in agents if len(device_indices(a)) >= per_node)
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                        f"nodes: the task needs {nodes} agents with {per_node} device(s) each but {fitting} of the "
                        f"{len(agents)} registered agent(s) have that many", "nodes")
        if agent is not None and gang is None and needed > size and not reservation(wanted, agents, {}):
            hint = "" if wanted.gpu_vis else " (split_gpus: true lets the scheduler split it over several agents)"
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                        f"{field}: the task needs {needed} device(s) but the largest agent ({agent.id}) has "
                        f"{size}{hint}", field)
        pinned = pinned_devices(wanted)
        if agent is not None and pinned and not any(set(pinned) <= set(device_indices(a)) for a in agents):
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                        f"gpu_vis: no agent has device(s) {wanted.gpu_vis}", field)

    async def _full_task(self, task_id: str) -> control_plane_pb2.Task:
        return _detail_to_proto(await in_db_thread(self._store.task_detail, task_id))

    async def GetTask(self, request, context):
        """One store thread call, one session: the task and all it shows."""
        try:
            detail = await in_db_thread(self._store.task_detail, request.task_id)
        except TaskNotFound:
            detail = None
        if detail is None or not _visible(detail.task):
            await abort(context, grpc.StatusCode.NOT_FOUND, str(TaskNotFound(request.task_id)), "task_id")
        return _detail_to_proto(detail)

    async def ResumeTask(self, request, context):
        task = await self._task_or_404(request.task_id, context)
        if task.status not in (TaskStatus.STOPPED, TaskStatus.FAILED):
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                        f"task {task.id} is {task.status}; only a stopped or failed task can be resumed", "task_id")
        checkpoints = [c.path for c in await in_db_thread(self._store.checkpoints, task.id)]
        if request.checkpoint and request.checkpoint not in checkpoints:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                        f"checkpoint {request.checkpoint!r} is not one of the task's: {', '.join(checkpoints) or 'none'}", "checkpoint")
        if not checkpoints:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                        f"task {task.id} saved no checkpoint to resume from (set save_steps, or stop it while it runs)", "task_id")
        checkpoint = request.checkpoint or checkpoints[-1]
        try:
            task = await in_db_thread(
                self._store.transition, task.id, TaskStatus.QUEUED, "resume", f"resume from {checkpoint}",
                resume_from=checkpoint, error="", error_reason="", exit_code=0, agent_id="", devices="", pid=0,
            )
        except IllegalTransition as exc:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc), "task_id")
        self._scheduler.task_joined_queue()
        return await self._full_task(task.id)

    async def UpdateTaskPriority(self, request, context):
        low, high = priority_range()
        if not low <= request.priority <= high:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                        f"priority must be between {low} and {high} (got {request.priority})", "priority")
        await self._task_or_404(request.task_id, context)
        try:
            await in_db_thread(self._store.set_priority, request.task_id, request.priority)
        except TaskNotFound as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc), "task_id")
        except TaskNotQueued as exc:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc), "task_id")
        self._notifier.notify(request.task_id)
        self._scheduler.task_joined_queue()  # the next round reads the queue in its new order
        return await self._full_task(request.task_id)

    async def ListTasks(self, request, context):
        limit = request.limit or 50
        if not 1 <= limit <= MAX_LIST_LIMIT:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"limit must be between 1 and {MAX_LIST_LIMIT}", "limit")
        if request.offset < 0:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "offset must be >= 0", "offset")
        after = None
        if request.page_token:
            try:
                after = ListCursor.parse(request.page_token)
            except BadPageToken as exc:
                await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), "page_token")
        if request.after_task_id:
            if after is not None:
                await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "give page_token or after_task_id, not both",
                            "after_task_id")
            anchor = await self._task_or_404(request.after_task_id, context)
            after = ListCursor(anchor.created_at, anchor.id)
        if request.status and request.status not in {s.value for s in TaskStatus}:
            known = ", ".join(s.value for s in TaskStatus)
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"unknown status {request.status!r}; one of: {known}", "status")
        if request.type:
            try:
                registry.get(request.type)
            except ConfigError as exc:
                await abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.message, "type")
        principal = caller()
        page = await in_db_thread(
            self._store.list_page, status=request.status, task_type=request.type, limit=limit, offset=request.offset,
            owner="" if principal.is_admin else principal.username, after=after,
        )
        return control_plane_pb2.ListTasksResponse(
            tasks=[task_to_proto(t, queue_position=page.queue_positions.get(t.id, 0)) for t in page.tasks],
            total=page.total, next_page_token=page.next_cursor.token() if page.next_cursor else "",
        )

    async def StopTask(self, request, context):
        task = await self._task_or_404(request.task_id, context)
        try:
            if task.status == TaskStatus.QUEUED:
                task = await in_db_thread(self._store.transition, task.id, TaskStatus.STOPPED, "user_stop",
                                          "stopped before it started")
            elif task.status in (TaskStatus.STARTING, TaskStatus.RUNNING):
                task = await in_db_thread(self._store.transition, task.id, TaskStatus.STOPPING, "user_stop",
                                          "stop requested")
                await stop_everywhere(self._clients, self._store, task.id)
            elif task.status == TaskStatus.STOPPING:
                await stop_everywhere(self._clients, self._store, task.id)  # asking again is harmless
            else:
                await abort(context, grpc.StatusCode.FAILED_PRECONDITION, f"task {task.id} has already ended ({task.status})", "task_id")
        except IllegalTransition as exc:  # it moved on while we looked
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc), "task_id")
        self._notifier.notify(task.id)
        self._scheduler.wake()
        return await self._full_task(task.id)


    async def DeleteTask(self, request, context):
        await self._task_or_404(request.task_id, context)
        try:
            await in_db_thread(self._store.delete_task, request.task_id)
        except TaskNotFound as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc), "task_id")
        except TaskStillActive as exc:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc), "task_id")
        self._notifier.notify(request.task_id)
        return control_plane_pb2.DeleteTaskResponse(task_id=request.task_id)

    async def ListTemplates(self, request, context):
        builtin = [_template(t, name=t.name, config_json=json.dumps(t.default_config), builtin=True)
                   for t in registry.all_types() if t.listed]
        saved = []
        for row in await in_db_thread(self._templates.owned_by, caller().username):
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
        row = await in_db_thread(self._templates.save, caller().username, request.name.strip(), task_type.name,
                                 json.dumps(raw))
        return _template(task_type, name=row.name, config_json=row.config_json, builtin=False, id=row.id, owner=row.owner)

    async def DeleteTemplate(self, request, context):
        if not await in_db_thread(self._templates.delete, request.template_id, caller().username):
            await abort(context, grpc.StatusCode.NOT_FOUND, f"template {request.template_id!r} not found", "template_id")
        return control_plane_pb2.DeleteTemplateResponse(template_id=request.template_id)

    async def GetTaskLogs(self, request, context):
        task = await self._task_or_404(request.task_id, context)
        limit = request.limit or 100
        if not 1 <= limit <= MAX_LOG_LIMIT:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"limit must be between 1 and {MAX_LOG_LIMIT}", "limit")
        if request.HasField("after_seq"):
            lines = await in_db_thread(self._store.log_lines_after, task.id, request.after_seq, limit)
        else:
            lines = await in_db_thread(self._store.log_lines_tail, task.id, limit, before_seq=request.before_seq)
        return control_plane_pb2.GetTaskLogsResponse(lines=[line_to_proto(l) for l in lines], last_seq=task.last_log_seq)

    async def StreamTaskLogs(self, request, context):
        """Pages through the store from after_seq; with follow, waits for ingestion's wake-ups until the task ends.

        The store is the only source, so a line is sent once whatever the timing of ingestion and wake-ups.
        """
        await self._task_or_404(request.task_id, context)
        last = request.after_seq
        while True:
            changed = self._notifier.event(request.task_id)  # taken before reading: no wake-up is missed
            lines = await in_db_thread(self._store.log_lines_after, request.task_id, last, STREAM_PAGE)
            for line in lines:
                yield line_to_proto(line)
                last = line.seq
            if len(lines) == STREAM_PAGE:
                continue
            if not request.follow:
                return
            try:
                task = await in_db_thread(self._store.get_task, request.task_id)
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
        points = await in_db_thread(self._store.metric_points, task.id, after_seq=request.after_seq, limit=limit)
        return control_plane_pb2.GetTaskMetricsResponse(points=[metric_to_proto(p) for p in points])

    async def ValidateTask(self, request, context):
        """Forwarded to a live agent that could run the task: the data live on the agents' hosts, and the check
        imports the trainer stack. The agent checks paths for the caller (their own outputs; admins' extra roots),
        never for whom a client says, and fetches the datasets the config names (the caller's own only)."""
        principal = caller()
        try:
            raw = _parse_config_json(request.config_json)
            refs = await in_db_thread(self._inputs.check, request.type, raw, Caller(principal.username, principal.is_admin))
        except ConfigError as exc:
            return common_pb2.ValidationReport(ok=False, type=request.type, error_field=exc.field,
                                               error_message=exc.message)
        agents = await in_db_thread(self.candidate_agents, request.type, request.config_json)
        if not agents:
            await abort(context, grpc.StatusCode.UNAVAILABLE, "no live agent to run the dry run on")
        forwarded = common_pb2.ValidateTaskRequest(type=request.type, config_json=request.config_json,
                                                   owner=principal.username, admin_paths=principal.is_admin,
                                                   inputs=refs)
        try:
            return await self._clients.stub(agents[0].address).ValidateTask(forwarded, timeout=VALIDATE_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            await abort(context, exc.code(), f"dry run on agent {agents[0].id} failed: {exc.details()}")

    def candidate_agents(self, type_name: str, config_json: str) -> list:
        """The live agents a task of this config could run on (those holding the models it names, if any). Reads the
        store: call it on a store thread."""
        try:
            config = json.loads(config_json or "{}")
        except ValueError:
            config = {}
        agents = self._scheduler.live_agents()
        allowed = config_holders(config if isinstance(config, dict) else {},
                                 self._catalog.inventories({agent.id for agent in agents}))
        return [agent for agent in agents if allowed is None or agent.id in allowed]

    def check_request(self, type_name: str, config_json: str, owner: str, admin: bool) -> common_pb2.ValidateTaskRequest:
        """The shallow dry run of a submission, for the agents (data_check.DataChecker). Reads the store: call it on a
        store thread."""
        refs = self._inputs.check(type_name, json.loads(config_json), Caller(owner, admin))
        return common_pb2.ValidateTaskRequest(type=type_name, config_json=config_json, owner=owner, admin_paths=admin,
                                              shallow=True, inputs=refs)

    async def GetSystemHealth(self, request, context):
        # A control plane that cannot check tokens cannot serve anything but this: say so instead of "ok".
        serving = await self._serving()
        try:
            database, agents, queued, running = await in_db_thread(self._health_facts)
        except Exception as exc:  # report, don't fail: health is how a user finds this out
            database, agents, queued, running = f"error: {exc}", [], 0, 0
        if database != "ok" or not serving:
            status = "unavailable"
        else:
            status = "ok" if any(a.alive for a in agents) else "degraded"
        return control_plane_pb2.SystemHealth(
            status=status, database=database, agents=agents, queued_tasks=queued, running_tasks=running,
            serving=serving,
        )

    def _health_facts(self) -> tuple[str, list, int, int]:
        """The store's side of the health report, on a store thread: whether it answers, the agents, the counts."""
        with self._store.session() as session:
            session.execute(text("SELECT 1"))
        held = self._scheduler.held_devices()  # tasks' and chat sessions'
        inventories = {inv.agent_id: inv for inv in self._catalog.inventories()}
        agents = []
        for a in self._store.agents():
            inventory = inventories.get(a.id)
            agents.append(agent_to_proto(
                a, alive=self._scheduler.is_alive(a), free_slots=len(set(device_indices(a)) - held.get(a.id, set())),
                models=inventory.models if inventory else [], hub_access=bool(inventory and inventory.hub_access),
                warm_pool_memory_bytes=self._readings.warm_pool_memory_bytes(a.id), busy_devices=held.get(a.id, ())))
        counts = self._store.status_counts([TaskStatus.QUEUED, TaskStatus.RUNNING])
        return "ok", agents, counts[TaskStatus.QUEUED], counts[TaskStatus.RUNNING]

    async def _task_or_404(self, task_id: str, context):
        """The task, if the caller may see it: their own, or any for an admin. Others' tasks do not exist for them."""
        try:
            task = await in_db_thread(self._store.get_task, task_id)
            if not _visible(task):
                raise TaskNotFound(task_id)
            return task
        except TaskNotFound as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc), "task_id")


def priority_range() -> tuple[int, int]:
    """The bounds of the `priority` config key (trainers.common.config.TaskConfig), the one place they are set."""
    metadata = TaskConfig.model_fields["priority"].metadata
    low = next(m.ge for m in metadata if isinstance(m, annotated_types.Ge))
    high = next(m.le for m in metadata if isinstance(m, annotated_types.Le))
    return low, high


def _visible(task: Task) -> bool:
    principal = caller()
    return principal.is_admin or task.owner == principal.username


def _detail_to_proto(detail: TaskDetail) -> control_plane_pb2.Task:
    return task_to_proto(detail.task, detail.events, queue_position=detail.queue_position, attempts=detail.attempts,
                         checkpoints=detail.checkpoints, validation=detail.validation, published=detail.published,
                         nodes=detail.nodes)


@dataclass(frozen=True)
class _SubmissionFacts:
    agents: list
    live_inventories: list
    refs: list | ConfigError  # the config's BlobRefs, or why the caller may not use one
    dataset_rows: int
    claim_holder: str | None  # the task holding the output_dir named, if one does


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


def _output_dir_claim(value) -> str | None:
    """The output_dir a user named, normalized so that `out/a/` and `out/./a` are one claim."""
    if not isinstance(value, str) or not value.strip():
        return None
    return posixpath.normpath(value.strip())


def ref_rows(datasets: DatasetService, refs) -> list[int]:
    ids = [ref.ref.split(":", 1)[1] for ref in refs if ref.ref.startswith("dataset:")]
    return [datasets.get(dataset_id, None).rows for dataset_id in ids]


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
