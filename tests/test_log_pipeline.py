"""The batched log pipeline: the spool's index, the agent's wake-up on new output, batched streams resumed from a
high seq reading only the spool's tail, and 200k lines printed at full speed stored exactly once across a killed
control plane. Real agents, real trainers (tests/helpers/line_trainer.py, tests/helpers/log_printer.py), real kill -9."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from gpu_agent.log_spool import INDEX_EVERY, SPOOL_FILE, SpoolReader, SpoolWriter, read_spool
from gpu_agent.output_watch import OutputWatch
from gpu_agent.server import start_agent, stop_agent
from gpu_agent.settings import AgentSettings
from protos import agent_pb2, agent_pb2_grpc, common_pb2
from protos.auth import bearer_channel
from tests.helpers import line_trainer
from tests.helpers.stack import start_stack
from trainers import registry

REPO_ROOT = Path(__file__).resolve().parent.parent
CLUSTER_TOKEN = "test-cluster-token"
TERMINAL = {"succeeded", "failed", "stopped"}
LINES = 200_000


# --- the spool's index ------------------------------------------------------------------------------------------


def _wanted(records: list[dict], after_log: int, after_metric: int) -> list[dict]:
    return [r for r in records if (r["kind"] == "log" and r["seq"] > after_log)
            or (r["kind"] == "metric" and r["seq"] > after_metric) or r["kind"] == "status"]


def test_a_reader_started_from_the_index_gets_exactly_what_a_full_read_would(tmp_path):
    writer = SpoolWriter(tmp_path, log_seq_base=500)  # a second attempt: its seqs continue the first's
    writer.append_status("running", pid=1)
    line = metric = 0
    with open(tmp_path / "stdout.log", "a") as out, open(tmp_path / "stderr.log", "a") as err, \
            open(tmp_path / "metrics.jsonl", "a") as metrics:
        for burst in range(1, 40):  # logs and metrics interleaved in the journal, appends of every size
            for _ in range(burst * 7):
                line += 1
                print(f"out {line}", file=out if line % 5 else err, flush=True)
            for _ in range(burst % 4):
                metric += 1
                metrics.write("not json\n" if metric % 9 == 0 else json.dumps({"step": metric}) + "\n")
                metrics.flush()
            writer.poll()
    writer.append_status("succeeded")
    writer.close()
    everything = read_spool(tmp_path)
    assert len(writer.index.marks) > 3
    restarted = SpoolWriter(tmp_path, log_seq_base=500)  # a restarted agent rebuilds the index from the journal
    restarted.close()
    assert len(restarted.index.marks) == len(writer.index.marks)
    for index in (writer.index, restarted.index):
        for after_log, after_metric in [(0, 0), (500, 0), (2000, 10), (3000, 3), (3500, 70), (10_000, 1000),
                                        (3100, 1000), (600, 70)]:
            offset, statuses = index.start(after_log, after_metric)
            reader = SpoolReader(tmp_path, offset)
            got = statuses + _wanted(reader.read_all(), after_log, after_metric)
            assert got == _wanted(everything, after_log, after_metric), (after_log, after_metric)
        assert index.start(5000, 1000)[0] > index.start(3000, 1000)[0] > 0  # a later seq starts further on


async def test_the_pump_wakes_on_a_write_to_the_trainers_output_only(tmp_path):
    watch = OutputWatch(tmp_path, ["stdout.log"])
    try:
        assert watch.uses_inotify  # Linux: no polling
        (tmp_path / SPOOL_FILE).write_text("the agent's own writes do not wake it\n")
        await asyncio.sleep(0.2)
        assert not watch.changed.is_set()
        (tmp_path / "stdout.log").write_text("a line\n")
        await asyncio.wait_for(watch.changed.wait(), 30)
    finally:
        watch.close()


# --- a stream resumed at a high seq -----------------------------------------------------------------------------


@pytest.fixture
async def agent_env(tmp_path):
    try:
        registry.all_types()
    except ImportError:
        pass
    registry.register(line_trainer.task_type())
    settings = AgentSettings(agent_host="127.0.0.1", agent_port=0, workspace=str(tmp_path), agent_slots=2,
                             agent_devices="cpu", control_plane_address="", stop_grace_seconds=5.0,
                             cluster_token=CLUSTER_TOKEN)
    server, port, agent = await start_agent(settings)
    channel = bearer_channel(f"127.0.0.1:{port}", CLUSTER_TOKEN)
    yield SimpleNamespace(stub=agent_pb2_grpc.GpuAgentStub(channel), agent=agent)
    for run in agent.tasks.values():
        if not run.ended:
            run.process.signal_group(signal.SIGKILL)
            await asyncio.wait_for(run.wait(), 10)
    await channel.close()
    await stop_agent(server, agent, grace=0)
    registry.unregister(line_trainer.TYPE_NAME)


def _spool_offsets(task_dir: Path) -> tuple[int, dict[int, int]]:
    """The journal's size and the byte offset of each log record, by seq."""
    offsets, at = {}, 0
    with open(task_dir / SPOOL_FILE, "rb") as f:
        for raw in f:
            record = json.loads(raw)
            if record["kind"] == "log":
                offsets[record["seq"]] = at
            at += len(raw)
    return at, offsets


async def _read_stream(stub, task_id: str, after_log: int, max_batch: int) -> list[agent_pb2.AgentTaskEvent]:
    call = stub.StreamTaskEvents(agent_pb2.StreamTaskEventsRequest(
        task_id=task_id, after_log_seq=after_log, follow=False, max_batch=max_batch), timeout=120)
    return [event async for event in call]


@pytest.mark.timeout(300)
async def test_a_stream_resumed_at_seq_150000_of_200000_reads_only_the_spools_tail(agent_env):
    response = await agent_env.stub.LaunchTask(agent_pb2.LaunchTaskRequest(
        task_id="t-many", type=line_trainer.TYPE_NAME, config_json=json.dumps({"lines": LINES}),
        env={"PYTHONPATH": str(REPO_ROOT)}))
    await asyncio.wait_for(agent_env.agent.tasks["t-many"].wait(), 240)
    size, offsets = _spool_offsets(Path(response.task_dir))
    assert len(offsets) == LINES

    before = SpoolReader.total_bytes_read
    events = await _read_stream(agent_env.stub, "t-many", 150_000, max_batch=1000)
    read = SpoolReader.total_bytes_read - before

    kinds = [event.WhichOneof("event") for event in events]
    assert set(kinds) == {"batch", "status"}
    assert all(len(event.batch.lines) <= 1000 for event in events if event.HasField("batch"))
    lines = [line for event in events if event.HasField("batch") for line in event.batch.lines]
    assert [line.seq for line in lines] == list(range(150_001, LINES + 1))
    assert [line.text for line in lines] == [f"out {i}" for i in range(150_001, LINES + 1)]
    statuses = [event.status.status for event in events if event.HasField("status")]
    assert statuses == [common_pb2.TASK_STATUS_RUNNING, common_pb2.TASK_STATUS_SUCCEEDED]
    # From the index mark at or before seq 150,001 (at most INDEX_EVERY records before it) to the end: the tail only.
    assert size - offsets[150_001] <= read <= size - offsets[150_001 - INDEX_EVERY]
    assert read < size / 3

    before = SpoolReader.total_bytes_read
    everything = await _read_stream(agent_env.stub, "t-many", 0, max_batch=5000)
    assert SpoolReader.total_bytes_read - before >= size  # the counter does see a read from the start
    assert sum(len(event.batch.lines) for event in everything if event.HasField("batch")) == LINES


# --- 200k lines at full speed, the control plane killed in the middle -------------------------------------------


def _get(client: httpx.Client, path: str, **params):
    """A GET that waits out a control plane being restarted (the gateway answers 503 meanwhile)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            response = client.get(path, params=params)
            if response.status_code != 503:
                response.raise_for_status()
                return response.json()
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.2)


@pytest.mark.timeout(600)
def test_200k_lines_at_full_speed_arrive_once_in_order_across_a_killed_control_plane(tmp_path):
    stack = start_stack(tmp_path / "ws", slots=1, extra_env={"BUGAGARIC_TRAINER_PLUGINS": "tests.helpers.log_printer"})
    try:
        client = httpx.Client(base_url=stack.base_url, timeout=60,
                              headers={"authorization": f"Bearer {stack.admin_token}"})
        # Two bursts at full speed: the first streams while the control plane is killed, the second is printed
        # (and spooled by the agent) while it is down.
        task = client.post("/api/finetune/start", json={"type": "log-printer", "config": {
            "lines": LINES, "pause_at": LINES // 2, "pause": 3.0}}).json()
        deadline = time.monotonic() + 120
        while _get(client, f"/api/finetune/tasks/{task['id']}")["last_log_seq"] == 0:
            assert time.monotonic() < deadline, "no line stored"
            time.sleep(0.01)
        stored = _get(client, f"/api/finetune/tasks/{task['id']}")["last_log_seq"]
        stack.kill("control_plane")
        print(f"\ncontrol plane killed with {stored} of {LINES} lines stored")
        time.sleep(4)
        stack.restart("control_plane")
        stack.wait_healthy()
        deadline = time.monotonic() + 300
        while (done := _get(client, f"/api/finetune/tasks/{task['id']}"))["status"] not in TERMINAL:
            assert time.monotonic() < deadline, done
            time.sleep(0.3)
        assert done["status"] == "succeeded", done["error"]
        lines: list[dict] = []
        while page := _get(client, f"/api/finetune/tasks/{task['id']}/logs",
                           after_seq=lines[-1]["seq"] if lines else 0, limit=10000)["lines"]:
            lines.extend(page)
        assert [line["seq"] for line in lines] == list(range(1, LINES + 1)), "a gap or a duplicate"
        assert [int(line["text"].split()[0]) for line in lines] == list(range(1, LINES + 1)), "lost, doubled or reordered"
        assert done["last_log_seq"] == LINES
        assert [a["number"] for a in done["attempts"]] == [1]
    finally:
        stack.stop()
