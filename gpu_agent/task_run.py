"""One launched task: its process, its spool pump, its final status, and the event stream readers follow."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Any, AsyncIterator

from gpu_agent.log_spool import SpoolReader, SpoolWriter
from gpu_agent.process_runner import TrainerProcess, describe_exit, write_state
from trainers.errors import EXIT_INVALID_DATA

log = logging.getLogger(__name__)

RUNNING = "running"
STOPPING = "stopping"
FINAL_STATUSES = frozenset({"succeeded", "failed", "stopped"})
POLL_SECONDS = 0.15
_LEFTOVER_WAIT_SECONDS = 2.0


class TaskRun:
    def __init__(self, *, task_id: str, task_type: str, directory: Path, process: TrainerProcess,
                 default_grace: float):
        self.task_id = task_id
        self.task_type = task_type
        self.directory = directory
        self.process = process
        self.default_grace = default_grace
        self.spool = SpoolWriter(directory)
        self.status = RUNNING
        self.exit_code: int | None = None
        self.stop_requested = False
        self.killed_after_grace = False
        self.started_at = time.time()
        self._version = 0  # bumped on every spool append; readers wait for it to change
        self._changed = asyncio.Condition()
        self._exited = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._kill_task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.spool.append_status(RUNNING, reason="started", pid=self.process.pid)
        self._save_state()
        self._pump_task = asyncio.create_task(self._pump(), name=f"pump-{self.task_id}")

    @property
    def ended(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def visible_status(self) -> str:
        return STOPPING if self.stop_requested and not self.ended else self.status

    def request_stop(self, grace_seconds: float = 0.0) -> None:
        """SIGTERM to the group now, SIGKILL after the grace period unless it has exited by then."""
        if self.ended or self.stop_requested or self.process.poll() is not None:
            return  # already over (the pump reports how it ended) or already stopping
        grace = grace_seconds if grace_seconds > 0 else self.default_grace
        self.stop_requested = True
        self._save_state(stop_deadline=time.time() + grace)
        log.info("task %s: stopping (SIGTERM to group %d, SIGKILL after %.1f s)", self.task_id,
                 self.process.pgid, grace)
        self.process.signal_group(signal.SIGTERM)
        self._kill_task = asyncio.create_task(self._kill_after(grace), name=f"kill-{self.task_id}")

    async def _kill_after(self, grace: float) -> None:
        try:
            await asyncio.wait_for(self._exited.wait(), grace)
        except asyncio.TimeoutError:
            log.warning("task %s: still running %.1f s after SIGTERM; sending SIGKILL", self.task_id, grace)
            self.killed_after_grace = True
            self.process.signal_group(signal.SIGKILL)

    async def detach(self) -> None:
        """Agent shutdown: stop watching; the trainer keeps running, and its files keep growing for a later agent."""
        for task in (self._pump_task, self._kill_task):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self.spool.close()

    async def wait(self) -> None:
        if self._pump_task is not None:
            await asyncio.shield(self._pump_task)

    # -- the pump: process output -> spool -> readers ----------------------------------------------------------

    async def _pump(self) -> None:
        while (code := self.process.poll()) is None:
            more = await self._spool_once(final=False)
            if not more:
                await asyncio.sleep(POLL_SECONDS)
        self.exit_code = code
        self._exited.set()
        log.info("task %s: pid %d %s", self.task_id, self.process.pid, describe_exit(code))
        await self._kill_leftovers()
        # Everything the trainer wrote is on disk now: spool all of it before the final status.
        while await self._spool_once(final=True):
            pass
        status, reason, error = self._outcome(code)
        while True:
            try:
                self.spool.append_status(status, exit_code=code, reason=reason, error=error, pid=self.process.pid)
                break
            except OSError:
                # Readers wait for this record; keep trying until the disk takes it.
                log.exception("task %s: could not spool the final status; retrying", self.task_id)
                await asyncio.sleep(1.0)
        self.status = status
        self.spool.close()
        self._save_state(reason=reason)
        await self._notify()
        log.info("task %s: %s (%s)", self.task_id, status, reason)

    async def _spool_once(self, final: bool) -> bool:
        try:
            records, more = self.spool.poll(final=final)
        except Exception:
            # A full disk or the like: nothing was consumed; try again on the next poll.
            log.exception("task %s: spooling failed", self.task_id)
            return False
        if records:
            await self._notify()
        return more

    async def _kill_leftovers(self) -> None:
        """The trainer is gone; whatever it left in its group (workers, children) would only hold the devices."""
        if not self.process.group_alive():
            return
        log.info("task %s: killing processes left in group %d", self.task_id, self.process.pgid)
        self.process.signal_group(signal.SIGKILL)
        deadline = time.monotonic() + _LEFTOVER_WAIT_SECONDS
        while self.process.group_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def _outcome(self, code: int) -> tuple[str, str, str]:
        tail = "\n".join(self.spool.stderr_tail)
        if self.stop_requested:
            how = "killed after the grace period" if self.killed_after_grace else describe_exit(code)
            return "stopped", "user_stop", f"stopped on request ({how})"
        if code == 0:
            return "succeeded", "exited", ""
        if code == EXIT_INVALID_DATA:
            return "failed", "invalid_data", tail or describe_exit(code)
        error = f"{describe_exit(code)}\n{tail}" if code < 0 else tail
        return "failed", "trainer_error", error.strip() or describe_exit(code)

    async def _notify(self) -> None:
        async with self._changed:
            self._version += 1
            self._changed.notify_all()

    def _save_state(self, **extra: Any) -> None:
        write_state(self.directory, {
            "task_id": self.task_id, "type": self.task_type, "pid": self.process.pid, "pgid": self.process.pgid,
            "start_time": self.process.start_time, "started_at": self.started_at, "status": self.status,
            "stop_requested": self.stop_requested, "exit_code": self.exit_code, **extra,
        })

    # -- readers ---------------------------------------------------------------------------------------------

    async def events(self, after_log_seq: int = 0, after_metric_seq: int = 0,
                     follow: bool = False) -> AsyncIterator[dict[str, Any]]:
        """Spool records in spool order: logs and metrics after the given seqs, and every status record.

        Ends after the final status; before that, at the spool's current end unless follow.
        """
        reader = SpoolReader(self.directory)
        while True:
            seen = self._version
            batch = reader.read_new()
            for rec in batch:
                kind = rec.get("kind")
                if kind == "log" and rec["seq"] <= after_log_seq:
                    continue
                if kind == "metric" and rec["seq"] <= after_metric_seq:
                    continue
                yield rec
                if kind == "status" and rec.get("status") in FINAL_STATUSES:
                    return
            if batch:
                continue
            if not follow:
                return
            try:
                # The timeout is a safety net only; appends always notify.
                async with asyncio.timeout(1.0), self._changed:
                    await self._changed.wait_for(lambda: self._version != seen)
            except TimeoutError:
                pass
