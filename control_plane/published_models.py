"""Publishing: when a task succeeds, its final model (the agent's tar of the output directory without checkpoints and
logs) is copied into the blob store, so that it stays downloadable, and exportable on any agent, after its agent's
host is gone."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, timedelta
from typing import Callable

import grpc
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from control_plane.agent_clients import AgentClients
from control_plane.blob_store import BlobStore
from control_plane.db_calls import in_db_thread
from control_plane.models import PublishedModel, utcnow
from control_plane.state_machine import TaskStatus
from protos import agent_pb2

log = logging.getLogger(__name__)

PUBLISH_TRIES = 3
PUBLISH_RETRY_SECONDS = 2.0
# After a restart, tasks that succeeded this recently and have no published model are published again.
RESUME_WINDOW = timedelta(days=1)


class PublishedModels:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self, task_id: str) -> PublishedModel | None:
        with Session(self._engine) as session:
            return session.get(PublishedModel, task_id)

    def put(self, task_id: str, sha256: str, size_bytes: int) -> None:
        with Session(self._engine) as session:
            session.merge(PublishedModel(task_id=task_id, sha256=sha256, size_bytes=size_bytes))
            session.commit()

    def delete(self, task_id: str) -> str | None:
        """Forgets the task's published model; returns its blob's sha256 (the caller deletes an unused blob)."""
        with Session(self._engine) as session:
            row = session.get(PublishedModel, task_id)
            if row is None:
                return None
            session.delete(row)
            session.commit()
            return row.sha256

    def uses_blob(self, sha256: str) -> bool:
        with Session(self._engine) as session:
            return session.exec(select(PublishedModel).where(col(PublishedModel.sha256) == sha256)).first() is not None


class ModelPublisher:
    """Copies a succeeded task's model from its agent into the blob store, in the background, a few tries."""

    def __init__(self, published: PublishedModels, blobs: BlobStore, clients: AgentClients,
                 agent_address: Callable[[str], str | None], on_published: Callable[[str], None]) -> None:
        self._published = published
        self._blobs = blobs
        self._clients = clients
        self._agent_address = agent_address  # task id -> the address of the agent holding its output
        self._on_published = on_published
        self._jobs: dict[str, asyncio.Task] = {}

    async def resume(self, tasks) -> None:
        """After a restart: a task that succeeded while its model was being copied (or just before) gets it copied
        now, if it ended within RESUME_WINDOW (older ones are served from their agents only). `tasks`: the task
        store."""
        for task_id in await in_db_thread(self._unpublished_recent_successes, tasks):
            self.publish_later(task_id)

    def _unpublished_recent_successes(self, tasks) -> list[str]:
        since = utcnow() - RESUME_WINDOW
        found = []
        for task in tasks.tasks_with_status([TaskStatus.SUCCEEDED]):
            finished = task.finished_at
            if finished is not None and finished.tzinfo is None:  # SQLite gives naive UTC back
                finished = finished.replace(tzinfo=UTC)
            if finished is not None and finished >= since and self._published.get(task.id) is None:
                found.append(task.id)
        return found

    def publish_later(self, task_id: str) -> None:
        if task_id in self._jobs:
            return
        job = asyncio.create_task(self._publish(task_id), name=f"publish-{task_id}")
        self._jobs[task_id] = job
        job.add_done_callback(lambda _: self._jobs.pop(task_id, None))

    async def _publish(self, task_id: str) -> None:
        for attempt in range(1, PUBLISH_TRIES + 1):
            address = await in_db_thread(self._agent_address, task_id)
            if address is None:
                log.warning("task %s: its agent is unknown; the model cannot be published", task_id)
                return
            try:
                sha256, size = await self.copy(task_id, address)
            except grpc.aio.AioRpcError as exc:
                log.warning("task %s: publishing the model (try %d of %d) failed: %s %s", task_id, attempt,
                            PUBLISH_TRIES, exc.code().name, exc.details())
                if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                    return  # nothing to publish (e.g. the trainer wrote no model)
                await asyncio.sleep(PUBLISH_RETRY_SECONDS * attempt)
                continue
            await in_db_thread(self._published.put, task_id, sha256, size)
            log.info("task %s: model published (%d bytes, sha256 %s)", task_id, size, sha256)
            self._on_published(task_id)
            return

    async def copy(self, task_id: str, address: str) -> tuple[str, int]:
        writer = self._blobs.writer()
        try:
            stream = self._clients.stub(address).ReadModelArchive(agent_pb2.AgentArtifactsRequest(task_id=task_id))
            async for chunk in stream:
                await asyncio.to_thread(writer.write, chunk.data)
            sha256 = await asyncio.to_thread(writer.commit)
        except BaseException:
            writer.abort()
            raise
        return sha256, writer.size

    async def close(self) -> None:
        jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
