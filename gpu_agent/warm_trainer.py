"""What a warm pool worker does to become a task's process, and how its forked child runs the trainer the way
`python -m <entry_module> --config FILE` would.

The worker (the attempt's supervisor) takes over the job's working directory, environment and output files; the
trainer forked from it then resets what the fork server changed (signal handlers), reseeds the random generators it
shares with every other fork, and runs the entry module as `__main__` with the same argv, so the trainer code cannot
tell the difference: `trainers.<type>.__main__` calls `trainers.common.cli.main`, which installs graceful_stop.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import signal
import socket
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, NoReturn


_HELD_INPUTS: list[int] = []  # descriptors holding the cache locks on this attempt's inputs, kept to the end
# The server's own PYTHONPATH, as its interpreter put it on sys.path at start-up (imported there before any fork).
_SERVER_PYTHONPATH = os.environ.get("PYTHONPATH", "")


def _pythonpath(value: str) -> list[str]:
    return [os.path.abspath(entry) for entry in value.split(os.pathsep) if entry]


def close_fds_except(keep: set[int]) -> None:
    """Closes every inherited descriptor but keep (the server's socket, other workers' pipes, library handles)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # e.g. the directory listing's own descriptor, already closed


def take_over_process(job: dict[str, Any]) -> None:
    """The job's stdin (/dev/null), stdout and stderr files (appended to, exactly where the cold path writes them),
    working directory and environment (replacing the server's)."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for target, path in ((1, job["stdout"]), (2, job["stderr"])):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])  # putenv too: C libraries read the new environment


def run_attempt(job: dict[str, Any]) -> NoReturn:
    """In the forked trainer: the fetch step where the attempt has inputs (what `python -m gpu_agent.input_fetch`
    does before it execs the trainer), then the trainer's entry module."""
    if job.get("input_plan"):
        code, env = _fetch_inputs_apart(Path(job["input_plan"]))
        if code:
            _finish()
            os._exit(code)
        os.environ.clear()
        os.environ.update(env)
    run_entry_module(job["entry_module"], job["args"])


def _fetch_inputs_apart(plan: Path) -> tuple[int, dict[str, str]]:
    """Runs the fetch step in a process of its own, forked from this one: the cluster token it reads must never be
    in the trainer's memory (on the cold path the exec into the trainer wipes it). It sends back the trainer's
    environment and the descriptors holding the cache locks on the inputs (an flock belongs to the open file, so the
    locks last as long as this process keeps them, as across the cold path's exec); (exit code, environment)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ours.close()
            from gpu_agent import input_fetch  # gRPC only here, in a short-lived child: never in the fork server

            prepared = input_fetch.prepare(plan)
            if isinstance(prepared, int):
                message, fds = {"exit_code": prepared}, []
            else:
                held, env = prepared
                message, fds = {"exit_code": 0, "env": env}, [item.lock_fd for item in held]
            socket.send_fds(theirs, [json.dumps(message).encode()], fds)
            code = 0
        except BaseException:  # noqa: BLE001 - report it as the interpreter would, then end this child only
            traceback.print_exc()
        finally:
            _finish()
            os._exit(code)
    theirs.close()
    try:
        raw, fds, _, _ = socket.recv_fds(ours, 1 << 20, 1024)
    finally:
        ours.close()
        os.waitpid(pid, 0)
    if not raw:
        return 1, {}  # the fetch step died (its traceback is in stderr.log)
    _HELD_INPUTS.extend(fds)
    message = json.loads(raw)
    return int(message["exit_code"]), message.get("env", {})


def run_entry_module(entry_module: str, args: list[str]) -> NoReturn:
    """In the forked trainer: runs `entry_module` as `python -m` does and exits with its status."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # what a fresh interpreter has (KeyboardInterrupt)
    _reseed()
    sys.argv = [entry_module, *args]  # runpy replaces argv[0] with the module's file, as `python -m` does
    # What `python -m` starts from: the working directory first, then the attempt's PYTHONPATH (in place of the
    # server's), then the rest.
    server_entries = set(_pythonpath(_SERVER_PYTHONPATH))
    rest = [entry for entry in sys.path[1:] if os.path.abspath(entry or ".") not in server_entries]
    sys.path[:] = [os.getcwd(), *_pythonpath(os.environ.get("PYTHONPATH", "")), *rest]
    try:
        runpy.run_module(entry_module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        _finish()
        # As the interpreter does for an unhandled KeyboardInterrupt: die by SIGINT.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        code = 130
    except BaseException:  # noqa: BLE001 - as the interpreter: print the traceback, exit 1
        traceback.print_exc()
        code = 1
    _finish()
    os._exit(code)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _finish() -> None:
    """Interpreter shutdown without returning into the fork server: join non-daemon threads, run atexit, flush."""
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        try:
            shutdown()
        except Exception:  # noqa: BLE001
            pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass


def _reseed() -> None:
    """Every fork starts from the server's generator states: give numpy fresh entropy (as its import does in a new
    process) and put torch back to its initial seed (what a new process starts from). Python's `random` is reseeded
    by CPython's own at-fork hook."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(torch.initial_seed())
