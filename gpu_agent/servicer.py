"""The GpuAgent gRPC servicer: maps requests onto the Agent and spool records onto proto messages."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from gpu_agent import artifacts, dry_run
from gpu_agent.agent import Agent, AgentError, AlreadyExists, InvalidRequest, NoFreeSlot, TaskNotFound
from gpu_agent.blob_cache import CacheError, InputSpec
from gpu_agent.gang_launch import GangSpec
from gpu_agent.chat_runner import BadChatRequest, ChatError, DeviceBusy, SessionNotFound
from gpu_agent.input_fetch import inputs_env
from gpu_agent.inventory import DeviceInfo
from gpu_agent.model_inventory import HeldModel
from gpu_agent.task_run import TaskRun
from protos import agent_pb2, agent_pb2_grpc, common_pb2
from protos.blocking_streams import off_the_loop

log = logging.getLogger(__name__)

_CODES: dict[type[AgentError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    NoFreeSlot: grpc.StatusCode.RESOURCE_EXHAUSTED,
    TaskNotFound: grpc.StatusCode.NOT_FOUND,
}

STATUS_ENUM = {
    "running": common_pb2.TASK_STATUS_RUNNING,
    "stopping": common_pb2.TASK_STATUS_STOPPING,
    "succeeded": common_pb2.TASK_STATUS_SUCCEEDED,
    "failed": common_pb2.TASK_STATUS_FAILED,
    "stopped": common_pb2.TASK_STATUS_STOPPED,
}


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def record_to_event(rec: dict[str, Any], attempt: int = 0) -> agent_pb2.AgentTaskEvent:
    kind = rec["kind"]
    if kind == "log":
        return agent_pb2.AgentTaskEvent(log=common_pb2.LogLine(
            seq=rec["seq"], time=_timestamp(rec["time"]), stream=rec["stream"], text=rec["text"]))
    if kind == "metric":
        return agent_pb2.AgentTaskEvent(metric=common_pb2.MetricPoint(
            seq=rec["seq"], time=_timestamp(rec["time"]), values_json=rec["values_json"]))
    return agent_pb2.AgentTaskEvent(status=common_pb2.TaskStatusUpdate(
        status=STATUS_ENUM[rec["status"]], time=_timestamp(rec["time"]), exit_code=rec.get("exit_code") or 0,
        reason=rec.get("reason", ""), error=rec.get("error", ""), pid=rec.get("pid", 0), attempt=attempt))


# A batch's text stays well under gRPC's default 4 MiB message limit, however long the trainer's lines are.
BATCH_MAX_TEXT_BYTES = 1 << 20


def records_to_events(records: list[dict[str, Any]], attempt: int, max_batch: int) -> list[agent_pb2.AgentTaskEvent]:
    """Spool records as events: runs of logs and metrics as `batch` events of at most max_batch items (one event
    per record when max_batch is 0, as older control planes read them); each status as an event of its own."""
    if max_batch <= 0:
        return [record_to_event(rec, attempt) for rec in records]
    events: list[agent_pb2.AgentTaskEvent] = []
    batch: agent_pb2.TaskOutputBatch | None = None
    items = text_bytes = 0
    stamp_of, stamp = None, Timestamp()  # the records of one spool poll share a time
    for rec in records:
        kind = rec["kind"]
        if kind == "status":
            batch = None
            events.append(record_to_event(rec, attempt))
            continue
        if batch is None or items >= max_batch or text_bytes >= BATCH_MAX_TEXT_BYTES:
            events.append(agent_pb2.AgentTaskEvent(batch=agent_pb2.TaskOutputBatch()))
            batch, items, text_bytes = events[-1].batch, 0, 0
        if rec["time"] != stamp_of:
            stamp_of, stamp = rec["time"], _timestamp(rec["time"])
        if kind == "log":
            text = rec["text"]
            batch.lines.add(seq=rec["seq"], stream=rec["stream"], text=text).time.CopyFrom(stamp)
        else:
            text = rec["values_json"]
            batch.metrics.add(seq=rec["seq"], values_json=text).time.CopyFrom(stamp)
        text_bytes += len(text)
        items += 1
    return events


# Dry runs are subprocesses that may read big files and load tokenizers: a few at a time, a few more waiting.
DRY_RUNS_AT_ONCE = 2
DRY_RUNS_WAITING = 8
# Submit-time checks (warm workers, quick): as many at once as the agent has check workers, and many more waiting.
SHALLOW_CHECKS_AT_ONCE = 2
SHALLOW_CHECKS_WAITING = 64


class Gate:
    """At most `at_once` inside, at most `waiting` more queued; `full` says a newcomer would exceed both."""

    def __init__(self, at_once: int, waiting: int):
        self._inside = asyncio.Semaphore(at_once)
        self._limit = at_once + waiting
        self._count = 0

    @property
    def full(self) -> bool:
        return self._count >= self._limit

    async def __aenter__(self) -> None:
        self._count += 1
        try:
            await self._inside.acquire()
        except BaseException:
            self._count -= 1
            raise

    async def __aexit__(self, *exc) -> None:
        self._inside.release()
        self._count -= 1


class GpuAgentServicer(agent_pb2_grpc.GpuAgentServicer):
    def __init__(self, agent: Agent):
        self.agent = agent
        self._dry_run_gate = Gate(DRY_RUNS_AT_ONCE, DRY_RUNS_WAITING)
        self._shallow_gate = Gate(SHALLOW_CHECKS_AT_ONCE, SHALLOW_CHECKS_WAITING)

    async def _abort(self, context: grpc.aio.ServicerContext, exc: AgentError) -> None:
        await context.abort(_CODES.get(type(exc), grpc.StatusCode.FAILED_PRECONDITION), str(exc))

    async def LaunchTask(self, request, context):
        try:
            # Fast: the inputs are fetched by the attempt's own first step, not here (the scheduler waits on this).
            run = self.agent.launch(
                request.task_id, request.type, request.config_json, dict(request.env), devices=list(request.devices),
                attempt=request.attempt, log_seq_base=request.log_seq_base, metric_seq_base=request.metric_seq_base,
                resume_from_checkpoint=request.resume_from_checkpoint, inputs=specs_from_proto(request.inputs),
                gang=GangSpec.from_proto(request.gang) if request.HasField("gang") else None)
        except AgentError as exc:
            log.info("LaunchTask %s refused: %s", request.task_id, exc)
            await self._abort(context, exc)
        except OSError as exc:
            log.exception("LaunchTask %s: could not start the trainer", request.task_id)
            await context.abort(grpc.StatusCode.INTERNAL, f"could not start the trainer: {exc}")
        return agent_pb2.LaunchTaskResponse(pid=run.process.pid, task_dir=str(run.directory),
                                            output_dir=run.output_dir, rdzv_port=run.rdzv_port)

    async def StopTask(self, request, context):
        try:
            run = self.agent.stop(request.task_id, request.grace_seconds)
        except AgentError as exc:
            await self._abort(context, exc)
        return agent_pb2.AgentStopTaskResponse(status=STATUS_ENUM[run.visible_status])

    async def StreamTaskEvents(self, request, context):
        try:
            run = self.agent.get(request.task_id)
        except AgentError as exc:
            await self._abort(context, exc)
        if request.attempt and run.attempt != request.attempt:
            # Its lines and status would be taken for another attempt's.
            await context.abort(grpc.StatusCode.NOT_FOUND, f"attempt {request.attempt} of task {request.task_id} is "
                                                           f"not on this agent (its latest attempt here is {run.attempt})")
        async for records in run.event_batches(request.after_log_seq, request.after_metric_seq, request.follow):
            for event in records_to_events(records, run.attempt, request.max_batch):
                yield event

    async def ValidateTask(self, request, context):
        # Submit-time checks and dry runs queue apart: a burst of submits must not wait behind tokenizer loads.
        gate = self._shallow_gate if request.shallow else self._dry_run_gate
        if gate.full:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"agent {self.agent.agent_id} is busy with dry runs; try again shortly")
        held = []
        try:
            async with gate:
                specs = specs_from_proto(request.inputs)
                if specs:
                    held = await asyncio.to_thread(self.agent.fetch_inputs, specs)
                # The agent's name lets a check's message say where a model is missing (models live on agents).
                env = {"BUGAGARIC_AGENT_ID": self.agent.agent_id, "BUGAGARIC_TASK_OWNER": request.owner,
                       "BUGAGARIC_PATH_SCOPE": "admin" if request.admin_paths else "user", **inputs_env(held)}
                config_json, model_env = self.agent.place_model(request.config_json, env)
                if request.shallow:  # a submit waits for it: warm workers, not a new interpreter
                    report = await self.agent.shallow_checks.check(request.type, config_json, {**env, **model_env})
                else:
                    report = await dry_run.run(request.type, config_json, self.agent.workspace,
                                               self.agent.agent_dir / "preflight", env={**env, **model_env})
        except InvalidRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except CacheError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the task's inputs could not be fetched: {exc}")
        except OSError as exc:  # the cache's disk (full, not writable)
            log.exception("ValidateTask: fetching the inputs failed")
            await context.abort(grpc.StatusCode.INTERNAL, f"the task's inputs could not be stored on this agent: {exc}")
        except RuntimeError as exc:
            await context.abort(grpc.StatusCode.INTERNAL, str(exc))
        finally:
            for item in held:
                item.close()
        return report_to_proto(report, self.agent.agent_id)

    async def DescribeAgent(self, request, context):
        return agent_pb2.AgentDescription(
            agent_id=self.agent.agent_id, hostname=self.agent.hostname, slots=self.agent.slots,
            free_slots=self.agent.free_slots, tasks=[_describe_task(run) for run in self.agent.tasks.values()],
            devices=devices_to_proto(self.agent.inventory.refresh()),
            models=models_to_proto(await asyncio.to_thread(self.agent.models.models)),
            warm_pool_memory_bytes=await asyncio.to_thread(self.agent.warm_pool_memory_bytes))

    async def _output_dir(self, task_id: str, context) -> Path:
        try:
            run = self.agent.get(task_id)
        except AgentError as exc:
            await self._abort(context, exc)
        if not run.output_dir:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"task {task_id}: no output directory was recorded for it on this agent")
        return Path(run.output_dir)

    async def ListArtifacts(self, request, context):
        output_dir = await self._output_dir(request.task_id, context)
        files = await asyncio.to_thread(artifacts.list_artifacts, output_dir)
        return agent_pb2.AgentArtifactsResponse(
            artifacts=[common_pb2.Artifact(path=f.path, size=f.size, kind=f.kind) for f in files],
            output_dir=str(output_dir))

    async def ReadArtifact(self, request, context):
        output_dir = await self._output_dir(request.task_id, context)
        try:
            path = await asyncio.to_thread(artifacts.artifact_path, output_dir, request.path)
            async for offset, data, total in off_the_loop(artifacts.read_chunks(path, request.offset)):
                yield common_pb2.FileChunk(data=data, offset=offset, total_size=total)
        except artifacts.BadPath as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except (artifacts.ArtifactNotFound, FileNotFoundError) as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))

    async def ReadModelArchive(self, request, context):
        output_dir = await self._output_dir(request.task_id, context)
        offset = 0
        try:
            async for data in off_the_loop(artifacts.rechunk(artifacts.model_archive(output_dir))):
                yield common_pb2.FileChunk(data=data, offset=offset)
                offset += len(data)
        except artifacts.ArtifactNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))

    async def OpenChat(self, request, context):
        [model] = specs_from_proto([request.model]) if request.model.ref else [None]
        if model is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "model: the task's published model is required")
        try:
            seconds = await self.agent.chat.open(request.session_id, request.task_id, request.type,
                                                 request.config_json, request.device, model, request.idle_seconds)
        except BadChatRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except DeviceBusy as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except (AgentError, CacheError) as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the task's model could not be fetched: {exc}")
        except (ChatError, TimeoutError) as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc) or "the model took too long to load")
        return agent_pb2.AgentOpenChatResponse(session_id=request.session_id, load_seconds=seconds)

    async def ChatTurn(self, request, context):
        turn = {"question": request.question, "passages": list(request.passages), "model": request.model or "tuned",
                "max_new_tokens": request.max_new_tokens or 128}
        try:
            async for message in self.agent.chat.turn(request.session_id, turn):
                yield chat_event(message, turn["model"])
        except SessionNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except ChatError as exc:
            await context.abort(grpc.StatusCode.INTERNAL, f"the model failed to answer: {exc}")

    async def CloseChat(self, request, context):
        return agent_pb2.AgentCloseChatResponse(closed=await self.agent.chat.close(request.session_id))


def chat_event(message: dict, model: str) -> common_pb2.ChatEvent:
    if "token" in message:
        return common_pb2.ChatEvent(token=message["token"])
    ranking = [common_pb2.PassageScore(index=int(i), score=float(s)) for i, s in message.get("ranking") or []]
    return common_pb2.ChatEvent(done=common_pb2.ChatDone(text=message["done"], ranking=ranking, model=model))


def specs_from_proto(refs) -> list[InputSpec]:
    return [InputSpec(ref=r.ref, sha256=r.sha256, size=r.size, suffix=r.suffix, archive=r.archive) for r in refs]


def models_to_proto(models: list[HeldModel]) -> list[common_pb2.ModelInfo]:
    return [common_pb2.ModelInfo(name=m.name, kind=m.kind, size_bytes=m.size_bytes, path=m.path) for m in models]


def report_to_proto(report: dict[str, Any], agent_id: str) -> common_pb2.ValidationReport:
    error = report.get("error") or {}
    return common_pb2.ValidationReport(
        ok=report["ok"], type=report["type"], rows=report["rows"],
        problems=[common_pb2.DataProblem(**problem) for problem in report["problems"]],
        stats_json=json.dumps(report["stats"], ensure_ascii=False),
        error_field=error.get("field", ""), error_message=error.get("message", ""),
        warnings=report["warnings"], agent_id=agent_id,
    )


def devices_to_proto(devices: list[DeviceInfo]) -> list[common_pb2.Device]:
    return [common_pb2.Device(index=d.index, kind=d.kind, uuid=d.uuid, name=d.name,
                              memory_total_bytes=d.memory_total_bytes, memory_free_bytes=d.memory_free_bytes,
                              utilization_percent=d.utilization_percent) for d in devices]


def _describe_task(run: TaskRun) -> agent_pb2.AgentTask:
    return agent_pb2.AgentTask(task_id=run.task_id, status=STATUS_ENUM[run.visible_status], pid=run.process.pid,
                               last_log_seq=run.spool.last_log_seq, last_metric_seq=run.spool.last_metric_seq,
                               attempt=run.attempt, devices=run.devices, adopted=run.adopted)
