"""Finding a multi-node task's trainer ranks on this machine (the tests' agents all run here), and killing one at
the worst moment."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def gang_processes(task_id: str, node: int | None = None) -> list[int]:
    """Pids of the task's trainer ranks (torchrun's workers: RANK and LOCAL_RANK set) on `node` (any node: None), read
    off /proc: the live processes whose environment names the task."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = dict(item.split("=", 1) for item in (entry / "environ").read_text(errors="replace").split("\0")
                       if "=" in item)
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (env.get("BUGAGARIC_TASK_ID") == task_id and "RANK" in env and "LOCAL_RANK" in env and state != "Z"
                and (node is None or env.get("BUGAGARIC_GANG_NODE") == str(node))):
            found.append(int(entry.name))
    return found


def kill_while_saving(pid: int, output_dir: Path, timeout: float = 120.0) -> int:
    """SIGKILL to `pid` (a rank) as soon as a checkpoint directory new to `output_dir` (its node's copy of the task's
    outputs) appears: the copy begun, maybe not finished, the worst moment for a resume. The checkpoint's step."""
    before = {path.name for path in output_dir.glob("checkpoint-*")}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = [path for path in output_dir.glob("checkpoint-*") if path.name not in before]
        if fresh:
            os.kill(pid, signal.SIGKILL)
            return int(fresh[0].name.rpartition("-")[2])
        time.sleep(0.005)
    raise TimeoutError(f"no new checkpoint in {output_dir}")
