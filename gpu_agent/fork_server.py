"""`python -m gpu_agent.fork_server --fd FD --workers N --preload MOD,MOD...`: the agent's warm trainer pool.

One process per agent that has imported the training libraries once (torch, transformers, peft, trl, ... and the
trainer modules) and never initialises CUDA, a thread pool or anything else that must not cross a fork. It keeps N
workers forked ahead of time, each already in a session of its own (setsid) and waiting on a pipe for its job. A job
makes the worker what `python -m gpu_agent.supervisor` is on the cold path: the session leader that forks the trainer,
waits for it, and writes exit.json (gpu_agent.supervisor.supervise). The trainer, forked from the worker, runs its
entry module the way `python -m <entry_module> --config FILE` does (gpu_agent.warm_trainer). After each job the pool
forks a new worker.

The agent talks to it over a Unix socket (inherited as FD), one JSON object per line each way: first the server's
`{"ready": ...}`, then request/answer pairs: `{"op": "launch", ...}` -> `{"pid", "start_time"}`, `{"op": "status"}`
-> what it holds (memory, threads, whether CUDA is initialised). End of file on the socket ends the server; its idle
workers see end of file on their pipes and exit; workers that took a job keep running on their own, like any trainer.

The server reaps its workers. One that ended without writing exit.json (killed by a signal) gets it written here from
its wait status, before it is reaped, so an agent polling pid + start time never sees it gone without a status.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Any

from gpu_agent import warm_trainer
from gpu_agent.process_runner import proc_start_time
from gpu_agent.supervisor import supervise, write_exit_file

# What every trainer type imports before its first step (peft alone takes seconds).
DEFAULT_PRELOAD = ("torch", "transformers", "datasets", "peft", "trl", "sentence_transformers",
                   "trainers.common.cli", "trainers.sft.train", "trainers.dpo.train", "trainers.embedding.train",
                   "trainers.kbalign.train", "trainers.export.train")


@dataclass
class Worker:
    pid: int
    start_time: int | None
    job_fd: int  # the write end of its job pipe


def preload(modules: list[str]) -> tuple[list[str], dict[str, str]]:
    """Imports what it can; a module that fails is reported, never fatal (its trainer then imports it itself)."""
    done, failed = [], {}
    for name in modules:
        try:
            importlib.import_module(name)
            done.append(name)
        except Exception as exc:  # noqa: BLE001 - any import error: report it and go on
            failed[name] = f"{type(exc).__name__}: {exc}"
    return done, failed


def memory_bytes(pids: list[int]) -> int:
    """Proportional set size (shared pages split among their sharers) summed over pids; RSS where the kernel has
    no smaps_rollup. The pool's workers share nearly all their pages with the server: RSS would count them N times."""
    total = 0
    for pid in pids:
        for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
            try:
                with open(path) as f:
                    line = next((line for line in f if line.startswith(key)), None)
            except OSError:
                continue
            if line is not None:
                total += int(line.split()[1]) * 1024
                break
    return total


def thread_names() -> list[str]:
    """The OS threads of this process (BLAS pools and allocators included, which Python's threading does not list)."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return names


def cuda_initialized() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


class ForkServer:
    def __init__(self, channel: socket.socket, size: int, preloaded: list[str], failed: dict[str, str]):
        self.channel = channel
        self.size = size
        self.preloaded = preloaded
        self.failed = failed
        self.idle: list[Worker] = []
        self.launched: dict[int, str] = {}  # worker pid -> its exit file
        self._reader = channel.makefile("rb")
        self._wake_r, self._wake_w = os.pipe()

    def serve(self) -> None:
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the selector through the wakeup fd
        self.refill()
        self._send({"ready": True, "pid": os.getpid(), "preloaded": self.preloaded, "failed": self.failed,
                    "cuda_initialized": cuda_initialized()})
        selector = selectors.DefaultSelector()
        selector.register(self.channel, selectors.EVENT_READ, "agent")
        selector.register(self._wake_r, selectors.EVENT_READ, "child")
        try:
            while True:
                for key, _ in selector.select():
                    if key.data == "child":
                        os.read(self._wake_r, 4096)
                        self.reap()
                    elif not self.answer_one():
                        return
                self.refill()
        finally:
            for worker in self.idle:
                os.close(worker.job_fd)  # end of file: the idle worker exits

    def answer_one(self) -> bool:
        line = self._reader.readline()
        if not line:
            return False  # the agent is gone
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "launch":
                answer = self.launch(request)
            elif op == "status":
                answer = self.status()
            else:
                answer = {"error": f"unknown op {op!r}"}
        except Exception as exc:  # noqa: BLE001 - answer with the error; the agent starts the task cold
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        self._send(answer)
        return True

    def launch(self, job: dict[str, Any]) -> dict[str, Any]:
        while True:
            worker = self.idle.pop(0) if self.idle else self.fork_worker()
            payload = json.dumps(job).encode()
            try:
                # The worker is blocked reading: a job bigger than the pipe's buffer just takes turns.
                view = memoryview(payload)
                while view:
                    view = view[os.write(worker.job_fd, view):]
            except BrokenPipeError:  # that idle worker died (someone killed it): take the next one
                os.close(worker.job_fd)
                continue
            os.close(worker.job_fd)
            self.launched[worker.pid] = job["exit_file"]
            return {"pid": worker.pid, "start_time": worker.start_time}

    def status(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "idle_workers": [w.pid for w in self.idle],
                "memory_bytes": memory_bytes([os.getpid(), *(w.pid for w in self.idle)]),
                "cuda_initialized": cuda_initialized(), "python_threads": threading.active_count(),
                "grpc_imported": "grpc" in sys.modules,  # gRPC's threads must not cross a fork: only children use it
                "threads": thread_names(), "preloaded": self.preloaded, "failed": self.failed}

    def refill(self) -> None:
        while len(self.idle) < self.size:
            self.idle.append(self.fork_worker())

    def fork_worker(self) -> Worker:
        read_end, write_end = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # nothing of ours may come out again in a trainer's log
        pid = os.fork()
        if pid == 0:
            _worker_main(read_end)  # never returns
        os.close(read_end)
        return Worker(pid, proc_start_time(pid), write_end)

    def reap(self) -> None:
        """Records how each ended worker ended (where it could not itself), then reaps it."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            exit_file = self.launched.pop(pid, None)
            if exit_file is not None and not os.path.exists(exit_file):
                killed = info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
                try:
                    # The supervisor died before it could say (SIGKILL): what the cold path's Popen would report.
                    write_exit_file(exit_file, -info.si_status if killed else info.si_status)
                except OSError:
                    pass
            for worker in [w for w in self.idle if w.pid == pid]:
                self.idle.remove(worker)
                os.close(worker.job_fd)
            os.waitpid(pid, 0)

    def _send(self, message: dict[str, Any]) -> None:
        self.channel.sendall(json.dumps(message).encode() + b"\n")


def _worker_main(job_fd: int) -> None:
    """A pre-forked worker: its own session at once, then wait for a job; becomes that job's supervisor."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # The server's socket, selector and other workers' pipes: closed here by number. The Python objects that held
        # them stay referenced from the frames below this call and are never collected (a worker leaves by
        # os._exit), so none of them can later close a number the trainer has reused.
        warm_trainer.close_fds_except({0, 1, 2, job_fd})
        with os.fdopen(job_fd, "rb") as pipe:
            raw = pipe.read()
        if not raw:
            os._exit(0)  # the pool closed before it had a job for us
        job = json.loads(raw)
        warm_trainer.take_over_process(job)
        code = supervise(job["exit_file"], lambda: warm_trainer.run_attempt(job))
    except BaseException as exc:  # noqa: BLE001 - a worker must never return into the server's loop
        try:
            os.write(2, f"warm pool worker: {type(exc).__name__}: {exc}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpu_agent.fork_server")
    parser.add_argument("--fd", type=int, required=True, help="the Unix socket to the agent")
    parser.add_argument("--workers", type=int, default=1, help="workers kept forked and ready")
    parser.add_argument("--preload", default=",".join(DEFAULT_PRELOAD), help="modules to import up front")
    args = parser.parse_args(argv)
    # A Ctrl-C at the agent's terminal is for the agent: the server ends when the agent's socket closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = socket.socket(fileno=args.fd)
    # The quiet defaults a cold trainer sets before its heavy imports (some are read at import time).
    from trainers.common.cli import _quiet_env

    _quiet_env()
    preloaded, failed = preload([m for m in (part.strip() for part in args.preload.split(",")) if m])
    ForkServer(channel, max(1, args.workers), preloaded, failed).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
