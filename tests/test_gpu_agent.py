"""The GPU agent in-process on an ephemeral port, driven over a real gRPC channel; trainers are real subprocesses
(tests/helpers/line_trainer.py, registered here as the task type `line-test`)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import BaseModel, ConfigDict

from gpu_agent.log_spool import SpoolWriter, read_spool
from gpu_agent.server import SERVICE_NAME, start_agent, stop_agent
from gpu_agent.settings import AgentSettings
from protos import agent_pb2, agent_pb2_grpc, common_pb2, control_plane_pb2, control_plane_pb2_grpc
from protos.auth import bearer_channel, token_from_metadata
from trainers import registry
from trainers.registry import DataReport, TaskType

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_TYPE = "line-test"
CLUSTER_TOKEN = "test-cluster-token"
S = common_pb2

pytestmark = pytest.mark.timeout(60)


class LineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lines: int = 0
    stderr_lines: int = 0
    metrics: int = 0
    sleep: float = 0.0
    partial_tail: bool = False
    hold: float = 0.0
    exit_code: int = 0
    self_signal: int = 0
    ignore_sigterm: bool = False
    grandchild: bool = False


@pytest.fixture
async def env(tmp_path):
    try:
        registry.all_types()  # loads the built-in types now; tolerated while they are still being written
    except ImportError:
        pass
    registry.register(TaskType(
        name=TEST_TYPE, description="prints numbered lines", config_model=LineConfig,
        entry_module="tests.helpers.line_trainer", validate_data=lambda c, w: DataReport(path="", rows=0),
        default_config={}, data_example={}))
    settings = AgentSettings(agent_host="127.0.0.1", agent_port=0, workspace=str(tmp_path), agent_slots=8,
                             control_plane_address="", stop_grace_seconds=5.0, cluster_token=CLUSTER_TOKEN)
    server, port, agent = await start_agent(settings)
    channel = bearer_channel(f"127.0.0.1:{port}", CLUSTER_TOKEN)
    yield SimpleNamespace(stub=agent_pb2_grpc.GpuAgentStub(channel), channel=channel, agent=agent, port=port,
                          workspace=tmp_path)
    for run in agent.tasks.values():
        if not run.ended:
            run.process.signal_group(signal.SIGKILL)
            await asyncio.wait_for(run.wait(), 10)  # the pump reaps it
    await channel.close()
    await stop_agent(server, agent, grace=0)
    registry.unregister(TEST_TYPE)


async def launch(stub, task_id: str, **config) -> agent_pb2.LaunchTaskResponse:
    # The child runs in the workspace (a tmp dir): PYTHONPATH makes `tests.helpers` importable there.
    return await stub.LaunchTask(agent_pb2.LaunchTaskRequest(
        task_id=task_id, type=TEST_TYPE, config_json=json.dumps(config), env={"PYTHONPATH": str(REPO_ROOT)}))


async def events(stub, task_id: str, after_log: int = 0, after_metric: int = 0, follow: bool = True,
                 timeout: float = 20.0) -> list[agent_pb2.AgentTaskEvent]:
    call = stub.StreamTaskEvents(agent_pb2.StreamTaskEventsRequest(
        task_id=task_id, after_log_seq=after_log, after_metric_seq=after_metric, follow=follow), timeout=timeout)
    return [event async for event in call]


def split(evs):
    logs = [e.log for e in evs if e.WhichOneof("event") == "log"]
    metrics = [e.metric for e in evs if e.WhichOneof("event") == "metric"]
    statuses = [e.status for e in evs if e.WhichOneof("event") == "status"]
    return logs, metrics, statuses


async def wait_group_gone(pgid: int, timeout: float = 8.0) -> None:
    """init reaps orphaned zombies lazily here, and killpg(pgid, 0) counts zombies: poll."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"process group {pgid} still exists")
        await asyncio.sleep(0.1)


async def test_lines_metrics_follow_and_success(env):
    resp = await launch(env.stub, "t-ok", lines=20, stderr_lines=5, metrics=3, sleep=0.02, partial_tail=True)
    assert resp.pid > 0 and Path(resp.task_dir) == env.workspace / "var/agent/tasks/t-ok"
    evs, ended_at_first_line = [], None
    call = env.stub.StreamTaskEvents(agent_pb2.StreamTaskEventsRequest(task_id="t-ok", follow=True), timeout=20)
    async for ev in call:
        if ev.WhichOneof("event") == "log" and ended_at_first_line is None:
            ended_at_first_line = env.agent.tasks["t-ok"].ended
        evs.append(ev)
    assert ended_at_first_line is False  # lines stream live, while the trainer still runs
    logs, metrics, statuses = split(evs)
    assert [line.seq for line in logs] == list(range(1, 27))
    assert [line.text for line in logs if line.stream == "stdout"] == [f"out {i}" for i in range(1, 21)] + [
        "tail without newline"]
    assert [line.text for line in logs if line.stream == "stderr"] == [f"err {i}" for i in range(1, 6)]
    assert [m.seq for m in metrics] == [1, 2, 3]
    assert json.loads(metrics[2].values_json) == {"step": 3, "total_steps": 3, "loss": 1 / 3}
    assert '"step": 3' in metrics[2].values_json  # the trainer's text, integers kept
    assert [s.status for s in statuses] == [S.TASK_STATUS_RUNNING, S.TASK_STATUS_SUCCEEDED]
    assert statuses[0].pid == resp.pid and evs[0].WhichOneof("event") == "status"
    assert evs[-1].status.reason == "exited" and evs[-1].status.exit_code == 0

    # Resuming from the middle, without follow: only what comes after, then the statuses, then the end.
    tail = await events(env.stub, "t-ok", after_log=20, after_metric=2, follow=False)
    t_logs, t_metrics, t_statuses = split(tail)
    assert [line.seq for line in t_logs] == list(range(21, 27))
    assert [m.seq for m in t_metrics] == [3]
    assert [s.status for s in t_statuses] == [S.TASK_STATUS_RUNNING, S.TASK_STATUS_SUCCEEDED]

    # A fresh reader of the spool sees the same seqs; a restarted writer resumes without new or repeated seqs.
    task_dir = Path(resp.task_dir)
    spooled = [(r["seq"], r["stream"], r["text"]) for r in read_spool(task_dir) if r["kind"] == "log"]
    assert spooled == [(line.seq, line.stream, line.text) for line in logs]
    writer = SpoolWriter(task_dir)
    assert (writer.last_log_seq, writer.last_metric_seq) == (26, 3)
    assert writer.poll(final=True) == ([], False)
    writer.close()

    desc = await env.stub.DescribeAgent(agent_pb2.DescribeAgentRequest())
    assert desc.slots == 8 and desc.free_slots == 8
    (task,) = desc.tasks
    assert (task.task_id, task.status, task.last_log_seq, task.last_metric_seq) == (
        "t-ok", S.TASK_STATUS_SUCCEEDED, 26, 3)
    state = json.loads((task_dir / "state.json").read_text())
    assert state["status"] == "succeeded" and state["pid"] == resp.pid and state["start_time"]


@pytest.mark.parametrize(
    "config, status, reason, error_has, error_lacks",
    [
        (dict(stderr_lines=2, exit_code=3), S.TASK_STATUS_FAILED, "invalid_data", "err 2", None),
        (dict(stderr_lines=25, exit_code=1), S.TASK_STATUS_FAILED, "trainer_error", "err 6\n", "err 5\n"),
        (dict(stderr_lines=1, self_signal=9), S.TASK_STATUS_FAILED, "trainer_error", "killed by signal 9", None),
    ],
    ids=["invalid-data", "trainer-error", "signal"],
)
async def test_failures(env, config, status, reason, error_has, error_lacks):
    await launch(env.stub, "t-fail", **config)
    final = (await events(env.stub, "t-fail"))[-1].status
    assert (final.status, final.reason) == (status, reason)
    assert error_has in final.error
    if error_lacks:
        assert error_lacks not in final.error and final.error.endswith("err 25")
    if reason == "invalid_data":
        assert final.exit_code == 3


async def test_stop_kills_the_whole_group(env):
    resp = await launch(env.stub, "t-stop", lines=2, grandchild=True, hold=60)
    pid_file = Path(resp.task_dir) / "grandchild.pid"
    for _ in range(200):
        if pid_file.exists():
            break
        await asyncio.sleep(0.05)
    grandchild = int(pid_file.read_text())
    assert os.getpgid(grandchild) == resp.pid
    stopped = await env.stub.StopTask(agent_pb2.AgentStopTaskRequest(task_id="t-stop"))
    assert stopped.status == S.TASK_STATUS_STOPPING
    final = (await events(env.stub, "t-stop"))[-1].status
    assert (final.status, final.reason) == (S.TASK_STATUS_STOPPED, "user_stop")
    await wait_group_gone(resp.pid)
    again = await env.stub.StopTask(agent_pb2.AgentStopTaskRequest(task_id="t-stop"))
    assert again.status == S.TASK_STATUS_STOPPED


async def test_sigterm_ignored_gets_sigkill_after_grace(env):
    resp = await launch(env.stub, "t-stubborn", lines=1, ignore_sigterm=True, grandchild=True, hold=60)
    first = env.stub.StreamTaskEvents(agent_pb2.StreamTaskEventsRequest(task_id="t-stubborn", follow=True))
    async for ev in first:  # wait for the first line: the SIGTERM handler is set by then
        if ev.WhichOneof("event") == "log":
            break
    first.cancel()
    started = time.monotonic()
    await env.stub.StopTask(agent_pb2.AgentStopTaskRequest(task_id="t-stubborn", grace_seconds=1))
    final = (await events(env.stub, "t-stubborn"))[-1].status
    elapsed = time.monotonic() - started
    assert (final.status, final.reason) == (S.TASK_STATUS_STOPPED, "user_stop")
    assert "killed after the grace period" in final.error
    assert 0.9 < elapsed < 6
    await wait_group_gone(resp.pid)


async def test_request_errors(env):
    stub = env.stub

    async def code_of(coro) -> grpc.StatusCode:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await coro
        return info.value.code()

    bad_type = agent_pb2.LaunchTaskRequest(task_id="x1", type="no-such-type", config_json="{}")
    assert await code_of(stub.LaunchTask(bad_type)) == grpc.StatusCode.INVALID_ARGUMENT
    bad_id = agent_pb2.LaunchTaskRequest(task_id="../up", type=TEST_TYPE, config_json="{}")
    assert await code_of(stub.LaunchTask(bad_id)) == grpc.StatusCode.INVALID_ARGUMENT
    bad_config = agent_pb2.LaunchTaskRequest(task_id="x2", type=TEST_TYPE, config_json='{"nope": 1}')
    assert await code_of(stub.LaunchTask(bad_config)) == grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(stub.StopTask(agent_pb2.AgentStopTaskRequest(task_id="nope"))) == grpc.StatusCode.NOT_FOUND
    assert await code_of(events(stub, "nope")) == grpc.StatusCode.NOT_FOUND

    env.agent.slots = 1
    await launch(stub, "busy", hold=60)
    assert await code_of(launch(stub, "busy", hold=60)) == grpc.StatusCode.ALREADY_EXISTS
    assert await code_of(launch(stub, "second")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    desc = await stub.DescribeAgent(agent_pb2.DescribeAgentRequest())
    assert desc.free_slots == 0 and [t.status for t in desc.tasks] == [S.TASK_STATUS_RUNNING]
    await stub.StopTask(agent_pb2.AgentStopTaskRequest(task_id="busy", grace_seconds=1))
    await events(stub, "busy")
    assert (await launch(stub, "second")).pid > 0


async def test_health_and_reflection(env):
    health = health_pb2_grpc.HealthStub(env.channel)
    for service in ("", SERVICE_NAME):
        resp = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(env.channel)
    call = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = [s.name async for r in call for s in r.list_services_response.service]
    assert SERVICE_NAME in names and "grpc.health.v1.Health" in names


async def test_agent_shutdown_leaves_trainers_running(tmp_path):
    registry.register(TaskType(
        name=TEST_TYPE, description="", config_model=LineConfig, entry_module="tests.helpers.line_trainer",
        validate_data=lambda c, w: DataReport(path="", rows=0), default_config={}, data_example={}))
    settings = AgentSettings(agent_port=0, workspace=str(tmp_path), control_plane_address="", cluster_token=CLUSTER_TOKEN)
    server, _, agent = await start_agent(settings)
    try:
        run = agent.launch("survivor", TEST_TYPE, json.dumps({"hold": 60}), {"PYTHONPATH": str(REPO_ROOT)})
        await stop_agent(server, agent, grace=0)
        os.killpg(run.process.pgid, 0)  # still there
        assert run.process.poll() is None
    finally:
        run.process.signal_group(signal.SIGKILL)
        run.process.popen.wait(timeout=10)  # still this process's child: nobody else reaps it
        registry.unregister(TEST_TYPE)
    await wait_group_gone(run.process.pgid)


def test_spool_resumes_from_recorded_offsets(tmp_path):
    (tmp_path / "stdout.log").write_bytes(b"a\nb\xff\nhalf")
    (tmp_path / "stderr.log").write_bytes(b"e1\n")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    writer = SpoolWriter(tmp_path)
    records, _ = writer.poll()
    assert [(r["kind"], r["seq"], r.get("text")) for r in records] == [
        ("log", 1, "a"), ("log", 2, "b\ufffd"), ("log", 3, "e1"), ("metric", 1, None), ("metric", 3, None)]
    writer.close()
    # A crash mid-append leaves half a record; the trainer keeps writing meanwhile.
    with open(tmp_path / "spool.jsonl", "ab") as f:
        f.write(b'{"kind": "log", "seq": 4')
    with open(tmp_path / "stdout.log", "ab") as f:
        f.write(b"-done\n" + b"x" * 3_000_000 + b"\n")
    writer = SpoolWriter(tmp_path)
    assert writer.last_log_seq == 3 and list(writer.stderr_tail) == ["e1"]
    records, _ = writer.poll()
    assert [(r["seq"], r["text"][:8]) for r in records] == [(4, "half-don"), (5, "xxxxxxxx")]
    assert len(records[1]["text"]) == 3_000_000
    writer.close()
    assert [r["seq"] for r in read_spool(tmp_path) if r["kind"] == "log"] == [1, 2, 3, 4, 5]


def test_failed_spool_write_consumes_nothing(tmp_path):
    (tmp_path / "stdout.log").write_bytes(b"one\ntwo\n")
    writer = SpoolWriter(tmp_path)
    real_file = writer._file

    class FullDisk:
        def __getattr__(self, name):
            return getattr(real_file, name)

        def write(self, data):
            real_file.write(data[:5])
            raise OSError(28, "No space left on device")

    writer._file = FullDisk()
    with pytest.raises(OSError):
        writer.poll()
    assert writer.last_log_seq == 0
    records, _ = writer.poll()
    assert [(r["seq"], r["text"]) for r in records] == [(1, "one"), (2, "two")]
    writer.close()
    assert [r["seq"] for r in read_spool(tmp_path)] == [1, 2]


def test_settings_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("BUGAGARIC_AGENT_HOST", "0.0.0.0")
    monkeypatch.setenv("BUGAGARIC_AGENT_SLOTS", "3")
    monkeypatch.setenv("BUGAGARIC_WORKSPACE", str(tmp_path))
    monkeypatch.setenv("BUGAGARIC_CONTROL_PLANE_ADDRESS", "")
    s = AgentSettings()
    assert (s.agent_slots, s.control_plane_address, s.agent_port) == (3, "", 50061)
    assert s.advertise_address(1234) == "127.0.0.1:1234"
    assert s.agent_dir_path() == tmp_path.resolve() / "var/agent"
    assert s.resolved_agent_id(1234).endswith("-1234")
    monkeypatch.setenv("BUGAGARIC_AGENT_ADVERTISE_ADDRESS", "gpu7:50061")
    assert AgentSettings().advertise_address(1) == "gpu7:50061"


class FakeRegistry(control_plane_pb2_grpc.AgentRegistryServicer):
    """Records what the agent sends; answers known=False to the heartbeats in `forget`."""

    def __init__(self):
        self.registers: list[control_plane_pb2.RegisterAgentRequest] = []
        self.heartbeats: list[control_plane_pb2.HeartbeatRequest] = []
        self.forget = {2}

    async def RegisterAgent(self, request, context):
        assert token_from_metadata(context.invocation_metadata()) == CLUSTER_TOKEN
        self.registers.append(request)
        return control_plane_pb2.RegisterAgentResponse(heartbeat_interval_seconds=0)

    async def Heartbeat(self, request, context):
        assert token_from_metadata(context.invocation_metadata()) == CLUSTER_TOKEN
        self.heartbeats.append(request)
        return control_plane_pb2.HeartbeatResponse(known=len(self.heartbeats) not in self.forget)


async def test_registers_retries_and_heartbeats(tmp_path):
    with socket.socket() as probe:  # a free port; nothing listens there at first
        probe.bind(("127.0.0.1", 0))
        cp_port = probe.getsockname()[1]
    settings = AgentSettings(agent_port=0, workspace=str(tmp_path), control_plane_address=f"127.0.0.1:{cp_port}",
                             heartbeat_seconds=0.1, agent_id="agent-under-test", agent_slots=2,
                             cluster_token=CLUSTER_TOKEN)
    server, port, agent = await start_agent(settings)
    cp = grpc.aio.server()
    fake = FakeRegistry()
    try:
        await asyncio.sleep(0.3)  # the first attempt fails: the control plane is not up yet
        assert not agent.registrar.registered.is_set()
        control_plane_pb2_grpc.add_AgentRegistryServicer_to_server(fake, cp)
        assert cp.add_insecure_port(f"127.0.0.1:{cp_port}") == cp_port
        await cp.start()
        deadline = time.monotonic() + 10
        while (len(fake.registers) < 2 or len(fake.heartbeats) < 3) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        first = fake.registers[0]
        assert (first.agent_id, first.address, first.slots) == ("agent-under-test", f"127.0.0.1:{port}", 2)
        assert len(fake.registers) == 2  # again after the heartbeat answered known=false
        assert fake.heartbeats[0].agent_id == "agent-under-test"
    finally:
        await stop_agent(server, agent, grace=0)
        await cp.stop(0)


def test_module_entry_point_serves_and_stops_on_sigterm(tmp_path):
    env = {**os.environ, "BUGAGARIC_AGENT_PORT": "0", "BUGAGARIC_WORKSPACE": str(tmp_path),
           "BUGAGARIC_CONTROL_PLANE_ADDRESS": "", "BUGAGARIC_CLUSTER_TOKEN": CLUSTER_TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "gpu_agent"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in proc.stderr:
            if " serving on " in line:
                port = int(line.split(" serving on ")[1].split()[0].rsplit(":", 1)[1])
                break
        assert port, "the agent never said where it serves"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                                                             timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert "agent stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("token", ["", "wrong-token"])
async def test_every_agent_method_refuses_calls_without_the_cluster_token(env, token):
    channel = bearer_channel(f"127.0.0.1:{env.port}", token)
    stub = agent_pb2_grpc.GpuAgentStub(channel)
    service = agent_pb2.DESCRIPTOR.services_by_name["GpuAgent"]
    try:
        for method in service.methods:
            request_class = getattr(agent_pb2, method.input_type.name, None) or getattr(common_pb2, method.input_type.name)
            call = getattr(stub, method.name)(request_class(task_id="x") if "task_id" in request_class.DESCRIPTOR.fields_by_name else request_class())
            with pytest.raises(grpc.aio.AioRpcError) as info:
                if method.server_streaming:
                    async for _ in call:
                        pass
                else:
                    await call
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, method.name
    finally:
        await channel.close()
