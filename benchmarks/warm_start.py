"""Launch -> first training step of a tiny SFT task on an agent with its warm trainer pool against the same agent code
with the pool off (BUGAGARIC_WARM_POOL_SIZE=0, today's cold start), interleaved; and the platform's wall time
(launch -> final status) over the same trainer run directly (`python -m trainers.sft --config FILE`).

Two agents run in this process on loopback (one pooled, one cold), driven over gRPC as the control plane drives them;
the control plane's own share (submit -> launch, ~0.1 s) is not in these figures.

    .venv/bin/python benchmarks/warm_start.py [--rounds 3] [--cold-only]

`--system` measures through the whole running system instead (gateway submit -> first step point in the task's
metrics; two systems side by side, one with the pool and one without, submissions alternating).

`--cold-only` runs only the cold agent and the direct runs: the "before" figure on code without the pool (copy this
script into a `git worktree` of the landed code).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from _common import TERMINAL, running_system, wait  # noqa: E402
from gpu_agent.server import start_agent, stop_agent  # noqa: E402
from gpu_agent.settings import AgentSettings  # noqa: E402
from protos import agent_pb2, agent_pb2_grpc  # noqa: E402
from protos.auth import bearer_channel  # noqa: E402
from tests.helpers.tiny_models import build_tiny_llama, write_sft_rows  # noqa: E402

TOKEN = "bench-token"


def sft_config(output_dir: str) -> dict:
    return {"model_name_or_path": "models/tiny-llama", "train_data_path": "data/train.jsonl", "output_dir": output_dir,
            "max_steps": 4, "per_device_train_batch_size": 4, "max_length": 64, "logging_steps": 1}


def first_step_seen(metrics: Path) -> bool:
    try:
        return any(json.loads(line).get("event") == "step" for line in metrics.read_text().splitlines())
    except (OSError, ValueError):
        return False


async def platform_run(stub, agent, task_id: str, config: dict) -> tuple[float, float]:
    """(launch -> first step, launch -> final status) in seconds."""
    began = time.monotonic()
    await stub.LaunchTask(agent_pb2.LaunchTaskRequest(task_id=task_id, type="sft", config_json=json.dumps(config)))
    run = agent.tasks[task_id]
    while not first_step_seen(run.directory / "metrics.jsonl"):
        if run.ended:
            raise RuntimeError(f"{task_id} ended before its first step: {(run.directory / 'stderr.log').read_text()}")
        await asyncio.sleep(0.01)
    first_step = time.monotonic() - began
    await run.wait()
    if run.status != "succeeded":
        raise RuntimeError(f"{task_id}: {run.status}: {(run.directory / 'stderr.log').read_text()[-2000:]}")
    return first_step, time.monotonic() - began


def direct_run(workspace: Path, config: dict) -> float:
    path = workspace / f"direct-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(config))
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "trainers.sft", "--config", str(path)], cwd=workspace, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "BUGAGARIC_WORKSPACE": str(workspace), "PYTHONUNBUFFERED": "1"})
    return time.monotonic() - began


async def main(rounds: int, cold_only: bool) -> None:
    load_start = os.getloadavg()[0]
    workspace = Path(tempfile.mkdtemp(prefix="bugagaric-warm-"))
    build_tiny_llama(workspace / "models" / "tiny-llama")
    write_sft_rows(workspace / "data" / "train.jsonl", 32)
    agents = {}
    arms = ("cold",) if cold_only else ("warm", "cold")
    for name, size in (("warm", 1), ("cold", 0))[1 if cold_only else 0:]:
        settings = AgentSettings(agent_host="127.0.0.1", agent_port=0, workspace=str(workspace), agent_slots=1,
                                 agent_devices="cpu", control_plane_address="", cluster_token=TOKEN,
                                 agent_dir=f"var/agent-{name}", warm_pool_size=size, warm_pool_preload="")
        server, port, agent = await start_agent(settings)
        channel = bearer_channel(f"127.0.0.1:{port}", TOKEN)
        agents[name] = (server, agent, channel, agent_pb2_grpc.GpuAgentStub(channel))
    pool_memory = 0
    if not cold_only:
        pool = agents["warm"][1].warm_pool
        if not await asyncio.to_thread(pool.wait_ready, 120):
            raise SystemExit("the warm pool never became ready")
        pool_memory = await asyncio.to_thread(pool.memory_bytes)
    results: dict[str, list] = {"warm_first_step": [], "cold_first_step": [], "warm_wall": [], "cold_wall": [],
                                "direct_wall": []}
    try:
        for i in range(rounds):
            for name in arms:
                _, agent, _, stub = agents[name]
                first, wall = await platform_run(stub, agent, f"{name}-{i}", sft_config(f"output/{name}-{i}"))
                if name == "warm" and getattr(agent.tasks[f"{name}-{i}"].process, "reaper", None) is None:
                    raise RuntimeError("the warm agent started its task cold")
                results[f"{name}_first_step"].append(first)
                results[f"{name}_wall"].append(wall)
            results["direct_wall"].append(await asyncio.to_thread(direct_run, workspace, sft_config(f"output/d-{i}")))
    finally:
        for server, agent, channel, _ in agents.values():
            await channel.close()
            await stop_agent(server, agent, grace=0)
    median = {key: statistics.median(values) if values else float("nan") for key, values in results.items()}
    figures = {
        "rounds": rounds, "runs": results, "median": median,
        "warm_over_direct_wall": median["warm_wall"] / median["direct_wall"],
        "cold_over_direct_wall": median["cold_wall"] / median["direct_wall"],
        "warm_pool_memory_bytes": pool_memory,
        "load_average_1m": {"start": load_start, "end": os.getloadavg()[0]}, "cpus": os.cpu_count(),
    }
    print(json.dumps(figures, indent=2))
    print(f"launch -> first step: warm {median['warm_first_step']:.2f} s, cold {median['cold_first_step']:.2f} s | "
          f"wall / direct: warm {figures['warm_over_direct_wall']:.3f}, cold {figures['cold_over_direct_wall']:.3f} "
          f"(direct {median['direct_wall']:.2f} s) | pool {pool_memory / 2**20:.0f} MiB | "
          f"load {load_start:.2f} -> {os.getloadavg()[0]:.2f}")


def system_first_step(client, config: dict) -> float:
    began = time.monotonic()
    response = client.post("/api/finetune/start", json={"type": "sft", "config": config})
    response.raise_for_status()
    task_id = response.json()["id"]
    while True:
        points = client.get(f"/api/finetune/tasks/{task_id}/metrics").json().get("points", [])
        if any(p.get("event") == "step" for p in points):
            first = time.monotonic() - began
            break
        time.sleep(0.02)
    task = wait(client, task_id, TERMINAL)
    if task["status"] != "succeeded":
        raise RuntimeError(f"{task_id}: {task['status']}")
    return first


async def pool_ready(stack) -> bool:
    """The agent's DescribeAgent reports the pool's memory once its server is ready."""
    address = f"127.0.0.1:{stack.agent_envs['agent']['BUGAGARIC_AGENT_PORT']}"
    async with bearer_channel(address, stack.cluster_token) as channel:
        stub = agent_pb2_grpc.GpuAgentStub(channel)
        for _ in range(600):
            if (await stub.DescribeAgent(agent_pb2.DescribeAgentRequest())).warm_pool_memory_bytes > 0:
                return True
            await asyncio.sleep(0.2)
    return False


def system_main(rounds: int) -> None:
    load_start = os.getloadavg()[0]
    results: dict[str, list] = {"warm": [], "cold": []}
    with running_system(slots=1, extra_env={"BUGAGARIC_WARM_POOL_SIZE": "1"}) as (warm_stack, warm_client), \
            running_system(slots=1, extra_env={"BUGAGARIC_WARM_POOL_SIZE": "0"}) as (_, cold_client):
        if not asyncio.run(pool_ready(warm_stack)):
            raise SystemExit("the warm pool never became ready")
        config = {"model_name_or_path": "models/tiny-llama", "train_data_path": "data/train.jsonl", "max_steps": 4,
                  "per_device_train_batch_size": 4, "max_length": 64, "logging_steps": 1}
        for _ in range(rounds):
            results["warm"].append(system_first_step(warm_client, config))
            results["cold"].append(system_first_step(cold_client, config))
    median = {key: statistics.median(values) for key, values in results.items()}
    load_end = os.getloadavg()[0]
    print(json.dumps({"rounds": rounds, "submit_to_first_step": results, "median": median,
                      "load_average_1m": {"start": load_start, "end": load_end}, "cpus": os.cpu_count()}, indent=2))
    print(f"submit -> first step (whole system): warm {median['warm']:.2f} s, cold {median['cold']:.2f} s | "
          f"load {load_start:.2f} -> {load_end:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold-only", action="store_true")
    parser.add_argument("--system", action="store_true")
    args = parser.parse_args()
    if args.system:
        system_main(args.rounds)
    else:
        asyncio.run(main(args.rounds, args.cold_only))
