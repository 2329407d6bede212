"""The probe task type `input-probe` for the agent's tests, and an agent (in-process, on loopback) that runs it.

Run as a module (`python -m tests.helpers.probe_trainer --config FILE`), this file is the probe's trainer: it prints
what it was given (its inputs through trainers.paths, its model, whether the cluster token reached it). That part
comes first and imports little, so the probe starts fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path


def probe_main() -> int:
    import argparse

    from trainers.paths import readable

    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    config_path = Path(parser.parse_args().config)
    config = json.loads(config_path.read_text())
    for ref in config.get("inputs", []):
        path = readable(ref, "inputs")
        if path.is_dir():
            print(f"input {ref} dir {','.join(sorted(p.name for p in path.iterdir()))}")
        else:
            print(f"input {ref} file {hashlib.sha256(path.read_bytes()).hexdigest()} {path.suffix}")
    if config.get("model_name_or_path"):
        print(f"model {readable(config['model_name_or_path'], 'model_name_or_path', kind='model')}")
    print(f"token-in-env {'BUGAGARIC_CLUSTER_TOKEN' in os.environ}")
    print(f"token-file {(config_path.parent / 'cluster-token').exists()}")
    return 0


if __name__ == "__main__":
    sys.exit(probe_main())

# -- for the tests ----------------------------------------------------------------------------------------------------

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import signal  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import AsyncIterator  # noqa: E402

PROBE_TYPE = "input-probe"


def probe_type():
    from pydantic import BaseModel, ConfigDict

    from trainers.registry import DataReport, TaskType

    class ProbeConfig(BaseModel):
        model_config = ConfigDict(extra="forbid")
        inputs: list[str] = []
        model_name_or_path: str | None = None

    return TaskType(name=PROBE_TYPE, description="prints its inputs", config_model=ProbeConfig,
                    entry_module="tests.helpers.probe_trainer", validate_data=lambda c, w: DataReport(path="", rows=0),
                    default_config={}, data_example={}, input_fields=("inputs",))


@contextlib.asynccontextmanager
async def probe_agent(settings, token: str) -> AsyncIterator[SimpleNamespace]:
    """A real agent with the probe type registered; its trainers still running at the end are killed."""
    from gpu_agent.server import start_agent, stop_agent
    from protos import agent_pb2_grpc
    from protos.auth import bearer_channel
    from trainers import registry

    registry.all_types()
    registry.register(probe_type())
    server, port, agent = await start_agent(settings)
    channel = bearer_channel(f"127.0.0.1:{port}", token)
    try:
        yield SimpleNamespace(stub=agent_pb2_grpc.GpuAgentStub(channel), agent=agent)
    finally:
        for run in agent.tasks.values():
            if not run.ended:
                run.process.signal_group(signal.SIGKILL)
                await asyncio.wait_for(run.wait(), 10)
        await channel.close()
        await stop_agent(server, agent, grace=0)
        registry.unregister(PROBE_TYPE)
