"""Placement: best fit, pinned devices, no device given twice."""

import json

from control_plane.models import Agent, Task
from control_plane.placement import (
    choose, device_indices, devices_needed, gang_request, gang_shape, largest_agent, place, reservation,
)


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


def gang(nodes: int = 2, per_node: int = 1, **fields) -> Task:
    return Task(id="g", type="sft", status="queued", config_json="{}", nodes=nodes, gpus_per_node=per_node,
                gpus=nodes * per_node, **fields)


def test_a_gang_is_placed_on_distinct_agents_all_at_once_or_not_at_all():
    a, b, c = agent("a", 2), agent("b", 1), agent("c", 4)
    placed = place(gang(2, 1), [a, b, c], held={})
    assert [(p.agent.id, p.devices) for p in placed] == [("b", [0]), ("a", [0])]  # best fit: fewest left first
    assert [(p.agent.id, p.devices) for p in place(gang(2, 2), [a, b, c], held={})] == [("a", [0, 1]), ("c", [0, 1])]
    # Only one agent has two free: nothing is placed (no half gang holding a device).
    assert place(gang(2, 2), [a, b, c], held={"a": {1}}) is None
    assert place(gang(3, 1), [a, b], held={}) is None
    assert place(gang(2, 1), [a, b], held={"b": {0}}) is None
    # A resumed gang goes back to the agents holding its checkpoint copies first.
    assert [p.agent.id for p in place(gang(2, 1), [a, b, c], held={}, prefer={"c", "a"})] == ["a", "c"]


def test_split_gpus_takes_one_agent_first_then_the_fewest_equal_shares():
    a, b, c = agent("a", 2), agent("b", 2), agent("c", 2)
    one = Task(id="s", type="sft", status="queued", config_json="{}", gpus=2, split_gpus=True)
    assert [(p.agent.id, p.devices) for p in place(one, [a, b], held={})] == [("a", [0, 1])]
    four = Task(id="s", type="sft", status="queued", config_json="{}", gpus=4, split_gpus=True)
    assert [(p.agent.id, p.devices) for p in place(four, [a, b, c], held={})] == [("a", [0, 1]), ("b", [0, 1])]
    # Two free devices on two agents and one elsewhere: four as 4 x 1.
    assert len(place(four, [a, b, c, agent("d", 1)], held={"a": {0}, "b": {0}, "c": {0}})) == 4
    unsplit = Task(id="s", type="sft", status="queued", config_json="{}", gpus=4)
    assert place(unsplit, [a, b, c], held={}) is None


def test_the_first_task_that_waits_reserves_the_agents_it_will_fit_on():
    a, b, c = agent("a", 1), agent("b", 1), agent("c", 2)
    assert reservation(gang(2, 1), [a, b, c], held={"a": {0}, "b": {0}}) == {"c", "a"}
    assert reservation(gang(2, 2), [a, b, c], held={}) == set()  # only one agent is big enough: never fits
    assert reservation(task(gpus=2), [a, b, c], held={"c": {0}}) == {"c"}
    split = Task(id="s", type="sft", status="queued", config_json="{}", gpus=2, split_gpus=True)
    assert reservation(split, [a, b], held={"a": {0}}) == {"b", "a"}


def test_the_config_asks_for_a_gang_in_the_task_columns():
    assert gang_request(type("C", (), {"nodes": 2, "gpus_per_node": 2, "split_gpus": False})) == {
        "nodes": 2, "gpus_per_node": 2, "split_gpus": False, "gpus": 4}
    assert gang_request(type("C", (), {})) == {"nodes": 1, "gpus_per_node": 0, "split_gpus": False}
    assert gang_shape(gang(3, 2)) == (3, 2) and gang_shape(task()) is None
