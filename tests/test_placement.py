"""Placement: best fit, pinned devices, no device given twice."""

import json

from control_plane.models import Agent, Task
from control_plane.placement import choose, device_indices, devices_needed, largest_agent


def agent(agent_id: str, n: int) -> Agent:
    return Agent(id=agent_id, address="x", slots=n, devices_json=json.dumps([{"index": i, "kind": "cpu"} for i in range(n)]))


def task(gpus: int = 1, gpu_vis: str = "") -> Task:
    return Task(id="t", type="sft", status="queued", config_json="{}", gpus=gpus, gpu_vis=gpu_vis)


def test_best_fit_prefers_the_agent_left_with_fewest_free_devices():
    big, small = agent("big", 4), agent("small", 2)
    placement = choose(task(gpus=2), [big, small], held={})
    assert (placement.agent.id, placement.devices) == ("small", [0, 1])
    placement = choose(task(gpus=1), [big, small], held={"small": {0}})
    assert (placement.agent.id, placement.devices) == ("small", [1])


def test_devices_held_by_active_tasks_are_never_given_again():
    a = agent("a", 2)
    assert choose(task(gpus=1), [a], held={"a": {0, 1}}) is None
    assert choose(task(gpus=2), [a], held={"a": {1}}) is None
    assert choose(task(gpus=1), [a], held={"a": {0}}).devices == [1]


def test_pinned_devices_must_all_be_free_on_one_agent():
    a, b = agent("a", 2), agent("b", 4)
    assert choose(task(gpu_vis="2,3"), [a, b], held={}).agent.id == "b"
    assert choose(task(gpu_vis="0,1"), [a], held={"a": {1}}) is None
    assert choose(task(gpu_vis="0,1"), [a, b], held={"a": {1}}).agent.id == "b"
    assert devices_needed(task(gpus=3, gpu_vis="1")) == 1


def test_largest_agent_and_fallback_to_slots():
    assert largest_agent([agent("a", 2), agent("b", 3)])[1] == 3
    assert largest_agent([]) == (None, 0)
    assert device_indices(Agent(id="old", address="x", slots=2)) == [0, 1]
