"""A task's artifacts on its agent: listed with kinds, read one file at a time, the final model as a tar built on the
fly; paths that leave the task's output directory are refused. The agent runs in-process on a loopback port and is
driven over real gRPC; the task is a real trainer subprocess (tests/helpers/line_trainer.py)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import tarfile
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

from gpu_agent import artifacts
from gpu_agent.server import start_agent, stop_agent
from gpu_agent.settings import AgentSettings
from protos import agent_pb2, agent_pb2_grpc
from protos.auth import bearer_channel
from tests.helpers import line_trainer
from trainers import registry
from trainers.paths import TASK_MARKER

REPO_ROOT = Path(__file__).resolve().parent.parent
CLUSTER_TOKEN = "artifacts-test-token"

pytestmark = pytest.mark.timeout(60)


def write_output(directory: Path, outside: Path) -> None:
    """What an SFT run leaves: an adapter, a tokenizer, a checkpoint, a summary, a log, predictions; plus a symlink
    leaving the directory and one staying inside."""
    files = {
        "adapter_model.safetensors": b"A" * 3000,
        "adapter_config.json": b'{"r": 8}',
        "tokenizer.json": b"{}",
        "training_summary.json": b'{"loss": 1}',
        "train.log": b"step 1\n",
        "eval_predictions.jsonl": b'{"p": 1}\n',
        "checkpoint-5/adapter_model.safetensors": b"C" * 100,
        "checkpoint-5/trainer_state.json": b"{}",
        "sub/extra.bin": b"x" * 10,
        TASK_MARKER: json.dumps({"task_id": "t", "owner": "u"}).encode(),
    }
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.txt").write_text("not yours")
    (directory / "leak.txt").symlink_to(outside / "secret.txt")
    (directory / "leakdir").symlink_to(outside, target_is_directory=True)
    (directory / "alias.json").symlink_to(directory / "adapter_config.json")


def test_kinds_and_listing(tmp_path):
    out = tmp_path / "out"
    write_output(out, tmp_path / "elsewhere")
    listed = {a.path: (a.size, a.kind) for a in artifacts.list_artifacts(out)}
    assert listed == {
        "adapter_model.safetensors": (3000, "adapter"),
        "adapter_config.json": (8, "adapter"),
        "alias.json": (8, "model"),  # a symlink that stays inside is the file it points at
        "tokenizer.json": (2, "model"),
        "training_summary.json": (11, "summary"),
        "train.log": (7, "log"),
        "eval_predictions.jsonl": (9, "predictions"),
        "checkpoint-5/adapter_model.safetensors": (100, "checkpoint"),
        "checkpoint-5/trainer_state.json": (2, "checkpoint"),
        "sub/extra.bin": (10, "model"),
    }  # neither the marker nor the links leaving the directory
    assert artifacts.list_artifacts(tmp_path / "missing") == []


@pytest.mark.parametrize("relative, kind, published", [
    ("adapter_model.safetensors", "adapter", True),
    ("rounds/round_1/final/adapter_model.safetensors", "checkpoint", False),  # KBAlign: one round's model
    ("rounds/round_2/checkpoint-3/optimizer.pt", "checkpoint", False),
    ("stages/split/state.json", "checkpoint", False),  # KBAlign: a stage snapshot to resume from
    ("annotations/pairs.jsonl", "predictions", True),  # KBAlign: the pairs the model wrote and trained on
    ("checkpoint-7/model.safetensors", "checkpoint", False),
    ("rounds.json", "model", True),
    ("runs/Dec04_06-00-00_host/events.out.tfevents.1.host.1.0", "tracking", True),  # report_to tensorboard
    ("mlruns/0/abc/metrics/loss", "tracking", True),  # report_to mlflow without a tracking server
])
def test_kinds_of_intermediate_states(relative, kind, published):
    from trainers.artifact_kinds import artifact_kind, in_final_model

    assert (artifact_kind(relative), in_final_model(relative)) == (kind, published)


@pytest.mark.parametrize("given, error", [
    ("../elsewhere/secret.txt", artifacts.BadPath),
    ("sub/../../elsewhere/secret.txt", artifacts.BadPath),
    ("/etc/passwd", artifacts.BadPath),
    ("leak.txt", artifacts.BadPath),
    ("leakdir/secret.txt", artifacts.BadPath),
    ("sub", artifacts.BadPath),
    ("", artifacts.BadPath),
    ("nope.bin", artifacts.ArtifactNotFound),
    (TASK_MARKER, artifacts.ArtifactNotFound),
])
def test_paths_leaving_the_directory_are_refused(tmp_path, given, error):
    out = tmp_path / "out"
    write_output(out, tmp_path / "elsewhere")
    with pytest.raises(error, match="^path: "):
        artifacts.artifact_path(out, given)


def test_model_archive_has_the_model_and_no_checkpoints(tmp_path):
    out = tmp_path / "out"
    write_output(out, tmp_path / "elsewhere")
    pieces = list(artifacts.rechunk(artifacts.model_archive(out, chunk_bytes=1000), chunk_bytes=1024))
    assert max(len(p) for p in pieces) == 1024  # streamed in pieces, never the whole at once
    with tarfile.open(fileobj=io.BytesIO(b"".join(pieces)), mode="r:") as tar:
        names = sorted(tar.getnames())
        content = tar.extractfile("adapter_model.safetensors").read()
    assert names == sorted(["adapter_model.safetensors", "adapter_config.json", "alias.json", "tokenizer.json",
                            "training_summary.json", "eval_predictions.jsonl", "sub/extra.bin"])
    assert content == b"A" * 3000


@pytest.fixture
async def agent_env(tmp_path):
    registry.register(line_trainer.task_type())
    settings = AgentSettings(agent_host="127.0.0.1", agent_port=0, workspace=str(tmp_path / "ws"), agent_slots=2,
                             agent_devices="cpu", control_plane_address="", cluster_token=CLUSTER_TOKEN)
    running = {}

    async def start():
        server, port, agent = await start_agent(settings)
        channel = bearer_channel(f"127.0.0.1:{port}", CLUSTER_TOKEN)
        running.update(server=server, agent=agent, channel=channel)
        return agent_pb2_grpc.GpuAgentStub(channel), agent

    async def stop():
        for run in running["agent"].tasks.values():
            if not run.ended:
                run.process.signal_group(signal.SIGKILL)
                await asyncio.wait_for(run.wait(), 10)
        await running["channel"].close()
        await stop_agent(running["server"], running["agent"], grace=0)

    async def restart():
        await stop()
        return (await start())[0]

    stub, agent = await start()
    yield SimpleNamespace(stub=stub, agent=agent, restart=restart, tmp=tmp_path)
    await stop()
    registry.unregister(line_trainer.TYPE_NAME)


async def _read(stub, task_id, path, offset=0) -> tuple[bytes, list[int]]:
    chunks = [c async for c in stub.ReadArtifact(agent_pb2.ReadArtifactRequest(task_id=task_id, path=path,
                                                                               offset=offset), timeout=10)]
    return b"".join(c.data for c in chunks), [c.total_size for c in chunks]


async def test_artifacts_over_grpc(agent_env):
    stub = agent_env.stub
    response = await stub.LaunchTask(agent_pb2.LaunchTaskRequest(
        task_id="t-art", type=line_trainer.TYPE_NAME, config_json=json.dumps({"lines": 1}),
        env={"PYTHONPATH": str(REPO_ROOT)}))
    # No output_dir in the config: the task's default directory, under the agent's own workspace.
    assert response.output_dir == str(agent_env.tmp / "ws" / "output" / "line-test" / "t-art")
    await agent_env.agent.tasks["t-art"].wait()
    out = Path(response.output_dir)
    write_output(out, agent_env.tmp / "elsewhere")
    big = os.urandom(2 * 1024**2 + 123)
    (out / "model.safetensors").write_bytes(big)

    listed = await stub.ListArtifacts(agent_pb2.AgentArtifactsRequest(task_id="t-art"))
    assert listed.output_dir == str(out)
    kinds = {a.path: a.kind for a in listed.artifacts}
    assert kinds["model.safetensors"] == "model" and kinds["checkpoint-5/trainer_state.json"] == "checkpoint"
    assert TASK_MARKER not in kinds and "leak.txt" not in kinds

    data, totals = await _read(stub, "t-art", "model.safetensors")
    assert data == big and len(totals) == 3 and set(totals) == {len(big)}  # 1 MiB chunks
    data, _ = await _read(stub, "t-art", "model.safetensors", offset=len(big) - 100)
    assert data == big[-100:]
    data, totals = await _read(stub, "t-art", "checkpoint-5/trainer_state.json")
    assert data == b"{}" and totals == [2]

    for bad in ("../../../../etc/passwd", "/etc/passwd", "leak.txt", "leakdir/secret.txt"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _read(stub, "t-art", bad)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "path" in refused.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await _read(stub, "t-art", "nope.bin")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    for call in (stub.ListArtifacts(agent_pb2.AgentArtifactsRequest(task_id="t-unknown")),
                 _read(stub, "t-unknown", "model.safetensors")):
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await call
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    archive = b""
    async for chunk in stub.ReadModelArchive(agent_pb2.AgentArtifactsRequest(task_id="t-art"), timeout=20):
        assert chunk.offset == len(archive) and len(chunk.data) <= 1024**2
        archive += chunk.data
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        names = set(tar.getnames())
        assert tar.extractfile("model.safetensors").read() == big
    assert {"model.safetensors", "adapter_model.safetensors", "tokenizer.json"} <= names
    assert not any(n.startswith("checkpoint-") or n.endswith(".log") or n == TASK_MARKER or "leak" in n
                   for n in names)

    # A restarted agent still knows where the ended task wrote (state.json), and serves it.
    stub = await agent_env.restart()
    listed_again = await stub.ListArtifacts(agent_pb2.AgentArtifactsRequest(task_id="t-art"))
    assert listed_again == listed
    data, _ = await _read(stub, "t-art", "adapter_config.json")
    assert data == b'{"r": 8}'
