"""One attempt of a task: its process, its spool pump, its final status, and the event stream readers follow.

A TaskRun is either launched by this agent (the supervisor is its child) or adopted by an agent that restarted while
the attempt ran (the supervisor is not its child: its pid is polled, and exit.json tells how the trainer ended).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator

from gpu_agent import torchrun_exit
from gpu_agent.input_fetch import EXIT_INPUT_UNAVAILABLE
from gpu_agent.log_spool import SpoolReader, SpoolWriter
from gpu_agent.output_watch import OutputWatch
from gpu_agent.process_runner import METRICS_FILE, STDERR_FILE, STDOUT_FILE, TrainerProcess, describe_exit, write_state
from trainers.errors import EXIT_INVALID_DATA, EXIT_STOPPED_EARLY

log = logging.getLogger(__name__)

RUNNING = "running"
STOPPING = "stopping"
FINAL_STATUSES = frozenset({"succeeded", "failed", "stopped"})
# The pump wakes on every write of the trainer's output files; this bounds how late it notices that the process ended
# without writing anything more.
LIVENESS_SECONDS = 0.15
_LEFTOVER_WAIT_SECONDS = 2.0
# Spool polls run here, beside the event loop: a poll of megabytes (a trainer printing as fast as it can) must not
# stall the streams that carry the previous poll's lines meanwhile.
_SPOOL_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="spool")
ENDED_WHILE_DOWN = "ended while the agent was down; exit status unknown"


class TaskRun:
    def __init__(self, *, task_id: str, task_type: str, directory: Path, process: TrainerProcess,
                 default_grace: float, attempt: int = 1, devices: list[int] | None = None, log_seq_base: int = 0,
                 metric_seq_base: int = 0, resume_from_checkpoint: str = "", adopted: bool = False,
                 started_at: float | None = None, output_dir: str = "", rdzv_port: int = 0):
        self.task_id = task_id
        self.rdzv_port = rdzv_port  # node 0 of a multi-node attempt: where it hosts the rendezvous
        self.task_type = task_type
        self.directory = directory  # the attempt's directory
        self.process = process
        self.default_grace = default_grace
        self.attempt = attempt
        self.devices = list(devices or [])
        self.log_seq_base = log_seq_base
        self.metric_seq_base = metric_seq_base
        self.resume_from_checkpoint = resume_from_checkpoint
        self.adopted = adopted
        self.output_dir = output_dir  # where the trainer writes (absolute, on this host); "" from older agents
        self.spool = SpoolWriter(directory, log_seq_base, metric_seq_base)
        self.status = RUNNING
        self.exit_code: int | None = None
        self.stop_requested = False
        self.stop_deadline: float | None = None
        self.killed_after_grace = False
        self.ended_while_down = False  # adopted after it had already ended: how it ended comes from exit.json only
        self.started_at = started_at or time.time()
        self._version = 0  # bumped on every spool append; readers wait for it to change
        self._changed = asyncio.Condition()
        self._exited = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._poll_in_flight: Future | None = None  # the spool poll running on a spool thread, if any
        self._kill_task: asyncio.Task[None] | None = None

    @classmethod
    def from_state(cls, directory: Path, state: dict[str, Any], default_grace: float,
                   adopted: bool = True) -> TaskRun:
        """The attempt a previous agent left in `directory`, as state.json describes it (not started)."""
        pid = int(state.get("pid") or 0)
        process = TrainerProcess(pid=pid, pgid=int(state.get("pgid") or pid), start_time=state.get("start_time"),
                                 popen=None, directory=directory)
        run = cls(task_id=state["task_id"], task_type=state.get("type", ""), directory=directory, process=process,
                  default_grace=default_grace, attempt=int(state.get("attempt") or 1),
                  devices=[int(i) for i in state.get("devices") or []],
                  log_seq_base=int(state.get("log_seq_base") or 0),
                  metric_seq_base=int(state.get("metric_seq_base") or 0),
                  resume_from_checkpoint=state.get("resume_from_checkpoint") or "", adopted=adopted,
                  started_at=state.get("started_at"), output_dir=state.get("output_dir") or "")
        run.stop_requested = bool(state.get("stop_requested"))
        run.stop_deadline = state.get("stop_deadline")
        run.exit_code = state.get("exit_code")
        if state.get("status") in FINAL_STATUSES:
            run._finish_from_spool(state["status"])
        return run

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.spool.append_status(RUNNING, reason="started", pid=self.process.pid)
        self._save_state()
        self._pump_task = asyncio.create_task(self._pump(), name=f"pump-{self.task_id}")

    def adopt(self) -> str:
        """Starts watching an attempt a previous agent launched; returns how it was found (for the log line)."""
        final = self.spool.final_status
        if final is not None:
            # The previous agent spooled the final status but died before it saved state.json.
            self._finish_from_spool(final["status"])
            self._save_state(reason=final.get("reason", ""))
            return f"had already ended ({final['status']}, {final.get('reason', '')})"
        alive = self.process.running()  # same pid AND start time, not a zombie
        if not alive:
            # Gone, or the pid now belongs to another process (a different start time): never signal or wait on it.
            self.ended_while_down = True
        self._save_state()
        self._pump_task = asyncio.create_task(self._pump(), name=f"pump-{self.task_id}")
        if alive and self.stop_requested:
            # Stopping when the previous agent went down: finish the stop (SIGTERM again, SIGKILL at the old deadline).
            grace = max(0.0, (self.stop_deadline or time.time()) - time.time())
            self.process.signal_group(signal.SIGTERM)
            self._kill_task = asyncio.create_task(self._kill_after(grace), name=f"kill-{self.task_id}")
        where = f"log seq {self.spool.last_log_seq}, metric seq {self.spool.last_metric_seq}"
        if alive:
            stopping = ", stop requested before the restart" if self.stop_requested else ""
            return f"supervisor pid {self.process.pid} still running{stopping}; resuming the spool after {where}"
        return f"ended while the agent was down; draining its output after {where}"

    def _finish_from_spool(self, state_status: str) -> None:
        final = self.spool.final_status
        self.status = final["status"] if final else state_status
        if final is not None:
            self.exit_code = final.get("exit_code")
        self._exited.set()
        self.spool.close()

    @property
    def ended(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def visible_status(self) -> str:
        return STOPPING if self.stop_requested and not self.ended else self.status

    def request_stop(self, grace_seconds: float = 0.0) -> None:
        """SIGTERM to the group now, SIGKILL after the grace period unless it has exited by then."""
        if self.ended or self.stop_requested or not self.process.running():
            return  # already over (the pump reports how it ended) or already stopping
        grace = grace_seconds if grace_seconds > 0 else self.default_grace
        self.stop_requested = True
        self.stop_deadline = time.time() + grace
        self._save_state()
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
        if self._poll_in_flight is not None:  # a cancelled pump's poll may still be writing to the spool
            await asyncio.gather(asyncio.wrap_future(self._poll_in_flight), return_exceptions=True)
        self.spool.close()

    async def wait(self) -> None:
        if self._pump_task is not None:
            await asyncio.shield(self._pump_task)
        else:
            await self._exited.wait()

    # -- the pump: process output -> spool -> readers ----------------------------------------------------------

    async def _pump(self) -> None:
        watch = OutputWatch(self.directory, (STDOUT_FILE, STDERR_FILE, METRICS_FILE))
        try:
            while not self.ended_while_down and self.process.running():
                watch.changed.clear()  # before reading: a write from now on wakes the wait below
                more = await self._spool_once(final=False)
                if more:
                    await asyncio.sleep(0)  # let the readers and the gRPC server run between two big reads
                else:
                    await watch.wait(LIVENESS_SECONDS)
        finally:
            watch.close()
        code = self.process.exit_status()
        self.exit_code = code
        self._exited.set()
        log.info("task %s attempt %d: supervisor pid %d ended; the trainer %s", self.task_id, self.attempt,
                 self.process.pid, describe_exit(code) if code is not None else "left no exit status")
        if not self.ended_while_down:
            await self._kill_leftovers()
        # Everything the trainer wrote is on disk now: spool all of it before the final status.
        while await self._spool_once(final=True):
            pass
        status, reason, error = self._outcome(code)
        while True:
            try:
                self.spool.append_status(status, exit_code=code or 0, reason=reason, error=error,
                                         pid=self.process.pid)
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
        self._poll_in_flight = _SPOOL_THREADS.submit(self.spool.poll, final)
        try:
            records, more = await asyncio.wrap_future(self._poll_in_flight)
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

    def _outcome(self, code: int | None) -> tuple[str, str, str]:
        lines = list(self.spool.stderr_tail)
        if code is not None:
            code, lines = torchrun_exit.worker_outcome(code, lines)
        tail = "\n".join(lines)
        if self.stop_requested:
            if self.killed_after_grace:
                how = "killed after the grace period"
            elif code is None:
                how = ENDED_WHILE_DOWN if self.ended_while_down else "exit status unknown"
            else:
                how = describe_exit(code)
            return "stopped", "user_stop", f"stopped on request ({how})"
        if code is None:
            if self.ended_while_down:
                return "failed", "agent_lost", f"{ENDED_WHILE_DOWN}\n{tail}".strip()
            return "failed", "trainer_error", (
                f"the trainer's supervisor ended without recording an exit status\n{tail}").strip()
        if code == 0:
            return "succeeded", "exited", ""
        if code == EXIT_INVALID_DATA:
            return "failed", "invalid_data", tail or describe_exit(code)
        if code == EXIT_INPUT_UNAVAILABLE:  # the fetch step could not bring the inputs; the trainer never ran
            return "failed", "input_unavailable", tail or "the task's inputs could not be fetched"
        if code == EXIT_STOPPED_EARLY:  # a SIGTERM from outside the platform (a host shutdown, an operator)
            return "failed", "trainer_error", ("the trainer was stopped by a SIGTERM the platform did not send; it saved "
                                               "a checkpoint, and a retry resumes from it")
        error = f"{describe_exit(code)}\n{tail}" if code < 0 else tail
        return "failed", "trainer_error", error.strip() or describe_exit(code)

    async def _notify(self) -> None:
        async with self._changed:
            self._version += 1
            self._changed.notify_all()

    def _save_state(self, **extra: Any) -> None:
        write_state(self.directory, {
            "task_id": self.task_id, "type": self.task_type, "attempt": self.attempt, "devices": self.devices,
            "pid": self.process.pid, "pgid": self.process.pgid, "start_time": self.process.start_time,
            "started_at": self.started_at, "status": self.status, "stop_requested": self.stop_requested,
            "stop_deadline": self.stop_deadline, "exit_code": self.exit_code, "log_seq_base": self.log_seq_base,
            "metric_seq_base": self.metric_seq_base, "resume_from_checkpoint": self.resume_from_checkpoint,
            "adopted": self.adopted, "output_dir": self.output_dir, **extra,
        })

    # -- readers ---------------------------------------------------------------------------------------------

    async def event_batches(self, after_log_seq: int = 0, after_metric_seq: int = 0,
                            follow: bool = False) -> AsyncIterator[list[dict[str, Any]]]:
        """Spool records in spool order, a read's worth at a time: logs and metrics after the given seqs, and every
        status record. The spool's index gives where to start, so a reader resuming after a high seq reads only the
        spool's tail.

        Ends after the final status; before that, at the spool's current end unless follow.
        """
        offset, statuses_before = self.spool.index.start(after_log_seq, after_metric_seq)
        reader = SpoolReader(self.directory, offset)
        if statuses_before:
            yield statuses_before
            if statuses_before[-1].get("status") in FINAL_STATUSES:
                return
        while True:
            seen = self._version
            batch = reader.read_new()
            if batch:
                wanted = [rec for rec in batch if _wanted(rec, after_log_seq, after_metric_seq)]
                final = next((i for i, rec in enumerate(wanted)
                              if rec.get("kind") == "status" and rec.get("status") in FINAL_STATUSES), None)
                if final is not None:
                    yield wanted[:final + 1]
                    return
                if wanted:
                    yield wanted
                continue
            if not follow:
                return
            try:
                # The timeout is a safety net only; appends always notify.
                async with asyncio.timeout(1.0), self._changed:
                    await self._changed.wait_for(lambda: self._version != seen)
            except TimeoutError:
                pass


def _wanted(rec: dict[str, Any], after_log_seq: int, after_metric_seq: int) -> bool:
    kind = rec.get("kind")
    if kind == "log":
        return rec["seq"] > after_log_seq
    if kind == "metric":
        return rec["seq"] > after_metric_seq
    return True
