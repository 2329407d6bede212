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

The writer keeps a sparse index of the journal in memory (`SpoolIndex`: every INDEX_EVERY records, the byte offset
and bounds of the log and metric seqs before it; rebuilt from the journal by a restarted agent), so a reader resuming
after a high seq starts near it instead of reading the journal from its first byte.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson  # the journal is written and read on the agent's event loop: the fast codec keeps that cheap

from gpu_agent.process_runner import METRICS_FILE, STDERR_FILE, STDOUT_FILE

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.jsonl"
STDERR_TAIL_LINES = 20
_READ_CHUNK = 1 << 20
_MAX_READ_PER_POLL = 4 << 20  # bounds how long one poll keeps the event loop busy
INDEX_EVERY = 1024  # records between two entries of the journal's index


class SourceTailer:
    """Reads complete lines appended to a file from a byte offset; the last partial line only when told to."""

    def __init__(self, path: Path, offset: int = 0):
        self.path = path
        self.offset = offset  # where the next unreturned line starts
        self._pending = bytearray()  # bytes after offset that do not end in a newline yet

    def read_lines(self, final: bool = False) -> tuple[list[str], list[int], bool]:
        """Returns (the lines' texts, their bounds, more_waiting): line i spans bytes bounds[i] to bounds[i + 1] of the
        file (its newline included)."""
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
            return [], [self.offset], False
        end = self._pending.rfind(b"\n") + 1
        if final and not more:
            end = len(self._pending)  # the last line, even without its newline
        block = bytes(self._pending[:end])
        del self._pending[:end]
        raws = block.split(b"\n")
        if block.endswith(b"\n") or not block:
            raws.pop()
        bounds = list(accumulate((len(raw) + 1 for raw in raws), initial=self.offset))
        bounds[-1] = self.offset + end  # a last line without a newline is one byte shorter
        self.offset += end
        return _decode_lines(block, raws), bounds, more


def _decode_lines(block: bytes, raws: list[bytes]) -> list[str]:
    if block.isascii() and b"\r" not in block:  # the common case: one decode for the whole block
        texts = block.decode("ascii").split("\n")
        return texts[:len(raws)]
    return [decode_line(raw) for raw in raws]


def decode_line(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").rstrip("\r")
    if "\r" in text:
        # Progress bars redraw with '\r': keep what a terminal would show.
        parts = [p for p in text.split("\r") if p]
        text = parts[-1] if parts else ""
    return text


class SpoolReader:
    """Reads the journal's complete records from a byte offset on; never blocks on the writer.

    `bytes_read` counts what this reader read from the journal; `SpoolReader.total_bytes_read` what all readers of
    this process did (so a test can tell a resumed stream from one that re-read the journal from the start).
    """

    total_bytes_read = 0

    def __init__(self, task_dir: Path, offset: int = 0):
        self.path = Path(task_dir) / SPOOL_FILE
        self.offset = offset
        self.bytes_read = 0

    def read_new(self, max_bytes: int = _READ_CHUNK) -> list[dict[str, Any]]:
        """The complete records after `offset`, reading about max_bytes at most (but always a whole record)."""
        start = self.offset
        raws = self._read_raw(max_bytes)
        try:
            return [orjson.loads(raw) for raw in raws]
        except orjson.JSONDecodeError:
            return [record for _, record in self._parse(start, raws)]

    def read_placed(self, max_bytes: int = _READ_CHUNK) -> list[tuple[int, dict[str, Any]]]:
        """As read_new, each record with its byte offset in the journal."""
        start = self.offset
        return self._parse(start, self._read_raw(max_bytes))

    def _parse(self, at: int, raws: list[bytes]) -> list[tuple[int, dict[str, Any]]]:
        placed: list[tuple[int, dict[str, Any]]] = []
        for raw in raws:
            try:
                placed.append((at, orjson.loads(raw)))
            except orjson.JSONDecodeError:
                log.warning("%s: skipping a corrupt record at byte %d", self.path, at)
            at += len(raw) + 1
        return placed

    def _read_raw(self, max_bytes: int) -> list[bytes]:
        """The complete records (without their newlines) after `offset`; moves `offset` past them."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return []
        with f:
            f.seek(self.offset)
            data = f.read(max_bytes)
            end = data.rfind(b"\n") + 1
            while not end and len(data) >= max_bytes:  # one record longer than max_bytes
                more = f.read(max_bytes)
                if not more:
                    break
                data += more
                end = data.rfind(b"\n") + 1
        self.bytes_read += len(data)
        SpoolReader.total_bytes_read += len(data)
        self.offset += end
        return data[:end].split(b"\n")[:-1]  # a record still being written waits for the next read

    def read_all(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while batch := self.read_new():
            out.extend(batch)
        return out


def read_spool(task_dir: Path) -> list[dict[str, Any]]:
    return SpoolReader(task_dir).read_all()


@dataclass
class SpoolIndex:
    """Where to start reading the journal to resume after given seqs.

    `marks`: (byte offset of a record, L, M), one every INDEX_EVERY records, where no log record before the offset has
    a seq above L and no metric record one above M; `statuses`: every status record with its offset (a resumed reader
    still gets each of them).
    """

    marks: list[tuple[int, int, int]] = field(default_factory=lambda: [(0, 0, 0)])
    statuses: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    records: int = 0

    def add(self, offsets: list[int], records: list[dict[str, Any]], last_log_seq: int, last_metric_seq: int) -> None:
        """Notes records appended at `offsets` (in journal order); last_log_seq/last_metric_seq: no record up to
        the last of these has a higher seq."""
        first = -self.records % INDEX_EVERY  # the first of these records that gets a mark
        for i in range(first if self.records else INDEX_EVERY, len(records), INDEX_EVERY):
            record = records[i]
            kind = record["kind"]
            # Seqs only grow, so the record's own seq bounds those of its kind before it.
            log_before = record["seq"] - 1 if kind == "log" else last_log_seq
            metric_before = record["seq"] - 1 if kind == "metric" else last_metric_seq
            self.marks.append((offsets[i], log_before, metric_before))
        self.statuses.extend((offsets[i], r) for i, r in enumerate(records) if r["kind"] == "status")
        self.records += len(records)

    def start(self, after_log_seq: int, after_metric_seq: int) -> tuple[int, list[dict[str, Any]]]:
        """(offset, the status records before it): every log or metric before offset is one the reader has had."""
        by_log = bisect.bisect_right(self.marks, after_log_seq, key=lambda mark: mark[1]) - 1
        by_metric = bisect.bisect_right(self.marks, after_metric_seq, key=lambda mark: mark[2]) - 1
        offset = self.marks[max(0, min(by_log, by_metric))][0]
        return offset, [record for at, record in self.statuses if at < offset]


class SpoolWriter:
    """The one writer of a task's journal. Opening it on an existing journal resumes where that left off."""

    def __init__(self, task_dir: Path, log_seq_base: int = 0, metric_seq_base: int = 0):
        self.task_dir = Path(task_dir)
        self.path = self.task_dir / SPOOL_FILE
        self.last_log_seq = log_seq_base
        self.last_metric_seq = metric_seq_base
        self.final_status: dict[str, Any] | None = None
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self.index = SpoolIndex()
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
        while placed := reader.read_placed():
            for _, rec in placed:
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
            self.index.add([at for at, _ in placed], [rec for _, rec in placed], self.last_log_seq,
                           self.last_metric_seq)
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
            texts, bounds, pending = tailer.read_lines(final)
            more |= pending
            if not texts:
                continue
            first = self.last_log_seq + 1
            self.last_log_seq += len(texts)
            if stream == "stderr":
                self.stderr_tail.extend(texts)
            records.extend([{"kind": "log", "seq": first + i, "time": now, "stream": stream, "text": text,
                             "offset": bounds[i], "end": bounds[i + 1]} for i, text in enumerate(texts)])
        metrics, pending = self._poll_metrics(now, final)
        records.extend(metrics)
        self._append(records)
        return records, more or pending

    def _poll_metrics(self, now: float, final: bool) -> tuple[list[dict[str, Any]], bool]:
        records = []
        texts, bounds, more = self._metrics.read_lines(final)
        for i, text in enumerate(texts):
            line_no = self.last_metric_seq + 1
            # The seq is the line number, so a skipped line still uses up its number.
            self.last_metric_seq = line_no
            text = text.strip()
            try:
                ok = isinstance(json.loads(text), dict)
            except ValueError:
                ok = False
            if not ok:
                if text:
                    log.warning("%s line %d is not a JSON object; skipped", self._metrics.path, line_no)
                continue
            # The trainer's own text is kept, so integers stay integers.
            records.append({"kind": "metric", "seq": line_no, "time": now, "values_json": text, "offset": bounds[i],
                            "end": bounds[i + 1]})
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
        encoded = [orjson.dumps(r) + b"\n" for r in records]
        start = self._file.tell()
        try:
            self._file.write(b"".join(encoded))
            self._file.flush()
        except OSError:
            # Leave no torn record behind for the next append to run into.
            self._file = _reopen_truncated(self._file, self.path, start)
            raise
        offsets = list(accumulate((len(raw) for raw in encoded), initial=start))
        self.index.add(offsets, records, self.last_log_seq, self.last_metric_seq)

    def close(self) -> None:
        self._file.close()


def _reopen_truncated(old_file: Any, path: Path, size: int) -> Any:
    try:
        old_file.close()  # may fail again flushing what is buffered; the truncate below undoes it anyway
    except OSError:
        pass
    os.truncate(path, size)
    return open(path, "ab")
