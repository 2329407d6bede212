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
from gpu_agent import process_runner
from gpu_agent.inventory import Inventory
from gpu_agent.log_spool import SpoolWriter, read_spool
from gpu_agent.server import SERVICE_NAME, start_agent, stop_agent
from gpu_agent.settings import AgentSettings
from protos import agent_pb2, agent_pb2_grpc, common_pb2, control_plane_pb2, control_plane_pb2_grpc
from protos.auth import bearer_channel, token_from_metadata
from tests.helpers import line_trainer
from trainers import registry

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_TYPE = "line-test"
CLUSTER_TOKEN = "test-cluster-token"
S = common_pb2

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def env(tmp_path):
    try:
        registry.all_types()  # loads the built-in types now; tolerated while they are still being written
    except ImportError:
        pass
    registry.register(line_trainer.task_type())
    settings = AgentSettings(agent_host="127.0.0.1", agent_port=0, workspace=str(tmp_path), agent_slots=8,
                             agent_devices="cpu", control_plane_address="", stop_grace_seconds=5.0,
                             cluster_token=CLUSTER_TOKEN)
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


async def launch(stub, task_id: str, *, devices=(), attempt: int = 0, log_seq_base: int = 0,
                 metric_seq_base: int = 0, resume_from_checkpoint: str = "", **config) -> agent_pb2.LaunchTaskResponse:
    # The child runs in the workspace (a tmp dir): PYTHONPATH makes `tests.helpers` importable there.
    return await stub.LaunchTask(agent_pb2.LaunchTaskRequest(
        task_id=task_id, type=TEST_TYPE, config_json=json.dumps(config), env={"PYTHONPATH": str(REPO_ROOT)},
        devices=list(devices), attempt=attempt, log_seq_base=log_seq_base, metric_seq_base=metric_seq_base,
        resume_from_checkpoint=resume_from_checkpoint))


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
    assert resp.pid > 0 and Path(resp.task_dir) == env.workspace / "var/agent/tasks/t-ok/attempt-1"
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
        # A trainer that saved a checkpoint on a SIGTERM nobody on the platform sent: not a success.
        (dict(stderr_lines=1, exit_code=143), S.TASK_STATUS_FAILED, "trainer_error",
         "stopped by a SIGTERM the platform did not send", None),
    ],
    ids=["invalid-data", "trainer-error", "signal", "stopped-from-outside"],
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

    env.agent.inventory = Inventory.cpu_slots(1)
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


async def test_a_second_agent_on_a_port_in_use_fails_to_start_instead_of_sharing_it(env, tmp_path):
    settings = AgentSettings(agent_host="127.0.0.1", agent_port=env.port, workspace=str(tmp_path / "second"),
                             control_plane_address="", cluster_token=CLUSTER_TOKEN)
    with pytest.raises(RuntimeError, match="bind"):
        await start_agent(settings)


async def test_agent_shutdown_leaves_trainers_running(tmp_path):
    registry.register(line_trainer.task_type())
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
                             heartbeat_seconds=0.1, agent_id="agent-under-test", agent_slots=2, agent_devices="cpu",
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
        assert [(d.index, d.kind) for d in first.devices] == [(0, "cpu"), (1, "cpu")]
        assert len(first.devices) == first.slots and list(first.running_task_ids) == []
        assert all(len(h.devices) == first.slots for h in fake.heartbeats)  # fresh readings in every heartbeat
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


# -- devices, attempts, the supervisor, re-adoption ------------------------------------------------------------------


async def code_of(coro) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro
    return info.value.code()


def env_lines(logs) -> list[dict[str, str]]:
    """The `env K=V ...` lines line_trainer prints with print_env, as dicts."""
    return [dict(part.split("=", 1) for part in line.text.split()[1:]) for line in logs if line.text.startswith("env ")]


def pid_gone(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return raw[raw.rindex(")") + 2] in "ZX"


async def wait_until(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_inventory_falls_back_to_cpu_slots(monkeypatch, caplog):
    from gpu_agent import inventory

    cpu = Inventory.discover(3, "cpu")
    assert [(d.index, d.kind) for d in cpu.devices] == [(0, "cpu"), (1, "cpu"), (2, "cpu")] and len(cpu) == 3
    assert cpu.refresh() == cpu.devices

    # The NVML path: pynvml is a dependency, but this host has no driver: it must fall back, with one info line.
    pytest.importorskip("pynvml")
    with caplog.at_level("INFO", logger="gpu_agent.inventory"):
        auto = Inventory.discover(2)
    if auto.kind == "gpu":
        pytest.skip("this host has NVIDIA GPUs")
    assert [(d.index, d.kind) for d in auto.devices] == [(0, "cpu"), (1, "cpu")]
    assert len([r for r in caplog.records if "CPU slots" in r.getMessage()]) == 1

    # No bindings installed at all: the same fallback.
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert Inventory.discover(1).kind == "cpu"

    # A host with GPUs, through a stand-in for pynvml: indices, names, readings, and a reading that fails.
    class Memory:
        total, free = 80 << 30, 60 << 30

    class FakeNvml(SimpleNamespace):
        fail_reading = False

        def nvmlDeviceGetMemoryInfo(self, handle):
            if self.fail_reading:
                raise RuntimeError("GPU fell off the bus")
            return Memory()

    fake = FakeNvml(
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i, nvmlDeviceGetUUID=lambda h: f"GPU-{h}",
        nvmlDeviceGetName=lambda h: b"NVIDIA H100", nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=37))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    gpus = Inventory.discover(5)
    assert [(d.index, d.kind, d.uuid, d.name) for d in gpus.devices] == [
        (0, "gpu", "GPU-0", "NVIDIA H100"), (1, "gpu", "GPU-1", "NVIDIA H100")]
    assert (gpus.devices[0].memory_total_bytes, gpus.devices[0].memory_free_bytes) == (80 << 30, 60 << 30)
    assert gpus.devices[1].utilization_percent == 37
    fake.fail_reading = True
    assert gpus.refresh()[0].memory_free_bytes == 60 << 30  # the last good reading stays
    # NVML that fails while listing falls back too.
    fake.nvmlDeviceGetCount = lambda: (_ for _ in ()).throw(RuntimeError("driver/library version mismatch"))
    assert Inventory.discover(2).kind == inventory.CPU


async def test_devices_become_cuda_visible_devices_and_are_held(env):
    desc = await env.stub.DescribeAgent(agent_pb2.DescribeAgentRequest())
    assert [(d.index, d.kind) for d in desc.devices] == [(i, "cpu") for i in range(8)]
    resp = await launch(env.stub, "t-dev", devices=[3], lines=1, print_env=True, hold=60)
    # Another task may not take a held device, nor one this agent does not have; it may take a free one.
    assert await code_of(launch(env.stub, "t-dev2", devices=[3, 4], hold=60)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await code_of(launch(env.stub, "t-dev2", devices=[8], hold=60)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await code_of(launch(env.stub, "t-dev2", devices=[-1], hold=60)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await code_of(launch(env.stub, "t-dev2", devices=[1, 1])) == grpc.StatusCode.INVALID_ARGUMENT
    await launch(env.stub, "t-old-caller", lines=1, print_env=True)  # no devices: the lowest free one
    logs, _, _ = split(await events(env.stub, "t-old-caller"))
    assert env_lines(logs)[0]["CUDA_VISIBLE_DEVICES"] == "0"

    desc = await env.stub.DescribeAgent(agent_pb2.DescribeAgentRequest())
    assert desc.slots == 8 and desc.free_slots == 7
    task = next(t for t in desc.tasks if t.task_id == "t-dev")
    assert (list(task.devices), task.attempt, task.adopted) == ([3], 1, False)
    first = env.stub.StreamTaskEvents(agent_pb2.StreamTaskEventsRequest(task_id="t-dev", follow=True))
    async for ev in first:
        if ev.WhichOneof("event") == "log":
            break
    first.cancel()
    assert ev.log.text.startswith("env CUDA_VISIBLE_DEVICES=3 ")
    state = json.loads((Path(resp.task_dir) / "state.json").read_text())
    assert state["devices"] == [3] and state["attempt"] == 1

    await env.stub.StopTask(agent_pb2.AgentStopTaskRequest(task_id="t-dev", grace_seconds=2))
    await events(env.stub, "t-dev")
    assert (await launch(env.stub, "t-dev2", devices=[3])).pid > 0  # released when the task ended


async def test_data_parallel_launch_runs_under_torchrun_and_stop_kills_the_tree(env):
    resp = await launch(env.stub, "t-ddp", devices=[0, 1], lines=2, print_env=True, pid_file=True, hold=60)
    task_dir = Path(resp.task_dir)
    await wait_until(lambda: all((task_dir / f"trainer-{r}.pid").exists() for r in (0, 1)), 40, "both ranks")
    workers = [int((task_dir / f"trainer-{r}.pid").read_text()) for r in (0, 1)]
    launcher = [pid for pid in process_runner.descendants(resp.pid) if pid not in workers]
    cmdline = Path(f"/proc/{launcher[0]}/cmdline").read_bytes().split(b"\0")
    assert b"torch.distributed.run" in cmdline and b"--nproc_per_node=2" in cmdline
    assert b"tests.helpers.line_trainer" in cmdline

    def printed():
        records = [r for r in read_spool(task_dir) if r["kind"] == "log" and r["text"].startswith("env ")]
        return [dict(p.split("=", 1) for p in r["text"].split()[1:]) for r in records]

    await wait_until(lambda: len(printed()) == 2, 60, "both env lines")
    ranks = sorted(printed(), key=lambda e: e["RANK"])
    assert [(e["RANK"], e["LOCAL_RANK"], e["WORLD_SIZE"]) for e in ranks] == [("0", "0", "2"), ("1", "1", "2")]
    assert {e["CUDA_VISIBLE_DEVICES"] for e in ranks} == {"0,1"}

    await env.stub.StopTask(agent_pb2.AgentStopTaskRequest(task_id="t-ddp", grace_seconds=5))
    final = (await events(env.stub, "t-ddp", timeout=30))[-1].status
    assert (final.status, final.reason) == (S.TASK_STATUS_STOPPED, "user_stop")
    for pid in [*workers, *launcher]:
        await wait_until(lambda: pid_gone(pid), 10, f"pid {pid} to go")
    await wait_group_gone(resp.pid)


async def test_seqs_continue_from_the_bases_of_a_new_attempt(env):
    resp = await launch(env.stub, "t-retry", attempt=2, log_seq_base=10, metric_seq_base=4,
                        resume_from_checkpoint="output/x/checkpoint-20", lines=3, metrics=2, print_env=True)
    assert Path(resp.task_dir) == env.workspace / "var/agent/tasks/t-retry/attempt-2"
    logs, metrics, statuses = split(await events(env.stub, "t-retry"))
    assert [line.seq for line in logs] == [11, 12, 13, 14]
    assert [line.text for line in logs[1:]] == ["out 1", "out 2", "out 3"]
    assert [m.seq for m in metrics] == [5, 6]
    assert statuses[-1].status == S.TASK_STATUS_SUCCEEDED
    printed = env_lines(logs)[0]
    assert (printed["BUGAGARIC_ATTEMPT"], printed["BUGAGARIC_RESUME_FROM_CHECKPOINT"]) == (
        "2", "output/x/checkpoint-20")
    after, after_metrics, _ = split(await events(env.stub, "t-retry", after_log=12, after_metric=5, follow=False))
    assert [line.seq for line in after] == [13, 14] and [m.seq for m in after_metrics] == [6]

    # The same attempt again is refused; the next one is welcome, but not while one runs.
    assert await code_of(launch(env.stub, "t-retry", attempt=2)) == grpc.StatusCode.ALREADY_EXISTS
    third = await launch(env.stub, "t-retry", attempt=3, log_seq_base=14, metric_seq_base=6, lines=1, hold=60)
    assert await code_of(launch(env.stub, "t-retry", attempt=4)) == grpc.StatusCode.ALREADY_EXISTS
    first = env.stub.StreamTaskEvents(agent_pb2.StreamTaskEventsRequest(task_id="t-retry", follow=True))
    async for ev in first:
        if ev.WhichOneof("event") == "log":
            break
    first.cancel()
    assert (ev.log.seq, ev.log.text) == (15, "out 1")
    assert Path(third.task_dir).name == "attempt-3"
    # kill_leftover_trainers looks into attempt directories too.
    killed = process_runner.kill_leftover_trainers(env.workspace / "var/agent")
    assert killed == [third.pid]
    final = (await events(env.stub, "t-retry"))[-1].status
    assert final.status == S.TASK_STATUS_FAILED and "killed by signal 9" in final.error


async def test_a_stream_is_of_one_attempt_and_its_reports_say_which(env):
    await launch(env.stub, "t-attempts", attempt=2, log_seq_base=3, lines=2)
    _, _, statuses = split(await events(env.stub, "t-attempts"))
    assert [s.attempt for s in statuses] == [2, 2] and statuses[-1].status == S.TASK_STATUS_SUCCEEDED
    same = env.stub.StreamTaskEvents(agent_pb2.StreamTaskEventsRequest(task_id="t-attempts", attempt=2))
    assert [e.log.seq for e in [e async for e in same] if e.WhichOneof("event") == "log"] == [4, 5]
    # The control plane follows attempt 3 (attempt 2 was given up): this agent's lines are not its lines.
    other = env.stub.StreamTaskEvents(agent_pb2.StreamTaskEventsRequest(task_id="t-attempts", attempt=3))
    assert await code_of(_drain(other)) == grpc.StatusCode.NOT_FOUND


async def _drain(call) -> list:
    return [event async for event in call]


async def test_dry_runs_run_a_few_at_a_time_and_refuse_beyond_the_waiting_room(env):
    from gpu_agent.servicer import DRY_RUNS_AT_ONCE, DRY_RUNS_WAITING

    (env.workspace / "data").mkdir()
    (env.workspace / "data" / "train.jsonl").write_text('{"query": "q?", "chosen": {"text": "a"}}\n')
    request = common_pb2.ValidateTaskRequest(type="sft", config_json=json.dumps(
        {"model_name_or_path": "no-such/model", "train_data_path": "data/train.jsonl"}), owner="alice")
    calls = [env.stub.ValidateTask(request, timeout=120) for _ in range(DRY_RUNS_AT_ONCE + DRY_RUNS_WAITING + 2)]
    answers = await asyncio.gather(*calls, return_exceptions=True)
    refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert [a.code() for a in refused] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2, refused
    reports = [a for a in answers if not isinstance(a, grpc.aio.AioRpcError)]
    # Each one ran to the end: the rows read, then the model looked for on this agent (it is not here).
    assert len(reports) == DRY_RUNS_AT_ONCE + DRY_RUNS_WAITING
    assert all(not r.ok and r.error_field == "model_name_or_path" and "'no-such/model'" in r.error_message
               for r in reports), reports[0]


def _supervise(tmp_path: Path, script: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gpu_agent.supervisor", "--exit-file", str(tmp_path / "exit.json"), "--",
         sys.executable, "-c", script], cwd=REPO_ROOT, start_new_session=True, **kwargs)


@pytest.mark.parametrize("code", [0, 3])
def test_supervisor_records_the_exit_code(tmp_path, code):
    proc = _supervise(tmp_path, f"import sys; print('hi'); sys.exit({code})", stdout=subprocess.PIPE)
    assert proc.communicate(timeout=30)[0] == b"hi\n"
    assert proc.returncode == code
    assert json.loads((tmp_path / "exit.json").read_text())["exit_code"] == code
    assert not (tmp_path / "exit.json.tmp").exists()


def test_supervisor_records_a_killed_trainer_and_ignores_sigterm(tmp_path):
    sleeper = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
    proc = _supervise(tmp_path, sleeper, stdout=subprocess.PIPE)
    child = int(proc.stdout.readline())
    assert child != proc.pid and os.getpgid(child) == proc.pid
    os.kill(child, signal.SIGKILL)  # the trainer only, not the supervisor
    assert proc.wait(timeout=30) == 128 + 9
    assert json.loads((tmp_path / "exit.json").read_text())["exit_code"] == -9

    # SIGTERM to the whole group: the trainer gets it, the supervisor stays to record it.
    proc = _supervise(tmp_path, sleeper, stdout=subprocess.PIPE)
    child = int(proc.stdout.readline())
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + 15
    assert json.loads((tmp_path / "exit.json").read_text())["exit_code"] == -15


def test_supervisor_kills_what_the_trainer_left_behind(tmp_path):
    # A child in a session of its own (as torchrun starts its workers), left running when the trainer exits.
    leaver = ("import subprocess; p = subprocess.Popen(['sleep', '60'], start_new_session=True); "
              "print(p.pid, flush=True)")
    proc = _supervise(tmp_path, leaver, stdout=subprocess.PIPE)
    orphan = int(proc.stdout.readline())
    assert proc.wait(timeout=30) == 0
    assert json.loads((tmp_path / "exit.json").read_text())["exit_code"] == 0
    assert pid_gone(orphan)


async def _local_agent(workspace: Path, **overrides):
    """An in-process agent on workspace (its own channel); 'crash' it with stop_agent, which leaves trainers be."""
    settings = AgentSettings(agent_port=0, workspace=str(workspace), control_plane_address="", agent_slots=4,
                             agent_devices="cpu", stop_grace_seconds=5.0, cluster_token=CLUSTER_TOKEN, **overrides)
    server, port, agent = await start_agent(settings)
    channel = bearer_channel(f"127.0.0.1:{port}", CLUSTER_TOKEN)
    return SimpleNamespace(server=server, agent=agent, channel=channel, stub=agent_pb2_grpc.GpuAgentStub(channel))


async def _crash(local) -> None:
    await local.channel.close()
    await stop_agent(local.server, local.agent, grace=0)


@pytest.fixture
def line_type():
    registry.register(line_trainer.task_type())
    yield
    registry.unregister(TEST_TYPE)


@pytest.mark.parametrize("lose_exit_file", [False, True], ids=["exit-file", "no-exit-file"])
async def test_task_that_ended_while_the_agent_was_down_reports_its_real_status(tmp_path, line_type,
                                                                                lose_exit_file):
    first = await _local_agent(tmp_path)
    resp = await launch(first.stub, "t-down", lines=5, stderr_lines=2, exit_code=3, hold=0.3)
    popen = first.agent.tasks["t-down"].process.popen
    await _crash(first)
    popen.wait(timeout=20)  # it ends while no agent watches (and this test process, its parent, reaps it)
    task_dir = Path(resp.task_dir)
    assert json.loads((task_dir / "state.json").read_text())["status"] == "running"
    if lose_exit_file:
        (task_dir / "exit.json").unlink()
    second = await _local_agent(tmp_path)
    try:
        logs, _, statuses = split(await events(second.stub, "t-down"))
        assert [line.seq for line in logs] == list(range(1, 8))
        assert sorted(line.text for line in logs) == sorted([f"out {i}" for i in range(1, 6)] + ["err 1", "err 2"])
        assert [s.status for s in statuses] == [S.TASK_STATUS_RUNNING, S.TASK_STATUS_FAILED]
        final = statuses[-1]
        if lose_exit_file:
            assert final.reason == "agent_lost"
            assert "ended while the agent was down; exit status unknown" in final.error
        else:
            assert (final.reason, final.exit_code) == ("invalid_data", 3) and "err 2" in final.error
        (task,) = (await second.stub.DescribeAgent(agent_pb2.DescribeAgentRequest())).tasks
        assert task.adopted and task.status == S.TASK_STATUS_FAILED and second.agent.running_task_ids() == []
        # A new attempt after the restart is fine; its seqs continue.
        again = await launch(second.stub, "t-down", attempt=2, log_seq_base=7, lines=1)
        assert [line.seq for line in split(await events(second.stub, "t-down"))[0]] == [8]
        assert Path(again.task_dir).name == "attempt-2"
    finally:
        await _crash(second)
    # A later agent serves the ended task's latest attempt to readers (read back from disk when asked).
    third = await _local_agent(tmp_path)
    try:
        assert third.agent.tasks == {}
        logs, _, statuses = split(await events(third.stub, "t-down", follow=False))
        assert [line.seq for line in logs] == [8] and statuses[-1].status == S.TASK_STATUS_SUCCEEDED
        (task,) = (await third.stub.DescribeAgent(agent_pb2.DescribeAgentRequest())).tasks
        assert (task.attempt, task.adopted, task.status) == (2, False, S.TASK_STATUS_SUCCEEDED)
    finally:
        await _crash(third)


async def test_stop_requested_before_a_restart_is_honoured(tmp_path, line_type):
    first = await _local_agent(tmp_path)
    resp = await launch(first.stub, "t-stopping", lines=1, ignore_sigterm=True, hold=60)
    popen = first.agent.tasks["t-stopping"].process.popen
    call = first.stub.StreamTaskEvents(agent_pb2.StreamTaskEventsRequest(task_id="t-stopping", follow=True))
    async for ev in call:  # the SIGTERM handler is set once the first line is out
        if ev.WhichOneof("event") == "log":
            break
    call.cancel()
    started = time.monotonic()
    await first.stub.StopTask(agent_pb2.AgentStopTaskRequest(task_id="t-stopping", grace_seconds=2))
    await _crash(first)  # before the grace period ends: nobody would send the SIGKILL
    second = await _local_agent(tmp_path)
    try:
        (task,) = (await second.stub.DescribeAgent(agent_pb2.DescribeAgentRequest())).tasks
        assert task.adopted and task.status == S.TASK_STATUS_STOPPING
        final = (await events(second.stub, "t-stopping"))[-1].status
        assert (final.status, final.reason) == (S.TASK_STATUS_STOPPED, "user_stop")
        assert "killed after the grace period" in final.error
        assert time.monotonic() - started < 8
        assert popen.wait(timeout=10) == -signal.SIGKILL  # still this process's child: reap it here
        await wait_group_gone(resp.pid)
    finally:
        await _crash(second)
        if popen.poll() is None:
            popen.kill()
            popen.wait()


async def test_stale_state_whose_pid_is_another_process_is_not_adopted(tmp_path, line_type, caplog):
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        task_dir = tmp_path / "var/agent/tasks/t-stale/attempt-1"
        task_dir.mkdir(parents=True)
        (task_dir / "stdout.log").write_text("out 1\n")
        real_start = process_runner.proc_start_time(victim.pid)
        process_runner.write_state(task_dir, {
            "task_id": "t-stale", "type": TEST_TYPE, "attempt": 1, "devices": [0], "pid": victim.pid,
            "pgid": victim.pid, "start_time": real_start + 12345, "status": "running", "stop_requested": True,
            "stop_deadline": time.time() - 1})
        with caplog.at_level("INFO", logger="gpu_agent.agent"):
            local = await _local_agent(tmp_path)
        try:
            final = (await events(local.stub, "t-stale"))[-1].status
            assert final.status == S.TASK_STATUS_STOPPED
            assert "ended while the agent was down" in final.error
            assert local.agent.running_task_ids() == [] and local.agent.free_slots == 4
            assert any("t-stale" in r.getMessage() and "ended while the agent was down" in r.getMessage()
                       for r in caplog.records)
            assert victim.poll() is None  # never signalled: the pid is someone else's now
        finally:
            await _crash(local)
    finally:
        victim.kill()
        victim.wait()


class AgentProcess:
    """`python -m gpu_agent` as a real process on workspace, its log in a file; `line-test` comes as a plugin."""

    def __init__(self, workspace: Path, name: str):
        self.log_path = workspace / f"{name}.log"
        env = {**os.environ, "BUGAGARIC_AGENT_PORT": "0", "BUGAGARIC_WORKSPACE": str(workspace),
               "BUGAGARIC_CONTROL_PLANE_ADDRESS": "", "BUGAGARIC_CLUSTER_TOKEN": CLUSTER_TOKEN,
               "BUGAGARIC_AGENT_SLOTS": "2", "BUGAGARIC_AGENT_DEVICES": "cpu",
               "BUGAGARIC_TRAINER_PLUGINS": "tests.helpers.line_trainer", "PYTHONPATH": str(REPO_ROOT)}
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen([sys.executable, "-m", "gpu_agent"], cwd=REPO_ROOT, env=env,
                                         stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def stub(self):
        await wait_until(lambda: " serving on " in self.log() or self.proc.poll() is not None, 30, "the agent")
        assert self.proc.poll() is None, self.log()
        port = int(self.log().split(" serving on ")[1].split()[0].rsplit(":", 1)[1])
        self.channel = bearer_channel(f"127.0.0.1:{port}", CLUSTER_TOKEN)
        return agent_pb2_grpc.GpuAgentStub(self.channel)

    async def close(self, sig: int = signal.SIGTERM) -> None:
        if getattr(self, "channel", None) is not None:
            await self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=15)


@pytest.mark.parametrize("exit_code, status, reason", [
    (0, S.TASK_STATUS_SUCCEEDED, "exited"),
    (3, S.TASK_STATUS_FAILED, "invalid_data"),
], ids=["succeeded", "invalid-data"])
async def test_agent_killed_hard_and_restarted_adopts_its_trainer(tmp_path, exit_code, status, reason):
    first = AgentProcess(tmp_path, "agent-1")
    second = None
    try:
        stub = await first.stub()
        resp = await launch(stub, "t-adopt", devices=[1], lines=40, metrics=4, sleep=0.1, exit_code=exit_code)
        seen = []
        call = stub.StreamTaskEvents(agent_pb2.StreamTaskEventsRequest(task_id="t-adopt", follow=True), timeout=20)
        async for ev in call:
            seen.append(ev)
            if ev.WhichOneof("event") == "log" and ev.log.seq >= 5:
                break
        call.cancel()
        await first.close(signal.SIGKILL)  # no goodbye: state.json still says running
        assert first.proc.returncode == -signal.SIGKILL
        assert process_runner.process_alive(resp.pid, process_runner.proc_start_time(resp.pid))

        second = AgentProcess(tmp_path, "agent-2")
        stub = await second.stub()
        desc = await stub.DescribeAgent(agent_pb2.DescribeAgentRequest())
        (task,) = desc.tasks
        assert (task.task_id, task.adopted, task.pid, list(task.devices)) == ("t-adopt", True, resp.pid, [1])
        assert "t-adopt attempt 1: adopted after an agent restart: supervisor pid" in second.log()
        evs = await events(stub, "t-adopt", timeout=40)
        logs, metrics, statuses = split(evs)
        # Every line exactly once, in order, no gap across the restart; the same seqs the first agent gave.
        assert [(line.seq, line.text) for line in logs] == [(i, f"out {i}") for i in range(1, 41)]
        first_logs, _, _ = split(seen)
        assert [(line.seq, line.text) for line in first_logs] == [(line.seq, line.text) for line in logs[:5]]
        assert [m.seq for m in metrics] == [1, 2, 3, 4]
        assert [s.status for s in statuses] == [S.TASK_STATUS_RUNNING, status]
        assert (statuses[-1].reason, statuses[-1].exit_code) == (reason, exit_code)
        state = json.loads((Path(resp.task_dir) / "state.json").read_text())
        assert state["status"] == ("succeeded" if exit_code == 0 else "failed") and state["adopted"]
        await wait_group_gone(resp.pid)
    finally:
        await first.close(signal.SIGKILL)
        if second is not None:
            await second.close()
        process_runner.kill_leftover_trainers(tmp_path / "var/agent")
