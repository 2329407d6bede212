"""The interface every execution backend implements, and the remote-run half that Kubernetes and Ray share.

A backend starts one attempt (`launch`) and returns a RunHandle: what gpu_agent.task_run.TaskRun watches and stops.
The handle keeps the surface TaskRun already uses on a local process (running(), exit_status(), signal_group(),
group_alive(), pid/pgid/start_time), so TaskRun is the same for every backend; a remote handle maps SIGTERM to the
engine's graceful stop and SIGKILL to its forced one.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence, runtime_checkable

from gpu_agent.process_runner import CONFIG_FILE, EXIT_FILE, SECRET_ENV, read_exit_file
from gpu_agent.supervisor import write_exit_file

if TYPE_CHECKING:
    from gpu_agent.warm_pool import WarmPool

log = logging.getLogger(__name__)

# What a backend that is not local keeps in the attempt directory to find its run again after an agent restart.
REMOTE_STATE_FILE = "remote.json"
# CUDA_VISIBLE_DEVICES names this host's devices; on a cluster the engine picks the devices and sets its own.
HOST_DEVICE_ENV = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")


@dataclass(frozen=True)
class LaunchSpec:
    """One attempt to start: what gpu_agent.process_runner.launch takes."""

    task_id: str
    entry_module: str  # e.g. trainers.sft
    config_json: str
    directory: Path  # the attempt directory
    workspace: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)  # the task's env (and what the agent adds to it)
    nproc: int = 1  # devices held: processes of a data-parallel run
    before_trainer: Sequence[str] = ()  # the input fetch step, which execs the trainer argv after it
    launcher_argv: Sequence[str] = ()  # a gang node's torchrun command (local backend only)
    input_plan: Path | None = None
    warm_pool: WarmPool | None = None  # local backend only
    device_kind: str = "gpu"  # the agent's inventory kind: "gpu" or "cpu"


@runtime_checkable
class RunHandle(Protocol):
    """A started attempt, as TaskRun sees it."""

    pid: int  # 0 for a remote run
    pgid: int
    start_time: int | None
    reaper: int | None

    def running(self) -> bool: ...

    def exit_status(self) -> int | None:
        """Once ended: the exit code exit.json holds (negative: killed by that signal), None when nobody knows."""

    def poll(self) -> int | None: ...

    def signal_group(self, sig: int) -> bool:
        """SIGTERM: stop gracefully; SIGKILL: stop now. False when nothing was left to signal."""

    def group_alive(self) -> bool: ...

    def request_stop(self, grace: float | None = None) -> None: ...

    def kill(self) -> None: ...

    def describe(self) -> str: ...


class ExecutionBackend(ABC):
    name: str = ""

    @abstractmethod
    def launch(self, spec: LaunchSpec) -> RunHandle:
        """Starts the attempt; raises OSError (or a subclass) when it could not be started."""

    def adopt(self, directory: Path, default_grace: float) -> RunHandle | None:
        """After an agent restart: the handle of the run this backend left in `directory`, or None where it keeps
        nothing to find it by (the local backend: state.json's pid is enough)."""
        return None


def remote_env(spec: LaunchSpec) -> dict[str, str]:
    """The environment of a trainer on a cluster: the task's own env and what the agent sets, never the agent's
    environment (its paths and credentials mean nothing there, or too much)."""
    env = {key: str(value) for key, value in spec.extra_env.items()
           if key not in SECRET_ENV and key not in HOST_DEVICE_ENV}
    env.update({
        "BUGAGARIC_WORKSPACE": str(spec.workspace),
        "BUGAGARIC_METRICS_FILE": "-",  # metric events as prefixed stdout lines (trainers.common.metrics)
        "BUGAGARIC_TASK_ID": spec.task_id,
        "PYTHONUNBUFFERED": "1",
    })
    if spec.nproc > 1:
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def remote_argv(spec: LaunchSpec, python: str) -> list[str]:
    """The attempt's command on a cluster node: `python` there, not this agent's interpreter path; several devices run
    under torchrun on a port it picks itself (--standalone)."""
    if spec.launcher_argv:
        # A gang's rendezvous is on an agent's host; a cluster engine places its ranks itself.
        raise OSError("a multi-node gang runs on agents with BUGAGARIC_AGENT_BACKEND=local only")
    config_path = str(spec.directory / CONFIG_FILE)
    if spec.nproc > 1:
        trainer = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={spec.nproc}",
                   "-m", spec.entry_module, "--config", config_path]
    else:
        trainer = [python, "-m", spec.entry_module, "--config", config_path]
    fetch = [python if part == sys.executable else part for part in spec.before_trainer]
    return [*fetch, *trainer]


def write_config(spec: LaunchSpec) -> None:
    spec.directory.mkdir(parents=True, exist_ok=True)
    (spec.directory / CONFIG_FILE).write_text(spec.config_json, encoding="utf-8")


def write_remote_state(directory: Path, state: dict[str, Any]) -> None:
    tmp = directory / (REMOTE_STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, directory / REMOTE_STATE_FILE)


def read_remote_state(directory: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((directory / REMOTE_STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


class RemoteRun(ABC):
    """A run on a cluster engine, followed by a thread of its own: it pumps the engine's log stream into the attempt's
    files (gpu_agent.backends.log_demux) and writes exit.json once the engine reports the end. It counts as running
    until both are done, so TaskRun's final drain finds every line already on disk."""

    pid = 0
    pgid = 0
    start_time = None
    reaper = None

    def __init__(self, directory: Path, default_grace: float):
        self.directory = directory
        self.default_grace = default_grace
        self.stop_requested = False
        self.killed = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"remote-{self.directory.parent.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        code: int | None = None
        try:
            code = self.follow()
        except Exception as exc:  # noqa: BLE001 - whatever failed, the attempt must end with a status
            log.exception("%s: following the run failed", self.describe())
            self.note_error(f"the agent lost track of {self.describe()}: {exc}")
        finally:
            if code is not None:
                write_exit_file(str(self.directory / EXIT_FILE), code)
            self._done.set()

    @abstractmethod
    def follow(self) -> int | None:
        """Pumps the run's output into the attempt's files until it ends; returns its exit code."""

    @abstractmethod
    def _stop(self, grace: float) -> None:
        """Asks the engine to stop the run: SIGTERM, then SIGKILL after `grace` where the engine allows."""

    @abstractmethod
    def _kill(self) -> None:
        """Asks the engine to end the run now."""

    @abstractmethod
    def describe(self) -> str: ...

    def note_error(self, text: str) -> None:
        """A line for the task's error tail (stderr.log): what the engine said went wrong."""
        with open(self.directory / "stderr.log", "a", encoding="utf-8") as err:
            err.write(text.rstrip("\n") + "\n")

    # -- the RunHandle surface TaskRun uses ------------------------------------------------------------------

    def running(self) -> bool:
        return not self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def exit_status(self) -> int | None:
        return read_exit_file(self.directory)

    def poll(self) -> int | None:
        if self.running():
            return None
        code = self.exit_status()
        return -1 if code is None else code

    def request_stop(self, grace: float | None = None) -> None:
        self.stop_requested = True
        # The engine's API call may block on the network: never on the agent's event loop.
        grace = self.default_grace if grace is None else grace
        threading.Thread(target=self._call, args=(self._stop, grace), daemon=True).start()

    def kill(self) -> None:
        self.stop_requested = self.killed = True
        threading.Thread(target=self._call, args=(self._kill,), daemon=True).start()

    def _call(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - logged; TaskRun's grace timer still escalates
            log.exception("%s: the stop request failed", self.describe())

    def signal_group(self, sig: int) -> bool:
        if not self.running():
            return False
        if sig == signal.SIGKILL:
            self.kill()
        else:
            self.request_stop()
        return True

    def group_alive(self) -> bool:
        return False  # the engine cleans up the processes of a run it ended
