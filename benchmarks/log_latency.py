"""Log latency: a trainer printing a time-stamped line every ~20 ms; printed -> seen by a gRPC StreamTaskLogs client
(straight to the control plane) and by an SSE client (through the gateway), both following from before the first line.
All processes are on this machine, so the trainer's time.time() and the clients' are the same clock.

    .venv/bin/python benchmarks/log_latency.py [--lines 500] [--interval 0.02]

"Before" (the landed code): `git worktree add /tmp/before-logs HEAD`, copy benchmarks/_log_bench.py, this script and
tests/helpers/log_printer.py into it, and run the script from there with this venv.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import grpc
import httpx

from _log_bench import TERMINAL, load, log_system, percentile, submit_printer
from _common import wait
from protos import control_plane_pb2, control_plane_pb2_grpc
from protos.auth import bearer_metadata


def follow_grpc(stack, task_id: str, n: int, out: list[float]) -> None:
    with grpc.insecure_channel(stack.control_plane_address) as channel:
        stub = control_plane_pb2_grpc.FinetuneServiceStub(channel)
        request = control_plane_pb2.StreamTaskLogsRequest(task_id=task_id, after_seq=0, follow=True)
        for line in stub.StreamTaskLogs(request, timeout=600, metadata=bearer_metadata(stack.admin_token)):
            out.append(time.time() - float(line.text.split()[1]))
            if len(out) >= n:
                return


def follow_sse(stack, task_id: str, n: int, out: list[float]) -> None:
    headers = {"authorization": f"Bearer {stack.admin_token}", "accept": "text/event-stream"}
    with httpx.Client(base_url=stack.base_url, timeout=600, headers=headers) as client:
        with client.stream("GET", f"/api/finetune/tasks/{task_id}/logs/stream") as response:
            for raw in response.iter_lines():
                if not raw.startswith("data:"):
                    continue
                body = json.loads(raw[5:])
                if "text" not in body:
                    return  # the end event
                out.append(time.time() - float(body["text"].split()[1]))
                if len(out) >= n:
                    return


def summary(delays: list[float]) -> dict:
    ms = [d * 1000 for d in delays]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 1), "p99_ms": round(percentile(ms, 99), 1),
            "max_ms": round(max(ms), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=500)
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args()
    load_start = load()
    with log_system() as (stack, client):
        # The trainer waits 3 s before its first line: both clients are following by then.
        task = submit_printer(client, lines=args.lines, interval=args.interval, delay=3.0)
        grpc_delays: list[float] = []
        sse_delays: list[float] = []
        threads = [threading.Thread(target=follow_grpc, args=(stack, task["id"], args.lines, grpc_delays)),
                   threading.Thread(target=follow_sse, args=(stack, task["id"], args.lines, sse_delays))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wait(client, task["id"], TERMINAL)
    result = {"figure": "log latency", "interval_s": args.interval, "grpc": summary(grpc_delays),
              "sse": summary(sse_delays), "load_start": load_start, "load_end": load()}
    print(json.dumps(result))
    print(f"| printed -> seen, a line every {args.interval * 1000:.0f} ms | gRPC p50 {result['grpc']['p50_ms']} ms, "
          f"p99 {result['grpc']['p99_ms']} ms | SSE p50 {result['sse']['p50_ms']} ms, p99 {result['sse']['p99_ms']} ms | "
          f"load {load_start} -> {result['load_end']} |")


if __name__ == "__main__":
    main()
