"""`python -m gpu_agent.supervisor --exit-file FILE -- ARGV...`: runs ARGV and records how it ended.

The agent starts every trainer under this tiny process, in a session of its own; it is the session and process-group
leader, so the agent can still signal the whole group. It:
- ignores SIGTERM and SIGINT itself (the group's signal reaches the trainer directly; the supervisor stays to record
  the outcome), while the trainer starts with the default handlers;
- is a child subreaper where Linux allows it, so processes the trainer leaves behind (torchrun's workers live in
  sessions of their own) stay its descendants instead of going to init, and the agent can find them through /proc;
- waits for the trainer, SIGKILLs whatever descendants are left (they would only hold the devices), writes
  `{"exit_code": N}` to the exit file atomically (N < 0: killed by signal -N), and exits with the trainer's code
  (128 + the signal for a killed trainer).
The exit file, not this process's own status, is the source of truth: it outlives the agent that started it.
The warm trainer pool's workers (gpu_agent.fork_server) do the same through `supervise`, their trainer forked rather
than exec'd.

Imports only the standard library (and little of it): it runs once per task.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Callable

PR_SET_CHILD_SUBREAPER = 36
_LEFTOVER_WAIT_SECONDS = 5.0


def _become_subreaper() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except Exception:  # not Linux, or no prctl: orphans go to init as usual
        pass


def _descendants(root: int) -> list[int]:
    """Every live process below root, found through /proc (parents first)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        if fields[0] in ("Z", "X"):
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def write_exit_file(path: str, code: int) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({"exit_code": code, "time": time.time()}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _parse(argv: list[str]) -> tuple[str, list[str]]:
    usage = "usage: python -m gpu_agent.supervisor --exit-file FILE -- ARGV..."
    if len(argv) < 4 or argv[0] != "--exit-file" or argv[2] != "--":
        sys.stderr.write(usage + "\n")
        raise SystemExit(2)
    return argv[1], argv[3:]


def main(argv: list[str] | None = None) -> int:
    exit_file, command = _parse(sys.argv[1:] if argv is None else argv)
    return supervise(exit_file, lambda: _exec(command))


def _exec(command: list[str]) -> None:
    os.execvp(command[0], command)


def supervise(exit_file: str, run_child: Callable[[], object]) -> int:
    """Forks the trainer, which runs `run_child` (it execs, or runs the trainer and exits itself), waits for it and
    records how it ended; returns this process's own exit code. Shared by the cold path (`main`, which execs) and the
    warm pool's forked supervisors (gpu_agent.fork_server, which runs the trainer's module in the forked child)."""
    # Ignore before forking, so a signal that comes at once cannot take the supervisor down; the child restores them.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    _become_subreaper()
    pid = os.fork()
    if pid == 0:
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            run_child()
        except BaseException as exc:  # noqa: BLE001 - whatever it is, the child must not return into main()
            try:
                os.write(2, f"supervisor: could not run the trainer: {exc}\n".encode())
            finally:
                os._exit(127)
        os._exit(127)  # run_child never returns: it execs or exits
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)  # also reaps orphans handed to this subreaper
        except InterruptedError:
            continue
        except ChildProcessError:  # cannot happen while the child is unreaped; be safe
            status = 127 << 8
            break
        if reaped == pid:
            break
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    _kill_leftovers()
    write_exit_file(exit_file, code)
    return 128 - code if code < 0 else code


def _kill_leftovers() -> None:
    me = os.getpid()
    for victim in _descendants(me):
        try:
            os.kill(victim, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + _LEFTOVER_WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            reaped, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if reaped == 0:
            if not _descendants(me):
                return
            time.sleep(0.02)


if __name__ == "__main__":
    sys.exit(main())
