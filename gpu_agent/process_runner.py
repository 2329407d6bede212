"""Starts a trainer under the supervisor in its own session, and signals its process tree.

Every attempt of a task has a directory of its own, `<agent_dir>/tasks/<task_id>/attempt-<n>/`, holding
config.json, stdout.log, stderr.log, metrics.jsonl, spool.jsonl, state.json and exit.json. The trainer writes to files
(not pipes) and lives in its own session under `gpu_agent.supervisor`, so it keeps running, keeps its output, and gets
its exit status recorded (exit.json) when the agent stops, restarts or dies; `state.json` holds what a restarted agent
needs to find it again.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from gpu_agent.warm_pool import WarmPool

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
METRICS_FILE = "metrics.jsonl"
STATE_FILE = "state.json"
EXIT_FILE = "exit.json"
ATTEMPT_PREFIX = "attempt-"
# Never handed to a trainer (user code runs there): the fetch step gets the token in a file instead.
SECRET_ENV = ("BUGAGARIC_CLUSTER_TOKEN", "BUGAGARIC_ADMIN_PASSWORD")


def environment_without_secrets(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus `extra`, less the agent's own credentials: what a child that reads user data
    (a trainer, a dry run) gets."""
    env = {**os.environ, **(extra or {})}
    for name in SECRET_ENV:
        env.pop(name, None)
    return env


def task_dir(agent_dir: Path, task_id: str) -> Path:
    return agent_dir / "tasks" / task_id


def attempt_dir(agent_dir: Path, task_id: str, attempt: int) -> Path:
    return task_dir(agent_dir, task_id) / f"{ATTEMPT_PREFIX}{attempt}"


def attempt_number(directory: Path) -> int | None:
    name = directory.name
    if name.startswith(ATTEMPT_PREFIX) and name[len(ATTEMPT_PREFIX):].isdigit():
        return int(name[len(ATTEMPT_PREFIX):])
    return None


def attempt_dirs(agent_dir: Path, task_id: str) -> list[Path]:
    """The task's attempt directories, oldest attempt first."""
    found = [(attempt_number(d), d) for d in task_dir(agent_dir, task_id).glob(f"{ATTEMPT_PREFIX}*")]
    return [d for n, d in sorted((n, d) for n, d in found if n is not None and d.is_dir())]


def read_exit_file(directory: Path) -> int | None:
    """The trainer's exit code as the supervisor recorded it (negative: killed by that signal); None if absent."""
    try:
        return int(json.loads((directory / EXIT_FILE).read_text(encoding="utf-8"))["exit_code"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class TrainerProcess:
    pid: int  # the supervisor's pid: the session and process-group leader
    pgid: int
    start_time: int | None  # /proc/<pid>/stat starttime: tells the supervisor apart from a later process with its pid
    popen: subprocess.Popen[bytes] | None  # None once re-adopted by a restarted agent (not a child any more)
    directory: Path | None = field(default=None)  # where exit.json appears
    # Started from the warm pool: the fork server (this pid) is its parent, and writes exit.json for a supervisor that
    # died without it before reaping it; until then its zombie still counts as running.
    reaper: int | None = field(default=None)

    def running(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        if self.reaper is not None and self.start_time is not None and awaiting_reaper(self.pid, self.start_time,
                                                                                        self.reaper):
            return True
        # Not our child: poll its pid (a zombie waiting for init to reap it counts as gone). Without a start time
        # a live pid may be anybody's: count it as gone rather than signal a stranger.
        return self.start_time is not None and self.pid > 0 and process_alive(self.pid, self.start_time)

    def exit_status(self) -> int | None:
        """Once it has ended: the trainer's exit code from the exit file, else (the supervisor itself killed) the
        supervisor's own status where we are its parent; None when nobody can tell."""
        code = read_exit_file(self.directory) if self.directory is not None else None
        if code is not None:
            return code
        return self.popen.poll() if self.popen is not None else None

    def poll(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while it runs; -1 when it ended unknowably."""
        if self.running():
            return None
        code = self.exit_status()
        return -1 if code is None else code

    def signal_group(self, sig: int) -> bool:
        """Sends sig to the whole tree: the process group (supervisor, trainer, its children) and every descendant
        that moved to a session of its own (torchrun's workers). False if none of them is left."""
        sent = False
        # Those in the group get it from killpg: signal each process once.
        for pid in descendants(self.pid, outside_group=self.pgid) if self.running() else []:
            try:
                os.kill(pid, sig)
                sent = True
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.killpg(self.pgid, sig)
            sent = True
        except ProcessLookupError:
            pass
        except PermissionError:
            log.warning("not allowed to signal process group %d", self.pgid)
        return sent

    def group_alive(self) -> bool:
        """Whether a live (not zombie) process is left in the group or below the supervisor."""
        return group_has_live_members(self.pgid) or (self.running() and bool(descendants(self.pid)))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def trainer_argv(entry_module: str, config_path: Path, nproc: int) -> list[str]:
    """`python -m <entry_module> --config FILE`; data-parallel over nproc > 1 devices through torchrun."""
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                "--master_addr=127.0.0.1", f"--master_port={free_port()}",
                "-m", entry_module, "--config", str(config_path)]
    return [sys.executable, "-m", entry_module, "--config", str(config_path)]


def launch(
    *,
    task_id: str,
    entry_module: str,
    config_json: str,
    directory: Path,
    workspace: Path,
    extra_env: Mapping[str, str] | None = None,
    nproc: int = 1,
    before_trainer: Sequence[str] = (),
    input_plan: Path | None = None,
    warm_pool: WarmPool | None = None,
    launcher_argv: Sequence[str] = (),
) -> TrainerProcess:
    """Starts `before_trainer + trainer argv` under the supervisor (before_trainer: the fetch step of input_plan,
    which execs the trainer once the inputs are in place). A one-device attempt is forked from the warm pool where
    it has one ready (its trainer process runs the fetch step itself); anything else starts cold. `launcher_argv`:
    the trainer's command when it is not the default one (one node of a multi-node attempt: gpu_agent.gang_launch)."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / CONFIG_FILE
    config_path.write_text(config_json, encoding="utf-8")
    env = environment_without_secrets(extra_env)
    # Set after the request's env: the agent tails exactly these paths.
    env.update(
        {
            "BUGAGARIC_WORKSPACE": str(workspace),
            "BUGAGARIC_METRICS_FILE": str(directory / METRICS_FILE),
            "BUGAGARIC_TASK_ID": task_id,
            "PYTHONUNBUFFERED": "1",
        }
    )
    if nproc > 1:
        # What torchrun sets for each worker anyway; set here, it spares every log its multi-line banner about it.
        env.setdefault("OMP_NUM_THREADS", "1")
    if warm_pool is not None and nproc == 1 and not launcher_argv and (not before_trainer or input_plan is not None):
        forked = warm_pool.launch(entry_module=entry_module, args=["--config", str(config_path)], cwd=workspace,
                                  env=env, stdout=directory / STDOUT_FILE, stderr=directory / STDERR_FILE,
                                  exit_file=directory / EXIT_FILE, input_plan=input_plan)
        if forked is not None:
            pid, start_time = forked
            log.info("task %s: forked supervisor pid %d from the warm pool: %s --config %s", task_id, pid,
                     entry_module, config_path)
            return TrainerProcess(pid=pid, pgid=pid, start_time=start_time, popen=None, directory=directory,
                                  reaper=warm_pool.server_pid)
    argv = list(launcher_argv) or trainer_argv(entry_module, config_path, nproc)
    supervised = [sys.executable, "-m", "gpu_agent.supervisor", "--exit-file", str(directory / EXIT_FILE), "--",
                  *before_trainer, *argv]
    # Append mode: a relaunch never truncates what a reader may already have spooled.
    with open(directory / STDOUT_FILE, "ab") as out, open(directory / STDERR_FILE, "ab") as err:
        popen = subprocess.Popen(
            supervised,
            cwd=workspace,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # own session and process group: signalled as one, outlives the agent
            close_fds=True,
        )
    log.info("task %s: started supervisor pid %d: %s", task_id, popen.pid, " ".join([*before_trainer, *argv]))
    return TrainerProcess(pid=popen.pid, pgid=popen.pid, start_time=proc_start_time(popen.pid), popen=popen,
                          directory=directory)


def _stat_fields(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat from field 3 on (state, ppid, pgrp, ...); None where the process or /proc is missing."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks after boot); None where /proc is missing."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def process_exists(pid: int, start_time: int | None) -> bool:
    """The process with this pid and start time exists, zombies included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start_time is None or proc_start_time(pid) == start_time


def awaiting_reaper(pid: int, start_time: int, reaper: int) -> bool:
    """pid (with this start time) has ended and waits for its parent, reaper, to reap it."""
    if not process_exists(pid, start_time):
        return False
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] == "Z" and int(fields[1]) == reaper


def process_alive(pid: int, start_time: int | None) -> bool:
    """Like process_exists, but a zombie (ended, not reaped yet) counts as gone."""
    if not process_exists(pid, start_time):
        return False
    fields = _stat_fields(pid)
    return not (fields and fields[0] in ("Z", "X"))


def _proc_table() -> list[tuple[int, str, int, int]]:
    """(pid, state, ppid, pgid) of every process /proc shows."""
    table = []
    proc = Path("/proc")
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields:
            table.append((int(entry.name), fields[0], int(fields[1]), int(fields[2])))
    return table


def descendants(root: int, outside_group: int | None = None) -> list[int]:
    """Every live (not zombie) process below root, parents first; only those not in outside_group if given."""
    children: dict[int, list[tuple[int, int]]] = {}
    for pid, state, ppid, pgid in _proc_table():
        if state not in ("Z", "X"):
            children.setdefault(ppid, []).append((pid, pgid))
    out, todo = [], [root]
    while todo:
        for child, pgid in children.get(todo.pop(), []):
            if outside_group is None or pgid != outside_group:
                out.append(child)
            todo.append(child)
    return out


def group_has_live_members(pgid: int) -> bool:
    """killpg(pgid, 0) also counts zombies that init has not reaped yet; /proc tells them apart."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not Path("/proc").is_dir():
        return True
    return any(group == pgid and state not in ("Z", "X") for _, state, _, group in _proc_table())


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown"
        return f"killed by signal {-code} ({name})"
    return f"exited with code {code}"


def write_state(directory: Path, state: dict[str, Any]) -> None:
    """Atomically replaces state.json (a crash never leaves half a file)."""
    state = {**state, "updated_at": time.time()}
    tmp = directory / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
    os.replace(tmp, directory / STATE_FILE)


def read_state(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def state_files(agent_dir: Path) -> list[Path]:
    """Every attempt's state.json under agent_dir (and the flat task dirs of agents from before attempts)."""
    tasks = agent_dir / "tasks"
    return sorted([*tasks.glob(f"*/{ATTEMPT_PREFIX}*/{STATE_FILE}"), *tasks.glob(f"*/{STATE_FILE}")])


def kill_leftover_trainers(agent_dir: Path) -> list[int]:
    """SIGKILLs the process tree of every trainer under agent_dir that is still alive; returns their pgids.

    Trainers run in sessions of their own so that they outlive an agent restart; a full system stop (and a test
    suite's teardown) uses this so that none outlives the system. The start time in state.json guards against a
    reused pid.
    """
    killed = []
    for path in state_files(agent_dir):
        state = read_state(path.parent)
        if not state or not state.get("pid"):
            continue
        pid = int(state["pid"])
        pgid = int(state.get("pgid") or pid)
        # Only while the leader itself exists (same start time): a group number alone may have been reused.
        if process_exists(pid, state.get("start_time")):
            for victim in descendants(pid):
                try:
                    os.kill(victim, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                os.killpg(pgid, signal.SIGKILL)
                killed.append(pgid)
            except (ProcessLookupError, PermissionError):
                pass
    return killed
