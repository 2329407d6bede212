"""Splits a remote trainer's one output stream (a pod's log, a Ray job's log) into the attempt's files.

A trainer on a cluster cannot write the agent's metrics.jsonl: with BUGAGARIC_METRICS_FILE=- it prints each metric
event to stdout as `METRIC_LINE_PREFIX + json` (trainers.common.metrics). Those lines go to metrics.jsonl, the
trainer's closing `error: ...` line (trainers.common.cli, written to stderr, which the engines merge into the same
stream) to stderr.log so the task's error names it, and every other line to stdout.log. Lines are written whole, so
the agent's tailers (gpu_agent.log_spool) never see half of one.
"""

from __future__ import annotations

from pathlib import Path

from gpu_agent.process_runner import METRICS_FILE, STDERR_FILE, STDOUT_FILE
from trainers.common.metrics import METRIC_LINE_PREFIX
from trainers.errors import ERROR_LINE_PREFIX

_METRIC = METRIC_LINE_PREFIX.encode()
_ERROR = ERROR_LINE_PREFIX.encode()


class LogDemux:
    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        # Append mode: a re-adopted run continues the files an earlier agent wrote.
        self._stdout = open(directory / STDOUT_FILE, "ab")
        self._stderr = open(directory / STDERR_FILE, "ab")
        self._metrics = open(directory / METRICS_FILE, "ab")
        self._partial = b""
        self.consumed = 0  # characters of the stream taken so far (to resume a stream read again from its start)

    def feed(self, data: bytes | str) -> None:
        if isinstance(data, str):
            self.consumed += len(data)
            data = data.encode("utf-8", errors="replace")
        else:
            self.consumed += len(data)
        block = self._partial + data
        end = block.rfind(b"\n") + 1
        self._partial = block[end:]
        if end:
            self._write(block[:end].split(b"\n")[:-1])

    def note(self, text: str) -> None:
        """A line of the agent's own about the run (not part of the stream, so not counted in `consumed`)."""
        self._stdout.write(text.rstrip("\n").encode("utf-8", errors="replace") + b"\n")
        self._stdout.flush()

    def close(self) -> None:
        """The stream ended: its last line, even without a newline, then the files."""
        if self._partial:
            self._write([self._partial])
            self._partial = b""
        for handle in (self._stdout, self._stderr, self._metrics):
            handle.close()

    def _write(self, lines: list[bytes]) -> None:
        for raw in lines:
            line = raw.rstrip(b"\r")
            if line.startswith(_METRIC):
                self._metrics.write(line[len(_METRIC):] + b"\n")
            elif line.startswith(_ERROR):
                self._stderr.write(line + b"\n")
            else:
                self._stdout.write(line + b"\n")
        for handle in (self._stdout, self._stderr, self._metrics):
            handle.flush()
