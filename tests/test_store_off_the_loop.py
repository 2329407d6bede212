"""No control-plane handler runs a database statement on the event loop's thread: every statement any engine sends is
checked (SQLAlchemy's before_cursor_execute) while real gRPC calls drive the handlers of a real control plane on a
loopback port, with an agent registered through the real AgentRegistry (at an address where nothing answers, so the
scheduler places, fails to launch and requeues)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import traceback

import grpc
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from protos import common_pb2, control_plane_pb2 as cp, control_plane_pb2_grpc
from tests.helpers.live import LiveControlPlane, free_port
from tests.helpers.tiny_models import sft_rows


class LoopStatements:
    """The statements sent from a thread that is running an asyncio event loop, with where they came from."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if asyncio._get_running_loop() is not None:
            project = [f"{frame.filename.rsplit('/', 2)[-2]}/{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} "
                       f"{frame.name}" for frame in traceback.extract_stack()
                       if "/control_plane/" in frame.filename or "/protos/" in frame.filename]
            with self._lock:
                self.found.append(" <- ".join(reversed(project)) + f": {statement.split()[0]}")


@pytest.fixture
def loop_statements():
    spy = LoopStatements()
    event.listen(Engine, "before_cursor_execute", spy)
    yield spy
    event.remove(Engine, "before_cursor_execute", spy)


class Callers:
    """Stubs of a live control plane, with the metadata of its admin and of its agents (the cluster token)."""

    def __init__(self, control_plane: LiveControlPlane) -> None:
        self.channel = grpc.insecure_channel(control_plane.address)
        self.auth = control_plane_pb2_grpc.AuthServiceStub(self.channel)
        self.service = control_plane_pb2_grpc.FinetuneServiceStub(self.channel)
        self.registry = control_plane_pb2_grpc.AgentRegistryStub(self.channel)
        login = self.auth.Login(cp.LoginRequest(username="admin", password=control_plane.admin_password), timeout=30)
        self.user = (("authorization", f"Bearer {login.token}"),)
        self.cluster = (("authorization", f"Bearer {control_plane.settings.cluster_token}"),)

    def upload_sft_rows(self) -> cp.Dataset:
        rows = "".join(json.dumps(row) + "\n" for row in sft_rows(8)).encode()
        parts = [cp.UploadDatasetRequest(header=cp.DatasetHeader(name="train.jsonl", type="sft")),
                 cp.UploadDatasetRequest(data=rows)]
        return self.service.UploadDataset(iter(parts), metadata=self.user, timeout=60)


def _rpc(call, *args, **kwargs):
    """The reply, or the status code of a refusal (refusals are fine here: only where the statements ran counts)."""
    try:
        return call(*args, timeout=30, **kwargs)
    except grpc.RpcError as exc:
        return exc.code()


def test_no_handler_runs_a_database_statement_on_the_event_loop(tmp_path, loop_statements):
    control_plane = LiveControlPlane(tmp_path / "cp", scheduler_interval_seconds=0.2, heartbeat_seconds=1).start()
    try:
        loop_statements.found.clear()  # start-up is not a handler
        callers = Callers(control_plane)
        channel, auth, service, registry = callers.channel, callers.auth, callers.service, callers.registry
        user, cluster = callers.user, callers.cluster

        _rpc(auth.WhoAmI, cp.WhoAmIRequest(), metadata=user)
        _rpc(auth.ListUsers, cp.ListUsersRequest(), metadata=user)
        _rpc(auth.CreateUser, cp.CreateUserRequest(username="ben", password="ben-password-1"), metadata=user)
        _rpc(auth.DeleteUser, cp.DeleteUserRequest(username="ben"), metadata=user)

        dataset = callers.upload_sft_rows()
        _rpc(service.ListDatasets, cp.ListDatasetsRequest(), metadata=user)
        _rpc(service.GetDataset, cp.GetDatasetRequest(dataset_id=dataset.id), metadata=user)

        agent = cp.RegisterAgentRequest(agent_id="agent-x", address=f"127.0.0.1:{free_port()}", hostname="nowhere",
                                        slots=1, hub_access=True)
        registry.RegisterAgent(agent, metadata=cluster, timeout=30)
        _rpc(registry.Heartbeat, cp.HeartbeatRequest(agent_id="agent-x", hub_access=True), metadata=cluster)

        config = {"model_name_or_path": "some-org/some-model", "train_data_path": f"dataset:{dataset.id}"}
        task = service.StartTask(cp.StartTaskRequest(type="sft", config_json=json.dumps(config)), metadata=user,
                                 timeout=60)
        second = service.StartTask(cp.StartTaskRequest(type="sft", config_json=json.dumps(config)), metadata=user,
                                   timeout=60)
        deadline = time.monotonic() + 60  # the scheduler places it, the launch fails, it is requeued
        while time.monotonic() < deadline:
            reply = service.GetTask(cp.GetTaskRequest(task_id=task.id), metadata=user, timeout=30)
            if any(e.reason == "launch_retry" for e in reply.events):
                break
            _rpc(registry.Heartbeat, cp.HeartbeatRequest(agent_id="agent-x", hub_access=True), metadata=cluster)
            time.sleep(0.2)
        else:
            pytest.fail("the scheduler never tried to launch the task")

        first_page = service.ListTasks(cp.ListTasksRequest(limit=1), metadata=user, timeout=30)
        _rpc(service.ListTasks, cp.ListTasksRequest(limit=1, page_token=first_page.next_page_token), metadata=user)
        _rpc(service.ListTasks, cp.ListTasksRequest(status="queued", type="sft"), metadata=user)
        _rpc(service.GetTaskLogs, cp.GetTaskLogsRequest(task_id=task.id), metadata=user)
        _rpc(service.GetTaskMetrics, cp.GetTaskMetricsRequest(task_id=task.id), metadata=user)
        _rpc(lambda *a, **k: list(service.StreamTaskLogs(*a, **k)), cp.StreamTaskLogsRequest(task_id=task.id),
             metadata=user)
        _rpc(service.ListArtifacts, cp.ListArtifactsRequest(task_id=task.id), metadata=user)
        _rpc(service.ListTemplates, cp.ListTemplatesRequest(), metadata=user)
        saved = _rpc(service.SaveTemplate, cp.SaveTemplateRequest(name="t", type="sft", config_json="{}"),
                     metadata=user)
        _rpc(service.DeleteTemplate, cp.DeleteTemplateRequest(template_id=getattr(saved, "id", "x")), metadata=user)
        _rpc(service.ListModels, cp.ListModelsRequest(), metadata=user)
        _rpc(service.GetSystemHealth, cp.GetSystemHealthRequest(), metadata=user)
        _rpc(service.ValidateTask, common_pb2.ValidateTaskRequest(type="sft", config_json=json.dumps(config)), metadata=user)
        _rpc(service.ExportTask, cp.ExportTaskRequest(task_id=task.id), metadata=user)
        _rpc(service.UpdateTaskPriority, cp.UpdateTaskPriorityRequest(task_id=second.id, priority=3), metadata=user)
        for task_id in (task.id, second.id):
            _rpc(service.StopTask, cp.StopTaskRequest(task_id=task_id), metadata=user)
        _rpc(service.ResumeTask, cp.ResumeTaskRequest(task_id=task.id), metadata=user)
        _rpc(service.DeleteTask, cp.DeleteTaskRequest(task_id=second.id), metadata=user)
        _rpc(service.DeleteDataset, cp.DeleteDatasetRequest(dataset_id=dataset.id), metadata=user)
        _rpc(auth.Logout, cp.LogoutRequest(), metadata=user)
        channel.close()
    finally:
        control_plane.stop()
    assert not loop_statements.found, "statements run on the event loop, from:\n" + "\n".join(
        sorted(set(loop_statements.found)))


def test_the_scheduler_reads_nothing_while_no_agent_has_a_free_device(tmp_path):
    control_plane = LiveControlPlane(tmp_path / "cp", scheduler_interval_seconds=0.05).start()
    try:
        scheduler = control_plane._running.scheduler
        callers = Callers(control_plane)
        channel, service, registry = callers.channel, callers.service, callers.registry
        user, cluster = callers.user, callers.cluster
        dataset = callers.upload_sft_rows()
        config = json.dumps({"model_name_or_path": "org/model", "train_data_path": f"dataset:{dataset.id}"})

        def rounds_reach(count: int) -> None:
            deadline = time.monotonic() + 30
            while scheduler.rounds < count and time.monotonic() < deadline:
                time.sleep(0.05)
            assert scheduler.rounds >= count

        rounds_reach(1)  # the round every start owes
        queued = service.StartTask(cp.StartTaskRequest(type="sft", config_json=config), metadata=user, timeout=60)
        time.sleep(1.0)  # some 20 ticks of its timer
        assert scheduler.rounds == 1, "the scheduler read the store for a task no agent could take"

        service.StopTask(cp.StopTaskRequest(task_id=queued.id), metadata=user, timeout=30)  # a stop wakes it
        rounds_reach(2)
        registry.RegisterAgent(cp.RegisterAgentRequest(agent_id="agent-x", address=f"127.0.0.1:{free_port()}",
                                                       hostname="nowhere", slots=1, hub_access=True),
                               metadata=cluster, timeout=30)
        rounds_reach(3)  # an agent came: its device is free
        time.sleep(1.0)
        assert scheduler.rounds == 3, "the scheduler read the store with nothing to place"
        service.StartTask(cp.StartTaskRequest(type="sft", config_json=config), metadata=user, timeout=60)
        rounds_reach(4)  # now a submit has a free device to go to
        channel.close()
    finally:
        control_plane.stop()
