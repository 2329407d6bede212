"""What a KBAlign run has finished, kept in its output directory so a stopped or lost run resumes where it was.

`stages/state.json` is the run's state: the stages finished (with what they reported for the summary) and, for a
stage that works through items (annotation, verification, evaluation), how many items are done. Every finished stage
and every stop leaves a snapshot, `stages/<label>/state.json`, whose directory is reported as a checkpoint (a
`checkpoint` metric event), so the platform can pass it back through BUGAGARIC_RESUME_FROM_CHECKPOINT. A round's
Trainer checkpoint (`rounds/round_<k>/checkpoint-<n>`) resumes from `rounds/round_<k>/state.json`, the state when
that round's training began.

The items a stage produced live in its JSONL file (one line per generation, each with its `item`); a resumed stage
keeps the lines of the items its state counts as done and appends from there, so a file is rewritten only when it
holds more than the state (a resume from an older snapshot).

One process per node writes (`writer`: Ranks.keeps_state, so every node of a multi-node run keeps its own copy); every
rank reads its node's copy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterable

from trainers.errors import ConfigError, TrainerError

STATE_DIR = "stages"
STATE_FILE = "state.json"
VERSION = 1
_ROUND_CHECKPOINT = re.compile(r"^round_(\d+)$")


def write_json(path: Path, data: Any) -> None:
    """Written whole or not at all (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


class StageState:
    def __init__(self, out: Path, data: dict[str, Any] | None = None, *, writer: bool = True,
                 trainer_checkpoint: tuple[int, str] | None = None):
        self.out = Path(out)
        self.data = data or {"version": VERSION, "finished": {}, "progress": {}}
        self.writer = writer
        # (round, path) when the run resumes a round's training from a Trainer checkpoint.
        self.trainer_checkpoint = trainer_checkpoint

    @property
    def path(self) -> Path:
        return self.out / STATE_DIR / STATE_FILE

    # --- loading -------------------------------------------------------------------------------------------------

    @classmethod
    def start(cls, out: Path, resume_from: str | None, *, writer: bool = True) -> "StageState":
        """A fresh state, or the one the resume checkpoint names (a stage snapshot or a round's Trainer checkpoint)."""
        if not resume_from:
            return cls(out, writer=writer)
        point = Path(resume_from)
        if (point / STATE_FILE).is_file():
            return cls(out, _read(point / STATE_FILE), writer=writer)
        match = _ROUND_CHECKPOINT.match(point.parent.name)
        if point.name.startswith("checkpoint-") and match and (point.parent / STATE_FILE).is_file():
            return cls(out, _read(point.parent / STATE_FILE), writer=writer,
                       trainer_checkpoint=(int(match.group(1)), str(point)))
        raise ConfigError("checkpoint", f"checkpoint: {resume_from} is neither a KBAlign stage checkpoint "
                                        f"({STATE_DIR}/<stage>) nor a round's Trainer checkpoint "
                                        "(rounds/round_<k>/checkpoint-<n>)")

    @property
    def resumed(self) -> bool:
        return bool(self.data["finished"] or self.data["progress"])

    # --- stages --------------------------------------------------------------------------------------------------

    def finished(self, stage: str) -> bool:
        return stage in self.data["finished"]

    def result(self, stage: str, default: Any = None) -> Any:
        return self.data["finished"].get(stage, default)

    def finish(self, stage: str, result: Any = True) -> None:
        self.data["finished"][stage] = result
        self.data["progress"].pop(stage, None)
        self.save()

    def progress(self, stage: str) -> int:
        return int(self.data["progress"].get(stage, 0))

    def set_progress(self, stage: str, done: int) -> None:
        self.data["progress"][stage] = done
        self.save()

    def check_knowledge_base(self, digest: str, chunks: int) -> None:
        """A resumed run must read the same knowledge base (the annotations refer to its chunks by position)."""
        known = self.data.get("knowledge_base")
        if known is None:
            self.data["knowledge_base"] = {"digest": digest, "chunks": chunks}
            self.save()
        elif known["digest"] != digest:
            raise TrainerError(f"the knowledge base changed since the stopped run ({known['chunks']} chunks then, "
                               f"{chunks} now): start a new task instead of resuming this one")

    # --- writing -------------------------------------------------------------------------------------------------

    def save(self) -> None:
        if self.writer:
            write_json(self.path, self.data)

    def snapshot(self, label: str) -> Path:
        """`stages/<label>/state.json`: this state, to resume from; returns its directory."""
        directory = self.out / STATE_DIR / label
        if self.writer:
            write_json(directory / STATE_FILE, self.data)
        return directory

    def round_snapshot(self, round_no: int) -> Path:
        """`rounds/round_<k>/state.json`: the state a Trainer checkpoint of that round resumes from."""
        directory = self.out / "rounds" / f"round_{round_no}"
        if self.writer:
            write_json(directory / STATE_FILE, self.data)
        return directory


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainerError(f"cannot resume: {path} is unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise TrainerError(f"cannot resume: {path} was written by another version of the KBAlign trainer")
    return data


class ItemLog:
    """A stage's JSONL file of per-item lines (each holding its `item` index), resumable at an item count."""

    def __init__(self, path: Path, *, writer: bool = True):
        self.path, self.writer = Path(path), writer

    def resume(self, done: int) -> list[dict[str, Any]]:
        """The lines of items before `done`; the file is cut back to them when it holds more (or starts empty when
        done is 0)."""
        if done <= 0:
            if self.writer:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text("", encoding="utf-8")
            return []
        rows, extra = [], False
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut short by a killed process
                    extra = True
                    continue
                if row.get("item", 0) < done:
                    rows.append(row)
                else:
                    extra = True
        if extra and self.writer:
            self.path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return rows

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        if not self.writer:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
