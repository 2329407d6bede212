"""The agent's check of the devices the control plane's scheduler placed a task on."""

import pytest

from gpu_agent.devices import BadDevices, DevicesUnavailable, claim, visible_devices_env


def test_placed_devices_are_taken_as_given():
    assert claim([2, 0], existing=range(4), held=[1]) == [2, 0]


def test_no_devices_takes_the_lowest_free_one():
    assert claim([], existing=range(4), held=[0, 2]) == [1]
    with pytest.raises(DevicesUnavailable, match="no free device"):
        claim([], existing=range(2), held=[0, 1])


def test_unknown_or_held_devices_are_refused():
    with pytest.raises(DevicesUnavailable, match=r"\[4\] do not exist"):
        claim([0, 4], existing=range(4), held=[])
    with pytest.raises(DevicesUnavailable, match=r"\[-1\] do not exist"):
        claim([-1], existing=range(4), held=[])
    with pytest.raises(DevicesUnavailable, match=r"\[1\] are held by another running task; free: \[0, 2\]"):
        claim([1, 2], existing=range(3), held=[1])
    with pytest.raises(BadDevices, match="twice"):
        claim([1, 1], existing=range(3), held=[])


def test_env():
    assert visible_devices_env([1, 3]) == {"CUDA_VISIBLE_DEVICES": "1,3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert visible_devices_env([0], kind="cpu") == {"CUDA_VISIBLE_DEVICES": "0"}
