"""FinetuneService's artifact methods (a mixin of control_plane.finetune_service.FinetuneService): a task's files are
listed and streamed from the agent that holds its output directory, relayed chunk by chunk (never buffered whole);
once its agent is gone, what was published (the final model) is served from the blob store."""

from __future__ import annotations

import asyncio
import tarfile
from typing import Iterator

import grpc

from control_plane.blob_store import BlobStore
from control_plane.db_calls import in_db_thread
from control_plane.grpc_errors import abort
from control_plane.published_models import PublishedModels
from protos import agent_pb2, common_pb2, control_plane_pb2
from protos.blocking_streams import off_the_loop
from trainers.artifact_kinds import BadArtifactPath, artifact_kind, relative_artifact_path

# Agent errors passed on as they are: the agent's message says what is wrong with the path or the task.
_RELAYED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


class ArtifactRpcs:
    _published: PublishedModels
    _blobs: BlobStore

    async def ListArtifacts(self, request, context):
        task = await self._task_or_404(request.task_id, context)
        address = await self._artifact_agent(task)
        if address is not None:
            try:
                reply = await self._clients.stub(address).ListArtifacts(
                    agent_pb2.AgentArtifactsRequest(task_id=task.id), timeout=30)
                return control_plane_pb2.ListArtifactsResponse(artifacts=reply.artifacts, source="agent")
            except grpc.aio.AioRpcError as exc:
                if await in_db_thread(self._published.get, task.id) is None:
                    await _relay_error(context, exc, task.agent_id)
        published = await in_db_thread(self._published.get, task.id)
        if published is None:
            await _no_artifacts(context, task)
        members = await asyncio.to_thread(_tar_files, self._blobs, published.sha256)
        return control_plane_pb2.ListArtifactsResponse(
            artifacts=[common_pb2.Artifact(path=name, size=size, kind=artifact_kind(name)) for name, size in members],
            source="published")

    async def DownloadArtifact(self, request, context):
        task = await self._task_or_404(request.task_id, context)
        path = await _checked_path(request.path, context)
        address = await self._artifact_agent(task)
        if address is not None:
            stream = self._clients.stub(address).ReadArtifact(agent_pb2.ReadArtifactRequest(task_id=task.id, path=path))
            try:
                async for chunk in stream:
                    yield chunk
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or await in_db_thread(self._published.get, task.id) is None:
                    await _relay_error(context, exc, task.agent_id)
        published = await in_db_thread(self._published.get, task.id)
        if published is None:
            await _no_artifacts(context, task)
        offset = 0
        async for data in off_the_loop(_tar_member_chunks(self._blobs, published.sha256, path)):
            if isinstance(data, Exception):
                await abort(context, grpc.StatusCode.NOT_FOUND, f"path: {path!r} is not in the task's published "
                                                               "model (checkpoints and logs are not published)", "path")
            yield common_pb2.FileChunk(data=data, offset=offset)
            offset += len(data)

    async def DownloadModel(self, request, context):
        task = await self._task_or_404(request.task_id, context)
        published = await in_db_thread(self._published.get, task.id)
        if published is not None:
            offset = 0
            async for data in off_the_loop(self._blobs.read(published.sha256)):
                yield common_pb2.FileChunk(data=data, offset=offset, total_size=published.size_bytes)
                offset += len(data)
            return
        address = await self._artifact_agent(task)
        if address is None:
            await _no_artifacts(context, task)
        stream = self._clients.stub(address).ReadModelArchive(agent_pb2.AgentArtifactsRequest(task_id=task.id))
        try:
            async for chunk in stream:
                yield chunk
        except grpc.aio.AioRpcError as exc:
            await _relay_error(context, exc, task.agent_id)

    async def _artifact_agent(self, task) -> str | None:
        """The address of the live agent holding the task's output directory, if any."""
        agent = await in_db_thread(self._store.get_agent, task.agent_id) if task.agent_id else None
        return agent.address if agent is not None and self._scheduler.is_alive(agent) else None


async def _checked_path(path: str, context) -> str:
    """A relative "/"-separated path that stays inside the task's directory (the agent checks symlinks too)."""
    try:
        pure = relative_artifact_path(path)
    except BadArtifactPath as exc:
        await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), "path")
    return "/".join(part for part in pure.parts if part != ".")


async def _relay_error(context, exc: grpc.aio.AioRpcError, agent_id: str) -> None:
    if exc.code() in _RELAYED:
        field = "path" if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else "task_id"
        await abort(context, exc.code(), exc.details() or exc.code().name, field)
    await abort(context, grpc.StatusCode.UNAVAILABLE, f"agent {agent_id} did not answer: {exc.details()}")


async def _no_artifacts(context, task) -> None:
    where = f"its agent {task.agent_id} is not reachable" if task.agent_id else "it has not run yet"
    await abort(context, grpc.StatusCode.NOT_FOUND, f"task {task.id} has no files to serve: {where} and no model "
                                                    "of it was published", "task_id")


class _BlobFile:
    """A read-only, forward-only file over a blob's chunks, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def _tar_files(blobs: BlobStore, sha256: str) -> list[tuple[str, int]]:
    with tarfile.open(fileobj=_BlobFile(blobs.read(sha256)), mode="r|") as archive:
        return [(member.name, member.size) for member in archive if member.isfile()]


def _tar_member_chunks(blobs: BlobStore, sha256: str, path: str, chunk_bytes: int = 1024**2):
    """The bytes of one file of a published tar, in chunks; a LookupError (yielded) when it is not there."""
    with tarfile.open(fileobj=_BlobFile(blobs.read(sha256)), mode="r|") as archive:
        for member in archive:
            if member.isfile() and member.name == path:
                handle = archive.extractfile(member)
                while data := handle.read(chunk_bytes):
                    yield data
                return
    yield LookupError(path)
