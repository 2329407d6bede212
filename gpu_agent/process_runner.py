"""Starts a trainer as `python -m <entry_module> --config FILE` in its own session, and signals its process group.

The trainer writes to files (not pipes) in its task dir, and lives in its own session, so it keeps running, and
keeps its output, when the agent stops or restarts; `state.json` holds what a restarted agent needs to find it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
METRICS_FILE = "metrics.jsonl"
STATE_FILE = "state.json"


def task_dir(agent_dir: Path, task_id: str) -> Path:
    return agent_dir / "tasks" / task_id


@dataclass
class TrainerProcess:
    pid: int
    pgid: int
    start_time: int | None  # /proc/<pid>/stat starttime: tells the trainer apart from a later process with its pid
    popen: subprocess.Popen[bytes] | None  # None once re-adopted by a restarted agent (not a child any more)

    def poll(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while it runs."""
        if self.popen is not None:
            return self.popen.poll()
        # Not our child: we can only tell it is gone, not how it ended.
        return None if process_alive(self.pid, self.start_time) else -1

    def signal_group(self, sig: int) -> bool:
        """Sends sig to the whole process group (the trainer, its workers, their children). False if none is left."""
        try:
            os.killpg(self.pgid, sig)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            log.warning("not allowed to signal process group %d", self.pgid)
            return False

    def group_alive(self) -> bool:
        """Whether a live (not zombie) process is left in the group."""
        return group_has_live_members(self.pgid)


def launch(
    *,
    task_id: str,
    entry_module: str,
    config_json: str,
    directory: Path,
    workspace: Path,
    extra_env: Mapping[str, str] | None = None,
) -> TrainerProcess:
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / CONFIG_FILE
    config_path.write_text(config_json, encoding="utf-8")
    env = dict(os.environ)
    env.update(extra_env or {})
    # Set after the request's env: the agent tails exactly these paths.
    env.update(
        {
            "BUGAGARIC_WORKSPACE": str(workspace),
            "BUGAGARIC_METRICS_FILE": str(directory / METRICS_FILE),
            "BUGAGARIC_TASK_ID": task_id,
            "PYTHONUNBUFFERED": "1",
        }
    )
    argv = [sys.executable, "-m", entry_module, "--config", str(config_path)]
    # Append mode: a relaunch never truncates what a reader may already have spooled.
    with open(directory / STDOUT_FILE, "ab") as out, open(directory / STDERR_FILE, "ab") as err:
        popen = subprocess.Popen(
            argv,
            cwd=workspace,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # own session and process group: signalled as one, outlives the agent
            close_fds=True,
        )
    log.info("task %s: started pid %d: %s", task_id, popen.pid, " ".join(argv))
    return TrainerProcess(pid=popen.pid, pgid=popen.pid, start_time=proc_start_time(popen.pid), popen=popen)


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks after boot); None where /proc is missing."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return int(raw[raw.rindex(")") + 2 :].split()[19])


def process_alive(pid: int, start_time: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start_time is None or proc_start_time(pid) == start_time


def group_has_live_members(pgid: int) -> bool:
    """killpg(pgid, 0) also counts zombies that init has not reaped yet; /proc tells them apart."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is the state (field 3), fields[2] the process group (field 5).
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


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


def kill_leftover_trainers(agent_dir: Path) -> list[int]:
    """SIGKILLs the process group of every trainer under agent_dir that is still alive; returns their pgids.

    Trainers run in sessions of their own so that they outlive an agent restart; a full system stop (and a test
    suite's teardown) uses this so that none outlives the system. The start time in state.json guards against a
    reused pid.
    """
    killed = []
    for directory in sorted((agent_dir / "tasks").glob("*/")):
        state = read_state(directory)
        if not state or not state.get("pid"):
            continue
        pgid = int(state.get("pgid") or state["pid"])
        # Only while the leader itself lives (same start time): a group number alone may have been reused.
        if process_alive(int(state["pid"]), state.get("start_time")):
            try:
                os.killpg(pgid, signal.SIGKILL)
                killed.append(pgid)
            except (ProcessLookupError, PermissionError):
                pass
    return killed
