"""Task actions over REST and gRPC on the real stack (control plane, one single-device agent, gateway) and the tiny
Llama: the queue position and a queued task's priority change (PATCH /tasks/{id}, gRPC UpdateTaskPriority), resume
from a checkpoint the user picks, and continuing a succeeded task's training from its published adapter (init_from).

The one device is held by a long task while the queue is inspected; it is then stopped and resumed from its first
checkpoint. Four trainer runs in all."""

from __future__ import annotations

import grpc
import httpx
import pytest

from protos import control_plane_pb2 as cp, control_plane_pb2_grpc
from tests.helpers.tasks import wait_for_task

ENDED = {"succeeded", "failed", "stopped"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from tests.helpers.stack import start_stack
    from tests.helpers.tiny_models import build_tiny_llama, write_sft_rows

    workspace = tmp_path_factory.mktemp("actions")
    # Before the stack: the agent reports the models it holds when it registers.
    build_tiny_llama(workspace / "models" / "tiny-llama")
    write_sft_rows(workspace / "data" / "train.jsonl", 32)
    running = start_stack(workspace, slots=1, stop_grace_seconds=5.0)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def clients(stack):
    """REST clients of alice (who owns the tasks), bob and the admin."""
    made = {"admin": stack.admin_token}
    for name in ("alice", "bob"):
        made[name] = stack.create_user(name, f"{name}-password-1")
    opened = {name: httpx.Client(base_url=stack.base_url, headers={"authorization": f"Bearer {token}"}, timeout=60)
              for name, token in made.items()}
    yield opened | {"tokens": made}
    for name, client in opened.items():
        client.close()


def config(stack, **overrides) -> dict:
    base = {"model_name_or_path": str(stack.workspace / "models" / "tiny-llama"), "train_data_path": "data/train.jsonl",
            "max_length": 64, "per_device_train_batch_size": 4, "learning_rate": 5e-3, "max_steps": 4}
    return base | overrides


def start(api: httpx.Client, cfg: dict) -> dict:
    response = api.post("/api/finetune/start", json={"type": "sft", "config": cfg})
    assert response.status_code == 201, response.text
    return response.json()


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def step_losses(api: httpx.Client, task_id: str, after_seq: int = 0) -> list[tuple[int, float]]:
    points = api.get(f"/api/finetune/tasks/{task_id}/metrics", params={"after_seq": after_seq}).json()["points"]
    return [(p["step"], p["loss"]) for p in points if p.get("event") == "step" and "loss" in p]


def test_queue_position_priority_and_resume_from_a_picked_checkpoint(stack, clients):
    alice, bob, admin = clients["alice"], clients["bob"], clients["admin"]
    # Holds the only device until stopped, saving a checkpoint every 2 steps.
    holder = start(alice, config(stack, max_steps=100000, save_steps=2, save_total_limit=None))
    holder = wait_for_task(alice, holder["id"], lambda t: t["status"] == "running" and len(t["checkpoints"]) >= 2)
    first, second = start(alice, config(stack)), start(alice, config(stack))
    assert (first["queue_position"], second["queue_position"]) == (1, 2)
    listed = {t["id"]: t["queue_position"] for t in alice.get("/api/finetune/tasks").json()["tasks"]}
    assert listed == {holder["id"]: None, first["id"]: 1, second["id"]: 2}

    # The later one jumps ahead; the change shows in the queue, the task and its config (what a clone copies).
    moved = alice.patch(f"/api/finetune/tasks/{second['id']}", json={"priority": 7})
    assert moved.status_code == 200, moved.text
    assert (moved.json()["priority"], moved.json()["queue_position"], moved.json()["config"]["priority"]) == (7, 1, 7)
    assert alice.get(f"/api/finetune/tasks/{first['id']}").json()["queue_position"] == 2

    # Bad input names the field; others' tasks do not exist for bob; an admin may move anyone's.
    for body, field in [({"priority": 101}, "priority"), ({"priority": -101}, "priority"), ({"priority": "high"}, "priority"),
                        ({"priority": True}, "priority"), ({"priority": 1.5}, "priority"), ({"priority": 2**40}, "priority"),
                        ({}, "priority"), ({"priority": 1, "colour": "red"}, "colour")]:
        assert error_of(alice.patch(f"/api/finetune/tasks/{first['id']}", json=body), 400)["field"] == field, body
    assert error_of(alice.patch(f"/api/finetune/tasks/{first['id']}", content=b"[1]"), 400)
    assert error_of(bob.patch(f"/api/finetune/tasks/{first['id']}", json={"priority": 9}), 404)["field"] == "task_id"
    assert error_of(alice.patch("/api/finetune/tasks/no-such-task", json={"priority": 9}), 404)
    assert error_of(alice.patch(f"/api/finetune/tasks/{holder['id']}", json={"priority": 9}), 409)["field"] == "task_id"
    assert admin.patch(f"/api/finetune/tasks/{first['id']}", json={"priority": 9}).json()["queue_position"] == 1

    # The same over gRPC.
    with grpc.insecure_channel(stack.control_plane_address) as channel:
        stub = control_plane_pb2_grpc.FinetuneServiceStub(channel)
        metadata = (("authorization", f"Bearer {clients['tokens']['alice']}"),)
        task = stub.UpdateTaskPriority(cp.UpdateTaskPriorityRequest(task_id=second["id"], priority=10), metadata=metadata)
        assert (task.priority, task.queue_position) == (10, 1)
        with pytest.raises(grpc.RpcError) as refused:
            stub.UpdateTaskPriority(cp.UpdateTaskPriorityRequest(task_id=second["id"], priority=1000), metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "priority" in refused.value.details()

    # Out of the queue: no longer movable.
    for task in (first, second):
        assert alice.delete(f"/api/finetune/tasks/{task['id']}").json()["status"] == "stopped"
    assert error_of(alice.patch(f"/api/finetune/tasks/{first['id']}", json={"priority": 1}), 409)["field"] == "task_id"

    # Stop the holder; resume it from its first checkpoint rather than the latest.
    assert alice.delete(f"/api/finetune/tasks/{holder['id']}").status_code == 200
    stopped = wait_for_task(alice, holder["id"], lambda t: t["status"] in ENDED)
    assert stopped["status"] == "stopped"
    checkpoints = stopped["checkpoints"]
    assert len(checkpoints) >= 2
    picked = checkpoints[0]
    assert picked["step"] < checkpoints[-1]["step"]
    bogus = alice.post(f"/api/finetune/tasks/{holder['id']}/resume", json={"checkpoint": "/elsewhere/checkpoint-2"})
    assert error_of(bogus, 400)["field"] == "checkpoint"
    seen = max([p["seq"] for p in alice.get(f"/api/finetune/tasks/{holder['id']}/metrics").json()["points"]], default=0)
    resumed = alice.post(f"/api/finetune/tasks/{holder['id']}/resume", json={"checkpoint": picked["path"]})
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "queued"
    running = wait_for_task(alice, holder["id"], lambda t: t["status"] in ENDED or step_losses(alice, holder["id"], seen))
    assert running["status"] not in ENDED, running
    assert step_losses(alice, holder["id"], seen)[0][0] == picked["step"] + 1  # continues from the picked step
    attempts = alice.get(f"/api/finetune/tasks/{holder['id']}").json()["attempts"]
    assert [a["number"] for a in attempts] == [1, 2] and attempts[1]["resumed_from"] == picked["path"]
    alice.delete(f"/api/finetune/tasks/{holder['id']}")
    assert wait_for_task(alice, holder["id"], lambda t: t["status"] in ENDED)["status"] == "stopped"


def test_continue_a_succeeded_task_from_its_adapter(stack, clients, tmp_path):
    from safetensors.torch import load_file

    alice, bob = clients["alice"], clients["bob"]
    source = start(alice, config(stack, max_steps=6))
    source = wait_for_task(alice, source["id"], lambda t: t["status"] in ENDED)
    assert source["status"] == "succeeded", source
    wait_for_task(alice, source["id"], lambda t: t["published_model_sha256"])

    # Only a succeeded task of one's own, named as task:<id>.
    refused = alice.post("/api/finetune/start", json={"type": "sft", "config": config(stack, init_from="checkpoint-4")})
    assert error_of(refused, 400)["field"] == "init_from"
    for bad in ("task:no-such-task",):
        refused = alice.post("/api/finetune/start", json={"type": "sft", "config": config(stack, init_from=bad)})
        assert error_of(refused, 400)["field"] == "init_from"
    refused = bob.post("/api/finetune/start", json={"type": "sft", "config": config(stack, init_from=f"task:{source['id']}")})
    assert error_of(refused, 400)["field"] == "init_from"

    # A learning rate too small to move the weights: what the continued run saves is what it loaded.
    continued = start(alice, config(stack, init_from=f"task:{source['id']}", learning_rate=1e-12, max_steps=2))
    continued = wait_for_task(alice, continued["id"], lambda t: t["status"] in ENDED)
    assert continued["status"] == "succeeded", continued
    start_event = [p for p in alice.get(f"/api/finetune/tasks/{continued['id']}/metrics").json()["points"]
                   if p.get("event") == "start"]
    assert start_event and start_event[0]["init_from"] == f"task:{source['id']}"
    # It starts where the source ended, not from the untrained base.
    assert step_losses(alice, continued["id"])[0][1] < step_losses(alice, source["id"])[0][1]

    def adapter(task_id: str) -> dict:
        response = alice.get(f"/api/finetune/tasks/{task_id}/artifacts/adapter_model.safetensors")
        assert response.status_code == 200, response.text
        path = tmp_path / f"{task_id}.safetensors"
        path.write_bytes(response.content)
        return load_file(str(path))

    trained, kept = adapter(source["id"]), adapter(continued["id"])
    lora_b = [name for name in trained if "lora_B" in name]
    assert lora_b and set(kept) == set(trained)
    # A new adapter's B matrices start at zero; the source's trained ones are kept.
    assert any(trained[name].abs().max() > 0 for name in lora_b)
    for name in trained:
        assert (kept[name] - trained[name]).abs().max() < 1e-6, name
