"""Finds processes the test suite started and left behind: anything of ours (services, supervisors, trainers,
torchrun) whose BUGAGARIC_WORKSPACE lies under the suite's temporary directory."""

from __future__ import annotations

from pathlib import Path

MARKERS = (b"trainers.", b"gpu_agent", b"control_plane", b"gateway", b"torch.distributed.run", b"tests.helpers.line_trainer")


def leftover_processes(base: Path) -> list[str]:
    found = []
    prefix = f"BUGAGARIC_WORKSPACE={base}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state in ("Z", "X") or not any(marker in cmdline for marker in MARKERS):
            continue
        if any(var.startswith(prefix) for var in environ.split(b"\0")):
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]
            found.append(f"pid {entry.name}: {command}")
    return found
