"""The files a task wrote into its output directory: listed with a kind, read one at a time, and the final model
streamed as one uncompressed tar built on the fly. Knows nothing about gRPC.

Nothing outside the output directory is ever read: a path given by a caller must be relative, without `..`, and
still inside the directory after its symlinks are followed; listings and archives skip symlinks that leave it.
The task marker (`.bugagaric-task.json`) is the platform's, not an artifact.
"""

from __future__ import annotations

import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from trainers.artifact_kinds import BadArtifactPath, artifact_kind, in_final_model, relative_artifact_path
from trainers.paths import TASK_MARKER

CHUNK_BYTES = 1024**2


class ArtifactError(Exception):
    pass


class BadPath(ArtifactError):
    """The path is not one of the output directory's files (absolute, `..`, leaving it, not a regular file)."""


class ArtifactNotFound(ArtifactError):
    pass


@dataclass(frozen=True)
class ArtifactFile:
    path: str  # relative to the output directory, "/"-separated
    size: int
    kind: str


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _walk(output_dir: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    """(relative path, path, stat of what it is) of every regular file inside output_dir, sorted, symlinks
    followed only where they stay inside (a symlinked directory is not descended: its files are listed where
    they really are, when that is inside)."""
    root = output_dir.resolve()
    for current, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        base = Path(current)
        for name in sorted(files):
            path = base / name
            relative = path.relative_to(root).as_posix()
            if relative == TASK_MARKER:
                continue
            try:
                target = path.resolve(strict=True)
                info = target.stat()
            except (OSError, RuntimeError):
                continue  # dangling or looping link, or removed meanwhile
            if _inside(target, root) and stat.S_ISREG(info.st_mode):
                yield relative, path, info


def list_artifacts(output_dir: Path) -> list[ArtifactFile]:
    if not output_dir.is_dir():
        return []
    return [ArtifactFile(relative, info.st_size, artifact_kind(relative)) for relative, _, info in _walk(output_dir)]


def artifact_path(output_dir: Path, given: str) -> Path:
    """The file `given` names inside output_dir, symlinks followed; BadPath or ArtifactNotFound naming `path`."""
    try:
        pure = relative_artifact_path(given)
    except BadArtifactPath as exc:
        raise BadPath(str(exc)) from None
    root = output_dir.resolve()
    try:
        target = (root / pure).resolve()
    except (OSError, RuntimeError):
        raise BadPath(f"path: {given!r} cannot be resolved") from None
    if not _inside(target, root):
        raise BadPath(f"path: {given!r} leaves the task's output directory")
    if target == root / TASK_MARKER or not target.exists():
        raise ArtifactNotFound(f"path: {given!r}: no such file in the task's output directory")
    if not target.is_file():
        raise BadPath(f"path: {given!r} is not a regular file")
    return target


def read_chunks(path: Path, offset: int = 0, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes, int]]:
    """(offset, data, total size) from `offset` to the size the file had when opened (a file a running trainer
    still writes is read as it was); at least one chunk, empty at the end, so that a reader learns the size."""
    with path.open("rb") as handle:
        total = os.fstat(handle.fileno()).st_size
        if offset > total:
            raise BadPath(f"offset: {offset} is past the end of the file ({total} bytes)")
        handle.seek(offset)
        while True:
            data = handle.read(min(chunk_bytes, total - offset))
            if not data and offset < total:
                return  # it shrank meanwhile
            yield offset, data, total
            offset += len(data)
            if offset >= total:
                return


def model_files(output_dir: Path) -> list[tuple[str, Path, os.stat_result]]:
    """What the final model is: the output directory without checkpoints, logs and the marker."""
    return [(relative, path, info) for relative, path, info in _walk(output_dir)
            if in_final_model(relative)]


def model_archive(output_dir: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The final model as an uncompressed tar, member names relative to the output directory (no top folder),
    produced piece by piece: a header, the file in chunks, its padding; never more than a chunk in memory."""
    if not output_dir.is_dir():
        raise ArtifactNotFound(f"the task's output directory {output_dir} does not exist on this agent")
    for relative, path, info in model_files(output_dir):
        member = tarfile.TarInfo(relative)
        member.size, member.mtime, member.mode = info.st_size, int(info.st_mtime), stat.S_IMODE(info.st_mode) | 0o400
        member.type = tarfile.REGTYPE
        yield member.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        left = info.st_size
        with path.open("rb") as handle:
            while left > 0:
                data = handle.read(min(chunk_bytes, left))
                if not data:  # the file shrank meanwhile: keep the archive well-formed
                    data = bytes(min(chunk_bytes, left))
                yield data
                left -= len(data)
        if info.st_size % tarfile.BLOCKSIZE:
            yield bytes(tarfile.BLOCKSIZE - info.st_size % tarfile.BLOCKSIZE)
    yield bytes(2 * tarfile.BLOCKSIZE)  # the end-of-archive marker


def rechunk(pieces: Iterator[bytes], chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The same bytes in chunks of chunk_bytes (the last one shorter)."""
    buffer = bytearray()
    for piece in pieces:
        buffer += piece
        while len(buffer) >= chunk_bytes:
            yield bytes(buffer[:chunk_bytes])
            del buffer[:chunk_bytes]
    if buffer:
        yield bytes(buffer)
