"""The per-task spool: tails the trainer's stdout.log, stderr.log and metrics.jsonl into one ordered journal.

`spool.jsonl` in the task dir holds, in the order the agent saw them, one JSON object per line:
  {"kind": "log", "seq", "time", "stream", "text", "offset", "end"}   seq: per task, gap-free, log_seq_base + 1 first
  {"kind": "metric", "seq", "time", "values_json", "offset", "end"}   seq: metric_seq_base + the line number in
                                                                      metrics.jsonl
Seqs are absolute: an attempt's spool continues where the task's previous attempt ended (the bases come with the
launch request), so readers resume with the same after_log_seq / after_metric_seq across attempts.
  {"kind": "status", "status", "time", "exit_code", "reason", "error", "pid"}
A record is appended before anyone is told about it, so every reader (live or a fresh one after a restart) sees the
same seqs in the same order. offset/end are byte offsets of the line in its source file: a restarted agent resumes
each source at the largest `end` spooled for it, so a line is neither lost nor given a second seq.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

from gpu_agent.process_runner import METRICS_FILE, STDERR_FILE, STDOUT_FILE

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.jsonl"
STDERR_TAIL_LINES = 20
_READ_CHUNK = 1 << 20
_MAX_READ_PER_POLL = 4 << 20  # bounds how long one poll keeps the event loop busy


class SourceTailer:
    """Reads complete lines appended to a file from a byte offset; the last partial line only when told to."""

    def __init__(self, path: Path, offset: int = 0):
        self.path = path
        self.offset = offset  # where the next unreturned line starts
        self._pending = bytearray()  # bytes after offset that do not end in a newline yet

    def read_lines(self, final: bool = False) -> tuple[list[tuple[int, int, bytes]], bool]:
        """Returns ([(start, end, line without its newline)], more_waiting)."""
        more = False
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset + len(self._pending))
                budget = _MAX_READ_PER_POLL
                while budget > 0:
                    chunk = f.read(min(_READ_CHUNK, budget))
                    if not chunk:
                        break
                    self._pending += chunk
                    budget -= len(chunk)
                else:
                    more = bool(f.read(1))
        except FileNotFoundError:
            return [], False
        lines: list[tuple[int, int, bytes]] = []
        pos = 0
        while (nl := self._pending.find(b"\n", pos)) >= 0:
            lines.append((self.offset + pos, self.offset + nl + 1, bytes(self._pending[pos:nl])))
            pos = nl + 1
        if final and not more and pos < len(self._pending):
            lines.append((self.offset + pos, self.offset + len(self._pending), bytes(self._pending[pos:])))
            pos = len(self._pending)
        del self._pending[:pos]
        self.offset += pos
        return lines, more


def decode_line(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").rstrip("\r")
    if "\r" in text:
        # Progress bars redraw with '\r': keep what a terminal would show.
        parts = [p for p in text.split("\r") if p]
        text = parts[-1] if parts else ""
    return text


class SpoolReader:
    """Reads the journal's complete records from the start (or wherever it stopped); never blocks on the writer."""

    def __init__(self, task_dir: Path):
        self.path = Path(task_dir) / SPOOL_FILE
        self.offset = 0

    def read_new(self, max_records: int = 1000) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return records
        with f:
            f.seek(self.offset)
            while len(records) < max_records:
                raw = f.readline()
                if not raw.endswith(b"\n"):
                    break  # EOF, or a record still being written
                self.offset += len(raw)
                try:
                    records.append(json.loads(raw))
                except ValueError:
                    log.warning("%s: skipping a corrupt record at byte %d", self.path, self.offset - len(raw))
        return records

    def read_all(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while batch := self.read_new():
            out.extend(batch)
        return out


def read_spool(task_dir: Path) -> list[dict[str, Any]]:
    return SpoolReader(task_dir).read_all()


class SpoolWriter:
    """The one writer of a task's journal. Opening it on an existing journal resumes where that left off."""

    def __init__(self, task_dir: Path, log_seq_base: int = 0, metric_seq_base: int = 0):
        self.task_dir = Path(task_dir)
        self.path = self.task_dir / SPOOL_FILE
        self.last_log_seq = log_seq_base
        self.last_metric_seq = metric_seq_base
        self.final_status: dict[str, Any] | None = None
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        offsets = {"stdout": 0, "stderr": 0, "metric": 0}
        self._recover(offsets)
        self._sources = {
            "stdout": SourceTailer(self.task_dir / STDOUT_FILE, offsets["stdout"]),
            "stderr": SourceTailer(self.task_dir / STDERR_FILE, offsets["stderr"]),
        }
        self._metrics = SourceTailer(self.task_dir / METRICS_FILE, offsets["metric"])
        self._file = open(self.path, "ab")

    def _recover(self, offsets: dict[str, int]) -> None:
        reader = SpoolReader(self.task_dir)
        for rec in reader.read_all():
            kind = rec.get("kind")
            if kind == "log":
                self.last_log_seq = rec["seq"]
                offsets[rec["stream"]] = max(offsets[rec["stream"]], rec["end"])
                if rec["stream"] == "stderr":
                    self.stderr_tail.append(rec["text"])
            elif kind == "metric":
                self.last_metric_seq = rec["seq"]
                offsets["metric"] = max(offsets["metric"], rec["end"])
            elif kind == "status" and rec.get("status") != "running":
                self.final_status = rec
        if self.path.exists() and self.path.stat().st_size > reader.offset:
            # A crash mid-append left a partial record: drop it, its line is read again from the source.
            os.truncate(self.path, reader.offset)

    def poll(self, final: bool = False) -> tuple[list[dict[str, Any]], bool]:
        """Spools what the trainer wrote since the last poll. Returns (new records, more already waiting).

        If spooling fails (a full disk), nothing is consumed: the same lines get the same seqs on the next poll.
        """
        saved = self._snapshot()
        try:
            return self._poll(final)
        except BaseException:
            self._restore(saved)
            raise

    def _snapshot(self) -> tuple[Any, ...]:
        tailers = [*self._sources.values(), self._metrics]
        return ([(t.offset, bytes(t._pending)) for t in tailers], self.last_log_seq, self.last_metric_seq,
                list(self.stderr_tail))

    def _restore(self, saved: tuple[Any, ...]) -> None:
        positions, self.last_log_seq, self.last_metric_seq, tail = saved
        for tailer, (offset, pending) in zip([*self._sources.values(), self._metrics], positions):
            tailer.offset, tailer._pending = offset, bytearray(pending)
        self.stderr_tail.clear()
        self.stderr_tail.extend(tail)

    def _poll(self, final: bool) -> tuple[list[dict[str, Any]], bool]:
        now = time.time()
        records: list[dict[str, Any]] = []
        more = False
        for stream, tailer in self._sources.items():
            lines, pending = tailer.read_lines(final)
            more |= pending
            for start, end, raw in lines:
                self.last_log_seq += 1
                text = decode_line(raw)
                if stream == "stderr":
                    self.stderr_tail.append(text)
                records.append(
                    {"kind": "log", "seq": self.last_log_seq, "time": now, "stream": stream, "text": text,
                     "offset": start, "end": end}
                )
        metrics, pending = self._poll_metrics(now, final)
        records.extend(metrics)
        self._append(records)
        return records, more or pending

    def _poll_metrics(self, now: float, final: bool) -> tuple[list[dict[str, Any]], bool]:
        records = []
        lines, more = self._metrics.read_lines(final)
        for start, end, raw in lines:
            line_no = self.last_metric_seq + 1
            # The seq is the line number, so a skipped line still uses up its number.
            self.last_metric_seq = line_no
            text = raw.decode("utf-8", errors="replace").strip()
            try:
                ok = isinstance(json.loads(text), dict)
            except ValueError:
                ok = False
            if not ok:
                if text:
                    log.warning("%s line %d is not a JSON object; skipped", self._metrics.path, line_no)
                continue
            # The trainer's own text is kept, so integers stay integers.
            records.append({"kind": "metric", "seq": line_no, "time": now, "values_json": text, "offset": start,
                            "end": end})
        return records, more

    def append_status(self, status: str, *, exit_code: int = 0, reason: str = "", error: str = "",
                      pid: int = 0) -> dict[str, Any]:
        record = {"kind": "status", "status": status, "time": time.time(), "exit_code": exit_code, "reason": reason,
                  "error": error, "pid": pid}
        if status != "running":
            self.final_status = record
        self._append([record])
        return record

    def _append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        start = self._file.tell()
        try:
            self._file.write(data.encode("utf-8"))
            self._file.flush()
        except OSError:
            # Leave no torn record behind for the next append to run into.
            self._file = _reopen_truncated(self._file, self.path, start)
            raise

    def close(self) -> None:
        self._file.close()


def _reopen_truncated(old_file: Any, path: Path, size: int) -> Any:
    try:
        old_file.close()  # may fail again flushing what is buffered; the truncate below undoes it anyway
    except OSError:
        pass
    os.truncate(path, size)
    return open(path, "ab")
