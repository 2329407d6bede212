"""Content-addressed blobs (uploaded datasets, published models): one small interface, a local directory by default.

A blob is written through a `BlobWriter` (hashing as it goes, into a temporary file); `commit` files it under its
sha256, so the same bytes written twice are stored once, and `abort` leaves nothing behind. Readers stream a blob in
chunks from an offset (an agent resuming a broken transfer).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator, Protocol

CHUNK_BYTES = 1024**2
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BlobNotFound(LookupError):
    pass


def is_sha256(value: str) -> bool:
    return bool(_SHA256.match(value))


class BlobWriter(Protocol):
    size: int

    def write(self, data: bytes) -> None: ...

    def commit(self) -> str:
        """Files the blob under its sha256 (returned); a blob with the same bytes already there is kept as it is."""
        ...

    def abort(self) -> None: ...


class BlobStore(Protocol):
    def writer(self) -> BlobWriter: ...

    def exists(self, sha256: str) -> bool: ...

    def size(self, sha256: str) -> int:
        """BlobNotFound when absent."""
        ...

    def read(self, sha256: str, offset: int = 0, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The blob's bytes from `offset`, in chunks; BlobNotFound when absent."""
        ...

    def delete(self, sha256: str) -> None: ...


class _LocalWriter:
    def __init__(self, store: "LocalBlobStore") -> None:
        self._store = store
        handle, name = tempfile.mkstemp(dir=store.incoming, prefix="upload-")
        self._file = os.fdopen(handle, "wb")
        self._path = Path(name)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def commit(self) -> str:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        sha256 = self._hash.hexdigest()
        target = self._store.path(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            self._path.unlink(missing_ok=True)  # the same bytes are stored already
        else:
            os.replace(self._path, target)
        return sha256

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._path.unlink(missing_ok=True)


class LocalBlobStore:
    """Blobs as files `<root>/<sha[:2]>/<sha>`; writes land in `<root>/incoming` first (same filesystem: the rename
    that files them is atomic)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / "incoming"
        self.incoming.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in self.incoming.iterdir():  # uploads a crash cut short
            leftover.unlink(missing_ok=True)

    def path(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise BlobNotFound(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def writer(self) -> _LocalWriter:
        return _LocalWriter(self)

    def exists(self, sha256: str) -> bool:
        return is_sha256(sha256) and self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None

    def read(self, sha256: str, offset: int = 0, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        try:
            handle = self.path(sha256).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None
        with handle:
            handle.seek(offset)
            while chunk := handle.read(chunk_bytes):
                yield chunk

    def delete(self, sha256: str) -> None:
        if is_sha256(sha256):
            self.path(sha256).unlink(missing_ok=True)

