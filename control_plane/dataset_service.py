"""Datasets: uploads checked row by row as they stream in, stored once per content, listed and deleted per owner.

Transport-free: the gRPC servicer (control_plane.dataset_rpcs) maps these domain errors onto status codes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath
from typing import AsyncIterator

from control_plane.blob_store import BlobStore
from control_plane.dataset_store import DatasetNotFound, DatasetStore
from control_plane.db_calls import in_db_thread
from control_plane.models import Dataset
from control_plane.published_models import PublishedModels
from control_plane.state_machine import TERMINAL, TaskStatus
from control_plane.task_inputs import dataset_ids
from control_plane.task_store import TaskStore
from trainers import registry
from trainers.common.jsonl import MAX_PROBLEMS
from trainers.common.row_stream import RowStream
from trainers.errors import ConfigError, DataError, problem_lines
from trainers.paths import size_text

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 255
_NOT_ENDED = frozenset(TaskStatus) - TERMINAL


class UploadRefused(Exception):
    """The upload is wrong: `field` is the form field at fault (type, file), `message` says how (line and field)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class UploadTooLarge(Exception):
    pass


class DatasetInUse(Exception):
    pass


def upload_name(raw: str) -> str:
    """The file name as stored and shown: its last path component, printable, of a sane length."""
    name = PurePosixPath((raw or "").replace("\\", "/")).name.strip()
    if not name or not name.isprintable() or len(name) > MAX_NAME_CHARS:
        raise UploadRefused("file", f"file: give the upload a file name of 1-{MAX_NAME_CHARS} printable characters")
    return name


class DatasetService:
    def __init__(self, datasets: DatasetStore, blobs: BlobStore, tasks: TaskStore, published: PublishedModels, *,
                 max_bytes: int, checking_threads: int = 2) -> None:
        self._datasets = datasets
        self._blobs = blobs
        self._tasks = tasks
        self._published = published
        self.max_bytes = max_bytes
        # Row checks hold the GIL while they run: a pool of their own, so uploads queue behind each other, not
        # behind (or in front of) token checks and the event loop.
        self._pool = ThreadPoolExecutor(max_workers=checking_threads, thread_name_prefix="dataset-check")

    async def upload(self, owner: str, name: str, type_name: str, chunks: AsyncIterator[bytes]) -> Dataset:
        """Streams `chunks` into the blob store while the type's row validator reads them; nothing is kept unless
        every row is good."""
        try:
            task_type = registry.get(type_name)
            stream = RowStream.for_type(task_type, name=upload_name(name))
        except ConfigError as exc:
            raise UploadRefused("type", exc.message) from None
        loop = asyncio.get_running_loop()
        writer = self._blobs.writer()
        try:
            async for data in chunks:
                if writer.size + len(data) > self.max_bytes:
                    raise UploadTooLarge(f"file: the upload is over the {size_text(self.max_bytes)} limit of a "
                                         "dataset (BUGAGARIC_MAX_DATASET_BYTES)")
                await loop.run_in_executor(self._pool, _feed, stream, writer, data)
            report = await loop.run_in_executor(self._pool, stream.finish)
            sha256 = await loop.run_in_executor(self._pool, writer.commit)
        except DataError as exc:
            writer.abort()
            raise UploadRefused("file", _problem_text(exc)) from None
        except BaseException:
            writer.abort()
            raise
        suffix = ".json" if report.format == "json" else ".jsonl"
        dataset = await in_db_thread(
            self._datasets.add, owner=owner, name=stream.name, type=task_type.name, sha256=sha256, size_bytes=report.size,
            rows=report.rows, suffix=suffix, stats_json=json.dumps(report.stats, ensure_ascii=False),
            preview_json=json.dumps(report.preview, ensure_ascii=False))
        log.info("dataset %s (%s, %s): %d rows, %d bytes, sha256 %s, owner %s", dataset.id, stream.name,
                 task_type.name, report.rows, report.size, sha256, owner)
        return dataset

    def get(self, dataset_id: str, owner: str | None) -> Dataset:
        return self._datasets.get(dataset_id, owner)

    def list(self, owner: str | None, type_name: str = "") -> list[Dataset]:
        return self._datasets.list(owner, type_name)

    def delete(self, dataset_id: str, owner: str | None) -> None:
        """DatasetInUse while a task that has not ended reads it; its blob goes once nothing else uses it."""
        dataset = self._datasets.get(dataset_id, owner)
        users = [task.id for task in self._tasks.tasks_with_status(_NOT_ENDED)
                 if dataset.id in dataset_ids(task.type, json.loads(task.config_json))]
        if users:
            raise DatasetInUse(f"dataset {dataset.id} is used by task(s) {', '.join(users)}, which have not ended; "
                               "stop them or wait")
        if self._datasets.delete(dataset.id) and not self._published.uses_blob(dataset.sha256):
            self._blobs.delete(dataset.sha256)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _feed(stream: RowStream, writer, data: bytes) -> None:
    writer.write(data)
    stream.feed(data)


def _problem_text(exc: DataError) -> str:
    """The message, then each of the first problems it does not name, one a line (as a trainer's stderr shows
    them)."""
    return "\n".join(problem_lines(exc.message, exc.problems[:MAX_PROBLEMS]))


__all__ = ["DatasetInUse", "DatasetNotFound", "DatasetService", "UploadRefused", "UploadTooLarge"]
