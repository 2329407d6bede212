"""The GpuAgent gRPC servicer: maps requests onto the Agent and spool records onto proto messages."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from gpu_agent.agent import Agent, AgentError, AlreadyExists, InvalidRequest, NoFreeSlot, TaskNotFound
from gpu_agent.inventory import DeviceInfo
from gpu_agent.task_run import TaskRun
from protos import agent_pb2, agent_pb2_grpc, common_pb2
from trainers import preflight

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


# Dry runs are subprocesses that may read big files and load tokenizers: a few at a time, a few more waiting.
DRY_RUNS_AT_ONCE = 2
DRY_RUNS_WAITING = 8


class GpuAgentServicer(agent_pb2_grpc.GpuAgentServicer):
    def __init__(self, agent: Agent):
        self.agent = agent
        self._dry_runs = asyncio.Semaphore(DRY_RUNS_AT_ONCE)
        self._dry_runs_waiting = 0

    async def _abort(self, context: grpc.aio.ServicerContext, exc: AgentError) -> None:
        await context.abort(_CODES.get(type(exc), grpc.StatusCode.FAILED_PRECONDITION), str(exc))

    async def LaunchTask(self, request, context):
        try:
            run = self.agent.launch(
                request.task_id, request.type, request.config_json, dict(request.env), devices=list(request.devices),
                attempt=request.attempt, log_seq_base=request.log_seq_base, metric_seq_base=request.metric_seq_base,
                resume_from_checkpoint=request.resume_from_checkpoint)
        except AgentError as exc:
            log.info("LaunchTask %s refused: %s", request.task_id, exc)
            await self._abort(context, exc)
        except OSError as exc:
            log.exception("LaunchTask %s: could not start the trainer", request.task_id)
            await context.abort(grpc.StatusCode.INTERNAL, f"could not start the trainer: {exc}")
        return agent_pb2.LaunchTaskResponse(pid=run.process.pid, task_dir=str(run.directory))

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
        async for rec in run.events(request.after_log_seq, request.after_metric_seq, request.follow):
            yield record_to_event(rec, run.attempt)

    async def ValidateTask(self, request, context):
        if self._dry_runs_waiting >= DRY_RUNS_AT_ONCE + DRY_RUNS_WAITING:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"agent {self.agent.agent_id} is busy with dry runs; try again shortly")
        self._dry_runs_waiting += 1
        try:
            async with self._dry_runs:
                report = await preflight.run_in_subprocess(
                    request.type, request.config_json, self.agent.workspace, self.agent.agent_dir / "preflight",
                    env={"BUGAGARIC_TASK_OWNER": request.owner,
                         "BUGAGARIC_PATH_SCOPE": "admin" if request.admin_paths else "user"},
                )
        except RuntimeError as exc:
            await context.abort(grpc.StatusCode.INTERNAL, str(exc))
        finally:
            self._dry_runs_waiting -= 1
        return report_to_proto(report, self.agent.agent_id)

    async def DescribeAgent(self, request, context):
        return agent_pb2.AgentDescription(
            agent_id=self.agent.agent_id, hostname=self.agent.hostname, slots=self.agent.slots,
            free_slots=self.agent.free_slots, tasks=[_describe_task(run) for run in self.agent.tasks.values()],
            devices=devices_to_proto(self.agent.inventory.refresh()))


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
