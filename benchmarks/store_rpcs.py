"""The control plane's store-backed RPCs, against a real control plane process (no agent, no gateway: gRPC straight
from this client), on SQLite, in four phases on one growing store:

1. StartTask throughput as the queue grows to 250 (8 concurrent clients): calls/s over the first and the last 50.
2. GetTask and ListTasks(50) calls/s and p99 with 8 concurrent clients, next to an empty gRPC health Check from the
   same client in the same run (interleaved: Check, GetTask, ListTasks, Check again; the Check figure is the mean).
3. GetTask latency with 10,000 tasks queued (the newest queued task, one client): p50/p99.
4. With 100,000 tasks (10,000 of them queued): a list page at offset 90,000 and, when the server gives page tokens,
   the keyset page at the same depth; a `status=` and a `type=` filtered page (first page, and at depth by keyset).

Rows are added to the store directly (plain SQL, the server's own schema untouched) between phases.
`--repo` runs the control plane from another checkout (e.g. a `git worktree` of the landed code, for "before").

    .venv/bin/python benchmarks/store_rpcs.py [--repo /tmp/before] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, insert, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from control_plane.list_cursor import ListCursor  # noqa: E402
from control_plane.models import Task, TaskEvent, TaskValidation  # noqa: E402
from protos import control_plane_pb2 as cp, control_plane_pb2_grpc  # noqa: E402
from tests.helpers.stack import free_port  # noqa: E402

CLIENTS = 8
REPO = Path(__file__).resolve().parents[1]


def load() -> float:
    return round(os.getloadavg()[0], 2)


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def p50(samples: list[float]) -> float:
    return sorted(samples)[len(samples) // 2] if samples else 0.0


class ControlPlaneProcess:
    def __init__(self, repo: Path, workspace: Path) -> None:
        self.port = free_port()
        self.database = workspace / "var" / "bugagaric.db"
        self.password = secrets.token_urlsafe(12)
        env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "BUGAGARIC_WORKSPACE": str(workspace), "BUGAGARIC_DATABASE_URL": f"sqlite:///{self.database}",
               "BUGAGARIC_CONTROL_PLANE_PORT": str(self.port), "BUGAGARIC_CONTROL_PLANE_HOST": "127.0.0.1",
               "BUGAGARIC_CLUSTER_TOKEN": secrets.token_urlsafe(24), "BUGAGARIC_ADMIN_PASSWORD": self.password}
        self.log = open(workspace / "control_plane.log", "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "control_plane"], cwd=workspace, env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


async def timed_calls(call, make_request, seconds: float, clients: int = CLIENTS) -> dict:
    """`clients` coroutines calling as fast as they can for `seconds`: calls/s and latency percentiles (ms)."""
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client(index: int) -> None:
        n = 0
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await call(make_request(index, n))
            latencies.append((time.perf_counter() - started) * 1000)
            n += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    return {"calls_per_s": round(len(latencies) / elapsed), "p50_ms": round(p50(latencies), 2),
            "p99_ms": round(p99(latencies), 2)}


async def sequential_ms(call, request, n: int, max_seconds: float = 15.0) -> dict:
    """One client: latency over `n` calls (fewer when they take longer than `max_seconds` in all)."""
    await call(request)
    samples = []
    give_up = time.perf_counter() + max_seconds
    for _ in range(n):
        if samples and time.perf_counter() > give_up:
            break
        started = time.perf_counter()
        await call(request)
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(p50(samples), 2), "p99_ms": round(p99(samples), 2), "calls": len(samples)}


def seed(database: Path, *, queued: int, ended: int, start: datetime) -> None:
    """Adds tasks straight into the store: `queued` queued ones and `ended` finished ones, interleaved in time."""
    engine = create_engine(f"sqlite:///{database}")
    statuses, types = ("succeeded", "failed", "stopped"), ("sft", "dpo", "embedding")
    tasks, events, checks = [], [], []
    total = queued + ended
    every = max(1, total // max(1, queued)) if queued else 0
    made_queued = 0
    for i in range(total):
        is_queued = queued and i % every == 0 and made_queued < queued
        made_queued += bool(is_queued)
        task_id = uuid.uuid4().hex
        created = start + timedelta(milliseconds=i)
        status = "queued" if is_queued else statuses[i % 3]
        tasks.append(dict(id=task_id, type=types[i % 3], status=status, owner="admin", config_json="{}",
                          output_dir="", created_at=created, updated_at=created, agent_id="", error="",
                          error_reason="", latest_metrics_json="{}", priority=0, gpus=1, gpu_vis="", devices="",
                          attempt=0, max_retries=0, retries=0, resume_from="", pid=0, exit_code=0, step=0,
                          total_steps=0, percent=0.0, last_log_seq=0, last_metric_seq=0))
        events.append(dict(task_id=task_id, time=created, from_status="", to_status="queued", reason="submitted",
                           message=""))
        checks.append(dict(task_id=task_id, state="passed", rows=1, message="", admin_paths=True, created_at=created))
    with engine.begin() as conn:
        for table, rows in ((Task.__table__, tasks), (TaskEvent.__table__, events),
                            (TaskValidation.__table__, checks)):
            for at in range(0, len(rows), 5000):
                conn.execute(insert(table), rows[at:at + 5000])
    engine.dispose()


def row_at_depth(database: Path, depth: int, where: str = "") -> ListCursor:
    """The cursor of the list's `depth`-th row (newest first), as the previous page's token would carry it."""
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        created, task_id = conn.execute(text(
            f"SELECT created_at, id FROM task {where} ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET {depth - 1}")).one()
    engine.dispose()
    created = datetime.fromisoformat(created) if isinstance(created, str) else created
    return ListCursor(created.replace(tzinfo=UTC), task_id)


async def run(repo: Path, seconds: float) -> dict:
    workspace = Path(tempfile.mkdtemp(prefix="bugagaric-store-rpcs-"))
    server = ControlPlaneProcess(repo, workspace)
    results: dict = {"repo": str(repo), "clients": CLIENTS}
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            await asyncio.wait_for(channel.channel_ready(), 60)
            auth = control_plane_pb2_grpc.AuthServiceStub(channel)
            login = await auth.Login(cp.LoginRequest(username="admin", password=server.password), timeout=60)
            user = (("authorization", f"Bearer {login.token}"),)
            service = control_plane_pb2_grpc.FinetuneServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)

            # 1. StartTask as the queue grows to 250.
            config = json.dumps({"model_name_or_path": "org/model", "train_data_path": "data/train.jsonl"})
            done_at: list[float] = []
            ids: list[str] = []
            started = time.perf_counter()

            async def submitter(count: int) -> None:
                for _ in range(count):
                    reply = await service.StartTask(cp.StartTaskRequest(type="sft", config_json=config),
                                                    metadata=user, timeout=120)
                    ids.append(reply.id)
                    done_at.append(time.perf_counter())

            await asyncio.gather(*(submitter(250 // CLIENTS + (i < 250 % CLIENTS)) for i in range(CLIENTS)))
            done_at.sort()
            results["start_task"] = {
                "first_50_per_s": round(50 / (done_at[49] - started)),
                "last_50_per_s": round(50 / (done_at[-1] - done_at[-51])),
                "overall_per_s": round(250 / (done_at[-1] - started)),
            }

            # 2. GetTask and ListTasks(50) against an empty health Check, 8 clients, 250 queued.
            async def check(request):
                return await health.Check(request, timeout=30)

            async def get_task(request):
                return await service.GetTask(request, metadata=user, timeout=30)

            async def list_tasks(request):
                return await service.ListTasks(request, metadata=user, timeout=30)

            empty_check = health_pb2.HealthCheckRequest()
            check_before = await timed_calls(check, lambda i, n: empty_check, seconds)
            get = await timed_calls(get_task, lambda i, n: cp.GetTaskRequest(task_id=ids[(i * 31 + n) % len(ids)]),
                                    seconds)
            listing = await timed_calls(list_tasks, lambda i, n: cp.ListTasksRequest(limit=50), seconds)
            check_after = await timed_calls(check, lambda i, n: empty_check, seconds)
            check_rate = (check_before["calls_per_s"] + check_after["calls_per_s"]) / 2
            results["rates_250_queued"] = {
                "health_check": {"calls_per_s": round(check_rate), "before": check_before, "after": check_after},
                "get_task": {**get, "of_check": round(get["calls_per_s"] / check_rate, 3)},
                "list_tasks_50": {**listing, "of_check": round(listing["calls_per_s"] / check_rate, 3)},
            }

            # 3. GetTask with 10,000 tasks queued: the newest of them (the end of the queue).
            now = datetime.now(UTC)
            seed(server.database, queued=10_000 - len(ids), ended=0, start=now - timedelta(hours=2))
            newest = (await service.ListTasks(cp.ListTasksRequest(limit=1, status="queued"), metadata=user,
                                              timeout=60)).tasks[0]
            single = await sequential_ms(get_task, cp.GetTaskRequest(task_id=newest.id), 200)
            results["get_task_10k_queued"] = {**single, "queue_position": newest.queue_position}

            # 4. 100,000 tasks: OFFSET and keyset pages at depth 90,000, filtered pages.
            seed(server.database, queued=0, ended=90_000, start=now - timedelta(hours=1))
            total = (await service.ListTasks(cp.ListTasksRequest(limit=1), metadata=user, timeout=60)).total
            first = await service.ListTasks(cp.ListTasksRequest(limit=50), metadata=user, timeout=60)
            keyset = bool(first.next_page_token)  # a server from before page tokens sends none
            pages: dict = {"tasks": total}
            pages["first_page"] = await sequential_ms(list_tasks, cp.ListTasksRequest(limit=50), 30)
            pages["offset_90000"] = await sequential_ms(list_tasks, cp.ListTasksRequest(limit=50, offset=90_000), 30)
            if keyset:
                token = row_at_depth(server.database, 90_000).token()
                pages["keyset_90000"] = await sequential_ms(list_tasks, cp.ListTasksRequest(limit=50, page_token=token), 30)
            for name, request, where in (("status_failed", cp.ListTasksRequest(limit=50, status="failed"),
                                          "WHERE status = 'failed'"),
                                         ("type_dpo", cp.ListTasksRequest(limit=50, type="dpo"), "WHERE type = 'dpo'")):
                pages[f"{name}_first"] = await sequential_ms(list_tasks, request, 30)
                request.offset = 25_000
                pages[f"{name}_offset_25000"] = await sequential_ms(list_tasks, request, 30)
                if keyset:
                    request.offset = 0
                    request.page_token = row_at_depth(server.database, 25_000, where).token()
                    pages[f"{name}_keyset_25000"] = await sequential_ms(list_tasks, request, 30)
            results["pages_100k"] = pages
    finally:
        server.stop()
        shutil.rmtree(workspace, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout to run the control plane from")
    parser.add_argument("--seconds", type=float, default=5.0, help="per rate measurement")
    args = parser.parse_args()
    load_start = load()
    results = asyncio.run(run(args.repo.resolve(), args.seconds))
    results.update(load_start=load_start, load_end=load())
    print(json.dumps(results))
    rates, pages = results["rates_250_queued"], results["pages_100k"]
    print(f"| store RPCs ({args.repo}) | Check {rates['health_check']['calls_per_s']}/s; "
          f"GetTask {rates['get_task']['calls_per_s']}/s p99 {rates['get_task']['p99_ms']} ms "
          f"({rates['get_task']['of_check']:.2f} of Check); ListTasks(50) {rates['list_tasks_50']['calls_per_s']}/s "
          f"p99 {rates['list_tasks_50']['p99_ms']} ms ({rates['list_tasks_50']['of_check']:.2f}); "
          f"GetTask, 10k queued: p50 {results['get_task_10k_queued']['p50_ms']} ms; "
          f"offset 90k page p50 {pages['offset_90000']['p50_ms']} ms; keyset 90k "
          f"{pages.get('keyset_90000', {}).get('p50_ms', 'n/a')} ms; status= {pages['status_failed_first']['p50_ms']} ms, "
          f"type= {pages['type_dpo_first']['p50_ms']} ms; StartTask first/last 50: "
          f"{results['start_task']['first_50_per_s']}/{results['start_task']['last_50_per_s']} per s "
          f"| load {results['load_start']} -> {results['load_end']} |")


if __name__ == "__main__":
    main()
