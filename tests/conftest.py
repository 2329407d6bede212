"""Shared fixtures. Service stacks are started as real subprocesses on loopback ports; models are built on the spot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Never reach a model hub from the tests: everything they load is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A tiny Llama causal LM with a BPE tokenizer trained on the spot, saved in HF format."""
    from tests.helpers.tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session", autouse=True)
def no_orphan_processes(tmp_path_factory):
    """After the whole suite, no service, supervisor or trainer the tests started may still be running."""
    yield
    import time

    from tests.helpers.orphans import leftover_processes

    base = tmp_path_factory.getbasetemp()
    deadline = time.monotonic() + 10  # a just-killed group may take a moment to be reaped
    while (left := leftover_processes(base)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, "processes left running after the suite:\n" + "\n".join(left)
