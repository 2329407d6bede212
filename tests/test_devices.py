"""Which devices a task gets on an agent."""

import pytest

from gpu_agent.devices import DevicesBusy, pick_devices, visible_devices_env


def test_gpu_vis_pins_devices():
    assert pick_devices("0, 2", None, busy=[0], total=4) == [0, 2]


def test_gpus_takes_free_devices_lowest_first():
    assert pick_devices(None, 2, busy=[0, 2], total=4) == [1, 3]
    assert pick_devices(None, None, busy=[0], total=2) == [1]  # one device by default


def test_not_enough_free_devices():
    with pytest.raises(DevicesBusy, match="needs 2 device"):
        pick_devices(None, 2, busy=[1], total=2)


def test_env():
    assert visible_devices_env([1, 3]) == {"CUDA_VISIBLE_DEVICES": "1,3"}
