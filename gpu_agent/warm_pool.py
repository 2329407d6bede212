"""The agent's side of its warm trainer pool (the fork server, gpu_agent.fork_server): starts it, hands it jobs,
asks it how much memory it holds, restarts it when it dies.

Whenever the pool cannot take a job (not ready yet, dead, or the attempt's environment differs from the pool's in a
variable read at import time) `launch` returns None and the agent starts the attempt cold, as before.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

_ANSWER_TIMEOUT = 10.0
# Variables the libraries read when they are imported (the pool imported them under the agent's environment): an
# attempt that sets any of them differently starts cold. Those read later (CUDA_VISIBLE_DEVICES, NCCL_*,
# TOKENIZERS_PARALLELISM, the BUGAGARIC_* of the attempt) may differ.
_IMPORT_TIME_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "DATASETS_", "SENTENCE_TRANSFORMERS_", "TRL_",
                         "PEFT_", "ACCELERATE_", "TORCH", "PYTORCH_", "OMP_", "MKL_", "KMP_", "OPENBLAS_", "GOTO",
                         "NUMEXPR_", "LD_", "PYTHON", "XDG_", "USE_", "ARROW_", "BUGAGARIC_TRAINER_PLUGINS")
# PYTHONPATH: the forked trainer puts the attempt's own on sys.path (gpu_agent.warm_trainer).
_READ_LATER = frozenset({"PYTHONUNBUFFERED", "PYTHONPATH", "HF_HUB_DISABLE_PROGRESS_BARS",
                         "HF_DATASETS_DISABLE_PROGRESS_BARS"})


def import_time_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_IMPORT_TIME_PREFIXES) and k not in _READ_LATER}


class WarmPool:
    # A server that keeps dying (say, an import that crashes) is not restarted in a loop.
    restart_after_seconds = 10.0

    def __init__(self, *, size: int, workspace: Path, preload: str, env: Mapping[str, str]):
        self.size = size
        self.workspace = workspace
        self.preload = preload  # "" -> the fork server's default list
        self.env = dict(env)  # the server's environment (the agent's, less its secrets)
        self.launched = 0  # attempts started warm (for tests and the log)
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._channel: socket.socket | None = None
        self._reader: Any = None
        self._ready = threading.Event()
        self._ready_info: dict[str, Any] = {}
        self._started_at = 0.0
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the server; it takes jobs once its imports are done (until then attempts start cold)."""
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [sys.executable, "-m", "gpu_agent.fork_server", "--fd", str(theirs.fileno()),
                "--workers", str(self.size)]
        if self.preload:
            argv += ["--preload", self.preload]
        try:
            self._process = subprocess.Popen(
                argv, cwd=self.workspace, env={**self.env, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()], close_fds=True)
        finally:
            theirs.close()
        self._channel = ours
        self._reader = ours.makefile("rb")
        self._ready.clear()
        self._started_at = time.monotonic()
        threading.Thread(target=self._wait_ready, args=(self._reader, self._process), daemon=True,
                         name="warm-pool-ready").start()
        log.info("warm pool: fork server pid %d starting (%d worker(s))", self._process.pid, self.size)

    def _wait_ready(self, reader: Any, process: subprocess.Popen[bytes]) -> None:
        try:
            line = reader.readline()
            info = json.loads(line) if line else {}
        except (OSError, ValueError):
            info = {}
        with self._lock:
            if process is not self._process:
                return  # an older server's thread
            if not info.get("ready"):
                log.warning("warm pool: the fork server (pid %d) ended before it was ready; attempts start cold",
                            process.pid)
                self._stop_locked()
                return
            self._ready_info = info
            self._ready.set()
        if info.get("failed"):
            log.warning("warm pool: could not preload %s", info["failed"])
        log.info("warm pool ready: fork server pid %d preloaded %s", process.pid, ", ".join(info.get("preloaded", [])))

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    @property
    def server_pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def close(self) -> None:
        """Ends the server (its idle workers follow); attempts it started keep running in their own sessions."""
        with self._lock:
            self._closed = True
            self._stop_locked()

    def _stop_locked(self) -> None:
        was_ready = self._ready.is_set()
        self._ready.clear()
        if self._channel is not None:
            try:
                self._channel.shutdown(socket.SHUT_RDWR)  # end of file: the server exits
            except OSError:
                pass
            self._reader.close()  # the socket's descriptor closes only with its file object
            self._channel.close()
            self._channel = None
        process, self._process = self._process, None
        if process is not None:
            if not was_ready:
                process.kill()  # still importing: it reads its socket only once that is done
            try:
                process.wait(5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # -- requests -------------------------------------------------------------------------------------------

    def launch(self, *, entry_module: str, args: list[str], cwd: Path, env: Mapping[str, str], stdout: Path,
               stderr: Path, exit_file: Path, input_plan: Path | None = None) -> tuple[int, int | None] | None:
        """(pid, start time) of the attempt's supervisor forked from the pool, or None: start it cold."""
        if import_time_env(env) != import_time_env(self.env):
            return None
        answer = self._request({"op": "launch", "entry_module": entry_module, "args": args, "cwd": str(cwd),
                                "env": dict(env), "stdout": str(stdout), "stderr": str(stderr),
                                "exit_file": str(exit_file), "input_plan": str(input_plan) if input_plan else ""})
        if answer is None or "pid" not in answer:
            return None
        self.launched += 1
        return int(answer["pid"]), answer.get("start_time")

    def status(self) -> dict[str, Any] | None:
        """What the server says it holds (memory, idle workers, threads, whether CUDA is initialised); None while it
        is not ready."""
        return self._request({"op": "status"})

    def memory_bytes(self) -> int:
        status = self.status()
        return int(status.get("memory_bytes", 0)) if status else 0

    def _request(self, message: dict[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            if self._closed:
                return None
            if self._process is None or self._process.poll() is not None:
                self._restart_locked()
                return None
            if not self._ready.is_set():
                return None
            try:
                self._channel.settimeout(_ANSWER_TIMEOUT)
                self._channel.sendall(json.dumps(message).encode() + b"\n")
                line = self._reader.readline()
                if not line:
                    raise ConnectionError("the fork server closed its socket")
                answer = json.loads(line)
            except (OSError, ValueError) as exc:
                log.warning("warm pool: fork server pid %d failed (%s); restarting it, attempts start cold meanwhile",
                            self._process.pid, exc)
                self._stop_locked()
                self._restart_locked()
                return None
            if "error" in answer:
                log.warning("warm pool: %s", answer["error"])
            return answer

    def _restart_locked(self) -> None:
        if time.monotonic() - self._started_at < self.restart_after_seconds:
            return
        if self._process is not None:
            log.warning("warm pool: fork server pid %d is gone; restarting it", self._process.pid)
        self._stop_locked()
        self._start_locked()
