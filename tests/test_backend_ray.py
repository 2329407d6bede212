"""The Ray backend against a real Ray head started on loopback in this module: a tiny SFT attempt runs as a Ray job
and its lines and metric events reach the attempt's files, a long one is stopped, and an agent with
BUGAGARIC_AGENT_BACKEND=ray serves a task run on Ray through its usual gRPC stream."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray.job_submission", reason="ray[default] is not installed (the `ray` extra)")

from gpu_agent.backends.base import LaunchSpec  # noqa: E402
from gpu_agent.backends.ray_backend import RayBackend  # noqa: E402
from gpu_agent.process_runner import descendants, read_exit_file  # noqa: E402
from tests.helpers.tiny_models import write_sft_rows  # noqa: E402
from trainers.common.metrics import METRIC_LINE_PREFIX  # noqa: E402
from trainers.errors import EXIT_STOPPED_EARLY  # noqa: E402

pytestmark = pytest.mark.timeout(600)

VENV_BIN = Path(sys.executable).parent
TASK_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ours(marker: str) -> list[int]:
    """Processes whose command line names our head's own temp dir (Ray's daemons all take it as an argument)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture(scope="module")
def ray_address():
    # A short temp dir: Ray's unix sockets live under it, and their paths may not exceed 107 bytes.
    temp = tempfile.mkdtemp(prefix="bgray", dir="/tmp")
    dashboard_port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    log_file = open(Path(temp) / "head.log", "wb")
    head = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={_free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", f"--temp-dir={temp}",
         f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}",
         "--num-cpus=2", "--num-gpus=0", "--disable-usage-stats", "--include-dashboard=true"],
        env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        from ray.job_submission import JobSubmissionClient

        deadline = time.monotonic() + 180
        while True:
            if head.poll() is not None:
                pytest.fail(f"ray start exited with {head.returncode}:\n{(Path(temp) / 'head.log').read_text()[-3000:]}")
            try:
                JobSubmissionClient(address).list_jobs()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    pytest.fail(f"the Ray head did not come up:\n{(Path(temp) / 'head.log').read_text()[-3000:]}")
                time.sleep(1.0)
        yield address
    finally:
        # Only what this head started: its descendants and whatever names its temp dir, never `ray stop` (which
        # would stop every Ray on the machine).
        tree = set(descendants(head.pid)) | set(_ours(temp))
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops its own processes on SIGTERM
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            pass
        _kill(sorted(tree | set(_ours(temp))), signal.SIGKILL)
        if head.poll() is None:
            head.kill()
            head.wait(10)
        log_file.close()
        shutil.rmtree(temp, ignore_errors=True)


def _sft_spec(workspace: Path, task_id: str, tiny_llama_dir: Path, max_steps: int, **env: str) -> LaunchSpec:
    write_sft_rows(workspace / "data/train.jsonl", 16)
    config = {"model_name_or_path": str(tiny_llama_dir), "train_data_path": "data/train.jsonl",
              "output_dir": "output/sft", "use_lora": True, "learning_rate": 5e-3, "per_device_train_batch_size": 4,
              "max_steps": max_steps, "max_length": 128, "save_steps": 100000}
    return LaunchSpec(task_id=task_id, entry_module="trainers.sft", config_json=json.dumps(config),
                      directory=workspace / "var/agent/tasks" / task_id / "attempt-1", workspace=workspace,
                      extra_env={**TASK_ENV, "BUGAGARIC_MODEL_ROOTS": os.environ["BUGAGARIC_MODEL_ROOTS"], **env},
                      device_kind="cpu")


def _events(directory: Path) -> list[dict]:
    path = directory / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_tiny_sft_attempt_runs_as_a_ray_job(ray_address, tiny_llama_dir, tmp_path):
    backend = RayBackend(ray_address, python=sys.executable, default_grace=10)
    spec = _sft_spec(tmp_path, "Ray_Task.1", tiny_llama_dir, max_steps=3,
                     BUGAGARIC_CLUSTER_TOKEN="must-not-leave-the-agent")
    run = backend.launch(spec)
    assert run.describe().startswith("Ray job bugagaric-Ray_Task.1-attempt-1-")
    assert run.wait(300), "the Ray job did not end"
    stdout = (spec.directory / "stdout.log").read_text()
    assert run.poll() == 0 and read_exit_file(spec.directory) == 0, stdout[-3000:]

    # Its lines reach stdout.log; its metric events reach metrics.jsonl, and only there.
    assert "step 3/3 loss=" in stdout and METRIC_LINE_PREFIX.strip() not in stdout
    events = _events(spec.directory)
    assert [e["event"] for e in events][0] == "start" and events[-1]["event"] == "end"
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3]
    assert all(e["task_id"] == "Ray_Task.1" for e in events)
    assert (tmp_path / "output/sft/adapter_config.json").is_file()  # it wrote where the agent looks

    # The task's env went to the cluster; the agent's secrets did not.
    info = backend.client.get_job_info(run.job_id)
    env_vars = info.runtime_env["env_vars"]
    assert env_vars["BUGAGARIC_METRICS_FILE"] == "-" and env_vars["HF_HUB_OFFLINE"] == "1"
    assert "BUGAGARIC_CLUSTER_TOKEN" not in env_vars and "CUDA_VISIBLE_DEVICES" not in env_vars


def test_stop_ends_a_long_ray_attempt_within_the_grace(ray_address, tiny_llama_dir, tmp_path):
    from ray.job_submission import JobStatus

    grace = 20
    backend = RayBackend(ray_address, python=sys.executable, default_grace=grace)
    spec = _sft_spec(tmp_path, "ray-long", tiny_llama_dir, max_steps=100000)
    run = backend.launch(spec)
    deadline = time.monotonic() + 300
    while not any(e["event"] == "step" for e in _events(spec.directory)):
        assert run.running(), (spec.directory / "stdout.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no training step within 300 s"
        time.sleep(0.5)

    run.request_stop()
    # Ray SIGKILLs after RAY_JOB_STOP_WAIT_TIME_S (the grace); the margin covers its status polling.
    assert run.wait(grace + 30), "still running after the grace period"
    assert read_exit_file(spec.directory) == EXIT_STOPPED_EARLY
    assert backend.client.get_job_status(run.job_id) == JobStatus.STOPPED
    # The trainer got the SIGTERM itself (not a shell in front of it) and began its graceful stop.
    assert "stop requested" in (spec.directory / "stdout.log").read_text()


async def test_an_agent_with_the_ray_backend_streams_a_task_run_on_ray(ray_address, tiny_llama_dir, tmp_path):
    from gpu_agent.server import start_agent, stop_agent
    from gpu_agent.settings import AgentSettings
    from protos import agent_pb2, agent_pb2_grpc, common_pb2
    from protos.auth import bearer_channel

    token = "ray-test-token"
    settings = AgentSettings(agent_host="127.0.0.1", agent_port=0, agent_metrics_port=0, workspace=str(tmp_path),
                             agent_slots=1, agent_devices="cpu", control_plane_address="", cluster_token=token,
                             warm_pool_size=0, stop_grace_seconds=10, agent_backend="ray", ray_address=ray_address,
                             remote_python=sys.executable)
    server, port, agent = await start_agent(settings)
    channel = bearer_channel(f"127.0.0.1:{port}", token)
    try:
        stub = agent_pb2_grpc.GpuAgentStub(channel)
        write_sft_rows(tmp_path / "data/train.jsonl", 16)
        config = {"model_name_or_path": str(tiny_llama_dir), "train_data_path": "data/train.jsonl",
                  "output_dir": "output/sft", "use_lora": True, "per_device_train_batch_size": 4, "max_steps": 2,
                  "max_length": 128}
        await stub.LaunchTask(agent_pb2.LaunchTaskRequest(
            task_id="via-agent", type="sft", config_json=json.dumps(config),
            env={**TASK_ENV, "BUGAGARIC_MODEL_ROOTS": os.environ["BUGAGARIC_MODEL_ROOTS"]}))
        call = stub.StreamTaskEvents(agent_pb2.StreamTaskEventsRequest(task_id="via-agent", follow=True), timeout=400)
        evs = [event async for event in call]
        logs = [e.log.text for e in evs if e.WhichOneof("event") == "log"]
        metrics = [json.loads(e.metric.values_json) for e in evs if e.WhichOneof("event") == "metric"]
        statuses = [e.status for e in evs if e.WhichOneof("event") == "status"]
        assert [s.status for s in statuses] == [common_pb2.TASK_STATUS_RUNNING, common_pb2.TASK_STATUS_SUCCEEDED], \
            [(s.status, s.reason, s.error) for s in statuses]
        assert statuses[-1].reason == "exited" and statuses[0].pid == 0  # no local process
        assert any("step 2/2" in line for line in logs), logs[-20:]
        assert [m["event"] for m in metrics][0] == "start" and metrics[-1]["event"] == "end"
    finally:
        await channel.close()
        await stop_agent(server, agent, grace=0)
