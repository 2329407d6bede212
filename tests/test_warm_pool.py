"""The warm trainer pool (gpu_agent.fork_server): attempts forked from it are isolated, stopped, re-adopted and
recorded like cold ones; the server never initialises CUDA; size 0 is today's cold start; a dead pool means cold
starts and a restart. The agent runs in-process on loopback, driven over gRPC; trainers are real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from gpu_agent.process_runner import read_exit_file
from gpu_agent.server import start_agent, stop_agent
from gpu_agent.settings import AgentSettings
from protos import agent_pb2, agent_pb2_grpc, common_pb2
from protos.auth import bearer_channel
from tests.helpers import line_trainer, warm_probe
from tests.helpers.tiny_models import write_sft_rows
from trainers import registry

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKEN = "warm-pool-test-token"
LIGHT = "trainers.common.cli"  # the mechanism without torch's seconds of imports
S = common_pb2

pytestmark = pytest.mark.timeout(120)


def settings_for(workspace: Path, size: int = 1, preload: str = LIGHT) -> AgentSettings:
    return AgentSettings(agent_host="127.0.0.1", agent_port=0, workspace=str(workspace), agent_slots=4,
                         agent_devices="cpu", control_plane_address="", stop_grace_seconds=3.0, cluster_token=TOKEN,
                         warm_pool_size=size, warm_pool_preload=preload)


async def started(workspace: Path, **kwargs) -> SimpleNamespace:
    server, port, agent = await start_agent(settings_for(workspace, **kwargs))
    if agent.warm_pool is not None:
        assert await asyncio.to_thread(agent.warm_pool.wait_ready, 90), "the warm pool never became ready"
    channel = bearer_channel(f"127.0.0.1:{port}", TOKEN)
    return SimpleNamespace(server=server, agent=agent, channel=channel, stub=agent_pb2_grpc.GpuAgentStub(channel))


async def stopped(env: SimpleNamespace, kill_tasks: bool = True) -> None:
    if kill_tasks:
        for run in env.agent.tasks.values():
            if not run.ended:
                run.process.signal_group(signal.SIGKILL)
                await asyncio.wait_for(run.wait(), 10)
    await env.channel.close()
    await stop_agent(env.server, env.agent, grace=0)


@pytest.fixture
async def agent_env(tmp_path):
    registry.register(line_trainer.task_type())
    registry.register(warm_probe.task_type())
    env = await started(tmp_path)
    env.workspace = tmp_path
    yield env
    await stopped(env)
    registry.unregister(line_trainer.TYPE_NAME)
    registry.unregister(warm_probe.TYPE_NAME)


async def launch(stub, task_id: str, task_type: str = line_trainer.TYPE_NAME, env: dict | None = None, **config):
    return await stub.LaunchTask(agent_pb2.LaunchTaskRequest(
        task_id=task_id, type=task_type, config_json=json.dumps(config),
        env={"PYTHONPATH": str(REPO_ROOT), **(env or {})}))


async def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return value


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def is_warm(run) -> bool:
    return run.process.popen is None and run.process.reaper is not None


async def test_a_warm_attempt_has_its_own_environment_directory_session_and_files(agent_env):
    stub, agent = agent_env.stub, agent_env.agent
    for task_id, value in (("warm-a", "a"), ("warm-b", "b")):
        await launch(stub, task_id, warm_probe.TYPE_NAME, env={"TASK_VALUE": value}, hold=30)
    runs = [agent.tasks["warm-a"], agent.tasks["warm-b"]]
    assert all(is_warm(run) for run in runs) and agent.warm_pool.launched == 2
    probes = []
    for run, value in zip(runs, ("a", "b")):
        probe = await wait_for(lambda: read_json(run.directory / "probe.json"), what="the probe's report")
        probes.append(probe)
        trainer = probe["pid"]
        assert probe["environ"]["TASK_VALUE"] == value and probe["environ"]["BUGAGARIC_TASK_ID"] == run.task_id
        assert probe["environ"]["BUGAGARIC_METRICS_FILE"] == str(run.directory / "metrics.jsonl")
        assert "BUGAGARIC_CLUSTER_TOKEN" not in probe["environ"]
        assert Path(probe["cwd"]) == Path(os.readlink(f"/proc/{trainer}/cwd")) == agent_env.workspace
        # What `python -m tests.helpers.warm_probe --config FILE` would see.
        assert probe["main"] == "__main__" and probe["argv"][0].endswith("tests/helpers/warm_probe.py")
        assert probe["argv"][1:] == ["--config", str(run.directory / "config.json")]
        assert probe["sys_path"][:2] == [str(agent_env.workspace), str(REPO_ROOT)]
        assert probe["signals"] == {"SIGTERM": repr(signal.SIG_DFL), "SIGINT": repr(signal.default_int_handler),
                                    "SIGCHLD": repr(signal.SIG_DFL)}
        # Its own session, led by its supervisor (the forked worker), as on the cold path.
        assert os.getsid(trainer) == run.process.pid == os.getpgid(trainer) != os.getsid(0)
        # Nothing of the fork server's leaks in: stdin, stdout.log and stderr.log only.
        fds = {int(fd): os.readlink(f"/proc/{trainer}/fd/{fd}") for fd in os.listdir(f"/proc/{trainer}/fd")}
        assert fds == {0: os.devnull, 1: str(run.directory / "stdout.log"), 2: str(run.directory / "stderr.log")}
        # Output lands where the cold path writes it.
        await wait_for(lambda: "probed" in (run.directory / "stdout.log").read_text(), what="its output")
    assert probes[0]["random"] != probes[1]["random"]  # each fork reseeds
    desc = await stub.DescribeAgent(agent_pb2.DescribeAgentRequest())
    assert desc.warm_pool_memory_bytes > 0


async def test_exit_status_is_recorded_and_python_m_semantics_hold(agent_env):
    stub, agent = agent_env.stub, agent_env.agent
    await launch(stub, "warm-exit", lines=3, exit_code=7)
    run = agent.tasks["warm-exit"]
    assert is_warm(run)
    await asyncio.wait_for(run.wait(), 20)
    assert (run.status, run.exit_code) == ("failed", 7)
    assert read_exit_file(run.directory) == 7
    assert (run.directory / "stdout.log").read_text().splitlines() == ["out 1", "out 2", "out 3"]

    await launch(stub, "warm-signal", self_signal=int(signal.SIGKILL))
    run = agent.tasks["warm-signal"]
    await asyncio.wait_for(run.wait(), 20)
    assert (run.status, run.exit_code, read_exit_file(run.directory)) == ("failed", -9, -9)

    # The supervisor itself killed: the fork server records what the cold path's Popen would (killed by SIGKILL).
    await launch(stub, "warm-supervisor-killed", hold=30, pid_file=True)
    run = agent.tasks["warm-supervisor-killed"]
    await wait_for(lambda: read_pid(run.directory / "trainer-0.pid"), what="the trainer's pid")
    os.kill(run.process.pid, signal.SIGKILL)
    await asyncio.wait_for(run.wait(), 20)
    assert read_exit_file(run.directory) == -9 and run.exit_code == -9


async def test_stop_kills_the_whole_tree_of_a_warm_attempt(agent_env):
    stub, agent = agent_env.stub, agent_env.agent
    await launch(stub, "warm-stop", grandchild=True, pid_file=True, hold=60)
    run = agent.tasks["warm-stop"]
    assert is_warm(run)
    grandchild = await wait_for(lambda: read_pid(run.directory / "grandchild.pid"), what="the grandchild")
    trainer = read_pid(run.directory / "trainer-0.pid")
    await stub.StopTask(agent_pb2.AgentStopTaskRequest(task_id="warm-stop", grace_seconds=2))
    await asyncio.wait_for(run.wait(), 20)
    assert run.status == "stopped"
    await wait_for(lambda: not alive(grandchild) and not alive(trainer), what="the tree to be gone")


async def test_a_restarted_agent_readopts_a_warm_attempt(tmp_path):
    registry.register(line_trainer.task_type())
    try:
        first = await started(tmp_path)
        await launch(first.stub, "warm-adopt", lines=3, hold=3)
        run = first.agent.tasks["warm-adopt"]
        assert is_warm(run)
        supervisor = run.process.pid
        await stopped(first, kill_tasks=False)  # the pool goes with the agent; the attempt keeps running
        assert alive(supervisor)

        second = await started(tmp_path, size=0)
        try:
            adopted = second.agent.tasks["warm-adopt"]
            assert adopted.adopted and adopted.process.pid == supervisor
            await asyncio.wait_for(adopted.wait(), 30)
            assert (adopted.status, adopted.exit_code) == ("succeeded", 0)
            assert read_exit_file(adopted.directory) == 0
        finally:
            await stopped(second)
    finally:
        registry.unregister(line_trainer.TYPE_NAME)


async def test_pool_size_zero_starts_cold_as_before(tmp_path):
    registry.register(line_trainer.task_type())
    env = await started(tmp_path, size=0)
    try:
        assert env.agent.warm_pool is None
        await launch(env.stub, "cold", lines=2)
        run = env.agent.tasks["cold"]
        assert run.process.popen is not None and run.process.reaper is None
        await asyncio.wait_for(run.wait(), 20)
        assert run.status == "succeeded"
        desc = await env.stub.DescribeAgent(agent_pb2.DescribeAgentRequest())
        assert desc.warm_pool_memory_bytes == 0
    finally:
        await stopped(env)
        registry.unregister(line_trainer.TYPE_NAME)


async def test_a_dead_pool_means_cold_starts_then_a_new_pool(agent_env):
    agent = agent_env.agent
    pool = agent.warm_pool
    pool.restart_after_seconds = 0.0
    old_server = pool.server_pid
    os.kill(old_server, signal.SIGKILL)
    await wait_for(lambda: not alive(old_server), what="the fork server to die")
    await launch(agent_env.stub, "after-death", lines=1)
    run = agent.tasks["after-death"]
    assert run.process.popen is not None  # cold
    await asyncio.wait_for(run.wait(), 20)
    assert run.status == "succeeded"
    assert pool.server_pid not in (None, old_server)  # restarted on the spot
    assert await asyncio.to_thread(pool.wait_ready, 60)
    await launch(agent_env.stub, "warm-again", lines=1)
    assert is_warm(agent.tasks["warm-again"])


async def test_an_attempt_whose_import_time_environment_differs_starts_cold(agent_env):
    await launch(agent_env.stub, "other-hf-home", env={"HF_HOME": str(agent_env.workspace / "hf")}, lines=1)
    run = agent_env.agent.tasks["other-hf-home"]
    assert run.process.popen is not None
    await asyncio.wait_for(run.wait(), 20)
    assert run.status == "succeeded"


async def test_tiny_sft_runs_warm_and_the_fork_server_never_initialises_cuda(tmp_path, tiny_llama_dir):
    preload = "torch,transformers,datasets,peft,trl,trainers.common.cli,trainers.sft.train"
    env = await started(tmp_path, preload=preload)
    try:
        status = await asyncio.to_thread(env.agent.warm_pool.status)
        assert status["cuda_initialized"] is False and "torch" in status["preloaded"] and not status["failed"]
        assert status["python_threads"] == 1 and status["memory_bytes"] > 0 and not status["grpc_imported"]
        write_sft_rows(tmp_path / "data/train.jsonl", 16)
        config = {"model_name_or_path": str(tiny_llama_dir), "train_data_path": "data/train.jsonl",
                  "output_dir": "output/sft", "max_steps": 2, "per_device_train_batch_size": 4, "max_length": 64}
        response = await env.stub.LaunchTask(agent_pb2.LaunchTaskRequest(
            task_id="warm-sft", type="sft", config_json=json.dumps(config)))
        run = env.agent.tasks["warm-sft"]
        assert is_warm(run) and response.pid == run.process.pid
        await asyncio.wait_for(run.wait(), 100)
        stderr = (run.directory / "stderr.log").read_text()
        assert run.status == "succeeded", stderr[-3000:]
        events = [json.loads(line) for line in (run.directory / "metrics.jsonl").read_text().splitlines()]
        assert [e["event"] for e in events][0] == "start" and events[-1]["event"] == "end"
        assert (tmp_path / "output/sft").is_dir()
        # The fork (and the trainer's training in it) left the server as it was.
        status = await asyncio.to_thread(env.agent.warm_pool.status)
        assert status["cuda_initialized"] is False and status["python_threads"] == 1
    finally:
        await stopped(env)


def memory_holds(pid: int, needle: bytes) -> bool:
    """Whether needle is anywhere in the readable memory of pid (a descendant of this process: ptrace allows it)."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r") or line.rstrip().endswith("[vvar]"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
            except (OSError, OverflowError, ValueError):
                continue
    return False


async def test_a_warm_attempt_fetches_its_inputs_and_never_holds_the_cluster_token(tmp_path):
    from tests.helpers.live import LiveControlPlane

    control_plane = LiveControlPlane(tmp_path / "control-plane").start()
    registry.register(warm_probe.task_type())
    env = None
    try:
        writer = control_plane._running.blobs.writer()
        writer.write(b'{"q": "a"}\n' * 1000)
        sha = writer.commit()
        spec = common_pb2.BlobRef(ref="dataset:warm", sha256=sha, size=11000, suffix=".jsonl")
        token = control_plane.settings.cluster_token
        settings = settings_for(tmp_path / "agent-ws").model_copy(
            update={"control_plane_address": control_plane.address, "cluster_token": token})
        server, port, agent = await start_agent(settings)
        assert await asyncio.to_thread(agent.warm_pool.wait_ready, 90)
        channel = bearer_channel(f"127.0.0.1:{port}", token)
        env = SimpleNamespace(server=server, agent=agent, channel=channel)
        stub = agent_pb2_grpc.GpuAgentStub(channel)
        await stub.LaunchTask(agent_pb2.LaunchTaskRequest(
            task_id="warm-inputs", type=warm_probe.TYPE_NAME,
            config_json=json.dumps({"inputs": [spec.ref], "hold": 30}), env={"PYTHONPATH": str(REPO_ROOT)},
            inputs=[spec]))
        run = agent.tasks["warm-inputs"]
        assert is_warm(run)
        probe = await wait_for(lambda: read_json(run.directory / "probe.json"), what="the probe's report")
        files = json.loads(probe["environ"]["BUGAGARIC_INPUT_FILES"])
        assert Path(files["dataset:warm"]).read_bytes() == b'{"q": "a"}\n' * 1000
        assert "inputs ready: dataset:warm" in (run.directory / "stdout.log").read_text()
        assert not (run.directory / "cluster-token").exists()
        # The fetch ran in a process of its own: the token never reached the trainer's memory, the cache lock did.
        assert not memory_holds(probe["pid"], token.encode())
        held = [os.readlink(f"/proc/{probe['pid']}/fd/{fd}") for fd in os.listdir(f"/proc/{probe['pid']}/fd")]
        assert any(sha in target for target in held)
        assert memory_holds(probe["pid"], sha.encode())  # the scan does find what is there
    finally:
        if env is not None:
            await stopped(env)
        registry.unregister(warm_probe.TYPE_NAME)
        control_plane.stop()
