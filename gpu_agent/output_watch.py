"""Wakes an attempt's spool pump when the trainer writes: inotify on the attempt directory where the kernel has it,
a short poll otherwise. Either way `wait` also returns after its timeout, so the pump still notices the process end."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

FALLBACK_POLL_SECONDS = 0.02  # without inotify: how often the pump looks for new output

try:
    from inotify_simple import INotify, flags as _flags
except ImportError:  # pragma: no cover - inotify_simple is a dependency; only a non-Linux kernel lacks inotify
    INotify = None


class OutputWatch:
    """`changed` is set when one of `names` in `directory` is written to (or created); the pump clears it before each
    read of the files, so a write during a read wakes the next wait."""

    def __init__(self, directory: Path, names: Iterable[str]):
        self._names = frozenset(names)
        self.changed = asyncio.Event()
        self._inotify = None
        if INotify is None:
            return
        try:
            inotify = INotify(nonblocking=True)
            # The directory rather than each file: a file the trainer has not created yet is seen too.
            inotify.add_watch(str(directory), _flags.MODIFY | _flags.CREATE | _flags.MOVED_TO)
        except OSError as exc:  # e.g. fs.inotify.max_user_instances reached
            log.warning("%s: no inotify (%s); polling every %.0f ms", directory, exc, FALLBACK_POLL_SECONDS * 1000)
            return
        self._inotify = inotify
        asyncio.get_running_loop().add_reader(inotify.fileno(), self._on_events)

    @property
    def uses_inotify(self) -> bool:
        return self._inotify is not None

    def _on_events(self) -> None:
        try:
            events = self._inotify.read(timeout=0)
        except BlockingIOError:
            return
        if any(event.name in self._names for event in events):
            self.changed.set()

    async def wait(self, timeout: float) -> None:
        """Until `changed` (at once if already set) or `timeout`; without inotify, a short poll interval at most."""
        if self._inotify is None:
            timeout = min(timeout, FALLBACK_POLL_SECONDS)
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except TimeoutError:
            pass

    def close(self) -> None:
        if self._inotify is not None:
            asyncio.get_running_loop().remove_reader(self._inotify.fileno())
            self._inotify.close()
            self._inotify = None
