"""Finding a multi-node task's trainer ranks on this machine (the tests' agents all run here)."""

from __future__ import annotations

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
