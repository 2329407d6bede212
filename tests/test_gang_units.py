"""The pieces of multi-node training that need no processes: the store's per-node ingestion (SQLite and
PostgreSQL), the gang's config keys, torchrun's command line and how its failures are read."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from control_plane.gang import checkpoint_subpath
from control_plane.state_machine import TaskStatus
from control_plane.task_store import NewLine, NewMetric, TaskStore
from gpu_agent import gang_launch, torchrun_exit
from protos.addresses import host_of, joined
from trainers import registry
from trainers.errors import ConfigError

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(engine):
    return TaskStore(engine)


def lines(node_seqs, label="line"):
    return [NewLine(seq, T0 + timedelta(seconds=seq), "stdout", f"{label} {seq}") for seq in node_seqs]


def placed_gang(store: TaskStore) -> str:
    task_id = uuid.uuid4().hex
    store.create_task(task_id, "sft", "{}", "", nodes=2, gpus_per_node=1, gpus=2)
    store.transition(task_id, TaskStatus.STARTING, "placed", agent_id="a", devices="0", attempt=1,
                     gang=[("a", "0"), ("b", "0")])
    store.set_node(task_id, 1, 0, output_dir="/host-a/out")
    store.set_node(task_id, 1, 1, output_dir="/host-b/out")
    return task_id


def test_nodes_lines_get_one_seq_space_and_a_replay_is_never_stored_twice(store):
    task_id = placed_gang(store)
    assert store.held_devices() == {"a": {0}, "b": {0}}
    store.ingest_node(task_id, 1, lines([1, 2], "b"), [], attempt=1)
    store.ingest_node(task_id, 0, lines([1, 2, 3], "a"), [], attempt=1)
    store.ingest_node(task_id, 1, lines([1, 2, 3], "b"), [], attempt=1)  # a reconnect replays 1..2
    stored = store.log_lines_after(task_id, 0, 100)
    assert [line.seq for line in stored] == [1, 2, 3, 4, 5, 6]
    assert [line.text for line in stored] == ["[node1] b 1", "[node1] b 2", "[node0] a 1", "[node0] a 2",
                                              "[node0] a 3", "[node1] b 3"]
    assert [(n.node, n.last_log_seq) for n in store.task_nodes(task_id, 1)] == [(0, 3), (1, 3)]
    store.ingest_node(task_id, 0, lines([4]), [], attempt=2)  # an attempt the task is not on: dropped
    assert store.get_task(task_id).last_log_seq == 6


def test_the_node_that_reports_metrics_becomes_the_tasks_agent(store):
    task_id = placed_gang(store)
    point = NewMetric(1, T0, {"event": "step", "step": 1, "total_steps": 4, "loss": 2.0})
    store.ingest_node(task_id, 1, [], [point], attempt=1)
    store.ingest_node(task_id, 1, [], [point], attempt=1)  # replayed
    task = store.get_task(task_id)
    assert (task.agent_id, task.output_dir, task.step, task.last_metric_seq) == ("b", "/host-b/out", 1, 1)
    assert [n.rank0 for n in store.task_nodes(task_id, 1)] == [False, True]
    detail = store.task_detail(task_id)
    assert [(n.node, n.agent_id) for n in detail.nodes] == [(0, "a"), (1, "b")]


def test_concurrent_nodes_never_collide_on_a_seq(store):
    task_id = placed_gang(store)

    def feed(node: int) -> None:
        for start in range(1, 200, 20):
            store.ingest_node(task_id, node, lines(range(start, start + 20), f"n{node}"), [], attempt=1)

    threads = [threading.Thread(target=feed, args=(node,)) for node in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = store.log_lines_after(task_id, 0, 1000)
    assert [line.seq for line in stored] == list(range(1, 401))
    for node in (0, 1):
        assert [line.text for line in stored if line.text.startswith(f"[node{node}]")] == [
            f"[node{node}] n{node} {seq}" for seq in range(1, 201)]


def test_a_requeued_gang_holds_no_device_and_shows_no_nodes(store):
    task_id = placed_gang(store)
    store.transition(task_id, TaskStatus.QUEUED, "retry", agent_id="", devices="", only_attempt=1)
    assert store.held_devices() == {}
    assert store.task_detail(task_id).nodes == []


def parse(**config):
    return registry.get("sft").parse_config({"model_name_or_path": "m", "train_data_path": "d.jsonl", **config})


@pytest.mark.parametrize("config, field, words", [
    ({"nodes": 2, "gpu_vis": "0"}, "nodes", "cannot pin"),
    ({"nodes": 2, "gpus_per_node": 2, "gpus": 3}, "gpus_per_node", "nodes × gpus_per_node"),
    ({"split_gpus": True, "nodes": 2}, "split_gpus", "do not also set nodes"),
    ({"nodes": 0}, "nodes", ""),
    ({"nodes": 65}, "nodes", ""),
    ({"gpus_per_node": 0}, "gpus_per_node", ""),
])
def test_gang_keys_that_cannot_work_are_refused_naming_the_key(config, field, words):
    with pytest.raises(ConfigError) as refused:
        parse(**config)
    assert refused.value.field == field and words in refused.value.message


def test_consistent_gang_keys_are_taken():
    config = parse(nodes=2, gpus_per_node=2, gpus=4)
    assert (config.nodes, config.gpus_per_node) == (2, 2)
    assert parse(gpus=4, split_gpus=True).split_gpus


def test_torchrun_command_for_each_node():
    spec = gang_launch.GangSpec(nnodes=2, node_rank=1, rdzv_id="t-3", rdzv_host="10.0.0.5", rdzv_port=29411)
    argv = gang_launch.torchrun_argv(spec, 4, "trainers.sft", gang_launch.Path("/a/config.json"), "10.0.0.6")
    assert argv[1:3] == ["-m", "torch.distributed.run"]
    assert {"--nnodes=2", "--nproc_per_node=4", "--rdzv_backend=c10d", "--rdzv_endpoint=10.0.0.5:29411",
            "--rdzv_id=t-3", "--local_addr=10.0.0.6", "--max_restarts=0"} <= set(argv)
    assert any(arg.startswith("--rdzv_conf=is_host=0") for arg in argv)
    assert argv[-4:] == ["-m", "trainers.sft", "--config", "/a/config.json"]
    assert gang_launch.environment(spec)["BUGAGARIC_GANG_NODES"] == "2"
    with pytest.raises(gang_launch.BadGang, match="rdzv_port"):
        gang_launch.check(gang_launch.GangSpec(2, 1, "t-3", "h", 0))
    with pytest.raises(gang_launch.BadGang, match="node_rank"):
        gang_launch.check(gang_launch.GangSpec(2, 2, "t-3", "h", 1))


def test_each_node_resumes_from_its_own_copy_of_the_checkpoint():
    assert checkpoint_subpath("/host-a/out/sft/t/checkpoint-8", "/host-a/out/sft/t") == "checkpoint-8"
    assert checkpoint_subpath("/a/out/rounds/round_1/checkpoint-8", "/a/out/") == "rounds/round_1/checkpoint-8"
    assert checkpoint_subpath("/a/other/checkpoint-8", "/a/out") == ""  # not the task's: the trainer refuses it
    assert checkpoint_subpath("", "/a/out") == "" and checkpoint_subpath("/a/out", "/a/out") == ""
    spec = gang_launch.GangSpec(2, 1, "t-2", "h", 5, "checkpoint-8")
    assert spec.resume_from(Path("/host-b/out")) == "/host-b/out/checkpoint-8"
    for bad in ("../t2/checkpoint-1", "/etc/x", "a/../../b"):
        with pytest.raises(gang_launch.BadGang, match="resume_subpath"):
            gang_launch.check(gang_launch.GangSpec(2, 1, "t-2", "h", 5, bad))


def test_the_rendezvous_port_comes_from_the_configured_range():
    port = gang_launch.choose_port("")
    assert 0 < port < 65536
    assert gang_launch.choose_port(f"{port}-{port + 50}") in range(port, port + 51)
    assert host_of("10.0.0.5:50061") == "10.0.0.5" and host_of("[::1]:50061") == "::1" and host_of("h") == "h"
    assert joined("::1", 5) == "[::1]:5" and joined("h", 5) == "h:5"


TORCHRUN_FAILURE = """[rank1]:Traceback (most recent call last):
[rank1]:  File "x.py", line 1, in <module>
[rank1]:error: train_data_path: line 3: chosen.text must not be empty
Traceback (most recent call last):
    raise ChildFailedError(
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
trainers.sft FAILED
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-04_10:30:32
  rank      : 1 (local_rank: 0)
  exitcode  : 3 (pid: 19370)
============================================================"""


def test_a_failed_worker_under_torchrun_is_reported_as_the_worker_ended():
    code, tail = torchrun_exit.worker_outcome(1, TORCHRUN_FAILURE.splitlines())
    assert code == 3  # invalid data, not torchrun's own 1
    assert "error: train_data_path: line 3: chosen.text must not be empty" in tail
    killed = TORCHRUN_FAILURE.replace("exitcode  : 3", "exitcode  : -9")
    assert torchrun_exit.worker_outcome(1, killed.splitlines())[0] == -9
    plain = ["error: something"]
    assert torchrun_exit.worker_outcome(1, plain) == (1, plain)
    assert torchrun_exit.worker_outcome(0, TORCHRUN_FAILURE.splitlines())[0] == 0
