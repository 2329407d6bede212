"""Where relative data and output paths resolve: the workspace (`BUGAGARIC_WORKSPACE`, else the current directory)."""

from __future__ import annotations

import os
from pathlib import Path


def workspace() -> Path:
    return Path(os.environ.get("BUGAGARIC_WORKSPACE") or os.getcwd()).resolve()


def resolve(path: str | os.PathLike[str], base: Path | None = None) -> Path:
    """An absolute path stays; a relative one is taken under `base` (default: the workspace). `~` expands."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        return candidate
    return (base or workspace()) / candidate
