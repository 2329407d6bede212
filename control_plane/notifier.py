"""Wakes log readers when ingestion has stored new lines (or a new status) for a task."""

from __future__ import annotations

import asyncio


class TaskChangeNotifier:
    """Readers take `event(task_id)` BEFORE reading the store, then wait on it; a change in between is not missed."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, task_id: str) -> asyncio.Event:
        return self._events.setdefault(task_id, asyncio.Event())

    def notify(self, task_id: str) -> None:
        event = self._events.pop(task_id, None)
        if event is not None:
            event.set()
