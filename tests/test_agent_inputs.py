"""Inputs an agent fetches from the control plane before a trainer starts (gpu_agent.input_fetch, gpu_agent.blob_cache).

The real control plane runs in-process (tests/helpers/live.py) and serves AgentRegistry.FetchBlob from its blob store;
between it and the agent sits a small gRPC proxy of this test, which forwards FetchBlob and can flip a byte of a
transfer, drop a stream half-way or slow it down. The fetch step runs as a real subprocess, in front of a real
trainer process; the agent runs in-process on loopback.

The probe trainer and its agent are tests/helpers/probe_trainer.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

from gpu_agent import input_fetch
from gpu_agent.blob_cache import BlobCache, InputSpec
from gpu_agent.log_spool import read_spool
from gpu_agent.settings import AgentSettings
from protos import agent_pb2, common_pb2, control_plane_pb2_grpc
from protos.auth import bearer_channel, token_from_metadata
from tests.helpers.live import LiveControlPlane
from tests.helpers.probe_trainer import PROBE_TYPE, probe_agent
from tests.helpers.tiny_models import sft_rows

REPO_ROOT = Path(__file__).resolve().parent.parent
MiB = 1024**2
# What the trainer the fetch step execs prints: the sha256 of every input file it was handed.
PRINT_INPUTS = ("import hashlib, json, os; files = json.loads(os.environ['BUGAGARIC_INPUT_FILES']); "
                "[print('sha', ref, hashlib.sha256(open(p, 'rb').read()).hexdigest()) for ref, p in files.items() "
                "if os.path.isfile(p)]; print('token-in-env', 'BUGAGARIC_CLUSTER_TOKEN' in os.environ)")

pytestmark = pytest.mark.timeout(120)


class FetchProxy(control_plane_pb2_grpc.AgentRegistryServicer):
    """Forwards FetchBlob to the real control plane; on request flips a byte of the next transfer, drops the next
    one after some chunks, or slows every chunk down. Records every call (sha256, offset) and the bytes it passed."""

    def __init__(self, upstream: str, token: str):
        self._upstream = bearer_channel(upstream, token)
        self._token = token
        self.calls: list[tuple[str, int]] = []
        self.bytes_passed = 0
        self.flip_next = False
        self.drop_next_after: int | None = None  # chunks
        self.chunk_delay = 0.0

    async def FetchBlob(self, request, context):
        if token_from_metadata(context.invocation_metadata()) != self._token:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "proxy: not the cluster token")
        self.calls.append((request.sha256, request.offset))
        drop_after, self.drop_next_after = self.drop_next_after, None
        stub = control_plane_pb2_grpc.AgentRegistryStub(self._upstream)
        sent = 0
        upstream = stub.FetchBlob(request)
        while True:
            try:
                chunk = await upstream.read()
            except grpc.aio.AioRpcError as exc:  # the control plane's answer, passed on as it is
                await context.abort(exc.code(), exc.details())
            if chunk is grpc.aio.EOF:
                return
            if drop_after is not None and sent >= drop_after:
                upstream.cancel()
                await context.abort(grpc.StatusCode.UNAVAILABLE, "proxy: the connection dropped")
            if self.flip_next and chunk.data:
                self.flip_next = False
                data = bytearray(chunk.data)
                data[len(data) // 2] ^= 0x01
                chunk = common_pb2.FileChunk(data=bytes(data), offset=chunk.offset, total_size=chunk.total_size)
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            yield chunk
            sent += 1
            self.bytes_passed += len(chunk.data)

    async def close(self) -> None:
        await self._upstream.close()


@pytest.fixture
async def cluster(tmp_path):
    """The real control plane (its blob store) and the proxy in front of it."""
    control_plane = LiveControlPlane(tmp_path / "control-plane").start()
    token = control_plane.settings.cluster_token
    proxy = FetchProxy(control_plane.address, token)
    server = grpc.aio.server()
    control_plane_pb2_grpc.add_AgentRegistryServicer_to_server(proxy, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    def put_blob(data: bytes) -> str:
        writer = control_plane._running.blobs.writer()
        writer.write(data)
        return writer.commit()

    yield SimpleNamespace(proxy=proxy, address=f"127.0.0.1:{port}", token=token, put_blob=put_blob,
                          control_plane=control_plane, tmp=tmp_path)
    await server.stop(0)
    await proxy.close()
    control_plane.stop()


async def run_fetch_step(cluster, name: str, specs: list[InputSpec], *, cache_dir: Path | None = None,
                         max_bytes: int = 1024**3, trainer: list[str] | None = None) -> tuple[int, str, str]:
    """`python -m gpu_agent.input_fetch` as the supervisor would run it; (exit code, stdout, stderr)."""
    directory = cluster.tmp / "attempts" / name
    plan = input_fetch.write_plan(directory, control_plane_address=cluster.address, cluster_token=cluster.token,
                                  cache_dir=cache_dir or cluster.tmp / "cache", cache_max_bytes=max_bytes,
                                  inputs=specs)
    assert (directory / input_fetch.TOKEN_FILE).stat().st_mode & 0o777 == 0o600
    process = await asyncio.create_subprocess_exec(
        *input_fetch.command(plan), *(trainer or [sys.executable, "-c", PRINT_INPUTS]),
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "BUGAGARIC_CLUSTER_TOKEN": cluster.token},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert not (directory / input_fetch.TOKEN_FILE).exists()  # read and deleted before the trainer starts
    return process.returncode, out.decode(), err.decode()


def dataset(cluster, size: int, seed: int = 0) -> tuple[InputSpec, bytes]:
    data = (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size]
    sha = cluster.put_blob(data)
    return InputSpec(ref=f"dataset:ds{seed}", sha256=sha, size=size, suffix=".jsonl"), data


async def test_a_corrupted_transfer_is_refused_and_fetched_again(cluster):
    spec, data = dataset(cluster, 3 * MiB + 17)
    cluster.proxy.flip_next = True
    code, out, err = await run_fetch_step(cluster, "corrupt", [spec])
    assert code == 0, err
    assert "the copy is corrupt" in out and "refused and deleted; fetching it again from 0" in out
    assert f"sha {spec.ref} {spec.sha256}" in out  # what the trainer read is the real thing
    assert cluster.proxy.calls == [(spec.sha256, 0), (spec.sha256, 0)]
    cached = cluster.tmp / "cache" / "files" / (spec.sha256 + ".jsonl")
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == spec.sha256
    assert "token-in-env False" in out

    # The same blob again: a cache hit, nothing transferred.
    passed = cluster.proxy.bytes_passed
    code, out, err = await run_fetch_step(cluster, "hit", [spec])
    assert code == 0, err
    assert f"{spec.ref}: in the cache (sha256 {spec.sha256})" in out and f"sha {spec.ref} {spec.sha256}" in out
    assert len(cluster.proxy.calls) == 2 and cluster.proxy.bytes_passed == passed


async def test_a_broken_transfer_resumes_from_its_offset(cluster):
    spec, data = dataset(cluster, 4 * MiB + 5, seed=1)
    cluster.proxy.drop_next_after = 2  # chunks of 1 MiB
    code, out, err = await run_fetch_step(cluster, "broken", [spec])
    assert code == 0, err
    assert cluster.proxy.calls == [(spec.sha256, 0), (spec.sha256, 2 * MiB)]
    assert f"resuming from offset {2 * MiB}" in out and "sha256 verified" in out
    assert cluster.proxy.bytes_passed == len(data)  # nothing transferred twice
    assert f"sha {spec.ref} {spec.sha256}" in out


async def test_a_blob_the_control_plane_lacks_fails_with_an_error_line(cluster):
    spec = InputSpec(ref="dataset:gone", sha256="ab" * 32, size=10, suffix=".jsonl")
    code, out, err = await run_fetch_step(cluster, "missing", [spec])
    assert code == input_fetch.EXIT_INPUT_UNAVAILABLE
    assert err.strip().splitlines()[-1].startswith("error: dataset:gone: the control plane refused it: NOT_FOUND")
    assert "sha " not in out  # the trainer never ran


async def test_two_tasks_fetching_one_blob_transfer_it_once(cluster):
    spec, _ = dataset(cluster, 6 * MiB, seed=2)
    cluster.proxy.chunk_delay = 0.4
    first = asyncio.ensure_future(run_fetch_step(cluster, "first", [spec]))
    while not cluster.proxy.calls:
        await asyncio.sleep(0.05)
    second = await run_fetch_step(cluster, "second", [spec])
    for code, out, err in (await first, second):
        assert code == 0, err
        assert f"sha {spec.ref} {spec.sha256}" in out
    assert "another task is fetching it" in second[1] and "fetched by another task meanwhile" in second[1]
    assert len(cluster.proxy.calls) == 1


def _tar(members: dict[str, bytes], evil: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if evil:
            link = tarfile.TarInfo("passwd")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(link)
    return buffer.getvalue()


async def test_an_archive_is_unpacked_and_an_unsafe_one_refused(cluster):
    model = _tar({"config.json": b'{"model_type": "llama"}', "sub/weights.bin": b"w" * 1000})
    spec = InputSpec(ref="task:t1", sha256=cluster.put_blob(model), size=len(model), archive=True)
    code, out, err = await run_fetch_step(cluster, "archive", [spec], trainer=[
        sys.executable, "-c", "import json, os; p = json.loads(os.environ['BUGAGARIC_INPUT_FILES'])['task:t1']; "
                              "print('files', sorted(os.path.relpath(os.path.join(r, f), p) "
                              "for r, _, fs in os.walk(p) for f in fs))"])
    assert code == 0, err
    assert "files ['config.json', 'sub/weights.bin']" in out
    assert not list((cluster.tmp / "cache" / "partial").iterdir())  # the tar is gone once unpacked

    evil = _tar({"../escaped.txt": b"x"})
    evil_spec = InputSpec(ref="task:t2", sha256=cluster.put_blob(evil), size=len(evil), archive=True)
    code, out, err = await run_fetch_step(cluster, "evil", [evil_spec])
    assert code == input_fetch.EXIT_INPUT_UNAVAILABLE
    assert "error: task:t2: the archive cannot be unpacked" in err
    assert not (cluster.tmp / "cache" / "models" / "escaped.txt").exists()
    assert not (cluster.tmp / "cache" / "escaped.txt").exists()
    assert not (cluster.tmp / "cache" / "models" / evil_spec.sha256).exists()


def test_the_cache_evicts_the_least_recently_used_and_never_a_held_blob(cluster):
    """Blocking calls straight to the control plane (it runs on a thread of its own)."""
    said: list[str] = []
    cache = BlobCache(cluster.tmp / "small-cache", max_bytes=int(2.5 * MiB), say=said.append)
    transfer = input_fetch.GrpcTransfer(cluster.control_plane.address, cluster.token)
    try:
        a, b, c, d = (dataset(cluster, MiB, seed=10 + i)[0] for i in range(4))
        held_a = cache.get(a, transfer)
        held_a.close()  # its task ended
        held_b = cache.get(b, transfer)  # still in use
        held_c = cache.get(c, transfer)  # room for c: a goes (least recently used, not held)
        assert not held_a.path.exists() and held_b.path.exists() and held_c.path.exists()
        assert any("evicted files/" + a.sha256 in line for line in said)
        held_d = cache.get(d, transfer)  # b and c are held: over the limit for now, nothing evicted
        assert held_b.path.exists() and held_c.path.exists() and held_d.path.exists()
        assert any("over its limit" in line for line in said)
        for held in (held_b, held_c, held_d):
            held.close()
        assert cache.get(b, transfer).transferred == 0  # a hit
        too_big = InputSpec(ref="dataset:huge", sha256="cd" * 32, size=3 * MiB)
        with pytest.raises(Exception, match="more than the whole cache may hold"):
            cache.get(too_big, transfer)
    finally:
        transfer.close()


# -- through the agent ------------------------------------------------------------------------------------------------

@pytest.fixture
async def agent(cluster):
    settings = AgentSettings(agent_host="127.0.0.1", agent_port=0, workspace=str(cluster.tmp / "agent-ws"),
                             agent_slots=2, agent_devices="cpu", control_plane_address=cluster.address,
                             cluster_token=cluster.token, heartbeat_seconds=60)
    async with probe_agent(settings, cluster.token) as running:
        yield running


def _blob_ref(spec: InputSpec) -> common_pb2.BlobRef:
    return common_pb2.BlobRef(ref=spec.ref, sha256=spec.sha256, size=spec.size, suffix=spec.suffix,
                              archive=spec.archive)


async def _launch_and_wait(agent, task_id: str, specs: list[InputSpec]) -> tuple[str, list[str]]:
    response = await agent.stub.LaunchTask(agent_pb2.LaunchTaskRequest(
        task_id=task_id, type=PROBE_TYPE, config_json=json.dumps({"inputs": [s.ref for s in specs]}),
        env={"PYTHONPATH": str(REPO_ROOT)}, inputs=[_blob_ref(s) for s in specs]), timeout=30)
    run = agent.agent.tasks[task_id]
    await asyncio.wait_for(run.wait(), 60)
    lines = [r["text"] for r in read_spool(Path(response.task_dir)) if r["kind"] == "log"]
    return run.status, lines


async def test_launch_fetches_before_the_trainer_and_hides_the_token(cluster, agent):
    spec, _ = dataset(cluster, 2 * MiB, seed=3)
    status, lines = await _launch_and_wait(agent, "t-in-1", [spec])
    assert status == "succeeded", lines
    assert any(line.startswith(f"{spec.ref}: fetching 2.0 MiB") for line in lines)  # in the task's own log
    assert f"input {spec.ref} file {spec.sha256} .jsonl" in lines
    assert "token-in-env False" in lines and "token-file False" in lines

    status, lines = await _launch_and_wait(agent, "t-in-2", [spec])
    assert status == "succeeded", lines
    assert f"{spec.ref}: in the cache (sha256 {spec.sha256})" in lines
    assert len(cluster.proxy.calls) == 1

    missing = InputSpec(ref="dataset:nope", sha256="ef" * 32, size=3, suffix=".jsonl")
    status, lines = await _launch_and_wait(agent, "t-in-3", [missing])
    run = agent.agent.tasks["t-in-3"]
    assert status == "failed" and run.spool.final_status["reason"] == "input_unavailable"
    assert "error: dataset:nope: the control plane refused it" in run.spool.final_status["error"]


async def test_a_stopped_fetch_leaves_a_partial_copy_the_next_task_resumes(cluster, agent):
    spec, _ = dataset(cluster, 6 * MiB, seed=4)
    cluster.proxy.chunk_delay = 0.3
    await agent.stub.LaunchTask(agent_pb2.LaunchTaskRequest(
        task_id="t-stop", type=PROBE_TYPE, config_json=json.dumps({"inputs": [spec.ref]}),
        env={"PYTHONPATH": str(REPO_ROOT)}, inputs=[_blob_ref(spec)]), timeout=30)
    deadline = asyncio.get_running_loop().time() + 30
    while cluster.proxy.bytes_passed < 2 * MiB:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    await agent.stub.StopTask(agent_pb2.AgentStopTaskRequest(task_id="t-stop", grace_seconds=5))
    run = agent.agent.tasks["t-stop"]
    await asyncio.wait_for(run.wait(), 30)
    assert run.status == "stopped"  # the fetch step is the attempt's process: a stop ends it

    cluster.proxy.chunk_delay = 0
    status, lines = await _launch_and_wait(agent, "t-after-stop", [spec])
    assert status == "succeeded", lines
    (_, resumed_at), = cluster.proxy.calls[1:]
    assert resumed_at >= 2 * MiB and any("resuming at" in line for line in lines)
    assert f"input {spec.ref} file {spec.sha256} .jsonl" in lines


async def test_launch_refuses_malformed_inputs(agent):
    for bad, says in ((common_pb2.BlobRef(ref="dataset:x", sha256="xyz"), "sha256"),
                      (common_pb2.BlobRef(ref="/etc/passwd", sha256="ab" * 32), "not a reference"),
                      (common_pb2.BlobRef(ref="dataset:x", sha256="ab" * 32, suffix="/../x"), "suffix")):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await agent.stub.LaunchTask(agent_pb2.LaunchTaskRequest(
                task_id="t-bad", type=PROBE_TYPE, config_json="{}", inputs=[bad]))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in refused.value.details()


async def test_validate_fetches_the_dataset_and_runs_a_shallow_dry_run(cluster, agent):
    rows = sft_rows(6)
    rows[3] = {"query": "no answer"}
    text = "".join(json.dumps(row) + "\n" for row in rows).encode()
    spec = InputSpec(ref="dataset:sft1", sha256=cluster.put_blob(text), size=len(text), suffix=".jsonl")
    config = {"model_name_or_path": "org/not-held-here", "train_data_path": spec.ref}
    report = await agent.stub.ValidateTask(common_pb2.ValidateTaskRequest(
        type="sft", config_json=json.dumps(config), owner="alice", shallow=True, inputs=[_blob_ref(spec)]),
        timeout=60)
    assert not report.ok and report.rows == 6, report
    assert [(p.line, p.field) for p in report.problems] == [(4, "chosen")]
    assert report.error_field == "train_data_path"

    good = "".join(json.dumps(row) + "\n" for row in sft_rows(5)).encode()
    good_spec = InputSpec(ref="dataset:sft2", sha256=cluster.put_blob(good), size=len(good), suffix=".jsonl")
    config["train_data_path"] = good_spec.ref
    request = common_pb2.ValidateTaskRequest(type="sft", owner="alice", shallow=True, inputs=[_blob_ref(good_spec)])
    request.config_json = json.dumps(config)
    report = await agent.stub.ValidateTask(request, timeout=60)
    # Good rows; the model is looked for on this agent too (it holds none by that name, and the hub is off).
    assert not report.ok and report.error_field == "model_name_or_path", report
    assert f"no model 'org/not-held-here' on agent {report.agent_id}" in report.error_message, report

    model = Path(agent.agent.workspace) / "models" / "tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")  # what the check looks for: a model directory's config
    config["model_name_or_path"] = "./models/tiny"
    request.config_json = json.dumps(config)
    report = await agent.stub.ValidateTask(request, timeout=60)
    assert report.ok and report.rows == 5, report
    assert not report.warnings  # shallow: no tokenizer was looked for

    # Without the input, the dry run says the dataset never reached this host.
    report = await agent.stub.ValidateTask(common_pb2.ValidateTaskRequest(
        type="sft", config_json=json.dumps(config), owner="alice", shallow=True), timeout=60)
    assert not report.ok and "was not fetched onto this host" in report.error_message
